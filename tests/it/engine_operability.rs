//! Engine operations behind the MI commands and events: every expiry is
//! reported exactly once (by the sweep or by the process that reclaimed the
//! slot), flush, per-source info, rate-limit listing and top talkers.

use rsec::engine::{BanOutcome, Cidr, Config, Engine, IpKey, PikeVerdict, Reason, RlKey};

const S: u64 = 1_000_000;
const T0: u64 = 1_700_000_000 * S;

fn ip(s: &str) -> IpKey {
    IpKey::parse(s).unwrap()
}

fn engine(cfg: Config) -> Engine {
    Engine::new(cfg).unwrap()
}

#[test]
fn every_expiry_reported_once_sweep_or_reclaim() {
    // One stripe of 16 slots: a new ban is likely to land on a lapsed one.
    let e = engine(Config {
        max_bans: 16,
        lock_stripes: 1,
        ..Config::default()
    });
    for i in 0..16 {
        let c = Cidr::host(ip(&format!("192.0.2.{i}")));
        let o = e.ban(c, 10, Reason::Manual, T0).unwrap();
        assert!(matches!(o, BanOutcome::Created(_)), "{o:?}");
    }
    // All 16 lapse at T0+10s. Re-ban 8 of them (same keys) and 8 new ones
    // before any sweep: each reclaims a lapsed slot and must report it.
    let later = T0 + 11 * S;
    for i in 0..8 {
        e.ban(
            Cidr::host(ip(&format!("192.0.2.{i}"))),
            10,
            Reason::Manual,
            later,
        )
        .unwrap();
        e.ban(
            Cidr::host(ip(&format!("198.51.100.{i}"))),
            10,
            Reason::Manual,
            later,
        )
        .unwrap();
    }
    let reclaimed = e.drain_lapsed();
    assert!(e.drain_lapsed().is_empty(), "draining empties the list");
    let swept = e.sweep(later).unwrap();
    let mut reported: Vec<String> = reclaimed
        .iter()
        .chain(swept.iter())
        .map(|r| r.target.to_string())
        .collect();
    reported.sort();
    let mut expected: Vec<String> = (0..16).map(|i| format!("192.0.2.{i}")).collect();
    expected.sort();
    assert_eq!(
        reported, expected,
        "each of the 16 lapsed bans reported exactly once"
    );
    assert_eq!(e.list_bans(later).unwrap().len(), 16);
    assert_eq!(e.bans_active(), 16);
}

#[test]
fn unban_of_a_lapsed_ban_reports_expiry_not_removal() {
    let e = engine(Config::default());
    let c = Cidr::host(ip("203.0.113.9"));
    e.ban(c, 5, Reason::Manual, T0).unwrap();
    assert_eq!(
        e.unban(&c, T0 + 6 * S).unwrap(),
        None,
        "nothing active to unban"
    );
    let lapsed = e.drain_lapsed();
    assert_eq!(lapsed.len(), 1);
    assert_eq!(lapsed[0].target, c);
    assert_eq!(e.stats().bans_removed.get(), 0);
}

#[test]
fn flush_removes_every_active_ban_and_counts_them() {
    let e = engine(Config::default());
    for i in 0..5 {
        e.ban(
            Cidr::host(ip(&format!("10.1.0.{i}"))),
            0,
            Reason::Manual,
            T0,
        )
        .unwrap();
    }
    e.ban(Cidr::parse("2001:db8::/48").unwrap(), 60, Reason::Auth, T0)
        .unwrap();
    e.ban(Cidr::host(ip("10.2.0.1")), 1, Reason::Pike, T0)
        .unwrap(); // lapses before the flush
    let removed = e.flush_bans(T0 + 2 * S).unwrap();
    assert_eq!(removed.len(), 6);
    assert_eq!(
        e.drain_lapsed().len(),
        1,
        "the lapsed one is an expiry, not a flush"
    );
    assert!(e.list_bans(T0 + 2 * S).unwrap().is_empty());
    assert_eq!(e.bans_active(), 0);
    assert_eq!(
        e.pike_check(&ip("10.1.0.3"), T0 + 3 * S).unwrap(),
        PikeVerdict::Allowed
    );
}

