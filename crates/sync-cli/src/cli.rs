//! The command line.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};

use sync_core::vocabulary::VerifyLevel;

use crate::exit::EXIT_CODES;

/// The version with the commit and the date of the build (`build.rs`).
pub const VERSION: &str =
    concat!(env!("CARGO_PKG_VERSION"), " (", env!("SITE_SYNC_COMMIT"), ", built ", env!("SITE_SYNC_BUILD_DATE"), ")");
use crate::output::Format;

/// Synchronize a stale Keycloak multi-site Infinispan site from the active one: scale Keycloak
/// down, take the backup offline, clear, bring online, push state, verify, scale Keycloak back;
/// interlocked, journaled and resumable.
#[derive(Debug, Parser)]
#[command(name = "site-sync", version = VERSION, after_help = EXIT_CODES)]
pub struct Cli {
    /// The configuration file.
    #[arg(short, long, global = true, env = "SITE_SYNC_CONFIG", default_value = "site-sync.yaml")]
    pub config: PathBuf,

    /// Output: text for people, json for automation (JSON Lines on stdout).
    #[arg(short, long, global = true, value_enum, default_value_t = Format::Text)]
    pub output: Format,

    /// The site whose data is kept (overrides `active:`).
    #[arg(long, global = true)]
    pub active: Option<String>,

    /// The stale site to clear and refill (overrides `offline:`).
    #[arg(long, global = true)]
    pub offline: Option<String>,

    /// Caches to work on, comma-separated (overrides `caches:`; default: Keycloak's).
    #[arg(long, global = true, value_delimiter = ',')]
    pub caches: Option<Vec<String>>,

    /// The journal file (overrides `journal:`).
    #[arg(long, global = true)]
    pub journal: Option<PathBuf>,

    /// Limit of each REST call (e.g. 30s).
    #[arg(long, global = true, value_parser = duration)]
    pub request_timeout: Option<Duration>,

    /// More log output (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, global = true, action = ArgAction::Count)]
    pub verbose: u8,

    /// Only errors in the log.
    #[arg(short, long, global = true)]
    pub quiet: bool,

    /// Log format (logs go to stderr).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Colour in logs: auto (only when stderr is a terminal and NO_COLOR is not set), always, never.
    #[arg(long, global = true, value_enum, default_value_t = Color::Auto)]
    pub color: Color,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// When logs are coloured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Color {
    /// When stderr is a terminal and `NO_COLOR` is unset or empty.
    Auto,
    /// Always (for a terminal that is not detected as one).
    Always,
    /// Never.
    Never,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// A duration on the command line (`30s`, `500ms`, `5m`), with the fix in its error.
fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|_| format!("{text:?} is not a duration; write e.g. 500ms, 30s, 5m"))
}

fn verify_level(text: &str) -> Result<VerifyLevel, String> {
    VerifyLevel::ALL.into_iter().find(|l| l.as_str() == text).ok_or_else(|| {
        format!("{text:?} is not a verification level; use one of: {}", VerifyLevel::ALL.map(VerifyLevel::as_str).join(", "))
    })
}

/// Options of commands that change things.
#[derive(Debug, Clone, Copy, Default, Args)]
pub struct Change {
    /// Do not ask for confirmation (required without a terminal).
    #[arg(short, long)]
    pub yes: bool,
    /// What the post-sync verification compares: entries (keys and values, the default), keys,
    /// or sizes (overrides `settings.verify`).
    #[arg(long, value_parser = verify_level)]
    pub verify: Option<VerifyLevel>,
    /// Force-delete Keycloak pods stuck in Terminating after the scale-down timeout.
    #[arg(long)]
    pub force_delete_stuck_pods: bool,
    /// Fail the verification of a cache whose values could not be read (only its keys compared),
    /// instead of passing it with a warning (overrides `settings.require_values`).
    #[arg(long)]
    pub require_values: bool,
    /// Go on when the direction guard finds the offline site serving users (taking writes, or in
    /// the load balancer): it is cleared all the same, and what it took is lost.
    #[arg(long)]
    pub discard_offline_writes: bool,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Read both sites and show what a run would do (changes nothing).
    Plan {
        /// Plan as `run --discard-offline-writes` would run.
        #[arg(long)]
        discard_offline_writes: bool,
    },
    /// Synchronize the offline site from the active site.
    Run(Change),
    /// Continue the run recorded in the journal.
    Resume(Change),
    /// Both sites side by side, with a diagnosis (changes nothing).
    Status,
    /// Compare the caches: sizes, then keys (and values with --values); bounded memory.
    Diff {
        /// Compare values too.
        #[arg(long)]
        values: bool,
        /// Sample keys to show per kind of difference.
        #[arg(long, default_value_t = 5)]
        sample: usize,
    },
    /// The post-sync check on its own: keys and values per cache (or what --level says).
    Verify {
        /// What to compare: entries (keys and values), keys, or sizes (default: `settings.verify`).
        #[arg(long, value_parser = verify_level)]
        level: Option<VerifyLevel>,
        /// No verdict (exit 3) for a cache whose values could not be read, where only its keys
        /// were compared (default: `settings.require_values`).
        #[arg(long)]
        require_values: bool,
    },
    /// Poll both sites and serve Prometheus metrics and a health check (changes nothing).
    Watch {
        /// Where to serve `/metrics` and `/healthz`.
        #[arg(long, default_value = "127.0.0.1:9464")]
        listen: std::net::SocketAddr,
        /// Time between two polls (at least 1s).
        #[arg(long, default_value = "15s", value_parser = duration)]
        interval: Duration,
        /// Poll once, print the metrics on stdout and exit.
        #[arg(long)]
        once: bool,
        /// Run the procedure (`run --yes`, with this configuration) when the pair has read split
        /// brain with the link up for --heal-hold; never over a failed or unfinished run.
        #[arg(long)]
        heal: bool,
        /// How long a split brain must last before --heal acts.
        #[arg(long, default_value = "5m", value_parser = duration)]
        heal_hold: Duration,
        /// The least time between two heals' starts.
        #[arg(long, default_value = "1h", value_parser = duration)]
        heal_interval: Duration,
        /// How many heals' journals and reports to keep (in `heals/` next to the journal).
        #[arg(long, default_value_t = 10)]
        heal_keep: usize,
    },
    /// A run's report from its journal alone (no site is read): what was done and when, Keycloak's
    /// downtime, link outages, what was verified; with a timeline picture in HTML and SVG.
    Report {
        /// text, markdown, html (with the timeline inline), svg (the timeline alone) or json
        /// (default: text, or json under `-o json`).
        #[arg(long, value_enum)]
        format: Option<crate::report::ReportFormat>,
        /// The run the journal must hold (refused when it holds another).
        #[arg(long)]
        run_id: Option<String>,
    },
    /// Run the whole procedure against an embedded simulated pair (no setup needed).
    Demo {
        /// Entries per cache on the active site.
        #[arg(long, default_value_t = 2_000)]
        entries: usize,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) on stdout.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) on stdout: `site-sync manpage > site-sync.1`.
    Manpage,
    /// Configuration commands.
    Config {
        /// Which.
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

/// `site-sync config ...`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration and reach both sites read-only.
    Check,
}
