//! mod_init, the sweep timer and shutdown.

use std::os::raw::{c_int, c_uint, c_void};

use crate::engine::Engine;
use crate::ffi::guard::{guard, install_panic_hook};
use crate::rsec_log;

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
    rsec_log!(
        Info,
        "mod_init",
        "shared tables ready: {} sources, {} bans, {} rl keys in {} stripes, {} whitelist entries, {} KiB mapped; built for '{}' (from {})",
        c.max_tracked_ips,
        c.max_bans,
        c.max_rl_keys,
        c.lock_stripes,
        c.whitelist.len(),
        engine.shm_bytes() / 1024,
        String::from_utf8_lossy(&crate::ffi::version::VERSION[..crate::ffi::version::VERSION.len() - 1]),
        crate::ffi::version::PROFILE_SOURCE
    );
    if ENGINE.set(engine).is_err() {
        rsec_log!(Err, "mod_init", "called twice");
        return -1;
    }
    if let (Some(settings), Some(e)) = (db, super::engine()) {
        let (url, node, every) = (settings.url.redacted(), settings.node_id.clone(), settings.sync_interval_s);
        if let Err(err) = super::persist::init(e, settings) {
            rsec_log!(Err, "mod_init", "{}", err);
            return -1;
        }
        rsec_log!(Info, "mod_init", "persisting bans to {} as node '{}', syncing every {}s", url, node, every);
    }
    if !super::events::publish() {
        rsec_log!(Err, "mod_init", "cannot publish the E_SEC_BAN/E_SEC_UNBAN events");
        return -1;
    }
    if !crate::ffi::register_timer(b"rsec-sweep\0", sweep_timer, 1) {
        rsec_log!(Err, "mod_init", "cannot register the sweep timer");
        return -1;
    }
    0
}

pub fn mod_destroy() {
    // The mapping goes away with the processes; nothing to flush yet.
}

/// Reclaims lapsed entries every second from OpenSIPS's timer process.
unsafe extern "C" fn sweep_timer(_ticks: c_uint, _param: *mut c_void) {
    guard("sweep timer", (), || {
        let Some(e) = engine() else { return };
        match e.sweep(now_us()) {
            Ok(expired) => {
                for b in expired {
                    rsec_log!(Info, "sweep", "ban on {} ({}) expired after {} hits", b.target, b.ban.reason.as_str(), b.ban.hits);
                    super::events::unban(&b, super::events::UnbanReason::Expired);
                }
                super::events::flush_lapsed(e);
            }
            Err(err) => rsec_log!(Err, "sweep", "sweep failed: {}", err),
        }
    })
}
