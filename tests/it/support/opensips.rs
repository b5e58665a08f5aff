//! Harness for running the module inside a real OpenSIPS.
//!
//! * [`env`] finds the OpenSIPS binary, its module directory, sipp and the
//!   rsec module (building it when needed), or [`skip`]s.
//! * [`TestDir`] is a per-test scratch directory (kept when the test fails).
//! * [`OpenSips`] renders a config template from `tests/cfg/`, starts
//!   `opensips -F` in its own process group on a free UDP port, waits until it
//!   answers, and on drop stops the whole group (SIGTERM, then SIGKILL), so no
//!   OpenSIPS is ever left behind, even when the test panics.
//! * [`Event`] parses the `RSEC-TEST key=value ...` lines the test configs
//!   write with xlog: an exact, server-side record of every decision.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::net::UdpSocket;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::sip::{OptionsClient, Pace};
use super::skip;

pub const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");

/// Everything a test needs from the machine.
#[derive(Debug)]
pub struct Env {
    pub opensips: PathBuf,
    /// Directory of OpenSIPS's own modules (`mpath`).
    pub mpath: PathBuf,
    pub sipp: Option<PathBuf>,
    /// The rsec module as found (RSEC_SO or target/release/librsec.so).
    pub so: PathBuf,
}

impl Env {
    pub fn sipp(&self) -> &Path {
        self.sipp.as_deref().expect("sipp was required by env()")
    }
}

static ENV: OnceLock<Result<Env, String>> = OnceLock::new();

/// The test environment, or [`skip`] when OpenSIPS (or sipp, if
/// `need_sipp`) is not installed. A missing or unbuildable rsec module is a
/// failure, not a skip.
pub fn env(test: &str, need_sipp: bool) -> Option<&'static Env> {
    let e = match ENV.get_or_init(discover) {
        Ok(e) => e,
        Err(why) => {
            skip(test, why);
            return None;
        }
    };
    if need_sipp && e.sipp.is_none() {
        skip(test, "no sipp found (install sip-tester or set SIPP_BIN)");
        return None;
    }
    Some(e)
}

fn discover() -> Result<Env, String> {
    let opensips = find_opensips().ok_or_else(|| match std::env::var_os("OPENSIPS_BIN") {
        Some(p) => format!(
            "no OpenSIPS found: OPENSIPS_BIN={} does not exist",
            PathBuf::from(p).display()
        ),
        None => "no OpenSIPS found (set OPENSIPS_BIN)".to_string(),
    })?;
    let mpath = find_mpath(&opensips).ok_or_else(|| {
        format!(
            "no module directory found for {} (set OPENSIPS_MPATH)",
            opensips.display()
        )
    })?;
    let sipp = find_sipp();
    let so = rsec_so();
    Ok(Env {
        opensips,
        mpath,
        sipp,
        so,
    })
}

fn in_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|f| f.is_file())
    })
}

/// `$var` if set (and only if it exists), else `name` on PATH, else `fallback`.
pub fn find_bin(var: &str, name: &str, fallback: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(var) {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    in_path(name).or_else(|| {
        let p = PathBuf::from(fallback);
        p.is_file().then_some(p)
    })
}

fn find_opensips() -> Option<PathBuf> {
    find_bin("OPENSIPS_BIN", "opensips", "/opt/opensips/sbin/opensips")
}

fn find_mpath(bin: &Path) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("OPENSIPS_MPATH") {
        return Some(PathBuf::from(p));
    }
    let bin = fs::canonicalize(bin).unwrap_or_else(|_| bin.to_path_buf());
    let prefix = bin.parent()?.parent()?;
    [
        "lib64/opensips/modules",
        "lib/opensips/modules",
        "lib/x86_64-linux-gnu/opensips/modules",
    ]
    .iter()
    .map(|d| prefix.join(d))
    .find(|d| d.join("sl.so").is_file())
}

