//! What is tracked per source address: its request rate and auth failures.

use super::table::{Entry, Retention};
use super::window::SlidingWindow;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceState {
    pub requests: SlidingWindow,
    pub auth_failures: SlidingWindow,
    pub last_seen_us: u64,
    /// How long this entry stays meaningful after `last_seen_us` (the longer
    /// of the pike and auth windows); after that it is reclaimable.
    pub keep_us: u64,
}

impl Entry for SourceState {
    fn retention(&self, now_us: u64) -> Retention {
        if self.last_seen_us.saturating_add(self.keep_us) <= now_us {
            Retention::Free
        } else {
            // Least recently seen goes first.
            Retention::Evictable(self.last_seen_us)
        }
    }
}

crate::shm_safe!(SourceState);
