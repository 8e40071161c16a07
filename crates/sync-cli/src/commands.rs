//! The commands. Each returns the exit code; errors carry theirs.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

use futures::StreamExt;
use ispn_xsite::{CacheName, SiteApi, SiteName};
use serde_json::json;
use sync_core::compare::{CompareLimits, CompareMode, Compared, check_content, compare, compare_values};
use sync_core::decide::{content_verdict, sizes_verdict};
use sync_core::observe::Sizes;
use sync_core::ports::{JournalStore, Keycloak};
use sync_core::vocabulary::{Verdict, VerifyLevel};
use sync_core::{Driver, Journal, PreflightReport, RunOutcome, Side, Step};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use crate::cli::{Change, Cli};
use crate::config::{Config, KeycloakMode, Overrides, Resolved};
use crate::connect::{Connected, Site, connect, connect_each, first_answer_budget, health_probe, keycloak};
use crate::exit::{CliError, Exit, both};
use crate::inspect::{Diagnosis, KeycloakView, Reach, activity, diagnose, look, recommend, render, replicated_caches};
use crate::output::{Format, Renderer, finish, json_line};
use crate::report::{ReportFiles, ReportFormat, render as render_report};

/// Reads and resolves the configuration named on the command line.
pub fn load(cli: &Cli, change: Option<Change>) -> Result<Resolved, CliError> {
    let overrides = Overrides {
        active: cli.active.clone(),
        offline: cli.offline.clone(),
        caches: cli.caches.clone(),
        journal: cli.journal.clone(),
        request_timeout: cli.request_timeout,
        verify: change.and_then(|c| c.verify),
        force_delete_stuck_pods: change.is_some_and(|c| c.force_delete_stuck_pods),
        discard_offline_writes: change.is_some_and(|c| c.discard_offline_writes),
        require_values: change.is_some_and(|c| c.require_values),
    };
    Config::load(&cli.config)?.resolve(&cli.config, &overrides)
}

/// `site-sync report`: the journal given with `--journal` (a copy from a pod needs no
/// configuration), or the configured one.
pub fn report(cli: &Cli, format: ReportFormat, run_id: Option<&str>) -> Result<Exit, CliError> {
    let path = match &cli.journal {
        Some(path) => path.clone(),
        None => load(cli, None)?.journal,
    };
    let text = std::fs::read_to_string(&path).map_err(|e| {
        let fix = if e.kind() == std::io::ErrorKind::NotFound {
            "no run has written it yet; pass the journal with --journal PATH"
        } else {
            "check its permissions, or pass another with --journal PATH"
        };
        CliError::new(Exit::Usage, format!("cannot read the journal {}: {e}; {fix}", path.display()))
    })?;
    let journal =
        Journal::from_json(&path.display().to_string(), &text).map_err(|e| CliError::new(Exit::Usage, e.to_string()))?;
    if let Some(wanted) = run_id.filter(|id| *id != journal.run_id) {
        return Err(CliError::new(
            Exit::Usage,
            format!(
                "the journal {} holds run {}, not {wanted}; pass the journal of that run with --journal PATH",
                path.display(),
                journal.run_id
            ),
        ));
    }
    let picture = ReportFiles::beside(&path).svg.file_name().map(|n| n.to_string_lossy().into_owned());
    print!("{}", render_report(&journal, format, picture.as_deref()));
    Ok(Exit::Success)
}

fn exit_for(outcome: &RunOutcome) -> Exit {
    match outcome {
        RunOutcome::Succeeded(_) => Exit::Success,
        RunOutcome::Refused(_) => Exit::Refused,
        RunOutcome::Failed(_) => Exit::Failed,
        RunOutcome::Interrupted => Exit::Interrupted,
    }
}

fn run_id() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    format!("{}-{}", now.as_secs(), std::process::id())
}

