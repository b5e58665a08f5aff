//! The rules that look past one loud address: repeat offenders, prefix
//! aggregation, per-method floods, accounts under attack, enumeration,
//! scanners and abuse reported by the script, and the notes bans carry.
//!
//! Each rule bans through the same path as every other ban (`put_ban`), so
//! its decisions are counted by reason, raised as events, persisted and
//! listed like any ban. What a rule decides on the side of another
//! operation (a prefix banned when one more host ban tipped it over, an
//! account blocked) is queued in `side` and drained by the caller, as
//! lapsed bans are.

use super::decision::Verdict;
use super::history::Recidive;
use super::methods::MethodKey;
use super::note::{Note, NoteEntry};
use super::profile::Limits;
use super::scoped::{Decided, Scope};
use super::stats::Stats;
use super::table::TableError;
use super::users::UserKey;
use super::{
    AuthVerdict, BanOutcome, BanRecord, Cidr, Engine, Facts, IpKey, Offense, PikeVerdict, Reason,
    LAPSED_CAP, US,
};

/// A decision made on the side of another operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The prefix was banned: `count` units inside it were banned at once
    /// (`subnet_ban_threshold`).
    SubnetBanned { rec: BanRecord, count: u32 },
    /// The prefix reached the threshold but may not be banned (it holds a
    /// whitelisted address, or is broader than the minimum prefix).
    SubnetRefused {
        subnet: Cidr,
        count: u32,
        why: BanOutcome,
    },
    /// An account was blocked.
    UserBlocked(UserBlock),
}

/// An account blocked for failing authentication too often.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserBlock {
    pub user: UserKey,
    /// Failures in `user_fail_window` that blocked it.
    pub failures: u32,
    pub blocked_us: u64,
    pub ends_us: u64,
}

/// One account as listed to operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserInfo {
    pub user: UserKey,
    /// Failures in the current `user_fail_window`.
    pub failures: u32,
    /// When its block was made and ends, if it is blocked.
    pub blocked: Option<(u64, u64)>,
}

/// Outcome of a report of abuse (`sec_report`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportVerdict {
    /// Weight reported in the window so far, below the threshold.
    Counted(u32),
    Whitelisted,
    /// This report took the weight in the window (given) to the threshold.
    JustBanned(BanRecord, u32),
    AlreadyBanned(Reason),
    OverLimitUnbanned,
    Scoped(super::ScopedBan, u32),
    DryRunBlocked(Reason),
}

/// Outcome of a scanner check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScannerVerdict {
    /// No signature in the header (or no header).
    Clean,
    Whitelisted,
    JustBanned(BanRecord),
    AlreadyBanned(Reason),
    OverLimitUnbanned,
    Scoped(super::ScopedBan),
    DryRunBlocked(Reason),
}

/// An authentication rule's decision as its verdict.
pub(super) fn auth_verdict(d: Decided) -> AuthVerdict {
    match d {
        Decided::Scoped(b) if b.fresh => AuthVerdict::Scoped(b),
        Decided::Scoped(b) if b.dry_run => AuthVerdict::DryRunBlocked(b.rec.ban.reason),
        Decided::Scoped(b) => AuthVerdict::AlreadyBanned(b.rec.ban.reason),
        Decided::Global(BanOutcome::Created(rec)) => AuthVerdict::JustBanned(rec),
        Decided::Global(BanOutcome::Updated(rec) | BanOutcome::AlreadyBanned(rec)) => {
            AuthVerdict::AlreadyBanned(rec.ban.reason)
        }
        Decided::Global(BanOutcome::TableFull) => AuthVerdict::OverLimitUnbanned,
        Decided::Global(BanOutcome::Whitelisted(_) | BanOutcome::TooBroad(_)) => {
            AuthVerdict::Whitelisted
        }
    }
}

/// Which of `names` `method` is (without regard to case).
fn method_index_of(names: &[String], method: &[u8]) -> Option<usize> {
    names
        .iter()
        .position(|n| n.as_bytes().eq_ignore_ascii_case(method))
}

