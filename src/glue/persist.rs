//! Ban persistence and multi-node sync, off the SIP path.
//!
//! Workers, the timer and MI only push decisions into the engine's bounded
//! queue. One dedicated OpenSIPS process ("rsec persistence") drains it to
//! MySQL in batches, imports the changes other nodes wrote every
//! `db_sync_interval`, and reconnects with backoff when the database goes
//! away; the queue keeps everything meanwhile. mod_init loads the bans in
//! force before OpenSIPS forks, so they are enforced from the first request.

use std::cell::UnsafeCell;
use std::os::raw::c_int;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use once_cell::sync::OnceCell;

use crate::db::{store, Conn, DbError, DbUrl};
use crate::engine::queue::Change;
use crate::engine::{BanOutcome, BanRecord, Cidr, Engine};
use crate::ffi::guard::guard;
use crate::ffi::sys::{ProcExport, PROC_FLAG_INITCHILD, PROC_FLAG_NEEDS_SCRIPT};
use crate::rsec_log;
use crate::shm::Region;

use super::events::{self, UnbanReason};
use super::{engine, now_us};

const US: u64 = 1_000_000;
/// Changes per transaction.
const BATCH: usize = 200;
/// Re-read this many change ids behind the cursor: ids from concurrent
/// writers can commit out of order, so a row may appear below the cursor
/// after it was passed. Rows already applied are remembered and skipped.
const LOOKBACK: u64 = 64;
/// Change-log rows older than this are pruned (seconds).
const LOG_RETENTION_S: u64 = 86_400;
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Settings from the modparams, fixed in mod_init.
pub struct Settings {
    pub url: DbUrl,
    pub node_id: String,
    pub sync_interval_s: u32,
    pub timeout_s: u32,
    /// Whitelist entries from the modparam, kept across reloads.
    pub static_whitelist: Vec<Cidr>,
}

/// State shared between the persistence process and the others.
#[derive(Default)]
pub struct Shared {
    cursor: AtomicU64,
    sync_requested: AtomicU64,
    sync_done: AtomicU64,
    reload_requested: AtomicU64,
    reload_done: AtomicU64,
    reload_result: AtomicU64,
    pub last_sync_s: AtomicU64,
    pub writes: AtomicU64,
    pub errors: AtomicU64,
    pub connected: AtomicU64,
    loaded: AtomicU64,
}

struct Persist {
    settings: Settings,
    shared: &'static Shared,
    /// Bans loaded in mod_init, announced (E_SEC_BAN) by the persistence
    /// process once OpenSIPS runs.
    loaded_at_start: Vec<BanRecord>,
}

static PERSIST: OnceCell<Persist> = OnceCell::new();

pub fn shared() -> Option<&'static Shared> {
    PERSIST.get().map(|p| p.shared)
}

/// The process export; `no` is set to 1 in mod_init when db_url is given.
#[repr(transparent)]
pub struct ProcTable(UnsafeCell<[ProcExport; 2]>);
// SAFETY: written once in mod_init (main process, before the fork and
// before OpenSIPS reads it), read-only afterwards.
unsafe impl Sync for ProcTable {}

pub static PROCS: ProcTable = ProcTable(UnsafeCell::new([
    ProcExport {
        name: c"rsec persistence".as_ptr(),
        pre_fork_function: None,
        post_fork_function: None,
        function: Some(persist_main),
        no: 0,
        flags: PROC_FLAG_INITCHILD | PROC_FLAG_NEEDS_SCRIPT,
    },
    ProcExport { name: std::ptr::null(), pre_fork_function: None, post_fork_function: None, function: None, no: 0, flags: 0 },
]));

impl ProcTable {
    pub const fn as_ptr(&'static self) -> *const ProcExport {
        self.0.get() as *const ProcExport
    }
}

/// Why persistence cannot start (OpenSIPS then refuses to start).
pub type InitError = String;

