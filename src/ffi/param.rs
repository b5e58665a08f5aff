//! Module parameters: the cells OpenSIPS writes `modparam` values into
//! while it parses the script, and their export-table entries.

use std::cell::UnsafeCell;
use std::ffi::CStr;
use std::os::raw::{c_char, c_int, c_void};

use super::sys::{ModParamType, ParamExport, INT_PARAM, STR_PARAM};

/// The modparam type flag saying `param_pointer` is a function called
/// with each value (sr_module.h: the int's top bit).
pub const USE_FUNC_PARAM: ModParamType = 1 << (c_int::BITS - 1);

/// What OpenSIPS calls for a USE_FUNC_PARAM modparam, once per value.
pub type ParamFunc = unsafe extern "C" fn(ModParamType, *mut c_void) -> c_int;

/// A string modparam the script may give many times: every value, in
/// script order (process memory: filled by the parser in the main process
/// before mod_init, read there).
pub struct ListCell(parking_lot::Mutex<Vec<String>>);

impl Default for ListCell {
    fn default() -> Self {
        Self::new()
    }
}

impl ListCell {
    pub const fn new() -> Self {
        ListCell(parking_lot::Mutex::new(Vec::new()))
    }

    /// Adds one value, as OpenSIPS passed it; false for a non-string.
    ///
    /// # Safety
    /// `val` is what OpenSIPS passed a USE_FUNC_PARAM function for `type_`.
    pub unsafe fn push(&self, type_: ModParamType, val: *mut c_void) -> bool {
        if type_ & !USE_FUNC_PARAM != STR_PARAM || val.is_null() {
            return false;
        }
        // SAFETY: for STR_PARAM the core passes a NUL-terminated string
        // that lives through the call; it is copied here.
        let s = unsafe { CStr::from_ptr(val as *const c_char) };
        self.0.lock().push(s.to_string_lossy().into_owned());
        true
    }

    pub fn values(&self) -> Vec<String> {
        self.0.lock().clone()
    }
}

/// Declares the C function OpenSIPS calls with each value of a repeatable
/// string modparam, adding it to `$cell`; and its export entry with `list`.
#[macro_export]
macro_rules! list_param_fn {
    ($f:ident => $cell:expr) => {
        #[allow(unsafe_code)]
        unsafe extern "C" fn $f(
            type_: $crate::ffi::sys::ModParamType,
            val: *mut std::os::raw::c_void,
        ) -> std::os::raw::c_int {
            let cell: &$crate::ffi::param::ListCell = &$cell;
            $crate::ffi::guard::guard(
                stringify!($f),
                || -1,
                // SAFETY: called by OpenSIPS's modparam parser for this
                // USE_FUNC_PARAM entry, with its value.
                || {
                    if unsafe { cell.push(type_, val) } {
                        0
                    } else {
                        -1
                    }
                },
            )
        }
    };
}

/// A C-visible cell OpenSIPS writes a modparam value into before mod_init.
#[repr(transparent)]
pub struct Cell<T>(UnsafeCell<T>);

// SAFETY: written only by OpenSIPS's config parser in the main process
// before mod_init, and only read afterwards (see `get`).
unsafe impl<T> Sync for Cell<T> {}

impl<T: Copy> Cell<T> {
    pub const fn new(v: T) -> Self {
        Cell(UnsafeCell::new(v))
    }

    const fn ptr(&'static self) -> *mut c_void {
        self.0.get() as *mut c_void
    }

    fn get(&self) -> T {
        // SAFETY: see the Sync impl: no writer runs once modules are
        // initialised, and the parser's writes happened-before mod_init in
        // the same (main) process.
        unsafe { *self.0.get() }
    }
}

/// An integer modparam's cell.
pub type IntCell = Cell<c_int>;
/// A string modparam's cell (NULL until set).
pub type StrCell = Cell<*const c_char>;

impl IntCell {
    pub fn value(&self) -> i64 {
        self.get() as i64
    }
}

impl StrCell {
    /// The string the script set, if any.
    pub fn value(&self) -> Option<String> {
        let p = self.get();
        // SAFETY: OpenSIPS stores a NUL-terminated string for STR_PARAM and
        // never frees it.
        (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
    }
}

const fn entry(name: &'static CStr, type_: ModParamType, p: *mut c_void) -> ParamExport {
    ParamExport {
        name: name.as_ptr(),
        type_,
        param_pointer: p,
    }
}

/// The export entry of an integer modparam.
pub const fn int(name: &'static CStr, cell: &'static IntCell) -> ParamExport {
    entry(name, INT_PARAM, cell.ptr())
}

/// The export entry of a string modparam.
pub const fn str(name: &'static CStr, cell: &'static StrCell) -> ParamExport {
    entry(name, STR_PARAM, cell.ptr())
}

/// The export entry of a repeatable string modparam (see [`ListCell`]).
pub const fn list(name: &'static CStr, f: ParamFunc) -> ParamExport {
    entry(name, STR_PARAM | USE_FUNC_PARAM, f as *mut c_void)
}

/// The table's terminator.
pub const END: ParamExport = ParamExport {
    name: std::ptr::null(),
    type_: 0,
    param_pointer: std::ptr::null_mut(),
};
