//! Why: every ban decision (made, scoped to a tenant, only simulated in
//! dry run, or refused for want of room) with the numbers that made it,
//! kept in a bounded ring in shared memory so that any process (MI's
//! `sec_explain`, `sec_decisions`) can answer "why was this address
//! blocked" after the fact, and handed to the caller of the operation that
//! made it so its log line carries the same facts.
//!
//! Decisions are rare next to requests (a source is banned once, then its
//! requests are refused without a decision), so one robust lock over the
//! whole ring costs nothing on the request path. The ring overwrites its
//! oldest entry: bounded, and the newest decisions are the ones asked about.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

use super::bans::Reason;
use super::ip::{Cidr, IpKey};
use crate::shm::{LockedSlice, Region, ShmMutex};

/// What came of a decision.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(u8)]
pub enum Verdict {
    /// Banned, for everyone.
    #[default]
    Ban = 0,
    /// Banned for one tenant's traffic only (a profile with
    /// `ban_scope=tenant`).
    TenantBan = 1,
    /// Would have been banned: `dry_run` is on, so nothing was.
    DryRun = 2,
    /// Over the threshold, but the ban table was full: refused without a ban.
    Refused = 3,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ban => "ban",
            Verdict::TenantBan => "tenant_ban",
            Verdict::DryRun => "dry_run",
            Verdict::Refused => "refused_unbanned",
        }
    }
}

/// One decision and the numbers behind it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Decision {
    /// Wall-clock µs.
    pub at_us: u64,
    /// The address whose request or failure decided it (the target's own
    /// address for a prefix banned by aggregation or by hand).
    pub ip: IpKey,
    /// What was (or would have been) banned.
    pub target: Cidr,
    pub rule: Reason,
    pub verdict: Verdict,
    /// The count that crossed the threshold: requests, failures,
    /// usernames, reported weight, banned addresses; 1 for a scanner or a
    /// manual ban.
    pub count: u32,
    pub threshold: u32,
    /// The window the count was taken over, s (0: none, e.g. manual).
    pub window_s: u32,
    /// The ban's length, s (0: until unbanned).
    pub ban_s: u32,
    /// Bans in a row of this target, this one included (1: a first).
    pub offenses: u32,
    /// The profile whose thresholds applied (0: the default).
    pub profile: u8,
    /// The tenant the request belonged to (0: none given).
    pub tenant: u32,
}

impl Decision {
    /// True when this decision concerns `ip`: made on it, or on a target
    /// that contains it.
    pub fn concerns(&self, ip: &IpKey) -> bool {
        self.ip == *ip || self.target.contains(ip)
    }
}

#[derive(Default)]
struct RingHead {
    /// Decisions ever pushed; the next goes to `next % capacity`.
    next: AtomicU64,
}

pub struct DecisionRing {
    slots: LockedSlice<Decision>,
    head: &'static RingHead,
}

impl DecisionRing {
    pub fn shm_bytes(capacity: usize) -> usize {
        capacity.max(1) * std::mem::size_of::<Decision>()
            + std::mem::size_of::<ShmMutex>()
            + std::mem::size_of::<RingHead>()
            + 128
    }

    pub fn new(region: &mut Region, capacity: usize) -> io::Result<DecisionRing> {
        let lock = region.alloc::<ShmMutex>()?;
        lock.init()?;
        let cells = region.alloc_slice::<std::cell::UnsafeCell<Decision>>(capacity.max(1))?;
        Ok(DecisionRing {
            slots: LockedSlice::new(lock, cells),
            head: region.alloc()?,
        })
    }

    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Decisions ever recorded (the ring keeps the last `capacity`).
    pub fn recorded(&self) -> u64 {
        self.head.next.load(Ordering::Relaxed)
    }

    /// Records `d`, overwriting the oldest once full. A lock that cannot
    /// be taken loses this record only (the decision itself stands).
    pub fn push(&self, d: Decision) -> bool {
        let Ok(mut g) = self.slots.lock() else {
            return false;
        };
        let n = self.head.next.load(Ordering::Relaxed);
        let cap = g.len() as u64;
        g[(n % cap) as usize] = d;
        self.head.next.store(n + 1, Ordering::Relaxed);
        true
    }

    /// The newest decisions `keep` accepts, newest first, at most `max`.
    pub fn newest(&self, max: usize, mut keep: impl FnMut(&Decision) -> bool) -> Vec<Decision> {
        let Ok(g) = self.slots.lock() else {
            return Vec::new();
        };
        let n = self.head.next.load(Ordering::Relaxed);
        let cap = g.len() as u64;
        let held = n.min(cap);
        (1..=held)
            .map(|back| g[((n - back) % cap) as usize])
            .filter(|d| keep(d))
            .take(max)
            .collect()
    }
}

crate::shm_safe!(Verdict, Decision, RingHead);