/// Asks `question` on the terminal; without one, refuses unless `yes`.
fn confirm(yes: bool, question: &str) -> Result<(), CliError> {
    if yes {
        return Ok(());
    }
    if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
        return Err(CliError::new(
            Exit::ConfirmationNeeded,
            "confirmation needed but there is no terminal: pass --yes to proceed without asking; nothing was changed",
        ));
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| CliError::new(Exit::Usage, format!("cannot read the answer: {e}")))?;
    if matches!(answer.trim(), "y" | "Y" | "yes" | "YES") {
        Ok(())
    } else {
        Err(CliError::new(Exit::Refused, "cancelled at the prompt; nothing was changed"))
    }
}

/// Stops the driver at the next safe point on the first Ctrl-C or SIGTERM (what `kill`, `timeout`
/// and a Kubernetes pod's termination send); exits at once on the second.
pub fn stop_on_signal() -> watch::Receiver<bool> {
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(async move {
        // Without the handlers the default action stays: the process ends, and the journal still
        // holds the last completed action.
        let (Ok(mut interrupt), Ok(mut terminate)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
            return;
        };
        let mut received = 0;
        loop {
            let name = tokio::select! {
                _ = interrupt.recv() => "Ctrl-C",
                _ = terminate.recv() => "SIGTERM",
            };
            received += 1;
            if received > 1 {
                std::process::exit(i32::from(Exit::Interrupted.code()));
            }
            eprintln!("\nsite-sync: {name}: stopping at the next safe point (Ctrl-C again to quit at once)");
            let _ = stop.send(true);
        }
    });
    stopped
}

async fn post_sync(command: &str) -> Result<String, String> {
    let status = tokio::process::Command::new("sh").arg("-c").arg(command).status().await;
    match status {
        Ok(s) if s.success() => Ok(format!("post-sync command succeeded: {command}")),
        Ok(s) => Err(format!("synchronized, but the post-sync command `{command}` failed ({s}); do the next step by hand")),
        Err(e) => Err(format!("synchronized, but the post-sync command `{command}` could not run: {e}")),
    }
}

fn describe_run(resolved: &Resolved, connected: &Connected, caches: &[CacheName]) -> String {
    let (a, o) = (&resolved.active, &resolved.offline);
    let mode = resolved.config.sites[o.as_str()].keycloak_mode();
    let keycloak = match mode {
        Some(KeycloakMode::AlreadyStopped) => format!(
            "Keycloak on {o} is configured as already stopped: site-sync will neither check nor start it; make sure it is stopped"
        ),
        _ => format!("scale Keycloak ({}) to 0 and back", connected.ports.keycloak.describe()),
    };
    format!(
        "This will, on {o} (offline): {keycloak}; take the backup to {a} offline; CLEAR {} cache(s) ({}); bring the backup online. \
         Then {a} (active) pushes its state to {o}. {a}'s data is only read.",
        caches.len(),
        caches.iter().map(CacheName::as_str).collect::<Vec<_>>().join(", ")
    )
}

