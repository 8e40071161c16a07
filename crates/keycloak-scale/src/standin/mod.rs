//! Test support for a real API server (`cargo xtask kube up`, found through
//! `SITE_SYNC_KUBE_CONFIG`): a fresh namespace per test, a stand-in Keycloak Operator
//! ([`operator`]), ServiceAccounts bound to exactly a given Role, the Keycloak CRD served in
//! other shapes, and the requests a client made, read from the API server's audit log.
//!
//! Feature `standin`: tests and the harness only, never the shipped binary.

pub mod operator;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::{Value, json};

use crate::SiteCluster;

/// The environment variable with the kubeconfig of `cargo xtask kube up`.
pub const KUBECONFIG_VAR: &str = "SITE_SYNC_KUBE_CONFIG";
/// The environment variable with the API server's audit log.
pub const AUDIT_LOG_VAR: &str = "SITE_SYNC_KUBE_AUDIT_LOG";
/// The user of the kubeconfig's site contexts (the one tests run site-sync as).
pub const SITE_SYNC_USER: &str = "site-sync";
const CRD: &str = "keycloaks.k8s.keycloak.org";

/// Tests that change the cluster-wide Keycloak CRD hold this for writing; every other test that
/// uses the CRD holds it for reading. The flag says the CRD was changed and must be restored.
// Starts as "maybe reshaped": an earlier test process may have been killed before it restored
// the CRD, so the first reader restores it.
static CRD_SHAPE: tokio::sync::RwLock<bool> = tokio::sync::RwLock::const_new(true);

/// A running API server of the harness.
#[derive(Clone)]
pub struct RealKube {
    kubeconfig: Kubeconfig,
    path: PathBuf,
    audit_log: Option<PathBuf>,
    site_sync_token: String,
    /// The harness's administrator (left out of the audit log).
    pub admin: kube::Client,
    /// The stand-in operator's identity (left out of the audit log).
    pub operator: kube::Client,
}

impl std::fmt::Debug for RealKube {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RealKube").field("kubeconfig", &self.path).finish()
    }
}

async fn client_for(kubeconfig: &Kubeconfig, context: &str) -> kube::Client {
    let options = KubeConfigOptions { context: Some(context.to_owned()), ..KubeConfigOptions::default() };
    let config = kube::Config::from_custom_kubeconfig(kubeconfig.clone(), &options)
        .await
        .unwrap_or_else(|e| panic!("the harness kubeconfig has no usable context {context}: {e}"));
    kube::Client::try_from(config).expect("a client for the harness API server")
}

fn unique(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let mut name: String = prefix.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    name.truncate(40);
    format!("{}-{}-{n}-{:05x}", name.trim_end_matches('-'), std::process::id() % 100_000, nanos % 0xfffff)
}

impl RealKube {
    /// The harness's API server when `SITE_SYNC_KUBE_CONFIG` is set.
    pub async fn from_env() -> Option<Self> {
        let path = std::env::var(KUBECONFIG_VAR).ok().filter(|p| !p.is_empty())?;
        Some(Self::connect(Path::new(&path)).await)
    }

    /// Connects with the kubeconfig `cargo xtask kube up` wrote.
    pub async fn connect(path: &Path) -> Self {
        let kubeconfig =
            Kubeconfig::read_from(path).unwrap_or_else(|e| panic!("cannot read the harness kubeconfig {}: {e}", path.display()));
        let admin = client_for(&kubeconfig, "harness").await;
        let operator = client_for(&kubeconfig, "operator").await;
        let audit_log =
            std::env::var(AUDIT_LOG_VAR).ok().map(PathBuf::from).or_else(|| path.parent().map(|dir| dir.join("audit.log")));
        // kube keeps tokens sealed: read the site-sync user's from the file itself.
        let text = std::fs::read_to_string(path).expect("the harness kubeconfig");
        let raw: Value = serde_saphyr::from_str(&text).expect("the harness kubeconfig is YAML");
        let site_sync_token = raw["users"]
            .as_array()
            .and_then(|users| users.iter().find(|u| u["name"] == SITE_SYNC_USER))
            .and_then(|u| u["user"]["token"].as_str())
            .expect("the harness kubeconfig has the site-sync user's token")
            .to_owned();
        Self { kubeconfig, path: path.to_owned(), audit_log, site_sync_token, admin, operator }
    }

