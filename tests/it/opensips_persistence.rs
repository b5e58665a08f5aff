//! Ban persistence in a real OpenSIPS 3.6 against a real MariaDB.
//!
//! Every test starts its own MariaDB (support/mariadb.rs: a private
//! data directory on a free loopback port, schema from
//! include/rsec-mysql.sql) and one or two `opensips -F` with
//! tests/cfg/persist_node.cfg, which loads rsec with `db_url` pointing at it
//! and mi_http for the MI commands. SIP traffic is sipp (tests/sipp/) or
//! OPTIONS from support/sip.rs, from chosen 127.0.0.x source addresses;
//! the database is read back with the mariadb client. What the script
//! decided and which events fired is read from the `RSEC-TEST` xlog lines of
//! the config. Waits for asynchronous work (the persistence process, the
//! sync between nodes, reconnection) are bounded polls.
//!
//! Needs OpenSIPS (with httpd, mi_http and event_routing), sipp and MariaDB
//! (mariadb-install-db, mariadbd, the mariadb client); without them every
//! test skips (support::skip).
//!
//! Run: `cargo test --release --test it opensips_persistence -- --test-threads=1 --nocapture`
//! to see the measured numbers (sync delay between nodes, response times
//! with and without a database outage). The outage test takes about a minute.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::support::{mariadb, mi, opensips, sip, sipp};
use mariadb::MariaDb;
use mi::Mi;
use opensips::{heavy, poll, s, Env, Event, OpenSips, TestDir};
use serde_json::Value;
use sip::{options, OptionsClient, Pace};
use sipp::{Sipp, SippResult};

const NODE_CFG: &str = include_str!("../cfg/persist_node.cfg");

/// The environment and a fresh MariaDB (schema loaded unless `schema` is
/// false), or return after [`skip`](crate::support::skip).
macro_rules! require {
    ($test:literal) => {
        require!($test, true)
    };
    ($test:literal, $schema:expr) => {{
        let Some(env) = opensips::env($test, true) else {
            return;
        };
        let Some(db) = MariaDb::start_new($test, $schema) else {
            return;
        };
        (env, db)
    }};
}

