//! Every call into the engine, and nothing else: what the typical script
//! (opensips-cfg-examples/rsec.cfg) asks of rsec for one message, and the
//! sweep timer. The rest of the tool only sees [`Outcome`]s.
//!
//! The script emulated, per request:
//! ```text
//! sec_pike_check();     if ($rc == -1 || $rc == -2) exit;   # every ban, floods
//! sec_scanner_check();  if ($rc == -1 || $rc == -2) exit;   # with a User-Agent
//! ```
//! and per reply whose status is in `--auth-fail-on`, `sec_auth_fail()`
//! against the address the reply goes to, as the user of its To URI.

use std::net::IpAddr;

use rsec::engine::{
    AuthVerdict, BanRecord, Cidr, Config, Engine, IpKey, Note, PikeVerdict, Reason, ScannerVerdict,
    Scope, ScopedBan, Side, US_PER_S,
};

/// One SIP request as the script sees it.
pub struct Request<'a> {
    /// Capture time, microseconds since the epoch.
    pub ts_us: u64,
    pub src: IpAddr,
    pub method: &'a [u8],
    pub user_agent: Option<&'a [u8]>,
    /// The Request-URI's host: the tenant the script names with
    /// `sec_tenant("$rd")`, when the replay is told to (`--tenant-from`).
    pub tenant: Option<&'a [u8]>,
}

/// One SIP reply.
pub struct Reply<'a> {
    pub ts_us: u64,
    /// Where the reply goes: the client whose authentication failed.
    pub dst: IpAddr,
    pub status: u16,
    /// The user part of the To URI.
    pub to_user: Option<&'a [u8]>,
}

/// A ban as the report shows it, in capture time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ban {
    pub rule: Reason,
    /// What is banned: the address, or the prefix it falls in.
    pub target: Cidr,
    pub start_us: u64,
    /// `None`: until unbanned.
    pub end_us: Option<u64>,
    /// The profile whose thresholds made it.
    pub profile: Note,
    /// The tenant of the request that made it (empty: none).
    pub tenant: Note,
    /// Only for that tenant's traffic (`ban_scope=tenant`).
    pub tenant_only: bool,
    /// Decided under dry run: live, nothing would have been refused.
    pub dry_run: bool,
}

impl Ban {
    pub fn length_s(&self) -> Option<u64> {
        self.end_us
            .map(|e| (e.saturating_sub(self.start_us) + US_PER_S / 2) / US_PER_S)
    }
}

/// What happened to a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Allowed (or whitelisted): the script goes on.
    Passed,
    /// Refused. `ban`: the ban in force (`None`: over the limit with no
    /// room in the ban table); `made`: this request made it.
    Lost { ban: Option<Ban>, made: bool },
}

/// What a reply did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyOutcome {
    /// Its status is not an authentication failure.
    Ignored,
    /// A failure counted, below every threshold.
    Counted,
    /// The failure banned the reply's destination.
    Banned(Ban),
    /// Over a threshold with no room in the ban table.
    Unbanned,
    /// The destination was banned already (or whitelisted): not counted
    /// against it.
    NotCounted,
}

/// How the script is emulated.
#[derive(Clone, Debug)]
pub struct Script {
    /// Reply statuses counted as failed authentications.
    pub auth_fail_on: Vec<u16>,
    /// Whether sec_scanner_check() runs.
    pub scanner: bool,
    /// Whether requests name their Request-URI host as their tenant.
    pub tenant_from_ruri: bool,
}

/// One engine, driven as OpenSIPS drives it.
pub struct Emulator {
    engine: Engine,
    script: Script,
    /// Engine time minus capture time (see [`Emulator::now`]).
    offset_us: Option<u64>,
    /// When the sweep last ran, in engine time.
    last_sweep_us: u64,
    /// Bans the engine made on the side (a prefix, when enough of its
    /// addresses were banned), not yet handed on.
    side: Vec<Ban>,
}

