//! Checks under a profile, for a tenant, or in dry run, and the decisions
//! they record.
//!
//! A check with the default scope (default profile, no tenant, no dry run)
//! takes the plain path of mod.rs: one probe of the hosts table, exactly as
//! before profiles existed. Any other scope:
//! - obeys the global whitelist and bans, then the tenant's own whitelist
//!   and tenant-scoped bans;
//! - under a profile other than the default, or in dry run, counts in the
//!   profiles' own table, per (profile, source), so a trunk's traffic never
//!   eats a phone's budget; the default profile for a tenant counts in the
//!   hosts table like any default check;
//! - decides a ban as the profile says: for everyone (the default), for the
//!   request's tenant only (`ban_scope=tenant`), or not at all (dry run,
//!   which keeps the would-be ban in a table of its own so that it is
//!   reported once and the requests it would refuse are counted).

use std::sync::atomic::Ordering;

use super::bans::{Ban, Reason};
use super::decision::{Decision, Verdict};
use super::ip::{Cidr, IpKey};
use super::profile::{Limits, ProfileDef, ProfileId, ProfileView, DEFAULT_NAME};
use super::source::{ProfiledKey, ProfiledWatch};
use super::stats::Stats;
use super::table::Table;
use super::table::{Found, TableError};
use super::tenant::{key_for, Present, ScopedKey, TenantCounters, TenantId, TenantName};
use super::{
    AuthVerdict, BanOutcome, BanRecord, Engine, EngineError, Facts, PikeVerdict, WhitelistChange,
    LAPSED_CAP, US,
};
use crate::engine::config::ConfigError;

/// Whose thresholds a check runs with, and whose traffic it is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Scope {
    /// 0: the default profile.
    pub profile: ProfileId,
    /// 0: no tenant.
    pub tenant: TenantId,
}

/// A ban made for one tenant, or pretended by dry run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScopedBan {
    pub rec: BanRecord,
    /// The tenant it applies to (0: everyone, in dry run).
    pub tenant: TenantId,
    pub dry_run: bool,
    /// Made by this call (false: one already in force was found).
    pub fresh: bool,
}

/// What a rule's ban came to.
pub(super) enum Decided {
    Global(BanOutcome),
    Scoped(ScopedBan),
}

/// What stops a check before it counts.
pub(super) enum Gate {
    Whitelisted,
    Banned(Reason),
    /// Dry run: a ban it pretended is in force.
    DryRun(Reason),
}

/// A rule's decision as a flood check's verdict.
pub(super) fn pike_verdict(d: Decided) -> PikeVerdict {
    match d {
        Decided::Scoped(b) if b.fresh => PikeVerdict::Scoped(b),
        Decided::Scoped(b) if b.dry_run => PikeVerdict::DryRunBlocked(b.rec.ban.reason),
        Decided::Scoped(b) => PikeVerdict::Banned(b.rec.ban.reason),
        Decided::Global(BanOutcome::Created(rec)) => PikeVerdict::JustBanned(rec),
        Decided::Global(BanOutcome::Updated(rec) | BanOutcome::AlreadyBanned(rec)) => {
            PikeVerdict::Banned(rec.ban.reason)
        }
        Decided::Global(BanOutcome::TableFull) => PikeVerdict::OverLimitUnbanned,
        // A unit is never broader than allowed, and the whitelist was
        // checked first: only a change racing this check.
        Decided::Global(BanOutcome::Whitelisted(_) | BanOutcome::TooBroad(_)) => {
            PikeVerdict::Whitelisted
        }
    }
}

impl Engine {
    /// Puts the declared profiles in their shared slots and the tenants'
    /// whitelist entries in theirs; part of [`Engine::new`].
    pub(super) fn with_profiles_and_tenants(self) -> Result<Engine, EngineError> {
        let full = |what: &str| {
            EngineError::Config(ConfigError {
                param: "profile",
                value: 0,
                why: format!("no room for {what}"),
            })
        };
        self.profiles
            .put(DEFAULT_NAME, &self.default_limits)
            .map_err(EngineError::Memory)?
            .ok_or_else(|| full(DEFAULT_NAME))?;
        for p in &self.cfg.profiles {
            let lim = Limits::of(&p.cfg, &self.method_names, p.dry_run, p.tenant_bans);
            self.profiles
                .put(&p.name, &lim)
                .map_err(EngineError::Memory)?
                .ok_or_else(|| full(&p.name))?;
        }
        for (tenant, c) in self.cfg.tenant_whitelist.clone() {
            self.tenant_whitelist_add(tenant.as_bytes(), c, 0)
                .map_err(|why| {
                    EngineError::Config(ConfigError {
                        param: "tenant_whitelist",
                        value: c.family_prefix() as i64,
                        why: format!("'{tenant}={c}': {why}"),
                    })
                })?;
        }
        Ok(self)
    }

