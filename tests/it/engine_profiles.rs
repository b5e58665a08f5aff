//! Profiles, tenants, dry run and the decision ring (src/engine/scoped.rs,
//! profile.rs, tenant.rs, decision.rs), without OpenSIPS.

use rsec::engine::modparams::{config_from, ModValue, ModparamError};
use rsec::engine::{AuthVerdict, Cidr, Engine, IpKey, PikeVerdict, Reason, Scope, Verdict};

const T0: u64 = 1_800_000_000_000_000;
const S: u64 = 1_000_000;

fn ip(s: &str) -> IpKey {
    IpKey::parse(s).unwrap()
}

fn cidr(s: &str) -> Cidr {
    Cidr::parse(s).unwrap()
}

/// An engine from modparams as a script writes them.
fn engine(params: &[(&str, &str)]) -> Engine {
    let given: Vec<(&str, ModValue)> = [("db_queue_size", "0"), ("max_tracked_ips", "4096")]
        .iter()
        .chain(params)
        .map(|(n, v)| (*n, ModValue::Str(v.to_string())))
        .collect();
    let cfg = config_from(given.iter().map(|(n, v)| (*n, v)))
        .unwrap_or_else(|e| panic!("modparams refused: {e}"));
    Engine::new(cfg).unwrap_or_else(|e| panic!("Engine::new: {e}"))
}

fn config_error(params: &[(&str, &str)]) -> String {
    let given: Vec<(&str, ModValue)> = params
        .iter()
        .map(|(n, v)| (*n, ModValue::Str(v.to_string())))
        .collect();
    match config_from(given.iter().map(|(n, v)| (*n, v))) {
        Ok(_) => panic!("modparams {params:?} were accepted"),
        Err(e) => e.to_string(),
    }
}

/// Sends `n` requests from `who` under `scope`, one per `gap_us`; returns
/// the verdicts.
fn send(e: &Engine, scope: Scope, who: &IpKey, n: u64, t: u64, gap_us: u64) -> Vec<PikeVerdict> {
    (0..n)
        .map(|k| {
            e.pike_check_scoped(scope, who, None, t + k * gap_us)
                .unwrap()
        })
        .collect()
}

fn first_ban(v: &[PikeVerdict]) -> Option<usize> {
    v.iter().position(|v| {
        matches!(
            v,
            PikeVerdict::JustBanned(_) | PikeVerdict::Scoped(_) | PikeVerdict::OverLimitUnbanned
        )
    })
}

// ============================================================ profiles

#[test]
fn a_trunk_profile_passes_what_the_default_bans() {
    let e = engine(&[
        ("pike_density", "20"),
        ("pike_sampling_time", "2"),
        ("profile", "trunk: pike_density=700"),
    ]);
    let trunk = Scope {
        profile: e.profile_named(b"trunk").unwrap(),
        tenant: 0,
    };
    // 300 requests/s for 2 s: 600 per window, within the trunk's 700.
    let v = send(&e, trunk, &ip("192.0.2.10"), 600, T0, S / 300);
    assert_eq!(first_ban(&v), None, "the trunk was banned");
    // A phone at 50/s under the default profile: banned at request 21.
    let v = send(&e, Scope::default(), &ip("192.0.2.20"), 100, T0, S / 50);
    assert_eq!(first_ban(&v), Some(20));
}

#[test]
fn counts_are_kept_per_profile_so_a_trunk_never_eats_the_default_budget() {
    let e = engine(&[
        ("pike_density", "10"),
        ("profile", "trunk: pike_density=1000"),
    ]);
    let trunk = Scope {
        profile: e.profile_named(b"trunk").unwrap(),
        tenant: 0,
    };
    let who = ip("192.0.2.30");
    assert_eq!(first_ban(&send(&e, trunk, &who, 500, T0, 100)), None);
    // The same address under the default profile starts from zero.
    let v = send(&e, Scope::default(), &who, 11, T0 + S / 10, 100);
    assert_eq!(first_ban(&v), Some(10), "the default count began at 0");
}

#[test]
fn a_ban_from_any_profile_is_enforced_under_every_profile() {
    let e = engine(&[
        ("pike_density", "5"),
        ("profile", "trunk: pike_density=1000"),
    ]);
    let trunk = Scope {
        profile: e.profile_named(b"trunk").unwrap(),
        tenant: 0,
    };
    let who = ip("192.0.2.40");
    assert_eq!(
        first_ban(&send(&e, Scope::default(), &who, 6, T0, 10)),
        Some(5)
    );
    let v = e.pike_check_scoped(trunk, &who, None, T0 + 100).unwrap();
    assert_eq!(v, PikeVerdict::Banned(Reason::Pike));
}

