//! An operator's session with opensips-cli alone: every rsec MI command run
//! through the real `opensips-cli -x mi …` over mi_fifo, against a real
//! OpenSIPS 3.6 with the module loaded, while sipp sends traffic.
//!
//! opensips_operability.rs checks each MI command in depth over mi_http;
//! this suite checks what an operator actually types: positional and named
//! arguments as opensips-cli passes them, its JSON output, its exit status
//! and error text, and the mi_fifo transport. Expectations are exact.
//!
//! The last test is the external firewall's side: it subscribes a UDP
//! socket to E_SEC_BAN / E_SEC_UNBAN with `opensips-cli -x mi
//! event_subscribe` and reads the event_datagram notifications.
//!
//! Needs OpenSIPS (with mi_fifo and event_datagram), sipp and opensips-cli (`OPENSIPS_CLI`,
//! else `opensips-cli` on PATH, else target/opensips-cli/bin/opensips-cli,
//! where .ci/run installs it from PyPI); without them each test skips
//! (support::skip).
//!
//! Run: `cargo test --release --test it opensips_cli -- --nocapture` to see
//! each command and its reply.

use std::collections::{BTreeMap, BTreeSet};
use std::net::UdpSocket;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{mi, opensips, sipp, skip};
use opensips::{s, Env, OpenSips, TestDir};
use serde_json::Value;
use sipp::{Sipp, SippResult};

const CLI_CFG: &str = include_str!("../cfg/cli.cfg");

fn find_cli() -> Option<PathBuf> {
    let venv = Path::new(opensips::MANIFEST_DIR).join("target/opensips-cli/bin/opensips-cli");
    opensips::find_bin("OPENSIPS_CLI", "opensips-cli", venv.to_str()?)
}

/// OpenSIPS, sipp and opensips-cli, or None after [`skip`].
fn require(test: &str) -> Option<(&'static Env, PathBuf)> {
    let env = opensips::env(test, true)?;
    match find_cli() {
        Some(cli) => Some((env, cli)),
        None => {
            skip(
                test,
                "no opensips-cli found (set OPENSIPS_CLI, or pip install opensipscli)",
            );
            None
        }
    }
}

/// What one opensips-cli run printed.
struct Reply {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// opensips-cli pointed at one OpenSIPS's mi_fifo. Everything it needs is
/// on its command line: an empty config file (not the machine's
/// ~/.opensips-cli.cfg or /etc one), and the test's FIFO as the fallback
/// too, so it can never reach another OpenSIPS's /tmp/opensips_fifo.
struct Cli {
    bin: PathBuf,
    config: PathBuf,
    fifo: PathBuf,
    reply_dir: PathBuf,
}

/// The name opensips-cli knows an MI command by. OpenSIPS 4.0 names every
/// command `<module>:<name>` and opensips-cli checks a name against that
/// list (`which`) before sending it, so the bare names the core itself
/// would still accept do not get through it.
fn mi_name(cmd: &str) -> String {
    if !cfg!(opensips_abi = "4.0") || cmd.contains(':') {
        return cmd.to_owned();
    }
    match cmd {
        "uptime" => "core:uptime".to_owned(),
        "get_statistics" => "statistics:get".to_owned(),
        "event_subscribe" => "evi:subscribe".to_owned(),
        "subscribers_list" => "evi:subscribers".to_owned(),
        c => format!("rsec:{c}"),
    }
}

impl Cli {
    /// How long one command may take before the test fails (opensips-cli
    /// waits for FIFOs without a timeout of its own).
    const LIMIT: Duration = Duration::from_secs(20);

