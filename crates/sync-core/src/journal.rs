//! The steps of the procedure and the journal that records a run's progress through them.
//!
//! The journal is written before and after every action (the driver saves it through a
//! [`crate::ports::JournalStore`], atomically). It holds what cannot be re-observed later (the
//! original Keycloak instance count, which caches were cleared in this run, how many pushes were
//! tried), so that `resume` can continue from the first step not proven done.

use std::collections::BTreeMap;

use ispn_xsite::CacheName;
use serde::{Deserialize, Serialize};

use crate::decision::Note;
use crate::plan::{Plan, SiteRef};
use crate::port_types::JournalError;
use crate::vocabulary::{Action, DirectionRecord, PushPhase, Side, Step, Verdict, WriteSample};

/// One cache's progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheProgress {
    /// Take-offline calls issued in this run.
    pub take_offline_calls: u32,
    /// When the last one was issued (ms since the epoch).
    #[serde(default)]
    pub last_take_offline_ms: Option<u64>,
    /// Whether this run cleared the cache on the offline site.
    pub cleared: bool,
    /// Pushes started in this run.
    pub push_attempts: u32,
    /// Where the push stands.
    pub push: PushPhase,
    /// When the current push was started (ms since the epoch).
    pub push_started_at_ms: Option<u64>,
    /// The last start-push-state call failed with a server error: the status may be stuck.
    pub push_start_failed: bool,
    /// The last push error text, for the report.
    pub last_error: Option<String>,
    /// Times the cache was pushed again because verification found a mismatch.
    pub verify_repushes: u32,
    /// The verification verdict.
    pub verdict: Option<Verdict>,
    /// The offline site's entry count last seen moving while this cache's push read SENDING.
    #[serde(default)]
    pub receiver_entries: Option<u64>,
    /// When it was seen moving (the push's start counts): a push whose receiver has not moved
    /// for `push_stall_timeout` is stuck.
    #[serde(default)]
    pub receiver_moved_at_ms: Option<u64>,
}

