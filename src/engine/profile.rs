//! Profiles: named sets of thresholds, so a carrier trunk, a PBX behind
//! one NAT and a phone are each judged by limits that fit them.
//!
//! Profile 0 is the default: the module's own modparams. Every other
//! profile starts from those and overrides some of the per-source settings
//! ([`PROFILE_PARAMS`], `pike_method_density`, `dry_run`, `ban_scope`);
//! table sizes, windows of the shared rule tables and prefix settings stay
//! global. A profile is written `name: setting=value; setting=value`, for
//! example `trunk: pike_density=600; pike_method_density=INVITE:400`.
//!
//! The thresholds live in shared memory so that a reload (MI, from the
//! database) reaches every process: each profile's slot is read without
//! a lock under a sequence number (odd while a writer changes it, which
//! writers serialise on a robust mutex), so the request path never waits.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

use super::config::Config;
use super::ip::{Cidr, IpKey};
use super::methods::{parse_method_density, MethodLimit, MAX_METHODS};
use crate::shm::{Locked, Region};

/// Profiles held, the default included.
pub const MAX_PROFILES: usize = 32;
/// Longest profile name.
pub const NAME_MAX: usize = 32;
/// The default profile's name, as logs and MI show it.
pub const DEFAULT_NAME: &str = "default";

/// The integer settings a profile may set; every other one is global.
pub const PROFILE_PARAMS: &[&str] = &[
    "pike_sampling_time",
    "pike_density",
    "pike_ban_time",
    "auth_fail_threshold",
    "auth_fail_window",
    "auth_ban_time",
    "recidive_window",
    "ban_multiplier",
    "ban_time_max",
    "enum_threshold",
    "report_threshold",
    "report_window",
    "report_ban_time",
    "scanner_ban_time",
    "user_fail_threshold",
    "user_fail_window",
    "user_block_time",
];

/// Index of a profile: 0 is the default.
pub type ProfileId = u8;

/// A profile as declared: its name and the settings it ends up with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProfileDef {
    pub name: String,
    /// The global settings with this profile's overrides.
    pub cfg: Config,
    pub dry_run: bool,
    /// Bans made under this profile apply only to the tenant of the
    /// request that made them (`ban_scope=tenant`).
    pub tenant_bans: bool,
}

impl ProfileDef {
    /// Parses `name: setting=value; ...` over the global settings `base`.
    pub fn parse(text: &str, base: &Config) -> Result<ProfileDef, String> {
        let (name, body) = text
            .split_once(':')
            .ok_or_else(|| format!("'{text}': expected 'name: setting=value; ...'"))?;
        let name = name.trim();
        check_name(name)?;
        let mut def = ProfileDef {
            name: name.to_owned(),
            cfg: base.clone(),
            dry_run: base.dry_run != 0,
            tenant_bans: false,
        };
        for item in body.split(';').map(str::trim).filter(|i| !i.is_empty()) {
            let (k, v) = item
                .split_once('=')
                .ok_or_else(|| format!("profile '{name}': '{item}': expected setting=value"))?;
            let (k, v) = (k.trim(), v.trim());
            let bad = |why: String| format!("profile '{name}': {k}={v}: {why}");
            match k {
                "pike_method_density" => {
                    def.cfg.method_limits = parse_method_density(v).map_err(bad)?
                }
                "dry_run" => {
                    def.dry_run = match v {
                        "0" => false,
                        "1" => true,
                        _ => return Err(bad("must be 0 or 1".to_owned())),
                    }
                }
                "ban_scope" => {
                    def.tenant_bans = match v {
                        "global" => false,
                        "tenant" => true,
                        _ => return Err(bad("must be 'global' or 'tenant'".to_owned())),
                    }
                }
                k if PROFILE_PARAMS.contains(&k) => {
                    let p = Config::INT_PARAMS
                        .iter()
                        .find(|p| p.name() == k)
                        .ok_or_else(|| bad("unknown setting".to_owned()))?;
                    let n = v
                        .parse::<i64>()
                        .map_err(|_| bad("not a number".to_owned()))?;
                    def.cfg.set(p, n).map_err(|e| bad(e.why))?;
                }
                _ => {
                    return Err(bad(format!(
                    "not a profile setting (one of {}, pike_method_density, dry_run, ban_scope)",
                    PROFILE_PARAMS.join(", ")
                )))
                }
            }
        }
        Ok(def)
    }
}

