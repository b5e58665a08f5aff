//! Fixed-capacity, lock-striped hash table in shared memory.
//!
//! The capacity is split into stripes, each a slice of slots behind its own
//! process-shared robust mutex, so unrelated keys never contend. Inside a
//! stripe, a key lives within a short probe window after its home slot;
//! lookups scan that window, so no tombstones are needed and every operation
//! touches at most [`PROBE`] slots.
//!
//! When the window is full, the least useful entry is replaced (each value
//! type ranks itself through [`Retention`]); entries that must not be lost
//! (active bans) are never replaced, and a window full of them is reported
//! as [`TableError::Full`] so the caller can count and log it.

use std::cell::UnsafeCell;
use std::hash::Hash;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

use ahash::RandomState;

use crate::shm::{LockOutcome, LockedSlice, Region, ShmMutex};

/// Slots scanned per operation.
pub const PROBE: usize = 16;

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
    fn retention(&self, now_us: u64) -> Retention;
}

#[derive(Clone, Copy, Default)]
struct Slot<K, V> {
    used: bool,
    key: K,
    val: V,
}

/// Shared counters a table reports to.
#[derive(Default)]
pub struct TableCounters {
    /// Live entries replaced to make room.
    pub evictions: AtomicU64,
    /// Inserts refused because every candidate slot was pinned.
    pub full: AtomicU64,
    /// Locks recovered from a process that died holding them.
    pub lock_recoveries: AtomicU64,
    /// Slots whose entry had lapsed (Free) and were cleared or reused.
    pub reclaimed: AtomicU64,
}

#[derive(Debug)]
pub enum TableError {
    /// No slot could be freed for a new key.
    Full,
    /// The stripe lock failed (never expected; reported, not ignored).
    Lock(io::Error),
}

impl std::fmt::Display for TableError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TableError::Full => write!(f, "table full"),
            TableError::Lock(e) => write!(f, "stripe lock failed: {e}"),
        }
    }
}

/// Whether an access found the key or created it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found {
    Existing,
    Created,
}

pub struct Table<K: 'static, V: 'static> {
    stripes: Vec<LockedSlice<Slot<K, V>>>,
    hasher: RandomState,
    counters: &'static TableCounters,
}

