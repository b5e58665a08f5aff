//! The threat-detection rules (src/engine/rules.rs), each at its edges:
//! repeat offenders, prefix aggregation and IPv6 tracking, per-method
//! floods, accounts, enumeration, reported abuse, scanners and ban notes.

use rsec::engine::methods::{parse_method_density, MethodLimit};
use rsec::engine::stats::Stats;
use rsec::engine::{
    AuthVerdict, BanOutcome, Cidr, Config, Engine, IpKey, Note, PikeVerdict, Reason, ReportVerdict,
    ScannerVerdict, Side,
};

const T0: u64 = 1_800_000_000_000_000;
const S: u64 = 1_000_000;

fn ip(s: &str) -> IpKey {
    IpKey::parse(s).unwrap()
}

fn cidr(s: &str) -> Cidr {
    Cidr::parse(s).unwrap()
}

fn base() -> Config {
    Config {
        pike_sampling_time_s: 2,
        pike_density: 10,
        pike_ban_time_s: 60,
        max_tracked_ips: 4096,
        max_bans: 1024,
        db_queue_size: 0,
        ..Config::default()
    }
}

fn engine(cfg: Config) -> Engine {
    Engine::new(cfg).unwrap_or_else(|e| panic!("Engine::new: {e}"))
}

/// Floods `who` at `t` until banned; returns the ban's length in seconds.
fn flood_until_banned(e: &Engine, who: &IpKey, t: u64) -> u64 {
    for k in 0..1000 {
        if let PikeVerdict::JustBanned(rec) = e.pike_check(who, t + k).unwrap() {
            assert_eq!(rec.ban.reason, Reason::Pike);
            return (rec.ban.expires_us - rec.ban.created_us) / S;
        }
    }
    panic!("{who} was never banned");
}

// ====================================================== repeat offenders

#[test]
fn a_repeat_offender_gets_the_previous_length_times_the_multiplier_up_to_the_cap() {
    let e = engine(Config {
        recidive_window_s: 3600,
        ban_multiplier: 3,
        ban_time_max_s: 1000,
        ..base()
    });
    let a = ip("198.51.100.9");
    let mut t = T0;
    let mut lengths = Vec::new();
    for _ in 0..5 {
        let len = flood_until_banned(&e, &a, t);
        lengths.push(len);
        // Just after the ban ends: a repeat.
        t += len * S + S;
        e.sweep(t).unwrap();
    }
    assert_eq!(lengths, vec![60, 180, 540, 1000, 1000]);
    let h = e.offense(&Cidr::host(a), t).unwrap().unwrap();
    assert_eq!(h.offenses, 5);
    assert_eq!(get(&e.stats().bans_repeat), 4);
}

#[test]
fn the_recidive_window_is_counted_from_the_end_of_the_previous_ban() {
    let e = engine(Config {
        recidive_window_s: 100,
        ban_multiplier: 2,
        ..base()
    });
    let (a, b) = (ip("198.51.100.1"), ip("198.51.100.2"));
    assert_eq!(flood_until_banned(&e, &a, T0), 60);
    assert_eq!(flood_until_banned(&e, &b, T0), 60);
    // Both bans end at T0 + 60 s (plus the microseconds of their request).
    // One second inside the window: a repeat; exactly at its end: not.
    let end = T0 + 60 * S;
    assert_eq!(flood_until_banned(&e, &a, end + 98 * S), 120);
    assert_eq!(flood_until_banned(&e, &b, end + 101 * S), 60);
}

#[test]
fn history_outlives_the_ban_and_the_evicted_flood_entry() {
    let e = engine(Config {
        max_tracked_ips: 16,
        max_bans: 16,
        recidive_window_s: 86_400,
        ..base()
    });
    let a = ip("203.0.113.7");
    assert_eq!(flood_until_banned(&e, &a, T0), 60);
    let t = T0 + 70 * S;
    assert_eq!(e.sweep(t).unwrap().len(), 1);
    // A spoofed flood pushes the source's own entry out of its table.
    for i in 0..5000u32 {
        e.pike_check(
            &IpKey::from_ip(std::net::Ipv4Addr::from(0x0a00_0000 + i).into()),
            t + i as u64,
        )
        .unwrap();
    }
    assert_eq!(e.source_info(&a, t + 5000).unwrap().pike_requests, 0);
    assert!(get(&e.source_counters().evictions) > 0);
    // Its history is still there, so the next ban is longer.
    assert_eq!(flood_until_banned(&e, &a, t + 10 * S), 120);
}

