//! JSON-RPC over mi_http (and plain HTTP GETs, for Prometheus) with a
//! hand-written HTTP/1.0 client on std::net::TcpStream.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long [`http`] and a [`Mi::new`] client wait for a reply.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// One HTTP exchange: status code and body.
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Result<(u16, String), String> {
    http_timeout(port, method, path, body, READ_TIMEOUT)
}

/// [`http`], waiting at most `read_timeout` for the reply.
pub fn http_timeout(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&str>,
    read_timeout: Duration,
) -> Result<(u16, String), String> {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(read_timeout)).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req =
        format!("{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    if let Some(b) = body {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
            b.len()
        ));
    } else {
        req.push_str("\r\n");
    }
    s.write_all(req.as_bytes())
        .map_err(|e| format!("send to {addr}: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .map_err(|e| format!("read from {addr}: {e}"))?;
    let text = String::from_utf8(raw).map_err(|_| "reply is not UTF-8".to_string())?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no HTTP header end in {text:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad status line in {head:?}"))?;
    // Honour Content-Length when present (nothing should follow, but be exact).
    let len = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok());
    let body = match len {
        Some(n) if n <= body.len() => &body[..n],
        Some(n) => return Err(format!("short body: {} of {n} bytes", body.len())),
        None => body,
    };
    Ok((status, body.to_string()))
}

/// A JSON-RPC error reply.
#[derive(Clone, Debug, PartialEq)]
pub struct MiError {
    pub code: i64,
    pub message: String,
}

/// A JSON-RPC client for one OpenSIPS mi_http.
pub struct Mi {
    pub port: u16,
    read_timeout: Duration,
    next_id: AtomicU64,
}

impl Mi {
    pub fn new(port: u16) -> Mi {
        Mi::with_timeout(port, READ_TIMEOUT)
    }

    /// A client that waits up to `read_timeout` for each reply (for
    /// commands that may themselves wait, e.g. on a database).
    pub fn with_timeout(port: u16, read_timeout: Duration) -> Mi {
        Mi {
            port,
            read_timeout,
            next_id: AtomicU64::new(1),
        }
    }

    /// Sends `{"jsonrpc":"2.0","method":method,"params":params,"id":n}`
    /// (`params` is JSON text, or "" for none); returns the request text,
    /// the reply text and the reply parsed. Transport or JSON failures are Err.
    pub fn exchange(&self, method: &str, params: &str) -> Result<(String, String, Value), String> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let req = if params.is_empty() {
            format!(
                r#"{{"jsonrpc":"2.0","method":{},"id":{id}}}"#,
                Value::from(method)
            )
        } else {
            format!(
                r#"{{"jsonrpc":"2.0","method":{},"params":{params},"id":{id}}}"#,
                Value::from(method)
            )
        };
        let (status, body) = http_timeout(self.port, "POST", "/mi", Some(&req), self.read_timeout)?;
        let j: Value = serde_json::from_str(&body)
            .map_err(|e| format!("HTTP {status}, reply is not JSON ({e}): {body:?}"))?;
        if j["jsonrpc"].as_str() != Some("2.0") || j["id"].as_u64() != Some(id) {
            return Err(format!("not a JSON-RPC reply to id {id}: {body}"));
        }
        if j.get("result").is_some() == j.get("error").is_some() {
            return Err(format!(
                "reply has neither or both of result and error: {body}"
            ));
        }
        Ok((req, body, j))
    }

    /// The result, or the JSON-RPC error. Panics on transport failures.
    pub fn call(&self, method: &str, params: &str) -> Result<Value, MiError> {
        let (req, _, j) = self
            .exchange(method, params)
            .unwrap_or_else(|e| panic!("MI {method} {params}: {e}"));
        reply(&req, &j)
    }

    /// [`call`](Self::call), printing the request and the reply as sent
    /// and received (for reports and documentation).
    pub fn show(&self, method: &str, params: &str) -> Result<Value, MiError> {
        let (req, body, j) = self
            .exchange(method, params)
            .unwrap_or_else(|e| panic!("MI {method} {params}: {e}"));
        eprintln!("    MI> {req}\n    MI< {}", body.trim_end());
        reply(&req, &j)
    }

    /// The result; panics (naming the call) on an error reply.
    pub fn ok(&self, method: &str, params: &str) -> Value {
        self.call(method, params)
            .unwrap_or_else(|e| panic!("MI {method} {params} failed: {e:?}"))
    }

    /// The error; panics when the call succeeded.
    pub fn err(&self, method: &str, params: &str) -> MiError {
        match self.call(method, params) {
            Ok(r) => panic!("MI {method} {params} should have failed, got {r}"),
            Err(e) => e,
        }
    }

    /// `get_statistics` of the whole `rsec:` group, names without the group.
    pub fn rsec_stats(&self) -> BTreeMap<String, u64> {
        rsec_group(&self.ok("get_statistics", r#"{"statistics":["rsec:"]}"#))
    }

    /// One statistic of the `rsec:` group; panics when it is missing.
    pub fn rsec_stat(&self, name: &str) -> u64 {
        *self
            .rsec_stats()
            .get(name)
            .unwrap_or_else(|| panic!("no statistic rsec:{name}"))
    }

    /// The addresses (or prefixes) listed by `sec_ban_list`, in its order.
    pub fn ban_ips(&self) -> Vec<String> {
        let l = self.ok("sec_ban_list", "");
        array(&l, "bans")
            .iter()
            .map(|b| {
                b["ip"]
                    .as_str()
                    .unwrap_or_else(|| panic!("ban without an ip in {l}"))
                    .to_string()
            })
            .collect()
    }

    /// Waits until mi_http answers (it runs in its own process, which may
    /// come up after the SIP workers).
    pub fn wait_ready(&self, limit: Duration) -> Result<Duration, String> {
        let t0 = Instant::now();
        loop {
            match self.exchange("uptime", "") {
                Ok(_) => return Ok(t0.elapsed()),
                Err(e) if t0.elapsed() > limit => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

/// The result of a parsed JSON-RPC reply, or its error.
fn reply(req: &str, j: &Value) -> Result<Value, MiError> {
    if j.get("result").is_some() {
        return Ok(j["result"].clone());
    }
    let e = &j["error"];
    match (e["code"].as_i64(), e["message"].as_str()) {
        (Some(code), Some(m)) => Err(MiError {
            code,
            message: m.to_string(),
        }),
        _ => panic!("malformed JSON-RPC error for {req}: {j}"),
    }
}

/// A `get_statistics rsec:` result as name (without the group) -> value;
/// panics on a statistic outside the group or one that is not a count.
pub fn rsec_group(result: &Value) -> BTreeMap<String, u64> {
    result
        .as_object()
        .unwrap_or_else(|| panic!("get_statistics result is not an object: {result}"))
        .iter()
        .map(|(k, v)| {
            let name = k
                .strip_prefix("rsec:")
                .unwrap_or_else(|| panic!("statistic {k} outside the rsec group"));
            (
                name.to_string(),
                v.as_u64()
                    .unwrap_or_else(|| panic!("statistic {k} = {v} is not a count")),
            )
        })
        .collect()
}

/// Member `key` of `v`, which must be an array; panics (showing `v`) when
/// it is missing or anything else.
pub fn array<'v>(v: &'v Value, key: &str) -> &'v [Value] {
    v[key]
        .as_array()
        .unwrap_or_else(|| panic!("no array {key:?} in {v}"))
}

/// name -> value of every sample in a Prometheus text exposition, and
/// name -> type from its `# TYPE` lines.
pub fn parse_metrics(body: &str) -> (BTreeMap<String, f64>, BTreeMap<String, String>) {
    let mut vals = BTreeMap::new();
    let mut types = BTreeMap::new();
    for l in body.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(t) = l.strip_prefix("# TYPE ") {
            let mut it = t.split_whitespace();
            if let (Some(n), Some(ty)) = (it.next(), it.next()) {
                types.insert(n.to_string(), ty.to_string());
            }
        } else if !l.starts_with('#') {
            let mut it = l.split_whitespace();
            let (Some(n), Some(v)) = (it.next(), it.next()) else {
                panic!("bad sample line {l:?}")
            };
            vals.insert(
                n.to_string(),
                v.parse().unwrap_or_else(|_| panic!("bad value in {l:?}")),
            );
        }
    }
    (vals, types)
}

/// Every statistic of the `rsec:` group, in export order, as documented in the README.
pub const RSEC_STATS: [&str; 36] = [
    "requests_checked",
    "pike_blocked",
    "rl_checked",
    "rl_rejected",
    "auth_failures",
    "bans_created",
    "bans_pike",
    "bans_auth",
    "bans_manual",
    "bans_rl",
    "bans_subnet",
    "bans_method",
    "bans_enum",
    "bans_scanner",
    "bans_report",
    "bans_repeat",
    "users_blocked",
    "reports",
    "scanner_checks",
    "bans_active",
    "bans_expired",
    "bans_removed",
    "dropped_while_banned",
    "table_evictions",
    "table_full",
    "lock_recoveries",
    "db_writes",
    "db_errors",
    "db_queue_depth",
    "db_queue_drops",
    "db_last_sync",
    "dry_run_bans",
    "dry_run_blocked",
    "bans_tenant_scoped",
    "tenants_overflow",
    "decisions",
];
