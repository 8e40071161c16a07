//! The Synchronize Sites procedure as a resumable, interlocked step machine.
//!
//! # Layout
//! Each module imports only those listed before it (`cargo xtask tidy` checks this):
//! - [`vocabulary`]: the words the rest speaks: [`Side`], [`Step`], [`Probe`], [`Action`],
//!   push phases and verdicts. Plain data.
//! - [`port_types`]: what the non-Infinispan ports report (Keycloak's state, the lock's holder)
//!   and why they fail.
//! - [`plan`]: what a run is asked to do (sites, caches, patience).
//! - [`outcome`]: refusals, failures and the report.
//! - [`decision`]: what `decide` answers: [`Decision`], [`Note`], [`Ending`].
//! - [`observe`]: what the driver read since its last action.
//! - [`direction`]: the direction guard's judgement: which site is serving users.
//! - [`journal`]: the journal that records a run's progress, and what happened when.
//! - [`account`]: a run's account for the incident, read from its journal alone.
//! - [`event`]: what the driver reports while it works.
//! - [`ports`]: the traits the driver works through, and in-memory implementations.
//! - [`compare`]: key-by-key comparison of a cache on two sites in bounded memory.
//! - [`heal`]: when `watch --heal` may start a run on its own (a pure policy).
//! - [`decide`]: `decide(plan, journal, observation) -> Decision`, the procedure as a pure
//!   function: no IO, no clock, no randomness.
//! - [`driver`]: the thin async loop that runs `decide` over the ports and reports events.
//!
//! This crate never prints and does IO only through the traits in [`ports`] and
//! `ispn_xsite::SiteApi` (it depends on ispn-xsite without its HTTP client).

// Layers, lowest first: each module uses only those above it (blank lines keep rustfmt from
// sorting them).
pub mod vocabulary;

pub mod port_types;

pub mod plan;

pub mod outcome;

pub mod decision;

pub mod observe;

pub mod direction;

pub mod journal;

pub mod account;

pub mod event;

pub mod ports;

pub mod compare;

pub mod heal;

pub mod decide;

pub mod driver;

pub use decide::decide;
pub use decision::{Decision, Ending, Note};
pub use driver::{Driver, NEXT_STEP, Ports, PreflightReport};
pub use event::Event;
pub use journal::{Finished, JOURNAL_SCHEMA, Journal};
pub use observe::Observation;
pub use outcome::{Failure, Refusal, Report, RunOutcome};
pub use plan::{CacheSelection, Plan, Settings, SiteRef};
pub use vocabulary::{Action, Probe, PushPhase, Side, Step, Verdict};
