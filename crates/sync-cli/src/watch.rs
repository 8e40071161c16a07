//! `site-sync watch`: both sites polled with the read-only probes of `status`, diagnosed the same
//! way, and served as Prometheus metrics (`/metrics`) with a liveness answer (`/healthz`).
//!
//! It never writes to a site and never takes the run lock. A site that stops answering is a
//! state (`site_sync_site_up 0`, the `unreachable` diagnosis, a counted poll error), not an
//! exit: the next poll tries again.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use ispn_xsite::{CacheName, PushStatus, SiteName};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use sync_core::direction::{CacheReading, Context, judge};
use sync_core::heal::{HealMemory, HealPolicy, HealVerdict, LastRun, PairState, heal_verdict};
use sync_core::journal::{Finished, Journal};
use sync_core::ports::JournalStore;
use sync_core::vocabulary::{DirectionRecord, DirectionVerdict, WriteSample};

use crate::cli::Cli;
use crate::config::Resolved;
use crate::connect::{FileJournal, Site, first_answer_budget, site};
use crate::exit::{CliError, Exit};
use crate::inspect::{Diagnosis, PairView, Reach, diagnose, look, stats_of, write_sample};
use crate::report::ReportFiles;

/// Every diagnosis, as the `state` label of `site_sync_diagnosis`.
pub const DIAGNOSES: [&str; 7] = ["unreachable", "link-down", "split-brain", "one-sided", "syncing", "healthy", "diverged"];
/// Backup statuses, as the `status` label of `site_sync_backup_status`.
const BACKUP_STATUSES: [&str; 3] = ["online", "offline", "mixed"];
/// Push statuses, as the `status` label of `site_sync_push_status`.
const PUSH_STATUSES: [&str; 5] = ["idle", "sending", "ok", "error", "canceled"];
/// The last run's outcome, as the `status` label of `site_sync_last_sync_status`.
const SYNC_STATUSES: [&str; 5] = ["succeeded", "failed", "refused", "interrupted", "unfinished"];
/// Caches are discovered again every this many polls (and after a poll that could not read one).
const REDISCOVER_EVERY: u64 = 10;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SiteLabels {
    site: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InfoLabels {
    site: String,
    version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabels {
    site: String,
    peer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    cache: String,
    site: String,
    backup: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    cache: String,
    site: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    site: String,
    kind: String,
}

/// The metrics (each handle shares its values with the registry).
#[derive(Default)]
struct Metrics {
    site_up: Family<SiteLabels, Gauge>,
    site_info: Family<InfoLabels, Gauge>,
    sees_peer: Family<PeerLabels, Gauge>,
    backup_status: Family<DirectionLabels, Gauge>,
    push_status: Family<DirectionLabels, Gauge>,
    entries: Family<CacheLabels, Gauge>,
    diagnosis: Family<StateLabels, Gauge>,
    last_sync_status: Family<StatusLabels, Gauge>,
    last_sync_start: Gauge,
    last_sync_duration: Gauge,
    last_sync_caches: Gauge,
    poll_errors: Family<ErrorLabels, Counter>,
    heals: Family<StatusLabels, Counter>,
    user_writes: Family<SiteLabels, Gauge>,
    heal_running: Gauge,
    heal_blocked: Gauge,
    polls: Counter,
    last_poll: Gauge,
    poll_duration_ms: Gauge,
}

impl Metrics {
    fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("site_sync");
        r.register("site_up", "Whether the site's Infinispan answered the last poll (1) or not (0)", self.site_up.clone());
        r.register("site_info", "The site's Infinispan version (always 1)", self.site_info.clone());
        r.register(
            "site_sees_peer",
            "Whether the site's cross-site view includes the peer site (1) or not (0); absent while unknown",
            self.sees_peer.clone(),
        );
        r.register(
            "backup_status",
            "Per cache, 1 for the current status of the site's backup to the other site (online, offline, mixed)",
            self.backup_status.clone(),
        );
        r.register(
            "push_status",
            "Per cache, 1 for the current state-transfer push status from the site to the other site",
            self.push_status.clone(),
        );
        r.register("cache_entries", "Entries in the cache on the site", self.entries.clone());
        r.register(
            "diagnosis",
            "1 for the pair's current diagnosis (unreachable, link-down, split-brain, one-sided, syncing, healthy, diverged)",
            self.diagnosis.clone(),
        );
        r.register(
            "last_sync_status",
            "1 for how the last run in the journal ended (succeeded, failed, refused, interrupted, unfinished)",
            self.last_sync_status.clone(),
        );
        r.register("last_sync_start_timestamp_seconds", "When the last run started (Unix time)", self.last_sync_start.clone());
        r.register(
            "last_sync_duration_seconds",
            "How long the last run took (until its last journal write when unfinished)",
            self.last_sync_duration.clone(),
        );
        r.register("last_sync_caches", "Caches the last run synchronized", self.last_sync_caches.clone());
        r.register("poll_errors", "Failed reads during polls, by site and kind", self.poll_errors.clone());
        r.register("polls", "Polls completed", self.polls.clone());
        r.register("heals", "Heals by `watch --heal`: started, succeeded, failed", self.heals.clone());
        r.register(
            "site_user_writes",
            "Writes the site's users made between the last two polls (its own: replicated ones and Keycloak's bookkeeping left out)",
            self.user_writes.clone(),
        );
        r.register("heal_running", "Whether a heal started by this watcher is running", self.heal_running.clone());
        r.register(
            "heal_blocked",
            "Whether a split brain waits for a human because the last run failed or is unfinished (with --heal)",
            self.heal_blocked.clone(),
        );
        r.register("last_poll_timestamp_seconds", "When the last poll completed (Unix time)", self.last_poll.clone());
        r.register("last_poll_duration_milliseconds", "How long the last poll took", self.poll_duration_ms.clone());
    }

    fn error(&self, site: &str, kind: &str) {
        self.poll_errors.get_or_create(&ErrorLabels { site: site.to_owned(), kind: kind.to_owned() }).inc();
    }

    /// Sets every gauge from one poll's view; returns whether every read succeeded.
    fn record(&self, view: &PairView, diagnosis: &Diagnosis) -> bool {
        let mut complete = true;
        self.site_info.clear();
        self.sees_peer.clear();
        for (site, peer) in [(&view.first, &view.second), (&view.second, &view.first)] {
            let name = site.name.to_string();
            let up = site.error.is_none();
            self.site_up.get_or_create(&SiteLabels { site: name.clone() }).set(i64::from(up));
            if !up {
                complete = false;
                self.error(&name, "unreachable");
            }
            if let Some(version) = &site.version {
                self.site_info.get_or_create(&InfoLabels { site: name.clone(), version: version.clone() }).set(1);
            }
            if let Some(sites) = &site.sites_view {
                let sees = sites.iter().any(|s| s == peer.name.as_str());
                self.sees_peer
                    .get_or_create(&PeerLabels { site: name.clone(), peer: peer.name.to_string() })
                    .set(i64::from(sees));
            }
        }
        self.backup_status.clear();
        self.push_status.clear();
        self.entries.clear();
        let (first, second) = (view.first.name.to_string(), view.second.name.to_string());
        for row in &view.caches {
            let cache = row.cache.to_string();
            for (site, backup, status, push, size) in [
                (&first, &second, &row.forward, row.push_forward, row.size_first),
                (&second, &first, &row.backward, row.push_backward, row.size_second),
            ] {
                let direction = |status: &str| DirectionLabels {
                    cache: cache.clone(),
                    site: site.clone(),
                    backup: backup.clone(),
                    status: status.to_owned(),
                };
                match status {
                    Some(current) => {
                        for known in BACKUP_STATUSES {
                            self.backup_status.get_or_create(&direction(known)).set(i64::from(known == current.as_str()));
                        }
                    }
                    None => {
                        complete = false;
                        self.error(site, "backup_status");
                    }
                }
                match push {
                    Some(current) => {
                        let current = push_word(current);
                        for known in PUSH_STATUSES {
                            self.push_status.get_or_create(&direction(known)).set(i64::from(known == current.as_str()));
                        }
                    }
                    // No push status for this backup: never pushed (or cleared), which is idle.
                    None => {
                        for known in PUSH_STATUSES {
                            self.push_status.get_or_create(&direction(known)).set(i64::from(known == "idle"));
                        }
                    }
                }
                match size {
                    Some(size) => {
                        self.entries
                            .get_or_create(&CacheLabels { cache: cache.clone(), site: site.clone() })
                            .set(i64::try_from(size).unwrap_or(i64::MAX));
                    }
                    None => {
                        complete = false;
                        self.error(site, "size");
                    }
                }
            }
        }
        let current = diagnosis_state(diagnosis);
        for state in DIAGNOSES {
            self.diagnosis.get_or_create(&StateLabels { state: state.to_owned() }).set(i64::from(state == current));
        }
        complete
    }

    fn record_journal(&self, journal: Option<&Journal>) {
        self.last_sync_status.clear();
        let Some(journal) = journal else { return };
        let status = match &journal.finished {
            Some(Finished::Succeeded) => "succeeded",
            Some(Finished::Failed { .. }) => "failed",
            Some(Finished::Refused { .. }) => "refused",
            Some(Finished::Interrupted) => "interrupted",
            None => "unfinished",
        };
        for known in SYNC_STATUSES {
            self.last_sync_status.get_or_create(&StatusLabels { status: known.to_owned() }).set(i64::from(known == status));
        }
        self.last_sync_start.set(i64::try_from(journal.started_at_ms / 1000).unwrap_or(0));
        let duration_ms = journal.updated_at_ms.saturating_sub(journal.started_at_ms);
        self.last_sync_duration.set(i64::try_from(duration_ms / 1000).unwrap_or(0));
        self.last_sync_caches.set(i64::try_from(journal.caches.len()).unwrap_or(0));
    }
}

fn push_word(status: PushStatus) -> String {
    status.as_str().to_ascii_lowercase()
}

/// The `state` label of a diagnosis.
pub fn diagnosis_state(diagnosis: &Diagnosis) -> &'static str {
    match diagnosis {
        Diagnosis::Unreachable { .. } => "unreachable",
        Diagnosis::LinkDown => "link-down",
        Diagnosis::SplitBrain => "split-brain",
        Diagnosis::OneSided { .. } => "one-sided",
        Diagnosis::Syncing => "syncing",
        Diagnosis::Healthy => "healthy",
        Diagnosis::Diverged { .. } => "diverged",
    }
}

