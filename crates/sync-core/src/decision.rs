//! What `decide` answers: the next thing the driver must do, the facts it must record, and how a
//! run ends.

use std::time::Duration;

use ispn_xsite::CacheName;

use crate::outcome::{Failure, Refusal};
use crate::vocabulary::{Action, DirectionRecord, LinkLoss, Probe, Side, Verdict, WriteSample};

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
    Wait(Wait),
    /// The current step is proven done: move to the next one.
    Advance,
    /// Stop.
    Finish(Ending),
}

/// A pause, with what it is for: the driver announces it (what, why, until when).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wait {
    /// How long before asking again.
    pub duration: Duration,
    /// What is awaited (`pushes of work, actionTokens to read OK`). The same thing keeps the same
    /// words while it is awaited, so that the driver can tell a new wait from a continued one.
    pub what: String,
    /// Why the run cannot go on without it.
    pub why: String,
    /// When the run stops waiting for it (ms since the epoch); it then stops, resumably.
    pub until_ms: u64,
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
    /// A push nobody recorded is running (seen at the given ms since the epoch): treat it as
    /// this run's.
    AdoptPush(CacheName, u64),
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
    /// The cross-site link is lost; wait for it until `until_ms`.
    LinkLost {
        /// How it was seen.
        loss: LinkLoss,
        /// When the run stops waiting for it.
        until_ms: u64,
    },
    /// The link lost at `since_ms` is back (seen at `at_ms`).
    LinkBack {
        /// When it was first seen lost.
        since_ms: u64,
        /// When it was seen back.
        at_ms: u64,
    },
    /// The direction guard read its first counters (per site and cache) at `at_ms`.
    EvidenceStarted {
        /// The readings.
        samples: Vec<((Side, CacheName), WriteSample)>,
        /// When.
        at_ms: u64,
    },
    /// The direction guard judged.
    Direction(DirectionRecord),
    /// The offline site's entry count of `cache` moved while its push reads SENDING: the push is
    /// alive.
    ReceiverMoved {
        /// The cache.
        cache: CacheName,
        /// Entries on the offline site.
        entries: u64,
        /// When.
        at_ms: u64,
    },
}
