//! Smooth rate limiting with the generic cell rate algorithm (GCRA).
//!
//! One 64-bit "theoretical arrival time" per key replaces a token count and
//! its refill timer: requests are spaced `period / limit` apart, with a burst
//! tolerance of `limit` such intervals, i.e. one period (so `limit` requests
//! may arrive at once, then the budget refills continuously). A rejected
//! request leaves the state untouched, so it does not use up the budget.
//!
//! The interval is whole microseconds, so the tolerance is `limit * interval`
//! rather than `period`: when `limit` does not divide `period`, comparing the
//! backlog against `period` would let `period / interval` (> `limit`)
//! requests through at once.

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateBucket {
    /// Theoretical arrival time of the next conforming request.
    tat_us: u64,
}

impl RateBucket {
    /// Tries to take one request at `now`. `limit` requests per `period_us`.
    /// A zero `limit` refuses every request.
    pub fn try_take(&mut self, now_us: u64, limit: u32, period_us: u64) -> bool {
        let Some((interval, tolerance)) = Self::spacing(limit, period_us) else {
            return false;
        };
        let tat = self.tat_us.max(now_us);
        let new_tat = tat + interval;
        // Allowed while the backlog (new_tat - now) fits in `limit` intervals.
        if new_tat - now_us > tolerance {
            return false;
        }
        self.tat_us = new_tat;
        true
    }

    /// Requests that could be taken right now without waiting.
    pub fn available(&self, now_us: u64, limit: u32, period_us: u64) -> u32 {
        let Some((interval, tolerance)) = Self::spacing(limit, period_us) else {
            return 0;
        };
        let backlog = self.tat_us.saturating_sub(now_us);
        ((tolerance.saturating_sub(backlog)) / interval).min(limit as u64) as u32
    }

    /// Emission interval and burst tolerance (`limit` whole intervals), or
    /// None for a zero limit.
    fn spacing(limit: u32, period_us: u64) -> Option<(u64, u64)> {
        if limit == 0 {
            return None;
        }
        let interval = (period_us / limit as u64).max(1);
        Some((interval, interval * limit as u64))
    }

    /// True once the bucket is full again: the entry carries no state worth
    /// keeping and may be reclaimed.
    pub fn is_idle(&self, now_us: u64) -> bool {
        self.tat_us <= now_us
    }

    pub fn tat_us(&self) -> u64 {
        self.tat_us
    }
}

crate::shm_safe!(RateBucket);