impl Default for CacheProgress {
    fn default() -> Self {
        Self {
            take_offline_calls: 0,
            last_take_offline_ms: None,
            cleared: false,
            push_attempts: 0,
            push: PushPhase::NotStarted,
            push_started_at_ms: None,
            push_start_failed: false,
            last_error: None,
            verify_repushes: 0,
            verdict: None,
            receiver_entries: None,
            receiver_moved_at_ms: None,
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum Finished {
    /// Every step done.
    Succeeded,
    /// Stopped before acting, or by an interlock.
    Refused {
        /// The reason, as shown to the user.
        reason: String,
    },
    /// Stopped by a failure; `resume` continues.
    Failed {
        /// The reason, as shown to the user.
        reason: String,
    },
    /// Stopped on request (Ctrl-C, SIGTERM) at a safe point; `resume` continues.
    Interrupted,
}

/// Moments a journal keeps at most: a run writes a few dozen; a long outage's retries and waits
/// stop being recorded past this, and the report says how many were left out.
pub const HISTORY_LIMIT: usize = 2000;

/// Something that happened during a run, and when (ms since the epoch): the report's timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Moment {
    /// When.
    pub at_ms: u64,
    /// What.
    #[serde(flatten)]
    pub what: Happening,
}

/// What a [`Moment`] records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Happening {
    /// A run or a resume began here.
    RunStarted {
        /// Whether it continued a journal.
        resumed: bool,
        /// The step it started from.
        from: Step,
    },
    /// A site's server, as read (recorded again only when it changes).
    SiteSeen {
        /// Which site.
        side: Side,
        /// Its version (`15.0.21.Final`).
        version: String,
        /// Nodes in its cluster.
        nodes: usize,
    },
    /// A step began.
    StepStarted {
        /// The step.
        step: Step,
    },
    /// A step was proven done.
    StepFinished {
        /// The step.
        step: Step,
    },
    /// An action was sent.
    Action {
        /// The step.
        step: Step,
        /// Its verb (`take-offline`, `clear`, ...).
        action: String,
        /// The site it was sent to.
        side: Side,
        /// The cache, for per-cache actions.
        cache: Option<CacheName>,
    },
    /// Something was tried again.
    Retry {
        /// The step.
        step: Step,
        /// The cache, if per cache.
        cache: Option<CacheName>,
        /// Attempt number (the first retry is 2).
        attempt: u32,
        /// Why.
        reason: String,
    },
    /// An interlock held an action back.
    InterlockRefused {
        /// The step.
        step: Step,
        /// The cache.
        cache: Option<CacheName>,
        /// Why.
        reason: String,
    },
    /// A cache's verification verdict.
    Verified {
        /// The cache.
        cache: CacheName,
        /// The verdict.
        verdict: Verdict,
    },
    /// A wait began (one moment per wait, however often it was announced).
    Waiting {
        /// The step.
        step: Step,
        /// What was awaited.
        what: String,
        /// Why.
        why: String,
        /// Its deadline (ms since the epoch).
        until_ms: u64,
    },
    /// The cross-site link was seen lost.
    LinkDown {
        /// How it was seen.
        loss: String,
    },
    /// The lost link was seen back.
    LinkUp {
        /// Since when it had been lost (ms since the epoch).
        since_ms: u64,
    },
    /// The offline site's Keycloak was scaled to 0 and its pods were gone.
    KeycloakStopped {
        /// Its instance count before.
        was: u32,
    },
    /// The offline site's Keycloak was restored and ready.
    KeycloakReady {
        /// Its instance count.
        instances: u32,
    },
    /// What the offline site's Keycloak answered once the run was done: whether it can go back
    /// behind the load balancer (HTTP statuses; `None`: not configured or no answer).
    KeycloakServing {
        /// `/lb-check`.
        lb_check: Option<u16>,
        /// `/health/ready`.
        ready: Option<u16>,
    },
    /// A warning.
    Warning {
        /// The text.
        message: String,
    },
    /// The run (or this resume) ended.
    RunFinished {
        /// How.
        finished: Finished,
    },
}

/// The direction guard's first reading: when (ms since the epoch), and each site's counters per
/// cache.
pub type EvidenceStart = (u64, Vec<((Side, CacheName), WriteSample)>);

/// The journal's schema version. Bump it on any incompatible change; older journals stay readable.
pub const JOURNAL_SCHEMA: u32 = 1;

/// A run's journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    /// Always [`JOURNAL_SCHEMA`] when written by this version.
    pub schema_version: u32,
    /// Identifies the run (also in the run lock and in events).
    pub run_id: String,
    /// The active site.
    pub active: SiteRef,
    /// The offline site.
    pub offline: SiteRef,
    /// The caches, as resolved by preflight (empty until then).
    pub caches: Vec<CacheName>,
    /// The first step not proven done.
    pub step: Step,
    /// While a resumed run re-checks the sites (step `preflight`): the step to continue from.
    #[serde(default)]
    pub resume_from: Option<Step>,
    /// When the run started (ms since the epoch).
    pub started_at_ms: u64,
    /// When `step` was entered.
    pub step_started_at_ms: u64,
    /// Last write.
    pub updated_at_ms: u64,
    /// Keycloak's instance count before scaling down (also kept on the Keycloak resource).
    pub keycloak_original_instances: Option<u32>,
    /// Per-cache progress.
    pub per_cache: BTreeMap<CacheName, CacheProgress>,
    /// Warnings for the report (drift, a node that could not tell the site view, ...).
    pub warnings: Vec<String>,
    /// Since when (ms since the epoch) the cross-site link is lost, while it is.
    #[serde(default)]
    pub link_down_since_ms: Option<u64>,
    /// The direction guard's first counters, while it watches (per site and cache).
    #[serde(default)]
    pub evidence_started: Option<EvidenceStart>,
    /// The direction guard's evidence and verdict, once judged.
    #[serde(default)]
    pub direction: Option<DirectionRecord>,
    /// Windows the direction guard watched again because counters were reset during one.
    #[serde(default)]
    pub evidence_retries: u32,
    /// How the last attempt ended; `None` while running.
    pub finished: Option<Finished>,
    /// What happened, in order, across the run and its resumes (at most [`HISTORY_LIMIT`]).
    #[serde(default)]
    pub history: Vec<Moment>,
    /// Moments left out of `history` past its limit.
    #[serde(default)]
    pub history_left_out: u64,
}

