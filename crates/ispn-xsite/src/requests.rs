//! Request builders: every REST call the tool makes, as a plain `http::Request`, never sent here.
//!
//! Keeping the wire format in one place, apart from the transport, lets snapshot tests pin every
//! method, path, query and header, and lets the fake server and the real client agree on paths by
//! construction. Authentication headers are added by the transport, so nothing here is secret.

use bytes::Bytes;
use http::{HeaderValue, Method, Request, header};

use crate::model::{ApiFlavor, SiteAction, TakeOfflineConfig};
use crate::names::{CacheName, SiteName, encode_segment};

/// A request as built: method, absolute URL, headers, body.
pub type HttpRequest = Request<Bytes>;

/// The `flags` header value that keeps a clear from being replicated to backup sites.
///
/// Checked on real 15.0.x and 16.0.x servers: a clear sent with it empties only the local site,
/// even while the backup is online. site-sync sends it *in addition to* taking the backup offline
/// first, so that either safeguard alone prevents wiping the active site.
pub const SKIP_XSITE_BACKUP: &str = "SKIP_XSITE_BACKUP";

/// How a clear treats the cache's backup sites.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClearScope {
    /// Local only: sends `flags: SKIP_XSITE_BACKUP`.
    LocalOnly,
    /// A plain clear, replicated to every backup site that is online. Only tests and the demo's
    /// "show the danger" step use this.
    Replicated,
}

/// The media type Keycloak's caches store their values in.
pub const STORED_MEDIA_TYPE: &str = "application/x-protostream";

/// Builds requests for one site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requests {
    rest_root: String,
    flavor: ApiFlavor,
}

impl Requests {
    /// `base_url` is the server's URL (`https://host:11222`), optionally with a context path other
    /// than the default `rest` given in `context_path`.
    pub fn new(base_url: &str, context_path: &str, flavor: ApiFlavor) -> Self {
        let base = base_url.trim_end_matches('/');
        let context = context_path.trim_matches('/');
        Self { rest_root: format!("{base}/{context}"), flavor }
    }

    /// The container-level path family this builder uses.
    pub fn flavor(&self) -> ApiFlavor {
        self.flavor
    }

    /// The same builder for another path family (after version detection).
    pub fn with_flavor(&self, flavor: ApiFlavor) -> Self {
        Self { rest_root: self.rest_root.clone(), flavor }
    }

    fn url(&self, path: &str, query: &[(&str, &str)]) -> String {
        let mut url = format!("{}{}", self.rest_root, path);
        for (i, (k, v)) in query.iter().enumerate() {
            url.push(if i == 0 { '?' } else { '&' });
            url.push_str(k);
            url.push('=');
            url.push_str(&encode_segment(v));
        }
        url
    }

    fn build(&self, method: Method, path: &str, query: &[(&str, &str)], accept: Option<&'static str>) -> HttpRequest {
        let mut request = Request::new(Bytes::new());
        *request.method_mut() = method;
        // Every path segment is encoded by the callers, so the URL is always valid.
        *request.uri_mut() = self.url(path, query).parse().unwrap_or_default();
        if let Some(accept) = accept {
            request.headers_mut().insert(header::ACCEPT, HeaderValue::from_static(accept));
        }
        request
    }

    fn json(&self, method: Method, path: &str, query: &[(&str, &str)]) -> HttpRequest {
        self.build(method, path, query, Some("application/json"))
    }

