//! The rejects file: one JSON line per bad input line or body, appended.
//!
//! `{"source":"events.ndjson","line":7,"offset":1234,"error":"field `event_type`: ...","raw":"..."}`
//! — `raw` is the line as a string when it is UTF-8; otherwise its bytes with every byte that
//! is not printable ASCII (0x20 to 0x7e), and every backslash, written `\xNN` (two lowercase
//! hex digits), and `"raw_encoding":"escaped"`: replacing each `\xNN` by its byte gives the
//! line back. `truncated` is true when only the first `max_line_bytes` of an over-long line
//! were kept. `"reencoded":true` marks an event that was decoded and then not taken (larger
//! than the disk buffer, or refused): its `raw` is the event encoded again, not the input line,
//! so fields this version does not know are not in it.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};

/// How long a reject waits for another process to give up the file's lock (it holds it for
/// one line) before the write fails.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

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
    /// `raw` is a decoded event encoded again, not the input's bytes.
    pub(crate) reencoded: bool,
}

/// Appends rejects to a file, opened on first use.
#[derive(Debug)]
pub(crate) struct Rejects {
    path: PathBuf,
    file: Mutex<Option<OpenRejects>>,
    count: AtomicU64,
    failed: AtomicU64,
    /// Rejects written before a handle was let go after a failure could not be fsynced:
    /// [`sync`](Rejects::sync) fails from then on, so no checkpoint passes them.
    sync_failed: std::sync::atomic::AtomicBool,
    /// Writing without the lock was logged.
    unlocked_logged: std::sync::atomic::AtomicBool,
}

#[derive(Debug)]
struct OpenRejects {
    file: File,
    /// Written to since the last [`Rejects::sync`].
    dirty: bool,
}

impl Rejects {
    /// A writer for `path` (not created until the first reject).
    pub(crate) fn new(path: &Path) -> Self {
        Rejects {
            path: path.to_owned(),
            file: Mutex::new(None),
            count: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            sync_failed: std::sync::atomic::AtomicBool::new(false),
            unlocked_logged: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Rejects written so far.
    pub(crate) fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Rejects that could not be written (each logged at `error`), or could not be fsynced:
    /// either fails the run.
    pub(crate) fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed) + u64::from(self.sync_failed.load(Ordering::Relaxed))
    }

