//! The OpenSIPS setups compared, and starting one of them.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::support::mi::Mi;
use crate::support::opensips::{Env, OpenSips, TestDir};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setup {
    None,
    Pike,
    PikeRl,
    Rsec,
    /// rsec as another build (RSEC_SO_BEFORE, e.g. the module before a
    /// change), with the same configuration: before/after in one run.
    RsecBefore,
    /// rsec with every threat rule on: the flood check with per-method
    /// limits, the scanner check, escalation, prefix aggregation, accounts,
    /// enumeration and reports configured (no rate limit: compared with
    /// pike alone).
    RsecAll,
    /// rsec with every source under a profile (by prefix) and every
    /// request for a tenant: the scoped path (profiles' own table, tenant
    /// counters), with the same thresholds as `rsec`.
    RsecScoped,
}

impl Setup {
    pub fn by_name(s: &str) -> Option<Setup> {
        Some(match s {
            "none" => Setup::None,
            "pike" => Setup::Pike,
            "pike+rl" | "pike+ratelimit" => Setup::PikeRl,
            "rsec" => Setup::Rsec,
            "rsec-before" => Setup::RsecBefore,
            "rsec-all" => Setup::RsecAll,
            "rsec-scoped" => Setup::RsecScoped,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Setup::None => "none",
            Setup::Pike => "pike",
            Setup::PikeRl => "pike+rl",
            Setup::Rsec => "rsec",
            Setup::RsecBefore => "rsec-before",
            Setup::RsecAll => "rsec-all",
            Setup::RsecScoped => "rsec-scoped",
        }
    }

    fn template(self) -> &'static str {
        match self {
            Setup::None => include_str!("../cfg/in_opensips_none.cfg"),
            Setup::Pike => include_str!("../cfg/in_opensips_pike.cfg"),
            Setup::PikeRl => include_str!("../cfg/in_opensips_pike_rl.cfg"),
            Setup::Rsec | Setup::RsecBefore => include_str!("../cfg/in_opensips_rsec.cfg"),
            Setup::RsecAll => include_str!("../cfg/in_opensips_rsec_all.cfg"),
            Setup::RsecScoped => include_str!("../cfg/in_opensips_rsec_scoped.cfg"),
        }
    }

    /// The shared objects whose own code is this setup's check (as perf
    /// names them; rsec is loaded from a private copy named librsec.so).
    pub fn dsos(self) -> &'static [&'static str] {
        match self {
            Setup::None => &[],
            Setup::Pike => &["pike.so"],
            Setup::PikeRl => &["pike.so", "ratelimit.so"],
            Setup::Rsec | Setup::RsecBefore | Setup::RsecAll | Setup::RsecScoped => {
                &["librsec.so", "rsec.so"]
            }
        }
    }
}

/// The thresholds a run is started with.
pub struct Limits {
    /// Requests per `unit` seconds before pike / sec_pike_check refuse.
    pub density: u32,
    pub unit: u32,
    /// Requests per second per source for ratelimit / sec_rl_check.
    pub rl_limit: u32,
    /// rsec's max_tracked_ips.
    pub tracked: u32,
}

impl Limits {
    /// The attack and million scenarios' thresholds: the knobs' density
    /// and table size, a rate limit out of reach.
    pub fn scenario(k: &crate::knobs::Knobs) -> Limits {
        Limits {
            density: k.density,
            unit: k.unit,
            rl_limit: 100_000_000,
            tracked: k.tracked,
        }
    }

    /// Thresholds no benchmark traffic reaches: a cost measurement.
    pub fn never_refused(tracked: u32) -> Limits {
        Limits {
            density: 100_000_000,
            unit: 2,
            rl_limit: 100_000_000,
            tracked,
        }
    }
}

/// A fresh OpenSIPS running `setup` with `workers` UDP workers and
/// `shm_mb` of shared memory, and its MI client once it answers.
pub fn start(
    env: &Env,
    dir: &TestDir,
    name: &str,
    setup: Setup,
    workers: u32,
    shm_mb: u32,
    limits: &Limits,
) -> (OpenSips, Mi) {
    if setup == Setup::RsecBefore {
        // OpenSips::start loads dir/librsec.so, copying RSEC_SO there only
        // when it is not there yet.
        let before = std::env::var_os("RSEC_SO_BEFORE").expect("rsec-before needs RSEC_SO_BEFORE");
        std::fs::copy(&before, dir.join("librsec.so"))
            .unwrap_or_else(|e| panic!("copy {before:?}: {e}"));
    }
    // rsec counts at most 65,534 requests per window (pike takes any).
    let density = match setup {
        Setup::Rsec | Setup::RsecBefore | Setup::RsecAll | Setup::RsecScoped => {
            limits.density.min(65_534)
        }
        _ => limits.density,
    };
    let vars = [
        ("WORKERS", workers.to_string()),
        ("PIKE_DENSITY", density.to_string()),
        ("PIKE_UNIT", limits.unit.to_string()),
        ("RL_LIMIT", limits.rl_limit.to_string()),
        ("RSEC_TRACKED", limits.tracked.to_string()),
    ];
    let shm = shm_mb.to_string();
    let os = OpenSips::start_with_http_args(env, dir, name, setup.template(), &vars, &["-m", &shm]);
    let mi = Mi::new(os.http_port.expect("started with http"));
    mi.wait_ready(Duration::from_secs(10))
        .expect("mi_http answers");
    (os, mi)
}

/// Every statistic of `groups` (e.g. "shmem:", "core:", "rsec:") by its
/// full name, or None when MI does not answer (as when OpenSIPS's shared
/// memory is exhausted).
pub fn stats(mi: &Mi, groups: &[&str]) -> Option<BTreeMap<String, u64>> {
    let list = groups
        .iter()
        .map(|g| format!("\"{g}\""))
        .collect::<Vec<_>>()
        .join(",");
    let (_, _, j) = mi
        .exchange("get_statistics", &format!(r#"{{"statistics":[{list}]}}"#))
        .ok()?;
    let r = j.get("result")?.as_object()?;
    Some(
        r.iter()
            .filter_map(|(k, v)| Some((k.clone(), v.as_u64()?)))
            .collect(),
    )
}
