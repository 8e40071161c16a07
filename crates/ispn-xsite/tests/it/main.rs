//! The one integration-test binary of ispn-xsite: the wire format of every request, response
//! parsing, and the streaming JSON splitter. Behaviour against servers is the contract suite's
//! job (fake-ispn's tests, run against real servers by `cargo xtask e2e`).

mod parsing;
mod requests;
mod splitter;
