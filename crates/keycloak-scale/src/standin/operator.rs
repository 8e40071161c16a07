//! A stand-in Keycloak Operator for a real API server: for every Keycloak CR of one namespace it
//! does what site-sync observes of the real operator. It bumps `status.observedGeneration` once
//! it acted on a generation, keeps one pod per instance (labelled as the operator labels them,
//! bound to kwok's node so that kwok makes them ready and removes them when deleted), keeps a
//! StatefulSet of the CR's name whose status counts those pods, and writes `status.instances`
//! (ready pods), `status.selector` and the `Ready`/`HasErrors`/`RollingUpdate` conditions
//! through `/status`.
//!
//! It can be told to be slow (act on a new generation only after a delay), to make pods slow to
//! start or to terminate, to leave the next pods it scales away stuck in Terminating (their
//! kubelet is gone: kwok leaves them until a forced delete), and to report a rolling update.
//!
//! The real operator scales through a StatefulSet with parallel pod management; the stand-in
//! creates and deletes the pods itself (there is no StatefulSet controller without
//! kube-controller-manager), all at once, highest ordinal first, and never re-creates a name that
//! is still terminating, as a StatefulSet does not.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The node kwok plays (`cargo xtask kube up` creates it).
pub const NODE: &str = "kwok-node-0";
/// Annotations kwok's stages of the harness read (`testenv/kube/kwok.yaml`).
pub const READY_DELAY: &str = "site-sync.test/ready-delay";
/// See [`READY_DELAY`].
pub const TERMINATE_DELAY: &str = "site-sync.test/terminate-delay";
/// See [`READY_DELAY`].
pub const KUBELET_GONE: &str = "site-sync.test/kubelet-gone";

/// How the stand-in behaves; change it while it runs with [`StandInOperator::behave`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Behaviour {
    /// From a new generation of the CR to the operator acting on it.
    pub reconcile_delay: Duration,
    /// From a pod's creation to it being ready (kwok waits this long).
    pub ready_delay: Duration,
    /// From a pod's deletion to it being gone (kwok waits this long).
    pub terminate_delay: Duration,
    /// The next this many pods scaled away hang in Terminating until force-deleted.
    pub stuck_pods: usize,
    /// Report the `RollingUpdate` condition as true.
    pub rolling_update: bool,
}

impl Default for Behaviour {
    fn default() -> Self {
        Self {
            reconcile_delay: Duration::ZERO,
            ready_delay: Duration::ZERO,
            terminate_delay: Duration::ZERO,
            stuck_pods: 0,
            rolling_update: false,
        }
    }
}

/// The labels the Keycloak Operator puts on a Keycloak's pods.
pub fn labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app".to_owned(), "keycloak".to_owned()),
        ("app.kubernetes.io/managed-by".to_owned(), "keycloak-operator".to_owned()),
        ("app.kubernetes.io/instance".to_owned(), name.to_owned()),
    ])
}

fn selector(labels: &BTreeMap<String, String>) -> String {
    labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

fn go_duration(duration: Duration) -> String {
    format!("{}ms", duration.as_millis())
}

/// The Keycloak resource as the API server serves it now (tests change the CRD's versions).
async fn keycloak_resource(client: &kube::Client) -> Option<ApiResource> {
    let group = kube::discovery::group(client, "k8s.keycloak.org").await.ok()?;
    group.recommended_kind("Keycloak").map(|(resource, _)| resource)
}

struct Shared {
    behaviour: Behaviour,
    /// When each (CR, generation) was first seen: a slow operator acts `reconcile_delay` later.
    seen: HashMap<(String, i64), Instant>,
    last_error: Option<String>,
}

/// The stand-in, reconciling one namespace until dropped.
pub struct StandInOperator {
    shared: Arc<Mutex<Shared>>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for StandInOperator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StandInOperator").field("behaviour", &self.lock().behaviour).finish()
    }
}

impl Drop for StandInOperator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl StandInOperator {
    /// Starts reconciling every Keycloak CR in `namespace` (polling every 50 ms, which keeps it
    /// simple and quick enough for tests that poll at 20–500 ms themselves).
    pub fn start(client: kube::Client, namespace: &str, behaviour: Behaviour) -> Self {
        let shared = Arc::new(Mutex::new(Shared { behaviour, seen: HashMap::new(), last_error: None }));
        let task = tokio::spawn(run(client, namespace.to_owned(), shared.clone()));
        Self { shared, task }
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Changes the behaviour from now on.
    pub fn behave(&self, change: impl FnOnce(&mut Behaviour)) {
        change(&mut self.lock().behaviour);
    }

    /// The last error a reconciliation met (none while all is well).
    pub fn last_error(&self) -> Option<String> {
        self.lock().last_error.clone()
    }
}

/// Every 50 ms while something moves, every 250 ms while all is settled: quick enough for
/// tests that poll at 20–500 ms, light enough for a dozen tests running at once.
async fn run(client: kube::Client, namespace: String, shared: Arc<Mutex<Shared>>) {
    let mut resource: Option<ApiResource> = None;
    loop {
        if resource.is_none() {
            resource = keycloak_resource(&client).await;
        }
        let mut settled = false;
        if let Some(found) = &resource {
            let result = reconcile_all(&client, &namespace, found, &shared).await;
            let mut s = shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            match result {
                Ok(all_settled) => {
                    s.last_error = None;
                    settled = all_settled;
                }
                Err(error) => {
                    // The CRD's versions may have changed under a test: discover again.
                    if matches!(&error, kube::Error::Api(status) if status.code == 404) {
                        resource = None;
                    }
                    s.last_error = Some(error.to_string());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(if settled { 250 } else { 50 })).await;
    }
}

async fn reconcile_all(
    client: &kube::Client,
    namespace: &str,
    resource: &ApiResource,
    shared: &Arc<Mutex<Shared>>,
) -> Result<bool, kube::Error> {
    let keycloaks: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, resource);
    let mut settled = true;
    for keycloak in keycloaks.list(&ListParams::default()).await? {
        let Some(name) = keycloak.metadata.name.clone() else { continue };
        if keycloak.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let generation = keycloak.metadata.generation.unwrap_or(1);
        let behaviour = {
            let mut s = shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let first_seen = *s.seen.entry((name.clone(), generation)).or_insert_with(Instant::now);
            let behaviour = s.behaviour.clone();
            if first_seen.elapsed() < behaviour.reconcile_delay {
                settled = false;
                continue;
            }
            behaviour
        };
        let instances = keycloak.data.pointer("/spec/instances").and_then(Value::as_u64).unwrap_or(1) as usize;
        let (ready, total) = reconcile_pods(client, namespace, &name, instances, &behaviour, shared).await?;
        reconcile_statefulset(client, namespace, &name, instances, ready, total).await?;
        let all_ready = ready == instances && total == instances;
        let condition = |kind: &str, status: bool, message: &str| json!({"type": kind, "status": if status { "True" } else { "False" }, "message": message, "observedGeneration": generation});
        let status = json!({"status": {
            "instances": ready,
            "selector": selector(&labels(&name)),
            "observedGeneration": generation,
            "conditions": [
                condition("Ready", all_ready, if all_ready { "" } else { "Waiting for more replicas" }),
                condition("HasErrors", false, ""),
                condition("RollingUpdate", behaviour.rolling_update, if behaviour.rolling_update { "Rolling out deployment update" } else { "" }),
            ],
        }});
        if keycloak.data.get("status") != status.get("status") {
            keycloaks.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status)).await?;
        }
        settled &= all_ready;
    }
    Ok(settled)
}

