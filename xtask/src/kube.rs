//! Real Kubernetes in the loop: etcd, kube-apiserver and kwok (a kubelet stand-in that makes pods
//! run, removes deleted ones and answers port-forward), built from the Go module proxy and run
//! as local processes on 127.0.0.1, without Docker.
//!
//! - The binaries come from the small Go modules under `testenv/kube/` (kube-apiserver needs the
//!   staging `replace` lines there; `go install` refuses its module). They are built once into
//!   `target/kube/bin`, rebuilt when a module's go.mod/go.sum or the Go version changes; Go's own
//!   caches (`go env GOMODCACHE GOCACHE`) make a rebuild after a `cargo clean` take seconds.
//! - One API server serves both sites, one namespace each (`site-a`, `site-b`), with one
//!   kubeconfig context per site. site-sync never assumes two contexts are two clusters, a Role
//!   is namespaced so RBAC is proven per site all the same, and a second API server would double
//!   the memory and the start for no behaviour the tests could see.
//! - Auth: a static admin token (`system:masters`) for the harness; tests mint ServiceAccount
//!   tokens (TokenRequest) to run site-sync with exactly a Role. RBAC is on. The serving
//!   certificate is signed by a CA of the run, which the kubeconfig carries, as a real one does.
//! - An audit log (metadata level) records every request, so that tests can check which calls
//!   were made against the real server as they do against the fake.
//! - kwok's stages are this harness's own (`testenv/kube/kwok.yaml`): pods become ready at once
//!   or after the delay in their `site-sync.test/ready-delay` annotation; deleted pods go away
//!   unless annotated `site-sync.test/kubelet-gone` (a node that died: stuck in Terminating until
//!   a forced delete). Port-forwards to pods named `infinispan-site-a`/`infinispan-site-b` reach
//!   the Infinispan pair of `cargo xtask ispn up` (11222, 11322), and to `forward-probe` reach
//!   127.0.0.1:18222.
//!
//! Ports: API server 16443, etcd 23790 (peer 23800), kwok's kubelet endpoint 10250.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::ispn::{ADMIN, Lifetime};
use crate::process::{port_in_use, start_timeout};
use crate::project_root;

pub const KUBERNETES: &str = "v1.37.2";
const API_PORT: u16 = 16443;
const ETCD_PORT: u16 = 23790;
const ETCD_PEER_PORT: u16 = 23800;
const KWOK_PORT: u16 = 10250;
const CONTROLLER_PORT: u16 = 10257;
/// The node kwok plays; every pod of the tests is bound to it.
pub const NODE: &str = "kwok-node-0";
pub const SITES: [&str; 2] = ["site-a", "site-b"];
/// The environment variable that points tests at a running API server (its kubeconfig).
pub const KUBECONFIG_VAR: &str = "SITE_SYNC_KUBE_CONFIG";

fn root() -> PathBuf {
    project_root().join("target").join("kube")
}

fn run_dir() -> PathBuf {
    root().join("run")
}

fn testenv() -> PathBuf {
    project_root().join("testenv").join("kube")
}

/// One Go program of the harness: the module directory under `testenv/kube`, the package built
/// and the linker flags.
struct Program {
    name: &'static str,
    module: &'static str,
    package: &'static str,
    ldflags: String,
}

fn programs() -> [Program; 5] {
    let version = |package: &str| {
        format!(
            "-s -w -X {package}.gitVersion={KUBERNETES} -X {package}.gitMajor=1 -X {package}.gitMinor={}",
            KUBERNETES.split('.').nth(1).unwrap_or_default()
        )
    };
    [
        Program { name: "etcd", module: "etcd", package: "go.etcd.io/etcd/server/v3", ldflags: "-s -w".to_owned() },
        Program {
            name: "kube-apiserver",
            module: "apiserver",
            package: "k8s.io/kubernetes/cmd/kube-apiserver",
            ldflags: version("k8s.io/component-base/version"),
        },
        Program { name: "kwok", module: "kwok", package: "sigs.k8s.io/kwok/cmd/kwok", ldflags: "-s -w".to_owned() },
        // Only its ServiceAccount token controller runs: it fills the long-lived token Secrets of
        // deploy/kubernetes's credentials recipe.
        Program {
            name: "kube-controller-manager",
            module: "apiserver",
            package: "k8s.io/kubernetes/cmd/kube-controller-manager",
            ldflags: version("k8s.io/component-base/version"),
        },
        // The recipe's script and `kubectl apply -k deploy/kubernetes`.
        Program {
            name: "kubectl",
            module: "apiserver",
            package: "k8s.io/kubernetes/cmd/kubectl",
            ldflags: version("k8s.io/component-base/version"),
        },
    ]
}

