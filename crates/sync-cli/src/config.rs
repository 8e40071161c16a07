//! The configuration file: both sites (Infinispan endpoint, authentication, TLS, where the
//! password comes from; Kubernetes context, namespace, CR names; how Keycloak is stopped), which
//! site is active, and the run's settings. Flags override the file; passwords never come from the
//! command line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ispn_xsite::{CacheName, Mechanism, SiteName};
use serde::{Deserialize, Deserializer};
use sync_core::Settings;
use sync_core::vocabulary::{VerifyLevel, human_duration};

use crate::exit::{CliError, Exit};

fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
    let text: Option<String> = Option::deserialize(deserializer)?;
    text.map(|t| {
        humantime::parse_duration(&t)
            .map_err(|_| serde::de::Error::custom(format!("{t:?} is not a duration; write e.g. 500ms, 30s, 15m")))
    })
    .transpose()
}

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The site whose data is kept.
    pub active: Option<String>,
    /// The stale site.
    pub offline: Option<String>,
    /// Both sites, by name (the name each reports as `local_site`).
    #[serde(default)]
    pub sites: BTreeMap<String, SiteConfig>,
    /// Caches to synchronize; default: discover Keycloak's.
    pub caches: Option<Vec<String>>,
    /// Patience and parallelism.
    #[serde(default)]
    pub settings: SettingsConfig,
    /// Where the journal is kept (default `site-sync-<active>-<offline>.journal.json`).
    pub journal: Option<PathBuf>,
    /// The run lock.
    #[serde(default)]
    pub lock: LockConfig,
    /// A command run after a verified sync (e.g. adding the site back to the load balancer).
    pub post_sync_command: Option<String>,
}

/// One site.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    /// Its Infinispan REST endpoint.
    #[serde(default)]
    pub infinispan: InfinispanConfig,
    /// Its Kubernetes cluster, if it runs on one.
    pub kubernetes: Option<KubernetesConfig>,
    /// How its Keycloak is stopped and started.
    #[serde(default)]
    pub keycloak: KeycloakConfig,
}

/// Reaching Infinispan.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InfinispanConfig {
    /// `https://host:11222`. Without it, the tool discovers the endpoint or port-forwards.
    pub url: Option<String>,
    /// `auto` (answer the server's challenge), `digest` or `basic`.
    #[serde(default)]
    pub auth: Mechanism,
    /// The CA certificate(s) to trust, PEM.
    pub ca_file: Option<PathBuf>,
    /// Accept any certificate and host name (like `cli.sh --trustall`): test servers only.
    #[serde(default)]
    pub insecure: bool,
    /// User name.
    pub user: Option<String>,
    /// Name of the environment variable holding the password.
    pub password_env: Option<String>,
    /// File holding the password (first line).
    pub password_file: Option<PathBuf>,
    /// REST context path.
    #[serde(default = "default_context")]
    pub context_path: String,
}

impl Default for InfinispanConfig {
    fn default() -> Self {
        Self {
            url: None,
            auth: Mechanism::Auto,
            ca_file: None,
            insecure: false,
            user: None,
            password_env: None,
            password_file: None,
            context_path: default_context(),
        }
    }
}

fn default_context() -> String {
    "rest".to_owned()
}

fn default_keycloak() -> String {
    "keycloak".to_owned()
}

fn default_service_account_dir() -> PathBuf {
    PathBuf::from("/var/run/secrets/kubernetes.io/serviceaccount")
}

fn default_infinispan() -> String {
    "infinispan".to_owned()
}

