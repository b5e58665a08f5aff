//! The script functions: each declared once in [`script_functions!`] with
//! typed parameters (the C shims, parameter flags and export table are
//! generated from it), and each body a plain function of its decoded
//! arguments returning the script return code.

use crate::engine::{
    AuthVerdict, BanOutcome, Cidr, Engine, IpKey, PikeVerdict, Reason, RlKey, TableError,
    MAX_SECONDS,
};
use crate::ffi::log::shown;
use crate::ffi::script::{Call, Int, Opt, Str};
use crate::ffi::sys::{
    BRANCH_ROUTE, ERROR_ROUTE, EVENT_ROUTE, FAILURE_ROUTE, LOCAL_ROUTE, ONREPLY_ROUTE,
    REQUEST_ROUTE, STARTUP_ROUTE, TIMER_ROUTE,
};
use crate::{rsec_log, rsec_log_throttled, script_functions};

use super::decisions::{self, Origin};
use super::{engine, now_us};

/// Return codes shared by every function (never 0: that would stop the script).
pub const RC_OK: i32 = 1;
pub const RC_NO: i32 = -1;
pub const RC_JUST_BANNED: i32 = -2;
pub const RC_ERROR: i32 = -3;

/// Routes where a function reads only its arguments.
const ANY_ROUTE: i32 = MSG_ROUTES | STARTUP_ROUTE | TIMER_ROUTE | EVENT_ROUTE;
/// Routes that carry a received message whose source can stand in for `ip`.
const MSG_ROUTES: i32 =
    REQUEST_ROUTE | FAILURE_ROUTE | ONREPLY_ROUTE | BRANCH_ROUTE | ERROR_ROUTE | LOCAL_ROUTE;

script_functions! {
    on_panic = RC_ERROR;
    /// Flood check of the source (or `ip`); enforces every ban.
    fn sec_pike_check(call, ip: Opt<Str>) in MSG_ROUTES => pike_check;
    /// Takes one request from the budget of `key`: `limit` per `period` s.
    fn sec_rl_check(call, key: Str, limit: Int, period: Opt<Int>) in ANY_ROUTE => rl_check;
    fn sec_ban_ip(call, ip: Str, seconds: Opt<Int>, reason: Opt<Str>) in ANY_ROUTE => ban_ip;
    fn sec_unban_ip(call, ip: Str) in ANY_ROUTE => unban_ip;
    fn sec_is_banned(call, ip: Opt<Str>) in MSG_ROUTES => is_banned;
    /// Records a failed authentication of the source (or `ip`), as `user`.
    fn sec_auth_fail(call, ip: Opt<Str>, user: Opt<Str>) in MSG_ROUTES => auth_fail;
}

/// Returns the error code from a function body after logging why.
macro_rules! or_return {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(rc) => return rc,
        }
    };
}

fn ready(call: &Call) -> Result<&'static Engine, i32> {
    engine().ok_or_else(|| {
        rsec_log!(
            Err,
            call.name(),
            "rsec is not initialised (mod_init did not run)"
        );
        RC_ERROR
    })
}

/// The `ip` argument, or the message's source address when omitted.
fn source(call: &Call, ip: Option<&[u8]>) -> Result<IpKey, i32> {
    match ip {
        Some(b) => IpKey::parse(&String::from_utf8_lossy(b)).map_err(|_| {
            rsec_log!(
                Err,
                call.name(),
                "bad ip argument '{}': not an IPv4 or IPv6 address",
                shown(b)
            );
            RC_ERROR
        }),
        None => call.source().map(IpKey::from_ip).ok_or_else(|| {
            rsec_log!(
                Err,
                call.name(),
                "no ip given and the message has no source address"
            );
            RC_ERROR
        }),
    }
}

fn prefix(call: &Call, ip: &[u8]) -> Result<Cidr, i32> {
    Cidr::parse(&String::from_utf8_lossy(ip)).map_err(|err| {
        rsec_log!(
            Err,
            call.name(),
            "bad ip argument '{}': {}",
            shown(ip),
            err.why()
        );
        RC_ERROR
    })
}

/// A shared-table failure (a lock that could not be taken): logged at most
/// once per interval, since it would repeat on every packet.
fn table<T>(call: &Call, r: Result<T, TableError>) -> Result<T, i32> {
    r.map_err(|e| {
        rsec_log_throttled!(Err, call.name(), "shared table error: {}", e);
        RC_ERROR
    })
}

fn pike_check(call: &Call, ip: Option<&[u8]>) -> i32 {
    let e = or_return!(ready(call));
    let ip = or_return!(source(call, ip));
    match or_return!(table(
        call,
        decisions::pike_check(e, Origin::Script(call.name()), &ip, now_us())
    )) {
        PikeVerdict::Allowed | PikeVerdict::Whitelisted => RC_OK,
        PikeVerdict::Banned(_) => RC_NO,
        PikeVerdict::JustBanned(rec) => {
            let c = e.config();
            rsec_log!(
                Notice,
                call.name(),
                "banned {} for {}s: more than {} requests in {}s",
                rec.target,
                c.pike_ban_time_s,
                c.pike_density,
                c.pike_sampling_time_s
            );
            RC_JUST_BANNED
        }
        PikeVerdict::OverLimitUnbanned => {
            rsec_log_throttled!(
                Err,
                call.name(),
                "{} is flooding but the ban table is full (max_bans); refusing its requests without a ban",
                ip
            );
            RC_JUST_BANNED
        }
    }
}

