//! The script functions: each declared once in [`script_functions!`] with
//! typed parameters (the C shims, parameter flags and export table are
//! generated from it), and each body a plain function of its decoded
//! arguments returning the script return code.

use crate::engine::{
    AuthVerdict, BanOutcome, Cidr, Engine, IpKey, Note, PikeVerdict, Reason, ReportVerdict, RlKey,
    ScannerVerdict, ScopedBan, TableError, MAX_SECONDS,
};
use crate::ffi::log::shown;
use crate::ffi::script::{Call, Int, Opt, Str};
use crate::ffi::sys::{
    BRANCH_ROUTE, ERROR_ROUTE, EVENT_ROUTE, FAILURE_ROUTE, LOCAL_ROUTE, ONREPLY_ROUTE,
    REQUEST_ROUTE, STARTUP_ROUTE, TIMER_ROUTE,
};
use crate::{rsec_log, rsec_log_throttled, script_functions};

use super::decisions::{self, Length, Origin, Repeat, Why};
use super::{engine, now_us, scope};

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
    /// Bans an address or prefix, with an optional note for operators.
    fn sec_ban_ip(call, ip: Str, seconds: Opt<Int>, reason: Opt<Str>, note: Opt<Str>) in ANY_ROUTE => ban_ip;
    fn sec_unban_ip(call, ip: Str) in ANY_ROUTE => unban_ip;
    fn sec_is_banned(call, ip: Opt<Str>) in MSG_ROUTES => is_banned;
    /// Records a failed authentication of the source (or `ip`), as `user`.
    fn sec_auth_fail(call, ip: Opt<Str>, user: Opt<Str>) in MSG_ROUTES => auth_fail;
    /// Counts `weight` of abuse (what, in `reason`) against the source.
    fn sec_report(call, reason: Str, weight: Opt<Int>, ip: Opt<Str>) in ANY_ROUTE => report;
    /// 1 when the account is blocked for failing authentication too often.
    fn sec_user_blocked(call, user: Str) in ANY_ROUTE => user_blocked;
    /// Bans the source of a request whose User-Agent (or a reply whose
    /// Server) is a scanner's.
    fn sec_scanner_check(call) in MSG_ROUTES => scanner_check;
    /// The profile (set of thresholds) the message's checks use.
    fn sec_profile(call, name: Str) in MSG_ROUTES => use_profile;
    /// The tenant the message's checks count for and obey.
    fn sec_tenant(call, label: Str) in MSG_ROUTES => use_tenant;
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
    // Only read when some method has its own limit.
    let method = if e.limits_methods() {
        call.method()
    } else {
        None
    };
    let scope = scope::of(call, e, &ip);
    let v = or_return!(table(
        call,
        decisions::pike_check(e, Origin::Script(call.name()), scope, &ip, method, now_us())
    ));
    let rec = match v {
        PikeVerdict::Allowed | PikeVerdict::Whitelisted | PikeVerdict::DryRunBlocked(_) => {
            return RC_OK
        }
        PikeVerdict::Banned(_) => return RC_NO,
        PikeVerdict::OverLimitUnbanned => {
            rsec_log_throttled!(
                Err,
                call.name(),
                "{} is flooding but the ban table is full (max_bans); refusing its requests without a ban{}",
                ip,
                Why(e, &e.ban_target(&ip))
            );
            return RC_JUST_BANNED;
        }
        PikeVerdict::JustBanned(rec) => rec,
        PikeVerdict::Scoped(b) => b.rec,
    };
    let lim = e.limits(scope.profile);
    let (n, what) = match (rec.ban.reason, method) {
        (Reason::Method, Some(m)) => (
            e.method_density(&lim, m).unwrap_or(0),
            format!("{} requests", shown(m)),
        ),
        _ => (lim.pike_density, "requests".to_owned()),
    };
    banned_log(
        call,
        e,
        &v,
        format_args!(
            "{} {} for {} ({}): more than {} {} in {}s{}",
            verb(&v),
            rec.target,
            Length(&rec),
            rec.ban.reason.as_str(),
            n,
            what,
            lim.pike_window_s,
            Repeat(e, &rec)
        ),
        &rec,
    )
}

