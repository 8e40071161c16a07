//! The direction guard's judgement: which site is serving users, from each cache's write
//! counters read twice, a window apart, on both sites. A pure function of those readings, the
//! replication between the sites and what the offline site's Keycloak answers; `decide` acts
//! on it before anything changes.

use std::time::Duration;

use ispn_xsite::{CacheName, SiteName};

pub use crate::vocabulary::Counting;
use crate::vocabulary::{DirectionRecord, DirectionVerdict, SiteActivity, WriteSample, human_duration};

/// Caches Keycloak writes to on its own while no user does anything (cluster-wide tasks and
/// invalidations): never evidence of users.
pub const BOOKKEEPING_CACHES: [&str; 1] = ["work"];

/// One cache's readings on both sites.
#[derive(Debug, Clone)]
pub struct CacheReading {
    /// The cache.
    pub cache: CacheName,
    /// The active site's counters at the start and at the end of the window.
    pub active: (WriteSample, WriteSample),
    /// The offline site's.
    pub offline: (WriteSample, WriteSample),
    /// Whether the active site's backup to the offline site replicates: then its writes land on
    /// the offline site too, and are counted there.
    pub active_replicates: bool,
    /// Whether the offline site's backup to the active site replicates.
    pub offline_replicates: bool,
}

/// What the judgement is given besides the readings.
#[derive(Debug, Clone)]
pub struct Context {
    /// The active site.
    pub active: SiteName,
    /// The offline site.
    pub offline: SiteName,
    /// How the active site's counters count.
    pub active_counting: Counting,
    /// How the offline site's.
    pub offline_counting: Counting,
    /// The window between the two readings.
    pub window: Duration,
    /// The offline site's Keycloak's `/lb-check` answer, when configured.
    pub offline_lb_check: Option<u16>,
    /// Whether site-sync stops and starts the offline site's Keycloak.
    pub manages_offline_keycloak: bool,
    /// Whether the operator asked to go on against the evidence.
    pub overridden: bool,
}

/// Whether counters went back between the readings: a reset or a restarted node. Without
/// statistics, a size that shrank may be a restarted node too, and hides whatever was written.
fn reset(first: WriteSample, second: WriteSample) -> bool {
    match (first.writes, second.writes, first.since_reset_s, second.since_reset_s) {
        (Some(a), Some(b), _, _) if b < a => true,
        (Some(_), Some(_), Some(ra), Some(rb)) => rb < ra,
        _ => second.size < first.size,
    }
}

