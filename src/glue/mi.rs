//! MI commands: the ban list, per-source inspection, rate-limit keys, top
//! talkers, the runtime whitelist and the database. Each is declared once
//! in [`mi_commands!`] (the export table, with a recipe for each number of
//! optional parameters given, is generated from it). They run in the MI process
//! (mi_fifo, mi_http…) and take one stripe lock at a time, so workers keep
//! going.

use crate::engine::{
    BanOutcome, BanRecord, Cidr, Decision, Engine, IpKey, Note, Reason, RlKey, TableError,
    UserInfo, UserKey, Verdict, MAX_SECONDS, US_PER_S,
};
use crate::ffi::mi::{self, MiError, MiResult, Obj, Params};
use crate::{mi_commands, rsec_log};

use super::decisions::{self, Origin};
use super::{engine, now_us};

mi_commands! {
    fn sec_ban_list(; ip) + (cursor, limit) + (ip, cursor, limit) => ban_list,
        "list active bans (a page of at most limit, from cursor), optionally those covering an ip or inside a prefix";
    fn sec_ban(ip; seconds, reason, note) => ban, "ban an ip or prefix: ip [seconds] [reason] [note]";
    fn sec_unban(ip; tenant) => unban, "lift the ban on an ip or prefix (a tenant's own ban with tenant)";
    fn sec_ban_flush() => ban_flush, "lift every ban; returns how many";
    fn sec_ip_info(ip) => ip_info, "everything rsec knows of one source";
    fn sec_rl_list(; key) => rl_list, "rate-limit keys and their use";
    fn sec_top(; n, tenant) => top, "the n sources with the highest request rate (of one tenant's traffic with tenant)";
    fn sec_whitelist_list() => whitelist_list, "list whitelisted prefixes, global and per tenant";
    fn sec_whitelist_add(cidr; tenant) => whitelist_add, "whitelist a prefix in every process (for one tenant's traffic with tenant)";
    fn sec_whitelist_del(cidr; tenant) => whitelist_del, "remove a prefix from the whitelist (a tenant's with tenant)";
    fn sec_explain(ip) => explain, "why an address is blocked (or not): its ban, the decisions on it with their numbers, its counts";
    fn sec_decisions(; n, ip) => decisions_list, "the latest ban decisions, newest first (those concerning ip)";
    fn sec_profile_list() => profile_list, "the profiles and their thresholds";
    fn sec_profile_set(profile) => profile_set, "set a profile from its text, 'name: setting=value; ...', in every process";
    fn sec_profile_reload() => profile_reload, "reload the profiles of the rsec_profiles table";
    fn sec_tenant_list() => tenant_list, "the tenants seen, with their counts and tenant-scoped bans";
    fn sec_db_sync() => db_sync, "import other nodes' bans from the database now";
    fn sec_whitelist_reload() => whitelist_reload, "reload rsec_whitelist from the database";
    fn sec_user_list(; user) => user_list, "accounts with recent authentication failures, blocked ones first";
    fn sec_user_unblock(user) => user_unblock, "lift the block of an account and forget its failures";
}

fn ready() -> Result<&'static Engine, MiError> {
    engine().ok_or_else(|| MiError::new(500, "rsec is not initialised"))
}

fn table<T>(r: Result<T, TableError>) -> Result<T, MiError> {
    r.map_err(|e| MiError::new(500, format!("shared table error: {e}")))
}

fn cidr(param: &str, s: &str) -> Result<Cidr, MiError> {
    Cidr::parse(s).map_err(|err| MiError::bad(param, s, err.why()))
}

fn ban_obj(e: &Engine, o: &Obj, r: &BanRecord, now: u64) {
    o.str("ip", &r.target.to_string())
        .str("reason", r.ban.reason.as_str())
        .num("created", (r.ban.created_us / US_PER_S) as f64)
        .num("expires", (r.ban.expires_us / US_PER_S) as f64)
        .num(
            "seconds_left",
            if r.ban.is_permanent() {
                -1.0
            } else {
                r.ban.expires_us.saturating_sub(now).div_ceil(US_PER_S) as f64
            },
        )
        .num("hits", r.ban.hits as f64);
    if let Ok(Some(n)) = e.note_of(r, now) {
        o.str("note", &String::from_utf8_lossy(n.as_bytes()));
    }
}

