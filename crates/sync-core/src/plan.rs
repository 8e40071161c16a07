//! What a run is asked to do: which site is active, which is offline, which caches, and how
//! patient to be.

use std::fmt;
use std::time::Duration;

use ispn_xsite::{CacheName, SiteName};
use serde::{Deserialize, Serialize};

use crate::vocabulary::{VerifyLevel, human_duration};

/// Keycloak 26's replicated caches (persistent user sessions; KC 26.0 and later).
pub const KEYCLOAK_26_CACHES: [&str; 4] = ["actionTokens", "authenticationSessions", "loginFailures", "work"];

/// Keycloak 24 and 25's replicated caches (active/passive blueprint).
pub const KEYCLOAK_24_CACHES: [&str; 8] = [
    "actionTokens",
    "authenticationSessions",
    "clientSessions",
    "loginFailures",
    "offlineClientSessions",
    "offlineSessions",
    "sessions",
    "work",
];

/// Which caches to synchronize.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CacheSelection {
    /// Discover the caches that back up between the two sites and require that they are exactly
    /// one Keycloak line's set (4 caches for 26.x, 8 for 24/25).
    Keycloak,
    /// Exactly these caches.
    Explicit(Vec<CacheName>),
}

/// One site as configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteRef {
    /// The name the site must report as `local_site`.
    pub name: SiteName,
    /// Where it is reached, for messages.
    pub endpoint: String,
}

impl fmt::Display for SiteRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name, self.endpoint)
    }
}

/// How patient and how parallel a run is. [`Settings::check`] holds every value to a range that
/// makes sense (`RANGES` lists them; the user guide repeats them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// Pause between two status reads.
    pub poll_interval: Duration,
    /// Take-offline calls per cache before giving up on a backup that will not read offline.
    pub take_offline_attempts: u32,
    /// Pushes per cache before giving up on ERROR.
    pub push_attempts: u32,
    /// How long one push may read SENDING before it is cancelled and started again.
    pub push_deadline: Duration,
    /// How long a push may read SENDING while the offline site's entry count does not move
    /// before it is taken for stuck (cancelled and started again): a receiver that died leaves
    /// the sender in SENDING for minutes (about 106 s on 16.0.7).
    pub push_stall_timeout: Duration,
    /// How long any one step may take.
    pub step_deadline: Duration,
    /// How long the steps that need the cross-site link (push, await-push, verify) wait for a
    /// lost link to come back before the run stops (resumably).
    pub link_wait: Duration,
    /// The limit of one REST call (the client enforces it; the driver announces it when a read
    /// takes long).
    pub request_timeout: Duration,
    /// Caches worked on at once.
    pub parallelism: usize,
    /// What the post-sync verification compares.
    pub verify: VerifyLevel,
    /// Differences tolerated beyond what traffic during the check explains, before it is a
    /// mismatch rather than drift: entries for sizes, keys for keys and entries.
    pub drift_tolerance: u64,
    /// Whether the tool scales Keycloak (false when the operator stopped it by other means).
    pub manage_keycloak: bool,
    /// How long the direction guard watches both sites' write counters before anything changes
    /// (every run pays it once).
    pub direction_window: Duration,
    /// Go on when the evidence says the offline site is serving users, losing what it took
    /// (`--discard-offline-writes`).
    pub discard_offline_writes: bool,
    /// Whether a cache whose values could not be read (only its keys compared) fails the
    /// verification instead of passing with a warning.
    pub require_values: bool,
    /// Whether the preflight judges the direction at all (`config check` checks the configuration
    /// and the sites, not who serves users).
    pub direction_guard: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_millis(500),
            take_offline_attempts: 10,
            push_attempts: 3,
            push_deadline: Duration::from_secs(15 * 60),
            push_stall_timeout: Duration::from_secs(60),
            step_deadline: Duration::from_secs(30 * 60),
            // A bridge that drops comes back within seconds (JGroups reconnects; a site master
            // moves to another pod in well under a minute). Five minutes covers a restarted
            // gateway or relay pod; longer is an outage someone must look at, and `resume`
            // continues once it is over.
            link_wait: Duration::from_secs(5 * 60),
            request_timeout: Duration::from_secs(30),
            parallelism: 4,
            verify: VerifyLevel::Entries,
            drift_tolerance: 0,
            manage_keycloak: true,
            // Long enough that a site with a few logins a second shows them, short enough to
            // stay a small part of a run (budget: 3 s).
            direction_window: Duration::from_secs(2),
            discard_offline_writes: false,
            require_values: false,
            direction_guard: true,
        }
    }
}

/// What a setting holds, for range checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Value {
    /// A duration.
    Duration(Duration),
    /// A count.
    Count(u64),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Duration(d) => write!(f, "{}", human_duration(*d)),
            Self::Count(n) => write!(f, "{n}"),
        }
    }
}

/// The allowed range of a setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// The setting's name in the configuration.
    pub name: &'static str,
    /// The smallest allowed value.
    pub min: Value,
    /// The largest.
    pub max: Value,
}

