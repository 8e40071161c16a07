//! How a run ends: success with a report, a refusal (nothing unsafe was done), or a failure from
//! which `resume` continues.

use std::time::Duration;

use ispn_xsite::{CacheName, SiteName};
use serde::{Deserialize, Serialize};

use crate::port_types::{JournalError, KeycloakError, KeycloakHealth, LockError, LockHolder};
use crate::vocabulary::{DirectionRecord, LinkLoss, Side, Step, Verdict, clock_time, human_duration};

/// A precondition or interlock said no. Nothing unsafe was done; fix the cause and run again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "refusal", rename_all = "kebab-case")]
pub enum Refusal {
    /// A site reports another name than configured.
    #[error("the {side} site at {endpoint} reports itself as {}, not '{expected}'; check the site names and URLs", reported_name(.found))]
    WrongSite {
        /// Which configured site.
        side: Side,
        /// Its URL.
        endpoint: String,
        /// The configured name.
        expected: SiteName,
        /// What it reported (`None`: no cross-site transport at all).
        found: Option<String>,
    },
    /// Both sites report the other's name: the configuration swapped them.
    #[error(
        "the sites are swapped: {active_endpoint} is '{offline}' and {offline_endpoint} is '{active}'; swap the URLs (or the names) in the configuration"
    )]
    SitesSwapped {
        /// The configured active name.
        active: SiteName,
        /// The configured offline name.
        offline: SiteName,
        /// URL configured for the active site.
        active_endpoint: String,
        /// URL configured for the offline site.
        offline_endpoint: String,
    },
    /// A planned cache does not exist on a site.
    #[error("cache '{cache}' does not exist on the {side} site '{site}'; create it there or leave it out of the cache list")]
    CacheMissing {
        /// Which site.
        side: Side,
        /// Its name.
        site: SiteName,
        /// The cache.
        cache: CacheName,
    },
    /// A planned cache exists but does not back up to the other site.
    #[error(
        "cache '{cache}' on the {side} site '{site}' does not back up to '{other}'; only caches replicated between the two sites can be synchronized"
    )]
    NotReplicated {
        /// Which site.
        side: Side,
        /// Its name.
        site: SiteName,
        /// The cache.
        cache: CacheName,
        /// The site it should back up to.
        other: SiteName,
    },
    /// The discovered caches are not a known Keycloak set.
    #[error("the caches replicated between the sites ({}) are not a known Keycloak set (26.x: 4 caches, 24/25: 8); list the caches to synchronize explicitly", found.iter().map(CacheName::as_str).collect::<Vec<_>>().join(", "))]
    UnknownCacheSet {
        /// What was found.
        found: Vec<CacheName>,
    },
    /// The active site does not see the offline site, so a push cannot work.
    #[error("'{from}' does not see '{to}' across the cross-site bridge (sites_view lacks it); restore the link first")]
    NoLink {
        /// The site that was asked.
        from: SiteName,
        /// The site it does not see.
        to: SiteName,
    },
    /// The direction guard: the offline site serves users (it took writes, or its Keycloak is in
    /// the load balancer while site-sync does not manage it).
    #[error(
        "{}; nothing was changed. If {offline} is the live site, synchronize {active} from it (--active {offline} --offline {active}); to clear {offline} anyway, losing what it took, pass --discard-offline-writes",
        .evidence.summary(),
        offline = .evidence.offline.site,
        active = .evidence.active.site
    )]
    Direction {
        /// What the guard read and concluded.
        evidence: Box<DirectionRecord>,
    },
    /// Keycloak is being updated by its operator.
    #[error("Keycloak ({what}) is in a rolling update; wait until it finishes")]
    KeycloakRollingUpdate {
        /// Which Keycloak.
        what: String,
    },
    /// Another run holds the lock.
    #[error("another run holds the lock: {} since {}; wait for it, or remove a stale lock", .0.holder, .0.since)]
    LockHeld(LockHolder),
    /// The journal is of another site pair.
    #[error(
        "the journal {location} is for active '{journal_active}' / offline '{journal_offline}', not '{active}' / '{offline}'; use the matching configuration or another journal path"
    )]
    JournalOfAnotherPair {
        /// Where the journal is.
        location: String,
        /// Its active site.
        journal_active: SiteName,
        /// Its offline site.
        journal_offline: SiteName,
        /// The configured active site.
        active: SiteName,
        /// The configured offline site.
        offline: SiteName,
    },
    /// The journal cannot be used (corrupt, newer schema).
    #[error("{0}")]
    Journal(JournalError),
    /// Nothing to resume.
    #[error("no journal at {location}: nothing to resume (use `run` to start)")]
    NothingToResume {
        /// Where it was looked for.
        location: String,
    },
    /// A clear was about to happen while the backup to the active site did not read offline on
    /// every node, and taking it offline again did not help.
    #[error("interlock: cache '{cache}' still replicates to the active site from node(s) {}; a clear now would wipe the active site too", nodes.join(", "))]
    ClearInterlock {
        /// The cache.
        cache: CacheName,
        /// Nodes that do not read offline.
        nodes: Vec<String>,
    },
    /// Keycloak was about to start on the offline site without an OK push for every cache.
    #[error("interlock: refusing to start Keycloak: no OK push recorded for {}", caches.iter().map(CacheName::as_str).collect::<Vec<_>>().join(", "))]
    ScaleUpInterlock {
        /// The caches without an OK push.
        caches: Vec<CacheName>,
    },
    /// A site could not be used before anything was changed (wrong URL, credentials, TLS, ...).
    #[error("{side} site: {message}")]
    SiteUnusable {
        /// Which site.
        side: Side,
        /// The error.
        message: String,
    },
    /// An earlier run on this journal stopped half-way.
    #[error(
        "the journal {location} holds an unfinished run (stopped at step {step}); continue it with `site-sync resume`, or move the journal aside"
    )]
    UnfinishedRun {
        /// Where the journal is.
        location: String,
        /// Where it stopped.
        step: Step,
    },
    /// The plan contradicts itself.
    #[error("{0}")]
    InvalidPlan(String),
    /// The site about to push is not the declared active site.
    #[error("interlock: the site about to push reports itself as {}, not the active site '{expected}'", reported_name(.found))]
    PushInterlock {
        /// The declared active site.
        expected: SiteName,
        /// What the pushing endpoint reported.
        found: Option<String>,
    },
}

