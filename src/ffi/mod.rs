//! The OpenSIPS ABI and every `unsafe` that touches it.

pub mod abi;
pub mod evi;
pub mod guard;
mod layout;
pub mod log;
pub mod mi;
pub mod param;
pub mod process;
pub mod script;
pub mod stats;
pub mod sys;
pub mod version;

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

/// `cstr!("name")`: a `&'static CStr` from a string literal, at compile time.
#[macro_export]
macro_rules! cstr {
    ($s:expr) => {
        match ::std::ffi::CStr::from_bytes_with_nul(concat!($s, "\0").as_bytes()) {
            Ok(c) => c,
            Err(_) => panic!("NUL inside a name"),
        }
    };
}
pub use crate::cstr;
