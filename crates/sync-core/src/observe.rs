//! What the driver has read from the world since the last action: the input of `decide`.
//!
//! The driver throws the whole observation away after every action and every wait, so whatever
//! `decide` sees was read after the last change the tool made. That is what makes each interlock
//! a fresh re-read: `decide` asks for the facts it needs ([`Probe`]) and only acts once they are
//! present.

use std::collections::BTreeMap;

use ispn_xsite::{BackupStatus, CacheName, ContainerInfo, NodeStatuses, PushStatusReport, SiteName};
use serde::{Deserialize, Serialize};

use crate::port_types::{KeycloakHealth, KeycloakState};
use crate::vocabulary::{Counting, Probe, Side, VerifyLevel, WriteSample};

/// A site's identity and view, from its container info.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteFacts {
    /// `local_site`.
    pub local_site: Option<String>,
    /// `sites_view`.
    pub sites_view: Vec<String>,
    /// Whether the answering node is a site master (only those know the view).
    pub relay_node: bool,
    /// Raw server version.
    pub version: String,
    /// Nodes in the site's cluster.
    #[serde(default = "one")]
    pub nodes: usize,
}

fn one() -> usize {
    1
}

impl From<ContainerInfo> for SiteFacts {
    fn from(info: ContainerInfo) -> Self {
        Self {
            local_site: info.local_site,
            sites_view: info.sites_view,
            relay_node: info.relay_node,
            version: info.version,
            nodes: info.cluster_members.len().max(1),
        }
    }
}

impl SiteFacts {
    /// Whose writes its counters hold.
    pub fn counting(&self) -> Counting {
        Counting { nodes: self.nodes, site_master: self.relay_node }
    }

    /// Whether this site sees `other` across the bridge: `Some(true|false)` from a site master,
    /// `None` when the answering node cannot know.
    pub fn sees(&self, other: &SiteName) -> Option<bool> {
        if self.relay_node {
            Some(self.sites_view.iter().any(|s| s == other.as_str()))
        } else if self.sites_view.is_empty() {
            None
        } else {
            Some(self.sites_view.iter().any(|s| s == other.as_str()))
        }
    }
}

/// A cache's entry counts, read active, offline, active: the two active reads bracket the offline
/// one, so live traffic during the check shows up as a range instead of a false mismatch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sizes {
    /// Active site, first read.
    pub active_before: u64,
    /// Offline site.
    pub offline: u64,
    /// Active site, second read.
    pub active_after: u64,
}

/// What comparing a cache's keys (and values) on both sites found. Differences are those both
/// reads showed; `transient` counts those only one read showed (live traffic between the reads).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentCheck {
    /// What was compared (keys, or keys and values).
    pub level: VerifyLevel,
    /// Keys on the active site.
    pub active: u64,
    /// Keys on the offline site.
    pub offline: u64,
    /// Keys only on the active site.
    pub only_active: u64,
    /// Keys only on the offline site.
    pub only_offline: u64,
    /// Keys on both sites whose values differ (entries level).
    pub different_values: u64,
    /// Differences that one read showed and the other did not.
    pub transient: u64,
    /// Why the values could not be compared, when `level` fell back to keys.
    pub unreadable: Option<String>,
}

impl ContentCheck {
    /// Differences both reads showed.
    pub fn persistent(&self) -> u64 {
        self.only_active + self.only_offline + self.different_values
    }
}

/// Everything read since the last action.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observation {
    /// When (ms since the epoch) the observation started.
    pub now_ms: u64,
    /// Container info per site.
    pub sites: BTreeMap<Side, SiteFacts>,
    /// Per site: each cache with backups, and the sites it backs up to.
    pub backups: BTreeMap<Side, BTreeMap<CacheName, Vec<SiteName>>>,
    /// Per cache: the offline site's per-node status towards the active site.
    pub offline_nodes: BTreeMap<CacheName, NodeStatuses>,
    /// Per site and cache: the cache-level status towards the other site.
    pub status: BTreeMap<(Side, CacheName), BackupStatus>,
    /// Per cache: the active site's push report.
    pub push: BTreeMap<CacheName, PushStatusReport>,
    /// Per cache: entry counts.
    pub sizes: BTreeMap<CacheName, Sizes>,
    /// Per cache: content comparison.
    pub content: BTreeMap<CacheName, ContentCheck>,
    /// The offline site's Keycloak: `Some(None)` when read and not managed.
    pub keycloak: Option<Option<KeycloakState>>,
    /// Per site and cache: write counters and size.
    pub activity: BTreeMap<(Side, CacheName), WriteSample>,
    /// The offline site's Keycloak's health: `Some(None)` when read and nothing is configured.
    pub keycloak_health: Option<Option<KeycloakHealth>>,
}

impl Observation {
    /// An empty observation taken at `now_ms`.
    pub fn at(now_ms: u64) -> Self {
        Self { now_ms, ..Self::default() }
    }

    /// Whether the answer to `probe` is present.
    pub fn has(&self, probe: &Probe) -> bool {
        match probe {
            Probe::Site { side } => self.sites.contains_key(side),
            Probe::Backups { side } => self.backups.contains_key(side),
            Probe::OfflineNodes { cache } => self.offline_nodes.contains_key(cache),
            Probe::Status { side, cache } => self.status.contains_key(&(*side, cache.clone())),
            Probe::Push { cache } => self.push.contains_key(cache),
            Probe::Sizes { cache } => self.sizes.contains_key(cache),
            Probe::Content { cache } => self.content.contains_key(cache),
            Probe::Keycloak => self.keycloak.is_some(),
            Probe::Activity { side, cache } => self.activity.contains_key(&(*side, cache.clone())),
            Probe::KeycloakHealth => self.keycloak_health.is_some(),
        }
    }

    /// The probes among `wanted` that have no answer yet.
    pub fn missing(&self, wanted: impl IntoIterator<Item = Probe>) -> Vec<Probe> {
        wanted.into_iter().filter(|p| !self.has(p)).collect()
    }
}