/// Bans per `sec_ban_list` reply when no limit is given: every ban of a
/// table of the default size (16384) in one or two pages, and a reply
/// (~1.2 MB of JSON) that fits mi_http's buffer with OpenSIPS's default
/// private memory.
pub const BAN_LIST_DEFAULT_LIMIT: i64 = 10_000;

fn ban_list(p: Params) -> MiResult {
    let e = ready()?;
    let now = now_us();
    let filter = p.str(c"ip")?.map(|s| cidr("ip", &s)).transpose()?;
    // Cursors are below max_bans + lock_stripes; the bound is what a JSON
    // number keeps through OpenSIPS's MI (a C int).
    let cursor = p.int(c"cursor", 0..=i32::MAX as i64)?.unwrap_or(0) as u64;
    let limit = p
        .int(c"limit", 1..=BAN_LIST_DEFAULT_LIMIT)?
        .unwrap_or(BAN_LIST_DEFAULT_LIMIT) as usize;
    let (mut bans, next) = table(e.bans_page(cursor, limit, now, |b| match &filter {
        None => true,
        // An address shows the bans covering it; a prefix, the bans inside it.
        Some(f) => {
            b.target.contains(&f.addr) || f.contains(&b.target.addr) && f.prefix <= b.target.prefix
        }
    }))?;
    // Oldest first within the page: a list that fits one page reads as it
    // always did.
    bans.sort_by_key(|b| (b.ban.created_us, b.target));
    Ok(mi::object(|o| {
        o.num("count", bans.len() as f64);
        let arr = o.array("bans");
        for b in &bans {
            ban_obj(e, &arr.object(), b, now);
        }
        o.bool("more", next.is_some());
        if let Some(c) = next {
            o.num("next_cursor", c as f64);
        }
    }))
}

fn ban(p: Params) -> MiResult {
    let e = ready()?;
    let target = cidr("ip", &p.required_str(c"ip")?)?;
    let seconds = p
        .int(c"seconds", 0..=MAX_SECONDS as i64)?
        .map_or(e.config().ban_time_s, |s| s as u32);
    let reason = match p.str(c"reason")? {
        None => Reason::Manual,
        Some(r) => Reason::parse(&r).ok_or_else(|| {
            MiError::bad("reason", &r, format!("use {}", super::functions::REASONS))
        })?,
    };
    let note = p
        .str(c"note")?
        .filter(|n| !n.is_empty())
        .map(|n| Note::new(n.as_bytes()).map_err(|err| MiError::bad("note", &n, err)))
        .transpose()?;
    match table(decisions::ban(
        e,
        Origin::Mi,
        target,
        seconds,
        reason,
        note.as_ref(),
        now_us(),
    ))? {
        BanOutcome::Created(rec) | BanOutcome::Updated(rec) => {
            rsec_log!(
                Notice,
                "mi",
                "banned {} for {}s ({}) from MI{}",
                rec.target,
                seconds,
                reason.as_str(),
                super::functions::NoteText(note.as_ref())
            );
            Ok(mi::ok("OK"))
        }
        BanOutcome::AlreadyBanned(rec) => Ok(mi::ok(&format!(
            "already banned ({})",
            rec.ban.reason.as_str()
        ))),
        BanOutcome::Whitelisted(w) => Err(MiError::new(
            403,
            format!("{target} is or contains whitelisted {w} and cannot be banned"),
        )),
        BanOutcome::TooBroad(why) => Err(MiError::new(
            403,
            format!("refusing to ban {target}: {why}"),
        )),
        BanOutcome::TableFull => Err(MiError::new(500, "ban table full (raise max_bans)")),
    }
}

fn unban(p: Params) -> MiResult {
    let e = ready()?;
    let target = cidr("ip", &p.required_str(c"ip")?)?;
    if let Some(t) = p.str(c"tenant")? {
        let id = known_tenant(e, &t)?;
        return match table(e.tenant_unban(id, &target, now_us()))? {
            Some(_) => {
                rsec_log!(
                    Notice,
                    "mi",
                    "unbanned {} for tenant '{}' from MI",
                    target,
                    crate::ffi::log::shown(t.as_bytes())
                );
                Ok(mi::ok("OK"))
            }
            None => Err(MiError::new(
                404,
                format!("{target} is not banned for tenant '{t}'"),
            )),
        };
    }
    match table(decisions::unban(e, Origin::Mi, &target, now_us()))? {
        Some(_) => {
            rsec_log!(Notice, "mi", "unbanned {} from MI", target);
            Ok(mi::ok("OK"))
        }
        None => Err(MiError::new(404, format!("{target} is not banned"))),
    }
}

