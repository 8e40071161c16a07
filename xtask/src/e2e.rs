//! `cargo xtask e2e`: every real-server suite (contract, end-to-end scenarios, RBAC, Prometheus,
//! Kubernetes, Keycloak) against the servers the harnesses start: the orchestration, kept apart
//! from the harnesses themselves (ispn, keycloak, kube), which do not know of each other's suites.

use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::ispn::{Lifetime, PairSpec, RunningPair, VERSIONS, resolve, start};
use crate::{cargo, run};

/// `cargo xtask e2e [--version V]... [--keycloak]`: every real-server suite, for each version
/// (`--keycloak`: only the Keycloak suite). Fails (never skips) when a server cannot be
/// downloaded or started.
pub fn e2e(args: &[&str]) -> Result<()> {
    let mut versions = Vec::new();
    let mut only_keycloak = false;
    let mut only_kube = false;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match *arg {
            "--version" => versions.push(resolve(it.next().context("--version needs a value")?)?),
            "--keycloak" => only_keycloak = true,
            "--kube" => only_kube = true,
            other => bail!("unknown option {other}"),
        }
    }
    if only_keycloak && only_kube {
        bail!("--keycloak and --kube each select one suite; give one of them, or neither for every suite");
    }
    if versions.is_empty() {
        versions = if only_kube { vec![VERSIONS[VERSIONS.len() - 1]] } else { VERSIONS.to_vec() };
    }
    // Build first, so that servers are not kept waiting for the compiler. Every cargo command
    // here selects the whole workspace, like `cargo xtask ci` does: selecting single packages
    // changes feature unification and rebuilds half the dependency graph.
    run(cargo().args(["test", "--workspace", "--test", "it", "--no-run"]))?;
    let started = Instant::now();
    let mut timings = Vec::new();
    let kube = if only_keycloak {
        None
    } else {
        let t = Instant::now();
        let kube = crate::kube::attach_or_start()?;
        let ready = t.elapsed();
        kube_suite(&kube)?;
        timings.push(format!(
            "{:<28} ready in {:>5.1} s, keycloak-scale suite done in {:>5.1} s",
            "kubernetes",
            ready.as_secs_f64(),
            t.elapsed().as_secs_f64()
        ));
        Some(kube)
    };
    for version in versions {
        let specs = if only_keycloak {
            Vec::new()
        } else if only_kube {
            vec![PairSpec::plain(version, 1)]
        } else {
            vec![PairSpec::plain(version, 1), PairSpec { tls: true, ..PairSpec::plain(version, 1) }, PairSpec::plain(version, 2)]
        };
        for spec in specs {
            let t = Instant::now();
            let pair = start(spec.clone(), Lifetime::ThisProcess)?;
            let ready = t.elapsed();
            if !only_kube {
                contract(&pair, &[])?;
            }
            if let (false, 1, Some(kube)) = (spec.tls, spec.nodes, &kube) {
                scenarios(&pair, kube)?;
                // The Prometheus test holds a split brain for its alert's 2 minutes: once, on the
                // newest line, is enough to prove the alert path.
                real_only(&pair, kube, version == VERSIONS[VERSIONS.len() - 1])?;
                if version == VERSIONS[VERSIONS.len() - 1] {
                    image_against(&pair)?;
                }
            }
            if spec.tls {
                // Operators run the CLI with --trustall: the insecure mode must work too.
                contract(&pair, &[("SITE_SYNC_CONTRACT_CA_FILE", ""), ("SITE_SYNC_CONTRACT_INSECURE", "1")])?;
            }
            pair.stop()?;
            timings.push(format!(
                "{:<28} ready in {:>5.1} s, suites done in {:>5.1} s",
                spec.variant(),
                ready.as_secs_f64(),
                t.elapsed().as_secs_f64()
            ));
        }
        if !only_kube {
            timings.push(keycloak_suite(version)?);
        }
    }
    if let Some(kube) = &kube {
        let memory: Vec<String> = kube.memory().iter().map(|(what, mib)| format!("{what} {mib:.0} MiB")).collect();
        timings.push(format!("{:<28} memory: {}", "kubernetes", memory.join(", ")));
    }
    for line in &timings {
        eprintln!("e2e: {line}");
    }
    eprintln!("e2e: every real-server suite passed in {:.0?}", started.elapsed());
    Ok(())
}

/// The Keycloak suite on one Infinispan line: both Keycloaks up on the pair, then the tests,
/// which each leave a `<name>.passed` file in the run directory (a test that cannot find the
/// servers does nothing, so their absence fails the suite).
fn keycloak_suite(version: &'static str) -> Result<String> {
    let spec = PairSpec { keycloak: true, ..PairSpec::plain(version, 1) };
    let t = Instant::now();
    let pair = start(spec.clone(), Lifetime::ThisProcess)?;
    let keycloaks = crate::keycloak::Keycloaks::start(&pair)?;
    let ready = t.elapsed();
    let memory = crate::keycloak::Keycloaks::jvm_memory();
    let mut command = cargo();
    command.args(["test", "--workspace", "--test", "it", "--", "--exact", "--test-threads", "1", "--nocapture"]);
    // By exact name: only the tests that need the servers.
    command.args(crate::keycloak::TESTS.map(|test| format!("keycloak::{test}")));
    for (k, v) in pair.env().into_iter().chain(keycloaks.env()) {
        command.env(k, v);
    }
    run(&mut command).with_context(|| format!("the Keycloak suite failed on the real {} pair", spec.variant()))?;
    for test in crate::keycloak::TESTS {
        if !keycloaks.run.join(format!("{test}.passed")).exists() {
            bail!("the Keycloak test {test} did not run against the servers (no {test}.passed in {})", keycloaks.run.display());
        }
    }
    let starts: Vec<String> = keycloaks.ready_after.iter().map(|(site, s)| format!("{site} {s:.1} s")).collect();
    let jvms: Vec<String> = memory.iter().map(|(what, mib)| format!("{what} {mib:.0} MiB")).collect();
    drop(keycloaks);
    pair.stop()?;
    Ok(format!(
        "{:<28} ready in {:>5.1} s (Keycloak {}), suites done in {:>5.1} s; JVMs: {}",
        spec.variant(),
        ready.as_secs_f64(),
        starts.join(", "),
        t.elapsed().as_secs_f64(),
        jvms.join(", ")
    ))
}

