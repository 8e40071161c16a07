//! `decide(plan, journal, observation) -> Decision`: the whole procedure as a pure function.
//!
//! No IO, no clock (time is `observation.now_ms`), no randomness. The driver asks, executes what
//! it is told, records the result in the journal, throws the observation away after every action,
//! and asks again. Every rule here is therefore evaluated against facts read after the tool's own
//! last change: an interlock is simply a rule that refuses to act on facts it does not have.
//!
//! Every wait it asks for says what it waits for, why, and until when: past that moment the same
//! rule ends the run instead (resumably), so no wait is open-ended.

use std::collections::BTreeMap;
use std::time::Duration;

use ispn_xsite::{BackupStatus, CacheName, PushStatus, PushStatusReport, SiteName};

use crate::decision::{Decision, Ending, Note, Wait};
use crate::direction::{BOOKKEEPING_CACHES, CacheReading, Context, Counting, judge};
use crate::journal::{CacheProgress, Journal};
use crate::observe::{ContentCheck, Observation, SiteFacts, Sizes};
use crate::outcome::{Failure, Refusal};
use crate::plan::{CacheSelection, Plan, keycloak_line};
use crate::vocabulary::{
    Action, DirectionVerdict, LinkLoss, LinkView, Probe, PushPhase, Side, Step, Verdict, VerifyLevel, WriteSample, human_duration,
};

fn probes_for(caches: &[CacheName], make: impl Fn(CacheName) -> Probe) -> Vec<Probe> {
    caches.iter().cloned().map(make).collect()
}

fn ms(duration: Duration) -> u64 {
    duration.as_millis() as u64
}

/// When the current step runs out of time.
fn step_until(plan: &Plan, journal: &Journal) -> u64 {
    journal.step_started_at_ms + ms(plan.settings.step_deadline)
}

/// A poll-interval pause until the step's deadline.
fn poll(plan: &Plan, journal: &Journal, what: impl Into<String>, why: impl Into<String>) -> Decision {
    Decision::Wait(Wait {
        duration: plan.settings.poll_interval,
        what: what.into(),
        why: why.into(),
        until_ms: step_until(plan, journal),
    })
}

fn names(caches: &[CacheName]) -> String {
    caches.iter().map(CacheName::as_str).collect::<Vec<_>>().join(", ")
}

/// The next thing to do.
pub fn decide(plan: &Plan, journal: &Journal, obs: &Observation) -> Decision {
    let step = journal.step;
    let timed = !matches!(step, Step::Preflight | Step::ScaleDown | Step::ScaleUp | Step::Report);
    if timed && obs.now_ms > step_until(plan, journal) {
        return Decision::Finish(Ending::Failed(Failure::Deadline {
            step,
            after: plan.settings.step_deadline,
            why: pending(plan, journal),
        }));
    }
    match step {
        Step::Preflight => preflight(plan, journal, obs),
        Step::ScaleDown => scale_down(plan, journal, obs),
        Step::TakeOffline => take_offline(plan, journal, obs),
        Step::ClearCaches => clear_caches(plan, journal, obs),
        Step::BringOnline => bring_online(journal, obs),
        Step::PushState => push_state(plan, journal, obs),
        Step::AwaitPush => await_push(plan, journal, obs),
        Step::ClearPushStatus => clear_push_status(journal, obs),
        Step::Verify => verify(plan, journal, obs),
        Step::ScaleUp => scale_up(plan, journal, obs),
        Step::Report => report(plan, journal, obs),
    }
}

/// What the current step still waits for, for deadline messages.
fn pending(plan: &Plan, journal: &Journal) -> String {
    let open: Vec<CacheName> = journal
        .caches
        .iter()
        .filter(|c| {
            let p = journal.cache(c);
            match journal.step {
                Step::ClearCaches => !p.cleared,
                Step::AwaitPush | Step::PushState => !matches!(p.push, PushPhase::Ok | PushPhase::Done),
                Step::ClearPushStatus => p.push != PushPhase::Done,
                Step::Verify => p.verdict.is_none(),
                _ => true,
            }
        })
        .cloned()
        .collect();
    format!(
        "caches not done: {}; raise step_deadline ({}) if the data is just large",
        names(&open),
        human_duration(plan.settings.step_deadline)
    )
}

