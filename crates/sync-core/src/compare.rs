//! Key-by-key (or entry-by-entry) comparison of one cache on two sites, in bounded memory, and in
//! one pass over each site when they agree.
//!
//! Keys arrive from both sites as streams in hash order, not sorted, and there can be millions.
//! Each (key, value) pair is reduced to 64-bit fingerprints.
//!
//! - Pass 1 streams both sites at once and sums, per site and per bucket of the key space (the
//!   top bits of the key's fingerprint), a 64-bit hash of every pair. Buckets whose sums agree
//!   hold the same pairs on both sites; two different sets of pairs summing alike has odds of
//!   2^-64 per bucket. Sites that agree are done here, at 16 bytes per bucket (both sites) and
//!   about four keys per bucket.
//! - Pass 2 runs only when buckets differ: it streams both sites again, keeps the active site's
//!   pairs of the differing buckets only (16 bytes each, sorted) and matches the offline site's
//!   against them. Memory follows the differences, not the cache; when they exceed the budget,
//!   the differing buckets are split over several passes.
//! - Sample key names of keys only the active site has come from a last pass over its keys.
//!
//! Two distinct keys with one 64-bit fingerprint would count as one: about 3 in a million at 10M
//! keys, 3 in 10^10 at 100k (Keycloak-sized caches). Accepted at those odds: exact keys would
//! cost memory in proportion to key length, which the budget exists to avoid.

use std::collections::BTreeSet;
use std::future::Future;
use std::hash::{DefaultHasher, Hash, Hasher};

use futures::StreamExt;
use ispn_xsite::{CacheName, Entry, Error, SiteApi};
use serde::{Deserialize, Serialize};

use crate::observe::ContentCheck;
use crate::vocabulary::{Side, VerifyLevel};

/// What to compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareMode {
    /// Keys only (`?action=keys`).
    Keys,
    /// Keys and values (`?action=entries`).
    Entries,
}

/// How a key differs between the sites.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Difference {
    /// Only the active site has it.
    OnlyActive,
    /// Only the offline site has it.
    OnlyOffline,
    /// Both have it, with different values.
    Value,
}

/// Differing keys remembered (by fingerprint) for a second read to confirm: 1.6 MiB at most.
const REMEMBERED: usize = 100_000;

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
    /// Passes over each site's stream.
    pub passes: u32,
    /// The differing keys by fingerprint, for a second read to confirm; complete unless there
    /// were more than it keeps.
    #[serde(skip)]
    pub differing: Vec<(u64, Difference)>,
}

impl Comparison {
    /// Whether the two sites hold the same keys (and values, in entries mode).
    pub fn is_equal(&self) -> bool {
        self.only_active == 0 && self.only_offline == 0 && self.different_values == 0
    }

    fn differences(&self) -> u64 {
        self.only_active + self.only_offline + self.different_values
    }

    /// Whether `differing` holds every difference.
    fn complete(&self) -> bool {
        self.differing.len() as u64 == self.differences()
    }
}

/// Limits of a comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompareLimits {
    /// Pairs of differing buckets held in memory at once (16 bytes each).
    pub budget: usize,
    /// Sample keys to report per kind.
    pub sample: usize,
}

impl Default for CompareLimits {
    fn default() -> Self {
        // 2M pairs: 32 MiB.
        Self { budget: 2_000_000, sample: 5 }
    }
}

fn fingerprint(text: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    text.hash(&mut hasher);
    hasher.finish()
}

/// SplitMix64's finalizer: spreads a pair of fingerprints over all 64 bits, so that sums of
/// them cancel only for equal pairs.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn pair_hash(key: u64, value: u64) -> u64 {
    mix(key ^ mix(value.wrapping_add(0x9E37_79B9_7F4A_7C15)))
}

/// One site's buckets in pass 1: a power of two, about four keys each, between 2^10 and 2^21
/// (16 MiB).
struct Buckets {
    sums: Vec<u64>,
    shift: u32,
}

impl Buckets {
    fn for_keys(expected: u64) -> Self {
        let count = (expected / 4).next_power_of_two().clamp(1 << 10, 1 << 21);
        Self { sums: vec![0; count as usize], shift: 64 - count.trailing_zeros() }
    }

    fn of(&self, key: u64) -> usize {
        (key >> self.shift) as usize
    }

    fn add(&mut self, key: u64, value: u64) {
        let b = self.of(key);
        self.sums[b] = self.sums[b].wrapping_add(pair_hash(key, value));
    }

    /// Per bucket, whether the other site's pairs sum differently.
    fn differing_from(&self, other: &Self) -> Vec<bool> {
        self.sums.iter().zip(&other.sums).map(|(a, b)| a != b).collect()
    }
}

/// One pass's share of the active site: (key fingerprint, value fingerprint) pairs, sorted, with a
/// directory on the top bits of the key fingerprint. Fingerprints are uniform, so a directory of
/// n/4 buckets puts about four pairs (one cache line) in each: a lookup costs two memory reads
/// where a binary search over tens of MiB missed the cache on most of its ~20 steps.
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