/// `run` and `resume`.
pub async fn run(format: Format, resolved: &Resolved, change: Change, resume: bool) -> Result<Exit, CliError> {
    resolved.check_journal_place()?;
    let connected = connect(resolved).await?;
    connected.check_access(&resolved.offline).await?;
    let renderer = Renderer::new(format);
    let driver = Driver::new(&connected.plan, &connected.ports, &renderer);
    let mut direction = None;
    let question = if resume {
        let journal = connected.ports.journal.load().await.ok().flatten();
        match journal {
            Some(j) => format!(
                "Resume run {} at step {} ({})?",
                j.run_id,
                j.resume_from.unwrap_or(j.step),
                j.resume_from.unwrap_or(j.step).describe(&resolved.active, &resolved.offline)
            ),
            None => String::new(),
        }
    } else {
        match driver.preflight().await {
            Ok(report) => {
                for warning in &report.warnings {
                    eprintln!("warning: {warning}");
                }
                direction.clone_from(&report.direction);
                format!("{}\nProceed?", describe_run(resolved, &connected, &report.caches))
            }
            Err(outcome) => {
                let exit = exit_for(&outcome);
                finish(format, &outcome, exit, None);
                return Ok(exit);
            }
        }
    };
    if !question.is_empty() {
        confirm(change.yes, &question)?;
    }
    let driver = driver.with_stop(stop_on_signal());
    let outcome = if resume { driver.resume().await } else { driver.run_after_preflight(run_id(), direction).await };
    let mut exit = exit_for(&outcome);
    let mut note = None;
    if let (RunOutcome::Succeeded(_), Some(command)) = (&outcome, &resolved.config.post_sync_command) {
        match post_sync(command).await {
            Ok(text) => note = Some(text),
            Err(text) => {
                note = Some(text);
                exit = Exit::Failed;
            }
        }
    }
    let report = write_report(resolved, &connected).await;
    if let (Format::Json, Some(Ok(files))) = (format, &report) {
        json_line(json!({"type": "report", "markdown": files.markdown, "html": files.html, "svg": files.svg}));
    }
    finish(format, &outcome, exit, note.as_deref());
    match (format, report) {
        (Format::Text, Some(Ok(files))) => {
            println!("Report: {} (with the timeline: {})", files.markdown.display(), files.html.display());
        }
        (_, Some(Err(why))) => eprintln!("warning: {why}"),
        _ => {}
    }
    Ok(exit)
}

/// Writes the run's report next to its journal; `None` when no journal was written (refused
/// before anything started).
async fn write_report(resolved: &Resolved, connected: &Connected) -> Option<Result<ReportFiles, String>> {
    let journal = connected.ports.journal.load().await.ok().flatten()?;
    let files = ReportFiles::beside(&resolved.journal);
    Some(match files.write(&journal) {
        Ok(()) => Ok(files),
        Err(e) => Err(format!(
            "the report could not be written next to the journal ({}): {e}; `site-sync report` renders it from the journal",
            files.markdown.display()
        )),
    })
}

/// The read-only checks alone, their progress as text on stderr whatever `-o` says: stdout
/// carries the calling command's own result.
async fn preflight(connected: &Connected) -> Result<PreflightReport, RunOutcome> {
    let renderer = Renderer::new(Format::Text);
    Driver::new(&connected.plan, &connected.ports, &renderer).preflight().await
}

/// `plan`.
pub async fn plan(format: Format, resolved: &Resolved) -> Result<Exit, CliError> {
    resolved.check_journal_place()?;
    let connected = connect(resolved).await?;
    connected.check_access(&resolved.offline).await?;
    let preflight = preflight(&connected).await;
    let caches = preflight.as_ref().ok().map(|r| r.caches.clone());
    let (a, o) = (&resolved.active, &resolved.offline);
    let view = look(
        Reach { name: a, endpoint: &connected.plan.active.endpoint, client: Ok(&connected.ports.active) },
        Reach { name: o, endpoint: &connected.plan.offline.endpoint, client: Ok(&connected.ports.offline) },
        caches.as_deref().or(resolved.caches.as_deref()),
        Some(&connected.ports.keycloak),
        first_answer_budget(resolved),
    )
    .await;
    let steps: Vec<(Step, String)> = Step::ALL.iter().map(|s| (*s, s.describe(a, o))).collect();
    // A site that stopped answering after the preflight leaves the plan without a verdict.
    let failed_reads = view.failed_reads();
    let exit = if preflight.is_ok() && failed_reads.is_empty() { Exit::Success } else { Exit::Refused };
    if format == Format::Json {
        json_line(json!({
            "type": "plan",
            "active": a, "offline": o,
            "view": view,
            "steps": steps.iter().map(|(s, d)| json!({"number": s.number(), "step": s, "description": d})).collect::<Vec<_>>(),
            "preflight": match &preflight {
                Ok(_) if !failed_reads.is_empty() => json!({"passed": false, "reason": format!("cannot read {}", failed_reads[0])}),
                Ok(report) => json!({
                    "passed": true, "caches": report.caches, "keycloak_line": report.line, "warnings": report.warnings,
                    "direction": report.direction.as_ref().map(|(_, d)| d),
                }),
                Err(outcome) => json!({"passed": false, "reason": outcome.summary()}),
            },
            "exit_code": exit.code(),
        }));
        return Ok(exit);
    }
    println!("Plan: synchronize {o} (offline) from {a} (active). Read-only: nothing was changed.");
    for line in render(&view) {
        println!("{line}");
    }
    println!("Steps a run would take:");
    for (step, description) in &steps {
        println!("  {:>2}. {:<17} {description}", step.number(), step.name());
    }
    println!(
        "Interlocks: a cache is cleared only while its backup to {a} reads offline on every node (re-read right before the clear, \
         which also carries SKIP_XSITE_BACKUP); only {a} pushes; Keycloak starts only after every push read OK."
    );
    match &preflight {
        Ok(_) if !failed_reads.is_empty() => {
            println!("No plan: a site stopped answering while it was read; see the errors");
            for error in &failed_reads {
                eprintln!("site-sync: {error}");
            }
        }
        Ok(report) => {
            let line = report.line.as_deref().map(|l| format!(" ({l})")).unwrap_or_default();
            if let Some((_, direction)) = &report.direction {
                println!("Direction: {}", direction.summary());
            }
            println!("Preflight passed{line}: {} cache(s). Run it with: site-sync run", report.caches.len());
            for warning in &report.warnings {
                println!("warning: {warning}");
            }
        }
        Err(outcome) => println!("A run would be refused: {}", outcome.summary()),
    }
    Ok(exit)
}

