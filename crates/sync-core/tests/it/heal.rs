//! The `watch --heal` policy over every schedule: a simulated watcher polls a pair whose state,
//! link and journal change at random, starts a heal when the policy says so, and the heal ends
//! (succeeded or not) at random later. A checker that knows nothing of the policy's code reads the
//! history and names every broken promise; a planted bad policy proves that it can.

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use sync_core::heal::{HealMemory, HealPolicy, HealVerdict, LastRun, PairState, heal_verdict};

const POLICY: HealPolicy = HealPolicy { hold_ms: 60_000, min_interval_ms: 600_000 };

/// One poll as the watcher saw it, and what it did.
#[derive(Debug, Clone)]
struct Poll {
    now_ms: u64,
    pair: PairState,
    last: LastRun,
    running: bool,
    healed: bool,
}

/// What the world does between two polls.
#[derive(Debug, Clone)]
struct Tick {
    advance_ms: u64,
    pair: PairState,
    /// Whether a running heal ends before this poll, and how.
    heal_ends: Option<bool>,
    /// Someone else's run ends badly or crashes (the journal changes under the watcher).
    outside_run: Option<LastRun>,
}

fn pair_state() -> impl Strategy<Value = PairState> {
    prop_oneof![
        6 => Just(PairState::SplitBrainLinkUp),
        2 => Just(PairState::SplitBrainLinkDown),
        1 => Just(PairState::SplitBrainOfflineServing),
        3 => Just(PairState::Other),
    ]
}

fn tick() -> impl Strategy<Value = Tick> {
    (
        prop_oneof![Just(1_000u64), Just(15_000), Just(45_000), Just(120_000)],
        pair_state(),
        prop::option::of(any::<bool>()),
        prop::option::weighted(
            0.05,
            prop_oneof![Just(LastRun::Unfinished), Just(LastRun::NotSucceeded), Just(LastRun::Succeeded)],
        ),
    )
        .prop_map(|(advance_ms, pair, heal_ends, outside_run)| Tick { advance_ms, pair, heal_ends, outside_run })
}

type Policy = fn(HealPolicy, &mut HealMemory, u64, PairState, LastRun, bool) -> HealVerdict;

/// Runs the watcher over `ticks` with `policy` configured by `config`; returns every poll. A
/// heal's run writes its journal only by the next poll: until then the journal still shows the
/// previous run, and only the watcher's own knowledge that it started one stands in the way.
fn simulate(ticks: &[Tick], policy: Policy, config: HealPolicy) -> Vec<Poll> {
    let mut memory = HealMemory::default();
    let mut now_ms = 0;
    let mut last = LastRun::None;
    let mut running = false;
    let mut history = Vec::new();
    for tick in ticks {
        now_ms += tick.advance_ms;
        if running {
            last = match tick.heal_ends {
                Some(true) => LastRun::Succeeded,
                Some(false) => LastRun::NotSucceeded,
                None => LastRun::Unfinished,
            };
            running = tick.heal_ends.is_none();
        }
        if let Some(outside) = tick.outside_run {
            last = outside;
        }
        let verdict = policy(config, &mut memory, now_ms, tick.pair, last, running);
        let healed = verdict == HealVerdict::Heal;
        history.push(Poll { now_ms, pair: tick.pair, last, running, healed });
        running |= healed;
    }
    history
}

