//! rsec's integration tests, one test binary: `cargo test --release --test it`.
//!
//! One module per suite (test names carry it: `engine_ip::...`,
//! `opensips_persistence::...`), all sharing [`support`]. The engine,
//! multi-process, dlopen and replay (the rsec-replay tool) suites run on
//! any machine; the `opensips_*` ones (and the MariaDB-backed ones) need
//! OpenSIPS, sipp, MariaDB or opensips-cli and skip without them, or fail with
//! `RSEC_REQUIRE_OPENSIPS=1` ([`support::skip`]).

mod support;

mod build_guard;
mod db_store;
mod dlopen;
mod engine_capacity;
mod engine_ip;
mod engine_operability;
mod engine_policy;
mod engine_profiles;
mod engine_rules;
mod engine_scanner;
mod engine_whitelist;
mod engine_window;
mod ffi_message;
mod multiprocess;
mod opensips_cli;
mod opensips_examples;
mod opensips_flood_sender;
mod opensips_hostile;
mod opensips_integration;
mod opensips_operability;
mod opensips_operators;
mod opensips_persistence;
mod opensips_threats;
mod opensips_versions;
mod replay;
