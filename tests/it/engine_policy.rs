//! The Engine facade (src/engine/mod.rs): pike, auth failures, bans, prefix
//! bans, whitelist, rate limits, sweeping, stats and configuration.

use rsec::engine::stats::Stats;
use rsec::engine::{
    AuthVerdict, Ban, BanOutcome, BanRecord, Cidr, Config, Engine, EngineError, IpKey, KeyError,
    PikeVerdict, Reason, RlKey, TooBroad,
};

/// A wall-clock-like start time, a multiple of every window used here.
const T0: u64 = 1_800_000_000_000_000;
const SEC: u64 = 1_000_000;

fn ip(s: &str) -> IpKey {
    IpKey::parse(s).unwrap()
}

fn cidr(s: &str) -> Cidr {
    Cidr::parse(s).unwrap()
}

fn key(s: &str) -> RlKey {
    RlKey::new(s.as_bytes()).unwrap()
}

fn small() -> Config {
    Config {
        pike_sampling_time_s: 2,
        pike_density: 10,
        pike_ban_time_s: 60,
        ban_time_s: 3600,
        auth_fail_threshold: 5,
        auth_fail_window_s: 60,
        auth_ban_time_s: 900,
        max_tracked_ips: 1024,
        max_rl_keys: 256,
        max_bans: 256,
        max_whitelist: 1024,
        lock_stripes: 8,
        db_queue_size: 0,
        db_sync_interval_s: 5,
        db_timeout_s: 3,
        min_prefix_v4: 8,
        min_prefix_v6: 32,
        whitelist: Vec::new(),
        ..Config::default()
    }
}

fn engine(cfg: Config) -> Engine {
    Engine::new(cfg).unwrap_or_else(|e| panic!("Engine::new: {e}"))
}

fn get(c: &rsec::engine::stats::Counter) -> u64 {
    Stats::get(c)
}

// ===================================================================== pike

#[test]
fn pike_allows_exactly_density_then_bans() {
    let e = engine(small());
    let src = ip("198.51.100.7");
    for i in 0..10u64 {
        assert_eq!(
            e.pike_check(&src, T0 + i * 1000).unwrap(),
            PikeVerdict::Allowed,
            "request {}",
            i + 1
        );
        assert_eq!(e.pike_count(&src, T0 + i * 1000).unwrap(), i as u32 + 1);
    }
    let banned_at = T0 + 10_000;
    let o = e.pike_check(&src, banned_at).unwrap();
    assert!(matches!(o, PikeVerdict::JustBanned(_)), "{o:?}");
    for i in 1..=5u64 {
        assert_eq!(
            e.pike_check(&src, banned_at + i).unwrap(),
            PikeVerdict::Banned(Reason::Pike)
        );
    }
    let rec = e.lookup_ban(&src, banned_at + 5).unwrap().expect("banned");
    assert_eq!(rec.target, Cidr::host(src));
    assert_eq!(rec.ban.reason, Reason::Pike);
    assert_eq!(rec.ban.created_us, banned_at);
    assert_eq!(rec.ban.expires_us, banned_at + 60 * SEC);
    assert_eq!(rec.ban.hits, 5, "one hit per request refused while banned");

    // Another source is not affected.
    assert_eq!(
        e.pike_check(&ip("198.51.100.8"), banned_at).unwrap(),
        PikeVerdict::Allowed
    );

    // The ban lasts exactly pike_ban_time.
    assert_eq!(
        e.pike_check(&src, banned_at + 60 * SEC - 1).unwrap(),
        PikeVerdict::Banned(Reason::Pike)
    );
    assert_eq!(e.lookup_ban(&src, banned_at + 60 * SEC).unwrap(), None);
    assert_eq!(
        e.pike_check(&src, banned_at + 60 * SEC).unwrap(),
        PikeVerdict::Allowed
    );
    assert_eq!(
        e.pike_count(&src, banned_at + 60 * SEC).unwrap(),
        1,
        "old requests have aged out"
    );

    let s = e.stats();
    assert_eq!(get(&s.pike_checked), 10 + 1 + 5 + 1 + 1 + 1);
    // The banning request plus every one refused while banned.
    assert_eq!(get(&s.pike_blocked), 1 + 5 + 1);
    assert_eq!(get(&s.dropped_while_banned), 5 + 1);
    assert_eq!(s.bans_created_for(Reason::Pike), 1);
    assert_eq!(s.bans_created_total(), 1);
}

#[test]
fn pike_requests_outside_the_sampling_window_do_not_count() {
    let e = engine(small());
    let src = ip("2001:db8::5");
    // 10 per 2 s is fine, again and again.
    for round in 0..5u64 {
        let t = T0 + round * 2 * SEC;
        for i in 0..10u64 {
            assert_eq!(
                e.pike_check(&src, t + i).unwrap(),
                PikeVerdict::Allowed,
                "round {round} req {i}"
            );
        }
    }
    // The 11th inside one window is not.
    let o = e.pike_check(&src, T0 + 8 * SEC + 10).unwrap();
    assert!(matches!(o, PikeVerdict::JustBanned(_)), "{o:?}");
}

#[test]
fn pike_burst_straddling_a_window_edge_is_caught() {
    let e = engine(small());
    let src = ip("203.0.113.1");
    // 2 s window in 250 ms sub-intervals; 6 requests just before a sub-interval
    // edge and 5 just after.
    let edge = T0 + SEC;
    for i in 0..6u64 {
        assert_eq!(
            e.pike_check(&src, edge - 6 + i).unwrap(),
            PikeVerdict::Allowed
        );
    }
    for i in 0..4u64 {
        assert_eq!(e.pike_check(&src, edge + i).unwrap(), PikeVerdict::Allowed);
    }
    let o = e.pike_check(&src, edge + 4).unwrap();
    assert!(matches!(o, PikeVerdict::JustBanned(_)), "{o:?}");
}

#[test]
fn pike_v4_mapped_is_the_same_source() {
    let e = engine(small());
    for i in 0..5u64 {
        assert_eq!(
            e.pike_check(&ip("10.0.0.1"), T0 + i).unwrap(),
            PikeVerdict::Allowed
        );
        assert_eq!(
            e.pike_check(&ip("::ffff:10.0.0.1"), T0 + i).unwrap(),
            PikeVerdict::Allowed
        );
    }
    let o = e.pike_check(&ip("::ffff:10.0.0.1"), T0 + 9).unwrap();
    assert!(matches!(o, PikeVerdict::JustBanned(_)), "{o:?}");
    assert_eq!(
        e.pike_check(&ip("10.0.0.1"), T0 + 9).unwrap(),
        PikeVerdict::Banned(Reason::Pike)
    );
}

// ================================================================ whitelist

