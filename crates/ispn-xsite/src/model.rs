//! What the server answers, as types.
//!
//! Every shape here was checked against a real 15.0.x and 16.0.x server (see `cargo xtask e2e`);
//! the parsers are strict about the parts the procedure decides on (statuses) and lenient about
//! the rest (extra fields in container info are ignored).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::names::{CacheName, SiteName};

/// The server's own version, parsed from `version` in the container info
/// (`15.0.21.Final`, `16.0.7`, `14.0.35.Final`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerVersion {
    /// Major line: 14, 15 or 16.
    pub major: u16,
    /// Minor version.
    pub minor: u16,
    /// Micro (patch) version.
    pub micro: u16,
    /// The version exactly as the server printed it.
    pub raw: String,
}

impl ServerVersion {
    /// Parses `major.minor.micro[.qualifier]`; anything after the third number is kept only in `raw`.
    pub fn parse(raw: &str) -> Option<Self> {
        let mut parts = raw.trim().split(['.', '-']);
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        let micro = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        Some(Self { major, minor, micro, raw: raw.trim().to_owned() })
    }

    /// Which family of paths this server serves for container-level calls.
    pub fn api(&self) -> ApiFlavor {
        if self.major <= 14 { ApiFlavor::CacheManagers } else { ApiFlavor::Container }
    }

    /// Whether a cache can read `mixed` (some nodes online, some offline). From 15.1 the site
    /// status is cluster-global and `mixed` is gone.
    pub fn may_report_mixed(&self) -> bool {
        self.major < 15 || (self.major == 15 && self.minor == 0)
    }
}

impl fmt::Display for ServerVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

/// The two URL families for container-level resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ApiFlavor {
    /// Infinispan 14: only `/rest/v2/cache-managers/default/...` exists.
    CacheManagers,
    /// Infinispan 15 and later: `/rest/v2/container/...` (the old paths still work but log a
    /// deprecation warning on every call).
    Container,
}

/// `GET /rest/v2/caches/{c}?action=stats`: the counters that tell a site taking writes from a
/// quiet one. A server answers `-1` for a counter it does not keep (statistics disabled).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheStats {
    /// Writes (puts) since the statistics were last reset.
    #[serde(default = "not_kept")]
    pub stores: i64,
    /// Removals of an existing entry since then.
    #[serde(default = "not_kept")]
    pub remove_hits: i64,
    /// Seconds since the statistics were last reset.
    #[serde(default = "not_kept")]
    pub time_since_reset: i64,
}

fn not_kept() -> i64 {
    -1
}

impl CacheStats {
    /// Writes and removals since the last reset; `None` when the cache keeps no statistics.
    pub fn writes(&self) -> Option<u64> {
        let stores = u64::try_from(self.stores).ok()?;
        let removes = u64::try_from(self.remove_hits).ok()?;
        Some(stores + removes)
    }
}

/// `GET /rest/v2/container` (14: `/rest/v2/cache-managers/default`): the fields the tool reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerInfo {
    /// Raw server version (`15.0.21.Final`).
    pub version: String,
    /// Cache container name, normally `default`.
    #[serde(default)]
    pub name: String,
    /// This site's name. Absent when the server has no cross-site transport.
    #[serde(default)]
    pub local_site: Option<String>,
    /// Sites currently connected through the RELAY2 bridge, this one included.
    #[serde(default)]
    pub sites_view: Vec<String>,
    /// Whether the node that answered is a site master (relay node).
    #[serde(default)]
    pub relay_node: bool,
    /// Node names of the local cluster.
    #[serde(default)]
    pub cluster_members: Vec<String>,
    /// Local cluster name.
    #[serde(default)]
    pub cluster_name: String,
    /// The node that answered.
    #[serde(default)]
    pub node_address: String,
}

impl ContainerInfo {
    /// Whether the bridge to `site` is up, as this site sees it.
    pub fn sees(&self, site: &SiteName) -> bool {
        self.sites_view.iter().any(|s| s == site.as_str())
    }
}

/// `GET /rest/v2/container/health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// Cluster-wide health.
    pub cluster_health: ClusterHealth,
    /// Per-cache health.
    #[serde(default)]
    pub cache_health: Vec<CacheHealth>,
}

/// The cluster part of [`Health`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterHealth {
    /// Local cluster name.
    pub cluster_name: String,
    /// `HEALTHY`, `HEALTHY_REBALANCING`, `DEGRADED`, `INITIALIZING` or `FAILED`.
    pub health_status: String,
    /// Number of nodes in the local cluster.
    pub number_of_nodes: u32,
    /// Their names.
    #[serde(default)]
    pub node_names: Vec<String>,
}

