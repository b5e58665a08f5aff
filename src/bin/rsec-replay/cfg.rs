//! rsec's parameters as an opensips.cfg sets them
//! (`modparam("rsec", "name", value)`), and as `--set name=value` does.
//! The configuration itself is built by the engine's own
//! `modparams::config_from`, as the module builds it.

use rsec::engine::config::Config;
use rsec::engine::modparams::{config_from, ModValue, ModparamError};

/// One parameter and where it was set (`opensips.cfg:42`, `--set`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Param {
    pub name: String,
    pub value: ModValue,
    pub origin: String,
}

/// A cfg file that cannot be read, or an rsec modparam in it whose value
/// is neither an integer nor a quoted string.
#[derive(Debug, PartialEq, Eq)]
pub struct CfgError(pub String);

impl std::fmt::Display for CfgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Every `modparam("rsec" | "rsec.so", "name", value)` of `text`, in
/// order. `#` and `/* */` comments are skipped; other modules' modparams
/// are ignored whatever their value. `file` names the text in errors.
pub fn modparams(file: &str, text: &str) -> Result<Vec<Param>, CfgError> {
    let toks = tokens(text).map_err(|(line, why)| CfgError(format!("{file}:{line}: {why}")))?;
    let mut out = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        if toks[i].tok != Tok::Word("modparam")
            || toks.get(i + 1).map(|t| &t.tok) != Some(&Tok::Punct('('))
        {
            i += 1;
            continue;
        }
        let line = toks[i].line;
        let at = format!("{file}:{line}");
        // The arguments, up to the closing parenthesis.
        let close = toks[i..]
            .iter()
            .position(|t| t.tok == Tok::Punct(')'))
            .map(|p| i + p)
            .ok_or_else(|| CfgError(format!("{at}: modparam without its closing ')'")))?;
        let args: Vec<&[Token]> = toks[i + 2..close]
            .split(|t| t.tok == Tok::Punct(','))
            .collect();
        i = close + 1;
        let module = match args.first() {
            Some(
                [Token {
                    tok: Tok::Str(m), ..
                }],
            ) => m.as_str(),
            _ => continue,
        };
        if module != "rsec" && module != "rsec.so" {
            continue;
        }
        let name = match args.get(1) {
            Some(
                [Token {
                    tok: Tok::Str(n), ..
                }],
            ) if args.len() == 3 => n.clone(),
            _ => {
                return Err(CfgError(format!(
                "{at}: modparam(\"{module}\", ...) must be modparam(\"{module}\", \"name\", value)"
            )))
            }
        };
        let value = match args[2] {
            [Token { tok: Tok::Str(s), .. }] => ModValue::Str(s.clone()),
            [Token { tok: Tok::Word(w), .. }] => int(w).map(ModValue::Int).ok_or_else(|| {
                CfgError(format!(
                    "{at}: modparam \"{name}\": '{w}' is neither an integer nor a double-quoted string"
                ))
            })?,
            [Token { tok: Tok::Punct('-'), .. }, Token { tok: Tok::Word(w), .. }] => int(w)
                .map(|v| ModValue::Int(-v))
                .ok_or_else(|| {
                    CfgError(format!("{at}: modparam \"{name}\": '-{w}' is not an integer"))
                })?,
            _ => {
                return Err(CfgError(format!(
                    "{at}: modparam \"{name}\": the value must be an integer or a double-quoted string"
                )))
            }
        };
        out.push(Param {
            name,
            value,
            origin: at,
        });
    }
    Ok(out)
}

/// Reads a cfg file's rsec modparams.
pub fn read_file(path: &str) -> Result<Vec<Param>, CfgError> {
    let text = std::fs::read(path).map_err(|e| CfgError(format!("{path}: {e}")))?;
    let text = String::from_utf8_lossy(&text);
    let params = modparams(path, &text)?;
    if text.contains("include_file") || text.contains("import_file") {
        eprintln!(
            "rsec-replay: warning: {path} includes other files; only its own modparams are read"
        );
    }
    Ok(params)
}