#[test]
fn whitelisted_sources_are_never_counted_or_banned() {
    let mut cfg = small();
    cfg.whitelist = vec![cidr("10.0.0.0/8"), cidr("2001:db8::/32")];
    let e = engine(cfg);
    let w4 = ip("10.1.2.3");
    let w6 = ip("2001:db8:ffff::1");
    assert!(e.is_whitelisted(&w4));
    assert!(e.is_whitelisted(&w6));
    assert!(!e.is_whitelisted(&ip("11.0.0.1")));
    for i in 0..1000u64 {
        assert_eq!(e.pike_check(&w4, T0 + i).unwrap(), PikeVerdict::Whitelisted);
        assert_eq!(e.pike_check(&w6, T0 + i).unwrap(), PikeVerdict::Whitelisted);
    }
    for i in 0..100u64 {
        assert_eq!(e.auth_fail(&w4, T0 + i).unwrap(), AuthVerdict::Whitelisted);
    }
    assert_eq!(e.pike_count(&w4, T0 + 1000).unwrap(), 0);
    assert_eq!(e.auth_count(&w4, T0 + 1000).unwrap(), 0);

    for reason in Reason::ALL {
        let o = e.ban(Cidr::host(w4), 0, reason, T0).unwrap();
        assert!(matches!(o, BanOutcome::Whitelisted(_)), "{o:?}");
        let o = e.ban(Cidr::host(w6), 10, reason, T0).unwrap();
        assert!(matches!(o, BanOutcome::Whitelisted(_)), "{o:?}");
    }
    let o = e.ban(cidr("10.0.0.0/8"), 0, Reason::Manual, T0).unwrap();
    assert!(matches!(o, BanOutcome::Whitelisted(_)), "{o:?}");
    let o = e.ban(cidr("10.99.0.0/16"), 0, Reason::Manual, T0).unwrap();
    assert!(matches!(o, BanOutcome::Whitelisted(_)), "{o:?}");
    assert_eq!(e.lookup_ban(&w4, T0).unwrap(), None);
    assert_eq!(e.list_bans(T0).unwrap(), vec![]);
    assert_eq!(e.bans_active(), 0);

    let s = e.stats();
    assert_eq!(get(&s.whitelisted), 2000);
    assert_eq!(get(&s.pike_checked), 2000);
    assert_eq!(get(&s.pike_blocked), 0);
    assert_eq!(get(&s.auth_failures), 100);
    assert_eq!(s.bans_created_total(), 0);
}

#[test]
fn whitelist_wins_over_a_covering_ban() {
    let e = engine(small());
    // A wider ban made before part of it was whitelisted at run time.
    let o = e.ban(cidr("10.0.0.0/8"), 0, Reason::Manual, T0).unwrap();
    assert!(matches!(o, BanOutcome::Created(_)), "{o:?}");
    assert_eq!(e.whitelist_add(cidr("10.1.0.0/16")), Ok(true));
    assert_eq!(
        e.pike_check(&ip("10.1.2.3"), T0).unwrap(),
        PikeVerdict::Whitelisted
    );
    assert_eq!(
        e.auth_fail(&ip("10.1.2.3"), T0).unwrap(),
        AuthVerdict::Whitelisted
    );
    assert_eq!(
        e.pike_check(&ip("10.2.0.1"), T0).unwrap(),
        PikeVerdict::Banned(Reason::Manual)
    );
}

#[test]
fn a_ban_covering_a_whitelisted_address_is_refused() {
    // The whitelisted host lies inside every one of these prefixes: a ban
    // on any of them would be announced to firewalls and drop it.
    let mut cfg = small();
    cfg.whitelist = vec![cidr("127.0.0.250/32"), cidr("2001:db8:1::/48")];
    let e = engine(cfg);
    for (target, blocker) in [
        ("127.0.0.0/8", "127.0.0.250"),
        ("127.0.0.0/24", "127.0.0.250"),
        ("127.0.0.250", "127.0.0.250"),
        ("2001:db8::/32", "2001:db8:1::/48"),
        ("2001:db8:1:2::/64", "2001:db8:1::/48"),
    ] {
        for reason in Reason::ALL {
            let o = e.ban(cidr(target), 60, reason, T0).unwrap();
            assert_eq!(o, BanOutcome::Whitelisted(cidr(blocker)), "{target}");
        }
        let o = e
            .restore_ban(cidr(target), Reason::Pike, T0, T0 + 60 * SEC, None, T0)
            .unwrap();
        assert_eq!(
            o,
            Some(BanOutcome::Whitelisted(cidr(blocker))),
            "{target} from the database"
        );
    }
    // Beside the whitelist, prefixes are banned as before.
    assert!(matches!(
        e.ban(cidr("127.0.1.0/24"), 60, Reason::Manual, T0).unwrap(),
        BanOutcome::Created(_)
    ));
    assert_eq!(e.lookup_ban(&ip("127.0.0.250"), T0).unwrap(), None);
    assert_eq!(e.bans_active(), 1);
}

#[test]
fn prefixes_shorter_than_the_minimum_are_refused() {
    let e = engine(small());
    let v4 = TooBroad { min: 8, ipv4: true };
    let v6 = TooBroad {
        min: 32,
        ipv4: false,
    };
    for (target, why) in [
        ("0.0.0.0/0", v4),
        ("0.0.0.0/7", v4),
        ("::/0", v6),
        ("2000::/3", v6),
        ("2001:db8::/31", v6),
    ] {
        assert_eq!(
            e.ban(cidr(target), 60, Reason::Manual, T0).unwrap(),
            BanOutcome::TooBroad(why),
            "{target}"
        );
        assert_eq!(
            e.restore_ban(cidr(target), Reason::Manual, T0, 0, None, T0)
                .unwrap(),
            Some(BanOutcome::TooBroad(why)),
            "{target}"
        );
        assert_eq!(
            why.to_string(),
            if why.ipv4 {
                "shorter than the /8 allowed for IPv4 (modparam min_prefix_v4)"
            } else {
                "shorter than the /32 allowed for IPv6 (modparam min_prefix_v6)"
            }
        );
        assert!(
            matches!(
                e.whitelist_add(cidr(target)),
                Err(rsec::engine::WhitelistChange::TooBroad(w)) if w == why
            ),
            "{target}"
        );
    }
    // The minimums themselves are allowed.
    assert!(matches!(
        e.ban(cidr("10.0.0.0/8"), 60, Reason::Manual, T0).unwrap(),
        BanOutcome::Created(_)
    ));
    assert!(matches!(
        e.ban(cidr("2001:db8::/32"), 60, Reason::Manual, T0)
            .unwrap(),
        BanOutcome::Created(_)
    ));
    assert_eq!(e.whitelist_add(cidr("172.16.0.0/12")), Ok(true));
    assert_eq!(e.list_bans(T0).unwrap().len(), 2);
    assert_eq!(e.whitelist().list(), vec![cidr("172.16.0.0/12")]);

    // A whitelist modparam that would switch rsec off is a start-up error.
    let mut cfg = small();
    cfg.whitelist = vec![cidr("0.0.0.0/0")];
    match Engine::new(cfg) {
        Err(EngineError::Config(err)) => {
            assert_eq!(err.param, "whitelist");
            assert!(
                err.to_string().contains("'0.0.0.0/0'")
                    && err.to_string().contains("min_prefix_v4"),
                "{err}"
            );
        }
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("a whitelist of 0.0.0.0/0 was accepted"),
    }
}

