//! A fake Kubernetes API server for one site's cluster, good enough for the real kube-rs client:
//! API discovery of the Keycloak CRD (v2alpha1, v2beta1 or both), the Keycloak CR with its scale
//! subresource and status conditions, a StatefulSet and pods that follow `spec.instances` with
//! configurable delays (pods can be made to hang in Terminating), Secrets, Services, Leases,
//! pod port-forwarding (WebSocket, `v4.channel.k8s.io`) to any local TCP address, and 403 for
//! configured (verb, resource) pairs.
//!
//! It plays the Keycloak Operator too: after a change of `spec.instances` it reconciles (bumps
//! `observedGeneration`), starts or terminates pods, and updates `status.instances` and the
//! `Ready` condition as pods become ready.

mod portforward;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;

/// The labels the Keycloak Operator puts on a Keycloak's pods.
pub fn keycloak_labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app".to_owned(), "keycloak".to_owned()),
        ("app.kubernetes.io/managed-by".to_owned(), "keycloak-operator".to_owned()),
        ("app.kubernetes.io/instance".to_owned(), name.to_owned()),
    ])
}

/// How long the pretend operator and kubelet take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// From a spec change to `observedGeneration` catching up.
    pub reconcile: Duration,
    /// From pod creation to Ready.
    pub pod_ready: Duration,
    /// From deletion to the pod being gone.
    pub pod_terminate: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            reconcile: Duration::from_millis(50),
            pod_ready: Duration::from_millis(200),
            pod_terminate: Duration::from_millis(200),
        }
    }
}

#[derive(Debug, Clone)]
struct Keycloak {
    instances: u32,
    generation: i64,
    observed_generation: i64,
    changed_at: Instant,
    annotations: BTreeMap<String, String>,
    labels: BTreeMap<String, String>,
    rolling_update: bool,
    resource_version: u64,
}

#[derive(Debug, Clone)]
struct Pod {
    owner: String,
    labels: BTreeMap<String, String>,
    ready_at: Instant,
    terminating_since: Option<Instant>,
    stuck: bool,
}

#[derive(Debug)]
struct KubeState {
    versions: Vec<String>,
    scale_subresource: bool,
    keycloaks: BTreeMap<(String, String), Keycloak>,
    pods: BTreeMap<(String, String), Pod>,
    secrets: BTreeMap<(String, String), BTreeMap<String, String>>,
    services: BTreeMap<(String, String), Value>,
    leases: BTreeMap<(String, String), Value>,
    forbidden: BTreeSet<(String, String)>,
    /// Every request is answered 401, as for an expired token.
    unauthorized: bool,
    timing: Timing,
    stuck_pods: usize,
    forward: BTreeMap<(String, String), SocketAddr>,
    requests: Vec<String>,
    resource_version: u64,
}

impl KubeState {
    fn next_version(&mut self) -> u64 {
        self.resource_version += 1;
        self.resource_version
    }