impl Engine {
    fn recidive(lim: &Limits) -> Recidive {
        Recidive {
            window_s: lim.recidive_window_s,
            multiplier: lim.ban_multiplier,
            max_s: lim.ban_time_max_s,
        }
    }

    fn escalates(&self) -> bool {
        self.cfg.recidive_window_s > 0
    }

    /// How long a rule's ban of `target` lasts: the rule's own length, or,
    /// for a repeat offender, the previous ban's times `ban_multiplier`
    /// up to `ban_time_max`. Manual bans keep the length asked for.
    pub(super) fn ban_length(
        &self,
        target: &Cidr,
        reason: Reason,
        base_s: u32,
        lim: &Limits,
        now_us: u64,
    ) -> u32 {
        if reason == Reason::Manual || !self.escalates() || lim.recidive_window_s == 0 {
            return base_s;
        }
        let r = Self::recidive(lim);
        self.history
            .get(target, now_us, |o| o.escalate(now_us / US, base_s, &r))
            .ok()
            .flatten()
            .unwrap_or(base_s)
    }

    /// Bans `target` for a rule: the rule's length, escalated for a repeat
    /// offender; a ban already in force is left as it is.
    /// The decision, with `facts`, is recorded when a ban is made or
    /// refused for want of room.
    pub(super) fn rule_ban(
        &self,
        target: Cidr,
        reason: Reason,
        base_s: u32,
        note: Option<&Note>,
        facts: &Facts,
        now_us: u64,
    ) -> Result<BanOutcome, TableError> {
        let lim = self.limits(facts.scope.profile);
        let seconds = self.ban_length(&target, reason, base_s, &lim, now_us);
        let o = self.ban_inner(target, seconds, reason, note, now_us)?;
        match o {
            BanOutcome::Created(rec) => self.decided(&rec, Verdict::Ban, facts, now_us),
            BanOutcome::TableFull => {
                let rec = BanRecord {
                    target,
                    ban: super::Ban {
                        reason,
                        created_us: now_us,
                        expires_us: Self::expiry(now_us, seconds),
                        hits: 0,
                    },
                };
                self.decided(&rec, Verdict::Refused, facts, now_us)
            }
            _ => {}
        }
        Ok(o)
    }

    /// What follows a ban put in force (`created`: a new one, not a
    /// replaced one): its history is recorded and, for a unit's new ban,
    /// its prefix's count rises and may ban the prefix. Never called with
    /// a bucket lock held.
    pub(super) fn after_ban(&self, rec: &BanRecord, created: bool, now_us: u64) {
        if rec.ban.reason != Reason::Manual && self.escalates() {
            let len_s = if rec.ban.is_permanent() {
                0
            } else {
                ((rec.ban.expires_us.saturating_sub(rec.ban.created_us) + US / 2) / US) as u32
            };
            let window = self.cfg.recidive_window_s;
            match self.history.upsert(&rec.target, now_us, |o, _| {
                o.record(rec.ban.created_us / US, len_s, window) && o.offenses > 1
            }) {
                Ok(true) => Stats::inc(&self.stats.bans_repeat),
                Ok(false) => {}
                Err(_) => Stats::inc(&self.stats.errors),
            }
        }
        if !created || !self.is_unit(&rec.target) {
            return;
        }
        let Some(subnet) = self.subnet_of(&rec.target) else {
            return;
        };
        let count = match self.subnets.upsert(&subnet, now_us, |c, _| {
            c.count += 1;
            c.count
        }) {
            Ok(n) => n,
            Err(_) => {
                Stats::inc(&self.stats.errors);
                return;
            }
        };
        if count < self.cfg.subnet_ban_threshold {
            return;
        }
        let facts = Facts {
            ip: subnet.addr,
            count,
            threshold: self.cfg.subnet_ban_threshold,
            ..Facts::default()
        };
        let side = match self.rule_ban(
            subnet,
            Reason::Subnet,
            self.cfg.subnet_ban_time_s,
            None,
            &facts,
            now_us,
        ) {
            Ok(BanOutcome::Created(rec)) => Side::SubnetBanned { rec, count },
            Ok(BanOutcome::Updated(_) | BanOutcome::AlreadyBanned(_)) => return,
            Ok(why) => Side::SubnetRefused { subnet, count, why },
            Err(_) => {
                Stats::inc(&self.stats.errors);
                return;
            }
        };
        self.push_side(side);
    }

