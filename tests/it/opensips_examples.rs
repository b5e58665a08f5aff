//! The shipped example configurations other than rsec.cfg (which
//! opensips_integration.rs runs), each run for real in OpenSIPS 3.6 with
//! only what must change on a test machine changed: socket, module paths,
//! log to stderr, FIFO path, HTTP port, database URL, and the path of the
//! `nft` binary.
//!
//! * rsec-nftables.cfg: every ban reaches `nft add element` with the same
//!   timeout, in the right set (IPv4 or IPv6), and lifted bans reach `nft
//!   delete element`. A stand-in `nft` records its arguments (no firewall
//!   is touched).
//! * rsec-prometheus.cfg: the metrics page carries the rsec counters under
//!   the names the example's comments promise, and they move with traffic.
//! * rsec-cluster.cfg: two nodes on one MariaDB (started by the test); a
//!   ban by traffic on the first is enforced by the second.
//!
//! Needs OpenSIPS (with exec, httpd, mi_http, prometheus, mi_fifo) and, for
//! the cluster, MariaDB; without them each test skips (support::skip).

use std::fs;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::{mariadb, mi, opensips, sip};
use mi::Mi;
use opensips::{OpenSips, TestDir};

fn example(name: &str) -> String {
    let path = Path::new(opensips::MANIFEST_DIR)
        .join("opensips-cfg-examples")
        .join(name);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `text` with the one line starting with `prefix` replaced by `line`
/// (panics unless exactly one such line exists: the example changed).
fn replace_line(text: &str, prefix: &str, line: &str) -> String {
    let n = text
        .lines()
        .filter(|l| l.trim_start().starts_with(prefix))
        .count();
    assert_eq!(
        n, 1,
        "expected one line starting with {prefix:?} in the example"
    );
    text.lines()
        .map(|l| {
            if l.trim_start().starts_with(prefix) {
                line.to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `n` OPTIONS from `src`, one after the other, each waiting up to 300 ms
/// for its own answer (these examples drop banned sources without a
/// reply). Returns (answered 200, unanswered); any other answer panics.
fn ask(port: u16, src: Ipv4Addr, n: u32) -> (u32, u32) {
    let (mut answered, mut silent) = (0, 0);
    for _ in 0..n {
        match sip::options(&src.to_string(), port, "ex", Duration::from_millis(300)) {
            Some(200) => answered += 1,
            None => silent += 1,
            Some(code) => panic!("unexpected {code} answer to {src}"),
        }
    }
    (answered, silent)
}

/// `f`'s first Some within `limit` (polled every 100 ms); panics naming
/// `what` after that.
fn wait_for<T>(what: &str, limit: Duration, f: impl FnMut() -> Option<T>) -> T {
    opensips::poll(limit, Duration::from_millis(100), f)
        .unwrap_or_else(|| panic!("{what}: not within {limit:?}"))
        .0
}

/// The one nft batch the example runs for a ban: make sure the element
/// exists, remove it, add it with the ban's timeout.
fn ban(set: &str, ip: &str, timeout: &str) -> String {
    format!("add element inet rsec {set} {{ {ip} }}; delete element inet rsec {set} {{ {ip} }}; add element inet rsec {set} {{ {ip}{timeout} }}")
}

#[test]
fn nftables_example_mirrors_every_ban_into_nft() {
    let Some(env) = opensips::env("nftables_example_mirrors_every_ban_into_nft", false) else {
        return;
    };
    let dir = TestDir::new("ex_nft");
    // A stand-in nft: one line of arguments per call.
    let calls = dir.join("nft.calls");
    let nft = dir.join("nft");
    fs::write(
        &nft,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$*\" >> '{}'\n",
            calls.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&nft, fs::Permissions::from_mode(0o755)).unwrap();

    // Every nft the example's exec() lines run becomes the stand-in, so the
    // machine's firewall is never touched.
    let fake = nft.display().to_string();
    let text: String = example("rsec-nftables.cfg")
        .lines()
        .map(|l| match l.trim_start().starts_with("exec(") {
            true => l.replace("\"nft ", &format!("\"{fake} ")),
            false => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(
        text.matches(fake.as_str()).count(),
        2,
        "the example's nft calls changed:\n{text}"
    );
    let density = opensips::example_int_param(&text, "pike_density", 30) as u32;
    let template = opensips::example_as_template(&text, &dir.join("db"), &dir.join("fifo"));
    let os = OpenSips::start_probing(env, &dir, "nft", &template, &[], None);
    let nft_lines = || {
        fs::read_to_string(&calls)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };

    // A flood: `density` answers, then silence, and one nft call with the
    // ban's own timeout.
    let (answered, silent) = ask(os.port, Ipv4Addr::new(127, 0, 0, 61), density + 5);
    assert_eq!((answered, silent), (density, 5));
    let lines = wait_for("the flood's nft call", Duration::from_secs(5), || {
        Some(nft_lines()).filter(|l| !l.is_empty())
    });
    assert_eq!(lines, [ban("banned4", "127.0.0.61", " timeout 300s")]);

    // Manual bans through MI over the example's FIFO: an IPv6 prefix for a
    // minute, an IPv4 address until unbanned and then for two minutes
    // (the firewall must take the new timeout); the prefix lifted, then
    // everything flushed.
    let fifo = Fifo::new(&dir);
    fifo.call("sec_ban", r#"{"ip":"2001:db8::/32","seconds":60}"#);
    fifo.call("sec_ban", r#"{"ip":"192.0.2.9","seconds":0}"#);
    fifo.call("sec_ban", r#"{"ip":"192.0.2.9","seconds":120}"#);
    fifo.call("sec_unban", r#"{"ip":"2001:db8::/32"}"#);
    fifo.call("sec_ban_flush", "");
    let want = [
        ban("banned4", "127.0.0.61", " timeout 300s"),
        ban("banned6", "2001:db8::/32", " timeout 60s"),
        ban("banned4", "192.0.2.9", ""),
        ban("banned4", "192.0.2.9", " timeout 120s"),
        "delete element inet rsec banned6 { 2001:db8::/32 }".to_string(),
    ];
    let total = want.len() + 2;
    let lines = wait_for("the MI bans' nft calls", Duration::from_secs(5), || {
        Some(nft_lines()).filter(|l| l.len() >= total)
    });
    assert_eq!(lines[..want.len()], want, "all calls: {lines:?}");
    // The flush lifts 127.0.0.61 and 192.0.2.9, in table order.
    let mut flushed = lines[want.len()..].to_vec();
    flushed.sort();
    assert_eq!(
        flushed,
        [
            "delete element inet rsec banned4 { 127.0.0.61 }",
            "delete element inet rsec banned4 { 192.0.2.9 }"
        ]
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        nft_lines().len(),
        total,
        "an nft call too many: {:?}",
        nft_lines()
    );
}

/// JSON-RPC over the example's mi_fifo, with the reply FIFO in the test
/// dir (example_as_template sets mi_fifo's reply_dir there). Every step is
/// non-blocking with a deadline, so a dead or slow OpenSIPS fails the test
/// instead of hanging it.
struct Fifo {
    fifo: std::path::PathBuf,
    reply: std::path::PathBuf,
}

impl Fifo {
    const LIMIT: Duration = Duration::from_secs(10);

    fn new(dir: &TestDir) -> Fifo {
        Fifo {
            fifo: dir.join("fifo"),
            reply: dir.join("reply"),
        }
    }

    /// The call's result; panics on an error reply or no reply.
    fn call(&self, method: &str, params: &str) -> serde_json::Value {
        use std::io::{Read, Write};
        use std::os::unix::fs::OpenOptionsExt;
        let deadline = Instant::now() + Self::LIMIT;
        let _ = fs::remove_file(&self.reply);
        let c = std::ffi::CString::new(self.reply.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo(3) on a NUL-terminated path we own.
        assert_eq!(
            unsafe { libc::mkfifo(c.as_ptr(), 0o600) },
            0,
            "mkfifo {}",
            self.reply.display()
        );
        // Open our end first: mi_fifo gives up on a reply FIFO it cannot
        // open within a few tries.
        let mut reply = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&self.reply)
            .unwrap();
        // Writing needs mi_fifo's reader: ENOENT/ENXIO until it is there.
        let mut req = loop {
            match fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&self.fifo)
            {
                Ok(f) => break f,
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "{method}: cannot open {}: {e}",
                        self.fifo.display()
                    );
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        };
        let params = if params.is_empty() {
            String::new()
        } else {
            format!(r#","params":{params}"#)
        };
        req.write_all(
            format!(r#":reply:{{"jsonrpc":"2.0","method":"{method}","id":1{params}}}"#).as_bytes(),
        )
        .unwrap();
        drop(req);
        // EOF before any byte: mi_fifo has not opened the reply yet; EOF
        // after some: the reply is complete.
        let (mut raw, mut buf) = (Vec::new(), [0u8; 4096]);
        loop {
            match reply.read(&mut buf) {
                Ok(0) if !raw.is_empty() => break,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{method}: reading {}: {e}", self.reply.display()),
            }
            assert!(
                Instant::now() < deadline,
                "{method}: no reply from mi_fifo within {:?}",
                Self::LIMIT
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let text = String::from_utf8(raw).expect("mi_fifo reply is not UTF-8");
        let j = serde_json::from_str::<serde_json::Value>(&text)
            .unwrap_or_else(|e| panic!("{method}: reply is not JSON ({e}): {text}"));
        assert!(j.get("result").is_some(), "{method} {params}: {text}");
        j["result"].clone()
    }
}

#[test]
fn prometheus_example_exposes_the_promised_metrics() {
    let Some(env) = opensips::env("prometheus_example_exposes_the_promised_metrics", false) else {
        return;
    };
    let dir = TestDir::new("ex_prom");
    let text = replace_line(
        &example("rsec-prometheus.cfg"),
        "modparam(\"httpd\", \"port\"",
        "modparam(\"httpd\", \"port\", @HTTP_PORT@)",
    );
    let density = opensips::example_int_param(&text, "pike_density", 30) as u32;
    let template = opensips::example_as_template(&text, &dir.join("db"), &dir.join("fifo"));
    let os = OpenSips::start_with_http(env, &dir, "prom", &template, &[]);
    let port = os.http_port.unwrap();
    Mi::new(port)
        .wait_ready(Duration::from_secs(10))
        .expect("mi_http answers");

    let metric = |name: &str| -> f64 {
        let (status, body) = mi::http(port, "GET", "/metrics", None).expect("scrape /metrics");
        assert_eq!(status, 200, "{body}");
        *mi::parse_metrics(&body)
            .0
            .get(name)
            .unwrap_or_else(|| panic!("no {name} on the metrics page:\n{body}"))
    };
    // The names the example's comments promise.
    let before = metric("opensips_rsec_pike_blocked");
    assert_eq!(metric("opensips_rsec_bans_active"), 0.0);
    metric("opensips_rsec_table_evictions");
    let checked = metric("opensips_rsec_requests_checked");

    let (answered, silent) = ask(os.port, Ipv4Addr::new(127, 0, 0, 62), density + 5);
    assert_eq!((answered, silent), (density, 5));
    assert_eq!(metric("opensips_rsec_pike_blocked") - before, 5.0);
    assert_eq!(metric("opensips_rsec_bans_active"), 1.0);
    assert_eq!(
        metric("opensips_rsec_requests_checked") - checked,
        f64::from(density + 5)
    );
}

#[test]
fn cluster_example_shares_a_ban_between_two_nodes() {
    let Some(env) = opensips::env("cluster_example_shares_a_ban_between_two_nodes", false) else {
        return;
    };
    let Some(db) =
        mariadb::MariaDb::start_new("cluster_example_shares_a_ban_between_two_nodes", true)
    else {
        return;
    };
    let dir = TestDir::new("ex_cluster");
    let text = example("rsec-cluster.cfg");
    let interval = opensips::example_int_param(&text, "db_sync_interval", 5) as u64;
    let density = opensips::example_int_param(&text, "pike_density", 30) as u32;
    let ban_time = opensips::example_int_param(&text, "pike_ban_time", 300);
    let node = |id: &str| -> OpenSips {
        let t = replace_line(
            &text,
            "modparam(\"rsec\", \"node_id\"",
            &format!("modparam(\"rsec\", \"node_id\", \"{id}\")"),
        );
        let t =
            opensips::example_as_template(&t, &dir.join("db"), &dir.join(&format!("fifo-{id}")));
        // example_as_template points SQL URLs at db_text; rsec's own
        // db_url goes to the test's MariaDB.
        let t = replace_line(
            &t,
            "modparam(\"rsec\", \"db_url\"",
            &format!("modparam(\"rsec\", \"db_url\", \"{}\")", db.url()),
        );
        OpenSips::start_probing(env, &dir, id, &t, &[], None)
    };
    let a = node("proxy-1");
    let b = node("proxy-2");

    let attacker = Ipv4Addr::new(127, 0, 0, 63);
    let (answered, silent) = ask(a.port, attacker, density + 5);
    assert_eq!((answered, silent), (density, 5));
    let t0 = Instant::now();
    let imported = format!("rsec: {attacker} banned (pike, {ban_time}s) by db");
    let line = wait_for(
        "the ban imported on proxy-2",
        Duration::from_secs(interval * 3),
        || b.log_lines_with(&[&imported]).into_iter().next(),
    );
    eprintln!("proxy-2 imported the ban after {:?}: {line}", t0.elapsed());
    assert_eq!(
        ask(b.port, attacker, 3),
        (0, 3),
        "proxy-2 answers the banned source"
    );
    assert_eq!(
        ask(b.port, Ipv4Addr::new(127, 0, 0, 64), 3),
        (3, 0),
        "proxy-2 refuses an innocent source"
    );
    let rows = db.sql(&format!(
        "SELECT node_id, reason FROM rsec_bans WHERE address = '{attacker}'"
    ));
    assert_eq!(rows.trim(), "proxy-1\tpike", "rsec_bans rows: {rows}");
}
