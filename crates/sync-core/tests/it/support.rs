//! Test doubles for the ports that are not Infinispan: a simulated Keycloak deployment whose
//! scaling takes (virtual) time and logs what it did, a journal store that can "crash" right after
//! a chosen write, and an event collector.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fake_ispn::{ClusterSpec, FakeCluster, ModelSite};
use ispn_xsite::{CacheName, SiteName};
use sync_core::journal::Journal;
use sync_core::ports::{
    Clock, JournalError, JournalStore, Keycloak, KeycloakError, KeycloakState, MemoryJournalStore, MemoryLock, Scaling,
    TokioClock,
};
use sync_core::{CacheSelection, Event, Plan, Ports, Settings, SiteRef};

/// What the simulated Keycloak did, with the virtual time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeycloakLog {
    ScaledDown { from: u32, at: tokio::time::Instant },
    ScaledUp { to: u32, at: tokio::time::Instant },
}

#[derive(Debug)]
struct SimState {
    spec: u32,
    ready: u32,
    pods: u32,
    annotation: Option<u32>,
    rolling_update: bool,
}

/// A Keycloak deployment: scaling takes virtual seconds; the original count is kept in an
/// "annotation" that survives a crashed run, as keycloak-scale keeps it on the CR.
#[derive(Debug, Clone)]
pub struct SimKeycloak {
    state: Arc<Mutex<SimState>>,
    log: Arc<Mutex<Vec<KeycloakLog>>>,
    fail_next: Arc<Mutex<Option<KeycloakError>>>,
}

impl SimKeycloak {
    pub fn with_instances(n: u32) -> Self {
        Self {
            state: Arc::new(Mutex::new(SimState { spec: n, ready: n, pods: n, annotation: None, rolling_update: false })),
            log: Arc::default(),
            fail_next: Arc::default(),
        }
    }

    pub fn rolling_update(self) -> Self {
        self.state.lock().unwrap().rolling_update = true;
        self
    }

    pub fn fail_next(&self, error: KeycloakError) {
        *self.fail_next.lock().unwrap() = Some(error);
    }

    pub fn log(&self) -> Vec<KeycloakLog> {
        self.log.lock().unwrap().clone()
    }

    pub fn instances(&self) -> (u32, u32) {
        let s = self.state.lock().unwrap();
        (s.spec, s.ready)
    }
}

impl Keycloak for SimKeycloak {
    fn describe(&self) -> String {
        "keycloak/keycloak (simulated)".to_owned()
    }

    async fn observe(&self) -> Result<Option<KeycloakState>, KeycloakError> {
        let s = self.state.lock().unwrap();
        Ok(Some(KeycloakState {
            spec_instances: s.spec,
            ready_instances: s.ready,
            pods: s.pods,
            rolling_update: s.rolling_update,
            recorded_original: s.annotation,
        }))
    }

    async fn scale_down(&self) -> Result<u32, KeycloakError> {
        if let Some(e) = self.fail_next.lock().unwrap().take() {
            return Err(e);
        }
        let original = {
            let mut s = self.state.lock().unwrap();
            let spec = s.spec;
            let original = *s.annotation.get_or_insert(spec);
            s.spec = 0;
            original
        };
        self.log.lock().unwrap().push(KeycloakLog::ScaledDown { from: original, at: tokio::time::Instant::now() });
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut s = self.state.lock().unwrap();
        s.pods = 0;
        s.ready = 0;
        Ok(original)
    }

    async fn scale_up(&self, instances: u32) -> Result<(), KeycloakError> {
        if let Some(e) = self.fail_next.lock().unwrap().take() {
            return Err(e);
        }
        self.state.lock().unwrap().spec = instances;
        self.log.lock().unwrap().push(KeycloakLog::ScaledUp { to: instances, at: tokio::time::Instant::now() });
        tokio::time::sleep(Duration::from_secs(3)).await;
        let mut s = self.state.lock().unwrap();
        s.ready = instances;
        s.pods = instances;
        s.annotation = None;
        Ok(())
    }

    fn timeout(&self, _scaling: Scaling) -> Duration {
        Duration::from_secs(60)
    }
}

/// A journal store that returns `Stopped` right after its n-th save: the process "crashed" just
/// after writing the journal.
#[derive(Debug, Default)]
pub struct CrashingStore {
    inner: MemoryJournalStore,
    saves: Mutex<u32>,
    crash_after: Mutex<Option<u32>>,
}

impl CrashingStore {
    pub fn crash_after(&self, saves: Option<u32>) {
        *self.saves.lock().unwrap() = 0;
        *self.crash_after.lock().unwrap() = saves;
    }

