//! Bad input: each case gets a one-line message naming the problem (and the fix), a documented
//! exit code, and leaves both sites and both clusters exactly as they were.

use fake_ispn::{AuthMechanism, ClusterSpec};
use keycloak_scale::fake::FakeKube;

use crate::support::*;

const USAGE: i32 = 2;
const REFUSED: i32 = 3;
const NEEDS_CONFIRMATION: i32 = 4;

/// Runs `args`, checks the exit code and that nothing changed on either site or cluster, and
/// returns the error lines (`site-sync: ` lines, or clap's `error: ` line) with the scratch
/// directory and ports replaced, for the row's snapshot.
async fn errors_of(env: &Env, args: &[&str], code: i32) -> String {
    let before = env.state();
    let out = env.run(args).await;
    assert_eq!(out.code, code, "wrong exit code; stderr:\n{}", out.stderr);
    let errors: Vec<&str> = out.stderr.lines().filter(|l| l.starts_with("site-sync: ") || l.starts_with("error: ")).collect();
    assert!(!errors.is_empty(), "no error line in:\n{}", out.stderr);
    // A library's own log line about the same failure ("ERROR failed with error ...") is noise.
    assert!(!out.stderr.contains("ERROR"), "a stray log line came with the error:\n{}", out.stderr);
    assert_eq!(env.state(), before, "something changed on a site or a cluster");
    let text = errors.join("\n").replace(env.dir.path().to_str().unwrap(), "<dir>");
    regex_lite::Regex::new(r"127\.0\.0\.1:\d+").unwrap().replace_all(&text, "127.0.0.1:<port>").into_owned()
}

async fn expect(env: &Env, args: &[&str], code: i32, fragment: &str) -> String {
    let errors = errors_of(env, args, code).await;
    // Our errors are one `site-sync: ` line per problem; clap's usage errors one `error: ` line.
    assert!(errors.contains(fragment), "expected {fragment:?} in {errors:?}");
    errors
}

async fn with_config(text: &str) -> Env {
    let env = Env::start().await;
    env.split_brain(10).await;
    env.write_config(text);
    env
}

/// The default configuration with the offline site's (last) `from` replaced by `to`.
async fn edited_offline(from: &str, to: &str) -> Env {
    let env = Env::start().await;
    let config = env.config();
    let at = config.rfind(from).expect("present");
    env.write_config(&format!("{}{to}{}", &config[..at], &config[at + from.len()..]));
    env
}

/// The default configuration with `from` replaced by `to` (which must occur).
async fn edited(from: &str, to: &str) -> Env {
    let env = Env::start().await;
    env.split_brain(10).await;
    let config = env.config();
    assert!(config.contains(from), "{from:?} is not in the configuration");
    env.write_config(&config.replacen(from, to, 1));
    env
}

/// A row: the environment, the command, its exit code, a fragment of its message (what the row
/// is about), and the whole message as a snapshot (`snapshots/it__bad_input__<row>.snap`).
macro_rules! case {
    ($name:ident, $env:expr, $args:expr, $code:expr, $fragment:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let env = $env;
            let message = expect(&env, $args, $code, $fragment).await;
            insta::assert_snapshot!(stringify!($name), message);
        }
    };
}

// ----- the configuration (exit 2) ---------------------------------------------------------------

