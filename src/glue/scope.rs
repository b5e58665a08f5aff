//! The profile and tenant of the message being handled: set by
//! `sec_profile()` and `sec_tenant()`, read by every check of the same
//! message that follows in the script. Process-local (each worker handles
//! one message at a time) and keyed by the message's number, so a scope
//! set for one request never leaks into the next.

use std::cell::Cell;

use crate::engine::{Engine, IpKey, ProfileId, Scope, TenantId};
use crate::ffi::script::Call;

#[derive(Clone, Copy, Default)]
struct Chosen {
    msg: u32,
    /// None: not chosen by the script (the source prefix decides).
    profile: Option<ProfileId>,
    tenant: TenantId,
}

thread_local! {
    static CHOSEN: Cell<Option<Chosen>> = const { Cell::new(None) };
    /// Tenants this process has named, by label (bounded by max_tenants:
    /// numbers are never reused, so an entry never goes stale).
    static TENANTS: std::cell::RefCell<std::collections::HashMap<Vec<u8>, TenantId>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

/// The number of tenant `label`, if this process has seen it.
pub fn known_tenant(label: &[u8]) -> Option<TenantId> {
    TENANTS.with(|t| t.borrow().get(label).copied())
}

/// Remembers tenant `label`'s number, up to `max` tenants.
pub fn learn_tenant(label: &[u8], id: TenantId, max: usize) {
    TENANTS.with(|t| {
        let mut t = t.borrow_mut();
        if t.len() < max {
            t.insert(label.to_vec(), id);
        }
    });
}

fn update(call: &Call, f: impl FnOnce(&mut Chosen)) -> bool {
    let Some(msg) = call.msg_id() else {
        return false;
    };
    CHOSEN.with(|c| {
        let mut ch = c.get().filter(|ch| ch.msg == msg).unwrap_or(Chosen {
            msg,
            ..Chosen::default()
        });
        f(&mut ch);
        c.set(Some(ch));
    });
    true
}

/// Chooses the profile of this message's checks; false without a message.
pub fn set_profile(call: &Call, id: ProfileId) -> bool {
    update(call, |ch| ch.profile = Some(id))
}

/// Chooses the tenant of this message's checks; false without a message.
pub fn set_tenant(call: &Call, id: TenantId) -> bool {
    update(call, |ch| ch.tenant = id)
}

/// The scope of a check of `ip` made for this message: what the script
/// chose, else the profile `profile_prefix` gives `ip`.
pub fn of(call: &Call, e: &Engine, ip: &IpKey) -> Scope {
    let chosen = call
        .msg_id()
        .and_then(|msg| CHOSEN.with(|c| c.get()).filter(|ch| ch.msg == msg));
    let profile = match chosen.and_then(|ch| ch.profile) {
        Some(p) => p,
        None if e.has_profile_prefixes() => e.profile_of(ip),
        None => 0,
    };
    Scope {
        profile,
        tenant: chosen.map_or(0, |ch| ch.tenant),
    }
}
