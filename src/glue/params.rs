//! Module parameters. Integer parameters are the engine's settings, each
//! declared once in engine/config.rs (name, default, range); their cells
//! and export entries are generated here from that list. String parameters
//! are declared once each in [`str_params!`] below.

use std::os::raw::c_int;

use crate::db::store::valid_node_id;
use crate::db::DbUrl;
use crate::engine::modparams::{config_from, ModValue, ModparamError};
use crate::engine::{Config, ConfigError};
use crate::ffi::param::{self, IntCell, ListCell, ParamFunc, StrCell};
use crate::ffi::sys::ParamExport;

use super::persist::Settings;

const N_INT: usize = Config::INT_PARAMS.len();

/// One cell per integer setting, in `Config::INT_PARAMS` order, holding its
/// default until the script sets it.
static INT_CELLS: [IntCell; N_INT] = {
    let mut cells = [const { IntCell::new(0) }; N_INT];
    let mut i = 0;
    while i < N_INT {
        cells[i] = IntCell::new(Config::INT_PARAMS[i].default as c_int);
        i += 1;
    }
    cells
};

macro_rules! str_params {
    ($($(#[doc = $doc:literal])* $cell:ident: $name:literal;)*) => {
        $($(#[doc = $doc])* static $cell: StrCell = StrCell::new(std::ptr::null());)*
        const STR_PARAMS: [(&std::ffi::CStr, &StrCell); [$($name),*].len()] = [$((crate::ffi::cstr!($name), &$cell)),*];
    };
}

str_params! {
    /// Comma-separated prefixes never counted or banned.
    WHITELIST: "whitelist";
    /// mysql://user:password@host[:port]/database; persistence is off without it.
    DB_URL: "db_url";
    /// This node's name in the shared tables (default: the host name).
    NODE_ID: "node_id";
    /// Per-method flood limits: `REGISTER:10,INVITE:20`.
    METHOD_DENSITY: "pike_method_density";
    /// Scanner signatures replacing the built-in list ("" for none).
    SCANNER_PATTERNS: "scanner_patterns";
    /// Scanner signatures added to the list in force.
    SCANNER_PATTERNS_ADD: "scanner_patterns_add";
}

/// Repeatable string modparams (see engine::modparams::REPEATABLE): each
/// value adds to the others.
static PROFILES: ListCell = ListCell::new();
static PROFILE_PREFIXES: ListCell = ListCell::new();
static TENANT_WHITELIST: ListCell = ListCell::new();
crate::list_param_fn!(profile_param => PROFILES);
crate::list_param_fn!(profile_prefix_param => PROFILE_PREFIXES);
crate::list_param_fn!(tenant_whitelist_param => TENANT_WHITELIST);

const LIST_PARAMS: [(&std::ffi::CStr, &ListCell, ParamFunc); 3] = [
    (c"profile", &PROFILES, profile_param),
    (c"profile_prefix", &PROFILE_PREFIXES, profile_prefix_param),
    (
        c"tenant_whitelist",
        &TENANT_WHITELIST,
        tenant_whitelist_param,
    ),
];

const N_PARAMS: usize = N_INT + STR_PARAMS.len() + LIST_PARAMS.len();

/// Every modparam, then the terminator.
pub static PARAMS: [ParamExport; N_PARAMS + 1] = {
    let mut out = [param::END; N_PARAMS + 1];
    let mut i = 0;
    while i < N_INT {
        out[i] = param::int(Config::INT_PARAMS[i].name, &INT_CELLS[i]);
        i += 1;
    }
    let mut j = 0;
    while j < STR_PARAMS.len() {
        out[N_INT + j] = param::str(STR_PARAMS[j].0, STR_PARAMS[j].1);
        j += 1;
    }
    let mut k = 0;
    while k < LIST_PARAMS.len() {
        out[N_INT + STR_PARAMS.len() + k] = param::list(LIST_PARAMS[k].0, LIST_PARAMS[k].2);
        k += 1;
    }
    out
};

/// Why the modparams cannot start the module.
pub enum ParamError {
    Engine(ModparamError),
    Db(&'static str, String),
}

impl std::fmt::Display for ParamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParamError::Engine(e) => e.fmt(f),
            ParamError::Db(p, e) => write!(f, "modparam '{p}': {e}"),
        }
    }
}

/// Builds the engine configuration and, with db_url, the persistence
/// settings from what the script set.
pub fn config() -> Result<(Config, Option<Settings>), ParamError> {
    let mut given: Vec<(&str, ModValue)> = Config::INT_PARAMS
        .iter()
        .zip(&INT_CELLS)
        .map(|(p, cell)| (p.name(), ModValue::Int(cell.value())))
        .collect();
    for (name, cell) in STR_PARAMS {
        if let Some(v) = cell.value() {
            given.push((name.to_str().unwrap_or("?"), ModValue::Str(v)));
        }
    }
    for (name, cell, _) in LIST_PARAMS {
        for v in cell.values() {
            given.push((name.to_str().unwrap_or("?"), ModValue::Str(v)));
        }
    }
    let mut cfg = config_from(given.iter().map(|(n, v)| (*n, v))).map_err(ParamError::Engine)?;
    let db = match DB_URL.value().filter(|u| !u.trim().is_empty()) {
        None => {
            cfg.db_queue_size = 0;
            None
        }
        Some(u) => {
            let url = DbUrl::parse(&u).map_err(|e| ParamError::Db("db_url", e))?;
            let node_id = NODE_ID.value().unwrap_or_else(hostname);
            if !valid_node_id(&node_id) {
                return Err(ParamError::Db(
                    "node_id",
                    format!("'{node_id}' must be 1-64 characters of A-Z a-z 0-9 . _ -"),
                ));
            }
            if cfg.db_queue_size == 0 {
                return Err(ParamError::Engine(ModparamError::Config(ConfigError {
                    param: "db_queue_size",
                    value: 0,
                    why: "must be greater than 0 with db_url".to_owned(),
                })));
            }
            Some(Settings {
                url,
                node_id,
                static_whitelist: cfg.whitelist.clone(),
            })
        }
    };
    Ok((cfg, db))
}

/// The default node_id: this host's name, made safe for node_id.
fn hostname() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name: String = raw
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "._-".contains(*c))
        .take(64)
        .collect();
    if name.is_empty() {
        "rsec".to_owned()
    } else {
        name
    }
}
