//! Fixed capacity: the tables never grow, live entries are evicted least
//! recently seen first, active bans are never evicted, and a spoofed flood
//! cannot push memory or a real attacker out (src/engine/table.rs).

use std::collections::HashSet;

use ahash::RandomState;
use rsec::engine::source::{HostState, HostTiming};
use rsec::engine::stats::{Counter, Stats};
use rsec::engine::table::{Entry, Found, Retention, Table, TableError};
use rsec::engine::{AuthVerdict, BanOutcome, Cidr, Config, Engine, IpKey, PikeVerdict, Reason};
use rsec::shm::Region;

const T0: u64 = 1_800_000_000_000_000;
const SEC: u64 = 1_000_000;

fn get(c: &Counter) -> u64 {
    Stats::get(c)
}

fn v4(n: u32) -> IpKey {
    IpKey::from_bytes(&n.to_be_bytes()).unwrap()
}

fn config(max_tracked_ips: u32, max_bans: u32, lock_stripes: u32) -> Config {
    Config {
        pike_sampling_time_s: 2,
        pike_density: 10,
        pike_ban_time_s: 60,
        ban_time_s: 3600,
        auth_fail_threshold: 3,
        auth_fail_window_s: 60,
        auth_ban_time_s: 900,
        max_tracked_ips,
        max_rl_keys: 64,
        max_bans,
        max_whitelist: 1024,
        lock_stripes,
        db_queue_size: 0,
        db_sync_interval_s: 5,
        db_timeout_s: 3,
        min_prefix_v4: 8,
        min_prefix_v6: 32,
        whitelist: Vec::new(),
        ..Config::default()
    }
}

/// xorshift64*: reproducible pseudo-random addresses.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Windows of the raw host tables below: 2 s for requests (250 ms
/// sub-intervals), 60 s for auth failures; entries are kept 60 s.
const TIMING: HostTiming = HostTiming {
    pike_window_us: 2 * SEC,
    auth_window_us: 60 * SEC,
};
/// One sub-interval of the request window: the resolution of "last seen".
const TICK: u64 = 2 * SEC / 8;

fn source_table(capacity: usize) -> (Region, Table<IpKey, HostState>) {
    let mut region = Region::new(Table::<IpKey, HostState>::shm_bytes(capacity)).unwrap();
    let t = Table::new(
        &mut region,
        capacity,
        RandomState::with_seeds(1, 2, 3, 4),
        TIMING,
    )
    .unwrap();
    (region, t)
}

fn touch(t: &Table<IpKey, HostState>, ip: &IpKey, now: u64) -> Found {
    t.upsert(ip, now, |s, found| {
        if let HostState::Watched(w) = s {
            w.requests.add(now, TIMING.pike_window_us, 1);
        }
        found
    })
    .unwrap()
}

// ================================================================ raw table

#[test]
fn table_capacity_is_exactly_what_was_asked() {
    // Capacity is never rounded up: a modparam of 100 holds 100, not 112,
    // although the buckets have 16 slots each.
    for capacity in [16, 17, 64, 100, 1000, 1001] {
        let (region, t) = source_table(capacity);
        assert_eq!(t.capacity(), capacity);
        assert_eq!(t.bucket_count(), capacity.div_ceil(16), "{capacity}");
        assert!(region.used() <= region.len());
        // Flooded with twenty times as many keys, it holds exactly that many.
        for i in 0..20 * capacity as u32 {
            touch(&t, &v4(0x0a00_0000 + i), T0);
        }
        assert_eq!(t.len(T0).unwrap(), capacity, "{capacity}");
    }
}

#[test]
fn a_tracked_source_costs_at_most_64_bytes() {
    // Its slot (16-byte key, 40-byte state) and its share of the bucket's
    // lock and tags.
    assert!(
        Engine::bytes_per_source() <= 64,
        "{} bytes per source",
        Engine::bytes_per_source()
    );
    let (region, _t) = source_table(1 << 16);
    assert!(region.used() <= (1 << 16) * 64 + 4096, "{}", region.used());
}