    /// The pretend operator and kubelet: brings pods and statuses up to now.
    fn reconcile(&mut self) {
        let now = Instant::now();
        let timing = self.timing;
        let names: Vec<(String, String)> = self.keycloaks.keys().cloned().collect();
        for key in names {
            let (ns, name) = key.clone();
            let kc = self.keycloaks.get_mut(&key).expect("listed");
            if kc.observed_generation < kc.generation && now >= kc.changed_at + timing.reconcile {
                kc.observed_generation = kc.generation;
            }
            if kc.observed_generation < kc.generation {
                continue;
            }
            let desired = kc.instances as usize;
            let labels = kc.labels.clone();
            let mut live: Vec<String> = self
                .pods
                .iter()
                .filter(|((pns, _), p)| *pns == ns && p.owner == name && p.terminating_since.is_none())
                .map(|((_, pname), _)| pname.clone())
                .collect();
            live.sort();
            while live.len() > desired {
                let victim = live.pop().expect("non-empty");
                let stuck_budget = self.stuck_pods;
                let already_stuck = self.pods.values().filter(|p| p.stuck).count();
                if let Some(pod) = self.pods.get_mut(&(ns.clone(), victim)) {
                    pod.terminating_since = Some(now);
                    pod.stuck = already_stuck < stuck_budget;
                }
            }
            let mut index = 0;
            while live.len() < desired {
                let pod_name = format!("{name}-{index}");
                index += 1;
                if self.pods.contains_key(&(ns.clone(), pod_name.clone())) {
                    continue;
                }
                self.pods.insert(
                    (ns.clone(), pod_name.clone()),
                    Pod {
                        owner: name.clone(),
                        labels: labels.clone(),
                        ready_at: now + timing.pod_ready,
                        terminating_since: None,
                        stuck: false,
                    },
                );
                live.push(pod_name);
            }
        }
        self.pods.retain(|_, p| match p.terminating_since {
            Some(since) => p.stuck || now < since + timing.pod_terminate,
            None => true,
        });
    }

    fn ready(&self, ns: &str, name: &str) -> u32 {
        let now = Instant::now();
        self.pods
            .iter()
            .filter(|((pns, _), p)| pns == ns && p.owner == name && p.terminating_since.is_none() && p.ready_at <= now)
            .count() as u32
    }

    fn pod_count(&self, ns: &str, name: &str) -> u32 {
        self.pods.iter().filter(|((pns, _), p)| pns == ns && p.owner == name).count() as u32
    }

    fn selector(labels: &BTreeMap<String, String>) -> String {
        labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
    }

    fn keycloak_json(&self, version: &str, ns: &str, name: &str, kc: &Keycloak) -> Value {
        let ready = self.ready(ns, name);
        let condition = |kind: &str, status: bool, message: &str| json!({"type": kind, "status": if status { "True" } else { "False" }, "message": message, "observedGeneration": kc.observed_generation});
        let is_ready = ready >= kc.instances && kc.observed_generation == kc.generation;
        json!({
            "apiVersion": format!("k8s.keycloak.org/{version}"),
            "kind": "Keycloak",
            "metadata": {
                "name": name, "namespace": ns, "generation": kc.generation,
                "resourceVersion": kc.resource_version.to_string(), "uid": format!("uid-{ns}-{name}"),
                "annotations": kc.annotations, "labels": {},
            },
            "spec": {"instances": kc.instances, "hostname": {"hostname": format!("{name}.example")}},
            "status": {
                "instances": ready,
                "selector": Self::selector(&kc.labels),
                "observedGeneration": kc.observed_generation,
                "conditions": [
                    condition("Ready", is_ready, if is_ready { "" } else { "Waiting for more replicas" }),
                    condition("HasErrors", false, ""),
                    condition("RollingUpdate", kc.rolling_update, if kc.rolling_update { "Rolling out deployment update" } else { "" }),
                ],
            },
        })
    }
}

/// One fake cluster.
#[derive(Debug, Clone)]
pub struct FakeKube {
    state: Arc<Mutex<KubeState>>,
}

fn status(code: u16, reason: &str, message: String) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message, "reason": reason, "code": code});
    (StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), axum::Json(body)).into_response()
}

fn not_found(resource: &str, name: &str) -> Response {
    status(404, "NotFound", format!("{resource} \"{name}\" not found"))
}

fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