struct Shared {
    registry: Registry,
    /// When the last poll completed, for `/healthz`.
    last_poll: Mutex<Option<Instant>>,
    interval: Duration,
    /// The last heal's line (run, outcome, report), for `/`.
    last_heal: Mutex<Option<String>>,
}

/// `/`: where the metrics and health are, and the last heal with its report.
async fn index(State(shared): State<Arc<Shared>>) -> Response {
    let heal = shared.last_heal.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    let heal = heal.unwrap_or_else(|| "last heal: none by this watcher".to_owned());
    format!("site-sync watch\nmetrics: /metrics\nhealth: /healthz\n{heal}\n").into_response()
}

fn encode(registry: &Registry) -> String {
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, registry);
    text
}

async fn serve_metrics(State(shared): State<Arc<Shared>>) -> Response {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], encode(&shared.registry))
        .into_response()
}

/// Alive while polls complete: a poll that has not finished for three intervals means the
/// watcher is stuck (every read it makes is bounded by `request_timeout`).
async fn healthz(State(shared): State<Arc<Shared>>) -> Response {
    let last = *shared.last_poll.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    match last {
        Some(at) if at.elapsed() <= shared.interval * 3 + Duration::from_secs(30) => (StatusCode::OK, "ok\n").into_response(),
        Some(at) => (StatusCode::SERVICE_UNAVAILABLE, format!("no poll completed for {:.0} s\n", at.elapsed().as_secs_f64()))
            .into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "the first poll has not completed yet\n").into_response(),
    }
}

