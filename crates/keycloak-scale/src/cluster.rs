//! One site's Kubernetes cluster: a client for a kubeconfig context, its namespace, and how its
//! errors are told apart.

use std::path::Path;

use kube::config::{KubeConfigOptions, Kubeconfig};

/// A failed Kubernetes call, named by what was attempted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KubeError {
    /// The kubeconfig or context cannot be used.
    #[error("kubeconfig: {0}")]
    Config(String),
    /// RBAC refused the call.
    #[error(
        "forbidden: cannot {verb} {resource} in namespace {namespace} (context {context}); grant it in the tool's Role (docs/rbac.md)"
    )]
    Forbidden {
        /// The verb (`patch`).
        verb: String,
        /// The resource (`keycloaks/scale`).
        resource: String,
        /// The namespace.
        namespace: String,
        /// The kubeconfig context.
        context: String,
    },
    /// RBAC would refuse calls the run needs (asked before it starts).
    #[error(
        "forbidden: cannot {} in namespace {namespace} (context {context}), which the run needs; nothing was changed; grant it in the tool's Role (docs/rbac.md)",
        .permissions.join(", cannot ")
    )]
    Missing {
        /// Each missing permission as `verb resource`.
        permissions: Vec<String>,
        /// The namespace.
        namespace: String,
        /// The kubeconfig context.
        context: String,
    },
    /// The object does not exist.
    #[error("{what} not found in namespace {namespace} (context {context})")]
    NotFound {
        /// What was looked for (`keycloaks.k8s.keycloak.org "keycloak"`).
        what: String,
        /// The namespace.
        namespace: String,
        /// The kubeconfig context.
        context: String,
    },
    /// Any other API error or an unreachable API server.
    #[error("{verb} {resource} in namespace {namespace} (context {context}) failed: {detail}")]
    Api {
        /// The verb.
        verb: String,
        /// The resource.
        resource: String,
        /// The namespace.
        namespace: String,
        /// The kubeconfig context.
        context: String,
        /// What the client said.
        detail: String,
    },
}

/// A client bound to one site's cluster and namespace.
#[derive(Clone)]
pub struct SiteCluster {
    /// The client.
    pub client: kube::Client,
    /// The namespace Keycloak and Infinispan live in.
    pub namespace: String,
    /// The kubeconfig context (for messages).
    pub context: String,
}

impl std::fmt::Debug for SiteCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SiteCluster").field("namespace", &self.namespace).field("context", &self.context).finish()
    }
}

impl SiteCluster {
    /// A client for `context` in the kubeconfig at `path` (default: `$KUBECONFIG` or
    /// `~/.kube/config`), in `namespace` (default: the context's).
    pub async fn from_kubeconfig(path: Option<&Path>, context: Option<&str>, namespace: Option<&str>) -> Result<Self, KubeError> {
        let kubeconfig = match path {
            Some(path) => {
                Kubeconfig::read_from(path).map_err(|e| KubeError::Config(format!("cannot read {}: {e}", path.display())))?
            }
            None => Kubeconfig::read().map_err(|e| KubeError::Config(format!("cannot read the default kubeconfig: {e}")))?,
        };
        let name = context.map(str::to_owned).or_else(|| kubeconfig.current_context.clone()).unwrap_or_default();
        if !kubeconfig.contexts.iter().any(|c| c.name == name) {
            let known: Vec<&str> = kubeconfig.contexts.iter().map(|c| c.name.as_str()).collect();
            return Err(KubeError::Config(format!("context {name:?} is not in the kubeconfig (it has: {})", known.join(", "))));
        }
        let options = KubeConfigOptions { context: Some(name.clone()), ..KubeConfigOptions::default() };
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .map_err(|e| KubeError::Config(format!("context {name:?}: {e}")))?;
        let namespace = namespace.map(str::to_owned).unwrap_or_else(|| config.default_namespace.clone());
        let client = kube::Client::try_from(config).map_err(|e| KubeError::Config(format!("context {name:?}: {e}")))?;
        Ok(Self { client, namespace, context: name })
    }

    /// Classifies an error of a `verb` on `resource` named `name`.
    pub fn error(&self, verb: &str, resource: &str, name: &str, error: kube::Error) -> KubeError {
        match &error {
            kube::Error::Api(status) if status.code == 403 => {
                // The API server names what it refused; one call can need two verbs (a
                // port-forward's WebSocket upgrade is authorized as get and as create).
                let (verb, resource) = refused(&status.message).unwrap_or((verb, resource));
                KubeError::Forbidden {
                    verb: verb.to_owned(),
                    resource: resource.to_owned(),
                    namespace: self.namespace.clone(),
                    context: self.context.clone(),
                }
            }
            kube::Error::Api(status) if status.code == 404 => KubeError::NotFound {
                what: format!("{resource} {name:?}"),
                namespace: self.namespace.clone(),
                context: self.context.clone(),
            },
            other => KubeError::Api {
                verb: verb.to_owned(),
                resource: resource.to_owned(),
                namespace: self.namespace.clone(),
                context: self.context.clone(),
                detail: other.to_string(),
            },
        }
    }
}

/// `(verb, resource)` from an RBAC refusal: `... cannot get resource "pods/portforward" in ...`.
fn refused(message: &str) -> Option<(&str, &str)> {
    let (_, rest) = message.split_once(" cannot ")?;
    let (verb, rest) = rest.split_once(" resource \"")?;
    let (resource, _) = rest.split_once('"')?;
    (!verb.contains(' ') && !resource.is_empty()).then_some((verb, resource))
}

impl From<KubeError> for sync_core::ports::KeycloakError {
    fn from(error: KubeError) -> Self {
        match error {
            KubeError::Forbidden { .. } | KubeError::Missing { .. } => Self::Forbidden { what: error.to_string() },
            KubeError::NotFound { .. } => Self::NotFound { what: error.to_string() },
            other => Self::Other(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::refused;

    #[test]
    fn the_refused_verb_and_resource_come_from_the_api_servers_message() {
        let message = "pods \"infinispan-0\" is forbidden: User \"system:serviceaccount:kc:site-sync\" cannot get resource \"pods/portforward\" in API group \"\" in the namespace \"kc\"";
        assert_eq!(refused(message), Some(("get", "pods/portforward")));
        assert_eq!(refused("forbidden"), None);
        assert_eq!(refused("x cannot do something else resource \"a\""), None);
    }
}
