//! rsec against OpenSIPS's pike module under a spoofed-source flood, both
//! inside a real OpenSIPS 3.6, reproducible with `make bench-pike` (or
//! `cargo bench --bench versus_pike`).
//!
//! pike keeps one shared-memory tree node per address it has seen, so a
//! flood of distinct source addresses grows OpenSIPS's shared memory until
//! it runs out; from then on pike_check_req() lets every request through
//! (it returns "fine" when it cannot allocate a node). rsec keeps a
//! fixed-capacity table in its own mapping and evicts instead.
//!
//! For each module, and for two shared-memory sizes (`-m`), the benchmark
//! starts OpenSIPS with the same density (30 requests per 2 s), sends one
//! request from each of RSEC_VS_SOURCES distinct 127.16.0.0/12 addresses
//! (loopback only), then measures:
//! * OpenSIPS's shared memory in use before and after (shmem:real_used_size)
//!   and the allocation failures it logged;
//! * an attacker at 127.0.0.9 sending 300 requests back to back: how many
//!   got through (200) before being refused (403);
//! * a well-behaved source at 127.0.0.10 (20 requests at 10/s).
//!
//! Needs OpenSIPS (with httpd, mi_http and pike); without it, prints one
//! SKIP line (or fails, with RSEC_REQUIRE_OPENSIPS=1).

// The integration tests' support module. The benchmark uses a part of it;
// the test binary, which uses all of it, is where dead code is caught.
#[path = "../tests/it/support/mod.rs"]
#[allow(dead_code)]
mod support;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use support::mi::Mi;
use support::opensips::{self, OpenSips, TestDir};
use support::sip::{OptionsClient, Pace};

const PIKE_CFG: &str = include_str!("cfg/versus_pike.cfg");
const RSEC_CFG: &str = include_str!("cfg/versus_rsec.cfg");

/// One request from each of `n` distinct addresses from 127.16.0.0 up,
/// paced at about 20,000 per second (200 every 10 ms); replies are not
/// awaited.
fn spoofed_flood(port: u16, n: u32) -> Duration {
    let t0 = Instant::now();
    let mut pace = Pace::starting(t0, Duration::from_millis(10));
    for i in 0..n {
        if i % 200 == 0 {
            pace.wait();
        }
        let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 16, 0, 0)) + i);
        OptionsClient::new(&ip.to_string(), port, Some("vs")).send();
    }
    t0.elapsed()
}

/// `n` requests from `ip`, each sent after the previous one's reply (or
/// 500 ms of silence) and `gap`; the status codes seen, "lost" for none.
fn sequential(port: u16, ip: Ipv4Addr, n: u32, gap: Duration) -> BTreeMap<String, u32> {
    let client = OptionsClient::new(&ip.to_string(), port, Some("vs"));
    let mut codes = BTreeMap::new();
    for _ in 0..n {
        let code = client.ask(Duration::from_millis(500)).map(|a| a.code);
        *codes
            .entry(code.map_or("lost".to_string(), |c| c.to_string()))
            .or_insert(0) += 1;
        std::thread::sleep(gap);
    }
    codes
}