    pub fn journal(&self) -> Option<Journal> {
        self.inner.get()
    }

    /// Saves since the last `crash_after`.
    pub fn saves(&self) -> u32 {
        *self.saves.lock().unwrap()
    }
}

impl JournalStore for CrashingStore {
    async fn load(&self) -> Result<Option<Journal>, JournalError> {
        self.inner.load().await
    }

    async fn save(&self, journal: &Journal) -> Result<(), JournalError> {
        self.inner.save(journal).await?;
        let mut saves = self.saves.lock().unwrap();
        *saves += 1;
        match *self.crash_after.lock().unwrap() {
            Some(n) if *saves >= n => Err(JournalError::Stopped),
            _ => Ok(()),
        }
    }

    fn location(&self) -> String {
        "memory (crashing)".to_owned()
    }
}

/// Collects events with the (virtual) time they were emitted.
#[derive(Debug, Clone)]
pub struct Events {
    start: tokio::time::Instant,
    events: Arc<Mutex<Vec<(Duration, Event)>>>,
}

impl Default for Events {
    fn default() -> Self {
        Self { start: tokio::time::Instant::now(), events: Arc::default() }
    }
}

impl Events {
    pub fn all(&self) -> Vec<Event> {
        self.events.lock().unwrap().iter().map(|(_, e)| e.clone()).collect()
    }

    /// Every event with the (virtual) time since the collector was made.
    pub fn timed(&self) -> Vec<(Duration, Event)> {
        self.events.lock().unwrap().clone()
    }

    /// When the collector was made: the zero of [`Events::timed`].
    pub fn start(&self) -> tokio::time::Instant {
        self.start
    }

    /// One line per event, with its time, for failure messages.
    pub fn timeline(&self) -> String {
        self.events
            .lock()
            .unwrap()
            .iter()
            .map(|(at, e)| format!("{:>9.3}s {e:?}", at.as_secs_f64()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl sync_core::ports::EventSink for Events {
    fn emit(&self, event: &Event) {
        self.events.lock().unwrap().push((self.start.elapsed(), event.clone()));
    }
}

pub fn site(name: &str) -> SiteName {
    SiteName::new(name).unwrap()
}

pub fn cache(name: &str) -> CacheName {
    CacheName::new(name).unwrap()
}

/// site-a active, site-b offline, Keycloak's caches, short polls.
pub fn plan() -> Plan {
    Plan {
        active: SiteRef { name: site("site-a"), endpoint: "model://site-a".to_owned() },
        offline: SiteRef { name: site("site-b"), endpoint: "model://site-b".to_owned() },
        caches: CacheSelection::Keycloak,
        settings: Settings {
            poll_interval: Duration::from_millis(200),
            push_deadline: Duration::from_secs(60),
            push_stall_timeout: Duration::from_secs(10),
            step_deadline: Duration::from_secs(600),
            link_wait: Duration::from_secs(20),
            ..Settings::default()
        },
    }
}

/// The driver's clock: tokio's (virtual) time, or, to plant a bug in the harness, one that runs at
/// half speed, so that every deadline the driver measures lasts twice as long in fact.
#[derive(Debug, Clone, Copy)]
pub struct SimClock {
    inner: TokioClock,
    start: tokio::time::Instant,
    epoch_ms: u64,
    half_speed: bool,
}

impl SimClock {
    pub fn at(epoch_ms: u64) -> Self {
        Self { inner: TokioClock::starting_at(epoch_ms), start: tokio::time::Instant::now(), epoch_ms, half_speed: false }
    }

    pub fn half_speed(self) -> Self {
        Self { half_speed: true, ..self }
    }
}

impl Clock for SimClock {
    fn now_ms(&self) -> u64 {
        if self.half_speed { self.epoch_ms + self.start.elapsed().as_millis() as u64 / 2 } else { self.inner.now_ms() }
    }

    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send {
        self.inner.sleep(duration)
    }
}

pub type ModelPorts = Ports<ModelSite, SimKeycloak, CrashingStore, MemoryLock, SimClock>;

/// A model pair (site-a, site-b) and ports over it.
pub fn model(spec: ClusterSpec, instances: u32) -> (FakeCluster, ModelPorts) {
    let fake = FakeCluster::model(spec);
    let ports = Ports {
        active: fake.site("site-a"),
        offline: fake.site("site-b"),
        keycloak: SimKeycloak::with_instances(instances),
        journal: CrashingStore::default(),
        lock: MemoryLock::new(),
        clock: SimClock::at(1_800_000_000_000),
    };
    (fake, ports)
}
