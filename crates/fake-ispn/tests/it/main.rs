//! The one integration-test binary of fake-ispn: the contract suite (fake and real pairs) and the
//! fake's own behaviour (faults, split brain, state transfer) that a real pair cannot be made to
//! show on demand.

mod contract;
mod model;
