//! A read-only look at both sites, cache by cache: replication status in each direction, push
//! status, sizes; plus each site's identity and cross-site view. `plan`, `status` and `demo`
//! show it; `status` also diagnoses it.

use futures::StreamExt;
use ispn_xsite::{BackupStatus, CacheName, Client, ContainerInfo, PushStatus, SiteApi, SiteName};
use serde::Serialize;
use sync_core::ports::{Keycloak, KeycloakHealth, KeycloakState};

/// One site.
#[derive(Debug, Clone, Serialize)]
pub struct SiteView {
    /// Configured name.
    pub name: SiteName,
    /// Where it was reached.
    pub endpoint: String,
    /// Its version.
    pub version: Option<String>,
    /// Its `local_site`.
    pub local_site: Option<String>,
    /// Its cross-site view, when a site master answered.
    pub sites_view: Option<Vec<String>>,
    /// Why it could not be read.
    pub error: Option<String>,
}

/// One cache on both sites.
#[derive(Debug, Clone, Serialize)]
pub struct CacheRow {
    /// The cache.
    pub cache: CacheName,
    /// First site's backup to the second: online/offline/mixed.
    pub forward: Option<String>,
    /// Second site's backup to the first.
    pub backward: Option<String>,
    /// First site's push status towards the second.
    pub push_forward: Option<PushStatus>,
    /// Second site's push status towards the first.
    pub push_backward: Option<PushStatus>,
    /// Entries on the first site.
    pub size_first: Option<u64>,
    /// Entries on the second site.
    pub size_second: Option<u64>,
}

/// Both sites.
#[derive(Debug, Clone, Serialize)]
pub struct PairView {
    /// The first site (the active one when roles are set).
    pub first: SiteView,
    /// The second site.
    pub second: SiteView,
    /// Per cache.
    pub caches: Vec<CacheRow>,
    /// The second site's Keycloak, if read.
    pub keycloak: Option<KeycloakView>,
    /// What each site's Keycloak says about itself, where its URLs are configured.
    pub keycloak_health: Vec<(SiteName, KeycloakHealth)>,
}

/// What was read of Keycloak.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum KeycloakView {
    /// Managed by site-sync; its state.
    Managed(KeycloakState),
    /// Stopped by the operator; not read.
    NotManaged,
    /// Could not be read.
    Error {
        /// Why.
        message: String,
    },
}

async fn site_view(name: &SiteName, endpoint: &str, client: &Client) -> SiteView {
    match client.container_info().await {
        Ok(info) => {
            let ContainerInfo { version, local_site, sites_view, relay_node, .. } = info;
            SiteView {
                name: name.clone(),
                endpoint: endpoint.to_owned(),
                version: Some(version),
                local_site,
                sites_view: (relay_node || !sites_view.is_empty()).then_some(sites_view),
                error: None,
            }
        }
        Err(e) => SiteView {
            name: name.clone(),
            endpoint: endpoint.to_owned(),
            version: None,
            local_site: None,
            sites_view: None,
            error: Some(e.to_string()),
        },
    }
}

fn status_word(status: &BackupStatus) -> String {
    status.as_str().to_owned()
}

async fn replicated_caches(client: &Client, other: &SiteName) -> Vec<CacheName> {
    let Ok(names) = client.cache_names().await else { return Vec::new() };
    let mut out = Vec::new();
    for name in names.into_iter().filter(|n| !n.as_str().starts_with("___")) {
        if client.cache_backups(&name).await.is_ok_and(|b| b.contains_key(other)) {
            out.push(name);
        }
    }
    out
}

/// Reads both sites. `caches`: which to show (default: every cache either site replicates to
/// the other).
pub async fn look(
    (first_name, first_endpoint, first): (&SiteName, &str, &Client),
    (second_name, second_endpoint, second): (&SiteName, &str, &Client),
    caches: Option<&[CacheName]>,
    keycloak: Option<&impl Keycloak>,
) -> PairView {
    let (first_view, second_view) =
        tokio::join!(site_view(first_name, first_endpoint, first), site_view(second_name, second_endpoint, second));
    let caches: Vec<CacheName> = match caches {
        Some(list) => list.to_vec(),
        None => {
            let (mut a, b) = tokio::join!(replicated_caches(first, second_name), replicated_caches(second, first_name));
            a.extend(b);
            a.sort();
            a.dedup();
            a
        }
    };
    let rows = futures::stream::iter(caches)
        .map(|cache| async move {
            let (forward, backward, push_forward, push_backward, size_first, size_second) = tokio::join!(
                first.cache_backups(&cache),
                second.cache_backups(&cache),
                first.push_state_status(&cache),
                second.push_state_status(&cache),
                first.size(&cache),
                second.size(&cache),
            );
            CacheRow {
                forward: forward.ok().and_then(|m| m.get(second_name).map(status_word)),
                backward: backward.ok().and_then(|m| m.get(first_name).map(status_word)),
                push_forward: push_forward.ok().and_then(|r| r.for_site(second_name)),
                push_backward: push_backward.ok().and_then(|r| r.for_site(first_name)),
                size_first: size_first.ok(),
                size_second: size_second.ok(),
                cache,
            }
        })
        .buffered(4)
        .collect()
        .await;
    let keycloak = match keycloak {
        Some(k) => Some(match k.observe().await {
            Ok(Some(state)) => KeycloakView::Managed(state),
            Ok(None) => KeycloakView::NotManaged,
            Err(e) => KeycloakView::Error { message: e.to_string() },
        }),
        None => None,
    };
    PairView { first: first_view, second: second_view, caches: rows, keycloak, keycloak_health: Vec::new() }
}

