//! `cargo xtask bench`: the measurements behind docs/benchmarks.md. Targets are goals, never
//! assertions: this reports what it measured, honestly, with the command that produced it.
//!
//! - P1: the procedure on a real pair (4 caches x 10k entries), site-sync versus the seed's
//!   commands scripted with the official Infinispan CLI (testenv/bench/cli-procedure.sh);
//!   Keycloak scaling excluded from both.
//! - P2: site-sync's push phase versus the server-side floor (first push start to last OK, seen by
//!   a 10 ms poller), 4 caches x 100k entries; and the default verification (keys and values) of
//!   the same runs, against the whole run.
//! - P3: `site-sync diff` of 100k, 1M and 10M keys per site against fake-ispn over HTTP: wall time
//!   and peak RSS.
//! - P4: deterministic simulation schedules per minute.
//! - P5: what users feel of a run: the stale site's Keycloak unavailable, from its stop until it
//!   is ready again, split into the stop, the Infinispan work and the start, beside the floor
//!   that any procedure pays (stop + server-side transfer + start, each timed alone). Real
//!   Keycloak on real Infinispan, stopped and started by site-sync's `commands` backend.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::ispn::{ADMIN, Lifetime, PairSpec, RunningPair, VERSIONS, start};
use crate::keycloak::{HTTP_PORTS, Keycloaks, SITES, keycloak_script, status_of};
use crate::{cargo, project_root, run};

const CACHES: [&str; 4] = ["actionTokens", "authenticationSessions", "loginFailures", "work"];
const ROUNDS: usize = 5;

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

fn release(name: &str) -> PathBuf {
    project_root().join("target").join("release").join(name)
}

fn example(name: &str) -> PathBuf {
    project_root().join("target").join("release").join("examples").join(name)
}

fn output(command: &mut Command) -> Result<String> {
    let out = command.output().with_context(|| format!("cannot start {command:?}"))?;
    if !out.status.success() {
        bail!("{command:?} failed: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn timed(command: &mut Command) -> Result<f64> {
    let started = Instant::now();
    output(command)?;
    Ok(started.elapsed().as_secs_f64())
}

/// The machine, for the report.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model =
        cpuinfo.lines().find_map(|l| l.strip_prefix("model name")).map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned());
    let cores = cpuinfo.lines().filter(|l| l.starts_with("processor")).count();
    let memory_kib: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:").and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok()))
        .unwrap_or(0);
    let model = model.unwrap_or_else(|| "unknown CPU".to_owned());
    format!("{cores} cores ({model}), {:.1} GiB RAM, Linux", memory_kib as f64 / 1024.0 / 1024.0)
}

/// P4: schedules per minute of the deterministic simulation (test profile, as CI runs it).
fn simulation() -> Result<Measured> {
    let cases = 3000;
    let mut minutes = Vec::new();
    for _ in 0..ROUNDS {
        let seconds = timed(cargo().current_dir(project_root()).env("SITE_SYNC_SIM_CASES", cases.to_string()).args([
            "test",
            "--workspace",
            "--test",
            "it",
            "--",
            "--exact",
            "sim::every_fault_schedule_keeps_the_invariants",
        ]))?;
        minutes.push(f64::from(cases) / seconds * 60.0);
    }
    let per_minute = median(minutes);
    eprintln!("P4: {per_minute:.0} schedules per minute");
    Ok(Measured {
        json: json!({"schedules_per_minute": per_minute, "cases_per_run": cases, "runs": ROUNDS}),
        rows: vec![format!(
            "| P4 deterministic simulation, 2 cores, test profile | ≥ 1,000 schedules/min | {per_minute:.0} schedules/min | {:.1}x the target | \
             `SITE_SYNC_SIM_CASES={cases} cargo test --workspace --test it -- --exact sim::every_fault_schedule_keeps_the_invariants` |",
            per_minute / 1000.0
        )],
    })
}

fn write_config(dir: &Path, url_a: &str, url_b: &str, settings: &str) -> Result<PathBuf> {
    std::fs::write(dir.join("password"), format!("{}\n", ADMIN.1))?;
    let site = |name: &str, url: &str| {
        format!(
            "  {name}:\n    infinispan:\n      url: {url}\n      user: {}\n      password_file: password\n    keycloak:\n      mode: already-stopped\n",
            ADMIN.0
        )
    };
    let path = dir.join("site-sync.yaml");
    std::fs::write(
        &path,
        format!(
            "active: site-a\noffline: site-b\njournal: journal.json\nsettings:\n  request_timeout: 120s\n{settings}sites:\n{}{}",
            site("site-a", url_a),
            site("site-b", url_b)
        ),
    )?;
    Ok(path)
}