/// How a ban's log line starts: "banned", "banned for tenant example.com
/// only:" or "dry run, would have banned".
fn verb<V: Scoped>(v: &V) -> &'static str {
    match v.scoped() {
        Some(b) if b.dry_run => "dry run: would have banned",
        Some(_) => "banned for its tenant only:",
        None => "banned",
    }
}

/// Verdicts that may carry a ban for one tenant or a dry run's.
trait Scoped {
    fn scoped(&self) -> Option<&ScopedBan>;
}

impl Scoped for PikeVerdict {
    fn scoped(&self) -> Option<&ScopedBan> {
        match self {
            PikeVerdict::Scoped(b) => Some(b),
            _ => None,
        }
    }
}

impl Scoped for AuthVerdict {
    fn scoped(&self) -> Option<&ScopedBan> {
        match self {
            AuthVerdict::Scoped(b) => Some(b),
            _ => None,
        }
    }
}

impl Scoped for ReportVerdict {
    fn scoped(&self) -> Option<&ScopedBan> {
        match self {
            ReportVerdict::Scoped(b, _) => Some(b),
            _ => None,
        }
    }
}

impl Scoped for ScannerVerdict {
    fn scoped(&self) -> Option<&ScopedBan> {
        match self {
            ScannerVerdict::Scoped(b) => Some(b),
            _ => None,
        }
    }
}

/// Logs a ban (or a dry run's would-be ban) with its facts, and says what
/// the function returns: a dry run lets the request pass.
fn banned_log<V: Scoped>(
    call: &Call,
    e: &Engine,
    v: &V,
    line: std::fmt::Arguments,
    rec: &crate::engine::BanRecord,
) -> i32 {
    rsec_log!(Notice, call.name(), "{}{}", line, Why(e, &rec.target));
    match v.scoped() {
        Some(b) if b.dry_run => RC_OK,
        _ => RC_JUST_BANNED,
    }
}

