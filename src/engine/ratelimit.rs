//! Rate-limit keys: script-built strings, stored inline with a length.

use super::bucket::RateBucket;
use super::table::{Entry, Retention};

/// Longest key accepted by `sec_rl_check`.
pub const MAX_KEY_LEN: usize = 255;

/// Compared and hashed by its used bytes only: a lookup reads the key's
/// length and text, not the whole 256-byte array.
#[derive(Clone, Copy)]
pub struct RlKey {
    len: u8,
    bytes: [u8; MAX_KEY_LEN],
}

impl Default for RlKey {
    fn default() -> Self {
        RlKey {
            len: 0,
            bytes: [0; MAX_KEY_LEN],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    Empty,
    TooLong(usize),
}

impl std::fmt::Display for KeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyError::Empty => write!(f, "key is empty"),
            KeyError::TooLong(n) => write!(
                f,
                "key is {n} bytes, longer than the {MAX_KEY_LEN}-byte limit"
            ),
        }
    }
}

impl RlKey {
    pub fn new(key: &[u8]) -> Result<RlKey, KeyError> {
        if key.is_empty() {
            return Err(KeyError::Empty);
        }
        if key.len() > MAX_KEY_LEN {
            return Err(KeyError::TooLong(key.len()));
        }
        let mut bytes = [0; MAX_KEY_LEN];
        bytes[..key.len()].copy_from_slice(key);
        Ok(RlKey {
            len: key.len() as u8,
            bytes,
        })
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

impl PartialEq for RlKey {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for RlKey {}

impl std::hash::Hash for RlKey {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        h.write(self.as_bytes());
    }
}

impl std::fmt::Debug for RlKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RlKey({:?})", String::from_utf8_lossy(self.as_bytes()))
    }
}

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

crate::shm_safe!(RlKey, RlState);
