//! From a resolved configuration to live connections: an Infinispan client per site (direct URL,
//! discovered endpoint, or a port-forward through the API server), the offline site's Keycloak
//! backend, the run lock, the journal file and the plan.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ispn_xsite::{Client, ClientConfig, Credentials, SiteName, TlsMode};
use keycloak_scale::external::{CommandKeycloak, StoppedKeycloak};
use keycloak_scale::health::HealthProbe;
use keycloak_scale::infinispan::{PortForward, credentials, external_url, infinispan_pod};
use keycloak_scale::lock::{FileLock, LeaseLock};
use keycloak_scale::{KubeError, KubeKeycloak, ScaleSettings, SiteCluster};
use sync_core::journal::Journal;
use sync_core::ports::{
    JournalError, JournalStore, Keycloak, KeycloakError, KeycloakHealth, KeycloakState, LockError, RunLock, Scaling,
};
use sync_core::{CacheSelection, Plan, SiteRef};

use crate::config::{KeycloakMode, Resolved};
use crate::exit::{CliError, Exit, both};
use crate::inspect::{FIRST_ANSWER, first_answer};

/// One connected site.
#[derive(Debug)]
pub struct Site {
    /// Its name.
    pub name: SiteName,
    /// Its Infinispan client.
    pub client: Client,
    /// Where the client goes (for messages; a port-forward shows as such).
    pub endpoint: String,
    /// Its Kubernetes cluster, if configured.
    pub cluster: Option<SiteCluster>,
    _forward: Option<PortForward>,
}

fn kube_error(error: KubeError) -> CliError {
    match error {
        KubeError::Config(_) => CliError::new(Exit::Usage, error.to_string()),
        other => CliError::new(Exit::Refused, other.to_string()),
    }
}

/// Connects to one site (nothing is sent to Infinispan yet).
pub async fn site(resolved: &Resolved, name: &SiteName) -> Result<Site, CliError> {
    let config = &resolved.config.sites[name.as_str()];
    let ispn = &config.infinispan;
    let cluster = match &config.kubernetes {
        Some(k) => {
            let cluster = if k.in_cluster {
                SiteCluster::in_cluster(&k.service_account_dir, k.namespace.as_deref())
            } else {
                SiteCluster::from_kubeconfig(k.kubeconfig.as_deref(), k.context.as_deref(), k.namespace.as_deref()).await
            };
            Some(cluster.map_err(|e| CliError::new(e_exit(&e), format!("{name}: {e}")))?)
        }
        None => None,
    };
    let user_password = match (&ispn.user, crate::config::password(name.as_str(), ispn)?) {
        (Some(user), Some(password)) => Some((user.clone(), password)),
        _ => None,
    };
    let credentials = match (user_password, &cluster, &config.kubernetes) {
        (Some((user, password)), _, _) => Credentials::new(user, password),
        (None, Some(cluster), Some(k)) => {
            let found = credentials(cluster, &k.infinispan, k.credentials_secret.as_deref())
                .await
                .map_err(|e| CliError::new(Exit::Refused, format!("{name}: {}", kube_error(e).message)))?;
            tracing::info!(site = %name, source = %found.source, user = %found.user, "Infinispan credentials from Kubernetes");
            Credentials::new(found.user, found.password)
        }
        _ => return Err(CliError::new(Exit::Usage, format!("sites.{name}.infinispan: no credentials configured"))),
    };
    let tls = match (&ispn.ca_file, ispn.insecure) {
        (Some(file), _) => {
            let path = file.clone();
            let pem = std::fs::read(&path)
                .map_err(|e| CliError::new(Exit::Usage, format!("sites.{name}.infinispan.ca_file {}: {e}", path.display())))?;
            TlsMode::CaPem(pem)
        }
        (None, true) => {
            tracing::warn!(site = %name, "TLS certificate checks are off (insecure: true); use ca_file outside tests");
            TlsMode::Insecure
        }
        (None, false) => TlsMode::System,
    };
    let tls_configured = !matches!(tls, TlsMode::System);
    let at_site = |e: KubeError| {
        let error = kube_error(e);
        CliError::new(error.exit, format!("{name}: {}", error.message))
    };
    let (url, endpoint, forward) = match (&ispn.url, &cluster, &config.kubernetes) {
        (Some(url), _, _) => (url.clone(), url.clone(), None),
        (None, Some(cluster), Some(k)) => match external_url(cluster, &k.infinispan).await.map_err(at_site)? {
            Some(url) => (url.clone(), url, None),
            None => {
                let pod = infinispan_pod(cluster, &k.infinispan).await.map_err(at_site)?;
                let forward = PortForward::start(cluster, &pod, 11222).await.map_err(at_site)?;
                let scheme = if tls_configured { "https" } else { "http" };
                let url = format!("{scheme}://{}", forward.local_addr());
                let endpoint = format!("{url} (port-forward to pod {pod} in {}/{})", cluster.context, cluster.namespace);
                (url, endpoint, Some(forward))
            }
        },
        _ => return Err(CliError::new(Exit::Usage, format!("sites.{name}.infinispan.url is required without kubernetes"))),
    };
    let mut client_config = ClientConfig::new(url, Some(credentials));
    client_config.mechanism = ispn.auth;
    client_config.tls = tls;
    client_config.context_path = ispn.context_path.clone();
    client_config.timeout = resolved.settings.request_timeout;
    let client = Client::new(client_config).map_err(|e| CliError::new(Exit::Usage, format!("{name}: {e}")))?;
    Ok(Site { name: name.clone(), client, endpoint, cluster, _forward: forward })
}

