//! ScannerPatterns (src/engine/scanner.rs): which User-Agents count as
//! scanners, the two modparams that change the list, and what is refused.

use rsec::engine::scanner::{effective_patterns, ScannerPatterns};

fn list(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn builtin() -> ScannerPatterns {
    ScannerPatterns::builtin()
}

// ============================================================ built-in list

#[test]
fn builtin_list_is_a_short_list_of_distinct_valid_names() {
    let b = ScannerPatterns::BUILTIN;
    assert!((15..=25).contains(&b.len()), "{} names", b.len());
    let p = builtin();
    assert_eq!(
        p.patterns(),
        &list(b)[..],
        "no built-in name is a duplicate"
    );
    for name in b {
        assert!(name.len() <= ScannerPatterns::MAX_PATTERN_LEN);
        assert!(name.is_ascii(), "{name}");
    }
}

#[test]
fn every_builtin_name_matches_in_any_case_and_position() {
    let p = builtin();
    for &name in ScannerPatterns::BUILTIN {
        let upper = name.to_ascii_uppercase();
        let lower = name.to_ascii_lowercase();
        let mixed: String = name
            .chars()
            .enumerate()
            .map(|(i, c)| {
                if i % 2 == 0 {
                    c.to_ascii_uppercase()
                } else {
                    c.to_ascii_lowercase()
                }
            })
            .collect();
        for ua in [
            name.to_owned(),
            upper.clone(),
            lower.clone(),
            mixed,
            format!("{name}/1.0"),
            format!("{lower} 0.3.0"),
            format!("Mozilla/5.0 ({upper})"),
            format!("x{name}x"),
            format!("release 2.1 {name}"),
        ] {
            assert_eq!(p.matches(ua.as_bytes()), Some(name), "{ua:?}");
        }
    }
}

#[test]
fn scanner_user_agents_seen_in_the_wild_match() {
    let p = builtin();
    for (ua, want) in [
        ("friendly-scanner", "friendly-scanner"),
        ("Friendly-Scanner/1.0", "friendly-scanner"),
        ("friendly-request", "friendly-request"),
        ("sipvicious 0.3.0", "sipvicious"),
        ("SIPVicious/0.3.4", "sipvicious"),
        ("sundayddr", "sundayddr"),
        ("sipcli/v1.8", "sipcli"),
        ("VaxSIPUserAgent/3.1", "VaxSIPUserAgent"),
        ("VaxIPUserAgent/3.0", "VaxIPUserAgent"),
        ("pplsip", "pplsip"),
        ("sipptk", "sipptk"),
        ("iWar 0.1", "iWar"),
        ("sip-scan", "sip-scan"),
        ("SIVuS Scanner 1.09", "SIVuS"),
        ("smap 0.6.0", "smap"),
        ("Nmap NSE", "Nmap NSE"),
        ("siparmyknife", "siparmyknife"),
    ] {
        assert_eq!(p.matches(ua.as_bytes()), Some(want), "{ua:?}");
    }
}

/// Phones, softphones, PBXs and proxies, as they announce themselves.
const REAL_USER_AGENTS: &[&str] = &[
    "Yealink SIP-T46S 66.86.0.15",
    "Yealink SIP-T54W 96.86.0.100",
    "PolycomVVX-VVX_411-UA/6.3.0.14929",
    "PolycomSoundPointIP-SPIP_550-UA/4.0.15.1009",
    "Grandstream GXP2170 1.0.11.3",
    "Grandstream HT801 1.0.41.5",
    "Linphone/5.0 (belle-sip/5.0)",
    "LinphoneAndroid/5.2.5 (belle-sip/5.2.98)",
    "Zoiper rv2.10.19.3",
    "Z 5.6.4 v2.10.20.3",
    "MicroSIP/3.21.3",
    "Asterisk PBX 18.9.0",
    "FPBX-16.0.33(18.16.0)",
    "snom760/10.1.54.13",
    "snomD785/10.1.159.12",
    "Cisco-CP8845/12.8.1",
    "Cisco/SPA112-1.4.1(SR5)",
    "Cisco-SIPGateway/IOS-15.x",
    "Bria 6 release 6.5.5 stamp 112233",
    "X-Lite release 5.8.3 stamp 102651",
    "Groundwire/6.3.1 (build 1234; iOS 17.2)",
    "Acrobits Softphone/6.3",
    "Jitsi2.10.5550Mac OS X",
    "Telephone 1.6",
    "Sipdroid/5.2 beta/SM-G991B",
    "FreeSWITCH-mod_sofia/1.10.9-release~64bit",
    "OpenSIPS (3.6.3 (x86_64/linux))",
    "kamailio (5.7.4 (x86_64/linux))",
    "3CXPhone 6.0.26523.0",
    "Fanvil X4U 2.12.1",
    "Obihai/OBi200-3.2.2.5921EX",
    "AVM FRITZ!Box 7590 154.07.29 (Jan 12 2022)",
    "Gigaset N510 IP PRO/42.250.00.000.000",
    "Panasonic_KX-UT136/01.133 (0080f0000000)",
    "Avaya one-X Deskphone",
    "Mitel SIP-DECT (SW-Version=8.0SP1-BK21)",
    "AudioCodes-Sip-Gateway-MP-118 FXS/v.6.60A.343.002",
    "Aastra 6731i/3.3.1.4322",
    "Ooma/1.0",
    "Teams/1.0 (Microsoft Teams Direct Routing)",
];

#[test]
fn phones_and_servers_do_not_match() {
    let p = builtin();
    for ua in REAL_USER_AGENTS {
        assert_eq!(p.matches(ua.as_bytes()), None, "{ua:?}");
    }
}

/// sipsak and SIPp are administrators' test tools (rsec's own tests send
/// SIPp traffic): not scanners unless an operator says so.
#[test]
fn admin_test_tools_match_only_when_added() {
    let test_tools = ["sipsak 0.9.8", "SIPp/3.7.1", "sipp"];
    let p = builtin();
    for ua in test_tools {
        assert_eq!(p.matches(ua.as_bytes()), None, "{ua:?}");
    }
    let p = ScannerPatterns::from_modparams(None, Some("sipsak, SIPp")).unwrap();
    assert_eq!(p.matches(b"sipsak 0.9.8"), Some("sipsak"));
    assert_eq!(p.matches(b"SIPp/3.7.1"), Some("SIPp"));
    assert_eq!(p.matches(b"friendly-scanner"), Some("friendly-scanner"));
}

// ============================================================ matching

#[test]
fn the_leftmost_match_wins_and_a_tie_goes_to_the_earlier_pattern() {
    let p = ScannerPatterns::new(list(&["scan", "friendly-scanner", "friendly"])).unwrap();
    // "friendly" and "friendly-scanner" both start first; "friendly-scanner"
    // is earlier in the list.
    assert_eq!(p.matches(b"x friendly-scanner"), Some("friendly-scanner"));
    // Only "friendly" and "scan" match, and "friendly" starts further left.
    assert_eq!(p.matches(b"friendly scan"), Some("friendly"));
    assert_eq!(p.matches(b"scan friendly"), Some("scan"));
}

#[test]
fn the_pattern_is_returned_as_configured() {
    let p = ScannerPatterns::new(list(&["EvIl-Tool"])).unwrap();
    assert_eq!(p.matches(b"evil-tool/2"), Some("EvIl-Tool"));
    assert_eq!(p.matches(b"EVIL-TOOL"), Some("EvIl-Tool"));
}

#[test]
fn case_is_folded_for_ascii_only() {
    let p = ScannerPatterns::new(list(&["Äbc-scan"])).unwrap();
    assert_eq!(p.matches("Äbc-SCAN".as_bytes()), Some("Äbc-scan"));
    // ä is not folded to Ä: only ASCII letters are.
    assert_eq!(p.matches("äbc-scan".as_bytes()), None);
}

#[test]
fn a_partial_name_does_not_match() {
    let p = builtin();
    for ua in [
        "friendly-scan",
        "sipvicio",
        "pplsi",
        "Nmap-NSE",
        "Nmap  NSE",
        "",
    ] {
        assert_eq!(p.matches(ua.as_bytes()), None, "{ua:?}");
    }
}

#[test]
fn an_8_kib_header_is_searched_to_its_end() {
    let p = builtin();
    let filler = "Yealink SIP-T46S 66.86.0.15 ".repeat(300);
    assert!(filler.len() >= 8000);
    assert_eq!(p.matches(filler.as_bytes()), None);
    let end = format!("{filler}sipcli");
    assert_eq!(end.len(), filler.len() + 6);
    assert_eq!(p.matches(end.as_bytes()), Some("sipcli"));
    let start = format!("pplsip {filler}");
    assert_eq!(p.matches(start.as_bytes()), Some("pplsip"));
    let middle = format!("{}SIVUS{}", &filler[..4096], &filler[4096..]);
    assert_eq!(p.matches(middle.as_bytes()), Some("SIVuS"));
}

#[test]
fn binary_bytes_are_searched_like_any_other() {
    let p = builtin();
    // Every byte value, twice, with and without a name inside.
    let mut noise: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
    assert_eq!(p.matches(&noise), None);
    let mut with = noise.clone();
    with.splice(
        300..300,
        b"\xff\x00friendly-scanner\x00\xfe".iter().copied(),
    );
    assert_eq!(p.matches(&with), Some("friendly-scanner"));
    // Not valid UTF-8 around the name.
    assert_eq!(p.matches(b"\xc3\x28sipvicious\xa0\xa1"), Some("sipvicious"));
    // A NUL inside a name breaks it.
    assert_eq!(p.matches(b"friendly-\x00scanner"), None);
    noise.extend_from_slice(b"smap");
    assert_eq!(p.matches(&noise), Some("smap"));
}

#[test]
fn a_thousand_patterns_still_find_the_right_one() {
    let mut many: Vec<String> = (0..1000).map(|i| format!("tool-{i:04}-x")).collect();
    many.extend(list(ScannerPatterns::BUILTIN));
    let p = ScannerPatterns::new(many).unwrap();
    assert_eq!(p.patterns().len(), 1000 + ScannerPatterns::BUILTIN.len());
    assert_eq!(p.matches(b"UA TOOL-0999-X/1"), Some("tool-0999-x"));
    assert_eq!(p.matches(b"tool-0500-y"), None);
    assert_eq!(p.matches(b"Friendly-Scanner"), Some("friendly-scanner"));
    for ua in REAL_USER_AGENTS {
        assert_eq!(p.matches(ua.as_bytes()), None, "{ua:?}");
    }
}

// ============================================================ modparams

#[test]
fn without_modparams_the_builtin_list_is_in_force() {
    assert_eq!(
        effective_patterns(None, None).unwrap(),
        list(ScannerPatterns::BUILTIN)
    );
}

#[test]
fn scanner_patterns_replaces_the_builtin_list() {
    let p = ScannerPatterns::from_modparams(Some(" evil-ua ,Other Tool"), None).unwrap();
    assert_eq!(p.patterns(), &list(&["evil-ua", "Other Tool"])[..]);
    assert_eq!(p.matches(b"EVIL-UA/2.0"), Some("evil-ua"));
    assert_eq!(p.matches(b"my other tool"), Some("Other Tool"));
    assert_eq!(
        p.matches(b"friendly-scanner"),
        None,
        "built-in list replaced"
    );
}

#[test]
fn scanner_patterns_add_extends_the_builtin_list() {
    let v = effective_patterns(None, Some("evil-ua, sipsak")).unwrap();
    let mut want = list(ScannerPatterns::BUILTIN);
    want.extend(list(&["evil-ua", "sipsak"]));
    assert_eq!(v, want);
    let p = ScannerPatterns::new(v).unwrap();
    assert_eq!(p.matches(b"friendly-scanner"), Some("friendly-scanner"));
    assert_eq!(p.matches(b"evil-ua"), Some("evil-ua"));
}

#[test]
fn scanner_patterns_add_extends_a_replaced_list() {
    let v = effective_patterns(Some("one"), Some("two,three")).unwrap();
    assert_eq!(v, list(&["one", "two", "three"]));
}

#[test]
fn an_empty_scanner_patterns_disables_matching() {
    for empty in ["", "  ", " \t "] {
        assert!(effective_patterns(Some(empty), None).unwrap().is_empty());
        let p = ScannerPatterns::from_modparams(Some(empty), None).unwrap();
        assert!(p.is_empty());
        assert!(p.patterns().is_empty());
        for &name in ScannerPatterns::BUILTIN {
            assert_eq!(p.matches(name.as_bytes()), None);
        }
        assert_eq!(p.matches(b""), None);
    }
    // ... while scanner_patterns_add still adds to the empty list.
    let p = ScannerPatterns::from_modparams(Some(""), Some("only-this")).unwrap();
    assert_eq!(p.patterns(), &list(&["only-this"])[..]);
    assert_eq!(p.matches(b"friendly-scanner"), None);
    assert_eq!(p.matches(b"ONLY-THIS"), Some("only-this"));
    // An empty addition adds nothing.
    assert_eq!(
        effective_patterns(None, Some("")).unwrap(),
        list(ScannerPatterns::BUILTIN)
    );
    assert!(ScannerPatterns::new(Vec::new()).unwrap().is_empty());
}

#[test]
fn duplicates_are_dropped_ignoring_case_and_the_first_spelling_is_kept() {
    let v = effective_patterns(
        Some("Evil, EVIL ,other, evil"),
        Some("OTHER,new,friendly-scanner"),
    )
    .unwrap();
    assert_eq!(v, list(&["Evil", "other", "new", "friendly-scanner"]));
    let v = effective_patterns(None, Some("FRIENDLY-SCANNER")).unwrap();
    assert_eq!(v, list(ScannerPatterns::BUILTIN), "already built in");
    let p = ScannerPatterns::new(list(&["a-b", "A-B", "a-B"])).unwrap();
    assert_eq!(p.patterns(), &list(&["a-b"])[..]);
}

#[test]
fn an_empty_item_is_refused_with_the_modparam_named() {
    for (replace, add, param) in [
        (Some("a,,b"), None, "scanner_patterns"),
        (Some("a,"), None, "scanner_patterns"),
        (Some(",a"), None, "scanner_patterns"),
        (Some("a, ,b"), None, "scanner_patterns"),
        (None, Some("x,"), "scanner_patterns_add"),
    ] {
        let e = effective_patterns(replace, add).unwrap_err();
        let value = replace.or(add).unwrap();
        assert!(e.starts_with(&format!("{param}: ")), "{e}");
        assert!(e.contains("empty item"), "{e}");
        assert!(e.contains(&format!("{value:?}")), "{e}");
        assert!(ScannerPatterns::from_modparams(replace, add).is_err());
    }
}

// ============================================================ refused

#[test]
fn an_empty_pattern_is_refused() {
    let e = ScannerPatterns::new(list(&["ok", ""])).unwrap_err();
    assert!(e.contains("empty scanner pattern"), "{e}");
}

#[test]
fn a_pattern_over_64_bytes_is_refused_by_name() {
    let at_limit = "x".repeat(64);
    assert!(ScannerPatterns::new(vec![at_limit.clone()]).is_ok());
    let over = "y".repeat(65);
    let e = ScannerPatterns::new(vec![over.clone()]).unwrap_err();
    assert!(e.contains(&over), "{e}");
    assert!(e.contains("65 bytes"), "{e}");
    assert!(e.contains("64"), "{e}");
    // Through a modparam: the modparam is named too.
    let e = effective_patterns(None, Some(&format!("ok,{over}"))).unwrap_err();
    assert!(e.starts_with("scanner_patterns_add: "), "{e}");
    assert!(e.contains(&over), "{e}");
}

#[test]
fn a_pattern_with_a_control_character_is_refused_by_name() {
    for bad in [
        "tab\there",
        "cr\rlf\n",
        "nul\0",
        "del\x7f",
        "esc\x1b[0m",
        "c1\u{85}",
    ] {
        let e = ScannerPatterns::new(list(&["fine", bad])).unwrap_err();
        assert!(e.contains(&format!("{bad:?}")), "{e}");
        assert!(e.contains("control character"), "{e}");
    }
    let e = effective_patterns(Some("fine,bell\x07"), None).unwrap_err();
    assert!(e.starts_with("scanner_patterns: "), "{e}");
    assert!(e.contains("\"bell\\u{7}\""), "{e}");
}

#[test]
fn more_than_1024_patterns_are_refused() {
    let n = |count: usize| -> Vec<String> { (0..count).map(|i| format!("p{i}")).collect() };
    assert_eq!(
        ScannerPatterns::new(n(1024)).unwrap().patterns().len(),
        1024
    );
    let e = ScannerPatterns::new(n(1025)).unwrap_err();
    assert!(e.contains("1025"), "{e}");
    assert!(e.contains("1024"), "{e}");
    // Duplicates do not count.
    let mut dup = n(1024);
    dup.push("P0".to_owned());
    assert!(ScannerPatterns::new(dup).is_ok());
}

/// 1,024 patterns of 64 bytes: the largest list accepted, whose DFA would
/// take 32 MiB; it is matched by the smaller automaton, just as well.
#[test]
fn the_largest_list_accepted_stays_small_and_correct() {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let printable: Vec<char> = (0x21u8..0x7f).map(char::from).collect();
    let patterns: Vec<String> = (0..1024)
        .map(|_| {
            (0..64)
                .map(|_| printable[(next() % printable.len() as u64) as usize])
                .collect()
        })
        .collect();
    let p = ScannerPatterns::new(patterns.clone()).unwrap();
    assert_eq!(p.patterns().len(), 1024);
    assert!(
        p.automaton_bytes() <= 8 << 20,
        "{} bytes",
        p.automaton_bytes()
    );
    let filler = "Yealink SIP-T46S 66.86.0.15 ".repeat(290);
    assert_eq!(p.matches(filler.as_bytes()), None);
    for i in [0, 511, 1023] {
        let ua = format!("{filler}{}", patterns[i].to_ascii_lowercase());
        assert_eq!(p.matches(ua.as_bytes()), Some(patterns[i].as_str()));
    }
    assert!(
        ScannerPatterns::builtin().automaton_bytes() < 64 << 10,
        "the built-in list's automaton is small"
    );
}