fn ban_flush(_: Params) -> MiResult {
    let e = ready()?;
    let removed = table(decisions::flush(e, Origin::Mi, now_us()))?;
    rsec_log!(Notice, "mi", "flushed {} bans from MI", removed.len());
    Ok(mi::object(|o| {
        o.num("removed", removed.len() as f64);
    }))
}

fn ip_info(p: Params) -> MiResult {
    let e = ready()?;
    let ip = p.required_str(c"ip")?;
    let addr = IpKey::parse(&ip).map_err(|err| MiError::bad("ip", &ip, err.why()))?;
    let now = now_us();
    let info = table(e.source_info(&addr, now))?;
    let c = e.config();
    Ok(mi::object(|o| {
        o.str("ip", &addr.to_string())
            .str("tracked_as", &info.unit.to_string())
            .bool("whitelisted", info.whitelisted)
            .bool("banned", info.ban.is_some());
        o.object("pike")
            .num("requests", info.pike_requests as f64)
            .num("density", c.pike_density as f64)
            .num("sampling_time", c.pike_sampling_time_s as f64);
        o.object("auth")
            .num("failures", info.auth_failures as f64)
            .num("threshold", c.auth_fail_threshold as f64)
            .num("window", c.auth_fail_window_s as f64);
        o.object("enum")
            .num("usernames", info.users_failed as f64)
            .num("threshold", c.enum_threshold as f64)
            .num("window", c.auth_fail_window_s as f64);
        o.object("report")
            .num("weight", info.reports as f64)
            .num("threshold", c.report_threshold as f64)
            .num("window", c.report_window_s as f64);
        if let Some(h) = &info.history {
            o.object("history")
                .num("offenses", h.offenses as f64)
                .num("last_ban", h.last_start_s as f64)
                .num("last_seconds", h.last_len_s as f64)
                .num("last_ends", h.last_end_s as f64);
        }
        if let Some(t) = info.last_seen_us {
            o.num("last_seen", (t / US_PER_S) as f64);
        }
        if let Some(b) = &info.ban {
            ban_obj(e, &o.object("ban"), b, now);
        }
    }))
}

fn rl_list(p: Params) -> MiResult {
    let e = ready()?;
    let key = match p.str(c"key")? {
        None => None,
        Some(k) => Some(RlKey::new(k.as_bytes()).map_err(|err| MiError::bad("key", &k, err))?),
    };
    let mut keys = table(e.rl_list(key.as_ref(), now_us()))?;
    keys.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(mi::object(|o| {
        o.num("count", keys.len() as f64);
        let arr = o.array("keys");
        for k in &keys {
            arr.object()
                .str("key", &String::from_utf8_lossy(&k.key))
                .num("limit", k.limit as f64)
                .num("period", k.period_s as f64)
                .num("used", k.limit.saturating_sub(k.available) as f64)
                .num("available", k.available as f64);
        }
    }))
}

fn top(p: Params) -> MiResult {
    let e = ready()?;
    let n = p.int(c"n", 1..=10_000)?.unwrap_or(10) as usize;
    let tenant = p.str(c"tenant")?;
    let top = match &tenant {
        None => table(e.top_sources(n, now_us()))?,
        Some(t) => table(e.top_tenant_sources(known_tenant(e, t)?, n, now_us()))?,
    };
    let window = e.config().pike_sampling_time_s as f64;
    Ok(mi::object(|o| {
        o.num("window", window);
        if let Some(t) = &tenant {
            o.str("tenant", t);
        }
        let arr = o.array("sources");
        for (ip, c) in &top {
            arr.object()
                .str("ip", &ip.to_string())
                .num("requests", *c as f64)
                .num("rate", *c as f64 / window);
        }
    }))
}

fn whitelist_list(_: Params) -> MiResult {
    let e = ready()?;
    let list = e.whitelist().list();
    let tenants = table(e.tenant_whitelist())?;
    Ok(mi::object(|o| {
        let arr = o.array("whitelist");
        for c in &list {
            arr.str(&c.to_string());
        }
        let arr = o.array("tenants");
        for (t, c) in &tenants {
            arr.object().str("tenant", t).str("cidr", &c.to_string());
        }
    }))
}

