//! `cargo xtask lab up|down`: the real lab the Keycloak suite runs on, left running for a person
//! to try site-sync on: a real Infinispan pair with Keycloak's caches, PostgreSQL and a Keycloak
//! per site, with a ready `site-sync.yaml`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::ispn::{ADMIN, Lifetime, PairSpec, RunningPair, VERSIONS, resolve, start};
use crate::keycloak::{HTTP_PORTS, KEYCLOAK_ADMIN, Keycloaks, MANAGEMENT_PORTS, SITES};
use crate::project_root;

/// Where the lab keeps its configuration (the servers keep theirs under target/ispn and
/// target/keycloak).
pub fn dir() -> PathBuf {
    project_root().join("target").join("lab")
}

pub fn command(args: &[&str]) -> Result<()> {
    match args {
        ["up", rest @ ..] => {
            let mut version = VERSIONS[VERSIONS.len() - 1];
            let mut it = rest.iter();
            while let Some(arg) = it.next() {
                match *arg {
                    "--version" => version = resolve(it.next().context("--version needs a value")?)?,
                    other => bail!("unknown option {other}"),
                }
            }
            up(version)
        }
        ["down"] => down(),
        _ => bail!("usage: cargo xtask lab up [--version 15|16] | lab down"),
    }
}

fn up(version: &'static str) -> Result<()> {
    let started = Instant::now();
    let pair = start(PairSpec { keycloak: true, ..PairSpec::plain(version, 1) }, Lifetime::Detached)?;
    let keycloaks = Keycloaks::start(&pair)?;
    let config = write_config(&pair, &keycloaks)?;
    let elapsed = started.elapsed();
    let run = keycloaks.run.clone();
    let keycloak_version = keycloaks.version;
    // Left running for `lab down`.
    std::mem::forget(keycloaks);
    println!("lab: Infinispan {version} and Keycloak {keycloak_version} up in {:.0} s", elapsed.as_secs_f64());
    for (index, site) in SITES.iter().enumerate() {
        println!(
            "  {site}: Infinispan {}  Keycloak http://127.0.0.1:{}/admin (admin/admin)  management http://127.0.0.1:{}",
            pair.url(site),
            HTTP_PORTS[index],
            MANAGEMENT_PORTS[index]
        );
    }
    println!("  Keycloak logs and pids: {}", run.display());
    println!("  configuration: {}", config.display());
    println!("try: site-sync -c {} status", config.display());
    Ok(())
}

/// The configuration a person runs site-sync with against the lab: site-b's Keycloak stopped and
/// started through the harness's script, both Keycloaks' health probed.
fn write_config(pair: &RunningPair, keycloaks: &Keycloaks) -> Result<PathBuf> {
    let dir = dir();
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("password"), format!("{}\n", ADMIN.1))?;
    let script = project_root().join("testenv").join("keycloak").join("keycloak.sh");
    let run = keycloaks.run.display();
    let mut sites = String::new();
    for (index, site) in SITES.iter().enumerate() {
        sites.push_str(&format!(
            "  {site}:\n    infinispan:\n      url: {}\n      user: {}\n      password_file: password\n    keycloak:\n      url: http://127.0.0.1:{}\n      management_url: http://127.0.0.1:{}\n",
            pair.url(site),
            ADMIN.0,
            HTTP_PORTS[index],
            MANAGEMENT_PORTS[index]
        ));
        if index == 1 {
            let action = |what: &str| format!("sh {} {what} {run} {site}", script.display());
            sites.push_str(&format!(
                "      mode: commands\n      stop: {}\n      start: {}\n      is_stopped: {}\n",
                action("stop"),
                action("start"),
                action("is-stopped")
            ));
        }
    }
    let config = dir.join("site-sync.yaml");
    std::fs::write(
        &config,
        format!(
            "# The lab of `cargo xtask lab up` (Keycloak admin: {}/{}).\nactive: site-a\noffline: site-b\nsites:\n{sites}",
            KEYCLOAK_ADMIN.0, KEYCLOAK_ADMIN.1
        ),
    )?;
    Ok(config)
}

fn down() -> Result<()> {
    crate::keycloak::down()?;
    crate::ispn::command(&["down"])
}
