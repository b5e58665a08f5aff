//! SlidingWindow (src/engine/window.rs) and the GCRA RateBucket
//! (src/engine/bucket.rs). Every time is an explicit microsecond value.

use rsec::engine::bucket::RateBucket;
use rsec::engine::window::{FailureWindow, SlidingWindow, SLOTS};

/// A wall-clock-like start time, a multiple of every window used here.
const T0: u64 = 1_800_000_000_000_000;
const SEC: u64 = 1_000_000;

// ============================================================ SlidingWindow

/// 8 s window: 1 s sub-intervals.
const W: u64 = 8 * SEC;
const WIDTH: u64 = W / SLOTS as u64;

#[test]
fn slots_constant_matches_the_window_layout() {
    assert_eq!(SLOTS, 8);
    assert_eq!(WIDTH, SEC);
}

#[test]
fn counts_events_within_the_window() {
    let mut w = SlidingWindow::default();
    assert_eq!(w.total(T0, W), 0);
    for i in 1..=5u32 {
        assert_eq!(w.add(T0 + i as u64 * 1000, W, 1), i);
    }
    assert_eq!(w.add(T0 + 2 * SEC, W, 3), 8);
    assert_eq!(w.add(T0 + 7 * SEC + 999_999, W, 2), 10);
    assert_eq!(w.total(T0 + 7 * SEC + 999_999, W), 10);
    // total() does not record anything.
    assert_eq!(w.total(T0 + 7 * SEC + 999_999, W), 10);
    assert_eq!(w.age_us(T0 + 7 * SEC + 999_999, W), Some(999_999));
    assert_eq!(w.age_us(T0 + 9 * SEC, W), Some(2 * SEC));
}

/// Checks the ageing edges of one event recorded at `t`.
fn check_edges(t: u64, window: u64) {
    let width = window / SLOTS as u64;
    let mut w = SlidingWindow::default();
    assert_eq!(w.add(t, window, 1), 1);
    // Still counted one sub-interval short of the window (for a window that
    // is a multiple of SLOTS, `t + window - width - 1`)...
    let min_covered = (SLOTS as u64 - 1) * width;
    if window % SLOTS as u64 == 0 {
        assert_eq!(min_covered, window - width);
    }
    assert_eq!(
        w.total(t + min_covered - 1, window),
        1,
        "t={t} window={window}"
    );
    // ...up to the end of the 8th sub-interval it landed in...
    let expiry = (t / width + SLOTS as u64) * width;
    assert!(
        expiry <= t + window,
        "never counted for longer than the window"
    );
    assert_eq!(w.total(expiry - 1, window), 1, "t={t} window={window}");
    // ...and gone from then on, in particular a full window later.
    assert_eq!(w.total(expiry, window), 0, "t={t} window={window}");
    assert_eq!(w.total(t + window, window), 0, "t={t} window={window}");
    assert_eq!(w.total(t + window + 1, window), 0, "t={t} window={window}");
    assert_eq!(w.total(t + 10 * window, window), 0, "t={t} window={window}");
    // Same through add(): the old event no longer contributes.
    let mut w2 = w;
    assert_eq!(w2.add(t + min_covered - 1, window, 1), 2);
    let mut w3 = w;
    assert_eq!(w3.add(t + window, window, 1), 1);
}

#[test]
fn events_age_out_exactly_after_the_window() {
    for t in [
        T0,
        T0 + 1,
        T0 + WIDTH / 2,
        T0 + WIDTH - 1,
        T0 + WIDTH,
        T0 + 3 * WIDTH + 12_345,
    ] {
        check_edges(t, W);
    }
    // The module's real windows: 2 s pike sampling, 60 s auth window.
    for window in [2 * SEC, 60 * SEC, 3 * SEC, 1_000_003] {
        let width = window / SLOTS as u64;
        for t in [T0, T0 + 1, T0 + width - 1, T0 + width, T0 + 777_777] {
            check_edges(t, window);
        }
    }
}

#[test]
fn window_not_multiple_of_slots_never_counts_longer_than_the_window() {
    let window = 1_000_007; // width 125_000, 8 * width = 1_000_000 <= window
    let mut w = SlidingWindow::default();
    for t in (T0..T0 + 3 * window).step_by(31_337) {
        let mut x = w;
        x.add(t, window, 1);
        assert_eq!(x.total(t + window, window), 0, "t={t}");
        assert_eq!(x.total(t, window), w.total(t, window) + 1);
        w = x;
    }
}

