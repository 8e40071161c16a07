//! Project automation (<https://github.com/matklad/cargo-xtask>): `cargo xtask <task>`.
//!
//! - `ci`: what CI runs: formatting, `tidy`, lints, the test suite, then `e2e` for both real versions.
//! - `ispn up|down|status`: a real two-site Infinispan Server pair on 127.0.0.1 (testenv/).
//! - `e2e`: the contract suite, the end-to-end scenarios and the Keycloak suite against real
//!   servers (Infinispan pairs; Keycloak and PostgreSQL: `keycloak`).
//! - `kube up|down|status`: a real kube-apiserver with etcd and kwok on 127.0.0.1 (testenv/kube).
//! - `bench`: the benchmarks behind docs/benchmarks.md.
//! - `mutants`: mutation testing behind docs/mutants.md.
//! - `tidy`: the architecture's rooms, checked mechanically.
//! - `alerts`: the Prometheus alert rules, checked and unit-tested with promtool.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod bench;
mod dist;
mod e2e;
mod image;
mod ispn;
mod keycloak;
mod kube;
mod lab;
mod mutants;
mod process;
mod tidy;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

const USAGE: &str = "usage: cargo xtask <task>

tasks:
  ci                               formatting, tidy, clippy, tests, then e2e for every real version
  tidy                             check the architecture's rooms, the TLS stack and the README
  alerts                           check and unit-test deploy/prometheus's alert rules (promtool)
  ispn up [--version V] [--tls] [--nodes N] [--keycloak]
                                   start a real two-site Infinispan pair on 127.0.0.1
  ispn down                        stop every pair started by `ispn up`
  ispn status                      show the pairs started by `ispn up`
  ispn link cut|heal               partition the pair's cross-site bridge (iptables on loopback, root)
  e2e [--version V]... [--keycloak | --kube]
                                   run the contract suite, the end-to-end scenarios (Keycloak scaled
                                   through a real API server), the RBAC suite and the Keycloak suite
                                   on real servers (default: every supported version; --keycloak:
                                   the Keycloak suite only; --kube: the Kubernetes-backed suites
                                   only, on the newest version, reusing a `kube up` harness)
  keycloak down                    stop Keycloaks and PostgreSQL an interrupted Keycloak suite left
  lab up [--version V]             a real lab left running: an Infinispan pair with Keycloak's caches,
                                   PostgreSQL and a Keycloak per site, and a ready site-sync.yaml
  lab split                        a real split brain with login state on both sites of the lab
  lab down                         stop it
  dist [--tested]                  the release tarball (binary, completions, man page, license,
                                   checksums) in target/packages, checked outside the checkout
                                   (--tested: the test build's binary, as CI packs it)
  image [--tested]                 the container image (podman, nothing pulled), run as it runs
                                   in a cluster
  kube build                       build kube-apiserver, etcd and kwok from the Go module proxy (cached)
  kube up                          start a real API server (etcd, kwok) on 127.0.0.1:16443 with the
                                   Keycloak CRD and a namespace per site; prints the kubeconfig
  kube down                        stop it
  kube status                      show its processes, memory and readiness
  bench [--quick] [--only PART]... measure P1-P5 and write docs/benchmarks.md and .json
                                   (--quick: smaller sizes, for trying the harness; --only: real
                                   (P1, P2), diff (P3), sim (P4) or keycloak (P5), printed only)
  mutants [--only GROUP] [--iterate]
                                   mutation testing of the procedure, records and client groups
                                   (cargo-mutants, pinned; hours on 2 cores, not part of ci); writes
                                   docs/mutants.md; --iterate: only what the last run did not catch

versions: 15 (15.0.21.Final, Keycloak 26.0-26.4), 16 (16.0.7, Keycloak 26.6+), or an exact version";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["ci", rest @ ..] => ci(rest),
        ["ispn", rest @ ..] => ispn::command(rest),
        ["e2e", rest @ ..] => e2e::e2e(rest),
        ["keycloak", "down"] => keycloak::down(),
        ["lab", rest @ ..] => lab::command(rest),
        ["dist", rest @ ..] => dist::dist(rest),
        ["image", rest @ ..] => image::image(rest),
        ["kube", rest @ ..] => kube::command(rest),
        ["bench", rest @ ..] => bench::bench(rest),
        ["mutants", rest @ ..] => mutants::mutants(rest),
        ["tidy", rest @ ..] => tidy::tidy(rest),
        ["alerts", rest @ ..] => alerts(rest),
        [] | ["help" | "--help" | "-h"] => {
            println!("{USAGE}");
            Ok(())
        }
        other => bail!("unknown task {other:?}\n\n{USAGE}"),
    }
}

