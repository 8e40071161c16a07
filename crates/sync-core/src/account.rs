//! A run's account for the incident, from its journal alone: what was done and when, how long
//! the stale site's Keycloak was down, what was verified. Every number is the journal's; nothing
//! is read again. `sync-cli` renders it (text, Markdown, HTML with the timeline, JSON).

use ispn_xsite::CacheName;
use serde::Serialize;

use crate::journal::{Finished, Happening, Journal, Moment};
use crate::plan::SiteRef;
use crate::vocabulary::{DirectionRecord, NEXT_STEP, Side, Step, Verdict};

/// A stretch of time (ms since the epoch); `to_ms` is `None` while it had not ended when the
/// journal was last written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Span {
    /// Start.
    pub from_ms: u64,
    /// End, when seen.
    pub to_ms: Option<u64>,
}

impl Span {
    /// Its end, or `end_ms` when it had not ended.
    pub fn end_or(&self, end_ms: u64) -> u64 {
        self.to_ms.unwrap_or(end_ms).max(self.from_ms)
    }
}

/// One step of one attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepSpan {
    /// The step.
    pub step: Step,
    /// When it ran.
    pub span: Span,
    /// `done`, or how the attempt left it (`failed`, `refused`, `interrupted`, `cut off` when
    /// the process ended without saying, `running`).
    pub outcome: &'static str,
}

/// One phase of one cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Phase {
    /// `take-offline`, `clear`, `bring-online`, `push` or `verify`.
    pub phase: &'static str,
    /// When.
    pub span: Span,
}

/// One cache's account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CacheAccount {
    /// The cache.
    pub cache: CacheName,
    /// Its phases, in order.
    pub phases: Vec<Phase>,
    /// Whether the run cleared it on the offline site.
    pub cleared: bool,
    /// Pushes started.
    pub push_attempts: u32,
    /// Times it was pushed again because verification found a difference.
    pub verify_repushes: u32,
    /// Retries of its actions and reads.
    pub retries: u32,
    /// The last push error.
    pub last_error: Option<String>,
    /// The verification verdict.
    pub verdict: Option<Verdict>,
}

/// Something the report lists with its time: a wait, a retry, an interlock that held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// When.
    pub at_ms: u64,
    /// The step.
    pub step: Option<Step>,
    /// The cache, when about one.
    pub cache: Option<CacheName>,
    /// What happened.
    pub text: String,
    /// For a wait: its deadline.
    pub until_ms: Option<u64>,
}

/// A run's account.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Account {
    /// The run.
    pub run_id: String,
    /// The active site.
    pub active: SiteRef,
    /// The offline site.
    pub offline: SiteRef,
    /// When it started and when its journal was last written.
    pub span: Span,
    /// Each site's server as last read: version and nodes (active first).
    pub servers: Vec<(Side, String, usize)>,
    /// How its last attempt ended (`None`: still running, or cut off).
    pub finished: Option<Finished>,
    /// Attempts: the run and each resume.
    pub attempts: u32,
    /// The direction guard's evidence and verdict.
    pub direction: Option<DirectionRecord>,
    /// Each step of each attempt.
    pub steps: Vec<StepSpan>,
    /// Per cache.
    pub caches: Vec<CacheAccount>,
    /// Every wait: what, why, until when.
    pub waits: Vec<Entry>,
    /// When the cross-site link was lost.
    pub link_outages: Vec<Span>,
    /// From the scale-down of the offline site's Keycloak to its restored instances ready.
    pub keycloak_down: Option<Span>,
    /// Keycloak's instance count before the run.
    pub keycloak_instances: Option<u32>,
    /// What the offline site's Keycloak answered at the end: `/lb-check`, `/health/ready`.
    pub keycloak_serving: Option<(Option<u16>, Option<u16>)>,
    /// Retries.
    pub retries: Vec<Entry>,
    /// Interlocks that held an action back.
    pub refused_interlocks: Vec<Entry>,
    /// Warnings.
    pub warnings: Vec<String>,
    /// What the operator does next.
    pub next_step: String,
    /// Moments the journal left out past its limit.
    pub left_out: u64,
}

/// The phase a cache's action begins, and the last step that phase spans.
fn phase_of(action: &str) -> Option<(&'static str, Step)> {
    match action {
        "take-offline" => Some(("take-offline", Step::TakeOffline)),
        "clear" => Some(("clear", Step::ClearCaches)),
        "bring-online" => Some(("bring-online", Step::BringOnline)),
        "start-push-state" | "cancel-push-state" | "cancel-receive-state" | "clear-push-state-status" => {
            Some(("push", Step::ClearPushStatus))
        }
        _ => None,
    }
}

