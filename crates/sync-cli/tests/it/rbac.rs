//! The documented RBAC Role (docs/rbac.md), proven on a real API server with the real Infinispan
//! pair: a ServiceAccount per site bound to exactly that Role runs a full `site-sync run` that
//! reaches both Infinispan sites through the API server's port-forward (no URL, credentials from
//! the operator's Secret), every verb of the Role is used by some call (the audit log says so),
//! and with any one verb taken away the run stops before changing anything, naming it.
//!
//! They need both servers, so they run under `cargo xtask e2e --kube` (with `--ignored`), which
//! fails when they cannot.

use std::collections::BTreeMap;
use std::time::Duration;

use fake_ispn::KEYCLOAK_26_CACHES;
use futures::StreamExt;
use ispn_xsite::{BackupStatus, CacheName, Client, ClientConfig, Credentials, SiteAction, SiteApi, SiteName};
use keycloak_scale::standin::RealKube;
use keycloak_scale::standin::operator::{Behaviour, NODE, StandInOperator};
use serde_json::{Value, json};

use crate::support::{Output, PublishedCrd, repoint_kubeconfig, reset_pair, site_sync, socket_of, unused_port};

const SITES: [&str; 2] = ["site-a", "site-b"];
pub const NEEDS: &str = "needs `cargo xtask e2e --kube`: a real API server and a real Infinispan pair";

/// The Role of docs/rbac.md with the additions for every optional feature, as RBAC rules.
pub fn documented_role() -> Vec<Value> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/rbac.md")).unwrap();
    let blocks: Vec<&str> = text.split("```yaml\n").skip(1).filter_map(|b| b.split("```").next()).collect();
    let role: Value = serde_saphyr::from_str(blocks[0]).expect("docs/rbac.md: the Role is YAML");
    assert_eq!(role["kind"], "Role", "docs/rbac.md: the first YAML block is the Role");
    let additions: String = blocks[1].lines().map(|l| l.strip_prefix("  ").unwrap_or(l)).collect::<Vec<_>>().join("\n");
    let additions: Vec<Value> = serde_saphyr::from_str(&additions).expect("docs/rbac.md: the additions are YAML rules");
    let mut rules = role["rules"].as_array().cloned().expect("the Role has rules");
    rules.extend(additions);
    rules
}

/// One verb of one rule: which rule, the verb, its API group and resource, and the first of the
/// rule's resource names (RBAC answers a question about a named rule only with a name).
#[derive(Debug, Clone)]
struct Grant {
    rule: usize,
    verb: String,
    group: String,
    resource: String,
    name: Option<String>,
}

impl Grant {
    fn permission(&self) -> String {
        format!("{} {}", self.verb, self.resource)
    }

    fn question(&self) -> (&str, &str, &str, Option<&str>) {
        (&self.verb, &self.group, &self.resource, self.name.as_deref())
    }
}

/// Every verb of every rule of `rules`.
fn grants(rules: &[Value]) -> Vec<Grant> {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let mut out = Vec::new();
    for (rule, body) in rules.iter().enumerate() {
        let name = body["resourceNames"].as_array().and_then(|n| n.first()).map(text);
        for group in body["apiGroups"].as_array().into_iter().flatten() {
            for resource in body["resources"].as_array().into_iter().flatten() {
                for verb in body["verbs"].as_array().into_iter().flatten() {
                    out.push(Grant { rule, verb: text(verb), group: text(group), resource: text(resource), name: name.clone() });
                }
            }
        }
    }
    out
}

/// `rules` without `verb` in rule `index` (and without the rule when it has no verb left).
fn without(rules: &[Value], index: usize, verb: &str) -> Vec<Value> {
    let mut rules = rules.to_vec();
    let left: Vec<Value> = rules[index]["verbs"].as_array().unwrap().iter().filter(|v| *v != verb).cloned().collect();
    if left.is_empty() {
        rules.remove(index);
    } else {
        rules[index]["verbs"] = json!(left);
    }
    rules
}

fn client(url: &str, user: &str, password: &str) -> Client {
    let mut config = ClientConfig::new(url, Some(Credentials::new(user, password)));
    config.timeout = Duration::from_secs(20);
    Client::new(config).unwrap()
}

fn caches() -> Vec<CacheName> {
    KEYCLOAK_26_CACHES.iter().map(|c| CacheName::new(*c).unwrap()).collect()
}

fn site(name: &str) -> SiteName {
    SiteName::new(name).unwrap()
}