/// The site-sync binary's end-to-end scenarios (split brain, kills, a dying site) on this pair.
/// The end-to-end scenarios: the real pair, Keycloak scaled through the real API server.
fn scenarios(pair: &RunningPair, kube: &crate::kube::RunningKube) -> Result<()> {
    let mut command = cargo();
    command.args(["test", "--workspace", "--test", "it", "--", "scenarios::", "--test-threads", "1", "--nocapture"]);
    for (k, v) in pair.env().into_iter().chain(kube.env()) {
        command.env(k, v);
    }
    run(&mut command).with_context(|| format!("the end-to-end scenarios failed against the real {} pair", pair.spec.variant()))
}

/// The suites that exist only against real servers (ignored tests: they cannot run without them,
/// and fail here rather than pass unseen): the documented Role proven on the real API server,
/// and a real Prometheus alerting on a real split brain through `site-sync watch`.
fn real_only(pair: &RunningPair, kube: &crate::kube::RunningKube, prometheus: bool) -> Result<()> {
    let mut command = cargo();
    command.args(["test", "--workspace", "--test", "it", "--", "rbac::", "--ignored", "--test-threads", "1", "--nocapture"]);
    if prometheus {
        command.arg("prometheus::");
    }
    for (k, v) in pair.env().into_iter().chain(kube.env()) {
        command.env(k, v);
    }
    run(&mut command)
        .with_context(|| format!("the RBAC or Prometheus suite failed against the real {} pair", pair.spec.variant()))
}

/// keycloak-scale's suite (scaling, pods, CRD versions, Secrets, Lease, port-forward, 403s)
/// against the real API server: the same tests as on the fake.
fn kube_suite(kube: &crate::kube::RunningKube) -> Result<()> {
    let mut command = cargo();
    command.args(["test", "--workspace", "--test", "it", "--", "scaling::", "lock_and_secrets::"]);
    for (k, v) in kube.env() {
        command.env(k, v);
    }
    run(&mut command).context("keycloak-scale's suite failed against the real API server")
}

fn contract(pair: &RunningPair, overrides: &[(&str, &str)]) -> Result<()> {
    let mut command = cargo();
    command.args(["test", "--workspace", "--test", "it", "--", "contract::", "--test-threads", "1"]);
    for (k, v) in pair.env() {
        command.env(k, v);
    }
    for (k, v) in overrides {
        command.env(k, v);
    }
    run(&mut command).with_context(|| format!("the contract suite failed against the real {} pair", pair.spec.variant()))
}

/// The container image, run as it runs in a cluster (non-root, read-only root filesystem), on the
/// host's network against the real pair: one poll of `watch --once` must read both sites.
fn image_against(pair: &RunningPair) -> Result<()> {
    let tag = crate::image::build_image(crate::dist::Build::Tested)?;
    let dir = crate::project_root().join("target/image/run");
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("password"), format!("{}\n", crate::ispn::ADMIN.1))?;
    let site = |name: &str| {
        format!(
            "  {name}:\n    infinispan: {{ url: \"{}\", user: {}, password_file: password }}\n    keycloak: {{ mode: already-stopped }}\n",
            pair.url(name),
            crate::ispn::ADMIN.0
        )
    };
    std::fs::write(
        dir.join("site-sync.yaml"),
        format!("active: site-a\noffline: site-b\nsites:\n{}{}", site("site-a"), site("site-b")),
    )?;
    // The mounted directory is read by the image's user, 65532.
    for file in ["", "password", "site-sync.yaml"] {
        let path = dir.join(file);
        let mode = if file.is_empty() { 0o755 } else { 0o644 };
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(mode))?;
    }
    let started = Instant::now();
    let output = crate::image::podman()
        .args(crate::image::run_flags())
        .arg("-v")
        .arg(format!("{}:/config:ro", dir.display()))
        .arg(&tag)
        .args(["--config", "/config/site-sync.yaml", "watch", "--once"])
        .output()?;
    let metrics = String::from_utf8_lossy(&output.stdout);
    let up = |site: &str| metrics.lines().any(|l| l == format!("site_sync_site_up{{site=\"{site}\"}} 1"));
    if !output.status.success() || !up("site-a") || !up("site-b") {
        bail!("the image's watch --once did not read both real sites:\n{metrics}\n{}", String::from_utf8_lossy(&output.stderr));
    }
    eprintln!(
        "e2e: the image {tag} read both sites of the real {} pair in {:.1} s (watch --once, user 65532, read-only root)",
        pair.spec.variant(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
