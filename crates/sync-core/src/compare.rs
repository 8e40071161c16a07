//! Key-by-key (or entry-by-entry) comparison of one cache on two sites, in bounded memory, and in
//! one pass over each site whether they agree or differ a little.
//!
//! Keys arrive from both sites as streams in hash order, not sorted, and there can be millions.
//! Each (key, value) pair is reduced to 64-bit fingerprints.
//!
//! - Pass 1 streams both sites at once, each into its own invertible Bloom lookup table (a
//!   "sketch": Eppstein, Goodrich, Uyeda and Varghese, *What's the difference?*, SIGCOMM 2011):
//!   every pair is added to three of its cells (a count and XORs of the key, the value and a check
//!   hash). Subtracting one site's sketch from the other's cancels every pair both hold and leaves
//!   only the pairs that differ, which peeling recovers as long as they are fewer than about 80%
//!   of the cells (160,000 with the default 6 MiB per site). Pass 1 alone then has every count
//!   and every differing key's fingerprint, whatever the size of the cache.
//! - A second pass, over keys only, runs only to fetch sample key names for the report.
//! - Sites too different for the sketch (more differing pairs than it recovers) fall back to an
//!   exact comparison: the active site's pairs, 16 bytes each and sorted, matched against the
//!   offline site's stream; when they exceed the budget, the key space is split over several
//!   passes, memory staying at the budget and time growing.
//!
//! Two distinct keys with one 64-bit fingerprint would count as one: about 3 in a million at 10M
//! keys, 3 in 10^10 at 100k (Keycloak-sized caches). Accepted at those odds: exact keys would
//! cost memory in proportion to key length, which the budget exists to avoid.

use std::collections::{BTreeMap, BTreeSet};
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
    /// Keys (`?action=keys`), then each value as the server stores it, key by key: for caches
    /// whose values the server cannot render in a listing.
    StoredEntries,
}

/// Stored values read at once, per site, in [`CompareMode::StoredEntries`].
const STORED_READS_IN_FLIGHT: usize = 32;

fn fingerprint_bytes(bytes: &[u8]) -> u64 {
    let mut hasher = DefaultHasher::new();
    bytes.hash(&mut hasher);
    hasher.finish()
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
    /// Cells of each of a sketch's three tables (32 bytes each, per site): it recovers up to about
    /// 2.4 times this many differing pairs.
    pub sketch: usize,
    /// Pairs held in memory at once by the exact comparison (16 bytes each).
    pub budget: usize,
    /// Sample keys to report per kind.
    pub sample: usize,
}

impl Default for CompareLimits {
    fn default() -> Self {
        // 2^16 cells: 6 MiB per site, ~160k differences; 2M pairs: 32 MiB.
        Self { sketch: 1 << 16, budget: 2_000_000, sample: 5 }
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

/// One cell of a sketch: how many pairs (added minus removed) and the XOR of their key
/// fingerprints, value fingerprints and check hashes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Cell {
    count: i64,
    keys: u64,
    values: u64,
    checks: u64,
}

impl Cell {
    fn apply(&mut self, key: u64, value: u64, check: u64, sign: i64) {
        self.count += sign;
        self.keys ^= key;
        self.values ^= value;
        self.checks ^= check;
    }

    /// Holds exactly one pair (added or removed): its check hash matches its key and value.
    fn pure(&self) -> bool {
        self.count.abs() == 1 && pair_hash(self.keys, self.values) == self.checks
    }
}

/// An invertible Bloom lookup table of (key, value) fingerprint pairs in three tables.
struct Sketch {
    cells: Vec<Cell>,
    table: usize,
    /// Pairs inserted but not yet placed (see [`Sketch::place_pending`]).
    pending: Vec<(u64, u64)>,
}

impl Sketch {
    /// Pairs placed together.
    const GROUP: usize = 32;

