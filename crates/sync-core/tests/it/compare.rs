//! The bounded-memory key comparison against set arithmetic, with budgets small enough to force
//! many passes.

use std::collections::BTreeMap;

use fake_ispn::{ClusterSpec, FakeCluster};
use ispn_xsite::CacheName;
use proptest::prelude::*;
use sync_core::compare::{CompareLimits, CompareMode, compare};

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
    #![proptest_config(ProptestConfig { cases: 128, rng_seed: proptest::test_runner::RngSeed::Fixed(0x5173_d1ff), ..ProptestConfig::default() })]

    #[test]
    fn counts_and_samples_match_set_arithmetic_whatever_the_number_of_passes(
        keys in proptest::collection::btree_map("[a-z0-9]{1,8}", placement(), 0..200),
        budget in 1usize..64,
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
            .block_on(compare(&fake.site("site-a"), &fake.site("site-b"), &cache, mode, CompareLimits { budget, sample }))
            .unwrap();

        let count = |f: &dyn Fn(&Placement) -> bool| keys.values().filter(|p| f(p)).count() as u64;
        let active = count(&|p| p.active);
        prop_assert_eq!(result.active, active);
        prop_assert_eq!(result.offline, count(&|p| p.offline));
        prop_assert_eq!(result.only_active, count(&|p| p.active && !p.offline));
        prop_assert_eq!(result.only_offline, count(&|p| p.offline && !p.active));
        let differing = if entries { count(&|p| p.active && p.offline && !p.same_value) } else { 0 };
        prop_assert_eq!(result.different_values, differing);
        prop_assert_eq!(u64::from(result.passes), active.div_ceil(budget as u64).max(1));
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
