//! Recognises SIP scanners by the name they announce in User-Agent (or, in
//! replies, Server).
//!
//! Attack tools rarely bother to disguise themselves: SIPVicious still says
//! "friendly-scanner" and SIPPTS "pplsip". Matching those names is cheap and
//! never wrong about a real phone, so a source that announces one can be
//! banned on its first request, before it has cost a flood's worth of work.
//!
//! The list is compiled once, in mod_init before OpenSIPS forks, and never
//! changes afterwards: it lives in each worker's process memory (inherited
//! by fork), not in the shared mapping. One Aho-Corasick automaton looks for
//! every pattern in a single pass, so a check costs the same whether the
//! list has 15 names or 1,000.

use std::collections::HashSet;

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};

/// A compiled, immutable list of scanner names.
pub struct ScannerPatterns {
    patterns: Vec<String>,
    /// `None` when the list is empty: nothing can match.
    automaton: Option<AhoCorasick>,
}

impl ScannerPatterns {
    /// The names rsec looks for unless `scanner_patterns` replaces them.
    ///
    /// Only names that attack or audit tools send by default and that the
    /// SIP security community blocks (Kamailio's default configuration,
    /// Emerging Threats SCAN rules, published iptables blocklists), and
    /// that no phone, PBX or softphone uses. Left out on purpose: sipsak
    /// and SIPp, administrators' own test tools (rsec's tests send SIPp
    /// traffic); add them with `scanner_patterns_add` where they are not
    /// welcome.
    pub const BUILTIN: &'static [&'static str] = &[
        "friendly-scanner",
        "friendly-request",
        "sipvicious",
        "sundayddr",
        "sipcli",
        "VaxSIPUserAgent",
        "VaxIPUserAgent",
        "pplsip",
        "sipptk",
        "iWar",
        "sip-scan",
        "SIVuS",
        "smap",
        "Nmap NSE",
        "siparmyknife",
    ];

    /// Longest pattern accepted: the longest built-in name is 16 bytes, and
    /// a longer one is a whole User-Agent, which belongs in a whitelist or
    /// an exact comparison in the script, not here.
    pub const MAX_PATTERN_LEN: usize = 64;

    /// Most patterns accepted; bounds the automaton (at most 64 KiB of
    /// pattern bytes) and the start-up time of building it.
    pub const MAX_PATTERNS: usize = 1024;

    /// Largest DFA kept. A DFA reads each byte with one table lookup, but
    /// its table grows with the patterns' bytes times the alphabet: 30 KiB
    /// for the built-in list, 5 MiB for 1,000 names of 6 to 16 bytes,
    /// 32 MiB for 1,024 of 64 bytes. Past this budget the automaton is a
    /// contiguous NFA (1.4 MiB for those 1,024), two to three times slower
    /// per byte, and still one pass over the header.
    const DFA_MAX_BYTES: usize = 8 << 20;

    /// Compiles `patterns`, matched anywhere in the header regardless of
    /// ASCII case. Duplicates (ignoring case) are dropped, keeping the first
    /// spelling. Refuses an empty pattern, one over
    /// [`Self::MAX_PATTERN_LEN`] bytes, one with a control character, and
    /// more than [`Self::MAX_PATTERNS`] distinct patterns; the message names
    /// the offending value.
    pub fn new(patterns: Vec<String>) -> Result<ScannerPatterns, String> {
        for p in &patterns {
            check_pattern(p)?;
        }
        let kept = dedup(patterns);
        if kept.len() > Self::MAX_PATTERNS {
            return Err(format!(
                "{} scanner patterns, at most {} are accepted",
                kept.len(),
                Self::MAX_PATTERNS
            ));
        }
        let automaton = if kept.is_empty() {
            None
        } else {
            let build = |kind| {
                AhoCorasick::builder()
                    .ascii_case_insensitive(true)
                    .match_kind(MatchKind::LeftmostFirst)
                    .kind(Some(kind))
                    .build(&kept)
            };
            let ac = match build(AhoCorasickKind::DFA) {
                Ok(dfa) if dfa.memory_usage() <= Self::DFA_MAX_BYTES => dfa,
                _ => build(AhoCorasickKind::ContiguousNFA)
                    .map_err(|e| format!("cannot compile the scanner patterns: {e}"))?,
            };
            Some(ac)
        };
        Ok(ScannerPatterns {
            patterns: kept,
            automaton,
        })
    }

    /// The built-in list, compiled.
    pub fn builtin() -> ScannerPatterns {
        Self::new(Self::BUILTIN.iter().map(|&s| s.to_owned()).collect())
            .expect("the built-in scanner patterns are valid")
    }

    /// The list the two modparams describe, compiled (see
    /// [`effective_patterns`]).
    pub fn from_modparams(
        scanner_patterns: Option<&str>,
        scanner_patterns_add: Option<&str>,
    ) -> Result<ScannerPatterns, String> {
        Self::new(effective_patterns(scanner_patterns, scanner_patterns_add)?)
    }

    /// The pattern found in `header`: of those that match, the one that
    /// starts leftmost (the earlier in the list when two start together).
    /// Any bytes are accepted; the header need not be UTF-8.
    pub fn matches<'a>(&'a self, header: &[u8]) -> Option<&'a str> {
        let ac = self.automaton.as_ref()?;
        // try_find fails only for an anchored search or a stream, which
        // this automaton is never asked for.
        let m = ac.try_find(header).ok()??;
        self.patterns
            .get(m.pattern().as_usize())
            .map(String::as_str)
    }

    /// The patterns in force, in order, without duplicates.
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    /// True when nothing can ever match (`scanner_patterns = ""`).
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Heap bytes of the automaton, which every worker process holds (a
    /// copy-on-write page of the parent's until something writes near it).
    pub fn automaton_bytes(&self) -> usize {
        self.automaton.as_ref().map_or(0, AhoCorasick::memory_usage)
    }
}

