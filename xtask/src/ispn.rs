//! A real two-site Infinispan Server pair on 127.0.0.1, from Maven Central jars, without Docker.
//!
//! The server zip is not attached to `infinispan-distribution` on Maven Central for the versions
//! served here, so the server is assembled from `infinispan-server-runtime` and its runtime
//! dependencies (plus, on 15.x, the `loader` classifier jar that `Bootstrap` needs for its log
//! manager). Downloads are cached under `target/ispn/dist/<version>` (and in ~/.m2), so a second
//! start takes seconds.
//!
//! Layout of one pair (`target/ispn/run/<variant>/`): one server root per node
//! (`site-a-1/conf|data|log`), its console output (`site-a-1.out`) and pid (`site-a-1.pid`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use base64::Engine as _;

use crate::process::{port_in_use, start_timeout};
use crate::{project_root, run};

/// Versions the harness supports, newest patch of each line served by Maven Central here.
pub const VERSIONS: [&str; 2] = ["15.0.21.Final", "16.0.7"];

/// User with the admin role on every real pair.
pub const ADMIN: (&str, &str) = ("admin", "password");
/// User without the admin role (for 403 checks).
pub const OBSERVER: (&str, &str) = ("observer", "password");

pub fn resolve(version: &str) -> Result<&'static str> {
    VERSIONS
        .iter()
        .find(|v| **v == version || v.starts_with(&format!("{version}.")))
        .copied()
        .with_context(|| format!("unsupported Infinispan version {version:?} (supported: {})", VERSIONS.join(", ")))
}

fn schema(version: &str) -> (&'static str, &'static str) {
    if version.starts_with("15.") { ("15.0", "5.3") } else { ("16.0", "5.5") }
}

fn ispn_dir() -> PathBuf {
    project_root().join("target").join("ispn")
}

fn check_tool(program: &str, arg: &str, hint: &str) -> Result<()> {
    let ok = Command::new(program).arg(arg).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
    if !ok {
        bail!("`{program}` is not available: {hint}");
    }
    Ok(())
}

/// Downloads (once) the jars of `version` and returns the `lib` directory.
pub fn ensure_dist(version: &str) -> Result<PathBuf> {
    let dir = ispn_dir().join("dist").join(version);
    let lib = dir.join("lib");
    let marker = dir.join(".complete");
    if marker.exists() {
        return Ok(lib);
    }
    check_tool("java", "-version", "install a JDK 17 (Debian: apt-get install openjdk-17-jdk-headless)")?;
    check_tool("mvn", "-v", "install Maven 3.6.3 or later (Debian: apt-get install maven)")?;
    std::fs::create_dir_all(&dir)?;
    let pom = format!(
        r#"<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>
 <groupId>site-sync.testenv</groupId><artifactId>ispn-server-libs</artifactId><version>1</version><packaging>pom</packaging>
 <dependencies><dependency><groupId>org.infinispan</groupId><artifactId>infinispan-server-runtime</artifactId>
   <version>{version}</version></dependency></dependencies></project>
"#
    );
    std::fs::write(dir.join("pom.xml"), pom)?;
    let plugin = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1";
    eprintln!("downloading Infinispan Server {version} from Maven Central (cached afterwards)");
    run(Command::new("mvn")
        .args(["-B", "-q", "-f"])
        .arg(dir.join("pom.xml"))
        .arg(format!("{plugin}:copy-dependencies"))
        .arg("-DincludeScope=runtime")
        .arg(format!("-DoutputDirectory={}", lib.display())))?;
    if version.starts_with("15.") {
        run(Command::new("mvn")
            .args(["-B", "-q", "-f"])
            .arg(dir.join("pom.xml"))
            .arg(format!("{plugin}:copy"))
            .arg(format!("-Dartifact=org.infinispan:infinispan-server-runtime:{version}:jar:loader"))
            .arg(format!("-DoutputDirectory={}", lib.display())))?;
    }
    std::fs::write(marker, version)?;
    Ok(lib)
}