/// `watch --heal`: the policy, its memory, and the run it started.
#[derive(Debug)]
pub struct Heal {
    /// `site-sync` arguments that run the procedure with the watcher's configuration.
    args: Vec<OsString>,
    policy: HealPolicy,
    memory: HealMemory,
    child: Option<tokio::process::Child>,
    last_said: Option<String>,
    /// Where each heal's journal, report and output are kept, one directory per run.
    dir: PathBuf,
    /// The journal heals write (the watcher's).
    journal: PathBuf,
    /// How many heals' directories are kept.
    keep: usize,
    /// When the running heal started (ms since the epoch), and where its output goes.
    started: Option<(u64, PathBuf)>,
}

/// How a heal ended, as one line for the log and `/`.
struct HealRecord {
    line: String,
}

impl Heal {
    /// A heal runs this process's binary with the same configuration and overrides.
    pub fn new(cli: &Cli, hold: Duration, interval: Duration, keep: usize) -> Self {
        let mut args: Vec<OsString> = vec!["--config".into(), cli.config.clone().into()];
        for (flag, value) in [("--active", &cli.active), ("--offline", &cli.offline)] {
            if let Some(value) = value {
                args.extend([flag.into(), value.into()]);
            }
        }
        if let Some(caches) = &cli.caches {
            args.extend(["--caches".into(), caches.join(",").into()]);
        }
        if let Some(journal) = &cli.journal {
            args.extend(["--journal".into(), journal.clone().into()]);
        }
        if let Some(timeout) = cli.request_timeout {
            args.extend(["--request-timeout".into(), humantime::format_duration(timeout).to_string().into()]);
        }
        args.extend(["run".into(), "--yes".into()]);
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Self {
            args,
            policy: HealPolicy { hold_ms: ms(hold), min_interval_ms: ms(interval) },
            memory: HealMemory::default(),
            child: None,
            last_said: None,
            dir: PathBuf::new(),
            journal: PathBuf::new(),
            keep: keep.max(1),
            started: None,
        }
    }

