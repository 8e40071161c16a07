//! The thin async loop that runs `decide`: it reads what is asked, sends what is decided, keeps
//! the journal, and reports events. All judgement lives in `decide`; what is here is mechanics,
//! plus the last-moment re-reads of the interlocks.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use futures::StreamExt;
use ispn_xsite::{CacheName, ClearScope, Error, SiteAction, SiteApi, SiteName};
use tokio::sync::watch;

use crate::compare::check_content;
use crate::decide::decide;
use crate::decision::{Decision, Ending, Note};
use crate::event::Event;
use crate::journal::{ActionOutcome, Finished, Happening, Journal, Moment};
use crate::observe::{ContentCheck, Observation, Sizes};
use crate::outcome::{CacheReport, Failure, Refusal, Report, RunOutcome};
use crate::plan::Plan;
use crate::port_types::{KeycloakError, LockError, Scaling};
use crate::ports::{Clock, EventSink, JournalStore, Keycloak, RunLock};
use crate::vocabulary::{Action, DirectionRecord, Probe, PushPhase, Side, Step, WriteSample};

/// Tries of a read during preflight before an unanswering site refuses the run.
const PREFLIGHT_TRIES: u32 = 3;

/// How often a wait that goes on is announced again: never 10 s without a word.
const ANNOUNCE_EVERY: Duration = Duration::from_secs(5);

/// A batch of reads or actions taking longer than this is announced as a wait.
const SLOW_CALLS: Duration = Duration::from_secs(2);

/// What a read-only preflight found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreflightReport {
    /// The caches a run would synchronize.
    pub caches: Vec<CacheName>,
    /// The Keycloak line they match, if any.
    pub line: Option<String>,
    /// Warnings.
    pub warnings: Vec<String>,
    /// The direction guard's evidence and verdict, and when it judged (ms since the epoch).
    pub direction: Option<(u64, DirectionRecord)>,
}

/// How long a preflight's direction evidence stands for the run that follows it (the operator
/// answering the confirmation): older, the run watches again.
pub const EVIDENCE_STANDS_MS: u64 = 30_000;

pub use crate::vocabulary::NEXT_STEP;

/// Everything a run talks to.
#[derive(Debug)]
pub struct Ports<S, K, J, L, C> {
    /// The active site.
    pub active: S,
    /// The offline site.
    pub offline: S,
    /// The offline site's Keycloak.
    pub keycloak: K,
    /// Where the journal is kept.
    pub journal: J,
    /// The run lock.
    pub lock: L,
    /// Time.
    pub clock: C,
}

/// Runs a plan.
pub struct Driver<'a, S, K, J, L, C> {
    plan: &'a Plan,
    ports: &'a Ports<S, K, J, L, C>,
    events: &'a dyn EventSink,
    stop: Option<watch::Receiver<bool>>,
    /// The last wait announced (what, when in ms), so that a wait that goes on is announced
    /// every [`ANNOUNCE_EVERY`] rather than at every poll.
    announced: Mutex<Option<(String, u64)>>,
    /// What happened since the journal was last saved.
    history: Mutex<History>,
}

/// Moments on their way into the journal (kept at its next save), with what tells a new wait or
/// a new link loss from one announced again.
#[derive(Default)]
struct History {
    pending: Vec<Moment>,
    waits: std::collections::BTreeSet<(Step, String, u64)>,
    link_down: bool,
    /// Each site's server as last recorded (version, nodes).
    seen: BTreeMap<Side, (String, usize)>,
}

impl History {
    fn remember(&mut self, at_ms: u64, what: Happening) {
        match &what {
            // A wait is announced again while it lasts, and what it names may change (the pushes
            // still running): the same step, reason and deadline are the same wait.
            Happening::Waiting { step, why, until_ms, .. } if !self.waits.insert((*step, why.clone(), *until_ms)) => return,
            Happening::LinkDown { .. } if self.link_down => return,
            Happening::LinkDown { .. } => self.link_down = true,
            Happening::LinkUp { .. } => self.link_down = false,
            Happening::SiteSeen { side, version, nodes } => {
                if self.seen.get(side) == Some(&(version.clone(), *nodes)) {
                    return;
                }
                self.seen.insert(*side, (version.clone(), *nodes));
            }
            _ => {}
        }
        self.pending.push(Moment { at_ms, what });
    }
}

/// The moment the journal keeps of `event`, if any (progress is left to the terminal).
fn happening(event: &Event) -> Option<Happening> {
    Some(match event {
        Event::RunStarted { resumed, from, .. } => Happening::RunStarted { resumed: *resumed, from: *from },
        Event::StepFinished { step, .. } => Happening::StepFinished { step: *step },
        Event::Action { step, action, side, cache } => {
            Happening::Action { step: *step, action: action.clone(), side: *side, cache: cache.clone() }
        }
        Event::Retry { step, cache, attempt, reason } => {
            Happening::Retry { step: *step, cache: cache.clone(), attempt: *attempt, reason: reason.clone() }
        }
        Event::InterlockRefused { step, cache, reason } => {
            Happening::InterlockRefused { step: *step, cache: cache.clone(), reason: reason.clone() }
        }
        Event::Verified { cache, verdict } => Happening::Verified { cache: cache.clone(), verdict: verdict.clone() },
        Event::Waiting { step, what, why, until_ms } => {
            Happening::Waiting { step: *step, what: what.clone(), why: why.clone(), until_ms: *until_ms }
        }
        Event::LinkDown { loss, .. } => Happening::LinkDown { loss: loss.to_string() },
        Event::LinkUp { since_ms, .. } => Happening::LinkUp { since_ms: *since_ms },
        Event::Warning { message } => Happening::Warning { message: message.clone() },
        // Kept where they happen, with what the journal needs of them.
        Event::Keycloak { .. } | Event::RunFinished { .. } => return None,
        // Kept with the save that makes the step the journal's.
        Event::StepStarted { .. } => return None,
        Event::CachesResolved { .. } | Event::PushProgress { .. } | Event::Direction(_) => return None,
    })
}