/// A site's Kubernetes cluster.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesConfig {
    /// The cluster site-sync runs in, through the pod's own ServiceAccount (instead of a
    /// kubeconfig and a context).
    #[serde(default)]
    pub in_cluster: bool,
    /// Where the pod's ServiceAccount is mounted (with `in_cluster`).
    #[serde(default = "default_service_account_dir")]
    pub service_account_dir: PathBuf,
    /// The kubeconfig file (default: `$KUBECONFIG` or `~/.kube/config`).
    pub kubeconfig: Option<PathBuf>,
    /// The context for this site's cluster.
    pub context: Option<String>,
    /// The namespace of Keycloak and Infinispan (default: the context's).
    pub namespace: Option<String>,
    /// The Keycloak CR name.
    #[serde(default = "default_keycloak")]
    pub keycloak: String,
    /// The Infinispan CR name (for credentials and endpoint discovery).
    #[serde(default = "default_infinispan")]
    pub infinispan: String,
    /// The Secret with Infinispan credentials (default: `connect-secret`, then the operator's).
    pub credentials_secret: Option<String>,
}

/// How Keycloak is stopped on this site.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeycloakMode {
    /// Through the Keycloak CR (needs `kubernetes`). The default when `kubernetes` is given.
    #[default]
    Operator,
    /// Through the `stop`, `start` and `is_stopped` commands.
    Commands,
    /// The operator stopped it already; the tool does not touch it (asks for confirmation).
    AlreadyStopped,
}

/// Keycloak settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeycloakConfig {
    /// How.
    pub mode: Option<KeycloakMode>,
    /// Stops Keycloak (mode `commands`).
    pub stop: Option<String>,
    /// Starts it.
    pub start: Option<String>,
    /// Exits 0 when it is stopped.
    pub is_stopped: Option<String>,
    /// Its HTTP URL (`/lb-check`, what the load balancer asks), for `status` and the report.
    pub url: Option<String>,
    /// Its management URL (`/health/ready`, port 9000 by default); with `commands`, the start
    /// waits for it.
    pub management_url: Option<String>,
}

/// Run settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsConfig {
    /// Pause between status reads.
    #[serde(default, deserialize_with = "duration")]
    pub poll_interval: Option<Duration>,
    /// How long one push may read SENDING before it is recovered.
    #[serde(default, deserialize_with = "duration")]
    pub push_deadline: Option<Duration>,
    /// How long a push may read SENDING while the offline site's entries do not move.
    #[serde(default, deserialize_with = "duration")]
    pub push_stall_timeout: Option<Duration>,
    /// How long the steps that need the cross-site link wait for it to come back.
    #[serde(default, deserialize_with = "duration")]
    pub link_wait: Option<Duration>,
    /// How long any step may take.
    #[serde(default, deserialize_with = "duration")]
    pub step_deadline: Option<Duration>,
    /// Limit of each REST call.
    #[serde(default, deserialize_with = "duration")]
    pub request_timeout: Option<Duration>,
    /// How long Keycloak may take to stop.
    #[serde(default, deserialize_with = "duration")]
    pub scale_down_timeout: Option<Duration>,
    /// How long Keycloak may take to start.
    #[serde(default, deserialize_with = "duration")]
    pub scale_up_timeout: Option<Duration>,
    /// Take-offline calls per cache.
    pub take_offline_attempts: Option<u32>,
    /// Pushes per cache.
    pub push_attempts: Option<u32>,
    /// Caches worked on at once.
    pub parallelism: Option<usize>,
    /// What the post-sync verification compares.
    pub verify: Option<VerifyLevel>,
    /// Replaced by `verify`; named here to say so.
    #[serde(default)]
    verify_keys: Option<serde::de::IgnoredAny>,
    /// Entries of difference tolerated beyond what traffic explains.
    pub drift_tolerance: Option<u64>,
    /// Force-delete Keycloak pods stuck in Terminating.
    pub force_delete_stuck_pods: Option<bool>,
    /// Fail a cache whose values could not be read instead of passing it on its keys.
    pub require_values: Option<bool>,
    /// How long the direction guard watches both sites' writes.
    #[serde(default, deserialize_with = "duration")]
    pub direction_window: Option<Duration>,
}

