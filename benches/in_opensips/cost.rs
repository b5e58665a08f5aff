//! The cost scenario: CPU per request of each setup with traffic that is
//! never refused. Each run is a fresh OpenSIPS; within a round every setup
//! runs once per mode and source count, the order rotated by one each round
//! so that no setup always runs first (or right after a given other).
//!
//! * paced: RSEC_BENCH_RATE requests per second, a 1 ms tick's worth at a
//!   time, on RSEC_BENCH_WORKERS workers; every request should be answered
//!   (a run below RSEC_BENCH_MIN_ANSWERED percent is flagged);
//! * saturated: one worker, RSEC_BENCH_WINDOW requests in flight: as fast
//!   as that worker answers, without overflowing its socket.
//!
//! CPU is every OpenSIPS process's utime + stime, read just before the
//! traffic and once every request is answered, divided by the requests
//! answered. With perf, the share of samples in the module's own objects
//! times that gives the microseconds spent inside the module.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use crate::cpu;
use crate::knobs::Knobs;
use crate::perf::{self, Shares};
use crate::report::{self, show, Table};
use crate::setup::{self, Limits, Setup};
use crate::support::flood::{nth_source, Flood};
use crate::support::opensips::{Env, TestDir};

/// Where the spread sources start: 127.16.0.0/12.
pub const SOURCES_BASE: Ipv4Addr = Ipv4Addr::new(127, 16, 0, 0);

/// One run's figures.
struct Run {
    round: u32,
    mode: String,
    sources: u32,
    setup: Setup,
    sent: u64,
    answered: u64,
    /// Answers other than 200 (a refusal: the thresholds were too low).
    refused: u64,
    traffic: Duration,
    cpu: Duration,
    shares: Option<Shares>,
}

impl Run {
    fn us_per_req(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.answered.max(1) as f64
    }

    fn answered_pct(&self) -> f64 {
        100.0 * self.answered as f64 / self.sent.max(1) as f64
    }

    fn answered_per_s(&self) -> f64 {
        self.answered as f64 / self.traffic.as_secs_f64()
    }

    /// Microseconds per request in objects `f` picks out of the shares.
    fn us_in(&self, f: impl Fn(&Shares) -> f64) -> Option<f64> {
        self.shares
            .as_ref()
            .map(|s| f(s) / 100.0 * self.us_per_req())
    }

    fn module_us(&self) -> Option<f64> {
        let dsos = self.setup.dsos();
        if dsos.is_empty() {
            return None;
        }
        self.us_in(|s| s.of(dsos))
    }

    fn flagged(&self, k: &Knobs) -> Option<String> {
        let mut why = Vec::new();
        if self.mode == "paced" && self.answered_pct() < k.min_answered_pct {
            why.push(format!("{:.2}% answered", self.answered_pct()));
        }
        if self.refused > 0 {
            why.push(format!("{} refused", self.refused));
        }
        (!why.is_empty()).then(|| why.join(", "))
    }
}

fn one(
    env: &Env,
    k: &Knobs,
    perf_bin: Option<&std::path::Path>,
    round: u32,
    mode: &str,
    sources: u32,
    setup: Setup,
) -> Run {
    let name = format!("cost_{}_{mode}_{sources}", setup.name().replace('+', "_"));
    let dir = TestDir::new(&name);
    let workers = if mode == "saturated" { 1 } else { k.workers };
    let (os, _mi) = setup::start(
        env,
        &dir,
        &name,
        setup,
        workers,
        k.shm_mb,
        &Limits::never_refused(k.tracked),
    );
    let pids = cpu::group_pids(os.pid().expect("running"));
    let mut flood = Flood::new(os.port, Duration::from_secs(1)).expect("flood socket");
    let rec = perf_bin.and_then(|p| perf::record(p, &pids, k.perf_freq, &dir.join("perf.data")));
    let pick = |i: u64| (nth_source(SOURCES_BASE, sources, i), 0u8);
    let cpu0 = cpu::cpu_of(&pids);
    let t0 = Instant::now();
    if mode == "saturated" {
        flood.saturate(k.window, k.secs, pick);
    } else {
        flood.paced(k.rate, (k.rate as f64 * k.secs.as_secs_f64()) as u64, pick);
    }
    let traffic = t0.elapsed();
    flood.drain(Duration::from_secs(1));
    let cpu1 = cpu::cpu_of(&pids);
    let shares = rec.and_then(|r| r.finish());
    let rep = flood.finish(Duration::ZERO);
    let run = Run {
        round,
        mode: mode.to_string(),
        sources,
        setup,
        sent: rep.sent_total(),
        answered: rep.answered_total(),
        refused: rep.answered_total() - rep.code_total(200),
        traffic,
        cpu: cpu1.saturating_sub(cpu0),
        shares,
    };
    eprintln!(
        "[round {round}] {mode:9} {sources:>7} sources {:8}: {} sent, {:.2}% answered ({}), {:.0}/s, {:.2} µs CPU/req{}{}",
        setup.name(),
        run.sent,
        run.answered_pct(),
        rep.codes(),
        run.answered_per_s(),
        run.us_per_req(),
        run.module_us().map(|u| format!(", {u:.2} µs in module")).unwrap_or_default(),
        run.flagged(k).map(|f| format!("  FLAGGED: {f}")).unwrap_or_default(),
    );
    run
}

