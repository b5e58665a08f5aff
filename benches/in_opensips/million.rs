//! The million scenario: one request from each of RSEC_BENCH_MILLION
//! distinct addresses (127.16.0.0 up), paced at RSEC_BENCH_MILLION_RATE so
//! that nothing is lost, through OpenSIPS with rsec and then with pike,
//! both at RSEC_BENCH_DENSITY per RSEC_BENCH_UNIT s, OpenSIPS started with
//! RSEC_BENCH_MILLION_SHM_MB of shared memory.
//!
//! * rsec: its tables live in one mapping sized at start-up (the "KiB
//!   mapped" of its start-up line); OpenSIPS's shared memory must not move,
//!   old sources are evicted, and every request must get a verdict: the
//!   requests OpenSIPS received minus those sec_pike_check counted
//!   (rsec:requests_checked) is the number that passed unchecked, and the
//!   config answers 500 to any error.
//! * pike: one tree node per address byte seen, in OpenSIPS shared memory;
//!   once that is exhausted pike_check_req() lets the request through
//!   unchecked (it logs "no more shm mem" for each). OpenSIPS's
//!   shmem:real_used_size and the failures logged are sampled every 250 ms
//!   to find that fail-open point.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cost::SOURCES_BASE;
use crate::knobs::Knobs;
use crate::report::{self, Table};
use crate::setup::{self, stats, Limits, Setup};
use crate::support::flood::{nth_source, Flood};
use crate::support::mi::Mi;
use crate::support::opensips::{Env, TestDir};

/// What OpenSIPS's log says when pike cannot allocate a node (the request
/// then passes unchecked), and what its allocator says then.
const PIKE_NO_SHM: &str = "no more shm mem";
const CORE_NO_SHM: &str = "not enough free shm memory";

/// One monitoring sample.
#[derive(Clone, Copy, Debug)]
struct Sample {
    t: Duration,
    received: u64,
    shm_used: u64,
    pike_failures: u64,
}

/// Counts occurrences of a line fragment in a growing log, reading only
/// what was added since the last call.
struct LogCounter {
    file: Option<File>,
    at: u64,
    carry: String,
    count: u64,
}

impl LogCounter {
    fn new(path: &Path) -> LogCounter {
        LogCounter {
            file: File::open(path).ok(),
            at: 0,
            carry: String::new(),
            count: 0,
        }
    }

    fn update(&mut self, needle: &str) -> u64 {
        let Some(f) = self.file.as_mut() else {
            return 0;
        };
        let mut buf = Vec::new();
        if f.seek(SeekFrom::Start(self.at)).is_ok() && f.read_to_end(&mut buf).is_ok() {
            self.at += buf.len() as u64;
            let text = std::mem::take(&mut self.carry) + &String::from_utf8_lossy(&buf);
            let (whole, rest) = text.rsplit_once('\n').unwrap_or(("", &text));
            self.count += whole.lines().filter(|l| l.contains(needle)).count() as u64;
            self.carry = rest.to_string();
        }
        self.count
    }
}

struct Outcome {
    setup: Setup,
    sent: u64,
    received: u64,
    ok: u64,
    refused: u64,
    errors: u64,
    lost: u64,
    unchecked: Option<u64>,
    shm_before: Option<u64>,
    shm_after: Option<u64>,
    core_no_shm: u64,
    mapped_kib: Option<u64>,
    /// What rsec's start-up line says one tracked source costs.
    bytes_per_source: Option<u64>,
    evictions: Option<u64>,
    table_full: Option<u64>,
    /// pike: (requests received, shm used) at the first sample that saw a
    /// failure, and at the sample before it.
    fail_open: Option<(Sample, Sample)>,
    flood_secs: f64,
}

