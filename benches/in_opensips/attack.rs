//! The attack scenario: one source floods while RSEC_BENCH_ATTACK_LEGIT
//! legitimate sources each send RSEC_BENCH_ATTACK_LEGIT_RATE requests per
//! second, first with pike, then with rsec, both at the same density
//! (RSEC_BENCH_DENSITY requests per RSEC_BENCH_UNIT seconds).
//!
//! The two do not mean the same by it. pike counts hits per address in
//! fixed periods of `sampling_time_unit` driven by its timer and refuses a
//! source while it is over `reqs_density_per_unit`, letting it in again
//! once it calms down; it has no ban. rsec counts in a sliding window of
//! `pike_sampling_time` and bans the request that exceeds `pike_density`
//! for `pike_ban_time` (300 s here), so exactly `pike_density` attack
//! requests are answered 200.
//!
//! Timeline: 2 s of legitimate traffic alone, RSEC_BENCH_ATTACK_SECS of
//! flood, 2 s alone again. Every reply is counted by the 100 ms interval
//! its request was sent in; OpenSIPS's CPU is sampled every 100 ms. Both
//! go to `under_attack_<module>.csv`, drawn by benches/plot/under_attack.gp.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::cpu;
use crate::knobs::Knobs;
use crate::report::{self, Table};
use crate::setup::{self, Limits, Setup};
use crate::support::flood::{nth_source, Flood};
use crate::support::opensips::{find_bin, Env, TestDir, MANIFEST_DIR};

const LEGIT: u8 = 1;
const ATTACK: u8 = 2;
const LEGIT_BASE: Ipv4Addr = Ipv4Addr::new(127, 77, 0, 1);
const ATTACKER: Ipv4Addr = Ipv4Addr::new(127, 66, 0, 1);
const CALM: Duration = Duration::from_secs(2);
const SLOT: Duration = Duration::from_millis(100);

struct Outcome {
    setup: Setup,
    legit_sent: u64,
    legit_ok: u64,
    /// Legitimate requests sent while the flood ran, and those answered 200.
    legit_sent_during: u64,
    legit_ok_during: u64,
    attack_sent: u64,
    attack_200: u64,
    attack_403: u64,
    attack_lost: u64,
    /// OpenSIPS CPU over the flood, in percent of one core.
    cpu_pct_during: f64,
    /// Requests answered while the flood ran (both kinds), per second.
    answered_per_s_during: f64,
    csv: String,
}

