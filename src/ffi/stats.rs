//! Statistics registered at run time (the module's fixed ones are in its
//! export table): one per tenant and figure, each a function of rsec's own
//! shared counters.

use std::ffi::{CStr, CString};
use std::os::raw::{c_ulong, c_void};

use super::sys::{self, StatVar, STAT_IS_FUNC, STAT_NO_RESET};

/// A statistic function: reads the figure of whatever `ctx` names.
pub type StatFn = extern "C" fn(ctx: *mut c_void) -> c_ulong;

/// Registers `name` in `group` as `f(ctx)`. The core copies the name and
/// links the statistic in its shared lists without a lock for a group
/// that is not its "dynamic" one, so callers register from one process
/// only. False when the core refused it (logged by the core).
pub fn register_function(group: &CStr, name: &str, f: StatFn, ctx: usize) -> bool {
    let Ok(name) = CString::new(name) else {
        return false;
    };
    // SAFETY: both strings are NUL-terminated and outlive the call (the
    // core copies the name, and finds or copies the group); for
    // STAT_IS_FUNC the core stores `pvar` as the function pointer, which
    // is ours for the life of the process, and `ctx` is a plain number.
    unsafe {
        sys::register_stat2(
            group.as_ptr(),
            name.as_ptr() as *mut _,
            f as *mut *mut StatVar,
            STAT_IS_FUNC | STAT_NO_RESET,
            ctx as *mut c_void,
            0,
        ) == 0
    }
}
