//! What a run decided, per source and in total ([`Tally`]), and how it is
//! shown: a plain-text table, JSON, and the difference between two runs.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;

use rsec::engine::{Cidr, Reason};

use crate::capture::Stats;
use crate::run::{Ban, Outcome, ReplyOutcome};

/// A ban's profile, and its tenant ("-" for none; "only" marks a ban for
/// that tenant's traffic alone), as the report shows them.
fn profile_of(b: &Ban) -> String {
    let p = String::from_utf8_lossy(b.profile.as_bytes()).into_owned();
    if b.dry_run {
        format!("{p} (dry run)")
    } else {
        p
    }
}

fn tenant_of(b: &Ban) -> String {
    match String::from_utf8_lossy(b.tenant.as_bytes()) {
        t if t.is_empty() => "-".to_owned(),
        t if b.tenant_only => format!("{t} (only)"),
        t => t.into_owned(),
    }
}

/// One ban as one source met it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceBan {
    pub ban: Ban,
    /// Requests seen from the source up to and including the one that met
    /// this ban first.
    pub requests_at_ban: u64,
    /// Its requests refused under this ban.
    pub lost: u64,
}

/// One request on the picture's time line.
#[derive(Clone, Copy, Debug)]
pub struct Tick {
    pub t_us: u64,
    pub lost: bool,
}

#[derive(Clone, Debug)]
pub struct Source {
    pub ip: IpAddr,
    pub requests: u64,
    pub lost: u64,
    pub bans: Vec<SourceBan>,
    /// Every request, when a picture is drawn.
    pub ticks: Vec<Tick>,
}

impl Source {
    fn new(ip: IpAddr) -> Source {
        Source {
            ip,
            requests: 0,
            lost: 0,
            bans: Vec::new(),
            ticks: Vec::new(),
        }
    }

    /// The ban met, counted once per ban.
    fn met(&mut self, ban: Ban) -> &mut SourceBan {
        let same = |b: &SourceBan| b.ban.target == ban.target && b.ban.start_us == ban.start_us;
        if !self.bans.last().is_some_and(same) {
            self.bans.push(SourceBan {
                ban,
                requests_at_ban: self.requests,
                lost: 0,
            });
        }
        self.bans.last_mut().expect("just pushed")
    }
}

/// One run's decisions.
#[derive(Default)]
pub struct Tally {
    pub sources: HashMap<IpAddr, Source>,
    /// Every ban the engine made, once each.
    pub bans: HashMap<(Cidr, u64), Ban>,
    pub requests: u64,
    pub replies: u64,
    pub lost: u64,
    /// Refused over a limit with no room left in the ban table.
    pub refused_unbanned: u64,
    pub auth_failures: u64,
    /// Replies to requests this run refused: never sent, so never counted.
    pub replies_skipped: u64,
    /// The requests refused, by transaction (Call-ID and CSeq).
    lost_tx: HashSet<u64>,
    pub keep_ticks: bool,
}

/// A transaction's key: its Call-ID and CSeq (the same in its replies).
pub fn transaction(call_id: Option<&[u8]>, cseq: Option<&[u8]>) -> Option<u64> {
    let (c, s) = (call_id?, cseq?);
    let mut h = DefaultHasher::new();
    c.hash(&mut h);
    // "1 INVITE" and "1  INVITE" are the same CSeq.
    for w in s
        .split(|b| b.is_ascii_whitespace())
        .filter(|w| !w.is_empty())
    {
        w.hash(&mut h);
    }
    Some(h.finish())
}

impl Tally {
    pub fn new(keep_ticks: bool) -> Tally {
        Tally {
            keep_ticks,
            ..Tally::default()
        }
    }

    pub fn request(&mut self, ip: IpAddr, ts_us: u64, tx: Option<u64>, out: Outcome) {
        self.requests += 1;
        let s = self.sources.entry(ip).or_insert_with(|| Source::new(ip));
        s.requests += 1;
        let lost = matches!(out, Outcome::Lost { .. });
        if self.keep_ticks {
            s.ticks.push(Tick { t_us: ts_us, lost });
        }
        let Outcome::Lost { ban, .. } = out else {
            return;
        };
        self.lost += 1;
        s.lost += 1;
        if let Some(tx) = tx {
            self.lost_tx.insert(tx);
        }
        match ban {
            Some(b) => {
                s.met(b).lost += 1;
                self.bans.insert((b.target, b.start_us), b);
            }
            None => self.refused_unbanned += 1,
        }
    }