/// A tenant named by an MI parameter, which must be known already.
fn known_tenant(e: &Engine, t: &str) -> Result<crate::engine::TenantId, MiError> {
    crate::engine::TenantName::new(t.as_bytes()).map_err(|err| MiError::bad("tenant", t, err))?;
    table(e.tenant_id_if_known(t.as_bytes()))?
        .ok_or_else(|| MiError::new(404, format!("no tenant '{t}' has been seen")))
}

fn whitelist_add(p: Params) -> MiResult {
    let e = ready()?;
    let c = cidr("cidr", &p.required_str(c"cidr")?)?;
    if let Some(t) = p.str(c"tenant")? {
        crate::engine::TenantName::new(t.as_bytes())
            .map_err(|err| MiError::bad("tenant", &t, err))?;
        return match e.tenant_whitelist_add(t.as_bytes(), c, now_us()) {
            Ok(true) => {
                rsec_log!(
                    Notice,
                    "mi",
                    "whitelist added {} for tenant '{}'",
                    c,
                    crate::ffi::log::shown(t.as_bytes())
                );
                Ok(mi::ok("OK"))
            }
            Ok(false) => Ok(mi::ok("already whitelisted")),
            Err(crate::engine::WhitelistChange::TooBroad(why)) => Err(MiError::new(
                403,
                format!("refusing to whitelist {c}: {why}"),
            )),
            Err(err) => Err(MiError::new(
                500,
                format!("{err} (max_tenants or max_whitelist)"),
            )),
        };
    }
    match e.whitelist_add(c) {
        Ok(true) => {
            rsec_log!(Notice, "mi", "whitelist added {}", c);
            Ok(mi::ok("OK"))
        }
        Ok(false) => Ok(mi::ok("already whitelisted")),
        Err(crate::engine::WhitelistChange::TooBroad(why)) => Err(MiError::new(
            403,
            format!("refusing to whitelist {c}: {why}"),
        )),
        Err(err) => Err(MiError::new(500, err.to_string())),
    }
}

fn whitelist_del(p: Params) -> MiResult {
    let e = ready()?;
    let c = cidr("cidr", &p.required_str(c"cidr")?)?;
    if let Some(t) = p.str(c"tenant")? {
        crate::engine::TenantName::new(t.as_bytes())
            .map_err(|err| MiError::bad("tenant", &t, err))?;
        return match table(e.tenant_whitelist_remove(t.as_bytes(), &c))? {
            true => {
                rsec_log!(
                    Notice,
                    "mi",
                    "whitelist removed {} for tenant '{}'",
                    c,
                    crate::ffi::log::shown(t.as_bytes())
                );
                Ok(mi::ok("OK"))
            }
            false => Err(MiError::new(
                404,
                format!("{c} is not in tenant '{t}''s whitelist"),
            )),
        };
    }
    match e.whitelist_remove(&c) {
        Ok(true) => {
            rsec_log!(Notice, "mi", "whitelist removed {}", c);
            Ok(mi::ok("OK"))
        }
        Ok(false) => Err(MiError::new(404, format!("{c} is not in the whitelist"))),
        Err(err) => Err(MiError::new(500, err.to_string())),
    }
}

fn db_sync(_: Params) -> MiResult {
    let cursor = super::persist::request_sync(std::time::Duration::from_secs(10))
        .map_err(|why| MiError::new(503, why))?;
    Ok(mi::object(|o| {
        o.bool("synced", true).num("cursor", cursor as f64);
        if let Some(s) = super::persist::shared() {
            o.num(
                "last_sync",
                s.last_sync_s.load(std::sync::atomic::Ordering::Relaxed) as f64,
            );
        }
    }))
}

fn whitelist_reload(_: Params) -> MiResult {
    let n = super::persist::request_whitelist_reload(std::time::Duration::from_secs(10))
        .map_err(|why| MiError::new(503, why))?;
    Ok(mi::object(|o| {
        o.num("entries", n as f64);
    }))
}

fn user_obj(o: &Obj, u: &UserInfo, now: u64) {
    o.str("user", &String::from_utf8_lossy(u.user.as_bytes()))
        .num("failures", u.failures as f64)
        .bool("blocked", u.blocked.is_some());
    if let Some((at, ends)) = u.blocked {
        o.num("blocked_at", (at / US_PER_S) as f64)
            .num("expires", (ends / US_PER_S) as f64)
            .num(
                "seconds_left",
                ends.saturating_sub(now).div_ceil(US_PER_S) as f64,
            );
    }
}

