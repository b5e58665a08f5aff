//! Engine benchmark, reproducible with `make bench` (or
//! `cargo bench --bench engine`); `make bench-plot` draws the CSV.
//!
//! Measures the per-request cost of every hot path as OpenSIPS workers see
//! it, at several table sizes, because what matters at 16 M sources is not
//! the instruction count but the cache misses of a table far larger than
//! the CPU caches:
//!
//! * `pike_known`: `pike_check` for sources already in a full table, visited
//!   in a shuffled order (a busy server's table is cache-cold);
//! * `pike_new`: `pike_check` for a never-seen source at a full table (a
//!   spoofed flood: every call evicts);
//! * `ban_miss` / `ban_hit`: `lookup_ban` with the ban table full;
//! * `rl_known`: `rl_check` on known "ip:port" keys, table full;
//! * `wl_hit` / `wl_hit_1k` / `wl_miss`: `is_whitelisted` with 10, 10,000
//!   and 65,536 prefixes (the size column is the number of prefixes
//!   there), hitting any of them, hitting 1,024 of them, missing: the cost
//!   must not grow with them;
//! * `mp_distinct` / `mp_hot`: `pike_check` from 1, 2, 4 forked processes on
//!   the same tables, each on its own known sources, or all on one source
//!   (one stripe lock, the worst contention);
//! * `sweep_*`: the once-a-second sweep over a full table, per entry and per
//!   whole sweep, with everything live and with everything lapsed.
//! * `scan_40B` / `scan_1000B`: the scanner User-Agent match of a 40-byte
//!   and a 1,000-byte header that name no scanner (every byte is read),
//!   against the built-in list and against 1,000 patterns (the size column
//!   is the number of patterns).
//!
//! Each (group, size) runs in its own forked process: the shared mapping is
//! never unmapped (by design, see src/shm/region.rs), so a 16 M table would
//! otherwise stay resident for the rest of the run.
//!
//! Environment (all optional):
//! * `RSEC_BENCH_SIZES`  table sizes, e.g. `1K,64K,1M,16M` (the default);
//!   K = 1024, M = 1048576; at most 16M (`Config::MAX_ENTRIES`).
//! * `RSEC_BENCH_OPS`    timed operations per case and repetition
//!   (default 2000000); per process in the multi-process cases.
//! * `RSEC_BENCH_REPEAT` repetitions per case, the median is reported
//!   (default 3).
//! * `RSEC_BENCH_PROCS`  process counts of the multi-process cases
//!   (default `1,2,4`).
//! * `RSEC_BENCH_CASES`  groups to run: any of `pike,ban,rl,wl,mp,sweep,scan`
//!   (default all).
//! * `RSEC_BENCH_WL_SIZES` whitelist sizes of the `wl` group (default
//!   `10,10000,65536`; at most 65536, the default `max_whitelist`).
//! * `RSEC_BENCH_CSV`    output file (default target/bench-engine/engine.csv).
//!
//! Memory and time: at 16 M entries the rate-limit table maps 4.7 GiB, the
//! source table 1.9 GiB, the ban table 0.9 GiB (one at a time), and each
//! fill takes up to a minute; fills run outside the timed regions.

use std::fmt::Write as _;
use std::hint::black_box;
use std::io::{Read, Write};
use std::os::fd::FromRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rsec::engine::scanner::ScannerPatterns;
use rsec::engine::{BanOutcome, Cidr, Config, Engine, IpKey, Reason, RlKey};

const US: u64 = 1_000_000;
/// Simulated time of the fill; the timed loops run in later blocks.
const T0: u64 = 1_800_000_000 * US;
/// Simulated time one timed block may span (see `Clock`).
// Long enough that even the hot-key case (4 processes x the ops on one
// source) stays below the largest pike_density within a window.
const BLOCK_US: u64 = 300 * US;
/// One request a day, with a burst of 40000: a known key must stay known
/// for the whole run (a bucket that refilled is reclaimable and would be
/// re-created, a different path), and must not be refused (a refusal skips
/// the write). Both hold up to 40000 checks per key.
const RL_LIMIT: u32 = 40_000;
const RL_PERIOD_S: u32 = RL_LIMIT * 86_400;

// ---------------------------------------------------------------- options

