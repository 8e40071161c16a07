//! End-to-end scenarios of the `site-sync` binary: it heals a split brain under live writes,
//! survives being killed at every step boundary (and mid-push), and survives the offline site
//! dying during the push. Keycloak is the fake Kubernetes API in both cases; Infinispan is a real
//! pair when `SITE_SYNC_REAL_DIR` is set (`cargo xtask e2e` sets it, with the pair's URLs), and
//! fake-ispn otherwise. The assertions are the same for both.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fake_ispn::{ClusterSpec, FakeCluster, KEYCLOAK_26_CACHES, TransferSpec};
use futures::{StreamExt, TryStreamExt};
use ispn_xsite::{CacheName, Client, ClientConfig, Credentials, SiteAction, SiteApi, SiteName};
use sync_core::journal::Journal;
use sync_core::vocabulary::Step;

use crate::support::{KubeSites, Output, reset_pair, site_sync};

/// Real pairs are shared: one scenario at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

enum Backend {
    Fake(FakeCluster),
    Real(PathBuf),
}

struct Pair {
    backend: Backend,
    urls: (String, String),
    a: Client,
    b: Client,
    kube: KubeSites,
    dir: tempfile::TempDir,
}

type Data = BTreeMap<(String, String), String>;

fn cache(name: &str) -> CacheName {
    CacheName::new(name).unwrap()
}

fn caches() -> Vec<CacheName> {
    KEYCLOAK_26_CACHES.iter().map(|c| cache(c)).collect()
}

fn site(name: &str) -> SiteName {
    SiteName::new(name).unwrap()
}

fn client(url: &str) -> Client {
    let mut config = ClientConfig::new(url, Some(Credentials::new("admin", "password")));
    config.timeout = Duration::from_secs(20);
    Client::new(config).unwrap()
}

