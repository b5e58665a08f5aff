//! rsec inside a real OpenSIPS 3.6, driven by sipp.
//!
//! Each test renders a config from tests/cfg/, starts `opensips -F` on its
//! own free UDP port in its own scratch directory, and sends traffic with
//! sipp scenarios from tests/sipp/ from distinct 127.0.0.x source addresses.
//! Outcomes are counted twice: per call on the sipp side (one RESULT line per
//! call) and per request on the server side (one `RSEC-TEST` xlog line per
//! script decision), and both must agree with the exact expectation.
//!
//! Needs OpenSIPS (OPENSIPS_BIN, `opensips` on PATH, or
//! /opt/opensips/sbin/opensips) and sipp; without them every test skips
//! (support::skip). The module is RSEC_SO, or
//! target/release/librsec.so, rebuilt with `cargo build --release --lib`
//! when missing or older than the sources; each test loads a private copy.
//!
//! Run: `cargo test --release --test it opensips_integration -- --nocapture`
//! to see the measured numbers.

use std::fs;
use std::path::Path;
use std::time::Duration;

use crate::support::{opensips, sipp, skip};
use opensips::{heavy, s, tally, workers, Env, Event, OpenSips, TestDir};
use sipp::{Sipp, SippResult};

const FLOOD_CFG: &str = include_str!("../cfg/flood.cfg");
const REGISTER_RL_CFG: &str = include_str!("../cfg/register_rl.cfg");
const AUTH_CFG: &str = include_str!("../cfg/auth.cfg");
const BANS_CFG: &str = include_str!("../cfg/bans.cfg");
const BADARGS_CFG: &str = include_str!("../cfg/badargs.cfg");
const BAD_MODPARAM_CFG: &str = include_str!("../cfg/bad_modparam.cfg");

macro_rules! require {
    ($test:literal, sipp) => {
        match opensips::env($test, true) {
            Some(e) => e,
            None => return,
        }
    };
    ($test:literal) => {
        match opensips::env($test, false) {
            Some(e) => e,
            None => return,
        }
    };
}

/// Events from `src` with check `check`.
fn from<'a>(evs: &'a [Event], check: &str, src: &str) -> Vec<&'a Event> {
    evs.iter()
        .filter(|e| e.is(&[("check", check), ("src", src)]))
        .collect()
}

fn count_r(evs: &[&Event], r: &str) -> usize {
    evs.iter().filter(|e| e.get("r") == r).count()
}

fn options<'a>(env: &'a Env, dir: &'a TestDir, os: &OpenSips, name: &str) -> Sipp<'a> {
    Sipp::new(env, dir, name, "options.xml", os.port)
}

// ---------------------------------------------------------------------------
// 1. The shipped example config passes `opensips -c`, and (9.) works when
//    run: it registers a subscriber, bans password guessing and floods, and
//    rate-limits REGISTER.
// ---------------------------------------------------------------------------

/// opensips-cfg-examples/rsec.cfg, or RSEC_EXAMPLE_CFG to try another copy.
fn example_path() -> std::path::PathBuf {
    std::env::var_os("RSEC_EXAMPLE_CFG")
        .map(Into::into)
        .unwrap_or_else(|| Path::new(opensips::MANIFEST_DIR).join("opensips-cfg-examples/rsec.cfg"))
}

/// The example adapted to this machine: its mpath, the rsec module path and
/// db_text URLs (backed by freshly written tables) point at what the test
/// has; everything else is checked as written.
fn adapt_example(text: &str, env: &Env, dir: &TestDir, so: &Path) -> String {
    let dbdir = dir.join("dbtext");
    let mut out = String::new();
    for line in text.lines() {
        let t = line.trim_start();
        let l = if t.starts_with("mpath") && !t.starts_with("mpath_") {
            format!("mpath=\"{}/\"", env.mpath.display())
        } else if t.starts_with("loadmodule") && t.contains("rsec") && t.contains(".so") {
            format!("loadmodule \"{}\"", so.display())
        } else if let Some(at) = line.find("\"text://") {
            let end = line[at + 1..]
                .find('"')
                .map(|e| at + 1 + e)
                .unwrap_or(line.len());
            format!(
                "{}\"text://{}{}",
                &line[..at],
                dbdir.display(),
                &line[end..]
            )
        } else {
            line.to_string()
        };
        out.push_str(&l);
        out.push('\n');
    }
    if out.contains("text://") {
        opensips::write_dbtext_subscribers(&dbdir, &[("alice", "127.0.0.1", "secret")]);
    }
    out
}

