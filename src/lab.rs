//! `shunt lab`: the built-in namespace topology, kept in scripts/lab.sh so
//! it can also be read and run without the binary.

use anyhow::{bail, Context, Result};

const LAB_SCRIPT: &str = include_str!("../scripts/lab.sh");

pub fn run(action: &str) -> Result<()> {
    let status = std::process::Command::new("bash")
        .arg("-c")
        .arg(LAB_SCRIPT)
        .arg("lab.sh")
        .arg(action)
        .status()
        .context("running bash for the lab script")?;
    if action == "status" && status.code() == Some(1) {
        // The script said what is missing.
        bail!("the lab is not up");
    }
    if !status.success() {
        bail!("lab {action} failed ({status}); it needs root and iproute2/ethtool");
    }
    Ok(())
}
