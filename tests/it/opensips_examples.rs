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
//! * rsec-grafana.json: a valid dashboard whose queries name only rsec's
//!   statistics (read from the `stats!` list of src/glue/stats.rs) and the
//!   per-tenant metrics of [`TENANT_METRICS`], without OpenSIPS; with it,
//!   every metric it uses is on rsec-prometheus.cfg's metrics page, the
//!   per-tenant ones too once a request names each tenant, labelled by the
//!   example's rule as the dashboard reads them.
//!
//! Needs OpenSIPS (with exec, httpd, mi_http, prometheus, mi_fifo) and, for the cluster, MariaDB; without them each test skips
//! (support::skip).

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

// ---------------------------------------------------------------------------
// rsec-grafana.json: the dashboard for rsec-prometheus.cfg's metrics.

/// The per-tenant statistics (group `rsec_tenant`, named
/// `<metric>-<tenant>`), shown by rsec-prometheus.cfg's labels rule as
/// `opensips_rsec_tenant_<metric>{tenant="..."}`. The dashboard's Tenants
/// row may use these and no others.
const TENANT_METRICS: [&str; 6] = [
    "checked",
    "blocked",
    "bans",
    "dry_run_bans",
    "dry_run_blocked",
    "auth_failures",
];

/// What the per-tenant metrics are named under (see [`TENANT_METRICS`]).
const TENANT_PREFIX: &str = "opensips_rsec_tenant_";

/// The module's statistics source, where the `stats!` list names them all.
const STATS_RS: &str = include_str!("../../src/glue/stats.rs");

/// Every statistic name in the `stats! { ... }` list of src/glue/stats.rs
/// (one `"name" => fn = |e| ...;` line each), in order.
fn rsec_stat_names() -> Vec<String> {
    let body = STATS_RS
        .split_once("\nstats! {")
        .expect("src/glue/stats.rs has a `stats! {` list")
        .1;
    let body = body
        .split_once("\n}")
        .expect("the stats! list ends with `}`")
        .0;
    let names: Vec<String> = body
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("//"))
        .map(|l| {
            let name = l
                .strip_prefix('"')
                .and_then(|l| l.split_once("\" =>"))
                .unwrap_or_else(|| panic!("unexpected line in the stats! list: {l:?}"))
                .0;
            name.to_string()
        })
        .collect();
    assert!(
        names.len() > 20,
        "read too few statistics from stats.rs: {names:?}"
    );
    names
}

fn dashboard() -> serde_json::Value {
    let text = example("rsec-grafana.json");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("rsec-grafana.json: {e}"))
}

/// Every panel of the dashboard, rows and the panels nested in collapsed
/// rows included.
fn panels(d: &serde_json::Value) -> Vec<&serde_json::Value> {
    fn walk<'v>(list: &'v serde_json::Value, out: &mut Vec<&'v serde_json::Value>) {
        for p in list.as_array().into_iter().flatten() {
            out.push(p);
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&d["panels"], &mut out);
    out
}

/// Every PromQL expression of the dashboard, with where it is: each
/// panel target's `expr`, and each query variable's query.
fn dashboard_queries(d: &serde_json::Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in panels(d) {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("panel {}: a target without expr: {t}", p["title"]));
            out.push((format!("panel {}", p["title"]), expr.to_string()));
        }
    }
    for v in d["templating"]["list"].as_array().into_iter().flatten() {
        if v["type"] == "query" {
            let q = v["query"]["query"]
                .as_str()
                .or(v["query"].as_str())
                .unwrap_or_else(|| panic!("variable {}: no query", v["name"]));
            out.push((format!("variable {}", v["name"]), q.to_string()));
        }
    }
    out
}

/// The metric names in a PromQL expression: every identifier starting
/// with `opensips_`.
fn metric_names(expr: &str) -> Vec<String> {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("opensips_") {
        let before = rest[..at].chars().next_back();
        let end = rest[at..]
            .find(|c: char| !ident(c))
            .map_or(rest.len(), |e| at + e);
        if !before.is_some_and(ident) {
            out.push(rest[at..end].to_string());
        }
        rest = &rest[end..];
    }
    out
}

