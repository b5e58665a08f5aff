//! The script functions. Each takes already-decoded arguments and returns
//! the script return code; the C wrappers live in `exports`.

use crate::engine::{AuthVerdict, BanOutcome, Cidr, IpKey, PikeVerdict, Reason, RlKey};
use crate::rsec_log;

use super::events::{self, UnbanReason};
use super::{engine, now_us};

/// Raises E_SEC_BAN for the ban now covering `ip`, made by `source`.
fn announce_ban(e: &crate::engine::Engine, ip: &IpKey, now: u64, source: &str) {
    if let Ok(Some(rec)) = e.lookup_ban(ip, now) {
        events::ban(&rec, source);
    }
}

/// Return codes shared by every function (never 0: that would stop the script).
pub const RC_OK: i32 = 1;
pub const RC_NO: i32 = -1;
pub const RC_JUST_BANNED: i32 = -2;
pub const RC_ERROR: i32 = -3;

/// The source a function acts on: its `ip` argument, or the message's
/// source address when omitted.
pub enum Target<'a> {
    Arg(&'a [u8]),
    MsgSource(Option<IpKey>),
}

fn text(b: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(b)
}

macro_rules! try_engine {
    ($func:literal) => {
        match engine() {
            Some(e) => e,
            None => {
                rsec_log!(Err, $func, "rsec is not initialised (mod_init did not run)");
                return RC_ERROR;
            }
        }
    };
}

macro_rules! resolve_ip {
    ($func:literal, $t:expr) => {
        match $t {
            Target::Arg(b) => match IpKey::parse(&text(b)) {
                Ok(ip) => ip,
                Err(e) => {
                    rsec_log!(Err, $func, "bad ip argument: {}", e);
                    return RC_ERROR;
                }
            },
            Target::MsgSource(Some(ip)) => ip,
            Target::MsgSource(None) => {
                rsec_log!(Err, $func, "no ip given and the message has no source address");
                return RC_ERROR;
            }
        }
    };
}

macro_rules! or_table_error {
    ($func:literal, $r:expr) => {
        match $r {
            Ok(v) => v,
            Err(e) => {
                rsec_log!(Err, $func, "shared table error: {}", e);
                return RC_ERROR;
            }
        }
    };
}

pub fn sec_pike_check(t: Target<'_>) -> i32 {
    let e = try_engine!("sec_pike_check");
    let ip = resolve_ip!("sec_pike_check", t);
    let now = now_us();
    let verdict = or_table_error!("sec_pike_check", e.pike_check(&ip, now));
    events::flush_lapsed(e);
    match verdict {
        PikeVerdict::Allowed | PikeVerdict::Whitelisted => RC_OK,
        PikeVerdict::Banned(_) => RC_NO,
        PikeVerdict::JustBanned => {
            announce_ban(e, &ip, now, "sec_pike_check");
            let c = e.config();
            rsec_log!(
                Notice,
                "sec_pike_check",
                "banned {} for {}s: more than {} requests in {}s",
                ip,
                c.pike_ban_time_s,
                c.pike_density,
                c.pike_sampling_time_s
            );
            RC_JUST_BANNED
        }
        PikeVerdict::OverLimitUnbanned => {
            rsec_log!(Err, "sec_pike_check", "{} is flooding but the ban table is full (max_bans); refusing its requests without a ban", ip);
            RC_JUST_BANNED
        }
    }
}

pub fn sec_rl_check(key: &[u8], limit: Option<i32>, period: Option<i32>) -> i32 {
    let e = try_engine!("sec_rl_check");
    let k = match RlKey::new(key) {
        Ok(k) => k,
        Err(err) => {
            rsec_log!(Err, "sec_rl_check", "bad key '{}': {}", text(&key[..key.len().min(64)]), err);
            return RC_ERROR;
        }
    };
    let limit = match limit {
        Some(l) if l > 0 => l as u32,
        Some(l) => {
            rsec_log!(Err, "sec_rl_check", "bad limit {} for key '{}': must be > 0", l, text(key));
            return RC_ERROR;
        }
        None => {
            rsec_log!(Err, "sec_rl_check", "missing limit for key '{}'", text(key));
            return RC_ERROR;
        }
    };
    let period = match period {
        None => 1,
        Some(p) if p > 0 => p as u32,
        Some(p) => {
            rsec_log!(Err, "sec_rl_check", "bad period {} for key '{}': must be > 0 seconds", p, text(key));
            return RC_ERROR;
        }
    };
    if or_table_error!("sec_rl_check", e.rl_check(&k, limit, period, now_us())) {
        RC_OK
    } else {
        RC_NO
    }
}