#[test]
fn example_cfg_passes_check() {
    let env = require!("example_cfg_passes_check");
    let dir = TestDir::new("example_cfg");
    let so = dir.module_copy(env);
    let example = example_path();
    assert!(example.is_file(), "{} is missing", example.display());
    let text = fs::read_to_string(&example).unwrap();
    let what = example.display().to_string();
    let cfg = adapt_example(&text, env, &dir, &so);
    let path = dir.join("rsec.cfg");
    fs::write(&path, cfg).unwrap();
    let out = opensips::check_config(env, &path);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "opensips -c on {what} (adapted copy {}): {}",
        path.display(),
        out.status
    );
    assert!(
        out.status.success(),
        "opensips -c failed on {what}: {}\n{text}",
        out.status
    );
    assert!(
        text.contains("config file ok"),
        "opensips -c did not report the config as ok:\n{text}"
    );
}

#[test]
fn example_cfg_runs_registrar_and_bans() {
    let env = require!("example_cfg_runs_registrar_and_bans", sipp);
    let _g = heavy();
    let example = example_path();
    assert!(example.is_file(), "{} is missing", example.display());
    let text = fs::read_to_string(&example).unwrap();
    let density = opensips::example_int_param(&text, "pike_density", 30);
    let threshold = opensips::example_int_param(&text, "auth_fail_threshold", 5);
    let dir = TestDir::new("example_run");
    let dbdir = dir.join("dbtext");
    opensips::write_dbtext_subscribers(&dbdir, &[("alice", "127.0.0.1", "secret")]);
    let template = opensips::example_as_template(&text, &dbdir, &dir.join("fifo"));
    // The example answers OPTIONS without a user part: probe with that.
    let os = OpenSips::start_probing(env, &dir, "example", &template, &[], None);
    let reg = |name: &str, src: &str, password: &str, calls: u32| -> SippResult {
        Sipp::new(env, &dir, name, "register_auth.xml", os.port)
            .from(src)
            .service("alice")
            .auth("alice", password)
            .calls(calls, 2) // 4 REGISTERs/s: under the example's REGISTER rate limit
            .max_parallel(1)
            .recv_timeout_ms(1500) // the example drops banned sources silently
            .run()
    };

    let ok = reg("alice_ok", "127.0.0.70", "secret", 1);
    eprintln!(
        "example: right password from 127.0.0.70 -> {:?}",
        ok.tally()
    );
    if ok.count("401>200") == 0 && os.log().contains("column <rpid> not found") {
        panic!(
            "the example cannot authenticate anyone against the stock 3.6 subscriber table: auth_db \
             loads the column 'rpid' by default and that table has no such column (see the log). \
             Fix in the example: modparam(\"auth_db\", \"load_credentials\", \"\")\n{}",
            ok.describe()
        );
    }
    assert_eq!(
        ok.sequence(),
        ["401>200"],
        "the example must register a subscriber\n{}",
        ok.describe()
    );

    let bad = reg("alice_wrong", "127.0.0.71", "WRONG", threshold as u32);
    let after = reg("alice_after", "127.0.0.71", "secret", 1);
    eprintln!(
        "example: {threshold} wrong passwords from 127.0.0.71 -> {:?} + {} unanswered; then the right password -> {} unanswered",
        bad.tally(),
        bad.missing(),
        after.missing()
    );
    assert_eq!(
        bad.sequence(),
        vec!["401>401".to_string(); threshold - 1],
        "{}",
        bad.describe()
    );
    assert_eq!(
        bad.missing(),
        1,
        "the failure that bans is dropped silently\n{}",
        bad.describe()
    );
    assert_eq!(
        after.missing(),
        1,
        "a banned source is dropped silently\n{}",
        after.describe()
    );
    let notice = os.log_lines_with(&["rsec:sec_auth_fail", "banned 127.0.0.71"]);
    assert_eq!(notice.len(), 1, "{notice:?}");

    let burst = Sipp::new(env, &dir, "reg_burst", "register.xml", os.port)
        .from("127.0.0.72")
        .service("bob")
        .calls(20, 200)
        .recv_timeout_ms(1500)
        .run();
    burst.assert_complete();
    eprintln!(
        "example: 20 REGISTERs at 200/s from 127.0.0.72 -> {:?}",
        burst.tally()
    );
    assert!(
        burst.count("401") >= 1 && burst.count("429") >= 1,
        "{}",
        burst.describe()
    );
    assert_eq!(
        burst.count("401") + burst.count("429"),
        20,
        "{}",
        burst.describe()
    );

    let flood = options(env, &dir, &os, "flood")
        .from("127.0.0.73")
        .service("flood")
        .calls(100, 500)
        .recv_timeout_ms(1500)
        .run();
    eprintln!(
        "example: 100 OPTIONS at 500/s from 127.0.0.73 -> {:?} + {} unanswered (pike_density {density})",
        flood.tally(),
        flood.missing()
    );
    assert_eq!(
        flood.outcomes.len(),
        density,
        "answered before the ban\n{}",
        flood.describe()
    );
    assert_eq!(flood.missing(), 100 - density);
    let notice = os.log_lines_with(&["rsec:sec_pike_check", "banned 127.0.0.73"]);
    assert_eq!(notice.len(), 1, "{notice:?}");
}