/// Peak RSS (KiB) and wall time (s) of a command, from GNU time.
fn rss_and_time(command: &[&str]) -> Result<(f64, u64)> {
    let out = Command::new("/usr/bin/time")
        .args(["-f", "%e %M"])
        .args(command)
        .stdout(Stdio::null())
        .output()
        .context("GNU time is needed for peak RSS (Debian: apt-get install time)")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    let mut parts = last.split_whitespace();
    let seconds: f64 = parts.next().and_then(|s| s.parse().ok()).with_context(|| format!("unexpected time output: {stderr}"))?;
    let rss: u64 = parts.next().and_then(|s| s.parse().ok()).with_context(|| format!("unexpected time output: {stderr}"))?;
    // `diff` exits 5 when the sites differ, which they do by construction.
    if !matches!(out.status.code(), Some(0 | 5)) {
        bail!("{command:?} failed: {stderr}");
    }
    Ok((seconds, rss))
}

/// P3: `site-sync diff` at growing sizes against fake-ispn over HTTP.
fn diff_scaling(sizes: &[usize]) -> Result<Measured> {
    let (mut rows, mut runs_json, mut previous) = (Vec::new(), Vec::new(), None);
    for &per_site in sizes {
        let mut server = Command::new(example("serve"))
            .arg((per_site / CACHES.len()).to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("cannot start the fake-ispn server")?;
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(server.stdout.take().context("stdout")?), &mut line)?;
        let urls: Vec<&str> = line.split_whitespace().collect();
        let dir = scratch_dir()?;
        let config = write_config(&dir, urls[0], urls[1], "")?;
        let binary = release("site-sync");
        let mut runs = Vec::new();
        for _ in 0..ROUNDS {
            runs.push(rss_and_time(&[
                binary.to_str().unwrap_or_default(),
                "--config",
                config.to_str().unwrap_or_default(),
                "diff",
            ])?);
        }
        drop(server.stdin.take());
        let _ = server.wait();
        let seconds = median(runs.iter().map(|r| r.0).collect());
        let rss_mib = median(runs.iter().map(|r| r.1 as f64 / 1024.0).collect());
        eprintln!("P3: diff of {per_site} keys per site: {seconds:.2} s, peak RSS {rss_mib:.1} MiB");
        runs_json.push(json!({"keys_per_site": per_site, "seconds": seconds, "peak_rss_mib": rss_mib}));
        let growth = match previous {
            Some((keys, s, m)) => {
                format!("x{:.0} keys: x{:.1} time, x{:.2} memory", per_site as f64 / keys as f64, seconds / s, rss_mib / m)
            }
            None => String::new(),
        };
        rows.push(format!(
            "| P3 `site-sync diff`, {per_site} keys per site, fake-ispn over HTTP | ≤ 10 s and ≤ 64 MiB at 10M; x10 keys ≤ x11 time | \
             {seconds:.2} s, {rss_mib:.1} MiB peak RSS | {growth} | `/usr/bin/time -f '%e %M' site-sync diff` |"
        ));
        previous = Some((per_site, seconds, rss_mib));
        let _ = std::fs::remove_dir_all(dir);
    }
    Ok(Measured { json: Value::Array(runs_json), rows })
}

fn scratch_dir() -> Result<PathBuf> {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let dir = project_root().join("target").join("bench").join(nanos.to_string());
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// `bench_tool <command> <url-a> <url-b> admin <password-file> <caches>` (reset, split, push-floor,
/// same) on the four caches.
fn on_pair(pair: &RunningPair, command: &str, password: &Path) -> Result<String> {
    on_caches(pair, command, password, &CACHES)
}

fn on_caches(pair: &RunningPair, command: &str, password: &Path, caches: &[&str]) -> Result<String> {
    output(
        Command::new(example("bench_tool"))
            .arg(command)
            .args([pair.url("site-a"), pair.url("site-b")])
            .arg(ADMIN.0)
            .arg(password)
            .args(caches),
    )
}

/// Seconds to read every value of `caches` on both sites by `how` (`listing` or `stored`),
/// checked against the number of values expected.
fn read_values(pair: &RunningPair, password: &Path, how: &str, caches: &[&str], expected: usize) -> Result<f64> {
    let (seconds, values) = read_values_counted(pair, password, how, caches)?;
    if values != expected {
        bail!("read-values {how} read {values} values, not {expected}");
    }
    Ok(seconds)
}

/// Seconds to read every value of `caches` on both sites by `how`, and how many values.
fn read_values_counted(pair: &RunningPair, password: &Path, how: &str, caches: &[&str]) -> Result<(f64, usize)> {
    let printed = output(
        Command::new(example("bench_tool"))
            .arg("read-values")
            .args([pair.url("site-a"), pair.url("site-b")])
            .arg(ADMIN.0)
            .arg(password)
            .arg(how)
            .args(caches),
    )?;
    let (seconds, values) = printed.trim().split_once(' ').context("read-values output")?;
    Ok((seconds.parse().context("read-values seconds")?, values.parse().context("read-values count")?))
}

/// The seconds site-sync's JSON events report for `steps`, summed.
fn seconds_in_steps<'a>(events: impl IntoIterator<Item = &'a Value>, steps: &[&str]) -> f64 {
    let ms: u64 = events
        .into_iter()
        .filter(|e| e["type"] == "step_finished" && e["step"].as_str().is_some_and(|s| steps.contains(&s)))
        .filter_map(|e| e["elapsed_ms"].as_u64())
        .sum();
    ms as f64 / 1000.0
}

