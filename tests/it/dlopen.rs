//! Loads the built rsec.so the way OpenSIPS does (dlopen with RTLD_NOW,
//! then dlsym("exports")), against a stand-in for the core symbols, and
//! checks the export table and one full call through the C ABI.
//! Runs on every machine; with OpenSIPS present it also checks that every
//! symbol rsec imports is exported by the real binary.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::path::{Path, PathBuf};
use std::process::Command;

use rsec::ffi::sys::*;

use crate::support::mi::RSEC_STATS;
use crate::support::skip;

fn target_dir_so() -> PathBuf {
    if let Some(p) = std::env::var_os("RSEC_SO") {
        return PathBuf::from(p);
    }
    // tests run from target/<profile>/deps/; cargo builds the cdylib beside.
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    let so = profile_dir.join("librsec.so");
    assert!(
        so.is_file(),
        "{} not built (cargo builds the cdylib with the tests)",
        so.display()
    );
    so
}

fn build_fake_core(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/support/fake_core.c");
    let out = dir.join("libfake_opensips_core.so");
    let st = Command::new("cc")
        .args(["-shared", "-fPIC", "-O1", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .expect("cc is needed to build the fake core");
    assert!(st.success(), "compiling {} failed", src.display());
    out
}

unsafe fn dlopen(path: &Path, flags: c_int) -> *mut c_void {
    let c = CString::new(path.to_str().unwrap()).unwrap();
    let h = libc::dlopen(c.as_ptr(), flags);
    if h.is_null() {
        panic!(
            "dlopen {} failed: {}",
            path.display(),
            CStr::from_ptr(libc::dlerror()).to_string_lossy()
        );
    }
    h
}

unsafe fn sym<T>(h: *mut c_void, name: &CStr) -> *mut T {
    let p = libc::dlsym(h, name.as_ptr());
    assert!(!p.is_null(), "symbol {:?} missing", name);
    p.cast()
}

unsafe fn cstr(p: *const c_char) -> String {
    CStr::from_ptr(p).to_string_lossy().into_owned()
}

fn expected_profile() -> (String, String, String, String) {
    // What build.rs should have used: the real binary if there is one.
    let bin = std::env::var_os("OPENSIPS_BIN")
        .map(PathBuf::from)
        .or_else(|| which("opensips"))
        .or_else(|| Some(PathBuf::from("/opt/opensips/sbin/opensips")).filter(|p| p.is_file()));
    let text = match &bin {
        Some(b) => String::from_utf8_lossy(&Command::new(b).arg("-V").output().unwrap().stdout)
            .into_owned(),
        None => std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("include/opensips-default.profile"),
        )
        .unwrap()
        .replace("version=", "version: ")
        .replace("flags=", "flags: ")
        .replace("scm_type=", "")
        .replace("\nscm_rev=", " revision: "),
    };
    let line = |p: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(p))
            .unwrap_or_default()
            .trim()
            .to_owned()
    };
    let (t, r) = text
        .lines()
        .find_map(|l| {
            l.split_once(" revision: ")
                .filter(|(t, _)| !t.contains(' '))
        })
        .map(|(t, r)| (t.to_owned(), r.trim().to_owned()))
        .unwrap_or_default();
    (line("version: "), line("flags: "), t, r)
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

#[repr(C)]
struct FakeMsg {
    head: SipMsgHead,
    tail: [u8; 4096],
}