/// The real Infinispan pair `cargo xtask e2e` started (its URLs and admin in the environment).
pub struct RealPair {
    pub a: Client,
    pub b: Client,
    pub urls: (String, String),
    pub user: String,
    pub password: String,
}

impl RealPair {
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{NEEDS} ({name} is not set)"));
        let (user, password) = (var("SITE_SYNC_CONTRACT_USER"), var("SITE_SYNC_CONTRACT_PASSWORD"));
        let urls = (var("SITE_SYNC_CONTRACT_A_URL"), var("SITE_SYNC_CONTRACT_B_URL"));
        Self { a: client(&urls.0, &user, &password), b: client(&urls.1, &user, &password), urls, user, password }
    }

    /// Each site took the other offline, then both took different writes (200 entries per cache
    /// on site-a, 50 others on site-b).
    pub async fn split_brain(&self) {
        let mut writes = Vec::new();
        for c in caches() {
            self.a.cache_site_action(&c, &site("site-b"), SiteAction::TakeOffline).await.unwrap();
            self.b.cache_site_action(&c, &site("site-a"), SiteAction::TakeOffline).await.unwrap();
            writes.extend((0..200).map(|i| (&self.a, c.clone(), format!("user-{i:04}"), format!("active-{i}"))));
            writes.extend((0..50).map(|i| (&self.b, c.clone(), format!("ghost-{i:04}"), "stale".to_owned())));
        }
        futures::stream::iter(writes)
            .map(|(to, c, k, v)| async move { to.put(&c, &k, &v).await.unwrap() })
            .buffer_unordered(16)
            .collect::<Vec<()>>()
            .await;
    }
}

/// What a refused run must leave as it was: per cache, both sites' sizes and backup statuses;
/// the offline Keycloak; whether a Lease exists.
type Observed = (BTreeMap<String, (u64, u64, String, String)>, Option<(u32, u32, u32, Option<String>)>, bool);

/// Two namespaces on the real API server, each with an Infinispan pod that kwok forwards to that
/// site's real server, the operator's `connect-secret`, a Keycloak CR reconciled by a stand-in
/// operator, and a ServiceAccount `site-sync` bound to `rules`.
struct KubeEnv {
    real: RealKube,
    namespaces: [String; 2],
    operators: Vec<StandInOperator>,
    pair: RealPair,
    dir: tempfile::TempDir,
    _crd: PublishedCrd,
}

