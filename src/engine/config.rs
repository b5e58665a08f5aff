//! Engine settings, with the module's documented defaults and validation
//! that names the offending parameter.

use super::ip::Cidr;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub pike_sampling_time_s: u32,
    pub pike_density: u32,
    pub pike_ban_time_s: u32,
    pub ban_time_s: u32,
    pub auth_fail_threshold: u32,
    pub auth_fail_window_s: u32,
    pub auth_ban_time_s: u32,
    pub max_tracked_ips: u32,
    pub max_rl_keys: u32,
    pub max_bans: u32,
    pub lock_stripes: u32,
    /// Capacity of the queue of ban decisions waiting to be persisted
    /// (0 = no persistence, no queue).
    pub db_queue_size: u32,
    pub whitelist: Vec<Cidr>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            pike_sampling_time_s: 2,
            pike_density: 30,
            pike_ban_time_s: 300,
            ban_time_s: 3600,
            auth_fail_threshold: 5,
            auth_fail_window_s: 60,
            auth_ban_time_s: 900,
            max_tracked_ips: 65536,
            max_rl_keys: 16384,
            max_bans: 16384,
            lock_stripes: 64,
            db_queue_size: 4096,
            whitelist: Vec::new(),
        }
    }
}

/// A parameter outside its allowed range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub param: &'static str,
    pub value: i64,
    pub why: &'static str,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "modparam '{}' = {}: {}", self.param, self.value, self.why)
    }
}

impl Config {
    /// Upper bound on table sizes: 16M entries keeps the mapping in the low GiB.
    pub const MAX_ENTRIES: u32 = 1 << 24;

    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("pike_sampling_time", self.pike_sampling_time_s),
            ("pike_density", self.pike_density),
            ("pike_ban_time", self.pike_ban_time_s),
            ("auth_fail_threshold", self.auth_fail_threshold),
            ("auth_fail_window", self.auth_fail_window_s),
            ("auth_ban_time", self.auth_ban_time_s),
        ];
        for (param, v) in positive {
            if v == 0 {
                return Err(ConfigError { param, value: 0, why: "must be greater than 0" });
            }
        }
        let sizes = [
            ("max_tracked_ips", self.max_tracked_ips),
            ("max_rl_keys", self.max_rl_keys),
            ("max_bans", self.max_bans),
        ];
        for (param, v) in sizes {
            if !(16..=Self::MAX_ENTRIES).contains(&v) {
                return Err(ConfigError { param, value: v as i64, why: "must be between 16 and 16777216" });
            }
        }
        if !(1..=4096).contains(&self.lock_stripes) {
            return Err(ConfigError {
                param: "lock_stripes",
                value: self.lock_stripes as i64,
                why: "must be between 1 and 4096",
            });
        }
        if self.db_queue_size > Self::MAX_ENTRIES {
            return Err(ConfigError {
                param: "db_queue_size",
                value: self.db_queue_size as i64,
                why: "must be at most 16777216",
            });
        }
        Ok(())
    }
}
