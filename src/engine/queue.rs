//! A bounded queue of ban decisions in shared memory, from the processes
//! that make them (SIP workers, timer, MI) to the one that persists them.
//!
//! Pushing never blocks on anything but one short critical section, and a
//! full queue refuses the change and counts it rather than waiting: a slow
//! or dead database must never cost a SIP request its latency. The consumer
//! peeks a batch, writes it, and only then pops it, so nothing is lost while
//! the database is away.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

use super::bans::Reason;
use super::history::Offense;
use super::ip::Cidr;
use super::note::Note;
use super::users::UserKey;
use crate::shm::{LockedSlice, Region, ShmMutex};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(u8)]
pub enum ChangeOp {
    #[default]
    Ban = 1,
    Unban = 2,
    Expire = 3,
    /// An account blocked (`user`, from `created_us` to `expires_us`).
    Block = 4,
    /// An account's block lifted.
    Unblock = 5,
}

/// One decision to persist. Times are wall-clock microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Change {
    pub op: ChangeOp,
    pub target: Cidr,
    pub reason: Reason,
    pub created_us: u64,
    /// 0 = until unbanned.
    pub expires_us: u64,
    /// The ban's note (empty for none).
    pub note: Note,
    /// For a ban by a rule, the target's history with this ban in it
    /// (`offenses` 0: none to write).
    pub offense: Offense,
    /// The account of a Block or Unblock (`target` is then unused).
    pub user: UserKey,
}

#[derive(Default)]
struct Header {
    head: AtomicU64,
    len: AtomicU64,
    pushed: AtomicU64,
    dropped: AtomicU64,
}

pub struct ChangeQueue {
    slots: LockedSlice<Change>,
    hdr: &'static Header,
}

impl ChangeQueue {
    pub fn shm_bytes(capacity: usize) -> usize {
        capacity * std::mem::size_of::<Change>()
            + std::mem::size_of::<ShmMutex>()
            + std::mem::size_of::<Header>()
            + 128
    }

    pub fn new(region: &mut Region, capacity: usize) -> io::Result<ChangeQueue> {
        let lock = region.alloc::<ShmMutex>()?;
        lock.init()?;
        let cells = region.alloc_slice::<std::cell::UnsafeCell<Change>>(capacity.max(1))?;
        Ok(ChangeQueue {
            slots: LockedSlice::new(lock, cells),
            hdr: region.alloc()?,
        })
    }

    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Queues `c`; false (and counted) when the queue is full.
    pub fn push(&self, c: Change) -> bool {
        let Ok(mut g) = self.slots.lock() else {
            self.hdr.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        };
        let cap = g.len() as u64;
        let len = self.hdr.len.load(Ordering::Relaxed);
        if len >= cap {
            drop(g);
            self.hdr.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let head = self.hdr.head.load(Ordering::Relaxed);
        g[((head + len) % cap) as usize] = c;
        self.hdr.len.store(len + 1, Ordering::Relaxed);
        self.hdr.pushed.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Copies up to `max` of the oldest changes, leaving them queued.
    pub fn peek(&self, max: usize) -> Vec<Change> {
        let Ok(g) = self.slots.lock() else {
            return Vec::new();
        };
        let cap = g.len() as u64;
        let head = self.hdr.head.load(Ordering::Relaxed);
        let n = self.hdr.len.load(Ordering::Relaxed).min(max as u64);
        (0..n).map(|i| g[((head + i) % cap) as usize]).collect()
    }

    /// Drops the `n` oldest changes (after they were written).
    pub fn pop(&self, n: usize) {
        let Ok(g) = self.slots.lock() else { return };
        let cap = g.len() as u64;
        let len = self.hdr.len.load(Ordering::Relaxed);
        let n = (n as u64).min(len);
        let head = self.hdr.head.load(Ordering::Relaxed);
        self.hdr.head.store((head + n) % cap, Ordering::Relaxed);
        self.hdr.len.store(len - n, Ordering::Relaxed);
    }

    /// Changes waiting (read without the lock: a gauge).
    pub fn depth(&self) -> u64 {
        self.hdr.len.load(Ordering::Relaxed)
    }

    pub fn dropped(&self) -> u64 {
        self.hdr.dropped.load(Ordering::Relaxed)
    }

    pub fn pushed(&self) -> u64 {
        self.hdr.pushed.load(Ordering::Relaxed)
    }
}

crate::shm_safe!(ChangeOp, Change, Header);