/// One cache in [`Health`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheHealth {
    /// Cache name.
    pub cache_name: String,
    /// Same values as [`ClusterHealth::health_status`].
    pub status: String,
}

/// Cache-level status of one backup: `GET /rest/v2/caches/{c}/x-site/backups/`.
///
/// "Online" means the local cluster *will replicate* to that site; it says nothing about whether
/// the site is reachable (that is `sites_view`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum BackupStatus {
    /// Every node replicates to the site.
    Online,
    /// No node replicates to the site.
    Offline,
    /// 14 and 15.0 only: nodes disagree. The lists hold node names.
    Mixed {
        /// Nodes that replicate.
        #[serde(default)]
        online: Vec<String>,
        /// Nodes that do not.
        #[serde(default)]
        offline: Vec<String>,
    },
    /// A fallback that exists in the server code but should never be sent.
    Unknown,
}

impl BackupStatus {
    /// Short lowercase word, as the server spells it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Online => "online",
            Self::Offline => "offline",
            Self::Mixed { .. } => "mixed",
            Self::Unknown => "unknown",
        }
    }
}

/// One node's view of a backup: a value of `GET /rest/v2/caches/{c}/x-site/backups/{site}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeStatus {
    /// That node replicates.
    Online,
    /// That node does not.
    Offline,
    /// 14 and 15.0: the node did not answer the status RPC.
    Failed,
}

/// Per-node statuses of one cache's backup to one site, keyed by node name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeStatuses(pub BTreeMap<String, NodeStatus>);

impl NodeStatuses {
    /// True only when at least one node answered and every node reads offline. An empty answer
    /// proves nothing, so it is not "all offline".
    pub fn all_offline(&self) -> bool {
        !self.0.is_empty() && self.0.values().all(|s| *s == NodeStatus::Offline)
    }

    /// True only when at least one node answered and every node reads online.
    pub fn all_online(&self) -> bool {
        !self.0.is_empty() && self.0.values().all(|s| *s == NodeStatus::Online)
    }

    /// Nodes that do not read offline (online or failed), for error messages.
    pub fn not_offline(&self) -> Vec<&str> {
        self.0.iter().filter(|(_, s)| **s != NodeStatus::Offline).map(|(n, _)| n.as_str()).collect()
    }
}

/// Container-level status of one site, over every cache that backs up to it:
/// `GET /rest/v2/container/x-site/backups/{site}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum ContainerSiteStatus {
    /// Every cache replicates to the site.
    Online,
    /// No cache replicates to the site.
    Offline,
    /// Caches disagree. The lists hold cache names; `mixed` lists caches that are themselves mixed
    /// across nodes (14/15.0 only) and is always present, possibly empty.
    Mixed {
        /// Caches online.
        #[serde(default)]
        online: Vec<String>,
        /// Caches offline.
        #[serde(default)]
        offline: Vec<String>,
        /// Caches mixed across nodes.
        #[serde(default)]
        mixed: Vec<String>,
    },
    /// Never expected; see [`BackupStatus::Unknown`].
    Unknown,
}

impl ContainerSiteStatus {
    /// Short lowercase word, as the server spells it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Online => "online",
            Self::Offline => "offline",
            Self::Mixed { .. } => "mixed",
            Self::Unknown => "unknown",
        }
    }
}

/// State of a push (cross-site state transfer) to one site, as kept on the sending site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum PushStatus {
    /// Nothing recorded: never pushed, or the status was cleared.
    Idle,
    /// A transfer is running (or paused by a rebalance, or stuck: see the procedure).
    Sending,
    /// Every node reported the end of its push and the last one succeeded.
    Ok,
    /// The last node to report failed, or the start failed locally.
    Error,
    /// `cancel-push-state` was called while sending.
    #[serde(rename = "CANCELED")]
    Canceled,
}

impl PushStatus {
    /// The word the server sends.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Idle => "IDLE",
            Self::Sending => "SENDING",
            Self::Ok => "OK",
            Self::Error => "ERROR",
            Self::Canceled => "CANCELED",
        }
    }

    /// Parses the word the server sends.
    pub fn parse(word: &str) -> Option<Self> {
        Some(match word {
            "IDLE" => Self::Idle,
            "SENDING" => Self::Sending,
            "OK" => Self::Ok,
            "ERROR" => Self::Error,
            "CANCELED" => Self::Canceled,
            _ => return None,
        })
    }
}