fn preflight(plan: &Plan, journal: &Journal, obs: &Observation) -> Decision {
    let mut wanted = vec![
        Probe::Site { side: Side::Active },
        Probe::Site { side: Side::Offline },
        Probe::Backups { side: Side::Active },
        Probe::Backups { side: Side::Offline },
    ];
    if plan.settings.manage_keycloak {
        wanted.push(Probe::Keycloak);
    }
    let missing = obs.missing(wanted);
    if !missing.is_empty() {
        return Decision::Observe(missing);
    }
    let (active, offline) = (&obs.sites[&Side::Active], &obs.sites[&Side::Offline]);
    let (a, o) = (&plan.active.name, &plan.offline.name);
    if active.local_site.as_deref() == Some(o.as_str()) && offline.local_site.as_deref() == Some(a.as_str()) {
        return Decision::Finish(Ending::Refused(Refusal::SitesSwapped {
            active: a.clone(),
            offline: o.clone(),
            active_endpoint: plan.active.endpoint.clone(),
            offline_endpoint: plan.offline.endpoint.clone(),
        }));
    }
    for (side, facts, site) in [(Side::Active, active, &plan.active), (Side::Offline, offline, &plan.offline)] {
        if facts.local_site.as_deref() != Some(site.name.as_str()) {
            return Decision::Finish(Ending::Refused(Refusal::WrongSite {
                side,
                endpoint: site.endpoint.clone(),
                expected: site.name.clone(),
                found: facts.local_site.clone(),
            }));
        }
    }

    let caches = match resolve_caches(plan, journal, obs) {
        Ok(caches) => caches,
        Err(refusal) => return Decision::Finish(Ending::Refused(refusal)),
    };
    let resuming_at = journal.resume_from.unwrap_or(Step::Preflight);
    let pushes_ahead = resuming_at <= Step::AwaitPush;
    if pushes_ahead {
        for (from, facts, to) in [(a, active, o), (o, offline, a)] {
            match facts.sees(to) {
                Some(false) => {
                    return Decision::Finish(Ending::Refused(Refusal::NoLink { from: from.clone(), to: to.clone() }));
                }
                None => {
                    let warning = format!(
                        "the node answering for '{from}' is not a site master, so it cannot tell whether '{to}' is connected; the push will tell"
                    );
                    if !journal.warnings.contains(&warning) {
                        return Decision::Note(vec![Note::Warning(warning)]);
                    }
                }
                Some(true) => {}
            }
        }
    }
    if let Some(Some(keycloak)) = &obs.keycloak {
        // Our own scale-down is not an operator's rollout: only refuse before we touched it.
        if keycloak.rolling_update && journal.keycloak_original_instances.is_none() {
            return Decision::Finish(Ending::Refused(Refusal::KeycloakRollingUpdate { what: format!("offline site '{o}'") }));
        }
    }
    if journal.caches.is_empty() {
        let line = keycloak_line(&caches).map(str::to_owned);
        return Decision::Note(vec![Note::Caches(caches, line)]);
    }
    // The direction is judged once, before the first change: a resume past scale-down has
    // already changed the offline site, and its evidence is in the journal.
    if plan.settings.direction_guard
        && resuming_at <= Step::ScaleDown
        && let Some(decision) = direction_guard(plan, journal, obs)
    {
        return decision;
    }
    Decision::Advance
}

