//! The CLI as a user meets it: --version, --help, `check` messages that
//! point at the line and column of a mistake, option validation and exit
//! codes, completions, and output into closed pipes.

mod common;

use std::process::Command;

use common::{default_config, repo, root_or_skip, unprivileged, SHUNT};

/// Runs `shunt check [flags] --config FILE` on `text`, written to FILE, a
/// temporary file; inside network namespace `ns` when given. The exit
/// code, and stderr then stdout with FILE's path written as `FILE`.
fn check_in(ns: Option<&str>, flags: &[&str], text: &str) -> (Option<i32>, String) {
    let path = std::env::temp_dir().join(format!("shunt-cli-{}.toml", common::rand_u32()));
    std::fs::write(&path, text).unwrap();
    let mut cmd = match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, SHUNT]);
            c
        }
        None => Command::new(SHUNT),
    };
    let out = cmd.arg("check").args(flags).arg("--config").arg(&path).output().unwrap();
    let _ = std::fs::remove_file(&path);
    let msg = String::from_utf8_lossy(&out.stderr).replace(path.to_str().unwrap(), "FILE");
    (out.status.code(), msg + &String::from_utf8_lossy(&out.stdout))
}

/// `shunt check --offline` on `text`: whether it passed, and its output.
fn check(text: &str) -> (bool, String) {
    let (code, msg) = check_in(None, &["--offline"], text);
    (code == Some(0), msg)
}

/// `config.toml` with `from` replaced by `to` fails `check`, and the message
/// starts at the line that starts with `to`, at `column`, with `want`.
fn refused_at(from: &str, to: &str, column: usize, want: &str) {
    let cfg = default_config();
    assert!(cfg.contains(from), "{from}");
    let text = cfg.replace(from, to);
    let line = text.lines().position(|l| l.starts_with(to)).unwrap() + 1;
    let (ok, msg) = check(&text);
    assert!(!ok, "{to} passed check");
    assert!(msg.contains(&format!("FILE:{line}:{column}: {want}")), "{msg}");
}