#[test]
fn manual_bans_are_not_escalated_and_no_escalation_with_a_zero_window() {
    let e = engine(Config {
        recidive_window_s: 0,
        ..base()
    });
    let a = ip("198.51.100.3");
    assert_eq!(flood_until_banned(&e, &a, T0), 60);
    e.sweep(T0 + 61 * S).unwrap();
    assert_eq!(flood_until_banned(&e, &a, T0 + 62 * S), 60);

    let e = engine(base());
    let b = cidr("198.51.100.4");
    for k in 0..3 {
        let o = e.ban(b, 30, Reason::Manual, T0 + k * 40 * S).unwrap();
        let rec = o.made().copied().unwrap();
        assert_eq!((rec.ban.expires_us - rec.ban.created_us) / S, 30);
        e.sweep(T0 + k * 40 * S + 31 * S).unwrap();
    }
}

// ============================================ prefix aggregation, IPv6

fn subnets() -> Config {
    Config {
        subnet_ban_threshold: 30,
        subnet_ban_time_s: 600,
        ..base()
    }
}

#[test]
fn thirty_flooders_of_one_slash_24_get_it_banned_and_the_next_24_is_untouched() {
    let e = engine(subnets());
    for h in 1..=29 {
        flood_until_banned(&e, &ip(&format!("10.1.2.{h}")), T0);
        assert!(
            e.drain_side().is_empty(),
            "{h} hosts banned: no subnet ban yet"
        );
    }
    // Exactly the threshold.
    flood_until_banned(&e, &ip("10.1.2.30"), T0);
    let side = e.drain_side();
    let [Side::SubnetBanned { rec, count }] = side.as_slice() else {
        panic!("{side:?}");
    };
    assert_eq!((rec.target, *count), (cidr("10.1.2.0/24"), 30));
    assert_eq!(rec.ban.reason, Reason::Subnet);
    assert_eq!((rec.ban.expires_us - rec.ban.created_us) / S, 600);
    assert_eq!(e.stats().bans_created_for(Reason::Subnet), 1);
    // Every address of the /24 is refused now, one never seen included.
    assert_eq!(
        e.pike_check(&ip("10.1.2.200"), T0 + S).unwrap(),
        PikeVerdict::Banned(Reason::Subnet)
    );
    // The neighbouring /24, just across the boundary, is not.
    assert_eq!(
        e.pike_check(&ip("10.1.3.0"), T0 + S).unwrap(),
        PikeVerdict::Allowed
    );
    assert_eq!(
        e.pike_check(&ip("10.1.1.255"), T0 + S).unwrap(),
        PikeVerdict::Allowed
    );
}

#[test]
fn only_bans_in_force_count_towards_a_prefix() {
    let e = engine(Config {
        subnet_ban_threshold: 3,
        ..base()
    });
    flood_until_banned(&e, &ip("10.9.0.1"), T0);
    flood_until_banned(&e, &ip("10.9.0.2"), T0);
    // Both expire and are swept: the count falls back to zero.
    assert_eq!(e.sweep(T0 + 61 * S).unwrap().len(), 2);
    flood_until_banned(&e, &ip("10.9.0.3"), T0 + 62 * S);
    flood_until_banned(&e, &ip("10.9.0.4"), T0 + 62 * S);
    assert!(e.drain_side().is_empty());
    // Lifting one by hand also takes it off the count.
    e.unban(&cidr("10.9.0.4"), T0 + 63 * S).unwrap().unwrap();
    flood_until_banned(&e, &ip("10.9.0.5"), T0 + 63 * S);
    assert!(e.drain_side().is_empty());
    flood_until_banned(&e, &ip("10.9.0.6"), T0 + 63 * S);
    assert!(matches!(
        e.drain_side().as_slice(),
        [Side::SubnetBanned { count: 3, .. }]
    ));
}

