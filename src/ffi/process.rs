//! The module's extra process (the persistence process), exported to
//! OpenSIPS through a table whose process count is decided in mod_init.

use std::cell::UnsafeCell;
use std::ffi::CStr;

use super::sys::{ModProc, ProcExport};

/// A one-process table; it starts with no process, and [`ProcTable::enable`]
/// asks OpenSIPS for it.
#[repr(transparent)]
pub struct ProcTable(UnsafeCell<[ProcExport; 2]>);

// SAFETY: written once in mod_init (main process, before the fork and
// before OpenSIPS reads it), read-only afterwards.
unsafe impl Sync for ProcTable {}

impl ProcTable {
    pub const fn new(name: &'static CStr, f: ModProc, flags: u32) -> ProcTable {
        ProcTable(UnsafeCell::new([
            ProcExport {
                name: name.as_ptr(),
                pre_fork_function: None,
                post_fork_function: None,
                function: Some(f),
                no: 0,
                flags,
            },
            ProcExport {
                name: std::ptr::null(),
                pre_fork_function: None,
                post_fork_function: None,
                function: None,
                no: 0,
                flags: 0,
            },
        ]))
    }

    pub const fn as_ptr(&'static self) -> *const ProcExport {
        self.0.get() as *const ProcExport
    }

    /// Has OpenSIPS fork the process. Call only from mod_init.
    pub fn enable(&'static self) {
        // SAFETY: mod_init runs once in the main process before OpenSIPS
        // reads the process table, and no one else writes it.
        unsafe { (*self.0.get())[0].no = 1 };
    }
}
