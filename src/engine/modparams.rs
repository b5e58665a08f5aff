//! The engine's settings from `modparam` values given by name, as a
//! script sets them. The module (glue/params.rs) and `rsec-replay` (which
//! reads them from an opensips.cfg) both build their [`Config`] here, so a
//! threshold replayed offline is the threshold OpenSIPS enforces.

use super::config::{Config, ConfigError};
use super::ip::parse_cidr_list;
use super::methods::parse_method_density;
use super::profile::{parse_prefixes, ProfileDef};
use super::scanner::effective_patterns;
use super::tenant::parse_tenant_whitelist;

/// One modparam value as written in the script.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModValue {
    Int(i64),
    Str(String),
}

/// Why the modparams cannot make a configuration: the parameter and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModparamError {
    Config(ConfigError),
    /// A string modparam that does not parse, or a value of the wrong type.
    Str(String, String),
    /// A name rsec does not have.
    Unknown(String),
}

impl std::fmt::Display for ModparamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModparamError::Config(e) => e.fmt(f),
            ModparamError::Str(p, e) => write!(f, "modparam '{p}': {e}"),
            ModparamError::Unknown(p) => write!(f, "modparam '{p}': rsec has no such parameter"),
        }
    }
}

/// String modparams that only the module reads (persistence); accepted
/// and ignored here.
pub const MODULE_ONLY: &[&str] = &["db_url", "node_id"];

/// Modparams that may be given many times, each adding to the others.
pub const REPEATABLE: &[&str] = &["profile", "profile_prefix", "tenant_whitelist"];

/// Builds and validates a configuration from modparams in script order
/// (a later value of the same name replaces the earlier one, as OpenSIPS
/// does, except the [`REPEATABLE`] ones, which add up).
pub fn config_from<'a>(
    params: impl IntoIterator<Item = (&'a str, &'a ModValue)>,
) -> Result<Config, ModparamError> {
    let mut cfg = Config::default();
    let (mut patterns, mut patterns_add) = (None::<String>, None::<String>);
    // Profiles start from the global settings, whatever the order the
    // script sets them in: parsed once all are known.
    let mut profiles: Vec<String> = Vec::new();
    for (name, value) in params {
        if let Some(p) = Config::INT_PARAMS.iter().find(|p| p.name() == name) {
            let v = match value {
                ModValue::Int(v) => *v,
                ModValue::Str(s) => s.trim().parse::<i64>().map_err(|_| {
                    ModparamError::Str(name.to_owned(), format!("'{s}' is not a number"))
                })?,
            };
            cfg.set(p, v).map_err(ModparamError::Config)?;
            continue;
        }
        let s = match value {
            ModValue::Str(s) => s.as_str(),
            ModValue::Int(v) => {
                return Err(ModparamError::Str(
                    name.to_owned(),
                    format!("expects a string, not {v}"),
                ))
            }
        };
        let bad = |why: String| ModparamError::Str(name.to_owned(), why);
        match name {
            "whitelist" => cfg.whitelist = parse_cidr_list(s).map_err(|e| bad(e.to_string()))?,
            "pike_method_density" => cfg.method_limits = parse_method_density(s).map_err(bad)?,
            "scanner_patterns" => patterns = Some(s.to_owned()),
            "profile" => profiles.push(s.to_owned()),
            "profile_prefix" => cfg.profile_prefixes.extend(parse_prefixes(s).map_err(bad)?),
            "tenant_whitelist" => cfg
                .tenant_whitelist
                .extend(parse_tenant_whitelist(s).map_err(bad)?),
            "scanner_patterns_add" => patterns_add = Some(s.to_owned()),
            n if MODULE_ONLY.contains(&n) => {}
            n => return Err(ModparamError::Unknown(n.to_owned())),
        }
    }
    cfg.scanner_patterns = effective_patterns(patterns.as_deref(), patterns_add.as_deref())
        .map_err(|e| {
            for param in ["scanner_patterns_add", "scanner_patterns"] {
                if let Some(why) = e.strip_prefix(param).and_then(|r| r.strip_prefix(": ")) {
                    return ModparamError::Str(param.to_owned(), why.to_owned());
                }
            }
            ModparamError::Str("scanner_patterns".to_owned(), e)
        })?;
    for text in &profiles {
        let def = ProfileDef::parse(text, &cfg)
            .map_err(|e| ModparamError::Str("profile".to_owned(), e))?;
        cfg.profiles.push(def);
    }
    cfg.validate().map_err(ModparamError::Config)?;
    Ok(cfg)
}
