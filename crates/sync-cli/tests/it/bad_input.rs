//! Bad input: each case gets a one-line message naming the problem (and the fix), a documented
//! exit code, and leaves both sites and both clusters exactly as they were.

use fake_ispn::{AuthMechanism, ClusterSpec};

use crate::support::*;

const USAGE: i32 = 2;
const REFUSED: i32 = 3;
const NEEDS_CONFIRMATION: i32 = 4;

async fn expect(env: &Env, args: &[&str], code: i32, fragment: &str) {
    let before = env.state();
    let out = env.run(args).await;
    assert_eq!(out.code, code, "wrong exit code; stderr:\n{}", out.stderr);
    // Our errors are one `site-sync: ` line; clap's usage errors are one `error: ` line followed
    // by its usual hint.
    let errors: Vec<&str> = out.stderr.lines().filter(|l| l.starts_with("site-sync: ") || l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "expected exactly one error line in:\n{}", out.stderr);
    assert!(errors[0].contains(fragment), "expected {fragment:?} in {:?}", errors[0]);
    assert_eq!(env.state(), before, "something changed on a site or a cluster");
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

macro_rules! case {
    ($name:ident, $env:expr, $args:expr, $code:expr, $fragment:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let env = $env;
            expect(&env, $args, $code, $fragment).await;
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
case!(bad_duration, edited("poll_interval: 50ms", "poll_interval: soon").await, &["plan"], USAGE, "is not a duration");
case!(malformed_yaml_names_line_and_column, edited("sites:\n", "sites:\n  - [\n").await, &["plan"], USAGE, "line 8 column");
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
    edited("url: http://127.0.0.1", "url: http://127.0.0.1:9#").await,
    &["run", "--yes"],
    REFUSED,
    "cannot connect"
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
case!(https_to_a_plain_http_server, edited("url: http://", "url: https://").await, &["run", "--yes"], REFUSED, "TLS failed");
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
