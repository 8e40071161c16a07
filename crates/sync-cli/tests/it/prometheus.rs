//! A real Prometheus (Debian's) scrapes `site-sync watch --heal` watching the real Infinispan pair
//! with the alert rules of deploy/prometheus: a split brain made on the pair sets
//! `KeycloakSitesSplitBrain` pending, then firing after the rule's 2 minutes; the watcher's heal
//! (`site-sync run`) synchronizes the pair after its hold time, and the alert clears. Run by `cargo xtask e2e` (`--ignored`: it needs the
//! pair and the `prometheus` binary).

use std::time::{Duration, Instant};

use ispn_xsite::SiteApi;
use serde_json::Value;

use crate::rbac::{NEEDS, RealPair};
use crate::support::{KubeSites, Output, reset_pair, site_sync};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Prometheus on loopback, stopped when dropped.
struct Prometheus {
    child: std::process::Child,
    url: String,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Scrapes `target` every second and evaluates deploy/prometheus/alerts.yml every second.
    fn start(dir: &std::path::Path, target: &str) -> Self {
        let rules = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/prometheus/alerts.yml");
        std::fs::write(
            dir.join("prometheus.yml"),
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {rules}\nscrape_configs:\n  - job_name: site-sync\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let listen = format!("127.0.0.1:{}", free_port());
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = std::process::Command::new("prometheus")
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
            .arg(format!("--web.listen-address={listen}"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{NEEDS} and Debian's prometheus package: {e}"));
        Self { child, url: format!("http://{listen}") }
    }

    /// The state of `alert` (`pending`, `firing`), or `None` while it is inactive.
    async fn alert(&self, http: &reqwest::Client, alert: &str) -> Option<String> {
        let answer: Value = http.get(format!("{}/api/v1/alerts", self.url)).send().await.ok()?.json().await.ok()?;
        answer["data"]["alerts"]
            .as_array()?
            .iter()
            .find(|a| a["labels"]["alertname"] == alert)
            .and_then(|a| a["state"].as_str().map(str::to_owned))
    }

    /// Waits (3 minutes at most) until `alert`'s state satisfies `wanted`; returns how long it
    /// took.
    async fn wait_for(&self, http: &reqwest::Client, alert: &str, wanted: impl Fn(Option<&str>) -> bool, what: &str) -> Duration {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(180) {
            if wanted(self.alert(http, alert).await.as_deref()) {
                return started.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!("{alert} did not become {what} within 180 s (now {:?})", self.alert(http, alert).await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs cargo xtask e2e (a real Infinispan pair) and prometheus"]
#[allow(clippy::print_stdout)] // the measured timeline, for the record (`--nocapture`)
async fn a_real_split_brain_sets_the_alert_and_the_watchers_heal_clears_it() {
    let pair = RealPair::from_env();
    reset_pair(&pair.a, &pair.b).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("password"), format!("{}\n", pair.password)).unwrap();
    let kube = KubeSites::start(dir.path()).await;
    let block = |name: &str, url: &str| {
        format!(
            "  {name}:\n    infinispan:\n      url: {url}\n      user: {}\n      password_file: password\n    kubernetes:\n      kubeconfig: kubeconfig\n      context: {name}\n      namespace: {}\n      keycloak: keycloak\n",
            pair.user,
            kube.namespace(name)
        )
    };
    std::fs::write(
        dir.path().join("site-sync.yaml"),
        format!(
            "active: site-a\noffline: site-b\njournal: journal.json\nsettings:\n  poll_interval: 100ms\nsites:\n{}{}",
            block("site-a", &pair.urls.0),
            block("site-b", &pair.urls.1)
        ),
    )
    .unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    // Held past the rule's `for: 2m`, so that the alert fires before the heal.
    let args = ["watch", "--listen", &listen, "--interval", "1s", "--heal", "--heal-hold", "135s"];
    let watch = site_sync(dir.path(), &args).spawn().unwrap();
    let prometheus = Prometheus::start(dir.path(), &listen);
    let http = reqwest::Client::new();
    let alert = "KeycloakSitesSplitBrain";

    // Healthy first: Prometheus scrapes watch and sees no split brain.
    let started = Instant::now();
    loop {
        let query = format!("{}/api/v1/query?query=site_sync_diagnosis%7Bstate%3D%22healthy%22%7D", prometheus.url);
        let answer: Option<Value> = match http.get(&query).send().await {
            Ok(r) => r.json().await.ok(),
            Err(_) => None,
        };
        let healthy = answer.as_ref().and_then(|a| a["data"]["result"][0]["value"][1].as_str()) == Some("1");
        if healthy {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(90), "Prometheus did not scrape a healthy pair within 90 s: {answer:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let scraped = started.elapsed();
    assert_eq!(prometheus.alert(&http, alert).await, None);

    let split_at = Instant::now();
    pair.split_brain().await;
    prometheus.wait_for(&http, alert, |s| s.is_some(), "pending").await;
    let to_pending = split_at.elapsed();
    let state = prometheus.alert(&http, alert).await;
    assert_eq!(state.as_deref(), Some("pending"), "pending first, for the rule's 2 minutes");
    prometheus.wait_for(&http, alert, |s| s == Some("firing"), "firing").await;
    let to_firing = split_at.elapsed();

    // The watcher heals after 135 s of split brain with the link up; the alert clears after it.
    prometheus.wait_for(&http, alert, |s| s.is_none(), "inactive").await;
    let to_clear = split_at.elapsed();
    // The alert clears as soon as the run has brought the backups online; the heal ends later.
    let heals = format!("{}/api/v1/query?query=site_sync_heals_total%7Bstatus%3D%22succeeded%22%7D", prometheus.url);
    let mut answer = Value::Null;
    while split_at.elapsed() < Duration::from_secs(240) {
        answer = http.get(&heals).send().await.unwrap().json().await.unwrap();
        if answer["data"]["result"][0]["value"][1] == "1" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(answer["data"]["result"][0]["value"][1], "1", "the heal did not succeed within 240 s: {answer}");
    let healed = split_at.elapsed();
    for c in ["actionTokens", "authenticationSessions", "loginFailures", "work"] {
        let cache = ispn_xsite::CacheName::new(c).unwrap();
        assert_eq!(pair.b.size(&cache).await.unwrap(), 200, "{c}: site-b holds the active site's entries");
    }
    let healthy = format!("{}/api/v1/query?query=site_sync_diagnosis%7Bstate%3D%22healthy%22%7D", prometheus.url);
    let answer: Value = http.get(&healthy).send().await.unwrap().json().await.unwrap();
    assert_eq!(answer["data"]["result"][0]["value"][1], "1", "{answer}");

    let out = Output::of_terminated(watch).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("split brain: site-a and site-b"), "watch logged the change: {}", out.stderr);
    // The heal on the real pair left its report, with the real servers' numbers.
    let ended =
        out.stderr.lines().find(|l| l.contains(r#" outcome="succeeded" report="#)).unwrap_or_else(|| panic!("{}", out.stderr));
    let report = std::path::PathBuf::from(ended.split("report=").nth(1).unwrap());
    assert!(report.starts_with(dir.path().join("heals")), "{ended}");
    let markdown = std::fs::read_to_string(&report).unwrap();
    assert!(markdown.contains("**Outcome:** succeeded") && markdown.contains("| work | yes |"), "{markdown}");
    for file in ["journal.report.html", "journal.timeline.svg", "journal.json", "output.log"] {
        assert!(report.with_file_name(file).is_file(), "{file} missing beside {}", report.display());
    }
    println!(
        "alert timeline: first healthy scrape {:.1} s after start; after the split brain started: {alert} pending at {:.1} s, firing at {:.1} s, inactive at {:.1} s (watch --heal, hold 135 s, ran the procedure), heal succeeded as Prometheus saw at {:.1} s",
        scraped.as_secs_f64(),
        to_pending.as_secs_f64(),
        to_firing.as_secs_f64(),
        to_clear.as_secs_f64(),
        healed.as_secs_f64()
    );
}
