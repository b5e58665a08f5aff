//! What is kept per source address, in one slot: its request and
//! authentication-failure counts while it is being watched, or its ban
//! (and its request count) while it is banned.
//!
//! A banned source's failures no longer matter and its requests are
//! refused, so one slot holds either state, and a flood check finds a
//! host's ban, counts its request and bans it with one lock and one slot.
//! The slot is 60 bytes with its 16-byte key, 64 with its share of the
//! bucket's lock and tags:
//!
//! | field | bytes |
//! |---|---|
//! | key (IPv6 or IPv4-mapped address) | 16 |
//! | state tag (and alignment) | 4 |
//! | request window (`u32` index, 8 × `u16`), in both states | 20 |
//! | watched: auth-failure window (`u32` index, 8 × `u8`) | 12 |
//! | or banned: expiry (µs), creation (ms), hits, reason | 20 |

use super::bans::{Ban, Reason};
use super::table::{Entry, Retention};
use super::window::{FailureWindow, SlidingWindow, WindowClock};

/// Counts of a source that is not banned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Watch {
    pub requests: SlidingWindow,
    pub auth_failures: FailureWindow,
}

/// A ban as a host's slot keeps it: 20 bytes with 4-byte alignment (a
/// [`Ban`] is 32), every time to the microsecond: the creation time is
/// whole seconds (32 bits, good until 2106) and the microseconds beside
/// the reason in one word.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostBan {
    expires_us: [u32; 2],
    created_s: u32,
    hits: u32,
    /// Reason in the top byte, microseconds of the creation second below.
    reason_created_us: u32,
}

impl HostBan {
    pub fn new(b: &Ban) -> HostBan {
        HostBan {
            expires_us: [(b.expires_us >> 32) as u32, b.expires_us as u32],
            created_s: (b.created_us / 1_000_000) as u32,
            hits: b.hits.min(u32::MAX as u64) as u32,
            reason_created_us: (b.reason as u32) << 24 | (b.created_us % 1_000_000) as u32,
        }
    }

    pub fn get(&self) -> Ban {
        Ban {
            reason: self.reason(),
            created_us: self.created_s as u64 * 1_000_000
                + (self.reason_created_us & 0x00ff_ffff) as u64,
            expires_us: (self.expires_us[0] as u64) << 32 | self.expires_us[1] as u64,
            hits: self.hits as u64,
        }
    }

    pub fn reason(&self) -> Reason {
        Reason::from_index((self.reason_created_us >> 24) as u8)
    }

    /// One more request refused by this ban.
    pub fn hit(&mut self) {
        self.hits = self.hits.saturating_add(1);
    }
}

/// A banned host: its ban, and its requests still counted, so operators
/// see how hard a banned source keeps trying (`sec_top`, `sec_ip_info`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Banned {
    pub ban: HostBan,
    pub requests: SlidingWindow,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostState {
    Watched(Watch),
    Banned(Banned),
}

impl HostState {
    /// The request window, in either state.
    pub fn requests(&self) -> &SlidingWindow {
        match self {
            HostState::Watched(w) => &w.requests,
            HostState::Banned(b) => &b.requests,
        }
    }
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
            HostState::Banned(b) => b.ban.get().retention(&c.now_us),
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

/// A tenant's source counts (`sec_top` per tenant), windows of the
/// default profile: judged like a watched host.
impl Entry for Watch {
    type Ctx = HostTiming;
    type Clock = HostClock;

    fn clock(now_us: u64, t: &HostTiming) -> HostClock {
        HostState::clock(now_us, t)
    }

    fn retention(&self, c: &HostClock) -> Retention {
        HostState::Watched(*self).retention(c)
    }
}

/// A source's counts under one profile. Profiles count over windows of
/// their own lengths, and a window's position only means something at its
/// own length, so the table judges an entry by when it last counted,
/// against the longest window any profile has: never freed while some
/// profile's window may still hold its counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProfiledWatch {
    pub watch: Watch,
    /// Unix seconds of the last event counted (0: none).
    pub last_s: u32,
}

impl ProfiledWatch {
    /// Notes an event at `now_us`.
    pub fn touch(&mut self, now_us: u64) {
        self.last_s = (now_us / 1_000_000) as u32;
    }
}

/// Retention by the last event, for entries whose windows vary in length:
/// kept (least recently seen evicted first) while `last_s` is within
/// `keep_us` (plus one second for its truncation) of now.
pub fn by_last_event(last_s: u32, now_us: u64, keep_us: u64) -> Retention {
    if last_s == 0 {
        return Retention::Free;
    }
    let last_us = last_s as u64 * 1_000_000;
    if now_us.saturating_sub(last_us) < keep_us + 1_000_000 {
        Retention::Evictable(last_us / 1000)
    } else {
        Retention::Free
    }
}

impl Entry for ProfiledWatch {
    /// The longest flood or auth window of any profile, µs.
    type Ctx = u64;
    type Clock = (u64, u64);

    fn clock(now_us: u64, &keep_us: &u64) -> (u64, u64) {
        (now_us, keep_us)
    }

    fn retention(&self, &(now_us, keep_us): &(u64, u64)) -> Retention {
        by_last_event(self.last_s, now_us, keep_us)
    }
}

/// A source under one profile: the profiles' table keeps counts per
/// (profile, source), so a trunk's traffic never eats a phone's budget.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ProfiledKey {
    pub profile: u8,
    /// The tenant, for a profile whose bans are per tenant
    /// (`ban_scope=tenant`): counted per tenant too; else 0.
    pub tenant: u32,
    pub unit: super::ip::IpKey,
}

crate::shm_safe!(
    Watch,
    HostBan,
    Banned,
    HostState,
    ProfiledKey,
    ProfiledWatch
);

const _: () = assert!(
    std::mem::size_of::<HostState>() <= 44,
    "a host's slot (key and state) must stay within 60 bytes"
);
