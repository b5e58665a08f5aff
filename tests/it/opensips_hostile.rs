//! Hostile input inside a real OpenSIPS: what an attacker sends and what a
//! careless operator types, each a defect found by review and fixed.
//!
//! * a ban over a whitelisted address, or over everything (`/0`), is
//!   refused by the script function and by MI, and raises no event;
//! * a whitelist that would switch rsec off refuses to start (modparam) or
//!   is refused (MI);
//! * CR LF in a username reaches the log escaped, so no line is forged;
//! * MI parameters of the wrong JSON type, or out of range, get a 400
//!   naming the parameter instead of a silent default or a wrapped value;
//! * a flood against a full ban table logs a bounded number of lines;
//! * `max_bans 16` holds 16 bans, as the start-up line says;
//! * banning a /24 while its .0 host is banned announces and persists the
//!   /24 (a real MariaDB and the event route watch);
//! * 100,000 MI calls leave the MI process's memory flat.
//!
//! Needs OpenSIPS (httpd, mi_http, event_routing), and MariaDB for the
//! persistence case; without them each test skips with one line.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::mariadb::MariaDb;
use crate::support::mi::{array, Mi};
use crate::support::opensips::{self, heavy, s, Env, OpenSips, TestDir};
use crate::support::sip::{options, OptionsClient};

const HOSTILE_CFG: &str = include_str!("../cfg/hostile.cfg");
const NODE_CFG: &str = include_str!("../cfg/persist_node.cfg");

macro_rules! require {
    ($test:literal) => {
        match opensips::env($test, false) {
            Some(e) => e,
            None => return,
        }
    };
}

fn start(env: &Env, dir: &TestDir, name: &str, vars: &[(&str, String)]) -> (OpenSips, Mi) {
    let all = opensips::override_vars(
        vec![
            ("WORKERS", s(2)),
            ("PIKE_DENSITY", s(20)),
            ("MAX_BANS", s(1024)),
        ],
        vars,
    );
    let os = OpenSips::start_with_http(env, dir, name, HOSTILE_CFG, &all);
    let mi = Mi::new(os.http_port.unwrap());
    mi.wait_ready(Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("mi_http does not answer: {e}\n{}", os.tail(40)));
    (os, mi)
}

fn ask(os: &OpenSips, user: &str) -> u16 {
    options("127.0.0.9", os.port, user, Duration::from_secs(3))
        .unwrap_or_else(|| panic!("no answer to {user}\n{}", os.tail(30)))
}

/// The `r=` of the one decision line logged for `check`/`what`.
fn decision(os: &OpenSips, kv: &[(&str, &str)]) -> String {
    let evs: Vec<_> = os.events().into_iter().filter(|e| e.is(kv)).collect();
    assert_eq!(evs.len(), 1, "{kv:?}: {evs:?}");
    evs[0].get("r").to_string()
}

