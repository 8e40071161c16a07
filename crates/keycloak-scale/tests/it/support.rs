//! One site's cluster for a test, on either backend: the fake API server (default), or the real
//! API server of `cargo xtask kube up` when `SITE_SYNC_KUBE_CONFIG` is set, with the stand-in
//! Keycloak Operator and kwok playing what the fake plays itself. Tests describe the cluster
//! once ([`Setup`]) and read it back through [`Env`], whatever the backend.

use std::net::SocketAddr;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use keycloak_scale::fake::{FakeKube, RunningKube, Timing, kubeconfig};
use keycloak_scale::standin::operator::{Behaviour, StandInOperator};
use keycloak_scale::standin::{RealKube, SITE_SYNC_USER};
use keycloak_scale::{ScaleSettings, SiteCluster};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};

/// The fake's namespace (the real backend gives every test a fresh one).
pub const NS: &str = "keycloak";

pub fn quick() -> Timing {
    Timing {
        reconcile: Duration::from_millis(20),
        pod_ready: Duration::from_millis(60),
        pod_terminate: Duration::from_millis(60),
    }
}

/// Every permission site-sync's calls can need, as RBAC rules; a test that forbids a (verb,
/// resource) pair on the real server runs with these minus that pair.
fn every_permission() -> Vec<(&'static str, &'static str, Vec<&'static str>)> {
    vec![
        ("k8s.keycloak.org", "keycloaks", vec!["get", "patch"]),
        ("k8s.keycloak.org", "keycloaks/scale", vec!["get", "patch"]),
        ("", "pods", vec!["get", "list", "delete"]),
        ("apps", "statefulsets", vec!["get"]),
        ("coordination.k8s.io", "leases", vec!["get", "create", "update", "delete"]),
        ("", "secrets", vec!["get"]),
        ("", "services", vec!["get"]),
        ("", "pods/portforward", vec!["get", "create"]),
    ]
}

/// What a test's cluster has.
#[derive(Default)]
pub struct Setup {
    keycloaks: Vec<(String, u32)>,
    timing: Option<Timing>,
    stuck_pods: usize,
    forbidden: Vec<(String, String)>,
    secrets: Vec<(String, Vec<(String, String)>)>,
    services: Vec<(String, Value)>,
    forwarded: Option<ForwardedPod>,
    versions: Option<Vec<String>>,
    without_scale: bool,
}

impl Setup {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn keycloak(mut self, name: &str, instances: u32) -> Self {
        self.keycloaks.push((name.to_owned(), instances));
        self
    }

    pub fn timing(mut self, timing: Timing) -> Self {
        self.timing = Some(timing);
        self
    }

    pub fn stuck_pods(mut self, n: usize) -> Self {
        self.stuck_pods = n;
        self
    }

    pub fn forbid(mut self, verb: &str, resource: &str) -> Self {
        self.forbidden.push((verb.to_owned(), resource.to_owned()));
        self
    }

    pub fn secret(mut self, name: &str, data: &[(&str, &str)]) -> Self {
        self.secrets.push((name.to_owned(), data.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()));
        self
    }

    /// A Service (`spec` and `status` as the API server would hold them).
    pub fn service(mut self, name: &str, spec: Value, status: Value) -> Self {
        self.services.push((name.to_owned(), json!({"spec": spec, "status": status})));
        self
    }

    /// A running pod whose port-forward reaches `target` (on the real backend kwok forwards
    /// the pod to 127.0.0.1:18222, which this relays to `target`).
    pub fn forwarded_pod(mut self, name: &str, labels: &[(&str, &str)], target: SocketAddr) -> Self {
        self.forwarded =
            Some((name.to_owned(), labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(), target));
        self
    }

    pub fn served_versions(mut self, versions: &[&str]) -> Self {
        self.versions = Some(versions.iter().map(|v| (*v).to_owned()).collect());
        self
    }

    pub fn without_scale_subresource(mut self) -> Self {
        self.without_scale = true;
        self
    }

    /// Builds the cluster on the backend the environment selects.
    pub async fn start(self) -> Env {
        match RealKube::from_env().await {
            Some(real) => self.start_real(real).await,
            None => self.start_fake().await,
        }
    }