struct Opts {
    sizes: Vec<u32>,
    ops: u64,
    reps: u32,
    procs: Vec<usize>,
    groups: Vec<String>,
    wl_sizes: Vec<u32>,
    csv: std::path::PathBuf,
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn parse_size(s: &str) -> u32 {
    let s = s.trim();
    let (num, mul) = match s.as_bytes().last() {
        Some(b'K' | b'k') => (&s[..s.len() - 1], 1u64 << 10),
        Some(b'M' | b'm') => (&s[..s.len() - 1], 1u64 << 20),
        _ => (s, 1),
    };
    let n = num
        .parse::<u64>()
        .unwrap_or_else(|_| panic!("RSEC_BENCH_SIZES: bad size {s:?}"))
        * mul;
    assert!(
        (16..=Config::MAX_ENTRIES as u64).contains(&n),
        "RSEC_BENCH_SIZES: {s} is outside 16..={}",
        Config::MAX_ENTRIES
    );
    n as u32
}

fn parse_list<T>(name: &str, default: &str, f: impl Fn(&str) -> T) -> Vec<T> {
    env_or(name, default)
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| f(s.trim()))
        .collect()
}

impl Opts {
    fn from_env() -> Opts {
        let num = |name: &str, default: u64| -> u64 {
            env_or(name, &default.to_string())
                .parse()
                .unwrap_or_else(|_| panic!("{name}: not a number"))
        };
        let opts = Opts {
            sizes: parse_list("RSEC_BENCH_SIZES", "1K,64K,1M,16M", parse_size),
            ops: num("RSEC_BENCH_OPS", 2_000_000).max(1),
            reps: num("RSEC_BENCH_REPEAT", 3).max(1) as u32,
            procs: parse_list("RSEC_BENCH_PROCS", "1,2,4", |s| {
                s.parse().expect("RSEC_BENCH_PROCS: not a number")
            }),
            groups: parse_list(
                "RSEC_BENCH_CASES",
                "pike,ban,rl,wl,mp,sweep,scan",
                str::to_owned,
            ),
            wl_sizes: parse_list("RSEC_BENCH_WL_SIZES", "10,10000,65536", |s| {
                let n: u32 = s.parse().expect("RSEC_BENCH_WL_SIZES: not a number");
                assert!(
                    (1..=Config::default().max_whitelist).contains(&n),
                    "RSEC_BENCH_WL_SIZES: {n} is outside 1..={}",
                    Config::default().max_whitelist
                );
                n
            }),
            csv: std::env::var_os("RSEC_BENCH_CSV").map_or_else(
                || {
                    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                        .join("target/bench-engine/engine.csv")
                },
                Into::into,
            ),
        };
        // Fresh addresses of every repetition come from one 2^30 index range.
        assert!(
            opts.ops * opts.reps as u64 <= 1 << 30,
            "RSEC_BENCH_OPS x RSEC_BENCH_REPEAT must stay below 2^30"
        );
        opts
    }

    fn wants(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }
}

// ---------------------------------------------------------------- keys

/// SplitMix64: a cheap deterministic PRNG, so every run visits the same keys.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, (self.next() % (i as u64 + 1)) as usize);
        }
    }
}

/// A bijection of u32 (every step is invertible), so distinct indices give
/// distinct, well-scattered addresses.
fn mix32(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^ (x >> 16)
}

/// Index ranges that never overlap: filled sources, never-seen sources,
/// addresses that are never banned.
const FILL: u32 = 0;
const NEW: u32 = 0x4000_0000;
const MISS: u32 = 0x8000_0000;

fn ip(i: u32) -> IpKey {
    IpKey::from_bytes(&mix32(i).to_be_bytes()).unwrap()
}

/// "a.b.c.d:port", the shape of a per-contact rate-limit key.
fn rl_key_str(i: u32, out: &mut String) {
    let a = mix32(i).to_be_bytes();
    let port = 1024 + SplitMix(i as u64).next() % 64_000;
    out.clear();
    write!(out, "{}.{}.{}.{}:{port}", a[0], a[1], a[2], a[3]).unwrap();
}

/// Many short strings in one allocation: 16 M `RlKey`s (256 bytes each)
/// would need 4 GiB, these need ~20 bytes each.
#[derive(Default)]
struct Strs {
    buf: Vec<u8>,
    ends: Vec<u32>,
}

impl Strs {
    fn push(&mut self, s: &[u8]) {
        self.buf.extend_from_slice(s);
        self.ends.push(self.buf.len() as u32);
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    fn get(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.buf[start..self.ends[i] as usize]
    }
}

// ---------------------------------------------------------------- timing

/// Simulated time: every timed block gets its own `BLOCK_US` slice, so time
/// never runs backwards between blocks (a sliding window would see that)
/// and stays far inside every entry's lifetime.
struct Clock {
    next: u64,
    shift: u32,
}

impl Clock {
    fn new(ops: u64) -> Clock {
        // `now = block + (i >> shift)` stays within the block without a
        // division in the timed loop.
        let mut shift = 0;
        while (ops >> shift) >= BLOCK_US {
            shift += 1;
        }
        Clock {
            next: T0 + BLOCK_US,
            shift,
        }
    }

