//! What the tests share: the OpenSIPS harness, sipp runs, the SIP OPTIONS
//! client, the many-source flood sender, the MI client, a private MariaDB, and [`skip`].

pub mod flood;
pub mod mariadb;
pub mod mi;
pub mod opensips;
pub mod sip;
pub mod sipp;

/// The one way a test does without something the machine lacks (OpenSIPS,
/// sipp, opensips-cli, MariaDB, an IPv6 loopback): prints
/// `SKIP: <test>: <why>`, and the test then returns (and passes). With
/// `RSEC_REQUIRE_OPENSIPS=1`, on a machine that is meant to have all of it,
/// it panics with the same words instead: a skip there is a failure.
pub fn skip(test: &str, why: &str) {
    if std::env::var_os("RSEC_REQUIRE_OPENSIPS").is_some_and(|v| !v.is_empty() && v != "0") {
        panic!("{test}: {why} (RSEC_REQUIRE_OPENSIPS is set: nothing may be skipped)");
    }
    eprintln!("SKIP: {test}: {why}");
}