fn rl_check(call: &Call, key: &[u8], limit: i32, period: Option<i32>) -> i32 {
    let e = or_return!(ready(call));
    let k = match RlKey::new(key) {
        Ok(k) => k,
        Err(err) => {
            rsec_log!(Err, call.name(), "bad key '{}': {}", shown(key), err);
            return RC_ERROR;
        }
    };
    if limit <= 0 {
        rsec_log!(
            Err,
            call.name(),
            "bad limit {} for key '{}': must be > 0",
            limit,
            shown(key)
        );
        return RC_ERROR;
    }
    let period = match period {
        None => 1,
        Some(p) if p > 0 && p as u32 <= MAX_SECONDS => p as u32,
        Some(p) => {
            rsec_log!(
                Err,
                call.name(),
                "bad period {} for key '{}': must be 1 to {} seconds",
                p,
                shown(key),
                MAX_SECONDS
            );
            return RC_ERROR;
        }
    };
    if or_return!(table(call, e.rl_check(&k, limit as u32, period, now_us()))) {
        RC_OK
    } else {
        RC_NO
    }
}

fn ban_ip(call: &Call, ip: &[u8], seconds: Option<i32>, reason: Option<&[u8]>) -> i32 {
    let e = or_return!(ready(call));
    let target = or_return!(prefix(call, ip));
    let seconds = match seconds {
        None => e.config().ban_time_s,
        Some(s) if s >= 0 && s as u32 <= MAX_SECONDS => s as u32,
        Some(s) => {
            rsec_log!(
                Err,
                call.name(),
                "bad seconds {} for {}: must be 0 (until unbanned) to {}",
                s,
                target,
                MAX_SECONDS
            );
            return RC_ERROR;
        }
    };
    let reason = match reason {
        None => Reason::Manual,
        Some(r) => match Reason::parse(&String::from_utf8_lossy(r)) {
            Some(r) => r,
            None => {
                rsec_log!(
                    Err,
                    call.name(),
                    "bad reason '{}' for {}: use manual, pike, auth or rl",
                    shown(r),
                    target
                );
                return RC_ERROR;
            }
        },
    };
    let outcome = or_return!(table(
        call,
        decisions::ban(
            e,
            Origin::Script(call.name()),
            target,
            seconds,
            reason,
            now_us()
        )
    ));
    match outcome {
        BanOutcome::Created(rec) | BanOutcome::Updated(rec) => {
            rsec_log!(
                Notice,
                call.name(),
                "banned {} for {} ({})",
                rec.target,
                Duration(seconds),
                reason.as_str()
            );
            RC_OK
        }
        BanOutcome::AlreadyBanned(rec) => {
            rsec_log!(
                Info,
                call.name(),
                "{} is already banned ({}); left as it is",
                target,
                rec.ban.reason.as_str()
            );
            RC_OK
        }
        BanOutcome::Whitelisted(w) => {
            rsec_log!(
                Warn,
                call.name(),
                "refusing to ban {}: it is or contains whitelisted {}",
                target,
                w
            );
            RC_NO
        }
        BanOutcome::TooBroad(why) => {
            rsec_log!(Warn, call.name(), "refusing to ban {}: {}", target, why);
            RC_NO
        }
        BanOutcome::TableFull => {
            rsec_log_throttled!(
                Err,
                call.name(),
                "cannot ban {}: ban table full (raise max_bans)",
                target
            );
            RC_ERROR
        }
    }
}

fn unban_ip(call: &Call, ip: &[u8]) -> i32 {
    let e = or_return!(ready(call));
    let target = or_return!(prefix(call, ip));
    match or_return!(table(
        call,
        decisions::unban(e, Origin::Script(call.name()), &target, now_us())
    )) {
        Some(rec) => {
            rsec_log!(
                Notice,
                call.name(),
                "unbanned {} (was banned for {})",
                rec.target,
                rec.ban.reason.as_str()
            );
            RC_OK
        }
        None => RC_NO,
    }
}

fn is_banned(call: &Call, ip: Option<&[u8]>) -> i32 {
    let e = or_return!(ready(call));
    let ip = or_return!(source(call, ip));
    match or_return!(table(call, e.lookup_ban(&ip, now_us()))) {
        Some(_) => RC_OK,
        None => RC_NO,
    }
}

fn auth_fail(call: &Call, ip: Option<&[u8]>, user: Option<&[u8]>) -> i32 {
    let e = or_return!(ready(call));
    let ip = or_return!(source(call, ip));
    match or_return!(table(
        call,
        decisions::auth_fail(e, Origin::Script(call.name()), &ip, now_us())
    )) {
        AuthVerdict::Counted(_) | AuthVerdict::Whitelisted => RC_OK,
        AuthVerdict::AlreadyBanned(_) => RC_NO,
        AuthVerdict::JustBanned(rec) => {
            let c = e.config();
            rsec_log!(
                Notice,
                call.name(),
                "banned {} for {}s: {} failed authentications in {}s (last user '{}')",
                rec.target,
                c.auth_ban_time_s,
                c.auth_fail_threshold,
                c.auth_fail_window_s,
                shown(user.unwrap_or_default())
            );
            RC_JUST_BANNED
        }
        AuthVerdict::OverLimitUnbanned => {
            rsec_log_throttled!(
                Err,
                call.name(),
                "{} reached the auth failure threshold but the ban table is full (max_bans)",
                ip
            );
            RC_JUST_BANNED
        }
    }
}

/// Seconds, printed as "300s" or "until unbanned".
struct Duration(u32);

impl std::fmt::Display for Duration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0 == 0 {
            write!(f, "until unbanned")
        } else {
            write!(f, "{}s", self.0)
        }
    }
}