    fn run(&self, args: &[&str]) -> Reply {
        let fifo = self.fifo.display();
        let mut child = Command::new(&self.bin)
            .arg("-f")
            .arg(&self.config)
            .args(["-o", "communication_type=fifo"])
            .args([
                "-o",
                &format!("fifo_file={fifo}"),
                "-o",
                &format!("fifo_file_fallback={fifo}"),
            ])
            .args([
                "-o",
                &format!("fifo_reply_dir={}", self.reply_dir.display()),
            ])
            .args(["-o", "output_type=pretty-print", "-x", "mi"])
            .args(args.first().map(|c| mi_name(c)))
            .args(args.iter().skip(1))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.bin.display()));
        let t0 = Instant::now();
        while child.try_wait().unwrap().is_none() {
            if t0.elapsed() > Self::LIMIT {
                // SAFETY: kill(2) on the process group made for this child.
                unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
                let _ = child.wait();
                panic!(
                    "opensips-cli -x mi {args:?} did not finish within {:?}",
                    Self::LIMIT
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let out = child.wait_with_output().unwrap();
        let r = Reply {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: strip_ansi(&String::from_utf8_lossy(&out.stderr)),
        };
        eprintln!(
            "    $ opensips-cli -x mi {}\n{}{}",
            args.join(" "),
            indent(&r.stdout),
            indent(&r.stderr)
        );
        r
    }

    /// The parsed reply; panics (with what the CLI said) unless it succeeded.
    fn ok(&self, args: &[&str]) -> Value {
        let r = self.run(args);
        assert!(
            r.ok && r.stderr.trim().is_empty(),
            "opensips-cli -x mi {args:?} failed: {}{}",
            r.stdout,
            r.stderr
        );
        serde_json::from_str::<Value>(&r.stdout).unwrap_or_else(|e| {
            panic!(
                "opensips-cli -x mi {args:?}: output is not JSON ({e}): {}",
                r.stdout
            )
        })
    }

    /// The error text; panics when the command succeeded.
    fn err(&self, args: &[&str]) -> String {
        let r = self.run(args);
        assert!(
            !r.ok,
            "opensips-cli -x mi {args:?} should have failed, printed {}",
            r.stdout
        );
        assert!(
            r.stdout.trim().is_empty(),
            "a failed command printed a result: {}",
            r.stdout
        );
        r.stderr
    }

    fn ban_ips(&self) -> Vec<String> {
        let l = self.ok(&["sec_ban_list"]);
        assert_eq!(
            l["count"].as_u64(),
            Some(mi::array(&l, "bans").len() as u64),
            "count disagrees with the list: {l}"
        );
        mi::array(&l, "bans")
            .iter()
            .map(|b| b["ip"].as_str().unwrap().to_string())
            .collect()
    }
}

/// opensips-cli colours its log lines even when stderr is not a terminal.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // CSI: ESC [ parameters, ended by a letter.
            chars.by_ref().find(|c| c.is_ascii_alphabetic());
        } else {
            out.push(c);
        }
    }
    out
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("      {l}\n")).collect()
}

/// An OpenSIPS running cli.cfg, and opensips-cli for it.
struct Session<'a> {
    env: &'a Env,
    dir: &'a TestDir,
    os: OpenSips,
    cli: Cli,
    runs: std::cell::Cell<u32>,
}