#[test]
fn a_profile_bans_with_its_own_length_and_method_limit() {
    let e = engine(&[
        ("pike_density", "1000"),
        ("pike_method_density", "REGISTER:100"),
        (
            "profile",
            "pbx: pike_ban_time=42; pike_method_density=REGISTER:3",
        ),
    ]);
    let pbx = Scope {
        profile: e.profile_named(b"pbx").unwrap(),
        tenant: 0,
    };
    let who = ip("192.0.2.50");
    let mut banned = None;
    for k in 0..10 {
        if let PikeVerdict::JustBanned(rec) = e
            .pike_check_scoped(pbx, &who, Some(b"REGISTER"), T0 + k)
            .unwrap()
        {
            banned = Some((k, rec));
            break;
        }
    }
    let (k, rec) = banned.expect("never banned");
    assert_eq!(k, 3, "the 4th REGISTER is over REGISTER:3");
    assert_eq!(rec.ban.reason, Reason::Method);
    assert_eq!((rec.ban.expires_us - rec.ban.created_us) / S, 42);
}

#[test]
fn a_source_prefix_chooses_the_profile() {
    let e = engine(&[
        ("profile", "trunk: pike_density=500"),
        ("profile_prefix", "203.0.113.0/24=trunk"),
    ]);
    let trunk = e.profile_named(b"trunk").unwrap();
    assert_eq!(e.profile_of(&ip("203.0.113.7")), trunk);
    assert_eq!(e.profile_of(&ip("203.0.114.7")), 0);
}

#[test]
fn bad_profiles_are_refused_naming_the_modparam_and_value() {
    let why = config_error(&[("profile", "trunk: pike_densty=5")]);
    assert!(
        why.contains("modparam 'profile'") && why.contains("pike_densty"),
        "{why}"
    );
    let why = config_error(&[("profile", "trunk: pike_density=0")]);
    assert!(why.contains("pike_density=0"), "{why}");
    let why = config_error(&[("profile", "no colon here")]);
    assert!(why.contains("expected 'name: setting=value"), "{why}");
    let why = config_error(&[("profile", "a: dry_run=1"), ("profile", "a: dry_run=0")]);
    assert!(why.contains("declared twice"), "{why}");
    let why = config_error(&[("profile_prefix", "10.0.0.0/8=nosuch")]);
    assert!(why.contains("no profile is named 'nosuch'"), "{why}");
    assert!(matches!(
        config_from([("profile", &ModValue::Int(3))]),
        Err(ModparamError::Str(..))
    ));
}

#[test]
fn a_profile_set_at_run_time_applies_at_once_and_refuses_new_methods() {
    let e = engine(&[
        ("pike_method_density", "INVITE:50"),
        ("profile", "trunk: pike_density=5"),
    ]);
    let trunk = Scope {
        profile: e.profile_named(b"trunk").unwrap(),
        tenant: 0,
    };
    let who = ip("192.0.2.60");
    assert_eq!(first_ban(&send(&e, trunk, &who, 6, T0, 10)), Some(5));
    assert_eq!(
        e.set_profile("trunk: pike_density=50").unwrap(),
        trunk.profile
    );
    let other = ip("192.0.2.61");
    assert_eq!(first_ban(&send(&e, trunk, &other, 50, T0, 10)), None);
    let err = e
        .set_profile("trunk: pike_method_density=OPTIONS:5")
        .unwrap_err();
    assert!(err.contains("OPTIONS had no limit at start-up"), "{err}");
    let err = e.set_profile("default: pike_density=5").unwrap_err();
    assert!(err.contains("modparams' own profile"), "{err}");
    // A new profile by reload.
    let id = e.set_profile("carrier: pike_density=9000").unwrap();
    assert_eq!(e.limits(id).pike_density, 9000);
}

// ============================================================= tenants