/// How many writes a site took during the window, with how they were counted; `Err` when that
/// cannot be told.
fn writes(first: WriteSample, second: WriteSample) -> Result<(u64, Option<&'static str>), &'static str> {
    let counted = match (first.writes, second.writes, first.since_reset_s, second.since_reset_s) {
        // Counters that went back, or a reset in between, say nothing about the window.
        (Some(a), Some(b), Some(ra), Some(rb)) if b >= a && rb >= ra => Some(b - a),
        (Some(a), Some(b), None, None) if b >= a => Some(b - a),
        _ => None,
    };
    // A size that grew is at least that many writes. One that did not tells nothing when updates
    // are not counted, and one that shrank may be a restarted node rather than users.
    let size_grew = second.size.saturating_sub(first.size);
    match counted {
        Some(n) => Ok((n, None)),
        None if size_grew > 0 => Ok((
            size_grew,
            Some(if first.writes.is_none() || second.writes.is_none() { "no statistics" } else { "statistics reset" }),
        )),
        None if first.writes.is_none() || second.writes.is_none() => Err("its statistics are off, and its size did not grow"),
        None => Err("its statistics were reset during the window, and its size did not grow"),
    }
}

/// A site's own writes out of `counted`, when `other_wrote` writes were replicated towards it:
/// only its site master receives them, and they can only be taken out when `other`'s count is
/// its whole site's.
fn own_writes(counted: u64, other_wrote: u64, me: Counting, other: Counting, other_site: &SiteName) -> Result<u64, String> {
    if !me.site_master {
        Ok(counted)
    } else if other.is_whole_site() {
        Ok(counted.saturating_sub(other_wrote))
    } else {
        Err(format!(
            "the writes {other_site} replicated into it cannot be told from its own: {other_site}'s counters are those of one of its {} nodes",
            other.nodes
        ))
    }
}

/// Judges the readings: see [`DirectionVerdict`].
pub fn judge(context: &Context, readings: &[CacheReading]) -> DirectionRecord {
    let mut active = SiteActivity { site: context.active.clone(), writes: Vec::new(), unknown: Vec::new() };
    let mut offline = SiteActivity { site: context.offline.clone(), writes: Vec::new(), unknown: Vec::new() };
    let mut counters_reset = false;
    for reading in readings {
        if BOOKKEEPING_CACHES.contains(&reading.cache.as_str()) {
            continue;
        }
        counters_reset |= reset(reading.active.0, reading.active.1) || reset(reading.offline.0, reading.offline.1);
        let cache = &reading.cache;
        let on_active = writes(reading.active.0, reading.active.1);
        let on_offline = writes(reading.offline.0, reading.offline.1);
        // Writes replicated from the other site are counted there too: take them out.
        let (own_active, own_offline) = match (&on_active, &on_offline) {
            (Ok((a, _)), Ok((o, _))) if reading.active_replicates && reading.offline_replicates => {
                if *a > 0 || *o > 0 {
                    let why = "it replicates both ways, so whose writes these are cannot be told".to_owned();
                    active.unknown.push((cache.clone(), why.clone()));
                    offline.unknown.push((cache.clone(), why));
                }
                (Some(0), Some(0))
            }
            (Ok((a, _)), Ok((o, _))) if reading.active_replicates => {
                match own_writes(*o, *a, context.offline_counting, context.active_counting, &context.active) {
                    Ok(o) => (Some(*a), Some(o)),
                    Err(why) => {
                        offline.unknown.push((cache.clone(), why));
                        (Some(*a), None)
                    }
                }
            }
            (Ok((a, _)), Ok((o, _))) if reading.offline_replicates => {
                match own_writes(*a, *o, context.active_counting, context.offline_counting, &context.offline) {
                    Ok(a) => (Some(a), Some(*o)),
                    Err(why) => {
                        active.unknown.push((cache.clone(), why));
                        (None, Some(*o))
                    }
                }
            }
            (a, o) => (a.as_ref().ok().map(|(n, _)| *n), o.as_ref().ok().map(|(n, _)| *n)),
        };
        // A quiet node of several is no evidence that its site is quiet.
        if own_offline == Some(0) && !context.offline_counting.is_whole_site() {
            let why = format!(
                "its counters are those of the node that answers, one of {}: writes through the others are not seen",
                context.offline_counting.nodes
            );
            offline.unknown.push((cache.clone(), why));
        }
        for (site, counted, own) in [(&mut active, &on_active, own_active), (&mut offline, &on_offline, own_offline)] {
            match (counted, own) {
                (Err(why), _) => site.unknown.push((cache.clone(), (*why).to_owned())),
                (Ok((_, Some(how))), Some(n)) if n > 0 => {
                    site.writes.push((cache.clone(), n));
                    site.unknown.push((cache.clone(), format!("counted by its size ({how})")));
                }
                (_, Some(n)) if n > 0 => site.writes.push((cache.clone(), n)),
                _ => {}
            }
        }
    }
    let seconds = human_duration(context.window);
    let o = &context.offline;
    let unmanaged_serving = !context.manages_offline_keycloak && context.offline_lb_check == Some(200);
    let verdict = if offline.total() > 0 {
        let active_quiet = active.total() == 0;
        let reason = if active_quiet {
            format!("{} in {seconds}; {}: {o} looks like the live site", offline.describe(), active.describe())
        } else {
            format!(
                "both sites took writes in {seconds} ({}; {}): {o} is serving users, whose logins in progress and lockouts it would lose",
                active.describe(),
                offline.describe()
            )
        };
        DirectionVerdict::Against { reason, active_quiet }
    } else if unmanaged_serving {
        DirectionVerdict::Against {
            reason: format!(
                "{o}'s Keycloak answers /lb-check 200 and site-sync does not stop it (keycloak.mode: already-stopped): it is in the load balancer or ready to be"
            ),
            active_quiet: active.total() == 0,
        }
    } else if let Some((cache, why)) = offline.unknown.first() {
        // A quiet offline site is only evidence where its writes could have been seen.
        DirectionVerdict::Inconclusive { reason: format!("{o}'s writes to {cache} cannot be counted: {why}") }
    } else if active.total() > 0 {
        DirectionVerdict::Agrees
    } else {
        DirectionVerdict::Inconclusive {
            reason: format!("no user wrote to either site; make sure {o} is out of the load balancer"),
        }
    };
    DirectionRecord {
        window_ms: u64::try_from(context.window.as_millis()).unwrap_or(u64::MAX),
        active,
        offline,
        offline_lb_check: context.offline_lb_check,
        verdict,
        overridden: context.overridden,
        counters_reset,
    }
}
