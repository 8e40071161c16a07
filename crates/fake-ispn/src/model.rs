//! The shared state of a fake deployment and every operation on it.
//!
//! Time is read from `tokio::time::Instant`, so under a paused tokio clock the model is fully
//! deterministic. Progress that depends on time (state transfer chunks, delayed status
//! propagation) is computed lazily: every operation first calls [`World::advance`], which brings
//! the world up to "now". Nothing happens between two operations that an operation could observe,
//! so lazy and eager progress are indistinguishable from outside.
//!
//! Failures are expressed as the HTTP answers the real server gives ([`Failure::Http`] with the
//! real status and plain-text body), so the HTTP front end forwards them verbatim and the direct
//! API classifies them with the same function the real client uses.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::hash::{BuildHasherDefault, DefaultHasher};
use std::sync::Arc;
use std::time::Duration;

use ispn_xsite::{
    BackupStatus, CacheName, CacheOutcome, CacheResults, CacheStats, ContainerSiteStatus, NodeStatus, NodeStatuses, PushStatus,
    SiteAction, SiteName, TakeOfflineConfig,
};
use tokio::time::Instant;

use crate::spec::{AuthMechanism, CacheSpec, ClusterSpec, FailurePolicy, Personality, SiteSpec, Strategy, TransferSpec, User};

/// Internal caches every real server has (listed by `GET /rest/v2/caches`, no backups).
pub const INTERNAL_CACHES: [&str; 2] = ["___protobuf_metadata", "___script_cache"];

/// Why an operation did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The server answered with this status and plain-text body.
    Http(u16, String),
    /// Nothing answered (the site is down).
    Unreachable,
    /// The answer never came (an injected fault). `applied` says whether the operation took
    /// effect before the answer was lost.
    Timeout {
        /// Whether the server applied the operation.
        applied: bool,
    },
}

impl Failure {
    fn http(status: u16, body: impl Into<String>) -> Self {
        Self::Http(status, body.into())
    }

    pub(crate) fn no_cache(cache: &str) -> Self {
        Self::http(404, format!("ISPN012010: Cache with name '{cache}' not found amongst the configured caches"))
    }

    fn no_backups(cache: &CacheName) -> Self {
        Self::http(404, format!("Cache '{cache}' does not have backup sites."))
    }

    fn not_backup(cache: &CacheName, site: &str) -> Self {
        Self::http(404, format!("Cache '{cache}' does not backup to site '{site}'"))
    }

    fn site_op(site: &str, result: &str) -> Self {
        Self::http(500, format!("ISPN012047: Site operation on '{site}' failed: '{result}'"))
    }
}

/// Model result.
pub type Outcome<T> = Result<T, Failure>;

/// A fault injected into one site's request handling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestFault {
    /// Answer 503 without doing anything.
    Unavailable,
    /// Do nothing and never answer (a timeout on the client). The model fails at once.
    Timeout,
    /// Do nothing and fail as a timeout after this long, as a client's request timeout expiring
    /// does in real time (over HTTP it stalls like `Timeout`, until the client gives up).
    TimeoutAfter(Duration),
    /// Do the operation, then lose the answer (a timeout on the client after the fact).
    LostAnswer,
    /// Answer 401 without doing anything: the credentials were changed under a running client.
    Unauthorized,
    /// Answer 500 without doing anything: the server failed.
    ServerError,
    /// Answer 200 with a body that is not the JSON asked for (a proxy's error page).
    Garbage,
}

/// Faults that change how a cache's backups behave.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheFaults {
    /// Take-offline calls that only take the first node offline (or, with one node, do nothing)
    /// before one finally takes effect everywhere.
    pub sticky_take_offline: u32,
    /// After an effective take-offline, the other nodes follow only after this long, reading
    /// `mixed` meanwhile (14/15.0 with several nodes).
    pub offline_propagation: Duration,
    /// The next push ends in ERROR after this many entries.
    pub push_error_after: Option<usize>,
    /// The next push stays SENDING, sending nothing, until cancel-push-state.
    pub push_stuck: bool,
    /// The next start-push-state fails with 500 after setting SENDING, as a failed SYNC start
    /// request does on the real server.
    pub push_start_fails: bool,
    /// Per-node status reads answer `offline` whatever the truth (a lying server).
    pub nodes_read_offline: bool,
    /// A clear replicates as if it did not carry `SKIP_XSITE_BACKUP` (a server that ignores the
    /// flag), so that only the backup's status keeps it local.
    pub clear_ignores_skip_xsite: bool,
    /// Push status reads `OK` as soon as a push starts, while the transfer goes on (a lying
    /// server).
    pub push_reads_ok_early: bool,
    /// The server cannot stream the values (`?action=entries` fails) while it lists the keys, as
    /// 16.0.7 does with Keycloak 26.5's authentication sessions: its protostream 6.0.4 JSON writer
    /// throws ("Maps only have nested objects for values") on a map whose values hold maps of
    /// their own, after the 200 was sent, so the stream is cut.
    pub values_unreadable: bool,
    /// Nor can it serve one value as stored (a key-by-key read of a value answers 500): only the
    /// keys can be read.
    pub stored_values_unreadable: bool,
    /// Statistics are off for the cache: its counters read -1, as on a real server.
    pub statistics_disabled: bool,
    /// Writes the counters show per second without any write (a server whose statistics lie).
    pub phantom_writes_per_second: u64,
    /// Listings (`?action=keys`, `?action=entries`) answer only after this long: a large cache on
    /// a busy server.
    pub slow_listing: Duration,
}

/// One clear that reached the model, with every site it emptied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClearRecord {
    /// The site the clear was sent to.
    pub origin: SiteName,
    /// The cache.
    pub cache: CacheName,
    /// Every site whose copy of the cache was emptied, origin first.
    pub reached: Vec<SiteName>,
    /// Whether the request carried `flags: SKIP_XSITE_BACKUP`.
    pub skip_xsite: bool,
    /// When.
    pub at: Instant,
}

/// One push (state transfer) as it happened, for assertions about ordering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushRecord {
    /// The sending site.
    pub from: SiteName,
    /// The receiving site.
    pub to: SiteName,
    /// The cache.
    pub cache: CacheName,
    /// When it started.
    pub started: Instant,
    /// When it ended and how (OK, ERROR, CANCELED), if it did.
    pub ended: Option<(Instant, PushStatus)>,
}

