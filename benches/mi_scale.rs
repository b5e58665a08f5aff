//! rsec's MI and persistence at scale, in a real OpenSIPS 3.6 against a
//! real MariaDB, reproducible with `make bench-mi` (or `cargo bench --bench
//! mi_scale`).
//!
//! For each N in RSEC_BENCH_MI_SIZES (default `1000,100000,1000000`):
//! * N bans are written straight into `rsec_bans` (one INSERT … SELECT from
//!   MariaDB's sequence engine), then OpenSIPS starts with persistence on
//!   and `max_bans` 2·N (a table filled to the brim refuses bans whose probe
//!   window is full): the start-up time with them, against the start-up
//!   time of the same table with an empty database, and how long until all
//!   N are in force (`bans_active`);
//! * `sec_ban_list` pages through all of them over mi_http in pages of the
//!   default size: the time, and the MI (httpd) process's memory: its
//!   private memory (RssAnon, sampled every few ms; the ban table it walks
//!   is shared memory and shows in VmHWM, not here) and its VmHWM.
//!
//! Then a sync of RSEC_BENCH_MI_SYNC (default 100000) bans between two
//! nodes sharing the database: node A bans them with `sec_ban` over MI,
//! its persistence process writes them, node B (db_sync_interval 1 s)
//! imports them; the times until A's writes are done and until B holds
//! them all.
//!
//! Prints a markdown table and writes it to target/bench-mi/mi_scale.md.
//! Needs OpenSIPS (with httpd and mi_http) and MariaDB; without them,
//! prints one SKIP line (or fails, with RSEC_REQUIRE_OPENSIPS=1). Set
//! RSEC_READY_TIMEOUT_S when a start-up with a million bans takes more
//! than the harness's 20 s.

// The integration tests' support module. The benchmark uses a part of it;
// the test binary, which uses all of it, is where dead code is caught.
#[path = "../tests/it/support/mod.rs"]
#[allow(dead_code)]
mod support;

use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::mariadb::MariaDb;
use support::mi::{array, Mi};
use support::opensips::{self, s, Env, OpenSips, TestDir};

const CFG: &str = include_str!("cfg/mi_scale.cfg");
/// `sec_ban_list`'s default page (src/glue/mi.rs BAN_LIST_DEFAULT_LIMIT).
const PAGE: u64 = 10_000;

fn sizes() -> Vec<u64> {
    std::env::var("RSEC_BENCH_MI_SIZES")
        .ok()
        .map(|v| {
            v.split(',')
                .map(|n| {
                    n.trim()
                        .parse()
                        .unwrap_or_else(|_| panic!("RSEC_BENCH_MI_SIZES: bad size {n:?}"))
                })
                .collect()
        })
        .unwrap_or_else(|| vec![1_000, 100_000, 1_000_000])
}

/// Starts one node on `db`; the time from launch until it answered SIP and
/// HTTP.
fn node(
    env: &Env,
    dir: &TestDir,
    name: &str,
    db: &MariaDb,
    max_bans: u64,
    queue: u64,
) -> (OpenSips, Mi, Duration) {
    let t0 = Instant::now();
    let os = OpenSips::start_with_http(
        env,
        dir,
        name,
        CFG,
        &[
            ("MAX_BANS", s(max_bans)),
            ("DB_URL", db.url()),
            ("NODE_ID", name.to_string()),
            (
                "DB_TIMEOUT",
                std::env::var("RSEC_BENCH_MI_DB_TIMEOUT").unwrap_or_else(|_| "3".into()),
            ),
            ("DB_QUEUE_SIZE", s(queue)),
        ],
    );
    let mi = Mi::new(os.http_port.unwrap());
    mi.wait_ready(Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("[{name}] mi_http does not answer: {e}"));
    (os, mi, t0.elapsed())
}

