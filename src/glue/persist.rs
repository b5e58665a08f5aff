//! Ban persistence and multi-node sync, off the SIP path.
//!
//! Workers, the timer and MI only push decisions into the engine's bounded
//! queue (decisions.rs does that). One dedicated OpenSIPS process ("rsec
//! persistence") drains it to MySQL in batches, imports the changes other
//! nodes wrote every `db_sync_interval`, and reconnects with backoff when
//! the database goes away; the queue keeps everything meanwhile. mod_init loads the bans in
//! force before OpenSIPS forks, so they are enforced from the first request.

use std::os::raw::c_int;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::db::store::Logged;
use crate::db::{store, Conn, DbError, DbUrl};
use crate::engine::{BanOutcome, BanRecord, Cidr, Engine, TableError, UserBlock, US_PER_S as US};
use crate::ffi::guard::guard;
use crate::ffi::log::shown;
use crate::ffi::process::ProcTable;
use crate::ffi::sys::{PROC_FLAG_INITCHILD, PROC_FLAG_NEEDS_SCRIPT};
use crate::rsec_log;
use crate::shm::Region;

use super::decisions::{self, Origin};
use super::{engine, now_us};
/// Changes per transaction.
const BATCH: usize = 200;
/// Re-read this many change ids behind the cursor: ids from concurrent
/// writers can commit out of order, so a row may appear below the cursor
/// after it was passed. Rows already applied are remembered and skipped.
const LOOKBACK: u64 = 64;
/// Change-log rows older than this are pruned (seconds).
const LOG_RETENTION_S: u64 = 86_400;
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long the bans loaded at start-up wait for a subscriber to their
/// events before they are announced anyway.
const ANNOUNCE_GRACE: Duration = Duration::from_secs(5);

/// Settings from the modparams, fixed in mod_init (the intervals are in
/// the engine's Config).
pub struct Settings {
    pub url: DbUrl,
    pub node_id: String,
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
    profiles_requested: AtomicU64,
    profiles_done: AtomicU64,
    /// Profiles set by the last reload; u64::MAX: no rsec_profiles table.
    profiles_result: AtomicU64,
    pub last_sync_s: AtomicU64,
    pub writes: AtomicU64,
    pub errors: AtomicU64,
    pub connected: AtomicU64,
    loaded: AtomicU64,
}

crate::shm_safe!(Shared);

struct Persist {
    settings: Settings,
    shared: &'static Shared,
    /// Bans loaded in mod_init, announced (E_SEC_BAN) by the persistence
    /// process once OpenSIPS runs.
    loaded_at_start: Loaded,
}

static PERSIST: OnceLock<Persist> = OnceLock::new();

pub fn shared() -> Option<&'static Shared> {
    PERSIST.get().map(|p| p.shared)
}

/// The persistence process; mod_init enables it when db_url is given.
pub static PROCS: ProcTable = ProcTable::new(
    c"rsec persistence",
    persist_main,
    PROC_FLAG_INITCHILD | PROC_FLAG_NEEDS_SCRIPT,
);

/// Why persistence cannot start (OpenSIPS then refuses to start).
pub type InitError = String;