#[test]
fn sub_intervals_drop_one_at_a_time() {
    let mut w = SlidingWindow::default();
    // 1, 2, 4, ... 128 events in the 8 consecutive sub-intervals.
    for k in 0..8u64 {
        w.add(T0 + k * WIDTH + 500, W, 1 << k);
    }
    assert_eq!(w.total(T0 + 7 * WIDTH + 999_999, W), 255);
    // Each time the window moves one sub-interval, the oldest goes.
    let mut expected = 255u32;
    for k in 0..8u64 {
        expected -= 1 << k;
        assert_eq!(w.total(T0 + (8 + k) * WIDTH, W), expected, "k={k}");
        assert_eq!(w.total(T0 + (9 + k) * WIDTH - 1, W), expected, "k={k}");
    }
    // Advancing by add() clears exactly the same sub-intervals.
    let mut a = w;
    assert_eq!(a.add(T0 + 10 * WIDTH, W, 0), 255 - 1 - 2 - 4);
    assert_eq!(a.add(T0 + 13 * WIDTH, W, 0), 64 + 128);
    assert_eq!(a.add(T0 + 15 * WIDTH, W, 5), 5);
}

#[test]
fn burst_straddling_a_sub_interval_boundary_is_fully_counted() {
    let boundary = T0 + 5 * WIDTH;
    let mut w = SlidingWindow::default();
    for i in 0..10u64 {
        w.add(boundary - 10 + i, W, 1);
    }
    for i in 0..10u64 {
        assert_eq!(w.add(boundary + i, W, 1), 11 + i as u32);
    }
    assert_eq!(w.total(boundary + WIDTH, W), 20);
    // A counter that resets at interval edges would see 10 here.
    assert_eq!(w.total(boundary + 6 * WIDTH, W), 20);
    // The first half ages out first, the second a sub-interval later.
    assert_eq!(w.total(boundary + 7 * WIDTH, W), 10);
    assert_eq!(w.total(boundary + 8 * WIDTH, W), 0);
}

#[test]
fn long_gaps_clear_everything() {
    for gap in [W, W + 1, 2 * W, 100 * W, 1_000_000 * W] {
        let mut w = SlidingWindow::default();
        for k in 0..8u64 {
            w.add(T0 + k * WIDTH, W, 1000);
        }
        let later = T0 + 7 * WIDTH + gap;
        assert_eq!(w.total(later, W), 0, "gap {gap}");
        assert_eq!(w.add(later, W, 1), 1, "gap {gap}");
        // And nothing resurfaces afterwards.
        for k in 1..20u64 {
            assert_eq!(
                w.total(later + k * WIDTH / 2, W),
                if k < 16 { 1 } else { 0 },
                "gap {gap} k {k}"
            );
        }
    }
}

#[test]
fn gap_of_exactly_the_window_in_sub_intervals() {
    let mut w = SlidingWindow::default();
    w.add(T0, W, 7);
    // 7 sub-intervals later: still there.
    assert_eq!(w.add(T0 + 7 * WIDTH, W, 1), 8);
    // 8 sub-intervals after the first: the first one is gone.
    assert_eq!(w.add(T0 + 8 * WIDTH, W, 1), 2);
}

#[test]
fn time_stepping_backwards_does_not_lose_counts() {
    let mut w = SlidingWindow::default();
    assert_eq!(w.add(T0 + 5 * WIDTH, W, 3), 3);
    // The clock steps back by a few sub-intervals, and by more than a window.
    assert_eq!(w.add(T0 + 2 * WIDTH, W, 1), 4);
    assert_eq!(w.total(T0 + 2 * WIDTH, W), 4);
    assert_eq!(w.add(T0 + 5 * WIDTH - 3 * W, W, 1), 5);
    assert_eq!(w.total(T0, W), 5);
    assert_eq!(w.total(T0 + 5 * WIDTH, W), 5);
    // The late events are held with the newest sub-interval and age with it.
    assert_eq!(w.total(T0 + 13 * WIDTH - 1, W), 5);
    assert_eq!(w.total(T0 + 13 * WIDTH, W), 0);
    assert_eq!(w.age_us(T0 + 5 * WIDTH, W), Some(0));
    assert_eq!(w.age_us(T0 + 8 * WIDTH, W), Some(3 * WIDTH));
}

#[test]
fn time_stepping_backwards_keeps_earlier_sub_intervals() {
    let mut w = SlidingWindow::default();
    w.add(T0, W, 1);
    w.add(T0 + 3 * WIDTH, W, 2);
    w.add(T0 + 6 * WIDTH, W, 4);
    // Looking from before the newest sub-interval still sees all of them.
    assert_eq!(w.total(T0 + 4 * WIDTH, W), 7);
    assert_eq!(w.total(T0 + WIDTH, W), 7);
    assert_eq!(w.add(T0 + 4 * WIDTH, W, 1), 8);
}

