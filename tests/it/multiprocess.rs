//! The engine across processes, the way OpenSIPS uses it: tables created
//! before `fork`, then hammered by several worker processes at once.
//!
//! Children only call engine functions and `libc::_exit` (never returning
//! into the test harness, never running its destructors). Every fork
//! scenario holds `FORK_LOCK`, so no two of them fork at the same time.
//! Every wait is bounded: a wedged child makes the test fail, not hang.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rsec::engine::stats::Stats;
use rsec::engine::{
    AuthVerdict, BanOutcome, Cidr, Config, Engine, IpKey, PikeVerdict, Reason, RlKey,
};
use rsec::shm::Region;

const T0: u64 = 1_800_000_000_000_000;
const CHILDREN: usize = 8;

static FORK_LOCK: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    FORK_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn get(c: &rsec::engine::stats::Counter) -> u64 {
    Stats::get(c)
}

fn v4(n: u32) -> IpKey {
    IpKey::from_bytes(&n.to_be_bytes()).unwrap()
}

/// Shared counters, mapped before forking.
fn shared_counters(n: usize) -> &'static [AtomicU64] {
    let mut r = Region::new(n * 8 + 64).unwrap();
    // Region is never unmapped: the slice lives as long as the process.
    r.alloc_slice::<AtomicU64>(n).unwrap()
}