    /// Whether a reply answers a request this run refused (so the reply
    /// would never have been sent).
    pub fn answers_lost(&mut self, tx: Option<u64>) -> bool {
        self.replies += 1;
        let skip = tx.is_some_and(|t| self.lost_tx.contains(&t));
        self.replies_skipped += u64::from(skip);
        skip
    }

    pub fn reply(&mut self, dst: IpAddr, out: ReplyOutcome) {
        match out {
            ReplyOutcome::Ignored | ReplyOutcome::NotCounted => {}
            ReplyOutcome::Counted => self.auth_failures += 1,
            ReplyOutcome::Unbanned => {
                self.auth_failures += 1;
                self.refused_unbanned += 1;
            }
            ReplyOutcome::Banned(b) => {
                self.auth_failures += 1;
                let s = self.sources.entry(dst).or_insert_with(|| Source::new(dst));
                s.met(b);
                self.bans.insert((b.target, b.start_us), b);
            }
        }
    }

    pub fn side_ban(&mut self, b: Ban) {
        self.bans.insert((b.target, b.start_us), b);
    }

    /// Banned sources, by first ban time.
    pub fn banned(&self) -> Vec<&Source> {
        let mut v: Vec<&Source> = self
            .sources
            .values()
            .filter(|s| !s.bans.is_empty())
            .collect();
        v.sort_by_key(|s| (s.bans[0].ban.start_us, s.ip));
        v
    }

    /// Bans made, by rule, in the order of [`Reason::ALL`].
    pub fn bans_by_rule(&self) -> Vec<(Reason, usize)> {
        Reason::ALL
            .iter()
            .map(|&r| (r, self.bans.values().filter(|b| b.rule == r).count()))
            .filter(|&(_, n)| n > 0)
            .collect()
    }

    /// Sources that sent requests.
    pub fn request_sources(&self) -> usize {
        self.sources.values().filter(|s| s.requests > 0).count()
    }
}

/// What the whole input held, for every run.
pub struct Input<'a> {
    pub path: &'a str,
    pub format: &'a str,
    pub stats: &'a Stats,
    /// Messages that are not SIP after all.
    pub unparsable: u64,
}

impl Input<'_> {
    pub fn start_us(&self) -> u64 {
        self.stats.first_us.unwrap_or(0)
    }

    fn rel(&self, t_us: u64) -> String {
        secs(t_us.saturating_sub(self.start_us()))
    }
}

/// One run, named: its parameters as given.
pub struct Run<'a> {
    pub name: &'a str,
    /// The parameters, as the text report and the picture name them.
    pub label: &'a str,
    /// Every parameter in force, `name=value`.
    pub params: &'a [String],
    pub tally: &'a Tally,
}

/// `12.345678` seconds.
pub fn secs(us: u64) -> String {
    let s = format!("{}.{:06}", us / 1_000_000, us % 1_000_000);
    // Trailing zeros of the fraction say nothing; keep at least a tenth.
    let t = s.trim_end_matches('0');
    if t.ends_with('.') {
        format!("{t}0")
    } else {
        t.to_owned()
    }
}

/// `2024-01-01T00:00:00.300000Z`.
pub fn utc(t_us: u64) -> String {
    let (days, rem) = ((t_us / 1_000_000) / 86_400, (t_us / 1_000_000) % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        t_us % 1_000_000
    )
}

fn length(b: &Ban) -> String {
    b.length_s()
        .map_or_else(|| "until unbanned".to_owned(), |s| format!("{s}s"))
}

fn pct(part: u64, whole: u64) -> String {
    if whole == 0 {
        "0%".into()
    } else {
        format!("{:.1}%", part as f64 * 100.0 / whole as f64)
    }
}

