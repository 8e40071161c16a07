//! What the driver reports while it works: a closed set of typed events. `sync-cli` renders them
//! (human text, progress bars, JSON Lines); sync-core never prints.

use std::time::Duration;

use ispn_xsite::{CacheName, SiteName};

use crate::outcome::RunOutcome;
use crate::vocabulary::{DirectionRecord, LinkLoss, Side, Step, Verdict};

/// One event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A run (or resume) began.
    RunStarted {
        /// The run.
        run_id: String,
        /// The active site.
        active: SiteName,
        /// The offline site.
        offline: SiteName,
        /// Whether this continues a journal.
        resumed: bool,
        /// The step it starts from.
        from: Step,
    },
    /// A step began.
    StepStarted {
        /// The step.
        step: Step,
        /// What it does.
        description: String,
    },
    /// A step was proven done.
    StepFinished {
        /// The step.
        step: Step,
        /// Time spent in it (in this process).
        elapsed: Duration,
    },
    /// The caches were resolved.
    CachesResolved {
        /// The caches.
        caches: Vec<CacheName>,
        /// The Keycloak line they match, if any.
        line: Option<String>,
    },
    /// An action is about to be sent.
    Action {
        /// The step.
        step: Step,
        /// What it does (`take-offline`, `clear`, `start-push-state`, ...).
        action: String,
        /// The site it is sent to.
        side: Side,
        /// The cache, for per-cache actions.
        cache: Option<CacheName>,
    },
    /// A push's progress.
    PushProgress {
        /// The cache.
        cache: CacheName,
        /// Entries on the offline site.
        transferred: u64,
        /// Entries on the active site.
        total: u64,
    },
    /// Something is tried again.
    Retry {
        /// The step.
        step: Step,
        /// The cache, if per cache.
        cache: Option<CacheName>,
        /// Attempt number (the first retry is 2).
        attempt: u32,
        /// Why.
        reason: String,
    },
    /// An interlock refused an action (the action was not sent).
    InterlockRefused {
        /// The step.
        step: Step,
        /// The cache.
        cache: Option<CacheName>,
        /// Why.
        reason: String,
    },
    /// A cache's verification verdict.
    Verified {
        /// The cache.
        cache: CacheName,
        /// The verdict.
        verdict: Verdict,
    },
    /// The run waits for something: announced when the wait begins and repeated while it lasts.
    Waiting {
        /// The step.
        step: Step,
        /// What is awaited.
        what: String,
        /// Why the run needs it.
        why: String,
        /// When the run stops waiting (ms since the epoch).
        until_ms: u64,
    },
    /// The cross-site link is lost (announced when first seen, and repeated while waiting).
    LinkDown {
        /// How each site sees it, and since when.
        loss: LinkLoss,
        /// When the run stops waiting for it (ms since the epoch).
        until_ms: u64,
    },
    /// The lost link is back.
    LinkUp {
        /// When it was first seen lost (ms since the epoch).
        since_ms: u64,
        /// When it was seen back.
        at_ms: u64,
    },
    /// The direction guard judged which site serves users.
    Direction(DirectionRecord),
    /// Something the operator should know but that does not stop the run.
    Warning {
        /// The text.
        message: String,
    },
    /// Keycloak changed.
    Keycloak {
        /// What happened (`scaled to 0 (was 3)`, `restored to 3 instances`).
        message: String,
    },
    /// The run ended.
    RunFinished {
        /// How.
        outcome: Box<RunOutcome>,
    },
}
