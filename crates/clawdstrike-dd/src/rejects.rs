//! The rejects file: one JSON line per bad input line or body, appended.
//!
//! `{"source":"events.ndjson","line":7,"offset":1234,"error":"field `event_type`: ...","raw":"..."}`
//! — `raw` is the line as a string when it is UTF-8; otherwise its bytes with every byte that
//! is not printable ASCII escaped as `\xNN`, and `"raw_encoding":"escaped"`. `truncated` is
//! true when only the first `max_line_bytes` of an over-long line were kept.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::{Value, json};

/// One rejected input.
#[derive(Debug)]
pub(crate) struct Reject<'a> {
    /// File name, `-` for stdin, `http` for the listener.
    pub(crate) source: &'a str,
    /// 1-based line number (for HTTP: the line or array index within the body, 1-based).
    pub(crate) line: u64,
    /// Byte offset in the source.
    pub(crate) offset: u64,
    /// Why.
    pub(crate) error: String,
    /// The raw bytes.
    pub(crate) raw: &'a [u8],
    /// Only a prefix of `raw` was kept.
    pub(crate) truncated: bool,
}

/// Appends rejects to a file, opened on first use.
#[derive(Debug)]
pub(crate) struct Rejects {
    path: PathBuf,
    file: Mutex<Option<File>>,
    count: std::sync::atomic::AtomicU64,
}

impl Rejects {
    /// A writer for `path` (not created until the first reject).
    pub(crate) fn new(path: &Path) -> Self {
        Rejects {
            path: path.to_owned(),
            file: Mutex::new(None),
            count: Default::default(),
        }
    }

    /// The file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Rejects written so far.
    pub(crate) fn count(&self) -> u64 {
        self.count.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A line whose event is larger than the whole disk buffer: kept as the event's JSON, with
    /// why.
    pub(crate) fn write_too_large(
        &self,
        source: &str,
        line: u64,
        offset: u64,
        event: &clawdstrike_schema::SecurityEvent,
        why: String,
    ) {
        let mut raw = Vec::new();
        event.write_json(&mut raw);
        self.write(&Reject {
            source,
            line,
            offset,
            error: why,
            raw: &raw,
            truncated: false,
        });
    }

    /// Appends one reject (a failed write is logged, never fatal).
    pub(crate) fn write(&self, reject: &Reject<'_>) {
        let mut value = json!({
            "source": reject.source,
            "line": reject.line,
            "offset": reject.offset,
            "error": reject.error,
        });
        match std::str::from_utf8(reject.raw) {
            Ok(text) => value["raw"] = Value::String(text.to_owned()),
            Err(_) => {
                value["raw"] = Value::String(reject.raw.escape_ascii().to_string());
                value["raw_encoding"] = Value::String("escaped".to_owned());
            }
        }
        if reject.truncated {
            value["truncated"] = Value::Bool(true);
        }
        let mut line = value.to_string();
        line.push('\n');
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if file.is_none() {
            match OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
            {
                Ok(f) => *file = Some(f),
                Err(e) => {
                    tracing::error!(path = %self.path.display(), error = %e, "cannot open the rejects file");
                    return;
                }
            }
        }
        if let Some(f) = file.as_mut() {
            match f.write_all(line.as_bytes()) {
                Ok(()) => {
                    self.count
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::error!(path = %self.path.display(), error = %e, "cannot write the rejects file")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_is_kept_as_text_and_other_bytes_escaped() {
        let dir = std::env::temp_dir().join(format!("cdd-rejects-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("r.ndjson");
        let _ = std::fs::remove_file(&path);
        let r = Rejects::new(&path);
        r.write(&Reject {
            source: "a",
            line: 3,
            offset: 10,
            error: "bad".into(),
            raw: b"{\"x\":1}",
            truncated: false,
        });
        r.write(&Reject {
            source: "a",
            line: 4,
            offset: 20,
            error: "utf8".into(),
            raw: b"\xff\xfeok",
            truncated: true,
        });
        let lines: Vec<Value> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["raw"], "{\"x\":1}");
        assert_eq!(lines[0]["line"], 3);
        assert_eq!(lines[1]["raw"], "\\xff\\xfeok");
        assert_eq!(lines[1]["raw_encoding"], "escaped");
        assert_eq!(lines[1]["truncated"], true);
        assert_eq!(r.count(), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