    /// The prefix whose count a unit's ban adds to, when aggregation is
    /// on and the prefix is broader than the unit.
    fn subnet_of(&self, unit: &Cidr) -> Option<Cidr> {
        let prefix = if unit.addr.is_v4() {
            96 + self.cfg.subnet_prefix_v4 as u8
        } else {
            self.cfg.subnet_prefix_v6 as u8
        };
        (self.cfg.subnet_ban_threshold > 0 && prefix < unit.prefix)
            .then(|| Cidr::new(unit.addr, prefix))
    }

    /// A ban ended (expired, lifted, flushed): its place in the budget, its
    /// prefix's count and its note are given back. May run with a bucket
    /// lock of the hosts or bans table held (never of these tables).
    pub(super) fn ban_gone(&self, rec: &BanRecord) {
        self.release_ban();
        if self.is_unit(&rec.target) {
            if let Some(subnet) = self.subnet_of(&rec.target) {
                let _ = self.subnets.get(&subnet, 0, |c| {
                    c.count = c.count.saturating_sub(1);
                });
            }
        }
        // Only this ban's note: a later ban of the target may have its own.
        let _ = self.notes.get(&rec.target, 0, |e| {
            if e.created_us == rec.ban.created_us {
                *e = NoteEntry::default();
            }
        });
    }

    /// Keeps `note` with a ban just put in force; a replaced ban without a
    /// new note keeps its old one, with the new expiry.
    pub(super) fn keep_note(
        &self,
        rec: &BanRecord,
        note: Option<&Note>,
        now_us: u64,
    ) -> Result<(), TableError> {
        let r = match note.filter(|n| !n.is_empty()) {
            Some(n) => self
                .notes
                .upsert(&rec.target, now_us, |e, _| {
                    *e = NoteEntry {
                        created_us: rec.ban.created_us,
                        expires_us: rec.ban.expires_us,
                        note: *n,
                    }
                })
                .map(|_| ()),
            None => self
                .notes
                .get(&rec.target, now_us, |e| {
                    if e.created_us == rec.ban.created_us {
                        e.expires_us = rec.ban.expires_us;
                    }
                })
                .map(|_| ()),
        };
        match r {
            // The ban stands without its note; the full table is counted.
            Err(TableError::Full) => Ok(()),
            r => r,
        }
    }

    /// The note of a ban, if it has one.
    pub fn note_of(&self, rec: &BanRecord, now_us: u64) -> Result<Option<Note>, TableError> {
        Ok(self
            .notes
            .get(&rec.target, now_us, |e| {
                (e.created_us == rec.ban.created_us).then_some(e.note)
            })?
            .flatten())
    }

    /// The history of `target` (a unit or a prefix), while remembered.
    pub fn offense(&self, target: &Cidr, now_us: u64) -> Result<Option<Offense>, TableError> {
        self.history.get(target, now_us, |o| *o)
    }

    /// Installs a history read from the database, unless a later one is
    /// already known.
    pub fn restore_offense(
        &self,
        target: &Cidr,
        o: Offense,
        now_us: u64,
    ) -> Result<(), TableError> {
        if !self.escalates() {
            return Ok(());
        }
        self.history.upsert(target, now_us, |cur, _| {
            if cur.offenses == 0 || o.last_start_s > cur.last_start_s {
                *cur = o;
            }
        })
    }