/// The direction guard: both sites' write counters read twice, `direction_window` apart, and
/// the offline site's Keycloak's `/lb-check`; a refusal when the evidence says the offline site
/// serves users (unless the operator said to discard what it took). `None` once judged.
fn direction_guard(plan: &Plan, journal: &Journal, obs: &Observation) -> Option<Decision> {
    if let Some(record) = &journal.direction {
        let o = &plan.offline.name;
        let warning = match &record.verdict {
            DirectionVerdict::Against { .. } if !record.overridden => {
                return Some(Decision::Finish(Ending::Refused(Refusal::Direction { evidence: Box::new(record.clone()) })));
            }
            DirectionVerdict::Against { reason, .. } => format!(
                "{reason}; --discard-offline-writes was given: {o}'s Keycloak is stopped and the users it served lose their logins in progress and lockouts"
            ),
            // Shown with the evidence (the event, the plan and the report): no warning besides.
            DirectionVerdict::Inconclusive { .. } | DirectionVerdict::Agrees => return None,
        };
        return (!journal.warnings.contains(&warning)).then(|| Decision::Note(vec![Note::Warning(warning)]));
    }
    let window = plan.settings.direction_window;
    let window_ms = window.as_millis() as u64;
    let mut wanted: Vec<Probe> = [Side::Active, Side::Offline]
        .into_iter()
        .flat_map(|side| journal.caches.iter().map(move |cache| Probe::Activity { side, cache: cache.clone() }))
        .collect();
    let samples = |obs: &Observation| -> Vec<((Side, CacheName), WriteSample)> {
        obs.activity.iter().map(|(k, v)| (k.clone(), *v)).collect()
    };
    // A first reading older than a few windows (a run resumed after a crash) is read again.
    let started = journal.evidence_started.as_ref().filter(|(at, _)| obs.now_ms <= at + 4 * window_ms + 60_000);
    let Some((started_at, first)) = started else {
        let missing = obs.missing(wanted);
        if !missing.is_empty() {
            return Some(Decision::Observe(missing));
        }
        return Some(Decision::Note(vec![Note::EvidenceStarted { samples: samples(obs), at_ms: obs.now_ms }]));
    };
    if obs.now_ms < started_at + window_ms {
        let (a, o) = (&plan.active.name, &plan.offline.name);
        return Some(Decision::Wait(Wait {
            duration: Duration::from_millis(started_at + window_ms - obs.now_ms),
            what: format!("writes on {a} and {o} (the direction guard's {} window)", human_duration(window)),
            why: format!("which site serves users decides whether clearing {o} is safe"),
            until_ms: started_at + window_ms,
        }));
    }
    for cache in &journal.caches {
        wanted.push(Probe::Status { side: Side::Active, cache: cache.clone() });
        wanted.push(Probe::Status { side: Side::Offline, cache: cache.clone() });
    }
    wanted.push(Probe::KeycloakHealth);
    wanted.extend([Side::Active, Side::Offline].map(|side| Probe::Site { side }));
    let missing = obs.missing(wanted);
    if !missing.is_empty() {
        return Some(Decision::Observe(missing));
    }
    let first: BTreeMap<(Side, CacheName), WriteSample> = first.iter().cloned().collect();
    let replicates = |side: Side, cache: &CacheName| obs.status.get(&(side, cache.clone())) == Some(&BackupStatus::Online);
    let readings: Vec<CacheReading> = journal
        .caches
        .iter()
        .filter_map(|cache| {
            let at = |side: Side| Some((*first.get(&(side, cache.clone()))?, *obs.activity.get(&(side, cache.clone()))?));
            Some(CacheReading {
                cache: cache.clone(),
                active: at(Side::Active)?,
                offline: at(Side::Offline)?,
                active_replicates: replicates(Side::Active, cache),
                offline_replicates: replicates(Side::Offline, cache),
            })
        })
        .collect();
    let lb_check = obs.keycloak_health.as_ref().and_then(|h| h.as_ref()?.lb_check.as_ref()?.status);
    let counting = |side: Side| obs.sites.get(&side).map_or(Counting::ONE_NODE, SiteFacts::counting);
    let context = Context {
        active: plan.active.name.clone(),
        offline: plan.offline.name.clone(),
        active_counting: counting(Side::Active),
        offline_counting: counting(Side::Offline),
        window: Duration::from_millis(obs.now_ms - started_at),
        offline_lb_check: lb_check,
        manages_offline_keycloak: plan.settings.manage_keycloak,
        overridden: plan.settings.discard_offline_writes,
    };
    let record = judge(&context, &readings);
    // Counters that went back (a restarted node) say nothing about the window: watch again, a
    // few times, rather than judge on the sizes alone.
    if record.counters_reset && journal.evidence_retries < EVIDENCE_RETRIES {
        return Some(Decision::Note(vec![Note::EvidenceStarted { samples: samples(obs), at_ms: obs.now_ms }]));
    }
    Some(Decision::Note(vec![Note::Direction(record)]))
}

/// How many more windows the direction guard watches when counters were reset during one.
const EVIDENCE_RETRIES: u32 = 2;

fn resolve_caches(plan: &Plan, journal: &Journal, obs: &Observation) -> Result<Vec<CacheName>, Refusal> {
    let (a, o) = (&plan.active.name, &plan.offline.name);
    let active = &obs.backups[&Side::Active];
    let offline = &obs.backups[&Side::Offline];
    let caches: Vec<CacheName> = if !journal.caches.is_empty() {
        journal.caches.clone()
    } else {
        match &plan.caches {
            CacheSelection::Explicit(list) => list.clone(),
            CacheSelection::Keycloak => {
                let found: Vec<CacheName> = active
                    .iter()
                    .filter(|(c, targets)| targets.contains(o) || offline.get(*c).is_some_and(|t| t.contains(a)))
                    .map(|(c, _)| c.clone())
                    .chain(offline.iter().filter(|(c, t)| t.contains(a) && !active.contains_key(*c)).map(|(c, _)| c.clone()))
                    .collect();
                if keycloak_line(&found).is_none() {
                    return Err(Refusal::UnknownCacheSet { found });
                }
                found
            }
        }
    };
    for cache in &caches {
        for (side, map, site, other) in [(Side::Active, active, a, o), (Side::Offline, offline, o, a)] {
            match map.get(cache) {
                None => return Err(Refusal::CacheMissing { side, site: site.clone(), cache: cache.clone() }),
                Some(targets) if !targets.contains(other) => {
                    return Err(Refusal::NotReplicated { side, site: site.clone(), cache: cache.clone(), other: other.clone() });
                }
                Some(_) => {}
            }
        }
    }
    Ok(caches)
}

/// The state of the cross-site link, for the steps that need it.
enum Link {
    Up,
    /// Lost; waited for until this moment.
    Down {
        until_ms: u64,
    },
}

/// The probes [`link`] needs.
fn link_probes() -> Vec<Probe> {
    vec![Probe::Site { side: Side::Active }, Probe::Site { side: Side::Offline }]
}

