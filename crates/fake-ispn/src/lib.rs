//! An in-process fake Infinispan deployment: several cross-site sites with replication, split
//! brain, state transfer and faults, served over HTTP on 127.0.0.1 or driven directly as a Rust
//! model.
//!
//! It exists so that the procedure can be tested, fast and deterministically, against the
//! behaviour it depends on, including the dangerous one: a clear sent while the backup is online
//! empties the peer site too. Everything it does was checked against real 15.0.x and 16.0.x
//! servers by the contract suite (`tests/it/contract.rs`), which runs unchanged against both.
//!
//! # Layout
//! - [`spec`]: the shape of a deployment (sites, versions, nodes, caches, backups, users).
//! - [`model`]: [`World`], the shared state and every operation on it.
//! - [`direct`]: [`ModelSite`], the model as an `ispn_xsite::SiteApi` without HTTP.
//! - `http`, `auth`: the REST front end (routing, BASIC/DIGEST, answer formats).
//! - [`FakeCluster`]: starts the servers and is the control handle for tests.

mod auth;
pub mod direct;
mod http;
pub mod model;
pub mod spec;

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use direct::ModelSite;
pub use model::{CacheFaults, ClearRecord, Failure, PushRecord, RequestFault, RequestRecord, SiteSnapshot, World};
pub use spec::*;

struct Server {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

/// A running fake deployment: the shared model plus one HTTP server per site.
pub struct FakeCluster {
    world: Arc<Mutex<World>>,
    servers: Vec<Server>,
}

impl std::fmt::Debug for FakeCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeCluster").field("sites", &self.servers.iter().map(|s| s.addr).collect::<Vec<_>>()).finish()
    }
}

impl FakeCluster {
    /// Builds the model and serves every site on its own `127.0.0.1:0` port.
    pub async fn start(spec: ClusterSpec) -> io::Result<Self> {
        let world = Arc::new(Mutex::new(World::new(&spec)));
        let mut servers = Vec::new();
        for site in 0..spec.sites.len() {
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            servers.push(Self::serve(world.clone(), site, listener)?);
        }
        Ok(Self { world, servers })
    }

    /// Builds the model only, for direct (non-HTTP) use through [`FakeCluster::site`].
    pub fn model(spec: ClusterSpec) -> Self {
        Self { world: Arc::new(Mutex::new(World::new(&spec))), servers: Vec::new() }
    }

    fn serve(world: Arc<Mutex<World>>, site: usize, listener: TcpListener) -> io::Result<Server> {
        let addr = listener.local_addr()?;
        let (stop, stopped) = watch::channel(false);
        let service = Arc::new(http::SiteService {
            world,
            site,
            nonces: Mutex::new(auth::NonceBook::default()),
            shutdown: stopped.clone(),
            changing: Mutex::new(None),
            deadlocked: Mutex::new(std::collections::BTreeSet::new()),
        });
        let app = http::router(service);
        let mut signal = stopped;
        let task = tokio::spawn(async move {
            let shutdown = async move {
                let _ = signal.wait_for(|s| *s).await;
            };
            if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
                tracing::warn!(error = %e, "fake-ispn server stopped with an error");
            }
        });
        Ok(Server { addr, stop, task: Some(task) })
    }

    fn index(&self, site: &str) -> usize {
        self.world().site_index(site).unwrap_or_else(|| panic!("no fake site named {site:?}"))
    }

    /// The control handle: the model itself.
    pub fn world(&self) -> MutexGuard<'_, World> {
        direct::lock(&self.world)
    }

    /// The base URL of a site's HTTP server (`http://127.0.0.1:PORT`).
    pub fn url(&self, site: &str) -> String {
        let index = self.index(site);
        format!("http://{}", self.servers[index].addr)
    }

    /// A site as a direct [`ispn_xsite::SiteApi`], bypassing HTTP.
    pub fn site(&self, site: &str) -> ModelSite {
        ModelSite::new(self.world.clone(), self.index(site))
    }

    /// Cuts the link between two sites.
    pub fn cut_link(&self, a: &str, b: &str) {
        let (a, b) = (self.index(a), self.index(b));
        self.world().cut_link(a, b);
    }

    /// Heals the link between two sites.
    pub fn heal_link(&self, a: &str, b: &str) {
        let (a, b) = (self.index(a), self.index(b));
        self.world().heal_link(a, b);
    }

    /// A consistent copy of one site's state.
    pub fn snapshot(&self, site: &str) -> SiteSnapshot {
        let index = self.index(site);
        self.world().snapshot(index)
    }

    /// Kills a site: its HTTP server stops (connections are refused) and it loses its data.
    pub async fn kill(&mut self, site: &str) {
        let index = self.index(site);
        self.world().kill(index);
        if let Some(server) = self.servers.get_mut(index) {
            let _ = server.stop.send(true);
            if let Some(task) = server.task.take() {
                let _ = task.await;
            }
        }
    }

    /// Starts a killed site again, empty, on the same port.
    pub async fn restart(&mut self, site: &str) -> io::Result<()> {
        let index = self.index(site);
        self.world().restart(index);
        if let Some(addr) = self.servers.get(index).map(|s| s.addr) {
            let listener = TcpListener::bind(addr).await?;
            self.servers[index] = Self::serve(self.world.clone(), index, listener)?;
        }
        Ok(())
    }

    /// Stops every server and waits for them.
    pub async fn shutdown(mut self) {
        for server in &mut self.servers {
            let _ = server.stop.send(true);
            if let Some(task) = server.task.take() {
                let _ = task.await;
            }
        }
    }
}

impl Drop for FakeCluster {
    fn drop(&mut self) {
        for server in &self.servers {
            let _ = server.stop.send(true);
        }
    }
}
