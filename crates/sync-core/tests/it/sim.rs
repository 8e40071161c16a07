//! Deterministic simulation: the driver against the fake-ispn model (no HTTP) on a paused clock,
//! under seeded fault schedules. Each schedule may cut and heal the link, throw 503s and lost
//! answers, make a push stick in SENDING or end in ERROR, make take-offline need repeats or read
//! `mixed` for a while, have someone else bring the backup online, restart the offline site, keep
//! a client writing to the active site, and crash the driver right after a journal write; then it
//! removes every fault and resumes until the run succeeds. After each schedule:
//!
//! 1. the active site never lost an entry;
//! 2. the offline site ends equal to the active site;
//! 3. no clear ever reached the active site;
//! 4. Keycloak was never scaled up before every cache had an OK push after its clear;
//! 5. Keycloak ends at its original instance count;
//! 6. every stop was typed, and resuming once the faults are gone succeeds;
//! 7. no wait passes silently: while a run is on, no 10 simulated seconds go by without an event,
//!    and every pause longer than 3 s begins with one that names what is awaited and until when;
//! 8. no run outlives its deadlines: no step runs longer than `step_deadline`, and no lost link
//!    is waited for longer than `link_wait` (give or take a poll);
//! 9. no clear of the offline site follows a direction judgement whose window held a write by
//!    the offline site's users, unless the operator overrode it;
//! 10. no direction refusal without such a write: the declared direction is never refused while
//!     the active site is the only one its users write to.
//!
//! Schedules also put users on the offline site (its Keycloak serving them, until it is scaled
//! down or until a moment, sometimes mid-window), an operator who overrides the guard, and
//! statistics that are off or reset on a site.
//!
//! Every case is a seed. A failure prints the command that replays it. Each invariant is shown
//! to bite by a fault planted in the harness that it must catch: a server that lies about its
//! backups and ignores `SKIP_XSITE_BACKUP` (3), one that reads a push OK while it runs, under a
//! plan that trusts it (4), a clock at half speed (8), an event sink that swallows announcements
//! (7), a guard overridden behind the checker's back (9), and an offline site whose counters
//! climb without a write (10). Product code carries no test hooks; `cargo xtask mutants` shows the same for the
//! interlock lines themselves.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use fake_ispn::{CacheFaults, ClusterSpec, Personality, PushRecord, RequestFault, TransferSpec};
use ispn_xsite::{CacheName, PushStatus, SiteAction, SiteApi};
use proptest::prelude::*;
use sync_core::ports::JournalError;
use sync_core::vocabulary::VerifyLevel;
use sync_core::vocabulary::{DirectionRecord, DirectionVerdict};
use sync_core::{Driver, Event, Failure, RunOutcome};

use crate::support::*;

/// SplitMix64: a tiny, stable PRNG, so that a seed means the same schedule forever.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn millis(&mut self, max: u64) -> Duration {
        Duration::from_millis(self.below(max))
    }
}

/// A fault planted in the harness to show that an invariant is not vacuous.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plant {
    /// The offline site reads its backups offline whatever the truth and ignores
    /// `SKIP_XSITE_BACKUP`: every interlock before a clear is fooled.
    LyingBackups,
    /// The active site reads a push OK as soon as it starts, and the plan trusts sizes with any
    /// difference: Keycloak can start before a real OK.
    EarlyOk,
    /// The driver's clock runs at half speed: its deadlines last twice as long.
    SlowClock,
    /// The event sink drops every announcement of a wait.
    SilentWaits,
    /// The run overrides the direction guard, and the checker is not told.
    GuardOverridden,
    /// The offline site's counters climb by 5 writes a second without any write.
    PhantomWrites,
}

/// Users of the offline site's Keycloak: a write every `every`, while it is up, or until `until`.
#[derive(Debug, Clone, Copy)]
struct OfflineUsers {
    every: Duration,
    until: Option<Duration>,
}

/// Statistics trouble on a site.
#[derive(Debug, Clone, Copy)]
enum StatsFault {
    /// Off on every cache: counters read -1.
    Disabled,
    /// Reset on every cache at this moment.
    Reset(Duration),
}