/// How both sites see each other, if either does not (requires [`link_probes`]).
fn link_loss(plan: &Plan, obs: &Observation) -> Option<LinkLoss> {
    let view = |side: Side, site: &SiteName, other: &SiteName| {
        let facts = &obs.sites[&side];
        LinkView { site: site.clone(), other: other.clone(), sites_view: facts.sites_view.clone(), sees_other: facts.sees(other) }
    };
    let views = vec![
        view(Side::Active, &plan.active.name, &plan.offline.name),
        view(Side::Offline, &plan.offline.name, &plan.active.name),
    ];
    views.iter().any(|v| v.sees_other == Some(false)).then_some(LinkLoss { since_ms: obs.now_ms, views })
}

/// The gate of the steps that need the cross-site link (push, await-push, verify). A lost link
/// is recorded the moment it is seen, so that the driver announces it at once; it is waited for
/// until `link_wait` has passed since, and then the run stops, resumably. A link that comes back
/// is recorded (and announced) too.
fn link(plan: &Plan, journal: &Journal, obs: &Observation) -> Result<Link, Decision> {
    let wait = ms(plan.settings.link_wait);
    match (link_loss(plan, obs), journal.link_down_since_ms) {
        (None, None) => Ok(Link::Up),
        (None, Some(since_ms)) => Err(Decision::Note(vec![Note::LinkBack { since_ms, at_ms: obs.now_ms }])),
        (Some(loss), None) => {
            let until_ms = (loss.since_ms + wait).min(step_until(plan, journal));
            Err(Decision::Note(vec![Note::LinkLost { loss, until_ms }]))
        }
        (Some(loss), Some(since_ms)) => {
            if obs.now_ms >= since_ms + wait {
                return Err(Decision::Finish(Ending::Failed(Failure::LinkLost {
                    loss: LinkLoss { since_ms, ..loss },
                    waited: plan.settings.link_wait,
                })));
            }
            Ok(Link::Down { until_ms: (since_ms + wait).min(step_until(plan, journal)) })
        }
    }
}

fn wait_for_link(plan: &Plan, until_ms: u64, why: &str) -> Decision {
    Decision::Wait(Wait {
        duration: plan.settings.poll_interval,
        what: format!("the cross-site link between {} and {}", plan.active.name, plan.offline.name),
        why: why.to_owned(),
        until_ms,
    })
}

fn keycloak_state<'o>(plan: &Plan, obs: &'o Observation) -> Result<Option<&'o crate::port_types::KeycloakState>, Decision> {
    if !plan.settings.manage_keycloak {
        return Ok(None);
    }
    match &obs.keycloak {
        None => Err(Decision::Observe(vec![Probe::Keycloak])),
        Some(state) => Ok(state.as_ref()),
    }
}

fn scale_down(plan: &Plan, journal: &Journal, obs: &Observation) -> Decision {
    let state = match keycloak_state(plan, obs) {
        Ok(Some(state)) => state,
        Ok(None) => return Decision::Advance,
        Err(observe) => return observe,
    };
    if journal.keycloak_original_instances.is_some() && state.spec_instances == 0 && state.pods == 0 {
        return Decision::Advance;
    }
    Decision::Act(vec![Action::ScaleDown])
}

fn take_offline(plan: &Plan, journal: &Journal, obs: &Observation) -> Decision {
    let missing = obs.missing(probes_for(&journal.caches, |cache| Probe::OfflineNodes { cache }));
    if !missing.is_empty() {
        return Decision::Observe(missing);
    }
    let mut actions = Vec::new();
    let mut settling = Vec::new();
    for cache in &journal.caches {
        let nodes = &obs.offline_nodes[cache];
        if nodes.all_offline() {
            continue;
        }
        let progress = journal.cache(cache);
        if progress.take_offline_calls >= plan.settings.take_offline_attempts {
            return Decision::Finish(Ending::Failed(Failure::TakeOfflineDidNotStick {
                cache: cache.clone(),
                nodes: nodes.not_offline().into_iter().map(str::to_owned).collect(),
                calls: progress.take_offline_calls,
            }));
        }
        // A status change can take a moment to reach every node: give the last call one poll
        // interval before issuing another.
        if progress.last_take_offline_ms.is_some_and(|at| obs.now_ms < at + ms(plan.settings.poll_interval)) {
            settling.push(cache.clone());
        } else {
            actions.push(Action::TakeOffline(cache.clone()));
        }
    }
    if !actions.is_empty() {
        return Decision::Act(actions);
    }
    if !settling.is_empty() {
        return poll(
            plan,
            journal,
            format!("the take-offline of {} to read offline on every node", names(&settling)),
            "a clear is safe only while the backup to the active site is offline everywhere",
        );
    }
    Decision::Advance
}