fn now_f() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A steady client with microsecond timing (sipp's -trace_rtt has whole
/// milliseconds only): OPTIONS from `src` at `rate` per second, each sent on
/// time whether or not the ones before were answered, each answered
/// request's response time recorded by a receiver thread.
struct Prober {
    stop: Arc<AtomicBool>,
    sender: Option<std::thread::JoinHandle<()>>,
    receiver: Option<std::thread::JoinHandle<()>>,
    /// Wall-clock send time of each request, by number.
    sent_at: Arc<Mutex<Vec<f64>>>,
    /// (status, response time) of each answered request, by number.
    answers: Arc<Mutex<BTreeMap<u32, (u16, Duration)>>>,
}

impl Prober {
    fn start(src: &str, port: u16, user: &str, rate: u32) -> Prober {
        let client = Arc::new(OptionsClient::new(src, port, Some(user)));
        let stop = Arc::new(AtomicBool::new(false));
        let sent_at: Arc<Mutex<Vec<f64>>> = Arc::new(Mutex::new(Vec::new()));
        let answers: Arc<Mutex<BTreeMap<u32, (u16, Duration)>>> =
            Arc::new(Mutex::new(BTreeMap::new()));
        let sender = {
            let (client, stop, sent_at) = (client.clone(), stop.clone(), sent_at.clone());
            std::thread::spawn(move || {
                let mut pace = Pace::new(Duration::from_secs_f64(1.0 / rate as f64));
                while !stop.load(Ordering::Relaxed) {
                    pace.wait();
                    let wall = now_f();
                    client.send();
                    sent_at.lock().unwrap().push(wall);
                }
            })
        };
        let receiver = {
            let (stop, answers) = (stop.clone(), answers.clone());
            std::thread::spawn(move || {
                let mut stopped_at: Option<Instant> = None;
                loop {
                    match client.recv(Duration::from_millis(50)) {
                        Some(Ok(a)) => {
                            answers
                                .lock()
                                .unwrap()
                                .entry(a.n)
                                .or_insert((a.code, a.latency));
                        }
                        Some(Err(_)) => {}
                        None if stop.load(Ordering::Relaxed) => {
                            // The sender stopped: wait for the last answers, at most 2 s.
                            let since = *stopped_at.get_or_insert_with(Instant::now);
                            let done = answers.lock().unwrap().len() == client.sent();
                            if done || since.elapsed() > Duration::from_secs(2) {
                                return;
                            }
                        }
                        None => {}
                    }
                }
            })
        };
        Prober {
            stop,
            sender: Some(sender),
            receiver: Some(receiver),
            sent_at,
            answers,
        }
    }

    /// Stops sending and waits for the last answers; per request, the
    /// wall-clock send time and (status, response time in ms) if answered.
    fn finish(mut self) -> Vec<(f64, Option<(u16, f64)>)> {
        self.stop.store(true, Ordering::Relaxed);
        self.sender.take().unwrap().join().unwrap();
        self.receiver.take().unwrap().join().unwrap();
        let answers = self.answers.lock().unwrap();
        let sent_at = self.sent_at.lock().unwrap();
        sent_at
            .iter()
            .enumerate()
            .map(|(n, w)| {
                (
                    *w,
                    answers
                        .get(&(n as u32))
                        .map(|(c, d)| (*c, d.as_secs_f64() * 1e3)),
                )
            })
            .collect()
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

// ---------------------------------------------------------------------------
// An OpenSIPS node running persist_node.cfg.
// ---------------------------------------------------------------------------

struct Node<'a> {
    env: &'a Env,
    dir: &'a TestDir,
    os: OpenSips,
    mi: Mi,
    name: String,
}

static SIPP_RUNS: AtomicU32 = AtomicU32::new(0);

fn node_vars(
    db_url: &str,
    node_id: &str,
    vars: &[(&'static str, String)],
) -> Vec<(&'static str, String)> {
    let all: Vec<(&'static str, String)> = vec![
        ("WORKERS", s(2)),
        ("PIKE_SAMPLING", s(2)),
        ("PIKE_DENSITY", s(10)),
        ("PIKE_BAN_TIME", s(300)),
        // TEST-NET-1: a modparam whitelist entry, kept across reloads.
        ("WHITELIST", s("192.0.2.0/24")),
        ("DB_URL", s(db_url)),
        ("NODE_ID", s(node_id)),
        ("DB_SYNC", s(5)),
        ("DB_TIMEOUT", s(3)),
        ("DB_QUEUE_SIZE", s(4096)),
    ];
    opensips::override_vars(all, vars)
}

impl<'a> Node<'a> {
    fn start(
        env: &'a Env,
        dir: &'a TestDir,
        name: &str,
        db_url: &str,
        node_id: &str,
        vars: &[(&'static str, String)],
    ) -> Node<'a> {
        let all = node_vars(db_url, node_id, vars);
        let os = OpenSips::start_with_http(env, dir, name, NODE_CFG, &all);
        // sec_db_sync and sec_whitelist_reload wait up to 10 s for the database.
        let mi = Mi::with_timeout(os.http_port.unwrap(), Duration::from_secs(20));
        mi.wait_ready(Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("[{name}] mi_http does not answer: {e}\n{}", os.tail(40)));
        Node {
            env,
            dir,
            os,
            mi,
            name: name.to_string(),
        }
    }

    fn sipp(&self, scenario: &'static str, src: &str, service: &str) -> Sipp<'a> {
        let n = SIPP_RUNS.fetch_add(1, Ordering::Relaxed);
        let run = format!("{}_{n}_{}", self.name, src.replace('.', "_"));
        Sipp::new(self.env, self.dir, &run, scenario, self.os.port)
            .from(src)
            .service(service)
    }

    /// `n` OPTIONS from `src`, one at a time: the first `pike_density`
    /// pass, the rest are refused once the source is banned.
    fn flood(&self, src: &str, n: u32) -> SippResult {
        let r = self
            .sipp("options.xml", src, "flood")
            .calls(n, 500)
            .max_parallel(1)
            .run();
        r.assert_complete();
        r
    }

    fn options(&self, src: &str) -> Option<u16> {
        options(src, self.os.port, "probe", Duration::from_secs(2))
    }

    fn events(&self, kv: &[(&str, &str)]) -> Vec<Event> {
        self.os.events().into_iter().filter(|e| e.is(kv)).collect()
    }

    /// Polls (up to `limit`) until an event line matches; the first one.
    fn wait_event(&self, kv: &[(&str, &str)], limit: Duration) -> Option<Event> {
        poll(limit, Duration::from_millis(20), || {
            self.events(kv).into_iter().next()
        })
        .map(|(e, _)| e)
    }
}

/// Rows of `sql` as tab-separated fields.
fn rows(db: &MariaDb, sql: &str) -> Vec<Vec<String>> {
    db.sql(sql)
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

/// rsec_bans row of `addr`: (reason, created, expires, node_id).
fn ban_row(db: &MariaDb, addr: &str) -> Option<(String, u64, u64, String)> {
    rows(
        db,
        &format!(
            "SELECT reason, created, expires, node_id FROM rsec_bans WHERE address = '{addr}'"
        ),
    )
    .into_iter()
    .next()
    .map(|r| {
        (
            r[0].clone(),
            r[1].parse().unwrap(),
            r[2].parse().unwrap(),
            r[3].clone(),
        )
    })
}

/// rsec_ban_changes of `addr`, oldest first: (op, reason, created, expires, node_id).
fn changes(db: &MariaDb, addr: &str) -> Vec<(String, String, u64, u64, String)> {
    rows(db, &format!("SELECT op, reason, created, expires, node_id FROM rsec_ban_changes WHERE address = '{addr}' ORDER BY id"))
        .into_iter()
        .map(|r| (r[0].clone(), r[1].clone(), r[2].parse().unwrap(), r[3].parse().unwrap(), r[4].clone()))
        .collect()
}

fn ops(ch: &[(String, String, u64, u64, String)]) -> Vec<&str> {
    ch.iter().map(|c| c.0.as_str()).collect()
}

/// (p50, p99, max) of `v`, in its unit.
fn percentiles(v: &[f64]) -> (f64, f64, f64) {
    if v.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let at = |q: f64| v[((q * (v.len() - 1) as f64).round() as usize).min(v.len() - 1)];
    (at(0.5), at(0.99), v[v.len() - 1])
}

// ---------------------------------------------------------------------------
// 1. A ban made by traffic is written with its reason, node and expiry, and
//    logged as a change; an MI unban deletes it and logs that too.
// ---------------------------------------------------------------------------

#[test]
fn ban_by_traffic_is_written() {
    let _g = heavy();
    let (env, db) = require!("ban_by_traffic_is_written");
    const SRC: &str = "127.0.0.60";
    const DENSITY: usize = 10;
    const BAN_TIME: u64 = 300;
    let dir = TestDir::new("persist_written");
    let n = Node::start(
        env,
        &dir,
        "node",
        &db.url(),
        "node-one",
        &[
            ("PIKE_DENSITY", s(DENSITY)),
            ("PIKE_BAN_TIME", s(BAN_TIME)),
            ("DB_SYNC", s(1)),
        ],
    );

    let t0 = now_s();
    let flood = n.flood(SRC, 40);
    let t1 = now_s();
    assert_eq!(
        (flood.count("200"), flood.count("403")),
        (DENSITY, 40 - DENSITY),
        "{}",
        flood.describe()
    );

    let (row, took) = poll(Duration::from_secs(5), Duration::from_millis(20), || {
        ban_row(&db, SRC)
    })
    .unwrap_or_else(|| {
        panic!(
            "no rsec_bans row for {SRC} 5 s after the ban\n{}",
            n.os.tail(30)
        )
    });
    eprintln!(
        "ban of {SRC} in rsec_bans {} ms after the flood ended: {row:?}",
        took.as_millis()
    );
    let (reason, created, expires, node) = row;
    assert_eq!(reason, "pike");
    assert_eq!(node, "node-one");
    assert!(
        (t0..=t1).contains(&created),
        "created {created} outside the flood [{t0}, {t1}]"
    );
    assert_eq!(
        expires,
        created + BAN_TIME,
        "expires = created + pike_ban_time"
    );
    let ch = changes(&db, SRC);
    assert_eq!(ch.len(), 1, "one change logged for the ban: {ch:?}");
    assert_eq!(
        ch[0],
        (s("ban"), s("pike"), created, expires, s("node-one"))
    );
    // The same ban as the node itself shows it.
    let listed = n.mi.ok("sec_ban_list", &format!(r#"{{"ip":"{SRC}"}}"#));
    assert_eq!(
        listed["bans"][0]["created"].as_u64(),
        Some(created),
        "{listed:?}"
    );
    assert_eq!(
        listed["bans"][0]["expires"].as_u64(),
        Some(expires),
        "{listed:?}"
    );

    // A permanent MI ban is stored with expires 0.
    assert_eq!(
        n.mi.ok("sec_ban", r#"{"ip":"127.0.0.64","seconds":0}"#),
        "OK"
    );
    let (row, _) = poll(Duration::from_secs(5), Duration::from_millis(20), || {
        ban_row(&db, "127.0.0.64")
    })
    .expect("MI ban written");
    assert_eq!(
        (row.0.as_str(), row.2, row.3.as_str()),
        ("manual", 0, "node-one"),
        "{row:?}"
    );

    // MI unban: the row goes, the change log gets an 'unban' of the same ban.
    assert_eq!(n.mi.ok("sec_unban", &format!(r#"{{"ip":"{SRC}"}}"#)), "OK");
    let (_, took) = poll(Duration::from_secs(5), Duration::from_millis(20), || {
        ban_row(&db, SRC).is_none().then_some(())
    })
    .unwrap_or_else(|| panic!("rsec_bans row of {SRC} still there 5 s after sec_unban"));
    eprintln!(
        "unban of {SRC} deleted from rsec_bans {} ms after sec_unban",
        took.as_millis()
    );
    let ch = changes(&db, SRC);
    assert_eq!(ops(&ch), ["ban", "unban"], "{ch:?}");
    assert_eq!(
        ch[1],
        (s("unban"), s("pike"), created, expires, s("node-one")),
        "{ch:?}"
    );

    // sec_db_sync: a forced import, the cursor at the newest change.
    let max_id: u64 = db
        .sql("SELECT MAX(id) FROM rsec_ban_changes")
        .trim()
        .parse()
        .unwrap();
    let sync = n.mi.ok("sec_db_sync", "");
    eprintln!("sec_db_sync -> {sync:?}");
    assert_eq!(sync["synced"], true, "{sync:?}");
    assert_eq!(sync["cursor"].as_u64(), Some(max_id), "{sync:?}");
    let last = sync["last_sync"].as_u64().expect("last_sync");
    assert!(
        last + 5 >= now_s() && last <= now_s(),
        "last_sync {last} is not now: {sync:?}"
    );

    let st = n.mi.rsec_stats();
    eprintln!(
        "db stats: writes {} errors {} queue_depth {} queue_drops {} last_sync {}",
        st["db_writes"],
        st["db_errors"],
        st["db_queue_depth"],
        st["db_queue_drops"],
        st["db_last_sync"]
    );
    assert_eq!(st["db_writes"], 3, "ban, MI ban, unban: {st:?}");
    assert_eq!(
        (st["db_errors"], st["db_queue_depth"], st["db_queue_drops"]),
        (0, 0, 0),
        "{st:?}"
    );
    assert!(st["db_last_sync"] + 5 >= now_s(), "{st:?}");

    // The node imports its own change log too: doing so must not bring back
    // the ban it lifted, nor announce it again. Several sync rounds.
    for _ in 0..3 {
        n.mi.ok("sec_db_sync", "");
        std::thread::sleep(Duration::from_millis(1100));
    }
    assert_eq!(n.options(SRC), Some(200), "{SRC} is unbanned");
    let from_db = n.events(&[("ev", "ban"), ("source", "db")]);
    assert!(
        from_db.is_empty(),
        "the node re-applied the ban of {SRC} it had lifted, {} times in ~4 s (E_SEC_BAN source=db, each followed by an \
         E_SEC_UNBAN): the import replays the last changes of the log (ban, then unban) on every sync",
        from_db.len()
    );
    let bans_for_src = n.events(&[("ev", "ban"), ("ip", SRC)]).len();
    let unbans_for_src = n.events(&[("ev", "unban"), ("ip", SRC)]).len();
    assert_eq!(
        (bans_for_src, unbans_for_src),
        (1, 1),
        "one ban and one unban event for {SRC}"
    );
    assert_eq!(n.mi.ban_ips(), ["127.0.0.64"]);

    assert_eq!(
        n.mi.rsec_stat("bans_created"),
        2,
        "a pike ban and an MI ban, nothing re-created by the sync"
    );
}

// ---------------------------------------------------------------------------
// 2. A restarted node enforces the stored bans from its very first request.
// ---------------------------------------------------------------------------

#[test]
fn restart_keeps_ban_before_any_traffic() {
    let _g = heavy();
    let (env, db) = require!("restart_keeps_ban_before_any_traffic");
    const FLOODER: &str = "127.0.0.61";
    const MANUAL: &str = "127.0.0.65";
    const PREFIX: &str = "127.0.2.0/24";
    let dir = TestDir::new("persist_restart");
    let vars = [("PIKE_DENSITY", s(10)), ("PIKE_BAN_TIME", s(600))];

    let mut first = Node::start(env, &dir, "first", &db.url(), "restart", &vars);
    first.flood(FLOODER, 30);
    assert_eq!(
        first
            .mi
            .ok("sec_ban", &format!(r#"{{"ip":"{MANUAL}","seconds":0}}"#)),
        "OK"
    );
    assert_eq!(
        first.mi.ok(
            "sec_ban",
            &format!(r#"{{"ip":"{PREFIX}","seconds":900,"reason":"auth"}}"#)
        ),
        "OK"
    );
    poll(Duration::from_secs(5), Duration::from_millis(20), || {
        (db.sql("SELECT COUNT(*) FROM rsec_bans").trim() == "3").then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "the 3 bans were not written: {}",
            db.sql("SELECT * FROM rsec_bans")
        )
    });
    let before = first.mi.ok("sec_ban_list", "");
    first.os.stop();
    drop(first);

    let second = Node::start(env, &dir, "second", &db.url(), "restart", &vars);
    let log = second.os.log();
    let loaded = log
        .lines()
        .position(|l| l.contains("loaded 3 bans in force"));
    let first_request = log.lines().position(|l| l.contains("RSEC-TEST check="));
    eprintln!(
        "start-up log: {}",
        log.lines()
            .find(|l| l.contains("bans in force"))
            .unwrap_or("<no 'bans in force' line>")
    );
    assert!(
        loaded.is_some(),
        "no 'loaded 3 bans in force' line\n{}",
        second.os.tail(40)
    );
    assert!(
        first_request.is_none(),
        "a request was checked before the test sent one"
    );

    // The very first request from each banned source is refused.
    assert_eq!(
        second.options(FLOODER),
        Some(403),
        "flood ban survives the restart"
    );
    assert_eq!(
        second.options(MANUAL),
        Some(403),
        "permanent MI ban survives the restart"
    );
    assert_eq!(
        second.options("127.0.2.9"),
        Some(403),
        "prefix ban survives the restart"
    );
    assert_eq!(
        second.options("127.0.0.66"),
        Some(200),
        "an unbanned source passes"
    );
    let checks: Vec<Event> = second.events(&[("check", "pike")]);
    let first_check = checks.first().expect("a decision line");
    assert!(
        first_check.is(&[("src", FLOODER), ("r", "-1")]),
        "first request refused as banned (-1): {first_check:?}"
    );
    let loaded_line = second
        .os
        .log()
        .lines()
        .position(|l| l.contains("loaded 3 bans in force"))
        .unwrap();
    let first_check_line = second
        .os
        .log()
        .lines()
        .position(|l| l.contains("RSEC-TEST check="))
        .unwrap();
    assert!(
        loaded_line < first_check_line,
        "bans loaded before the first request"
    );

    let after = second.mi.ok("sec_ban_list", "");
    eprintln!("sec_ban_list after the restart: {after:?}");
    let key = |l: &Value| -> Vec<(String, String, Option<u64>, Option<u64>)> {
        let mut v: Vec<_> = mi::array(l, "bans")
            .iter()
            .map(|b| {
                (
                    s(b["ip"].as_str().unwrap_or("")),
                    s(b["reason"].as_str().unwrap_or("")),
                    b["created"].as_u64(),
                    b["expires"].as_u64(),
                )
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        key(&after),
        key(&before),
        "the same bans, same reasons and times, after the restart"
    );
    assert_eq!(after["count"].as_u64(), Some(3));

    // Announced once each as coming from the database.
    let evs = poll(Duration::from_secs(5), Duration::from_millis(50), || {
        let e = second.events(&[("ev", "ban"), ("source", "db")]);
        (e.len() >= 3).then_some(e)
    })
    .map(|(e, _)| e)
    .unwrap_or_default();
    let mut ips: Vec<&str> = evs.iter().map(|e| e.get("ip")).collect();
    ips.sort();
    assert_eq!(
        ips,
        [FLOODER, MANUAL, PREFIX],
        "one E_SEC_BAN source=db per loaded ban"
    );
}

// ---------------------------------------------------------------------------
// 3. Two nodes on one database: a ban on A is enforced on B within
//    db_sync_interval, and so is the unban.
// ---------------------------------------------------------------------------

#[test]
fn two_nodes_share_bans_within_interval() {
    let _g = heavy();
    let (env, db) = require!("two_nodes_share_bans_within_interval");
    const SRC: &str = "127.0.0.62";
    const SYNC: f64 = 2.0;
    // Slack over db_sync_interval: the write on A (<= 50 ms idle poll), one
    // poll period here, scheduling on a small machine.
    const SLACK: f64 = 1.5;
    let dir = TestDir::new("persist_two_nodes");
    const DENSITY: u32 = 30;
    let vars = [("PIKE_DENSITY", s(DENSITY)), ("DB_SYNC", s(SYNC as u32))];
    let a = Node::start(env, &dir, "a", &db.url(), "a", &vars);
    let b = Node::start(env, &dir, "b", &db.url(), "b", &vars);

    // Three rounds (the delay depends on where in B's sync period the ban falls):
    // flood A with exactly DENSITY + 1 requests, one at a time, so that the
    // last one is the one that bans; then ask B every 100 ms (10 per second,
    // under B's own density of 30 per 2 s) until it refuses too.
    let mut delays = Vec::new();
    for (src, pause_ms) in [(SRC, 0), ("127.0.0.63", 700), ("127.0.0.57", 1400)] {
        // Each round starts right after one of B's syncs: a pause moves the
        // ban to another point of B's period.
        std::thread::sleep(Duration::from_millis(pause_ms));
        assert_eq!(b.options(src), Some(200), "B does not know {src} yet");
        let flood = a.flood(src, DENSITY + 1);
        let t_ban = now_f();
        assert_eq!(
            (flood.count("200"), flood.count("403")),
            (DENSITY as usize, 1),
            "{}",
            flood.describe()
        );
        let refused = poll(
            Duration::from_secs_f64(SYNC * 3.0 + 5.0),
            Duration::from_millis(100),
            || (b.options(src) == Some(403)).then(now_f),
        )
        .map(|(t, _)| t)
        .unwrap_or_else(|| panic!("B never refused {src}\n{}", b.os.tail(30)));
        let delay = refused - t_ban;
        eprintln!("ban A->B: {src} banned on A, first refusal on B {:.0} ms later (db_sync_interval {SYNC} s)", delay * 1e3);
        delays.push(delay);
        let a_ban = a
            .wait_event(&[("ev", "ban"), ("ip", src)], Duration::from_secs(2))
            .expect("A's E_SEC_BAN");
        assert_eq!(a_ban.get("source"), "sec_pike_check", "{a_ban:?}");
        let b_ban = b
            .wait_event(&[("ev", "ban"), ("ip", src)], Duration::from_secs(2))
            .expect("B's E_SEC_BAN");
        assert!(
            b_ban.is(&[
                ("source", "db"),
                ("reason", "pike"),
                ("expires", a_ban.get("expires")),
                ("seconds", a_ban.get("seconds"))
            ]),
            "B's ban is A's ban, from the database: {b_ban:?} vs {a_ban:?}"
        );
        let b_checks = b.events(&[("check", "pike"), ("src", src)]);
        assert!(
            b_checks.iter().all(|e| e.get("r") != "-2"),
            "B must not have banned {src} itself: {b_checks:?}"
        );
    }
    let worst = delays.iter().cloned().fold(0.0, f64::max);
    eprintln!(
        "ban A->B delays: {:?} ms (max {:.0} ms, db_sync_interval {SYNC} s)",
        delays
            .iter()
            .map(|d| (d * 1e3).round() as i64)
            .collect::<Vec<_>>(),
        worst * 1e3
    );
    assert!(
        worst <= SYNC + SLACK,
        "B refused a source {worst:.2} s after A banned it (> {SYNC} + {SLACK} s)"
    );

    // Unban on A: B lets the source through within the interval.
    let t_unban = now_f();
    assert_eq!(a.mi.ok("sec_unban", &format!(r#"{{"ip":"{SRC}"}}"#)), "OK");
    let passed = poll(
        Duration::from_secs_f64(SYNC * 3.0 + 5.0),
        Duration::from_millis(100),
        || (b.options(SRC) == Some(200)).then(now_f),
    )
    .map(|(t, _)| t)
    .unwrap_or_else(|| {
        panic!(
            "B never let {SRC} through after the unban on A\n{}",
            b.os.tail(30)
        )
    });
    eprintln!(
        "unban A->B: {SRC} passes on B {:.0} ms after sec_unban on A",
        (passed - t_unban) * 1e3
    );
    assert!(
        passed - t_unban <= SYNC + SLACK,
        "B let {SRC} through {:.2} s after the unban on A",
        passed - t_unban
    );
    assert!(
        b.wait_event(&[("ev", "unban"), ("ip", SRC)], Duration::from_secs(2))
            .is_some(),
        "B's E_SEC_UNBAN"
    );

    // And the other way: a ban made on B, imported at once by sec_db_sync on A.
    assert_eq!(
        b.mi.ok("sec_ban", r#"{"ip":"127.0.0.67","seconds":120}"#),
        "OK"
    );
    poll(Duration::from_secs(5), Duration::from_millis(20), || {
        ban_row(&db, "127.0.0.67")
    })
    .expect("B's ban written");
    let sync = a.mi.ok("sec_db_sync", "");
    assert_eq!(sync["synced"], true, "{sync:?}");
    assert!(
        a.mi.ban_ips().contains(&s("127.0.0.67")),
        "A has B's ban right after sec_db_sync"
    );
    assert_eq!(a.options("127.0.0.67"), Some(403));
    assert_eq!(
        ban_row(&db, "127.0.0.67").map(|r| r.3),
        Some(s("b")),
        "node_id of the node that banned"
    );

    // A few more sync rounds change nothing: each change is applied once.
    std::thread::sleep(Duration::from_secs_f64(SYNC * 2.5));
    let count = |n: &Node, kv: &[(&str, &str)]| n.events(kv).len();
    let seen = [
        count(&a, &[("ev", "ban"), ("ip", SRC)]),
        count(&a, &[("ev", "unban"), ("ip", SRC)]),
        count(&b, &[("ev", "ban"), ("ip", SRC)]),
        count(&b, &[("ev", "unban"), ("ip", SRC)]),
    ];
    assert_eq!(b.options(SRC), Some(200));
    assert_eq!(a.options(SRC), Some(200));
    let mut a_bans = a.mi.ban_ips();
    let mut b_bans = b.mi.ban_ips();
    a_bans.sort();
    b_bans.sort();
    let want = vec![s("127.0.0.57"), s("127.0.0.63"), s("127.0.0.67")];
    assert_eq!(
        (a_bans, b_bans),
        (want.clone(), want),
        "the same bans on both nodes"
    );
    let (ab, au) = (
        count(&a, &[("ev", "ban"), ("source", "db")]),
        count(&a, &[("ev", "unban")]),
    );
    let (bb, bu) = (
        count(&b, &[("ev", "ban"), ("source", "db")]),
        count(&b, &[("ev", "unban")]),
    );
    eprintln!("after {:.0} s more: E_SEC_BAN source=db / E_SEC_UNBAN raised on A {ab}/{au}, on B {bb}/{bu}", SYNC * 2.5);
    assert_eq!(
        seen,
        [1, 1, 1, 1],
        "ban/unban events for {SRC} on A and on B after more syncs: a lifted ban is re-applied (and lifted again) on every sync"
    );
    // A: B's ban of 127.0.0.67; B: A's three bans; one unban on each.
    assert_eq!(
        (ab, au, bb, bu),
        (1, 1, 3, 1),
        "events raised by the imports"
    );
}

// ---------------------------------------------------------------------------
// 4. A 30 s database outage under steady traffic: no request lost, no added
//    latency, every decision made meanwhile written once the database is back.
// ---------------------------------------------------------------------------

#[test]
fn mysql_outage_costs_no_sip_latency_and_loses_nothing() {
    let _g = heavy();
    let (env, mut db) = require!("mysql_outage_costs_no_sip_latency_and_loses_nothing");
    const LEGIT: &str = "127.0.0.2";
    const RATE: u32 = 50;
    // A second legit source with microsecond timing.
    const PROBER: &str = "127.0.0.3";
    const PROBE_RATE: u32 = 50;
    const BASELINE_S: u64 = 15;
    const OUTAGE_S: u64 = 30;
    const AFTER_S: u64 = 15;
    const DENSITY: u32 = 200;
    let dir = TestDir::new("persist_outage");
    let n = Node::start(
        env,
        &dir,
        "node",
        &db.url(),
        "outage",
        &[
            ("PIKE_DENSITY", s(DENSITY)),
            ("PIKE_SAMPLING", s(2)),
            ("DB_SYNC", s(2)),
        ],
    );

    // Legit traffic through the whole test: 50 OPTIONS/s from sipp and 50/s
    // from a prober, each flood-checked (100 per 2 s window and source,
    // under the density of 200), response times traced.
    let total_s = BASELINE_S + OUTAGE_S + AFTER_S;
    let calls = RATE * total_s as u32;
    let legit = n
        .sipp("persist_options_rtt.xml", LEGIT, "legit")
        .calls(calls, RATE)
        .recv_timeout_ms(2000)
        .timeout(total_s as u32 + 30)
        .trace_rtt()
        .spawn();
    let t_start = now_f();
    let prober = Prober::start(PROBER, n.os.port, "legit", PROBE_RATE);

    // Decisions while the database is up: 2 floods, 2 MI bans.
    std::thread::sleep(Duration::from_secs(3));
    let flood_ban = |src: &str| {
        let r = n
            .sipp("options.xml", src, "flood")
            .calls(DENSITY + 100, 1000)
            .max_parallel(1)
            .run();
        r.assert_complete();
        assert_eq!(r.count("403"), 100, "{}", r.describe());
    };
    let mi_ms = |f: &dyn Fn()| {
        let t = Instant::now();
        f();
        t.elapsed().as_secs_f64() * 1e3
    };
    let mut up_mi = Vec::new();
    for src in ["127.0.0.68", "127.0.0.69"] {
        flood_ban(src);
    }
    for ip in ["127.0.1.11", "127.0.1.12"] {
        up_mi.push(mi_ms(&|| {
            assert_eq!(
                n.mi.ok("sec_ban", &format!(r#"{{"ip":"{ip}","seconds":600}}"#)),
                "OK"
            )
        }));
    }
    poll(Duration::from_secs(5), Duration::from_millis(50), || {
        (db.sql("SELECT COUNT(*) FROM rsec_bans").trim() == "4").then_some(())
    })
    .expect("the 4 bans made while the database is up are written");
    let before = n.mi.rsec_stats();
    assert_eq!(
        (before["db_errors"], before["db_queue_depth"]),
        (0, 0),
        "{before:?}"
    );
    let sleep_until = |t: f64| {
        let d = t - now_f();
        if d > 0.0 {
            std::thread::sleep(Duration::from_secs_f64(d));
        }
    };
    sleep_until(t_start + BASELINE_S as f64);

    // The outage.
    let t_down = now_f();
    db.stop();
    eprintln!("MariaDB killed at +{:.1} s", t_down - t_start);
    std::thread::sleep(Duration::from_secs(2));
    let outage_flooders = ["127.0.0.70", "127.0.0.71", "127.0.0.72", "127.0.0.73"];
    let outage_mi = ["127.0.1.1", "127.0.1.2", "127.0.1.3", "127.0.1.4"];
    for src in outage_flooders {
        flood_ban(src);
    }
    let mut down_mi = Vec::new();
    for ip in outage_mi {
        down_mi.push(mi_ms(&|| {
            assert_eq!(
                n.mi.ok("sec_ban", &format!(r#"{{"ip":"{ip}","seconds":600}}"#)),
                "OK"
            )
        }));
    }
    // An unban during the outage too (of a ban written before it).
    down_mi.push(mi_ms(&|| {
        assert_eq!(n.mi.ok("sec_unban", r#"{"ip":"127.0.0.68"}"#), "OK")
    }));
    // Enforced at once, database or not.
    for ip in outage_flooders.iter().chain(&outage_mi) {
        assert_eq!(n.options(ip), Some(403), "{ip} banned during the outage");
    }
    assert_eq!(
        n.options("127.0.0.68"),
        Some(200),
        "unbanned during the outage"
    );
    let queued = outage_flooders.len() + outage_mi.len() + 1;
    let mid = poll(Duration::from_secs(15), Duration::from_millis(200), || {
        let st = n.mi.rsec_stats();
        (st["db_errors"] > 0).then_some(st)
    })
    .map(|(st, _)| st)
    .unwrap_or_else(|| {
        panic!(
            "db_errors stayed 0 during the outage: {:?}",
            n.mi.rsec_stats()
        )
    });
    eprintln!(
        "during the outage: {queued} decisions made; db_errors {} db_queue_depth {} db_queue_drops {} db_writes {}",
        mid["db_errors"], mid["db_queue_depth"], mid["db_queue_drops"], mid["db_writes"]
    );
    assert_eq!(
        mid["db_queue_depth"], queued as u64,
        "every decision made during the outage waits in the queue: {mid:?}"
    );
    assert_eq!(mid["db_queue_drops"], 0);
    sleep_until(t_down + OUTAGE_S as f64);
    db.start();
    let t_up = now_f();
    eprintln!(
        "MariaDB back at +{:.1} s (down {:.1} s)",
        t_up - t_start,
        t_up - t_down
    );

    // Everything decided during the outage lands within the reconnect
    // backoff (at most 30 s) plus slack.
    let expect_bans: Vec<&str> = ["127.0.0.69", "127.0.1.11", "127.0.1.12"]
        .iter()
        .chain(&outage_flooders)
        .chain(&outage_mi)
        .copied()
        .collect();
    let landed = poll(Duration::from_secs(45), Duration::from_millis(250), || {
        let mut have: Vec<String> = rows(&db, "SELECT address FROM rsec_bans")
            .into_iter()
            .map(|r| r[0].clone())
            .collect();
        have.sort();
        let mut want: Vec<String> = expect_bans.iter().map(|s| s.to_string()).collect();
        want.sort();
        (have == want && n.mi.rsec_stat("db_queue_depth") == 0).then_some(())
    });
    let recovered_after = landed.as_ref().map(|(_, d)| d.as_secs_f64());
    assert!(
        recovered_after.is_some(),
        "the outage's decisions were not all written 45 s after the database came back: rsec_bans = {:?}, stats {:?}\n{}",
        rows(&db, "SELECT address, reason, node_id FROM rsec_bans"),
        n.mi.rsec_stats(),
        n.os.tail(30)
    );
    eprintln!(
        "all {queued} decisions of the outage written {:.1} s after MariaDB came back",
        recovered_after.unwrap()
    );
    for ip in outage_flooders {
        let ch = changes(&db, ip);
        assert_eq!(ops(&ch), ["ban"], "{ip}: {ch:?}");
        assert_eq!((ch[0].1.as_str(), ch[0].4.as_str()), ("pike", "outage"));
        let created = ch[0].2 as f64;
        assert!(
            created >= t_down.floor() && created <= t_up,
            "{ip} created {created}: the time of the decision, not of the write"
        );
    }
    for ip in outage_mi {
        assert_eq!(ops(&changes(&db, ip)), ["ban"], "{ip}");
        assert_eq!(ban_row(&db, ip).map(|r| r.0), Some(s("manual")));
    }
    assert_eq!(
        ops(&changes(&db, "127.0.0.68")),
        ["ban", "unban"],
        "the unban made during the outage is logged"
    );
    let after = n.mi.rsec_stats();
    assert_eq!(
        (after["db_queue_depth"], after["db_queue_drops"]),
        (0, 0),
        "{after:?}"
    );
    assert_eq!(
        after["db_writes"],
        4 + queued as u64,
        "every decision written exactly once: {after:?}"
    );

    // The legit traffic: every request answered 200, nothing lost.
    let res = legit.wait();
    assert_eq!(res.missing(), 0, "legit requests lost\n{}", res.describe());
    assert_eq!(res.count("200"), calls as usize, "{}", res.describe());
    let legit_checks = n.events(&[("check", "pike"), ("src", LEGIT)]);
    assert!(
        legit_checks.iter().all(|e| e.get("r") == "1"),
        "legit traffic never refused"
    );

    let probes = prober.finish();
    let lost: Vec<String> = probes
        .iter()
        .filter(|(_, r)| r.is_none())
        .map(|(w, _)| format!("+{:.2}s", w - t_start))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} prober requests without an answer, sent at {lost:?}",
        lost.len(),
        probes.len()
    );
    let not_ok = probes
        .iter()
        .filter(|(_, r)| r.is_some_and(|(c, _)| c != 200))
        .count();
    assert_eq!(not_ok, 0, "prober requests not answered 200");
    let prober_checks = n.events(&[("check", "pike"), ("src", PROBER)]);
    assert_eq!(
        prober_checks.len(),
        probes.len(),
        "one decision per prober request"
    );
    assert!(
        prober_checks.iter().all(|e| e.get("r") == "1"),
        "prober traffic never refused"
    );

    // Response times per phase: the prober's (microseconds) and sipp's
    // -trace_rtt file ("Date_ms;response_time_ms;rtd_no": the date in ms
    // since sipp started, the response time in whole milliseconds).
    let csv = dir.join(&format!("persist_options_rtt_{}_rtt.csv", res.pid));
    let text = std::fs::read_to_string(&csv).unwrap_or_else(|e| panic!("{}: {e}", csv.display()));
    let sipp_rtt: Vec<(f64, f64)> = text
        .lines()
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split(';');
            let date_ms = f.next()?.trim().parse::<f64>().ok()?;
            Some((
                t_start + date_ms / 1e3,
                f.next()?.trim().parse::<f64>().ok()?,
            ))
        })
        .collect();
    assert_eq!(
        sipp_rtt.len(),
        calls as usize,
        "one RTT per call in {}",
        csv.display()
    );
    let probe_rtt: Vec<(f64, f64)> = probes
        .iter()
        .filter_map(|(w, r)| r.map(|(_, ms)| (*w, ms)))
        .collect();
    eprintln!(
        "legit traffic: sipp {} of {calls} answered 200, prober {} of {} answered 200",
        res.count("200"),
        probe_rtt.len(),
        probes.len()
    );
    let phases = [
        ("without outage", t_start, t_down),
        ("during outage", t_down, t_up),
        ("after outage", t_up, f64::MAX),
    ];
    for (what, samples) in [
        ("prober (us timing)", &probe_rtt),
        ("sipp -trace_rtt (ms timing)", &sipp_rtt),
    ] {
        for (phase, from, to) in phases {
            let v: Vec<f64> = samples
                .iter()
                .filter(|(w, _)| (from..to).contains(w))
                .map(|(_, r)| *r)
                .collect();
            assert!(!v.is_empty(), "{what}: no samples {phase}");
            let (p50, p99, max) = percentiles(&v);
            eprintln!("legit OPTIONS, {what:<27} {phase:<15} {:>5} requests  p50 {p50:.3} ms  p99 {p99:.3} ms  max {max:.3} ms", v.len());
        }
    }
    let (m50, m99, _) = percentiles(&up_mi);
    let (d50, d99, _) = percentiles(&down_mi);
    eprintln!("MI sec_ban/sec_unban with the database up: p50 {m50:.1} ms p99 {m99:.1} ms; down: p50 {d50:.1} ms p99 {d99:.1} ms");
}

// ---------------------------------------------------------------------------
// 5. Settings that cannot work stop OpenSIPS with a message naming them; a
//    database that is merely unreachable does not.
// ---------------------------------------------------------------------------

fn refuse(env: &Env, dir: &TestDir, name: &str, db_url: &str) -> String {
    let mut vars = node_vars(db_url, "refuse", &[]);
    vars.push(("HTTP_PORT", s(opensips::free_tcp_port())));
    let (st, out) =
        opensips::run_expecting_exit(env, dir, name, NODE_CFG, &vars, Duration::from_secs(30));
    assert!(
        !st.success(),
        "[{name}] opensips should have refused to start with db_url {db_url}\n{out}"
    );
    let msg = out
        .lines()
        .filter(|l| l.contains("rsec") && (l.contains("ERROR") || l.contains("CRITICAL")))
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("\n    ");
    eprintln!("db_url {db_url}: exit {st}\n    {msg}");
    out
}

#[test]
fn bad_db_settings_refuse_start() {
    let _g = heavy();
    let (env, mut db) = require!("bad_db_settings_refuse_start");
    let dir = TestDir::new("persist_bad_db");

    for bad in [
        "mysql://nohost",
        "postgres://x",
        "mysql://rsec:rsecpw@127.0.0.1:notaport/rsec",
    ] {
        let out = refuse(env, &dir, "malformed", bad);
        assert!(
            out.contains("modparam 'db_url'"),
            "the message names db_url:\n{out}"
        );
    }

    const WRONG: &str = "Wr0ngPassw0rd";
    let out = refuse(
        env,
        &dir,
        "wrong_password",
        &format!("mysql://rsec:{WRONG}@127.0.0.1:{}/rsec", db.port),
    );
    assert!(out.contains("1045"), "MySQL error 1045:\n{out}");
    assert!(
        out.contains("db_url mysql://rsec:***@127.0.0.1"),
        "redacted URL:\n{out}"
    );
    assert!(
        !out.contains(WRONG),
        "the password must not be printed:\n{out}"
    );

    let out = refuse(
        env,
        &dir,
        "unknown_db",
        &format!("mysql://rsec:rsecpw@127.0.0.1:{}/nosuchdb", db.port),
    );
    assert!(
        out.contains("1044") || out.contains("1049"),
        "access denied / unknown database:\n{out}"
    );
    assert!(
        !out.contains("rsecpw"),
        "the password must not be printed:\n{out}"
    );

    db.sql("UPDATE rsec_version SET table_version = 99 WHERE table_name = 'rsec'");
    let out = refuse(env, &dir, "schema_99", &db.url());
    assert!(
        out.contains("version 99"),
        "names the version found:\n{out}"
    );
    db.sql(&format!(
        "UPDATE rsec_version SET table_version = {} WHERE table_name = 'rsec'",
        rsec::db::store::SCHEMA_VERSION
    ));

    // Nothing listens on the port: OpenSIPS starts, serves SIP, logs why.
    let port = opensips::free_tcp_port();
    let n = Node::start(
        env,
        &dir,
        "unreachable",
        &format!("mysql://rsec:rsecpw@127.0.0.1:{port}/rsec"),
        "u",
        &[],
    );
    assert_eq!(n.options("127.0.0.90"), Some(200));
    let err = n.os.log_lines_with(&["ERROR", "unreachable"]);
    eprintln!(
        "unreachable database at start-up:\n    {}",
        err.first()
            .map(String::as_str)
            .unwrap_or("<no ERROR line>")
            .trim()
    );
    assert!(
        !err.is_empty(),
        "an ERROR naming the unreachable database\n{}",
        n.os.tail(30)
    );
    assert!(err.iter().all(|l| !l.contains("rsecpw")), "{err:?}");
    let e =
        n.mi.call("sec_db_sync", "")
            .expect_err("sec_db_sync without a database");
    eprintln!("sec_db_sync without a database: {e:?}");
    assert_eq!(e.code, 503, "{e:?}");
    assert_eq!(
        n.mi.ok("sec_ban", r#"{"ip":"127.0.0.91","seconds":60}"#),
        "OK",
        "bans work without a database"
    );
    assert_eq!(n.options("127.0.0.91"), Some(403));
    assert!(n.mi.rsec_stat("db_errors") > 0);
    drop(n);

    // The database is down at start-up and comes back: the bans stored in
    // it are loaded then.
    db.sql(&format!(
        "INSERT INTO rsec_bans (address, reason, created, expires, node_id) VALUES ('127.0.0.92', 'manual', {}, 0, 'other')",
        now_s()
    ));
    db.stop();
    let n = Node::start(
        env,
        &dir,
        "late_db",
        &db.url(),
        "late",
        &[("PIKE_DENSITY", s(100))],
    );
    assert_eq!(
        n.options("127.0.0.92"),
        Some(200),
        "not known while the database is down"
    );
    db.start();
    let (_, took) = poll(Duration::from_secs(45), Duration::from_millis(500), || {
        (n.options("127.0.0.92") == Some(403)).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "the stored ban was never loaded after the database came back\n{}",
            n.os.tail(30)
        )
    });
    let line =
        n.os.log_lines_with(&["bans in force", "unreachable at start-up"]);
    eprintln!(
        "database back after start-up: stored ban enforced {:.1} s later; log: {}",
        took.as_secs_f64(),
        line.first().map(|l| l.trim()).unwrap_or("<none>")
    );
    assert_eq!(
        line.len(),
        1,
        "one 'loaded N bans in force (database was unreachable at start-up)' line\n{}",
        n.os.tail(30)
    );
    assert!(line[0].contains("loaded 1 bans"), "{line:?}");
    assert!(n
        .wait_event(
            &[("ev", "ban"), ("ip", "127.0.0.92"), ("source", "db")],
            Duration::from_secs(2)
        )
        .is_some());
}

// ---------------------------------------------------------------------------
// 6. rsec_whitelist: loaded at start, reloaded by MI in every worker.
// ---------------------------------------------------------------------------

#[test]
fn whitelist_from_db_and_reload() {
    let _g = heavy();
    let (env, db) = require!("whitelist_from_db_and_reload");
    const DENSITY: usize = 10;
    db.sql(
        "INSERT INTO rsec_whitelist (cidr, description) VALUES \
         ('127.0.0.80', 'office'), ('127.0.3.0/24', 'lab'), ('127.0.0.300', 'typo')",
    );
    let dir = TestDir::new("persist_whitelist");
    let n = Node::start(
        env,
        &dir,
        "node",
        &db.url(),
        "wl",
        &[("WORKERS", s(4)), ("PIKE_DENSITY", s(DENSITY))],
    );
    let skipped = n.os.log_lines_with(&["rsec_whitelist row skipped"]);
    assert_eq!(skipped.len(), 1, "the bad row is reported: {skipped:?}");
    assert!(skipped[0].contains("127.0.0.300"), "{skipped:?}");

    let list = |n: &Node| -> Vec<String> {
        let mut v: Vec<String> = mi::array(&n.mi.ok("sec_whitelist_list", ""), "whitelist")
            .iter()
            .map(|c| s(c.as_str().unwrap_or("?")))
            .collect();
        v.sort();
        v
    };
    let norm = |v: Vec<String>| -> Vec<String> {
        v.into_iter()
            .map(|c| c.trim_end_matches("/32").to_string())
            .collect()
    };
    eprintln!("whitelist at start: {:?}", list(&n));
    assert_eq!(
        norm(list(&n)),
        ["127.0.0.80", "127.0.3.0/24", "192.0.2.0/24"],
        "rsec_whitelist and the modparam"
    );

    // Concurrent floods from whitelisted sources: never banned, whichever
    // worker handles them.
    let flood_all = |src: &str, senders: usize, per: u32| -> (BTreeMap<String, usize>, usize) {
        let runs: Vec<_> = (0..senders)
            .map(|_| n.sipp("options.xml", src, "flood").calls(per, 1000).spawn())
            .collect();
        let mut tally = BTreeMap::new();
        for r in runs {
            let r = r.wait();
            r.assert_complete();
            for (k, v) in r.tally() {
                *tally.entry(k).or_insert(0) += v;
            }
        }
        let evs = n.os.wait_events(senders * per as usize, |e| {
            e.is(&[("check", "pike"), ("src", src)])
        });
        (tally, opensips::workers(evs.iter()))
    };
    for src in ["127.0.0.80", "127.0.3.7"] {
        let (t, w) = flood_all(src, 3, 40);
        eprintln!("whitelisted {src}: 120 requests -> {t:?} in {w} workers");
        assert_eq!(t.get("200"), Some(&120), "{src} is whitelisted: {t:?}");
    }
    // Control: a source not in the whitelist is banned by the same flood.
    let control = n.flood("127.0.0.82", 30);
    assert_eq!(control.count("403"), 30 - DENSITY);
    assert_eq!(n.mi.ban_ips(), ["127.0.0.82"]);

    // A new row, applied by sec_whitelist_reload in every worker at once.
    db.sql("INSERT INTO rsec_whitelist (cidr, description) VALUES ('127.0.0.81', 'new')");
    let r = n.mi.ok("sec_whitelist_reload", "");
    eprintln!("sec_whitelist_reload -> {r:?}");
    assert_eq!(r["entries"].as_u64(), Some(4), "{r:?}");
    let (t, w) = flood_all("127.0.0.81", 4, 40);
    eprintln!("after reload, 127.0.0.81: 160 requests -> {t:?} in {w} of 4 workers");
    assert_eq!(t.get("200"), Some(&160), "{t:?}");
    assert!(w >= 2, "the requests should have reached several workers");
    assert!(n
        .events(&[("check", "pike"), ("src", "127.0.0.81")])
        .iter()
        .all(|e| e.get("r") == "1"));

    // A deleted row is gone after the next reload; the modparam entry stays.
    db.sql("DELETE FROM rsec_whitelist WHERE cidr = '127.0.0.80'");
    assert_eq!(
        n.mi.ok("sec_whitelist_reload", "")["entries"].as_u64(),
        Some(3)
    );
    assert_eq!(
        norm(list(&n)),
        ["127.0.0.81", "127.0.3.0/24", "192.0.2.0/24"]
    );
    // The pike window of 127.0.0.80 (its earlier flood was never counted
    // while whitelisted) starts empty: it is banned after DENSITY requests.
    let f = n.flood("127.0.0.80", 30);
    assert_eq!(
        f.count("403"),
        30 - DENSITY,
        "no longer whitelisted: {}",
        f.describe()
    );
    let mut bans = n.mi.ban_ips();
    bans.sort();
    assert_eq!(bans, ["127.0.0.80", "127.0.0.82"]);
    assert_eq!(n.mi.rsec_stat("db_errors"), 0);
}

// ---------------------------------------------------------------------------
// 7. A full queue during an outage: the overflow is counted and logged, the
//    rest written once the database is back.
// ---------------------------------------------------------------------------

#[test]
fn full_queue_during_outage_counts_drops() {
    let _g = heavy();
    let (env, mut db) = require!("full_queue_during_outage_counts_drops");
    const QUEUE: usize = 4;
    const BANS: usize = 7;
    let dir = TestDir::new("persist_queue_full");
    let n = Node::start(
        env,
        &dir,
        "node",
        &db.url(),
        "q",
        &[("DB_QUEUE_SIZE", s(QUEUE)), ("DB_SYNC", s(1))],
    );
    db.stop();
    let ips: Vec<String> = (1..=BANS).map(|i| format!("127.0.4.{i}")).collect();
    for ip in &ips {
        assert_eq!(
            n.mi.ok("sec_ban", &format!(r#"{{"ip":"{ip}","seconds":600}}"#)),
            "OK"
        );
    }
    for ip in &ips {
        assert_eq!(
            n.options(ip),
            Some(403),
            "{ip} is enforced whether or not it can be persisted"
        );
    }
    let st = n.mi.rsec_stats();
    eprintln!("{BANS} bans with db_queue_size {QUEUE} and the database down: db_queue_depth {} db_queue_drops {}", st["db_queue_depth"], st["db_queue_drops"]);
    assert_eq!(
        (st["db_queue_depth"], st["db_queue_drops"]),
        (QUEUE as u64, (BANS - QUEUE) as u64),
        "{st:?}"
    );
    let full = n.os.log_lines_with(&["db queue full"]);
    eprintln!(
        "    {}",
        full.first()
            .map(|l| l.trim())
            .unwrap_or("<no 'db queue full' line>")
    );
    assert!(
        !full.is_empty(),
        "the overflow is logged\n{}",
        n.os.tail(20)
    );
    db.start();
    // The oldest QUEUE decisions were kept.
    poll(Duration::from_secs(45), Duration::from_millis(250), || {
        (n.mi.rsec_stat("db_queue_depth") == 0).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "the queue never drained: {:?}\n{}",
            n.mi.rsec_stats(),
            n.os.tail(20)
        )
    });
    let mut stored: Vec<String> = rows(&db, "SELECT address FROM rsec_bans")
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
    stored.sort();
    assert_eq!(
        stored,
        ips[..QUEUE].to_vec(),
        "the queued decisions, oldest first"
    );
    assert_eq!(n.mi.rsec_stat("db_queue_drops"), (BANS - QUEUE) as u64);
}
