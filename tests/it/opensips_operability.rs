//! rsec's operator interfaces inside a real OpenSIPS 3.6: the MI commands
//! (JSON-RPC over mi_http), the statistics (get_statistics and the
//! prometheus module) and the E_SEC_BAN / E_SEC_UNBAN events.
//!
//! Every test starts `opensips -F` with tests/cfg/ops.cfg (test 10:
//! tests/cfg/ops_capacity.cfg, a small source table) on its own free UDP
//! and TCP ports, sends SIP traffic with sipp from chosen 127.0.0.x source
//! addresses (test 10 also from 5000 127.1.x.y addresses with the OPTIONS
//! client of support/sip.rs) and talks to mi_http with a small HTTP/1.0
//! client (support/mi.rs). What the script decided and which events fired is
//! read back from the `RSEC-TEST` xlog lines of ops.cfg; every expectation
//! is exact and independent of timing, except where a wait for an expiry is
//! needed, which is a bounded poll. Latencies (test 8) are reported, never
//! asserted. Test 9 provokes a race on purpose: it cannot fail when the
//! module counts right, and catches a miscount in most runs.
//!
//! Needs OpenSIPS (with httpd, mi_http, prometheus and event_routing) and
//! sipp; without them every test skips (support::skip).
//!
//! Run: `cargo test --release --test it opensips_operability -- --nocapture`
//! to see the MI exchanges and the measured numbers.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::support::{mi, opensips, sip, sipp};
use mi::{Mi, MiError, RSEC_STATS};
use opensips::{heavy, s, tally, workers, Env, Event, OpenSips, TestDir};
use serde_json::Value;
use sip::{OptionsClient, Pace};
use sipp::{Sipp, SippResult};

const OPS_CFG: &str = include_str!("../cfg/ops.cfg");
const OPS_CAPACITY_CFG: &str = include_str!("../cfg/ops_capacity.cfg");

macro_rules! require {
    ($test:literal) => {
        match opensips::env($test, true) {
            Some(e) => e,
            None => return,
        }
    };
}

/// An OpenSIPS running ops.cfg, with its MI client.
struct Ops<'a> {
    env: &'a Env,
    dir: &'a TestDir,
    os: OpenSips,
    mi: Mi,
    runs: std::cell::Cell<u32>,
}

impl<'a> Ops<'a> {
    /// ops.cfg with these defaults, each replaceable through `vars`.
    fn start(env: &'a Env, dir: &'a TestDir, name: &str, vars: &[(&str, String)]) -> Ops<'a> {
        Self::start_cfg(env, dir, name, OPS_CFG, vars)
    }

    /// As [`start`](Self::start), with another template of tests/cfg/
    /// (one that loads httpd and mi_http as ops.cfg does).
    fn start_cfg(
        env: &'a Env,
        dir: &'a TestDir,
        name: &str,
        template: &str,
        vars: &[(&str, String)],
    ) -> Ops<'a> {
        let all: Vec<(&str, String)> = vec![
            ("WORKERS", s(2)),
            ("PIKE_SAMPLING", s(10)),
            ("PIKE_DENSITY", s(10)),
            ("PIKE_BAN_TIME", s(300)),
            ("AUTH_THRESHOLD", s(3)),
            ("AUTH_BAN_TIME", s(300)),
            ("BAN_TIME", s(3600)),
            ("RL_LIMIT", s(5)),
            ("PROM_GROUP_MODE", s(0)),
        ];
        let all = opensips::override_vars(all, vars);
        let os = OpenSips::start_with_http(env, dir, name, template, &all);
        let mi = Mi::new(os.http_port.unwrap());
        mi.wait_ready(Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("mi_http does not answer: {e}\n{}", os.tail(40)));
        Ops {
            env,
            dir,
            os,
            mi,
            runs: std::cell::Cell::new(0),
        }
    }

    fn sipp(&self, scenario: &'static str, src: &str, service: &str) -> Sipp<'a> {
        let n = self.runs.get() + 1;
        self.runs.set(n);
        let name = format!("run{n}_{service}_{}", src.replace('.', "_"));
        Sipp::new(self.env, self.dir, &name, scenario, self.os.port)
            .from(src)
            .service(service)
    }

    /// `n` OPTIONS from `src` to user `service` at `rate`/s, every one answered.
    fn send(&self, src: &str, service: &str, n: u32, rate: u32) -> SippResult {
        let r = self.sipp("options.xml", src, service).calls(n, rate).run();
        r.assert_complete();
        r
    }

    /// `senders` sipp runs from `src` at once, `n` requests each at `rate`/s.
    fn burst(
        &self,
        src: &str,
        service: &str,
        senders: usize,
        n: u32,
        rate: u32,
    ) -> Vec<SippResult> {
        let runs: Vec<_> = (0..senders)
            .map(|_| {
                self.sipp("options.xml", src, service)
                    .calls(n, rate)
                    .spawn()
            })
            .collect();
        let res: Vec<SippResult> = runs.into_iter().map(|r| r.wait()).collect();
        for r in &res {
            r.assert_complete();
        }
        res
    }

    /// Bursts of 2x20 OPTIONS from `src` (flood-checked) until the server
    /// log shows at least `want` distinct workers handling them, at most
    /// `max` bursts. Returns (requests sent, answers, workers).
    fn bursts_until_workers(
        &self,
        src: &str,
        max: usize,
        want: usize,
    ) -> (usize, BTreeMap<String, usize>, usize) {
        let before = self
            .os
            .events()
            .into_iter()
            .filter(|e| e.is(&[("check", "pike"), ("src", src)]))
            .count();
        let (mut sent, mut answers, mut w) = (0, BTreeMap::new(), 0);
        for _ in 0..max {
            for r in self.burst(src, "probe", 2, 20, 1000) {
                for (k, v) in r.tally() {
                    *answers.entry(k).or_insert(0) += v;
                }
            }
            sent += 40;
            let evs = self.checks("pike", src, before + sent);
            assert_eq!(evs.len(), before + sent, "one decision line per request");
            w = workers(evs[before..].iter());
            if w >= want {
                break;
            }
        }
        (sent, answers, w)
    }

    /// As [`send`](Self::send), strictly one call at a time (each waits for
    /// the answer to the one before), as fast as that goes up to 500/s.
    fn send_seq(&self, src: &str, service: &str, n: u32) -> SippResult {
        let r = self
            .sipp("options.xml", src, service)
            .calls(n, 500)
            .max_parallel(1)
            .run();
        r.assert_complete();
        r
    }

    /// Decision lines (`check=...`) from `src`, waiting until at least `n`.
    fn checks(&self, check: &str, src: &str, n: usize) -> Vec<Event> {
        self.os
            .wait_events(n, |e| e.is(&[("check", check), ("src", src)]))
    }

    /// Event lines (`ev=ban|unban`) matching `kv`.
    fn events(&self, kind: &str, kv: &[(&str, &str)]) -> Vec<Event> {
        self.os
            .events()
            .into_iter()
            .filter(|e| e.get("ev") == kind && e.is(kv))
            .collect()
    }

    /// Polls (up to `limit`) until at least `n` event lines match.
    fn wait_events(
        &self,
        kind: &str,
        kv: &[(&str, &str)],
        n: usize,
        limit: Duration,
    ) -> Vec<Event> {
        let t0 = Instant::now();
        loop {
            let evs = self.events(kind, kv);
            if evs.len() >= n || t0.elapsed() > limit {
                return evs;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The statistics of [`RSEC_STATS`] (others the module may add are left out).
    fn stats(&self) -> BTreeMap<String, u64> {
        let mut st = self.mi.rsec_stats();
        let missing: Vec<&str> = RSEC_STATS
            .iter()
            .copied()
            .filter(|n| !st.contains_key(*n))
            .collect();
        assert!(
            missing.is_empty(),
            "get_statistics rsec: lacks {missing:?}: {st:?}"
        );
        st.retain(|k, _| RSEC_STATS.contains(&k.as_str()));
        st
    }
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The value at `path` (`a.b.0.c`: members by name, array elements by index).
fn at<'j>(j: &'j Value, path: &str) -> Option<&'j Value> {
    j.pointer(&format!("/{}", path.replace('.', "/")))
}

fn num(j: &Value, path: &str) -> u64 {
    at(j, path)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("{path} is not a count in {j}"))
}

fn text<'j>(j: &'j Value, path: &str) -> &'j str {
    at(j, path)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{path} is not a string in {j}"))
}

fn ban_ips(list: &Value) -> Vec<String> {
    mi::array(list, "bans")
        .iter()
        .map(|b| text(b, "ip").to_string())
        .collect()
}

fn count_r(evs: &[Event], r: &str) -> usize {
    evs.iter().filter(|e| e.get("r") == r).count()
}

/// (p50, p99, max, mean) of `v`.
fn percentiles(v: &[f64]) -> (f64, f64, f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0, 0.0, 0.0);
    }
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let at = |q: f64| v[((q * (v.len() - 1) as f64).round() as usize).min(v.len() - 1)];
    (
        at(0.5),
        at(0.99),
        v[v.len() - 1],
        v.iter().sum::<f64>() / v.len() as f64,
    )
}

// ---------------------------------------------------------------------------
// 1. A flood ban as the operator sees it: sec_ban_list, its filter, sec_ip_info.
// ---------------------------------------------------------------------------

