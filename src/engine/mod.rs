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
pub mod decision;
pub mod history;
pub mod ip;
pub mod methods;
pub mod modparams;
pub mod note;
pub mod profile;
pub mod queue;
pub mod ratelimit;
mod rules;
pub mod scanner;
mod scoped;
pub mod source;
pub mod stats;
pub mod subnet;
pub mod suspect;
pub mod table;
pub mod tenant;
pub mod text;
pub mod users;
pub mod whitelist;
pub mod window;

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

use ahash::RandomState;

pub use bans::{Ban, Reason};
pub use config::{Config, ConfigError, IntParam, TooBroad, MAX_SECONDS};
pub use decision::{Decision, Verdict};
pub use history::Offense;
pub use ip::{Cidr, IpKey, ParseError};
pub use note::Note;
pub use profile::{Limits, ProfileId};
pub use ratelimit::{KeyError, RlKey};
pub use rules::{ReportVerdict, ScannerVerdict, Side, UserBlock, UserInfo};
pub use scoped::{Scope, ScopedBan};
pub use stats::Stats;
pub use table::TableError;
pub use tenant::{TenantId, TenantName};
pub use text::TextError;
pub use users::UserKey;

use bans::PrefixIndex;
use decision::DecisionRing;
use methods::{MethodCount, MethodKey};
use note::NoteEntry;
use profile::{PrefixMap, ProfileSet};
use ratelimit::RlState;
use source::{Banned, HostBan, HostState, HostTiming, ProfiledKey, ProfiledWatch, Watch};
use subnet::BannedInside;
use suspect::{Suspect, SuspectTiming};
use table::{Found, Table, TableCounters};
use tenant::{Present, ScopedKey, TenantCounters, TenantHead, TenantSlot};
use users::UserState;
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
    /// A ban made for one tenant, or only pretended by dry run (the
    /// request passes).
    Scoped(ScopedBan),
    /// Dry run: a ban it pretended to make is in force; the request passes.
    DryRunBlocked(Reason),
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
    Scoped(ScopedBan),
    DryRunBlocked(Reason),
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
    /// What the address is counted and banned as: itself, or (IPv6) its
    /// prefix of `ipv6_track_prefix`.
    pub unit: Cidr,
    pub pike_requests: u32,
    pub auth_failures: u32,
    pub last_seen_us: Option<u64>,
    pub ban: Option<BanRecord>,
    pub whitelisted: bool,
    /// The unit's last ban and how many it had in a row, while remembered.
    pub history: Option<Offense>,
    /// Weight reported by `sec_report` in the current report window.
    pub reports: u32,
    /// Distinct usernames failed in the current auth window.
    pub users_failed: u32,
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

/// Bans in force, against `max_bans`: host bans live in the hosts table
/// and prefix bans in their own, so the bound is kept by this count.
#[derive(Default)]
struct BanBudget {
    in_force: AtomicU64,
    /// When (whole seconds) the ban tables were last walked for lapsed
    /// bans because the budget ran out.
    last_walk_s: AtomicU64,
}

crate::shm_safe!(BanBudget);

pub struct Engine {
    cfg: Config,
    /// Bans this process found lapsed and reclaimed outside the sweep;
    /// process-local, drained by the caller after each operation so every
    /// expiry is reported exactly once.
    lapsed: parking_lot::Mutex<Vec<BanRecord>>,
    region_bytes: usize,
    /// Every tracked host: its counts, or its ban.
    hosts: Table<IpKey, HostState>,
    /// Bans on prefixes shorter than a host.
    bans: Table<Cidr, Ban>,
    budget: &'static BanBudget,
    rl: Table<RlKey, RlState>,
    prefixes: &'static PrefixIndex,
    whitelist: Whitelist,
    stats: &'static Stats,
    queue: Option<queue::ChangeQueue>,
    /// The last ban of every target banned lately (repeat offenders).
    history: Table<Cidr, Offense>,
    /// Units banned inside each prefix (prefix aggregation).
    subnets: Table<Cidr, BannedInside>,
    /// Notes of the bans that carry one.
    notes: Table<Cidr, NoteEntry>,
    /// Requests per source and listed method (`pike_method_density`).
    methods: Option<Table<MethodKey, MethodCount>>,
    /// Reported abuse and failed usernames per source.
    suspects: Table<IpKey, Suspect>,
    /// Authentication failures and blocks per username.
    users: Table<UserKey, UserState>,
    /// Keys the fingerprints of usernames (enumeration).
    fingerprints: RandomState,
    /// The scanners' signatures, compiled once before the fork (process
    /// memory: they never change).
    scanner: scanner::ScannerPatterns,
    /// Decisions made on the side of an operation (a prefix banned when a
    /// host ban tipped it over, an account blocked), process-local and
    /// drained by the caller like `lapsed`.
    side: parking_lot::Mutex<Vec<Side>>,
    /// The profiles' thresholds (profile 0: the default).
    profiles: ProfileSet,
    /// Prefixes mapped to profiles (`profile_prefix`).
    prefix_profiles: PrefixMap,
    /// Every method any profile limits (the per-method table's indexes).
    method_names: Vec<String>,
    /// The default profile's limits, fixed at start-up.
    default_limits: Limits,
    /// Requests and failures per (profile, source), for checks under a
    /// profile other than the default, or in dry run.
    profiled: Option<Table<ProfiledKey, ProfiledWatch>>,
    /// Bans dry run pretended to make, by profile (and tenant when scoped).
    shadow: Table<ScopedKey, Ban>,
    /// Tenants by label, their counters and numbering.
    tenants: Table<TenantName, TenantSlot>,
    tenant_counters: &'static [TenantCounters],
    tenant_head: &'static TenantHead,
    /// Prefixes whitelisted for one tenant, and their lengths in use.
    tenant_wl: Table<ScopedKey, Present>,
    tenant_wl_lengths: &'static PrefixIndex,
    /// Bans for one tenant's traffic, and their lengths in use.
    tenant_bans: Table<ScopedKey, Ban>,
    tenant_ban_lengths: &'static PrefixIndex,
    /// Requests per (tenant, source), for a tenant's `sec_top`.
    tenant_sources: Table<ScopedKey, Watch>,
    /// Recent decisions, for operators (`sec_explain`).
    ring: DecisionRing,
    /// Decisions this process made since the caller last drained them,
    /// so its log lines carry their numbers.
    decided: parking_lot::Mutex<Vec<Decision>>,
    /// Set when any of `lapsed`, `side` and `decided` gets an entry
    /// (process-local, like them).
    pending: std::sync::atomic::AtomicBool,
}