#[test]
fn bans_over_whitelisted_or_all_addresses_are_refused() {
    let env = require!("bans_over_whitelisted_or_all_addresses_are_refused");
    let _g = heavy();
    let dir = TestDir::new("hostile_wide_bans");
    let (os, mi) = start(env, &dir, "wide", &[]);

    // From the script: refused (-1), nothing banned, nothing announced.
    for what in ["ban-all4", "ban-all6", "ban-lo8"] {
        assert_eq!(ask(&os, what), 200);
        assert_eq!(
            decision(&os, &[("check", "ban"), ("what", what)]),
            "-1",
            "{what}"
        );
    }
    assert_eq!(ask(&os, "isbanned-wl"), 200);
    assert_eq!(
        decision(&os, &[("check", "isbanned")]),
        "-1",
        "the whitelisted host is not banned"
    );
    let log = os.log();
    assert!(log.contains("WARNING:rsec:sec_ban_ip: refusing to ban 0.0.0.0/0: shorter than the /8 allowed for IPv4"), "{log}");
    assert!(
        log.contains(
            "WARNING:rsec:sec_ban_ip: refusing to ban ::/0: shorter than the /32 allowed for IPv6"
        ),
        "{log}"
    );
    assert!(log.contains("WARNING:rsec:sec_ban_ip: refusing to ban 127.0.0.0/8: it is or contains whitelisted 127.0.0.250"), "{log}");

    // From MI: 403 naming why.
    for (ip, why) in [
        ("0.0.0.0/0", "min_prefix_v4"),
        ("::/0", "min_prefix_v6"),
        ("127.0.0.0/8", "127.0.0.250"),
        ("127.0.0.250", "127.0.0.250"),
    ] {
        let e = mi.err("sec_ban", &format!(r#"{{"ip":"{ip}"}}"#));
        assert_eq!(e.code, 403, "{ip}: {e:?}");
        assert!(e.message.contains(why), "{ip}: {e:?}");
    }
    let info = mi.ok("sec_ip_info", r#"{"ip":"127.0.0.250"}"#);
    assert_eq!(
        (info["whitelisted"].as_bool(), info["banned"].as_bool()),
        (Some(true), Some(false)),
        "{info}"
    );
    assert_eq!(mi.ok("sec_ban_list", "")["count"].as_u64(), Some(0));

    // A whitelist that would switch rsec off is refused.
    for cidr in ["0.0.0.0/0", "::/0", "10.0.0.0/7"] {
        let e = mi.err("sec_whitelist_add", &format!(r#"{{"cidr":"{cidr}"}}"#));
        assert_eq!(e.code, 403, "{cidr}: {e:?}");
    }
    assert_eq!(
        array(&mi.ok("sec_whitelist_list", ""), "whitelist"),
        [Value::from("127.0.0.250")]
    );

    // Beside the whitelist, a prefix ban works and is announced once.
    assert_eq!(ask(&os, "ban-lo24-1"), 200);
    assert_eq!(
        decision(&os, &[("check", "ban"), ("what", "ban-lo24-1")]),
        "1"
    );
    let bans = os.wait_events(1, |e| e.is(&[("ev", "ban")]));
    assert_eq!(
        bans.len(),
        1,
        "only the one ban made was announced: {bans:?}"
    );
    assert_eq!(bans[0].get("ip"), "127.0.1.0/24");
    assert_eq!(
        options("127.0.1.7", os.port, "probe", Duration::from_secs(3)),
        Some(403)
    );
    assert_eq!(
        options("127.0.0.250", os.port, "probe", Duration::from_secs(3)),
        Some(200)
    );
}

#[test]
fn a_whitelist_modparam_covering_everything_refuses_to_start() {
    let env = require!("a_whitelist_modparam_covering_everything_refuses_to_start");
    let dir = TestDir::new("hostile_wl_modparam");
    let cfg = HOSTILE_CFG.replace(
        r#""whitelist", "127.0.0.250/32""#,
        r#""whitelist", "192.0.2.0/24, 0.0.0.0/0""#,
    );
    let vars = [
        ("WORKERS", s(1)),
        ("PIKE_DENSITY", s(20)),
        ("MAX_BANS", s(1024)),
        ("HTTP_PORT", s(opensips::free_tcp_port())),
    ];
    let (st, log) =
        opensips::run_expecting_exit(env, &dir, "wl_all", &cfg, &vars, Duration::from_secs(20));
    assert!(!st.success(), "{log}");
    assert!(
        log.contains("modparam 'whitelist'")
            && log.contains("'0.0.0.0/0'")
            && log.contains("min_prefix_v4"),
        "{log}"
    );
}

#[test]
fn crlf_in_a_username_cannot_forge_a_log_line() {
    let env = require!("crlf_in_a_username_cannot_forge_a_log_line");
    let _g = heavy();
    let dir = TestDir::new("hostile_crlf");
    let (os, _mi) = start(env, &dir, "crlf", &[]);
    // hostile.cfg passes a username of CR LF, then what a log-driven
    // banning tool would act on.
    let user = "authfail-crlf";
    assert_eq!(
        options("127.0.0.31", os.port, user, Duration::from_secs(3)),
        Some(200)
    );
    assert_eq!(
        decision(&os, &[("check", "authfail"), ("src", "127.0.0.31")]),
        "-2",
        "the first failure bans at threshold 1"
    );
    let log = os.log();
    let line = log
        .lines()
        .find(|l| l.contains("sec_auth_fail: banned 127.0.0.31"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(
        line.contains(
            r"(last user 'authfail\x0d\x0aNOTICE:rsec:sec_pike_check: banned 192.0.2.77 for 300s')"
        ),
        "{line}"
    );
    let forged: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("sec_pike_check: banned 192.0.2.77") && !l.contains("sec_auth_fail"))
        .collect();
    assert!(
        forged.is_empty(),
        "a forged line reached the log: {forged:?}"
    );

    // A huge value is cut to a bound, with its real length.
    let long = format!("authfail{}", "A".repeat(600));
    assert_eq!(
        options("127.0.0.32", os.port, &long, Duration::from_secs(3)),
        Some(200)
    );
    let log = os.log();
    let line = log
        .lines()
        .find(|l| l.contains("sec_auth_fail: banned 127.0.0.32"))
        .unwrap_or_else(|| panic!("{log}"));
    // The facts after " | " name no value from outside but the tenant,
    // itself cut to 64 bytes.
    let said = line.split(" | ").next().unwrap();
    assert!(
        said.contains("...(608 bytes)')") && said.len() < 300 && line.len() < 500,
        "{line}"
    );
}

#[test]
fn mi_parameters_of_the_wrong_type_or_range_are_refused() {
    let env = require!("mi_parameters_of_the_wrong_type_or_range_are_refused");
    let _g = heavy();
    let dir = TestDir::new("hostile_mi_types");
    let (os, mi) = start(env, &dir, "mi_types", &[]);
    for seconds in [
        "[5]",
        "null",
        "true",
        "{}",
        "-1",
        "4294967396",
        r#""4294967396""#,
        "315360001",
        r#""soon""#,
    ] {
        let e = mi.err(
            "sec_ban",
            &format!(r#"{{"ip":"192.0.2.8","seconds":{seconds}}}"#),
        );
        assert_eq!(e.code, 400, "seconds {seconds}: {e:?}");
        assert!(e.message.contains("seconds"), "seconds {seconds}: {e:?}");
    }
    for (cmd, params, name) in [
        ("sec_top", r#"{"n":null}"#, "n"),
        ("sec_top", r#"{"n":[3]}"#, "n"),
        ("sec_top", r#"{"n":0}"#, "n"),
        ("sec_top", r#"{"n":10001}"#, "n"),
        ("sec_ban", r#"{"ip":["192.0.2.8"]}"#, "ip"),
        (
            "sec_ban",
            r#"{"ip":"192.0.2.8","seconds":5,"reason":{}}"#,
            "reason",
        ),
        ("sec_ban_list", r#"{"ip":false}"#, "ip"),
        ("sec_rl_list", r#"{"key":[]}"#, "key"),
        ("sec_whitelist_add", r#"{"cidr":null}"#, "cidr"),
        ("sec_ip_info", r#"{"ip":{"a":1}}"#, "ip"),
    ] {
        let e = mi.err(cmd, params);
        assert_eq!(e.code, 400, "{cmd} {params}: {e:?}");
        assert!(e.message.contains(name), "{cmd} {params}: {e:?}");
    }
    assert_eq!(
        mi.ok("sec_ban_list", "")["count"].as_u64(),
        Some(0),
        "no ban was made with a default"
    );
    // The same values of the right type work, including a number as text
    // and the largest ban.
    assert_eq!(
        mi.ok("sec_ban", r#"{"ip":"192.0.2.8","seconds":"5"}"#),
        Value::from("OK")
    );
    assert_eq!(
        mi.ok(
            "sec_ban",
            r#"{"ip":"192.0.2.9","seconds":315360000,"reason":"auth"}"#
        ),
        Value::from("OK")
    );
    assert_eq!(
        mi.ok("sec_ban", r#"{"ip":"192.0.2.10"}"#),
        Value::from("OK"),
        "the default length"
    );
    let list = mi.ok("sec_ban_list", "");
    let left: Vec<(String, u64)> = array(&list, "bans")
        .iter()
        .map(|b| {
            (
                b["ip"].as_str().unwrap().to_string(),
                b["seconds_left"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(left.len(), 3, "{list}");
    assert!(
        left[0].1 <= 5 && left[1].1 > 315_359_000 && left[2].1 > 3_500,
        "{list}"
    );
    assert_eq!(
        mi.ok("sec_top", r#"{"n":"2"}"#)["window"].as_u64(),
        Some(60)
    );
    drop(os);
}

#[test]
fn a_full_ban_table_holds_max_bans_and_does_not_flood_the_log() {
    let env = require!("a_full_ban_table_holds_max_bans_and_does_not_flood_the_log");
    let _g = heavy();
    let dir = TestDir::new("hostile_full_table");
    let (os, mi) = start(
        env,
        &dir,
        "full",
        &[("MAX_BANS", s(16)), ("PIKE_DENSITY", s(2))],
    );
    let log = os.log();
    assert!(
        log.contains("at most 16 bans (16 prefix-ban slots in 1 locked bucket)"),
        "the start-up line says what was allocated:\n{log}"
    );
    // An old configuration's lock_stripes still loads, and is said to do
    // nothing rather than silently ignored.
    assert!(log.contains("lock_stripes (16) is no longer used"), "{log}");

    // 100 distinct bans: exactly max_bans are held, the rest refused.
    let mut ok = 0;
    for i in 0..100 {
        match mi.call(
            "sec_ban",
            &format!(r#"{{"ip":"192.0.2.{i}","seconds":600}}"#),
        ) {
            Ok(_) => ok += 1,
            Err(e) => assert_eq!(
                (e.code, e.message.as_str()),
                (500, "ban table full (raise max_bans)")
            ),
        }
    }
    assert_eq!(ok, 16);
    assert_eq!(mi.ok("sec_ban_list", "")["count"].as_u64(), Some(16));
    assert_eq!(mi.rsec_stat("bans_active"), 16);

    // A flooder over the threshold cannot be banned: every request is
    // refused all the same, and the log says so a bounded number of times.
    let c = OptionsClient::new("127.0.0.77", os.port, Some("flood"));
    let t0 = Instant::now();
    let mut codes = std::collections::BTreeMap::new();
    for _ in 0..1000 {
        let a = c
            .ask(Duration::from_secs(2))
            .unwrap_or_else(|| panic!("no answer\n{}", os.tail(20)));
        *codes.entry(a.code).or_insert(0) += 1;
    }
    let took = t0.elapsed();
    assert_eq!(
        codes,
        [(200, 2), (403, 998)].into_iter().collect(),
        "never fails open"
    );
    let lines = os.log_lines_with(&["127.0.0.77 is flooding but the ban table is full"]);
    // One line per worker, then one per worker per 10 s interval.
    let bound = 2 * (1 + took.as_secs() as usize / 10 + 1);
    eprintln!(
        "1000 refused requests in {took:?} logged {} lines (bound {bound}): {lines:#?}",
        lines.len()
    );
    assert!(
        !lines.is_empty() && lines.len() <= bound,
        "{} lines: {lines:#?}",
        lines.len()
    );
}

#[test]
fn a_prefix_ban_over_a_banned_host_is_the_one_announced_and_persisted() {
    let env = require!("a_prefix_ban_over_a_banned_host_is_the_one_announced_and_persisted");
    let Some(db) = MariaDb::start_new(
        "a_prefix_ban_over_a_banned_host_is_the_one_announced_and_persisted",
        true,
    ) else {
        return;
    };
    let _g = heavy();
    let dir = TestDir::new("hostile_prefix_over_host");
    let vars = [
        ("WORKERS", s(2)),
        ("PIKE_SAMPLING", s(2)),
        ("PIKE_DENSITY", s(10)),
        ("PIKE_BAN_TIME", s(300)),
        ("WHITELIST", s("192.0.2.0/24")),
        ("DB_URL", db.url()),
        ("NODE_ID", s("hostile-1")),
        ("DB_SYNC", s(1)),
        ("DB_TIMEOUT", s(3)),
        ("DB_QUEUE_SIZE", s(4096)),
    ];
    let os = OpenSips::start_with_http(env, &dir, "node", NODE_CFG, &vars);
    let mi = Mi::with_timeout(os.http_port.unwrap(), Duration::from_secs(20));
    mi.wait_ready(Duration::from_secs(10)).unwrap();

    assert_eq!(
        mi.ok("sec_ban", r#"{"ip":"10.0.0.0","seconds":600}"#),
        Value::from("OK")
    );
    assert_eq!(
        mi.ok(
            "sec_ban",
            r#"{"ip":"10.0.0.0/24","seconds":900,"reason":"rl"}"#
        ),
        Value::from("OK")
    );
    let evs = os.wait_events(2, |e| e.is(&[("ev", "ban")]));
    // event_route runs asynchronously in whichever worker picks the event
    // up, so two events raised back to back may be logged in either order.
    let mut announced: Vec<(&str, &str, &str)> = evs
        .iter()
        .map(|e| (e.get("ip"), e.get("reason"), e.get("seconds")))
        .collect();
    announced.sort();
    assert_eq!(
        announced,
        [("10.0.0.0", "manual", "600"), ("10.0.0.0/24", "rl", "900")]
    );

    // Both are in the database, each as itself.
    mi.ok("sec_db_sync", "");
    let rows = db.sql("SELECT address, reason, expires - created FROM rsec_bans ORDER BY address");
    let rows: Vec<&str> = rows.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(
        rows,
        ["10.0.0.0\tmanual\t600", "10.0.0.0/24\trl\t900"],
        "rsec_bans"
    );
    let changes = db.sql("SELECT address, op FROM rsec_ban_changes ORDER BY id");
    assert_eq!(
        changes
            .lines()
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>(),
        ["10.0.0.0\tban", "10.0.0.0/24\tban"]
    );
}

/// Anonymous resident memory of process `pid`, in KiB.
fn rss_anon_kib(pid: u64) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no RssAnon in /proc/{pid}/status"))
}

#[test]
fn many_mi_calls_leave_the_mi_process_memory_flat() {
    let env = require!("many_mi_calls_leave_the_mi_process_memory_flat");
    let _g = heavy();
    let dir = TestDir::new("hostile_mi_memory");
    let (os, mi) = start(env, &dir, "mi_memory", &[]);
    for i in 0..20 {
        mi.ok(
            "sec_ban",
            &format!(r#"{{"ip":"198.51.100.{i}","seconds":600}}"#),
        );
    }
    // mi_http answers in the httpd process.
    let ps = mi.ok("ps", "");
    let pid = array(&ps, "Processes")
        .iter()
        .find(|p| p["Type"].as_str().is_some_and(|t| t.starts_with("HTTPD")))
        .and_then(|p| p["PID"].as_u64())
        .unwrap_or_else(|| panic!("no HTTPD process in {ps}"));
    // Warm up (allocator arenas, the reply buffers), then measure.
    for _ in 0..2_000 {
        mi.ok("sec_ban_list", "");
    }
    let before = rss_anon_kib(pid);
    let t0 = Instant::now();
    const CALLS: usize = 100_000;
    for i in 0..CALLS {
        let r = mi.ok("sec_ban_list", "");
        if i == 0 {
            assert_eq!(r["count"].as_u64(), Some(20));
        }
    }
    let after = rss_anon_kib(pid);
    let grew = after.saturating_sub(before);
    eprintln!(
        "{CALLS} sec_ban_list calls in {:.1}s: httpd (pid {pid}) RssAnon {before} KiB -> {after} KiB ({:+} bytes per call)",
        t0.elapsed().as_secs_f64(),
        (after as f64 - before as f64) * 1024.0 / CALLS as f64
    );
    // Before the fix every call leaked an error reply (~590 bytes): 56 MiB.
    assert!(
        grew < 2048,
        "the MI process grew by {grew} KiB over {CALLS} calls"
    );
    drop(os);
}
