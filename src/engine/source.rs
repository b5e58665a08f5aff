//! What is kept per source address, in one slot: its request and
//! authentication-failure counts while it is being watched, or its ban
//! while it is banned.
//!
//! A banned source's requests are refused before they are counted, so the
//! two never need to coexist: one slot holds either, and a flood check
//! finds a host's ban and counts its request with one lock and one slot.
//! The slot is 56 bytes with its 16-byte key (60 with its share of the
//! bucket's lock and tags):
//!
//! | field | bytes |
//! |---|---|
//! | key (IPv6 or IPv4-mapped address) | 16 |
//! | state tag (and alignment) | 8 |
//! | watching: request window (`u32` index, 8 × `u16`) | 20 |
//! | watching: auth-failure window (`u32` index, 8 × `u8`) | 12 |
//! | or banned: reason, created, expires, hits | 32 |

use super::bans::Ban;
use super::table::{Entry, Retention};
use super::window::{FailureWindow, SlidingWindow, WindowClock};

/// Counts of a source that is not banned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Watch {
    pub requests: SlidingWindow,
    pub auth_failures: FailureWindow,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostState {
    Watched(Watch),
    Banned(Ban),
}

impl Default for HostState {
    fn default() -> Self {
        HostState::Watched(Watch::default())
    }
}

/// What the table needs to judge a host entry: the two window lengths and
/// how long counts stay meaningful (the longer of the two).
#[derive(Clone, Copy, Debug, Default)]
pub struct HostTiming {
    pub pike_window_us: u64,
    pub auth_window_us: u64,
}

impl HostTiming {
    fn keep_us(&self) -> u64 {
        self.pike_window_us.max(self.auth_window_us)
    }
}

/// An instant as the hosts table judges it.
pub struct HostClock {
    now_us: u64,
    keep_us: u64,
    requests: WindowClock,
    auth: WindowClock,
}

impl Watch {
    /// Time since the newest event of either kind; None if there is none.
    pub fn age_us(&self, now_us: u64, t: &HostTiming) -> Option<u64> {
        self.age_at(&HostState::clock(now_us, t))
    }

    fn age_at(&self, c: &HostClock) -> Option<u64> {
        let r = self.requests.age_at(&c.requests);
        let a = self.auth_failures.age_at(&c.auth);
        match (r, a) {
            (Some(r), Some(a)) => Some(r.min(a)),
            (x, y) => x.or(y),
        }
    }
}

impl Entry for HostState {
    type Ctx = HostTiming;
    type Clock = HostClock;

    fn clock(now_us: u64, t: &HostTiming) -> HostClock {
        HostClock {
            now_us,
            keep_us: t.keep_us(),
            requests: WindowClock::new(now_us, t.pike_window_us),
            auth: WindowClock::new(now_us, t.auth_window_us),
        }
    }

    fn retention(&self, c: &HostClock) -> Retention {
        match self {
            HostState::Banned(b) => b.retention(&c.now_us),
            HostState::Watched(w) => match w.age_at(c) {
                Some(age) if age < c.keep_us => {
                    // Least recently seen goes first (to the sub-interval,
                    // in milliseconds); among those seen as recently, the
                    // busiest goes last, so a flood of spoofed one-request
                    // sources pushes out its own kind, not a real attacker
                    // being counted towards a ban.
                    let seen_ms = c.now_us.saturating_sub(age) / 1000;
                    let busy = w.requests.newest_count() + w.auth_failures.newest_count();
                    Retention::Evictable(seen_ms << 16 | busy.min(0xffff) as u64)
                }
                _ => Retention::Free,
            },
        }
    }
}

crate::shm_safe!(Watch, HostState);