/// Where a site is, as configured (for a site whose connection could not be made).
pub fn configured_endpoint(resolved: &Resolved, name: &SiteName) -> String {
    let site = &resolved.config.sites[name.as_str()];
    match (&site.infinispan.url, &site.kubernetes) {
        (Some(url), _) => url.clone(),
        (None, Some(k)) => format!("(through Kubernetes, context {})", k.context.as_deref().unwrap_or("current")),
        (None, None) => "(no endpoint)".to_owned(),
    }
}

/// `status`: whatever can be read, shown; exit 3 when anything could not be (no verdict then).
pub async fn status(format: Format, resolved: &Resolved) -> Result<Exit, CliError> {
    let (active, offline) = connect_each(resolved).await;
    // A configuration error is not a state of the sites: it is fixed first.
    let usage = |c: &Result<Site, CliError>| match c {
        Err(e) if e.exit == Exit::Usage => Err(e.clone()),
        _ => Ok(()),
    };
    both(usage(&active), usage(&offline))?;
    let keycloak = match &offline {
        Ok(site) => Some(keycloak(resolved, site)?),
        Err(_) => None,
    };
    let (a, o) = (&resolved.active, &resolved.offline);
    let endpoint = |name, connection: &Result<Site, CliError>| {
        connection.as_ref().map_or_else(|_| configured_endpoint(resolved, name), |s| s.endpoint.clone())
    };
    let (active_endpoint, offline_endpoint) = (endpoint(a, &active), endpoint(o, &offline));
    fn reach<'a>(name: &'a SiteName, endpoint: &'a str, connection: &'a Result<Site, CliError>) -> Reach<'a> {
        Reach { name, endpoint, client: connection.as_ref().map(|s| &s.client).map_err(|e| e.message.as_str()) }
    }
    let mut view = look(
        reach(a, &active_endpoint, &active),
        reach(o, &offline_endpoint, &offline),
        resolved.caches.as_deref(),
        keycloak.as_ref(),
        first_answer_budget(resolved),
    )
    .await;
    for site in [a, o] {
        if let Some(probe) = health_probe(resolved, site)? {
            view.keycloak_health.push((site.clone(), probe.check().await));
        }
    }
    let mut diagnosis = diagnose(&view);
    // Which site takes its users' writes, watched as the direction guard does (site names as
    // configured, the active one first).
    if !matches!(diagnosis, Diagnosis::Unreachable { .. })
        && let (Ok(first), Ok(second)) = (&active, &offline)
    {
        match activity(&view, (&first.client, &second.client), resolved.settings.direction_window).await {
            Ok(record) => view.activity = Some(record),
            Err(error) => {
                view.errors.push(error.clone());
                diagnosis = diagnose(&view);
            }
        }
    }
    let recommendation = recommend(&view, &diagnosis);
    let unread = matches!(diagnosis, Diagnosis::Unreachable { .. }) || matches!(view.keycloak, Some(KeycloakView::Error { .. }));
    let exit = if unread { Exit::Refused } else { Exit::Success };
    if format == Format::Json {
        json_line(json!({
            "type": "status", "view": view, "diagnosis": diagnosis, "summary": diagnosis.text(a, o),
            "recommendation": recommendation, "exit_code": exit.code(),
        }));
    } else {
        for line in render(&view) {
            println!("{line}");
        }
        println!("Diagnosis: {}", diagnosis.text(a, o));
        if let Some(recommendation) = &recommendation {
            println!("Recommendation: {recommendation}");
        }
        // What could not be read, where errors go, for whoever reads only stderr or the exit code.
        for error in view.failed_reads() {
            eprintln!("site-sync: {error}");
        }
    }
    Ok(exit)
}

