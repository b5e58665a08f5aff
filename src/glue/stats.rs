//! The module's statistics, shown by `get_statistics rsec:` and scraped by
//! the prometheus module. Each is a function statistic reading rsec's own
//! shared counters: no table lock, no copy kept in OpenSIPS.

use std::os::raw::{c_ulong, c_void};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::engine::stats::Counter;
use crate::engine::{Engine, Reason, Stats};
use crate::ffi::sys::{StatExport, StatVar, STAT_IS_FUNC, STAT_NO_RESET};

use super::engine;

fn read(f: impl FnOnce(&Engine) -> u64) -> c_ulong {
    engine().map_or(0, f) as c_ulong
}

/// A persistence counter; 0 without db_url.
fn persisted(f: impl FnOnce(&'static super::persist::Shared) -> &'static AtomicU64) -> u64 {
    super::persist::shared().map_or(0, |s| f(s).load(Ordering::Relaxed))
}

/// A figure of the decision queue; 0 without db_url.
fn queue(e: &Engine, f: impl FnOnce(&crate::engine::queue::ChangeQueue) -> u64) -> u64 {
    e.queue().map_or(0, f)
}

fn sum(cs: [&Counter; 3]) -> u64 {
    cs.iter().map(|c| c.get()).sum()
}

macro_rules! stats {
    ($($name:literal => $f:ident = |$e:ident| $body:expr;)*) => {
        $(
            extern "C" fn $f(_ctx: *mut c_void) -> c_ulong {
                crate::ffi::guard::guard(concat!("statistic ", $name), || 0, || read(|$e: &Engine| $body))
            }
        )*
        pub static STATS: [StatExport; [$($name),*].len() + 1] = [
            $(StatExport {
                name: concat!($name, "\0").as_ptr().cast(),
                flags: STAT_IS_FUNC | STAT_NO_RESET,
                // For STAT_IS_FUNC the core stores this pointer as the function.
                stat_pointer: $f as *mut *mut StatVar,
            },)*
            StatExport { name: std::ptr::null(), flags: 0, stat_pointer: std::ptr::null_mut() },
        ];
    };
}

stats! {
    "requests_checked" => st_requests_checked = |e| Stats::get(&e.stats().pike_checked);
    "pike_blocked" => st_pike_blocked = |e| Stats::get(&e.stats().pike_blocked);
    "rl_checked" => st_rl_checked = |e| Stats::get(&e.stats().rl_checked);
    "rl_rejected" => st_rl_rejected = |e| Stats::get(&e.stats().rl_rejected);
    "auth_failures" => st_auth_failures = |e| Stats::get(&e.stats().auth_failures);
    "bans_created" => st_bans_created = |e| e.stats().bans_created_total();
    "bans_pike" => st_bans_pike = |e| e.stats().bans_created_for(Reason::Pike);
    "bans_auth" => st_bans_auth = |e| e.stats().bans_created_for(Reason::Auth);
    "bans_manual" => st_bans_manual = |e| e.stats().bans_created_for(Reason::Manual);
    "bans_rl" => st_bans_rl = |e| e.stats().bans_created_for(Reason::RateLimit);
    "bans_subnet" => st_bans_subnet = |e| e.stats().bans_created_for(Reason::Subnet);
    "bans_method" => st_bans_method = |e| e.stats().bans_created_for(Reason::Method);
    "bans_enum" => st_bans_enum = |e| e.stats().bans_created_for(Reason::Enum);
    "bans_scanner" => st_bans_scanner = |e| e.stats().bans_created_for(Reason::Scanner);
    "bans_report" => st_bans_report = |e| e.stats().bans_created_for(Reason::Report);
    "bans_repeat" => st_bans_repeat = |e| Stats::get(&e.stats().bans_repeat);
    "users_blocked" => st_users_blocked = |e| Stats::get(&e.stats().users_blocked);
    "reports" => st_reports = |e| Stats::get(&e.stats().reports);
    "scanner_checks" => st_scanner_checks = |e| Stats::get(&e.stats().scanner_checks);
    "bans_active" => st_bans_active = |e| e.bans_active();
    "bans_expired" => st_bans_expired = |e| Stats::get(&e.stats().bans_expired);
    "bans_removed" => st_bans_removed = |e| Stats::get(&e.stats().bans_removed);
    "dropped_while_banned" => st_dropped_while_banned = |e| Stats::get(&e.stats().dropped_while_banned);
    "table_evictions" => st_table_evictions = |e| sum([&e.source_counters().evictions, &e.ban_counters().evictions, &e.rl_counters().evictions]);
    "table_full" => st_table_full = |e| sum([&e.source_counters().full, &e.ban_counters().full, &e.rl_counters().full]);
    "lock_recoveries" => st_lock_recoveries = |e| sum([&e.source_counters().lock_recoveries, &e.ban_counters().lock_recoveries, &e.rl_counters().lock_recoveries]);
    "db_writes" => st_db_writes = |_e| persisted(|s| &s.writes);
    "db_errors" => st_db_errors = |_e| persisted(|s| &s.errors);
    "db_queue_depth" => st_db_queue_depth = |e| queue(e, |q| q.depth());
    "db_queue_drops" => st_db_queue_drops = |e| queue(e, |q| q.dropped());
    "db_last_sync" => st_db_last_sync = |_e| persisted(|s| &s.last_sync_s);
    "dry_run_bans" => st_dry_run_bans = |e| Stats::get(&e.stats().dry_run_bans);
    "dry_run_blocked" => st_dry_run_blocked = |e| Stats::get(&e.stats().dry_run_blocked);
    "bans_tenant_scoped" => st_bans_tenant_scoped = |e| Stats::get(&e.stats().tenant_bans);
    "tenants_overflow" => st_tenants_overflow = |e| e.tenants_overflow();
    "decisions" => st_decisions = |e| e.decisions_recorded().0;
}

/// The group of the per-tenant statistics: `<figure>-<tenant>`, e.g.
/// `checked-example.com` (the prometheus module's `labels` rule in
/// opensips-cfg-examples/rsec-prometheus.cfg turns the tenant into a label).
pub const TENANT_GROUP: &std::ffi::CStr = c"rsec_tenant";

macro_rules! tenant_stats {
    ($($name:literal => $f:ident = |$c:ident| $body:expr;)*) => {
        $(
            extern "C" fn $f(ctx: *mut c_void) -> c_ulong {
                crate::ffi::guard::guard(concat!("statistic ", $name), || 0, || {
                    read(|e: &Engine| {
                        e.tenant_counters(ctx as usize as u32)
                            .map_or(0, |$c| $body.load(Ordering::Relaxed))
                    })
                })
            }
        )*
        /// Each tenant's figures: name and function.
        const TENANT_STATS: &[(&str, crate::ffi::stats::StatFn)] = &[$(($name, $f)),*];
    };
}

tenant_stats! {
    "checked" => ts_checked = |c| c.checked;
    "blocked" => ts_blocked = |c| c.blocked;
    "bans" => ts_bans = |c| c.bans;
    "dry_run_bans" => ts_dry_run_bans = |c| c.dry_run_bans;
    "dry_run_blocked" => ts_dry_run_blocked = |c| c.dry_run_blocked;
    "auth_failures" => ts_auth_failures = |c| c.auth_failures;
}

extern "C" fn tenants_known(_ctx: *mut c_void) -> c_ulong {
    crate::ffi::guard::guard(
        "statistic known",
        || 0,
        || read(|e| e.tenants().map_or(0, |t| t.len() as u64)),
    )
}

/// Creates the tenants' group before the fork, with its one fixed
/// statistic, `known` (tenants numbered so far): the core adds a group by
/// growing a shared array, which must not happen while other processes
/// read it.
pub fn register_tenant_group() -> bool {
    crate::ffi::stats::register_function(TENANT_GROUP, "known", tenants_known, 0)
}

/// Registers the statistics of tenants numbered since the last call; from
/// the sweep timer. Each tenant is claimed in shared memory first, so a
/// second timer process never registers it again.
pub fn register_new_tenants(e: &Engine) {
    let Ok(tenants) = e.tenants() else { return };
    for (label, id) in &tenants {
        if !e.claim_tenant_stats(*id) {
            continue;
        }
        for (figure, f) in TENANT_STATS {
            if !crate::ffi::stats::register_function(
                TENANT_GROUP,
                &format!("{figure}-{label}"),
                *f,
                *id as usize,
            ) {
                crate::rsec_log_throttled!(
                    Err,
                    "statistics",
                    "cannot register statistic {}-{}",
                    figure,
                    crate::ffi::log::shown(label.as_bytes())
                );
            }
        }
    }
}