#[test]
fn a_host_ban_is_kept_to_the_microsecond_in_its_20_bytes() {
    use rsec::engine::source::HostBan;
    use rsec::engine::Ban;
    assert_eq!(std::mem::size_of::<HostBan>(), 20);
    for reason in Reason::ALL {
        for (created_us, expires_us, hits) in [
            (T0 + 10, T0 + 60 * SEC + 10, 0),
            (T0 + 999_999, 0, 7),
            (1, u64::MAX, u64::MAX),
            ((u32::MAX as u64) * SEC + 999_999, T0, 1 << 31),
        ] {
            let b = Ban {
                reason,
                created_us,
                expires_us,
                hits,
            };
            let kept = HostBan::new(&b).get();
            assert_eq!(
                kept,
                Ban {
                    hits: hits.min(u32::MAX as u64),
                    ..b
                }
            );
        }
    }
}

#[test]
fn table_flood_stays_bounded() {
    let (region, t) = source_table(64);
    let used = region.used();
    assert_eq!(t.capacity(), 64);
    let mut created = 0;
    for i in 0..10_000u32 {
        if touch(&t, &v4(0x0a00_0000 + i), T0 + i as u64) == Found::Created {
            created += 1;
        }
    }
    assert_eq!(created, 10_000);
    let now = T0 + 10_000;
    assert_eq!(t.len(now).unwrap(), 64);
    let c = t.counters();
    // A bucket fills up before its first eviction, then every insert
    // evicts exactly one.
    assert_eq!(get(&c.evictions), 10_000 - 64);
    assert_eq!(get(&c.full), 0);
    assert_eq!(get(&c.reclaimed), 0);
    assert_eq!(region.used(), used, "nothing allocated after start-up");
    let found = (0..10_000u32)
        .filter(|i| t.get(&v4(0x0a00_0000 + i), now, |_| ()).unwrap().is_some())
        .count();
    assert_eq!(found, 64);
    // The newest source always survives.
    assert!(t
        .get(&v4(0x0a00_0000 + 9_999), now, |_| ())
        .unwrap()
        .is_some());
}

#[test]
fn table_evicts_least_recently_seen_first() {
    let (_region, t) = source_table(16);
    for i in 0..16u32 {
        assert_eq!(touch(&t, &v4(i), T0 + i as u64 * TICK), Found::Created);
    }
    // Seen again: now the most recent.
    assert_eq!(touch(&t, &v4(0), T0 + 100 * TICK), Found::Existing);
    assert_eq!(touch(&t, &v4(100), T0 + 101 * TICK), Found::Created);
    assert_eq!(get(&t.counters().evictions), 1);
    let present = |i: u32| t.get(&v4(i), T0 + 102 * TICK, |_| ()).unwrap().is_some();
    assert!(present(0));
    assert!(!present(1), "the least recently seen went");
    assert!((2..16).all(present));
    assert!(present(100));

    // A flood of 1000, one per sub-interval, keeps exactly the 16 newest.
    for i in 0..1000u32 {
        touch(&t, &v4(1000 + i), T0 + (200 + i as u64) * TICK);
    }
    let now = T0 + 1200 * TICK;
    let kept: Vec<u32> = (0..3000u32)
        .filter(|&i| t.get(&v4(i), now, |_| ()).unwrap().is_some())
        .collect();
    assert_eq!(kept, (1984..2000).collect::<Vec<_>>());
}

#[test]
fn a_spoofed_flood_does_not_push_out_a_source_being_counted() {
    // All seen within the same sub-interval: the one with the most
    // requests is the last to go.
    let (_region, t) = source_table(16);
    let attacker = v4(0x0808_0808);
    for _ in 0..5 {
        touch(&t, &attacker, T0);
    }
    for i in 0..10_000u32 {
        touch(&t, &v4(0x0a00_0000 + i), T0 + i as u64);
    }
    let n = t
        .get(&attacker, T0 + 10_000, |s| match s {
            HostState::Watched(w) => w.requests.total(T0 + 10_000, TIMING.pike_window_us),
            HostState::Banned(_) => 0,
        })
        .unwrap();
    assert_eq!(n, Some(5));
}

#[test]
fn table_reuses_lapsed_entries_before_evicting() {
    let (_region, t) = source_table(16);
    for i in 0..16u32 {
        touch(&t, &v4(i), T0);
    }
    // Entries are kept 60 s: at T0 + 60 s every entry has lapsed.
    let later = T0 + 60 * SEC;
    assert_eq!(t.len(later - 1).unwrap(), 16);
    assert_eq!(t.len(later).unwrap(), 0);
    for i in 0..16u32 {
        assert_eq!(touch(&t, &v4(100 + i), later), Found::Created);
    }
    assert_eq!(get(&t.counters().evictions), 0);
    assert_eq!(get(&t.counters().reclaimed), 16);
    // A lapsed entry for the same key comes back fresh.
    assert_eq!(touch(&t, &v4(100), later + 60 * SEC), Found::Created);
    let n = t
        .get(&v4(100), later + 60 * SEC, |s| match s {
            HostState::Watched(w) => w.requests.total(later + 60 * SEC, 2 * SEC),
            HostState::Banned(_) => 0,
        })
        .unwrap();
    assert_eq!(n, Some(1));
}

