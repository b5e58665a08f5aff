//! Running sipp scenarios from `tests/sipp/` against a test OpenSIPS.
//!
//! Every scenario logs one `RESULT <call number> <outcome>` line per call
//! through sipp's `<log>` action (`-trace_logs`); [`SippResult`] collects
//! them, so each request's outcome is known exactly. Runs are bounded by
//! `-m`, `-timeout` and `-recv_timeout`, retransmissions are off (`-nr`) so
//! every request the server sees was sent once on purpose, and a sipp that
//! overstays is killed by its process group.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::opensips::{tail, Env, TestDir, MANIFEST_DIR};

/// A sipp run to be started.
pub struct Sipp<'a> {
    env: &'a Env,
    dir: &'a TestDir,
    name: String,
    scenario: &'static str,
    port: u16,
    src: String,
    service: String,
    calls: u32,
    rate: u32,
    max_parallel: Option<u32>,
    timeout_s: u32,
    recv_timeout_ms: u32,
    extra: Vec<String>,
}

impl<'a> Sipp<'a> {
    /// `scenario` is a file name in tests/sipp/; the run is `name` (must be
    /// unique within the test: it names the output files).
    pub fn new(
        env: &'a Env,
        dir: &'a TestDir,
        name: &str,
        scenario: &'static str,
        port: u16,
    ) -> Sipp<'a> {
        Sipp {
            env,
            dir,
            name: name.to_string(),
            scenario,
            port,
            src: "127.0.0.1".into(),
            service: "service".into(),
            calls: 1,
            rate: 10,
            max_parallel: None,
            timeout_s: 30,
            recv_timeout_ms: 5000,
            extra: Vec::new(),
        }
    }

    /// Source address (sipp binds it: -i). Must be a loopback address.
    pub fn from(mut self, ip: &str) -> Self {
        assert!(
            ip.starts_with("127.") || ip == "::1",
            "tests only ever send from loopback addresses"
        );
        self.src = ip.into();
        self
    }

    /// Request-URI user (-s), which the test configs dispatch on.
    pub fn service(mut self, s: &str) -> Self {
        self.service = s.into();
        self
    }

    /// Number of calls (-m) at `rate` calls per second (-r).
    pub fn calls(mut self, n: u32, rate: u32) -> Self {
        self.calls = n;
        self.rate = rate;
        self
    }

    /// At most `n` calls at a time (-l); 1 makes the calls strictly sequential.
    pub fn max_parallel(mut self, n: u32) -> Self {
        self.max_parallel = Some(n);
        self
    }

    /// Digest credentials for `[authentication]` (-au / -ap).
    pub fn auth(mut self, user: &str, password: &str) -> Self {
        self.extra
            .extend(["-au".into(), user.into(), "-ap".into(), password.into()]);
        self
    }

    /// How long a call waits for each expected answer before it is given up
    /// (and counted as missing): the way to observe silently dropped requests.
    pub fn recv_timeout_ms(mut self, ms: u32) -> Self {
        self.recv_timeout_ms = ms;
        self
    }

    /// A value for `[k]` in the scenario (-key k v).
    pub fn key(mut self, k: &str, v: &str) -> Self {
        self.extra.extend(["-key".into(), k.into(), v.into()]);
        self
    }

    pub fn timeout(mut self, secs: u32) -> Self {
        self.timeout_s = secs;
        self
    }

    /// Per-call response times (for scenarios with `rtd`): -trace_rtt
    /// -rtt_freq 1; read them with [`SippResult::rtt_ms`].
    pub fn trace_rtt(mut self) -> Self {
        self.extra
            .extend(["-trace_rtt".into(), "-rtt_freq".into(), "1".into()]);
        self
    }

    pub fn spawn(self) -> SippProc {
        let scenario = PathBuf::from(MANIFEST_DIR)
            .join("tests/sipp")
            .join(self.scenario);
        assert!(
            scenario.is_file(),
            "missing scenario {}",
            scenario.display()
        );
        let log_file = self.dir.join(&format!("{}.results", self.name));
        let err_file = self.dir.join(&format!("{}.errors", self.name));
        let out_file = self.dir.join(&format!("{}.out", self.name));
        let mut cmd = Command::new(self.env.sipp());
        cmd.arg("-sf")
            .arg(&scenario)
            // From an IPv6 source, talk to OpenSIPS over IPv6 (loopback).
            .arg(if self.src.contains(':') {
                format!("[::1]:{}", self.port)
            } else {
                format!("127.0.0.1:{}", self.port)
            })
            .args(["-i", &self.src])
            .args(["-s", &self.service])
            .args(["-m", &self.calls.to_string()])
            .args(["-r", &self.rate.to_string(), "-rp", "1000"])
            .args(["-timeout", &format!("{}s", self.timeout_s)])
            .args(["-recv_timeout", &self.recv_timeout_ms.to_string()])
            .args(["-nr", "-nostdin"])
            .arg("-trace_logs")
            .arg("-log_file")
            .arg(&log_file)
            .arg("-trace_err")
            .arg("-error_file")
            .arg(&err_file);
        if let Some(l) = self.max_parallel {
            cmd.args(["-l", &l.to_string()]);
        }
        cmd.args(&self.extra);
        let out = fs::File::create(&out_file).unwrap();
        let err = out.try_clone().unwrap();
        let cmdline = format!("{cmd:?}");
        let child = cmd
            .current_dir(&self.dir.path)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run sipp: {e}"));
        SippProc {
            pid: child.id(),
            dir: self.dir.path.clone(),
            scenario_stem: self.scenario.trim_end_matches(".xml").to_string(),
            child: Some(child),
            name: self.name,
            calls: self.calls,
            limit: Duration::from_secs(self.timeout_s as u64 + 15),
            started: Instant::now(),
            log_file,
            err_file,
            out_file,
            cmdline,
        }
    }

    pub fn run(self) -> SippResult {
        self.spawn().wait()
    }
}

