//! Log lines on stderr, as text or JSON. Under journald (stderr is the
//! stream named by `JOURNAL_STREAM`) each line starts with its syslog
//! priority, `<3>` … `<7>` (sd-daemon(3)), so `journalctl -p warning`
//! filters them, and the journal's own timestamp replaces ours.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Levels `--log` accepts, alone or as `TARGET=LEVEL` directives.
pub const LEVELS: &[&str] = &["error", "warn", "info", "debug", "trace", "off"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Checks a `--log` filter: every directive's level must be one of
/// [`LEVELS`]; tracing would read `warning` as a target name and log
/// nothing at all.
pub fn parse_filter(s: &str) -> Result<String, UnknownLevel> {
    for directive in s.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let level = directive.rsplit_once('=').map_or(directive, |(_, l)| l);
        if !LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
            return Err(UnknownLevel(level.to_string()));
        }
    }
    Ok(s.to_string())
}

/// A `--log` directive's level that is not one of [`LEVELS`].
#[derive(Debug, thiserror::Error)]
#[error("unknown log level `{0}` (valid: {valid}, or TARGET=LEVEL)", valid = LEVELS.join(", "))]
pub struct UnknownLevel(String);

/// Installs the global subscriber writing to stderr.
pub fn init(filter: &str, format: LogFormat) {
    let journal = stderr_is_journal();
    let lines = Lines { json: format == LogFormat::Json, syslog: journal, time: !journal };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .event_format(lines)
        .init();
}

/// Whether stderr is the journal stream systemd connected us to: the
/// `JOURNAL_STREAM` device:inode must be stderr's (a child whose stderr
/// was redirected inherits the variable but not the stream).
pub fn stderr_is_journal() -> bool {
    let Ok(v) = std::env::var("JOURNAL_STREAM") else { return false };
    let Some((dev, ino)) = v.split_once(':') else { return false };
    let Some((st_dev, st_ino)) = crate::sys::fd_identity(2) else { return false };
    dev.parse::<u64>() == Ok(st_dev) && ino.parse::<u64>() == Ok(st_ino)
}

/// Syslog priority of a level (sd-daemon(3) prefixes).
pub fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

struct Lines {
    json: bool,
    syslog: bool,
    time: bool,
}

/// An event's fields in order; `message` kept apart.
#[derive(Default)]
struct Fields {
    message: String,
    rest: Vec<(&'static str, serde_json::Value)>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, serde_json::Value::String(value.to_string()));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, serde_json::Value::String(format!("{value:?}")));
    }
}

impl Fields {
    fn put(&mut self, field: &Field, value: serde_json::Value) {
        if field.name() == "message" {
            self.message = match value {
                serde_json::Value::String(s) => s,
                v => v.to_string(),
            };
        } else {
            self.rest.push((field.name(), value));
        }
    }
}

impl<S, N> FormatEvent<S, N> for Lines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, _ctx: &FmtContext<'_, S, N>, mut w: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let meta = event.metadata();
        let mut f = Fields::default();
        event.record(&mut f);
        if self.syslog {
            write!(w, "<{}>", priority(meta.level()))?;
        }
        if self.json {
            let mut o = serde_json::Map::new();
            if self.time {
                o.insert("time".into(), rfc3339(SystemTime::now()).into());
            }
            o.insert("level".into(), meta.level().as_str().to_ascii_lowercase().into());
            o.insert("target".into(), meta.target().into());
            o.insert("message".into(), f.message.into());
            for (k, v) in f.rest {
                o.insert(k.into(), v);
            }
            return writeln!(w, "{}", serde_json::Value::Object(o));
        }
        if self.time {
            write!(w, "{} ", rfc3339(SystemTime::now()))?;
        }
        write!(w, "{:>5} {}: {}", meta.level(), meta.target(), f.message)?;
        for (k, v) in f.rest {
            match v {
                serde_json::Value::String(s) if s.is_empty() || s.contains([' ', '"', '=']) => {
                    write!(w, " {k}={s:?}")?
                }
                serde_json::Value::String(s) => write!(w, " {k}={s}")?,
                v => write!(w, " {k}={v}")?,
            }
        }
        writeln!(w)
    }
}

/// `2026-12-01T20:43:19.123Z` (UTC, milliseconds).
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let (y, mo, day, h, mi, s) = civil(d.as_secs());
    format!("{y:04}-{mo:02}-{day:02}T{h:02}:{mi:02}:{s:02}.{:03}Z", d.subsec_millis())
}

/// `20261201T204319Z`: a timestamp that sorts and is safe in file names.
pub fn compact_utc(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let (y, mo, day, h, mi, s) = civil(d.as_secs());
    format!("{y:04}{mo:02}{day:02}T{h:02}{mi:02}{s:02}Z")
}

/// Seconds since the epoch to UTC (year, month, day, hour, minute, second),
/// by Howard Hinnant's days-from-civil inverse.
fn civil(secs: u64) -> (i64, u32, u32, u64, u64, u64) {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn filters_with_unknown_levels_are_refused() {
        assert!(parse_filter("info").is_ok());
        assert!(parse_filter("warn,shunt::control=debug").is_ok());
        let e = parse_filter("warning").unwrap_err().to_string();
        assert!(e.contains("unknown log level `warning`") && e.contains("error, warn, info"), "{e}");
        assert!(parse_filter("shunt=verbose").is_err());
    }

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        let t = UNIX_EPOCH + Duration::from_millis(1_796_157_799_123);
        assert_eq!(rfc3339(t), "2026-12-01T20:43:19.123Z");
        assert_eq!(compact_utc(t), "20261201T204319Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)), "2000-02-29T00:00:00.000Z");
    }
}
