//! What is kept of a source whose behaviour is suspect, beside its flood
//! counts: the weight of abuse the script reported (`sec_report`), and the
//! usernames it failed to authenticate as (enumeration). Its own table
//! (`max_suspects` entries) since only misbehaving sources need one, and
//! the username set would not fit a tracked source's 64 bytes.

use super::table::{Entry, Retention};
use super::window::SlidingWindow;

/// Distinct usernames remembered per source: `enum_threshold` is at most
/// this.
pub const ENUM_MAX: usize = 32;

/// 20 bytes of report window and 256 of usernames.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Suspect {
    /// Reported weight, in a sliding window of `report_window`.
    pub reports: SlidingWindow,
    /// Fingerprints (32 bits of a keyed hash; 0 = free) of the usernames
    /// that failed, with when each last failed (Unix seconds).
    users: [u32; ENUM_MAX],
    failed_s: [u32; ENUM_MAX],
    /// Unix seconds of the last report: profiles' report windows differ in
    /// length, so the table judges the reports by this.
    pub last_report_s: u32,
}

/// Window lengths, from the configuration.
#[derive(Clone, Copy, Debug, Default)]
pub struct SuspectTiming {
    pub report_window_us: u64,
    pub enum_window_s: u32,
}

impl Suspect {
    fn live(&self, now_s: u32, window_s: u32) -> impl Iterator<Item = usize> + '_ {
        (0..ENUM_MAX).filter(move |&i| {
            self.users[i] != 0 && now_s.saturating_sub(self.failed_s[i]) < window_s
        })
    }

    /// Distinct usernames that failed within the window.
    pub fn users_failed(&self, now_s: u32, window_s: u32) -> u32 {
        self.live(now_s, window_s).count() as u32
    }

    /// Records a failure for the username with fingerprint `fp` (not 0)
    /// and returns the distinct usernames in the window. When all places
    /// are taken, the username that failed longest ago gives way.
    pub fn user_failed(&mut self, fp: u32, now_s: u32, window_s: u32) -> u32 {
        let fp = fp.max(1);
        let at = (0..ENUM_MAX)
            .find(|&i| self.users[i] == fp)
            .or_else(|| {
                (0..ENUM_MAX).find(|&i| {
                    self.users[i] == 0 || now_s.saturating_sub(self.failed_s[i]) >= window_s
                })
            })
            .unwrap_or_else(|| (0..ENUM_MAX).min_by_key(|&i| self.failed_s[i]).unwrap_or(0));
        self.users[at] = fp;
        self.failed_s[at] = now_s;
        self.users_failed(now_s, window_s)
    }

    /// Newest activity, in microseconds, if any is still in its window.
    fn seen_us(&self, now_us: u64, t: &SuspectTiming) -> Option<u64> {
        let now_s = (now_us / 1_000_000) as u32;
        let reports =
            match super::source::by_last_event(self.last_report_s, now_us, t.report_window_us) {
                Retention::Evictable(ms) => Some(ms * 1000),
                _ => None,
            };
        let users = self
            .live(now_s, t.enum_window_s)
            .map(|i| self.failed_s[i] as u64 * 1_000_000)
            .max();
        reports.max(users)
    }
}

impl Entry for Suspect {
    type Ctx = SuspectTiming;
    type Clock = (u64, SuspectTiming);

    fn clock(now_us: u64, t: &SuspectTiming) -> (u64, SuspectTiming) {
        (now_us, *t)
    }

    fn retention(&self, (now_us, t): &(u64, SuspectTiming)) -> Retention {
        match self.seen_us(*now_us, t) {
            Some(us) => Retention::Evictable(us / 1000),
            None => Retention::Free,
        }
    }
}

crate::shm_safe!(Suspect);
