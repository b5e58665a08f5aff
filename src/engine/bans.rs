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
}

impl Reason {
    pub const ALL: [Reason; 4] = [
        Reason::Manual,
        Reason::Pike,
        Reason::Auth,
        Reason::RateLimit,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Manual => "manual",
            Reason::Pike => "pike",
            Reason::Auth => "auth",
            Reason::RateLimit => "rl",
        }
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
    fn retention(&self, now_us: u64) -> Retention {
        if self.is_active(now_us) {
            Retention::Pinned
        } else {
            Retention::Free
        }
    }
}

/// Which prefix lengths have ever held a ban, so a lookup probes only those
/// (a host-only ban list costs one probe per request). Bits are only set,
/// never cleared: a stale bit costs one extra probe, a missing one would
/// let a banned prefix through.
#[derive(Default)]
pub struct PrefixIndex {
    bits: [AtomicU64; 3],
}

impl PrefixIndex {
    pub fn mark(&self, prefix: u8) {
        let p = prefix.min(128) as usize;
        self.bits[p / 64].fetch_or(1 << (p % 64), Ordering::Release);
    }

    /// Candidate keys for `ip`, most specific first.
    pub fn candidates(&self, ip: &IpKey) -> impl Iterator<Item = Cidr> + '_ {
        let ip = *ip;
        (0..=128u8)
            .rev()
            .filter(move |&p| {
                p == Cidr::HOST
                    || self.bits[p as usize / 64].load(Ordering::Acquire) & (1 << (p % 64)) != 0
            })
            .map(move |p| Cidr::new(ip, p))
    }
}

crate::shm_safe!(Reason, Ban, PrefixIndex);
