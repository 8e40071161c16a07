//! The Synchronize Sites procedure as a resumable, interlocked step machine.
//!
//! # Layout
//! - [`plan`]: what a run is asked to do (sites, caches, patience).
//! - [`journal`]: the [`Step`] enum and the journal that records a run's progress.
//! - [`observe`]: what the driver read since its last action.
//! - [`decide`]: `decide(plan, journal, observation) -> Decision`, the procedure as a pure
//!   function: no IO, no clock, no randomness.
//! - [`driver`]: the thin async loop that runs `decide` over the [`ports`] and reports [`event`]s.
//! - [`compare`]: key-by-key comparison of a cache on two sites in bounded memory.
//! - [`outcome`]: refusals, failures and the report.
//!
//! This crate never prints and does IO only through the traits in [`ports`] and
//! `ispn_xsite::SiteApi` (it depends on ispn-xsite without its HTTP client).

pub mod compare;
pub mod decide;
pub mod driver;
pub mod event;
pub mod journal;
pub mod observe;
pub mod outcome;
pub mod plan;
pub mod ports;

pub use decide::{Action, Decision, Ending, Note, decide};
pub use driver::{Driver, NEXT_STEP, Ports, PreflightReport};
pub use event::Event;
pub use journal::{Finished, JOURNAL_SCHEMA, Journal, PushPhase, Step, Verdict};
pub use observe::{Observation, Probe, Side};
pub use outcome::{Failure, Refusal, Report, RunOutcome};
pub use plan::{CacheSelection, Plan, Sabotage, Settings, SiteRef};