fn one(env: &Env, k: &Knobs, setup: Setup) -> Outcome {
    let name = format!("million_{}", setup.name());
    let dir = TestDir::new(&name);
    let limits = Limits::scenario(k);
    let (os, mi) = setup::start(
        env,
        &dir,
        &name,
        setup,
        k.workers,
        k.million_shm_mb,
        &limits,
    );
    let mapped_kib = os.log_lines_with(&["KiB mapped"]).first().and_then(|l| {
        l.split(" KiB mapped")
            .next()?
            .rsplit(' ')
            .next()?
            .parse()
            .ok()
    });
    let bytes_per_source = os
        .log_lines_with(&["bytes per source"])
        .first()
        .and_then(|l| {
            l.split(" bytes per source")
                .next()?
                .rsplit(' ')
                .next()?
                .parse()
                .ok()
        });
    let groups = ["shmem:", "core:", "rsec:"];
    let before = stats(&mi, &groups).expect("statistics before the flood");
    let get = |m: &std::collections::BTreeMap<String, u64>, n: &str| m.get(n).copied();

    let stop = Arc::new(AtomicBool::new(false));
    let monitor = {
        let (stop, port, log) = (stop.clone(), mi.port, os.log_path.clone());
        let rcv0 = get(&before, "core:rcv_requests").unwrap_or(0);
        std::thread::spawn(move || {
            let mi = Mi::with_timeout(port, Duration::from_secs(2));
            let mut log = LogCounter::new(&log);
            let t0 = Instant::now();
            let mut out = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(250));
                let s = stats(&mi, &["rcv_requests", "real_used_size"]).unwrap_or_default();
                out.push(Sample {
                    t: t0.elapsed(),
                    received: s.get("core:rcv_requests").map_or(0, |r| r - rcv0),
                    shm_used: s.get("shmem:real_used_size").copied().unwrap_or(0),
                    pike_failures: log.update(PIKE_NO_SHM),
                });
            }
            out
        })
    };
    let mut flood = Flood::new(os.port, Duration::from_secs(1)).expect("flood socket");
    let n = k.million;
    let t0 = Instant::now();
    flood.paced(k.million_rate, n as u64, |i| {
        (nth_source(SOURCES_BASE, n, i), 0)
    });
    let flood_secs = t0.elapsed().as_secs_f64();
    flood.drain(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let samples = monitor.join().expect("the monitor panicked");
    let rep = flood.finish(Duration::ZERO);
    let after = stats(&mi, &groups);
    let delta = |name: &str| Some(get(after.as_ref()?, name)? - get(&before, name)?);
    let received =
        delta("core:rcv_requests").unwrap_or_else(|| samples.last().map_or(0, |s| s.received));
    let pike_failures = os.log_lines_with(&[PIKE_NO_SHM]).len() as u64;
    let unchecked = match setup {
        Setup::Rsec => delta("rsec:requests_checked").map(|c| received.saturating_sub(c)),
        _ => Some(pike_failures),
    };
    let fail_open = samples
        .iter()
        .position(|s| s.pike_failures > 0)
        .map(|i| (samples[i.saturating_sub(1)], samples[i]));
    let sent = rep.sent_total();
    let o = Outcome {
        setup,
        sent,
        received,
        ok: rep.code_total(200),
        refused: rep.code_total(403) + rep.code_total(429),
        errors: rep.answered_total()
            - rep.code_total(200)
            - rep.code_total(403)
            - rep.code_total(429),
        lost: sent - rep.answered_total(),
        unchecked,
        shm_before: get(&before, "shmem:real_used_size"),
        shm_after: after.as_ref().and_then(|a| get(a, "shmem:real_used_size")),
        core_no_shm: os.log_lines_with(&[CORE_NO_SHM]).len() as u64,
        mapped_kib: (setup == Setup::Rsec).then_some(mapped_kib).flatten(),
        bytes_per_source,
        evictions: (setup == Setup::Rsec)
            .then(|| delta("rsec:table_evictions"))
            .flatten(),
        table_full: (setup == Setup::Rsec)
            .then(|| delta("rsec:table_full"))
            .flatten(),
        fail_open,
        flood_secs,
    };
    eprintln!(
        "[million] {:5}: {} sent in {:.1} s, {} received, {} ({} lost), unchecked {:?}, shm {:?} -> {:?} B",
        setup.name(),
        o.sent,
        o.flood_secs,
        o.received,
        rep.codes(),
        o.lost,
        o.unchecked,
        o.shm_before,
        o.shm_after
    );
    let csv: String = std::iter::once("t_s,received,shm_used,pike_failures\n".to_string())
        .chain(samples.iter().map(|s| {
            format!(
                "{:.2},{},{},{}\n",
                s.t.as_secs_f64(),
                s.received,
                s.shm_used,
                s.pike_failures
            )
        }))
        .collect();
    report::write(&k.out, &format!("million_{}.csv", setup.name()), &csv);
    drop(os);
    o
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1 << 20) as f64)
}