/// Left-aligned columns, two spaces apart.
fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let width: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c + 1 < r.len() {
                let _ = write!(line, "{cell:<w$}  ", w = width[c]);
            } else {
                line.push_str(cell);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn header(inp: &Input) -> String {
    let st = inp.stats;
    let mut s = format!(
        "rsec-replay: {} ({}): {} packets, {} SIP messages",
        inp.path,
        inp.format,
        st.packets,
        st.messages - inp.unparsable
    );
    if st.tcp > 0 {
        let _ = write!(s, " ({} over UDP, {} over TCP)", st.udp, st.tcp);
    }
    if let Some(first) = st.first_us {
        let _ = write!(
            s,
            ", {} to {} ({}s)",
            utc(first),
            utc(st.last_us),
            secs(st.last_us - first)
        );
    }
    s.push('\n');
    let left: Vec<String> = [
        (st.not_sip, "datagrams not SIP"),
        (inp.unparsable, "messages not SIP"),
        (st.undecodable, "packets not IP/UDP/TCP"),
        (st.fragments, "IP fragments (not reassembled)"),
        (st.tcp_gaps, "TCP gaps"),
        (st.tcp_dropped, "TCP messages never completed"),
        (st.out_of_order, "timestamps out of order"),
    ]
    .iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, what)| format!("{n} {what}"))
    .collect();
    if !left.is_empty() {
        let _ = writeln!(s, "left out: {}", left.join(", "));
    }
    s
}

/// The plain-text report of one run.
pub fn text(inp: &Input, run: &Run) -> String {
    let t = run.tally;
    let mut out = header(inp);
    let _ = writeln!(out, "parameters: {}\n", run.label);
    let banned = t.banned();
    if banned.is_empty() {
        out.push_str("no source banned\n");
    } else {
        let mut rows = vec![[
            "source",
            "banned as",
            "rule",
            "first ban",
            "at (UTC)",
            "requests at ban",
            "ban length",
            "bans",
            "requests",
            "lost",
            "profile",
            "tenant",
        ]
        .map(String::from)
        .to_vec()];
        for s in &banned {
            let first = &s.bans[0];
            rows.push(vec![
                s.ip.to_string(),
                first.ban.target.to_string(),
                first.ban.rule.as_str().to_owned(),
                format!("{}s", inp.rel(first.ban.start_us)),
                utc(first.ban.start_us),
                first.requests_at_ban.to_string(),
                length(&first.ban),
                s.bans.len().to_string(),
                s.requests.to_string(),
                s.lost.to_string(),
                profile_of(&first.ban),
                tenant_of(&first.ban),
            ]);
        }
        out.push_str(&table(&rows));
    }
    let _ = writeln!(out, "\nsummary: {}", summary_line(inp, t));
    out
}

fn summary_line(inp: &Input, t: &Tally) -> String {
    let rules: Vec<String> = t
        .bans_by_rule()
        .iter()
        .map(|(r, n)| format!("{} {n}", r.as_str()))
        .collect();
    let mut s = format!(
        "{} packets, {} requests from {} sources, {} replies; bans: {}{}; requests lost: {} ({})",
        inp.stats.packets,
        t.requests,
        t.request_sources(),
        t.replies,
        t.bans.len(),
        if rules.is_empty() {
            String::new()
        } else {
            format!(" ({})", rules.join(", "))
        },
        t.lost,
        pct(t.lost, t.requests)
    );
    if t.auth_failures > 0 {
        let _ = write!(s, "; auth failures counted: {}", t.auth_failures);
    }
    if t.refused_unbanned > 0 {
        let _ = write!(
            s,
            "; refused without a ban (ban table full): {}",
            t.refused_unbanned
        );
    }
    if t.replies_skipped > 0 {
        let _ = write!(
            s,
            "; replies to lost requests ignored: {}",
            t.replies_skipped
        );
    }
    s
}

/// A JSON value, written by hand (no serde in the tool).
pub enum J {
    Null,
    Bool(bool),
    Int(u64),
    /// A number already written out.
    Num(String),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(&'static str, J)>),
}

impl J {
    fn s(v: impl ToString) -> J {
        J::Str(v.to_string())
    }

