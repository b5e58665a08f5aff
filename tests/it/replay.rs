//! rsec-replay run as a real process on captures and SIP logs written
//! here: pcap and pcapng on every link type it reads, SIP over UDP (IPv4
//! and IPv6) and TCP, parameter comparison, the picture, and its errors.

use std::borrow::Cow;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use etherparse::PacketBuilder;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::DataLink;
use serde_json::Value;

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_rsec-replay");

/// The capture's start, microseconds since the epoch.
const T0: u64 = 1_700_000_000_000_000;
const MS: u64 = 1_000;
const SERVER: [u8; 4] = [198, 51, 100, 1];
const ATTACKER: [u8; 4] = [192, 0, 2, 66];
const PIKE_DENSITY: u64 = 30;
/// The flood: OPTIONS every 10 ms for 3 s.
const FLOOD: u64 = 300;

/// A directory of its own per test.
fn dir(test: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("replay")
        .join(test);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn replay(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("run rsec-replay")
}

fn json(args: &[&str]) -> Value {
    let out = replay(&[args, &["--json"]].concat());
    assert!(
        out.status.success(),
        "rsec-replay {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON report")
}

fn request(method: &str, from: &str, n: u64, ua: &str, body: &str) -> String {
    format!(
        "{method} sip:198.51.100.1 SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bK{n}\r\n\
         From: <sip:{from}>;tag={n}\r\nTo: <sip:user@198.51.100.1>\r\nCall-ID: {n}-{from}\r\n\
         CSeq: {n} {method}\r\nUser-Agent: {ua}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn ok(from: &str, n: u64, method: &str) -> String {
    format!(
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bK{n}\r\nTo: <sip:user@198.51.100.1>;tag=s\r\n\
         Call-ID: {n}-{from}\r\nCSeq: {n} {method}\r\nContent-Length: 0\r\n\r\n"
    )
}

/// One IP packet and when it was captured.
pub(crate) struct Pkt {
    pub(crate) ts_us: u64,
    pub(crate) ip: Vec<u8>,
}

fn udp4(ts_us: u64, src: [u8; 4], dst: [u8; 4], payload: &str) -> Pkt {
    let b = PacketBuilder::ipv4(src, dst, 64).udp(5060, 5060);
    let mut ip = Vec::new();
    b.write(&mut ip, payload.as_bytes()).unwrap();
    Pkt { ts_us, ip }
}

fn udp6(ts_us: u64, src: [u8; 16], dst: [u8; 16], payload: &str) -> Pkt {
    let b = PacketBuilder::ipv6(src, dst, 64).udp(5060, 5060);
    let mut ip = Vec::new();
    b.write(&mut ip, payload.as_bytes()).unwrap();
    Pkt { ts_us, ip }
}

fn tcp4(ts_us: u64, seq: u32, syn: bool, payload: &[u8]) -> Pkt {
    let mut b = PacketBuilder::ipv4([192, 0, 2, 20], SERVER, 64).tcp(40000, 5060, seq, 65535);
    if syn {
        b = b.syn();
    } else {
        b = b.ack(1).psh();
    }
    let mut ip = Vec::new();
    b.write(&mut ip, payload).unwrap();
    Pkt { ts_us, ip }
}

fn v6(last: u8) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
    a[15] = last;
    a
}

/// The attack and the legitimate traffic, in capture order:
/// - 192.0.2.66 floods OPTIONS at 100/s for 3 s (300 requests);
/// - 192.0.2.10-12 REGISTER once a second for 10 s, each answered 200;
/// - 2001:db8::7 REGISTERs once a second for 10 s over IPv6;
/// - 192.0.2.20 sends over one TCP connection a REGISTER and an OPTIONS
///   in one segment, then an INVITE (with a body) split over two.
fn scenario() -> Vec<Pkt> {
    let mut p = Vec::new();
    for n in 0..FLOOD {
        let t = T0 + 100 * MS + n * 10 * MS;
        p.push(udp4(
            t,
            ATTACKER,
            SERVER,
            &request("OPTIONS", "192.0.2.66", n, "flood-o-matic", ""),
        ));
    }
    for (k, last) in [10u8, 11, 12].into_iter().enumerate() {
        let ip = [192, 0, 2, last];
        let from = format!("192.0.2.{last}");
        for n in 0..10 {
            let t = T0 + k as u64 * 300 * MS + n * 1000 * MS;
            p.push(udp4(
                t,
                ip,
                SERVER,
                &request("REGISTER", &from, n, "Yealink SIP-T46S", ""),
            ));
            p.push(udp4(t + MS, SERVER, ip, &ok(&from, n, "REGISTER")));
        }
    }
    for n in 0..10 {
        let t = T0 + 50 * MS + n * 1000 * MS;
        p.push(udp6(
            t,
            v6(7),
            v6(1),
            &request("REGISTER", "[2001:db8::7]", n, "Linphone", ""),
        ));
    }
    let two = [
        request("REGISTER", "192.0.2.20", 1, "Zoiper", ""),
        request("OPTIONS", "192.0.2.20", 2, "Zoiper", ""),
    ]
    .concat();
    let invite = request(
        "INVITE",
        "192.0.2.20",
        3,
        "Zoiper",
        "v=0\r\no=- 1 1 IN IP4 192.0.2.20\r\n",
    );
    let (a, b) = invite.as_bytes().split_at(invite.len() / 2);
    let t = T0 + 2_000 * MS;
    p.push(tcp4(t, 999, true, b""));
    p.push(tcp4(t + 100 * MS, 1000, false, two.as_bytes()));
    let seq = 1000 + two.len() as u32;
    p.push(tcp4(t + 200 * MS, seq, false, a));
    p.push(tcp4(t + 300 * MS, seq + a.len() as u32, false, b));
    p.sort_by_key(|p| p.ts_us);
    p
}

/// Every request the scenario sends, and from how many sources.
const REQUESTS: u64 = FLOOD + 30 + 10 + 3;
const SOURCES: u64 = 6;

#[derive(Clone, Copy, Debug)]
pub(crate) enum Link {
    Ethernet,
    Sll,
    Sll2,
    Raw,
    Null,
}

impl Link {
    fn datalink(self) -> DataLink {
        match self {
            Link::Ethernet => DataLink::ETHERNET,
            Link::Sll => DataLink::LINUX_SLL,
            Link::Sll2 => DataLink::LINUX_SLL2,
            Link::Raw => DataLink::RAW,
            Link::Null => DataLink::NULL,
        }
    }

    /// The IP packet in this link's frame, as tcpdump records it.
    fn frame(self, ip: &[u8]) -> Vec<u8> {
        let v6 = ip[0] >> 4 == 6;
        let et: [u8; 2] = if v6 { [0x86, 0xdd] } else { [0x08, 0x00] };
        let mut f = match self {
            Link::Ethernet => [[0u8; 12].as_slice(), &et].concat(),
            // Packet type, ARPHRD_LOOPBACK, address length and address, protocol.
            Link::Sll => [&[0, 0, 3, 4, 0, 6][..], &[0; 8], &et].concat(),
            // Protocol, reserved, interface index, ARPHRD, packet type, address.
            Link::Sll2 => [&et[..], &[0, 0, 0, 0, 0, 1, 3, 4, 0, 6], &[0; 8]].concat(),
            Link::Raw => Vec::new(),
            // The address family in the capturing host's byte order (Linux).
            Link::Null => (if v6 { 10u32 } else { 2u32 }).to_le_bytes().to_vec(),
        };
        f.extend_from_slice(ip);
        f
    }
}

pub(crate) fn write_pcap(path: &PathBuf, link: Link, pkts: &[Pkt]) {
    let header = PcapHeader {
        datalink: link.datalink(),
        ..PcapHeader::default()
    };
    let mut w = PcapWriter::with_header(std::fs::File::create(path).unwrap(), header).unwrap();
    for p in pkts {
        let f = link.frame(&p.ip);
        w.write_packet(&PcapPacket::new(
            Duration::from_micros(p.ts_us),
            f.len() as u32,
            &f,
        ))
        .unwrap();
    }
}

/// pcapng with nanosecond timestamps (if_tsresol 9), as tcpdump writes.
fn write_pcapng(path: &PathBuf, link: Link, pkts: &[Pkt]) {
    let mut w = PcapNgWriter::new(std::fs::File::create(path).unwrap()).unwrap();
    w.write_pcapng_block(InterfaceDescriptionBlock {
        linktype: link.datalink(),
        snaplen: 262_144,
        options: vec![InterfaceDescriptionOption::IfTsResol(9)],
    })
    .unwrap();
    for p in pkts {
        let f = link.frame(&p.ip);
        w.write_pcapng_block(EnhancedPacketBlock {
            interface_id: 0,
            timestamp: Duration::from_micros(p.ts_us),
            original_len: f.len() as u32,
            data: Cow::Owned(f),
            options: vec![],
        })
        .unwrap();
    }
}

const CFG: &str = r#"
# The thresholds under test.
loadmodule "rsec.so"
modparam("tm", "fr_timeout", 5)
modparam("auth_db", "calculate_ha1", yes)
/* modparam("rsec", "pike_density", 1) */
modparam("rsec", "pike_density", 30)   # the default, said aloud
modparam("rsec", "pike_ban_time", 300)
"#;

fn assert_flooder_only(r: &Value, what: &str) {
    let sources = r["sources"].as_array().unwrap();
    assert_eq!(sources.len(), 1, "{what}: {r:#}");
    let s = &sources[0];
    assert_eq!(s["address"], "192.0.2.66", "{what}");
    assert_eq!(s["rule"], "pike", "{what}");
    assert_eq!(s["requests_at_ban"], PIKE_DENSITY + 1, "{what}");
    assert_eq!(s["requests"], FLOOD, "{what}");
    assert_eq!(s["lost"], FLOOD - PIKE_DENSITY, "{what}");
    assert_eq!(s["ban_length_s"], 300, "{what}");
    assert_eq!(s["profile"], "default", "{what}");
    assert_eq!(s["tenant"], "-", "{what}");
    // The 31st request, 10 ms apart from 0.1 s on.
    assert_eq!(s["first_ban_s"].as_f64(), Some(0.4), "{what}");
    assert_eq!(s["first_ban_utc"], "2023-11-14T22:13:20.400000Z", "{what}");
    let sum = &r["summary"];
    assert_eq!(sum["requests"], REQUESTS, "{what}");
    assert_eq!(sum["sources"], SOURCES, "{what}");
    assert_eq!(sum["bans_by_rule"]["pike"], 1, "{what}");
    assert_eq!(sum["requests_lost"], FLOOD - PIKE_DENSITY, "{what}");
    let cap = &r["capture"];
    assert_eq!(cap["tcp_messages"], 3, "{what}: {cap:#}");
    assert_eq!(cap["sip_messages"], REQUESTS + 30, "{what}: {cap:#}");
}

#[test]
fn pcap_and_pcapng_ban_exactly_the_flooder() {
    let d = dir("flooder");
    let cfg = d.join("opensips.cfg");
    std::fs::write(&cfg, CFG).unwrap();
    let pkts = scenario();
    for (ng, link) in [
        (false, Link::Ethernet),
        (true, Link::Ethernet),
        (true, Link::Sll2),
        (false, Link::Sll),
        (false, Link::Raw),
        (true, Link::Null),
    ] {
        let what = format!("{} {link:?}", if ng { "pcapng" } else { "pcap" });
        let path = d.join(format!("{link:?}.{}", if ng { "pcapng" } else { "pcap" }));
        if ng {
            write_pcapng(&path, link, &pkts);
        } else {
            write_pcap(&path, link, &pkts);
        }
        let r = json(&["--cfg", cfg.to_str().unwrap(), path.to_str().unwrap()]);
        assert_eq!(r["format"], if ng { "pcapng" } else { "pcap" });
        assert_eq!(r["parameters"][0], "pike_density=30");
        assert_flooder_only(&r, &what);
    }

    // The same as text.
    let path = d.join("Ethernet.pcap");
    let out = replay(&["--set", "pike_density=30", path.to_str().unwrap()]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let row = text
        .lines()
        .find(|l| l.starts_with("192.0.2.66 "))
        .unwrap_or_else(|| panic!("no row for the flooder:\n{text}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        cells,
        [
            "192.0.2.66",
            "192.0.2.66",
            "pike",
            "0.4s",
            "2023-11-14T22:13:20.400000Z",
            "31",
            "300s",
            "1",
            "300",
            "270",
            "default",
            "-"
        ],
        "{text}"
    );
    assert!(text.contains("requests lost: 270"), "{text}");
    assert!(
        text.contains(&format!("{REQUESTS} requests from {SOURCES} sources")),
        "{text}"
    );
}

#[test]
fn compare_two_densities() {
    let d = dir("compare");
    let path = d.join("c.pcap");
    write_pcap(&path, Link::Ethernet, &scenario());
    let p = path.to_str().unwrap();

    let r = json(&[
        "--set",
        "pike_density=50",
        "--compare-set",
        "pike_density=150",
        p,
    ]);
    let diff = &r["diff"];
    assert_eq!(diff["only_a"], serde_json::json!([]), "{diff:#}");
    assert_eq!(diff["only_b"], serde_json::json!([]), "{diff:#}");
    let differ = diff["differ"].as_array().unwrap();
    assert_eq!(differ.len(), 1, "{diff:#}");
    assert_eq!(differ[0]["address"], "192.0.2.66");
    assert_eq!(differ[0]["a"]["requests_at_ban"], 51);
    assert_eq!(differ[0]["a"]["lost"], FLOOD - 50);
    assert_eq!(differ[0]["b"]["requests_at_ban"], 151);
    assert_eq!(differ[0]["b"]["lost"], FLOOD - 150);
    assert_eq!(r["a"]["summary"]["requests_lost"], FLOOD - 50);
    assert_eq!(r["b"]["summary"]["requests_lost"], FLOOD - 150);
    assert_eq!(r["b"]["parameters"][0], "pike_density=150");

    // The same B from a file, as `--compare FILE`.
    let b = d.join("b.cfg");
    std::fs::write(&b, "modparam(\"rsec\", \"pike_density\", 150)\n").unwrap();
    let r = json(&[
        "--set",
        "pike_density=50",
        "--compare",
        b.to_str().unwrap(),
        p,
    ]);
    assert_eq!(r["diff"]["differ"][0]["b"]["requests_at_ban"], 151, "{r:#}");

    // A density the flood never reaches bans it only in A.
    let out = replay(&[
        "--set",
        "pike_density=50",
        "--compare-set",
        "pike_density=400",
        p,
    ]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("B: A with pike_density=400"), "{text}");
    let only_a = text
        .split("banned only by A: 1\n")
        .nth(1)
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        only_a.starts_with("  192.0.2.66  pike at 0.6s, request 51"),
        "{text}"
    );
    assert!(text.contains("banned only by B: 0"), "{text}");
    let lost = text
        .lines()
        .find(|l| l.starts_with("requests lost"))
        .unwrap();
    assert_eq!(
        lost.split_whitespace().collect::<Vec<_>>(),
        ["requests", "lost", "250", "0", "-250"]
    );
}

#[test]
fn sip_log_input() {
    let d = dir("siplog");
    let mut log = String::from("# A SIP log written by hand.\n\n");
    let mut entry = |t: u64, src: &str, dst: &str, msg: &str| {
        log.push_str(&format!(
            "# {}.{:06} {src} -> {dst}\n{msg}",
            t / 1_000_000,
            t % 1_000_000
        ));
    };
    let mut ts = Vec::new();
    // An IPv6 flood: 100 OPTIONS in one second.
    for n in 0..100 {
        ts.push((T0 + n * 10 * MS, 0, n));
    }
    // Wrong passwords: 403 after each REGISTER, once a second.
    for n in 0..8 {
        ts.push((T0 + n * 1000 * MS, 1, n));
    }
    // A scanner's single request.
    ts.push((T0 + 5 * MS, 2, 0));
    ts.sort();
    for (t, kind, n) in ts {
        match kind {
            0 => entry(
                t,
                "[2001:db8::66]:5060",
                "[2001:db8::1]:5060",
                &request("OPTIONS", "[2001:db8::66]", n, "x", ""),
            ),
            1 => {
                entry(
                    t,
                    "192.0.2.7:5060",
                    "198.51.100.1:5060",
                    &request("REGISTER", "192.0.2.7", n, "Yealink", ""),
                );
                let reply = ok("192.0.2.7", n, "REGISTER").replace("200 OK", "403 Forbidden");
                entry(t + MS, "198.51.100.1:5060", "192.0.2.7:5060", &reply);
            }
            _ => entry(
                t,
                "203.0.113.9:5070",
                "198.51.100.1:5060",
                &request("OPTIONS", "203.0.113.9", 1, "friendly-scanner", ""),
            ),
        }
    }
    let path = d.join("sip.log");
    std::fs::write(&path, log).unwrap();
    let r = json(&[path.to_str().unwrap()]);
    assert_eq!(r["format"], "siplog");
    let by = |ip: &str| {
        r["sources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["address"] == ip)
            .unwrap_or_else(|| panic!("{ip} not banned: {r:#}"))
            .clone()
    };
    let flood = by("2001:db8::66");
    assert_eq!(flood["rule"], "pike");
    assert_eq!(flood["banned_as"], "2001:db8::/64");
    assert_eq!(flood["requests_at_ban"], 31);
    assert_eq!(flood["lost"], 70);
    let auth = by("192.0.2.7");
    assert_eq!(auth["rule"], "auth");
    // auth_fail_threshold 5: the fifth 403 bans; the sixth REGISTER on is lost.
    assert_eq!(auth["requests_at_ban"], 5);
    assert_eq!(auth["lost"], 3);
    assert_eq!(auth["ban_length_s"], 900);
    let scanner = by("203.0.113.9");
    assert_eq!(scanner["rule"], "scanner");
    assert_eq!(scanner["requests_at_ban"], 1);
    assert_eq!(r["sources"].as_array().unwrap().len(), 3);
    let sum = &r["summary"];
    assert_eq!(sum["auth_failures"], 5);
    assert_eq!(sum["replies_to_lost_requests"], 3);

    // Without the scanner check, and with no status counted, only the flood.
    let r = json(&[
        "--no-scanner",
        "--auth-fail-on",
        "none",
        path.to_str().unwrap(),
    ]);
    assert_eq!(r["sources"].as_array().unwrap().len(), 1, "{r:#}");
}

fn assert_input_error(path: &std::path::Path, args: &[&str], says: &str) {
    let p = path.to_str().unwrap();
    let out = replay(&[args, &[p]].concat());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{p}: {err}");
    assert!(err.contains(p), "{p}: the error names the file: {err}");
    assert!(err.contains(says), "{p}: expected '{says}' in: {err}");
    assert!(!err.contains("panicked"), "{p}: {err}");
    assert!(out.stdout.is_empty(), "{p}: no report on an error");
}

#[test]
fn malformed_input_is_a_clear_error() {
    let d = dir("malformed");
    let garbage = d.join("garbage.bin");
    std::fs::write(&garbage, b"\x01\x02\x03\x04 not a capture at all").unwrap();
    assert_input_error(&garbage, &[], "not a pcap, pcapng or SIP log");

    // A packet header promising more bytes than the file has.
    let good = d.join("good.pcap");
    write_pcap(&good, Link::Ethernet, &scenario()[..3]);
    let mut bytes = std::fs::read(&good).unwrap();
    bytes.truncate(24 + 16 + 10);
    let cut = d.join("cut.pcap");
    std::fs::write(&cut, &bytes).unwrap();
    assert_input_error(&cut, &[], "packet 1: the file ends inside it");

    // A pcapng block whose length is nonsense.
    let ng = d.join("good.pcapng");
    write_pcapng(&ng, Link::Ethernet, &scenario()[..3]);
    let mut bytes = std::fs::read(&ng).unwrap();
    let shb_len = u32::from_le_bytes(bytes[4..8].try_into().unwrap()) as usize;
    bytes[shb_len + 4..shb_len + 8].copy_from_slice(&7u32.to_le_bytes());
    let bad = d.join("bad.pcapng");
    std::fs::write(&bad, &bytes).unwrap();
    assert_input_error(&bad, &[], "block 1");

    // A link type it does not read.
    // (pcap-file writes big-endian files.)
    let mut bytes = std::fs::read(&good).unwrap();
    assert_eq!(bytes[..4], [0xa1, 0xb2, 0xc3, 0xd4]);
    bytes[20..24].copy_from_slice(&147u32.to_be_bytes());
    let user = d.join("user0.pcap");
    std::fs::write(&user, &bytes).unwrap();
    assert_input_error(&user, &[], "link type 147");

    let log = d.join("bad.log");
    std::fs::write(
        &log,
        "# 1700000000.5 192.0.2.1 -> 192.0.2.2:5060\nOPTIONS sip:x SIP/2.0\r\n\r\n",
    )
    .unwrap();
    assert_input_error(&log, &[], "line 1");

    assert_input_error(&d.join("missing.pcap"), &[], "No such file");

    let cfg = d.join("bad.cfg");
    std::fs::write(&cfg, "\nmodparam(\"rsec\", \"pike_density\", lots)\n").unwrap();
    let out = replay(&["--cfg", cfg.to_str().unwrap(), good.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("{}:2", cfg.display())) && err.contains("pike_density"),
        "{err}"
    );
}

#[test]
fn usage_errors_exit_2() {
    let d = dir("usage");
    let good = d.join("good.pcap");
    write_pcap(&good, Link::Ethernet, &scenario()[..3]);
    let g = good.to_str().unwrap();
    for (args, says) in [
        (vec!["--bogus", g], "--bogus"),
        (vec![], "no INPUT"),
        (vec!["--set", "no_such_param=1", g], "no_such_param"),
        (vec!["--set", "pike_density=0", g], "pike_density"),
        (
            vec!["--compare-set", "pike_density", g],
            "--compare-set 'pike_density'",
        ),
        (vec!["--auth-fail-on", "403,99", g], "'99'"),
        (vec![g, g], "one input only"),
        (vec!["--cfg"], "--cfg needs a file"),
    ] {
        let out = replay(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: expected '{says}' in: {err}");
    }
    let help = replay(&["--help"]);
    assert!(help.status.success());
    let help = String::from_utf8(help.stdout).unwrap();
    assert!(help.contains("# <unix-seconds.micros> <src-ip>:<port> -> <dst-ip>:<port>"));
    assert!(help.contains("--auth-fail-on"));
}

/// A minimal XML check: every tag closed in order, attributes quoted.
fn well_formed(xml: &str) -> Result<(), String> {
    let mut stack: Vec<&str> = Vec::new();
    let mut rest = xml.trim_start();
    rest = rest.strip_prefix("<?xml").ok_or("no XML declaration")?;
    rest = &rest[rest.find("?>").ok_or("declaration not closed")? + 2..];
    while let Some(lt) = rest.find('<') {
        if rest[..lt].contains('>') {
            return Err(format!(
                "stray '>' before {}",
                &rest[lt..][..40.min(rest.len() - lt)]
            ));
        }
        let gt = rest[lt..].find('>').ok_or("tag not closed")? + lt;
        let tag = &rest[lt + 1..gt];
        if tag.matches('"').count() % 2 != 0 || tag.contains('<') {
            return Err(format!("bad tag <{tag}>"));
        }
        if let Some(name) = tag.strip_prefix('/') {
            let open = stack.pop().ok_or(format!("</{name}> closes nothing"))?;
            if open != name {
                return Err(format!("<{open}> closed by </{name}>"));
            }
        } else if !tag.ends_with('/') {
            stack.push(tag.split_whitespace().next().ok_or("empty tag")?);
        }
        rest = &rest[gt + 1..];
    }
    if !stack.is_empty() {
        return Err(format!("never closed: {stack:?}"));
    }
    Ok(())
}

#[test]
fn picture_is_well_formed_svg() {
    let d = dir("picture");
    let path = d.join("p.pcapng");
    write_pcapng(&path, Link::Ethernet, &scenario());
    let svg = d.join("p.svg");
    let out = replay(&["--picture", svg.to_str().unwrap(), path.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&svg).unwrap();
    well_formed(&text).unwrap_or_else(|e| panic!("{e}:\n{text}"));
    assert!(text.contains("<svg xmlns=\"http://www.w3.org/2000/svg\""));
    // The ban's marker, labelled with its rule, in the flooder's row (the
    // busiest, so the first).
    let rows: Vec<&str> = text.split("<g class=\"row\">").skip(1).collect();
    assert_eq!(rows.len(), SOURCES as usize, "one row per source");
    assert!(rows[0].contains("192.0.2.66"));
    let marker = rows[0]
        .split("<g class=\"ban-start\">")
        .nth(1)
        .expect("a ban marker");
    assert!(marker.contains(">pike</text>"), "{marker}");
    assert!(rows[0].contains("class=\"lost\"") && rows[0].contains("class=\"passed\""));
    assert!(!rows[1..].iter().any(|r| r.contains("ban-start")));
    assert!(text.contains("ban in force"), "a legend");

    // Fewer rows: the others share the last one.
    let out = replay(&[
        "--picture",
        svg.to_str().unwrap(),
        "--picture-rows",
        "2",
        path.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let text = std::fs::read_to_string(&svg).unwrap();
    well_formed(&text).unwrap();
    assert!(text.contains("4 other sources"));
}

/// The sample in docs/replay/ (a capture made by the live replay test,
/// see tools/replay-sample.sh) still gives the report and comparison the
/// docs show.
#[test]
fn the_shipped_sample_replays_as_its_report_says() {
    let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/replay");
    for (args, expected) in [
        (&["--cfg", "rsec.cfg", "attack.pcap"][..], "report.txt"),
        (
            &[
                "--cfg",
                "rsec.cfg",
                "--compare-set",
                "pike_density=60",
                "attack.pcap",
            ][..],
            "compare.txt",
        ),
    ] {
        let out = Command::new(BIN)
            .args(args)
            .current_dir(&docs)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let want = std::fs::read_to_string(docs.join(expected)).unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), want, "{expected}");
    }
}