    /// The thresholds of profile `id`.
    pub fn limits(&self, id: ProfileId) -> Limits {
        if id == 0 {
            self.default_limits
        } else {
            self.profiles.limits(id)
        }
    }

    /// The profile named `name`.
    pub fn profile_named(&self, name: &[u8]) -> Option<ProfileId> {
        self.profiles.find(name)
    }

    pub fn profile_name(&self, id: ProfileId) -> String {
        self.profiles.name(id)
    }

    /// Every profile, the default first.
    pub fn profiles(&self) -> Vec<ProfileView> {
        self.profiles.list()
    }

    pub(super) fn profile_ids(&self) -> Vec<ProfileId> {
        self.profiles.list().iter().map(|p| p.id).collect()
    }

    /// The profile `profile_prefix` gives `ip` (0: none does).
    pub fn profile_of(&self, ip: &IpKey) -> ProfileId {
        self.prefix_profiles.get(ip).unwrap_or(0)
    }

    /// True when some prefix is mapped to a profile.
    pub fn has_profile_prefixes(&self) -> bool {
        !self.prefix_profiles.is_empty()
    }

    /// The requests of `method` a profile with `lim` allows per window.
    pub fn method_density(&self, lim: &Limits, method: &[u8]) -> Option<u32> {
        let i = self
            .method_names
            .iter()
            .position(|n| n.as_bytes().eq_ignore_ascii_case(method))?;
        Some(lim.methods[i]).filter(|&d| d > 0)
    }

    /// A profile's per-method limits as `pike_method_density` writes them.
    pub fn method_density_text(&self, lim: &Limits) -> String {
        self.method_names
            .iter()
            .zip(lim.methods)
            .filter(|(_, d)| *d > 0)
            .map(|(m, d)| format!("{m}:{d}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// True when some profile limits some method: flood checks then need
    /// the request's method.
    pub fn limits_methods(&self) -> bool {
        !self.method_names.is_empty()
    }

    /// Sets a profile (new or changed) from its text, `name: k=v; ...`,
    /// over the global settings; for a reload. The methods it limits must
    /// be among those limited at start-up, and its windows within the
    /// longest declared then (the tables keep counts that long).
    pub fn set_profile(&self, text: &str) -> Result<ProfileId, String> {
        let def = ProfileDef::parse(text, &self.cfg)?;
        if def.name == DEFAULT_NAME {
            return Err(format!(
                "'{DEFAULT_NAME}' is the modparams' own profile: change them and restart"
            ));
        }
        if self.profiled.is_none() {
            return Err(
                "no profile was declared at start-up, so no table counts per profile (declare one with modparam profile)"
                    .to_owned(),
            );
        }
        for l in &def.cfg.method_limits {
            if !self.method_names.contains(&l.method) {
                return Err(format!(
                    "profile '{}': {} had no limit at start-up (methods limited: {})",
                    def.name,
                    l.method,
                    self.method_names.join(", ")
                ));
            }
        }
        let longest = Self::longest_windows(&self.cfg);
        for (w, max, what) in [
            (
                def.cfg.pike_sampling_time_s,
                longest.pike_window_us,
                "pike_sampling_time",
            ),
            (
                def.cfg.auth_fail_window_s,
                longest.auth_window_us,
                "auth_fail_window",
            ),
            (
                def.cfg.report_window_s,
                longest.report_window_us,
                "report_window",
            ),
            (
                def.cfg.user_fail_window_s,
                longest.user_fail_window_us,
                "user_fail_window",
            ),
        ] {
            if w as u64 * US > max {
                return Err(format!(
                    "profile '{}': {what} {w}s is longer than the {}s the tables were sized for at start-up",
                    def.name,
                    max / US
                ));
            }
        }
        let lim = Limits::of(&def.cfg, &self.method_names, def.dry_run, def.tenant_bans);
        self.profiles
            .put(&def.name, &lim)
            .map_err(|e| format!("profile '{}': {e}", def.name))?
            .ok_or_else(|| {
                format!(
                    "profile '{}': all {} profile slots are in use",
                    def.name,
                    super::profile::MAX_PROFILES
                )
            })
    }

    /// True when a check with `scope` takes the plain path.
    fn plain(&self, scope: &Scope) -> bool {
        scope.profile == 0 && scope.tenant == 0 && !self.default_limits.dry_run
    }

    // ----- tenants -----

    /// The number of tenant `label`, numbering it on first sight; None
    /// (counted in `tenants_overflow`) once `max_tenants` are numbered.
    pub fn tenant(
        &self,
        label: &[u8],
        now_us: u64,
    ) -> Result<Option<(TenantId, bool)>, TableError> {
        let name = TenantName::cut(label);
        let cap = self.cfg.max_tenants;
        let head = self.tenant_head;
        let r = self.tenants.upsert(&name, now_us, |slot, _| {
            if slot.id != 0 {
                return Some((slot.id, false));
            }
            let n = head
                .issued
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < cap).then_some(n + 1)
                })
                .ok()?;
            slot.id = n + 1;
            Some((n + 1, true))
        });
        let r = match r {
            Err(TableError::Full) => None,
            r => r?,
        };
        if r.is_none() {
            head.overflow.fetch_add(1, Ordering::Relaxed);
        }
        Ok(r)
    }

