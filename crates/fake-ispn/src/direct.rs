//! The model as a [`SiteApi`], without HTTP: what the deterministic simulation drives.
//!
//! Every call goes through the same [`World`] operations as the HTTP front end, and failures are
//! classified by `ispn_xsite::Error::from_answer`, the function the HTTP client uses. Injected
//! request faults apply here too. Authentication is not modelled on this path.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use ispn_xsite::requests::HttpRequest;
use ispn_xsite::{
    BackupStatus, CacheName, CacheResults, CacheStats, ClearScope, ContainerInfo, ContainerSiteStatus, Entry, Error, Health,
    ItemStream, NodeStatuses, PushStatusReport, Requests, Result, ServerVersion, SiteAction, SiteApi, SiteName, Subject,
    TakeOfflineConfig,
};

use crate::model::{Failure, Outcome, RequestFault, World};
use crate::spec::ADMIN_USER;

/// The timeout a lost answer is reported with (the HTTP client's default).
pub const REPORTED_TIMEOUT: Duration = Duration::from_secs(30);

/// One site of a shared [`World`], callable as a [`SiteApi`].
#[derive(Debug, Clone)]
pub struct ModelSite {
    world: Arc<Mutex<World>>,
    site: usize,
    endpoint: String,
    requests: Requests,
}

pub(crate) fn lock(world: &Mutex<World>) -> MutexGuard<'_, World> {
    world.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl ModelSite {
    pub(crate) fn new(world: Arc<Mutex<World>>, site: usize) -> Self {
        let (endpoint, flavor) = {
            let w = lock(&world);
            let version = ServerVersion::parse(w.personality(site).version()).expect("personality versions parse");
            (format!("model://{}", w.site_name(site)), version.api())
        };
        let requests = Requests::new(&endpoint, "rest", flavor);
        Self { world, site, endpoint, requests }
    }

    /// The site's index in the world.
    pub fn index(&self) -> usize {
        self.site
    }

    /// Answers one request, after the (virtual) time its fault takes.
    async fn call<T>(
        &self,
        request: HttpRequest,
        subject: Subject<'_>,
        op: impl FnOnce(&mut World, usize) -> Outcome<T>,
    ) -> Result<T> {
        let mut takes = Duration::ZERO;
        let answer = self.answer(request, subject, op, &mut takes);
        if !takes.is_zero() {
            tokio::time::sleep(takes).await;
        }
        answer
    }

    /// The answer, under the world's lock; sets `takes` when the answer must wait (the lock is
    /// not held while it does).
    fn answer<T>(
        &self,
        request: HttpRequest,
        subject: Subject<'_>,
        op: impl FnOnce(&mut World, usize) -> Outcome<T>,
        takes: &mut Duration,
    ) -> Result<T> {
        let what = format!("{} {}", request.method(), request.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/"));
        let mut world = lock(&self.world);
        if !world.is_up(self.site) {
            return Err(Error::Unreachable { endpoint: self.endpoint.clone(), detail: "connection refused".to_owned() });
        }
        world.advance();
        world.record(self.site, what.clone());
        let timeout = || Error::Timeout { endpoint: self.endpoint.clone(), what: what.clone(), after: REPORTED_TIMEOUT };
        let site = world.answering(self.site);
        match world.next_request_fault(self.site) {
            Some(RequestFault::Unavailable) => {
                return Err(Error::from_answer(&self.endpoint, &what, ADMIN_USER, 503, "fake-ispn: injected 503", subject));
            }
            Some(RequestFault::Unauthorized) => {
                return Err(Error::from_answer(&self.endpoint, &what, ADMIN_USER, 401, "", subject));
            }
            Some(RequestFault::ServerError) => {
                return Err(Error::from_answer(&self.endpoint, &what, ADMIN_USER, 500, "fake-ispn: injected 500", subject));
            }
            Some(RequestFault::Garbage) => {
                return Err(Error::Protocol {
                    endpoint: self.endpoint.clone(),
                    what,
                    detail:
                        "expected value at line 1 column 1 in \"<html><body>fake-ispn: not what was asked for</body></html>\""
                            .to_owned(),
                });
            }
            Some(RequestFault::Timeout) => return Err(timeout()),
            Some(RequestFault::TimeoutAfter(after)) => {
                *takes = after;
                return Err(Error::Timeout { endpoint: self.endpoint.clone(), what, after });
            }
            Some(RequestFault::LostAnswer) => {
                let _ = op(&mut world, site);
                return Err(timeout());
            }
            None => {}
        }
        op(&mut world, site).map_err(|failure| match failure {
            Failure::Http(status, body) => Error::from_answer(&self.endpoint, &what, ADMIN_USER, status, &body, subject),
            Failure::Unreachable => {
                Error::Unreachable { endpoint: self.endpoint.clone(), detail: "connection refused".to_owned() }
            }
            Failure::Timeout { .. } => timeout(),
        })
    }
}

fn cache_subject(cache: &CacheName) -> Subject<'_> {
    Subject { cache: Some(cache), site: None }
}