case!(
    config_file_missing,
    {
        let env = Env::start().await;
        std::fs::remove_file(env.path("site-sync.yaml")).unwrap();
        env
    },
    &["run", "--yes"],
    USAGE,
    "cannot read the configuration"
);
case!(malformed_yaml, with_config("active: [site-a\n").await, &["plan"], USAGE, "is not valid");
case!(unknown_top_level_key, edited("journal:", "jurnal:").await, &["plan"], USAGE, "unknown field `jurnal`");
case!(unknown_site_key, edited("    kubernetes:", "    kubernets:").await, &["plan"], USAGE, "unknown field `kubernets`");
case!(
    unknown_setting,
    edited("  poll_interval: 50ms", "  poll_every: 50ms").await,
    &["plan"],
    USAGE,
    "unknown field `poll_every`"
);
case!(
    verify_level_that_is_only_reported,
    edited("  poll_interval: 50ms", "  poll_interval: 50ms\n  verify: entries-stored").await,
    &["plan"],
    USAGE,
    "settings.verify: entries-stored is what a verification reports"
);
case!(bad_duration, edited("poll_interval: 50ms", "poll_interval: soon").await, &["plan"], USAGE, "is not a duration");
case!(
    malformed_yaml_names_field_and_line,
    edited("sites:\n", "sites:\n  - [\n").await,
    &["plan"],
    USAGE,
    "sites (line 9): expected a mapping"
);
case!(
    parallelism_zero,
    edited("  poll_interval: 50ms", "  poll_interval: 50ms\n  parallelism: 0").await,
    &["plan"],
    USAGE,
    "settings.parallelism: 0 is out of range; allowed: 1 to 64"
);
case!(
    poll_interval_zero,
    edited("poll_interval: 50ms", "poll_interval: 0s").await,
    &["run", "--yes"],
    USAGE,
    "settings.poll_interval: 0 ms is out of range; allowed: 10 ms to 1m"
);
case!(
    push_stall_timeout_too_short,
    edited("  poll_interval: 50ms", "  poll_interval: 50ms\n  push_stall_timeout: 1s").await,
    &["config", "check"],
    USAGE,
    "settings.push_stall_timeout: 1.00 s is out of range; allowed: 5.00 s to 1d"
);
case!(
    verify_keys_was_replaced,
    edited("  poll_interval: 50ms", "  poll_interval: 50ms\n  verify_keys: true").await,
    &["plan"],
    USAGE,
    "settings.verify_keys was replaced by settings.verify"
);
case!(unknown_verify_level, Env::start().await, &["run", "--yes", "--verify", "thorough"], USAGE, "is not a verification level");
case!(
    journal_directory_missing_for_run,
    edited("journal: journal.json", "journal: no-such-dir/journal.json").await,
    &["run", "--yes"],
    USAGE,
    "the directory"
);
case!(
    journal_directory_missing_for_plan,
    edited("journal: journal.json", "journal: no-such-dir/journal.json").await,
    &["plan"],
    USAGE,
    "does not exist; create it, or point `journal:` (or --journal) elsewhere"
);
case!(
    journal_directory_missing_for_config_check,
    Env::start().await,
    &["--journal", "no-such-dir/j.json", "config", "check"],
    USAGE,
    "no-such-dir"
);
case!(
    active_not_a_site,
    edited("active: site-a", "active: site-x").await,
    &["plan"],
    USAGE,
    "the active site 'site-x' is not under `sites:`"
);
case!(
    offline_not_a_site,
    Env::start().await,
    &["--offline", "site-q", "plan"],
    USAGE,
    "the offline site 'site-q' is not under `sites:`"
);
case!(active_equals_offline, Env::start().await, &["--offline", "site-a", "run", "--yes"], USAGE, "are both 'site-a'");
case!(no_active_site, edited("active: site-a\n", "").await, &["plan"], USAGE, "no active site");
case!(url_without_scheme, edited("url: http://", "url: ").await, &["plan"], USAGE, "must start with http:// or https://");
case!(
    ca_file_and_insecure,
    edited("      user: admin\n", "      user: admin\n      insecure: true\n      ca_file: ca.pem\n").await,
    &["plan"],
    USAGE,
    "ca_file and insecure contradict each other"
);
case!(user_without_password_source, edited("      password_file: password\n", "").await, &["plan"], USAGE, "no password source");
case!(
    password_file_missing,
    edited("password_file: password", "password_file: nowhere").await,
    &["plan"],
    USAGE,
    "password_file"
);
case!(
    password_env_unset,
    edited("password_file: password", "password_env: SITE_SYNC_TEST_UNSET_VARIABLE").await,
    &["plan"],
    USAGE,
    "the environment variable SITE_SYNC_TEST_UNSET_VARIABLE is not set"
);
case!(
    two_password_sources,
    edited("      password_file: password\n", "      password_file: password\n      password_env: HOME\n").await,
    &["plan"],
    USAGE,
    "not both"
);
case!(
    ca_file_unreadable,
    edited("      user: admin\n", "      user: admin\n      ca_file: missing-ca.pem\n").await,
    &["plan"],
    USAGE,
    "ca_file"
);
case!(
    kubeconfig_missing,
    edited("kubeconfig: kubeconfig", "kubeconfig: no-such-kubeconfig").await,
    &["plan"],
    USAGE,
    "cannot read"
);
case!(
    context_missing,
    edited("context: site-a", "context: site-x").await,
    &["plan"],
    USAGE,
    "context \"site-x\" is not in the kubeconfig"
);
case!(
    offline_without_kubernetes_or_mode,
    {
        let env = Env::start().await;
        let config = env.config();
        let start = config.find("    kubernetes:\n      kubeconfig: kubeconfig\n      context: site-b").unwrap();
        env.write_config(&config[..start]);
        env
    },
    &["plan"],
    USAGE,
    "say how Keycloak is stopped"
);
case!(
    commands_mode_without_stop,
    edited_offline("      keycloak: keycloak\n", "      keycloak: keycloak\n    keycloak:\n      mode: commands\n").await,
    &["plan"],
    USAGE,
    "keycloak.stop is missing"
);
case!(empty_cache_list, Env::start().await, &["--caches", "", "plan"], USAGE, "cache name is empty");
case!(unknown_subcommand, Env::start().await, &["frobnicate"], USAGE, "unrecognized subcommand");
case!(bad_output_format, Env::start().await, &["-o", "yaml", "plan"], USAGE, "invalid value 'yaml'");
case!(bad_timeout_flag, Env::start().await, &["--request-timeout", "forever", "plan"], USAGE, "invalid value 'forever'");

