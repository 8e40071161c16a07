//! `site-sync watch`: the metrics it exposes for each state of the pair, what one poll costs, and
//! the served endpoints, against the fake pair.

use std::time::Duration;

use crate::support::*;

/// The metrics of one poll (`watch --once`), with the values that change from run to run (times,
/// durations) replaced, and each family's series sorted (the encoder keeps no order).
fn stable(metrics: &str) -> String {
    let varying = ["site_sync_last_poll_timestamp_seconds ", "site_sync_last_poll_duration_milliseconds "];
    let mut out = Vec::new();
    let mut series: Vec<String> = Vec::new();
    for line in metrics.lines() {
        if line.starts_with('#') {
            series.sort();
            out.append(&mut series);
            out.push(line.to_owned());
        } else {
            series.push(match varying.iter().find(|name| line.starts_with(**name)) {
                Some(name) => format!("{name}<varies>"),
                None => line.to_owned(),
            });
        }
    }
    series.sort();
    out.append(&mut series);
    out.join("\n")
}

pub fn value(metrics: &str, series: &str) -> Option<String> {
    metrics.lines().find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')).map(str::to_owned))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_poll_exposes_every_metric_for_a_healthy_pair() {
    let env = Env::start().await;
    let out = env.run(&["watch", "--once"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.ends_with("# EOF\n"), "OpenMetrics text ends with # EOF: {}", out.stdout);
    insta::assert_snapshot!("watch_healthy", stable(&out.stdout));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_brain_and_then_its_heal_show_in_the_diagnosis_and_the_last_sync() {
    let env = Env::start().await;
    env.split_brain(20).await;
    let out = env.run(&["watch", "--once"]).await;
    assert_eq!(value(&out.stdout, r#"site_sync_diagnosis{state="split-brain"}"#).as_deref(), Some("1"), "{}", out.stdout);
    assert_eq!(value(&out.stdout, r#"site_sync_diagnosis{state="healthy"}"#).as_deref(), Some("0"));
    let offline = r#"site_sync_backup_status{cache="work",site="site-a",backup="site-b",status="offline"}"#;
    assert_eq!(value(&out.stdout, offline).as_deref(), Some("1"), "{}", out.stdout);
    assert_eq!(value(&out.stdout, r#"site_sync_cache_entries{cache="work",site="site-b"}"#).as_deref(), Some("15"));
    assert!(!out.stdout.contains("site_sync_last_sync_status{"), "no run yet, no last sync: {}", out.stdout);

    assert_eq!(env.run(&["run", "--yes"]).await.code, 0);
    let out = env.run(&["watch", "--once"]).await;
    assert_eq!(value(&out.stdout, r#"site_sync_diagnosis{state="healthy"}"#).as_deref(), Some("1"), "{}", out.stdout);
    assert_eq!(value(&out.stdout, r#"site_sync_last_sync_status{status="succeeded"}"#).as_deref(), Some("1"));
    assert_eq!(value(&out.stdout, "site_sync_last_sync_caches").as_deref(), Some("4"));
    let ok = r#"site_sync_push_status{cache="work",site="site-a",backup="site-b",status="ok"}"#;
    assert_eq!(value(&out.stdout, ok).as_deref(), Some("0"), "the run cleared the push status: {}", out.stdout);
    let idle = r#"site_sync_push_status{cache="work",site="site-a",backup="site-b",status="idle"}"#;
    assert_eq!(value(&out.stdout, idle).as_deref(), Some("1"), "{}", out.stdout);

    // The alert rules only use series that watch exposes.
    let rules = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/prometheus/alerts.yml")).unwrap();
    let rules: serde_json::Value = serde_saphyr::from_str(&rules).unwrap();
    let exprs: String = rules["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|rule| rule["expr"].as_str().unwrap().to_owned())
        .collect::<Vec<_>>()
        .join("\n");
    let used: std::collections::BTreeSet<&str> =
        regex_lite::Regex::new(r"site_sync_[a-z_]+").unwrap().find_iter(&exprs).map(|m| m.as_str()).collect();
    assert!(used.len() >= 7, "{used:?}");
    let exposed: std::collections::BTreeSet<&str> =
        out.stdout.lines().filter_map(|l| l.strip_prefix("# TYPE ")).filter_map(|l| l.split(' ').next()).collect();
    let missing: Vec<&&str> = used.iter().filter(|name| !exposed.iter().any(|e| name.starts_with(*e))).collect();
    assert!(missing.is_empty(), "alerts.yml uses {missing:?}, which watch does not expose ({exposed:?})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_site_is_a_state_not_an_exit() {
    let mut env = Env::start().await;
    env.ispn.kill("site-b").await;
    let out = env.run(&["watch", "--once"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(value(&out.stdout, r#"site_sync_site_up{site="site-b"}"#).as_deref(), Some("0"), "{}", out.stdout);
    assert_eq!(value(&out.stdout, r#"site_sync_site_up{site="site-a"}"#).as_deref(), Some("1"));
    assert_eq!(value(&out.stdout, r#"site_sync_diagnosis{state="unreachable"}"#).as_deref(), Some("1"));
    assert_eq!(value(&out.stdout, r#"site_sync_poll_errors_total{site="site-b",kind="unreachable"}"#).as_deref(), Some("1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_reads_a_fixed_number_of_times_and_never_writes() {
    let env = Env::start().await;
    env.ispn.world().set_request_recording(true);
    let before = env.ispn.world().requests().len();
    assert_eq!(env.run(&["watch", "--once"]).await.code, 0);
    let requests: Vec<String> = env.ispn.world().requests()[before..].iter().map(|r| r.what.clone()).collect();
    assert!(requests.iter().all(|r| r.starts_with("GET ")), "{requests:#?}");
    // Per site, as docs/user-guide.md counts them: the server's version, asked once per process
    // (1); the container (1); cache discovery, on the first and every 10th poll (the list, then
    // each cache's backups: 1 + 4); per replicated cache its backups, push status, size and write
    // counters (4 × 4).
    let caches = 4;
    assert_eq!(requests.len(), 2 * (1 + 1 + (1 + caches) + 4 * caches), "{requests:#?}");
}

/// A free port on loopback (bound, then released for the child).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn it_serves_metrics_and_health_until_sigterm() {
    let env = Env::start().await;
    let listen = format!("127.0.0.1:{}", free_port());
    let child = env.command(&["watch", "--listen", &listen, "--interval", "1s"]).spawn().unwrap();
    let http = reqwest::Client::new();
    let mut metrics = String::new();
    for _ in 0..100 {
        if let Ok(answer) = http.get(format!("http://{listen}/metrics")).send().await {
            let content_type = answer.headers()[reqwest::header::CONTENT_TYPE].to_str().unwrap().to_owned();
            assert!(content_type.starts_with("application/openmetrics-text"), "{content_type}");
            metrics = answer.text().await.unwrap();
            if metrics.contains("site_sync_polls_total 2") {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(metrics.contains("site_sync_polls_total 2"), "two polls a second apart: {metrics}");
    let health = http.get(format!("http://{listen}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let out = Output::of_terminated(child).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("healthy: both directions replicate"), "the diagnosis is logged: {}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_that_dies_and_comes_back_is_followed_without_a_restart() {
    let mut env = Env::start().await;
    let listen = format!("127.0.0.1:{}", free_port());
    let child = env.command(&["watch", "--listen", &listen, "--interval", "1s"]).spawn().unwrap();
    let up = r#"site_sync_site_up{site="site-b"}"#;
    scrape_until(&listen, "site-b up", |m| value(m, up).as_deref() == Some("1")).await;
    env.ispn.kill("site-b").await;
    let down = scrape_until(&listen, "site-b down", |m| value(m, up).as_deref() == Some("0")).await;
    assert_eq!(value(&down, r#"site_sync_diagnosis{state="unreachable"}"#).as_deref(), Some("1"));
    env.ispn.restart("site-b").await.unwrap();
    let back = scrape_until(&listen, "site-b back and the pair healthy", |m| {
        value(m, up).as_deref() == Some("1") && value(m, r#"site_sync_diagnosis{state="healthy"}"#).as_deref() == Some("1")
    })
    .await;
    // Every cache again, not only those of the polls while site-b was away.
    assert_eq!(back.lines().filter(|l| l.starts_with("site_sync_cache_entries{")).count(), 8, "{back}");
    let out = Output::of_terminated(child).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let said: Vec<&str> = out.stderr.lines().filter(|l| l.starts_with("site-sync watch: ")).collect();
    assert!(said.iter().any(|l| l.contains("cannot read site-b")), "{said:#?}");
    assert!(said.last().is_some_and(|l| l.contains("healthy")), "{said:#?}");
}

/// `watch` on sites reached only through Kubernetes (credentials from a Secret, Infinispan through
/// a port-forward) whose API servers are down when it starts, come up, go away and come back:
/// it serves `/metrics` all along, `site_up` follows, and the connections are made again.
/// The kubeconfig in `dir` points at `ports`, where relays to the API servers at `upstreams` are
/// started and stopped.
pub async fn watch_follows_api_servers_that_come_and_go(
    dir: &std::path::Path,
    upstreams: &[std::net::SocketAddr],
    ports: &[u16],
) {
    let listen = format!("127.0.0.1:{}", free_port());
    let child = site_sync(dir, &["watch", "--listen", &listen, "--interval", "1s"]).spawn().unwrap();
    let up = |site: &str| format!(r#"site_sync_site_up{{site="{site}"}}"#);
    let both = |m: &str, v: &str| value(m, &up("site-a")).as_deref() == Some(v) && value(m, &up("site-b")).as_deref() == Some(v);
    let connect_errors = |m: &str| value(m, r#"site_sync_poll_errors_total{site="site-b",kind="connect"}"#);
    let down = scrape_until(&listen, "both sites down while their API servers are", |m| {
        both(m, "0") && connect_errors(m).is_some_and(|n| n != "0")
    })
    .await;
    assert_eq!(value(&down, r#"site_sync_diagnosis{state="unreachable"}"#).as_deref(), Some("1"), "{down}");
    let relays = |ports: &[u16]| futures::future::join_all(ports.iter().zip(upstreams).map(|(p, u)| Relay::start(*p, *u)));
    let started = relays(ports).await;
    scrape_until(&listen, "both sites up once their API servers are", |m| both(m, "1")).await;
    // Gone again mid-watch (the port-forwards' connections are cut too), then back.
    drop(started);
    scrape_until(&listen, "both sites down again", |m| both(m, "0")).await;
    let _again = relays(ports).await;
    let back = scrape_until(&listen, "both sites up again, the pair healthy", |m| {
        both(m, "1") && value(m, r#"site_sync_diagnosis{state="healthy"}"#).as_deref() == Some("1")
    })
    .await;
    assert_eq!(back.lines().filter(|l| l.starts_with("site_sync_cache_entries{")).count(), 8, "{back}");
    let out = Output::of_terminated(child).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("refused the connection"), "the API server's state is logged: {}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_starts_while_the_api_servers_are_down_and_follows_them() {
    let env = Env::start().await;
    let identities = "credentials:\n- username: admin\n  password: password\n  roles: [admin]\n";
    for (kube, site) in [(&env.kube_a, "site-a"), (&env.kube_b, "site-b")] {
        let target = socket_of(&env.url(site));
        kube.clone().secret(NS, "connect-secret", &[("identities.yaml", identities)]).forwarded_pod(
            NS,
            "infinispan-0",
            &[("app", "infinispan-pod"), ("clusterName", "infinispan")],
            target,
        );
    }
    let block = |name: &str| format!("  {name}:\n    kubernetes:\n      kubeconfig: kubeconfig\n      context: {name}\n");
    env.write_config(&format!(
        "active: site-a\noffline: site-b\njournal: journal.json\nsites:\n{}{}",
        block("site-a"),
        block("site-b")
    ));
    let relay_ports = [unused_port(), unused_port()];
    let servers = repoint_kubeconfig(&env.path("kubeconfig"), |i| format!("http://127.0.0.1:{}", relay_ports[i]));
    let upstreams: Vec<std::net::SocketAddr> = servers.iter().map(|s| socket_of(s)).collect();
    watch_follows_api_servers_that_come_and_go(env.dir.path(), &upstreams, &relay_ports).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_listen_address_is_a_usage_error() {
    let env = Env::start().await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = taken.local_addr().unwrap().to_string();
    let out = env.run(&["watch", "--listen", &listen]).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.last_error_line().contains(&format!("--listen {listen}")), "{}", out.stderr);
    let out = env.run(&["watch", "--interval", "100ms"]).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.last_error_line().contains("--interval must be at least 1s"), "{}", out.stderr);
}

fn manifest(name: &str) -> serde_json::Value {
    let path = format!("{}/../../deploy/kubernetes/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_saphyr::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn args(container: &serde_json::Value) -> Vec<String> {
    container["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubernetes_example_matches_the_binary_and_the_documented_role() {
    // The Role: docs/rbac.md's, with the additions this example uses (all but force-delete).
    let path = format!("{}/../../deploy/kubernetes/site/rbac.yaml", env!("CARGO_MANIFEST_DIR"));
    let rbac: Vec<serde_json::Value> = serde_saphyr::from_multiple(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let kinds: Vec<&str> = rbac.iter().map(|i| i["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["ServiceAccount", "Role", "RoleBinding"]);
    let expected: Vec<serde_json::Value> = crate::rbac::documented_role()
        .into_iter()
        .filter(|rule| !(rule["resources"] == serde_json::json!(["pods"]) && rule["verbs"] == serde_json::json!(["delete"])))
        .collect();
    assert_eq!(rbac[1]["rules"].as_array().unwrap(), &expected, "deploy/kubernetes/site/rbac.yaml drifted from docs/rbac.md");
    assert_eq!(rbac[2]["roleRef"]["name"], rbac[1]["metadata"]["name"]);
    assert_eq!(rbac[2]["subjects"][0]["name"], rbac[0]["metadata"]["name"]);
    let token = manifest("site/token.yaml");
    assert_eq!(token["type"], "kubernetes.io/service-account-token");
    assert_eq!(token["metadata"]["annotations"]["kubernetes.io/service-account.name"], rbac[0]["metadata"]["name"]);

    // The configuration loads: the binary gets past it to its own check of --interval.
    let config = manifest("config.yaml");
    let text = config["data"]["site-sync.yaml"].as_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("site-sync.yaml"), text).unwrap();
    let out = Output::of(site_sync(dir.path(), &["watch", "--interval", "0s"])).await;
    assert!(out.last_error_line().contains("--interval must be at least 1s"), "the example's configuration: {}", out.stderr);
    let journal_dir = std::path::Path::new(text.lines().find_map(|l| l.strip_prefix("journal: ")).unwrap()).parent().unwrap();

    let binary = env!("CARGO_BIN_EXE_site-sync");
    let watch = manifest("watch.yaml");
    let pod = &watch["spec"]["template"];
    let container = &pod["spec"]["containers"][0];
    let watch_args = args(container);
    assert_eq!(watch_args[2], "watch");
    let parsed = std::process::Command::new(binary).args(&watch_args).arg("--help").output().unwrap();
    assert!(parsed.status.success(), "the Deployment's args do not parse: {}", String::from_utf8_lossy(&parsed.stderr));
    let listen = &watch_args[watch_args.iter().position(|a| a == "--listen").unwrap() + 1];
    let port = listen.rsplit(':').next().unwrap();
    assert_eq!(pod["metadata"]["annotations"]["prometheus.io/port"], port);
    assert_eq!(container["ports"][0]["containerPort"].to_string(), port);
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");

    let job = manifest("sync-job.yaml");
    let job_container = &job["spec"]["template"]["spec"]["containers"][0];
    let job_args = args(job_container);
    assert!(job_args.ends_with(&["run".to_owned(), "--yes".to_owned()]), "{job_args:?}");
    let parsed = std::process::Command::new(binary).args(&job_args).arg("--help").output().unwrap();
    assert!(parsed.status.success(), "the Job's args do not parse: {}", String::from_utf8_lossy(&parsed.stderr));
    assert_eq!(job["spec"]["backoffLimit"], 0, "a failed run wants a human, not a retry");

    // Both run the kustomization's image (set in one place), as the image's non-root user on a
    // read-only root filesystem.
    let kustomization = manifest("kustomization.yaml");
    assert_eq!(kustomization["images"][0]["name"], "site-sync");
    for container in [container, job_container] {
        assert_eq!(container["image"], "site-sync", "the image is set in kustomization.yaml only");
        let security = &container["securityContext"];
        assert_eq!(
            (&security["runAsNonRoot"], &security["readOnlyRootFilesystem"]),
            (&serde_json::json!(true), &serde_json::json!(true))
        );
    }

    // Both mount the configuration, the kubeconfig and the journal where the configuration says.
    let claim = manifest("journal.yaml")["metadata"]["name"].clone();
    for (spec, container) in [(&pod["spec"], container), (&job["spec"]["template"]["spec"], job_container)] {
        let volume = |name: &str| spec["volumes"].as_array().unwrap().iter().find(|v| v["name"] == name).cloned().unwrap();
        let mount = |name: &str| {
            container["volumeMounts"].as_array().unwrap().iter().find(|m| m["name"] == name).unwrap()["mountPath"].clone()
        };
        assert_eq!(volume("config")["configMap"]["name"], config["metadata"]["name"]);
        let config_file = format!("{}/site-sync.yaml", mount("config").as_str().unwrap());
        assert_eq!(args(container)[..2], ["--config".to_owned(), config_file]);
        assert_eq!(mount("journal"), journal_dir.to_str().unwrap());
        assert_eq!(volume("journal")["persistentVolumeClaim"]["claimName"], claim);
        assert!(text.contains(&format!("kubeconfig: {}/config", mount("kubeconfig").as_str().unwrap())));
    }
}

/// Scrapes `listen` until `done` holds for the metrics (30 s at most).
pub async fn scrape_until(listen: &str, what: &str, done: impl Fn(&str) -> bool) -> String {
    let http = reqwest::Client::new();
    let mut metrics = String::new();
    for _ in 0..300 {
        if let Ok(answer) = http.get(format!("http://{listen}/metrics")).send().await {
            metrics = answer.text().await.unwrap_or_default();
            if done(&metrics) {
                return metrics;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what} did not show within 30 s: {metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heal_synchronizes_a_held_split_brain_once() {
    let env = Env::start().await;
    env.split_brain(40).await;
    let active = env.entries("site-a");
    let listen = format!("127.0.0.1:{}", free_port());
    let args = ["watch", "--listen", &listen, "--interval", "1s", "--heal", "--heal-hold", "2s", "--heal-interval", "1h"];
    let child = env.command(&args).spawn().unwrap();
    let metrics = scrape_until(&listen, "a succeeded heal and a healthy pair", |m| {
        value(m, r#"site_sync_heals_total{status="succeeded"}"#).as_deref() == Some("1")
            && value(m, r#"site_sync_diagnosis{state="healthy"}"#).as_deref() == Some("1")
    })
    .await;
    assert_eq!(value(&metrics, r#"site_sync_heals_total{status="started"}"#).as_deref(), Some("1"));
    assert_eq!(value(&metrics, "site_sync_heal_running").as_deref(), Some("0"));
    assert_eq!(env.entries("site-b"), active, "site-b holds the active site's data");
    assert_eq!(env.kube_b.keycloak_state(NS, "keycloak"), Some((3, 3, 3, None)));
    let index = reqwest::get(format!("http://{listen}/")).await.unwrap().text().await.unwrap();
    assert!(index.contains("last heal run=") && index.contains("report=") && index.contains("journal.report.md"), "{index}");

    // Split again within the interval: waits, does not heal twice.
    env.split_brain(40).await;
    let metrics = scrape_until(&listen, "the new split brain", |m| {
        value(m, r#"site_sync_diagnosis{state="split-brain"}"#).as_deref() == Some("1")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let later = scrape_until(&listen, "another poll", |m| m != metrics).await;
    assert_eq!(value(&later, r#"site_sync_heals_total{status="started"}"#).as_deref(), Some("1"), "{later}");
    let out = Output::of_terminated(child).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let said: Vec<&str> = out.stderr.lines().filter(|l| l.starts_with("site-sync watch: heal")).collect();
    assert!(said.iter().any(|l| l.contains("waiting: split brain, holding before a heal")), "{said:#?}");
    let ended = said.iter().find(|l| l.contains(r#" outcome="succeeded" report="#)).unwrap_or_else(|| panic!("{said:#?}"));
    assert!(said.iter().any(|l| l.contains("waiting: split brain, but the last heal is too recent")), "{said:#?}");
    // The heal left its journal, its report and its own output in a directory of its own.
    let run_id = ended.split("run=").nth(1).unwrap().split(' ').next().unwrap();
    let filed = env.path("heals").join(run_id);
    for file in ["journal.json", "journal.report.md", "journal.report.html", "journal.timeline.svg", "output.log"] {
        assert!(filed.join(file).is_file(), "{} missing: {ended}", filed.join(file).display());
    }
    let report = std::fs::read_to_string(filed.join("journal.report.md")).unwrap();
    assert!(
        report.contains(&format!("## site-sync run {run_id}: site-a → site-b")) && report.contains("**Outcome:** succeeded"),
        "{report}"
    );
    let output = std::fs::read_to_string(filed.join("output.log")).unwrap();
    assert!(output.contains("synchronized 4 caches from site-a to site-b"), "the heal's own output: {output}");
    assert!(!out.stdout.contains("synchronized 4 caches"), "the heal's output stays out of the watcher's: {}", out.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heal_never_acts_over_an_unfinished_run() {
    // Keycloak's pods take long to stop: a run killed meanwhile leaves its journal open with the
    // pair still split.
    let slow = keycloak_scale::fake::Timing { pod_terminate: Duration::from_secs(30), ..quick() };
    let env = Env::with(fake_ispn::ClusterSpec::two_sites("site-a", "site-b"), |k| k.timing(slow)).await;
    env.split_brain(10).await;
    let mut run = env.command(&["run", "--yes"]).spawn().unwrap();
    for _ in 0..200 {
        if std::fs::read_to_string(env.path("journal.json")).is_ok_and(|j| j.contains("\"step\": \"scale-down\"")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    run.kill().await.unwrap();
    let _ = run.wait().await;

    let listen = format!("127.0.0.1:{}", free_port());
    let args = ["watch", "--listen", &listen, "--interval", "1s", "--heal", "--heal-hold", "1s"];
    let child = env.command(&args).spawn().unwrap();
    let metrics = scrape_until(&listen, "the blocked heal", |m| value(m, "site_sync_heal_blocked").as_deref() == Some("1")).await;
    assert_eq!(value(&metrics, r#"site_sync_diagnosis{state="split-brain"}"#).as_deref(), Some("1"));
    assert_eq!(value(&metrics, r#"site_sync_last_sync_status{status="unfinished"}"#).as_deref(), Some("1"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let out = Output::of_terminated(child).await;
    assert!(out.stderr.contains("heal blocked: the journal holds an unfinished run"), "{}", out.stderr);
    assert!(!out.stderr.contains("heal started"), "{}", out.stderr);
    assert!(env.ispn.world().clears().is_empty(), "nothing was cleared");
}
