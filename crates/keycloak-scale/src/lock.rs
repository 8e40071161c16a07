//! The run lock: a `coordination.k8s.io/v1` Lease in the offline site's namespace, or a lock file
//! when no Kubernetes is configured. Either way a second run is refused with the holder and since
//! when, and a holder that stopped renewing (a crashed run) loses the lock after its lease time.

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, PostParams};
use sync_core::ports::{LockError, LockHolder, RunLock};

use crate::access::Permission;
use crate::cluster::SiteCluster;

/// Who this process is, for lock holders: `site-sync/<run>@<host>`.
pub fn holder_identity(run_id: &str) -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".to_owned());
    format!("site-sync/{run_id}@{host}")
}

/// A Lease-based lock.
#[derive(Debug)]
pub struct LeaseLock {
    cluster: SiteCluster,
    name: String,
    duration: Duration,
}

impl LeaseLock {
    /// The Lease `name` (default `site-sync`) in the cluster's namespace, held for `duration`
    /// between renewals.
    pub fn new(cluster: SiteCluster, name: impl Into<String>, duration: Duration) -> Self {
        Self { cluster, name: name.into(), duration }
    }

    /// The cluster the Lease lives in.
    pub fn cluster(&self) -> &SiteCluster {
        &self.cluster
    }

    /// What taking, renewing and releasing the Lease needs.
    pub fn permissions(&self) -> Vec<Permission> {
        ["get", "create", "update", "delete"]
            .into_iter()
            .map(|verb| Permission::new(verb, "coordination.k8s.io", "leases"))
            // `create` cannot be limited to a name in RBAC; the others can.
            .map(|p| if p.verb == "create" { p } else { p.named(&self.name) })
            .collect()
    }

    fn api(&self) -> Api<Lease> {
        Api::namespaced(self.cluster.client.clone(), &self.cluster.namespace)
    }

    fn store_error(&self, verb: &str, error: kube::Error) -> LockError {
        LockError::Store(self.cluster.error(verb, "leases", &self.name, error).to_string())
    }

    fn lease(&self, holder: &str, acquired: Option<MicroTime>, version: Option<String>) -> Lease {
        let now = MicroTime(Timestamp::now());
        Lease {
            metadata: ObjectMeta { name: Some(self.name.clone()), resource_version: version, ..ObjectMeta::default() },
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.to_owned()),
                acquire_time: Some(acquired.unwrap_or_else(|| now.clone())),
                renew_time: Some(now),
                lease_duration_seconds: Some(self.duration.as_secs() as i32),
                ..LeaseSpec::default()
            }),
        }
    }

    fn held(spec: &LeaseSpec) -> LockError {
        LockError::Held(LockHolder {
            holder: spec.holder_identity.clone().unwrap_or_default(),
            since: spec.acquire_time.as_ref().map(|t| t.0.to_string()).unwrap_or_else(|| "an unknown time".to_owned()),
        })
    }

    fn expired(spec: &LeaseSpec) -> bool {
        let Some(renewed) = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) else { return true };
        let seconds = i64::from(spec.lease_duration_seconds.unwrap_or(0));
        renewed.0.as_second() + seconds < Timestamp::now().as_second()
    }
}

