//! Real Keycloak in the loop: through Keycloak's own HTTP API, a synchronized stale site serves
//! the active site's login state (brute-force counts, a login in progress, a single-use code),
//! and its own stale state is gone; and the naive order (a clear while the backup still
//! replicates) logs the active site's users out. Real Keycloak, PostgreSQL and Infinispan, started
//! by `cargo xtask e2e --keycloak` (which sets `SITE_SYNC_KEYCLOAK_*` and checks that each test
//! left its `<name>.passed` in the run directory). Without those servers the tests do nothing.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ispn_xsite::{CacheName, ClearScope, Client, ClientConfig, Credentials, SiteAction, SiteApi, SiteName};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::support::site_sync;

/// One Keycloak suite at a time (they share the servers).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const CACHES: [&str; 4] = fake_ispn::KEYCLOAK_26_CACHES;

/// What `cargo xtask e2e --keycloak` started.
struct Servers {
    run: PathBuf,
    script: String,
    keycloak: [Keycloak; 2],
    infinispan: [Client; 2],
    infinispan_urls: [String; 2],
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl Servers {
    fn from_env() -> Option<Self> {
        let run = PathBuf::from(env("SITE_SYNC_KEYCLOAK_RUN")?);
        let need = |name: &str| env(name).unwrap_or_else(|| panic!("{name} must be set with SITE_SYNC_KEYCLOAK_RUN"));
        let infinispan_urls = [need("SITE_SYNC_CONTRACT_A_URL"), need("SITE_SYNC_CONTRACT_B_URL")];
        let client = |url: &str| {
            let mut config = ClientConfig::new(
                url,
                Some(Credentials::new(need("SITE_SYNC_CONTRACT_USER"), need("SITE_SYNC_CONTRACT_PASSWORD"))),
            );
            config.timeout = Duration::from_secs(30);
            Client::new(config).unwrap()
        };
        Some(Self {
            script: need("SITE_SYNC_KEYCLOAK_SCRIPT"),
            keycloak: [
                Keycloak::new(&need("SITE_SYNC_KEYCLOAK_A_URL"), &need("SITE_SYNC_KEYCLOAK_A_MANAGEMENT")),
                Keycloak::new(&need("SITE_SYNC_KEYCLOAK_B_URL"), &need("SITE_SYNC_KEYCLOAK_B_MANAGEMENT")),
            ],
            infinispan: [client(&infinispan_urls[0]), client(&infinispan_urls[1])],
            infinispan_urls,
            run,
        })
    }

    fn passed(&self, test: &str) {
        std::fs::write(self.run.join(format!("{test}.passed")), "").unwrap();
    }

    /// Each site takes the other offline, as fencing does after a split brain.
    async fn split(&self) {
        for (me, other) in [(0, "site-b"), (1, "site-a")] {
            for c in CACHES {
                let site = SiteName::new(other).unwrap();
                self.infinispan[me].cache_site_action(&cache(c), &site, SiteAction::TakeOffline).await.unwrap();
            }
        }
    }

    /// The configuration site-sync runs with: site-b's Keycloak stopped and started by the
    /// harness's script, both Keycloaks' health endpoints known.
    fn config(&self, dir: &std::path::Path) {
        self.config_with(dir, "site-a", "site-b");
    }

    /// The configuration for a run from `active` to `offline`: the offline site's Keycloak
    /// stopped and started by the harness's script, both Keycloaks' health endpoints known.
    fn config_with(&self, dir: &std::path::Path, active: &str, offline: &str) {
        let mut sites = String::new();
        for (index, name) in ["site-a", "site-b"].into_iter().enumerate() {
            let k = &self.keycloak[index];
            let mode = if name == offline {
                let script = format!("sh {} {{}} {} {name}", self.script, self.run.display());
                format!(
                    "mode: commands\n      stop: {}\n      start: {}\n      is_stopped: {}",
                    script.replace("{}", "stop"),
                    script.replace("{}", "start"),
                    script.replace("{}", "is-stopped")
                )
            } else {
                "mode: already-stopped".to_owned()
            };
            sites.push_str(&format!(
                "  {name}:\n    infinispan: {{ url: \"{}\", user: admin, password_file: password }}\n    keycloak:\n      {mode}\n      url: {}\n      management_url: {}\n",
                self.infinispan_urls[index], k.url, k.management
            ));
        }
        let text = format!(
            "active: {active}\noffline: {offline}\njournal: journal.json\nsettings:\n  poll_interval: 200ms\n  scale_down_timeout: 2m\nsites:\n{sites}"
        );
        std::fs::write(dir.join("site-sync.yaml"), text).unwrap();
        std::fs::write(dir.join("password"), "password\n").unwrap();
    }
}

fn cache(name: &str) -> CacheName {
    CacheName::new(name).unwrap()
}

/// One Keycloak's HTTP API, as a test client without a browser: it follows no redirect and keeps
/// its own cookies (Keycloak scopes them per realm path; one jar per login is enough here).
#[derive(Clone)]
struct Keycloak {
    url: String,
    management: String,
    http: reqwest::Client,
}

/// Cookies of one browser.
#[derive(Debug, Default, Clone)]
struct Jar(BTreeMap<String, String>);

impl Jar {
    fn take(&mut self, response: &reqwest::Response) {
        for cookie in response.headers().get_all(reqwest::header::SET_COOKIE) {
            let Ok(text) = cookie.to_str() else { continue };
            if let Some((name, value)) = text.split(';').next().and_then(|pair| pair.split_once('=')) {
                self.0.insert(name.trim().to_owned(), value.to_owned());
            }
        }
    }