/// Every promise the history breaks under `config`, checked from the polls alone.
fn violations(history: &[Poll], config: HealPolicy) -> Vec<String> {
    let mut broken = Vec::new();
    let mut split_since: Option<u64> = None;
    let mut last_heal: Option<u64> = None;
    for poll in history {
        if poll.pair == PairState::SplitBrainLinkUp {
            split_since.get_or_insert(poll.now_ms);
        } else {
            split_since = None;
        }
        let held = split_since.is_some_and(|since| poll.now_ms - since >= config.hold_ms);
        let spaced = last_heal.is_none_or(|at| poll.now_ms - at >= config.min_interval_ms);
        let journal_clear = matches!(poll.last, LastRun::None | LastRun::Succeeded);
        let allowed = poll.pair == PairState::SplitBrainLinkUp && !poll.running && journal_clear && held && spaced;
        if poll.healed {
            if poll.pair == PairState::SplitBrainLinkDown {
                broken.push(format!("healed at {} ms while the link was down", poll.now_ms));
            }
            if poll.pair == PairState::SplitBrainOfflineServing {
                broken.push(format!("healed at {} ms while the offline site took its users' writes", poll.now_ms));
            }
            if poll.running {
                broken.push(format!("healed at {} ms while a heal was running", poll.now_ms));
            }
            if !journal_clear {
                broken.push(format!("healed at {} ms over a journal whose last run is {:?}", poll.now_ms, poll.last));
            }
            if !held {
                broken.push(format!("healed at {} ms before the split brain lasted {} ms", poll.now_ms, config.hold_ms));
            }
            if !spaced {
                broken.push(format!("healed at {} ms, less than {} ms after the last heal", poll.now_ms, config.min_interval_ms));
            }
            last_heal = Some(poll.now_ms);
        } else if allowed {
            broken.push(format!("did not heal at {} ms although every condition held", poll.now_ms));
        }
    }
    broken
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 2_000,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x5173_4ea1),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_heal_policy_keeps_its_promises_over_every_schedule(ticks in prop::collection::vec(tick(), 1..200)) {
        for config in [POLICY, HealPolicy { hold_ms: 0, min_interval_ms: 0 }] {
            let history = simulate(&ticks, heal_verdict, config);
            let broken = violations(&history, config);
            prop_assert!(broken.is_empty(), "{config:?}: {broken:#?}");
        }
    }
}

/// The checker is not blind: planted bad policies, each breaking one promise, are caught on
/// schedules where it matters.
#[test]
fn the_checker_catches_planted_bad_policies() {
    fn ignores_running(p: HealPolicy, m: &mut HealMemory, now: u64, pair: PairState, last: LastRun, _: bool) -> HealVerdict {
        heal_verdict(p, m, now, pair, last, false)
    }
    fn ignores_the_link(p: HealPolicy, m: &mut HealMemory, now: u64, pair: PairState, last: LastRun, r: bool) -> HealVerdict {
        let pair = if pair == PairState::SplitBrainLinkDown { PairState::SplitBrainLinkUp } else { pair };
        heal_verdict(p, m, now, pair, last, r)
    }
    fn ignores_the_journal(p: HealPolicy, m: &mut HealMemory, now: u64, pair: PairState, _: LastRun, r: bool) -> HealVerdict {
        heal_verdict(p, m, now, pair, LastRun::Succeeded, r)
    }
    fn ignores_the_evidence(p: HealPolicy, m: &mut HealMemory, now: u64, pair: PairState, last: LastRun, r: bool) -> HealVerdict {
        let pair = if pair == PairState::SplitBrainOfflineServing { PairState::SplitBrainLinkUp } else { pair };
        heal_verdict(p, m, now, pair, last, r)
    }
    let planted: [(&str, Policy); 4] = [
        ("running", ignores_running),
        ("link", ignores_the_link),
        ("journal", ignores_the_journal),
        ("evidence", ignores_the_evidence),
    ];
    let mut runner = proptest::test_runner::TestRunner::new_with_rng(
        ProptestConfig { cases: 2_000, failure_persistence: None, ..ProptestConfig::default() },
        proptest::test_runner::TestRng::deterministic_rng(proptest::test_runner::RngAlgorithm::ChaCha),
    );
    // No minimum interval: the other promises must stand on their own.
    let config = HealPolicy { hold_ms: 30_000, min_interval_ms: 0 };
    for (name, policy) in planted {
        let caught = (0..2_000).any(|_| {
            let ticks = prop::collection::vec(tick(), 1..200).new_tree(&mut runner).unwrap().current();
            !violations(&simulate(&ticks, policy, config), config).is_empty()
        });
        assert!(caught, "a policy that ignores the {name} was not caught");
    }
}