// ---------------------------------------------------------------------------
// 2. A flood is banned after exactly `density` requests; legit traffic passes.
// ---------------------------------------------------------------------------

#[test]
fn flood_banned_while_legit_traffic_passes() {
    let env = require!("flood_banned_while_legit_traffic_passes", sipp);
    let _g = heavy();
    const DENSITY: usize = 20;
    const FLOOD: u32 = 1000;
    const LEGIT: u32 = 20; // 5/s for 4 s: never more than DENSITY in any 2 s
    let dir = TestDir::new("flood");
    let os = OpenSips::start(
        env,
        &dir,
        "flood",
        FLOOD_CFG,
        &[
            ("PIKE_DENSITY", s(DENSITY)),
            ("RL_LIMIT", s(1)),
            ("WORKERS", s(2)),
        ],
    );

    let flood = options(env, &dir, &os, "flood")
        .from("127.0.0.10")
        .service("flood")
        .calls(FLOOD, 500)
        .spawn();
    let legit = options(env, &dir, &os, "legit")
        .from("127.0.0.11")
        .service("legit")
        .calls(LEGIT, 5)
        .spawn();
    let flood = flood.wait();
    let legit = legit.wait();
    flood.assert_complete();
    legit.assert_complete();

    let evs = os.wait_events(FLOOD as usize + LEGIT as usize, |e| {
        e.get("check") == "pike"
    });
    let f = from(&evs, "pike", "127.0.0.10");
    let l = from(&evs, "pike", "127.0.0.11");
    let legit_rate = 100.0 * legit.count("200") as f64 / LEGIT as f64;
    eprintln!(
        "flood 127.0.0.10: {FLOOD} OPTIONS at 500/s in {:.2}s -> {:?}; requests before the ban: {} (density {DENSITY}/2s)",
        flood.elapsed.as_secs_f64(),
        flood.tally(),
        flood.count("200")
    );
    eprintln!(
        "flood, server side: {:?} over {} workers",
        tally(f.iter().copied(), "r"),
        workers(f.iter().copied())
    );
    eprintln!(
        "legit 127.0.0.11: {LEGIT} OPTIONS at 5/s in {:.2}s -> {:?}; legit success rate {legit_rate:.1}%",
        legit.elapsed.as_secs_f64(),
        legit.tally()
    );

    assert_eq!(
        flood.count("200"),
        DENSITY,
        "flood: 200s\n{}",
        flood.describe()
    );
    assert_eq!(
        flood.count("403"),
        FLOOD as usize - DENSITY,
        "flood: 403s\n{}",
        flood.describe()
    );
    assert_eq!(
        legit.count("200"),
        LEGIT as usize,
        "legit: every request must pass\n{}",
        legit.describe()
    );

    assert_eq!(f.len(), FLOOD as usize, "server saw every flood request");
    assert_eq!(count_r(&f, "1"), DENSITY);
    assert_eq!(
        count_r(&f, "-2"),
        1,
        "exactly one request crosses the threshold"
    );
    assert_eq!(count_r(&f, "-1"), FLOOD as usize - DENSITY - 1);
    assert_eq!(l.len(), LEGIT as usize);
    assert_eq!(count_r(&l, "1"), LEGIT as usize);

    let bans = os.log_lines_with(&["rsec:sec_pike_check", "banned 127.0.0.10 for 300s"]);
    assert_eq!(
        bans.len(),
        1,
        "one ban notice for the flood source: {bans:?}"
    );
    assert!(
        os.log_lines_with(&["banned 127.0.0.11"]).is_empty(),
        "legit source must not be banned"
    );
}

// ---------------------------------------------------------------------------
// 3. REGISTER rate limit per source: exactly `limit`, then 429.
// ---------------------------------------------------------------------------

