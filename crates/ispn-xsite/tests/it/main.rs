//! The one integration-test binary of ispn-xsite: the wire format of every request, response
//! parsing, the streaming JSON splitter, and the HTTP transport against a scripted peer that
//! misbehaves on cue. Behaviour against servers is the contract suite's job (fake-ispn's tests,
//! run against real servers by `cargo xtask e2e`).

mod parsing;
mod requests;
mod splitter;
mod transport;