    pub fn write(&self, out: &mut String, indent: usize) {
        let pad = |out: &mut String, n: usize| out.extend(std::iter::repeat(' ').take(n));
        match self {
            J::Null => out.push_str("null"),
            J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            J::Int(n) => {
                let _ = write!(out, "{n}");
            }
            J::Num(n) => out.push_str(n),
            J::Str(s) => {
                out.push('"');
                for c in s.chars() {
                    match c {
                        '"' => out.push_str("\\\""),
                        '\\' => out.push_str("\\\\"),
                        '\n' => out.push_str("\\n"),
                        '\r' => out.push_str("\\r"),
                        '\t' => out.push_str("\\t"),
                        c if (c as u32) < 0x20 => {
                            let _ = write!(out, "\\u{:04x}", c as u32);
                        }
                        c => out.push(c),
                    }
                }
                out.push('"');
            }
            J::Arr(v) if v.is_empty() => out.push_str("[]"),
            J::Obj(v) if v.is_empty() => out.push_str("{}"),
            J::Arr(v) => {
                out.push_str("[\n");
                for (i, x) in v.iter().enumerate() {
                    pad(out, indent + 2);
                    x.write(out, indent + 2);
                    out.push_str(if i + 1 < v.len() { ",\n" } else { "\n" });
                }
                pad(out, indent);
                out.push(']');
            }
            J::Obj(v) => {
                out.push_str("{\n");
                for (i, (k, x)) in v.iter().enumerate() {
                    pad(out, indent + 2);
                    let _ = write!(out, "\"{k}\": ");
                    x.write(out, indent + 2);
                    out.push_str(if i + 1 < v.len() { ",\n" } else { "\n" });
                }
                pad(out, indent);
                out.push('}');
            }
        }
    }
}

/// Seconds since the capture start, as a JSON number (microsecond digits).
fn jsecs(inp: &Input, t_us: u64) -> J {
    J::Num(inp.rel(t_us))
}

fn ban_json(inp: &Input, b: &SourceBan) -> J {
    J::Obj(vec![
        ("rule", J::s(b.ban.rule.as_str())),
        ("banned_as", J::s(b.ban.target)),
        ("at_s", jsecs(inp, b.ban.start_us)),
        ("at_utc", J::s(utc(b.ban.start_us))),
        ("requests_at_ban", J::Int(b.requests_at_ban)),
        ("ban_length_s", b.ban.length_s().map_or(J::Null, J::Int)),
        ("lost", J::Int(b.lost)),
    ])
}

fn source_json(inp: &Input, s: &Source) -> J {
    let first = &s.bans[0];
    J::Obj(vec![
        ("address", J::s(s.ip)),
        ("banned_as", J::s(first.ban.target)),
        ("rule", J::s(first.ban.rule.as_str())),
        ("first_ban_s", jsecs(inp, first.ban.start_us)),
        ("first_ban_utc", J::s(utc(first.ban.start_us))),
        ("requests_at_ban", J::Int(first.requests_at_ban)),
        ("ban_length_s", first.ban.length_s().map_or(J::Null, J::Int)),
        ("requests", J::Int(s.requests)),
        ("lost", J::Int(s.lost)),
        (
            "profile",
            J::s(String::from_utf8_lossy(first.ban.profile.as_bytes())),
        ),
        ("tenant", J::s(tenant_of(&first.ban))),
        ("dry_run", J::Bool(first.ban.dry_run)),
        (
            "bans",
            J::Arr(s.bans.iter().map(|b| ban_json(inp, b)).collect()),
        ),
    ])
}

/// One run as JSON: its parameters, banned sources and summary.
pub fn run_json(inp: &Input, run: &Run) -> J {
    let t = run.tally;
    J::Obj(vec![
        ("parameters", J::Arr(run.params.iter().map(J::s).collect())),
        (
            "sources",
            J::Arr(
                t.banned()
                    .into_iter()
                    .map(|s| source_json(inp, s))
                    .collect(),
            ),
        ),
        (
            "summary",
            J::Obj(vec![
                ("requests", J::Int(t.requests)),
                ("replies", J::Int(t.replies)),
                ("sources", J::Int(t.request_sources() as u64)),
                ("banned_sources", J::Int(t.banned().len() as u64)),
                ("bans", J::Int(t.bans.len() as u64)),
                (
                    "bans_by_rule",
                    J::Obj(
                        t.bans_by_rule()
                            .into_iter()
                            .map(|(r, n)| (r.as_str(), J::Int(n as u64)))
                            .collect(),
                    ),
                ),
                ("requests_lost", J::Int(t.lost)),
                ("refused_unbanned", J::Int(t.refused_unbanned)),
                ("auth_failures", J::Int(t.auth_failures)),
                ("replies_to_lost_requests", J::Int(t.replies_skipped)),
            ]),
        ),
    ])
}

/// The input's own figures, as JSON.
pub fn input_json(inp: &Input) -> Vec<(&'static str, J)> {
    let st = inp.stats;
    vec![
        ("input", J::s(inp.path)),
        ("format", J::s(inp.format)),
        (
            "capture",
            J::Obj(vec![
                ("packets", J::Int(st.packets)),
                ("sip_messages", J::Int(st.messages - inp.unparsable)),
                ("udp_messages", J::Int(st.udp)),
                ("tcp_messages", J::Int(st.tcp)),
                ("start_utc", st.first_us.map_or(J::Null, |t| J::s(utc(t)))),
                (
                    "end_utc",
                    st.first_us.map_or(J::Null, |_| J::s(utc(st.last_us))),
                ),
                (
                    "duration_s",
                    J::Num(secs(st.last_us - st.first_us.unwrap_or(st.last_us))),
                ),
                ("not_sip_datagrams", J::Int(st.not_sip)),
                ("not_sip_messages", J::Int(inp.unparsable)),
                ("undecodable_packets", J::Int(st.undecodable)),
                ("ip_fragments", J::Int(st.fragments)),
                ("tcp_gaps", J::Int(st.tcp_gaps)),
                ("tcp_dropped", J::Int(st.tcp_dropped)),
                ("out_of_order", J::Int(st.out_of_order)),
            ]),
        ),
    ]
}

pub fn json(inp: &Input, run: &Run) -> String {
    let mut fields = input_json(inp);
    if let J::Obj(r) = run_json(inp, run) {
        fields.extend(r);
    }
    let mut out = String::new();
    J::Obj(fields).write(&mut out, 0);
    out.push('\n');
    out
}

/// How two runs differ.
pub struct Diff<'a> {
    pub only_a: Vec<&'a Source>,
    pub only_b: Vec<&'a Source>,
    /// Banned by both, with a different first ban or lost count.
    pub differ: Vec<(&'a Source, &'a Source)>,
    pub same: Vec<&'a Source>,
}