/// `--set name=value`: an integer for an integer parameter, else a string
/// (quotes around it optional).
pub fn set(arg: &str, flag: &str) -> Result<Param, String> {
    let (name, value) = arg
        .split_once('=')
        .filter(|(n, _)| !n.trim().is_empty())
        .ok_or_else(|| format!("{flag} '{arg}': expected name=value"))?;
    let name = name.trim();
    let unquoted = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value);
    let is_int = Config::INT_PARAMS.iter().any(|p| p.name() == name);
    let value = match int(unquoted.trim()) {
        Some(v) if is_int => ModValue::Int(v),
        _ => ModValue::Str(unquoted.to_owned()),
    };
    Ok(Param {
        name: name.to_owned(),
        value,
        origin: format!("{flag} {arg}"),
    })
}

/// The engine's configuration from the parameters in order (a later value
/// replaces an earlier one, as in OpenSIPS); an error names the parameter
/// and where it was last set.
pub fn config(params: &[Param]) -> Result<Config, String> {
    config_from(params.iter().map(|p| (p.name.as_str(), &p.value))).map_err(|e| {
        let name = match &e {
            ModparamError::Config(c) => c.param.to_owned(),
            ModparamError::Str(p, _) | ModparamError::Unknown(p) => p.clone(),
        };
        match params.iter().rev().find(|p| p.name == name) {
            Some(p) => format!("{e} (set at {})", p.origin),
            None => e.to_string(),
        }
    })
}

/// How a parameter set is described in reports: `name=value` of each
/// parameter in force (the last of each name), in order.
pub fn describe(params: &[Param]) -> Vec<String> {
    let mut seen = Vec::<&str>::new();
    let mut out: Vec<String> = params
        .iter()
        .rev()
        .filter(|p| {
            let new = !seen.contains(&p.name.as_str());
            seen.push(&p.name);
            new
        })
        .map(|p| match &p.value {
            ModValue::Int(v) => format!("{}={v}", p.name),
            ModValue::Str(s) => format!("{}=\"{s}\"", p.name),
        })
        .collect();
    out.reverse();
    out
}

