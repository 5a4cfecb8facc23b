//! `[service.health]`: how a service's backends are probed, and what the
//! load balancer does with a backend that fails (docs/DECISIONS.md records
//! the defaults and why).

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

pub use super::duration::Millis;
use super::error::Source;
use super::ConfigError;

/// Shortest probe interval: faster is flapping detection, not health.
pub const MIN_INTERVAL: Duration = Duration::from_millis(50);

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSection {
    pub kind: Option<Spanned<String>>,
    pub interval: Option<Spanned<Millis>>,
    pub timeout: Option<Spanned<Millis>>,
    pub rise: Option<Spanned<u8>>,
    pub fall: Option<Spanned<u8>>,
    pub port: Option<Spanned<u16>>,
    pub path: Option<Spanned<String>>,
    pub expect: Option<Spanned<Vec<u16>>>,
    pub host: Option<Spanned<String>>,
    pub payload: Option<Spanned<String>>,
    pub on_down: Option<Spanned<String>>,
    pub all_down: Option<Spanned<String>>,
}

/// What a probe does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckKind {
    /// No probes: every backend counts as up.
    None,
    /// A TCP connect that completes is a pass.
    Tcp,
    /// `GET path` answered with a status in `expect`.
    Http { path: String, host: Option<String>, expect: Vec<u16> },
    /// A datagram that is answered; ICMP port unreachable or silence fail.
    Udp { payload: Vec<u8> },
}

impl CheckKind {
    pub fn name(&self) -> &'static str {
        match self {
            CheckKind::None => "none",
            CheckKind::Tcp => "tcp",
            CheckKind::Http { .. } => "http",
            CheckKind::Udp { .. } => "udp",
        }
    }
}

/// Existing flows of a backend that goes down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDown {
    /// Their conntrack entries stay (they may still finish).
    Keep,
    /// Their entries are removed; the next packet is scheduled afresh
    /// (IPVS `expire_nodest_conn`).
    Expire,
}

/// New flows of a service whose every backend is down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllDown {
    /// Spread them over all enabled backends as if healthy (Envoy's panic mode).
    Panic,
    /// Drop them, counted as `no_backend`.
    Drop,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub kind: CheckKind,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive passes to come up.
    pub rise: u8,
    /// Consecutive failures to go down.
    pub fall: u8,
    /// Probe this port instead of the backend's.
    pub port: Option<u16>,
    pub on_down: OnDown,
    pub all_down: AllDown,
}

impl HealthCheck {
    /// The defaults when `[service.health]` is absent: a TCP connect every
    /// 2 s with a 1 s timeout, up after 2 passes, down after 3 failures, for
    /// TCP services; no probes for UDP services, which have no generic probe.
    pub fn default_for(protocol: u8) -> HealthCheck {
        HealthCheck {
            kind: if protocol == 6 { CheckKind::Tcp } else { CheckKind::None },
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            rise: 2,
            fall: 3,
            port: None,
            on_down: OnDown::Keep,
            all_down: AllDown::Panic,
        }
    }
}

