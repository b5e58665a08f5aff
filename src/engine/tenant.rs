//! Tenants: the domains (or any label the script gives) of a hosted
//! platform. A check that names its tenant also obeys that tenant's own
//! whitelist and its tenant-scoped bans, and is counted in the tenant's
//! statistics, so an operator sees which tenant is under attack.
//!
//! Tenants are numbered on first sight, in a table of `max_tenants` that
//! never forgets one (its number is what statistics and bans refer to).
//! The label comes from the script and may come from a packet: a script
//! that passes an unchecked `$rd` lets a scanner fill the table, after
//! which further tenants are counted in `tenants_overflow` and checked by
//! the global rules only (never refused for it).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::ip::Cidr;
use super::profile::ProfileId;
use super::table::{Entry, Retention};
use super::text::Text;

/// A tenant's label: 1 to 64 bytes.
pub type TenantName = Text<64>;
/// A tenant's number, from 1; 0: no tenant.
pub type TenantId = u32;

/// Where a tenant's number is kept, under its label.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TenantSlot {
    pub id: TenantId,
}

impl Entry for TenantSlot {
    type Ctx = ();
    type Clock = ();
    fn clock(_: u64, _: &()) {}
    fn retention(&self, _: &()) -> Retention {
        if self.id == 0 {
            Retention::Free
        } else {
            Retention::Pinned
        }
    }
}

/// Counts kept per tenant.
#[derive(Default)]
pub struct TenantCounters {
    /// Requests checked by the flood rules with this tenant.
    pub checked: AtomicU64,
    /// Of those, refused (banned sources, or over a threshold).
    pub blocked: AtomicU64,
    /// Bans made by its requests (global or tenant-scoped).
    pub bans: AtomicU64,
    /// Bans that dry run kept from being made.
    pub dry_run_bans: AtomicU64,
    /// Requests dry run let through that would have been refused.
    pub dry_run_blocked: AtomicU64,
    pub auth_failures: AtomicU64,
}

impl TenantCounters {
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// Numbering of tenants, shared.
#[derive(Default)]
pub struct TenantHead {
    /// Numbers handed out so far.
    pub issued: AtomicU32,
    /// Checks whose tenant found no room (`max_tenants`).
    pub overflow: AtomicU64,
    /// Tenants whose OpenSIPS statistics are registered (1 to this).
    pub stats_registered: AtomicU32,
}

/// A prefix, a tenant and a profile: the key of a tenant's whitelist
/// entries (profile 0), of its scoped bans (profile 0) and of the bans dry
/// run only pretends to make (by profile, and tenant for scoped ones).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ScopedKey {
    pub tenant: TenantId,
    pub profile: ProfileId,
    pub target: Cidr,
}

/// A tenant's whitelist entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Present(pub bool);

impl Entry for Present {
    type Ctx = ();
    type Clock = ();
    fn clock(_: u64, _: &()) {}
    fn retention(&self, _: &()) -> Retention {
        if self.0 {
            Retention::Pinned
        } else {
            Retention::Free
        }
    }
}

/// Parses `tenant_whitelist`: `example.com=10.1.0.0/16, other.org=192.0.2.7`.
pub fn parse_tenant_whitelist(s: &str) -> Result<Vec<(String, Cidr)>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|i| !i.is_empty())
        .map(|item| {
            let (t, c) = item
                .split_once('=')
                .ok_or_else(|| format!("'{item}': expected tenant=prefix"))?;
            let t = t.trim();
            TenantName::new(t.as_bytes()).map_err(|e| format!("'{item}': tenant {e}"))?;
            let c = Cidr::parse(c.trim()).map_err(|e| format!("'{item}': {}", e.why()))?;
            Ok((t.to_owned(), c))
        })
        .collect()
}

/// The key of tenant `tenant`'s entry for prefix `c` (masked to its
/// length), in its whitelist or its scoped bans.
pub fn key_for(tenant: TenantId, c: &Cidr) -> ScopedKey {
    ScopedKey {
        tenant,
        profile: 0,
        target: Cidr::new(c.addr, c.prefix),
    }
}

crate::shm_safe!(TenantSlot, TenantCounters, TenantHead, ScopedKey, Present);