#[test]
fn exports_table_and_abi_call() {
    let dir = std::env::temp_dir().join(format!("rsec-dlopen-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let core = build_fake_core(&dir);
    let so = target_dir_so();
    unsafe {
        let core_h = dlopen(&core, libc::RTLD_NOW | libc::RTLD_GLOBAL);
        // OpenSIPS's flags: RTLD_NOW, so every undefined symbol must resolve now.
        let h = dlopen(&so, libc::RTLD_NOW);
        let exp = &*sym::<ModuleExports>(h, c"exports");

        assert_eq!(cstr(exp.name), "rsec");
        assert_eq!(exp.type_, MOD_TYPE_DEFAULT);
        assert_eq!(exp.dlflags, 0, "default dlopen flags");
        let (v, f, t, r) = expected_profile();
        assert_eq!(cstr(exp.ver_info.version), v);
        assert_eq!(cstr(exp.ver_info.compile_flags), f);
        assert_eq!(cstr(exp.ver_info.scm.type_), t);
        assert_eq!(cstr(exp.ver_info.scm.rev), r);

        // Script functions: names, parameter flags, allowed routes.
        let mut cmds = Vec::new();
        let mut p = exp.cmds;
        while !(*p).name.is_null() {
            let c = &*p;
            let flags: Vec<c_int> = c
                .params
                .iter()
                .take_while(|x| x.flags != 0)
                .map(|x| x.flags)
                .collect();
            assert!(c.function.is_some());
            cmds.push((cstr(c.name), flags, c.flags));
            p = p.add(1);
        }
        let s = CMD_PARAM_STR;
        let i = CMD_PARAM_INT;
        let o = CMD_PARAM_OPT;
        let expect: Vec<(&str, Vec<c_int>)> = vec![
            ("sec_pike_check", vec![s | o]),
            ("sec_rl_check", vec![s, i, i | o]),
            ("sec_ban_ip", vec![s, i | o, s | o, s | o]),
            ("sec_unban_ip", vec![s]),
            ("sec_is_banned", vec![s | o]),
            ("sec_auth_fail", vec![s | o, s | o]),
            ("sec_report", vec![s, i | o, s | o]),
            ("sec_user_blocked", vec![s]),
            ("sec_scanner_check", vec![]),
            ("sec_profile", vec![s]),
            ("sec_tenant", vec![s]),
        ];
        assert_eq!(
            cmds.iter()
                .map(|(n, f, _)| (n.as_str(), f.clone()))
                .collect::<Vec<_>>(),
            expect
        );
        for (name, _, routes) in &cmds {
            assert!(
                routes & REQUEST_ROUTE != 0,
                "{name} must be allowed in request_route"
            );
        }

        // Module parameters with their types.
        let mut params = Vec::new();
        let mut q = exp.params;
        while !(*q).name.is_null() {
            params.push((cstr((*q).name), (*q).type_));
            assert!(!(*q).param_pointer.is_null());
            q = q.add(1);
        }
        for n in [
            "pike_sampling_time",
            "pike_density",
            "pike_ban_time",
            "ban_time",
            "auth_fail_threshold",
            "auth_fail_window",
            "auth_ban_time",
            "max_tracked_ips",
            "max_rl_keys",
            "max_bans",
            "lock_stripes",
            "db_queue_size",
            "db_sync_interval",
            "db_timeout",
            "min_prefix_v4",
            "min_prefix_v6",
            "ipv6_track_prefix",
            "subnet_ban_threshold",
            "subnet_prefix_v4",
            "subnet_prefix_v6",
            "subnet_ban_time",
            "recidive_window",
            "ban_multiplier",
            "ban_time_max",
            "user_fail_threshold",
            "user_fail_window",
            "user_block_time",
            "enum_threshold",
            "report_threshold",
            "report_window",
            "report_ban_time",
            "scanner_ban_time",
            "max_offenders",
            "max_users",
            "max_suspects",
            "max_whitelist",
        ] {
            assert!(
                params.contains(&(n.to_owned(), INT_PARAM)),
                "int modparam {n} missing: {params:?}"
            );
        }
        for n in [
            "whitelist",
            "db_url",
            "node_id",
            "pike_method_density",
            "scanner_patterns",
            "scanner_patterns_add",
        ] {
            assert!(
                params.contains(&(n.to_owned(), STR_PARAM)),
                "string modparam {n} missing"
            );
        }
        // Repeatable ones: a function OpenSIPS calls with each value.
        const USE_FUNC_PARAM: u32 = 1 << 31;
        for n in ["profile", "profile_prefix", "tenant_whitelist"] {
            assert!(
                params.contains(&(n.to_owned(), STR_PARAM | USE_FUNC_PARAM)),
                "repeatable modparam {n} missing: {params:?}"
            );
        }
        assert_eq!(params.len(), 48, "{params:?}");

        // The persistence process is exported but not started without db_url.
        let procs = exp.procs.cast::<ProcExport>();
        assert_eq!(cstr((*procs).name), "rsec persistence");
        assert!((*procs).function.is_some());
        assert!((*procs.add(1)).name.is_null());

        // Statistics: function statistics, named as documented.
        let mut stats = Vec::new();
        let mut st = exp.stats;
        while !(*st).name.is_null() {
            assert!(
                (*st).flags & STAT_IS_FUNC != 0,
                "{} must be a function statistic",
                cstr((*st).name)
            );
            assert!(!(*st).stat_pointer.is_null());
            stats.push(cstr((*st).name));
            st = st.add(1);
        }
        // Exactly the documented statistics, in export order.
        assert_eq!(stats, RSEC_STATS);

        // MI commands with their recipes (parameter name lists).
        let mut mi = Vec::new();
        let mut m = exp.mi_cmds.cast::<MiExport>();
        while !(*m).name.is_null() {
            let recipes: Vec<Vec<String>> = (*m)
                .recipes
                .iter()
                .take_while(|r| r.cmd.is_some())
                .map(|r| {
                    r.params
                        .iter()
                        .take_while(|p| !p.is_null())
                        .map(|p| cstr(*p))
                        .collect()
                })
                .collect();
            mi.push((cstr((*m).name), recipes));
            m = m.add(1);
        }
        let names: Vec<&str> = mi.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "sec_ban_list",
                "sec_ban",
                "sec_unban",
                "sec_ban_flush",
                "sec_ip_info",
                "sec_rl_list",
                "sec_top",
                "sec_whitelist_list",
                "sec_whitelist_add",
                "sec_whitelist_del",
                "sec_explain",
                "sec_decisions",
                "sec_profile_list",
                "sec_profile_set",
                "sec_profile_reload",
                "sec_tenant_list",
                "sec_db_sync",
                "sec_whitelist_reload",
                "sec_user_list",
                "sec_user_unblock"
            ]
        );
        let ban = &mi.iter().find(|(n, _)| n == "sec_ban").unwrap().1;
        // One recipe per number of optional parameters, in order: positional
        // calls are matched by count, so no two recipes have the same length.
        assert_eq!(
            ban,
            &vec![
                vec!["ip".to_owned()],
                vec!["ip".into(), "seconds".into()],
                vec!["ip".into(), "seconds".into(), "reason".into()],
                vec![
                    "ip".into(),
                    "seconds".into(),
                    "reason".into(),
                    "note".into()
                ]
            ]
        );
        // The page parameters go together, as their own lists, each of a
        // length no other list has.
        let list = &mi.iter().find(|(n, _)| n == "sec_ban_list").unwrap().1;
        assert_eq!(
            list,
            &vec![
                vec![],
                vec!["ip".to_owned()],
                vec!["cursor".into(), "limit".into()],
                vec!["ip".into(), "cursor".into(), "limit".into()]
            ]
        );

        // Set a modparam the way OpenSIPS does (write through the pointer),
        // run mod_init, then call sec_pike_check through the C ABI.
        let density = params
            .iter()
            .position(|(n, _)| n == "pike_density")
            .unwrap();
        *((*exp.params.add(density)).param_pointer as *mut c_int) = 3;
        assert_eq!((exp.init_f.unwrap())(), 0, "mod_init");
        assert_eq!(
            *sym::<c_int>(core_h, c"fake_timer_count"),
            1,
            "sweep timer registered"
        );
        assert_eq!(
            (*exp.procs.cast::<ProcExport>()).no,
            0,
            "no persistence process without db_url"
        );
        assert_eq!(
            *sym::<c_int>(core_h, c"fake_events_published"),
            3,
            "E_SEC_BAN, E_SEC_UNBAN and E_SEC_USER_BLOCKED published"
        );

        let mut msg: Box<FakeMsg> = Box::new(std::mem::zeroed());
        msg.head.rcv.src_ip.af = AF_INET;
        msg.head.rcv.src_ip.len = 4;
        msg.head.rcv.src_ip.u[..4].copy_from_slice(&[192, 0, 2, 77]);
        let m = (&mut *msg as *mut FakeMsg).cast::<SipMsg>();
        let pike = cmds
            .iter()
            .position(|(n, _, _)| n == "sec_pike_check")
            .unwrap();
        let f = (*exp.cmds.add(pike)).function.unwrap();
        let n = std::ptr::null_mut();
        let rcs: Vec<c_int> = (0..5).map(|_| f(m, n, n, n, n, n, n, n, n)).collect();
        assert_eq!(
            rcs,
            vec![1, 1, 1, -2, -1],
            "3 allowed, 4th bans, 5th is refused"
        );
        assert_eq!(
            *sym::<c_int>(core_h, c"fake_events_raised"),
            1,
            "one E_SEC_BAN for the one ban"
        );
        let log = CStr::from_ptr(sym::<c_char>(core_h, c"fake_last_log"))
            .to_string_lossy()
            .into_owned();
        assert!(
            log.contains("NOTICE:rsec:sec_pike_check: banned 192.0.2.77"),
            "{log}"
        );

        // A bad argument through the ABI: -3 and a log line naming function and value.
        let ban = cmds.iter().position(|(n, _, _)| n == "sec_ban_ip").unwrap();
        let fb = (*exp.cmds.add(ban)).function.unwrap();
        let mut bad = *b"10.0.0.300";
        let mut s = Str {
            s: bad.as_mut_ptr().cast(),
            len: bad.len() as c_int,
        };
        let rc = fb(m, (&mut s as *mut Str).cast(), n, n, n, n, n, n, n);
        assert_eq!(rc, -3);
        let log = CStr::from_ptr(sym::<c_char>(core_h, c"fake_last_log"))
            .to_string_lossy()
            .into_owned();
        assert!(
            log.contains("ERROR:rsec:sec_ban_ip:") && log.contains("10.0.0.300"),
            "{log}"
        );
        // A format directive in caller data is printed, never interpreted.
        let mut fmt_attack = *b"%s%s%n%s";
        let mut s = Str {
            s: fmt_attack.as_mut_ptr().cast(),
            len: fmt_attack.len() as c_int,
        };
        assert_eq!(fb(m, (&mut s as *mut Str).cast(), n, n, n, n, n, n, n), -3);
        let log = CStr::from_ptr(sym::<c_char>(core_h, c"fake_last_log"))
            .to_string_lossy()
            .into_owned();
        assert!(log.contains("'%s%s%n%s'"), "{log}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// With a real OpenSIPS binary: every symbol rsec.so imports that libc/libgcc
/// do not provide must be exported by opensips itself (RTLD_NOW would fail).
#[test]
fn imported_symbols_resolve_against_real_opensips() {
    let Some(bin) = std::env::var_os("OPENSIPS_BIN")
        .map(PathBuf::from)
        .or_else(|| which("opensips"))
        .or_else(|| Some(PathBuf::from("/opt/opensips/sbin/opensips")).filter(|p| p.is_file()))
    else {
        skip(
            "imported_symbols_resolve_against_real_opensips",
            "no OpenSIPS found (set OPENSIPS_BIN); imported-symbol check not run",
        );
        return;
    };
    // Versioned imports (foo@GLIBC_2.x, bar@GCC_3.0) come from the C
    // runtime; unversioned strong imports can only come from OpenSIPS.
    let out = Command::new("nm")
        .args(["-D", "--undefined-only"])
        .arg(target_dir_so())
        .output()
        .expect("nm (binutils) needed");
    let mut from_core: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let (kind, name) = (it.next()?, it.next()?);
            (kind == "U" && !name.contains('@')).then(|| name.to_owned())
        })
        .collect();
    from_core.sort();
    let mut ours = vec![
        "dp_my_pid",
        "dprint",
        "log_facility",
        "log_level",
        "log_prefix",
        // 3.6 made 3.4's parse_headers a macro over parse_headers_aux.
        if cfg!(opensips_abi = "3.4") {
            "parse_headers"
        } else {
            "parse_headers_aux"
        },
        "register_timer",
        "init_mi_result_object",
        "init_mi_result_string",
        "init_mi_error_extra",
        "add_mi_array",
        "add_mi_object",
        "add_mi_string",
        "add_mi_number",
        "add_mi_bool",
        "try_get_mi_string_param",
        "evi_publish_event",
        "evi_get_id",
        "evi_probe_event",
        "evi_get_params",
        "evi_param_add",
        "evi_raise_event",
        "evi_free_params",
        "register_stat2",
    ];
    ours.sort();
    assert_eq!(
        from_core, ours,
        "rsec.so imports exactly the core symbols declared in src/ffi/sys.rs"
    );
    let out = Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(&bin)
        .output()
        .unwrap();
    let exported: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().last().map(str::to_owned))
        .collect();
    for s in &from_core {
        assert!(
            exported.contains(s),
            "{} does not export {s}: loadmodule would fail with RTLD_NOW",
            bin.display()
        );
    }
}