/// One request that reached a site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// The site.
    pub site: SiteName,
    /// `POST /rest/v2/...?action=...`.
    pub what: String,
}

/// A consistent copy of one site's state, for assertions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteSnapshot {
    /// Site name.
    pub name: SiteName,
    /// Whether the site is up.
    pub up: bool,
    /// Per cache: its entries.
    pub entries: BTreeMap<CacheName, BTreeMap<String, String>>,
    /// Per cache, per backup site: the cache-level status.
    pub backups: BTreeMap<CacheName, BTreeMap<SiteName, BackupStatus>>,
    /// Per cache, per backup site: the push status.
    pub push: BTreeMap<CacheName, BTreeMap<SiteName, PushStatus>>,
    /// Per cache: the site it is receiving state from, if any.
    pub receiving: BTreeMap<CacheName, SiteName>,
}

/// Fixed-key hashing: iteration order (and so transfer order) is the same on every run, which
/// keeps seeded simulations reproducible.
type Fixed = BuildHasherDefault<DefaultHasher>;
pub(crate) type Entries = HashMap<Arc<str>, Arc<str>, Fixed>;

#[derive(Debug)]
struct Transfer {
    keys: Vec<Arc<str>>,
    sent: usize,
    started: Instant,
    link_lost_at: Option<Instant>,
    stuck: bool,
    error_after: Option<usize>,
}

#[derive(Debug)]
struct Backup {
    target: usize,
    strategy: Strategy,
    policy: FailurePolicy,
    /// Per node: whether this node replicates to the target. On 16 all entries move together.
    online: Vec<bool>,
    /// Per node: when it will switch to offline (delayed propagation).
    pending_offline: Vec<Option<Instant>>,
    take_offline: TakeOfflineConfig,
    consecutive_failures: u32,
    first_failure: Option<Instant>,
    push: PushStatus,
    transfer: Option<Transfer>,
}

impl Backup {
    fn replicating(&self) -> bool {
        // A write reaches the backup if the node that handles it replicates; with nodes that
        // disagree, assume the worst (the one that still replicates).
        self.online.iter().any(|o| *o)
    }

    fn status(&self) -> BackupStatus {
        let online: Vec<usize> = (0..self.online.len()).filter(|i| self.online[*i]).collect();
        if online.len() == self.online.len() {
            BackupStatus::Online
        } else if online.is_empty() {
            BackupStatus::Offline
        } else {
            BackupStatus::Mixed { online: Vec::new(), offline: Vec::new() }
        }
    }
}

#[derive(Debug)]
struct Receive {
    from: SiteName,
    /// Keys written here by ordinary replication since receiving started: state transfer must not
    /// overwrite them with older values.
    written_live: HashSet<Arc<str>, Fixed>,
}

/// A cache's write counters, as a real server keeps them per node when statistics are on.
#[derive(Debug, Default, Clone, Copy)]
struct Counters {
    stores: u64,
    remove_hits: u64,
    /// When they were last reset (`None`: when the world began).
    reset_at: Option<Instant>,
}

#[derive(Debug, Default)]
struct Cache {
    /// Shared with the streams reading it: a listing of millions of entries takes a reference,
    /// not a copy, and a write during it copies the map once (the listing keeps what it started
    /// with, as a snapshot).
    entries: Arc<Entries>,
    counters: Counters,
    backups: BTreeMap<SiteName, Backup>,
    receiving: Option<Receive>,
    faults: CacheFaults,
}

#[derive(Debug)]
struct Site {
    spec: SiteSpec,
    up: bool,
    caches: BTreeMap<CacheName, Cache>,
    request_faults: VecDeque<RequestFault>,
    /// After this many more requests, every request meets this fault.
    lasting_fault: Option<(usize, RequestFault)>,
}

impl Site {
    fn node_names(&self) -> Vec<String> {
        (1..=self.spec.nodes).map(|i| format!("{}-{i}", self.spec.name)).collect()
    }
}

/// What a replicated operation does on each site it reaches.
enum Op<'a> {
    Put(&'a Arc<str>, &'a Arc<str>),
    Delete(&'a str),
    Clear,
}

/// The whole fake deployment.
#[derive(Debug)]
pub struct World {
    sites: Vec<Site>,
    cut: BTreeSet<(usize, usize)>,
    transfer: TransferSpec,
    clears: Vec<ClearRecord>,
    pushes: Vec<PushRecord>,
    requests: Vec<RequestRecord>,
    record_requests: bool,
    /// Requests addressed to a site answered by another one (`from -> to`): an endpoint that
    /// starts answering as the other site.
    redirects: BTreeMap<usize, usize>,
    /// When the model was built: the counters' first reset.
    began: Instant,
}

fn pair(a: usize, b: usize) -> (usize, usize) {
    (a.min(b), a.max(b))
}

impl World {
    /// Builds a world from a spec. Backups to sites that are not in the spec are kept (they
    /// behave like a site that is down).
    pub fn new(spec: &ClusterSpec) -> Self {
        let index: HashMap<SiteName, usize> = spec.sites.iter().enumerate().map(|(i, s)| (s.name.clone(), i)).collect();
        let sites = spec
            .sites
            .iter()
            .map(|s| Site {
                spec: s.clone(),
                up: true,
                caches: Self::fresh_caches(s, &index),
                request_faults: VecDeque::new(),
                lasting_fault: None,
            })
            .collect();
        Self {
            sites,
            cut: BTreeSet::new(),
            transfer: spec.transfer,
            clears: Vec::new(),
            pushes: Vec::new(),
            requests: Vec::new(),
            record_requests: true,
            redirects: BTreeMap::new(),
            began: Instant::now(),
        }
    }

