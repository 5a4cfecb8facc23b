//! `shunt-gen` as a user meets it: option errors that say what is wrong,
//! and a clear message without the privileges it needs.

use std::process::Command;

const SHUNT_GEN: &str = env!("CARGO_BIN_EXE_shunt-gen");

/// `shunt-gen` with `args`, plus working defaults on `lo` for the required
/// options `args` does not give; returns (exit code, stderr).
fn gen(args: &[&str]) -> (Option<i32>, String) {
    let defaults = [
        ("--iface", "lo"),
        ("--src-ip", "10.0.0.1"),
        ("--dst-ip", "10.0.0.2"),
        ("--dst-mac", "02:00:00:00:00:02"),
    ];
    let mut cmd = Command::new(SHUNT_GEN);
    cmd.args(args);
    for (k, v) in defaults {
        if !args.contains(&k) {
            cmd.args([k, v]);
        }
    }
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!err.contains("panicked"), "{err}");
    (out.status.code(), err)
}

#[test]
fn gen_refuses_bad_options_with_clear_errors() {
    let cases: &[(&[&str], &str)] = &[
        (&["--flows", "0"], "--flows must be 1..=1000000, got 0"),
        (&["--flows", "1000001"], "--flows must be 1..=1000000, got 1000001"),
        (&["--size", "59"], "--size 59 is out of range: frames are 60..=4096 bytes"),
        (&["--size", "5000"], "--size 5000 is out of range: frames are 60..=4096 bytes"),
        (
            &["--src-port", "65000", "--src-ports", "1000", "--flows", "1000"],
            "--flows 1000 from 10.0.0.1 port 65000 with 1000 port(s) per address would run past port 65535",
        ),
        (&["--src-ports", "0"], "--src-ports must be 1..=65536, got 0"),
        (&["--dst-mac", "02:00:00:00:00"], "--dst-mac \"02:00:00:00:00\" is not a MAC address"),
        (&["--src-mac", "zz:00:00:00:00:01"], "--src-mac \"zz:00:00:00:00:01\" is not a MAC address"),
        (&["--rate", "0"], "--rate must be a positive number of packets per second, got 0"),
        (&["--duration=-1"], "--duration must be a positive number of seconds, got -1"),
        (&["--count", "0"], "--count must be at least 1"),
        (&["--cpu", "4096"], "--cpu 4096 does not exist"),
        (&["--queue", "7"], "lo has 1 queue(s): --queue 7 does not exist"),
        (&["--iface", "nosuchif0"], "interface nosuchif0 not found in this network namespace"),
    ];
    for (args, want) in cases {
        let (code, err) = gen(args);
        assert_eq!(code, Some(1), "{args:?}: {err}");
        assert!(err.contains(&format!("shunt-gen: error: {want}")), "{args:?}: {err}");
    }
    // clap's own parse errors: exit 2 with usage, no panic.
    for args in [&["--src-ip", "300.1.1.1"][..], &["--flows", "many"], &["--size=-5"]] {
        let (code, err) = gen(args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(err.contains("invalid value"), "{args:?}: {err}");
    }
    let out = Command::new(SHUNT_GEN).args(["--iface", "lo"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(err.contains("--src-ip") && err.contains("--dst-ip"), "{err}");
}

#[test]
fn gen_without_privileges_names_what_is_missing() {
    let out = shunt_testkit::lab::unprivileged(SHUNT_GEN)
        .args([
            "--iface",
            "lo",
            "--src-ip",
            "10.0.0.1",
            "--dst-ip",
            "10.0.0.2",
            "--dst-mac",
            "02:00:00:00:00:02",
        ])
        .output()
        .expect("setpriv (util-linux)");
    let msg = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{msg}");
    assert!(msg.contains("shunt-gen needs CAP_NET_RAW"), "{msg}");
}
