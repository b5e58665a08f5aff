//! The `exports` symbol OpenSIPS looks up with dlsym, and the C entry points
//! it lists. Every entry point runs inside the panic guard.

use std::os::raw::{c_int, c_void};
use std::ptr::null;

use crate::engine::IpKey;
use crate::ffi::guard::guard;
use crate::ffi::sys::*;
use crate::ffi::{int_arg, msg_source_ip, str_arg, version};

use super::functions::{self, Target, RC_ERROR};
use super::lifecycle;
use super::params::{self, INT_PARAMS, OTHER_INT_PARAMS};

const fn param(flags: c_int) -> CmdParam {
    CmdParam { flags, fixup: None, free_fixup: None }
}

/// Terminator of a parameter list (flags 0).
const END: CmdParam = param(0);
const STR: CmdParam = param(CMD_PARAM_STR);
const STR_OPT: CmdParam = param(CMD_PARAM_STR | CMD_PARAM_OPT);
const INT: CmdParam = param(CMD_PARAM_INT);
const INT_OPT: CmdParam = param(CMD_PARAM_INT | CMD_PARAM_OPT);

const fn params(list: &[CmdParam]) -> [CmdParam; MAX_CMD_PARAMS + 1] {
    let mut out = [END; MAX_CMD_PARAMS + 1];
    let mut i = 0;
    while i < list.len() {
        out[i] = list[i];
        i += 1;
    }
    out
}

/// Routes where a function reads only its arguments (or the message source).
const ANY_ROUTE: c_int = REQUEST_ROUTE
    | FAILURE_ROUTE
    | ONREPLY_ROUTE
    | BRANCH_ROUTE
    | ERROR_ROUTE
    | LOCAL_ROUTE
    | STARTUP_ROUTE
    | TIMER_ROUTE
    | EVENT_ROUTE;
/// Routes that carry a received message whose source can stand in for `ip`.
const MSG_ROUTES: c_int = REQUEST_ROUTE | FAILURE_ROUTE | ONREPLY_ROUTE | BRANCH_ROUTE | ERROR_ROUTE | LOCAL_ROUTE;

const fn cmd(name: &'static std::ffi::CStr, f: CmdFunction, p: &[CmdParam], flags: c_int) -> CmdExport {
    CmdExport { name: name.as_ptr(), function: Some(f), params: params(p), flags }
}

static CMDS: [CmdExport; 7] = [
    cmd(c"sec_pike_check", w_sec_pike_check, &[STR_OPT], MSG_ROUTES),
    cmd(c"sec_rl_check", w_sec_rl_check, &[STR, INT, INT_OPT], ANY_ROUTE),
    cmd(c"sec_ban_ip", w_sec_ban_ip, &[STR, INT_OPT, STR_OPT], ANY_ROUTE),
    cmd(c"sec_unban_ip", w_sec_unban_ip, &[STR], ANY_ROUTE),
    cmd(c"sec_is_banned", w_sec_is_banned, &[STR_OPT], MSG_ROUTES),
    cmd(c"sec_auth_fail", w_sec_auth_fail, &[STR_OPT, STR_OPT], MSG_ROUTES),
    CmdExport { name: null(), function: None, params: [END; MAX_CMD_PARAMS + 1], flags: 0 },
];

const STR_PARAMS: [(&std::ffi::CStr, &params::Param<*const std::os::raw::c_char>); 3] =
    [(c"whitelist", &params::WHITELIST), (c"db_url", &params::DB_URL), (c"node_id", &params::NODE_ID)];
const N_PARAMS: usize = INT_PARAMS.len() + OTHER_INT_PARAMS.len() + STR_PARAMS.len() + 1;

/// Every modparam, built from the declarations in `params`, then the terminator.
static PARAMS: [ParamExport; N_PARAMS] = {
    const NONE: ParamExport = ParamExport { name: null(), type_: 0, param_pointer: std::ptr::null_mut() };
    let mut out = [NONE; N_PARAMS];
    let mut i = 0;
    while i < INT_PARAMS.len() {
        out[i] = ParamExport { name: INT_PARAMS[i].0.as_ptr(), type_: INT_PARAM, param_pointer: INT_PARAMS[i].1.ptr() };
        i += 1;
    }
    let mut k = 0;
    while k < OTHER_INT_PARAMS.len() {
        out[i] = ParamExport { name: OTHER_INT_PARAMS[k].0.as_ptr(), type_: INT_PARAM, param_pointer: OTHER_INT_PARAMS[k].1.ptr() };
        i += 1;
        k += 1;
    }
    let mut j = 0;
    while j < STR_PARAMS.len() {
        out[i + j] = ParamExport { name: STR_PARAMS[j].0.as_ptr(), type_: STR_PARAM, param_pointer: STR_PARAMS[j].1.ptr() };
        j += 1;
    }
    out
};