impl SiteApi for ModelSite {
    fn endpoint(&self) -> &str {
        &self.endpoint
    }

    async fn server_version(&self) -> Result<ServerVersion> {
        self.call(self.requests.container_info(), Subject::default(), |w, s| {
            Ok(ServerVersion::parse(w.personality(s).version()).expect("personality versions parse"))
        })
        .await
    }

    async fn container_info(&self) -> Result<ContainerInfo> {
        let value = self.call(self.requests.container_info(), Subject::default(), |w, s| Ok(w.container_info(s))).await?;
        Ok(serde_json::from_value(value).expect("the model's container info has the client's shape"))
    }

    async fn health(&self) -> Result<Health> {
        let value = self.call(self.requests.health(), Subject::default(), |w, s| Ok(w.health(s))).await?;
        Ok(serde_json::from_value(value).expect("the model's health has the client's shape"))
    }

    async fn cache_names(&self) -> Result<Vec<CacheName>> {
        let names = self.call(self.requests.cache_names(), Subject::default(), |w, s| Ok(w.cache_names(s))).await?;
        Ok(names.into_iter().filter_map(|n| CacheName::new(n).ok()).collect())
    }

    async fn cache_backups(&self, cache: &CacheName) -> Result<BTreeMap<SiteName, BackupStatus>> {
        self.call(self.requests.cache_backups(cache), cache_subject(cache), |w, s| w.cache_backups(s, cache)).await
    }

    async fn cache_site_nodes(&self, cache: &CacheName, site: &SiteName) -> Result<NodeStatuses> {
        let subject = Subject { cache: Some(cache), site: Some(site) };
        self.call(self.requests.cache_site_nodes(cache, site), subject, |w, s| w.cache_site_nodes(s, cache, site.as_str())).await
    }

    async fn container_backups(&self) -> Result<BTreeMap<SiteName, ContainerSiteStatus>> {
        self.call(self.requests.container_backups(), Subject::default(), |w, s| Ok(w.container_backups(s))).await
    }

    async fn container_site_status(&self, site: &SiteName) -> Result<ContainerSiteStatus> {
        let subject = Subject { cache: None, site: Some(site) };
        self.call(self.requests.container_site_status(site), subject, |w, s| w.container_site_status(s, site.as_str())).await
    }

    async fn cache_site_action(&self, cache: &CacheName, site: &SiteName, action: SiteAction) -> Result<()> {
        let subject = Subject { cache: Some(cache), site: Some(site) };
        self.call(self.requests.cache_site_action(cache, site, action), subject, |w, s| {
            w.cache_site_action(s, cache, site.as_str(), action)
        })
        .await
    }

    async fn container_site_action(&self, site: &SiteName, action: SiteAction) -> Result<CacheResults> {
        let subject = Subject { cache: None, site: Some(site) };
        self.call(self.requests.container_site_action(site, action), subject, |w, s| {
            Ok(w.container_site_action(s, site.as_str(), action))
        })
        .await
    }

    async fn push_state_status(&self, cache: &CacheName) -> Result<PushStatusReport> {
        let map =
            self.call(self.requests.push_state_status(cache), cache_subject(cache), |w, s| w.push_state_status(s, cache)).await?;
        Ok(PushStatusReport::Sites(map))
    }