fn one(env: &Env, k: &Knobs, setup: Setup) -> Outcome {
    let name = format!("attack_{}", setup.name());
    let dir = TestDir::new(&name);
    let limits = Limits::scenario(k);
    let (os, _mi) = setup::start(env, &dir, &name, setup, k.workers, k.shm_mb, &limits);
    let pids = cpu::group_pids(os.pid().expect("running"));
    let mut flood = Flood::new(os.port, SLOT).expect("flood socket");
    let t0 = Instant::now();
    let sampler = cpu::Sampler::start(pids, SLOT, t0);
    let (a0, a1) = (CALM, CALM + k.attack_secs);
    let end = a1 + CALM;
    let legit_rate = k.legit as u64 * k.legit_rate;
    let (mut li, mut ai) = (0u64, 0u64);
    let mut batch = Vec::with_capacity(64);
    loop {
        let el = t0.elapsed();
        if el >= end {
            break;
        }
        let mut sent = false;
        let due =
            (el.as_micros() as u64 * legit_rate / 1_000_000 + 1).min(legit_rate * end.as_secs());
        batch.clear();
        while li < due {
            batch.push((nth_source(LEGIT_BASE, k.legit, li), LEGIT));
            li += 1;
        }
        if !batch.is_empty() {
            flood.send(&batch);
            sent = true;
        }
        if el >= a0 && el < a1 {
            let n = if k.attack_rate > 0 {
                ((el - a0).as_micros() as u64 * k.attack_rate / 1_000_000 + 1).saturating_sub(ai)
            } else {
                let outstanding = flood.sent_total().saturating_sub(flood.answered());
                let room = k.window.saturating_sub(outstanding);
                if room >= (k.window / 4).clamp(1, 64) {
                    room
                } else {
                    0
                }
            }
            .min(64);
            if n > 0 {
                batch.clear();
                batch.extend((0..n).map(|_| (ATTACKER, ATTACK)));
                flood.send(&batch);
                ai += n;
                sent = true;
            }
        }
        if !sent {
            // Not spinning: OpenSIPS needs the cores more than we do.
            std::thread::sleep(Duration::from_micros(100));
        }
    }
    flood.drain(Duration::from_secs(1));
    let samples = sampler.finish();
    let rep = flood.finish(Duration::ZERO);
    let t = &rep.tally;

    let slot_of = |d: Duration| (d.as_millis() / SLOT.as_millis()) as u32;
    let (s0, s1) = (slot_of(a0), slot_of(a1));
    let sent_in =
        |class: u8, slot: u32| rep.sent_timeline.get(&(class, slot)).copied().unwrap_or(0);
    let got_in = |class: u8, slot: u32, code: u16| {
        t.timeline
            .get(&(class, slot))
            .and_then(|m| m.get(&code))
            .copied()
            .unwrap_or(0)
    };
    let mut csv = String::from(
        "t_s,cpu_pct,legit_sent,legit_ok,legit_success_pct,attack_sent,attack_200,attack_403\n",
    );
    for w in samples.windows(2) {
        let ((ta, ca), (tb, cb)) = (w[0], w[1]);
        let slot = slot_of(ta + SLOT / 2);
        let cpu = 100.0 * cb.saturating_sub(ca).as_secs_f64() / (tb - ta).as_secs_f64();
        let (ls, lo) = (sent_in(LEGIT, slot), got_in(LEGIT, slot, 200));
        let pct = if ls > 0 {
            format!("{:.1}", 100.0 * lo as f64 / ls as f64)
        } else {
            String::new()
        };
        csv.push_str(&format!(
            "{:.2},{cpu:.1},{ls},{lo},{pct},{},{},{}\n",
            ta.as_secs_f64(),
            sent_in(ATTACK, slot),
            got_in(ATTACK, slot, 200),
            got_in(ATTACK, slot, 403),
        ));
    }
    let cpu_at = |d: Duration| {
        samples
            .iter()
            .min_by_key(|(t, _)| t.as_micros().abs_diff(d.as_micros()))
            .map_or(Duration::ZERO, |s| s.1)
    };
    let cpu_pct_during =
        100.0 * cpu_at(a1).saturating_sub(cpu_at(a0)).as_secs_f64() / (a1 - a0).as_secs_f64();
    let answered_during: u64 = (s0..s1)
        .flat_map(|s| {
            [LEGIT, ATTACK].map(|c| {
                t.timeline
                    .get(&(c, s))
                    .map_or(0, |m| m.values().sum::<u64>())
            })
        })
        .sum();
    let legit_sent_during: u64 = (s0..s1).map(|s| sent_in(LEGIT, s)).sum();
    let legit_ok_during: u64 = (s0..s1).map(|s| got_in(LEGIT, s, 200)).sum();
    let o = Outcome {
        setup,
        legit_sent: rep.sent.get(&LEGIT).copied().unwrap_or(0),
        legit_ok: t.count(LEGIT, 200),
        legit_sent_during,
        legit_ok_during,
        attack_sent: rep.sent.get(&ATTACK).copied().unwrap_or(0),
        attack_200: t.count(ATTACK, 200),
        attack_403: t.count(ATTACK, 403),
        attack_lost: rep.sent.get(&ATTACK).copied().unwrap_or(0) - t.answered(ATTACK),
        cpu_pct_during,
        answered_per_s_during: answered_during as f64 / (a1 - a0).as_secs_f64(),
        csv,
    };
    eprintln!(
        "[attack] {:5}: legit {}/{} ok ({} during the flood: {}/{}), attacker {} sent: {}x200 {}x403 {} lost, CPU {:.0}% of a core during the flood",
        setup.name(),
        o.legit_ok,
        o.legit_sent,
        pct(o.legit_ok_during, o.legit_sent_during),
        o.legit_ok_during,
        o.legit_sent_during,
        o.attack_sent,
        o.attack_200,
        o.attack_403,
        o.attack_lost,
        o.cpu_pct_during
    );
    o
}

