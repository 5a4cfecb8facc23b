//! The control plane, on the housekeeping (main) thread: the running state
//! and its loop (`plane`), requests and reloads that change it (`requests`),
//! the immutable services snapshots it builds for the workers (`snapshot`),
//! and the control socket (`socket`, `protocol`, `edit`). It drives the
//! `dataplane`; the dataplane never calls back into it.

pub mod announce;
mod conns;
pub mod edit;
pub mod health;
pub mod notify;
mod plane;
pub mod protocol;
mod requests;
pub mod snapshot;
mod socket;

pub use plane::{run, ControlError, Ended};
pub use protocol::{Request, Response};
pub use requests::ChangeError;
pub use snapshot::build_services;
pub use socket::{request, Server, SocketError};

/// An error and its causes on one line, skipping a cause whose text the
/// message before it already carries (`cannot read x: No such file`
/// followed by `No such file` again).
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = String::new();
    for cause in std::iter::successors(Some(e), |c| c.source()) {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_names_each_cause_once() {
        let bind = SocketError::Bind { path: "/run/x.sock".into(), source: std::io::Error::other("boom") };
        assert_eq!(
            chain(&ControlError::Socket(bind)),
            "control socket (set [telemetry] control_socket = \"\" to disable): \
             binding control socket /run/x.sock: boom"
        );
        // The message carries its cause already: not repeated.
        let gone = SocketError::NotRunning { path: "/p.sock".into(), source: std::io::Error::other("gone") };
        assert_eq!(chain(&gone), "no running shunt at /p.sock (gone); is `shunt run` up? (--socket PATH)");
    }

    #[test]
    fn a_request_error_names_the_verb_and_key_not_a_line() {
        let at = |key: Option<&str>| {
            crate::config::ConfigError::At(crate::config::Located {
                file: "generated.toml".into(),
                line: 40,
                column: 3,
                key: key.map(str::to_string),
                message: "service `web`: invalid MAC address `zz:zz`".into(),
            })
        };
        assert_eq!(
            requests::in_request("backend.add", at(Some("service.backends.mac"))).to_string(),
            "backend.add request: key `service.backends.mac`: service `web`: invalid MAC address `zz:zz`"
        );
        assert_eq!(
            requests::in_request("service.add", at(None)).to_string(),
            "service.add request: service `web`: invalid MAC address `zz:zz`"
        );
    }
}
