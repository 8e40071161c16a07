//! The one integration-test binary of keycloak-scale: everything goes through the real kube-rs
//! client, against the fake API server (in-process or over loopback with a generated
//! kubeconfig), or against the real API server of `cargo xtask kube up` when
//! `SITE_SYNC_KUBE_CONFIG` names it (`cargo xtask e2e --kube` runs them so). Same tests, same
//! assertions, two backends.

mod lock_and_secrets;
mod scaling;
mod support;