impl<S, K, J, L, C> std::fmt::Debug for Driver<'_, S, K, J, L, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver").field("plan", &self.plan).finish_non_exhaustive()
    }
}

/// Why an action did not do its job.
enum ActionError {
    Site(Side, Error),
    Keycloak(KeycloakError),
    Refused(Refusal),
}

impl ActionError {
    fn journal_outcome(&self) -> ActionOutcome {
        match self {
            Self::Site(_, Error::Server { body, status, .. }) if *status != 503 => ActionOutcome::ServerError(body.clone()),
            Self::Site(_, e) => ActionOutcome::Unknown(e.to_string()),
            Self::Keycloak(e) => ActionOutcome::Unknown(e.to_string()),
            Self::Refused(r) => ActionOutcome::NotSent(r.to_string()),
        }
    }

    /// Errors the procedure handles by observing again (the state machine copes with a server
    /// error on an x-site operation); everything else stops the run.
    fn is_recoverable(&self) -> bool {
        match self {
            Self::Site(_, e) => {
                matches!(e, Error::Unreachable { .. } | Error::Interrupted { .. } | Error::Timeout { .. } | Error::Server { .. })
            }
            Self::Keycloak(_) => false,
            Self::Refused(Refusal::ClearInterlock { .. }) => true,
            Self::Refused(_) => false,
        }
    }
}

/// How many consecutive transient errors stretch the pause before the next try.
fn backoff(base: Duration, failures: u32) -> Duration {
    (base * 2u32.saturating_pow(failures.min(5))).min(Duration::from_secs(10)).max(base)
}