    fn block(&mut self) -> u64 {
        let b = self.next;
        self.next += BLOCK_US;
        b
    }
}

fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes into the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// One result line.
struct Row {
    case: String,
    size: u64,
    procs: usize,
    ns_per_op: f64,
}

impl Row {
    fn ops_per_s(&self) -> f64 {
        1e9 / self.ns_per_op
    }
}

/// Results of one group, printed as they come and sent to the parent.
struct Out {
    rows: Vec<Row>,
}

impl Out {
    fn add(&mut self, case: &str, size: u64, procs: usize, ns_per_op: f64, note: &str) {
        let r = Row {
            case: case.to_owned(),
            size,
            procs,
            ns_per_op,
        };
        println!(
            "{case:<22} {:>9} {procs:>5} {:>11.1} {:>14.0}  {note}",
            human(size),
            r.ns_per_op,
            r.ops_per_s()
        );
        self.rows.push(r);
    }

    /// Runs `reps` repetitions of a case; `run` does its own untimed set-up
    /// and returns the timed duration and the operations it covers.
    fn case(
        &mut self,
        o: &Opts,
        case: &str,
        size: u64,
        note: &str,
        mut run: impl FnMut(u32) -> (Duration, u64),
    ) -> f64 {
        let ns = median(
            (0..o.reps)
                .map(|r| {
                    let (d, ops) = run(r);
                    d.as_nanos() as f64 / ops as f64
                })
                .collect(),
        );
        self.add(case, size, 1, ns, note);
        ns
    }
}

fn human(n: u64) -> String {
    match n {
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{}M", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{}K", n >> 10),
        n => n.to_string(),
    }
}

fn secs(t: Instant) -> String {
    format!("{:.1} s", t.elapsed().as_secs_f64())
}

// ---------------------------------------------------------------- engines

fn engine(sources: u32, bans: u32, rl: u32) -> Engine {
    let d = Config::default();
    Engine::new(Config {
        // Nothing may be banned by the checks themselves (the largest
        // density; the clock spreads each block's ops thinly enough).
        pike_density: 65_534,
        // Sources stay live (not reclaimable) for a day of simulated time,
        // longer than any run; only the lapsed-sweep case goes past it.
        auth_fail_window_s: 86_400,
        max_tracked_ips: sources,
        max_bans: bans,
        max_rl_keys: rl,
        db_queue_size: 0,
        ..d
    })
    .unwrap()
}

/// The smallest table the configuration accepts, for tables not under test.
const SMALL: u32 = 16;

/// Fills the source table until it is saturated and returns how many
/// sources were inserted. `n` distinct keys leave ~8% of the slots free (a
/// key only lives within a short probe window of its home slot), and a new
/// source landing near a free slot takes it instead of evicting: the flood
/// case would measure a mix. More keys go in until nearly every insert
/// evicts.
fn fill_sources(e: &Engine, n: u32) -> u32 {
    let resident = |inserted: u32| inserted as u64 - evictions(e);
    let mut inserted = 0;
    let mut chunk = n;
    loop {
        let before = resident(inserted);
        for i in inserted..inserted + chunk {
            e.pike_check(&ip(FILL + i), T0).unwrap();
        }
        inserted += chunk;
        // Under 1% of a chunk found a free slot, or 4 n inserted: saturated.
        if (resident(inserted) - before) * 100 < chunk as u64 || inserted >= 4 * n {
            return inserted;
        }
        chunk = (n / 8).max(16);
    }
}

fn evictions(e: &Engine) -> u64 {
    e.source_counters().evictions.get()
}

/// Up to `want` of the `inserted` sources that are still in the table,
/// shuffled: a "known" source that was evicted would measure an insert.
fn known_sources(e: &Engine, inserted: u32, want: usize) -> Vec<IpKey> {
    let mut v = Vec::with_capacity(want.min(inserted as usize));
    for i in 0..inserted {
        if v.len() == want {
            break;
        }
        let k = ip(FILL + i);
        // At the fill's own time: the count is of the current window only.
        if e.pike_count(&k, T0).unwrap() > 0 {
            v.push(k);
        }
    }
    SplitMix(0x5eed).shuffle(&mut v);
    v
}

/// `ops` checks cycling over `keys`, at simulated times from `block`.
fn pike_loop(e: &Engine, keys: &[IpKey], ops: u64, block: u64, shift: u32) {
    let mut j = 0;
    for i in 0..ops {
        black_box(e.pike_check(&keys[j], block + (i >> shift)).unwrap());
        j += 1;
        if j == keys.len() {
            j = 0;
        }
    }
}

// ---------------------------------------------------------------- groups