impl Pair {
    async fn start(settings: &str) -> Self {
        let (backend, urls) = match std::env::var("SITE_SYNC_REAL_DIR").ok().filter(|d| !d.is_empty()) {
            Some(dir) => {
                let url = |var: &str| std::env::var(var).unwrap_or_else(|_| panic!("{var} must be set with SITE_SYNC_REAL_DIR"));
                (Backend::Real(PathBuf::from(dir)), (url("SITE_SYNC_CONTRACT_A_URL"), url("SITE_SYNC_CONTRACT_B_URL")))
            }
            None => {
                let spec = ClusterSpec::two_sites("site-a", "site-b").transfer(TransferSpec {
                    chunk_size: 16,
                    entries_per_second: Some(4_000),
                    ..TransferSpec::default()
                });
                let fake = FakeCluster::start(spec).await.unwrap();
                let urls = (fake.url("site-a"), fake.url("site-b"));
                (Backend::Fake(fake), urls)
            }
        };
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("password"), "password\n").unwrap();
        let kube = KubeSites::start(dir.path()).await;
        let site_block = |name: &str, url: &str| {
            format!(
                "  {name}:\n    infinispan:\n      url: {url}\n      user: admin\n      password_file: password\n    kubernetes:\n      kubeconfig: kubeconfig\n      context: {name}\n      namespace: {}\n      keycloak: keycloak\n",
                kube.namespace(name)
            )
        };
        let config = format!(
            "active: site-a\noffline: site-b\njournal: journal.json\nsettings:\n  poll_interval: 100ms\n{settings}sites:\n{}{}",
            site_block("site-a", &urls.0),
            site_block("site-b", &urls.1)
        );
        std::fs::write(dir.path().join("site-sync.yaml"), config).unwrap();
        let pair = Self { a: client(&urls.0), b: client(&urls.1), urls, backend, kube, dir };
        reset_pair(&pair.a, &pair.b).await;
        pair
    }

    fn real(&self) -> bool {
        matches!(self.backend, Backend::Real(_))
    }

    /// Entries per cache on the active site.
    fn size(&self) -> usize {
        if self.real() { 5_000 } else { 1_000 }
    }

    async fn fill(&self, site: &Client, items: Vec<(CacheName, String, String)>) {
        futures::stream::iter(items)
            .map(|(c, k, v)| async move { site.put(&c, &k, &v).await.unwrap() })
            .buffer_unordered(32)
            .collect::<Vec<()>>()
            .await;
    }

    /// Each site takes the other offline (what the fencing automation does), then both take
    /// writes: shared keys with different values, and keys only on one side, in every cache.
    async fn split_brain(&self) {
        for c in caches() {
            self.a.cache_site_action(&c, &site("site-b"), SiteAction::TakeOffline).await.unwrap();
            self.b.cache_site_action(&c, &site("site-a"), SiteAction::TakeOffline).await.unwrap();
        }
        let n = self.size();
        let mut active = Vec::new();
        let mut stale = Vec::new();
        for c in caches() {
            for i in 0..n {
                active.push((c.clone(), format!("user-{i:06}"), format!("active-{i}")));
            }
            for i in 0..n / 2 {
                stale.push((c.clone(), format!("user-{i:06}"), format!("stale-{i}")));
            }
            for i in 0..n / 4 {
                stale.push((c.clone(), format!("ghost-{i:06}"), "stale-only".to_owned()));
            }
        }
        tokio::join!(self.fill(&self.a, active), self.fill(&self.b, stale));
    }

    /// Every entry of the four caches on a site, read back through REST.
    async fn data(&self, site: &Client) -> Data {
        let mut data = BTreeMap::new();
        for c in caches() {
            let entries: Vec<ispn_xsite::Entry> = site.entries(&c).await.unwrap().try_collect().await.unwrap();
            for e in entries {
                data.insert((c.to_string(), e.key), e.value);
            }
        }
        data
    }

    fn command(&self, args: &[&str]) -> tokio::process::Command {
        site_sync(self.dir.path(), args)
    }

    async fn run(&self, args: &[&str]) -> Output {
        Output::of(self.command(args)).await
    }

    fn journal(&self) -> Option<Journal> {
        let text = std::fs::read_to_string(self.dir.path().join("journal.json")).ok()?;
        Journal::from_json("journal.json", &text).ok()
    }

    /// Kills the offline site as a crashed JVM (real: SIGKILL; fake: the server stops and the
    /// site loses its data, as a restarted JVM without persistence does).
    async fn kill_offline(&mut self) {
        match &mut self.backend {
            Backend::Fake(fake) => fake.kill("site-b").await,
            Backend::Real(dir) => {
                let pid = std::fs::read_to_string(dir.join("site-b-1.pid")).unwrap();
                std::process::Command::new("kill").arg("-9").arg(pid.trim()).status().unwrap();
            }
        }
    }

    async fn restart_offline(&mut self) {
        match &mut self.backend {
            Backend::Fake(fake) => fake.restart("site-b").await.unwrap(),
            Backend::Real(dir) => {
                let mut command = std::process::Command::new("sh");
                command.arg(dir.join("site-b-1.start")).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
                std::os::unix::process::CommandExt::process_group(&mut command, 0);
                // Left running on purpose: `cargo xtask e2e` stops it through the pid file.
                #[allow(clippy::zombie_processes)]
                let child = command.spawn().unwrap();
                std::fs::write(dir.join("site-b-1.pid"), child.id().to_string()).unwrap();
            }
        }
        // Up, and both sites see each other again.
        let deadline = Instant::now() + Duration::from_secs(120);
        let fresh = client(&self.urls.1);
        loop {
            let seen = match (self.a.container_info().await, fresh.container_info().await) {
                (Ok(a), Ok(b)) => a.sees(&site("site-b")) && b.sees(&site("site-a")),
                _ => false,
            };
            if seen {
                break;
            }
            assert!(Instant::now() < deadline, "the offline site did not come back");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        self.b = fresh;
    }
}

