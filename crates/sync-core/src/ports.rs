//! The driver's view of the outside world, as traits. Infinispan is `ispn_xsite::SiteApi`; the
//! rest is here: Keycloak scaling, the run lock, journal storage, time, and the event sink.
//!
//! Implementations: `keycloak-scale` (Keycloak over kube-rs or commands; Kubernetes Lease or lock
//! file), `sync-cli` (journal file, events to the terminal), and in-memory ones for tests.

use std::future::Future;
use std::time::Duration;

use crate::event::Event;
use crate::journal::Journal;
pub use crate::port_types::{JournalError, KeycloakError, KeycloakHealth, KeycloakState, LockError, LockHolder, Probed, Scaling};

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

    /// How long a scaling may take before it fails (announced while the run waits for it).
    fn timeout(&self, scaling: Scaling) -> Duration;

    /// What Keycloak says about itself (`/lb-check`, `/health/ready`), when its URLs are
    /// configured.
    fn health(&self) -> impl Future<Output = Option<KeycloakHealth>> + Send {
        async { None }
    }
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
