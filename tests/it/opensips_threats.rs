//! The threat-detection rules inside a real OpenSIPS (tests/cfg/threats.cfg),
//! driven by sipp and the tests' own UDP client from loopback addresses:
//!
//! * 30 addresses of one /24, each flooding, get the /24 banned; the
//!   neighbouring /24 is untouched;
//! * an IPv6 host rotating through 200 addresses of its /64 is banned as
//!   one (the address is given in a header: the machine has one IPv6
//!   loopback address);
//! * a source re-offending after its ban gets the multiplied length, and
//!   with db_url its history survives a restart of OpenSIPS;
//! * 10 sources each failing once against one username block that account
//!   and ban no source; one source failing for 10 usernames is banned for
//!   enumeration;
//! * a sipp scenario with a scanner's User-Agent is banned on its first
//!   request, a phone's is not; a REGISTER storm is banned by its
//!   per-method limit long before the overall one;
//! * reports add up to a ban whose note is the script's word; an MI ban's
//!   note is listed, raised and stored.
//!
//! Needs OpenSIPS (httpd, mi_http, event_routing, textops) and sipp, and
//! MariaDB for the restart case; without them each test skips with one
//! line.

use std::net::UdpSocket;
use std::time::Duration;

use crate::support::mariadb::MariaDb;
use crate::support::mi::Mi;
use crate::support::opensips::{self, heavy, s, Env, Event, OpenSips, TestDir};
use crate::support::sipp::Sipp;

const CFG: &str = include_str!("../cfg/threats.cfg");

macro_rules! require {
    ($test:literal, $sipp:expr) => {
        match opensips::env($test, $sipp) {
            Some(e) => e,
            None => return,
        }
    };
}

fn start(env: &Env, dir: &TestDir, name: &str, vars: &[(&str, String)]) -> (OpenSips, Mi) {
    let all = opensips::override_vars(
        vec![
            ("WORKERS", s(2)),
            ("PIKE_BAN_TIME", s(300)),
            ("EXTRA", String::new()),
        ],
        vars,
    );
    let os = OpenSips::start_with_http(env, dir, name, CFG, &all);
    let mi = Mi::new(os.http_port.unwrap());
    mi.wait_ready(Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("mi_http does not answer: {e}\n{}", os.tail(40)));
    (os, mi)
}

/// One request from `src` (a 127/8 address) to the test's OpenSIPS, with
/// `method`, Request-URI user `ruser`, From user `from` and any extra
/// header lines; the reply's status code.
fn request(os: &OpenSips, src: &str, method: &str, ruser: &str, from: &str, extra: &str) -> u16 {
    let sock = UdpSocket::bind((src, 0)).unwrap_or_else(|e| panic!("bind {src}: {e}"));
    let lport = sock.local_addr().unwrap().port();
    let port = os.port;
    let tag = format!("t{}-{lport}", std::process::id());
    let msg = format!(
        "{method} sip:{ruser}@127.0.0.1:{port} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {src}:{lport};branch=z9hG4bK-{tag}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:{from}@{src}:{lport}>;tag={tag}\r\n\
         To: <sip:{ruser}@127.0.0.1:{port}>\r\n\
         Call-ID: {tag}@{src}\r\n\
         CSeq: 1 {method}\r\n\
         {extra}Content-Length: 0\r\n\r\n"
    );
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    sock.send_to(msg.as_bytes(), ("127.0.0.1", port)).unwrap();
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).unwrap_or_else(|e| {
        panic!(
            "no answer to {method} {ruser} from {src}: {e}\n{}",
            os.tail(30)
        )
    });
    let text = String::from_utf8_lossy(&buf[..n]);
    text.get(8..11)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not a status line: {text}"))
}

fn options(os: &OpenSips, src: &str) -> u16 {
    request(os, src, "OPTIONS", "x", "rsec-test", "")
}