/// `bench_tool fill <url> admin <password-file> <entries> <prefix> <caches>`.
fn fill(url: &str, password: &Path, entries: usize, prefix: &str) -> Result<()> {
    let out = output(
        Command::new(example("bench_tool"))
            .args(["fill", url, ADMIN.0])
            .arg(password)
            .args([entries.to_string().as_str(), prefix])
            .args(CACHES),
    )?;
    eprintln!("bench: filled {url}: {}", out.trim());
    Ok(())
}

/// P1 and P2 on a real pair.
fn real(entries_p1: usize, entries_p2: usize) -> Result<(Measured, Measured)> {
    let version = VERSIONS[0];
    let pair = start(PairSpec::plain(version, 1), Lifetime::ThisProcess)?;
    let dir = scratch_dir()?;
    let password = dir.join("password");
    std::fs::write(&password, format!("{}\n", ADMIN.1))?;
    let lib = project_root().join("target").join("ispn").join("dist").join(version).join("lib");
    let connection = |site: &str| pair.url(site).replacen("http://", &format!("http://{}:{}@", ADMIN.0, ADMIN.1), 1);
    let (a_url, b_url) = (pair.url("site-a"), pair.url("site-b"));

    // P1: 4 x entries_p1 on the active site; before each run a fresh split with stale data.
    on_pair(&pair, "reset", &password)?;
    fill(&a_url, &password, entries_p1, "user")?;
    let config = write_config(&dir, &a_url, &b_url, "")?;
    let mut site_sync = Vec::new();
    let mut cli = Vec::new();
    for round in 0..ROUNDS {
        for with_cli in [round % 2 == 1, round % 2 == 0] {
            on_pair(&pair, "split", &password)?;
            fill(&b_url, &password, entries_p1 / 4, "stale")?;
            let _ = std::fs::remove_file(dir.join("journal.json"));
            if with_cli {
                let seconds = timed(
                    Command::new(project_root().join("testenv/bench/cli-procedure.sh"))
                        .arg(&lib)
                        .arg(connection("site-a"))
                        .arg(connection("site-b")),
                )?;
                eprintln!("P1: CLI script {seconds:.1} s");
                cli.push(seconds);
            } else {
                let seconds = timed(Command::new(release("site-sync")).arg("--config").arg(&config).args(["run", "--yes"]))?;
                eprintln!("P1: site-sync {seconds:.1} s");
                site_sync.push(seconds);
            }
            on_pair(&pair, "same", &password).context("P1 run left the sites different")?;
        }
    }
    let (ours, theirs) = (median(site_sync.clone()), median(cli.clone()));
    let p1 = Measured {
        json: json!({
            "entries_per_cache": entries_p1, "caches": CACHES.len(), "server": version,
            "site_sync_seconds": ours, "cli_seconds": theirs, "ratio": ours / theirs,
            "site_sync_runs": site_sync, "cli_runs": cli,
        }),
        rows: vec![format!(
            "| P1 whole procedure, {} caches x {entries_p1} entries, real Infinispan {version}, Keycloak scaling excluded | \
             ≤ 1/3 of the CLI script | site-sync {ours:.1} s, CLI script {theirs:.1} s | {:.3} | \
             `site-sync run --yes` vs `testenv/bench/cli-procedure.sh` |",
            CACHES.len(),
            ours / theirs
        )],
    };

    // P2: 4 x entries_p2; the floor from a 10 ms poller, site-sync's push phase from its events.
    on_pair(&pair, "reset", &password)?;
    fill(&a_url, &password, entries_p2, "big")?;
    // Default settings: the push is polled as a user would run it.
    let config = write_config(&dir, &a_url, &b_url, "")?;
    let push_floor = || -> Result<f64> {
        let seconds: f64 = on_pair(&pair, "push-floor", &password)?.trim().parse().context("push-floor output")?;
        on_pair(&pair, "same", &password).context("the floor's push left the sites different")?;
        Ok(seconds)
    };
    // (push phase, verify step, whole run) in seconds.
    let site_sync_push_phase = || -> Result<(f64, f64, f64)> {
        on_pair(&pair, "split", &password)?;
        let _ = std::fs::remove_file(dir.join("journal.json"));
        let started = Instant::now();
        let events =
            output(Command::new(release("site-sync")).arg("--config").arg(&config).args(["-o", "json", "run", "--yes"]))?;
        let whole = started.elapsed().as_secs_f64();
        on_pair(&pair, "same", &password).context("P2 run left the sites different")?;
        let events: Vec<Value> = events.lines().filter_map(|line| serde_json::from_str::<Value>(line).ok()).collect();
        let (phase, verify) = (seconds_in_steps(&events, &["push-state", "await-push"]), seconds_in_steps(&events, &["verify"]));
        if phase == 0.0 || verify == 0.0 {
            bail!("site-sync's JSON events had no finished push or verify step: has the event schema changed?");
        }
        let compared = events.iter().filter(|e| e["type"] == "verified" && e["verdict"]["compared"] == "entries").count();
        if compared != CACHES.len() {
            bail!("the default verification did not compare keys and values of every cache ({compared} did)");
        }
        Ok((phase, verify, whole))
    };
    // The first push after a fill runs on a cold JIT on both servers; it counts for neither side.
    push_floor()?;
    let mut floors = Vec::new();
    let mut phases = Vec::new();
    let mut verifies = Vec::new();
    let mut wholes = Vec::new();
    for round in 0..ROUNDS {
        for floor_side in [round % 2 == 0, round % 2 == 1] {
            if floor_side {
                floors.push(push_floor()?);
                eprintln!("P2: floor {:.2} s", floors[floors.len() - 1]);
            } else {
                let (phase, verify, whole) = site_sync_push_phase()?;
                eprintln!("P2: site-sync push phase {phase:.2} s, verification {verify:.2} s of a {whole:.2} s run");
                phases.push(phase);
                verifies.push(verify);
                wholes.push(whole);
            }
        }
    }
    // What reading every entry costs the servers themselves: the same requests as the verification
    // (all caches of both sites at once), read by curl and thrown away.
    let reads = (0..ROUNDS).map(|_| read_everything(&pair, &CACHES)).collect::<Result<Vec<f64>>>()?;
    let read_floor = median(reads.clone());
    eprintln!("P2: the servers' read of every entry (curl): {read_floor:.2} s");
    // The fallback for values a listing cannot render (16.0.x and Keycloak's authentication
    // sessions): every value read key by key as stored, against the listing, alternating.
    let mut by_listing = Vec::new();
    let mut by_key = Vec::new();
    for _ in 0..ROUNDS {
        for (how, runs) in [("listing", &mut by_listing), ("stored", &mut by_key)] {
            runs.push(read_values(&pair, &password, how, &CACHES, 2 * CACHES.len() * entries_p2)?);
        }
        eprintln!(
            "P2: every value read by listing {:.2} s, key by key {:.2} s",
            by_listing[by_listing.len() - 1],
            by_key[by_key.len() - 1]
        );
    }
    let (listing_read, stored_read) = (median(by_listing.clone()), median(by_key.clone()));
    let (floor, phase) = (median(floors.clone()), median(phases.clone()));
    let shares: Vec<f64> = verifies.iter().zip(&wholes).map(|(v, w)| v / w).collect();
    let (verify, whole, share) = (median(verifies.clone()), median(wholes.clone()), median(shares));
    let p2 = Measured {
        json: json!({
            "entries_per_cache": entries_p2, "caches": CACHES.len(), "server": version,
            "floor_seconds": floor, "site_sync_push_seconds": phase, "overhead": (phase - floor) / floor,
            "floor_runs": floors, "site_sync_runs": phases,
            "verify_seconds": verify, "run_seconds": whole, "verify_share": share,
            "verify_runs": verifies, "run_runs": wholes,
            "read_floor_seconds": read_floor, "read_floor_runs": reads,
            "read_by_listing_seconds": listing_read, "read_by_listing_runs": by_listing,
            "read_key_by_key_seconds": stored_read, "read_key_by_key_runs": by_key,
        }),
        rows: vec![
            format!(
                "| P2 push phase above the server floor, {} caches x {entries_p2} entries, real Infinispan {version} | ≤ 5% | \
                 floor {floor:.2} s, site-sync {phase:.2} s | {:+.1}% | \
                 `bench_tool push-floor` (10 ms poller) vs `site-sync -o json run --yes` (push-state + await-push) |",
                CACHES.len(),
                (phase - floor) / floor * 100.0
            ),
            format!(
                "| P2 default verification (keys and values), {} caches x {entries_p2} entries, real Infinispan {version} | \
                 ≤ 10% of the run | verify {verify:.2} s of a {whole:.2} s run; the servers' read of every entry alone \
                 {read_floor:.2} s ({:.1}%) | {:.1}% | `site-sync -o json run --yes` (verify step vs wall time); curl of the same requests |",
                CACHES.len(),
                read_floor / whole * 100.0,
                share * 100.0
            ),
            format!(
                "| P2 values read key by key as stored (the fallback where a listing cannot render them), {} caches x \
                 {entries_p2} entries, real Infinispan {version} | none set: reported | listing {listing_read:.2} s, key by key \
                 {stored_read:.2} s | x{:.1} | `bench_tool read-values listing` vs `bench_tool read-values stored` (32 reads in \
                 flight per site) |",
                CACHES.len(),
                stored_read / listing_read
            ),
        ],
    };
    pair.stop()?;
    let _ = std::fs::remove_dir_all(dir);
    Ok((p1, p2))
}