#[test]
fn whitelist_can_change_at_run_time() {
    let e = engine(small());
    let src = ip("192.0.2.10");
    for i in 0..10u64 {
        assert_eq!(e.pike_check(&src, T0 + i).unwrap(), PikeVerdict::Allowed);
    }
    assert_eq!(e.whitelist().add(cidr("192.0.2.0/24")), Ok(true));
    assert_eq!(e.whitelist().add(cidr("192.0.2.0/24")), Ok(false));
    assert_eq!(e.whitelist().list(), vec![cidr("192.0.2.0/24")]);
    assert_eq!(
        e.pike_check(&src, T0 + 10).unwrap(),
        PikeVerdict::Whitelisted
    );
    let o = e.ban(Cidr::host(src), 0, Reason::Manual, T0).unwrap();
    assert!(matches!(o, BanOutcome::Whitelisted(_)), "{o:?}");
    assert_eq!(e.whitelist().remove(&cidr("192.0.2.0/24")), Ok(true));
    assert_eq!(e.whitelist().remove(&cidr("192.0.2.0/24")), Ok(false));
    assert!(e.whitelist().list().is_empty());
    // Counted again from where it was.
    let o = e.pike_check(&src, T0 + 11).unwrap();
    assert!(matches!(o, PikeVerdict::JustBanned(_)), "{o:?}");
}

// ============================================================ auth failures

#[test]
fn auth_fail_counts_then_bans_at_threshold() {
    let e = engine(small());
    let src = ip("192.0.2.99");
    for n in 1..5u32 {
        assert_eq!(
            e.auth_fail(&src, T0 + n as u64 * SEC).unwrap(),
            AuthVerdict::Counted(n)
        );
        assert_eq!(e.auth_count(&src, T0 + n as u64 * SEC).unwrap(), n);
    }
    let banned_at = T0 + 5 * SEC;
    let o = e.auth_fail(&src, banned_at).unwrap();
    assert!(matches!(o, AuthVerdict::JustBanned(_)), "{o:?}");
    for i in 1..=3u64 {
        assert_eq!(
            e.auth_fail(&src, banned_at + i).unwrap(),
            AuthVerdict::AlreadyBanned(Reason::Auth)
        );
    }
    let rec = e.lookup_ban(&src, banned_at).unwrap().unwrap();
    assert_eq!(rec.ban.reason, Reason::Auth);
    assert_eq!(rec.ban.expires_us, banned_at + 900 * SEC);
    assert_eq!(rec.ban.hits, 0, "auth failures are not request hits");
    // The ban also blocks requests.
    assert_eq!(
        e.pike_check(&src, banned_at + 1).unwrap(),
        PikeVerdict::Banned(Reason::Auth)
    );

    // Once the ban is over, counting starts afresh.
    let after = banned_at + 900 * SEC;
    assert_eq!(
        e.lookup_ban(&src, after - 1).unwrap().map(|r| r.ban.reason),
        Some(Reason::Auth)
    );
    assert_eq!(e.lookup_ban(&src, after).unwrap(), None);
    assert_eq!(e.auth_fail(&src, after).unwrap(), AuthVerdict::Counted(1));

    let s = e.stats();
    assert_eq!(get(&s.auth_failures), 4 + 1 + 3 + 1);
    assert_eq!(s.bans_created_for(Reason::Auth), 1);
}

#[test]
fn auth_fail_ban_clears_the_count_even_within_the_window() {
    let mut cfg = small();
    cfg.auth_ban_time_s = 10;
    let e = engine(cfg);
    let src = ip("192.0.2.98");
    for n in 1..5u32 {
        assert_eq!(e.auth_fail(&src, T0).unwrap(), AuthVerdict::Counted(n));
    }
    let o = e.auth_fail(&src, T0).unwrap();
    assert!(matches!(o, AuthVerdict::JustBanned(_)), "{o:?}");
    assert_eq!(e.auth_count(&src, T0).unwrap(), 0);
    // 10 s later the ban is over but the 60 s window is not.
    assert_eq!(
        e.auth_fail(&src, T0 + 10 * SEC).unwrap(),
        AuthVerdict::Counted(1)
    );
}

#[test]
fn auth_failures_outside_the_window_do_not_count() {
    let e = engine(small());
    let src = ip("2001:db8::77");
    for n in 1..=4u32 {
        assert_eq!(e.auth_fail(&src, T0).unwrap(), AuthVerdict::Counted(n));
    }
    // 60 s later those four are gone.
    assert_eq!(e.auth_count(&src, T0 + 60 * SEC - 1).unwrap(), 4);
    assert_eq!(
        e.auth_fail(&src, T0 + 60 * SEC).unwrap(),
        AuthVerdict::Counted(1)
    );

    // Two early, two mid-window: the early ones drop first.
    let src2 = ip("2001:db8::78");
    let t = T0 + 1000 * SEC;
    assert_eq!(e.auth_fail(&src2, t).unwrap(), AuthVerdict::Counted(1));
    assert_eq!(e.auth_fail(&src2, t).unwrap(), AuthVerdict::Counted(2));
    assert_eq!(
        e.auth_fail(&src2, t + 30 * SEC).unwrap(),
        AuthVerdict::Counted(3)
    );
    assert_eq!(
        e.auth_fail(&src2, t + 30 * SEC).unwrap(),
        AuthVerdict::Counted(4)
    );
    assert_eq!(
        e.auth_fail(&src2, t + 60 * SEC).unwrap(),
        AuthVerdict::Counted(3)
    );
    assert_eq!(
        e.auth_fail(&src2, t + 60 * SEC).unwrap(),
        AuthVerdict::Counted(4)
    );
    let o = e.auth_fail(&src2, t + 60 * SEC).unwrap();
    assert!(matches!(o, AuthVerdict::JustBanned(_)), "{o:?}");
}

#[test]
fn auth_fail_on_a_manually_banned_source() {
    let e = engine(small());
    let src = ip("192.0.2.5");
    let o = e.ban(Cidr::host(src), 0, Reason::Manual, T0).unwrap();
    assert!(matches!(o, BanOutcome::Created(_)), "{o:?}");
    assert_eq!(
        e.auth_fail(&src, T0).unwrap(),
        AuthVerdict::AlreadyBanned(Reason::Manual)
    );
    assert_eq!(e.auth_count(&src, T0).unwrap(), 0);
}

// ===================================================================== bans