#[test]
fn version_and_help() {
    let out = Command::new(SHUNT).arg("--version").output().unwrap();
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let commit = Command::new("git").args(["rev-parse", "--short=12", "HEAD"]).current_dir(repo()).output();
    let commit = commit
        .ok()
        .filter(|o| o.status.success())
        .map_or("unknown".into(), |o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let prefix = format!("shunt {} (commit ", env!("CARGO_PKG_VERSION"));
    assert!(version.starts_with(&prefix), "{version}");
    // The commit the binary was built from: HEAD, or an ancestor while uncommitted work is tested.
    let built = version[prefix.len()..].split(',').next().unwrap();
    assert!(built == "unknown" || built.len() == 12, "{version}");
    if commit != "unknown" && built != commit {
        let ancestor = Command::new("git")
            .args(["merge-base", "--is-ancestor", built, "HEAD"])
            .current_dir(repo())
            .status()
            .unwrap();
        assert!(ancestor.success(), "{version} vs HEAD {commit}");
    }
    let date = version.rsplit("built ").next().unwrap().trim_end_matches(')');
    assert!(date.len() == 10 && date.as_bytes()[4] == b'-' && date.as_bytes()[7] == b'-', "{version}");
    let out = Command::new(SHUNT).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for verb in ["run", "check", "lab"] {
        assert!(help.contains(verb), "{help}");
    }
}

#[test]
fn shipped_configs_pass_check() {
    let (ok, msg) = check(&default_config());
    assert!(ok, "{msg}");
    for entry in std::fs::read_dir(repo().join("pipelines")).unwrap() {
        let path = entry.unwrap().path();
        let out = Command::new(SHUNT).args(["check", "--offline", "--config"]).arg(&path).output().unwrap();
        assert!(out.status.success(), "{}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    }
}

/// Two services on one VIP and protocol in different pipelines pass, with
/// a warning: their later fragments all go to the first one's pipeline.
/// The shipped configs draw no warning.
#[test]
fn services_sharing_a_vip_across_pipelines_warn() {
    let (ok, msg) = check(&default_config());
    assert!(ok && !msg.contains("warning"), "{msg}");
    let second =
        "[pipeline.other]\nstages = [\"conntrack\", \"maglev\", \"nat\", \"l2\"]\negress = \"sh-be\"\n\
                  return_egress = \"sh-cli\"\nreturn_next_hop_mac = \"02:00:00:00:01:02\"\n\n\
                  [[service]]\nname = \"alt\"\nvip = \"10.0.100.1\"\nport = 8080\nprotocol = \"tcp\"\n\
                  pipeline = \"other\"\nbackends = [{ addr = \"10.0.2.11\", port = 80 }]\n";
    let (ok, msg) = check(&common::before_conntrack(&default_config(), second));
    assert!(ok, "{msg}");
    assert!(
        msg.contains(
            "warning: services `web` and `alt` share VIP 10.0.100.1 (tcp) but not a pipeline: later IP \
             fragments carry no port, so those of both go to pipeline `l4lb`, not `other`"
        ),
        "{msg}"
    );
}

#[test]
fn bad_key_points_at_line_and_column() {
    refused_at(
        "batch_size = 64",
        "batch_sise = 64",
        1,
        "key `dataplane.batch_sise`: unknown field `batch_sise`",
    );
}

#[test]
fn stage_order_that_cannot_work_is_refused_at_the_stage() {
    let text = std::fs::read_to_string(repo().join("pipelines/l4lb.toml")).unwrap();
    let good = r#"stages = ["conntrack", "maglev", "nat", "l2"]"#;
    assert!(text.contains(good), "fixture changed: {text}");
    let text = text.replace(good, r#"stages = ["l2", "nat", "maglev", "conntrack"]"#);
    let line = text.lines().position(|l| l.starts_with("stages = [\"l2\"")).unwrap() + 1;
    let out = check_in(None, &["--offline"], &text);
    assert_eq!(out.0, Some(1), "{}", out.1);
    // Column 11 is the opening quote of "l2", the first stage.
    assert!(
        out.1.contains(&format!("FILE:{line}:11: "))
            && out.1.contains("stage `l2` needs rewritten packets before it"),
        "{}",
        out.1
    );
    assert!(out.1.contains("`nat` or `siit`"), "{}", out.1);
}

#[test]
fn bad_value_type_points_at_line_and_column() {
    let want = "key `dataplane.ring_size`: invalid type: string \"large\"";
    refused_at("ring_size = 2048", "ring_size = \"large\"", 13, want);
}

#[test]
fn unknown_interface_points_at_line_and_column() {
    let want = "key `pipeline.l4lb.egress`: unknown interface `eth9`";
    refused_at("egress = \"sh-be\"", "egress = \"eth9\"", 10, want);
}

#[test]
fn missing_host_interface_is_reported_with_advice() {
    // Without --offline, check looks at this host: the lab interfaces live
    // in the `shunt` namespace, not here.
    let text = default_config().replace("\"sh-cli\"", "\"nosuchif0\"");
    let (code, msg) = check_in(None, &[], &text);
    assert_ne!(code, Some(0));
    assert!(msg.contains("interface `nosuchif0` not found on this host"), "{msg}");
}

#[test]
fn run_without_privileges_names_what_is_missing() {
    // Without privileges `run` must refuse before touching the kernel and
    // say which capabilities it lacks.
    let out = unprivileged(SHUNT)
        .args(["run", "--config"])
        .arg(repo().join("config.toml"))
        .output()
        .expect("setpriv (util-linux)");
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(msg.contains("needs CAP_NET_ADMIN"), "{msg}");
    assert!(msg.contains("CAP_BPF"), "{msg}");
}

/// Runs `shunt ARGS`; returns (exit code, stdout, stderr). No output of
/// any kind may be a panic.
fn shunt(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(SHUNT).args(args).output().unwrap();
    let (o, e) =
        (String::from_utf8_lossy(&out.stdout).to_string(), String::from_utf8_lossy(&out.stderr).to_string());
    assert!(!e.contains("panicked"), "{args:?}: {e}");
    (out.status.code(), o, e)
}

#[test]
fn unknown_log_levels_are_refused_with_the_valid_ones() {
    for bad in ["warning", "verbose", "shunt=loud"] {
        let (code, _, err) = shunt(&["--log", bad, "check", "--offline"]);
        assert_eq!(code, Some(2), "{bad}: {err}");
        assert!(
            err.contains("unknown log level") && err.contains("error, warn, info, debug, trace, off"),
            "{err}"
        );
    }
    let cfg = repo().join("config.toml");
    let (code, _, err) =
        shunt(&["--log", "warn,shunt=debug", "check", "--offline", "-c", cfg.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}");
}

#[test]
fn watch_intervals_that_are_no_duration_are_refused() {
    for bad in ["inf", "1e20", "NaN", "0", "-1", "soon"] {
        let (code, _, err) = shunt(&["stats", "--socket", "/nonexistent.sock", &format!("--watch={bad}")]);
        assert_eq!(code, Some(2), "{bad}: {err}");
        assert!(err.contains("invalid value"), "{bad}: {err}");
    }
}

#[test]
fn backend_port_zero_is_refused_on_the_command_line_and_in_files() {
    let (code, _, err) = shunt(&[
        "backend",
        "add",
        "--socket",
        "/nonexistent.sock",
        "--service",
        "web",
        "--addr",
        "10.0.2.14",
        "--port",
        "0",
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("0 is not in 1..=65535"), "{err}");
    let text =
        default_config().replace(r#"{ addr = "10.0.2.13", port = 80,"#, r#"{ addr = "10.0.2.13", port = 0,"#);
    let (ok, msg) = check(&text);
    assert!(!ok);
    assert!(msg.contains("backend 10.0.2.13: port must be 1..=65535"), "{msg}");
}

#[test]
fn file_errors_name_the_file_once() {
    let (code, _, err) =
        shunt(&["service", "add", "--socket", "/nonexistent.sock", "--file", "/nonexistent/web9.toml"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("/nonexistent/web9.toml: No such file or directory"), "{err}");
    let (code, _, err) = shunt(&["check", "-c", "/nonexistent.toml"]);
    assert_eq!(code, Some(1));
    assert_eq!(
        err.trim(),
        "shunt: error: cannot read config /nonexistent.toml: No such file or directory (os error 2)"
    );
    assert_eq!(err.matches("os error 2").count(), 1, "{err}");
}

#[test]
fn errors_in_inline_backends_name_their_own_key() {
    let weight = default_config().replace(
        r#"port = 80, weight = 100 },
  { addr = "10.0.2.13""#,
        r#"port = 80, weight = -5 },
  { addr = "10.0.2.13""#,
    );
    let (ok, msg) = check(&weight);
    assert!(!ok);
    assert!(msg.contains("key `service.backends.weight`"), "{msg}");
    let mac = default_config().replace(
        r#"{ addr = "10.0.2.13", port = 80, weight = 100 }"#,
        r#"{ addr = "10.0.2.13", port = 80, weight = 100, mac = "zz:zz" }"#,
    );
    let (ok, msg) = check(&mac);
    assert!(!ok);
    assert!(msg.contains("key `service.backends.mac`: service `web`: invalid MAC address `zz:zz`"), "{msg}");
}

#[test]
fn global_options_work_after_the_verb() {
    for args in [
        &["service", "remove", "--socket", "/nonexistent/p.sock", "web9"][..],
        &["service", "remove", "web9", "--socket", "/nonexistent/p.sock"],
        &["reload", "--socket", "/nonexistent/p.sock", "--log", "warn"],
        &["stats", "--log-format", "json", "--socket", "/nonexistent/p.sock"],
    ] {
        let (code, _, err) = shunt(args);
        assert_eq!(code, Some(1), "{args:?}: {err}");
        assert!(err.contains("no running shunt at /nonexistent/p.sock"), "{args:?}: {err}");
    }
}

#[test]
fn histogram_help_lists_its_formats() {
    let (code, out, _) = shunt(&["histogram", "--help"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("[possible values: table, hgrm, json, svg]"), "{out}");
    let (code, _, err) = shunt(&["histogram", "--format", "png"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("possible values: table, hgrm, json, svg"), "{err}");
}

#[test]
fn completions_and_man_page_are_generated() {
    for (shell, marker) in
        [("bash", "complete -F _shunt"), ("zsh", "#compdef shunt"), ("fish", "complete -c shunt")]
    {
        let (code, out, err) = shunt(&["completion", shell]);
        assert_eq!(code, Some(0), "{err}");
        assert!(out.contains(marker), "{shell}: {out:.300}");
        assert!(out.contains("reload") && out.contains("histogram"), "{shell}");
    }
    let (code, out, _) = shunt(&["manpage"]);
    assert_eq!(code, Some(0));
    assert!(out.starts_with(".ie") && out.contains(".TH shunt 1"), "{out:.300}");
    // bash accepts the script.
    let status = Command::new("bash")
        .arg("-c")
        .arg(format!("source <({SHUNT} completion bash) && complete -p shunt"))
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn output_into_a_closed_pipe_is_no_panic() {
    // `head -c1` exits after one byte; the rest of the write meets EPIPE.
    for verb in ["completion bash", "manpage", "--help"] {
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!("set -o pipefail; {SHUNT} {verb} 2>/tmp/shunt-epipe-$$.err | head -c1 >/dev/null; rc=$?; cat /tmp/shunt-epipe-$$.err; rm -f /tmp/shunt-epipe-$$.err; exit $rc"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stdout);
        assert!(!err.contains("panicked"), "{verb}: {err}");
        assert!(
            out.status.code() == Some(0) || out.status.code() == Some(141),
            "{verb}: {:?} {err}",
            out.status
        );
    }
}

#[test]
fn lab_status_lists_only_the_lab_and_fails_when_it_is_down() {
    let Some(_lock) = common::lab_lock() else { return };
    let _ = Command::new("ip").args(["netns", "add", "xtest-unrelated"]).status();
    let (code, _, err) = shunt(&["lab", "down"]);
    assert_eq!(code, Some(0), "{err}");
    let (code, out, err) = shunt(&["lab", "status"]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(out.contains("shunt-client   missing"), "{out}");
    assert!(err.contains("lab is down") && err.contains("shunt lab up"), "{err}");
    assert!(!out.contains("xtest-unrelated"), "{out}");
    let (code, _, err) = shunt(&["lab", "up"]);
    assert_eq!(code, Some(0), "{err}");
    let (code, out, _) = shunt(&["lab", "status"]);
    let _ = Command::new("ip").args(["netns", "del", "xtest-unrelated"]).status();
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("shunt-be3      up") && out.contains("lab is up") && !out.contains("xtest-unrelated"),
        "{out}"
    );
}

/// (line, column) of the first quoted value on the line that starts with
/// `start` in `text`.
fn value_at(text: &str, start: &str) -> (usize, usize) {
    let (i, line) = text.lines().enumerate().find(|(_, l)| l.starts_with(start)).expect("line present");
    (i + 1, line.find('"').unwrap() + 1)
}

#[test]
fn vips_and_pools_on_reserved_or_backend_addresses_are_refused_at_line_and_column() {
    let cfg = default_config();
    let vip = "vip = \"10.0.100.1\"";
    let pool = "snat_pool = \"10.0.3.0/28\"";
    let vip6 = "vip = \"fd00:100::1\"";
    let pool6 = "snat_pool = \"fd00:3::/124\"";
    let cases: [(&str, &str, &str); 15] = [
        (vip, "vip = \"127.0.0.1\"", "VIP 127.0.0.1 is not usable: loopback address (127.0.0.0/8)"),
        (vip, "vip = \"224.0.0.5\"", "VIP 224.0.0.5 is not usable: multicast address (224.0.0.0/4)"),
        (vip, "vip = \"0.0.0.0\"", "VIP 0.0.0.0 is not usable: unspecified address (0.0.0.0)"),
        (vip, "vip = \"255.255.255.255\"", "VIP 255.255.255.255 is not usable: broadcast address"),
        (vip, "vip = \"10.0.2.12\"", "VIP 10.0.2.12 is a backend address of service `web`"),
        (pool, "snat_pool = \"127.0.0.0/28\"", "SNAT pool 127.0.0.0/28 covers loopback addresses"),
        (pool, "snat_pool = \"224.0.0.0/28\"", "SNAT pool 224.0.0.0/28 covers multicast addresses"),
        (pool, "snat_pool = \"0.0.0.0/28\"", "SNAT pool 0.0.0.0/28 covers unspecified addresses"),
        (pool, "snat_pool = \"255.255.255.240/28\"", "SNAT pool 255.255.255.240/28 covers broadcast"),
        (
            pool,
            "snat_pool = \"10.0.2.0/28\"",
            "SNAT pool 10.0.2.0/28 covers 10.0.2.11, a backend address of service `web`",
        ),
        (vip6, "vip = \"::1\"", "VIP ::1 is not usable: loopback address (::1)"),
        (vip6, "vip = \"ff02::1\"", "VIP ff02::1 is not usable: multicast address (ff00::/8)"),
        (vip6, "vip = \"::\"", "VIP :: is not usable: unspecified address"),
        (pool6, "snat_pool = \"ff02::/124\"", "SNAT pool ff02::/124 covers multicast"),
        (pool6, "snat_pool = \"::/124\"", "SNAT pool ::/124 covers unspecified addresses"),
    ];
    for (from, to, want) in cases {
        assert!(cfg.contains(from), "{from}");
        let text = cfg.replacen(from, to, 1);
        let (line, column) = value_at(&text, to);
        let (ok, msg) = check(&text);
        assert!(!ok, "{to} passed check");
        assert!(msg.contains(&format!("FILE:{line}:{column}: ")), "{to}: {msg}");
        assert!(msg.contains(want), "{to}: {msg}");
    }
}

#[test]
fn pools_and_vips_holding_the_hosts_own_address_are_refused() {
    // The shipped interface names in a namespace of this test's own, with
    // the lab's address on sh-cli: `check` (not --offline) reads them.
    if !root_or_skip() {
        return;
    }
    let ns = format!("shunt-chk-{}", common::rand_u32());
    let ip = |args: &[&str]| {
        let out = Command::new("ip").args(args).output().unwrap();
        assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    ip(&["netns", "add", &ns]);
    ip(&["-n", &ns, "link", "add", "sh-cli", "type", "veth", "peer", "name", "sh-be"]);
    ip(&["-n", &ns, "addr", "add", "10.0.1.1/24", "dev", "sh-cli"]);
    let cfg = default_config();
    let cases = [
        (
            "snat_pool = \"10.0.3.0/28\"",
            "snat_pool = \"10.0.1.0/28\"",
            "SNAT pool 10.0.1.0/28 covers 10.0.1.1, this host's own address on `sh-cli`",
        ),
        ("vip = \"10.0.100.1\"", "vip = \"10.0.1.1\"", "VIP 10.0.1.1 is this host's own address on `sh-cli`"),
    ];
    let results = cases.map(|(from, to, want)| {
        let text = cfg.replacen(from, to, 1);
        (check_in(Some(&ns), &[], &text), value_at(&text, to), want)
    });
    // The unchanged config passes in the same namespace.
    let good = check_in(Some(&ns), &[], &cfg);
    ip(&["netns", "del", &ns]);
    assert_eq!(good.0, Some(0), "{}", good.1);
    for ((code, msg), (line, column), want) in results {
        assert_ne!(code, Some(0), "{want}: passed check");
        assert!(msg.contains(&format!("FILE:{line}:{column}: ")), "{msg}");
        assert!(msg.contains(want), "{msg}");
    }
}