#[test]
fn source_info_reports_counters_ban_and_whitelist() {
    let e = engine(Config {
        pike_density: 100,
        whitelist: vec![Cidr::parse("192.168.0.0/16").unwrap()],
        ..Config::default()
    });
    let a = ip("198.51.100.7");
    for k in 0..7 {
        e.pike_check(&a, T0 + k).unwrap();
    }
    e.auth_fail(&a, T0 + 10).unwrap();
    e.auth_fail(&a, T0 + 11).unwrap();
    let info = e.source_info(&a, T0 + 20).unwrap();
    assert_eq!((info.pike_requests, info.auth_failures), (7, 2));
    // Last seen to the sub-interval of the request window (2 s / 8): the
    // slot keeps no timestamp of its own.
    let tick = 2 * S / 8;
    assert_eq!(info.last_seen_us, Some((T0 + 11) / tick * tick));
    assert!(info.ban.is_none() && !info.whitelisted);

    e.ban(
        Cidr::parse("198.51.100.0/24").unwrap(),
        60,
        Reason::Manual,
        T0 + 30,
    )
    .unwrap();
    let info = e.source_info(&a, T0 + 40).unwrap();
    assert_eq!(
        info.ban.map(|b| b.target.to_string()),
        Some("198.51.100.0/24".to_owned())
    );

    let unknown = e.source_info(&ip("192.168.3.4"), T0).unwrap();
    assert!(unknown.whitelisted);
    assert_eq!(
        (
            unknown.pike_requests,
            unknown.auth_failures,
            unknown.last_seen_us
        ),
        (0, 0, None)
    );
}

#[test]
fn rl_list_shows_use_per_key() {
    let e = engine(Config::default());
    let a = RlKey::new(b"reg:10.0.0.1").unwrap();
    let b = RlKey::new(b"inv:alice").unwrap();
    for _ in 0..3 {
        assert!(e.rl_check(&a, 10, 60, T0).unwrap());
    }
    assert!(e.rl_check(&b, 2, 1, T0).unwrap());
    let mut all = e.rl_list(None, T0).unwrap();
    all.sort_by(|x, y| x.key.cmp(&y.key));
    assert_eq!(all.len(), 2);
    assert_eq!(
        (
            all[0].key.as_slice(),
            all[0].limit,
            all[0].period_s,
            all[0].available
        ),
        (&b"inv:alice"[..], 2, 1, 1)
    );
    assert_eq!(
        (
            all[1].key.as_slice(),
            all[1].limit,
            all[1].period_s,
            all[1].available
        ),
        (&b"reg:10.0.0.1"[..], 10, 60, 7)
    );
    let one = e.rl_list(Some(&a), T0).unwrap();
    assert_eq!(one.len(), 1);
    assert!(e
        .rl_list(Some(&RlKey::new(b"nope").unwrap()), T0)
        .unwrap()
        .is_empty());
}

#[test]
fn top_sources_ranks_by_current_rate() {
    let e = engine(Config {
        pike_density: 1000,
        ..Config::default()
    });
    for (n, who) in [
        (5, "10.0.0.5"),
        (50, "10.0.0.50"),
        (20, "2001:db8::20"),
        (1, "10.0.0.1"),
    ] {
        for k in 0..n {
            e.pike_check(&ip(who), T0 + k).unwrap();
        }
    }
    let top = e.top_sources(3, T0 + 100).unwrap();
    let got: Vec<(String, u32)> = top.iter().map(|(i, c)| (i.to_string(), *c)).collect();
    assert_eq!(
        got,
        vec![
            ("10.0.0.50".into(), 50),
            // IPv6 sources are tracked per /64 (ipv6_track_prefix).
            ("2001:db8::/64".into(), 20),
            ("10.0.0.5".into(), 5)
        ]
    );
    // Outside the window nobody is talking.
    assert!(e.top_sources(3, T0 + 10 * S).unwrap().is_empty());
}

#[test]
fn restore_ban_is_idempotent_at_stored_precision() {
    let e = engine(Config::default());
    let c = Cidr::host(ip("192.0.2.99"));
    let now = T0 + 123_456; // sub-second part, lost when stored
    let o = e.ban(c, 120, Reason::Pike, now).unwrap();
    assert!(matches!(o, BanOutcome::Created(_)), "{o:?}");
    let stored_expires = (now + 120 * S) / S * S;
    let again = e
        .restore_ban(c, Reason::Pike, now / S * S, stored_expires, None, now + 10)
        .unwrap();
    let o = again;
    assert!(
        matches!(o, Some(BanOutcome::AlreadyBanned(r)) if r.ban.reason == Reason::Pike),
        "reading our own ban back changes nothing: {o:?}"
    );
    let longer = e
        .restore_ban(
            c,
            Reason::Manual,
            now / S * S,
            stored_expires + 600 * S,
            None,
            now + 10,
        )
        .unwrap();
    let o = longer;
    assert!(matches!(o, Some(BanOutcome::Updated(_))), "{o:?}");
    assert_eq!(
        e.restore_ban(
            Cidr::host(ip("192.0.2.100")),
            Reason::Auth,
            T0,
            T0 + S,
            None,
            T0 + 2 * S
        )
        .unwrap(),
        None,
        "lapsed: ignored"
    );
}