impl<'a> Session<'a> {
    fn start(env: &'a Env, dir: &'a TestDir, cli: PathBuf) -> Session<'a> {
        let fifo = dir.join("fifo");
        let vars = [
            ("FIFO", fifo.display().to_string()),
            ("REPLY_DIR", dir.path.display().to_string()),
            ("PIKE_DENSITY", s(10)),
            ("RL_LIMIT", s(5)),
        ];
        let os = OpenSips::start(env, dir, "cli", CLI_CFG, &vars);
        let config = dir.join("opensips-cli.cfg");
        std::fs::write(&config, "").unwrap();
        let cli = Cli {
            bin: cli,
            config,
            fifo,
            reply_dir: dir.path.clone(),
        };
        // The MI FIFO process may come up after the SIP workers answer.
        let mut tries = 0;
        while !cli.run(&["uptime"]).ok {
            tries += 1;
            assert!(
                tries < 50,
                "mi_fifo does not answer opensips-cli:\n{}",
                os.tail(40)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Session {
            env,
            dir,
            os,
            cli,
            runs: std::cell::Cell::new(0),
        }
    }

    /// `n` OPTIONS from `src` to user `service` at `rate`/s, every one answered.
    fn send(&self, src: &str, service: &str, n: u32, rate: u32) -> SippResult {
        let k = self.runs.get() + 1;
        self.runs.set(k);
        let name = format!("run{k}_{service}_{}", src.replace('.', "_"));
        let r = Sipp::new(self.env, self.dir, &name, "options.xml", self.os.port)
            .from(src)
            .service(service)
            .calls(n, rate)
            .run();
        r.assert_complete();
        r
    }

    fn stats(&self) -> BTreeMap<String, u64> {
        mi::rsec_group(&self.cli.ok(&["get_statistics", "rsec:"]))
    }
}

#[test]
fn operator_lists_inspects_adds_and_removes_bans_with_opensips_cli() {
    let Some((env, cli)) =
        require("operator_lists_inspects_adds_and_removes_bans_with_opensips_cli")
    else {
        return;
    };
    let dir = TestDir::new("cli_bans");
    let t = Session::start(env, &dir, cli);
    let cli = &t.cli;

    // Nothing banned yet, and every statistic is there.
    assert!(cli.ban_ips().is_empty());
    let names: BTreeSet<String> = t.stats().into_keys().collect();
    assert_eq!(
        names,
        mi::RSEC_STATS.iter().map(|n| n.to_string()).collect(),
        "get_statistics rsec: lists other statistics"
    );

    // A flood bans its source; the operator sees why, and how often it hit.
    let flood = t.send("127.0.0.31", "flood", 30, 200);
    assert_eq!(
        (flood.count("200"), flood.count("403")),
        (10, 20),
        "{}",
        flood.describe()
    );
    let list = cli.ok(&["sec_ban_list"]);
    assert_eq!(list["count"].as_u64(), Some(1), "{list}");
    let ban = &list["bans"][0];
    assert_eq!(ban["ip"].as_str(), Some("127.0.0.31"));
    assert_eq!(ban["reason"].as_str(), Some("pike"));
    assert_eq!(
        ban["hits"].as_u64(),
        Some(19),
        "the crossing request is the ban's cause, the 19 after it are hits: {ban}"
    );
    let left = ban["seconds_left"].as_u64().unwrap();
    assert!(
        (295..=300).contains(&left),
        "pike_ban_time is 300, {left} s left"
    );

    // The filter form, positional as an operator types it.
    let only = cli.ok(&["sec_ban_list", "127.0.0.31"]);
    assert_eq!(only["count"].as_u64(), Some(1), "{only}");
    let none = cli.ok(&["sec_ban_list", "127.0.0.32"]);
    assert_eq!(none["count"].as_u64(), Some(0), "{none}");

    let info = cli.ok(&["sec_ip_info", "127.0.0.31"]);
    assert_eq!(info["banned"].as_bool(), Some(true), "{info}");
    assert_eq!(info["whitelisted"].as_bool(), Some(false), "{info}");
    assert_eq!(info["ban"]["reason"].as_str(), Some("pike"), "{info}");
    assert_eq!(info["pike"]["density"].as_u64(), Some(10), "{info}");
    let top = cli.ok(&["sec_top", "3"]);
    assert_eq!(
        top["sources"][0]["ip"].as_str(),
        Some("127.0.0.31"),
        "{top}"
    );

    // A manual ban on a prefix, named arguments this time.
    cli.ok(&["sec_ban", "ip=192.0.2.0/24", "seconds=600", "reason=manual"]);
    let both: BTreeSet<String> = cli.ban_ips().into_iter().collect();
    assert_eq!(
        both,
        ["127.0.0.31", "192.0.2.0/24"].map(String::from).into()
    );
    let info = cli.ok(&["sec_ip_info", "192.0.2.77"]);
    assert_eq!(
        info["banned"].as_bool(),
        Some(true),
        "an address inside the banned prefix: {info}"
    );

    // Unban: the very next requests from the source pass, in every worker.
    assert_eq!(cli.ok(&["sec_unban", "127.0.0.31"]).as_str(), Some("OK"));
    assert_eq!(cli.ban_ips(), ["192.0.2.0/24"]);
    let after = t.send("127.0.0.31", "flood", 5, 50);
    assert_eq!(
        after.count("200"),
        5,
        "unbanned source still refused: {}",
        after.describe()
    );

    // Rate-limit keys in use.
    let rl = t.send("127.0.0.33", "rl", 8, 100);
    assert_eq!(
        (rl.count("200"), rl.count("429")),
        (5, 3),
        "{}",
        rl.describe()
    );
    let keys = cli.ok(&["sec_rl_list"]);
    assert_eq!(keys["count"].as_u64(), Some(1), "{keys}");
    let key = &keys["keys"][0];
    assert_eq!(key["key"].as_str(), Some("cli-rl"));
    assert_eq!(
        (
            key["limit"].as_u64(),
            key["used"].as_u64(),
            key["available"].as_u64()
        ),
        (Some(5), Some(5), Some(0)),
        "{key}"
    );

    // Every statistic moved by exactly what was done: 30 + 5 pike checks,
    // 20 refused (1 crossing + 19 while banned), 8 rl checks, 3 rejected,
    // one pike ban and one manual ban, one of them lifted; nothing else.
    let moved = [
        ("requests_checked", 35),
        ("pike_blocked", 20),
        ("dropped_while_banned", 19),
        ("rl_checked", 8),
        ("rl_rejected", 3),
        ("bans_created", 2),
        ("bans_pike", 1),
        ("bans_manual", 1),
        ("bans_active", 1),
        ("bans_removed", 1),
        ("decisions", 2),
    ];
    let want: BTreeMap<String, u64> = mi::RSEC_STATS
        .iter()
        .map(|n| {
            (
                n.to_string(),
                moved.iter().find(|(m, _)| m == n).map_or(0, |(_, v)| *v),
            )
        })
        .collect();
    assert_eq!(t.stats(), want);

    // Flush lifts what is left and says how much that was.
    assert_eq!(cli.ok(&["sec_ban_flush"])["removed"].as_u64(), Some(1));
    assert!(cli.ban_ips().is_empty());
    assert_eq!(t.stats()["bans_active"], 0);
}

#[test]
fn operator_manages_the_whitelist_with_opensips_cli() {
    let Some((env, cli)) = require("operator_manages_the_whitelist_with_opensips_cli") else {
        return;
    };
    let dir = TestDir::new("cli_whitelist");
    let t = Session::start(env, &dir, cli);
    let cli = &t.cli;

    let wl = |c: &Cli| -> Vec<String> {
        mi::array(&c.ok(&["sec_whitelist_list"]), "whitelist")
            .iter()
            .map(|e| e.as_str().unwrap().to_string())
            .collect()
    };
    assert!(wl(cli).is_empty());

    assert_eq!(
        cli.ok(&["sec_whitelist_add", "127.0.0.40/30"]).as_str(),
        Some("OK")
    );
    assert_eq!(wl(cli), ["127.0.0.40/30"]);

    // A whitelisted source floods unharmed and cannot be banned by hand.
    let flood = t.send("127.0.0.41", "flood", 30, 200);
    assert_eq!(flood.count("200"), 30, "{}", flood.describe());
    let e = cli.err(&["sec_ban", "127.0.0.41"]);
    assert!(
        e.contains("403") && e.contains("127.0.0.41") && e.contains("whitelisted"),
        "{e}"
    );
    assert!(cli.ban_ips().is_empty());
    assert_eq!(
        cli.ok(&["sec_ip_info", "127.0.0.42"])["whitelisted"].as_bool(),
        Some(true)
    );

    // Removed: the same flood is stopped at the density again.
    assert_eq!(
        cli.ok(&["sec_whitelist_del", "127.0.0.40/30"]).as_str(),
        Some("OK")
    );
    assert!(wl(cli).is_empty());
    let flood = t.send("127.0.0.42", "flood", 30, 200);
    assert_eq!(
        (flood.count("200"), flood.count("403")),
        (10, 20),
        "{}",
        flood.describe()
    );
    assert_eq!(cli.ban_ips(), ["127.0.0.42"]);
}

#[test]
fn bad_arguments_are_cli_errors_that_name_the_value() {
    let Some((env, cli)) = require("bad_arguments_are_cli_errors_that_name_the_value") else {
        return;
    };
    let dir = TestDir::new("cli_errors");
    let t = Session::start(env, &dir, cli);
    let cli = &t.cli;

    let cases: [(&[&str], &[&str]); 6] = [
        (&["sec_ban", "999.1.1.1"], &["400", "999.1.1.1"]),
        (&["sec_ban", "192.0.2.1", "soon"], &["400", "soon"]),
        (&["sec_unban", "192.0.2.99"], &["404", "192.0.2.99"]),
        (&["sec_ip_info", "not-an-ip"], &["400", "not-an-ip"]),
        (
            &["sec_whitelist_add", "10.0.0.0/33"],
            &["400", "10.0.0.0/33"],
        ),
        (&["sec_top", "many"], &["400", "many"]),
    ];
    for (args, needles) in cases {
        let e = cli.err(args);
        for n in needles {
            assert!(
                e.contains(n),
                "opensips-cli -x mi {args:?}: {n:?} not in {e:?}"
            );
        }
    }
    // Nothing was half-done, and the MI process still answers.
    assert!(cli.ban_ips().is_empty());
    assert!(mi::array(&cli.ok(&["sec_whitelist_list"]), "whitelist").is_empty());
    assert_eq!(t.stats()["bans_created"], 0);
}

/// The JSON-RPC notifications event_datagram sends to one UDP socket.
struct Subscriber {
    sock: UdpSocket,
}

impl Subscriber {
    fn new() -> Subscriber {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        Subscriber { sock }
    }

