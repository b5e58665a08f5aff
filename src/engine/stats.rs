//! Counters kept in shared memory. Updated with relaxed atomics on the hot
//! path and read without any stripe lock.

use std::sync::atomic::{AtomicU64, Ordering};

use super::bans::Reason;

#[derive(Default)]
pub struct Stats {
    pub pike_checked: AtomicU64,
    pub pike_blocked: AtomicU64,
    pub rl_checked: AtomicU64,
    pub rl_rejected: AtomicU64,
    pub auth_failures: AtomicU64,
    pub bans_created: [AtomicU64; 4],
    pub bans_removed: AtomicU64,
    pub dropped_while_banned: AtomicU64,
    pub whitelisted: AtomicU64,
    pub errors: AtomicU64,
}

impl Stats {
    pub(crate) fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }

    pub fn bans_created_for(&self, r: Reason) -> u64 {
        Self::get(&self.bans_created[r as usize])
    }

    pub fn bans_created_total(&self) -> u64 {
        self.bans_created.iter().map(Self::get).sum()
    }
}

crate::shm_safe!(Stats);