impl SettingsConfig {
    /// The run's settings: the file's values over the defaults, each held to its range.
    fn resolve(&self, manage_keycloak: bool) -> Result<Settings, CliError> {
        let defaults = Settings::default();
        let settings = Settings {
            poll_interval: self.poll_interval.unwrap_or(defaults.poll_interval),
            take_offline_attempts: self.take_offline_attempts.unwrap_or(defaults.take_offline_attempts),
            push_attempts: self.push_attempts.unwrap_or(defaults.push_attempts),
            push_deadline: self.push_deadline.unwrap_or(defaults.push_deadline),
            push_stall_timeout: self.push_stall_timeout.unwrap_or(defaults.push_stall_timeout),
            step_deadline: self.step_deadline.unwrap_or(defaults.step_deadline),
            link_wait: self.link_wait.unwrap_or(defaults.link_wait),
            request_timeout: self.request_timeout.unwrap_or(defaults.request_timeout),
            parallelism: self.parallelism.unwrap_or(defaults.parallelism),
            verify: self.verify.unwrap_or(defaults.verify),
            drift_tolerance: self.drift_tolerance.unwrap_or(defaults.drift_tolerance),
            manage_keycloak,
            direction_window: self.direction_window.unwrap_or(defaults.direction_window),
            discard_offline_writes: false,
            require_values: self.require_values.unwrap_or(false),
            direction_guard: true,
        };
        settings.check().map_err(|e| config_error(e.to_string()))?;
        for (name, value) in [("scale_down_timeout", self.scale_down_timeout), ("scale_up_timeout", self.scale_up_timeout)] {
            if let Some(value) = value
                && !(Duration::from_secs(1)..=Duration::from_secs(24 * 3600)).contains(&value)
            {
                return Err(config_error(format!(
                    "settings.{name}: {} is out of range; allowed: 1.00 s to 24h",
                    human_duration(value)
                )));
            }
        }
        Ok(settings)
    }
}

/// The run lock.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockConfig {
    /// The Lease name in the offline site's namespace (when it has `kubernetes`).
    pub lease: Option<String>,
    /// A lock file (when it has not; default: next to the journal).
    pub file: Option<PathBuf>,
}

/// Settings given as flags, which win over the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--active`.
    pub active: Option<String>,
    /// `--offline`.
    pub offline: Option<String>,
    /// `--caches`.
    pub caches: Option<Vec<String>>,
    /// `--journal`.
    pub journal: Option<PathBuf>,
    /// `--request-timeout`.
    pub request_timeout: Option<Duration>,
    /// `--verify`.
    pub verify: Option<VerifyLevel>,
    /// `--force-delete-stuck-pods`.
    pub force_delete_stuck_pods: bool,
    /// `--discard-offline-writes`.
    pub discard_offline_writes: bool,
    /// `--require-values`.
    pub require_values: bool,
}

/// A configuration with its roles resolved and checked.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The file as read (with overrides applied).
    pub config: Config,
    /// The active site's name.
    pub active: SiteName,
    /// The offline site's name.
    pub offline: SiteName,
    /// Its explicit cache list, if any.
    pub caches: Option<Vec<CacheName>>,
    /// The journal path.
    pub journal: PathBuf,
    /// The run's settings, checked against their ranges.
    pub settings: Settings,
}

fn config_error(message: String) -> CliError {
    CliError::new(Exit::Usage, message)
}

/// A configuration is a page of YAML; anything near this size is another file given by mistake.
const MAX_CONFIG_BYTES: u64 = 256 * 1024;

/// The text of the value at `location` (1-based line and column), up to the end of its line.
fn found_at(text: &str, location: Option<serde_saphyr::Location>) -> Option<String> {
    let location = location?;
    let line = text.lines().nth(usize::try_from(location.line()).ok()?.checked_sub(1)?)?;
    let column = usize::try_from(location.column()).ok()?.checked_sub(1)?;
    let value = line.chars().skip(column).collect::<String>();
    let value = value.split(" #").next().unwrap_or_default().trim();
    (!value.is_empty()).then(|| value.to_owned())
}

