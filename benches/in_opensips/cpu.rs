//! CPU time of one OpenSIPS instance: utime + stime of every process in its
//! process group (the test harness starts OpenSIPS as a group leader, and
//! every process it forks — workers, timers, httpd — stays in the group),
//! from /proc/<pid>/stat. The kernel counts these in clock ticks (10 ms at
//! the usual 100 Hz), so a measurement needs a traffic phase of seconds.

use std::fs;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

fn ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// (process group, utime + stime in ticks) of one /proc/<pid>/stat.
fn stat_of(pid: u32) -> Option<(u32, u64)> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; fields after it are plain.
    let f: Vec<&str> = s.rsplit_once(')')?.1.split_whitespace().collect();
    // f[0] is field 3 (state): pgrp is field 5, utime 14, stime 15.
    let pgrp = f.get(2)?.parse().ok()?;
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some((pgrp, utime + stime))
}

/// The processes of group `pgid`.
pub fn group_pids(pgid: u32) -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|p| stat_of(*p).is_some_and(|(g, _)| g == pgid))
        .collect();
    pids.sort_unstable();
    pids
}

/// CPU time used so far by the processes `pids`.
pub fn cpu_of(pids: &[u32]) -> Duration {
    let ticks: u64 = pids
        .iter()
        .filter_map(|p| stat_of(*p))
        .map(|(_, t)| t)
        .sum();
    Duration::from_secs_f64(ticks as f64 / ticks_per_sec())
}

/// Samples [`cpu_of`] every `every` from a thread, until stopped.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<(Duration, Duration)>>,
}

impl Sampler {
    /// Samples are (time since `t0`, cumulative CPU time).
    pub fn start(pids: Vec<u32>, every: Duration, t0: Instant) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut out = Vec::new();
            let mut pace = crate::support::sip::Pace::starting(t0, every);
            while !s.load(Ordering::Relaxed) {
                pace.wait();
                out.push((t0.elapsed(), cpu_of(&pids)));
            }
            out
        });
        Sampler { stop, thread }
    }

    pub fn finish(self) -> Vec<(Duration, Duration)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the CPU sampler panicked")
    }
}