fn clear_caches(plan: &Plan, journal: &Journal, obs: &Observation) -> Decision {
    let todo: Vec<CacheName> = journal.caches.iter().filter(|c| !journal.cache(c).cleared).cloned().collect();
    if todo.is_empty() {
        return Decision::Advance;
    }
    let missing = obs.missing(probes_for(&todo, |cache| Probe::OfflineNodes { cache }));
    if !missing.is_empty() {
        return Decision::Observe(missing);
    }
    let mut actions = Vec::new();
    let mut settling = Vec::new();
    for cache in todo {
        let nodes = &obs.offline_nodes[&cache];
        if nodes.all_offline() {
            actions.push(Action::Clear(cache));
            continue;
        }
        // The interlock: the backup to the active site is (again) not offline everywhere. Never
        // clear; take it offline again, and give up once that stops helping.
        let progress = journal.cache(&cache);
        if progress.take_offline_calls >= plan.settings.take_offline_attempts {
            return Decision::Finish(Ending::Refused(Refusal::ClearInterlock {
                cache: cache.clone(),
                nodes: nodes.not_offline().into_iter().map(str::to_owned).collect(),
            }));
        }
        if progress.last_take_offline_ms.is_none_or(|at| obs.now_ms >= at + ms(plan.settings.poll_interval)) {
            actions.push(Action::TakeOffline(cache));
        } else {
            settling.push(cache);
        }
    }
    if actions.is_empty() {
        poll(
            plan,
            journal,
            format!("the backups of {} to read offline on every node", names(&settling)),
            "a clear while a backup replicates would empty the active site too",
        )
    } else {
        Decision::Act(actions)
    }
}

fn bring_online(journal: &Journal, obs: &Observation) -> Decision {
    let missing = obs.missing(probes_for(&journal.caches, |cache| Probe::Status { side: Side::Offline, cache }));
    if !missing.is_empty() {
        return Decision::Observe(missing);
    }
    let actions: Vec<Action> = journal
        .caches
        .iter()
        .filter(|c| obs.status[&(Side::Offline, (*c).clone())] != BackupStatus::Online)
        .map(|c| Action::BringOnline(Side::Offline, c.clone()))
        .collect();
    if actions.is_empty() { Decision::Advance } else { Decision::Act(actions) }
}

fn push_report(obs: &Observation, cache: &CacheName, offline: &SiteName) -> Option<PushStatus> {
    match obs.push.get(cache)? {
        PushStatusReport::Sites(_) => obs.push[cache].for_site(offline),
        PushStatusReport::GatherFailed(_) => None,
    }
}

fn push_state(plan: &Plan, journal: &Journal, obs: &Observation) -> Decision {
    let todo: Vec<CacheName> =
        journal.caches.iter().filter(|c| journal.cache(c).push == PushPhase::NotStarted).cloned().collect();
    if todo.is_empty() {
        return Decision::Advance;
    }
    let mut wanted = link_probes();
    wanted.extend(probes_for(&todo, |cache| Probe::Push { cache }));
    let missing = obs.missing(wanted);
    if !missing.is_empty() {
        return Decision::Observe(missing);
    }
    let active = &obs.sites[&Side::Active];
    if active.local_site.as_deref() != Some(plan.active.name.as_str()) {
        return Decision::Finish(Ending::Refused(Refusal::PushInterlock {
            expected: plan.active.name.clone(),
            found: active.local_site.clone(),
        }));
    }
    match link(plan, journal, obs) {
        Err(decision) => return decision,
        Ok(Link::Down { until_ms }) => return wait_for_link(plan, until_ms, "a push without it can only fail"),
        Ok(Link::Up) => {}
    }
    let mut actions = Vec::new();
    let mut notes = Vec::new();
    for cache in todo {
        match push_report(obs, &cache, &plan.offline.name) {
            None => {
                return poll(
                    plan,
                    journal,
                    format!("a readable push status of {cache}"),
                    "the active site could not gather it from every node",
                );
            }
            // Someone's push is running (ours, if the answer to our start was lost): adopt it.
            Some(PushStatus::Sending) => notes.push(Note::AdoptPush(cache, obs.now_ms)),
            // A finished status from an earlier push would hide this one's outcome: clear first.
            Some(PushStatus::Ok | PushStatus::Error | PushStatus::Canceled) => actions.push(Action::ClearPushStatus(cache)),
            Some(PushStatus::Idle) => actions.push(Action::StartPush(cache)),
        }
    }
    if !notes.is_empty() {
        return Decision::Note(notes);
    }
    if actions.is_empty() { Decision::Advance } else { Decision::Act(actions) }
}

/// Whether the offline site has taken no entry of a push reading SENDING for
/// `push_stall_timeout` (`entries`: its count now).
fn stalled(plan: &Plan, progress: &CacheProgress, entries: u64, now_ms: u64) -> bool {
    progress.receiver_entries == Some(entries)
        && progress.receiver_moved_at_ms.is_some_and(|at| now_ms.saturating_sub(at) > ms(plan.settings.push_stall_timeout))
}

