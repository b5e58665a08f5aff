//! Engine settings. Every integer setting is declared once, in [`settings!`]
//! below: its field, the modparam that sets it, its default, its range and
//! its unit. The `Config` struct, its defaults, its validation and the
//! module's modparam table (glue/params.rs walks [`Config::INT_PARAMS`]) are
//! all generated from that one list, so a default cannot disagree with the
//! documented one in a second place.

use super::ip::Cidr;
use super::methods::MethodLimit;
use super::profile::{ProfileDef, DEFAULT_NAME, MAX_PROFILES};
use super::scanner::ScannerPatterns;
use super::suspect::ENUM_MAX;

/// One integer setting as the module exports it.
pub struct IntParam {
    /// Modparam name (NUL-terminated for the C export table).
    pub name: &'static std::ffi::CStr,
    pub default: u32,
    pub min: u32,
    pub max: u32,
    /// What the number counts, for messages ("s", "entries", ...).
    pub unit: &'static str,
    /// The field it sets.
    pub field: fn(&mut Config) -> &mut u32,
    pub read: fn(&Config) -> u32,
}

impl IntParam {
    pub fn name(&self) -> &'static str {
        // Names are ASCII literals (see settings!).
        self.name.to_str().unwrap_or("?")
    }

    fn check(&self, v: u32) -> Result<(), ConfigError> {
        if (self.min..=self.max).contains(&v) {
            return Ok(());
        }
        let why = match (self.min, self.max) {
            (1, u32::MAX) => "must be greater than 0".to_owned(),
            (_, u32::MAX) => format!("must be at least {}", self.min),
            (min, max) => format!("must be between {min} and {max}"),
        };
        Err(ConfigError {
            param: self.name(),
            value: v as i64,
            why,
        })
    }
}