impl Engine {
    /// Creates every shared table in one fresh mapping. Call before forking.
    pub fn new(cfg: Config) -> Result<Engine, EngineError> {
        cfg.validate().map_err(EngineError::Config)?;
        // A host's ban takes its source entry, and bans are never evicted:
        // the hosts table has room for max_bans of them beside
        // max_tracked_ips sources, so bans can never crowd sources out.
        let host_entries = cfg.max_tracked_ips as usize + cfg.max_bans as usize;
        let bytes = Table::<IpKey, HostState>::shm_bytes(host_entries)
            + Table::<Cidr, Ban>::shm_bytes(cfg.max_bans as usize)
            + Table::<RlKey, RlState>::shm_bytes(cfg.max_rl_keys as usize)
            + Whitelist::shm_bytes(cfg.max_whitelist as usize)
            + std::mem::size_of::<PrefixIndex>()
            + std::mem::size_of::<Stats>()
            + std::mem::size_of::<BanBudget>()
            + queue::ChangeQueue::shm_bytes(cfg.db_queue_size as usize)
            + Table::<Cidr, Offense>::shm_bytes(cfg.max_offenders as usize)
            + Table::<Cidr, BannedInside>::shm_bytes(cfg.max_bans as usize)
            + Table::<Cidr, NoteEntry>::shm_bytes(cfg.max_bans as usize)
            + Self::method_entries(&cfg).map_or(0, Table::<MethodKey, MethodCount>::shm_bytes)
            + Table::<IpKey, Suspect>::shm_bytes(cfg.max_suspects as usize)
            + Table::<UserKey, UserState>::shm_bytes(cfg.max_users as usize)
            + ProfileSet::shm_bytes()
            + Self::profiled_entries(&cfg)
                .map_or(0, Table::<ProfiledKey, ProfiledWatch>::shm_bytes)
            + Table::<ScopedKey, Ban>::shm_bytes(Self::shadow_entries(&cfg))
            + Table::<TenantName, TenantSlot>::shm_bytes(cfg.max_tenants as usize)
            + cfg.max_tenants as usize * std::mem::size_of::<TenantCounters>()
            + std::mem::size_of::<TenantHead>()
            + Table::<ScopedKey, Present>::shm_bytes(Self::tenant_wl_entries(&cfg))
            + Table::<ScopedKey, Ban>::shm_bytes(Self::tenant_ban_entries(&cfg))
            + 2 * std::mem::size_of::<PrefixIndex>()
            + Table::<ScopedKey, Watch>::shm_bytes(cfg.max_tracked_ips as usize)
            + DecisionRing::shm_bytes(cfg.decision_ring as usize)
            + 64 * 1024;
        let scanner =
            scanner::ScannerPatterns::new(cfg.scanner_patterns.clone()).map_err(|why| {
                EngineError::Config(ConfigError {
                    param: "scanner_patterns",
                    value: cfg.scanner_patterns.len() as i64,
                    why,
                })
            })?;
        let mut region = Region::new(bytes).map_err(EngineError::Memory)?;
        let [a, b, c, d] = crate::shm::random_seeds();
        let hasher = RandomState::with_seeds(a, b, c, d);
        let mem = EngineError::Memory;
        let timing = HostTiming {
            pike_window_us: cfg.pike_sampling_time_s as u64 * US,
            auth_window_us: cfg.auth_fail_window_s as u64 * US,
        };
        let hosts = Table::new(&mut region, host_entries, hasher.clone(), timing).map_err(mem)?;
        let bans =
            Table::new(&mut region, cfg.max_bans as usize, hasher.clone(), ()).map_err(mem)?;
        let rl =
            Table::new(&mut region, cfg.max_rl_keys as usize, hasher.clone(), ()).map_err(mem)?;
        let history = Table::new(
            &mut region,
            cfg.max_offenders as usize,
            hasher.clone(),
            cfg.recidive_window_s,
        )
        .map_err(mem)?;
        let subnets =
            Table::new(&mut region, cfg.max_bans as usize, hasher.clone(), ()).map_err(mem)?;
        let notes =
            Table::new(&mut region, cfg.max_bans as usize, hasher.clone(), ()).map_err(mem)?;
        let method_names = profile::method_names(
            std::iter::once(cfg.method_limits.as_slice())
                .chain(cfg.profiles.iter().map(|p| p.cfg.method_limits.as_slice())),
        )
        .map_err(|why| {
            EngineError::Config(ConfigError {
                param: "profile",
                value: cfg.profiles.len() as i64,
                why,
            })
        })?;
        // Every profile's windows: the per-method and profiled tables keep
        // counts for the longest.
        let longest = Self::longest_windows(&cfg);
        let methods = match Self::method_entries(&cfg) {
            Some(n) => Some(
                Table::new(&mut region, n, hasher.clone(), longest.pike_window_us).map_err(mem)?,
            ),
            None => None,
        };
        let profiled = match Self::profiled_entries(&cfg) {
            Some(n) => {
                let keep = longest.pike_window_us.max(longest.auth_window_us);
                Some(Table::new(&mut region, n, hasher.clone(), keep).map_err(mem)?)
            }
            None => None,
        };
        let shadow =
            Table::new(&mut region, Self::shadow_entries(&cfg), hasher.clone(), ()).map_err(mem)?;
        let tenants =
            Table::new(&mut region, cfg.max_tenants as usize, hasher.clone(), ()).map_err(mem)?;
        let tenant_counters = region
            .alloc_slice::<TenantCounters>(cfg.max_tenants as usize)
            .map_err(mem)?;
        let tenant_head = region.alloc::<TenantHead>().map_err(mem)?;
        let tenant_wl = Table::new(
            &mut region,
            Self::tenant_wl_entries(&cfg),
            hasher.clone(),
            (),
        )
        .map_err(mem)?;
        let tenant_wl_lengths = region.alloc::<PrefixIndex>().map_err(mem)?;
        let tenant_bans = Table::new(
            &mut region,
            Self::tenant_ban_entries(&cfg),
            hasher.clone(),
            (),
        )
        .map_err(mem)?;
        let tenant_ban_lengths = region.alloc::<PrefixIndex>().map_err(mem)?;
        let tenant_sources = Table::new(
            &mut region,
            cfg.max_tracked_ips as usize,
            hasher.clone(),
            timing,
        )
        .map_err(mem)?;
        let ring = DecisionRing::new(&mut region, cfg.decision_ring as usize).map_err(mem)?;
        let profiles = ProfileSet::new(&mut region).map_err(mem)?;
        let default_limits = Limits::of(&cfg, &method_names, cfg.dry_run != 0, false);
        let prefix_profiles = PrefixMap::new(
            &cfg.profile_prefixes
                .iter()
                .map(|(c, name)| {
                    let id = cfg
                        .profiles
                        .iter()
                        .position(|p| p.name == *name)
                        .map_or(0, |i| i as u8 + 1);
                    (*c, id)
                })
                .collect::<Vec<_>>(),
        );
        let suspects = Table::new(
            &mut region,
            cfg.max_suspects as usize,
            hasher.clone(),
            SuspectTiming {
                report_window_us: longest.report_window_us,
                enum_window_s: (longest.auth_window_us / US) as u32,
            },
        )
        .map_err(mem)?;
        let users = Table::new(
            &mut region,
            cfg.max_users as usize,
            hasher.clone(),
            longest.user_fail_window_us,
        )
        .map_err(mem)?;
        let budget = region.alloc::<BanBudget>().map_err(mem)?;
        let prefixes = region.alloc::<PrefixIndex>().map_err(mem)?;
        let whitelist = Whitelist::new(&mut region, cfg.max_whitelist as usize).map_err(mem)?;
        let stats = region.alloc::<Stats>().map_err(mem)?;
        let queue = match cfg.db_queue_size {
            0 => None,
            n => Some(queue::ChangeQueue::new(&mut region, n as usize).map_err(mem)?),
        };
        whitelist
            .replace(cfg.whitelist.clone())
            .map_err(|e| match e {
                whitelist::WhitelistError::Full { capacity } => EngineError::Config(ConfigError {
                    param: "whitelist",
                    value: cfg.whitelist.len() as i64,
                    why: format!("too many entries (at most {capacity}: modparam max_whitelist)"),
                }),
                whitelist::WhitelistError::Lock(why) => EngineError::Memory(io::Error::other(why)),
            })?;
        (Engine {
            cfg,
            lapsed: parking_lot::Mutex::new(Vec::new()),
            region_bytes: region.len(),
            hosts,
            bans,
            budget,
            rl,
            prefixes,
            whitelist,
            stats,
            queue,
            history,
            subnets,
            notes,
            methods,
            suspects,
            users,
            fingerprints: hasher,
            scanner,
            side: parking_lot::Mutex::new(Vec::new()),
            profiles,
            prefix_profiles,
            method_names,
            default_limits,
            profiled,
            shadow,
            tenants,
            tenant_counters,
            tenant_head,
            tenant_wl,
            tenant_wl_lengths,
            tenant_bans,
            tenant_ban_lengths,
            tenant_sources,
            ring,
            decided: parking_lot::Mutex::new(Vec::new()),
            pending: std::sync::atomic::AtomicBool::new(false),
        })
        .with_profiles_and_tenants()
    }