#[test]
fn a_prefix_holding_a_whitelisted_address_is_not_banned_and_says_why() {
    let e = engine(Config {
        subnet_ban_threshold: 2,
        whitelist: vec![cidr("10.7.7.250")],
        ..base()
    });
    flood_until_banned(&e, &ip("10.7.7.1"), T0);
    flood_until_banned(&e, &ip("10.7.7.2"), T0);
    let side = e.drain_side();
    assert!(
        matches!(
            side.as_slice(),
            [Side::SubnetRefused {
                count: 2,
                why: BanOutcome::Whitelisted(_),
                ..
            }]
        ),
        "{side:?}"
    );
    assert_eq!(
        e.pike_check(&ip("10.7.7.3"), T0 + S).unwrap(),
        PikeVerdict::Allowed
    );
}

#[test]
fn an_ipv6_host_rotating_through_its_slash_64_is_banned_as_one() {
    let e = engine(base());
    let mut verdicts = Vec::new();
    for i in 1..=200u32 {
        let a = ip(&format!("2001:db8:5:6::{i:x}:{:x}", (i * 7919) & 0xffff));
        verdicts.push(e.pike_check(&a, T0 + i as u64).unwrap());
    }
    assert!(verdicts[..10].iter().all(|v| *v == PikeVerdict::Allowed));
    let PikeVerdict::JustBanned(rec) = verdicts[10] else {
        panic!("{:?}", verdicts[10]);
    };
    assert_eq!(rec.target, cidr("2001:db8:5:6::/64"));
    assert!(verdicts[11..]
        .iter()
        .all(|v| *v == PikeVerdict::Banned(Reason::Pike)));
    assert_eq!(e.bans_active(), 1);
    // Its neighbour /64 is another source.
    assert_eq!(
        e.pike_check(&ip("2001:db8:5:7::1"), T0 + 300).unwrap(),
        PikeVerdict::Allowed
    );
    // Listed and lifted as the /64.
    let info = e.source_info(&ip("2001:db8:5:6::dead"), T0 + 300).unwrap();
    assert_eq!(info.unit, cidr("2001:db8:5:6::/64"));
    assert_eq!(info.ban.unwrap().target, cidr("2001:db8:5:6::/64"));
    assert!(e
        .unban(&cidr("2001:db8:5:6::/64"), T0 + 400)
        .unwrap()
        .is_some());
    assert_eq!(
        e.pike_check(&ip("2001:db8:5:6::1"), T0 + 401).unwrap(),
        PikeVerdict::Allowed
    );
}

#[test]
fn ipv6_tracked_per_address_when_asked_and_a_slash_128_ban_still_holds() {
    let e = engine(Config {
        ipv6_track_prefix: 128,
        ..base()
    });
    for i in 1..=50u32 {
        assert_eq!(
            e.pike_check(&ip(&format!("2001:db8::{i:x}")), T0 + i as u64)
                .unwrap(),
            PikeVerdict::Allowed
        );
    }
    // With /64 tracking, a manual ban of one address is a prefix ban.
    let e = engine(base());
    assert!(e
        .ban(cidr("2001:db8::7"), 60, Reason::Manual, T0)
        .unwrap()
        .made()
        .is_some());
    assert_eq!(
        e.pike_check(&ip("2001:db8::7"), T0 + 1).unwrap(),
        PikeVerdict::Banned(Reason::Manual)
    );
    assert_eq!(
        e.pike_check(&ip("2001:db8::8"), T0 + 1).unwrap(),
        PikeVerdict::Allowed
    );
}

