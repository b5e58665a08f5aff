//! rsec's tables: schema check, batched writes of ban decisions, the
//! start-up load and the change log other nodes import.
//!
//! Every value put into SQL is rsec's own (formatted addresses, reason
//! names, numbers) or a node id validated at start-up; [`sql_text`] still
//! refuses anything outside a safe character set, so no escaping is needed.

use crate::engine::queue::{Change, ChangeOp};
use crate::engine::{Cidr, Reason};

use super::mysql::{Conn, DbError, Row};

/// The schema version this build reads and writes (include/rsec-mysql.sql).
pub const SCHEMA_VERSION: u32 = 1;

const US: u64 = 1_000_000;

/// A ban as stored: times in Unix seconds, expires 0 = until unbanned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoredBan {
    pub target: Cidr,
    pub reason: Reason,
    pub created_s: u64,
    pub expires_s: u64,
}

/// One row of the change log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedChange {
    pub id: u64,
    pub unban: bool,
    pub ban: StoredBan,
    pub node_id: String,
}

/// A node id: 1-64 characters of `[A-Za-z0-9._-]`.
pub fn valid_node_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

fn sql_text(s: &str) -> Result<&str, DbError> {
    if s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-:/".contains(&b))
    {
        Ok(s)
    } else {
        Err(DbError {
            code: 0,
            message: format!("refusing to put '{s}' into SQL"),
        })
    }
}

/// Checks rsec_version; the error says how to fix it.
pub fn check_schema(c: &Conn) -> Result<(), String> {
    let rows = c
        .query("SELECT table_version FROM rsec_version WHERE table_name = 'rsec'")
        .map_err(|e| {
            if e.code == 1146 {
                "the rsec tables do not exist: create them with include/rsec-mysql.sql".to_owned()
            } else {
                format!("cannot read rsec_version: {e}")
            }
        })?;
    let v = rows.first().and_then(|r| r.first().cloned().flatten());
    match v.as_deref().map(str::parse::<u32>) {
        Some(Ok(SCHEMA_VERSION)) => Ok(()),
        Some(Ok(other)) => Err(format!(
            "schema version {other} in rsec_version, this rsec needs {SCHEMA_VERSION}: upgrade the tables (include/rsec-mysql.sql) or rsec"
        )),
        _ => Err("rsec_version has no valid 'rsec' row: create the tables with include/rsec-mysql.sql".to_owned()),
    }
}

fn secs(us: u64) -> u64 {
    us / US
}

/// Writes a batch of decisions in one transaction.
pub fn write_batch(c: &Conn, node_id: &str, batch: &[Change]) -> Result<(), DbError> {
    let node = sql_text(node_id)?;
    c.exec("START TRANSACTION")?;
    let r = (|| {
        for ch in batch {
            let addr = ch.target.to_string();
            let addr = sql_text(&addr)?;
            let reason = ch.reason.as_str();
            let (created, expires) = (secs(ch.created_us), secs(ch.expires_us));
            match ch.op {
                ChangeOp::Ban => {
                    c.exec(&format!(
                        "INSERT INTO rsec_bans (address, reason, created, expires, node_id) \
                         VALUES ('{addr}', '{reason}', {created}, {expires}, '{node}') \
                         ON DUPLICATE KEY UPDATE reason = VALUES(reason), created = VALUES(created), \
                         expires = VALUES(expires), node_id = VALUES(node_id)"
                    ))?;
                    log_change(c, "ban", addr, reason, created, expires, node)?;
                }
                ChangeOp::Unban => {
                    c.exec(&format!("DELETE FROM rsec_bans WHERE address = '{addr}'"))?;
                    log_change(c, "unban", addr, reason, created, expires, node)?;
                }
                ChangeOp::Expire => {
                    // Only the ban that lapsed: a newer one for the same
                    // address (from another node) stays.
                    c.exec(&format!(
                        "DELETE FROM rsec_bans WHERE address = '{addr}' AND expires <> 0 AND expires <= {expires}"
                    ))?;
                }
            }
        }
        Ok(())
    })();
    match r {
        Ok(()) => c.exec("COMMIT").map(|_| ()),
        Err(e) => {
            let _ = c.exec("ROLLBACK");
            Err(e)
        }
    }
}

