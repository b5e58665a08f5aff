//! Sliding-window event counter of fixed, small size.
//!
//! The window is split into [`SLOTS`] sub-intervals. The count is the sum of
//! the current sub-interval and the `SLOTS - 1` before it, so it always
//! covers between `(SLOTS-1)/SLOTS` and all of the window, never more: an
//! event older than the window is never counted. Unlike a counter that
//! resets at interval edges, a burst that straddles an edge is still seen
//! whole.
//!
//! Size is what matters here: one window per tracked source sits in the
//! hot slot of every request. The newest sub-interval's index is kept in
//! 32 bits (compared with wrapping arithmetic, so only how far apart two
//! indexes are matters, never their absolute value) and each sub-interval
//! count in the narrowest type that holds the threshold it is compared
//! with: 20 bytes for request counts ([`SlidingWindow`], `u16`), 12 for
//! authentication failures ([`FailureWindow`], `u8`), against 40 for eight
//! `u32` and a 64-bit timestamp. Counts saturate; a saturated sum is still
//! at least the narrow type's maximum, so a threshold below that maximum
//! stays exact (see [`Count::MAX`]).

/// Sub-intervals per window.
pub const SLOTS: usize = 8;

/// A sub-interval count: `u16` or `u8`.
pub trait Count: Copy + Default + Eq + std::fmt::Debug + crate::shm::ShmSafe {
    /// The largest count held; sums at or above it may be saturated, so
    /// thresholds must stay below it.
    const MAX: u32;
    fn get(self) -> u32;
    /// `v` clamped to [`Count::MAX`].
    fn saturating(v: u32) -> Self;
}

macro_rules! counts {
    ($($t:ty),*) => {$(
        impl Count for $t {
            const MAX: u32 = <$t>::MAX as u32;
            fn get(self) -> u32 {
                self as u32
            }
            fn saturating(v: u32) -> Self {
                v.min(<Self as Count>::MAX) as $t
            }
        }
    )*};
}

counts!(u16, u8);

/// One instant as a window of a given length sees it: worked out once
/// (one division, for the index and the remainder) and then used for any
/// number of windows of that length.
#[derive(Clone, Copy, Debug)]
pub struct WindowClock {
    /// The sub-interval `now` falls in. Only differences between indexes
    /// are used, so the truncation to 32 bits is harmless (it would take
    /// 2^31 sub-intervals between two events of one entry to mislead it,
    /// and an entry that idle has long been swept).
    idx: u32,
    width: u64,
    /// Time since the start of the current sub-interval.
    into: u64,
}

impl WindowClock {
    pub fn new(now_us: u64, window_us: u64) -> WindowClock {
        let width = (window_us / SLOTS as u64).max(1);
        WindowClock {
            idx: (now_us / width) as u32,
            width,
            into: now_us % width,
        }
    }
}

/// Counts in one window; `C` is the width of one sub-interval's count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Window<C: Count> {
    /// Index (time / width, modulo 2^32) of the newest sub-interval held in
    /// `counts`; meaningless while every count is zero.
    newest: u32,
    counts: [C; SLOTS],
}

/// Request counts: thresholds up to 65,534 are exact.
pub type SlidingWindow = Window<u16>;
/// Authentication failure counts: thresholds up to 255 are exact.
pub type FailureWindow = Window<u8>;

impl<C: Count> Window<C> {
    /// `a - b` in sub-intervals, negative when `a` is older.
    fn ahead(a: u32, b: u32) -> i64 {
        a.wrapping_sub(b) as i32 as i64
    }

    pub fn is_empty(&self) -> bool {
        self.counts.iter().all(|&c| c == C::default())
    }

    /// Moves the window forward to `idx`, clearing sub-intervals that fell out.
    fn advance(&mut self, idx: u32) {
        if self.is_empty() {
            self.newest = idx;
            return;
        }
        let gap = Self::ahead(idx, self.newest);
        if gap <= 0 {
            // Same sub-interval, or the clock stepped back: keep counting
            // into the newest one rather than forget anything.
            return;
        }
        if gap >= SLOTS as i64 {
            self.counts = [C::default(); SLOTS];
        } else {
            for k in 1..=gap as u32 {
                self.counts[(self.newest.wrapping_add(k) % SLOTS as u32) as usize] = C::default();
            }
        }
        self.newest = idx;
    }

    /// Records `n` events at `now` and returns the count in the window.
    pub fn add(&mut self, now_us: u64, window_us: u64, n: u32) -> u32 {
        self.advance(WindowClock::new(now_us, window_us).idx);
        let slot = &mut self.counts[(self.newest % SLOTS as u32) as usize];
        *slot = C::saturating(slot.get().saturating_add(n));
        self.total(now_us, window_us)
    }

    /// Events in the window ending at `now`, without recording one.
    pub fn total(&self, now_us: u64, window_us: u64) -> u32 {
        let idx = WindowClock::new(now_us, window_us).idx;
        let mut sum = 0u32;
        for k in 0..SLOTS as u32 {
            let i = self.newest.wrapping_sub(k);
            // Sub-intervals newer than `now` (clock stepped back) still
            // count: forgetting them would let a burst through.
            if Self::ahead(idx, i) < SLOTS as i64 {
                sum += self.counts[(i % SLOTS as u32) as usize].get();
            }
        }
        sum
    }

    /// Time since the start of the sub-interval of the newest event (an
    /// event's time is known to its sub-interval); None when nothing is
    /// recorded.
    pub fn age_us(&self, now_us: u64, window_us: u64) -> Option<u64> {
        self.age_at(&WindowClock::new(now_us, window_us))
    }

    /// [`Window::age_us`] at an instant worked out beforehand.
    pub fn age_at(&self, c: &WindowClock) -> Option<u64> {
        if self.is_empty() {
            return None;
        }
        let gap = Self::ahead(c.idx, self.newest).max(0) as u64;
        Some(gap * c.width + c.into)
    }

    /// Events in the newest sub-interval: a cheap measure of how busy the
    /// source is right now.
    pub fn newest_count(&self) -> u32 {
        self.counts[(self.newest % SLOTS as u32) as usize].get()
    }

    pub fn clear(&mut self) {
        *self = Self::default();
    }
}

crate::shm_safe!(Window<u16>, Window<u8>);
