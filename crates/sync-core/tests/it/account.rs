//! A run's account from a hand-written journal history: steps of each attempt (one cut off by a
//! kill), the phases of each cache, link outages, Keycloak's downtime and its answer at the end,
//! waits recorded once, and the journal's limit on what it keeps.

use sync_core::Journal;
use sync_core::account::{Account, Span};
use sync_core::journal::{Finished, HISTORY_LIMIT, Happening, Moment};
use sync_core::vocabulary::{Side, Step};

use crate::support::{cache, plan};

fn at(at_ms: u64, what: Happening) -> Moment {
    Moment { at_ms, what }
}

fn action(step: Step, verb: &str, side: Side, c: Option<&str>) -> Happening {
    Happening::Action { step, action: verb.to_owned(), side, cache: c.map(cache) }
}

fn killed_and_resumed() -> Journal {
    let mut journal = Journal::new("r-1".to_owned(), &plan(), 1_000);
    journal.caches = vec![cache("work")];
    let started = |step| Happening::StepStarted { step };
    let finished = |step| Happening::StepFinished { step };
    journal.record([
        at(1_000, Happening::RunStarted { resumed: false, from: Step::Preflight }),
        at(1_000, started(Step::Preflight)),
        at(1_100, Happening::SiteSeen { side: Side::Offline, version: "16.0.7".to_owned(), nodes: 2 }),
        at(1_200, finished(Step::Preflight)),
        at(1_200, started(Step::ScaleDown)),
        at(1_200, action(Step::ScaleDown, "scale-down", Side::Offline, None)),
        at(4_000, Happening::KeycloakStopped { was: 3 }),
        at(4_000, finished(Step::ScaleDown)),
        at(4_000, started(Step::PushState)),
        at(4_100, action(Step::PushState, "start-push-state", Side::Active, Some("work"))),
        at(4_200, finished(Step::PushState)),
        at(4_200, started(Step::AwaitPush)),
        at(5_000, Happening::LinkDown { loss: "site-b cannot see site-a across the bridge".to_owned() }),
        // The process is killed here: no word of it, the next attempt starts.
        at(9_000, Happening::RunStarted { resumed: true, from: Step::AwaitPush }),
        at(9_000, started(Step::Preflight)),
        at(9_100, finished(Step::Preflight)),
        at(9_100, started(Step::AwaitPush)),
        at(9_500, Happening::LinkUp { since_ms: 5_000 }),
        at(9_600, action(Step::AwaitPush, "start-push-state", Side::Active, Some("work"))),
        at(12_000, finished(Step::AwaitPush)),
        at(12_000, started(Step::ClearPushStatus)),
        at(12_100, action(Step::ClearPushStatus, "clear-push-state-status", Side::Active, Some("work"))),
        at(12_200, finished(Step::ClearPushStatus)),
        at(12_200, started(Step::ScaleUp)),
        at(12_300, action(Step::ScaleUp, "scale-up", Side::Offline, None)),
        at(20_000, Happening::KeycloakReady { instances: 3 }),
        at(20_000, Happening::KeycloakServing { lb_check: Some(200), ready: Some(200) }),
        at(20_100, Happening::RunFinished { finished: Finished::Succeeded }),
    ]);
    journal.finished = Some(Finished::Succeeded);
    journal
}

#[test]
fn an_account_tells_each_attempt_and_what_spanned_them_from_the_journal_alone() {
    let account = Account::of(&killed_and_resumed());
    assert_eq!(account.attempts, 2);
    let steps: Vec<(Step, &str)> = account.steps.iter().map(|s| (s.step, s.outcome)).collect();
    assert_eq!(steps[3], (Step::AwaitPush, "cut off"), "{steps:?}");
    assert_eq!(account.steps[3].span, Span { from_ms: 4_200, to_ms: Some(5_000) }, "cut off at the last moment heard of");
    assert_eq!(steps.last(), Some(&(Step::ScaleUp, "done")));
    assert_eq!(account.link_outages, vec![Span { from_ms: 5_000, to_ms: Some(9_500) }]);
    assert_eq!(account.keycloak_down, Some(Span { from_ms: 1_200, to_ms: Some(20_000) }), "from the scale-down to ready");
    assert_eq!(account.keycloak_serving, Some((Some(200), Some(200))));
    assert_eq!(account.servers, vec![(Side::Offline, "16.0.7".to_owned(), 2)]);
    let work = &account.caches[0];
    assert_eq!(work.push_attempts, 2, "pushes of both attempts count");
    // One push phase: started again within it, it goes on until its last step is done.
    assert_eq!(work.phases.len(), 1, "{:?}", work.phases);
    assert_eq!((work.phases[0].phase, work.phases[0].span), ("push", Span { from_ms: 4_100, to_ms: Some(12_200) }));
    assert_eq!(account.span, Span { from_ms: 1_000, to_ms: Some(20_100) });
}

#[test]
fn the_journal_keeps_its_first_moments_and_always_the_end_counting_what_it_left_out() {
    let mut journal = Journal::new("r-2".to_owned(), &plan(), 0);
    let warning = |i: u64| at(i, Happening::Warning { message: format!("w{i}") });
    journal.record((0..HISTORY_LIMIT as u64 + 5).map(warning));
    journal.record([at(99_999, Happening::RunFinished { finished: Finished::Interrupted })]);
    assert_eq!(journal.history.len(), HISTORY_LIMIT + 1);
    assert_eq!(journal.history_left_out, 5);
    assert!(matches!(journal.history.last().unwrap().what, Happening::RunFinished { .. }));
    assert_eq!(Account::of(&journal).left_out, 5);
}
