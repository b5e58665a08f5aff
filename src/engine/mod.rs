//! The policy engine: windows, buckets, bans and the tables that hold them.
//!
//! Safe Rust over the `shm` primitives; it knows nothing of OpenSIPS. Time is
//! always passed in (microseconds of wall-clock time), which keeps every
//! decision reproducible in tests. Every operation that makes or lifts a ban
//! returns the record it created, replaced or removed, so no caller ever
//! has to look a ban up again (and find a different one).

#![forbid(unsafe_code)]

pub mod bans;
pub mod bucket;
pub mod config;
pub mod ip;
pub mod queue;
pub mod ratelimit;
pub mod source;
pub mod stats;
pub mod table;
pub mod whitelist;
pub mod window;

use std::io;

use ahash::RandomState;

pub use bans::{Ban, Reason};
pub use config::{Config, ConfigError, IntParam, TooBroad, MAX_SECONDS};
pub use ip::{Cidr, IpKey, ParseError};
pub use ratelimit::{KeyError, RlKey};
pub use stats::Stats;
pub use table::TableError;

use bans::PrefixIndex;
use ratelimit::RlState;
use source::SourceState;
use table::{Found, Table, TableCounters};
use whitelist::Whitelist;

use crate::shm::Region;

/// Microseconds per second: the engine's one time unit is the microsecond.
pub const US_PER_S: u64 = 1_000_000;
const US: u64 = US_PER_S;

/// Outcome of a flood check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PikeVerdict {
    Allowed,
    /// Whitelisted: never counted against, never banned.
    Whitelisted,
    /// This request took the source over the threshold; it is banned now
    /// with this ban.
    JustBanned(BanRecord),
    /// Over the threshold but the ban table had no room: refused all the same
    /// (the failure is counted and logged; this never fails open).
    OverLimitUnbanned,
    /// Already banned for the given reason.
    Banned(Reason),
}

/// Outcome of recording an authentication failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthVerdict {
    /// Failures in the window so far, below the threshold.
    Counted(u32),
    Whitelisted,
    JustBanned(BanRecord),
    OverLimitUnbanned,
    AlreadyBanned(Reason),
}

/// Outcome of a ban request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BanOutcome {
    /// The ban made.
    Created(BanRecord),
    /// A ban on the same target was replaced (a manual ban's new expiry, or
    /// an imported ban that differs): the ban now in force.
    Updated(BanRecord),
    /// Already banned by an automatic rule (or the same ban imported
    /// again): the ban left in force.
    AlreadyBanned(BanRecord),
    /// The target is, or contains, this whitelisted prefix: a ban over it
    /// would also ban (and have firewalls drop) a trusted source.
    Whitelisted(Cidr),
    /// The prefix is shorter than `min_prefix_v4` / `min_prefix_v6`.
    TooBroad(TooBroad),
    /// No room in the ban table.
    TableFull,
}

impl BanOutcome {
    /// The ban this outcome put in force, if it changed anything.
    pub fn made(&self) -> Option<&BanRecord> {
        match self {
            BanOutcome::Created(r) | BanOutcome::Updated(r) => Some(r),
            _ => None,
        }
    }
}

/// Why a whitelist change was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum WhitelistChange {
    /// Shorter than the configured minimum prefix, which it names.
    TooBroad(TooBroad),
    Refused(whitelist::WhitelistError),
}

impl std::fmt::Display for WhitelistChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WhitelistChange::TooBroad(why) => why.fmt(f),
            WhitelistChange::Refused(e) => e.fmt(f),
        }
    }
}

/// A ban as listed to operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BanRecord {
    pub target: Cidr,
    pub ban: Ban,
}

#[derive(Debug)]
pub enum EngineError {
    Config(ConfigError),
    Memory(io::Error),
    Table(TableError),
}