/// The source table at `n` entries: flood checks, processes, sweep.
fn group_sources(o: &Opts, n: u32, out: &mut Out) {
    let t = Instant::now();
    let e = engine(n, SMALL, SMALL);
    let created = secs(t);
    let t = Instant::now();
    let inserted = fill_sources(&e, n);
    let resident = inserted as u64 - evictions(&e);
    let maxp = *o.procs.iter().max().unwrap_or(&1) as u64;
    let want = if o.wants("mp") { o.ops * maxp } else { o.ops };
    let mut clock = Clock::new(o.ops);
    let keys = known_sources(&e, inserted, want as usize);
    println!(
        "# sources table {n}: {} MiB mapped, created in {created}, filled in {} \
         ({inserted} sources inserted, {resident} resident = {:.1}%)",
        e.shm_bytes() >> 20,
        secs(t),
        resident as f64 * 100.0 / n as f64
    );

    if o.wants("pike") {
        let visited = keys.len().min(o.ops as usize);
        let note = format!(
            "cache-cold: {visited} known sources in shuffled order{}",
            if visited as u64 == resident {
                " (all of them)"
            } else {
                ""
            }
        );
        out.case(o, "pike_known", n as u64, &note, |_| {
            let block = clock.block();
            let t = Instant::now();
            pike_loop(&e, &keys[..visited], o.ops, block, clock.shift);
            (t.elapsed(), o.ops)
        });
    }

    if o.wants("mp") {
        multi_process(o, &e, n, &keys, &mut clock, out);
    }

    if o.wants("sweep") {
        sweep_live(o, &e, "sweep_sources", n, &mut clock, out);
    }

    if o.wants("pike") {
        let before = evictions(&e);
        let mut total = 0;
        out.case(
            o,
            "pike_new",
            n as u64,
            "never-seen source each call, table full: evicts",
            |r| {
                let fresh: Vec<IpKey> = (0..o.ops as u32)
                    .map(|i| ip(NEW + r * o.ops as u32 + i))
                    .collect();
                let block = clock.block();
                let t = Instant::now();
                pike_loop(&e, &fresh, o.ops, block, clock.shift);
                total += o.ops;
                (t.elapsed(), o.ops)
            },
        );
        println!(
            "#   {:.2} evictions per new source",
            (evictions(&e) - before) as f64 / total as f64
        );
    }

    if o.wants("sweep") {
        // Past every source's lifetime: the sweep reclaims the whole table.
        // Each repetition needs a full table again, filled untimed.
        let mut later = T0;
        out.case(
            o,
            "sweep_sources_lapsed",
            n as u64,
            "per entry, every entry lapsed and reclaimed",
            |_| {
                later += 2 * 86_400 * US;
                for i in 0..n {
                    e.pike_check(&ip(FILL + i), later).unwrap();
                }
                let t = Instant::now();
                black_box(e.sweep(later + 2 * 86_400 * US).unwrap());
                (t.elapsed(), n as u64)
            },
        );
    }
}

/// The sweep with every entry live, per entry and per whole sweep.
fn sweep_live(o: &Opts, e: &Engine, case: &str, n: u32, clock: &mut Clock, out: &mut Out) {
    // Enough rounds for a measurable time at small sizes, one at 16 M.
    let rounds = (o.ops / n as u64).clamp(1, 100);
    let per_entry = out.case(
        o,
        case,
        n as u64,
        &format!("per entry, all live, {rounds} sweeps"),
        |_| {
            let now = clock.block();
            let t = Instant::now();
            for r in 0..rounds {
                black_box(e.sweep(now + r).unwrap());
            }
            (t.elapsed(), rounds * n as u64)
        },
    );
    out.add(
        &format!("{case}_full"),
        n as u64,
        1,
        per_entry * n as f64,
        &format!("per whole sweep: {:.3} ms", per_entry * n as f64 / 1e6),
    );
}

/// A small shared page for the children's start line and finish times.
struct Shared {
    p: *mut AtomicU64,
    len: usize,
}

impl Shared {
    fn new(len: usize) -> Shared {
        // SAFETY: fresh anonymous shared mapping, checked; zeroed memory is
        // a valid AtomicU64.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len * 8,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert!(p != libc::MAP_FAILED, "mmap failed");
        Shared { p: p.cast(), len }
    }

    fn at(&self, i: usize) -> &AtomicU64 {
        assert!(i < self.len);
        // SAFETY: in bounds of a live mapping of AtomicU64s.
        unsafe { &*self.p.add(i) }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe { libc::munmap(self.p.cast(), self.len * 8) };
    }
}

