//! OpenSIPS 3.6 ABI, declared by hand from the facts in its headers
//! (sr_module.h, cmds.h, statistics.h, dprint.h, timer.h, ip_addr.h,
//! parser/msg_parser.h, parser/parse_fline.h, parser/hf.h). Only what rsec uses is declared; structs rsec
//! only points at are opaque. `layout.rs` checks sizes and offsets, and
//! when OPENSIPS_SRC is set, build.rs compares them with the real headers.

#![allow(non_camel_case_types)]

use std::os::raw::{c_char, c_int, c_uint, c_ulong, c_ushort, c_void};

/// `str`: a length-delimited, not NUL-terminated string.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Str {
    pub s: *mut c_char,
    pub len: c_int,
}

/// Opaque: rsec reads `sip_msg` only through [`SipMsgHead`].
#[repr(C)]
pub struct SipMsg {
    _opaque: [u8; 0],
}

/// `struct ip_addr`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct IpAddr {
    pub af: c_uint,
    pub len: c_uint,
    /// Union of long/int/short/byte views; 8-byte aligned through `_align`.
    pub u: [u8; 16],
    _align: [c_ulong; 0],
}

/// Leading part of `struct receive_info` (the source address; on 4.0, also
/// the client address a PROXY-protocol header gave).
#[repr(C)]
pub struct ReceiveInfoHead {
    pub src_ip: IpAddr,
    pub dst_ip: IpAddr,
    pub src_port: c_ushort,
    pub dst_port: c_ushort,
    pub proto: c_int,
    #[cfg(opensips_abi = "4.0")]
    pub proto_reserved1: c_int,
    #[cfg(opensips_abi = "4.0")]
    pub proto_reserved2: c_int,
    /// `union sockaddr_union`: 28 bytes, 4-byte aligned.
    #[cfg(opensips_abi = "4.0")]
    pub src_su: [u32; 7],
    #[cfg(opensips_abi = "4.0")]
    pub bind_address: *const c_void,
    #[cfg(opensips_abi = "4.0")]
    pub real_ep: ProxyProtocol,
}

/// `struct proxy_protocol` (4.0): the endpoints a PROXY-protocol header
/// reported, valid when `flags` is [`PP_OK`].
#[cfg(opensips_abi = "4.0")]
#[repr(C)]
pub struct ProxyProtocol {
    pub flags: c_int,
    pub src_ip: IpAddr,
    pub dst_ip: IpAddr,
    pub src_port: c_ushort,
    pub dst_port: c_ushort,
}

/// `enum proxy_protocol_flags`: a header was parsed and its addresses are
/// real.
#[cfg(opensips_abi = "4.0")]
pub const PP_OK: c_int = 3;

/// `enum sip_protos`: the transports a PROXY-protocol header can come on.
pub const PROTO_UDP: c_int = 1;
pub const PROTO_TCP: c_int = 2;
pub const PROTO_TLS: c_int = 3;
pub const PROTO_WS: c_int = 5;
pub const PROTO_WSS: c_int = 6;

/// `msg_start.type` of a request (parser/parse_fline.h).
pub const SIP_REQUEST: c_int = 1;
/// `msg_start.type` of a reply.
pub const SIP_REPLY: c_int = 2;

/// The request view of `msg_start.u`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct RequestLine {
    pub method: Str,
    pub uri: Str,
    pub version: Str,
    pub method_value: c_int,
}

/// The reply view of `msg_start.u`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ReplyLine {
    pub version: Str,
    pub status: Str,
    pub reason: Str,
    pub statuscode: c_uint,
}

/// `msg_start.u`: which view is valid says `msg_start.type`.
#[repr(C)]
#[derive(Clone, Copy)]
pub union FirstLineUnion {
    pub request: RequestLine,
    pub reply: ReplyLine,
}

/// `struct msg_start`: the first line.
#[repr(C)]
pub struct MsgStart {
    pub type_: c_int,
    pub len: c_int,
    pub u: FirstLineUnion,
}

/// `hdr_flags_t`: one bit per header type, `1 << type` (parser/hf.h).
pub type HdrFlags = u64;