#[derive(Debug, Clone)]
enum Chaos {
    CutLink { length: Duration },
    Faults { side: usize, faults: Vec<RequestFault> },
    ExternalBringOnline { cache: usize },
    RestartOffline,
}

/// One seeded schedule.
#[derive(Debug, Clone)]
struct Schedule {
    seed: u64,
    personality: Personality,
    nodes: usize,
    entries: usize,
    transfer: TransferSpec,
    cache_faults: Vec<(usize, CacheFaults)>,
    chaos: Vec<(Duration, Chaos)>,
    writer: Option<Duration>,
    crash_after_saves: Option<u32>,
    /// Whether the offline site still has its backup to the active site offline (a fenced split
    /// brain) or brought it back online without synchronizing (a forgotten maintenance).
    fenced: bool,
    /// What happens between a stopped run and the operator's resume.
    between_runs: Option<Chaos>,
    instances: u32,
    offline_users: Option<OfflineUsers>,
    /// Whether the operator passes `--discard-offline-writes`.
    discard_offline_writes: bool,
    stats_fault: Option<(usize, StatsFault)>,
}

const CACHES: [&str; 4] = fake_ispn::KEYCLOAK_26_CACHES;

impl Schedule {
    fn from_seed(seed: u64) -> Self {
        let mut rng = Rng(seed);
        let personality = [Personality::V14, Personality::V15, Personality::V16][rng.below(3) as usize];
        let nodes = if rng.chance(40) { 2 } else { 1 };
        let transfer = TransferSpec {
            chunk_size: 4,
            entries_per_second: Some(20 + rng.below(200)),
            // Mostly quick; sometimes as long as a real 16.0.7 server keeps a push whose
            // receiver is gone in SENDING.
            error_after_link_loss: if rng.chance(30) { Duration::from_secs(106) } else { rng.millis(3000) },
        };
        let mut cache_faults = Vec::new();
        for cache in 0..CACHES.len() {
            if rng.chance(25) {
                let f = CacheFaults {
                    sticky_take_offline: if rng.chance(50) { 1 + rng.below(3) as u32 } else { 0 },
                    offline_propagation: if rng.chance(50) { rng.millis(1500) } else { Duration::ZERO },
                    push_error_after: if rng.chance(35) { Some(rng.below(30) as usize) } else { None },
                    push_stuck: rng.chance(20),
                    push_start_fails: rng.chance(20),
                    ..CacheFaults::default()
                };
                cache_faults.push((cache, f));
            }
        }
        let mut chaos = Vec::new();
        for _ in 0..rng.below(5) {
            let at = rng.millis(20_000);
            let event = match rng.below(10) {
                // Mostly a blip; sometimes longer than the plan's link_wait (20 s).
                0..=2 if rng.chance(15) => Chaos::CutLink { length: Duration::from_secs(25) + rng.millis(20_000) },
                0..=2 => Chaos::CutLink { length: rng.millis(8000) },
                3..=5 => {
                    let kinds = [RequestFault::Unavailable, RequestFault::Timeout, RequestFault::LostAnswer];
                    let faults = (0..1 + rng.below(4)).map(|_| kinds[rng.below(3) as usize]).collect();
                    Chaos::Faults { side: rng.below(2) as usize, faults }
                }
                6..=8 => Chaos::ExternalBringOnline { cache: rng.below(CACHES.len() as u64) as usize },
                _ => Chaos::RestartOffline,
            };
            chaos.push((at, event));
        }
        chaos.sort_by_key(|(at, _)| *at);
        Self {
            seed,
            personality,
            nodes,
            entries: 1 + rng.below(40) as usize,
            transfer,
            cache_faults,
            chaos,
            writer: rng.chance(50).then(|| Duration::from_millis(50 + rng.below(500))),
            crash_after_saves: rng.chance(40).then(|| 1 + rng.below(40) as u32),
            fenced: rng.chance(50),
            between_runs: match rng.below(4) {
                0 => Some(Chaos::RestartOffline),
                1 => Some(Chaos::ExternalBringOnline { cache: rng.below(CACHES.len() as u64) as usize }),
                _ => None,
            },
            instances: 1 + rng.below(4) as u32,
            offline_users: rng.chance(20).then(|| OfflineUsers {
                every: Duration::from_millis(50 + rng.below(700)),
                until: rng.chance(40).then(|| rng.millis(6000)),
            }),
            discard_offline_writes: rng.chance(30),
            stats_fault: rng.chance(15).then(|| {
                let fault = if rng.chance(50) { StatsFault::Disabled } else { StatsFault::Reset(rng.millis(5000)) };
                (rng.below(2) as usize, fault)
            }),
        }
    }
}