    fn fresh_caches(spec: &SiteSpec, index: &HashMap<SiteName, usize>) -> BTreeMap<CacheName, Cache> {
        // Every real server has these two internal caches, without backups.
        let internal =
            INTERNAL_CACHES.iter().map(|n| CacheSpec { name: CacheName::new(*n).expect("valid"), backups: Vec::new() });
        spec.caches
            .iter()
            .cloned()
            .chain(internal)
            .map(|c| {
                let backups = c
                    .backups
                    .iter()
                    .map(|b| {
                        let backup = Backup {
                            target: index.get(&b.site).copied().unwrap_or(usize::MAX),
                            strategy: b.strategy,
                            policy: b.failure_policy,
                            online: vec![true; spec.nodes],
                            pending_offline: vec![None; spec.nodes],
                            take_offline: TakeOfflineConfig { after_failures: 0, min_wait: 0 },
                            consecutive_failures: 0,
                            first_failure: None,
                            push: PushStatus::Idle,
                            transfer: None,
                        };
                        (b.site.clone(), backup)
                    })
                    .collect();
                (c.name, Cache { backups, ..Cache::default() })
            })
            .collect()
    }

    // ----- identity and bookkeeping -------------------------------------------------------------

    /// Index of a site by name.
    pub fn site_index(&self, name: &str) -> Option<usize> {
        self.sites.iter().position(|s| s.spec.name == name)
    }

    /// Number of sites.
    pub fn site_count(&self) -> usize {
        self.sites.len()
    }

    /// Name of site `site`.
    pub fn site_name(&self, site: usize) -> &SiteName {
        &self.sites[site].spec.name
    }

    /// Version personality of site `site`.
    pub fn personality(&self, site: usize) -> Personality {
        self.sites[site].spec.personality
    }

    /// Offered authentication mechanisms of site `site`.
    pub fn mechanisms(&self, site: usize) -> &[AuthMechanism] {
        &self.sites[site].spec.mechanisms
    }

    /// A user of site `site`.
    pub fn user(&self, site: usize, name: &str) -> Option<&User> {
        self.sites[site].spec.users.iter().find(|u| u.name == name)
    }

    /// Whether site `site` is up.
    pub fn is_up(&self, site: usize) -> bool {
        self.sites[site].up
    }

    /// Records a request (the HTTP front end and the direct API both call this).
    pub fn record(&mut self, site: usize, what: String) {
        if self.record_requests {
            let site = self.sites[site].spec.name.clone();
            self.requests.push(RequestRecord { site, what });
        }
    }

    /// Turns request recording off, for large benchmarks.
    pub fn set_request_recording(&mut self, on: bool) {
        self.record_requests = on;
    }

    /// Every request so far.
    pub fn requests(&self) -> &[RequestRecord] {
        &self.requests
    }

    /// Every clear so far.
    pub fn clears(&self) -> &[ClearRecord] {
        &self.clears
    }

    /// Every push so far.
    pub fn pushes(&self) -> &[PushRecord] {
        &self.pushes
    }

    fn end_push(&mut self, site: usize, cache: &CacheName, target: &SiteName, status: PushStatus, at: Instant) {
        let from = &self.sites[site].spec.name;
        if let Some(record) =
            self.pushes.iter_mut().rev().find(|p| &p.from == from && &p.to == target && &p.cache == cache && p.ended.is_none())
        {
            record.ended = Some((at, status));
        }
    }

    /// Takes the next injected request fault of site `site`, if any.
    pub fn next_request_fault(&mut self, site: usize) -> Option<RequestFault> {
        let site = &mut self.sites[site];
        if let Some(fault) = site.request_faults.pop_front() {
            return Some(fault);
        }
        match &mut site.lasting_fault {
            Some((0, fault)) => Some(*fault),
            Some((passes, _)) => {
                *passes -= 1;
                None
            }
            None => None,
        }
    }

    // ----- control (tests, demo, simulation) ----------------------------------------------------

    /// Cuts the link between two sites (a network partition): replication and state transfer
    /// between them fail; each site's own REST endpoint keeps answering.
    pub fn cut_link(&mut self, a: usize, b: usize) {
        self.advance();
        self.cut.insert(pair(a, b));
        self.advance();
    }

    /// Restores the link.
    pub fn heal_link(&mut self, a: usize, b: usize) {
        self.advance();
        self.cut.remove(&pair(a, b));
    }

    /// Whether site `a` can reach site `b` for replication.
    pub fn linked(&self, a: usize, b: usize) -> bool {
        a < self.sites.len() && b < self.sites.len() && self.sites[a].up && self.sites[b].up && !self.cut.contains(&pair(a, b))
    }

    /// Stops a site as a killed process would: nothing answers, and when it comes back
    /// ([`World::restart`]) its caches are empty and its statuses are back to the configuration.
    pub fn kill(&mut self, site: usize) {
        self.advance();
        self.sites[site].up = false;
        self.advance();
    }

    /// Starts a killed site again, empty.
    pub fn restart(&mut self, site: usize) {
        self.advance();
        let index: HashMap<SiteName, usize> = self.sites.iter().enumerate().map(|(i, s)| (s.spec.name.clone(), i)).collect();
        let s = &mut self.sites[site];
        s.caches = Self::fresh_caches(&s.spec, &index);
        // A restarted node starts its statistics afresh.
        for cache in s.caches.values_mut() {
            cache.counters.reset_at = Some(Instant::now());
        }
        s.request_faults.clear();
        s.up = true;
    }

    /// After `after` more requests, every request to site `site` meets `fault`: a site that breaks
    /// in the middle of a command and stays broken. Queued faults come first.
    pub fn fail_requests_from(&mut self, site: usize, after: usize, fault: RequestFault) {
        self.sites[site].lasting_fault = Some((after, fault));
    }

    /// Queues request faults for site `site`: the next requests meet them in order.
    pub fn inject_request_faults(&mut self, site: usize, faults: impl IntoIterator<Item = RequestFault>) {
        self.sites[site].request_faults.extend(faults);
    }

    /// From now on, requests addressed to `from` are answered by `to`: the endpoint of one site
    /// starts answering as another (a load balancer or DNS name that moved).
    pub fn redirect(&mut self, from: usize, to: usize) {
        self.redirects.insert(from, to);
    }

    /// The site that answers requests addressed to `site`.
    pub fn answering(&self, site: usize) -> usize {
        self.redirects.get(&site).copied().unwrap_or(site)
    }