pub fn diff<'a>(a: &'a Tally, b: &'a Tally) -> Diff<'a> {
    let banned_b: HashMap<IpAddr, &Source> = b.banned().into_iter().map(|s| (s.ip, s)).collect();
    let mut d = Diff {
        only_a: Vec::new(),
        only_b: Vec::new(),
        differ: Vec::new(),
        same: Vec::new(),
    };
    for sa in a.banned() {
        match banned_b.get(&sa.ip) {
            None => d.only_a.push(sa),
            Some(sb) => {
                let key = |s: &Source| {
                    let f = &s.bans[0];
                    (
                        f.ban.rule,
                        f.ban.start_us,
                        f.requests_at_ban,
                        s.lost,
                        s.bans.len(),
                    )
                };
                if key(sa) == key(sb) {
                    d.same.push(sa);
                } else {
                    d.differ.push((sa, sb));
                }
            }
        }
    }
    let banned_a: HashSet<IpAddr> = a.banned().iter().map(|s| s.ip).collect();
    d.only_b = b
        .banned()
        .into_iter()
        .filter(|s| !banned_a.contains(&s.ip))
        .collect();
    d
}

fn first_ban(inp: &Input, s: &Source) -> String {
    let f = &s.bans[0];
    format!(
        "{} at {}s, request {}, {}, {} lost",
        f.ban.rule.as_str(),
        inp.rel(f.ban.start_us),
        f.requests_at_ban,
        length(&f.ban),
        s.lost
    )
}