/// Whether the offline site's entry count moved since last recorded, and it is time to record
/// it again: a record every eighth of the stall timeout keeps the journal quiet while a push
/// runs, and only ever makes a stall be noticed later, never sooner.
fn receiver_moved(plan: &Plan, progress: &CacheProgress, entries: u64, now_ms: u64) -> bool {
    let every = ms(plan.settings.push_stall_timeout) / 8;
    progress.receiver_entries != Some(entries) && progress.receiver_moved_at_ms.is_none_or(|at| now_ms >= at + every)
}

fn await_push(plan: &Plan, journal: &Journal, obs: &Observation) -> Decision {
    let open: Vec<CacheName> =
        journal.caches.iter().filter(|c| !matches!(journal.cache(c).push, PushPhase::Ok | PushPhase::Done)).cloned().collect();
    if open.is_empty() {
        return Decision::Advance;
    }
    let mut wanted = link_probes();
    for cache in &open {
        wanted.push(Probe::Push { cache: cache.clone() });
        wanted.push(Probe::Status { side: Side::Active, cache: cache.clone() });
        if journal.cache(cache).push == PushPhase::Sending {
            wanted.push(Probe::Sizes { cache: cache.clone() });
        }
    }
    let missing = obs.missing(wanted);
    if !missing.is_empty() {
        return Decision::Observe(missing);
    }
    let link = match link(plan, journal, obs) {
        Ok(link) => link,
        Err(decision) => return decision,
    };
    // Without the link a push can only fail: recover the running ones, and spend no attempts
    // until it is back.
    let link_down = matches!(link, Link::Down { .. });
    let offline = &plan.offline.name;
    let mut actions = Vec::new();
    let mut notes = Vec::new();
    for cache in open {
        let progress = journal.cache(&cache);
        let Some(status) = push_report(obs, &cache, offline) else { continue };
        let retry_or_fail = |last: String| {
            if link_down {
                Err(None)
            } else if progress.push_attempts < plan.settings.push_attempts {
                Ok(Action::StartPush(cache.clone()))
            } else {
                Err(Some(Failure::PushFailed { cache: cache.clone(), attempts: progress.push_attempts, last }))
            }
        };
        match progress.push {
            PushPhase::Ok | PushPhase::Done => {}
            PushPhase::NotStarted => match status {
                PushStatus::Idle => match retry_or_fail(progress.last_error.clone().unwrap_or_else(|| "not started".into())) {
                    Ok(action) => actions.push(action),
                    Err(None) => {}
                    Err(Some(failure)) => return Decision::Finish(Ending::Failed(failure)),
                },
                PushStatus::Sending => notes.push(Note::AdoptPush(cache, obs.now_ms)),
                _ => actions.push(Action::ClearPushStatus(cache)),
            },
            PushPhase::Sending => match status {
                PushStatus::Ok => notes.push(Note::PushOk(cache)),
                PushStatus::Sending => {
                    let started = progress.push_started_at_ms.unwrap_or(obs.now_ms);
                    let overdue = obs.now_ms.saturating_sub(started) > ms(plan.settings.push_deadline);
                    let entries = obs.sizes[&cache].offline;
                    // A start that failed with a server error leaves SENDING forever (checked on
                    // 16.0.7); so may a push past its deadline, one whose receiver stopped
                    // taking entries, and one whose link is gone.
                    if progress.push_start_failed || overdue || stalled(plan, &progress, entries, obs.now_ms) || link_down {
                        actions.push(Action::CancelPush(cache));
                    } else if receiver_moved(plan, &progress, entries, obs.now_ms) {
                        notes.push(Note::ReceiverMoved { cache, entries, at_ms: obs.now_ms });
                    }
                }
                PushStatus::Error | PushStatus::Canceled | PushStatus::Idle => {
                    let last = progress.last_error.clone().unwrap_or_else(|| status.to_string());
                    match retry_or_fail(last) {
                        Ok(action) => actions.push(action),
                        Err(None) => {}
                        Err(Some(failure)) => return Decision::Finish(Ending::Failed(failure)),
                    }
                }
            },
            PushPhase::CancelPush => actions.push(Action::CancelPush(cache)),
            PushPhase::CancelReceive => actions.push(Action::CancelReceive(cache)),
            PushPhase::ClearStatus => {
                if status == PushStatus::Sending {
                    actions.push(Action::CancelPush(cache));
                } else {
                    actions.push(Action::ClearPushStatus(cache));
                }
            }
        }
    }
    if !notes.is_empty() {
        return Decision::Note(notes);
    }
    // Live writes must reach the offline site while it catches up: the push brings the active
    // site's backup online, and it must stay so. Not while the link is down: with SYNC backups
    // that fail on error, an online backup to an unreachable site fails the active site's writes.
    if !link_down {
        for cache in &journal.caches {
            if obs.status.get(&(Side::Active, cache.clone())).is_some_and(|s| *s != BackupStatus::Online) {
                actions.push(Action::BringOnline(Side::Active, cache.clone()));
            }
        }
    }
    if !actions.is_empty() {
        return Decision::Act(actions);
    }
    match link {
        Link::Down { until_ms } => wait_for_link(plan, until_ms, "the pushes must run again once it is back"),
        Link::Up => poll_push(plan, journal, obs),
    }
}