impl std::fmt::Display for EngineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EngineError::Config(e) => e.fmt(f),
            EngineError::Memory(e) => write!(f, "cannot set up shared memory: {e}"),
            EngineError::Table(e) => e.fmt(f),
        }
    }
}

impl From<TableError> for EngineError {
    fn from(e: TableError) -> Self {
        EngineError::Table(e)
    }
}

/// Everything known of one source, for operators.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceInfo {
    pub ip: IpKey,
    pub pike_requests: u32,
    pub auth_failures: u32,
    pub last_seen_us: Option<u64>,
    pub ban: Option<BanRecord>,
    pub whitelisted: bool,
}

/// One rate-limit key as listed to operators.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RlRecord {
    pub key: Vec<u8>,
    pub limit: u32,
    pub period_s: u32,
    /// Requests that could pass right now.
    pub available: u32,
}

/// Lapsed bans reclaimed in one process between two drains, at most.
const LAPSED_CAP: usize = 4096;

pub struct Engine {
    cfg: Config,
    /// Bans this process found lapsed and reclaimed outside the sweep;
    /// process-local, drained by the caller after each operation so every
    /// expiry is reported exactly once.
    lapsed: parking_lot::Mutex<Vec<BanRecord>>,
    region_bytes: usize,
    sources: Table<IpKey, SourceState>,
    bans: Table<Cidr, Ban>,
    rl: Table<RlKey, RlState>,
    prefixes: &'static PrefixIndex,
    whitelist: Whitelist,
    stats: &'static Stats,
    queue: Option<queue::ChangeQueue>,
}

impl Engine {
    /// Creates every shared table in one fresh mapping. Call before forking.
    pub fn new(cfg: Config) -> Result<Engine, EngineError> {
        cfg.validate().map_err(EngineError::Config)?;
        let stripes = cfg.lock_stripes as usize;
        let bytes = Table::<IpKey, SourceState>::shm_bytes(cfg.max_tracked_ips as usize, stripes)
            + Table::<Cidr, Ban>::shm_bytes(cfg.max_bans as usize, stripes)
            + Table::<RlKey, RlState>::shm_bytes(cfg.max_rl_keys as usize, stripes)
            + Whitelist::shm_bytes()
            + std::mem::size_of::<PrefixIndex>()
            + std::mem::size_of::<Stats>()
            + queue::ChangeQueue::shm_bytes(cfg.db_queue_size as usize)
            + 64 * 1024;
        let mut region = Region::new(bytes).map_err(EngineError::Memory)?;
        let [a, b, c, d] = crate::shm::random_seeds();
        let hasher = RandomState::with_seeds(a, b, c, d);
        let mem = EngineError::Memory;
        let sources = Table::new(
            &mut region,
            cfg.max_tracked_ips as usize,
            stripes,
            hasher.clone(),
        )
        .map_err(mem)?;
        let bans =
            Table::new(&mut region, cfg.max_bans as usize, stripes, hasher.clone()).map_err(mem)?;
        let rl = Table::new(&mut region, cfg.max_rl_keys as usize, stripes, hasher).map_err(mem)?;
        let prefixes = region.alloc::<PrefixIndex>().map_err(mem)?;
        let whitelist = Whitelist::new(&mut region).map_err(mem)?;
        let stats = region.alloc::<Stats>().map_err(mem)?;
        let queue = match cfg.db_queue_size {
            0 => None,
            n => Some(queue::ChangeQueue::new(&mut region, n as usize).map_err(mem)?),
        };
        whitelist.replace(cfg.whitelist.clone()).map_err(|_| {
            EngineError::Config(ConfigError {
                param: "whitelist",
                value: cfg.whitelist.len() as i64,
                why: format!("too many entries (at most {})", whitelist::MAX_WHITELIST),
            })
        })?;
        Ok(Engine {
            cfg,
            lapsed: parking_lot::Mutex::new(Vec::new()),
            region_bytes: region.len(),
            sources,
            bans,
            rl,
            prefixes,
            whitelist,
            stats,
            queue,
        })
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn stats(&self) -> &'static Stats {
        self.stats
    }

