//! The one path every ban decision takes, whoever makes it.
//!
//! A script function, an MI command, the sweep timer and the database
//! import all call the engine through here. The engine returns the record
//! it created, replaced or removed; this module then, in one place:
//! - queues it for the database, unless it came from the database;
//! - raises E_SEC_BAN / E_SEC_UNBAN (after every stripe lock is released);
//! - reports the bans this process found lapsed while doing it (a worker
//!   reusing a lapsed slot reports that expiry exactly once, like the sweep).

use std::ffi::CStr;

use crate::db::store::{StoredBan, StoredBlock};
use crate::engine::queue::{Change, ChangeOp};
use crate::engine::{
    AuthVerdict, BanOutcome, BanRecord, Cidr, Engine, IpKey, Note, PikeVerdict, Reason,
    ReportVerdict, ScannerVerdict, Side, TableError, UserBlock, UserInfo, UserKey, US_PER_S,
};
use crate::ffi::log::shown;
use crate::{rsec_log, rsec_log_throttled};

use super::events;

/// Who made a decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A script function, by name.
    Script(&'static CStr),
    Mi,
    /// The sweep timer, or any process reclaiming a lapsed ban.
    Sweep,
    /// Another node's change, or a ban loaded at start-up: already stored.
    Database,
    /// Prefix aggregation acting on bans imported from the database: a
    /// decision of this node, stored like one.
    Subnet,
}

impl Origin {
    /// The `source` of E_SEC_BAN.
    pub fn name(self) -> &'static str {
        match self {
            Origin::Script(f) => f.to_str().unwrap_or("script"),
            Origin::Mi => "mi",
            Origin::Sweep => "sweep",
            Origin::Database => "db",
            Origin::Subnet => "subnet",
        }
    }
}

/// Why a ban ended, as E_SEC_UNBAN says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lifted {
    Expired,
    Manual,
    Flushed,
}

impl Lifted {
    pub fn as_str(self) -> &'static str {
        match self {
            Lifted::Expired => "expired",
            Lifted::Manual => "manual",
            Lifted::Flushed => "flushed",
        }
    }
}

/// Runs one engine operation, then reports what it found lapsed and what
/// it decided on the side (a prefix banned, an account blocked).
fn run<R>(e: &Engine, origin: Origin, op: impl FnOnce(&Engine) -> R) -> R {
    let r = op(e);
    for rec in e.drain_lapsed() {
        lifted(e, &rec, Lifted::Expired, Origin::Sweep);
    }
    for side in e.drain_side() {
        match side {
            Side::SubnetBanned { rec, count } => {
                let origin = match origin {
                    Origin::Database => Origin::Subnet,
                    o => o,
                };
                rsec_log!(
                    Notice,
                    "rules",
                    "banned {} for {}: {} addresses inside it banned at once (subnet_ban_threshold {}){}",
                    rec.target,
                    Length(&rec),
                    count,
                    e.config().subnet_ban_threshold,
                    Repeat(e, &rec)
                );
                banned(e, &rec, origin);
            }
            Side::SubnetRefused { subnet, count, why } => {
                rsec_log_throttled!(
                    Warn,
                    "rules",
                    "not banning {}: {} addresses inside it are banned (subnet_ban_threshold {}), but {}",
                    subnet,
                    count,
                    e.config().subnet_ban_threshold,
                    match why {
                        BanOutcome::Whitelisted(w) => format!("it contains whitelisted {w}"),
                        BanOutcome::TooBroad(t) => t.to_string(),
                        _ => "the ban table is full (max_bans)".to_owned(),
                    }
                );
            }
            Side::UserBlocked(b) => {
                rsec_log!(
                    Notice,
                    "rules",
                    "blocked account '{}' for {}s: {} failed authentications in {}s from any source (user_fail_threshold {})",
                    shown(b.user.as_bytes()),
                    (b.ends_us - b.blocked_us) / US_PER_S,
                    b.failures,
                    e.config().user_fail_window_s,
                    e.config().user_fail_threshold
                );
                persist_block(e, ChangeOp::Block, &b);
                events::user_blocked(&b);
            }
        }
    }
    r
}

/// A ban's length, as logged: "300s" or "until unbanned".
pub struct Length<'a>(pub &'a BanRecord);

impl std::fmt::Display for Length<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let b = &self.0.ban;
        if b.is_permanent() {
            write!(f, "until unbanned")
        } else {
            let s = (b.expires_us.saturating_sub(b.created_us) + US_PER_S / 2) / US_PER_S;
            write!(f, "{s}s")
        }
    }
}