macro_rules! settings {
    ($($(#[doc = $doc:literal])* $field:ident: $name:literal = $default:expr, [$min:expr, $max:expr], $unit:literal;)*) => {
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub struct Config {
            $($(#[doc = $doc])* pub $field: u32,)*
            /// Prefixes never counted or banned.
            pub whitelist: Vec<Cidr>,
            /// Per-method flood limits (`pike_method_density`).
            pub method_limits: Vec<MethodLimit>,
            /// What a scanner's User-Agent or Server header holds
            /// (`scanner_patterns`, `scanner_patterns_add`).
            pub scanner_patterns: Vec<String>,
            /// Named threshold sets besides the default (`profile`).
            pub profiles: Vec<ProfileDef>,
            /// Prefixes whose requests use a profile (`profile_prefix`).
            pub profile_prefixes: Vec<(Cidr, String)>,
            /// Prefixes whitelisted for one tenant only (`tenant_whitelist`).
            pub tenant_whitelist: Vec<(String, Cidr)>,
        }

        impl Default for Config {
            fn default() -> Self {
                Config {
                    $($field: $default,)*
                    whitelist: Vec::new(),
                    method_limits: Vec::new(),
                    scanner_patterns: ScannerPatterns::BUILTIN.iter().map(|&p| p.to_owned()).collect(),
                    profiles: Vec::new(),
                    profile_prefixes: Vec::new(),
                    tenant_whitelist: Vec::new(),
                }
            }
        }

        impl Config {
            /// Every integer setting, in declaration order.
            pub const INT_PARAMS: &'static [IntParam] = &[$(IntParam {
                name: match std::ffi::CStr::from_bytes_with_nul(concat!($name, "\0").as_bytes()) {
                    Ok(c) => c,
                    Err(_) => panic!("NUL inside a parameter name"),
                },
                default: $default,
                min: $min,
                max: $max,
                unit: $unit,
                field: |c| &mut c.$field,
                read: |c| c.$field,
            }),*];
        }
    };
}

/// Seconds in ten years: the longest ban or window accepted, so that no
/// time computation can overflow and no typo bans for a century.
pub const MAX_SECONDS: u32 = 10 * 365 * 86_400;

settings! {
    /// Flood window length.
    pike_sampling_time_s: "pike_sampling_time" = 2, [1, 3600], "s";
    /// Requests allowed per window; the next one bans. At most 65,534: a
    /// window counts each sub-interval in 16 bits (see engine/window.rs).
    pike_density: "pike_density" = 30, [1, 65_534], "requests";
    pike_ban_time_s: "pike_ban_time" = 300, [1, MAX_SECONDS], "s";
    /// Default length of a manual ban (0 = until unbanned).
    ban_time_s: "ban_time" = 3600, [0, MAX_SECONDS], "s";
    /// Failures that ban; at most 255 (8-bit sub-interval counts).
    auth_fail_threshold: "auth_fail_threshold" = 5, [1, 255], "failures";
    auth_fail_window_s: "auth_fail_window" = 60, [1, 86_400], "s";
    auth_ban_time_s: "auth_ban_time" = 900, [1, MAX_SECONDS], "s";
    max_tracked_ips: "max_tracked_ips" = 65536, [16, Config::MAX_ENTRIES], "entries";
    max_rl_keys: "max_rl_keys" = 16384, [16, Config::MAX_ENTRIES], "entries";
    max_bans: "max_bans" = 16384, [16, Config::MAX_ENTRIES], "entries";
    /// Whitelist entries held (memory for all of them is taken at start-up,
    /// see engine/whitelist.rs).
    max_whitelist: "max_whitelist" = 65536, [16, Config::MAX_ENTRIES], "entries";
    /// No longer used (every 16-entry bucket has its own lock); still
    /// accepted so existing configurations load.
    lock_stripes: "lock_stripes" = 64, [1, 4096], "locks";
    /// Capacity of the queue of ban decisions waiting to be persisted
    /// (0 = no persistence, no queue).
    db_queue_size: "db_queue_size" = 4096, [0, Config::MAX_ENTRIES], "changes";
    /// How often other nodes' changes are imported (with db_url).
    db_sync_interval_s: "db_sync_interval" = 5, [1, 86_400], "s";
    /// Connect/read/write timeout of the database (with db_url).
    db_timeout_s: "db_timeout" = 3, [1, 300], "s";
    /// Shortest IPv4 prefix a ban or whitelist entry may have (0 allows /0).
    min_prefix_v4: "min_prefix_v4" = 8, [0, 32], "bits";
    /// Shortest IPv6 prefix a ban or whitelist entry may have (0 allows /0).
    min_prefix_v6: "min_prefix_v6" = 32, [0, 128], "bits";
    /// IPv6 sources are counted and banned per prefix of this length: one
    /// host owns a whole /64 and could rotate through it unseen per /128.
    ipv6_track_prefix: "ipv6_track_prefix" = 64, [16, 128], "bits";
    /// Units banned at once inside one prefix that ban the prefix (0 = off).
    subnet_ban_threshold: "subnet_ban_threshold" = 0, [0, 65_535], "addresses";
    subnet_prefix_v4: "subnet_prefix_v4" = 24, [1, 32], "bits";
    subnet_prefix_v6: "subnet_prefix_v6" = 64, [1, 128], "bits";
    subnet_ban_time_s: "subnet_ban_time" = 3600, [1, MAX_SECONDS], "s";
    /// A ban made within this long of the previous one's end is a repeat
    /// (0 = no escalation).
    recidive_window_s: "recidive_window" = 86_400, [0, MAX_SECONDS], "s";
    ban_multiplier: "ban_multiplier" = 2, [1, 1000], "times";
    ban_time_max_s: "ban_time_max" = 604_800, [1, MAX_SECONDS], "s";
    /// Failures of one username, from any sources, that block it (0 = off).
    user_fail_threshold: "user_fail_threshold" = 10, [0, 255], "failures";
    user_fail_window_s: "user_fail_window" = 60, [1, 86_400], "s";
    user_block_time_s: "user_block_time" = 300, [1, MAX_SECONDS], "s";
    /// Distinct usernames failing from one source in `auth_fail_window`
    /// that ban it (0 = off).
    enum_threshold: "enum_threshold" = 10, [0, ENUM_MAX as u32], "usernames";
    /// Reported weight in `report_window` that bans.
    report_threshold: "report_threshold" = 10, [1, 65_534], "weight";
    report_window_s: "report_window" = 60, [1, 86_400], "s";
    report_ban_time_s: "report_ban_time" = 900, [1, MAX_SECONDS], "s";
    scanner_ban_time_s: "scanner_ban_time" = 3600, [1, MAX_SECONDS], "s";
    /// Banned targets whose history is kept for escalation.
    max_offenders: "max_offenders" = 65_536, [16, Config::MAX_ENTRIES], "entries";
    /// Usernames whose failures are counted (blocked ones included).
    max_users: "max_users" = 16_384, [16, Config::MAX_ENTRIES], "entries";
    /// Sources with reported abuse or failed usernames tracked.
    max_suspects: "max_suspects" = 16_384, [16, Config::MAX_ENTRIES], "entries";
    /// Decide and report, but ban nothing: every function returns its pass
    /// value (1 = on, for every profile that does not say otherwise).
    dry_run: "dry_run" = 0, [0, 1], "flag";
    /// Tenants counted apart (per-tenant whitelist, bans and statistics).
    max_tenants: "max_tenants" = 1024, [1, 65_536], "tenants";
    /// Recent decisions kept for `sec_explain` and `sec_decisions`.
    decision_ring: "decision_ring" = 1024, [16, 1 << 20], "decisions";
}

/// A parameter outside its allowed range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub param: &'static str,
    pub value: i64,
    pub why: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "modparam '{}' = {}: {}",
            self.param, self.value, self.why
        )
    }
}