// ----- the sites (exit 3: refused before anything changed) ------------------------------------------

case!(
    closed_port,
    {
        let env = Env::start().await;
        env.write_config(&env.config().replace(&env.url("site-a"), &format!("http://127.0.0.1:{}", free_port())));
        env
    },
    &["run", "--yes"],
    REFUSED,
    "cannot connect (connection refused)"
);
case!(
    wrong_password,
    {
        let env = Env::start().await;
        std::fs::write(env.path("password"), "wrong\n").unwrap();
        env
    },
    &["run", "--yes"],
    REFUSED,
    "401 Unauthorized for user 'admin'"
);
case!(
    user_without_admin_role,
    edited("      user: admin\n", "      user: observer\n").await,
    &["run", "--yes"],
    REFUSED,
    "needs the admin role"
);
case!(
    basic_forced_on_a_digest_only_server,
    {
        let env = Env::with(ClusterSpec::two_sites("site-a", "site-b").mechanisms(&[AuthMechanism::DigestMd5]), |k| k).await;
        env.write_config(&env.config().replacen("      user: admin\n", "      user: admin\n      auth: basic\n", 1));
        env
    },
    &["run", "--yes"],
    REFUSED,
    "does not offer BASIC authentication (it offers: DIGEST-MD5); use auth: digest"
);
case!(
    https_to_a_plain_http_server,
    edited("url: http://", "url: https://").await,
    &["run", "--yes"],
    REFUSED,
    "the server answers in plain HTTP, not TLS; use http://"
);
case!(
    wrong_context_path,
    edited("      user: admin\n", "      user: admin\n      context_path: api\n").await,
    &["run", "--yes"],
    REFUSED,
    "no Infinispan REST API at http://127.0.0.1"
);
case!(
    sites_swapped,
    {
        let env = Env::start().await;
        let swapped = env
            .config()
            .replace(&env.url("site-a"), "SWAP")
            .replace(&env.url("site-b"), &env.url("site-a"))
            .replace("SWAP", &env.url("site-b"));
        env.write_config(&swapped);
        env
    },
    &["run", "--yes"],
    REFUSED,
    "the sites are swapped"
);
case!(
    offline_url_points_at_the_active_site,
    {
        let env = Env::start().await;
        let config = env.config();
        let b = config.rfind(&env.url("site-b")).unwrap();
        env.write_config(&format!("{}{}{}", &config[..b], env.url("site-a"), &config[b + env.url("site-b").len()..]));
        env
    },
    &["run", "--yes"],
    REFUSED,
    "reports itself as 'site-a', not 'site-b'"
);
case!(
    unknown_site_name,
    {
        let env = Env::start().await;
        env.write_config(&env.config().replace("offline: site-b", "offline: site-c").replace("  site-b:", "  site-c:"));
        env
    },
    &["run", "--yes"],
    REFUSED,
    "not 'site-c'"
);
case!(
    cache_missing_on_the_offline_site,
    Env::with(ClusterSpec::two_sites("site-a", "site-b").without_cache("site-b", "work"), |k| k).await,
    &["--caches", "work,actionTokens", "run", "--yes"],
    REFUSED,
    "cache 'work' does not exist on the offline site 'site-b'"
);
case!(
    cache_without_backups,
    Env::with(ClusterSpec::two_sites("site-a", "site-b").local_cache("site-a", "local").local_cache("site-b", "local"), |k| k)
        .await,
    &["--caches", "local", "run", "--yes"],
    REFUSED,
    "cache 'local' on the active site 'site-a' does not back up to 'site-b'"
);
case!(
    unknown_cache_set,
    Env::with(ClusterSpec::two_sites("site-a", "site-b").caches(&["work", "custom"]), |k| k).await,
    &["run", "--yes"],
    REFUSED,
    "not a known Keycloak set"
);
case!(
    link_down,
    {
        let env = Env::start().await;
        env.ispn.cut_link("site-a", "site-b");
        env
    },
    &["run", "--yes"],
    REFUSED,
    "'site-a' does not see 'site-b'"
);
case!(keycloak_cr_missing, Env::start().await.tap_cr("missing"), &["run", "--yes"], REFUSED, "keycloaks \"missing\" not found");
case!(
    keycloak_rolling_update,
    {
        let env = Env::start().await;
        env.kube_b.set_rolling_update(NS, "keycloak", true);
        env
    },
    &["run", "--yes"],
    REFUSED,
    "is in a rolling update"
);
case!(
    lock_held,
    {
        let env = Env::start().await;
        env.kube_b.hold_lease(NS, "site-sync", "site-sync/other-run@ops-host", "2099-01-01T00:00:00Z", 3600);
        env
    },
    &["run", "--yes"],
    REFUSED,
    "another run holds the lock: site-sync/other-run@ops-host"
);
case!(no_terminal_without_yes, Env::start().await, &["run"], NEEDS_CONFIRMATION, "pass --yes");
case!(
    corrupt_journal,
    {
        let env = Env::start().await;
        std::fs::write(env.path("journal.json"), "{not json").unwrap();
        env
    },
    &["run", "--yes"],
    REFUSED,
    "is corrupt"
);
case!(
    journal_of_a_newer_site_sync,
    {
        let env = Env::start().await;
        std::fs::write(env.path("journal.json"), r#"{"schema_version": 99}"#).unwrap();
        env
    },
    &["resume", "--yes"],
    REFUSED,
    "schema version 99, newer than this site-sync understands"
);
case!(
    journal_of_another_pair,
    {
        let env = Env::start().await;
        env.split_brain(10).await;
        assert_eq!(env.run(&["run", "--yes"]).await.code, 0);
        let text = std::fs::read_to_string(env.path("journal.json")).unwrap().replace("\"site-b\"", "\"site-z\"");
        std::fs::write(env.path("journal.json"), text).unwrap();
        env
    },
    &["resume", "--yes"],
    REFUSED,
    "is for active 'site-a' / offline 'site-z'"
);
case!(nothing_to_resume, Env::start().await, &["resume", "--yes"], REFUSED, "nothing to resume");
case!(
    unknown_cache_in_the_list,
    Env::start().await,
    &["--caches", "nope", "run", "--yes"],
    REFUSED,
    "cache 'nope' does not exist on the active site"
);

// ----- no verdict about data that was never read (exit 3, every site named) ----------------------

/// A port on loopback where nothing listens (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A port on loopback that accepts connections and never answers (a hung server), for as long
/// as the test process lives.
fn hung_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        while let Ok((connection, _)) = listener.accept() {
            held.push(connection);
        }
    });
    port
}