/// A profile name: 1 to 32 of `A-Z a-z 0-9 _ - .`.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > NAME_MAX
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
    {
        return Err(format!(
            "'{name}' is not a profile name (1 to {NAME_MAX} of A-Z a-z 0-9 _ - .)"
        ));
    }
    Ok(())
}

/// The thresholds one check runs with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    pub pike_window_s: u32,
    pub pike_density: u32,
    pub pike_ban_s: u32,
    pub auth_threshold: u32,
    pub auth_window_s: u32,
    pub auth_ban_s: u32,
    pub recidive_window_s: u32,
    pub ban_multiplier: u32,
    pub ban_time_max_s: u32,
    pub enum_threshold: u32,
    pub report_threshold: u32,
    pub report_window_s: u32,
    pub report_ban_s: u32,
    pub scanner_ban_s: u32,
    pub user_fail_threshold: u32,
    pub user_fail_window_s: u32,
    pub user_block_s: u32,
    /// Requests per flood window of each method of the engine's method
    /// list (see [`method_names`]); 0: no limit of its own.
    pub methods: [u32; MAX_METHODS],
    pub dry_run: bool,
    pub tenant_bans: bool,
}

/// Integer settings of a [`Limits`], before its method densities.
const SETTINGS: usize = 17;
/// Words of a [`Limits`] in shared memory.
const WORDS: usize = SETTINGS + MAX_METHODS + 1;

impl Limits {
    /// The limits of `cfg` (its `method_limits` placed by `names`).
    pub fn of(cfg: &Config, names: &[String], dry_run: bool, tenant_bans: bool) -> Limits {
        let mut methods = [0; MAX_METHODS];
        for l in &cfg.method_limits {
            if let Some(i) = names.iter().position(|n| *n == l.method) {
                methods[i] = l.density;
            }
        }
        Limits {
            pike_window_s: cfg.pike_sampling_time_s,
            pike_density: cfg.pike_density,
            pike_ban_s: cfg.pike_ban_time_s,
            auth_threshold: cfg.auth_fail_threshold,
            auth_window_s: cfg.auth_fail_window_s,
            auth_ban_s: cfg.auth_ban_time_s,
            recidive_window_s: cfg.recidive_window_s,
            ban_multiplier: cfg.ban_multiplier,
            ban_time_max_s: cfg.ban_time_max_s,
            enum_threshold: cfg.enum_threshold,
            report_threshold: cfg.report_threshold,
            report_window_s: cfg.report_window_s,
            report_ban_s: cfg.report_ban_time_s,
            scanner_ban_s: cfg.scanner_ban_time_s,
            user_fail_threshold: cfg.user_fail_threshold,
            user_fail_window_s: cfg.user_fail_window_s,
            user_block_s: cfg.user_block_time_s,
            methods,
            dry_run,
            tenant_bans,
        }
    }

    fn words(&self) -> [u32; WORDS] {
        let mut w = [0; WORDS];
        w[..SETTINGS].copy_from_slice(&[
            self.pike_window_s,
            self.pike_density,
            self.pike_ban_s,
            self.auth_threshold,
            self.auth_window_s,
            self.auth_ban_s,
            self.recidive_window_s,
            self.ban_multiplier,
            self.ban_time_max_s,
            self.enum_threshold,
            self.report_threshold,
            self.report_window_s,
            self.report_ban_s,
            self.scanner_ban_s,
            self.user_fail_threshold,
            self.user_fail_window_s,
            self.user_block_s,
        ]);
        w[SETTINGS..SETTINGS + MAX_METHODS].copy_from_slice(&self.methods);
        w[WORDS - 1] = self.dry_run as u32 | (self.tenant_bans as u32) << 1;
        w
    }