/// `promtool check rules` and `promtool test rules` on deploy/prometheus (Debian's `prometheus`
/// package ships promtool; `.ci/run` installs it).
fn alerts(args: &[&str]) -> Result<()> {
    if !args.is_empty() {
        bail!("alerts takes no arguments");
    }
    let dir = project_root().join("deploy/prometheus");
    for (what, file) in [("check", "alerts.yml"), ("test", "alerts.test.yml")] {
        let status = Command::new("promtool")
            .args([what, "rules", file])
            .current_dir(&dir)
            .status()
            .context("promtool is required for the alert rule tests (Debian: apt-get install prometheus)")?;
        if !status.success() {
            bail!("promtool {what} rules {} failed ({status})", dir.join(file).display());
        }
    }
    Ok(())
}

/// What a user installs, checked on the tree the tests built: `cargo install --path` (in the test
/// profile, into a scratch root, on the same target directory: no second full build), and the
/// release tarball's packing (of the test build's binary: `cargo xtask dist` makes the release).
fn install_and_pack() -> Result<()> {
    let started = std::time::Instant::now();
    let root = project_root().join("target/install-check");
    let _ = std::fs::remove_dir_all(&root);
    run(cargo()
        .args(["install", "--locked", "--debug", "--path", "crates/sync-cli", "--root"])
        .arg(&root)
        .arg("--target-dir")
        .arg(project_root().join("target")))?;
    let version = Command::new(root.join("bin/site-sync")).arg("--version").output()?;
    if !version.status.success() {
        bail!("the installed site-sync does not run");
    }
    eprintln!(
        "ci: `cargo install --path crates/sync-cli` works ({}) in {:.0} s",
        String::from_utf8_lossy(&version.stdout).trim(),
        started.elapsed().as_secs_f64()
    );
    let tarball = dist::pack(dist::Build::Tested)?;
    dist::check(&tarball)
}

/// The workspace root (the parent of this crate's manifest directory).
pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

/// Runs a command from the project root, failing with its exit status.
pub fn run(command: &mut Command) -> Result<()> {
    eprintln!("$ {command:?}");
    let status = command.current_dir(project_root()).status().with_context(|| format!("cannot start {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed with {status}");
    }
    Ok(())
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()))
}

fn ci(args: &[&str]) -> Result<()> {
    if !args.is_empty() {
        bail!("ci takes no arguments");
    }
    let started = std::time::Instant::now();
    // The Kubernetes binaries build (minutes, cold) beside the Rust checks, whose test phase
    // leaves a core idle; the e2e suites need them only at the end.
    std::fs::create_dir_all(project_root().join("target/kube"))?;
    let go_log = project_root().join("target/kube/build.log");
    let go_build = {
        let log = go_log.clone();
        std::thread::spawn(move || {
            let t = std::time::Instant::now();
            kube::ensure_binaries_to(Some(&log)).map(|_| t.elapsed())
        })
    };
    run(cargo().args(["fmt", "--all", "--check"]))?;
    tidy::tidy(&[])?;
    alerts(&[])?;
    run(cargo().args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]))?;
    run(cargo().args(["test", "--workspace", "--all-targets"]))?;
    install_and_pack()?;
    let waited = std::time::Instant::now();
    let built = go_build.join().map_err(|_| anyhow::anyhow!("the Kubernetes build thread panicked"))??;
    eprintln!(
        "ci: Kubernetes binaries ready ({:.0} s building, {:.0} s waited for; log {})",
        built.as_secs_f64(),
        waited.elapsed().as_secs_f64(),
        go_log.display()
    );
    e2e::e2e(&[])?;
    eprintln!("ci: everything passed in {:.0?}", started.elapsed());
    Ok(())
}