/// What the state of the pair means.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "diagnosis")]
pub enum Diagnosis {
    /// A site cannot be read.
    Unreachable {
        /// Which.
        site: SiteName,
    },
    /// The sites do not see each other.
    LinkDown,
    /// Each site has the other offline: fenced after a split brain.
    SplitBrain,
    /// One direction does not replicate.
    OneSided {
        /// The site that does not replicate.
        from: SiteName,
        /// To this one.
        to: SiteName,
    },
    /// A push is running.
    Syncing,
    /// Both directions replicate and sizes agree.
    Healthy,
    /// Both directions replicate, but sizes disagree.
    Diverged {
        /// Caches whose sizes differ.
        caches: Vec<CacheName>,
    },
}

impl Diagnosis {
    /// One line for people.
    pub fn text(&self, first: &SiteName, second: &SiteName) -> String {
        match self {
            Self::Unreachable { site } => format!("cannot read {site}: see the error above"),
            Self::LinkDown => format!("link down: {first} and {second} do not see each other across the bridge"),
            Self::SplitBrain => format!(
                "split brain: {first} and {second} each have the other offline; synchronize the stale site with `site-sync run`"
            ),
            Self::OneSided { from, to } => {
                format!("one-sided: {from} does not replicate to {to}; bring it online (after a sync, if {to} is stale)")
            }
            Self::Syncing => "syncing: a push is running".to_owned(),
            Self::Healthy => "healthy: both directions replicate and the sizes agree".to_owned(),
            Self::Diverged { caches } => format!(
                "diverged: both directions replicate but sizes differ for {}; run `site-sync diff`",
                caches.iter().map(CacheName::as_str).collect::<Vec<_>>().join(", ")
            ),
        }
    }
}

/// Diagnoses a view.
pub fn diagnose(view: &PairView) -> Diagnosis {
    for site in [&view.first, &view.second] {
        if site.error.is_some() {
            return Diagnosis::Unreachable { site: site.name.clone() };
        }
    }
    let sees = |site: &SiteView, other: &SiteName| site.sites_view.as_ref().is_none_or(|v| v.iter().any(|s| s == other.as_str()));
    let offline = |s: &Option<String>| s.as_deref().is_some_and(|s| s != "online");
    let forward_off = view.caches.iter().any(|c| offline(&c.forward));
    let backward_off = view.caches.iter().any(|c| offline(&c.backward));
    if forward_off && backward_off {
        return Diagnosis::SplitBrain;
    }
    if !sees(&view.first, &view.second.name) || !sees(&view.second, &view.first.name) {
        return Diagnosis::LinkDown;
    }
    if view.caches.iter().any(|c| c.push_forward == Some(PushStatus::Sending) || c.push_backward == Some(PushStatus::Sending)) {
        return Diagnosis::Syncing;
    }
    if forward_off {
        return Diagnosis::OneSided { from: view.first.name.clone(), to: view.second.name.clone() };
    }
    if backward_off {
        return Diagnosis::OneSided { from: view.second.name.clone(), to: view.first.name.clone() };
    }
    let differ: Vec<CacheName> = view.caches.iter().filter(|c| c.size_first != c.size_second).map(|c| c.cache.clone()).collect();
    if differ.is_empty() { Diagnosis::Healthy } else { Diagnosis::Diverged { caches: differ } }
}

fn cell<T: ToString>(value: &Option<T>) -> String {
    value.as_ref().map(ToString::to_string).unwrap_or_else(|| "?".to_owned())
}

/// The view as text lines.
pub fn render(view: &PairView) -> Vec<String> {
    let (a, b) = (&view.first.name, &view.second.name);
    let mut lines = Vec::new();
    for site in [&view.first, &view.second] {
        let detail = match &site.error {
            Some(error) => format!("UNREACHABLE: {error}"),
            None => format!(
                "Infinispan {}, reports '{}', sees [{}]",
                cell(&site.version),
                cell(&site.local_site),
                site.sites_view.as_ref().map(|v| v.join(", ")).unwrap_or_else(|| "not a site master".to_owned())
            ),
        };
        lines.push(format!("  {:<10} {}  {detail}", site.name.as_str(), site.endpoint));
    }
    let left = format!("{a}→{b}");
    let right = format!("{b}→{a}");
    let push_left = format!("push {a}→{b}");
    let push_right = format!("push {b}→{a}");
    lines.push(format!(
        "  {:<24} {left:>14} {right:>14} {push_left:>18} {push_right:>18} {:>9} {:>9}",
        "cache",
        a.as_str(),
        b.as_str()
    ));
    for row in &view.caches {
        lines.push(format!(
            "  {:<24} {:>14} {:>14} {:>18} {:>18} {:>9} {:>9}",
            row.cache.as_str(),
            cell(&row.forward),
            cell(&row.backward),
            cell(&row.push_forward),
            cell(&row.push_backward),
            cell(&row.size_first),
            cell(&row.size_second)
        ));
    }
    if let Some(keycloak) = &view.keycloak {
        lines.push(match keycloak {
            KeycloakView::Managed(k) => format!(
                "  Keycloak on {b}: {} of {} instance(s) ready, {} pod(s){}",
                k.ready_instances,
                k.spec_instances,
                k.pods,
                if k.rolling_update { ", ROLLING UPDATE in progress" } else { "" }
            ),
            KeycloakView::NotManaged => format!("  Keycloak on {b}: not managed by site-sync"),
            KeycloakView::Error { message } => format!("  Keycloak on {b}: cannot read: {message}"),
        });
    }
    for (site, health) in &view.keycloak_health {
        lines.push(format!("  {}", crate::output::health_line(site, health, false)));
    }
    lines
}
