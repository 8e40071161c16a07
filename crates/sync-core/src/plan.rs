//! What a run is asked to do: which site is active, which is offline, which caches, and how
//! patient to be.

use std::fmt;
use std::time::Duration;

use ispn_xsite::{CacheName, SiteName};
use serde::{Deserialize, Serialize};

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

/// A deliberately broken behaviour, to show that the simulation's invariants are not vacuous:
/// each must be caught. It has no effect unless sync-core is built with the test-only `sabotage`
/// feature, which the binary never enables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Sabotage {
    /// Clear without checking that the backup to the active site is offline, and without the
    /// `SKIP_XSITE_BACKUP` flag.
    ClearWithoutInterlock,
    /// Scale Keycloak up as soon as the pushes were started.
    ScaleUpBeforePushOk,
}

/// How patient and how parallel a run is.
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
    /// How long any one step may take.
    pub step_deadline: Duration,
    /// Caches worked on at once.
    pub parallelism: usize,
    /// Compare keys (not only sizes) after the push.
    pub verify_keys: bool,
    /// Entries by which the sites may differ after the push, on top of what traffic during the
    /// check explains, before it is a mismatch rather than drift.
    pub drift_tolerance: u64,
    /// Whether the tool scales Keycloak (false when the operator stopped it by other means).
    pub manage_keycloak: bool,
    /// A broken behaviour for the simulation (test builds only).
    #[cfg(feature = "sabotage")]
    pub sabotage: Option<Sabotage>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_millis(500),
            take_offline_attempts: 10,
            push_attempts: 3,
            push_deadline: Duration::from_secs(15 * 60),
            step_deadline: Duration::from_secs(30 * 60),
            parallelism: 4,
            verify_keys: false,
            drift_tolerance: 0,
            manage_keycloak: true,
            #[cfg(feature = "sabotage")]
            sabotage: None,
        }
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
}

impl Plan {
    /// Checks what can be checked without asking any server.
    pub fn validate(&self) -> Result<(), PlanError> {
        if self.active.name == self.offline.name {
            return Err(PlanError::SameSite(self.active.name.clone()));
        }
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

    /// Whether this (test-only) broken behaviour is switched on.
    pub(crate) fn sabotaged(&self, what: Sabotage) -> bool {
        #[cfg(feature = "sabotage")]
        return self.settings.sabotage == Some(what);
        #[cfg(not(feature = "sabotage"))]
        {
            let _ = what;
            false
        }
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
