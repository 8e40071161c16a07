//! A read-only look at both sites, cache by cache: replication status in each direction, push
//! status, sizes; plus each site's identity and cross-site view. `plan`, `status` and `demo`
//! show it; `status` also diagnoses it.

use futures::StreamExt;
use std::time::Duration;

use ispn_xsite::{BackupStatus, CacheName, CacheStats, Client, ContainerInfo, PushStatus, SiteApi, SiteName};
use serde::Serialize;
use sync_core::direction::{CacheReading, Context, Counting, judge};
use sync_core::ports::{Keycloak, KeycloakHealth, KeycloakState};
use sync_core::vocabulary::{DirectionRecord, DirectionVerdict, WriteSample, human_duration};

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
    /// Whose writes its counters hold.
    #[serde(skip)]
    pub counting: Counting,
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
    /// Reads of this cache that failed, one line each (naming the site).
    pub errors: Vec<String>,
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
    /// Reads that failed outside a cache's row (the discovery of the caches).
    pub errors: Vec<String>,
    /// The second site's Keycloak, if read.
    pub keycloak: Option<KeycloakView>,
    /// What each site's Keycloak says about itself, where its URLs are configured.
    pub keycloak_health: Vec<(SiteName, KeycloakHealth)>,
    /// Which site took its users' writes while the view was read (the direction guard's
    /// evidence, with the first site as the active one).
    pub activity: Option<DirectionRecord>,
}

/// One reading of every cache's write counters on both sites; `None` for a site not asked.
type Readings = Vec<(CacheName, Option<WriteSample>, Option<WriteSample>)>;