#[no_mangle]
pub static exports: ModuleExports = ModuleExports {
    name: c"rsec".as_ptr(),
    type_: MOD_TYPE_DEFAULT,
    ver_info: VerInfo {
        version: version::VERSION.as_ptr().cast(),
        compile_flags: version::COMPILE_FLAGS.as_ptr().cast(),
        scm: ScmVersion { type_: version::SCM_TYPE.as_ptr().cast(), rev: version::SCM_REV.as_ptr().cast() },
    },
    dlflags: 0,
    load_f: None,
    deps: null(),
    cmds: CMDS.as_ptr(),
    acmds: null(),
    params: PARAMS.as_ptr(),
    stats: super::stats::STATS.as_ptr(),
    mi_cmds: super::mi::MI_CMDS.as_ptr().cast(),
    items: null(),
    trans: null(),
    procs: super::persist::PROCS.as_ptr().cast(),
    preinit_f: None,
    init_f: Some(mod_init),
    response_f: None,
    destroy_f: Some(mod_destroy),
    init_child_f: None,
    reload_ack_f: None,
};

unsafe extern "C" fn mod_init() -> c_int {
    crate::ffi::log::attach_to_opensips();
    guard("mod_init", -1, lifecycle::mod_init)
}

unsafe extern "C" fn mod_destroy() {
    guard("mod_destroy", (), lifecycle::mod_destroy)
}

/// `ip` argument, or the message's source address when it was omitted.
///
/// # Safety
/// `msg` and `p` are what OpenSIPS passed to a script function.
unsafe fn target<'a>(msg: *mut SipMsg, p: *mut c_void) -> Target<'a> {
    match str_arg(p) {
        Some(b) => Target::Arg(b),
        None => Target::MsgSource(msg_source_ip(msg).and_then(|(b, n)| IpKey::from_bytes(&b[..n]))),
    }
}

type P = *mut c_void;

unsafe extern "C" fn w_sec_pike_check(msg: *mut SipMsg, ip: P, _: P, _: P, _: P, _: P, _: P, _: P, _: P) -> c_int {
    guard("sec_pike_check", RC_ERROR, || functions::sec_pike_check(target(msg, ip)))
}

unsafe extern "C" fn w_sec_rl_check(_: *mut SipMsg, key: P, limit: P, period: P, _: P, _: P, _: P, _: P, _: P) -> c_int {
    guard("sec_rl_check", RC_ERROR, || {
        functions::sec_rl_check(str_arg(key).unwrap_or_default(), int_arg(limit), int_arg(period))
    })
}

unsafe extern "C" fn w_sec_ban_ip(_: *mut SipMsg, ip: P, secs: P, reason: P, _: P, _: P, _: P, _: P, _: P) -> c_int {
    guard("sec_ban_ip", RC_ERROR, || functions::sec_ban_ip(str_arg(ip).unwrap_or_default(), int_arg(secs), str_arg(reason)))
}

unsafe extern "C" fn w_sec_unban_ip(_: *mut SipMsg, ip: P, _: P, _: P, _: P, _: P, _: P, _: P, _: P) -> c_int {
    guard("sec_unban_ip", RC_ERROR, || functions::sec_unban_ip(str_arg(ip).unwrap_or_default()))
}

unsafe extern "C" fn w_sec_is_banned(msg: *mut SipMsg, ip: P, _: P, _: P, _: P, _: P, _: P, _: P, _: P) -> c_int {
    guard("sec_is_banned", RC_ERROR, || functions::sec_is_banned(target(msg, ip)))
}

unsafe extern "C" fn w_sec_auth_fail(msg: *mut SipMsg, ip: P, user: P, _: P, _: P, _: P, _: P, _: P, _: P) -> c_int {
    guard("sec_auth_fail", RC_ERROR, || functions::sec_auth_fail(target(msg, ip), str_arg(user)))
}
