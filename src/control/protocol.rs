//! The control socket's wire format: one JSON object per connection, one
//! JSON reply. Unknown verbs and fields are errors, like unknown TOML keys.

use serde::{Deserialize, Serialize};

/// Largest request accepted; larger ones get an error, not a read of it all.
pub const MAX_REQUEST: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(tag = "verb", deny_unknown_fields)]
pub enum Request {
    /// Counters: per worker, per service and backend, XDP.
    #[serde(rename = "stats")]
    Stats {},
    /// Latency report: `format` is table, hgrm, json or svg.
    #[serde(rename = "histogram")]
    Histogram {
        #[serde(default = "default_format")]
        format: String,
    },
    /// Tracked connections, filtered, at most `limit`.
    #[serde(rename = "conn.list")]
    ConnList {
        #[serde(default)]
        service: Option<String>,
        /// Backend address, or address:port.
        #[serde(default)]
        backend: Option<String>,
        /// Client address, or address:port.
        #[serde(default)]
        client: Option<String>,
        /// Protocol state, e.g. established, syn_sent, udp_replied.
        #[serde(default)]
        state: Option<String>,
        #[serde(default)]
        limit: Option<usize>,
    },
    /// The running configuration, runtime changes included, as TOML.
    #[serde(rename = "config.show")]
    ConfigShow {},
    /// Re-read the config file (what SIGHUP does).
    #[serde(rename = "reload")]
    Reload {},
    #[serde(rename = "backend.add")]
    BackendAdd {
        service: String,
        addr: String,
        port: u16,
        #[serde(default = "default_weight")]
        weight: u32,
        #[serde(default)]
        mac: Option<String>,
    },
    #[serde(rename = "backend.remove")]
    BackendRemove { service: String, addr: String, port: u16 },
    /// Admin state draining: no new flows, existing flows stay. Kept
    /// across reloads.
    #[serde(rename = "backend.drain")]
    BackendDrain { service: String, addr: String, port: u16 },
    /// Admin state disabled: no new flows, existing flows expired, no probes.
    #[serde(rename = "backend.disable")]
    BackendDisable { service: String, addr: String, port: u16 },
    /// Admin state enabled again (after drain or disable).
    #[serde(rename = "backend.enable")]
    BackendEnable { service: String, addr: String, port: u16 },
    /// Backends with admin state, health, weight, last probe, connections.
    #[serde(rename = "backend.list")]
    BackendList {
        #[serde(default)]
        service: Option<String>,
    },
    /// Services with VIP, port, protocol, pipeline, backends up/total.
    #[serde(rename = "service.list")]
    ServiceList {},
    #[serde(rename = "backend.weight")]
    BackendWeight { service: String, addr: String, port: u16, weight: u32 },
    /// `service` holds the same keys as a `[[service]]` table.
    #[serde(rename = "service.add")]
    ServiceAdd { service: serde_json::Map<String, serde_json::Value> },
    #[serde(rename = "service.remove")]
    ServiceRemove { name: String },
    /// Withdraw every VIP of this node; flows keep being served.
    #[serde(rename = "node.drain")]
    NodeDrain {},
    /// Announce this node's VIPs again (those with a backend up).
    #[serde(rename = "node.undrain")]
    NodeUndrain {},
    /// Drain state and, per VIP, whether the node announces it.
    #[serde(rename = "node.status")]
    NodeStatus {},
    /// Planned restart: the process re-executes the binary at its path
    /// (same pid, same arguments) and the new image takes over the XDP
    /// links, the flow state and the queues. `force` lets a config that
    /// changes the worker count or table size restart, its flows lost.
    #[serde(rename = "restart")]
    Restart {
        #[serde(default)]
        force: bool,
    },
}

fn default_format() -> String {
    "table".into()
}

fn default_weight() -> u32 {
    100
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}

impl Response {
    pub fn ok(data: serde_json::Value) -> Response {
        Response { ok: true, error: None, data: Some(data) }
    }
    pub fn err(e: impl std::fmt::Display) -> Response {
        Response { ok: false, error: Some(e.to_string()), data: None }
    }
}

/// Why a request was refused before it was handled: the reply's error.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// More than [`MAX_REQUEST`] bytes before the request's end.
    #[error("request too large (limit {MAX_REQUEST} bytes)")]
    TooLarge,
    #[error("reading request: {0}")]
    Read(#[source] std::io::Error),
    #[error("request is not UTF-8")]
    NotUtf8,
    /// Not JSON, or not a request: an unknown verb or field, a missing one.
    #[error("bad request: {0}")]
    Bad(#[source] serde_json::Error),
}

/// Parses a request, with messages an operator can act on.
pub fn parse(bytes: &[u8]) -> Result<Request, RequestError> {
    if bytes.len() > MAX_REQUEST {
        return Err(RequestError::TooLarge);
    }
    let text = std::str::from_utf8(bytes).map_err(|_| RequestError::NotUtf8)?;
    serde_json::from_str(text.trim()).map_err(RequestError::Bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_parse_and_errors_are_clear() {
        assert_eq!(parse(br#"{"verb":"stats"}"#).unwrap(), Request::Stats {});
        assert_eq!(
            parse(br#"{"verb":"backend.drain","service":"web","addr":"10.0.2.11","port":80}"#).unwrap(),
            Request::BackendDrain { service: "web".into(), addr: "10.0.2.11".into(), port: 80 }
        );
        let e = parse(br#"{"verb":"teleport"}"#).unwrap_err().to_string();
        assert!(e.contains("unknown variant `teleport`"), "{e}");
        let e = parse(b"{not json").unwrap_err();
        assert!(matches!(e, RequestError::Bad(_)) && e.to_string().starts_with("bad request:"), "{e}");
        let e = parse(br#"{"verb":"stats","extra":1}"#).unwrap_err().to_string();
        assert!(e.contains("unknown field `extra`"), "{e}");
        let e = parse(&vec![b' '; MAX_REQUEST + 1]).unwrap_err();
        assert!(matches!(e, RequestError::TooLarge), "{e}");
        assert_eq!(e.to_string(), format!("request too large (limit {MAX_REQUEST} bytes)"));
        assert!(matches!(parse(b"\xff"), Err(RequestError::NotUtf8)));
    }
}