#[test]
fn ipv6_aggregation_into_a_broader_prefix() {
    let e = engine(Config {
        subnet_ban_threshold: 3,
        subnet_prefix_v6: 48,
        ..base()
    });
    for n in 1..=3u32 {
        flood_until_banned(&e, &ip(&format!("2001:db8:77:{n:x}::1")), T0);
    }
    let side = e.drain_side();
    let [Side::SubnetBanned { rec, .. }] = side.as_slice() else {
        panic!("{side:?}");
    };
    assert_eq!(rec.target, cidr("2001:db8:77::/48"));
}

#[test]
fn bad_tracking_and_subnet_prefixes_are_refused_at_start() {
    for (cfg, param) in [
        (
            Config {
                ipv6_track_prefix: 24,
                ..base()
            },
            "ipv6_track_prefix",
        ),
        (
            Config {
                subnet_prefix_v4: 4,
                ..base()
            },
            "subnet_prefix_v4",
        ),
        (
            Config {
                enum_threshold: 1,
                ..base()
            },
            "enum_threshold",
        ),
    ] {
        let err = Engine::new(cfg).err().unwrap().to_string();
        assert!(err.contains(param), "{err}");
    }
}

// ======================================================= per-method floods

fn methods(spec: &str) -> Config {
    Config {
        pike_density: 100,
        method_limits: parse_method_density(spec).unwrap(),
        ..base()
    }
}

#[test]
fn a_register_storm_is_banned_long_before_the_overall_limit() {
    let e = engine(methods("REGISTER:10,INVITE:20"));
    let a = ip("192.0.2.50");
    for k in 0..10 {
        assert_eq!(
            e.pike_check_method(&a, Some(b"REGISTER"), T0 + k).unwrap(),
            PikeVerdict::Allowed,
            "REGISTER #{}",
            k + 1
        );
    }
    // Other methods are not limited by REGISTER's count.
    for k in 0..30 {
        assert_eq!(
            e.pike_check_method(&a, Some(b"OPTIONS"), T0 + 100 + k)
                .unwrap(),
            PikeVerdict::Allowed
        );
    }
    let v = e
        .pike_check_method(&a, Some(b"register"), T0 + 200)
        .unwrap();
    let PikeVerdict::JustBanned(rec) = v else {
        panic!("{v:?}")
    };
    assert_eq!(rec.ban.reason, Reason::Method);
    assert_eq!(e.stats().bans_created_for(Reason::Method), 1);
    assert_eq!(
        e.pike_check_method(&a, Some(b"OPTIONS"), T0 + 300).unwrap(),
        PikeVerdict::Banned(Reason::Method)
    );
    // The window slides: another source's REGISTERs spread over time pass.
    let b = ip("192.0.2.51");
    for k in 0..30 {
        assert_eq!(
            e.pike_check_method(&b, Some(b"REGISTER"), T0 + k * S)
                .unwrap(),
            PikeVerdict::Allowed
        );
    }
}

#[test]
fn method_density_parsing_names_the_bad_item() {
    assert_eq!(
        parse_method_density(" REGISTER:10, invite:20 ").unwrap(),
        vec![
            MethodLimit {
                method: "REGISTER".into(),
                density: 10
            },
            MethodLimit {
                method: "INVITE".into(),
                density: 20
            }
        ]
    );
    assert!(parse_method_density("").unwrap().is_empty());
    for (bad, says) in [
        ("REGISTER", "METHOD:requests"),
        ("REGISTER:0", "1 to 65534"),
        ("REGISTER:65535", "1 to 65534"),
        ("REGISTER:x", "1 to 65534"),
        ("REG ISTER:5", "not a SIP method"),
        (":5", "not a SIP method"),
        ("REGISTER:1,register:2", "twice"),
        ("A:1,B:1,C:1,D:1,E:1,F:1,G:1,H:1,I:1", "more than 8"),
    ] {
        let err = parse_method_density(bad).unwrap_err();
        assert!(err.contains(says), "{bad}: {err}");
    }
}

// ================================================ accounts, enumeration