/// The plain-text comparison of two runs.
pub fn compare_text(inp: &Input, a: &Run, b: &Run) -> String {
    let d = diff(a.tally, b.tally);
    let mut out = header(inp);
    let _ = writeln!(out, "A: {}", a.label);
    let _ = writeln!(out, "B: {}\n", b.label);
    for (title, list) in [
        ("banned only by A", &d.only_a),
        ("banned only by B", &d.only_b),
    ] {
        let _ = writeln!(out, "{title}: {}", list.len());
        let rows: Vec<Vec<String>> = list
            .iter()
            .map(|s| vec![format!("  {}", s.ip), first_ban(inp, s)])
            .collect();
        out.push_str(&table(&rows));
    }
    let _ = writeln!(out, "banned by both, differently: {}", d.differ.len());
    let rows: Vec<Vec<String>> = d
        .differ
        .iter()
        .map(|(sa, sb)| {
            vec![
                format!("  {}", sa.ip),
                format!("A: {}", first_ban(inp, sa)),
                format!("B: {}", first_ban(inp, sb)),
            ]
        })
        .collect();
    out.push_str(&table(&rows));
    let _ = writeln!(out, "banned by both alike: {}", d.same.len());
    let rows: Vec<Vec<String>> = d
        .same
        .iter()
        .map(|s| vec![format!("  {}", s.ip), first_ban(inp, s)])
        .collect();
    out.push_str(&table(&rows));
    let (ta, tb) = (a.tally, b.tally);
    let delta = |x: u64, y: u64| format!("{:+}", y as i64 - x as i64);
    let mut rows = vec![vec!["totals".into(), "A".into(), "B".into(), "B-A".into()]];
    for (what, x, y) in [
        (
            "banned sources",
            ta.banned().len() as u64,
            tb.banned().len() as u64,
        ),
        ("bans", ta.bans.len() as u64, tb.bans.len() as u64),
        ("requests lost", ta.lost, tb.lost),
        ("auth failures counted", ta.auth_failures, tb.auth_failures),
    ] {
        rows.push(vec![what.into(), x.to_string(), y.to_string(), delta(x, y)]);
    }
    out.push('\n');
    out.push_str(&table(&rows));
    out
}

pub fn compare_json(inp: &Input, a: &Run, b: &Run) -> String {
    let d = diff(a.tally, b.tally);
    let brief = |s: &Source| {
        let f = &s.bans[0];
        J::Obj(vec![
            ("rule", J::s(f.ban.rule.as_str())),
            ("first_ban_s", jsecs(inp, f.ban.start_us)),
            ("requests_at_ban", J::Int(f.requests_at_ban)),
            ("ban_length_s", f.ban.length_s().map_or(J::Null, J::Int)),
            ("bans", J::Int(s.bans.len() as u64)),
            ("lost", J::Int(s.lost)),
        ])
    };
    let one = |list: &[&Source], side: &'static str| {
        J::Arr(
            list.iter()
                .map(|s| J::Obj(vec![("address", J::s(s.ip)), (side, brief(s))]))
                .collect(),
        )
    };
    let mut fields = input_json(inp);
    fields.push(("a", run_json(inp, a)));
    fields.push(("b", run_json(inp, b)));
    fields.push((
        "diff",
        J::Obj(vec![
            ("only_a", one(&d.only_a, "a")),
            ("only_b", one(&d.only_b, "b")),
            (
                "differ",
                J::Arr(
                    d.differ
                        .iter()
                        .map(|(sa, sb)| {
                            J::Obj(vec![
                                ("address", J::s(sa.ip)),
                                ("a", brief(sa)),
                                ("b", brief(sb)),
                            ])
                        })
                        .collect(),
                ),
            ),
            ("same", J::Arr(d.same.iter().map(|s| J::s(s.ip)).collect())),
        ]),
    ));
    let mut out = String::new();
    J::Obj(fields).write(&mut out, 0);
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(utc(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(utc(1_704_067_200_300_000), "2024-01-01T00:00:00.300000Z");
        assert_eq!(utc(951_782_400_000_000), "2000-02-29T00:00:00.000000Z");
        assert_eq!(secs(300_000), "0.3");
        assert_eq!(secs(2_000_000), "2.0");
        assert_eq!(secs(1_000_001), "1.000001");
    }

    #[test]
    fn json_escapes() {
        let mut s = String::new();
        J::Obj(vec![("a", J::s("x\"\\\n\u{1}")), ("b", J::Arr(vec![]))]).write(&mut s, 0);
        assert_eq!(s, "{\n  \"a\": \"x\\\"\\\\\\n\\u0001\",\n  \"b\": []\n}");
    }

    #[test]
    fn transactions() {
        let a = transaction(Some(b"c1"), Some(b"1 REGISTER"));
        assert_eq!(a, transaction(Some(b"c1"), Some(b"1  REGISTER")));
        assert_ne!(a, transaction(Some(b"c1"), Some(b"2 REGISTER")));
        assert_eq!(transaction(None, Some(b"1 REGISTER")), None);
    }
}