fn user_param(p: &Params) -> Result<Option<String>, MiError> {
    let u = p.str(c"user")?;
    if let Some(u) = &u {
        if let Err(err) = UserKey::new(u.as_bytes()) {
            return Err(MiError::bad("user", u, err));
        }
    }
    Ok(u)
}

fn user_list(p: Params) -> MiResult {
    let e = ready()?;
    let now = now_us();
    let users = match user_param(&p)? {
        Some(u) => table(e.user(u.as_bytes(), now))?.into_iter().collect(),
        None => table(e.users_list(now))?,
    };
    Ok(mi::object(|o| {
        o.num("count", users.len() as f64);
        let arr = o.array("users");
        for u in &users {
            user_obj(&arr.object(), u, now);
        }
    }))
}

fn user_unblock(p: Params) -> MiResult {
    let e = ready()?;
    let user = user_param(&p)?.ok_or_else(|| MiError::new(400, "missing user"))?;
    let key = UserKey::cut(user.as_bytes());
    match table(decisions::user_unblock(e, Origin::Mi, &key, now_us()))? {
        Some(_) => {
            rsec_log!(
                Notice,
                "mi",
                "unblocked account '{}' from MI",
                crate::ffi::log::shown(user.as_bytes())
            );
            Ok(mi::ok("OK"))
        }
        None => Err(MiError::new(
            404,
            format!(
                "account '{}' is not blocked",
                crate::ffi::log::shown(user.as_bytes())
            ),
        )),
    }
}

/// One decision as MI shows it.
fn decision_obj(e: &Engine, o: &Obj, d: &Decision) {
    let profile = e.profile_name(d.profile);
    o.num("time", (d.at_us / US_PER_S) as f64)
        .str(
            "at",
            &format!("{}.{:06}", d.at_us / US_PER_S, d.at_us % US_PER_S),
        )
        .str("decision", d.verdict.as_str())
        .str("rule", d.rule.as_str())
        .str("ip", &d.ip.to_string())
        .str("target", &d.target.to_string())
        .num("count", d.count as f64)
        .num("threshold", d.threshold as f64)
        .num("window", d.window_s as f64)
        .num("ban_seconds", d.ban_s as f64)
        .num("offenses", d.offenses as f64)
        .str("profile", &profile)
        .str("tenant", &decisions::tenant_label(e, d.tenant))
        .str("why", &Sentence(e, d).to_string())
        .str("log", &decisions::Facts(e, d).to_string());
}

/// A decision in words: "pike: 31 requests in 2s from 192.0.2.7 over
/// pike_density 30 (profile default): banned 192.0.2.7 for 300s".
struct Sentence<'a>(&'a Engine, &'a Decision);

impl std::fmt::Display for Sentence<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (e, d) = (self.0, self.1);
        let (what, param) = match d.rule {
            Reason::Pike => ("requests", "pike_density"),
            Reason::Method => ("requests of one method", "pike_method_density"),
            Reason::Auth => ("failed authentications", "auth_fail_threshold"),
            Reason::Enum => ("usernames failed", "enum_threshold"),
            Reason::Report => ("reported weight", "report_threshold"),
            Reason::Subnet => ("addresses banned inside it", "subnet_ban_threshold"),
            Reason::Scanner => ("scanner signature", "scanner_patterns"),
            Reason::RateLimit | Reason::Manual => ("", ""),
        };
        write!(f, "{}: ", d.rule.as_str())?;
        if param.is_empty() {
            write!(f, "asked for")?;
        } else if d.window_s > 0 {
            write!(
                f,
                "{} {} in {}s from {} over {} {}",
                d.count, what, d.window_s, d.ip, param, d.threshold
            )?;
        } else {
            write!(
                f,
                "{} {} from {} ({} {})",
                d.count, what, d.ip, param, d.threshold
            )?;
        }
        let profile = e.profile_name(d.profile);
        write!(
            f,
            " (profile {}",
            if profile.is_empty() {
                "default"
            } else {
                &profile
            }
        )?;
        if d.tenant != 0 {
            write!(f, ", tenant {}", decisions::tenant_label(e, d.tenant))?;
        }
        let len = if d.ban_s == 0 {
            "until unbanned".to_owned()
        } else {
            format!("for {}s", d.ban_s)
        };
        match d.verdict {
            Verdict::Ban => write!(f, "): banned {} {len}", d.target)?,
            Verdict::TenantBan => write!(f, "): banned {} {len} for this tenant only", d.target)?,
            Verdict::DryRun => write!(f, "): dry run, would have banned {} {len}", d.target)?,
            Verdict::Refused => write!(
                f,
                "): refused without a ban, the ban table being full (max_bans)"
            )?,
        }
        if d.offenses > 1 {
            write!(f, ", repeat offence {}", d.offenses)?;
        }
        Ok(())
    }
}

