//! Engine throughput, reproducible with `cargo bench --bench engine`.
//!
//! Measures the per-request cost of the hot paths as OpenSIPS workers see
//! them: the flood check for a well-behaved source, for a spoofed flood of
//! distinct addresses (every call inserts or evicts), the rate limiter, and
//! the flood check from several processes at once on the shared tables.

use std::time::Instant;

use rsec::engine::{Config, Engine, IpKey, RlKey};

const US: u64 = 1_000_000;

fn report(name: &str, ops: u64, secs: f64) {
    println!(
        "{name:<48} {:>10.0} ops/s  {:>7.1} ns/op",
        ops as f64 / secs,
        secs * 1e9 / ops as f64
    );
}

fn engine() -> Engine {
    Engine::new(Config {
        pike_density: 65_534,
        ..Config::default()
    })
    .unwrap()
}

fn main() {
    let n: u64 = std::env::var("RSEC_BENCH_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000_000);
    println!("rsec engine benchmark, {n} operations per case (RSEC_BENCH_OPS)");

    let e = engine();
    let ips: Vec<IpKey> = (0..1024u32)
        .map(|i| IpKey::from_bytes(&(0x0a00_0000 | i).to_be_bytes()).unwrap())
        .collect();
    let t = Instant::now();
    for i in 0..n {
        e.pike_check(&ips[(i % 1024) as usize], 1_000 * US + i)
            .unwrap();
    }
    report(
        "pike_check, 1024 known sources",
        n,
        t.elapsed().as_secs_f64(),
    );

    let e = engine();
    let t = Instant::now();
    for i in 0..n {
        let ip =
            IpKey::from_bytes(&((i as u32).wrapping_mul(2_654_435_761)).to_be_bytes()).unwrap();
        e.pike_check(&ip, 1_000 * US + i).unwrap();
    }
    report(
        "pike_check, spoofed flood (new source each call)",
        n,
        t.elapsed().as_secs_f64(),
    );
    println!(
        "    table capacity {} sources, evictions {}, mapped {} KiB (fixed)",
        e.config().max_tracked_ips,
        e.source_counters().evictions.get(),
        e.shm_bytes() / 1024
    );

    let e = engine();
    let keys: Vec<RlKey> = (0..1024)
        .map(|i| RlKey::new(format!("reg:10.0.{}.{}", i / 256, i % 256).as_bytes()).unwrap())
        .collect();
    let t = Instant::now();
    for i in 0..n {
        e.rl_check(&keys[(i % 1024) as usize], 100, 1, 1_000 * US + i)
            .unwrap();
    }
    report("rl_check, 1024 keys", n, t.elapsed().as_secs_f64());

    // The sweep timer walks every stripe of every table once a second.
    let e = engine();
    for i in 0..65_536u32 {
        e.pike_check(
            &IpKey::from_bytes(&(0x0b00_0000 | i).to_be_bytes()).unwrap(),
            1_000 * US,
        )
        .unwrap();
    }
    let t = Instant::now();
    let rounds = 20;
    for r in 0..rounds {
        e.sweep(1_000 * US + r).unwrap();
    }
    println!(
        "{:<48} {:>10.2} ms per sweep (65536 sources, 16384 bans, 16384 rl keys)",
        "sweep, default table sizes, all full",
        t.elapsed().as_secs_f64() * 1e3 / rounds as f64
    );

    for procs in [2u64, 4] {
        let e = engine();
        let per = n / procs;
        let t = Instant::now();
        let mut pids = Vec::new();
        for p in 0..procs {
            // SAFETY: the child only runs engine code and exits with _exit.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                for i in 0..per {
                    e.pike_check(&ips[((i + p * 7) % 1024) as usize], 1_000 * US + i)
                        .unwrap();
                }
                unsafe { libc::_exit(0) };
            }
            pids.push(pid);
        }
        for pid in pids {
            let mut st = 0;
            unsafe { libc::waitpid(pid, &mut st, 0) };
            assert!(libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0);
        }
        report(
            &format!("pike_check, {procs} processes on shared tables (total)"),
            per * procs,
            t.elapsed().as_secs_f64(),
        );
    }
}