/// Header types (`enum _hdr_types_t`): the position of each in that enum,
/// counted from HDR_VIA2_T = 2 in declaration order. HDR_OTHER_T is every
/// header the parser has no type for (Server among them: OpenSIPS 3.6 has
/// neither a type nor a shortcut for it).
pub const HDR_OTHER_T: c_int = 0;
pub const HDR_USERAGENT_T: c_int = 27;
/// 3.6 added the three Security-* types before it.
#[cfg(opensips_abi = "3.4")]
pub const HDR_EOH_T: c_int = 53;
#[cfg(not(opensips_abi = "3.4"))]
pub const HDR_EOH_T: c_int = 56;

/// Flag asking `parse_headers` to go on until a User-Agent is found.
pub const HDR_USERAGENT_F: HdrFlags = 1 << HDR_USERAGENT_T;
/// Flag asking for the end of the headers: the header has every bit set.
pub const HDR_EOH_F: HdrFlags = !0;

/// `struct hdr_field`: one parsed header, in the message's list.
#[repr(C)]
pub struct HdrField {
    pub type_: c_int,
    pub name: Str,
    /// The value, without the name, the colon or the line end.
    pub body: Str,
    pub len: c_int,
    pub parsed: *mut c_void,
    pub next: *mut HdrField,
    pub sibling: *mut HdrField,
}

/// Number of `struct hdr_field *` shortcuts between `parsed_flag` and
/// `body` in `struct sip_msg`: h_via1 … security_verify on 3.6 and 4.0;
/// on 3.4, h_via1, h_via2 … replaces (no Security-* shortcuts).
#[cfg(opensips_abi = "3.4")]
pub const SIP_MSG_HDR_SHORTCUTS: usize = 43;
#[cfg(not(opensips_abi = "3.4"))]
pub const SIP_MSG_HDR_SHORTCUTS: usize = 45;

/// Index in [`SipMsgHead::hdr_shortcuts`] of `user_agent`, the first
/// User-Agent header: after h_via1, (3.4: h_via2,) callid, to, cseq,
/// from, contact, maxforwards, route, record_route, path, content_type,
/// content_length, authorization, expires, proxy_auth, supported,
/// proxy_require, unsupported, allow, event, accept, accept_language,
/// organization, priority and subject.
#[cfg(opensips_abi = "3.4")]
pub const HDR_SHORTCUT_USER_AGENT: usize = 26;
#[cfg(not(opensips_abi = "3.4"))]
pub const HDR_SHORTCUT_USER_AGENT: usize = 25;
/// Index of the last shortcut (replaces on 3.4, security_verify after);
/// checks the count above.
#[cfg(opensips_abi = "3.4")]
pub const HDR_SHORTCUT_LAST: usize = 42;
#[cfg(not(opensips_abi = "3.4"))]
pub const HDR_SHORTCUT_LAST: usize = 44;

/// `struct sip_msg` up to and including `rcv`.
#[repr(C)]
pub struct SipMsgHead {
    pub id: c_uint,
    pub first_line: MsgStart,
    pub via1: *mut c_void,
    pub via2: *mut c_void,
    pub headers: *mut HdrField,
    pub last_header: *mut HdrField,
    pub parsed_flag: HdrFlags,
    pub hdr_shortcuts: [*mut HdrField; SIP_MSG_HDR_SHORTCUTS],
    pub body: *mut c_void,
    /// Since 3.6.
    #[cfg(not(opensips_abi = "3.4"))]
    pub sdp_ops: *mut c_void,
    pub eoh: *mut c_char,
    pub unparsed: *mut c_char,
    pub rcv: ReceiveInfoHead,
}

#[cfg(not(opensips_abi = "3.4"))]
extern "C" {
    /// What the headers' `parse_headers(msg, flags, next)` macro calls, with
    /// `sip_well_known_parse` 1: parses headers until every type in `flags`
    /// has been seen or the headers end. 0 on success (a header type absent
    /// from the message is not an error), -1 on a malformed header.
    // The check-abi bindings declare it too, with the real sip_msg type.
    #[cfg_attr(rsec_layout_check, allow(clashing_extern_declarations))]
    pub fn parse_headers_aux(
        msg: *mut SipMsg,
        flags: HdrFlags,
        next: c_int,
        sip_well_known_parse: c_int,
    ) -> c_int;
}