impl Journal {
    /// A fresh journal for `plan`.
    pub fn new(run_id: String, plan: &Plan, now_ms: u64) -> Self {
        Self {
            schema_version: JOURNAL_SCHEMA,
            run_id,
            active: plan.active.clone(),
            offline: plan.offline.clone(),
            caches: Vec::new(),
            step: Step::Preflight,
            resume_from: None,
            started_at_ms: now_ms,
            step_started_at_ms: now_ms,
            updated_at_ms: now_ms,
            keycloak_original_instances: None,
            per_cache: BTreeMap::new(),
            warnings: Vec::new(),
            link_down_since_ms: None,
            evidence_started: None,
            direction: None,
            evidence_retries: 0,
            finished: None,
            history: Vec::new(),
            history_left_out: 0,
        }
    }

    /// Parses a stored journal, refusing a newer schema.
    pub fn from_json(location: &str, text: &str) -> Result<Self, JournalError> {
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| JournalError::Corrupt { location: location.to_owned(), detail: e.to_string() })?;
        let version = value
            .get("schema_version")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| JournalError::Corrupt { location: location.to_owned(), detail: "no schema_version".to_owned() })?;
        if version > u64::from(JOURNAL_SCHEMA) {
            return Err(JournalError::NewerSchema {
                location: location.to_owned(),
                found: u32::try_from(version).unwrap_or(u32::MAX),
                supported: JOURNAL_SCHEMA,
            });
        }
        serde_json::from_value(value).map_err(|e| JournalError::Corrupt { location: location.to_owned(), detail: e.to_string() })
    }

    /// The journal as stored (pretty JSON: operators read it).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Whether this journal belongs to the pair in `plan` (same names in the same roles).
    pub fn belongs_to(&self, plan: &Plan) -> bool {
        self.active.name == plan.active.name && self.offline.name == plan.offline.name
    }

    /// Keeps `moments`, up to [`HISTORY_LIMIT`]; the end of a run is always kept.
    pub fn record(&mut self, moments: impl IntoIterator<Item = Moment>) {
        for moment in moments {
            let last_word = matches!(moment.what, Happening::RunFinished { .. });
            if self.history.len() < HISTORY_LIMIT || last_word {
                self.history.push(moment);
            } else {
                self.history_left_out += 1;
            }
        }
    }

    /// Progress of one cache.
    pub fn cache(&self, cache: &CacheName) -> CacheProgress {
        self.per_cache.get(cache).cloned().unwrap_or_default()
    }

    pub(crate) fn cache_mut(&mut self, cache: &CacheName) -> &mut CacheProgress {
        self.per_cache.entry(cache.clone()).or_default()
    }

    /// Whether the run changed anything yet (so that only `resume` may continue it).
    pub fn has_progress(&self) -> bool {
        self.step > Step::Preflight || self.resume_from.is_some()
    }

    /// Whether the run succeeded.
    pub fn is_complete(&self) -> bool {
        matches!(self.finished, Some(Finished::Succeeded))
    }
}

/// What an action did, as far as the journal is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionOutcome {
    /// It succeeded.
    Done,
    /// Scale-down succeeded; Keycloak had this many instances.
    ScaledDownFrom(u32),
    /// The server answered with an error (its text).
    ServerError(String),
    /// No answer, or an answer that says nothing about whether it happened.
    Unknown(String),
    /// An interlock kept it from being sent.
    NotSent(String),
}

impl Journal {
    /// Records the intent to act, before acting: a crash right after leaves the journal saying
    /// what may have happened.
    pub(crate) fn before(&mut self, action: &Action, now_ms: u64) {
        self.updated_at_ms = now_ms;
        match action {
            Action::TakeOffline(cache) => {
                let p = self.cache_mut(cache);
                p.take_offline_calls += 1;
                p.last_take_offline_ms = Some(now_ms);
            }
            Action::StartPush(cache) => {
                let p = self.cache_mut(cache);
                p.push = PushPhase::Sending;
                p.push_attempts += 1;
                p.push_started_at_ms = Some(now_ms);
                p.push_start_failed = false;
                p.receiver_entries = None;
                p.receiver_moved_at_ms = Some(now_ms);
            }
            Action::CancelPush(cache) => self.cache_mut(cache).push = PushPhase::CancelPush,
            _ => {}
        }
    }