/// The run stopped; the journal holds its progress and `resume` continues once the cause is gone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "failure", rename_all = "kebab-case")]
pub enum Failure {
    /// `require_values` is set and a cache's values could be read neither in a listing nor one by
    /// one: only its keys were compared.
    #[error(
        "cache '{cache}': only its keys could be compared, its values could not be read ({reason}); require_values asks for both: find why the server cannot serve them, or drop require_values to accept keys"
    )]
    ValuesNotCompared {
        /// The cache.
        cache: CacheName,
        /// Why the values could not be read.
        reason: String,
    },
    /// A site call failed in a way retrying cannot fix.
    #[error("{side} site: {message}")]
    Site {
        /// Which site.
        side: Side,
        /// The error.
        message: String,
    },
    /// Scaling Keycloak failed.
    #[error("Keycloak: {0}")]
    Keycloak(KeycloakError),
    /// The journal could not be written.
    #[error("{0}")]
    Journal(JournalError),
    /// The run lock was lost.
    #[error("{0}")]
    Lock(LockError),
    /// A backup would not read offline on every node.
    #[error("cache '{cache}': the backup to the active site still reads online on node(s) {} after {calls} take-offline calls", nodes.join(", "))]
    TakeOfflineDidNotStick {
        /// The cache.
        cache: CacheName,
        /// Nodes that do not read offline.
        nodes: Vec<String>,
        /// Calls made.
        calls: u32,
    },
    /// A push kept failing.
    #[error("cache '{cache}': the push failed {attempts} times (last: {last})")]
    PushFailed {
        /// The cache.
        cache: CacheName,
        /// Pushes tried.
        attempts: u32,
        /// The last status or error.
        last: String,
    },
    /// The sites still differ after pushing again (or differ in a way a push cannot repair).
    #[error("cache '{cache}': the sites differ after the push ({verdict}); `site-sync diff --values` shows which keys")]
    VerifyMismatch {
        /// The cache.
        cache: CacheName,
        /// The verdict.
        verdict: Verdict,
    },
    /// The cross-site link stayed down longer than `link_wait`.
    #[error(
        "the cross-site link is lost: {loss} since {}, longer than link_wait ({}); the journal is saved: restore the link, then run `site-sync resume`",
        clock_time(loss.since_ms),
        human_duration(*waited)
    )]
    LinkLost {
        /// How it was lost.
        loss: LinkLoss,
        /// How long the run waited for it.
        waited: Duration,
    },
    /// A step took longer than allowed.
    #[error("step {step} did not finish within {} ({why})", human_duration(*after))]
    Deadline {
        /// The step.
        step: Step,
        /// The allowance.
        after: Duration,
        /// What it was waiting for.
        why: String,
    },
}

/// A site's reported name in a message: quoted, or what its absence means.
fn reported_name(found: &Option<String>) -> String {
    match found {
        Some(name) => format!("'{name}'"),
        None => "no site name (no cross-site transport is configured)".to_owned(),
    }
}

/// One cache in the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheReport {
    /// The cache.
    pub cache: CacheName,
    /// Pushes it took.
    pub push_attempts: u32,
    /// Verification.
    pub verdict: Option<Verdict>,
}

/// The summary of a successful run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// The run.
    pub run_id: String,
    /// The active site.
    pub active: SiteName,
    /// The offline site.
    pub offline: SiteName,
    /// Per cache.
    pub caches: Vec<CacheReport>,
    /// Keycloak's restored instance count, if the tool scaled it.
    pub keycloak_instances: Option<u32>,
    /// What the offline site's Keycloak said about itself at the end, when its URLs are
    /// configured: whether it can be put back behind the load balancer.
    #[serde(default)]
    pub keycloak_health: Option<KeycloakHealth>,
    /// Warnings collected on the way.
    pub warnings: Vec<String>,
    /// The direction guard's evidence and verdict (and whether it was overridden).
    #[serde(default)]
    pub direction: Option<Box<DirectionRecord>>,
    /// How long the run took, resumes included.
    #[serde(rename = "elapsed_ms", with = "millis")]
    pub elapsed: Duration,
    /// What the operator must do next.
    pub next_step: String,
}

/// How a run (or resume) ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOutcome {
    /// Every step done.
    Succeeded(Report),
    /// A precondition or interlock refused; nothing unsafe happened.
    Refused(Refusal),
    /// Stopped by a failure; resumable.
    Failed(Failure),
    /// Stopped on request at a safe point; resumable.
    Interrupted,
}

impl RunOutcome {
    /// The text stored in the journal and shown as the last line.
    pub fn summary(&self) -> String {
        match self {
            Self::Succeeded(report) => {
                format!("synchronized {} caches from {} to {}", report.caches.len(), report.active, report.offline)
            }
            Self::Refused(r) => r.to_string(),
            Self::Failed(f) => f.to_string(),
            Self::Interrupted => "interrupted; the journal is saved: run `site-sync resume` to continue".to_owned(),
        }
    }
}

/// Durations as whole milliseconds in serialized reports.
mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(duration.as_millis() as u64)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        u64::deserialize(deserializer).map(Duration::from_millis)
    }
}
