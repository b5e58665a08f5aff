//! rsec's tables: schema check, batched writes of ban decisions, the
//! start-up load and the change log other nodes import.
//!
//! Every value put into SQL is rsec's own (formatted addresses, reason
//! names, numbers) or a node id validated at start-up; [`sql_text`] still
//! refuses anything outside a safe character set, so no escaping is needed.

use crate::engine::queue::{Change, ChangeOp};
use crate::engine::{Cidr, Note, Offense, Reason, UserKey};

use super::mysql::{Conn, DbError, Row};

/// The schema version this build reads and writes (include/rsec-mysql.sql).
pub const SCHEMA_VERSION: u32 = 2;

const US: u64 = 1_000_000;

/// A ban as stored: times in Unix seconds, expires 0 = until unbanned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoredBan {
    pub target: Cidr,
    pub reason: Reason,
    pub created_s: u64,
    pub expires_s: u64,
    pub note: Note,
}

/// An account's block as stored: Unix seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoredBlock {
    pub user: UserKey,
    pub blocked_s: u64,
    pub expires_s: u64,
}

/// What one row of the change log says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logged {
    Ban(StoredBan),
    Unban(StoredBan),
    Block(StoredBlock),
    Unblock(UserKey),
}

/// One row of the change log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedChange {
    pub id: u64,
    pub what: Logged,
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

/// Free text (a ban's note) as an SQL literal: hex digits only, so no
/// byte of it can end the string or the statement.
fn sql_bytes(b: &[u8]) -> String {
    if b.is_empty() {
        return "''".to_owned();
    }
    let mut s = String::with_capacity(3 + 2 * b.len());
    s.push_str("X'");
    for x in b {
        s.push_str(&format!("{x:02x}"));
    }
    s.push('\'');
    s
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
            let note = sql_bytes(ch.note.as_bytes());
            let user = sql_bytes(ch.user.as_bytes());
            let logged = LogRow {
                addr,
                reason,
                created,
                expires,
                node,
                note: &note,
                user: "''",
            };
            match ch.op {
                ChangeOp::Ban => {
                    c.exec(&format!(
                        "INSERT INTO rsec_bans (address, reason, created, expires, node_id, note) \
                         VALUES ('{addr}', '{reason}', {created}, {expires}, '{node}', {note}) \
                         ON DUPLICATE KEY UPDATE reason = VALUES(reason), created = VALUES(created), \
                         expires = VALUES(expires), node_id = VALUES(node_id), note = VALUES(note)"
                    ))?;
                    log_change(c, "ban", &logged)?;
                    if ch.offense.offenses > 0 {
                        write_offense(c, addr, &ch.offense, node)?;
                    }
                }
                ChangeOp::Unban => {
                    c.exec(&format!("DELETE FROM rsec_bans WHERE address = '{addr}'"))?;
                    log_change(c, "unban", &logged)?;
                }
                ChangeOp::Block => {
                    c.exec(&format!(
                        "INSERT INTO rsec_user_blocks (user, blocked, expires, node_id) \
                         VALUES ({user}, {created}, {expires}, '{node}') ON DUPLICATE KEY UPDATE \
                         blocked = VALUES(blocked), expires = VALUES(expires), node_id = VALUES(node_id)"
                    ))?;
                    log_change(
                        c,
                        "block",
                        &LogRow {
                            addr: "",
                            user: &user,
                            ..logged
                        },
                    )?;
                }
                ChangeOp::Unblock => {
                    c.exec(&format!("DELETE FROM rsec_user_blocks WHERE user = {user}"))?;
                    log_change(
                        c,
                        "unblock",
                        &LogRow {
                            addr: "",
                            user: &user,
                            ..logged
                        },
                    )?;
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

/// One row of the change log, its values already safe for SQL.
#[derive(Clone, Copy)]
struct LogRow<'a> {
    addr: &'a str,
    reason: &'a str,
    created: u64,
    expires: u64,
    node: &'a str,
    /// SQL literals (see [`sql_bytes`]).
    note: &'a str,
    user: &'a str,
}

fn log_change(c: &Conn, op: &str, l: &LogRow) -> Result<(), DbError> {
    let LogRow {
        addr,
        reason,
        created,
        expires,
        node,
        note,
        user,
    } = l;
    c.exec(&format!(
        "INSERT INTO rsec_ban_changes (op, address, reason, created, expires, node_id, note, user) \
         VALUES ('{op}', '{addr}', '{reason}', {created}, {expires}, '{node}', {note}, {user})"
    ))
    .map(|_| ())
}

/// Bytes from the hex digits MySQL's HEX() gives.
fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Accounts blocked at `now_s`.
pub fn load_user_blocks(c: &Conn, now_s: u64) -> Result<Vec<StoredBlock>, DbError> {
    let rows = c.query(&format!(
        "SELECT HEX(user), blocked, expires FROM rsec_user_blocks WHERE expires > {now_s}"
    ))?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            let s = |i: usize| r.get(i).cloned().flatten();
            Some(StoredBlock {
                user: UserKey::new(&unhex(&s(0)?)?).ok()?,
                blocked_s: s(1)?.parse().ok()?,
                expires_s: s(2)?.parse().ok()?,
            })
        })
        .collect())
}