fn is_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn ordinal(name: &str, pod: &str) -> Option<usize> {
    pod.strip_prefix(name)?.strip_prefix('-')?.parse().ok()
}

/// Creates and deletes pods towards `instances`; returns (ready pods, all pods).
async fn reconcile_pods(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    instances: usize,
    behaviour: &Behaviour,
    shared: &Arc<Mutex<Shared>>,
) -> Result<(usize, usize), kube::Error> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let labels = labels(name);
    let existing = pods.list(&ListParams::default().labels(&selector(&labels))).await?.items;
    // StatefulSet semantics: pods `<name>-0` to `<name>-(instances-1)`, the rest go away
    // (highest ordinal first), and a name still terminating is not re-created yet.
    let mut surplus: Vec<(usize, String)> = existing
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| {
            let pod = p.metadata.name.clone()?;
            Some((ordinal(name, &pod)?, pod))
        })
        .filter(|(index, _)| *index >= instances)
        .collect();
    surplus.sort();
    for (_, victim) in surplus.into_iter().rev() {
        let stuck = {
            let mut s = shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let stuck = s.behaviour.stuck_pods > 0;
            if stuck {
                s.behaviour.stuck_pods -= 1;
            }
            stuck
        };
        if stuck {
            let patch = json!({"metadata": {"annotations": {KUBELET_GONE: "true"}}});
            pods.patch(&victim, &PatchParams::default(), &Patch::Merge(&patch)).await?;
        }
        match pods.delete(&victim, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(other) => return Err(other),
        }
    }
    let taken: Vec<usize> = existing.iter().filter_map(|p| ordinal(name, p.metadata.name.as_deref()?)).collect();
    for index in (0..instances).filter(|i| !taken.contains(i)) {
        let mut annotations = BTreeMap::new();
        if !behaviour.ready_delay.is_zero() {
            annotations.insert(READY_DELAY.to_owned(), go_duration(behaviour.ready_delay));
        }
        if !behaviour.terminate_delay.is_zero() {
            annotations.insert(TERMINATE_DELAY.to_owned(), go_duration(behaviour.terminate_delay));
        }
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("{name}-{index}"), "labels": labels, "annotations": annotations},
            "spec": {
                "nodeName": NODE,
                "containers": [{"name": "keycloak", "image": "quay.io/keycloak/keycloak", "ports": [{"containerPort": 8080}]}],
            },
        }))
        .expect("a valid pod");
        match pods.create(&PostParams::default(), &pod).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(other) => return Err(other),
        }
    }
    let now = pods.list(&ListParams::default().labels(&selector(&labels))).await?.items;
    Ok((now.iter().filter(|p| is_ready(p)).count(), now.len()))
}

async fn reconcile_statefulset(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    instances: usize,
    ready: usize,
    total: usize,
) -> Result<(), kube::Error> {
    let api: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
    let labels = labels(name);
    let current = match api.get_opt(name).await? {
        Some(current) => current,
        None => {
            let statefulset: StatefulSet = serde_json::from_value(json!({
                "apiVersion": "apps/v1", "kind": "StatefulSet",
                "metadata": {"name": name, "labels": labels},
                "spec": {
                    "replicas": instances, "serviceName": format!("{name}-discovery"), "podManagementPolicy": "Parallel",
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {"containers": [{"name": "keycloak", "image": "quay.io/keycloak/keycloak"}]},
                    },
                },
            }))
            .expect("a valid StatefulSet");
            api.create(&PostParams::default(), &statefulset).await?
        }
    };
    if current.spec.replicas != Some(instances as i32) {
        api.patch(name, &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": instances}}))).await?;
    }
    let status = current.status.unwrap_or_default();
    if (status.replicas, status.ready_replicas) != (total as i32, Some(ready as i32)) {
        let status = json!({"status": {"replicas": total, "readyReplicas": ready, "availableReplicas": ready}});
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status)).await?;
    }
    Ok(())
}