/// Runs one schedule; `Err` describes the violated invariant.
fn run_schedule(seed: u64, plant: Option<Plant>) -> Result<(), String> {
    let schedule = Schedule::from_seed(seed);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
    runtime.block_on(simulate(schedule, plant))
}

/// Passes the driver's events on, except announcements of waits when `silent`.
struct Sink<'a> {
    events: &'a Events,
    silent: bool,
}

impl sync_core::ports::EventSink for Sink<'_> {
    fn emit(&self, event: &Event) {
        if !(self.silent && matches!(event, Event::Waiting { .. } | Event::LinkDown { .. })) {
            self.events.emit(event);
        }
    }
}

async fn simulate(schedule: Schedule, plant: Option<Plant>) -> Result<(), String> {
    let spec = ClusterSpec::two_sites("site-a", "site-b")
        .personality(schedule.personality)
        .nodes(schedule.nodes)
        .transfer(schedule.transfer);
    let (fake, mut ports) = model(spec, schedule.instances);
    if plant == Some(Plant::SlowClock) {
        ports.clock = ports.clock.half_speed();
    }
    let fake = Arc::new(fake);
    let caches: Vec<CacheName> = CACHES.iter().map(|c| cache(c)).collect();

    // A split brain: both sites fenced the other off, then both took writes.
    let (a, b) = (fake.site("site-a"), fake.site("site-b"));
    for c in &caches {
        a.cache_site_action(c, &site("site-b"), SiteAction::TakeOffline).await.unwrap();
        b.cache_site_action(c, &site("site-a"), SiteAction::TakeOffline).await.unwrap();
        for i in 0..schedule.entries {
            a.put(c, &format!("shared-{i}"), &format!("a-{i}")).await.unwrap();
            b.put(c, &format!("shared-{i}"), &format!("b-{i}")).await.unwrap();
            if i % 2 == 0 {
                a.put(c, &format!("a-only-{i}"), "a").await.unwrap();
            } else {
                b.put(c, &format!("b-only-{i}"), "b").await.unwrap();
            }
        }
    }
    if !schedule.fenced {
        for c in &caches {
            b.cache_site_action(c, &site("site-a"), SiteAction::BringOnline).await.unwrap();
        }
    }
    let mut expected: BTreeMap<CacheName, BTreeMap<String, String>> = fake.snapshot("site-a").entries;
    for (index, faults) in &schedule.cache_faults {
        fake.world().set_cache_faults(0, &caches[*index], faults.clone());
        fake.world().set_cache_faults(1, &caches[*index], faults.clone());
    }
    for c in &caches {
        match plant {
            Some(Plant::LyingBackups) => {
                let lies = CacheFaults { nodes_read_offline: true, clear_ignores_skip_xsite: true, ..CacheFaults::default() };
                fake.world().set_cache_faults(1, c, lies);
            }
            Some(Plant::EarlyOk) => {
                fake.world().set_cache_faults(0, c, CacheFaults { push_reads_ok_early: true, ..CacheFaults::default() });
            }
            _ => {}
        }
    }

    // Statistics trouble, merged into whatever faults the schedule gave each cache.
    let faults_of = |side: usize, index: usize| -> CacheFaults {
        let mut faults =
            if side < 2 { schedule.cache_faults.iter().find(|(i, _)| *i == index).map(|(_, f)| f.clone()) } else { None }
                .unwrap_or_default();
        if matches!(schedule.stats_fault, Some((s, StatsFault::Disabled)) if s == side) {
            faults.statistics_disabled = true;
        }
        if plant == Some(Plant::PhantomWrites) && side == 1 {
            faults.phantom_writes_per_second = 5;
        }
        faults
    };
    if plant.is_none() || plant == Some(Plant::PhantomWrites) || plant == Some(Plant::GuardOverridden) {
        for side in 0..2 {
            for (index, c) in caches.iter().enumerate() {
                fake.world().set_cache_faults(side, c, faults_of(side, index));
            }
        }
    }
    let collected = Events::default();
    let stats_reset = match schedule.stats_fault {
        Some((side, StatsFault::Reset(at))) => {
            let (fake, caches) = (fake.clone(), caches.clone());
            Some(tokio::spawn(async move {
                tokio::time::sleep(at).await;
                for c in &caches {
                    fake.world().reset_stats(side, c);
                }
            }))
        }
        _ => None,
    };
    // The offline site's users: its Keycloak writes their logins while it is up.
    let offline_writes = Arc::new(std::sync::Mutex::new(Vec::<Duration>::new()));
    let offline_users = schedule.offline_users.map(|users| {
        let (fake, writes, keycloak, events) = (fake.clone(), offline_writes.clone(), ports.keycloak.clone(), collected.clone());
        tokio::spawn(async move {
            let offline = fake.site("site-b");
            let sessions = cache("authenticationSessions");
            for i in 0u64.. {
                tokio::time::sleep(users.every).await;
                let now = events.start().elapsed();
                if keycloak.instances().1 == 0 || users.until.is_some_and(|until| now >= until) {
                    break;
                }
                if offline.put(&sessions, &format!("user-{i}"), "login in progress").await.is_ok() {
                    writes.lock().unwrap().push(now);
                }
            }
        })
    });

    let chaos = {
        let fake = fake.clone();
        let events = schedule.chaos.clone();
        let caches = caches.clone();
        tokio::spawn(async move {
            let start = tokio::time::Instant::now();
            for (at, event) in events {
                tokio::time::sleep_until(start + at).await;
                match event {
                    Chaos::CutLink { length } => {
                        fake.cut_link("site-a", "site-b");
                        tokio::time::sleep(length).await;
                        fake.heal_link("site-a", "site-b");
                    }
                    Chaos::Faults { side, faults } => fake.world().inject_request_faults(side, faults),
                    Chaos::ExternalBringOnline { cache } => {
                        let _ =
                            fake.site("site-b").cache_site_action(&caches[cache], &site("site-a"), SiteAction::BringOnline).await;
                    }
                    Chaos::RestartOffline => {
                        fake.world().kill(1);
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        fake.world().restart(1);
                    }
                }
            }
        })
    };
    let written = Arc::new(std::sync::Mutex::new(Vec::<(CacheName, String, String)>::new()));
    let writer = schedule.writer.map(|every| {
        let (fake, written, caches) = (fake.clone(), written.clone(), caches.clone());
        tokio::spawn(async move {
            let active = fake.site("site-a");
            for i in 0u64.. {
                tokio::time::sleep(every).await;
                let c = &caches[(i % caches.len() as u64) as usize];
                let (key, value) = (format!("live-{i}"), format!("v-{i}"));
                if active.put(c, &key, &value).await.is_ok() {
                    written.lock().unwrap().push((c.clone(), key, value));
                }
            }
        })
    });

    let mut plan = plan();
    if plant == Some(Plant::EarlyOk) {
        plan.settings.verify = VerifyLevel::Sizes;
        plan.settings.drift_tolerance = u64::MAX / 4;
    }
    plan.settings.discard_offline_writes = schedule.discard_offline_writes || plant == Some(Plant::GuardOverridden);
    let events = Sink { events: &collected, silent: plant == Some(Plant::SilentWaits) };
    ports.journal.crash_after(schedule.crash_after_saves);
    let mut log = String::new();
    let mut outcome = Driver::new(&plan, &ports, &events).run(format!("sim-{}", schedule.seed)).await;
    let _ = writeln!(log, "first attempt: {}", outcome.summary());

    // The faults go away (the link heals, injected faults are dropped, the offline site's users
    // are sent elsewhere), the writer keeps going for a while, and the operator resumes until done.
    chaos.abort();
    for task in [offline_users, stats_reset].into_iter().flatten() {
        task.abort();
    }
    fake.heal_link("site-a", "site-b");
    if !fake.world().is_up(1) {
        fake.world().restart(1);
    }
    for i in 0..2 {
        fake.world().inject_request_faults(i, []);
        while fake.world().next_request_fault(i).is_some() {}
        for c in &caches {
            fake.world().set_cache_faults(i, c, CacheFaults::default());
        }
    }
    ports.journal.crash_after(None);
    // Chaos between runs only applies to a run that is not over: after the journal recorded
    // success, what happens to the sites is no longer this run's business.
    if !ports.journal.journal().is_some_and(|j| j.is_complete()) {
        match &schedule.between_runs {
            Some(Chaos::RestartOffline) => {
                fake.world().kill(1);
                fake.world().restart(1);
            }
            Some(Chaos::ExternalBringOnline { cache }) => {
                let _ = fake.site("site-b").cache_site_action(&caches[*cache], &site("site-a"), SiteAction::BringOnline).await;
            }
            _ => {}
        }
    }
    for attempt in 0..4 {
        match &outcome {
            RunOutcome::Succeeded(_) => break,
            RunOutcome::Failed(failure) => {
                if !matches!(failure, Failure::Journal(JournalError::Stopped)) {
                    let _ = writeln!(log, "stopped with a typed failure: {failure}");
                }
            }
            RunOutcome::Refused(refusal) => {
                let _ = writeln!(log, "refused: {refusal}");
            }
            RunOutcome::Interrupted => {}
        }
        let resumable = ports.journal.journal().is_some_and(|j| j.has_progress());
        outcome = if resumable {
            Driver::new(&plan, &ports, &events).resume().await
        } else {
            Driver::new(&plan, &ports, &events).run(format!("sim-{}-{attempt}", schedule.seed)).await
        };
        let _ = writeln!(log, "attempt {}: {}", attempt + 2, outcome.summary());
    }
    if let Some(writer) = writer {
        writer.abort();
    }
    // Let in-flight pushes (if any) settle before comparing.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let check = |ok: bool, what: &str| {
        if ok { Ok(()) } else { Err(format!("{what}\n{log}\nschedule: {schedule:#?}\nevents:\n{}", collected.timeline())) }
    };
    check(matches!(outcome, RunOutcome::Succeeded(_)), "6: resuming after the faults were removed did not succeed")?;

    for (c, key, value) in written.lock().unwrap().iter() {
        expected.entry(c.clone()).or_default().insert(key.clone(), value.clone());
    }
    let active = fake.snapshot("site-a").entries;
    let offline = fake.snapshot("site-b").entries;
    for (c, entries) in &expected {
        for (key, value) in entries {
            check(active[c].get(key) == Some(value), &format!("1: the active site lost {c}/{key}"))?;
        }
    }
    check(active == offline, "2: the offline site does not equal the active site")?;
    let clears = fake.world().clears().to_vec();
    check(clears.iter().all(|c| c.reached.iter().all(|s| s == "site-b")), "3: a clear reached the active site")?;

    let pushes: Vec<PushRecord> = fake.world().pushes().to_vec();
    for entry in ports.keycloak.log() {
        if let KeycloakLog::ScaledUp { at, .. } = entry {
            for c in &caches {
                let last_clear = clears.iter().filter(|r| &r.cache == c && r.at <= at).map(|r| r.at).max();
                let pushed = pushes.iter().any(|p| {
                    &p.cache == c
                        && p.from == "site-a"
                        && last_clear.is_none_or(|clear| p.started >= clear)
                        && p.ended.is_some_and(|(end, status)| end <= at && status == PushStatus::Ok)
                });
                check(pushed, &format!("4: Keycloak was scaled up before an OK push of {c}"))?;
            }
        }
    }
    check(
        ports.keycloak.instances() == (schedule.instances, schedule.instances),
        "5: Keycloak did not end at its original count",
    )?;
    let timed = collected.timed();
    let mut violations = silent_waits(&timed);
    violations.extend(outlived_deadlines(&plan, &timed));
    let offline_clears: Vec<Duration> =
        clears.iter().filter(|c| c.origin == "site-b").map(|c| c.at.duration_since(collected.start())).collect();
    violations.extend(direction_violations(
        &timed,
        &offline_clears,
        &offline_writes.lock().unwrap(),
        schedule.discard_offline_writes,
    ));
    check(violations.is_empty(), &violations.join("\n"))
}