#[test]
fn manual_ban_with_zero_seconds_is_permanent() {
    let e = engine(small());
    let src = ip("198.51.100.200");
    let o = e.ban(Cidr::host(src), 0, Reason::Manual, T0).unwrap();
    assert!(matches!(o, BanOutcome::Created(_)), "{o:?}");
    let far = T0 + 20 * 365 * 86_400 * SEC;
    let rec = e
        .lookup_ban(&src, far)
        .unwrap()
        .expect("still banned 20 years later");
    assert!(rec.ban.is_permanent());
    assert_eq!(rec.ban.expires_us, 0);
    assert_eq!(rec.ban.reason, Reason::Manual);
    assert_eq!(
        e.pike_check(&src, far).unwrap(),
        PikeVerdict::Banned(Reason::Manual)
    );
    assert_eq!(e.sweep(far).unwrap(), vec![]);
    assert_eq!(e.list_bans(far).unwrap().len(), 1);
    assert_eq!(e.bans_active(), 1);

    // unban returns the ban once, then nothing.
    let lifted = e.unban(&Cidr::host(src), far).unwrap().expect("was banned");
    assert_eq!(lifted.ban.reason, Reason::Manual);
    assert_eq!(lifted.ban.created_us, T0);
    assert_eq!(lifted.ban.hits, 1);
    assert_eq!(e.unban(&Cidr::host(src), far).unwrap(), None);
    assert_eq!(e.lookup_ban(&src, far).unwrap(), None);
    assert_eq!(e.pike_check(&src, far).unwrap(), PikeVerdict::Allowed);
    assert_eq!(e.bans_active(), 0);
    assert_eq!(get(&e.stats().bans_removed), 1);
}

#[test]
fn timed_manual_ban_and_updates() {
    let e = engine(small());
    let t = Cidr::host(ip("198.51.100.1"));
    let o = e.ban(t, 30, Reason::Manual, T0).unwrap();
    assert!(matches!(o, BanOutcome::Created(_)), "{o:?}");
    assert_eq!(
        e.lookup_ban(&t.addr, T0).unwrap().unwrap().ban.expires_us,
        T0 + 30 * SEC
    );
    // A manual ban replaces the expiry, shorter or longer or permanent.
    let o = e.ban(t, 5, Reason::Manual, T0 + SEC).unwrap();
    assert!(matches!(o, BanOutcome::Updated(_)), "{o:?}");
    assert_eq!(
        e.lookup_ban(&t.addr, T0).unwrap().unwrap().ban.expires_us,
        T0 + 6 * SEC
    );
    let o = e.ban(t, 0, Reason::Manual, T0 + SEC).unwrap();
    assert!(matches!(o, BanOutcome::Updated(_)), "{o:?}");
    assert!(e
        .lookup_ban(&t.addr, T0 + 1000 * SEC)
        .unwrap()
        .unwrap()
        .ban
        .is_permanent());
    // Automatic rules leave an existing ban alone.
    let o = e.ban(t, 5, Reason::Pike, T0 + 2 * SEC).unwrap();
    assert!(
        matches!(o, BanOutcome::AlreadyBanned(r) if r.ban.reason == Reason::Manual),
        "{o:?}"
    );
    assert!(e
        .lookup_ban(&t.addr, T0 + 1000 * SEC)
        .unwrap()
        .unwrap()
        .ban
        .is_permanent());
    // Created once only.
    assert_eq!(e.stats().bans_created_total(), 1);
    assert_eq!(e.bans_active(), 1);

    // A manual ban on top of an automatic one takes it over.
    let p = ip("198.51.100.2");
    for i in 0..=10u64 {
        e.pike_check(&p, T0 + i).unwrap();
    }
    assert_eq!(
        e.lookup_ban(&p, T0 + 10).unwrap().unwrap().ban.reason,
        Reason::Pike
    );
    let o = e.ban(Cidr::host(p), 0, Reason::Manual, T0 + 20).unwrap();
    assert!(matches!(o, BanOutcome::Updated(_)), "{o:?}");
    let b = e.lookup_ban(&p, T0 + 3600 * SEC).unwrap().unwrap().ban;
    assert_eq!((b.reason, b.expires_us), (Reason::Manual, 0));
    assert_eq!(
        e.pike_check(&p, T0 + 21).unwrap(),
        PikeVerdict::Banned(Reason::Manual)
    );
}

#[test]
fn timed_ban_expires_exactly() {
    let e = engine(small());
    let t = Cidr::host(ip("2001:db8::dead"));
    let o = e.ban(t, 7, Reason::RateLimit, T0).unwrap();
    assert!(matches!(o, BanOutcome::Created(_)), "{o:?}");
    assert_eq!(
        e.pike_check(&t.addr, T0 + 7 * SEC - 1).unwrap(),
        PikeVerdict::Banned(Reason::RateLimit)
    );
    assert_eq!(
        e.pike_check(&t.addr, T0 + 7 * SEC).unwrap(),
        PikeVerdict::Allowed
    );
    // Expired but not yet swept: unban finds nothing active.
    assert_eq!(e.unban(&t, T0 + 7 * SEC).unwrap(), None);
    assert_eq!(get(&e.stats().bans_removed), 0);
    assert_eq!(e.bans_active(), 0);
}

#[test]
fn prefix_bans_block_every_address_inside() {
    let e = engine(small());
    let o = e.ban(cidr("10.0.0.0/8"), 0, Reason::Manual, T0).unwrap();
    assert!(matches!(o, BanOutcome::Created(_)), "{o:?}");
    for inside in ["10.1.2.3", "10.0.0.0", "10.255.255.255", "::ffff:10.9.9.9"] {
        assert_eq!(
            e.pike_check(&ip(inside), T0).unwrap(),
            PikeVerdict::Banned(Reason::Manual),
            "{inside}"
        );
        let rec = e.lookup_ban(&ip(inside), T0).unwrap().unwrap();
        assert_eq!(rec.target, cidr("10.0.0.0/8"));
    }
    for outside in [
        "11.0.0.0",
        "9.255.255.255",
        "192.168.1.1",
        "::a01:203",
        "2001:db8::1",
    ] {
        assert_eq!(
            e.pike_check(&ip(outside), T0).unwrap(),
            PikeVerdict::Allowed,
            "{outside}"
        );
    }
    assert_eq!(
        e.auth_fail(&ip("10.3.3.3"), T0).unwrap(),
        AuthVerdict::AlreadyBanned(Reason::Manual)
    );
    // Each address blocked counts a hit on the prefix ban.
    assert_eq!(
        e.lookup_ban(&ip("10.0.0.1"), T0).unwrap().unwrap().ban.hits,
        4
    );

    // IPv6 /64.
    let o = e
        .ban(cidr("2001:db8:1:2::/64"), 60, Reason::Manual, T0)
        .unwrap();
    assert!(matches!(o, BanOutcome::Created(_)), "{o:?}");
    for inside in [
        "2001:db8:1:2::",
        "2001:db8:1:2:abcd::1",
        "2001:db8:1:2:ffff:ffff:ffff:ffff",
    ] {
        assert_eq!(
            e.pike_check(&ip(inside), T0).unwrap(),
            PikeVerdict::Banned(Reason::Manual),
            "{inside}"
        );
    }
    for outside in [
        "2001:db8:1:3::",
        "2001:db8:1:1:ffff:ffff:ffff:ffff",
        "2001:db8::1",
    ] {
        assert_eq!(
            e.pike_check(&ip(outside), T0).unwrap(),
            PikeVerdict::Allowed,
            "{outside}"
        );
    }
    // It expires like any other ban.
    assert_eq!(
        e.pike_check(&ip("2001:db8:1:2::5"), T0 + 60 * SEC).unwrap(),
        PikeVerdict::Allowed
    );

    // Lifting the prefix ban lifts the block (the exact prefix is needed).
    assert_eq!(e.unban(&cidr("10.1.0.0/16"), T0).unwrap(), None);
    assert_eq!(e.unban(&Cidr::host(ip("10.1.2.3")), T0).unwrap(), None);
    assert!(e.unban(&cidr("10.0.0.0/8"), T0).unwrap().is_some());
    assert_eq!(
        e.pike_check(&ip("10.1.2.3"), T0).unwrap(),
        PikeVerdict::Allowed
    );
}