/// A value that is pinned or evictable as the test says.
#[derive(Clone, Copy, Default, Debug, PartialEq)]
struct Pin {
    pinned: bool,
    stamp: u64,
}

rsec::shm_safe!(Pin);

impl Entry for Pin {
    type Ctx = ();
    type Clock = ();

    fn clock(_now: u64, _: &()) {}

    fn retention(&self, _: &()) -> Retention {
        if self.stamp == 0 {
            Retention::Free
        } else if self.pinned {
            Retention::Pinned
        } else {
            Retention::Evictable(self.stamp)
        }
    }
}

#[test]
fn table_never_evicts_pinned_entries() {
    let mut region = Region::new(Table::<u64, Pin>::shm_bytes(16)).unwrap();
    let t: Table<u64, Pin> =
        Table::new(&mut region, 16, RandomState::with_seeds(5, 6, 7, 8), ()).unwrap();
    let put = |k: u64, pinned: bool, stamp: u64| {
        t.upsert(&k, T0, |v, _| {
            *v = Pin { pinned, stamp };
        })
    };
    // Odd keys pinned, even keys evictable.
    for k in 0..16u64 {
        put(k, k % 2 == 1, 1 + k).unwrap();
    }
    // 100 newcomers: each replaces the oldest evictable entry; pinned stay.
    for k in 100..200u64 {
        put(k, false, k).unwrap();
    }
    for k in (1..16u64).step_by(2) {
        assert_eq!(
            t.get(&k, T0, |v| *v).unwrap(),
            Some(Pin {
                pinned: true,
                stamp: 1 + k
            }),
            "pinned {k}"
        );
    }
    assert_eq!(get(&t.counters().evictions), 100);
    // Pin the 8 evictable survivors too: now nothing can be replaced.
    for k in 192..200u64 {
        put(k, true, k).unwrap();
    }
    assert!(matches!(put(1000, false, 1000), Err(TableError::Full)));
    assert!(matches!(put(1001, true, 1001), Err(TableError::Full)));
    assert_eq!(get(&t.counters().full), 2);
    assert_eq!(get(&t.counters().evictions), 100);
    // Removing one makes room for exactly one.
    assert_eq!(
        t.remove(&1, T0).unwrap(),
        Some(Pin {
            pinned: true,
            stamp: 2
        })
    );
    put(1000, true, 1000).unwrap();
    assert!(matches!(put(1001, true, 1001), Err(TableError::Full)));
    assert_eq!(t.len(T0).unwrap(), 16);
}

// ================================================================== engine

#[test]
fn engine_source_flood_stays_bounded_and_counts_evictions() {
    let e = Engine::new(config(64, 16, 4)).unwrap();
    // The hosts table has room for max_bans host bans beside the sources;
    // with no ban in force, sources use all of it.
    let hosts = 64 + 16;
    assert_eq!(e.layout()[0].1, hosts);
    let bytes = e.shm_bytes();
    for i in 0..10_000u32 {
        assert_eq!(
            e.pike_check(&v4(0x0a00_0000 + i), T0 + i as u64).unwrap(),
            PikeVerdict::Allowed
        );
    }
    let now = T0 + 10_000;
    assert_eq!(e.shm_bytes(), bytes);
    assert_eq!(get(&e.source_counters().evictions), 10_000 - hosts as u64);
    let tracked = (0..10_000u32)
        .filter(|i| e.pike_count(&v4(0x0a00_0000 + i), now).unwrap() > 0)
        .count();
    assert_eq!(tracked, hosts);
    assert_eq!(get(&e.stats().pike_checked), 10_000);
    assert_eq!(e.stats().bans_created_total(), 0);
}