/// One statistic by its full `group:name` (asked for by bare name, which is
/// what get_statistics matches).
fn stat(mi: &Mi, name: &str) -> u64 {
    let bare = name.split_once(':').map_or(name, |(_, n)| n);
    let r = mi.ok("get_statistics", &format!(r#"{{"statistics":["{bare}"]}}"#));
    r[name]
        .as_u64()
        .unwrap_or_else(|| panic!("no statistic {name} in {r}"))
}

/// Waits until OpenSIPS has taken in every request that reached it (its
/// request count stops moving), at most a minute.
fn drained(mi: &Mi) -> u64 {
    let mut last = stat(mi, "core:rcv_requests");
    let (now, _) = opensips::poll(Duration::from_secs(60), Duration::ZERO, || {
        std::thread::sleep(Duration::from_millis(300));
        let now = stat(mi, "core:rcv_requests");
        let still = now == last;
        last = now;
        still.then_some(now)
    })
    .expect("OpenSIPS still receiving the flood after a minute");
    now
}

struct Row {
    module: &'static str,
    shm_mb: u32,
    received: u64,
    flood_secs: f64,
    shm_before_kib: u64,
    shm_after_kib: u64,
    alloc_failures: usize,
    attacker: BTreeMap<String, u32>,
    legit: BTreeMap<String, u32>,
    notes: String,
}

fn run(env: &opensips::Env, module: &'static str, shm_mb: u32, sources: u32) -> Row {
    let dir = TestDir::new(&format!("vs_{module}_{shm_mb}"));
    let template = if module == "pike" { PIKE_CFG } else { RSEC_CFG };
    let shm = shm_mb.to_string();
    let os = OpenSips::start_with_http_args(env, &dir, module, template, &[], &["-m", &shm]);
    let mi = Mi::new(os.http_port.unwrap());
    mi.wait_ready(Duration::from_secs(10))
        .expect("mi_http answers");
    let base = drained(&mi);
    let shm_before_kib = stat(&mi, "shmem:real_used_size") / 1024;
    let took = spoofed_flood(os.port, sources);
    let received = drained(&mi) - base;
    let shm_after_kib = stat(&mi, "shmem:real_used_size") / 1024;
    let attacker = sequential(os.port, Ipv4Addr::new(127, 0, 0, 9), 300, Duration::ZERO);
    let legit = sequential(
        os.port,
        Ipv4Addr::new(127, 0, 0, 10),
        20,
        Duration::from_millis(100),
    );
    let alloc_failures = os.log_lines_with(&["not enough free shm memory"]).len();
    let notes = if module == "rsec" {
        let st = |n: &str| stat(&mi, &format!("rsec:{n}"));
        format!(
            "evictions {}, table_full {}",
            st("table_evictions"),
            st("table_full")
        )
    } else {
        String::new()
    };
    Row {
        module,
        shm_mb,
        received,
        flood_secs: took.as_secs_f64(),
        shm_before_kib,
        shm_after_kib,
        alloc_failures,
        attacker,
        legit,
        notes,
    }
}

fn codes(m: &BTreeMap<String, u32>) -> String {
    m.iter()
        .map(|(k, v)| format!("{v}x{k}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn main() {
    // `cargo bench` passes --bench; nothing here takes arguments.
    let Some(env) = opensips::env("versus_pike benchmark", false) else {
        return;
    };
    if !env.mpath.join("pike.so").is_file() {
        support::skip(
            "versus_pike benchmark",
            &format!("no pike.so in {}", env.mpath.display()),
        );
        return;
    }
    let sources: u32 = std::env::var("RSEC_VS_SOURCES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60_000);
    assert!(
        sources <= 1 << 20,
        "RSEC_VS_SOURCES: at most 1048576 addresses in 127.16.0.0/12"
    );
    println!("rsec vs pike: {sources} spoofed sources, one request each, then an attacker (300 back to back) and a legit source (20 at 10/s)");
    println!("{}", env.opensips.display());
    println!();
    println!("| module | -m | flood requests received | shm used before → after | shm alloc failures | attacker (300) | legit (20) | notes |");
    println!("|---|---|---|---|---|---|---|---|");
    for shm_mb in [64, 4] {
        for module in ["pike", "rsec"] {
            let r = run(env, module, shm_mb, sources);
            println!(
                "| {} | {} MB | {} in {:.1} s | {} → {} KiB | {} | {} | {} | {} |",
                r.module,
                r.shm_mb,
                r.received,
                r.flood_secs,
                r.shm_before_kib,
                r.shm_after_kib,
                r.alloc_failures,
                codes(&r.attacker),
                codes(&r.legit),
                r.notes
            );
        }
    }
}
