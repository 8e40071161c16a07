//! `decide`, rule by rule: every step and every refusal, on hand-built observations.

use std::collections::BTreeMap;
use std::time::Duration;

use ispn_xsite::{BackupStatus, CacheName, NodeStatus, NodeStatuses, PushStatus, PushStatusReport};
use sync_core::decide::decide;
use sync_core::decision::{Decision, Ending, Note};
use sync_core::journal::{CacheProgress, Journal};
use sync_core::observe::{ContentCheck, Observation, SiteFacts, Sizes};
use sync_core::ports::KeycloakState;
use sync_core::vocabulary::{
    Action, DirectionRecord, DirectionVerdict, Probe, PushPhase, Side, SiteActivity, Step, Verdict, VerifyLevel, WriteSample,
};
use sync_core::{CacheSelection, Failure, Plan, Refusal};

use crate::support::{cache, plan, site};

const NOW: u64 = 1_000_000;
const CACHES: [&str; 4] = ["actionTokens", "authenticationSessions", "loginFailures", "work"];

fn facts(local: &str, view: &[&str], relay: bool) -> SiteFacts {
    SiteFacts {
        local_site: Some(local.to_owned()),
        sites_view: view.iter().map(|s| (*s).to_owned()).collect(),
        relay_node: relay,
        version: "15.0.21.Final".to_owned(),
        nodes: 1,
    }
}

fn keycloak(spec: u32, ready: u32, pods: u32) -> KeycloakState {
    KeycloakState { spec_instances: spec, ready_instances: ready, pods, rolling_update: false, recorded_original: None }
}

fn journal_at(step: Step) -> Journal {
    let mut journal = Journal::new("run".to_owned(), &plan(), NOW);
    journal.step = step;
    journal.caches = CACHES.iter().map(|c| cache(c)).collect();
    for c in CACHES {
        journal.per_cache.insert(cache(c), CacheProgress::default());
    }
    journal.keycloak_original_instances = Some(3);
    // Past its first reading the direction is judged; the guard's own tests start without.
    journal.direction = Some(agreeing());
    journal
}

fn agreeing() -> DirectionRecord {
    let activity = |name: &str, writes: Vec<(CacheName, u64)>| SiteActivity { site: site(name), writes, unknown: Vec::new() };
    DirectionRecord {
        window_ms: 2000,
        active: activity("site-a", vec![(cache("authenticationSessions"), 40)]),
        offline: activity("site-b", Vec::new()),
        offline_lb_check: None,
        verdict: DirectionVerdict::Agrees,
        overridden: false,
        counters_reset: false,
    }
}

fn progress<'j>(journal: &'j mut Journal, c: &str) -> &'j mut CacheProgress {
    journal.per_cache.get_mut(&cache(c)).unwrap()
}

fn every_push(journal: &mut Journal, phase: PushPhase) {
    for c in CACHES {
        progress(journal, c).push = phase;
    }
}

/// An observation where both sites are who they should be and back up to each other.
fn healthy() -> Observation {
    let mut obs = Observation::at(NOW);
    obs.sites.insert(Side::Active, facts("site-a", &["site-a", "site-b"], true));
    obs.sites.insert(Side::Offline, facts("site-b", &["site-a", "site-b"], true));
    let backups = |to: &str| CACHES.iter().map(|c| (cache(c), vec![site(to)])).collect::<BTreeMap<_, _>>();
    obs.backups.insert(Side::Active, backups("site-b"));
    obs.backups.insert(Side::Offline, backups("site-a"));
    obs.keycloak = Some(Some(keycloak(3, 3, 3)));
    obs
}

fn nodes(states: &[NodeStatus]) -> NodeStatuses {
    NodeStatuses(states.iter().enumerate().map(|(i, s)| (format!("site-b-{}", i + 1), *s)).collect())
}

fn all_nodes(obs: &mut Observation, state: NodeStatus) {
    for c in CACHES {
        obs.offline_nodes.insert(cache(c), nodes(&[state, state]));
    }
}

fn push(obs: &mut Observation, c: &str, status: PushStatus) {
    obs.push.insert(cache(c), PushStatusReport::Sites(BTreeMap::from([("site-b".to_owned(), status)])));
}

fn all_push(obs: &mut Observation, status: PushStatus) {
    for c in CACHES {
        push(obs, c, status);
    }
}