#[test]
fn register_rate_limit_429() {
    let env = require!("register_rate_limit_429", sipp);
    let _g = heavy();
    // 10 per 60 s: one request's worth refills every 6 s, so a run well under
    // 6 s allows exactly the burst of 10, whatever the scheduling.
    const LIMIT: usize = 10;
    const PERIOD_S: u64 = 60;
    let dir = TestDir::new("register_rl");
    let os = OpenSips::start(
        env,
        &dir,
        "register_rl",
        REGISTER_RL_CFG,
        &[("RL_LIMIT", s(LIMIT)), ("RL_PERIOD", s(PERIOD_S))],
    );

    let a = Sipp::new(env, &dir, "reg_a", "register.xml", os.port)
        .from("127.0.0.40")
        .service("alice")
        .calls(50, 1000)
        .spawn();
    let b = Sipp::new(env, &dir, "reg_b", "register.xml", os.port)
        .from("127.0.0.41")
        .service("bob")
        .calls(12, 1000)
        .spawn();
    let a = a.wait();
    let b = b.wait();
    a.assert_complete();
    b.assert_complete();
    let refill_interval = Duration::from_secs(PERIOD_S) / LIMIT as u32;
    assert!(
        a.elapsed < refill_interval && b.elapsed < refill_interval,
        "runs took {:?} / {:?}: too slow for an exact expectation",
        a.elapsed,
        b.elapsed
    );

    let evs = os.wait_events(62, |e| e.get("check") == "rl");
    let ea = from(&evs, "rl", "127.0.0.40");
    let eb = from(&evs, "rl", "127.0.0.41");
    eprintln!(
        "127.0.0.40: 50 REGISTERs in {:.3}s -> {:?}; server {:?}",
        a.elapsed.as_secs_f64(),
        a.tally(),
        tally(ea.iter().copied(), "r")
    );
    eprintln!(
        "127.0.0.41: 12 REGISTERs in {:.3}s -> {:?}; server {:?}",
        b.elapsed.as_secs_f64(),
        b.tally(),
        tally(eb.iter().copied(), "r")
    );

    assert_eq!(a.count("200"), LIMIT, "{}", a.describe());
    assert_eq!(a.count("429"), 50 - LIMIT, "{}", a.describe());
    // The key includes $si: the second source has its own budget.
    assert_eq!(b.count("200"), LIMIT, "{}", b.describe());
    assert_eq!(b.count("429"), 12 - LIMIT, "{}", b.describe());
    assert_eq!((count_r(&ea, "1"), count_r(&ea, "-1")), (LIMIT, 50 - LIMIT));
    assert_eq!((count_r(&eb, "1"), count_r(&eb, "-1")), (LIMIT, 12 - LIMIT));
}

// ---------------------------------------------------------------------------
// 4. Wrong passwords ban the source after the threshold.
// ---------------------------------------------------------------------------

#[test]
fn wrong_password_auth_bans_source() {
    let env = require!("wrong_password_auth_bans_source", sipp);
    let _g = heavy();
    const THRESHOLD: usize = 5;
    let dir = TestDir::new("auth");
    let dbdir = dir.join("dbtext");
    opensips::write_dbtext_subscribers(
        &dbdir,
        &[
            ("alice", "127.0.0.1", "secret"),
            ("bob", "127.0.0.1", "b0b:pw"),
        ],
    );
    let os = OpenSips::start(
        env,
        &dir,
        "auth",
        AUTH_CFG,
        &[
            ("DBDIR", dbdir.display().to_string()),
            ("AUTH_THRESHOLD", s(THRESHOLD)),
        ],
    );
    let reg = |name: &str, src: &str, password: &str, calls: u32| -> SippResult {
        let r = Sipp::new(env, &dir, name, "register_auth.xml", os.port)
            .from(src)
            .service("alice")
            .auth("alice", password)
            .calls(calls, 20)
            .max_parallel(1)
            .run();
        r.assert_complete();
        r
    };

    // Sanity: the right password works from a fresh source.
    let ok = reg("alice_ok", "127.0.0.21", "secret", 1);
    assert_eq!(ok.sequence(), ["401>200"], "{}", ok.describe());

    // THRESHOLD wrong passwords: challenged until the last one bans.
    let bad = reg("alice_wrong", "127.0.0.20", "WRONG", THRESHOLD as u32);
    let mut expect = vec!["401>401".to_string(); THRESHOLD - 1];
    expect.push("401>403".into());
    assert_eq!(bad.sequence(), expect, "{}", bad.describe());

    // Now even the right password is refused at once.
    let after = reg("alice_after_ban", "127.0.0.20", "secret", 1);
    assert_eq!(after.sequence(), ["403"], "{}", after.describe());

    // THRESHOLD-1 failures do not ban: the right password still works.
    let near = reg(
        "alice_near_wrong",
        "127.0.0.21",
        "WRONG",
        THRESHOLD as u32 - 1,
    );
    assert_eq!(
        near.sequence(),
        vec!["401>401".to_string(); THRESHOLD - 1],
        "{}",
        near.describe()
    );
    let near_ok = reg("alice_near_ok", "127.0.0.21", "secret", 1);
    assert_eq!(near_ok.sequence(), ["401>200"], "{}", near_ok.describe());

    os.wait_events(THRESHOLD + THRESHOLD - 1, |e| e.get("check") == "authfail");
    let evs = os.events();
    let fails20 = from(&evs, "authfail", "127.0.0.20");
    let fails21 = from(&evs, "authfail", "127.0.0.21");
    let auth20 = from(&evs, "auth", "127.0.0.20");
    let r20: Vec<&str> = fails20.iter().map(|e| e.get("r")).collect();
    eprintln!(
        "127.0.0.20: {} wrong-password REGISTERs -> {:?}; sec_auth_fail returned {r20:?}; then the right password -> {:?}",
        THRESHOLD,
        bad.sequence(),
        after.sequence()
    );
    eprintln!(
        "wrong passwords until the ban: {} (sec_auth_fail: {} x 1, then -2 on failure #{}); www_authorize codes from 127.0.0.20: {:?}",
        r20.len(),
        r20.iter().filter(|r| **r == "1").count(),
        r20.iter().position(|r| *r == "-2").map_or(0, |i| i + 1),
        tally(auth20.iter().copied(), "authrc")
    );
    eprintln!(
        "127.0.0.21: right password -> {:?}, {} wrong -> {:?}, right again -> {:?}",
        ok.sequence(),
        THRESHOLD - 1,
        near.tally(),
        near_ok.sequence()
    );

    let mut expect_r = vec!["1"; THRESHOLD - 1];
    expect_r.push("-2");
    assert_eq!(r20, expect_r, "sec_auth_fail return codes from 127.0.0.20");
    assert!(fails20.iter().all(|e| e.get("user") == "alice"));
    // Credential-less first REGISTERs (-4) were challenged, never counted.
    let t = tally(auth20.iter().copied(), "authrc");
    assert_eq!(t.get("-4"), Some(&THRESHOLD), "{t:?}");
    assert_eq!(t.get("-2"), Some(&THRESHOLD), "{t:?}");
    assert_eq!(fails21.len(), THRESHOLD - 1);
    assert!(fails21.iter().all(|e| e.get("r") == "1"));
    let notice = os.log_lines_with(&[
        "rsec:sec_auth_fail",
        "banned 127.0.0.20 for 900s",
        "last user 'alice'",
    ]);
    assert_eq!(
        notice.len(),
        1,
        "one ban notice naming the source and user: {notice:?}"
    );
}