    /// Heals keep their files in `heals/` next to `journal`.
    fn place(&mut self, journal: &Path) {
        self.journal = journal.to_path_buf();
        self.dir = journal.parent().unwrap_or(Path::new(".")).join("heals");
    }

    /// Files the heal that just ended: its journal, report and output in `heals/<run id>/`; the
    /// oldest heals' directories beyond `keep` go.
    fn file(&mut self, status: std::process::ExitStatus) -> HealRecord {
        let (started_ms, log) = self.started.take().unwrap_or_default();
        let journal = std::fs::read_to_string(&self.journal)
            .ok()
            .and_then(|text| Journal::from_json(&self.journal.display().to_string(), &text).ok())
            // A journal older than the heal is another run's: this heal stopped before writing one.
            .filter(|j| j.started_at_ms + 1000 >= started_ms);
        let outcome = match journal.as_ref().and_then(|j| j.finished.as_ref()) {
            Some(Finished::Succeeded) => "succeeded".to_owned(),
            Some(Finished::Refused { reason }) => format!("refused ({reason})"),
            Some(Finished::Failed { reason }) => format!("failed ({reason})"),
            Some(Finished::Interrupted) => "interrupted".to_owned(),
            None => format!("ended without a finished journal ({status})"),
        };
        let name = journal.as_ref().map_or_else(|| format!("heal-{started_ms}"), |j| j.run_id.clone());
        let here = self.dir.join(&name);
        let filed = std::fs::create_dir_all(&here).and_then(|()| {
            if log.exists() {
                std::fs::rename(&log, here.join("output.log"))?;
            }
            let Some(journal) = &journal else { return Ok(None) };
            let copy = here.join("journal.json");
            std::fs::write(&copy, journal.to_json())?;
            let files = ReportFiles::beside(&copy);
            files.write(journal)?;
            Ok(Some(files.markdown))
        });
        self.prune();
        let report = match filed {
            Ok(Some(path)) => format!("report={}", path.display()),
            Ok(None) => format!("output={}", here.join("output.log").display()),
            Err(e) => format!("report-error=\"cannot write under {}: {e}\"", here.display()),
        };
        let ended = crate::report::wall_clock(now_ms_since_epoch());
        let line = format!(
            "heal run={name} started={} ended={ended} outcome=\"{}\" {report}",
            crate::report::wall_clock(started_ms),
            outcome.replace('"', "'")
        );
        HealRecord { line }
    }

