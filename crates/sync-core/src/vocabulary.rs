//! The words every other module speaks: which site, which step, what a push is doing, what a
//! verification found, what the driver may read and what it may change. Plain data that imports
//! nothing else from this crate, so that the journal, `decide`, the events and the outcomes can
//! all use it without importing each other.

use std::fmt;
use std::time::Duration;

use ispn_xsite::{CacheName, SiteName};
use serde::{Deserialize, Serialize};

/// Which site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// The site whose data is kept.
    Active,
    /// The stale site.
    Offline,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Side {
    /// "active" or "offline".
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Offline => "offline",
        }
    }
}

/// One read the driver can perform.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "probe", rename_all = "kebab-case")]
pub enum Probe {
    /// Container info of a site (identity, cross-site view).
    Site {
        /// Which site.
        side: Side,
    },
    /// Which caches of a site back up to which sites.
    Backups {
        /// Which site.
        side: Side,
    },
    /// Per-node status of the offline site's backup of `cache` to the active site.
    OfflineNodes {
        /// The cache.
        cache: CacheName,
    },
    /// Cache-level status of `cache`'s backup to the other site, on `side`.
    Status {
        /// Which site.
        side: Side,
        /// The cache.
        cache: CacheName,
    },
    /// The active site's push status of `cache`.
    Push {
        /// The cache.
        cache: CacheName,
    },
    /// Entry counts of `cache`: active, offline, active again.
    Sizes {
        /// The cache.
        cache: CacheName,
    },
    /// A comparison of `cache`'s keys (and value digests) on both sites, read twice where the
    /// first read differs, at the plan's verification level.
    Content {
        /// The cache.
        cache: CacheName,
    },
    /// The offline site's Keycloak.
    Keycloak,
    /// The write counters and size of `cache` on `side` (the direction evidence).
    Activity {
        /// Which site.
        side: Side,
        /// The cache.
        cache: CacheName,
    },
    /// What the offline site's Keycloak answers on `/lb-check` and `/health/ready`.
    KeycloakHealth,
}

/// One read of a cache's write counters on one site: two of them, a window apart, tell a site
/// that takes writes from one that does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteSample {
    /// Writes and removals since the counters were last reset; `None` when the cache keeps no
    /// statistics (or they could not be read).
    pub writes: Option<u64>,
    /// Seconds since that reset, when kept.
    pub since_reset_s: Option<u64>,
    /// Entries.
    pub size: u64,
}

/// Whose writes a site's counters hold. Infinispan counts a write on the node it went through
/// only, and a write another site replicated in on the site master that received it: on a site
/// of several nodes, the counters read are one node's share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counting {
    /// Nodes in the site's cluster.
    pub nodes: usize,
    /// Whether the node that answers is the site master, where replicated writes arrive.
    pub site_master: bool,
}

impl Counting {
    /// A site of one node: its counters are the whole site's.
    pub const ONE_NODE: Self = Self { nodes: 1, site_master: true };

    /// Whether its counters are the whole site's.
    pub fn is_whole_site(self) -> bool {
        self.nodes <= 1
    }
}

/// What one site did during the evidence window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteActivity {
    /// The site.
    pub site: SiteName,
    /// Its own writes per cache (those replicated from the other site taken out), for every cache
    /// that took some. Keycloak's own bookkeeping (`work`) is not counted: an idle Keycloak writes
    /// there.
    pub writes: Vec<(CacheName, u64)>,
    /// What could not be told, per cache (statistics off or reset, replication both ways).
    pub unknown: Vec<(CacheName, String)>,
}

impl SiteActivity {
    /// Every own write counted, across caches.
    pub fn total(&self) -> u64 {
        self.writes.iter().map(|(_, n)| n).sum()
    }

    /// `site-b took 212 writes to authenticationSessions and 3 to loginFailures`, or `site-b took
    /// none`.
    pub fn describe(&self) -> String {
        if self.writes.is_empty() {
            return format!("{} took none", self.site);
        }
        let parts: Vec<String> = self
            .writes
            .iter()
            .enumerate()
            .map(|(i, (cache, n))| if i == 0 { format!("{n} writes to {cache}") } else { format!("{n} to {cache}") })
            .collect();
        format!("{} took {}", self.site, join_words(&parts))
    }
}

