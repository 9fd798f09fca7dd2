//! Dead letters: JSON lines, one per event, rotated by size.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use clawdstrike_schema::{SecurityEvent, Timestamp};
use serde::{Deserialize, Serialize};

use crate::config::DeadLetterConfig;

/// One line of a dead-letter file.
///
/// ```json
/// {"exporter":"datadog-us1","failed_at":"2026-02-07T12:00:00.123Z","attempts":3,
///  "error":"HTTP 400: invalid JSON","retryable":false,"event":{...}}
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The exporter that gave up.
    pub exporter: String,
    /// When it gave up (RFC 3339, UTC, milliseconds).
    pub failed_at: String,
    /// How many times the event was attempted.
    pub attempts: u32,
    /// The last failure's reason.
    pub error: String,
    /// Whether the last failure was retryable (true when the retry budget ran out).
    pub retryable: bool,
    /// The event, in its wire form.
    pub event: SecurityEvent,
}

#[derive(Serialize)]
struct DeadLetterRef<'a> {
    exporter: &'a str,
    failed_at: &'a str,
    attempts: u32,
    error: &'a str,
    retryable: bool,
    event: &'a SecurityEvent,
}

/// Formats one dead-letter line, newline included.
pub(crate) fn format_line(
    exporter: &str,
    failed_at: &str,
    attempts: u32,
    error: &str,
    retryable: bool,
    event: &SecurityEvent,
) -> Vec<u8> {
    let line = DeadLetterRef {
        exporter,
        failed_at,
        attempts,
        error,
        retryable,
        event,
    };
    // Serialising these types into a Vec cannot fail: every map key is a string.
    let mut out = serde_json::to_vec(&line).unwrap_or_default();
    out.push(b'\n');
    out
}

/// The current time for `failed_at`.
pub(crate) fn now_rfc3339() -> String {
    Timestamp::now().to_rfc3339_millis()
}

#[derive(Debug)]
struct OpenFile {
    file: File,
    len: u64,
}

/// Appends dead-letter lines to a file, rotating it by size. Blocking: call it from
/// `spawn_blocking`.
#[derive(Debug)]
pub(crate) struct DeadLetterWriter {
    path: Option<PathBuf>,
    max_file_bytes: u64,
    max_files: u32,
    file: Mutex<Option<OpenFile>>,
}

impl DeadLetterWriter {
    pub(crate) fn new(config: &DeadLetterConfig) -> Self {
        Self {
            path: config.path.clone(),
            max_file_bytes: config.max_file_bytes,
            max_files: config.max_files,
            file: Mutex::new(None),
        }
    }

    pub(crate) fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Writes each line; returns the indices of those that could not be written, with why.
    pub(crate) fn write_lines(&self, lines: &[Vec<u8>]) -> Vec<(usize, io::Error)> {
        let Some(path) = &self.path else {
            return Vec::new();
        };
        let mut guard = self
            .file
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut failed = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            if let Err(error) = self.write_one(path, &mut guard, line) {
                // Forget the handle so the next write reopens (the directory may come back).
                *guard = None;
                failed.push((i, error));
            }
        }
        failed
    }

    fn write_one(&self, path: &Path, slot: &mut Option<OpenFile>, line: &[u8]) -> io::Result<()> {
        let line_len = line.len() as u64;
        if let Some(open) = slot.as_ref()
            && open.len > 0
            && open.len + line_len > self.max_file_bytes
        {
            *slot = None;
            self.rotate(path)?;
        }
        if slot.is_none() {
            let file = OpenOptions::new().create(true).append(true).open(path)?;
            let len = file.metadata()?.len();
            *slot = Some(OpenFile { file, len });
            if len > 0 && len + line_len > self.max_file_bytes {
                *slot = None;
                self.rotate(path)?;
                let file = OpenOptions::new().create(true).append(true).open(path)?;
                *slot = Some(OpenFile { file, len: 0 });
            }
        }
        let open = slot
            .as_mut()
            .ok_or_else(|| io::Error::other("dead-letter file not open"))?;
        if let Err(e) = open.file.write_all(line) {
            // A full disk may have taken part of the line: cut it back off, or the next line
            // (once there is room) would be glued to it and neither would read back.
            let _ = open.file.set_len(open.len);
            return Err(e);
        }
        open.len += line_len;
        Ok(())
    }

    /// `path` → `path.1` → … → `path.max_files` (the oldest is deleted).
    fn rotate(&self, path: &Path) -> io::Result<()> {
        let numbered = |n: u32| {
            let mut name = path.as_os_str().to_owned();
            name.push(format!(".{n}"));
            PathBuf::from(name)
        };
        if self.max_files == 0 {
            return fs::remove_file(path);
        }
        match fs::remove_file(numbered(self.max_files)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        for n in (1..self.max_files).rev() {
            match fs::rename(numbered(n), numbered(n + 1)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        fs::rename(path, numbered(1))
    }
}
