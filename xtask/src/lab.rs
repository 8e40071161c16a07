//! `cargo xtask lab up|split|down`: the real lab the Keycloak suite runs on, left running for a
//! person to try site-sync on: a real Infinispan pair with Keycloak's caches, PostgreSQL and a
//! Keycloak per site, with a ready `site-sync.yaml`; `split` makes a real split brain with login
//! state on both sides.

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
        ["split"] => split(),
        ["down"] => down(),
        _ => bail!("usage: cargo xtask lab up [--version 15|16] | lab split | lab down"),
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

/// A call to a lab server with curl: (HTTP status, body).
fn curl(args: &[&str]) -> Result<(u16, String)> {
    let output = std::process::Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}", "--max-time", "30"])
        .args(args)
        .output()
        .context("curl is needed for `lab split`")?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    Ok((code.trim().parse().unwrap_or(0), body.to_owned()))
}

/// `cargo xtask lab split`: on a running lab, a realm `lab` (users alice and bob, a public client
/// `cli`), then a split brain as fencing makes it (each site takes the other offline), then login
/// state on each side: alice fails three logins on site-a, bob two on site-b, and site-a holds a
/// login in progress.
fn split() -> Result<()> {
    let keycloak = |index: usize| format!("http://127.0.0.1:{}", HTTP_PORTS[index]);
    let (code, body) = curl(&[
        &format!("{}/realms/master/protocol/openid-connect/token", keycloak(0)),
        "-d",
        "grant_type=password",
        "-d",
        "client_id=admin-cli",
        "-d",
        &format!("username={}", KEYCLOAK_ADMIN.0),
        "-d",
        &format!("password={}", KEYCLOAK_ADMIN.1),
    ])?;
    if code != 200 {
        bail!("Keycloak on site-a does not answer as the lab's (HTTP {code}): is the lab up? `cargo xtask lab up`");
    }
    let token: serde_json::Value = serde_json::from_str(&body)?;
    let bearer = format!("Authorization: Bearer {}", token["access_token"].as_str().unwrap_or_default());
    let admin = |path: &str, body: serde_json::Value| -> Result<u16> {
        let url = format!("{}/admin/realms{path}", keycloak(0));
        Ok(curl(&["-X", "POST", "-H", &bearer, "-H", "Content-Type: application/json", "-d", &body.to_string(), &url])?.0)
    };
    let realm = serde_json::json!({
        "realm": "lab", "enabled": true, "bruteForceProtected": true, "failureFactor": 30,
        "quickLoginCheckMilliSeconds": 1, "minimumQuickLoginWaitSeconds": 1, "accessCodeLifespanLogin": 1800,
    });
    match admin("", realm)? {
        201 => {
            admin(
                "/lab/clients",
                serde_json::json!({"clientId": "cli", "publicClient": true, "directAccessGrantsEnabled": true, "redirectUris": ["*"]}),
            )?;
            for user in ["alice", "bob"] {
                admin(
                    "/lab/users",
                    serde_json::json!({
                        "username": user, "enabled": true, "firstName": user, "lastName": "Lab", "email": format!("{user}@example.com"),
                        "emailVerified": true, "credentials": [{"type": "password", "value": "pw", "temporary": false}],
                    }),
                )?;
            }
        }
        409 => eprintln!("lab: the realm `lab` exists already; adding login state to it"),
        code => bail!("creating the realm `lab` failed (HTTP {code})"),
    }
    for (index, other) in [(0, "site-b"), (1, "site-a")] {
        let port = if index == 0 { 11222 } else { 11322 };
        for cache in keycloak_caches() {
            let url = format!("http://127.0.0.1:{port}/rest/v2/caches/{cache}/x-site/backups/{other}?action=take-offline");
            let (code, _) = curl(&["--digest", "-u", &format!("{}:{}", ADMIN.0, ADMIN.1), "-X", "POST", &url])?;
            if code != 200 {
                bail!("taking {cache}'s backup to {other} offline failed (HTTP {code})");
            }
        }
    }
    for (index, user, times) in [(0, "alice", 3), (1, "bob", 2)] {
        for _ in 0..times {
            curl(&[
                &format!("{}/realms/lab/protocol/openid-connect/token", keycloak(index)),
                "-d",
                "grant_type=password",
                "-d",
                "client_id=cli",
                "-d",
                &format!("username={user}"),
                "-d",
                "password=wrong",
            ])?;
            // Keycloak records a failure after answering; one at a time keeps the count exact.
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
    }
    let (code, _) = curl(&[&format!(
        "{}/realms/lab/protocol/openid-connect/auth?client_id=cli&response_type=code&scope=openid&redirect_uri=http://127.0.0.1/cb",
        keycloak(0)
    )])?;
    if code != 200 {
        bail!("opening a login on site-a failed (HTTP {code})");
    }
    println!(
        "lab: split brain: each site has the other offline; site-a: alice failed 3 logins and a login is in progress; site-b: bob failed 2"
    );
    println!("try: site-sync -c {} status", dir().join("site-sync.yaml").display());
    Ok(())
}

/// The caches Keycloak 26 replicates between the sites.
fn keycloak_caches() -> [&'static str; 4] {
    ["actionTokens", "authenticationSessions", "loginFailures", "work"]
}
