//! Compiles the XDP program in xdp-redirect/ with clang and embeds the object.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const PACKAGES: &str = "apt-get install clang llvm libbpf-dev linux-libc-dev";

fn main() {
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

fn target_arch_triple() -> String {
    match env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("aarch64") => "aarch64".into(),
        Ok(other) => other.into(),
        Err(_) => "x86_64".into(),
    }
}