    async fn start_fake(self) -> Env {
        let mut kube = FakeKube::new().timing(self.timing.unwrap_or_default()).stuck_pods(self.stuck_pods);
        if let Some(versions) = &self.versions {
            kube = kube.served_versions(&versions.iter().map(String::as_str).collect::<Vec<_>>());
        }
        if self.without_scale {
            kube = kube.without_scale_subresource();
        }
        for (name, instances) in &self.keycloaks {
            kube = kube.keycloak(NS, name, *instances);
        }
        for (verb, resource) in &self.forbidden {
            kube = kube.forbid(verb, resource);
        }
        for (name, data) in &self.secrets {
            let data: Vec<(&str, &str)> = data.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            kube = kube.secret(NS, name, &data);
        }
        for (name, object) in &self.services {
            let mut service = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": NS}});
            service["spec"] = object["spec"].clone();
            service["status"] = object["status"].clone();
            kube = kube.service(NS, name, service);
        }
        if let Some((name, labels, target)) = &self.forwarded {
            let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            kube = kube.forwarded_pod(NS, name, &labels, *target);
        }
        let running = kube.serve().await.unwrap();
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), kubeconfig(&[("site-b", &running.url(), NS), ("site-a", "http://127.0.0.1:9", "other")]))
            .unwrap();
        let cluster = SiteCluster::from_kubeconfig(Some(file.path()), Some("site-b"), None).await.unwrap();
        Env { cluster, namespace: NS.to_owned(), backend: Backend::Fake { kube, _running: running, _file: file } }
    }

    async fn start_real(self, real: RealKube) -> Env {
        let crd = if self.versions.is_some() || self.without_scale {
            let versions = self.versions.clone().unwrap_or_else(|| vec!["v2alpha1".to_owned()]);
            let versions: Vec<&str> = versions.iter().map(String::as_str).collect();
            CrdGuard::Reshaped(real.reshaped_crd(&versions, !self.without_scale).await)
        } else {
            CrdGuard::Published(real.published_crd().await)
        };
        let namespace = real.namespace("kc-scale").await;
        let timing = self.timing.unwrap_or_default();
        let behaviour = Behaviour {
            ready_delay: timing.pod_ready,
            terminate_delay: timing.pod_terminate,
            stuck_pods: self.stuck_pods,
            ..Behaviour::default()
        };
        let operator = StandInOperator::start(real.operator.clone(), &namespace, behaviour);
        for (name, instances) in &self.keycloaks {
            real.create_keycloak(&namespace, name, *instances).await;
        }
        for (name, data) in &self.secrets {
            let string_data: serde_json::Map<String, Value> = data.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
            real.create(
                &namespace,
                json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": string_data}),
            )
            .await;
        }
        for (name, object) in &self.services {
            real.create(
                &namespace,
                json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": object["spec"]}),
            )
            .await;
            let services: Api<k8s_openapi::api::core::v1::Service> = Api::namespaced(real.admin.clone(), &namespace);
            services
                .patch_status(name, &PatchParams::default(), &Patch::Merge(json!({"status": object["status"]})))
                .await
                .expect("a Service's status");
        }
        let mut relay = None;
        if let Some((name, labels, target)) = &self.forwarded {
            let labels: serde_json::Map<String, Value> = labels.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
            real.create(
                &namespace,
                json!({
                    "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels},
                    "spec": {"nodeName": keycloak_scale::standin::operator::NODE, "containers": [{"name": "server", "image": "infinispan", "ports": [{"containerPort": 11222}]}]},
                }),
            )
            .await;
            relay = Some(Relay::start(*target).await);
        }
        let token = if self.forbidden.is_empty() {
            None
        } else {
            let rules: Vec<Value> = every_permission()
                .into_iter()
                .filter_map(|(group, resource, verbs)| {
                    let verbs: Vec<&str> =
                        verbs.into_iter().filter(|v| !self.forbidden.iter().any(|(fv, fr)| fv == v && fr == resource)).collect();
                    (!verbs.is_empty()).then(|| json!({"apiGroups": [group], "resources": [resource], "verbs": verbs}))
                })
                .collect();
            Some(real.service_account(&namespace, "site-sync", &rules).await)
        };
        let user = match &token {
            Some(_) => format!("system:serviceaccount:{namespace}:site-sync"),
            None => SITE_SYNC_USER.to_owned(),
        };
        let cluster = real.site_cluster(&namespace, token.as_deref()).await;
        let env = Env {
            cluster,
            namespace: namespace.clone(),
            backend: Backend::Real { real, operator, user, _crd: crd, _relay: relay },
        };
        // Like the fake, start from a settled cluster: every Keycloak ready with its pods.
        if let Backend::Real { real, operator, .. } = &env.backend {
            for (name, instances) in &self.keycloaks {
                real.settled(&env.namespace, name, *instances, operator).await;
            }
        }
        env
    }
}