impl<'a, S, K, J, L, C> Driver<'a, S, K, J, L, C>
where
    S: SiteApi,
    K: Keycloak,
    J: JournalStore,
    L: RunLock,
    C: Clock,
{
    /// A driver for `plan` over `ports`, reporting to `events`.
    pub fn new(plan: &'a Plan, ports: &'a Ports<S, K, J, L, C>, events: &'a dyn EventSink) -> Self {
        Self { plan, ports, events, stop: None, announced: Mutex::new(None), history: Mutex::default() }
    }

    /// Stops at the next safe point (between two actions) once `stop` reads true.
    pub fn with_stop(mut self, stop: watch::Receiver<bool>) -> Self {
        self.stop = Some(stop);
        self
    }

    fn emit(&self, event: Event) {
        if let Some(what) = happening(&event) {
            self.remember(what);
        }
        self.events.emit(&event);
    }

    fn remember(&self, what: Happening) {
        let at_ms = self.ports.clock.now_ms();
        self.history.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remember(at_ms, what);
    }

    /// Announces a wait: at once when it is new, then every [`ANNOUNCE_EVERY`] while it goes on.
    fn announce_wait(&self, step: Step, what: &str, why: &str, until_ms: u64) {
        let now = self.ports.clock.now_ms();
        let mut announced = self.announced.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let repeat = announced.as_ref().is_some_and(|(last, at)| last == what && now < at + ANNOUNCE_EVERY.as_millis() as u64);
        if !repeat {
            *announced = Some((what.to_owned(), now));
            drop(announced);
            self.emit(Event::Waiting { step, what: what.to_owned(), why: why.to_owned(), until_ms });
        }
    }

    /// Runs `work`, announcing it as a wait once it has taken `quiet_for`, and again every
    /// [`ANNOUNCE_EVERY`] until it ends: whatever the run waits on, it says what and until when.
    async fn announced<T>(
        &self,
        step: Step,
        quiet_for: Duration,
        (what, why, until_ms): (&str, &str, u64),
        work: impl Future<Output = T>,
    ) -> T {
        let mut work = std::pin::pin!(work);
        let mut pause = quiet_for;
        loop {
            tokio::select! {
                biased;
                out = &mut work => return out,
                () = self.ports.clock.sleep(pause) => {
                    self.forget_announcement();
                    self.announce_wait(step, what, why, until_ms);
                    pause = ANNOUNCE_EVERY;
                }
            }
        }
    }

    /// Makes the next announcement a new one, even of the same wait: a backoff after another
    /// failure is a new pause.
    fn forget_announcement(&self) {
        *self.announced.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }

    /// Sleeps `duration` (at most until `until_ms`), announced.
    async fn pause(&self, step: Step, duration: Duration, (what, why, until_ms): (&str, &str, u64)) {
        self.announce_wait(step, what, why, until_ms);
        let left = Duration::from_millis(until_ms.saturating_sub(self.ports.clock.now_ms()));
        // At least a millisecond, so that a wait at its very deadline still lets time pass.
        let duration = duration.min(left).max(Duration::from_millis(1));
        self.announced(step, ANNOUNCE_EVERY, (what, why, until_ms), self.ports.clock.sleep(duration)).await;
    }

    fn ms_from_now(&self, duration: Duration) -> u64 {
        self.ports.clock.now_ms() + duration.as_millis() as u64
    }

    /// A pause of `duration` that ends no later than the step's deadline, or the lost link's:
    /// a backoff must not carry the run past what `decide` allows it.
    fn bounded_pause(&self, journal: &Journal, duration: Duration) -> (Duration, u64) {
        let settings = &self.plan.settings;
        let step_until = journal.step_started_at_ms + settings.step_deadline.as_millis() as u64;
        let link_until = journal.link_down_since_ms.map_or(u64::MAX, |since| since + settings.link_wait.as_millis() as u64);
        let until = self.ms_from_now(duration).min(step_until).min(link_until);
        (Duration::from_millis(until.saturating_sub(self.ports.clock.now_ms())), until)
    }

    fn site(&self, side: Side) -> &S {
        match side {
            Side::Active => &self.ports.active,
            Side::Offline => &self.ports.offline,
        }
    }

    fn other_name(&self, side: Side) -> &SiteName {
        match side {
            Side::Active => &self.plan.offline.name,
            Side::Offline => &self.plan.active.name,
        }
    }

    /// Starts a new run.
    pub async fn run(&self, run_id: String) -> RunOutcome {
        self.run_after_preflight(run_id, None).await
    }

    /// [`Driver::run`], with the direction judged by the preflight just before (at `judged_at`, ms
    /// since the epoch): the run does not watch again unless that was more than
    /// [`EVIDENCE_STANDS_MS`] ago.
    pub async fn run_after_preflight(&self, run_id: String, direction: Option<(u64, DirectionRecord)>) -> RunOutcome {
        if let Err(e) = self.plan.validate() {
            return self.finish_early(Refusal::InvalidPlan(e.to_string()));
        }
        match self.ports.journal.load().await {
            Ok(Some(old)) if old.has_progress() && !old.is_complete() => {
                let step = old.resume_from.unwrap_or(old.step);
                return self.finish_early(Refusal::UnfinishedRun { location: self.ports.journal.location(), step });
            }
            Ok(_) => {}
            // A journal that cannot be read may hide an unfinished run: do not overwrite it.
            Err(e) => return self.finish_early(Refusal::Journal(e)),
        }
        let now = self.ports.clock.now_ms();
        let mut journal = Journal::new(run_id, self.plan, now);
        journal.direction = direction.filter(|(at, _)| now.saturating_sub(*at) <= EVIDENCE_STANDS_MS).map(|(_, record)| record);
        self.start(journal, false).await
    }

    /// Continues the run recorded in the journal.
    pub async fn resume(&self) -> RunOutcome {
        let mut journal = match self.ports.journal.load().await {
            Ok(Some(journal)) => journal,
            Ok(None) => return self.finish_early(Refusal::NothingToResume { location: self.ports.journal.location() }),
            Err(e) => return self.finish_early(Refusal::Journal(e)),
        };
        if !journal.belongs_to(self.plan) {
            return self.finish_early(Refusal::JournalOfAnotherPair {
                location: self.ports.journal.location(),
                journal_active: journal.active.name.clone(),
                journal_offline: journal.offline.name.clone(),
                active: self.plan.active.name.clone(),
                offline: self.plan.offline.name.clone(),
            });
        }
        if journal.is_complete() {
            return RunOutcome::Succeeded(self.report(&journal));
        }
        let now = self.ports.clock.now_ms();
        // Re-check the sites before continuing: preflight first, then the interrupted step.
        if journal.step != Step::Preflight {
            journal.resume_from = Some(journal.step);
            journal.step = Step::Preflight;
        }
        journal.step_started_at_ms = now;
        journal.finished = None;
        // The operator resumes once the cause is fixed: every retry budget and patience starts
        // afresh.
        journal.link_down_since_ms = None;
        for progress in journal.per_cache.values_mut() {
            progress.take_offline_calls = 0;
            progress.last_take_offline_ms = None;
            progress.push_attempts = 0;
            progress.verify_repushes = 0;
            progress.receiver_entries = None;
            progress.receiver_moved_at_ms = None;
        }
        self.start(journal, true).await
    }

    /// Runs the preflight checks only: reads both sites and Keycloak, changes nothing, takes no
    /// lock and writes no journal. `plan` and `config check` show what a run would decide.
    pub async fn preflight(&self) -> Result<PreflightReport, RunOutcome> {
        if let Err(e) = self.plan.validate() {
            return Err(RunOutcome::Refused(Refusal::InvalidPlan(e.to_string())));
        }
        let now = self.ports.clock.now_ms();
        let mut journal = Journal::new("preflight".to_owned(), self.plan, now);
        let mut obs = Observation::at(now);
        let mut failures = 0;
        let mut line = None;
        let mut judged_at = 0;
        loop {
            match decide(self.plan, &journal, &obs) {
                Decision::Observe(probes) => self.observe(&journal, &mut obs, probes, &mut failures).await?,
                Decision::Note(notes) => {
                    for note in &notes {
                        match note {
                            Note::Caches(_, l) => line.clone_from(l),
                            // The evidence is shown once, here: the run that follows reuses it.
                            Note::Direction(_) => {
                                judged_at = obs.now_ms;
                                self.announce(note);
                            }
                            _ => {}
                        }
                        journal.note(note);
                    }
                }
                // The direction guard's window: a read-only wait.
                Decision::Wait(wait) => {
                    self.pause(journal.step, wait.duration, (&wait.what, &wait.why, wait.until_ms)).await;
                    obs = Observation::at(self.ports.clock.now_ms());
                }
                Decision::Advance | Decision::Finish(Ending::Succeeded) => {
                    let direction = journal.direction.map(|record| (judged_at, record));
                    return Ok(PreflightReport { caches: journal.caches, line, warnings: journal.warnings, direction });
                }
                Decision::Finish(Ending::Refused(r)) => return Err(RunOutcome::Refused(r)),
                Decision::Finish(Ending::Failed(f)) => return Err(RunOutcome::Failed(f)),
                Decision::Act(_) => unreachable!("preflight only reads"),
            }
        }
    }

    fn finish_early(&self, refusal: Refusal) -> RunOutcome {
        let outcome = RunOutcome::Refused(refusal);
        self.emit(Event::RunFinished { outcome: Box::new(outcome.clone()) });
        outcome
    }

    async fn start(&self, mut journal: Journal, resumed: bool) -> RunOutcome {
        let run_id = journal.run_id.clone();
        if let Err(e) = self.ports.lock.acquire(&run_id).await {
            return self.finish_early(match e {
                LockError::Held(holder) => Refusal::LockHeld(holder),
                LockError::Store(text) => Refusal::SiteUnusable { side: Side::Offline, message: format!("run lock: {text}") },
            });
        }
        // What a preflight before the run saw is not the run's.
        *self.history.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = History::default();
        self.emit(Event::RunStarted {
            run_id: run_id.clone(),
            active: self.plan.active.name.clone(),
            offline: self.plan.offline.name.clone(),
            resumed,
            from: journal.resume_from.unwrap_or(journal.step),
        });
        let outcome = tokio::select! {
            outcome = self.drive(&mut journal) => outcome,
            lost = self.keep_lock(&run_id) => RunOutcome::Failed(Failure::Lock(lost)),
        };
        let _ = self.ports.lock.release(&run_id).await;
        self.emit(Event::RunFinished { outcome: Box::new(outcome.clone()) });
        outcome
    }

    /// Renews the lock until it is lost; returns why.
    async fn keep_lock(&self, run_id: &str) -> LockError {
        loop {
            self.ports.clock.sleep(self.ports.lock.renew_every()).await;
            if let Err(e) = self.ports.lock.renew(run_id).await {
                return e;
            }
        }
    }

    fn stopping(&self) -> bool {
        self.stop.as_ref().is_some_and(|s| *s.borrow())
    }

    async fn save(&self, journal: &mut Journal) -> Result<(), RunOutcome> {
        journal.updated_at_ms = self.ports.clock.now_ms();
        journal.record(std::mem::take(&mut self.history.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pending));
        self.ports.journal.save(journal).await.map_err(|e| RunOutcome::Failed(Failure::Journal(e)))
    }

    async fn end(&self, journal: &mut Journal, outcome: RunOutcome) -> RunOutcome {
        journal.finished = Some(match &outcome {
            RunOutcome::Succeeded(_) => Finished::Succeeded,
            RunOutcome::Refused(r) => Finished::Refused { reason: r.to_string() },
            RunOutcome::Failed(f) => Finished::Failed { reason: f.to_string() },
            RunOutcome::Interrupted => Finished::Interrupted,
        });
        if let Some(finished) = journal.finished.clone() {
            self.remember(Happening::RunFinished { finished });
        }
        match self.save(journal).await {
            // A journal that cannot be written is worse news than anything else.
            Err(failure) if !matches!(outcome, RunOutcome::Failed(Failure::Journal(_))) => failure,
            _ => outcome,
        }
    }

    async fn drive(&self, journal: &mut Journal) -> RunOutcome {
        // Kept with the save that makes the step the journal's, so that a kill leaves no gap.
        self.remember(Happening::StepStarted { step: journal.step });
        if let Err(failure) = self.save(journal).await {
            return failure;
        }
        let step = journal.step;
        self.emit(Event::StepStarted { step, description: step.describe(&self.plan.active.name, &self.plan.offline.name) });
        let mut step_clock = tokio::time::Instant::now();
        let mut obs = Observation::at(self.ports.clock.now_ms());
        let mut failures = 0u32;
        loop {
            if self.stopping() {
                return self.end(journal, RunOutcome::Interrupted).await;
            }
            match decide(self.plan, journal, &obs) {
                Decision::Observe(probes) => {
                    if let Err(outcome) = self.observe(journal, &mut obs, probes, &mut failures).await {
                        return self.end(journal, outcome).await;
                    }
                }
                Decision::Note(notes) => {
                    let before = journal.step;
                    for note in &notes {
                        journal.note(note);
                        self.announce(note);
                    }
                    if journal.step != before {
                        self.remember(Happening::StepStarted { step: journal.step });
                    }
                    if let Err(failure) = self.save(journal).await {
                        return failure;
                    }
                    if journal.step != before {
                        // A note moved the step back (verification asked for another push).
                        self.emit(Event::StepStarted {
                            step: journal.step,
                            description: journal.step.describe(&self.plan.active.name, &self.plan.offline.name),
                        });
                        journal.step_started_at_ms = self.ports.clock.now_ms();
                        obs = Observation::at(self.ports.clock.now_ms());
                    }
                }
                Decision::Act(actions) => {
                    match self.act(journal, actions).await {
                        Ok(clean) => {
                            if clean {
                                failures = 0;
                            } else {
                                failures += 1;
                                let (pause, until) =
                                    self.bounded_pause(journal, backoff(self.plan.settings.poll_interval, failures));
                                let why = "an action did not do its job; the next reading of the sites decides what follows";
                                self.forget_announcement();
                                self.pause(journal.step, pause, ("a pause before reading the sites again", why, until)).await;
                            }
                        }
                        Err(outcome) => return self.end(journal, outcome).await,
                    }
                    obs = Observation::at(self.ports.clock.now_ms());
                }
                Decision::Wait(wait) => {
                    self.pause(journal.step, wait.duration, (&wait.what, &wait.why, wait.until_ms)).await;
                    obs = Observation::at(self.ports.clock.now_ms());
                }
                Decision::Advance => {
                    let done = journal.step;
                    self.emit(Event::StepFinished { step: done, elapsed: step_clock.elapsed() });
                    journal.advance(self.ports.clock.now_ms());
                    self.remember(Happening::StepStarted { step: journal.step });
                    if let Err(failure) = self.save(journal).await {
                        return failure;
                    }
                    step_clock = tokio::time::Instant::now();
                    let next = journal.step;
                    self.emit(Event::StepStarted {
                        step: next,
                        description: next.describe(&self.plan.active.name, &self.plan.offline.name),
                    });
                    obs = Observation::at(self.ports.clock.now_ms());
                }
                Decision::Finish(ending) => {
                    let outcome = match ending {
                        Ending::Succeeded => {
                            self.emit(Event::StepFinished { step: Step::Report, elapsed: step_clock.elapsed() });
                            journal.finished = Some(Finished::Succeeded);
                            let mut report = self.report(journal);
                            report.keycloak_health = self.ports.keycloak.health().await;
                            if let Some(health) = &report.keycloak_health {
                                let status = |probed: &Option<crate::port_types::Probed>| probed.as_ref().and_then(|p| p.status);
                                self.remember(Happening::KeycloakServing {
                                    lb_check: status(&health.lb_check),
                                    ready: status(&health.ready),
                                });
                            }
                            RunOutcome::Succeeded(report)
                        }
                        Ending::Refused(r) => RunOutcome::Refused(r),
                        Ending::Failed(f) => RunOutcome::Failed(f),
                    };
                    return self.end(journal, outcome).await;
                }
            }
        }
    }

    fn announce(&self, note: &Note) {
        match note {
            Note::Caches(caches, line) => self.emit(Event::CachesResolved { caches: caches.clone(), line: line.clone() }),
            Note::Verified(cache, verdict) => {
                self.emit(Event::Verified { cache: cache.clone(), verdict: verdict.clone() });
            }
            Note::Repush(cache) => self.emit(Event::Retry {
                step: Step::Verify,
                cache: Some(cache.clone()),
                attempt: 2,
                reason: "entries are missing on the offline site after an OK push: pushing again".to_owned(),
            }),
            Note::Warning(message) => self.emit(Event::Warning { message: message.clone() }),
            Note::AdoptPush(cache, _) => self.emit(Event::Warning {
                message: format!("cache '{cache}': a push was already running; waiting for it instead of starting another"),
            }),
            Note::LinkLost { loss, until_ms } => self.emit(Event::LinkDown { loss: loss.clone(), until_ms: *until_ms }),
            Note::LinkBack { since_ms, at_ms } => self.emit(Event::LinkUp { since_ms: *since_ms, at_ms: *at_ms }),
            Note::Direction(record) => self.emit(Event::Direction(record.clone())),
            Note::PushOk(_) | Note::PushDone(_) | Note::ReceiverMoved { .. } | Note::EvidenceStarted { .. } => {}
        }
    }

    fn report(&self, journal: &Journal) -> Report {
        Report {
            run_id: journal.run_id.clone(),
            active: journal.active.name.clone(),
            offline: journal.offline.name.clone(),
            caches: journal
                .caches
                .iter()
                .map(|c| {
                    let p = journal.cache(c);
                    CacheReport { cache: c.clone(), push_attempts: p.push_attempts, verdict: p.verdict }
                })
                .collect(),
            keycloak_instances: journal.keycloak_original_instances,
            keycloak_health: None,
            warnings: journal.warnings.clone(),
            direction: journal.direction.clone().map(Box::new),
            elapsed: Duration::from_millis(self.ports.clock.now_ms().saturating_sub(journal.started_at_ms)),
            next_step: NEXT_STEP.to_owned(),
        }
    }

    // ----- observing ----------------------------------------------------------------------------

    async fn observe(
        &self,
        journal: &Journal,
        obs: &mut Observation,
        probes: Vec<Probe>,
        failures: &mut u32,
    ) -> Result<(), RunOutcome> {
        let limit = self.plan.settings.parallelism.max(1);
        let comparisons: Vec<CacheName> =
            probes.iter().filter_map(|p| if let Probe::Content { cache } = p { Some(cache.clone()) } else { None }).collect();
        let (what, until) = if comparisons.is_empty() {
            (format!("answers to {} read(s) from the sites", probes.len()), self.ms_from_now(self.plan.settings.request_timeout))
        } else {
            let names: Vec<&str> = comparisons.iter().map(CacheName::as_str).collect();
            let until = journal.step_started_at_ms + self.plan.settings.step_deadline.as_millis() as u64;
            (format!("the comparison of {} ({}) on both sites", names.join(", "), self.plan.settings.verify.compared()), until)
        };
        let reads = futures::stream::iter(probes)
            .map(|p| async move { (p.clone(), self.probe(&p).await) })
            .buffer_unordered(limit)
            .collect::<Vec<(Probe, ProbeResult)>>();
        let why = "the next decision needs what they say";
        let results = self.announced(journal.step, SLOW_CALLS, (&what, why, until), reads).await;
        let mut transient = None;
        for (probe, result) in results {
            if let (Probe::Site { side }, Ok(Fact::Site(facts))) = (&probe, &result) {
                self.remember(Happening::SiteSeen { side: *side, version: facts.version.clone(), nodes: facts.nodes });
            }
            match result {
                Ok(Fact::Sizes(sizes)) if journal.step == Step::AwaitPush => {
                    if let Probe::Sizes { cache } = &probe {
                        self.emit(Event::PushProgress {
                            cache: cache.clone(),
                            transferred: sizes.offline,
                            total: sizes.active_after,
                        });
                    }
                    record(obs, probe, Fact::Sizes(sizes));
                }
                Ok(fact) => record(obs, probe, fact),
                Err(Unread::Site(side, error)) if error.is_transient() || matches!(error, Error::Server { .. }) => {
                    transient = Some((side, error));
                }
                Err(unread) => {
                    let (side, message) = match unread {
                        Unread::Site(side, error) => (side, error.to_string()),
                        Unread::Keycloak(message) => (Side::Offline, message),
                    };
                    return Err(if journal.step == Step::Preflight {
                        RunOutcome::Refused(Refusal::SiteUnusable { side, message })
                    } else {
                        RunOutcome::Failed(Failure::Site { side, message })
                    });
                }
            }
        }
        if let Some((side, error)) = transient {
            *failures += 1;
            // Before anything changed, a site that does not answer is a reason not to start,
            // not something to wait out.
            if journal.step == Step::Preflight && *failures >= PREFLIGHT_TRIES {
                return Err(RunOutcome::Refused(Refusal::SiteUnusable { side, message: error.to_string() }));
            }
            let now = self.ports.clock.now_ms();
            let elapsed = Duration::from_millis(now.saturating_sub(journal.step_started_at_ms));
            // Past the lost link's deadline too: `decide`, which ends the run there, needs a
            // reading of the sites, and without this the pauses, cut at that deadline, would
            // shrink to nothing and ask a failing site again and again.
            let link_wait = self.plan.settings.link_wait.as_millis() as u64;
            let link_given_up = journal.link_down_since_ms.is_some_and(|since| now >= since + link_wait);
            if elapsed > self.plan.settings.step_deadline || link_given_up {
                return Err(RunOutcome::Failed(Failure::Site { side, message: error.to_string() }));
            }
            self.emit(Event::Retry { step: journal.step, cache: None, attempt: *failures + 1, reason: error.to_string() });
            let (pause, until) = self.bounded_pause(journal, backoff(self.plan.settings.poll_interval, *failures));
            let why = "a site did not answer; it is asked again";
            self.forget_announcement();
            self.pause(journal.step, pause, ("a pause before reading the sites again", why, until)).await;
            *obs = Observation::at(self.ports.clock.now_ms());
        } else {
            *failures = 0;
        }
        Ok(())
    }

    async fn probe(&self, probe: &Probe) -> ProbeResult {
        let (active, offline) = (&self.ports.active, &self.ports.offline);
        let on = |side: Side| move |e: Error| Unread::Site(side, e);
        Ok(match probe {
            Probe::Site { side } => Fact::Site(self.site(*side).container_info().await.map_err(on(*side))?.into()),
            Probe::Backups { side } => {
                let site = self.site(*side);
                let mut map = BTreeMap::new();
                for cache in site.cache_names().await.map_err(on(*side))? {
                    // Internal caches (___protobuf_metadata, ...) never have backups.
                    if cache.as_str().starts_with("___") {
                        continue;
                    }
                    let targets = match site.cache_backups(&cache).await {
                        Ok(map) => map.into_keys().collect(),
                        Err(Error::NoBackups { .. }) => Vec::new(),
                        Err(e) => return Err(Unread::Site(*side, e)),
                    };
                    map.insert(cache, targets);
                }
                Fact::Backups(map)
            }
            Probe::OfflineNodes { cache } => {
                Fact::Nodes(offline.cache_site_nodes(cache, &self.plan.active.name).await.map_err(on(Side::Offline))?)
            }
            Probe::Status { side, cache } => {
                let map = self.site(*side).cache_backups(cache).await.map_err(on(*side))?;
                let status = map.get(self.other_name(*side)).cloned().unwrap_or(ispn_xsite::BackupStatus::Unknown);
                Fact::Status(status)
            }
            Probe::Push { cache } => Fact::Push(active.push_state_status(cache).await.map_err(on(Side::Active))?),
            Probe::Sizes { cache } => {
                let active_before = active.size(cache).await.map_err(on(Side::Active))?;
                let offline_size = offline.size(cache).await.map_err(on(Side::Offline))?;
                let active_after = active.size(cache).await.map_err(on(Side::Active))?;
                Fact::Sizes(Sizes { active_before, offline: offline_size, active_after })
            }
            Probe::Content { cache } => {
                // Writes on the active site during the read show up as differences that a second
                // read, a moment later, no longer shows.
                let pause = self.ports.clock.sleep(self.plan.settings.poll_interval);
                Fact::Content(
                    check_content(active, offline, cache, self.plan.settings.verify, pause)
                        .await
                        .map_err(|(side, e)| Unread::Site(side, e))?,
                )
            }
            Probe::Activity { side, cache } => {
                let site = self.site(*side);
                let stats = match site.cache_stats(cache).await {
                    Ok(stats) => Some(stats),
                    // A server that keeps no statistics for the cache, or cannot say: counted by
                    // its size alone.
                    Err(Error::Server { status: 400 | 404 | 405 | 501, .. }) => None,
                    Err(e) => return Err(Unread::Site(*side, e)),
                };
                let size = site.size(cache).await.map_err(on(*side))?;
                Fact::Activity(WriteSample {
                    writes: stats.and_then(|s| s.writes()),
                    since_reset_s: stats.and_then(|s| u64::try_from(s.time_since_reset).ok()),
                    size,
                })
            }
            Probe::KeycloakHealth => Fact::KeycloakHealth(self.ports.keycloak.health().await),
            Probe::Keycloak => Fact::Keycloak(
                self.ports
                    .keycloak
                    .observe()
                    .await
                    .map_err(|e| Unread::Keycloak(format!("Keycloak ({}): {e}", self.ports.keycloak.describe())))?,
            ),
        })
    }

    // ----- acting --------------------------------------------------------------------------------

    /// Sends a batch of independent actions. `Ok(true)` when all did their job, `Ok(false)` when
    /// some failed in a way the next observation will sort out.
    async fn act(&self, journal: &mut Journal, actions: Vec<Action>) -> Result<bool, RunOutcome> {
        let now = self.ports.clock.now_ms();
        for action in &actions {
            let attempt = match action {
                Action::TakeOffline(c) => journal.cache(c).take_offline_calls + 1,
                Action::StartPush(c) => journal.cache(c).push_attempts + 1,
                _ => 1,
            };
            if attempt > 1 {
                self.emit(Event::Retry {
                    step: journal.step,
                    cache: action.cache().cloned(),
                    attempt,
                    reason: retry_reason(action, journal),
                });
            }
            journal.before(action, now);
        }
        self.save(journal).await?;
        let step = journal.step;
        // Site status changes go one at a time: on a real 15.0.21 server, two concurrent
        // bring-online calls on different caches deadlock the server (each holds its cache's
        // OfflineStatus monitor while the global-state listener waits for the other's), and every
        // later status read of those caches hangs. The server's own container-level operations
        // run one cache after another for the same reason.
        let changes_status = actions.iter().any(|a| {
            matches!(a, Action::TakeOffline(_) | Action::BringOnline(..) | Action::StartPush(_) | Action::CancelPush(_))
        });
        let limit = if changes_status { 1 } else { self.plan.settings.parallelism.max(1) };
        let what = format!("answers to {} {} call(s)", actions.len(), actions.first().map_or("", Action::verb));
        let actions_kind = actions.first().cloned();
        let until = self.ms_from_now(self.plan.settings.request_timeout * actions.len().div_ceil(limit) as u32);
        let calls = futures::stream::iter(actions)
            .map(|a| async move {
                self.emit(Event::Action { step, action: a.verb().to_owned(), side: a.side(), cache: a.cache().cloned() });
                let result = self.execute(&a).await;
                (a, result)
            })
            .buffer_unordered(limit)
            .collect::<Vec<(Action, Result<ActionOutcome, ActionError>)>>();
        let why = "the journal records what each did before anything else happens";
        // Keycloak's scaling announces its own wait, with its own bound.
        let results = if matches!(actions_kind, Some(Action::ScaleDown | Action::ScaleUp(_))) {
            calls.await
        } else {
            self.announced(step, SLOW_CALLS, (&what, why, until), calls).await
        };
        let now = self.ports.clock.now_ms();
        let mut clean = true;
        let mut fatal = None;
        for (action, result) in &results {
            let outcome = match result {
                Ok(outcome) => outcome.clone(),
                Err(error) => error.journal_outcome(),
            };
            journal.after(action, &outcome, now);
            match result {
                Ok(ActionOutcome::ScaledDownFrom(original)) => {
                    self.remember(Happening::KeycloakStopped { was: *original });
                    self.emit(Event::Keycloak { message: format!("scaled to 0 (was {original} instances); pods are gone") });
                }
                Ok(_) => {
                    if let Action::ScaleUp(n) = action {
                        self.remember(Happening::KeycloakReady { instances: *n });
                        self.emit(Event::Keycloak { message: format!("restored to {n} instances; ready") });
                    }
                }
                Err(error) => {
                    clean = false;
                    if let ActionError::Refused(r) = error {
                        self.emit(Event::InterlockRefused { step, cache: action.cache().cloned(), reason: r.to_string() });
                    }
                    if !error.is_recoverable() && fatal.is_none() {
                        fatal = Some(match error {
                            ActionError::Site(side, e) => {
                                RunOutcome::Failed(Failure::Site { side: *side, message: e.to_string() })
                            }
                            ActionError::Keycloak(e) => RunOutcome::Failed(Failure::Keycloak(e.clone())),
                            ActionError::Refused(r) => RunOutcome::Refused(r.clone()),
                        });
                    } else if let ActionError::Site(_, e) = error {
                        tracing::info!(action = action.verb(), cache = ?action.cache(), error = %e, "action failed; observing again");
                    }
                }
            }
        }
        self.save(journal).await?;
        match fatal {
            Some(outcome) => Err(outcome),
            None => Ok(clean),
        }
    }

    async fn execute(&self, action: &Action) -> Result<ActionOutcome, ActionError> {
        let (active, offline) = (&self.ports.active, &self.ports.offline);
        let (a, o) = (&self.plan.active.name, &self.plan.offline.name);
        let site_err = |side: Side| move |e: Error| ActionError::Site(side, e);
        match action {
            Action::ScaleDown => {
                let what = format!("Keycloak on {o} ({}) to scale to 0 and its pods to go", self.ports.keycloak.describe());
                let until = self.ms_from_now(self.ports.keycloak.timeout(Scaling::Down));
                let why = "nothing may write to the offline site's caches while they are cleared and refilled";
                let scaling = self.ports.keycloak.scale_down();
                let original = self.announced(Step::ScaleDown, Duration::ZERO, (&what, why, until), scaling).await;
                Ok(ActionOutcome::ScaledDownFrom(original.map_err(ActionError::Keycloak)?))
            }
            Action::ScaleUp(instances) => {
                let what =
                    format!("Keycloak on {o} ({}) to start {instances} instance(s) and be ready", self.ports.keycloak.describe());
                let until = self.ms_from_now(self.ports.keycloak.timeout(Scaling::Up));
                let why = "the run is done only when the offline site serves again";
                let scaling = self.ports.keycloak.scale_up(*instances);
                self.announced(Step::ScaleUp, Duration::ZERO, (&what, why, until), scaling)
                    .await
                    .map_err(ActionError::Keycloak)?;
                Ok(ActionOutcome::Done)
            }
            Action::TakeOffline(cache) => {
                offline.cache_site_action(cache, a, SiteAction::TakeOffline).await.map_err(site_err(Side::Offline))?;
                Ok(ActionOutcome::Done)
            }
            Action::Clear(cache) => self.clear(cache).await,
            Action::BringOnline(side, cache) => {
                let target = self.other_name(*side);
                self.site(*side).cache_site_action(cache, target, SiteAction::BringOnline).await.map_err(site_err(*side))?;
                Ok(ActionOutcome::Done)
            }
            Action::StartPush(cache) => {
                // Interlock: only the declared active site pushes. Re-read who answers right before.
                let info = active.container_info().await.map_err(site_err(Side::Active))?;
                if info.local_site.as_deref() != Some(a.as_str()) {
                    return Err(ActionError::Refused(Refusal::PushInterlock { expected: a.clone(), found: info.local_site }));
                }
                active.cache_site_action(cache, o, SiteAction::StartPushState).await.map_err(site_err(Side::Active))?;
                Ok(ActionOutcome::Done)
            }
            Action::CancelPush(cache) => {
                active.cache_site_action(cache, o, SiteAction::CancelPushState).await.map_err(site_err(Side::Active))?;
                Ok(ActionOutcome::Done)
            }
            Action::CancelReceive(cache) => {
                offline.cache_site_action(cache, a, SiteAction::CancelReceiveState).await.map_err(site_err(Side::Offline))?;
                Ok(ActionOutcome::Done)
            }
            Action::ClearPushStatus(cache) => {
                active.clear_push_state_status(cache).await.map_err(site_err(Side::Active))?;
                Ok(ActionOutcome::Done)
            }
        }
    }

    /// Clears one cache on the offline site, behind two safeguards: the backup to the active
    /// site must read offline on every node *now* (re-read right before the call), and the clear
    /// carries `SKIP_XSITE_BACKUP`, so that either one alone keeps the active site intact.
    async fn clear(&self, cache: &CacheName) -> Result<ActionOutcome, ActionError> {
        let offline = &self.ports.offline;
        let nodes =
            offline.cache_site_nodes(cache, &self.plan.active.name).await.map_err(|e| ActionError::Site(Side::Offline, e))?;
        if !nodes.all_offline() {
            return Err(ActionError::Refused(Refusal::ClearInterlock {
                cache: cache.clone(),
                nodes: nodes.not_offline().into_iter().map(str::to_owned).collect(),
            }));
        }
        offline.clear(cache, ClearScope::LocalOnly).await.map_err(|e| ActionError::Site(Side::Offline, e))?;
        Ok(ActionOutcome::Done)
    }
}