impl std::fmt::Debug for ScannerPatterns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScannerPatterns")
            .field("patterns", &self.patterns)
            .finish_non_exhaustive()
    }
}

fn check_pattern(p: &str) -> Result<(), String> {
    if p.is_empty() {
        return Err("empty scanner pattern: it would match every header".to_owned());
    }
    if p.len() > ScannerPatterns::MAX_PATTERN_LEN {
        return Err(format!(
            "scanner pattern {p:?} is {} bytes long, at most {} are accepted",
            p.len(),
            ScannerPatterns::MAX_PATTERN_LEN
        ));
    }
    if p.chars().any(char::is_control) {
        return Err(format!(
            "scanner pattern {p:?} has a control character, which no header carries"
        ));
    }
    Ok(())
}

/// The patterns in force for the modparams `scanner_patterns` and
/// `scanner_patterns_add` (`None` when not set), in order, without
/// duplicates (ignoring ASCII case, the first spelling kept).
///
/// Both are comma-separated lists whose items are trimmed. A set
/// `scanner_patterns` replaces the built-in list, and an empty one (`""`)
/// leaves no pattern at all; `scanner_patterns_add` is added to whichever
/// list is in force. An empty item between commas is refused: it is a typo,
/// and as a pattern it would match everything.
pub fn effective_patterns(
    scanner_patterns: Option<&str>,
    scanner_patterns_add: Option<&str>,
) -> Result<Vec<String>, String> {
    let mut list: Vec<String> = match scanner_patterns {
        None => ScannerPatterns::BUILTIN
            .iter()
            .map(|&s| s.to_owned())
            .collect(),
        Some(v) => split("scanner_patterns", v)?,
    };
    if let Some(v) = scanner_patterns_add {
        list.extend(split("scanner_patterns_add", v)?);
    }
    Ok(dedup(list))
}

/// `list` without the items equal, ignoring ASCII case, to an earlier one.
fn dedup(list: Vec<String>) -> Vec<String> {
    let mut seen = HashSet::with_capacity(list.len());
    list.into_iter()
        .filter(|p| seen.insert(p.to_ascii_lowercase()))
        .collect()
}

/// The trimmed items of one modparam; none for a blank value.
fn split(param: &str, value: &str) -> Result<Vec<String>, String> {
    if value.trim().is_empty() {
        return Ok(Vec::new());
    }
    value
        .split(',')
        .map(|item| {
            let item = item.trim();
            if item.is_empty() {
                return Err(format!(
                    "{param}: empty item in {value:?} (a doubled or trailing comma?)"
                ));
            }
            check_pattern(item).map_err(|e| format!("{param}: {e}"))?;
            Ok(item.to_owned())
        })
        .collect()
}