    /// Bytes of shared memory mapped for all tables.
    pub fn shm_bytes(&self) -> usize {
        self.region_bytes
    }

    /// What was really allocated: (table, entries, stripes) for the
    /// sources, bans and rate-limit keys. Entries are exactly the modparams;
    /// a small table gets fewer stripes than `lock_stripes`, since each
    /// stripe holds at least one probe window of slots.
    pub fn layout(&self) -> [(&'static str, usize, usize); 3] {
        [
            (
                "sources",
                self.sources.capacity(),
                self.sources.stripe_count(),
            ),
            ("bans", self.bans.capacity(), self.bans.stripe_count()),
            ("rl keys", self.rl.capacity(), self.rl.stripe_count()),
        ]
    }

    pub fn source_counters(&self) -> &'static TableCounters {
        self.sources.counters()
    }

    pub fn ban_counters(&self) -> &'static TableCounters {
        self.bans.counters()
    }

    pub fn rl_counters(&self) -> &'static TableCounters {
        self.rl.counters()
    }

    pub fn is_whitelisted(&self, ip: &IpKey) -> bool {
        self.whitelist.contains(ip)
    }

    /// The whitelist, for reading; changes go through [`Engine::whitelist_add`]
    /// and its siblings, which enforce the minimum prefix.
    pub fn whitelist(&self) -> &Whitelist {
        &self.whitelist
    }

    /// Adds a prefix to the whitelist; false if it was already there.
    pub fn whitelist_add(&self, c: Cidr) -> Result<bool, WhitelistChange> {
        self.cfg
            .check_breadth(&c)
            .map_err(WhitelistChange::TooBroad)?;
        self.whitelist.add(c).map_err(WhitelistChange::Refused)
    }

    /// Removes a prefix from the whitelist; false if it was not there.
    pub fn whitelist_remove(&self, c: &Cidr) -> Result<bool, WhitelistChange> {
        self.whitelist.remove(c).map_err(WhitelistChange::Refused)
    }

    /// Replaces the whole whitelist; entries shorter than the minimum
    /// prefix are left out and returned with the reason.
    pub fn whitelist_replace(
        &self,
        list: Vec<Cidr>,
    ) -> Result<Vec<(Cidr, TooBroad)>, WhitelistChange> {
        let mut refused = Vec::new();
        let keep = list
            .into_iter()
            .filter(|c| match self.cfg.check_breadth(c) {
                Ok(()) => true,
                Err(why) => {
                    refused.push((*c, why));
                    false
                }
            })
            .collect();
        self.whitelist
            .replace(keep)
            .map_err(WhitelistChange::Refused)?;
        Ok(refused)
    }

    /// Why `target` may not be banned at all, whoever asks.
    fn refusal(&self, target: &Cidr) -> Option<BanOutcome> {
        if let Err(why) = self.cfg.check_breadth(target) {
            return Some(BanOutcome::TooBroad(why));
        }
        self.whitelist
            .overlapping(target)
            .map(BanOutcome::Whitelisted)
    }

    fn source_keep_us(&self) -> u64 {
        (self
            .cfg
            .pike_sampling_time_s
            .max(self.cfg.auth_fail_window_s) as u64)
            * US
    }

    /// The active ban covering `ip`, if any; counts a hit on it when `hit`.
    fn find_ban(
        &self,
        ip: &IpKey,
        now_us: u64,
        hit: bool,
    ) -> Result<Option<(Cidr, Ban)>, TableError> {
        for target in self.prefixes.candidates(ip) {
            let found = self.bans.get(&target, now_us, |b| {
                if hit {
                    b.hits = b.hits.saturating_add(1);
                }
                *b
            })?;
            if let Some(b) = found {
                return Ok(Some((target, b)));
            }
        }
        Ok(None)
    }

    /// The active ban covering `ip`, if any.
    pub fn lookup_ban(&self, ip: &IpKey, now_us: u64) -> Result<Option<BanRecord>, TableError> {
        Ok(self
            .find_ban(ip, now_us, false)?
            .map(|(target, ban)| BanRecord { target, ban }))
    }

    /// Bans `target` for `seconds` (0 = until unbanned).
    pub fn ban(
        &self,
        target: Cidr,
        seconds: u32,
        reason: Reason,
        now_us: u64,
    ) -> Result<BanOutcome, TableError> {
        if let Some(refused) = self.refusal(&target) {
            return Ok(refused);
        }
        let expires_us = if seconds == 0 {
            0
        } else {
            now_us + seconds as u64 * US
        };
        let rec = |b: &Ban| BanRecord { target, ban: *b };
        // Mark before inserting so a concurrent lookup never misses the ban.
        self.prefixes.mark(target.prefix);
        let mut lapsed = None;
        let r = self.bans.upsert_observing(
            &target,
            now_us,
            |b, found| match found {
                Found::Created => {
                    *b = Ban {
                        reason,
                        created_us: now_us,
                        expires_us,
                        hits: 0,
                    };
                    BanOutcome::Created(rec(b))
                }
                Found::Existing if reason == Reason::Manual => {
                    b.reason = reason;
                    b.expires_us = expires_us;
                    BanOutcome::Updated(rec(b))
                }
                Found::Existing => BanOutcome::AlreadyBanned(rec(b)),
            },
            |k, b| {
                lapsed = Some(BanRecord {
                    target: *k,
                    ban: *b,
                })
            },
        );
        self.note_lapsed(lapsed);
        self.ban_result(r, reason)
    }

    /// Counts a created ban; a full table is an outcome, not an error.
    fn ban_result(
        &self,
        r: Result<BanOutcome, TableError>,
        reason: Reason,
    ) -> Result<BanOutcome, TableError> {
        match r {
            Ok(o) => {
                if matches!(o, BanOutcome::Created(_)) {
                    Stats::inc(&self.stats.bans_created[reason as usize]);
                }
                Ok(o)
            }
            Err(TableError::Full) => Ok(BanOutcome::TableFull),
            Err(e) => Err(e),
        }
    }

    /// The queue of decisions waiting to be persisted, when persistence is on.
    pub fn queue(&self) -> Option<&queue::ChangeQueue> {
        self.queue.as_ref()
    }

    /// Installs a ban known from elsewhere (the database at start-up, or
    /// another node) with its original times. `AlreadyBanned` when the same
    /// ban is already in force (nothing changed), `Updated` when it replaced
    /// a different one. Lapsed bans are ignored (`AlreadyBanned` is not
    /// returned for them: nothing is installed and `Ok(None)` says so).
    pub fn restore_ban(
        &self,
        target: Cidr,
        reason: Reason,
        created_us: u64,
        expires_us: u64,
        now_us: u64,
    ) -> Result<Option<BanOutcome>, TableError> {
        if expires_us != 0 && expires_us <= now_us {
            return Ok(None);
        }
        if let Some(refused) = self.refusal(&target) {
            return Ok(Some(refused));
        }
        self.prefixes.mark(target.prefix);
        let mut lapsed = None;
        let fresh = Ban {
            reason,
            created_us: created_us.max(1),
            expires_us,
            hits: 0,
        };
        let rec = |b: &Ban| BanRecord { target, ban: *b };
        let r = self.bans.upsert_observing(
            &target,
            now_us,
            |b, found| match found {
                Found::Created => {
                    *b = fresh;
                    BanOutcome::Created(rec(b))
                }
                // Stored times have whole seconds: the same ban read back
                // from the database differs below one second.
                Found::Existing if b.reason == reason && b.expires_us / US == expires_us / US => {
                    BanOutcome::AlreadyBanned(rec(b))
                }
                Found::Existing => {
                    b.reason = reason;
                    b.created_us = fresh.created_us;
                    b.expires_us = expires_us;
                    BanOutcome::Updated(rec(b))
                }
            },
            |k, b| {
                lapsed = Some(BanRecord {
                    target: *k,
                    ban: *b,
                })
            },
        );
        self.note_lapsed(lapsed);
        self.ban_result(r, reason).map(Some)
    }

    /// Lifts the ban on exactly `target`; returns it if one was active.
    /// Lifting a host's ban also forgets its request and auth-failure
    /// counts: otherwise a source unbanned right after a flood would be
    /// banned again by its very next request.
    pub fn unban(&self, target: &Cidr, now_us: u64) -> Result<Option<BanRecord>, TableError> {
        let mut lapsed = None;
        let r = self.bans.remove_observing(target, now_us, |k, b| {
            lapsed = Some(BanRecord {
                target: *k,
                ban: *b,
            })
        })?;
        self.note_lapsed(lapsed);
        if r.is_some() {
            Stats::inc(&self.stats.bans_removed);
            if target.is_host() {
                self.sources.remove(&target.addr, now_us)?;
            }
        }
        Ok(r.map(|ban| BanRecord {
            target: *target,
            ban,
        }))
    }

    /// Records one event from `ip` in the window `which` picks (`window_s`
    /// long) and returns the count in that window.
    fn count_event(
        &self,
        ip: &IpKey,
        now_us: u64,
        window_s: u32,
        which: impl FnOnce(&mut SourceState) -> &mut window::SlidingWindow,
    ) -> Result<u32, TableError> {
        let keep = self.source_keep_us();
        self.sources.upsert(ip, now_us, |s, _| {
            s.last_seen_us = now_us;
            s.keep_us = keep;
            which(s).add(now_us, window_s as u64 * US, 1)
        })
    }

    /// Flood check for one request from `ip`.
    pub fn pike_check(&self, ip: &IpKey, now_us: u64) -> Result<PikeVerdict, TableError> {
        Stats::inc(&self.stats.pike_checked);
        if self.whitelist.contains(ip) {
            Stats::inc(&self.stats.whitelisted);
            return Ok(PikeVerdict::Whitelisted);
        }
        if let Some((_, ban)) = self.find_ban(ip, now_us, true)? {
            Stats::inc(&self.stats.pike_blocked);
            Stats::inc(&self.stats.dropped_while_banned);
            return Ok(PikeVerdict::Banned(ban.reason));
        }
        let count = self.count_event(ip, now_us, self.cfg.pike_sampling_time_s, |s| {
            &mut s.requests
        })?;
        if count <= self.cfg.pike_density {
            return Ok(PikeVerdict::Allowed);
        }
        Stats::inc(&self.stats.pike_blocked);
        Ok(
            match self.ban(
                Cidr::host(*ip),
                self.cfg.pike_ban_time_s,
                Reason::Pike,
                now_us,
            )? {
                BanOutcome::Created(rec) => PikeVerdict::JustBanned(rec),
                BanOutcome::Updated(_) => PikeVerdict::Banned(Reason::Manual),
                BanOutcome::AlreadyBanned(rec) => {
                    // Another process banned the source between our lookup and
                    // our count: this request is refused by that ban, so it is
                    // a hit on it like any other.
                    self.find_ban(ip, now_us, true)?;
                    Stats::inc(&self.stats.dropped_while_banned);
                    PikeVerdict::Banned(rec.ban.reason)
                }
                // A host is never too broad; a whitelist entry added since the
                // check above covers it.
                BanOutcome::Whitelisted(_) | BanOutcome::TooBroad(_) => PikeVerdict::Whitelisted,
                BanOutcome::TableFull => PikeVerdict::OverLimitUnbanned,
            },
        )
    }

    /// Records one failed authentication from `ip`.
    pub fn auth_fail(&self, ip: &IpKey, now_us: u64) -> Result<AuthVerdict, TableError> {
        Stats::inc(&self.stats.auth_failures);
        if self.whitelist.contains(ip) {
            return Ok(AuthVerdict::Whitelisted);
        }
        if let Some((_, ban)) = self.find_ban(ip, now_us, false)? {
            return Ok(AuthVerdict::AlreadyBanned(ban.reason));
        }
        let count = self.count_event(ip, now_us, self.cfg.auth_fail_window_s, |s| {
            &mut s.auth_failures
        })?;
        if count < self.cfg.auth_fail_threshold {
            return Ok(AuthVerdict::Counted(count));
        }
        Ok(
            match self.ban(
                Cidr::host(*ip),
                self.cfg.auth_ban_time_s,
                Reason::Auth,
                now_us,
            )? {
                BanOutcome::Created(rec) => {
                    // Start afresh once the ban is over.
                    self.sources.get(ip, now_us, |s| s.auth_failures.clear())?;
                    AuthVerdict::JustBanned(rec)
                }
                BanOutcome::Updated(_) => AuthVerdict::AlreadyBanned(Reason::Manual),
                BanOutcome::AlreadyBanned(rec) => AuthVerdict::AlreadyBanned(rec.ban.reason),
                BanOutcome::Whitelisted(_) | BanOutcome::TooBroad(_) => AuthVerdict::Whitelisted,
                BanOutcome::TableFull => AuthVerdict::OverLimitUnbanned,
            },
        )
    }

    /// Takes one request from the budget of `key`: `limit` per `period_s`.
    /// `Ok(false)` when over the limit (the budget is left untouched).
    pub fn rl_check(
        &self,
        key: &RlKey,
        limit: u32,
        period_s: u32,
        now_us: u64,
    ) -> Result<bool, TableError> {
        Stats::inc(&self.stats.rl_checked);
        let period_us = period_s.max(1) as u64 * US;
        let ok = self.rl.upsert(key, now_us, |s, _| {
            s.limit = limit;
            s.period_us = period_us;
            s.last_us = now_us;
            s.bucket.try_take(now_us, limit, period_us)
        })?;
        if !ok {
            Stats::inc(&self.stats.rl_rejected);
        }
        Ok(ok)
    }

    /// Requests left for `key` right now; None for a key not being tracked
    /// (its whole limit is available).
    pub fn rl_available(&self, key: &RlKey, now_us: u64) -> Result<Option<u32>, TableError> {
        self.rl.get(key, now_us, |s| {
            s.bucket.available(now_us, s.limit, s.period_us)
        })
    }

    /// Every active ban.
    pub fn list_bans(&self, now_us: u64) -> Result<Vec<BanRecord>, TableError> {
        let mut out = Vec::new();
        for i in 0..self.bans.stripe_count() {
            self.bans.retain_stripe(i, now_us, |k, b, _| {
                if b.is_active(now_us) {
                    out.push(BanRecord {
                        target: *k,
                        ban: *b,
                    });
                }
                true
            })?;
        }
        Ok(out)
    }

    /// One page of the active bans that `keep` accepts, for listing a ban
    /// table too big for one reply: at most `limit` of them, starting at
    /// `cursor` (0 for the first page), and the cursor of the next page, or
    /// None when the walk is over (the page may then hold fewer than
    /// `limit`; a page that fills up exactly at the end of a stripe may be
    /// followed by one empty page).
    ///
    /// The walk goes stripe by stripe, holding one stripe lock at a time
    /// like [`Engine::list_bans`], so the cost of a page is its stripes, not
    /// the table. A cursor is `stripe * stride + n`: resume in that stripe
    /// at its `n`-th used slot, where the stride is the longest stripe
    /// (stripes differ by at most one slot, see `Table::new`), so a cursor
    /// stays below `max_bans + stripes` and fits the 31 bits an MI number
    /// keeps. It is a position, not a snapshot: a ban made or lifted in an
    /// already-walked part of its stripe while paging shifts the rest by
    /// one, so a ban may be missed or listed twice, like any live listing;
    /// when nothing changes, every ban is listed exactly once.
    pub fn bans_page(
        &self,
        cursor: u64,
        limit: usize,
        now_us: u64,
        mut keep: impl FnMut(&BanRecord) -> bool,
    ) -> Result<(Vec<BanRecord>, Option<u64>), TableError> {
        let stripes = self.bans.stripe_count() as u64;
        let stride = (self.bans.capacity() as u64).div_ceil(stripes);
        let limit = limit.max(1);
        let mut out = Vec::new();
        let (first, mut skip) = (cursor / stride, cursor % stride);
        for s in first..stripes {
            // Position of the first match past a full page, in this stripe.
            let mut resume = None;
            let mut pos = 0u64;
            self.bans.retain_stripe(s as usize, now_us, |k, b, _| {
                let at = pos;
                pos += 1;
                if at < skip || resume.is_some() || !b.is_active(now_us) {
                    return true;
                }
                let rec = BanRecord {
                    target: *k,
                    ban: *b,
                };
                if keep(&rec) {
                    if out.len() < limit {
                        out.push(rec);
                    } else {
                        resume = Some(at);
                    }
                }
                true
            })?;
            debug_assert!(pos <= stride, "a stripe longer than the stride");
            skip = 0;
            if let Some(at) = resume {
                return Ok((out, Some(s * stride + at)));
            }
            if out.len() >= limit {
                // Full at the end of this stripe: the next page starts with
                // the next stripe, if there is one.
                return Ok((out, (s + 1 < stripes).then(|| (s + 1) * stride)));
            }
        }
        Ok((out, None))
    }

    /// Reclaims lapsed entries in every table, one stripe at a time, and
    /// returns the bans that expired. Runs from a timer; workers only ever
    /// wait for the single stripe being swept.
    pub fn sweep(&self, now_us: u64) -> Result<Vec<BanRecord>, TableError> {
        let mut expired = Vec::new();
        // Small tables have fewer stripes than large ones (see Table::new);
        // the walk interleaves the three so no table waits for the others.
        let stripes = self
            .bans
            .stripe_count()
            .max(self.sources.stripe_count())
            .max(self.rl.stripe_count());
        for i in 0..stripes {
            if i < self.bans.stripe_count() {
                self.bans.retain_stripe(i, now_us, |k, b, r| {
                    if r == table::Retention::Free {
                        expired.push(BanRecord {
                            target: *k,
                            ban: *b,
                        });
                        return false;
                    }
                    true
                })?;
            }
            if i < self.sources.stripe_count() {
                self.sources
                    .retain_stripe(i, now_us, |_, _, r| r != table::Retention::Free)?;
            }
            if i < self.rl.stripe_count() {
                self.rl
                    .retain_stripe(i, now_us, |_, _, r| r != table::Retention::Free)?;
            }
        }
        Ok(expired)
    }

    fn note_lapsed(&self, r: Option<BanRecord>) {
        if let Some(r) = r {
            let mut v = self.lapsed.lock();
            if v.len() < LAPSED_CAP {
                v.push(r);
            }
        }
    }

    /// Bans that lapsed and were reclaimed by this process's own operations
    /// since the last call (the sweep reports the others).
    pub fn drain_lapsed(&self) -> Vec<BanRecord> {
        std::mem::take(&mut *self.lapsed.lock())
    }

    /// Lifts every ban; returns the active ones removed.
    pub fn flush_bans(&self, now_us: u64) -> Result<Vec<BanRecord>, TableError> {
        let mut removed = Vec::new();
        for i in 0..self.bans.stripe_count() {
            self.bans.retain_stripe(i, now_us, |k, b, r| {
                let rec = BanRecord {
                    target: *k,
                    ban: *b,
                };
                if r == table::Retention::Free {
                    self.note_lapsed(Some(rec));
                } else {
                    removed.push(rec);
                }
                false
            })?;
        }
        for _ in &removed {
            Stats::inc(&self.stats.bans_removed);
        }
        Ok(removed)
    }

    /// Everything known of `ip`.
    pub fn source_info(&self, ip: &IpKey, now_us: u64) -> Result<SourceInfo, TableError> {
        let pw = self.cfg.pike_sampling_time_s as u64 * US;
        let aw = self.cfg.auth_fail_window_s as u64 * US;
        let s = self.sources.get(ip, now_us, |s| *s)?;
        Ok(SourceInfo {
            ip: *ip,
            pike_requests: s.map_or(0, |s| s.requests.total(now_us, pw)),
            auth_failures: s.map_or(0, |s| s.auth_failures.total(now_us, aw)),
            last_seen_us: s.map(|s| s.last_seen_us),
            ban: self.lookup_ban(ip, now_us)?,
            whitelisted: self.whitelist.contains(ip),
        })
    }

    /// Rate-limit keys in use, optionally only `key`.
    pub fn rl_list(&self, key: Option<&RlKey>, now_us: u64) -> Result<Vec<RlRecord>, TableError> {
        let rec = |k: &RlKey, s: &RlState| RlRecord {
            key: k.as_bytes().to_vec(),
            limit: s.limit,
            period_s: (s.period_us / US) as u32,
            available: s.bucket.available(now_us, s.limit, s.period_us),
        };
        if let Some(k) = key {
            return Ok(self.rl.get(k, now_us, |s| rec(k, s))?.into_iter().collect());
        }
        let mut out = Vec::new();
        for i in 0..self.rl.stripe_count() {
            self.rl.retain_stripe(i, now_us, |k, s, r| {
                if r != table::Retention::Free {
                    out.push(rec(k, s));
                }
                true
            })?;
        }
        Ok(out)
    }

    /// The `n` sources with the most requests in the current pike window.
    pub fn top_sources(&self, n: usize, now_us: u64) -> Result<Vec<(IpKey, u32)>, TableError> {
        let w = self.cfg.pike_sampling_time_s as u64 * US;
        let mut all: Vec<(IpKey, u32)> = Vec::new();
        for i in 0..self.sources.stripe_count() {
            self.sources.retain_stripe(i, now_us, |k, s, _| {
                let c = s.requests.total(now_us, w);
                if c > 0 {
                    all.push((*k, c));
                }
                true
            })?;
        }
        all.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        all.truncate(n);
        Ok(all)
    }

    /// Active bans right now: created, less lifted, less lapsed and reclaimed.
    pub fn bans_active(&self) -> u64 {
        let s = self.stats;
        s.bans_created_total()
            .saturating_sub(Stats::get(&s.bans_removed))
            .saturating_sub(Stats::get(&self.bans.counters().reclaimed))
    }

    /// Test hook: hold the stripe lock `ip` maps to in the source table.
    pub fn with_source_stripe_locked<R>(
        &self,
        ip: &IpKey,
        f: impl FnOnce() -> R,
    ) -> Result<R, TableError> {
        self.sources.with_stripe_locked_for(ip, f)
    }

    /// Pike request count of `ip` in the current window.
    pub fn pike_count(&self, ip: &IpKey, now_us: u64) -> Result<u32, TableError> {
        let w = self.cfg.pike_sampling_time_s as u64 * US;
        Ok(self
            .sources
            .get(ip, now_us, |s| s.requests.total(now_us, w))?
            .unwrap_or(0))
    }

    /// Auth failures of `ip` in the current window.
    pub fn auth_count(&self, ip: &IpKey, now_us: u64) -> Result<u32, TableError> {
        let w = self.cfg.auth_fail_window_s as u64 * US;
        Ok(self
            .sources
            .get(ip, now_us, |s| s.auth_failures.total(now_us, w))?
            .unwrap_or(0))
    }
}
