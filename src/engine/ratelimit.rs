//! Rate-limit keys: script-built strings, stored inline with a length.

use super::bucket::RateBucket;
use super::table::{Entry, Retention};
use super::text::{Text, TextError};

/// Longest key accepted by `sec_rl_check`.
pub const MAX_KEY_LEN: usize = 255;

/// A script-built key: compared and hashed by its used bytes only, so a
/// lookup reads the key's length and text, not the whole 256-byte array.
pub type RlKey = Text<MAX_KEY_LEN>;

/// Why a key was refused (empty, or too long).
pub type KeyError = TextError;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RlState {
    pub bucket: RateBucket,
    pub limit: u32,
    pub period_us: u64,
    pub last_us: u64,
}

impl Entry for RlState {
    type Ctx = ();
    type Clock = u64;

    fn clock(now_us: u64, _: &()) -> u64 {
        now_us
    }

    fn retention(&self, &now_us: &u64) -> Retention {
        if self.bucket.is_idle(now_us) {
            // A full bucket is the same as no entry at all.
            Retention::Free
        } else {
            Retention::Evictable(self.last_us)
        }
    }
}

crate::shm_safe!(RlState);