fn int(w: &str) -> Option<i64> {
    match w.strip_prefix("0x").or_else(|| w.strip_prefix("0X")) {
        Some(h) => i64::from_str_radix(h, 16).ok(),
        None if w.bytes().all(|b| b.is_ascii_digit()) => w.parse().ok(),
        None => None,
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok<'a> {
    /// A bare word or number.
    Word(&'a str),
    /// A quoted string, escapes resolved.
    Str(String),
    Punct(char),
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Token<'a> {
    tok: Tok<'a>,
    line: usize,
}

/// The cfg's tokens, comments dropped; an error is (line, why).
fn tokens(text: &str) -> Result<Vec<Token<'_>>, (usize, String)> {
    let b = text.as_bytes();
    let (mut out, mut i, mut line) = (Vec::new(), 0, 1);
    while i < b.len() {
        let c = b[i];
        match c {
            b'\n' => {
                line += 1;
                i += 1;
            }
            _ if c.is_ascii_whitespace() => i += 1,
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let start = line;
                i += 2;
                loop {
                    match b.get(i) {
                        None => return Err((start, "'/*' comment never closed".into())),
                        Some(b'*') if b.get(i + 1) == Some(&b'/') => {
                            i += 2;
                            break;
                        }
                        Some(&ch) => {
                            line += usize::from(ch == b'\n');
                            i += 1;
                        }
                    }
                }
            }
            b'"' | b'\'' => {
                let (start, quote) = (line, c);
                let mut s = Vec::new();
                i += 1;
                loop {
                    match b.get(i) {
                        None => return Err((start, "string never closed".into())),
                        Some(&ch) if ch == quote => {
                            i += 1;
                            break;
                        }
                        Some(b'\\') if i + 1 < b.len() => {
                            s.push(match b[i + 1] {
                                b'n' => b'\n',
                                b't' => b'\t',
                                b'r' => b'\r',
                                other => other,
                            });
                            line += usize::from(b[i + 1] == b'\n');
                            i += 2;
                        }
                        Some(&ch) => {
                            line += usize::from(ch == b'\n');
                            s.push(ch);
                            i += 1;
                        }
                    }
                }
                out.push(Token {
                    tok: Tok::Str(String::from_utf8_lossy(&s).into_owned()),
                    line: start,
                });
            }
            _ if c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c == b'$' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b"_.$".contains(&b[i])) {
                    i += 1;
                }
                out.push(Token {
                    tok: Tok::Word(&text[start..i]),
                    line,
                });
            }
            _ => {
                // Multi-byte characters are skipped whole.
                let ch = text[i..].chars().next().unwrap_or('?');
                out.push(Token {
                    tok: Tok::Punct(ch),
                    line,
                });
                i += ch.len_utf8();
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(ps: &[Param]) -> Vec<(&str, &ModValue)> {
        ps.iter().map(|p| (p.name.as_str(), &p.value)).collect()
    }

    #[test]
    fn ints_strings_and_comments() {
        let cfg = r#"
loadmodule "rsec.so"
# modparam("rsec", "pike_density", 1)
modparam("rsec", "pike_density", 50)   # trailing comment
/* modparam("rsec", "pike_ban_time", 1)
   still a comment */ modparam("rsec.so", "pike_ban_time", 0x3c)
modparam( "rsec" ,
    "whitelist", "10.0.0.0/8, # not a comment" )
modparam("rsec", "pike_method_density", 'REGISTER:20')
modparam("rsec", "min_prefix_v4", -1)
"#;
        let ps = modparams("t.cfg", cfg).unwrap();
        assert_eq!(
            names(&ps),
            vec![
                ("pike_density", &ModValue::Int(50)),
                ("pike_ban_time", &ModValue::Int(60)),
                (
                    "whitelist",
                    &ModValue::Str("10.0.0.0/8, # not a comment".into())
                ),
                ("pike_method_density", &ModValue::Str("REGISTER:20".into())),
                ("min_prefix_v4", &ModValue::Int(-1)),
            ]
        );
        assert_eq!(ps[0].origin, "t.cfg:4");
        assert_eq!(ps[1].origin, "t.cfg:6");
        assert_eq!(ps[2].origin, "t.cfg:7");
    }

    #[test]
    fn other_modules_ignored() {
        let cfg = r#"
modparam("auth_db", "calculate_ha1", yes)
modparam("usrloc", "db_url", "mysql://x")
modparam("rsec_other", "pike_density", 1)
modparam("tm", "fr_timeout", 5)
route { if ($rc == -1) exit; }
"#;
        assert_eq!(modparams("t.cfg", cfg).unwrap(), vec![]);
    }

    #[test]
    fn bad_value_names_the_parameter() {
        let e = modparams("o.cfg", "\n\nmodparam(\"rsec\", \"pike_density\", yes)\n").unwrap_err();
        assert!(e.0.contains("o.cfg:3"), "{e}");
        assert!(e.0.contains("pike_density"), "{e}");
        let e = modparams("o.cfg", "modparam(\"rsec\", \"x\", \"open").unwrap_err();
        assert!(
            e.0.contains("o.cfg:1") && e.0.contains("never closed"),
            "{e}"
        );
        let e = modparams("o.cfg", "modparam(\"rsec\", \"pike_density\")").unwrap_err();
        assert!(e.0.contains("o.cfg:1"), "{e}");
    }

    #[test]
    fn config_errors_name_parameter_and_place() {
        let mut ps = modparams("o.cfg", "modparam(\"rsec\", \"pike_density\", 0)\n").unwrap();
        let e = config(&ps).unwrap_err();
        assert!(e.contains("pike_density") && e.contains("o.cfg:1"), "{e}");
        ps.push(set("pike_density=abc", "--set").unwrap());
        let e = config(&ps).unwrap_err();
        assert!(
            e.contains("pike_density") && e.contains("--set pike_density=abc"),
            "{e}"
        );
        let e = config(&[set("no_such=1", "--set").unwrap()]).unwrap_err();
        assert!(e.contains("no_such"), "{e}");
    }

    #[test]
    fn sets() {
        let c = config(&[
            set("pike_density=7", "--set").unwrap(),
            set("scanner_patterns_add=\"Evil\"", "--set").unwrap(),
            set("whitelist=10.0.0.0/8", "--set").unwrap(),
        ])
        .unwrap();
        assert_eq!(c.pike_density, 7);
        assert!(c.scanner_patterns.iter().any(|p| p == "Evil"));
        assert_eq!(c.whitelist.len(), 1);
        assert!(set("=1", "--set").is_err());
        assert!(set("pike_density", "--set").is_err());
    }

    #[test]
    fn describe_keeps_the_last_of_each() {
        let ps = vec![
            set("pike_density=7", "--set").unwrap(),
            set("pike_ban_time=9", "--set").unwrap(),
            set("pike_density=8", "--set").unwrap(),
        ];
        assert_eq!(describe(&ps), vec!["pike_ban_time=9", "pike_density=8"]);
    }
}