    fn target(&self) -> String {
        format!("udp:{}", self.sock.local_addr().unwrap())
    }

    /// The next notification: (event name, params), or None after `wait`.
    fn next(&self, wait: Duration) -> Option<(String, Value)> {
        self.sock.set_read_timeout(Some(wait)).unwrap();
        let mut buf = [0u8; 4096];
        let n = self.sock.recv(&mut buf).ok()?;
        let text = std::str::from_utf8(&buf[..n]).expect("event datagram is not UTF-8");
        let j = serde_json::from_str::<Value>(text)
            .unwrap_or_else(|e| panic!("event datagram is not JSON ({e}): {text}"));
        let method = j["method"]
            .as_str()
            .unwrap_or_else(|| panic!("no method in {text}"))
            .to_string();
        eprintln!("    event> {text}");
        Some((method, j["params"].clone()))
    }

    fn expect(&self, event: &str, wait: Duration) -> Value {
        match self.next(wait) {
            Some((m, p)) if m == event => p,
            Some((m, p)) => panic!("expected {event}, got {m} {p}"),
            None => panic!("no {event} within {wait:?}"),
        }
    }
}

#[test]
fn a_firewall_subscribed_with_opensips_cli_follows_every_ban() {
    let Some((env, cli)) = require("a_firewall_subscribed_with_opensips_cli_follows_every_ban")
    else {
        return;
    };
    let dir = TestDir::new("cli_events");
    let t = Session::start(env, &dir, cli);
    let cli = &t.cli;
    let fw = Subscriber::new();
    // A day, as the README suggests (left out it is an hour; 0 unsubscribes).
    for ev in ["E_SEC_BAN", "E_SEC_UNBAN"] {
        assert_eq!(
            cli.ok(&["event_subscribe", ev, &fw.target(), "86400"])
                .as_str(),
            Some("OK")
        );
        let subs = cli.ok(&["subscribers_list", ev]);
        let mine = &subs["Event"]["Subscribers"][0];
        assert_eq!(
            mine["socket"].as_str(),
            Some(fw.target().as_str()),
            "{subs}"
        );
        assert_eq!(mine["expire"].as_u64(), Some(86400), "{subs}");
    }
    let soon = Duration::from_secs(5);
    let str_of = |p: &Value, k: &str| {
        p[k].as_str()
            .unwrap_or_else(|| panic!("no {k} in {p}"))
            .to_string()
    };

    // A ban by traffic: one notification, from the worker that decided.
    let flood = t.send("127.0.0.51", "flood", 30, 200);
    assert_eq!(flood.count("403"), 20, "{}", flood.describe());
    let p = fw.expect("E_SEC_BAN", soon);
    assert_eq!(
        (str_of(&p, "ip"), str_of(&p, "reason"), str_of(&p, "source")),
        ("127.0.0.51".into(), "pike".into(), "sec_pike_check".into())
    );
    assert_eq!(p["seconds"].as_u64(), Some(300), "{p}");
    let expires = p["expires"].as_u64().unwrap();
    let ban = cli.ok(&["sec_ban_list", "127.0.0.51"]);
    assert_eq!(
        ban["bans"][0]["expires"].as_u64(),
        Some(expires),
        "the event and the ban list disagree: {ban}"
    );

    // Manual ban and unban, from the MI process.
    cli.ok(&["sec_ban", "192.0.2.5", "120"]);
    let p = fw.expect("E_SEC_BAN", soon);
    assert_eq!(
        (str_of(&p, "ip"), str_of(&p, "reason"), str_of(&p, "source")),
        ("192.0.2.5".into(), "manual".into(), "mi".into())
    );
    assert_eq!(p["seconds"].as_u64(), Some(120), "{p}");
    cli.ok(&["sec_unban", "192.0.2.5"]);
    let p = fw.expect("E_SEC_UNBAN", soon);
    assert_eq!(
        (str_of(&p, "ip"), str_of(&p, "reason")),
        ("192.0.2.5".into(), "manual".into())
    );

    // A one-second ban: its expiry is told too, by the sweep.
    cli.ok(&["sec_ban", "192.0.2.6", "1"]);
    assert_eq!(str_of(&fw.expect("E_SEC_BAN", soon), "ip"), "192.0.2.6");
    let p = fw.expect("E_SEC_UNBAN", Duration::from_secs(10));
    assert_eq!(
        (str_of(&p, "ip"), str_of(&p, "reason")),
        ("192.0.2.6".into(), "expired".into())
    );

    // Flush: one unban per ban still in force, and then silence: nothing
    // was told twice.
    assert_eq!(cli.ok(&["sec_ban_flush"])["removed"].as_u64(), Some(1));
    let p = fw.expect("E_SEC_UNBAN", soon);
    assert_eq!(
        (str_of(&p, "ip"), str_of(&p, "reason")),
        ("127.0.0.51".into(), "flushed".into())
    );
    if let Some((m, p)) = fw.next(Duration::from_secs(2)) {
        panic!("an extra notification: {m} {p}");
    }
}
