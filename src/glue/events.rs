//! Where every ban decision is announced: E_SEC_BAN / E_SEC_UNBAN are
//! raised by whichever process made the decision (a worker, the timer, the
//! MI or persistence process) after every stripe lock is released, and the
//! decision is queued for the database (unless it came from there).

use std::sync::atomic::{AtomicI32, Ordering};

use crate::engine::queue::{Change, ChangeOp};
use crate::engine::{BanRecord, Engine};
use crate::ffi::evi::{self, Value};
use crate::ffi::sys::EVI_ERROR;
use crate::rsec_log;

static BAN_ID: AtomicI32 = AtomicI32::new(EVI_ERROR);
static UNBAN_ID: AtomicI32 = AtomicI32::new(EVI_ERROR);

pub const E_SEC_BAN: &str = "E_SEC_BAN";
pub const E_SEC_UNBAN: &str = "E_SEC_UNBAN";

/// Why a ban ended, as reported in E_SEC_UNBAN.
#[derive(Clone, Copy)]
pub enum UnbanReason {
    Expired,
    Manual,
    Flushed,
}

impl UnbanReason {
    fn as_str(self) -> &'static str {
        match self {
            UnbanReason::Expired => "expired",
            UnbanReason::Manual => "manual",
            UnbanReason::Flushed => "flushed",
        }
    }
}

pub fn publish() -> bool {
    match (evi::publish(E_SEC_BAN), evi::publish(E_SEC_UNBAN)) {
        (Some(b), Some(u)) => {
            BAN_ID.store(b, Ordering::Relaxed);
            UNBAN_ID.store(u, Ordering::Relaxed);
            true
        }
        _ => false,
    }
}

fn secs(us: u64) -> i32 {
    (us / 1_000_000).min(i32::MAX as u64) as i32
}

/// Source name of decisions imported from the database.
pub const FROM_DB: &str = "db";

fn change(op: ChangeOp, rec: &BanRecord) -> Change {
    Change { op, target: rec.target, reason: rec.ban.reason, created_us: rec.ban.created_us, expires_us: rec.ban.expires_us }
}

/// A ban was created (or a manual ban's expiry replaced) by `source`.
pub fn ban(rec: &BanRecord, source: &str) {
    if source != FROM_DB {
        super::persist::record(change(ChangeOp::Ban, rec));
    }
    let id = BAN_ID.load(Ordering::Relaxed);
    if id == EVI_ERROR {
        return;
    }
    let ip = rec.target.to_string();
    let seconds = if rec.ban.is_permanent() { 0 } else { secs(rec.ban.expires_us.saturating_sub(rec.ban.created_us)) };
    let ok = evi::raise(
        id,
        &[
            ("ip", Value::Str(&ip)),
            ("reason", Value::Str(rec.ban.reason.as_str())),
            ("seconds", Value::Int(seconds)),
            ("expires", Value::Int(secs(rec.ban.expires_us))),
            ("source", Value::Str(source)),
        ],
    );
    if !ok {
        rsec_log!(Err, "events", "cannot raise {} for {}", E_SEC_BAN, ip);
    }
}

/// A ban ended here.
pub fn unban(rec: &BanRecord, why: UnbanReason) {
    unban_from(rec, why, true)
}

/// A ban ended; `persist` is false for an unban imported from the database.
pub fn unban_from(rec: &BanRecord, why: UnbanReason, persist: bool) {
    if persist {
        let op = if matches!(why, UnbanReason::Expired) { ChangeOp::Expire } else { ChangeOp::Unban };
        super::persist::record(change(op, rec));
    }
    let id = UNBAN_ID.load(Ordering::Relaxed);
    if id == EVI_ERROR {
        return;
    }
    let ip = rec.target.to_string();
    let ok = evi::raise(id, &[("ip", Value::Str(&ip)), ("reason", Value::Str(why.as_str()))]);
    if !ok {
        rsec_log!(Err, "events", "cannot raise {} for {}", E_SEC_UNBAN, ip);
    }
}

/// Reports bans this process found lapsed while doing something else.
pub fn flush_lapsed(e: &Engine) {
    for rec in e.drain_lapsed() {
        unban(&rec, UnbanReason::Expired);
    }
}
