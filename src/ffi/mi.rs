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
        unsafe {
            sys::add_mi_string(
                self.0,
                std::ptr::null(),
                0,
                v.as_ptr().cast(),
                v.len() as c_int,
            )
        };
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
    Reply(unsafe {
        sys::init_mi_error_extra(
            code,
            msg.as_ptr().cast(),
            msg.len() as c_int,
            std::ptr::null(),
            0,
        )
    })
}

/// An MI call's failure: the JSON-RPC error code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MiError {
    pub code: i32,
    pub msg: String,
}

impl MiError {
    pub fn new(code: i32, msg: impl Into<String>) -> MiError {
        MiError {
            code,
            msg: msg.into(),
        }
    }

    /// 400 naming the parameter and the value given.
    pub fn bad(param: &str, value: &str, why: impl std::fmt::Display) -> MiError {
        MiError::new(
            400,
            format!("bad {param} '{}': {why}", crate::ffi::log::shown(value)),
        )
    }
}

/// What an MI handler returns; errors become error replies.
pub type MiResult = Result<Reply, MiError>;

/// Reads named parameters of an MI call. Missing parameters are `None`;
/// a parameter of the wrong JSON type is an error naming it, never a
/// silent default.
pub struct Params(*const MiParams);

const MI_PARAM_ERR_MISSING: c_int = -1;

impl Params {
    /// # Safety
    /// `p` is the parameter list OpenSIPS passed to this MI call.
    pub unsafe fn new(p: *const MiParams) -> Params {
        Params(p)
    }

