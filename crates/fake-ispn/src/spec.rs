//! How a fake cluster is shaped: sites, versions, nodes, caches, backups, users.

use std::time::Duration;

use ispn_xsite::{CacheName, SiteName};

/// Which Infinispan line a fake site imitates. The differences are the ones the tool depends on:
/// paths, version strings, `mixed`, and the default DIGEST algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Personality {
    /// 14.0: container resources only under `/rest/v2/cache-managers/default`; per-node status.
    V14,
    /// 15.0: `/rest/v2/container` added, old paths deprecated; per-node status, `mixed` possible.
    V15,
    /// 16.0: site status is cluster-global (no `mixed`); `/rest/v2/server` names the container.
    V16,
}

impl Personality {
    /// Every personality, for tests that run once per line.
    pub const ALL: [Self; 3] = [Self::V14, Self::V15, Self::V16];

    /// The raw version in container info.
    pub fn version(self) -> &'static str {
        match self {
            Self::V14 => "14.0.35.Final",
            Self::V15 => "15.0.21.Final",
            Self::V16 => "16.0.7",
        }
    }

    /// The body of `GET /rest/v2/server`.
    pub fn server_info(self) -> serde_json::Value {
        match self {
            Self::V14 => serde_json::json!({"version": "Infinispan 'Flying Saucer' 14.0.35.Final"}),
            Self::V15 => serde_json::json!({"version": "Infinispan 'I'm Still Standing' 15.0.21.Final"}),
            Self::V16 => serde_json::json!({"version": "Infinispan 'Keep Rollin'' 16.0.7", "cache-manager-name": "default"}),
        }
    }

    /// Whether `/rest/v2/container/...` exists.
    pub fn has_container_paths(self) -> bool {
        self != Self::V14
    }

    /// Whether nodes keep their own site status (so a cache can read `mixed`).
    pub fn per_node_status(self) -> bool {
        self != Self::V16
    }
}

/// Replication strategy of a backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// The write waits for the backup site (Keycloak's choice).
    Sync,
    /// The write is queued for the backup site.
    Async,
}

/// What a write does when its SYNC backup cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailurePolicy {
    /// The write fails (Keycloak 26's choice): sites never silently diverge.
    Fail,
    /// The write succeeds locally and the failure is logged: sites diverge.
    Warn,
}

/// One backup of a cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSpec {
    /// The site backed up to.
    pub site: SiteName,
    /// SYNC or ASYNC.
    pub strategy: Strategy,
    /// FAIL or WARN.
    pub failure_policy: FailurePolicy,
}

/// One cache on one site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSpec {
    /// The cache name.
    pub name: CacheName,
    /// Its backups (empty: a cache without cross-site replication).
    pub backups: Vec<BackupSpec>,
}

/// An HTTP authentication mechanism a fake site offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthMechanism {
    /// `Basic realm="default"`.
    Basic,
    /// `Digest ... algorithm=MD5`.
    DigestMd5,
    /// `Digest ... algorithm=SHA-256`.
    DigestSha256,
}

/// A user of a fake site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// User name.
    pub name: String,
    /// Password (plain: this is a test fake).
    pub password: String,
    /// Whether the user has the admin role (every x-site endpoint needs it).
    pub admin: bool,
}

/// One site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteSpec {
    /// Site name (`local_site`).
    pub name: SiteName,
    /// Imitated version.
    pub personality: Personality,
    /// Number of nodes in the site's cluster (2 or more makes `mixed` possible on 14/15).
    pub nodes: usize,
    /// Whether the node that answers REST calls (the first) is the site master. Only a site master
    /// knows the cross-site view: on a real 15.0.21 pair, another node answers `"sites_view":[]`.
    pub answering_node_is_relay: bool,
    /// Caches.
    pub caches: Vec<CacheSpec>,
    /// Users.
    pub users: Vec<User>,
    /// Offered authentication mechanisms, in challenge order.
    pub mechanisms: Vec<AuthMechanism>,
}

/// How state transfer proceeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferSpec {
    /// Entries per chunk (Keycloak configures 16).
    pub chunk_size: usize,
    /// Entries per second; `None` sends everything at the first opportunity.
    pub entries_per_second: Option<u64>,
    /// How long a push keeps reading SENDING after its link broke before it turns ERROR. The real
    /// server retries each chunk `max-retries` times, `wait-time` apart: a 16.0.7 pair whose
    /// receiver was killed mid-push read SENDING for 106 s, then ERROR.
    pub error_after_link_loss: Duration,
}

impl Default for TransferSpec {
    fn default() -> Self {
        // 25 000 entries/s is what a real 16.0.7 pair on loopback does with Keycloak's chunk size.
        Self { chunk_size: 16, entries_per_second: Some(25_000), error_after_link_loss: Duration::from_secs(106) }
    }
}

/// A whole fake deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSpec {
    /// The sites.
    pub sites: Vec<SiteSpec>,
    /// State transfer pacing.
    pub transfer: TransferSpec,
}