impl<K, V> Table<K, V>
where
    K: Copy + Default + Eq + Hash + Send + crate::shm::ShmSafe + 'static,
    V: Entry,
{
    /// Stripes a table of `capacity` slots really gets: `stripes`, but no
    /// more than leaves every stripe a full probe window of slots.
    pub fn stripes_for(capacity: usize, stripes: usize) -> usize {
        stripes.clamp(1, (capacity / PROBE).max(1))
    }

    /// Bytes of shared memory a table of `capacity` slots needs, with
    /// slack for alignment.
    pub fn shm_bytes(capacity: usize, stripes: usize) -> usize {
        capacity.max(1) * std::mem::size_of::<UnsafeCell<Slot<K, V>>>()
            + Self::stripes_for(capacity, stripes) * std::mem::size_of::<ShmMutex>()
            + std::mem::size_of::<TableCounters>()
            + 256
    }

    /// Carves the table out of `region`: exactly `capacity` slots, spread
    /// over [`Table::stripes_for`] stripes whose sizes differ by at most one.
    pub fn new(
        region: &mut Region,
        capacity: usize,
        stripes: usize,
        hasher: RandomState,
    ) -> io::Result<Self> {
        let capacity = capacity.max(1);
        let stripes = Self::stripes_for(capacity, stripes);
        let (base, extra) = (capacity / stripes, capacity % stripes);
        let locks = region.alloc_slice::<ShmMutex>(stripes)?;
        let slots = region.alloc_slice::<UnsafeCell<Slot<K, V>>>(capacity)?;
        let counters = region.alloc::<TableCounters>()?;
        let mut v = Vec::with_capacity(stripes);
        let mut start = 0;
        for (i, m) in locks.iter().enumerate() {
            m.init()?;
            let len = base + usize::from(i < extra);
            v.push(LockedSlice::new(m, &slots[start..start + len]));
            start += len;
        }
        Ok(Table {
            stripes: v,
            hasher,
            counters,
        })
    }

    pub fn capacity(&self) -> usize {
        self.stripes.iter().map(|s| s.len()).sum()
    }

    pub fn stripe_count(&self) -> usize {
        self.stripes.len()
    }

    pub fn counters(&self) -> &'static TableCounters {
        self.counters
    }

    fn locate(&self, key: &K) -> (usize, usize) {
        let h = self.hasher.hash_one(key);
        let stripe = (h % self.stripes.len() as u64) as usize;
        let per = self.stripes[stripe].len();
        (stripe, ((h >> 32) % per as u64) as usize)
    }

    fn lock(&self, stripe: usize) -> Result<crate::shm::ShmMutexGuard<'_, Slot<K, V>>, TableError> {
        let g = self.stripes[stripe].lock().map_err(TableError::Lock)?;
        if g.outcome == LockOutcome::OwnerDied {
            self.counters
                .lock_recoveries
                .fetch_add(1, Ordering::Relaxed);
        }
        Ok(g)
    }

    /// The slot holding `key` in its probe window, if any.
    fn find<'g>(slots: &'g mut [Slot<K, V>], home: usize, key: &K) -> Option<&'g mut Slot<K, V>> {
        let per = slots.len();
        let idx = (0..PROBE.min(per))
            .map(|i| (home + i) % per)
            .find(|&i| slots[i].used && slots[i].key == *key)?;
        Some(&mut slots[idx])
    }

    /// Runs `f` on the entry for `key`, if it exists and is not [`Retention::Free`].
    pub fn get<R>(
        &self,
        key: &K,
        now_us: u64,
        f: impl FnOnce(&mut V) -> R,
    ) -> Result<Option<R>, TableError> {
        let (stripe, home) = self.locate(key);
        let mut g = self.lock(stripe)?;
        Ok(Self::find(&mut g, home, key)
            .filter(|s| s.val.retention(now_us) != Retention::Free)
            .map(|s| f(&mut s.val)))
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
        let (stripe, home) = self.locate(key);
        let mut g = self.lock(stripe)?;
        let per = g.len();
        let window = PROBE.min(per);
        let mut victim: Option<(usize, Retention)> = None;
        for i in 0..window {
            let idx = (home + i) % per;
            let s = &mut g[idx];
            if s.used && s.key == *key {
                if s.val.retention(now_us) == Retention::Free {
                    self.counters.reclaimed.fetch_add(1, Ordering::Relaxed);
                    lapsed(&s.key, &s.val);
                    s.val = V::default();
                    return Ok(f(&mut s.val, Found::Created));
                }
                return Ok(f(&mut s.val, Found::Existing));
            }
            let r = if s.used {
                s.val.retention(now_us)
            } else {
                Retention::Free
            };
            if victim.map_or(true, |(_, best)| r < best) {
                victim = Some((idx, r));
            }
        }
        let (idx, r) = victim.expect("probe window is never empty");
        match r {
            Retention::Pinned => {
                self.counters.full.fetch_add(1, Ordering::Relaxed);
                Err(TableError::Full)
            }
            _ => {
                let s = &mut g[idx];
                if matches!(r, Retention::Evictable(_)) {
                    self.counters.evictions.fetch_add(1, Ordering::Relaxed);
                } else if s.used {
                    self.counters.reclaimed.fetch_add(1, Ordering::Relaxed);
                    lapsed(&s.key, &s.val);
                }
                *s = Slot {
                    used: true,
                    key: *key,
                    val: V::default(),
                };
                Ok(f(&mut s.val, Found::Created))
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
        let (stripe, home) = self.locate(key);
        let mut g = self.lock(stripe)?;
        let Some(s) = Self::find(&mut g, home, key) else {
            return Ok(None);
        };
        s.used = false;
        let live = s.val.retention(now_us) != Retention::Free;
        if !live {
            self.counters.reclaimed.fetch_add(1, Ordering::Relaxed);
            lapsed(&s.key, &s.val);
        }
        Ok(live.then_some(s.val))
    }

    /// Visits every live entry of one stripe with its lock held. `f` returns
    /// false to delete the entry. Walking one stripe at a time keeps every
    /// other stripe available to the workers.
    pub fn retain_stripe(
        &self,
        stripe: usize,
        now_us: u64,
        mut f: impl FnMut(&K, &mut V, Retention) -> bool,
    ) -> Result<(), TableError> {
        let mut g = self.lock(stripe)?;
        for s in g.iter_mut().filter(|s| s.used) {
            let r = s.val.retention(now_us);
            if !f(&s.key, &mut s.val, r) {
                s.used = false;
                if r == Retention::Free {
                    self.counters.reclaimed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        Ok(())
    }

    /// Number of used slots (walks every stripe; for reporting, not hot paths).
    pub fn len(&self, now_us: u64) -> Result<usize, TableError> {
        let mut n = 0;
        for i in 0..self.stripes.len() {
            self.retain_stripe(i, now_us, |_, _, r| {
                if r != Retention::Free {
                    n += 1;
                }
                true
            })?;
        }
        Ok(n)
    }

    /// Test hook: holds the lock of the stripe `key` maps to while `f` runs.
    /// Used to prove a process killed inside a critical section does not
    /// wedge the others.
    pub fn with_stripe_locked_for<R>(
        &self,
        key: &K,
        f: impl FnOnce() -> R,
    ) -> Result<R, TableError> {
        let (stripe, _) = self.locate(key);
        let _g = self.lock(stripe)?;
        Ok(f())
    }
}

crate::shm_safe!(TableCounters);
impl<K: crate::shm::ShmSafe, V: crate::shm::ShmSafe> crate::shm::ShmSafe for Slot<K, V> {}
