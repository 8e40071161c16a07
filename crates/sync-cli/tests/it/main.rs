//! The one integration-test binary of sync-cli: the built `site-sync` binary against fake
//! Infinispan sites and fake Kubernetes clusters over loopback. Every command, resume after a
//! kill, Ctrl-C, SIGTERM, snapshots of human and JSON output, and the table of bad inputs.

mod bad_input;
mod commands;
mod conventions;
mod direction;
mod keycloak;
mod link;
mod no_verdict;
mod prometheus;
mod rbac;
mod report;
mod resume;
mod scenarios;
mod support;
mod watch;