/// Called from mod_init once the engine exists. Connection trouble is not
/// fatal (the persistence process retries); bad settings, wrong credentials
/// and a schema mismatch are.
pub fn init(e: &Engine, settings: Settings) -> Result<(), InitError> {
    let mut region =
        Region::new(4096).map_err(|err| format!("cannot map persistence state: {err}"))?;
    let shared = region.alloc::<Shared>().map_err(|err| err.to_string())?;
    // Region has no Drop: the mapping outlives this handle, like the engine's.
    let now = now_us();
    let mut loaded = Loaded::default();
    let timeout_s = e.config().db_timeout_s;
    match Conn::connect(&settings.url, timeout_s) {
        Ok(c) => {
            store::check_schema(&c)
                .map_err(|m| format!("db_url {}: {m}", settings.url.redacted()))?;
            loaded = load_state(&c, e, &settings, shared, now)
                .map_err(|err| format!("db_url {}: {err}", settings.url.redacted()))?;
            rsec_log!(
                Info,
                "mod_init",
                "loaded {} bans in force and {} blocked accounts from {}",
                loaded.bans.len(),
                loaded.blocks.len(),
                settings.url.redacted()
            );
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
    PROCS.enable();
    PERSIST
        .set(Persist {
            settings,
            shared,
            loaded_at_start: loaded,
        })
        .map_err(|_| "persistence initialised twice".to_owned())
}

/// Loads bans in force, the stored whitelist and the change cursor.
/// What a load from the database put in force, to be announced once
/// OpenSIPS runs (mod_init cannot raise events).
#[derive(Default)]
pub struct Loaded {
    pub bans: Vec<BanRecord>,
    pub blocks: Vec<UserBlock>,
}

fn load_state(
    c: &Conn,
    e: &Engine,
    s: &Settings,
    shared: &Shared,
    now: u64,
) -> Result<Loaded, DbError> {
    reload_whitelist(c, e, s)?;
    reload_profiles(c, e)?;
    let cursor = store::last_change_id(c)?;
    let (bans, bad) = store::load_bans(c, now / US)?;
    if bad > 0 {
        rsec_log!(
            Warn,
            "persistence",
            "{} rows of rsec_bans could not be read and were skipped",
            bad
        );
    }
    let mut installed = Vec::new();
    for b in bans {
        // Straight into the engine, not through decisions: this runs in
        // mod_init, before events can be raised; the persistence process
        // announces them once OpenSIPS runs (decisions::announce_loaded).
        let r = e.restore_ban(
            b.target,
            b.reason,
            b.created_s * US,
            b.expires_s * US,
            Some(&b.note),
            now,
        );
        installed.extend(enforced(&b.target, r));
    }
    // Straight into the engine, like the bans: events come once OpenSIPS runs.
    let mut blocks = Vec::new();
    for b in &store::load_user_blocks(c, now / US)? {
        match e.restore_user_block(&b.user, b.blocked_s * US, b.expires_s * US, now) {
            Ok(r) => blocks.extend(r),
            Err(err) => rsec_log!(
                Err,
                "persistence",
                "cannot restore the block of '{}': {}",
                shown(b.user.as_bytes()),
                err
            ),
        }
    }
    let window = e.config().recidive_window_s;
    if window > 0 {
        let offenders = store::load_offenders(c, now / US, window)?;
        for (target, o) in &offenders {
            if let Err(err) = e.restore_offense(target, *o, now) {
                rsec_log!(
                    Err,
                    "persistence",
                    "cannot restore the history of {}: {}",
                    target,
                    err
                );
            }
        }
        rsec_log!(
            Info,
            "persistence",
            "loaded the history of {} repeat-offender candidates",
            offenders.len()
        );
    }
    shared.cursor.store(cursor, Ordering::Relaxed);
    shared.loaded.store(1, Ordering::Relaxed);
    shared.last_sync_s.store(now / US, Ordering::Relaxed);
    Ok(Loaded {
        bans: installed,
        blocks,
    })
}

/// The ban a stored row put in force, if it changed anything; a row this
/// node will not enforce (table full, over the whitelist, too broad) or
/// could not install is logged.
fn enforced(target: &Cidr, r: Result<Option<BanOutcome>, TableError>) -> Option<BanRecord> {
    match r {
        Ok(Some(BanOutcome::Created(rec) | BanOutcome::Updated(rec))) => return Some(rec),
        Ok(Some(BanOutcome::TableFull)) => rsec_log!(
            Err,
            "persistence",
            "ban table full loading {} (raise max_bans)",
            target
        ),
        Ok(Some(BanOutcome::Whitelisted(w))) => rsec_log!(
            Warn,
            "persistence",
            "stored ban {} not enforced: it is or contains whitelisted {}",
            target,
            w
        ),
        Ok(Some(BanOutcome::TooBroad(why))) => rsec_log!(
            Warn,
            "persistence",
            "stored ban {} not enforced: {}",
            target,
            why
        ),
        Ok(Some(BanOutcome::AlreadyBanned(_)) | None) => {}
        Err(err) => rsec_log!(Err, "persistence", "cannot install ban {}: {}", target, err),
    }
    None
}

fn reload_whitelist(c: &Conn, e: &Engine, s: &Settings) -> Result<usize, DbError> {
    let (rows, bad) = store::load_whitelist(c)?;
    for b in &bad {
        rsec_log!(Err, "persistence", "rsec_whitelist row skipped: {}", b);
    }
    // The whitelist keeps a prefix listed twice once, in O(n): a linear
    // search per row here would be quadratic in a 65,536-row table.
    let mut all = s.static_whitelist.clone();
    all.extend(rows);
    match e.whitelist_replace(all) {
        Ok(refused) => {
            for (c, why) in &refused {
                rsec_log!(
                    Err,
                    "persistence",
                    "rsec_whitelist row {} skipped: {}",
                    c,
                    why
                );
            }
        }
        Err(err) => rsec_log!(Err, "persistence", "whitelist not reloaded: {}", err),
    }
    Ok(e.whitelist().list().len())
}

/// Asks the persistence process for a sync now and waits for it (MI).
pub fn request_sync(wait: Duration) -> Result<u64, &'static str> {
    let s = connected_shared()?;
    let want = s.sync_requested.fetch_add(1, Ordering::AcqRel) + 1;
    wait_for(&s.sync_done, want, wait).map(|_| s.cursor.load(Ordering::Relaxed))
}

/// Sets every profile stored in rsec_profiles (over the modparams' own of
/// the same name); rows that do not parse are logged and skipped. The
/// number set, or None without the table.
fn reload_profiles(c: &Conn, e: &Engine) -> Result<Option<usize>, DbError> {
    let Some(rows) = store::load_profiles(c)? else {
        return Ok(None);
    };
    let mut set = 0;
    for text in &rows {
        match e.set_profile(text) {
            Ok(_) => set += 1,
            Err(why) => rsec_log!(Err, "persistence", "rsec_profiles row skipped: {}", why),
        }
    }
    Ok(Some(set))
}

/// Asks the persistence process to reload rsec_profiles and waits (MI):
/// the profiles set, or None when the database has no such table.
pub fn request_profiles_reload(wait: Duration) -> Result<Option<u64>, &'static str> {
    let s = connected_shared()?;
    let want = s.profiles_requested.fetch_add(1, Ordering::AcqRel) + 1;
    wait_for(&s.profiles_done, want, wait)
        .map(|_| Some(s.profiles_result.load(Ordering::Relaxed)).filter(|&n| n != u64::MAX))
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

extern "C" fn persist_main(_rank: c_int) {
    guard("persistence process", || (), run);
    // The process must not return into OpenSIPS: a clean exit is a crash to it.
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn run() {
    let (Some(p), Some(e)) = (PERSIST.get(), engine()) else {
        return;
    };
    // What was loaded before OpenSIPS ran is announced once someone
    // listens (or after a grace time, when nobody is going to).
    let mut unannounced = Some(Instant::now() + ANNOUNCE_GRACE);
    let s = &p.settings;
    let sync_every = Duration::from_secs(e.config().db_sync_interval_s as u64);
    let mut conn: Option<Conn> = None;
    let mut backoff = Duration::from_secs(1);
    let mut next_connect = Instant::now();
    let mut sched = Schedule {
        next_sync: Instant::now() + sync_every,
        next_prune: Instant::now(),
        seen: Seen::default(),
    };
    loop {
        if let Some(deadline) = unannounced {
            if super::events::ban_subscribed() || Instant::now() >= deadline {
                decisions::announce_loaded(e, &p.loaded_at_start);
                unannounced = None;
            }
        }
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
                    rsec_log!(
                        Err,
                        "persistence",
                        "{} unreachable: {}; retrying in {}s",
                        s.url.redacted(),
                        err,
                        backoff.as_secs()
                    );
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
        sched.next_sync =
            Instant::now() + Duration::from_secs(e.config().db_sync_interval_s as u64);
    }

    let want = sh.reload_requested.load(Ordering::Acquire);
    if sh.reload_done.load(Ordering::Acquire) < want {
        let n = reload_whitelist(c, e, &p.settings)?;
        sh.reload_result.store(n as u64, Ordering::Relaxed);
        sh.reload_done.fetch_max(want, Ordering::AcqRel);
        rsec_log!(Notice, "persistence", "whitelist reloaded: {} entries", n);
    }

    let want = sh.profiles_requested.load(Ordering::Acquire);
    if sh.profiles_done.load(Ordering::Acquire) < want {
        let n = reload_profiles(c, e)?;
        sh.profiles_result
            .store(n.map_or(u64::MAX, |n| n as u64), Ordering::Relaxed);
        sh.profiles_done.fetch_max(want, Ordering::AcqRel);
        match n {
            Some(n) => rsec_log!(Notice, "persistence", "profiles reloaded: {} set", n),
            None => rsec_log!(
                Warn,
                "persistence",
                "profiles not reloaded: no rsec_profiles table"
            ),
        }
    }

    if Instant::now() >= sched.next_prune {
        store::prune(
            c,
            LOG_RETENTION_S,
            now_us() / US,
            e.config().recidive_window_s,
        )?;
        sched.next_prune = Instant::now() + Duration::from_secs(600);
    }
    Ok(())
}

fn connect(p: &Persist, e: &Engine) -> Result<Conn, String> {
    let c = Conn::connect(&p.settings.url, e.config().db_timeout_s).map_err(|e| e.to_string())?;
    store::check_schema(&c)?;
    if p.shared.loaded.load(Ordering::Relaxed) == 0 {
        // The database was down at start-up: load now, and announce.
        let installed =
            load_state(&c, e, &p.settings, p.shared, now_us()).map_err(|e| e.to_string())?;
        rsec_log!(
            Notice,
            "persistence",
            "loaded {} bans in force (database was unreachable at start-up)",
            installed.bans.len()
        );
        decisions::announce_loaded(e, &installed);
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
        p.shared
            .writes
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
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
            match &ch.what {
                Logged::Unban(b) => {
                    if let Err(err) = decisions::unban(e, Origin::Database, &b.target, now) {
                        rsec_log!(Err, "persistence", "cannot lift ban {}: {}", b.target, err);
                    }
                }
                Logged::Ban(b) => {
                    let r = decisions::restore(e, b, now);
                    // decisions::restore raised the event for what it put in force.
                    enforced(&b.target, r);
                }
                Logged::Block(b) => {
                    if let Err(err) = decisions::restore_user_block(e, b, now) {
                        rsec_log!(
                            Err,
                            "persistence",
                            "cannot block account '{}': {}",
                            shown(b.user.as_bytes()),
                            err
                        );
                    }
                }
                Logged::Unblock(u) => {
                    if let Err(err) = decisions::user_unblock(e, Origin::Database, u, now) {
                        rsec_log!(
                            Err,
                            "persistence",
                            "cannot unblock account '{}': {}",
                            shown(u.as_bytes()),
                            err
                        );
                    }
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