fn refused(decision: Decision) -> Refusal {
    match decision {
        Decision::Finish(Ending::Refused(r)) => r,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn failed(decision: Decision) -> Failure {
    match decision {
        Decision::Finish(Ending::Failed(f)) => f,
        other => panic!("expected a failure, got {other:?}"),
    }
}

fn acts(decision: Decision) -> Vec<Action> {
    match decision {
        Decision::Act(actions) => actions,
        other => panic!("expected actions, got {other:?}"),
    }
}

// ----- preflight --------------------------------------------------------------------------------

/// Counters of every cache on both sites: `writes` per (side, cache), sizes 10.
fn counters(obs: &mut Observation, writes: &[(Side, &str, u64)]) {
    for side in [Side::Active, Side::Offline] {
        for c in CACHES {
            let n = writes.iter().find(|(s, name, _)| *s == side && *name == c).map_or(0, |(_, _, n)| *n);
            obs.activity.insert((side, cache(c)), WriteSample { writes: Some(1000 + n), since_reset_s: Some(600), size: 10 });
        }
    }
}

/// The guard's second reading `window` after its first (all counters at 1000), with the backups
/// offline both ways and nothing configured for Keycloak's health.
fn guard_at_end(plan: &Plan, writes: &[(Side, &str, u64)]) -> Decision {
    let mut journal = journal_at(Step::Preflight);
    journal.direction = None;
    let mut first = healthy();
    counters(&mut first, &[]);
    journal.evidence_started = Some((NOW, first.activity.into_iter().collect()));
    let mut obs = healthy();
    obs.now_ms = NOW + 2000;
    counters(&mut obs, writes);
    for c in CACHES {
        obs.status.insert((Side::Active, cache(c)), BackupStatus::Offline);
        obs.status.insert((Side::Offline, cache(c)), BackupStatus::Offline);
    }
    obs.keycloak_health = Some(None);
    decide(plan, &journal, &obs)
}

fn judged(decision: Decision) -> DirectionRecord {
    match decision {
        Decision::Note(notes) => match &notes[..] {
            [Note::Direction(record)] => record.clone(),
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_direction_guard_reads_every_cache_twice_a_window_apart_before_anything_changes() {
    let mut journal = journal_at(Step::Preflight);
    journal.direction = None;
    let Decision::Observe(probes) = decide(&plan(), &journal, &healthy()) else { panic!() };
    assert_eq!(probes.len(), 8, "{probes:?}");
    assert!(probes.contains(&Probe::Activity { side: Side::Offline, cache: cache("authenticationSessions") }));
    let mut obs = healthy();
    counters(&mut obs, &[]);
    let Decision::Note(notes) = decide(&plan(), &journal, &obs) else { panic!() };
    assert!(matches!(&notes[..], [Note::EvidenceStarted { at_ms: NOW, samples }] if samples.len() == 8), "{notes:?}");
    journal.evidence_started = Some((NOW, obs.activity.clone().into_iter().collect()));
    let mut later = healthy();
    later.now_ms = NOW + 500;
    let Decision::Wait(wait) = decide(&plan(), &journal, &later) else { panic!() };
    assert_eq!((wait.until_ms, wait.duration), (NOW + 2000, Duration::from_millis(1500)));
    assert!(wait.what.contains("writes on site-a and site-b"), "{}", wait.what);
    later.now_ms = NOW + 2000;
    let Decision::Observe(second) = decide(&plan(), &journal, &later) else { panic!() };
    assert!(
        second.contains(&Probe::KeycloakHealth) && second.contains(&Probe::Status { side: Side::Active, cache: cache("work") })
    );
}

#[test]
fn the_offline_site_taking_writes_while_the_active_one_is_quiet_is_refused_with_the_evidence() {
    let record = judged(guard_at_end(&plan(), &[(Side::Offline, "authenticationSessions", 212)]));
    assert_eq!(
        record.verdict,
        DirectionVerdict::Against {
            reason:
                "site-b took 212 writes to authenticationSessions in 2.00 s; site-a took none: site-b looks like the live site"
                    .to_owned(),
            active_quiet: true,
        }
    );
    let mut journal = journal_at(Step::Preflight);
    journal.direction = Some(record);
    let refusal = refused(decide(&plan(), &journal, &healthy()));
    assert_eq!(
        refusal.to_string(),
        "site-b took 212 writes to authenticationSessions in 2.00 s; site-a took none: site-b looks like the live site; nothing was changed. If site-b is the live site, synchronize site-a from it (--active site-b --offline site-a); to clear site-b anyway, losing what it took, pass --discard-offline-writes"
    );
}

#[test]
fn users_on_both_sites_are_refused_too_and_the_override_goes_on_with_a_warning() {
    let writes = [(Side::Active, "loginFailures", 3), (Side::Offline, "authenticationSessions", 5)];
    let record = judged(guard_at_end(&plan(), &writes));
    assert!(
        matches!(&record.verdict, DirectionVerdict::Against { active_quiet: false, reason } if reason.contains("site-b is serving users"))
    );
    let mut overriding = plan();
    overriding.settings.discard_offline_writes = true;
    let record = judged(guard_at_end(&overriding, &writes));
    assert!(record.overridden);
    let mut journal = journal_at(Step::Preflight);
    journal.direction = Some(record);
    let Decision::Note(notes) = decide(&overriding, &journal, &healthy()) else { panic!() };
    assert!(matches!(&notes[..], [Note::Warning(w)] if w.contains("--discard-offline-writes was given")), "{notes:?}");
    if let [Note::Warning(w)] = &notes[..] {
        journal.warnings.push(w.clone());
    }
    assert_eq!(decide(&overriding, &journal, &healthy()), Decision::Advance);
}

#[test]
fn only_the_active_site_writing_agrees_and_the_run_goes_on() {
    let record = judged(guard_at_end(&plan(), &[(Side::Active, "authenticationSessions", 40), (Side::Offline, "work", 3)]));
    assert_eq!(record.verdict, DirectionVerdict::Agrees, "the offline site's work cache is Keycloak's own bookkeeping");
    assert_eq!(
        record.summary(),
        "in 2.00 s, site-a took 40 writes to authenticationSessions; site-b took none: site-a is the live site, as declared"
    );
    let mut journal = journal_at(Step::Preflight);
    journal.direction = Some(record);
    assert_eq!(decide(&plan(), &journal, &healthy()), Decision::Advance);
}

#[test]
fn no_traffic_anywhere_is_inconclusive_never_a_refusal() {
    let record = judged(guard_at_end(&plan(), &[]));
    assert!(
        matches!(&record.verdict, DirectionVerdict::Inconclusive { reason } if reason.contains("no user wrote to either site"))
    );
    let mut journal = journal_at(Step::Preflight);
    journal.direction = Some(record);
    assert_eq!(decide(&plan(), &journal, &healthy()), Decision::Advance);
}

#[test]
fn a_resume_past_the_scale_down_does_not_judge_again() {
    let mut journal = journal_at(Step::Preflight);
    journal.direction = None;
    journal.resume_from = Some(Step::ClearCaches);
    assert_eq!(decide(&plan(), &journal, &healthy()), Decision::Advance);
    journal.resume_from = Some(Step::ScaleDown);
    assert!(matches!(decide(&plan(), &journal, &healthy()), Decision::Observe(_)));
}

#[test]
fn preflight_reads_both_sites_their_backups_and_keycloak_first() {
    let Decision::Observe(probes) = decide(&plan(), &journal_at(Step::Preflight), &Observation::at(NOW)) else { panic!() };
    assert_eq!(
        probes,
        vec![
            Probe::Site { side: Side::Active },
            Probe::Site { side: Side::Offline },
            Probe::Backups { side: Side::Active },
            Probe::Backups { side: Side::Offline },
            Probe::Keycloak,
        ]
    );
}

#[test]
fn preflight_resolves_keycloak_26_caches_then_advances() {
    let mut journal = journal_at(Step::Preflight);
    journal.caches.clear();
    let Decision::Note(notes) = decide(&plan(), &journal, &healthy()) else { panic!() };
    assert_eq!(notes, vec![Note::Caches(CACHES.iter().map(|c| cache(c)).collect(), Some("Keycloak 26".to_owned()))]);
    assert_eq!(decide(&plan(), &journal_at(Step::Preflight), &healthy()), Decision::Advance);
}

#[test]
fn preflight_accepts_the_keycloak_24_set_of_eight() {
    let mut journal = journal_at(Step::Preflight);
    journal.caches.clear();
    let mut obs = healthy();
    let eight = sync_core::plan::KEYCLOAK_24_CACHES;
    obs.backups.insert(Side::Active, eight.iter().map(|c| (cache(c), vec![site("site-b")])).collect());
    obs.backups.insert(Side::Offline, eight.iter().map(|c| (cache(c), vec![site("site-a")])).collect());
    let Decision::Note(notes) = decide(&plan(), &journal, &obs) else { panic!() };
    assert!(matches!(&notes[0], Note::Caches(c, Some(line)) if c.len() == 8 && line == "Keycloak 24/25"));
}

#[test]
fn preflight_refuses_an_unknown_cache_set_and_names_it() {
    let mut journal = journal_at(Step::Preflight);
    journal.caches.clear();
    let mut obs = healthy();
    obs.backups.get_mut(&Side::Active).unwrap().insert(cache("custom"), vec![site("site-b")]);
    let refusal = refused(decide(&plan(), &journal, &obs));
    assert!(matches!(&refusal, Refusal::UnknownCacheSet { found } if found.len() == 5), "{refusal:?}");
    assert!(refusal.to_string().contains("custom"));
}

#[test]
fn preflight_uses_an_explicit_cache_list() {
    let mut plan = plan();
    plan.caches = CacheSelection::Explicit(vec![cache("work")]);
    let mut journal = journal_at(Step::Preflight);
    journal.caches.clear();
    let mut obs = healthy();
    obs.backups.get_mut(&Side::Active).unwrap().insert(cache("custom"), vec![site("site-b")]);
    let Decision::Note(notes) = decide(&plan, &journal, &obs) else { panic!() };
    assert_eq!(notes, vec![Note::Caches(vec![cache("work")], None)]);
}

#[test]
fn preflight_refuses_swapped_sites() {
    let mut obs = healthy();
    obs.sites.insert(Side::Active, facts("site-b", &[], true));
    obs.sites.insert(Side::Offline, facts("site-a", &[], true));
    assert!(matches!(refused(decide(&plan(), &journal_at(Step::Preflight), &obs)), Refusal::SitesSwapped { .. }));
}

#[test]
fn preflight_calls_sites_swapped_only_when_both_read_as_the_other() {
    // Only the active endpoint answers as the offline site: a wrong endpoint, not a swap.
    let mut obs = healthy();
    obs.sites.insert(Side::Active, facts("site-b", &[], true));
    let refusal = refused(decide(&plan(), &journal_at(Step::Preflight), &obs));
    assert!(matches!(&refusal, Refusal::WrongSite { side: Side::Active, found: Some(f), .. } if f == "site-b"), "{refusal:?}");
    let mut obs = healthy();
    obs.sites.insert(Side::Offline, facts("site-a", &[], true));
    let refusal = refused(decide(&plan(), &journal_at(Step::Preflight), &obs));
    assert!(matches!(&refusal, Refusal::WrongSite { side: Side::Offline, found: Some(f), .. } if f == "site-a"), "{refusal:?}");
}

#[test]
fn preflight_refuses_a_site_that_reports_another_name() {
    let mut obs = healthy();
    obs.sites.insert(Side::Offline, facts("site-c", &[], true));
    let refusal = refused(decide(&plan(), &journal_at(Step::Preflight), &obs));
    assert!(matches!(&refusal, Refusal::WrongSite { side: Side::Offline, found: Some(f), .. } if f == "site-c"), "{refusal:?}");
    let mut obs = healthy();
    obs.sites.get_mut(&Side::Active).unwrap().local_site = None;
    assert!(matches!(
        refused(decide(&plan(), &journal_at(Step::Preflight), &obs)),
        Refusal::WrongSite { side: Side::Active, found: None, .. }
    ));
}

#[test]
fn preflight_refuses_a_cache_missing_on_one_side() {
    let mut obs = healthy();
    obs.backups.get_mut(&Side::Offline).unwrap().remove(&cache("work"));
    let refusal = refused(decide(&plan(), &journal_at(Step::Preflight), &obs));
    assert_eq!(refusal, Refusal::CacheMissing { side: Side::Offline, site: site("site-b"), cache: cache("work") });
}

#[test]
fn preflight_refuses_a_cache_that_does_not_back_up_to_the_other_site() {
    let mut obs = healthy();
    obs.backups.get_mut(&Side::Active).unwrap().insert(cache("work"), vec![]);
    let refusal = refused(decide(&plan(), &journal_at(Step::Preflight), &obs));
    assert!(matches!(refusal, Refusal::NotReplicated { side: Side::Active, .. }), "{refusal:?}");
    let mut obs = healthy();
    obs.backups.get_mut(&Side::Offline).unwrap().insert(cache("work"), vec![site("site-c")]);
    assert!(matches!(
        refused(decide(&plan(), &journal_at(Step::Preflight), &obs)),
        Refusal::NotReplicated { side: Side::Offline, .. }
    ));
}

#[test]
fn preflight_refuses_when_the_active_site_does_not_see_the_offline_one() {
    let mut obs = healthy();
    obs.sites.insert(Side::Active, facts("site-a", &["site-a"], true));
    assert_eq!(
        refused(decide(&plan(), &journal_at(Step::Preflight), &obs)),
        Refusal::NoLink { from: site("site-a"), to: site("site-b") }
    );
}

#[test]
fn preflight_warns_when_the_answering_node_cannot_know_the_view() {
    let mut obs = healthy();
    obs.sites.insert(Side::Active, facts("site-a", &[], false));
    let journal = journal_at(Step::Preflight);
    let Decision::Note(notes) = decide(&plan(), &journal, &obs) else { panic!() };
    assert!(matches!(&notes[0], Note::Warning(w) if w.contains("not a site master")));
    let mut warned = journal.clone();
    if let Note::Warning(w) = &notes[0] {
        warned.warnings.push(w.clone());
    }
    assert_eq!(decide(&plan(), &warned, &obs), Decision::Advance);
}

#[test]
fn preflight_refuses_a_keycloak_rollout_unless_it_is_our_own_scale_down() {
    let mut obs = healthy();
    obs.keycloak = Some(Some(KeycloakState { rolling_update: true, ..keycloak(3, 2, 3) }));
    let mut fresh = journal_at(Step::Preflight);
    fresh.keycloak_original_instances = None;
    assert!(matches!(refused(decide(&plan(), &fresh, &obs)), Refusal::KeycloakRollingUpdate { .. }));
    let mut resumed = journal_at(Step::Preflight);
    resumed.resume_from = Some(Step::ClearCaches);
    assert_eq!(decide(&plan(), &resumed, &obs), Decision::Advance);
}

#[test]
fn a_resume_past_the_push_does_not_need_the_link() {
    let mut obs = healthy();
    obs.sites.insert(Side::Active, facts("site-a", &["site-a"], true));
    let mut journal = journal_at(Step::Preflight);
    journal.resume_from = Some(Step::Verify);
    assert_eq!(decide(&plan(), &journal, &obs), Decision::Advance);
}

// ----- scale down ---------------------------------------------------------------------------------

#[test]
fn scale_down_acts_once_then_advances_when_the_pods_are_gone() {
    let mut journal = journal_at(Step::ScaleDown);
    journal.keycloak_original_instances = None;
    let mut obs = Observation::at(NOW);
    assert_eq!(decide(&plan(), &journal, &obs), Decision::Observe(vec![Probe::Keycloak]));
    obs.keycloak = Some(Some(keycloak(3, 3, 3)));
    assert_eq!(acts(decide(&plan(), &journal, &obs)), vec![Action::ScaleDown]);
    journal.keycloak_original_instances = Some(3);
    obs.keycloak = Some(Some(keycloak(0, 0, 1)));
    assert_eq!(acts(decide(&plan(), &journal, &obs)), vec![Action::ScaleDown], "a pod is still terminating");
    obs.keycloak = Some(Some(keycloak(0, 0, 0)));
    assert_eq!(decide(&plan(), &journal, &obs), Decision::Advance);
}

#[test]
fn scale_down_is_skipped_when_keycloak_is_not_managed() {
    let mut plan = plan();
    plan.settings.manage_keycloak = false;
    assert_eq!(decide(&plan, &journal_at(Step::ScaleDown), &Observation::at(NOW)), Decision::Advance);
    let mut obs = Observation::at(NOW);
    obs.keycloak = Some(None);
    assert_eq!(decide(&super::support::plan(), &journal_at(Step::ScaleDown), &obs), Decision::Advance);
}

// ----- take offline / clear -------------------------------------------------------------------------

#[test]
fn take_offline_acts_on_every_cache_that_is_not_offline_on_every_node() {
    let journal = journal_at(Step::TakeOffline);
    let mut obs = Observation::at(NOW);
    assert!(matches!(decide(&plan(), &journal, &obs), Decision::Observe(p) if p.len() == 4));
    all_nodes(&mut obs, NodeStatus::Offline);
    obs.offline_nodes.insert(cache("work"), nodes(&[NodeStatus::Offline, NodeStatus::Online]));
    assert_eq!(acts(decide(&plan(), &journal, &obs)), vec![Action::TakeOffline(cache("work"))]);
    all_nodes(&mut obs, NodeStatus::Offline);
    assert_eq!(decide(&plan(), &journal, &obs), Decision::Advance);
}

#[test]
fn take_offline_gives_a_call_time_to_reach_every_node_then_repeats_it_then_gives_up() {
    let mut journal = journal_at(Step::TakeOffline);
    let mut obs = Observation::at(NOW);
    all_nodes(&mut obs, NodeStatus::Offline);
    obs.offline_nodes.insert(cache("work"), nodes(&[NodeStatus::Offline, NodeStatus::Failed]));
    progress(&mut journal, "work").take_offline_calls = 1;
    progress(&mut journal, "work").last_take_offline_ms = Some(NOW - 10);
    assert!(matches!(decide(&plan(), &journal, &obs), Decision::Wait(_)));
    obs.now_ms = NOW + 1000;
    assert_eq!(acts(decide(&plan(), &journal, &obs)), vec![Action::TakeOffline(cache("work"))]);
    progress(&mut journal, "work").take_offline_calls = plan().settings.take_offline_attempts;
    let failure = failed(decide(&plan(), &journal, &obs));
    assert!(
        matches!(&failure, Failure::TakeOfflineDidNotStick { nodes, .. } if nodes == &vec!["site-b-2".to_owned()]),
        "{failure:?}"
    );
}

#[test]
fn clear_only_clears_caches_whose_backup_reads_offline_everywhere() {
    let mut journal = journal_at(Step::ClearCaches);
    progress(&mut journal, "actionTokens").cleared = true;
    let mut obs = Observation::at(NOW);
    let Decision::Observe(probes) = decide(&plan(), &journal, &obs) else { panic!() };
    assert_eq!(probes.len(), 3, "only the uncleared caches are re-read");
    all_nodes(&mut obs, NodeStatus::Offline);
    obs.offline_nodes.insert(cache("work"), nodes(&[NodeStatus::Online, NodeStatus::Offline]));
    assert_eq!(
        acts(decide(&plan(), &journal, &obs)),
        vec![
            Action::Clear(cache("authenticationSessions")),
            Action::Clear(cache("loginFailures")),
            Action::TakeOffline(cache("work"))
        ],
        "the cache whose backup came back online is taken offline again, not cleared"
    );
}

#[test]
fn a_take_offline_is_repeated_exactly_one_poll_interval_after_the_last() {
    let poll = plan().settings.poll_interval.as_millis() as u64;
    for step in [Step::TakeOffline, Step::ClearCaches] {
        let mut journal = journal_at(step);
        let mut obs = Observation::at(NOW);
        all_nodes(&mut obs, NodeStatus::Offline);
        obs.offline_nodes.insert(cache("work"), nodes(&[NodeStatus::Online, NodeStatus::Offline]));
        if step == Step::ClearCaches {
            for c in ["actionTokens", "authenticationSessions", "loginFailures"] {
                progress(&mut journal, c).cleared = true;
            }
        }
        progress(&mut journal, "work").take_offline_calls = 1;
        progress(&mut journal, "work").last_take_offline_ms = Some(NOW - poll + 1);
        assert!(matches!(decide(&plan(), &journal, &obs), Decision::Wait(_)), "{step}: one millisecond early");
        progress(&mut journal, "work").last_take_offline_ms = Some(NOW - poll);
        assert_eq!(acts(decide(&plan(), &journal, &obs)), vec![Action::TakeOffline(cache("work"))], "{step}: on time");
    }
}

#[test]
fn clear_refuses_when_taking_offline_again_does_not_help() {
    let mut journal = journal_at(Step::ClearCaches);
    let mut obs = Observation::at(NOW);
    all_nodes(&mut obs, NodeStatus::Offline);
    obs.offline_nodes.insert(cache("work"), nodes(&[NodeStatus::Online, NodeStatus::Online]));
    progress(&mut journal, "work").take_offline_calls = 99;
    assert!(matches!(refused(decide(&plan(), &journal, &obs)), Refusal::ClearInterlock { .. }));
}

#[test]
fn clear_advances_once_every_cache_is_cleared() {
    let mut journal = journal_at(Step::ClearCaches);
    for c in CACHES {
        progress(&mut journal, c).cleared = true;
    }
    assert_eq!(decide(&plan(), &journal, &Observation::at(NOW)), Decision::Advance);
}

#[test]
fn bring_online_acts_where_needed_then_advances() {
    let journal = journal_at(Step::BringOnline);
    let mut obs = Observation::at(NOW);
    for c in CACHES {
        obs.status.insert((Side::Offline, cache(c)), BackupStatus::Online);
    }
    obs.status.insert((Side::Offline, cache("work")), BackupStatus::Offline);
    assert_eq!(acts(decide(&plan(), &journal, &obs)), vec![Action::BringOnline(Side::Offline, cache("work"))]);
    obs.status.insert((Side::Offline, cache("work")), BackupStatus::Online);
    assert_eq!(decide(&plan(), &journal, &obs), Decision::Advance);
}

// ----- push ---------------------------------------------------------------------------------------

fn linked(obs: &mut Observation) {
    obs.sites.insert(Side::Active, facts("site-a", &["site-a", "site-b"], true));
    obs.sites.insert(Side::Offline, facts("site-b", &["site-a", "site-b"], true));
}

/// The active site no longer sees the offline one.
fn unlinked(obs: &mut Observation) {
    obs.sites.insert(Side::Active, facts("site-a", &["site-a"], true));
}

fn push_obs(status: PushStatus) -> Observation {
    let mut obs = Observation::at(NOW);
    linked(&mut obs);
    all_push(&mut obs, status);
    obs
}

fn waits(decision: Decision) -> sync_core::decision::Wait {
    match decision {
        Decision::Wait(wait) => wait,
        other => panic!("expected a wait, got {other:?}"),
    }
}

fn notes(decision: Decision) -> Vec<Note> {
    match decision {
        Decision::Note(notes) => notes,
        other => panic!("expected notes, got {other:?}"),
    }
}

#[test]
fn push_starts_idle_caches_and_clears_stale_statuses_first() {
    let journal = journal_at(Step::PushState);
    let mut obs = push_obs(PushStatus::Idle);
    push(&mut obs, "work", PushStatus::Error);
    let actions = acts(decide(&plan(), &journal, &obs));
    assert!(actions.contains(&Action::ClearPushStatus(cache("work"))));
    assert_eq!(actions.iter().filter(|a| matches!(a, Action::StartPush(_))).count(), 3);
}

#[test]
fn push_adopts_a_push_that_is_already_running() {
    let obs = push_obs(PushStatus::Sending);
    let Decision::Note(notes) = decide(&plan(), &journal_at(Step::PushState), &obs) else { panic!() };
    assert_eq!(notes.len(), 4);
    assert!(notes.iter().all(|n| matches!(n, Note::AdoptPush(_, NOW))));
}

#[test]
fn push_refuses_when_the_pushing_site_is_not_the_active_one() {
    let mut obs = push_obs(PushStatus::Idle);
    obs.sites.insert(Side::Active, facts("site-b", &["site-a", "site-b"], true));
    assert!(matches!(refused(decide(&plan(), &journal_at(Step::PushState), &obs)), Refusal::PushInterlock { .. }));
}

#[test]
fn a_lost_link_is_noted_at_once_waited_for_until_link_wait_then_ends_the_run() {
    let plan = plan();
    let link_wait = plan.settings.link_wait.as_millis() as u64;
    let mut journal = journal_at(Step::PushState);
    let mut obs = push_obs(PushStatus::Idle);
    unlinked(&mut obs);
    let noted = notes(decide(&plan, &journal, &obs));
    let [Note::LinkLost { loss, until_ms }] = noted.as_slice() else { panic!("{noted:?}") };
    assert_eq!((loss.since_ms, *until_ms), (NOW, NOW + link_wait));
    assert_eq!(loss.to_string(), "site-a cannot see site-b across the bridge");
    assert_eq!(loss.views[0].sites_view, ["site-a"]);

    journal.link_down_since_ms = Some(NOW);
    obs.now_ms = NOW + link_wait - 1;
    let wait = waits(decide(&plan, &journal, &obs));
    assert_eq!(wait.what, "the cross-site link between site-a and site-b");
    assert_eq!(wait.until_ms, NOW + link_wait);

    obs.now_ms = NOW + link_wait;
    let Failure::LinkLost { loss, waited } = failed(decide(&plan, &journal, &obs)) else { panic!() };
    assert_eq!((loss.since_ms, waited), (NOW, plan.settings.link_wait));
}

#[test]
fn a_link_seen_back_is_noted_with_how_long_it_was_down() {
    let mut journal = journal_at(Step::PushState);
    journal.link_down_since_ms = Some(NOW - 15_000);
    assert_eq!(
        notes(decide(&plan(), &journal, &push_obs(PushStatus::Idle))),
        vec![Note::LinkBack { since_ms: NOW - 15_000, at_ms: NOW }]
    );
}

#[test]
fn a_link_lost_as_the_offline_site_sees_it_counts_too() {
    let mut obs = push_obs(PushStatus::Idle);
    obs.sites.insert(Side::Offline, facts("site-b", &["site-b"], true));
    let noted = notes(decide(&plan(), &journal_at(Step::PushState), &obs));
    let [Note::LinkLost { loss, .. }] = noted.as_slice() else { panic!("{noted:?}") };
    assert_eq!(loss.to_string(), "site-b cannot see site-a across the bridge");
}

#[test]
fn with_no_link_wait_a_lost_link_ends_the_run_at_the_next_look() {
    let mut plan = plan();
    plan.settings.link_wait = Duration::ZERO;
    let mut journal = journal_at(Step::AwaitPush);
    journal.link_down_since_ms = Some(NOW);
    let mut obs = await_obs(PushStatus::Sending);
    unlinked(&mut obs);
    assert!(matches!(failed(decide(&plan, &journal, &obs)), Failure::LinkLost { .. }));
}

fn sending_journal() -> Journal {
    let mut journal = journal_at(Step::AwaitPush);
    for c in CACHES {
        let p = progress(&mut journal, c);
        p.push = PushPhase::Sending;
        p.push_attempts = 1;
        p.push_started_at_ms = Some(NOW - 1000);
        // As `await_obs` shows it: the receiver holds 5 entries.
        p.receiver_entries = Some(5);
        p.receiver_moved_at_ms = Some(NOW - 1000);
    }
    journal
}

fn await_obs(status: PushStatus) -> Observation {
    let mut obs = push_obs(status);
    for c in CACHES {
        obs.status.insert((Side::Active, cache(c)), BackupStatus::Online);
        obs.sizes.insert(cache(c), Sizes { active_before: 10, offline: 5, active_after: 10 });
    }
    obs
}

#[test]
fn await_push_records_ok_and_advances_when_every_push_is_ok() {
    let journal = sending_journal();
    let Decision::Note(notes) = decide(&plan(), &journal, &await_obs(PushStatus::Ok)) else { panic!() };
    assert_eq!(notes.len(), 4);
    let mut done = journal.clone();
    every_push(&mut done, PushPhase::Ok);
    assert_eq!(decide(&plan(), &done, &await_obs(PushStatus::Ok)), Decision::Advance);
}

#[test]
fn await_push_repushes_on_error_and_fails_once_attempts_run_out() {
    let mut journal = sending_journal();
    let obs = await_obs(PushStatus::Error);
    assert_eq!(acts(decide(&plan(), &journal, &obs)).len(), 4);
    progress(&mut journal, "work").push_attempts = 3;
    assert!(matches!(failed(decide(&plan(), &journal, &obs)), Failure::PushFailed { attempts: 3, .. }));
}

#[test]
fn await_push_adopts_a_push_the_journal_has_not_recorded() {
    // A run that crashed between starting a push and saving the journal resumes with the push
    // running on the server: it is adopted, not cleared.
    let mut journal = journal_at(Step::AwaitPush);
    every_push(&mut journal, PushPhase::Ok);
    progress(&mut journal, "work").push = PushPhase::NotStarted;
    let Decision::Note(notes) = decide(&plan(), &journal, &await_obs(PushStatus::Sending)) else { panic!() };
    assert_eq!(notes, vec![Note::AdoptPush(cache("work"), NOW)]);
}

#[test]
fn await_push_does_not_spend_attempts_while_the_link_is_down() {
    let mut journal = sending_journal();
    journal.link_down_since_ms = Some(NOW);
    let mut obs = await_obs(PushStatus::Error);
    unlinked(&mut obs);
    // The active site's backup stays as it is: online towards an unreachable site, a SYNC backup
    // that fails on error would fail the active site's writes.
    obs.status.insert((Side::Active, cache("work")), BackupStatus::Offline);
    let wait = waits(decide(&plan(), &journal, &obs));
    assert_eq!(wait.what, "the cross-site link between site-a and site-b");
}

#[test]
fn await_push_cancels_running_pushes_when_the_link_is_lost() {
    let mut journal = sending_journal();
    journal.link_down_since_ms = Some(NOW);
    let mut obs = await_obs(PushStatus::Sending);
    unlinked(&mut obs);
    assert_eq!(acts(decide(&plan(), &journal, &obs)).len(), 4);
}

#[test]
fn await_push_recovers_a_push_whose_receiver_stopped_moving() {
    let plan = plan();
    let stall = plan.settings.push_stall_timeout.as_millis() as u64;
    let mut journal = sending_journal();
    for c in CACHES {
        progress(&mut journal, c).receiver_moved_at_ms = Some(NOW);
    }
    let mut obs = await_obs(PushStatus::Sending);
    obs.now_ms = NOW + stall;
    assert_eq!(
        waits(decide(&plan, &journal, &obs)).what,
        "the pushes of actionTokens, authenticationSessions, loginFailures, work to read OK"
    );
    obs.now_ms = NOW + stall + 1;
    assert_eq!(acts(decide(&plan, &journal, &obs)).len(), 4, "no entry arrived for longer than push_stall_timeout");
    // One cache's receiver moved: it is alive, and recorded so.
    obs.sizes.insert(cache("work"), Sizes { active_before: 10, offline: 7, active_after: 10 });
    let decision = decide(&plan, &journal, &obs);
    assert_eq!(notes(decision), vec![Note::ReceiverMoved { cache: cache("work"), entries: 7, at_ms: NOW + stall + 1 }]);
}

#[test]
fn receiver_progress_is_recorded_at_most_every_eighth_of_the_stall_timeout() {
    let plan = plan();
    let every = plan.settings.push_stall_timeout.as_millis() as u64 / 8;
    let mut journal = sending_journal();
    for c in CACHES {
        let p = progress(&mut journal, c);
        p.receiver_entries = Some(4);
        p.receiver_moved_at_ms = Some(NOW);
    }
    let mut obs = await_obs(PushStatus::Sending);
    obs.now_ms = NOW + every - 1;
    assert!(matches!(decide(&plan, &journal, &obs), Decision::Wait(_)), "moved, but recorded a moment ago");
    obs.now_ms = NOW + every;
    assert_eq!(notes(decide(&plan, &journal, &obs)).len(), 4);
}

#[test]
fn await_push_polls_at_a_twentieth_of_the_push_time_within_50ms_and_the_interval() {
    let wait_after = |running_ms: u64| {
        let mut journal = sending_journal();
        for c in CACHES {
            progress(&mut journal, c).push_started_at_ms = Some(NOW - running_ms);
        }
        // The earliest push still sending sets the pace.
        progress(&mut journal, "work").push_started_at_ms = Some(NOW - running_ms / 2);
        waits(decide(&plan(), &journal, &await_obs(PushStatus::Sending))).duration.as_millis()
    };
    assert_eq!(wait_after(0), 50);
    assert_eq!(wait_after(2_000), 100);
    assert_eq!(wait_after(3_000), 150);
    assert_eq!(plan().settings.poll_interval.as_millis(), 200);
    assert_eq!(wait_after(60_000), 200);
}

#[test]
fn await_push_cancels_a_push_past_its_deadline_or_after_a_failed_start() {
    let mut journal = sending_journal();
    let mut obs = await_obs(PushStatus::Sending);
    assert!(matches!(decide(&plan(), &journal, &obs), Decision::Wait(_)));
    progress(&mut journal, "work").push_start_failed = true;
    assert_eq!(acts(decide(&plan(), &journal, &obs)), vec![Action::CancelPush(cache("work"))]);
    obs.now_ms = NOW + plan().settings.push_deadline.as_millis() as u64;
    assert_eq!(acts(decide(&plan(), &journal, &obs)).len(), 4);
}

#[test]
fn await_push_recovers_cancel_then_cancel_receive_then_clear_then_push() {
    let mut journal = sending_journal();
    let mut obs = await_obs(PushStatus::Canceled);
    all_push(&mut obs, PushStatus::Ok);
    push(&mut obs, "work", PushStatus::Canceled);
    for c in CACHES.iter().take(3) {
        progress(&mut journal, c).push = PushPhase::Ok;
    }
    progress(&mut journal, "work").push = PushPhase::CancelReceive;
    assert_eq!(acts(decide(&plan(), &journal, &obs)), vec![Action::CancelReceive(cache("work"))]);
    progress(&mut journal, "work").push = PushPhase::ClearStatus;
    assert_eq!(acts(decide(&plan(), &journal, &obs)), vec![Action::ClearPushStatus(cache("work"))]);
    push(&mut obs, "work", PushStatus::Sending);
    assert_eq!(acts(decide(&plan(), &journal, &obs)), vec![Action::CancelPush(cache("work"))], "still sending: cancel again");
    progress(&mut journal, "work").push = PushPhase::NotStarted;
    push(&mut obs, "work", PushStatus::Idle);
    assert_eq!(acts(decide(&plan(), &journal, &obs)), vec![Action::StartPush(cache("work"))]);
}

#[test]
fn await_push_keeps_the_active_backup_online() {
    let journal = sending_journal();
    let mut obs = await_obs(PushStatus::Sending);
    obs.status.insert((Side::Active, cache("work")), BackupStatus::Offline);
    assert_eq!(acts(decide(&plan(), &journal, &obs)), vec![Action::BringOnline(Side::Active, cache("work"))]);
}

#[test]
fn clear_push_status_clears_ok_statuses_and_notes_already_idle_ones() {
    let mut journal = journal_at(Step::ClearPushStatus);
    every_push(&mut journal, PushPhase::Ok);
    let mut obs = Observation::at(NOW);
    all_push(&mut obs, PushStatus::Ok);
    assert_eq!(acts(decide(&plan(), &journal, &obs)).len(), 4);
    push(&mut obs, "work", PushStatus::Idle);
    assert_eq!(decide(&plan(), &journal, &obs), Decision::Note(vec![Note::PushDone(cache("work"))]));
    every_push(&mut journal, PushPhase::Done);
    assert_eq!(decide(&plan(), &journal, &obs), Decision::Advance);
}

// ----- verify, scale up, report ----------------------------------------------------------------------

fn verify_obs(sizes: Sizes) -> Observation {
    let mut obs = Observation::at(NOW);
    linked(&mut obs);
    for c in CACHES {
        obs.sizes.insert(cache(c), sizes);
    }
    obs
}

fn sizes_plan() -> Plan {
    let mut plan = plan();
    plan.settings.verify = VerifyLevel::Sizes;
    plan
}

fn content(only_active: u64, only_offline: u64, different_values: u64, transient: u64) -> ContentCheck {
    ContentCheck {
        level: VerifyLevel::Entries,
        active: 100,
        offline: 100,
        only_active,
        only_offline,
        different_values,
        transient,
        unreadable: None,
    }
}

fn content_obs(check: ContentCheck) -> Observation {
    let mut obs = Observation::at(NOW);
    linked(&mut obs);
    for c in CACHES {
        obs.content.insert(cache(c), check.clone());
    }
    obs
}

#[test]
fn size_verdicts_tell_equal_drift_and_mismatch_apart() {
    use sync_core::decide::sizes_verdict;
    let sizes = VerifyLevel::Sizes;
    let equal = Sizes { active_before: 10, offline: 10, active_after: 10 };
    assert_eq!(sizes_verdict(&equal, 0), Verdict::Equal { entries: 10, compared: sizes });
    let traffic = Sizes { active_before: 10, offline: 11, active_after: 12 };
    assert_eq!(sizes_verdict(&traffic, 0), Verdict::Drift { active: 12, offline: 11, compared: sizes, transient: 0 });
    let short = Sizes { active_before: 10, offline: 4, active_after: 10 };
    assert!(matches!(sizes_verdict(&short, 0), Verdict::Mismatch { active: 10, offline: 4, .. }));
    assert!(matches!(sizes_verdict(&short, 6), Verdict::Drift { .. }), "within the tolerance");
    let settled_late = Sizes { active_before: 8, offline: 10, active_after: 10 };
    assert!(matches!(sizes_verdict(&settled_late, 0), Verdict::Drift { .. }), "the active site moved between its reads");
    let above = Sizes { active_before: 10, offline: 12, active_after: 10 };
    assert!(matches!(sizes_verdict(&above, 3), Verdict::Drift { .. }), "above the range, within the tolerance");
    assert!(matches!(sizes_verdict(&above, 1), Verdict::Mismatch { .. }), "above the range and the tolerance");
    let below_range = Sizes { active_before: 20, offline: 5, active_after: 10 };
    assert!(matches!(sizes_verdict(&below_range, 0), Verdict::Mismatch { .. }), "below both reads of the active site");
}

#[test]
fn content_verdicts_count_what_both_reads_showed_and_name_what_was_compared() {
    use sync_core::decide::content_verdict;
    let entries = VerifyLevel::Entries;
    assert_eq!(content_verdict(&content(0, 0, 0, 0), 0), Verdict::Equal { entries: 100, compared: entries });
    assert_eq!(
        content_verdict(&content(0, 0, 0, 3), 0),
        Verdict::Drift { active: 100, offline: 100, compared: entries, transient: 3 }
    );
    let mismatch = content_verdict(&content(0, 0, 2, 0), 0);
    assert!(matches!(mismatch, Verdict::Mismatch { different_values: 2, .. }));
    assert!(mismatch.push_can_repair(), "a push overwrites values");
    assert!(!content_verdict(&content(0, 4, 0, 0), 0).push_can_repair(), "a push never deletes");
    assert!(matches!(content_verdict(&content(0, 0, 2, 0), 2), Verdict::Drift { transient: 2, .. }), "within the tolerance");
    assert_eq!(Verdict::Equal { entries: 3850, compared: entries }.to_string(), "equal: 3,850 keys and values");
    assert_eq!(Verdict::Equal { entries: 3850, compared: VerifyLevel::Sizes }.to_string(), "equal sizes (3,850 entries)");
}

#[test]
fn verify_compares_keys_and_values_by_default_and_notes_verdicts() {
    let journal = journal_at(Step::Verify);
    let Decision::Observe(probes) =
        decide(&plan(), &journal, &verify_obs(Sizes { active_before: 5, offline: 5, active_after: 5 }))
    else {
        panic!()
    };
    assert!(probes.iter().all(|p| matches!(p, Probe::Content { .. })) && probes.len() == 4, "{probes:?}");
    let noted = notes(decide(&plan(), &journal, &content_obs(content(0, 0, 0, 0))));
    assert_eq!(noted.len(), 4);
    assert!(
        noted.iter().all(|n| matches!(n, Note::Verified(_, Verdict::Equal { entries: 100, compared: VerifyLevel::Entries })))
    );
}

#[test]
fn verify_pushes_again_once_when_values_differ_then_fails() {
    let mut journal = journal_at(Step::Verify);
    let obs = content_obs(content(0, 0, 5, 0));
    assert!(notes(decide(&plan(), &journal, &obs)).iter().all(|n| matches!(n, Note::Repush(_))));
    for c in CACHES {
        progress(&mut journal, c).verify_repushes = 1;
    }
    let Failure::VerifyMismatch { verdict, .. } = failed(decide(&plan(), &journal, &obs)) else { panic!() };
    assert!(matches!(verdict, Verdict::Mismatch { different_values: 5, .. }));
}

#[test]
fn verify_by_sizes_notes_verdicts_then_advances() {
    let journal = journal_at(Step::Verify);
    let noted = notes(decide(&sizes_plan(), &journal, &verify_obs(Sizes { active_before: 7, offline: 7, active_after: 7 })));
    assert_eq!(noted.len(), 4);
    assert!(noted.iter().all(|n| matches!(n, Note::Verified(_, Verdict::Equal { entries: 7, compared: VerifyLevel::Sizes }))));
}

#[test]
fn verify_by_sizes_pushes_again_once_when_entries_are_missing_then_fails() {
    let mut journal = journal_at(Step::Verify);
    let obs = verify_obs(Sizes { active_before: 9, offline: 3, active_after: 9 });
    assert!(notes(decide(&sizes_plan(), &journal, &obs)).iter().all(|n| matches!(n, Note::Repush(_))));
    for c in CACHES {
        progress(&mut journal, c).verify_repushes = 1;
    }
    let Failure::VerifyMismatch { verdict, .. } = failed(decide(&sizes_plan(), &journal, &obs)) else { panic!() };
    assert!(matches!(verdict, Verdict::Mismatch { active: 9, offline: 3, .. }));
}

#[test]
fn verify_fails_on_extra_entries_a_push_cannot_remove() {
    let obs = verify_obs(Sizes { active_before: 5, offline: 9, active_after: 5 });
    let Failure::VerifyMismatch { verdict, .. } = failed(decide(&sizes_plan(), &journal_at(Step::Verify), &obs)) else {
        panic!()
    };
    assert!(matches!(verdict, Verdict::Mismatch { offline: 9, .. }));
}

#[test]
fn verify_waits_for_a_lost_link() {
    let mut journal = journal_at(Step::Verify);
    journal.link_down_since_ms = Some(NOW);
    let mut obs = content_obs(content(0, 0, 0, 0));
    unlinked(&mut obs);
    assert_eq!(waits(decide(&plan(), &journal, &obs)).what, "the cross-site link between site-a and site-b");
}

#[test]
fn scale_up_is_refused_without_an_ok_push_for_every_cache() {
    let mut journal = journal_at(Step::ScaleUp);
    every_push(&mut journal, PushPhase::Done);
    progress(&mut journal, "work").push = PushPhase::Sending;
    let mut obs = Observation::at(NOW);
    obs.keycloak = Some(Some(keycloak(0, 0, 0)));
    assert_eq!(refused(decide(&plan(), &journal, &obs)), Refusal::ScaleUpInterlock { caches: vec![cache("work")] });
    progress(&mut journal, "work").push = PushPhase::Done;
    assert_eq!(acts(decide(&plan(), &journal, &obs)), vec![Action::ScaleUp(3)]);
    obs.keycloak = Some(Some(keycloak(3, 3, 3)));
    assert_eq!(decide(&plan(), &journal, &obs), Decision::Advance);
    // Scaled, not yet ready; or ready, at another count: not done.
    obs.keycloak = Some(Some(keycloak(3, 1, 3)));
    assert_eq!(acts(decide(&plan(), &journal, &obs)), vec![Action::ScaleUp(3)]);
    obs.keycloak = Some(Some(keycloak(2, 3, 3)));
    assert_eq!(acts(decide(&plan(), &journal, &obs)), vec![Action::ScaleUp(3)]);
}

#[test]
fn report_checks_once_more_and_repushes_a_cache_that_lost_entries() {
    let journal = journal_at(Step::Report);
    let ok = verify_obs(Sizes { active_before: 4, offline: 4, active_after: 4 });
    assert_eq!(decide(&plan(), &journal, &ok), Decision::Finish(Ending::Succeeded));
    let lost = verify_obs(Sizes { active_before: 4, offline: 0, active_after: 4 });
    let Decision::Note(notes) = decide(&plan(), &journal, &lost) else { panic!() };
    assert!(notes.iter().any(|n| matches!(n, Note::Repush(_))));
    assert!(
        notes
            .iter()
            .any(|n| matches!(n, Note::Warning(w) if w.contains("lost entries on the offline site after verification (0 of 4)"))),
        "{notes:?}"
    );
}

#[test]
fn report_leaves_the_restarted_keycloaks_own_bookkeeping_on_the_offline_site_alone() {
    let mut journal = journal_at(Step::Report);
    let mut obs = verify_obs(Sizes { active_before: 3, offline: 3, active_after: 3 });
    obs.sizes.insert(cache("work"), Sizes { active_before: 3, offline: 7, active_after: 3 });
    let Decision::Note(notes) = decide(&plan(), &journal, &obs) else { panic!("a note first") };
    let [Note::Warning(warning)] = notes.as_slice() else { panic!("{notes:?}") };
    assert!(
        warning.contains("cache 'work' holds more entries on site-b than on site-a") && warning.contains("not users' data"),
        "{warning}"
    );
    journal.warnings.push(warning.clone());
    assert_eq!(decide(&plan(), &journal, &obs), Decision::Finish(Ending::Succeeded));
    // More entries on the offline site of a cache users write to is no bookkeeping: a failure.
    obs.sizes.insert(cache("loginFailures"), Sizes { active_before: 3, offline: 7, active_after: 3 });
    assert!(matches!(failed(decide(&plan(), &journal, &obs)), Failure::VerifyMismatch { .. }));
}

#[test]
fn a_step_reaching_its_deadline_goes_on_and_fails_only_past_it() {
    let deadline = NOW + plan().settings.step_deadline.as_millis() as u64;
    let journal = journal_at(Step::ClearCaches);
    assert!(!matches!(decide(&plan(), &journal, &Observation::at(deadline)), Decision::Finish(_)));
    assert!(matches!(failed(decide(&plan(), &journal, &Observation::at(deadline + 1))), Failure::Deadline { .. }));
}

#[test]
fn a_deadline_names_the_caches_its_step_still_waits_for() {
    let past = Observation::at(NOW + plan().settings.step_deadline.as_millis() as u64 + 1);
    let why = |journal: &Journal| match failed(decide(&plan(), journal, &past)) {
        Failure::Deadline { why, .. } => why,
        other => panic!("expected a deadline, got {other:?}"),
    };
    let advice = "; raise step_deadline (10m) if the data is just large";

    let mut clearing = journal_at(Step::ClearCaches);
    progress(&mut clearing, "actionTokens").cleared = true;
    progress(&mut clearing, "work").cleared = true;
    assert_eq!(why(&clearing), format!("caches not done: authenticationSessions, loginFailures{advice}"));

    for step in [Step::PushState, Step::AwaitPush] {
        let mut pushing = journal_at(step);
        progress(&mut pushing, "actionTokens").push = PushPhase::Ok;
        progress(&mut pushing, "loginFailures").push = PushPhase::Done;
        progress(&mut pushing, "work").push = PushPhase::Sending;
        assert_eq!(why(&pushing), format!("caches not done: authenticationSessions, work{advice}"), "{step}");
    }

    let mut clearing_status = journal_at(Step::ClearPushStatus);
    progress(&mut clearing_status, "actionTokens").push = PushPhase::Done;
    progress(&mut clearing_status, "authenticationSessions").push = PushPhase::Ok;
    assert_eq!(why(&clearing_status), format!("caches not done: authenticationSessions, loginFailures, work{advice}"));

    let mut verifying = journal_at(Step::Verify);
    progress(&mut verifying, "loginFailures").verdict = Some(Verdict::Equal { entries: 1, compared: VerifyLevel::Entries });
    assert_eq!(why(&verifying), format!("caches not done: actionTokens, authenticationSessions, work{advice}"));

    let mut taking_offline = journal_at(Step::TakeOffline);
    progress(&mut taking_offline, "actionTokens").cleared = true;
    assert_eq!(
        why(&taking_offline),
        format!("caches not done: actionTokens, authenticationSessions, loginFailures, work{advice}")
    );
}

#[test]
fn every_waiting_step_fails_past_its_deadline() {
    for step in [
        Step::TakeOffline,
        Step::ClearCaches,
        Step::BringOnline,
        Step::PushState,
        Step::AwaitPush,
        Step::ClearPushStatus,
        Step::Verify,
    ] {
        let journal = journal_at(step);
        let obs = Observation::at(NOW + plan().settings.step_deadline.as_millis() as u64 + 1);
        assert!(matches!(failed(decide(&plan(), &journal, &obs)), Failure::Deadline { step: s, .. } if s == step), "{step}");
    }
    let obs = Observation::at(NOW + Duration::from_secs(86_400).as_millis() as u64);
    assert!(!matches!(decide(&plan(), &journal_at(Step::ScaleDown), &obs), Decision::Finish(_)), "scaling has its own timeout");
}

#[test]
fn settings_outside_their_ranges_are_refused_with_the_range() {
    let mut plan = plan();
    plan.settings.parallelism = 0;
    assert_eq!(plan.validate().unwrap_err().to_string(), "settings.parallelism: 0 is out of range; allowed: 1 to 64");
    plan.settings.parallelism = 4;
    plan.settings.poll_interval = Duration::ZERO;
    assert_eq!(plan.validate().unwrap_err().to_string(), "settings.poll_interval: 0 ms is out of range; allowed: 10 ms to 1m");
    plan.settings.poll_interval = Duration::from_millis(500);
    plan.settings.link_wait = Duration::from_secs(25 * 3600);
    assert_eq!(plan.validate().unwrap_err().to_string(), "settings.link_wait: 1d 1h is out of range; allowed: 0 ms to 1d");
    plan.settings.link_wait = Duration::ZERO;
    assert!(plan.validate().is_ok(), "no wait at all is allowed: stop as soon as the link is lost");
}

#[test]
fn plans_naming_one_site_twice_are_invalid() {
    let mut plan: Plan = plan();
    plan.offline.name = site("site-a");
    assert!(plan.validate().is_err());
    plan = super::support::plan();
    plan.caches = CacheSelection::Explicit(vec![cache("work"), cache("work")]);
    assert!(plan.validate().unwrap_err().to_string().contains("twice"));
}
