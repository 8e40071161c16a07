//! What a run will ask of the offline site's cluster, asked of RBAC before anything changes
//! (one SelfSubjectAccessReview per permission, which every authenticated user may create).
//!
//! Without it a missing verb shows up where it is first used: a missing `get statefulsets`
//! after Keycloak was already scaled down, a missing `delete leases` only when the run ends.

use k8s_openapi::api::authorization::v1::{ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec};
use kube::api::{Api, PostParams};

use crate::cluster::{KubeError, SiteCluster};

/// One permission a call needs: `verb` on `resource` (with its subresource, `keycloaks/scale`)
/// in API group `group`, optionally on one named object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permission {
    /// The RBAC verb (`patch`).
    pub verb: &'static str,
    /// The API group (`""` for core).
    pub group: &'static str,
    /// The resource, with a subresource after a slash.
    pub resource: &'static str,
    /// The object's name, when the call is on one object.
    pub name: Option<String>,
}

impl Permission {
    /// `verb` on `resource` in `group`, any name.
    pub const fn new(verb: &'static str, group: &'static str, resource: &'static str) -> Self {
        Self { verb, group, resource, name: None }
    }

    /// The same permission on the object `name` only.
    #[must_use]
    pub fn named(mut self, name: &str) -> Self {
        self.name = Some(name.to_owned());
        self
    }
}

impl std::fmt::Display for Permission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.verb, self.resource)
    }
}

/// Asks RBAC about every permission in `wanted` (in parallel) and fails, naming all that are
/// missing, unless each is allowed in the cluster's namespace.
pub async fn check(cluster: &SiteCluster, wanted: &[Permission]) -> Result<(), KubeError> {
    let api: Api<SelfSubjectAccessReview> = Api::all(cluster.client.clone());
    let answers = futures::future::join_all(wanted.iter().map(|permission| {
        let api = api.clone();
        let (resource, subresource) = match permission.resource.split_once('/') {
            Some((resource, sub)) => (resource, Some(sub.to_owned())),
            None => (permission.resource, None),
        };
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    namespace: Some(cluster.namespace.clone()),
                    verb: Some(permission.verb.to_owned()),
                    group: Some(permission.group.to_owned()),
                    resource: Some(resource.to_owned()),
                    subresource,
                    name: permission.name.clone(),
                    ..ResourceAttributes::default()
                }),
                ..SelfSubjectAccessReviewSpec::default()
            },
            ..SelfSubjectAccessReview::default()
        };
        async move { api.create(&PostParams::default(), &review).await }
    }))
    .await;
    let mut missing = Vec::new();
    for (permission, answer) in wanted.iter().zip(answers) {
        let review = answer.map_err(|e| cluster.error("create", "selfsubjectaccessreviews", "", e))?;
        if !review.status.is_some_and(|s| s.allowed) {
            missing.push(permission.to_string());
        }
    }
    missing.dedup();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(KubeError::Missing { permissions: missing, namespace: cluster.namespace.clone(), context: cluster.context.clone() })
    }
}
