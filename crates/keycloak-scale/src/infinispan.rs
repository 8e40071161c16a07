//! Reaching a site's Infinispan from the Kubernetes side: credentials from the Infinispan
//! Operator's Secrets, the external endpoint if there is one, and otherwise a port-forward to an
//! Infinispan pod through the API server (what `kubectl port-forward` does), so that kubeconfig
//! access is enough. An explicit URL and credentials in the configuration always win.

use std::net::SocketAddr;

use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use kube::api::{Api, ListParams};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::cluster::{KubeError, SiteCluster};

/// Credentials found in a Secret.
#[derive(Clone, PartialEq, Eq)]
pub struct FoundCredentials {
    /// User name.
    pub user: String,
    /// Password (never printed).
    pub password: String,
    /// Where they came from (`secret connect-secret, identities.yaml`).
    pub source: String,
}

impl std::fmt::Debug for FoundCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FoundCredentials").field("user", &self.user).field("source", &self.source).finish_non_exhaustive()
    }
}

#[derive(serde::Deserialize)]
struct Identities {
    #[serde(default)]
    credentials: Vec<Identity>,
}

#[derive(serde::Deserialize)]
struct Identity {
    username: String,
    password: String,
    #[serde(default)]
    roles: Vec<String>,
}

/// Picks the identity with the admin role (x-site operations need it), else the first.
fn from_identities(yaml: &str) -> Option<(String, String)> {
    let identities: Identities = serde_saphyr::from_str(yaml).ok()?;
    let chosen = identities
        .credentials
        .iter()
        .find(|i| i.roles.iter().any(|r| r == "admin"))
        .or_else(|| identities.credentials.first())?;
    Some((chosen.username.clone(), chosen.password.clone()))
}

async fn secret(cluster: &SiteCluster, name: &str) -> Result<Option<Secret>, KubeError> {
    let api: Api<Secret> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    api.get_opt(name).await.map_err(|e| cluster.error("get", "secrets", name, e))
}

fn field(secret: &Secret, key: &str) -> Option<String> {
    secret.data.as_ref()?.get(key).and_then(|v| String::from_utf8(v.0.clone()).ok())
}

/// Finds Infinispan credentials for the Infinispan CR `infinispan`: the Secret `preferred` (by
/// default `connect-secret`, what Keycloak's guide creates), then the operator's
/// `<cr>-generated-operator-secret`, then `<cr>-generated-secret`.
pub async fn credentials(
    cluster: &SiteCluster,
    infinispan: &str,
    preferred: Option<&str>,
) -> Result<FoundCredentials, KubeError> {
    let candidates = [
        preferred.unwrap_or("connect-secret").to_owned(),
        format!("{infinispan}-generated-operator-secret"),
        format!("{infinispan}-generated-secret"),
    ];
    for name in &candidates {
        let Some(secret) = secret(cluster, name).await? else { continue };
        if let Some((user, password)) = field(&secret, "identities.yaml").as_deref().and_then(from_identities) {
            return Ok(FoundCredentials { user, password, source: format!("secret {name}, identities.yaml") });
        }
        if let (Some(user), Some(password)) = (field(&secret, "username"), field(&secret, "password")) {
            return Ok(FoundCredentials { user, password, source: format!("secret {name}, username/password") });
        }
    }
    Err(KubeError::NotFound {
        what: format!("Infinispan credentials (looked in secrets {})", candidates.join(", ")),
        namespace: cluster.namespace.clone(),
        context: cluster.context.clone(),
    })
}

/// The external URL of the Infinispan CR, from its `<cr>-external` Service when that has a load
/// balancer address; `None` when the cluster exposes nothing the tool can reach directly.
pub async fn external_url(cluster: &SiteCluster, infinispan: &str) -> Result<Option<String>, KubeError> {
    let name = format!("{infinispan}-external");
    let api: Api<Service> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let Some(service) = api.get_opt(&name).await.map_err(|e| cluster.error("get", "services", &name, e))? else {
        return Ok(None);
    };
    let port = service.spec.as_ref().and_then(|s| s.ports.as_ref()).and_then(|p| p.first()).map_or(11222, |p| p.port);
    let ingress = service.status.and_then(|s| s.load_balancer).and_then(|lb| lb.ingress).and_then(|i| i.into_iter().next());
    Ok(ingress.and_then(|i| i.hostname.or(i.ip)).map(|host| format!("https://{host}:{port}")))
}

/// A running Infinispan pod of the CR `infinispan` (operator labels `app=infinispan-pod`,
/// `clusterName=<cr>`).
pub async fn infinispan_pod(cluster: &SiteCluster, infinispan: &str) -> Result<String, KubeError> {
    let api: Api<Pod> = Api::namespaced(cluster.streams.clone(), &cluster.namespace);
    let selector = format!("app=infinispan-pod,clusterName={infinispan}");
    let pods = api.list(&ListParams::default().labels(&selector)).await.map_err(|e| cluster.error("list", "pods", "", e))?;
    pods.items.into_iter().filter(|p| p.metadata.deletion_timestamp.is_none()).find_map(|p| p.metadata.name).ok_or_else(|| {
        KubeError::NotFound {
            what: format!("a running Infinispan pod ({selector})"),
            namespace: cluster.namespace.clone(),
            context: cluster.context.clone(),
        }
    })
}

/// A local port that forwards every connection to a pod's port through the API server.
#[derive(Debug)]
pub struct PortForward {
    local: SocketAddr,
    task: JoinHandle<()>,
}

impl PortForward {
    /// Listens on `127.0.0.1:0`; each accepted connection opens its own port-forward stream.
    pub async fn start(cluster: &SiteCluster, pod: &str, port: u16) -> Result<Self, KubeError> {
        let listener = TcpListener::bind("127.0.0.1:0").await.map_err(|e| KubeError::Api {
            verb: "listen".to_owned(),
            resource: "127.0.0.1:0".to_owned(),
            namespace: cluster.namespace.clone(),
            context: cluster.context.clone(),
            detail: e.to_string(),
        })?;
        let local = listener.local_addr().map_err(|e| KubeError::Config(e.to_string()))?;
        // Prove the forward works before anyone relies on it: a missing permission or pod shows
        // up here, not as a connection reset later.
        let api: Api<Pod> = Api::namespaced(cluster.streams.clone(), &cluster.namespace);
        // The streams' client has no answer timeout (a forward may stay quiet); this first one does.
        let probe = match tokio::time::timeout(crate::cluster::ANSWER_TIMEOUT, api.portforward(pod, &[port])).await {
            Ok(probe) => probe.map_err(|e| cluster.error("create", "pods/portforward", pod, e))?,
            Err(_) => return Err(cluster.timed_out("create", "pods/portforward", crate::cluster::ANSWER_TIMEOUT)),
        };
        probe.abort();
        let (cluster, pod) = (cluster.clone(), pod.to_owned());
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let api: Api<Pod> = Api::namespaced(cluster.streams.clone(), &cluster.namespace);
                let pod = pod.clone();
                tokio::spawn(async move {
                    match api.portforward(&pod, &[port]).await {
                        Ok(mut forwarder) => {
                            if let Some(mut upstream) = forwarder.take_stream(port) {
                                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut upstream).await;
                            }
                            forwarder.abort();
                        }
                        Err(e) => tracing::warn!(error = %e, pod = %pod, "port-forward failed"),
                    }
                });
            }
        });
        Ok(Self { local, task })
    }

    /// `http://127.0.0.1:PORT` (the pod serves plain HTTP or TLS as configured; pick the scheme).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

impl Drop for PortForward {
    fn drop(&mut self) {
        self.task.abort();
    }
}
