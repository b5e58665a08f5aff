//! Module parameters: the cells OpenSIPS writes `modparam` values into
//! while it parses the script, and their export-table entries.

use std::cell::UnsafeCell;
use std::ffi::CStr;
use std::os::raw::{c_char, c_int, c_void};

use super::sys::{ModParamType, ParamExport, INT_PARAM, STR_PARAM};

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

/// The table's terminator.
pub const END: ParamExport = ParamExport {
    name: std::ptr::null(),
    type_: 0,
    param_pointer: std::ptr::null_mut(),
};