fn retry_reason(action: &Action, journal: &Journal) -> String {
    match action {
        Action::TakeOffline(c) => format!("the backup of '{c}' to the active site does not read offline on every node yet"),
        Action::StartPush(c) => {
            let p = journal.cache(c);
            match (&p.last_error, p.push) {
                (Some(e), _) => format!("previous push failed: {e}"),
                (None, PushPhase::NotStarted) => "previous push was cancelled or cleared".to_owned(),
                _ => "previous push did not read OK".to_owned(),
            }
        }
        _ => "previous attempt failed".to_owned(),
    }
}

type ProbeResult = Result<Fact, Unread>;

/// A read that failed: a site's, or the offline site's Keycloak's.
enum Unread {
    Site(Side, Error),
    Keycloak(String),
}

/// One probe's answer.
enum Fact {
    Site(crate::observe::SiteFacts),
    Backups(BTreeMap<CacheName, Vec<SiteName>>),
    Nodes(ispn_xsite::NodeStatuses),
    Status(ispn_xsite::BackupStatus),
    Push(ispn_xsite::PushStatusReport),
    Sizes(Sizes),
    Content(ContentCheck),
    Keycloak(Option<crate::ports::KeycloakState>),
    Activity(WriteSample),
    KeycloakHealth(Option<crate::ports::KeycloakHealth>),
}

