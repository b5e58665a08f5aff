//! The version strings OpenSIPS compares before loading a module
//! (`exports.ver_info`). build.rs learns them from the target's
//! `opensips -V`, or falls back to the documented 3.6.3 default profile.

include!(concat!(env!("OUT_DIR"), "/opensips_version.rs"));
