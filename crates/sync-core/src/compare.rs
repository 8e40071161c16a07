//! Key-by-key (or entry-by-entry) comparison of one cache on two sites, in bounded memory.
//!
//! Keys arrive from both sites as streams in hash order, not sorted, and there can be millions.
//! The active site's keys are reduced to 64-bit fingerprints (16 bytes per entry with the value's
//! fingerprint), sorted, and the offline site's stream is checked against them. When a cache is
//! larger than the memory budget, the key space is split by fingerprint into passes, each pass
//! streaming both sites again and keeping only its share: memory stays at the budget, time grows.
//! Sample key names for the report come from a last pass over the streams.
//!
//! Two distinct keys with one 64-bit fingerprint would count as one: about 3 in a million at 10M
//! keys, 3 in 10^10 at 100k (Keycloak-sized caches). Accepted at those odds: exact keys would
//! cost memory in proportion to key length, which the budget exists to avoid.

use std::hash::{DefaultHasher, Hash, Hasher};

use futures::StreamExt;
use ispn_xsite::{CacheName, Entry, Error, SiteApi};
use serde::{Deserialize, Serialize};

use crate::vocabulary::Side;

/// What to compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareMode {
    /// Keys only (`?action=keys`).
    Keys,
    /// Keys and values (`?action=entries`).
    Entries,
}

/// The result of comparing one cache.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Comparison {
    /// Keys on the active site.
    pub active: u64,
    /// Keys on the offline site.
    pub offline: u64,
    /// Keys only the active site has.
    pub only_active: u64,
    /// Keys only the offline site has.
    pub only_offline: u64,
    /// Keys on both sites with different values (entries mode).
    pub different_values: u64,
    /// Up to `sample` keys of each kind, for the report.
    pub sample_only_active: Vec<String>,
    /// See `sample_only_active`.
    pub sample_only_offline: Vec<String>,
    /// See `sample_only_active`.
    pub sample_different: Vec<String>,
    /// Passes over the streams that the memory budget required.
    pub passes: u32,
}

impl Comparison {
    /// Whether the two sites hold the same keys (and values, in entries mode).
    pub fn is_equal(&self) -> bool {
        self.only_active == 0 && self.only_offline == 0 && self.different_values == 0
    }
}

/// Limits of a comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompareLimits {
    /// Fingerprints held in memory at once (16 bytes each).
    pub budget: usize,
    /// Sample keys to report per kind.
    pub sample: usize,
}

impl Default for CompareLimits {
    fn default() -> Self {
        // 2M entries: 32 MiB of fingerprints.
        Self { budget: 2_000_000, sample: 5 }
    }
}

fn fingerprint(text: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    text.hash(&mut hasher);
    hasher.finish()
}

/// One pass's share of the active site: (key fingerprint, value fingerprint) pairs, sorted, with a
/// directory on the top bits of the key fingerprint. Fingerprints are uniform, so a directory of
/// n/4 buckets puts about four pairs (one cache line) in each: a lookup costs two memory reads
/// where a binary search over tens of MiB missed the cache on most of its ~20 steps (the profile
/// of a 10M-key diff had half its time on those misses).
struct ActiveShare {
    prints: Vec<(u64, u64)>,
    starts: Vec<u32>,
    shift: u32,
}

impl ActiveShare {
    fn new(mut prints: Vec<(u64, u64)>) -> Self {
        prints.sort_unstable();
        let buckets = (prints.len() / 4).max(1).next_power_of_two();
        let shift = 64 - buckets.trailing_zeros();
        let mut starts = vec![0u32; buckets + 1];
        for (fp, _) in &prints {
            starts[Self::bucket(*fp, shift) + 1] += 1;
        }
        for i in 1..starts.len() {
            starts[i] += starts[i - 1];
        }
        Self { prints, starts, shift }
    }

    fn bucket(fp: u64, shift: u32) -> usize {
        // A shift of 64 (a single bucket) is not defined for `>>`.
        fp.checked_shr(shift).unwrap_or(0) as usize
    }

