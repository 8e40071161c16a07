//! A test environment: two fake Infinispan sites and two fake Kubernetes clusters on loopback, a
//! generated kubeconfig, password file and configuration, and the built `site-sync` binary.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use fake_ispn::{ClusterSpec, FakeCluster, KEYCLOAK_26_CACHES, SiteSnapshot};
use ispn_xsite::{CacheName, ClearScope, Client, SiteAction, SiteApi, SiteName};
use keycloak_scale::fake::{FakeKube, RunningKube, Timing, kubeconfig};
use keycloak_scale::standin::RealKube;
use keycloak_scale::standin::operator::{Behaviour, StandInOperator};
use sync_core::journal::Journal;
use sync_core::vocabulary::Step;

pub const NS: &str = "keycloak";

/// Both sites, the offline site's Keycloak, and the number of clears ever sent.
pub type State = (SiteSnapshot, SiteSnapshot, Option<(u32, u32, u32, Option<String>)>, usize);

pub struct Env {
    pub ispn: FakeCluster,
    pub kube_a: FakeKube,
    pub kube_b: FakeKube,
    _served: (RunningKube, RunningKube),
    pub dir: tempfile::TempDir,
}

/// What a command printed and how it ended.
#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// Runs `command` to its end.
    pub async fn of(mut command: tokio::process::Command) -> Self {
        Self::of_child(command.spawn().unwrap()).await
    }

    /// Waits for a spawned `command` (stdout and stderr piped) to end.
    pub async fn of_child(child: tokio::process::Child) -> Self {
        let output = child.wait_with_output().await.unwrap();
        Self {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Sends SIGTERM to a spawned command (what `kill` and a pod's termination send) and waits
    /// for it to end.
    pub async fn of_terminated(child: tokio::process::Child) -> Self {
        let pid = child.id().expect("the child is running").to_string();
        std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        Self::of_child(child).await
    }

    /// The last non-empty line of stderr (where one-line errors go).
    pub fn last_error_line(&self) -> &str {
        self.stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_default()
    }
}

pub fn cache(name: &str) -> CacheName {
    CacheName::new(name).unwrap()
}

pub fn site(name: &str) -> SiteName {
    SiteName::new(name).unwrap()
}

/// A pair back to clean: both directions online, no push state, the Keycloak caches empty.
pub async fn reset_pair(a: &Client, b: &Client) {
    for (me, other) in [(a, site("site-b")), (b, site("site-a"))] {
        for c in KEYCLOAK_26_CACHES.map(cache) {
            let _ = me.cache_site_action(&c, &other, SiteAction::CancelPushState).await;
            me.cache_site_action(&c, &other, SiteAction::CancelReceiveState).await.unwrap();
            me.cache_site_action(&c, &other, SiteAction::BringOnline).await.unwrap();
            me.clear_push_state_status(&c).await.unwrap();
            me.clear(&c, ClearScope::LocalOnly).await.unwrap();
        }
    }
}

/// Both fake Kubernetes clusters (Keycloak with 2 instances on site-a, 3 on site-b), served, and a
/// scratch directory holding their kubeconfig and the Infinispan password file.
#[derive(Debug)]
pub struct Clusters {
    pub kube_a: FakeKube,
    pub kube_b: FakeKube,
    pub served: (RunningKube, RunningKube),
    pub dir: tempfile::TempDir,
}

/// [`Clusters`], with site-b's cluster adjusted by `kube_b`.
pub async fn clusters(kube_b: impl FnOnce(FakeKube) -> FakeKube) -> Clusters {
    let kube_a = FakeKube::new().timing(quick()).keycloak(NS, "keycloak", 2);
    let kube_b = kube_b(FakeKube::new().timing(quick()).keycloak(NS, "keycloak", 3));
    let served = (kube_a.serve().await.unwrap(), kube_b.serve().await.unwrap());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("kubeconfig"),
        kubeconfig(&[("site-a", &served.0.url(), NS), ("site-b", &served.1.url(), NS)]),
    )
    .unwrap();
    std::fs::write(dir.path().join("password"), "password\n").unwrap();
    Clusters { kube_a, kube_b, served, dir }
}

/// Holds the Keycloak CRD as published while a test uses it.
pub type PublishedCrd = tokio::sync::RwLockReadGuard<'static, bool>;

/// Both sites' Kubernetes for the scenarios: two fake API servers, or, when
/// `SITE_SYNC_KUBE_CONFIG` names the harness's (`cargo xtask kube up`), a namespace per site on
/// the real API server, each reconciled by a stand-in Keycloak Operator in this test process.
/// Either way Keycloak has 2 instances on site-a and 3 on site-b, and `<dir>/kubeconfig` has a
/// context per site.
pub enum KubeSites {
    Fake { kube_b: FakeKube, _served: (RunningKube, RunningKube) },
    Real { real: Box<RealKube>, namespaces: [String; 2], _operators: [StandInOperator; 2], _crd: PublishedCrd },
}

impl KubeSites {
    pub async fn start(dir: &Path) -> Self {
        let Some(real) = RealKube::from_env().await else {
            let kube_a = FakeKube::new().timing(quick()).keycloak(NS, "keycloak", 2);
            let kube_b = FakeKube::new().timing(quick()).keycloak(NS, "keycloak", 3);
            let served = (kube_a.serve().await.unwrap(), kube_b.serve().await.unwrap());
            std::fs::write(
                dir.join("kubeconfig"),
                kubeconfig(&[("site-a", &served.0.url(), NS), ("site-b", &served.1.url(), NS)]),
            )
            .unwrap();
            return Self::Fake { kube_b, _served: served };
        };
        // keycloak-scale's suite reshapes the CRD and may leave it so when its process ends.
        let crd = real.published_crd().await;
        let namespaces = [real.namespace("e2e-site-a").await, real.namespace("e2e-site-b").await];
        let operators = namespaces.clone().map(|ns| StandInOperator::start(real.operator.clone(), &ns, Behaviour::default()));
        for ((namespace, instances), operator) in namespaces.iter().zip([2, 3]).zip(&operators) {
            real.create_keycloak(namespace, "keycloak", instances).await;
            real.settled(namespace, "keycloak", instances, operator).await;
        }
        std::fs::write(
            dir.join("kubeconfig"),
            real.kubeconfig(&[("site-a", &namespaces[0], None), ("site-b", &namespaces[1], None)]),
        )
        .unwrap();
        Self::Real { real: Box::new(real), namespaces, _operators: operators, _crd: crd }
    }

    /// The namespace of `site`'s Keycloak.
    pub fn namespace(&self, site: &str) -> &str {
        match self {
            Self::Fake { .. } => NS,
            Self::Real { namespaces, .. } => &namespaces[usize::from(site == "site-b")],
        }
    }

    /// `(spec.instances, ready pods, all pods, original-count annotation)` of site-b's Keycloak.
    pub async fn keycloak_b(&self) -> Option<(u32, u32, u32, Option<String>)> {
        match self {
            Self::Fake { kube_b, .. } => kube_b.keycloak_state(NS, "keycloak"),
            Self::Real { real, namespaces, .. } => real.keycloak_state(&namespaces[1], "keycloak").await,
        }
    }
}

/// A configuration's `sites:` entry for `name`: Infinispan at `url` as admin, Keycloak through
/// the generated kubeconfig.
pub fn site_block(name: &str, url: &str) -> String {
    format!(
        "  {name}:\n    infinispan:\n      url: {url}\n      user: admin\n      password_file: password\n    kubernetes:\n      kubeconfig: kubeconfig\n      context: {name}\n      namespace: {NS}\n      keycloak: keycloak\n"
    )
}

/// `site-sync --config <dir>/site-sync.yaml <args>`, run in `dir` with no terminal and nothing
/// inherited that would change what it reads or logs.
pub fn site_sync(dir: &Path, args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_site-sync"));
    command
        .arg("--config")
        .arg(dir.join("site-sync.yaml"))
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env_remove("SITE_SYNC_CONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

pub fn quick() -> Timing {
    Timing {
        reconcile: Duration::from_millis(20),
        pod_ready: Duration::from_millis(80),
        pod_terminate: Duration::from_millis(80),
    }
}

impl Env {
    pub async fn start() -> Self {
        Self::with(ClusterSpec::two_sites("site-a", "site-b"), |k| k).await
    }

    /// An environment whose Infinispan pair is `spec` and whose site-b cluster is adjusted by `kube`.
    pub async fn with(spec: ClusterSpec, kube: impl FnOnce(FakeKube) -> FakeKube) -> Self {
        let ispn = FakeCluster::start(spec).await.unwrap();
        let Clusters { kube_a, kube_b, served, dir } = clusters(kube).await;
        let env = Self { ispn, kube_a, kube_b, _served: served, dir };
        env.write_config(&env.config());
        env
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn url(&self, name: &str) -> String {
        self.ispn.url(name)
    }

    /// The default configuration text.
    pub fn config(&self) -> String {
        format!(
            "active: site-a\noffline: site-b\njournal: journal.json\nsettings:\n  poll_interval: 50ms\n  request_timeout: 5s\n  direction_window: 500ms\nsites:\n{}{}",
            site_block("site-a", &self.url("site-a")),
            site_block("site-b", &self.url("site-b"))
        )
    }

    pub fn write_config(&self, text: &str) {
        std::fs::write(self.path("site-sync.yaml"), text).unwrap();
    }

    /// Runs `site-sync --config <dir>/site-sync.yaml <args>` with no terminal.
    pub async fn run(&self, args: &[&str]) -> Output {
        Output::of(self.command(args)).await
    }

    pub fn command(&self, args: &[&str]) -> tokio::process::Command {
        site_sync(self.dir.path(), args)
    }

    /// A split brain: each site took the other offline, then both took different writes.
    pub async fn split_brain(&self, per_cache: usize) {
        let (a, b) = (self.ispn.site("site-a"), self.ispn.site("site-b"));
        for c in KEYCLOAK_26_CACHES {
            let c = cache(c);
            a.cache_site_action(&c, &site("site-b"), SiteAction::TakeOffline).await.unwrap();
            b.cache_site_action(&c, &site("site-a"), SiteAction::TakeOffline).await.unwrap();
            let mut world = self.ispn.world();
            world.load(0, &c, (0..per_cache).map(|i| (format!("key-{i:05}"), format!("active-{i}"))));
            world.load(1, &c, (0..per_cache / 2).map(|i| (format!("key-{i:05}"), format!("stale-{i}"))));
            world.load(1, &c, (0..per_cache / 4).map(|i| (format!("ghost-{i:05}"), "stale".to_owned())));
        }
    }

    /// Everything observable on both sites and both clusters, to prove nothing changed.
    pub fn state(&self) -> State {
        let clears = self.ispn.world().clears().len();
        (self.ispn.snapshot("site-a"), self.ispn.snapshot("site-b"), self.kube_b.keycloak_state(NS, "keycloak"), clears)
    }

    pub fn entries(&self, name: &str) -> BTreeMap<CacheName, BTreeMap<String, String>> {
        self.ispn.snapshot(name).entries
    }
}

/// Replaces what changes from run to run: ports, temp paths, times, run ids.
pub fn normalize(text: &str, env: &Env) -> String {
    let mut out = text.replace(env.dir.path().to_str().unwrap(), "<dir>");
    let patterns: [(&str, &str); 9] = [
        (r"127\.0\.0\.1:\d+", "127.0.0.1:<port>"),
        (r"\d\d:\d\d:\d\d UTC", "<clock>"),
        (r#""(until|since|at)_ms":\d+"#, r#""${1}_ms":<ms>"#),
        (r"\d+(\.\d+)? (ms|s)\b", "<time>"),
        (r#""elapsed_ms":\d+"#, r#""elapsed_ms":<ms>"#),
        (r#""window_ms":\d+"#, r#""window_ms":<ms>"#),
        (r#""elapsed":\{"secs":\d+,"nanos":\d+\}"#, r#""elapsed":<time>"#),
        (r"run \d+-\d+", "run <id>"),
        (r#""run_id":"\d+-\d+""#, r#""run_id":"<id>""#),
    ];
    for (pattern, replacement) in patterns {
        out = regex_lite::Regex::new(pattern).unwrap().replace_all(&out, replacement).into_owned();
    }
    out
}

/// A TCP relay on a fixed loopback port to another address: an API server that can be made to
/// go away (connections refused, open ones cut) and come back at the same address.
pub struct Relay {
    accept: tokio::task::JoinHandle<()>,
    connections: std::sync::Arc<std::sync::Mutex<tokio::task::JoinSet<()>>>,
}

impl Relay {
    /// Listens on `port` and relays every connection to `upstream`.
    pub async fn start(port: u16, upstream: std::net::SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let connections = std::sync::Arc::new(std::sync::Mutex::new(tokio::task::JoinSet::new()));
        let tasks = connections.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                tasks.lock().unwrap().spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Self { accept, connections }
    }
}

impl Drop for Relay {
    /// Stops listening and cuts every relayed connection.
    fn drop(&mut self) {
        self.accept.abort();
        self.connections.lock().unwrap_or_else(std::sync::PoisonError::into_inner).abort_all();
    }
}

/// A port on loopback that nothing listens on (bound, then released).
pub fn unused_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `host:port` of a URL (`https://127.0.0.1:16443` → `127.0.0.1:16443`).
pub fn socket_of(url: &str) -> std::net::SocketAddr {
    let rest = url.split("://").nth(1).unwrap_or(url);
    rest.split('/').next().unwrap().parse().unwrap_or_else(|e| panic!("{url}: {e}"))
}

/// Replaces every `server:` address in a kubeconfig, returning the old ones in order.
pub fn repoint_kubeconfig(path: &Path, to: impl Fn(usize) -> String) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut old = Vec::new();
    let lines: Vec<String> = text
        .lines()
        .map(|line| match line.split_once("server: ") {
            Some((indent, url)) => {
                old.push(url.trim().to_owned());
                format!("{indent}server: {}", to(old.len() - 1))
            }
            None => line.to_owned(),
        })
        .collect();
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
    old
}

/// The run's journal as last written, if any.
pub fn journal(env: &Env) -> Option<Journal> {
    let text = std::fs::read_to_string(env.path("journal.json")).ok()?;
    Journal::from_json("journal.json", &text).ok()
}

/// Waits until the run is pushing and the offline site has received something.
pub async fn pushing(env: &Env) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let in_push = journal(env).is_some_and(|j| j.step == Step::AwaitPush);
        if in_push && env.ispn.site("site-b").size(&cache("work")).await.is_ok_and(|n| n > 0) {
            return;
        }
        assert!(Instant::now() < deadline, "the run never got to pushing");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