// ---------------------------------------------------------------------------
// 5. Eight workers share one state: thresholds are exact across processes.
// ---------------------------------------------------------------------------

#[test]
fn eight_workers_thresholds_hold() {
    let env = require!("eight_workers_thresholds_hold", sipp);
    let _g = heavy();
    const DENSITY: usize = 50;
    const RL_LIMIT: usize = 25;
    let dir = TestDir::new("eight_workers");
    let os = OpenSips::start(
        env,
        &dir,
        "eight_workers",
        FLOOD_CFG,
        &[
            ("PIKE_DENSITY", s(DENSITY)),
            ("RL_LIMIT", s(RL_LIMIT)),
            ("WORKERS", s(8)),
        ],
    );

    // Two senders per address so requests from one source are in flight in
    // several workers at once.
    let runs = vec![
        options(env, &dir, &os, "flood_a")
            .from("127.0.0.50")
            .service("flood")
            .calls(500, 500)
            .spawn(),
        options(env, &dir, &os, "flood_b")
            .from("127.0.0.50")
            .service("flood")
            .calls(500, 500)
            .spawn(),
        options(env, &dir, &os, "rl_a")
            .from("127.0.0.51")
            .service("rl")
            .calls(100, 500)
            .spawn(),
        options(env, &dir, &os, "rl_b")
            .from("127.0.0.52")
            .service("rl")
            .calls(100, 500)
            .spawn(),
    ];
    let res: Vec<SippResult> = runs.into_iter().map(|r| r.wait()).collect();
    for r in &res {
        r.assert_complete();
    }
    let sum = |idx: &[usize], code: &str| idx.iter().map(|&i| res[i].count(code)).sum::<usize>();

    let evs = os.wait_events(1200, |e| matches!(e.get("check"), "pike" | "rl"));
    let pike: Vec<&Event> = evs.iter().filter(|e| e.get("check") == "pike").collect();
    let rl: Vec<&Event> = evs.iter().filter(|e| e.get("check") == "rl").collect();
    eprintln!(
        "8 workers, flood 2x500 from 127.0.0.50 (density {DENSITY}): 200={} 403={}; server {:?} handled by {} workers",
        sum(&[0, 1], "200"),
        sum(&[0, 1], "403"),
        tally(pike.iter().copied(), "r"),
        workers(pike.iter().copied())
    );
    eprintln!(
        "8 workers, shared rl key 2x100 from 127.0.0.51/.52 (limit {RL_LIMIT}/60s): 200={} 429={}; server {:?} handled by {} workers",
        sum(&[2, 3], "200"),
        sum(&[2, 3], "429"),
        tally(rl.iter().copied(), "r"),
        workers(rl.iter().copied())
    );

    assert_eq!(
        sum(&[0, 1], "200"),
        DENSITY,
        "{}\n{}",
        res[0].describe(),
        res[1].describe()
    );
    assert_eq!(sum(&[0, 1], "403"), 1000 - DENSITY);
    assert_eq!(count_r(&pike, "1"), DENSITY);
    assert_eq!(
        count_r(&pike, "-2"),
        1,
        "exactly one request crosses the threshold"
    );
    assert_eq!(count_r(&pike, "-1"), 1000 - DENSITY - 1);
    assert_eq!(
        sum(&[2, 3], "200"),
        RL_LIMIT,
        "{}\n{}",
        res[2].describe(),
        res[3].describe()
    );
    assert_eq!(sum(&[2, 3], "429"), 200 - RL_LIMIT);
    assert_eq!(
        (count_r(&rl, "1"), count_r(&rl, "-1")),
        (RL_LIMIT, 200 - RL_LIMIT)
    );
    assert!(
        workers(evs.iter()) > 1,
        "traffic should have reached several workers"
    );
}