    /// Fsyncs what was written since the last call: a checkpoint may pass a rejected line only
    /// once its reject survives a power loss.
    ///
    /// # Errors
    /// The fsync's.
    pub(crate) fn sync(&self) -> std::io::Result<()> {
        if self.sync_failed.load(Ordering::Relaxed) {
            return Err(std::io::Error::other(
                "rejects written before a failed write could not be fsynced",
            ));
        }
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        match file.as_mut() {
            Some(open) if open.dirty => {
                open.file.sync_data()?;
                open.dirty = false;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// A decoded event that was not taken (larger than the whole disk buffer, or refused):
    /// kept as the event's JSON, marked `reencoded`, with why.
    pub(crate) fn write_event(
        &self,
        source: &str,
        line: u64,
        offset: u64,
        event: &clawdstrike_schema::SecurityEvent,
        why: String,
    ) -> std::io::Result<()> {
        let mut raw = Vec::new();
        event.write_json(&mut raw);
        self.write(&Reject {
            source,
            line,
            offset,
            error: why,
            raw: &raw,
            truncated: false,
            reencoded: true,
        })
    }

    /// Appends one reject. A failure is logged and counted ([`failed`](Self::failed)); the
    /// caller decides what becomes of the line (a follow stops before it, so the checkpoint
    /// never passes a bad line recorded nowhere).
    ///
    /// # Errors
    /// Opening or writing the file; a line cut short by a full disk is cut back off.
    pub(crate) fn write(&self, reject: &Reject<'_>) -> std::io::Result<()> {
        let written = self.append(reject);
        match &written {
            Ok(()) => self.count.fetch_add(1, Ordering::Relaxed),
            Err(e) => {
                tracing::error!(path = %self.path.display(), source = reject.source, line = reject.line, error = %e, "cannot write the rejects file");
                self.failed.fetch_add(1, Ordering::Relaxed)
            }
        };
        written
    }

    fn append(&self, reject: &Reject<'_>) -> std::io::Result<()> {
        let mut value = json!({
            "source": reject.source,
            "line": reject.line,
            "offset": reject.offset,
            "error": reject.error,
        });
        match std::str::from_utf8(reject.raw) {
            Ok(text) => value["raw"] = Value::String(text.to_owned()),
            Err(_) => {
                value["raw"] = Value::String(escape(reject.raw));
                value["raw_encoding"] = Value::String("escaped".to_owned());
            }
        }
        if reject.truncated {
            value["truncated"] = Value::Bool(true);
        }
        if reject.reencoded {
            value["reencoded"] = Value::Bool(true);
        }
        let mut line = value.to_string();
        line.push('\n');
        let mut slot = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let open = match &mut *slot {
            Some(open) => open,
            None => {
                let file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)?;
                slot.insert(OpenRejects { file, dirty: false })
            }
        };
        // Another process may append to the same file (a backfill beside the daemon), or it
        // may have been truncated: its length is read under its lock, right before the write,
        // so that a line cut short is cut back to exactly where it began.
        // A filesystem without locks (some network ones) gets the write unlocked; a lock held
        // by another process past the wait (one stopped while holding it), or any other lock
        // error, fails the write.
        let locked = match clawdstrike_export::lock_shared_file(&open.file, LOCK_WAIT, || {}) {
            Ok(locked) => locked,
            Err(clawdstrike_export::LockError::Unsupported(e)) => {
                if !self.unlocked_logged.swap(true, Ordering::Relaxed) {
                    tracing::warn!(path = %self.path.display(), error = %e, "the rejects file cannot be locked here; writing without the lock (a line cut short by a full disk is then left as it is)");
                }
                false
            }
            Err(clawdstrike_export::LockError::Io(e)) => return Err(e),
        };
        let written = open.file.metadata().map(|m| m.len()).and_then(|len| {
            let result = open.file.write_all(line.as_bytes());
            // Unlocked, another process may have appended after `len`: cutting back would cut
            // its lines off.
            if result.is_err() && locked {
                let _ = open.file.set_len(len);
            }
            result
        });
        if locked {
            let _ = open.file.unlock();
        }
        match written {
            Ok(()) => {
                open.dirty = true;
                Ok(())
            }
            Err(e) => {
                // Let the handle go (the next write reopens), but not what it holds unsynced.
                if open.dirty && open.file.sync_data().is_err() {
                    self.sync_failed.store(true, Ordering::Relaxed);
                }
                *slot = None;
                Err(e)
            }
        }
    }
}

/// `raw` as text: printable ASCII but the backslash as is, every other byte `\xNN`.
fn escape(raw: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(raw.len() + raw.len() / 4);
    for &b in raw {
        if (0x20..0x7f).contains(&b) && b != b'\\' {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
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
            reencoded: false,
        })
        .unwrap();
        r.write(&Reject {
            source: "a",
            line: 4,
            offset: 20,
            error: "utf8".into(),
            raw: b"\xff\xfeok \"q\" a\\b\n",
            truncated: true,
            reencoded: false,
        })
        .unwrap();
        let lines: Vec<Value> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["raw"], "{\"x\":1}");
        assert_eq!(lines[0]["line"], 3);
        // Quotes stay, a backslash and a newline are \xNN like any other byte (not `\"`, `\\`,
        // `\n`, as Rust's `escape_ascii` writes them).
        assert_eq!(lines[1]["raw"], "\\xff\\xfeok \"q\" a\\x5cb\\x0a");
        assert_eq!(lines[1]["raw_encoding"], "escaped");
        assert_eq!(lines[1]["truncated"], true);
        assert_eq!(r.count(), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The documented rule gives the bytes back: each `\xNN` is the byte NN, everything else
    /// is itself. (Rust's `escape_ascii` would also have written `\"`, `\\`, `\n`, `\t`, ...)
    #[test]
    fn escaped_raw_gives_the_bytes_back_by_the_documented_rule() {
        let raw: &[u8] = b"{\"a\":\"x\\y\\x41\tz\r\n'\xff\xc3\xa9\x7f\x00~ \"}";
        let escaped = escape(raw);
        assert!(
            escaped.bytes().all(|b| (0x20..0x7f).contains(&b)),
            "{escaped}"
        );
        let mut back = Vec::new();
        let mut rest = escaped.as_bytes();
        while let Some((&b, tail)) = rest.split_first() {
            if b == b'\\' {
                assert_eq!(tail[0], b'x', "{escaped}");
                let hex = std::str::from_utf8(&tail[1..3]).unwrap();
                back.push(u8::from_str_radix(hex, 16).unwrap());
                rest = &tail[3..];
            } else {
                back.push(b);
                rest = tail;
            }
        }
        assert_eq!(back, raw);
    }
}
