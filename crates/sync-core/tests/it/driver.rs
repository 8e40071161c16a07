use std::sync::Arc;
use std::time::Duration;

use fake_ispn::{ClusterSpec, KEYCLOAK_26_CACHES};
use ispn_xsite::{ClearScope, SiteAction, SiteApi};
use sync_core::{Driver, RunOutcome, Side, Step};

use crate::support::*;

/// Split brain: each site took the other offline, then both took writes.
async fn split_brain(fake: &fake_ispn::FakeCluster) {
    let (a, b) = (fake.site("site-a"), fake.site("site-b"));
    for c in KEYCLOAK_26_CACHES {
        let c = cache(c);
        a.cache_site_action(&c, &site("site-b"), SiteAction::TakeOffline).await.unwrap();
        b.cache_site_action(&c, &site("site-a"), SiteAction::TakeOffline).await.unwrap();
        for i in 0..20 {
            a.put(&c, &format!("shared-{i}"), "from-a").await.unwrap();
            b.put(&c, &format!("shared-{i}"), "from-b").await.unwrap();
            a.put(&c, &format!("a-only-{i}"), "a").await.unwrap();
            b.put(&c, &format!("b-only-{i}"), "b").await.unwrap();
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_split_brain_is_healed_and_keycloak_restored() {
    let (fake, ports) = model(ClusterSpec::two_sites("site-a", "site-b"), 3);
    split_brain(&fake).await;
    let before_a = fake.snapshot("site-a").entries;
    let plan = plan();
    let events = Events::default();
    let outcome = Driver::new(&plan, &ports, &events).run("run-1".to_owned()).await;
    let RunOutcome::Succeeded(report) = outcome else { panic!("{outcome:?}\n{:#?}", events.all()) };
    assert_eq!(report.caches.len(), 4);
    assert_eq!(report.keycloak_instances, Some(3));
    let (a, b) = (fake.snapshot("site-a"), fake.snapshot("site-b"));
    assert_eq!(a.entries, before_a, "the active site is unchanged");
    assert_eq!(b.entries, a.entries, "the offline site equals the active site");
    assert_eq!(ports.keycloak.instances(), (3, 3));
    assert!(fake.world().clears().iter().all(|c| c.reached.len() == 1 && c.origin == "site-b"));
    let journal = ports.journal.journal().unwrap();
    assert_eq!(journal.step, Step::Report);
    assert!(journal.is_complete());
    // Both directions replicate again.
    let a_site = fake.site("site-a");
    a_site.put(&cache("work"), "after", "x").await.unwrap();
    assert_eq!(fake.site("site-b").get(&cache("work"), "after").await.unwrap().as_deref(), Some("x"));
    let _ = ClearScope::LocalOnly;
}

use sync_core::ports::{Clock, EventSink, KeycloakError, MemoryLock};
use sync_core::{Event, Failure, Refusal};

fn fresh(instances: u32) -> (fake_ispn::FakeCluster, ModelPorts) {
    model(ClusterSpec::two_sites("site-a", "site-b"), instances)
}

/// A split pair whose `site` has `faults` on `work`.
async fn split_pair_with_faults_on_work(site: usize, faults: fake_ispn::CacheFaults) -> (fake_ispn::FakeCluster, ModelPorts) {
    let (fake, ports) = fresh(2);
    split_brain(&fake).await;
    fake.world().set_cache_faults(site, &cache("work"), faults);
    (fake, ports)
}

#[tokio::test(start_paused = true)]
async fn a_held_lock_refuses_the_run_and_changes_nothing() {
    let (fake, mut ports) = fresh(2);
    ports.lock = MemoryLock::held_by("site-sync/other-run@host");
    let before = (fake.snapshot("site-a"), fake.snapshot("site-b"));
    let outcome = Driver::new(&plan(), &ports, &Events::default()).run("run-2".to_owned()).await;
    assert!(matches!(outcome, RunOutcome::Refused(Refusal::LockHeld(_))), "{outcome:?}");
    assert_eq!((fake.snapshot("site-a"), fake.snapshot("site-b")), before);
    assert_eq!(ports.keycloak.instances(), (2, 2));
}

#[tokio::test(start_paused = true)]
async fn a_keycloak_rollout_refuses_the_run_before_anything_changes() {
    let (fake, mut ports) = fresh(2);
    ports.keycloak = SimKeycloak::with_instances(2).rolling_update();
    let before = fake.snapshot("site-b");
    let outcome = Driver::new(&plan(), &ports, &Events::default()).run("r".to_owned()).await;
    assert!(matches!(outcome, RunOutcome::Refused(Refusal::KeycloakRollingUpdate { .. })), "{outcome:?}");
    assert_eq!(fake.snapshot("site-b"), before);
    assert!(ports.keycloak.log().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_crash_after_any_journal_write_is_resumed_to_the_same_end() {
    let mut saves = 1;
    loop {
        let (fake, ports) = fresh(3);
        split_brain(&fake).await;
        let expected = fake.snapshot("site-a").entries;
        ports.journal.crash_after(Some(saves));
        let first = Driver::new(&plan(), &ports, &Events::default()).run("crashy".to_owned()).await;
        if matches!(first, RunOutcome::Succeeded(_)) {
            assert!(saves > 10, "the run wrote too few journal entries to crash in");
            // Every write was crashed in, the last one (the run's end) included: a run whose
            // final write failed must not have passed as a success.
            assert_eq!(ports.journal.saves(), saves - 1, "a crash at the last journal write went unseen");
            break;
        }
        assert!(matches!(first, RunOutcome::Failed(Failure::Journal(_))), "{first:?}");
        ports.journal.crash_after(None);
        let progressed = ports.journal.journal().is_some_and(|j| j.has_progress() && !j.is_complete());
        let outcome = if progressed {
            // A new run must not start over a half-done one.
            let again = Driver::new(&plan(), &ports, &Events::default()).run("second".to_owned()).await;
            assert!(matches!(again, RunOutcome::Refused(Refusal::UnfinishedRun { .. })), "after crash {saves}: {again:?}");
            let events = Events::default();
            let resumed = Driver::new(&plan(), &ports, &events).resume().await;
            let first_step = events.all().into_iter().find_map(|e| match e {
                Event::StepStarted { step, .. } => Some(step),
                _ => None,
            });
            assert_eq!(first_step, Some(Step::Preflight), "a resume re-checks both sites first (crash after save {saves})");
            resumed
        } else {
            Driver::new(&plan(), &ports, &Events::default()).run("second".to_owned()).await
        };
        assert!(matches!(outcome, RunOutcome::Succeeded(_)), "crash after save {saves}: {outcome:?}");
        assert_eq!(fake.snapshot("site-a").entries, expected, "crash after save {saves}");
        assert_eq!(fake.snapshot("site-b").entries, expected, "crash after save {saves}");
        assert_eq!(ports.keycloak.instances(), (3, 3), "crash after save {saves}");
        saves += 1;
    }
}

#[tokio::test(start_paused = true)]
async fn resume_refuses_a_journal_of_another_pair_and_an_empty_store() {
    let (_fake, ports) = fresh(1);
    let outcome = Driver::new(&plan(), &ports, &Events::default()).resume().await;
    assert!(matches!(outcome, RunOutcome::Refused(Refusal::NothingToResume { .. })), "{outcome:?}");
    let mut other = plan();
    other.active.name = site("site-x");
    let journal = sync_core::Journal::new("x".to_owned(), &other, 0);
    sync_core::ports::JournalStore::save(&ports.journal, &journal).await.unwrap();
    let outcome = Driver::new(&plan(), &ports, &Events::default()).resume().await;
    assert!(matches!(outcome, RunOutcome::Refused(Refusal::JournalOfAnotherPair { .. })), "{outcome:?}");
}

#[tokio::test(start_paused = true)]
async fn a_stop_request_ends_at_a_safe_point_and_resume_finishes() {
    let (fake, ports) = fresh(2);
    split_brain(&fake).await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let events = Events::default();
    let plan = plan();
    let driver = Driver::new(&plan, &ports, &events).with_stop(stopped);
    let run = driver.run("interrupted".to_owned());
    // Past the preflight (with the direction guard's two-second window) and the scale-down.
    let interrupt = async {
        tokio::time::sleep(Duration::from_millis(4500)).await;
        stop.send(true).unwrap();
    };
    let (outcome, ()) = tokio::join!(run, interrupt);
    assert_eq!(outcome, RunOutcome::Interrupted);
    let journal = ports.journal.journal().unwrap();
    assert_eq!(journal.finished, Some(sync_core::Finished::Interrupted));
    assert!(journal.step > Step::ScaleDown);
    let outcome = Driver::new(&plan, &ports, &events).resume().await;
    assert!(matches!(outcome, RunOutcome::Succeeded(_)), "{outcome:?}");
    assert_eq!(fake.snapshot("site-b").entries, fake.snapshot("site-a").entries);
}

#[tokio::test(start_paused = true)]
async fn a_keycloak_failure_stops_the_run_with_its_reason() {
    let (fake, ports) = fresh(2);
    split_brain(&fake).await;
    ports.keycloak.fail_next(KeycloakError::Forbidden { what: "patch keycloaks/scale in namespace kc".to_owned() });
    let outcome = Driver::new(&plan(), &ports, &Events::default()).run("kc".to_owned()).await;
    let RunOutcome::Failed(Failure::Keycloak(e)) = &outcome else { panic!("{outcome:?}") };
    assert!(e.to_string().contains("patch keycloaks/scale"));
    assert!(fake.world().clears().is_empty(), "nothing was cleared before Keycloak was down");
}

#[tokio::test(start_paused = true)]
async fn events_tell_the_story_in_order() {
    let (fake, ports) = fresh(1);
    split_brain(&fake).await;
    let events = Events::default();
    Driver::new(&plan(), &ports, &events).run("story".to_owned()).await;
    let steps: Vec<Step> = events
        .all()
        .into_iter()
        .filter_map(|e| if let Event::StepFinished { step, .. } = e { Some(step) } else { None })
        .collect();
    assert_eq!(steps, Step::ALL.to_vec());
    assert!(events.all().iter().any(|e| matches!(e, Event::PushProgress { .. })));
    assert!(matches!(events.all().last(), Some(Event::RunFinished { outcome }) if matches!(**outcome, RunOutcome::Succeeded(_))));
}

/// A pair whose pushes take about five (virtual) seconds, split brained.
async fn slow_pair() -> (Arc<fake_ispn::FakeCluster>, ModelPorts) {
    paced_pair(4, 8).await
}

/// A split-brained pair whose pushes send `chunk_size` entries at `per_second` entries a second.
async fn paced_pair(chunk_size: usize, per_second: u64) -> (Arc<fake_ispn::FakeCluster>, ModelPorts) {
    let spec = ClusterSpec::two_sites("site-a", "site-b").transfer(fake_ispn::TransferSpec {
        chunk_size,
        entries_per_second: Some(per_second),
        ..fake_ispn::TransferSpec::default()
    });
    let (fake, ports) = model(spec, 2);
    split_brain(&fake).await;
    (Arc::new(fake), ports)
}

/// When the first event matching `what` came, after the events started.
fn first(events: &Events, what: impl Fn(&Event) -> bool) -> Option<Duration> {
    events.timed().into_iter().find(|(_, e)| what(e)).map(|(at, _)| at)
}

#[tokio::test(start_paused = true)]
async fn a_link_lost_mid_push_is_announced_at_once_and_so_is_its_return() {
    let (fake, ports) = slow_pair().await;
    let events = Events::default();
    let (cut, heal) = (Duration::from_secs(4), Duration::from_secs(19));
    let chaos = {
        let fake = fake.clone();
        tokio::spawn(async move {
            tokio::time::sleep(cut).await;
            fake.cut_link("site-a", "site-b");
            tokio::time::sleep(heal - cut).await;
            fake.heal_link("site-a", "site-b");
        })
    };
    let outcome = Driver::new(&plan(), &ports, &events).run("outage".to_owned()).await;
    chaos.await.unwrap();
    assert!(matches!(outcome, RunOutcome::Succeeded(_)), "{outcome:?}\n{}", events.timeline());

    let down = first(&events, |e| matches!(e, Event::LinkDown { .. })).expect("the lost link was announced");
    assert!(down >= cut && down - cut <= Duration::from_secs(1), "announced {down:?}, the link went at {cut:?}");
    let Some(Event::LinkDown { loss, until_ms }) = events.all().into_iter().find(|e| matches!(e, Event::LinkDown { .. })) else {
        unreachable!()
    };
    assert_eq!(loss.to_string(), "site-a and site-b cannot see each other across the bridge");
    assert_eq!(until_ms - loss.since_ms, plan().settings.link_wait.as_millis() as u64);
    let up = first(&events, |e| matches!(e, Event::LinkUp { .. })).expect("the link's return was announced");
    assert!(up >= heal && up - heal <= Duration::from_secs(1), "announced {up:?}, the link came back at {heal:?}");
    let Some(Event::LinkUp { since_ms, at_ms }) = events.all().into_iter().find(|e| matches!(e, Event::LinkUp { .. })) else {
        unreachable!()
    };
    assert!((14_000..=16_000).contains(&(at_ms - since_ms)), "down for {} ms", at_ms - since_ms);
    // While it was down, the wait was announced again and again, with its bound.
    let waits = events
        .timed()
        .into_iter()
        .filter(|(at, e)| *at > down && *at < up && matches!(e, Event::Waiting { what, .. } if what.contains("cross-site link")))
        .count();
    assert!(waits >= 2, "{}", events.timeline());
    // The pushes the outage cancelled start again, each saying why.
    let repushes: Vec<String> = events
        .all()
        .into_iter()
        .filter_map(|e| match e {
            Event::Retry { cache: Some(_), reason, .. } => Some(reason),
            _ => None,
        })
        .collect();
    assert!(!repushes.is_empty(), "{}", events.timeline());
    assert!(repushes.iter().all(|r| r == "previous push was cancelled or cleared"), "{repushes:?}");
    assert_eq!(fake.snapshot("site-a").entries, fake.snapshot("site-b").entries);
}

#[tokio::test(start_paused = true)]
async fn a_link_that_stays_lost_ends_the_run_within_link_wait_and_resume_finishes_it() {
    let (fake, ports) = slow_pair().await;
    let events = Events::default();
    let cut = Duration::from_secs(4);
    let chaos = {
        let fake = fake.clone();
        tokio::spawn(async move {
            tokio::time::sleep(cut).await;
            fake.cut_link("site-a", "site-b");
        })
    };
    let outcome = Driver::new(&plan(), &ports, &events).run("outage".to_owned()).await;
    chaos.await.unwrap();
    let RunOutcome::Failed(failure @ Failure::LinkLost { .. }) = &outcome else { panic!("{outcome:?}\n{}", events.timeline()) };
    let message = failure.to_string();
    assert!(message.contains("site-a and site-b cannot see each other across the bridge since"), "{message}");
    assert!(message.contains("link_wait (20.00 s)") && message.contains("`site-sync resume`"), "{message}");
    let ended = first(&events, |e| matches!(e, Event::RunFinished { .. })).unwrap();
    let link_wait = plan().settings.link_wait;
    assert!(ended >= cut + link_wait && ended <= cut + link_wait + Duration::from_secs(2), "ended at {ended:?}");
    let journal = ports.journal.journal().unwrap();
    assert!(journal.has_progress() && !journal.is_complete() && journal.step >= Step::PushState, "{journal:?}");

    fake.heal_link("site-a", "site-b");
    let resumed = Driver::new(&plan(), &ports, &Events::default()).resume().await;
    assert!(matches!(resumed, RunOutcome::Succeeded(_)), "{resumed:?}");
    assert_eq!(fake.snapshot("site-a").entries, fake.snapshot("site-b").entries);
    assert_eq!(ports.keycloak.instances(), (2, 2));
}

/// Passes events on to `events`, and runs `arm` the first time the driver announces `action`
/// (after `decide` chose it on what it read, before the driver sends it): a fault planted
/// exactly in the window the driver's last re-read exists for.
fn arm_at<'a>(events: &'a Events, action: &'static str, arm: impl Fn() + Send + Sync + 'a) -> impl EventSink + 'a {
    let armed = std::sync::atomic::AtomicBool::new(false);
    move |event: &Event| {
        if matches!(event, Event::Action { action: a, .. } if a == action)
            && !armed.swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            arm();
        }
        events.emit(event);
    }
}

#[tokio::test(start_paused = true)]
async fn the_re_read_before_a_clear_alone_keeps_the_active_site_when_a_backup_comes_online_in_between() {
    let (fake, ports) = fresh(2);
    split_brain(&fake).await;
    let before = fake.snapshot("site-a").entries;
    let work = cache("work");
    // The server ignores SKIP_XSITE_BACKUP, so the flag cannot help: only the driver's re-read
    // stands between the clear and the active site when someone brings the backup online right
    // after the read that `decide` acted on.
    fake.world().set_cache_faults(1, &work, fake_ispn::CacheFaults { clear_ignores_skip_xsite: true, ..Default::default() });
    let arm = || {
        let _ = fake.world().cache_site_action(1, &work, "site-a", SiteAction::BringOnline);
    };
    let events = Events::default();
    let sink = arm_at(&events, "clear", arm);
    let outcome = Driver::new(&plan(), &ports, &sink).run("window".to_owned()).await;
    assert!(matches!(outcome, RunOutcome::Succeeded(_)), "{outcome:?}\n{}", events.timeline());
    assert_eq!(fake.snapshot("site-a").entries, before, "the active site lost data");
    assert!(fake.world().clears().iter().all(|c| c.reached == ["site-b"]), "{:?}", fake.world().clears());
    let refused = events
        .all()
        .into_iter()
        .any(|e| matches!(&e, Event::InterlockRefused { step: Step::ClearCaches, cache: Some(c), .. } if *c == work));
    assert!(refused, "the re-read did not refuse the clear: {}", events.timeline());
}

#[tokio::test(start_paused = true)]
async fn every_clear_the_driver_sends_carries_skip_xsite_backup() {
    let (fake, ports) = fresh(1);
    split_brain(&fake).await;
    let outcome = Driver::new(&plan(), &ports, &Events::default()).run("flag".to_owned()).await;
    assert!(matches!(outcome, RunOutcome::Succeeded(_)), "{outcome:?}");
    let clears = fake.world().clears().to_vec();
    assert_eq!(clears.len(), 4);
    assert!(clears.iter().all(|c| c.skip_xsite), "a clear went out without SKIP_XSITE_BACKUP: {clears:?}");
}

#[tokio::test(start_paused = true)]
async fn the_re_read_before_a_push_refuses_an_endpoint_that_started_answering_as_the_other_site() {
    let (fake, ports) = fresh(2);
    split_brain(&fake).await;
    // After the read `decide` acted on, the active site's endpoint answers as site-b.
    let arm = || fake.world().redirect(0, 1);
    let events = Events::default();
    let sink = arm_at(&events, "start-push-state", arm);
    let outcome = Driver::new(&plan(), &ports, &sink).run("flip".to_owned()).await;
    let RunOutcome::Refused(Refusal::PushInterlock { expected, found }) = &outcome else {
        panic!("{outcome:?}\n{}", events.timeline())
    };
    assert_eq!((expected.as_str(), found.as_deref()), ("site-a", Some("site-b")));
    let sent: Vec<String> =
        fake.world().requests().iter().filter(|r| r.what.contains("start-push-state")).map(|r| r.what.clone()).collect();
    assert!(sent.is_empty(), "a push was sent to an endpoint that answers as site-b: {sent:?}");
    assert_eq!(ports.keycloak.instances().0, 0, "Keycloak stays down: nothing was pushed");
}

/// Times of the events `what` matches.
fn times(events: &Events, what: impl Fn(&Event) -> bool) -> Vec<Duration> {
    events.timed().into_iter().filter(|(_, e)| what(e)).map(|(at, _)| at).collect()
}

/// The time between each two consecutive events `what` matches.
fn gaps(events: &Events, what: impl Fn(&Event) -> bool) -> Vec<Duration> {
    times(events, what).windows(2).map(|w| w[1] - w[0]).collect()
}

/// A run on a split pair whose offline site answers its next requests with `faults`, from the
/// moment the driver announces `action`: the pair, the events, the clock (ms) when the events
/// began, and the outcome.
async fn run_with_faults_from(
    action: &'static str,
    faults: impl Iterator<Item = fake_ispn::RequestFault> + Clone + Send + Sync,
    run_id: &str,
) -> (fake_ispn::FakeCluster, Events, u64, RunOutcome) {
    let (fake, ports) = fresh(2);
    split_brain(&fake).await;
    let arm = || fake.world().inject_request_faults(1, faults.clone());
    let clock_at_start = ports.clock.now_ms();
    let events = Events::default();
    let sink = arm_at(&events, action, arm);
    // Bounded in virtual time, so that a run that never ends fails its test instead of hanging it.
    let plan = plan();
    let driver = Driver::new(&plan, &ports, &sink);
    let outcome = tokio::time::timeout(Duration::from_secs(7200), driver.run(run_id.to_owned())).await.expect("the run ended");
    drop(driver);
    drop(sink);
    (fake, events, clock_at_start, outcome)
}

/// The attempt numbers of the retried reads of the sites.
fn read_retries(events: &Events) -> Vec<u32> {
    events
        .all()
        .into_iter()
        .filter_map(|e| match e {
            Event::Retry { cache: None, attempt, .. } => Some(attempt),
            _ => None,
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_site_that_keeps_failing_is_asked_again_less_and_less_often() {
    // From the first clear on, the offline site answers 503 to its next forty requests.
    let faults = std::iter::repeat_n(fake_ispn::RequestFault::Unavailable, 40);
    let (_fake, events, _, outcome) = run_with_faults_from("clear", faults, "backoff").await;
    assert!(matches!(outcome, RunOutcome::Succeeded(_)), "{outcome:?}\n{}", events.timeline());
    let gaps = gaps(&events, |e| matches!(e, Event::Retry { cache: None, .. }));
    let poll = plan().settings.poll_interval;
    assert!(gaps.len() >= 4, "{}", events.timeline());
    assert!(gaps.iter().all(|g| *g >= poll), "a retry came sooner than a poll interval: {gaps:?}");
    assert!(gaps.windows(2).all(|w| w[1] >= w[0]), "the pauses did not grow: {gaps:?}");
    assert!(*gaps.last().unwrap() >= poll * 8, "the pauses did not grow: {gaps:?}");
    assert!(gaps.iter().all(|g| *g <= Duration::from_secs(10)), "a pause grew past its cap: {gaps:?}");
    let attempts = read_retries(&events);
    assert!(attempts.windows(2).all(|w| w[1] == w[0] + 1) && attempts[0] >= 2, "retries are numbered from 2 on: {attempts:?}");
}

#[tokio::test(start_paused = true)]
async fn credentials_refused_mid_run_end_the_run_at_once_as_a_failure() {
    // The offline site's password is rotated while the pushes run: a 401 is not something to
    // wait out, and the run has changed things, so it fails (exit 1 and `resume`), it does not
    // refuse.
    let faults = std::iter::repeat_n(fake_ispn::RequestFault::Unauthorized, 1_000);
    let (_fake, events, _, outcome) = run_with_faults_from("start-push-state", faults, "rotated").await;
    assert!(
        matches!(&outcome, RunOutcome::Failed(Failure::Site { side: Side::Offline, message }) if message.contains("401")),
        "{outcome:?}\n{}",
        events.timeline()
    );
    assert!(
        !events.all().iter().any(|e| matches!(e, Event::Retry { .. })),
        "a refused password was retried:\n{}",
        events.timeline()
    );
    let armed = first(&events, |e| matches!(e, Event::Action { action, .. } if action == "start-push-state")).unwrap();
    let ended = first(&events, |e| matches!(e, Event::RunFinished { .. })).unwrap();
    assert!(ended - armed < Duration::from_secs(1), "the run went on for {:?} after the 401", ended - armed);
}

#[tokio::test(start_paused = true)]
async fn reads_that_time_out_mid_run_are_asked_again() {
    // A timeout is not a refusal: once the pushes start, the offline site's next request (a read)
    // gets no answer in time; it is asked again, as the run's second attempt at reading.
    let faults = std::iter::once(fake_ispn::RequestFault::Timeout);
    let (fake, events, _, outcome) = run_with_faults_from("start-push-state", faults, "timeouts").await;
    assert!(matches!(outcome, RunOutcome::Succeeded(_)), "{outcome:?}\n{}", events.timeline());
    assert_eq!(read_retries(&events), vec![2], "{}", events.timeline());
    assert_eq!(fake.snapshot("site-b").entries, fake.snapshot("site-a").entries);
}

#[tokio::test(start_paused = true)]
async fn the_pause_after_a_failed_action_counts_that_failure() {
    // One bring-online answered 503: the pause before the next reading is the first step of the
    // backoff (twice the poll interval), not a plain poll.
    let faults = std::iter::once(fake_ispn::RequestFault::Unavailable);
    let (_fake, events, clock_at_start, outcome) = run_with_faults_from("bring-online", faults, "failed-action").await;
    assert!(matches!(outcome, RunOutcome::Succeeded(_)), "{outcome:?}\n{}", events.timeline());
    let pauses: Vec<u64> = events
        .timed()
        .into_iter()
        .filter_map(|(at, e)| match e {
            Event::Waiting { why, until_ms, .. } if why.starts_with("an action did not do its job") => {
                Some(until_ms - (clock_at_start + at.as_millis() as u64))
            }
            _ => None,
        })
        .collect();
    let poll = plan().settings.poll_interval.as_millis() as u64;
    assert_eq!(pauses, vec![2 * poll], "{}", events.timeline());
}

#[tokio::test(start_paused = true)]
async fn preflight_tolerates_a_read_failing_twice_and_refuses_a_site_that_keeps_failing() {
    let unavailable = |n| std::iter::repeat_n(fake_ispn::RequestFault::Unavailable, n);
    let (fake, ports) = fresh(2);
    split_brain(&fake).await;
    fake.world().inject_request_faults(1, unavailable(2));
    let outcome = Driver::new(&plan(), &ports, &Events::default()).run("twice".to_owned()).await;
    assert!(matches!(outcome, RunOutcome::Succeeded(_)), "{outcome:?}");

    let (fake, ports) = fresh(2);
    split_brain(&fake).await;
    let before = (fake.snapshot("site-a"), fake.snapshot("site-b"));
    fake.world().inject_request_faults(1, unavailable(1_000));
    let outcome = Driver::new(&plan(), &ports, &Events::default()).run("always".to_owned()).await;
    assert!(matches!(outcome, RunOutcome::Refused(Refusal::SiteUnusable { side: Side::Offline, .. })), "{outcome:?}");
    assert_eq!((fake.snapshot("site-a"), fake.snapshot("site-b")), before, "nothing changed");
}

#[tokio::test(start_paused = true)]
async fn a_site_that_fails_for_good_mid_run_ends_the_run_at_the_step_deadline() {
    // From Keycloak's scale-up on, the offline site answers nothing but 503: the report step,
    // which has no deadline of its own in `decide`, must still end at `step_deadline`.
    let faults = std::iter::repeat_n(fake_ispn::RequestFault::Unavailable, 100_000);
    let (_fake, events, _, outcome) = run_with_faults_from("scale-up", faults, "for-good").await;
    assert!(matches!(outcome, RunOutcome::Failed(Failure::Site { side: Side::Offline, .. })), "{outcome:?}");
    let armed = first(&events, |e| matches!(e, Event::StepStarted { step: Step::Report, .. })).unwrap();
    let ended = first(&events, |e| matches!(e, Event::RunFinished { .. })).unwrap();
    let deadline = plan().settings.step_deadline;
    // The last pause is cut at the deadline: the run ends there, not a backoff later.
    assert!(ended - armed >= deadline && ended - armed <= deadline + Duration::from_secs(1), "ended {:?} after", ended - armed);
}

#[tokio::test(start_paused = true)]
async fn reads_that_each_take_seven_seconds_to_fail_end_the_run_past_the_step_deadline() {
    // As in real time, where a failing read takes its timeout: from Keycloak's scale-up on, every
    // read of the offline site times out after 7 s, so no reading ends exactly at the step's
    // deadline. The run must still end right after it, not ask a failing site forever.
    let faults = std::iter::repeat_n(fake_ispn::RequestFault::TimeoutAfter(Duration::from_secs(7)), 100_000);
    let (_fake, events, _, outcome) = run_with_faults_from("scale-up", faults, "slow-failures").await;
    assert!(matches!(outcome, RunOutcome::Failed(Failure::Site { side: Side::Offline, .. })), "{outcome:?}");
    let armed = first(&events, |e| matches!(e, Event::StepStarted { step: Step::Report, .. })).unwrap();
    let ended = first(&events, |e| matches!(e, Event::RunFinished { .. })).unwrap();
    let deadline = plan().settings.step_deadline;
    assert!(ended - armed > deadline && ended - armed <= deadline + Duration::from_secs(8), "ended {:?} after", ended - armed);
}

#[tokio::test(start_paused = true)]
async fn a_slow_batch_of_actions_is_announced_until_a_request_timeout_per_call() {
    // The first bring-online takes 5 s to time out: the batch of one bring-online per cache, sent
    // one at a time, is announced until a request timeout for each call, from the batch's start.
    let faults = std::iter::once(fake_ispn::RequestFault::TimeoutAfter(Duration::from_secs(5)));
    let (_fake, events, clock_at_start, outcome) = run_with_faults_from("bring-online", faults, "slow-action").await;
    assert!(matches!(outcome, RunOutcome::Succeeded(_)), "{outcome:?}\n{}", events.timeline());
    let started = first(&events, |e| matches!(e, Event::Action { action, .. } if action == "bring-online")).unwrap();
    let calls = KEYCLOAK_26_CACHES.len();
    let announced: Vec<(String, u64)> = events
        .all()
        .into_iter()
        .filter_map(|e| match e {
            Event::Waiting { what, until_ms, .. } if what.starts_with("answers to") => Some((what, until_ms)),
            _ => None,
        })
        .collect();
    let expected =
        clock_at_start + started.as_millis() as u64 + (plan().settings.request_timeout * calls as u32).as_millis() as u64;
    assert_eq!(announced.first(), Some(&(format!("answers to {calls} bring-online call(s)"), expected)), "{}", events.timeline());
}

#[tokio::test(start_paused = true)]
async fn a_wait_that_goes_on_is_announced_again_every_five_seconds_and_no_more_often() {
    // 40 entries per cache at 2 per second: a push of about 20 s.
    let (fake, ports) = paced_pair(2, 2).await;
    let events = Events::default();
    let outcome = Driver::new(&plan(), &ports, &events).run("slow".to_owned()).await;
    assert!(matches!(outcome, RunOutcome::Succeeded(_)), "{outcome:?}\n{}", events.timeline());
    let gaps = gaps(&events, |e| matches!(e, Event::Waiting { what, .. } if what.starts_with("the pushes of")));
    assert!(gaps.len() >= 2, "{}", events.timeline());
    let poll = plan().settings.poll_interval;
    for gap in &gaps {
        assert!(*gap >= Duration::from_secs(5) && *gap < Duration::from_secs(5) + poll, "{gaps:?}\n{}", events.timeline());
    }
    assert_eq!(fake.snapshot("site-a").entries, fake.snapshot("site-b").entries);
}

#[tokio::test(start_paused = true)]
async fn a_slow_comparison_is_announced_until_the_verify_steps_deadline() {
    // The offline site takes 12 s to list `work`: the verification says what it waits for, and
    // until when: the step's deadline, not a request's.
    let slow = fake_ispn::CacheFaults { slow_listing: Duration::from_secs(12), ..Default::default() };
    let (_fake, ports) = split_pair_with_faults_on_work(1, slow).await;
    let clock_at_start = ports.clock.now_ms();
    let events = Events::default();
    let outcome = Driver::new(&plan(), &ports, &events).run("slow-listing".to_owned()).await;
    assert!(matches!(outcome, RunOutcome::Succeeded(_)), "{outcome:?}\n{}", events.timeline());
    let verify_started = first(&events, |e| matches!(e, Event::StepStarted { step: Step::Verify, .. })).unwrap();
    let deadline = clock_at_start + verify_started.as_millis() as u64 + plan().settings.step_deadline.as_millis() as u64;
    let untils: Vec<u64> = events
        .all()
        .into_iter()
        .filter_map(|e| match e {
            Event::Waiting { what, until_ms, .. } if what.starts_with("the comparison of") => Some(until_ms),
            _ => None,
        })
        .collect();
    assert!(untils.len() >= 2, "announced after 2 s and again while it goes on:\n{}", events.timeline());
    assert!(untils.iter().all(|u| *u == deadline), "{untils:?} against {deadline}\n{}", events.timeline());
}

#[tokio::test(start_paused = true)]
async fn a_push_whose_start_failed_with_a_server_error_is_recovered_at_once() {
    // The real server leaves such a push in SENDING forever (16.0.7): waiting for it to stall
    // would cost push_stall_timeout for nothing.
    let faults = fake_ispn::CacheFaults { push_start_fails: true, ..Default::default() };
    let (_fake, ports) = split_pair_with_faults_on_work(0, faults).await;
    let events = Events::default();
    let outcome = Driver::new(&plan(), &ports, &events).run("failed-start".to_owned()).await;
    assert!(matches!(outcome, RunOutcome::Succeeded(_)), "{outcome:?}\n{}", events.timeline());
    let on_work = |verb: &'static str| move |e: &Event| matches!(e, Event::Action { action, cache: Some(c), .. } if action == verb && c.as_str() == "work");
    let started = times(&events, on_work("start-push-state"));
    let cancelled = times(&events, on_work("cancel-push-state"));
    assert_eq!(started.len(), 2, "{}", events.timeline());
    // Recovered after the pause that follows any failed action, not push_stall_timeout (10 s) later.
    assert!(cancelled[0] - started[0] <= Duration::from_secs(1), "{}", events.timeline());
}

#[tokio::test(start_paused = true)]
async fn a_run_announces_every_step_once_in_order() {
    let (fake, ports) = fresh(2);
    split_brain(&fake).await;
    let events = Events::default();
    let outcome = Driver::new(&plan(), &ports, &events).run("steps".to_owned()).await;
    assert!(matches!(outcome, RunOutcome::Succeeded(_)), "{outcome:?}");
    let started: Vec<Step> = events
        .all()
        .into_iter()
        .filter_map(|e| match e {
            Event::StepStarted { step, .. } => Some(step),
            _ => None,
        })
        .collect();
    assert_eq!(started, Step::ALL.to_vec(), "{}", events.timeline());
    // Push progress is told while the pushes are awaited, not when later steps read sizes.
    let mut step = Step::Preflight;
    for event in events.all() {
        match event {
            Event::StepStarted { step: s, .. } => step = s,
            Event::PushProgress { .. } => assert_eq!(step, Step::AwaitPush, "{}", events.timeline()),
            _ => {}
        }
    }
}

#[tokio::test(start_paused = true)]
async fn reads_that_fail_while_the_link_is_down_are_retried_with_growing_pauses_until_link_wait() {
    let (fake, ports) = slow_pair().await;
    let events = Events::default();
    let chaos = {
        let fake = fake.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(4)).await;
            fake.cut_link("site-a", "site-b");
            tokio::time::sleep(Duration::from_secs(2)).await;
            fake.world().inject_request_faults(1, std::iter::repeat_n(fake_ispn::RequestFault::Unavailable, 40));
            tokio::time::sleep(Duration::from_secs(60)).await;
            fake.heal_link("site-a", "site-b");
        })
    };
    let outcome = Driver::new(&plan(), &ports, &events).run("outage-and-errors".to_owned()).await;
    chaos.await.unwrap();
    let gaps = gaps(&events, |e| matches!(e, Event::Retry { cache: None, .. }));
    assert!(gaps.len() >= 4, "{outcome:?}\n{}", events.timeline());
    assert!(gaps.iter().all(|g| *g >= plan().settings.poll_interval), "retried in a busy loop: {gaps:?}");
    // Neither the lost link nor the failing site is waited for past link_wait.
    assert!(matches!(outcome, RunOutcome::Failed(Failure::Site { side: Side::Offline, .. })), "{outcome:?}");
    let lost = first(&events, |e| matches!(e, Event::LinkDown { .. })).unwrap();
    let ended = first(&events, |e| matches!(e, Event::RunFinished { .. })).unwrap();
    assert!(ended - lost <= plan().settings.link_wait + Duration::from_secs(1), "ended {:?} after the loss", ended - lost);
}

/// The x-site calls the driver sent for `cache`, in order, by verb (bring-online left out: it has
/// its own step, and the sequences these tests pin are the push's).
fn calls_for(events: &Events, cache: &ispn_xsite::CacheName) -> Vec<String> {
    events
        .all()
        .into_iter()
        .filter_map(|e| match e {
            Event::Action { action, cache: Some(c), .. } if c == *cache && action != "bring-online" => Some(action),
            _ => None,
        })
        .collect()
}

/// A run on a split pair whose push of `work` hangs SENDING until it is cancelled, with `site`
/// answering 503 to the first `action` the driver sends.
async fn stuck_push_failing_once_at(site: usize, action: &'static str) -> (fake_ispn::FakeCluster, Events, RunOutcome) {
    let stuck = fake_ispn::CacheFaults { push_stuck: true, ..Default::default() };
    let (fake, ports) = split_pair_with_faults_on_work(0, stuck).await;
    let events = Events::default();
    let sink = arm_at(&events, action, || fake.world().inject_request_faults(site, [fake_ispn::RequestFault::Unavailable]));
    let outcome = Driver::new(&plan(), &ports, &sink).run("stuck".to_owned()).await;
    drop(sink);
    (fake, events, outcome)
}

#[tokio::test(start_paused = true)]
async fn a_cancel_receive_that_failed_is_sent_again_before_the_push_status_is_cleared() {
    let (fake, events, outcome) = stuck_push_failing_once_at(1, "cancel-receive-state").await;
    assert!(matches!(outcome, RunOutcome::Succeeded(_)), "{outcome:?}\n{}", events.timeline());
    let expected = [
        "clear",
        "start-push-state",
        "cancel-push-state",
        "cancel-receive-state",
        "cancel-receive-state",
        "clear-push-state-status",
        "start-push-state",
        "clear-push-state-status",
    ];
    assert_eq!(calls_for(&events, &cache("work")), expected, "{}", events.timeline());
    assert!(fake.snapshot("site-b").receiving.is_empty(), "the offline site still receives state");
}

#[tokio::test(start_paused = true)]
async fn a_push_status_clear_that_failed_is_sent_again() {
    // The failure hits the clear after the stuck push was cancelled...
    let (_fake, events, outcome) = stuck_push_failing_once_at(0, "clear-push-state-status").await;
    assert!(matches!(outcome, RunOutcome::Succeeded(_)), "{outcome:?}\n{}", events.timeline());
    let after_cancel = ["cancel-receive-state", "clear-push-state-status", "clear-push-state-status", "start-push-state"];
    assert!(calls_for(&events, &cache("work")).windows(4).any(|w| w == after_cancel), "{}", events.timeline());

    // ...and the one after a push that read OK: the run must not end with a status left behind.
    let (fake, ports) = fresh(2);
    split_brain(&fake).await;
    let events = Events::default();
    let sink = arm_at(&events, "clear-push-state-status", || {
        fake.world().inject_request_faults(0, [fake_ispn::RequestFault::Unavailable])
    });
    let outcome = Driver::new(&plan(), &ports, &sink).run("status".to_owned()).await;
    assert!(matches!(outcome, RunOutcome::Succeeded(_)), "{outcome:?}\n{}", events.timeline());
    let sent = events
        .all()
        .into_iter()
        .filter(|e| matches!(e, Event::Action { action, .. } if action == "clear-push-state-status"))
        .count();
    assert_eq!(sent, KEYCLOAK_26_CACHES.len() + 1, "{}", events.timeline());
    for c in KEYCLOAK_26_CACHES {
        let status = fake.world().push_state_status(0, &cache(c)).unwrap();
        assert!(status.values().all(|s| *s == ispn_xsite::PushStatus::Idle), "{c}: {status:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_push_start_cut_short_by_a_timeout_is_retried_with_that_as_its_reason() {
    // The active site stops answering as the first push starts (the request that gets no answer
    // is the re-read of its identity right before the start): the outcome is unknown, and its
    // text is what the retry must give as its reason.
    let (fake, ports) = fresh(2);
    split_brain(&fake).await;
    let events = Events::default();
    let sink = arm_at(&events, "start-push-state", || fake.world().inject_request_faults(0, [fake_ispn::RequestFault::Timeout]));
    let outcome = Driver::new(&plan(), &ports, &sink).run("lost".to_owned()).await;
    assert!(matches!(outcome, RunOutcome::Succeeded(_)), "{outcome:?}\n{}", events.timeline());
    let reasons: Vec<String> = events
        .all()
        .into_iter()
        .filter_map(|e| match e {
            Event::Retry { step: Step::AwaitPush, reason, .. } => Some(reason),
            _ => None,
        })
        .collect();
    assert_eq!(reasons.len(), 1, "{}", events.timeline());
    assert!(reasons[0].starts_with("previous push failed: ") && reasons[0].contains("no answer to"), "{reasons:?}");
}

/// A run on a split pair where, as each verification of `work` starts (every one, or only the
/// first), the offline site loses that cache's entries, as a restarted node would; `faults` are
/// on the active site's `work`, whose entries every verification reads.
async fn verification_losing_work(every_time: bool, faults: fake_ispn::CacheFaults) -> (ModelPorts, Events, RunOutcome) {
    let (fake, ports) = split_pair_with_faults_on_work(0, faults).await;
    let events = Events::default();
    let lost_once = std::sync::atomic::AtomicBool::new(false);
    let sink = |event: &Event| {
        if matches!(event, Event::StepStarted { step: Step::Verify, .. })
            && (!lost_once.swap(true, std::sync::atomic::Ordering::SeqCst) || every_time)
        {
            fake.world().clear(1, "work", true).unwrap();
        }
        events.emit(event);
    };
    // A repair that never ends would run on in virtual time: bound it, so that it fails instead.
    let plan = plan();
    let driver = Driver::new(&plan, &ports, &sink);
    let outcome = tokio::time::timeout(Duration::from_secs(900), driver.run("lossy".to_owned())).await.expect("the run ended");
    drop(driver);
    (ports, events, outcome)
}

fn pushes_of_work(events: &Events) -> usize {
    calls_for(events, &cache("work")).iter().filter(|c| *c == "start-push-state").count()
}

#[tokio::test(start_paused = true)]
async fn a_mismatch_that_survives_its_re_push_ends_the_run() {
    let (_ports, events, outcome) = verification_losing_work(true, fake_ispn::CacheFaults::default()).await;
    let RunOutcome::Failed(Failure::VerifyMismatch { cache: failed, .. }) = &outcome else {
        panic!("{outcome:?}\n{}", events.timeline())
    };
    assert_eq!(*failed, cache("work"));
    assert_eq!(pushes_of_work(&events), 2, "one push, then one re-push: {}", events.timeline());
}

#[tokio::test(start_paused = true)]
async fn a_mismatch_its_re_push_repairs_ends_well_and_a_repeated_warning_is_kept_once() {
    let unreadable = fake_ispn::CacheFaults { values_unreadable: true, stored_values_unreadable: true, ..Default::default() };
    let (ports, events, outcome) = verification_losing_work(false, unreadable).await;
    assert!(matches!(outcome, RunOutcome::Succeeded(_)), "{outcome:?}\n{}", events.timeline());
    assert_eq!(pushes_of_work(&events), 2, "{}", events.timeline());
    let announced = events
        .all()
        .into_iter()
        .filter(|e| matches!(e, Event::Warning { message } if message.contains("could not be read")))
        .count();
    assert_eq!(announced, 2, "both verifications of 'work' warned: {}", events.timeline());
    let journal = ports.journal.journal().unwrap();
    let kept: Vec<&String> = journal.warnings.iter().filter(|w| w.contains("could not be read")).collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
}

#[tokio::test(start_paused = true)]
async fn values_that_cannot_be_read_fail_the_run_when_they_are_required_and_its_journal_says_so() {
    let unreadable = fake_ispn::CacheFaults { values_unreadable: true, stored_values_unreadable: true, ..Default::default() };
    let (_fake, ports) = split_pair_with_faults_on_work(1, unreadable).await;
    let mut plan = plan();
    plan.settings.require_values = true;
    let events = Events::default();
    let outcome = Driver::new(&plan, &ports, &events).run("strict".to_owned()).await;
    let RunOutcome::Failed(Failure::ValuesNotCompared { cache: failed, reason }) = &outcome else {
        panic!("{outcome:?}\n{}", events.timeline())
    };
    assert_eq!(*failed, cache("work"));
    assert!(reason.starts_with("offline site: "), "{reason}");
    let message = Failure::ValuesNotCompared { cache: cache("work"), reason: reason.clone() }.to_string();
    assert!(message.contains("require_values"), "the message names the setting: {message}");
    // Every other cache was compared by value and the sync itself is complete: only the verdict
    // on 'work' is missing.
    let journal = ports.journal.journal().unwrap();
    assert!(
        KEYCLOAK_26_CACHES.iter().all(|c| journal.cache(&cache(c)).push == sync_core::vocabulary::PushPhase::Done),
        "{journal:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_journal_says_a_cancel_is_under_way_before_the_cancel_is_sent() {
    // A crash while cancel-push-state is in flight must leave a journal that cancels again on
    // resume (and then cancels the receiving side), not one that starts a new push at once.
    let stuck = fake_ispn::CacheFaults { push_stuck: true, ..Default::default() };
    let (_fake, ports) = split_pair_with_faults_on_work(0, stuck).await;
    let work = cache("work");
    let events = Events::default();
    let stored = std::sync::Mutex::new(None);
    let sink = |event: &Event| {
        if matches!(event, Event::Action { action, .. } if action == "cancel-push-state") {
            *stored.lock().unwrap() = ports.journal.journal().map(|j| j.cache(&work).push);
        }
        events.emit(event);
    };
    let outcome = Driver::new(&plan(), &ports, &sink).run("cancel".to_owned()).await;
    assert!(matches!(outcome, RunOutcome::Succeeded(_)), "{outcome:?}\n{}", events.timeline());
    assert_eq!(*stored.lock().unwrap(), Some(sync_core::PushPhase::CancelPush));
}