    /// Keeps the `keep` heals' directories written last.
    fn prune(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return };
        let mut dirs: Vec<(std::time::SystemTime, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter(|e| e.path().is_dir())
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .collect();
        dirs.sort();
        let excess = dirs.len().saturating_sub(self.keep);
        for (_, dir) in dirs.into_iter().take(excess) {
            let _ = std::fs::remove_dir_all(dir);
        }
    }

    /// Reaps a finished heal (filed, and its line logged); whether one is still running.
    fn running(&mut self, metrics: &Metrics, last_heal: &Mutex<Option<String>>) -> bool {
        let Some(child) = &mut self.child else { return false };
        match child.try_wait() {
            Ok(None) => true,
            Ok(Some(status)) => {
                let outcome = if status.success() { "succeeded" } else { "failed" };
                metrics.heals.get_or_create(&StatusLabels { status: outcome.to_owned() }).inc();
                self.child = None;
                let record = self.file(status);
                eprintln!("site-sync watch: {}", record.line);
                *last_heal.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(format!("last {}", record.line));
                false
            }
            Err(e) => {
                eprintln!("site-sync watch: cannot tell whether the heal still runs: {e}");
                true
            }
        }
    }

    /// After a poll: decides, and starts a run when the policy says so.
    fn step(&mut self, metrics: &Metrics, now_ms: u64, pair: PairState, last: LastRun, last_heal: &Mutex<Option<String>>) {
        let running = self.running(metrics, last_heal);
        let verdict = heal_verdict(self.policy, &mut self.memory, now_ms, pair, last, running);
        metrics.heal_blocked.set(i64::from(matches!(verdict, HealVerdict::Blocked(_))));
        let said = match &verdict {
            HealVerdict::Heal => "starting a run".to_owned(),
            HealVerdict::Wait(why) => format!("waiting: {why}"),
            HealVerdict::Blocked(why) => format!("blocked: {why}"),
        };
        if self.last_said.as_deref() != Some(said.as_str()) {
            eprintln!("site-sync watch: heal {said}");
            self.last_said = Some(said);
        }
        if verdict == HealVerdict::Heal {
            let program = std::env::current_exe().unwrap_or_else(|_| "site-sync".into());
            // The heal's own output goes to a file of its own, filed with its report.
            let started_ms = now_ms_since_epoch();
            let log = self.dir.join(format!("heal-{started_ms}.log"));
            let output = std::fs::create_dir_all(&self.dir).and_then(|()| std::fs::File::create(&log));
            let (out, err) = match output.and_then(|f| Ok((f.try_clone()?, f))) {
                Ok((out, err)) => (std::process::Stdio::from(out), std::process::Stdio::from(err)),
                Err(e) => {
                    eprintln!(
                        "site-sync watch: cannot write the heal's output under {}: {e}; it goes to this log",
                        self.dir.display()
                    );
                    (std::process::Stdio::inherit(), std::process::Stdio::inherit())
                }
            };
            match tokio::process::Command::new(program)
                .args(&self.args)
                .stdin(std::process::Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
            {
                Ok(child) => {
                    metrics.heals.get_or_create(&StatusLabels { status: "started".to_owned() }).inc();
                    eprintln!(
                        "site-sync watch: heal started pid={} started={} output={}",
                        child.id().unwrap_or_default(),
                        crate::report::wall_clock(started_ms),
                        log.display()
                    );
                    self.started = Some((started_ms, log));
                    self.child = Some(child);
                }
                Err(e) => {
                    metrics.heals.get_or_create(&StatusLabels { status: "failed".to_owned() }).inc();
                    eprintln!("site-sync watch: cannot start the heal: {e}");
                }
            }
        }
        metrics.heal_running.set(i64::from(self.child.is_some()));
    }
}

/// What `watch` was asked to do.
#[derive(Debug)]
pub struct Options {
    /// Where to serve.
    pub listen: SocketAddr,
    /// Between polls.
    pub interval: Duration,
    /// One poll, printed.
    pub once: bool,
    /// `--heal`.
    pub heal: Option<Heal>,
}

/// One site as the watcher holds it: connected, or not (yet, or again after it failed).
struct Slot {
    name: SiteName,
    connection: Option<Site>,
    /// Why the last connection attempt failed.
    failed: Option<String>,
}

/// Each cache's write counters on the active and the offline site.
type Counters = Vec<(CacheName, WriteSample, WriteSample)>;

/// The watcher's state between polls.
struct Watcher<'a> {
    resolved: &'a Resolved,
    slots: [Slot; 2],
    journal: FileJournal,
    metrics: Metrics,
    caches: Option<Vec<CacheName>>,
    polls: u64,
    last_run: LastRun,
    /// The last poll's write counters per cache (active site, offline site), and when.
    counters: Option<(Instant, Counters)>,
}