/// What a type the parser names means to a person writing the file.
fn expected_kind(ty: &str) -> Option<&'static str> {
    Some(match ty {
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => "a whole number",
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "an integer",
        "f32" | "f64" => "a number",
        "bool" | "boolean" | "a boolean" => "true or false",
        "string scalar" | "a string" => "a string",
        "sequence start" | "a sequence" => "a list",
        "mapping start" | "a map" => "a mapping (indented `key: value` lines)",
        _ => return None,
    })
}

/// The line a duplicate `key` first appeared on: the nearest line above `line` that holds the
/// same key at the same indentation, without leaving the enclosing mapping.
fn first_line_of_key(text: &str, key: &str, line: usize) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let depth = indent(lines.get(line.checked_sub(1)?)?);
    for number in (1..line).rev() {
        let candidate = lines[number - 1];
        if candidate.trim().is_empty() || candidate.trim_start().starts_with('#') {
            continue;
        }
        if indent(candidate) < depth {
            return None;
        }
        let name = candidate.trim_start().split(':').next().map(|k| k.trim().trim_matches(['"', '\'']));
        if indent(candidate) == depth && name == Some(key) {
            return Some(number);
        }
    }
    None
}

/// A YAML problem on one line: where (field path and line), what was expected, what was found.
fn yaml_problem(text: &str, field: &str, error: &serde_saphyr::Error) -> String {
    use serde_saphyr::Error as E;
    let location = error.location();
    let line = location.map(|l| l.line()).unwrap_or_default();
    let field = field.trim_end_matches('?').trim_end_matches('.');
    let at = |what: String| {
        if field.is_empty() { format!("line {line}: {what}") } else { format!("{field} (line {line}): {what}") }
    };
    let found = || found_at(text, location).map(|v| format!(", found {v:?}")).unwrap_or_default();
    let kind = |ty: &str| expected_kind(ty).map_or_else(|| ty.to_owned(), str::to_owned);
    match error {
        E::InvalidScalar { ty, .. } => at(format!("expected {}{}", kind(ty), found())),
        E::SerdeInvalidType { expected, unexpected, .. } | E::SerdeInvalidValue { expected, unexpected, .. } => {
            at(format!("expected {}, found {unexpected}", kind(expected)))
        }
        E::Unexpected { expected, .. } => at(format!("expected {}{}", kind(expected), found())),
        E::SerdeUnknownField { field: name, expected, .. } => {
            let known = if expected.is_empty() { "none".to_owned() } else { expected.join(", ") };
            at(format!("unknown field `{name}` (known here: {known}); fix the spelling or remove it"))
        }
        E::SerdeUnknownVariant { variant, expected, .. } => {
            at(format!("unknown value `{variant}`; use one of: {}", expected.join(", ")))
        }
        E::SerdeMissingField { field: name, .. } => at(format!("`{name}` is missing")),
        E::DuplicateMappingKey { key, .. } => {
            let key = key.clone().unwrap_or_default();
            let line = usize::try_from(line).unwrap_or_default();
            let path = if field.is_empty() { key.clone() } else { format!("{field}.{key}") };
            match first_line_of_key(text, &key, line) {
                Some(first) => format!("{path}: the key appears twice, on lines {first} and {line}; keep one"),
                None => format!("{path}: the key appears twice (again on line {line}); keep one"),
            }
        }
        E::Message { msg, .. } => at(msg.clone()),
        other => {
            // Syntax errors: the parser's reason, without its source excerpt.
            let rendered = other.to_string();
            let first = rendered.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or_default();
            let first = first.strip_prefix("error: ").unwrap_or(first);
            let reason = first.split_once(": ").map_or(first, |(_, reason)| reason);
            let column = location.map(|l| l.column()).unwrap_or_default();
            format!("line {line} column {column}: {reason}")
        }
    }
}

