//! MI commands: the ban list, per-source inspection, rate-limit keys, top
//! talkers and the runtime whitelist. They run in the MI process (mi_fifo,
//! mi_http…) and take one stripe lock at a time, so workers keep going.

use std::os::raw::c_void;

use crate::engine::{BanOutcome, BanRecord, Cidr, IpKey, Reason, RlKey};
use crate::ffi::guard::guard;
use crate::ffi::mi::{self, Obj, Params, Reply};
use crate::ffi::sys::{MiExport, MiItem, MiParams, MiRecipe, MAX_MI_PARAMS, MAX_MI_RECIPES};

use super::events::{self, UnbanReason};
use super::{engine, now_us};

const US: f64 = 1_000_000.0;

macro_rules! engine_or_500 {
    () => {
        match engine() {
            Some(e) => e,
            None => return mi::error(500, "rsec is not initialised"),
        }
    };
}

macro_rules! table {
    ($r:expr) => {
        match $r {
            Ok(v) => v,
            Err(e) => return mi::error(500, &format!("shared table error: {e}")),
        }
    };
}

fn bad(what: &str, value: &str, why: &str) -> Reply {
    mi::error(400, &format!("bad {what} '{value}': {why}"))
}

fn ban_obj(o: &Obj, r: &BanRecord, now: u64) {
    o.str("ip", &r.target.to_string())
        .str("reason", r.ban.reason.as_str())
        .num("created", (r.ban.created_us / 1_000_000) as f64)
        .num("expires", (r.ban.expires_us / 1_000_000) as f64)
        .num(
            "seconds_left",
            if r.ban.is_permanent() { -1.0 } else { (r.ban.expires_us.saturating_sub(now) as f64 / US).ceil() },
        )
        .num("hits", r.ban.hits as f64);
}

fn ban_list(p: Params) -> Reply {
    let e = engine_or_500!();
    let now = now_us();
    let filter = match p.str(c"ip") {
        None => None,
        Some(s) => match Cidr::parse(&s) {
            Ok(c) => Some(c),
            Err(err) => return bad("ip", &s, &err.to_string()),
        },
    };
    let mut bans = table!(e.list_bans(now));
    if let Some(f) = filter {
        // An address shows the bans covering it; a prefix, the bans inside it.
        bans.retain(|b| b.target.contains(&f.addr) || f.contains(&b.target.addr) && f.prefix <= b.target.prefix);
    }
    bans.sort_by_key(|b| (b.ban.created_us, b.target));
    mi::object(|o| {
        o.num("count", bans.len() as f64);
        let arr = o.array("bans");
        for b in &bans {
            ban_obj(&arr.object(), b, now);
        }
    })
}

fn ban(p: Params) -> Reply {
    let e = engine_or_500!();
    let Some(ip) = p.str(c"ip") else { return mi::error(400, "missing ip") };
    let target = match Cidr::parse(&ip) {
        Ok(c) => c,
        Err(err) => return bad("ip", &ip, &err.to_string()),
    };
    let seconds = match p.int(c"seconds") {
        Err(s) => return bad("seconds", &s, "not a number"),
        Ok(None) => e.config().ban_time_s,
        Ok(Some(s)) if s >= 0 => s as u32,
        Ok(Some(s)) => return bad("seconds", &s.to_string(), "must be >= 0 (0 = until unbanned)"),
    };
    let reason = match p.str(c"reason") {
        None => Reason::Manual,
        Some(r) => match Reason::parse(&r) {
            Some(r) => r,
            None => return bad("reason", &r, "use manual, pike, auth or rl"),
        },
    };
    let now = now_us();
    let out = table!(e.ban(target, seconds, reason, now));
    events::flush_lapsed(e);
    match out {
        BanOutcome::Created | BanOutcome::Updated => {
            if let Ok(Some(rec)) = e.lookup_ban(&target.addr, now) {
                events::ban(&rec, "mi");
            }
            crate::rsec_log!(Notice, "mi", "banned {} for {}s ({}) from MI", target, seconds, reason.as_str());
            mi::ok("OK")
        }
        BanOutcome::AlreadyBanned(r) => mi::ok(&format!("already banned ({})", r.as_str())),
        BanOutcome::Whitelisted => mi::error(403, &format!("{target} is whitelisted and cannot be banned")),
        BanOutcome::TableFull => mi::error(500, "ban table full (raise max_bans)"),
    }
}

fn unban(p: Params) -> Reply {
    let e = engine_or_500!();
    let Some(ip) = p.str(c"ip") else { return mi::error(400, "missing ip") };
    let target = match Cidr::parse(&ip) {
        Ok(c) => c,
        Err(err) => return bad("ip", &ip, &err.to_string()),
    };
    let r = table!(e.unban(&target, now_us()));
    events::flush_lapsed(e);
    match r {
        Some(ban) => {
            events::unban(&BanRecord { target, ban }, UnbanReason::Manual);
            crate::rsec_log!(Notice, "mi", "unbanned {} from MI", target);
            mi::ok("OK")
        }
        None => mi::error(404, &format!("{target} is not banned")),
    }
}

