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

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::ispn::{ADMIN, Lifetime, PairSpec, RunningPair, VERSIONS, start};
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
/// same).
fn on_pair(pair: &RunningPair, command: &str, password: &Path) -> Result<String> {
    output(
        Command::new(example("bench_tool"))
            .arg(command)
            .args([pair.url("site-a"), pair.url("site-b")])
            .arg(ADMIN.0)
            .arg(password)
            .args(CACHES),
    )
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
        let step_seconds = |steps: &[&str]| -> f64 {
            let ms: u64 = events
                .iter()
                .filter(|e| e["type"] == "step_finished" && e["step"].as_str().is_some_and(|s| steps.contains(&s)))
                .filter_map(|e| e["elapsed_ms"].as_u64())
                .sum();
            ms as f64 / 1000.0
        };
        let (phase, verify) = (step_seconds(&["push-state", "await-push"]), step_seconds(&["verify"]));
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
                 ≤ 10% of the run | verify {verify:.2} s of a {whole:.2} s run | {:.1}% | \
                 `site-sync -o json run --yes` (verify step vs wall time) |",
                CACHES.len(),
                share * 100.0
            ),
        ],
    };
    pair.stop()?;
    let _ = std::fs::remove_dir_all(dir);
    Ok((p1, p2))
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

/// `cargo xtask bench [--quick]`.
pub fn bench(args: &[&str]) -> Result<()> {
    let quick = match args {
        [] => false,
        ["--quick"] => true,
        other => bail!("unknown bench arguments {other:?} (bench takes only --quick)"),
    };
    run(cargo().args(["build", "--release", "-p", "sync-cli"]))?;
    run(cargo().args(["build", "--release", "-p", "ispn-xsite", "--example", "bench_tool"]))?;
    run(cargo().args(["build", "--release", "-p", "fake-ispn", "--example", "serve"]))?;
    let machine = machine();
    let p4 = simulation()?;
    let sizes: &[usize] = if quick { &[100_000, 1_000_000] } else { &[100_000, 1_000_000, 10_000_000] };
    let p3 = diff_scaling(sizes)?;
    let (p1, p2) = if quick { real(2_000, 20_000)? } else { real(10_000, 100_000)? };

    let report = json!({"machine": machine, "quick": quick, "p1": p1.json, "p2": p2.json, "p3": p3.json, "p4": p4.json});
    let docs = project_root().join("docs");
    std::fs::write(docs.join("benchmarks.json"), serde_json::to_string_pretty(&report)? + "\n")?;
    let rows: Vec<String> = [p1, p2, p3, p4].into_iter().flat_map(|m| m.rows).collect();
    let table = format!(
        "Measured by `cargo xtask bench{}` on {machine}; medians of {ROUNDS} runs, P1 and P2 alternating the two sides. \
         Raw numbers: [benchmarks.json](benchmarks.json).\n\n\
         | Benchmark | Target | Measured | Ratio | Command |\n|---|---|---|---|---|\n{}\n",
        if quick { " --quick" } else { "" },
        rows.join("\n")
    );
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
