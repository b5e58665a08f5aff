//! The whitelist: a small fixed array of prefixes, read on every request.
//!
//! Reads must not take a lock every worker contends on, so the array is a
//! seqlock: writers (start-up, later MI) serialise on a mutex and bump a
//! sequence number around their change; readers retry if it moved. Entries
//! are stored as atomics so a read racing a write is well-defined.

use std::io;
use std::sync::atomic::{fence, AtomicU64, Ordering};

use super::ip::{Cidr, IpKey};
use crate::shm::{Region, ShmMutex};

/// Most whitelist entries held.
pub const MAX_WHITELIST: usize = 512;

/// A prefix as its masked address and its mask, in two 64-bit halves
/// each: matching an address is two ANDs and two compares.
#[derive(Default)]
struct WlEntry {
    hi: AtomicU64,
    lo: AtomicU64,
    mask_hi: AtomicU64,
    mask_lo: AtomicU64,
}

#[derive(Default)]
struct WlHeader {
    seq: AtomicU64,
    len: AtomicU64,
}

pub struct Whitelist {
    lock: &'static ShmMutex,
    head: &'static WlHeader,
    entries: &'static [WlEntry],
}

#[derive(Debug, PartialEq, Eq)]
pub enum WhitelistError {
    Full,
    Lock(String),
}

impl std::fmt::Display for WhitelistError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WhitelistError::Full => write!(f, "whitelist full ({MAX_WHITELIST} entries)"),
            WhitelistError::Lock(e) => write!(f, "whitelist lock failed: {e}"),
        }
    }
}

impl Whitelist {
    pub fn shm_bytes() -> usize {
        MAX_WHITELIST * std::mem::size_of::<WlEntry>() + 256
    }

    pub fn new(region: &mut Region) -> io::Result<Whitelist> {
        let lock = region.alloc::<ShmMutex>()?;
        lock.init()?;
        Ok(Whitelist {
            lock,
            head: region.alloc()?,
            entries: region.alloc_slice(MAX_WHITELIST)?,
        })
    }

    fn read_entry(e: &WlEntry) -> Cidr {
        let addr =
            (e.hi.load(Ordering::Relaxed) as u128) << 64 | e.lo.load(Ordering::Relaxed) as u128;
        let mask = (e.mask_hi.load(Ordering::Relaxed) as u128) << 64
            | e.mask_lo.load(Ordering::Relaxed) as u128;
        Cidr {
            addr: IpKey(addr.to_be_bytes()),
            prefix: mask.count_ones() as u8,
        }
    }

    fn write_entry(e: &WlEntry, c: &Cidr) {
        let (addr, mask) = (c.addr.as_u128(), IpKey::mask(c.prefix));
        e.hi.store((addr >> 64) as u64, Ordering::Relaxed);
        e.lo.store(addr as u64, Ordering::Relaxed);
        e.mask_hi.store((mask >> 64) as u64, Ordering::Relaxed);
        e.mask_lo.store(mask as u64, Ordering::Relaxed);
    }

    fn matches(e: &WlEntry, hi: u64, lo: u64) -> bool {
        hi & e.mask_hi.load(Ordering::Relaxed) == e.hi.load(Ordering::Relaxed)
            && lo & e.mask_lo.load(Ordering::Relaxed) == e.lo.load(Ordering::Relaxed)
    }

    /// Runs `f` over a consistent view of the entries.
    fn read<R>(&self, mut f: impl FnMut(&mut dyn Iterator<Item = Cidr>) -> R) -> R {
        self.read_raw(|entries| f(&mut entries.iter().map(Self::read_entry)))
    }

    /// Runs `f` over a consistent view of the stored entries.
    fn read_raw<R>(&self, mut f: impl FnMut(&[WlEntry]) -> R) -> R {
        let mut odd_seen = 0u32;
        loop {
            let s1 = self.head.seq.load(Ordering::Acquire);
            if s1 & 1 == 1 {
                odd_seen += 1;
                if odd_seen % 100_000 == 0 {
                    // A writer may have died mid-update; taking the robust
                    // lock either waits for a live one or repairs the sequence.
                    self.repair();
                }
                std::hint::spin_loop();
                continue;
            }
            let len = (self.head.len.load(Ordering::Relaxed) as usize).min(MAX_WHITELIST);
            let r = f(&self.entries[..len]);
            fence(Ordering::Acquire);
            if self.head.seq.load(Ordering::Relaxed) == s1 {
                return r;
            }
        }
    }

    pub fn contains(&self, ip: &IpKey) -> bool {
        let a = ip.as_u128();
        let (hi, lo) = ((a >> 64) as u64, a as u64);
        self.read_raw(|entries| entries.iter().any(|e| Self::matches(e, hi, lo)))
    }

    /// A whitelisted prefix sharing any address with `target` (inside it
    /// or around it), if there is one.
    pub fn overlapping(&self, target: &Cidr) -> Option<Cidr> {
        // `find` needs a sized iterator; this one is a trait object.
        #[allow(clippy::manual_find)]
        self.read(|it| {
            for c in it {
                if c.overlaps(target) {
                    return Some(c);
                }
            }
            None
        })
    }

    pub fn list(&self) -> Vec<Cidr> {
        self.read(|it| {
            let mut v = Vec::new();
            for c in it {
                v.push(c);
            }
            v
        })
    }

    /// Makes the sequence even again if a writer died between its two bumps.
    fn repair(&self) {
        if self.lock.lock().is_ok() {
            self.fix_seq_locked();
            self.lock.unlock();
        }
    }

    fn fix_seq_locked(&self) {
        if self.head.seq.load(Ordering::Acquire) & 1 == 1 {
            self.head.seq.fetch_add(1, Ordering::AcqRel);
        }
    }

    fn write<R>(&self, f: impl FnOnce(&mut Vec<Cidr>) -> R) -> Result<R, WhitelistError> {
        self.lock
            .lock()
            .map_err(|e| WhitelistError::Lock(e.to_string()))?;
        self.fix_seq_locked();
        let mut cur = self.list();
        let r = f(&mut cur);
        if cur.len() > MAX_WHITELIST {
            self.lock.unlock();
            return Err(WhitelistError::Full);
        }
        self.head.seq.fetch_add(1, Ordering::AcqRel);
        // Orders the odd sequence before the entry stores below: a reader
        // that sees any new entry value then also sees the odd (or a later)
        // sequence after its acquire fence, and retries. The release half of
        // the fetch_add above only orders what came before it.
        fence(Ordering::Release);
        for (e, c) in self.entries.iter().zip(cur.iter()) {
            Self::write_entry(e, c);
        }
        self.head.len.store(cur.len() as u64, Ordering::Relaxed);
        self.head.seq.fetch_add(1, Ordering::Release);
        self.lock.unlock();
        Ok(r)
    }

    /// Adds a prefix; false if it was already present.
    pub fn add(&self, c: Cidr) -> Result<bool, WhitelistError> {
        self.write(|v| {
            if v.contains(&c) {
                false
            } else {
                v.push(c);
                true
            }
        })
    }

    /// Replaces the whole list at once (readers see the old or the new list,
    /// never a mix).
    pub fn replace(&self, list: Vec<Cidr>) -> Result<(), WhitelistError> {
        self.write(|v| *v = list)
    }

    /// Removes a prefix; false if it was not present.
    pub fn remove(&self, c: &Cidr) -> Result<bool, WhitelistError> {
        self.write(|v| {
            let before = v.len();
            v.retain(|x| x != c);
            v.len() != before
        })
    }
}

crate::shm_safe!(WlEntry, WlHeader);