/// Polls the sum of the statistics `stats` of `mi` every 50 ms until it
/// reaches `want`, at most `limit`; the time since `since`, or None (and
/// the sum seen) on time-out.
fn wait_stats(
    mi: &Mi,
    stats: &[&str],
    want: u64,
    since: Instant,
    limit: Duration,
) -> Result<Duration, u64> {
    loop {
        let all = mi.rsec_stats();
        let v: u64 = stats.iter().map(|s| all[*s]).sum();
        if v >= want {
            return Ok(since.elapsed());
        }
        if since.elapsed() > limit {
            return Err(v);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn httpd_pid(mi: &Mi) -> u64 {
    let ps = mi.ok("ps", "");
    array(&ps, "Processes")
        .iter()
        .find(|p| p["Type"].as_str().is_some_and(|t| t.starts_with("HTTPD")))
        .and_then(|p| p["PID"].as_u64())
        .unwrap_or_else(|| panic!("no HTTPD process in {ps}"))
}

/// A `/proc/<pid>/status` field in KiB.
fn status_kib(pid: u64, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Samples the RssAnon of `pid` every 2 ms until dropped; the peak.
struct PeakSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PeakSampler {
    fn start(pid: u64) -> PeakSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(status_kib(pid, "RssAnon")));
        let thread = {
            let (stop, peak) = (stop.clone(), peak.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    peak.fetch_max(status_kib(pid, "RssAnon"), Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(2));
                }
            })
        };
        PeakSampler {
            stop,
            peak,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.peak.load(Ordering::Relaxed)
    }
}

/// What one size gave.
struct Row {
    n: u64,
    max_bans: u64,
    insert: Duration,
    start_empty: Duration,
    start_full: Duration,
    loaded: Result<Duration, u64>,
    table_full: u64,
    pages: usize,
    listed: usize,
    distinct: usize,
    paging: Duration,
    page_p50_ms: f64,
    page_max_ms: f64,
    reply_max_kib: usize,
    anon_before: u64,
    anon_peak: u64,
    hwm_before: u64,
    hwm_after: u64,
    log_load: String,
}

fn one_size(env: &Env, db: &MariaDb, n: u64) -> Row {
    let dir = TestDir::new(&format!("bench_mi_{n}"));
    let max_bans = (2 * n).max(1024);
    db.sql("TRUNCATE rsec_bans; TRUNCATE rsec_ban_changes;");
    // The baseline: the same table, nothing to load.
    let (os, _mi, start_empty) = node(env, &dir, &format!("empty_{n}"), db, max_bans, 4096);
    drop(os);

    // N distinct addresses from 10.0.0.0 up (within 10/8 up to 16M),
    // banned for a day, in one statement.
    let t0 = Instant::now();
    db.sql(&format!(
        "INSERT INTO rsec_bans (address, reason, created, expires, node_id) \
         SELECT CONCAT('10.', (seq >> 16) & 255, '.', (seq >> 8) & 255, '.', seq & 255), \
         'manual', UNIX_TIMESTAMP(), UNIX_TIMESTAMP() + 86400, 'seed' FROM seq_0_to_{}",
        n - 1
    ));
    let insert = t0.elapsed();
    let rows: u64 = db
        .sql("SELECT COUNT(*) FROM rsec_bans")
        .trim()
        .parse()
        .unwrap();
    assert_eq!(rows, n, "rows in rsec_bans");

    let t0 = Instant::now();
    let (os, mi, start_full) = node(env, &dir, &format!("full_{n}"), db, max_bans, 4096);
    // mod_init loads them before forking; if the database did not answer
    // in time, the persistence process loads them later. A ban whose probe
    // window is full of bans is refused (table_full) and logged: every row
    // is accounted for when in force or refused.
    let loaded = wait_stats(
        &mi,
        &["bans_active", "table_full"],
        n,
        t0,
        Duration::from_secs(600),
    );
    let table_full = mi.rsec_stat("table_full");
    let log_load = os
        .log_lines_with(&["loaded"])
        .into_iter()
        .chain(os.log_lines_with(&["unreachable"]))
        .map(|l| {
            l.split_once("rsec:")
                .map_or(l.clone(), |(_, r)| r.to_string())
        })
        .collect::<Vec<_>>()
        .join("; ");

    // Page through all of them, default page size.
    let pid = httpd_pid(&mi);
    let (anon_before, hwm_before) = (status_kib(pid, "RssAnon"), status_kib(pid, "VmHWM"));
    let sampler = PeakSampler::start(pid);
    let mut seen: HashSet<String> = HashSet::new();
    let (mut listed, mut times, mut reply_max) = (0usize, Vec::new(), 0usize);
    let t0 = Instant::now();
    let mut params = String::new();
    loop {
        let t = Instant::now();
        let (_, body, j) = mi
            .exchange("sec_ban_list", &params)
            .unwrap_or_else(|e| panic!("sec_ban_list {params}: {e}"));
        times.push(t.elapsed().as_secs_f64() * 1e3);
        reply_max = reply_max.max(body.len());
        let r = &j["result"];
        assert!(r.is_object(), "sec_ban_list {params}: {body:.300}");
        for b in array(r, "bans") {
            listed += 1;
            seen.insert(b["ip"].as_str().unwrap().to_string());
        }
        if r["more"].as_bool() != Some(true) {
            break;
        }
        let next = r["next_cursor"].as_u64().expect("next_cursor");
        params = format!(r#"{{"cursor":{next},"limit":{PAGE}}}"#);
    }
    let paging = t0.elapsed();
    let anon_peak = sampler.finish();
    let hwm_after = status_kib(pid, "VmHWM");
    drop(os);
    times.sort_by(|a, b| a.total_cmp(b));
    Row {
        n,
        max_bans,
        insert,
        start_empty,
        start_full,
        loaded,
        table_full,
        pages: times.len(),
        listed,
        distinct: seen.len(),
        paging,
        page_p50_ms: times[times.len() / 2],
        page_max_ms: *times.last().unwrap(),
        reply_max_kib: reply_max / 1024,
        anon_before,
        anon_peak,
        hwm_before,
        hwm_after,
        log_load,
    }
}

/// What the two-node sync gave.
struct Sync {
    n: u64,
    mi_bans: Duration,
    refused: u64,
    a_written: Result<Duration, u64>,
    b_has_all: Result<Duration, u64>,
    b_after_a: Option<Duration>,
    queue_drops: u64,
    db_errors: (u64, u64),
    b_table_full: u64,
}

fn sync(env: &Env, db: &MariaDb, n: u64) -> Sync {
    let dir = TestDir::new("bench_mi_sync");
    db.sql("TRUNCATE rsec_bans; TRUNCATE rsec_ban_changes;");
    let max_bans = (2 * n).max(1024);
    // A's queue holds every decision, so none is dropped while its
    // persistence process catches up with the MI.
    let (_a, a_mi, _) = node(env, &dir, "node_a", db, max_bans, n + 1024);
    let (_b, b_mi, _) = node(env, &dir, "node_b", db, max_bans, 4096);

    // The fastest legitimate way in: sec_ban over mi_http, one after the
    // other (each is one HTTP request, as an operator's script would do).
    let t0 = Instant::now();
    let mut refused = 0;
    for i in 0..n {
        let ip = format!("172.{}.{}.{}", 16 + (i >> 16), (i >> 8) & 255, i & 255);
        if a_mi
            .call("sec_ban", &format!(r#"{{"ip":"{ip}","seconds":86400}}"#))
            .is_err()
        {
            refused += 1;
        }
    }
    let mi_bans = t0.elapsed();
    let limit = Duration::from_secs(900);
    // A writes the bans it made; B holds those, less any its own table
    // refuses (table_full).
    let a_written = wait_stats(&a_mi, &["db_writes"], n - refused, t0, limit);
    let b_has_all = wait_stats(
        &b_mi,
        &["bans_active", "table_full"],
        n - refused,
        t0,
        limit,
    );
    let b_after_a = match (&a_written, &b_has_all) {
        (Ok(a), Ok(b)) => Some(b.saturating_sub(*a)),
        _ => None,
    };
    Sync {
        n,
        mi_bans,
        refused,
        a_written,
        b_has_all,
        b_after_a,
        queue_drops: a_mi.rsec_stat("db_queue_drops"),
        db_errors: (a_mi.rsec_stat("db_errors"), b_mi.rsec_stat("db_errors")),
        b_table_full: b_mi.rsec_stat("table_full"),
    }
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn waited(r: &Result<Duration, u64>, n: u64) -> String {
    match r {
        Ok(d) => secs(*d),
        Err(v) => format!("**not reached** ({v} of {n})"),
    }
}

fn main() {
    // `cargo bench` passes --bench; nothing here takes arguments.
    let Some(env) = opensips::env("mi_scale benchmark", false) else {
        return;
    };
    let Some(db) = MariaDb::start_new("mi_scale benchmark", true) else {
        return;
    };
    let sync_n: u64 = std::env::var("RSEC_BENCH_MI_SYNC")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let mut out = String::new();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    writeln!(
        out,
        "rsec MI at scale: {} on {} cores, load average {} (MariaDB with a 16 MB buffer pool)\n",
        env.opensips.display(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    )
    .unwrap();
    writeln!(out, "| bans | max_bans | INSERT … SELECT | start-up, empty DB → with the bans | every row in force or refused after | table_full | sec_ban_list pages (default size) | listed / distinct | paging time | per page p50 / max | largest reply | httpd RssAnon before → peak | httpd VmHWM before → after |").unwrap();
    writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|---|").unwrap();
    print!("{out}");
    let mut notes = String::new();
    for n in sizes() {
        let r = one_size(env, &db, n);
        let line = format!(
            "| {} | {} | {} | {} → {} | {} | {} | {} | {} / {} | {} | {:.1} / {:.1} ms | {} KiB | {} → {} KiB | {} → {} KiB |\n",
            r.n,
            r.max_bans,
            secs(r.insert),
            secs(r.start_empty),
            secs(r.start_full),
            waited(&r.loaded, r.n),
            r.table_full,
            r.pages,
            r.listed,
            r.distinct,
            secs(r.paging),
            r.page_p50_ms,
            r.page_max_ms,
            r.reply_max_kib,
            r.anon_before,
            r.anon_peak,
            r.hwm_before,
            r.hwm_after,
        );
        print!("{line}");
        out.push_str(&line);
        writeln!(notes, "- {} bans, the log at start-up: {}", r.n, r.log_load).unwrap();
    }
    print!("\n{notes}");
    out.push('\n');
    out.push_str(&notes);

    if sync_n > 0 {
        let y = sync(env, &db, sync_n);
        let table = format!(
            "\n| sync | node A: sec_ban × {} over MI | A's writes done | B holds all | B after A's writes | refused by A (table full) | refused by B (table_full) | A queue drops | db_errors A / B |\n|---|---|---|---|---|---|---|---|---|\n| {} bans, db_sync_interval 1 s | {} | {} | {} | {} | {} | {} | {} | {} / {} |\n",
            y.n,
            y.n,
            secs(y.mi_bans),
            waited(&y.a_written, y.n),
            waited(&y.b_has_all, y.n),
            y.b_after_a.map_or("-".into(), secs),
            y.refused,
            y.b_table_full,
            y.queue_drops,
            y.db_errors.0,
            y.db_errors.1,
        );
        print!("{table}");
        out.push_str(&table);
    }

    let dir = std::path::Path::new(opensips::MANIFEST_DIR).join("target/bench-mi");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("mi_scale.md");
    std::fs::write(&path, &out).unwrap();
    println!("\nwritten to {}", path.display());
}
