//! Fixed-capacity hash table in shared memory, one lock per bucket of
//! [`BUCKET`] slots.
//!
//! A key hashes to one bucket: a process-shared robust mutex, then one tag
//! byte per slot, then the slots. The mutex and the tags share the
//! bucket's first cache line, so taking the lock also brings in the tags;
//! a lookup compares all the tags at once (a tag is 7 bits of the key's
//! hash) and reads only the slots whose tag matches, which is one slot
//! for a known key and, seven times in eight, none for an unknown one.
//! A check therefore costs the bucket's first cache line and its slot's
//! (one or two lines), however large a slot is, and never waits for an
//! unrelated bucket. The bucket is picked with a multiply and a shift
//! (Lemire's fast range reduction), not a division.
//!
//! When a bucket is full, the least useful entry is replaced (each value
//! type ranks itself through [`Retention`]); entries that must not be lost
//! (active bans) are never replaced, and a bucket full of them is reported
//! as [`TableError::Full`] so the caller can count and log it.
//!
//! The capacity is exactly what was asked for: the buckets hold a
//! multiple of [`BUCKET`] slots, and the few slots beyond the capacity are
//! disabled, spread over the buckets.

use std::hash::Hash;
use std::io;

use ahash::RandomState;

use crate::shm::{LockOutcome, Locked, LockedGuard, Region};

use super::stats::Counter;

/// Slots per bucket, and so the most slots one operation reads.
pub const BUCKET: usize = 16;

/// Tag of a free slot.
const EMPTY: u8 = 0;
/// Tag of a slot beyond the capacity: never matched, never filled.
const DISABLED: u8 = 1;
/// Set in the tag of every used slot.
const USED: u8 = 0x80;

/// How much an entry is worth keeping, as seen by the table at `now`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Retention {
    /// Expired or empty of meaning: may be reused at once.
    Free,
    /// May be evicted; lower values go first (typically last-seen time).
    Evictable(u64),
    /// Must never be evicted (an active ban).
    Pinned,
}

/// Value types stored in a [`Table`].
pub trait Entry: Copy + Default + Send + crate::shm::ShmSafe + 'static {
    /// What, besides the time, judging an entry needs (window lengths
    /// from the configuration); kept by the table, not in every slot.
    type Ctx: Copy + Send + Sync + 'static;
    /// The time as judging needs it, worked out once per table operation
    /// rather than once per slot looked at.
    type Clock;
    fn clock(now_us: u64, ctx: &Self::Ctx) -> Self::Clock;
    fn retention(&self, clock: &Self::Clock) -> Retention;
}

/// The value first: a rate-limit key is 256 bytes, and with the key first
/// its state would sit four cache lines past the key's first bytes.
#[derive(Clone, Copy, Default)]
#[repr(C)]
struct Slot<K, V> {
    val: V,
    key: K,
}

#[derive(Clone, Copy, Default)]
#[repr(C)]
struct Slots<K, V> {
    tags: [u8; BUCKET],
    slots: [Slot<K, V>; BUCKET],
}

/// One bucket, aligned so that its lock and tags start a cache line.
#[derive(Default)]
#[repr(C, align(64))]
struct Bucket<K, V>(Locked<Slots<K, V>>);

/// Shared counters a table reports to.
#[derive(Default)]
pub struct TableCounters {
    /// Live entries replaced to make room.
    pub evictions: Counter,
    /// Inserts refused because every slot of the bucket was pinned.
    pub full: Counter,
    /// Locks recovered from a process that died holding them.
    pub lock_recoveries: Counter,
    /// Slots whose entry had lapsed (Free) and were cleared or reused.
    pub reclaimed: Counter,
}

#[derive(Debug)]
pub enum TableError {
    /// No slot could be freed for a new key.
    Full,
    /// The bucket lock failed (never expected; reported, not ignored).
    Lock(io::Error),
}

impl std::fmt::Display for TableError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TableError::Full => write!(f, "table full"),
            TableError::Lock(e) => write!(f, "bucket lock failed: {e}"),
        }
    }
}