fn join_words(parts: &[String]) -> String {
    match parts {
        [] => String::new(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

/// Whether the evidence supports the declared direction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "kebab-case")]
pub enum DirectionVerdict {
    /// The active site took writes and the offline site none: the direction fits.
    Agrees,
    /// Nothing tells: no user writes anywhere, or writes that cannot be told apart. A warning,
    /// never a refusal.
    Inconclusive {
        /// Why.
        reason: String,
    },
    /// The offline site is serving users: it took writes, or its Keycloak answers the load
    /// balancer while site-sync does not manage it. Clearing it loses what they wrote.
    Against {
        /// Why, with the evidence.
        reason: String,
        /// Whether the active site was quiet meanwhile (the direction is then likely backwards).
        active_quiet: bool,
    },
}

/// The direction guard's evidence and verdict, as the journal and the report keep it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectionRecord {
    /// How long the counters were watched.
    pub window_ms: u64,
    /// What the active site did.
    pub active: SiteActivity,
    /// What the offline site did.
    pub offline: SiteActivity,
    /// What the offline site's Keycloak answered on `/lb-check`, when configured.
    pub offline_lb_check: Option<u16>,
    /// The verdict.
    pub verdict: DirectionVerdict,
    /// Whether the run went on against the evidence (`--discard-offline-writes`).
    pub overridden: bool,
    /// Whether a site's counters were reset during the window (a restarted node): the guard then
    /// watches again.
    #[serde(default)]
    pub counters_reset: bool,
}

impl DirectionRecord {
    /// One line: the evidence and what it means.
    pub fn summary(&self) -> String {
        let seconds = human_duration(Duration::from_millis(self.window_ms));
        let evidence = format!("in {seconds}, {}; {}", self.active.describe(), self.offline.describe());
        match &self.verdict {
            DirectionVerdict::Agrees => format!("{evidence}: {} is the live site, as declared", self.active.site),
            DirectionVerdict::Inconclusive { reason } => format!("{evidence}: cannot tell which site is live ({reason})"),
            DirectionVerdict::Against { reason, .. } if self.overridden => {
                format!("{reason}; overridden with --discard-offline-writes: what {} took is lost", self.offline.site)
            }
            DirectionVerdict::Against { reason, .. } => reason.clone(),
        }
    }
}

/// The manual step that follows a successful run.
pub const NEXT_STEP: &str = "add the offline site back to the load balancer (AWS Global Accelerator: the \"Bring site online\" guide); site-sync does not touch it";

/// The steps, in the order of Keycloak's "Synchronize Sites" guide, plus the checks around them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    /// Read-only checks of both sites, the caches, the link and Keycloak.
    Preflight,
    /// Offline site: scale Keycloak to 0 and wait until its pods are gone.
    ScaleDown,
    /// Offline site: take its backups to the active site offline, verified on every node.
    TakeOffline,
    /// Offline site: clear each cache (only while its backup reads offline everywhere).
    ClearCaches,
    /// Offline site: bring the backups to the active site online again.
    BringOnline,
    /// Active site: start pushing state to the offline site.
    PushState,
    /// Active site: wait for every push to read OK (re-push on ERROR, recover a stuck SENDING).
    AwaitPush,
    /// Active site: reset the push statuses.
    ClearPushStatus,
    /// Both sites: compare keys and values (or what `settings.verify` asks for).
    Verify,
    /// Offline site: restore Keycloak to its recorded instance count.
    ScaleUp,
    /// The summary, ending with the step the tool cannot do.
    Report,
}

impl Step {
    /// Every step, in order.
    pub const ALL: [Self; 11] = [
        Self::Preflight,
        Self::ScaleDown,
        Self::TakeOffline,
        Self::ClearCaches,
        Self::BringOnline,
        Self::PushState,
        Self::AwaitPush,
        Self::ClearPushStatus,
        Self::Verify,
        Self::ScaleUp,
        Self::Report,
    ];

    /// 1-based position.
    pub fn number(self) -> usize {
        Self::ALL.iter().position(|s| *s == self).map_or(0, |i| i + 1)
    }

    /// The next step (Report is last).
    pub fn next(self) -> Self {
        Self::ALL.get(self.number()).copied().unwrap_or(Self::Report)
    }

    /// Short stable name (`take-offline`), as in the journal and the JSON events.
    pub fn name(self) -> &'static str {
        match self {
            Self::Preflight => "preflight",
            Self::ScaleDown => "scale-down",
            Self::TakeOffline => "take-offline",
            Self::ClearCaches => "clear-caches",
            Self::BringOnline => "bring-online",
            Self::PushState => "push-state",
            Self::AwaitPush => "await-push",
            Self::ClearPushStatus => "clear-push-status",
            Self::Verify => "verify",
            Self::ScaleUp => "scale-up",
            Self::Report => "report",
        }
    }

    /// What the step does, in one line, with the site roles filled in.
    pub fn describe(self, active: &SiteName, offline: &SiteName) -> String {
        match self {
            Self::Preflight => format!("check both sites, the caches, the {active}<->{offline} link and Keycloak (read-only)"),
            Self::ScaleDown => format!("{offline}: scale Keycloak to 0 and wait until its pods are gone"),
            Self::TakeOffline => format!("{offline}: take the backup to {active} offline; verify it reads offline on every node"),
            Self::ClearCaches => format!("{offline}: clear each cache, each only while its backup to {active} reads offline"),
            Self::BringOnline => format!("{offline}: bring the backup to {active} online; verify online"),
            Self::PushState => format!("{active}: start pushing state to {offline} for every cache"),
            Self::AwaitPush => format!("{active}: wait for every push to read OK (re-push on ERROR, recover a stuck SENDING)"),
            Self::ClearPushStatus => format!("{active}: clear the push status of every cache"),
            Self::Verify => format!("compare {active} and {offline} cache by cache"),
            Self::ScaleUp => format!("{offline}: restore Keycloak to its original instance count and wait until ready"),
            Self::Report => "report, with the next step the tool cannot do".to_owned(),
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where one cache's push stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PushPhase {
    /// No push started in this run (or the previous one was given up and will be restarted).
    NotStarted,
    /// A push was started; waiting for it to finish.
    Sending,
    /// A stuck push is being recovered: cancel it on the active site.
    CancelPush,
    /// ...then leave receive mode on the offline site.
    CancelReceive,
    /// ...then clear the push status, before starting again.
    ClearStatus,
    /// The push read OK.
    Ok,
    /// The status was cleared after OK: this cache is done.
    Done,
}

/// How thoroughly two sites' copies of a cache are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VerifyLevel {
    /// Entry counts only: cheap, and blind to caches of equal size with different content.
    Sizes,
    /// Keys: finds missing and extra keys, not different values.
    Keys,
    /// Keys and a digest of every value (the default).
    Entries,
    /// What `entries` compared where the server could not render a cache's values in a listing
    /// (16.0.x and Keycloak's authentication sessions): keys and a digest of each value as the
    /// server stores it, read key by key. Never asked for; only reported.
    #[serde(rename = "entries-stored")]
    StoredEntries,
    /// What `entries` compared where the values could be read neither way: keys only. Never
    /// asked for; only reported, and a failure with `require_values`.
    #[serde(rename = "keys-only")]
    KeysOnly,
}

impl VerifyLevel {
    /// Every level, cheapest first.
    pub const ALL: [Self; 3] = [Self::Sizes, Self::Keys, Self::Entries];

    /// `sizes`, `keys` or `entries`, as in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sizes => "sizes",
            Self::Keys => "keys",
            Self::Entries => "entries",
            Self::StoredEntries => "entries-stored",
            Self::KeysOnly => "keys-only",
        }
    }

    /// What was compared, in words (`keys and values`).
    pub fn compared(self) -> &'static str {
        match self {
            Self::Sizes => "sizes",
            Self::Keys => "keys",
            Self::Entries => "keys and values",
            Self::StoredEntries => "keys and stored values",
            Self::KeysOnly => "keys (values unread)",
        }
    }

    /// Whether keys (and maybe values) are compared, rather than sizes.
    pub fn reads_keys(self) -> bool {
        self != Self::Sizes
    }

    /// Verdicts written before levels existed compared sizes.
    fn legacy() -> Self {
        Self::Sizes
    }
}