    /// Sets the faults of one cache on one site.
    pub fn set_cache_faults(&mut self, site: usize, cache: &CacheName, faults: CacheFaults) {
        if let Some(c) = self.sites[site].caches.get_mut(cache) {
            c.faults = faults;
        }
    }

    /// A copy of one site's state.
    pub fn snapshot(&mut self, site: usize) -> SiteSnapshot {
        self.advance();
        let s = &self.sites[site];
        let mut snapshot = SiteSnapshot {
            name: s.spec.name.clone(),
            up: s.up,
            entries: BTreeMap::new(),
            backups: BTreeMap::new(),
            push: BTreeMap::new(),
            receiving: BTreeMap::new(),
        };
        for (name, cache) in &s.caches {
            snapshot.entries.insert(name.clone(), cache.entries.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
            snapshot.backups.insert(name.clone(), cache.backups.iter().map(|(t, b)| (t.clone(), b.status())).collect());
            snapshot.push.insert(name.clone(), cache.backups.iter().map(|(t, b)| (t.clone(), b.push)).collect());
            if let Some(r) = &cache.receiving {
                snapshot.receiving.insert(name.clone(), r.from.clone());
            }
        }
        snapshot
    }

    /// Writes entries straight into one site's cache, without replication (to build divergent
    /// data quickly, e.g. a million entries for a benchmark).
    pub fn load(&mut self, site: usize, cache: &CacheName, entries: impl IntoIterator<Item = (String, String)>) {
        if let Some(c) = self.sites[site].caches.get_mut(cache) {
            Arc::make_mut(&mut c.entries).extend(entries.into_iter().map(|(k, v)| (Arc::from(k), Arc::from(v))));
        }
    }

    /// Number of entries of a cache, without going through the API.
    pub fn entry_count(&self, site: usize, cache: &CacheName) -> usize {
        self.sites[site].caches.get(cache).map_or(0, |c| c.entries.len())
    }

    // ----- time -----------------------------------------------------------------------------------

    /// Brings delayed effects up to now: status propagation and state transfer progress.
    pub fn advance(&mut self) {
        let now = Instant::now();
        for site in 0..self.sites.len() {
            let cache_names: Vec<CacheName> = self.sites[site].caches.keys().cloned().collect();
            for cache in &cache_names {
                self.propagate_offline(site, cache, now);
                let targets: Vec<SiteName> = self.sites[site].caches[cache].backups.keys().cloned().collect();
                for target in &targets {
                    self.progress_transfer(site, cache, target, now);
                }
            }
        }
    }

    fn propagate_offline(&mut self, site: usize, cache: &CacheName, now: Instant) {
        if let Some(c) = self.sites[site].caches.get_mut(cache) {
            for backup in c.backups.values_mut() {
                for node in 0..backup.online.len() {
                    if backup.pending_offline[node].is_some_and(|at| at <= now) {
                        backup.online[node] = false;
                        backup.pending_offline[node] = None;
                    }
                }
            }
        }
    }

    fn progress_transfer(&mut self, site: usize, cache: &CacheName, target_name: &SiteName, now: Instant) {
        let spec = self.transfer;
        let (target, sync) = {
            let backup = &self.sites[site].caches[cache].backups[target_name];
            if backup.transfer.is_none() {
                return;
            }
            (backup.target, backup.strategy == Strategy::Sync)
        };
        let linked = self.linked(site, target) && self.sites[target].caches.contains_key(cache);
        let sender_up = self.sites[site].up;
        let backup = self.sites[site].caches.get_mut(cache).and_then(|c| c.backups.get_mut(target_name));
        let Some(backup) = backup else { return };
        let Some(transfer) = backup.transfer.as_mut() else { return };
        if !sender_up {
            backup.transfer = None;
            backup.push = PushStatus::Idle;
            self.end_push(site, cache, target_name, PushStatus::Error, now);
            return;
        }
        if transfer.stuck {
            return;
        }
        if !linked {
            let lost_at = *transfer.link_lost_at.get_or_insert(now);
            if now.duration_since(lost_at) >= spec.error_after_link_loss {
                // The chunk failed after all retries: ERROR, and a SYNC receiver that never got
                // the "finish" message stays in receive mode.
                backup.transfer = None;
                backup.push = PushStatus::Error;
                self.end_push(site, cache, target_name, PushStatus::Error, now);
            }
            return;
        }
        transfer.link_lost_at = None;
        let due = match spec.entries_per_second {
            None => transfer.keys.len(),
            Some(rate) => {
                let elapsed = now.duration_since(transfer.started).as_secs_f64();
                let chunks = (elapsed * rate as f64 / spec.chunk_size.max(1) as f64).floor() as usize;
                chunks.saturating_mul(spec.chunk_size.max(1)).min(transfer.keys.len())
            }
        };
        let limit = transfer.error_after.map_or(due, |e| due.min(e));
        let from = transfer.sent;
        if limit > from {
            let batch: Vec<Arc<str>> = transfer.keys[from..limit].to_vec();
            transfer.sent = limit;
            self.copy_chunk(site, target, cache, &batch);
        }
        let backup = self.sites[site].caches.get_mut(cache).and_then(|c| c.backups.get_mut(target_name));
        let Some(backup) = backup else { return };
        let Some(transfer) = backup.transfer.as_ref() else { return };
        let failed = transfer.error_after.is_some_and(|e| transfer.sent >= e);
        let finished = transfer.sent >= transfer.keys.len();
        if failed || finished {
            backup.transfer = None;
            backup.push = if failed { PushStatus::Error } else { PushStatus::Ok };
            let status = backup.push;
            self.end_push(site, cache, target_name, status, now);
            if sync
                && !failed
                && let Some(c) = self.sites[target].caches.get_mut(cache)
            {
                c.receiving = None;
            }
        }
    }

    fn copy_chunk(&mut self, from: usize, to: usize, cache: &CacheName, keys: &[Arc<str>]) {
        let values: Vec<(Arc<str>, Arc<str>)> = {
            let Some(source) = self.sites[from].caches.get(cache) else { return };
            keys.iter().filter_map(|k| source.entries.get_key_value(k).map(|(k, v)| (k.clone(), v.clone()))).collect()
        };
        let Some(dest) = self.sites[to].caches.get_mut(cache) else { return };
        for (k, v) in values {
            if dest.receiving.as_ref().is_some_and(|r| r.written_live.contains(&k)) {
                continue;
            }
            Arc::make_mut(&mut dest.entries).insert(k, v);
        }
    }

    // ----- lookups --------------------------------------------------------------------------------

    fn cache(&self, site: usize, cache: &str) -> Outcome<&Cache> {
        self.sites[site].caches.get(cache).ok_or_else(|| Failure::no_cache(cache))
    }

    fn backup(&self, site: usize, cache: &CacheName, target: &str) -> Outcome<&Backup> {
        let c = self.cache(site, cache.as_str())?;
        if c.backups.is_empty() {
            return Err(Failure::no_backups(cache));
        }
        c.backups.get(target).ok_or_else(|| Failure::not_backup(cache, target))
    }

    /// Checks that a cache exists and has backups.
    pub fn require_backups(&self, site: usize, cache: &CacheName) -> Outcome<()> {
        let c = self.cache(site, cache.as_str())?;
        if c.backups.is_empty() { Err(Failure::no_backups(cache)) } else { Ok(()) }
    }

    // ----- container ------------------------------------------------------------------------------

    /// `GET /rest/v2/container` as JSON.
    pub fn container_info(&self, site: usize) -> serde_json::Value {
        let s = &self.sites[site];
        let nodes = s.node_names();
        let relay = s.spec.answering_node_is_relay;
        let view: Vec<&str> = (0..self.sites.len())
            .filter(|o| relay && (*o == site || self.linked(site, *o)))
            .map(|o| self.sites[o].spec.name.as_str())
            .collect();
        let relay_node = if relay { nodes[0].clone() } else { nodes[nodes.len() - 1].clone() };
        let mut info = serde_json::json!({
            "version": s.spec.personality.version(),
            "name": "default",
            "coordinator": true,
            "cluster_name": s.spec.name.as_str(),
            "cache_manager_status": "RUNNING",
            "node_address": nodes[0],
            "cluster_members": nodes,
            "cluster_size": s.spec.nodes,
            "defined_caches": s.caches.keys().map(|c| serde_json::json!({"name": c.as_str(), "started": true})).collect::<Vec<_>>(),
            "local_site": s.spec.name.as_str(),
            "relay_node": relay,
            "relay_nodes_address": [relay_node],
            "sites_view": view,
            "rebalancing_enabled": true,
        });
        if s.spec.personality == Personality::V16 {
            info["tracing_enabled"] = serde_json::Value::Bool(false);
        }
        info
    }

    /// `GET /rest/v2/container/health`.
    pub fn health(&self, site: usize) -> serde_json::Value {
        let s = &self.sites[site];
        serde_json::json!({
            "cluster_health": {
                "cluster_name": s.spec.name.as_str(),
                "health_status": "HEALTHY",
                "number_of_nodes": s.spec.nodes,
                "node_names": s.node_names(),
            },
            "cache_health": s.caches.keys().map(|c| serde_json::json!({"status": "HEALTHY", "cache_name": c.as_str()})).collect::<Vec<_>>(),
        })
    }

    /// Every cache name, internal ones included.
    pub fn cache_names(&self, site: usize) -> Vec<String> {
        self.sites[site].caches.keys().map(|c| c.to_string()).collect()
    }

    fn cache_status(&self, site: usize, backup: &Backup) -> BackupStatus {
        match backup.status() {
            BackupStatus::Mixed { .. } => {
                let nodes = self.sites[site].node_names();
                let (online, offline): (Vec<_>, Vec<_>) = nodes.into_iter().enumerate().partition(|(i, _)| backup.online[*i]);
                BackupStatus::Mixed {
                    online: online.into_iter().map(|(_, n)| n).collect(),
                    offline: offline.into_iter().map(|(_, n)| n).collect(),
                }
            }
            other => other,
        }
    }

    /// Cache-level status of every backup of `cache`.
    pub fn cache_backups(&self, site: usize, cache: &CacheName) -> Outcome<BTreeMap<SiteName, BackupStatus>> {
        self.require_backups(site, cache)?;
        let c = self.cache(site, cache.as_str())?;
        Ok(c.backups.iter().map(|(t, b)| (t.clone(), self.cache_status(site, b))).collect())
    }

    /// Per-node status of one backup.
    pub fn cache_site_nodes(&self, site: usize, cache: &CacheName, target: &str) -> Outcome<NodeStatuses> {
        let backup = self.backup(site, cache, target)?;
        let lie = self.sites[site].caches[cache].faults.nodes_read_offline;
        let nodes = self.sites[site].node_names();
        Ok(NodeStatuses(
            nodes
                .into_iter()
                .enumerate()
                .map(|(i, n)| (n, if backup.online[i] && !lie { NodeStatus::Online } else { NodeStatus::Offline }))
                .collect(),
        ))
    }

    /// Container-level status of every site some cache backs up to.
    pub fn container_backups(&self, site: usize) -> BTreeMap<SiteName, ContainerSiteStatus> {
        let targets: BTreeSet<SiteName> = self.sites[site].caches.values().flat_map(|c| c.backups.keys().cloned()).collect();
        targets.into_iter().filter_map(|t| self.container_site_status(site, t.as_str()).ok().map(|s| (t, s))).collect()
    }

    /// Container-level status of one site.
    pub fn container_site_status(&self, site: usize, target: &str) -> Outcome<ContainerSiteStatus> {
        let (mut online, mut offline, mut mixed) = (Vec::new(), Vec::new(), Vec::new());
        for (name, cache) in &self.sites[site].caches {
            let Some(backup) = cache.backups.get(target) else { continue };
            match backup.status() {
                BackupStatus::Online => online.push(name.to_string()),
                BackupStatus::Offline => offline.push(name.to_string()),
                _ => mixed.push(name.to_string()),
            }
        }
        if online.is_empty() && offline.is_empty() && mixed.is_empty() {
            return Err(Failure::http(404, ""));
        }
        Ok(if offline.is_empty() && mixed.is_empty() {
            ContainerSiteStatus::Online
        } else if online.is_empty() && mixed.is_empty() {
            ContainerSiteStatus::Offline
        } else {
            ContainerSiteStatus::Mixed { online, offline, mixed }
        })
    }

    // ----- site actions ---------------------------------------------------------------------------

    /// One x-site action on one cache's backup.
    pub fn cache_site_action(&mut self, site: usize, cache: &CacheName, target: &str, action: SiteAction) -> Outcome<()> {
        self.backup(site, cache, target)?;
        let target_name = SiteName::new(target).map_err(|_| Failure::not_backup(cache, target))?;
        match action {
            SiteAction::TakeOffline => self.take_offline(site, cache, &target_name),
            SiteAction::BringOnline => {
                self.bring_online(site, cache, &target_name);
                Ok(())
            }
            SiteAction::StartPushState => self.start_push(site, cache, &target_name),
            SiteAction::CancelPushState => self.cancel_push(site, cache, &target_name),
            SiteAction::CancelReceiveState => {
                if let Some(c) = self.sites[site].caches.get_mut(cache) {
                    c.receiving = None;
                }
                Ok(())
            }
        }
    }

    /// One x-site action on every cache with backups; the per-cache answers.
    pub fn container_site_action(&mut self, site: usize, target: &str, action: SiteAction) -> CacheResults {
        let caches: Vec<CacheName> =
            self.sites[site].caches.iter().filter(|(_, c)| !c.backups.is_empty()).map(|(n, _)| n.clone()).collect();
        let mut results = BTreeMap::new();
        for cache in caches {
            let outcome = if !self.sites[site].caches[&cache].backups.contains_key(target) {
                CacheOutcome::Failed(format!("Incorrect site name: {target}"))
            } else {
                match self.cache_site_action(site, &cache, target, action) {
                    Ok(()) => CacheOutcome::Ok,
                    Err(Failure::Http(_, body)) => CacheOutcome::Failed(
                        body.strip_prefix(&format!("ISPN012047: Site operation on '{target}' failed: '"))
                            .and_then(|s| s.strip_suffix('\''))
                            .map(str::to_owned)
                            .unwrap_or(body),
                    ),
                    Err(other) => CacheOutcome::Failed(format!("{other:?}")),
                }
            };
            results.insert(cache, outcome);
        }
        CacheResults(results)
    }

    fn take_offline(&mut self, site: usize, cache: &CacheName, target: &SiteName) -> Outcome<()> {
        let now = Instant::now();
        let per_node = self.sites[site].spec.personality.per_node_status();
        let Some(c) = self.sites[site].caches.get_mut(cache) else { return Err(Failure::no_cache(cache.as_str())) };
        let faults = &mut c.faults;
        let Some(backup) = c.backups.get_mut(target) else { return Err(Failure::not_backup(cache, target.as_str())) };
        if faults.sticky_take_offline > 0 {
            faults.sticky_take_offline -= 1;
            if per_node && backup.online.len() > 1 {
                backup.online[0] = false;
            }
            return Ok(());
        }
        if !per_node || faults.offline_propagation.is_zero() {
            backup.online.iter_mut().for_each(|o| *o = false);
            backup.pending_offline.iter_mut().for_each(|p| *p = None);
        } else {
            backup.online[0] = false;
            for node in 1..backup.online.len() {
                if backup.online[node] && backup.pending_offline[node].is_none() {
                    backup.pending_offline[node] = Some(now + faults.offline_propagation);
                }
            }
        }
        Ok(())
    }

    fn bring_online(&mut self, site: usize, cache: &CacheName, target: &SiteName) {
        if let Some(backup) = self.sites[site].caches.get_mut(cache).and_then(|c| c.backups.get_mut(target)) {
            backup.online.iter_mut().for_each(|o| *o = true);
            backup.pending_offline.iter_mut().for_each(|p| *p = None);
            backup.consecutive_failures = 0;
            backup.first_failure = None;
        }
    }

    fn start_push(&mut self, site: usize, cache: &CacheName, target: &SiteName) -> Outcome<()> {
        // Pushing brings the site online first, and it stays online even if the start then fails.
        self.bring_online(site, cache, target);
        let sender = self.sites[site].spec.name.clone();
        let (target_index, sync, running) = {
            let backup = &self.sites[site].caches[cache].backups[target];
            (backup.target, backup.strategy == Strategy::Sync, backup.transfer.is_some())
        };
        let unable = |why: String| Failure::site_op(target.as_str(), &format!("Unable to pushState to '{target}'. {why}"));
        if running {
            // Checked on 16.0.7: a second start while SENDING fails on the receiving side
            // ("already receiving") and answers 500; the running push is not disturbed.
            return Err(unable(format!("ISPN000217: Received exception from {target}, see cause for remote stack trace")));
        }
        let fails_to_start = {
            let faults = &mut self.sites[site].caches.get_mut(cache).map(|c| &mut c.faults);
            match faults {
                Some(f) if f.push_start_fails => {
                    f.push_start_fails = false;
                    true
                }
                _ => false,
            }
        };
        let reachable = self.linked(site, target_index) && self.sites[target_index].caches.contains_key(cache);
        if sync && reachable {
            let receiver = self.sites[target_index].caches.get(cache).and_then(|c| c.receiving.as_ref());
            if let Some(r) = receiver
                && r.from != sender
            {
                return Err(unable(format!("Already receiving state from {}", r.from)));
            }
        }
        if fails_to_start || (sync && !reachable) {
            // The status was set to SENDING before the remote start request failed; only
            // cancel-push-state releases it.
            let backup = self.sites[site].caches.get_mut(cache).and_then(|c| c.backups.get_mut(target));
            if let Some(backup) = backup {
                backup.push = PushStatus::Sending;
                backup.transfer = Some(Transfer {
                    keys: Vec::new(),
                    sent: 0,
                    started: Instant::now(),
                    link_lost_at: None,
                    stuck: true,
                    error_after: None,
                });
            }
            return Err(unable(format!(
                "ISPN000476: Timed out waiting for responses for request 1 from {target} after 4.5 seconds"
            )));
        }
        if sync && let Some(c) = self.sites[target_index].caches.get_mut(cache) {
            c.receiving = Some(Receive { from: sender, written_live: HashSet::default() });
        }
        let c = self.sites[site].caches.get_mut(cache).ok_or_else(|| Failure::no_cache(cache.as_str()))?;
        let stuck = std::mem::take(&mut c.faults.push_stuck);
        let error_after = c.faults.push_error_after.take();
        let keys: Vec<Arc<str>> = c.entries.keys().cloned().collect();
        if let Some(backup) = c.backups.get_mut(target) {
            backup.push = PushStatus::Sending;
            backup.transfer = Some(Transfer { keys, sent: 0, started: Instant::now(), link_lost_at: None, stuck, error_after });
        }
        let from = self.sites[site].spec.name.clone();
        self.pushes.push(PushRecord { from, to: target.clone(), cache: cache.clone(), started: Instant::now(), ended: None });
        Ok(())
    }

    fn cancel_push(&mut self, site: usize, cache: &CacheName, target: &SiteName) -> Outcome<()> {
        let Some(backup) = self.sites[site].caches.get_mut(cache).and_then(|c| c.backups.get_mut(target)) else {
            return Ok(());
        };
        let (target_index, sync) = (backup.target, backup.strategy == Strategy::Sync);
        if backup.transfer.take().is_some() {
            backup.push = PushStatus::Canceled;
            self.end_push(site, cache, target, PushStatus::Canceled, Instant::now());
        }
        if !sync {
            return Ok(());
        }
        // The "finish receiving" message must reach the receiver. Checked on 16.0.7: with the
        // receiver down the call answers 500, yet the status has already turned CANCELED.
        if !self.linked(site, target_index) {
            return Err(Failure::site_op(
                target.as_str(),
                &format!(
                    "Unable to perform operation. Error=org.infinispan.remoting.transport.jgroups.SuspectException: ISPN000400: Node site:{target} was suspected"
                ),
            ));
        }
        let me = self.sites[site].spec.name.clone();
        if let Some(c) = self.sites[target_index].caches.get_mut(cache)
            && c.receiving.as_ref().is_some_and(|r| r.from == me)
        {
            c.receiving = None;
        }
        Ok(())
    }

    /// Push status of `cache` towards every backup site.
    pub fn push_state_status(&self, site: usize, cache: &CacheName) -> Outcome<BTreeMap<String, PushStatus>> {
        self.require_backups(site, cache)?;
        let c = &self.sites[site].caches[cache];
        let early =
            |b: &Backup| if c.faults.push_reads_ok_early && b.push == PushStatus::Sending { PushStatus::Ok } else { b.push };
        Ok(c.backups.iter().map(|(t, b)| (t.to_string(), early(b))).collect())
    }

    /// Resets finished push statuses; a running transfer keeps its SENDING.
    pub fn clear_push_state_status(&mut self, site: usize, cache: &CacheName) -> Outcome<String> {
        self.require_backups(site, cache)?;
        if let Some(c) = self.sites[site].caches.get_mut(cache) {
            for backup in c.backups.values_mut() {
                if backup.transfer.is_none() {
                    backup.push = PushStatus::Idle;
                }
            }
        }
        Ok("ok".to_owned())
    }

    /// The runtime take-offline configuration.
    pub fn take_offline_config(&self, site: usize, cache: &CacheName, target: &str) -> Outcome<TakeOfflineConfig> {
        Ok(self.backup(site, cache, target)?.take_offline)
    }

    /// Changes it; `false` when unchanged (the server answers 304).
    pub fn set_take_offline_config(
        &mut self,
        site: usize,
        cache: &CacheName,
        target: &str,
        config: TakeOfflineConfig,
    ) -> Outcome<bool> {
        self.backup(site, cache, target)?;
        let backup = self.sites[site].caches.get_mut(cache).and_then(|c| c.backups.get_mut(target));
        let Some(backup) = backup else { return Err(Failure::not_backup(cache, target)) };
        let changed = backup.take_offline != config;
        backup.take_offline = config;
        Ok(changed)
    }

    // ----- data -----------------------------------------------------------------------------------

    /// Cluster-wide size.
    pub fn size(&self, site: usize, cache: &str) -> Outcome<u64> {
        Ok(self.cache(site, cache)?.entries.len() as u64)
    }

    /// The cache's write counters on the answering node: every put and every removal of an
    /// existing entry, local or replicated from another site, since the last reset.
    pub fn cache_stats(&self, site: usize, cache: &str) -> Outcome<CacheStats> {
        let c = self.cache(site, cache)?;
        if c.faults.statistics_disabled {
            return Ok(CacheStats { stores: -1, remove_hits: -1, time_since_reset: -1 });
        }
        let elapsed = Instant::now().duration_since(c.counters.reset_at.unwrap_or(self.began));
        let since = elapsed.as_secs();
        let phantom =
            c.faults.phantom_writes_per_second.saturating_mul(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)) / 1000;
        let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        Ok(CacheStats {
            stores: count(c.counters.stores + phantom),
            remove_hits: count(c.counters.remove_hits),
            time_since_reset: count(since),
        })
    }