/// Writes a target's history unless the table already holds a later ban
/// of it (from another node). `last_start` is assigned last: MySQL applies
/// the assignments in order, and the others compare against the old one.
fn write_offense(c: &Conn, addr: &str, o: &Offense, node: &str) -> Result<(), DbError> {
    let newer = "VALUES(last_start) >= last_start";
    c.exec(&format!(
        "INSERT INTO rsec_offenders (address, offenses, last_start, last_end, last_len, node_id) \
         VALUES ('{addr}', {}, {}, {}, {}, '{node}') ON DUPLICATE KEY UPDATE \
         offenses = IF({newer}, VALUES(offenses), offenses), \
         last_end = IF({newer}, VALUES(last_end), last_end), \
         last_len = IF({newer}, VALUES(last_len), last_len), \
         node_id = IF({newer}, VALUES(node_id), node_id), \
         last_start = GREATEST(last_start, VALUES(last_start))",
        o.offenses, o.last_start_s, o.last_end_s, o.last_len_s
    ))
    .map(|_| ())
}

/// Histories still within `window_s` of their last ban's end at `now_s`.
pub fn load_offenders(
    c: &Conn,
    now_s: u64,
    window_s: u32,
) -> Result<Vec<(Cidr, Offense)>, DbError> {
    let rows = c.query(&format!(
        "SELECT address, offenses, last_start, last_end, last_len FROM rsec_offenders \
         WHERE last_end = 0 OR last_end + {window_s} > {now_s}"
    ))?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            let s = |i: usize| r.get(i).cloned().flatten();
            Some((
                Cidr::parse(&s(0)?).ok()?,
                Offense {
                    offenses: s(1)?.parse().ok()?,
                    last_start_s: s(2)?.parse().ok()?,
                    last_end_s: s(3)?.parse().ok()?,
                    last_len_s: s(4)?.parse().ok()?,
                },
            ))
        })
        .collect())
}

fn parse_ban(r: &[Option<String>]) -> Option<StoredBan> {
    let s = |i: usize| r.get(i).cloned().flatten();
    Some(StoredBan {
        target: Cidr::parse(&s(0)?).ok()?,
        reason: Reason::parse(&s(1)?)?,
        created_s: s(2)?.parse().ok()?,
        expires_s: s(3)?.parse().ok()?,
        note: Note::cut(s(4).unwrap_or_default().as_bytes()),
    })
}

/// Bans in force at `now_s`, and how many rows could not be read.
pub fn load_bans(c: &Conn, now_s: u64) -> Result<(Vec<StoredBan>, usize), DbError> {
    let rows = c.query(&format!(
        "SELECT address, reason, created, expires, note FROM rsec_bans WHERE expires = 0 OR expires > {now_s}"
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
        "SELECT id, op, address, reason, created, expires, node_id, note, HEX(user) \
         FROM rsec_ban_changes WHERE id > {after} ORDER BY id LIMIT {limit}"
    ))?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            let id = r.first()?.as_deref()?.parse().ok()?;
            let node_id = r.get(6)?.clone()?;
            let num = |i: usize| r.get(i)?.as_deref()?.parse::<u64>().ok();
            let user = || UserKey::new(&unhex(r.get(8)?.as_deref()?)?).ok();
            let ban = || {
                let mut ban = parse_ban(&r[2..6])?;
                ban.note = Note::cut(r.get(7)?.as_deref().unwrap_or_default().as_bytes());
                Some(ban)
            };
            let what = match r.get(1)?.as_deref()? {
                "ban" => Logged::Ban(ban()?),
                "unban" => Logged::Unban(ban()?),
                "block" => Logged::Block(StoredBlock {
                    user: user()?,
                    blocked_s: num(4)?,
                    expires_s: num(5)?,
                }),
                "unblock" => Logged::Unblock(user()?),
                _ => return None,
            };
            Some(LoggedChange { id, what, node_id })
        })
        .collect())
}

/// Deletes change-log rows older than `max_age_s`, lapsed bans and
/// histories past `recidive_s` after their ban.
pub fn prune(c: &Conn, max_age_s: u64, now_s: u64, recidive_s: u32) -> Result<u64, DbError> {
    let a = c.exec(&format!(
        "DELETE FROM rsec_ban_changes WHERE changed < NOW() - INTERVAL {max_age_s} SECOND"
    ))?;
    let b = c.exec(&format!(
        "DELETE FROM rsec_bans WHERE expires <> 0 AND expires <= {now_s}"
    ))?;
    let o = c.exec(&format!(
        "DELETE FROM rsec_offenders WHERE last_end <> 0 AND last_end + {recidive_s} <= {now_s}"
    ))?;
    let u = c.exec(&format!(
        "DELETE FROM rsec_user_blocks WHERE expires <= {now_s}"
    ))?;
    Ok(a + b + o + u)
}

/// Profiles stored in rsec_profiles, as `name: settings` texts; None
/// when the table does not exist (it is optional: a database made before
/// profiles has none).
pub fn load_profiles(c: &Conn) -> Result<Option<Vec<String>>, DbError> {
    let rows = match c.query("SELECT name, settings FROM rsec_profiles ORDER BY name") {
        Ok(rows) => rows,
        Err(e) if e.code == 1146 => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(Some(
        rows.into_iter()
            .filter_map(|r| {
                let name = r.first().cloned().flatten()?;
                let settings = r.get(1).cloned().flatten().unwrap_or_default();
                Some(format!("{name}: {settings}"))
            })
            .collect(),
    ))
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