#[cfg(opensips_abi = "3.4")]
extern "C" {
    /// 3.4's own function: what 3.6 made a macro over `parse_headers_aux`.
    #[cfg_attr(rsec_layout_check, allow(clashing_extern_declarations))]
    #[link_name = "parse_headers"]
    pub(crate) fn parse_headers_34(msg: *mut SipMsg, flags: HdrFlags, next: c_int) -> c_int;
}

/// Parses `msg`'s headers until every type in `flags` has been seen or
/// the headers end: 0 on success (a type absent from the message is not an
/// error), -1 on a malformed header.
///
/// # Safety
/// `msg` is the message OpenSIPS passed to the running function.
pub unsafe fn parse_headers(msg: *mut SipMsg, flags: HdrFlags, next: c_int) -> c_int {
    #[cfg(opensips_abi = "3.4")]
    // SAFETY: as this function's own contract.
    return unsafe { parse_headers_34(msg, flags, next) };
    #[cfg(not(opensips_abi = "3.4"))]
    // SAFETY: as this function's own contract.
    return unsafe { parse_headers_aux(msg, flags, next, 1) };
}

pub type CmdFunction = unsafe extern "C" fn(
    *mut SipMsg,
    *mut c_void,
    *mut c_void,
    *mut c_void,
    *mut c_void,
    *mut c_void,
    *mut c_void,
    *mut c_void,
    *mut c_void,
) -> c_int;
pub type FixupFunction = unsafe extern "C" fn(*mut *mut c_void) -> c_int;

/// `MAX_ACTION_ELEMS - 1`.
pub const MAX_CMD_PARAMS: usize = 8;

pub const CMD_PARAM_INT: c_int = 1 << 0;
pub const CMD_PARAM_STR: c_int = 1 << 1;
pub const CMD_PARAM_OPT: c_int = 1 << 4;

#[repr(C)]
#[derive(Clone, Copy)]
pub struct CmdParam {
    pub flags: c_int,
    pub fixup: Option<FixupFunction>,
    pub free_fixup: Option<FixupFunction>,
}

#[repr(C)]
pub struct CmdExport {
    pub name: *const c_char,
    pub function: Option<CmdFunction>,
    pub params: [CmdParam; MAX_CMD_PARAMS + 1],
    pub flags: c_int,
}

/// Route types a function may be called from (route.h).
pub const REQUEST_ROUTE: c_int = 1;
pub const FAILURE_ROUTE: c_int = 2;
pub const ONREPLY_ROUTE: c_int = 4;
pub const BRANCH_ROUTE: c_int = 8;
pub const ERROR_ROUTE: c_int = 16;
pub const LOCAL_ROUTE: c_int = 32;
pub const STARTUP_ROUTE: c_int = 64;
pub const TIMER_ROUTE: c_int = 128;
pub const EVENT_ROUTE: c_int = 256;

pub type ModParamType = c_uint;
pub const STR_PARAM: ModParamType = 1 << 0;
pub const INT_PARAM: ModParamType = 1 << 1;

#[repr(C)]
pub struct ParamExport {
    pub name: *const c_char,
    pub type_: ModParamType,
    pub param_pointer: *mut c_void,
}

pub type StatFunction = unsafe extern "C" fn(*mut c_void) -> c_ulong;
pub const STAT_NO_RESET: c_ushort = 1 << 0;
pub const STAT_IS_FUNC: c_ushort = 1 << 3;

extern "C" {
    /// Registers a statistic in group `module` (created if new); with
    /// STAT_IS_FUNC, `pvar` is the function and `ctx` its argument. The
    /// name is copied unless STAT_SHM_NAME. 0 on success. Same signature
    /// in 3.4, 3.6 and 4.0.
    pub fn register_stat2(
        module: *const c_char,
        name: *mut c_char,
        pvar: *mut *mut StatVar,
        flags: c_ushort,
        ctx: *mut c_void,
        unsafe_: c_int,
    ) -> c_int;
}

/// Opaque `stat_var`; rsec only hands OpenSIPS a place to store one.
#[repr(C)]
pub struct StatVar {
    _opaque: [u8; 0],
}