#[test]
fn a_tenant_whitelist_entry_does_not_whitelist_the_address_for_another_tenant() {
    let e = engine(&[
        ("pike_density", "3"),
        ("tenant_whitelist", "a.example=198.51.100.0/24"),
    ]);
    let (a, _) = e.tenant(b"a.example", T0).unwrap().unwrap();
    let (b, created) = e.tenant(b"b.example", T0).unwrap().unwrap();
    assert!(created && a != b);
    let who = ip("198.51.100.9");
    let for_a = Scope {
        profile: 0,
        tenant: a,
    };
    let for_b = Scope {
        profile: 0,
        tenant: b,
    };
    let v = send(&e, for_a, &who, 50, T0, 10);
    assert!(v.iter().all(|v| *v == PikeVerdict::Whitelisted), "{v:?}");
    let v = send(&e, for_b, &who, 5, T0, 10);
    assert_eq!(first_ban(&v), Some(3), "not whitelisted for b");
    // Nor without a tenant (the ban above already holds it).
    assert_eq!(
        e.pike_check(&who, T0 + 1000).unwrap(),
        PikeVerdict::Banned(Reason::Pike)
    );
}

#[test]
fn a_tenant_scoped_ban_refuses_that_tenant_only() {
    let e = engine(&[("profile", "shared: pike_density=3; ban_scope=tenant")]);
    let p = e.profile_named(b"shared").unwrap();
    let (a, _) = e.tenant(b"a.example", T0).unwrap().unwrap();
    let (b, _) = e.tenant(b"b.example", T0).unwrap().unwrap();
    let who = ip("198.51.100.20");
    let v = send(
        &e,
        Scope {
            profile: p,
            tenant: a,
        },
        &who,
        4,
        T0,
        10,
    );
    match v[3] {
        PikeVerdict::Scoped(sb) => {
            assert_eq!(sb.tenant, a);
            assert!(!sb.dry_run && sb.fresh);
        }
        ref other => panic!("expected a tenant ban, got {other:?}"),
    }
    assert_eq!(
        e.pike_check_scoped(
            Scope {
                profile: p,
                tenant: a
            },
            &who,
            None,
            T0 + 100
        )
        .unwrap(),
        PikeVerdict::Banned(Reason::Pike)
    );
    assert_eq!(
        e.pike_check_scoped(
            Scope {
                profile: 0,
                tenant: a
            },
            &who,
            None,
            T0 + 100
        )
        .unwrap(),
        PikeVerdict::Banned(Reason::Pike),
        "a tenant ban holds whatever the profile"
    );
    assert_eq!(
        e.pike_check_scoped(
            Scope {
                profile: p,
                tenant: b
            },
            &who,
            None,
            T0 + 100
        )
        .unwrap(),
        PikeVerdict::Allowed,
        "another tenant's traffic is neither refused nor counted with the first's"
    );
    assert_eq!(e.lookup_ban(&who, T0 + 100).unwrap(), None, "no global ban");
    assert_eq!(e.tenant_bans(T0 + 100).unwrap().len(), 1);
    assert!(e
        .tenant_unban(a, &cidr("198.51.100.20"), T0 + 200)
        .unwrap()
        .is_some());
    assert_eq!(e.tenant_bans(T0 + 200).unwrap().len(), 0);
}

#[test]
fn tenants_beyond_max_tenants_are_counted_not_numbered() {
    let e = engine(&[("max_tenants", "2")]);
    assert!(e.tenant(b"one", T0).unwrap().is_some());
    assert!(e.tenant(b"two", T0).unwrap().is_some());
    assert_eq!(e.tenant(b"one", T0).unwrap().map(|t| t.1), Some(false));
    assert_eq!(e.tenant(b"three", T0).unwrap(), None);
    assert_eq!(e.tenants_overflow(), 1);
    assert_eq!(e.tenants().unwrap().len(), 2);
}

#[test]
fn tenant_counters_and_top_follow_the_tenants_traffic() {
    let e = engine(&[("pike_density", "5")]);
    let (a, _) = e.tenant(b"a.example", T0).unwrap().unwrap();
    let scope = Scope {
        profile: 0,
        tenant: a,
    };
    send(&e, scope, &ip("192.0.2.70"), 8, T0, 10);
    send(&e, scope, &ip("192.0.2.71"), 2, T0, 10);
    let c = e.tenant_counters(a).unwrap();
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(c.checked.load(Relaxed), 10);
    assert_eq!(c.bans.load(Relaxed), 1);
    assert_eq!(
        c.blocked.load(Relaxed),
        3,
        "the banning request and the two after"
    );
    let top = e.top_tenant_sources(a, 10, T0 + 100).unwrap();
    assert_eq!(top[0], (cidr("192.0.2.70"), 8));
    assert_eq!(top[1], (cidr("192.0.2.71"), 2));
}

// ============================================================= dry run

