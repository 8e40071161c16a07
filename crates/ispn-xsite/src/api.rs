//! [`SiteApi`]: the operations of one Infinispan site that the procedure and its checks need.
//!
//! Two implementations exist: the HTTP [`crate::Client`] and the in-memory model in `fake-ispn`
//! (used without HTTP by the deterministic simulation). Callers are generic over the trait, never
//! `dyn`: the futures must be `Send`, which stable Rust can only promise through
//! `-> impl Future + Send` in the declaration.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use futures::Stream;

use crate::error::Result;
use crate::model::{
    BackupStatus, CacheResults, CacheStats, ContainerInfo, ContainerSiteStatus, Health, NodeStatuses, PushStatusReport,
    ServerVersion, SiteAction, TakeOfflineConfig,
};
use crate::names::{CacheName, SiteName};
use crate::requests::ClearScope;

/// A stream of keys or entries, read while the server sends them.
pub type ItemStream<T> = Pin<Box<dyn Stream<Item = Result<T>> + Send + 'static>>;

/// One cache entry as text (see [`crate::model::entry_text`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Entry {
    /// The key.
    pub key: String,
    /// The value.
    pub value: String,
}

/// One Infinispan site, as seen through its REST API.
pub trait SiteApi: Send + Sync {
    /// Where this site is reached, for messages (`http://127.0.0.1:11222`).
    fn endpoint(&self) -> &str;

    /// The server version (detected once, then cached).
    fn server_version(&self) -> impl Future<Output = Result<ServerVersion>> + Send;

    /// `local_site`, `sites_view` and friends.
    fn container_info(&self) -> impl Future<Output = Result<ContainerInfo>> + Send;

    /// Cluster and per-cache health.
    fn health(&self) -> impl Future<Output = Result<Health>> + Send;

    /// Every cache the user can see, internal ones included.
    fn cache_names(&self) -> impl Future<Output = Result<Vec<CacheName>>> + Send;

    /// Each backup site of `cache` with its status. Fails with `NoBackups` for a cache without.
    fn cache_backups(&self, cache: &CacheName) -> impl Future<Output = Result<BTreeMap<SiteName, BackupStatus>>> + Send;

    /// Each node's status of `cache`'s backup to `site`.
    fn cache_site_nodes(&self, cache: &CacheName, site: &SiteName) -> impl Future<Output = Result<NodeStatuses>> + Send;

    /// Each site that some cache backs up to, with its container-level status.
    fn container_backups(&self) -> impl Future<Output = Result<BTreeMap<SiteName, ContainerSiteStatus>>> + Send;

    /// The container-level status of one site.
    fn container_site_status(&self, site: &SiteName) -> impl Future<Output = Result<ContainerSiteStatus>> + Send;

    /// Runs `action` on one cache's backup to `site`.
    fn cache_site_action(
        &self,
        cache: &CacheName,
        site: &SiteName,
        action: SiteAction,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Runs `action` on every cache with backups. The call itself succeeds (HTTP 200) even when
    /// caches fail: inspect [`CacheResults::failures`].
    fn container_site_action(&self, site: &SiteName, action: SiteAction) -> impl Future<Output = Result<CacheResults>> + Send;

    /// The push status of `cache`, per backup site.
    fn push_state_status(&self, cache: &CacheName) -> impl Future<Output = Result<PushStatusReport>> + Send;

    /// Resets `cache`'s finished push statuses to IDLE. The server answers 200 even when this
    /// fails; a body other than `"ok"` becomes an error here.
    fn clear_push_state_status(&self, cache: &CacheName) -> impl Future<Output = Result<()>> + Send;

    /// The runtime automatic take-offline settings.
    fn take_offline_config(&self, cache: &CacheName, site: &SiteName) -> impl Future<Output = Result<TakeOfflineConfig>> + Send;

    /// Changes them; `false` when they already had these values (HTTP 304).
    fn set_take_offline_config(
        &self,
        cache: &CacheName,
        site: &SiteName,
        config: TakeOfflineConfig,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Cluster-wide number of entries.
    fn size(&self, cache: &CacheName) -> impl Future<Output = Result<u64>> + Send;

    /// The cache's write counters on the node that answers.
    fn cache_stats(&self, cache: &CacheName) -> impl Future<Output = Result<CacheStats>> + Send;

    /// Removes every entry.
    fn clear(&self, cache: &CacheName, scope: ClearScope) -> impl Future<Output = Result<()>> + Send;

    /// One value, or `None` when the key is absent.
    fn get(&self, cache: &CacheName, key: &str) -> impl Future<Output = Result<Option<String>>> + Send;

    /// One entry's value as the server stores it, or `None` when the key is absent.
    fn stored_value(&self, cache: &CacheName, key: &str) -> impl Future<Output = Result<Option<Bytes>>> + Send;

    /// Writes one value.
    fn put(&self, cache: &CacheName, key: &str, value: &str) -> impl Future<Output = Result<()>> + Send;

    /// Deletes one key; `false` when it was absent.
    fn delete(&self, cache: &CacheName, key: &str) -> impl Future<Output = Result<bool>> + Send;

    /// Every key, streamed.
    fn keys(&self, cache: &CacheName) -> impl Future<Output = Result<ItemStream<String>>> + Send;

    /// Every entry, streamed.
    fn entries(&self, cache: &CacheName) -> impl Future<Output = Result<ItemStream<Entry>>> + Send;
}
