//! Every size, duration and switch of the benchmark, from environment
//! variables, so that short development runs and the full-length runs
//! behind docs/BENCHMARKS.md use the same code.

use std::path::PathBuf;
use std::time::Duration;

use crate::support::opensips::MANIFEST_DIR;

pub struct Knobs {
    /// RSEC_BENCH_SCENARIO: `all` or a comma list of cost, attack, million.
    pub scenarios: Vec<String>,
    /// RSEC_BENCH_OUT: where the markdown and CSV go
    /// (default `target/bench-opensips`).
    pub out: PathBuf,
    /// RSEC_BENCH_PERF: 0 disables the per-module sampling.
    pub perf: bool,
    /// RSEC_BENCH_PERF_FREQ: samples per second per CPU (default 2000).
    pub perf_freq: u32,

    // cost
    /// RSEC_BENCH_ROUNDS (default 5): each round runs every setup once per
    /// mode and source count, in an order rotated by one from the last.
    pub rounds: u32,
    /// RSEC_BENCH_SECS (default 5): traffic phase of each cost run.
    pub secs: Duration,
    /// RSEC_BENCH_RATE (default 20000): requests per second, paced mode.
    pub rate: u64,
    /// RSEC_BENCH_SOURCES (default 1000,100000).
    pub sources: Vec<u32>,
    /// RSEC_BENCH_SETUPS (default none,pike,pike+rl,rsec; rsec-before runs
    /// the module RSEC_SO_BEFORE names with rsec's configuration).
    pub setups: Vec<String>,
    /// RSEC_BENCH_MODES (default paced,saturated).
    pub modes: Vec<String>,
    /// RSEC_BENCH_WORKERS (default 2): UDP workers in paced mode (saturated
    /// mode always has one, so that one worker's speed is measured).
    pub workers: u32,
    /// RSEC_BENCH_WINDOW (default 256): requests in flight, saturated mode.
    pub window: u64,
    /// RSEC_BENCH_SHM_MB (default 256): OpenSIPS shared memory (-m) of the
    /// cost and attack runs, enough for pike's and ratelimit's trees.
    pub shm_mb: u32,
    /// RSEC_BENCH_MIN_ANSWERED (default 99.9): a paced run with fewer
    /// answered (in percent) is flagged.
    pub min_answered_pct: f64,

    // attack
    /// RSEC_BENCH_ATTACK_SECS (default 10): the flood; 2 s of legitimate
    /// traffic alone come before and after it.
    pub attack_secs: Duration,
    /// RSEC_BENCH_ATTACK_LEGIT (default 50) legitimate sources, each
    /// sending RSEC_BENCH_ATTACK_LEGIT_RATE (default 5) requests per second.
    pub legit: u32,
    pub legit_rate: u64,
    /// RSEC_BENCH_ATTACK_RATE (default 0): the attacker's requests per
    /// second; 0 = as fast as OpenSIPS answers, RSEC_BENCH_WINDOW in flight.
    pub attack_rate: u64,
    /// RSEC_BENCH_DENSITY (default 30) requests per RSEC_BENCH_UNIT
    /// (default 2) seconds: the flood threshold of the attack and million
    /// scenarios, the same for pike and rsec.
    pub density: u32,
    pub unit: u32,
    /// RSEC_BENCH_PLOT (default 1): draw the attack PNG with gnuplot, to
    /// RSEC_BENCH_PNG (default docs/under-attack.png).
    pub plot: bool,
    pub png: PathBuf,

    // million
    /// RSEC_BENCH_MILLION (default 1000000) distinct sources, one request
    /// each, at RSEC_BENCH_MILLION_RATE (default 20000) per second.
    pub million: u32,
    pub million_rate: u64,
    /// RSEC_BENCH_MILLION_SHM_MB (default 64): small enough that pike
    /// exhausts it.
    pub million_shm_mb: u32,
    /// RSEC_BENCH_TRACKED (default 65536, rsec's default): max_tracked_ips.
    pub tracked: u32,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn num<T: std::str::FromStr>(name: &str, default: T) -> T {
    match var(name) {
        None => default,
        Some(v) => v
            .trim()
            .replace('_', "")
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v} is not a number")),
    }
}