    fn new(table: usize) -> Self {
        let table = table.max(1);
        Self { cells: vec![Cell::default(); 3 * table], table, pending: Vec::with_capacity(Self::GROUP) }
    }

    fn cells_of(&self, check: u64) -> [usize; 3] {
        [0u64, 1, 2].map(|j| {
            let spread = mix(check ^ (j + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            // The high half of a 128-bit product maps the hash onto the table without a division.
            j as usize * self.table + ((u128::from(spread) * self.table as u128) >> 64) as usize
        })
    }

    fn insert(&mut self, key: u64, value: u64) {
        self.pending.push((key, value));
        if self.pending.len() == Self::GROUP {
            self.place_pending();
        }
    }

    /// Places the pending pairs with all their cells computed before any is touched: the table is
    /// larger than the CPU's caches, and an entry's three cells are misses the CPU can wait for
    /// together only when nothing else comes between them.
    fn place_pending(&mut self) {
        let mut placed = [(0u64, [0usize; 3]); Self::GROUP];
        for (slot, (key, value)) in placed.iter_mut().zip(&self.pending) {
            let check = pair_hash(*key, *value);
            *slot = (check, self.cells_of(check));
        }
        for ((check, cells), (key, value)) in placed.iter().zip(&self.pending) {
            for i in cells {
                self.cells[*i].apply(*key, *value, *check, 1);
            }
        }
        self.pending.clear();
    }

    /// Removes every pair of `other`: what is left are the pairs only one of them holds.
    fn subtract(&mut self, mut other: Self) {
        self.place_pending();
        other.place_pending();
        for (mine, theirs) in self.cells.iter_mut().zip(&other.cells) {
            mine.apply(theirs.keys, theirs.values, theirs.checks, -theirs.count);
        }
    }

    /// The pairs left, each with +1 (only in this sketch) or -1 (only in the subtracted one);
    /// `None` when they are too many to peel apart.
    fn decode(mut self) -> Option<Vec<(u64, u64, i64)>> {
        let mut pure: Vec<usize> = (0..self.cells.len()).filter(|i| self.cells[*i].pure()).collect();
        let mut pairs = Vec::new();
        while let Some(i) = pure.pop() {
            let cell = self.cells[i];
            if !cell.pure() {
                continue;
            }
            pairs.push((cell.keys, cell.values, cell.count));
            for j in self.cells_of(cell.checks) {
                self.cells[j].apply(cell.keys, cell.values, cell.checks, -cell.count);
                if self.cells[j].pure() {
                    pure.push(j);
                }
            }
        }
        self.cells.iter().all(|c| *c == Cell::default()).then_some(pairs)
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
async fn stream_of<'a, S: SiteApi>(
    site: &'a S,
    cache: &'a CacheName,
    mode: CompareMode,
) -> Result<futures::stream::BoxStream<'a, Result<(String, u64), Error>>, Error> {
    Ok(match mode {
        CompareMode::Keys => site.keys(cache).await?.map(|k| k.map(|k| (k, 0))).boxed(),
        CompareMode::Entries => {
            site.entries(cache).await?.map(|e| e.map(|Entry { key, value }| (key, fingerprint(&value)))).boxed()
        }
        // A key listed and gone before its value is read was removed meanwhile: it is left out,
        // as a listing a moment later would have; a second read tells such traffic apart.
        CompareMode::StoredEntries => site
            .keys(cache)
            .await?
            .map(move |key| async move {
                let key = key?;
                let stored = site.stored_value(cache, &key).await?;
                Ok(stored.map(|bytes| (key, fingerprint_bytes(&bytes))))
            })
            .buffer_unordered(STORED_READS_IN_FLIGHT)
            .filter_map(|read: Result<Option<(String, u64)>, Error>| async move { read.transpose() })
            .boxed(),
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
    let (mut sketch, mut offline_sketch) = (Sketch::new(limits.sketch), Sketch::new(limits.sketch));
    let mut result = Comparison { passes: 1, ..Comparison::default() };
    // Both sites stream at once: each server serializes its entries while the other does.
    let (active_keys, offline_keys) = (&mut result.active, &mut result.offline);
    let (read_active, read_offline) = futures::join!(
        each_pair(active, Side::Active, cache, mode, |key, value, _| {
            *active_keys += 1;
            sketch.insert(key, value);
        }),
        each_pair(offline, Side::Offline, cache, mode, |key, value, _| {
            *offline_keys += 1;
            offline_sketch.insert(key, value);
        }),
    );
    read_active?;
    read_offline?;
    sketch.subtract(offline_sketch);
    let Some(pairs) = sketch.decode() else {
        return exact(active, offline, cache, mode, limits, result).await;
    };
    // A key both sites hold with other values is left twice: once from each side.
    let mut sides: BTreeMap<u64, (bool, bool)> = BTreeMap::new();
    for (key, _, sign) in pairs {
        let seen = sides.entry(key).or_default();
        if sign > 0 { seen.0 = true } else { seen.1 = true }
    }
    let mut wanted: BTreeMap<u64, Difference> = BTreeMap::new();
    for (key, seen) in sides {
        let kind = match seen {
            (true, true) => Difference::Value,
            (true, false) => Difference::OnlyActive,
            _ => Difference::OnlyOffline,
        };
        match kind {
            Difference::Value => result.different_values += 1,
            Difference::OnlyActive => result.only_active += 1,
            Difference::OnlyOffline => result.only_offline += 1,
        }
        remember(&mut result.differing, key, kind);
        wanted.insert(key, kind);
    }
    if wanted.is_empty() || limits.sample == 0 {
        return Ok(result);
    }
    result.passes = 2;
    sample_names(active, offline, cache, &wanted, limits.sample, &mut result).await?;
    Ok(result)
}

/// A pass over the keys of both sites (at once) that picks up to `sample` names of each kind of
/// difference, by fingerprint; it stops reading a site as soon as it has what it needs there.
async fn sample_names<S: SiteApi>(
    active: &S,
    offline: &S,
    cache: &CacheName,
    wanted: &BTreeMap<u64, Difference>,
    sample: usize,
    result: &mut Comparison,
) -> Result<(), (Side, Error)> {
    let available = |kind: Difference| wanted.values().filter(|k| **k == kind).count().min(sample);
    let (on_active, values, on_offline) =
        (available(Difference::OnlyActive), available(Difference::Value), available(Difference::OnlyOffline));
    let (from_active, from_offline) = futures::join!(
        pick(active, Side::Active, cache, wanted, &[Difference::OnlyActive, Difference::Value], (sample, on_active + values)),
        pick(offline, Side::Offline, cache, wanted, &[Difference::OnlyOffline], (sample, on_offline)),
    );
    for (kind, key) in from_active?.into_iter().chain(from_offline?) {
        match kind {
            Difference::OnlyActive => result.sample_only_active.push(key),
            Difference::OnlyOffline => result.sample_only_offline.push(key),
            Difference::Value => result.sample_different.push(key),
        }
    }
    Ok(())
}

/// Reads `site`'s keys until it has picked `goal` names of the `kinds` wanted, at most `sample`
/// of each kind.
async fn pick<S: SiteApi>(
    site: &S,
    side: Side,
    cache: &CacheName,
    wanted: &BTreeMap<u64, Difference>,
    kinds: &[Difference],
    (sample, goal): (usize, usize),
) -> Result<Vec<(Difference, String)>, (Side, Error)> {
    let mut picked: Vec<(Difference, String)> = Vec::new();
    if goal == 0 {
        return Ok(picked);
    }
    let mut stream = stream_of(site, cache, CompareMode::Keys).await.map_err(|e| (side, e))?;
    while let Some(item) = stream.next().await {
        let (key, _) = item.map_err(|e| (side, e))?;
        let Some(kind) = wanted.get(&fingerprint(&key)).filter(|k| kinds.contains(k)) else { continue };
        if picked.iter().filter(|(k, _)| k == kind).count() < sample {
            picked.push((*kind, key));
            if picked.len() == goal {
                break;
            }
        }
    }
    Ok(picked)
}

/// The comparison of sites too different for a sketch: the active site's pairs (a share of the
/// key space per pass, within the budget) matched against the offline site's stream.
async fn exact<S: SiteApi>(
    active: &S,
    offline: &S,
    cache: &CacheName,
    mode: CompareMode,
    limits: CompareLimits,
    mut result: Comparison,
) -> Result<Comparison, (Side, Error)> {
    let passes = result.active.div_ceil(limits.budget.max(1) as u64).max(1);
    result.passes += passes as u32;
    let mut unmatched_sample: Vec<u64> = Vec::new();
    for pass in 0..passes {
        let mine = |key: u64| key % passes == pass;
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

/// A comparison and how it was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compared {
    /// What was compared: [`VerifyLevel::Entries`], or what it fell back to.
    pub level: VerifyLevel,
    /// The comparison.
    pub comparison: Comparison,
    /// Why the values could not be read, when only the keys were compared.
    pub unreadable: Option<String>,
}

/// Compares `cache`'s keys and values. A server that cannot render some values in a listing
/// (16.0.x cuts the listing of Keycloak's authentication sessions) still serves each value as it
/// stores it: those bytes are compared, key by key; failing that, the keys, saying why.
pub async fn compare_values<S: SiteApi>(
    active: &S,
    offline: &S,
    cache: &CacheName,
    limits: CompareLimits,
) -> Result<Compared, (Side, Error)> {
    // Only a server that failed to produce the answer may serve another form of the data; one
    // out of reach, too slow or refusing the caller is reported as it is, at once.
    let (side, error) = match compare(active, offline, cache, CompareMode::Entries, limits).await {
        Ok(comparison) => return Ok(Compared { level: VerifyLevel::Entries, comparison, unreadable: None }),
        Err(failed) if !failed.1.is_failed_answer() => return Err(failed),
        Err(failed) => failed,
    };
    let (stored_side, stored_error) = match compare(active, offline, cache, CompareMode::StoredEntries, limits).await {
        Ok(comparison) => return Ok(Compared { level: VerifyLevel::StoredEntries, comparison, unreadable: None }),
        Err(failed) if !failed.1.is_failed_answer() => return Err(failed),
        Err(failed) => failed,
    };
    match compare(active, offline, cache, CompareMode::Keys, limits).await {
        Ok(comparison) => Ok(Compared {
            level: VerifyLevel::KeysOnly,
            comparison,
            unreadable: Some(format!("{side} site: {error}; read key by key: {stored_side} site: {stored_error}")),
        }),
        // The keys cannot be read either: the first failure is the one to report.
        Err(_) => Err((side, error)),
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
    // A verdict counts differences; it names no keys.
    let limits = CompareLimits { sample: 0, ..CompareLimits::default() };
    let Compared { level, comparison: first, unreadable } = match level {
        VerifyLevel::Entries => compare_values(active, offline, cache, limits).await?,
        _ => Compared { level, comparison: compare(active, offline, cache, CompareMode::Keys, limits).await?, unreadable: None },
    };
    let mode = match level {
        VerifyLevel::Entries => CompareMode::Entries,
        VerifyLevel::StoredEntries => CompareMode::StoredEntries,
        _ => CompareMode::Keys,
    };
    let mut check = if first.is_equal() {
        content_check(level, &first, None)
    } else {
        pause.await;
        let second = compare(active, offline, cache, mode, limits).await?;
        content_check(level, &first, Some(&second))
    };
    check.unreadable = unreadable;
    Ok(check)
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
            unreadable: None,
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
        unreadable: None,
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
