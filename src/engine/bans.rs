//! Ban entries and the per-prefix-length index that makes prefix bans cheap.

use std::sync::atomic::{AtomicU64, Ordering};

use super::ip::{Cidr, IpKey};
use super::table::{Entry, Retention};

/// Why a source is banned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Reason {
    #[default]
    Manual = 0,
    Pike = 1,
    Auth = 2,
    RateLimit = 3,
    /// Many addresses of one prefix banned at once: the prefix itself.
    Subnet = 4,
    /// Too many requests of one method (`pike_method_density`).
    Method = 5,
    /// One source failing authentication for many usernames.
    Enum = 6,
    /// A scanner's User-Agent or Server header.
    Scanner = 7,
    /// Abuse reported by the script (`sec_report`).
    Report = 8,
}

impl Reason {
    pub const ALL: [Reason; 9] = [
        Reason::Manual,
        Reason::Pike,
        Reason::Auth,
        Reason::RateLimit,
        Reason::Subnet,
        Reason::Method,
        Reason::Enum,
        Reason::Scanner,
        Reason::Report,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Manual => "manual",
            Reason::Pike => "pike",
            Reason::Auth => "auth",
            Reason::RateLimit => "rl",
            Reason::Subnet => "subnet",
            Reason::Method => "method",
            Reason::Enum => "enum",
            Reason::Scanner => "scanner",
            Reason::Report => "report",
        }
    }

    /// The reason stored as `reason as u8`; an unknown value (never
    /// written) reads as Manual.
    pub fn from_index(i: u8) -> Reason {
        Reason::ALL
            .get(i as usize)
            .copied()
            .unwrap_or(Reason::Manual)
    }

    pub fn parse(s: &str) -> Option<Reason> {
        Reason::ALL
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(s.trim()))
    }
}

/// One ban. `expires_us == 0` means until unbanned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ban {
    pub reason: Reason,
    pub created_us: u64,
    pub expires_us: u64,
    /// Requests seen from the source while banned.
    pub hits: u64,
}

impl Ban {
    pub fn is_active(&self, now_us: u64) -> bool {
        self.created_us != 0 && (self.expires_us == 0 || self.expires_us > now_us)
    }

    pub fn is_permanent(&self) -> bool {
        self.expires_us == 0
    }
}

impl Entry for Ban {
    type Ctx = ();
    type Clock = u64;

    fn clock(now_us: u64, _: &()) -> u64 {
        now_us
    }

    fn retention(&self, &now_us: &u64) -> Retention {
        if self.is_active(now_us) {
            Retention::Pinned
        } else {
            Retention::Free
        }
    }
}

/// Which prefix lengths have ever held a ban outside the hosts table, so a
/// lookup probes only those, and none at all while there are only bans of
/// tracked units (hosts, or IPv6 prefixes of `ipv6_track_prefix`), which
/// live with their counts (see `source.rs`). Bits are only set, never
/// cleared: a stale bit costs one extra probe, a missing one would let a
/// banned prefix through. Lengths run 0 to 128: with IPv6 tracked per
/// /64, a ban on one /128 is a prefix ban too.
#[derive(Default)]
pub struct PrefixIndex {
    bits: [AtomicU64; 3],
}

impl PrefixIndex {
    /// Records that prefixes of this length may be banned.
    pub fn mark(&self, prefix: u8) {
        let p = prefix.min(128) as usize;
        self.bits[p / 64].fetch_or(1 << (p % 64), Ordering::Release);
    }

    /// True when some prefix ban may exist.
    pub fn any(&self) -> bool {
        self.bits.iter().any(|b| b.load(Ordering::Acquire) != 0)
    }

    /// Candidate prefix-ban keys for `ip`, most specific first.
    pub fn candidates(&self, ip: &IpKey) -> impl Iterator<Item = Cidr> + '_ {
        let ip = *ip;
        let mut words = [
            self.bits[2].load(Ordering::Acquire),
            self.bits[1].load(Ordering::Acquire),
            self.bits[0].load(Ordering::Acquire),
        ];
        let mut w = 0;
        std::iter::from_fn(move || {
            while w < words.len() {
                if words[w] != 0 {
                    let bit = 63 - words[w].leading_zeros();
                    words[w] &= !(1 << bit);
                    let p = (2 - w as u32) * 64 + bit;
                    return Some(Cidr::new(ip, p as u8));
                }
                w += 1;
            }
            None
        })
    }
}

crate::shm_safe!(Reason, Ban, PrefixIndex);
