//! Module parameters: storage OpenSIPS writes into while parsing the script,
//! and their conversion into an engine [`Config`] with errors that name the
//! parameter.

use std::cell::UnsafeCell;
use std::ffi::CStr;
use std::os::raw::{c_char, c_int, c_void};


use crate::engine::{ip::parse_cidr_list, Config, ConfigError};

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
}

pub static WHITELIST: Param<*const c_char> = Param::new(std::ptr::null());

fn non_negative(param: &'static str, v: c_int) -> Result<u32, ConfigError> {
    u32::try_from(v).map_err(|_| ConfigError { param, value: v as i64, why: "must not be negative" })
}

/// Why the modparams cannot start the module.
pub enum ParamError {
    Config(ConfigError),
    Whitelist(String),
}

impl std::fmt::Display for ParamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParamError::Config(e) => e.fmt(f),
            ParamError::Whitelist(e) => write!(f, "modparam 'whitelist': {e}"),
        }
    }
}

/// Builds the engine configuration from what the script set.
pub fn config() -> Result<Config, ParamError> {
    let mut cfg = Config::default();
    read_ints(&mut cfg).map_err(ParamError::Config)?;
    let wl = WHITELIST.get();
    if !wl.is_null() {
        // SAFETY: OpenSIPS stores a NUL-terminated string for STR_PARAM.
        let s = unsafe { CStr::from_ptr(wl) }.to_string_lossy();
        cfg.whitelist = parse_cidr_list(&s).map_err(|e| ParamError::Whitelist(e.to_string()))?;
    }
    cfg.validate().map_err(ParamError::Config)?;
    Ok(cfg)
}