fn use_profile(call: &Call, name: &[u8]) -> i32 {
    let e = or_return!(ready(call));
    let Some(id) = e.profile_named(name) else {
        rsec_log_throttled!(
            Err,
            call.name(),
            "no profile named '{}' (profiles: {})",
            shown(name),
            e.profiles()
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        return RC_ERROR;
    };
    if !scope::set_profile(call, id) {
        rsec_log!(Err, call.name(), "no message to set the profile for");
        return RC_ERROR;
    }
    RC_OK
}

fn use_tenant(call: &Call, label: &[u8]) -> i32 {
    let e = or_return!(ready(call));
    if let Err(err) = crate::engine::TenantName::new(label) {
        rsec_log!(Err, call.name(), "bad tenant '{}': {}", shown(label), err);
        return RC_ERROR;
    }
    // A tenant's number never changes once given: known ones are found in
    // this process's own map, without a shared lock per request.
    if let Some(id) = scope::known_tenant(label) {
        return if scope::set_tenant(call, id) {
            RC_OK
        } else {
            RC_ERROR
        };
    }
    let id = match or_return!(table(call, e.tenant(label, now_us()))) {
        Some((id, _)) => {
            // Its statistics are registered by the timer (see stats.rs).
            decisions::remember_tenant(id, &String::from_utf8_lossy(label));
            scope::learn_tenant(label, id, e.config().max_tenants as usize);
            id
        }
        None => {
            rsec_log_throttled!(
                Warn,
                call.name(),
                "tenant '{}' not counted apart: max_tenants ({}) tenants are known already; its traffic is checked by the global rules",
                shown(label),
                e.config().max_tenants
            );
            0
        }
    };
    if !scope::set_tenant(call, id) {
        rsec_log!(Err, call.name(), "no message to set the tenant for");
        return RC_ERROR;
    }
    RC_OK
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

fn ban_ip(
    call: &Call,
    ip: &[u8],
    seconds: Option<i32>,
    reason: Option<&[u8]>,
    note: Option<&[u8]>,
) -> i32 {
    let e = or_return!(ready(call));
    let target = or_return!(prefix(call, ip));
    let note = match note.filter(|n| !n.is_empty()).map(Note::new).transpose() {
        Ok(n) => n,
        Err(err) => {
            rsec_log!(
                Err,
                call.name(),
                "bad note '{}' for {}: {}",
                shown(note.unwrap_or_default()),
                target,
                err
            );
            return RC_ERROR;
        }
    };
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
                    "bad reason '{}' for {}: use {}",
                    shown(r),
                    target,
                    REASONS
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
            note.as_ref(),
            now_us()
        )
    ));
    match outcome {
        BanOutcome::Created(rec) | BanOutcome::Updated(rec) => {
            rsec_log!(
                Notice,
                call.name(),
                "banned {} for {} ({}){}{}",
                rec.target,
                Length(&rec),
                reason.as_str(),
                NoteText(note.as_ref()),
                Why(e, &rec.target)
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
    let scope = scope::of(call, e, &ip);
    let v = or_return!(table(
        call,
        decisions::auth_fail(e, Origin::Script(call.name()), scope, &ip, user, now_us())
    ));
    let rec = match v {
        AuthVerdict::Counted(_) | AuthVerdict::Whitelisted | AuthVerdict::DryRunBlocked(_) => {
            return RC_OK
        }
        AuthVerdict::AlreadyBanned(_) => return RC_NO,
        AuthVerdict::OverLimitUnbanned => {
            rsec_log_throttled!(
                Err,
                call.name(),
                "{} reached the auth failure threshold but the ban table is full (max_bans){}",
                ip,
                Why(e, &e.ban_target(&ip))
            );
            return RC_JUST_BANNED;
        }
        AuthVerdict::JustBanned(rec) => rec,
        AuthVerdict::Scoped(b) => b.rec,
    };
    let lim = e.limits(scope.profile);
    let why = if rec.ban.reason == Reason::Enum {
        format!(
            "failed authentication for {} distinct usernames in {}s (enum_threshold {})",
            lim.enum_threshold, lim.auth_window_s, lim.enum_threshold
        )
    } else {
        format!(
            "{} failed authentications in {}s (auth_fail_threshold {})",
            lim.auth_threshold, lim.auth_window_s, lim.auth_threshold
        )
    };
    banned_log(
        call,
        e,
        &v,
        format_args!(
            "{} {} for {} ({}): {} (last user '{}'){}",
            verb(&v),
            rec.target,
            Length(&rec),
            rec.ban.reason.as_str(),
            why,
            shown(user.unwrap_or_default()),
            Repeat(e, &rec)
        ),
        &rec,
    )
}

/// The reasons a script or MI may give a ban.
pub const REASONS: &str = "manual, pike, auth, rl, subnet, method, enum, scanner or report";

/// A ban's note as appended to its log line: `, note 'abuse ticket 4411'`.
pub struct NoteText<'a>(pub Option<&'a Note>);

impl std::fmt::Display for NoteText<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(n) => write!(f, ", note '{}'", shown(n.as_bytes())),
            None => Ok(()),
        }
    }
}

/// Heaviest single report: a window counts up to 65,534.
const MAX_WEIGHT: i32 = 1000;

