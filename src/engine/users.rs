//! Accounts under attack: authentication failures counted per username
//! across all sources, so one extension attacked from hundreds of
//! addresses, each under every per-address threshold, is still seen.
//! Past `user_fail_threshold` in `user_fail_window` the account is
//! blocked for `user_block_time`; no address is banned (the script asks
//! `sec_user_blocked` and refuses that account's authentication).

use super::table::{Entry, Retention};
use super::text::Text;
use super::window::FailureWindow;

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
    /// Unix seconds of the last failure: profiles' windows differ in
    /// length, so the table judges an entry by this.
    pub last_fail_s: u32,
}

impl UserState {
    pub fn is_blocked(&self, now_us: u64) -> bool {
        self.blocked_us != 0 && self.block_ends_us > now_us
    }
}

impl Entry for UserState {
    /// The longest `user_fail_window` of any profile, µs.
    type Ctx = u64;
    type Clock = (u64, u64);

    fn clock(now_us: u64, &keep_us: &u64) -> Self::Clock {
        (now_us, keep_us)
    }

    fn retention(&self, &(now_us, keep_us): &Self::Clock) -> Retention {
        if self.is_blocked(now_us) {
            // Blocks are decisions, kept like bans.
            return Retention::Pinned;
        }
        super::source::by_last_event(self.last_fail_s, now_us, keep_us)
    }
}

crate::shm_safe!(UserState);
