//! Prefix aggregation: how many tracked units (IPv4 hosts, IPv6 prefixes
//! of `ipv6_track_prefix`) are banned right now inside each prefix of
//! `subnet_prefix_v4` / `subnet_prefix_v6`. When the count reaches
//! `subnet_ban_threshold` the prefix itself is banned (reason `subnet`):
//! a botnet rotating through a /24 is stopped as one.
//!
//! The count rises when a unit's ban is made and falls when it ends, so
//! it is bounded by the bans in force: the table has `max_bans` entries.

use super::table::{Entry, Retention};

/// Units banned in one prefix.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BannedInside {
    pub count: u32,
}

impl Entry for BannedInside {
    type Ctx = ();
    type Clock = ();

    fn clock(_: u64, _: &()) {}

    fn retention(&self, _: &()) -> Retention {
        match self.count {
            0 => Retention::Free,
            n => Retention::Evictable(n as u64),
        }
    }
}

crate::shm_safe!(BannedInside);