#[repr(C)]
pub struct StatExport {
    pub name: *const c_char,
    pub flags: c_ushort,
    pub stat_pointer: *mut *mut StatVar,
}

#[repr(C)]
pub struct ScmVersion {
    pub type_: *const c_char,
    pub rev: *const c_char,
}

#[repr(C)]
pub struct VerInfo {
    pub version: *const c_char,
    pub compile_flags: *const c_char,
    pub scm: ScmVersion,
}

/// `enum module_type`.
pub const MOD_TYPE_DEFAULT: c_int = 1;

pub type InitFunction = unsafe extern "C" fn() -> c_int;
pub type ChildInitFunction = unsafe extern "C" fn(c_int) -> c_int;
pub type DestroyFunction = unsafe extern "C" fn();
pub type ResponseFunction = unsafe extern "C" fn(*mut SipMsg) -> c_int;

#[repr(C)]
pub struct ModuleExports {
    pub name: *const c_char,
    pub type_: c_int,
    pub ver_info: VerInfo,
    pub dlflags: c_uint,
    pub load_f: Option<InitFunction>,
    pub deps: *const c_void,
    pub cmds: *const CmdExport,
    pub acmds: *const c_void,
    pub params: *const ParamExport,
    pub stats: *const StatExport,
    pub mi_cmds: *const c_void,
    pub items: *const c_void,
    pub trans: *const c_void,
    pub procs: *const c_void,
    pub preinit_f: Option<InitFunction>,
    pub init_f: Option<InitFunction>,
    pub response_f: Option<ResponseFunction>,
    pub destroy_f: Option<DestroyFunction>,
    pub init_child_f: Option<ChildInitFunction>,
    pub reload_ack_f: Option<InitFunction>,
}

// SAFETY: export tables are immutable after construction and only hold
// pointers to static data; OpenSIPS reads them from one thread.
unsafe impl Sync for ModuleExports {}
unsafe impl Sync for CmdExport {}
unsafe impl Sync for ParamExport {}
unsafe impl Sync for StatExport {}

/// Log levels (dprint.h).
pub const L_ALERT: c_int = -3;
pub const L_CRIT: c_int = -2;
pub const L_ERR: c_int = -1;
pub const L_WARN: c_int = 1;
pub const L_NOTICE: c_int = 2;
pub const L_INFO: c_int = 3;
pub const L_DBG: c_int = 4;

pub type TimerFunction = unsafe extern "C" fn(ticks: c_uint, param: *mut c_void);
pub const TIMER_FLAG_DELAY_ON_DELAY: c_ushort = 1 << 2;

pub const AF_INET: c_uint = 2;
pub const AF_INET6: c_uint = 10;

extern "C" {
    /// Current log level of this process (a pointer into a per-process table).
    pub static log_level: *mut c_int;
    pub static log_facility: c_int;
    pub static log_prefix: *mut c_char;

    pub fn dp_my_pid() -> c_int;
    pub fn dprint(
        level: c_int,
        facility: c_int,
        module: *const c_char,
        func: *const c_char,
        stderr_fmt: *mut c_char,
        syslog_fmt: *mut c_char,
        format: *mut c_char,
        ...
    );

    pub fn register_timer(
        label: *mut c_char,
        f: TimerFunction,
        param: *mut c_void,
        interval: c_uint,
        flags: c_ushort,
    ) -> c_int;
}

// ---- Management interface (mi/mi.h, mi/item.h) ----

/// `mi_item_t` / `mi_response_t` (a cJSON node); opaque to rsec.
#[repr(C)]
pub struct MiItem {
    _opaque: [u8; 0],
}

/// `mi_params_t`, only passed back to the getters.
#[repr(C)]
pub struct MiParams {
    _opaque: [u8; 0],
}

pub type MiCmdFunction =
    unsafe extern "C" fn(params: *const MiParams, async_hdl: *mut c_void) -> *mut MiItem;

/// Parameters per MI recipe: 4.0 doubled them.
#[cfg(opensips_abi = "4.0")]
pub const MAX_MI_PARAMS: usize = 20;
#[cfg(not(opensips_abi = "4.0"))]
pub const MAX_MI_PARAMS: usize = 10;
pub const MAX_MI_RECIPES: usize = 48;
/// Other names of an MI command (4.0); the core reads them up to the first
/// NULL, so at most `MAX_MI_ALIASES - 1` are given.
#[cfg(opensips_abi = "4.0")]
pub const MAX_MI_ALIASES: usize = 4;