    /// The index of `fp` in `prints`, if the active site has it.
    fn find(&self, fp: u64) -> Option<usize> {
        let b = Self::bucket(fp, self.shift);
        let (start, end) = (self.starts[b] as usize, self.starts[b + 1] as usize);
        self.prints[start..end].iter().position(|(f, _)| *f == fp).map(|i| start + i)
    }
}

/// Streams `cache` as (key, value fingerprint) pairs; keys mode has no values.
async fn stream_of<S: SiteApi>(
    site: &S,
    cache: &CacheName,
    mode: CompareMode,
) -> Result<futures::stream::BoxStream<'static, Result<(String, u64), Error>>, Error> {
    Ok(match mode {
        CompareMode::Keys => site.keys(cache).await?.map(|k| k.map(|k| (k, 0))).boxed(),
        CompareMode::Entries => {
            site.entries(cache).await?.map(|e| e.map(|Entry { key, value }| (key, fingerprint(&value)))).boxed()
        }
    })
}

/// Compares `cache` on both sites. Errors name the site that failed.
pub async fn compare<S: SiteApi>(
    active: &S,
    offline: &S,
    cache: &CacheName,
    mode: CompareMode,
    limits: CompareLimits,
) -> Result<Comparison, (Side, Error)> {
    let expected = active.size(cache).await.map_err(|e| (Side::Active, e))?;
    let budget = limits.budget.max(1) as u64;
    let passes = expected.div_ceil(budget).max(1);
    let mut result = Comparison { passes: passes as u32, ..Comparison::default() };
    let mut unmatched_sample: Vec<u64> = Vec::new();
    for pass in 0..passes {
        let mine = |fp: u64| fp % passes == pass;
        let mut prints: Vec<(u64, u64)> = Vec::new();
        let mut stream = stream_of(active, cache, mode).await.map_err(|e| (Side::Active, e))?;
        while let Some(item) = stream.next().await {
            let (key, value) = item.map_err(|e| (Side::Active, e))?;
            if pass == 0 {
                result.active += 1;
            }
            let fp = fingerprint(&key);
            if mine(fp) {
                prints.push((fp, value));
            }
        }
        let share = ActiveShare::new(prints);
        let mut matched = vec![false; share.prints.len()];
        let mut stream = stream_of(offline, cache, mode).await.map_err(|e| (Side::Offline, e))?;
        while let Some(item) = stream.next().await {
            let (key, value) = item.map_err(|e| (Side::Offline, e))?;
            if pass == 0 {
                result.offline += 1;
            }
            let fp = fingerprint(&key);
            if !mine(fp) {
                continue;
            }
            match share.find(fp) {
                Some(i) => {
                    matched[i] = true;
                    if mode == CompareMode::Entries && share.prints[i].1 != value {
                        result.different_values += 1;
                        if result.sample_different.len() < limits.sample {
                            result.sample_different.push(key);
                        }
                    }
                }
                None => {
                    result.only_offline += 1;
                    if result.sample_only_offline.len() < limits.sample {
                        result.sample_only_offline.push(key);
                    }
                }
            }
        }
        for (i, seen) in matched.iter().enumerate() {
            if !seen {
                result.only_active += 1;
                if unmatched_sample.len() < limits.sample {
                    unmatched_sample.push(share.prints[i].0);
                }
            }
        }
    }
    if !unmatched_sample.is_empty() {
        let mut stream = stream_of(active, cache, CompareMode::Keys).await.map_err(|e| (Side::Active, e))?;
        while let Some(item) = stream.next().await {
            let (key, _) = item.map_err(|e| (Side::Active, e))?;
            if unmatched_sample.contains(&fingerprint(&key)) {
                result.sample_only_active.push(key);
                if result.sample_only_active.len() == unmatched_sample.len() {
                    break;
                }
            }
        }
    }
    Ok(result)
}