/// The caches to compare: the configured list, else every cache either site backs up to the
/// other. Both sites must be read whole: a list from the reads that happened to work would let
/// a comparison of nothing pass.
async fn caches_of(resolved: &Resolved, connected: &Connected) -> Result<Vec<CacheName>, CliError> {
    if let Some(list) = &resolved.caches {
        return Ok(list.clone());
    }
    let (a, o) = (&resolved.active, &resolved.offline);
    let refused = |e: String| CliError::new(Exit::Refused, e);
    let (on_active, on_offline) =
        tokio::join!(replicated_caches(a, &connected.ports.active, o), replicated_caches(o, &connected.ports.offline, a));
    let (mut caches, more) = both(on_active.map_err(refused), on_offline.map_err(refused))?;
    caches.extend(more);
    caches.sort();
    caches.dedup();
    if caches.is_empty() {
        return Err(CliError::new(
            Exit::Refused,
            format!(
                "neither {a} nor {o} backs up any cache to the other, so there is nothing to compare; check the caches' cross-site backups, or name the caches with --caches"
            ),
        ));
    }
    Ok(caches)
}

fn site_error(resolved: &Resolved, (side, error): (Side, ispn_xsite::Error)) -> CliError {
    let name = match side {
        Side::Active => &resolved.active,
        Side::Offline => &resolved.offline,
    };
    CliError::new(Exit::Refused, format!("{name}: {error}"))
}

