//! Script functions: typed parameters, and [`script_functions!`], which
//! turns one declaration per function into its guarded C shim, its
//! parameter flags and its export-table entry.
//!
//! A parameter's type says both how OpenSIPS must pass it (`CMD_PARAM_STR`,
//! `CMD_PARAM_INT`, `| CMD_PARAM_OPT`) and how the shim decodes it, so the
//! two cannot disagree:
//!
//! ```ignore
//! script_functions! {
//!     on_panic = RC_ERROR;
//!     fn sec_ban_ip(call, ip: Str, seconds: Opt<Int>, reason: Opt<Str>) in ANY_ROUTE => ban_ip;
//! }
//! // calls: fn ban_ip(call: &Call, ip: &[u8], seconds: Option<i32>, reason: Option<&[u8]>) -> i32
//! ```

use std::ffi::CStr;
use std::marker::PhantomData;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::raw::{c_int, c_void};
use std::ptr::null;

use super::sys::{
    self, CmdExport, CmdFunction, CmdParam, HdrFlags, SipMsg, SipMsgHead, Str as CStrArg,
    MAX_CMD_PARAMS,
};

/// A script function parameter type.
pub trait Arg {
    /// How OpenSIPS is told to pass it.
    const FLAGS: c_int;
    /// What the function body receives.
    type Value<'a>;
    /// # Safety
    /// `p` is what OpenSIPS passed for a parameter declared with `FLAGS`:
    /// NULL only if optional and omitted, otherwise a valid `str*` or `int*`
    /// that outlives the call.
    unsafe fn decode<'a>(p: *mut c_void) -> Self::Value<'a>;
}

/// A string (`str*`), borrowed for the call.
pub struct Str;
/// An integer (`int*`).
pub struct Int;
/// An optional parameter: `None` when the script omitted it.
pub struct Opt<T>(PhantomData<T>);

impl Arg for Str {
    const FLAGS: c_int = sys::CMD_PARAM_STR;
    type Value<'a> = &'a [u8];
    unsafe fn decode<'a>(p: *mut c_void) -> &'a [u8] {
        let Some(s) = (p as *const CStrArg).as_ref() else {
            return &[];
        };
        if s.s.is_null() || s.len <= 0 {
            return &[];
        }
        std::slice::from_raw_parts(s.s as *const u8, s.len as usize)
    }
}

impl Arg for Int {
    const FLAGS: c_int = sys::CMD_PARAM_INT;
    type Value<'a> = i32;
    unsafe fn decode<'a>(p: *mut c_void) -> Self::Value<'a> {
        (p as *const c_int).as_ref().copied().unwrap_or(0)
    }
}

impl<T: Arg> Arg for Opt<T> {
    const FLAGS: c_int = T::FLAGS | sys::CMD_PARAM_OPT;
    type Value<'a> = Option<T::Value<'a>>;
    unsafe fn decode<'a>(p: *mut c_void) -> Self::Value<'a> {
        (!p.is_null()).then(|| T::decode(p))
    }
}

/// What a function body knows of its call: its own name (for logs) and
/// the message it runs for.
pub struct Call {
    name: &'static CStr,
    msg: *mut SipMsg,
}

impl Call {
    /// # Safety
    /// `msg` is NULL or the message OpenSIPS passed to the function.
    pub unsafe fn new(name: &'static CStr, msg: *mut SipMsg) -> Call {
        Call { name, msg }
    }

