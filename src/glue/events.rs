//! E_SEC_BAN and E_SEC_UNBAN: published in mod_init, raised by whichever
//! process made the decision (see decisions.rs, their only caller).

use std::sync::atomic::{AtomicI32, Ordering};

use crate::engine::{BanRecord, Note, UserBlock, US_PER_S};
use crate::ffi::evi::{self, Value};
use crate::ffi::log::shown;
use crate::ffi::sys::EVI_ERROR;
use crate::rsec_log_throttled;

use super::decisions::Lifted;

static BAN_ID: AtomicI32 = AtomicI32::new(EVI_ERROR);
static UNBAN_ID: AtomicI32 = AtomicI32::new(EVI_ERROR);
static USER_BLOCKED_ID: AtomicI32 = AtomicI32::new(EVI_ERROR);

pub const E_SEC_BAN: &str = "E_SEC_BAN";
pub const E_SEC_UNBAN: &str = "E_SEC_UNBAN";
pub const E_SEC_USER_BLOCKED: &str = "E_SEC_USER_BLOCKED";

pub fn publish() -> bool {
    match (
        evi::publish(E_SEC_BAN),
        evi::publish(E_SEC_UNBAN),
        evi::publish(E_SEC_USER_BLOCKED),
    ) {
        (Some(b), Some(u), Some(ub)) => {
            BAN_ID.store(b, Ordering::Relaxed);
            UNBAN_ID.store(u, Ordering::Relaxed);
            USER_BLOCKED_ID.store(ub, Ordering::Relaxed);
            true
        }
        _ => false,
    }
}

/// True once E_SEC_BAN has a subscriber: on 3.4, the script's
/// event_route subscribes only after the processes started, so an event
/// raised by a process at its very start would reach nobody.
pub fn ban_subscribed() -> bool {
    let id = BAN_ID.load(Ordering::Relaxed);
    id != EVI_ERROR && evi::subscribed(id)
}

/// An account was blocked (`user_fail_threshold`).
pub fn user_blocked(b: &UserBlock) {
    let id = USER_BLOCKED_ID.load(Ordering::Relaxed);
    if id == EVI_ERROR {
        return;
    }
    let user = String::from_utf8_lossy(b.user.as_bytes());
    let ok = evi::raise(
        id,
        &[
            ("user", Value::Str(&user)),
            ("failures", Value::Int(b.failures as i32)),
            ("seconds", Value::Int(secs(b.ends_us - b.blocked_us))),
            ("expires", Value::Int(secs(b.ends_us))),
        ],
    );
    if !ok {
        rsec_log_throttled!(
            Err,
            "events",
            "cannot raise {} for '{}'",
            E_SEC_USER_BLOCKED,
            shown(b.user.as_bytes())
        );
    }
}

fn secs(us: u64) -> i32 {
    (us / US_PER_S).min(i32::MAX as u64) as i32
}

/// Whom a ban concerns beyond its target.
#[derive(Default)]
pub struct Scoping<'a> {
    /// The profile whose thresholds made it ("" for a manual or imported ban).
    pub profile: &'a str,
    /// The only tenant it applies to ("": everyone).
    pub tenant: &'a str,
    /// Only pretended: dry run is on.
    pub dry_run: bool,
    /// The tenant of the request that made it ("-" or "": none).
    pub context: &'a str,
}

/// A ban was created (or a manual ban's expiry replaced) by `source`.
pub fn ban(rec: &BanRecord, note: Option<&Note>, source: &str, scoping: &Scoping) {
    let id = BAN_ID.load(Ordering::Relaxed);
    if id == EVI_ERROR {
        return;
    }
    let ip = rec.target.to_string();
    let note_text = note.map_or_else(String::new, |n| {
        String::from_utf8_lossy(n.as_bytes()).into_owned()
    });
    let seconds = if rec.ban.is_permanent() {
        0
    } else {
        secs(rec.ban.expires_us.saturating_sub(rec.ban.created_us))
    };
    let ok = evi::raise(
        id,
        &[
            ("ip", Value::Str(&ip)),
            ("reason", Value::Str(rec.ban.reason.as_str())),
            ("seconds", Value::Int(seconds)),
            ("expires", Value::Int(secs(rec.ban.expires_us))),
            ("source", Value::Str(source)),
            ("note", Value::Str(&note_text)),
            ("dry_run", Value::Int(scoping.dry_run as i32)),
            ("tenant", Value::Str(scoping.tenant)),
            ("profile", Value::Str(scoping.profile)),
            (
                "request_tenant",
                Value::Str(match scoping.context {
                    "-" => "",
                    t => t,
                }),
            ),
        ],
    );
    if !ok {
        rsec_log_throttled!(
            Err,
            "events",
            "cannot raise {} for {}",
            E_SEC_BAN,
            shown(&ip)
        );
    }
}

/// A ban ended.
pub fn unban(rec: &BanRecord, why: Lifted) {
    let id = UNBAN_ID.load(Ordering::Relaxed);
    if id == EVI_ERROR {
        return;
    }
    let ip = rec.target.to_string();
    let ok = evi::raise(
        id,
        &[
            ("ip", Value::Str(&ip)),
            ("reason", Value::Str(why.as_str())),
        ],
    );
    if !ok {
        rsec_log_throttled!(
            Err,
            "events",
            "cannot raise {} for {}",
            E_SEC_UNBAN,
            shown(&ip)
        );
    }
}
