//! Scaling the Keycloak CR of the offline site.
//!
//! Down: record the instance count (as an annotation on the CR, before anything else), scale to
//! 0, then wait until the operator caught up (`observedGeneration`), no pod matches the instance
//! selector and the StatefulSet reports 0 replicas. `Ready` is not trusted at 0 instances: the
//! operator reports it as soon as it reconciled, whatever the terminating pods are doing.
//! Up: scale to the recorded count and wait until `status.instances` equals it with `Ready` true.

use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use serde_json::{Value, json};
use sync_core::ports::{Keycloak, KeycloakError, KeycloakState, Scaling};
use tokio::sync::OnceCell;

use crate::ORIGINAL_INSTANCES_ANNOTATION;
use crate::access::Permission;
use crate::cluster::{KubeError, SiteCluster};

/// How long the StatefulSet may take to report 0 replicas once stuck pods were force-deleted.
const FORCED_DELETE_SETTLE: Duration = Duration::from_secs(30);

/// How long to wait and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScaleSettings {
    /// Pause between two reads.
    pub poll: Duration,
    /// How long pods may take to go away.
    pub scale_down_timeout: Duration,
    /// How long Keycloak may take to be ready again.
    pub scale_up_timeout: Duration,
    /// Force-delete pods still terminating after `scale_down_timeout` (off by default: a pod on
    /// a dead node should be looked at by a human).
    pub force_delete_stuck_pods: bool,
}

impl Default for ScaleSettings {
    fn default() -> Self {
        Self {
            poll: Duration::from_millis(500),
            scale_down_timeout: Duration::from_secs(300),
            scale_up_timeout: Duration::from_secs(600),
            force_delete_stuck_pods: false,
        }
    }
}

/// What the CR says.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cr {
    spec: u32,
    ready: u32,
    generation: i64,
    observed: i64,
    selector: String,
    ready_condition: bool,
    rolling_update: bool,
    original: Option<u32>,
}

impl Cr {
    fn from(object: &DynamicObject, name: &str) -> Self {
        let data = &object.data;
        let condition = |kind: &str| {
            data.pointer("/status/conditions")
                .and_then(Value::as_array)
                .and_then(|c| c.iter().find(|c| c.get("type").and_then(Value::as_str) == Some(kind)))
                .and_then(|c| c.get("status").and_then(Value::as_str))
                == Some("True")
        };
        let default_selector =
            format!("app=keycloak,app.kubernetes.io/managed-by=keycloak-operator,app.kubernetes.io/instance={name}");
        Self {
            spec: data.pointer("/spec/instances").and_then(Value::as_u64).unwrap_or(1) as u32,
            ready: data.pointer("/status/instances").and_then(Value::as_u64).unwrap_or(0) as u32,
            generation: object.metadata.generation.unwrap_or(0),
            observed: data.pointer("/status/observedGeneration").and_then(Value::as_i64).unwrap_or(0),
            selector: data.pointer("/status/selector").and_then(Value::as_str).map(str::to_owned).unwrap_or(default_selector),
            ready_condition: condition("Ready"),
            rolling_update: condition("RollingUpdate"),
            original: object
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(ORIGINAL_INSTANCES_ANNOTATION))
                .and_then(|v| v.parse().ok()),
        }
    }
}

/// The offline site's Keycloak CR.
#[derive(Debug)]
pub struct KubeKeycloak {
    cluster: SiteCluster,
    name: String,
    settings: ScaleSettings,
    resource: OnceCell<(ApiResource, bool)>,
}

impl KubeKeycloak {
    /// The Keycloak CR `name` in the cluster's namespace.
    pub fn new(cluster: SiteCluster, name: impl Into<String>, settings: ScaleSettings) -> Self {
        Self { cluster, name: name.into(), settings, resource: OnceCell::new() }
    }