fn report(call: &Call, reason: &[u8], weight: Option<i32>, ip: Option<&[u8]>) -> i32 {
    let e = or_return!(ready(call));
    let word = match Note::new(reason) {
        Ok(w) => w,
        Err(err) => {
            rsec_log!(
                Err,
                call.name(),
                "bad reason '{}': {} (a word saying what was reported, 1 to {} bytes)",
                shown(reason),
                err,
                Note::MAX
            );
            return RC_ERROR;
        }
    };
    let weight = match weight {
        None => 1,
        Some(w) if (1..=MAX_WEIGHT).contains(&w) => w as u32,
        Some(w) => {
            rsec_log!(
                Err,
                call.name(),
                "bad weight {} for report '{}': must be 1 to {}",
                w,
                shown(reason),
                MAX_WEIGHT
            );
            return RC_ERROR;
        }
    };
    let ip = or_return!(source(call, ip));
    let scope = scope::of(call, e, &ip);
    let v = or_return!(table(
        call,
        decisions::report(
            e,
            Origin::Script(call.name()),
            scope,
            &ip,
            &word,
            weight,
            now_us()
        )
    ));
    let (rec, total) = match v {
        ReportVerdict::Counted(_)
        | ReportVerdict::Whitelisted
        | ReportVerdict::DryRunBlocked(_) => return RC_OK,
        ReportVerdict::AlreadyBanned(_) => return RC_NO,
        ReportVerdict::OverLimitUnbanned => {
            rsec_log_throttled!(
                Err,
                call.name(),
                "{} reached report_threshold but the ban table is full (max_bans){}",
                ip,
                Why(e, &e.ban_target(&ip))
            );
            return RC_JUST_BANNED;
        }
        ReportVerdict::JustBanned(rec, total) => (rec, total),
        ReportVerdict::Scoped(b, total) => (b.rec, total),
    };
    let lim = e.limits(scope.profile);
    banned_log(
        call,
        e,
        &v,
        format_args!(
            "{} {} for {} (report): reported weight {} in {}s reached report_threshold {}, last report '{}'{}",
            verb(&v),
            rec.target,
            Length(&rec),
            total,
            e.config().report_window_s,
            lim.report_threshold,
            shown(reason),
            Repeat(e, &rec)
        ),
        &rec,
    )
}

fn scanner_check(call: &Call) -> i32 {
    let e = or_return!(ready(call));
    let ip = or_return!(source(call, None));
    let header = call.user_agent();
    let scope = scope::of(call, e, &ip);
    let (v, pattern) = or_return!(table(
        call,
        decisions::scanner_check(e, Origin::Script(call.name()), scope, &ip, header, now_us())
    ));
    let rec = match v {
        ScannerVerdict::Clean | ScannerVerdict::Whitelisted | ScannerVerdict::DryRunBlocked(_) => {
            return RC_OK
        }
        ScannerVerdict::AlreadyBanned(_) => return RC_NO,
        ScannerVerdict::OverLimitUnbanned => {
            rsec_log_throttled!(
                Err,
                call.name(),
                "{} is a scanner but the ban table is full (max_bans){}",
                ip,
                Why(e, &e.ban_target(&ip))
            );
            return RC_JUST_BANNED;
        }
        ScannerVerdict::JustBanned(rec) => rec,
        ScannerVerdict::Scoped(b) => b.rec,
    };
    banned_log(
        call,
        e,
        &v,
        format_args!(
            "{} {} for {} (scanner): {} '{}' matches scanner pattern '{}'{}",
            verb(&v),
            rec.target,
            Length(&rec),
            if call.is_request() {
                "User-Agent"
            } else {
                "Server"
            },
            shown(header.unwrap_or_default()),
            pattern.unwrap_or_default(),
            Repeat(e, &rec)
        ),
        &rec,
    )
}

fn user_blocked(call: &Call, user: &[u8]) -> i32 {
    let e = or_return!(ready(call));
    if user.is_empty() {
        rsec_log!(Err, call.name(), "bad user '': empty");
        return RC_ERROR;
    }
    match or_return!(table(call, e.user(user, now_us()))) {
        Some(u) if u.blocked.is_some() => RC_OK,
        _ => RC_NO,
    }
}
