//! mod_init, the sweep timer and shutdown.

use std::os::raw::{c_int, c_uint, c_void};

use crate::engine::{Config, Engine};
use crate::ffi::guard::{guard, install_panic_hook};
use crate::{rsec_log, rsec_log_throttled};

use super::{engine, now_us, params, ENGINE};

/// Runs in the main process before the fork: validates the modparams,
/// maps the shared tables and starts the sweep timer.
pub fn mod_init() -> c_int {
    install_panic_hook();
    let (cfg, db) = match params::config() {
        Ok(c) => c,
        Err(e) => {
            rsec_log!(Err, "mod_init", "{}", e);
            return -1;
        }
    };
    let engine = match Engine::new(cfg) {
        Ok(e) => e,
        Err(e) => {
            rsec_log!(Err, "mod_init", "{}", e);
            return -1;
        }
    };
    let c = engine.config();
    // What was really allocated: exactly the configured entries, in
    // buckets of 16 with a lock each. A host's ban lives in its source
    // entry and a prefix ban in its own table; max_bans bounds both.
    let [(_, sources, sb), (_, prefixes, pb), (_, rl, rb)] = engine.layout();
    let buckets = |n: usize| format!("{n} locked bucket{}", if n == 1 { "" } else { "s" });
    let tables = [
        format!(
            "{sources} host entries ({} sources + {} bans) in {}",
            c.max_tracked_ips,
            c.max_bans,
            buckets(sb)
        ),
        format!(
            "at most {} bans ({prefixes} prefix-ban slots in {})",
            c.max_bans,
            buckets(pb)
        ),
        format!("{rl} rl keys in {}", buckets(rb)),
    ];
    let rules: Vec<String> = engine
        .rule_tables()
        .iter()
        .map(|(name, n, b)| format!("{n} {name} ({b} bytes each)"))
        .collect();
    rsec_log!(
        Info,
        "mod_init",
        "rule tables ready: {}; {} scanner patterns ({} KiB compiled)",
        rules.join(", "),
        engine.scanner_patterns().len(),
        engine.scanner_bytes().div_ceil(1024)
    );
    if c.lock_stripes != Config::default().lock_stripes {
        rsec_log!(
            Notice,
            "mod_init",
            "lock_stripes ({}) is no longer used: every bucket of 16 entries has its own lock",
            c.lock_stripes
        );
    }
    rsec_log!(
        Info,
        "mod_init",
        "shared tables ready: {}, {} bytes per source, {} of {} whitelist entries, {} KiB mapped; built for '{}' (from {})",
        tables.join(", "),
        Engine::bytes_per_source(),
        // Held, not listed: a prefix listed twice in the modparam is one entry.
        engine.whitelist().len(),
        engine.whitelist().capacity(),
        engine.shm_bytes() / 1024,
        String::from_utf8_lossy(
            &crate::ffi::version::VERSION[..crate::ffi::version::VERSION.len() - 1]
        ),
        crate::ffi::version::PROFILE_SOURCE
    );
    if ENGINE.set(engine).is_err() {
        rsec_log!(Err, "mod_init", "called twice");
        return -1;
    }
    if let (Some(settings), Some(e)) = (db, super::engine()) {
        let (url, node, every) = (
            settings.url.redacted(),
            settings.node_id.clone(),
            e.config().db_sync_interval_s,
        );
        if let Err(err) = super::persist::init(e, settings) {
            rsec_log!(Err, "mod_init", "{}", err);
            return -1;
        }
        rsec_log!(
            Info,
            "mod_init",
            "persisting bans to {} as node '{}', syncing every {}s",
            url,
            node,
            every
        );
    }
    if !super::events::publish() {
        rsec_log!(
            Err,
            "mod_init",
            "cannot publish the E_SEC_BAN/E_SEC_UNBAN events"
        );
        return -1;
    }
    if !super::stats::register_tenant_group() {
        rsec_log!(
            Err,
            "mod_init",
            "cannot register the rsec_tenant statistics group"
        );
        return -1;
    }
    if !crate::ffi::register_timer(b"rsec-sweep\0", sweep_timer, 1) {
        rsec_log!(Err, "mod_init", "cannot register the sweep timer");
        return -1;
    }
    0
}

/// Each process writes its own shard of the shared counters (see
/// engine/stats.rs); consecutive pids of the forked workers spread them.
pub fn child_init() -> c_int {
    crate::engine::stats::set_process_shard(std::process::id() as usize);
    0
}

pub fn mod_destroy() {
    // Nothing to release: the mapping goes away with the last process, and
    // decisions not yet written are lost with the persistence process's
    // queue only if it is killed; on a clean stop it drains first.
}

/// Reclaims lapsed entries every second from OpenSIPS's timer process.
extern "C" fn sweep_timer(_ticks: c_uint, _param: *mut c_void) {
    guard(
        "sweep timer",
        || (),
        || {
            let Some(e) = engine() else { return };
            super::stats::register_new_tenants(e);
            match super::decisions::sweep(e, now_us()) {
                Ok(expired) => {
                    for b in expired {
                        rsec_log!(
                            Info,
                            "sweep",
                            "ban on {} ({}) expired after {} hits",
                            b.target,
                            b.ban.reason.as_str(),
                            b.ban.hits
                        );
                    }
                }
                Err(err) => rsec_log_throttled!(Err, "sweep", "sweep failed: {}", err),
            }
        },
    )
}