#[repr(C)]
#[derive(Clone, Copy)]
pub struct MiRecipe {
    pub cmd: Option<MiCmdFunction>,
    pub params: [*const c_char; MAX_MI_PARAMS],
}

#[repr(C)]
pub struct MiExport {
    pub name: *const c_char,
    pub help: *const c_char,
    pub flags: c_uint,
    pub init_f: Option<InitFunction>,
    pub recipes: [MiRecipe; MAX_MI_RECIPES],
    #[cfg(opensips_abi = "4.0")]
    pub aliases: [*const c_char; MAX_MI_ALIASES],
}

unsafe impl Sync for MiExport {}

extern "C" {
    pub fn init_mi_result_object(obj_out: *mut *mut MiItem) -> *mut MiItem;
    pub fn init_mi_result_string(value: *const c_char, len: c_int) -> *mut MiItem;
    pub fn init_mi_error_extra(
        code: c_int,
        msg: *const c_char,
        msg_len: c_int,
        details: *const c_char,
        details_len: c_int,
    ) -> *mut MiItem;
    pub fn add_mi_array(to: *mut MiItem, name: *const c_char, name_len: c_int) -> *mut MiItem;
    pub fn add_mi_object(to: *mut MiItem, name: *const c_char, name_len: c_int) -> *mut MiItem;
    pub fn add_mi_string(
        to: *mut MiItem,
        name: *const c_char,
        name_len: c_int,
        value: *const c_char,
        value_len: c_int,
    ) -> c_int;
    pub fn add_mi_number(
        to: *mut MiItem,
        name: *const c_char,
        name_len: c_int,
        value: f64,
    ) -> c_int;
    pub fn add_mi_bool(to: *mut MiItem, name: *const c_char, name_len: c_int, b: c_int) -> c_int;
    /// 0 found, MI_PARAM_ERR_MISSING / MI_PARAM_ERR_BAD_TYPE otherwise; logs nothing.
    pub fn try_get_mi_string_param(
        params: *const MiParams,
        name: *const c_char,
        value: *mut *mut c_char,
        len: *mut c_int,
    ) -> c_int;
}

// ---- Event interface (evi/evi.h, evi/evi_modules.h, evi/evi_params.h) ----

pub type EventId = c_int;
pub const EVI_ERROR: EventId = -1;
pub const EVI_INT_VAL: c_int = 0x01;
pub const EVI_STR_VAL: c_int = 0x02;

/// `evi_params_t`; opaque, built with the functions below.
#[repr(C)]
pub struct EviParams {
    _opaque: [u8; 0],
}

extern "C" {
    pub fn evi_publish_event(name: Str) -> EventId;
    /// The id of an event already known to the core, or EVI_ERROR.
    pub fn evi_get_id(name: *mut Str) -> EventId;
    pub fn evi_probe_event(id: EventId) -> c_int;
    pub fn evi_get_params() -> *mut EviParams;
    pub fn evi_param_add(
        list: *mut EviParams,
        name: *const Str,
        param: *const c_void,
        flags: c_int,
    ) -> c_int;
    /// Raises the event; the parameter list is freed by the core.
    pub fn evi_raise_event(id: EventId, params: *mut EviParams) -> c_int;
    pub fn evi_free_params(list: *mut EviParams);
}

// ---- Extra processes (sr_module.h) ----

pub type ModProc = unsafe extern "C" fn(rank: c_int);
pub type ModProcWrapper = unsafe extern "C" fn() -> c_int;

pub const PROC_FLAG_INITCHILD: c_uint = 1 << 0;
pub const PROC_FLAG_HAS_IPC: c_uint = 1 << 1;
pub const PROC_FLAG_NEEDS_SCRIPT: c_uint = 1 << 2;

#[repr(C)]
pub struct ProcExport {
    pub name: *const c_char,
    pub pre_fork_function: Option<ModProcWrapper>,
    pub post_fork_function: Option<ModProcWrapper>,
    pub function: Option<ModProc>,
    pub no: c_uint,
    pub flags: c_uint,
}
