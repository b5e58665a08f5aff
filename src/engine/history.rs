//! Repeat offenders: what is remembered of a banned target after its ban
//! ends, so that a source banned again within `recidive_window` gets the
//! previous length times `ban_multiplier`, up to `ban_time_max` (fail2ban's
//! bantime.increment, inside the signalling path).
//!
//! The history has its own table (`max_offenders` entries): it must
//! outlive the ban, and the source's flood entry, which a spoofed flood may
//! evict at any time.

use super::table::{Entry, Retention};

/// The escalation settings.
#[derive(Clone, Copy, Debug, Default)]
pub struct Recidive {
    /// How long after a ban ends a new one counts as a repeat (0 = never).
    pub window_s: u32,
    /// Each repeat's length is the previous one's times this (1 = no
    /// escalation).
    pub multiplier: u32,
    /// Escalation stops here (a rule's own length is never shortened).
    pub max_s: u32,
}

/// The last ban of one target and how many it had in a row. 16 bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offense {
    /// Bans in a row, each within `recidive_window` of the previous one's
    /// end.
    pub offenses: u32,
    /// Unix seconds.
    pub last_start_s: u32,
    /// Unix seconds; 0 for a ban until unbanned.
    pub last_end_s: u32,
    /// Seconds; 0 for a ban until unbanned.
    pub last_len_s: u32,
}

impl Offense {
    /// True while a new ban would be a repeat of this one.
    fn is_recent(&self, now_s: u64, window_s: u32) -> bool {
        self.offenses > 0
            && window_s > 0
            && (self.last_end_s == 0 || now_s < self.last_end_s as u64 + window_s as u64)
    }

    /// The length of a new ban whose rule asks for `base_s` seconds.
    pub fn escalate(&self, now_s: u64, base_s: u32, r: &Recidive) -> u32 {
        if base_s == 0 || r.multiplier <= 1 || !self.is_recent(now_s, r.window_s) {
            return base_s;
        }
        // A lifted ban "until unbanned" was as long as bans get.
        let prev = if self.last_len_s == 0 {
            r.max_s
        } else {
            self.last_len_s
        };
        let grown = (prev as u64 * r.multiplier as u64).min(r.max_s as u64) as u32;
        grown.max(base_s)
    }

    /// Records a ban from `start_s` for `len_s` (0 = until unbanned);
    /// false when this ban (or a later one) is already recorded, as when
    /// another node's ban is imported twice.
    pub fn record(&mut self, start_s: u64, len_s: u32, window_s: u32) -> bool {
        let start = start_s.min(u32::MAX as u64) as u32;
        if self.offenses > 0 && start <= self.last_start_s {
            return false;
        }
        self.offenses = if self.is_recent(start_s, window_s) {
            self.offenses.saturating_add(1)
        } else {
            1
        };
        self.last_start_s = start;
        self.last_len_s = len_s;
        self.last_end_s = if len_s == 0 {
            0
        } else {
            start.saturating_add(len_s)
        };
        true
    }
}

impl Entry for Offense {
    /// `recidive_window`, seconds.
    type Ctx = u32;
    type Clock = (u64, u32);

    fn clock(now_us: u64, &window_s: &u32) -> (u64, u32) {
        (now_us / 1_000_000, window_s)
    }

    fn retention(&self, &(now_s, window_s): &(u64, u32)) -> Retention {
        if self.is_recent(now_s, window_s) {
            // The oldest history goes first when the table is full.
            Retention::Evictable(if self.last_end_s == 0 {
                u64::MAX - 1
            } else {
                self.last_end_s as u64
            })
        } else {
            Retention::Free
        }
    }
}

crate::shm_safe!(Offense);
