//! The `exports` symbol OpenSIPS looks up with dlsym. Every table in it is
//! generated from the one declaration of each export: script functions
//! (functions.rs), modparams (params.rs and engine/config.rs), statistics
//! (stats.rs), MI commands (mi.rs) and the persistence process.

use std::os::raw::c_int;
use std::ptr::null;

use crate::ffi::guard::guard;
use crate::ffi::sys::*;
use crate::ffi::version;

use super::lifecycle;

// The one symbol name OpenSIPS looks up; nothing else may export it.
#[allow(unsafe_code)]
#[no_mangle]
pub static exports: ModuleExports = ModuleExports {
    name: c"rsec".as_ptr(),
    type_: MOD_TYPE_DEFAULT,
    ver_info: VerInfo {
        version: version::VERSION.as_ptr().cast(),
        compile_flags: version::COMPILE_FLAGS.as_ptr().cast(),
        scm: ScmVersion {
            type_: version::SCM_TYPE.as_ptr().cast(),
            rev: version::SCM_REV.as_ptr().cast(),
        },
    },
    dlflags: 0,
    load_f: None,
    deps: null(),
    cmds: super::functions::CMDS.as_ptr(),
    acmds: null(),
    params: super::params::PARAMS.as_ptr(),
    stats: super::stats::STATS.as_ptr(),
    mi_cmds: super::mi::MI_CMDS.as_ptr().cast(),
    items: null(),
    trans: null(),
    procs: super::persist::PROCS.as_ptr().cast(),
    preinit_f: None,
    init_f: Some(mod_init),
    response_f: None,
    destroy_f: Some(mod_destroy),
    init_child_f: Some(child_init),
    reload_ack_f: None,
};

extern "C" fn mod_init() -> c_int {
    crate::ffi::log::attach_to_opensips();
    guard("mod_init", || -1, lifecycle::mod_init)
}

extern "C" fn child_init(_rank: c_int) -> c_int {
    guard("child_init", || -1, lifecycle::child_init)
}

extern "C" fn mod_destroy() {
    guard("mod_destroy", || (), lifecycle::mod_destroy)
}