/// Runs `each` on every (key fingerprint, value fingerprint, key) of one site's stream.
async fn each_pair<S: SiteApi>(
    site: &S,
    side: Side,
    cache: &CacheName,
    mode: CompareMode,
    mut each: impl FnMut(u64, u64, String),
) -> Result<(), (Side, Error)> {
    let mut stream = stream_of(site, cache, mode).await.map_err(|e| (side, e))?;
    while let Some(item) = stream.next().await {
        let (key, value) = item.map_err(|e| (side, e))?;
        each(fingerprint(&key), value, key);
    }
    Ok(())
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
    let (mut buckets, mut offline_sums) = (Buckets::for_keys(expected), Buckets::for_keys(expected));
    let mut result = Comparison { passes: 1, ..Comparison::default() };
    // Both sites stream at once: each server serializes its entries while the other does.
    let (active_keys, offline_keys) = (&mut result.active, &mut result.offline);
    let (read_active, read_offline) = futures::join!(
        each_pair(active, Side::Active, cache, mode, |key, value, _| {
            *active_keys += 1;
            buckets.add(key, value);
        }),
        each_pair(offline, Side::Offline, cache, mode, |key, value, _| {
            *offline_keys += 1;
            offline_sums.add(key, value);
        }),
    );
    read_active?;
    read_offline?;
    let differing = buckets.differing_from(&offline_sums);
    let differing_count = differing.iter().filter(|d| **d).count() as u64;
    if differing_count == 0 {
        return Ok(result);
    }

    // Pairs expected in the differing buckets: their share of the larger site.
    let per_bucket = result.active.max(result.offline).div_ceil(differing.len() as u64);
    let passes = (differing_count * per_bucket).div_ceil(limits.budget.max(1) as u64).max(1);
    result.passes = 1 + passes as u32;
    let mut unmatched_sample: Vec<u64> = Vec::new();
    for pass in 0..passes {
        let mine = |key: u64| {
            let b = buckets.of(key);
            differing[b] && b as u64 % passes == pass
        };
        let mut prints: Vec<(u64, u64)> = Vec::new();
        each_pair(active, Side::Active, cache, mode, |key, value, _| {
            if mine(key) {
                prints.push((key, value));
            }
        })
        .await?;
        let share = ActiveShare::new(prints);
        let mut matched = vec![false; share.prints.len()];
        each_pair(offline, Side::Offline, cache, mode, |key, value, text| {
            if !mine(key) {
                return;
            }
            match share.find(key) {
                Some(i) => {
                    matched[i] = true;
                    if mode == CompareMode::Entries && share.prints[i].1 != value {
                        result.different_values += 1;
                        remember(&mut result.differing, key, Difference::Value);
                        if result.sample_different.len() < limits.sample {
                            result.sample_different.push(text);
                        }
                    }
                }
                None => {
                    result.only_offline += 1;
                    remember(&mut result.differing, key, Difference::OnlyOffline);
                    if result.sample_only_offline.len() < limits.sample {
                        result.sample_only_offline.push(text);
                    }
                }
            }
        })
        .await?;
        for (i, seen) in matched.iter().enumerate() {
            if !seen {
                result.only_active += 1;
                remember(&mut result.differing, share.prints[i].0, Difference::OnlyActive);
                if unmatched_sample.len() < limits.sample {
                    unmatched_sample.push(share.prints[i].0);
                }
            }
        }
    }
    if !unmatched_sample.is_empty() {
        result.passes += 1;
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

fn remember(differing: &mut Vec<(u64, Difference)>, key: u64, kind: Difference) {
    if differing.len() < REMEMBERED {
        differing.push((key, kind));
    }
}

/// Compares `cache` at `level` (keys, or keys and values) and, when the sites differ, once more
/// after `pause`: only differences both reads show count (see [`content_check`]).
pub async fn check_content<S: SiteApi>(
    active: &S,
    offline: &S,
    cache: &CacheName,
    level: VerifyLevel,
    pause: impl Future<Output = ()>,
) -> Result<ContentCheck, (Side, Error)> {
    let mode = if level == VerifyLevel::Entries { CompareMode::Entries } else { CompareMode::Keys };
    let first = compare(active, offline, cache, mode, CompareLimits::default()).await?;
    if first.is_equal() {
        return Ok(content_check(level, &first, None));
    }
    pause.await;
    let second = compare(active, offline, cache, mode, CompareLimits::default()).await?;
    Ok(content_check(level, &first, Some(&second)))
}

/// What two reads of a cache's content agree on. Live traffic between (or during) the reads
/// shows up as differences on one read only; differences both reads show are real. When a read
/// found more differences than it remembers, all of the second read's count as real.
pub fn content_check(level: VerifyLevel, first: &Comparison, second: Option<&Comparison>) -> ContentCheck {
    let Some(second) = second else {
        return ContentCheck {
            level,
            active: first.active,
            offline: first.offline,
            only_active: first.only_active,
            only_offline: first.only_offline,
            different_values: first.different_values,
            transient: 0,
        };
    };
    let mut check = ContentCheck {
        level,
        active: second.active,
        offline: second.offline,
        only_active: 0,
        only_offline: 0,
        different_values: 0,
        transient: 0,
    };
    if !(first.complete() && second.complete()) {
        check.only_active = second.only_active;
        check.only_offline = second.only_offline;
        check.different_values = second.different_values;
        return check;
    }
    let seen_first: BTreeSet<u64> = first.differing.iter().map(|(key, _)| *key).collect();
    let mut both = 0;
    for (key, kind) in &second.differing {
        if !seen_first.contains(key) {
            continue;
        }
        both += 1;
        match kind {
            Difference::OnlyActive => check.only_active += 1,
            Difference::OnlyOffline => check.only_offline += 1,
            Difference::Value => check.different_values += 1,
        }
    }
    check.transient = first.differences() + second.differences() - 2 * both;
    check
}
