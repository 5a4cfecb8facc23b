//! Compiles the XDP program in xdp-redirect/ with clang and embeds the object.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const PACKAGES: &str = "apt-get install clang llvm libbpf-dev linux-libc-dev";

fn main() {
    version_info();
    let src = Path::new("xdp-redirect/xdp_redirect.c");
    println!("cargo:rerun-if-changed={}", src.display());
    println!("cargo:rerun-if-changed=xdp-redirect/shunt_maps.h");

    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("xdp_redirect.o");
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".to_string());
    let arch_include = format!("/usr/include/{}-linux-gnu", target_arch_triple());

    let status = Command::new(&clang)
        .args(["-O2", "-g", "-Wall", "-Werror", "-target", "bpf"])
        .arg(format!("-I{arch_include}"))
        .arg("-Ixdp-redirect")
        .arg("-c")
        .arg(src)
        .arg("-o")
        .arg(&out)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!(
            "clang failed ({s}) compiling {}. If bpf/bpf_helpers.h or asm/types.h are missing: {PACKAGES}",
            src.display()
        ),
        Err(e) => panic!("cannot run `{clang}` to build the XDP program ({e}). Install it: {PACKAGES}"),
    }
}

/// `SHUNT_GIT_COMMIT` and `SHUNT_BUILD_DATE` for `--version` and
/// `shunt_build_info`; "unknown" outside a git checkout. The date honours
/// SOURCE_DATE_EPOCH for reproducible packages.
fn version_info() {
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git").args(args).output().ok()?;
        let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
        (out.status.success() && !s.is_empty()).then_some(s)
    };
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    // Rebuild when HEAD moves: HEAD itself, the branch it names, packed refs.
    // A path that does not exist would make cargo rerun this every build.
    let branch = git(&["rev-parse", "--symbolic-full-name", "HEAD"]);
    for name in ["HEAD", branch.as_deref().unwrap_or("HEAD"), "packed-refs"] {
        if let Some(path) = git(&["rev-parse", "--git-path", name]).filter(|p| Path::new(p).exists()) {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    let date = match env::var("SOURCE_DATE_EPOCH") {
        Ok(e) => Command::new("date").args(["-u", "-d", &format!("@{e}"), "+%Y-%m-%d"]).output(),
        Err(_) => Command::new("date").args(["-u", "+%Y-%m-%d"]).output(),
    }
    .ok()
    .and_then(|o| String::from_utf8(o.stdout).ok())
    .map(|s| s.trim().to_string())
    .filter(|s| !s.is_empty())
    .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=SHUNT_GIT_COMMIT={commit}");
    println!("cargo:rustc-env=SHUNT_BUILD_DATE={date}");
}

fn target_arch_triple() -> String {
    match env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("aarch64") => "aarch64".into(),
        Ok(other) => other.into(),
        Err(_) => "x86_64".into(),
    }
}
