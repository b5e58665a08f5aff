//! Counters kept in shared memory, read without any lock.
//!
//! Every request bumps a counter or two. One shared atomic would have every
//! worker write the same cache line, which then moves between cores on
//! every request; instead each counter has [`SHARDS`] cache-line-sized
//! shards, a process writes only its own (see [`set_process_shard`]) and a
//! reader sums them.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use super::bans::Reason;

/// Shards per counter; processes beyond this share shards (correct, just
/// slower).
pub const SHARDS: usize = 16;

/// The shard this process writes to; set once per process after fork.
static SHARD: AtomicUsize = AtomicUsize::new(0);

/// Picks the shard this process's counters go to, from its number among
/// the host's processes (any number works; distinct ones avoid sharing).
pub fn set_process_shard(n: usize) {
    SHARD.store(n % SHARDS, Ordering::Relaxed);
}

#[derive(Default)]
#[repr(align(64))]
struct Shard(AtomicU64);

/// A counter incremented by many processes and read rarely.
#[derive(Default)]
pub struct Counter {
    shards: [Shard; SHARDS],
}

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        self.shards[SHARD.load(Ordering::Relaxed)]
            .0
            .fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.shards
            .iter()
            .fold(0u64, |s, x| s.wrapping_add(x.0.load(Ordering::Relaxed)))
    }
}

#[derive(Default)]
pub struct Stats {
    pub pike_checked: Counter,
    pub pike_blocked: Counter,
    pub rl_checked: Counter,
    pub rl_rejected: Counter,
    pub auth_failures: Counter,
    pub bans_created: [Counter; Reason::ALL.len()],
    pub bans_removed: Counter,
    /// Bans that ran out and were reclaimed (by the sweep or by a worker
    /// reusing their slot).
    pub bans_expired: Counter,
    pub dropped_while_banned: Counter,
    /// Bans of repeat offenders (a ban within `recidive_window` of the
    /// previous one's end), whatever their length came to.
    pub bans_repeat: Counter,
    /// Accounts blocked (`user_fail_threshold`).
    pub users_blocked: Counter,
    /// `sec_report` calls.
    pub reports: Counter,
    /// `sec_scanner_check` calls.
    pub scanner_checks: Counter,
    pub whitelisted: Counter,
    pub errors: Counter,
    /// Bans dry run decided but did not make.
    pub dry_run_bans: Counter,
    /// Requests dry run let through that a ban it pretended would refuse.
    pub dry_run_blocked: Counter,
    /// Bans made for one tenant's traffic (also in `bans_created`).
    pub tenant_bans: Counter,
}

impl Stats {
    pub(crate) fn inc(c: &Counter) {
        c.inc();
    }

    pub fn get(c: &Counter) -> u64 {
        c.get()
    }

    pub fn bans_created_for(&self, r: Reason) -> u64 {
        Self::get(&self.bans_created[r as usize])
    }

    pub fn bans_created_total(&self) -> u64 {
        self.bans_created.iter().map(Self::get).sum()
    }
}

crate::shm_safe!(Stats, Counter, Shard);