/// Called from mod_init once the engine exists. Connection trouble is not
/// fatal (the persistence process retries); bad settings, wrong credentials
/// and a schema mismatch are.
pub fn init(e: &Engine, settings: Settings) -> Result<(), InitError> {
    let mut region = Region::new(4096).map_err(|err| format!("cannot map persistence state: {err}"))?;
    let shared = region.alloc::<Shared>().map_err(|err| err.to_string())?;
    // Region has no Drop: the mapping outlives this handle, like the engine's.
    let now = now_us();
    let mut loaded = Vec::new();
    match Conn::connect(&settings.url, settings.timeout_s) {
        Ok(c) => {
            store::check_schema(&c).map_err(|m| format!("db_url {}: {m}", settings.url.redacted()))?;
            loaded = load_state(&c, e, &settings, shared, now).map_err(|err| format!("db_url {}: {err}", settings.url.redacted()))?;
            rsec_log!(Info, "mod_init", "loaded {} bans in force from {}", loaded.len(), settings.url.redacted());
        }
        Err(err) if err.is_config_error() => {
            return Err(format!("db_url {}: {err}", settings.url.redacted()));
        }
        Err(err) => {
            rsec_log!(
                Err,
                "mod_init",
                "database {} unreachable ({}); starting from memory, bans will be loaded when it answers",
                settings.url.redacted(),
                err
            );
        }
    }
    // SAFETY: mod_init runs once in the main process before OpenSIPS reads
    // the process table (see ProcTable).
    unsafe { (*PROCS.0.get())[0].no = 1 };
    PERSIST
        .set(Persist { settings, shared, loaded_at_start: loaded })
        .map_err(|_| "persistence initialised twice".to_owned())
}

/// Loads bans in force, the stored whitelist and the change cursor.
fn load_state(c: &Conn, e: &Engine, s: &Settings, shared: &Shared, now: u64) -> Result<Vec<BanRecord>, DbError> {
    reload_whitelist(c, e, s)?;
    let cursor = store::last_change_id(c)?;
    let (bans, bad) = store::load_bans(c, now / US)?;
    if bad > 0 {
        rsec_log!(Warn, "persistence", "{} rows of rsec_bans could not be read and were skipped", bad);
    }
    let mut installed = Vec::new();
    for b in bans {
        let exp = b.expires_s * US;
        match e.restore_ban(b.target, b.reason, b.created_s * US, exp, now) {
            Ok(Some(BanOutcome::Created | BanOutcome::Updated)) => {
                if let Ok(Some(rec)) = e.lookup_ban(&b.target.addr, now) {
                    installed.push(rec);
                }
            }
            Ok(Some(BanOutcome::TableFull)) => rsec_log!(Err, "persistence", "ban table full loading {} (raise max_bans)", b.target),
            Ok(_) => {}
            Err(err) => rsec_log!(Err, "persistence", "cannot install ban {}: {}", b.target, err),
        }
    }
    shared.cursor.store(cursor, Ordering::Relaxed);
    shared.loaded.store(1, Ordering::Relaxed);
    shared.last_sync_s.store(now / US, Ordering::Relaxed);
    Ok(installed)
}

fn reload_whitelist(c: &Conn, e: &Engine, s: &Settings) -> Result<usize, DbError> {
    let (rows, bad) = store::load_whitelist(c)?;
    for b in &bad {
        rsec_log!(Err, "persistence", "rsec_whitelist row skipped: {}", b);
    }
    let mut all = s.static_whitelist.clone();
    for r in rows {
        if !all.contains(&r) {
            all.push(r);
        }
    }
    let n = all.len();
    if e.whitelist().replace(all).is_err() {
        rsec_log!(Err, "persistence", "whitelist full: rsec_whitelist has more rows than fit (512 in all)");
    }
    Ok(n)
}

/// Queues a decision for the database (no-op without db_url). Never blocks
/// beyond one short critical section; a full queue is counted and logged.
pub fn record(c: Change) {
    let Some(q) = engine().and_then(|e| e.queue()) else { return };
    if !q.push(c) {
        let d = q.dropped();
        if d == 1 || d % 1000 == 0 {
            rsec_log!(Err, "persistence", "db queue full ({} waiting): {} ban changes not persisted so far (raise db_queue_size)", q.depth(), d);
        }
    }
}

/// Asks the persistence process for a sync now and waits for it (MI).
pub fn request_sync(wait: Duration) -> Result<u64, &'static str> {
    let s = connected_shared()?;
    let want = s.sync_requested.fetch_add(1, Ordering::AcqRel) + 1;
    wait_for(&s.sync_done, want, wait).map(|_| s.cursor.load(Ordering::Relaxed))
}