fn e_exit(error: &KubeError) -> Exit {
    if matches!(error, KubeError::Config(_)) { Exit::Usage } else { Exit::Refused }
}

/// How the offline site's Keycloak is scaled.
#[derive(Debug)]
pub enum Backend {
    /// The Keycloak CR.
    Kube(Box<KubeKeycloak>),
    /// Shell commands.
    Commands(Box<CommandKeycloak>),
    /// Already stopped by the operator.
    Stopped(StoppedKeycloak),
}

/// The offline site's Keycloak: how it is scaled, and where it says whether it serves.
#[derive(Debug)]
pub struct AnyKeycloak {
    backend: Backend,
    probe: Option<HealthProbe>,
}

impl Keycloak for AnyKeycloak {
    fn describe(&self) -> String {
        match &self.backend {
            Backend::Kube(k) => k.describe(),
            Backend::Commands(k) => k.describe(),
            Backend::Stopped(k) => k.describe(),
        }
    }

    async fn observe(&self) -> Result<Option<KeycloakState>, KeycloakError> {
        match &self.backend {
            Backend::Kube(k) => k.observe().await,
            Backend::Commands(k) => k.observe().await,
            Backend::Stopped(k) => k.observe().await,
        }
    }

    async fn scale_down(&self) -> Result<u32, KeycloakError> {
        match &self.backend {
            Backend::Kube(k) => k.scale_down().await,
            Backend::Commands(k) => k.scale_down().await,
            Backend::Stopped(k) => k.scale_down().await,
        }
    }

    async fn scale_up(&self, instances: u32) -> Result<(), KeycloakError> {
        match &self.backend {
            Backend::Kube(k) => k.scale_up(instances).await,
            Backend::Commands(k) => k.scale_up(instances).await,
            Backend::Stopped(k) => k.scale_up(instances).await,
        }
    }

    fn timeout(&self, scaling: Scaling) -> Duration {
        match &self.backend {
            Backend::Kube(k) => k.timeout(scaling),
            Backend::Commands(k) => k.timeout(scaling),
            Backend::Stopped(k) => k.timeout(scaling),
        }
    }

    async fn health(&self) -> Option<KeycloakHealth> {
        match &self.probe {
            Some(probe) => Some(probe.check().await),
            None => None,
        }
    }
}

/// Where a site's Keycloak answers about its health, when its URLs are configured.
pub fn health_probe(resolved: &Resolved, site: &SiteName) -> Result<Option<HealthProbe>, CliError> {
    let keycloak = &resolved.config.sites[site.as_str()].keycloak;
    if keycloak.url.is_none() && keycloak.management_url.is_none() {
        return Ok(None);
    }
    HealthProbe::new(keycloak.url.clone(), keycloak.management_url.clone())
        .map(Some)
        .map_err(|e| CliError::new(Exit::Usage, format!("sites.{site}.keycloak: {e}")))
}