/// `diff`.
pub async fn diff(format: Format, resolved: &Resolved, values: bool, sample: usize) -> Result<Exit, CliError> {
    let connected = connect(resolved).await?;
    let caches = caches_of(resolved, &connected).await?;
    let (active, offline) = (&connected.ports.active, &connected.ports.offline);
    let mut differ = false;
    let mut how: BTreeMap<VerifyLevel, usize> = BTreeMap::new();
    if format == Format::Text {
        println!("Comparing {} (active) with {} (offline), {} cache(s):", resolved.active, resolved.offline, caches.len());
    }
    for cache in &caches {
        let limits = CompareLimits { sample, ..CompareLimits::default() };
        let compared = if values {
            compare_values(active, offline, cache, limits).await
        } else {
            compare(active, offline, cache, CompareMode::Keys, limits).await.map(|comparison| Compared {
                level: VerifyLevel::Keys,
                comparison,
                unreadable: None,
            })
        };
        let Compared { level, comparison, unreadable } = compared.map_err(|e| site_error(resolved, e))?;
        *how.entry(level).or_default() += 1;
        differ |= !comparison.is_equal();
        if format == Format::Json {
            json_line(json!({
                "type": "diff", "cache": cache, "compared": level, "comparison": comparison, "values_unreadable": unreadable,
            }));
            continue;
        }
        let values_part = match (values, level) {
            (false, _) => String::new(),
            (true, VerifyLevel::KeysOnly) => ", values not compared".to_owned(),
            (true, VerifyLevel::StoredEntries) => {
                format!(", {} with different values (read key by key as stored)", comparison.different_values)
            }
            (true, _) => format!(", {} with different values", comparison.different_values),
        };
        println!(
            "  {:<24} {} keys on {}, {} on {}: {} only on {}, {} only on {}{values_part}",
            cache.as_str(),
            comparison.active,
            resolved.active,
            comparison.offline,
            resolved.offline,
            comparison.only_active,
            resolved.active,
            comparison.only_offline,
            resolved.offline,
        );
        if let Some(reason) = &unreadable {
            println!("      its values could not be read: {reason}");
        }
        for (label, keys) in [
            (format!("only on {}", resolved.active), &comparison.sample_only_active),
            (format!("only on {}", resolved.offline), &comparison.sample_only_offline),
            ("different values".to_owned(), &comparison.sample_different),
        ] {
            if !keys.is_empty() {
                println!("      {label}: {}", keys.iter().map(|k| format!("{k:?}")).collect::<Vec<_>>().join(", "));
            }
        }
    }
    let exit = if differ { Exit::Differ } else { Exit::Success };
    let compared = if values { "keys and values" } else { "keys" };
    let (a, o) = (&resolved.active, &resolved.offline);
    if format == Format::Json {
        json_line(json!({
            "type": "diff_summary", "equal": !differ, "compared": compared,
            "compared_as": how.iter().map(|(l, n)| (l.as_str().to_owned(), *n)).collect::<BTreeMap<_, _>>(),
            "caches": {a.as_str(): caches.len(), o.as_str(): caches.len()}, "exit_code": exit.code(),
        }));
    } else {
        let verdict = if differ { "the sites differ" } else { "the sites hold the same" };
        println!(
            "Compared {} cache(s) on {a} and {} on {o} ({}): {verdict}.",
            caches.len(),
            caches.len(),
            ways_compared(&how, compared)
        );
    }
    Ok(exit)
}

/// How the caches were compared, in words: one way for all, or how many each way.
fn ways_compared(how: &BTreeMap<VerifyLevel, usize>, asked: &str) -> String {
    match how.len() {
        0 => asked.to_owned(),
        1 => how.keys().next().map_or(asked, |l| l.compared()).to_owned(),
        _ => how.iter().map(|(l, n)| format!("{n} by {}", l.compared())).collect::<Vec<_>>().join(", "),
    }
}