impl fmt::Display for VerifyLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A verification verdict for one cache, naming what was compared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "kebab-case")]
pub enum Verdict {
    /// The sites hold the same entries, as far as `compared` can tell.
    Equal {
        /// Entries on each site.
        entries: u64,
        /// What was compared.
        #[serde(default = "VerifyLevel::legacy")]
        compared: VerifyLevel,
    },
    /// They differed only in ways live traffic during the check explains (a warning): sizes
    /// within the range the active site moved through, or differences a second read no longer
    /// showed.
    Drift {
        /// Entries on the active site.
        active: u64,
        /// Entries on the offline site.
        offline: u64,
        /// What was compared.
        #[serde(default = "VerifyLevel::legacy")]
        compared: VerifyLevel,
        /// Differences tolerated (keys and entries levels): seen on one read only, or within
        /// `drift_tolerance`.
        #[serde(default)]
        transient: u64,
    },
    /// They differ by more than that.
    Mismatch {
        /// Entries on the active site.
        active: u64,
        /// Entries on the offline site.
        offline: u64,
        /// What was compared.
        #[serde(default = "VerifyLevel::legacy")]
        compared: VerifyLevel,
        /// Keys only the active site has (keys and entries levels; both reads agreed).
        #[serde(default)]
        only_active: u64,
        /// Keys only the offline site has.
        #[serde(default)]
        only_offline: u64,
        /// Keys on both sites with different values (entries level).
        #[serde(default)]
        different_values: u64,
    },
}