impl RunLock for LeaseLock {
    async fn acquire(&self, run_id: &str) -> Result<(), LockError> {
        let me = holder_identity(run_id);
        let api = self.api();
        match api.get_opt(&self.name).await.map_err(|e| self.store_error("get", e))? {
            None => match api.create(&PostParams::default(), &self.lease(&me, None, None)).await {
                Ok(_) => Ok(()),
                // Someone created it between our read and our write.
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    let lease = api.get(&self.name).await.map_err(|e| self.store_error("get", e))?;
                    Err(Self::held(&lease.spec.unwrap_or_default()))
                }
                Err(e) => Err(self.store_error("create", e)),
            },
            Some(lease) => {
                let spec = lease.spec.clone().unwrap_or_default();
                let holder = spec.holder_identity.clone().unwrap_or_default();
                let ours = holder == me;
                if !ours && !holder.is_empty() && !Self::expired(&spec) {
                    return Err(Self::held(&spec));
                }
                let acquired = if ours { spec.acquire_time.clone() } else { None };
                let replacement = self.lease(&me, acquired, lease.metadata.resource_version.clone());
                match api.replace(&self.name, &PostParams::default(), &replacement).await {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(status)) if status.code == 409 => {
                        let lease = api.get(&self.name).await.map_err(|e| self.store_error("get", e))?;
                        Err(Self::held(&lease.spec.unwrap_or_default()))
                    }
                    Err(e) => Err(self.store_error("update", e)),
                }
            }
        }
    }

    async fn renew(&self, run_id: &str) -> Result<(), LockError> {
        let me = holder_identity(run_id);
        let api = self.api();
        let lease = api.get(&self.name).await.map_err(|e| self.store_error("get", e))?;
        let spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(me.as_str()) {
            return Err(Self::held(&spec));
        }
        let renewed = self.lease(&me, spec.acquire_time, lease.metadata.resource_version);
        api.replace(&self.name, &PostParams::default(), &renewed).await.map_err(|e| self.store_error("update", e))?;
        Ok(())
    }

    async fn release(&self, run_id: &str) -> Result<(), LockError> {
        let me = holder_identity(run_id);
        let api = self.api();
        if let Some(lease) = api.get_opt(&self.name).await.map_err(|e| self.store_error("get", e))?
            && lease.spec.and_then(|s| s.holder_identity).as_deref() == Some(me.as_str())
        {
            api.delete(&self.name, &DeleteParams::default()).await.map_err(|e| self.store_error("delete", e))?;
        }
        Ok(())
    }

    fn renew_every(&self) -> Duration {
        self.duration / 3
    }
}

/// A lock file, for runs without Kubernetes. It holds the holder, the time and the process id; a
/// file whose process is gone is stale and taken over.
#[derive(Debug)]
pub struct FileLock {
    path: PathBuf,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct LockFile {
    holder: String,
    since: String,
    pid: u32,
}

impl FileLock {
    /// A lock at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    fn read(&self) -> Option<LockFile> {
        std::fs::read_to_string(&self.path).ok().and_then(|t| serde_json::from_str(&t).ok())
    }

    fn alive(pid: u32) -> bool {
        std::path::Path::new(&format!("/proc/{pid}")).exists()
    }

    fn store(&self, detail: impl std::fmt::Display) -> LockError {
        LockError::Store(format!("lock file {}: {detail}", self.path.display()))
    }
}

impl RunLock for FileLock {
    async fn acquire(&self, run_id: &str) -> Result<(), LockError> {
        let me = holder_identity(run_id);
        if let Some(current) = self.read()
            && current.holder != me
            && Self::alive(current.pid)
            && current.pid != std::process::id()
        {
            return Err(LockError::Held(LockHolder { holder: current.holder, since: current.since }));
        }
        let content = LockFile { holder: me, since: Timestamp::now().to_string(), pid: std::process::id() };
        let text = serde_json::to_string(&content).map_err(|e| self.store(e))?;
        let temporary = self.path.with_extension("lock.tmp");
        std::fs::write(&temporary, text).map_err(|e| self.store(e))?;
        std::fs::rename(&temporary, &self.path).map_err(|e| self.store(e))?;
        Ok(())
    }

    async fn renew(&self, run_id: &str) -> Result<(), LockError> {
        match self.read() {
            Some(current) if current.holder == holder_identity(run_id) => Ok(()),
            Some(current) => Err(LockError::Held(LockHolder { holder: current.holder, since: current.since })),
            None => Err(self.store("it disappeared while the run held it")),
        }
    }

    async fn release(&self, run_id: &str) -> Result<(), LockError> {
        if self.read().is_some_and(|c| c.holder == holder_identity(run_id)) {
            std::fs::remove_file(&self.path).map_err(|e| self.store(e))?;
        }
        Ok(())
    }

    fn renew_every(&self) -> Duration {
        Duration::from_secs(30)
    }
}
