//! `conn.list`: each worker's tracked connections, copied out in bounded
//! rounds (telemetry::conns), filtered and named here, off the fast path.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::Serialize;

use crate::dataplane::Dataplane;
use crate::pipeline::conntrack::{ConnState, Entry, Tick};
use crate::pipeline::flow::EntryFlags;
use crate::pipeline::services::{ip_of, Services};
use crate::telemetry::conns::DumpError;
use crate::telemetry::stats::endpoint;

/// Rows returned when the request names no limit.
pub const DEFAULT_LIMIT: usize = 10_000;

pub struct Filter {
    pub service: Option<String>,
    pub backend: Option<String>,
    pub client: Option<String>,
    pub state: Option<String>,
    pub limit: Option<usize>,
}

#[derive(Debug, Serialize)]
pub struct Conn {
    pub proto: &'static str,
    pub client: String,
    pub vip: String,
    pub service: String,
    pub backend: String,
    /// Source address:port towards the backend (the SNAT binding, or the
    /// client's own when the service does no SNAT).
    pub snat: Option<String>,
    pub state: &'static str,
    /// Seconds since the flow's first packet.
    pub age_secs: u32,
    pub idle_secs: u32,
    pub worker: usize,
}

/// conntrack(8)-style state names.
pub fn state_name(s: ConnState) -> &'static str {
    match s {
        ConnState::TcpNone => "none",
        ConnState::TcpSynSent => "syn_sent",
        ConnState::TcpSynRecv => "syn_recv",
        ConnState::TcpEstablished => "established",
        ConnState::TcpFinWait => "fin_wait",
        ConnState::TcpCloseWait => "close_wait",
        ConnState::TcpLastAck => "last_ack",
        ConnState::TcpTimeWait => "time_wait",
        ConnState::TcpClose => "close",
        ConnState::UdpUnreplied => "unreplied",
        ConnState::UdpReplied => "replied",
        ConnState::Icmp => "icmp",
        ConnState::Generic => "generic",
    }
}

const STATES: &[&str] = &[
    "none",
    "syn_sent",
    "syn_recv",
    "established",
    "fin_wait",
    "close_wait",
    "last_ack",
    "time_wait",
    "close",
    "unreplied",
    "replied",
    "icmp",
    "generic",
];

/// Why a connection listing was refused or cut short.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    #[error("--{what} `{given}` is not an address or address:port")]
    BadEndpoint { what: &'static str, given: String },
    #[error("unknown state `{0}` (one of {states})", states = STATES.join(", "))]
    UnknownState(String),
    #[error("no service `{0}`")]
    NoService(String),
    #[error("worker {worker}: {source}")]
    Worker { worker: usize, source: DumpError },
}

/// An address, or an address:port ([v6]:port), to match endpoints against.
fn matcher(what: &'static str, s: &str) -> Result<(IpAddr, Option<u16>), ListError> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok((a.ip(), Some(a.port())));
    }
    s.trim_matches(|c| c == '[' || c == ']')
        .parse::<IpAddr>()
        .map(|ip| (ip, None))
        .map_err(|_| ListError::BadEndpoint { what, given: s.to_string() })
}

fn matches(m: &Option<(IpAddr, Option<u16>)>, ip: IpAddr, port: u16) -> bool {
    match m {
        None => true,
        Some((a, p)) => *a == ip && p.is_none_or(|p| p == port),
    }
}

pub fn list(dp: &mut Dataplane, services: &Services, f: &Filter) -> Result<serde_json::Value, ListError> {
    let backend = f.backend.as_deref().map(|b| matcher("backend", b)).transpose()?;
    let client = f.client.as_deref().map(|c| matcher("client", c)).transpose()?;
    let state = match &f.state {
        None => None,
        Some(s) => {
            let s = s.to_ascii_lowercase();
            if !STATES.contains(&s.as_str()) {
                return Err(ListError::UnknownState(s));
            }
            Some(s)
        }
    };
    if let Some(name) = &f.service {
        if !services.list.iter().any(|s| &s.name == name) {
            return Err(ListError::NoService(name.clone()));
        }
    }
    let limit = f.limit.unwrap_or(DEFAULT_LIMIT);
    let mut rows: Vec<Conn> = Vec::new();
    let mut truncated = false;
    for (worker, dumper) in dp.conns.iter_mut().enumerate() {
        if rows.len() >= limit {
            truncated = true;
            break;
        }
        let mut visit = |e: &Entry, now: Tick| -> bool {
            if e.flags.contains(EntryFlags::REPLY) {
                return true;
            }
            let Some(svc) =
                services.list.iter().find(|s| e.service.is_some_and(|id| id.index() == usize::from(s.id)))
            else {
                return true;
            };
            if f.service.as_ref().is_some_and(|n| *n != svc.name) {
                return true;
            }
            let k = e.key();
            let (cip, vip) = (ip_of(&k.src), ip_of(&k.dst));
            let (bip, bport) = (ip_of(&e.nat.dst), e.nat.dport);
            let st = state_name(e.state);
            if !matches(&client, cip, k.sport)
                || !matches(&backend, bip, bport)
                || state.as_deref().is_some_and(|s| s != st)
            {
                return true;
            }
            if rows.len() >= limit {
                truncated = true;
                return false;
            }
            rows.push(Conn {
                proto: match k.proto {
                    6 => "tcp",
                    17 => "udp",
                    1 | 58 => "icmp",
                    _ => "other",
                },
                client: endpoint(cip, k.sport),
                vip: endpoint(vip, k.dport),
                service: svc.name.clone(),
                backend: endpoint(bip, bport),
                snat: e.flags.contains(EntryFlags::SNAT).then(|| endpoint(ip_of(&e.nat.src), e.nat.sport)),
                state: st,
                age_secs: now.wrapping_sub(e.created),
                idle_secs: now.wrapping_sub(e.last_seen),
                worker,
            });
            true
        };
        dumper
            .visit(Duration::from_secs(1), &mut visit)
            .map_err(|source| ListError::Worker { worker, source })?;
    }
    Ok(serde_json::json!({ "connections": rows, "truncated": truncated }))
}