impl fmt::Display for Verdict {
    /// `equal: 3,850 keys and values`, `equal sizes (3,850 entries)`, `MISMATCH: ...`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Equal { entries, compared: VerifyLevel::Sizes } => write!(f, "equal sizes ({} entries)", thousands(*entries)),
            Self::Equal { entries, compared } => write!(f, "equal: {} {}", thousands(*entries), compared.compared()),
            Self::Drift { active, offline, compared: VerifyLevel::Sizes, .. } => write!(
                f,
                "drift: {} entries on the active site, {} on the offline site, within what live traffic explains",
                thousands(*active),
                thousands(*offline)
            ),
            Self::Drift { active, compared, transient, .. } => write!(
                f,
                "drift (compared {}): {} difference(s) among {} keys, within what live traffic and drift_tolerance explain",
                compared.compared(),
                thousands(*transient),
                thousands(*active)
            ),
            Self::Mismatch { active, offline, compared: VerifyLevel::Sizes, .. } => write!(
                f,
                "MISMATCH: {} entries on the active site, {} on the offline site",
                thousands(*active),
                thousands(*offline)
            ),
            Self::Mismatch { compared, only_active, only_offline, different_values, .. } => write!(
                f,
                "MISMATCH (compared {}): {} keys only on the active site, {} only on the offline site, {} with different values",
                compared.compared(),
                thousands(*only_active),
                thousands(*only_offline),
                thousands(*different_values)
            ),
        }
    }
}

/// `3850` as `3,850`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

impl Verdict {
    /// Whether the offline site lacks something a push delivers (missing keys, other values):
    /// pushing again can repair it, where extra keys on the offline site it cannot.
    pub fn push_can_repair(&self) -> bool {
        match self {
            Self::Mismatch { compared: VerifyLevel::Sizes, active, offline, .. } => offline < active,
            Self::Mismatch { only_active, different_values, .. } => only_active + different_values > 0,
            _ => false,
        }
    }
}

/// One site's side of the cross-site link, as its container info shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkView {
    /// The site.
    pub site: SiteName,
    /// The site it should see.
    pub other: SiteName,
    /// Its `sites_view` (empty when the answering node is not a site master).
    pub sites_view: Vec<String>,
    /// Whether it sees `other`: `None` when the answering node cannot tell.
    pub sees_other: Option<bool>,
}

/// A lost cross-site link: when it was first seen, and how each site sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkLoss {
    /// When it was first seen lost (ms since the epoch).
    pub since_ms: u64,
    /// The active site's view, then the offline site's.
    pub views: Vec<LinkView>,
}