#[test]
fn mi_ban_list_shows_traffic_ban_with_reason() {
    let env = require!("mi_ban_list_shows_traffic_ban_with_reason");
    let _g = heavy();
    const SRC: &str = "127.0.0.40";
    const DENSITY: usize = 10;
    const BAN_TIME: u64 = 300;
    const FLOOD: u32 = 100;
    let dir = TestDir::new("mi_ban_list");
    // A 10 s pike window: the MI queries below see the flood's whole count.
    let ops = Ops::start(
        env,
        &dir,
        "mi_ban_list",
        &[
            ("PIKE_DENSITY", s(DENSITY)),
            ("PIKE_BAN_TIME", s(BAN_TIME)),
            ("PIKE_SAMPLING", s(10)),
        ],
    );
    eprintln!("  empty ban list:");
    let empty = ops.mi.show("sec_ban_list", "").unwrap();
    assert_eq!(
        (num(&empty, "count"), mi::array(&empty, "bans").len()),
        (0, 0),
        "{empty}"
    );

    // One request at a time, so that which request was refused how is
    // exact (concurrent floods: see refusals_are_counted_exactly_under_concurrency).
    let t0 = now_s();
    let flood = ops.send_seq(SRC, "flood", FLOOD);
    let t1 = now_s();
    let evs = ops.checks("pike", SRC, FLOOD as usize);
    // Refused while banned: sec_pike_check said -1 (the request that crossed
    // the threshold said -2 and is not a hit on the ban).
    let refused_while_banned = count_r(&evs, "-1");
    eprintln!(
        "flood {SRC}: {FLOOD} OPTIONS back to back -> {:?}; server: {:?}",
        flood.tally(),
        tally(evs.iter(), "r")
    );
    assert_eq!(flood.count("200"), DENSITY, "{}", flood.describe());
    assert_eq!(flood.count("403"), FLOOD as usize - DENSITY);
    assert_eq!(count_r(&evs, "-2"), 1);
    assert_eq!(refused_while_banned, FLOOD as usize - DENSITY - 1);

    // A second ban, so that the filter has something to leave out.
    assert_eq!(
        ops.mi.ok("sec_ban", r#"{"ip":"127.0.0.41","seconds":600}"#),
        "OK"
    );

    eprintln!("  the whole list:");
    let all = ops.mi.show("sec_ban_list", "").unwrap();
    assert_eq!(num(&all, "count"), 2, "{all}");
    assert_eq!(
        ban_ips(&all),
        ["127.0.0.40", "127.0.0.41"],
        "sorted by creation: {all}"
    );

    eprintln!("  filtered by ip:");
    let one = ops
        .mi
        .show("sec_ban_list", r#"{"ip":"127.0.0.40"}"#)
        .unwrap();
    assert_eq!(num(&one, "count"), 1, "{one}");
    assert_eq!(ban_ips(&one), [SRC], "{one}");
    let b = &one["bans"][0];
    assert_eq!(text(b, "reason"), "pike", "{b}");
    let (created, expires, left) = (num(b, "created"), num(b, "expires"), num(b, "seconds_left"));
    assert!(
        (t0..=t1).contains(&created),
        "created {created} outside the flood [{t0}, {t1}]: {b}"
    );
    assert_eq!(expires - created, BAN_TIME, "{b}");
    // seconds_left is rounded up; a few seconds of slack for a slow machine.
    assert!(
        left <= BAN_TIME && left + 10 >= BAN_TIME,
        "seconds_left {left} should be about {BAN_TIME}: {b}"
    );
    assert_eq!(
        num(b, "hits"),
        refused_while_banned as u64,
        "hits = requests refused while banned: {b}"
    );
    assert_eq!(num(b, "hits") as usize, flood.count("403") - 1);

    let other = ops.mi.ok("sec_ban_list", r#"{"ip":"127.0.0.41"}"#);
    assert_eq!(ban_ips(&other), ["127.0.0.41"]);
    assert_eq!(text(&other, "bans.0.reason"), "manual");
    assert_eq!(num(&other, "bans.0.hits"), 0);
    // A prefix lists the bans inside it; an unbanned address, none.
    assert_eq!(
        num(
            &ops.mi.ok("sec_ban_list", r#"{"ip":"127.0.0.0/24"}"#),
            "count"
        ),
        2
    );
    assert_eq!(
        num(
            &ops.mi.ok("sec_ban_list", r#"{"ip":"127.0.0.42"}"#),
            "count"
        ),
        0
    );

    eprintln!("  sec_ip_info of the flooder:");
    let info = ops
        .mi
        .show("sec_ip_info", r#"{"ip":"127.0.0.40"}"#)
        .unwrap();
    assert_eq!(text(&info, "ip"), SRC);
    assert_eq!(info["banned"].as_bool(), Some(true), "{info}");
    assert_eq!(info["whitelisted"].as_bool(), Some(false), "{info}");
    // Requests counted by the flood check: every one, the refused ones
    // too (they are also the ban's hits).
    assert_eq!(
        num(&info, "pike.requests"),
        (DENSITY + 1 + refused_while_banned) as u64,
        "{info}"
    );
    assert_eq!(num(&info, "pike.density"), DENSITY as u64);
    assert_eq!(num(&info, "pike.sampling_time"), 10);
    assert_eq!(num(&info, "auth.failures"), 0);
    // Last seen is known to an eighth of the 10 s window (1.25 s), rounded
    // down to the start of that eighth: up to 2 whole seconds before t0.
    assert!(
        (t0 - 2..=now_s()).contains(&num(&info, "last_seen")),
        "{info}"
    );
    assert_eq!(text(&info, "ban.reason"), "pike");
    assert_eq!(num(&info, "ban.hits"), refused_while_banned as u64);

    let idle = ops.mi.ok("sec_ip_info", r#"{"ip":"127.0.0.99"}"#);
    assert_eq!(idle["banned"].as_bool(), Some(false), "{idle}");
    assert_eq!(num(&idle, "pike.requests"), 0);
    assert!(
        idle.get("ban").is_none() && idle.get("last_seen").is_none(),
        "nothing known of an unseen source: {idle}"
    );

    eprintln!("  sec_top:");
    let top = ops.mi.show("sec_top", r#"{"n":3}"#).unwrap();
    assert_eq!(text(&top, "sources.0.ip"), SRC, "{top}");
    assert_eq!(
        num(&top, "sources.0.requests"),
        (DENSITY + 1 + refused_while_banned) as u64,
        "{top}"
    );
}

// ---------------------------------------------------------------------------
// 2. MI unban / ban / flush take effect in every worker at once.
// ---------------------------------------------------------------------------

#[test]
fn mi_unban_lets_source_through_in_every_worker() {
    let env = require!("mi_unban_lets_source_through_in_every_worker");
    let _g = heavy();
    const FLOODER: &str = "127.0.0.42";
    const MANUAL: [&str; 2] = ["127.0.0.43", "127.0.0.44"];
    const DENSITY: usize = 200;
    let dir = TestDir::new("mi_unban");
    let ops = Ops::start(
        env,
        &dir,
        "mi_unban",
        &[
            ("WORKERS", s(8)),
            ("PIKE_DENSITY", s(DENSITY)),
            ("PIKE_SAMPLING", s(2)),
        ],
    );

    let flood = ops.burst(FLOODER, "flood", 2, 200, 500);
    let ok: usize = flood.iter().map(|r| r.count("200")).sum();
    assert_eq!(
        ok,
        DENSITY,
        "{}\n{}",
        flood[0].describe(),
        flood[1].describe()
    );
    assert_eq!(num(&ops.mi.ok("sec_ban_list", ""), "count"), 1);

    // Wait for the flood to leave the 2 s pike window. (An unban does not
    // reset the source's request count: unbanned within the window, the
    // next request would be over the threshold again and re-banned.)
    let t0 = Instant::now();
    while num(
        &ops.mi.ok("sec_ip_info", r#"{"ip":"127.0.0.42"}"#),
        "pike.requests",
    ) > 0
    {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the pike window never emptied"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let still = ops.send(FLOODER, "probe", 20, 200);
    assert_eq!(
        still.count("403"),
        20,
        "still banned before the unban\n{}",
        still.describe()
    );

    eprintln!("  unban the flooder:");
    assert_eq!(
        ops.mi.show("sec_unban", r#"{"ip":"127.0.0.42"}"#).unwrap(),
        "OK"
    );
    // Every request after the unban passes, whichever worker takes it. Which
    // worker reads a datagram is up to the kernel: bursts from two senders
    // at once until at least 3 workers have had some (at most 160
    // requests, under the density).
    let (sent, answers, w) = ops.bursts_until_workers(FLOODER, 4, 3);
    eprintln!(
        "after sec_unban {FLOODER}: {sent} requests -> {answers:?}, handled by {w} of 8 workers"
    );
    assert_eq!(
        answers.get("200"),
        Some(&sent),
        "every request passes after the unban: {answers:?}"
    );
    assert!(w >= 2, "the requests should have reached several workers");

    eprintln!("  unban again:");
    let again = ops
        .mi
        .show("sec_unban", r#"{"ip":"127.0.0.42"}"#)
        .unwrap_err();
    assert_eq!(again.code, 404, "{again:?}");
    assert!(again.message.contains("127.0.0.42"), "{again:?}");

    // MI bans: refused at once, by every worker.
    for ip in MANUAL {
        eprintln!("  ban {ip}:");
        let r = ops
            .mi
            .show(
                "sec_ban",
                &format!(r#"{{"ip":"{ip}","seconds":600,"reason":"manual"}}"#),
            )
            .unwrap();
        assert_eq!(r, "OK");
    }
    let mut refused = BTreeMap::new();
    for ip in MANUAL {
        let (sent, answers, w) = ops.bursts_until_workers(ip, 5, 3);
        eprintln!(
            "after sec_ban {ip}: {sent} requests -> {answers:?}, handled by {w} of 8 workers"
        );
        assert_eq!(
            answers.get("403"),
            Some(&sent),
            "refused at once by every worker: {answers:?}"
        );
        assert!(w >= 2, "the requests should have reached several workers");
        refused.insert(ip, sent as u64);
    }
    let list = ops.mi.ok("sec_ban_list", "");
    for ip in MANUAL {
        let b = mi::array(&list, "bans")
            .iter()
            .find(|b| b["ip"].as_str() == Some(ip))
            .expect("listed");
        assert_eq!(
            (text(b, "reason"), num(b, "hits")),
            ("manual", refused[ip]),
            "{b}"
        );
    }
    // A prefix, and an IPv6 address, for the flush to count.
    ops.mi.ok("sec_ban", r#"{"ip":"10.20.0.0/16"}"#);
    ops.mi.ok("sec_ban", r#"{"ip":"2001:db8::7","seconds":0}"#);
    eprintln!("  the list before the flush:");
    let list = ops.mi.show("sec_ban_list", "").unwrap();
    assert_eq!(num(&list, "count"), 4);
    let find = |ip: &str| {
        mi::array(&list, "bans")
            .iter()
            .find(|b| b["ip"].as_str() == Some(ip))
            .cloned()
    };
    let net = find("10.20.0.0/16")
        .unwrap_or_else(|| panic!("prefix ban not listed as 10.20.0.0/16: {list}"));
    assert_eq!(
        num(&net, "expires") - num(&net, "created"),
        3600,
        "the default ban_time: {net}"
    );
    let v6 = find("2001:db8::7").unwrap_or_else(|| panic!("IPv6 ban not listed: {list}"));
    assert_eq!(
        (v6["seconds_left"].as_i64(), num(&v6, "expires")),
        (Some(-1), 0),
        "until unbanned: {v6}"
    );

    eprintln!("  flush:");
    let flushed = ops.mi.show("sec_ban_flush", "").unwrap();
    assert_eq!(num(&flushed, "removed"), 4, "{flushed}");
    assert_eq!(num(&ops.mi.ok("sec_ban_list", ""), "count"), 0);
    assert_eq!(
        num(&ops.mi.ok("sec_ban_flush", ""), "removed"),
        0,
        "nothing left to flush"
    );
    for ip in MANUAL {
        let r = ops.send(ip, "probe", 40, 200);
        assert_eq!(r.count("200"), 40, "after the flush\n{}", r.describe());
    }
}

// ---------------------------------------------------------------------------
// 3. Bad MI parameters get precise error replies and change nothing.
// ---------------------------------------------------------------------------

#[test]
fn mi_bad_params_get_error_replies() {
    let env = require!("mi_bad_params_get_error_replies");
    let dir = TestDir::new("mi_bad_params");
    let ops = Ops::start(env, &dir, "mi_bad_params", &[]);
    // (method, params, expected code, the message must contain)
    let cases: &[(&str, &str, i64, &str)] = &[
        ("sec_ban", r#"{"ip":"10.0.0.300"}"#, 400, "10.0.0.300"),
        ("sec_ban", r#"{"ip":""}"#, 400, "ip"),
        ("sec_ban", r#"{"ip":"10.0.0.1/33"}"#, 400, "10.0.0.1/33"),
        (
            "sec_ban",
            r#"{"ip":"10.0.0.3","seconds":"abc"}"#,
            400,
            "abc",
        ),
        ("sec_ban", r#"{"ip":"10.0.0.3","seconds":-5}"#, 400, "-5"),
        (
            "sec_ban",
            r#"{"ip":"10.0.0.3","seconds":60,"reason":"bogus"}"#,
            400,
            "bogus",
        ),
        ("sec_ban_list", r#"{"ip":"not-an-ip"}"#, 400, "not-an-ip"),
        ("sec_top", r#"{"n":0}"#, 400, "0"),
        ("sec_top", r#"{"n":"many"}"#, 400, "many"),
        (
            "sec_whitelist_add",
            r#"{"cidr":"10.0.0.1/8"}"#,
            400,
            "10.0.0.1/8",
        ),
        (
            "sec_whitelist_del",
            r#"{"cidr":"10.0.0.0/8"}"#,
            404,
            "10.0.0.0/8",
        ),
        ("sec_ip_info", r#"{"ip":"x"}"#, 400, "'x'"),
        ("sec_ip_info", r#"{"ip":"10.0.0.0/8"}"#, 400, "10.0.0.0/8"),
        ("sec_unban", r#"{"ip":"10.9.9.9"}"#, 404, "10.9.9.9"),
        ("sec_unban", r#"{"ip":"10.9.9.999"}"#, 400, "10.9.9.999"),
        // parameter names or counts no recipe accepts: the core's JSON-RPC error
        (
            "sec_unban",
            r#"{"foo":"10.9.9.9"}"#,
            -32602,
            "Invalid params",
        ),
        ("sec_ban", "{}", -32602, "Invalid params"),
        (
            "sec_ban_flush",
            r#"{"ip":"10.9.9.9"}"#,
            -32602,
            "Invalid params",
        ),
        ("sec_top", r#"{"n":3,"extra":1}"#, -32602, "Invalid params"),
        ("sec_no_such_command", "", -32601, "Method not found"),
    ];
    let mut failures = Vec::new();
    for (method, params, code, needle) in cases {
        match ops.mi.show(method, params) {
            Ok(r) => failures.push(format!("{method} {params}: succeeded with {r}")),
            Err(MiError { code: c, message }) => {
                if c != *code || !message.contains(needle) {
                    failures.push(format!(
                        "{method} {params}: got {c} {message:?}, want {code} containing {needle:?}"
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{}\n--- log tail ---\n{}",
        failures.join("\n"),
        ops.os.tail(30)
    );

    // None of that changed anything...
    let st = ops.stats();
    assert!(
        RSEC_STATS.iter().all(|n| st[*n] == 0),
        "statistics moved: {st:?}"
    );
    assert_eq!(num(&ops.mi.ok("sec_ban_list", ""), "count"), 0);
    assert_eq!(
        mi::array(&ops.mi.ok("sec_whitelist_list", ""), "whitelist").len(),
        0
    );
    // ...and OpenSIPS still serves SIP and MI.
    let r = ops.send("127.0.0.45", "probe", 10, 100);
    assert_eq!(r.count("200"), 10, "{}", r.describe());
    assert_eq!(ops.stats()["requests_checked"], 10);
    assert!(
        ops.os
            .log_lines_with(&["rsec"])
            .iter()
            .all(|l| !l.contains("panic")),
        "{}",
        ops.os.tail(40)
    );
}

// ---------------------------------------------------------------------------
// 4. Every statistic moves by exactly what the traffic implies.
// ---------------------------------------------------------------------------

#[test]
fn statistics_move_exactly() {
    let env = require!("statistics_move_exactly");
    let _g = heavy();
    const DENSITY: u64 = 10;
    const RL_LIMIT: u64 = 5;
    const AUTH_THRESHOLD: u64 = 3;
    let dir = TestDir::new("stats");
    let ops = Ops::start(
        env,
        &dir,
        "stats",
        &[
            ("PIKE_DENSITY", s(DENSITY)),
            ("RL_LIMIT", s(RL_LIMIT)),
            ("AUTH_THRESHOLD", s(AUTH_THRESHOLD)),
        ],
    );
    let base = ops.stats();
    assert_eq!(base["bans_active"], 0);
    eprintln!("at start: {base:?}");
    let mut expect: BTreeMap<String, u64> = base.clone();
    let check = |what: &str, expect: &BTreeMap<String, u64>| {
        let now = ops.stats();
        let delta: BTreeMap<&str, i64> = RSEC_STATS
            .iter()
            .map(|n| (*n, now[*n] as i64 - base[*n] as i64))
            .filter(|(_, d)| *d != 0)
            .collect();
        eprintln!("after {what}: changes since start {delta:?}");
        assert_eq!(&now, expect, "statistics after {what}");
    };
    // Every ban made is a decision recorded (sec_explain, sec_decisions).
    let add = |m: &mut BTreeMap<String, u64>, kv: &[(&str, u64)]| {
        for (k, v) in kv {
            *m.get_mut(*k).unwrap() += v;
            if *k == "bans_created" {
                *m.get_mut("decisions").unwrap() += v;
            }
        }
    };

    // A: 30 requests through sec_pike_check from one source: DENSITY pass,
    // the next one is over the threshold and bans, 19 are refused as banned.
    const N: u64 = 30;
    let r = ops.send_seq("127.0.0.46", "flood", N as u32);
    assert_eq!(
        (r.count("200") as u64, r.count("403") as u64),
        (DENSITY, N - DENSITY),
        "{}",
        r.describe()
    );
    add(
        &mut expect,
        &[
            ("requests_checked", N),
            ("pike_blocked", N - DENSITY),
            ("dropped_while_banned", N - DENSITY - 1),
            ("bans_created", 1),
            ("bans_pike", 1),
            ("bans_active", 1),
        ],
    );
    check("a 30-request flood", &expect);

    // B: 12 requests through sec_rl_check (limit RL_LIMIT per 60 s).
    let r = ops.send("127.0.0.47", "rl", 12, 100);
    assert_eq!(
        (r.count("200") as u64, r.count("429") as u64),
        (RL_LIMIT, 12 - RL_LIMIT),
        "{}",
        r.describe()
    );
    add(
        &mut expect,
        &[("rl_checked", 12), ("rl_rejected", 12 - RL_LIMIT)],
    );
    check("12 rate-limited requests", &expect);

    // C: 5 sec_auth_fail calls, one at a time: counted, counted, ban, then
    // two from an already banned source (still counted as failures).
    let r = ops.send_seq("127.0.0.48", "authfail", 5);
    assert_eq!(
        r.sequence(),
        ["200", "200", "403", "403", "403"],
        "{}",
        r.describe()
    );
    let evs = ops.checks("authfail", "127.0.0.48", 5);
    let rcs: Vec<&str> = evs.iter().map(|e| e.get("r")).collect();
    assert_eq!(rcs, ["1", "1", "-2", "-1", "-1"]);
    add(
        &mut expect,
        &[
            ("auth_failures", 5),
            ("bans_created", 1),
            ("bans_auth", 1),
            ("bans_active", 1),
        ],
    );
    check("5 auth failures", &expect);

    // D: an MI ban and its unban.
    ops.mi.ok("sec_ban", r#"{"ip":"10.3.0.1","seconds":600}"#);
    add(
        &mut expect,
        &[("bans_created", 1), ("bans_manual", 1), ("bans_active", 1)],
    );
    check("sec_ban", &expect);
    ops.mi.ok("sec_unban", r#"{"ip":"10.3.0.1"}"#);
    add(&mut expect, &[("bans_removed", 1)]);
    *expect.get_mut("bans_active").unwrap() -= 1;
    check("sec_unban", &expect);
    // A ban that was never there changes nothing.
    assert_eq!(ops.mi.err("sec_unban", r#"{"ip":"10.3.0.1"}"#).code, 404);
    check("a second sec_unban", &expect);

    // E: a 1-second ban expires (found by the sweep timer).
    ops.mi
        .ok("sec_ban", r#"{"ip":"10.3.0.2","seconds":1,"reason":"rl"}"#);
    add(
        &mut expect,
        &[("bans_created", 1), ("bans_rl", 1), ("bans_active", 1)],
    );
    check("sec_ban for 1 s", &expect);
    let t0 = Instant::now();
    while ops.stats()["bans_expired"] == base["bans_expired"] {
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "the 1 s ban never expired: {:?}",
            ops.stats()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "1 s ban counted as expired after {} ms",
        t0.elapsed().as_millis()
    );
    add(&mut expect, &[("bans_expired", 1)]);
    *expect.get_mut("bans_active").unwrap() -= 1;
    check("the expiry", &expect);

    // F: flushing the two traffic bans.
    assert_eq!(num(&ops.mi.ok("sec_ban_flush", ""), "removed"), 2);
    add(&mut expect, &[("bans_removed", 2)]);
    *expect.get_mut("bans_active").unwrap() -= 2;
    check("sec_ban_flush", &expect);

    // G: after the flush a fresh source passes; only requests_checked moves.
    let r = ops.send_seq("127.0.0.49", "probe", 3);
    assert_eq!(r.sequence(), ["200", "200", "200"], "{}", r.describe());
    add(&mut expect, &[("requests_checked", 3)]);
    check("3 requests from a fresh source", &expect);

    let fin = ops.stats();
    assert_eq!(
        fin["bans_active"],
        num(&ops.mi.ok("sec_ban_list", ""), "count"),
        "bans_active = listed bans"
    );
    for n in ["table_evictions", "table_full", "lock_recoveries"] {
        assert_eq!(fin[n], 0, "{n}");
    }
}

// ---------------------------------------------------------------------------
// 5. E_SEC_BAN / E_SEC_UNBAN: once per ban, once per end of a ban.
// ---------------------------------------------------------------------------

#[test]
fn events_fire_once_per_ban_and_expiry() {
    let env = require!("events_fire_once_per_ban_and_expiry");
    let _g = heavy();
    const FLOODER: &str = "127.0.0.48";
    const BAN_TIME: u64 = 2;
    let dir = TestDir::new("events");
    let ops = Ops::start(
        env,
        &dir,
        "events",
        &[
            ("PIKE_DENSITY", s(10)),
            ("PIKE_BAN_TIME", s(BAN_TIME)),
            ("AUTH_THRESHOLD", s(3)),
            ("AUTH_BAN_TIME", s(300)),
        ],
    );
    let print = |evs: &[Event]| {
        for e in evs {
            eprintln!("    [pid {}] {:?}", e.pid, e.fields);
        }
    };

    // A pike ban for BAN_TIME seconds...
    let t0 = now_s();
    let flood = ops.send(FLOODER, "flood", 60, 500);
    let t1 = now_s();
    assert_eq!(flood.count("200"), 10, "{}", flood.describe());
    let bans = ops.wait_events("ban", &[("ip", FLOODER)], 1, Duration::from_secs(5));
    assert_eq!(bans.len(), 1, "one E_SEC_BAN for one ban: {bans:?}");
    let b = &bans[0];
    assert!(
        b.is(&[
            ("reason", "pike"),
            ("source", "sec_pike_check"),
            ("seconds", &BAN_TIME.to_string())
        ]),
        "{b:?}"
    );
    let expires: u64 = b.get("expires").parse().unwrap();
    assert!(
        (t0 + BAN_TIME..=t1 + BAN_TIME).contains(&expires),
        "expires {expires} not flood time + {BAN_TIME}: {b:?}"
    );

    // ...ends with one E_SEC_UNBAN "expired" from the sweep timer.
    let unbans = ops.wait_events("unban", &[("ip", FLOODER)], 1, Duration::from_secs(15));
    assert_eq!(
        unbans.len(),
        1,
        "no E_SEC_UNBAN for the expiry of {FLOODER}\n{}",
        ops.os.tail(30)
    );
    let u = &unbans[0];
    assert_eq!(u.get("reason"), "expired", "{u:?}");
    let at: u64 = u.get("at").parse().unwrap();
    assert!(
        at >= expires,
        "E_SEC_UNBAN at {at} before the expiry {expires}"
    );
    eprintln!(
        "pike ban of {FLOODER} (expires {expires}), then its expiry {} s after the expiry time:",
        at - expires
    );
    print(&[b.clone(), u.clone()]);
    // Let a few more sweeps run: still exactly one of each.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(ops.events("ban", &[("ip", FLOODER)]).len(), 1);
    assert_eq!(ops.events("unban", &[("ip", FLOODER)]).len(), 1);
    assert_eq!(ops.stats()["bans_expired"], 1);

    // MI ban and unban.
    ops.mi.ok("sec_ban", r#"{"ip":"127.0.0.49","seconds":60}"#);
    ops.mi.ok("sec_unban", r#"{"ip":"127.0.0.49"}"#);
    let b = ops.wait_events("ban", &[("ip", "127.0.0.49")], 1, Duration::from_secs(5));
    let u = ops.wait_events("unban", &[("ip", "127.0.0.49")], 1, Duration::from_secs(5));
    eprintln!("sec_ban + sec_unban over MI:");
    print(&b);
    print(&u);
    assert_eq!(b.len(), 1);
    assert!(
        b[0].is(&[("reason", "manual"), ("source", "mi"), ("seconds", "60")]),
        "{:?}",
        b[0]
    );
    assert_eq!(u.len(), 1);
    assert_eq!(u[0].get("reason"), "manual");

    // Flush: one E_SEC_UNBAN "flushed" per ban lifted.
    let flushed = ["10.5.0.1", "10.5.0.2", "10.6.0.0/24"];
    for ip in flushed {
        ops.mi.ok("sec_ban", &format!(r#"{{"ip":"{ip}"}}"#));
    }
    assert_eq!(num(&ops.mi.ok("sec_ban_flush", ""), "removed"), 3);
    let u = ops.wait_events("unban", &[("reason", "flushed")], 3, Duration::from_secs(5));
    eprintln!("sec_ban_flush of 3 bans:");
    print(&u);
    let mut ips: Vec<&str> = u.iter().map(|e| e.get("ip")).collect();
    ips.sort_unstable();
    assert_eq!(ips, flushed, "one E_SEC_UNBAN flushed per ban");
    for ip in flushed {
        let b = ops.events("ban", &[("ip", ip)]);
        assert!(
            b.len() == 1 && b[0].is(&[("source", "mi"), ("seconds", "3600")]),
            "{b:?}"
        );
    }

    // An auth ban.
    let r = ops.send_seq("127.0.0.51", "authfail", 3);
    assert_eq!(r.sequence(), ["200", "200", "403"], "{}", r.describe());
    let b = ops.wait_events("ban", &[("ip", "127.0.0.51")], 1, Duration::from_secs(5));
    eprintln!("sec_auth_fail ban:");
    print(&b);
    assert_eq!(b.len(), 1);
    assert!(
        b[0].is(&[
            ("reason", "auth"),
            ("source", "sec_auth_fail"),
            ("seconds", "300")
        ]),
        "{:?}",
        b[0]
    );

    // Nothing else fired.
    std::thread::sleep(Duration::from_millis(1500));
    let all_b = ops.events("ban", &[]);
    let all_u = ops.events("unban", &[]);
    eprintln!(
        "events in total: {} E_SEC_BAN {:?}, {} E_SEC_UNBAN {:?}",
        all_b.len(),
        tally(all_b.iter(), "source"),
        all_u.len(),
        tally(all_u.iter(), "reason")
    );
    assert_eq!(all_b.len(), 1 + 1 + 3 + 1, "{all_b:?}");
    assert_eq!(all_u.len(), 1 + 1 + 3, "{all_u:?}");
}

// ---------------------------------------------------------------------------
// 6. The prometheus module exports the statistics with their values.
// ---------------------------------------------------------------------------

#[test]
fn prometheus_scrape_has_rsec_counters() {
    let env = require!("prometheus_scrape_has_rsec_counters");
    let _g = heavy();
    for (mode, prefix) in [(0, "opensips_"), (1, "opensips_rsec_")] {
        let dir = TestDir::new(&format!("prometheus{mode}"));
        let ops = Ops::start(
            env,
            &dir,
            &format!("prometheus{mode}"),
            &[("PROM_GROUP_MODE", s(mode))],
        );
        ops.send_seq("127.0.0.52", "flood", 30);
        ops.send("127.0.0.53", "rl", 8, 100);
        ops.send_seq("127.0.0.54", "authfail", 2);
        ops.mi.ok("sec_ban", r#"{"ip":"10.7.0.1","seconds":600}"#);
        let st = ops.stats();
        let (status, body) = mi::http(ops.mi.port, "GET", "/metrics", None).unwrap();
        assert_eq!(status, 200, "{body}");
        let (vals, types) = mi::parse_metrics(&body);
        if mode == 0 {
            eprintln!("GET /metrics (group_mode {mode}), rsec lines:");
            for l in body
                .lines()
                .filter(|l| RSEC_STATS.iter().any(|n| l.contains(n)))
                .take(8)
            {
                eprintln!("    {l}");
            }
            eprintln!("    ... ({} samples)", vals.len());
        }
        let want: BTreeMap<&str, f64> = [
            ("requests_checked", 30.0),
            ("pike_blocked", 20.0),
            ("dropped_while_banned", 19.0),
            ("rl_checked", 8.0),
            ("rl_rejected", 3.0),
            ("auth_failures", 2.0),
            ("bans_created", 2.0),
            ("bans_pike", 1.0),
            ("bans_manual", 1.0),
            ("bans_active", 2.0),
            ("decisions", 2.0),
        ]
        .into_iter()
        .collect();
        let mut missing = Vec::new();
        for n in RSEC_STATS {
            let name = format!("{prefix}{n}");
            match vals.get(&name) {
                None => missing.push(name),
                Some(v) => {
                    assert_eq!(
                        *v, st[n] as f64,
                        "{name}: /metrics and get_statistics disagree"
                    );
                    assert_eq!(*v, want.get(n).copied().unwrap_or(0.0), "{name}");
                }
            }
        }
        assert!(
            missing.is_empty(),
            "missing from /metrics (group_mode {mode}): {missing:?}\n{body}"
        );
        eprintln!(
            "group_mode {mode}: all {} rsec statistics as {prefix}<name>, # TYPE {:?}",
            RSEC_STATS.len(),
            types.get(&format!("{prefix}requests_checked"))
        );
    }
}

// ---------------------------------------------------------------------------
// 7. Runtime whitelist changes apply in every worker.
// ---------------------------------------------------------------------------

#[test]
fn whitelist_runtime_changes_apply_everywhere() {
    let env = require!("whitelist_runtime_changes_apply_everywhere");
    let _g = heavy();
    const SRC: &str = "127.0.0.50";
    const DENSITY: usize = 20;
    let dir = TestDir::new("whitelist");
    let ops = Ops::start(
        env,
        &dir,
        "whitelist",
        &[("WORKERS", s(8)), ("PIKE_DENSITY", s(DENSITY))],
    );

    eprintln!("  whitelist add / list:");
    assert_eq!(
        ops.mi
            .show("sec_whitelist_add", r#"{"cidr":"127.0.0.50/32"}"#)
            .unwrap(),
        "OK"
    );
    let wl = ops.mi.show("sec_whitelist_list", "").unwrap();
    let entries: Vec<&str> = mi::array(&wl, "whitelist")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(entries.len(), 1, "{wl}");
    assert!(entries[0].starts_with(SRC), "{wl}");

    // A flood from two senders at once: never banned.
    let a = ops
        .sipp("options.xml", SRC, "flood")
        .calls(150, 500)
        .spawn();
    let b = ops
        .sipp("options.xml", SRC, "flood")
        .calls(150, 500)
        .spawn();
    let (a, b) = (a.wait(), b.wait());
    a.assert_complete();
    b.assert_complete();
    let evs = ops.checks("pike", SRC, 300);
    eprintln!(
        "whitelisted {SRC}: 2x150 OPTIONS at 500/s -> {:?} {:?}, handled by {} of 8 workers",
        a.tally(),
        b.tally(),
        workers(evs.iter())
    );
    assert_eq!(
        a.count("200") + b.count("200"),
        300,
        "{}\n{}",
        a.describe(),
        b.describe()
    );
    assert_eq!(count_r(&evs, "1"), 300);
    assert!(
        workers(evs.iter()) > 1,
        "the flood should have reached several workers"
    );
    assert_eq!(num(&ops.mi.ok("sec_ban_list", ""), "count"), 0);
    let info = ops.mi.ok("sec_ip_info", r#"{"ip":"127.0.0.50"}"#);
    assert_eq!(info["whitelisted"].as_bool(), Some(true), "{info}");

    eprintln!("  ban a whitelisted address:");
    let e = ops
        .mi
        .show("sec_ban", r#"{"ip":"127.0.0.50"}"#)
        .unwrap_err();
    assert_eq!(e.code, 403, "{e:?}");
    assert!(e.message.contains(SRC), "{e:?}");

    eprintln!("  whitelist del:");
    assert_eq!(
        ops.mi
            .show("sec_whitelist_del", r#"{"cidr":"127.0.0.50/32"}"#)
            .unwrap(),
        "OK"
    );
    assert_eq!(
        ops.mi
            .err("sec_whitelist_del", r#"{"cidr":"127.0.0.50/32"}"#)
            .code,
        404
    );
    assert_eq!(
        mi::array(&ops.mi.ok("sec_whitelist_list", ""), "whitelist").len(),
        0
    );

    // Whitelisted requests were never counted: exactly DENSITY pass now.
    let before = evs.len();
    let flood = ops.send(SRC, "flood", 100, 500);
    let evs = ops.checks("pike", SRC, before + 100);
    let mine = &evs[before..];
    eprintln!(
        "after sec_whitelist_del: 100 OPTIONS at 500/s -> {:?}, handled by {} workers",
        flood.tally(),
        workers(mine.iter())
    );
    assert_eq!(
        (flood.count("200"), flood.count("403")),
        (DENSITY, 100 - DENSITY),
        "{}",
        flood.describe()
    );
    let list = ops.mi.ok("sec_ban_list", "");
    assert_eq!(ban_ips(&list), [SRC], "{list}");
    assert_eq!(text(&list, "bans.0.reason"), "pike");
    eprintln!("  sec_ban on a source the flood check banned:");
    ops.mi
        .show("sec_ban", r#"{"ip":"127.0.0.50","seconds":600}"#)
        .unwrap();
    let list = ops.mi.show("sec_ban_list", "").unwrap();
    assert_eq!(ban_ips(&list), [SRC], "still one ban: {list}");

    // Whitelisting again lets the source through at once, ban or no ban.
    ops.mi.ok("sec_whitelist_add", r#"{"cidr":"127.0.0.0/24"}"#);
    let r = ops.send(SRC, "probe", 40, 200);
    assert_eq!(
        r.count("200"),
        40,
        "whitelisted again (a /24 covering it)\n{}",
        r.describe()
    );
}

// ---------------------------------------------------------------------------
// 8. MI calls in a tight loop lose no legitimate SIP request (the latency
//    with and without them is reported).
// ---------------------------------------------------------------------------

/// Steady OPTIONS from `src` every `every` for `dur`, each answered within
/// 1 s or counted as lost; returns the response times in microseconds and
/// the number lost.
fn probe_latency(port: u16, src: &str, every: Duration, dur: Duration) -> (Vec<f64>, usize) {
    let client = OptionsClient::new(src, port, Some("legit"));
    let mut lat = Vec::new();
    let mut lost = 0;
    let t0 = Instant::now();
    let mut pace = Pace::starting(t0, every);
    while t0.elapsed() < dur {
        pace.wait();
        match client.ask(Duration::from_secs(1)) {
            Some(a) if a.code == 200 => lat.push(a.latency.as_secs_f64() * 1e6),
            _ => lost += 1,
        }
    }
    (lat, lost)
}

#[test]
fn mi_under_load_does_not_delay_sip() {
    let env = require!("mi_under_load_does_not_delay_sip");
    let _g = heavy();
    const FLOODERS: [&str; 3] = ["127.0.0.60", "127.0.0.61", "127.0.0.62"];
    const SIPP_LEGIT: &str = "127.0.0.63";
    const PROBE_LEGIT: &str = "127.0.0.64";
    const SECONDS: u32 = 5;
    let dir = TestDir::new("mi_load");
    // Floods of 250/s per source stay under the density: never banned, so
    // every request of theirs goes through the whole flood check.
    let ops = Ops::start(
        env,
        &dir,
        "mi_load",
        &[
            ("WORKERS", s(4)),
            ("PIKE_DENSITY", s(2000)),
            ("PIKE_SAMPLING", s(2)),
        ],
    );
    // 300 bans, so that sec_ban_list has a real list to walk and print.
    for i in 0..300 {
        ops.mi.ok(
            "sec_ban",
            &format!(
                r#"{{"ip":"10.8.{}.{}","seconds":3600}}"#,
                i / 250,
                i % 250 + 1
            ),
        );
    }

    struct Phase {
        sipp_rtt: Vec<f64>,
        probe_us: Vec<f64>,
        mi_calls: u64,
        mi_failed: u64,
        /// Per MI command: the time of each call, in microseconds.
        mi_us: BTreeMap<&'static str, Vec<f64>>,
    }
    let port = ops.os.port;
    let mi_port = ops.mi.port;
    // The MI loop: rsec's list commands, or (as a control for plain CPU
    // competition on this machine) the core's trivial `uptime`.
    const RSEC_CMDS: &[(&str, &str)] = &[("sec_ban_list", ""), ("sec_top", r#"{"n":10}"#)];
    const CORE_CMDS: &[(&str, &str)] = &[("uptime", "")];
    let phase = |name: &str, cmds: &'static [(&'static str, &'static str)]| -> Phase {
        let floods: Vec<_> = FLOODERS
            .iter()
            .map(|src| {
                ops.sipp("options.xml", src, "flood")
                    .calls(250 * SECONDS, 250)
                    .spawn()
            })
            .collect();
        let legit = ops
            .sipp("options_rtt.xml", SIPP_LEGIT, "legit")
            .calls(20 * SECONDS, 20)
            .trace_rtt()
            .spawn();
        let stop = Arc::new(AtomicBool::new(false));
        let calls = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(Mutex::new(Vec::<String>::new()));
        let mi_loop = (!cmds.is_empty()).then(|| {
            let (stop, calls, failed) = (stop.clone(), calls.clone(), failed.clone());
            std::thread::spawn(move || {
                let mi = Mi::new(mi_port);
                let mut lat: BTreeMap<&'static str, Vec<f64>> = BTreeMap::new();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let (m, p) = cmds[i as usize % cmds.len()];
                    let t = Instant::now();
                    match mi.exchange(m, p) {
                        Ok((_, _, j)) if j.get("result").is_some() => {
                            let r = &j["result"];
                            let ok = match m {
                                "sec_ban_list" => r["count"].as_u64() == Some(300),
                                "sec_top" => {
                                    r["window"].as_u64() == Some(2) && r["sources"].is_array()
                                }
                                _ => !r.is_null(),
                            };
                            if !ok {
                                failed.lock().unwrap().push(format!("{m}: unexpected {r}"));
                            }
                        }
                        Ok((_, body, _)) => failed.lock().unwrap().push(format!("{m}: {body}")),
                        Err(e) => failed.lock().unwrap().push(format!("{m}: {e}")),
                    }
                    lat.entry(m)
                        .or_default()
                        .push(t.elapsed().as_secs_f64() * 1e6);
                    calls.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
                lat
            })
        });
        let (probe_us, lost) = probe_latency(
            port,
            PROBE_LEGIT,
            Duration::from_millis(20),
            Duration::from_secs(SECONDS as u64),
        );
        let legit = legit.wait();
        stop.store(true, Ordering::Relaxed);
        let mi_us = mi_loop.map(|h| h.join().unwrap()).unwrap_or_default();
        let floods: Vec<SippResult> = floods.into_iter().map(|f| f.wait()).collect();
        let failed = failed.lock().unwrap().clone();
        let flood_ok: usize = floods.iter().map(|f| f.count("200")).sum();
        eprintln!(
            "{name}: floods {}x{} at 250/s -> {flood_ok} answered 200; legit sipp {:?} ({} missing); probe {} answered, {lost} lost; MI calls {} ({} failed)",
            FLOODERS.len(),
            250 * SECONDS,
            legit.tally(),
            legit.missing(),
            probe_us.len(),
            calls.load(Ordering::Relaxed),
            failed.len()
        );
        assert_eq!(
            legit.count("200"),
            20 * SECONDS as usize,
            "legit sipp lost requests ({name})\n{}",
            legit.describe()
        );
        assert_eq!(lost, 0, "legit probe lost requests ({name})");
        assert!(
            failed.is_empty(),
            "MI calls failed ({name}): {:?}",
            &failed[..failed.len().min(5)]
        );
        Phase {
            sipp_rtt: legit.rtt_ms(),
            probe_us,
            mi_calls: calls.load(Ordering::Relaxed),
            mi_failed: failed.len() as u64,
            mi_us,
        }
    };

    let quiet = phase("without MI", &[]);
    let busy = phase("with an rsec MI loop", RSEC_CMDS);
    let control = phase("with a core uptime MI loop", CORE_CMDS);
    assert!(busy.mi_calls > 0 && busy.mi_failed == 0);
    assert!(control.mi_calls > 0 && control.mi_failed == 0);
    assert_eq!(
        num(&ops.mi.ok("sec_ban_list", ""), "count"),
        300,
        "the floods were never banned"
    );

    for (name, p) in [
        ("without MI", &quiet),
        ("with sec_ban_list/sec_top loop", &busy),
        ("with uptime loop", &control),
    ] {
        let (p50, p99, max, mean) = percentiles(&p.probe_us);
        let (s50, s99, smax, smean) = percentiles(&p.sipp_rtt);
        eprintln!(
            "legit latency {name}: probe (us) p50 {p50:.0} p99 {p99:.0} max {max:.0} mean {mean:.0} over {}; \
             sipp rtd (ms, 1 ms resolution) p50 {s50} p99 {s99} max {smax} mean {smean:.2} over {}",
            p.probe_us.len(),
            p.sipp_rtt.len()
        );
    }
    for p in [&busy, &control] {
        eprintln!(
            "MI loop: {} calls in {SECONDS} s ({:.0}/s), one at a time:",
            p.mi_calls,
            p.mi_calls as f64 / SECONDS as f64
        );
        for (m, v) in &p.mi_us {
            let (m50, m99, mmax, _) = percentiles(v);
            eprintln!(
                "    {m}: {} calls, per call (us) p50 {m50:.0} p99 {m99:.0} max {mmax:.0}",
                v.len()
            );
        }
    }
}

// ---------------------------------------------------------------------------
// 9. Concurrent floods: every refusal is counted once, on the ban and in the
//    statistics, whichever worker refused it. A request that finds no ban,
//    counts over the threshold and then finds that another worker has just
//    banned the source is refused (-1) like any banned request and must be
//    counted like one (ban hits, dropped_while_banned).
// ---------------------------------------------------------------------------

#[test]
fn refusals_are_counted_exactly_under_concurrency() {
    let env = require!("refusals_are_counted_exactly_under_concurrency");
    let _g = heavy();
    const DENSITY: usize = 5;
    const SOURCES: u32 = 64;
    const SENDERS: u32 = 3; // per source, at once
    const EACH: u32 = 20; // per sender
    let dir = TestDir::new("concurrent_refusals");
    let ops = Ops::start(
        env,
        &dir,
        "concurrent_refusals",
        &[("WORKERS", s(8)), ("PIKE_DENSITY", s(DENSITY))],
    );
    let srcs: Vec<String> = (1..=SOURCES).map(|i| format!("127.0.1.{i}")).collect();
    // Several sources at a time, each from three senders at once: requests
    // crossing the threshold meet in different workers. (A race, so each
    // source is one try; 64 tries catch a miscount nearly always.)
    for chunk in srcs.chunks(4) {
        let runs: Vec<_> = chunk
            .iter()
            .flat_map(|src| (0..SENDERS).map(move |_| src))
            .map(|src| {
                ops.sipp("options.xml", src, "flood")
                    .calls(EACH, 3000)
                    .spawn()
            })
            .collect();
        for r in runs {
            r.wait().assert_complete();
        }
    }
    let total = (SOURCES * SENDERS * EACH) as usize;
    let evs = ops.os.wait_events(total, |e| e.get("check") == "pike");
    assert_eq!(evs.len(), total);
    let list = ops.mi.ok("sec_ban_list", "");
    assert_eq!(num(&list, "count"), SOURCES as u64, "{list}");
    let mut wrong = Vec::new();
    let mut refused_banned = 0;
    for src in &srcs {
        let mine: Vec<Event> = evs
            .iter()
            .filter(|e| e.get("src") == src)
            .cloned()
            .collect();
        let t = tally(mine.iter(), "r");
        let minus1 = count_r(&mine, "-1");
        refused_banned += minus1;
        let b = mi::array(&list, "bans")
            .iter()
            .find(|b| b["ip"].as_str() == Some(src))
            .expect("banned");
        let hits = num(b, "hits") as usize;
        let info = ops.mi.ok("sec_ip_info", &format!(r#"{{"ip":"{src}"}}"#));
        let counted = num(&info, "pike.requests") as usize;
        // (pike.requests is shown, not checked: a request racing the ban
        // may be counted in the window before it is refused.)
        if t.get("1") != Some(&DENSITY) || t.get("-2") != Some(&1) || hits != minus1 {
            wrong.push(format!(
                "{src}: decisions {t:?} over {} workers; ban hits {hits} (refused as banned: {minus1}); pike.requests {counted}",
                workers(mine.iter()),
            ));
        }
    }
    let st = ops.stats();
    eprintln!(
        "{SOURCES} sources x {SENDERS} senders x {EACH} at 3000/s, density {DENSITY}: {total} requests, {} refused as banned, \
         dropped_while_banned {}, pike_blocked {}; sources with inexact accounting: {}",
        refused_banned,
        st["dropped_while_banned"],
        st["pike_blocked"],
        wrong.len()
    );
    for w in &wrong {
        eprintln!("    {w}");
    }
    assert!(
        wrong.is_empty() && st["dropped_while_banned"] as usize == refused_banned,
        "requests refused (-1) because of a ban another worker had just created are not counted as ban \
         hits nor in dropped_while_banned ({} vs {refused_banned} refused with -1):\n{}",
        st["dropped_while_banned"],
        wrong.join("\n")
    );
    assert_eq!(
        st["pike_blocked"] as usize,
        total - SOURCES as usize * DENSITY
    );
    assert_eq!(st["bans_pike"], SOURCES as u64);
}

// ---------------------------------------------------------------------------
// 10. A distributed flood from thousands of sources, far more than the
//     source table holds: the table evicts, memory stays fixed, and a real
//     flooder among them is still banned at exactly the threshold.
// ---------------------------------------------------------------------------

/// What the raw-UDP distributed flood saw.
#[derive(Default)]
struct DistFlood {
    /// Sources that sent all their requests.
    sources: usize,
    sent: usize,
    /// Replies by status code.
    answers: BTreeMap<String, usize>,
    /// Requests without a reply within 2 s.
    lost: usize,
    /// Replies that matched no request of their socket, or came twice.
    unexpected: Vec<String>,
    elapsed: Duration,
}

/// `per_source` OPTIONS from each of `sources` to 127.0.0.1:`port`, by
/// `threads` threads, paced to `rate_pps` packets per second in all.
///
/// Not sipp: sipp binds one local address per process (`-i`), so thousands
/// of source addresses would take thousands of sipp processes. Here each
/// source is one [`OptionsClient`] bound to its own 127.1.x.y:0 (any 127/8
/// address is local on Linux), which sends its requests back to back, then
/// collects their replies (each matched by its Call-ID) for at most 2 s and
/// is closed. Each thread waits for one source's replies before the next, so
/// at most `threads * per_source` requests are in flight: the server is
/// never pushed past what it answers, and no request is lost to a full
/// socket buffer. `progress` counts the sources whose every request was
/// answered (so the server has counted them all); nothing is sent after
/// `deadline`.
fn distributed_flood(
    port: u16,
    sources: &[std::net::Ipv4Addr],
    per_source: usize,
    rate_pps: u32,
    threads: usize,
    progress: &AtomicU64,
    deadline: Instant,
) -> DistFlood {
    let t0 = Instant::now();
    // One source's requests per this interval, in each thread.
    let every = Duration::from_secs_f64(per_source as f64 * threads as f64 / rate_pps as f64);
    let parts: Vec<DistFlood> = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                sc.spawn(move || {
                    let mut d = DistFlood::default();
                    let mut pace = Pace::starting(t0 + every * t as u32 / threads as u32, every);
                    for ip in sources.iter().skip(t).step_by(threads) {
                        pace.wait();
                        if Instant::now() > deadline {
                            break;
                        }
                        let client = OptionsClient::new(&ip.to_string(), port, Some("dist"));
                        for _ in 0..per_source {
                            client.send();
                            d.sent += 1;
                        }
                        let mut answered = vec![false; per_source];
                        let until = Instant::now() + Duration::from_secs(2);
                        while answered.iter().any(|a| !a) {
                            let Some(left) = until.checked_duration_since(Instant::now()) else {
                                break;
                            };
                            let Some(got) = client.recv(left) else { break };
                            match got {
                                Ok(a) if !answered[a.n as usize] => {
                                    answered[a.n as usize] = true;
                                    *d.answers.entry(a.code.to_string()).or_insert(0) += 1;
                                }
                                Ok(a) => d.unexpected.push(format!(
                                    "{ip}: a second answer to request {}: {}",
                                    a.n, a.code
                                )),
                                Err(line) => d.unexpected.push(format!("{ip}: {line}")),
                            }
                        }
                        let lost = answered.iter().filter(|a| !**a).count();
                        d.lost += lost;
                        d.sources += 1;
                        if lost == 0 {
                            progress.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    d
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut all = DistFlood::default();
    for p in parts {
        all.sources += p.sources;
        all.sent += p.sent;
        all.lost += p.lost;
        all.unexpected.extend(p.unexpected);
        for (k, v) in p.answers {
            *all.answers.entry(k).or_insert(0) += v;
        }
    }
    all.elapsed = t0.elapsed();
    all
}

/// (pid, VmRSS, RssAnon, RssShmem) in KiB of every SIP worker, found with
/// the core's MI `ps`; None when that or /proc is unavailable.
fn worker_rss(mi: &Mi) -> Option<Vec<(u64, u64, u64, u64)>> {
    let ps = mi.call("ps", "").ok()?;
    let mut out = Vec::new();
    for p in ps["Processes"].as_array()? {
        let (Some(pid), Some(ty)) = (p["PID"].as_u64(), p["Type"].as_str()) else {
            return None;
        };
        if !ty.starts_with("SIP receiver udp:") {
            continue;
        }
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let kb = |k: &str| {
            status
                .lines()
                .find(|l| l.starts_with(k))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        };
        out.push((pid, kb("VmRSS:")?, kb("RssAnon:")?, kb("RssShmem:")?));
    }
    (!out.is_empty()).then_some(out)
}

#[test]
fn distributed_flood_from_thousands_of_sources_stays_bounded() {
    let env = require!("distributed_flood_from_thousands_of_sources_stays_bounded");
    let _g = heavy();
    const MAX_TRACKED: u64 = 1024;
    const MAX_BANS: u64 = 16;
    // The hosts table holds the sources and, beside them, room for
    // max_bans host bans: all of it is free for sources while unused.
    const HOSTS: u64 = MAX_TRACKED + MAX_BANS;
    const DENSITY: usize = 20;
    const SOURCES: usize = 5000;
    const PER_SOURCE: usize = 3;
    const RATE_PPS: u32 = 3000;
    const ATTACKER: &str = "127.2.0.1";
    const LEGIT: &str = "127.2.0.2";
    const AFTER: &str = "127.2.0.3";
    const ATTACK_N: u32 = 600;
    const LEGIT_N: u32 = 20;
    let dir = TestDir::new("distributed_flood");
    let ops = Ops::start_cfg(
        env,
        &dir,
        "distributed_flood",
        OPS_CAPACITY_CFG,
        &[
            ("WORKERS", s(4)),
            ("MAX_TRACKED_IPS", s(MAX_TRACKED)),
            ("MAX_BANS", s(MAX_BANS)),
            ("PIKE_DENSITY", s(DENSITY)),
            ("PIKE_SAMPLING", s(2)),
        ],
    );
    let base = ops.stats();
    assert!(
        RSEC_STATS.iter().all(|n| base[*n] == 0),
        "statistics at start: {base:?}"
    );
    let rss_start = worker_rss(&ops.mi);

    // 5000 sources 127.1.0.1 ... 127.1.19.250, 3 requests each: each source
    // stays far under the density, all together they are ~5x the table.
    let srcs: Vec<std::net::Ipv4Addr> = (0..SOURCES)
        .map(|i| std::net::Ipv4Addr::new(127, 1, (i / 250) as u8, (i % 250 + 1) as u8))
        .collect();
    let progress = AtomicU64::new(0);
    let port = ops.os.port;
    let deadline = Instant::now() + Duration::from_secs(60);
    let (flood, attack, legit, mid_sources, mid_stats, rss_mid, at_attack_end) =
        std::thread::scope(|sc| {
            let flood = sc.spawn(|| {
                distributed_flood(port, &srcs, PER_SOURCE, RATE_PPS, 4, &progress, deadline)
            });
            // The flooder and the legitimate source start once a third of the
            // sources are through: the table is full and evicting by then.
            let t0 = Instant::now();
            while progress.load(Ordering::Relaxed) < SOURCES as u64 / 3 && !flood.is_finished() {
                assert!(
                    t0.elapsed() < Duration::from_secs(60),
                    "the distributed flood does not progress"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
            let mid_sources = progress.load(Ordering::Relaxed);
            let mid_stats = ops.stats();
            let rss_mid = worker_rss(&ops.mi);
            let attack = ops
                .sipp("options.xml", ATTACKER, "flood")
                .calls(ATTACK_N, 300)
                .spawn();
            let legit = ops
                .sipp("options.xml", LEGIT, "legit")
                .calls(LEGIT_N, 5)
                .spawn();
            let attack = attack.wait();
            let at_attack_end = progress.load(Ordering::Relaxed);
            let legit = legit.wait();
            let flood = flood.join().unwrap();
            (
                flood,
                attack,
                legit,
                mid_sources,
                mid_stats,
                rss_mid,
                at_attack_end,
            )
        });
    let st = ops.stats();
    let answered: usize = flood.answers.values().sum();
    let legit_ok = legit.count("200");
    eprintln!(
        "distributed flood: {} distinct sources (127.1.0.1-127.1.19.250), {} packets in {:.1} s ({:.0}/s) -> {:?}, {} lost, {} unexpected",
        flood.sources,
        flood.sent,
        flood.elapsed.as_secs_f64(),
        flood.sent as f64 / flood.elapsed.as_secs_f64(),
        flood.answers,
        flood.lost,
        flood.unexpected.len()
    );
    eprintln!(
        "hosts table of {HOSTS}: table_evictions {} at the end, {} when the flooder started \
         (after {mid_sources} sources); table_full {}",
        st["table_evictions"], mid_stats["table_evictions"], st["table_full"]
    );
    eprintln!(
        "flooder {ATTACKER}: {ATTACK_N} OPTIONS at 300/s -> {:?}: {} answered 200 before the ban (density {DENSITY}); \
         the distributed flood had done {at_attack_end} of {SOURCES} sources when it ended",
        attack.tally(),
        attack.count("200")
    );
    eprintln!(
        "legit {LEGIT}: {LEGIT_N} OPTIONS at 5/s -> {:?}: {:.1}% success",
        legit.tally(),
        100.0 * legit_ok as f64 / LEGIT_N as f64
    );

    // Every spoofed request answered, and answered 200: under the density,
    // none of the 5000 is ever banned.
    assert_eq!(
        (flood.sources, flood.sent),
        (SOURCES, SOURCES * PER_SOURCE),
        "the flood was cut short"
    );
    assert!(
        flood.unexpected.is_empty(),
        "unexpected replies: {:?}",
        &flood.unexpected[..flood.unexpected.len().min(5)]
    );
    assert_eq!(
        flood.lost, 0,
        "spoofed requests without a reply: {:?}",
        flood.answers
    );
    assert_eq!(
        flood.answers.get("200"),
        Some(&(SOURCES * PER_SOURCE)),
        "{:?}",
        flood.answers
    );
    // The flooder: exactly the density passes, the rest is refused, though
    // thousands of other sources churn the table around its entry.
    attack.assert_complete();
    assert_eq!(
        (attack.count("200"), attack.count("403")),
        (DENSITY, ATTACK_N as usize - DENSITY),
        "{}",
        attack.describe()
    );
    legit.assert_complete();
    assert_eq!(legit_ok, LEGIT_N as usize, "{}", legit.describe());

    // The server's side: one decision per request, the 127.1.* ones all "1".
    let total = answered + ATTACK_N as usize + LEGIT_N as usize;
    let evs = ops.os.wait_events(total, |e| e.get("check") == "pike");
    assert_eq!(evs.len(), total, "one decision line per answered request");
    let spoofed: Vec<&Event> = evs
        .iter()
        .filter(|e| e.get("src").starts_with("127.1."))
        .collect();
    let distinct: std::collections::BTreeSet<&str> = spoofed.iter().map(|e| e.get("src")).collect();
    assert_eq!(
        (spoofed.len(), distinct.len()),
        (SOURCES * PER_SOURCE, SOURCES)
    );
    assert_eq!(
        tally(spoofed.iter().copied(), "r"),
        BTreeMap::from([("1".to_string(), SOURCES * PER_SOURCE)])
    );
    let mine: Vec<Event> = evs
        .iter()
        .filter(|e| e.get("src") == ATTACKER)
        .cloned()
        .collect();
    assert_eq!(
        (count_r(&mine, "1"), count_r(&mine, "-2")),
        (DENSITY, 1),
        "{:?}",
        tally(mine.iter(), "r")
    );

    // One ban, the flooder's, and it outlives the churn.
    let list = ops.mi.ok("sec_ban_list", "");
    assert_eq!(num(&list, "count"), 1, "{list}");
    assert_eq!(ban_ips(&list), [ATTACKER], "{list}");
    assert_eq!(text(&list, "bans.0.reason"), "pike");
    assert_eq!(ops.events("ban", &[]).len(), 1, "one E_SEC_BAN");

    // Statistics: every answered request was checked once; the table hit
    // its capacity and evicted (no entry lapses within the test: they are
    // kept for the 60 s auth window, so every source beyond the capacity
    // took a live entry's slot), and nothing was refused for a full table.
    assert_eq!(st["requests_checked"] as usize, total, "{st:?}");
    assert_eq!(st["pike_blocked"] as usize, ATTACK_N as usize - DENSITY);
    assert_eq!(
        st["dropped_while_banned"] as usize,
        ATTACK_N as usize - DENSITY - 1
    );
    assert_eq!(
        (st["bans_created"], st["bans_pike"], st["bans_active"]),
        (1, 1, 1),
        "{st:?}"
    );
    assert!(
        mid_stats["table_evictions"] >= mid_sources.saturating_sub(HOSTS) && mid_stats["table_evictions"] > 0,
        "the table was not evicting yet when the flooder started: {mid_stats:?} after {mid_sources} sources"
    );
    assert!(
        st["table_evictions"] >= (SOURCES as u64 + 2) - HOSTS,
        "{st:?}"
    );
    assert!(st["table_evictions"] <= st["requests_checked"], "{st:?}");
    assert_eq!((st["table_full"], st["lock_recoveries"]), (0, 0), "{st:?}");

    // OpenSIPS still answers: a fresh source passes, the flooder is refused.
    let r = ops.send(AFTER, "probe", 10, 100);
    assert_eq!(r.count("200"), 10, "{}", r.describe());
    let r = ops.send(ATTACKER, "probe", 5, 100);
    assert_eq!(r.count("403"), 5, "{}", r.describe());
    assert_eq!(ops.stats()["requests_checked"] as usize, total + 15);
    assert!(
        ops.os
            .log_lines_with(&["rsec"])
            .iter()
            .all(|l| !l.contains("panic")),
        "{}",
        ops.os.tail(40)
    );

    // Memory. The module's state is one shared mapping of fixed size made
    // at start-up; the workers' RSS grows as they first touch its pages (the
    // once-a-second sweep, run by whichever worker OpenSIPS hands the timer
    // job to, walks all of it), so VmRSS and RssShmem are only reported.
    // Private memory (RssAnon: pkg memory, the Rust heap) must not grow
    // while 3,300 more sources churn a table already at capacity.
    match (rss_start, rss_mid, worker_rss(&ops.mi)) {
        (Some(a), Some(b), Some(c)) => {
            let sum = |v: &[(u64, u64, u64, u64)]| {
                v.iter()
                    .fold((0, 0, 0), |s, x| (s.0 + x.1, s.1 + x.2, s.2 + x.3))
            };
            eprintln!(
                "worker RSS in KiB, sum of {} workers (VmRSS, RssAnon, RssShmem): at start {:?}, when the flooder started {:?}, at the end {:?}",
                c.len(),
                sum(&a),
                sum(&b),
                sum(&c)
            );
            let pids = |v: &[(u64, u64, u64, u64)]| v.iter().map(|x| x.0).collect::<Vec<_>>();
            assert_eq!(
                pids(&b),
                pids(&c),
                "the SIP workers changed during the flood"
            );
            for (mid, end) in b.iter().zip(&c) {
                assert!(
                    end.2 <= mid.2 + 256,
                    "worker {}: private memory grew from {} to {} KiB during the flood",
                    end.0,
                    mid.2,
                    end.2
                );
            }
        }
        _ => eprintln!("worker RSS: not available (MI ps or /proc)"),
    }
}

// ---------------------------------------------------------------------------
// sec_ban_list pages: a long list in bounded replies, each ban exactly once.
// ---------------------------------------------------------------------------

/// Follows `next_cursor` from `first` (the params of the first page, with
/// `limit` and, for the next pages, `cursor` added) until `more` is false;
/// the sizes of the pages and every address listed.
fn ban_pages(mi: &Mi, ip: Option<&str>, limit: u64) -> (Vec<usize>, Vec<String>) {
    let (mut sizes, mut all) = (Vec::new(), Vec::new());
    let mut cursor = 0;
    loop {
        let filter = ip.map(|i| format!(r#""ip":"{i}","#)).unwrap_or_default();
        let page = mi.ok(
            "sec_ban_list",
            &format!(r#"{{{filter}"cursor":{cursor},"limit":{limit}}}"#),
        );
        let ips = ban_ips(&page);
        assert_eq!(num(&page, "count") as usize, ips.len(), "{page}");
        sizes.push(ips.len());
        all.extend(ips);
        match page["more"].as_bool() {
            Some(true) => {
                let next = num(&page, "next_cursor");
                assert!(next > cursor, "cursor {cursor} -> {next}");
                cursor = next;
            }
            Some(false) => {
                assert!(page.get("next_cursor").is_none(), "{page}");
                return (sizes, all);
            }
            None => panic!("no boolean 'more' in {page}"),
        }
        assert!(sizes.len() < 10_000, "paging does not end");
    }
}

#[test]
fn mi_ban_list_pages_list_every_ban_once() {
    let env = require!("mi_ban_list_pages_list_every_ban_once");
    let _g = heavy();
    let dir = TestDir::new("mi_ban_pages");
    let ops = Ops::start(env, &dir, "mi_ban_pages", &[]);
    const N: usize = 2500;
    let mut expected: Vec<String> = (0..N)
        .map(|i| format!("10.20.{}.{}", i / 250, i % 250 + 1))
        .collect();
    let t0 = Instant::now();
    for ip in &expected {
        ops.mi
            .ok("sec_ban", &format!(r#"{{"ip":"{ip}","seconds":3600}}"#));
    }
    eprintln!("{N} bans over MI in {:.1} s", t0.elapsed().as_secs_f64());
    expected.sort();

    // Without paging parameters: every ban, as before (N is under the
    // default limit of 10,000), oldest first, and nothing more to come.
    let all = ops.mi.ok("sec_ban_list", "");
    assert_eq!(num(&all, "count") as usize, N);
    assert_eq!(all["more"], Value::Bool(false), "{}", all["more"]);
    let created: Vec<u64> = mi::array(&all, "bans")
        .iter()
        .map(|b| num(b, "created"))
        .collect();
    assert!(created.windows(2).all(|w| w[0] <= w[1]), "not oldest first");

    // Pages of 1000: three, every ban exactly once.
    let (sizes, mut listed) = ban_pages(&ops.mi, None, 1000);
    assert_eq!(sizes, vec![1000, 1000, 500]);
    listed.sort();
    assert_eq!(listed, expected, "pages of 1000 do not list every ban once");

    // Pages of 7 stop inside stripes; still every ban exactly once.
    let (sizes, mut listed) = ban_pages(&ops.mi, None, 7);
    assert_eq!(sizes.iter().sum::<usize>(), N);
    assert_eq!(sizes.len(), N.div_ceil(7), "{sizes:?}");
    listed.sort();
    assert_eq!(listed, expected, "pages of 7 do not list every ban once");

    // The filter pages too: 10.20.1.0/24 holds 250 of the bans.
    let (sizes, mut listed) = ban_pages(&ops.mi, Some("10.20.1.0/24"), 100);
    assert_eq!(sizes, vec![100, 100, 50]);
    listed.sort();
    let in_24: Vec<String> = expected
        .iter()
        .filter(|i| i.starts_with("10.20.1."))
        .cloned()
        .collect();
    assert_eq!(listed, in_24);

    // One short page as an operator sees it (for the README).
    let shown = ops
        .mi
        .show(
            "sec_ban_list",
            r#"{"ip":"10.20.0.0/24","cursor":0,"limit":2}"#,
        )
        .unwrap();
    assert_eq!(
        (num(&shown, "count"), &shown["more"]),
        (2, &Value::Bool(true))
    );
    let next = num(&shown, "next_cursor");
    ops.mi
        .show(
            "sec_ban_list",
            &format!(r#"{{"ip":"10.20.0.0/24","cursor":{next},"limit":2}}"#),
        )
        .unwrap();

    // Positional: (ip) as before, (cursor, limit), (ip, cursor, limit).
    let one = ops.mi.ok("sec_ban_list", r#"["10.20.0.1"]"#);
    assert_eq!(ban_ips(&one), vec!["10.20.0.1"]);
    let named = ops.mi.ok("sec_ban_list", r#"{"cursor":0,"limit":10}"#);
    let positional = ops.mi.ok("sec_ban_list", "[0, 10]");
    assert_eq!(ban_ips(&named), ban_ips(&positional));
    assert_eq!(named["next_cursor"], positional["next_cursor"]);
    let filtered = ops.mi.ok("sec_ban_list", r#"["10.20.2.0/24", 0, 300]"#);
    assert_eq!(num(&filtered, "count"), 250);

    // Bad values get a 400 naming the parameter; lone paging parameters
    // match no form of the command (they go together, like dlg_list's).
    let cases: &[(&str, i64, &str)] = &[
        (r#"{"cursor":0,"limit":0}"#, 400, "limit"),
        (r#"{"cursor":0,"limit":10001}"#, 400, "limit"),
        (r#"{"cursor":0,"limit":-5}"#, 400, "limit"),
        (r#"{"cursor":0,"limit":"many"}"#, 400, "limit"),
        (r#"{"cursor":0,"limit":[10]}"#, 400, "limit"),
        (r#"{"cursor":0,"limit":null}"#, 400, "limit"),
        (r#"{"cursor":-1,"limit":10}"#, 400, "cursor"),
        (r#"{"cursor":"next","limit":10}"#, 400, "cursor"),
        (r#"{"cursor":"2147483648","limit":10}"#, 400, "cursor"),
        (r#"{"cursor":{},"limit":10}"#, 400, "cursor"),
        (r#"{"cursor":"1.5","limit":10}"#, 400, "cursor"),
        (r#"{"ip":"10.20.0.0/33","cursor":0,"limit":10}"#, 400, "ip"),
        (r#"{"limit":10}"#, -32602, "Invalid params"),
        (r#"{"cursor":0}"#, -32602, "Invalid params"),
    ];
    let mut failures = Vec::new();
    for (params, code, needle) in cases {
        match ops.mi.call("sec_ban_list", params) {
            Ok(r) => failures.push(format!("{params}: succeeded with {}", r["count"])),
            Err(MiError { code: c, message }) => {
                if c != *code || !message.contains(needle) {
                    failures.push(format!(
                        "{params}: got {c} {message:?}, want {code} containing {needle:?}"
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // A cursor past the end of the table is an empty last page.
    let past = ops
        .mi
        .ok("sec_ban_list", r#"{"cursor":2147483647,"limit":10}"#);
    assert_eq!(
        (num(&past, "count"), &past["more"]),
        (0, &Value::Bool(false))
    );
}
