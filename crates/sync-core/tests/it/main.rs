//! The one integration-test binary of sync-core: `decide` rule by rule, the key comparison, the driver against the
//! fake-ispn model, and the deterministic simulation that proves the invariants.

mod account;
mod compare;
mod decide;
mod direction;
mod driver;
mod heal;
mod journal;
mod sim;
mod support;