/// `verify`.
pub async fn verify(
    format: Format,
    resolved: &Resolved,
    level: Option<VerifyLevel>,
    require_values: bool,
) -> Result<Exit, CliError> {
    let connected = connect(resolved).await?;
    let caches = caches_of(resolved, &connected).await?;
    let (active, offline) = (&connected.ports.active, &connected.ports.offline);
    let settings = &connected.plan.settings;
    let level = level.unwrap_or(settings.verify);
    // Caches are compared side by side, as the run's verify step does.
    let checks = futures::stream::iter(&caches)
        .map(|cache| async move {
            let checked = if level.reads_keys() {
                let pause = tokio::time::sleep(settings.poll_interval);
                let check = check_content(active, offline, cache, level, pause).await.map_err(|e| site_error(resolved, e))?;
                if let (true, Some(reason)) = (require_values, &check.unreadable) {
                    // Only the keys could be compared: with --require-values that is no verdict.
                    return Err(CliError::new(
                        Exit::Refused,
                        format!("cache '{cache}': only its keys could be compared, its values could not be read ({reason}); values are required (--require-values or settings.require_values): find why the server cannot serve them"),
                    ));
                }
                (content_verdict(&check, settings.drift_tolerance), Some(check))
            } else {
                let on = |side: Side| move |e| site_error(resolved, (side, e));
                let sizes = Sizes {
                    active_before: active.size(cache).await.map_err(on(Side::Active))?,
                    offline: offline.size(cache).await.map_err(on(Side::Offline))?,
                    active_after: active.size(cache).await.map_err(on(Side::Active))?,
                };
                (sizes_verdict(&sizes, settings.drift_tolerance), None)
            };
            Ok::<_, CliError>((cache, checked))
        })
        .buffered(settings.parallelism)
        .collect::<Vec<_>>()
        .await;
    let mut failed = false;
    // How each cache was compared: a listing's values, stored bytes key by key, or keys only.
    let mut how: BTreeMap<VerifyLevel, usize> = BTreeMap::new();
    for checked in checks {
        let (cache, (verdict, check)) = checked?;
        failed |= matches!(verdict, Verdict::Mismatch { .. });
        *how.entry(check.as_ref().map_or(level, |c| c.level)).or_default() += 1;
        if format == Format::Json {
            json_line(json!({"type": "verified", "cache": cache, "verdict": verdict, "content": check}));
        } else {
            println!("  {:<24} {verdict}", cache.as_str());
        }
    }
    let exit = if failed { Exit::Differ } else { Exit::Success };
    let (a, o) = (&resolved.active, &resolved.offline);
    if format == Format::Json {
        json_line(json!({
            "type": "verify_summary", "passed": !failed, "compared": level,
            "caches": {a.as_str(): caches.len(), o.as_str(): caches.len()},
            "compared_as": how.iter().map(|(l, n)| (l.as_str().to_owned(), *n)).collect::<BTreeMap<_, _>>(),
            "exit_code": exit.code(),
        }));
    } else {
        let counted =
            format!("{} cache(s) on {a} and {} on {o}, {}", caches.len(), caches.len(), ways_compared(&how, level.compared()));
        if failed {
            println!("Verification FAILED ({counted}): the offline site does not match.");
        } else {
            println!("Verification passed ({counted}).");
        }
    }
    Ok(exit)
}

/// `config check`.
pub async fn check(format: Format, resolved: &Resolved) -> Result<Exit, CliError> {
    resolved.check_journal_place()?;
    let mut connected = connect(resolved).await?;
    // The configuration and the sites are checked, not who serves users: that is `plan`'s.
    connected.plan.settings.direction_guard = false;
    connected.check_access(&resolved.offline).await?;
    let outcome = preflight(&connected).await;
    let exit = if outcome.is_ok() { Exit::Success } else { Exit::Refused };
    if format == Format::Json {
        json_line(json!({
            "type": "config_check",
            "active": {"name": resolved.active, "endpoint": connected.plan.active.endpoint},
            "offline": {"name": resolved.offline, "endpoint": connected.plan.offline.endpoint},
            "keycloak": connected.ports.keycloak.describe(),
            "journal": resolved.journal,
            "passed": outcome.is_ok(),
            "message": match &outcome { Ok(r) => format!("{} cache(s)", r.caches.len()), Err(o) => o.summary() },
            "exit_code": exit.code(),
        }));
        return Ok(exit);
    }
    match outcome {
        Ok(report) => {
            println!("configuration OK:");
            println!("  active   {} at {}", resolved.active, connected.plan.active.endpoint);
            println!("  offline  {} at {}", resolved.offline, connected.plan.offline.endpoint);
            println!("  Keycloak {}", connected.ports.keycloak.describe());
            println!("  caches   {}", report.caches.iter().map(CacheName::as_str).collect::<Vec<_>>().join(", "));
            println!("  journal  {}", resolved.journal.display());
            for warning in report.warnings {
                println!("warning: {warning}");
            }
        }
        Err(outcome) => eprintln!("site-sync: {}", outcome.summary()),
    }
    Ok(exit)
}

/// Loads a configuration file for the demo (same path as a user's file).
pub fn load_path(path: &Path, overrides: &Overrides) -> Result<Resolved, CliError> {
    Config::load(path)?.resolve(path, overrides)
}