impl KubeEnv {
    async fn start(rules: &[Value]) -> Self {
        let real = RealKube::from_env().await.expect(NEEDS);
        // keycloak-scale's suite reshapes the CRD and may leave it so when its process ends.
        let crd = real.published_crd().await;
        let pair = RealPair::from_env();
        let identities = format!("credentials:\n- username: {}\n  password: {}\n  roles: [admin]\n", pair.user, pair.password);
        let mut namespaces = Vec::new();
        let mut operators = Vec::new();
        let mut tokens = Vec::new();
        for (name, instances) in SITES.into_iter().zip([2, 3]) {
            let namespace = real.namespace(&format!("rbac-{name}")).await;
            real.create(
                &namespace,
                json!({
                    "apiVersion": "v1", "kind": "Pod",
                    // kwok forwards a pod by its name to that site's server (testenv/kube/kwok.yaml).
                    "metadata": {"name": format!("infinispan-{name}"), "labels": {"app": "infinispan-pod", "clusterName": "infinispan"}},
                    "spec": {"nodeName": NODE, "containers": [{"name": "infinispan", "image": "infinispan", "ports": [{"containerPort": 11222}]}]},
                }),
            )
            .await;
            real.create(
                &namespace,
                json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "connect-secret"}, "stringData": {"identities.yaml": identities}}),
            )
            .await;
            let operator = StandInOperator::start(real.operator.clone(), &namespace, Behaviour::default());
            real.create_keycloak(&namespace, "keycloak", instances).await;
            real.settled(&namespace, "keycloak", instances, &operator).await;
            tokens.push(real.service_account(&namespace, "site-sync", rules).await);
            namespaces.push(namespace);
            operators.push(operator);
        }
        let namespaces: [String; 2] = namespaces.try_into().unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("kubeconfig"),
            real.kubeconfig(&[("site-a", &namespaces[0], Some(&tokens[0])), ("site-b", &namespaces[1], Some(&tokens[1]))]),
        )
        .unwrap();
        // No Infinispan URL and no credentials: both come from Kubernetes.
        let block = |name: &str| format!("  {name}:\n    kubernetes:\n      kubeconfig: kubeconfig\n      context: {name}\n");
        std::fs::write(
            dir.path().join("site-sync.yaml"),
            format!(
                "active: site-a\noffline: site-b\njournal: journal.json\nsettings:\n  poll_interval: 100ms\n  scale_down_timeout: 4s\nsites:\n{}{}",
                block("site-a"),
                block("site-b")
            ),
        )
        .unwrap();
        reset_pair(&pair.a, &pair.b).await;
        Self { real, namespaces, operators, pair, dir, _crd: crd }
    }

    fn account(&self, site: usize) -> String {
        format!("system:serviceaccount:{}:site-sync", self.namespaces[site])
    }

    async fn observe(&self) -> Observed {
        let mut caches_seen = BTreeMap::new();
        for c in caches() {
            let status = |s: Option<&BackupStatus>| s.map(|s| format!("{s:?}")).unwrap_or_default();
            let a = self.pair.a.cache_backups(&c).await.unwrap();
            let b = self.pair.b.cache_backups(&c).await.unwrap();
            caches_seen.insert(
                c.to_string(),
                (
                    self.pair.a.size(&c).await.unwrap(),
                    self.pair.b.size(&c).await.unwrap(),
                    status(a.get(&site("site-b"))),
                    status(b.get(&site("site-a"))),
                ),
            );
        }
        let keycloak = self.real.keycloak_state(&self.namespaces[1], "keycloak").await;
        let leases = self.real.lease_exists(&self.namespaces[1], "site-sync").await;
        (caches_seen, keycloak, leases)
    }

    async fn run(&self, args: &[&str]) -> Output {
        Output::of(site_sync(self.dir.path(), args)).await
    }

    /// Binds `rules` to both sites' accounts and waits until RBAC answers `allowed` about `grant`
    /// (the authorizer follows a changed Role through its informer, not at once).
    async fn rebind(&self, rules: &[Value], grant: &Grant, allowed: bool) {
        for (index, namespace) in self.namespaces.iter().enumerate() {
            self.real.bind(namespace, "site-sync", rules).await;
            let account = self.account(index);
            let mut waited = 0;
            while self.real.can(&account, grant.question(), namespace).await != allowed {
                waited += 1;
                assert!(waited < 100, "RBAC does not answer allowed={allowed} for {} 10 s after the change", grant.permission());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs cargo xtask e2e --kube"]
async fn watch_starts_while_the_real_api_server_is_down_and_follows_it() {
    let env = KubeEnv::start(&documented_role()).await;
    // Both contexts name one cluster: one address, relayed.
    let port = unused_port();
    let servers = repoint_kubeconfig(&env.dir.path().join("kubeconfig"), |_| format!("https://127.0.0.1:{port}"));
    assert_eq!(servers.len(), 1, "{servers:?}");
    crate::watch::watch_follows_api_servers_that_come_and_go(env.dir.path(), &[socket_of(&servers[0])], &[port]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs cargo xtask e2e --kube"]
async fn the_documented_role_runs_a_full_sync_through_port_forwards_and_every_verb_is_used() {
    let role = documented_role();
    let env = KubeEnv::start(&role).await;
    env.pair.split_brain().await;
    // One pod hangs in Terminating, so that the run must use --force-delete-stuck-pods.
    env.operators[1].behave(|b| b.stuck_pods = 1);
    let out = env.run(&["run", "--yes", "--force-delete-stuck-pods"]).await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    // Again, over a crashed run's expired Lease: taking it over is an update, not a create.
    env.pair.split_brain().await;
    env.real
        .create(
            &env.namespaces[1],
            json!({
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "site-sync"},
                "spec": {"holderIdentity": "site-sync/crashed@elsewhere", "acquireTime": "2026-01-01T00:00:00.000000Z",
                         "renewTime": "2026-01-01T00:00:00.000000Z", "leaseDurationSeconds": 60},
            }),
        )
        .await;
    let out = env.run(&["run", "--yes", "--force-delete-stuck-pods"]).await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);

    let (caches, keycloak, lease) = env.observe().await;
    for (cache, (a, b, to_b, to_a)) in &caches {
        assert_eq!((a, b), (&200, &200), "{cache}: the offline site holds exactly the active site's entries");
        assert_eq!((to_b.as_str(), to_a.as_str()), ("Online", "Online"), "{cache}: both backups online");
    }
    assert_eq!(keycloak, Some((3, 3, 3, None)), "Keycloak back at 3 instances, the annotation gone");
    assert!(!lease, "the run lock was released");

    // No URL was configured: each site's Infinispan was reached through its pod's port-forward.
    let used_a = env.real.permissions_used(&env.namespaces[0], &env.account(0)).await;
    let used_b = env.real.permissions_used(&env.namespaces[1], &env.account(1)).await;
    for used in [&used_a, &used_b] {
        assert!(used.iter().any(|p| p.ends_with(" pods/portforward")), "{used:?}");
    }
    // Minimal: every verb of every rule was used by some call of one of the two accounts.
    let mut used: std::collections::BTreeSet<String> = used_a.union(&used_b).cloned().collect();
    // The port-forward's WebSocket upgrade is audited as the GET it is; the API server also
    // authorizes it as `create` (KEP-4006), which the audit log does not show. The next test
    // proves that `create` is needed by taking it away.
    if used.contains("get pods/portforward") {
        used.insert("create pods/portforward".to_owned());
    }
    let unused: Vec<String> =
        grants(&role).iter().map(Grant::permission).filter(|permission| !used.contains(permission)).collect();
    assert!(unused.is_empty(), "docs/rbac.md grants {unused:?}, which no call used (used: {used:?})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs cargo xtask e2e --kube"]
#[allow(clippy::print_stdout)] // the refusals, for the record (`--nocapture`)
async fn each_verb_taken_from_the_role_stops_the_run_before_anything_changes_and_is_named() {
    let role = documented_role();
    let env = KubeEnv::start(&role).await;
    env.pair.split_brain().await;
    let before = env.observe().await;
    let mut report = Vec::new();
    for grant in grants(&role) {
        let permission = grant.permission();
        env.rebind(&without(&role, grant.rule, &grant.verb), &grant, false).await;
        let out = env.run(&["run", "--yes", "--force-delete-stuck-pods"]).await;
        let line = out.last_error_line().to_owned();
        assert_eq!(out.code, 3, "without {permission}: {}", out.stderr);
        assert!(line.contains(&format!("cannot {permission}")), "without {permission}: {line}");
        assert_eq!(env.observe().await, before, "without {permission}, something changed");
        report.push(format!("{permission}: {line}"));
        env.rebind(&role, &grant, true).await;
    }
    for line in report {
        println!("{line}");
    }
}

/// `kubectl` as the harness builds it, as the harness's administrator.
fn kubectl(real: &RealKube) -> std::process::Command {
    let path = std::env::var("SITE_SYNC_KUBECTL").expect("SITE_SYNC_KUBECTL: cargo xtask e2e --kube builds kubectl");
    let mut command = std::process::Command::new(path);
    command.env("KUBECONFIG", real.kubeconfig_path());
    command
}

fn deploy_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kubernetes")
}

fn succeeded(output: &std::process::Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{what} failed:\n{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs cargo xtask e2e --kube"]
async fn the_kustomization_is_accepted_by_the_real_api_server_as_written() {
    let real = RealKube::from_env().await.expect(NEEDS);
    let _ = kubectl(&real).args(["create", "namespace", "keycloak"]).output();
    let rendered = succeeded(&kubectl(&real).arg("kustomize").arg(deploy_dir()).output().unwrap(), "kubectl kustomize");
    assert_eq!(rendered.matches("image: ghcr.io/example/site-sync:0.1.0").count(), 2, "the image, set in one place:\n{rendered}");
    let applied = kubectl(&real).args(["apply", "--server-side", "--dry-run=server", "-k"]).arg(deploy_dir()).output().unwrap();
    let applied = succeeded(&applied, "kubectl apply -k deploy/kubernetes --server-side --dry-run=server");
    for object in [
        "serviceaccount/site-sync",
        "role.rbac.authorization.k8s.io/site-sync",
        "rolebinding.rbac.authorization.k8s.io/site-sync",
        "secret/site-sync-token",
        "configmap/site-sync",
        "persistentvolumeclaim/site-sync-journal",
        "deployment.apps/site-sync-watch",
        "job.batch/site-sync-run",
    ] {
        assert!(applied.contains(&format!("{object} serverside-applied (server dry run)")), "{object} not accepted:\n{applied}");
    }
}

/// The credentials recipe, end to end on the real API server: each site's long-lived token Secret
/// filled by the token controller, make-kubeconfig.sh's kubeconfig from them, and `plan` with
/// exactly that kubeconfig under the documented Role; then the in-cluster way for one site (the
/// pod's ServiceAccount: the variables and the mounted token, CA and namespace).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs cargo xtask e2e --kube"]
async fn a_plan_runs_with_the_long_lived_kubeconfig_of_the_recipe_and_in_cluster() {
    let env = KubeEnv::start(&documented_role()).await;
    env.pair.split_brain().await;
    let token_secret = deploy_dir().join("site/token.yaml");
    for namespace in &env.namespaces {
        succeeded(
            &kubectl(&env.real).args(["apply", "-n", namespace, "-f"]).arg(&token_secret).output().unwrap(),
            "apply token.yaml",
        );
    }
    let field = |namespace: &str, path: &str| -> String {
        let output = kubectl(&env.real)
            .args(["get", "secret", "site-sync-token", "-n", namespace, "-o", &format!("jsonpath={{{path}}}")])
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    for namespace in &env.namespaces {
        let mut waited = 0;
        while field(namespace, ".data.token").is_empty() {
            waited += 1;
            assert!(waited < 300, "the token controller did not fill site-sync-token in {namespace} within 30 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let context = String::from_utf8_lossy(&kubectl(&env.real).args(["config", "current-context"]).output().unwrap().stdout)
        .trim()
        .to_owned();
    let script = deploy_dir().join("make-kubeconfig.sh");
    let kubectl_dir = std::path::Path::new(&std::env::var("SITE_SYNC_KUBECTL").unwrap()).parent().unwrap().to_path_buf();
    let path = format!("{}:{}", kubectl_dir.display(), std::env::var("PATH").unwrap_or_default());
    let made = std::process::Command::new("sh")
        .arg(&script)
        .args(["-n", &env.namespaces[0], &format!("site-a={context}"), "-n", &env.namespaces[1], &format!("site-b={context}")])
        .env("KUBECONFIG", env.real.kubeconfig_path())
        .env("PATH", &path)
        .output()
        .unwrap();
    let kubeconfig = succeeded(&made, "make-kubeconfig.sh");
    std::fs::write(env.dir.path().join("kubeconfig"), &kubeconfig).unwrap();
    let before = env.observe().await;
    let plan = env.run(&["plan"]).await;
    assert_eq!(plan.code, 0, "plan with the recipe's kubeconfig: {}\n{}", plan.stdout, plan.stderr);
    assert!(plan.stdout.contains("Preflight passed"), "{}", plan.stdout);
    assert_eq!(env.observe().await, before, "plan changed something");
    let used = env.real.requests(&env.namespaces[1], &env.account(1)).await;
    assert!(!used.is_empty(), "site-b was not reached as its ServiceAccount");

    // In-cluster for site-b: the pod's variables, and its ServiceAccount mounted in a directory.
    let mounted = tempfile::tempdir().unwrap();
    let decoded = |key: &str| -> Vec<u8> {
        let template = format!("go-template={{{{index .data \"{key}\" | base64decode}}}}");
        let output = kubectl(&env.real)
            .args(["get", "secret", "site-sync-token", "-n", &env.namespaces[1], "-o", &template])
            .output()
            .unwrap();
        assert!(output.status.success() && !output.stdout.is_empty(), "{}", String::from_utf8_lossy(&output.stderr));
        output.stdout
    };
    std::fs::write(mounted.path().join("token"), decoded("token")).unwrap();
    std::fs::write(mounted.path().join("ca.crt"), decoded("ca.crt")).unwrap();
    std::fs::write(mounted.path().join("namespace"), &env.namespaces[1]).unwrap();
    let config = std::fs::read_to_string(env.dir.path().join("site-sync.yaml")).unwrap();
    let in_cluster = config.replace(
        "  site-b:\n    kubernetes:\n      kubeconfig: kubeconfig\n      context: site-b\n",
        &format!("  site-b:\n    kubernetes:\n      in_cluster: true\n      service_account_dir: {}\n", mounted.path().display()),
    );
    assert_ne!(in_cluster, config, "the site-b block is where the test expects it");
    std::fs::write(env.dir.path().join("site-sync.yaml"), in_cluster).unwrap();
    let server = socket_of(kubeconfig.lines().find_map(|l| l.trim().strip_prefix("server: ")).unwrap());
    let plan = Output::of({
        let mut command = site_sync(env.dir.path(), &["plan"]);
        command.env("KUBERNETES_SERVICE_HOST", server.ip().to_string()).env("KUBERNETES_SERVICE_PORT", server.port().to_string());
        command
    })
    .await;
    assert_eq!(plan.code, 0, "plan in-cluster: {}\n{}", plan.stdout, plan.stderr);
    assert!(plan.stdout.contains("Preflight passed"), "{}", plan.stdout);
}
