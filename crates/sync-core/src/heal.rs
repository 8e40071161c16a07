//! When `site-sync watch --heal` may start a run on its own: a pure policy over what the watcher
//! observed, so that the simulation can check it over every schedule.
//!
//! A heal starts only when the pair has read "split brain" with the cross-site link up on every
//! poll for `hold`; never while a heal runs, never while the offline site takes its users' writes
//! (the direction guard's evidence), never over an unfinished journal or after a run that did not
//! succeed (a human looks first), and at most once per `min_interval`.

/// How patient the policy is, in milliseconds of the watcher's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealPolicy {
    /// How long the split brain must have lasted, link up, before a heal.
    pub hold_ms: u64,
    /// The least time between two heals' starts.
    pub min_interval_ms: u64,
}

/// What one poll saw of the pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairState {
    /// Each site has the other offline and both see each other: what a run heals.
    SplitBrainLinkUp,
    /// Each site has the other offline but the link is down: a run would only wait for it.
    SplitBrainLinkDown,
    /// Each site has the other offline, and the declared offline site takes its users' writes:
    /// a heal from the active site would discard them (the direction may be wrong).
    SplitBrainOfflineServing,
    /// Anything else (healthy, one-sided, syncing, unreachable...).
    Other,
}

/// How the journal's last run ended, as the watcher read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LastRun {
    /// No journal.
    None,
    /// Succeeded.
    Succeeded,
    /// Still open: running, or stopped without an ending (a crash).
    Unfinished,
    /// Failed, refused or interrupted.
    NotSucceeded,
}

/// The policy's memory between polls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HealMemory {
    /// Since when the pair has read split brain with the link up, without interruption.
    pub split_since_ms: Option<u64>,
    /// When the last heal started.
    pub last_heal_ms: Option<u64>,
}

/// The policy's answer for one poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealVerdict {
    /// Start a run now.
    Heal,
    /// Nothing to do, or not yet; the reason, for the log and the metrics.
    Wait(&'static str),
    /// Split brain, but a human must act first.
    Blocked(&'static str),
}

/// One poll's decision. `running`: a heal started by this watcher is still going.
pub fn heal_verdict(
    policy: HealPolicy,
    memory: &mut HealMemory,
    now_ms: u64,
    pair: PairState,
    last: LastRun,
    running: bool,
) -> HealVerdict {
    if pair == PairState::SplitBrainLinkUp {
        memory.split_since_ms.get_or_insert(now_ms);
    } else {
        memory.split_since_ms = None;
    }
    if running {
        return HealVerdict::Wait("a heal is running");
    }
    match pair {
        PairState::Other => return HealVerdict::Wait("no split brain"),
        PairState::SplitBrainLinkDown => return HealVerdict::Wait("split brain, but the cross-site link is down"),
        PairState::SplitBrainOfflineServing => {
            return HealVerdict::Blocked(
                "split brain, but the offline site takes its users' writes: a heal would discard them; `site-sync status` shows which site is live",
            );
        }
        PairState::SplitBrainLinkUp => {}
    }
    match last {
        LastRun::Unfinished => {
            return HealVerdict::Blocked("the journal holds an unfinished run: `site-sync resume` it or look first");
        }
        LastRun::NotSucceeded => return HealVerdict::Blocked("the last run did not succeed: look at it before anything heals"),
        LastRun::None | LastRun::Succeeded => {}
    }
    let since = memory.split_since_ms.unwrap_or(now_ms);
    if now_ms.saturating_sub(since) < policy.hold_ms {
        return HealVerdict::Wait("split brain, holding before a heal");
    }
    if memory.last_heal_ms.is_some_and(|last| now_ms.saturating_sub(last) < policy.min_interval_ms) {
        return HealVerdict::Wait("split brain, but the last heal is too recent");
    }
    memory.last_heal_ms = Some(now_ms);
    HealVerdict::Heal
}