    /// Resets a cache's counters, as `?action=stats-reset` or a restarted node does.
    pub fn reset_stats(&mut self, site: usize, cache: &CacheName) {
        if let Some(c) = self.sites[site].caches.get_mut(cache) {
            c.counters = Counters { reset_at: Some(Instant::now()), ..Counters::default() };
        }
    }

    /// One value.
    pub fn get(&self, site: usize, cache: &str, key: &str) -> Outcome<Option<String>> {
        Ok(self.cache(site, cache)?.entries.get(key).map(|v| v.to_string()))
    }

    /// One value as the server stores it (the fake keeps strings; see `stored_form`).
    pub fn stored(&self, site: usize, cache: &str, key: &str) -> Outcome<Option<String>> {
        let c = self.cache(site, cache)?;
        if c.faults.stored_values_unreadable {
            return Err(Failure::http(500, "Cannot convert the stored value to application/x-protostream"));
        }
        Ok(c.entries.get(key).map(|v| v.to_string()))
    }

    /// Every key: the map itself, shared (a listing reads it; a write meanwhile copies it).
    pub(crate) fn keys(&self, site: usize, cache: &str) -> Outcome<Arc<Entries>> {
        Ok(Arc::clone(&self.cache(site, cache)?.entries))
    }

    /// How long a listing of the cache takes to answer (the `slow_listing` fault).
    pub(crate) fn listing_delay(&self, site: usize, cache: &str) -> Duration {
        self.cache(site, cache).map_or(Duration::ZERO, |c| c.faults.slow_listing)
    }