impl Default for FakeKube {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeKube {
    /// An empty cluster serving the Keycloak CRD at v2alpha1 with the scale subresource.
    pub fn new() -> Self {
        Self {
            state: Arc::new(Mutex::new(KubeState {
                versions: vec!["v2alpha1".to_owned()],
                scale_subresource: true,
                keycloaks: BTreeMap::new(),
                pods: BTreeMap::new(),
                secrets: BTreeMap::new(),
                services: BTreeMap::new(),
                leases: BTreeMap::new(),
                forbidden: BTreeSet::new(),
                unauthorized: false,
                timing: Timing::default(),
                stuck_pods: 0,
                forward: BTreeMap::new(),
                requests: Vec::new(),
                resource_version: 100,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, KubeState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Which versions of the Keycloak CRD are served (first is preferred).
    pub fn served_versions(self, versions: &[&str]) -> Self {
        self.lock().versions = versions.iter().map(|v| (*v).to_owned()).collect();
        self
    }

    /// Serves the CRD without its scale subresource (scaling then patches `spec.instances`).
    pub fn without_scale_subresource(self) -> Self {
        self.lock().scale_subresource = false;
        self
    }

    /// Sets the pretend operator's and kubelet's delays.
    pub fn timing(self, timing: Timing) -> Self {
        self.lock().timing = timing;
        self
    }

    /// Adds a Keycloak CR with `instances` ready pods.
    pub fn keycloak(self, namespace: &str, name: &str, instances: u32) -> Self {
        {
            let mut s = self.lock();
            let version = s.next_version();
            let past = Instant::now().checked_sub(Duration::from_secs(3600)).unwrap_or_else(Instant::now);
            s.keycloaks.insert(
                (namespace.to_owned(), name.to_owned()),
                Keycloak {
                    instances,
                    generation: 1,
                    observed_generation: 1,
                    changed_at: past,
                    annotations: BTreeMap::new(),
                    labels: keycloak_labels(name),
                    rolling_update: false,
                    resource_version: version,
                },
            );
            for i in 0..instances {
                s.pods.insert(
                    (namespace.to_owned(), format!("{name}-{i}")),
                    Pod {
                        owner: name.to_owned(),
                        labels: keycloak_labels(name),
                        ready_at: past,
                        terminating_since: None,
                        stuck: false,
                    },
                );
            }
        }
        self
    }

    /// Marks a Keycloak as in a rolling update (or not).
    pub fn set_rolling_update(&self, namespace: &str, name: &str, rolling: bool) {
        if let Some(kc) = self.lock().keycloaks.get_mut(&(namespace.to_owned(), name.to_owned())) {
            kc.rolling_update = rolling;
        }
    }

    /// Makes the next `n` pods that are scaled away hang in Terminating.
    pub fn stuck_pods(self, n: usize) -> Self {
        self.lock().stuck_pods = n;
        self
    }

    /// Adds a Secret (string data).
    pub fn secret(self, namespace: &str, name: &str, data: &[(&str, &str)]) -> Self {
        self.lock().secrets.insert(
            (namespace.to_owned(), name.to_owned()),
            data.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        );
        self
    }

    /// Adds a Service object as given.
    pub fn service(self, namespace: &str, name: &str, object: Value) -> Self {
        self.lock().services.insert((namespace.to_owned(), name.to_owned()), object);
        self
    }

    /// Adds a running pod (for Infinispan) whose port-forward reaches `target`.
    pub fn forwarded_pod(self, namespace: &str, name: &str, labels: &[(&str, &str)], target: SocketAddr) -> Self {
        {
            let mut s = self.lock();
            let past = Instant::now().checked_sub(Duration::from_secs(3600)).unwrap_or_else(Instant::now);
            s.pods.insert(
                (namespace.to_owned(), name.to_owned()),
                Pod {
                    owner: String::new(),
                    labels: labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
                    ready_at: past,
                    terminating_since: None,
                    stuck: false,
                },
            );
            s.forward.insert((namespace.to_owned(), name.to_owned()), target);
        }
        self
    }

    /// Denies `verb` on `resource` (`patch`, `keycloaks/scale`) with 403.
    pub fn forbid(self, verb: &str, resource: &str) -> Self {
        self.lock().forbidden.insert((verb.to_owned(), resource.to_owned()));
        self
    }

    /// Answers every request 401, as the API server does for an expired or revoked token.
    pub fn unauthorized(self) -> Self {
        self.lock().unauthorized = true;
        self
    }

    /// Allows it again.
    pub fn allow(&self, verb: &str, resource: &str) {
        self.lock().forbidden.remove(&(verb.to_owned(), resource.to_owned()));
    }

    /// Sets a Lease as if another holder had it.
    pub fn hold_lease(&self, namespace: &str, name: &str, holder: &str, since: &str, duration_secs: i32) {
        let mut s = self.lock();
        let version = s.next_version();
        s.leases.insert(
            (namespace.to_owned(), name.to_owned()),
            json!({
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": name, "namespace": namespace, "resourceVersion": version.to_string()},
                "spec": {"holderIdentity": holder, "acquireTime": since, "renewTime": since, "leaseDurationSeconds": duration_secs},
            }),
        );
    }

    /// The Lease as stored.
    pub fn lease(&self, namespace: &str, name: &str) -> Option<Value> {
        self.lock().leases.get(&(namespace.to_owned(), name.to_owned())).cloned()
    }

    /// `(spec.instances, ready pods, all pods, original-count annotation)` of a Keycloak.
    pub fn keycloak_state(&self, namespace: &str, name: &str) -> Option<(u32, u32, u32, Option<String>)> {
        let mut s = self.lock();
        s.reconcile();
        let kc = s.keycloaks.get(&(namespace.to_owned(), name.to_owned()))?.clone();
        let annotation = kc.annotations.get(crate::ORIGINAL_INSTANCES_ANNOTATION).cloned();
        Some((kc.instances, s.ready(namespace, name), s.pod_count(namespace, name), annotation))
    }

    /// Every request so far (`PATCH /apis/...`).
    pub fn requests(&self) -> Vec<String> {
        self.lock().requests.clone()
    }

    /// The router, for in-process use with `kube::Client::new(router, namespace)`.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/apis", get(api_groups))
            .route("/apis/k8s.keycloak.org/{version}", get(keycloak_resources))
            .route("/apis/k8s.keycloak.org/{version}/namespaces/{ns}/keycloaks/{name}", get(keycloak_get).patch(keycloak_patch))
            .route("/apis/k8s.keycloak.org/{version}/namespaces/{ns}/keycloaks/{name}/scale", get(scale_get).patch(scale_patch))
            .route("/apis/apps/v1/namespaces/{ns}/statefulsets/{name}", get(statefulset_get))
            .route("/api/v1/namespaces/{ns}/pods", get(pods_list))
            .route("/api/v1/namespaces/{ns}/pods/{name}", axum::routing::delete(pod_delete))
            .route("/api/v1/namespaces/{ns}/pods/{name}/portforward", get(portforward::handle))
            .route("/api/v1/namespaces/{ns}/secrets/{name}", get(secret_get))
            .route("/api/v1/namespaces/{ns}/services/{name}", get(service_get))
            .route("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", post(access_review))
            .route("/apis/coordination.k8s.io/v1/namespaces/{ns}/leases", post(lease_create))
            .route(
                "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{name}",
                get(lease_get).put(lease_replace).delete(lease_delete),
            )
            .layer(axum::middleware::from_fn_with_state(self.clone(), guard))
            .with_state(self.clone())
    }

    /// Serves the API on `127.0.0.1:0` until the returned handle is dropped.
    pub async fn serve(&self) -> std::io::Result<RunningKube> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, mut stopped) = watch::channel(false);
        let app = self.router();
        tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            let _ = axum::serve(listener, app).with_graceful_shutdown(shutdown).await;
        });
        Ok(RunningKube { addr, _stop: stop })
    }
}

/// A served fake API. Dropping it stops the server.
#[derive(Debug)]
pub struct RunningKube {
    addr: SocketAddr,
    _stop: watch::Sender<bool>,
}

impl RunningKube {
    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Writes a kubeconfig with one context per `(context, url, namespace)`; the first is current.
pub fn kubeconfig(contexts: &[(&str, &str, &str)]) -> String {
    let mut clusters = String::new();
    let mut ctxs = String::new();
    let mut users = String::new();
    for (name, url, ns) in contexts {
        clusters.push_str(&format!("- name: {name}\n  cluster:\n    server: {url}\n"));
        ctxs.push_str(&format!("- name: {name}\n  context:\n    cluster: {name}\n    namespace: {ns}\n    user: {name}\n"));
        users.push_str(&format!("- name: {name}\n  user:\n    token: fake-token-{name}\n"));
    }
    let current = contexts.first().map(|c| c.0).unwrap_or_default();
    format!("apiVersion: v1\nkind: Config\nclusters:\n{clusters}contexts:\n{ctxs}users:\n{users}current-context: {current}\n")
}

/// Records the request, refuses forbidden ones, and lets the operator catch up first.
async fn guard(State(kube): State<FakeKube>, request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let path = request.uri().path().to_owned();
    let verb = match *request.method() {
        Method::GET if path.ends_with("/portforward") => "create",
        Method::GET if path.ends_with("/pods") => "list",
        Method::GET => "get",
        Method::PATCH => "patch",
        Method::PUT => "update",
        Method::POST => "create",
        Method::DELETE => "delete",
        _ => "other",
    };
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let resource = segments
        .iter()
        .position(|s| *s == "namespaces")
        .and_then(|i| segments.get(i + 2..))
        .map(|rest| match rest {
            [kind, _, sub] => format!("{kind}/{sub}"),
            [kind, ..] => (*kind).to_owned(),
            [] => String::new(),
        })
        .unwrap_or_default();
    let namespace = segments.iter().position(|s| *s == "namespaces").and_then(|i| segments.get(i + 1)).copied().unwrap_or("");
    {
        let mut s = kube.lock();
        s.requests.push(format!("{} {}", request.method(), request.uri()));
        s.reconcile();
        if s.unauthorized {
            return status(401, "Unauthorized", "Unauthorized".to_owned());
        }
        if s.forbidden.contains(&(verb.to_owned(), resource.clone())) {
            let (kind, sub) = resource.split_once('/').unwrap_or((&resource, ""));
            let what = if sub.is_empty() { kind.to_owned() } else { format!("{kind}/{sub}") };
            return status(
                403,
                "Forbidden",
                format!(
                    "{kind} is forbidden: User \"system:serviceaccount:{namespace}:site-sync\" cannot {verb} resource \"{what}\" in the namespace \"{namespace}\""
                ),
            );
        }
    }
    next.run(request).await
}

/// RBAC's answer from the forbidden set (by verb and resource; names do not matter here).
async fn access_review(State(kube): State<FakeKube>, axum::Json(mut review): axum::Json<Value>) -> Response {
    let attributes = &review["spec"]["resourceAttributes"];
    let verb = attributes["verb"].as_str().unwrap_or_default().to_owned();
    let resource = match (attributes["resource"].as_str(), attributes["subresource"].as_str()) {
        (Some(resource), Some(sub)) if !sub.is_empty() => format!("{resource}/{sub}"),
        (resource, _) => resource.unwrap_or_default().to_owned(),
    };
    let allowed = !kube.lock().forbidden.contains(&(verb, resource));
    review["status"] = json!({"allowed": allowed});
    (StatusCode::CREATED, axum::Json(review)).into_response()
}

async fn api_groups(State(kube): State<FakeKube>) -> Response {
    let s = kube.lock();
    let versions: Vec<Value> =
        s.versions.iter().map(|v| json!({"groupVersion": format!("k8s.keycloak.org/{v}"), "version": v})).collect();
    axum::Json(json!({
        "kind": "APIGroupList", "apiVersion": "v1",
        "groups": [
            {"name": "k8s.keycloak.org", "versions": versions, "preferredVersion": versions.first()},
            {"name": "apps", "versions": [{"groupVersion": "apps/v1", "version": "v1"}], "preferredVersion": {"groupVersion": "apps/v1", "version": "v1"}},
            {"name": "coordination.k8s.io", "versions": [{"groupVersion": "coordination.k8s.io/v1", "version": "v1"}], "preferredVersion": {"groupVersion": "coordination.k8s.io/v1", "version": "v1"}},
        ],
    }))
    .into_response()
}

async fn keycloak_resources(State(kube): State<FakeKube>, Path(version): Path<String>) -> Response {
    let s = kube.lock();
    if !s.versions.contains(&version) {
        return status(404, "NotFound", "the server could not find the requested resource".to_owned());
    }
    let verbs = json!(["delete", "deletecollection", "get", "list", "patch", "create", "update", "watch"]);
    let mut resources = vec![
        json!({"name": "keycloaks", "singularName": "keycloak", "namespaced": true, "kind": "Keycloak", "verbs": verbs, "shortNames": ["kc"]}),
        json!({"name": "keycloaks/status", "singularName": "", "namespaced": true, "kind": "Keycloak", "verbs": ["get", "patch", "update"]}),
    ];
    if s.scale_subresource {
        resources.push(json!({"name": "keycloaks/scale", "singularName": "", "namespaced": true, "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"]}));
    }
    axum::Json(json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": format!("k8s.keycloak.org/{version}"), "resources": resources}))
        .into_response()
}

async fn keycloak_get(State(kube): State<FakeKube>, Path((version, ns, name)): Path<(String, String, String)>) -> Response {
    let s = kube.lock();
    match s.keycloaks.get(&(ns.clone(), name.clone())) {
        Some(kc) if s.versions.contains(&version) => axum::Json(s.keycloak_json(&version, &ns, &name, kc)).into_response(),
        _ => not_found("keycloaks.k8s.keycloak.org", &name),
    }
}

fn set_instances(s: &mut KubeState, ns: &str, name: &str, instances: u32) {
    let version = s.next_version();
    if let Some(kc) = s.keycloaks.get_mut(&(ns.to_owned(), name.to_owned())) {
        if kc.instances != instances {
            kc.instances = instances;
            kc.generation += 1;
            kc.changed_at = Instant::now();
        }
        kc.resource_version = version;
    }
}

async fn keycloak_patch(
    State(kube): State<FakeKube>,
    Path((version, ns, name)): Path<(String, String, String)>,
    body: Bytes,
) -> Response {
    let Ok(patch) = serde_json::from_slice::<Value>(&body) else { return status(400, "BadRequest", "invalid patch".to_owned()) };
    let mut s = kube.lock();
    let key = (ns.clone(), name.clone());
    if !s.keycloaks.contains_key(&key) || !s.versions.contains(&version) {
        return not_found("keycloaks.k8s.keycloak.org", &name);
    }
    if let Some(instances) = patch.pointer("/spec/instances").and_then(Value::as_u64) {
        set_instances(&mut s, &ns, &name, instances as u32);
    }
    if let Some(annotations) = patch.pointer("/metadata/annotations") {
        let kc = s.keycloaks.get_mut(&key).expect("checked");
        let mut current = serde_json::to_value(&kc.annotations).unwrap_or(Value::Null);
        merge(&mut current, annotations);
        kc.annotations = serde_json::from_value(current).unwrap_or_default();
    }
    let kc = s.keycloaks.get(&key).expect("checked").clone();
    axum::Json(s.keycloak_json(&version, &ns, &name, &kc)).into_response()
}

fn scale_json(s: &KubeState, ns: &str, name: &str, kc: &Keycloak) -> Value {
    // As the real API server writes it: `spec.replicas` is omitempty, so a Scale at 0 has none.
    let spec = if kc.instances == 0 { json!({}) } else { json!({"replicas": kc.instances}) };
    json!({
        "apiVersion": "autoscaling/v1", "kind": "Scale",
        "metadata": {"name": name, "namespace": ns, "resourceVersion": kc.resource_version.to_string()},
        "spec": spec,
        "status": {"replicas": s.ready(ns, name), "selector": KubeState::selector(&kc.labels)},
    })
}

async fn scale_get(State(kube): State<FakeKube>, Path((_version, ns, name)): Path<(String, String, String)>) -> Response {
    let s = kube.lock();
    if !s.scale_subresource {
        return status(404, "NotFound", "the server could not find the requested resource".to_owned());
    }
    match s.keycloaks.get(&(ns.clone(), name.clone())) {
        Some(kc) => axum::Json(scale_json(&s, &ns, &name, kc)).into_response(),
        None => not_found("keycloaks.k8s.keycloak.org", &name),
    }
}

async fn scale_patch(
    State(kube): State<FakeKube>,
    Path((_version, ns, name)): Path<(String, String, String)>,
    body: Bytes,
) -> Response {
    let Ok(patch) = serde_json::from_slice::<Value>(&body) else { return status(400, "BadRequest", "invalid patch".to_owned()) };
    let mut s = kube.lock();
    if !s.scale_subresource {
        return status(404, "NotFound", "the server could not find the requested resource".to_owned());
    }
    if !s.keycloaks.contains_key(&(ns.clone(), name.clone())) {
        return not_found("keycloaks.k8s.keycloak.org", &name);
    }
    if let Some(replicas) = patch.pointer("/spec/replicas").and_then(Value::as_u64) {
        set_instances(&mut s, &ns, &name, replicas as u32);
    }
    let kc = s.keycloaks[&(ns.clone(), name.clone())].clone();
    axum::Json(scale_json(&s, &ns, &name, &kc)).into_response()
}

async fn statefulset_get(State(kube): State<FakeKube>, Path((ns, name)): Path<(String, String)>) -> Response {
    let s = kube.lock();
    let Some(kc) = s.keycloaks.get(&(ns.clone(), name.clone())) else { return not_found("statefulsets.apps", &name) };
    let update = if kc.rolling_update { "keycloak-2" } else { "keycloak-1" };
    axum::Json(json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": name, "namespace": ns, "generation": kc.generation},
        "spec": {"replicas": kc.instances, "selector": {"matchLabels": kc.labels}, "template": {"metadata": {"labels": kc.labels}}, "serviceName": name},
        "status": {
            "replicas": s.pod_count(&ns, &name), "readyReplicas": s.ready(&ns, &name),
            "currentRevision": "keycloak-1", "updateRevision": update, "observedGeneration": kc.observed_generation,
        },
    }))
    .into_response()
}

