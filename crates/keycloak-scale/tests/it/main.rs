//! The one integration-test binary of keycloak-scale: everything goes through the real kube-rs
//! client, against the fake API server (in-process or over loopback with a generated kubeconfig).

mod keycloak;
mod lock_and_secrets;
mod support;
