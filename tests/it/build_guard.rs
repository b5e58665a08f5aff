//! build.rs refuses an OpenSIPS whose ABI rsec does not declare. The test
//! runs the compiled build script itself (as cargo does, with the
//! environment cargo gives it) against a stand-in `opensips -V`, so it
//! checks the real build logic without rebuilding the crate.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::opensips::TestDir;

/// The newest compiled build script of this crate.
fn build_script() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    std::fs::read_dir(profile_dir.join("build"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("build-script-build"))
        .filter(|p| {
            p.is_file()
                && p.parent()
                    .unwrap()
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("rsec-")
        })
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
        .expect("cargo built rsec's build script before the tests")
}

/// A stand-in `opensips` whose `-V` reports `version`.
fn fake_opensips(dir: &Path, version: &str) -> PathBuf {
    let bin = dir.join(format!("opensips-{version}"));
    let script = format!(
        "#!/bin/sh\ncat <<'X'\nversion: opensips {version} (x86_64/linux)\nflags: STATS: On, FAST_LOCK-ADAPTIVE_WAIT\n\
         git revision: 0123456789\nmain.c compiled on 00:00:00 Jan  1 2026 with cc 12\nX\n"
    );
    std::fs::write(&bin, script).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

fn run_build_script(dir: &Path, version: &str) -> (Output, PathBuf) {
    run_build_script_with(dir, version, &[])
}

/// The build script for a fake `opensips -V` of `version`, with `env` set.
fn run_build_script_with(dir: &Path, version: &str, env: &[(&str, &str)]) -> (Output, PathBuf) {
    let out_dir = dir.join(format!("out-{version}"));
    std::fs::create_dir_all(&out_dir).unwrap();
    let mut cmd = Command::new(build_script());
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("RSEC_OPENSIPS_") || k == "OPENSIPS_SRC" {
            cmd.env_remove(k);
        }
    }
    let out = cmd
        .env("CARGO_MANIFEST_DIR", env!("CARGO_MANIFEST_DIR"))
        .env("OUT_DIR", &out_dir)
        .env("CARGO_CFG_TARGET_ARCH", std::env::consts::ARCH)
        .env("OPENSIPS_BIN", fake_opensips(dir, version))
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (out, out_dir)
}

#[test]
fn the_build_refuses_an_opensips_it_has_no_layout_for() {
    let dir = TestDir::new("build_guard");
    for (version, release) in [
        ("3.2.19", "3.2"),
        ("3.5.6", "3.5"),
        ("3.7.0", "3.7"),
        ("5.0.0", "5.0"),
    ] {
        let (out, _) = run_build_script(&dir.path, version);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{version}: {stderr}");
        let lines: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("error: rsec:"))
            .collect();
        assert_eq!(lines.len(), 1, "{version}: one clear line:\n{stderr}");
        assert!(
            lines[0].contains(&format!(
                "cannot build for OpenSIPS {release} ('opensips {version} (x86_64/linux)'"
            )) && lines[0].contains("written for 3.4.x, 3.6.x, 4.0.x only"),
            "{}",
            lines[0]
        );
    }
    for version in ["3.4.18", "3.6.3", "3.6.8", "4.0.1"] {
        let (out, out_dir) = run_build_script(&dir.path, version);
        assert!(
            out.status.success(),
            "{version}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let generated = std::fs::read_to_string(out_dir.join("opensips_version.rs")).unwrap();
        assert!(
            generated.contains(&format!("opensips {version} (x86_64/linux)")),
            "{generated}"
        );
    }
}

#[test]
fn an_abi_forced_against_the_release_is_refused() {
    let dir = TestDir::new("build_guard_abi");
    let (out, _) = run_build_script_with(&dir.path, "4.0.1", &[("RSEC_OPENSIPS_ABI", "3.6")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error: rsec:"))
        .collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].contains("RSEC_OPENSIPS_ABI=3.6 does not match 'opensips 4.0.1 (x86_64/linux)'"),
        "{}",
        lines[0]
    );
    // Confirming the release's own ABI is accepted.
    let (out, _) = run_build_script_with(&dir.path, "4.0.1", &[("RSEC_OPENSIPS_ABI", "4.0")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