    async fn clear_push_state_status(&self, cache: &CacheName) -> Result<()> {
        let request = self.requests.clear_push_state_status(cache);
        let answer = self.call(request, cache_subject(cache), |w, s| w.clear_push_state_status(s, cache)).await?;
        if answer == "ok" {
            Ok(())
        } else {
            Err(Error::Server {
                endpoint: self.endpoint.clone(),
                what: "clear-push-state-status".to_owned(),
                status: 200,
                body: answer,
            })
        }
    }

    async fn take_offline_config(&self, cache: &CacheName, site: &SiteName) -> Result<TakeOfflineConfig> {
        let subject = Subject { cache: Some(cache), site: Some(site) };
        self.call(self.requests.take_offline_config(cache, site), subject, |w, s| w.take_offline_config(s, cache, site.as_str()))
            .await
    }

    async fn set_take_offline_config(&self, cache: &CacheName, site: &SiteName, config: TakeOfflineConfig) -> Result<bool> {
        let subject = Subject { cache: Some(cache), site: Some(site) };
        self.call(self.requests.set_take_offline_config(cache, site, config), subject, |w, s| {
            w.set_take_offline_config(s, cache, site.as_str(), config)
        })
        .await
    }

    async fn size(&self, cache: &CacheName) -> Result<u64> {
        self.call(self.requests.size(cache), cache_subject(cache), |w, s| w.size(s, cache.as_str())).await
    }

    async fn cache_stats(&self, cache: &CacheName) -> Result<CacheStats> {
        self.call(self.requests.cache_stats(cache), cache_subject(cache), |w, s| w.cache_stats(s, cache.as_str())).await
    }

    async fn clear(&self, cache: &CacheName, scope: ClearScope) -> Result<()> {
        self.call(self.requests.clear(cache, scope), cache_subject(cache), |w, s| {
            w.clear(s, cache.as_str(), scope == ClearScope::LocalOnly)
        })
        .await
    }

    async fn get(&self, cache: &CacheName, key: &str) -> Result<Option<String>> {
        self.call(self.requests.get(cache, key), cache_subject(cache), |w, s| w.get(s, cache.as_str(), key)).await
    }

    async fn stored_value(&self, cache: &CacheName, key: &str) -> Result<Option<Bytes>> {
        let value = self
            .call(self.requests.stored_value(cache, key), cache_subject(cache), |w, s| w.stored(s, cache.as_str(), key))
            .await?;
        Ok(value.map(|v| Bytes::from(crate::http::stored_form(&v))))
    }

    async fn put(&self, cache: &CacheName, key: &str, value: &str) -> Result<()> {
        self.call(self.requests.put(cache, key, value), cache_subject(cache), |w, s| w.put(s, cache.as_str(), key, value)).await
    }

    async fn delete(&self, cache: &CacheName, key: &str) -> Result<bool> {
        self.call(self.requests.delete(cache, key), cache_subject(cache), |w, s| w.delete(s, cache.as_str(), key)).await
    }

    async fn keys(&self, cache: &CacheName) -> Result<ItemStream<String>> {
        let (keys, delay) = self
            .call(self.requests.keys(cache, 1000), cache_subject(cache), |w, s| {
                Ok((w.keys(s, cache.as_str())?, w.listing_delay(s, cache.as_str())))
            })
            .await?;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let keys: Vec<Result<String>> = keys.keys().map(|k| Ok(k.to_string())).collect();
        Ok(Box::pin(futures::stream::iter(keys)))
    }

    async fn entries(&self, cache: &CacheName) -> Result<ItemStream<Entry>> {
        let (entries, delay) = self
            .call(self.requests.entries(cache, 1000), cache_subject(cache), |w, s| {
                Ok((w.entries(s, cache.as_str())?, w.listing_delay(s, cache.as_str())))
            })
            .await?;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let entries: Vec<Result<Entry>> =
            entries.iter().map(|(k, v)| Ok(Entry { key: k.to_string(), value: v.to_string() })).collect();
        Ok(Box::pin(futures::stream::iter(entries)))
    }
}