#[test]
fn counts_saturate_at_or_above_the_narrow_maximum() {
    // Request counts: 16 bits per sub-interval. A sum is never below the
    // true count or 65,535, whichever is smaller, so densities up to
    // 65,534 are judged exactly.
    let mut w = SlidingWindow::default();
    assert_eq!(w.add(T0, W, u32::MAX), 65_535);
    assert_eq!(w.add(T0, W, 5), 65_535);
    assert_eq!(w.add(T0 + WIDTH, W, 5), 65_540);
    // Failure counts: 8 bits.
    let mut f = FailureWindow::default();
    for i in 1..=255u32 {
        assert_eq!(f.add(T0, W, 1), i);
    }
    assert_eq!(f.add(T0, W, 1), 255);
    assert_eq!(f.add(T0 + WIDTH, W, 1), 256);
}

#[test]
fn an_empty_window_reads_zero_whatever_the_time() {
    // The newest index is 32 bits and compared by difference; a window
    // that never counted has no meaningful index and must read 0 at any
    // time, including times whose index wraps 32 bits.
    let w = SlidingWindow::default();
    for t in [0, T0, u64::MAX / 2, (1u64 << 32) * WIDTH + 3] {
        assert_eq!(w.total(t, W), 0);
        assert_eq!(w.age_us(t, W), None);
    }
    let mut w = SlidingWindow::default();
    let t = (1u64 << 32) * WIDTH + 5 * WIDTH;
    assert_eq!(w.add(t, W, 2), 2);
    assert_eq!(w.total(t + 7 * WIDTH, W), 2);
    assert_eq!(w.total(t + 8 * WIDTH, W), 0);
}

#[test]
fn clear_resets() {
    let mut w = SlidingWindow::default();
    w.add(T0, W, 9);
    w.clear();
    assert_eq!(w, SlidingWindow::default());
    assert_eq!(w.total(T0, W), 0);
    assert_eq!(w.add(T0, W, 1), 1);
}

// =============================================================== RateBucket

/// Takes from `b` at `now` until refused; returns how many were taken.
fn drain(b: &mut RateBucket, now: u64, limit: u32, period: u64) -> u64 {
    let mut n = 0u64;
    while b.try_take(now, limit, period) {
        n += 1;
        assert!(
            n <= limit as u64 + 1,
            "limit {limit} per {period}: burst exceeds the limit"
        );
    }
    n
}

#[test]
fn burst_of_exactly_limit_then_rejection() {
    for (limit, period) in [
        (1u32, SEC),
        (2, SEC),
        (3, SEC),
        (5, SEC),
        (7, SEC),
        (10, 60 * SEC),
        (3, 10 * SEC),
        (30, 2 * SEC),
        (100, SEC),
        (999, SEC),
        (1000, 3600 * SEC),
        (1000, SEC),
        (1001, SEC),
        (3000, SEC),
        (7919, SEC),
        (65_536, SEC),
        (333_333, SEC),
        (600_000, SEC),
    ] {
        let mut b = RateBucket::default();
        assert_eq!(
            b.available(T0, limit, period),
            limit,
            "limit {limit} per {period}"
        );
        assert_eq!(
            drain(&mut b, T0, limit, period),
            limit as u64,
            "limit {limit} per {period}"
        );
        assert_eq!(
            b.available(T0, limit, period),
            0,
            "limit {limit} per {period}"
        );
        // Still refused a moment later (well before one interval).
        assert!(!b.try_take(T0 + 1, limit, period) || period / limit as u64 <= 1);
    }
}

#[test]
fn limit_above_microsecond_resolution_still_allows_the_burst() {
    // More requests per period than there are microseconds in it.
    let (limit, period) = (2_000_000u32, SEC);
    let mut b = RateBucket::default();
    assert_eq!(drain(&mut b, T0, limit, period), limit as u64);
}

#[test]
fn zero_limit_refuses_everything_without_panicking() {
    let mut b = RateBucket::default();
    assert!(!b.try_take(T0, 0, SEC));
    assert_eq!(b.available(T0, 0, SEC), 0);
    assert_eq!(b, RateBucket::default());
}

#[test]
fn smooth_refill_one_per_interval() {
    let (limit, period) = (10u32, SEC);
    let interval = period / limit as u64; // 100 ms
    let mut b = RateBucket::default();
    assert_eq!(drain(&mut b, T0, limit, period), 10);
    for k in 1..=25u64 {
        let at = T0 + k * interval;
        assert!(!b.try_take(at - 1, limit, period), "k={k}: too early");
        assert!(
            b.try_take(at, limit, period),
            "k={k}: one more after each interval"
        );
        assert!(!b.try_take(at, limit, period), "k={k}: only one");
    }
}