/// Writes straight to fd 2: the harness captures `eprintln!` in a child.
fn say(msg: &str) {
    let line = format!("[child {}] {msg}\n", std::process::id());
    // SAFETY: writes a buffer we own to stderr.
    unsafe {
        libc::write(2, line.as_ptr().cast(), line.len());
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exit {
    Code(i32),
    Signal(i32),
}

fn decode(status: libc::c_int) -> Exit {
    if libc::WIFEXITED(status) {
        Exit::Code(libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        Exit::Signal(libc::WTERMSIG(status))
    } else {
        Exit::Code(-1)
    }
}

/// The children of one test. Whatever happens to the test (a failed
/// assertion included), dropping this kills and reaps every child still
/// running, so none is left behind.
struct Kids {
    pids: Vec<libc::pid_t>,
    exits: Vec<Option<Exit>>,
}

impl Kids {
    fn new() -> Kids {
        Kids {
            pids: Vec::new(),
            exits: Vec::new(),
        }
    }

    /// Forks a child that runs `f` and exits with its return value (101 if
    /// it panicked). Returns the child's index. Never returns in the child.
    fn spawn(&mut self, f: impl FnOnce() -> i32) -> usize {
        // SAFETY: the child only runs `f` (engine calls) and then `_exit`.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            let code = match std::panic::catch_unwind(AssertUnwindSafe(f)) {
                Ok(c) => c,
                Err(_) => {
                    say("panicked");
                    101
                }
            };
            // SAFETY: ends the child without unwinding into the harness.
            unsafe { libc::_exit(code) };
        }
        self.pids.push(pid);
        self.exits.push(None);
        self.pids.len() - 1
    }

    /// Polls child `i` once; Some(exit) once it has ended.
    fn poll(&mut self, i: usize) -> Option<Exit> {
        if self.exits[i].is_none() {
            let mut status = 0;
            // SAFETY: waits for our own child.
            let r = unsafe { libc::waitpid(self.pids[i], &mut status, libc::WNOHANG) };
            assert!(r >= 0, "waitpid: {}", std::io::Error::last_os_error());
            if r == self.pids[i] {
                self.exits[i] = Some(decode(status));
            }
        }
        self.exits[i]
    }

    fn kill(&self, i: usize) {
        if self.exits[i].is_none() {
            // SAFETY: signals our own, not yet reaped, child.
            unsafe { libc::kill(self.pids[i], libc::SIGKILL) };
        }
    }

    /// Waits for children `which`, at most `limit` in all; fails the test
    /// (and so kills them all) on timeout.
    fn wait(&mut self, which: &[usize], limit: Duration) -> Vec<Exit> {
        let deadline = Instant::now() + limit;
        loop {
            let got: Vec<Option<Exit>> = which.iter().map(|&i| self.poll(i)).collect();
            if got.iter().all(Option::is_some) {
                return got.into_iter().map(Option::unwrap).collect();
            }
            assert!(
                Instant::now() < deadline,
                "children still running after {limit:?} (wedged?): {got:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn wait_all(&mut self, limit: Duration) -> Vec<Exit> {
        let all: Vec<usize> = (0..self.pids.len()).collect();
        self.wait(&all, limit)
    }
}

impl Drop for Kids {
    fn drop(&mut self) {
        for i in 0..self.pids.len() {
            if self.exits[i].is_none() {
                self.kill(i);
                let mut st = 0;
                // SAFETY: reaps our own child (killed just above).
                unsafe { libc::waitpid(self.pids[i], &mut st, 0) };
            }
        }
    }
}

fn assert_all_ok(exits: &[Exit]) {
    assert!(
        exits.iter().all(|e| *e == Exit::Code(0)),
        "child exits: {exits:?}"
    );
}

/// Spins until `flag` is non-zero (a start line, so children really overlap).
fn wait_for(flag: &AtomicU64) {
    let until = Instant::now() + Duration::from_secs(30);
    while flag.load(Ordering::Acquire) == 0 {
        if Instant::now() > until {
            say("start signal never came");
            // SAFETY: ends the child.
            unsafe { libc::_exit(99) };
        }
        std::hint::spin_loop();
    }
}

fn config() -> Config {
    Config {
        pike_sampling_time_s: 2,
        pike_density: 30,
        pike_ban_time_s: 60,
        ban_time_s: 3600,
        auth_fail_threshold: 50,
        auth_fail_window_s: 60,
        auth_ban_time_s: 900,
        max_tracked_ips: 4096,
        max_rl_keys: 1024,
        max_bans: 1024,
        max_whitelist: 1024,
        lock_stripes: 16,
        db_queue_size: 0,
        db_sync_interval_s: 5,
        db_timeout_s: 3,
        min_prefix_v4: 8,
        min_prefix_v6: 32,
        whitelist: Vec::new(),
        ..Config::default()
    }
}

// ============================================================= exact totals

#[test]
fn totals_are_exact_across_processes() {
    let _g = serial();
    const N: u64 = 20_000;
    const IPS: u32 = 16;
    const SHARED_LIMIT: u32 = 1000;
    const OWN_LIMIT: u32 = 5000;
    // Failures are spread wider than requests: 160 per address stays
    // below the largest auth_fail_threshold (255).
    const AUTH_IPS: u32 = 1000;
    let mut cfg = config();
    cfg.pike_density = 65_534;
    cfg.auth_fail_threshold = 255;
    cfg.max_tracked_ips = 1 << 16;
    let e = Engine::new(cfg).unwrap();
    // [0] start line, [1] shared-key allowed, [2..10] own-key allowed per child.
    let ctr = shared_counters(2 + CHILDREN);
    let shared_key = RlKey::new(b"shared:INVITE").unwrap();

    let mut kids = Kids::new();
    for c in 0..CHILDREN {
        kids.spawn(|| {
            let own_key = RlKey::new(format!("own:{c}").as_bytes()).unwrap();
            wait_for(&ctr[0]);
            let (mut shared_ok, mut own_ok) = (0u64, 0u64);
            for j in 0..N {
                let src = v4(0x0a00_0000 + (j as u32 + c as u32) % IPS);
                if !matches!(e.pike_check(&src, T0), Ok(PikeVerdict::Allowed)) {
                    say("pike_check not Allowed");
                    return 2;
                }
                if e.rl_check(&shared_key, SHARED_LIMIT, 3600, T0).unwrap() {
                    shared_ok += 1;
                }
                if e.rl_check(&own_key, OWN_LIMIT, 3600, T0).unwrap() {
                    own_ok += 1;
                }
                let guesser = v4(0x0b00_0000 + (j as u32 + c as u32) % AUTH_IPS);
                if !matches!(e.auth_fail(&guesser, T0), Ok(AuthVerdict::Counted(_))) {
                    say("auth_fail not Counted");
                    return 3;
                }
            }
            ctr[1].fetch_add(shared_ok, Ordering::Relaxed);
            ctr[2 + c].store(own_ok, Ordering::Relaxed);
            0
        });
    }
    ctr[0].store(1, Ordering::Release);
    assert_all_ok(&kids.wait_all(Duration::from_secs(300)));

    let total = CHILDREN as u64 * N;
    let s = e.stats();
    assert_eq!(get(&s.pike_checked), total);
    assert_eq!(get(&s.pike_blocked), 0);
    assert_eq!(get(&s.auth_failures), total);
    assert_eq!(get(&s.rl_checked), 2 * total);
    assert_eq!(
        ctr[1].load(Ordering::Relaxed),
        SHARED_LIMIT as u64,
        "shared key: exactly the limit in all"
    );
    for c in 0..CHILDREN {
        assert_eq!(
            ctr[2 + c].load(Ordering::Relaxed),
            OWN_LIMIT as u64,
            "own key of child {c}"
        );
    }
    assert_eq!(
        get(&s.rl_rejected),
        (total - SHARED_LIMIT as u64) + CHILDREN as u64 * (N - OWN_LIMIT as u64)
    );
    assert_eq!(e.rl_available(&shared_key, T0).unwrap(), Some(0));
    // Not one request lost or double-counted in the shared windows.
    for i in 0..IPS {
        assert_eq!(
            e.pike_count(&v4(0x0a00_0000 + i), T0).unwrap() as u64,
            total / IPS as u64,
            "ip {i}"
        );
    }
    for i in 0..AUTH_IPS {
        assert_eq!(
            e.auth_count(&v4(0x0b00_0000 + i), T0).unwrap() as u64,
            total / AUTH_IPS as u64,
            "guesser {i}"
        );
    }
    assert_eq!(s.bans_created_total(), 0);
    assert_eq!(get(&e.source_counters().lock_recoveries), 0);
    assert_eq!(get(&e.source_counters().evictions), 0);
}

// ===================================================== one ban, exactly once

#[test]
fn pike_bans_exactly_once_across_processes() {
    let _g = serial();
    const ROUNDS: usize = 40;
    const PER_CHILD: usize = 10;
    let e = Engine::new(config()).unwrap();
    // [0] start line; then per round: allowed, just banned, banned(pike), other.
    let ctr = shared_counters(1 + ROUNDS * 4);
    let target = |r: usize| v4(0xc633_6400 + r as u32);

    let mut kids = Kids::new();
    for _ in 0..CHILDREN {
        kids.spawn(|| {
            wait_for(&ctr[0]);
            for r in 0..ROUNDS {
                let ip = target(r);
                // Rounds are microseconds apart: processes share one clock,
                // and a process far ahead in time would rightly treat another
                // round's ban as lapsed and reuse its slot.
                let now = T0 + r as u64;
                for _ in 0..PER_CHILD {
                    let slot = match e.pike_check(&ip, now) {
                        Ok(PikeVerdict::Allowed) => 0,
                        Ok(PikeVerdict::JustBanned(_)) => 1,
                        Ok(PikeVerdict::Banned(Reason::Pike)) => 2,
                        _ => 3,
                    };
                    ctr[1 + r * 4 + slot].fetch_add(1, Ordering::Relaxed);
                }
            }
            0
        });
    }
    ctr[0].store(1, Ordering::Release);
    assert_all_ok(&kids.wait_all(Duration::from_secs(120)));

    let total = (CHILDREN * PER_CHILD) as u64;
    for r in 0..ROUNDS {
        let c = |k: usize| ctr[1 + r * 4 + k].load(Ordering::Relaxed);
        assert_eq!(
            (c(0), c(1), c(2), c(3)),
            (30, 1, total - 31, 0),
            "round {r}: allowed/just banned/banned/other"
        );
        let now = T0 + r as u64;
        let rec = e.lookup_ban(&target(r), now).unwrap().expect("banned");
        assert_eq!(rec.ban.reason, Reason::Pike);
    }
    let s = e.stats();
    assert_eq!(s.bans_created_for(Reason::Pike), ROUNDS as u64);
    assert_eq!(s.bans_created_total(), ROUNDS as u64);
    assert_eq!(get(&s.pike_checked), ROUNDS as u64 * total);
    // The banning request and every later one are blocked.
    assert_eq!(get(&s.pike_blocked), ROUNDS as u64 * (total - 30));
    assert!(get(&s.dropped_while_banned) <= ROUNDS as u64 * (total - 31));
    assert_eq!(e.bans_active(), ROUNDS as u64);
}

#[test]
fn auth_bans_exactly_once_across_processes() {
    let _g = serial();
    const ROUNDS: usize = 20;
    const PER_CHILD: usize = 20;
    // Per round: counted, just banned, already banned(auth), other, then how
    // often each Counted(n) was returned (index 4 + n).
    const W: usize = 4 + 50;
    let e = Engine::new(config()).unwrap();
    let ctr = shared_counters(1 + ROUNDS * W);
    let target = |r: usize| v4(0xcb00_7100 + r as u32);

    let mut kids = Kids::new();
    for _ in 0..CHILDREN {
        kids.spawn(|| {
            wait_for(&ctr[0]);
            for r in 0..ROUNDS {
                let base = 1 + r * W;
                for _ in 0..PER_CHILD {
                    let slot = match e.auth_fail(&target(r), T0 + r as u64) {
                        Ok(AuthVerdict::Counted(n)) if (1..50).contains(&n) => {
                            ctr[base + 4 + n as usize].fetch_add(1, Ordering::Relaxed);
                            0
                        }
                        Ok(AuthVerdict::JustBanned(_)) => 1,
                        Ok(AuthVerdict::AlreadyBanned(Reason::Auth)) => 2,
                        _ => 3,
                    };
                    ctr[base + slot].fetch_add(1, Ordering::Relaxed);
                }
            }
            0
        });
    }
    ctr[0].store(1, Ordering::Release);
    assert_all_ok(&kids.wait_all(Duration::from_secs(120)));

    let total = (CHILDREN * PER_CHILD) as u64;
    for r in 0..ROUNDS {
        let base = 1 + r * W;
        let c = |k: usize| ctr[base + k].load(Ordering::Relaxed);
        assert_eq!(c(1), 1, "round {r}: exactly one JustBanned");
        assert_eq!(c(3), 0, "round {r}: unexpected verdicts");
        assert_eq!(c(0) + c(1) + c(2), total);
        // Failures 1..=49 were each reported. A failure racing the ban may be
        // counted afresh after the ban reset the count (at most one per other
        // process), never more.
        for n in 1..50 {
            assert!(c(4 + n) >= 1, "round {r}: Counted({n}) never seen");
        }
        assert!(
            (49..=49 + CHILDREN as u64 - 1).contains(&c(0)),
            "round {r}: counted {}",
            c(0)
        );
    }
    assert_eq!(e.stats().bans_created_for(Reason::Auth), ROUNDS as u64);
    assert_eq!(get(&e.stats().auth_failures), ROUNDS as u64 * total);
}

// =================================================== a worker dies mid-lock

#[test]
fn killed_lock_holder_does_not_wedge_the_others() {
    let _g = serial();
    let mut cfg = config();
    cfg.pike_density = 65_534;
    let e = Engine::new(cfg).unwrap();
    let x = IpKey::parse("192.0.2.200").unwrap();
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: fills our two-element array.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let (rd, wr) = (fds[0], fds[1]);
    let mut kids = Kids::new();

    // The victim takes the bucket lock of `x`, says so, and sleeps forever.
    let victim = kids.spawn(|| {
        // SAFETY: closes the read end in the child; both fds are ours.
        unsafe { libc::close(rd) };
        let r = e.with_source_bucket_locked(&x, || {
            // SAFETY: one byte from a static buffer to our pipe.
            unsafe { libc::write(wr, b"L".as_ptr().cast(), 1) };
            loop {
                // SAFETY: sleeps until a signal (SIGKILL) arrives.
                unsafe { libc::pause() };
            }
        });
        say(&format!(
            "with_source_bucket_locked returned: {:?}",
            r.err()
        ));
        1
    });
    // SAFETY: the parent keeps only the read end.
    unsafe { libc::close(wr) };
    let mut pfd = libc::pollfd {
        fd: rd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: polls one fd we own, 30 s at most.
    let ready = unsafe { libc::poll(&mut pfd, 1, 30_000) };
    let mut byte = [0u8; 1];
    // SAFETY: reads at most one byte into our buffer.
    let n = if ready == 1 {
        unsafe { libc::read(rd, byte.as_mut_ptr().cast(), 1) }
    } else {
        0
    };
    // SAFETY: done with the pipe.
    unsafe { libc::close(rd) };
    assert!(
        n == 1 && byte[0] == b'L',
        "the victim never reported holding the lock"
    );

    // A worker needing that stripe now waits for it...
    let waiter = kids.spawn(|| match e.pike_check(&x, T0) {
        Ok(PikeVerdict::Allowed) => 0,
        other => {
            say(&format!("waiter got {other:?}"));
            2
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        kids.poll(waiter),
        None,
        "the waiter got through while the stripe was locked"
    );
    assert_eq!(get(&e.source_counters().lock_recoveries), 0);

    // ...and the holder is killed inside its critical section.
    kids.kill(victim);
    assert_eq!(
        kids.wait(&[victim], Duration::from_secs(30)),
        vec![Exit::Signal(libc::SIGKILL)]
    );

    // The waiter and fresh workers get through within a bounded time.
    let mut workers = vec![waiter];
    for c in 0..4u32 {
        workers.push(kids.spawn(|| {
            for i in 0..10u64 {
                if !matches!(e.pike_check(&x, T0 + i), Ok(PikeVerdict::Allowed)) {
                    return 3;
                }
                // Other addresses, some of them on the same stripe.
                if !matches!(
                    e.pike_check(&v4(0x0a00_0000 + c * 100 + i as u32), T0 + i),
                    Ok(PikeVerdict::Allowed)
                ) {
                    return 4;
                }
            }
            0
        }));
    }
    assert_all_ok(&kids.wait(&workers, Duration::from_secs(30)));

    // The parent too, and the recovered lock works normally.
    assert_eq!(e.pike_check(&x, T0 + 100).unwrap(), PikeVerdict::Allowed);
    assert_eq!(e.pike_count(&x, T0 + 100).unwrap(), 1 + 4 * 10 + 1);
    assert_eq!(e.with_source_bucket_locked(&x, || 7).unwrap(), 7);
    assert_eq!(
        get(&e.source_counters().lock_recoveries),
        1,
        "exactly one locker recovers the dead owner's lock"
    );
}

#[test]
fn workers_killed_at_random_points_do_not_wedge_the_survivors() {
    let _g = serial();
    const WORKERS: usize = 6;
    const KILLS: usize = 3;
    let mut cfg = config();
    cfg.pike_density = 65_534;
    cfg.auth_fail_threshold = 255;
    // One bucket, so one lock for every worker: kills inside a critical
    // section are likely. Eight sources leave room beside their bans.
    cfg.max_tracked_ips = 16;
    let e = Engine::new(cfg).unwrap();
    // [0] stop flag, [1..] progress per worker.
    let ctr = shared_counters(1 + WORKERS);
    let key = RlKey::new(b"k").unwrap();
    let mut kids = Kids::new();
    for w in 0..WORKERS {
        kids.spawn(|| {
            let mut i = 0u32;
            while ctr[0].load(Ordering::Acquire) == 0 {
                let src = v4(0x0a00_0000 + i % 8);
                if e.pike_check(&src, T0).is_err() || e.auth_fail(&src, T0).is_err() {
                    return 2;
                }
                if e.rl_check(&key, 10, 1, T0).is_err() {
                    return 3;
                }
                ctr[1 + w].fetch_add(1, Ordering::Relaxed);
                i = i.wrapping_add(1);
            }
            0
        });
    }
    // Stop the survivors however this test ends.
    struct Stop(&'static AtomicU64);
    impl Drop for Stop {
        fn drop(&mut self) {
            self.0.store(1, Ordering::Release);
        }
    }
    let stop = Stop(&ctr[0]);

    let progress = |from: usize| -> u64 {
        (from..WORKERS)
            .map(|w| ctr[1 + w].load(Ordering::Relaxed))
            .sum()
    };
    let await_progress = |from: usize, target: u64| {
        let until = Instant::now() + Duration::from_secs(60);
        while progress(from) < target {
            assert!(
                Instant::now() < until,
                "survivors stopped making progress (wedged lock?)"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    for k in 0..KILLS {
        // The survivors (workers k..) keep going, then worker k dies.
        await_progress(k, progress(k) + 20_000);
        kids.kill(k);
        assert_eq!(
            kids.wait(&[k], Duration::from_secs(30)),
            vec![Exit::Signal(libc::SIGKILL)]
        );
    }
    await_progress(KILLS, progress(KILLS) + 20_000);
    drop(stop);
    let survivors: Vec<usize> = (KILLS..WORKERS).collect();
    assert_all_ok(&kids.wait(&survivors, Duration::from_secs(60)));

    // The bucket is still usable from the parent: the eight sources (by
    // now banned, or about to be) get a verdict, and newcomers get in.
    for i in 0..8u32 {
        e.pike_check(&v4(0x0a00_0000 + i), T0).unwrap();
    }
    for i in 8..64u32 {
        assert_eq!(
            e.pike_check(&v4(0x0a00_0000 + i), T0).unwrap(),
            PikeVerdict::Allowed
        );
    }
    assert!(get(&e.source_counters().lock_recoveries) <= KILLS as u64);
}

// ============================================== cross-process visibility

#[test]
fn bans_and_whitelist_changes_are_seen_by_every_process() {
    let _g = serial();
    let e = Engine::new(config()).unwrap();
    let banned = IpKey::parse("198.51.100.1").unwrap();
    let friend = IpKey::parse("2001:db8::42").unwrap();
    let ctr = shared_counters(1);
    let mut kids = Kids::new();

    // A child bans; the parent sees it.
    let first = kids.spawn(|| match e.ban(Cidr::host(banned), 0, Reason::Manual, T0) {
        Ok(BanOutcome::Created(_)) => 0,
        _ => 2,
    });
    assert_all_ok(&kids.wait(&[first], Duration::from_secs(30)));
    assert_eq!(
        e.pike_check(&banned, T0).unwrap(),
        PikeVerdict::Banned(Reason::Manual)
    );
    assert_eq!(e.bans_active(), 1);

    // The parent whitelists after the fork; a running child sees it.
    let second = kids.spawn(|| {
        ctr[0].store(1, Ordering::Release);
        let until = Instant::now() + Duration::from_secs(30);
        while !e.is_whitelisted(&friend) {
            if Instant::now() > until {
                return 2;
            }
            std::hint::spin_loop();
        }
        match (
            e.pike_check(&friend, T0),
            e.ban(Cidr::host(friend), 0, Reason::Manual, T0),
        ) {
            (Ok(PikeVerdict::Whitelisted), Ok(BanOutcome::Whitelisted(_))) => {}
            _ => return 3,
        }
        // And it lifts the ban the first child created.
        match e.unban(&Cidr::host(banned), T0) {
            Ok(Some(_)) => 0,
            _ => 4,
        }
    });
    let until = Instant::now() + Duration::from_secs(30);
    while ctr[0].load(Ordering::Acquire) == 0 {
        assert!(Instant::now() < until, "second child never started");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(e
        .whitelist()
        .add(Cidr::parse("2001:db8::/32").unwrap())
        .unwrap());
    assert_all_ok(&kids.wait(&[second], Duration::from_secs(60)));
    assert_eq!(e.pike_check(&banned, T0).unwrap(), PikeVerdict::Allowed);
    assert_eq!(e.bans_active(), 0);
    assert_eq!(get(&e.stats().whitelisted), 1);
}

#[test]
fn whitelist_readers_never_see_a_torn_list() {
    let _g = serial();
    let e = Engine::new(config()).unwrap();
    let a = Cidr::parse("10.0.0.0/8").unwrap();
    let b = Cidr::parse("2001:db8::/32").unwrap();
    e.whitelist().add(a).unwrap();
    // [0] stop flag, [1] reads done.
    let ctr = shared_counters(2);
    let mut kids = Kids::new();
    // Readers: the list is always exactly [a] or [a, b], and 10.1.1.1 is
    // always whitelisted.
    for _ in 0..4 {
        kids.spawn(|| {
            let x = IpKey::parse("10.1.1.1").unwrap();
            let until = Instant::now() + Duration::from_secs(120);
            while ctr[0].load(Ordering::Acquire) == 0 {
                if !e.is_whitelisted(&x) {
                    return 2;
                }
                let l = e.whitelist().list();
                if l != [a] && l != [a, b] {
                    say(&format!("torn list {l:?}"));
                    return 3;
                }
                ctr[1].fetch_add(1, Ordering::Relaxed);
                if Instant::now() > until {
                    return 4;
                }
            }
            0
        });
    }
    // The parent flips b in and out while they read.
    let until = Instant::now() + Duration::from_secs(60);
    let mut flips = 0u64;
    while flips < 20_000 || ctr[1].load(Ordering::Relaxed) < 20_000 {
        if Instant::now() > until {
            ctr[0].store(1, Ordering::Release);
            panic!("readers made no progress");
        }
        assert!(e.whitelist().add(b).unwrap());
        assert!(e.whitelist().remove(&b).unwrap());
        flips += 1;
    }
    ctr[0].store(1, Ordering::Release);
    assert_all_ok(&kids.wait_all(Duration::from_secs(60)));
    assert_eq!(e.whitelist().list(), vec![a]);
}

#[test]
fn a_whitelist_writer_killed_mid_change_wedges_nobody() {
    let _g = serial();
    let mut cfg = config();
    cfg.max_whitelist = 65_536;
    let e = Engine::new(cfg).unwrap();
    // Two lists sharing 10.0.0.1: 65,536 hosts, so that a rebuild takes
    // long enough for a kill to land inside it, and one /16.
    let hosts: Vec<Cidr> = (0..65_536u32)
        .map(|i| Cidr::host(v4(0x0a00_0000 + i)))
        .collect();
    let net = vec![Cidr::parse("10.0.0.0/16").unwrap()];
    e.whitelist().replace(hosts.clone()).unwrap();
    // [0] stop flag, [1] reads done, [2] writes done.
    let ctr = shared_counters(3);
    let mut kids = Kids::new();
    let mut readers = Vec::new();
    for _ in 0..2 {
        readers.push(kids.spawn(|| {
            let (friend, stranger) = (v4(0x0a00_0001), v4(0x0b00_0001));
            while ctr[0].load(Ordering::Acquire) == 0 {
                if !e.is_whitelisted(&friend) || e.is_whitelisted(&stranger) {
                    return 2;
                }
                let n = e.whitelist().len();
                if n != 65_536 && n != 1 {
                    say(&format!("{n} entries"));
                    return 3;
                }
                ctr[1].fetch_add(1, Ordering::Relaxed);
            }
            0
        }));
    }
    let writer = || {
        swap_forever(&e, &hosts, &net, &ctr[2]);
        0
    };
    let reads = || ctr[1].load(Ordering::Relaxed);
    let mut rng = 0x9e37_79b9_u64;
    for round in 0..4 {
        let w = kids.spawn(writer);
        let writes = ctr[2].load(Ordering::Relaxed);
        let until = Instant::now() + Duration::from_secs(30);
        while ctr[2].load(Ordering::Relaxed) < writes + 4 {
            assert!(Instant::now() < until, "writer {round} made no progress");
            std::thread::sleep(Duration::from_millis(1));
        }
        // Somewhere in one of its writes (often inside a rebuild, which
        // the next writer then redoes from scratch).
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_micros(rng % 20_000));
        kids.kill(w);
        assert_eq!(
            kids.wait(&[w], Duration::from_secs(30)),
            vec![Exit::Signal(libc::SIGKILL)]
        );
        // The readers carry on.
        let before = reads();
        let until = Instant::now() + Duration::from_secs(30);
        while reads() < before + 1000 {
            assert!(Instant::now() < until, "readers stopped after kill {round}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    ctr[0].store(1, Ordering::Release);
    assert_all_ok(&kids.wait(&readers, Duration::from_secs(60)));
    // Whatever the victims left, the list is one of the two, and the next
    // writer takes the lock over and publishes normally.
    let l = e.whitelist().list();
    assert!(l == hosts || l == net, "{} entries", l.len());
    e.whitelist().replace(net.clone()).unwrap();
    assert_eq!(e.whitelist().list(), net);
    assert!(e.is_whitelisted(&v4(0x0a00_ff00)));
    e.whitelist().replace(hosts.clone()).unwrap();
    assert_eq!(e.whitelist().list(), hosts);
    assert!(!e.is_whitelisted(&v4(0x0a01_0000)));
}

/// Swaps the whitelist between two lists until killed.
fn swap_forever(e: &Engine, a: &[Cidr], b: &[Cidr], writes: &AtomicU64) {
    loop {
        for l in [a, b] {
            if e.whitelist().replace(l.to_vec()).is_err() {
                say("replace failed");
                // SAFETY: ends the child.
                unsafe { libc::_exit(2) };
            }
            writes.fetch_add(1, Ordering::Relaxed);
        }
    }
}