/// Seconds to read every entry of `caches` from both sites at once with curl, as the default
/// verification asks for them (the client's request, batch and content negotiation).
fn read_everything(pair: &RunningPair, caches: &[&str]) -> Result<f64> {
    let started = Instant::now();
    let mut readers = Vec::new();
    for site in ["site-a", "site-b"] {
        for cache in caches {
            let url = format!("{}/rest/v2/caches/{cache}?action=entries&batch=10000&content-negotiation=true", pair.url(site));
            readers.push(
                Command::new("curl")
                    .args(["-sSf", "-o", "/dev/null", "-u", &format!("{}:{}", ADMIN.0, ADMIN.1), &url])
                    .spawn()
                    .context("curl is needed for the servers' read floor (Debian: apt-get install curl)")?,
            );
        }
    }
    for mut reader in readers {
        let status = reader.wait()?;
        if !status.success() {
            bail!("curl could not read every entry ({status})");
        }
    }
    Ok(started.elapsed().as_secs_f64())
}

/// Starts `sessions` logins on site-a's Keycloak (the authorization endpoint of the master
/// realm's admin console, each without a cookie and with PKCE, which that client requires): one
/// authentication session each, in site-a's `authenticationSessions` cache, the state a stale
/// site lacks.
fn start_logins(sessions: usize) -> Result<()> {
    use std::io::{Read, Write};
    let port = HTTP_PORTS[0];
    let redirect = format!("http%3A%2F%2F127.0.0.1%3A{port}%2Fadmin%2Fmaster%2Fconsole%2F");
    let path = format!(
        "/realms/master/protocol/openid-connect/auth?client_id=security-admin-console&response_type=code&scope=openid&redirect_uri={redirect}\
         &code_challenge_method=S256&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    );
    for _ in 0..sessions {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).context("Keycloak on site-a")?;
        write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n")?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response)?;
        if !response.starts_with(b"HTTP/1.1 200") {
            let head = String::from_utf8_lossy(&response[..response.len().min(200)]).into_owned();
            bail!("Keycloak on site-a did not start a login: {head}");
        }
    }
    Ok(())
}