// ---------------------------------------------------------------------------
// 6. Script bans and unbans take effect in every worker.
// ---------------------------------------------------------------------------

#[test]
fn ban_unban_take_effect_in_every_worker() {
    let env = require!("ban_unban_take_effect_in_every_worker", sipp);
    let _g = heavy();
    const VICTIM: &str = "127.0.0.30";
    const CONTROL: &str = "127.0.0.31";
    const WHITELISTED: &str = "127.0.0.32";
    let dir = TestDir::new("ban_unban");
    let os = OpenSips::start(
        env,
        &dir,
        "ban_unban",
        BANS_CFG,
        &[
            ("WORKERS", s(8)),
            ("VICTIM", s(VICTIM)),
            ("WHITELISTED", s(WHITELISTED)),
            ("NET", s("127.0.1.0/24")),
        ],
    );
    let mut step = 0;
    let mut cmd = |service: &str| -> String {
        step += 1;
        let r = options(env, &dir, &os, &format!("cmd{step}_{service}"))
            .from(CONTROL)
            .service(service)
            .run();
        r.assert_complete();
        r.sequence().remove(0)
    };
    let mut batch = 0;
    let mut traffic = |src: &str, n: u32| -> (SippResult, usize) {
        batch += 1;
        let before = os.events().len();
        let r = options(env, &dir, &os, &format!("batch{batch}_{src}"))
            .from(src)
            .service("probe")
            .calls(n, 200)
            .run();
        r.assert_complete();
        let evs = os.wait_events(before + n as usize, |e| {
            e.get("check") == "pike" || !e.get("cmd").is_empty()
        });
        let mine: Vec<&Event> = evs[before..]
            .iter()
            .filter(|e| e.get("src") == src)
            .collect();
        (r, workers(mine))
    };

    let (base, _) = traffic(VICTIM, 10);
    assert_eq!(base.count("200"), 10, "before any ban\n{}", base.describe());
    assert_eq!(cmd("is-banned"), "480", "sec_is_banned before the ban");

    assert_eq!(cmd("ban"), "200", "sec_ban_ip returns 1");
    assert_eq!(cmd("is-banned"), "200", "sec_is_banned after the ban");
    let (banned, w1) = traffic(VICTIM, 40);
    eprintln!(
        "after sec_ban_ip({VICTIM}): 40 requests -> {:?}, handled by {w1} of 8 workers",
        banned.tally()
    );
    assert_eq!(banned.count("403"), 40, "{}", banned.describe());

    assert_eq!(cmd("unban"), "200", "sec_unban_ip returns 1");
    assert_eq!(
        cmd("unban"),
        "480",
        "a second sec_unban_ip finds nothing: -1"
    );
    assert_eq!(cmd("is-banned"), "480", "sec_is_banned after the unban");
    let (unbanned, w2) = traffic(VICTIM, 40);
    eprintln!(
        "after sec_unban_ip({VICTIM}): 40 requests -> {:?}, handled by {w2} of 8 workers",
        unbanned.tally()
    );
    assert_eq!(unbanned.count("200"), 40, "{}", unbanned.describe());

    assert_eq!(
        cmd("ban-whitelisted"),
        "480",
        "sec_ban_ip on a whitelisted address returns -1"
    );
    let (wl, _) = traffic(WHITELISTED, 10);
    assert_eq!(wl.count("200"), 10, "{}", wl.describe());

    assert_eq!(cmd("ban-net"), "200", "sec_ban_ip on a prefix");
    let (in_net, w3) = traffic("127.0.1.7", 20);
    let (outside, _) = traffic("127.0.2.7", 10);
    eprintln!(
        "after sec_ban_ip(127.0.1.0/24): 127.0.1.7 -> {:?} ({w3} workers), 127.0.2.7 -> {:?}",
        in_net.tally(),
        outside.tally()
    );
    assert_eq!(in_net.count("403"), 20, "{}", in_net.describe());
    assert_eq!(outside.count("200"), 10, "{}", outside.describe());

    let wl_warn = os.log_lines_with(&[
        "rsec:sec_ban_ip",
        "refusing to ban 127.0.0.32",
        "whitelisted",
    ]);
    assert_eq!(wl_warn.len(), 1, "{wl_warn:?}");
    let all: Vec<Event> = os.events();
    eprintln!(
        "ban/unban: OPTIONS handled by {} distinct workers overall",
        workers(all.iter())
    );
    assert!(
        workers(all.iter()) > 1,
        "traffic should have reached several workers"
    );
}