/// The offline site's Keycloak backend.
pub fn keycloak(resolved: &Resolved, offline: &Site) -> Result<AnyKeycloak, CliError> {
    let config = &resolved.config.sites[offline.name.as_str()];
    let settings = &resolved.config.settings;
    let probe = health_probe(resolved, &offline.name)?;
    let backend = match config.keycloak_mode() {
        Some(KeycloakMode::Operator) => {
            let defaults = ScaleSettings::default();
            let scale = ScaleSettings {
                poll: settings.poll_interval.unwrap_or(defaults.poll),
                scale_down_timeout: settings.scale_down_timeout.unwrap_or(defaults.scale_down_timeout),
                scale_up_timeout: settings.scale_up_timeout.unwrap_or(defaults.scale_up_timeout),
                force_delete_stuck_pods: settings.force_delete_stuck_pods.unwrap_or(false),
            };
            let (Some(cluster), Some(k)) = (&offline.cluster, &config.kubernetes) else {
                unreachable!("the configuration check requires kubernetes for operator mode")
            };
            Backend::Kube(Box::new(KubeKeycloak::new(cluster.clone(), k.keycloak.clone(), scale)))
        }
        Some(KeycloakMode::Commands) => Backend::Commands(Box::new(CommandKeycloak {
            stop: config.keycloak.stop.clone().unwrap_or_default(),
            start: config.keycloak.start.clone().unwrap_or_default(),
            is_stopped: config.keycloak.is_stopped.clone().unwrap_or_default(),
            timeout: settings.scale_down_timeout.unwrap_or(Duration::from_secs(300)),
            poll: settings.poll_interval.unwrap_or(Duration::from_millis(500)),
            ready: probe.clone(),
        })),
        Some(KeycloakMode::AlreadyStopped) | None => Backend::Stopped(StoppedKeycloak),
    };
    Ok(AnyKeycloak { backend, probe })
}

/// The run lock.
#[derive(Debug)]
pub enum AnyLock {
    /// A Lease in the offline site's namespace.
    Lease(Box<LeaseLock>),
    /// A lock file.
    File(FileLock),
}

impl RunLock for AnyLock {
    async fn acquire(&self, run_id: &str) -> Result<(), LockError> {
        match self {
            Self::Lease(l) => l.acquire(run_id).await,
            Self::File(l) => l.acquire(run_id).await,
        }
    }

    async fn renew(&self, run_id: &str) -> Result<(), LockError> {
        match self {
            Self::Lease(l) => l.renew(run_id).await,
            Self::File(l) => l.renew(run_id).await,
        }
    }

    async fn release(&self, run_id: &str) -> Result<(), LockError> {
        match self {
            Self::Lease(l) => l.release(run_id).await,
            Self::File(l) => l.release(run_id).await,
        }
    }

    fn renew_every(&self) -> Duration {
        match self {
            Self::Lease(l) => l.renew_every(),
            Self::File(l) => l.renew_every(),
        }
    }
}

/// A Lease when the offline site runs on Kubernetes, else a lock file next to the journal.
pub fn lock(resolved: &Resolved, offline: &Site) -> AnyLock {
    let config = &resolved.config.lock;
    match &offline.cluster {
        Some(cluster) => AnyLock::Lease(Box::new(LeaseLock::new(
            cluster.clone(),
            config.lease.clone().unwrap_or_else(|| "site-sync".to_owned()),
            Duration::from_secs(60),
        ))),
        None => {
            let path = config.file.clone().unwrap_or_else(|| resolved.journal.with_extension("lock"));
            AnyLock::File(FileLock::new(path))
        }
    }
}

/// The journal in a file, written atomically: a temporary file in the same directory, synced,
/// then renamed over the old one.
#[derive(Debug, Clone)]
pub struct FileJournal {
    path: PathBuf,
}

impl FileJournal {
    /// A journal at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    fn io(&self, detail: impl std::fmt::Display) -> JournalError {
        JournalError::Io { location: self.path.display().to_string(), detail: detail.to_string() }
    }
}

impl JournalStore for FileJournal {
    async fn load(&self) -> Result<Option<Journal>, JournalError> {
        match tokio::fs::read_to_string(&self.path).await {
            Ok(text) => Journal::from_json(&self.path.display().to_string(), &text).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io(e)),
        }
    }

    async fn save(&self, journal: &Journal) -> Result<(), JournalError> {
        let text = journal.to_json();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            use std::io::Write as _;
            let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            let mut temporary = tempfile::NamedTempFile::new_in(dir)?;
            temporary.write_all(text.as_bytes())?;
            temporary.as_file().sync_all()?;
            temporary.persist(&path).map_err(|e| e.error)?;
            if let Ok(directory) = std::fs::File::open(dir) {
                let _ = directory.sync_all();
            }
            Ok(())
        })
        .await
        .map_err(|e| self.io(e))?
        .map_err(|e| self.io(e))
    }

    fn location(&self) -> String {
        self.path.display().to_string()
    }
}

