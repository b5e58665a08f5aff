//! rsec-replay: replays a packet capture or a SIP log through rsec's own
//! engine, with the thresholds of an opensips.cfg, and reports which
//! sources rsec would have banned, when, why and what it would have cost
//! them. See `--help` and the README's "rsec-replay" section.

mod capture;
mod cfg;
mod picture;
mod report;
mod run;
mod sip;

use std::path::Path;

use capture::Message;
use cfg::Param;
use report::{Input, Run, Tally};
use run::{Emulator, Reply, Request, Script};
use sip::Kind;

const HELP: &str = "\
rsec-replay: replays a packet capture or a SIP log through rsec's engine,
with the thresholds of an opensips.cfg, and reports what rsec would have
banned: which sources, when, by which rule, and how many of their requests
would have been lost.

Usage: rsec-replay [OPTIONS] INPUT

INPUT is told from its first bytes:
  pcap or pcapng   link types Ethernet (tcpdump -i lo), LINUX_SLL and
                   LINUX_SLL2 (tcpdump -i any), RAW/IPV4/IPV6, NULL/LOOP;
                   IPv4 and IPv6; SIP over UDP, and over TCP (each flow's
                   payload reassembled in capture order and cut at the blank
                   line plus Content-Length). IP fragments are skipped.
  SIP log          a text file of messages, each preceded by a line
                     # <unix-seconds.micros> <src-ip>:<port> -> <dst-ip>:<port>
                   e.g. '# 1700000000.250000 192.0.2.7:5060 -> 198.51.100.1:5060'
                   (IPv6 as [2001:db8::1]:5060). Other lines starting with
                   '#' before the first message are comments.
Time is the capture's (or log's) timestamps.

Parameters (rsec's defaults for any not given):
  --cfg FILE              every modparam(\"rsec\", \"name\", value) of an
                          opensips.cfg (module \"rsec\" or \"rsec.so\"; value an
                          integer or a quoted string; comments skipped)
  --set NAME=VALUE        one modparam, applied after the cfg (repeatable)

Comparison (either option turns it on):
  --compare-cfg FILE      parameter set B: A's parameters, then this file's
  --compare FILE          rsec modparams on top
  --compare-set NAME=VALUE  then this on top (repeatable); e.g.
                          --compare-set pike_density=60 replays A against
                          the same settings with only the density changed

Emulation of the script (opensips-cfg-examples/rsec.cfg):
  every request        sec_pike_check() from its source address (all bans,
                       overall and per-method floods); a request refused is
                       lost, the script stops there
                       then sec_scanner_check() on its User-Agent
  --no-scanner         leave sec_scanner_check() out
  --auth-fail-on LIST  reply statuses that count as a failed authentication
                       (sec_auth_fail) of the address the reply goes to, as
                       the user of its To URI: comma-separated, or 'none'.
                       Default 403. A 401 or 407 is the challenge every
                       client gets before it authenticates, so counting those
                       would count every phone; add them only knowing that.
  --tenant-from ruri   the tenant of each request is its Request-URI's host,
                       as sec_tenant(\"$rd\") would name it (default none):
                       tenant whitelists and tenant-scoped bans then apply
  Profiles: profile_prefix of the parameters picks each source's profile,
  as it does live; replies are checked under their destination's profile
  and no tenant.
  Replies to requests the replay refused are not counted: they would never
  have been sent. The sweep runs once per second of capture time, so bans
  expire as they would live. sec_rl_check(), sec_user_blocked() and
  sec_report() depend on the script and are not emulated.

Output:
  --json                  the report as JSON (on standard output)
  --picture FILE.svg      draw the decisions over time: one row per source,
                          requests as ticks (grey passed, red lost), bans as
                          bars with their rule where they start
  --picture-rows N        sources given a row each (default 20); the others
                          share one row
  -h, --help              this text
  -V, --version

Exit status: 0 done, 1 an input that cannot be read (the file is named),
2 a usage error (the option or value is named).
";

/// Why the tool stops.
enum Fail {
    /// A wrong option or value: exit 2.
    Usage(String),
    /// An input or output file that cannot be read or written: exit 1.
    Input(String),
}

#[derive(Default)]
struct Opts {
    input: Option<String>,
    cfg: Option<String>,
    sets: Vec<String>,
    compare_cfg: Option<String>,
    compare_sets: Vec<String>,
    auth_fail_on: Option<String>,
    no_scanner: bool,
    tenant_from: Option<String>,
    json: bool,
    picture: Option<String>,
    picture_rows: usize,
}

fn parse_args(args: impl Iterator<Item = String>) -> Result<Option<Opts>, Fail> {
    let mut o = Opts {
        picture_rows: 20,
        ..Opts::default()
    };
    let mut args = args.peekable();
    while let Some(a) = args.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (a.clone(), None),
        };
        let mut value = |what: &str| -> Result<String, Fail> {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| Fail::Usage(format!("{flag} needs {what}")))
        };
        match flag.as_str() {
            "-h" | "--help" => {
                print!("{HELP}");
                return Ok(None);
            }
            "-V" | "--version" => {
                println!("rsec-replay {}", env!("CARGO_PKG_VERSION"));
                return Ok(None);
            }
            "--cfg" => o.cfg = Some(value("a file")?),
            "--set" => o.sets.push(value("NAME=VALUE")?),
            "--compare-cfg" | "--compare" => o.compare_cfg = Some(value("a file")?),
            "--compare-set" => o.compare_sets.push(value("NAME=VALUE")?),
            "--auth-fail-on" => o.auth_fail_on = Some(value("a list of statuses")?),
            "--tenant-from" => o.tenant_from = Some(value("ruri or none")?),
            "--picture" => o.picture = Some(value("a file")?),
            "--picture-rows" => {
                let v = value("a number")?;
                o.picture_rows = v.parse().ok().filter(|&n| n > 0).ok_or_else(|| {
                    Fail::Usage(format!("--picture-rows '{v}': expected a number above 0"))
                })?;
            }
            "--no-scanner" | "--json" if inline.is_some() => {
                return Err(Fail::Usage(format!("{flag} takes no value")))
            }
            "--no-scanner" => o.no_scanner = true,
            "--json" => o.json = true,
            f if f.starts_with('-') && f.len() > 1 => {
                return Err(Fail::Usage(format!("unknown option '{f}'")))
            }
            _ if o.input.is_some() => {
                return Err(Fail::Usage(format!(
                    "one input only ('{a}' is a second one)"
                )))
            }
            _ => o.input = Some(a),
        }
    }
    if o.input.is_none() {
        return Err(Fail::Usage("no INPUT given".into()));
    }
    Ok(Some(o))
}