    /// Every entry: the map itself, shared, as for [`World::keys`].
    pub(crate) fn entries(&self, site: usize, cache: &str) -> Outcome<Arc<Entries>> {
        let c = self.cache(site, cache)?;
        if c.faults.values_unreadable {
            // What 16.0.7 logs when it cannot render Keycloak's authentication sessions; it then
            // drops the connection.
            return Err(Failure::http(
                500,
                "Error encountered while streaming cache chunk: Maps only have nested objects for values",
            ));
        }
        Ok(Arc::clone(&c.entries))
    }

    /// Writes one entry, replicating it like the real server.
    pub fn put(&mut self, site: usize, cache: &str, key: &str, value: &str) -> Outcome<()> {
        let key: Arc<str> = Arc::from(key);
        let value: Arc<str> = Arc::from(value);
        self.replicated(site, cache, &Op::Put(&key, &value), false).map(drop)
    }

    /// Deletes one key, replicating it; `false` when it was absent.
    pub fn delete(&mut self, site: usize, cache: &str, key: &str) -> Outcome<bool> {
        let present = self.cache(site, cache)?.entries.contains_key(key);
        if !present {
            return Ok(false);
        }
        self.replicated(site, cache, &Op::Delete(key), false).map(|_| true)
    }

    /// Clears a cache. Without `skip_xsite` the clear is replicated to every backup that is online
    /// and reachable, exactly the danger the procedure's interlock exists to prevent.
    pub fn clear(&mut self, site: usize, cache: &str, skip_xsite: bool) -> Outcome<()> {
        let ignored = self.cache(site, cache)?.faults.clear_ignores_skip_xsite;
        let reached = self.replicated(site, cache, &Op::Clear, skip_xsite && !ignored)?;
        let mut sites = vec![self.sites[site].spec.name.clone()];
        sites.extend(reached.into_iter().map(|t| self.sites[t].spec.name.clone()));
        let cache = CacheName::new(cache).map_err(|_| Failure::no_cache(cache))?;
        self.clears.push(ClearRecord { origin: sites[0].clone(), cache, reached: sites, skip_xsite, at: Instant::now() });
        Ok(())
    }

