//! Address and prefix parsing, matching and formatting (src/engine/ip.rs).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use rsec::engine::ip::parse_cidr_list;
use rsec::engine::{Cidr, IpKey, ParseError};

fn ip(s: &str) -> IpKey {
    IpKey::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn cidr(s: &str) -> Cidr {
    Cidr::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

// ---------------------------------------------------------------- addresses

#[test]
fn parses_ipv4() {
    let k = ip("192.0.2.1");
    assert!(k.is_v4());
    assert_eq!(k.to_ip(), IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
    assert_eq!(k.to_string(), "192.0.2.1");
    // Stored as the IPv4-mapped IPv6 address.
    assert_eq!(k.0, Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped().octets());
    assert_eq!(ip("0.0.0.0").to_string(), "0.0.0.0");
    assert_eq!(ip("255.255.255.255").to_string(), "255.255.255.255");
}

#[test]
fn parses_ipv6() {
    let k = ip("2001:db8::1");
    assert!(!k.is_v4());
    assert_eq!(
        k.to_ip(),
        IpAddr::V6("2001:db8::1".parse::<Ipv6Addr>().unwrap())
    );
    assert_eq!(k.to_string(), "2001:db8::1");
    assert_eq!(ip("::").to_string(), "::");
    assert_eq!(ip("::1").to_string(), "::1");
    // Canonical (lower-case, compressed) output.
    assert_eq!(
        ip("2001:0DB8:0000:0000:0000:0000:0000:00FF").to_string(),
        "2001:db8::ff"
    );
    assert_eq!(ip("fe80::1:2:3:4").to_string(), "fe80::1:2:3:4");
}

#[test]
fn parses_bracketed_ipv6() {
    assert_eq!(ip("[::1]"), ip("::1"));
    assert_eq!(ip("[2001:db8::1]"), ip("2001:db8::1"));
    assert_eq!(ip("[::1]").to_string(), "::1");
    assert_eq!(ip(" [2001:db8::42] "), ip("2001:db8::42"));
}

#[test]
fn trims_whitespace() {
    assert_eq!(ip("  10.1.2.3\t\n"), ip("10.1.2.3"));
    assert_eq!(ip("\t2001:db8::1 "), ip("2001:db8::1"));
}

#[test]
fn rejects_garbage() {
    for bad in [
        "",
        " ",
        "\t\n",
        "1.2.3",
        "1.2.3.4.5",
        "256.1.1.1",
        "1.2.3.-4",
        "abc",
        "localhost",
        "1.2.3.4:5060",
        "[::1]:5060",
        "[::1",
        "::1]",
        "[[::1]]",
        "[]",
        "2001:db8::g",
        "2001:db8:::1",
        "1:2:3:4:5:6:7:8:9",
        "10.0.0.0/8",
        "1.2.3.4 5",
    ] {
        match IpKey::parse(bad) {
            Err(ParseError::BadAddress(s)) => assert_eq!(s, bad, "error must carry the input"),
            other => panic!("{bad:?} should be BadAddress, got {other:?}"),
        }
    }
}

#[test]
fn parse_error_message_names_the_input() {
    let e = IpKey::parse("not-an-ip").unwrap_err();
    assert!(e.to_string().contains("'not-an-ip'"), "{e}");
}

#[test]
fn v4_mapped_v6_is_the_same_source_as_v4() {
    assert_eq!(ip("::ffff:1.2.3.4"), ip("1.2.3.4"));
    assert_eq!(ip("::FFFF:1.2.3.4"), ip("1.2.3.4"));
    assert_eq!(ip("::ffff:0102:0304"), ip("1.2.3.4"));
    assert_eq!(ip("[::ffff:1.2.3.4]"), ip("1.2.3.4"));
    assert!(ip("::ffff:1.2.3.4").is_v4());
    assert_eq!(ip("::ffff:1.2.3.4").to_string(), "1.2.3.4");
    // Not every v6 address with a v4 tail is mapped.
    assert_ne!(ip("::1.2.3.4"), ip("1.2.3.4"));
    assert_ne!(ip("64:ff9b::1.2.3.4"), ip("1.2.3.4"));
    assert!(!ip("64:ff9b::1.2.3.4").is_v4());
}

#[test]
fn from_bytes() {
    assert_eq!(IpKey::from_bytes(&[10, 0, 0, 1]), Some(ip("10.0.0.1")));
    let v6 = "2001:db8::7".parse::<Ipv6Addr>().unwrap().octets();
    assert_eq!(IpKey::from_bytes(&v6), Some(ip("2001:db8::7")));
    let mapped = Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped().octets();
    assert_eq!(IpKey::from_bytes(&mapped), Some(ip("10.0.0.1")));
    for len in [0usize, 1, 3, 5, 8, 15, 17, 32] {
        assert_eq!(IpKey::from_bytes(&vec![1u8; len]), None, "len {len}");
    }
}

#[test]
fn from_ip_round_trip() {
    for s in ["192.0.2.55", "2001:db8:1:2:3:4:5:6", "::", "0.0.0.0"] {
        let a: IpAddr = s.parse().unwrap();
        let k = IpKey::from_ip(a);
        assert_eq!(k.to_ip(), a);
        assert_eq!(IpKey::parse(&k.to_string()).unwrap(), k);
    }
}

// ----------------------------------------------------------------- prefixes

fn v4_net(addr: u32, len: u32) -> u32 {
    if len == 0 {
        0
    } else {
        addr & (u32::MAX << (32 - len))
    }
}

fn v6_net(addr: u128, len: u32) -> u128 {
    if len == 0 {
        0
    } else {
        addr & (u128::MAX << (128 - len))
    }
}

#[test]
fn cidr_v4_every_prefix_length() {
    let base = u32::from(Ipv4Addr::new(203, 0, 113, 77)) | 0x8000_0000 | 0x0000_0001;
    for len in 0..=32u32 {
        let net = Ipv4Addr::from(v4_net(base, len));
        let text = format!("{net}/{len}");
        let c = cidr(&text);
        assert_eq!(c.prefix as u32, 96 + len, "{text}");
        assert_eq!(c.addr, IpKey::from_ip(IpAddr::V4(net)), "{text}");
        assert_eq!(c.is_host(), len == 32);
        // Shown as a dotted quad with the IPv4 length; a /32 as the bare host.
        let shown = c.to_string();
        if len == 32 {
            assert_eq!(shown, net.to_string());
        } else {
            assert_eq!(shown, text);
        }
        assert_eq!(cidr(&shown), c, "round trip of {shown}");

        // Membership: the first and last address of the block, and the
        // addresses just outside it.
        let first = v4_net(base, len);
        let last = first
            | if len == 0 {
                u32::MAX
            } else {
                !(u32::MAX << (32 - len))
            };
        let k = |a: u32| IpKey::from_ip(IpAddr::V4(Ipv4Addr::from(a)));
        assert!(c.contains(&k(first)), "{text} contains first");
        assert!(c.contains(&k(last)), "{text} contains last");
        assert!(c.contains(&k(base)), "{text} contains base");
        if first > 0 {
            assert!(!c.contains(&k(first - 1)), "{text} excludes first-1");
        }
        if last < u32::MAX {
            assert!(!c.contains(&k(last + 1)), "{text} excludes last+1");
        }
        // An IPv4 prefix never covers an IPv6 address.
        assert!(!c.contains(&ip("2001:db8::1")), "{text}");
    }
}

#[test]
fn cidr_v6_every_prefix_length() {
    let base: u128 = u128::from(
        "2001:db8:1234:5678:9abc:def0:1357:9bdf"
            .parse::<Ipv6Addr>()
            .unwrap(),
    );
    for len in 0..=128u32 {
        let net = Ipv6Addr::from(v6_net(base, len));
        let text = format!("{net}/{len}");
        let c = cidr(&text);
        assert_eq!(c.prefix as u32, len, "{text}");
        assert_eq!(c.addr, IpKey::from_ip(IpAddr::V6(net)), "{text}");
        assert_eq!(c.is_host(), len == 128);
        let shown = c.to_string();
        if len == 128 {
            assert_eq!(shown, net.to_string());
        } else {
            assert_eq!(shown, text);
        }
        assert_eq!(cidr(&shown), c, "round trip of {shown}");

        let first = v6_net(base, len);
        let last = first
            | if len == 0 {
                u128::MAX
            } else {
                !(u128::MAX << (128 - len))
            };
        let k = |a: u128| IpKey::from_ip(IpAddr::V6(Ipv6Addr::from(a)));
        assert!(c.contains(&k(first)), "{text}");
        assert!(c.contains(&k(last)), "{text}");
        assert!(c.contains(&k(base)), "{text}");
        if first > 0 {
            assert!(!c.contains(&k(first - 1)), "{text} excludes first-1");
        }
        if last < u128::MAX {
            assert!(!c.contains(&k(last + 1)), "{text} excludes last+1");
        }
    }
}

#[test]
fn bare_address_is_a_host_prefix() {
    let c = cidr("10.1.2.3");
    assert_eq!(c, Cidr::host(ip("10.1.2.3")));
    assert!(c.is_host());
    assert_eq!(c.prefix, Cidr::HOST);
    assert_eq!(c.to_string(), "10.1.2.3");
    assert_eq!(cidr("1.2.3.4/32"), cidr("1.2.3.4"));
    assert_eq!(cidr("2001:db8::1"), Cidr::host(ip("2001:db8::1")));
    assert_eq!(cidr("2001:db8::1/128"), cidr("2001:db8::1"));
    assert_eq!(cidr("[2001:db8::1]"), cidr("2001:db8::1"));
    assert_eq!(Cidr::host(ip("2001:db8::1")).to_string(), "2001:db8::1");
    assert!(c.contains(&ip("10.1.2.3")));
    assert!(!c.contains(&ip("10.1.2.4")));
}

#[test]
fn cidr_display_round_trips() {
    for (input, shown) in [
        ("10.0.0.0/8", "10.0.0.0/8"),
        ("0.0.0.0/0", "0.0.0.0/0"),
        ("192.168.0.0/16", "192.168.0.0/16"),
        ("192.168.1.128/25", "192.168.1.128/25"),
        ("1.2.3.4/32", "1.2.3.4"),
        ("::ffff:1.2.3.4", "1.2.3.4"),
        ("  172.16.0.0/12 ", "172.16.0.0/12"),
        ("172.16.0.0 / 12", "172.16.0.0/12"),
        ("2001:db8::/32", "2001:db8::/32"),
        ("2001:DB8::/32", "2001:db8::/32"),
        ("[2001:db8::]/48", "2001:db8::/48"),
        ("::/0", "::/0"),
        ("fe80::/10", "fe80::/10"),
        ("2001:db8:0:1::/64", "2001:db8:0:1::/64"),
    ] {
        let c = cidr(input);
        assert_eq!(c.to_string(), shown, "{input}");
        assert_eq!(cidr(shown), c, "{shown} parses back");
        assert_eq!(format!("{c:?}"), format!("Cidr({shown})"));
    }
}

#[test]
fn rejects_bad_prefix_lengths() {
    for bad in [
        "10.0.0.0/33",
        "10.0.0.0/64",
        "10.0.0.0/96",
        "10.0.0.0/128",
        "0.0.0.0/255",
        "0.0.0.0/256",
        "10.0.0.0/-1",
        "10.0.0.0/",
        "10.0.0.0/abc",
        "10.0.0.0/8/8",
        "10.0.0.0/8.0",
        "::/129",
        "::/200",
        "::/256",
        "::/1000",
        "2001:db8::/",
        "2001:db8::/x",
    ] {
        match Cidr::parse(bad) {
            Err(ParseError::BadPrefix(s)) => assert_eq!(s, bad),
            other => panic!("{bad:?} should be BadPrefix, got {other:?}"),
        }
    }
    let e = Cidr::parse("10.0.0.0/33").unwrap_err();
    assert!(e.to_string().contains("'10.0.0.0/33'"), "{e}");
    assert!(e.to_string().contains("prefix"), "{e}");
}

#[test]
fn rejects_bad_prefix_address() {
    for bad in [
        "",
        "/8",
        "10.0.0/8",
        "bogus/8",
        "10.0.0.256/24",
        "2001:db8::g/32",
        "[::1/128",
    ] {
        match Cidr::parse(bad) {
            Err(ParseError::BadAddress(s)) => assert_eq!(s, bad),
            other => panic!("{bad:?} should be BadAddress, got {other:?}"),
        }
    }
}

#[test]
fn rejects_host_bits_below_the_prefix() {
    for bad in [
        "10.0.0.1/8",
        "11.0.0.0/7",
        "192.168.1.128/24",
        "192.168.1.1/31",
        "0.0.0.1/0",
        "255.255.255.255/31",
        "2001:db8::1/64",
        "2001:db9::/31",
        "::1/127",
        "::1/0",
        "2001:db8:0:1::1/120",
    ] {
        match Cidr::parse(bad) {
            Err(ParseError::HostBitsSet(s)) => assert_eq!(s, bad),
            other => panic!("{bad:?} should be HostBitsSet, got {other:?}"),
        }
    }
    let e = Cidr::parse("10.0.0.1/8").unwrap_err();
    assert!(e.to_string().contains("'10.0.0.1/8'"), "{e}");
    assert!(e.to_string().contains("host bits"), "{e}");
}

#[test]
fn contains() {
    let net8 = cidr("10.0.0.0/8");
    assert!(net8.contains(&ip("10.0.0.0")));
    assert!(net8.contains(&ip("10.1.2.3")));
    assert!(net8.contains(&ip("10.255.255.255")));
    assert!(net8.contains(&ip("::ffff:10.9.8.7")));
    assert!(!net8.contains(&ip("11.0.0.0")));
    assert!(!net8.contains(&ip("9.255.255.255")));
    assert!(!net8.contains(&ip("::a01:203")));
    assert!(!net8.contains(&ip("2001:db8::1")));

    // The IPv4 "everything" covers every IPv4 address and no IPv6 one.
    let all4 = cidr("0.0.0.0/0");
    assert!(all4.contains(&ip("0.0.0.0")));
    assert!(all4.contains(&ip("255.255.255.255")));
    assert!(!all4.contains(&ip("::1")));
    assert!(!all4.contains(&ip("2001:db8::1")));

    // The IPv6 "everything" covers both families (IPv4 is mapped into it).
    let all6 = cidr("::/0");
    assert!(all6.contains(&ip("2001:db8::1")));
    assert!(all6.contains(&ip("1.2.3.4")));

    let net6 = cidr("2001:db8:1:2::/64");
    assert!(net6.contains(&ip("2001:db8:1:2::")));
    assert!(net6.contains(&ip("2001:db8:1:2:ffff:ffff:ffff:ffff")));
    assert!(net6.contains(&ip("2001:db8:1:2:abcd::1")));
    assert!(!net6.contains(&ip("2001:db8:1:3::")));
    assert!(!net6.contains(&ip("2001:db8:1:1:ffff:ffff:ffff:ffff")));
    assert!(!net6.contains(&ip("10.0.0.1")));

    // Odd prefix lengths that cut through a byte.
    let odd = cidr("192.168.1.128/25");
    assert!(odd.contains(&ip("192.168.1.128")));
    assert!(odd.contains(&ip("192.168.1.255")));
    assert!(!odd.contains(&ip("192.168.1.127")));
    let odd6 = cidr("2001:db8::/33");
    assert!(odd6.contains(&ip("2001:db8:7fff::1")));
    assert!(!odd6.contains(&ip("2001:db8:8000::1")));
}

#[test]
fn cidr_new_clears_host_bits_and_clamps() {
    let c = Cidr::new(ip("10.1.2.3"), 96 + 8);
    assert_eq!(c, cidr("10.0.0.0/8"));
    assert_eq!(c.to_string(), "10.0.0.0/8");
    assert_eq!(Cidr::new(ip("2001:db8::1"), 32), cidr("2001:db8::/32"));
    assert_eq!(
        Cidr::new(ip("2001:db8::1"), 200),
        Cidr::host(ip("2001:db8::1"))
    );
    assert_eq!(Cidr::new(ip("2001:db8::1"), 0), cidr("::/0"));
}

// -------------------------------------------------------------------- lists

#[test]
fn cidr_list_with_spaces_and_empty_items() {
    let v = parse_cidr_list(" 10.0.0.0/8 ,192.168.1.1,, , 2001:db8::/32 ,[::1],").unwrap();
    assert_eq!(
        v,
        vec![
            cidr("10.0.0.0/8"),
            cidr("192.168.1.1"),
            cidr("2001:db8::/32"),
            Cidr::host(ip("::1"))
        ]
    );
    assert_eq!(parse_cidr_list("").unwrap(), Vec::<Cidr>::new());
    assert_eq!(parse_cidr_list(" , ,, ").unwrap(), Vec::<Cidr>::new());
    assert_eq!(parse_cidr_list("1.2.3.4").unwrap(), vec![cidr("1.2.3.4")]);
}

#[test]
fn cidr_list_error_names_the_bad_item() {
    let e = parse_cidr_list("10.0.0.0/8, bogus ,192.168.0.0/16").unwrap_err();
    assert_eq!(e, ParseError::BadAddress("bogus".into()));
    assert!(e.to_string().contains("'bogus'"), "{e}");

    let e = parse_cidr_list("10.0.0.0/8,1.2.3.0/33").unwrap_err();
    assert_eq!(e, ParseError::BadPrefix("1.2.3.0/33".into()));
    assert!(e.to_string().contains("'1.2.3.0/33'"), "{e}");

    let e = parse_cidr_list("2001:db8::/32, 10.0.0.1/8").unwrap_err();
    assert_eq!(e, ParseError::HostBitsSet("10.0.0.1/8".into()));
    assert!(e.to_string().contains("'10.0.0.1/8'"), "{e}");
    // The good items are not named.
    assert!(!e.to_string().contains("2001:db8"), "{e}");
}