    /// The per-method limit for one request already allowed by the
    /// overall one: `None` when `method` has no limit or is within it.
    pub(super) fn method_check(
        &self,
        scope: Scope,
        lim: &Limits,
        ip: &IpKey,
        method: &[u8],
        now_us: u64,
    ) -> Result<Option<PikeVerdict>, TableError> {
        let Some(table) = &self.methods else {
            return Ok(None);
        };
        let Some(i) = method_index_of(&self.method_names, method) else {
            return Ok(None);
        };
        let density = lim.methods[i];
        if density == 0 {
            return Ok(None);
        }
        let unit = self.unit_target(ip);
        let window = lim.pike_window_s as u64 * US;
        let key = MethodKey {
            unit: unit.addr,
            method: i as u8,
            profile: scope.profile,
        };
        let n = table.upsert(&key, now_us, |c, _| {
            c.last_s = (now_us / US) as u32;
            c.requests.add(now_us, window, 1)
        })?;
        if n <= density {
            return Ok(None);
        }
        Stats::inc(&self.stats.pike_blocked);
        let facts = Facts {
            ip: *ip,
            count: n,
            threshold: density,
            window_s: lim.pike_window_s,
            scope,
        };
        let d = self.decide_ban(lim, Reason::Method, lim.pike_ban_s, None, &facts, now_us)?;
        Ok(Some(super::scoped::pike_verdict(d)))
    }