/// The default environment with both sites' Infinispan URLs pointing at `port()`.
async fn both_sites_at(port: fn() -> u16) -> Env {
    let env = Env::start().await;
    let config = env.config().replace(&env.url("site-a"), &format!("http://127.0.0.1:{}", port()));
    env.write_config(&config.replace(&env.url("site-b"), &format!("http://127.0.0.1:{}", port())));
    env
}

case!(verify_with_both_sites_down, both_sites_at(free_port).await, &["verify"], REFUSED, "site-b: http://127.0.0.1");
case!(diff_with_both_sites_down, both_sites_at(free_port).await, &["diff"], REFUSED, "site-b: http://127.0.0.1");
case!(config_check_with_both_sites_down, both_sites_at(free_port).await, &["config", "check"], REFUSED, "site-b: http://");
case!(
    config_check_with_both_sites_hung,
    both_sites_at(hung_port).await,
    &["config", "check"],
    REFUSED,
    "no answer to GET /rest/v2/container within 5 s"
);
case!(
    verify_when_no_cache_backs_up_to_the_other_site,
    Env::with(ClusterSpec::two_sites("site-a", "site-b").caches(&[]), |k| k).await,
    &["verify"],
    REFUSED,
    "neither site-a nor site-b backs up any cache to the other, so there is nothing to compare"
);
case!(
    diff_when_no_cache_backs_up_to_the_other_site,
    Env::with(ClusterSpec::two_sites("site-a", "site-b").caches(&[]), |k| k).await,
    &["diff"],
    REFUSED,
    "nothing to compare"
);