/// Whether an access found the key or created it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found {
    Existing,
    Created,
}

/// Bit 7 of each byte of the result is set where the byte of `tags`
/// equals `t`; nothing else is set (the exact form of the zero-byte test,
/// without the borrow that gives the short form false positives).
fn tag_matches(tags: &[u8; BUCKET], t: u8) -> u128 {
    const LO: u128 = u128::MAX / 0xff;
    const HI7: u128 = LO * 0x7f;
    let x = u128::from_le_bytes(*tags) ^ (LO * t as u128);
    !(((x & HI7) + HI7) | x | HI7)
}

/// Slot indexes whose bit 7 is set in `m`, lowest first.
fn slots_of(mut m: u128) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        (m != 0).then(|| {
            let i = m.trailing_zeros() as usize / 8;
            m &= m - 1;
            i
        })
    })
}

pub struct Table<K: 'static, V: Entry> {
    buckets: &'static [Bucket<K, V>],
    hasher: RandomState,
    ctx: V::Ctx,
    capacity: usize,
    counters: &'static TableCounters,
}

impl<K, V> Table<K, V>
where
    K: Copy + Default + Eq + Hash + Send + crate::shm::ShmSafe + 'static,
    V: Entry,
{
    /// Buckets a table of `capacity` slots gets.
    pub fn buckets_for(capacity: usize) -> usize {
        capacity.max(1).div_ceil(BUCKET)
    }

    /// Bytes of shared memory a table of `capacity` slots needs, with
    /// slack for alignment.
    pub fn shm_bytes(capacity: usize) -> usize {
        Self::buckets_for(capacity) * std::mem::size_of::<Bucket<K, V>>()
            + std::mem::size_of::<TableCounters>()
            + 256
    }

    /// Bytes each entry costs: its slot and its share of the bucket's lock
    /// and tags.
    pub fn bytes_per_entry() -> usize {
        std::mem::size_of::<Bucket<K, V>>().div_ceil(BUCKET)
    }

    /// Carves the table out of `region`: exactly `capacity` usable slots.
    pub fn new(
        region: &mut Region,
        capacity: usize,
        hasher: RandomState,
        ctx: V::Ctx,
    ) -> io::Result<Self> {
        let capacity = capacity.max(1);
        let n = Self::buckets_for(capacity);
        let buckets = region.alloc_slice::<Bucket<K, V>>(n)?;
        let counters = region.alloc::<TableCounters>()?;
        // Disable the surplus slots, a few per bucket, from the last slot
        // down, so that no bucket loses more than one more than another.
        let surplus = n * BUCKET - capacity;
        for (i, b) in buckets.iter().enumerate() {
            b.0.init()?;
            let off = surplus / n + usize::from(i < surplus % n);
            let mut g = b.0.lock()?;
            for t in &mut g.tags[BUCKET - off..] {
                *t = DISABLED;
            }
        }
        Ok(Table {
            buckets,
            hasher,
            ctx,
            capacity,
            counters,
        })
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn bucket_count(&self) -> usize {
        self.buckets.len()
    }

    pub fn counters(&self) -> &'static TableCounters {
        self.counters
    }

    pub fn ctx(&self) -> &V::Ctx {
        &self.ctx
    }

    /// The key's bucket (from the hash's high bits) and tag (from its low
    /// bits, so the two are independent).
    fn locate(&self, key: &K) -> (usize, u8) {
        let h = self.hasher.hash_one(key);
        let bucket = ((h as u128 * self.buckets.len() as u128) >> 64) as usize;
        (bucket, USED | (h as u8 & !USED))
    }

    fn lock(&self, bucket: usize) -> Result<LockedGuard<'_, Slots<K, V>>, TableError> {
        let g = self.buckets[bucket].0.lock().map_err(TableError::Lock)?;
        if g.outcome == LockOutcome::OwnerDied {
            self.counters.lock_recoveries.inc();
        }
        Ok(g)
    }

    /// The slot index holding `key`, if any.
    fn find(b: &Slots<K, V>, tag: u8, key: &K) -> Option<usize> {
        slots_of(tag_matches(&b.tags, tag)).find(|&i| b.slots[i].key == *key)
    }

    /// Runs `f` on the entry for `key`, if it exists and is not [`Retention::Free`].
    pub fn get<R>(
        &self,
        key: &K,
        now_us: u64,
        f: impl FnOnce(&mut V) -> R,
    ) -> Result<Option<R>, TableError> {
        Ok(self
            .inspect(key, now_us, |v, r| (r != Retention::Free).then(|| f(v)))?
            .flatten())
    }

    /// Runs `f` on the entry for `key` with its retention, even a lapsed
    /// one (for callers that must report a lapse they come across).
    pub fn inspect<R>(
        &self,
        key: &K,
        now_us: u64,
        f: impl FnOnce(&mut V, Retention) -> R,
    ) -> Result<Option<R>, TableError> {
        let (bucket, tag) = self.locate(key);
        let mut g = self.lock(bucket)?;
        let Some(i) = Self::find(&g, tag, key) else {
            return Ok(None);
        };
        let v = &mut g.slots[i].val;
        let r = v.retention(&V::clock(now_us, &self.ctx));
        Ok(Some(f(v, r)))
    }

    /// Runs `f` on the entry for `key`, creating it (from `V::default()`)
    /// when missing. A stale (Free) entry for the same key is reset first.
    pub fn upsert<R>(
        &self,
        key: &K,
        now_us: u64,
        f: impl FnOnce(&mut V, Found) -> R,
    ) -> Result<R, TableError> {
        self.upsert_observing(key, now_us, f, |_, _| {})
    }

    /// [`Table::upsert`], reporting any lapsed (Free) entry it reclaims to
    /// `lapsed`, so callers that must account for every expiry (ban events)
    /// see the ones reclaimed here rather than by a sweep.
    pub fn upsert_observing<R>(
        &self,
        key: &K,
        now_us: u64,
        f: impl FnOnce(&mut V, Found) -> R,
        mut lapsed: impl FnMut(&K, &V),
    ) -> Result<R, TableError> {
        let (bucket, tag) = self.locate(key);
        let mut g = self.lock(bucket)?;
        let b = &mut *g;
        if let Some(i) = Self::find(b, tag, key) {
            let s = &mut b.slots[i];
            if s.val.retention(&V::clock(now_us, &self.ctx)) == Retention::Free {
                self.counters.reclaimed.inc();
                lapsed(&s.key, &s.val);
                s.val = V::default();
                return Ok(f(&mut s.val, Found::Created));
            }
            return Ok(f(&mut s.val, Found::Existing));
        }
        let i = match slots_of(tag_matches(&b.tags, EMPTY)).next() {
            Some(i) => i,
            None => self.victim(b, now_us, &mut lapsed)?,
        };
        b.tags[i] = tag;
        b.slots[i] = Slot {
            key: *key,
            val: V::default(),
        };
        Ok(f(&mut b.slots[i].val, Found::Created))
    }

    /// The slot to reuse in a bucket with no free slot: the least useful
    /// entry, never a pinned one.
    fn victim(
        &self,
        b: &Slots<K, V>,
        now_us: u64,
        lapsed: &mut impl FnMut(&K, &V),
    ) -> Result<usize, TableError> {
        let clock = V::clock(now_us, &self.ctx);
        let mut best: Option<(usize, Retention)> = None;
        // No slot is empty: every slot that is not disabled is used.
        for i in slots_of(u128::from_le_bytes(b.tags) & (u128::MAX / 0xff * USED as u128)) {
            let r = b.slots[i].val.retention(&clock);
            if best.map_or(true, |(_, x)| r < x) {
                best = Some((i, r));
                if r == Retention::Free {
                    break;
                }
            }
        }
        match best {
            None | Some((_, Retention::Pinned)) => {
                self.counters.full.inc();
                Err(TableError::Full)
            }
            Some((i, r)) => {
                if r == Retention::Free {
                    self.counters.reclaimed.inc();
                    lapsed(&b.slots[i].key, &b.slots[i].val);
                } else {
                    self.counters.evictions.inc();
                }
                Ok(i)
            }
        }
    }

    /// Removes `key`; returns its value if it was live.
    pub fn remove(&self, key: &K, now_us: u64) -> Result<Option<V>, TableError> {
        self.remove_observing(key, now_us, |_, _| {})
    }

    /// [`Table::remove`], reporting a lapsed entry it clears to `lapsed`.
    pub fn remove_observing(
        &self,
        key: &K,
        now_us: u64,
        lapsed: impl FnOnce(&K, &V),
    ) -> Result<Option<V>, TableError> {
        let (bucket, tag) = self.locate(key);
        let mut g = self.lock(bucket)?;
        let Some(i) = Self::find(&g, tag, key) else {
            return Ok(None);
        };
        g.tags[i] = EMPTY;
        let s = g.slots[i];
        let live = s.val.retention(&V::clock(now_us, &self.ctx)) != Retention::Free;
        if !live {
            self.counters.reclaimed.inc();
            lapsed(&s.key, &s.val);
        }
        Ok(live.then_some(s.val))
    }

    /// Visits every entry of one bucket with its lock held. `f` returns
    /// false to delete the entry. Walking one bucket at a time keeps every
    /// other bucket available to the workers.
    pub fn retain_bucket(
        &self,
        bucket: usize,
        now_us: u64,
        mut f: impl FnMut(&K, &mut V, Retention) -> bool,
    ) -> Result<(), TableError> {
        let clock = V::clock(now_us, &self.ctx);
        let mut g = self.lock(bucket)?;
        let b = &mut *g;
        for i in 0..BUCKET {
            if b.tags[i] & USED == 0 {
                continue;
            }
            let s = &mut b.slots[i];
            let r = s.val.retention(&clock);
            if !f(&s.key, &mut s.val, r) {
                b.tags[i] = EMPTY;
                if r == Retention::Free {
                    self.counters.reclaimed.inc();
                }
            }
        }
        Ok(())
    }

    /// Number of live entries (walks every bucket; for reporting, not hot paths).
    pub fn len(&self, now_us: u64) -> Result<usize, TableError> {
        let mut n = 0;
        for i in 0..self.buckets.len() {
            self.retain_bucket(i, now_us, |_, _, r| {
                if r != Retention::Free {
                    n += 1;
                }
                true
            })?;
        }
        Ok(n)
    }

    /// Test hook: holds the lock of the bucket `key` maps to while `f` runs.
    /// Used to prove a process killed inside a critical section does not
    /// wedge the others.
    pub fn with_bucket_locked_for<R>(
        &self,
        key: &K,
        f: impl FnOnce() -> R,
    ) -> Result<R, TableError> {
        let (bucket, _) = self.locate(key);
        let _g = self.lock(bucket)?;
        Ok(f())
    }
}

crate::shm_safe!(TableCounters);
impl<K: crate::shm::ShmSafe, V: crate::shm::ShmSafe> crate::shm::ShmSafe for Slot<K, V> {}
impl<K: crate::shm::ShmSafe, V: crate::shm::ShmSafe> crate::shm::ShmSafe for Slots<K, V> {}
impl<K: crate::shm::ShmSafe, V: crate::shm::ShmSafe> crate::shm::ShmSafe for Bucket<K, V> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_matching_is_exact() {
        let mut tags = [EMPTY; BUCKET];
        tags[3] = 0x85;
        tags[4] = 0x86;
        tags[15] = 0x85;
        tags[0] = DISABLED;
        assert_eq!(
            slots_of(tag_matches(&tags, 0x85)).collect::<Vec<_>>(),
            [3, 15]
        );
        // A zero byte right below a match must not make its neighbour
        // look like one (the borrow of the short zero-byte test).
        assert_eq!(
            slots_of(tag_matches(&tags, EMPTY)).collect::<Vec<_>>(),
            [1, 2, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]
        );
        assert_eq!(slots_of(tag_matches(&tags, 0x81)).count(), 0);
    }
}