#[test]
fn unban_forgets_the_source_counts() {
    let e = engine(Config {
        pike_density: 5,
        auth_fail_threshold: 3,
        ..Config::default()
    });
    let a = ip("198.51.100.77");
    for k in 0..5 {
        assert_eq!(e.pike_check(&a, T0 + k).unwrap(), PikeVerdict::Allowed);
    }
    e.auth_fail(&a, T0 + 5).unwrap();
    let o = e.pike_check(&a, T0 + 6).unwrap();
    assert!(matches!(o, PikeVerdict::JustBanned(_)), "{o:?}");
    assert!(e.unban(&Cidr::host(a), T0 + 7).unwrap().is_some());
    let info = e.source_info(&a, T0 + 8).unwrap();
    assert_eq!((info.pike_requests, info.auth_failures), (0, 0));
    // Within the same window, the unbanned source starts afresh.
    for k in 0..5 {
        assert_eq!(
            e.pike_check(&a, T0 + 10 + k).unwrap(),
            PikeVerdict::Allowed,
            "request {k} after unban"
        );
    }
}

fn v4(n: u32) -> IpKey {
    IpKey::from_ip(std::net::Ipv4Addr::from(n).into())
}

/// Walks every page of `bans_page` from cursor 0 with `limit`; the pages'
/// targets, and checks each cursor is what an MI number can carry.
fn all_pages(
    e: &Engine,
    limit: usize,
    now: u64,
    keep: impl Fn(&rsec::engine::BanRecord) -> bool,
) -> Vec<Vec<Cidr>> {
    let mut pages = Vec::new();
    let mut cursor = 0;
    loop {
        let (page, next) = e.bans_page(cursor, limit, now, &keep).unwrap();
        assert!(
            page.len() <= limit,
            "a page of {} for limit {limit}",
            page.len()
        );
        pages.push(page.iter().map(|r| r.target).collect());
        match next {
            None => return pages,
            Some(n) => {
                assert!(n > cursor, "cursor went from {cursor} to {n}");
                assert!(n <= i32::MAX as u64, "cursor {n} does not fit an MI number");
                cursor = n;
            }
        }
        assert!(pages.len() <= 10_000, "paging does not end");
    }
}

#[test]
fn bans_page_lists_every_active_ban_exactly_once() {
    let e = engine(Config {
        // Room to spare: a bucket full of bans refuses one more.
        max_bans: 8192,
        lock_stripes: 64,
        ..Config::default()
    });
    // 2,500 active bans and 100 that lapse before the listing.
    for i in 0..2600u32 {
        let c = Cidr::host(v4(0x0a00_0000 + i));
        let secs = if i < 100 { 5 } else { 3600 };
        let o = e.ban(c, secs, Reason::Manual, T0).unwrap();
        assert!(matches!(o, BanOutcome::Created(_)), "{o:?}");
    }
    let now = T0 + 10 * S;
    let mut expected: Vec<Cidr> = e.list_bans(now).unwrap().iter().map(|r| r.target).collect();
    expected.sort();
    assert_eq!(expected.len(), 2500);

    // limit 1 and 7 stop in the middle of buckets; 1000 is the MI's 3 pages.
    for limit in [1, 7, 1000, 2500, 10_000] {
        let pages = all_pages(&e, limit, now, |_| true);
        let mut got: Vec<Cidr> = pages.iter().flatten().copied().collect();
        got.sort();
        let n = got.len();
        got.dedup();
        assert_eq!(n, got.len(), "limit {limit}: a ban listed twice");
        assert_eq!(got, expected, "limit {limit}: not every ban listed");
        if limit == 1000 {
            let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
            assert_eq!(sizes, vec![1000, 1000, 500], "limit 1000");
        }
        if limit >= 2500 {
            assert_eq!(pages.len(), 1, "limit {limit}: one page holds them all");
        }
    }

    // A cursor past the end of the table is an empty last page.
    assert_eq!(
        e.bans_page(1 << 30, 10, now, |_| true).unwrap(),
        (vec![], None)
    );
}

#[test]
fn bans_page_counts_the_limit_in_matches_only() {
    let e = engine(Config {
        max_bans: 1024,
        lock_stripes: 16,
        ..Config::default()
    });
    for i in 0..300u32 {
        let c = Cidr::host(v4(0xc000_0200 + i));
        e.ban(c, 3600, Reason::Pike, T0).unwrap();
    }
    for i in 0..30u32 {
        let c = Cidr::parse(&format!("11.0.{i}.0/24")).unwrap();
        e.ban(c, 3600, Reason::Manual, T0).unwrap();
    }
    let prefixes = |r: &rsec::engine::BanRecord| !r.target.is_host();
    let pages = all_pages(&e, 10, T0, prefixes);
    let got: Vec<Cidr> = pages.iter().flatten().copied().collect();
    assert_eq!(got.len(), 30, "{got:?}");
    assert!(
        got.iter().all(|c| c.to_string().ends_with(".0/24")),
        "{got:?}"
    );
    // Full pages of matches, however many hosts lie between them.
    assert!(
        pages.len() >= 3 && pages[..3].iter().all(|p| p.len() == 10),
        "{pages:?}"
    );
}