    pub fn name(&self) -> &'static CStr {
        self.name
    }

    /// The message's leading fields, or None without a real message: NULL
    /// outside message routes, or the core's FAKED_REPLY marker (-1).
    ///
    /// Never held across a call into the parser, which writes the message.
    fn head(&self) -> Option<&SipMsgHead> {
        if self.msg as usize == usize::MAX {
            return None;
        }
        // SAFETY: `msg` is NULL or a valid sip_msg for the whole call (see
        // `new`); only the leading fields mirrored in SipMsgHead are read.
        unsafe { (self.msg as *const SipMsgHead).as_ref() }
    }

    /// The address a request is counted against: the socket peer or, on
    /// OpenSIPS 4.0 behind a listener with PROXY protocol, the client the
    /// PROXY header named (as 4.0's own pike does). Only a header parsed
    /// on a SIP transport is trusted: some receive paths (SCTP, HEP) leave
    /// `real_ep` unset in 4.0.1.
    fn client(rcv: &sys::ReceiveInfoHead) -> &sys::IpAddr {
        #[cfg(opensips_abi = "4.0")]
        {
            let ep = &rcv.real_ep;
            let sip = matches!(
                rcv.proto,
                sys::PROTO_UDP | sys::PROTO_TCP | sys::PROTO_TLS | sys::PROTO_WS | sys::PROTO_WSS
            );
            let valid = matches!(
                (ep.src_ip.af, ep.src_ip.len),
                (sys::AF_INET, 4) | (sys::AF_INET6, 16)
            );
            if sip && ep.flags == sys::PP_OK && valid {
                return &ep.src_ip;
            }
        }
        &rcv.src_ip
    }

    /// The message's source address, if it has one.
    pub fn source(&self) -> Option<IpAddr> {
        let ip = Self::client(&self.head()?.rcv);
        match (ip.af, ip.len) {
            (sys::AF_INET, 4) => Some(IpAddr::V4(Ipv4Addr::new(
                ip.u[0], ip.u[1], ip.u[2], ip.u[3],
            ))),
            (sys::AF_INET6, 16) => Some(IpAddr::V6(Ipv6Addr::from(ip.u))),
            _ => None,
        }
    }

    /// The message's number, unique within this process while it is
    /// handled (None without a message): what ties several calls of one
    /// script run to the same request.
    pub fn msg_id(&self) -> Option<u32> {
        Some(self.head()?.id)
    }

    /// True for a request (false for a reply, or without a message).
    pub fn is_request(&self) -> bool {
        self.head()
            .is_some_and(|m| m.first_line.type_ == sys::SIP_REQUEST)
    }

    /// The method name of a request as it was received (`INVITE`,
    /// `REGISTER`, or any token for an extension method); None for a reply.
    pub fn method(&self) -> Option<&[u8]> {
        let m = self.head()?;
        if m.first_line.type_ != sys::SIP_REQUEST {
            return None;
        }
        // SAFETY: type SIP_REQUEST says the request view of the union is
        // the one the parser filled in.
        let method = unsafe { m.first_line.u.request.method };
        // SAFETY: the first line's strings point into the message buffer,
        // which outlives the call.
        unsafe { str_bytes(method) }
    }

    /// What the client says it is: a request's User-Agent header, a
    /// reply's Server header (the first one when repeated). None when the
    /// header is absent, or the headers up to it cannot be parsed.
    ///
    /// Parses the message's headers up to the one wanted if that has not
    /// been done yet, as `$ua` or `$hdr(Server)` in the script would.
    pub fn user_agent(&self) -> Option<&[u8]> {
        // Copied out, so no reference into the message outlives this line:
        // the parser writes the message below.
        let kind = self.head()?.first_line.type_;
        match kind {
            sys::SIP_REQUEST => {
                self.parse_headers(sys::HDR_USERAGENT_F)?;
                let ua = self.head()?.hdr_shortcuts[sys::HDR_SHORTCUT_USER_AGENT];
                // SAFETY: a shortcut is NULL or one of the message's parsed
                // headers, which live as long as the message.
                let h = unsafe { ua.as_ref()? };
                // SAFETY: a parsed header's body points into the message
                // buffer.
                unsafe { str_bytes(h.body) }
            }
            sys::SIP_REPLY => {
                // No header type, so no shortcut, for Server: every header
                // is parsed and the list searched by name.
                self.parse_headers(sys::HDR_EOH_F)?;
                let mut h = self.head()?.headers;
                // SAFETY: `headers` starts the message's list of parsed
                // headers, each linked by `next`, NULL-terminated; all live
                // as long as the message.
                while let Some(hf) = unsafe { h.as_ref() } {
                    // SAFETY: a parsed header's name points into the buffer.
                    let name = unsafe { str_bytes(hf.name) };
                    if hf.type_ == sys::HDR_OTHER_T
                        && name.is_some_and(|n| n.eq_ignore_ascii_case(b"Server"))
                    {
                        // SAFETY: as for the name.
                        return unsafe { str_bytes(hf.body) };
                    }
                    h = hf.next;
                }
                None
            }
            _ => None,
        }
    }

    /// Has OpenSIPS parse the headers until those in `flags` are found (or
    /// the headers end); a no-op when it already has.
    fn parse_headers(&self, flags: HdrFlags) -> Option<()> {
        if self.head()?.parsed_flag & flags == flags {
            return Some(());
        }
        // SAFETY: `msg` is a real message (head() said so) that this
        // process owns for the call, and no reference into it is held
        // while the parser writes it; flags are the header's own bits.
        let rc = unsafe { sys::parse_headers(self.msg, flags, 0) };
        (rc >= 0).then_some(())
    }
}