/// Invariants 9 and 10: each direction judgement against what the offline site's users really
/// wrote during its window (`writes`, times as in `timed`).
fn direction_violations(timed: &[(Duration, Event)], clears: &[Duration], writes: &[Duration], overridden: bool) -> Vec<String> {
    let judgements: Vec<(Duration, &DirectionRecord)> =
        timed.iter().filter_map(|(at, e)| if let Event::Direction(record) = e { Some((*at, record)) } else { None }).collect();
    let window = |end: Duration, record: &DirectionRecord| (end.saturating_sub(Duration::from_millis(record.window_ms)), end);
    // Writes strictly inside the window were certainly counted; one at its very edge may or may
    // not have been (the reading and the write happen at the same virtual moment).
    let surely_seen = |(start, end): (Duration, Duration)| writes.iter().any(|w| *w > start && *w < end);
    let maybe_seen = |(start, end): (Duration, Duration)| writes.iter().any(|w| *w >= start && *w <= end);
    let mut violations = Vec::new();
    for clear in clears {
        match judgements.iter().rev().find(|(at, _)| at <= clear) {
            None => violations.push(format!("9: site-b was cleared at {clear:?} without a direction judgement before")),
            Some((at, record)) if surely_seen(window(*at, record)) && !overridden => violations.push(format!(
                "9: site-b was cleared at {clear:?} after a judgement at {at:?} whose window held its users' writes: {}",
                record.summary()
            )),
            Some(_) => {}
        }
    }
    for (at, record) in &judgements {
        if matches!(record.verdict, DirectionVerdict::Against { .. }) && !maybe_seen(window(*at, record)) {
            violations.push(format!(
                "10: the judgement at {at:?} went against the direction without a write by site-b's users: {}",
                record.summary()
            ));
        }
    }
    violations
}