/// The plan the configuration describes.
pub fn plan(resolved: &Resolved, active: &Site, offline: &Site) -> Plan {
    Plan {
        active: SiteRef { name: active.name.clone(), endpoint: active.endpoint.clone() },
        offline: SiteRef { name: offline.name.clone(), endpoint: offline.endpoint.clone() },
        caches: resolved.caches.clone().map_or(CacheSelection::Keycloak, CacheSelection::Explicit),
        settings: resolved.settings.clone(),
    }
}

/// Everything a run needs.
#[derive(Debug)]
pub struct Connected {
    /// The plan.
    pub plan: Plan,
    /// Ports for the driver.
    pub ports: sync_core::Ports<Client, AnyKeycloak, FileJournal, AnyLock, sync_core::ports::TokioClock>,
    /// Port-forwards, kept alive as long as the connection is used.
    _forwards: (Option<PortForward>, Option<PortForward>),
}

impl Connected {
    /// Asks RBAC, before anything changes, for every permission the run will use on the offline
    /// site's cluster (scaling Keycloak, the Lease). The site's other calls (Secrets, Service,
    /// port-forward) were made by `connect` already and failed there if refused.
    pub async fn check_access(&self, offline: &SiteName) -> Result<(), CliError> {
        let mut wanted = Vec::new();
        let mut cluster = None;
        if let Backend::Kube(keycloak) = &self.ports.keycloak.backend {
            wanted.extend(keycloak.permissions().await.map_err(|e| CliError::new(e_exit(&e), format!("{offline}: {e}")))?);
            cluster = Some(keycloak.cluster());
        }
        if let AnyLock::Lease(lease) = &self.ports.lock {
            wanted.extend(lease.permissions());
            cluster = Some(lease.cluster());
        }
        match cluster {
            Some(cluster) => keycloak_scale::access::check(cluster, &wanted)
                .await
                .map_err(|e| CliError::new(Exit::Refused, format!("{offline}: {e}"))),
            None => Ok(()),
        }
    }
}

/// How long a site's first answer may take: [`FIRST_ANSWER`], or, when `request_timeout` is not
/// longer, that timeout itself (the budget then ends a second later, so that the client's own
/// timeout, which names the request, is the one that fires).
pub fn first_answer_budget(resolved: &Resolved) -> Duration {
    let timeout = resolved.settings.request_timeout;
    if timeout <= FIRST_ANSWER { timeout + Duration::from_secs(1) } else { FIRST_ANSWER }
}

/// Both sites' connections, each on its own: one that cannot be made leaves the other usable.
pub async fn connect_each(resolved: &Resolved) -> (Result<Site, CliError>, Result<Site, CliError>) {
    tokio::join!(site(resolved, &resolved.active), site(resolved, &resolved.offline))
}

/// Connects both sites, has each give its first answer (bounded: [`first_answer_budget`]), and
/// builds the ports. Every site that cannot be used is named, not only the first.
pub async fn connect(resolved: &Resolved) -> Result<Connected, CliError> {
    let (active, offline) = connect_each(resolved).await;
    let (active, offline) = both(active, offline)?;
    let budget = first_answer_budget(resolved);
    let reach = async |site: &Site| {
        first_answer(&site.name, &site.endpoint, &site.client, budget)
            .await
            .map(drop)
            .map_err(|e| CliError::new(Exit::Refused, e))
    };
    let (a, o) = tokio::join!(reach(&active), reach(&offline));
    both(a, o)?;
    connected(resolved, active, offline)
}

/// The ports of two connected sites.
pub fn connected(resolved: &Resolved, active: Site, offline: Site) -> Result<Connected, CliError> {
    let plan = plan(resolved, &active, &offline);
    let keycloak = keycloak(resolved, &offline)?;
    let lock = lock(resolved, &offline);
    let journal = FileJournal::new(resolved.journal.clone());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    let Site { client: active_client, _forward: active_forward, .. } = active;
    let Site { client: offline_client, _forward: offline_forward, .. } = offline;
    Ok(Connected {
        plan,
        ports: sync_core::Ports {
            active: active_client,
            offline: offline_client,
            keycloak,
            journal,
            lock,
            clock: sync_core::ports::TokioClock::starting_at(now),
        },
        _forwards: (active_forward, offline_forward),
    })
}