#[test]
fn most_specific_ban_is_reported() {
    let e = engine(small());
    let h = ip("172.16.5.5");
    let o = e.ban(cidr("172.16.0.0/12"), 0, Reason::Manual, T0).unwrap();
    assert!(matches!(o, BanOutcome::Created(_)), "{o:?}");
    let o = e.ban(cidr("172.16.5.0/24"), 0, Reason::Manual, T0).unwrap();
    assert!(matches!(o, BanOutcome::Created(_)), "{o:?}");
    let o = e.ban(Cidr::host(h), 0, Reason::Auth, T0).unwrap();
    assert!(matches!(o, BanOutcome::Created(_)), "{o:?}");
    assert_eq!(e.lookup_ban(&h, T0).unwrap().unwrap().target, Cidr::host(h));
    assert_eq!(
        e.pike_check(&h, T0).unwrap(),
        PikeVerdict::Banned(Reason::Auth)
    );
    assert_eq!(
        e.lookup_ban(&ip("172.16.5.6"), T0).unwrap().unwrap().target,
        cidr("172.16.5.0/24")
    );
    assert_eq!(
        e.lookup_ban(&ip("172.17.0.1"), T0).unwrap().unwrap().target,
        cidr("172.16.0.0/12")
    );
    e.unban(&Cidr::host(h), T0).unwrap().unwrap();
    assert_eq!(
        e.lookup_ban(&h, T0).unwrap().unwrap().target,
        cidr("172.16.5.0/24")
    );
    e.unban(&cidr("172.16.5.0/24"), T0).unwrap().unwrap();
    assert_eq!(
        e.lookup_ban(&h, T0).unwrap().unwrap().target,
        cidr("172.16.0.0/12")
    );
    let mut listed: Vec<Cidr> = e
        .list_bans(T0)
        .unwrap()
        .into_iter()
        .map(|r| r.target)
        .collect();
    listed.sort();
    assert_eq!(listed, vec![cidr("172.16.0.0/12")]);
}

#[test]
fn v4_everything_ban_spares_ipv6() {
    // Only with the minimum prefix lowered on purpose.
    let e = engine(Config {
        min_prefix_v4: 0,
        ..small()
    });
    let o = e.ban(cidr("0.0.0.0/0"), 0, Reason::Manual, T0).unwrap();
    assert!(matches!(o, BanOutcome::Created(_)), "{o:?}");
    assert_eq!(
        e.pike_check(&ip("8.8.8.8"), T0).unwrap(),
        PikeVerdict::Banned(Reason::Manual)
    );
    assert_eq!(
        e.pike_check(&ip("2001:db8::1"), T0).unwrap(),
        PikeVerdict::Allowed
    );
}

#[test]
fn list_bans_shows_active_bans_only() {
    let e = engine(small());
    e.ban(Cidr::host(ip("1.1.1.1")), 10, Reason::Manual, T0)
        .unwrap();
    e.ban(Cidr::host(ip("2.2.2.2")), 20, Reason::Auth, T0)
        .unwrap();
    e.ban(cidr("3.0.0.0/8"), 0, Reason::Manual, T0).unwrap();
    let mut got = e.list_bans(T0).unwrap();
    got.sort_by_key(|r| r.target);
    assert_eq!(
        got,
        vec![
            BanRecord {
                target: Cidr::host(ip("1.1.1.1")),
                ban: Ban {
                    reason: Reason::Manual,
                    created_us: T0,
                    expires_us: T0 + 10 * SEC,
                    hits: 0
                }
            },
            BanRecord {
                target: Cidr::host(ip("2.2.2.2")),
                ban: Ban {
                    reason: Reason::Auth,
                    created_us: T0,
                    expires_us: T0 + 20 * SEC,
                    hits: 0
                }
            },
            BanRecord {
                target: cidr("3.0.0.0/8"),
                ban: Ban {
                    reason: Reason::Manual,
                    created_us: T0,
                    expires_us: 0,
                    hits: 0
                }
            },
        ]
    );
    assert_eq!(e.list_bans(T0 + 10 * SEC).unwrap().len(), 2);
    assert_eq!(e.list_bans(T0 + 20 * SEC).unwrap().len(), 1);
}

// ============================================================== rate limits

#[test]
fn rl_key_validation() {
    assert_eq!(RlKey::new(b""), Err(KeyError::Empty));
    assert_eq!(
        RlKey::new(&[b'k'; 256]),
        Err(KeyError::TooLong { len: 256, max: 255 })
    );
    assert_eq!(
        RlKey::new(&[b'k'; 1000]),
        Err(KeyError::TooLong {
            len: 1000,
            max: 255
        })
    );
    let k = RlKey::new(&[b'k'; 255]).unwrap();
    assert_eq!(k.as_bytes(), &[b'k'; 255][..]);
    assert_eq!(RlKey::new(b"x").unwrap().as_bytes(), b"x");
    assert!(KeyError::TooLong { len: 256, max: 255 }
        .to_string()
        .contains("256"));
    assert!(KeyError::Empty.to_string().contains("empty"));
    // Keys differing only by trailing NULs are different keys.
    assert_ne!(RlKey::new(b"user").unwrap(), RlKey::new(b"user\0").unwrap());
    assert_eq!(RlKey::new(b"user").unwrap(), RlKey::new(b"user").unwrap());
}

#[test]
fn rl_limit_is_enforced_exactly() {
    let e = engine(small());
    let k = key("INVITE:alice@example.com");
    for i in 0..5 {
        assert!(e.rl_check(&k, 5, 10, T0).unwrap(), "request {}", i + 1);
    }
    for _ in 0..20 {
        assert!(!e.rl_check(&k, 5, 10, T0).unwrap());
    }
    assert_eq!(e.rl_available(&k, T0).unwrap(), Some(0));
    // Other keys have their own budget.
    let other = key("INVITE:bob@example.com");
    assert_eq!(e.rl_available(&other, T0).unwrap(), None, "unknown key");
    for _ in 0..5 {
        assert!(e.rl_check(&other, 5, 10, T0).unwrap());
    }
    assert!(!e.rl_check(&other, 5, 10, T0).unwrap());
    // The longest key works like any other.
    let long = RlKey::new(&[b'z'; 255]).unwrap();
    assert!(e.rl_check(&long, 1, 10, T0).unwrap());
    assert!(!e.rl_check(&long, 1, 10, T0).unwrap());

    let s = e.stats();
    assert_eq!(get(&s.rl_checked), 25 + 6 + 2);
    assert_eq!(get(&s.rl_rejected), 20 + 1 + 1);
}