fn pct(a: u64, b: u64) -> String {
    if b == 0 {
        "–".into()
    } else {
        format!("{:.2}%", 100.0 * a as f64 / b as f64)
    }
}

pub fn run(env: &Env, k: &Knobs) {
    let outcomes: Vec<Outcome> = [Setup::Pike, Setup::Rsec]
        .iter()
        .map(|s| one(env, k, *s))
        .collect();
    let mut t = Table::new(&[
        "module",
        "legit success",
        "legit success during the flood",
        "attack requests sent",
        "attack answered 200",
        "attack 403",
        "attack unanswered",
        "OpenSIPS CPU during the flood (% of a core)",
        "answered/s during the flood",
        "CPU µs per request during the flood",
    ]);
    for o in &outcomes {
        t.row(vec![
            o.setup.name().into(),
            format!(
                "{} ({}/{})",
                pct(o.legit_ok, o.legit_sent),
                o.legit_ok,
                o.legit_sent
            ),
            pct(o.legit_ok_during, o.legit_sent_during),
            o.attack_sent.to_string(),
            o.attack_200.to_string(),
            o.attack_403.to_string(),
            o.attack_lost.to_string(),
            format!("{:.0}", o.cpu_pct_during),
            format!("{:.0}", o.answered_per_s_during),
            format!(
                "{:.1}",
                o.cpu_pct_during * 1e4 / o.answered_per_s_during.max(1.0)
            ),
        ]);
        report::write(
            &k.out,
            &format!("under_attack_{}.csv", o.setup.name()),
            &o.csv,
        );
    }
    let md = format!(
        "Under attack: one source flooding ({}) for {:.0} s while {} sources send {} req/s each; density {} requests per {} s for both \
         (pike: refused while over the density in its sampling unit; rsec: banned for 300 s at request {}), {} UDP workers.\n\n{}",
        if k.attack_rate == 0 { format!("as fast as OpenSIPS answers, {} in flight", k.window) } else { format!("{} req/s", k.attack_rate) },
        k.attack_secs.as_secs_f64(),
        k.legit,
        k.legit_rate,
        k.density,
        k.unit,
        k.density + 1,
        k.workers,
        t.markdown()
    );
    println!("\n{md}");
    report::write(&k.out, "under_attack.md", &md);
    if k.plot {
        plot(k);
    }
}

/// Draws the PNG with gnuplot, when installed.
fn plot(k: &Knobs) {
    let Some(gnuplot) = find_bin("GNUPLOT_BIN", "gnuplot", "/usr/bin/gnuplot") else {
        eprintln!(
            "no gnuplot: {} not drawn (the CSVs are in {})",
            k.png.display(),
            k.out.display()
        );
        return;
    };
    if let Some(d) = k.png.parent() {
        let _ = std::fs::create_dir_all(d);
    }
    let script = Path::new(MANIFEST_DIR).join("benches/plot/under_attack.gp");
    let vars = format!(
        "pike='{}'; rsec='{}'; out='{}'; a0={}; a1={}; what='{} legitimate sources at {} req/s'",
        k.out.join("under_attack_pike.csv").display(),
        k.out.join("under_attack_rsec.csv").display(),
        k.png.display(),
        CALM.as_secs_f64(),
        (CALM + k.attack_secs).as_secs_f64(),
        k.legit,
        k.legit_rate
    );
    match Command::new(gnuplot)
        .arg("-e")
        .arg(&vars)
        .arg(&script)
        .status()
    {
        Ok(s) if s.success() => eprintln!("wrote {}", k.png.display()),
        Ok(s) => eprintln!("gnuplot {}: {s}", script.display()),
        Err(e) => eprintln!("gnuplot: {e}"),
    }
}