#[test]
fn engine_evicts_least_recently_seen_source() {
    // One bucket of 16 (max_tracked_ips 16 and max_bans 0 would be two;
    // the smallest max_bans is 16, so 32 entries in two buckets): fill
    // until the first eviction, one source per sub-interval (the
    // resolution of "last seen").
    let e = Engine::new(config(16, 16, 1)).unwrap();
    let mut i = 0u32;
    while get(&e.source_counters().evictions) == 0 {
        i += 1;
        // Source 1 is seen again each time: always the most recent.
        e.pike_check(&v4(i), T0 + i as u64 * TICK).unwrap();
        e.pike_check(&v4(1), T0 + i as u64 * TICK).unwrap();
        assert!(i < 100);
    }
    let now = T0 + (i as u64 + 1) * TICK;
    let tracked = |k: u32| e.source_info(&v4(k), now).unwrap().last_seen_us.is_some();
    assert!(tracked(1), "seen most recently, every time");
    assert!(tracked(i), "the newest stays");
    // Exactly one went (that it is the least recently seen of its bucket
    // is what table_evicts_least_recently_seen_first checks).
    let gone: Vec<u32> = (2..i).filter(|&k| !tracked(k)).collect();
    assert_eq!(gone.len(), 1, "{gone:?}");
    assert_eq!(e.layout()[0].1, 32);
}