    /// The kubeconfig of the harness (contexts `site-a`, `site-b`, `harness`, `operator`).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.path
    }

    /// A fresh namespace named after `prefix`.
    pub async fn namespace(&self, prefix: &str) -> String {
        let name = unique(prefix);
        let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).expect("a namespace");
        Api::<Namespace>::all(self.admin.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .unwrap_or_else(|e| panic!("cannot create namespace {name}: {e}"));
        name
    }

    /// A kubeconfig with one context per `(context, namespace, token)` (token `None`: the
    /// harness's site-sync user), on this API server.
    pub fn kubeconfig(&self, contexts: &[(&str, &str, Option<&str>)]) -> String {
        let cluster = &self.kubeconfig.clusters[0];
        let server = cluster.cluster.as_ref().and_then(|c| c.server.clone()).unwrap_or_default();
        let ca = cluster.cluster.as_ref().and_then(|c| c.certificate_authority_data.clone()).unwrap_or_default();
        let site_sync_token = &self.site_sync_token;
        let mut ctxs = String::new();
        let mut users = String::new();
        for (name, namespace, token) in contexts {
            ctxs.push_str(&format!(
                "- name: {name}\n  context:\n    cluster: local\n    namespace: {namespace}\n    user: {name}\n"
            ));
            users.push_str(&format!("- name: {name}\n  user:\n    token: {}\n", token.unwrap_or(site_sync_token)));
        }
        let current = contexts.first().map(|c| c.0).unwrap_or_default();
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\ncontexts:\n{ctxs}users:\n{users}current-context: {current}\n"
        )
    }

    /// A site's cluster handle in `namespace`, built from a kubeconfig as the binary builds it.
    pub async fn site_cluster(&self, namespace: &str, token: Option<&str>) -> SiteCluster {
        let file = tempfile_path(&self.kubeconfig(&[("site-b", namespace, token)]));
        let cluster = SiteCluster::from_kubeconfig(Some(&file), Some("site-b"), None).await.expect("the written kubeconfig");
        let _ = std::fs::remove_file(file);
        cluster
    }

    /// Creates `object` (JSON with apiVersion and kind) in `namespace` as the administrator.
    pub async fn create(&self, namespace: &str, object: Value) {
        let object: DynamicObject = serde_json::from_value(object).expect("an object with apiVersion, kind and name");
        let types = object.types.clone().expect("apiVersion and kind");
        let (group, version) = types.api_version.split_once('/').unwrap_or(("", &types.api_version));
        let gvk = kube::api::GroupVersionKind::gvk(group, version, &types.kind);
        let (resource, _) = kube::discovery::pinned_kind(&self.admin, &gvk)
            .await
            .unwrap_or_else(|e| panic!("the API server does not serve {}: {e}", types.kind));
        Api::<DynamicObject>::namespaced_with(self.admin.clone(), namespace, &resource)
            .create(&PostParams::default(), &object)
            .await
            .unwrap_or_else(|e| panic!("cannot create {} {:?} in {namespace}: {e}", types.kind, object.metadata.name));
    }

    /// A ServiceAccount `name` in `namespace` bound to a Role with exactly `rules` (RBAC
    /// PolicyRule objects); returns a token for it (TokenRequest, one hour).
    pub async fn service_account(&self, namespace: &str, name: &str, rules: &[Value]) -> String {
        let post = PostParams::default();
        let account: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": name}})).expect("an account");
        Api::<ServiceAccount>::namespaced(self.admin.clone(), namespace)
            .create(&post, &account)
            .await
            .unwrap_or_else(|e| panic!("cannot create ServiceAccount {name}: {e}"));
        self.bind(namespace, name, rules).await;
        let request: TokenRequest =
            serde_json::from_value(json!({"spec": {"audiences": [], "expirationSeconds": 3600}})).expect("a token request");
        let token = Api::<ServiceAccount>::namespaced(self.admin.clone(), namespace)
            .create_token_request(name, &post, &request)
            .await
            .unwrap_or_else(|e| panic!("cannot mint a token for ServiceAccount {name}: {e}"));
        token.status.and_then(|s| s.token).expect("the API server returns the token")
    }

    /// Replaces the rules of the Role (and its binding) of ServiceAccount `name`. The
    /// authorizer's cache follows within a second: wait for the change with
    /// [`RealKube::can`] before relying on it.
    pub async fn bind(&self, namespace: &str, name: &str, rules: &[Value]) {
        let params = PatchParams::apply("site-sync-tests").force();
        let role: Role = serde_json::from_value(
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": name}, "rules": rules}),
        )
        .expect("a Role");
        Api::<Role>::namespaced(self.admin.clone(), namespace)
            .patch(name, &params, &Patch::Apply(&role))
            .await
            .unwrap_or_else(|e| panic!("cannot write Role {name}: {e}"));
        let binding: RoleBinding = serde_json::from_value(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
        }))
        .expect("a RoleBinding");
        Api::<RoleBinding>::namespaced(self.admin.clone(), namespace)
            .patch(name, &params, &Patch::Apply(&binding))
            .await
            .unwrap_or_else(|e| panic!("cannot write RoleBinding {name}: {e}"));
    }

    /// The requests `user` made in `namespace` so far, as `METHOD /path?query`, from the audit
    /// log (the API server writes a request's line as it completes: this waits until the log
    /// stops growing).
    pub async fn requests(&self, namespace: &str, user: &str) -> Vec<String> {
        self.settled_audit_log().await;
        let Some(path) = &self.audit_log else { panic!("no audit log: set {AUDIT_LOG_VAR}") };
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let marker = format!("/namespaces/{namespace}/");
        text.lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|event| event.pointer("/user/username").and_then(Value::as_str) == Some(user))
            .filter_map(|event| {
                let uri = event.get("requestURI")?.as_str()?.to_owned();
                if !uri.contains(&marker) {
                    return None;
                }
                let method = match event.get("verb")?.as_str()? {
                    "get" | "list" | "watch" => "GET",
                    "create" => "POST",
                    "update" => "PUT",
                    "patch" => "PATCH",
                    "delete" | "deletecollection" => "DELETE",
                    other => other,
                };
                Some(format!("{method} {uri}"))
            })
            .collect()
    }

    /// The RBAC permissions `user`'s requests in `namespace` were authorized with so far, as
    /// `verb resource[/subresource]`, from the audit log.
    pub async fn permissions_used(&self, namespace: &str, user: &str) -> std::collections::BTreeSet<String> {
        self.settled_audit_log().await;
        let Some(path) = &self.audit_log else { panic!("no audit log: set {AUDIT_LOG_VAR}") };
        let text = std::fs::read_to_string(path).unwrap_or_default();
        text.lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|event| event.pointer("/user/username").and_then(Value::as_str) == Some(user))
            .filter(|event| event.pointer("/objectRef/namespace").and_then(Value::as_str) == Some(namespace))
            // Authorized: anything but a 403 (a 404 answers a call RBAC allowed).
            .filter(|event| event.pointer("/responseStatus/code").and_then(Value::as_u64).is_some_and(|c| c != 403))
            .filter_map(|event| {
                let verb = event.get("verb")?.as_str()?;
                let resource = event.pointer("/objectRef/resource")?.as_str()?;
                Some(match event.pointer("/objectRef/subresource").and_then(Value::as_str) {
                    Some(sub) => format!("{verb} {resource}/{sub}"),
                    None => format!("{verb} {resource}"),
                })
            })
            .collect()
    }

    /// Waits (2 s at most) until the audit log stops growing: the API server writes a request's
    /// line as it completes.
    async fn settled_audit_log(&self) {
        let Some(path) = &self.audit_log else { return };
        let mut previous = u64::MAX;
        for _ in 0..20 {
            let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
            if size == previous {
                break;
            }
            previous = size;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Whether a Lease `name` exists in `namespace`.
    pub async fn lease_exists(&self, namespace: &str, name: &str) -> bool {
        Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(self.admin.clone(), namespace)
            .get_opt(name)
            .await
            .expect("reading a Lease")
            .is_some()
    }

    /// Holds the Keycloak CRD as published for as long as the guard lives (restoring it first
    /// if a test changed it).
    pub async fn published_crd(&self) -> tokio::sync::RwLockReadGuard<'static, bool> {
        // A test may hold several environments at once: take the write lock only to restore.
        let shape = CRD_SHAPE.read().await;
        if !*shape {
            return shape;
        }
        drop(shape);
        let mut shape = CRD_SHAPE.write().await;
        if *shape {
            self.reshape_crd(&["v2alpha1"], true).await;
            *shape = false;
        }
        shape.downgrade()
    }

    /// Serves the Keycloak CRD at `versions` (v2alpha1 stays the storage version, unserved when
    /// not listed), with or without the scale subresource, for as long as the guard lives.
    pub async fn reshaped_crd(&self, versions: &[&str], scale: bool) -> tokio::sync::RwLockWriteGuard<'static, bool> {
        let mut shape = CRD_SHAPE.write().await;
        *shape = true;
        self.reshape_crd(versions, scale).await;
        shape
    }

    async fn reshape_crd(&self, versions: &[&str], scale: bool) {
        let api = Api::<CustomResourceDefinition>::all(self.admin.clone());
        let mut crd = serde_json::to_value(api.get(CRD).await.expect("the Keycloak CRD is installed")).expect("JSON");
        let template = crd["spec"]["versions"]
            .as_array()
            .and_then(|v| v.iter().find(|v| v["name"] == "v2alpha1"))
            .cloned()
            .expect("the published CRD has v2alpha1");
        let mut wanted = vec!["v2alpha1"];
        wanted.extend(versions.iter().filter(|v| **v != "v2alpha1"));
        let shaped: Vec<Value> = wanted
            .iter()
            .map(|name| {
                let mut version = template.clone();
                version["name"] = json!(name);
                version["served"] = json!(versions.contains(name));
                version["storage"] = json!(*name == "v2alpha1");
                if !scale && let Some(sub) = version["subresources"].as_object_mut() {
                    sub.remove("scale");
                }
                if scale {
                    // As published (the template may be a version without it).
                    version["subresources"]["scale"] = json!({
                        "labelSelectorPath": ".status.selector",
                        "specReplicasPath": ".spec.instances",
                        "statusReplicasPath": ".status.instances",
                    });
                }
                version
            })
            .collect();
        crd["spec"]["versions"] = json!(shaped);
        let crd: CustomResourceDefinition = serde_json::from_value(crd).expect("a CRD");
        api.replace(CRD, &PostParams::default(), &crd).await.unwrap_or_else(|e| panic!("cannot reshape the Keycloak CRD: {e}"));
        // Discovery follows the CRD asynchronously: wait until it serves what was asked.
        for _ in 0..100 {
            if let Ok(group) = kube::discovery::group(&self.admin, "k8s.keycloak.org").await {
                let served: Vec<String> = group.versions().map(str::to_owned).collect();
                let has_scale = group
                    .recommended_kind("Keycloak")
                    .is_some_and(|(_, caps)| caps.subresources.iter().any(|(sub, _)| sub.plural == "scale"));
                let mut expected: Vec<String> = versions.iter().map(|v| (*v).to_owned()).collect();
                expected.sort();
                let mut got = served.clone();
                got.sort();
                if got == expected && has_scale == scale {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("discovery did not follow the reshaped Keycloak CRD within 10 s");
    }

    /// The Keycloak resource as the API server serves it now (tests reshape the CRD).
    pub async fn keycloak_resource(&self) -> ApiResource {
        let group = kube::discovery::group(&self.admin, "k8s.keycloak.org").await.expect("the Keycloak CRD is served");
        group.recommended_kind("Keycloak").expect("kind Keycloak").0
    }

    /// Creates a Keycloak CR with `instances`, as a user would apply it.
    pub async fn create_keycloak(&self, namespace: &str, name: &str, instances: u32) {
        let resource = self.keycloak_resource().await;
        self.create(
            namespace,
            json!({
                "apiVersion": resource.api_version, "kind": "Keycloak",
                "metadata": {"name": name},
                "spec": {"instances": instances, "hostname": {"hostname": format!("{name}.example")}},
            }),
        )
        .await;
    }

    /// `(spec.instances, ready pods, all pods, original-count annotation)` of a Keycloak, read
    /// as the administrator.
    pub async fn keycloak_state(&self, namespace: &str, name: &str) -> Option<(u32, u32, u32, Option<String>)> {
        let resource = self.keycloak_resource().await;
        let api: Api<DynamicObject> = Api::namespaced_with(self.admin.clone(), namespace, &resource);
        let cr = api.get_opt(name).await.expect("reading the CR")?;
        let spec = cr.data.pointer("/spec/instances").and_then(Value::as_u64).unwrap_or(1) as u32;
        let annotation = cr.metadata.annotations.as_ref().and_then(|a| a.get(crate::ORIGINAL_INSTANCES_ANNOTATION)).cloned();
        let pods: Api<Pod> = Api::namespaced(self.admin.clone(), namespace);
        let selector: Vec<String> = operator::labels(name).iter().map(|(k, v)| format!("{k}={v}")).collect();
        let pods = pods.list(&ListParams::default().labels(&selector.join(","))).await.expect("listing pods").items;
        let ready = pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
            .count() as u32;
        Some((spec, ready, pods.len() as u32, annotation))
    }

    /// Waits (15 s at most) until the Keycloak has `instances` ready pods and no others.
    pub async fn settled(&self, namespace: &str, name: &str, instances: u32, operator: &operator::StandInOperator) {
        for _ in 0..300 {
            let state = self.keycloak_state(namespace, name).await;
            if matches!(state, Some((spec, ready, pods, _)) if spec == instances && ready == instances && pods == instances) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "keycloak {name} in {namespace} did not settle at {instances} instances in 15 s: {:?}; operator: {:?}",
            self.keycloak_state(namespace, name).await,
            operator.last_error()
        );
    }

    /// Whether `user` (impersonated) may `verb` `resource` in `namespace` (a
    /// SubjectAccessReview): tests wait on it after changing a Role.
    pub async fn can(
        &self,
        user: &str,
        (verb, group, resource, name): (&str, &str, &str, Option<&str>),
        namespace: &str,
    ) -> bool {
        let (resource, subresource) = resource.split_once('/').unwrap_or((resource, ""));
        let review = json!({
            "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
            "spec": {"user": user, "resourceAttributes": {
                "namespace": namespace, "verb": verb, "group": group, "resource": resource, "subresource": subresource,
                "name": name.unwrap_or_default(),
            }},
        });
        let request = http::Request::post("/apis/authorization.k8s.io/v1/subjectaccessreviews")
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&review).expect("JSON"))
            .expect("a request");
        let answer: Value = self.admin.request(request).await.expect("a SubjectAccessReview");
        answer.pointer("/status/allowed").and_then(Value::as_bool).unwrap_or(false)
    }
}

fn tempfile_path(text: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("{}.kubeconfig", unique("site-sync-test")));
    std::fs::write(&path, text).expect("a temporary kubeconfig");
    path
}