    /// Entries of the per-method table: none without per-method limits.
    fn method_entries(cfg: &Config) -> Option<usize> {
        let any = !cfg.method_limits.is_empty()
            || cfg.profiles.iter().any(|p| !p.cfg.method_limits.is_empty());
        any.then_some(cfg.max_tracked_ips as usize)
    }

    /// Entries of the profiles' own counts: none while every check runs
    /// under the default profile, enforcing.
    fn profiled_entries(cfg: &Config) -> Option<usize> {
        (!cfg.profiles.is_empty() || cfg.dry_run != 0).then_some(cfg.max_tracked_ips as usize)
    }

    /// Bans dry run may pretend at once: as many as may be made.
    fn shadow_entries(cfg: &Config) -> usize {
        let dry = cfg.dry_run != 0 || cfg.profiles.iter().any(|p| p.dry_run);
        // A reload may turn dry run on for a profile: a small table even
        // when no profile is dry at start-up.
        if dry || !cfg.profiles.is_empty() {
            cfg.max_bans as usize
        } else {
            16
        }
    }

    fn tenant_wl_entries(cfg: &Config) -> usize {
        cfg.max_whitelist.min(cfg.max_tenants.saturating_mul(64)) as usize
    }

    fn tenant_ban_entries(cfg: &Config) -> usize {
        if cfg.profiles.iter().any(|p| p.tenant_bans) {
            cfg.max_bans as usize
        } else {
            16
        }
    }

    /// The longest windows of every profile, which tables counting under
    /// any of them must keep counts for.
    fn longest_windows(cfg: &Config) -> Longest {
        let all = || std::iter::once(cfg).chain(cfg.profiles.iter().map(|p| &p.cfg));
        let max = |f: fn(&Config) -> u32| all().map(f).max().unwrap_or(1) as u64 * US;
        Longest {
            pike_window_us: max(|c| c.pike_sampling_time_s),
            auth_window_us: max(|c| c.auth_fail_window_s),
            report_window_us: max(|c| c.report_window_s),
            user_fail_window_us: max(|c| c.user_fail_window_s),
        }
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

    /// What was really allocated: (table, entries, buckets) for the
    /// hosts (their counts and host bans: `max_tracked_ips + max_bans`),
    /// the prefix bans (`max_bans`) and the rate-limit keys
    /// (`max_rl_keys`); each bucket of 16 entries has its own lock.
    pub fn layout(&self) -> [(&'static str, usize, usize); 3] {
        [
            ("sources", self.hosts.capacity(), self.hosts.bucket_count()),
            (
                "prefix bans",
                self.bans.capacity(),
                self.bans.bucket_count(),
            ),
            ("rl keys", self.rl.capacity(), self.rl.bucket_count()),
        ]
    }

    /// Shared-memory bytes per tracked source: its slot and its share of
    /// its bucket's lock and tags.
    pub fn bytes_per_source() -> usize {
        Table::<IpKey, HostState>::bytes_per_entry()
    }

    pub fn source_counters(&self) -> &'static TableCounters {
        self.hosts.counters()
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

    fn pike_window_us(&self) -> u64 {
        self.cfg.pike_sampling_time_s as u64 * US
    }

    fn auth_window_us(&self) -> u64 {
        self.cfg.auth_fail_window_s as u64 * US
    }

    fn expiry(now_us: u64, seconds: u32) -> u64 {
        if seconds == 0 {
            0
        } else {
            now_us + seconds as u64 * US
        }
    }

    /// Takes one ban from the `max_bans` budget; false when none is left.
    fn reserve_ban(&self) -> bool {
        let max = self.cfg.max_bans as u64;
        self.budget
            .in_force
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }

    /// With the budget used up, bans that ran out but were not reclaimed
    /// yet (by the sweep, or by a worker reusing their slot) still hold
    /// their place. Reclaims them now, at most once per second (a walk
    /// visits every bucket), and says whether any place was freed. Never
    /// called with a bucket lock held.
    fn make_room(&self, now_us: u64) -> Result<bool, TableError> {
        let now_s = now_us / US;
        let last = self.budget.last_walk_s.load(Ordering::Acquire);
        if last >= now_s
            || self
                .budget
                .last_walk_s
                .compare_exchange(last, now_s, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
        {
            return Ok(false);
        }
        let mut freed = false;
        for i in 0..self.hosts.bucket_count() {
            self.hosts.retain_bucket(i, now_us, |k, s, r| {
                match self.host_ban(k, s).filter(|_| r == table::Retention::Free) {
                    Some(rec) => {
                        self.note_lapsed(Some(rec));
                        freed = true;
                        false
                    }
                    None => true,
                }
            })?;
        }
        for i in 0..self.bans.bucket_count() {
            self.bans.retain_bucket(i, now_us, |k, b, r| {
                if r != table::Retention::Free {
                    return true;
                }
                let rec = Self::prefix_ban(k, b);
                freed |= rec.ban.created_us != 0;
                self.note_lapsed(Some(rec));
                false
            })?;
        }
        Ok(freed)
    }

    /// Gives back a ban's place in the budget once the ban is gone.
    fn release_ban(&self) {
        let _ = self
            .budget
            .in_force
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_sub(1))
            });
    }

