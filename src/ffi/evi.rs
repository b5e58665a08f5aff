//! Publishing and raising OpenSIPS events.

use std::os::raw::c_int;

use super::sys::{self, EventId, Str};

/// One event parameter value.
pub enum Value<'a> {
    Int(i32),
    Str(&'a str),
}

/// Publishes `name` (in mod_init, before the fork); None on failure. A
/// script with `event_route[name]` has the core register the event while
/// parsing; that id is reused rather than publishing it a second time.
pub fn publish(name: &'static str) -> Option<EventId> {
    let mut s = Str {
        s: name.as_ptr() as *mut _,
        len: name.len() as c_int,
    };
    // SAFETY: the core only reads the name (and copies it when publishing);
    // `name` is static anyway.
    let id = unsafe {
        match sys::evi_get_id(&mut s) {
            sys::EVI_ERROR => sys::evi_publish_event(s),
            known => known,
        }
    };
    (id != sys::EVI_ERROR).then_some(id)
}

/// True when something (a script's event_route, a transport) subscribed
/// to event `id`.
pub fn subscribed(id: EventId) -> bool {
    // SAFETY: a lookup of the core's own subscriber list by id.
    unsafe { sys::evi_probe_event(id) != 0 }
}

/// Raises event `id` with `params` if anything subscribed to it. Returns
/// false if building or raising failed.
pub fn raise(id: EventId, params: &[(&'static str, Value<'_>)]) -> bool {
    // SAFETY: the list is built and consumed here; every str/int pointer
    // passed to evi_param_add outlives the call (the core copies values).
    unsafe {
        if sys::evi_probe_event(id) == 0 {
            return true; // no subscriber: nothing to do, not an error
        }
        let list = sys::evi_get_params();
        if list.is_null() {
            return false;
        }
        for (name, v) in params {
            let n = Str {
                s: name.as_ptr() as *mut _,
                len: name.len() as c_int,
            };
            let rc = match v {
                Value::Int(i) => {
                    sys::evi_param_add(list, &n, (i as *const i32).cast(), sys::EVI_INT_VAL)
                }
                Value::Str(s) => {
                    let sv = Str {
                        s: s.as_ptr() as *mut _,
                        len: s.len() as c_int,
                    };
                    sys::evi_param_add(list, &n, (&sv as *const Str).cast(), sys::EVI_STR_VAL)
                }
            };
            if rc != 0 {
                sys::evi_free_params(list);
                return false;
            }
        }
        sys::evi_raise_event(id, list) == 0
    }
}
