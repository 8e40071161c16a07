//! The bounded-memory key comparison against set arithmetic, with budgets small enough to force
//! many passes.

use std::collections::BTreeMap;

use fake_ispn::{ClusterSpec, FakeCluster};
use ispn_xsite::CacheName;
use proptest::prelude::*;
use sync_core::compare::{CompareLimits, CompareMode, Comparison, Difference, compare, content_check};
use sync_core::vocabulary::VerifyLevel;

/// Where one key lives: on the active site, on the offline site, and whether both hold one value.
#[derive(Debug, Clone, Copy)]
struct Placement {
    active: bool,
    offline: bool,
    same_value: bool,
}

/// Which placements make a key belong to one kind of difference.
type Kind = fn(&Placement) -> bool;

fn placement() -> impl Strategy<Value = Placement> {
    (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(active, offline, same_value)| Placement {
        active,
        offline,
        same_value,
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, rng_seed: proptest::test_runner::RngSeed::Fixed(0x5173_d1ff), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn counts_and_samples_match_set_arithmetic_whatever_the_number_of_passes(
        keys in proptest::collection::btree_map("[a-z0-9]{1,8}", placement(), 0..200),
        budget in 1usize..64,
        sketch in 1usize..64,
        sample in 0usize..4,
        entries in any::<bool>(),
    ) {
        let cache = CacheName::new("work").unwrap();
        let fake = FakeCluster::model(ClusterSpec::two_sites("site-a", "site-b"));
        {
            let mut world = fake.world();
            let on = |side: usize| keys.iter().filter(move |(_, p)| if side == 0 { p.active } else { p.offline });
            world.load(0, &cache, on(0).map(|(k, _)| (k.clone(), "v".to_owned())));
            world.load(1, &cache, on(1).map(|(k, p)| (k.clone(), if p.same_value { "v" } else { "w" }.to_owned())));
        }
        let mode = if entries { CompareMode::Entries } else { CompareMode::Keys };
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let result = runtime
            .block_on(compare(&fake.site("site-a"), &fake.site("site-b"), &cache, mode, CompareLimits { sketch, budget, sample }))
            .unwrap();

        let count = |f: &dyn Fn(&Placement) -> bool| keys.values().filter(|p| f(p)).count() as u64;
        let active = count(&|p| p.active);
        prop_assert_eq!(result.active, active);
        prop_assert_eq!(result.offline, count(&|p| p.offline));
        prop_assert_eq!(result.only_active, count(&|p| p.active && !p.offline));
        prop_assert_eq!(result.only_offline, count(&|p| p.offline && !p.active));
        let differing = if entries { count(&|p| p.active && p.offline && !p.same_value) } else { 0 };
        prop_assert_eq!(result.different_values, differing);
        // Sites that agree take one pass over each stream, and so do differences a sketch
        // recovers, but for the pass that fetches sample names; more differences than a (tiny)
        // sketch holds are compared exactly, within the budget, over more passes.
        if result.is_equal() {
            prop_assert_eq!(result.passes, 1);
        } else if sample > 0 {
            prop_assert!(result.passes >= 2);
        }
        prop_assert_eq!(result.is_equal(), result.only_active + result.only_offline + differing == 0);

        let samples: [(&Vec<String>, u64, Kind); 3] = [
            (&result.sample_only_active, result.only_active, |p| p.active && !p.offline),
            (&result.sample_only_offline, result.only_offline, |p| p.offline && !p.active),
            (&result.sample_different, differing, |p| p.active && p.offline && !p.same_value),
        ];
        let placements: BTreeMap<&String, &Placement> = keys.iter().collect();
        for (sampled, total, kind) in samples {
            prop_assert_eq!(sampled.len() as u64, total.min(sample as u64));
            for key in sampled {
                prop_assert!(kind(placements[key]), "{key} sampled under the wrong kind");
            }
        }
    }
}

fn load(fake: &FakeCluster, site: usize, cache: &CacheName, entries: &[(&str, &str)]) {
    fake.world().load(site, cache, entries.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
}

#[test]
fn sites_that_agree_are_compared_in_one_pass_over_each_whatever_their_size() {
    let cache = CacheName::new("work").unwrap();
    let fake = FakeCluster::model(ClusterSpec::two_sites("site-a", "site-b"));
    let entries: Vec<(String, String)> = (0..50_000).map(|i| (format!("key-{i}"), format!("value-{i}"))).collect();
    fake.world().load(0, &cache, entries.clone());
    fake.world().load(1, &cache, entries);
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let limits = CompareLimits { budget: 1_000, ..CompareLimits::default() };
    let result =
        runtime.block_on(compare(&fake.site("site-a"), &fake.site("site-b"), &cache, CompareMode::Entries, limits)).unwrap();
    assert!(result.is_equal());
    assert_eq!((result.active, result.offline, result.passes), (50_000, 50_000, 1));
}

#[test]
fn a_second_read_tells_live_traffic_from_real_differences() {
    let cache = CacheName::new("work").unwrap();
    let fake = FakeCluster::model(ClusterSpec::two_sites("site-a", "site-b"));
    load(&fake, 0, &cache, &[("same", "v"), ("stale", "new"), ("written-during-the-read", "x"), ("missing", "m")]);
    load(&fake, 1, &cache, &[("same", "v"), ("stale", "old")]);
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let (a, b) = (fake.site("site-a"), fake.site("site-b"));
    let read = || runtime.block_on(compare(&a, &b, &cache, CompareMode::Entries, CompareLimits::default())).unwrap();
    let first = read();
    assert_eq!((first.only_active, first.different_values), (2, 1));
    // The write reached the offline site after the first read; another arrived on the active site.
    load(&fake, 1, &cache, &[("written-during-the-read", "x")]);
    load(&fake, 0, &cache, &[("written-after", "y")]);
    let second = read();
    let check = content_check(VerifyLevel::Entries, &first, Some(&second));
    assert_eq!((check.only_active, check.only_offline, check.different_values), (1, 0, 1), "both reads agree on these");
    assert_eq!(check.transient, 2, "one difference gone, one new");
    assert_eq!((check.active, check.offline), (5, 3), "counts of the later read");
    let alone = content_check(VerifyLevel::Entries, &first, None);
    assert_eq!((alone.only_active, alone.different_values, alone.transient), (2, 1, 0));
}

/// One comparison of site-a (active) with site-b (offline).
fn compare_pair(fake: &FakeCluster, cache: &CacheName, mode: CompareMode, limits: CompareLimits) -> Comparison {
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    runtime.block_on(compare(&fake.site("site-a"), &fake.site("site-b"), cache, mode, limits)).unwrap()
}

/// One read's result as `compare` gives it: the counts, and the fingerprints it remembered.
fn read(only_active: u64, only_offline: u64, different_values: u64, remembered: &[(u64, Difference)]) -> Comparison {
    Comparison {
        active: 100,
        offline: 100,
        only_active,
        only_offline,
        different_values,
        differing: remembered.to_vec(),
        ..Comparison::default()
    }
}

#[test]
fn two_reads_agree_on_what_both_remember_of_every_kind() {
    use Difference::{OnlyActive, OnlyOffline, Value};
    let first = read(2, 1, 1, &[(1, OnlyActive), (2, OnlyActive), (3, OnlyOffline), (4, Value)]);
    let second = read(2, 1, 1, &[(1, OnlyActive), (5, OnlyActive), (3, OnlyOffline), (4, Value)]);
    let check = content_check(VerifyLevel::Entries, &first, Some(&second));
    assert_eq!((check.only_active, check.only_offline, check.different_values), (1, 1, 1), "{check:?}");
    assert_eq!(check.transient, 2, "key 2 gone, key 5 new");
}

#[test]
fn a_read_with_more_differences_than_it_remembers_counts_the_later_read_whole() {
    // A read found three keys only on the active site and remembered two of them: the third
    // cannot be matched across the reads, so it must not be called transient, whichever read
    // forgot it.
    use Difference::OnlyActive;
    let whole = read(3, 0, 0, &[(1, OnlyActive), (2, OnlyActive), (3, OnlyActive)]);
    let truncated = read(3, 0, 0, &[(1, OnlyActive), (2, OnlyActive)]);
    for (first, second) in [(&truncated, &truncated), (&whole, &truncated), (&truncated, &whole)] {
        let check = content_check(VerifyLevel::Keys, first, Some(second));
        assert_eq!((check.only_active, check.transient), (3, 0), "{check:?}");
    }
}

#[test]
fn a_read_remembers_a_hundred_thousand_differing_keys_and_counts_the_rest() {
    let cache = CacheName::new("work").unwrap();
    let fake = FakeCluster::model(ClusterSpec::two_sites("site-a", "site-b"));
    fake.world().load(0, &cache, (0..100_001).map(|i| (format!("key-{i}"), "v".to_owned())));
    let result = compare_pair(&fake, &cache, CompareMode::Keys, CompareLimits { sample: 0, ..CompareLimits::default() });
    assert_eq!((result.only_active, result.differing.len()), (100_001, 100_000));
}

#[test]
fn a_verification_lists_each_site_once_per_read_and_compares_values_both_times() {
    use sync_core::compare::check_content;
    let cache = CacheName::new("work").unwrap();
    let fake = FakeCluster::model(ClusterSpec::two_sites("site-a", "site-b"));
    load(&fake, 0, &cache, &[("same", "v"), ("stale", "new")]);
    load(&fake, 1, &cache, &[("same", "v"), ("stale", "old")]);
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let (a, b) = (fake.site("site-a"), fake.site("site-b"));
    let check = runtime.block_on(check_content(&a, &b, &cache, VerifyLevel::Entries, async {})).unwrap();
    assert_eq!((check.level, check.different_values, check.transient), (VerifyLevel::Entries, 1, 0), "{check:?}");
    // The sites differ, so they are read twice; a verdict counts differences and names no keys,
    // so neither read pays for a pass that fetches sample names.
    let listings: Vec<String> = fake
        .world()
        .requests()
        .iter()
        .filter(|r| r.what.contains("?action="))
        .map(|r| format!("{} {}", r.site, r.what))
        .collect();
    assert_eq!(listings.len(), 4, "{listings:#?}");
    assert!(listings.iter().all(|l| l.contains("action=entries")), "{listings:#?}");
}

#[test]
fn a_few_differences_among_many_keys_are_found_in_one_pass_and_named_in_a_second() {
    let cache = CacheName::new("work").unwrap();
    let fake = FakeCluster::model(ClusterSpec::two_sites("site-a", "site-b"));
    let entries: Vec<(String, String)> = (0..50_000).map(|i| (format!("key-{i}"), format!("value-{i}"))).collect();
    fake.world().load(0, &cache, entries.iter().filter(|(k, _)| k != "key-7").cloned());
    fake.world().load(1, &cache, entries.iter().filter(|(k, _)| k != "key-8").cloned());
    load(&fake, 1, &cache, &[("key-9", "other")]);
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let (a, b) = (fake.site("site-a"), fake.site("site-b"));
    let compare_with = |limits| runtime.block_on(compare(&a, &b, &cache, CompareMode::Entries, limits)).unwrap();
    let counted = compare_with(CompareLimits { sample: 0, ..CompareLimits::default() });
    assert_eq!((counted.only_active, counted.only_offline, counted.different_values, counted.passes), (1, 1, 1, 1));
    let named = compare_with(CompareLimits::default());
    assert_eq!(named.passes, 2);
    assert_eq!(
        (named.sample_only_active, named.sample_only_offline, named.sample_different),
        (vec!["key-8".to_owned()], vec!["key-7".to_owned()], vec!["key-9".to_owned()])
    );
    // A sketch too small for the differences: the exact comparison gives the same answer.
    let exact = compare_with(CompareLimits { sketch: 1, budget: 10_000, sample: 5 });
    assert_eq!((exact.only_active, exact.only_offline, exact.different_values), (1, 1, 1));
    assert_eq!(exact.passes, 1 + 5 + 1, "the sketch's pass, five exact passes within the budget, the sample names");
}

#[test]
fn differences_filling_half_the_sketch_are_recovered_in_its_one_pass() {
    // Three tables of 256 cells hold 768 cells; 300 keys missing on the offline site and 40
    // values that differ (a pair on each side) leave 380 pairs to recover: about half, well
    // below the 81% at which peeling starts to fail.
    let cache = CacheName::new("work").unwrap();
    let fake = FakeCluster::model(ClusterSpec::two_sites("site-a", "site-b"));
    let entries: Vec<(String, String)> = (0..5_000).map(|i| (format!("key-{i}"), format!("value-{i}"))).collect();
    fake.world().load(0, &cache, entries.iter().cloned());
    let offline = entries.iter().enumerate().filter(|(i, _)| i % 15 != 0 || *i >= 4_500).map(|(i, (key, value))| {
        if i % 100 == 1 && i < 4_000 { (key.clone(), "changed".to_owned()) } else { (key.clone(), value.clone()) }
    });
    fake.world().load(1, &cache, offline);
    let result = compare_pair(&fake, &cache, CompareMode::Entries, CompareLimits { sketch: 256, budget: 1_000_000, sample: 0 });
    assert_eq!((result.only_active, result.only_offline, result.different_values), (300, 0, 40));
    assert_eq!(result.passes, 1, "the sketch did not recover what it holds; the exact comparison had to");
}

#[test]
fn fifty_thousand_differences_with_one_value_are_told_apart_by_the_sketch() {
    // A fresh offline site after a push that never ran, in a cache whose entries all hold the same
    // value (markers, tombstones). The sketch recovers a pair only when no other differing pair
    // shares its check hash: the hashes must tell 50,000 keys apart even when the values do not
    // help, or the comparison would need the exact passes.
    let cache = CacheName::new("work").unwrap();
    let fake = FakeCluster::model(ClusterSpec::two_sites("site-a", "site-b"));
    fake.world().load(0, &cache, (0..50_000).map(|i| (format!("session-{i}"), "1".to_owned())));
    let result = compare_pair(&fake, &cache, CompareMode::Entries, CompareLimits { sample: 0, ..CompareLimits::default() });
    assert_eq!((result.active, result.offline, result.only_active), (50_000, 0, 50_000));
    assert_eq!(result.passes, 1, "two differing pairs shared a check hash");
}

/// Two sites whose `authenticationSessions` share keys and differ in one value, with `faults` on
/// the active site's copy; what `entries` compares there.
fn content_check_with_faults(faults: fake_ispn::CacheFaults) -> sync_core::observe::ContentCheck {
    use sync_core::compare::check_content;
    let cache = CacheName::new("authenticationSessions").unwrap();
    let fake = FakeCluster::model(ClusterSpec::two_sites("site-a", "site-b"));
    load(&fake, 0, &cache, &[("k1", "v"), ("k2", "v")]);
    load(&fake, 1, &cache, &[("k1", "other"), ("k2", "v")]);
    fake.world().set_cache_faults(0, &cache, faults);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let (a, b) = (fake.site("site-a"), fake.site("site-b"));
    runtime.block_on(check_content(&a, &b, &cache, VerifyLevel::Entries, async {})).unwrap()
}

#[test]
fn values_a_listing_cannot_render_are_compared_as_stored_key_by_key() {
    let check = content_check_with_faults(fake_ispn::CacheFaults { values_unreadable: true, ..Default::default() });
    assert_eq!(check.level, VerifyLevel::StoredEntries, "the stored bytes were compared");
    assert_eq!((check.active, check.offline, check.different_values), (2, 2, 1), "the differing value is found: {check:?}");
    assert_eq!(check.unreadable, None);
}

#[test]
fn values_a_server_cannot_serve_at_all_fall_back_to_keys_and_say_why() {
    let check = content_check_with_faults(fake_ispn::CacheFaults {
        values_unreadable: true,
        stored_values_unreadable: true,
        ..Default::default()
    });
    assert_eq!(check.level, VerifyLevel::KeysOnly, "only the keys were compared: {check:?}");
    assert_eq!(check.persistent(), 0, "the keys agree (the values, unread, do not)");
    let reason = check.unreadable.unwrap();
    assert!(reason.starts_with("active site: ") && reason.contains("Maps only have nested objects for values"), "{reason}");
    assert!(reason.contains("read key by key: active site: ") && reason.contains("x-protostream"), "{reason}");
}

#[test]
fn a_site_that_refuses_the_caller_is_an_error_at_once_never_read_another_way() {
    use sync_core::compare::check_content;
    let cache = CacheName::new("authenticationSessions").unwrap();
    let fake = FakeCluster::model(ClusterSpec::two_sites("site-a", "site-b"));
    load(&fake, 0, &cache, &[("k1", "v")]);
    load(&fake, 1, &cache, &[("k1", "v")]);
    // One refusal: were it taken for a server unable to render the values, the next way of
    // reading them would succeed and hide it.
    fake.world().inject_request_faults(0, [fake_ispn::RequestFault::Unauthorized]);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let (a, b) = (fake.site("site-a"), fake.site("site-b"));
    let failed = runtime.block_on(check_content(&a, &b, &cache, VerifyLevel::Entries, async {}));
    let (side, error) = failed.expect_err("a refused read is an error");
    assert_eq!(side, sync_core::Side::Active);
    assert_eq!(error.status(), Some(401), "{error}");
}
