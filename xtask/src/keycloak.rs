//! Real Keycloak in the loop: one Keycloak per site on one PostgreSQL database, each using its
//! site's real Infinispan (a pair started with Keycloak's indexed caches), all as local processes
//! on 127.0.0.1, without Docker.
//!
//! - Keycloak is `org.keycloak:keycloak-quarkus-dist` from Maven Central, unpacked once per site
//!   under `target/keycloak/<version>/<site>` and built once (`kc.sh build`: PostgreSQL, the
//!   multi-site feature, health endpoints); each start is `kc.sh start --optimized`, through
//!   `testenv/keycloak/keycloak.sh`, the same script site-sync's `commands` backend runs.
//! - PostgreSQL is Debian's: a throw-away cluster (`initdb`, `pg_ctl`) in the run directory on
//!   its own port, not the system service; both Keycloaks share its one database, as the
//!   multi-site architecture has them share one replicated database.
//!
//! Ports: Keycloak site-a 8080 (management 9000), site-b 8081 (9001); PostgreSQL 15432.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::ispn::{ADMIN, RunningPair};
use crate::process::{port_in_use, start_timeout};
use crate::{project_root, run};

/// The Keycloak release of each Infinispan line: 26.5.6 (Infinispan 15.0.19 Hot Rod client) on
/// the 15.0 line, and the newest release that resolves from Maven Central here, 26.7.0 (16.0.12
/// Hot Rod client), on the 16.0 line. Both run on Java 17.
pub fn version_for(infinispan: &str) -> &'static str {
    if infinispan.starts_with("15.") { "26.5.6" } else { "26.7.0" }
}

pub const SITES: [&str; 2] = ["site-a", "site-b"];
pub const HTTP_PORTS: [u16; 2] = [8080, 8081];
pub const MANAGEMENT_PORTS: [u16; 2] = [9000, 9001];
const HTTPS_PORTS: [u16; 2] = [8443, 8444];
const POSTGRES_PORT: u16 = 15432;
/// The tests of the Keycloak suite (`crates/sync-cli/tests/it/keycloak.rs`); each leaves
/// `<name>.passed` in the run directory.
pub const TESTS: [&str; 3] = [
    "synchronized_stale_site_serves_the_active_sites_login_state",
    "the_naive_order_logs_everyone_out",
    "the_direction_guard_keeps_the_site_users_log_in_to",
];

/// Keycloak's bootstrap administrator (test servers only).
pub const KEYCLOAK_ADMIN: (&str, &str) = ("admin", "admin");

fn root() -> PathBuf {
    project_root().join("target").join("keycloak")
}

fn script() -> PathBuf {
    project_root().join("testenv").join("keycloak").join("keycloak.sh")
}

/// Downloads (once) the distribution of `version`, unpacks it for `site` and builds it (once).
fn ensure_server(version: &str, site: &str) -> Result<PathBuf> {
    let home = root().join(version).join(site);
    let server = home.join(format!("keycloak-{version}"));
    let build_options = ["--db=postgres", "--features=multi-site", "--health-enabled=true"];
    let marker = home.join(".built");
    if std::fs::read_to_string(&marker).is_ok_and(|m| m == build_options.join(" ")) {
        return Ok(server);
    }
    let dist = root().join("dist");
    let zip = dist.join(format!("keycloak-quarkus-dist-{version}.zip"));
    if !zip.exists() {
        eprintln!("downloading Keycloak {version} from Maven Central (cached afterwards)");
        run(Command::new("mvn")
            .args(["-B", "-q", "org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy"])
            .arg(format!("-Dartifact=org.keycloak:keycloak-quarkus-dist:{version}:zip"))
            .arg(format!("-DoutputDirectory={}", dist.display())))?;
    }
    if home.exists() {
        std::fs::remove_dir_all(&home)?;
    }
    std::fs::create_dir_all(&home)?;
    run(Command::new("unzip").arg("-q").arg(&zip).arg("-d").arg(&home))
        .context("unpacking Keycloak needs `unzip` (Debian: apt-get install unzip)")?;
    let started = Instant::now();
    run(Command::new(server.join("bin").join("kc.sh")).arg("build").args(build_options))?;
    eprintln!("Keycloak {version} for {site} built in {:.1} s", started.elapsed().as_secs_f64());
    std::fs::write(marker, build_options.join(" "))?;
    Ok(server)
}