/// The shape of a pair.
#[derive(Debug, Clone)]
pub struct PairSpec {
    /// Exact Infinispan version.
    pub version: &'static str,
    /// REST over HTTPS with a self-signed certificate.
    pub tls: bool,
    /// Nodes per site.
    pub nodes: usize,
    /// Keycloak's indexed caches (authenticationSessions, loginFailures), for a pair that serves
    /// Keycloak.
    pub keycloak: bool,
}

impl PairSpec {
    /// A pair of `nodes` per site, plain HTTP, without Keycloak's indexing.
    pub fn plain(version: &'static str, nodes: usize) -> Self {
        Self { version, tls: false, nodes, keycloak: false }
    }

    /// A name for the run directory.
    pub fn variant(&self) -> String {
        let keycloak = if self.keycloak { "-kc" } else { "" };
        format!("{}-{}-{}n{keycloak}", self.version, if self.tls { "tls" } else { "plain" }, self.nodes)
    }
}

/// Keycloak's indexing of one cache's entity (keycloak-benchmark's ispn-helm values).
fn indexing(entity: &str) -> String {
    format!(
        r#"<indexing enabled="true" storage="local-heap" startup-mode="NONE"><indexed-entities><indexed-entity>{entity}</indexed-entity></indexed-entities></indexing>"#
    )
}

#[derive(Debug, Clone)]
struct Node {
    site: &'static str,
    other: &'static str,
    name: String,
    offset: u16,
}

impl Node {
    fn rest_port(&self) -> u16 {
        11222 + self.offset
    }
}

fn nodes(spec: &PairSpec) -> Vec<Node> {
    let mut out = Vec::new();
    for (site, other, base) in [("site-a", "site-b", 0u16), ("site-b", "site-a", 100u16)] {
        for i in 0..spec.nodes {
            out.push(Node { site, other, name: format!("{site}-{}", i + 1), offset: base + i as u16 });
        }
    }
    out
}

/// How long a pair's servers outlive the process that started them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifetime {
    /// Stopped when the [`RunningPair`] is dropped, and by a Ctrl-C or a signal to the caller's
    /// process group, which ends this process before any drop runs.
    ThisProcess,
    /// Left running for `ispn down` (`ispn up`).
    Detached,
}

/// A started pair. Dropping it stops the servers unless they are [`Lifetime::Detached`].
#[derive(Debug)]
pub struct RunningPair {
    pub spec: PairSpec,
    pub dir: PathBuf,
    children: Vec<(String, Child)>,
    /// The CA certificate (PEM) of the TLS variant.
    pub ca_file: Option<PathBuf>,
    lifetime: Lifetime,
}

impl RunningPair {
    /// Base URL of a site's first node.
    pub fn url(&self, site: &str) -> String {
        let scheme = if self.spec.tls { "https" } else { "http" };
        let port = if site == "site-a" { 11222 } else { 11322 };
        format!("{scheme}://127.0.0.1:{port}")
    }