/// Forks `procs` children, each running `work(child)` once all are ready,
/// and returns the wall time from the start signal to the last finish
/// (fork and exit costs excluded).
fn run_children(procs: usize, work: impl Fn(usize)) -> Duration {
    const READY: usize = 0;
    const GO: usize = 1;
    let sh = Shared::new(2 + procs);
    std::io::stdout().flush().unwrap();
    let mut pids = Vec::new();
    for c in 0..procs {
        // SAFETY: the child runs engine code only and leaves with _exit,
        // never returning into the caller.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                // Each process counts into its own statistics shard, as
                // OpenSIPS workers do.
                rsec::engine::stats::set_process_shard(c + 1);
                sh.at(READY).fetch_add(1, Ordering::SeqCst);
                // Yielding, not spinning: on 2 cores, spinning children
                // would slow the parent and the children already started.
                while sh.at(GO).load(Ordering::Acquire) == 0 {
                    std::thread::yield_now();
                }
                work(c);
                sh.at(2 + c).store(mono_ns(), Ordering::Release);
            }))
            .is_ok();
            // SAFETY: leaves the child without running the parent's destructors.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        pids.push(pid);
    }
    while sh.at(READY).load(Ordering::Acquire) < procs as u64 {
        std::thread::yield_now();
    }
    let start = mono_ns();
    sh.at(GO).store(1, Ordering::Release);
    for pid in pids {
        let mut st = 0;
        // SAFETY: waits for a child we forked.
        unsafe { libc::waitpid(pid, &mut st, 0) };
        assert!(
            libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0,
            "benchmark child failed (status {st:#x})"
        );
    }
    let end = (0..procs)
        .map(|c| sh.at(2 + c).load(Ordering::Acquire))
        .max()
        .unwrap();
    Duration::from_nanos(end - start)
}

fn multi_process(o: &Opts, e: &Engine, n: u32, keys: &[IpKey], clock: &mut Clock, out: &mut Out) {
    let hot = [ip(NEW - 1)];
    for (case, hot_key) in [("mp_distinct", false), ("mp_hot", true)] {
        let mut one = None;
        for &p in &o.procs {
            let per = keys.len() / p;
            let mut ns = Vec::new();
            for _ in 0..o.reps {
                let block = clock.block();
                let wall = run_children(p, |c| {
                    let ks = if hot_key {
                        &hot[..]
                    } else {
                        &keys[c * per..(c + 1) * per]
                    };
                    pike_loop(e, ks, o.ops, block, clock.shift);
                });
                ns.push(wall.as_nanos() as f64 / (o.ops * p as u64) as f64);
            }
            let agg = median(ns);
            let base = *one.get_or_insert(agg);
            let what = if hot_key {
                "all on one source".to_owned()
            } else {
                format!("{per} own known sources each")
            };
            out.add(
                case,
                n as u64,
                p,
                agg,
                &format!(
                    "aggregate over {p} process(es), {what}; x{:.2} of 1 process",
                    base / agg
                ),
            );
        }
    }
}

/// The ban table at `n` entries: lookups that miss and that hit.
fn group_bans(o: &Opts, n: u32, out: &mut Out) {
    let t = Instant::now();
    let e = engine(SMALL, n, SMALL);
    let mut banned = Vec::new();
    for i in 0..n {
        let k = ip(FILL + i);
        if let BanOutcome::Created(_) = e.ban(Cidr::host(k), 0, Reason::Manual, T0).unwrap() {
            banned.push(k);
        }
    }
    println!(
        "# bans table {n}: {} MiB mapped, filled in {} ({} bans = {:.1}%; \
         active bans are never evicted)",
        e.shm_bytes() >> 20,
        secs(t),
        banned.len(),
        banned.len() as f64 * 100.0 / n as f64
    );
    let mut rng = SplitMix(0xba5);
    rng.shuffle(&mut banned);
    banned.truncate(o.ops as usize);
    let misses: Vec<IpKey> = (0..(o.ops.min(n as u64)) as u32)
        .map(|i| ip(MISS + i))
        .collect();
    let mut clock = Clock::new(o.ops);
    let cases = [("ban_miss", &misses, false), ("ban_hit", &banned, true)];
    for (case, keys, want) in cases.into_iter().filter(|_| o.wants("ban")) {
        out.case(o, case, n as u64, "lookup_ban, ban table full", |_| {
            let block = clock.block();
            let t = Instant::now();
            let mut j = 0;
            for i in 0..o.ops {
                let r = e.lookup_ban(&keys[j], block + (i >> clock.shift)).unwrap();
                debug_assert_eq!(r.is_some(), want);
                black_box(r);
                j += 1;
                if j == keys.len() {
                    j = 0;
                }
            }
            (t.elapsed(), o.ops)
        });
    }
    if o.wants("sweep") {
        sweep_live(o, &e, "sweep_bans", n, &mut clock, out);
    }
}