fn accounts() -> Config {
    Config {
        auth_fail_threshold: 50,
        user_fail_threshold: 10,
        user_fail_window_s: 60,
        user_block_time_s: 300,
        enum_threshold: 10,
        ..base()
    }
}

#[test]
fn ten_sources_failing_once_each_block_the_account_but_ban_no_source() {
    let e = engine(accounts());
    for n in 1..=9 {
        let v = e
            .auth_fail_user(&ip(&format!("198.51.100.{n}")), Some(b"1001"), T0 + n)
            .unwrap();
        assert_eq!(v, AuthVerdict::Counted(1));
        assert!(e.drain_side().is_empty(), "{n} failures");
        assert!(e.user(b"1001", T0 + n).unwrap().unwrap().blocked.is_none());
    }
    e.auth_fail_user(&ip("198.51.100.10"), Some(b"1001"), T0 + 10)
        .unwrap();
    let side = e.drain_side();
    let [Side::UserBlocked(b)] = side.as_slice() else {
        panic!("{side:?}")
    };
    assert_eq!((b.user.as_bytes(), b.failures), (&b"1001"[..], 10));
    assert_eq!(b.ends_us - b.blocked_us, 300 * S);
    assert!(e.user(b"1001", T0 + 11).unwrap().unwrap().blocked.is_some());
    assert_eq!(e.bans_active(), 0);
    assert_eq!(get(&e.stats().users_blocked), 1);
    // Another account is untouched; the block ends on time.
    assert!(e.user(b"1002", T0 + 11).unwrap().is_none());
    let after = T0 + 10 + 300 * S;
    assert!(e
        .user(b"1001", after)
        .unwrap()
        .map_or(true, |u| u.blocked.is_none()));
    // Lifted by hand, and listed blocked first.
    for n in 1..=10 {
        e.auth_fail_user(&ip("198.51.100.77"), Some(b"2002"), after + n)
            .unwrap();
    }
    e.auth_fail_user(&ip("198.51.100.77"), Some(b"3003"), after + 20)
        .unwrap();
    let list = e.users_list(after + 30).unwrap();
    assert_eq!(list[0].user.as_bytes(), b"2002");
    assert!(list[0].blocked.is_some());
    assert!(list
        .iter()
        .any(|u| u.user.as_bytes() == b"3003" && u.failures == 1));
    assert!(e.user_unblock(b"2002", after + 40).unwrap().is_some());
    assert!(e.user_unblock(b"2002", after + 41).unwrap().is_none());
}

#[test]
fn one_source_failing_for_ten_usernames_is_banned_for_enumeration() {
    let e = engine(accounts());
    let a = ip("203.0.113.99");
    for n in 1..=9u64 {
        let user = format!("10{n:02}");
        // The same username twice is still one username.
        for _ in 0..2 {
            let v = e.auth_fail_user(&a, Some(user.as_bytes()), T0 + n).unwrap();
            assert!(matches!(v, AuthVerdict::Counted(_)), "{v:?}");
        }
        assert_eq!(e.source_info(&a, T0 + n).unwrap().users_failed, n as u32);
    }
    assert_eq!(e.source_info(&a, T0 + 10).unwrap().users_failed, 9);
    let v = e.auth_fail_user(&a, Some(b"1010"), T0 + 10).unwrap();
    let AuthVerdict::JustBanned(rec) = v else {
        panic!("{v:?}")
    };
    assert_eq!(rec.ban.reason, Reason::Enum);
    assert_eq!(e.stats().bans_created_for(Reason::Enum), 1);
}