// ---------------------------------------------------------------------------
// 7. Invalid modparams stop OpenSIPS at startup, naming the parameter.
// ---------------------------------------------------------------------------

#[test]
fn bad_modparam_refuses_start() {
    let env = require!("bad_modparam_refuses_start");
    let dir = TestDir::new("bad_modparam");
    let cases: &[(&str, &str, &[&str])] = &[
        ("pike_density", "-5", &["pike_density", "-5"]),
        (
            "whitelist",
            "\"10.0.0.300/8\"",
            &["whitelist", "10.0.0.300/8"],
        ),
        ("pike_sampling_time", "0", &["pike_sampling_time"]),
        ("lock_stripes", "5000", &["lock_stripes", "5000"]),
        ("max_bans", "3", &["max_bans"]),
        (
            "profile",
            "\"trunk: pike_densty=5\"",
            &["modparam 'profile'", "pike_densty"],
        ),
        (
            "profile_prefix",
            "\"10.0.0.0/8=nosuch\"",
            &["profile_prefix", "no profile is named 'nosuch'"],
        ),
        (
            "tenant_whitelist",
            "\"a.example=10.0.0.300\"",
            &["tenant_whitelist", "10.0.0.300"],
        ),
        ("dry_run", "2", &["dry_run", "2"]),
    ];
    for (i, (param, value, needles)) in cases.iter().enumerate() {
        let t0 = std::time::Instant::now();
        let (status, log) = opensips::run_expecting_exit(
            env,
            &dir,
            &format!("bad{i}_{param}"),
            BAD_MODPARAM_CFG,
            &[("PARAM", s(param)), ("VALUE", s(value))],
            Duration::from_secs(20),
        );
        let line = log
            .lines()
            .find(|l| l.contains(":rsec:") && needles.iter().all(|n| l.contains(n)));
        eprintln!(
            "modparam {param}={value}: exit {status} after {} ms; {}",
            t0.elapsed().as_millis(),
            line.map(str::trim).unwrap_or("<no rsec line naming it>")
        );
        assert!(
            !status.success(),
            "opensips started with {param}={value}\n{log}"
        );
        assert!(
            line.is_some(),
            "no rsec log line names {param} ({needles:?}):\n{log}"
        );
    }
}

// ---------------------------------------------------------------------------
// 8. Bad script arguments return -3 and log the function and the value.
// ---------------------------------------------------------------------------