pub fn sec_ban_ip(target: &[u8], seconds: Option<i32>, reason: Option<&[u8]>) -> i32 {
    let e = try_engine!("sec_ban_ip");
    let cidr = match Cidr::parse(&text(target)) {
        Ok(c) => c,
        Err(err) => {
            rsec_log!(Err, "sec_ban_ip", "bad ip argument: {}", err);
            return RC_ERROR;
        }
    };
    let seconds = match seconds {
        None => e.config().ban_time_s,
        Some(s) if s >= 0 => s as u32,
        Some(s) => {
            rsec_log!(Err, "sec_ban_ip", "bad seconds {} for {}: must be >= 0 (0 = until unbanned)", s, cidr);
            return RC_ERROR;
        }
    };
    let reason = match reason {
        None => Reason::Manual,
        Some(r) => match Reason::parse(&text(r)) {
            Some(r) => r,
            None => {
                rsec_log!(Err, "sec_ban_ip", "bad reason '{}' for {}: use manual, pike, auth or rl", text(r), cidr);
                return RC_ERROR;
            }
        },
    };
    let now = now_us();
    let outcome = or_table_error!("sec_ban_ip", e.ban(cidr, seconds, reason, now));
    events::flush_lapsed(e);
    match outcome {
        BanOutcome::Created | BanOutcome::Updated => {
            announce_ban(e, &cidr.addr, now, "sec_ban_ip");
            rsec_log!(Notice, "sec_ban_ip", "banned {} for {} ({})", cidr, Duration(seconds), reason.as_str());
            RC_OK
        }
        BanOutcome::AlreadyBanned(r) => {
            rsec_log!(Info, "sec_ban_ip", "{} is already banned ({}); left as it is", cidr, r.as_str());
            RC_OK
        }
        BanOutcome::Whitelisted => {
            rsec_log!(Warn, "sec_ban_ip", "refusing to ban {}: it is whitelisted", cidr);
            RC_NO
        }
        BanOutcome::TableFull => {
            rsec_log!(Err, "sec_ban_ip", "cannot ban {}: ban table full (raise max_bans)", cidr);
            RC_ERROR
        }
    }
}

pub fn sec_unban_ip(target: &[u8]) -> i32 {
    let e = try_engine!("sec_unban_ip");
    let cidr = match Cidr::parse(&text(target)) {
        Ok(c) => c,
        Err(err) => {
            rsec_log!(Err, "sec_unban_ip", "bad ip argument: {}", err);
            return RC_ERROR;
        }
    };
    let removed = or_table_error!("sec_unban_ip", e.unban(&cidr, now_us()));
    events::flush_lapsed(e);
    match removed {
        Some(b) => {
            events::unban(&crate::engine::BanRecord { target: cidr, ban: b }, UnbanReason::Manual);
            rsec_log!(Notice, "sec_unban_ip", "unbanned {} (was banned for {})", cidr, b.reason.as_str());
            RC_OK
        }
        None => RC_NO,
    }
}

pub fn sec_is_banned(t: Target<'_>) -> i32 {
    let e = try_engine!("sec_is_banned");
    let ip = resolve_ip!("sec_is_banned", t);
    match or_table_error!("sec_is_banned", e.lookup_ban(&ip, now_us())) {
        Some(_) => RC_OK,
        None => RC_NO,
    }
}

pub fn sec_auth_fail(t: Target<'_>, user: Option<&[u8]>) -> i32 {
    let e = try_engine!("sec_auth_fail");
    let ip = resolve_ip!("sec_auth_fail", t);
    let user = user.map(text).unwrap_or_default();
    let now = now_us();
    let verdict = or_table_error!("sec_auth_fail", e.auth_fail(&ip, now));
    events::flush_lapsed(e);
    match verdict {
        AuthVerdict::Counted(_) | AuthVerdict::Whitelisted => RC_OK,
        AuthVerdict::AlreadyBanned(_) => RC_NO,
        AuthVerdict::JustBanned => {
            announce_ban(e, &ip, now, "sec_auth_fail");
            let c = e.config();
            rsec_log!(
                Notice,
                "sec_auth_fail",
                "banned {} for {}s: {} failed authentications in {}s (last user '{}')",
                ip,
                c.auth_ban_time_s,
                c.auth_fail_threshold,
                c.auth_fail_window_s,
                user
            );
            RC_JUST_BANNED
        }
        AuthVerdict::OverLimitUnbanned => {
            rsec_log!(Err, "sec_auth_fail", "{} reached the auth failure threshold but the ban table is full (max_bans)", ip);
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