/// The rate-limit table at `n` entries: checks on known keys.
fn group_rl(o: &Opts, n: u32, out: &mut Out) {
    let t = Instant::now();
    let e = engine(SMALL, SMALL, n);
    let mut s = String::new();
    for i in 0..n {
        rl_key_str(FILL + i, &mut s);
        let k = RlKey::new(s.as_bytes()).unwrap();
        e.rl_check(&k, RL_LIMIT, RL_PERIOD_S, T0).unwrap();
    }
    let resident = n as u64 - e.rl_counters().evictions.get();
    let mut clock = Clock::new(o.ops);
    let check_at = clock.block();
    let mut idx: Vec<u32> = (0..n)
        .filter(|&i| {
            rl_key_str(FILL + i, &mut s);
            let k = RlKey::new(s.as_bytes()).unwrap();
            e.rl_available(&k, check_at).unwrap().is_some()
        })
        .take(o.ops as usize)
        .collect();
    SplitMix(0x71).shuffle(&mut idx);
    let mut keys = Strs::default();
    for &i in &idx {
        rl_key_str(FILL + i, &mut s);
        keys.push(s.as_bytes());
    }
    println!(
        "# rl table {n}: {} MiB mapped, filled in {} ({resident} resident = {:.1}%)",
        e.shm_bytes() >> 20,
        secs(t),
        resident as f64 * 100.0 / n as f64
    );

    if o.wants("rl") {
        // What building the key costs (the module builds one from the script's
        // string on every call, so it stays inside the measured rl_check).
        let t = Instant::now();
        let mut j = 0;
        for _ in 0..o.ops {
            black_box(RlKey::new(black_box(keys.get(j))).unwrap());
            j += 1;
            if j == keys.len() {
                j = 0;
            }
        }
        let build = t.elapsed().as_nanos() as f64 / o.ops as f64;
        out.case(
            o,
            "rl_known",
            n as u64,
            &format!(
                "cache-cold: {} known ip:port keys shuffled; includes RlKey::new ({build:.1} ns)",
                keys.len()
            ),
            |_| {
                let block = clock.block();
                let t = Instant::now();
                let mut j = 0;
                for i in 0..o.ops {
                    let k = RlKey::new(keys.get(j)).unwrap();
                    black_box(
                        e.rl_check(&k, RL_LIMIT, RL_PERIOD_S, block + (i >> clock.shift))
                            .unwrap(),
                    );
                    j += 1;
                    if j == keys.len() {
                        j = 0;
                    }
                }
                (t.elapsed(), o.ops)
            },
        );
    }
    if o.wants("sweep") {
        sweep_live(o, &e, "sweep_rl", n, &mut clock, out);
    }
}

/// The whitelist with `count` prefixes, a mix of IPv4 /24s and IPv6 /48s
/// as an operator's trunks and offices would be: the same two prefix
/// lengths at every size, so only the number of entries changes.
/// `wl_hit` cycles over every entry (at 65,536, a working set beyond the
/// L2 cache), `wl_hit_1k` over 1,024 of them spread over the list (all
/// of them when fewer): the same working set as the 1,024 random
/// addresses outside the list of `wl_miss`, so the three sizes differ
/// only in what the lookup does.
fn group_whitelist(o: &Opts, count: u32, out: &mut Out) {
    let e = engine(SMALL, SMALL, SMALL);
    let list: Vec<Cidr> = (0..count)
        .map(|i| {
            let c = if i % 4 == 3 {
                format!("2001:db8:{i:x}::/48")
            } else {
                format!("10.{}.{}.0/24", i / 256, i % 256)
            };
            Cidr::parse(&c).unwrap()
        })
        .collect();
    // One write: adding 65,536 entries one by one would rebuild the set
    // each time.
    assert!(e.whitelist_replace(list.clone()).unwrap().is_empty());
    assert_eq!(e.whitelist().len(), count as usize);
    let hits: Vec<IpKey> = list
        .iter()
        .map(|c| {
            let mut a = c.addr;
            a.0[15] = 7;
            a
        })
        .collect();
    let some_hits: Vec<IpKey> = hits
        .iter()
        .step_by((hits.len() / 1024).max(1))
        .take(1024)
        .copied()
        .collect();
    let misses: Vec<IpKey> = (0..1024)
        .map(|i| ip(MISS + i))
        .filter(|a| !e.is_whitelisted(a))
        .collect();
    for (case, keys) in [
        ("wl_hit", &hits),
        ("wl_hit_1k", &some_hits),
        ("wl_miss", &misses),
    ] {
        out.case(
            o,
            case,
            count as u64,
            &format!("is_whitelisted, {count} prefixes (size = prefixes)"),
            |_| {
                let t = Instant::now();
                let mut j = 0;
                for _ in 0..o.ops {
                    black_box(e.is_whitelisted(black_box(&keys[j])));
                    j += 1;
                    if j == keys.len() {
                        j = 0;
                    }
                }
                (t.elapsed(), o.ops)
            },
        );
    }
}