const fn seconds(n: u64) -> Value {
    Value::Duration(Duration::from_secs(n))
}

/// Every numeric setting's allowed range (the user guide lists the same).
pub const RANGES: [Range; 10] = [
    Range { name: "poll_interval", min: Value::Duration(Duration::from_millis(10)), max: seconds(60) },
    Range { name: "take_offline_attempts", min: Value::Count(1), max: Value::Count(100) },
    Range { name: "push_attempts", min: Value::Count(1), max: Value::Count(100) },
    Range { name: "push_deadline", min: seconds(10), max: seconds(24 * 3600) },
    Range { name: "push_stall_timeout", min: seconds(5), max: seconds(24 * 3600) },
    Range { name: "step_deadline", min: seconds(10), max: seconds(7 * 24 * 3600) },
    Range { name: "link_wait", min: seconds(0), max: seconds(24 * 3600) },
    Range { name: "request_timeout", min: seconds(1), max: seconds(600) },
    Range { name: "parallelism", min: Value::Count(1), max: Value::Count(64) },
    Range { name: "direction_window", min: Value::Duration(Duration::from_millis(500)), max: seconds(60) },
];

impl Settings {
    /// The value of each setting that has a range, by name.
    fn ranged(&self) -> [(&'static str, Value); 10] {
        [
            ("poll_interval", Value::Duration(self.poll_interval)),
            ("take_offline_attempts", Value::Count(u64::from(self.take_offline_attempts))),
            ("push_attempts", Value::Count(u64::from(self.push_attempts))),
            ("push_deadline", Value::Duration(self.push_deadline)),
            ("push_stall_timeout", Value::Duration(self.push_stall_timeout)),
            ("step_deadline", Value::Duration(self.step_deadline)),
            ("link_wait", Value::Duration(self.link_wait)),
            ("request_timeout", Value::Duration(self.request_timeout)),
            ("parallelism", Value::Count(self.parallelism as u64)),
            ("direction_window", Value::Duration(self.direction_window)),
        ]
    }

    /// Checks every value against its range. Settings that overlap (a `push_deadline` longer
    /// than `step_deadline`) are not contradictions: the shorter one governs.
    pub fn check(&self) -> Result<(), PlanError> {
        for (name, value) in self.ranged() {
            if let Some(range) = RANGES.iter().find(|r| r.name == name)
                && (value < range.min || value > range.max)
            {
                return Err(PlanError::OutOfRange { range: *range, value });
            }
        }
        if !VerifyLevel::ALL.contains(&self.verify) {
            return Err(PlanError::ReportedLevel(self.verify));
        }
        Ok(())
    }
}

/// A run's plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The site whose data is kept.
    pub active: SiteRef,
    /// The stale site that is cleared and refilled.
    pub offline: SiteRef,
    /// Which caches.
    pub caches: CacheSelection,
    /// Patience and parallelism.
    pub settings: Settings,
}

/// Why a plan cannot even be tried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// Active and offline are the same site.
    #[error("the active and the offline site are both '{0}': name two different sites")]
    SameSite(SiteName),
    /// An explicit cache list is empty or repeats a cache.
    #[error("the cache list {0}")]
    BadCacheList(String),
    /// A verification level that is only ever reported (what `entries` fell back to).
    #[error(
        "settings.verify: {0} is what a verification reports when it falls back, not a level to ask for; use one of: sizes, keys, entries"
    )]
    ReportedLevel(VerifyLevel),
    /// A setting outside the range that makes sense.
    #[error("settings.{}: {value} is out of range; allowed: {} to {}", range.name, range.min, range.max)]
    OutOfRange {
        /// Which setting and its range.
        range: Range,
        /// The value given.
        value: Value,
    },
}

impl Plan {
    /// Checks what can be checked without asking any server.
    pub fn validate(&self) -> Result<(), PlanError> {
        if self.active.name == self.offline.name {
            return Err(PlanError::SameSite(self.active.name.clone()));
        }
        self.settings.check()?;
        if let CacheSelection::Explicit(caches) = &self.caches {
            if caches.is_empty() {
                return Err(PlanError::BadCacheList("is empty: name at least one cache".to_owned()));
            }
            let mut seen = std::collections::BTreeSet::new();
            for cache in caches {
                if !seen.insert(cache) {
                    return Err(PlanError::BadCacheList(format!("names '{cache}' twice")));
                }
            }
        }
        Ok(())
    }
}

/// Which known Keycloak line a cache set is, if any.
pub fn keycloak_line(caches: &[CacheName]) -> Option<&'static str> {
    let mut names: Vec<&str> = caches.iter().map(CacheName::as_str).collect();
    names.sort_unstable();
    let mut kc26 = KEYCLOAK_26_CACHES.to_vec();
    kc26.sort_unstable();
    if names == kc26 {
        return Some("Keycloak 26");
    }
    let mut kc24 = KEYCLOAK_24_CACHES.to_vec();
    kc24.sort_unstable();
    (names == kc24).then_some("Keycloak 24/25")
}