fn ban_flush(_: Params) -> Reply {
    let e = engine_or_500!();
    let removed = table!(e.flush_bans(now_us()));
    events::flush_lapsed(e);
    for r in &removed {
        events::unban(r, UnbanReason::Flushed);
    }
    crate::rsec_log!(Notice, "mi", "flushed {} bans from MI", removed.len());
    mi::object(|o| {
        o.num("removed", removed.len() as f64);
    })
}

fn ip_info(p: Params) -> Reply {
    let e = engine_or_500!();
    let Some(ip) = p.str(c"ip") else { return mi::error(400, "missing ip") };
    let addr = match IpKey::parse(&ip) {
        Ok(a) => a,
        Err(err) => return bad("ip", &ip, &err.to_string()),
    };
    let now = now_us();
    let info = table!(e.source_info(&addr, now));
    let c = e.config();
    mi::object(|o| {
        o.str("ip", &addr.to_string()).bool("whitelisted", info.whitelisted).bool("banned", info.ban.is_some());
        o.object("pike")
            .num("requests", info.pike_requests as f64)
            .num("density", c.pike_density as f64)
            .num("sampling_time", c.pike_sampling_time_s as f64);
        o.object("auth")
            .num("failures", info.auth_failures as f64)
            .num("threshold", c.auth_fail_threshold as f64)
            .num("window", c.auth_fail_window_s as f64);
        if let Some(t) = info.last_seen_us {
            o.num("last_seen", (t / 1_000_000) as f64);
        }
        if let Some(b) = &info.ban {
            ban_obj(&o.object("ban"), b, now);
        }
    })
}

fn rl_list(p: Params) -> Reply {
    let e = engine_or_500!();
    let key = match p.str(c"key") {
        None => None,
        Some(k) => match RlKey::new(k.as_bytes()) {
            Ok(k) => Some(k),
            Err(err) => return bad("key", &k, &err.to_string()),
        },
    };
    let mut keys = table!(e.rl_list(key.as_ref(), now_us()));
    keys.sort_by(|a, b| a.key.cmp(&b.key));
    mi::object(|o| {
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
    })
}

fn top(p: Params) -> Reply {
    let e = engine_or_500!();
    let n = match p.int(c"n") {
        Err(s) => return bad("n", &s, "not a number"),
        Ok(None) => 10,
        Ok(Some(n)) if (1..=10_000).contains(&n) => n as usize,
        Ok(Some(n)) => return bad("n", &n.to_string(), "must be between 1 and 10000"),
    };
    let top = table!(e.top_sources(n, now_us()));
    let window = e.config().pike_sampling_time_s as f64;
    mi::object(|o| {
        o.num("window", window);
        let arr = o.array("sources");
        for (ip, c) in &top {
            arr.object().str("ip", &ip.to_string()).num("requests", *c as f64).num("rate", *c as f64 / window);
        }
    })
}

fn whitelist_list(_: Params) -> Reply {
    let e = engine_or_500!();
    let list = e.whitelist().list();
    mi::object(|o| {
        let arr = o.array("whitelist");
        for c in &list {
            arr.str(&c.to_string());
        }
    })
}

fn whitelist_change(p: Params, add: bool) -> Reply {
    let e = engine_or_500!();
    let Some(s) = p.str(c"cidr") else { return mi::error(400, "missing cidr") };
    let c = match Cidr::parse(&s) {
        Ok(c) => c,
        Err(err) => return bad("cidr", &s, &err.to_string()),
    };
    let r = if add { e.whitelist().add(c) } else { e.whitelist().remove(&c) };
    match r {
        Ok(true) => {
            crate::rsec_log!(Notice, "mi", "whitelist {} {}", if add { "added" } else { "removed" }, c);
            mi::ok("OK")
        }
        Ok(false) if add => mi::ok("already whitelisted"),
        Ok(false) => mi::error(404, &format!("{c} is not in the whitelist")),
        Err(crate::engine::whitelist::WhitelistError::Full) => mi::error(500, "whitelist full (512 entries)"),
        Err(err) => mi::error(500, &format!("whitelist error: {err:?}")),
    }
}

fn db_sync(_: Params) -> Reply {
    match super::persist::request_sync(std::time::Duration::from_secs(10)) {
        Ok(cursor) => mi::object(|o| {
            o.bool("synced", true).num("cursor", cursor as f64);
            if let Some(s) = super::persist::shared() {
                o.num("last_sync", s.last_sync_s.load(std::sync::atomic::Ordering::Relaxed) as f64);
            }
        }),
        Err(why) => mi::error(503, why),
    }
}