/// A running sipp.
pub struct SippProc {
    pid: u32,
    dir: PathBuf,
    scenario_stem: String,
    child: Option<Child>,
    name: String,
    calls: u32,
    limit: Duration,
    started: Instant,
    log_file: PathBuf,
    err_file: PathBuf,
    out_file: PathBuf,
    cmdline: String,
}

impl SippProc {
    pub fn wait(mut self) -> SippResult {
        let mut child = self.child.take().unwrap();
        let status = loop {
            if let Some(st) = child.try_wait().expect("wait on sipp") {
                break st;
            }
            if self.started.elapsed() > self.limit {
                kill_group(&mut child);
                panic!(
                    "sipp run '{}' still running after {:?}; killed\n{}\n--- output ---\n{}",
                    self.name,
                    self.limit,
                    self.cmdline,
                    tail(&self.out_file, 30)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let elapsed = self.started.elapsed();
        let mut outcomes = BTreeMap::new();
        for line in fs::read_to_string(&self.log_file)
            .unwrap_or_default()
            .lines()
        {
            let mut it = line.split_whitespace();
            if it.next() != Some("RESULT") {
                continue;
            }
            if let (Some(n), Some(o)) = (it.next().and_then(|n| n.parse::<u64>().ok()), it.next()) {
                outcomes.insert(n, o.to_string());
            }
        }
        SippResult {
            pid: self.pid,
            dir: self.dir.clone(),
            scenario_stem: self.scenario_stem.clone(),
            name: self.name.clone(),
            status,
            calls: self.calls,
            outcomes,
            elapsed,
            err_file: self.err_file.clone(),
            out_file: self.out_file.clone(),
            cmdline: self.cmdline.clone(),
        }
    }
}

impl Drop for SippProc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill_group(&mut c);
        }
    }
}

fn kill_group(child: &mut Child) {
    // SAFETY: kill(2) on the process group this harness created for sipp.
    unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
    let _ = child.wait();
}

/// What a sipp run saw: the outcome of every call, by call number.
pub struct SippResult {
    /// Process id of the sipp run (names its -trace_rtt file).
    pub pid: u32,
    dir: PathBuf,
    scenario_stem: String,
    pub name: String,
    pub status: ExitStatus,
    pub calls: u32,
    pub outcomes: BTreeMap<u64, String>,
    pub elapsed: Duration,
    err_file: PathBuf,
    out_file: PathBuf,
    cmdline: String,
}

impl SippResult {
    /// Calls that ended with `outcome` (e.g. "200", "401>403").
    pub fn count(&self, outcome: &str) -> usize {
        self.outcomes.values().filter(|o| *o == outcome).count()
    }

    pub fn tally(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for o in self.outcomes.values() {
            *m.entry(o.clone()).or_insert(0) += 1;
        }
        m
    }

    /// Outcomes in call order.
    pub fn sequence(&self) -> Vec<String> {
        self.outcomes.values().cloned().collect()
    }

    /// Response times in milliseconds, one per call that completed its rtd,
    /// from the -trace_rtt file (see [`Sipp::trace_rtt`]).
    pub fn rtt_ms(&self) -> Vec<f64> {
        let path = self
            .dir
            .join(format!("{}_{}_rtt.csv", self.scenario_stem, self.pid));
        let text = fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        // "Date_ms;response_time_ms;rtd_no" then one line per response time.
        text.lines()
            .skip(1)
            .filter_map(|l| l.split(';').nth(1)?.trim().parse::<f64>().ok())
            .collect()
    }

    /// Calls without a recorded outcome (lost, timed out, unexpected reply).
    pub fn missing(&self) -> usize {
        self.calls as usize - self.outcomes.len()
    }

    /// Diagnostics for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "sipp run '{}': {} of {} calls answered {:?} in {:.2}s, exit {}\n{}\n--- sipp errors ---\n{}\n--- sipp output ---\n{}",
            self.name,
            self.outcomes.len(),
            self.calls,
            self.tally(),
            self.elapsed.as_secs_f64(),
            self.status,
            self.cmdline,
            tail(&self.err_file, 20),
            tail(&self.out_file, 15)
        )
    }

    /// Panics (with diagnostics) unless every call got an answer.
    pub fn assert_complete(&self) -> &Self {
        assert_eq!(
            self.missing(),
            0,
            "calls without an answer\n{}",
            self.describe()
        );
        self
    }
}