/// The bytes of an OpenSIPS `str`; None for a NULL or negative-length one.
///
/// # Safety
/// A non-NULL `s.s` points to `s.len` readable bytes that outlive `'a`.
unsafe fn str_bytes<'a>(s: CStrArg) -> Option<&'a [u8]> {
    if s.s.is_null() || s.len < 0 {
        return None;
    }
    Some(std::slice::from_raw_parts(s.s as *const u8, s.len as usize))
}

/// One export-table entry; `flags` are the parameters' in order.
pub const fn export(
    name: &'static CStr,
    f: CmdFunction,
    flags: &[c_int],
    routes: c_int,
) -> CmdExport {
    assert!(
        flags.len() <= MAX_CMD_PARAMS,
        "too many parameters for a script function"
    );
    let mut params = [CmdParam {
        flags: 0,
        fixup: None,
        free_fixup: None,
    }; MAX_CMD_PARAMS + 1];
    let mut i = 0;
    while i < flags.len() {
        params[i].flags = flags[i];
        i += 1;
    }
    CmdExport {
        name: name.as_ptr(),
        function: Some(f),
        params,
        flags: routes,
    }
}

/// The table's terminator.
pub const END: CmdExport = CmdExport {
    name: null(),
    function: None,
    params: [CmdParam {
        flags: 0,
        fixup: None,
        free_fixup: None,
    }; MAX_CMD_PARAMS + 1],
    flags: 0,
};

/// Declares the module's script functions, once each, and generates the
/// `CMDS` export table. Each is `fn NAME(CALL, ARG: TYPE, ...) in ROUTES =>
/// BODY;`: BODY is a plain Rust function taking `&Call` and each
/// argument's decoded value, returning the script return code. The shim
/// runs it inside the panic guard (a panic returns `on_panic`).
#[macro_export]
macro_rules! script_functions {
    (
        on_panic = $on_panic:expr;
        $( $(#[doc = $doc:literal])* fn $name:ident($call:ident $(, $arg:ident: $ty:ty)* $(,)?) in $routes:expr => $body:path; )*
    ) => {
        pub static CMDS: [$crate::ffi::sys::CmdExport; [$(stringify!($name)),*].len() + 1] = [
            $($crate::ffi::script::export(
                $crate::ffi::cstr!(stringify!($name)),
                {
                    $(#[doc = $doc])*
                    #[allow(unsafe_code)]
                    unsafe extern "C" fn shim(
                        msg: *mut $crate::ffi::sys::SipMsg,
                        p0: *mut ::std::os::raw::c_void,
                        p1: *mut ::std::os::raw::c_void,
                        p2: *mut ::std::os::raw::c_void,
                        p3: *mut ::std::os::raw::c_void,
                        p4: *mut ::std::os::raw::c_void,
                        p5: *mut ::std::os::raw::c_void,
                        p6: *mut ::std::os::raw::c_void,
                        p7: *mut ::std::os::raw::c_void,
                    ) -> ::std::os::raw::c_int {
                        #[allow(unused_mut, unused_variables)]
                        let mut params = [p0, p1, p2, p3, p4, p5, p6, p7].into_iter();
                        $crate::ffi::guard::guard(stringify!($name), || $on_panic, || {
                            // SAFETY: OpenSIPS passes the message and one
                            // pointer per parameter declared with the flags
                            // of `$ty` (see `export` below), valid for the call.
                            let $call = unsafe { $crate::ffi::script::Call::new($crate::ffi::cstr!(stringify!($name)), msg) };
                            $(let $arg = unsafe {
                                <$ty as $crate::ffi::script::Arg>::decode(params.next().unwrap_or(::std::ptr::null_mut()))
                            };)*
                            $body(&$call $(, $arg)*)
                        })
                    }
                    shim
                },
                &[$(<$ty as $crate::ffi::script::Arg>::FLAGS),*],
                $routes,
            ),)*
            $crate::ffi::script::END,
        ];
    };
}