/// Real User-Agents, cut or repeated to the benchmark's header lengths.
const USER_AGENTS: &[&str] = &[
    "Yealink SIP-T46S 66.86.0.15",
    "PolycomVVX-VVX_411-UA/6.3.0.14929",
    "Grandstream GXP2170 1.0.11.3",
    "Linphone/5.0 (belle-sip/5.0)",
    "Zoiper rv2.10.19.3",
    "MicroSIP/3.21.3",
    "Asterisk PBX 18.9.0",
    "FPBX-16.0.33(18.16.0)",
    "snom760/10.1.54.13",
    "Cisco-CP8845/12.8.1",
    "Bria 6 release 6.5.5 stamp 112233",
    "FreeSWITCH-mod_sofia/1.10.9-release~64bit",
];

/// Eight headers of exactly `len` bytes, each a different rotation of the
/// real User-Agents (so the loop does not replay one byte sequence).
fn headers_of(len: usize) -> Vec<Vec<u8>> {
    (0..8)
        .map(|k| {
            let mut h = Vec::with_capacity(len + 64);
            let mut i = k;
            while h.len() < len {
                h.extend_from_slice(USER_AGENTS[i % USER_AGENTS.len()].as_bytes());
                h.push(b' ');
                i += 1;
            }
            h.truncate(len);
            h
        })
        .collect()
}

/// `n` scanner-like names: 6 to 16 lowercase letters, digits or dashes.
fn random_patterns(n: usize) -> Vec<String> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789-";
    let mut rng = SplitMix(0x5ca9);
    (0..n)
        .map(|_| {
            let len = 6 + (rng.next() % 11) as usize;
            (0..len)
                .map(|_| ALPHABET[(rng.next() % ALPHABET.len() as u64) as usize] as char)
                .collect()
        })
        .collect()
}

/// The scanner match: its cost must follow the header's length and not
/// the number of patterns, which the 1,000-pattern rows show beside the
/// built-in list's.
fn group_scanner(o: &Opts, out: &mut Out) {
    let builtin = ScannerPatterns::builtin();
    let mut names = random_patterns(1000 - ScannerPatterns::BUILTIN.len());
    names.extend(ScannerPatterns::BUILTIN.iter().map(|&s| s.to_owned()));
    let thousand = ScannerPatterns::new(names).unwrap();
    for (what, p) in [("built-in list", &builtin), ("1,000 patterns", &thousand)] {
        println!(
            "# scanner {what}: {} patterns, automaton {} KiB",
            p.patterns().len(),
            p.automaton_bytes().div_ceil(1024)
        );
        for len in [40, 1000] {
            let headers = headers_of(len);
            for h in &headers {
                // A match would stop early and time less than the whole header.
                assert_eq!(p.matches(h), None, "{}", String::from_utf8_lossy(h));
            }
            out.case(
                o,
                &format!("scan_{len}B"),
                p.patterns().len() as u64,
                &format!("{what}, {len}-byte User-Agent naming no scanner"),
                |_| {
                    let t = Instant::now();
                    let mut j = 0;
                    for _ in 0..o.ops {
                        black_box(p.matches(black_box(&headers[j])));
                        j = (j + 1) % headers.len();
                    }
                    (t.elapsed(), o.ops)
                },
            );
        }
    }
}

// ---------------------------------------------------------------- driver

/// Runs one group in a child process, whose exit returns its shared mapping
/// to the system, and collects its rows through a pipe.
fn isolated(run: &dyn Fn(&mut Out)) -> Result<Vec<Row>, String> {
    let mut fds = [0; 2];
    // SAFETY: creates a pipe into the array we pass.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0, "pipe failed");
    std::io::stdout().flush().unwrap();
    // SAFETY: the child runs the benchmark and leaves with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // SAFETY: the read end belongs to the parent.
        unsafe { libc::close(fds[0]) };
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut out = Out { rows: Vec::new() };
            run(&mut out);
            // SAFETY: the write end is ours; the File owns it from here.
            let mut w = unsafe { std::fs::File::from_raw_fd(fds[1]) };
            for r in &out.rows {
                writeln!(w, "{},{},{},{}", r.case, r.size, r.procs, r.ns_per_op).unwrap();
            }
        }))
        .is_ok();
        let _ = std::io::stdout().flush();
        // SAFETY: leaves the child without running the parent's destructors.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    // SAFETY: the write end belongs to the child; closing ours lets the
    // read below end when the child exits.
    unsafe { libc::close(fds[1]) };
    let mut text = String::new();
    // SAFETY: the read end is ours; the File owns and closes it.
    let read = unsafe { std::fs::File::from_raw_fd(fds[0]) }.read_to_string(&mut text);
    let mut st = 0;
    // SAFETY: waits for the child we forked.
    unsafe { libc::waitpid(pid, &mut st, 0) };
    if !(libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0) {
        return Err(format!("child failed (status {st:#x})"));
    }
    read.map_err(|e| e.to_string())?;
    Ok(text
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            Row {
                case: f[0].to_owned(),
                size: f[1].parse().unwrap(),
                procs: f[2].parse().unwrap(),
                ns_per_op: f[3].parse().unwrap(),
            }
        })
        .collect())
}