impl Config {
    /// Reads and parses `path`; unknown keys are errors.
    pub fn load(path: &Path) -> Result<Self, CliError> {
        let cannot_read = |e: std::io::Error| {
            config_error(format!(
                "cannot read the configuration {}: {e}; pass --config <file> (see docs/user-guide.md)",
                path.display()
            ))
        };
        let size = std::fs::metadata(path).map_err(cannot_read)?.len();
        if size > MAX_CONFIG_BYTES {
            return Err(config_error(format!(
                "the configuration {} is too large ({size} bytes; a configuration is at most {} KiB): is it the right file?",
                path.display(),
                MAX_CONFIG_BYTES / 1024
            )));
        }
        let text = std::fs::read_to_string(path).map_err(cannot_read)?;
        Self::parse(path, &text)
    }

    /// Parses `text` (read from `path`). Errors name the field path, its line and what was
    /// expected there, in the configuration's words rather than the parser's.
    pub fn parse(path: &Path, text: &str) -> Result<Self, CliError> {
        let field = std::cell::RefCell::new(String::new());
        let parsed = serde_saphyr::with_deserializer_from_str(text, |deserializer| {
            serde_path_to_error::deserialize(deserializer).map_err(|e| {
                *field.borrow_mut() = e.path().to_string();
                e.into_inner()
            })
        });
        parsed.map_err(|e| {
            let detail = yaml_problem(text, &field.into_inner(), e.without_snippet());
            config_error(format!("the configuration {} is not valid: {detail}", path.display()))
        })
    }

    /// Applies flags, checks the roles and the file's consistency.
    pub fn resolve(mut self, path: &Path, overrides: &Overrides) -> Result<Resolved, CliError> {
        if let Some(active) = &overrides.active {
            self.active = Some(active.clone());
        }
        if let Some(offline) = &overrides.offline {
            self.offline = Some(offline.clone());
        }
        if let Some(caches) = &overrides.caches {
            self.caches = Some(caches.clone());
        }
        if let Some(timeout) = overrides.request_timeout {
            self.settings.request_timeout = Some(timeout);
        }
        if let Some(level) = overrides.verify {
            self.settings.verify = Some(level);
        }
        if self.settings.verify_keys.is_some() {
            return Err(config_error(
                "settings.verify_keys was replaced by settings.verify: entries (the default) compares keys and values, keys compares keys, sizes compares entry counts".to_owned(),
            ));
        }
        if overrides.force_delete_stuck_pods {
            self.settings.force_delete_stuck_pods = Some(true);
        }
        let known = || self.sites.keys().cloned().collect::<Vec<_>>().join(", ");
        let role = |role: &str, value: &Option<String>| -> Result<SiteName, CliError> {
            let name = value.clone().ok_or_else(|| {
                config_error(format!("no {role} site: set `{role}:` in the configuration or pass --{role} <site>"))
            })?;
            if !self.sites.contains_key(&name) {
                return Err(config_error(format!(
                    "the {role} site '{name}' is not under `sites:` (known: {}); fix the name",
                    known()
                )));
            }
            SiteName::new(name).map_err(|e| config_error(format!("the {role} site name: {e}")))
        };
        let active = role("active", &self.active)?;
        let offline = role("offline", &self.offline)?;
        if active == offline {
            return Err(config_error(format!(
                "the active and the offline site are both '{active}'; the offline site is the stale one that gets cleared"
            )));
        }
        for (name, site) in &self.sites {
            site.check(name, name == offline.as_str())?;
        }
        let caches = match &self.caches {
            None => None,
            Some(list) => {
                let mut names = Vec::new();
                for name in list {
                    names.push(CacheName::new(name.clone()).map_err(|e| config_error(format!("caches: {e}")))?);
                }
                if names.is_empty() {
                    return Err(config_error("caches: the list is empty; remove it to synchronize Keycloak's caches".to_owned()));
                }
                Some(names)
            }
        };
        let manage_keycloak = self.sites[offline.as_str()].keycloak_mode() != Some(KeycloakMode::AlreadyStopped);
        let mut settings = self.settings.resolve(manage_keycloak)?;
        settings.discard_offline_writes = overrides.discard_offline_writes;
        settings.require_values |= overrides.require_values;
        let directory = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let base = std::path::absolute(directory).unwrap_or_else(|_| directory.to_path_buf());
        self.resolve_paths(&base);
        // A --journal given on the command line is relative to where the command runs.
        let journal = overrides
            .journal
            .clone()
            .or_else(|| self.journal.clone())
            .unwrap_or_else(|| base.join(format!("site-sync-{active}-{offline}.journal.json")));
        Ok(Resolved { config: self, active, offline, caches, journal, settings })
    }
}

