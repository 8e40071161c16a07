//! One site's Kubernetes cluster: a client for a kubeconfig context, its namespace, and how its
//! errors are told apart.

use std::path::Path;
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};

/// A failed Kubernetes call, named by what was attempted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KubeError {
    /// The kubeconfig, its context, or the pod's ServiceAccount cannot be used.
    #[error("{0}")]
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
    /// The API server could not be asked, or refused who is asking: not reachable, too slow,
    /// TLS, credentials. Named by its address, since that is what the fix touches.
    #[error("the Kubernetes API server {server} (context {context}) {cause} (while trying to {what})")]
    Unreachable {
        /// The kubeconfig context.
        context: String,
        /// The API server's URL, as the kubeconfig gives it (credentials redacted).
        server: String,
        /// What was attempted (`get secrets in namespace keycloak`).
        what: String,
        /// What went wrong and what to check.
        cause: String,
    },
    /// Any other API error.
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

/// How long the API server may take to accept a connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the API server may take to answer a request (a request, not a port-forward's stream):
/// every call site-sync makes is a small read or patch, answered in milliseconds.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// A client bound to one site's cluster and namespace.
#[derive(Clone)]
pub struct SiteCluster {
    /// The client for requests: each answer is bounded by [`ANSWER_TIMEOUT`].
    pub client: kube::Client,
    /// The client for port-forwards, whose streams may stay quiet for as long as they like.
    pub streams: kube::Client,
    /// The namespace Keycloak and Infinispan live in.
    pub namespace: String,
    /// The kubeconfig context (for messages).
    pub context: String,
    /// The API server's URL (for messages; credentials in it redacted).
    pub server: String,
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
            Some(path) => Kubeconfig::read_from(path)
                .map_err(|e| KubeError::Config(format!("kubeconfig: cannot read {}: {}", path.display(), root(&e))))?,
            None => Kubeconfig::read().map_err(|e| {
                KubeError::Config(format!(
                    "kubeconfig: cannot read the default kubeconfig ($KUBECONFIG or ~/.kube/config): {}",
                    root(&e)
                ))
            })?,
        };
        let name = context.map(str::to_owned).or_else(|| kubeconfig.current_context.clone()).unwrap_or_default();
        if !kubeconfig.contexts.iter().any(|c| c.name == name) {
            let known: Vec<&str> = kubeconfig.contexts.iter().map(|c| c.name.as_str()).collect();
            return Err(KubeError::Config(format!(
                "kubeconfig: context {name:?} is not in the kubeconfig (it has: {})",
                known.join(", ")
            )));
        }
        let options = KubeConfigOptions { context: Some(name.clone()), ..KubeConfigOptions::default() };
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .map_err(|e| KubeError::Config(format!("kubeconfig: context {name:?}: {e}")))?;
        Self::from_config(config, &name, namespace)
    }

    /// The cluster site-sync runs in, as its pod's ServiceAccount: the API server from
    /// `KUBERNETES_SERVICE_HOST` and `KUBERNETES_SERVICE_PORT`, the token, CA and namespace from
    /// the mounted `dir` (normally `/var/run/secrets/kubernetes.io/serviceaccount`). The token is
    /// re-read as the kubelet rotates it.
    pub fn in_cluster(dir: &Path, namespace: Option<&str>) -> Result<Self, KubeError> {
        let variable = |name: &str| {
            std::env::var(name).map_err(|_| {
                KubeError::Config(format!(
                    "in_cluster: {name} is not set, so site-sync is not running in a pod; give this site a kubeconfig and a context instead"
                ))
            })
        };
        let (host, port) = (variable("KUBERNETES_SERVICE_HOST")?, variable("KUBERNETES_SERVICE_PORT")?);
        let host = if host.contains(':') { format!("[{host}]") } else { host };
        let url: http::Uri = format!("https://{host}:{port}")
            .parse()
            .map_err(|e| KubeError::Config(format!("in_cluster: https://{host}:{port} is not a URL: {e}")))?;
        for file in ["token", "ca.crt"] {
            if !dir.join(file).is_file() {
                return Err(KubeError::Config(format!(
                    "in_cluster: {} is missing: the pod's ServiceAccount token is not mounted (automountServiceAccountToken)",
                    dir.join(file).display()
                )));
            }
        }
        let namespace = match namespace {
            Some(namespace) => namespace.to_owned(),
            None => std::fs::read_to_string(dir.join("namespace"))
                .map(|n| n.trim().to_owned())
                .map_err(|e| KubeError::Config(format!("in_cluster: cannot read {}: {e}", dir.join("namespace").display())))?,
        };
        let mut config = kube::Config::new(url);
        config.default_namespace = namespace.clone();
        config.root_cert_file = Some(dir.join("ca.crt"));
        config.auth_info.token_file = Some(dir.join("token").display().to_string());
        Self::from_config(config, "in-cluster", Some(&namespace))
    }

    /// A client for an already resolved configuration (a kubeconfig context, or in-cluster).
    pub fn from_config(mut config: kube::Config, context: &str, namespace: Option<&str>) -> Result<Self, KubeError> {
        let namespace = namespace.map(str::to_owned).unwrap_or_else(|| config.default_namespace.clone());
        let server = ispn_xsite::redact::userinfo(&config.cluster_url.to_string()).trim_end_matches('/').to_owned();
        config.connect_timeout = Some(CONNECT_TIMEOUT);
        let streams =
            kube::Client::try_from(config.clone()).map_err(|e| KubeError::Config(format!("context {context:?}: {e}")))?;
        config.read_timeout = Some(ANSWER_TIMEOUT);
        // The answer's time counts from the request, not from when a pooled connection went idle.
        config.reset_reader_on_write = true;
        let client = kube::Client::try_from(config).map_err(|e| KubeError::Config(format!("context {context:?}: {e}")))?;
        Ok(Self { client, streams, namespace, context: context.to_owned(), server })
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
            kube::Error::Api(status) if status.code == 401 => self.unreachable(
                verb,
                resource,
                "refused the credentials (401 Unauthorized): the kubeconfig's token or certificate is invalid or expired; renew it".to_owned(),
            ),
            kube::Error::Api(status) => KubeError::Api {
                verb: verb.to_owned(),
                resource: resource.to_owned(),
                namespace: self.namespace.clone(),
                context: self.context.clone(),
                detail: format!("{} ({})", status.message, status.code),
            },
            other => self.unreachable(verb, resource, transport_cause(other)),
        }
    }

    fn unreachable(&self, verb: &str, resource: &str, cause: String) -> KubeError {
        KubeError::Unreachable {
            context: self.context.clone(),
            server: self.server.clone(),
            what: format!("{verb} {resource} in namespace {}", self.namespace),
            cause,
        }
    }

    /// The API server did not answer `verb resource` within `after`.
    pub fn timed_out(&self, verb: &str, resource: &str, after: Duration) -> KubeError {
        self.unreachable(verb, resource, timed_out(after))
    }
}