impl fmt::Display for LinkLoss {
    /// `site-a cannot see site-b across the bridge` (or `... cannot see each other ...`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let blind: Vec<&LinkView> = self.views.iter().filter(|v| v.sees_other == Some(false)).collect();
        match blind.as_slice() {
            [one] => write!(f, "{} cannot see {} across the bridge", one.site, one.other),
            [first, second, ..] => write!(f, "{} and {} cannot see each other across the bridge", first.site, second.site),
            [] => f.write_str("the sites cannot see each other across the bridge"),
        }
    }
}

/// A change to the world.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    /// Scale the offline site's Keycloak to 0 (records the original count first).
    ScaleDown,
    /// Offline site: take `cache`'s backup to the active site offline.
    TakeOffline(CacheName),
    /// Offline site: clear `cache` (the driver re-reads the interlock right before).
    Clear(CacheName),
    /// `side`: bring `cache`'s backup to the other site online.
    BringOnline(Side, CacheName),
    /// Active site: push `cache`'s state to the offline site.
    StartPush(CacheName),
    /// Active site: cancel `cache`'s push.
    CancelPush(CacheName),
    /// Offline site: leave receive mode for `cache`.
    CancelReceive(CacheName),
    /// Active site: reset `cache`'s push status.
    ClearPushStatus(CacheName),
    /// Restore Keycloak to this many instances.
    ScaleUp(u32),
}

impl Action {
    /// The verb, as in events.
    pub fn verb(&self) -> &'static str {
        match self {
            Self::ScaleDown => "scale-down",
            Self::TakeOffline(_) => "take-offline",
            Self::Clear(_) => "clear",
            Self::BringOnline(..) => "bring-online",
            Self::StartPush(_) => "start-push-state",
            Self::CancelPush(_) => "cancel-push-state",
            Self::CancelReceive(_) => "cancel-receive-state",
            Self::ClearPushStatus(_) => "clear-push-state-status",
            Self::ScaleUp(_) => "scale-up",
        }
    }

    /// The cache it is about.
    pub fn cache(&self) -> Option<&CacheName> {
        match self {
            Self::TakeOffline(c)
            | Self::Clear(c)
            | Self::BringOnline(_, c)
            | Self::StartPush(c)
            | Self::CancelPush(c)
            | Self::CancelReceive(c)
            | Self::ClearPushStatus(c) => Some(c),
            Self::ScaleDown | Self::ScaleUp(_) => None,
        }
    }

    /// The site it is sent to (Keycloak actions concern the offline site).
    pub fn side(&self) -> Side {
        match self {
            Self::StartPush(_) | Self::CancelPush(_) | Self::ClearPushStatus(_) => Side::Active,
            Self::BringOnline(side, _) => *side,
            _ => Side::Offline,
        }
    }
}

/// Shows a duration the way the event stream and reports do: `250 ms`, `1.25 s`, `5m`, `1h 2m 3s`,
/// `7d`.
pub fn human_duration(duration: Duration) -> impl fmt::Display {
    struct Human(Duration);
    impl fmt::Display for Human {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            let ms = self.0.as_millis();
            if ms < 1000 {
                return write!(f, "{ms} ms");
            }
            if ms < 60_000 {
                return write!(f, "{:.2} s", self.0.as_secs_f64());
            }
            let seconds = self.0.as_secs();
            let parts = [(seconds / 86_400, "d"), (seconds / 3600 % 24, "h"), (seconds / 60 % 60, "m"), (seconds % 60, "s")];
            let shown: Vec<String> = parts.iter().filter(|(n, _)| *n > 0).map(|(n, unit)| format!("{n}{unit}")).collect();
            f.write_str(&shown.join(" "))
        }
    }
    Human(duration)
}

/// A moment as the operator reads it in messages: `12:03:07 UTC` (ms since the Unix epoch).
pub fn clock_time(epoch_ms: u64) -> impl fmt::Display {
    struct Clock(u64);
    impl fmt::Display for Clock {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            let seconds = self.0 / 1000 % 86_400;
            write!(f, "{:02}:{:02}:{:02} UTC", seconds / 3600, seconds / 60 % 60, seconds % 60)
        }
    }
    Clock(epoch_ms)
}
