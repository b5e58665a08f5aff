//! Sliding-window event counter of fixed size.
//!
//! The window is split into [`SLOTS`] sub-intervals. The count is the sum of
//! the current sub-interval and the `SLOTS - 1` before it, so it always
//! covers between `(SLOTS-1)/SLOTS` and all of the window, never more: an
//! event older than the window is never counted. Unlike a counter that
//! resets at interval edges, a burst that straddles an edge is still seen
//! whole.

/// Sub-intervals per window.
pub const SLOTS: usize = 8;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlidingWindow {
    /// Index (time / width) of the newest sub-interval held in `counts`.
    newest: u64,
    counts: [u32; SLOTS],
}

impl SlidingWindow {
    fn width(window_us: u64) -> u64 {
        (window_us / SLOTS as u64).max(1)
    }

    /// Moves the window forward to `now`, clearing sub-intervals that fell out.
    fn advance(&mut self, now_us: u64, window_us: u64) {
        let idx = now_us / Self::width(window_us);
        if idx <= self.newest {
            return;
        }
        let gap = idx - self.newest;
        if gap >= SLOTS as u64 {
            self.counts = [0; SLOTS];
        } else {
            for k in 1..=gap {
                self.counts[((self.newest + k) % SLOTS as u64) as usize] = 0;
            }
        }
        self.newest = idx;
    }

    /// Records `n` events at `now` and returns the count in the window.
    pub fn add(&mut self, now_us: u64, window_us: u64, n: u32) -> u32 {
        self.advance(now_us, window_us);
        let slot = &mut self.counts[(self.newest % SLOTS as u64) as usize];
        *slot = slot.saturating_add(n);
        self.total(now_us, window_us)
    }

    /// Events in the window ending at `now`, without recording one.
    pub fn total(&self, now_us: u64, window_us: u64) -> u32 {
        let idx = now_us / Self::width(window_us);
        if idx >= self.newest + SLOTS as u64 {
            return 0;
        }
        let mut sum = 0u32;
        for k in 0..SLOTS as u64 {
            // Sub-intervals newer than `now` (clock stepped back) still count:
            // forgetting them would let a burst through.
            let Some(i) = self.newest.checked_sub(k) else {
                break;
            };
            if i + SLOTS as u64 > idx {
                sum = sum.saturating_add(self.counts[(i % SLOTS as u64) as usize]);
            }
        }
        sum
    }

    /// Time of the newest event recorded, rounded down to a sub-interval.
    pub fn last_us(&self, window_us: u64) -> u64 {
        self.newest * Self::width(window_us)
    }

    pub fn clear(&mut self) {
        *self = SlidingWindow::default();
    }
}

crate::shm_safe!(SlidingWindow);
