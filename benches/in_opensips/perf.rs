//! Where OpenSIPS's CPU time goes, by shared object: `perf record -F <freq>
//! -p <every OpenSIPS pid>` during the traffic phase (no call graphs: only
//! the object each sample's instruction pointer is in matters), then
//! `perf report --sort dso`. A module's share times the CPU per request is
//! the time spent in that module's own code (not in the libc or kernel
//! functions it calls).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::opensips::find_bin;

/// The perf binary, when sampling is wanted and possible; says once why not.
pub fn perf_bin(enabled: bool) -> Option<PathBuf> {
    if !enabled {
        return None;
    }
    let bin = find_bin("PERF_BIN", "perf", "/usr/bin/perf");
    let works = bin.as_ref().is_some_and(|b| {
        Command::new(b)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if !works {
        eprintln!("perf not found or not working: no per-module shares (set PERF_BIN, or RSEC_BENCH_PERF=0 to silence this)");
        return None;
    }
    bin
}

/// A `perf record` in progress.
pub struct Recording {
    child: Child,
    file: PathBuf,
    perf: PathBuf,
}

/// Starts sampling `pids` into `file`; None (with a note) if perf fails.
pub fn record(perf: &Path, pids: &[u32], freq: u32, file: &Path) -> Option<Recording> {
    let list = pids
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let child = Command::new(perf)
        .args(["record", "-q", "-F", &freq.to_string(), "-p", &list, "-o"])
        .arg(file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| eprintln!("perf record: {e}"))
        .ok()?;
    let mut r = Recording {
        child,
        file: file.to_path_buf(),
        perf: perf.to_path_buf(),
    };
    // perf opens its events after it starts; samples before that are lost,
    // so give it a moment before the traffic begins.
    std::thread::sleep(Duration::from_millis(300));
    if let Ok(Some(st)) = r.child.try_wait() {
        eprintln!("perf record exited at once ({st}); no per-module shares");
        return None;
    }
    r.file = file.to_path_buf();
    Some(r)
}

impl Recording {
    /// Stops the recording and reads its shares (percent of samples) by
    /// shared object.
    pub fn finish(mut self) -> Option<Shares> {
        // SAFETY: kill(2) on our own child; SIGINT makes perf write its file.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGINT) };
        let t0 = Instant::now();
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            if t0.elapsed() > Duration::from_secs(30) {
                let _ = self.child.kill();
                let _ = self.child.wait();
                eprintln!("perf record did not stop; no per-module shares");
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = Command::new(&self.perf)
            .args([
                "report",
                "--stdio",
                "-q",
                "--sort",
                "dso",
                "--percent-limit",
                "0",
                "-i",
            ])
            .arg(&self.file)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()?;
        // Kept with the run's files for a closer look (perf report
        // --sort sym) when they are kept.
        if std::env::var_os("RSEC_KEEP_TMP").is_none() {
            let _ = std::fs::remove_file(&self.file);
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let by_dso: BTreeMap<String, f64> = text
            .lines()
            .filter_map(|l| {
                let (pct, dso) = l.trim().split_once('%')?;
                Some((dso.trim().to_string(), pct.trim().parse().ok()?))
            })
            .collect();
        (!by_dso.is_empty()).then_some(Shares { by_dso })
    }
}

/// Percent of samples by shared object.
#[derive(Clone, Debug, Default)]
pub struct Shares {
    pub by_dso: BTreeMap<String, f64>,
}

impl Shares {
    /// Percent of samples in objects whose name is one of `names` (as perf
    /// prints them, e.g. "pike.so", or a prefix such as "libc").
    pub fn of(&self, names: &[&str]) -> f64 {
        self.by_dso
            .iter()
            .filter(|(d, _)| names.iter().any(|n| d.as_str() == *n || d.starts_with(n)))
            .map(|(_, p)| p)
            .sum()
    }

    pub fn libc(&self) -> f64 {
        self.of(&["libc.so", "libc-"])
    }

    pub fn kernel(&self) -> f64 {
        self.of(&["[kernel"])
    }

    pub fn opensips(&self) -> f64 {
        self.of(&["opensips"])
    }
}
