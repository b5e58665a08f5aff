//! Glue between OpenSIPS and the engine: the export table, modparams,
//! script functions and the sweep timer.

mod events;
mod exports;
mod functions;
mod lifecycle;
mod mi;
mod params;
mod persist;
mod stats;

use once_cell::sync::OnceCell;

use crate::engine::Engine;

/// The engine, created in mod_init before OpenSIPS forks; every process
/// inherits this handle and with it the same shared mapping.
static ENGINE: OnceCell<Engine> = OnceCell::new();

fn engine() -> Option<&'static Engine> {
    ENGINE.get()
}

/// Wall-clock microseconds: bans carry absolute times that operators (and
/// other nodes) read, so every process must agree on one clock.
fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}