    /// The served version of the CRD (v2beta1 is preferred when both are), and whether it has
    /// the scale subresource. Discovered once.
    pub async fn served(&self) -> Result<&(ApiResource, bool), KubeError> {
        self.resource
            .get_or_try_init(|| async {
                let group = kube::discovery::group(&self.cluster.client, "k8s.keycloak.org").await.map_err(|e| match e {
                    kube::Error::Discovery(_) => KubeError::NotFound {
                        what: "the Keycloak CRD (API group k8s.keycloak.org); is the Keycloak Operator installed".to_owned(),
                        namespace: self.cluster.namespace.clone(),
                        context: self.cluster.context.clone(),
                    },
                    other => self.cluster.error("discover", "k8s.keycloak.org", "", other),
                })?;
                let (resource, caps) = group.recommended_kind("Keycloak").ok_or_else(|| KubeError::NotFound {
                    what: "kind Keycloak in API group k8s.keycloak.org".to_owned(),
                    namespace: self.cluster.namespace.clone(),
                    context: self.cluster.context.clone(),
                })?;
                let has_scale = caps.subresources.iter().any(|(sub, _)| sub.plural == "scale");
                tracing::debug!(version = %resource.version, has_scale, "discovered the Keycloak CRD");
                Ok((resource, has_scale))
            })
            .await
    }

    /// The cluster the CR lives in.
    pub fn cluster(&self) -> &SiteCluster {
        &self.cluster
    }

    /// Every permission scaling down and back up needs (after discovery: the scale
    /// subresource, or `spec.instances` when the CRD has none).
    pub async fn permissions(&self) -> Result<Vec<Permission>, KubeError> {
        let (_, has_scale) = self.served().await?;
        let mut wanted = vec![
            // Read the CR; record the original count on it (and set spec.instances without scale).
            Permission::new("get", "k8s.keycloak.org", "keycloaks").named(&self.name),
            Permission::new("patch", "k8s.keycloak.org", "keycloaks").named(&self.name),
            // Wait for the pods to go and the StatefulSet to follow.
            Permission::new("list", "", "pods"),
            Permission::new("get", "apps", "statefulsets").named(&self.name),
        ];
        if *has_scale {
            wanted.push(Permission::new("patch", "k8s.keycloak.org", "keycloaks/scale").named(&self.name));
        }
        if self.settings.force_delete_stuck_pods {
            wanted.push(Permission::new("delete", "", "pods"));
        }
        Ok(wanted)
    }

    async fn api(&self) -> Result<Api<DynamicObject>, KubeError> {
        let (resource, _) = self.served().await?;
        Ok(Api::namespaced_with(self.cluster.client.clone(), &self.cluster.namespace, resource))
    }

    async fn read(&self) -> Result<Cr, KubeError> {
        let object =
            self.api().await?.get(&self.name).await.map_err(|e| self.cluster.error("get", "keycloaks", &self.name, e))?;
        Ok(Cr::from(&object, &self.name))
    }

    async fn pods(&self, selector: &str) -> Result<Vec<Pod>, KubeError> {
        let api: Api<Pod> = Api::namespaced(self.cluster.client.clone(), &self.cluster.namespace);
        let list =
            api.list(&ListParams::default().labels(selector)).await.map_err(|e| self.cluster.error("list", "pods", "", e))?;
        Ok(list.items)
    }

    async fn statefulset_replicas(&self) -> Result<Option<i32>, KubeError> {
        let api: Api<StatefulSet> = Api::namespaced(self.cluster.client.clone(), &self.cluster.namespace);
        match api.get_opt(&self.name).await {
            Ok(sts) => Ok(sts.and_then(|s| s.status).map(|s| s.replicas)),
            Err(e) => Err(self.cluster.error("get", "statefulsets", &self.name, e)),
        }
    }

    async fn set_instances(&self, instances: u32) -> Result<(), KubeError> {
        let (_, has_scale) = self.served().await?;
        let api = self.api().await?;
        let params = PatchParams::default();
        if *has_scale {
            let patch = Patch::Merge(json!({"spec": {"replicas": instances}}));
            api.patch_scale(&self.name, &params, &patch)
                .await
                .map_err(|e| self.cluster.error("patch", "keycloaks/scale", &self.name, e))?;
        } else {
            let patch = Patch::Merge(json!({"spec": {"instances": instances}}));
            api.patch(&self.name, &params, &patch).await.map_err(|e| self.cluster.error("patch", "keycloaks", &self.name, e))?;
        }
        Ok(())
    }

