//! What `decide` answers: the next thing the driver must do, the facts it must record, and how a
//! run ends.

use std::time::Duration;

use ispn_xsite::CacheName;

use crate::outcome::{Failure, Refusal};
use crate::vocabulary::{Action, Probe, Verdict};

/// What the driver must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Read these facts, then ask again.
    Observe(Vec<Probe>),
    /// Record these facts in the journal (no IO), then ask again.
    Note(Vec<Note>),
    /// Send these (independent) actions, then ask again with a fresh observation.
    Act(Vec<Action>),
    /// Wait, then ask again with a fresh observation.
    Wait {
        /// How long.
        duration: Duration,
        /// For whom (shown in logs).
        why: String,
    },
    /// The current step is proven done: move to the next one.
    Advance,
    /// Stop.
    Finish(Ending),
}

/// How a run ends, as decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// Every step done.
    Succeeded,
    /// Nothing unsafe done; a precondition or interlock said no.
    Refused(Refusal),
    /// Stopped; resumable.
    Failed(Failure),
}

/// A fact to record in the journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// Preflight resolved the caches.
    Caches(Vec<CacheName>, Option<String>),
    /// A push nobody recorded is running: treat it as this run's.
    AdoptPush(CacheName),
    /// The push read OK.
    PushOk(CacheName),
    /// The status was already IDLE after OK: the cache is done.
    PushDone(CacheName),
    /// Verification verdict.
    Verified(CacheName, Verdict),
    /// Verification found entries missing on the offline site: push it again.
    Repush(CacheName),
    /// A warning for the report.
    Warning(String),
}