/// Invariant 7, over every run in the timeline.
fn silent_waits(timed: &[(Duration, Event)]) -> Vec<String> {
    const SILENCE: Duration = Duration::from_secs(10);
    const PAUSE: Duration = Duration::from_secs(3);
    let mut violations = Vec::new();
    let mut running = false;
    for pair in timed.windows(2) {
        let ((t1, e1), (t2, _)) = (&pair[0], &pair[1]);
        match e1 {
            Event::RunStarted { .. } => running = true,
            Event::RunFinished { .. } => running = false,
            _ => {}
        }
        let gap = *t2 - *t1;
        if !running {
            continue;
        }
        if gap > SILENCE {
            violations.push(format!("7: {gap:?} passed at {t1:?} without an event"));
        } else if gap > PAUSE && !matches!(e1, Event::Waiting { .. } | Event::LinkDown { .. }) {
            violations.push(format!("7: a pause of {gap:?} at {t1:?} began with {e1:?}, which names nothing awaited"));
        }
    }
    violations
}

/// Invariant 8: each timed step, and each wait for a lost link, ends within its allowance (plus
/// a second for the poll that notices).
fn outlived_deadlines(plan: &sync_core::Plan, timed: &[(Duration, Event)]) -> Vec<String> {
    const SLACK: Duration = Duration::from_secs(1);
    let mut violations = Vec::new();
    let mut step: Option<(Duration, sync_core::Step)> = None;
    let mut link_lost: Option<Duration> = None;
    for (at, event) in timed {
        if let Some((since, current)) = step
            && matches!(event, Event::StepFinished { .. } | Event::StepStarted { .. } | Event::RunFinished { .. })
        {
            let timed_step = !matches!(
                current,
                sync_core::Step::Preflight | sync_core::Step::ScaleDown | sync_core::Step::ScaleUp | sync_core::Step::Report
            );
            if timed_step && *at - since > plan.settings.step_deadline + SLACK {
                violations.push(format!("8: step {current} ran {:?}, past step_deadline", *at - since));
            }
            step = None;
        }
        if let Some(since) = link_lost
            && matches!(event, Event::LinkUp { .. } | Event::RunFinished { .. })
        {
            if *at - since > plan.settings.link_wait + SLACK {
                violations.push(format!("8: a lost link was waited for {:?}, past link_wait", *at - since));
            }
            link_lost = None;
        }
        match event {
            Event::StepStarted { step: s, .. } => step = Some((*at, *s)),
            Event::LinkDown { .. } => link_lost = link_lost.or(Some(*at)),
            _ => {}
        }
    }
    violations
}