/// Asks the persistence process to reload rsec_whitelist and waits (MI).
pub fn request_whitelist_reload(wait: Duration) -> Result<u64, &'static str> {
    let s = connected_shared()?;
    let want = s.reload_requested.fetch_add(1, Ordering::AcqRel) + 1;
    wait_for(&s.reload_done, want, wait).map(|_| s.reload_result.load(Ordering::Relaxed))
}

/// The shared state, when the persistence process holds a connection: an
/// MI request is refused at once rather than after a timeout when the
/// database is known to be away.
fn connected_shared() -> Result<&'static Shared, &'static str> {
    let s = shared().ok_or("no db_url configured")?;
    if s.connected.load(Ordering::Relaxed) == 0 {
        return Err("the database is unreachable (see db_errors and the log)");
    }
    Ok(s)
}

fn wait_for(done: &AtomicU64, want: u64, wait: Duration) -> Result<(), &'static str> {
    let deadline = Instant::now() + wait;
    while done.load(Ordering::Acquire) < want {
        if Instant::now() >= deadline {
            return Err("the database did not answer in time (see db_errors and the log)");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

unsafe extern "C" fn persist_main(_rank: c_int) {
    guard("persistence process", (), run);
    // The process must not return into OpenSIPS: a clean exit is a crash to it.
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn run() {
    let (Some(p), Some(e)) = (PERSIST.get(), engine()) else { return };
    for rec in &p.loaded_at_start {
        events::ban(rec, events::FROM_DB);
    }
    let s = &p.settings;
    let mut conn: Option<Conn> = None;
    let mut backoff = Duration::from_secs(1);
    let mut next_connect = Instant::now();
    let mut sched = Schedule {
        next_sync: Instant::now() + Duration::from_secs(s.sync_interval_s as u64),
        next_prune: Instant::now(),
        seen: Seen::default(),
    };
    loop {
        if conn.is_none() && Instant::now() >= next_connect {
            match connect(p, e) {
                Ok(c) => {
                    rsec_log!(Notice, "persistence", "connected to {}", s.url.redacted());
                    p.shared.connected.store(1, Ordering::Relaxed);
                    conn = Some(c);
                    backoff = Duration::from_secs(1);
                }
                Err(err) => {
                    p.shared.errors.fetch_add(1, Ordering::Relaxed);
                    rsec_log!(Err, "persistence", "{} unreachable: {}; retrying in {}s", s.url.redacted(), err, backoff.as_secs());
                    next_connect = Instant::now() + backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        if let Some(c) = &conn {
            if let Err(err) = service(c, p, e, &mut sched) {
                p.shared.errors.fetch_add(1, Ordering::Relaxed);
                p.shared.connected.store(0, Ordering::Relaxed);
                rsec_log!(Err, "persistence", "database error, reconnecting: {}", err);
                conn = None;
                next_connect = Instant::now() + backoff;
            }
        }
        let busy = e.queue().is_some_and(|q| q.depth() > 0) && conn.is_some();
        std::thread::sleep(Duration::from_millis(if busy { 5 } else { 50 }));
    }
}

/// When the periodic jobs run next, and what the import has seen.
struct Schedule {
    next_sync: Instant,
    next_prune: Instant,
    seen: Seen,
}

/// One round with a live connection: write what is queued, then import,
/// reload and prune when due or asked. The first error ends the round (and
/// the connection).
fn service(c: &Conn, p: &Persist, e: &Engine, sched: &mut Schedule) -> Result<(), DbError> {
    let sh = p.shared;
    drain(c, p, e)?;

    let want = sh.sync_requested.load(Ordering::Acquire);
    if Instant::now() >= sched.next_sync || sh.sync_done.load(Ordering::Acquire) < want {
        import(c, p, e, &mut sched.seen)?;
        sh.sync_done.fetch_max(want, Ordering::AcqRel);
        sched.next_sync = Instant::now() + Duration::from_secs(p.settings.sync_interval_s as u64);
    }

    let want = sh.reload_requested.load(Ordering::Acquire);
    if sh.reload_done.load(Ordering::Acquire) < want {
        let n = reload_whitelist(c, e, &p.settings)?;
        sh.reload_result.store(n as u64, Ordering::Relaxed);
        sh.reload_done.fetch_max(want, Ordering::AcqRel);
        rsec_log!(Notice, "persistence", "whitelist reloaded: {} entries", n);
    }

    if Instant::now() >= sched.next_prune {
        store::prune(c, LOG_RETENTION_S, now_us() / US)?;
        sched.next_prune = Instant::now() + Duration::from_secs(600);
    }
    Ok(())
}

fn connect(p: &Persist, e: &Engine) -> Result<Conn, String> {
    let c = Conn::connect(&p.settings.url, p.settings.timeout_s).map_err(|e| e.to_string())?;
    store::check_schema(&c)?;
    if p.shared.loaded.load(Ordering::Relaxed) == 0 {
        // The database was down at start-up: load now, and announce.
        let installed = load_state(&c, e, &p.settings, p.shared, now_us()).map_err(|e| e.to_string())?;
        rsec_log!(Notice, "persistence", "loaded {} bans in force (database was unreachable at start-up)", installed.len());
        for rec in &installed {
            events::ban(rec, events::FROM_DB);
        }
    }
    Ok(c)
}

/// Writes queued decisions in batches; a batch is dropped from the queue
/// only once committed.
fn drain(c: &Conn, p: &Persist, e: &Engine) -> Result<(), DbError> {
    let Some(q) = e.queue() else { return Ok(()) };
    loop {
        let batch = q.peek(BATCH);
        if batch.is_empty() {
            return Ok(());
        }
        store::write_batch(c, &p.settings.node_id, &batch)?;
        q.pop(batch.len());
        p.shared.writes.fetch_add(batch.len() as u64, Ordering::Relaxed);
    }
}

/// Which change-log rows this node has already taken into account: every
/// id up to `floor` (the log as loaded at start-up, or passed long ago), and
/// the ids above it seen since. Re-applying a row would undo what came
/// after it (a lifted ban would come back until its unban row followed).
#[derive(Default)]
struct Seen {
    floor: Option<u64>,
    ids: std::collections::BTreeSet<u64>,
}

impl Seen {
    /// True the first time `id` is offered.
    fn first_time(&mut self, id: u64, start_cursor: u64) -> bool {
        let floor = *self.floor.get_or_insert(start_cursor);
        id > floor && self.ids.insert(id)
    }

    /// Forgets ids the look-back will not read again.
    fn advance(&mut self, cursor: u64) {
        let new_floor = cursor.saturating_sub(LOOKBACK);
        if self.floor.is_some_and(|f| new_floor > f) {
            self.floor = Some(new_floor);
            self.ids = self.ids.split_off(&(new_floor + 1));
        }
    }
}

/// Applies the changes other nodes logged since the cursor, oldest first.
/// Our own rows were applied when they were made.
fn import(c: &Conn, p: &Persist, e: &Engine, seen: &mut Seen) -> Result<(), DbError> {
    let mut cursor = p.shared.cursor.load(Ordering::Relaxed);
    let start = cursor;
    let mut from = cursor.saturating_sub(LOOKBACK);
    loop {
        let changes = store::changes_since(c, from, 1000)?;
        let now = now_us();
        for ch in &changes {
            cursor = cursor.max(ch.id);
            if !seen.first_time(ch.id, start) || ch.node_id == p.settings.node_id {
                continue;
            }
            let b = ch.ban;
            if ch.unban {
                if let Ok(Some(ban)) = e.unban(&b.target, now) {
                    events::flush_lapsed(e);
                    events::unban_from(&BanRecord { target: b.target, ban }, UnbanReason::Manual, false);
                }
            } else if let Ok(Some(BanOutcome::Created | BanOutcome::Updated)) =
                e.restore_ban(b.target, b.reason, b.created_s * US, b.expires_s * US, now)
            {
                events::flush_lapsed(e);
                if let Ok(Some(rec)) = e.lookup_ban(&b.target.addr, now) {
                    events::ban(&rec, events::FROM_DB);
                }
            }
        }
        p.shared.cursor.store(cursor, Ordering::Relaxed);
        seen.advance(cursor);
        if changes.len() < 1000 {
            break;
        }
        from = changes.last().map_or(from, |c| c.id);
    }
    p.shared.last_sync_s.store(now_us() / US, Ordering::Relaxed);
    Ok(())
}

/// Statistics helpers.
pub fn queue_depth() -> u64 {
    engine().and_then(|e| e.queue()).map_or(0, |q| q.depth())
}

pub fn queue_drops() -> u64 {
    engine().and_then(|e| e.queue()).map_or(0, |q| q.dropped())
}