/// Reports a scenario's wall time (`cargo xtask e2e` shows it).
struct Timed(&'static str, Instant);

impl Drop for Timed {
    #[allow(clippy::print_stderr)]
    fn drop(&mut self) {
        if !std::thread::panicking() {
            eprintln!("scenario {}: {:.1} s", self.0, self.1.elapsed().as_secs_f64());
        }
    }
}

/// Writes to the active site until stopped; returns what it wrote successfully.
fn writer(pair: &Pair, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Vec<(String, String, String)>> {
    let active = client(&pair.urls.0);
    tokio::spawn(async move {
        let mut written = Vec::new();
        let caches = caches();
        let mut i = 0usize;
        while !stop.load(Ordering::Relaxed) {
            let c = &caches[i % caches.len()];
            let (key, value) = (format!("live-{i:06}"), format!("written-during-the-run-{i}"));
            if active.put(c, &key, &value).await.is_ok() {
                written.push((c.to_string(), key, value));
            }
            i += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        written
    })
}

fn active_expected(before: &Data, written: &[(String, String, String)]) -> Data {
    let mut expected = before.clone();
    for (c, k, v) in written {
        expected.insert((c.clone(), k.clone()), v.clone());
    }
    expected
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_brain_is_healed_under_live_writes_and_every_report_tells_the_truth() {
    let _serial = SERIAL.lock().await;
    let _timed = Timed("split brain under live writes", Instant::now());
    let pair = Pair::start("").await;
    pair.split_brain().await;
    let before = pair.data(&pair.a).await;
    let stale = pair.data(&pair.b).await;
    let n = pair.size() as u64;

    let Output { code, stdout, stderr } = pair.run(&["status"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("Diagnosis: split brain"), "{stdout}");
    let Output { code, stdout, .. } = pair.run(&["plan"]).await;
    assert_eq!(code, 0);
    assert!(stdout.contains("Preflight passed (Keycloak 26): 4 cache(s)"), "{stdout}");
    let Output { code, stdout, .. } = pair.run(&["-o", "json", "diff", "--values"]).await;
    assert_eq!(code, 5, "diff must report the split");
    for line in stdout.lines().filter(|l| l.contains("\"type\":\"diff\"")) {
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        let c = &value["comparison"];
        assert_eq!((c["active"].as_u64(), c["offline"].as_u64()), (Some(n), Some(n / 2 + n / 4)), "{line}");
        assert_eq!(c["only_active"].as_u64(), Some(n - n / 2), "{line}");
        assert_eq!(c["only_offline"].as_u64(), Some(n / 4), "{line}");
        assert_eq!(c["different_values"].as_u64(), Some(n / 2), "{line}");
    }

    let stop = Arc::new(AtomicBool::new(false));
    let writes = writer(&pair, stop.clone());
    let Output { code, stdout, stderr } = pair.run(&["run", "--yes"]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let written = writes.await.unwrap();
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(!written.is_empty(), "the writer wrote nothing");

    let expected = active_expected(&before, &written);
    let active = pair.data(&pair.a).await;
    let offline = pair.data(&pair.b).await;
    assert_eq!(active, expected, "the active site changed beyond the live writes");
    assert_eq!(offline, active, "the offline site does not equal the active site key by key and value by value");
    assert!(stale.keys().any(|k| k.1.starts_with("ghost")), "the scenario had stale-only keys");
    assert_eq!(pair.kube.keycloak_b().await, Some((3, 3, 3, None)));

    let Output { code, stdout, .. } = pair.run(&["verify"]).await;
    assert_eq!(code, 0, "verify disagrees with the independent comparison: {stdout}");
    let Output { code, .. } = pair.run(&["diff", "--values"]).await;
    assert_eq!(code, 0);
    let Output { stdout, .. } = pair.run(&["status"]).await;
    assert!(stdout.contains("Diagnosis: healthy"), "{stdout}");
}

async fn run_until_killed(pair: &Pair, args: &[&str], target: Step, mid_push: bool) -> bool {
    let mut child = pair.command(args).spawn().unwrap();
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if let Some(journal) = pair.journal() {
            let reached = journal.resume_from.is_none() && journal.step >= target;
            let pushed = !mid_push || pair.b.size(&cache("work")).await.is_ok_and(|s| s > 0);
            if reached && pushed {
                child.kill().await.unwrap();
                let _ = child.wait().await;
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_every_step_boundary_and_mid_push_then_resumed_ends_consistent() {
    let _serial = SERIAL.lock().await;
    let _timed = Timed("kill -9 at every step boundary and mid-push, then resume", Instant::now());
    let pair = Pair::start("").await;
    pair.split_brain().await;
    let expected = pair.data(&pair.a).await;
    let mut killed = BTreeSet::new();
    let mut first = true;
    let targets: Vec<(Step, bool)> = Step::ALL[1..].iter().map(|s| (*s, false)).chain([(Step::AwaitPush, true)]).collect();
    let mut targets = targets;
    targets.sort_by_key(|(s, mid)| (*s, *mid));
    for (target, mid_push) in targets {
        let args: &[&str] = if first { &["run", "--yes"] } else { &["resume", "--yes"] };
        if run_until_killed(&pair, args, target, mid_push).await {
            killed.insert(format!("{target}{}", if mid_push { " (mid-push)" } else { "" }));
            first = false;
        }
    }
    assert!(killed.len() >= 8, "the run was killed at too few points: {killed:?}");
    let Output { code, stdout, stderr } = pair.run(&["resume", "--yes"]).await;
    let journal = pair.journal().unwrap();
    assert!(code == 0 || journal.is_complete(), "{stdout}\n{stderr}");
    assert_eq!(pair.data(&pair.a).await, expected, "killed at {killed:?}");
    assert_eq!(pair.data(&pair.b).await, expected, "killed at {killed:?}");
    assert_eq!(pair.kube.keycloak_b().await, Some((3, 3, 3, None)));
}

#[allow(clippy::print_stderr)] // the report of a real run, for the record (`--nocapture`)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_offline_site_dying_mid_push_stops_the_run_and_resume_completes_after_its_restart() {
    let _serial = SERIAL.lock().await;
    let _timed = Timed("offline site killed mid-push, restarted, resumed", Instant::now());
    let mut pair = Pair::start("  push_stall_timeout: 5s\n  link_wait: 5s\n  step_deadline: 20s\n  request_timeout: 5s\n").await;
    pair.split_brain().await;
    let expected = pair.data(&pair.a).await;
    let mut child = pair.command(&["run", "--yes"]).spawn().unwrap();
    loop {
        if pair.journal().is_some_and(|j| j.resume_from.is_none() && j.step >= Step::AwaitPush) {
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "the run ended before the push");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    pair.kill_offline().await;
    let out = child.wait_with_output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let last = stderr.lines().rev().find(|l| l.starts_with("site-sync: ")).unwrap_or_default();
    assert!(last.contains("offline site") || last.contains("step "), "not a clear error: {last}");
    let journal = pair.journal().expect("a journal to resume from");
    assert!(journal.step >= Step::AwaitPush && !journal.is_complete());

    pair.restart_offline().await;
    let Output { code, stdout, stderr } = pair.run(&["resume", "--yes"]).await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert_eq!(pair.data(&pair.b).await, expected);
    assert_eq!(pair.data(&pair.a).await, expected);
    assert_eq!(pair.kube.keycloak_b().await, Some((3, 3, 3, None)));

    // The report tells the story from the journal alone: two attempts, the first failed in the
    // push, Keycloak down across both, every cache verified.
    let report = pair.run(&["report", "--format", "json"]).await;
    assert_eq!(report.code, 0, "{}", report.stderr);
    let account: serde_json::Value = serde_json::from_str(&report.stdout).unwrap();
    assert_eq!(account["attempts"], 2, "{account}");
    assert_eq!(account["finished"]["outcome"], "succeeded");
    let steps = account["steps"].as_array().unwrap();
    assert!(steps.iter().any(|s| s["outcome"] == "failed"), "{account}");
    let down = &account["keycloak_down"];
    assert!(down["to_ms"].as_u64() > down["from_ms"].as_u64(), "{account}");
    for cache in account["caches"].as_array().unwrap() {
        assert_eq!(cache["verdict"]["verdict"], "equal", "{cache}");
    }
    let markdown = pair.run(&["report", "--format", "markdown"]).await;
    eprintln!("{}", markdown.stdout);
}

/// A split brain whose sites end up with equal sizes but different content: as many keys only on
/// each side, and shared keys with other values. Sizes alone call it equal; the default
/// verification does not, before the run, and proves the sync after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equal_sizes_with_different_content_are_caught_before_and_verified_after_a_sync() {
    let _serial = SERIAL.lock().await;
    let _timed = Timed("equal sizes, different content", Instant::now());
    let pair = Pair::start("").await;
    for c in caches() {
        pair.a.cache_site_action(&c, &site("site-b"), SiteAction::TakeOffline).await.unwrap();
        pair.b.cache_site_action(&c, &site("site-a"), SiteAction::TakeOffline).await.unwrap();
    }
    // Per cache and side: 1,700 shared keys (1,000 of them with other values) and 1,150 of its own.
    let (shared, differing, own) = (1_700, 1_000, 1_150);
    let entries = shared + own;
    let (mut active, mut stale) = (Vec::new(), Vec::new());
    for c in caches() {
        for i in 0..shared {
            active.push((c.clone(), format!("user-{i:06}"), format!("value-{i}")));
            let value = if i < differing { format!("stale-{i}") } else { format!("value-{i}") };
            stale.push((c.clone(), format!("user-{i:06}"), value));
        }
        for i in 0..own {
            active.push((c.clone(), format!("active-only-{i:06}"), "a".to_owned()));
            stale.push((c.clone(), format!("stale-only-{i:06}"), "b".to_owned()));
        }
    }
    tokio::join!(pair.fill(&pair.a, active), pair.fill(&pair.b, stale));

    let Output { code, stdout, .. } = pair.run(&["verify", "--level", "sizes"]).await;
    assert_eq!(code, 0, "sizes alone see nothing wrong: {stdout}");
    assert!(stdout.contains(&format!("equal sizes ({} entries)", thousands(entries))), "{stdout}");
    let Output { code, stdout, .. } = pair.run(&["verify"]).await;
    assert_eq!(code, 5, "{stdout}");
    let expected = format!(
        "MISMATCH (compared keys and values): {own} keys only on the active site, {own} only on the offline site, {differing} with different values",
        own = thousands(own),
        differing = thousands(differing)
    );
    assert!(stdout.contains(&expected), "{stdout}");
    let Output { code, stdout, .. } = pair.run(&["-o", "json", "diff", "--values"]).await;
    assert_eq!(code, 5);
    for line in stdout.lines().filter(|l| l.contains("\"type\":\"diff\"")) {
        let c = &serde_json::from_str::<serde_json::Value>(line).unwrap()["comparison"];
        let counts = [&c["only_active"], &c["only_offline"], &c["different_values"]].map(|v| v.as_u64());
        assert_eq!(counts, [Some(own), Some(own), Some(differing)], "{line}");
    }

    let Output { code, stdout, stderr } = pair.run(&["run", "--yes"]).await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let verified = format!("equal: {} keys and values", thousands(shared + own));
    assert_eq!(stdout.matches(&verified).count(), 4, "the report names what it compared: {stdout}");
    let active = pair.data(&pair.a).await;
    assert_eq!(pair.data(&pair.b).await, active, "checked outside the tool, key by key and value by value");
    let Output { code, stdout, .. } = pair.run(&["verify"]).await;
    assert_eq!(code, 0, "{stdout}");
}

fn thousands(n: u64) -> String {
    sync_core::vocabulary::thousands(n)
}

/// The window the driver's re-read before a clear exists for, on whichever backend is at hand:
/// someone brings the offline site's backup online again after the read `decide` acted on and
/// before the clear (here: when the driver announces the clear). The re-read refuses that clear,
/// the run takes the backup offline again and finishes, and the active site keeps every entry.
/// A real server cannot be made to ignore `SKIP_XSITE_BACKUP`, so on a real pair this shows the
/// re-read refusing in that window, not that it alone would save the active site (sync-core's
/// driver test shows that, on the fake with the flag ignored).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_brought_online_just_before_a_clear_is_refused_by_the_re_read() {
    use sync_core::ports::{MemoryJournalStore, MemoryLock, TokioClock};
    use sync_core::{CacheSelection, Driver, Event, Plan, Ports, RunOutcome, Settings, SiteRef};

    let _serial = SERIAL.lock().await;
    let _timed = Timed("backup online just before a clear", Instant::now());
    let pair = Pair::start("").await;
    pair.split_brain().await;
    let active_before = pair.data(&pair.a).await;
    let plan = Plan {
        active: SiteRef { name: site("site-a"), endpoint: pair.urls.0.clone() },
        offline: SiteRef { name: site("site-b"), endpoint: pair.urls.1.clone() },
        caches: CacheSelection::Keycloak,
        settings: Settings { poll_interval: Duration::from_millis(100), ..Settings::default() },
    };
    let epoch_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let ports = Ports {
        active: client(&pair.urls.0),
        offline: client(&pair.urls.1),
        keycloak: keycloak_scale::external::StoppedKeycloak,
        journal: MemoryJournalStore::new(),
        lock: MemoryLock::new(),
        clock: TokioClock::starting_at(epoch_ms),
    };
    let work = cache("work");
    let armed = AtomicBool::new(false);
    let events = std::sync::Mutex::new(Vec::new());
    let offline_url = pair.urls.1.clone();
    let sink = |event: &Event| {
        let clearing_work = matches!(event, Event::Action { action, cache: Some(c), .. } if action == "clear" && *c == work);
        if clearing_work && !armed.swap(true, Ordering::SeqCst) {
            // The driver waits for this call (an event sink is synchronous): the backup is
            // online before the driver's next request, its re-read.
            let (url, cache) = (offline_url.clone(), work.clone());
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                runtime.block_on(client(&url).cache_site_action(&cache, &site("site-a"), SiteAction::BringOnline)).unwrap();
            })
            .join()
            .unwrap();
        }
        events.lock().unwrap().push(event.clone());
    };
    let outcome = Driver::new(&plan, &ports, &sink).run("window".to_owned()).await;
    let events = events.into_inner().unwrap();
    assert!(matches!(outcome, RunOutcome::Succeeded(_)), "{outcome:?}\n{events:#?}");
    assert!(armed.load(Ordering::SeqCst), "the driver never announced a clear of work");
    let refused =
        events.iter().any(|e| matches!(e, Event::InterlockRefused { step: Step::ClearCaches, cache: Some(c), .. } if *c == work));
    assert!(refused, "the re-read did not refuse the clear: {events:#?}");
    assert_eq!(pair.data(&pair.a).await, active_before, "the active site lost data");
    assert_eq!(pair.data(&pair.b).await, active_before, "the offline site was not synchronized");
}
