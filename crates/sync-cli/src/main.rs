//! `site-sync`: parse the command line, set up logging and TLS, run the command, map the result
//! to a documented exit code. Nothing else lives here.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod cli;
mod commands;
mod config;
mod connect;
mod demo;
mod exit;
mod inspect;
mod output;
mod report;
mod watch;

use std::process::ExitCode;

use std::io::{IsTerminal, Write};

use clap::{CommandFactory, Parser};
use tracing_subscriber::EnvFilter;

use crate::cli::{Cli, Color, Command, ConfigCommand, LogFormat};
use crate::exit::{CliError, Exit};
use crate::output::{Format, json_line};

/// Log lines go to stderr with the user information of any URL in them redacted: a library's
/// message may quote a URL it was given.
#[derive(Debug, Clone, Copy)]
struct RedactingStderr;

impl Write for RedactingStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match std::str::from_utf8(buf) {
            Ok(text) => std::io::stderr().write_all(ispn_xsite::redact::userinfo(text).as_bytes())?,
            Err(_) => std::io::stderr().write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Whether logs are coloured: `--color`, else only on a terminal and without `NO_COLOR`.
fn colored(color: Color) -> bool {
    match color {
        Color::Always => true,
        Color::Never => false,
        Color::Auto => std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
    }
}

fn init_tracing(cli: &Cli) {
    let default = match (cli.quiet, cli.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, _) => "debug",
    };
    // kube's client logs every failed request at error level on its own; site-sync reports the
    // failure itself, with the site and what to do, so that line is only shown with -vv.
    let default = if cli.verbose >= 2 { default.to_owned() } else { format!("{default},kube_client::client::builder=off") };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_writer(|| RedactingStderr)
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(colored(cli.color));
    match cli.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Whether the raw command line asks for JSON output (read before clap, for its own errors).
fn wants_json(args: &[std::ffi::OsString]) -> bool {
    let args: Vec<String> = args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
    args.iter().enumerate().any(|(i, arg)| {
        matches!(arg.as_str(), "--output=json" | "-ojson" | "-o=json")
            || (matches!(arg.as_str(), "-o" | "--output") && args.get(i + 1).is_some_and(|next| next == "json"))
    })
}

/// Prints an error: one `site-sync: ` line per problem, or one JSON line.
fn report(format: Format, error: &CliError) {
    match format {
        Format::Json => {
            let mut value = serde_json::json!({"type": "error", "message": error.message, "exit_code": error.exit.code()});
            if !error.also.is_empty() {
                value["problems"] = serde_json::json!(error.lines().collect::<Vec<_>>());
            }
            json_line(value);
        }
        Format::Text => {
            for line in error.lines() {
                eprintln!("site-sync: {}", ispn_xsite::redact::userinfo(line));
            }
        }
    }
}

async fn dispatch(cli: &Cli) -> Result<Exit, CliError> {
    let format = cli.output;
    match &cli.command {
        Command::Demo { entries } => demo::demo(format, *entries).await,
        Command::Report { format: report_format, run_id } => {
            let report_format = report_format.unwrap_or(if format == Format::Json {
                report::ReportFormat::Json
            } else {
                report::ReportFormat::Text
            });
            commands::report(cli, report_format, run_id.as_deref())
        }
        Command::Plan { discard_offline_writes } => {
            let change = cli::Change { discard_offline_writes: *discard_offline_writes, ..cli::Change::default() };
            commands::plan(format, &commands::load(cli, Some(change))?).await
        }
        Command::Run(change) => commands::run(format, &commands::load(cli, Some(*change))?, *change, false).await,
        Command::Resume(change) => commands::run(format, &commands::load(cli, Some(*change))?, *change, true).await,
        Command::Status => commands::status(format, &commands::load(cli, None)?).await,
        Command::Diff { values, sample } => commands::diff(format, &commands::load(cli, None)?, *values, *sample).await,
        Command::Verify { level, require_values } => {
            let resolved = commands::load(cli, None)?;
            let require = *require_values || resolved.settings.require_values;
            commands::verify(format, &resolved, *level, require).await
        }
        Command::Watch { listen, interval, once, heal, heal_hold, heal_interval, heal_keep } => {
            let heal = heal.then(|| watch::Heal::new(cli, *heal_hold, *heal_interval, *heal_keep));
            let options = watch::Options { listen: *listen, interval: *interval, once: *once, heal };
            watch::watch(&commands::load(cli, None)?, options).await
        }
        Command::Config { command: ConfigCommand::Check } => commands::check(format, &commands::load(cli, None)?).await,
        Command::Completions { shell } => {
            clap_complete::generate(*shell, &mut Cli::command(), "site-sync", &mut std::io::stdout());
            Ok(Exit::Success)
        }
        Command::Manpage => clap_mangen::Man::new(Cli::command())
            .render(&mut std::io::stdout())
            .map(|()| Exit::Success)
            .map_err(|e| CliError::new(Exit::Failed, format!("cannot write the man page: {e}"))),
    }
}

fn main() -> ExitCode {
    // One TLS provider for the whole process (reqwest and kube both use rustls with aws-lc-rs);
    // not every kube client path installs it.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => {
            let code = e.exit_code().clamp(0, 255) as u8;
            // Help and --version are answers, not errors; a usage error under `-o json` is a JSON
            // line like every other error.
            if code != 0 && wants_json(&args) {
                let message = e.kind().as_str().map_or_else(|| e.to_string(), str::to_owned);
                let first = e.to_string().lines().next().unwrap_or_default().trim_start_matches("error: ").to_owned();
                let message = if first.is_empty() { message } else { first };
                json_line(serde_json::json!({"type": "error", "message": message, "exit_code": code}));
            } else {
                let _ = e.print();
            }
            return ExitCode::from(code);
        }
    };
    init_tracing(&cli);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("site-sync: cannot start: {e}");
            return Exit::Failed.into();
        }
    };
    match runtime.block_on(dispatch(&cli)) {
        Ok(exit) => exit.into(),
        Err(error) => {
            report(cli.output, &error);
            error.exit.into()
        }
    }
}
