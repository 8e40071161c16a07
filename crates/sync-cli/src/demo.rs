//! `site-sync demo`: the whole procedure against an embedded pair, with no setup. Two simulated
//! Infinispan sites (fake-ispn over HTTP on loopback) and two simulated Kubernetes clusters with
//! a Keycloak CR each (the fake API server, reached by the real kube-rs client through a
//! generated kubeconfig). It creates a split brain with divergent data, shows the status, runs
//! the same code path as `site-sync run --yes`, verifies, and compares both sites key by key.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::time::Duration;

use fake_ispn::{ClusterSpec, FakeCluster, KEYCLOAK_26_CACHES, TransferSpec};
use ispn_xsite::{CacheName, SiteAction, SiteApi, SiteName};
use keycloak_scale::fake::{FakeKube, Timing, kubeconfig};
use serde_json::json;

use crate::cli::Change;
use crate::commands::{load_path, run, status, verify};
use crate::config::Overrides;
use crate::exit::{CliError, Exit};
use crate::output::{Format, json_line};

fn say(format: Format, text: &str) {
    match format {
        Format::Text => eprintln!("demo: {text}"),
        Format::Json => json_line(json!({"type": "demo", "message": text})),
    }
}

fn io(error: std::io::Error) -> CliError {
    CliError::new(Exit::Failed, format!("demo: {error}"))
}

/// Runs the demo.
pub async fn demo(format: Format, entries: usize) -> Result<Exit, CliError> {
    let dir = tempfile::tempdir().map_err(io)?;
    let spec = ClusterSpec::two_sites("site-a", "site-b").transfer(TransferSpec {
        chunk_size: 16,
        entries_per_second: Some(40_000),
        ..TransferSpec::default()
    });
    let ispn = FakeCluster::start(spec).await.map_err(io)?;
    let timing = Timing {
        reconcile: Duration::from_millis(100),
        pod_ready: Duration::from_millis(700),
        pod_terminate: Duration::from_millis(500),
    };
    let kube_a = FakeKube::new().timing(timing).keycloak("keycloak", "keycloak", 3);
    let kube_b = FakeKube::new().timing(timing).keycloak("keycloak", "keycloak", 3);
    let (served_a, served_b) = (kube_a.serve().await.map_err(io)?, kube_b.serve().await.map_err(io)?);
    std::fs::write(
        dir.path().join("kubeconfig"),
        kubeconfig(&[("site-a", &served_a.url(), "keycloak"), ("site-b", &served_b.url(), "keycloak")]),
    )
    .map_err(io)?;
    std::fs::write(dir.path().join("password"), fake_ispn::ADMIN_PASSWORD).map_err(io)?;
    let site = |name: &str| {
        format!(
            "  {name}:\n    infinispan:\n      url: {}\n      user: admin\n      password_file: password\n    kubernetes:\n      kubeconfig: kubeconfig\n      context: {name}\n      namespace: keycloak\n      keycloak: keycloak\n",
            ispn.url(name)
        )
    };
    let config = format!(
        "active: site-a\noffline: site-b\njournal: journal.json\nsettings:\n  poll_interval: 100ms\nsites:\n{}{}",
        site("site-a"),
        site("site-b")
    );
    let config_path = dir.path().join("site-sync.yaml");
    std::fs::write(&config_path, config).map_err(io)?;
    let resolved = load_path(&config_path, &Overrides::default())?;

    say(format, "two simulated sites (Infinispan 15.0 behaviour, Keycloak 26 caches, Keycloak Operator with 3 instances each)");
    let (a, b) = (ispn.site("site-a"), ispn.site("site-b"));
    let (name_a, name_b) = (SiteName::new("site-a").expect("valid"), SiteName::new("site-b").expect("valid"));
    let failure = |e: ispn_xsite::Error| CliError::new(Exit::Failed, format!("demo: {e}"));
    for cache in KEYCLOAK_26_CACHES {
        let cache = CacheName::new(cache).expect("valid");
        a.cache_site_action(&cache, &name_b, SiteAction::TakeOffline).await.map_err(failure)?;
        b.cache_site_action(&cache, &name_a, SiteAction::TakeOffline).await.map_err(failure)?;
        let mut world = ispn.world();
        world.load(0, &cache, (0..entries).map(|i| (format!("session-{i:06}"), format!("active-{i}"))));
        world.load(1, &cache, (0..entries / 2).map(|i| (format!("session-{i:06}"), format!("stale-{i}"))));
        world.load(1, &cache, (0..entries / 4).map(|i| (format!("ghost-{i:06}"), "stale".to_owned())));
    }
    say(
        format,
        &format!(
            "split brain: each site took the other offline; site-a holds {entries} entries per cache, site-b {} of which {} are stale and {} exist only there",
            entries / 2 + entries / 4,
            entries / 2,
            entries / 4
        ),
    );
    say(format, "status before the run:");
    status(format, &resolved).await?;

    say(format, "running the procedure (what `site-sync run --yes` does):");
    let change = Change { yes: true, ..Change::default() };
    let exit = run(format, &resolved, change, false).await?;
    if exit != Exit::Success {
        return Ok(exit);
    }
    if format == Format::Text {
        say(
            format,
            "the run's report, from its journal alone (what `site-sync report` prints; the files above go with the demo's temporary directory):",
        );
        let journal = std::fs::read_to_string(&resolved.journal).map_err(io)?;
        let journal = sync_core::Journal::from_json("journal.json", &journal)
            .map_err(|e| CliError::new(Exit::Failed, format!("demo: {e}")))?;
        print!("{}", crate::report::render(&journal, crate::report::ReportFormat::Text, None));
    }
    say(format, "`site-sync verify` on its own (keys and values):");
    let verified = verify(format, &resolved, None, false).await?;
    say(format, "status after the run:");
    status(format, &resolved).await?;

    let (active, offline) = (ispn.snapshot("site-a").entries, ispn.snapshot("site-b").entries);
    let equal = active == offline;
    say(
        format,
        &format!(
            "independent check of the simulated sites: site-b {} site-a key by key and value by value",
            if equal { "equals" } else { "DOES NOT equal" }
        ),
    );
    if !equal || verified != Exit::Success {
        return Ok(Exit::Differ);
    }
    ispn.shutdown().await;
    Ok(Exit::Success)
}
