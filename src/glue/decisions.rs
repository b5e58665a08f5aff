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
    AuthVerdict, BanOutcome, BanRecord, Cidr, Decision, Engine, IpKey, Note, PikeVerdict, Reason,
    ReportVerdict, ScannerVerdict, Scope, ScopedBan, Side, TableError, TenantId, UserBlock,
    UserInfo, UserKey, Verdict, US_PER_S,
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

thread_local! {
    /// The decisions of the last operation this process ran, so that the
    /// log line of each carries its numbers (see [`Why`]).
    static LAST: std::cell::RefCell<Vec<Decision>> = const { std::cell::RefCell::new(Vec::new()) };
    /// Labels of the tenants this process has seen, by number.
    static LABELS: std::cell::RefCell<std::collections::HashMap<TenantId, String>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

/// Remembers a tenant's label for this process's log lines.
pub fn remember_tenant(id: TenantId, label: &str) {
    LABELS.with(|l| {
        let mut l = l.borrow_mut();
        if l.len() < 4096 {
            l.entry(id).or_insert_with(|| label.to_owned());
        }
    });
}

/// Tenant `id`'s label ("-" for none).
pub fn tenant_label(e: &Engine, id: TenantId) -> String {
    if id == 0 {
        return "-".to_owned();
    }
    if let Some(l) = LABELS.with(|l| l.borrow().get(&id).cloned()) {
        return l;
    }
    let l = e.tenant_label(id).unwrap_or_else(|| format!("#{id}"));
    remember_tenant(id, &l);
    l
}

/// The last operation's decision on `target`, if it made one.
fn last_on(target: &Cidr) -> Option<Decision> {
    LAST.with(|l| {
        l.borrow()
            .iter()
            .rev()
            .find(|d| d.target == *target)
            .copied()
    })
}

/// A decision's facts in the stable `key=value` form every ban's log line
/// ends with (after " | "), for SIEMs: see README, "Log lines".
pub struct Facts<'a>(pub &'a Engine, pub &'a Decision);

impl std::fmt::Display for Facts<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (e, d) = (self.0, self.1);
        let profile = e.profile_name(d.profile);
        write!(
            f,
            "decision={} rule={} ip={} target={} count={} threshold={} window={} ban={} offenses={} profile={} tenant={} dry_run={}",
            d.verdict.as_str(),
            d.rule.as_str(),
            d.ip,
            d.target,
            d.count,
            d.threshold,
            d.window_s,
            d.ban_s,
            d.offenses,
            if profile.is_empty() { "default" } else { &profile },
            shown(tenant_label(e, d.tenant).as_bytes()),
            (d.verdict == Verdict::DryRun) as u8
        )
    }
}

/// What ends the log line of a decision on `target` made by the last
/// operation: " | decision=ban rule=pike ..." (empty if it made none).
pub struct Why<'a>(pub &'a Engine, pub &'a Cidr);

impl std::fmt::Display for Why<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match last_on(self.1) {
            Some(d) => write!(f, " | {}", Facts(self.0, &d)),
            None => Ok(()),
        }
    }
}

/// Runs one engine operation, then reports what it found lapsed and what
/// it decided on the side (a prefix banned, an account blocked).
fn run<R>(e: &Engine, origin: Origin, op: impl FnOnce(&Engine) -> R) -> R {
    let r = op(e);
    if !e.take_pending() {
        // Nothing decided, lapsed or done on the side: the common case.
        LAST.with(|l| l.borrow_mut().clear());
        return r;
    }
    let decided = e.drain_decided();
    LAST.with(|l| *l.borrow_mut() = decided);
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
                    "banned {} for {}: {} addresses inside it banned at once (subnet_ban_threshold {}){}{}",
                    rec.target,
                    Length(&rec),
                    count,
                    e.config().subnet_ban_threshold,
                    Repeat(e, &rec),
                    Why(e, &rec.target)
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
    let d = last_on(&rec.target);
    let (profile, tenant) = match d {
        Some(d) => (e.profile_name(d.profile), tenant_label(e, d.tenant)),
        None => (String::new(), "-".to_owned()),
    };
    events::ban(
        rec,
        note.as_ref(),
        origin.name(),
        &events::Scoping {
            profile: &profile,
            tenant: "",
            dry_run: false,
            context: &tenant,
        },
    );
}

/// A ban for one tenant, or one dry run only pretended: raised as an
/// event (with `tenant`, `dry_run=1`), never persisted.
fn scoped_banned(e: &Engine, b: &ScopedBan, origin: Origin) {
    let d = last_on(&b.rec.target);
    let profile = d.map_or_else(String::new, |d| e.profile_name(d.profile));
    let context = d.map_or_else(|| "-".to_owned(), |d| tenant_label(e, d.tenant));
    let tenant = if b.tenant == 0 {
        String::new()
    } else {
        tenant_label(e, b.tenant)
    };
    events::ban(
        &b.rec,
        None,
        origin.name(),
        &events::Scoping {
            profile: &profile,
            tenant: &tenant,
            dry_run: b.dry_run,
            context: &context,
        },
    );
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
    scope: Scope,
    ip: &IpKey,
    method: Option<&[u8]>,
    now_us: u64,
) -> Result<PikeVerdict, TableError> {
    let v = run(e, origin, |e| {
        e.pike_check_scoped(scope, ip, method, now_us)
    })?;
    match &v {
        PikeVerdict::JustBanned(rec) => banned(e, rec, origin),
        PikeVerdict::Scoped(b) => scoped_banned(e, b, origin),
        _ => {}
    }
    Ok(v)
}

pub fn auth_fail(
    e: &Engine,
    origin: Origin,
    scope: Scope,
    ip: &IpKey,
    user: Option<&[u8]>,
    now_us: u64,
) -> Result<AuthVerdict, TableError> {
    let v = run(e, origin, |e| e.auth_fail_scoped(scope, ip, user, now_us))?;
    match &v {
        AuthVerdict::JustBanned(rec) => banned(e, rec, origin),
        AuthVerdict::Scoped(b) => scoped_banned(e, b, origin),
        _ => {}
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
    scope: Scope,
    ip: &IpKey,
    word: &Note,
    weight: u32,
    now_us: u64,
) -> Result<ReportVerdict, TableError> {
    let v = run(e, origin, |e| {
        e.report_scoped(scope, ip, word, weight, now_us)
    })?;
    match &v {
        ReportVerdict::JustBanned(rec, _) => banned(e, rec, origin),
        ReportVerdict::Scoped(b, _) => scoped_banned(e, b, origin),
        _ => {}
    }
    Ok(v)
}

pub fn scanner_check<'e>(
    e: &'e Engine,
    origin: Origin,
    scope: Scope,
    ip: &IpKey,
    header: Option<&[u8]>,
    now_us: u64,
) -> Result<(ScannerVerdict, Option<&'e str>), TableError> {
    let v = run(e, origin, |_| {
        e.scanner_check_scoped(scope, ip, header, now_us)
    })?;
    match &v.0 {
        ScannerVerdict::JustBanned(rec) => banned(e, rec, origin),
        ScannerVerdict::Scoped(b) => scoped_banned(e, b, origin),
        _ => {}
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
        events::ban(
            rec,
            note.as_ref(),
            Origin::Database.name(),
            &events::Scoping::default(),
        );
    }
    for b in &loaded.blocks {
        events::user_blocked(b);
    }
}