/// Every metric the dashboard names, each with the first place naming it.
fn dashboard_metrics(d: &serde_json::Value) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    for (place, expr) in dashboard_queries(d) {
        for m in metric_names(&expr) {
            out.entry(m).or_insert_with(|| place.clone());
        }
    }
    out
}

#[test]
fn grafana_metric_names_are_found_in_expressions() {
    assert_eq!(
        metric_names(
            r#"sum(rate(opensips_rsec_pike_blocked{instance=~"$instance"}[$__rate_interval])) / time() - opensips_rsec_db_last_sync > 0 and xopensips_no"#
        ),
        ["opensips_rsec_pike_blocked", "opensips_rsec_db_last_sync"]
    );
    assert!(rsec_stat_names().contains(&"db_last_sync".to_string()));
}

#[test]
fn grafana_dashboard_is_a_valid_dashboard() {
    let d = dashboard();
    for key in ["title", "uid"] {
        assert!(
            d[key].as_str().is_some_and(|s| !s.is_empty()),
            "no {key} in the dashboard"
        );
    }
    assert!(
        d["schemaVersion"].as_u64().is_some_and(|v| v >= 36),
        "schemaVersion {} (want 36 or later: datasource references by uid)",
        d["schemaVersion"]
    );

    // The variables: the Prometheus data source (so the dashboard works
    // whatever the data source is called, imported or provisioned), the
    // instances, the tenants.
    let vars = d["templating"]["list"].as_array().expect("templating.list");
    let var = |name: &str| {
        vars.iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no ${name} variable"))
    };
    assert_eq!(var("DS_PROMETHEUS")["type"], "datasource");
    assert_eq!(var("DS_PROMETHEUS")["query"], "prometheus");
    assert_eq!(var("instance")["type"], "query");
    assert_eq!(var("tenant")["type"], "query");
    let ds = serde_json::json!({"type": "prometheus", "uid": "${DS_PROMETHEUS}"});
    for v in vars.iter().filter(|v| v["type"] == "query") {
        assert_eq!(v["datasource"], ds, "variable {}", v["name"]);
    }

    let all = panels(&d);
    assert!(all.len() > 10, "only {} panels", all.len());
    let mut ids = std::collections::BTreeSet::new();
    for p in &all {
        let id = p["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("panel {} has no id", p["title"]));
        assert!(ids.insert(id), "panel id {id} used twice");
        assert!(
            p["title"].as_str().is_some_and(|t| !t.is_empty()),
            "panel {id} has no title"
        );
        for k in ["h", "w", "x", "y"] {
            assert!(p["gridPos"][k].is_u64(), "panel {id}: gridPos.{k}");
        }
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"], ds, "panel {id} {}", p["title"]);
        assert!(
            p["description"].as_str().is_some_and(|s| s.len() > 40),
            "panel {id} {} says nothing about what it shows",
            p["title"]
        );
        let targets = p["targets"].as_array().map_or(&[][..], |t| &t[..]);
        assert!(
            !targets.is_empty(),
            "panel {id} {} has no query",
            p["title"]
        );
        for t in targets {
            assert_eq!(t["datasource"], ds, "panel {id}: target {t}");
            let expr = t["expr"].as_str().unwrap_or_default();
            assert!(
                expr.contains("instance=~\"$instance\""),
                "panel {id} {}: not filtered by $instance: {expr}",
                p["title"]
            );
        }
    }
    // The Tenants row holds every panel on the per-tenant metrics, the top
    // tenants by blocked/s among them.
    let tenants = all
        .iter()
        .find(|p| p["type"] == "row" && p["title"] == "Tenants")
        .expect("a Tenants row");
    let in_row = tenants["panels"].as_array().map_or(&[][..], |p| &p[..]);
    let ids_in_row: Vec<_> = in_row.iter().map(|p| &p["id"]).collect();
    for p in &all {
        if p["targets"].to_string().contains(TENANT_PREFIX) {
            assert!(
                ids_in_row.contains(&&p["id"]),
                "panel {} uses tenant metrics outside the Tenants row",
                p["title"]
            );
        }
    }
    assert!(
        in_row.iter().any(|p| p["targets"]
            .to_string()
            .contains("topk(10, sum by (tenant) (rate(opensips_rsec_tenant_blocked")),
        "no top tenants by blocked/s in the Tenants row"
    );
}

#[test]
fn grafana_dashboard_names_only_rsec_statistics() {
    let stats = rsec_stat_names();
    let used = dashboard_metrics(&dashboard());
    let mut base = std::collections::BTreeSet::new();
    for (m, place) in &used {
        if let Some(t) = m.strip_prefix(TENANT_PREFIX) {
            assert!(
                TENANT_METRICS.contains(&t),
                "{place}: {m}: {t} is not one of TENANT_METRICS {TENANT_METRICS:?}"
            );
        } else if let Some(s) = m.strip_prefix("opensips_rsec_") {
            assert!(
                stats.iter().any(|n| n == s),
                "{place}: {m}: no statistic {s:?} in the stats! list of src/glue/stats.rs"
            );
            base.insert(s.to_string());
        } else {
            panic!("{place}: {m} is not an rsec metric");
        }
    }
    // And the dashboard shows every statistic: a new one needs a panel.
    let missing: Vec<_> = stats.iter().filter(|s| !base.contains(*s)).collect();
    assert!(
        missing.is_empty(),
        "statistics no panel of rsec-grafana.json shows: {missing:?}"
    );
}

#[test]
fn grafana_dashboard_uses_only_metrics_that_exist() {
    let Some(env) = opensips::env("grafana_dashboard_uses_only_metrics_that_exist", false) else {
        return;
    };
    let used = dashboard_metrics(&dashboard());
    let dir = TestDir::new("ex_grafana");
    let text = replace_line(
        &example("rsec-prometheus.cfg"),
        "modparam(\"httpd\", \"port\"",
        "modparam(\"httpd\", \"port\", @HTTP_PORT@)",
    );
    let tenants = ["example.com", "sip-2.example.org"];
    let template = opensips::example_as_template(&text, &dir.join("db"), &dir.join("fifo"));
    let os = OpenSips::start_with_http(env, &dir, "grafana", &template, &[]);
    let port = os.http_port.unwrap();
    Mi::new(port)
        .wait_ready(Duration::from_secs(10))
        .expect("mi_http answers");
    // One request to each tenant's domain: the module numbers the tenant,
    // and its timer registers the tenant's statistics within a second.
    for t in tenants {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let lport = sock.local_addr().unwrap().port();
        let msg = format!(
            "OPTIONS sip:x@{t} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{lport};branch=z9hG4bK-{t}\r\n\
             From: <sip:g@127.0.0.1>;tag={lport}\r\nTo: <sip:x@{t}>\r\nCall-ID: {t}-{lport}\r\n\
             CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        );
        sock.send_to(msg.as_bytes(), ("127.0.0.1", os.port))
            .unwrap();
        let mut buf = [0u8; 2048];
        sock.recv(&mut buf).expect("an answer");
    }
    let scrape = || {
        let (status, body) = mi::http(port, "GET", "/metrics", None).expect("scrape /metrics");
        assert_eq!(status, 200, "{body}");
        body
    };
    let (body, _) = opensips::poll(Duration::from_secs(5), Duration::from_millis(200), || {
        let body = scrape();
        tenants
            .iter()
            .all(|t| body.contains(&format!("{TENANT_PREFIX}checked{{tenant=\"{t}\"}}")))
            .then_some(body)
    })
    .unwrap_or_else(|| panic!("no per-tenant metrics on the page:\n{}", scrape()));
    let samples = mi::parse_metrics(&body).0;
    // Sample names without their labels.
    let names: std::collections::BTreeSet<&str> = samples
        .keys()
        .map(|k| k.split_once('{').map_or(k.as_str(), |(n, _)| n))
        .collect();

    for (m, place) in &used {
        assert!(
            names.contains(m.as_str()),
            "{place}: {m} is not on the metrics page:\n{body}"
        );
    }
    // The labels rule: every tenant statistic of the module becomes its
    // metric with the tenant as a label, a tenant with a '-' in it too;
    // each tenant had one request checked.
    for m in TENANT_METRICS {
        for t in tenants {
            let sample = format!("{TENANT_PREFIX}{m}{{tenant=\"{t}\"}}");
            let want = if m == "checked" { 1.0 } else { 0.0 };
            assert_eq!(
                samples.get(&sample),
                Some(&want),
                "no {sample} = {want} on the metrics page:\n{body}"
            );
        }
    }
}

/// `n` OPTIONS from `src` to `sip:<user>@<domain>`, one at a time; how
/// many were answered 200 (the example answers nothing to a refused one).
fn answered_200(os: &OpenSips, src: &str, user: &str, domain: &str, n: u32) -> u32 {
    let sock = std::net::UdpSocket::bind((src, 0)).unwrap_or_else(|e| panic!("bind {src}: {e}"));
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let lport = sock.local_addr().unwrap().port();
    let mut ok = 0;
    for k in 0..n {
        let tag = format!("{lport}-{k}");
        let msg = format!(
            "OPTIONS sip:{user}@{domain} SIP/2.0\r\nVia: SIP/2.0/UDP {src}:{lport};branch=z9hG4bK-{tag}\r\n\
             From: <sip:t@{src}>;tag={tag}\r\nTo: <sip:{user}@{domain}>\r\nCall-ID: {tag}@{src}\r\n\
             CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        );
        sock.send_to(msg.as_bytes(), ("127.0.0.1", os.port))
            .unwrap();
        let mut buf = [0u8; 2048];
        if let Ok(len) = sock.recv(&mut buf) {
            if buf[..len].starts_with(b"SIP/2.0 200") {
                ok += 1;
            }
        }
    }
    ok
}

/// rsec-tenants.cfg as written, its documentation prefixes moved into
/// 127/8 (tests send from loopback only) and mi_http added for the test's
/// MI client: a trunk passes what bans a phone, a tenant's trusted address
/// is trusted for that tenant only, and the trial profile only reports.
#[test]
fn tenants_example_judges_trunks_phones_tenants_and_a_trial_apart() {
    let Some(env) = opensips::env(
        "tenants_example_judges_trunks_phones_tenants_and_a_trial_apart",
        false,
    ) else {
        return;
    };
    let dir = TestDir::new("ex_tenants");
    let text = example("rsec-tenants.cfg")
        .replace("198.51.100.0/24=trunk", "127.0.120.0/24=trunk")
        .replace("example.com=192.0.2.77", "example.com=127.0.122.77");
    let text = replace_line(
        &text,
        "loadmodule \"mi_fifo.so\"",
        "loadmodule \"mi_fifo.so\"\nloadmodule \"httpd.so\"\nloadmodule \"mi_http.so\"\n\
         modparam(\"httpd\", \"ip\", \"127.0.0.1\")\nmodparam(\"httpd\", \"port\", @HTTP_PORT@)",
    );
    let template = opensips::example_as_template(&text, &dir.join("db"), &dir.join("fifo"));
    let os = OpenSips::start_with_http(env, &dir, "tenants", &template, &[]);
    let mi = Mi::new(os.http_port.unwrap());
    mi.wait_ready(Duration::from_secs(10))
        .expect("mi_http answers");

    assert_eq!(
        answered_200(&os, "127.0.120.5", "x", "127.0.0.1", 100),
        100,
        "trunk"
    );
    assert_eq!(
        answered_200(&os, "127.0.121.1", "x", "127.0.0.1", 40),
        30,
        "phone"
    );
    let ex = mi.ok("sec_explain", r#"{"ip":"127.0.121.1"}"#);
    assert!(
        ex["why"].as_str().unwrap().contains("31 requests in 2s"),
        "{ex}"
    );
    assert_eq!(
        answered_200(&os, "127.0.122.77", "x", "example.com", 50),
        50,
        "trusted for example.com"
    );
    assert_eq!(
        answered_200(&os, "127.0.122.77", "x", "example.org", 40),
        30,
        "not for example.org"
    );
    assert_eq!(
        answered_200(&os, "127.0.123.1", "trial-echo", "127.0.0.1", 60),
        60,
        "trial"
    );
    let lines = os.log_lines_with(&[
        "rsec: 127.0.123.1 banned (pike, 300s) profile=trial",
        "dry_run=1",
    ]);
    assert_eq!(lines.len(), 1, "{}", os.tail(30));
    let t = mi.ok("sec_tenant_list", "");
    assert_eq!(mi::array(&t, "tenants").len(), 2, "{t}");
}
