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
//! the cluster, MariaDB; without them each test prints one `SKIP:` line.

#[path = "support/json.rs"]
mod json;
#[path = "support/mariadb.rs"]
mod mariadb;
#[path = "support/mi.rs"]
mod mi;
#[path = "support/opensips.rs"]
mod opensips;

use std::fs;
use std::net::{Ipv4Addr, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use mi::Mi;
use opensips::{OpenSips, TestDir};

fn example(name: &str) -> String {
    let path = Path::new(opensips::MANIFEST_DIR).join("opensips-cfg-examples").join(name);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `text` with the one line starting with `prefix` replaced by `line`
/// (panics unless exactly one such line exists: the example changed).
fn replace_line(text: &str, prefix: &str, line: &str) -> String {
    let n = text.lines().filter(|l| l.trim_start().starts_with(prefix)).count();
    assert_eq!(n, 1, "expected one line starting with {prefix:?} in the example");
    text.lines()
        .map(|l| if l.trim_start().starts_with(prefix) { line.to_string() } else { l.to_string() })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `n` OPTIONS from `src`, each after the previous one's answer (or 300 ms
/// of silence: these examples drop banned sources without a reply).
/// Returns (answered, unanswered).
fn ask(port: u16, src: Ipv4Addr, n: u32) -> (u32, u32) {
    assert_eq!(src.octets()[0], 127, "loopback sources only");
    let sock = UdpSocket::bind((src, 0)).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let lport = sock.local_addr().unwrap().port();
    let mut buf = [0u8; 4096];
    let (mut answered, mut silent) = (0, 0);
    for i in 0..n {
        let msg = format!(
            "OPTIONS sip:ex@127.0.0.1:{port} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {src}:{lport};branch=z9hG4bK-ex-{i}\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:ex@{src}:{lport}>;tag=ex{i}\r\n\
             To: <sip:ex@127.0.0.1:{port}>\r\n\
             Call-ID: ex-{i}-{lport}@{src}\r\n\
             CSeq: 1 OPTIONS\r\n\
             Content-Length: 0\r\n\r\n"
        );
        sock.send_to(msg.as_bytes(), ("127.0.0.1", port)).unwrap();
        match sock.recv(&mut buf) {
            Ok(len) if buf[..len].starts_with(b"SIP/2.0 200") => answered += 1,
            Ok(len) => panic!("unexpected reply: {}", String::from_utf8_lossy(&buf[..len])),
            Err(_) => silent += 1,
        }
    }
    (answered, silent)
}

fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(t0.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn nftables_example_mirrors_every_ban_into_nft() {
    let Some(env) = opensips::env("nftables_example_mirrors_every_ban_into_nft", false) else { return };
    let dir = TestDir::new("ex_nft");
    // A stand-in nft: one line of arguments per call.
    let calls = dir.join("nft.calls");
    let nft = dir.join("nft");
    fs::write(&nft, format!("#!/bin/sh\nprintf '%s\\n' \"$*\" >> '{}'\n", calls.display())).unwrap();
    fs::set_permissions(&nft, fs::Permissions::from_mode(0o755)).unwrap();

    // Every nft the example's exec() lines run becomes the stand-in, so the
    // machine's firewall is never touched.
    let fake = nft.display().to_string();
    let text: String = example("rsec-nftables.cfg")
        .lines()
        .map(|l| match l.trim_start().starts_with("exec(") {
            true => l.replace("\"nft ", &format!("\"{fake} ")).replace("; nft ", &format!("; {fake} ")),
            false => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(text.matches(fake.as_str()).count(), 3, "the example's nft calls changed:\n{text}");
    let density = 30;
    assert!(text.contains(&format!("\"pike_density\", {density})")));
    let template = opensips::example_as_template(&text, &dir.join("db"), &dir.join("fifo"));
    let template = with_reply_dir(&template, &dir);
    let os = OpenSips::start_probing(env, &dir, "nft", &template, &[], None);
    let nft_lines = || fs::read_to_string(&calls).unwrap_or_default().lines().map(str::to_string).collect::<Vec<_>>();

    // A flood: `density` answers, then silence, and one nft call with the
    // ban's own timeout.
    let (answered, silent) = ask(os.port, Ipv4Addr::new(127, 0, 0, 61), density + 5);
    assert_eq!((answered, silent), (density, 5));
    let lines = wait_for("the flood's nft calls", Duration::from_secs(5), || Some(nft_lines()).filter(|l| l.len() >= 2));
    assert_eq!(lines, ["delete element inet rsec banned4 { 127.0.0.61 }", "add element inet rsec banned4 { 127.0.0.61 timeout 300s }"]);

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
        "delete element inet rsec banned4 { 127.0.0.61 }",
        "add element inet rsec banned4 { 127.0.0.61 timeout 300s }",
        "delete element inet rsec banned6 { 2001:db8::/32 }",
        "add element inet rsec banned6 { 2001:db8::/32 timeout 60s }",
        "delete element inet rsec banned4 { 192.0.2.9 }",
        "add element inet rsec banned4 { 192.0.2.9 }",
        "delete element inet rsec banned4 { 192.0.2.9 }",
        "add element inet rsec banned4 { 192.0.2.9 timeout 120s }",
        "delete element inet rsec banned6 { 2001:db8::/32 }",
    ];
    let total = want.len() + 2;
    let lines = wait_for("the MI bans' nft calls", Duration::from_secs(5), || Some(nft_lines()).filter(|l| l.len() >= total));
    assert_eq!(lines[..want.len()], want, "all calls: {lines:?}");
    // The flush lifts 127.0.0.61 and 192.0.2.9, in table order.
    let mut flushed = lines[want.len()..].to_vec();
    flushed.sort();
    assert_eq!(flushed, ["delete element inet rsec banned4 { 127.0.0.61 }", "delete element inet rsec banned4 { 192.0.2.9 }"]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(nft_lines().len(), total, "an nft call too many: {:?}", nft_lines());
}

/// `template` with mi_fifo's reply FIFOs made in `dir` (the default,
/// /tmp/, is shared with everything else on the machine).
fn with_reply_dir(template: &str, dir: &TestDir) -> String {
    let fifo_line = template.lines().find(|l| l.contains("\"fifo_name\"")).expect("the example sets fifo_name").to_string();
    template.replace(&fifo_line, &format!("{fifo_line}\nmodparam(\"mi_fifo\", \"reply_dir\", \"{}/\")", dir.path.display()))
}

/// JSON-RPC over the example's mi_fifo, with a reply FIFO in the test dir.
struct Fifo {
    fifo: std::path::PathBuf,
    reply: std::path::PathBuf,
}

impl Fifo {
    fn new(dir: &TestDir) -> Fifo {
        Fifo { fifo: dir.join("fifo"), reply: dir.join("reply") }
    }

    /// The call's JSON reply; panics on an error reply.
    fn call(&self, method: &str, params: &str) -> json::Json {
        use std::io::{Read, Write};
        let _ = fs::remove_file(&self.reply);
        let c = std::ffi::CString::new(self.reply.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo(3) on a NUL-terminated path we own.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo {}", self.reply.display());
        let params = if params.is_empty() { String::new() } else { format!(r#","params":{params}"#) };
        // The name only: mi_fifo refuses paths, and looks for it in the
        // reply_dir the test set (see with_reply_dir).
        let req = format!(r#":reply:{{"jsonrpc":"2.0","method":"{method}","id":1{params}}}"#);
        fs::OpenOptions::new().write(true).open(&self.fifo).unwrap().write_all(req.as_bytes()).unwrap();
        // Non-blocking, so a reply that never comes fails the test instead
        // of hanging it: EOF before any byte means OpenSIPS has not opened
        // the FIFO yet, EOF after some means the reply is complete.
        use std::os::unix::fs::OpenOptionsExt;
        let mut r = fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(&self.reply).unwrap();
        let (mut raw, mut buf) = (Vec::new(), [0u8; 4096]);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match r.read(&mut buf) {
                Ok(0) if !raw.is_empty() => break,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{method}: reading {}: {e}", self.reply.display()),
            }
            assert!(Instant::now() < deadline, "{method}: no reply from mi_fifo within 10 s");
            std::thread::sleep(Duration::from_millis(10));
        }
        let text = String::from_utf8(raw).expect("mi_fifo reply is not UTF-8");
        let j = json::Json::parse(&text).unwrap_or_else(|e| panic!("{method}: reply is not JSON ({e}): {text}"));
        assert!(j.has("result"), "{method} {params}: {text}");
        j.get("result").clone()
    }
}

#[test]
fn prometheus_example_exposes_the_promised_metrics() {
    let Some(env) = opensips::env("prometheus_example_exposes_the_promised_metrics", false) else { return };
    let dir = TestDir::new("ex_prom");
    let text = replace_line(&example("rsec-prometheus.cfg"), "modparam(\"httpd\", \"port\"", "modparam(\"httpd\", \"port\", @HTTP_PORT@)");
    let template = opensips::example_as_template(&text, &dir.join("db"), &dir.join("fifo"));
    let os = OpenSips::start_with_http(env, &dir, "prom", &template, &[]);
    let port = os.http_port.unwrap();
    Mi::new(port).wait_ready(Duration::from_secs(10)).expect("mi_http answers");

    let metric = |name: &str| -> f64 {
        let (status, body) = mi::http(port, "GET", "/metrics", None).expect("scrape /metrics");
        assert_eq!(status, 200, "{body}");
        body.lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} on the metrics page:\n{body}"))
    };
    // The names the example's comments promise.
    let before = metric("opensips_rsec_pike_blocked");
    assert_eq!(metric("opensips_rsec_bans_active"), 0.0);
    metric("opensips_rsec_table_evictions");
    let checked = metric("opensips_rsec_requests_checked");

    let (answered, silent) = ask(os.port, Ipv4Addr::new(127, 0, 0, 62), 35);
    assert_eq!((answered, silent), (30, 5));
    assert_eq!(metric("opensips_rsec_pike_blocked") - before, 5.0);
    assert_eq!(metric("opensips_rsec_bans_active"), 1.0);
    assert_eq!(metric("opensips_rsec_requests_checked") - checked, 35.0);
}

#[test]
fn cluster_example_shares_a_ban_between_two_nodes() {
    let Some(env) = opensips::env("cluster_example_shares_a_ban_between_two_nodes", false) else { return };
    let Some(db) = mariadb::MariaDb::start_new("cluster_example_shares_a_ban_between_two_nodes", true) else { return };
    let dir = TestDir::new("ex_cluster");
    let text = example("rsec-cluster.cfg");
    let interval: u64 = 5;
    assert!(text.contains(&format!("\"db_sync_interval\", {interval})")));
    let node = |id: &str| -> OpenSips {
        let t = replace_line(&text, "modparam(\"rsec\", \"node_id\"", &format!("modparam(\"rsec\", \"node_id\", \"{id}\")"));
        let t = opensips::example_as_template(&t, &dir.join("db"), &dir.join(&format!("fifo-{id}")));
        // example_as_template points SQL URLs at db_text; rsec's own
        // db_url goes to the test's MariaDB.
        let t = replace_line(&t, "modparam(\"rsec\", \"db_url\"", &format!("modparam(\"rsec\", \"db_url\", \"{}\")", db.url()));
        OpenSips::start_probing(env, &dir, id, &t, &[], None)
    };
    let a = node("proxy-1");
    let b = node("proxy-2");

    let attacker = Ipv4Addr::new(127, 0, 0, 63);
    let (answered, silent) = ask(a.port, attacker, 35);
    assert_eq!((answered, silent), (30, 5));
    let t0 = Instant::now();
    let line = wait_for("the ban imported on proxy-2", Duration::from_secs(interval * 3), || {
        b.log_lines_with(&["rsec: 127.0.0.63 banned (pike, 300s) by db"]).into_iter().next()
    });
    eprintln!("proxy-2 imported the ban after {:?}: {line}", t0.elapsed());
    assert_eq!(ask(b.port, attacker, 3), (0, 3), "proxy-2 answers the banned source");
    assert_eq!(ask(b.port, Ipv4Addr::new(127, 0, 0, 64), 3), (3, 0), "proxy-2 refuses an innocent source");
    let rows = db.sql("SELECT node_id, reason FROM rsec_bans WHERE address = '127.0.0.63'");
    assert_eq!(rows.trim(), "proxy-1\tpike", "rsec_bans rows: {rows}");
}
