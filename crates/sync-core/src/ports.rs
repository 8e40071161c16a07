//! The driver's view of the outside world, as traits. Infinispan is `ispn_xsite::SiteApi`; the
//! rest is here: Keycloak scaling, the run lock, journal storage, time, and the event sink.
//!
//! Implementations: `keycloak-scale` (Keycloak over kube-rs or commands; Kubernetes Lease or lock
//! file), `sync-cli` (journal file, events to the terminal), and in-memory ones for tests.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::event::Event;
use crate::journal::Journal;

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
    #[error("{what} did not happen within {after:?}{}", if stuck.is_empty() { String::new() } else { format!("; pods stuck: {}", stuck.join(", ")) })]
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

/// Scales the offline site's Keycloak. Every call is idempotent.
pub trait Keycloak: Send + Sync {
    /// A one-line description for messages (`keycloak/keycloak in namespace kc, context site-b`).
    fn describe(&self) -> String;

    /// Reads the current state; `None` when Keycloak is not managed by the tool (already stopped
    /// by the operator, or scaled by hand).
    fn observe(&self) -> impl Future<Output = Result<Option<KeycloakState>, KeycloakError>> + Send;

    /// Records the current instance count (where a crashed run cannot lose it), scales to zero,
    /// and waits until no pod is left. Returns the count to restore later.
    fn scale_down(&self) -> impl Future<Output = Result<u32, KeycloakError>> + Send;

    /// Scales back to `instances` and waits until they are ready.
    fn scale_up(&self, instances: u32) -> impl Future<Output = Result<(), KeycloakError>> + Send;
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

/// A lock that keeps two runs from working on the same site pair at once.
pub trait RunLock: Send + Sync {
    /// Takes the lock for `run_id`.
    fn acquire(&self, run_id: &str) -> impl Future<Output = Result<(), LockError>> + Send;
    /// Extends the lock; fails with `Held` if it was lost to someone else.
    fn renew(&self, run_id: &str) -> impl Future<Output = Result<(), LockError>> + Send;
    /// Gives the lock up.
    fn release(&self, run_id: &str) -> impl Future<Output = Result<(), LockError>> + Send;
    /// How often `renew` must be called.
    fn renew_every(&self) -> Duration;
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

/// Where the journal lives. `save` must be atomic: after a crash, `load` returns either the old
/// or the new journal, never a mix.
pub trait JournalStore: Send + Sync {
    /// The last saved journal, if any.
    fn load(&self) -> impl Future<Output = Result<Option<Journal>, JournalError>> + Send;
    /// Replaces the journal.
    fn save(&self, journal: &Journal) -> impl Future<Output = Result<(), JournalError>> + Send;
    /// Where it is, for messages.
    fn location(&self) -> String;
}

/// Time, injected so that simulations run on a paused clock.
pub trait Clock: Send + Sync {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
    /// Waits.
    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send;
}

/// Receives the driver's events (the CLI renders them; tests collect them).
pub trait EventSink: Send + Sync {
    /// One event.
    fn emit(&self, event: &Event);
}

impl<F: Fn(&Event) + Send + Sync> EventSink for F {
    fn emit(&self, event: &Event) {
        self(event)
    }
}

/// A clock on tokio's timer: real time in production, virtual time under `tokio::time::pause`.
/// Wall-clock milliseconds are `epoch_ms` plus the time elapsed since construction.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    epoch_ms: u64,
    start: tokio::time::Instant,
}

impl TokioClock {
    /// A clock whose `now_ms` starts at `epoch_ms`.
    pub fn starting_at(epoch_ms: u64) -> Self {
        Self { epoch_ms, start: tokio::time::Instant::now() }
    }
}

impl Clock for TokioClock {
    fn now_ms(&self) -> u64 {
        self.epoch_ms + self.start.elapsed().as_millis() as u64
    }

    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send {
        tokio::time::sleep(duration)
    }
}

/// A journal store in memory, for tests and for dry runs.
#[derive(Debug, Default)]
pub struct MemoryJournalStore {
    journal: std::sync::Mutex<Option<Journal>>,
}

impl MemoryJournalStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The stored journal.
    pub fn get(&self) -> Option<Journal> {
        self.journal.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

impl JournalStore for MemoryJournalStore {
    async fn load(&self) -> Result<Option<Journal>, JournalError> {
        Ok(self.get())
    }

    async fn save(&self, journal: &Journal) -> Result<(), JournalError> {
        *self.journal.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(journal.clone());
        Ok(())
    }

    fn location(&self) -> String {
        "memory".to_owned()
    }
}

/// A lock that only this process sees, for tests and single-shot tools.
#[derive(Debug, Default)]
pub struct MemoryLock {
    holder: std::sync::Mutex<Option<String>>,
}

impl MemoryLock {
    /// A free lock.
    pub fn new() -> Self {
        Self::default()
    }

    /// A lock already held by `holder`.
    pub fn held_by(holder: &str) -> Self {
        Self { holder: std::sync::Mutex::new(Some(holder.to_owned())) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.holder.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The current holder.
    pub fn holder(&self) -> Option<String> {
        self.lock().clone()
    }
}

impl RunLock for MemoryLock {
    async fn acquire(&self, run_id: &str) -> Result<(), LockError> {
        let mut holder = self.lock();
        match holder.as_deref() {
            Some(h) if h != run_id => Err(LockError::Held(LockHolder { holder: h.to_owned(), since: "earlier".to_owned() })),
            _ => {
                *holder = Some(run_id.to_owned());
                Ok(())
            }
        }
    }

    async fn renew(&self, run_id: &str) -> Result<(), LockError> {
        match self.lock().as_deref() {
            Some(h) if h == run_id => Ok(()),
            Some(h) => Err(LockError::Held(LockHolder { holder: h.to_owned(), since: "earlier".to_owned() })),
            None => Err(LockError::Store("the lock was released by someone else".to_owned())),
        }
    }

    async fn release(&self, run_id: &str) -> Result<(), LockError> {
        let mut holder = self.lock();
        if holder.as_deref() == Some(run_id) {
            *holder = None;
        }
        Ok(())
    }

    fn renew_every(&self) -> Duration {
        Duration::from_secs(3600)
    }
}

/// Shows a duration the way the event stream and reports do: `1.25 s`, `250 ms`.
pub fn human_duration(duration: Duration) -> impl fmt::Display {
    struct Human(Duration);
    impl fmt::Display for Human {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            let ms = self.0.as_millis();
            if ms < 1000 { write!(f, "{ms} ms") } else { write!(f, "{:.2} s", self.0.as_secs_f64()) }
        }
    }
    Human(duration)
}
