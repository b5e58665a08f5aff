//! Profiles, tenants, dry run, "why", and replay, inside a real OpenSIPS
//! (tests/cfg/operators.cfg), driven by sipp and the tests' own UDP client
//! from loopback addresses:
//!
//! * a trunk (profile "trunk" by its prefix) sends 300 requests/s and is
//!   never refused, while a phone flooding at 50/s under the default
//!   profile is banned;
//! * a tenant's whitelist entry does not whitelist the same address for
//!   another tenant;
//! * dry run lets a flood through while counting, logging and raising the
//!   would-be ban;
//! * `sec_explain` gives the rule and numbers of a real ban, the same as
//!   its log line; per-tenant statistics appear in get_statistics;
//! * replay: the tool, on a capture of the traffic the test sent, bans
//!   exactly the sources the live OpenSIPS banned, by the same rule, at
//!   the same request count, within one sub-window of time.
//!
//! Needs OpenSIPS (httpd, mi_http, event_routing) and sipp; without them
//! each test skips with one line.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use etherparse::PacketBuilder;
use serde_json::Value;

use crate::replay::{write_pcap, Link, Pkt, BIN};
use crate::support::mi::{array, Mi};
use crate::support::opensips::{self, heavy, s, Env, Event, OpenSips, TestDir};
use crate::support::sipp::Sipp;

const CFG: &str = include_str!("../cfg/operators.cfg");

macro_rules! require {
    ($test:literal, $sipp:expr) => {
        match opensips::env($test, $sipp) {
            Some(e) => e,
            None => return,
        }
    };
}

fn start(env: &Env, dir: &TestDir, name: &str, extra: &str) -> (OpenSips, Mi) {
    let vars = vec![("WORKERS", s(2)), ("EXTRA", extra.to_owned())];
    let os = OpenSips::start_with_http(env, dir, name, CFG, &vars);
    let mi = Mi::new(os.http_port.unwrap());
    mi.wait_ready(Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("mi_http does not answer: {e}\n{}", os.tail(40)));
    (os, mi)
}