#[test]
fn bad_script_args_return_minus3() {
    let env = require!("bad_script_args_return_minus3", sipp);
    let dir = TestDir::new("bad_args");
    let os = OpenSips::start(env, &dir, "bad_args", BADARGS_CFG, &[]);
    // (call, expected reply, log must contain)
    let cases: &[(&str, &str, &[&str])] = &[
        ("ban-bad-ip", "400", &["ERROR:rsec:sec_ban_ip", "not-an-ip"]),
        (
            "ban-bad-reason",
            "400",
            &["ERROR:rsec:sec_ban_ip", "because"],
        ),
        ("ban-bad-seconds", "400", &["ERROR:rsec:sec_ban_ip", "-7"]),
        (
            "unban-bad-cidr",
            "400",
            &["ERROR:rsec:sec_unban_ip", "10.0.0.300/8"],
        ),
        (
            "rl-empty-key",
            "400",
            &["ERROR:rsec:sec_rl_check", "bad key ''"],
        ),
        (
            "rl-empty-var-key",
            "400",
            &["ERROR:rsec:sec_rl_check", "bad key ''"],
        ),
        (
            "rl-zero-limit",
            "400",
            &["ERROR:rsec:sec_rl_check", "zero-limit-key", "limit"],
        ),
        (
            "rl-bad-period",
            "400",
            &["ERROR:rsec:sec_rl_check", "bad-period-key", "-1"],
        ),
        (
            "pike-bad-ip",
            "400",
            &["ERROR:rsec:sec_pike_check", "999.1.1.1"],
        ),
        (
            "is-banned-bad-ip",
            "400",
            &["ERROR:rsec:sec_is_banned", "1.2.3"],
        ),
        (
            "auth-fail-bad-ip",
            "400",
            &["ERROR:rsec:sec_auth_fail", "bogus-ip"],
        ),
        (
            "profile-unknown",
            "400",
            &["ERROR:rsec:sec_profile", "no profile named 'nosuch'"],
        ),
        (
            "tenant-too-long",
            "400",
            &["ERROR:rsec:sec_tenant", "bad tenant", "64-byte limit"],
        ),
        // controls: the same functions with good arguments
        ("ban-good", "200", &[]),
        ("rl-good", "200", &[]),
    ];
    let mut failures = Vec::new();
    for (i, (call, expect, needles)) in cases.iter().enumerate() {
        let r = options(env, &dir, &os, &format!("call{i}_{call}"))
            .from("127.0.0.60")
            .service(call)
            .run();
        r.assert_complete();
        let got = r.sequence().remove(0);
        let ev = os.wait_events(1, |e| e.get("call") == *call);
        let rc = ev
            .first()
            .map(|e| e.get("r").to_string())
            .unwrap_or_default();
        let line = if needles.is_empty() {
            None
        } else {
            os.log_lines_with(needles).into_iter().next()
        };
        eprintln!(
            "{call}: reply {got}, rc {rc}; {}",
            line.as_deref().map(str::trim).unwrap_or("")
        );
        if got != *expect || (*expect == "400" && rc != "-3") {
            failures.push(format!(
                "{call}: expected reply {expect} (rc -3 for 400), got {got} / rc {rc}"
            ));
        }
        if !needles.is_empty() && line.is_none() {
            failures.push(format!("{call}: no log line containing {needles:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{}\n--- log tail ---\n{}",
        failures.join("\n"),
        os.tail(40)
    );
}

/// IPv6 end to end: OpenSIPS also listens on [::1]; a flood from ::1 is
/// banned at the same threshold while an IPv4 source keeps passing.
#[test]
fn ipv6_flood_banned_ipv4_unaffected() {
    let env = require!("ipv6_flood_banned_ipv4_unaffected", sipp);
    if std::net::UdpSocket::bind("[::1]:0").is_err() {
        skip(
            "ipv6_flood_banned_ipv4_unaffected",
            "no IPv6 loopback (::1) on this machine",
        );
        return;
    }
    let _g = heavy();
    const DENSITY: usize = 10;
    const FLOOD: u32 = 200;
    const LEGIT: u32 = 10;
    let dir = TestDir::new("ipv6");
    let cfg = FLOOD_CFG.replace(
        "socket=@SOCKET@",
        "socket=@SOCKET@\nsocket=udp:[::1]:@PORT@",
    );
    let os = OpenSips::start(
        env,
        &dir,
        "ipv6",
        &cfg,
        &[
            ("PIKE_DENSITY", s(DENSITY)),
            ("RL_LIMIT", s(1)),
            ("WORKERS", s(2)),
        ],
    );

    let flood = options(env, &dir, &os, "flood6")
        .from("::1")
        .service("flood")
        .calls(FLOOD, 200)
        .spawn();
    let legit = options(env, &dir, &os, "legit4")
        .from("127.0.0.12")
        .service("legit")
        .calls(LEGIT, 5)
        .spawn();
    let flood = flood.wait();
    let legit = legit.wait();
    flood.assert_complete();
    legit.assert_complete();
    eprintln!(
        "flood from ::1: {:?}; legit from 127.0.0.12: {:?}",
        flood.tally(),
        legit.tally()
    );

    assert_eq!(
        flood.count("200"),
        DENSITY,
        "::1 passes exactly density requests\n{}",
        flood.describe()
    );
    assert_eq!(flood.count("403"), FLOOD as usize - DENSITY);
    assert_eq!(
        legit.count("200"),
        LEGIT as usize,
        "the IPv4 source is unaffected\n{}",
        legit.describe()
    );
    let evs = os.wait_events(FLOOD as usize + LEGIT as usize, |e| {
        e.get("check") == "pike"
    });
    // OpenSIPS prints $si for IPv6 uncompressed.
    let f = from(&evs, "pike", "0:0:0:0:0:0:0:1");
    assert_eq!(f.len(), FLOOD as usize, "server saw every request from ::1");
    assert_eq!(
        count_r(&f, "-2"),
        1,
        "exactly one request from ::1 crosses the threshold"
    );
    assert_eq!(
        // IPv6 is counted and banned per /64 (ipv6_track_prefix).
        os.log_lines_with(&["rsec:sec_pike_check", "banned ::/64 for 300s"])
            .len(),
        1
    );
}
