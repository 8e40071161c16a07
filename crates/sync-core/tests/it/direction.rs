//! The direction guard's judgement on hand-built readings: how writes are counted (statistics,
//! sizes when they are off or reset), what replication adds to the counts, and what each verdict
//! says.

use std::time::Duration;

use sync_core::direction::{CacheReading, Context, Counting, judge};
use sync_core::vocabulary::{DirectionVerdict, WriteSample};

use crate::support::{cache, site};

fn context() -> Context {
    Context {
        active: site("site-a"),
        offline: site("site-b"),
        active_counting: Counting::ONE_NODE,
        offline_counting: Counting::ONE_NODE,
        window: Duration::from_secs(2),
        offline_lb_check: None,
        manages_offline_keycloak: true,
        overridden: false,
    }
}

fn sample(writes: Option<u64>, since_reset_s: u64, size: u64) -> WriteSample {
    WriteSample { writes, since_reset_s: writes.map(|_| since_reset_s), size }
}

/// `authenticationSessions` with the given (first, second) samples on each site, no replication.
fn reading(active: (WriteSample, WriteSample), offline: (WriteSample, WriteSample)) -> CacheReading {
    CacheReading { cache: cache("authenticationSessions"), active, offline, active_replicates: false, offline_replicates: false }
}

fn steady(writes: u64) -> (WriteSample, WriteSample) {
    (sample(Some(100), 60, 50), sample(Some(100 + writes), 62, 50 + writes))
}

#[test]
fn writes_replicated_from_the_other_site_are_not_the_receivers_own() {
    // The active site's backup replicates: its 30 writes are counted on site-b too.
    let mut r = reading(steady(30), steady(30));
    r.active_replicates = true;
    let record = judge(&context(), &[r.clone()]);
    assert_eq!(record.verdict, DirectionVerdict::Agrees);
    assert!(record.offline.writes.is_empty(), "{record:?}");
    // site-b's own 5 writes on top of them show.
    r.offline = steady(35);
    let record = judge(&context(), &[r]);
    assert_eq!(record.offline.writes, vec![(cache("authenticationSessions"), 5)]);
    assert!(matches!(record.verdict, DirectionVerdict::Against { active_quiet: false, .. }));
}

#[test]
fn on_sites_of_several_nodes_only_what_one_node_counted_is_evidence() {
    // Counters are the answering node's: writes through the other nodes are not counted, and
    // replicated ones only on the site master that received them.
    let two_nodes = |site_master| Counting { nodes: 2, site_master };
    let mut r = reading(steady(30), steady(30));
    r.active_replicates = true;
    // site-b's answering node is not its site master: all 30 it counted went through it.
    let mut context = context();
    context.offline_counting = two_nodes(false);
    let record = judge(&context, &[r.clone()]);
    assert_eq!(record.offline.writes, vec![(cache("authenticationSessions"), 30)]);
    assert!(matches!(record.verdict, DirectionVerdict::Against { .. }), "{record:?}");
    // Its site master, beside a one-node site-a: site-a's 30 are the whole site's, taken out.
    context.offline_counting = two_nodes(true);
    let record = judge(&context, &[r.clone()]);
    assert!(record.offline.writes.is_empty(), "{record:?}");
    // A quiet node of two says nothing about the other: not an agreement.
    assert!(
        matches!(&record.verdict, DirectionVerdict::Inconclusive { reason } if reason.contains("one of 2: writes through the others are not seen")),
        "{record:?}"
    );
    // Its site master, beside a site-a of two whose node counted 10 of its writes: the 30 site-b
    // counted may all be site-a's. Never refused on that.
    context.active_counting = two_nodes(true);
    r.active = steady(10);
    let record = judge(&context, &[r]);
    assert!(
        matches!(&record.verdict, DirectionVerdict::Inconclusive { reason } if reason.contains("cannot be told from its own: site-a's counters are those of one of its 2 nodes")),
        "{record:?}"
    );
}

#[test]
fn replication_both_ways_cannot_be_told_apart_and_is_inconclusive() {
    let mut r = reading(steady(30), steady(30));
    r.active_replicates = true;
    r.offline_replicates = true;
    let record = judge(&context(), &[r]);
    assert!(
        matches!(&record.verdict, DirectionVerdict::Inconclusive { reason } if reason.contains("replicates both ways")),
        "{record:?}"
    );
}

#[test]
fn without_statistics_a_size_that_grows_still_counts_and_one_that_does_not_tells_nothing() {
    let off = |size: u64, grown: u64| (sample(None, 0, size), sample(None, 0, size + grown));
    let record = judge(&context(), &[reading(steady(0), off(50, 7))]);
    assert_eq!(record.offline.writes, vec![(cache("authenticationSessions"), 7)]);
    assert!(record.offline.unknown[0].1.contains("counted by its size (no statistics)"), "{record:?}");
    assert!(matches!(record.verdict, DirectionVerdict::Against { active_quiet: true, .. }));
    let record = judge(&context(), &[reading(steady(12), off(50, 0))]);
    assert!(
        matches!(&record.verdict, DirectionVerdict::Inconclusive { reason } if reason.contains("its statistics are off, and its size did not grow")),
        "{record:?}"
    );
}

#[test]
fn counters_reset_during_the_window_say_nothing_but_sizes_still_do() {
    // Reset between the readings: the counter went from 100 to 4, and time since reset back to 1 s.
    let reset = (sample(Some(100), 60, 50), sample(Some(4), 1, 50));
    let record = judge(&context(), &[reading(steady(9), reset)]);
    assert!(
        matches!(&record.verdict, DirectionVerdict::Inconclusive { reason } if reason.contains("reset during the window")),
        "{record:?}"
    );
    let reset_and_grown = (sample(Some(100), 60, 50), sample(Some(4), 1, 53));
    let record = judge(&context(), &[reading(steady(9), reset_and_grown)]);
    assert_eq!(record.offline.writes, vec![(cache("authenticationSessions"), 3)]);
}

#[test]
fn an_unmanaged_keycloak_in_the_load_balancer_is_refused_even_without_writes() {
    let mut context = context();
    context.offline_lb_check = Some(200);
    context.manages_offline_keycloak = false;
    let record = judge(&context, &[reading(steady(4), steady(0))]);
    assert!(
        matches!(&record.verdict, DirectionVerdict::Against { reason, .. } if reason.contains("site-b's Keycloak answers /lb-check 200 and site-sync does not stop it")),
        "{record:?}"
    );
    // Managed, it is site-sync's to stop: no refusal on that ground.
    context.manages_offline_keycloak = true;
    assert_eq!(judge(&context, &[reading(steady(4), steady(0))]).verdict, DirectionVerdict::Agrees);
}

#[test]
fn the_evidence_names_every_cache_a_site_wrote_to() {
    let record = judge(
        &context(),
        &[
            reading(steady(0), steady(212)),
            CacheReading { cache: cache("loginFailures"), ..reading(steady(0), steady(3)) },
            CacheReading { cache: cache("work"), ..reading(steady(0), steady(50)) },
        ],
    );
    assert_eq!(record.offline.describe(), "site-b took 212 writes to authenticationSessions and 3 to loginFailures");
    assert_eq!(record.active.describe(), "site-a took none");
}