fn summary(rows: &[Row], sizes: &[u64]) {
    let mut series: Vec<(String, usize)> = Vec::new();
    for r in rows {
        if !series.iter().any(|(c, p)| *c == r.case && *p == r.procs) {
            series.push((r.case.clone(), r.procs));
        }
    }
    println!(
        "\nns/op by table size (whitelist: by number of prefixes; scan: by number \
         of patterns; mp: aggregate; *_full: one whole sweep)"
    );
    let mut head = format!("{:<24}", "case");
    for s in sizes {
        write!(head, " {:>10}", human(*s)).unwrap();
    }
    println!("{head}");
    for (case, procs) in series {
        let mut line = if procs > 1 || case.starts_with("mp_") {
            format!("{:<24}", format!("{case} x{procs}"))
        } else {
            format!("{case:<24}")
        };
        for s in sizes {
            match rows
                .iter()
                .find(|r| r.case == case && r.procs == procs && r.size == *s)
            {
                Some(r) if r.case.ends_with("_full") => {
                    write!(line, " {:>8.1}us", r.ns_per_op / 1e3).unwrap()
                }
                Some(r) => write!(line, " {:>10.1}", r.ns_per_op).unwrap(),
                None => write!(line, " {:>10}", "-").unwrap(),
            }
        }
        println!("{line}");
    }
}

fn main() {
    let o = Opts::from_env();
    println!(
        "rsec engine benchmark: sizes {:?}, {} ops per case, median of {}, processes {:?}, \
         groups {:?}",
        o.sizes.iter().map(|&s| human(s as u64)).collect::<Vec<_>>(),
        o.ops,
        o.reps,
        o.procs,
        o.groups,
    );
    println!(
        "{:<22} {:>9} {:>5} {:>11} {:>14}  notes",
        "case", "size", "procs", "ns/op", "ops/s"
    );
    let mut rows = Vec::new();
    let mut failed = false;
    let mut run = |name: &str, f: &dyn Fn(&mut Out)| match isolated(f) {
        Ok(r) => rows.extend(r),
        Err(e) => {
            eprintln!("{name}: {e}");
            failed = true;
        }
    };
    for &n in &o.sizes {
        if ["pike", "mp", "sweep"].iter().any(|g| o.wants(g)) {
            run(&format!("sources {n}"), &|out| group_sources(&o, n, out));
        }
        if o.wants("ban") || o.wants("sweep") {
            run(&format!("bans {n}"), &|out| group_bans(&o, n, out));
        }
        if o.wants("rl") || o.wants("sweep") {
            run(&format!("rl {n}"), &|out| group_rl(&o, n, out));
        }
    }
    if o.wants("wl") {
        // By default a small site, a big operator and a full default
        // max_whitelist, side by side.
        for &count in &o.wl_sizes {
            run(&format!("whitelist {count}"), &|out| {
                group_whitelist(&o, count, out)
            });
        }
    }
    if o.wants("scan") {
        run("scanner", &|out| group_scanner(&o, out));
    }

    let sizes: Vec<u64> = {
        let mut s: Vec<u64> = rows.iter().map(|r| r.size).collect();
        s.sort_unstable();
        s.dedup();
        s
    };
    summary(&rows, &sizes);

    // Grouped by series so each case is one contiguous run of lines (the
    // plot joins consecutive points).
    rows.sort_by(|a, b| (&a.case, a.procs, a.size).cmp(&(&b.case, b.procs, b.size)));
    let mut csv = String::from("case,size,procs,ns_per_op,ops_per_s\n");
    for r in &rows {
        writeln!(
            csv,
            "{},{},{},{:.2},{:.0}",
            r.case,
            r.size,
            r.procs,
            r.ns_per_op,
            r.ops_per_s()
        )
        .unwrap();
    }
    if let Some(dir) = o.csv.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::write(&o.csv, csv).unwrap();
    println!("\nwrote {}", o.csv.display());
    if failed {
        std::process::exit(1);
    }
}