pub fn run(env: &Env, k: &Knobs) {
    let outcomes: Vec<Outcome> = [Setup::Rsec, Setup::Pike]
        .iter()
        .map(|s| one(env, k, *s))
        .collect();
    let mut t = Table::new(&[
        "module",
        "sources sent",
        "received",
        "200",
        "403/429",
        "other (500…)",
        "unanswered",
        "passed unchecked",
        "OpenSIPS shm used before → after",
        "own mapping",
        "bytes per tracked source",
        "fail-open point",
        "evictions / table full",
    ]);
    for o in &outcomes {
        let opt = |v: Option<u64>| v.map_or("–".to_string(), |x| x.to_string());
        let shm = match (o.shm_before, o.shm_after) {
            (Some(a), Some(b)) => format!("{} → {}", mib(a), mib(b)),
            (Some(a), None) => format!("{} → (MI did not answer)", mib(a)),
            _ => "–".into(),
        };
        let (mapping, per_source, fail_open, evict) = match o.setup {
            Setup::Rsec => (
                o.mapped_kib.map_or("–".into(), |kib| mib(kib * 1024)),
                o.mapped_kib.map_or("–".into(), |kib| {
                    format!(
                        "{} in the hosts table ({:.0} = whole mapping / max_tracked_ips {})",
                        opt(o.bytes_per_source),
                        kib as f64 * 1024.0 / k.tracked as f64,
                        k.tracked
                    )
                }),
                "none (bounded table, evicts)".to_string(),
                format!("{} / {}", opt(o.evictions), opt(o.table_full)),
            ),
            _ => {
                let base = o.shm_before.unwrap_or(0);
                let (grown, tracked) = match o.fail_open {
                    Some((prev, _)) => (prev.shm_used.saturating_sub(base), prev.received),
                    None => (o.shm_after.unwrap_or(base).saturating_sub(base), o.received),
                };
                (
                    "– (OpenSIPS shm)".into(),
                    if tracked > 0 {
                        format!(
                            "{:.0} (shm growth / sources)",
                            grown as f64 / tracked as f64
                        )
                    } else {
                        "–".into()
                    },
                    match o.fail_open {
                        Some((prev, first)) => format!(
                            "after {}–{} sources ({} shm used)",
                            prev.received,
                            first.received,
                            mib(first.shm_used)
                        ),
                        None => "not reached".into(),
                    },
                    "–".into(),
                )
            }
        };
        t.row(vec![
            o.setup.name().into(),
            o.sent.to_string(),
            o.received.to_string(),
            o.ok.to_string(),
            o.refused.to_string(),
            o.errors.to_string(),
            o.lost.to_string(),
            opt(o.unchecked),
            shm,
            mapping,
            per_source,
            fail_open,
            evict,
        ]);
    }
    let md = format!(
        "A million sources: one request from each of {} distinct 127/8 addresses at {} req/s, OpenSIPS -m {} with {} UDP workers; \
         rsec max_tracked_ips {}; density {} per {} s for both. \"passed unchecked\": rsec = requests received − rsec:requests_checked; \
         pike = \"{PIKE_NO_SHM}\" errors logged (each a request pike let through without counting it). \
         Allocator failures logged: {}.\n\n{}",
        k.million,
        k.million_rate,
        k.million_shm_mb,
        k.workers,
        k.tracked,
        k.density,
        k.unit,
        outcomes
            .iter()
            .map(|o| format!("{} {}", o.setup.name(), o.core_no_shm))
            .collect::<Vec<_>>()
            .join(", "),
        t.markdown()
    );
    println!("\n{md}");
    report::write(&k.out, "million.md", &md);
}