    fn container(&self) -> &'static str {
        match self.flavor {
            ApiFlavor::CacheManagers => "/v2/cache-managers/default",
            ApiFlavor::Container => "/v2/container",
        }
    }

    fn cache(cache: &CacheName) -> String {
        format!("/v2/caches/{}", encode_segment(cache.as_str()))
    }

    /// `GET /rest/v2/server`: the branded version string; works on every version.
    pub fn server(&self) -> HttpRequest {
        self.json(Method::GET, "/v2/server", &[])
    }

    /// Container info (`local_site`, `sites_view`, raw version).
    pub fn container_info(&self) -> HttpRequest {
        self.json(Method::GET, self.container(), &[])
    }

    /// Cluster and cache health.
    pub fn health(&self) -> HttpRequest {
        self.json(Method::GET, &format!("{}/health", self.container()), &[])
    }

    /// The anonymous health word (`HEALTHY`), used to wait for a server to start.
    pub fn health_status(&self) -> HttpRequest {
        self.build(Method::GET, &format!("{}/health/status", self.container()), &[], Some("text/plain"))
    }

    /// Names of the caches the user can see.
    pub fn cache_names(&self) -> HttpRequest {
        self.json(Method::GET, "/v2/caches", &[])
    }

    /// Status of every backup of one cache.
    pub fn cache_backups(&self, cache: &CacheName) -> HttpRequest {
        self.json(Method::GET, &format!("{}/x-site/backups/", Self::cache(cache)), &[])
    }

    /// Per-node status of one cache's backup to one site.
    pub fn cache_site_nodes(&self, cache: &CacheName, site: &SiteName) -> HttpRequest {
        let path = format!("{}/x-site/backups/{}", Self::cache(cache), encode_segment(site.as_str()));
        self.json(Method::GET, &path, &[])
    }

    /// Status of every site, over all caches with backups.
    pub fn container_backups(&self) -> HttpRequest {
        self.json(Method::GET, &format!("{}/x-site/backups/", self.container()), &[])
    }

    /// Status of one site, over all caches that back up to it.
    pub fn container_site_status(&self, site: &SiteName) -> HttpRequest {
        let path = format!("{}/x-site/backups/{}", self.container(), encode_segment(site.as_str()));
        self.json(Method::GET, &path, &[])
    }

    /// An x-site action on one cache's backup to one site.
    pub fn cache_site_action(&self, cache: &CacheName, site: &SiteName, action: SiteAction) -> HttpRequest {
        let path = format!("{}/x-site/backups/{}", Self::cache(cache), encode_segment(site.as_str()));
        self.json(Method::POST, &path, &[("action", action.verb())])
    }

    /// An x-site action on every cache that has backups; the answer is a per-cache map.
    pub fn container_site_action(&self, site: &SiteName, action: SiteAction) -> HttpRequest {
        let path = format!("{}/x-site/backups/{}", self.container(), encode_segment(site.as_str()));
        self.json(Method::POST, &path, &[("action", action.verb())])
    }

    /// Push (state transfer) status of one cache, one entry per backup site.
    pub fn push_state_status(&self, cache: &CacheName) -> HttpRequest {
        let path = format!("{}/x-site/backups/", Self::cache(cache));
        self.json(Method::GET, &path, &[("action", "push-state-status")])
    }

    /// Resets a finished push status to IDLE. Note the `/x-site/local` path.
    pub fn clear_push_state_status(&self, cache: &CacheName) -> HttpRequest {
        let path = format!("{}/x-site/local", Self::cache(cache));
        self.json(Method::POST, &path, &[("action", "clear-push-state-status")])
    }

    /// The runtime automatic take-offline settings of one backup.
    pub fn take_offline_config(&self, cache: &CacheName, site: &SiteName) -> HttpRequest {
        let path = format!("{}/x-site/backups/{}/take-offline-config", Self::cache(cache), encode_segment(site.as_str()));
        self.json(Method::GET, &path, &[])
    }

    /// Changes the runtime automatic take-offline settings (both fields are required).
    pub fn set_take_offline_config(&self, cache: &CacheName, site: &SiteName, config: TakeOfflineConfig) -> HttpRequest {
        let mut request = self.take_offline_config(cache, site);
        *request.method_mut() = Method::PUT;
        request.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        *request.body_mut() =
            Bytes::from(serde_json::json!({"after_failures": config.after_failures, "min_wait": config.min_wait}).to_string());
        request
    }

    /// Cluster-wide number of entries.
    pub fn size(&self, cache: &CacheName) -> HttpRequest {
        self.json(Method::GET, &Self::cache(cache), &[("action", "size")])
    }

    /// The cache's statistics on the node that answers: writes and removals since a reset.
    pub fn cache_stats(&self, cache: &CacheName) -> HttpRequest {
        self.json(Method::GET, &Self::cache(cache), &[("action", "stats")])
    }

    /// Removes every entry of the cache.
    pub fn clear(&self, cache: &CacheName, scope: ClearScope) -> HttpRequest {
        let mut request = self.build(Method::POST, &Self::cache(cache), &[("action", "clear")], None);
        if scope == ClearScope::LocalOnly {
            request.headers_mut().insert("flags", HeaderValue::from_static(SKIP_XSITE_BACKUP));
        }
        request
    }

    /// Streams every key as a JSON array of strings.
    pub fn keys(&self, cache: &CacheName, batch: u32) -> HttpRequest {
        self.json(Method::GET, &Self::cache(cache), &[("action", "keys"), ("batch", &batch.to_string())])
    }

    /// Streams every entry as a JSON array of `{"key":..,"value":..}`. With content negotiation
    /// the server renders Protobuf-encoded entries as JSON objects where its plain-text rendering
    /// fails (16.0.7, for object keys such as Keycloak's `LoginFailureKey`).
    pub fn entries(&self, cache: &CacheName, batch: u32) -> HttpRequest {
        let batch = batch.to_string();
        let query = [("action", "entries"), ("batch", batch.as_str()), ("content-negotiation", "true")];
        self.json(Method::GET, &Self::cache(cache), &query)
    }

    fn entry_path(cache: &CacheName, key: &str) -> String {
        format!("{}/{}", Self::cache(cache), encode_segment(key))
    }

    /// Reads one entry as text.
    pub fn get(&self, cache: &CacheName, key: &str) -> HttpRequest {
        self.build(Method::GET, &Self::entry_path(cache, key), &[], Some("text/plain"))
    }

    /// One entry's value as the server stores it (`application/x-protostream` for Keycloak's
    /// caches): bytes that need no rendering, where a listing must render every value as JSON.
    pub fn stored_value(&self, cache: &CacheName, key: &str) -> HttpRequest {
        self.build(Method::GET, &Self::entry_path(cache, key), &[], Some(STORED_MEDIA_TYPE))
    }

    /// Writes one entry as text.
    pub fn put(&self, cache: &CacheName, key: &str, value: &str) -> HttpRequest {
        let mut request = self.build(Method::PUT, &Self::entry_path(cache, key), &[], None);
        request.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=UTF-8"));
        *request.body_mut() = Bytes::copy_from_slice(value.as_bytes());
        request
    }

    /// Deletes one entry.
    pub fn delete(&self, cache: &CacheName, key: &str) -> HttpRequest {
        self.build(Method::DELETE, &Self::entry_path(cache, key), &[], None)
    }
}