/// The events matching `kv`, waiting up to 5 s for at least `n`
/// (event_route runs asynchronously).
fn events(os: &OpenSips, n: usize, kv: &[(&str, &str)]) -> Vec<Event> {
    os.wait_events(n, |e| e.is(kv))
}

fn ban_events(os: &OpenSips) -> Vec<Event> {
    os.events()
        .into_iter()
        .filter(|e| e.get("ev") == "ban")
        .collect()
}

#[test]
fn thirty_flooders_of_one_slash_24_get_the_24_banned_and_not_the_next() {
    let env = require!(
        "thirty_flooders_of_one_slash_24_get_the_24_banned_and_not_the_next",
        false
    );
    let _g = heavy();
    let dir = TestDir::new("threats_subnet");
    let (os, mi) = start(env, &dir, "subnet", &[]);

    // 29 flooders: 29 host bans, no prefix ban yet.
    for h in 1..=30 {
        let src = format!("127.0.1.{h}");
        let codes: Vec<u16> = (0..6).map(|_| options(&os, &src)).collect();
        assert_eq!(codes, [200, 200, 200, 200, 200, 403], "{src}");
        if h == 29 {
            events(&os, 29, &[("ev", "ban"), ("reason", "pike")]);
            assert!(
                !ban_events(&os).iter().any(|e| e.get("reason") == "subnet"),
                "no prefix ban at 29 addresses"
            );
        }
    }
    let subnet = events(&os, 1, &[("ev", "ban"), ("reason", "subnet")]);
    assert_eq!(subnet.len(), 1, "{subnet:?}");
    assert_eq!(subnet[0].get("ip"), "127.0.1.0/24");
    assert_eq!(subnet[0].get("seconds"), "3600");
    assert_eq!(subnet[0].get("source"), "sec_pike_check");
    let log = os.log();
    assert!(
        log.contains("banned 127.0.1.0/24 for 3600s: 30 addresses inside it banned at once (subnet_ban_threshold 30)"),
        "{}",
        os.tail(20)
    );
    // An address of the /24 never seen before is refused; the next /24,
    // just across the boundary, is served.
    assert_eq!(options(&os, "127.0.1.200"), 403);
    assert_eq!(options(&os, "127.0.2.1"), 200);
    assert_eq!(options(&os, "127.0.0.255"), 200);
    assert_eq!(mi.rsec_stat("bans_subnet"), 1);
    let list = mi.ok("sec_ban_list", r#"{"ip":"127.0.1.0/24"}"#);
    assert!(
        list["bans"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["ip"] == "127.0.1.0/24" && b["reason"] == "subnet"),
        "{list}"
    );
}

#[test]
fn an_ipv6_host_rotating_through_200_addresses_of_its_64_is_banned_as_one() {
    let env = require!(
        "an_ipv6_host_rotating_through_200_addresses_of_its_64_is_banned_as_one",
        false
    );
    let _g = heavy();
    let dir = TestDir::new("threats_v6");
    let (os, mi) = start(env, &dir, "v6", &[]);
    for i in 1..=200u32 {
        let a = format!("2001:db8:5:6:{:x}::{:x}", i * 97 % 65_536, i);
        assert_eq!(
            request(
                &os,
                "127.0.0.9",
                "OPTIONS",
                "v6",
                "x",
                &format!("X-Src: {a}\r\n")
            ),
            200
        );
    }
    let rs: Vec<String> = os
        .events()
        .into_iter()
        .filter(|e| e.get("check") == "v6")
        .map(|e| e.get("r").to_owned())
        .collect();
    assert_eq!(rs.len(), 200);
    assert!(rs[..5].iter().all(|r| r == "1"), "{rs:?}");
    assert_eq!(rs[5], "-2", "the 6th address of the /64 bans it");
    assert!(rs[6..].iter().all(|r| r == "-1"), "{rs:?}");
    let bans = events(&os, 1, &[("ev", "ban")]);
    assert_eq!(bans.len(), 1, "one ban for 200 addresses: {bans:?}");
    assert_eq!(bans[0].get("ip"), "2001:db8:5:6::/64");
    // Another /64 is another source.
    assert_eq!(
        request(
            &os,
            "127.0.0.9",
            "OPTIONS",
            "v6",
            "x",
            "X-Src: 2001:db8:5:7::1\r\n"
        ),
        200
    );
    let info = mi.ok("sec_ip_info", r#"{"ip":"2001:db8:5:6:ffff::1"}"#);
    assert_eq!(info["tracked_as"], "2001:db8:5:6::/64", "{info}");
    assert_eq!(info["banned"], true, "{info}");
}

#[test]
fn a_repeat_offender_gets_a_longer_ban_even_after_a_restart() {
    let env = require!(
        "a_repeat_offender_gets_a_longer_ban_even_after_a_restart",
        false
    );
    let Some(db) = MariaDb::start_new(
        "a_repeat_offender_gets_a_longer_ban_even_after_a_restart",
        true,
    ) else {
        return;
    };
    let _g = heavy();
    let dir = TestDir::new("threats_recidive");
    let extra = format!(
        "modparam(\"rsec\", \"db_url\", \"{}\")\nmodparam(\"rsec\", \"db_sync_interval\", 1)",
        db.url()
    );
    let vars = [("PIKE_BAN_TIME", s(2)), ("EXTRA", extra)];
    let src = "127.0.4.7";
    let flood = |os: &OpenSips| {
        let codes: Vec<u16> = (0..6).map(|_| options(os, src)).collect();
        assert_eq!(codes, [200, 200, 200, 200, 200, 403], "{}", os.tail(20));
    };
    let (mut os, _mi) = start(env, &dir, "recidive-1", &vars);
    flood(&os);
    let first = events(&os, 1, &[("ev", "ban"), ("ip", src)]);
    assert_eq!(first[0].get("seconds"), "2");
    // The ban runs out (its slot, and the counts it kept, are reclaimed);
    // flooding again is a repeat: twice as long.
    std::thread::sleep(Duration::from_millis(2600));
    flood(&os);
    let second = events(&os, 2, &[("ev", "ban"), ("ip", src)]);
    assert_eq!(second[1].get("seconds"), "4", "{second:?}");
    assert!(
        os.log().contains(
            "repeat offence 2 within recidive_window 3600s (ban_multiplier 2, ban_time_max 86400s)"
        ),
        "{}",
        os.tail(20)
    );
    // Written to the database, then OpenSIPS restarts from it.
    opensips::poll(Duration::from_secs(10), Duration::from_millis(200), || {
        let out = db.sql(&format!(
            "SELECT offenses, last_len FROM rsec_offenders WHERE address = '{src}'"
        ));
        out.contains("2\t4").then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "history not stored: {}",
            db.sql("SELECT * FROM rsec_offenders")
        )
    });
    os.stop();
    std::thread::sleep(Duration::from_millis(4500));
    let (os, mi) = start(env, &dir, "recidive-2", &vars);
    flood(&os);
    let third = events(
        &os,
        1,
        &[("ev", "ban"), ("ip", src), ("source", "sec_pike_check")],
    );
    assert_eq!(third[0].get("seconds"), "8", "{third:?}");
    let info = mi.ok("sec_ip_info", &format!(r#"{{"ip":"{src}"}}"#));
    assert_eq!(info["history"]["offenses"], 3, "{info}");
    assert_eq!(info["history"]["last_seconds"], 8, "{info}");
}

#[test]
fn ten_sources_failing_once_block_the_account_and_ban_no_source() {
    let env = require!(
        "ten_sources_failing_once_block_the_account_and_ban_no_source",
        false
    );
    let _g = heavy();
    let dir = TestDir::new("threats_user");
    let (os, mi) = start(env, &dir, "user", &[]);
    let ask = |user: &str| {
        request(&os, "127.0.0.9", "OPTIONS", "userq", user, "");
        let evs = events(&os, 1, &[("check", "userq"), ("user", user)]);
        evs.last().unwrap().get("r").to_owned()
    };
    for n in 1..=10 {
        let src = format!("127.0.5.{n}");
        assert_eq!(request(&os, &src, "OPTIONS", "authfail", "1001", ""), 200);
        if n == 9 {
            assert_eq!(ask("1001"), "-1", "9 failures do not block");
        }
    }
    let blocked = events(&os, 1, &[("ev", "userblock")]);
    assert_eq!(blocked.len(), 1, "{blocked:?}");
    assert_eq!(
        (
            blocked[0].get("user"),
            blocked[0].get("failures"),
            blocked[0].get("seconds")
        ),
        ("1001", "10", "300")
    );
    let rs: Vec<String> = os
        .events()
        .iter()
        .filter(|e| e.get("check") == "authfail")
        .map(|e| e.get("r").to_owned())
        .collect();
    assert_eq!(rs, vec!["1"; 10], "no source was refused");
    assert!(ban_events(&os).is_empty(), "no source banned");
    assert!(os.log().contains(
        "blocked account '1001' for 300s: 10 failed authentications in 60s from any source (user_fail_threshold 10)"
    ));
    // The script sees it; another account is untouched.
    let evs_before = os.events().len();
    assert_eq!(ask("1001"), "1");
    assert_eq!(ask("1002"), "-1");
    assert!(os.events().len() > evs_before);
    let list = mi.ok("sec_user_list", "");
    assert_eq!(list["users"][0]["user"], "1001", "{list}");
    assert_eq!(list["users"][0]["blocked"], true, "{list}");
    mi.ok("sec_user_unblock", r#"{"user":"1001"}"#);
    assert_eq!(mi.err("sec_user_unblock", r#"{"user":"1001"}"#).code, 404);
    assert_eq!(mi.rsec_stat("users_blocked"), 1);
}

#[test]
fn one_source_failing_for_ten_usernames_is_banned_for_enumeration() {
    let env = require!(
        "one_source_failing_for_ten_usernames_is_banned_for_enumeration",
        false
    );
    let _g = heavy();
    let dir = TestDir::new("threats_enum");
    let (os, _mi) = start(env, &dir, "enum", &[]);
    let src = "127.0.6.6";
    for n in 1..=10 {
        request(
            &os,
            src,
            "OPTIONS",
            "authfail",
            &format!("{}", 2000 + n),
            "",
        );
    }
    let rs: Vec<String> = os
        .events()
        .iter()
        .filter(|e| e.get("check") == "authfail")
        .map(|e| e.get("r").to_owned())
        .collect();
    assert_eq!(rs.len(), 10);
    assert!(rs[..9].iter().all(|r| r == "1"), "{rs:?}");
    assert_eq!(rs[9], "-2", "the 10th username bans");
    let bans = events(&os, 1, &[("ev", "ban"), ("ip", src)]);
    assert_eq!(bans[0].get("reason"), "enum");
    assert!(os.log().contains(
        "banned 127.0.6.6 for 900s (enum): failed authentication for 10 distinct usernames in 60s (enum_threshold 10) (last user '2010')"
    ), "{}", os.tail(20));
    assert_eq!(options(&os, src), 403);
}

#[test]
fn a_scanner_user_agent_is_banned_on_its_first_request_and_a_phone_is_not() {
    let env = require!(
        "a_scanner_user_agent_is_banned_on_its_first_request_and_a_phone_is_not",
        true
    );
    let _g = heavy();
    let dir = TestDir::new("threats_scanner");
    let (os, mi) = start(env, &dir, "scanner", &[]);
    let run = |name: &str, src: &str, ua: &str, scenario: &'static str, calls: u32| {
        Sipp::new(env, &dir, name, scenario, os.port)
            .from(src)
            .service("scan")
            .key("ua", ua)
            .key("from", "1000")
            .calls(calls, 50)
            .max_parallel(1)
            .run()
    };
    let phone = run(
        "phone",
        "127.0.7.1",
        "Yealink SIP-T46S 66.86.0.15",
        "request.xml",
        5,
    );
    phone.assert_complete();
    assert_eq!(phone.sequence(), vec!["200"; 5], "{}", phone.describe());
    let scanner = run("scanner", "127.0.7.2", "friendly-scanner", "request.xml", 3);
    scanner.assert_complete();
    assert_eq!(scanner.sequence(), vec!["403"; 3], "{}", scanner.describe());
    let bans = events(&os, 1, &[("ev", "ban"), ("ip", "127.0.7.2")]);
    assert_eq!(bans.len(), 1, "{bans:?}");
    assert_eq!(
        (bans[0].get("reason"), bans[0].get("note")),
        ("scanner", "friendly-scanner")
    );
    let r: Vec<String> = os
        .events()
        .iter()
        .filter(|e| e.get("check") == "scan" && e.get("src") == "127.0.7.2")
        .map(|e| e.get("r").to_owned())
        .collect();
    assert_eq!(r, ["-2", "-1", "-1"], "banned on its first request");
    assert!(os.log().contains(
        "banned 127.0.7.2 for 3600s (scanner): User-Agent 'friendly-scanner' matches scanner pattern 'friendly-scanner'"
    ), "{}", os.tail(20));
    assert_eq!(mi.rsec_stat("bans_scanner"), 1);
    assert_eq!(mi.rsec_stat("scanner_checks"), 8);

    // A REGISTER storm from a phone: banned by REGISTER:3, long before
    // pike_density 5, while OPTIONS from the next address pass.
    let storm = run(
        "storm",
        "127.0.7.3",
        "Yealink SIP-T46S",
        "request_register.xml",
        5,
    );
    storm.assert_complete();
    assert_eq!(
        storm.sequence(),
        ["200", "200", "200", "403", "403"],
        "{}",
        storm.describe()
    );
    let bans = events(&os, 1, &[("ev", "ban"), ("ip", "127.0.7.3")]);
    assert_eq!(bans[0].get("reason"), "method");
    assert!(
        os.log()
            .contains("banned 127.0.7.3 for 300s (method): more than 3 REGISTER requests in 10s"),
        "{}",
        os.tail(20)
    );
}

#[test]
fn reports_add_up_to_a_ban_and_notes_are_listed_raised_and_stored() {
    let env = require!(
        "reports_add_up_to_a_ban_and_notes_are_listed_raised_and_stored",
        false
    );
    let Some(db) = MariaDb::start_new(
        "reports_add_up_to_a_ban_and_notes_are_listed_raised_and_stored",
        true,
    ) else {
        return;
    };
    let _g = heavy();
    let dir = TestDir::new("threats_report");
    let extra = format!("modparam(\"rsec\", \"db_url\", \"{}\")", db.url());
    let (os, mi) = start(env, &dir, "report", &[("EXTRA", extra)]);
    let src = "127.0.8.8";
    for _ in 0..3 {
        request(&os, src, "OPTIONS", "report", "x", "");
    }
    let rs: Vec<String> = os
        .events()
        .iter()
        .filter(|e| e.get("check") == "report")
        .map(|e| e.get("r").to_owned())
        .collect();
    // Weights 4, 8, 12: the third reaches report_threshold 10.
    assert_eq!(rs, ["1", "1", "-2"]);
    let bans = events(&os, 1, &[("ev", "ban"), ("ip", src)]);
    assert_eq!(
        (bans[0].get("reason"), bans[0].get("note")),
        ("report", "bad-domain")
    );
    assert!(os.log().contains(
        "banned 127.0.8.8 for 900s (report): reported weight 12 in 60s reached report_threshold 10, last report 'bad-domain'"
    ), "{}", os.tail(20));

    // An operator's note, through MI.
    mi.ok(
        "sec_ban",
        r#"{"ip":"192.0.2.0/24","seconds":600,"reason":"manual","note":"abuse ticket 4411"}"#,
    );
    let list = mi.ok("sec_ban_list", r#"{"ip":"192.0.2.0/24"}"#);
    assert_eq!(list["bans"][0]["note"], "abuse ticket 4411", "{list}");
    assert!(
        os.log().contains("note=abuse ticket 4411"),
        "the event carries the note"
    );
    let e = mi.err(
        "sec_ban",
        &format!(
            r#"{{"ip":"192.0.2.9","seconds":60,"reason":"manual","note":"{}"}}"#,
            "x".repeat(65)
        ),
    );
    assert_eq!(e.code, 400, "{e:?}");
    assert!(e.message.contains("64-byte limit"), "{e:?}");
    opensips::poll(Duration::from_secs(10), Duration::from_millis(200), || {
        let out = db.sql("SELECT address, note FROM rsec_bans ORDER BY address");
        (out.contains("192.0.2.0/24\tabuse ticket 4411") && out.contains("127.0.8.8\tbad-domain"))
            .then_some(())
    })
    .unwrap_or_else(|| panic!("notes not stored: {}", db.sql("SELECT * FROM rsec_bans")));
}

#[test]
fn an_account_block_is_stored_loaded_by_a_new_node_and_its_unblock_synced() {
    let env = require!(
        "an_account_block_is_stored_loaded_by_a_new_node_and_its_unblock_synced",
        false
    );
    let Some(db) = MariaDb::start_new(
        "an_account_block_is_stored_loaded_by_a_new_node_and_its_unblock_synced",
        true,
    ) else {
        return;
    };
    let _g = heavy();
    let dir = TestDir::new("threats_user_db");
    let node = |id: &str| {
        format!(
            "modparam(\"rsec\", \"db_url\", \"{}\")\nmodparam(\"rsec\", \"node_id\", \"{id}\")\nmodparam(\"rsec\", \"db_sync_interval\", 1)",
            db.url()
        )
    };
    let blocked = |os: &OpenSips, n: usize| {
        request(os, "127.0.0.9", "OPTIONS", "userq", "1001", "");
        let evs = events(os, n, &[("check", "userq")]);
        evs.last().unwrap().get("r").to_owned()
    };
    let (a, mi_a) = start(env, &dir, "node-a", &[("EXTRA", node("a"))]);
    for n in 1..=10 {
        request(
            &a,
            &format!("127.0.9.{n}"),
            "OPTIONS",
            "authfail",
            "1001",
            "",
        );
    }
    events(&a, 1, &[("ev", "userblock"), ("user", "1001")]);
    opensips::poll(Duration::from_secs(10), Duration::from_millis(200), || {
        db.sql("SELECT COUNT(*) FROM rsec_user_blocks")
            .trim()
            .ends_with('1')
            .then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "block not stored: {}",
            db.sql("SELECT * FROM rsec_user_blocks")
        )
    });

    // A node started now loads the block from the database and announces it.
    let (b, _mi_b) = start(env, &dir, "node-b", &[("EXTRA", node("b"))]);
    assert_eq!(blocked(&b, 1), "1", "node b enforces node a's block");
    let ev = events(&b, 1, &[("ev", "userblock"), ("user", "1001")]);
    assert_eq!(ev.len(), 1, "{ev:?}");

    // Lifted on a: b follows within a few sync intervals.
    mi_a.ok("sec_user_unblock", r#"{"user":"1001"}"#);
    assert_eq!(blocked(&a, 1), "-1");
    let lifted = opensips::poll(Duration::from_secs(10), Duration::from_millis(300), || {
        let n = b
            .events()
            .iter()
            .filter(|e| e.get("check") == "userq")
            .count();
        (blocked(&b, n + 1) == "-1").then_some(())
    });
    assert!(lifted.is_some(), "node b still blocks 1001\n{}", b.tail(20));
    assert_eq!(
        db.sql("SELECT COUNT(*) FROM rsec_user_blocks")
            .trim()
            .lines()
            .last(),
        Some("0")
    );
}