/// A run's JSON events, each with when (seconds after the run's start) its line arrived.
struct RunEvents {
    lines: Vec<(f64, Value)>,
}

impl RunEvents {
    fn step_seconds(&self, steps: &[&str]) -> f64 {
        seconds_in_steps(self.lines.iter().map(|(_, e)| e), steps)
    }

    fn at(&self, kind: &str, step: &str) -> Result<f64> {
        self.lines
            .iter()
            .find(|(_, e)| e["type"] == kind && e["step"] == step)
            .map(|(at, _)| *at)
            .with_context(|| format!("site-sync's events have no {kind} for {step}: has the event schema changed?"))
    }
}

/// One P5 run of site-sync: its events as they arrived, and the longest stretch during which
/// the stale site's `/lb-check` (sampled every 100 ms) did not answer 200.
fn site_sync_with_keycloak(config: &Path) -> Result<(RunEvents, f64)> {
    use std::io::BufRead;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let poller = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut samples = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                samples.push((Instant::now(), status_of(HTTP_PORTS[1], "/lb-check") == Some(200)));
                std::thread::sleep(Duration::from_millis(100));
            }
            samples
        })
    };
    let mut child = Command::new(release("site-sync"))
        .arg("--config")
        .arg(config)
        .args(["-o", "json", "run", "--yes"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start site-sync")?;
    let mut lines = Vec::new();
    for line in std::io::BufReader::new(child.stdout.take().context("stdout")?).lines() {
        let line = line?;
        if let Ok(event) = serde_json::from_str::<Value>(&line) {
            lines.push((started.elapsed().as_secs_f64(), event));
        }
    }
    let out = child.wait_with_output()?;
    stop.store(true, Ordering::Relaxed);
    let samples = poller.join().map_err(|_| anyhow::anyhow!("the /lb-check poller panicked"))?;
    if !out.status.success() {
        bail!("site-sync run failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
    }
    // The outage: from the last 200 before the first refusal to the first 200 after it.
    let first_down = samples.iter().position(|(_, up)| !up).context("the stale site's Keycloak never went down")?;
    let back = samples[first_down..].iter().find(|(_, up)| *up).context("the stale site's Keycloak never came back")?;
    let last_up = if first_down == 0 { started } else { samples[first_down - 1].0 };
    Ok((RunEvents { lines }, back.0.duration_since(last_up).as_secs_f64()))
}

/// P5 on a real pair with Keycloak's caches and a real Keycloak per site.
fn keycloak_downtime(sessions: usize) -> Result<Measured> {
    let version = VERSIONS[0];
    let pair = start(PairSpec { keycloak: true, ..PairSpec::plain(version, 1) }, Lifetime::ThisProcess)?;
    let keycloaks = Keycloaks::start(&pair)?;
    let keycloaks_version = keycloaks.version;
    let dir = scratch_dir()?;
    let password = dir.join("password");
    std::fs::write(&password, format!("{}\n", ADMIN.1))?;
    let (a_url, b_url) = (pair.url("site-a"), pair.url("site-b"));
    let script = |action: &str| {
        let command = keycloak_script(action, &keycloaks.run, SITES[1]);
        let args: Vec<String> = command.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        format!("{} {}", command.get_program().to_string_lossy(), args.join(" "))
    };
    // Default settings, as a user would run it; site-b's Keycloak behind the harness's script,
    // its health endpoints known (a start is done once /health/ready answers).
    let config = dir.join("site-sync.yaml");
    std::fs::write(
        &config,
        format!(
            "active: site-a\noffline: site-b\njournal: journal.json\nsites:\n\
             \x20 site-a:\n    infinispan: {{ url: \"{a_url}\", user: {user}, password_file: password }}\n    keycloak:\n      mode: already-stopped\n\
             \x20 site-b:\n    infinispan: {{ url: \"{b_url}\", user: {user}, password_file: password }}\n    keycloak:\n      mode: commands\n\
             \x20     stop: {stop}\n      start: {start}\n      is_stopped: {stopped}\n\
             \x20     url: http://127.0.0.1:{http}\n      management_url: http://127.0.0.1:{management}\n",
            user = ADMIN.0,
            stop = script("stop"),
            start = script("start"),
            stopped = script("is-stopped"),
            http = HTTP_PORTS[1],
            management = crate::keycloak::MANAGEMENT_PORTS[1],
        ),
    )?;
    let tool = |command: &str| on_pair(&pair, command, &password);
    // Same sizes on both sites, checked on the one cache the logins fill (the others may be
    // empty on both, which `same` refuses).
    let same_sessions = || on_caches(&pair, "same", &password, &["authenticationSessions"]).map(drop);
    let prepare = || -> Result<()> {
        tool("reset")?;
        tool("split")?;
        start_logins(sessions)
    };
    // The first push runs on a cold JIT on both servers; it counts for neither side.
    prepare()?;
    tool("push-floor")?;
    let (mut stops, mut transfers, mut starts) = (Vec::new(), Vec::new(), Vec::new());
    let (mut downtimes, mut outages, mut tool_stops, mut works, mut tool_starts) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        for floor_side in [round % 2 == 0, round % 2 == 1] {
            prepare()?;
            if floor_side {
                let stop = timed(&mut keycloak_script("stop", &keycloaks.run, SITES[1]))?;
                if !keycloak_script("is-stopped", &keycloaks.run, SITES[1]).status()?.success() {
                    bail!("the harness's stop returned with site-b's Keycloak still running");
                }
                let transfer: f64 = tool("push-floor")?.trim().parse().context("push-floor output")?;
                let started = Instant::now();
                output(&mut keycloak_script("start", &keycloaks.run, SITES[1]))?;
                keycloaks.wait_ready(1)?;
                let start = started.elapsed().as_secs_f64();
                eprintln!("P5: floor: stop {stop:.1} s + transfer {transfer:.2} s + start {start:.1} s");
                stops.push(stop);
                transfers.push(transfer);
                starts.push(start);
            } else {
                let _ = std::fs::remove_file(dir.join("journal.json"));
                let (events, outage) = site_sync_with_keycloak(&config)?;
                let downtime = events.at("step_finished", "scale-up")? - events.at("step_started", "scale-down")?;
                let (stop, start) = (events.step_seconds(&["scale-down"]), events.step_seconds(&["scale-up"]));
                let work = events.step_seconds(&[
                    "take-offline",
                    "clear-caches",
                    "bring-online",
                    "push-state",
                    "await-push",
                    "clear-push-status",
                    "verify",
                ]);
                eprintln!(
                    "P5: site-sync: down {downtime:.1} s = stop {stop:.1} s + Infinispan work {work:.2} s + start {start:.1} s; \
                     /lb-check refused for {outage:.1} s"
                );
                downtimes.push(downtime);
                outages.push(outage);
                tool_stops.push(stop);
                works.push(work);
                tool_starts.push(start);
            }
            same_sessions().context("P5 run left the sites different")?;
        }
    }
    // Keycloak's real authentication sessions, as equal on both sites as the last run left them,
    // read as a verification reads them: from a listing (which 16.0.x cuts), or key by key as
    // stored (what it falls back to there).
    let (mut session_listings, mut session_keys) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let (listing, listed) = read_values_counted(&pair, &password, "listing", &["authenticationSessions"])?;
        let (by_key, stored) = read_values_counted(&pair, &password, "stored", &["authenticationSessions"])?;
        if listed != stored || listed < sessions {
            bail!("authentication sessions: {listed} values listed, {stored} read key by key, {sessions} logins started");
        }
        eprintln!("P5: {listed} authentication sessions read by listing {listing:.3} s, key by key {by_key:.3} s");
        session_listings.push(listing);
        session_keys.push(by_key);
    }
    let (session_listing, session_by_key) = (median(session_listings.clone()), median(session_keys.clone()));
    let (stop, transfer, start) = (median(stops.clone()), median(transfers.clone()), median(starts.clone()));
    let floor = stop + transfer + start;
    let (downtime, outage) = (median(downtimes.clone()), median(outages.clone()));
    let (tool_stop, work, tool_start) = (median(tool_stops.clone()), median(works.clone()), median(tool_starts.clone()));
    let memory: Vec<Value> =
        Keycloaks::jvm_memory().into_iter().map(|(what, mib)| json!({"jvm": what, "rss_mib": mib})).collect();
    drop(keycloaks);
    pair.stop()?;
    let _ = std::fs::remove_dir_all(dir);
    Ok(Measured {
        json: json!({
            "server": version, "keycloak": keycloaks_version, "auth_sessions": sessions,
            "downtime_seconds": downtime, "lb_check_refused_seconds": outage,
            "stop_seconds": tool_stop, "infinispan_work_seconds": work, "start_seconds": tool_start,
            "floor_seconds": floor, "floor_stop_seconds": stop, "floor_transfer_seconds": transfer, "floor_start_seconds": start,
            "downtime_runs": downtimes, "lb_check_refused_runs": outages, "stop_runs": tool_stops, "work_runs": works,
            "start_runs": tool_starts, "floor_stop_runs": stops, "floor_transfer_runs": transfers, "floor_start_runs": starts,
            "jvm_memory": memory,
            "sessions_read_by_listing_seconds": session_listing, "sessions_read_key_by_key_seconds": session_by_key,
            "sessions_read_by_listing_runs": session_listings, "sessions_read_key_by_key_runs": session_keys,
        }),
        rows: vec![
            format!(
                "| P5 stale site's Keycloak down (stop until ready), Keycloak {} on real Infinispan {version}, {sessions} logins in progress | \
             the floor: stop + server-side transfer + start | site-sync {downtime:.1} s = stop {tool_stop:.1} + Infinispan work {work:.2} + \
             start {tool_start:.1} (`/lb-check` refused {outage:.1} s); floor {floor:.1} s = stop {stop:.1} + transfer {transfer:.2} + \
             start {start:.1} | {:.2} | `site-sync -o json run --yes` (`commands` backend) vs `keycloak.sh stop`, `bench_tool push-floor`, \
             `keycloak.sh start` until ready |",
                keycloaks_version,
                downtime / floor
            ),
            format!(
                "| P5 Keycloak's authentication sessions read as a verification reads them, {sessions} logins in progress per site, \
                 Keycloak {keycloaks_version} on real Infinispan {version} | none set: reported | listing {session_listing:.3} s, \
                 key by key as stored {session_by_key:.3} s | x{:.1} | `bench_tool read-values listing|stored authenticationSessions` |",
                session_by_key / session_listing
            ),
        ],
    })
}