    fn header(&self) -> String {
        self.0.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
    }
}

/// A login started: the form to post the password to, and the browser that opened it.
#[derive(Debug, Clone)]
struct Login {
    action: String,
    jar: Jar,
}

const REDIRECT: &str = "http://127.0.0.1/cb";

impl Keycloak {
    fn new(url: &str, management: &str) -> Self {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        Self { url: url.trim_end_matches('/').to_owned(), management: management.trim_end_matches('/').to_owned(), http }
    }

    async fn status(&self, url: String) -> Option<u16> {
        self.http.get(url).send().await.ok().map(|r| r.status().as_u16())
    }

    async fn lb_check(&self) -> Option<u16> {
        self.status(format!("{}/lb-check", self.url)).await
    }

    async fn ready(&self) -> bool {
        self.status(format!("{}/health/ready", self.management)).await == Some(200) && self.lb_check().await == Some(200)
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(300);
        while !self.ready().await {
            assert!(Instant::now() < deadline, "Keycloak at {} is not ready", self.url);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn admin_token(&self) -> String {
        let response = self
            .http
            .post(format!("{}/realms/master/protocol/openid-connect/token", self.url))
            .form(&[("grant_type", "password"), ("client_id", "admin-cli"), ("username", "admin"), ("password", "admin")])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "admin token from {}", self.url);
        response.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_owned()
    }

    async fn admin(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> reqwest::Response {
        let mut request =
            self.http.request(method, format!("{}/admin/realms{path}", self.url)).bearer_auth(self.admin_token().await);
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.unwrap()
    }

    /// A realm with brute-force detection that counts every failure (no lockout within the
    /// test), a public client with direct grants and the code flow, and three users.
    async fn create_realm(&self, realm: &str) -> BTreeMap<String, String> {
        let settings = json!({
            "realm": realm, "enabled": true, "bruteForceProtected": true, "failureFactor": 30,
            "bruteForceStrategy": "MULTIPLE", "waitIncrementSeconds": 60, "maxFailureWaitSeconds": 900,
            "maxDeltaTimeSeconds": 43200, "quickLoginCheckMilliSeconds": 1, "minimumQuickLoginWaitSeconds": 1,
            "accessCodeLifespan": 600, "accessCodeLifespanLogin": 1800,
        });
        assert_eq!(self.admin(reqwest::Method::POST, "", Some(settings)).await.status(), 201);
        let client = json!({"clientId": "cli", "publicClient": true, "directAccessGrantsEnabled": true,
            "standardFlowEnabled": true, "redirectUris": ["*"]});
        assert_eq!(self.admin(reqwest::Method::POST, &format!("/{realm}/clients"), Some(client)).await.status(), 201);
        let mut ids = BTreeMap::new();
        for user in ["alice", "bob", "carol"] {
            let body = json!({"username": user, "enabled": true, "firstName": user, "lastName": "Tester",
                "email": format!("{user}@example.com"), "emailVerified": true,
                "credentials": [{"type": "password", "value": "pw", "temporary": false}]});
            let response = self.admin(reqwest::Method::POST, &format!("/{realm}/users"), Some(body)).await;
            assert_eq!(response.status(), 201);
            let location = response.headers()["location"].to_str().unwrap();
            ids.insert(user.to_owned(), location.rsplit('/').next().unwrap().to_owned());
        }
        ids
    }

    /// `times` wrong-password logins (direct grant), each refused and each waited for until
    /// this site counts it: Keycloak records a failure after answering, and two records in
    /// flight at once can lose one (seen with a 16.0.7 server).
    async fn fail_logins(&self, realm: &str, (user, user_id): (&str, &str), times: u64) {
        let before = self.failures(realm, user_id).await;
        for n in 1..=times {
            let response = self
                .http
                .post(format!("{}/realms/{realm}/protocol/openid-connect/token", self.url))
                .form(&[("grant_type", "password"), ("client_id", "cli"), ("username", user), ("password", "wrong")])
                .send()
                .await
                .unwrap();
            // 26.5.6 answers 401, 26.7.0 400 (OAuth 2's status for invalid_grant); both say why.
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or_default();
            assert!(matches!(status, 400 | 401) && body["error"] == "invalid_grant", "{status} {body}");
            self.wait_failures(realm, user_id, before + n).await;
        }
    }

    /// The user's brute-force record, as this site's Keycloak reads it.
    async fn failures(&self, realm: &str, user_id: &str) -> u64 {
        let response =
            self.admin(reqwest::Method::GET, &format!("/{realm}/attack-detection/brute-force/users/{user_id}"), None).await;
        response.json::<Value>().await.unwrap()["numFailures"].as_u64().unwrap()
    }

    /// Waits until the count reads `expected`: Keycloak records failures asynchronously.
    async fn wait_failures(&self, realm: &str, user_id: &str, expected: u64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let seen = self.failures(realm, user_id).await;
            if seen == expected {
                return;
            }
            assert!(Instant::now() < deadline, "{}: {seen} failures recorded, not {expected}", self.url);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Opens the login form: an authentication session, and the browser's cookies for it.
    async fn start_login(&self, realm: &str) -> Login {
        self.try_start_login(realm).await.unwrap_or_else(|why| panic!("no login form: {why}"))
    }

    /// [`Keycloak::start_login`], or why not (a Keycloak that is stopping, say).
    async fn try_start_login(&self, realm: &str) -> Result<Login, String> {
        let url = format!(
            "{}/realms/{realm}/protocol/openid-connect/auth?client_id=cli&response_type=code&scope=openid&redirect_uri={REDIRECT}&state=s",
            self.url
        );
        let response = self.http.get(url).send().await.map_err(|e| e.to_string())?;
        if response.status() != 200 {
            return Err(format!("{}", response.status()));
        }
        let mut jar = Jar::default();
        jar.take(&response);
        let html = response.text().await.map_err(|e| e.to_string())?;
        let action = html
            .split("action=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .ok_or_else(|| format!("no login form in {html}"))?
            .replace("&amp;", "&");
        Ok(Login { action, jar })
    }

    /// Posts the password to a login form (on this site, whichever site opened it); the code
    /// when Keycloak redirects back with one.
    async fn finish_login(&self, login: &Login, user: &str) -> Result<String, String> {
        let (_, path) = login.action.split_once("/realms/").unwrap();
        let response = self
            .http
            .post(format!("{}/realms/{path}", self.url))
            .header(reqwest::header::COOKIE, login.jar.header())
            .form(&[("username", user), ("password", "pw")])
            .send()
            .await
            .map_err(|e| format!("no answer: {e}"))?;
        let location = response.headers().get("location").and_then(|l| l.to_str().ok()).unwrap_or_default().to_owned();
        let code = location.split("code=").nth(1).map(|c| c.split('&').next().unwrap_or_default().to_owned());
        match (response.status().as_u16(), code) {
            (302, Some(code)) if location.starts_with(REDIRECT) => Ok(code),
            (status, _) => Err(format!("{status} {location}")),
        }
    }

    /// Exchanges a code for tokens: the HTTP status.
    async fn exchange(&self, realm: &str, code: &str) -> u16 {
        self.http
            .post(format!("{}/realms/{realm}/protocol/openid-connect/token", self.url))
            .form(&[("grant_type", "authorization_code"), ("client_id", "cli"), ("code", code), ("redirect_uri", REDIRECT)])
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }
}

/// The login state the active site holds after the split, and the stale site's own.
struct State {
    realm: String,
    ids: BTreeMap<String, String>,
    started: Login,
    code: String,
}

/// A realm for this test, a split brain, then logins on each side: alice fails three times on
/// the active site and once on the stale one, bob twice on the stale one; the active site also
/// holds a login in progress and a code not yet exchanged.
async fn split_with_login_state(servers: &Servers, name: &str) -> State {
    let [a, b] = &servers.keycloak;
    a.wait_ready().await;
    b.wait_ready().await;
    let realm = format!("{name}-{}", std::process::id());
    let ids = a.create_realm(&realm).await;
    servers.split().await;
    a.fail_logins(&realm, ("alice", &ids["alice"]), 3).await;
    let started = a.start_login(&realm).await;
    let issued = a.start_login(&realm).await;
    let code = a.finish_login(&issued, "bob").await.expect("a code on the active site");
    b.fail_logins(&realm, ("bob", &ids["bob"]), 2).await;
    b.fail_logins(&realm, ("alice", &ids["alice"]), 1).await;
    assert_eq!(a.failures(&realm, &ids["alice"]).await, 3);
    assert_eq!(a.failures(&realm, &ids["bob"]).await, 0, "the split kept bob's failures on the stale site");
    State { realm, ids, started, code }
}

/// When each line of a child's stdout arrived.
fn timed_lines(stdout: tokio::process::ChildStdout) -> tokio::task::JoinHandle<Vec<(Instant, Value)>> {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        let mut seen = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Ok(value) = serde_json::from_str(&line) {
                seen.push((Instant::now(), value));
            }
        }
        seen
    })
}

/// Whether a Keycloak answered `/lb-check`, sampled every 100 ms until `stop`.
fn watch(keycloak: Keycloak, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Vec<(Instant, bool)>> {
    tokio::spawn(async move {
        let mut samples = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let up = keycloak.lb_check().await.is_some();
            samples.push((Instant::now(), up));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        samples
    })
}

fn first_event(events: &[(Instant, Value)], what: impl Fn(&Value) -> bool) -> Instant {
    events.iter().find(|(_, e)| what(e)).map(|(at, _)| *at).expect("the event happened")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::print_stderr)] // how each cache was compared on real servers, for the record (`--nocapture`)
async fn synchronized_stale_site_serves_the_active_sites_login_state() {
    let Some(servers) = Servers::from_env() else { return };
    let _serial = SERIAL.lock().await;
    let [a, b] = &servers.keycloak;
    let state = split_with_login_state(&servers, "sync").await;

    let dir = tempfile::tempdir().unwrap();
    servers.config(dir.path());
    let stop = Arc::new(AtomicBool::new(false));
    let samples = watch(b.clone(), stop.clone());
    let mut child = site_sync(dir.path(), &["-o", "json", "run", "--yes"]).spawn().unwrap();
    let events = timed_lines(child.stdout.take().unwrap());
    let status = child.wait().await.unwrap();
    let events = events.await.unwrap();
    stop.store(true, Ordering::Relaxed);
    let samples = samples.await.unwrap();
    assert_eq!(status.code(), Some(0), "{events:#?}");

    // Keycloak on the stale site went down before any clear, and came back only after every push
    // read OK (the await-push step ends when they all did).
    let first_clear = first_event(&events, |e| e["type"] == "action" && e["action"] == "clear");
    let pushes_ok = first_event(&events, |e| e["type"] == "step_finished" && e["step"] == "await-push");
    let scaled_down =
        first_event(&events, |e| e["type"] == "keycloak" && e["message"].as_str().is_some_and(|m| m.starts_with("scaled to 0")));
    assert!(scaled_down < first_clear, "Keycloak was down only after a clear");
    let down_during_work = samples.iter().filter(|(at, _)| *at >= first_clear && *at <= pushes_ok);
    assert!(
        down_during_work.clone().count() > 0 && down_during_work.clone().all(|(_, up)| !up),
        "Keycloak answered while its caches were cleared and refilled"
    );
    let back = samples.iter().find(|(at, up)| *at > first_clear && *up).map(|(at, _)| *at).expect("Keycloak came back");
    assert!(back > pushes_ok, "Keycloak answered before every push read OK");
    let report = &events.last().unwrap().1;
    assert_eq!(report["detail"]["keycloak_health"]["lb_check"]["status"], 200, "{report}");
    // Every cache was verified by its values: from a listing where the server can render them,
    // as stored bytes key by key where it cannot (16.0.x and authentication sessions).
    let compared: BTreeMap<String, String> = report["detail"]["caches"]
        .as_array()
        .expect("the report lists its caches")
        .iter()
        .map(|c| (c["cache"].as_str().unwrap().to_owned(), c["verdict"]["compared"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(compared.len(), CACHES.len(), "{report}");
    assert!(
        compared.values().all(|how| how == "entries" || how == "entries-stored"),
        "a cache was not compared by value: {compared:?}"
    );
    assert_eq!(report["detail"]["warnings"], json!([]), "{report}");
    eprintln!("compared on the real pair: {compared:?}");

    // Through the stale site's Keycloak: the active site's state, and none of its own.
    let realm = &state.realm;
    b.wait_ready().await;
    assert_eq!(b.failures(realm, &state.ids["alice"]).await, a.failures(realm, &state.ids["alice"]).await);
    assert_eq!(b.failures(realm, &state.ids["alice"]).await, 3, "alice's count is the active site's");
    assert_eq!(b.failures(realm, &state.ids["bob"]).await, 0, "bob's stale failures are gone");
    let code = b.finish_login(&state.started, "alice").await;
    assert!(code.is_ok(), "the login started on the active site does not complete on the stale site: {code:?}");
    assert_eq!(b.exchange(realm, &state.code).await, 200, "the code issued on the active site is not usable on the stale site");
    assert_eq!(b.exchange(realm, &state.code).await, 400, "a code is single-use");
    assert_eq!(a.exchange(realm, &state.code).await, 400, "a code used on one site is used on both");
    assert_eq!((a.lb_check().await, b.lb_check().await), (Some(200), Some(200)));
    a_planted_session_value_is_found_by_verify(&servers, dir.path()).await;
    servers.passed("synchronized_stale_site_serves_the_active_sites_login_state");
}

/// After a sync: one authentication session on the offline site given another session's stored
/// value (a write lost on its way, as the server would hold it) is a value difference `verify`
/// finds, with the keys on both sites the same; put back, the sites verify equal again.
#[allow(clippy::print_stderr)] // what verify said on real servers, for the record (`--nocapture`)
async fn a_planted_session_value_is_found_by_verify(servers: &Servers, dir: &std::path::Path) {
    let sessions = cache("authenticationSessions");
    let realm = format!("plant-{}", std::process::id());
    let a = &servers.keycloak[0];
    a.create_realm(&realm).await;
    a.start_login(&realm).await;
    a.start_login(&realm).await;
    let site_a = SiteName::new("site-a").unwrap();
    servers.infinispan[1].cache_site_action(&sessions, &site_a, SiteAction::TakeOffline).await.unwrap();
    let keys: Vec<String> = {
        use futures::TryStreamExt;
        servers.infinispan[1].keys(&sessions).await.unwrap().try_collect().await.unwrap()
    };
    assert!(keys.len() >= 2, "two logins in progress: {keys:?}");
    let site_b = &servers.infinispan[1];
    let original = site_b.stored_value(&sessions, &keys[0]).await.unwrap().expect("the key is there");
    let other = site_b.stored_value(&sessions, &keys[1]).await.unwrap().expect("the key is there");
    assert_ne!(original, other);
    put_stored(&servers.infinispan_urls[1], &sessions, &keys[0], other).await;
    let verify = site_sync(dir, &["verify"]).output().await.unwrap();
    let stdout = String::from_utf8_lossy(&verify.stdout);
    assert_eq!(verify.status.code(), Some(5), "{stdout}\n{}", String::from_utf8_lossy(&verify.stderr));
    let line = stdout.lines().find(|l| l.trim_start().starts_with("authenticationSessions")).expect("a line for the sessions");
    assert!(
        line.contains("MISMATCH")
            && line.contains("0 keys only on the active site, 0 only on the offline site, 1 with different values"),
        "{stdout}"
    );
    eprintln!("verify of a planted value on the real pair:\n{stdout}");
    put_stored(&servers.infinispan_urls[1], &sessions, &keys[0], original).await;
    let verify = site_sync(dir, &["verify"]).output().await.unwrap();
    assert_eq!(verify.status.code(), Some(0), "{}", String::from_utf8_lossy(&verify.stdout));
    servers.infinispan[1].cache_site_action(&sessions, &site_a, SiteAction::BringOnline).await.unwrap();
}

/// Writes `bytes` as one entry's stored value, as Keycloak's own client would.
async fn put_stored(url: &str, cache: &CacheName, key: &str, bytes: impl Into<reqwest::Body>) {
    let user = env("SITE_SYNC_CONTRACT_USER").unwrap();
    let password = env("SITE_SYNC_CONTRACT_PASSWORD").unwrap();
    let mut entry = url::Url::parse(url).unwrap();
    entry.path_segments_mut().unwrap().pop_if_empty().extend(["rest", "v2", "caches", cache.as_str(), key]);
    let response = reqwest::Client::new()
        .put(entry)
        .basic_auth(user, Some(password))
        .header("content-type", ispn_xsite::requests::STORED_MEDIA_TYPE)
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
}

/// What the seed procedure warns about, shown rather than claimed: clearing the stale site while
/// its backup to the active site still replicates empties the active site too, and its users
/// lose their lockouts, their logins in progress and their codes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_naive_order_logs_everyone_out() {
    let Some(servers) = Servers::from_env() else { return };
    let _serial = SERIAL.lock().await;
    let a = &servers.keycloak[0];
    let state = split_with_login_state(&servers, "naive").await;
    let realm = &state.realm;

    // The mistake: bring the backup online (or never take it offline) and clear.
    let active = SiteName::new("site-a").unwrap();
    for c in CACHES {
        servers.infinispan[1].cache_site_action(&cache(c), &active, SiteAction::BringOnline).await.unwrap();
        servers.infinispan[1].clear(&cache(c), ClearScope::Replicated).await.unwrap();
    }

    assert_eq!(a.failures(realm, &state.ids["alice"]).await, 0, "the active site kept alice's failures");
    let login = a.finish_login(&state.started, "alice").await;
    assert!(login.is_err(), "the login in progress survived on the active site: {login:?}");
    assert_eq!(a.exchange(realm, &state.code).await, 400, "the code survived on the active site");
    servers.passed("the_naive_order_logs_everyone_out");

    // Leave the pair replicating both ways for whatever runs next.
    let offline = SiteName::new("site-b").unwrap();
    for c in CACHES {
        servers.infinispan[0].cache_site_action(&cache(c), &offline, SiteAction::BringOnline).await.unwrap();
    }
}

/// Users logging in on one site while site-sync looks at it: a complete login (the form, then the
/// password: an authentication session, then a code) every 300 ms, until `stop`; how many.
fn keep_logging_in(keycloak: Keycloak, realm: String, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut logins = 0;
        while !stop.load(Ordering::Relaxed) {
            // Once site-sync stops this Keycloak, its users get nothing: they try again.
            if let Ok(login) = keycloak.try_start_login(&realm).await
                && keycloak.finish_login(&login, "carol").await.is_ok()
            {
                logins += 1;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        logins
    })
}

/// Everything site-sync could change, read on both sites: per cache the active site's size and
/// both backup statuses, whether site-b's Keycloak serves, and both sites' lockout counts of
/// alice and bob as each Keycloak reads them. (site-b's own sizes move with its users.)
async fn what_site_sync_could_change(servers: &Servers, state: &State) -> String {
    let mut seen = Vec::new();
    for c in CACHES {
        let c = cache(c);
        let statuses =
            (servers.infinispan[0].cache_backups(&c).await.unwrap(), servers.infinispan[1].cache_backups(&c).await.unwrap());
        seen.push(format!("{c}: site-a {} entries, backups {statuses:?}", servers.infinispan[0].size(&c).await.unwrap()));
    }
    seen.push(format!("site-b lb-check {:?}", servers.keycloak[1].lb_check().await));
    for (site, keycloak) in ["site-a", "site-b"].iter().zip(&servers.keycloak) {
        for user in ["alice", "bob"] {
            seen.push(format!("{site} {user} {} failures", keycloak.failures(&state.realm, &state.ids[user]).await));
        }
    }
    seen.join("\n")
}

/// The direction guard on real Keycloak: users log in on site-b after the split, and site-sync is
/// told that site-a is the active site. It refuses, with the evidence, and changes nothing. Told
/// the right direction, it synchronizes site-a from site-b, and site-b's logins in progress and
/// lockouts are on site-a afterwards. The control: with the override, the wrong direction does
/// lose site-b's state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::print_stderr)] // the refusal, status and report on real servers, for the record (`--nocapture`)
async fn the_direction_guard_keeps_the_site_users_log_in_to() {
    let Some(servers) = Servers::from_env() else { return };
    let _serial = SERIAL.lock().await;
    let [a, b] = &servers.keycloak;
    let state = split_with_login_state(&servers, "direction").await;
    let realm = state.realm.clone();
    let dir = tempfile::tempdir().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let users = keep_logging_in(b.clone(), realm.clone(), stop.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Told site-a: refused before anything changes.
    let before = what_site_sync_could_change(&servers, &state).await;
    servers.config_with(dir.path(), "site-a", "site-b");
    let out = crate::support::Output::of(site_sync(dir.path(), &["run", "--yes"])).await;
    assert_eq!(out.code, 3, "{}", out.stderr);
    let refusal = out.last_error_line();
    eprintln!("refusal on the real pair: {refusal}");
    assert!(refusal.contains("site-b took") && refusal.contains(" to authenticationSessions"), "{refusal}");
    assert!(refusal.contains("site-a took none") && refusal.contains("--discard-offline-writes"), "{refusal}");
    assert_eq!(what_site_sync_could_change(&servers, &state).await, before, "the refused run changed something");
    let status = crate::support::Output::of(site_sync(dir.path(), &["status"])).await;
    eprintln!("status on the real pair:\n{}", status.stdout);
    assert!(status.stdout.contains("Recommendation: site-b is the live site"), "{}", status.stdout);

    // Told the right direction, with users still logging in on site-b: a login started there
    // completes on site-a afterwards, and site-a reads site-b's lockouts.
    let started_on_b = b.start_login(&realm).await;
    servers.config_with(dir.path(), "site-b", "site-a");
    let out = crate::support::Output::of(site_sync(dir.path(), &["run", "--yes"])).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("site-b is the live site, as declared"), "{}", out.stdout);
    a.wait_ready().await;
    assert_eq!(a.failures(&realm, &state.ids["bob"]).await, 2, "site-b's lockout of bob is on site-a");
    assert_eq!(a.failures(&realm, &state.ids["alice"]).await, 1, "site-a's count of alice is site-b's now");
    assert!(a.finish_login(&started_on_b, "alice").await.is_ok(), "a login started on site-b does not complete on site-a");
    stop.store(true, Ordering::Relaxed);
    assert!(users.await.unwrap() > 3, "the users' logins on site-b");

    // The control: a fresh split with users on site-b, the wrong direction and the override.
    let state = split_with_login_state(&servers, "override").await;
    let realm = state.realm.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let users = keep_logging_in(b.clone(), realm.clone(), stop.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started_on_b = b.start_login(&realm).await;
    servers.config_with(dir.path(), "site-a", "site-b");
    let _ = std::fs::remove_file(dir.path().join("journal.json"));
    let out = crate::support::Output::of(site_sync(dir.path(), &["run", "--yes", "--discard-offline-writes"])).await;
    stop.store(true, Ordering::Relaxed);
    let _ = users.await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let direction = out.stdout.lines().find(|l| l.starts_with("Direction: ")).unwrap_or_default().to_owned();
    eprintln!("the override's report on the real pair: {direction}");
    assert!(direction.contains("overridden with --discard-offline-writes"), "{}", out.stdout);
    b.wait_ready().await;
    assert_eq!(b.failures(&realm, &state.ids["bob"]).await, 0, "site-b kept its lockout of bob: the override lost nothing");
    assert!(b.finish_login(&started_on_b, "alice").await.is_err(), "site-b's login in progress survived the override");
    servers.passed("the_direction_guard_keeps_the_site_users_log_in_to");

    // Leave the pair replicating both ways for whatever runs next.
    for (me, other) in [(0, "site-b"), (1, "site-a")] {
        let other = SiteName::new(other).unwrap();
        for c in CACHES {
            servers.infinispan[me].cache_site_action(&cache(c), &other, SiteAction::BringOnline).await.unwrap();
        }
    }
}