impl Watcher<'_> {
    /// Reads each cache's write counters on both sites and judges, against the last poll's
    /// reading, which site took its users' writes in between: the direction guard's evidence,
    /// with the poll interval as its window. `None` on the first poll or after a failed read.
    async fn activity(&mut self, view: &PairView) -> Option<DirectionRecord> {
        let (Some(first), Some(second)) = (self.slots[0].connection.as_ref(), self.slots[1].connection.as_ref()) else {
            self.counters = None;
            return None;
        };
        let mut now = Vec::new();
        for row in &view.caches {
            let (Some(size_a), Some(size_b)) = (row.size_first, row.size_second) else { continue };
            let (a, b) = tokio::join!(stats_of(&first.client, &row.cache), stats_of(&second.client, &row.cache));
            let (Ok(a), Ok(b)) = (a, b) else {
                self.counters = None;
                return None;
            };
            now.push((row.cache.clone(), write_sample(a, size_a), write_sample(b, size_b)));
        }
        let at = Instant::now();
        let (then, before) = self.counters.replace((at, now.clone()))?;
        let replicates = |status: &Option<String>| status.as_deref() == Some("online");
        let readings: Vec<CacheReading> = before
            .into_iter()
            .filter_map(|(cache, a0, b0)| {
                let (_, a1, b1) = now.iter().find(|(c, ..)| *c == cache)?;
                let row = view.caches.iter().find(|r| r.cache == cache)?;
                Some(CacheReading {
                    cache,
                    active: (a0, *a1),
                    offline: (b0, *b1),
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
            window: at.duration_since(then),
            offline_lb_check: None,
            manages_offline_keycloak: true,
            overridden: false,
        };
        Some(judge(&context, &readings))
    }

    /// Connects every site that has no connection. A site whose API server, credentials Secret or
    /// port-forward cannot be had now is a state (`site_up 0`), tried again at the next poll; a
    /// configuration error at the first attempt ends the watcher before it serves anything.
    async fn connect(&mut self, first: bool) -> Result<(), CliError> {
        let resolved = self.resolved;
        let attempts = self.slots.iter().map(|slot| async move {
            match &slot.connection {
                Some(_) => None,
                None => Some(site(resolved, &slot.name).await),
            }
        });
        let results = futures::future::join_all(attempts).await;
        for (slot, result) in self.slots.iter_mut().zip(results) {
            match result {
                None => {}
                Some(Ok(site)) => {
                    slot.connection = Some(site);
                    slot.failed = None;
                }
                Some(Err(e)) if first && e.exit == Exit::Usage => return Err(e),
                Some(Err(e)) => {
                    self.metrics.error(slot.name.as_str(), "connect");
                    slot.failed = Some(e.message);
                }
            }
        }
        Ok(())
    }

    /// One poll: a fixed set of reads, never a write. Returns the diagnosis, what a heal needs to
    /// know of it, and the diagnosis in words (with the error of a site that could not be read).
    async fn poll(&mut self) -> (Diagnosis, PairState, String) {
        let started = Instant::now();
        let _ = self.connect(false).await;
        let (a, o) = (&self.resolved.active, &self.resolved.offline);
        let rediscover = self.caches.is_none() || self.polls.is_multiple_of(REDISCOVER_EVERY);
        let caches = if rediscover { self.resolved.caches.clone() } else { self.caches.clone() };
        let endpoints = self.slots.each_ref().map(|slot| match &slot.connection {
            Some(site) => site.endpoint.clone(),
            None => crate::commands::configured_endpoint(self.resolved, &slot.name),
        });
        fn reach<'a>(slot: &'a Slot, endpoint: &'a str) -> Reach<'a> {
            let why = slot.failed.as_deref().unwrap_or("not connected");
            Reach { name: &slot.name, endpoint, client: slot.connection.as_ref().map(|s| &s.client).ok_or(why) }
        }
        let view = look(
            reach(&self.slots[0], &endpoints[0]),
            reach(&self.slots[1], &endpoints[1]),
            caches.as_deref(),
            None::<&crate::connect::AnyKeycloak>,
            first_answer_budget(self.resolved),
        )
        .await;
        // A connection through Kubernetes whose site stopped answering is made again at the next
        // poll: the API server may have come back with a new pod to forward to, or new credentials.
        for (slot, site_view) in self.slots.iter_mut().zip([&view.first, &view.second]) {
            if site_view.error.is_some() && slot.connection.as_ref().is_some_and(|s| s.cluster.is_some()) {
                slot.connection = None;
            }
        }
        let diagnosis = diagnose(&view);
        // The link counts as up only when both sites said they see each other.
        let sees = |site: &crate::inspect::SiteView, other: &SiteName| {
            site.sites_view.as_ref().is_some_and(|v| v.iter().any(|s| s == other.as_str()))
        };
        let link_up = sees(&view.first, &view.second.name) && sees(&view.second, &view.first.name);
        let activity = self.activity(&view).await;
        let offline_serving = activity.as_ref().is_some_and(|r| matches!(r.verdict, DirectionVerdict::Against { .. }));
        let pair = match (&diagnosis, link_up) {
            (Diagnosis::SplitBrain, true) if offline_serving => PairState::SplitBrainOfflineServing,
            (Diagnosis::SplitBrain, true) => PairState::SplitBrainLinkUp,
            (Diagnosis::SplitBrain, false) => PairState::SplitBrainLinkDown,
            _ => PairState::Other,
        };
        let complete = self.metrics.record(&view, &diagnosis);
        self.metrics.user_writes.clear();
        if let Some(record) = &activity {
            for site in [&record.active, &record.offline] {
                let writes = i64::try_from(site.total()).unwrap_or(i64::MAX);
                self.metrics.user_writes.get_or_create(&SiteLabels { site: site.site.to_string() }).set(writes);
            }
        }
        let said = diagnosis.text(a, o);
        // Keep the cache list only from a poll that read both sites.
        self.caches = complete.then(|| view.caches.iter().map(|c| c.cache.clone()).collect());
        match self.journal.load().await {
            Ok(journal) => {
                self.metrics.record_journal(journal.as_ref());
                self.last_run = match journal.as_ref().map(|j| &j.finished) {
                    None => LastRun::None,
                    Some(Some(Finished::Succeeded)) => LastRun::Succeeded,
                    Some(None) => LastRun::Unfinished,
                    Some(Some(_)) => LastRun::NotSucceeded,
                };
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the journal");
                self.metrics.error("local", "journal");
                // A journal that cannot be read is no ground for a heal.
                self.last_run = LastRun::Unfinished;
            }
        }
        self.polls += 1;
        self.metrics.polls.inc();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        self.metrics.last_poll.set(i64::try_from(now.as_secs()).unwrap_or(0));
        self.metrics.poll_duration_ms.set(i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX));
        (diagnosis, pair, said)
    }
}

fn now_ms_since_epoch() -> u64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    u64::try_from(now.as_millis()).unwrap_or(u64::MAX)
}