#[test]
fn usernames_older_than_the_auth_window_do_not_count_for_enumeration() {
    let e = engine(Config {
        auth_fail_window_s: 60,
        ..accounts()
    });
    let a = ip("203.0.113.98");
    for n in 0..9u64 {
        e.auth_fail_user(&a, Some(format!("u{n}").as_bytes()), T0 + n * S)
            .unwrap();
    }
    // u0 failed 60 s before this one: out of the window.
    let v = e.auth_fail_user(&a, Some(b"u9"), T0 + 60 * S).unwrap();
    assert!(matches!(v, AuthVerdict::Counted(_)), "{v:?}");
    assert_eq!(e.source_info(&a, T0 + 60 * S).unwrap().users_failed, 9);
    assert_eq!(e.bans_active(), 0);
    let v = e.auth_fail_user(&a, Some(b"u10"), T0 + 61 * S).unwrap();
    assert!(matches!(v, AuthVerdict::Counted(_)), "{v:?}");
    let v = e.auth_fail_user(&a, Some(b"u11"), T0 + 61 * S).unwrap();
    assert!(matches!(v, AuthVerdict::JustBanned(_)), "{v:?}");
}

#[test]
fn whitelisted_sources_count_against_neither_accounts_nor_enumeration() {
    let e = engine(Config {
        whitelist: vec![cidr("10.0.0.0/8")],
        ..accounts()
    });
    for n in 0..40u64 {
        e.auth_fail_user(&ip("10.1.1.1"), Some(format!("u{n}").as_bytes()), T0 + n)
            .unwrap();
        e.auth_fail_user(&ip("10.1.1.1"), Some(b"x"), T0 + n)
            .unwrap();
    }
    assert!(e.drain_side().is_empty());
    assert!(e.user(b"x", T0 + 50).unwrap().is_none());
}

// ===================================================== reports, scanners

#[test]
fn reported_weights_add_up_to_a_ban_that_keeps_the_reason_word() {
    let e = engine(Config {
        report_threshold: 10,
        report_window_s: 60,
        report_ban_time_s: 900,
        ..base()
    });
    let a = ip("192.0.2.77");
    let word = Note::new(b"bad-domain").unwrap();
    assert_eq!(
        e.report(&a, &word, 4, T0).unwrap(),
        ReportVerdict::Counted(4)
    );
    assert_eq!(
        e.report(&a, &word, 5, T0 + S).unwrap(),
        ReportVerdict::Counted(9)
    );
    let v = e.report(&a, &word, 1, T0 + 2 * S).unwrap();
    let ReportVerdict::JustBanned(rec, 10) = v else {
        panic!("{v:?}")
    };
    assert_eq!(rec.ban.reason, Reason::Report);
    assert_eq!((rec.ban.expires_us - rec.ban.created_us) / S, 900);
    assert_eq!(e.note_of(&rec, T0 + 3 * S).unwrap(), Some(word));
    assert_eq!(
        e.report(&a, &word, 1, T0 + 3 * S).unwrap(),
        ReportVerdict::AlreadyBanned(Reason::Report)
    );
    assert_eq!(get(&e.stats().reports), 4);
    // Old weight slides out of the window.
    let b = ip("192.0.2.78");
    e.report(&b, &word, 9, T0).unwrap();
    assert_eq!(
        e.report(&b, &word, 1, T0 + 61 * S).unwrap(),
        ReportVerdict::Counted(1)
    );
}

#[test]
fn a_scanner_is_banned_on_the_spot_with_its_signature_as_note() {
    let e = engine(Config {
        scanner_ban_time_s: 3600,
        whitelist: vec![cidr("10.0.0.0/8")],
        ..base()
    });
    let v = e
        .scanner_found(&ip("192.0.2.99"), "friendly-scanner", T0)
        .unwrap();
    let ScannerVerdict::JustBanned(rec) = v else {
        panic!("{v:?}")
    };
    assert_eq!(rec.ban.reason, Reason::Scanner);
    assert_eq!(
        e.note_of(&rec, T0).unwrap().unwrap().as_bytes(),
        b"friendly-scanner"
    );
    assert_eq!(
        e.scanner_found(&ip("192.0.2.99"), "sipvicious", T0 + 1)
            .unwrap(),
        ScannerVerdict::AlreadyBanned(Reason::Scanner)
    );
    assert_eq!(
        e.scanner_found(&ip("10.0.0.1"), "sipvicious", T0).unwrap(),
        ScannerVerdict::Whitelisted
    );
}

// ================================================================= notes