/// For a repeat offender's ban, what made it longer, as appended to the
/// ban's log line: "; repeat offence 3 within recidive_window 86400s
/// (ban_multiplier 2, ban_time_max 604800s)". Empty otherwise.
pub struct Repeat<'a>(pub &'a Engine, pub &'a BanRecord);

impl std::fmt::Display for Repeat<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (e, rec) = (self.0, self.1);
        let Ok(Some(o)) = e.offense(&rec.target, super::now_us()) else {
            return Ok(());
        };
        if o.offenses < 2 || o.last_start_s as u64 != rec.ban.created_us / US_PER_S {
            return Ok(());
        }
        let c = e.config();
        write!(
            f,
            "; repeat offence {} within recidive_window {}s (ban_multiplier {}, ban_time_max {}s)",
            o.offenses, c.recidive_window_s, c.ban_multiplier, c.ban_time_max_s
        )
    }
}

fn banned(e: &Engine, rec: &BanRecord, origin: Origin) {
    if origin != Origin::Database {
        persist(e, ChangeOp::Ban, rec);
    }
    let note = e.note_of(rec, super::now_us()).ok().flatten();
    events::ban(rec, note.as_ref(), origin.name());
}

fn lifted(e: &Engine, rec: &BanRecord, why: Lifted, origin: Origin) {
    if origin != Origin::Database {
        persist(
            e,
            if why == Lifted::Expired {
                ChangeOp::Expire
            } else {
                ChangeOp::Unban
            },
            rec,
        );
    }
    events::unban(rec, why);
}

/// Queues a decision for the persistence process (no-op without db_url).
/// Never blocks beyond one short critical section; a full queue is
/// counted (db_queue_drops) and logged at most once per interval.
fn persist(e: &Engine, op: ChangeOp, rec: &BanRecord) {
    let Some(q) = e.queue() else { return };
    let now = super::now_us();
    let (note, offense) = match op {
        // The note and history as they stand now, with this ban in them.
        ChangeOp::Ban => (
            e.note_of(rec, now).ok().flatten().unwrap_or_default(),
            match rec.ban.reason {
                Reason::Manual => None,
                _ => e.offense(&rec.target, now).ok().flatten(),
            }
            .unwrap_or_default(),
        ),
        _ => Default::default(),
    };
    let change = Change {
        op,
        target: rec.target,
        reason: rec.ban.reason,
        created_us: rec.ban.created_us,
        expires_us: rec.ban.expires_us,
        note,
        offense,
        ..Change::default()
    };
    push(q, change);
}

/// Queues one change; a full queue is counted (db_queue_drops) and
/// logged at most once per interval.
fn push(q: &crate::engine::queue::ChangeQueue, change: Change) {
    if !q.push(change) {
        rsec_log_throttled!(
            Err,
            "persistence",
            "db queue full ({} waiting): {} changes not persisted so far (raise db_queue_size)",
            q.depth(),
            q.dropped()
        );
    }
}

/// Queues an account's block or unblock for the database.
fn persist_block(e: &Engine, op: ChangeOp, b: &UserBlock) {
    let Some(q) = e.queue() else { return };
    let change = Change {
        op,
        user: b.user,
        created_us: b.blocked_us,
        expires_us: b.ends_us,
        ..Change::default()
    };
    push(q, change);
}

/// Lifts an account's block (MI, or another node's unblock).
pub fn user_unblock(
    e: &Engine,
    origin: Origin,
    user: &UserKey,
    now_us: u64,
) -> Result<Option<UserInfo>, TableError> {
    let r = e.user_unblock(user.as_bytes(), now_us)?;
    if let Some(u) = &r {
        if origin != Origin::Database {
            let (blocked_us, ends_us) = u.blocked.unwrap_or_default();
            persist_block(
                e,
                ChangeOp::Unblock,
                &UserBlock {
                    user: *user,
                    failures: u.failures,
                    blocked_us,
                    ends_us,
                },
            );
        }
    }
    Ok(r)
}

/// Installs a block read from the database (start-up or another node)
/// and announces it.
pub fn restore_user_block(
    e: &Engine,
    b: &StoredBlock,
    now_us: u64,
) -> Result<Option<UserBlock>, TableError> {
    let r = e.restore_user_block(
        &b.user,
        b.blocked_s * US_PER_S,
        b.expires_s * US_PER_S,
        now_us,
    )?;
    if let Some(ub) = &r {
        events::user_blocked(ub);
    }
    Ok(r)
}