fn find_sipp() -> Option<PathBuf> {
    find_bin("SIPP_BIN", "sipp", "/usr/bin/sipp")
}

/// Serialises the traffic-heavy tests of one test binary: two floods at
/// once on a small machine would measure the scheduler, not the module
/// (the expectations are exact whatever the timing).
pub fn heavy() -> std::sync::MutexGuard<'static, ()> {
    static HEAVY: Mutex<()> = Mutex::new(());
    HEAVY.lock().unwrap_or_else(|p| p.into_inner())
}

/// `defaults` with each of `overrides` replacing the value of the same
/// name, or appended when it is new.
pub fn override_vars<'a>(
    mut defaults: Vec<(&'a str, String)>,
    overrides: &[(&'a str, String)],
) -> Vec<(&'a str, String)> {
    for (k, v) in overrides {
        match defaults.iter_mut().find(|(n, _)| n == k) {
            Some(slot) => slot.1 = v.clone(),
            None => defaults.push((k, v.clone())),
        }
    }
    defaults
}

/// Shorthand for template variable values.
pub fn s(v: impl ToString) -> String {
    v.to_string()
}

/// RSEC_SO as is; else $CARGO_TARGET_DIR (default target)/release/librsec.so,
/// (re)built with `cargo build --release --lib` when it is missing or older
/// than the sources (`cargo test --release` builds the library for the test
/// binary but does not refresh that file). Panics with a clear message when
/// no usable module can be had.
fn rsec_so() -> PathBuf {
    if let Some(p) = std::env::var_os("RSEC_SO") {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "RSEC_SO={} does not exist", p.display());
        return p;
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(MANIFEST_DIR).join("target"));
    let so = target.join("release/librsec.so");
    let why = if !so.is_file() {
        Some("is missing")
    } else if is_stale(&so) {
        Some("is older than the sources")
    } else {
        None
    };
    if let Some(why) = why {
        eprintln!(
            "{} {why}: running cargo build --release --lib",
            so.display()
        );
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--release", "--lib"])
            .current_dir(MANIFEST_DIR)
            .status()
            .expect("cannot run cargo to build the rsec module");
        assert!(
            status.success(),
            "cargo build --release --lib failed ({status}); set RSEC_SO to a built librsec.so"
        );
        assert!(
            so.is_file(),
            "cargo build --release --lib did not produce {}",
            so.display()
        );
        if is_stale(&so) {
            eprintln!(
                "WARNING: {} is still older than the sources after the build",
                so.display()
            );
        }
    }
    so
}

/// True when a source of the module changed after `so` was written.
fn is_stale(so: &Path) -> bool {
    fn newest(p: &Path) -> Option<std::time::SystemTime> {
        let md = fs::metadata(p).ok()?;
        if !md.is_dir() {
            return md.modified().ok();
        }
        fs::read_dir(p)
            .ok()?
            .filter_map(|e| newest(&e.ok()?.path()))
            .max()
    }
    let root = Path::new(MANIFEST_DIR);
    let src = ["src", "include", "build.rs", "Cargo.toml", "Cargo.lock"]
        .iter()
        .filter_map(|p| newest(&root.join(p)))
        .max();
    match (src, fs::metadata(so).and_then(|m| m.modified())) {
        (Some(src), Ok(built)) => src > built,
        _ => false,
    }
}

/// A scratch directory for one test: configs, logs, db_text tables, sipp
/// output. Removed when the test passes, kept (and named) when it fails, or
/// always kept with RSEC_KEEP_TMP=1.
pub struct TestDir {
    pub path: PathBuf,
}

impl TestDir {
    pub fn new(test: &str) -> TestDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "rsec-it-{test}-{}-{stamp}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        TestDir { path }
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// A private copy of the module: a concurrent rebuild of
    /// target/release/librsec.so cannot change what this test loads.
    pub fn module_copy(&self, env: &Env) -> PathBuf {
        let dst = self.join("librsec.so");
        if !dst.exists() {
            let mut last = None;
            for _ in 0..5 {
                match fs::copy(&env.so, &dst) {
                    Ok(_) => return dst,
                    Err(e) => last = Some(e),
                }
                std::thread::sleep(Duration::from_millis(500));
            }
            panic!(
                "cannot copy {} to {}: {:?}",
                env.so.display(),
                dst.display(),
                last
            );
        }
        dst
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("RSEC_KEEP_TMP").is_some() {
            eprintln!("test files kept in {}", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// A UDP port on 127.0.0.1 that is free right now, never handed out twice
/// by this process.
pub fn free_udp_port() -> u16 {
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    loop {
        let s = UdpSocket::bind("127.0.0.1:0").expect("bind an ephemeral UDP port");
        let port = s.local_addr().unwrap().port();
        if GIVEN.lock().unwrap().insert(port) {
            return port;
        }
    }
}

/// A TCP port on 127.0.0.1 that is free right now, never handed out twice
/// by this process.
pub fn free_tcp_port() -> u16 {
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    loop {
        let s = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral TCP port");
        let port = s.local_addr().unwrap().port();
        if GIVEN.lock().unwrap().insert(port) {
            return port;
        }
    }
}

/// Polls until something accepts TCP connections on 127.0.0.1:`port`.
fn wait_tcp(port: u16, limit: Duration) -> Result<(), String> {
    let t0 = Instant::now();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    loop {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
            Ok(_) => return Ok(()),
            Err(e) if t0.elapsed() >= limit => {
                return Err(format!("nothing accepts connections on tcp:{addr} ({e})"))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// The one module the configs load under another name on some releases:
/// `event_route[...]` came from `event_route` up to 3.4 (whose
/// `event_routing` is another module); 3.6 merged it into `event_routing`.
fn for_release(env: &Env, cfg: String) -> String {
    if !env.mpath.join("event_route.so").exists() {
        return cfg;
    }
    let cfg = cfg.replace("\"event_routing.so\"", "\"event_route.so\"");
    if !cfg.contains("event_route[") || cfg.contains("\"event_route.so\"") {
        return cfg;
    }
    // A config relying on 3.6's built-in event_route (the examples).
    cfg.replacen(
        "loadmodule ",
        "loadmodule \"event_route.so\"\nloadmodule ",
        1,
    )
}

/// Fills `@NAME@` placeholders; panics on any left unfilled.
pub fn render(template: &str, vars: &[(&str, String)]) -> String {
    let mut out = template.to_string();
    for (k, v) in vars {
        out = out.replace(&format!("@{k}@"), v);
    }
    let left: Vec<&str> = out
        .split('@')
        .skip(1)
        .step_by(2)
        .filter(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        .collect();
    assert!(
        left.is_empty(),
        "config template has unfilled placeholders: {left:?}"
    );
    out
}

/// Last `n` lines of a file, for failure reports.
pub fn tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path)
        .unwrap_or_else(|e| format!("<cannot read {}: {e}>", path.display()));
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Writes the db_text tables auth_db needs: `version` and `subscriber`
/// (plain-text passwords; the config sets calculate_ha1). `users` are
/// (username, domain, password).
pub fn write_dbtext_subscribers(dir: &Path, users: &[(&str, &str, &str)]) {
    fs::create_dir_all(dir).unwrap();
    // auth_db 3.6 checks for subscriber table version 8.
    fs::write(
        dir.join("version"),
        "table_name(string) table_version(int) \nsubscriber:8\n",
    )
    .unwrap();
    let mut sub = String::from(
        "id(int,auto) username(string) domain(string) password(string) \
         ha1(string,null) ha1_sha256(string,null) ha1_sha512t256(string,null) \n",
    );
    for (i, (user, domain, password)) in users.iter().enumerate() {
        sub.push_str(&format!(
            "{}:{}:{}:{}:::\n",
            i + 1,
            user,
            dbtext_escape(domain),
            dbtext_escape(password)
        ));
    }
    fs::write(dir.join("subscriber"), sub).unwrap();
}

fn dbtext_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace(':', "\\:")
}

/// A running `opensips -F`.
pub struct OpenSips {
    child: Option<Child>,
    pub port: u16,
    /// The httpd port, for configs started with [`OpenSips::start_with_http`].
    pub http_port: Option<u16>,
    pub log_path: PathBuf,
    name: String,
}

/// How a config is started: which readiness probe, whether it serves HTTP,
/// and extra command-line arguments.
struct Launch<'a> {
    probe_user: Option<&'a str>,
    with_http: bool,
    args: &'a [&'a str],
}

/// How long OpenSIPS may take to answer its first request: 20 s, or
/// `RSEC_READY_TIMEOUT_S` seconds (a benchmark loading a million bans at
/// start-up may need more on a busy machine).
fn ready_timeout() -> Duration {
    let s = std::env::var("RSEC_READY_TIMEOUT_S")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    Duration::from_secs(s)
}

impl OpenSips {
    /// Renders `template` (a `tests/cfg/*.cfg` text) with `vars` plus
    /// SOCKET, MPATH, RSEC_SO and (unless given) WORKERS=2, starts OpenSIPS
    /// and waits until it answers a probe. The probe is an OPTIONS to
    /// `sip:rsec-ping@...`, which every test config answers first thing.
    pub fn start(
        env: &Env,
        dir: &TestDir,
        name: &str,
        template: &str,
        vars: &[(&str, String)],
    ) -> OpenSips {
        Self::start_probing(env, dir, name, template, vars, Some("rsec-ping"))
    }

    /// As [`start`](Self::start), with the readiness probe sent to
    /// `sip:<probe_user>@127.0.0.1:port`, or to `sip:127.0.0.1:port` when
    /// `probe_user` is None (for configs that are not the test's own).
    pub fn start_probing(
        env: &Env,
        dir: &TestDir,
        name: &str,
        template: &str,
        vars: &[(&str, String)],
        probe_user: Option<&str>,
    ) -> OpenSips {
        Self::start_inner(
            env,
            dir,
            name,
            template,
            vars,
            Launch {
                probe_user,
                with_http: false,
                args: &[],
            },
        )
    }

    /// As [`start`](Self::start) for configs that load httpd: also fills
    /// HTTP_PORT with a free TCP port (a fresh one on each attempt) and
    /// waits until the HTTP server accepts connections; the port is in
    /// [`http_port`](Self::http_port).
    pub fn start_with_http(
        env: &Env,
        dir: &TestDir,
        name: &str,
        template: &str,
        vars: &[(&str, String)],
    ) -> OpenSips {
        Self::start_with_http_args(env, dir, name, template, vars, &[])
    }

    /// As [`start_with_http`](Self::start_with_http), with more command-line
    /// arguments for OpenSIPS (e.g. `-m 4` for a small shared memory).
    pub fn start_with_http_args(
        env: &Env,
        dir: &TestDir,
        name: &str,
        template: &str,
        vars: &[(&str, String)],
        args: &[&str],
    ) -> OpenSips {
        Self::start_inner(
            env,
            dir,
            name,
            template,
            vars,
            Launch {
                probe_user: Some("rsec-ping"),
                with_http: true,
                args,
            },
        )
    }

    fn start_inner(
        env: &Env,
        dir: &TestDir,
        name: &str,
        template: &str,
        vars: &[(&str, String)],
        launch: Launch,
    ) -> OpenSips {
        let Launch {
            probe_user,
            with_http,
            args,
        } = launch;
        let so = dir.module_copy(env);
        let mut last_log = String::new();
        for attempt in 1..=3 {
            let port = free_udp_port();
            let http_port = with_http.then(free_tcp_port);
            let mut all: Vec<(&str, String)> = vec![
                ("SOCKET", format!("udp:127.0.0.1:{port}")),
                ("PORT", port.to_string()),
                ("MPATH", format!("{}/", env.mpath.display())),
                ("RSEC_SO", so.display().to_string()),
            ];
            if let Some(h) = http_port {
                all.push(("HTTP_PORT", h.to_string()));
            }
            if !vars.iter().any(|(k, _)| *k == "WORKERS") {
                all.push(("WORKERS", "2".into()));
            }
            all.extend(vars.iter().cloned());
            let cfg = for_release(env, render(template, &all));
            let cfg_path = dir.join(&format!("{name}.cfg"));
            let log_path = dir.join(&format!("{name}.log"));
            fs::write(&cfg_path, cfg).unwrap();
            let child = spawn_opensips(env, &cfg_path, &log_path, &dir.path, args);
            let mut os = OpenSips {
                child: Some(child),
                port,
                http_port,
                log_path,
                name: name.to_string(),
            };
            let ready = os.wait_ready(probe_user).and_then(|w| match http_port {
                Some(h) => wait_tcp(h, ready_timeout().saturating_sub(w)).map(|_| w),
                None => Ok(w),
            });
            match ready {
                Ok(waited) => {
                    let http = http_port
                        .map(|h| format!(", http on tcp:127.0.0.1:{h}"))
                        .unwrap_or_default();
                    eprintln!(
                        "[{name}] OpenSIPS ready on udp:127.0.0.1:{port}{http} after {} ms",
                        waited.as_millis()
                    );
                    return os;
                }
                Err(why) => {
                    let log = fs::read_to_string(&os.log_path).unwrap_or_default();
                    os.stop();
                    if log.contains("Address already in use") && attempt < 3 {
                        eprintln!("[{name}] port {port} (or http port {http_port:?}) was taken, retrying on other ports");
                        continue;
                    }
                    last_log = format!("{why}\n--- log tail ---\n{}", tail(&os.log_path, 60));
                    break;
                }
            }
        }
        panic!("[{name}] OpenSIPS did not start: {last_log}");
    }

    /// Polls with an OPTIONS probe (one every 200 ms at most) until a 200
    /// comes back.
    fn wait_ready(&mut self, probe_user: Option<&str>) -> Result<Duration, String> {
        let t0 = Instant::now();
        let probe = OptionsClient::new("127.0.0.1", self.port, probe_user);
        let mut pace = Pace::new(Duration::from_millis(200));
        let limit = ready_timeout();
        while t0.elapsed() < limit {
            if let Some(st) = self
                .child
                .as_mut()
                .unwrap()
                .try_wait()
                .map_err(|e| e.to_string())?
            {
                return Err(format!("opensips exited during startup: {st}"));
            }
            pace.wait();
            if probe
                .ask(Duration::from_millis(200))
                .is_some_and(|a| a.code == 200)
            {
                return Ok(t0.elapsed());
            }
        }
        Err(format!("no answer to the readiness probe within {limit:?}"))
    }

    /// The main OpenSIPS process, which leads the process group every
    /// OpenSIPS process of this instance belongs to.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// All `RSEC-TEST` lines logged so far.
    pub fn events(&self) -> Vec<Event> {
        self.log().lines().filter_map(Event::parse).collect()
    }

    /// Waits until at least `n` events match `pred` (the script logs before
    /// replying, so this returns at once unless a worker is slow to write).
    pub fn wait_events(&self, n: usize, pred: impl Fn(&Event) -> bool) -> Vec<Event> {
        let t0 = Instant::now();
        loop {
            let evs: Vec<Event> = self.events().into_iter().filter(|e| pred(e)).collect();
            if evs.len() >= n || t0.elapsed() > Duration::from_secs(5) {
                return evs;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Lines of the log containing every one of `needles`.
    pub fn log_lines_with(&self, needles: &[&str]) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .map(str::to_string)
            .collect()
    }

    pub fn tail(&self, n: usize) -> String {
        tail(&self.log_path, n)
    }

    /// Stops the process group: SIGTERM, up to 5 s grace, then SIGKILL.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pgid = child.id() as libc::pid_t;
        if matches!(child.try_wait(), Ok(None)) {
            // SAFETY: plain kill(2) on the process group we created.
            unsafe { libc::kill(-pgid, libc::SIGTERM) };
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(5) {
                if !matches!(child.try_wait(), Ok(None)) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        // Children that outlived the main process, or a main process that
        // ignored SIGTERM.
        // SAFETY: as above; ESRCH when the group is already gone is fine.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = child.wait();
    }
}

impl Drop for OpenSips {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!(
                "--- [{}] OpenSIPS log tail ({}) ---\n{}\n--- end of log tail ---",
                self.name,
                self.log_path.display(),
                tail(&self.log_path, 80)
            );
        }
    }
}

fn spawn_opensips(env: &Env, cfg: &Path, log: &Path, cwd: &Path, args: &[&str]) -> Child {
    let out = fs::File::create(log).unwrap();
    let err = out.try_clone().unwrap();
    Command::new(&env.opensips)
        .arg("-F")
        .arg("-f")
        .arg(cfg)
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", env.opensips.display()))
}

/// The example turned into a runnable template for this machine: our socket
/// (@SOCKET@), module paths, logging to stderr, a FIFO in the scratch
/// directory, and its SQL database swapped for db_text tables in `dbdir`.
/// The routing logic is left exactly as written.
pub fn example_as_template(text: &str, dbdir: &Path, fifo: &Path) -> String {
    let has_db_text = text.contains("\"db_text.so\"");
    let mut db_loaded = has_db_text;
    let mut out = String::new();
    for line in text.lines() {
        let t = line.trim_start();
        let l = if t.starts_with("socket") || t.starts_with("listen") {
            "socket=@SOCKET@".to_string()
        } else if t.starts_with("mpath") && !t.starts_with("mpath_") {
            "mpath=\"@MPATH@\"".to_string()
        } else if t.starts_with("stderror_enabled") {
            "stderror_enabled=yes".to_string()
        } else if t.starts_with("syslog_enabled") {
            "syslog_enabled=no".to_string()
        } else if t.starts_with("loadmodule") && t.contains("rsec") && t.contains(".so") {
            "loadmodule \"@RSEC_SO@\"".to_string()
        } else if t.starts_with("loadmodule")
            && ["db_mysql", "db_postgres", "db_sqlite", "db_unixodbc"]
                .iter()
                .any(|m| t.contains(m))
        {
            if db_loaded {
                continue;
            }
            db_loaded = true;
            "loadmodule \"db_text.so\"".to_string()
        } else if t.contains("fifo_name") {
            // Reply FIFOs beside it too: mi_fifo's default, /tmp/, is shared
            // with everything else on the machine.
            let dir = fifo.parent().expect("the FIFO path has a directory");
            format!(
                "modparam(\"mi_fifo\", \"fifo_name\", \"{}\")\nmodparam(\"mi_fifo\", \"reply_dir\", \"{}/\")",
                fifo.display(),
                dir.display()
            )
        } else {
            let mut l = line.to_string();
            for scheme in ["\"mysql://", "\"postgres://", "\"sqlite://", "\"text://"] {
                if let Some(at) = l.find(scheme) {
                    let end = l[at + 1..].find('"').map(|e| at + 1 + e).unwrap_or(l.len());
                    l = format!("{}\"text://{}{}", &l[..at], dbdir.display(), &l[end..]);
                }
            }
            l
        };
        out.push_str(&l);
        out.push('\n');
    }
    out
}

/// An integer rsec modparam set in the example, or `default`.
pub fn example_int_param(text: &str, name: &str, default: usize) -> usize {
    let needle = format!("\"{name}\"");
    text.lines()
        .map(str::trim)
        .filter(|l| l.starts_with("modparam(\"rsec\"") && l.contains(&needle))
        .filter_map(|l| {
            l.rsplit(',')
                .next()?
                .trim_end_matches([')', ';', ' '])
                .trim()
                .parse()
                .ok()
        })
        .next_back()
        .unwrap_or(default)
}

/// Calls `f` every `every` until it returns Some, at most `limit`; the value
/// and how long it took.
pub fn poll<T>(
    limit: Duration,
    every: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> Option<(T, Duration)> {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some((v, t0.elapsed()));
        }
        if t0.elapsed() >= limit {
            return None;
        }
        std::thread::sleep(every);
    }
}

/// Runs `opensips -F -f cfg` expecting it to refuse to start; returns its
/// exit status and output. Panics if it is still running after `limit` (the
/// process group is killed first) or if it started answering requests.
pub fn run_expecting_exit(
    env: &Env,
    dir: &TestDir,
    name: &str,
    template: &str,
    vars: &[(&str, String)],
    limit: Duration,
) -> (ExitStatus, String) {
    let so = dir.module_copy(env);
    let port = free_udp_port();
    let mut all: Vec<(&str, String)> = vec![
        ("SOCKET", format!("udp:127.0.0.1:{port}")),
        ("MPATH", format!("{}/", env.mpath.display())),
        ("RSEC_SO", so.display().to_string()),
    ];
    all.extend(vars.iter().cloned());
    let cfg_path = dir.join(&format!("{name}.cfg"));
    let log_path = dir.join(&format!("{name}.log"));
    fs::write(&cfg_path, render(template, &all)).unwrap();
    let child = spawn_opensips(env, &cfg_path, &log_path, &dir.path, &[]);
    let mut os = OpenSips {
        child: Some(child),
        port,
        http_port: None,
        log_path: log_path.clone(),
        name: name.to_string(),
    };
    let t0 = Instant::now();
    loop {
        let st = os
            .child
            .as_mut()
            .unwrap()
            .try_wait()
            .expect("wait on opensips");
        if let Some(st) = st {
            // Reap any children the main process left (none expected).
            os.stop();
            return (st, fs::read_to_string(&log_path).unwrap_or_default());
        }
        if t0.elapsed() > limit {
            panic!("[{name}] opensips was still running after {limit:?}; it should have refused to start");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `opensips -c -f cfg`: the config check.
pub fn check_config(env: &Env, cfg: &Path) -> Output {
    Command::new(&env.opensips)
        .arg("-c")
        .arg("-f")
        .arg(cfg)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", env.opensips.display()))
}

/// One `RSEC-TEST k=v ...` line from the OpenSIPS log.
#[derive(Clone, Debug)]
pub struct Event {
    /// The OpenSIPS process (worker) that logged it.
    pub pid: u32,
    pub fields: BTreeMap<String, String>,
}

impl Event {
    pub fn parse(line: &str) -> Option<Event> {
        let at = line.find("RSEC-TEST ")?;
        let pid = line[..at]
            .rsplit_once('[')
            .and_then(|(_, r)| r.split_once(']'))
            .and_then(|(p, _)| p.trim().parse().ok())
            .unwrap_or(0);
        let fields = line[at + "RSEC-TEST ".len()..]
            .split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Some(Event { pid, fields })
    }

    pub fn get(&self, k: &str) -> &str {
        self.fields.get(k).map(String::as_str).unwrap_or("")
    }

    /// True when every (key, value) pair matches.
    pub fn is(&self, kv: &[(&str, &str)]) -> bool {
        kv.iter().all(|(k, v)| self.get(k) == *v)
    }
}

/// How many events have each value of field `k`.
pub fn tally<'a>(events: impl IntoIterator<Item = &'a Event>, k: &str) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for e in events {
        *m.entry(e.get(k).to_string()).or_insert(0) += 1;
    }
    m
}

/// Distinct worker processes among `events`.
pub fn workers<'a>(events: impl IntoIterator<Item = &'a Event>) -> usize {
    events
        .into_iter()
        .map(|e| e.pid)
        .collect::<BTreeSet<_>>()
        .len()
}