    /// Applies an operation locally and to every backup that replicates, following SYNC/ASYNC and
    /// FAIL/WARN. Returns the sites it reached besides the origin.
    fn replicated(&mut self, site: usize, cache: &str, op: &Op<'_>, skip_xsite: bool) -> Outcome<Vec<usize>> {
        let now = Instant::now();
        let cache_name = CacheName::new(cache).map_err(|_| Failure::no_cache(cache))?;
        self.cache(site, cache)?;
        let mut reached = Vec::new();
        let mut failures = Vec::new();
        if !skip_xsite {
            for (target_name, backup) in &self.sites[site].caches[cache].backups {
                if !backup.replicating() {
                    continue;
                }
                let ok = self.linked(site, backup.target) && self.sites[backup.target].caches.contains_key(cache);
                if ok {
                    reached.push(backup.target);
                } else {
                    failures
                        .push((target_name.clone(), backup.strategy == Strategy::Sync && backup.policy == FailurePolicy::Fail));
                }
            }
        }
        for (target, _) in &failures {
            self.note_backup_failure(site, &cache_name, target, now);
        }
        if let Some((target, _)) = failures.iter().find(|(_, fatal)| *fatal) {
            // The bodies the real server (16.0.7) sends: a failed write answers the literal text
            // "null"; a failed clear names the cache and the unreachable site.
            let body = match op {
                Op::Clear => format!(
                    "ISPN000709: Failed to backup cache `{cache}` to one or more remote sites: ISPN000476: Timed out waiting for responses for request 1 from {target} after 4.5 seconds\n    {target}"
                ),
                _ => "null".to_owned(),
            };
            return Err(Failure::http(500, body));
        }
        if let Some(c) = self.sites[site].caches.get_mut(cache) {
            for backup in c.backups.values_mut() {
                if reached.contains(&backup.target) {
                    backup.consecutive_failures = 0;
                    backup.first_failure = None;
                }
            }
        }
        Self::apply(self.sites[site].caches.get_mut(cache), op, false, true);
        for target in &reached {
            // A replicated write is counted on the site master that received it only.
            let counted = self.sites[*target].spec.answering_node_is_relay;
            Self::apply(self.sites[*target].caches.get_mut(cache), op, true, counted);
        }
        Ok(reached)
    }