/// One benchmark's raw numbers (for benchmarks.json) and its rows of the table.
struct Measured {
    json: Value,
    rows: Vec<String>,
}

const TABLE_BEGIN: &str = "<!-- cargo xtask bench: table begins -->";
const TABLE_END: &str = "<!-- cargo xtask bench: table ends -->";

/// Replaces the generated table in docs/benchmarks.md, keeping the hand-written analysis around it.
fn write_table(path: &Path, table: &str) -> Result<()> {
    let existing = std::fs::read_to_string(path).unwrap_or_default();
    let generated = format!("{TABLE_BEGIN}\n{table}{TABLE_END}");
    let text = match (existing.find(TABLE_BEGIN), existing.find(TABLE_END)) {
        (Some(begin), Some(end)) if begin < end => {
            format!("{}{generated}{}", &existing[..begin], &existing[end + TABLE_END.len()..])
        }
        _ => format!("# Benchmarks\n\n{generated}\n"),
    };
    std::fs::write(path, text)?;
    Ok(())
}

/// The benchmarks `--only` can pick; P1 and P2 share one real pair and run together.
const PARTS: [&str; 4] = ["real", "diff", "sim", "keycloak"];

/// `cargo xtask bench [--quick] [--only real|diff|sim|keycloak]...`: every benchmark by default,
/// written to docs/benchmarks.md and docs/benchmarks.json; with `--only`, the chosen ones, printed
/// and not written (a partial table would hide the others).
pub fn bench(args: &[&str]) -> Result<()> {
    let (mut quick, mut only) = (false, Vec::new());
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match (*arg, rest.clone().next()) {
            ("--quick", _) => quick = true,
            ("--only", Some(part)) if PARTS.contains(part) => {
                only.push(*part);
                rest.next();
            }
            (other, _) => bail!("unknown bench argument {other:?} (bench takes --quick and --only {})", PARTS.join("|")),
        }
    }
    let wanted = |part: &str| only.is_empty() || only.contains(&part);
    run(cargo().args(["build", "--release", "-p", "sync-cli"]))?;
    run(cargo().args(["build", "--release", "-p", "ispn-xsite", "--example", "bench_tool"]))?;
    run(cargo().args(["build", "--release", "-p", "fake-ispn", "--example", "serve"]))?;
    let machine = machine();
    let mut report = serde_json::Map::new();
    report.insert("machine".to_owned(), json!(machine));
    report.insert("quick".to_owned(), json!(quick));
    let mut measured = Vec::new();
    if wanted("sim") {
        measured.push(("p4", simulation()?));
    }
    if wanted("diff") {
        let sizes: &[usize] = if quick { &[100_000, 1_000_000] } else { &[100_000, 1_000_000, 10_000_000] };
        measured.push(("p3", diff_scaling(sizes)?));
    }
    if wanted("real") {
        let (p1, p2) = if quick { real(2_000, 20_000)? } else { real(10_000, 100_000)? };
        measured.push(("p1", p1));
        measured.push(("p2", p2));
    }
    if wanted("keycloak") {
        measured.push(("p5", keycloak_downtime(if quick { 100 } else { 1_000 })?));
    }
    measured.sort_by_key(|(name, _)| *name);
    let mut rows = Vec::new();
    for (name, m) in measured {
        report.insert(name.to_owned(), m.json);
        rows.extend(m.rows);
    }
    let table = format!(
        "Measured by `cargo xtask bench{}` on {machine}; medians of {ROUNDS} runs, P1, P2 and P5 alternating the two sides. \
         Raw numbers: [benchmarks.json](benchmarks.json).\n\n\
         | Benchmark | Target | Measured | Ratio | Command |\n|---|---|---|---|---|\n{}\n",
        if quick { " --quick" } else { "" },
        rows.join("\n")
    );
    if !only.is_empty() {
        eprintln!("{table}bench: --only given, docs left unchanged");
        return Ok(());
    }
    let docs = project_root().join("docs");
    std::fs::write(docs.join("benchmarks.json"), serde_json::to_string_pretty(&Value::Object(report))? + "\n")?;
    write_table(&docs.join("benchmarks.md"), &table)?;
    eprintln!("bench: wrote docs/benchmarks.md and docs/benchmarks.json");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_table_replaces_the_old_one_and_keeps_the_text_around_it() {
        let dir = std::env::temp_dir().join(format!("xtask-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("benchmarks.md");
        std::fs::write(&path, format!("# B\n\nintro\n\n{TABLE_BEGIN}\nold\n{TABLE_END}\n\nanalysis\n")).unwrap();
        write_table(&path, "new\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("# B\n\nintro\n\n{TABLE_BEGIN}\nnew\n{TABLE_END}\n\nanalysis\n")
        );
        std::fs::remove_file(&path).unwrap();
        write_table(&path, "first\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), format!("# Benchmarks\n\n{TABLE_BEGIN}\nfirst\n{TABLE_END}\n"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_median_of_an_odd_count_is_the_middle_value() {
        assert_eq!(median(vec![3.0, 1.0, 2.0, 10.0, 0.5]), 2.0);
    }
}