enum CrdGuard {
    Published(#[allow(dead_code)] tokio::sync::RwLockReadGuard<'static, bool>),
    Reshaped(#[allow(dead_code)] tokio::sync::RwLockWriteGuard<'static, bool>),
}

/// Relays 127.0.0.1:18222 (where kwok forwards the `forward-probe` and `infinispan-0` pods of
/// the tests) to a test's own server.
struct Relay(tokio::task::JoinHandle<()>, #[allow(dead_code)] tokio::sync::MutexGuard<'static, ()>);

/// One relay at a time: tests that forward wait for each other.
static RELAY_PORT: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

impl Relay {
    async fn start(target: SocketAddr) -> Self {
        let turn = RELAY_PORT.lock().await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:18222").await.expect("127.0.0.1:18222 is free for the relay");
        Self(
            tokio::spawn(async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    tokio::spawn(async move {
                        if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                }
            }),
            turn,
        )
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A pod whose port-forward reaches a test's own server: name, labels, where to.
type ForwardedPod = (String, Vec<(String, String)>, SocketAddr);

// The real backend is the larger by far; there is one per test.
#[allow(clippy::large_enum_variant)]
enum Backend {
    Fake { kube: FakeKube, _running: RunningKube, _file: tempfile::NamedTempFile },
    Real { real: RealKube, operator: StandInOperator, user: String, _crd: CrdGuard, _relay: Option<Relay> },
}

/// A test's cluster, built.
pub struct Env {
    /// The site's cluster as site-sync sees it (a kubeconfig context).
    pub cluster: SiteCluster,
    /// Its namespace.
    pub namespace: String,
    backend: Backend,
}

impl Env {
    pub fn is_real(&self) -> bool {
        matches!(self.backend, Backend::Real { .. })
    }

    /// Scaling settings that suit the backend: the real server's pods take a little longer.
    pub fn settings(&self) -> ScaleSettings {
        let timeout = if self.is_real() { Duration::from_secs(8) } else { Duration::from_millis(1500) };
        ScaleSettings {
            poll: Duration::from_millis(20),
            scale_down_timeout: timeout,
            scale_up_timeout: timeout,
            force_delete_stuck_pods: false,
        }
    }

    /// `(spec.instances, ready pods, all pods, original-count annotation)` of a Keycloak.
    pub async fn keycloak_state(&self, name: &str) -> Option<(u32, u32, u32, Option<String>)> {
        match &self.backend {
            Backend::Fake { kube, .. } => kube.keycloak_state(NS, name),
            Backend::Real { real, .. } => real.keycloak_state(&self.namespace, name).await,
        }
    }

    /// The requests site-sync's client made so far, as `METHOD /path?query`.
    pub async fn requests(&self) -> Vec<String> {
        match &self.backend {
            Backend::Fake { kube, .. } => kube.requests(),
            Backend::Real { real, user, .. } => real.requests(&self.namespace, user).await,
        }
    }

    /// Marks a Keycloak as in a rolling update.
    pub async fn set_rolling_update(&self, name: &str, rolling: bool) {
        match &self.backend {
            Backend::Fake { kube, .. } => kube.set_rolling_update(NS, name, rolling),
            Backend::Real { operator, real, .. } => {
                operator.behave(|b| b.rolling_update = rolling);
                let resource = real.keycloak_resource().await;
                let api: Api<DynamicObject> = Api::namespaced_with(real.admin.clone(), &self.namespace, &resource);
                for _ in 0..100 {
                    let cr = api.get(name).await.expect("reading the CR");
                    let shown = cr
                        .data
                        .pointer("/status/conditions")
                        .and_then(Value::as_array)
                        .and_then(|c| c.iter().find(|c| c["type"] == "RollingUpdate"))
                        .is_some_and(|c| c["status"] == if rolling { "True" } else { "False" });
                    if shown {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                panic!("the stand-in operator did not report RollingUpdate={rolling}");
            }
        }
    }

    /// A Lease as if another holder had it.
    pub async fn hold_lease(&self, name: &str, holder: &str, since: &str, duration_secs: i32) {
        match &self.backend {
            Backend::Fake { kube, .. } => kube.hold_lease(NS, name, holder, since, duration_secs),
            Backend::Real { real, .. } => {
                real.create(
                    &self.namespace,
                    json!({
                        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": name},
                        "spec": {"holderIdentity": holder, "acquireTime": since, "renewTime": since, "leaseDurationSeconds": duration_secs},
                    }),
                )
                .await;
            }
        }
    }

    /// The Lease as stored.
    pub async fn lease(&self, name: &str) -> Option<Value> {
        match &self.backend {
            Backend::Fake { kube, .. } => kube.lease(NS, name),
            Backend::Real { real, .. } => {
                let api: Api<Lease> = Api::namespaced(real.admin.clone(), &self.namespace);
                api.get_opt(name).await.expect("reading the Lease").map(|l| serde_json::to_value(l).expect("JSON"))
            }
        }
    }
}