#[test]
fn dry_run_decides_once_bans_nothing_and_counts_what_it_would_refuse() {
    let e = engine(&[("pike_density", "5"), ("dry_run", "1")]);
    let who = ip("192.0.2.80");
    let v = send(&e, Scope::default(), &who, 20, T0, 10);
    let dry: Vec<_> = v
        .iter()
        .filter(|v| matches!(v, PikeVerdict::Scoped(b) if b.dry_run && b.fresh))
        .collect();
    assert_eq!(dry.len(), 1, "one would-be ban: {v:?}");
    assert!(matches!(v[5], PikeVerdict::Scoped(_)));
    assert!(v[6..]
        .iter()
        .all(|v| *v == PikeVerdict::DryRunBlocked(Reason::Pike)));
    assert_eq!(
        e.lookup_ban(&who, T0 + 1000).unwrap(),
        None,
        "nothing banned"
    );
    assert_eq!(e.bans_active(), 0);
    let st = e.stats();
    assert_eq!(st.dry_run_bans.get(), 1);
    assert_eq!(st.dry_run_blocked.get(), 14);
    assert_eq!(st.bans_created_total(), 0);
    assert_eq!(e.dry_run_bans_of(&who, T0 + 1000).unwrap().len(), 1);
}

#[test]
fn dry_run_per_profile_leaves_the_other_profiles_enforcing() {
    let e = engine(&[
        ("pike_density", "5"),
        ("profile", "trial: pike_density=3; dry_run=1"),
    ]);
    let trial = Scope {
        profile: e.profile_named(b"trial").unwrap(),
        tenant: 0,
    };
    let v = send(&e, trial, &ip("192.0.2.90"), 10, T0, 10);
    assert!(matches!(v[3], PikeVerdict::Scoped(b) if b.dry_run));
    let v = send(&e, Scope::default(), &ip("192.0.2.91"), 10, T0, 10);
    assert!(matches!(v[5], PikeVerdict::JustBanned(_)));
}

#[test]
fn dry_run_covers_authentication_failures() {
    let e = engine(&[("auth_fail_threshold", "3"), ("dry_run", "1")]);
    let who = ip("192.0.2.95");
    let v: Vec<_> = (0..6)
        .map(|k| {
            e.auth_fail_scoped(Scope::default(), &who, None, T0 + k)
                .unwrap()
        })
        .collect();
    assert!(matches!(v[2], AuthVerdict::Scoped(b) if b.dry_run), "{v:?}");
    assert_eq!(v[3], AuthVerdict::DryRunBlocked(Reason::Auth));
    assert_eq!(e.lookup_ban(&who, T0 + 10).unwrap(), None);
}

// =========================================================== decisions

#[test]
fn every_ban_is_recorded_with_its_rule_and_numbers() {
    let e = engine(&[("pike_density", "7"), ("pike_sampling_time", "3")]);
    let who = ip("192.0.2.100");
    send(&e, Scope::default(), &who, 8, T0, 10);
    let d = e.decisions(10, Some(&who));
    assert_eq!(d.len(), 1, "{d:?}");
    let d = d[0];
    assert_eq!(
        (d.rule, d.verdict, d.count, d.threshold, d.window_s, d.ban_s),
        (Reason::Pike, Verdict::Ban, 8, 7, 3, 300)
    );
    assert_eq!((d.profile, d.tenant, d.offenses), (0, 0, 1));
    assert_eq!(d.target, cidr("192.0.2.100"));
    // The process that made it has it to log, once.
    let mine = e.drain_decided();
    assert_eq!(mine, vec![d]);
    assert!(e.drain_decided().is_empty());
}

#[test]
fn decisions_record_profile_tenant_and_dry_run() {
    let e = engine(&[("profile", "trial: pike_density=2; dry_run=1")]);
    let (t, _) = e.tenant(b"t.example", T0).unwrap().unwrap();
    let scope = Scope {
        profile: e.profile_named(b"trial").unwrap(),
        tenant: t,
    };
    let who = ip("192.0.2.110");
    send(&e, scope, &who, 5, T0, 10);
    let d = e.decisions(10, Some(&who));
    assert_eq!(d.len(), 1, "a dry run decides once: {d:?}");
    assert_eq!(
        (
            d[0].verdict,
            d[0].profile,
            d[0].tenant,
            d[0].count,
            d[0].threshold
        ),
        (Verdict::DryRun, scope.profile, t, 3, 2)
    );
}