    /// Counts a failure against `user` across all sources; past
    /// `user_fail_threshold` in `user_fail_window` the account is blocked.
    pub(super) fn user_failed(
        &self,
        lim: &Limits,
        user: &[u8],
        now_us: u64,
    ) -> Result<(), TableError> {
        let threshold = lim.user_fail_threshold;
        if threshold == 0 {
            return Ok(());
        }
        let key = UserKey::cut(user);
        let window = lim.user_fail_window_s as u64 * US;
        let ends = now_us + lim.user_block_s as u64 * US;
        let r = self.users.upsert(&key, now_us, |st, _| {
            if st.is_blocked(now_us) {
                return None;
            }
            st.last_fail_s = (now_us / US) as u32;
            let n = st.failures.add(now_us, window, 1);
            if n < threshold {
                return None;
            }
            st.blocked_us = now_us;
            st.block_ends_us = ends;
            // Failures before the block do not count against the account
            // once it is over.
            st.failures.clear();
            Some(n)
        });
        match r {
            Ok(Some(failures)) => {
                Stats::inc(&self.stats.users_blocked);
                self.push_side(Side::UserBlocked(UserBlock {
                    user: key,
                    failures,
                    blocked_us: now_us,
                    ends_us: ends,
                }));
                Ok(())
            }
            Ok(None) => Ok(()),
            // Every slot of the bucket holds a blocked account: counted.
            Err(TableError::Full) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The enumeration rule: `ip` failed as `user`; once it failed for
    /// `enum_threshold` distinct usernames within `auth_fail_window` it is
    /// banned, whatever the per-user counts.
    pub(super) fn enumeration(
        &self,
        scope: Scope,
        lim: &Limits,
        ip: &IpKey,
        user: &[u8],
        now_us: u64,
    ) -> Result<Option<AuthVerdict>, TableError> {
        let threshold = lim.enum_threshold;
        if threshold == 0 {
            return Ok(None);
        }
        let unit = self.unit_target(ip);
        let fp = self.fingerprints.hash_one(user) as u32;
        let (now_s, window_s) = ((now_us / US) as u32, lim.auth_window_s);
        let n = self.suspects.upsert(&unit.addr, now_us, |s, _| {
            s.user_failed(fp, now_s, window_s)
        })?;
        if n < threshold {
            return Ok(None);
        }
        let facts = Facts {
            ip: *ip,
            count: n,
            threshold,
            window_s,
            scope,
        };
        let d = self.decide_ban(lim, Reason::Enum, lim.auth_ban_s, None, &facts, now_us)?;
        Ok(Some(auth_verdict(d)))
    }

    /// Counts `weight` of abuse reported against `ip` (`word` says what,
    /// and becomes the ban's note); at `report_threshold` in
    /// `report_window` the source is banned.
    pub fn report(
        &self,
        ip: &IpKey,
        word: &Note,
        weight: u32,
        now_us: u64,
    ) -> Result<ReportVerdict, TableError> {
        self.report_scoped(Scope::default(), ip, word, weight, now_us)
    }

    /// [`Engine::report`] under a profile and for a tenant.
    pub fn report_scoped(
        &self,
        scope: Scope,
        ip: &IpKey,
        word: &Note,
        weight: u32,
        now_us: u64,
    ) -> Result<ReportVerdict, TableError> {
        Stats::inc(&self.stats.reports);
        let lim = self.limits(scope.profile);
        match self.gate(scope, &lim, ip, now_us, false)? {
            Some(super::scoped::Gate::Whitelisted) => return Ok(ReportVerdict::Whitelisted),
            Some(super::scoped::Gate::Banned(r)) => return Ok(ReportVerdict::AlreadyBanned(r)),
            Some(super::scoped::Gate::DryRun(r)) => return Ok(ReportVerdict::DryRunBlocked(r)),
            None => {}
        }
        let unit = self.unit_target(ip);
        let window = lim.report_window_s as u64 * US;
        let total = self.suspects.upsert(&unit.addr, now_us, |s, _| {
            s.last_report_s = (now_us / US) as u32;
            s.reports.add(now_us, window, weight)
        })?;
        if total < lim.report_threshold {
            return Ok(ReportVerdict::Counted(total));
        }
        let facts = Facts {
            ip: *ip,
            count: total,
            threshold: lim.report_threshold,
            window_s: lim.report_window_s,
            scope,
        };
        let d = self.decide_ban(
            &lim,
            Reason::Report,
            lim.report_ban_s,
            Some(word),
            &facts,
            now_us,
        )?;
        Ok(match d {
            Decided::Scoped(b) if b.fresh => ReportVerdict::Scoped(b, total),
            Decided::Scoped(b) if b.dry_run => ReportVerdict::DryRunBlocked(b.rec.ban.reason),
            Decided::Scoped(b) => ReportVerdict::AlreadyBanned(b.rec.ban.reason),
            Decided::Global(BanOutcome::Created(rec)) => ReportVerdict::JustBanned(rec, total),
            Decided::Global(BanOutcome::Updated(rec) | BanOutcome::AlreadyBanned(rec)) => {
                ReportVerdict::AlreadyBanned(rec.ban.reason)
            }
            Decided::Global(BanOutcome::TableFull) => ReportVerdict::OverLimitUnbanned,
            Decided::Global(BanOutcome::Whitelisted(_) | BanOutcome::TooBroad(_)) => {
                ReportVerdict::Whitelisted
            }
        })
    }

    /// Looks for a scanner's signature in `header` (User-Agent of a
    /// request, Server of a reply) from `ip`; one found bans the source on
    /// the spot. The pattern found, if any, comes with the verdict.
    pub fn scanner_check(
        &self,
        ip: &IpKey,
        header: Option<&[u8]>,
        now_us: u64,
    ) -> Result<(ScannerVerdict, Option<&str>), TableError> {
        self.scanner_check_scoped(Scope::default(), ip, header, now_us)
    }

    /// [`Engine::scanner_check`] under a profile and for a tenant.
    pub fn scanner_check_scoped(
        &self,
        scope: Scope,
        ip: &IpKey,
        header: Option<&[u8]>,
        now_us: u64,
    ) -> Result<(ScannerVerdict, Option<&str>), TableError> {
        Stats::inc(&self.stats.scanner_checks);
        match header.and_then(|h| self.scanner.matches(h)) {
            None => Ok((ScannerVerdict::Clean, None)),
            Some(p) => Ok((self.scanner_found_scoped(scope, ip, p, now_us)?, Some(p))),
        }
    }

    /// The scanners' signatures in force.
    pub fn scanner_patterns(&self) -> &[String] {
        self.scanner.patterns()
    }

    /// A scanner's signature (`pattern`) was seen from `ip`: banned on the
    /// spot.
    pub fn scanner_found(
        &self,
        ip: &IpKey,
        pattern: &str,
        now_us: u64,
    ) -> Result<ScannerVerdict, TableError> {
        self.scanner_found_scoped(Scope::default(), ip, pattern, now_us)
    }

    fn scanner_found_scoped(
        &self,
        scope: Scope,
        ip: &IpKey,
        pattern: &str,
        now_us: u64,
    ) -> Result<ScannerVerdict, TableError> {
        let lim = self.limits(scope.profile);
        match self.gate(scope, &lim, ip, now_us, false)? {
            Some(super::scoped::Gate::Whitelisted) => return Ok(ScannerVerdict::Whitelisted),
            Some(super::scoped::Gate::Banned(r)) => return Ok(ScannerVerdict::AlreadyBanned(r)),
            Some(super::scoped::Gate::DryRun(r)) => return Ok(ScannerVerdict::DryRunBlocked(r)),
            None => {}
        }
        let note = Note::cut(pattern.as_bytes());
        let facts = Facts {
            ip: *ip,
            count: 1,
            threshold: 1,
            scope,
            ..Facts::default()
        };
        let d = self.decide_ban(
            &lim,
            Reason::Scanner,
            lim.scanner_ban_s,
            Some(&note),
            &facts,
            now_us,
        )?;
        Ok(match d {
            Decided::Scoped(b) if b.fresh => ScannerVerdict::Scoped(b),
            Decided::Scoped(b) if b.dry_run => ScannerVerdict::DryRunBlocked(b.rec.ban.reason),
            Decided::Scoped(b) => ScannerVerdict::AlreadyBanned(b.rec.ban.reason),
            Decided::Global(BanOutcome::Created(rec)) => ScannerVerdict::JustBanned(rec),
            Decided::Global(BanOutcome::Updated(rec) | BanOutcome::AlreadyBanned(rec)) => {
                ScannerVerdict::AlreadyBanned(rec.ban.reason)
            }
            Decided::Global(BanOutcome::TableFull) => ScannerVerdict::OverLimitUnbanned,
            Decided::Global(BanOutcome::Whitelisted(_) | BanOutcome::TooBroad(_)) => {
                ScannerVerdict::Whitelisted
            }
        })
    }

    /// Reported weight and distinct failed usernames of `ip`'s unit now.
    pub(super) fn suspect_counts(&self, ip: &IpKey, now_us: u64) -> Result<(u32, u32), TableError> {
        let window = self.cfg.report_window_s as u64 * US;
        let (now_s, enum_s) = ((now_us / US) as u32, self.cfg.auth_fail_window_s);
        Ok(self
            .suspects
            .get(&self.unit(ip), now_us, |s| {
                (
                    s.reports.total(now_us, window),
                    s.users_failed(now_s, enum_s),
                )
            })?
            .unwrap_or((0, 0)))
    }

    /// Forgets what the rules counted against a unit whose ban an operator
    /// lifted, so its next request starts afresh (its history stays).
    pub(super) fn forget_suspect(&self, target: &Cidr, now_us: u64) -> Result<(), TableError> {
        if !self.is_unit(target) {
            return Ok(());
        }
        self.suspects.remove(&target.addr, now_us)?;
        if let Some(t) = &self.methods {
            for i in 0..self.method_names.len() {
                for profile in self.profile_ids() {
                    t.remove(
                        &MethodKey {
                            unit: target.addr,
                            method: i as u8,
                            profile,
                        },
                        now_us,
                    )?;
                }
            }
        }
        Ok(())
    }

    fn user_info(
        key: &UserKey,
        st: &super::users::UserState,
        now_us: u64,
        window: u64,
    ) -> UserInfo {
        UserInfo {
            user: *key,
            failures: st.failures.total(now_us, window),
            blocked: st
                .is_blocked(now_us)
                .then_some((st.blocked_us, st.block_ends_us)),
        }
    }

    /// The account `user`, if it failed lately or is blocked.
    pub fn user(&self, user: &[u8], now_us: u64) -> Result<Option<UserInfo>, TableError> {
        let key = UserKey::cut(user);
        let window = self.cfg.user_fail_window_s as u64 * US;
        self.users
            .get(&key, now_us, |st| Self::user_info(&key, st, now_us, window))
    }

    /// Every account with failures in the window or blocked, blocked ones
    /// first.
    pub fn users_list(&self, now_us: u64) -> Result<Vec<UserInfo>, TableError> {
        let window = self.cfg.user_fail_window_s as u64 * US;
        let mut out = Vec::new();
        for i in 0..self.users.bucket_count() {
            self.users.retain_bucket(i, now_us, |k, st, r| {
                if r != super::table::Retention::Free {
                    out.push(Self::user_info(k, st, now_us, window));
                }
                true
            })?;
        }
        out.sort_by(|a, b| {
            b.blocked
                .is_some()
                .cmp(&a.blocked.is_some())
                .then(b.failures.cmp(&a.failures))
                .then(a.user.as_bytes().cmp(b.user.as_bytes()))
        });
        Ok(out)
    }

    /// Installs a block known from elsewhere (the database at start-up, or
    /// another node); the block put in force, None when it had run out or
    /// the same block was in force already.
    pub fn restore_user_block(
        &self,
        user: &UserKey,
        blocked_us: u64,
        ends_us: u64,
        now_us: u64,
    ) -> Result<Option<UserBlock>, TableError> {
        if ends_us <= now_us {
            return Ok(None);
        }
        let installed = self.users.upsert(user, now_us, |st, _| {
            let same = st.is_blocked(now_us) && st.block_ends_us / US == ends_us / US;
            st.blocked_us = blocked_us.max(1);
            st.block_ends_us = ends_us;
            !same
        })?;
        Ok(installed.then_some(UserBlock {
            user: *user,
            failures: 0,
            blocked_us,
            ends_us,
        }))
    }

    /// Lifts the block of `user` and forgets its failures; the account as
    /// it was, if it was blocked.
    pub fn user_unblock(&self, user: &[u8], now_us: u64) -> Result<Option<UserInfo>, TableError> {
        let key = UserKey::cut(user);
        let window = self.cfg.user_fail_window_s as u64 * US;
        let was = self.users.remove(&key, now_us)?;
        Ok(was
            .filter(|st| st.is_blocked(now_us))
            .map(|st| Self::user_info(&key, &st, now_us, window)))
    }

    /// The rules' tables as allocated: (name, entries, bytes per entry
    /// with its share of its bucket's lock and tags).
    pub fn rule_tables(&self) -> Vec<(&'static str, usize, usize)> {
        use super::history::Offense;
        use super::methods::{MethodCount, MethodKey};
        use super::subnet::BannedInside;
        use super::suspect::Suspect;
        use super::table::Table;
        use super::users::UserState;
        let mut v = vec![
            (
                "offender histories",
                self.history.capacity(),
                Table::<Cidr, Offense>::bytes_per_entry(),
            ),
            (
                "accounts",
                self.users.capacity(),
                Table::<UserKey, UserState>::bytes_per_entry(),
            ),
            (
                "suspects",
                self.suspects.capacity(),
                Table::<IpKey, Suspect>::bytes_per_entry(),
            ),
            (
                "ban notes",
                self.notes.capacity(),
                Table::<Cidr, NoteEntry>::bytes_per_entry(),
            ),
            (
                "prefix counts",
                self.subnets.capacity(),
                Table::<Cidr, BannedInside>::bytes_per_entry(),
            ),
        ];
        if let Some(m) = &self.methods {
            v.push((
                "per-method counts",
                m.capacity(),
                Table::<MethodKey, MethodCount>::bytes_per_entry(),
            ));
        }
        v.extend(self.scoped_tables());
        v
    }

    /// Heap bytes of the compiled scanner patterns (in every process).
    pub fn scanner_bytes(&self) -> usize {
        self.scanner.automaton_bytes()
    }

    fn push_side(&self, s: Side) {
        let mut v = self.side.lock();
        if v.len() < LAPSED_CAP {
            v.push(s);
        }
        self.mark_pending();
    }

    /// Decisions made on the side since the last call (see [`Side`]).
    pub fn drain_side(&self) -> Vec<Side> {
        std::mem::take(&mut *self.side.lock())
    }
}
