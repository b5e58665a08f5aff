//! Compile-time layout checks of the hand-written ABI.
//!
//! The sizes below are x86_64/aarch64 LP64 facts read from OpenSIPS 3.6
//! headers; they stop a careless edit of `sys.rs`. When OPENSIPS_SRC points
//! at a source tree, build.rs also generates bindings from the real headers
//! and asserts every field offset against them (`real_headers` below), so
//! drift in a new OpenSIPS release fails the build instead of corrupting
//! memory at run time.

use super::sys::*;
use std::mem::{offset_of, size_of};

const _: () = assert!(size_of::<Str>() == 16);
const _: () = assert!(size_of::<IpAddr>() == 24);
const _: () = assert!(size_of::<MsgStart>() == 64);
const _: () = assert!(size_of::<RequestLine>() == 56 && size_of::<ReplyLine>() == 56);
const _: () = assert!(offset_of!(MsgStart, u) + offset_of!(RequestLine, method) == 8);
const _: () = assert!(size_of::<HdrField>() == 72);
const _: () = assert!(offset_of!(HdrField, name) == 8 && offset_of!(HdrField, body) == 24);
const _: () = assert!(offset_of!(HdrField, next) == 56);
const _: () = assert!(offset_of!(SipMsgHead, headers) == 88);
const _: () = assert!(offset_of!(SipMsgHead, hdr_shortcuts) == 112);
const _: () = assert!(HDR_SHORTCUT_LAST == SIP_MSG_HDR_SHORTCUTS - 1);
const UA_OFFSET: usize =
    offset_of!(SipMsgHead, hdr_shortcuts) + HDR_SHORTCUT_USER_AGENT * size_of::<*mut HdrField>();

// 3.4: h_via2 still a shortcut, no Security-* ones, no sdp_ops.
#[cfg(opensips_abi = "3.4")]
const _: () = assert!(
    UA_OFFSET == 320 && offset_of!(SipMsgHead, body) == 456 && offset_of!(SipMsgHead, rcv) == 480
);
// 3.6 and 4.0: user_agent is the 26th shortcut, 112 + 25 pointers.
#[cfg(not(opensips_abi = "3.4"))]
const _: () = assert!(
    UA_OFFSET == 312 && offset_of!(SipMsgHead, body) == 472 && offset_of!(SipMsgHead, rcv) == 504
);
// 4.0's receive_info ends with the PROXY-protocol endpoints.
#[cfg(opensips_abi = "4.0")]
const _: () = assert!(
    offset_of!(ReceiveInfoHead, real_ep) == 104
        && offset_of!(ReceiveInfoHead, real_ep) + offset_of!(ProxyProtocol, src_ip) == 112
        && size_of::<ReceiveInfoHead>() == 168
);
const _: () = assert!(size_of::<CmdParam>() == 24);
const _: () = assert!(size_of::<CmdExport>() == 240);
const _: () = assert!(size_of::<ParamExport>() == 24);
const _: () = assert!(size_of::<StatExport>() == 24);
const _: () = assert!(size_of::<ModuleExports>() == 184);
#[cfg(not(opensips_abi = "4.0"))]
const _: () = assert!(size_of::<MiRecipe>() == 88 && size_of::<MiExport>() == 4256);
#[cfg(opensips_abi = "4.0")]
const _: () = assert!(
    size_of::<MiRecipe>() == 168
        && size_of::<MiExport>() == 8128
        && offset_of!(MiExport, aliases) == 8096
);
const _: () = assert!(size_of::<ProcExport>() == 40);

#[cfg(rsec_layout_check)]
#[allow(
    dead_code,
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    improper_ctypes,
    clippy::all
)]
mod real_headers {
    include!(concat!(env!("OUT_DIR"), "/opensips_bindings.rs"));
}

#[cfg(rsec_layout_check)]
#[allow(unused_imports)]
mod checks {
    use super::real_headers as real;
    use super::*;
    use std::os::raw::{c_char, c_int, c_ushort, c_void};
    include!(concat!(env!("OUT_DIR"), "/layout_checks.rs"));
}