#[test]
fn a_manual_ban_is_recorded_and_the_ring_keeps_the_newest() {
    let e = engine(&[("decision_ring", "16")]);
    for k in 0..40u32 {
        let target = cidr(&format!("10.9.{}.{}", k / 200, k % 200 + 1));
        e.ban(target, 60, Reason::Manual, T0 + k as u64).unwrap();
    }
    let all = e.decisions(100, None);
    assert_eq!(all.len(), 16, "bounded by decision_ring");
    assert_eq!(all[0].target, cidr("10.9.0.40"), "newest first");
    assert_eq!(all[15].target, cidr("10.9.0.25"));
    assert_eq!(e.decisions_recorded(), (40, 16));
    assert!(all
        .iter()
        .all(|d| d.rule == Reason::Manual && d.verdict == Verdict::Ban));
}

#[test]
fn a_decision_on_a_prefix_concerns_the_addresses_inside_it() {
    let e = engine(&[]);
    e.ban(cidr("10.20.0.0/16"), 60, Reason::Manual, T0).unwrap();
    assert_eq!(e.decisions(10, Some(&ip("10.20.3.4"))).len(), 1);
    assert_eq!(e.decisions(10, Some(&ip("10.21.3.4"))).len(), 0);
}

#[test]
fn a_profile_judges_reports_and_accounts_by_its_own_thresholds_and_windows() {
    let e = engine(&[
        ("report_threshold", "10"),
        ("report_window", "60"),
        ("user_fail_threshold", "10"),
        (
            "profile",
            "strict: report_threshold=3; report_window=5; user_fail_threshold=2; user_block_time=42",
        ),
    ]);
    let strict = Scope {
        profile: e.profile_named(b"strict").unwrap(),
        tenant: 0,
    };
    let word = rsec::engine::Note::new(b"bad-domain").unwrap();
    // Three reports 2 s apart ban under the strict profile (3 in 5 s)...
    let who = ip("192.0.2.120");
    let v: Vec<_> = (0..3)
        .map(|k| {
            e.report_scoped(strict, &who, &word, 1, T0 + k * 2 * S)
                .unwrap()
        })
        .collect();
    assert!(
        matches!(v[2], rsec::engine::ReportVerdict::JustBanned(_, 3)),
        "{v:?}"
    );
    let d = e.decisions(1, Some(&who))[0];
    assert_eq!((d.rule, d.threshold, d.window_s), (Reason::Report, 3, 5));
    // ...but not 4 s apart: the first has left the 5 s window.
    let slow = ip("192.0.2.121");
    let v: Vec<_> = (0..3)
        .map(|k| {
            e.report_scoped(strict, &slow, &word, 1, T0 + k * 4 * S)
                .unwrap()
        })
        .collect();
    assert!(
        v.iter()
            .all(|v| matches!(v, rsec::engine::ReportVerdict::Counted(_))),
        "{v:?}"
    );
    // An account blocked after 2 failures under the strict profile, for 42 s.
    for k in 0..2 {
        e.auth_fail_scoped(
            strict,
            &ip(&format!("192.0.2.{}", 130 + k)),
            Some(b"1001"),
            T0 + k,
        )
        .unwrap();
    }
    let u = e.user(b"1001", T0 + 10).unwrap().expect("account tracked");
    let (from, until) = u.blocked.expect("blocked");
    assert_eq!((until - from) / S, 42);
}

/// Profiles count over windows of their own lengths in shared tables: an
/// entry recorded over a 2 s window must not look long gone to a table
/// sized for 10 s (it did: the counts were reset on every request, and
/// the profile never banned).
#[test]
fn a_profile_with_a_shorter_window_than_the_default_still_bans() {
    let e = engine(&[
        ("pike_sampling_time", "10"),
        ("pike_density", "1000"),
        ("pike_method_density", "REGISTER:1000"),
        (
            "profile",
            "fast: pike_sampling_time=2; pike_density=5; pike_method_density=REGISTER:3",
        ),
    ]);
    let fast = Scope {
        profile: e.profile_named(b"fast").unwrap(),
        tenant: 0,
    };
    let v = send(&e, fast, &ip("192.0.2.140"), 8, T0, 100_000);
    assert_eq!(first_ban(&v), Some(5), "{v:?}");
    let who = ip("192.0.2.141");
    let v: Vec<_> = (0..5)
        .map(|k| {
            e.pike_check_scoped(fast, &who, Some(b"REGISTER"), T0 + k * 100_000)
                .unwrap()
        })
        .collect();
    assert_eq!(first_ban(&v), Some(3), "{v:?}");
}