#[test]
fn notes_follow_their_ban_and_never_a_later_one() {
    let e = engine(base());
    let t = cidr("198.51.100.0/24");
    let note = Note::new(b"abuse ticket 4411").unwrap();
    let rec = *e
        .ban_noted(t, 60, Reason::Manual, Some(&note), T0)
        .unwrap()
        .made()
        .unwrap();
    assert_eq!(e.note_of(&rec, T0).unwrap(), Some(note));
    // Re-banned without a note: the note stays, with the new expiry.
    let rec2 = *e
        .ban_noted(t, 600, Reason::Manual, None, T0 + S)
        .unwrap()
        .made()
        .unwrap();
    assert_eq!(e.note_of(&rec2, T0 + 100 * S).unwrap(), Some(note));
    e.unban(&t, T0 + 200 * S).unwrap().unwrap();
    let rec3 = *e
        .ban(t, 60, Reason::Manual, T0 + 201 * S)
        .unwrap()
        .made()
        .unwrap();
    assert_eq!(e.note_of(&rec3, T0 + 201 * S).unwrap(), None);
    // A host ban carries one too.
    let h = cidr("192.0.2.1");
    let rec = *e
        .ban_noted(h, 0, Reason::Manual, Some(&note), T0)
        .unwrap()
        .made()
        .unwrap();
    assert_eq!(e.note_of(&rec, T0 + 999 * S).unwrap(), Some(note));
    assert!(Note::new(&[b'x'; 65]).is_err());
    assert!(Note::new(&[b'x'; 64]).is_ok());
}

fn get(c: &rsec::engine::stats::Counter) -> u64 {
    Stats::get(c)
}

#[test]
fn rule_tables_cost_what_the_readme_says() {
    let mut cfg = methods("REGISTER:10");
    let profile = rsec::engine::profile::ProfileDef::parse("p: pike_density=5", &cfg).unwrap();
    cfg.profiles.push(profile);
    let e = engine(cfg);
    let got: Vec<(&str, usize)> = e.rule_tables().iter().map(|(n, _, b)| (*n, *b)).collect();
    // The figures in README.md ("Memory is fixed at start-up").
    assert_eq!(
        got,
        vec![
            ("offender histories", 40),
            ("accounts", 108),
            ("suspects", 300),
            ("ban notes", 116),
            ("prefix counts", 28),
            ("per-method counts", 48),
            ("profile counts", 64),
            ("dry-run bans", 60),
            ("tenants", 124),
            ("tenant sources", 60),
            ("tenant whitelist", 32),
            ("tenant bans", 60),
            ("decisions", 72),
        ]
    );
    assert_eq!(Engine::bytes_per_source(), 64);
}

#[test]
fn a_slash_64_holding_a_whitelisted_address_bans_only_the_flooding_address() {
    let e = engine(Config {
        whitelist: vec![cidr("2001:db8:9:9::1")],
        ..base()
    });
    let bad = ip("2001:db8:9:9::bad");
    let verdicts: Vec<PikeVerdict> = (0..12)
        .map(|k| e.pike_check(&bad, T0 + k).unwrap())
        .collect();
    let PikeVerdict::JustBanned(rec) = verdicts[10] else {
        panic!("{verdicts:?}")
    };
    // Not the /64: a firewall following the event would drop ::1 too.
    assert_eq!(rec.target, cidr("2001:db8:9:9::bad"));
    assert_eq!(verdicts[11], PikeVerdict::Banned(Reason::Pike));
    assert_eq!(
        e.pike_check(&ip("2001:db8:9:9::1"), T0 + 20).unwrap(),
        PikeVerdict::Whitelisted
    );
    // The rules that ban on one event do the same.
    let v = e
        .scanner_found(&ip("2001:db8:9:9::5ca"), "sipvicious", T0 + 30)
        .unwrap();
    let ScannerVerdict::JustBanned(rec) = v else {
        panic!("{v:?}")
    };
    assert_eq!(rec.target, cidr("2001:db8:9:9::5ca"));
}