fn explain(p: Params) -> MiResult {
    let e = ready()?;
    let ip = p.required_str(c"ip")?;
    let addr = IpKey::parse(&ip).map_err(|err| MiError::bad("ip", &ip, err.why()))?;
    let now = now_us();
    let info = table(e.source_info(&addr, now))?;
    let found = e.decisions(64, Some(&addr));
    let dry = table(e.dry_run_bans_of(&addr, now))?;
    let counts = table(e.profiled_counts(&addr, now))?;
    let tenant_bans: Vec<_> = table(e.tenant_bans(now))?
        .into_iter()
        .filter(|(_, b)| b.target.contains(&addr))
        .collect();
    // The decision behind the ban in force, if the ring still has it.
    let behind = info.ban.as_ref().and_then(|b| {
        found.iter().find(|d| {
            d.target == b.target
                && d.verdict == Verdict::Ban
                && d.at_us / US_PER_S == b.ban.created_us / US_PER_S
        })
    });
    let summary =
        match (&info.ban, behind) {
            _ if info.whitelisted => "not blocked: whitelisted".to_owned(),
            (Some(_), Some(d)) => format!("blocked: {}", Sentence(e, d)),
            (Some(b), None) => format!(
            "blocked by a {} ban on {} (made by {}; its decision is no longer in the ring of {})",
            b.ban.reason.as_str(),
            b.target,
            if b.ban.reason == Reason::Manual { "hand" } else { "another node or an earlier run" },
            e.decisions_recorded().1
        ),
            (None, _) if !tenant_bans.is_empty() => {
                "blocked for some tenants only (see tenant_bans)".to_owned()
            }
            (None, _) if !dry.is_empty() => {
                "not blocked: dry run would block it (see dry_run)".to_owned()
            }
            (None, _) => "not blocked".to_owned(),
        };
    let c = e.config();
    Ok(mi::object(|o| {
        o.str("ip", &addr.to_string())
            .str("tracked_as", &info.unit.to_string())
            .str("why", &summary)
            .bool("blocked", info.ban.is_some())
            .bool("whitelisted", info.whitelisted);
        if let Some(b) = &info.ban {
            ban_obj(e, &o.object("ban"), b, now);
        }
        let arr = o.array("decisions");
        for d in &found {
            decision_obj(e, &arr.object(), d);
        }
        let arr = o.array("counts");
        arr.object()
            .str("profile", "default")
            .num("requests", info.pike_requests as f64)
            .num("pike_density", c.pike_density as f64)
            .num("window", c.pike_sampling_time_s as f64)
            .num("auth_failures", info.auth_failures as f64)
            .num("auth_fail_threshold", c.auth_fail_threshold as f64);
        for (id, r, a) in &counts {
            let lim = e.limits(*id);
            arr.object()
                .str("profile", &e.profile_name(*id))
                .num("requests", *r as f64)
                .num("pike_density", lim.pike_density as f64)
                .num("window", lim.pike_window_s as f64)
                .num("auth_failures", *a as f64)
                .num("auth_fail_threshold", lim.auth_threshold as f64);
        }
        let arr = o.array("dry_run");
        for (k, b) in &dry {
            let rec = BanRecord {
                target: k.target,
                ban: *b,
            };
            let obj = arr.object();
            ban_obj(e, &obj, &rec, now);
            obj.str("profile", &e.profile_name(k.profile));
        }
        let arr = o.array("tenant_bans");
        for (t, b) in &tenant_bans {
            let obj = arr.object();
            ban_obj(e, &obj, b, now);
            obj.str("tenant", &decisions::tenant_label(e, *t));
        }
        if let Some(h) = &info.history {
            o.object("history")
                .num("offenses", h.offenses as f64)
                .num("last_ban", h.last_start_s as f64)
                .num("last_seconds", h.last_len_s as f64);
        }
    }))
}