#[test]
fn active_bans_are_never_evicted() {
    let e = Engine::new(config(1024, 16, 1)).unwrap();
    let mut created = Vec::new();
    let mut i = 0u32;
    loop {
        let target = Cidr::host(v4(0xc000_0200 + i));
        match e.ban(target, 100, Reason::Manual, T0).unwrap() {
            BanOutcome::Created(_) => created.push(target),
            BanOutcome::TableFull => break,
            other => panic!("unexpected {other:?}"),
        }
        i += 1;
        assert!(i < 1000, "ban table never reported full");
    }
    assert_eq!(
        created.len(),
        16,
        "max_bans=16 with one stripe holds exactly 16"
    );
    assert_eq!(get(&e.ban_counters().full), 1);
    assert_eq!(get(&e.ban_counters().evictions), 0);

    // More attempts of every kind are refused; nothing is displaced.
    for j in 0..9u32 {
        assert_eq!(
            e.ban(Cidr::host(v4(0x0b00_0000 + j)), 0, Reason::Manual, T0)
                .unwrap(),
            BanOutcome::TableFull
        );
    }
    assert_eq!(get(&e.ban_counters().full), 10);
    // A flooding source is refused all the same (never fails open).
    let flooder = v4(0x0808_0808);
    for _ in 0..10 {
        assert_eq!(e.pike_check(&flooder, T0).unwrap(), PikeVerdict::Allowed);
    }
    for _ in 0..5 {
        assert_eq!(
            e.pike_check(&flooder, T0).unwrap(),
            PikeVerdict::OverLimitUnbanned
        );
    }
    let guesser = v4(0x0909_0909);
    assert_eq!(e.auth_fail(&guesser, T0).unwrap(), AuthVerdict::Counted(1));
    assert_eq!(e.auth_fail(&guesser, T0).unwrap(), AuthVerdict::Counted(2));
    assert_eq!(
        e.auth_fail(&guesser, T0).unwrap(),
        AuthVerdict::OverLimitUnbanned
    );
    assert_eq!(get(&e.ban_counters().full), 10 + 5 + 1);
    assert_eq!(get(&e.stats().pike_blocked), 5);

    // Every ban created before is still there and still enforced.
    for t in &created {
        let rec = e
            .lookup_ban(&t.addr, T0 + 99 * SEC)
            .unwrap()
            .expect("still banned");
        assert_eq!(rec.target, *t);
        assert_eq!(
            e.pike_check(&t.addr, T0 + SEC).unwrap(),
            PikeVerdict::Banned(Reason::Manual)
        );
    }
    assert_eq!(e.list_bans(T0).unwrap().len(), 16);
    assert_eq!(e.bans_active(), 16);
    // Updating an existing ban needs no new slot.
    let o = e.ban(created[3], 0, Reason::Manual, T0).unwrap();
    assert!(matches!(o, BanOutcome::Updated(_)), "{o:?}");
    // Lifting one frees exactly one slot.
    assert!(e.unban(&created[0], T0).unwrap().is_some());
    let o = e.ban(Cidr::host(flooder), 60, Reason::Pike, T0).unwrap();
    assert!(matches!(o, BanOutcome::Created(_)), "{o:?}");
    assert_eq!(
        e.ban(Cidr::host(guesser), 60, Reason::Auth, T0).unwrap(),
        BanOutcome::TableFull
    );

    // Once the timed bans lapse, new bans fit again (created[3] is now
    // permanent, and the flooder's ban lasts until T0 + 60 s).
    let later = T0 + 100 * SEC;
    let mut fresh = 0;
    for j in 0..100u32 {
        match e
            .ban(Cidr::host(v4(0x0c00_0000 + j)), 100, Reason::Manual, later)
            .unwrap()
        {
            BanOutcome::Created(_) => fresh += 1,
            BanOutcome::TableFull => break,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(fresh, 15, "16 slots less the permanent ban");
    assert!(e.lookup_ban(&created[3].addr, later).unwrap().is_some());
    assert_eq!(e.bans_active(), 16);
    assert_eq!(e.list_bans(later).unwrap().len(), 16);
}

#[test]
fn ban_table_with_several_stripes_fills_completely_and_keeps_every_ban() {
    let e = Engine::new(config(1024, 64, 4)).unwrap();
    let mut created = Vec::new();
    let mut refused = 0u64;
    for i in 0..1000u32 {
        let t = Cidr::host(v4(0xc633_6400 + i));
        match e.ban(t, 0, Reason::Manual, T0).unwrap() {
            BanOutcome::Created(_) => created.push(t),
            BanOutcome::TableFull => refused += 1,
            other => panic!("{other:?}"),
        }
    }
    // Each 16-slot stripe is one probe window, so each fills up completely.
    assert_eq!(created.len(), 64);
    assert_eq!(refused, 1000 - 64);
    assert_eq!(get(&e.ban_counters().full), refused);
    for t in &created {
        assert!(
            e.lookup_ban(&t.addr, T0 + 1000 * SEC).unwrap().is_some(),
            "{t}"
        );
    }
    assert_eq!(e.bans_active(), 64);
}

#[test]
fn spoofed_flood_cannot_grow_memory_or_hide_a_real_flooder() {
    let mut cfg = config(1024, 64, 16);
    cfg.pike_density = 30;
    let e = Engine::new(cfg).unwrap();
    let bytes = e.shm_bytes();
    let attacker = IpKey::parse("203.0.113.66").unwrap();
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let mut distinct = HashSet::new();
    let mut attacker_verdicts = Vec::new();
    let mut t = T0;
    for i in 0..100_000u32 {
        // Half IPv4, half IPv6 (each in a /64 of its own: IPv6 is tracked
        // per /64, and addresses of one /64 are one source), never the
        // attacker.
        let r = rng.next();
        let src = if i % 2 == 0 {
            v4(r as u32)
        } else {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&0x2001_0db8u32.to_be_bytes());
            b[4..8].copy_from_slice(&(r as u32).to_be_bytes());
            b[8..].copy_from_slice(&r.to_be_bytes());
            IpKey(b)
        };
        if src == attacker {
            continue;
        }
        distinct.insert(src);
        t += 10;
        // Each spoofed source is seen at most a couple of times.
        assert_eq!(
            e.pike_check(&src, t).unwrap(),
            PikeVerdict::Allowed,
            "spoofed #{i}"
        );
        if i % 10 == 0 {
            attacker_verdicts.push(e.pike_check(&attacker, t).unwrap());
        }
    }
    assert_eq!(e.shm_bytes(), bytes);
    // 30 allowed, one ban, refused afterwards.
    assert!(
        attacker_verdicts[..30]
            .iter()
            .all(|v| *v == PikeVerdict::Allowed),
        "{:?}",
        &attacker_verdicts[..31]
    );
    let o = attacker_verdicts[30];
    assert!(matches!(o, PikeVerdict::JustBanned(_)), "{o:?}");
    assert!(attacker_verdicts[31..]
        .iter()
        .all(|v| *v == PikeVerdict::Banned(Reason::Pike)));
    assert_eq!(e.stats().bans_created_total(), 1);
    assert_eq!(get(&e.ban_counters().full), 0);
    let rec = e.lookup_ban(&attacker, t).unwrap().unwrap();
    assert_eq!(rec.ban.reason, Reason::Pike);
    assert_eq!(rec.ban.hits, attacker_verdicts.len() as u64 - 31);

    // Live source entries never exceed the table: created less evicted less
    // reclaimed (each distinct source was created once, plus the attacker).
    let c = e.source_counters();
    assert_eq!(get(&c.reclaimed), 0, "nothing lapsed within one second");
    let live = distinct.len() as i64 + 1 - get(&c.evictions) as i64;
    let hosts = 1024 + 64;
    assert!((1..=hosts).contains(&live), "live entries {live}");
    assert!(get(&c.evictions) >= distinct.len() as u64 + 1 - hosts as u64);
}