#[derive(serde::Deserialize)]
struct ListQuery {
    #[serde(rename = "labelSelector")]
    label_selector: Option<String>,
}

async fn pods_list(State(kube): State<FakeKube>, Path(ns): Path<String>, Query(query): Query<ListQuery>) -> Response {
    let s = kube.lock();
    let wanted: Vec<(String, String)> = query
        .label_selector
        .unwrap_or_default()
        .split(',')
        .filter(|p| !p.is_empty())
        .filter_map(|p| p.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect();
    let now = Instant::now();
    let items: Vec<Value> = s
        .pods
        .iter()
        .filter(|((pns, _), p)| *pns == ns && wanted.iter().all(|(k, v)| p.labels.get(k) == Some(v)))
        .map(|((_, name), p)| {
            let ready = p.terminating_since.is_none() && p.ready_at <= now;
            let mut metadata = json!({"name": name, "namespace": ns, "labels": p.labels});
            if p.terminating_since.is_some() {
                metadata["deletionTimestamp"] = json!("2026-11-26T00:00:00Z");
            }
            json!({
                "apiVersion": "v1", "kind": "Pod", "metadata": metadata,
                "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
            })
        })
        .collect();
    axum::Json(json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": s.resource_version.to_string()}, "items": items}))
        .into_response()
}

async fn pod_delete(State(kube): State<FakeKube>, Path((ns, name)): Path<(String, String)>) -> Response {
    let mut s = kube.lock();
    // Only a forced delete (grace period 0) removes a pod that hangs in Terminating.
    match s.pods.remove(&(ns.clone(), name.clone())) {
        Some(_) => {
            axum::Json(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns}})).into_response()
        }
        None => not_found("pods", &name),
    }
}