fn list(name: &str, default: &str) -> Vec<String> {
    var(name)
        .unwrap_or_else(|| default.to_string())
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn secs(name: &str, default: f64) -> Duration {
    Duration::from_secs_f64(num(name, default))
}

impl Knobs {
    pub fn from_env() -> Knobs {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(MANIFEST_DIR).join("target"));
        let k = Knobs {
            scenarios: list("RSEC_BENCH_SCENARIO", "all"),
            out: var("RSEC_BENCH_OUT")
                .map(PathBuf::from)
                .unwrap_or_else(|| target.join("bench-opensips")),
            perf: num("RSEC_BENCH_PERF", 1u32) != 0,
            perf_freq: num("RSEC_BENCH_PERF_FREQ", 2000),
            rounds: num("RSEC_BENCH_ROUNDS", 5),
            secs: secs("RSEC_BENCH_SECS", 5.0),
            rate: num("RSEC_BENCH_RATE", 20_000),
            sources: list("RSEC_BENCH_SOURCES", "1000,100000")
                .iter()
                .map(|s| {
                    s.replace('_', "")
                        .parse()
                        .expect("RSEC_BENCH_SOURCES: numbers")
                })
                .collect(),
            setups: list("RSEC_BENCH_SETUPS", "none,pike,pike+rl,rsec"),
            modes: list("RSEC_BENCH_MODES", "paced,saturated"),
            workers: num("RSEC_BENCH_WORKERS", 2),
            window: num("RSEC_BENCH_WINDOW", 256),
            shm_mb: num("RSEC_BENCH_SHM_MB", 256),
            min_answered_pct: num("RSEC_BENCH_MIN_ANSWERED", 99.9),
            attack_secs: secs("RSEC_BENCH_ATTACK_SECS", 10.0),
            legit: num("RSEC_BENCH_ATTACK_LEGIT", 50),
            legit_rate: num("RSEC_BENCH_ATTACK_LEGIT_RATE", 5),
            attack_rate: num("RSEC_BENCH_ATTACK_RATE", 0),
            density: num("RSEC_BENCH_DENSITY", 30),
            unit: num("RSEC_BENCH_UNIT", 2),
            plot: num("RSEC_BENCH_PLOT", 1u32) != 0,
            png: var("RSEC_BENCH_PNG")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(MANIFEST_DIR).join("docs/under-attack.png")),
            million: num("RSEC_BENCH_MILLION", 1_000_000),
            million_rate: num("RSEC_BENCH_MILLION_RATE", 20_000),
            million_shm_mb: num("RSEC_BENCH_MILLION_SHM_MB", 64),
            tracked: num("RSEC_BENCH_TRACKED", 65_536),
        };
        for s in &k.setups {
            assert!(
                crate::setup::Setup::by_name(s).is_some(),
                "RSEC_BENCH_SETUPS: unknown setup {s} (none, pike, pike+rl, rsec, rsec-before, rsec-all, rsec-scoped)"
            );
        }
        for m in &k.modes {
            assert!(
                m == "paced" || m == "saturated",
                "RSEC_BENCH_MODES: unknown mode {m} (paced, saturated)"
            );
        }
        // 127.16.0.0/12 holds the spread sources; the attack scenario's
        // addresses are elsewhere in 127/8.
        for n in k.sources.iter().chain([&k.million]) {
            assert!(
                (1..=1 << 20).contains(n),
                "at most 1048576 sources (127.16.0.0/12), not {n}"
            );
        }
        assert!(k.rate > 0 && k.million_rate > 0 && k.window > 0);
        k
    }

    pub fn scenario(&self, name: &str) -> bool {
        self.scenarios.iter().any(|s| s == name || s == "all")
    }

    /// One line per scenario with its settings, for the record.
    pub fn describe(&self) -> String {
        format!(
            "in_opensips: scenarios {:?}; perf {}\n\
             cost: {} rounds x {:.1} s, modes {:?}, setups {:?}, sources {:?}, paced {} req/s on {} workers, saturated 1 worker window {}, -m {}\n\
             attack: {} legit sources x {} req/s, attacker {} for {:.1} s, density {} per {} s\n\
             million: {} sources at {} req/s, -m {} for pike, max_tracked_ips {}",
            self.scenarios,
            if self.perf { format!("on at {} Hz", self.perf_freq) } else { "off".into() },
            self.rounds,
            self.secs.as_secs_f64(),
            self.modes,
            self.setups,
            self.sources,
            self.rate,
            self.workers,
            self.window,
            self.shm_mb,
            self.legit,
            self.legit_rate,
            if self.attack_rate == 0 { "flat out".to_string() } else { format!("at {} req/s", self.attack_rate) },
            self.attack_secs.as_secs_f64(),
            self.density,
            self.unit,
            self.million,
            self.million_rate,
            self.million_shm_mb,
            self.tracked,
        )
    }
}