/// FNV-1a: enough to notice that a module's files changed.
fn fingerprint(parts: &[&[u8]]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in *part {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        hash ^= 0xff;
    }
    format!("{hash:016x}")
}

fn go_version() -> Result<String> {
    let output = Command::new("go").arg("version").output().context(
        "Go is required to build kube-apiserver, etcd and kwok (Go 1.26 or newer: https://go.dev/dl, or Debian's golang)",
    )?;
    if !output.status.success() {
        bail!("`go version` failed: {}", String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// Builds what is missing or stale; returns the binary directory.
pub fn ensure_binaries() -> Result<PathBuf> {
    ensure_binaries_to(None)
}

/// [`ensure_binaries`] with the Go tool's output in `log` (when it runs beside other work).
pub fn ensure_binaries_to(log: Option<&Path>) -> Result<PathBuf> {
    let bin = root().join("bin");
    std::fs::create_dir_all(&bin)?;
    let go = go_version()?;
    for program in programs() {
        let module = testenv().join(program.module);
        let go_mod = std::fs::read(module.join("go.mod"))?;
        let go_sum = std::fs::read(module.join("go.sum"))?;
        let stamp = fingerprint(&[&go_mod, &go_sum, program.ldflags.as_bytes(), go.as_bytes()]);
        let binary = bin.join(program.name);
        let stamp_file = bin.join(format!("{}.stamp", program.name));
        if binary.exists() && std::fs::read_to_string(&stamp_file).is_ok_and(|s| s == stamp) {
            continue;
        }
        eprintln!("building {} from the Go module proxy ({go}); cached in {} afterwards", program.name, bin.display());
        let started = Instant::now();
        let mut command = Command::new("go");
        command
            .args(["build", "-trimpath", "-ldflags", &program.ldflags, "-o"])
            .arg(&binary)
            .arg(program.package)
            .current_dir(&module)
            .env("CGO_ENABLED", "0");
        if let Some(log) = log {
            let file = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
            command.stdout(file.try_clone()?).stderr(file);
        }
        let status = command.status().context("cannot run go build")?;
        if !status.success() {
            let tail = log.map(log_tail).unwrap_or_default();
            bail!("building {} failed ({status}); the Go module is {}\n{tail}", program.name, module.display());
        }
        eprintln!("built {} in {:.0} s", program.name, started.elapsed().as_secs_f64());
        std::fs::write(stamp_file, stamp)?;
    }
    Ok(bin)
}

fn openssl(args: &[&str], dir: &Path) -> Result<()> {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .context("openssl is required for the API server's certificates (Debian: apt-get install openssl)")?;
    if !output.status.success() {
        bail!("openssl {} failed: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(())
}

/// A CA of this run; the API server's and kwok's serving certificates signed by it; the
/// ServiceAccount signing key.
fn make_pki(pki: &Path) -> Result<()> {
    std::fs::create_dir_all(pki)?;
    openssl(
        &["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30", "-subj", "/CN=site-sync test CA"]
            .into_iter()
            .chain(["-keyout", "ca.key", "-out", "ca.crt"])
            .collect::<Vec<_>>(),
        pki,
    )?;
    for (name, cn) in [("apiserver", "kube-apiserver"), ("kwok", "kwok")] {
        let (key, csr, ext, crt) = (format!("{name}.key"), format!("{name}.csr"), format!("{name}.ext"), format!("{name}.crt"));
        openssl(&["req", "-newkey", "rsa:2048", "-nodes", "-subj", &format!("/CN={cn}"), "-keyout", &key, "-out", &csr], pki)?;
        std::fs::write(
            pki.join(&ext),
            "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth\n",
        )?;
        openssl(
            &["x509", "-req", "-in", &csr, "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "30"]
                .into_iter()
                .chain(["-extfile", &ext, "-out", &crt])
                .collect::<Vec<_>>(),
            pki,
        )?;
    }
    openssl(&["genrsa", "-out", "sa.key", "2048"], pki)?;
    openssl(&["rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub"], pki)?;
    Ok(())
}

fn random_token() -> Result<String> {
    let mut bytes = [0u8; 16];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// A running API server (with etcd and kwok). Dropping it stops them unless detached.
#[derive(Debug)]
pub struct RunningKube {
    pub dir: PathBuf,
    children: Vec<(String, Child)>,
    lifetime: Lifetime,
    /// Seconds from the first process start to each component being ready.
    pub ready_after: Vec<(String, f64)>,
    token: String,
}

impl RunningKube {
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    /// Environment for the tests.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            (KUBECONFIG_VAR.to_owned(), self.kubeconfig().display().to_string()),
            ("SITE_SYNC_KUBE_AUDIT_LOG".to_owned(), self.dir.join("audit.log").display().to_string()),
            ("SITE_SYNC_KUBECTL".to_owned(), root().join("bin/kubectl").display().to_string()),
        ]
    }

    /// A call to the API server as the harness's administrator: (HTTP status, body).
    fn api(&self, method: &str, path: &str, body: Option<(&str, &[u8])>) -> Result<(u16, String)> {
        api_call(&self.dir, &self.token, method, path, body)
    }

    fn must(&self, method: &str, path: &str, body: Option<(&str, &[u8])>) -> Result<String> {
        let (code, text) = self.api(method, path, body)?;
        if !(200..300).contains(&code) {
            bail!("{method} {path}: HTTP {code}: {}", text.trim());
        }
        Ok(text)
    }

    fn create(&self, path: &str, object: serde_json::Value) -> Result<()> {
        let body = object.to_string();
        let (code, text) = self.api("POST", path, Some(("application/json", body.as_bytes())))?;
        if !(200..300).contains(&code) && code != 409 {
            bail!("POST {path}: HTTP {code}: {}", text.trim());
        }
        Ok(())
    }

    /// Process id and resident memory (MiB) of each component.
    pub fn memory(&self) -> Vec<(String, f64)> {
        pids(&self.dir).into_iter().filter(|(_, pid)| alive(*pid)).map(|(name, pid)| (name, rss_mib(pid))).collect()
    }

    fn stop_all(&mut self) {
        if self.lifetime == Lifetime::Detached {
            return;
        }
        for (name, child) in self.children.iter_mut().rev() {
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && child.try_wait().ok().flatten().is_none() {
                std::thread::sleep(Duration::from_millis(50));
            }
            if child.try_wait().ok().flatten().is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
            let _ = std::fs::remove_file(self.dir.join(format!("{name}.pid")));
        }
        self.children.clear();
    }
}

impl Drop for RunningKube {
    fn drop(&mut self) {
        self.stop_all();
    }
}

fn api_call(dir: &Path, token: &str, method: &str, path: &str, body: Option<(&str, &[u8])>) -> Result<(u16, String)> {
    // The token travels in a header file rather than on the command line, where `ps` shows it.
    let headers = dir.join("admin.headers");
    if !headers.exists() {
        std::fs::write(&headers, format!("Authorization: Bearer {token}\n"))?;
    }
    let mut command = Command::new("curl");
    command
        .args(["-sS", "--max-time", "30", "-X", method, "-w", "\n%{http_code}", "--cacert"])
        .arg(dir.join("pki/ca.crt"))
        .arg("-H")
        .arg(format!("@{}", headers.display()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some((content_type, _)) = body {
        command.args(["-H", &format!("Content-Type: {content_type}"), "--data-binary", "@-"]);
    }
    command.arg(format!("https://127.0.0.1:{API_PORT}{path}"));
    let mut child = command.spawn().context("curl is required (Debian: apt-get install curl)")?;
    if let Some((_, bytes)) = body {
        child.stdin.take().context("curl's stdin")?.write_all(bytes)?;
    }
    drop(child.stdin.take());
    let output = child.wait_with_output()?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    let code: u16 = code.trim().parse().unwrap_or(0);
    if code == 0 {
        bail!("{method} {path}: {}", String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok((code, body.to_owned()))
}

fn pids(dir: &Path) -> Vec<(String, u32)> {
    ["etcd", "kube-apiserver", "kwok"]
        .iter()
        .filter_map(|name| {
            let pid = std::fs::read_to_string(dir.join(format!("{name}.pid"))).ok()?.trim().parse().ok()?;
            Some(((*name).to_owned(), pid))
        })
        .collect()
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

pub fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

fn spawn(dir: &Path, name: &str, program: &Path, args: &[String], lifetime: Lifetime) -> Result<Child> {
    let out = std::fs::File::create(dir.join(format!("{name}.out")))?;
    let mut command = Command::new(program);
    command.args(args).current_dir(dir).stdin(Stdio::null()).stdout(out.try_clone()?).stderr(out);
    if lifetime == Lifetime::Detached {
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
    }
    let child = command.spawn().with_context(|| format!("cannot start {}", program.display()))?;
    std::fs::write(dir.join(format!("{name}.pid")), child.id().to_string())?;
    Ok(child)
}

/// Waits for `ready` while the component lives, within the start timeout.
fn wait_for(kube: &mut RunningKube, name: &str, mut ready: impl FnMut(&RunningKube) -> bool) -> Result<()> {
    let limit = start_timeout();
    let deadline = Instant::now() + limit;
    loop {
        if ready(kube) {
            return Ok(());
        }
        let dir = kube.dir.clone();
        if let Some((_, child)) = kube.children.iter_mut().find(|(n, _)| n == name)
            && let Some(status) = child.try_wait()?
        {
            let out = dir.join(format!("{name}.out"));
            bail!("{name} exited with {status} while starting; last lines of {}:\n{}", out.display(), log_tail(&out));
        }
        if Instant::now() > deadline {
            bail!(
                "{name} was not ready within {} s (log: {}); SITE_SYNC_START_TIMEOUT=<seconds> allows more",
                limit.as_secs(),
                dir.join(format!("{name}.out")).display()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The users of the test API server: the harness, kwok, the stand-in operator (all
/// `system:masters`, left out of the audit log) and site-sync (`system:masters` too; tests that
/// prove RBAC use ServiceAccount tokens instead).
const USERS: [&str; 4] = ["site-sync-harness", "kwok", "stand-in-operator", "site-sync"];

/// One context per site (user site-sync, the site's namespace), then `harness` and `operator`.
fn kubeconfig_text(dir: &Path, tokens: &[(&str, String)], only: Option<&str>) -> Result<String> {
    use base64::Engine as _;
    let ca = base64::engine::general_purpose::STANDARD.encode(std::fs::read(dir.join("pki/ca.crt"))?);
    let mut contexts: Vec<(String, &str, &str)> = Vec::new();
    match only {
        Some(user) => contexts.push((user.to_owned(), user, "default")),
        None => {
            for site in SITES {
                contexts.push((site.to_owned(), "site-sync", site));
            }
            contexts.push(("harness".to_owned(), "site-sync-harness", "default"));
            contexts.push(("operator".to_owned(), "stand-in-operator", "default"));
        }
    }
    let mut text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    server: https://127.0.0.1:{API_PORT}\n    certificate-authority-data: {ca}\ncontexts:\n"
    );
    for (name, user, namespace) in &contexts {
        text.push_str(&format!("- name: {name}\n  context:\n    cluster: local\n    namespace: {namespace}\n    user: {user}\n"));
    }
    text.push_str("users:\n");
    for (user, token) in tokens {
        if contexts.iter().any(|(_, u, _)| u == user) {
            text.push_str(&format!("- name: {user}\n  user:\n    token: {token}\n"));
        }
    }
    text.push_str(&format!("current-context: {}\n", contexts[0].0));
    Ok(text)
}

/// Starts etcd, the API server and kwok, and installs what every test needs: the Keycloak CRD,
/// kwok's node, and per site a namespace with an Infinispan pod and its operator's Secret.
/// The harness `kube up` left running, if it is ready; the tests reuse it rather than start a
/// second one on the same ports.
pub fn attach() -> Result<Option<RunningKube>> {
    let dir = run_dir();
    if !pids(&dir).iter().any(|(_, pid)| alive(*pid)) {
        return Ok(None);
    }
    let token = std::fs::read_to_string(dir.join("tokens.csv"))?.split(',').next().unwrap_or_default().to_owned();
    if !api_call(&dir, &token, "GET", "/readyz", None).is_ok_and(|(code, _)| code == 200) {
        bail!("a Kubernetes harness is running but not ready; `cargo xtask kube down` stops it");
    }
    Ok(Some(RunningKube { dir, children: Vec::new(), lifetime: Lifetime::Detached, ready_after: Vec::new(), token }))
}

/// The running harness, or a new one for this process.
pub fn attach_or_start() -> Result<RunningKube> {
    match attach()? {
        Some(kube) => {
            eprintln!("e2e: using the Kubernetes harness `cargo xtask kube up` started ({})", kube.dir.display());
            Ok(kube)
        }
        None => start(Lifetime::ThisProcess),
    }
}

pub fn start(lifetime: Lifetime) -> Result<RunningKube> {
    let bin = ensure_binaries()?;
    for port in [API_PORT, ETCD_PORT, ETCD_PEER_PORT, KWOK_PORT, CONTROLLER_PORT] {
        if port_in_use(port) {
            bail!(
                "port {port} is already in use on 127.0.0.1: a Kubernetes harness is still running (stop it with `cargo xtask kube down`)"
            );
        }
    }
    let dir = run_dir();
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("cannot clean {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir)?;
    let pki = dir.join("pki");
    make_pki(&pki)?;
    let tokens: Vec<(&str, String)> = USERS.iter().map(|user| Ok((*user, random_token()?))).collect::<Result<_>>()?;
    let csv: String = tokens.iter().map(|(user, token)| format!("{token},{user},{user}-uid,\"system:masters\"\n")).collect();
    std::fs::write(dir.join("tokens.csv"), csv)?;
    std::fs::copy(testenv().join("audit-policy.yaml"), dir.join("audit-policy.yaml"))?;
    std::fs::copy(testenv().join("kwok.yaml"), dir.join("kwok.yaml"))?;
    std::fs::write(dir.join("kubeconfig"), kubeconfig_text(&dir, &tokens, None)?)?;
    std::fs::write(dir.join("kwok.kubeconfig"), kubeconfig_text(&dir, &tokens, Some("kwok"))?)?;

    let token = tokens[0].1.clone();
    let mut kube = RunningKube { dir: dir.clone(), children: Vec::new(), lifetime, ready_after: Vec::new(), token };
    let started = Instant::now();
    let path = |p: &str| dir.join(p).display().to_string();
    let etcd_args: Vec<String> = vec![
        format!("--data-dir={}", path("etcd")),
        format!("--listen-client-urls=http://127.0.0.1:{ETCD_PORT}"),
        format!("--advertise-client-urls=http://127.0.0.1:{ETCD_PORT}"),
        format!("--listen-peer-urls=http://127.0.0.1:{ETCD_PEER_PORT}"),
        format!("--initial-advertise-peer-urls=http://127.0.0.1:{ETCD_PEER_PORT}"),
        format!("--initial-cluster=default=http://127.0.0.1:{ETCD_PEER_PORT}"),
        // Throw-away data: durability costs fsyncs the tests do not need.
        "--unsafe-no-fsync=true".to_owned(),
        "--log-level=warn".to_owned(),
    ];
    kube.children.push(("etcd".to_owned(), spawn(&dir, "etcd", &bin.join("etcd"), &etcd_args, lifetime)?));
    wait_for(&mut kube, "etcd", |_| port_in_use(ETCD_PORT))?;
    kube.ready_after.push(("etcd".to_owned(), started.elapsed().as_secs_f64()));

    let apiserver_args: Vec<String> = vec![
        format!("--etcd-servers=http://127.0.0.1:{ETCD_PORT}"),
        "--bind-address=127.0.0.1".to_owned(),
        format!("--secure-port={API_PORT}"),
        "--advertise-address=127.0.0.1".to_owned(),
        // The lease reconciler refuses a loopback advertise address.
        "--endpoint-reconciler-type=none".to_owned(),
        format!("--tls-cert-file={}", path("pki/apiserver.crt")),
        format!("--tls-private-key-file={}", path("pki/apiserver.key")),
        format!("--cert-dir={}", path("certs")),
        "--service-cluster-ip-range=10.0.0.0/24".to_owned(),
        format!("--service-account-issuer=https://127.0.0.1:{API_PORT}"),
        format!("--service-account-key-file={}", path("pki/sa.pub")),
        format!("--service-account-signing-key-file={}", path("pki/sa.key")),
        format!("--token-auth-file={}", path("tokens.csv")),
        "--authorization-mode=RBAC".to_owned(),
        // No controller-manager creates default ServiceAccounts for the admission plugin to find.
        "--disable-admission-plugins=ServiceAccount".to_owned(),
        "--allow-privileged=true".to_owned(),
        format!("--audit-policy-file={}", path("audit-policy.yaml")),
        format!("--audit-log-path={}", path("audit.log")),
        "--audit-log-format=json".to_owned(),
        "--audit-log-mode=blocking".to_owned(),
        // The apiserver proxies port-forwards to kwok's kubelet endpoint over TLS.
        "--kubelet-preferred-address-types=InternalIP".to_owned(),
    ];
    kube.children.push((
        "kube-apiserver".to_owned(),
        spawn(&dir, "kube-apiserver", &bin.join("kube-apiserver"), &apiserver_args, lifetime)?,
    ));
    wait_for(&mut kube, "kube-apiserver", |k| k.api("GET", "/readyz", None).is_ok_and(|(code, _)| code == 200))?;
    kube.ready_after.push(("kube-apiserver".to_owned(), started.elapsed().as_secs_f64()));

    let controller_args: Vec<String> = vec![
        format!("--kubeconfig={}", path("kubeconfig")),
        "--controllers=serviceaccount-token".to_owned(),
        format!("--service-account-private-key-file={}", path("pki/sa.key")),
        format!("--root-ca-file={}", path("pki/ca.crt")),
        "--use-service-account-credentials=false".to_owned(),
        "--leader-elect=false".to_owned(),
        "--bind-address=127.0.0.1".to_owned(),
        format!("--secure-port={CONTROLLER_PORT}"),
        format!("--cert-dir={}", path("controller-certs")),
    ];
    kube.children.push((
        "kube-controller-manager".to_owned(),
        spawn(&dir, "kube-controller-manager", &bin.join("kube-controller-manager"), &controller_args, lifetime)?,
    ));
    wait_for(&mut kube, "kube-controller-manager", |_| port_in_use(CONTROLLER_PORT))?;
    kube.ready_after.push(("kube-controller-manager".to_owned(), started.elapsed().as_secs_f64()));

    kube.create(
        "/api/v1/nodes",
        serde_json::json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": NODE, "annotations": {"kwok.x-k8s.io/node": "fake"}, "labels": {"type": "kwok"}},
        }),
    )?;
    let kwok_args: Vec<String> = vec![
        format!("--kubeconfig={}", path("kwok.kubeconfig")),
        format!("--config={}", path("kwok.yaml")),
        "--manage-all-nodes=false".to_owned(),
        "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake".to_owned(),
        "--node-ip=127.0.0.1".to_owned(),
        format!("--node-port={KWOK_PORT}"),
        format!("--server-address=127.0.0.1:{KWOK_PORT}"),
        format!("--tls-cert-file={}", path("pki/kwok.crt")),
        format!("--tls-private-key-file={}", path("pki/kwok.key")),
    ];
    kube.children.push(("kwok".to_owned(), spawn(&dir, "kwok", &bin.join("kwok"), &kwok_args, lifetime)?));
    wait_for(&mut kube, "kwok", |k| {
        k.api("GET", &format!("/api/v1/nodes/{NODE}"), None).is_ok_and(|(code, body)| {
            code == 200
                && serde_json::from_str::<serde_json::Value>(&body).is_ok_and(|node| {
                    node.pointer("/status/conditions")
                        .and_then(|c| c.as_array())
                        .is_some_and(|conditions| conditions.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
                })
        })
    })?;
    kube.ready_after.push(("kwok".to_owned(), started.elapsed().as_secs_f64()));

    install(&kube)?;
    kube.ready_after.push(("installed".to_owned(), started.elapsed().as_secs_f64()));
    Ok(kube)
}

/// The Keycloak CRD (as published), and per site a namespace with an Infinispan pod and the
/// Infinispan Operator's credentials Secret.
fn install(kube: &RunningKube) -> Result<()> {
    let crd = std::fs::read(testenv().join("keycloaks.k8s.keycloak.org-v1.yml"))?;
    let (code, text) =
        kube.api("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", Some(("application/yaml", &crd)))?;
    if !(200..300).contains(&code) {
        bail!("installing the Keycloak CRD: HTTP {code}: {}", text.trim());
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let crd = kube.must("GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/keycloaks.k8s.keycloak.org", None)?;
        let crd: serde_json::Value = serde_json::from_str(&crd)?;
        let established = crd
            .pointer("/status/conditions")
            .and_then(|c| c.as_array())
            .is_some_and(|conditions| conditions.iter().any(|c| c["type"] == "Established" && c["status"] == "True"));
        if established && kube.api("GET", "/apis/k8s.keycloak.org/v2alpha1", None).is_ok_and(|(code, _)| code == 200) {
            break;
        }
        if Instant::now() > deadline {
            bail!("the Keycloak CRD was not established within 60 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let identities = format!("credentials:\n- username: {}\n  password: {}\n  roles:\n  - admin\n", ADMIN.0, ADMIN.1);
    for site in SITES {
        kube.create(
            "/api/v1/namespaces",
            serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": site}}),
        )?;
        kube.create(&format!("/api/v1/namespaces/{site}/pods"), infinispan_pod(&format!("infinispan-{site}")))?;
        kube.create(
            &format!("/api/v1/namespaces/{site}/secrets"),
            serde_json::json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "connect-secret"},
                "stringData": {"identities.yaml": identities},
            }),
        )?;
    }
    Ok(())
}

/// An Infinispan Operator's pod, as site-sync finds it (its labels), bound to kwok's node.
fn infinispan_pod(name: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "infinispan-pod", "clusterName": "infinispan"}},
        "spec": {
            "nodeName": NODE,
            "containers": [{"name": "infinispan", "image": "quay.io/infinispan/server", "ports": [{"containerPort": 11222}]}],
        },
    })
}

/// `cargo xtask kube up|down|status`.
pub fn command(args: &[&str]) -> Result<()> {
    match args {
        ["build"] => {
            ensure_binaries()?;
            Ok(())
        }
        ["up"] => {
            if pids(&run_dir()).iter().any(|(_, pid)| alive(*pid)) {
                bail!("a Kubernetes harness is already running ({}); `cargo xtask kube down` stops it", run_dir().display());
            }
            let kube = start(Lifetime::Detached)?;
            let times: Vec<String> = kube.ready_after.iter().map(|(what, s)| format!("{what} {s:.1} s")).collect();
            eprintln!("Kubernetes {KUBERNETES} up on https://127.0.0.1:{API_PORT} ({})", times.join(", "));
            for (k, v) in kube.env() {
                println!("export {k}={v}");
            }
            println!("export KUBECONFIG={}", kube.kubeconfig().display());
            Ok(())
        }
        ["down"] => {
            let dir = run_dir();
            let mut stopped = 0;
            for (name, pid) in pids(&dir).into_iter().rev() {
                if alive(pid) {
                    let _ = Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
                    let deadline = Instant::now() + Duration::from_secs(10);
                    while alive(pid) && Instant::now() < deadline {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    if alive(pid) {
                        let _ = Command::new("kill").arg("-KILL").arg(pid.to_string()).status();
                    }
                    eprintln!("stopped {name} (pid {pid})");
                    stopped += 1;
                }
                let _ = std::fs::remove_file(dir.join(format!("{name}.pid")));
            }
            if stopped == 0 {
                eprintln!("no Kubernetes harness was running");
            }
            Ok(())
        }
        ["status"] => {
            let dir = run_dir();
            let running: Vec<(String, u32)> = pids(&dir).into_iter().filter(|(_, pid)| alive(*pid)).collect();
            if running.is_empty() {
                println!("no Kubernetes harness is running");
                return Ok(());
            }
            for (name, pid) in &running {
                println!("{name:<15} pid {pid:<8} {:>6.0} MiB", rss_mib(*pid));
            }
            let token = std::fs::read_to_string(dir.join("tokens.csv"))?.split(',').next().unwrap_or_default().to_owned();
            let ready = api_call(&dir, &token, "GET", "/readyz", None).map(|(code, _)| code == 200).unwrap_or(false);
            println!(
                "API server https://127.0.0.1:{API_PORT}: {}; kubeconfig {}",
                if ready { "ready" } else { "NOT ready" },
                dir.join("kubeconfig").display()
            );
            Ok(())
        }
        _ => bail!("usage: cargo xtask kube build|up|down|status"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_module_file_changes_the_fingerprint() {
        let base = fingerprint(&[b"module x", b"sum"]);
        assert_eq!(base, fingerprint(&[b"module x", b"sum"]));
        assert_ne!(base, fingerprint(&[b"module x", b"sum2"]));
        // Part boundaries count: the same bytes split differently are different inputs.
        assert_ne!(fingerprint(&[b"ab", b"c"]), fingerprint(&[b"a", b"bc"]));
    }
}
