//! The CLI as a user meets it: --version, --help, and `check` messages that
//! point at the line and column of a mistake.

mod common;

use std::process::Command;

use common::{repo, SHUNT};

fn check(text: &str) -> (bool, String) {
    let path = std::env::temp_dir().join(format!("shunt-cli-{}.toml", common::rand_u32()));
    std::fs::write(&path, text).unwrap();
    let out = Command::new(SHUNT).args(["check", "--offline", "--config"]).arg(&path).output().unwrap();
    let _ = std::fs::remove_file(&path);
    let msg = String::from_utf8_lossy(&out.stderr).replace(path.to_str().unwrap(), "FILE");
    (out.status.success(), msg + &String::from_utf8_lossy(&out.stdout))
}

fn default_config() -> String {
    std::fs::read_to_string(repo().join("config.toml")).unwrap()
}

#[test]
fn version_and_help() {
    let out = Command::new(SHUNT).arg("--version").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("shunt {}", env!("CARGO_PKG_VERSION")));
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

#[test]
fn bad_key_points_at_line_and_column() {
    let text = default_config().replace("batch_size = 64", "batch_sise = 64");
    let line = text.lines().position(|l| l.starts_with("batch_sise")).unwrap() + 1;
    let (ok, msg) = check(&text);
    assert!(!ok);
    assert!(
        msg.contains(&format!("FILE:{line}:1: key `dataplane.batch_sise`: unknown field `batch_sise`")),
        "{msg}"
    );
}

#[test]
fn stage_order_that_cannot_work_is_refused_at_the_stage() {
    let text = std::fs::read_to_string(repo().join("pipelines/l4lb.toml")).unwrap();
    let good = r#"stages = ["conntrack", "maglev", "nat", "l2"]"#;
    assert!(text.contains(good), "fixture changed: {text}");
    let text = text.replace(good, r#"stages = ["l2", "nat", "maglev", "conntrack"]"#);
    let line = text.lines().position(|l| l.starts_with("stages = [\"l2\"")).unwrap() + 1;
    let out = {
        let path = std::env::temp_dir().join(format!("shunt-cli-{}.toml", common::rand_u32()));
        std::fs::write(&path, &text).unwrap();
        let out = Command::new(SHUNT).args(["check", "--offline", "--config"]).arg(&path).output().unwrap();
        let _ = std::fs::remove_file(&path);
        let msg = String::from_utf8_lossy(&out.stderr).replace(path.to_str().unwrap(), "FILE");
        (out.status.code(), msg)
    };
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
    let text = default_config().replace("ring_size = 2048", "ring_size = \"large\"");
    let line = text.lines().position(|l| l.starts_with("ring_size")).unwrap() + 1;
    let (ok, msg) = check(&text);
    assert!(!ok);
    assert!(
        msg.contains(&format!("FILE:{line}:13: key `dataplane.ring_size`: invalid type: string \"large\"")),
        "{msg}"
    );
}

#[test]
fn unknown_interface_points_at_line_and_column() {
    let text = default_config().replace("egress = \"sh-be\"", "egress = \"eth9\"");
    let line = text.lines().position(|l| l.starts_with("egress = \"eth9\"")).unwrap() + 1;
    let (ok, msg) = check(&text);
    assert!(!ok);
    assert!(
        msg.contains(&format!("FILE:{line}:10: key `pipeline.l4lb.egress`: unknown interface `eth9`")),
        "{msg}"
    );
}

#[test]
fn missing_host_interface_is_reported_with_advice() {
    // Without --offline, check looks at this host: the lab interfaces live
    // in the `shunt` namespace, not here.
    let text = default_config().replace("\"sh-cli\"", "\"nosuchif0\"");
    let path = std::env::temp_dir().join(format!("shunt-cli-{}.toml", common::rand_u32()));
    std::fs::write(&path, &text).unwrap();
    let out = Command::new(SHUNT).args(["check", "--config"]).arg(&path).output().unwrap();
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(msg.contains("interface `nosuchif0` not found on this host"), "{msg}");
}

#[test]
fn run_without_privileges_names_what_is_missing() {
    // Drop to nobody with no capabilities; `run` must refuse before touching
    // the kernel and say which capabilities it lacks.
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all"])
        .arg(SHUNT)
        .args(["run", "--config"])
        .arg(repo().join("config.toml"))
        .output()
        .expect("setpriv (util-linux)");
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(msg.contains("missing CAP_NET_ADMIN"), "{msg}");
    assert!(msg.contains("CAP_BPF"), "{msg}");
}