impl fmt::Display for PushStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `GET /rest/v2/caches/{c}/x-site/backups?action=push-state-status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PushStatusReport {
    /// One status per backup site of the cache (sites never pushed to read `IDLE`).
    Sites(BTreeMap<String, PushStatus>),
    /// The server could not gather the status and answered `{"ERROR": "<message>"}`.
    GatherFailed(String),
}

impl PushStatusReport {
    /// Parses the body. `{"ERROR": "<text>"}` is the gather failure unless the text is itself a
    /// status word (a site literally named `ERROR`).
    pub fn from_json(value: &serde_json::Value) -> Option<Self> {
        let map = value.as_object()?;
        if map.len() == 1
            && let Some(serde_json::Value::String(text)) = map.get("ERROR")
            && PushStatus::parse(text).is_none()
        {
            return Some(Self::GatherFailed(text.clone()));
        }
        let mut sites = BTreeMap::new();
        for (site, status) in map {
            sites.insert(site.clone(), PushStatus::parse(status.as_str()?)?);
        }
        Some(Self::Sites(sites))
    }

    /// The status towards `site`, if the server reported one.
    pub fn for_site(&self, site: &SiteName) -> Option<PushStatus> {
        match self {
            Self::Sites(map) => map.get(site.as_str()).copied(),
            Self::GatherFailed(_) => None,
        }
    }
}

/// One cache's result inside a container-level answer (`{"work":"ok", ...}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CacheOutcome {
    /// The server said `"ok"`.
    Ok,
    /// Anything else: the server's text, verbatim. The HTTP status was still 200.
    Failed(String),
}

/// A container-level operation's answer: one outcome per cache that has backups.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheResults(pub BTreeMap<CacheName, CacheOutcome>);

impl CacheResults {
    /// Parses `{cache: "ok" | text}`. Any value other than the exact string `ok` is a failure.
    pub fn from_json(value: &serde_json::Value) -> Option<Self> {
        let mut out = BTreeMap::new();
        for (cache, result) in value.as_object()? {
            let outcome = match result {
                serde_json::Value::String(s) if s == "ok" => CacheOutcome::Ok,
                serde_json::Value::String(s) => CacheOutcome::Failed(s.clone()),
                other => CacheOutcome::Failed(other.to_string()),
            };
            out.insert(CacheName::new(cache.clone()).ok()?, outcome);
        }
        Some(Self(out))
    }

    /// Caches whose outcome is not `ok`, with the server's text.
    pub fn failures(&self) -> impl Iterator<Item = (&CacheName, &str)> {
        self.0.iter().filter_map(|(c, o)| match o {
            CacheOutcome::Ok => None,
            CacheOutcome::Failed(text) => Some((c, text.as_str())),
        })
    }

    /// Whether `cache` is in the answer with `ok`.
    pub fn is_ok(&self, cache: &CacheName) -> bool {
        matches!(self.0.get(cache), Some(CacheOutcome::Ok))
    }
}

/// `GET .../x-site/backups/{site}/take-offline-config`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TakeOfflineConfig {
    /// Consecutive failures before the site is taken offline automatically; 0 or less disables it.
    pub after_failures: i32,
    /// Milliseconds since the first failure before the site is taken offline; 0 disables it.
    pub min_wait: i64,
}

/// The x-site operations that are a `POST ...?action=<verb>` on a backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SiteAction {
    /// Stop replicating to the site.
    TakeOffline,
    /// Resume replicating to the site.
    BringOnline,
    /// Send this cache's state to the site (brings it online first).
    StartPushState,
    /// Stop a running push (status becomes CANCELED).
    CancelPushState,
    /// On the receiving site: leave receive mode for state from the given (sending) site.
    /// Per cache only; there is no container-level form.
    CancelReceiveState,
}

impl SiteAction {
    /// The `action=` query value.
    pub fn verb(&self) -> &'static str {
        match self {
            Self::TakeOffline => "take-offline",
            Self::BringOnline => "bring-online",
            Self::StartPushState => "start-push-state",
            Self::CancelPushState => "cancel-push-state",
            Self::CancelReceiveState => "cancel-receive-state",
        }
    }

    /// Whether the server has a container-level (all caches) form of this action.
    pub fn has_container_form(&self) -> bool {
        !matches!(self, Self::CancelReceiveState)
    }
}

/// Turns a value from `?action=entries` into text: protostream caches wrap strings as
/// `{"_type":"string","_value":"v"}`, text caches send the bare string, and anything else is kept
/// as compact JSON so that two sites still compare equal when they hold the same value.
pub fn entry_text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Object(map) => match (map.get("_type"), map.get("_value"), map.len()) {
            (Some(serde_json::Value::String(t)), Some(serde_json::Value::String(v)), 2) if t == "string" => v.clone(),
            _ => value.to_string(),
        },
        other => other.to_string(),
    }
}