fn outcome_word(finished: &Finished) -> &'static str {
    match finished {
        Finished::Succeeded => "done",
        Finished::Refused { .. } => "refused",
        Finished::Failed { .. } => "failed",
        Finished::Interrupted => "interrupted",
    }
}

/// The step each moment happened in, from the steps' starts.
fn steps_of(history: &[Moment]) -> Vec<StepSpan> {
    let mut steps: Vec<StepSpan> = Vec::new();
    let mut last_at = None;
    for moment in history {
        let at = moment.at_ms;
        let open = steps.last_mut().filter(|s| s.span.to_ms.is_none());
        match &moment.what {
            Happening::StepStarted { step } => {
                if let Some(open) = open {
                    open.span.to_ms = Some(at);
                    open.outcome = "done";
                }
                steps.push(StepSpan { step: *step, span: Span { from_ms: at, to_ms: None }, outcome: "running" });
            }
            Happening::StepFinished { step } => {
                if let Some(open) = open.filter(|s| s.step == *step) {
                    open.span.to_ms = Some(at);
                    open.outcome = "done";
                }
            }
            Happening::RunFinished { finished } => {
                if let Some(open) = open {
                    open.span.to_ms = Some(at);
                    open.outcome = outcome_word(finished);
                }
            }
            // A new attempt while a step was open: the last one ended without a word.
            Happening::RunStarted { .. } => {
                if let Some(open) = open {
                    open.span.to_ms = last_at;
                    open.outcome = "cut off";
                }
            }
            _ => {}
        }
        last_at = Some(at);
    }
    steps
}

