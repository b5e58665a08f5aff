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
}