    fn from_words(w: &[u32; WORDS]) -> Limits {
        let mut methods = [0; MAX_METHODS];
        methods.copy_from_slice(&w[SETTINGS..SETTINGS + MAX_METHODS]);
        Limits {
            pike_window_s: w[0],
            pike_density: w[1],
            pike_ban_s: w[2],
            auth_threshold: w[3],
            auth_window_s: w[4],
            auth_ban_s: w[5],
            recidive_window_s: w[6],
            ban_multiplier: w[7],
            ban_time_max_s: w[8],
            enum_threshold: w[9],
            report_threshold: w[10],
            report_window_s: w[11],
            report_ban_s: w[12],
            scanner_ban_s: w[13],
            user_fail_threshold: w[14],
            user_fail_window_s: w[15],
            user_block_s: w[16],
            methods,
            dry_run: w[WORDS - 1] & 1 != 0,
            tenant_bans: w[WORDS - 1] & 2 != 0,
        }
    }
}

/// Every method any profile limits, in a fixed order: the per-method
/// table counts a method by its index here, so the list is fixed at
/// start-up (a reload may set other densities, not new methods).
pub fn method_names<'a>(
    lists: impl IntoIterator<Item = &'a [MethodLimit]>,
) -> Result<Vec<String>, String> {
    let mut names: Vec<String> = Vec::new();
    for list in lists {
        for l in list {
            if !names.contains(&l.method) {
                names.push(l.method.clone());
            }
        }
    }
    if names.len() > MAX_METHODS {
        return Err(format!(
            "the profiles limit {} methods between them ({}); at most {MAX_METHODS}",
            names.len(),
            names.join(", ")
        ));
    }
    Ok(names)
}

/// One profile in shared memory.
#[derive(Default)]
struct Slot {
    /// Odd while a writer changes the slot.
    seq: AtomicU64,
    /// Length of the name; 0: unused.
    name_len: AtomicU32,
    name: [AtomicU32; NAME_MAX / 4],
    words: [AtomicU32; WORDS],
}

#[derive(Default)]
struct Slots {
    slots: [Slot; MAX_PROFILES],
}

/// The profiles in force, shared by every process.
pub struct ProfileSet {
    /// Serialises writers (the value is unused).
    lock: &'static Locked<u8>,
    set: &'static Slots,
}

/// A snapshot of one profile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProfileView {
    pub id: ProfileId,
    pub name: String,
    pub limits: Limits,
}

impl ProfileSet {
    pub fn shm_bytes() -> usize {
        std::mem::size_of::<Slots>() + std::mem::size_of::<Locked<u8>>() + 64
    }

    pub fn new(region: &mut Region) -> io::Result<ProfileSet> {
        let lock = region.alloc::<Locked<u8>>()?;
        lock.init()?;
        Ok(ProfileSet {
            lock,
            set: region.alloc()?,
        })
    }

    /// Reads a slot consistently. A writer killed mid-change leaves the
    /// slot odd until the next write: past a bound the read is taken as it
    /// is (each word is a whole old or new value), since a worker must
    /// never spin forever on a dead writer.
    fn read<R>(&self, id: ProfileId, f: impl Fn(&Slot) -> R) -> R {
        const PATIENCE: u32 = 1 << 12;
        let s = &self.set.slots[id as usize % MAX_PROFILES];
        for _ in 0..PATIENCE {
            let s1 = s.seq.load(Ordering::Acquire);
            if s1 & 1 == 0 {
                let r = f(s);
                fence(Ordering::Acquire);
                if s.seq.load(Ordering::Relaxed) == s1 {
                    return r;
                }
            }
            std::hint::spin_loop();
        }
        f(s)
    }

    /// The limits of profile `id` (an unused slot reads as all zeros,
    /// never asked for: ids come from [`ProfileSet::find`]).
    pub fn limits(&self, id: ProfileId) -> Limits {
        self.read(id, |s| {
            let mut w = [0u32; WORDS];
            for (d, a) in w.iter_mut().zip(&s.words) {
                *d = a.load(Ordering::Relaxed);
            }
            Limits::from_words(&w)
        })
    }

    fn name_of(s: &Slot) -> Vec<u8> {
        let len = (s.name_len.load(Ordering::Relaxed) as usize).min(NAME_MAX);
        let mut b = [0u8; NAME_MAX];
        for (i, w) in s.name.iter().enumerate() {
            b[i * 4..i * 4 + 4].copy_from_slice(&w.load(Ordering::Relaxed).to_le_bytes());
        }
        b[..len].to_vec()
    }

    /// The profile named `name`.
    pub fn find(&self, name: &[u8]) -> Option<ProfileId> {
        (0..MAX_PROFILES as u8).find(|&id| self.read(id, |s| Self::name_of(s) == name))
    }