    fn note_backup_failure(&mut self, site: usize, cache: &CacheName, target: &SiteName, now: Instant) {
        let Some(backup) = self.sites[site].caches.get_mut(cache).and_then(|c| c.backups.get_mut(target)) else { return };
        backup.consecutive_failures += 1;
        let first = *backup.first_failure.get_or_insert(now);
        let config = backup.take_offline;
        let enabled = config.after_failures > 0 || config.min_wait > 0;
        let failures_met = config.after_failures <= 0 || backup.consecutive_failures >= config.after_failures as u32;
        let wait_met = config.min_wait <= 0 || now.duration_since(first) >= Duration::from_millis(config.min_wait as u64);
        if enabled && failures_met && wait_met {
            backup.online.iter_mut().for_each(|o| *o = false);
        }
    }

    fn apply(cache: Option<&mut Cache>, op: &Op<'_>, remote: bool, counted: bool) {
        let Some(cache) = cache else { return };
        match op {
            Op::Put(k, v) => {
                if remote && let Some(r) = cache.receiving.as_mut() {
                    r.written_live.insert((*k).clone());
                }
                Arc::make_mut(&mut cache.entries).insert((*k).clone(), (*v).clone());
                cache.counters.stores += u64::from(counted);
            }
            Op::Delete(k) => {
                if cache.entries.contains_key(*k) {
                    Arc::make_mut(&mut cache.entries).remove(*k);
                    cache.counters.remove_hits += u64::from(counted);
                }
            }
            Op::Clear => cache.entries = Arc::default(),
        }
    }
}