fn auth_statuses(list: Option<&str>) -> Result<Vec<u16>, Fail> {
    let list = list.unwrap_or("403").trim();
    if list.eq_ignore_ascii_case("none") {
        return Ok(Vec::new());
    }
    list.split(',')
        .map(|s| {
            s.trim()
                .parse::<u16>()
                .ok()
                .filter(|c| (100..700).contains(c))
                .ok_or_else(|| {
                    Fail::Usage(format!(
                        "--auth-fail-on '{list}': '{}' is not a SIP status (100-699)",
                        s.trim()
                    ))
                })
        })
        .collect()
}

/// A parameter set: a cfg file's modparams (if any), then `--set`s.
fn params(
    base: &[Param],
    file: Option<&str>,
    sets: &[String],
    flag: &str,
) -> Result<Vec<Param>, Fail> {
    let mut out = base.to_vec();
    if let Some(f) = file {
        out.extend(cfg::read_file(f).map_err(|e| Fail::Input(e.to_string()))?);
    }
    for s in sets {
        out.push(cfg::set(s, flag).map_err(Fail::Usage)?);
    }
    Ok(out)
}

/// The engine's configuration; a bad value given on the command line is a
/// usage error, one in a file an input error.
fn config(ps: &[Param]) -> Result<rsec::engine::Config, Fail> {
    cfg::config(ps).map_err(|e| {
        if e.contains("(set at --") {
            Fail::Usage(e)
        } else {
            Fail::Input(e)
        }
    })
}

/// One parameter set replayed.
struct Side {
    name: &'static str,
    /// Every parameter in force, `name=value`.
    params: Vec<String>,
    /// How the text report names the set.
    label: String,
    emu: Emulator,
    tally: Tally,
}

impl Side {
    fn message(&mut self, m: &Message, s: &sip::Sip) -> Result<(), String> {
        let tx = report::transaction(s.call_id, s.cseq);
        match s.kind {
            Kind::Request(method) => {
                let src = m.src.ip().to_canonical();
                let out = self.emu.check(&Request {
                    ts_us: m.ts_us,
                    src,
                    method,
                    user_agent: s.user_agent,
                    tenant: s.ruri_host,
                })?;
                self.tally.request(src, m.ts_us, tx, out);
            }
            Kind::Reply(status) => {
                if !self.tally.answers_lost(tx) {
                    let dst = m.dst.ip().to_canonical();
                    let out = self.emu.reply(&Reply {
                        ts_us: m.ts_us,
                        dst,
                        status,
                        to_user: s.to_user,
                    })?;
                    self.tally.reply(dst, out);
                }
            }
        }
        for b in self.emu.side_bans() {
            self.tally.side_ban(b);
        }
        Ok(())
    }
}

