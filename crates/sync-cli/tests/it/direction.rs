//! The direction guard through the binary: users writing to the declared offline site stop a run
//! (and `plan`) before anything changes, with the evidence and the override named; `status` names
//! the live site and recommends the direction; the override goes on and says what it cost.

use std::time::Duration;

use fake_ispn::SiteSnapshot;
use ispn_xsite::SiteApi;

use crate::support::*;

/// Writes a login to `site`'s authenticationSessions every 50 ms, as that site's Keycloak does for
/// users in the middle of logging in, until its Keycloak is scaled to 0 or this is dropped.
struct Users(tokio::task::JoinHandle<()>);

impl Users {
    fn on(env: &Env, site: &str) -> Self {
        let client = env.ispn.site(site);
        let kube = if site == "site-a" { env.kube_a.clone() } else { env.kube_b.clone() };
        Self(tokio::spawn(async move {
            let sessions = cache("authenticationSessions");
            for i in 0u64.. {
                if kube.keycloak_state(NS, "keycloak").is_some_and(|(spec, ..)| spec == 0) {
                    break;
                }
                let _ = client.put(&sessions, &format!("login-{i}"), "in progress").await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }))
    }
}

impl Drop for Users {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The default environment, split, with the guard's default two-second window (the suite's
/// other tests shorten it): long enough for a busy test machine's users to be seen.
async fn split_pair() -> Env {
    let env = Env::start().await;
    env.write_config(&env.config().replace("  direction_window: 500ms\n", ""));
    env.split_brain(10).await;
    env
}

/// Everything but the users' own writes: site-a whole, site-b's statuses, Keycloak, the clears.
fn untouched_by_site_sync(env: &Env) -> (SiteSnapshot, String, String, usize) {
    let (a, b, keycloak, clears) = env.state();
    (a, format!("{:?} {:?} {:?}", b.backups, b.push, b.receiving), format!("{keycloak:?}"), clears)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_on_the_offline_site_stop_the_run_before_anything_changes() {
    let env = split_pair().await;
    let users = Users::on(&env, "site-b");
    let before = untouched_by_site_sync(&env);
    let out = env.run(&["run", "--yes"]).await;
    assert_eq!(out.code, 3, "{}", out.stderr);
    let refusal = out.last_error_line();
    assert!(
        refusal.contains("site-b took")
            && refusal.contains("writes to authenticationSessions in")
            && refusal.contains("site-a took none"),
        "{refusal}"
    );
    assert!(refusal.contains("--active site-b --offline site-a") && refusal.contains("--discard-offline-writes"), "{refusal}");
    assert_eq!(untouched_by_site_sync(&env), before, "site-sync changed something");
    let plan = env.run(&["plan"]).await;
    assert_eq!(plan.code, 3);
    assert!(plan.stdout.contains("A run would be refused: site-b took"), "{}", plan.stdout);
    let json = env.run(&["-o", "json", "run", "--yes"]).await;
    let lines: Vec<serde_json::Value> = json.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let direction = lines.iter().find(|l| l["type"] == "direction").expect("a direction event");
    assert_eq!(direction["verdict"]["verdict"], "against");
    assert_eq!(direction["verdict"]["active_quiet"], true);
    assert_eq!(lines.last().unwrap()["detail"]["refusal"], "direction");
    drop(users);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_names_the_live_site_and_recommends_the_direction() {
    let env = split_pair().await;
    let _users = Users::on(&env, "site-b");
    let out = env.run(&["status"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let line = |site: &str| {
        out.stdout
            .lines()
            .find(|l| l.trim_start().starts_with(site) && (l.contains(" live ") || l.contains(" quiet ")))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(line("site-b").contains("live") && line("site-b").contains("writes to authenticationSessions"), "{}", out.stdout);
    assert!(line("site-a").contains("quiet"), "{}", out.stdout);
    assert!(
        out.stdout.contains("Recommendation: site-b is the live site")
            && out.stdout.contains("`site-sync run --active site-b --offline site-a`"),
        "{}",
        out.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_override_goes_on_and_the_report_says_what_it_cost() {
    let env = split_pair().await;
    let users = Users::on(&env, "site-b");
    let out = env.run(&["run", "--yes", "--discard-offline-writes"]).await;
    drop(users);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let direction = out.stdout.lines().find(|l| l.starts_with("Direction: ")).unwrap_or_default();
    assert!(direction.contains("overridden with --discard-offline-writes: what site-b took is lost"), "{}", out.stdout);
    assert!(out.stdout.contains("the users it served lose their logins in progress"), "{}", out.stdout);
    let journal: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(env.path("journal.json")).unwrap()).unwrap();
    assert_eq!(journal["direction"]["overridden"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_on_the_active_site_only_are_what_a_run_expects() {
    let env = split_pair().await;
    let _users = Users::on(&env, "site-a");
    let out = env.run(&["run", "--yes"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("site-a is the live site, as declared"), "{}", out.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_never_heals_against_the_evidence() {
    use crate::watch::{free_port, scrape_until, value};
    let env = split_pair().await;
    let users = Users::on(&env, "site-b");
    let listen = format!("127.0.0.1:{}", free_port());
    let args = ["watch", "--listen", &listen, "--interval", "1s", "--heal", "--heal-hold", "1s"];
    let child = env.command(&args).spawn().unwrap();
    let writes = r#"site_sync_site_user_writes{site="site-b"}"#;
    scrape_until(&listen, "a held split brain with site-b's users writing, blocked", |m| {
        value(m, "site_sync_heal_blocked").as_deref() == Some("1") && value(m, writes).is_some_and(|n| n != "0")
    })
    .await;
    // Held well past --heal-hold: still no heal.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let metrics = scrape_until(&listen, "still blocked", |m| value(m, "site_sync_heal_blocked").as_deref() == Some("1")).await;
    assert_eq!(value(&metrics, r#"site_sync_heals_total{status="started"}"#), None, "{metrics}");
    drop(users);
    let out = Output::of_terminated(child).await;
    assert!(out.stderr.contains("the offline site takes its users' writes"), "{}", out.stderr);
    assert!(env.ispn.world().clears().is_empty(), "nothing was cleared");
}