fn cases() -> u32 {
    std::env::var("SITE_SYNC_SIM_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x5173_c0de),
        failure_persistence: None,
        max_shrink_iters: 0,
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_fault_schedule_keeps_the_invariants(seed in any::<u64>()) {
        if let Err(violation) = run_schedule(seed, None) {
            prop_assert!(false, "{violation}\nreplay: SITE_SYNC_SIM_SEED={seed} cargo test -p sync-core --test it sim::replay -- --nocapture");
        }
    }
}

/// Replays one schedule: `SITE_SYNC_SIM_SEED=<seed>` (default: a schedule with every kind of fault).
#[test]
fn replay() {
    let seed = std::env::var("SITE_SYNC_SIM_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(7);
    if let Err(violation) = run_schedule(seed, None) {
        panic!("{violation}");
    }
}

/// The first seed below `budget` whose schedule violates one of `invariants` with `plant` in.
fn caught_within(plant: Plant, invariants: &[u8], budget: u64) -> Option<u64> {
    (0..budget).find(|seed| {
        run_schedule(*seed, Some(plant))
            .is_err_and(|violation| invariants.iter().any(|n| violation.lines().any(|l| l.starts_with(&format!("{n}: ")))))
    })
}

#[test]
fn a_clear_that_reaches_the_active_site_is_caught() {
    let caught = caught_within(Plant::LyingBackups, &[1, 2, 3], 2000);
    assert!(caught.is_some(), "the simulation did not notice a clear that emptied the active site");
}

#[test]
fn scaling_keycloak_up_before_the_push_is_caught() {
    let caught = caught_within(Plant::EarlyOk, &[4], 200);
    assert!(caught.is_some(), "the simulation did not notice Keycloak starting before the push read OK");
}

#[test]
fn waits_nobody_announces_are_caught() {
    let caught = caught_within(Plant::SilentWaits, &[7], 200);
    assert!(caught.is_some(), "the simulation did not notice waits without announcements");
}

#[test]
fn a_clear_against_the_evidence_is_caught() {
    let caught = caught_within(Plant::GuardOverridden, &[9], 400);
    assert!(caught.is_some(), "the simulation did not notice a clear of a site its users were writing to");
}

#[test]
fn a_refusal_without_writes_on_the_offline_site_is_caught() {
    let caught = caught_within(Plant::PhantomWrites, &[10], 50);
    assert!(caught.is_some(), "the simulation did not notice a refusal of the right direction");
}

#[test]
fn a_run_that_outlives_its_deadlines_is_caught() {
    let caught = caught_within(Plant::SlowClock, &[8], 2000);
    assert!(caught.is_some(), "the simulation did not notice a run waiting past its deadlines");
}