/// Keycloak 26's four replicated caches.
pub const KEYCLOAK_26_CACHES: [&str; 4] = ["actionTokens", "authenticationSessions", "loginFailures", "work"];

/// Keycloak 24 and 25's eight replicated caches.
pub const KEYCLOAK_24_CACHES: [&str; 8] = [
    "sessions",
    "offlineSessions",
    "clientSessions",
    "offlineClientSessions",
    "authenticationSessions",
    "actionTokens",
    "loginFailures",
    "work",
];

/// The default user of fake sites.
pub const ADMIN_USER: &str = "admin";
/// Its password.
pub const ADMIN_PASSWORD: &str = "password";

fn name<T: TryFrom<String>>(s: &str) -> T
where
    T::Error: std::fmt::Debug,
{
    T::try_from(s.to_owned()).expect("a literal name in a fake spec is valid")
}

impl ClusterSpec {
    /// Two sites with Keycloak 26's caches, SYNC backups to each other with FAIL, one node each,
    /// Infinispan 15, user admin/password, DIGEST (MD5) and BASIC offered.
    pub fn two_sites(a: &str, b: &str) -> Self {
        let site = |me: &str, other: &str| SiteSpec {
            name: name(me),
            personality: Personality::V15,
            nodes: 1,
            answering_node_is_relay: true,
            caches: KEYCLOAK_26_CACHES
                .iter()
                .map(|c| CacheSpec {
                    name: name(c),
                    backups: vec![BackupSpec {
                        site: name(other),
                        strategy: Strategy::Sync,
                        failure_policy: FailurePolicy::Fail,
                    }],
                })
                .collect(),
            users: vec![
                User { name: ADMIN_USER.to_owned(), password: ADMIN_PASSWORD.to_owned(), admin: true },
                User { name: "observer".to_owned(), password: "password".to_owned(), admin: false },
            ],
            mechanisms: vec![AuthMechanism::DigestMd5, AuthMechanism::Basic],
        };
        Self { sites: vec![site(a, b), site(b, a)], transfer: TransferSpec::default() }
    }

    /// Sets every site's personality.
    pub fn personality(mut self, personality: Personality) -> Self {
        for site in &mut self.sites {
            site.personality = personality;
        }
        self
    }

    /// Sets every site's node count.
    pub fn nodes(mut self, nodes: usize) -> Self {
        for site in &mut self.sites {
            site.nodes = nodes.max(1);
        }
        self
    }

    /// Replaces every site's replicated caches with `caches`, backed up to every other site.
    pub fn caches(mut self, caches: &[&str]) -> Self {
        let names: Vec<SiteName> = self.sites.iter().map(|s| s.name.clone()).collect();
        for site in &mut self.sites {
            let template = site.caches.first().and_then(|c| c.backups.first()).cloned();
            let (strategy, failure_policy) =
                template.map(|b| (b.strategy, b.failure_policy)).unwrap_or((Strategy::Sync, FailurePolicy::Fail));
            site.caches = caches
                .iter()
                .map(|c| CacheSpec {
                    name: name(c),
                    backups: names
                        .iter()
                        .filter(|n| **n != site.name)
                        .map(|n| BackupSpec { site: n.clone(), strategy, failure_policy })
                        .collect(),
                })
                .collect();
        }
        self
    }

    /// Sets every backup's failure policy.
    pub fn failure_policy(mut self, policy: FailurePolicy) -> Self {
        for backup in self.sites.iter_mut().flat_map(|s| &mut s.caches).flat_map(|c| &mut c.backups) {
            backup.failure_policy = policy;
        }
        self
    }

    /// Sets every backup's strategy.
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        for backup in self.sites.iter_mut().flat_map(|s| &mut s.caches).flat_map(|c| &mut c.backups) {
            backup.strategy = strategy;
        }
        self
    }

    /// Adds a cache without backups to one site.
    pub fn local_cache(mut self, site: &str, cache: &str) -> Self {
        if let Some(s) = self.sites.iter_mut().find(|s| s.name == site) {
            s.caches.push(CacheSpec { name: name(cache), backups: Vec::new() });
        }
        self
    }

    /// Removes a cache from one site only (a setup drift the tool must refuse).
    pub fn without_cache(mut self, site: &str, cache: &str) -> Self {
        if let Some(s) = self.sites.iter_mut().find(|s| s.name == site) {
            s.caches.retain(|c| c.name != cache);
        }
        self
    }

    /// Sets every site's offered authentication mechanisms.
    pub fn mechanisms(mut self, mechanisms: &[AuthMechanism]) -> Self {
        for site in &mut self.sites {
            site.mechanisms = mechanisms.to_vec();
        }
        self
    }

    /// Sets the state transfer pacing.
    pub fn transfer(mut self, transfer: TransferSpec) -> Self {
        self.transfer = transfer;
        self
    }
}