pub fn pike_check(
    e: &Engine,
    origin: Origin,
    ip: &IpKey,
    method: Option<&[u8]>,
    now_us: u64,
) -> Result<PikeVerdict, TableError> {
    let v = run(e, origin, |e| e.pike_check_method(ip, method, now_us))?;
    if let PikeVerdict::JustBanned(rec) = &v {
        banned(e, rec, origin);
    }
    Ok(v)
}

pub fn auth_fail(
    e: &Engine,
    origin: Origin,
    ip: &IpKey,
    user: Option<&[u8]>,
    now_us: u64,
) -> Result<AuthVerdict, TableError> {
    let v = run(e, origin, |e| e.auth_fail_user(ip, user, now_us))?;
    if let AuthVerdict::JustBanned(rec) = &v {
        banned(e, rec, origin);
    }
    Ok(v)
}

pub fn ban(
    e: &Engine,
    origin: Origin,
    target: Cidr,
    seconds: u32,
    reason: Reason,
    note: Option<&Note>,
    now_us: u64,
) -> Result<BanOutcome, TableError> {
    let o = run(e, origin, |e| {
        e.ban_noted(target, seconds, reason, note, now_us)
    })?;
    if let Some(rec) = o.made() {
        banned(e, rec, origin);
    }
    Ok(o)
}

pub fn report(
    e: &Engine,
    origin: Origin,
    ip: &IpKey,
    word: &Note,
    weight: u32,
    now_us: u64,
) -> Result<ReportVerdict, TableError> {
    let v = run(e, origin, |e| e.report(ip, word, weight, now_us))?;
    if let ReportVerdict::JustBanned(rec, _) = &v {
        banned(e, rec, origin);
    }
    Ok(v)
}

pub fn scanner_check<'e>(
    e: &'e Engine,
    origin: Origin,
    ip: &IpKey,
    header: Option<&[u8]>,
    now_us: u64,
) -> Result<(ScannerVerdict, Option<&'e str>), TableError> {
    let v = run(e, origin, |_| e.scanner_check(ip, header, now_us))?;
    if let ScannerVerdict::JustBanned(rec) = &v.0 {
        banned(e, rec, origin);
    }
    Ok(v)
}

/// Installs a ban read from the database with its stored times.
pub fn restore(e: &Engine, b: &StoredBan, now_us: u64) -> Result<Option<BanOutcome>, TableError> {
    let o = run(e, Origin::Database, |e| {
        e.restore_ban(
            b.target,
            b.reason,
            b.created_s * US_PER_S,
            b.expires_s * US_PER_S,
            Some(&b.note),
            now_us,
        )
    })?;
    if let Some(rec) = o.as_ref().and_then(BanOutcome::made) {
        banned(e, rec, Origin::Database);
    }
    Ok(o)
}

pub fn unban(
    e: &Engine,
    origin: Origin,
    target: &Cidr,
    now_us: u64,
) -> Result<Option<BanRecord>, TableError> {
    let r = run(e, origin, |e| e.unban(target, now_us))?;
    if let Some(rec) = &r {
        lifted(e, rec, Lifted::Manual, origin);
    }
    Ok(r)
}

pub fn flush(e: &Engine, origin: Origin, now_us: u64) -> Result<Vec<BanRecord>, TableError> {
    let removed = run(e, origin, |e| e.flush_bans(now_us))?;
    for rec in &removed {
        lifted(e, rec, Lifted::Flushed, origin);
    }
    Ok(removed)
}

/// The sweep: reclaims lapsed entries and reports every expired ban.
pub fn sweep(e: &Engine, now_us: u64) -> Result<Vec<BanRecord>, TableError> {
    let expired = run(e, Origin::Sweep, |e| e.sweep(now_us))?;
    for rec in &expired {
        lifted(e, rec, Lifted::Expired, Origin::Sweep);
    }
    Ok(expired)
}

/// Announces bans installed before OpenSIPS could raise events (loaded in
/// mod_init): they came from the database, so they are not queued again.
pub fn announce_loaded(e: &Engine, loaded: &super::persist::Loaded) {
    for rec in &loaded.bans {
        let note = e.note_of(rec, super::now_us()).ok().flatten();
        events::ban(rec, note.as_ref(), Origin::Database.name());
    }
    for b in &loaded.blocks {
        events::user_blocked(b);
    }
}