fn whitelist_reload(_: Params) -> Reply {
    match super::persist::request_whitelist_reload(std::time::Duration::from_secs(10)) {
        Ok(n) => mi::object(|o| {
            o.num("entries", n as f64);
        }),
        Err(why) => mi::error(503, why),
    }
}

// ---- export table ----

type Handler = fn(Params) -> Reply;

fn run(name: &'static str, params: *const MiParams, h: Handler) -> *mut MiItem {
    guard(name, mi::error(500, "internal error").0, || h(Params(params)).0)
}

macro_rules! mi_fns {
    ($($w:ident => $name:literal, $h:expr;)*) => {
        $(unsafe extern "C" fn $w(p: *const MiParams, _async: *mut c_void) -> *mut MiItem { run($name, p, $h) })*
    };
}

mi_fns! {
    w_ban_list => "sec_ban_list", ban_list;
    w_ban => "sec_ban", ban;
    w_unban => "sec_unban", unban;
    w_ban_flush => "sec_ban_flush", ban_flush;
    w_ip_info => "sec_ip_info", ip_info;
    w_rl_list => "sec_rl_list", rl_list;
    w_top => "sec_top", top;
    w_wl_list => "sec_whitelist_list", whitelist_list;
    w_wl_add => "sec_whitelist_add", |p| whitelist_change(p, true);
    w_wl_del => "sec_whitelist_del", |p| whitelist_change(p, false);
    w_db_sync => "sec_db_sync", db_sync;
    w_wl_reload => "sec_whitelist_reload", whitelist_reload;
}

const NO_RECIPE: MiRecipe = MiRecipe { cmd: None, params: [std::ptr::null(); MAX_MI_PARAMS] };

const fn recipe(f: crate::ffi::sys::MiCmdFunction, names: &[&'static std::ffi::CStr]) -> MiRecipe {
    let mut params = [std::ptr::null(); MAX_MI_PARAMS];
    let mut i = 0;
    while i < names.len() {
        params[i] = names[i].as_ptr();
        i += 1;
    }
    MiRecipe { cmd: Some(f), params }
}

const fn export(name: &'static std::ffi::CStr, help: &'static std::ffi::CStr, rs: &[MiRecipe]) -> MiExport {
    let mut recipes = [NO_RECIPE; MAX_MI_RECIPES];
    let mut i = 0;
    while i < rs.len() {
        recipes[i] = rs[i];
        i += 1;
    }
    MiExport { name: name.as_ptr(), help: help.as_ptr(), flags: 0, init_f: None, recipes }
}

pub static MI_CMDS: [MiExport; 13] = [
    export(c"sec_ban_list", c"list active bans, optionally those covering an ip", &[recipe(w_ban_list, &[]), recipe(w_ban_list, &[c"ip"])]),
    export(
        c"sec_ban",
        c"ban an ip or prefix: ip [seconds] [reason]",
        &[recipe(w_ban, &[c"ip"]), recipe(w_ban, &[c"ip", c"seconds"]), recipe(w_ban, &[c"ip", c"seconds", c"reason"])],
    ),
    export(c"sec_unban", c"lift the ban on an ip or prefix", &[recipe(w_unban, &[c"ip"])]),
    export(c"sec_ban_flush", c"lift every ban; returns how many", &[recipe(w_ban_flush, &[])]),
    export(c"sec_ip_info", c"everything rsec knows of one source", &[recipe(w_ip_info, &[c"ip"])]),
    export(c"sec_rl_list", c"rate-limit keys and their use", &[recipe(w_rl_list, &[]), recipe(w_rl_list, &[c"key"])]),
    export(c"sec_top", c"the n sources with the highest request rate", &[recipe(w_top, &[]), recipe(w_top, &[c"n"])]),
    export(c"sec_whitelist_list", c"list whitelisted prefixes", &[recipe(w_wl_list, &[])]),
    export(c"sec_whitelist_add", c"whitelist a prefix in every process", &[recipe(w_wl_add, &[c"cidr"])]),
    export(c"sec_whitelist_del", c"remove a prefix from the whitelist", &[recipe(w_wl_del, &[c"cidr"])]),
    export(c"sec_db_sync", c"import other nodes' bans from the database now", &[recipe(w_db_sync, &[])]),
    export(c"sec_whitelist_reload", c"reload rsec_whitelist from the database", &[recipe(w_wl_reload, &[])]),
    MiExport { name: std::ptr::null(), help: std::ptr::null(), flags: 0, init_f: None, recipes: [NO_RECIPE; MAX_MI_RECIPES] },
];