pub fn run(env: &Env, k: &Knobs) {
    let setups: Vec<Setup> = k.setups.iter().filter_map(|s| Setup::by_name(s)).collect();
    let perf_bin = perf::perf_bin(k.perf);
    let mut runs = Vec::new();
    for round in 1..=k.rounds {
        for mode in &k.modes {
            for &sources in &k.sources {
                for i in 0..setups.len() {
                    let setup = setups[(i + round as usize - 1) % setups.len()];
                    runs.push(one(
                        env,
                        k,
                        perf_bin.as_deref(),
                        round,
                        mode,
                        sources,
                        setup,
                    ));
                }
            }
        }
    }
    write_results(k, &runs, &setups);
}

fn write_results(k: &Knobs, runs: &[Run], setups: &[Setup]) {
    let head = [
        "round",
        "mode",
        "sources",
        "setup",
        "sent",
        "answered",
        "refused",
        "traffic_s",
        "answered_per_s",
        "cpu_s",
        "cpu_us_per_req",
        "module_us",
        "libc_us",
        "opensips_us",
        "kernel_us",
        "flag",
    ];
    let opt = |v: Option<f64>| v.map(|x| format!("{x:.4}")).unwrap_or_default();
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            vec![
                r.round.to_string(),
                r.mode.clone(),
                r.sources.to_string(),
                r.setup.name().to_string(),
                r.sent.to_string(),
                r.answered.to_string(),
                r.refused.to_string(),
                format!("{:.3}", r.traffic.as_secs_f64()),
                format!("{:.0}", r.answered_per_s()),
                format!("{:.3}", r.cpu.as_secs_f64()),
                format!("{:.4}", r.us_per_req()),
                opt(r.module_us()),
                opt(r.us_in(Shares::libc)),
                opt(r.us_in(Shares::opensips)),
                opt(r.us_in(Shares::kernel)),
                r.flagged(k).unwrap_or_default().replace(',', ";"),
            ]
        })
        .collect();
    report::write(&k.out, "cost_runs.csv", &report::csv(&head, &rows));

    // Shares of samples by object, summed over runs, for a closer look.
    let mut dsos: BTreeMap<(String, u32, &str), BTreeMap<String, Vec<f64>>> = BTreeMap::new();
    for r in runs {
        if let Some(s) = &r.shares {
            let e = dsos
                .entry((r.mode.clone(), r.sources, r.setup.name()))
                .or_default();
            for (d, p) in &s.by_dso {
                e.entry(d.clone()).or_default().push(*p);
            }
        }
    }
    let dso_rows: Vec<Vec<String>> = dsos
        .iter()
        .flat_map(|((m, n, s), by)| {
            by.iter().map(move |(d, v)| {
                vec![
                    m.clone(),
                    n.to_string(),
                    s.to_string(),
                    d.clone(),
                    format!("{:.2}", report::spread(v).map_or(0.0, |x| x.0)),
                ]
            })
        })
        .collect();
    if !dso_rows.is_empty() {
        report::write(
            &k.out,
            "cost_dso_shares.csv",
            &report::csv(
                &["mode", "sources", "setup", "dso", "median_pct"],
                &dso_rows,
            ),
        );
    }

    let mut t = Table::new(&[
        "mode",
        "sources",
        "setup",
        "runs",
        "answered/s",
        "CPU µs/req",
        "µs in module",
        "libc µs (extra vs none)",
        "kernel µs",
        "flagged runs",
    ]);
    for mode in &k.modes {
        for &n in &k.sources {
            let none_libc = runs
                .iter()
                .filter(|r| &r.mode == mode && r.sources == n && r.setup == Setup::None)
                .filter_map(|r| r.us_in(Shares::libc))
                .collect::<Vec<_>>();
            let none_libc = report::spread(&none_libc).map(|x| x.0);
            for &s in setups {
                let rs: Vec<&Run> = runs
                    .iter()
                    .filter(|r| &r.mode == mode && r.sources == n && r.setup == s)
                    .collect();
                if rs.is_empty() {
                    continue;
                }
                let col = |f: &dyn Fn(&Run) -> Option<f64>| -> Vec<f64> {
                    rs.iter().filter_map(|r| f(r)).collect()
                };
                let libc = col(&|r| r.us_in(Shares::libc));
                let libc_cell = match (report::spread(&libc), none_libc) {
                    (Some((m, _, _)), Some(base)) => {
                        format!("{} ({:+.2})", show(&libc, 2), m - base)
                    }
                    _ => show(&libc, 2),
                };
                let flagged = rs.iter().filter(|r| r.flagged(k).is_some()).count();
                t.row(vec![
                    mode.clone(),
                    n.to_string(),
                    s.name().to_string(),
                    rs.len().to_string(),
                    show(&col(&|r| Some(r.answered_per_s())), 0),
                    show(&col(&|r| Some(r.us_per_req())), 2),
                    if s == Setup::None {
                        "–".into()
                    } else {
                        show(&col(&|r| r.module_us()), 2)
                    },
                    libc_cell,
                    show(&col(&|r| r.us_in(Shares::kernel)), 2),
                    flagged.to_string(),
                ]);
            }
        }
    }
    let md = format!(
        "CPU per answered request, all OpenSIPS processes (utime+stime), median (min–max) over {} rounds of {:.1} s; \
         paced = {} req/s on {} workers, saturated = 1 worker with {} requests in flight. \
         \"µs in module\" = share of perf samples in the module's own code × CPU/req{}.\n\n{}",
        k.rounds,
        k.secs.as_secs_f64(),
        k.rate,
        k.workers,
        k.window,
        if k.perf { "" } else { " (perf disabled)" },
        t.markdown()
    );
    println!("\n{md}");
    report::write(&k.out, "cost.md", &md);
}