#[test]
fn rl_refills_smoothly_and_rejections_do_not_consume() {
    let e = engine(small());
    let k = key("rl-smooth");
    // 5 per 10 s: one every 2 s.
    for _ in 0..5 {
        assert!(e.rl_check(&k, 5, 10, T0).unwrap());
    }
    // Hammer while refused, right up to the refill point.
    for i in 0..1000u64 {
        assert!(!e.rl_check(&k, 5, 10, T0 + i * 1999).unwrap());
    }
    assert!(!e.rl_check(&k, 5, 10, T0 + 2 * SEC - 1).unwrap());
    assert!(
        e.rl_check(&k, 5, 10, T0 + 2 * SEC).unwrap(),
        "refill not delayed by the refusals"
    );
    assert!(!e.rl_check(&k, 5, 10, T0 + 2 * SEC).unwrap());
    assert_eq!(e.rl_available(&k, T0 + 6 * SEC).unwrap(), Some(2));
    assert!(e.rl_check(&k, 5, 10, T0 + 6 * SEC).unwrap());
    assert!(e.rl_check(&k, 5, 10, T0 + 6 * SEC).unwrap());
    assert!(!e.rl_check(&k, 5, 10, T0 + 6 * SEC).unwrap());
    // Completely refilled after an idle period: the entry is reclaimable and
    // reported as unknown; the full limit is available again.
    assert_eq!(e.rl_available(&k, T0 + 16 * SEC).unwrap(), None);
    for _ in 0..5 {
        assert!(e.rl_check(&k, 5, 10, T0 + 16 * SEC).unwrap());
    }
    assert!(!e.rl_check(&k, 5, 10, T0 + 16 * SEC).unwrap());
}

#[test]
fn rl_limit_not_dividing_the_period() {
    let e = engine(small());
    let k = key("odd");
    let allowed = (0..5000)
        .filter(|_| e.rl_check(&k, 3000, 1, T0).unwrap())
        .count();
    assert_eq!(allowed, 3000);
    let k = key("odd2");
    let allowed = (0..100)
        .filter(|_| e.rl_check(&k, 7, 3, T0).unwrap())
        .count();
    assert_eq!(allowed, 7);
}

#[test]
fn rl_zero_limit_rejects_and_zero_period_means_one_second() {
    let e = engine(small());
    let k = key("zero");
    assert!(!e.rl_check(&k, 0, 10, T0).unwrap());
    assert_eq!(get(&e.stats().rl_rejected), 1);
    let k = key("p0");
    assert!(e.rl_check(&k, 1, 0, T0).unwrap());
    assert!(!e.rl_check(&k, 1, 0, T0 + SEC - 1).unwrap());
    assert!(e.rl_check(&k, 1, 0, T0 + SEC).unwrap());
}

// ================================================================== sweep

#[test]
fn sweep_returns_expired_bans_exactly_once() {
    let e = engine(small());
    let a = Cidr::host(ip("1.1.1.1"));
    let b = Cidr::host(ip("2.2.2.2"));
    let c = Cidr::host(ip("3.3.3.3"));
    let d = cidr("4.4.0.0/16");
    let o = e.ban(a, 10, Reason::Manual, T0).unwrap();
    assert!(matches!(o, BanOutcome::Created(_)), "{o:?}");
    let o = e.ban(b, 20, Reason::RateLimit, T0).unwrap();
    assert!(matches!(o, BanOutcome::Created(_)), "{o:?}");
    let o = e.ban(c, 0, Reason::Manual, T0).unwrap();
    assert!(matches!(o, BanOutcome::Created(_)), "{o:?}");
    let o = e.ban(d, 10, Reason::Manual, T0).unwrap();
    assert!(matches!(o, BanOutcome::Created(_)), "{o:?}");
    assert_eq!(e.bans_active(), 4);

    assert_eq!(e.sweep(T0 + 10 * SEC - 1).unwrap(), vec![]);
    assert_eq!(e.bans_active(), 4);

    let mut expired = e.sweep(T0 + 10 * SEC).unwrap();
    expired.sort_by_key(|r| r.target);
    assert_eq!(
        expired.iter().map(|r| r.target).collect::<Vec<_>>(),
        vec![a, d]
    );
    assert_eq!(expired[0].ban.expires_us, T0 + 10 * SEC);
    assert_eq!(e.bans_active(), 2);
    assert_eq!(e.sweep(T0 + 10 * SEC).unwrap(), vec![]);
    assert_eq!(e.sweep(T0 + 15 * SEC).unwrap(), vec![]);
    assert_eq!(e.bans_active(), 2);

    let expired = e.sweep(T0 + 100 * SEC).unwrap();
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].target, b);
    assert_eq!(expired[0].ban.reason, Reason::RateLimit);
    assert_eq!(e.bans_active(), 1);
    assert_eq!(e.sweep(T0 + 100 * SEC).unwrap(), vec![]);

    // The permanent one never expires; unbanning it ends it.
    assert_eq!(e.sweep(u64::MAX).unwrap(), vec![]);
    assert_eq!(e.bans_active(), 1);
    assert!(e.unban(&c, T0 + 100 * SEC).unwrap().is_some());
    assert_eq!(e.bans_active(), 0);
    assert_eq!(e.list_bans(T0).unwrap(), vec![]);
    assert_eq!(e.stats().bans_created_total(), 4);
    assert_eq!(get(&e.stats().bans_removed), 1);
}

#[test]
fn bans_active_tracks_created_unbanned_expired_and_rebanned() {
    let e = engine(small());
    let mut n = 0;
    for i in 0..20u8 {
        let t = Cidr::host(IpKey::from_bytes(&[192, 0, 2, i]).unwrap());
        let o = e.ban(t, 5 + i as u32 % 2 * 5, Reason::Manual, T0).unwrap();
        assert!(matches!(o, BanOutcome::Created(_)), "{o:?}");
        n += 1;
        assert_eq!(e.bans_active(), n);
    }
    // Lift 3 of them.
    for i in 0..3u8 {
        let t = Cidr::host(IpKey::from_bytes(&[192, 0, 2, i]).unwrap());
        assert!(e.unban(&t, T0).unwrap().is_some());
    }
    assert_eq!(e.bans_active(), 17);
    // The even ones (5 s) lapse; a re-ban of a lapsed, unswept entry counts
    // as a new ban and the lapsed one is accounted for.
    let t4 = Cidr::host(IpKey::from_bytes(&[192, 0, 2, 4]).unwrap());
    let o = e.ban(t4, 100, Reason::Manual, T0 + 5 * SEC).unwrap();
    assert!(matches!(o, BanOutcome::Created(_)), "{o:?}");
    assert_eq!(e.bans_active(), 17);
    // 8 even ones left in 3..20 other than 4 (6, 8, .., 18) expire at sweep.
    let expired = e.sweep(T0 + 5 * SEC).unwrap();
    assert_eq!(expired.len(), 7, "{expired:?}");
    assert!(expired.iter().all(|r| r.ban.expires_us == T0 + 5 * SEC));
    assert_eq!(e.bans_active(), 10);
    assert_eq!(e.list_bans(T0 + 5 * SEC).unwrap().len(), 10);
    let expired = e.sweep(T0 + 10 * SEC).unwrap();
    assert_eq!(expired.len(), 9); // odd ones 3..19
    assert_eq!(e.bans_active(), 1);
    assert_eq!(
        e.list_bans(T0 + 10 * SEC).unwrap(),
        vec![BanRecord {
            target: t4,
            ban: Ban {
                reason: Reason::Manual,
                created_us: T0 + 5 * SEC,
                expires_us: T0 + 105 * SEC,
                hits: 0
            }
        }]
    );
}