pub(super) fn validate(
    src: &Source<'_>,
    service: &str,
    protocol: u8,
    h: Option<&HealthSection>,
) -> Result<HealthCheck, ConfigError> {
    let mut out = HealthCheck::default_for(protocol);
    let Some(h) = h else { return Ok(out) };
    let at = |span: std::ops::Range<usize>, msg: String| {
        src.error(span, format!("service `{service}`: [service.health] {msg}"))
    };
    let kind = h.kind.as_ref().map(|k| (k.get_ref().as_str(), k.span()));
    let only = |field: &Option<Spanned<String>>, name: &str, kind_name: &str| -> Result<(), ConfigError> {
        match field {
            Some(f) if kind.as_ref().map(|k| k.0) != Some(kind_name) => {
                Err(at(f.span(), format!("`{name}` applies to kind = \"{kind_name}\" only")))
            }
            _ => Ok(()),
        }
    };
    only(&h.path, "path", "http")?;
    only(&h.host, "host", "http")?;
    only(&h.payload, "payload", "udp")?;
    if let Some(e) = &h.expect {
        if kind.as_ref().map(|k| k.0) != Some("http") {
            return Err(at(e.span(), "`expect` applies to kind = \"http\" only".into()));
        }
    }
    if let Some((k, span)) = kind {
        out.kind = match k {
            "none" => CheckKind::None,
            "tcp" => CheckKind::Tcp,
            "http" => {
                let path = h.path.as_ref().map_or("/".to_string(), |p| p.get_ref().clone());
                if !path.starts_with('/') || path.contains(char::is_whitespace) {
                    let span = h.path.as_ref().map_or(span.clone(), Spanned::span);
                    return Err(at(span, format!("path `{path}` must start with / and hold no spaces")));
                }
                let expect = h.expect.as_ref().map_or(vec![200], |e| e.get_ref().clone());
                if let Some(bad) = expect.iter().find(|c| !(100..=599).contains(*c)) {
                    let span = h.expect.as_ref().map_or(span.clone(), Spanned::span);
                    return Err(at(span, format!("expect holds {bad}, not an HTTP status (100..=599)")));
                }
                if expect.is_empty() {
                    let span = h.expect.as_ref().map_or(span.clone(), Spanned::span);
                    return Err(at(span, "expect is empty: no reply could pass".into()));
                }
                let host = h.host.as_ref().map(|x| x.get_ref().clone());
                if let (Some(x), Some(s)) = (&host, &h.host) {
                    if x.is_empty() || x.contains(char::is_whitespace) {
                        return Err(at(s.span(), format!("host `{x}` is not a host name")));
                    }
                }
                CheckKind::Http { path, host, expect }
            }
            "udp" => CheckKind::Udp {
                payload: h.payload.as_ref().map_or(b"ping\n".to_vec(), |p| p.get_ref().as_bytes().to_vec()),
            },
            other => return Err(at(span, format!("kind `{other}` must be tcp, http, udp or none"))),
        };
        let tcp_kind = matches!(out.kind, CheckKind::Tcp | CheckKind::Http { .. });
        if tcp_kind && protocol != 6 || matches!(out.kind, CheckKind::Udp { .. }) && protocol != 17 {
            let proto = if protocol == 6 { "tcp" } else { "udp" };
            return Err(at(span, format!("kind `{k}` cannot probe a {proto} service")));
        }
    }
    if let Some(i) = &h.interval {
        out.interval = Duration::from_millis(i.get_ref().0);
        if out.interval < MIN_INTERVAL {
            return Err(at(i.span(), format!("interval must be at least {}ms", MIN_INTERVAL.as_millis())));
        }
    }
    if let Some(t) = &h.timeout {
        out.timeout = Duration::from_millis(t.get_ref().0);
    }
    // An explicit interval shorter than the default timeout shortens it.
    if h.timeout.is_none() {
        out.timeout = out.timeout.min(out.interval);
    }
    if out.timeout.is_zero() || out.timeout > out.interval {
        let span = h.timeout.as_ref().map_or(0..0, Spanned::span);
        return Err(at(
            span,
            format!(
                "timeout {}ms must be above 0 and at most the interval ({}ms)",
                out.timeout.as_millis(),
                out.interval.as_millis()
            ),
        ));
    }
    for (field, slot, name) in [(&h.rise, &mut out.rise, "rise"), (&h.fall, &mut out.fall, "fall")] {
        if let Some(v) = field {
            if !(1..=100).contains(v.get_ref()) {
                return Err(at(v.span(), format!("{name} must be 1..=100")));
            }
            *slot = *v.get_ref();
        }
    }
    if let Some(p) = &h.port {
        if *p.get_ref() == 0 {
            return Err(at(p.span(), "port must be 1..=65535".into()));
        }
        out.port = Some(*p.get_ref());
    }
    if let Some(o) = &h.on_down {
        out.on_down = match o.get_ref().as_str() {
            "keep" => OnDown::Keep,
            "expire" => OnDown::Expire,
            other => return Err(at(o.span(), format!("on_down `{other}` must be keep or expire"))),
        };
    }
    if let Some(a) = &h.all_down {
        out.all_down = match a.get_ref().as_str() {
            "panic" => AllDown::Panic,
            "drop" => AllDown::Drop,
            other => return Err(at(a.span(), format!("all_down `{other}` must be panic or drop"))),
        };
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    /// The shipped config with `table` as the first service's health table.
    fn with(table: &str) -> Result<Config, String> {
        let base = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml")).unwrap();
        let (head, tail) = base.split_at(base.find("[[service]]\nname = \"web6\"").unwrap());
        // Drop the shipped table of `web`, if any, then add ours.
        let head = match head.find("[service.health]") {
            Some(i) => &head[..i],
            None => head,
        };
        let text = format!("{head}[service.health]\n{table}\n\n{tail}");
        Config::parse(Path::new("t.toml"), &text).map_err(|e| e.to_string())
    }

    #[test]
    fn absent_table_gives_the_recorded_defaults() {
        let base = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml")).unwrap();
        let line =
            base.lines().find(|l| l.starts_with("health = {")).expect("web6 has an inline health table");
        let c = Config::parse(Path::new("t.toml"), &base.replace(line, "")).unwrap();
        let web6 = c.services.iter().find(|s| s.name == "web6").unwrap();
        assert_eq!(web6.health, HealthCheck::default_for(6));
        let d = HealthCheck::default_for(6);
        assert_eq!(
            (d.kind.name(), d.interval, d.timeout, d.rise, d.fall),
            ("tcp", Duration::from_secs(2), Duration::from_secs(1), 2, 3)
        );
        assert_eq!((d.on_down, d.all_down), (OnDown::Keep, AllDown::Panic));
        assert_eq!(HealthCheck::default_for(17).kind, CheckKind::None);
    }

    #[test]
    fn http_table_parses() {
        let c = with("kind = \"http\"\ninterval = \"500ms\"\ntimeout = \"200ms\"\nrise = 3\nfall = 1\nport = 8080\n\
                      path = \"/healthz\"\nexpect = [200, 204]\nhost = \"web.example\"\non_down = \"expire\"\nall_down = \"drop\"")
        .unwrap();
        let h = &c.services[0].health;
        assert_eq!(
            h.kind,
            CheckKind::Http {
                path: "/healthz".into(),
                host: Some("web.example".into()),
                expect: vec![200, 204]
            }
        );
        assert_eq!((h.interval, h.timeout), (Duration::from_millis(500), Duration::from_millis(200)));
        assert_eq!((h.rise, h.fall, h.port), (3, 1, Some(8080)));
        assert_eq!((h.on_down, h.all_down), (OnDown::Expire, AllDown::Drop));
    }

    #[test]
    fn bad_tables_are_refused_with_the_reason() {
        for (table, want) in [
            ("kind = \"icmp\"", "kind `icmp` must be tcp, http, udp or none"),
            ("kind = \"udp\"", "kind `udp` cannot probe a tcp service"),
            ("kind = \"tcp\"\npath = \"/\"", "`path` applies to kind = \"http\" only"),
            ("kind = \"http\"\nexpect = [999]", "expect holds 999"),
            (
                "interval = \"1s\"\ntimeout = \"2s\"",
                "timeout 2000ms must be above 0 and at most the interval",
            ),
            ("interval = \"10ms\"", "interval must be at least 50ms"),
            ("rise = 0", "rise must be 1..=100"),
            ("on_down = \"later\"", "on_down `later` must be keep or expire"),
            ("all_down = \"hope\"", "all_down `hope` must be panic or drop"),
            ("interval = \"soon\"", "invalid duration `soon`"),
            ("kind = \"tcp\"\nfrobnicate = 1", "unknown field `frobnicate`"),
        ] {
            let e = with(table).unwrap_err();
            assert!(e.contains(want), "{table}: {e}");
        }
        // A short interval alone shortens the default timeout with it.
        let c = with("interval = \"200ms\"").unwrap();
        assert_eq!(c.services[0].health.timeout, Duration::from_millis(200));
    }
}