// ----- URLs, checked when the configuration is read (exit 2) --------------------------------------

case!(
    url_with_credentials,
    edited("url: http://", "url: http://admin:hunter2@").await,
    &["status"],
    USAGE,
    "sites.site-a.infinispan.url: the URL carries credentials"
);
case!(
    url_port_out_of_range,
    edited("url: http://127.0.0.1:", "url: http://127.0.0.1:99").await,
    &["status"],
    USAGE,
    "invalid port number"
);
case!(
    url_with_spaces_around_it,
    {
        let env = Env::start().await;
        let url = env.url("site-b");
        env.write_config(&env.config().replace(&format!("url: {url}"), &format!("url: \" {url}\"")));
        env
    },
    &["verify"],
    USAGE,
    "sites.site-b.infinispan.url \" http://127.0.0.1"
);
case!(
    url_with_a_bad_host,
    {
        let env = Env::start().await;
        env.write_config(&env.config().replace(&env.url("site-a"), "http://exa mple:11222"));
        env
    },
    &["diff"],
    USAGE,
    "is not a valid URL (invalid international domain name)"
);
case!(
    url_with_a_fragment,
    {
        let env = Env::start().await;
        env.write_config(&env.config().replace(&env.url("site-a"), "http://127.0.0.1:11222/#x"));
        env
    },
    &["plan"],
    USAGE,
    "has a query or a fragment"
);
case!(
    keycloak_url_malformed,
    edited_offline("      keycloak: keycloak\n", "      keycloak: keycloak\n    keycloak:\n      url: keycloak.example:8080\n")
        .await,
    &["status"],
    USAGE,
    "sites.site-b.keycloak.url \"keycloak.example:8080\" must start with http:// or https://"
);

// ----- YAML: the field, its line, what was expected (exit 2) ---------------------------------------

case!(
    setting_of_the_wrong_type,
    edited("  poll_interval: 50ms", "  poll_interval: 50ms\n  parallelism: four").await,
    &["plan"],
    USAGE,
    "settings.parallelism (line 6): expected a whole number, found \"four\""
);
case!(
    caches_not_a_list,
    edited("journal: journal.json\n", "journal: journal.json\ncaches: work\n").await,
    &["verify"],
    USAGE,
    "caches (line 4): expected a list"
);
case!(
    boolean_not_true_or_false,
    edited("      user: admin\n", "      user: admin\n      insecure: maybe\n").await,
    &["plan"],
    USAGE,
    "sites.site-a.infinispan.insecure (line 13): expected true or false, found \"maybe\""
);
case!(
    duplicate_key,
    edited("journal: journal.json\n", "journal: journal.json\njournal: other.json\n").await,
    &["plan"],
    USAGE,
    "journal: the key appears twice, on lines 3 and 4; keep one"
);
case!(
    oversized_file,
    {
        let env = Env::start().await;
        env.write_config(&format!("{}# {}\n", env.config(), "x".repeat(300_000)));
        env
    },
    &["plan"],
    USAGE,
    "is too large (300"
);

// ----- the Kubernetes API server: its address, the context and what happened (exit 3) -------------

/// site-b's context pointing at another API server address.
async fn site_b_api_server_at(url: &str) -> Env {
    let env = Env::start().await;
    let kubeconfig = std::fs::read_to_string(env.path("kubeconfig")).unwrap();
    let site_b = kubeconfig.rfind("server: ").unwrap();
    let end = site_b + kubeconfig[site_b..].find('\n').unwrap();
    std::fs::write(env.path("kubeconfig"), format!("{}server: {url}{}", &kubeconfig[..site_b], &kubeconfig[end..])).unwrap();
    env
}

case!(
    api_server_refuses_connections,
    site_b_api_server_at(&format!("http://127.0.0.1:{}", free_port())).await,
    &["status"],
    REFUSED,
    "the Kubernetes API server http://127.0.0.1:<port> (context site-b) refused the connection"
);
case!(
    api_server_hung,
    site_b_api_server_at(&format!("http://127.0.0.1:{}", hung_port())).await,
    &["config", "check"],
    REFUSED,
    "(context site-b) did not answer: timed out after 10 s"
);
case!(
    api_server_refuses_the_token,
    Env::with(ClusterSpec::two_sites("site-a", "site-b"), FakeKube::unauthorized).await,
    &["plan"],
    REFUSED,
    "refused the credentials (401 Unauthorized)"
);

