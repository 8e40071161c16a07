//! `decide(plan, journal, observation) -> Decision`: the whole procedure as a pure function.
//!
//! No IO, no clock (time is `observation.now_ms`), no randomness. The driver asks, executes what
//! it is told, records the result in the journal, throws the observation away after every action,
//! and asks again. Every rule here is therefore evaluated against facts read after the tool's own
//! last change: an interlock is simply a rule that refuses to act on facts it does not have.

use std::time::Duration;

use ispn_xsite::{BackupStatus, CacheName, PushStatus, PushStatusReport, SiteName};

use crate::decision::{Decision, Ending, Note};
use crate::journal::Journal;
use crate::observe::{Observation, Sizes};
use crate::outcome::{Failure, Refusal};
use crate::plan::{CacheSelection, Plan, Sabotage, keycloak_line};
use crate::vocabulary::{Action, Probe, PushPhase, Side, Step, Verdict};

fn probes_for(caches: &[CacheName], make: impl Fn(CacheName) -> Probe) -> Vec<Probe> {
    caches.iter().cloned().map(make).collect()
}

fn poll(plan: &Plan, why: impl Into<String>) -> Decision {
    Decision::Wait { duration: plan.settings.poll_interval, why: why.into() }
}

/// The next thing to do.
pub fn decide(plan: &Plan, journal: &Journal, obs: &Observation) -> Decision {
    let step = journal.step;
    let timed = !matches!(step, Step::Preflight | Step::ScaleDown | Step::ScaleUp | Step::Report);
    if timed {
        let elapsed = Duration::from_millis(obs.now_ms.saturating_sub(journal.step_started_at_ms));
        if elapsed > plan.settings.step_deadline {
            return Decision::Finish(Ending::Failed(Failure::Deadline {
                step,
                after: plan.settings.step_deadline,
                why: pending(plan, journal),
            }));
        }
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
    let open: Vec<&str> = journal
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
        .map(CacheName::as_str)
        .collect();
    format!(
        "caches not done: {}; raise step_deadline ({:?}) if the data is just large",
        open.join(", "),
        plan.settings.step_deadline
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
        match active.sees(o) {
            Some(false) => {
                return Decision::Finish(Ending::Refused(Refusal::NoLink { from: a.clone(), to: o.clone() }));
            }
            None => {
                let warning = format!(
                    "the node answering for '{a}' is not a site master, so it cannot tell whether '{o}' is connected; the push will tell"
                );
                if !journal.warnings.contains(&warning) {
                    return Decision::Note(vec![Note::Warning(warning)]);
                }
            }
            Some(true) => {}
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
    Decision::Advance
}

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

fn keycloak_state<'o>(plan: &Plan, obs: &'o Observation) -> Result<Option<&'o crate::ports::KeycloakState>, Decision> {
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
    let mut settling = false;
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
        let settle_ms = plan.settings.poll_interval.as_millis() as u64;
        if progress.last_take_offline_ms.is_some_and(|at| obs.now_ms < at + settle_ms) {
            settling = true;
        } else {
            actions.push(Action::TakeOffline(cache.clone()));
        }
    }
    if !actions.is_empty() {
        return Decision::Act(actions);
    }
    if settling {
        return poll(plan, "take-offline to reach every node");
    }
    Decision::Advance
}

