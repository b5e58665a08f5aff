//! Logging through OpenSIPS's own logger.
//!
//! The level is checked before anything is formatted; the message is
//! formatted into a stack buffer and handed to `dprint` behind a fixed
//! `"%.*s"`, so no caller-supplied text is ever used as a format string.
//! Outside OpenSIPS (unit tests, benches) the sink is stderr.

use std::fmt::{self, Write as _};
use std::os::raw::{c_char, c_int};
use std::sync::atomic::{AtomicBool, Ordering};

use super::sys;

/// Longest message logged; longer ones are cut with a trailing "...".
const BUF: usize = 1024;

static IN_OPENSIPS: AtomicBool = AtomicBool::new(false);

/// Called from the module's first entry point: from then on logging goes
/// to OpenSIPS (its symbols are resolved, since it loaded us).
pub fn attach_to_opensips() {
    IN_OPENSIPS.store(true, Ordering::Relaxed);
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum Level {
    Alert = sys::L_ALERT,
    Crit = sys::L_CRIT,
    Err = sys::L_ERR,
    Warn = sys::L_WARN,
    Notice = sys::L_NOTICE,
    Info = sys::L_INFO,
    Dbg = sys::L_DBG,
}

impl Level {
    /// (stderr prefix format, syslog prefix format) matching OpenSIPS's own
    /// "time [pid] prefixLEVEL:module:function: " layout.
    fn formats(self) -> (&'static [u8], &'static [u8]) {
        macro_rules! f {
            ($t:literal) => {
                (
                    concat!("%s [%d] %s", $t, ":rsec:%s: %.*s\0").as_bytes(),
                    concat!("%s", $t, ":rsec:%s: %.*s\0").as_bytes(),
                )
            };
        }
        match self {
            Level::Alert => f!("ALERT"),
            Level::Crit => f!("CRITICAL"),
            Level::Err => f!("ERROR"),
            Level::Warn => f!("WARNING"),
            Level::Notice => f!("NOTICE"),
            Level::Info => f!("INFO"),
            Level::Dbg => f!("DBG"),
        }
    }
}

/// True when a message at `level` would be printed.
pub fn enabled(level: Level) -> bool {
    if !IN_OPENSIPS.load(Ordering::Relaxed) {
        return (level as i32) <= sys::L_INFO || std::env::var_os("RSEC_DEBUG").is_some();
    }
    // SAFETY: log_level is set up by OpenSIPS before any module code runs
    // and always points at this process's level.
    unsafe {
        let p = sys::log_level;
        !p.is_null() && *p >= level as c_int
    }
}

struct StackBuf {
    buf: [u8; BUF],
    len: usize,
    truncated: bool,
}

impl fmt::Write for StackBuf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = BUF - 1 - self.len; // keep one byte for '\n'
        let n = s.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        if n < s.len() {
            self.truncated = true;
        }
        Ok(())
    }
}

/// Emits one message. `func` is a NUL-terminated function name.
pub fn emit(level: Level, func: &'static [u8], args: fmt::Arguments<'_>) {
    let mut b = StackBuf { buf: [0; BUF], len: 0, truncated: false };
    let _ = b.write_fmt(args);
    if b.truncated {
        b.len = b.len.saturating_sub(3);
        b.buf[b.len..b.len + 3].copy_from_slice(b"...");
        b.len += 3;
    }
    b.buf[b.len] = b'\n';
    b.len += 1;

    if !IN_OPENSIPS.load(Ordering::Relaxed) {
        eprint!("rsec:{}: {}", String::from_utf8_lossy(&func[..func.len() - 1]), String::from_utf8_lossy(&b.buf[..b.len]));
        return;
    }
    let (stderr_fmt, syslog_fmt) = level.formats();
    // dprint's argument list after the formats: time, pid, prefix, function,
    // then ours: length and pointer for "%.*s".
    let mut tbuf = [0 as c_char; 64];
    // SAFETY: every pointer passed is NUL-terminated static data or a live
    // stack buffer; the varargs match the formats above exactly
    // (%s time, %d pid, %s prefix, %s function, %.*s message).
    unsafe {
        let now = libc::time(std::ptr::null_mut());
        let time_ptr = if libc::ctime_r(&now, tbuf.as_mut_ptr()).is_null() {
            c"".as_ptr()
        } else {
            tbuf[19] = 0; // "Www Mmm dd hh:mm:ss" without the year
            tbuf.as_ptr().add(4)
        };
        let prefix = if sys::log_prefix.is_null() { c"".as_ptr() } else { sys::log_prefix as *const c_char };
        sys::dprint(
            level as c_int,
            sys::log_facility,
            c"rsec".as_ptr(),
            func.as_ptr().cast(),
            stderr_fmt.as_ptr() as *mut c_char,
            syslog_fmt.as_ptr() as *mut c_char,
            c"%.*s".as_ptr() as *mut c_char,
            time_ptr,
            sys::dp_my_pid(),
            prefix,
            func.as_ptr().cast::<c_char>(),
            b.len as c_int,
            b.buf.as_ptr().cast::<c_char>(),
        );
    }
}

/// `rsec_log!(Err, "sec_ban_ip", "bad ip '{}'", s)`: checks the level, then
/// formats and logs. The function name is the script or callback name.
#[macro_export]
macro_rules! rsec_log {
    ($lvl:ident, $func:literal, $($arg:tt)+) => {
        if $crate::ffi::log::enabled($crate::ffi::log::Level::$lvl) {
            $crate::ffi::log::emit(
                $crate::ffi::log::Level::$lvl,
                concat!($func, "\0").as_bytes(),
                format_args!($($arg)+),
            );
        }
    };
}
