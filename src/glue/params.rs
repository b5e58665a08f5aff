//! Module parameters: storage OpenSIPS writes into while parsing the script,
//! and their conversion into an engine [`Config`] with errors that name the
//! parameter.

use std::cell::UnsafeCell;
use std::ffi::CStr;
use std::os::raw::{c_char, c_int, c_void};


use crate::db::store::valid_node_id;
use crate::db::DbUrl;
use crate::engine::{ip::parse_cidr_list, Config, ConfigError};

use super::persist::Settings;

/// A C-visible cell OpenSIPS writes a modparam value into before mod_init.
#[repr(transparent)]
pub struct Param<T>(UnsafeCell<T>);

// SAFETY: written only by OpenSIPS's config parser in the main process
// before mod_init, read-only afterwards.
unsafe impl<T> Sync for Param<T> {}

impl<T: Copy> Param<T> {
    pub const fn new(v: T) -> Self {
        Param(UnsafeCell::new(v))
    }
    pub const fn ptr(&'static self) -> *mut c_void {
        self.0.get() as *mut c_void
    }
    fn get(&self) -> T {
        // SAFETY: see the Sync impl: no concurrent writer exists.
        unsafe { *self.0.get() }
    }
}

/// `"name"` as a `&'static CStr`, at compile time.
macro_rules! cstr {
    ($s:expr) => {
        match std::ffi::CStr::from_bytes_with_nul(concat!($s, "\0").as_bytes()) {
            Ok(c) => c,
            Err(_) => panic!("NUL inside a parameter name"),
        }
    };
}

/// Declares the integer modparams once: storage, default and script name.
macro_rules! int_params {
    ($($field:ident: $name:literal = $default:expr;)*) => {
        pub mod int {
            use super::Param;
            use std::os::raw::c_int;
            $(#[allow(non_upper_case_globals)] pub static $field: Param<c_int> = Param::new($default);)*
        }
        /// (script name, storage) of every integer modparam, for the export table.
        pub const INT_PARAMS: &[(&std::ffi::CStr, &'static Param<c_int>)] = &[$((cstr!($name), &int::$field)),*];

        fn read_ints(cfg: &mut Config) -> Result<(), ConfigError> {
            $(cfg.$field = non_negative($name, int::$field.get())?;)*
            Ok(())
        }
    };
}

int_params! {
    pike_sampling_time_s: "pike_sampling_time" = 2;
    pike_density: "pike_density" = 30;
    pike_ban_time_s: "pike_ban_time" = 300;
    ban_time_s: "ban_time" = 3600;
    auth_fail_threshold: "auth_fail_threshold" = 5;
    auth_fail_window_s: "auth_fail_window" = 60;
    auth_ban_time_s: "auth_ban_time" = 900;
    max_tracked_ips: "max_tracked_ips" = 65536;
    max_rl_keys: "max_rl_keys" = 16384;
    max_bans: "max_bans" = 16384;
    lock_stripes: "lock_stripes" = 64;
    db_queue_size: "db_queue_size" = 4096;
}

/// Integer modparams of the persistence process (not engine settings).
pub static DB_SYNC_INTERVAL: Param<c_int> = Param::new(5);
pub static DB_TIMEOUT: Param<c_int> = Param::new(3);
pub const OTHER_INT_PARAMS: &[(&std::ffi::CStr, &Param<c_int>)] =
    &[(c"db_sync_interval", &DB_SYNC_INTERVAL), (c"db_timeout", &DB_TIMEOUT)];

pub static WHITELIST: Param<*const c_char> = Param::new(std::ptr::null());
pub static DB_URL: Param<*const c_char> = Param::new(std::ptr::null());
pub static NODE_ID: Param<*const c_char> = Param::new(std::ptr::null());

fn str_param(p: &Param<*const c_char>) -> Option<String> {
    let v = p.get();
    // SAFETY: OpenSIPS stores a NUL-terminated string for STR_PARAM.
    (!v.is_null()).then(|| unsafe { CStr::from_ptr(v) }.to_string_lossy().into_owned())
}

fn non_negative(param: &'static str, v: c_int) -> Result<u32, ConfigError> {
    u32::try_from(v).map_err(|_| ConfigError { param, value: v as i64, why: "must not be negative" })
}

/// Why the modparams cannot start the module.
pub enum ParamError {
    Config(ConfigError),
    Whitelist(String),
    Db(&'static str, String),
}

impl std::fmt::Display for ParamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParamError::Config(e) => e.fmt(f),
            ParamError::Whitelist(e) => write!(f, "modparam 'whitelist': {e}"),
            ParamError::Db(p, e) => write!(f, "modparam '{p}': {e}"),
        }
    }
}

/// Builds the engine configuration and, with db_url, the persistence
/// settings from what the script set.
pub fn config() -> Result<(Config, Option<Settings>), ParamError> {
    let mut cfg = Config::default();
    read_ints(&mut cfg).map_err(ParamError::Config)?;
    if let Some(s) = str_param(&WHITELIST) {
        cfg.whitelist = parse_cidr_list(&s).map_err(|e| ParamError::Whitelist(e.to_string()))?;
    }
    let db = match str_param(&DB_URL).filter(|u| !u.trim().is_empty()) {
        None => {
            cfg.db_queue_size = 0;
            None
        }
        Some(u) => {
            let url = DbUrl::parse(&u).map_err(|e| ParamError::Db("db_url", e))?;
            let node_id = match str_param(&NODE_ID) {
                Some(n) => n,
                None => hostname(),
            };
            if !valid_node_id(&node_id) {
                return Err(ParamError::Db("node_id", format!("'{node_id}' must be 1-64 characters of A-Z a-z 0-9 . _ -")));
            }
            let sync = non_negative("db_sync_interval", DB_SYNC_INTERVAL.get()).map_err(ParamError::Config)?;
            let timeout = non_negative("db_timeout", DB_TIMEOUT.get()).map_err(ParamError::Config)?;
            if sync == 0 {
                return Err(ParamError::Config(ConfigError { param: "db_sync_interval", value: 0, why: "must be greater than 0" }));
            }
            if timeout == 0 {
                return Err(ParamError::Config(ConfigError { param: "db_timeout", value: 0, why: "must be greater than 0" }));
            }
            if cfg.db_queue_size == 0 {
                return Err(ParamError::Config(ConfigError { param: "db_queue_size", value: 0, why: "must be greater than 0 with db_url" }));
            }
            Some(Settings { url, node_id, sync_interval_s: sync, timeout_s: timeout, static_whitelist: cfg.whitelist.clone() })
        }
    };
    cfg.validate().map_err(ParamError::Config)?;
    Ok((cfg, db))
}

/// The default node_id: this host's name, made safe for node_id.
fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into our buffer.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let name: String = if ok {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).chars().filter(|c| c.is_ascii_alphanumeric() || "._-".contains(*c)).take(64).collect()
    } else {
        String::new()
    };
    if name.is_empty() { "rsec".to_owned() } else { name }
}
