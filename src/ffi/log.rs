//! Logging through OpenSIPS's own logger.
//!
//! The level is checked before anything is formatted; the message is
//! formatted into a stack buffer and handed to `dprint` behind a fixed
//! `"%.*s"`, so no caller-supplied text is ever used as a format string.
//! Control characters are written as `\xNN` on the way into the buffer, so
//! no value (a username with CR LF, a key with a NUL) can end a log line
//! early and forge the next one; [`shown`] also bounds a value's length.
//! Outside OpenSIPS (unit tests, benches) the sink is stderr.

use std::ffi::CStr;
use std::fmt::{self, Write as _};
use std::os::raw::{c_char, c_int};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

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

impl StackBuf {
    fn push(&mut self, bytes: &[u8]) -> bool {
        let room = BUF - 1 - self.len; // keep one byte for '\n'
        if bytes.len() > room {
            self.truncated = true;
            return false;
        }
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
        true
    }
}

impl fmt::Write for StackBuf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for part in s.split_inclusive(|c: char| c.is_ascii_control()) {
            let (text, ctl) = match part.as_bytes().last() {
                Some(&c) if c.is_ascii_control() => (&part[..part.len() - 1], Some(c)),
                _ => (part, None),
            };
            if !self.push(text.as_bytes()) {
                // Cut on a char boundary so the line stays valid UTF-8.
                let room = BUF - 1 - self.len;
                let cut = (0..=room.min(text.len()))
                    .rev()
                    .find(|&i| text.is_char_boundary(i))
                    .unwrap_or(0);
                self.push(&text.as_bytes()[..cut]);
                return Ok(());
            }
            if let Some(c) = ctl {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                if !self.push(&[b'\\', b'x', HEX[(c >> 4) as usize], HEX[(c & 15) as usize]]) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

/// Longest part of a caller-supplied value that is logged.
pub const SHOWN_MAX: usize = 64;

/// A caller-supplied value for a log line: at most [`SHOWN_MAX`] bytes
/// (then `...(N bytes)`), invalid UTF-8 replaced; control characters are
/// escaped by the logger itself.
pub struct Shown<'a>(&'a [u8]);

pub fn shown(b: &(impl AsRef<[u8]> + ?Sized)) -> Shown<'_> {
    Shown(b.as_ref())
}

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.len() <= SHOWN_MAX {
            return f.write_str(&String::from_utf8_lossy(self.0));
        }
        write!(
            f,
            "{}...({} bytes)",
            String::from_utf8_lossy(&self.0[..SHOWN_MAX]),
            self.0.len()
        )
    }
}

/// Lets one log line per interval through for a condition that can repeat
/// on every packet (a full ban table under a flood), and counts the rest
/// into the next line, so an attack cannot turn into a log flood.
/// Process-local: each OpenSIPS process logs its own first line and its own
/// summaries, so the bound is processes × (1 + duration / interval).
pub struct Throttle {
    next_s: AtomicU64,
    suppressed: AtomicU64,
}

/// Seconds between two lines of one throttled condition in one process.
pub const THROTTLE_INTERVAL_S: u64 = 10;

impl Throttle {
    pub const fn new() -> Throttle {
        Throttle {
            next_s: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Some(times suppressed since the last line) when a line may be
    /// written now; None when this one is to be counted and dropped.
    pub fn admit(&self) -> Option<u64> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let next = self.next_s.load(Ordering::Relaxed);
        if now < next
            || self
                .next_s
                .compare_exchange(
                    next,
                    now + THROTTLE_INTERVAL_S,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_err()
        {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}

impl Default for Throttle {
    fn default() -> Self {
        Self::new()
    }
}

/// " (N more since the last line)" for a throttled line, or nothing.
pub struct Suppressed(pub u64);

impl fmt::Display for Suppressed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 > 0 {
            write!(f, " ({} more in the last {}s)", self.0, THROTTLE_INTERVAL_S)?;
        }
        Ok(())
    }
}

/// Emits one message on behalf of `func` (a script function or callback name).
pub fn emit(level: Level, func: &'static CStr, args: fmt::Arguments<'_>) {
    let mut b = StackBuf {
        buf: [0; BUF],
        len: 0,
        truncated: false,
    };
    let _ = b.write_fmt(args);
    if b.truncated {
        b.len = b.len.saturating_sub(3);
        b.buf[b.len..b.len + 3].copy_from_slice(b"...");
        b.len += 3;
    }
    b.buf[b.len] = b'\n';
    b.len += 1;

    if !IN_OPENSIPS.load(Ordering::Relaxed) {
        eprint!(
            "rsec:{}: {}",
            func.to_string_lossy(),
            String::from_utf8_lossy(&b.buf[..b.len])
        );
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
        let prefix = if sys::log_prefix.is_null() {
            c"".as_ptr()
        } else {
            sys::log_prefix as *const c_char
        };
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

/// `rsec_log!(Err, "sweep", "bad ip '{}'", s)`: checks the level, then
/// formats and logs. The function name is a literal or a `&'static CStr`
/// (a script function's own name).
#[macro_export]
macro_rules! rsec_log {
    ($lvl:ident, $func:literal, $($arg:tt)+) => {
        $crate::rsec_log!($lvl, $crate::ffi::cstr!($func), $($arg)+)
    };
    ($lvl:ident, $func:expr, $($arg:tt)+) => {
        if $crate::ffi::log::enabled($crate::ffi::log::Level::$lvl) {
            $crate::ffi::log::emit($crate::ffi::log::Level::$lvl, $func, format_args!($($arg)+));
        }
    };
}

/// [`rsec_log!`] for a condition that can repeat on every packet: at most
/// one line per [`THROTTLE_INTERVAL_S`] per process, the next one saying
/// how many were dropped. Each call site has its own [`Throttle`].
#[macro_export]
macro_rules! rsec_log_throttled {
    ($lvl:ident, $func:literal, $fmt:literal $(, $arg:expr)* $(,)?) => {
        $crate::rsec_log_throttled!($lvl, $crate::ffi::cstr!($func), $fmt $(, $arg)*)
    };
    ($lvl:ident, $func:expr, $fmt:literal $(, $arg:expr)* $(,)?) => {{
        static THROTTLE: $crate::ffi::log::Throttle = $crate::ffi::log::Throttle::new();
        if $crate::ffi::log::enabled($crate::ffi::log::Level::$lvl) {
            if let Some(n) = THROTTLE.admit() {
                $crate::rsec_log!($lvl, $func, concat!($fmt, "{}") $(, $arg)*, $crate::ffi::log::Suppressed(n));
            }
        }
    }};
}