/// A stateless OPTIONS from `src` to `sip:<user>@<host>`.
fn options_text(src: &str, lport: u16, port: u16, user: &str, host: &str, n: u64) -> String {
    let tag = format!("o{}-{lport}-{n}", std::process::id());
    format!(
        "OPTIONS sip:{user}@{host}:{port} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {src}:{lport};branch=z9hG4bK-{tag}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:rsec-test@{src}:{lport}>;tag={tag}\r\n\
         To: <sip:{user}@{host}:{port}>\r\n\
         Call-ID: {tag}@{src}\r\n\
         CSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

/// `n` OPTIONS from `src` to `sip:<user>@<host>`, each waiting for its
/// answer; the statuses.
fn ask(os: &OpenSips, src: &str, user: &str, host: &str, n: u64) -> Vec<u16> {
    let sock = UdpSocket::bind((src, 0)).unwrap_or_else(|e| panic!("bind {src}: {e}"));
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let lport = sock.local_addr().unwrap().port();
    (0..n)
        .map(|k| {
            let msg = options_text(src, lport, os.port, user, host, k);
            sock.send_to(msg.as_bytes(), ("127.0.0.1", os.port))
                .unwrap();
            let mut buf = [0u8; 4096];
            let n = sock
                .recv(&mut buf)
                .unwrap_or_else(|e| panic!("no answer from {src}: {e}\n{}", os.tail(30)));
            let text = String::from_utf8_lossy(&buf[..n]);
            text.get(8..11)
                .and_then(|c| c.parse().ok())
                .unwrap_or_else(|| panic!("not a status line: {text}"))
        })
        .collect()
}

fn ban_events(os: &OpenSips) -> Vec<Event> {
    os.events()
        .into_iter()
        .filter(|e| e.get("ev") == "ban")
        .collect()
}

#[test]
fn a_trunk_profile_passes_300_per_second_while_the_default_bans_a_phone_at_50() {
    let env = require!(
        "a_trunk_profile_passes_300_per_second_while_the_default_bans_a_phone_at_50",
        true
    );
    let _g = heavy();
    let dir = TestDir::new("operators_trunk");
    let (os, mi) = start(env, &dir, "trunk", "");
    // 4 s of each, at once: the trunk's 600 requests per 2 s are within
    // its 1000; the phone's 100 per 2 s are over the default 30.
    let trunk = Sipp::new(env, &dir, "trunk", "request.xml", os.port)
        .from("127.0.50.1")
        .service("trunk")
        .key("ua", "carrier-sbc")
        .key("from", "trunk")
        .calls(1200, 300)
        .spawn();
    let phone = Sipp::new(env, &dir, "phone", "request.xml", os.port)
        .from("127.0.51.1")
        .service("phone")
        .key("ua", "phone")
        .key("from", "phone")
        .calls(200, 50)
        .recv_timeout_ms(1000)
        .spawn();
    let (trunk, phone) = (trunk.wait(), phone.wait());
    assert_eq!(
        trunk.count("200"),
        1200,
        "every trunk request passes: {}",
        trunk.describe()
    );
    assert_eq!(trunk.count("403"), 0, "{}", trunk.describe());
    assert!(phone.count("403") > 100, "{}", phone.describe());
    assert_eq!(
        phone.count("200"),
        30,
        "the phone's first 30 pass: {}",
        phone.describe()
    );
    let bans = os.wait_events(1, |e| e.is(&[("ev", "ban"), ("ip", "127.0.51.1")]));
    assert_eq!(bans[0].get("profile"), "default");
    assert_eq!(bans[0].get("reason"), "pike");
    assert!(
        !ban_events(&os).iter().any(|e| e.get("ip") == "127.0.50.1"),
        "the trunk was banned"
    );
    let ex = mi.ok("sec_explain", r#"{"ip":"127.0.50.1"}"#);
    assert_eq!(ex["why"], "not blocked", "{ex}");
    let counts = array(&ex, "counts");
    let trunk_count = counts
        .iter()
        .find(|c| c["profile"] == "trunk")
        .unwrap_or_else(|| panic!("no trunk counts in {ex}"));
    assert_eq!(trunk_count["pike_density"], 1000, "{ex}");
}

#[test]
fn a_tenants_whitelist_entry_does_not_whitelist_the_address_for_another_tenant() {
    let env = require!(
        "a_tenants_whitelist_entry_does_not_whitelist_the_address_for_another_tenant",
        false
    );
    let _g = heavy();
    let dir = TestDir::new("operators_tenant_wl");
    let (os, mi) = start(env, &dir, "tenant_wl", "");
    let src = "127.0.60.9";
    let a = ask(&os, src, "x", "a.example", 60);
    assert!(
        a.iter().all(|&c| c == 200),
        "whitelisted for a.example: {a:?}"
    );
    let b = ask(&os, src, "x", "b.example", 32);
    assert_eq!(&b[..30], &[200; 30][..], "{b:?}");
    assert_eq!(b[30], 403, "banned for b.example's traffic: {b:?}");
    let ev = os.wait_events(1, |e| e.is(&[("ev", "ban"), ("ip", src)]));
    assert_eq!(ev[0].get("request_tenant"), "b.example");
    // The ban is global (the default profile): a.example's whitelist
    // still lets the address through for a.example.
    assert_eq!(ask(&os, src, "x", "a.example", 1), [200]);
    let wl = mi.ok("sec_whitelist_list", "");
    let tenants = array(&wl, "tenants");
    assert_eq!(tenants.len(), 1, "{wl}");
    assert_eq!(tenants[0]["tenant"], "a.example");
    assert_eq!(tenants[0]["cidr"], src);
    // Per-tenant statistics, once the timer registered them.
    let (stats, _) = opensips::poll(Duration::from_secs(5), Duration::from_millis(100), || {
        let r = mi.ok("get_statistics", r#"{"statistics":["rsec_tenant:"]}"#);
        let get = |k: &str| r[k].as_u64();
        match (
            get("rsec_tenant:checked-a.example"),
            get("rsec_tenant:bans-b.example"),
        ) {
            (Some(a), Some(b)) => Some((a, b, r)),
            _ => None,
        }
    })
    .unwrap_or_else(|| panic!("no per-tenant statistics\n{}", os.tail(30)));
    assert_eq!(stats.0, 61, "{}", stats.2);
    assert_eq!(stats.1, 1, "{}", stats.2);
    let t = mi.ok("sec_tenant_list", "");
    assert_eq!(array(&t, "tenants").len(), 2, "{t}");
}

#[test]
fn dry_run_lets_a_flood_through_while_counting_logging_and_raising_the_would_be_ban() {
    let env = require!(
        "dry_run_lets_a_flood_through_while_counting_logging_and_raising_the_would_be_ban",
        false
    );
    let _g = heavy();
    let dir = TestDir::new("operators_dry_run");
    let (os, mi) = start(env, &dir, "dry", r#"modparam("rsec", "dry_run", 1)"#);
    let src = "127.0.70.1";
    let codes = ask(&os, src, "x", "127.0.0.1", 80);
    assert!(
        codes.iter().all(|&c| c == 200),
        "dry run refused: {codes:?}"
    );
    let ev = os.wait_events(1, |e| e.is(&[("ev", "ban"), ("ip", src)]));
    assert_eq!(ev.len(), 1, "one would-be ban: {ev:?}");
    assert_eq!(ev[0].get("dry_run"), "1");
    assert_eq!(ev[0].get("reason"), "pike");
    let st = mi.rsec_stats();
    assert_eq!(st["dry_run_bans"], 1, "{st:?}");
    assert_eq!(st["dry_run_blocked"], 80 - 31, "{st:?}");
    assert_eq!(st["bans_created"], 0, "{st:?}");
    assert!(mi.ban_ips().is_empty(), "nothing banned");
    let lines = os.log_lines_with(&["dry run: would have banned 127.0.70.1 for 300s (pike)"]);
    assert_eq!(lines.len(), 1, "{}", os.tail(30));
    assert!(
        lines[0].contains("decision=dry_run rule=pike ip=127.0.70.1 target=127.0.70.1 count=31 threshold=30 window=2 ban=300 offenses=1 profile=default tenant=- dry_run=1"),
        "{}",
        lines[0]
    );
    let ex = mi.ok("sec_explain", r#"{"ip":"127.0.70.1"}"#);
    assert_eq!(ex["blocked"], false, "{ex}");
    assert_eq!(array(&ex, "dry_run").len(), 1, "{ex}");
    // A profile in dry run beside enforcing ones: the "trial" profile.
    let trial = ask(&os, "127.0.70.2", "trial", "127.0.0.1", 20);
    assert!(trial.iter().all(|&c| c == 200), "{trial:?}");
    let ev = os.wait_events(1, |e| e.is(&[("ev", "ban"), ("ip", "127.0.70.2")]));
    assert_eq!(ev[0].get("profile"), "trial");
    assert_eq!(ev[0].get("dry_run"), "1");
}

#[test]
fn sec_explain_gives_the_rule_and_numbers_of_a_real_ban_as_its_log_line_does() {
    let env = require!(
        "sec_explain_gives_the_rule_and_numbers_of_a_real_ban_as_its_log_line_does",
        false
    );
    let _g = heavy();
    let dir = TestDir::new("operators_explain");
    let (os, mi) = start(env, &dir, "explain", "");
    let src = "127.0.80.1";
    let codes = ask(&os, src, "x", "127.0.0.1", 32);
    assert_eq!(codes[30], 403, "{codes:?}");
    let ex = mi.ok("sec_explain", r#"{"ip":"127.0.80.1"}"#);
    eprintln!("sec_explain 127.0.80.1: {ex}");
    assert_eq!(ex["blocked"], true, "{ex}");
    let why = ex["why"].as_str().unwrap();
    assert!(
        why.starts_with("blocked: pike: 31 requests in 2s from 127.0.80.1 over pike_density 30 (profile default): banned 127.0.80.1 for 300s"),
        "{why}"
    );
    let d = &array(&ex, "decisions")[0];
    assert_eq!(
        (
            &d["rule"],
            &d["decision"],
            &d["count"],
            &d["threshold"],
            &d["window"]
        ),
        (
            &Value::from("pike"),
            &Value::from("ban"),
            &Value::from(31),
            &Value::from(30),
            &Value::from(2)
        ),
        "{ex}"
    );
    // The log line of the ban ends with the same facts.
    let lines = os.log_lines_with(&["banned 127.0.80.1 for 300s (pike)"]);
    assert_eq!(lines.len(), 1, "{}", os.tail(20));
    let facts = d["log"].as_str().unwrap();
    assert!(
        lines[0].ends_with(&format!(" | {facts}")),
        "{}\n{facts}",
        lines[0]
    );
    // sec_decisions lists it too, newest first.
    let list = mi.ok("sec_decisions", r#"{"n":5}"#);
    eprintln!("sec_decisions n=5: {list}");
    assert_eq!(array(&list, "decisions")[0]["ip"], src, "{list}");
    // An address never seen: not blocked, no decision.
    let ex = mi.ok("sec_explain", r#"{"ip":"127.0.80.2"}"#);
    assert_eq!(ex["why"], "not blocked");
    assert!(array(&ex, "decisions").is_empty());
    // A malformed address is refused naming the parameter.
    let e = mi.err("sec_explain", r#"{"ip":"127.0.80"}"#);
    assert!(e.message.contains("ip"), "{e:?}");
    // Without db_url there is no table to reload profiles from.
    let e = mi.err("sec_profile_reload", "");
    assert!(e.message.contains("no db_url"), "{e:?}");
}

/// One source's traffic in the replay test: its address, requests per
/// second, and for how long.
struct Sender {
    ip: [u8; 4],
    rate: u64,
    secs: u64,
    sock: UdpSocket,
    sent: u64,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// Sends every sender's traffic, paced, recording each datagram as the
/// capture would (time taken just before the send).
fn send_and_record(port: u16, senders: &mut [Sender]) -> Vec<Pkt> {
    let mut pkts = Vec::new();
    let t0 = Instant::now();
    let longest = senders.iter().map(|s| s.secs).max().unwrap_or(0);
    loop {
        let el = t0.elapsed();
        if el > Duration::from_secs(longest) {
            break;
        }
        for s in senders.iter_mut() {
            let due = (el.as_micros() as u64 * s.rate / 1_000_000).min(s.rate * s.secs);
            while s.sent < due {
                let lport = s.sock.local_addr().unwrap().port();
                let src = Ipv4Addr::from(s.ip).to_string();
                let text = options_text(&src, lport, port, "x", "127.0.0.1", s.sent);
                let ts = now_us();
                s.sock
                    .send_to(text.as_bytes(), ("127.0.0.1", port))
                    .unwrap();
                let b = PacketBuilder::ipv4(s.ip, [127, 0, 0, 1], 64).udp(lport, port);
                let mut ip = Vec::new();
                b.write(&mut ip, text.as_bytes()).unwrap();
                pkts.push(Pkt { ts_us: ts, ip });
                s.sent += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    pkts
}

#[test]
fn replay_of_a_capture_bans_exactly_what_the_live_opensips_banned() {
    let env = require!(
        "replay_of_a_capture_bans_exactly_what_the_live_opensips_banned",
        false
    );
    let _g = heavy();
    let dir = TestDir::new("operators_replay");
    let (os, mi) = start(env, &dir, "replay", "");
    let sender = |ip: [u8; 4], rate, secs| Sender {
        ip,
        rate,
        secs,
        sock: UdpSocket::bind((Ipv4Addr::from(ip), 0)).unwrap(),
        sent: 0,
    };
    // Two flooders (one fast, one just over the limit), three phones, and
    // a trunk at 200/s under its own profile.
    let mut senders = vec![
        sender([127, 0, 90, 1], 100, 3),
        sender([127, 0, 90, 2], 20, 4),
        sender([127, 0, 90, 10], 2, 4),
        sender([127, 0, 90, 11], 2, 4),
        sender([127, 0, 90, 12], 5, 4),
        sender([127, 0, 50, 9], 200, 3),
    ];
    let pkts = send_and_record(os.port, &mut senders);
    let capture = dir.join("live.pcap");
    write_pcap(&capture, Link::Ethernet, &pkts);
    // Everything sent has been handled once every answer came back.
    std::thread::sleep(Duration::from_millis(500));

    // What the live OpenSIPS decided.
    let live = mi.ok("sec_decisions", r#"{"n":100}"#);
    let live: BTreeMap<String, &Value> = array(&live, "decisions")
        .iter()
        .map(|d| (d["ip"].as_str().unwrap().to_owned(), d))
        .collect();
    let banned: Vec<&String> = live.keys().collect();
    assert_eq!(
        banned,
        ["127.0.90.1", "127.0.90.2"],
        "live decisions: {live:?}"
    );

    // What the replay decides, with the modparams of the same cfg.
    let cfg = dir.join("replay.cfg");
    let out = Command::new(BIN)
        .args(["--cfg", cfg.to_str().unwrap(), "--json"])
        .arg(&capture)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    let sources = array(&r, "sources");
    let replayed: BTreeMap<String, &Value> = sources
        .iter()
        .map(|s| (s["address"].as_str().unwrap().to_owned(), s))
        .collect();
    assert_eq!(
        replayed.keys().collect::<Vec<_>>(),
        banned,
        "the replay banned other sources: {r}"
    );
    // One sub-window: the flood window is split in 8.
    let sub_window_s = 2.0 / 8.0;
    let mut table = String::from(
        "source       rule  live count  replay count  live ban at (s)  replay ban at (s)  difference (ms)\n",
    );
    for (ip, d) in &live {
        let s = replayed[ip];
        assert_eq!(s["rule"], d["rule"], "{ip}: rule");
        assert_eq!(s["requests_at_ban"], d["count"], "{ip}: request count");
        let live_at: f64 = d["at"].as_str().unwrap().parse().unwrap();
        let replay_at = pkts[0].ts_us as f64 / 1e6 + s["first_ban_s"].as_f64().unwrap();
        assert!(
            (live_at - replay_at).abs() <= sub_window_s,
            "{ip}: live ban at {live_at}, replayed at {replay_at}"
        );
        assert_eq!(s["profile"], "default");
        let t0 = pkts[0].ts_us as f64 / 1e6;
        table.push_str(&format!(
            "{ip:<12} {:<5} {:>10} {:>13} {:>16.3} {:>18.3} {:>16.1}\n",
            d["rule"].as_str().unwrap(),
            d["count"].to_string(),
            s["requests_at_ban"].to_string(),
            live_at - t0,
            replay_at - t0,
            (replay_at - live_at) * 1000.0
        ));
    }
    std::fs::write(dir.join("live-vs-replay.txt"), &table).unwrap();
    // Keep what an operator would look at.
    let pic = dir.join("replay.svg");
    let text = Command::new(BIN)
        .args([
            "--cfg",
            cfg.to_str().unwrap(),
            "--picture",
            pic.to_str().unwrap(),
        ])
        .arg(&capture)
        .output()
        .unwrap();
    assert!(text.status.success());
    std::fs::write(dir.join("replay.txt"), &text.stdout).unwrap();
    let svg = std::fs::read_to_string(&pic).unwrap();
    assert!(
        svg.starts_with("<svg") || svg.starts_with("<?xml"),
        "not an SVG"
    );
    assert!(svg.contains("127.0.90.1"), "the flooder's row is missing");
    // RSEC_REPLAY_KEEP=<dir> keeps the capture and what came of it (the
    // sample shipped in docs/replay/ was made so).
    if let Some(keep) = std::env::var_os("RSEC_REPLAY_KEEP") {
        let keep = std::path::PathBuf::from(keep);
        std::fs::create_dir_all(&keep).unwrap();
        for f in [
            "live.pcap",
            "replay.cfg",
            "replay.txt",
            "replay.svg",
            "live-vs-replay.txt",
        ] {
            std::fs::copy(dir.join(f), keep.join(f)).unwrap();
        }
    }
}

#[test]
fn profiles_load_from_the_database_and_reload_by_mi_without_a_restart() {
    let Some(env) = opensips::env(
        "profiles_load_from_the_database_and_reload_by_mi_without_a_restart",
        false,
    ) else {
        return;
    };
    let Some(db) = crate::support::mariadb::MariaDb::start_new(
        "profiles_load_from_the_database_and_reload_by_mi_without_a_restart",
        true,
    ) else {
        return;
    };
    let _g = heavy();
    // The stored trunk profile replaces the modparam's 1000 at start-up.
    db.sql("INSERT INTO rsec_profiles (name, settings) VALUES ('trunk', 'pike_density=5')");
    let dir = TestDir::new("operators_db_profiles");
    let extra = format!(r#"modparam("rsec", "db_url", "{}")"#, db.url());
    let (os, mi) = start(env, &dir, "dbprof", &extra);
    let codes = ask(&os, "127.0.50.3", "x", "127.0.0.1", 7);
    assert_eq!(
        codes,
        [200, 200, 200, 200, 200, 403, 403],
        "density 5 from the table"
    );

    // Changed in the table, and a new profile and a bad row added: one
    // MI command, no restart.
    db.sql("UPDATE rsec_profiles SET settings = 'pike_density=700' WHERE name = 'trunk'");
    db.sql(
        "INSERT INTO rsec_profiles (name, settings) VALUES \
         ('carrier', 'pike_density=50; pike_ban_time=60'), ('broken', 'pike_densty=1')",
    );
    let r = mi.ok("sec_profile_reload", "");
    assert_eq!(r["profiles"], 2, "{r}");
    assert_eq!(
        os.log_lines_with(&["rsec_profiles row skipped", "broken", "pike_densty"])
            .len(),
        1,
        "{}",
        os.tail(20)
    );
    let codes = ask(&os, "127.0.50.4", "x", "127.0.0.1", 40);
    assert!(
        codes.iter().all(|&c| c == 200),
        "density 700 again: {codes:?}"
    );
    let list = mi.ok("sec_profile_list", "");
    let by_name = |n: &str| {
        array(&list, "profiles")
            .iter()
            .find(|p| p["name"] == n)
            .unwrap_or_else(|| panic!("no profile {n} in {list}"))
            .clone()
    };
    assert_eq!(by_name("trunk")["pike_density"], 700);
    assert_eq!(by_name("carrier")["pike_ban_time"], 60);
    assert_eq!(by_name("default")["pike_density"], 30);
    // And one set by hand, in every process.
    mi.ok("sec_profile_set", r#"{"profile":"trunk: pike_density=3"}"#);
    let codes = ask(&os, "127.0.50.5", "x", "127.0.0.1", 4);
    assert_eq!(codes, [200, 200, 200, 403]);
    let e = mi.err(
        "sec_profile_set",
        r#"{"profile":"trunk: pike_density=zero"}"#,
    );
    assert!(e.message.contains("pike_density=zero"), "{e:?}");
}
