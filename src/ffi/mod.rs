//! The OpenSIPS ABI and every `unsafe` that touches it.

pub mod evi;
pub mod guard;
pub mod mi;
mod layout;
pub mod log;
pub mod sys;
pub mod version;

use std::os::raw::c_int;

use sys::{SipMsg, SipMsgHead, Str};

/// Borrows an OpenSIPS `str*` argument as bytes; None for a NULL
/// (omitted optional) parameter.
///
/// # Safety
/// `p` must be NULL or point at a valid `str` that outlives the call.
pub unsafe fn str_arg<'a>(p: *mut std::ffi::c_void) -> Option<&'a [u8]> {
    let s = (p as *const Str).as_ref()?;
    if s.s.is_null() || s.len <= 0 {
        return Some(&[]);
    }
    Some(std::slice::from_raw_parts(s.s as *const u8, s.len as usize))
}

/// Reads an OpenSIPS `int*` argument; None when omitted.
///
/// # Safety
/// `p` must be NULL or point at a valid int.
pub unsafe fn int_arg(p: *mut std::ffi::c_void) -> Option<c_int> {
    (p as *const c_int).as_ref().copied()
}

/// The message's source address as raw bytes (4 or 16), if it has one.
///
/// # Safety
/// `msg` must be NULL or a valid `struct sip_msg`.
pub unsafe fn msg_source_ip(msg: *mut SipMsg) -> Option<([u8; 16], usize)> {
    let m = (msg as *const SipMsgHead).as_ref()?;
    let ip = &m.rcv.src_ip;
    let len = match (ip.af, ip.len) {
        (sys::AF_INET, 4) => 4,
        (sys::AF_INET6, 16) => 16,
        _ => return None,
    };
    Some((ip.u, len))
}

/// Registers a periodic timer (seconds) run in OpenSIPS's timer process.
pub fn register_timer(label: &'static [u8], f: sys::TimerFunction, interval_s: u32) -> bool {
    debug_assert!(label.ends_with(b"\0"));
    // SAFETY: label is static and NUL-terminated; f is a valid extern fn.
    unsafe {
        sys::register_timer(
            label.as_ptr() as *mut _,
            f,
            std::ptr::null_mut(),
            interval_s,
            sys::TIMER_FLAG_DELAY_ON_DELAY,
        ) >= 0
    }
}