impl Account {
    /// The account of the run `journal` records.
    pub fn of(journal: &Journal) -> Self {
        let history = &journal.history;
        let end_ms = history.last().map_or(journal.updated_at_ms, |m| m.at_ms.max(journal.updated_at_ms));
        let steps = steps_of(history);
        let mut caches: Vec<CacheAccount> = journal
            .caches
            .iter()
            .map(|cache| {
                let progress = journal.cache(cache);
                CacheAccount {
                    cache: cache.clone(),
                    phases: Vec::new(),
                    cleared: progress.cleared,
                    push_attempts: progress.push_attempts,
                    verify_repushes: progress.verify_repushes,
                    retries: 0,
                    last_error: progress.last_error,
                    verdict: progress.verdict,
                }
            })
            .collect();
        // Pushes started across every attempt (a resume's journal counts its own).
        for account in &mut caches {
            let started = history
                .iter()
                .filter(|m| matches!(&m.what, Happening::Action { action, cache: Some(c), .. } if action == "start-push-state" && *c == account.cache))
                .count();
            account.push_attempts = account.push_attempts.max(u32::try_from(started).unwrap_or(u32::MAX));
        }
        let mut waits = Vec::new();
        let mut retries = Vec::new();
        let mut refused_interlocks = Vec::new();
        let mut link_outages: Vec<Span> = Vec::new();
        let mut keycloak_down: Option<Span> = None;
        let mut scale_down_at = None;
        let mut verify_started = None;
        let mut attempts = 0;
        for moment in history {
            let at = moment.at_ms;
            match &moment.what {
                Happening::RunStarted { .. } => attempts += 1,
                Happening::StepStarted { step: Step::Verify } => verify_started = Some(at),
                Happening::Action { step, action, cache, .. } => {
                    if action == "scale-down" {
                        scale_down_at.get_or_insert(at);
                    }
                    let (Some(cache), Some((phase, last_step))) = (cache, phase_of(action)) else { continue };
                    let Some(account) = caches.iter_mut().find(|c| &c.cache == cache) else { continue };
                    // Another action of the phase the cache is in (a push started again) extends it.
                    if account.phases.last().is_some_and(|p| p.phase == phase && p.span.end_or(end_ms) >= at) {
                        continue;
                    }
                    // A phase lasts until the last step it spans is done, or the step it began in.
                    let ends = |wanted: Step| steps.iter().find(|s| s.step == wanted && s.span.end_or(end_ms) >= at);
                    let to_ms = ends(last_step).or_else(|| ends(*step)).and_then(|s| s.span.to_ms);
                    account.phases.push(Phase { phase, span: Span { from_ms: at, to_ms } });
                }
                Happening::Verified { cache, verdict } => {
                    let Some(account) = caches.iter_mut().find(|c| &c.cache == cache) else { continue };
                    let from = account.phases.last().map_or(at, |p| p.span.end_or(at)).max(verify_started.unwrap_or(at)).min(at);
                    account.phases.push(Phase { phase: "verify", span: Span { from_ms: from, to_ms: Some(at) } });
                    account.verdict.get_or_insert_with(|| verdict.clone());
                }
                Happening::Waiting { step, what, why, until_ms } => waits.push(Entry {
                    at_ms: at,
                    step: Some(*step),
                    cache: None,
                    text: format!("{what}: {why}"),
                    until_ms: Some(*until_ms),
                }),
                Happening::Retry { step, cache, attempt, reason } => {
                    if let Some(account) = cache.as_ref().and_then(|c| caches.iter_mut().find(|a| &a.cache == c)) {
                        account.retries += 1;
                    }
                    retries.push(Entry {
                        at_ms: at,
                        step: Some(*step),
                        cache: cache.clone(),
                        text: format!("attempt {attempt}: {reason}"),
                        until_ms: None,
                    });
                }
                Happening::InterlockRefused { step, cache, reason } => {
                    refused_interlocks.push(Entry {
                        at_ms: at,
                        step: Some(*step),
                        cache: cache.clone(),
                        text: reason.clone(),
                        until_ms: None,
                    });
                }
                Happening::LinkDown { .. } if link_outages.last().is_none_or(|s| s.to_ms.is_some()) => {
                    link_outages.push(Span { from_ms: at, to_ms: None });
                }
                Happening::LinkUp { since_ms } => match link_outages.last_mut().filter(|s| s.to_ms.is_none()) {
                    Some(open) => {
                        open.from_ms = open.from_ms.min(*since_ms);
                        open.to_ms = Some(at);
                    }
                    None => link_outages.push(Span { from_ms: *since_ms, to_ms: Some(at) }),
                },
                Happening::KeycloakStopped { .. } => {
                    keycloak_down.get_or_insert(Span { from_ms: scale_down_at.unwrap_or(at), to_ms: None });
                }
                Happening::KeycloakReady { .. } => {
                    if let Some(down) = keycloak_down.as_mut().filter(|d| d.to_ms.is_none()) {
                        down.to_ms = Some(at);
                    }
                }
                _ => {}
            }
        }
        let next_step = match &journal.finished {
            Some(Finished::Succeeded) => NEXT_STEP.to_owned(),
            Some(Finished::Refused { .. }) if !journal.has_progress() && keycloak_down.is_none() => {
                "nothing was changed: fix what the refusal names, then run again".to_owned()
            }
            Some(Finished::Refused { .. } | Finished::Failed { .. } | Finished::Interrupted) => {
                "fix what stopped it, then `site-sync resume` continues from the first step not proven done".to_owned()
            }
            None => "the run is still going, or its process ended without a word: `site-sync resume` continues it".to_owned(),
        };
        let mut servers: Vec<(Side, String, usize)> = Vec::new();
        for moment in history {
            if let Happening::SiteSeen { side, version, nodes } = &moment.what {
                servers.retain(|(s, ..)| s != side);
                servers.push((*side, version.clone(), *nodes));
            }
        }
        servers.sort_by_key(|(side, ..)| *side != Side::Active);
        Self {
            run_id: journal.run_id.clone(),
            servers,
            active: journal.active.clone(),
            offline: journal.offline.clone(),
            span: Span { from_ms: journal.started_at_ms, to_ms: Some(end_ms) },
            finished: journal.finished.clone(),
            attempts: attempts.max(1),
            direction: journal.direction.clone(),
            steps,
            caches,
            waits,
            link_outages,
            keycloak_down,
            keycloak_instances: journal.keycloak_original_instances,
            keycloak_serving: history.iter().rev().find_map(|m| match &m.what {
                Happening::KeycloakServing { lb_check, ready } => Some((*lb_check, *ready)),
                _ => None,
            }),
            retries,
            refused_interlocks,
            warnings: journal.warnings.clone(),
            next_step,
            left_out: journal.history_left_out,
        }
    }

    /// When the last thing the journal knows of happened.
    pub fn end_ms(&self) -> u64 {
        self.span.end_or(self.span.from_ms)
    }
}