/// `watch`: polls every `interval` and serves `/metrics` and `/healthz` on `listen` until
/// Ctrl-C or SIGTERM; with `once`, polls once and prints the metrics instead.
pub async fn watch(resolved: &Resolved, options: Options) -> Result<Exit, CliError> {
    let Options { listen, interval, once, mut heal } = options;
    if interval < Duration::from_secs(1) {
        return Err(CliError::new(Exit::Usage, "--interval must be at least 1s (each poll reads every cache on both sites)"));
    }
    if once && heal.is_some() {
        return Err(CliError::new(Exit::Usage, "--heal needs the long-running watch: drop --once"));
    }
    let metrics = Metrics::default();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let slot = |name: &SiteName| Slot { name: name.clone(), connection: None, failed: None };
    let mut watcher = Watcher {
        resolved,
        slots: [slot(&resolved.active), slot(&resolved.offline)],
        journal: FileJournal::new(resolved.journal.clone()),
        metrics,
        caches: None,
        polls: 0,
        last_run: LastRun::None,
        counters: None,
    };
    watcher.connect(true).await?;
    if once {
        watcher.poll().await;
        print!("{}", encode(&registry));
        return Ok(Exit::Success);
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| CliError::new(Exit::Usage, format!("--listen {listen}: {e}; choose a free address")))?;
    let shared = Arc::new(Shared { registry, last_poll: Mutex::new(None), interval, last_heal: Mutex::new(None) });
    let app = Router::new()
        .route("/", get(index))
        .route("/metrics", get(serve_metrics))
        .route("/healthz", get(healthz))
        .with_state(shared.clone());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    eprintln!(
        "site-sync watch: polling {} and {} every {}; metrics on http://{listen}/metrics, health on /healthz; Ctrl-C stops",
        resolved.active,
        resolved.offline,
        humantime::format_duration(interval)
    );
    let mut stop = crate::commands::stop_on_signal();
    let mut previous: Option<&'static str> = None;
    let began = Instant::now();
    if let Some(heal) = &mut heal {
        heal.place(&resolved.journal);
        eprintln!(
            "site-sync watch: --heal is on: a split brain that lasts {} with the link up is synchronized from {} (at most once per {}); each heal's journal and report go to {} (the last {} kept)",
            humantime::format_duration(Duration::from_millis(heal.policy.hold_ms)),
            resolved.active,
            humantime::format_duration(Duration::from_millis(heal.policy.min_interval_ms)),
            heal.dir.display(),
            heal.keep,
        );
    }
    loop {
        let (diagnosis, pair, said) = watcher.poll().await;
        *shared.last_poll.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Instant::now());
        if let Some(heal) = &mut heal {
            let now_ms = u64::try_from(began.elapsed().as_millis()).unwrap_or(u64::MAX);
            heal.step(&watcher.metrics, now_ms, pair, watcher.last_run, &shared.last_heal);
        }
        let state = diagnosis_state(&diagnosis);
        // The diagnosis on stderr when it changes: what the metrics say, for whoever reads the log.
        if previous != Some(state) {
            eprintln!("site-sync watch: {said}");
            previous = Some(state);
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            _ = stop.wait_for(|stopped| *stopped) => break,
        }
        if server.is_finished() {
            return Err(CliError::new(Exit::Failed, format!("the metrics server on {listen} stopped")));
        }
    }
    server.abort();
    if let Some(child) = heal.as_mut().and_then(|h| h.child.as_mut())
        && child.try_wait().ok().flatten().is_none()
    {
        eprintln!(
            "site-sync watch: stopping; the heal (pid {}) goes on by itself (its journal and lock are its own)",
            child.id().unwrap_or_default()
        );
    }
    Ok(Exit::Success)
}