    /// Records what an action did.
    pub(crate) fn after(&mut self, action: &Action, outcome: &ActionOutcome, now_ms: u64) {
        self.updated_at_ms = now_ms;
        let done = *outcome == ActionOutcome::Done;
        match action {
            Action::ScaleDown => {
                if let ActionOutcome::ScaledDownFrom(original) = outcome {
                    // The first recorded count wins: a retried scale-down sees 0 instances.
                    self.keycloak_original_instances.get_or_insert(*original);
                }
            }
            Action::Clear(cache) if done => self.cache_mut(cache).cleared = true,
            Action::StartPush(cache) => {
                let p = self.cache_mut(cache);
                match outcome {
                    ActionOutcome::ServerError(text) => {
                        p.push_start_failed = true;
                        p.last_error = Some(text.clone());
                    }
                    ActionOutcome::Unknown(text) => p.last_error = Some(text.clone()),
                    _ => {}
                }
            }
            // Whatever the answer: a cancel with the receiver down still cancels (checked on
            // 16.0.7), and the next steps are harmless when it did not.
            Action::CancelPush(cache) => self.cache_mut(cache).push = PushPhase::CancelReceive,
            Action::CancelReceive(cache) if done => self.cache_mut(cache).push = PushPhase::ClearStatus,
            Action::ClearPushStatus(cache) if done => {
                let p = self.cache_mut(cache);
                p.push = match p.push {
                    PushPhase::Ok => PushPhase::Done,
                    PushPhase::ClearStatus => PushPhase::NotStarted,
                    other => other,
                };
            }
            _ => {}
        }
    }

    /// Records a fact.
    pub(crate) fn note(&mut self, note: &Note) {
        match note {
            Note::Caches(caches, _) => {
                self.caches = caches.clone();
                for cache in caches {
                    self.cache_mut(cache);
                }
            }
            Note::AdoptPush(cache, at_ms) => {
                let p = self.cache_mut(cache);
                p.push = PushPhase::Sending;
                p.push_attempts = p.push_attempts.max(1);
                p.push_started_at_ms.get_or_insert(*at_ms);
                p.receiver_moved_at_ms.get_or_insert(*at_ms);
            }
            Note::PushOk(cache) => self.cache_mut(cache).push = PushPhase::Ok,
            Note::PushDone(cache) => self.cache_mut(cache).push = PushPhase::Done,
            Note::Verified(cache, verdict) => {
                let p = self.cache_mut(cache);
                p.verdict = Some(verdict.clone());
                // The budget is one re-push per failed verification, not per run: a site that
                // loses data again later (a restart) gets another one.
                p.verify_repushes = 0;
            }
            Note::Repush(cache) => {
                let p = self.cache_mut(cache);
                p.verify_repushes += 1;
                p.push = PushPhase::NotStarted;
                p.push_attempts = 0;
                p.verdict = None;
                self.step = Step::AwaitPush;
            }
            Note::Warning(text) => {
                if !self.warnings.contains(text) {
                    self.warnings.push(text.clone());
                }
            }
            Note::LinkLost { loss, .. } => self.link_down_since_ms = Some(loss.since_ms),
            Note::LinkBack { .. } => self.link_down_since_ms = None,
            Note::EvidenceStarted { samples, at_ms } => {
                if self.evidence_started.is_some() {
                    self.evidence_retries += 1;
                }
                self.evidence_started = Some((*at_ms, samples.clone()));
            }
            Note::Direction(record) => {
                self.evidence_started = None;
                self.direction = Some(record.clone());
            }
            Note::ReceiverMoved { cache, entries, at_ms } => {
                let p = self.cache_mut(cache);
                p.receiver_entries = Some(*entries);
                p.receiver_moved_at_ms = Some(*at_ms);
            }
        }
    }

    /// Moves to the next step (after a resume's re-check: to the step it interrupted).
    pub(crate) fn advance(&mut self, now_ms: u64) {
        self.step = match (self.step, self.resume_from.take()) {
            (Step::Preflight, Some(resume)) => resume,
            (step, _) => step.next(),
        };
        self.step_started_at_ms = now_ms;
        self.updated_at_ms = now_ms;
    }
}