fn record(obs: &mut Observation, probe: Probe, fact: Fact) {
    match (probe, fact) {
        (Probe::Site { side }, Fact::Site(facts)) => {
            obs.sites.insert(side, facts);
        }
        (Probe::Backups { side }, Fact::Backups(map)) => {
            obs.backups.insert(side, map);
        }
        (Probe::OfflineNodes { cache }, Fact::Nodes(nodes)) => {
            obs.offline_nodes.insert(cache, nodes);
        }
        (Probe::Status { side, cache }, Fact::Status(status)) => {
            obs.status.insert((side, cache), status);
        }
        (Probe::Push { cache }, Fact::Push(report)) => {
            obs.push.insert(cache, report);
        }
        (Probe::Sizes { cache }, Fact::Sizes(sizes)) => {
            obs.sizes.insert(cache, sizes);
        }
        (Probe::Content { cache }, Fact::Content(check)) => {
            obs.content.insert(cache, check);
        }
        (Probe::Keycloak, Fact::Keycloak(state)) => obs.keycloak = Some(state),
        (Probe::Activity { side, cache }, Fact::Activity(sample)) => {
            obs.activity.insert((side, cache), sample);
        }
        (Probe::KeycloakHealth, Fact::KeycloakHealth(health)) => obs.keycloak_health = Some(health),
        _ => {}
    }
}