    /// A prefix-ban table entry as a record.
    fn prefix_ban(target: &Cidr, ban: &Ban) -> BanRecord {
        BanRecord {
            target: *target,
            ban: *ban,
        }
    }

    /// The ban an entry of the hosts table holds, if any.
    fn host_ban(&self, unit: &IpKey, s: &HostState) -> Option<BanRecord> {
        match s {
            HostState::Banned(b) => Some(BanRecord {
                target: self.unit_target(unit),
                ban: b.ban.get(),
            }),
            HostState::Watched(_) => None,
        }
    }

    /// The prefix length (in mapped space) sources of `ip`'s family are
    /// counted and banned by: a host for IPv4, `ipv6_track_prefix` for
    /// IPv6, where one host owns a whole /64 and could rotate through it.
    fn unit_prefix(&self, ip: &IpKey) -> u8 {
        if ip.is_v4() {
            Cidr::HOST
        } else {
            self.cfg.ipv6_track_prefix as u8
        }
    }

    /// The key `ip` is counted under in the hosts table.
    pub fn unit(&self, ip: &IpKey) -> IpKey {
        self.unit_target(ip).addr
    }

    /// The unit `ip` is counted and banned as: itself, or its IPv6 prefix.
    pub fn unit_target(&self, ip: &IpKey) -> Cidr {
        Cidr::new(*ip, self.unit_prefix(ip))
    }

    /// What a rule bans for `ip`: its unit, or the address alone when the
    /// unit (an IPv6 prefix) holds a whitelisted address, since a ban, and
    /// the firewalls following its event, must never cover a trusted
    /// source. Read only on the way to a ban.
    pub fn ban_target(&self, ip: &IpKey) -> Cidr {
        let unit = self.unit_target(ip);
        if unit.prefix != Cidr::HOST && self.whitelist.overlapping(&unit).is_some() {
            Cidr::host(*ip)
        } else {
            unit
        }
    }

    /// True when `target` is exactly one tracked unit: its ban lives in
    /// the hosts table, with the unit's counts.
    pub fn is_unit(&self, target: &Cidr) -> bool {
        target.prefix == self.unit_prefix(&target.addr)
    }

    /// The active ban covering `ip`, if any; counts a hit on it when `hit`.
    /// A host's own ban first, then prefix bans, most specific first.
    fn find_ban(
        &self,
        ip: &IpKey,
        now_us: u64,
        hit: bool,
    ) -> Result<Option<(Cidr, Ban)>, TableError> {
        let unit = self.unit_target(ip);
        let own = self.hosts.get(&unit.addr, now_us, |s| match s {
            HostState::Banned(b) => {
                if hit {
                    b.ban.hit();
                }
                Some(b.ban.get())
            }
            HostState::Watched(_) => None,
        })?;
        if let Some(b) = own.flatten() {
            return Ok(Some((unit, b)));
        }
        self.find_prefix_ban(ip, now_us, hit)
    }

    /// The most specific active prefix ban covering `ip`.
    fn find_prefix_ban(
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
        self.ban_noted(target, seconds, reason, None, now_us)
    }

    /// [`Engine::ban`] with a note for operators ("abuse ticket 4411"),
    /// kept with the ban and shown wherever it is.
    pub fn ban_noted(
        &self,
        target: Cidr,
        seconds: u32,
        reason: Reason,
        note: Option<&Note>,
        now_us: u64,
    ) -> Result<BanOutcome, TableError> {
        let o = self.ban_inner(target, seconds, reason, note, now_us)?;
        if let Some(rec) = o.made() {
            // Asked for by the script or an operator: no count behind it.
            let facts = Facts {
                ip: target.addr,
                count: 1,
                ..Facts::default()
            };
            self.decided(rec, Verdict::Ban, &facts, now_us);
        }
        Ok(o)
    }

    /// [`Engine::ban_noted`] without recording a decision: the rules
    /// record their own, with their numbers.
    fn ban_inner(
        &self,
        target: Cidr,
        seconds: u32,
        reason: Reason,
        note: Option<&Note>,
        now_us: u64,
    ) -> Result<BanOutcome, TableError> {
        if let Some(refused) = self.refusal(&target) {
            return Ok(refused);
        }
        let fresh = Ban {
            reason,
            created_us: now_us,
            expires_us: Self::expiry(now_us, seconds),
            hits: 0,
        };
        let rec = |b: &Ban| BanRecord { target, ban: *b };
        // A new ban is made; an existing one is replaced only by a manual
        // ban (a new expiry), and left alone by an automatic rule.
        let apply = |b: &mut Ban| {
            if reason == Reason::Manual {
                b.reason = reason;
                b.expires_us = fresh.expires_us;
                BanOutcome::Updated(rec(b))
            } else {
                BanOutcome::AlreadyBanned(rec(b))
            }
        };
        self.put_ban(&target, now_us, fresh, note, apply)
    }

    /// Installs `fresh` on `target` if it has no ban (taking one from the
    /// budget), or lets `existing` decide what to do with the ban in force.
    /// With the budget used up, reclaims bans that ran out and tries once
    /// more; counts what was created or refused.
    /// A ban put in force keeps `note`, and is remembered for escalation
    /// and prefix aggregation (see `rules.rs`).
    fn put_ban(
        &self,
        target: &Cidr,
        now_us: u64,
        fresh: Ban,
        note: Option<&Note>,
        existing: impl FnOnce(&mut Ban) -> BanOutcome + Copy,
    ) -> Result<BanOutcome, TableError> {
        let r = match self.try_put_ban(target, now_us, fresh, existing) {
            Ok(BanOutcome::TableFull) if self.make_room(now_us)? => {
                self.try_put_ban(target, now_us, fresh, existing)
            }
            r => r,
        };
        let o = self.ban_result(r, fresh.reason)?;
        if let Some(rec) = o.made() {
            self.keep_note(rec, note, now_us)?;
            self.after_ban(rec, matches!(o, BanOutcome::Created(_)), now_us);
        }
        Ok(o)
    }