impl Config {
    /// Every path in the file, with `~` expanded and relative to `base`.
    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut Option<PathBuf>| {
            if let Some(path) = p.as_mut() {
                *path = resolve_path(base, path);
            }
        };
        fix(&mut self.journal);
        fix(&mut self.lock.file);
        for site in self.sites.values_mut() {
            fix(&mut site.infinispan.ca_file);
            fix(&mut site.infinispan.password_file);
            if let Some(kubernetes) = site.kubernetes.as_mut() {
                fix(&mut kubernetes.kubeconfig);
                kubernetes.service_account_dir = resolve_path(base, &kubernetes.service_account_dir);
            }
        }
    }
}

impl Resolved {
    /// The journal must be writable where it is configured: a run that only finds out after its
    /// first change would stop half-way for a configuration error. Creates (and removes) a
    /// temporary file next to it.
    pub fn check_journal_place(&self) -> Result<(), CliError> {
        let dir = self.journal.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let fix = "create it, or point `journal:` (or --journal) elsewhere";
        match std::fs::metadata(dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(config_error(format!(
                    "journal {}: the directory {} does not exist; {fix}",
                    self.journal.display(),
                    dir.display()
                )));
            }
            Err(e) => {
                return Err(config_error(format!(
                    "journal {}: cannot read {}: {e}; {fix}",
                    self.journal.display(),
                    dir.display()
                )));
            }
            Ok(meta) if !meta.is_dir() => {
                return Err(config_error(format!(
                    "journal {}: {} is not a directory; {fix}",
                    self.journal.display(),
                    dir.display()
                )));
            }
            Ok(_) => {}
        }
        tempfile::NamedTempFile::new_in(dir).map(drop).map_err(|e| {
            config_error(format!("journal {}: cannot write in {}: {e}; {fix}", self.journal.display(), dir.display()))
        })
    }
}

/// A URL is checked when the file is read: a typo is a configuration error naming its field,
/// not a connection error later, and a URL is printed in messages, so it may not carry a password.
fn check_url(field: &str, text: &str) -> Result<(), CliError> {
    let example = "write e.g. https://infinispan.example.com:11222";
    if text.trim() != text {
        return Err(config_error(format!("{field} {text:?} has spaces around the URL; remove them")));
    }
    let url = url::Url::parse(text).map_err(|e| {
        let shown = ispn_xsite::redact::userinfo(text);
        let why = match e {
            url::ParseError::RelativeUrlWithoutBase => "must start with http:// or https://".to_owned(),
            other => format!("is not a valid URL ({other})"),
        };
        config_error(format!("{field} {shown:?} {why}; {example}"))
    })?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(config_error(format!(
            "{field}: the URL carries credentials (a user and password before the host), which would be shown wherever the URL is; remove them and set `user` with `password_env` or `password_file`"
        )));
    }
    if !matches!(url.scheme(), "http" | "https") {
        return Err(config_error(format!("{field} {text:?} must start with http:// or https://")));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(config_error(format!("{field} {text:?} has no host; {example}")));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(config_error(format!(
            "{field} {text:?} has a query or a fragment (? or #); give scheme, host and port only"
        )));
    }
    Ok(())
}