async fn secret_get(State(kube): State<FakeKube>, Path((ns, name)): Path<(String, String)>) -> Response {
    use base64::Engine as _;
    let s = kube.lock();
    match s.secrets.get(&(ns.clone(), name.clone())) {
        Some(data) => {
            let encoded: BTreeMap<&String, String> =
                data.iter().map(|(k, v)| (k, base64::engine::general_purpose::STANDARD.encode(v))).collect();
            axum::Json(
                json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": ns}, "data": encoded}),
            )
            .into_response()
        }
        None => not_found("secrets", &name),
    }
}

async fn service_get(State(kube): State<FakeKube>, Path((ns, name)): Path<(String, String)>) -> Response {
    match kube.lock().services.get(&(ns, name.clone())) {
        Some(object) => axum::Json(object.clone()).into_response(),
        None => not_found("services", &name),
    }
}

async fn lease_get(State(kube): State<FakeKube>, Path((ns, name)): Path<(String, String)>) -> Response {
    match kube.lock().leases.get(&(ns, name.clone())) {
        Some(lease) => axum::Json(lease.clone()).into_response(),
        None => not_found("leases.coordination.k8s.io", &name),
    }
}

async fn lease_create(State(kube): State<FakeKube>, Path(ns): Path<String>, body: Bytes) -> Response {
    let Ok(mut lease) = serde_json::from_slice::<Value>(&body) else {
        return status(400, "BadRequest", "invalid lease".to_owned());
    };
    let name = lease.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_owned();
    let mut s = kube.lock();
    if s.leases.contains_key(&(ns.clone(), name.clone())) {
        return status(409, "AlreadyExists", format!("leases.coordination.k8s.io \"{name}\" already exists"));
    }
    let version = s.next_version();
    lease["metadata"]["resourceVersion"] = json!(version.to_string());
    lease["metadata"]["namespace"] = json!(ns);
    s.leases.insert((ns, name), lease.clone());
    (StatusCode::CREATED, axum::Json(lease)).into_response()
}