    /// One attempt of [`Engine::put_ban`].
    fn try_put_ban(
        &self,
        target: &Cidr,
        now_us: u64,
        fresh: Ban,
        existing: impl FnOnce(&mut Ban) -> BanOutcome,
    ) -> Result<BanOutcome, TableError> {
        let made = |b: &Ban| BanRecord {
            target: *target,
            ban: *b,
        };
        let mut lapsed = None;
        let r = if self.is_unit(target) {
            self.hosts.upsert_observing(
                &target.addr,
                now_us,
                |s, _| match s {
                    HostState::Banned(h) => {
                        let mut b = h.ban.get();
                        let o = existing(&mut b);
                        h.ban = HostBan::new(&b);
                        o
                    }
                    HostState::Watched(w) => {
                        if !self.reserve_ban() {
                            return BanOutcome::TableFull;
                        }
                        let held = HostBan::new(&fresh);
                        *s = HostState::Banned(Banned {
                            ban: held,
                            requests: w.requests,
                        });
                        BanOutcome::Created(made(&held.get()))
                    }
                },
                |k, s| lapsed = self.host_ban(k, s),
            )
        } else {
            // Mark before inserting so a concurrent lookup never misses the ban.
            self.prefixes.mark(target.prefix);
            self.bans.upsert_observing(
                target,
                now_us,
                |b, found| match found {
                    Found::Existing => existing(b),
                    Found::Created => {
                        if !self.reserve_ban() {
                            // Left as an empty (free) slot.
                            return BanOutcome::TableFull;
                        }
                        *b = fresh;
                        BanOutcome::Created(made(&fresh))
                    }
                },
                |k, b| lapsed = Some(Self::prefix_ban(k, b)),
            )
        };
        self.note_lapsed(lapsed);
        r
    }