case!(
    in_cluster_outside_a_pod,
    edited_offline("      kubeconfig: kubeconfig\n      context: site-b\n", "      in_cluster: true\n").await,
    &["plan"],
    USAGE,
    "in_cluster: KUBERNETES_SERVICE_HOST is not set, so site-sync is not running in a pod"
);
case!(
    in_cluster_with_a_context,
    edited_offline("      context: site-b\n", "      context: site-b\n      in_cluster: true\n").await,
    &["plan"],
    USAGE,
    "sites.site-b.kubernetes: in_cluster uses the pod's ServiceAccount; drop kubeconfig and context"
);

trait TapCr {
    fn tap_cr(self, name: &str) -> Self;
}

impl TapCr for Env {
    /// Points the offline site's Keycloak at another CR name.
    fn tap_cr(self, name: &str) -> Self {
        let config = self.config();
        let at = config.rfind("      keycloak: keycloak").unwrap();
        self.write_config(&format!(
            "{}      keycloak: {name}{}",
            &config[..at],
            &config[at + "      keycloak: keycloak".len()..]
        ));
        self
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_rbac_permission_stops_before_any_data_change() {
    let env = Env::start().await;
    env.split_brain(10).await;
    env.kube_b.clone().forbid("patch", "keycloaks");
    let before = (env.entries("site-a"), env.entries("site-b"));
    let out = env.run(&["run", "--yes"]).await;
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(
        out.last_error_line().contains("cannot patch keycloaks in namespace keycloak (context site-b), which the run needs"),
        "{}",
        out.stderr
    );
    assert!(out.last_error_line().contains("nothing was changed"), "{}", out.stderr);
    assert_eq!((env.entries("site-a"), env.entries("site-b")), before);
    assert!(env.ispn.world().clears().is_empty());
    assert_eq!(env.kube_b.keycloak_state(NS, "keycloak"), Some((3, 3, 3, None)), "Keycloak untouched");
    // Asked of RBAC before anything: the CR was read (discovery) but never patched.
    assert!(env.kube_b.requests().iter().all(|r| !r.starts_with("PATCH")), "{:#?}", env.kube_b.requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_never_printed() {
    let env = Env::start().await;
    std::fs::write(env.path("password"), "hunter2-WRONG\n").unwrap();
    for args in [&["run", "--yes"][..], &["-o", "json", "plan"], &["-v", "status"], &["config", "check"]] {
        let out = env.run(args).await;
        assert!(!out.stdout.contains("hunter2") && !out.stderr.contains("hunter2"), "{args:?} printed the password");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_in_a_url_is_never_printed() {
    let env = Env::start().await;
    env.split_brain(10).await;
    // Refused at load wherever it is in the configuration...
    let config = env.config();
    for (from, to) in [("url: http://", "url: http://admin:hunter2@")] {
        env.write_config(&config.replacen(from, to, 1));
        for args in [&["status"][..], &["-o", "json", "verify"], &["-vv", "config", "check"]] {
            let out = env.run(args).await;
            assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
            assert!(!out.stdout.contains("hunter2") && !out.stderr.contains("hunter2"), "{args:?} printed the password");
        }
    }
    // ...and where site-sync does not own the URL (a kubeconfig's server), it is redacted in every
    // message and log line, at every log level.
    env.write_config(&config);
    let kubeconfig = std::fs::read_to_string(env.path("kubeconfig")).unwrap();
    std::fs::write(env.path("kubeconfig"), kubeconfig.replace("server: http://", "server: http://kube-admin:kube-s3cret@"))
        .unwrap();
    for args in [
        &["status"][..],
        &["-vv", "status"],
        &["-vv", "--log-format", "json", "plan"],
        &["-o", "json", "config", "check"],
        &["-vv", "verify"],
        &["-vv", "diff"],
        &["-vv", "run", "--yes"],
        &["-vv", "watch", "--once"],
    ] {
        let out = env.run(args).await;
        assert!(
            !out.stdout.contains("kube-s3cret") && !out.stderr.contains("kube-s3cret"),
            "{args:?} printed the password:\n{}",
            out.stderr
        );
    }
}