async fn lease_replace(State(kube): State<FakeKube>, Path((ns, name)): Path<(String, String)>, body: Bytes) -> Response {
    let Ok(mut lease) = serde_json::from_slice::<Value>(&body) else {
        return status(400, "BadRequest", "invalid lease".to_owned());
    };
    let mut s = kube.lock();
    let key = (ns.clone(), name.clone());
    let Some(current) = s.leases.get(&key) else { return not_found("leases.coordination.k8s.io", &name) };
    let sent = lease.pointer("/metadata/resourceVersion").and_then(Value::as_str).unwrap_or_default();
    if sent != current.pointer("/metadata/resourceVersion").and_then(Value::as_str).unwrap_or_default() {
        return status(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on leases.coordination.k8s.io \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
            ),
        );
    }
    let version = s.next_version();
    lease["metadata"]["resourceVersion"] = json!(version.to_string());
    s.leases.insert(key, lease.clone());
    axum::Json(lease).into_response()
}

async fn lease_delete(State(kube): State<FakeKube>, Path((ns, name)): Path<(String, String)>) -> Response {
    match kube.lock().leases.remove(&(ns, name.clone())) {
        Some(_) => axum::Json(json!({"kind": "Status", "apiVersion": "v1", "status": "Success"})).into_response(),
        None => not_found("leases.coordination.k8s.io", &name),
    }
}

pub(crate) fn forward_target(kube: &FakeKube, ns: &str, pod: &str) -> Option<SocketAddr> {
    kube.lock().forward.get(&(ns.to_owned(), pod.to_owned())).copied()
}