    pub fn name(&self, id: ProfileId) -> String {
        String::from_utf8_lossy(&self.read(id, Self::name_of)).into_owned()
    }

    /// Every profile in use, the default first.
    pub fn list(&self) -> Vec<ProfileView> {
        (0..MAX_PROFILES as u8)
            .filter_map(|id| {
                let name = self.read(id, Self::name_of);
                (!name.is_empty()).then(|| ProfileView {
                    id,
                    name: String::from_utf8_lossy(&name).into_owned(),
                    limits: self.limits(id),
                })
            })
            .collect()
    }

    /// Sets profile `name` to `limits`: its own slot when it exists, else
    /// a free one. Returns its id, or None when all slots are in use.
    pub fn put(&self, name: &str, limits: &Limits) -> io::Result<Option<ProfileId>> {
        let _g = self.lock.lock()?;
        let id = match self.find(name.as_bytes()) {
            Some(id) => id,
            None => match (0..MAX_PROFILES as u8)
                .find(|&id| self.set.slots[id as usize].name_len.load(Ordering::Relaxed) == 0)
            {
                Some(id) => id,
                None => return Ok(None),
            },
        };
        let s = &self.set.slots[id as usize];
        let seq = s.seq.load(Ordering::Relaxed);
        // A writer killed mid-change left the slot odd: carry on from there.
        let odd = seq | 1;
        s.seq.store(odd, Ordering::Relaxed);
        fence(Ordering::Release);
        let mut b = [0u8; NAME_MAX];
        let n = name.len().min(NAME_MAX);
        b[..n].copy_from_slice(&name.as_bytes()[..n]);
        for (i, w) in s.name.iter().enumerate() {
            w.store(
                u32::from_le_bytes(b[i * 4..i * 4 + 4].try_into().unwrap_or_default()),
                Ordering::Relaxed,
            );
        }
        s.name_len.store(n as u32, Ordering::Relaxed);
        for (a, v) in s.words.iter().zip(limits.words()) {
            a.store(v, Ordering::Relaxed);
        }
        s.seq.store(odd + 1, Ordering::Release);
        Ok(Some(id))
    }
}

crate::shm_safe!(Slot, Slots);

/// Prefixes mapped to profiles (`profile_prefix`): the profile of a
/// request the script gave none. Read on every request while any is set,
/// so a lookup masks the address once per prefix length in use and probes
/// a hash map, the most specific length first. Fixed before the fork
/// (process memory: every process holds the same copy).
#[derive(Clone, Debug, Default)]
pub struct PrefixMap {
    /// Per length in use, longest first: masked address to profile.
    lengths: Vec<(u8, HashMap<u128, ProfileId>)>,
}

impl PrefixMap {
    pub fn new(entries: &[(Cidr, ProfileId)]) -> PrefixMap {
        let mut m: HashMap<u8, HashMap<u128, ProfileId>> = HashMap::new();
        for (c, id) in entries {
            let c = Cidr::new(c.addr, c.prefix);
            m.entry(c.prefix).or_default().insert(c.addr.as_u128(), *id);
        }
        let mut lengths: Vec<_> = m.into_iter().collect();
        lengths.sort_by_key(|l| std::cmp::Reverse(l.0));
        PrefixMap { lengths }
    }

    pub fn is_empty(&self) -> bool {
        self.lengths.is_empty()
    }

    /// The profile of the most specific prefix holding `ip`.
    pub fn get(&self, ip: &IpKey) -> Option<ProfileId> {
        let a = ip.as_u128();
        self.lengths
            .iter()
            .find_map(|(p, m)| m.get(&(a & IpKey::mask(*p))).copied())
    }
}

/// Parses `profile_prefix`: `10.0.0.0/8=trunk, 192.0.2.0/24=pbx`.
pub fn parse_prefixes(s: &str) -> Result<Vec<(Cidr, String)>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|i| !i.is_empty())
        .map(|item| {
            let (c, name) = item
                .split_once('=')
                .ok_or_else(|| format!("'{item}': expected prefix=profile"))?;
            let c = Cidr::parse(c.trim()).map_err(|e| format!("'{item}': {}", e.why()))?;
            check_name(name.trim())?;
            Ok((c, name.trim().to_owned()))
        })
        .collect()
}