fn log_change(
    c: &Conn,
    op: &str,
    addr: &str,
    reason: &str,
    created: u64,
    expires: u64,
    node: &str,
) -> Result<(), DbError> {
    c.exec(&format!(
        "INSERT INTO rsec_ban_changes (op, address, reason, created, expires, node_id) \
         VALUES ('{op}', '{addr}', '{reason}', {created}, {expires}, '{node}')"
    ))
    .map(|_| ())
}

fn parse_ban(r: &[Option<String>]) -> Option<StoredBan> {
    let s = |i: usize| r.get(i).cloned().flatten();
    Some(StoredBan {
        target: Cidr::parse(&s(0)?).ok()?,
        reason: Reason::parse(&s(1)?)?,
        created_s: s(2)?.parse().ok()?,
        expires_s: s(3)?.parse().ok()?,
    })
}

/// Bans in force at `now_s`, and how many rows could not be read.
pub fn load_bans(c: &Conn, now_s: u64) -> Result<(Vec<StoredBan>, usize), DbError> {
    let rows = c.query(&format!(
        "SELECT address, reason, created, expires FROM rsec_bans WHERE expires = 0 OR expires > {now_s}"
    ))?;
    let total = rows.len();
    let bans: Vec<StoredBan> = rows.iter().filter_map(|r| parse_ban(r)).collect();
    let bad = total - bans.len();
    Ok((bans, bad))
}

/// Highest change id so far (0 for an empty log).
pub fn last_change_id(c: &Conn) -> Result<u64, DbError> {
    let rows = c.query("SELECT COALESCE(MAX(id), 0) FROM rsec_ban_changes")?;
    Ok(rows
        .first()
        .and_then(|r| r.first().cloned().flatten())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0))
}

/// Changes with id greater than `after`, oldest first, at most `limit`.
pub fn changes_since(c: &Conn, after: u64, limit: u32) -> Result<Vec<LoggedChange>, DbError> {
    let rows: Vec<Row> = c.query(&format!(
        "SELECT id, op, address, reason, created, expires, node_id FROM rsec_ban_changes \
         WHERE id > {after} ORDER BY id LIMIT {limit}"
    ))?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            let id = r.first()?.as_deref()?.parse().ok()?;
            let unban = r.get(1)?.as_deref()? == "unban";
            let ban = parse_ban(&r[2..6])?;
            let node_id = r.get(6)?.clone()?;
            Some(LoggedChange {
                id,
                unban,
                ban,
                node_id,
            })
        })
        .collect())
}

/// Deletes change-log rows older than `max_age_s` and lapsed bans.
pub fn prune(c: &Conn, max_age_s: u64, now_s: u64) -> Result<u64, DbError> {
    let a = c.exec(&format!(
        "DELETE FROM rsec_ban_changes WHERE changed < NOW() - INTERVAL {max_age_s} SECOND"
    ))?;
    let b = c.exec(&format!(
        "DELETE FROM rsec_bans WHERE expires <> 0 AND expires <= {now_s}"
    ))?;
    Ok(a + b)
}

/// Whitelisted prefixes stored in rsec_whitelist, and the rows refused.
pub fn load_whitelist(c: &Conn) -> Result<(Vec<Cidr>, Vec<String>), DbError> {
    let rows = c.query("SELECT cidr FROM rsec_whitelist")?;
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    for r in rows {
        if let Some(Some(s)) = r.first() {
            match Cidr::parse(s) {
                Ok(c) => ok.push(c),
                Err(e) => bad.push(e.to_string()),
            }
        }
    }
    Ok((ok, bad))
}
