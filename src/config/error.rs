//! Config errors that point at the file, line, column and key.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A syntax, type or schema error, or a failed validation rule.
    #[error("{0}")]
    At(Located),
}

/// A message tied to a place in the config source.
#[derive(Debug)]
pub struct Located {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for Located {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file.display(), self.line, self.column)?;
        if let Some(key) = &self.key {
            write!(f, "key `{key}`: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Resolves byte spans in one source text to line/column and key names.
pub struct Source<'a> {
    pub file: &'a Path,
    pub text: &'a str,
}

impl Source<'_> {
    pub fn error(&self, span: Range<usize>, message: impl Into<String>) -> ConfigError {
        let (line, column) = self.line_col(span.start);
        ConfigError::At(Located {
            file: self.file.to_path_buf(),
            line,
            column,
            key: self.key_at(span.start),
            message: message.into(),
        })
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        (line, before[line_start..].chars().count() + 1)
    }

    /// The dotted key at `offset`, prefixed by the table header above it:
    /// `dataplane.frame_size`, `worker.queues`. Inside an inline table
    /// (`{ addr = "…", weight = -5 }`) it is the key just before the
    /// offset, under the array that holds the table: `service.backends.weight`.
    fn key_at(&self, offset: usize) -> Option<String> {
        let offset = offset.min(self.text.len());
        let line_start = self.text[..offset].rfind('\n').map_or(0, |i| i + 1);
        let line = self.text[line_start..].lines().next().unwrap_or("");
        let upto = line.get(..offset - line_start).unwrap_or(line);
        let inline = line.trim_start().starts_with('{') || upto.contains('{');
        let key = if inline {
            upto.rsplit_once('=')
                .map(|(k, _)| last_word(k))
                .or_else(|| line.split_once('=').map(|(k, _)| last_word(k)))
        } else {
            line.split_once('=').map(|(k, _)| k.trim())
        }
        .or_else(|| {
            let t = line.trim();
            (!t.is_empty() && !t.starts_with('[')).then_some(t)
        })?;
        let key = key.trim_matches(|c| c == '{' || c == ',' || c == ' ');
        let before = &self.text[..line_start];
        let mut owner = None;
        if line.trim_start().starts_with('{') {
            // The array of inline tables this line belongs to: `backends = [`.
            owner = before.lines().rev().map(str::trim).take_while(|l| !l.starts_with('[')).find_map(|l| {
                l.split_once('=').filter(|(_, v)| v.trim_start().starts_with('[')).map(|(k, _)| k.trim())
            });
        } else if let Some((k, v)) = line.split_once('=') {
            if v.trim_start().starts_with('[') && inline {
                owner = Some(k.trim());
            }
        }
        let table = before
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| l.starts_with('['))
            .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim());
        let key = match owner {
            Some(o) if o != key => format!("{o}.{key}"),
            _ => key.to_string(),
        };
        Some(match table {
            Some(t) if !key.is_empty() => format!("{t}.{key}"),
            _ => key,
        })
    }
}

/// The last key-like word of `s` (`{ addr = "x", weight ` → `weight`).
fn last_word(s: &str) -> &str {
    s.trim_end().rsplit(|c: char| c == '{' || c == ',' || c.is_whitespace()).next().unwrap_or("").trim()
}