/// Polling a push costs the time between its OK and the next read, so the wait grows with the
/// push: 5% of the time it has run so far, at least 50 ms, at most `poll_interval`. A push that
/// takes seconds is seen finished within a few percent of the server's own time, and a long one
/// does not get read more often than configured.
fn poll_push(plan: &Plan, journal: &Journal, obs: &Observation) -> Decision {
    const FLOOR_MS: u64 = 50;
    let running: Vec<(CacheName, CacheProgress)> = journal
        .caches
        .iter()
        .map(|c| (c.clone(), journal.cache(c)))
        .filter(|(_, p)| !matches!(p.push, PushPhase::Ok | PushPhase::Done))
        .collect();
    let running_since =
        running.iter().filter(|(_, p)| p.push == PushPhase::Sending).filter_map(|(_, p)| p.push_started_at_ms).min();
    let ceiling_ms = ms(plan.settings.poll_interval);
    let wait_ms = match running_since {
        Some(since) => (obs.now_ms.saturating_sub(since) / 20).max(FLOOR_MS).min(ceiling_ms),
        None => ceiling_ms,
    };
    let caches: Vec<CacheName> = running.into_iter().map(|(c, _)| c).collect();
    Decision::Wait(Wait {
        duration: Duration::from_millis(wait_ms),
        what: format!("the pushes of {} to read OK", names(&caches)),
        why: "Keycloak may start on the offline site only on data every push delivered".to_owned(),
        until_ms: step_until(plan, journal),
    })
}

fn clear_push_status(journal: &Journal, obs: &Observation) -> Decision {
    let open: Vec<CacheName> = journal.caches.iter().filter(|c| journal.cache(c).push == PushPhase::Ok).cloned().collect();
    if open.is_empty() {
        return Decision::Advance;
    }
    let missing = obs.missing(probes_for(&open, |cache| Probe::Push { cache }));
    if !missing.is_empty() {
        return Decision::Observe(missing);
    }
    let offline = &journal.offline.name;
    let mut actions = Vec::new();
    let mut notes = Vec::new();
    for cache in open {
        match push_report(obs, &cache, offline) {
            Some(PushStatus::Idle) => notes.push(Note::PushDone(cache)),
            _ => actions.push(Action::ClearPushStatus(cache)),
        }
    }
    if !notes.is_empty() { Decision::Note(notes) } else { Decision::Act(actions) }
}

/// The verdict for one cache from its entry counts: the two active reads bracket the offline
/// one, so a count within that range (plus `tolerance`) is drift from live traffic.
pub fn sizes_verdict(sizes: &Sizes, tolerance: u64) -> Verdict {
    let low = sizes.active_before.min(sizes.active_after);
    let high = sizes.active_before.max(sizes.active_after);
    let churn = high - low;
    let differ = sizes.offline.abs_diff(sizes.active_after);
    let within_range = sizes.offline + tolerance >= low && sizes.offline <= high + tolerance;
    let compared = VerifyLevel::Sizes;
    if differ == 0 && churn == 0 {
        Verdict::Equal { entries: sizes.offline, compared }
    } else if within_range && differ <= churn + tolerance {
        Verdict::Drift { active: sizes.active_after, offline: sizes.offline, compared, transient: 0 }
    } else {
        Verdict::Mismatch {
            active: sizes.active_after,
            offline: sizes.offline,
            compared,
            only_active: 0,
            only_offline: 0,
            different_values: 0,
        }
    }
}

/// The verdict for one cache from a comparison of its keys (and values): differences only one
/// of the two reads showed are live traffic; those both showed count, beyond `tolerance`.
pub fn content_verdict(check: &ContentCheck, tolerance: u64) -> Verdict {
    let (active, offline, compared) = (check.active, check.offline, check.level);
    let persistent = check.persistent();
    if persistent == 0 && check.transient == 0 {
        Verdict::Equal { entries: active, compared }
    } else if persistent <= tolerance {
        Verdict::Drift { active, offline, compared, transient: check.transient + persistent }
    } else {
        Verdict::Mismatch {
            active,
            offline,
            compared,
            only_active: check.only_active,
            only_offline: check.only_offline,
            different_values: check.different_values,
        }
    }
}