    /// Environment for the contract suite and the end-to-end tests.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            ("SITE_SYNC_CONTRACT_A_URL".to_owned(), self.url("site-a")),
            ("SITE_SYNC_CONTRACT_B_URL".to_owned(), self.url("site-b")),
            ("SITE_SYNC_CONTRACT_A_NAME".to_owned(), "site-a".to_owned()),
            ("SITE_SYNC_CONTRACT_B_NAME".to_owned(), "site-b".to_owned()),
            ("SITE_SYNC_CONTRACT_USER".to_owned(), ADMIN.0.to_owned()),
            ("SITE_SYNC_CONTRACT_PASSWORD".to_owned(), ADMIN.1.to_owned()),
            ("SITE_SYNC_CONTRACT_OBSERVER".to_owned(), format!("{}:{}", OBSERVER.0, OBSERVER.1)),
            ("SITE_SYNC_REAL_VERSION".to_owned(), self.spec.version.to_owned()),
            ("SITE_SYNC_REAL_DIR".to_owned(), self.dir.display().to_string()),
        ];
        if let Some(ca) = &self.ca_file {
            env.push(("SITE_SYNC_CONTRACT_CA_FILE".to_owned(), ca.display().to_string()));
        }
        env
    }

    /// Stops every node (SIGTERM, then SIGKILL after 20 s).
    pub fn stop(mut self) -> Result<()> {
        self.stop_all();
        Ok(())
    }

    fn stop_all(&mut self) {
        if self.lifetime == Lifetime::Detached {
            return;
        }
        // Tests may have killed a node and started it again (`sh <node>.start`), writing the new
        // pid to the pid file: stop those too.
        for (node, pid) in pids(&self.dir) {
            if alive(pid) && !self.children.iter().any(|(_, c)| c.id() == pid) {
                eprintln!("stopping restarted {node} (pid {pid})");
                terminate(pid);
            }
        }
        for (_, child) in &mut self.children {
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        for (name, child) in &mut self.children {
            while Instant::now() < deadline {
                if child.try_wait().ok().flatten().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            if child.try_wait().ok().flatten().is_none() {
                eprintln!("{name} did not stop in 20 s: killing it");
                let _ = child.kill();
                let _ = child.wait();
            }
            let _ = std::fs::remove_file(self.dir.join(format!("{name}.pid")));
        }
        self.children.clear();
    }
}

impl Drop for RunningPair {
    fn drop(&mut self) {
        self.stop_all();
    }
}

fn render_config(spec: &PairSpec, conf: &Path) -> Result<()> {
    let template = std::fs::read_to_string(project_root().join("testenv/infinispan/kc-xsite.xml.in"))?;
    let (schema, jgroups) = schema(spec.version);
    let tls = if spec.tls {
        r#"<server-identities>
                  <ssl>
                     <keystore path="server.p12" relative-to="infinispan.server.config.path" password="secret" alias="server"/>
                  </ssl>
               </server-identities>"#
    } else {
        ""
    };
    let (auth, failures) = if spec.keycloak {
        (indexing("keycloak.RootAuthenticationSessionEntity"), indexing("keycloak.LoginFailureEntity"))
    } else {
        (String::new(), String::new())
    };
    let xml = template
        .replace("@INDEX_AUTH@", &auth)
        .replace("@INDEX_FAILURES@", &failures)
        .replace("@SCHEMA@", schema)
        .replace("@JGROUPS@", jgroups)
        .replace("@TLS@", tls)
        .replace("@MECHANISMS@", "DIGEST BASIC");
    std::fs::write(conf.join("kc-xsite.xml"), xml)?;
    std::fs::write(
        conf.join("users.properties"),
        format!("#$REALM_NAME=default$\n#$ALGORITHM=clear$\n{}={}\n{}={}\n", ADMIN.0, ADMIN.1, OBSERVER.0, OBSERVER.1),
    )?;
    std::fs::write(conf.join("groups.properties"), format!("{}=admin\n{}=observer\n", ADMIN.0, OBSERVER.0))?;
    std::fs::copy(project_root().join("testenv/infinispan/log4j2.xml"), conf.join("log4j2.xml"))?;
    Ok(())
}

fn make_certificate(dir: &Path) -> Result<PathBuf> {
    let keystore = dir.join("server.p12");
    let ca = dir.join("ca.pem");
    if keystore.exists() && ca.exists() {
        return Ok(ca);
    }
    check_tool("keytool", "-help", "keytool comes with the JDK; install a JDK 17")?;
    std::fs::create_dir_all(dir)?;
    let _ = std::fs::remove_file(&keystore);
    run(Command::new("keytool")
        .args(["-genkeypair", "-alias", "server", "-keyalg", "RSA", "-keysize", "2048", "-validity", "3650"])
        .args(["-dname", "CN=localhost", "-ext", "SAN=dns:localhost,ip:127.0.0.1"])
        .args(["-storetype", "PKCS12", "-storepass", "secret", "-keypass", "secret", "-keystore"])
        .arg(&keystore))?;
    run(Command::new("keytool")
        .args(["-exportcert", "-alias", "server", "-rfc", "-storepass", "secret", "-keystore"])
        .arg(&keystore)
        .arg("-file")
        .arg(&ca))?;
    Ok(ca)
}

/// Starts a pair and waits until both sites see each other.
pub fn start(spec: PairSpec, lifetime: Lifetime) -> Result<RunningPair> {
    let lib = ensure_dist(spec.version)?;
    let dir = ispn_dir().join("run").join(spec.variant());
    let nodes = nodes(&spec);
    for node in &nodes {
        for port in [node.rest_port(), 7800 + node.offset, 7850 + node.offset] {
            if port_in_use(port) {
                bail!("port {port} is already in use on 127.0.0.1: {}", leftover_servers_hint(&harness_servers()));
            }
        }
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("cannot clean {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir)?;
    let ca_file = if spec.tls { Some(make_certificate(&ispn_dir().join("tls"))?) } else { None };
    let local_hosts = |site: &str| {
        nodes.iter().filter(|n| n.site == site).map(|n| format!("127.0.0.1[{}]", 7800 + n.offset)).collect::<Vec<_>>().join(",")
    };
    let bridge_hosts = nodes.iter().map(|n| format!("127.0.0.1[{}]", 7850 + n.offset)).collect::<Vec<_>>().join(",");
    let started = Instant::now();
    let mut children = Vec::new();
    for node in &nodes {
        let root = dir.join(&node.name);
        let conf = root.join("conf");
        for sub in ["conf", "data", "log", "lib"] {
            std::fs::create_dir_all(root.join(sub))?;
        }
        render_config(&spec, &conf)?;
        if spec.tls {
            std::fs::copy(ispn_dir().join("tls/server.p12"), conf.join("server.p12"))?;
        }
        let java = [
            "java -Xms64m -Xmx512m -XX:MetaspaceSize=64M -Djava.net.preferIPv4Stack=true".to_owned(),
            "--add-exports java.naming/com.sun.jndi.ldap=ALL-UNNAMED".to_owned(),
            "--add-opens java.base/java.util=ALL-UNNAMED --add-opens java.base/java.util.concurrent=ALL-UNNAMED".to_owned(),
            format!("-Dinfinispan.server.home.path={}", root.display()),
            format!("-cp '{}/*' org.infinispan.server.Bootstrap", lib.display()),
            format!("-s {} -c kc-xsite.xml -b 127.0.0.1 -k 127.0.0.1", root.display()),
            format!("-o {} -g {} -n {}", node.offset, node.site, node.name),
            format!("-Dinfinispan.site.name={} -Dinfinispan.xsite.backup={}", node.site, node.other),
            format!("-Djgroups.bridge.port={} '-Djgroups.bridge.hosts={bridge_hosts}'", 7850 + node.offset),
            format!("'-Djgroups.local.hosts={}'", local_hosts(node.site)),
        ]
        .join(" \\\n  ");
        // One script per node: the harness starts it, and a test that killed the node can start
        // it again exactly the same way (`sh <node>.start`).
        let script = dir.join(format!("{}.start", node.name));
        std::fs::write(
            &script,
            format!("#!/bin/sh\nexec {java} \\\n  >> '{}' 2>&1\n", dir.join(format!("{}.out", node.name)).display()),
        )?;
        let mut command = Command::new("sh");
        command.arg(&script).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        if lifetime == Lifetime::Detached {
            // Out of the shell's process group, so that a later Ctrl-C there does not stop them.
            std::os::unix::process::CommandExt::process_group(&mut command, 0);
        }
        let child = command.spawn().context("cannot start java")?;
        std::fs::write(dir.join(format!("{}.pid", node.name)), child.id().to_string())?;
        children.push((node.name.clone(), child));
    }
    let mut pair = RunningPair { spec: spec.clone(), dir: dir.clone(), children, ca_file, lifetime };
    wait_ready(&mut pair, &nodes)?;
    eprintln!(
        "Infinispan {} pair ({}) ready in {:.1} s: site-a {} / site-b {}",
        spec.version,
        spec.variant(),
        started.elapsed().as_secs_f64(),
        pair.url("site-a"),
        pair.url("site-b")
    );
    Ok(pair)
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

fn wait_ready(pair: &mut RunningPair, nodes: &[Node]) -> Result<()> {
    let limit = start_timeout();
    let deadline = Instant::now() + limit;
    let mut pending: Vec<&Node> = nodes.iter().collect();
    while !pending.is_empty() {
        for (name, child) in &mut pair.children {
            if let Some(status) = child.try_wait()? {
                let out = pair.dir.join(format!("{name}.out"));
                bail!(
                    "Infinispan node {name} exited with {status} while starting; last lines of {}:\n{}",
                    out.display(),
                    log_tail(&out)
                );
            }
        }
        for node in &pending {
            let out = pair.dir.join(format!("{}.out", node.name));
            let log = std::fs::read_to_string(&out).unwrap_or_default();
            // A configuration error kills the main thread but not the JVM: do not wait it out.
            if log.contains("Exception in thread \"main\"") {
                bail!("Infinispan node {} failed to start; last lines of {}:\n{}", node.name, out.display(), log_tail(&out));
            }
        }
        pending.retain(|node| {
            let log = std::fs::read_to_string(pair.dir.join(format!("{}.out", node.name))).unwrap_or_default();
            !log.contains("ISPN080001")
        });
        if Instant::now() > deadline {
            bail!(
                "Infinispan nodes {:?} did not start within {} s (logs in {}); SITE_SYNC_START_TIMEOUT=<seconds> allows more",
                pending.iter().map(|n| &n.name).collect::<Vec<_>>(),
                limit.as_secs(),
                pair.dir.display()
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    // Started is not ready: both sites must see each other through the RELAY2 bridge.
    for site in ["site-a", "site-b"] {
        let ports: Vec<u16> = nodes.iter().filter(|n| n.site == site).map(Node::rest_port).collect();
        loop {
            let view = if pair.spec.tls { view_from_logs(pair, site) } else { view_from_rest(&ports) };
            if view.iter().any(|s| s == "site-a") && view.iter().any(|s| s == "site-b") {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "{site} does not see both sites (sites_view {view:?}) after {} s; logs in {}",
                    limit.as_secs(),
                    pair.dir.display()
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
    Ok(())
}

fn view_from_logs(pair: &RunningPair, site: &str) -> Vec<String> {
    // "ISPN000439: Received new cross-site view: [site-a, site-b]", last one wins.
    let mut view = Vec::new();
    for entry in std::fs::read_dir(&pair.dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !(name.starts_with(site) && name.ends_with(".out")) {
            continue;
        }
        let log = std::fs::read_to_string(entry.path()).unwrap_or_default();
        if let Some(line) = log.lines().rev().find(|l| l.contains("ISPN000439"))
            && let Some(list) = line.rsplit('[').next()
        {
            view = list.trim_end_matches(']').split(',').map(|s| s.trim().to_owned()).collect();
        }
    }
    view
}

/// The cross-site view as a site master reports it: only relay nodes know it (checked on 15.0.21:
/// a node that is not a site master answers `"sites_view":[]`).
fn view_from_rest(ports: &[u16]) -> Vec<String> {
    for port in ports {
        let Ok(body) = http_get(*port, "/rest/v2/container", ADMIN) else { continue };
        let Ok(info) = serde_json::from_str::<serde_json::Value>(&body) else { continue };
        if info.get("relay_node").and_then(serde_json::Value::as_bool) == Some(true) {
            return info.get("sites_view").cloned().and_then(|v| serde_json::from_value(v).ok()).unwrap_or_default();
        }
    }
    Vec::new()
}

/// A minimal HTTP/1.1 GET with BASIC (the harness enables it), for readiness checks.
fn http_get(port: u16, path: &str, (user, password): (&str, &str)) -> Result<String> {
    let mut stream = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Basic {auth}\r\nConnection: close\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").context("no HTTP header end")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("{}", head.lines().next().unwrap_or_default());
    }
    Ok(body.to_owned())
}

fn run_dirs() -> Vec<PathBuf> {
    std::fs::read_dir(ispn_dir().join("run")).into_iter().flatten().flatten().map(|e| e.path()).collect()
}

fn pids(dir: &Path) -> Vec<(String, u32)> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let node = name.strip_suffix(".pid")?.to_owned();
            let pid = std::fs::read_to_string(e.path()).ok()?.trim().parse().ok()?;
            Some((node, pid))
        })
        .collect()
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// SIGTERM, and SIGKILL if the process is still there 20 s later.
fn terminate(pid: u32) {
    let _ = Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
    let deadline = Instant::now() + Duration::from_secs(20);
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    if alive(pid) {
        let _ = Command::new("kill").arg("-KILL").arg(pid.to_string()).status();
    }
}

const HOME_PROPERTY: &str = "-Dinfinispan.server.home.path=";

/// Servers this harness started, from any checkout, that are still running: (pid, server home).
fn harness_servers() -> Vec<(u32, String)> {
    let mut found: Vec<(u32, String)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            server_home(&cmdline).map(|home| (pid, home))
        })
        .collect();
    found.sort();
    found
}

/// The server home of a command line (NUL-separated, as /proc holds it) when it is an Infinispan
/// server started from a harness run directory.
fn server_home(cmdline: &[u8]) -> Option<String> {
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    if !args.iter().any(|a| *a == b"org.infinispan.server.Bootstrap") {
        return None;
    }
    let home = args.iter().find_map(|a| a.strip_prefix(HOME_PROPERTY.as_bytes()))?;
    let home = String::from_utf8_lossy(home).into_owned();
    home.contains("/ispn/run/").then_some(home)
}

/// What to do about a taken port, naming the harness servers that may hold it.
fn leftover_servers_hint(servers: &[(u32, String)]) -> String {
    if servers.is_empty() {
        return "no server of this harness is running, so stop whatever else holds it".to_owned();
    }
    let listed = servers.iter().map(|(pid, home)| format!("pid {pid} ({home})")).collect::<Vec<_>>().join(", ");
    let pids = servers.iter().map(|(pid, _)| pid.to_string()).collect::<Vec<_>>().join(" ");
    format!(
        "leftover Infinispan servers of this harness are running: {listed}; `cargo xtask ispn down` stops the ones this checkout started, `kill {pids}` stops them all"
    )
}

/// `cargo xtask ispn up|down|status`.
pub fn command(args: &[&str]) -> Result<()> {
    match args {
        ["up", rest @ ..] => {
            let mut spec = PairSpec::plain(VERSIONS[0], 1);
            let mut it = rest.iter();
            while let Some(arg) = it.next() {
                match *arg {
                    "--version" => spec.version = resolve(it.next().context("--version needs a value")?)?,
                    "--tls" => spec.tls = true,
                    "--nodes" => spec.nodes = it.next().context("--nodes needs a value")?.parse()?,
                    "--keycloak" => spec.keycloak = true,
                    other => bail!("unknown option {other}"),
                }
            }
            let pair = start(spec, Lifetime::Detached)?;
            for (k, v) in pair.env() {
                println!("export {k}={v}");
            }
            Ok(())
        }
        ["down"] => {
            for dir in run_dirs() {
                for (node, pid) in pids(&dir) {
                    if alive(pid) {
                        eprintln!("stopping {node} (pid {pid})");
                        terminate(pid);
                    }
                    let _ = std::fs::remove_file(dir.join(format!("{node}.pid")));
                }
            }
            // Servers whose pid file is gone (a run directory cleaned under them) are found by
            // their command line.
            let ours = ispn_dir().join("run");
            for (pid, home) in harness_servers() {
                if Path::new(&home).starts_with(&ours) {
                    eprintln!("stopping {home} (pid {pid}, no pid file)");
                    terminate(pid);
                }
            }
            Ok(())
        }
        ["status"] => {
            let mut any = false;
            for dir in run_dirs() {
                for (node, pid) in pids(&dir) {
                    any = true;
                    let state = if alive(pid) { "running" } else { "dead" };
                    println!("{:<28} {node:<10} pid {pid:<8} {state}", dir.file_name().unwrap_or_default().to_string_lossy());
                }
            }
            if !any {
                println!("no pair is running");
            }
            Ok(())
        }
        ["link", "cut"] => cut_link(),
        ["link", "heal"] => heal_link(),
        _ => bail!("usage: cargo xtask ispn up [--version V] [--tls] [--nodes N] [--keycloak] | down | status | link cut|heal"),
    }
}

/// The iptables chain that holds the cut, so that healing removes exactly what cutting added.
const CUT_CHAIN: &str = "SITE_SYNC_LINK_CUT";

/// The RELAY2 bridge ports of every node the harness can start (two nodes per site at most).
fn bridge_ports() -> Vec<u16> {
    [0u16, 1, 100, 101].iter().map(|offset| 7850 + offset).collect()
}

fn iptables(args: &[&str]) -> Result<std::process::ExitStatus> {
    Command::new("iptables")
        .args(args)
        .stderr(Stdio::null())
        .status()
        .context("`iptables` is needed to cut the link on loopback (Debian: apt-get install iptables; run as root)")
}

/// Cuts the cross-site link of a running pair as a network partition would: every packet to or
/// from a bridge port on loopback is dropped, while each site's REST endpoint and its own cluster
/// keep working. Each site's `sites_view` loses the other once JGroups' failure detection gives up
/// on the silent peer: measured on 16.0.7 with the harness's stack, about 50 s after the cut (a
/// push in flight meanwhile reads SENDING and transfers nothing).
fn cut_link() -> Result<()> {
    if iptables(&["-L", CUT_CHAIN, "-n"])?.success() {
        bail!("the link is already cut (chain {CUT_CHAIN} exists); `cargo xtask ispn link heal` first");
    }
    if !iptables(&["-N", CUT_CHAIN])?.success() {
        bail!("cannot create the iptables chain {CUT_CHAIN}: this needs root and netfilter");
    }
    for port in bridge_ports() {
        for direction in ["--dport", "--sport"] {
            let port = port.to_string();
            if !iptables(&["-A", CUT_CHAIN, "-i", "lo", "-p", "tcp", direction, &port, "-j", "DROP"])?.success() {
                bail!("cannot add the rule dropping {direction} {port}");
            }
        }
    }
    if !iptables(&["-I", "INPUT", "-j", CUT_CHAIN])?.success() {
        bail!("cannot hook {CUT_CHAIN} into INPUT");
    }
    eprintln!(
        "cut: packets to and from the bridge ports {:?} are dropped; `cargo xtask ispn link heal` restores them",
        bridge_ports()
    );
    Ok(())
}

/// Removes the cut; the bridge merges back when JGroups next looks for its peers (MERGE3, within
/// about 30 s).
fn heal_link() -> Result<()> {
    let hooked = iptables(&["-D", "INPUT", "-j", CUT_CHAIN])?.success();
    let flushed = iptables(&["-F", CUT_CHAIN])?.success() && iptables(&["-X", CUT_CHAIN])?.success();
    if !(hooked || flushed) {
        bail!("the link is not cut (no chain {CUT_CHAIN})");
    }
    eprintln!("healed: the bridge ports pass again");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmdline(args: &[&str]) -> Vec<u8> {
        args.iter().flat_map(|a| a.bytes().chain([0])).collect()
    }

    #[test]
    fn a_harness_server_is_recognised_by_its_main_class_and_run_directory() {
        let server = cmdline(&[
            "java",
            "-Dinfinispan.server.home.path=/src/target/ispn/run/16.0.7-plain-1n/site-a-1",
            "-cp",
            "/src/target/ispn/dist/16.0.7/lib/*",
            "org.infinispan.server.Bootstrap",
        ]);
        assert_eq!(server_home(&server).as_deref(), Some("/src/target/ispn/run/16.0.7-plain-1n/site-a-1"));
        let foreign_home = cmdline(&["java", "-Dinfinispan.server.home.path=/opt/infinispan", "org.infinispan.server.Bootstrap"]);
        assert_eq!(server_home(&foreign_home), None, "a server someone else runs is not ours to name");
        let not_a_server = cmdline(&["java", "-Dinfinispan.server.home.path=/src/target/ispn/run/x", "org.example.Main"]);
        assert_eq!(server_home(&not_a_server), None);
    }

    #[test]
    fn a_taken_port_names_the_leftover_servers_and_how_to_stop_them() {
        let hint = leftover_servers_hint(&[
            (12413, "/a/target/ispn/run/v/site-a-1".to_owned()),
            (12414, "/a/target/ispn/run/v/site-b-1".to_owned()),
        ]);
        assert!(hint.contains("pid 12413 (/a/target/ispn/run/v/site-a-1)"), "{hint}");
        assert!(hint.contains("`kill 12413 12414`"), "{hint}");
        assert!(hint.contains("`cargo xtask ispn down`"), "{hint}");
        assert!(leftover_servers_hint(&[]).contains("no server of this harness"));
    }
}