/// Engine time is capture time, except that a capture whose clock starts
/// within a day of the epoch runs a day later: the engine reads a time of
/// zero as "never".
const EPOCH_GUARD_US: u64 = 86_400 * US_PER_S;

impl Emulator {
    pub fn new(cfg: Config, script: Script) -> Result<Emulator, String> {
        let engine = Engine::new(cfg).map_err(|e| e.to_string())?;
        Ok(Emulator {
            engine,
            script,
            offset_us: None,
            last_sweep_us: 0,
            side: Vec::new(),
        })
    }

    /// Engine time for a capture time; the sweep runs first whenever a new
    /// second of capture time begins (the module's timer runs every
    /// second; idle seconds are skipped: one sweep catches up on them).
    fn now(&mut self, ts_us: u64) -> Result<u64, String> {
        let offset = *self.offset_us.get_or_insert(if ts_us < EPOCH_GUARD_US {
            EPOCH_GUARD_US
        } else {
            0
        });
        let now = ts_us + offset;
        if now / US_PER_S > self.last_sweep_us / US_PER_S {
            self.engine.sweep(now).map_err(|e| e.to_string())?;
            self.last_sweep_us = now;
        }
        Ok(now)
    }

    fn ban(&self, rec: &BanRecord) -> Ban {
        let off = self.offset_us.unwrap_or(0);
        // The decision just recorded names its profile and tenant.
        let d = self
            .engine
            .decisions(8, Some(&rec.target.addr))
            .into_iter()
            .find(|d| d.target == rec.target);
        let profile = d.map_or_else(
            || "default".to_owned(),
            |d| self.engine.profile_name(d.profile),
        );
        let tenant = d
            .filter(|d| d.tenant != 0)
            .and_then(|d| self.engine.tenant_label(d.tenant))
            .unwrap_or_default();
        Ban {
            rule: rec.ban.reason,
            target: rec.target,
            start_us: rec.ban.created_us.saturating_sub(off),
            end_us: (!rec.ban.is_permanent()).then(|| rec.ban.expires_us.saturating_sub(off)),
            profile: Note::cut(profile.as_bytes()),
            tenant: Note::cut(tenant.as_bytes()),
            tenant_only: false,
            dry_run: false,
        }
    }

    /// A ban for one tenant, or one dry run only pretended.
    fn scoped(&self, b: &ScopedBan) -> Ban {
        Ban {
            tenant_only: !b.dry_run,
            dry_run: b.dry_run,
            ..self.ban(&b.rec)
        }
    }

    /// The scope the script would check a request from `ip` in: the
    /// profile `profile_prefix` gives it, and its tenant.
    fn scope(&self, ip: &IpKey, tenant: Option<&[u8]>, now: u64) -> Result<Scope, String> {
        let tenant = match tenant.filter(|t| !t.is_empty()) {
            None => 0,
            Some(t) => self
                .engine
                .tenant(t, now)
                .map_err(|e| e.to_string())?
                .map_or(0, |t| t.0),
        };
        Ok(Scope {
            profile: self.engine.profile_of(ip),
            tenant,
        })
    }

    /// Collects what the engine decided on the side of the last call (a
    /// prefix banned); the lapsed bans it reclaimed on the way are dropped
    /// (the report reads a ban's end from the ban itself).
    fn drain(&mut self) {
        self.engine.drain_lapsed();
        self.engine.drain_decided();
        for s in self.engine.drain_side() {
            if let Side::SubnetBanned { rec, .. } = s {
                let b = self.ban(&rec);
                self.side.push(b);
            }
        }
    }

    /// The ban refusing `ip` now (a read: no hit is counted on it).
    fn in_force(&mut self, ip: &IpKey, reason: Reason, now: u64) -> Result<Ban, String> {
        match self.engine.lookup_ban(ip, now).map_err(|e| e.to_string())? {
            Some(rec) => Ok(self.ban(&rec)),
            // Lapsed between the verdict and now: named for the moment.
            None => {
                let at = now - self.offset_us.unwrap_or(0);
                Ok(Ban {
                    rule: reason,
                    target: Cidr::host(*ip),
                    start_us: at,
                    end_us: Some(at),
                    profile: Note::cut(b"default"),
                    tenant: Note::default(),
                    tenant_only: false,
                    dry_run: false,
                })
            }
        }
    }

