//! What the ports report besides Infinispan: the state of the offline site's Keycloak, who holds
//! the run lock, and why a Keycloak, lock or journal call failed. The traits are in
//! [`crate::ports`]; these types are here so that outcomes can carry them without importing the
//! traits.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What the Keycloak deployment on the offline site looks like right now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeycloakState {
    /// Desired instances (`spec.instances`).
    pub spec_instances: u32,
    /// Instances that are ready.
    pub ready_instances: u32,
    /// Pods that still exist (terminating ones included).
    pub pods: u32,
    /// Whether a rolling update is in progress (scaling now would fight the operator).
    pub rolling_update: bool,
    /// The instance count an earlier, interrupted run recorded before scaling down, if any.
    pub recorded_original: Option<u32>,
}

/// One health endpoint of a Keycloak, as it answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probed {
    /// The URL asked.
    pub url: String,
    /// Its HTTP status, when it answered.
    pub status: Option<u16>,
    /// Why it did not answer.
    pub error: Option<String>,
}

impl Probed {
    /// Whether it answered 200.
    pub fn ok(&self) -> bool {
        self.status == Some(200)
    }
}

impl std::fmt::Display for Probed {
    /// `200`, `503`, or why it did not answer.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.status, &self.error) {
            (Some(status), _) => write!(f, "{status}"),
            (None, Some(error)) => write!(f, "no answer ({error})"),
            (None, None) => f.write_str("no answer"),
        }
    }
}

/// What a Keycloak says about itself: `/lb-check` (multi-site: 200 while it can use its external
/// Infinispan; what a load balancer asks) and `/health/ready` (management port).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeycloakHealth {
    /// `GET <url>/lb-check`, when a URL is configured.
    pub lb_check: Option<Probed>,
    /// `GET <management_url>/health/ready`, when a management URL is configured.
    pub ready: Option<Probed>,
}

impl KeycloakHealth {
    /// Whether it can be put (back) behind the load balancer: `/lb-check` answers 200 (and
    /// `/health/ready`, when asked, too). `None` when there is nothing to tell it by.
    pub fn serving(&self) -> Option<bool> {
        match (&self.lb_check, &self.ready) {
            (None, None) => None,
            (lb, ready) => Some(lb.as_ref().is_none_or(Probed::ok) && ready.as_ref().is_none_or(Probed::ok)),
        }
    }
}

/// Which way Keycloak is scaled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Scaling {
    /// To zero, until no pod is left.
    Down,
    /// Back to the recorded count, until every instance is ready.
    Up,
}

/// Why a Keycloak operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum KeycloakError {
    /// The API refused the call for lack of a permission.
    #[error("forbidden: {what}; grant it to the tool's account (docs/rbac.md)")]
    Forbidden {
        /// The missing permission (`patch keycloaks/scale in namespace kc`).
        what: String,
    },
    /// The resource does not exist.
    #[error("not found: {what}")]
    NotFound {
        /// What is missing.
        what: String,
    },
    /// The wait did not end in time.
    #[error("{what} did not happen within {}{}", crate::vocabulary::human_duration(*after), if stuck.is_empty() { String::new() } else { format!("; pods stuck: {}", stuck.join(", ")) })]
    Timeout {
        /// What was waited for.
        what: String,
        /// How long.
        after: Duration,
        /// Pods that did not terminate, by name.
        stuck: Vec<String>,
    },
    /// Anything else (API unreachable, command failed), with its text.
    #[error("{0}")]
    Other(String),
}

/// Who holds the run lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockHolder {
    /// Holder identity (`site-sync/<run id>@<host>`).
    pub holder: String,
    /// Since when, as text (RFC 3339).
    pub since: String,
}

/// Why the run lock could not be taken or kept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum LockError {
    /// Another run holds it.
    #[error("another run holds the lock: {} since {}", .0.holder, .0.since)]
    Held(LockHolder),
    /// The lock store failed.
    #[error("the run lock failed: {0}")]
    Store(String),
}

/// Why the journal could not be read or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum JournalError {
    /// The journal is not valid JSON of the expected shape.
    #[error("the journal {location} is corrupt ({detail}); move it aside to start a fresh run")]
    Corrupt {
        /// Where it is.
        location: String,
        /// What is wrong.
        detail: String,
    },
    /// The journal was written by a newer site-sync.
    #[error(
        "the journal {location} has schema version {found}, newer than this site-sync understands ({supported}); use the site-sync that wrote it"
    )]
    NewerSchema {
        /// Where it is.
        location: String,
        /// Its version.
        found: u32,
        /// Ours.
        supported: u32,
    },
    /// Reading or writing failed.
    #[error("cannot use the journal {location}: {detail}")]
    Io {
        /// Where it is.
        location: String,
        /// The error.
        detail: String,
    },
    /// The process was told to stop right after this write (tests simulate crashes this way).
    #[error("stopped after writing the journal")]
    Stopped,
}