/// A cache's write counters; `None` from a server that keeps or serves none for it.
pub async fn stats_of(client: &Client, cache: &CacheName) -> ispn_xsite::Result<Option<CacheStats>> {
    match client.cache_stats(cache).await {
        Ok(stats) => Ok(Some(stats)),
        Err(ispn_xsite::Error::Server { status: 400 | 404 | 405 | 501, .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// One reading of a cache's counters and size.
pub fn write_sample(stats: Option<CacheStats>, size: u64) -> WriteSample {
    WriteSample {
        writes: stats.and_then(|s| s.writes()),
        since_reset_s: stats.and_then(|s| u64::try_from(s.time_since_reset).ok()),
        size,
    }
}

async fn sample(client: &Client, cache: &CacheName) -> ispn_xsite::Result<WriteSample> {
    let stats = stats_of(client, cache).await?;
    Ok(write_sample(stats, client.size(cache).await?))
}

async fn readings(first: &Client, second: &Client, caches: &[CacheName]) -> Result<Readings, String> {
    let mut out = Vec::new();
    for cache in caches {
        let (a, b) = tokio::join!(sample(first, cache), sample(second, cache));
        let a = a.map_err(|e| format!("cannot read the write counters of {cache}: {e}"))?;
        let b = b.map_err(|e| format!("cannot read the write counters of {cache}: {e}"))?;
        out.push((cache.clone(), Some(a), Some(b)));
    }
    Ok(out)
}

/// Watches both sites' write counters for `window` (the direction guard's evidence, as `status`
/// shows it): which site takes its users' writes, with the first site in the active role.
pub async fn activity(view: &PairView, (first, second): (&Client, &Client), window: Duration) -> Result<DirectionRecord, String> {
    let caches: Vec<CacheName> = view.caches.iter().map(|c| c.cache.clone()).collect();
    let started = std::time::Instant::now();
    let before = readings(first, second, &caches).await?;
    tokio::time::sleep(window.saturating_sub(started.elapsed())).await;
    let elapsed = started.elapsed();
    let after = readings(first, second, &caches).await?;
    let replicates = |status: &Option<String>| status.as_deref() == Some("online");
    let rows: Vec<CacheReading> = before
        .into_iter()
        .zip(after)
        .zip(&view.caches)
        .filter_map(|(((cache, a0, b0), (_, a1, b1)), row)| {
            Some(CacheReading {
                cache,
                active: (a0?, a1?),
                offline: (b0?, b1?),
                active_replicates: replicates(&row.forward),
                offline_replicates: replicates(&row.backward),
            })
        })
        .collect();
    let context = Context {
        active: view.first.name.clone(),
        offline: view.second.name.clone(),
        active_counting: view.first.counting,
        offline_counting: view.second.counting,
        window: elapsed,
        offline_lb_check: None,
        manages_offline_keycloak: true,
        overridden: false,
    };
    Ok(judge(&context, &rows))
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

/// One site as `look` is given it: its name, where it is, and its client (or why there is none:
/// its connection could not be made).
#[derive(Debug, Clone, Copy)]
pub struct Reach<'a> {
    /// Configured name.
    pub name: &'a SiteName,
    /// Where it is reached (for messages).
    pub endpoint: &'a str,
    /// The client, or why the site could not be connected.
    pub client: Result<&'a Client, &'a str>,
}

/// How long a site may take to give its first answer before it is called unreachable: a hung
/// server must not hold `status`, `config check` or a watcher's poll for minutes.
pub const FIRST_ANSWER: Duration = Duration::from_secs(10);

/// A site's first read (its identity, and on the way its version), bounded by `budget`.
pub async fn first_answer(name: &SiteName, endpoint: &str, client: &Client, budget: Duration) -> Result<ContainerInfo, String> {
    match tokio::time::timeout(budget, client.container_info()).await {
        Ok(Ok(info)) => Ok(info),
        Ok(Err(e)) => Err(format!("{name}: {e}")),
        Err(_) => Err(format!(
            "{name}: {endpoint}: no answer, timed out after {} s; check that Infinispan runs and answers there",
            budget.as_secs_f64()
        )),
    }
}

async fn site_view(site: Reach<'_>, budget: Duration) -> SiteView {
    let mut view = SiteView {
        name: site.name.clone(),
        endpoint: site.endpoint.to_owned(),
        version: None,
        local_site: None,
        sites_view: None,
        error: None,
        counting: Counting::ONE_NODE,
    };
    let client = match site.client {
        Ok(client) => client,
        Err(why) => {
            view.error = Some(why.to_owned());
            return view;
        }
    };
    match first_answer(site.name, site.endpoint, client, budget).await {
        Ok(ContainerInfo { version, local_site, sites_view, relay_node, cluster_members, .. }) => {
            view.counting = Counting { nodes: cluster_members.len().max(1), site_master: relay_node };
            view.version = Some(version);
            view.local_site = local_site;
            view.sites_view = (relay_node || !sites_view.is_empty()).then_some(sites_view);
        }
        Err(e) => view.error = Some(e),
    }
    view
}

fn status_word(status: &BackupStatus) -> String {
    status.as_str().to_owned()
}

/// The caches `client` replicates to `other` (internal caches aside). Every read must succeed:
/// a list built from the reads that happened to work would be a verdict about data not read.
pub async fn replicated_caches(name: &SiteName, client: &Client, other: &SiteName) -> Result<Vec<CacheName>, String> {
    let names = client.cache_names().await.map_err(|e| format!("{name}: cannot list its caches: {e}"))?;
    let mut out = Vec::new();
    for cache in names.into_iter().filter(|n| !n.as_str().starts_with("___")) {
        let backups =
            client.cache_backups(&cache).await.map_err(|e| format!("{name}: cannot read the backups of {cache}: {e}"))?;
        if backups.contains_key(other) {
            out.push(cache);
        }
    }
    Ok(out)
}

/// Reads both sites. `caches`: which to show (default: every cache either site replicates to
/// the other). Reads that fail are kept in the view (its `error`s), never left out silently.
pub async fn look(
    first: Reach<'_>,
    second: Reach<'_>,
    caches: Option<&[CacheName]>,
    keycloak: Option<&impl Keycloak>,
    budget: Duration,
) -> PairView {
    let (first_view, second_view) = tokio::join!(site_view(first, budget), site_view(second, budget));
    // A site that gave no first answer is not asked anything else: each further read would wait
    // out its own timeout to say the same thing.
    let first_client = first.client.ok().filter(|_| first_view.error.is_none());
    let second_client = second.client.ok().filter(|_| second_view.error.is_none());
    let (second_name, first_name) = (second.name, first.name);
    let mut errors = Vec::new();
    let caches: Vec<CacheName> = match caches {
        Some(list) => list.to_vec(),
        None => {
            let discover = async |client: Option<&Client>, me: &SiteName, other: &SiteName| match client {
                Some(client) => replicated_caches(me, client, other).await,
                None => Ok(Vec::new()),
            };
            let (a, b) =
                tokio::join!(discover(first_client, first_name, second_name), discover(second_client, second_name, first_name));
            let mut all = Vec::new();
            for found in [a, b] {
                match found {
                    Ok(list) => all.extend(list),
                    Err(e) => errors.push(e),
                }
            }
            all.sort();
            all.dedup();
            all
        }
    };
    let rows = futures::stream::iter(caches)
        .map(|cache| async move { cache_row(cache, (first_name, first_client), (second_name, second_client)).await })
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
    PairView {
        first: first_view,
        second: second_view,
        caches: rows,
        errors,
        keycloak,
        keycloak_health: Vec::new(),
        activity: None,
    }
}

/// A read of a site that may have no client: `None` when it was not asked.
async fn ask<'a, T>(
    client: Option<&'a Client>,
    read: impl AsyncFnOnce(&'a Client) -> ispn_xsite::Result<T>,
) -> Option<ispn_xsite::Result<T>> {
    match client {
        Some(client) => Some(read(client).await),
        None => None,
    }
}

/// One cache on both sites; a site without a client is not asked.
async fn cache_row(
    cache: CacheName,
    (first_name, first): (&SiteName, Option<&Client>),
    (second_name, second): (&SiteName, Option<&Client>),
) -> CacheRow {
    let (forward, backward, push_forward, push_backward, size_first, size_second) = tokio::join!(
        ask(first, async |c| c.cache_backups(&cache).await),
        ask(second, async |c| c.cache_backups(&cache).await),
        ask(first, async |c| c.push_state_status(&cache).await),
        ask(second, async |c| c.push_state_status(&cache).await),
        ask(first, async |c| c.size(&cache).await),
        ask(second, async |c| c.size(&cache).await),
    );
    let mut errors = Vec::new();
    let mut keep = |site: &SiteName, what: &str, failed: Option<&ispn_xsite::Error>| {
        if let Some(e) = failed {
            errors.push(format!("{site}: cannot read the {what} of {cache}: {e}"));
        }
    };
    keep(first_name, "backup status", forward.as_ref().and_then(|r| r.as_ref().err()));
    keep(second_name, "backup status", backward.as_ref().and_then(|r| r.as_ref().err()));
    keep(first_name, "push status", push_forward.as_ref().and_then(|r| r.as_ref().err()));
    keep(second_name, "push status", push_backward.as_ref().and_then(|r| r.as_ref().err()));
    keep(first_name, "size", size_first.as_ref().and_then(|r| r.as_ref().err()));
    keep(second_name, "size", size_second.as_ref().and_then(|r| r.as_ref().err()));
    CacheRow {
        forward: forward.and_then(Result::ok).and_then(|m| m.get(second_name).map(status_word)),
        backward: backward.and_then(Result::ok).and_then(|m| m.get(first_name).map(status_word)),
        push_forward: push_forward.and_then(Result::ok).and_then(|r| r.for_site(second_name)),
        push_backward: push_backward.and_then(Result::ok).and_then(|r| r.for_site(first_name)),
        size_first: size_first.and_then(Result::ok),
        size_second: size_second.and_then(Result::ok),
        errors,
        cache,
    }
}

impl PairView {
    /// Every read that failed, one line each, naming its site.
    pub fn failed_reads(&self) -> Vec<String> {
        let sites = [&self.first, &self.second];
        let mut lines: Vec<String> = sites
            .iter()
            .filter_map(|s| {
                let error = s.error.as_ref()?;
                Some(if error.starts_with(&format!("{}:", s.name)) { error.clone() } else { format!("{}: {error}", s.name) })
            })
            .collect();
        lines.extend(self.errors.iter().chain(self.caches.iter().flat_map(|c| &c.errors)).cloned());
        if let Some(KeycloakView::Error { message }) = &self.keycloak {
            lines.push(format!("{}: cannot read Keycloak: {message}", self.second.name));
        }
        lines
    }
}

/// What the state of the pair means.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "diagnosis")]
pub enum Diagnosis {
    /// A site, or something of it, could not be read: no verdict.
    Unreachable {
        /// Which.
        site: SiteName,
        /// What failed, naming the site.
        error: String,
        /// How many more reads failed (shown above the diagnosis).
        more: usize,
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
            Self::Unreachable { error, more: 0, .. } => format!("no verdict: cannot read {error}"),
            Self::Unreachable { error, more, .. } => {
                format!("no verdict: cannot read {error} (and {more} more failed read(s), above)")
            }
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

/// After a split brain, which site to keep, by which site took its users' writes (`first` in the
/// active role); or why that cannot be told.
pub fn recommend(view: &PairView, diagnosis: &Diagnosis) -> Option<String> {
    if *diagnosis != Diagnosis::SplitBrain {
        return None;
    }
    let record = view.activity.as_ref()?;
    let (a, b) = (&view.first.name, &view.second.name);
    Some(match &record.verdict {
        DirectionVerdict::Agrees => format!(
            "{a} is the live site ({}; {}): synchronize {b} from it: `site-sync run --active {a} --offline {b}`",
            record.active.describe(),
            record.offline.describe()
        ),
        DirectionVerdict::Against { active_quiet: true, .. } => format!(
            "{b} is the live site ({}; {}): synchronize {a} from it: `site-sync run --active {b} --offline {a}`",
            record.offline.describe(),
            record.active.describe()
        ),
        DirectionVerdict::Against { .. } => format!(
            "both sites take their users' writes ({}; {}): fence one out of the load balancer first; the other is the one to keep",
            record.active.describe(),
            record.offline.describe()
        ),
        DirectionVerdict::Inconclusive { reason } => {
            format!("cannot tell which site is live ({reason}); keep the one the load balancer sends users to")
        }
    })
}

/// Diagnoses a view.
pub fn diagnose(view: &PairView) -> Diagnosis {
    let sites = [&view.first, &view.second];
    let failed: Vec<(&SiteName, &String)> = sites
        .iter()
        .filter_map(|s| s.error.as_ref().map(|e| (&s.name, e)))
        .chain(view.errors.iter().chain(view.caches.iter().flat_map(|c| &c.errors)).map(|error| {
            let site = sites.iter().map(|s| &s.name).find(|s| error.starts_with(&format!("{s}:"))).unwrap_or(&view.first.name);
            (site, error)
        }))
        .collect();
    if let Some((site, error)) = failed.first() {
        let error = if error.starts_with(&format!("{site}:")) { (*error).clone() } else { format!("{site}: {error}") };
        return Diagnosis::Unreachable { site: (*site).clone(), error, more: failed.len() - 1 };
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
            Some(error) => format!("UNREACHABLE: {}", error.strip_prefix(&format!("{}: ", site.name)).unwrap_or(error)),
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
    if let Some(record) = &view.activity {
        let seconds = human_duration(Duration::from_millis(record.window_ms));
        for site in [&record.active, &record.offline] {
            let (word, reason) = match (site.writes.is_empty(), site.unknown.first()) {
                (false, _) => ("live", format!("{} in {seconds}", site.describe())),
                (true, Some((cache, why))) => ("?", format!("writes to {cache} cannot be counted: {why}")),
                (true, None) => ("quiet", format!("no user write in {seconds}")),
            };
            lines.push(format!("  {:<10} {word:<6} {reason}", site.site.as_str()));
        }
    }
    for error in view.errors.iter().chain(view.caches.iter().flat_map(|c| &c.errors)) {
        lines.push(format!("  ! {error}"));
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