#[test]
fn sweep_reclaims_idle_sources_and_rl_keys() {
    let e = engine(small());
    let src = ip("192.0.2.1");
    e.pike_check(&src, T0).unwrap();
    e.auth_fail(&src, T0).unwrap();
    let k = key("sweep-me");
    assert!(e.rl_check(&k, 2, 10, T0).unwrap());
    let before_src = get(&e.source_counters().reclaimed);
    let before_rl = get(&e.rl_counters().reclaimed);
    // Source entries live max(pike, auth window) = 60 s; the rl entry until
    // its bucket is full again (5 s).
    e.sweep(T0 + 5 * SEC - 1).unwrap();
    assert_eq!(get(&e.rl_counters().reclaimed), before_rl);
    e.sweep(T0 + 5 * SEC).unwrap();
    assert_eq!(get(&e.rl_counters().reclaimed), before_rl + 1);
    assert_eq!(get(&e.source_counters().reclaimed), before_src);
    assert_eq!(e.auth_count(&src, T0 + 59 * SEC).unwrap(), 1);
    e.sweep(T0 + 60 * SEC).unwrap();
    assert_eq!(get(&e.source_counters().reclaimed), before_src + 1);
    assert_eq!(e.auth_count(&src, T0 + 60 * SEC).unwrap(), 0);
}

// ==================================================================== stats