fn verify(plan: &Plan, journal: &Journal, obs: &Observation) -> Decision {
    let open: Vec<CacheName> = journal.caches.iter().filter(|c| journal.cache(c).verdict.is_none()).cloned().collect();
    if open.is_empty() {
        return Decision::Advance;
    }
    let level = plan.settings.verify;
    let mut wanted = link_probes();
    wanted.extend(probes_for(&open, |cache| if level.reads_keys() { Probe::Content { cache } } else { Probe::Sizes { cache } }));
    let missing = obs.missing(wanted);
    if !missing.is_empty() {
        return Decision::Observe(missing);
    }
    match link(plan, journal, obs) {
        Err(decision) => return decision,
        Ok(Link::Down { until_ms }) => {
            return wait_for_link(plan, until_ms, "writes on the active site reach the offline site only across it");
        }
        Ok(Link::Up) => {}
    }
    let mut notes = Vec::new();
    for cache in open {
        let verdict = if level.reads_keys() {
            content_verdict(&obs.content[&cache], plan.settings.drift_tolerance)
        } else {
            sizes_verdict(&obs.sizes[&cache], plan.settings.drift_tolerance)
        };
        if let Some(reason) = obs.content.get(&cache).and_then(|c| c.unreadable.as_ref()) {
            if plan.settings.require_values {
                return Decision::Finish(Ending::Failed(Failure::ValuesNotCompared { cache, reason: reason.clone() }));
            }
            notes.push(Note::Warning(format!(
                "cache '{cache}': its values could not be read, so only its keys were compared ({reason})"
            )));
        }
        if let Some(ending) = mismatch(journal, &cache, verdict.clone(), &mut notes) {
            return ending;
        }
        if !matches!(verdict, Verdict::Mismatch { .. }) {
            notes.push(Note::Verified(cache, verdict));
        }
    }
    Decision::Note(notes)
}

/// A mismatch the push can repair (missing keys or values on the offline site, as a push that
/// read OK while a node's chunk failed leaves them) is pushed once more; one it cannot (extra
/// keys there: a push never deletes) or one that survived the second push ends the run.
fn mismatch(journal: &Journal, cache: &CacheName, verdict: Verdict, notes: &mut Vec<Note>) -> Option<Decision> {
    if !matches!(verdict, Verdict::Mismatch { .. }) {
        return None;
    }
    if verdict.push_can_repair() && journal.cache(cache).verify_repushes == 0 {
        notes.push(Note::Repush(cache.clone()));
        return None;
    }
    Some(Decision::Finish(Ending::Failed(Failure::VerifyMismatch { cache: cache.clone(), verdict })))
}

fn scale_up(plan: &Plan, journal: &Journal, obs: &Observation) -> Decision {
    // The interlock: Keycloak may only start on data every push delivered.
    let unpushed: Vec<CacheName> = journal.caches.iter().filter(|c| journal.cache(c).push != PushPhase::Done).cloned().collect();
    if !unpushed.is_empty() {
        return Decision::Finish(Ending::Refused(Refusal::ScaleUpInterlock { caches: unpushed }));
    }
    let Some(original) = journal.keycloak_original_instances else { return Decision::Advance };
    let state = match keycloak_state(plan, obs) {
        Ok(Some(state)) => state,
        Ok(None) => return Decision::Advance,
        Err(observe) => return observe,
    };
    if state.spec_instances == original && state.ready_instances >= original {
        return Decision::Advance;
    }
    Decision::Act(vec![Action::ScaleUp(original)])
}

/// The last look before declaring success: the offline site may have lost data after it was
/// verified (a restart while Keycloak was starting). Missing entries are pushed again once.
fn report(plan: &Plan, journal: &Journal, obs: &Observation) -> Decision {
    let missing = obs.missing(probes_for(&journal.caches, |cache| Probe::Sizes { cache }));
    if !missing.is_empty() {
        return Decision::Observe(missing);
    }
    let mut notes = Vec::new();
    for cache in &journal.caches {
        let verdict = sizes_verdict(&obs.sizes[cache], plan.settings.drift_tolerance);
        if let Verdict::Mismatch { active, offline, .. } = verdict {
            // The offline site's Keycloak may run again by now and keeps its own bookkeeping:
            // more entries there in such a cache are its, never a user's (measured: Keycloak
            // 26.7.0 on 16.0.7 wrote 4 `work` entries on starting that stayed on its site).
            if BOOKKEEPING_CACHES.contains(&cache.as_str()) && !verdict.push_can_repair() {
                let (a, o) = (&plan.active.name, &plan.offline.name);
                let warning = format!(
                    "cache '{cache}' holds more entries on {o} than on {a} after verification: {o}'s Keycloak keeps its own bookkeeping there, not users' data; left as it is"
                );
                if !journal.warnings.contains(&warning) {
                    notes.push(Note::Warning(warning));
                }
                continue;
            }
            if verdict.push_can_repair() && journal.cache(cache).verify_repushes == 0 {
                notes.push(Note::Warning(format!(
                    "cache '{cache}' lost entries on the offline site after verification ({offline} of {active}); pushing it again"
                )));
            }
            if let Some(ending) = mismatch(journal, cache, verdict, &mut notes) {
                return ending;
            }
        }
    }
    if notes.is_empty() { Decision::Finish(Ending::Succeeded) } else { Decision::Note(notes) }
}