/// A path from the configuration: `~` is the home directory, and a relative path is relative to
/// the configuration file's directory (so that every command finds the same files, whatever the
/// working directory).
pub fn resolve_path(base: &Path, path: &Path) -> PathBuf {
    let home = || std::env::var_os("HOME").map(PathBuf::from);
    if let Ok(rest) = path.strip_prefix("~")
        && let Some(home) = home()
    {
        return home.join(rest);
    }
    base.join(path)
}

impl SiteConfig {
    fn check(&self, name: &str, offline: bool) -> Result<(), CliError> {
        let ispn = &self.infinispan;
        if let Some(url) = &ispn.url {
            check_url(&format!("sites.{name}.infinispan.url"), url)?;
        } else if self.kubernetes.is_none() {
            return Err(config_error(format!(
                "sites.{name}: no infinispan.url and no kubernetes section; give the URL, or the kubeconfig context to discover it"
            )));
        }
        if let Some(k) = &self.kubernetes
            && k.in_cluster
            && (k.kubeconfig.is_some() || k.context.is_some())
        {
            return Err(config_error(format!(
                "sites.{name}.kubernetes: in_cluster uses the pod's ServiceAccount; drop kubeconfig and context, or in_cluster"
            )));
        }
        if ispn.insecure && ispn.ca_file.is_some() {
            return Err(config_error(format!("sites.{name}.infinispan: ca_file and insecure contradict each other; keep one")));
        }
        if ispn.password_env.is_some() && ispn.password_file.is_some() {
            return Err(config_error(format!("sites.{name}.infinispan: give password_env or password_file, not both")));
        }
        if ispn.user.is_some() && ispn.password_env.is_none() && ispn.password_file.is_none() {
            return Err(config_error(format!(
                "sites.{name}.infinispan.user is set but no password source: add password_env or password_file (never the password itself)"
            )));
        }
        if ispn.user.is_none() && self.kubernetes.is_none() {
            return Err(config_error(format!(
                "sites.{name}.infinispan: no user; set user with password_env or password_file, or a kubernetes section to read the operator's Secret"
            )));
        }
        for (key, value) in [("url", &self.keycloak.url), ("management_url", &self.keycloak.management_url)] {
            if let Some(url) = value {
                check_url(&format!("sites.{name}.keycloak.{key}"), url)?;
            }
        }
        if !offline {
            return Ok(());
        }
        match self.keycloak_mode() {
            None => {
                return Err(config_error(format!(
                    "sites.{name}.keycloak.mode: without a kubernetes section, say how Keycloak is stopped: commands or already-stopped"
                )));
            }
            Some(KeycloakMode::Operator) if self.kubernetes.is_none() => {
                return Err(config_error(format!("sites.{name}.keycloak.mode operator needs a kubernetes section")));
            }
            Some(KeycloakMode::Commands) => {
                for (key, value) in
                    [("stop", &self.keycloak.stop), ("start", &self.keycloak.start), ("is_stopped", &self.keycloak.is_stopped)]
                {
                    if value.is_none() {
                        return Err(config_error(format!(
                            "sites.{name}.keycloak.mode is commands but keycloak.{key} is missing"
                        )));
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// How Keycloak is handled: the mode given, else `operator` with Kubernetes.
    pub fn keycloak_mode(&self) -> Option<KeycloakMode> {
        self.keycloak.mode.or(self.kubernetes.as_ref().map(|_| KeycloakMode::Operator))
    }
}

/// Reads a password from its configured source. The value never leaves the credentials object.
pub fn password(site: &str, ispn: &InfinispanConfig) -> Result<Option<String>, CliError> {
    if let Some(var) = &ispn.password_env {
        return std::env::var(var).map(Some).map_err(|_| {
            config_error(format!("sites.{site}.infinispan.password_env: the environment variable {var} is not set"))
        });
    }
    if let Some(file) = &ispn.password_file {
        let text = std::fs::read_to_string(file)
            .map_err(|e| config_error(format!("sites.{site}.infinispan.password_file {}: {e}", file.display())))?;
        return Ok(Some(text.lines().next().unwrap_or_default().to_owned()));
    }
    Ok(None)
}