impl Config {
    /// Upper bound on table sizes: 16M entries keeps the mapping in the low GiB.
    pub const MAX_ENTRIES: u32 = 1 << 24;

    pub fn validate(&self) -> Result<(), ConfigError> {
        for p in Self::INT_PARAMS {
            p.check((p.read)(self))?;
        }
        let at_least = |param: &'static str, v: u32, min: u32, min_param: &str| {
            if v < min {
                return Err(ConfigError {
                    param,
                    value: v as i64,
                    why: format!("must be at least {min_param} ({min})"),
                });
            }
            Ok(())
        };
        at_least(
            "ipv6_track_prefix",
            self.ipv6_track_prefix,
            self.min_prefix_v6,
            "min_prefix_v6",
        )?;
        at_least(
            "subnet_prefix_v4",
            self.subnet_prefix_v4,
            self.min_prefix_v4,
            "min_prefix_v4",
        )?;
        at_least(
            "subnet_prefix_v6",
            self.subnet_prefix_v6,
            self.min_prefix_v6,
            "min_prefix_v6",
        )?;
        if self.enum_threshold == 1 {
            return Err(ConfigError {
                param: "enum_threshold",
                value: 1,
                why: "must be 0 (off) or at least 2: one username is not an enumeration".to_owned(),
            });
        }
        for (i, p) in self.profiles.iter().enumerate() {
            let dup = p.name == DEFAULT_NAME || self.profiles[..i].iter().any(|q| q.name == p.name);
            let why = if dup {
                Some(format!(
                    "'{}' is declared twice (or is the default's name)",
                    p.name
                ))
            } else if i + 1 >= MAX_PROFILES {
                Some(format!("more than {} profiles", MAX_PROFILES - 1))
            } else {
                None
            };
            if let Some(why) = why {
                return Err(ConfigError {
                    param: "profile",
                    value: i as i64 + 1,
                    why,
                });
            }
        }
        for (c, name) in &self.profile_prefixes {
            if !self.profiles.iter().any(|p| p.name == *name) && name != DEFAULT_NAME {
                return Err(ConfigError {
                    param: "profile_prefix",
                    value: c.family_prefix() as i64,
                    why: format!("'{c}={name}': no profile is named '{name}'"),
                });
            }
        }
        for c in &self.whitelist {
            if let Err(why) = self.check_breadth(c) {
                return Err(ConfigError {
                    param: "whitelist",
                    value: c.family_prefix() as i64,
                    why: format!("'{c}': {why}"),
                });
            }
        }
        Ok(())
    }

    /// Sets one integer setting from its modparam value, checking its range.
    pub fn set(&mut self, p: &IntParam, v: i64) -> Result<(), ConfigError> {
        let v = u32::try_from(v).map_err(|_| ConfigError {
            param: p.name(),
            value: v,
            why: if v < 0 {
                "must not be negative".to_owned()
            } else {
                "too large".to_owned()
            },
        })?;
        p.check(v)?;
        *(p.field)(self) = v;
        Ok(())
    }

    /// Refuses a ban or whitelist prefix shorter than `min_prefix_v4` /
    /// `min_prefix_v6`: a `0.0.0.0/0` typed by mistake would ban (or
    /// whitelist) everyone, and a firewall fed by the events would follow.
    pub fn check_breadth(&self, c: &Cidr) -> Result<(), TooBroad> {
        let ipv4 = c.addr.is_v4() && c.prefix >= 96;
        let min = if ipv4 {
            self.min_prefix_v4
        } else {
            self.min_prefix_v6
        };
        if (c.family_prefix() as u32) < min {
            return Err(TooBroad {
                min: min as u8,
                ipv4,
            });
        }
        Ok(())
    }
}

/// A prefix shorter than the minimum its family allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooBroad {
    /// The shortest prefix length allowed (`min_prefix_v4` or `_v6`).
    pub min: u8,
    pub ipv4: bool,
}

impl std::fmt::Display for TooBroad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (family, param) = if self.ipv4 {
            ("IPv4", "v4")
        } else {
            ("IPv6", "v6")
        };
        write!(
            f,
            "shorter than the /{} allowed for {family} (modparam min_prefix_{param})",
            self.min
        )
    }
}