#[test]
fn stats_move_by_exact_amounts() {
    let e = engine(small());
    let s = e.stats();
    let snapshot = |s: &Stats| {
        [
            get(&s.pike_checked),
            get(&s.pike_blocked),
            get(&s.rl_checked),
            get(&s.rl_rejected),
            get(&s.auth_failures),
            s.bans_created_total(),
            get(&s.bans_removed),
            get(&s.dropped_while_banned),
            get(&s.whitelisted),
            get(&s.errors),
        ]
    };
    assert_eq!(snapshot(s), [0; 10]);

    let src = ip("203.0.113.50");
    for i in 0..10u64 {
        e.pike_check(&src, T0 + i).unwrap();
    }
    assert_eq!(snapshot(s), [10, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    let o = e.pike_check(&src, T0 + 10).unwrap();
    assert!(matches!(o, PikeVerdict::JustBanned(_)), "{o:?}");
    assert_eq!(snapshot(s), [11, 1, 0, 0, 0, 1, 0, 0, 0, 0]);
    for i in 0..7u64 {
        e.pike_check(&src, T0 + 11 + i).unwrap();
    }
    assert_eq!(snapshot(s), [18, 8, 0, 0, 0, 1, 0, 7, 0, 0]);

    let k = key("stats");
    for _ in 0..3 {
        e.rl_check(&k, 2, 60, T0).unwrap();
    }
    assert_eq!(snapshot(s), [18, 8, 3, 1, 0, 1, 0, 7, 0, 0]);

    let bad = ip("203.0.113.51");
    for _ in 0..6 {
        e.auth_fail(&bad, T0).unwrap();
    }
    // 5th failure bans, 6th finds the ban.
    assert_eq!(snapshot(s), [18, 8, 3, 1, 6, 2, 0, 7, 0, 0]);
    assert_eq!(s.bans_created_for(Reason::Auth), 1);
    assert_eq!(s.bans_created_for(Reason::Pike), 1);
    assert_eq!(s.bans_created_for(Reason::Manual), 0);

    e.whitelist().add(cidr("198.18.0.0/15")).unwrap();
    e.pike_check(&ip("198.19.1.1"), T0).unwrap();
    e.auth_fail(&ip("198.19.1.1"), T0).unwrap();
    // auth_fail on a whitelisted source counts the failure, not `whitelisted`.
    assert_eq!(snapshot(s), [19, 8, 3, 1, 7, 2, 0, 7, 1, 0]);

    e.ban(Cidr::host(ip("192.0.2.1")), 0, Reason::Manual, T0)
        .unwrap();
    e.unban(&Cidr::host(ip("192.0.2.1")), T0).unwrap();
    e.unban(&Cidr::host(ip("192.0.2.1")), T0).unwrap();
    assert_eq!(snapshot(s), [19, 8, 3, 1, 7, 3, 1, 7, 1, 0]);
    assert_eq!(s.bans_created_for(Reason::Manual), 1);
}

// =================================================================== config

#[test]
fn default_config_is_valid() {
    assert_eq!(Config::default().validate(), Ok(()));
    assert_eq!(small().validate(), Ok(()));
}

fn invalid(f: impl FnOnce(&mut Config)) -> rsec::engine::ConfigError {
    let mut c = small();
    f(&mut c);
    let err = c.validate().expect_err("should be refused");
    // Engine::new refuses it the same way, before mapping anything.
    match Engine::new(c) {
        Err(EngineError::Config(e)) => assert_eq!(e, err),
        Err(other) => panic!("expected a config error, got {other}"),
        Ok(_) => panic!("Engine::new accepted an invalid config"),
    }
    err
}

#[test]
fn config_errors_name_the_parameter() {
    type Case = (&'static str, i64, Box<dyn FnOnce(&mut Config)>);
    let cases: Vec<Case> = vec![
        ("pike_density", 0, Box::new(|c| c.pike_density = 0)),
        (
            "pike_sampling_time",
            0,
            Box::new(|c| c.pike_sampling_time_s = 0),
        ),
        ("pike_ban_time", 0, Box::new(|c| c.pike_ban_time_s = 0)),
        (
            "auth_fail_threshold",
            0,
            Box::new(|c| c.auth_fail_threshold = 0),
        ),
        (
            "auth_fail_window",
            0,
            Box::new(|c| c.auth_fail_window_s = 0),
        ),
        ("auth_ban_time", 0, Box::new(|c| c.auth_ban_time_s = 0)),
        ("max_bans", 1, Box::new(|c| c.max_bans = 1)),
        ("max_bans", 15, Box::new(|c| c.max_bans = 15)),
        ("max_bans", 0, Box::new(|c| c.max_bans = 0)),
        ("max_tracked_ips", 0, Box::new(|c| c.max_tracked_ips = 0)),
        (
            "max_tracked_ips",
            (1 << 24) + 1,
            Box::new(|c| c.max_tracked_ips = (1 << 24) + 1),
        ),
        ("max_rl_keys", 8, Box::new(|c| c.max_rl_keys = 8)),
        (
            "max_rl_keys",
            u32::MAX as i64,
            Box::new(|c| c.max_rl_keys = u32::MAX),
        ),
        ("lock_stripes", 0, Box::new(|c| c.lock_stripes = 0)),
        ("lock_stripes", 4097, Box::new(|c| c.lock_stripes = 4097)),
    ];
    for (param, value, f) in cases {
        let e = invalid(f);
        assert_eq!(e.param, param);
        assert_eq!(e.value, value, "{param}");
        let msg = e.to_string();
        assert!(msg.contains(&format!("'{param}'")), "{msg}");
        assert!(msg.contains(&value.to_string()), "{msg}");
    }
}

#[test]
fn config_bounds_are_inclusive() {
    for f in [
        (|c: &mut Config| c.max_bans = 16) as fn(&mut Config),
        |c| c.max_tracked_ips = 16,
        |c| c.max_rl_keys = 16,
        |c| c.lock_stripes = 1,
        |c| c.lock_stripes = 4096,
        |c| c.pike_density = 1,
        |c| c.auth_fail_threshold = 1,
    ] {
        let mut c = small();
        f(&mut c);
        assert_eq!(c.validate(), Ok(()), "{c:?}");
        engine(c);
    }
    let mut c = small();
    c.max_rl_keys = Config::MAX_ENTRIES;
    assert_eq!(c.validate(), Ok(()));
}

#[test]
fn minimal_tables_with_many_stripes_can_be_created() {
    // Every size at its minimum with the default stripe count: each stripe
    // still gets a full probe window of slots, and the mapping must be sized
    // for that, not for the nominal capacity.
    let mut c = small();
    c.max_bans = 16;
    c.max_tracked_ips = 16;
    c.max_rl_keys = 16;
    c.lock_stripes = 64;
    let e = engine(c.clone());
    let o = e
        .ban(Cidr::host(ip("192.0.2.1")), 0, Reason::Manual, T0)
        .unwrap();
    assert!(matches!(o, BanOutcome::Created(_)), "{o:?}");
    c.lock_stripes = 4096;
    let e = engine(c);
    assert_eq!(
        e.pike_check(&ip("192.0.2.1"), T0).unwrap(),
        PikeVerdict::Allowed
    );
}

#[test]
fn too_many_whitelist_entries_is_a_config_error() {
    let mut c = small();
    c.max_whitelist = 512;
    c.whitelist = (0..513u32)
        .map(|i| Cidr::host(IpKey::from_bytes(&(0x0a00_0000 + i).to_be_bytes()).unwrap()))
        .collect();
    match Engine::new(c.clone()) {
        Err(EngineError::Config(e)) => {
            assert_eq!(e.param, "whitelist");
            assert_eq!(e.value, 513);
            assert!(
                e.to_string()
                    .ends_with("too many entries (at most 512: modparam max_whitelist)"),
                "{e}"
            );
        }
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("accepted 513 whitelist entries"),
    }
    // A prefix listed twice takes one entry.
    c.whitelist.truncate(512);
    c.whitelist.push(c.whitelist[0]);
    let e = engine(c);
    assert!(e.is_whitelisted(&ip("10.0.1.255")));
    assert!(!e.is_whitelisted(&ip("10.0.2.0")));
}

#[test]
fn config_is_kept() {
    let mut c = small();
    c.whitelist = vec![cidr("192.0.2.0/24")];
    let e = engine(c.clone());
    assert_eq!(e.config(), &c);
    assert!(e.shm_bytes() > 0);
}

#[test]
fn every_ban_operation_returns_the_record_it_made() {
    // The /24 is banned while its network address is banned as a host: the
    // record returned (and so announced and persisted) is the /24's, not the
    // more specific host ban a lookup of 10.0.0.0 finds first.
    let e = engine(small());
    let host = Cidr::host(ip("10.0.0.0"));
    let net = cidr("10.0.0.0/24");
    let o = e.ban(host, 30, Reason::Manual, T0).unwrap();
    assert_eq!(
        o,
        BanOutcome::Created(BanRecord {
            target: host,
            ban: Ban {
                reason: Reason::Manual,
                created_us: T0,
                expires_us: T0 + 30 * SEC,
                hits: 0
            }
        })
    );
    let o = e.ban(net, 60, Reason::RateLimit, T0 + SEC).unwrap();
    let made = BanRecord {
        target: net,
        ban: Ban {
            reason: Reason::RateLimit,
            created_us: T0 + SEC,
            expires_us: T0 + 61 * SEC,
            hits: 0,
        },
    };
    assert_eq!(o, BanOutcome::Created(made));
    assert_eq!(
        e.lookup_ban(&ip("10.0.0.0"), T0 + SEC)
            .unwrap()
            .unwrap()
            .target,
        host,
        "the lookup finds the host ban"
    );

    // Replacing a manual ban returns the new expiry; an automatic rule
    // meeting a ban returns the one left in force.
    let o = e.ban(net, 0, Reason::Manual, T0 + 2 * SEC).unwrap();
    assert!(
        matches!(o, BanOutcome::Updated(r) if r.target == net && r.ban.is_permanent() && r.ban.reason == Reason::Manual),
        "{o:?}"
    );
    let o = e.ban(net, 5, Reason::Pike, T0 + 3 * SEC).unwrap();
    assert!(
        matches!(o, BanOutcome::AlreadyBanned(r) if r.target == net && r.ban.is_permanent()),
        "{o:?}"
    );

    // Unban returns what it removed, with its target.
    let lifted = e.unban(&net, T0 + 4 * SEC).unwrap().unwrap();
    assert_eq!((lifted.target, lifted.ban.reason), (net, Reason::Manual));
    assert_eq!(
        e.unban(&host, T0 + 4 * SEC).unwrap().map(|r| r.target),
        Some(host)
    );

    // The checks return the ban they made.
    let src = ip("192.0.2.9");
    let mut made = None;
    for i in 0..=10u64 {
        if let PikeVerdict::JustBanned(r) = e.pike_check(&src, T0 + 10 * SEC + i).unwrap() {
            made = Some(r);
        }
    }
    let r = made.expect("the 11th request bans");
    assert_eq!(
        (r.target, r.ban.reason, r.ban.expires_us - r.ban.created_us),
        (Cidr::host(src), Reason::Pike, 60 * SEC)
    );
    assert_eq!(
        e.lookup_ban(&src, T0 + 11 * SEC).unwrap(),
        Some(BanRecord {
            target: r.target,
            ban: Ban { hits: 0, ..r.ban }
        })
    );
}