    fn name(name: &'static std::ffi::CStr) -> &'static str {
        name.to_str().unwrap_or("?")
    }

    /// The parameter as text: a JSON string, or a number's decimal form.
    /// Any other JSON type (array, object, null, boolean) is refused.
    fn text(&self, name: &'static std::ffi::CStr) -> Result<Option<String>, MiError> {
        let mut p: *mut c_char = std::ptr::null_mut();
        let mut len: c_int = 0;
        // SAFETY: self.0 came from OpenSIPS for this call; out-pointers are locals.
        let rc = unsafe {
            sys::try_get_mi_string_param(self.0, name.as_ptr() as *mut _, &mut p, &mut len)
        };
        match rc {
            0 if !p.is_null() && len >= 0 => {
                // SAFETY: the core returned `len` valid bytes at `p`.
                let b = unsafe { std::slice::from_raw_parts(p as *const u8, len as usize) };
                Ok(Some(String::from_utf8_lossy(b).into_owned()))
            }
            MI_PARAM_ERR_MISSING => Ok(None),
            _ => Err(MiError::new(
                400,
                format!(
                    "bad {}: must be a string or a number, not an array, object, boolean or null",
                    Self::name(name)
                ),
            )),
        }
    }

    /// The string parameter `name`, if given.
    pub fn str(&self, name: &'static std::ffi::CStr) -> Result<Option<String>, MiError> {
        self.text(name)
    }

    /// The string parameter `name`, which must be given.
    pub fn required_str(&self, name: &'static std::ffi::CStr) -> Result<String, MiError> {
        self.text(name)?
            .ok_or_else(|| MiError::new(400, format!("missing {}", Self::name(name))))
    }

    /// The integer parameter `name` (a JSON number or a numeric string)
    /// within `range`, if given. Out-of-range values are refused, never
    /// wrapped or clamped (JSON numbers beyond 32 bits reach us saturated,
    /// and are refused as out of range as well).
    pub fn int(
        &self,
        name: &'static std::ffi::CStr,
        range: std::ops::RangeInclusive<i64>,
    ) -> Result<Option<i64>, MiError> {
        let Some(t) = self.text(name)? else {
            return Ok(None);
        };
        let n = Self::name(name);
        let v: i64 = t
            .trim()
            .parse()
            .map_err(|_| MiError::bad(n, &t, "not an integer"))?;
        if !range.contains(&v) {
            return Err(MiError::bad(
                n,
                &t,
                format!("must be between {} and {}", range.start(), range.end()),
            ));
        }
        Ok(Some(v))
    }
}

/// The table entry of one MI command: one recipe per number of optional
/// parameters given, in their declared order (`ip`; `ip, seconds`; `ip,
/// seconds, reason`), then the `extra` recipes (each a whole parameter
/// list: parameters that only make sense together, like a page's `cursor`
/// and `limit`), all served by `f`. Not every subset: OpenSIPS matches
/// positional calls (`opensips-cli -x mi sec_ban 192.0.2.1 600`) by count,
/// and two recipes of the same length make such a call ambiguous, so that
/// is refused at compile time.
pub const fn export(
    name: &'static std::ffi::CStr,
    help: &'static std::ffi::CStr,
    f: sys::MiCmdFunction,
    required: &[&'static std::ffi::CStr],
    optional: &[&'static std::ffi::CStr],
    extra: &[&[&'static std::ffi::CStr]],
) -> sys::MiExport {
    assert!(
        required.len() + optional.len() <= sys::MAX_MI_PARAMS,
        "too many MI parameters"
    );
    assert!(
        optional.len() + 1 + extra.len() <= sys::MAX_MI_RECIPES,
        "too many MI recipes"
    );
    let mut recipes = [NO_RECIPE; sys::MAX_MI_RECIPES];
    let mut given = 0;
    while given <= optional.len() {
        let mut params = [std::ptr::null(); sys::MAX_MI_PARAMS];
        let mut n = 0;
        while n < required.len() {
            params[n] = required[n].as_ptr();
            n += 1;
        }
        let mut i = 0;
        while i < given {
            params[n + i] = optional[i].as_ptr();
            i += 1;
        }
        recipes[given] = sys::MiRecipe {
            cmd: Some(f),
            params,
        };
        given += 1;
    }
    let mut x = 0;
    while x < extra.len() {
        let list = extra[x];
        assert!(list.len() <= sys::MAX_MI_PARAMS, "too many MI parameters");
        assert!(
            list.len() < required.len() || list.len() > required.len() + optional.len(),
            "an extra MI recipe as long as another: positional calls would be ambiguous"
        );
        let mut y = 0;
        while y < x {
            assert!(
                extra[y].len() != list.len(),
                "two extra MI recipes of the same length: positional calls would be ambiguous"
            );
            y += 1;
        }
        let mut params = [std::ptr::null(); sys::MAX_MI_PARAMS];
        let mut i = 0;
        while i < list.len() {
            params[i] = list[i].as_ptr();
            i += 1;
        }
        recipes[given + x] = sys::MiRecipe {
            cmd: Some(f),
            params,
        };
        x += 1;
    }
    sys::MiExport {
        name: name.as_ptr(),
        help: help.as_ptr(),
        flags: 0,
        init_f: None,
        recipes,
        #[cfg(opensips_abi = "4.0")]
        aliases: [std::ptr::null(); sys::MAX_MI_ALIASES],
    }
}

const NO_RECIPE: sys::MiRecipe = sys::MiRecipe {
    cmd: None,
    params: [std::ptr::null(); sys::MAX_MI_PARAMS],
};

/// The table's terminator.
pub const END: sys::MiExport = sys::MiExport {
    name: std::ptr::null(),
    help: std::ptr::null(),
    flags: 0,
    init_f: None,
    recipes: [NO_RECIPE; sys::MAX_MI_RECIPES],
    #[cfg(opensips_abi = "4.0")]
    aliases: [std::ptr::null(); sys::MAX_MI_ALIASES],
};

/// Runs an MI handler inside the panic guard and turns its result into
/// the reply OpenSIPS sends.
pub fn run(name: &'static str, p: Params, h: fn(Params) -> MiResult) -> *mut MiItem {
    crate::ffi::guard::guard(
        name,
        || error(500, "internal error").0,
        || match h(p) {
            Ok(r) => r.0,
            Err(e) => error(e.code, &e.msg).0,
        },
    )
}

/// Declares the module's MI commands, once each, and generates the
/// `MI_CMDS` export table: `fn NAME(required, ...; optional, ...) [+
/// (param, ...)]... => HANDLER, "help";`. Optional parameters may be left
/// off from the end; each `+ (...)` is one more accepted parameter list
/// (see [`export`]); the handler reads what was given from [`Params`].
#[macro_export]
macro_rules! mi_commands {
    ($( fn $name:ident($($req:ident),* $(; $($opt:ident),+)?) $(+ ($($extra:ident),+))* => $handler:path, $help:literal; )*) => {
        pub static MI_CMDS: [$crate::ffi::sys::MiExport; [$(stringify!($name)),*].len() + 1] = [
            $($crate::ffi::mi::export(
                $crate::ffi::cstr!(stringify!($name)),
                $crate::ffi::cstr!($help),
                {
                    #[allow(unsafe_code)]
                    unsafe extern "C" fn shim(
                        p: *const $crate::ffi::sys::MiParams,
                        _async: *mut ::std::os::raw::c_void,
                    ) -> *mut $crate::ffi::sys::MiItem {
                        // SAFETY: `p` is this call's parameter list.
                        $crate::ffi::mi::run(stringify!($name), unsafe { $crate::ffi::mi::Params::new(p) }, $handler)
                    }
                    shim
                },
                &[$($crate::ffi::cstr!(stringify!($req))),*],
                &[$($($crate::ffi::cstr!(stringify!($opt))),+)?],
                &[$(&[$($crate::ffi::cstr!(stringify!($extra))),+]),*],
            ),)*
            $crate::ffi::mi::END,
        ];
    };
}
