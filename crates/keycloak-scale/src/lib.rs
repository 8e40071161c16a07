//! Keycloak on the offline site, through kube-rs; and the Kubernetes-side helpers of a run.
//!
//! # Layout
//! - [`access`]: the permissions a run needs, asked of RBAC before it starts.
//! - [`cluster`]: one site's cluster (kubeconfig context, namespace) as a `kube::Client`.
//! - [`keycloak`]: [`KubeKeycloak`], scaling the Keycloak CR (scale subresource, or
//!   `spec.instances`), waiting on pods rather than `Ready`, remembering the original count.
//! - [`external`]: Keycloak outside Kubernetes (user commands) or already stopped.
//! - [`health`]: Keycloak's `/lb-check` and `/health/ready`, asked over HTTP.
//! - [`lock`]: the run lock, a Lease in the offline site's namespace or a lock file.
//! - [`infinispan`]: Infinispan credentials from the operator's Secrets, endpoint discovery, and
//!   a port-forward through the API server.
//! - `fake` (feature `fake`): a fake Kubernetes API server that the real kube-rs client talks to.
//! - `standin` (feature `standin`): test support for a real API server, with a stand-in Keycloak
//!   Operator.
//!
//! This is the only crate that imports kube.

pub mod access;
pub mod cluster;
pub mod external;
pub mod health;
pub mod infinispan;
pub mod keycloak;
pub mod lock;

#[cfg(feature = "fake")]
pub mod fake;
#[cfg(feature = "standin")]
pub mod standin;

pub use cluster::{KubeError, SiteCluster};
pub use keycloak::{KubeKeycloak, ScaleSettings};

/// The annotation that keeps the instance count to restore, on the Keycloak CR itself, so that a
/// run that crashed after scaling down never loses it.
pub const ORIGINAL_INSTANCES_ANNOTATION: &str = "site-sync.keycloak.org/original-instances";
