//! Everything the tool shows: human text (step list, progress bars on stderr, summary on stdout)
//! or JSON Lines events on stdout. This is the only module that knows JSON output shapes; their
//! `schema_version` changes only when a field's meaning does.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Value, json};
use sync_core::ports::KeycloakHealth;
use sync_core::vocabulary::{Step, clock_time, human_duration};
use sync_core::{Event, RunOutcome};

use crate::exit::Exit;

/// The JSON output's schema version.
pub const SCHEMA_VERSION: u32 = 1;

/// How to show results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// For people: text on stderr while working, a summary on stdout.
    Text,
    /// For automation: JSON Lines on stdout.
    Json,
}

/// Writes one JSON line to stdout.
pub fn json_line(mut value: Value) {
    if let Value::Object(map) = &mut value {
        map.insert("schema_version".to_owned(), json!(SCHEMA_VERSION));
    }
    println!("{value}");
}

fn ms(duration: Duration) -> u64 {
    duration.as_millis() as u64
}

/// How often the text output repeats a wait that goes on (the JSON stream has every one).
const REPEAT_WAIT_EVERY_MS: u64 = 30_000;

/// An outcome as JSON (the `run_finished` event's body).
pub fn outcome_json(outcome: &RunOutcome, exit: Exit) -> Value {
    let (kind, report) = match outcome {
        RunOutcome::Succeeded(report) => ("succeeded", serde_json::to_value(report).unwrap_or(Value::Null)),
        RunOutcome::Refused(r) => ("refused", serde_json::to_value(r).unwrap_or(Value::Null)),
        RunOutcome::Failed(f) => ("failed", serde_json::to_value(f).unwrap_or(Value::Null)),
        RunOutcome::Interrupted => ("interrupted", Value::Null),
    };
    json!({"type": "run_finished", "outcome": kind, "message": outcome.summary(), "exit_code": exit.code(), "detail": report})
}

/// An event as JSON.
pub fn event_json(event: &Event) -> Value {
    match event {
        Event::RunStarted { run_id, active, offline, resumed, from } => {
            json!({"type": "run_started", "run_id": run_id, "active": active, "offline": offline, "resumed": resumed, "from": from})
        }
        Event::StepStarted { step, description } => {
            json!({"type": "step_started", "step": step, "number": step.number(), "of": Step::ALL.len(), "description": description})
        }
        Event::StepFinished { step, elapsed } => json!({"type": "step_finished", "step": step, "elapsed_ms": ms(*elapsed)}),
        Event::CachesResolved { caches, line } => json!({"type": "caches", "caches": caches, "keycloak_line": line}),
        Event::Action { step, action, side, cache } => {
            json!({"type": "action", "step": step, "action": action, "site": side, "cache": cache})
        }
        Event::PushProgress { cache, transferred, total } => {
            json!({"type": "push_progress", "cache": cache, "transferred": transferred, "total": total})
        }
        Event::Retry { step, cache, attempt, reason } => {
            json!({"type": "retry", "step": step, "cache": cache, "attempt": attempt, "reason": reason})
        }
        Event::InterlockRefused { step, cache, reason } => {
            json!({"type": "interlock_refused", "step": step, "cache": cache, "reason": reason})
        }
        Event::Verified { cache, verdict } => json!({"type": "verified", "cache": cache, "verdict": verdict}),
        Event::Waiting { step, what, why, until_ms } => {
            json!({"type": "waiting", "step": step, "what": what, "why": why, "until_ms": until_ms})
        }
        Event::LinkDown { loss, until_ms } => json!({
            "type": "link_down",
            "message": loss.to_string(),
            "since_ms": loss.since_ms,
            "until_ms": until_ms,
            "views": loss.views.iter().map(|v| json!({
                "site": v.site, "other": v.other, "sites_view": v.sites_view, "sees_other": v.sees_other,
            })).collect::<Vec<_>>(),
        }),
        Event::LinkUp { since_ms, at_ms } => {
            json!({"type": "link_up", "since_ms": since_ms, "at_ms": at_ms, "down_ms": at_ms.saturating_sub(*since_ms)})
        }
        Event::Direction(record) => json!({
            "type": "direction",
            "verdict": record.verdict,
            "active": record.active,
            "offline": record.offline,
            "offline_lb_check": record.offline_lb_check,
            "window_ms": record.window_ms,
            "overridden": record.overridden,
            "summary": record.summary(),
        }),
        Event::Warning { message } => json!({"type": "warning", "message": message}),
        Event::Keycloak { message } => json!({"type": "keycloak", "message": message}),
        Event::RunFinished { outcome } => json!({"type": "run_outcome", "message": outcome.summary()}),
    }
}

struct State {
    multi: Option<MultiProgress>,
    step_bar: Option<ProgressBar>,
    step_head: String,
    bars: BTreeMap<String, ProgressBar>,
    /// The wait last shown (what, when it was shown, in ms).
    shown_wait: Option<(String, u64)>,
    /// The lost link, while it is lost.
    link: Option<sync_core::vocabulary::LinkLoss>,
}

