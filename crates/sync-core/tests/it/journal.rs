//! The journal as stored and as a run leaves it: what `resume` relies on.

use fake_ispn::{CacheFaults, ClusterSpec, KEYCLOAK_26_CACHES};
use ispn_xsite::{SiteAction, SiteApi};
use sync_core::journal::Journal;
use sync_core::port_types::JournalError;
use sync_core::vocabulary::Step;
use sync_core::{Driver, JOURNAL_SCHEMA, RunOutcome};

use crate::support::*;

#[test]
fn a_journal_reads_back_as_written_and_a_newer_schema_is_refused() {
    let mut journal = Journal::new("run-7".to_owned(), &plan(), 1_000);
    journal.step = Step::AwaitPush;
    journal.keycloak_original_instances = Some(3);
    let text = journal.to_json();
    assert!(text.contains("\"run_id\": \"run-7\""), "pretty JSON for operators: {text}");
    assert_eq!(Journal::from_json("j", &text).unwrap(), journal);

    let newer =
        text.replace(&format!("\"schema_version\": {JOURNAL_SCHEMA}"), &format!("\"schema_version\": {}", JOURNAL_SCHEMA + 1));
    assert!(
        matches!(Journal::from_json("j", &newer), Err(JournalError::NewerSchema { found, .. }) if found == JOURNAL_SCHEMA + 1)
    );
    let older = text.replace(&format!("\"schema_version\": {JOURNAL_SCHEMA}"), "\"schema_version\": 0");
    assert!(Journal::from_json("j", &older).is_ok(), "older journals stay readable");
    assert!(matches!(Journal::from_json("j", "{}"), Err(JournalError::Corrupt { .. })));
}

#[test]
fn only_a_journal_past_preflight_or_resuming_has_progress() {
    let mut journal = Journal::new("r".to_owned(), &plan(), 0);
    assert!(!journal.has_progress(), "a run that only looked changed nothing");
    journal.resume_from = Some(Step::ClearCaches);
    assert!(journal.has_progress());
    journal.resume_from = None;
    journal.step = Step::ScaleDown;
    assert!(journal.has_progress());
}

#[tokio::test(start_paused = true)]
async fn the_journal_counts_every_take_offline_and_every_push_and_keeps_the_last_error() {
    let (fake, ports) = model(ClusterSpec::two_sites("site-a", "site-b"), 1);
    let a = fake.site("site-a");
    for c in KEYCLOAK_26_CACHES {
        let c = cache(c);
        a.cache_site_action(&c, &site("site-b"), SiteAction::TakeOffline).await.unwrap();
        a.put(&c, "k", "v").await.unwrap();
    }
    let work = cache("work");
    fake.world().set_cache_faults(1, &work, CacheFaults { sticky_take_offline: 2, ..CacheFaults::default() });
    fake.world().set_cache_faults(0, &work, CacheFaults { push_start_fails: true, ..CacheFaults::default() });
    let events = Events::default();
    let outcome = Driver::new(&plan(), &ports, &events).run("counts".to_owned()).await;
    assert!(matches!(outcome, RunOutcome::Succeeded(_)), "{outcome:?}");
    // Every repeated call is announced with its number, the first repeat being attempt 2.
    let retries: Vec<(Step, u32, String)> = events
        .all()
        .into_iter()
        .filter_map(|e| match e {
            sync_core::Event::Retry { step, cache: Some(c), attempt, reason } if c == work => Some((step, attempt, reason)),
            _ => None,
        })
        .collect();
    let numbers: Vec<(Step, u32)> = retries.iter().map(|(step, attempt, _)| (*step, *attempt)).collect();
    assert_eq!(numbers, vec![(Step::TakeOffline, 2), (Step::TakeOffline, 3), (Step::AwaitPush, 2)], "{}", events.timeline());
    let not_offline = "the backup of 'work' to the active site does not read offline on every node yet";
    assert!(retries[..2].iter().all(|(_, _, reason)| reason == not_offline), "{retries:?}");
    assert!(retries[2].2.starts_with("previous push failed: ") && retries[2].2.contains("Unable to pushState"), "{retries:?}");
    let journal = ports.journal.journal().unwrap();
    let progress = journal.cache(&work);
    assert_eq!(progress.take_offline_calls, 3, "two calls that did not stick, then one that did");
    assert_eq!(progress.push_attempts, 2, "a start that failed, then one that worked");
    assert!(progress.last_error.as_deref().is_some_and(|e| e.contains("Unable to pushState")), "{progress:?}");
    assert_eq!(journal.cache(&cache("actionTokens")).push_attempts, 1);
}
