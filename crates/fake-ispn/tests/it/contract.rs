//! The contract: what `ispn-xsite` may rely on from a server pair, checked through the real HTTP
//! client against fake pairs (every personality) and, when `SITE_SYNC_CONTRACT_A_URL` is set,
//! against a real pair (`cargo xtask e2e` sets it). The assertions are the same for both: where
//! the real server disagrees with the fake, the fake is fixed, never the assertion.
//!
//! Real pairs are shared by every case, so cases run one at a time and each starts by resetting
//! both sites (backups online, pushes cancelled and cleared, caches emptied).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use fake_ispn::{ADMIN_PASSWORD, ADMIN_USER, ClusterSpec, FakeCluster, KEYCLOAK_26_CACHES, Personality};
use futures::TryStreamExt;
use ispn_xsite::{
    BackupStatus, CacheName, CacheOutcome, ClearScope, Client, ClientConfig, ContainerSiteStatus, Credentials, Error, Mechanism,
    NodeStatus, PushStatus, SiteAction, SiteApi, SiteName, TakeOfflineConfig, TlsMode,
};

/// A server pair under test: two clients and the facts a case needs.
pub struct Pair {
    pub a: Client,
    pub b: Client,
    pub a_name: SiteName,
    pub b_name: SiteName,
    pub caches: Vec<CacheName>,
    urls: (String, String),
    tls: TlsMode,
    observer: Option<(String, String)>,
    /// Set for fake pairs: the version the fake imitates.
    pub personality: Option<Personality>,
}

/// Serializes cases on a shared real pair (tests of one binary run on several threads, each with
/// its own runtime, so an async-aware lock is needed across runtimes).
static REAL_PAIR_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn site(name: &str) -> SiteName {
    SiteName::new(name).unwrap()
}

fn cache(name: &str) -> CacheName {
    CacheName::new(name).unwrap()
}

impl Pair {
    fn client(url: &str, user: &str, password: &str, mechanism: Mechanism, tls: TlsMode) -> Client {
        let mut config = ClientConfig::new(url, Some(Credentials::new(user, password)));
        config.mechanism = mechanism;
        config.tls = tls;
        config.timeout = Duration::from_secs(20);
        Client::new(config).unwrap()
    }

    /// Another client for site A with other credentials or mechanism.
    pub fn client_a(&self, user: &str, password: &str, mechanism: Mechanism) -> Client {
        Self::client(&self.urls.0, user, password, mechanism, self.tls.clone())
    }

    /// Whether a real pair is configured.
    pub fn real() -> bool {
        env("SITE_SYNC_CONTRACT_A_URL").is_some()
    }

    fn from_env() -> Self {
        let a_url = env("SITE_SYNC_CONTRACT_A_URL").unwrap();
        let b_url = env("SITE_SYNC_CONTRACT_B_URL").expect("SITE_SYNC_CONTRACT_B_URL must be set with _A_URL");
        let user = env("SITE_SYNC_CONTRACT_USER").unwrap_or_else(|| ADMIN_USER.to_owned());
        let password = env("SITE_SYNC_CONTRACT_PASSWORD").unwrap_or_else(|| ADMIN_PASSWORD.to_owned());
        let tls = match (env("SITE_SYNC_CONTRACT_CA_FILE"), env("SITE_SYNC_CONTRACT_INSECURE")) {
            (Some(path), _) => TlsMode::CaPem(std::fs::read(path).expect("read the CA file")),
            (None, Some(_)) => TlsMode::Insecure,
            _ => TlsMode::System,
        };
        let mechanism = env("SITE_SYNC_CONTRACT_MECHANISM").map(|m| m.parse().unwrap()).unwrap_or_default();
        Self {
            a: Self::client(&a_url, &user, &password, mechanism, tls.clone()),
            b: Self::client(&b_url, &user, &password, mechanism, tls.clone()),
            a_name: site(&env("SITE_SYNC_CONTRACT_A_NAME").unwrap_or_else(|| "site-a".to_owned())),
            b_name: site(&env("SITE_SYNC_CONTRACT_B_NAME").unwrap_or_else(|| "site-b".to_owned())),
            caches: KEYCLOAK_26_CACHES.iter().map(|c| cache(c)).collect(),
            urls: (a_url, b_url),
            tls,
            observer: env("SITE_SYNC_CONTRACT_OBSERVER").map(|o| {
                let (u, p) = o.split_once(':').expect("SITE_SYNC_CONTRACT_OBSERVER is user:password");
                (u.to_owned(), p.to_owned())
            }),
            personality: None,
        }
    }