/// A's parameters in a line: the cfg file (its modparams counted, not
/// listed) and each `--set`.
fn label_a(file: Option<&str>, ps: &[Param]) -> String {
    let from_file = ps.iter().filter(|p| !p.origin.starts_with("--")).count();
    let sets: Vec<Param> = ps
        .iter()
        .filter(|p| p.origin.starts_with("--"))
        .cloned()
        .collect();
    let mut parts: Vec<String> = file
        .map(|f| format!("{f} ({from_file} rsec modparams)"))
        .into_iter()
        .collect();
    parts.extend(cfg::describe(&sets));
    if parts.is_empty() {
        "rsec defaults".into()
    } else {
        parts.join(", ")
    }
}

/// B as what it changes from A.
fn label_b(a: &[String], b: &[String], file: Option<&str>) -> String {
    let changed: Vec<&str> = b
        .iter()
        .filter(|p| !a.contains(p))
        .map(String::as_str)
        .collect();
    match (changed.len(), file) {
        (0, _) => "the same as A".into(),
        (1..=6, _) | (_, None) => format!("A with {}", changed.join(" ")),
        (n, Some(f)) => format!("A with {n} parameters changed by {f}"),
    }
}

fn real_main() -> Result<(), Fail> {
    let Some(o) = parse_args(std::env::args().skip(1))? else {
        return Ok(());
    };
    let input = o.input.as_deref().unwrap_or_default();
    let script = Script {
        auth_fail_on: auth_statuses(o.auth_fail_on.as_deref())?,
        scanner: !o.no_scanner,
        tenant_from_ruri: match o.tenant_from.as_deref() {
            None | Some("none") => false,
            Some("ruri") => true,
            Some(other) => {
                return Err(Fail::Usage(format!(
                    "--tenant-from '{other}': use 'ruri' (the Request-URI's host, $rd) or 'none'"
                )))
            }
        },
    };
    let a = params(&[], o.cfg.as_deref(), &o.sets, "--set")?;
    let comparing = o.compare_cfg.is_some() || !o.compare_sets.is_empty();
    let b = comparing
        .then(|| {
            params(
                &a,
                o.compare_cfg.as_deref(),
                &o.compare_sets,
                "--compare-set",
            )
        })
        .transpose()?;
    let mut sides = Vec::new();
    for (name, ps) in [("A", Some(&a)), ("B", b.as_ref())] {
        let Some(ps) = ps else { continue };
        let emu = Emulator::new(config(ps)?, script.clone())
            .map_err(|e| Fail::Input(format!("cannot start the engine: {e}")))?;
        let params = cfg::describe(ps);
        let label = match name {
            "A" => label_a(o.cfg.as_deref(), ps),
            _ => label_b(&cfg::describe(&a), &params, o.compare_cfg.as_deref()),
        };
        sides.push(Side {
            name,
            params,
            label,
            emu,
            tally: Tally::new(o.picture.is_some()),
        });
    }

    let mut unparsable = 0u64;
    let (format, stats) = capture::read(Path::new(input), &mut |m| {
        let Some(s) = sip::parse(m.bytes) else {
            unparsable += 1;
            return Ok(());
        };
        sides.iter_mut().try_for_each(|side| side.message(m, &s))
    })
    .map_err(|e| Fail::Input(e.to_string()))?;

    let inp = Input {
        path: input,
        format: format.name(),
        stats: &stats,
        unparsable,
    };
    let runs: Vec<Run> = sides
        .iter()
        .map(|s| Run {
            name: s.name,
            label: &s.label,
            params: &s.params,
            tally: &s.tally,
        })
        .collect();
    let out = match (&runs[..], o.json) {
        ([a], false) => report::text(&inp, a),
        ([a], true) => report::json(&inp, a),
        ([a, b], false) => report::compare_text(&inp, a, b),
        ([a, b], true) => report::compare_json(&inp, a, b),
        _ => unreachable!("one or two parameter sets"),
    };
    print!("{out}");
    if let Some(path) = &o.picture {
        std::fs::write(path, picture::svg(&inp, &runs, o.picture_rows))
            .map_err(|e| Fail::Input(format!("{path}: {e}")))?;
        eprintln!("rsec-replay: drew {path}");
    }
    Ok(())
}

fn main() {
    std::process::exit(match real_main() {
        Ok(()) => 0,
        Err(Fail::Usage(m)) => {
            eprintln!("rsec-replay: {m} (see rsec-replay --help)");
            2
        }
        Err(Fail::Input(m)) => {
            eprintln!("rsec-replay: {m}");
            1
        }
    });
}
