//! Durations as the configuration writes them: a bare number of seconds, or
//! a number with a unit suffix. One parser serves both duration types; each
//! type names the suffixes it takes and the unit it counts in.

use serde::Deserialize;

/// The written forms of one duration type.
struct Units {
    /// Each suffix with how many of the type's units it stands for, tried in
    /// order (so "ms" comes before "s" and "m").
    suffixes: &'static [(&'static str, u64)],
    /// The type's units in one second: a bare number counts seconds.
    per_second: u64,
    /// The most the type holds, in its units.
    max: u64,
    /// The forms to suggest when the text is none of them.
    hint: &'static str,
}

/// [`Seconds`]: "30s", "5m", "2h", "5d".
const SECONDS: Units = Units {
    suffixes: &[("s", 1), ("m", 60), ("h", 3600), ("d", 86_400)],
    per_second: 1,
    max: u32::MAX as u64,
    hint: "s, m, h or d (\"120s\", \"5d\")",
};

/// [`Millis`]: "500ms", "2s", "1m".
const MILLIS: Units = Units {
    suffixes: &[("ms", 1), ("s", 1000), ("m", 60_000)],
    per_second: 1000,
    max: u64::MAX,
    hint: "ms, s or m (\"500ms\", \"2s\")",
};

impl Units {
    /// `s` in the type's units; `None` when it is not a duration or is
    /// more than the type holds.
    fn parse(&self, s: &str) -> Option<u64> {
        let s = s.trim();
        let (num, mult) = self
            .suffixes
            .iter()
            .find_map(|&(suffix, mult)| s.strip_suffix(suffix).map(|num| (num, mult)))
            .unwrap_or((s, self.per_second));
        num.trim().parse::<u64>().ok()?.checked_mul(mult).filter(|&n| n <= self.max)
    }

    /// A TOML number (seconds) or string, in the type's units.
    fn deserialize<'de, D: serde::Deserializer<'de>>(&self, d: D) -> Result<u64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => n.checked_mul(self.per_second).ok_or_else(|| serde::de::Error::custom("too long")),
            Raw::S(s) => self.parse(&s).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "invalid duration `{s}`: use seconds or a number with {}",
                    self.hint
                ))
            }),
        }
    }
}

/// A duration in whole seconds, written as a number or "30s"/"5m"/"2h"/"5d".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seconds(pub u32);

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = SECONDS.deserialize(d)?;
        u32::try_from(n).map(Seconds).map_err(|_| serde::de::Error::custom("too long"))
    }
}

/// A duration in milliseconds, written as whole seconds or a number with
/// ms, s or m ("500ms", "1s", "2m").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Millis(pub u64);

impl<'de> Deserialize<'de> for Millis {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        MILLIS.deserialize(d).map(Millis)
    }
}

/// Whole seconds in `s` ("90", "30s", "5m", "2h", "5d"); `None` when it is
/// not a duration or does not fit in a `u32`.
pub fn parse_duration(s: &str) -> Option<u32> {
    SECONDS.parse(s).and_then(|n| u32::try_from(n).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Both {
        s: Option<Seconds>,
        ms: Option<Millis>,
    }

    fn read(text: &str) -> Result<Both, String> {
        toml::from_str(text).map_err(|e| e.message().to_string())
    }

    /// Each type takes its own suffixes; a bare number is seconds in both.
    #[test]
    fn each_type_takes_its_forms() {
        for (text, secs) in [
            ("90", 90),
            ("\"90\"", 90),
            ("\"30s\"", 30),
            ("\" 5 m \"", 300),
            ("\"2h\"", 7200),
            ("\"5d\"", 432_000),
            ("4294967295", u32::MAX),
        ] {
            assert_eq!(read(&format!("s = {text}")).unwrap().s, Some(Seconds(secs)), "{text}");
        }
        for (text, ms) in
            [("2", 2000), ("\"2\"", 2000), ("\"500ms\"", 500), ("\"3s\"", 3000), ("\"2m\"", 120_000)]
        {
            assert_eq!(read(&format!("ms = {text}")).unwrap().ms, Some(Millis(ms)), "{text}");
        }
    }

    /// What a type does not take is refused with the forms it does take.
    #[test]
    fn other_forms_are_refused_with_a_hint() {
        for (field, hint, values) in [
            ("s", "s, m, h or d", &["500ms", "1w", "", "4294967296", "49711d"][..]),
            ("ms", "ms, s or m", &["2h", "soon", "1.5s"][..]),
        ] {
            for v in values {
                let e = read(&format!("{field} = \"{v}\"")).unwrap_err();
                let want = format!("invalid duration `{v}`: use seconds or a number with {hint}");
                assert!(e.contains(&want), "{field} = {v}: {e}");
            }
        }
        assert!(read("ms = 18446744073709552").unwrap_err().contains("too long"));
        assert_eq!(read("s = \"49710d\"").unwrap().s, Some(Seconds(49710 * 86_400)));
        assert!(read("s = 4294967296").is_err());
        assert!(read("s = -1").is_err());
    }

    #[test]
    fn parse_duration_is_whole_seconds() {
        assert_eq!(parse_duration("0s"), Some(0));
        assert_eq!(parse_duration(" 10s "), Some(10));
        assert_eq!(parse_duration("1h"), Some(3600));
        assert_eq!(parse_duration("1.5s"), None);
        assert_eq!(parse_duration("500ms"), None);
    }
}
