//! Accounts under attack: authentication failures counted per username
//! across all sources, so one extension attacked from hundreds of
//! addresses, each under every per-address threshold, is still seen.
//! Past `user_fail_threshold` in `user_fail_window` the account is
//! blocked for `user_block_time`; no address is banned (the script asks
//! `sec_user_blocked` and refuses that account's authentication).

use super::table::{Entry, Retention};
use super::text::Text;
use super::window::{FailureWindow, WindowClock};

/// Longest username kept; longer ones are counted under their first 64
/// bytes.
pub const USER_MAX: usize = 64;

pub type UserKey = Text<USER_MAX>;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UserState {
    pub failures: FailureWindow,
    /// When the block was made and when it ends (µs); 0 = not blocked.
    pub blocked_us: u64,
    pub block_ends_us: u64,
}

impl UserState {
    pub fn is_blocked(&self, now_us: u64) -> bool {
        self.blocked_us != 0 && self.block_ends_us > now_us
    }
}

impl Entry for UserState {
    /// `user_fail_window`, µs.
    type Ctx = u64;
    type Clock = (u64, WindowClock, u64);

    fn clock(now_us: u64, &window_us: &u64) -> Self::Clock {
        (now_us, WindowClock::new(now_us, window_us), window_us)
    }

    fn retention(&self, (now_us, c, window_us): &Self::Clock) -> Retention {
        if self.is_blocked(*now_us) {
            // Blocks are decisions, kept like bans.
            return Retention::Pinned;
        }
        match self.failures.age_at(c) {
            Some(age) if age < *window_us => Retention::Evictable(now_us.saturating_sub(age)),
            _ => Retention::Free,
        }
    }
}

crate::shm_safe!(UserState);
