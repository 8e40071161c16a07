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
mod watch;

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use crate::cli::{Cli, Command, ConfigCommand, LogFormat};
use crate::exit::{CliError, Exit};
use crate::output::{Format, json_line};

fn init_tracing(cli: &Cli) {
    let default = match (cli.quiet, cli.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, _) => "debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter(filter).with_target(false);
    match cli.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn dispatch(cli: &Cli) -> Result<Exit, CliError> {
    let format = cli.output;
    match &cli.command {
        Command::Demo { entries } => demo::demo(format, *entries).await,
        Command::Plan => commands::plan(format, &commands::load(cli, None)?).await,
        Command::Run(change) => commands::run(format, &commands::load(cli, Some(*change))?, *change, false).await,
        Command::Resume(change) => commands::run(format, &commands::load(cli, Some(*change))?, *change, true).await,
        Command::Status => commands::status(format, &commands::load(cli, None)?).await,
        Command::Diff { values, sample } => commands::diff(format, &commands::load(cli, None)?, *values, *sample).await,
        Command::Verify { level } => commands::verify(format, &commands::load(cli, None)?, *level).await,
        Command::Watch { listen, interval, once, heal, heal_hold, heal_interval } => {
            let heal = heal.then(|| watch::Heal::new(cli, *heal_hold, *heal_interval));
            let options = watch::Options { listen: *listen, interval: *interval, once: *once, heal };
            watch::watch(&commands::load(cli, None)?, options).await
        }
        Command::Config { command: ConfigCommand::Check } => commands::check(format, &commands::load(cli, None)?).await,
    }
}

fn main() -> ExitCode {
    // One TLS provider for the whole process (reqwest and kube both use rustls with aws-lc-rs);
    // not every kube client path installs it.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(e.exit_code().clamp(0, 255) as u8);
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
            match cli.output {
                Format::Json => {
                    json_line(serde_json::json!({"type": "error", "message": error.message, "exit_code": error.exit.code()}))
                }
                Format::Text => eprintln!("site-sync: {}", error.message),
            }
            error.exit.into()
        }
    }
}
