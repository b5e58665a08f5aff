//! The many-source sender of the benchmarks ([`support::flood`]) against a
//! real OpenSIPS: each datagram leaves from the address asked for (OpenSIPS
//! sees it as `$si`), every reply comes back to the one socket, and the
//! replies are counted by class and status code.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use crate::support::flood::{nth_source, Flood};
use crate::support::opensips::{self, tally, OpenSips, TestDir};

const CFG: &str = include_str!("../cfg/sources.cfg");

#[test]
fn every_datagram_leaves_from_its_own_source() {
    let Some(env) = opensips::env("flood_sender", false) else {
        return;
    };
    let _heavy = opensips::heavy();
    let dir = TestDir::new("flood_sender");
    let os = OpenSips::start(env, &dir, "sources", CFG, &[]);
    let base = Ipv4Addr::new(127, 44, 0, 0);
    let mut flood = Flood::new(os.port, Duration::from_millis(100)).expect("flood socket");
    assert_eq!(flood.interval(), Duration::from_millis(100));
    // 50 sources, one request each at 1,000/s, class 1 ...
    flood.paced(1000, 50, |i| (nth_source(base, 50, i), 1));
    // ... then 20 more requests from the first 10 sources, class 2, as fast
    // as a window of 4 allows (127.44.0.7 gets its 403s here too).
    let mut n = 0;
    flood.saturate(4, Duration::from_millis(20), |i| {
        n += 1;
        (nth_source(base, 10, i), 2)
    });
    assert_eq!(
        flood.drain(Duration::from_secs(2)),
        0,
        "a request went unanswered"
    );
    assert!(flood.answered() >= 50);
    let report = flood.finish(Duration::from_secs(2));
    assert_eq!(
        report.sent_total(),
        report.answered_total(),
        "{}",
        report.codes()
    );
    assert_eq!(report.sent[&1], 50);
    assert_eq!(report.tally.answered(1), 50);
    assert_eq!(report.tally.count(1, 403), 1, "127.44.0.7 is refused");
    assert_eq!(
        report.code_total(200) + report.code_total(403),
        report.sent_total()
    );
    assert_eq!(report.tally.strays, 0);
    assert!(report.elapsed > Duration::ZERO);
    // Loopback at 1,000/s never fills the local queue.
    assert_eq!(report.send_errors, 0);
    assert!(n > 0 && report.sent[&2] == n);
    let per_interval: u64 = report.sent_timeline.values().sum();
    assert_eq!(per_interval, report.sent_total());
    let answered_per_interval: u64 = report
        .tally
        .timeline
        .values()
        .flat_map(|m| m.values())
        .sum();
    assert_eq!(answered_per_interval, report.answered_total());

    let events = os.wait_events(report.sent_total() as usize, |e| !e.get("si").is_empty());
    let seen: BTreeSet<&str> = events.iter().map(|e| e.get("si")).collect();
    let expected: BTreeSet<String> = (0..50)
        .map(|i| nth_source(base, 50, i).to_string())
        .collect();
    assert_eq!(
        seen,
        expected.iter().map(String::as_str).collect::<BTreeSet<_>>(),
        "OpenSIPS saw other sources than those sent from"
    );
    // One socket: every request came from the same port.
    assert_eq!(tally(&events, "sp").len(), 1, "{:?}", tally(&events, "sp"));
    // The workers that logged belong to this instance's process group, the
    // one the benchmarks read CPU times from.
    let leader = os.pid().expect("OpenSIPS is running");
    for w in workers_of(&events) {
        let stat = std::fs::read_to_string(format!("/proc/{w}/stat")).unwrap();
        let pgrp: u32 = stat
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .nth(2)
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(pgrp, leader, "worker {w}");
    }
}

fn workers_of(events: &[crate::support::opensips::Event]) -> BTreeSet<u32> {
    events.iter().map(|e| e.pid).collect()
}
