//! Building MI (JSON-RPC) replies and reading MI parameters.

use std::os::raw::{c_char, c_int};

use super::sys::{self, MiItem, MiParams};

/// A reply under construction. Methods ignore allocation failures of single
/// fields (the core logs them); the reply is still well-formed JSON.
pub struct Obj(*mut MiItem);

fn name(n: &str) -> (*const c_char, c_int) {
    (n.as_ptr().cast(), n.len() as c_int)
}

impl Obj {
    pub fn str(&self, key: &str, v: &str) -> &Self {
        let (k, kl) = name(key);
        // SAFETY: self.0 is a live item of the reply being built; the core copies strings.
        unsafe { sys::add_mi_string(self.0, k, kl, v.as_ptr().cast(), v.len() as c_int) };
        self
    }
    pub fn num(&self, key: &str, v: f64) -> &Self {
        let (k, kl) = name(key);
        // SAFETY: as above.
        unsafe { sys::add_mi_number(self.0, k, kl, v) };
        self
    }
    pub fn bool(&self, key: &str, v: bool) -> &Self {
        let (k, kl) = name(key);
        // SAFETY: as above.
        unsafe { sys::add_mi_bool(self.0, k, kl, v as c_int) };
        self
    }
    pub fn array(&self, key: &str) -> Arr {
        let (k, kl) = name(key);
        // SAFETY: as above.
        Arr(unsafe { sys::add_mi_array(self.0, k, kl) })
    }
    pub fn object(&self, key: &str) -> Obj {
        let (k, kl) = name(key);
        // SAFETY: as above.
        Obj(unsafe { sys::add_mi_object(self.0, k, kl) })
    }
}

pub struct Arr(*mut MiItem);

impl Arr {
    pub fn object(&self) -> Obj {
        // SAFETY: self.0 is a live array of the reply; unnamed members.
        Obj(unsafe { sys::add_mi_object(self.0, std::ptr::null(), 0) })
    }
    pub fn str(&self, v: &str) {
        // SAFETY: as above.
        unsafe { sys::add_mi_string(self.0, std::ptr::null(), 0, v.as_ptr().cast(), v.len() as c_int) };
    }
}

/// Opaque reply handed back to OpenSIPS.
pub struct Reply(pub *mut MiItem);

/// Starts an object reply; `fill` adds its members.
pub fn object(fill: impl FnOnce(&Obj)) -> Reply {
    let mut obj = std::ptr::null_mut();
    // SAFETY: out-pointer to a local; null checked.
    let resp = unsafe { sys::init_mi_result_object(&mut obj) };
    if resp.is_null() || obj.is_null() {
        return error(500, "out of memory building the reply");
    }
    fill(&Obj(obj));
    Reply(resp)
}

/// A plain "OK"-style string reply.
pub fn ok(text: &str) -> Reply {
    // SAFETY: the core copies the string.
    Reply(unsafe { sys::init_mi_result_string(text.as_ptr().cast(), text.len() as c_int) })
}

/// An error reply with a code and a message.
pub fn error(code: i32, msg: &str) -> Reply {
    // SAFETY: the core copies the message.
    Reply(unsafe { sys::init_mi_error_extra(code, msg.as_ptr().cast(), msg.len() as c_int, std::ptr::null(), 0) })
}

/// Reads named parameters of an MI call.
pub struct Params(pub *const MiParams);

impl Params {
    /// The string parameter `name` (NUL-terminated literal).
    pub fn str(&self, name: &'static std::ffi::CStr) -> Option<String> {
        let mut p: *mut c_char = std::ptr::null_mut();
        let mut len: c_int = 0;
        // SAFETY: self.0 came from OpenSIPS for this call; out-pointers are locals.
        let rc = unsafe { sys::try_get_mi_string_param(self.0, name.as_ptr() as *mut _, &mut p, &mut len) };
        if rc < 0 || p.is_null() || len < 0 {
            return None;
        }
        // SAFETY: the core returned `len` valid bytes at `p`.
        let b = unsafe { std::slice::from_raw_parts(p as *const u8, len as usize) };
        Some(String::from_utf8_lossy(b).into_owned())
    }

    /// The integer parameter `name` (a number or a numeric string):
    /// Ok(None) when absent, Err(text given) when not a number.
    pub fn int(&self, name: &'static std::ffi::CStr) -> Result<Option<i32>, String> {
        let mut v: c_int = 0;
        // SAFETY: as above.
        let rc = unsafe { sys::try_get_mi_int_param(self.0, name.as_ptr() as *mut _, &mut v) };
        match rc {
            0 => Ok(Some(v)),
            _ => match self.str(name) {
                Some(s) => Err(s),
                None => Ok(None),
            },
        }
    }
}