    /// sec_pike_check(), then sec_scanner_check() if it let the request on.
    pub fn check(&mut self, r: &Request) -> Result<Outcome, String> {
        let now = self.now(r.ts_us)?;
        let ip = IpKey::from_ip(r.src);
        let tenant = r.tenant.filter(|_| self.script.tenant_from_ruri);
        let scope = self.scope(&ip, tenant, now)?;
        let pike = self
            .engine
            .pike_check_scoped(scope, &ip, Some(r.method), now)
            .map_err(|e| e.to_string());
        self.drain();
        let lost = |ban, made| Ok(Outcome::Lost { ban, made });
        // A dry run's would-be ban counts as lost: what enforcing would do.
        match pike? {
            PikeVerdict::Allowed | PikeVerdict::Whitelisted => {}
            PikeVerdict::JustBanned(rec) => return lost(Some(self.ban(&rec)), true),
            PikeVerdict::Scoped(b) => return lost(Some(self.scoped(&b)), true),
            PikeVerdict::Banned(reason) | PikeVerdict::DryRunBlocked(reason) => {
                return lost(Some(self.in_force(&ip, reason, now)?), false)
            }
            PikeVerdict::OverLimitUnbanned => return lost(None, false),
        }
        let Some(ua) = r.user_agent.filter(|_| self.script.scanner) else {
            return Ok(Outcome::Passed);
        };
        let scan = self
            .engine
            .scanner_check_scoped(scope, &ip, Some(ua), now)
            .map(|(v, _)| v)
            .map_err(|e| e.to_string());
        self.drain();
        match scan? {
            ScannerVerdict::Clean | ScannerVerdict::Whitelisted => Ok(Outcome::Passed),
            ScannerVerdict::JustBanned(rec) => lost(Some(self.ban(&rec)), true),
            ScannerVerdict::Scoped(b) => lost(Some(self.scoped(&b)), true),
            ScannerVerdict::AlreadyBanned(reason) | ScannerVerdict::DryRunBlocked(reason) => {
                lost(Some(self.in_force(&ip, reason, now)?), false)
            }
            ScannerVerdict::OverLimitUnbanned => lost(None, false),
        }
    }

    /// sec_auth_fail() for a reply whose status is a failure.
    pub fn reply(&mut self, r: &Reply) -> Result<ReplyOutcome, String> {
        let now = self.now(r.ts_us)?;
        if !self.script.auth_fail_on.contains(&r.status) {
            return Ok(ReplyOutcome::Ignored);
        }
        let ip = IpKey::from_ip(r.dst);
        // A reply names no tenant: its request's profile by prefix only.
        let scope = self.scope(&ip, None, now)?;
        let v = self
            .engine
            .auth_fail_scoped(scope, &ip, r.to_user, now)
            .map_err(|e| e.to_string());
        self.drain();
        Ok(match v? {
            AuthVerdict::Counted(_) => ReplyOutcome::Counted,
            AuthVerdict::JustBanned(rec) => ReplyOutcome::Banned(self.ban(&rec)),
            AuthVerdict::Scoped(b) => ReplyOutcome::Banned(self.scoped(&b)),
            AuthVerdict::OverLimitUnbanned => ReplyOutcome::Unbanned,
            AuthVerdict::Whitelisted
            | AuthVerdict::AlreadyBanned(_)
            | AuthVerdict::DryRunBlocked(_) => ReplyOutcome::NotCounted,
        })
    }

    /// Bans made on the side since the last call (prefix bans).
    pub fn side_bans(&mut self) -> Vec<Ban> {
        std::mem::take(&mut self.side)
    }
}