    /// A fake pair. The cluster is returned apart from the pair: a case's `async move` block
    /// captures only the fields it uses, so a cluster owned by the pair could be dropped (and its
    /// servers stopped) before the case runs.
    pub async fn fake(personality: Personality, nodes: usize) -> (Self, FakeCluster) {
        let mut spec = ClusterSpec::two_sites("site-a", "site-b").personality(personality).nodes(nodes);
        if nodes > 1 {
            // Like the real two-node harness, where either node may win the site-master election.
            spec.sites[0].answering_node_is_relay = false;
        }
        let fake = FakeCluster::start(spec).await.unwrap();
        let (a_url, b_url) = (fake.url("site-a"), fake.url("site-b"));
        let pair = Self {
            a: Self::client(&a_url, ADMIN_USER, ADMIN_PASSWORD, Mechanism::Auto, TlsMode::System),
            b: Self::client(&b_url, ADMIN_USER, ADMIN_PASSWORD, Mechanism::Auto, TlsMode::System),
            a_name: site("site-a"),
            b_name: site("site-b"),
            caches: KEYCLOAK_26_CACHES.iter().map(|c| cache(c)).collect(),
            urls: (a_url, b_url),
            tls: TlsMode::System,
            observer: Some(("observer".to_owned(), "password".to_owned())),
            personality: Some(personality),
        };
        (pair, fake)
    }

    /// Both sites back to a known state: every backup online, no push running or recorded,
    /// every cache empty.
    pub async fn reset(&self) {
        for (me, other) in [(&self.a, &self.b_name), (&self.b, &self.a_name)] {
            for c in &self.caches {
                me.cache_site_action(c, other, SiteAction::CancelPushState).await.unwrap();
                me.cache_site_action(c, other, SiteAction::CancelReceiveState).await.unwrap();
                me.cache_site_action(c, other, SiteAction::BringOnline).await.unwrap();
                me.clear_push_state_status(c).await.unwrap();
                me.set_take_offline_config(c, other, TakeOfflineConfig { after_failures: 0, min_wait: 0 }).await.unwrap();
            }
        }
        for me in [&self.a, &self.b] {
            for c in &self.caches {
                me.clear(c, ClearScope::LocalOnly).await.unwrap();
            }
        }
    }

    pub fn work(&self) -> &CacheName {
        self.caches.iter().find(|c| c.as_str() == "work").unwrap_or(&self.caches[0])
    }
}

/// Runs one case against a real pair if configured, else against a fake pair of each personality.
pub async fn run_case<F, Fut>(case: F)
where
    F: Fn(Pair) -> Fut,
    Fut: Future<Output = ()>,
{
    if Pair::real() {
        let _serial = REAL_PAIR_LOCK.lock().await;
        let pair = Pair::from_env();
        pair.reset().await;
        case(pair).await;
    } else {
        for (personality, nodes) in [(Personality::V14, 1), (Personality::V15, 1), (Personality::V16, 1), (Personality::V15, 2)] {
            let (pair, fake) = Pair::fake(personality, nodes).await;
            pair.reset().await;
            case(pair).await;
            fake.shutdown().await;
        }
    }
}

macro_rules! contract {
    ($($name:ident => $body:expr;)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                run_case($body).await;
            }
        )*
    };
}

/// Polls `probe` until it returns `Some`, for at most 30 s.
async fn eventually<T, Fut: Future<Output = Option<T>>>(what: &str, mut probe: impl FnMut() -> Fut) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn fill(site: &Client, c: &CacheName, prefix: &str, n: usize) {
    for i in 0..n {
        site.put(c, &format!("{prefix}-{i:04}"), &format!("value-{prefix}-{i}")).await.unwrap();
    }
}

