//! The whitelist on its own (src/engine/whitelist.rs): matching at every
//! prefix length, nesting, capacity, 65,536 entries, overlap with ban
//! targets, and readers racing writers.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rsec::engine::whitelist::{Whitelist, WhitelistError};
use rsec::engine::{Cidr, IpKey};
use rsec::shm::Region;

fn ip(s: &str) -> IpKey {
    IpKey::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn cidr(s: &str) -> Cidr {
    Cidr::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn key(a: u128) -> IpKey {
    IpKey(a.to_be_bytes())
}

/// A whitelist of `capacity` entries in a mapping of its own, sized by
/// `shm_bytes` (so a wrong size fails here).
fn whitelist(capacity: usize) -> Whitelist {
    let mut r = Region::new(Whitelist::shm_bytes(capacity)).unwrap();
    Whitelist::new(&mut r, capacity).unwrap()
}

/// The answer of a linear scan, to hold the hash set to.
fn naive(list: &[Cidr], a: &IpKey) -> bool {
    list.iter().any(|c| c.contains(a))
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
    fn u128(&mut self) -> u128 {
        (self.next() as u128) << 64 | self.next() as u128
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Mapped-space prefix length of an IPv4 /len.
fn v4len(len: u8) -> u8 {
    96 + len
}

const V4_MAPPED: u128 = 0xffff << 32;

#[test]
fn whitelist_matches_exactly_its_hosts() {
    let w = whitelist(16);
    assert!(!w.contains(&ip("192.0.2.1")));
    assert!(w.is_empty());
    assert_eq!(w.add(cidr("192.0.2.1")), Ok(true));
    assert_eq!(w.add(cidr("2001:db8::1")), Ok(true));
    assert_eq!(w.add(cidr("192.0.2.1")), Ok(false), "already present");
    assert!(w.contains(&ip("192.0.2.1")));
    assert!(
        w.contains(&ip("::ffff:192.0.2.1")),
        "the same source, mapped"
    );
    assert!(w.contains(&ip("2001:db8::1")));
    for other in ["192.0.2.0", "192.0.2.2", "192.0.3.1", "2001:db8::2", "::1"] {
        assert!(!w.contains(&ip(other)), "{other}");
    }
    assert_eq!(w.list(), vec![cidr("192.0.2.1"), cidr("2001:db8::1")]);
    assert_eq!(w.len(), 2);
}

#[test]
fn whitelist_prefix_of_every_length_covers_exactly_its_range() {
    let mut rng = Rng(0x5eed);
    let lengths: Vec<u8> = (0..=32).map(v4len).chain(0..=128).collect();
    let mut all = Vec::new();
    for (k, &p) in lengths.iter().enumerate() {
        // An address of the right family (IPv4 first), then its /p.
        let base = if k <= 32 {
            V4_MAPPED | rng.next() as u32 as u128
        } else {
            rng.u128()
        };
        let c = Cidr::new(key(base), p);
        let w = whitelist(16);
        assert_eq!(w.add(c), Ok(true));
        let net = c.addr.as_u128();
        let host = !IpKey::mask(p);
        for _ in 0..64 {
            let inside = key(net | (rng.u128() & host));
            assert!(w.contains(&inside), "{inside} in {c}");
        }
        assert!(w.contains(&key(net)) && w.contains(&key(net | host)), "{c}");
        if p > 0 {
            // The last bit of the prefix flipped: just outside.
            let outside = key(net ^ (1u128 << (128 - p as u32)));
            assert!(!w.contains(&outside), "{outside} outside {c}");
        }
        all.push(c);
    }
    // Every length in use at once: each prefix still covers its range, and
    // random addresses agree with a linear scan.
    let w = whitelist(256);
    w.replace(all.clone()).unwrap();
    assert_eq!(w.len(), all.len());
    for c in &all {
        assert!(w.contains(&c.addr), "{c}");
    }
    // Only lengths above 0: ::/0 would cover everything.
    let w = whitelist(256);
    let some: Vec<Cidr> = all.iter().copied().filter(|c| c.prefix > 0).collect();
    w.replace(some.clone()).unwrap();
    for _ in 0..20_000 {
        let a = if rng.next() & 1 == 0 {
            key(rng.u128())
        } else {
            key(V4_MAPPED | rng.next() as u32 as u128)
        };
        assert_eq!(w.contains(&a), naive(&some, &a), "{a}");
    }
}

#[test]
fn whitelist_ipv6_prefixes_around_the_ipv4_range_cover_ipv4() {
    // A lookup probes the prefix lengths of its own family; an IPv6 prefix
    // holding the whole mapped range must count for IPv4 too, and an IPv4
    // one (even 0.0.0.0/0, which is ::ffff:0:0/96) never for IPv6.
    let (v4, v6) = (ip("192.0.2.1"), ip("2001:db8::1"));
    // In mapped-space lengths: 0.0.0.0/0 is ::ffff:0:0/96.
    for (addr, prefix, has_v4, has_v6) in [
        ("::", 0, true, true),
        ("::", 8, true, false),
        ("::", 80, true, false),
        ("::fffe:0:0", 95, true, false),
        ("::ffff:0:0", 96, true, false),
        ("::ffff:0:0", 97, false, false),
        ("::ffff:128.0.0.0", 97, true, false),
        ("192.0.0.0", 104, true, false),
        ("::", 96, false, false),
        ("::fffe:0:0", 96, false, false),
        ("2000::", 3, false, true),
    ] {
        let entry = Cidr::new(ip(addr), prefix);
        assert_eq!(entry.addr, ip(addr), "{addr}/{prefix}: host bits");
        assert_eq!(entry.contains(&v4), has_v4, "the test itself: {entry}");
        assert_eq!(entry.contains(&v6), has_v6, "the test itself: {entry}");
        let w = whitelist(16);
        w.add(entry).unwrap();
        assert_eq!(w.contains(&v4), has_v4, "{entry} on {v4}");
        assert_eq!(w.contains(&v6), has_v6, "{entry} on {v6}");
        // With entries of the other family beside it, the same.
        w.add(cidr("198.51.100.0/24")).unwrap();
        w.add(cidr("2001:db8:9::/48")).unwrap();
        assert_eq!(w.contains(&v4), has_v4, "{entry} on {v4}, mixed");
        assert_eq!(w.contains(&v6), has_v6, "{entry} on {v6}, mixed");
    }
}

#[test]
fn whitelist_nested_prefixes_and_removing_one_of_them() {
    let w = whitelist(16);
    for c in ["10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24", "10.1.2.3"] {
        assert_eq!(w.add(cidr(c)), Ok(true), "{c}");
    }
    for a in ["10.1.2.3", "10.1.2.4", "10.1.3.1", "10.200.0.1"] {
        assert!(w.contains(&ip(a)), "{a}");
    }
    assert!(!w.contains(&ip("11.0.0.1")));

    // The /16 goes; the /8 around it still covers its addresses.
    assert_eq!(w.remove(&cidr("10.1.0.0/16")), Ok(true));
    assert_eq!(w.remove(&cidr("10.1.0.0/16")), Ok(false), "already gone");
    assert!(w.contains(&ip("10.1.3.1")));
    // Then the /8: only the /24 and the host inside it remain.
    assert_eq!(w.remove(&cidr("10.0.0.0/8")), Ok(true));
    assert!(!w.contains(&ip("10.1.3.1")));
    assert!(!w.contains(&ip("10.200.0.1")));
    assert!(w.contains(&ip("10.1.2.4")));
    assert!(w.contains(&ip("10.1.2.3")));
    assert_eq!(w.list(), vec![cidr("10.1.2.0/24"), cidr("10.1.2.3")]);
    // And the /24: the host alone.
    assert_eq!(w.remove(&cidr("10.1.2.0/24")), Ok(true));
    assert!(!w.contains(&ip("10.1.2.4")));
    assert!(w.contains(&ip("10.1.2.3")));
    assert_eq!(w.remove(&cidr("192.0.2.0/24")), Ok(false), "never there");
}

#[test]
fn whitelist_replace_swaps_the_whole_list() {
    let w = whitelist(16);
    w.replace(vec![cidr("10.0.0.0/8"), cidr("2001:db8::/32")])
        .unwrap();
    w.replace(vec![
        cidr("192.0.2.0/24"),
        cidr("2001:db8:1::/48"),
        cidr("192.0.2.0/24"),
        cidr("198.51.100.7"),
    ])
    .unwrap();
    // In order, a prefix listed twice kept once where it first appears.
    assert_eq!(
        w.list(),
        vec![
            cidr("192.0.2.0/24"),
            cidr("2001:db8:1::/48"),
            cidr("198.51.100.7")
        ]
    );
    assert!(!w.contains(&ip("10.0.0.1")), "the old list is gone");
    assert!(!w.contains(&ip("2001:db8:2::1")));
    assert!(w.contains(&ip("2001:db8:1::1")));
    assert!(w.contains(&ip("192.0.2.200")));
    assert!(w.contains(&ip("198.51.100.7")));
    assert!(!w.contains(&ip("198.51.100.8")));
    w.replace(Vec::new()).unwrap();
    assert!(w.is_empty());
    assert!(!w.contains(&ip("192.0.2.200")));
    // Host bits below the prefix are cleared on the way in.
    let sloppy = Cidr {
        addr: ip("203.0.113.77"),
        prefix: v4len(24),
    };
    assert_eq!(w.add(sloppy), Ok(true));
    assert_eq!(w.list(), vec![cidr("203.0.113.0/24")]);
    assert_eq!(w.remove(&sloppy), Ok(true));
}

#[test]
fn whitelist_full_at_capacity() {
    let w = whitelist(16);
    assert_eq!(w.capacity(), 16);
    let nth = |i: u32| Cidr::host(IpKey::from_bytes(&(0x0a00_0000 + i).to_be_bytes()).unwrap());
    for i in 0..16 {
        assert_eq!(w.add(nth(i)), Ok(true));
    }
    let full = w.add(nth(16)).unwrap_err();
    assert_eq!(full, WhitelistError::Full { capacity: 16 });
    assert_eq!(
        full.to_string(),
        "whitelist full: at most 16 entries (modparam max_whitelist)"
    );
    assert_eq!(w.add(nth(3)), Ok(false), "already there, even when full");
    assert_eq!(w.len(), 16);
    assert!(!w.contains(&nth(16).addr));
    // A replacement over capacity changes nothing.
    assert_eq!(
        w.replace((100..117).map(nth).collect()),
        Err(WhitelistError::Full { capacity: 16 })
    );
    assert_eq!(w.list(), (0..16).map(nth).collect::<Vec<_>>());
    // Room again after a removal; a replacement of exactly capacity fits.
    assert_eq!(w.remove(&nth(0)), Ok(true));
    assert_eq!(w.add(nth(16)), Ok(true));
    assert!(w.contains(&nth(16).addr));
    w.replace((100..116).map(nth).collect()).unwrap();
    assert_eq!(w.len(), 16);
}

/// 65,536 entries: the carriers' and customers' prefixes of a big operator,
/// as hosts, /24s, /29s, IPv6 /48s and /64s.
fn big_list() -> Vec<Cidr> {
    (0..65_536u32)
        .map(|i| match i % 5 {
            0 => Cidr::host(IpKey::from_bytes(&(0x0a00_0000 + i).to_be_bytes()).unwrap()),
            1 => Cidr::new(
                IpKey::from_bytes(&(0x6400_0000 + (i << 8)).to_be_bytes()).unwrap(),
                v4len(24),
            ),
            2 => Cidr::new(
                IpKey::from_bytes(&(0xc000_0000 + (i << 3)).to_be_bytes()).unwrap(),
                v4len(29),
            ),
            3 => Cidr::new(key(0x2001_0db8_u128 << 96 | (i as u128) << 80), 48),
            _ => Cidr::new(key(0x2a00_u128 << 112 | (i as u128) << 64), 64),
        })
        .collect()
}

#[test]
fn whitelist_holds_65536_entries_and_finds_each() {
    let w = whitelist(65_536);
    let list = big_list();
    let t = Instant::now();
    w.replace(list.clone()).unwrap();
    let took = t.elapsed();
    eprintln!("replace of 65,536 entries: {took:?}");
    // Writes are rare; this bound is loose for slow, shared machines.
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert_eq!(w.len(), 65_536);
    assert_eq!(w.list(), list);
    let mut rng = Rng(7);
    for c in &list {
        assert!(w.contains(&c.addr), "{c}");
        let inside = key(c.addr.as_u128() | (rng.u128() & !IpKey::mask(c.prefix)));
        assert!(w.contains(&inside), "{inside} in {c}");
    }
    for miss in [
        "10.1.0.1",
        "100.0.0.0",
        "192.168.0.1",
        "172.16.0.1",
        "2001:db8:ffff::1",
        "2a00:0:0:1::1",
        "2001:db9::1",
    ] {
        assert!(!w.contains(&ip(miss)), "{miss}");
    }
    // Around the hosts: a member exactly when it is the fifth of its kind.
    for _ in 0..50_000 {
        let offset = rng.below(1 << 17) as u32;
        let a = IpKey::from_bytes(&(0x0a00_0000 + offset).to_be_bytes()).unwrap();
        assert_eq!(w.contains(&a), offset < 65_536 && offset % 5 == 0, "{a}");
    }
    assert_eq!(
        w.add(cidr("203.0.113.1")),
        Err(WhitelistError::Full { capacity: 65_536 })
    );
    // One change to a full list is one O(n) rebuild.
    let t = Instant::now();
    assert_eq!(w.remove(&list[12_345]), Ok(true));
    assert_eq!(w.add(cidr("203.0.113.1")), Ok(true));
    eprintln!("remove + add at 65,536 entries: {:?}", t.elapsed());
    assert!(!w.contains(&list[12_345].addr));
    assert!(w.contains(&ip("203.0.113.1")));
    assert!(w.contains(&list[12_346].addr));
}

#[test]
fn whitelist_overlapping_finds_prefixes_around_and_inside() {
    let w = whitelist(16);
    for c in [
        "10.0.0.0/8",
        "192.0.2.0/24",
        "198.51.100.7",
        "2001:db8:1::/48",
    ] {
        w.add(cidr(c)).unwrap();
    }
    for (target, want) in [
        // Around the target: a whitelisted prefix containing it.
        ("10.1.2.3", Some("10.0.0.0/8")),
        ("10.1.0.0/16", Some("10.0.0.0/8")),
        ("10.0.0.0/8", Some("10.0.0.0/8")),
        ("192.0.2.128/25", Some("192.0.2.0/24")),
        ("2001:db8:1:2::/64", Some("2001:db8:1::/48")),
        ("198.51.100.7", Some("198.51.100.7")),
        // Inside the target: whitelisted prefixes it would cover.
        ("10.0.0.0/7", Some("10.0.0.0/8")),
        ("192.0.0.0/16", Some("192.0.2.0/24")),
        ("198.51.100.0/24", Some("198.51.100.7")),
        ("2001:db8::/32", Some("2001:db8:1::/48")),
        // Beside every entry.
        ("11.0.0.0/8", None),
        ("192.0.3.0/24", None),
        ("198.51.100.8", None),
        ("2001:db8:2::/48", None),
        ("2001:db9::/32", None),
    ] {
        assert_eq!(
            w.overlapping(&cidr(target)),
            want.map(cidr),
            "{target} overlaps"
        );
    }
    // Around first, and the most specific prefix around.
    w.add(cidr("10.1.0.0/16")).unwrap();
    w.add(cidr("10.1.2.3")).unwrap();
    assert_eq!(
        w.overlapping(&cidr("10.1.2.0/24")),
        Some(cidr("10.1.0.0/16"))
    );
    assert_eq!(w.overlapping(&cidr("10.1.2.3")), Some(cidr("10.1.2.3")));
    assert_eq!(
        w.overlapping(&cidr("10.1.0.0/16")),
        Some(cidr("10.1.0.0/16"))
    );
}

#[test]
fn whitelist_agrees_with_a_linear_scan_through_random_changes() {
    // A small table at its fullest, with few prefixes in a narrow range:
    // long probe runs, and every entry often removed and re-added, which is
    // what the incremental clearing of a rebuild must get right.
    let w = whitelist(64);
    let mut rng = Rng(99);
    let mut model: Vec<Cidr> = Vec::new();
    let pick = |rng: &mut Rng| {
        let len = [v4len(24), v4len(28), v4len(30), v4len(32), 120, 124][rng.below(6) as usize];
        Cidr::new(
            key(V4_MAPPED | (0xc000_0200 + rng.below(1024) as u128)),
            len,
        )
    };
    let probes: Vec<IpKey> = (0..1100u128)
        .map(|i| key(V4_MAPPED | (0xc000_01f0 + i)))
        .collect();
    for step in 0..3000 {
        match rng.below(10) {
            0..=4 => {
                let c = pick(&mut rng);
                let r = w.add(c);
                if model.contains(&c) {
                    assert_eq!(r, Ok(false));
                } else if model.len() == 64 {
                    assert_eq!(r, Err(WhitelistError::Full { capacity: 64 }));
                } else {
                    assert_eq!(r, Ok(true));
                    model.push(c);
                }
            }
            5..=8 if !model.is_empty() => {
                let c = model.remove(rng.below(model.len() as u64) as usize);
                assert_eq!(w.remove(&c), Ok(true));
            }
            _ => {
                let mut l: Vec<Cidr> = (0..rng.below(65)).map(|_| pick(&mut rng)).collect();
                w.replace(l.clone()).unwrap();
                let mut seen = std::collections::HashSet::new();
                l.retain(|c| seen.insert(*c));
                model = l;
            }
        }
        assert_eq!(w.list(), model, "step {step}");
        for a in &probes {
            assert_eq!(w.contains(a), naive(&model, a), "step {step}: {a}");
        }
        let t = pick(&mut rng);
        let got = w.overlapping(&t);
        assert_eq!(got.is_some(), model.iter().any(|c| c.overlaps(&t)), "{t}");
        if let Some(c) = got {
            assert!(model.contains(&c) && c.overlaps(&t), "{t}: {c}");
        }
    }
}

#[test]
fn whitelist_readers_racing_a_writer_see_one_list_or_the_other() {
    // Two lists of 4,096 sharing one prefix; a writer swaps them as fast as
    // it can while readers check that the shared prefix is always found,
    // that an address in neither list never is (a half-written table read
    // as valid could answer anything), and that a listing is always one
    // list whole.
    let shared = cidr("203.0.113.0/24");
    let make = |base: u32, v6: u16| -> Vec<Cidr> {
        let mut l: Vec<Cidr> = (0..4095u32)
            .map(|i| {
                if i % 2 == 0 {
                    Cidr::host(IpKey::from_bytes(&(base + i).to_be_bytes()).unwrap())
                } else {
                    Cidr::new(key((v6 as u128) << 112 | (i as u128) << 64), 64)
                }
            })
            .collect();
        l.insert(2048, shared);
        l
    };
    let (a, b) = (make(0x0a00_0000, 0x2001), make(0x0b00_0000, 0x2a00));
    let w = whitelist(8192);
    w.replace(a.clone()).unwrap();
    let stop = AtomicBool::new(false);
    let (flips, reads) = (AtomicU64::new(0), AtomicU64::new(0));
    std::thread::scope(|s| {
        for r in 0..3u64 {
            let (w, a, b, stop, reads) = (&w, &a, &b, &stop, &reads);
            s.spawn(move || {
                let probe = ip("203.0.113.99");
                let mut rng = Rng(r + 1);
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    assert!(w.contains(&probe), "the prefix in both lists went missing");
                    let stranger = 0x0c00_0000 + rng.below(4096) as u32;
                    let stranger = IpKey::from_bytes(&stranger.to_be_bytes()).unwrap();
                    assert!(!w.contains(&stranger), "{stranger} is in neither list");
                    n += 1;
                    if n % 256 == 0 {
                        let l = w.list();
                        assert!(l == *a || l == *b, "a listing mixed the lists");
                        assert_eq!(w.len(), 4096);
                    }
                }
                reads.fetch_add(n, Ordering::Relaxed);
            });
        }
        let until = Instant::now() + Duration::from_secs(2);
        while Instant::now() < until || flips.load(Ordering::Relaxed) < 100 {
            w.replace(b.clone()).unwrap();
            w.replace(a.clone()).unwrap();
            flips.fetch_add(2, Ordering::Relaxed);
        }
        stop.store(true, Ordering::Relaxed);
    });
    eprintln!(
        "{} writes against {} reads",
        flips.load(Ordering::Relaxed),
        reads.load(Ordering::Relaxed)
    );
    assert!(reads.load(Ordering::Relaxed) > 0);
    assert_eq!(w.list(), a);
}

#[test]
fn whitelist_memory_per_entry_is_as_documented() {
    // 66 bytes per entry at a power-of-two capacity: in each of the two
    // buffers, a 16-byte address, a 1-byte length and two 8-byte slots.
    let per = |cap: usize| Whitelist::shm_bytes(cap) as f64 / cap as f64;
    assert!((66.0..66.1).contains(&per(65_536)), "{}", per(65_536));
    assert!((66.0..66.1).contains(&per(1 << 20)), "{}", per(1 << 20));
    // Just above one, the slots double: 98.
    assert!((98.0..98.1).contains(&per(65_537)), "{}", per(65_537));
    let e = rsec::engine::Engine::new(rsec::engine::Config::default()).unwrap();
    eprintln!(
        "default engine: {} KiB mapped, whitelist {} KiB",
        e.shm_bytes() / 1024,
        Whitelist::shm_bytes(65_536) / 1024
    );
    assert_eq!(e.whitelist().capacity(), 65_536);
}