fn timed_out(after: Duration) -> String {
    format!("did not answer: timed out after {} s; check that it runs and is reachable from here", after.as_secs())
}

/// The innermost cause of an error (what the file system or the parser said), without the
/// layers that only repeat which call failed.
fn root(error: &dyn std::error::Error) -> String {
    let mut cause = error;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    cause.to_string()
}

/// What stopped a request from being answered, in words that say what to check; never the
/// client's layers ("ServiceError: client error (Connect)").
fn transport_cause(error: &kube::Error) -> String {
    let mut chain = vec![error.to_string()];
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        chain.push(cause.to_string());
        source = cause.source();
    }
    let all = chain.join(": ").to_ascii_lowercase();
    let root = chain.last().cloned().unwrap_or_default();
    let root = root.split(" (os error ").next().unwrap_or_default().to_owned();
    let cause = if all.contains("connection refused") {
        "refused the connection; check that it runs and the kubeconfig's server address".to_owned()
    } else if all.contains("timed out") || all.contains("timeout") || all.contains("deadline has elapsed") {
        timed_out(if all.contains("connect") { CONNECT_TIMEOUT } else { ANSWER_TIMEOUT })
    } else if ["certificate", "tls", "handshake", "invalidcontenttype"].iter().any(|w| all.contains(w)) {
        format!("failed the TLS handshake ({root}); check the kubeconfig's certificate-authority-data and server address")
    } else if all.contains("dns") || all.contains("lookup") || all.contains("resolve") {
        format!("cannot be resolved ({root}); check the kubeconfig's server address")
    } else {
        format!("could not be asked ({root})")
    };
    ispn_xsite::redact::userinfo(&cause).into_owned()
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