/// Writes `n` entries with 32 requests in flight (a real server takes seconds otherwise).
async fn fill_fast(site: &Client, c: &CacheName, prefix: &str, n: usize) {
    use futures::StreamExt;
    futures::stream::iter(0..n)
        .map(|i| async move { site.put(c, &format!("{prefix}-{i:05}"), &format!("value-{prefix}-{i}")).await.unwrap() })
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
}

async fn all_keys(site: &Client, c: &CacheName) -> BTreeSet<String> {
    site.keys(c).await.unwrap().try_collect().await.unwrap()
}

async fn push_until_ok(pair: &Pair, c: &CacheName) {
    pair.a.cache_site_action(c, &pair.b_name, SiteAction::StartPushState).await.unwrap();
    eventually("push OK", || async {
        let report = pair.a.push_state_status(c).await.unwrap();
        match report.for_site(&pair.b_name) {
            Some(PushStatus::Ok) => Some(()),
            Some(PushStatus::Sending) => None,
            other => panic!("push of {c} read {other:?}"),
        }
    })
    .await;
}

contract! {
    version_is_detected_and_supported => |pair| async move {
        let version = pair.a.server_version().await.unwrap();
        assert!((14..=16).contains(&version.major), "{version}");
        if let Some(p) = pair.personality {
            assert_eq!(version.raw, p.version());
        }
        assert_eq!(pair.b.server_version().await.unwrap(), version);
    };

    container_info_names_each_site => |pair| async move {
        let a = pair.a.container_info().await.unwrap();
        let b = pair.b.container_info().await.unwrap();
        assert_eq!(a.local_site.as_deref(), Some(pair.a_name.as_str()));
        assert_eq!(b.local_site.as_deref(), Some(pair.b_name.as_str()));
        assert!(!a.cluster_members.is_empty());
        assert!(a.cluster_members.contains(&a.node_address));
    };

    sites_view_holds_both_sites_on_a_site_master_and_nothing_elsewhere => |pair| async move {
        for info in [pair.a.container_info().await.unwrap(), pair.b.container_info().await.unwrap()] {
            if info.relay_node {
                assert!(info.sees(&pair.a_name) && info.sees(&pair.b_name), "{:?}", info.sites_view);
            } else {
                assert!(info.sites_view.is_empty(), "{:?}", info.sites_view);
            }
        }
    };

    health_lists_every_replicated_cache => |pair| async move {
        let health = pair.a.health().await.unwrap();
        assert!(health.cluster_health.number_of_nodes >= 1);
        let names: BTreeSet<&str> = health.cache_health.iter().map(|c| c.cache_name.as_str()).collect();
        for c in &pair.caches {
            assert!(names.contains(c.as_str()), "{c} missing from {names:?}");
        }
    };

    cache_list_has_replicated_and_internal_caches => |pair| async move {
        let names = pair.a.cache_names().await.unwrap();
        for c in &pair.caches {
            assert!(names.contains(c));
        }
        assert!(names.iter().any(|n| n.as_str() == "___script_cache"));
    };

    each_cache_backs_up_to_the_other_site_online => |pair| async move {
        for c in &pair.caches {
            let a = pair.a.cache_backups(c).await.unwrap();
            assert_eq!(a, BTreeMap::from([(pair.b_name.clone(), BackupStatus::Online)]));
            let b = pair.b.cache_backups(c).await.unwrap();
            assert_eq!(b, BTreeMap::from([(pair.a_name.clone(), BackupStatus::Online)]));
        }
    };

    per_node_status_reads_online_on_every_node => |pair| async move {
        let nodes = pair.a.cache_site_nodes(pair.work(), &pair.b_name).await.unwrap();
        assert!(nodes.all_online(), "{nodes:?}");
        let members = pair.a.container_info().await.unwrap().cluster_members;
        assert_eq!(nodes.0.len(), members.len());
    };

    container_status_reads_online => |pair| async move {
        let all = pair.a.container_backups().await.unwrap();
        assert_eq!(all.get(&pair.b_name), Some(&ContainerSiteStatus::Online));
        assert_eq!(pair.a.container_site_status(&pair.b_name).await.unwrap(), ContainerSiteStatus::Online);
    };

    unknown_cache_is_a_typed_404 => |pair| async move {
        let missing = cache("no-such-cache");
        assert!(matches!(pair.a.cache_backups(&missing).await, Err(Error::UnknownCache { .. })));
        assert!(matches!(pair.a.size(&missing).await, Err(Error::UnknownCache { .. })));
        assert!(matches!(pair.a.push_state_status(&missing).await, Err(Error::UnknownCache { .. })));
    };

    cache_without_backups_is_a_typed_404 => |pair| async move {
        let local = cache("___script_cache");
        assert!(matches!(pair.a.cache_backups(&local).await, Err(Error::NoBackups { .. })));
        assert!(matches!(pair.a.push_state_status(&local).await, Err(Error::NoBackups { .. })));
    };

    unknown_site_is_a_typed_404_at_cache_level => |pair| async move {
        let nowhere = site("site-z");
        let work = pair.work();
        assert!(matches!(pair.a.cache_site_nodes(work, &nowhere).await, Err(Error::UnknownSite { cache: Some(_), .. })));
        let action = pair.a.cache_site_action(work, &nowhere, SiteAction::TakeOffline).await;
        assert!(matches!(action, Err(Error::UnknownSite { .. })), "{action:?}");
    };

    unknown_site_container_status_is_a_404 => |pair| async move {
        let status = pair.a.container_site_status(&site("site-z")).await;
        assert!(matches!(status, Err(Error::UnknownSite { cache: None, .. })), "{status:?}");
    };

    container_action_on_unknown_site_fails_per_cache_with_200 => |pair| async move {
        let results = pair.a.container_site_action(&site("site-z"), SiteAction::TakeOffline).await.unwrap();
        for c in &pair.caches {
            assert_eq!(results.0.get(c), Some(&CacheOutcome::Failed("Incorrect site name: site-z".to_owned())));
        }
        assert!(results.failures().count() >= pair.caches.len());
        // Nothing changed for the real backup.
        assert_eq!(pair.a.container_site_status(&pair.b_name).await.unwrap(), ContainerSiteStatus::Online);
    };

    write_counters_count_local_and_replicated_writes_and_removals => |pair| async move {
        let work = pair.work();
        let (a0, b0) = (pair.a.cache_stats(work).await.unwrap(), pair.b.cache_stats(work).await.unwrap());
        for i in 0..3 {
            pair.a.put(work, &format!("counted-{i}"), "v").await.unwrap();
        }
        assert!(pair.a.delete(work, "counted-0").await.unwrap());
        let (a1, b1) = (pair.a.cache_stats(work).await.unwrap(), pair.b.cache_stats(work).await.unwrap());
        assert_eq!((a1.stores - a0.stores, a1.remove_hits - a0.remove_hits), (3, 1), "{a0:?} {a1:?}");
        // What the backup replicates is counted on the site that receives it too, by the site
        // master that received it (a node of several counts the writes that went through it):
        // the direction guard takes them out of that site's own writes where it can.
        let replicated = if pair.b.container_info().await.unwrap().relay_node { (3, 1) } else { (0, 0) };
        assert_eq!((b1.stores - b0.stores, b1.remove_hits - b0.remove_hits), replicated, "{b0:?} {b1:?}");
        assert!(a1.time_since_reset >= a0.time_since_reset && a1.writes().is_some());
    };

    write_counters_stay_still_where_the_backup_does_not_replicate => |pair| async move {
        let work = pair.work();
        pair.a.cache_site_action(work, &pair.b_name, SiteAction::TakeOffline).await.unwrap();
        let b0 = pair.b.cache_stats(work).await.unwrap();
        pair.a.put(work, "unreplicated", "v").await.unwrap();
        let b1 = pair.b.cache_stats(work).await.unwrap();
        assert_eq!(b1.writes(), b0.writes(), "{b0:?} {b1:?}");
        pair.a.cache_site_action(work, &pair.b_name, SiteAction::BringOnline).await.unwrap();
    };

    write_replicates_to_the_peer => |pair| async move {
        pair.a.put(pair.work(), "k1", "v1").await.unwrap();
        assert_eq!(pair.b.get(pair.work(), "k1").await.unwrap().as_deref(), Some("v1"));
        assert_eq!(pair.a.size(pair.work()).await.unwrap(), 1);
        assert_eq!(pair.b.size(pair.work()).await.unwrap(), 1);
    };

    a_stored_value_is_the_same_bytes_on_both_sites_and_another_value_is_other_bytes => |pair| async move {
        let work = pair.work();
        pair.a.put(work, "k1", "naïve value").await.unwrap();
        pair.a.put(work, "k2", "another value").await.unwrap();
        let on_a = pair.a.stored_value(work, "k1").await.unwrap().expect("k1 on the writing site");
        let on_b = pair.b.stored_value(work, "k1").await.unwrap().expect("k1 replicated");
        assert_eq!(on_a, on_b, "a replicated value is stored as the same bytes");
        let needle = "naïve value".as_bytes();
        assert!(on_a.windows(needle.len()).any(|w| w == needle), "the string is in its stored form: {on_a:?}");
        assert_ne!(pair.b.stored_value(work, "k2").await.unwrap().unwrap(), on_b);
        assert_eq!(pair.a.stored_value(work, "absent").await.unwrap(), None);
    };

    missing_key_reads_none_and_delete_reports_absent => |pair| async move {
        assert_eq!(pair.a.get(pair.work(), "absent").await.unwrap(), None);
        assert!(!pair.a.delete(pair.work(), "absent").await.unwrap());
    };

    delete_replicates_to_the_peer => |pair| async move {
        pair.a.put(pair.work(), "k1", "v1").await.unwrap();
        assert!(pair.a.delete(pair.work(), "k1").await.unwrap());
        assert_eq!(pair.b.get(pair.work(), "k1").await.unwrap(), None);
    };

    clear_with_backup_online_wipes_the_peer_too => |pair| async move {
        fill(&pair.a, pair.work(), "danger", 5).await;
        assert_eq!(pair.b.size(pair.work()).await.unwrap(), 5);
        pair.b.clear(pair.work(), ClearScope::Replicated).await.unwrap();
        assert_eq!(pair.a.size(pair.work()).await.unwrap(), 0, "the clear on B must have reached A");
    };

    clear_with_skip_xsite_flag_spares_the_peer => |pair| async move {
        fill(&pair.a, pair.work(), "kept", 5).await;
        pair.b.clear(pair.work(), ClearScope::LocalOnly).await.unwrap();
        assert_eq!(pair.b.size(pair.work()).await.unwrap(), 0);
        assert_eq!(pair.a.size(pair.work()).await.unwrap(), 5);
    };

    take_offline_reads_offline_at_every_level => |pair| async move {
        let work = pair.work();
        pair.b.cache_site_action(work, &pair.a_name, SiteAction::TakeOffline).await.unwrap();
        let status = eventually("offline", || async {
            let s = pair.b.cache_backups(work).await.unwrap();
            (s[&pair.a_name] == BackupStatus::Offline).then_some(s)
        }).await;
        assert_eq!(status.len(), 1);
        let nodes = pair.b.cache_site_nodes(work, &pair.a_name).await.unwrap();
        assert!(nodes.all_offline() && nodes.0.values().all(|s| *s == NodeStatus::Offline), "{nodes:?}");
        let container = pair.b.container_site_status(&pair.a_name).await.unwrap();
        if pair.caches.len() > 1 {
            match container {
                ContainerSiteStatus::Mixed { online, offline, mixed } => {
                    assert_eq!(offline, vec![work.to_string()]);
                    assert_eq!(online.len(), pair.caches.len() - 1);
                    assert!(mixed.is_empty());
                }
                other => panic!("expected mixed, got {other:?}"),
            }
        }
        // The other direction is untouched.
        assert_eq!(pair.a.cache_backups(work).await.unwrap()[&pair.b_name], BackupStatus::Online);
    };

    take_offline_is_idempotent => |pair| async move {
        let work = pair.work();
        for _ in 0..2 {
            pair.b.cache_site_action(work, &pair.a_name, SiteAction::TakeOffline).await.unwrap();
        }
        let results = pair.b.container_site_action(&pair.a_name, SiteAction::TakeOffline).await.unwrap();
        assert_eq!(results.failures().count(), 0, "{results:?}");
        assert_eq!(pair.b.container_site_status(&pair.a_name).await.unwrap(), ContainerSiteStatus::Offline);
    };

    clear_while_backup_offline_spares_the_peer => |pair| async move {
        fill(&pair.a, pair.work(), "safe", 5).await;
        pair.b.cache_site_action(pair.work(), &pair.a_name, SiteAction::TakeOffline).await.unwrap();
        pair.b.clear(pair.work(), ClearScope::Replicated).await.unwrap();
        assert_eq!(pair.b.size(pair.work()).await.unwrap(), 0);
        assert_eq!(pair.a.size(pair.work()).await.unwrap(), 5);
    };

    write_while_backup_offline_stays_local => |pair| async move {
        pair.b.cache_site_action(pair.work(), &pair.a_name, SiteAction::TakeOffline).await.unwrap();
        pair.b.put(pair.work(), "b-only", "x").await.unwrap();
        assert_eq!(pair.a.get(pair.work(), "b-only").await.unwrap(), None);
        // The other direction still replicates.
        pair.a.put(pair.work(), "a-to-b", "y").await.unwrap();
        assert_eq!(pair.b.get(pair.work(), "a-to-b").await.unwrap().as_deref(), Some("y"));
    };

    bring_online_restores_replication => |pair| async move {
        let work = pair.work();
        pair.b.cache_site_action(work, &pair.a_name, SiteAction::TakeOffline).await.unwrap();
        pair.b.cache_site_action(work, &pair.a_name, SiteAction::BringOnline).await.unwrap();
        assert_eq!(pair.b.cache_backups(work).await.unwrap()[&pair.a_name], BackupStatus::Online);
        pair.b.put(work, "again", "z").await.unwrap();
        assert_eq!(pair.a.get(work, "again").await.unwrap().as_deref(), Some("z"));
    };

    container_take_offline_and_bring_online_answer_ok_per_cache => |pair| async move {
        let results = pair.b.container_site_action(&pair.a_name, SiteAction::TakeOffline).await.unwrap();
        for c in &pair.caches {
            assert!(results.is_ok(c), "{results:?}");
        }
        assert_eq!(pair.b.container_site_status(&pair.a_name).await.unwrap(), ContainerSiteStatus::Offline);
        let results = pair.b.container_site_action(&pair.a_name, SiteAction::BringOnline).await.unwrap();
        assert_eq!(results.failures().count(), 0);
        assert_eq!(pair.b.container_site_status(&pair.a_name).await.unwrap(), ContainerSiteStatus::Online);
    };

    push_status_is_idle_for_every_backup_site_at_rest => |pair| async move {
        for c in &pair.caches {
            let report = pair.a.push_state_status(c).await.unwrap();
            assert_eq!(report, ispn_xsite::PushStatusReport::Sites(BTreeMap::from([(pair.b_name.to_string(), PushStatus::Idle)])));
        }
    };

    push_lifecycle_sending_then_ok_then_cleared_to_idle => |pair| async move {
        let work = pair.work();
        fill(&pair.a, work, "push", 40).await;
        pair.b.cache_site_action(work, &pair.a_name, SiteAction::TakeOffline).await.unwrap();
        pair.b.clear(work, ClearScope::LocalOnly).await.unwrap();
        pair.b.cache_site_action(work, &pair.a_name, SiteAction::BringOnline).await.unwrap();
        assert_eq!(pair.b.size(work).await.unwrap(), 0);
        push_until_ok(&pair, work).await;
        assert_eq!(pair.b.size(work).await.unwrap(), 40);
        assert_eq!(all_keys(&pair.b, work).await, all_keys(&pair.a, work).await);
        pair.a.clear_push_state_status(work).await.unwrap();
        assert_eq!(pair.a.push_state_status(work).await.unwrap().for_site(&pair.b_name), Some(PushStatus::Idle));
    };

    push_brings_the_backup_online => |pair| async move {
        let work = pair.work();
        pair.a.cache_site_action(work, &pair.b_name, SiteAction::TakeOffline).await.unwrap();
        assert_eq!(pair.a.cache_backups(work).await.unwrap()[&pair.b_name], BackupStatus::Offline);
        push_until_ok(&pair, work).await;
        assert_eq!(pair.a.cache_backups(work).await.unwrap()[&pair.b_name], BackupStatus::Online);
    };

    push_never_deletes_keys_on_the_receiver => |pair| async move {
        let work = pair.work();
        pair.a.put(work, "shared", "from-a").await.unwrap();
        pair.b.cache_site_action(work, &pair.a_name, SiteAction::TakeOffline).await.unwrap();
        pair.b.put(work, "b-only", "stale").await.unwrap();
        pair.b.put(work, "shared", "from-b").await.unwrap();
        push_until_ok(&pair, work).await;
        assert_eq!(pair.b.get(work, "b-only").await.unwrap().as_deref(), Some("stale"));
        assert_eq!(pair.b.get(work, "shared").await.unwrap().as_deref(), Some("from-a"));
    };

    push_report_of_the_receiver_is_idle => |pair| async move {
        let work = pair.work();
        fill(&pair.a, work, "r", 5).await;
        push_until_ok(&pair, work).await;
        assert_eq!(pair.b.push_state_status(work).await.unwrap().for_site(&pair.a_name), Some(PushStatus::Idle));
    };

    second_start_while_sending_fails_and_leaves_the_push_running => |pair| async move {
        let work = pair.work();
        fill_fast(&pair.a, work, "dup", 5000).await;
        pair.a.cache_site_action(work, &pair.b_name, SiteAction::StartPushState).await.unwrap();
        let again = pair.a.cache_site_action(work, &pair.b_name, SiteAction::StartPushState).await;
        assert!(matches!(&again, Err(Error::Server { status: 500, body, .. }) if body.contains("Unable to pushState")), "{again:?}");
        eventually("push OK", || async {
            match pair.a.push_state_status(work).await.unwrap().for_site(&pair.b_name) {
                Some(PushStatus::Ok) => Some(()),
                Some(PushStatus::Sending) => None,
                other => panic!("{other:?}"),
            }
        }).await;
        assert_eq!(pair.b.size(work).await.unwrap(), 5000);
    };

    container_push_answers_ok_per_cache => |pair| async move {
        let results = pair.a.container_site_action(&pair.b_name, SiteAction::StartPushState).await.unwrap();
        for c in &pair.caches {
            assert!(results.is_ok(c), "{results:?}");
        }
        for c in &pair.caches {
            eventually("push OK", || async {
                (pair.a.push_state_status(c).await.unwrap().for_site(&pair.b_name) == Some(PushStatus::Ok)).then_some(())
            }).await;
        }
    };

    clear_push_status_answers_ok_when_idle => |pair| async move {
        pair.a.clear_push_state_status(pair.work()).await.unwrap();
        assert_eq!(pair.a.push_state_status(pair.work()).await.unwrap().for_site(&pair.b_name), Some(PushStatus::Idle));
    };

    cancel_push_when_nothing_runs_changes_nothing => |pair| async move {
        pair.a.cache_site_action(pair.work(), &pair.b_name, SiteAction::CancelPushState).await.unwrap();
        assert_eq!(pair.a.push_state_status(pair.work()).await.unwrap().for_site(&pair.b_name), Some(PushStatus::Idle));
        let results = pair.a.container_site_action(&pair.b_name, SiteAction::CancelPushState).await.unwrap();
        assert_eq!(results.failures().count(), 0);
    };

    cancel_receive_state_answers_200_when_not_receiving => |pair| async move {
        pair.b.cache_site_action(pair.work(), &pair.a_name, SiteAction::CancelReceiveState).await.unwrap();
    };

    take_offline_config_defaults_and_round_trips => |pair| async move {
        let work = pair.work();
        let config = pair.a.take_offline_config(work, &pair.b_name).await.unwrap();
        assert_eq!(config, TakeOfflineConfig { after_failures: 0, min_wait: 0 });
        let new = TakeOfflineConfig { after_failures: 3, min_wait: 1000 };
        assert!(pair.a.set_take_offline_config(work, &pair.b_name, new).await.unwrap());
        assert!(!pair.a.set_take_offline_config(work, &pair.b_name, new).await.unwrap(), "unchanged must read 304");
        assert_eq!(pair.a.take_offline_config(work, &pair.b_name).await.unwrap(), new);
    };

    wrong_password_is_unauthorized => |pair| async move {
        let intruder = pair.client_a(ADMIN_USER, "wrong-password", Mechanism::Auto);
        let err = intruder.cache_names().await.unwrap_err();
        assert!(matches!(err, Error::Unauthorized { .. }), "{err:?}");
        assert!(!err.to_string().contains("wrong-password"));
    };

    basic_and_digest_both_authenticate => |pair| async move {
        for mechanism in [Mechanism::Basic, Mechanism::Digest] {
            let client = pair.client_a(ADMIN_USER, ADMIN_PASSWORD, mechanism);
            assert!(client.cache_names().await.is_ok(), "{mechanism}");
        }
    };

    wrong_password_with_basic_is_unauthorized => |pair| async move {
        let err = pair.client_a(ADMIN_USER, "nope", Mechanism::Basic).cache_names().await.unwrap_err();
        assert!(matches!(err, Error::Unauthorized { .. }), "{err:?}");
    };

    user_without_admin_is_forbidden_for_xsite => |pair| async move {
        let Some((user, password)) = pair.observer.clone() else { panic!("the pair needs an observer user") };
        let observer = pair.client_a(&user, &password, Mechanism::Auto);
        let err = observer.cache_backups(pair.work()).await.unwrap_err();
        assert!(matches!(err, Error::Forbidden { .. }), "{err:?}");
        let err = observer.container_site_action(&pair.b_name, SiteAction::TakeOffline).await.unwrap_err();
        assert!(matches!(err, Error::Forbidden { .. }), "{err:?}");
        assert_eq!(pair.a.container_site_status(&pair.b_name).await.unwrap(), ContainerSiteStatus::Online);
    };

    key_stream_lists_every_key => |pair| async move {
        fill(&pair.a, pair.work(), "stream", 120).await;
        let keys = all_keys(&pair.a, pair.work()).await;
        assert_eq!(keys.len(), 120);
        assert!(keys.contains("stream-0119"));
        assert_eq!(keys, all_keys(&pair.b, pair.work()).await);
    };

    entry_stream_carries_values_as_text => |pair| async move {
        fill(&pair.a, pair.work(), "e", 30).await;
        let entries: Vec<ispn_xsite::Entry> = pair.b.entries(pair.work()).await.unwrap().try_collect().await.unwrap();
        assert_eq!(entries.len(), 30);
        for e in entries {
            let i: usize = e.key.trim_start_matches("e-").parse().unwrap();
            assert_eq!(e.value, format!("value-e-{i}"));
        }
    };

    awkward_keys_round_trip_and_list_the_same_on_both_sites => |pair| async move {
        let keys = ["with space", "plus+sign", "slash/inside", "quote\"d", "back\\slash", "ünïcödé", "percent%41"];
        for k in keys {
            pair.a.put(pair.work(), k, k).await.unwrap();
            assert_eq!(pair.b.get(pair.work(), k).await.unwrap().as_deref(), Some(k), "{k}");
        }
        let listed_a = all_keys(&pair.a, pair.work()).await;
        assert_eq!(listed_a.len(), keys.len());
        assert_eq!(listed_a, all_keys(&pair.b, pair.work()).await);
        for k in ["with space", "plus+sign", "slash/inside", "quote\"d", "ünïcödé", "percent%41"] {
            assert!(listed_a.contains(k), "{k} listed as {listed_a:?}");
        }
    };
}