#[test]
fn partial_refill_then_burst() {
    let (limit, period) = (10u32, SEC);
    let mut b = RateBucket::default();
    assert_eq!(drain(&mut b, T0, limit, period), 10);
    // 350 ms later: 3 intervals have passed.
    assert_eq!(b.available(T0 + 350_000, limit, period), 3);
    assert_eq!(drain(&mut b, T0 + 350_000, limit, period), 3);
    // A whole idle period refills it completely, never beyond the limit.
    assert_eq!(b.available(T0 + 350_000 + period, limit, period), 10);
    assert_eq!(b.available(T0 + 100 * period, limit, period), 10);
    assert_eq!(drain(&mut b, T0 + 100 * period, limit, period), 10);
}

#[test]
fn rejected_requests_do_not_consume_budget() {
    let (limit, period) = (5u32, 10 * SEC);
    let interval = period / limit as u64; // 2 s
    let mut hammered = RateBucket::default();
    let mut quiet = RateBucket::default();
    assert_eq!(drain(&mut hammered, T0, limit, period), 5);
    assert_eq!(drain(&mut quiet, T0, limit, period), 5);
    // Hammer it while it refuses: 10_000 attempts spread over one interval.
    for i in 0..10_000u64 {
        let at = T0 + i * (interval - 1) / 10_000;
        assert!(
            !hammered.try_take(at, limit, period),
            "attempt {i} at +{}",
            at - T0
        );
    }
    assert_eq!(hammered, quiet, "refusals left the state untouched");
    // Recovery is not delayed.
    assert!(hammered.try_take(T0 + interval, limit, period));
    assert!(!hammered.try_take(T0 + interval, limit, period));
    assert_eq!(hammered.available(T0 + 3 * interval, limit, period), 2);
}

#[test]
fn sustained_rate_matches_limit() {
    // Requests every 1 ms for 10 s against 50 per second: 50 up front, then
    // one per 20 ms.
    let (limit, period) = (50u32, SEC);
    let mut b = RateBucket::default();
    let mut allowed = 0u64;
    let mut t = T0;
    while t < T0 + 10 * SEC {
        if b.try_take(t, limit, period) {
            allowed += 1;
        }
        t += 1000;
    }
    // 50 burst + 10 s / 20 ms refills (the last refill lands at T0+10s, outside).
    assert_eq!(allowed, 50 + 499);
}

#[test]
fn different_limits_and_periods() {
    for (limit, period) in [
        (1u32, 3600 * SEC),
        (3, SEC),
        (60, 60 * SEC),
        (1000, 3600 * SEC),
        (4, 7 * SEC),
    ] {
        let interval = period / limit as u64;
        let mut b = RateBucket::default();
        assert_eq!(drain(&mut b, T0, limit, period), limit as u64);
        assert!(
            !b.try_take(T0 + interval - 1, limit, period),
            "{limit}/{period}"
        );
        assert!(b.try_take(T0 + interval, limit, period), "{limit}/{period}");
        assert_eq!(b.available(T0 + interval, limit, period), 0);
        assert_eq!(b.available(T0 + 2 * interval, limit, period), 1.min(limit));
        // Full recovery one period after the last take.
        assert_eq!(
            b.available(T0 + interval + period, limit, period),
            limit,
            "{limit}/{period}"
        );
    }
}

#[test]
fn available_agrees_with_try_take() {
    // A small xorshift so the sequence is reproducible.
    let mut s: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rnd = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    for (limit, period) in [(10u32, SEC), (7, 3 * SEC), (3000, SEC), (1, 60 * SEC)] {
        let mut b = RateBucket::default();
        let mut now = T0;
        for _ in 0..2000 {
            now += rnd() % (2 * period / limit as u64 + 1);
            let avail = b.available(now, limit, period);
            assert!(avail <= limit);
            let mut probe = b;
            assert_eq!(
                drain(&mut probe, now, limit, period),
                avail as u64,
                "{limit}/{period} at +{}",
                now - T0
            );
            // Take a random share of what is available.
            for _ in 0..(rnd() % (avail as u64 + 2)) {
                b.try_take(now, limit, period);
            }
        }
    }
}

#[test]
fn idle_once_full_again() {
    let (limit, period) = (4u32, 4 * SEC);
    let mut b = RateBucket::default();
    assert!(b.is_idle(T0));
    assert!(b.try_take(T0, limit, period));
    assert_eq!(b.tat_us(), T0 + SEC);
    assert!(!b.is_idle(T0));
    assert!(!b.is_idle(T0 + SEC - 1));
    assert!(b.is_idle(T0 + SEC));
}
