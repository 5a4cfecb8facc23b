//! `shunt lab`: the built-in namespace topology, kept in scripts/lab.sh so
//! it can also be read and run without the binary.

const LAB_SCRIPT: &str = include_str!("../scripts/lab.sh");

/// Why `shunt lab` failed.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// bash could not be started.
    #[error("running bash for the lab script")]
    Bash(#[source] std::io::Error),
    /// `lab status`: the script found a namespace or link missing (and said which).
    #[error("the lab is not up")]
    NotUp,
    /// The script failed (it needs root, iproute2 and ethtool).
    #[error("lab {action} failed ({status}); it needs root and iproute2/ethtool")]
    Failed { action: String, status: std::process::ExitStatus },
}

pub fn run(action: &str) -> Result<(), LabError> {
    let status = std::process::Command::new("bash")
        .arg("-c")
        .arg(LAB_SCRIPT)
        .arg("lab.sh")
        .arg(action)
        .status()
        .map_err(LabError::Bash)?;
    if action == "status" && status.code() == Some(1) {
        return Err(LabError::NotUp);
    }
    if !status.success() {
        return Err(LabError::Failed { action: action.to_string(), status });
    }
    Ok(())
}