fn decisions_list(p: Params) -> MiResult {
    let e = ready()?;
    let (recorded, kept) = e.decisions_recorded();
    let n = p.int(c"n", 1..=kept as i64)?.unwrap_or(20) as usize;
    let ip = match p.str(c"ip")? {
        None => None,
        Some(s) => Some(IpKey::parse(&s).map_err(|err| MiError::bad("ip", &s, err.why()))?),
    };
    let list = e.decisions(n, ip.as_ref());
    Ok(mi::object(|o| {
        o.num("count", list.len() as f64)
            .num("recorded", recorded as f64)
            .num("kept", kept as f64);
        let arr = o.array("decisions");
        for d in &list {
            decision_obj(e, &arr.object(), d);
        }
    }))
}

fn profile_list(_: Params) -> MiResult {
    let e = ready()?;
    let profiles = e.profiles();
    Ok(mi::object(|o| {
        let arr = o.array("profiles");
        for pv in &profiles {
            let l = &pv.limits;
            let obj = arr.object();
            obj.str("name", &pv.name)
                .num("pike_sampling_time", l.pike_window_s as f64)
                .num("pike_density", l.pike_density as f64)
                .num("pike_ban_time", l.pike_ban_s as f64)
                .num("auth_fail_threshold", l.auth_threshold as f64)
                .num("auth_fail_window", l.auth_window_s as f64)
                .num("auth_ban_time", l.auth_ban_s as f64)
                .num("recidive_window", l.recidive_window_s as f64)
                .num("ban_multiplier", l.ban_multiplier as f64)
                .num("ban_time_max", l.ban_time_max_s as f64)
                .num("enum_threshold", l.enum_threshold as f64)
                .num("report_threshold", l.report_threshold as f64)
                .num("report_window", l.report_window_s as f64)
                .num("report_ban_time", l.report_ban_s as f64)
                .num("scanner_ban_time", l.scanner_ban_s as f64)
                .num("user_fail_threshold", l.user_fail_threshold as f64)
                .num("user_fail_window", l.user_fail_window_s as f64)
                .num("user_block_time", l.user_block_s as f64)
                .str("pike_method_density", &e.method_density_text(l))
                .bool("dry_run", l.dry_run)
                .str("ban_scope", if l.tenant_bans { "tenant" } else { "global" });
        }
    }))
}

fn profile_set(p: Params) -> MiResult {
    let e = ready()?;
    let text = p.required_str(c"profile")?;
    let id = e
        .set_profile(&text)
        .map_err(|why| MiError::new(400, format!("profile not set: {why}")))?;
    rsec_log!(
        Notice,
        "mi",
        "profile '{}' set from MI: {}",
        e.profile_name(id),
        crate::ffi::log::shown(text.as_bytes())
    );
    Ok(mi::ok("OK"))
}

fn profile_reload(_: Params) -> MiResult {
    let n = super::persist::request_profiles_reload(std::time::Duration::from_secs(10))
        .map_err(|why| MiError::new(503, why))?
        .ok_or_else(|| {
            MiError::new(
                404,
                "the database has no rsec_profiles table (see include/rsec-mysql.sql)",
            )
        })?;
    Ok(mi::object(|o| {
        o.num("profiles", n as f64);
    }))
}

fn tenant_list(_: Params) -> MiResult {
    let e = ready()?;
    let tenants = table(e.tenants())?;
    let bans = table(e.tenant_bans(now_us()))?;
    use std::sync::atomic::Ordering::Relaxed;
    Ok(mi::object(|o| {
        o.num("count", tenants.len() as f64)
            .num("max_tenants", e.config().max_tenants as f64)
            .num("overflow", e.tenants_overflow() as f64);
        let arr = o.array("tenants");
        for (label, id) in &tenants {
            let obj = arr.object();
            obj.str("tenant", label);
            if let Some(c) = e.tenant_counters(*id) {
                obj.num("checked", c.checked.load(Relaxed) as f64)
                    .num("blocked", c.blocked.load(Relaxed) as f64)
                    .num("bans", c.bans.load(Relaxed) as f64)
                    .num("dry_run_bans", c.dry_run_bans.load(Relaxed) as f64)
                    .num("dry_run_blocked", c.dry_run_blocked.load(Relaxed) as f64)
                    .num("auth_failures", c.auth_failures.load(Relaxed) as f64);
            }
            let b = obj.array("bans");
            for (_, rec) in bans.iter().filter(|(t, _)| t == id) {
                ban_obj(e, &b.object(), rec, now_us());
            }
        }
    }))
}