/// PostgreSQL's programs: on PATH, else Debian's versioned directory.
fn postgres_bin(program: &str) -> Result<PathBuf> {
    if Command::new(program).arg("--version").stdout(Stdio::null()).status().is_ok_and(|s| s.success()) {
        return Ok(PathBuf::from(program));
    }
    let mut versions: Vec<PathBuf> =
        std::fs::read_dir("/usr/lib/postgresql").into_iter().flatten().flatten().map(|e| e.path().join("bin")).collect();
    versions.sort();
    versions
        .into_iter()
        .rev()
        .map(|bin| bin.join(program))
        .find(|p| p.exists())
        .with_context(|| format!("PostgreSQL's `{program}` is missing (Debian: apt-get install postgresql)"))
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A throw-away PostgreSQL cluster on 127.0.0.1:15432 with a `keycloak` database.
#[derive(Debug)]
pub struct Postgres {
    data: PathBuf,
    stopped: bool,
}

impl Postgres {
    fn command(program: &str) -> Result<Command> {
        let binary = postgres_bin(program)?;
        // initdb and the server refuse to run as root: run them as the package's user.
        Ok(if is_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(binary);
            command
        } else {
            Command::new(binary)
        })
    }

    /// Creates and starts a fresh cluster in `dir`.
    pub fn start(dir: &Path) -> Result<Self> {
        if port_in_use(POSTGRES_PORT) {
            bail!(
                "port {POSTGRES_PORT} is already in use on 127.0.0.1 (a PostgreSQL of an earlier run? `cargo xtask keycloak down`)"
            );
        }
        let data = dir.join("postgres");
        std::fs::create_dir_all(&data)?;
        if is_root() {
            run(Command::new("chown").args(["-R", "postgres"]).arg(&data))?;
        }
        run(Self::command("initdb")?.arg("-D").arg(data.join("data")).args(["-U", "postgres", "--auth=trust", "-E", "UTF8"]))?;
        let options = format!("-p {POSTGRES_PORT} -k {} -c listen_addresses=127.0.0.1 -c fsync=off", data.display());
        run(Self::command("pg_ctl")?
            .arg("-D")
            .arg(data.join("data"))
            .args(["-o", &options, "-l"])
            .arg(data.join("log"))
            .args(["-w", "start"]))?;
        let postgres = Self { data, stopped: false };
        for sql in ["CREATE USER keycloak PASSWORD 'keycloak'", "CREATE DATABASE keycloak OWNER keycloak"] {
            run(Command::new(postgres_bin("psql")?).args([
                "-q",
                "-h",
                "127.0.0.1",
                "-p",
                &POSTGRES_PORT.to_string(),
                "-U",
                "postgres",
                "-c",
                sql,
            ]))?;
        }
        Ok(postgres)
    }

    fn stop(&mut self) {
        if !self.stopped {
            self.stopped = true;
            if let Ok(mut command) = Self::command("pg_ctl") {
                let _ = command.arg("-D").arg(self.data.join("data")).args(["-m", "fast", "stop"]).stdout(Stdio::null()).status();
            }
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Both Keycloaks and their database, stopped when dropped.
#[derive(Debug)]
pub struct Keycloaks {
    pub run: PathBuf,
    /// The Keycloak release.
    pub version: &'static str,
    postgres: Postgres,
    /// Seconds each Keycloak took from its start to ready.
    pub ready_after: Vec<(String, f64)>,
}

pub fn keycloak_script(action: &str, run_dir: &Path, site: &str) -> Command {
    let mut command = Command::new("sh");
    command.arg(script()).arg(action).arg(run_dir).arg(site);
    command
}

/// `GET http://127.0.0.1:<port><path>`'s status, if anything answers.
pub fn status_of(port: u16, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n").ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

impl Keycloaks {
    /// Starts PostgreSQL, then Keycloak on site-a (it migrates the schema and creates the
    /// administrator), then on site-b, each on its site of `pair`.
    pub fn start(pair: &RunningPair) -> Result<Self> {
        for port in HTTP_PORTS.iter().chain(&MANAGEMENT_PORTS) {
            if port_in_use(*port) {
                bail!("port {port} is already in use on 127.0.0.1 (a Keycloak of an earlier run? `cargo xtask keycloak down`)");
            }
        }
        let version = version_for(pair.spec.version);
        let servers: Vec<PathBuf> = SITES.iter().map(|s| ensure_server(version, s)).collect::<Result<_>>()?;
        let run_dir = root().join("run").join(pair.spec.variant());
        if run_dir.exists() {
            std::fs::remove_dir_all(&run_dir)?;
        }
        std::fs::create_dir_all(&run_dir)?;
        let postgres = Postgres::start(&run_dir)?;
        let mut keycloaks = Self { run: run_dir.clone(), version, postgres, ready_after: Vec::new() };
        for (index, site) in SITES.iter().enumerate() {
            let infinispan_port = if index == 0 { 11222 } else { 11322 };
            let args = [
                "--http-enabled=true".to_owned(),
                "--hostname-strict=false".to_owned(),
                "--http-host=127.0.0.1".to_owned(),
                format!("--http-port={}", HTTP_PORTS[index]),
                format!("--https-port={}", HTTPS_PORTS[index]),
                format!("--http-management-port={}", MANAGEMENT_PORTS[index]),
                format!("--db-url=jdbc:postgresql://127.0.0.1:{POSTGRES_PORT}/keycloak"),
                "--db-username=keycloak --db-password=keycloak".to_owned(),
                format!("--cache-remote-host=127.0.0.1 --cache-remote-port={infinispan_port}"),
                format!("--cache-remote-username={} --cache-remote-password={}", ADMIN.0, ADMIN.1),
                "--cache-remote-tls-enabled=false".to_owned(),
            ];
            std::fs::write(
                run_dir.join(format!("{site}.env")),
                format!(
                    "KC_HOME='{}'\nKC_ARGS='{}'\nHTTP_PORT={}\nMANAGEMENT_PORT={}\nexport KC_BOOTSTRAP_ADMIN_USERNAME={} KC_BOOTSTRAP_ADMIN_PASSWORD={}\n",
                    servers[index].display(),
                    args.join(" "),
                    HTTP_PORTS[index],
                    MANAGEMENT_PORTS[index],
                    KEYCLOAK_ADMIN.0,
                    KEYCLOAK_ADMIN.1
                ),
            )?;
            let started = Instant::now();
            run(&mut keycloak_script("start", &run_dir, site))?;
            keycloaks.wait_ready(index)?;
            let seconds = started.elapsed().as_secs_f64();
            eprintln!("Keycloak {version} on {site} ready in {seconds:.1} s (http://127.0.0.1:{})", HTTP_PORTS[index]);
            keycloaks.ready_after.push(((*site).to_owned(), seconds));
        }
        Ok(keycloaks)
    }

    /// Waits until the Keycloak of site `index` answers `/health/ready` and `/lb-check` with 200,
    /// checking every 100 ms (the benchmark times starts with it).
    pub fn wait_ready(&self, index: usize) -> Result<()> {
        let limit = start_timeout();
        let deadline = Instant::now() + limit;
        let log = self.run.join(format!("{}.log", SITES[index]));
        loop {
            let ready = status_of(MANAGEMENT_PORTS[index], "/health/ready") == Some(200);
            if ready && status_of(HTTP_PORTS[index], "/lb-check") == Some(200) {
                return Ok(());
            }
            if keycloak_script("is-stopped", &self.run, SITES[index]).status().is_ok_and(|s| s.success()) {
                bail!("Keycloak on {} stopped while starting; its log: {}", SITES[index], log.display());
            }
            if Instant::now() > deadline {
                bail!(
                    "Keycloak on {} was not ready within {} s (log: {}); SITE_SYNC_START_TIMEOUT=<seconds> allows more",
                    SITES[index],
                    limit.as_secs(),
                    log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Environment for the Keycloak suite.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            ("SITE_SYNC_KEYCLOAK_RUN".to_owned(), self.run.display().to_string()),
            ("SITE_SYNC_KEYCLOAK_SCRIPT".to_owned(), script().display().to_string()),
            ("SITE_SYNC_KEYCLOAK_VERSION".to_owned(), self.version.to_owned()),
            ("SITE_SYNC_KEYCLOAK_ADMIN".to_owned(), format!("{}:{}", KEYCLOAK_ADMIN.0, KEYCLOAK_ADMIN.1)),
        ];
        for (index, side) in ["A", "B"].iter().enumerate() {
            env.push((format!("SITE_SYNC_KEYCLOAK_{side}_URL"), format!("http://127.0.0.1:{}", HTTP_PORTS[index])));
            env.push((format!("SITE_SYNC_KEYCLOAK_{side}_MANAGEMENT"), format!("http://127.0.0.1:{}", MANAGEMENT_PORTS[index])));
        }
        env
    }

    /// Resident memory of every JVM of the harness (Infinispan and Keycloak), in MiB.
    pub fn jvm_memory() -> Vec<(String, f64)> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            let what = if text.contains("io.quarkus.bootstrap.runner.QuarkusEntryPoint") {
                "Keycloak"
            } else if text.contains("org.infinispan.server.Bootstrap") {
                "Infinispan"
            } else {
                continue;
            };
            let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
            let kib: f64 = status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or(0.0);
            found.push((what.to_owned(), kib / 1024.0));
        }
        found
    }

    fn stop(&mut self) {
        for site in SITES.iter().rev() {
            let _ = keycloak_script("stop", &self.run, site).status();
        }
        self.postgres.stop();
    }
}

impl Drop for Keycloaks {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Stops whatever a `keycloak up` (or an interrupted run) left: every Keycloak with a pid file
/// under target/keycloak/run, and its PostgreSQL.
pub fn down() -> Result<()> {
    for entry in std::fs::read_dir(root().join("run")).into_iter().flatten().flatten() {
        let dir = entry.path();
        for site in SITES {
            if dir.join(format!("{site}.pid")).exists() {
                eprintln!("stopping Keycloak on {site} ({})", dir.display());
                let _ = keycloak_script("stop", &dir, site).status();
            }
        }
        let data = dir.join("postgres").join("data");
        if data.join("postmaster.pid").exists() {
            eprintln!("stopping PostgreSQL ({})", data.display());
            let _ = Postgres::command("pg_ctl")?.arg("-D").arg(&data).args(["-m", "fast", "stop"]).status();
        }
    }
    Ok(())
}