    /// The counters of tenant `id`.
    pub fn tenant_counters(&self, id: TenantId) -> Option<&'static TenantCounters> {
        self.tenant_counters.get((id as usize).checked_sub(1)?)
    }

    /// Claims the registration of tenant `id`'s statistics: true for the
    /// one caller that is to register them, once the previous tenant's are.
    pub fn claim_tenant_stats(&self, id: TenantId) -> bool {
        id > 0
            && self
                .tenant_head
                .stats_registered
                .compare_exchange(id - 1, id, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }

    /// Checks whose tenant found no room (`max_tenants`).
    pub fn tenants_overflow(&self) -> u64 {
        self.tenant_head.overflow.load(Ordering::Relaxed)
    }

    /// Every tenant numbered so far: its label and number, by number.
    pub fn tenants(&self) -> Result<Vec<(String, TenantId)>, TableError> {
        let mut out = Vec::new();
        for i in 0..self.tenants.bucket_count() {
            self.tenants.retain_bucket(i, 0, |k, slot, _| {
                if slot.id != 0 {
                    out.push((String::from_utf8_lossy(k.as_bytes()).into_owned(), slot.id));
                }
                true
            })?;
        }
        out.sort_by_key(|t| t.1);
        Ok(out)
    }

    /// The label of tenant `id`.
    pub fn tenant_label(&self, id: TenantId) -> Option<String> {
        self.tenants()
            .ok()?
            .into_iter()
            .find(|t| t.1 == id)
            .map(|t| t.0)
    }

    /// Whitelists `c` for tenant `label`'s traffic only; false if it was
    /// already.
    pub fn tenant_whitelist_add(
        &self,
        label: &[u8],
        c: Cidr,
        now_us: u64,
    ) -> Result<bool, WhitelistChange> {
        self.cfg
            .check_breadth(&c)
            .map_err(WhitelistChange::TooBroad)?;
        let full = || {
            WhitelistChange::Refused(super::whitelist::WhitelistError::Full {
                capacity: self.tenant_wl.capacity(),
            })
        };
        let (id, _) = self.tenant(label, now_us).ok().flatten().ok_or_else(full)?;
        let key = key_for(id, &c);
        self.tenant_wl_lengths.mark(key.target.prefix);
        self.tenant_wl
            .upsert(&key, now_us, |p, found| {
                let new = found == Found::Created || !p.0;
                *p = Present(true);
                new
            })
            .map_err(|_| full())
    }

    /// Takes `c` off tenant `label`'s whitelist; false if it was not there.
    pub fn tenant_whitelist_remove(&self, label: &[u8], c: &Cidr) -> Result<bool, TableError> {
        let Some(id) = self.tenant_id_if_known(label)? else {
            return Ok(false);
        };
        Ok(self.tenant_wl.remove(&key_for(id, c), 0)?.is_some())
    }

    /// The tenants' whitelist entries: (tenant, prefix).
    pub fn tenant_whitelist(&self) -> Result<Vec<(String, Cidr)>, TableError> {
        let names = self.tenants()?;
        let mut out = Vec::new();
        for i in 0..self.tenant_wl.bucket_count() {
            self.tenant_wl.retain_bucket(i, 0, |k, p, _| {
                if p.0 {
                    let t = names.iter().find(|n| n.1 == k.tenant).map(|n| n.0.clone());
                    out.push((t.unwrap_or_default(), k.target));
                }
                true
            })?;
        }
        out.sort();
        Ok(out)
    }

    /// The number of tenant `label`, if it has been named (never numbers
    /// a new one).
    pub fn tenant_id_if_known(&self, label: &[u8]) -> Result<Option<TenantId>, TableError> {
        Ok(self
            .tenants
            .get(&TenantName::cut(label), 0, |s| s.id)?
            .filter(|&id| id != 0))
    }

    /// True when `ip` is on tenant `tenant`'s own whitelist.
    pub fn tenant_whitelisted(&self, tenant: TenantId, ip: &IpKey) -> Result<bool, TableError> {
        if tenant == 0 || !self.tenant_wl_lengths.any() {
            return Ok(false);
        }
        for c in self.tenant_wl_lengths.candidates(ip) {
            if self.tenant_wl.get(&key_for(tenant, &c), 0, |p| p.0)? == Some(true) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The tenant-scoped ban covering `ip` for `tenant`, if any.
    fn tenant_ban(
        &self,
        tenant: TenantId,
        ip: &IpKey,
        now_us: u64,
        hit: bool,
    ) -> Result<Option<BanRecord>, TableError> {
        if tenant == 0 || !self.tenant_ban_lengths.any() {
            return Ok(None);
        }
        for c in self.tenant_ban_lengths.candidates(ip) {
            let key = key_for(tenant, &c);
            let found = self.tenant_bans.get(&key, now_us, |b| {
                if hit {
                    b.hits = b.hits.saturating_add(1);
                }
                *b
            })?;
            if let Some(ban) = found {
                return Ok(Some(BanRecord {
                    target: key.target,
                    ban,
                }));
            }
        }
        Ok(None)
    }

    /// Tenant-scoped bans in force: (tenant, ban).
    pub fn tenant_bans(&self, now_us: u64) -> Result<Vec<(TenantId, BanRecord)>, TableError> {
        let mut out = Vec::new();
        for i in 0..self.tenant_bans.bucket_count() {
            self.tenant_bans.retain_bucket(i, now_us, |k, b, _| {
                if b.is_active(now_us) {
                    out.push((
                        k.tenant,
                        BanRecord {
                            target: k.target,
                            ban: *b,
                        },
                    ));
                }
                true
            })?;
        }
        Ok(out)
    }

    /// Lifts tenant `tenant`'s ban on `target`.
    pub fn tenant_unban(
        &self,
        tenant: TenantId,
        target: &Cidr,
        now_us: u64,
    ) -> Result<Option<BanRecord>, TableError> {
        let key = key_for(tenant, target);
        Ok(self
            .tenant_bans
            .remove(&key, now_us)?
            .filter(|b| b.is_active(now_us))
            .map(|ban| BanRecord {
                target: key.target,
                ban,
            }))
    }

    /// The sources with the most requests for tenant `tenant` in the
    /// current flood window of the default profile.
    pub fn top_tenant_sources(
        &self,
        tenant: TenantId,
        n: usize,
        now_us: u64,
    ) -> Result<Vec<(Cidr, u32)>, TableError> {
        let w = self.pike_window_us();
        let mut all = Vec::new();
        for i in 0..self.tenant_sources.bucket_count() {
            self.tenant_sources.retain_bucket(i, now_us, |k, s, _| {
                let c = s.requests.total(now_us, w);
                if k.tenant == tenant && c > 0 {
                    all.push((self.unit_target(&k.target.addr), c));
                }
                true
            })?;
        }
        all.sort_unstable_by(|a: &(Cidr, u32), b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        all.truncate(n);
        Ok(all)
    }

    /// The tables of profiles, tenants, dry run and decisions: (name,
    /// entries, bytes each), as [`Engine::rule_tables`] lists them.
    pub(super) fn scoped_tables(&self) -> Vec<(&'static str, usize, usize)> {
        use super::table::Table;
        use super::tenant::TenantSlot;
        let mut v = Vec::new();
        if let Some(t) = &self.profiled {
            v.push((
                "profile counts",
                t.capacity(),
                Table::<ProfiledKey, super::source::ProfiledWatch>::bytes_per_entry(),
            ));
        }
        v.extend([
            (
                "dry-run bans",
                self.shadow.capacity(),
                Table::<ScopedKey, Ban>::bytes_per_entry(),
            ),
            (
                "tenants",
                self.tenants.capacity(),
                Table::<TenantName, TenantSlot>::bytes_per_entry()
                    + std::mem::size_of::<TenantCounters>(),
            ),
            (
                "tenant sources",
                self.tenant_sources.capacity(),
                Table::<ScopedKey, super::source::Watch>::bytes_per_entry(),
            ),
            (
                "tenant whitelist",
                self.tenant_wl.capacity(),
                Table::<ScopedKey, Present>::bytes_per_entry(),
            ),
            (
                "tenant bans",
                self.tenant_bans.capacity(),
                Table::<ScopedKey, Ban>::bytes_per_entry(),
            ),
            (
                "decisions",
                self.ring.capacity(),
                std::mem::size_of::<Decision>(),
            ),
        ]);
        v
    }

    // ----- decisions -----

    /// Records a decision: in the shared ring, and for this process's
    /// caller to log.
    pub(super) fn decided(&self, rec: &BanRecord, verdict: Verdict, f: &Facts, now_us: u64) {
        let offenses = match (verdict, rec.ban.reason) {
            (Verdict::Ban, r) if r != Reason::Manual => self
                .history
                .get(&rec.target, now_us, |o| o.offenses)
                .ok()
                .flatten()
                .unwrap_or(1),
            _ => 1,
        };
        let ban_s = if rec.ban.is_permanent() {
            0
        } else {
            ((rec.ban.expires_us.saturating_sub(rec.ban.created_us) + US / 2) / US) as u32
        };
        let d = Decision {
            at_us: now_us,
            ip: f.ip,
            target: rec.target,
            rule: rec.ban.reason,
            verdict,
            count: f.count,
            threshold: f.threshold,
            window_s: f.window_s,
            ban_s,
            offenses,
            profile: f.scope.profile,
            tenant: f.scope.tenant,
        };
        if !self.ring.push(d) {
            Stats::inc(&self.stats.errors);
        }
        let mut v = self.decided.lock();
        if v.len() < LAPSED_CAP {
            v.push(d);
        }
        self.mark_pending();
    }

    /// Decisions this process made since the last call.
    pub fn drain_decided(&self) -> Vec<Decision> {
        std::mem::take(&mut *self.decided.lock())
    }

    /// The latest decisions, newest first, at most `n`; only those
    /// concerning `ip` when given.
    pub fn decisions(&self, n: usize, ip: Option<&IpKey>) -> Vec<Decision> {
        self.ring
            .newest(n, |d| ip.map_or(true, |ip| d.concerns(ip)))
    }

    /// Decisions recorded since start-up, and how many the ring keeps.
    pub fn decisions_recorded(&self) -> (u64, usize) {
        (self.ring.recorded(), self.ring.capacity())
    }

    // ----- scoped checks -----

    /// What stops a check of `ip` under `scope` before it counts.
    pub(super) fn gate(
        &self,
        scope: Scope,
        lim: &Limits,
        ip: &IpKey,
        now_us: u64,
        hit: bool,
    ) -> Result<Option<Gate>, TableError> {
        if self.whitelist.contains(ip) || self.tenant_whitelisted(scope.tenant, ip)? {
            return Ok(Some(Gate::Whitelisted));
        }
        if let Some((_, ban)) = self.find_ban(ip, now_us, hit)? {
            return Ok(Some(Gate::Banned(ban.reason)));
        }
        if let Some(rec) = self.tenant_ban(scope.tenant, ip, now_us, hit)? {
            return Ok(Some(Gate::Banned(rec.ban.reason)));
        }
        if lim.dry_run {
            let key = self.shadow_key(scope, lim, &self.ban_target(ip));
            if let Some(b) = self.shadow.get(&key, now_us, |b| *b)? {
                return Ok(Some(Gate::DryRun(b.reason)));
            }
        }
        Ok(None)
    }

    fn shadow_key(&self, scope: Scope, lim: &Limits, target: &Cidr) -> ScopedKey {
        ScopedKey {
            tenant: if lim.tenant_bans { scope.tenant } else { 0 },
            profile: scope.profile,
            target: *target,
        }
    }

    /// Bans `facts.ip` for a rule as its profile says: for everyone, for
    /// the request's tenant, or (dry run) only on paper.
    pub(super) fn decide_ban(
        &self,
        lim: &Limits,
        reason: Reason,
        base_s: u32,
        note: Option<&super::Note>,
        facts: &Facts,
        now_us: u64,
    ) -> Result<Decided, TableError> {
        let scope = facts.scope;
        let tenant = if lim.tenant_bans { scope.tenant } else { 0 };
        if !lim.dry_run && tenant == 0 {
            return Ok(Decided::Global(self.rule_ban(
                self.ban_target(&facts.ip),
                reason,
                base_s,
                note,
                facts,
                now_us,
            )?));
        }
        let target = self.ban_target(&facts.ip);
        if let Some(refused) = self.refusal(&target) {
            return Ok(Decided::Global(refused));
        }
        let seconds = self.ban_length(&target, reason, base_s, lim, now_us);
        let fresh = Ban {
            reason,
            created_us: now_us,
            expires_us: Self::expiry(now_us, seconds),
            hits: 0,
        };
        let (table, key) = if lim.dry_run {
            (&self.shadow, self.shadow_key(scope, lim, &target))
        } else {
            self.tenant_ban_lengths.mark(target.prefix);
            (&self.tenant_bans, key_for(tenant, &target))
        };
        let r = table.upsert(&key, now_us, |b, found| {
            if found == Found::Existing && b.is_active(now_us) {
                (*b, false)
            } else {
                *b = fresh;
                (fresh, true)
            }
        });
        let (ban, made) = match r {
            Ok(r) => r,
            // No room to remember it: decided all the same, every time.
            Err(TableError::Full) => (fresh, true),
            Err(e) => return Err(e),
        };
        let rec = BanRecord { target, ban };
        if made {
            let verdict = if lim.dry_run {
                Stats::inc(&self.stats.dry_run_bans);
                Verdict::DryRun
            } else {
                Stats::inc(&self.stats.bans_created[reason as usize]);
                Stats::inc(&self.stats.tenant_bans);
                Verdict::TenantBan
            };
            self.decided(&rec, verdict, facts, now_us);
        }
        Ok(Decided::Scoped(ScopedBan {
            rec,
            tenant,
            dry_run: lim.dry_run,
            fresh: made,
        }))
    }

    /// Counts a request of a tenant's traffic for `sec_top`.
    fn count_for_tenant(&self, scope: Scope, ip: &IpKey, now_us: u64) {
        let key = ScopedKey {
            tenant: scope.tenant,
            profile: 0,
            target: Cidr::host(self.unit(ip)),
        };
        let w = self.pike_window_us();
        if self
            .tenant_sources
            .upsert(&key, now_us, |s, _| s.requests.add(now_us, w, 1))
            .is_err()
        {
            Stats::inc(&self.stats.errors);
        }
    }

    /// The profiles' table and the key `ip`'s counts have there under
    /// `scope`; None when the check counts in the hosts table (the default
    /// profile, enforcing). A profile whose bans are per tenant counts per
    /// tenant too.
    fn profiled_entry(
        &self,
        scope: Scope,
        lim: &Limits,
        ip: &IpKey,
    ) -> Option<(&Table<ProfiledKey, ProfiledWatch>, ProfiledKey)> {
        let table = self
            .profiled
            .as_ref()
            .filter(|_| scope.profile != 0 || lim.dry_run)?;
        let key = ProfiledKey {
            profile: scope.profile,
            tenant: if lim.tenant_bans { scope.tenant } else { 0 },
            unit: self.unit(ip),
        };
        Some((table, key))
    }

    /// Flood check for one request of `method` from `ip` under `scope`.
    pub fn pike_check_scoped(
        &self,
        scope: Scope,
        ip: &IpKey,
        method: Option<&[u8]>,
        now_us: u64,
    ) -> Result<PikeVerdict, TableError> {
        if self.plain(&scope) {
            return self.pike_check_method(ip, method, now_us);
        }
        let counters = self.tenant_counters(scope.tenant);
        if counters.is_some() {
            self.count_for_tenant(scope, ip, now_us);
        }
        let v = self.pike_scoped(scope, ip, method, now_us)?;
        if let Some(c) = counters {
            TenantCounters::inc(&c.checked);
            match v {
                PikeVerdict::Banned(_) | PikeVerdict::OverLimitUnbanned => {
                    TenantCounters::inc(&c.blocked)
                }
                PikeVerdict::JustBanned(_) => {
                    TenantCounters::inc(&c.blocked);
                    TenantCounters::inc(&c.bans);
                }
                PikeVerdict::Scoped(b) if b.dry_run => TenantCounters::inc(&c.dry_run_bans),
                PikeVerdict::Scoped(_) => {
                    TenantCounters::inc(&c.blocked);
                    TenantCounters::inc(&c.bans);
                }
                PikeVerdict::DryRunBlocked(_) => TenantCounters::inc(&c.dry_run_blocked),
                PikeVerdict::Allowed | PikeVerdict::Whitelisted => {}
            }
        }
        Ok(v)
    }

    fn pike_scoped(
        &self,
        scope: Scope,
        ip: &IpKey,
        method: Option<&[u8]>,
        now_us: u64,
    ) -> Result<PikeVerdict, TableError> {
        let lim = self.limits(scope.profile);
        let Some((table, key)) = self.profiled_entry(scope, &lim, ip) else {
            // The default profile for a tenant: the tenant's whitelist and
            // bans, then the plain check.
            if self.tenant_whitelisted(scope.tenant, ip)? {
                Stats::inc(&self.stats.pike_checked);
                Stats::inc(&self.stats.whitelisted);
                return Ok(PikeVerdict::Whitelisted);
            }
            if let Some(rec) = self.tenant_ban(scope.tenant, ip, now_us, true)? {
                Stats::inc(&self.stats.pike_checked);
                Stats::inc(&self.stats.pike_blocked);
                Stats::inc(&self.stats.dropped_while_banned);
                return Ok(PikeVerdict::Banned(rec.ban.reason));
            }
            return self.pike_default(scope, ip, method, now_us);
        };
        Stats::inc(&self.stats.pike_checked);
        match self.gate(scope, &lim, ip, now_us, true)? {
            Some(Gate::Whitelisted) => {
                Stats::inc(&self.stats.whitelisted);
                return Ok(PikeVerdict::Whitelisted);
            }
            Some(Gate::Banned(r)) => {
                Stats::inc(&self.stats.pike_blocked);
                Stats::inc(&self.stats.dropped_while_banned);
                return Ok(PikeVerdict::Banned(r));
            }
            Some(Gate::DryRun(r)) => {
                Stats::inc(&self.stats.dry_run_blocked);
                return Ok(PikeVerdict::DryRunBlocked(r));
            }
            None => {}
        }
        let window = lim.pike_window_s as u64 * US;
        let n = table.upsert(&key, now_us, |w, _| {
            w.touch(now_us);
            w.watch.requests.add(now_us, window, 1)
        })?;
        if n <= lim.pike_density {
            if let (Some(m), Some(_)) = (method, &self.methods) {
                if let Some(v) = self.method_check(scope, &lim, ip, m, now_us)? {
                    return Ok(v);
                }
            }
            return Ok(PikeVerdict::Allowed);
        }
        if !lim.dry_run {
            Stats::inc(&self.stats.pike_blocked);
        }
        let facts = Facts {
            ip: *ip,
            count: n,
            threshold: lim.pike_density,
            window_s: lim.pike_window_s,
            scope,
        };
        let d = self.decide_ban(&lim, Reason::Pike, lim.pike_ban_s, None, &facts, now_us)?;
        Ok(pike_verdict(d))
    }

    /// Records one failed authentication from `ip` as `user` under `scope`.
    pub fn auth_fail_scoped(
        &self,
        scope: Scope,
        ip: &IpKey,
        user: Option<&[u8]>,
        now_us: u64,
    ) -> Result<AuthVerdict, TableError> {
        if self.plain(&scope) {
            return self.auth_fail_user(ip, user, now_us);
        }
        let counters = self.tenant_counters(scope.tenant);
        let v = self.auth_scoped(scope, ip, user, now_us)?;
        if let Some(c) = counters {
            TenantCounters::inc(&c.auth_failures);
            match v {
                AuthVerdict::JustBanned(_) => TenantCounters::inc(&c.bans),
                AuthVerdict::Scoped(b) if b.dry_run => TenantCounters::inc(&c.dry_run_bans),
                AuthVerdict::Scoped(_) => TenantCounters::inc(&c.bans),
                _ => {}
            }
        }
        Ok(v)
    }

    fn auth_scoped(
        &self,
        scope: Scope,
        ip: &IpKey,
        user: Option<&[u8]>,
        now_us: u64,
    ) -> Result<AuthVerdict, TableError> {
        let lim = self.limits(scope.profile);
        let Some((table, key)) = self.profiled_entry(scope, &lim, ip) else {
            if self.tenant_whitelisted(scope.tenant, ip)? {
                Stats::inc(&self.stats.auth_failures);
                return Ok(AuthVerdict::Whitelisted);
            }
            if let Some(rec) = self.tenant_ban(scope.tenant, ip, now_us, false)? {
                Stats::inc(&self.stats.auth_failures);
                return Ok(AuthVerdict::AlreadyBanned(rec.ban.reason));
            }
            return self.auth_default(scope, ip, user, now_us);
        };
        Stats::inc(&self.stats.auth_failures);
        match self.gate(scope, &lim, ip, now_us, false)? {
            Some(Gate::Whitelisted) => return Ok(AuthVerdict::Whitelisted),
            Some(Gate::Banned(r)) => return Ok(AuthVerdict::AlreadyBanned(r)),
            Some(Gate::DryRun(r)) => return Ok(AuthVerdict::DryRunBlocked(r)),
            None => {}
        }
        let window = lim.auth_window_s as u64 * US;
        let n = table.upsert(&key, now_us, |w, _| {
            w.touch(now_us);
            w.watch.auth_failures.add(now_us, window, 1)
        })?;
        let v = if n < lim.auth_threshold {
            AuthVerdict::Counted(n)
        } else {
            let facts = Facts {
                ip: *ip,
                count: n,
                threshold: lim.auth_threshold,
                window_s: lim.auth_window_s,
                scope,
            };
            super::rules::auth_verdict(self.decide_ban(
                &lim,
                Reason::Auth,
                lim.auth_ban_s,
                None,
                &facts,
                now_us,
            )?)
        };
        let Some(user) = user.filter(|u| !u.is_empty()) else {
            return Ok(v);
        };
        self.user_failed(&lim, user, now_us)?;
        match v {
            AuthVerdict::Counted(_) => Ok(self
                .enumeration(scope, &lim, ip, user, now_us)?
                .unwrap_or(v)),
            _ => Ok(v),
        }
    }

    /// A source's counts under each profile that has any: (profile,
    /// requests in its flood window, failures in its auth window).
    pub fn profiled_counts(
        &self,
        ip: &IpKey,
        now_us: u64,
    ) -> Result<Vec<(ProfileId, u32, u32)>, TableError> {
        let Some(table) = &self.profiled else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for p in self.profiles.list() {
            // Per-tenant counts of tenant-scoped profiles are not summed here.
            let key = ProfiledKey {
                profile: p.id,
                tenant: 0,
                unit: self.unit(ip),
            };
            let (pw, aw) = (
                p.limits.pike_window_s as u64 * US,
                p.limits.auth_window_s as u64 * US,
            );
            if let Some((r, a)) = table.get(&key, now_us, |w| {
                (
                    w.watch.requests.total(now_us, pw),
                    w.watch.auth_failures.total(now_us, aw),
                )
            })? {
                if r > 0 || a > 0 {
                    out.push((p.id, r, a));
                }
            }
        }
        Ok(out)
    }

    /// The bans dry run pretends are in force over `ip`, by profile.
    pub fn dry_run_bans_of(
        &self,
        ip: &IpKey,
        now_us: u64,
    ) -> Result<Vec<(ScopedKey, Ban)>, TableError> {
        let target = self.ban_target(ip);
        let mut out = Vec::new();
        for i in 0..self.shadow.bucket_count() {
            self.shadow.retain_bucket(i, now_us, |k, b, _| {
                if k.target == target && b.is_active(now_us) {
                    out.push((*k, *b));
                }
                true
            })?;
        }
        Ok(out)
    }
}
