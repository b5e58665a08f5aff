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

use crate::engine::queue::{Change, ChangeOp};
use crate::engine::{
    AuthVerdict, BanOutcome, BanRecord, Cidr, Engine, IpKey, PikeVerdict, Reason, TableError,
};
use crate::rsec_log_throttled;

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
}

impl Origin {
    /// The `source` of E_SEC_BAN.
    pub fn name(self) -> &'static str {
        match self {
            Origin::Script(f) => f.to_str().unwrap_or("script"),
            Origin::Mi => "mi",
            Origin::Sweep => "sweep",
            Origin::Database => "db",
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

/// Runs one engine operation, then reports what it found lapsed.
fn run<R>(e: &Engine, op: impl FnOnce(&Engine) -> R) -> R {
    let r = op(e);
    for rec in e.drain_lapsed() {
        lifted(e, &rec, Lifted::Expired, Origin::Sweep);
    }
    r
}

fn banned(e: &Engine, rec: &BanRecord, origin: Origin) {
    if origin != Origin::Database {
        persist(e, ChangeOp::Ban, rec);
    }
    events::ban(rec, origin.name());
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
    let change = Change {
        op,
        target: rec.target,
        reason: rec.ban.reason,
        created_us: rec.ban.created_us,
        expires_us: rec.ban.expires_us,
    };
    if !q.push(change) {
        rsec_log_throttled!(
            Err,
            "persistence",
            "db queue full ({} waiting): {} ban changes not persisted so far (raise db_queue_size)",
            q.depth(),
            q.dropped()
        );
    }
}

pub fn pike_check(
    e: &Engine,
    origin: Origin,
    ip: &IpKey,
    now_us: u64,
) -> Result<PikeVerdict, TableError> {
    let v = run(e, |e| e.pike_check(ip, now_us))?;
    if let PikeVerdict::JustBanned(rec) = &v {
        banned(e, rec, origin);
    }
    Ok(v)
}

pub fn auth_fail(
    e: &Engine,
    origin: Origin,
    ip: &IpKey,
    now_us: u64,
) -> Result<AuthVerdict, TableError> {
    let v = run(e, |e| e.auth_fail(ip, now_us))?;
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
    now_us: u64,
) -> Result<BanOutcome, TableError> {
    let o = run(e, |e| e.ban(target, seconds, reason, now_us))?;
    if let Some(rec) = o.made() {
        banned(e, rec, origin);
    }
    Ok(o)
}

/// Installs a ban read from the database with its stored times.
pub fn restore(
    e: &Engine,
    target: Cidr,
    reason: Reason,
    created_us: u64,
    expires_us: u64,
    now_us: u64,
) -> Result<Option<BanOutcome>, TableError> {
    let o = run(e, |e| {
        e.restore_ban(target, reason, created_us, expires_us, now_us)
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
    let r = run(e, |e| e.unban(target, now_us))?;
    if let Some(rec) = &r {
        lifted(e, rec, Lifted::Manual, origin);
    }
    Ok(r)
}

pub fn flush(e: &Engine, origin: Origin, now_us: u64) -> Result<Vec<BanRecord>, TableError> {
    let removed = run(e, |e| e.flush_bans(now_us))?;
    for rec in &removed {
        lifted(e, rec, Lifted::Flushed, origin);
    }
    Ok(removed)
}

/// The sweep: reclaims lapsed entries and reports every expired ban.
pub fn sweep(e: &Engine, now_us: u64) -> Result<Vec<BanRecord>, TableError> {
    let expired = run(e, |e| e.sweep(now_us))?;
    for rec in &expired {
        lifted(e, rec, Lifted::Expired, Origin::Sweep);
    }
    Ok(expired)
}

/// Announces bans installed before OpenSIPS could raise events (loaded in
/// mod_init): they came from the database, so they are not queued again.
pub fn announce_loaded(loaded: &[BanRecord]) {
    for rec in loaded {
        events::ban(rec, Origin::Database.name());
    }
}
