//! OpenSIPS's own flood modules and rsec side by side inside a real
//! OpenSIPS 3.6: `make bench-opensips` (or `cargo bench --bench
//! in_opensips`). Three scenarios, chosen with RSEC_BENCH_SCENARIO (a comma
//! list of `cost`, `attack`, `million`, or `all`, the default):
//!
//! * `cost` ([`cost`]): CPU per request of four setups (no check, pike,
//!   pike + ratelimit, rsec) with traffic that is never refused, paced and
//!   saturated, from few and from many sources; with perf, the share of it
//!   spent inside each module's own code.
//! * `attack` ([`attack`]): one source flooding while 50 legitimate ones
//!   send at a normal rate; pike and rsec at the same density; a time
//!   series of OpenSIPS's CPU and the legitimate success rate, plotted.
//! * `million` ([`million`]): one request from each of a million sources;
//!   rsec's fixed mapping against pike's growth in OpenSIPS shared memory
//!   and its fail-open point.
//!
//! Everything is sized by environment variables (see [`knobs`]); results go
//! to stdout and to `target/bench-opensips/` (markdown fragments and CSV).
//! Needs OpenSIPS with httpd, mi_http, pike and ratelimit; without it,
//! prints one SKIP line (or fails, with RSEC_REQUIRE_OPENSIPS=1). Traffic
//! goes only to 127.0.0.1, from 127.0.0.0/8 sources.

// The integration tests' support module. The benchmark uses a part of it;
// the test binary, which uses all of it, is where dead code is caught.
#[path = "../../tests/it/support/mod.rs"]
#[allow(dead_code)]
mod support;

mod attack;
mod cost;
mod cpu;
mod knobs;
mod million;
mod perf;
mod report;
mod setup;

fn main() {
    // `cargo bench` passes --bench; nothing here takes arguments.
    let Some(env) = support::opensips::env("in_opensips benchmark", false) else {
        return;
    };
    for m in ["pike.so", "ratelimit.so", "httpd.so", "mi_http.so"] {
        if !env.mpath.join(m).is_file() {
            support::skip(
                "in_opensips benchmark",
                &format!("no {m} in {}", env.mpath.display()),
            );
            return;
        }
    }
    let k = knobs::Knobs::from_env();
    println!("{}", k.describe());
    std::fs::create_dir_all(&k.out).expect("create the output directory");
    if k.scenario("cost") {
        cost::run(env, &k);
    }
    if k.scenario("attack") {
        attack::run(env, &k);
    }
    if k.scenario("million") {
        million::run(env, &k);
    }
    println!("results in {}", k.out.display());
}