/// Renders events as they come.
pub struct Renderer {
    format: Format,
    state: Mutex<State>,
}

impl std::fmt::Debug for Renderer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Renderer").field("format", &self.format).finish_non_exhaustive()
    }
}

impl Renderer {
    /// A renderer; progress bars only when stderr is a terminal.
    pub fn new(format: Format) -> Self {
        let multi = (format == Format::Text && std::io::stderr().is_terminal())
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        let state =
            State { multi, step_bar: None, step_head: String::new(), bars: BTreeMap::new(), shown_wait: None, link: None };
        Self { format, state: Mutex::new(state) }
    }

    fn line(&self, state: &State, text: String) {
        match &state.multi {
            Some(multi) => {
                let _ = multi.println(text);
            }
            None => eprintln!("{text}"),
        }
    }

    fn text(&self, event: &Event) {
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match event {
            Event::RunStarted { run_id, active, offline, resumed, from } => {
                let verb = if *resumed { format!("resuming at {from}") } else { "synchronizing".to_owned() };
                self.line(&state, format!("site-sync: {verb}: {offline} from {active} (run {run_id})"));
            }
            Event::StepStarted { step, description } => {
                let head = format!("{:>2}/{} {:<17} {description}", step.number(), Step::ALL.len(), step.name());
                match &state.multi {
                    Some(multi) => {
                        let bar = multi.add(ProgressBar::new_spinner());
                        bar.set_style(
                            ProgressStyle::with_template("  {spinner} {msg} {elapsed}")
                                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                        );
                        bar.set_message(head.clone());
                        bar.enable_steady_tick(Duration::from_millis(120));
                        state.step_bar = Some(bar);
                    }
                    None => eprintln!("  … {head}"),
                }
                state.step_head = head;
                state.shown_wait = None;
            }
            Event::StepFinished { step, elapsed } => {
                if let Some(bar) = state.step_bar.take() {
                    bar.finish_and_clear();
                }
                for (_, bar) in std::mem::take(&mut state.bars) {
                    bar.finish_and_clear();
                }
                self.line(
                    &state,
                    format!(
                        "  ✓ {:>2}/{} {:<17} done in {}",
                        step.number(),
                        Step::ALL.len(),
                        step.name(),
                        human_duration(*elapsed)
                    ),
                );
            }
            Event::CachesResolved { caches, line } => {
                let names: Vec<&str> = caches.iter().map(|c| c.as_str()).collect();
                let line = line.as_deref().map(|l| format!(" ({l})")).unwrap_or_default();
                self.line(&state, format!("      caches{line}: {}", names.join(", ")));
            }
            Event::Action { action, side, cache, .. } => {
                let cache = cache.as_ref().map(|c| format!(" {c}")).unwrap_or_default();
                self.line(&state, format!("      · {action}{cache} on the {side} site"));
            }
            Event::PushProgress { cache, transferred, total } => {
                if let Some(multi) = state.multi.clone() {
                    let key = cache.to_string();
                    let bar = state.bars.entry(key).or_insert_with(|| {
                        let bar = multi.add(ProgressBar::new(*total));
                        bar.set_style(
                            ProgressStyle::with_template("      {prefix:<24} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
                                .unwrap_or_else(|_| ProgressStyle::default_bar())
                                .progress_chars("=> "),
                        );
                        bar.set_prefix(cache.to_string());
                        bar
                    });
                    bar.set_length((*total).max(*transferred));
                    bar.set_position(*transferred);
                }
            }
            Event::Retry { cache, attempt, reason, .. } => {
                let cache = cache.as_ref().map(|c| format!("{c}: ")).unwrap_or_default();
                self.line(&state, format!("      ↻ {cache}attempt {attempt}: {reason}"));
            }
            Event::InterlockRefused { cache, reason, .. } => {
                let cache = cache.as_ref().map(|c| format!("{c}: ")).unwrap_or_default();
                self.line(&state, format!("      ✋ {cache}{reason}"));
            }
            Event::Verified { cache, verdict } => self.line(&state, format!("      = {cache}: {verdict}")),
            Event::Waiting { what, why, until_ms, .. } => self.waiting(&mut state, what, why, *until_ms),
            Event::LinkDown { loss, until_ms } => {
                let text = format!(
                    "      ⚠ {loss} since {}; waiting up to {} for it (until {}); Ctrl-C stops safely, `site-sync resume` continues",
                    clock_time(loss.since_ms),
                    human_duration(Duration::from_millis(until_ms.saturating_sub(loss.since_ms))),
                    clock_time(*until_ms)
                );
                self.line(&state, text);
                state.shown_wait = None;
                state.link = Some(loss.clone());
            }
            Event::LinkUp { since_ms, at_ms } => {
                let down = human_duration(Duration::from_millis(at_ms.saturating_sub(*since_ms)));
                self.line(
                    &state,
                    format!("      ✓ the cross-site link is back after {down} (lost at {})", clock_time(*since_ms)),
                );
                state.link = None;
                state.shown_wait = None;
            }
            Event::Direction(record) => self.line(&state, format!("      ⇄ direction: {}", record.summary())),
            Event::Warning { message } => self.line(&state, format!("      ! {message}")),
            Event::Keycloak { message } => self.line(&state, format!("      · Keycloak: {message}")),
            Event::RunFinished { .. } => {
                if let Some(bar) = state.step_bar.take() {
                    bar.finish_and_clear();
                }
            }
        }
    }
}

impl Renderer {
    /// A wait: on a terminal, the step's spinner says it; otherwise a line when it begins, and
    /// again every [`REPEAT_WAIT_EVERY_MS`] while it lasts. A wait for the lost link repeats how
    /// long it has been lost.
    fn waiting(&self, state: &mut State, what: &str, why: &str, until_ms: u64) {
        let now = now_ms();
        if let Some(bar) = &state.step_bar {
            bar.set_message(format!("{} · waiting for {what} (until {})", state.step_head, clock_time(until_ms)));
        }
        let repeat = state.shown_wait.as_ref().is_some_and(|(last, at)| last == what && now < at + REPEAT_WAIT_EVERY_MS);
        if repeat {
            return;
        }
        let again = state.shown_wait.as_ref().is_some_and(|(last, _)| last == what);
        state.shown_wait = Some((what.to_owned(), now));
        let text = match &state.link {
            Some(loss) if again => format!(
                "      ⚠ still lost: {loss} since {} ({} ago); waiting until {}",
                clock_time(loss.since_ms),
                human_duration(Duration::from_millis(now.saturating_sub(loss.since_ms))),
                clock_time(until_ms)
            ),
            // The link-down line said it all.
            Some(_) => return,
            // The step's spinner shows it.
            None if state.multi.is_some() => return,
            None => format!("      … waiting for {what} until {}: {why}", clock_time(until_ms)),
        };
        self.line(state, text);
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl sync_core::ports::EventSink for Renderer {
    fn emit(&self, event: &Event) {
        match self.format {
            Format::Json => {
                if !matches!(event, Event::RunFinished { .. }) {
                    json_line(event_json(event));
                }
            }
            Format::Text => self.text(event),
        }
    }
}

/// What a site's Keycloak said about itself, in one line: `serving` (or, after a run, whether it
/// can be put back behind the load balancer) and what `/lb-check` and `/health/ready` answered.
pub fn health_line(site: &ispn_xsite::SiteName, health: &KeycloakHealth, after_run: bool) -> String {
    let answers: Vec<String> = [("/lb-check", &health.lb_check), ("/health/ready", &health.ready)]
        .into_iter()
        .filter_map(|(path, probed)| probed.as_ref().map(|p| format!("{path} {p}")))
        .collect();
    let verdict = match (health.serving(), after_run) {
        (Some(true), true) => "ready to be put back behind the load balancer",
        (Some(false), true) => "NOT ready for the load balancer",
        (Some(true), false) => "serving",
        (Some(false), false) => "NOT serving",
        (None, _) => "no health endpoint configured",
    };
    format!("Keycloak on {site}: {verdict} ({})", answers.join(", "))
}

/// Prints how a run ended: the summary (text, stdout) or the final JSON line.
pub fn finish(format: Format, outcome: &RunOutcome, exit: Exit, post_sync: Option<&str>) {
    if format == Format::Json {
        let mut value = outcome_json(outcome, exit);
        if let Some(note) = post_sync {
            value["post_sync"] = json!(note);
        }
        json_line(value);
        return;
    }
    match outcome {
        RunOutcome::Succeeded(report) => {
            println!(
                "synchronized {} caches from {} to {} in {}",
                report.caches.len(),
                report.active,
                report.offline,
                human_duration(report.elapsed)
            );
            for cache in &report.caches {
                let verdict = cache.verdict.as_ref().map_or_else(|| "not verified".to_owned(), ToString::to_string);
                println!("  {:<26} pushes: {}  {verdict}", cache.cache.as_str(), cache.push_attempts);
            }
            match report.keycloak_instances {
                Some(n) => println!("Keycloak on {} restored to {n} instance(s).", report.offline),
                None => println!("Keycloak on {} was not managed by site-sync.", report.offline),
            }
            if let Some(health) = &report.keycloak_health {
                println!("{}", health_line(&report.offline, health, true));
            }
            if let Some(direction) = &report.direction {
                println!("Direction: {}", direction.summary());
            }
            for warning in &report.warnings {
                println!("warning: {warning}");
            }
            match post_sync {
                Some(note) => println!("{note}"),
                None => println!("Next: {}", report.next_step),
            }
        }
        other => eprintln!("site-sync: {}", other.summary()),
    }
}