    /// Counts a created ban, or a refusal for want of room; a full table
    /// is an outcome, not an error.
    fn ban_result(
        &self,
        r: Result<BanOutcome, TableError>,
        reason: Reason,
    ) -> Result<BanOutcome, TableError> {
        match r {
            Ok(o) => {
                match o {
                    BanOutcome::Created(_) => Stats::inc(&self.stats.bans_created[reason as usize]),
                    BanOutcome::TableFull => self.bans.counters().full.inc(),
                    _ => {}
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
        note: Option<&Note>,
        now_us: u64,
    ) -> Result<Option<BanOutcome>, TableError> {
        if expires_us != 0 && expires_us <= now_us {
            return Ok(None);
        }
        if let Some(refused) = self.refusal(&target) {
            return Ok(Some(refused));
        }
        let fresh = Ban {
            reason,
            created_us: created_us.max(1),
            expires_us,
            hits: 0,
        };
        let rec = |b: &Ban| BanRecord { target, ban: *b };
        let apply = |b: &mut Ban| {
            // Stored times have whole seconds: the same ban read back from
            // the database differs below one second.
            if b.reason == reason && b.expires_us / US == expires_us / US {
                BanOutcome::AlreadyBanned(rec(b))
            } else {
                b.reason = reason;
                b.created_us = fresh.created_us;
                b.expires_us = expires_us;
                BanOutcome::Updated(rec(b))
            }
        };
        self.put_ban(&target, now_us, fresh, note, apply).map(Some)
    }

    /// Lifts the ban on exactly `target`; returns it if one was active.
    /// Lifting a host's ban also forgets its request and auth-failure
    /// counts (a banned host has none: its slot held the ban), so a source
    /// unbanned right after a flood is not banned again by its very next
    /// request.
    pub fn unban(&self, target: &Cidr, now_us: u64) -> Result<Option<BanRecord>, TableError> {
        let r = if self.is_unit(target) {
            let mut lapsed = None;
            let r = self
                .hosts
                .inspect(&target.addr, now_us, |s, r| {
                    let rec = self.host_ban(&target.addr, s)?;
                    *s = HostState::default();
                    if r == table::Retention::Free {
                        lapsed = Some(rec);
                        None
                    } else {
                        Some(rec.ban)
                    }
                })?
                .flatten();
            self.note_lapsed(lapsed);
            r
        } else {
            let mut lapsed = None;
            let r = self
                .bans
                .remove_observing(target, now_us, |k, b| lapsed = Some(Self::prefix_ban(k, b)))?;
            self.note_lapsed(lapsed);
            r
        };
        let r = r.map(|ban| BanRecord {
            target: *target,
            ban,
        });
        if let Some(rec) = &r {
            self.ban_gone(rec);
            self.forget_suspect(target, now_us)?;
            Stats::inc(&self.stats.bans_removed);
        }
        Ok(r)
    }

    /// Counts one event from `ip` (with `count`, on its counts) and, past
    /// the threshold (`over` says when), bans it with `reason` for
    /// `seconds`, all under the one lock of the host's bucket: the ban
    /// check, the count and the ban are one step, so no other process can
    /// slip a request in between. A host already banned is left to
    /// `banned`.
    fn count_and_ban<R>(
        &self,
        ip: &IpKey,
        now_us: u64,
        ban: (Reason, u32),
        mut facts: Facts,
        count: impl FnOnce(&mut source::Watch) -> Result<R, u32>,
        banned: impl FnOnce(&mut Banned) -> R,
    ) -> Result<Counted<R>, TableError> {
        let (reason, seconds) = ban;
        let crossed = std::cell::Cell::new(0u32);
        let unit = self.unit_target(ip);
        let mut lapsed = None;
        let r = self.hosts.upsert_observing(
            &unit.addr,
            now_us,
            // Err: over the threshold, but the unit (an IPv6 prefix) holds a
            // whitelisted address, so the address alone is to be banned.
            |s, _| match s {
                HostState::Banned(b) => Ok(Counted::Below(banned(b))),
                HostState::Watched(w) => match count(w).map_err(|n| crossed.set(n)) {
                    Ok(r) => Ok(Counted::Below(r)),
                    Err(()) if self.ban_target(ip) != unit => Err(()),
                    Err(()) if !self.reserve_ban() => Ok(Counted::OverUnbanned),
                    Err(()) => {
                        // A repeat offender's history is read here, under
                        // the host's lock, only on the way to a ban.
                        let seconds =
                            self.ban_length(&unit, reason, seconds, &self.default_limits, now_us);
                        let ban = HostBan::new(&Ban {
                            reason,
                            created_us: now_us,
                            expires_us: Self::expiry(now_us, seconds),
                            hits: 0,
                        });
                        *s = HostState::Banned(Banned {
                            ban,
                            requests: w.requests,
                        });
                        Ok(Counted::JustBanned(BanRecord {
                            target: unit,
                            ban: ban.get(),
                        }))
                    }
                },
            },
            |k, s| lapsed = self.host_ban(k, s),
        );
        self.note_lapsed(lapsed);
        facts.count = crossed.get();
        let Ok(r) = r? else {
            return Ok(Counted::from(self.rule_ban(
                Cidr::host(*ip),
                reason,
                seconds,
                None,
                &facts,
                now_us,
            )?));
        };
        match r {
            Counted::JustBanned(rec) => {
                Stats::inc(&self.stats.bans_created[reason as usize]);
                self.after_ban(&rec, true, now_us);
                self.decided(&rec, Verdict::Ban, &facts, now_us);
                Ok(Counted::JustBanned(rec))
            }
            // No ban left in the budget. Some may have run out unnoticed:
            // reclaim them (outside the bucket lock) and ban after all.
            Counted::OverUnbanned if self.make_room(now_us)? => Ok(Counted::from(
                self.rule_ban(unit, reason, seconds, None, &facts, now_us)?,
            )),
            Counted::OverUnbanned => {
                self.bans.counters().full.inc();
                let rec = BanRecord {
                    target: unit,
                    ban: Ban {
                        reason,
                        created_us: now_us,
                        expires_us: Self::expiry(now_us, seconds),
                        hits: 0,
                    },
                };
                self.decided(&rec, Verdict::Refused, &facts, now_us);
                Ok(Counted::OverUnbanned)
            }
            r => Ok(r),
        }
    }

    /// Flood check for one request from `ip`.
    pub fn pike_check(&self, ip: &IpKey, now_us: u64) -> Result<PikeVerdict, TableError> {
        self.pike_check_method(ip, None, now_us)
    }

    /// Flood check for one request of `method` from `ip`: the overall
    /// limit, then the method's own (`pike_method_density`) if it has one.
    pub fn pike_check_method(
        &self,
        ip: &IpKey,
        method: Option<&[u8]>,
        now_us: u64,
    ) -> Result<PikeVerdict, TableError> {
        self.pike_default(Scope::default(), ip, method, now_us)
    }

    /// The default profile's flood check, counted in the hosts table;
    /// `scope` only names the tenant in the decisions it records.
    fn pike_default(
        &self,
        scope: Scope,
        ip: &IpKey,
        method: Option<&[u8]>,
        now_us: u64,
    ) -> Result<PikeVerdict, TableError> {
        let v = self.pike_overall(scope, ip, now_us)?;
        match (v, method) {
            (PikeVerdict::Allowed, Some(m)) if self.methods.is_some() => Ok(self
                .method_check(scope, &self.default_limits, ip, m, now_us)?
                .unwrap_or(v)),
            _ => Ok(v),
        }
    }

    fn pike_overall(
        &self,
        scope: Scope,
        ip: &IpKey,
        now_us: u64,
    ) -> Result<PikeVerdict, TableError> {
        Stats::inc(&self.stats.pike_checked);
        if self.whitelist.contains(ip) {
            Stats::inc(&self.stats.whitelisted);
            return Ok(PikeVerdict::Whitelisted);
        }
        if self.prefixes.any() {
            if let Some((_, ban)) = self.find_ban(ip, now_us, true)? {
                Stats::inc(&self.stats.pike_blocked);
                Stats::inc(&self.stats.dropped_while_banned);
                return Ok(PikeVerdict::Banned(ban.reason));
            }
        }
        let (window, density) = (self.pike_window_us(), self.cfg.pike_density);
        let facts = Facts {
            ip: *ip,
            threshold: density,
            window_s: self.cfg.pike_sampling_time_s,
            scope,
            count: 0,
        };
        let r = self.count_and_ban(
            ip,
            now_us,
            (Reason::Pike, self.cfg.pike_ban_time_s),
            facts,
            |w| match w.requests.add(now_us, window, 1) {
                n if n <= density => Ok(PikeVerdict::Allowed),
                n => Err(n),
            },
            |b| {
                b.ban.hit();
                // Still counted, for operators watching a banned flooder.
                b.requests.add(now_us, window, 1);
                PikeVerdict::Banned(b.ban.reason())
            },
        )?;
        Ok(match r {
            Counted::Below(v) => {
                if let PikeVerdict::Banned(_) = v {
                    Stats::inc(&self.stats.pike_blocked);
                    Stats::inc(&self.stats.dropped_while_banned);
                }
                v
            }
            Counted::JustBanned(rec) => {
                Stats::inc(&self.stats.pike_blocked);
                PikeVerdict::JustBanned(rec)
            }
            Counted::Banned(reason) => {
                // Refused by that ban, so a hit on it like any other.
                self.find_ban(ip, now_us, true)?;
                Stats::inc(&self.stats.pike_blocked);
                Stats::inc(&self.stats.dropped_while_banned);
                PikeVerdict::Banned(reason)
            }
            Counted::Whitelisted => PikeVerdict::Whitelisted,
            Counted::OverUnbanned => {
                Stats::inc(&self.stats.pike_blocked);
                PikeVerdict::OverLimitUnbanned
            }
        })
    }

    /// Records one failed authentication from `ip`.
    pub fn auth_fail(&self, ip: &IpKey, now_us: u64) -> Result<AuthVerdict, TableError> {
        self.auth_fail_user(ip, None, now_us)
    }

    /// Records one failed authentication from `ip` as `user`: against the
    /// source, against the account (across all sources) and, with the
    /// usernames the source failed for, against enumeration.
    pub fn auth_fail_user(
        &self,
        ip: &IpKey,
        user: Option<&[u8]>,
        now_us: u64,
    ) -> Result<AuthVerdict, TableError> {
        self.auth_default(Scope::default(), ip, user, now_us)
    }

    /// The default profile's failure count, in the hosts table.
    fn auth_default(
        &self,
        scope: Scope,
        ip: &IpKey,
        user: Option<&[u8]>,
        now_us: u64,
    ) -> Result<AuthVerdict, TableError> {
        let v = self.auth_source(scope, ip, now_us)?;
        let Some(user) = user.filter(|u| !u.is_empty()) else {
            return Ok(v);
        };
        if v == AuthVerdict::Whitelisted {
            return Ok(v);
        }
        self.user_failed(&self.default_limits, user, now_us)?;
        match v {
            AuthVerdict::Counted(_) => Ok(self
                .enumeration(scope, &self.default_limits, ip, user, now_us)?
                .unwrap_or(v)),
            _ => Ok(v),
        }
    }

    fn auth_source(
        &self,
        scope: Scope,
        ip: &IpKey,
        now_us: u64,
    ) -> Result<AuthVerdict, TableError> {
        Stats::inc(&self.stats.auth_failures);
        if self.whitelist.contains(ip) {
            return Ok(AuthVerdict::Whitelisted);
        }
        if self.prefixes.any() {
            if let Some((_, ban)) = self.find_prefix_ban(ip, now_us, false)? {
                return Ok(AuthVerdict::AlreadyBanned(ban.reason));
            }
        }
        let (window, threshold) = (self.auth_window_us(), self.cfg.auth_fail_threshold);
        let facts = Facts {
            ip: *ip,
            threshold,
            window_s: self.cfg.auth_fail_window_s,
            scope,
            count: 0,
        };
        let r = self.count_and_ban(
            ip,
            now_us,
            (Reason::Auth, self.cfg.auth_ban_time_s),
            facts,
            |w| match w.auth_failures.add(now_us, window, 1) {
                n if n < threshold => Ok(AuthVerdict::Counted(n)),
                n => Err(n),
            },
            |b| AuthVerdict::AlreadyBanned(b.ban.reason()),
        )?;
        Ok(match r {
            Counted::Below(v) => v,
            Counted::JustBanned(rec) => AuthVerdict::JustBanned(rec),
            Counted::Banned(reason) => AuthVerdict::AlreadyBanned(reason),
            Counted::Whitelisted => AuthVerdict::Whitelisted,
            Counted::OverUnbanned => AuthVerdict::OverLimitUnbanned,
        })
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

    /// Every active ban: hosts' then prefixes'.
    pub fn list_bans(&self, now_us: u64) -> Result<Vec<BanRecord>, TableError> {
        let mut out = Vec::new();
        for i in 0..self.hosts.bucket_count() {
            self.hosts.retain_bucket(i, now_us, |k, s, _| {
                if let Some(r) = self.host_ban(k, s).filter(|r| r.ban.is_active(now_us)) {
                    out.push(r);
                }
                true
            })?;
        }
        for i in 0..self.bans.bucket_count() {
            self.bans.retain_bucket(i, now_us, |k, b, _| {
                if b.is_active(now_us) {
                    out.push(Self::prefix_ban(k, b));
                }
                true
            })?;
        }
        Ok(out)
    }

    /// One page of the active bans that `keep` accepts, for listing more
    /// bans than fit one reply: at most `limit` of them, starting at
    /// `cursor` (0 for the first page), and the cursor of the next page, or
    /// None when no ban is left (the page may then hold fewer than
    /// `limit`).
    ///
    /// The walk goes bucket by bucket over the hosts (their bans) and then
    /// the prefix bans, holding one bucket lock at a time like
    /// [`Engine::list_bans`], so a page costs its own buckets, not the
    /// table. A cursor is `bucket * 16 + n`, `bucket` numbering the hosts'
    /// buckets and then the prefix bans', `n` the used slots already seen
    /// in it; it stays below `(max_tracked_ips + max_bans + 32)`, within
    /// the 31 bits an MI number keeps. It is a position, not a snapshot: a
    /// ban made or lifted in an already-walked part of its bucket while
    /// paging shifts the rest by one, so a ban may be missed or listed
    /// twice, like any live listing; when nothing changes, every ban is
    /// listed exactly once.
    pub fn bans_page(
        &self,
        cursor: u64,
        limit: usize,
        now_us: u64,
        mut keep: impl FnMut(&BanRecord) -> bool,
    ) -> Result<(Vec<BanRecord>, Option<u64>), TableError> {
        const STRIDE: u64 = table::BUCKET as u64;
        let hosts = self.hosts.bucket_count() as u64;
        let buckets = hosts + self.bans.bucket_count() as u64;
        let limit = limit.max(1);
        let mut out = Vec::new();
        let (first, mut skip) = (cursor / STRIDE, cursor % STRIDE);
        for g in first..buckets {
            // Position of the first match past a full page, in this bucket.
            let mut resume = None;
            let mut pos = 0u64;
            let mut visit = |rec: Option<BanRecord>| {
                let at = pos;
                pos += 1;
                let Some(rec) = rec.filter(|r| r.ban.is_active(now_us)) else {
                    return;
                };
                if at < skip || resume.is_some() || !keep(&rec) {
                    return;
                }
                if out.len() < limit {
                    out.push(rec);
                } else {
                    resume = Some(at);
                }
            };
            if g < hosts {
                self.hosts.retain_bucket(g as usize, now_us, |k, s, _| {
                    visit(self.host_ban(k, s));
                    true
                })?;
            } else {
                self.bans
                    .retain_bucket((g - hosts) as usize, now_us, |k, b, _| {
                        visit(Some(Self::prefix_ban(k, b)));
                        true
                    })?;
            }
            skip = 0;
            // A full page walks on to the next match, so that no cursor is
            // handed out for an empty last page.
            if let Some(at) = resume {
                return Ok((out, Some(g * STRIDE + at)));
            }
        }
        Ok((out, None))
    }

    /// Reclaims lapsed entries in every table, one bucket at a time, and
    /// returns the bans that expired. Runs from a timer; workers only ever
    /// wait for the single bucket being swept.
    pub fn sweep(&self, now_us: u64) -> Result<Vec<BanRecord>, TableError> {
        let mut expired = Vec::new();
        let n = self
            .hosts
            .bucket_count()
            .max(self.bans.bucket_count())
            .max(self.rl.bucket_count());
        // The walk interleaves the three tables so none waits for the others.
        for i in 0..n {
            if i < self.hosts.bucket_count() {
                self.hosts.retain_bucket(i, now_us, |k, s, r| {
                    if r != table::Retention::Free {
                        return true;
                    }
                    if let Some(rec) = self.host_ban(k, s) {
                        expired.push(rec);
                    }
                    false
                })?;
            }
            if i < self.bans.bucket_count() {
                self.bans.retain_bucket(i, now_us, |k, b, r| {
                    if r != table::Retention::Free {
                        return true;
                    }
                    // A slot left by a refused ban holds no ban.
                    if b.created_us != 0 {
                        expired.push(Self::prefix_ban(k, b));
                    }
                    false
                })?;
            }
            if i < self.rl.bucket_count() {
                self.rl
                    .retain_bucket(i, now_us, |_, _, r| r != table::Retention::Free)?;
            }
        }
        for rec in &expired {
            self.ban_ended(rec);
        }
        Ok(expired)
    }

    /// Accounts for a ban that ran out and was reclaimed.
    fn ban_ended(&self, rec: &BanRecord) {
        self.ban_gone(rec);
        Stats::inc(&self.stats.bans_expired);
    }

    fn note_lapsed(&self, r: Option<BanRecord>) {
        if let Some(r) = r.filter(|r| r.ban.created_us != 0) {
            self.ban_ended(&r);
            let mut v = self.lapsed.lock();
            if v.len() < LAPSED_CAP {
                v.push(r);
            }
            self.mark_pending();
        }
    }

    /// Notes that a lapsed ban, a side decision or a decision waits to be
    /// drained.
    fn mark_pending(&self) {
        self.pending.store(true, Ordering::Release);
    }

    /// True (once) when something was queued for the caller to drain since
    /// the last call: the common operation, which queues nothing, then
    /// takes none of the three process-local locks to find out.
    pub fn take_pending(&self) -> bool {
        self.pending.swap(false, Ordering::AcqRel)
    }

    /// Bans that lapsed and were reclaimed by this process's own operations
    /// since the last call (the sweep reports the others).
    pub fn drain_lapsed(&self) -> Vec<BanRecord> {
        std::mem::take(&mut *self.lapsed.lock())
    }

    /// Lifts every ban; returns the active ones removed.
    pub fn flush_bans(&self, now_us: u64) -> Result<Vec<BanRecord>, TableError> {
        let mut removed = Vec::new();
        let mut lapsed = Vec::new();
        let mut sort = |rec: BanRecord, r: table::Retention| {
            if r == table::Retention::Free {
                lapsed.push(rec);
            } else {
                removed.push(rec);
            }
        };
        for i in 0..self.hosts.bucket_count() {
            self.hosts.retain_bucket(i, now_us, |k, s, r| {
                let Some(rec) = self.host_ban(k, s) else {
                    return true;
                };
                sort(rec, r);
                false
            })?;
        }
        for i in 0..self.bans.bucket_count() {
            self.bans.retain_bucket(i, now_us, |k, b, r| {
                sort(Self::prefix_ban(k, b), r);
                false
            })?;
        }
        for rec in lapsed {
            self.note_lapsed(Some(rec));
        }
        for rec in &removed {
            self.ban_gone(rec);
            Stats::inc(&self.stats.bans_removed);
        }
        Ok(removed)
    }

    /// Everything known of `ip`.
    pub fn source_info(&self, ip: &IpKey, now_us: u64) -> Result<SourceInfo, TableError> {
        let (pw, aw) = (self.pike_window_us(), self.auth_window_us());
        let timing = *self.hosts.ctx();
        let s = self.hosts.get(&self.unit(ip), now_us, |s| *s)?;
        let suspect = self.suspect_counts(ip, now_us)?;
        let age = s.and_then(|s| match s {
            HostState::Watched(w) => w.age_us(now_us, &timing),
            HostState::Banned(b) => b.requests.age_us(now_us, pw),
        });
        Ok(SourceInfo {
            ip: *ip,
            pike_requests: s.map_or(0, |s| s.requests().total(now_us, pw)),
            auth_failures: match s {
                Some(HostState::Watched(w)) => w.auth_failures.total(now_us, aw),
                _ => 0,
            },
            last_seen_us: age.map(|age| now_us.saturating_sub(age)),
            ban: self.lookup_ban(ip, now_us)?,
            whitelisted: self.whitelist.contains(ip),
            unit: self.unit_target(ip),
            history: self.offense(&self.unit_target(ip), now_us)?,
            reports: suspect.0,
            users_failed: suspect.1,
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
        for i in 0..self.rl.bucket_count() {
            self.rl.retain_bucket(i, now_us, |k, s, r| {
                if r != table::Retention::Free {
                    out.push(rec(k, s));
                }
                true
            })?;
        }
        Ok(out)
    }

    /// The `n` sources with the most requests in the current pike window.
    /// Sources are their tracked units: hosts, or IPv6 prefixes.
    pub fn top_sources(&self, n: usize, now_us: u64) -> Result<Vec<(Cidr, u32)>, TableError> {
        let w = self.pike_window_us();
        let mut all: Vec<(Cidr, u32)> = Vec::new();
        for i in 0..self.hosts.bucket_count() {
            self.hosts.retain_bucket(i, now_us, |k, s, _| {
                let c = s.requests().total(now_us, w);
                if c > 0 {
                    all.push((self.unit_target(k), c));
                }
                true
            })?;
        }
        all.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        all.truncate(n);
        Ok(all)
    }

    /// Bans in force right now (lapsed ones count until reclaimed).
    pub fn bans_active(&self) -> u64 {
        self.budget.in_force.load(Ordering::Relaxed)
    }

    /// Test hook: hold the lock of the bucket `ip` maps to in the hosts table.
    pub fn with_source_bucket_locked<R>(
        &self,
        ip: &IpKey,
        f: impl FnOnce() -> R,
    ) -> Result<R, TableError> {
        self.hosts.with_bucket_locked_for(ip, f)
    }

    /// Pike request count of `ip` in the current window.
    pub fn pike_count(&self, ip: &IpKey, now_us: u64) -> Result<u32, TableError> {
        Ok(self.source_info(ip, now_us)?.pike_requests)
    }

    /// Auth failures of `ip` in the current window.
    pub fn auth_count(&self, ip: &IpKey, now_us: u64) -> Result<u32, TableError> {
        Ok(self.source_info(ip, now_us)?.auth_failures)
    }
}

/// The longest window of each kind over every profile.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Longest {
    pub pike_window_us: u64,
    pub auth_window_us: u64,
    pub report_window_us: u64,
    pub user_fail_window_us: u64,
}

/// What a rule knew when it decided, recorded with the decision.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Facts {
    pub ip: IpKey,
    pub count: u32,
    pub threshold: u32,
    pub window_s: u32,
    pub scope: Scope,
}

/// What [`Engine::count_and_ban`] did.
enum Counted<R> {
    /// Counted below the threshold, or the host was already banned: what
    /// the caller's closure said.
    Below(R),
    JustBanned(BanRecord),
    /// Banned meanwhile by another process, found when banning.
    Banned(Reason),
    /// Whitelisted meanwhile, found when banning.
    Whitelisted,
    /// Over the threshold with no ban left in the budget.
    OverUnbanned,
}

impl<R> From<BanOutcome> for Counted<R> {
    /// What banning through the common path, outside the host's lock,
    /// came to.
    fn from(o: BanOutcome) -> Self {
        match o {
            BanOutcome::Created(rec) => Counted::JustBanned(rec),
            BanOutcome::Updated(rec) | BanOutcome::AlreadyBanned(rec) => {
                Counted::Banned(rec.ban.reason)
            }
            BanOutcome::Whitelisted(_) | BanOutcome::TooBroad(_) => Counted::Whitelisted,
            BanOutcome::TableFull => Counted::OverUnbanned,
        }
    }
}