fn clear_caches(plan: &Plan, journal: &Journal, obs: &Observation) -> Decision {
    let todo: Vec<CacheName> = journal.caches.iter().filter(|c| !journal.cache(c).cleared).cloned().collect();
    if todo.is_empty() {
        return Decision::Advance;
    }
    if plan.sabotaged(Sabotage::ClearWithoutInterlock) {
        return Decision::Act(todo.into_iter().map(Action::Clear).collect());
    }
    let missing = obs.missing(probes_for(&todo, |cache| Probe::OfflineNodes { cache }));
    if !missing.is_empty() {
        return Decision::Observe(missing);
    }
    let mut actions = Vec::new();
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
        let settle_ms = plan.settings.poll_interval.as_millis() as u64;
        if progress.last_take_offline_ms.is_none_or(|at| obs.now_ms >= at + settle_ms) {
            actions.push(Action::TakeOffline(cache));
        }
    }
    if actions.is_empty() { poll(plan, "the backups to read offline before clearing") } else { Decision::Act(actions) }
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
    let mut wanted = vec![Probe::Site { side: Side::Active }];
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
    if active.sees(&plan.offline.name) == Some(false) {
        return poll(plan, "the cross-site link to come back before pushing");
    }
    let mut actions = Vec::new();
    let mut notes = Vec::new();
    for cache in todo {
        match push_report(obs, &cache, &plan.offline.name) {
            None => return poll(plan, "a readable push status"),
            // Someone's push is running (ours, if the answer to our start was lost): adopt it.
            Some(PushStatus::Sending) => notes.push(Note::AdoptPush(cache)),
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

fn await_push(plan: &Plan, journal: &Journal, obs: &Observation) -> Decision {
    if plan.sabotaged(Sabotage::ScaleUpBeforePushOk)
        && let Some(original) = journal.keycloak_original_instances
    {
        match keycloak_state(plan, obs) {
            Err(observe) => return observe,
            Ok(Some(state)) if state.spec_instances < original => return Decision::Act(vec![Action::ScaleUp(original)]),
            Ok(_) => {}
        }
    }
    let open: Vec<CacheName> =
        journal.caches.iter().filter(|c| !matches!(journal.cache(c).push, PushPhase::Ok | PushPhase::Done)).cloned().collect();
    if open.is_empty() {
        return Decision::Advance;
    }
    let mut wanted = vec![Probe::Site { side: Side::Active }];
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
    let offline = &plan.offline.name;
    // Without the link a push can only fail: do not spend attempts until it is back.
    let link_down = obs.sites[&Side::Active].sees(offline) == Some(false);
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
                PushStatus::Sending => notes.push(Note::AdoptPush(cache)),
                _ => actions.push(Action::ClearPushStatus(cache)),
            },
            PushPhase::Sending => match status {
                PushStatus::Ok => notes.push(Note::PushOk(cache)),
                PushStatus::Sending => {
                    let started = progress.push_started_at_ms.unwrap_or(obs.now_ms);
                    let overdue = obs.now_ms.saturating_sub(started) > plan.settings.push_deadline.as_millis() as u64;
                    // A start that failed with a server error leaves SENDING forever (checked on
                    // 16.0.7); a push past its deadline may be stuck the same way.
                    if progress.push_start_failed || overdue {
                        actions.push(Action::CancelPush(cache));
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
    // site's backup online, and it must stay so.
    for cache in &journal.caches {
        if obs.status.get(&(Side::Active, cache.clone())).is_some_and(|s| *s != BackupStatus::Online) {
            actions.push(Action::BringOnline(Side::Active, cache.clone()));
        }
    }
    if actions.is_empty() { poll_push(plan, journal, obs) } else { Decision::Act(actions) }
}

/// Polling a push costs the time between its OK and the next read, so the wait grows with the
/// push: 5% of the time it has run so far, at least 50 ms, at most `poll_interval`. A push that
/// takes seconds is seen finished within a few percent of the server's own time, and a long one
/// does not get read more often than configured.
fn poll_push(plan: &Plan, journal: &Journal, obs: &Observation) -> Decision {
    const FLOOR_MS: u64 = 50;
    let running_since = journal
        .caches
        .iter()
        .map(|c| journal.cache(c))
        .filter(|p| p.push == PushPhase::Sending)
        .filter_map(|p| p.push_started_at_ms)
        .min();
    let ceiling_ms = plan.settings.poll_interval.as_millis() as u64;
    let wait_ms = match running_since {
        Some(since) => (obs.now_ms.saturating_sub(since) / 20).max(FLOOR_MS).min(ceiling_ms),
        None => ceiling_ms,
    };
    Decision::Wait { duration: Duration::from_millis(wait_ms), why: "pushes to finish".into() }
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

/// The verdict for one cache from its sizes (and key counts, when compared).
pub fn verdict(sizes: &Sizes, keys: Option<&crate::observe::KeyCounts>, tolerance: u64) -> Verdict {
    let low = sizes.active_before.min(sizes.active_after);
    let high = sizes.active_before.max(sizes.active_after);
    let churn = high - low;
    let differ = match keys {
        Some(k) => k.only_active + k.only_offline,
        None => sizes.offline.abs_diff(sizes.active_after),
    };
    let within_range = sizes.offline + tolerance >= low && sizes.offline <= high + tolerance;
    if differ == 0 && churn == 0 {
        Verdict::Equal { entries: sizes.offline }
    } else if within_range && differ <= churn + tolerance {
        Verdict::Drift { active: sizes.active_after, offline: sizes.offline }
    } else {
        Verdict::Mismatch { active: sizes.active_after, offline: sizes.offline }
    }
}

fn verify(plan: &Plan, journal: &Journal, obs: &Observation) -> Decision {
    let open: Vec<CacheName> = journal.caches.iter().filter(|c| journal.cache(c).verdict.is_none()).cloned().collect();
    if open.is_empty() {
        return Decision::Advance;
    }
    let mut wanted = probes_for(&open, |cache| Probe::Sizes { cache });
    if plan.settings.verify_keys {
        wanted.extend(probes_for(&open, |cache| Probe::Keys { cache }));
    }
    let missing = obs.missing(wanted);
    if !missing.is_empty() {
        return Decision::Observe(missing);
    }
    let mut notes = Vec::new();
    for cache in open {
        let sizes = &obs.sizes[&cache];
        let verdict = verdict(sizes, obs.keys.get(&cache), plan.settings.drift_tolerance);
        if let Verdict::Mismatch { active, offline } = verdict {
            // Entries missing on the offline site are what a push that read OK while a node's
            // chunk failed looks like: push once more. Extra entries there cannot come from a
            // push (it never deletes); pushing again would not remove them.
            if offline < active && journal.cache(&cache).verify_repushes == 0 {
                notes.push(Note::Repush(cache));
                continue;
            }
            return Decision::Finish(Ending::Failed(Failure::VerifyMismatch { cache, active, offline }));
        }
        notes.push(Note::Verified(cache, verdict));
    }
    Decision::Note(notes)
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
        if let Verdict::Mismatch { active, offline } = verdict(&obs.sizes[cache], None, plan.settings.drift_tolerance) {
            if offline < active && journal.cache(cache).verify_repushes == 0 {
                notes.push(Note::Warning(format!(
                    "cache '{cache}' lost entries on the offline site after verification ({offline} of {active}); pushing it again"
                )));
                notes.push(Note::Repush(cache.clone()));
            } else {
                return Decision::Finish(Ending::Failed(Failure::VerifyMismatch { cache: cache.clone(), active, offline }));
            }
        }
    }
    if notes.is_empty() { Decision::Finish(Ending::Succeeded) } else { Decision::Note(notes) }
}