    async fn annotate(&self, original: Option<u32>) -> Result<(), KubeError> {
        let value = original.map_or(Value::Null, |n| Value::String(n.to_string()));
        let patch = Patch::Merge(json!({"metadata": {"annotations": {ORIGINAL_INSTANCES_ANNOTATION: value}}}));
        self.api()
            .await?
            .patch(&self.name, &PatchParams::default(), &patch)
            .await
            .map_err(|e| self.cluster.error("patch", "keycloaks", &self.name, e))?;
        Ok(())
    }

    async fn wait_gone(&self) -> Result<(), KeycloakError> {
        let mut deadline = tokio::time::Instant::now() + self.settings.scale_down_timeout;
        let mut forced = false;
        loop {
            let cr = self.read().await?;
            let pods = self.pods(&cr.selector).await?;
            let replicas = self.statefulset_replicas().await?.unwrap_or(0);
            if cr.observed >= cr.generation && pods.is_empty() && replicas == 0 {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                let stuck: Vec<String> = pods.iter().filter_map(|p| p.metadata.name.clone()).collect();
                if self.settings.force_delete_stuck_pods && !forced && !stuck.is_empty() {
                    tracing::warn!(pods = ?stuck, "force-deleting pods stuck in Terminating");
                    let api: Api<Pod> = Api::namespaced(self.cluster.client.clone(), &self.cluster.namespace);
                    for pod in &stuck {
                        let params = DeleteParams { grace_period_seconds: Some(0), ..DeleteParams::default() };
                        api.delete(pod, &params).await.map_err(|e| self.cluster.error("delete", "pods", pod, e))?;
                    }
                    forced = true;
                    // The StatefulSet's status follows the deletion only at the controller's
                    // next reconcile: give it a short, bounded while.
                    deadline = tokio::time::Instant::now() + self.settings.scale_down_timeout.min(FORCED_DELETE_SETTLE);
                    continue;
                }
                return Err(KeycloakError::Timeout {
                    what: format!(
                        "Keycloak {} to stop (pass --force-delete-stuck-pods to force-delete pods stuck in Terminating)",
                        self.describe()
                    ),
                    after: self.settings.scale_down_timeout,
                    stuck,
                });
            }
            tokio::time::sleep(self.settings.poll).await;
        }
    }

    async fn wait_ready(&self, instances: u32) -> Result<(), KeycloakError> {
        let deadline = tokio::time::Instant::now() + self.settings.scale_up_timeout;
        loop {
            let cr = self.read().await?;
            if cr.observed >= cr.generation && cr.spec == instances && cr.ready == instances && cr.ready_condition {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(KeycloakError::Timeout {
                    what: format!("Keycloak {} to be ready with {instances} instances (it has {})", self.describe(), cr.ready),
                    after: self.settings.scale_up_timeout,
                    stuck: Vec::new(),
                });
            }
            tokio::time::sleep(self.settings.poll).await;
        }
    }
}

impl Keycloak for KubeKeycloak {
    fn describe(&self) -> String {
        format!("keycloak/{} in namespace {}, context {}", self.name, self.cluster.namespace, self.cluster.context)
    }

    async fn observe(&self) -> Result<Option<KeycloakState>, KeycloakError> {
        let cr = self.read().await?;
        let pods = self.pods(&cr.selector).await?;
        Ok(Some(KeycloakState {
            spec_instances: cr.spec,
            ready_instances: cr.ready,
            pods: pods.len() as u32,
            rolling_update: cr.rolling_update,
            recorded_original: cr.original,
        }))
    }

    async fn scale_down(&self) -> Result<u32, KeycloakError> {
        let cr = self.read().await?;
        // The first run to scale down records the count; a retried or resumed one finds it.
        let original = match cr.original {
            Some(original) => original,
            None => {
                self.annotate(Some(cr.spec)).await?;
                cr.spec
            }
        };
        if cr.spec != 0 {
            self.set_instances(0).await?;
        }
        self.wait_gone().await?;
        Ok(original)
    }

    async fn scale_up(&self, instances: u32) -> Result<(), KeycloakError> {
        self.set_instances(instances).await?;
        self.wait_ready(instances).await?;
        self.annotate(None).await?;
        Ok(())
    }

    fn timeout(&self, scaling: Scaling) -> Duration {
        match scaling {
            Scaling::Down => self.settings.scale_down_timeout,
            Scaling::Up => self.settings.scale_up_timeout,
        }
    }
}
