//! `--follow`: tail one file like `tail -F` (rename rotation and truncation survive), with a
//! checkpoint so a restart resumes where delivery stopped.
//!
//! # Checkpoint design (at-least-once)
//!
//! Every line read gets a sequence number; the pipeline's [`SettleHook`] reports, per exporter,
//! when each event is settled (delivered, dead-lettered, filtered or dropped by the queue
//! policy). Blank lines are settled at once, bad lines once their reject is written (one that
//! cannot be written stops the reading before it, like a refused event). The checkpoint is the position just past
//! the last line of the longest *contiguous* run of lines settled by *every* exporter:
//! `{"path","dev","ino","offset","line","head","born","modified"}` (`head`: a hash of the file's
//! first [`HEAD_BYTES`] up to the offset; `born`, `modified`: the file's [`Age`]), written
//! atomically (temporary file + rename) at most every 200 ms and once more at shutdown.
//!
//! - Nothing is lost: a line is behind the checkpoint only once every exporter settled it; on
//!   restart reading resumes at the checkpoint. Events left behind at a shutdown deadline are
//!   not settled, so they are read again.
//! - The duplicate window: lines settled after the last checkpoint write (at most 200 ms of
//!   deliveries, plus those delivered while an earlier line was still in flight) are sent again
//!   after a crash (SIGKILL, power loss). A clean shutdown writes the final checkpoint, so a
//!   restart after SIGTERM re-sends only what was left behind (and lines taken after one that
//!   was still waiting for room when the stop came).
//! - Rotation while stopped: when the checkpointed file was renamed (`events.log` →
//!   `events.log.1`), the rest of it is found among the rotated files beside it (by inode and
//!   birth time: a deleted file's inode is soon reused) and read first (while it exists but
//!   cannot be opened, EACCES or EMFILE, the start waits for it). A file removed while
//!   stopped (`rotate 1`, or compressed into a new file) cannot be finished (its unread lines
//!   are lost; a warning says so), but the files rotated after it are read.
//! - Several rotations while stopped, or while the reader was held back: once a renamed file is
//!   finished, the files rotated after it ([`is_rotation_of`] the path, of an [`Age`] not
//!   older: born later, whatever their writers did; not finished already) are read, oldest
//!   first, before the file at the path. A file with a newer rotated file after it is not
//!   waited for: its writer has moved on.
//! - Rotation while running: a file renamed away is read until its writer has been quiet for
//!   [`ROTATE_WAIT`] (5 s, `--rotate-wait-ms`), since the writer keeps appending to it until
//!   it reopens the path; then its unterminated last line, if any, is taken as a line, and the
//!   new file is read from its start. Lines written to it after that are not read (the
//!   checkpoint has moved on): the file stays open until the next one is finished, and such
//!   lines are counted, warned about, and reported at exit.
//! - Truncation is noticed when the file becomes shorter than the read position (as with
//!   `tail -F`), or when its first [`HEAD_BYTES`] changed: checked after every read (so no
//!   line of new content is taken from the old position), at every poll, and on restart against
//!   the checkpoint's `head` fingerprint. With `copytruncate`, the copy (a rotated file that
//!   starts with the same bytes) is read from the line after the last one taken, then the file
//!   from its start; without a copy, the file is read from its start, and lines read between
//!   the truncation and its discovery are sent again. Lines written between logrotate's copy and
//!   its truncation are lost to any reader: prefer rotation by rename.
//! - With the disk buffer (`buffer: { type: disk }`) a line counts as settled once the buffer
//!   took it (it is on disk and replayed after a crash), so the window shrinks to the lines
//!   taken since the last checkpoint write. The buffer is synced before each checkpoint write,
//!   so after a power loss the checkpoint never points past lines the buffer lost (unless its
//!   policy is `fsync: never`).
//! - The first start (no checkpoint) reads the file from its beginning.
//! - Up to [`SUBMITS_IN_FLIGHT`] lines are submitted at once (under `fsync: always` they
//!   share fsyncs). An event larger than the whole disk buffer is a bad line (rejects file,
//!   settled). Any other refusal stops the reading, with a message naming the line and a
//!   failing exit code; that line stays ahead of the checkpoint, so a restart reads it again.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clawdstrike_export::{Record, SettleHook, Settlement};
use clawdstrike_schema::decode_event;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use crate::forwarder::{SUBMITS_IN_FLIGHT, Sink, StartError, Submitted};
use crate::rejects::{Reject, Rejects};

/// How often the reader looks for new data, rotation and truncation at end of file.
const POLL: Duration = Duration::from_millis(100);
/// Sequence numbers of followed lines start here, so events from other inputs of the same
/// pipeline (the HTTP listener uses the pipeline's own counter, from 0) never move the
/// checkpoint.
const SEQ_BASE: u64 = 1 << 63;
/// How long a file renamed away is still read after its last new data before the new file at
/// the path is started: its writer keeps appending to it until it reopens the path (logrotate's
/// `create` with a `postrotate` signal). Fluent Bit's `rotate_wait` has the same default.
/// `ship --rotate-wait-ms` sets it.
pub(crate) const ROTATE_WAIT: Duration = Duration::from_secs(5);
/// How often the checkpoint is written when it moved.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);
/// How much of a file's start identifies its content: a file truncated and written again has a
/// different start (its first events have other ids and times), whatever its size.
const HEAD_BYTES: usize = 1024;
/// How many finished files the reader remembers, so that a rotated file it read is not taken
/// for one it has not.
const FINISHED_KEPT: usize = 64;

/// FNV-1a, 64 bits: enough to tell two file starts apart, not a defence against an adversary
/// (who could write the file anyway).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A finished file as it was when finished: one with the same inode but another size or
/// time is another file (inodes are reused) or was written to since.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileKey {
    dev: u64,
    ino: u64,
    len: u64,
    age: Age,
}

impl FileKey {
    fn of(meta: &std::fs::Metadata) -> FileKey {
        FileKey {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            age: Age::of(meta),
        }
    }
}

/// Whether `name` is what rotation makes of the file `base` in the same directory:
/// `base.1`, `base-20261124` (`dateext`), `base.1.ndjson` or `audit-20261124.ndjson` when
/// `base` is `audit.ndjson` (logrotate's `extension`). Compressed ones (`base.2.gz`) are not:
/// they are not NDJSON, and their content was in an uncompressed file first.
fn is_rotation_of(base: &str, name: &str) -> bool {
    let suffix = |s: &str| {
        s.strip_prefix(['.', '-', '_']).is_some_and(|s| {
            s.bytes().next().is_some_and(|b| b.is_ascii_digit())
                && s.bytes().all(|b| b.is_ascii_digit() || b"-_.".contains(&b))
        })
    };
    if name.strip_prefix(base).is_some_and(suffix) {
        return true;
    }
    base.rsplit_once('.')
        .filter(|(stem, ext)| !stem.is_empty() && !ext.is_empty())
        .and_then(|(stem, ext)| {
            name.strip_prefix(stem)?
                .strip_suffix(ext)?
                .strip_suffix('.')
                .map(suffix)
        })
        .unwrap_or(false)
}

/// A position in a particular file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Position {
    /// Device of the file.
    pub(crate) dev: u64,
    /// Inode of the file.
    pub(crate) ino: u64,
    /// Byte offset of the next unread line.
    pub(crate) offset: u64,
    /// Number of the next unread line (1-based).
    pub(crate) line: u64,
    /// A hash of the file's first `min(offset, HEAD_BYTES)` bytes: on restart a file whose
    /// start changed (truncated and written again while stopped) is read from its beginning,
    /// not from `offset`. Absent in checkpoints written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) head: Option<u64>,
    /// When the file came to be, to find the files rotated after it should it be gone at the
    /// next start.
    #[serde(flatten)]
    pub(crate) age: Age,
}

/// When a file came to be, for telling rotated files apart in the order they were written:
/// its birth time where the filesystem keeps one (a file born later was rotated later, however
/// its writers interleaved), then its modification time (ties, or no birth time). Nanoseconds
/// since the Unix epoch.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub(crate) struct Age {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    born: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    modified: Option<u64>,
}

impl Age {
    fn of(meta: &std::fs::Metadata) -> Age {
        let nanos = |t: std::io::Result<std::time::SystemTime>| {
            t.ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .and_then(|d| u64::try_from(d.as_nanos()).ok())
        };
        Age {
            born: nanos(meta.created()),
            modified: nanos(meta.modified()),
        }
    }

    fn is_known(self) -> bool {
        self.born.is_some() || self.modified.is_some()
    }
}

/// The checkpoint file's content.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Checkpoint {
    /// The followed path.
    pub(crate) path: PathBuf,
    /// Where to resume.
    #[serde(flatten)]
    pub(crate) position: Position,
}

/// Tracks settlements per sequence number and the contiguous settled position.
#[derive(Debug)]
pub(crate) struct Tracker {
    exporters: u32,
    state: Mutex<TrackState>,
}

#[derive(Debug, Default)]
struct TrackState {
    pending: BTreeMap<u64, Position>,
    counts: std::collections::HashMap<u64, u32>,
    done: HashSet<u64>,
    checkpoint: Option<Position>,
    dirty: bool,
}

impl TrackState {
    fn advance(&mut self) {
        while let Some((&seq, _)) = self.pending.first_key_value() {
            if !self.done.remove(&seq) {
                break;
            }
            if let Some((_, position)) = self.pending.pop_first() {
                self.checkpoint = Some(position);
                self.dirty = true;
            }
        }
    }
}

impl Tracker {
    /// A tracker for a pipeline of `exporters` exporters.
    pub(crate) fn new(exporters: usize) -> Self {
        Tracker {
            exporters: u32::try_from(exporters).unwrap_or(u32::MAX),
            state: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TrackState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A line was read: `position` is just past it. Call before submitting it.
    fn register(&self, seq: u64, position: Position) {
        self.lock().pending.insert(seq, position);
    }

    /// A line that never goes to the pipeline (bad or blank) is settled.
    fn complete(&self, seq: u64) {
        let mut state = self.lock();
        state.done.insert(seq);
        state.advance();
    }

    /// The checkpoint if it moved since the last call.
    fn take_dirty(&self) -> Option<Position> {
        let mut state = self.lock();
        if state.dirty {
            state.dirty = false;
            state.checkpoint
        } else {
            None
        }
    }

    /// The checkpoint taken by [`take_dirty`](Self::take_dirty) was not written: try again
    /// at the next tick.
    fn mark_dirty(&self) {
        self.lock().dirty = true;
    }
}

impl SettleHook for Tracker {
    fn settled(&self, _exporter: usize, _name: &str, seqs: &[u64], _how: Settlement) {
        let mut state = self.lock();
        for &seq in seqs.iter().filter(|&&s| s >= SEQ_BASE) {
            let count = state.counts.entry(seq).or_insert(0);
            *count += 1;
            if *count >= self.exporters {
                state.counts.remove(&seq);
                state.done.insert(seq);
            }
        }
        state.advance();
    }
}

/// Reads the checkpoint file, if any.
///
/// # Errors
/// A message when it exists but cannot be read or parsed.
pub(crate) fn read_checkpoint(path: &Path) -> Result<Option<Checkpoint>, StartError> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).map(Some).map_err(|e| StartError {
            message: format!(
                "checkpoint {} cannot be parsed: {e} (fix or remove it; removed, the file is read from its start)",
                path.display()
            ),
            transient: false,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StartError {
            message: format!("cannot read checkpoint {}: {e}", path.display()),
            // Permissions, a directory in its place, bytes that are not text: a restart would
            // fail the same way. Other errors (EIO) may pass.
            transient: !matches!(
                e.kind(),
                std::io::ErrorKind::PermissionDenied
                    | std::io::ErrorKind::InvalidData
                    | std::io::ErrorKind::IsADirectory
                    | std::io::ErrorKind::NotADirectory
            ),
        }),
    }
}

/// Writes `checkpoint` atomically: a temporary file, fsynced, renamed over the old one (so a
/// power loss leaves the old checkpoint or the new one, never an empty file), then the
/// directory fsynced (so that the rename itself survives one).
fn write_checkpoint(path: &Path, checkpoint: &Checkpoint) -> std::io::Result<()> {
    use std::io::Write as _;
    // `audit.checkpoint.tmp`, not `audit.tmp`: two checkpoints that differ only in their
    // extension must not share a temporary file.
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let text = serde_json::to_string(checkpoint)?;
    let mut file = File::create(&tmp)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    File::open(dir)?.sync_all()
}

/// What the reader thread sends.
#[derive(Debug)]
enum Item {
    Event {
        seq: u64,
        position: Position,
        /// Where the line is, for the rejects file.
        source: Arc<str>,
        line: u64,
        offset: u64,
        event: Box<clawdstrike_schema::SecurityEvent>,
    },
    Rejected {
        seq: u64,
        position: Position,
        source: Arc<str>,
        line: u64,
        offset: u64,
        error: String,
        raw: Vec<u8>,
        truncated: bool,
    },
    Blank {
        seq: u64,
        position: Position,
    },
}

/// An open file being read.
#[derive(Debug)]
struct OpenFile {
    file: File,
    name: Arc<str>,
    dev: u64,
    ino: u64,
    offset: u64,
    line: u64,
    partial: Vec<u8>,
    partial_len: u64,
    partial_offset: u64,
    /// The file's first bytes (up to [`HEAD_BYTES`]), as read.
    head: Vec<u8>,
    /// The hash of the whole `head`, once it is [`HEAD_BYTES`] long.
    head_hash: Option<u64>,
    /// Where the next read starts.
    read_at: u64,
    /// The file's [`Age`] when last looked at.
    age: Age,
    /// The last [`Reader::drain`] read to the end of the file (not stopped by a halt or a read
    /// error): only then may a rotated file be finished.
    at_eof: bool,
    /// The kind of the last failed read, so that a lasting failure is logged once.
    read_error: Option<std::io::ErrorKind>,
}

impl OpenFile {
    /// Opens `path` at `offset` (line `line`); from its start instead when it is shorter than
    /// `offset`, or when `expected_head` (a checkpoint's) does not match its first bytes.
    fn open(
        path: &Path,
        offset: u64,
        line: u64,
        expected_head: Option<u64>,
    ) -> std::io::Result<OpenFile> {
        use std::os::unix::fs::FileExt;
        #[cfg(test)]
        if tests::FAILING_OPENS.with(|left| left.replace(left.get().saturating_sub(1))) > 0 {
            // Taken out while it runs, so that it may open files itself.
            if let Some(mut f) = tests::ON_FAILED_OPEN.with(|f| f.borrow_mut().take()) {
                f();
                tests::ON_FAILED_OPEN.with(|slot| *slot.borrow_mut() = Some(f));
            }
            return Err(tests::FAILING_OPEN_KIND.with(std::cell::Cell::get).into());
        }
        let mut file = File::open(path)?;
        let meta = file.metadata()?;
        let (mut offset, mut line) = if meta.len() < offset {
            (0, 1)
        } else {
            (offset, line)
        };
        let mut head = vec![
            0u8;
            usize::try_from(offset)
                .unwrap_or(HEAD_BYTES)
                .min(HEAD_BYTES)
        ];
        file.read_exact_at(&mut head, 0)?;
        if expected_head.is_some_and(|h| h != fnv1a(&head)) {
            tracing::warn!(file = %path.display(), "the file's start changed since the checkpoint (truncated and written again?); reading it from its start");
            (offset, line) = (0, 1);
            head.clear();
        }
        file.seek(SeekFrom::Start(offset))?;
        let head_hash = (head.len() == HEAD_BYTES).then(|| fnv1a(&head));
        let age = Age::of(&meta);
        Ok(OpenFile {
            file,
            name: Arc::from(path.display().to_string()),
            dev: meta.dev(),
            ino: meta.ino(),
            offset,
            line,
            partial: Vec::new(),
            partial_len: 0,
            partial_offset: offset,
            head,
            head_hash,
            read_at: offset,
            age,
            at_eof: false,
            read_error: None,
        })
    }

    /// The length and hash of the file's start as read, to find a copy of it; `None` before
    /// anything was read.
    fn head_identity(&self) -> Option<(usize, u64)> {
        (!self.head.is_empty()).then(|| (self.head.len(), fnv1a(&self.head)))
    }

    /// Keeps the part of `data`, read at `read_at`, that belongs to the file's head.
    fn note_read(&mut self, data: &[u8]) {
        if self.read_at < HEAD_BYTES as u64 && self.head.len() as u64 == self.read_at {
            let take = (HEAD_BYTES - self.head.len()).min(data.len());
            self.head.extend_from_slice(&data[..take]);
            if self.head.len() == HEAD_BYTES {
                self.head_hash = Some(fnv1a(&self.head));
            }
        }
        self.read_at += data.len() as u64;
    }

    /// Starts reading the file again from its beginning (it was truncated and written again).
    fn rewind(&mut self) -> std::io::Result<()> {
        self.file.seek(SeekFrom::Start(0))?;
        self.offset = 0;
        self.line = 1;
        self.partial.clear();
        self.partial_len = 0;
        self.partial_offset = 0;
        self.head.clear();
        self.head_hash = None;
        self.read_at = 0;
        Ok(())
    }

    /// Whether the unfinished last line read so far is no longer in the file as read: the
    /// writer cut it back (undoing a torn write, as a full disk leaves) and may have written
    /// it, or another, again since. Reading on from where the read stopped would skip the new
    /// line's first bytes and glue the rest to the old ones.
    fn partial_changed(&self) -> bool {
        use std::os::unix::fs::FileExt;
        if self.partial_len == 0 {
            return false;
        }
        match self.file.metadata() {
            Ok(meta) if meta.len() < self.read_at => return true,
            Ok(_) => {}
            Err(_) => return false,
        }
        let mut now = vec![0u8; self.partial.len()];
        match self.file.read_exact_at(&mut now, self.partial_offset) {
            Ok(()) => now != self.partial,
            Err(e) => e.kind() == std::io::ErrorKind::UnexpectedEof,
        }
    }

    /// Forgets the unfinished last line, to read it again from its start.
    fn unread_partial(&mut self) -> std::io::Result<()> {
        self.file.seek(SeekFrom::Start(self.partial_offset))?;
        self.read_at = self.partial_offset;
        self.partial.clear();
        self.partial_len = 0;
        if self.head.len() as u64 > self.read_at {
            self.head
                .truncate(usize::try_from(self.read_at).unwrap_or(0));
            self.head_hash = None;
        }
        Ok(())
    }

    /// Whether the file's first bytes are no longer those read: it was truncated and written
    /// again, perhaps past the read position before the size was looked at.
    fn head_changed(&self) -> bool {
        use std::os::unix::fs::FileExt;
        let mut now = vec![0u8; self.head.len()];
        match self.file.read_exact_at(&mut now, 0) {
            Ok(()) => now != self.head,
            // Shorter than what was read: truncated.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => true,
            // A failed read (EIO, ESTALE) says nothing about the content: look again later.
            Err(e) => {
                tracing::warn!(file = %self.name, error = %e, "cannot read the file's start");
                false
            }
        }
    }

    fn position(&self) -> Position {
        let head = match self.head_hash {
            Some(h) if self.offset >= HEAD_BYTES as u64 => h,
            _ => {
                let len = usize::try_from(self.offset)
                    .map_or(self.head.len(), |o| o.min(self.head.len()));
                fnv1a(&self.head[..len])
            }
        };
        Position {
            dev: self.dev,
            ino: self.ino,
            offset: self.offset,
            line: self.line,
            head: Some(head),
            age: self.age,
        }
    }
}

/// The reader: owns the file handles, sends lines with their positions.
struct Reader {
    path: PathBuf,
    max_line_bytes: usize,
    seq: u64,
    tx: mpsc::Sender<Item>,
    halt: Arc<AtomicBool>,
    /// The last error opening the path, so that a lasting one is logged once.
    open_error: Option<std::io::ErrorKind>,
    /// The files finished lately, newest last.
    finished: std::collections::VecDeque<FileKey>,
    /// How long a file renamed away is read after its last new data ([`ROTATE_WAIT`]).
    rotate_wait: Duration,
    /// The files finished lately, watched for writes that came after they were finished.
    left_behind: Vec<LeftBehind>,
    /// Lines and bytes written to finished files after they were finished (not shipped).
    late: LateWrites,
}

/// A finished file, still open: a writer that had not reopened the path when the reader moved
/// on may write to it still. Those lines are not read (the checkpoint has moved on to the next
/// file); they are counted, and a warning names the file. It is let go once deleted (its
/// disk space is not held), or quiet for [`LEFT_BEHIND_QUIET`] and rotate waits.
struct LeftBehind {
    file: File,
    name: Arc<str>,
    /// How much of it was read or counted.
    read: u64,
    /// When it last grew (or was finished).
    grew: std::time::Instant,
    warned: bool,
}

/// At most this many finished files are watched for late writes (the oldest is let go).
const LEFT_BEHIND_KEPT: usize = 4;
/// A finished file is let go after this many rotate waits (and at least a minute) without
/// writes.
const LEFT_BEHIND_QUIET: u32 = 12;

impl LeftBehind {
    /// Counts the lines and bytes from `read` to `len` (warning the first time).
    fn count_late(&mut self, len: u64, rotate_wait: Duration, late: &mut LateWrites) {
        let mut lines = 0u64;
        let mut buf = vec![0u8; 64 * 1024];
        let mut at = self.read;
        while at < len {
            let want = usize::try_from(len - at).map_or(buf.len(), |n| n.min(buf.len()));
            match std::os::unix::fs::FileExt::read_at(&self.file, &mut buf[..want], at) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    lines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
                    at += n as u64;
                }
            }
        }
        let bytes = at - self.read;
        self.read = at;
        late.lines += lines;
        late.bytes += bytes;
        if !std::mem::replace(&mut self.warned, true) {
            tracing::warn!(file = %self.name, lines, bytes, "lines were written to a rotated file after it was finished (the reader moved on to the next file once it had been quiet for {rotate_wait:?}, and its writer had not reopened the path yet); they are not shipped: raise --rotate-wait-ms, or have the writer reopen the path sooner");
        }
    }
}

/// What was written to finished files after they were finished: not shipped.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LateWrites {
    pub(crate) lines: u64,
    pub(crate) bytes: u64,
}

/// Opens `path` at `offset`. An error other than "not found" (a file not there yet is waited
/// for quietly) is logged, unless `last` says it is the same kind as the previous attempt's.
fn open_logged(
    path: &Path,
    offset: u64,
    line: u64,
    expected_head: Option<u64>,
    last: &mut Option<std::io::ErrorKind>,
) -> Option<OpenFile> {
    match OpenFile::open(path, offset, line, expected_head) {
        Ok(open) => {
            *last = None;
            Some(open)
        }
        Err(e) => {
            if e.kind() != std::io::ErrorKind::NotFound && *last != Some(e.kind()) {
                tracing::error!(file = %path.display(), error = %e, "cannot open the followed file; trying again every 100 ms");
            }
            *last = Some(e.kind());
            None
        }
    }
}

impl Reader {
    fn send(&self, item: Item) -> bool {
        self.tx.blocking_send(item).is_ok()
    }

    /// Emits one complete line (without its `\n`) that ended at `open.offset`.
    fn emit(
        &mut self,
        open: &OpenFile,
        raw: &[u8],
        len: u64,
        line_offset: u64,
        line_no: u64,
    ) -> bool {
        let seq = self.seq;
        self.seq += 1;
        let position = open.position();
        // As the NDJSON reader does: a byte order mark at the file's start is not part of the
        // line, and the limit is on the content, without a `\r` ending it. (A line within the
        // limit is held whole, so its last byte held is its last byte.)
        let ends_in_cr = raw.len() as u64 == len && raw.last() == Some(&b'\r');
        let (raw, len) = clawdstrike_schema::line_content(raw, len, line_offset == 0, ends_in_cr);
        // The length first: `raw` holds only the start of an over-long line, which may be blank.
        if len > self.max_line_bytes as u64 {
            let error = clawdstrike_schema::DecodeError::TooLong {
                len,
                max: self.max_line_bytes,
            }
            .to_string();
            let item = Item::Rejected {
                seq,
                position,
                source: Arc::clone(&open.name),
                line: line_no,
                offset: line_offset,
                error,
                raw: raw[..raw.len().min(self.max_line_bytes)].to_vec(),
                truncated: true,
            };
            return self.send(item);
        }
        if raw.iter().all(u8::is_ascii_whitespace) {
            return self.send(Item::Blank { seq, position });
        }
        match decode_event(raw) {
            Ok(event) => self.send(Item::Event {
                seq,
                position,
                source: Arc::clone(&open.name),
                line: line_no,
                offset: line_offset,
                event: Box::new(event),
            }),
            Err(e) => self.send(Item::Rejected {
                seq,
                position,
                source: Arc::clone(&open.name),
                line: line_no,
                offset: line_offset,
                error: e.to_string(),
                raw: raw.to_vec(),
                truncated: false,
            }),
        }
    }

    /// Reads what is there; returns false when the receiver is gone.
    fn drain(&mut self, open: &mut OpenFile) -> bool {
        let mut chunk = vec![0u8; 1 << 16];
        open.at_eof = false;
        if open.partial_changed() {
            if open.partial_offset == 0 {
                // The unfinished line is the file's first: the bytes held are all of its head,
                // by which a `copytruncate` copy is found, so this is any change of the file's
                // start (the copy if there is one, else from the start: the same as below).
                if !self.after_rewrite(open) {
                    return true;
                }
            } else if let Err(e) = open.unread_partial() {
                tracing::warn!(file = %open.name, error = %e, "cannot seek back to the unfinished last line's start");
                return true;
            } else {
                tracing::info!(file = %open.name, line = open.line, "the unfinished last line was cut back; reading it again from its start");
            }
        }
        loop {
            let n = match open.file.read(&mut chunk) {
                Ok(0) => {
                    open.at_eof = true;
                    return true;
                }
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    if open.read_error != Some(e.kind()) {
                        tracing::error!(file = %open.name, error = %e, "read failed; trying again at every poll (logged once while it lasts)");
                    }
                    open.read_error = Some(e.kind());
                    return true;
                }
            };
            open.read_error = None;
            // Data read after the file was truncated and written again is not the rest of
            // what was read before: the check after the read sees any truncation that came
            // before it, so no line of the new content is taken from the old position.
            if open.head_changed() {
                // What this read got may be new content: the rest of the old is in the copy,
                // if there is one, from the line after the last one taken.
                if !self.after_rewrite(open) {
                    return true;
                }
                continue;
            }
            open.note_read(&chunk[..n]);
            if let Ok(meta) = open.file.metadata() {
                open.age = Age::of(&meta);
            }
            let mut data = &chunk[..n];
            loop {
                let (piece, newline) = match data.iter().position(|&b| b == b'\n') {
                    Some(i) => (&data[..i], true),
                    None => (data, false),
                };
                // Hold at most a little over the limit of a line (room for a byte order mark
                // and a `\r`, which do not count); count the rest.
                let room = (self.max_line_bytes + clawdstrike_schema::LINE_SLACK)
                    .saturating_sub(open.partial.len());
                open.partial
                    .extend_from_slice(&piece[..piece.len().min(room)]);
                open.partial_len += piece.len() as u64;
                if !newline {
                    break;
                }
                data = &data[piece.len() + 1..];
                let line_offset = open.partial_offset;
                let len = open.partial_len;
                open.offset = line_offset + len + 1;
                let line_no = open.line;
                open.line += 1;
                let raw = std::mem::take(&mut open.partial);
                open.partial_len = 0;
                open.partial_offset = open.offset;
                if !self.emit(open, &raw, len, line_offset, line_no) {
                    return false;
                }
            }
            if self.halt.load(Ordering::Relaxed) {
                return true;
            }
        }
    }

    /// Reads `open` until nothing new arrived for `rotate_wait` (or a stop); false when the
    /// receiver is gone.
    fn drain_until_quiet(&mut self, open: &mut OpenFile) -> bool {
        let mut quiet_since = std::time::Instant::now();
        loop {
            let before = (open.offset, open.partial_len);
            if !self.drain(open) {
                return false;
            }
            if (open.offset, open.partial_len) != before {
                quiet_since = std::time::Instant::now();
            }
            if self.halt.load(Ordering::Relaxed) || quiet_since.elapsed() >= self.rotate_wait {
                return true;
            }
            self.watch_left_behind();
            std::thread::sleep(POLL);
        }
    }

    /// A rotated file's last line may lack its newline: the writer is done with it.
    fn finish_rotated(&mut self, open: &mut OpenFile) -> bool {
        if open.partial_len == 0 {
            return true;
        }
        let raw = std::mem::take(&mut open.partial);
        let len = std::mem::take(&mut open.partial_len);
        let line_offset = open.partial_offset;
        open.offset = line_offset + len;
        open.partial_offset = open.offset;
        let line_no = open.line;
        open.line += 1;
        self.emit(open, &raw, len, line_offset, line_no)
    }

    /// `open` was truncated and written again (its first bytes changed). With
    /// `copytruncate` its old content is in a copy beside it: the reading goes on there, from
    /// the line after the last one taken, and comes back to the path (from its start) once
    /// the copy is finished. Without a copy the file is read again from its start. False when
    /// it cannot be read any more.
    fn after_rewrite(&mut self, open: &mut OpenFile) -> bool {
        if let Some((len, hash)) = open.head_identity()
            && let Some(copy) = find_copy(&self.path, len, hash, open.offset, (open.dev, open.ino))
            // `find_copy` compared the content already (over what was read, which may run past
            // the offset: a fingerprint of the offset's prefix would not match it).
            && let Ok(resumed) = OpenFile::open(&copy, open.offset, open.line, None)
            && resumed.offset == open.offset
        {
            tracing::warn!(file = %open.name, copy = %copy.display(), "file truncated and written again (copytruncate); reading the rest of its copy first");
            *open = resumed;
            return true;
        }
        tracing::warn!(file = %open.name, "file truncated and written again, and no copy of it found; reading it from its start (lines read since it was truncated are sent again; lines written before it was truncated and not read yet are lost)");
        match open.rewind() {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(file = %open.name, error = %e, "cannot read it again");
                false
            }
        }
    }

    /// The files rotated from the path after `current` ([`Age`] not older), which the reader
    /// has not read: it fell behind by more than one rotation, or was stopped across several.
    /// Oldest first; neither `current` nor the file now at the path.
    fn rotated_after(&self, current: &OpenFile) -> Vec<PathBuf> {
        let Ok(meta) = current.file.metadata() else {
            return Vec::new();
        };
        rotated_since(
            &self.path,
            Age::of(&meta),
            Some((current.dev, current.ino)),
            &self.finished,
        )
    }

    /// Whether `current`, renamed away, may still be written to: unless a file was rotated
    /// after it, its writer may not have reopened the path yet.
    fn waits_for_writer(&self, current: &OpenFile) -> bool {
        self.rotated_after(current).is_empty()
    }

    /// `current` is no longer at the path: reads it to its end (waiting for its writer to go
    /// quiet unless a newer rotated file shows the writer moved on), then opens what comes
    /// next: the oldest file rotated after it that was not read, or else the path.
    fn next_after_rotation(&mut self, current: &mut OpenFile) -> AfterRotation {
        let alive = if self.waits_for_writer(current) {
            // Its writer may not have reopened the path yet.
            tracing::info!(file = %current.name, "file renamed away; reading it until it has been quiet for {:?}", self.rotate_wait);
            self.drain_until_quiet(current)
        } else {
            self.drain(current)
        };
        if !alive || self.halt.load(Ordering::Relaxed) {
            // Stopped: the checkpoint stays in this file, where a restart finds it by inode.
            return AfterRotation::Stop;
        }
        if !current.at_eof {
            // A read failed before its end: it is not finished (its last line may be half
            // read). Try again at the next poll.
            return AfterRotation::Keep;
        }
        if !self.finish_rotated(current) {
            return AfterRotation::Stop;
        }
        if let Ok(meta) = current.file.metadata() {
            if self.finished.len() == FINISHED_KEPT {
                self.finished.pop_front();
            }
            self.finished.push_back(FileKey::of(&meta));
        }
        self.watch_left_behind();
        if let Ok(file) = current.file.try_clone() {
            if self.left_behind.len() == LEFT_BEHIND_KEPT {
                self.left_behind.remove(0);
            }
            self.left_behind.push(LeftBehind {
                file,
                name: Arc::clone(&current.name),
                read: current.offset,
                grew: std::time::Instant::now(),
                warned: false,
            });
        }
        // One that cannot be opened (compressed or deleted since the listing) is passed over
        // for the next.
        for next in self.rotated_after(current) {
            tracing::warn!(file = %next.display(), after = %current.name, "reading a file rotated while this one was still being read (the forwarder was stopped or held back across more than one rotation)");
            if let Some(open) = open_logged(&next, 0, 1, None, &mut self.open_error) {
                return AfterRotation::Next(Some(open));
            }
        }
        tracing::info!(file = %self.path.display(), "file rotated; following the new one");
        AfterRotation::Next(open_logged(&self.path, 0, 1, None, &mut self.open_error))
    }

    /// Counts what was written to the files finished lately since they were finished, and
    /// warns (once per file): their writer did not reopen the path within `rotate_wait`, and
    /// those lines are not shipped. Lets go of those deleted or long quiet.
    fn watch_left_behind(&mut self) {
        let quiet = (self.rotate_wait * LEFT_BEHIND_QUIET).max(Duration::from_secs(60));
        let (rotate_wait, late) = (self.rotate_wait, &mut self.late);
        self.left_behind.retain_mut(|left| {
            let Ok(meta) = left.file.metadata() else {
                return false;
            };
            if meta.len() > left.read {
                left.count_late(meta.len(), rotate_wait, late);
                left.grew = std::time::Instant::now();
            } else if meta.len() < left.read {
                // Truncated: what is written from now on starts lower.
                left.read = meta.len();
            }
            meta.nlink() > 0 && left.grew.elapsed() < quiet
        });
    }

    /// Follows until halted (or the receiver is gone); returns what was written late to the
    /// finished files.
    fn run(mut self, open: Option<OpenFile>) -> LateWrites {
        self.follow(open);
        // Stopped (or the receiver is gone): what came to the finished files since the last
        // poll is counted in the exit report too.
        self.watch_left_behind();
        self.late
    }

    fn follow(&mut self, mut open: Option<OpenFile>) {
        while !self.halt.load(Ordering::Relaxed) {
            self.watch_left_behind();
            let Some(current) = open.as_mut() else {
                match open_logged(&self.path, 0, 1, None, &mut self.open_error) {
                    Some(o) => open = Some(o),
                    None => std::thread::sleep(POLL),
                }
                continue;
            };
            if !self.drain(current) {
                return;
            }
            match std::fs::metadata(&self.path) {
                Ok(meta) if meta.dev() != current.dev || meta.ino() != current.ino => {
                    match self.next_after_rotation(current) {
                        AfterRotation::Next(next) => open = next,
                        AfterRotation::Keep => std::thread::sleep(POLL),
                        AfterRotation::Stop => return,
                    }
                }
                Ok(meta) if meta.len() < current.offset => {
                    // Truncated (`copytruncate` empties it): the rest of what was not read yet
                    // is in the copy, if there is one.
                    if !self.after_rewrite(current) {
                        open = None;
                    }
                }
                Ok(_) if current.head_changed() => {
                    // Truncated and written again to exactly the length read: nothing new
                    // to read, so `drain` did not look.
                    if !self.after_rewrite(current) {
                        open = None;
                    }
                }
                _ => std::thread::sleep(POLL),
            }
        }
    }
}

/// What comes after a file renamed away.
enum AfterRotation {
    /// The reading stops (halt, or the receiver is gone).
    Stop,
    /// Not finished (a read failed): the same file again at the next poll.
    Keep,
    /// This file next (`None`: the path, once it opens).
    Next(Option<OpenFile>),
}

/// The directory holding `path` (`.` for a bare file name).
fn directory_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// The regular files beside `path` named like rotations of it ([`is_rotation_of`]), with
/// their metadata; not the file at `path` itself. When `path` is a symbolic link, the files
/// rotated beside its target, under the target's name, too (logrotate works on the target).
fn rotation_siblings(path: &Path) -> Vec<(PathBuf, std::fs::Metadata)> {
    let at_path = std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()));
    let mut found = siblings_named_like(path, at_path);
    if let Ok(target) = std::fs::canonicalize(path)
        && std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
    {
        for (p, meta) in siblings_named_like(&target, at_path) {
            if !found
                .iter()
                .any(|(_, m)| (m.dev(), m.ino()) == (meta.dev(), meta.ino()))
            {
                found.push((p, meta));
            }
        }
    }
    found
}

/// [`rotation_siblings`] by `path`'s own name and directory.
fn siblings_named_like(
    path: &Path,
    at_path: Option<(u64, u64)>,
) -> Vec<(PathBuf, std::fs::Metadata)> {
    let Some(base) = path.file_name().and_then(|n| n.to_str()) else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(directory_of(path)) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| is_rotation_of(base, n))
        })
        .filter_map(|e| {
            let p = e.path();
            let meta = std::fs::metadata(&p).ok()?;
            (meta.is_file() && Some((meta.dev(), meta.ino())) != at_path).then_some((p, meta))
        })
        .collect()
}

/// The rotated files beside `path` of an [`Age`] not older than `since`, oldest first, but for
/// the file `not` (still open: its inode is its own) and the files in `finished`.
fn rotated_since(
    path: &Path,
    since: Age,
    not: Option<(u64, u64)>,
    finished: &std::collections::VecDeque<FileKey>,
) -> Vec<PathBuf> {
    let mut found: Vec<(Age, PathBuf)> = rotation_siblings(path)
        .into_iter()
        .filter(|(_, meta)| {
            Some((meta.dev(), meta.ino())) != not && !finished.contains(&FileKey::of(meta))
        })
        .map(|(p, meta)| (Age::of(&meta), p))
        // Without a birth time to compare with, the modification times tell.
        .filter(|(age, _)| match since.born {
            Some(_) => *age >= since,
            None => age.modified >= since.modified,
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, p)| p).collect()
}

/// The copy `copytruncate` made of the file at `path` (not `not`): a rotated file whose first
/// `len` bytes hash to `hash` and that reaches `offset`. The newest if several do.
fn find_copy(path: &Path, len: usize, hash: u64, offset: u64, not: (u64, u64)) -> Option<PathBuf> {
    use std::os::unix::fs::FileExt;
    let mut found: Vec<(Age, PathBuf)> = rotation_siblings(path)
        .into_iter()
        .filter(|(_, meta)| (meta.dev(), meta.ino()) != not && meta.len() >= offset)
        .filter(|(p, _)| {
            let mut start = vec![0u8; len];
            File::open(p)
                .and_then(|f| f.read_exact_at(&mut start, 0))
                .is_ok()
                && fnv1a(&start) == hash
        })
        .map(|(p, meta)| (Age::of(&meta), p))
        .collect();
    found.sort();
    found.pop().map(|(_, p)| p)
}

/// Whether `meta` is the file of the checkpoint `p`: its inode, and its birth time when both
/// are known (a deleted file's inode is soon reused by a new file).
fn is_checkpointed(meta: &std::fs::Metadata, p: &Position) -> bool {
    meta.dev() == p.dev
        && meta.ino() == p.ino
        && match (p.age.born, Age::of(meta).born) {
            (Some(then), Some(now)) => then == now,
            _ => true,
        }
}

/// Finds the checkpointed file among the rotated files beside `path`.
fn find_checkpointed(path: &Path, p: &Position) -> Option<PathBuf> {
    rotation_siblings(path)
        .into_iter()
        .find(|(_, m)| is_checkpointed(m, p))
        .map(|(p, _)| p)
}

/// One attempt at opening the checkpointed file where it was found: `Err(Busy)` when it
/// exists but cannot be opened (EACCES, EMFILE), `Ok(None)` when it is gone.
fn open_checkpointed(
    path: &Path,
    p: &Position,
    last: &mut Option<std::io::ErrorKind>,
) -> Result<Option<OpenFile>, Busy> {
    match open_logged(path, p.offset, p.line, p.head, last) {
        Some(open) => Ok(Some(open)),
        None if *last == Some(std::io::ErrorKind::NotFound) => Ok(None),
        None => Err(Busy),
    }
}

/// The checkpointed file exists but cannot be opened for now, or was renamed between being
/// found and being opened.
struct Busy;

/// Where following starts. While the checkpointed file exists but cannot be opened (EACCES,
/// EMFILE), the search runs again every [`POLL`]: going on with another file would skip its
/// unread lines, and the checkpoint written next would forget them; and a rotation meanwhile
/// is followed, the file being found again by its identity, not by the name it had. None on
/// a stop, or when no file can be opened (the reader then waits for the path).
fn starting_point(
    path: &Path,
    checkpoint: Option<&Checkpoint>,
    halt: &AtomicBool,
) -> Option<OpenFile> {
    let mut last = None;
    loop {
        match starting_point_once(path, checkpoint, &mut last) {
            Ok(open) => return open,
            Err(Busy) if halt.load(Ordering::Relaxed) => return None,
            Err(Busy) => std::thread::sleep(POLL),
        }
    }
}

/// One search for where to start (see [`starting_point`]).
fn starting_point_once(
    path: &Path,
    checkpoint: Option<&Checkpoint>,
    last: &mut Option<std::io::ErrorKind>,
) -> Result<Option<OpenFile>, Busy> {
    let Some(cp) = checkpoint else {
        return Ok(open_logged(path, 0, 1, None, last));
    };
    let p = cp.position;
    if let Ok(meta) = std::fs::metadata(path)
        && is_checkpointed(&meta, &p)
    {
        // Gone between the look and the open: renamed away just now; search again.
        let Some(open) = open_checkpointed(path, &p, last)? else {
            return Err(Busy);
        };
        if open.offset == p.offset {
            return Ok(Some(open));
        }
        // Truncated (and perhaps written again) while stopped: with `copytruncate` the lines
        // after the checkpoint are in the copy, which is read first.
        let head_len = usize::try_from(p.offset).map_or(HEAD_BYTES, |o| o.min(HEAD_BYTES));
        if let Some(hash) = p.head
            && let Some(copy) = find_copy(path, head_len, hash, p.offset, (p.dev, p.ino))
            && let Some(resumed) = open_logged(&copy, p.offset, p.line, p.head, last)
            && resumed.offset == p.offset
        {
            tracing::info!(file = %path.display(), copy = %copy.display(), "the file was truncated while stopped (copytruncate); reading the rest of its copy first");
            return Ok(Some(resumed));
        }
        // Not the checkpointed file after all, but one that was given its inode (on a
        // filesystem without birth times, its start tells them apart): the checkpointed file
        // is gone, and the files rotated after it, older than this one, come first.
        // (Where there are birth times, `is_checkpointed` told the files apart already: this
        // is the checkpointed file, truncated while stopped.)
        let without_birth_times = p.age.born.is_none() || open.age.born.is_none();
        let after = if without_birth_times && p.age.is_known() {
            rotated_since(path, p.age, Some((open.dev, open.ino)), &Default::default())
        } else {
            Vec::new()
        };
        if let Some(first) = after
            .iter()
            .find_map(|next| open_logged(next, 0, 1, None, last))
        {
            tracing::warn!(file = %path.display(), rotated_after_it = after.len(), "the file with the checkpoint's inode is another one (the inode was reused); the checkpointed file is gone, and its unread lines cannot be recovered; reading the files rotated after it first");
            return Ok(Some(first));
        }
        return Ok(Some(open));
    }
    if let Some(rotated) = find_checkpointed(path, &p) {
        // Gone between the look and the open: rotated on (`.1` to `.2`); search again.
        let Some(open) = open_checkpointed(&rotated, &p, last)? else {
            return Err(Busy);
        };
        tracing::info!(file = %rotated.display(), "resuming the rotated file from the checkpoint first");
        return Ok(Some(open));
    }
    // Gone (deleted, or compressed into a new file): its unread lines are lost, but the files
    // rotated after it are whole.
    let after = if p.age.is_known() {
        rotated_since(
            path,
            p.age,
            None, // not excluding its inode: a file born since may have it now
            &std::collections::VecDeque::new(),
        )
    } else {
        Vec::new()
    };
    tracing::warn!(file = %path.display(), rotated_after_it = after.len(), "the checkpointed file is gone; its unread lines cannot be recovered; reading the files rotated after it, then the current file, from their start");
    Ok(after
        .iter()
        .find_map(|next| open_logged(next, 0, 1, None, last))
        .or_else(|| open_logged(path, 0, 1, None, last)))
}

/// What following did.
#[derive(Debug, Default)]
pub(crate) struct FollowReport {
    /// Events submitted.
    pub(crate) submitted: u64,
    /// Events the sink refused (a failed write or fsync of the disk buffer): the first one
    /// stops the following, and a restart reads them again.
    pub(crate) refused: u64,
    /// Where the first refused event is (`FILE line N`).
    pub(crate) stopped_at: Option<String>,
    /// Lines rejected (events larger than the disk buffer included).
    pub(crate) rejected: u64,
    /// The reader thread ended by itself (a panic): following stopped although no stop was
    /// asked for, which must not pass for a clean end.
    pub(crate) reader_failed: bool,
    /// Lines (newlines) and bytes written to rotated files after they were finished: not
    /// shipped (their writer had not reopened the path within the rotate wait).
    pub(crate) late_lines: u64,
    pub(crate) late_bytes: u64,
}

/// A running follow: the tracker must be installed in the pipeline as its settle hook.
#[derive(Debug)]
pub(crate) struct Follow {
    path: PathBuf,
    checkpoint_path: PathBuf,
    tracker: Arc<Tracker>,
    start: Option<Checkpoint>,
    /// The last checkpoint write failed (logged once while it lasts).
    checkpoint_failing: AtomicBool,
    /// How long a file renamed away is read after its last new data.
    rotate_wait: Duration,
}

impl Follow {
    /// Prepares following `path` with its checkpoint at `checkpoint_path`; a file renamed
    /// away is read until it has been quiet for `rotate_wait`.
    ///
    /// # Errors
    /// An unreadable checkpoint.
    pub(crate) fn new(
        path: &Path,
        checkpoint_path: &Path,
        exporters: usize,
        rotate_wait: Duration,
    ) -> Result<Follow, StartError> {
        let start = read_checkpoint(checkpoint_path)?;
        Ok(Follow {
            path: path.to_owned(),
            checkpoint_path: checkpoint_path.to_owned(),
            tracker: Arc::new(Tracker::new(exporters)),
            start,
            checkpoint_failing: AtomicBool::new(false),
            rotate_wait,
        })
    }

    /// The settle hook to install.
    pub(crate) fn hook(&self) -> Arc<dyn SettleHook> {
        Arc::clone(&self.tracker) as Arc<dyn SettleHook>
    }

    /// Follows until `stop`; the checkpoint keeps being written until `done` (after the
    /// pipeline's shutdown) via [`Follow::finish`].
    pub(crate) async fn run(
        &self,
        max_line_bytes: usize,
        sink: &Sink,
        rejects: &Rejects,
        stop: &mut watch::Receiver<bool>,
    ) -> FollowReport {
        let mut report = FollowReport::default();
        let (tx, mut rx) = mpsc::channel::<Item>(1024);
        let halt = Arc::new(AtomicBool::new(false));
        let reader = Reader {
            path: self.path.clone(),
            max_line_bytes,
            seq: SEQ_BASE,
            tx,
            halt: Arc::clone(&halt),
            open_error: None,
            finished: std::collections::VecDeque::new(),
            rotate_wait: self.rotate_wait,
            left_behind: Vec::new(),
            late: LateWrites::default(),
        };
        let start = self.start.clone();
        let thread = std::thread::spawn(move || {
            let open = starting_point(&reader.path, start.as_ref(), &reader.halt);
            reader.run(open)
        });
        let mut ticker = tokio::time::interval(CHECKPOINT_EVERY);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Submits under way, each resolving to its line (number, file, line, offset) and what
        // the sink did with it.
        let mut in_flight = FuturesUnordered::new();
        loop {
            // A refused event stops the reading (its line stays ahead of the checkpoint, so a
            // restart reads it again); the submits already under way finish first.
            if report.refused > 0 && in_flight.is_empty() {
                break;
            }
            let item = tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => None,
                Some((at, submitted)) = in_flight.next(), if !in_flight.is_empty() => {
                    self.submitted(at, submitted, sink, rejects, &mut report);
                    continue;
                }
                _ = ticker.tick() => { self.save_if_moved(sink, rejects).await; continue; }
                item = rx.recv(), if report.refused == 0 && in_flight.len() < SUBMITS_IN_FLIGHT => item,
            };
            let Some(item) = item else { break };
            match item {
                Item::Event {
                    seq,
                    position,
                    source,
                    line,
                    offset,
                    event,
                } => {
                    self.tracker.register(seq, position);
                    let submit = sink.submit_input(Record::new(*event), Some(seq));
                    in_flight.push(submit.map(move |s| ((seq, source, line, offset), s)));
                }
                Item::Rejected {
                    seq,
                    position,
                    source,
                    line,
                    offset,
                    error,
                    raw,
                    truncated,
                } => {
                    self.tracker.register(seq, position);
                    let written = rejects.write(&Reject {
                        source: &source,
                        line,
                        offset,
                        error,
                        raw: &raw,
                        truncated,
                        reencoded: false,
                    });
                    self.rejected(seq, &source, line, written.is_ok(), &mut report);
                }
                Item::Blank { seq, position } => {
                    self.tracker.register(seq, position);
                    self.tracker.complete(seq);
                }
            }
        }
        // Stopped: count the submits that already finished; the rest are cancelled (not taken,
        // or freed: see `Sink::submit`), so their lines stay ahead of the checkpoint.
        while let Some(Some((at, submitted))) = in_flight.next().now_or_never() {
            self.submitted(at, submitted, sink, rejects, &mut report);
        }
        drop(in_flight);
        halt.store(true, Ordering::Relaxed);
        drop(rx);
        // The reader ends only when halted (or when this receiver is gone): one that ended
        // before (its sender dropped by a panic) looked like a stop.
        let joined = tokio::task::spawn_blocking(move || thread.join()).await;
        match joined {
            Ok(Ok(late)) => {
                report.late_lines = late.lines;
                report.late_bytes = late.bytes;
            }
            _ => {
                tracing::error!(
                    "the file reader failed; following stopped (a restart reads on from the checkpoint)"
                );
                report.reader_failed = true;
            }
        }
        report
    }

    /// A submit finished. With the disk buffer, a taken line is settled: the buffer delivers or
    /// replays it. An event larger than the buffer is a bad line: rejected and settled. Any
    /// other refusal stops the reading at that line (`report.refused`).
    fn submitted(
        &self,
        (seq, source, line, offset): (u64, Arc<str>, u64, u64),
        submitted: Submitted,
        sink: &Sink,
        rejects: &Rejects,
        report: &mut FollowReport,
    ) {
        match submitted {
            Submitted::Taken => {
                report.submitted += 1;
                if sink.is_durable() {
                    self.tracker.complete(seq);
                }
            }
            Submitted::TooLarge { event, why } => {
                let written = rejects.write_event(&source, line, offset, &event, why);
                self.rejected(seq, &source, line, written.is_ok(), report);
            }
            // The line stays in the file: reading stops before it, and a restart reads it.
            Submitted::Refused { .. } => Self::refused(&source, line, report),
        }
    }

    /// A bad line is settled once its reject is written. One that could not be (a full disk, a
    /// missing directory) is refused instead: the reading stops before it, so the checkpoint
    /// never passes a bad line recorded nowhere, and a restart reads it again.
    fn rejected(
        &self,
        seq: u64,
        source: &str,
        line: u64,
        written: bool,
        report: &mut FollowReport,
    ) {
        if written {
            report.rejected += 1;
            self.tracker.complete(seq);
        } else {
            Self::refused(source, line, report);
        }
    }

    fn refused(source: &str, line: u64, report: &mut FollowReport) {
        report.refused += 1;
        if report.stopped_at.is_none() {
            report.stopped_at = Some(format!("{source} line {line}"));
        }
    }

    /// Writes the checkpoint if it moved. With the disk buffer, the lines it passes count as
    /// settled once the buffer took them, so the buffer is synced first: the checkpoint never
    /// runs ahead of what survives a power loss (as far as the buffer's fsync policy goes).
    async fn save_if_moved(&self, sink: &Sink, rejects: &Rejects) {
        let Some(position) = self.tracker.take_dirty() else {
            return;
        };
        // The rejects of the lines it passes come first (a few lines at most, rarely any).
        if let Err(e) = rejects.sync() {
            tracing::error!(path = %rejects.path().display(), error = %e, "cannot sync the rejects file; the checkpoint waits");
            self.tracker.mark_dirty();
            return;
        }
        if sink.is_durable() {
            let sink = sink.clone();
            let synced = tokio::task::spawn_blocking(move || sink.sync_buffer())
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
            if let Err(e) = synced {
                tracing::error!(error = %e, "cannot sync the disk buffer; the checkpoint waits");
                self.tracker.mark_dirty();
                return;
            }
        }
        self.write(position);
    }

    /// Writes the checkpoint; on failure it stays to be written (by the next tick).
    fn write(&self, position: Position) {
        let written = write_checkpoint(
            &self.checkpoint_path,
            &Checkpoint {
                path: self.path.clone(),
                position,
            },
        );
        match written {
            Err(e) => {
                // Logged once while it lasts: it is tried again at every tick.
                if !self.checkpoint_failing.swap(true, Ordering::Relaxed) {
                    tracing::error!(path = %self.checkpoint_path.display(), error = %e, "cannot write the checkpoint; trying again at every tick (a restart until then reads again from the last one written)");
                }
                self.tracker.mark_dirty();
            }
            Ok(()) => {
                if self.checkpoint_failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(path = %self.checkpoint_path.display(), "the checkpoint is written again");
                }
            }
        }
    }

    /// Writes the final checkpoint (call after the pipeline's shutdown, which also closed and
    /// synced the disk buffer), unless the buffer's fsync failed: then the lines it took may
    /// not be on disk, and the checkpoint stays where it was (they are read again).
    pub(crate) fn finish(&self, buffer_fsync_failed: bool, rejects: &Rejects) {
        if let Some(position) = self.tracker.take_dirty() {
            if buffer_fsync_failed {
                tracing::error!("the disk buffer's fsync failed: the checkpoint is not moved");
                return;
            }
            if let Err(e) = rejects.sync() {
                tracing::error!(path = %rejects.path().display(), error = %e, "cannot sync the rejects file: the checkpoint is not moved");
                return;
            }
            self.write(position);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(offset: u64) -> Position {
        Position {
            dev: 1,
            ino: 2,
            offset,
            line: offset,
            head: None,
            age: Age::default(),
        }
    }

    /// An over-long line is rejected even when the start kept of it is blank (it used to be
    /// taken for a blank line and settled with no reject); a line of spaces alone is blank.
    #[test]
    fn an_over_long_line_starting_with_spaces_is_rejected_not_blank() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.ndjson");
        let long = format!("{}{{\"event\": 1}}", " ".repeat(20));
        std::fs::write(&path, format!("{long}\n{}\n", " ".repeat(10))).unwrap();
        let (tx, mut rx) = mpsc::channel(8);
        let mut reader = Reader {
            max_line_bytes: 16,
            ..reader_for(&path, tx)
        };
        let mut open = OpenFile::open(&path, 0, 1, None).unwrap();
        assert!(reader.drain(&mut open));
        match rx.try_recv() {
            Ok(Item::Rejected {
                line,
                error,
                truncated,
                ..
            }) => {
                assert_eq!(line, 1);
                assert!(truncated);
                assert!(error.contains(&long.len().to_string()), "{error}");
            }
            other => panic!("line 1 is rejected: {other:?}"),
        }
        assert!(matches!(rx.try_recv(), Ok(Item::Blank { .. })));
        assert!(rx.try_recv().is_err());
    }

    /// As with `ship FILE`: a byte order mark at the start of the file is skipped, and a line
    /// of exactly the limit is taken whether it ends in LF or CRLF.
    #[test]
    fn a_bom_and_crlf_do_not_count_against_the_line_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.ndjson");
        let line = crate::demo::SAMPLES.lines().next().unwrap();
        std::fs::write(
            &path,
            format!("\u{feff}{line}\r\n{line}\r\n{line}\n\u{feff}{line}\n"),
        )
        .unwrap();
        let (tx, mut rx) = mpsc::channel(8);
        let mut reader = reader_for(&path, tx);
        reader.max_line_bytes = line.len();
        let mut open = OpenFile::open(&path, 0, 1, None).unwrap();
        assert!(reader.drain(&mut open));
        for n in 1..=3 {
            assert!(
                matches!(rx.try_recv(), Ok(Item::Event { line, .. }) if line == n),
                "line {n} is an event"
            );
        }
        // Not at the start of the file, a BOM is content: one byte too many here.
        assert!(matches!(
            rx.try_recv(),
            Ok(Item::Rejected {
                line: 4,
                truncated: true,
                ..
            })
        ));
    }

    #[test]
    fn rotated_names_are_recognised_and_other_files_beside_them_are_not() {
        for name in [
            "audit.ndjson.1",
            "audit.ndjson.12",
            "audit.ndjson-20261124",
            "audit.ndjson-2026-11-24",
            "audit.ndjson_1",
            "audit.1.ndjson",
            "audit-20261124.ndjson",
        ] {
            assert!(is_rotation_of("audit.ndjson", name), "{name}");
        }
        for name in [
            "audit.ndjson",
            "audit.ndjson.clawdstrike-dd.checkpoint",
            "audit.ndjson.checkpoint.tmp",
            "audit.ndjson.2.gz",
            "audit.ndjson.1.zst",
            "audit.ndjson.",
            "audit.ndjson.x1",
            "audit.ndjsonl",
            "audit.ndjson1",
            "other.ndjson.1",
            "audit.ndjson.rejects",
            "audit..ndjson",
        ] {
            assert!(!is_rotation_of("audit.ndjson", name), "{name}");
        }
        assert!(is_rotation_of("audit", "audit.3"));
        assert!(!is_rotation_of("audit", "audit.log"));
    }

    fn reader_for(path: &Path, tx: mpsc::Sender<Item>) -> Reader {
        Reader {
            path: path.to_owned(),
            max_line_bytes: 1 << 20,
            seq: 0,
            tx,
            halt: Arc::new(AtomicBool::new(false)),
            open_error: None,
            finished: std::collections::VecDeque::new(),
            rotate_wait: ROTATE_WAIT,
            left_behind: Vec::new(),
            late: LateWrites::default(),
        }
    }

    fn write_at(path: &Path, text: &str, seconds_ago: u64) {
        std::fs::write(path, text).unwrap();
        let when = std::time::SystemTime::now() - Duration::from_secs(seconds_ago);
        File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(when)
            .unwrap();
    }

    fn lines_sent(rx: &mut mpsc::Receiver<Item>) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        while let Ok(item) = rx.try_recv() {
            if let Item::Rejected { source, line, .. } = item {
                out.push((source.rsplit('/').next().unwrap().to_owned(), line));
            }
        }
        out
    }

    /// Two rotations while the reader was stopped or held back: the file rotated between the
    /// checkpointed one and the current one (`.1`) is read before the current file, with no
    /// wait (a newer file shows its writer moved on); older rotated files, compressed ones and
    /// the checkpoint beside them are not read.
    #[test]
    fn a_file_rotated_between_the_finished_one_and_the_current_one_is_read_next() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.ndjson");
        // Rejected lines (not JSON) are enough to see which file each line came from.
        write_at(&dir.path().join("audit.ndjson.3"), "old\n", 300);
        write_at(&dir.path().join("audit.ndjson.2"), "x1\nx2\n", 200);
        write_at(&dir.path().join("audit.ndjson.2.gz"), "gz\n", 150);
        write_at(&dir.path().join("audit.ndjson.1"), "y1\ny2\n", 100);
        write_at(&path, "z1\n", 10);
        write_at(
            &dir.path().join("audit.ndjson.clawdstrike-dd.checkpoint"),
            "{}",
            5,
        );
        let (tx, mut rx) = mpsc::channel(64);
        let mut reader = reader_for(&path, tx);
        let mut finished = OpenFile::open(&dir.path().join("audit.ndjson.2"), 3, 2, None).unwrap();
        assert!(reader.drain(&mut finished));
        assert_eq!(
            reader.rotated_after(&finished),
            vec![dir.path().join("audit.ndjson.1")]
        );
        assert!(
            !reader.waits_for_writer(&finished),
            "no quiet wait for a file whose writer moved on"
        );
        let AfterRotation::Next(Some(mut next)) = reader.next_after_rotation(&mut finished) else {
            panic!("the middle file opens");
        };
        assert_eq!(
            &*next.name,
            dir.path().join("audit.ndjson.1").display().to_string()
        );
        assert!(reader.drain(&mut next));
        // The middle file is the newest rotated one; with nothing newer, it is the current
        // file's turn (after the quiet wait, which this test does not sit through).
        assert!(reader.rotated_after(&next).is_empty());
        assert_eq!(
            lines_sent(&mut rx),
            [
                ("audit.ndjson.2", 2),
                ("audit.ndjson.1", 1),
                ("audit.ndjson.1", 2)
            ]
            .map(|(f, l)| (f.to_owned(), l))
        );
        // Once finished, a file is not taken for an unread one, even with the same time as
        // the file finished after it.
        reader
            .finished
            .push_back(FileKey::of(&next.file.metadata().unwrap()));
        let mut newer = OpenFile::open(&path, 0, 1, None).unwrap();
        assert!(reader.drain(&mut newer));
        newer
            .file
            .set_modified(next.file.metadata().unwrap().modified().unwrap())
            .unwrap();
        assert!(reader.rotated_after(&newer).is_empty());
    }

    /// A writer that had not reopened the path when the reader moved on writes on to the
    /// finished file: those lines are not read (the checkpoint moved on), but they are counted
    /// (here, and in the exit report) and warned about, not lost silently. Only growth after
    /// the finish counts, and the next finished file takes the watch over.
    #[test]
    fn lines_written_to_a_finished_rotated_file_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.ndjson");
        let older = dir.path().join("audit.ndjson.2");
        let newer = dir.path().join("audit.ndjson.1");
        write_at(&older, "x1\n", 200);
        write_at(&newer, "y1\n", 100);
        write_at(&path, "z1\n", 10);
        let (tx, mut rx) = mpsc::channel(64);
        let mut reader = reader_for(&path, tx);
        let late = |reader: &Reader| (reader.late.lines, reader.late.bytes);
        let mut finished = OpenFile::open(&older, 0, 1, None).unwrap();
        let AfterRotation::Next(Some(mut next)) = reader.next_after_rotation(&mut finished) else {
            panic!("the newer rotated file opens");
        };
        reader.watch_left_behind();
        assert_eq!(
            late(&reader),
            (0, 0),
            "nothing written since it was finished"
        );
        let append = |file: &Path, text: &str| {
            use std::io::Write;
            let mut f = File::options().append(true).open(file).unwrap();
            f.write_all(text.as_bytes()).unwrap();
        };
        append(&older, "late1\nlate2\n");
        reader.watch_left_behind();
        assert_eq!(late(&reader), (2, 12));
        reader.watch_left_behind();
        assert_eq!(late(&reader), (2, 12), "counted once");
        append(&older, "late3");
        reader.watch_left_behind();
        assert_eq!(
            late(&reader),
            (2, 17),
            "a line without its newline yet: bytes only"
        );
        // The newer file is finished in turn: both are watched now (a writer that never
        // reopens the path goes on writing to the older one).
        assert!(reader.drain(&mut next));
        assert!(matches!(
            reader.next_after_rotation(&mut next),
            AfterRotation::Next(_)
        ));
        append(&newer, "late4\n");
        append(&older, "also\n");
        reader.watch_left_behind();
        assert_eq!(late(&reader), (4, 28));
        // A deleted one is let go (its disk space is not held), after its last count.
        append(&older, "last\n");
        std::fs::remove_file(&older).unwrap();
        reader.watch_left_behind();
        assert_eq!(late(&reader), (5, 33));
        assert_eq!(reader.left_behind.len(), 1);
        assert_eq!(&*reader.left_behind[0].name, newer.display().to_string());
        // The late lines were never sent as lines.
        assert_eq!(
            lines_sent(&mut rx),
            [("audit.ndjson.2", 1), ("audit.ndjson.1", 1)].map(|(f, l)| (f.to_owned(), l))
        );
    }

    thread_local! {
        /// How many of this thread's next [`OpenFile::open`] calls fail, and with what.
        pub(super) static FAILING_OPENS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
        pub(super) static FAILING_OPEN_KIND: std::cell::Cell<std::io::ErrorKind> =
            const { std::cell::Cell::new(std::io::ErrorKind::PermissionDenied) };
        /// Runs at each of those failures.
        pub(super) static ON_FAILED_OPEN: std::cell::RefCell<Option<Box<dyn FnMut()>>> =
            const { std::cell::RefCell::new(None) };
    }

    /// The checkpointed file, rotated while stopped, exists but cannot be opened for a while
    /// (EMFILE, a mode being fixed): the start waits for it. Going on with the file at the
    /// path instead skipped its unread line, and the next checkpoint forgot it.
    #[test]
    fn a_checkpointed_file_that_fails_to_open_for_a_while_is_waited_for() {
        let (dir, path, checkpoint) = checkpointed_a1_then_a2();
        let rotated = dir.path().join("audit.ndjson.1");
        std::fs::rename(&path, &rotated).unwrap();
        std::fs::write(&path, "b1\n").unwrap();
        FAILING_OPENS.with(|left| left.set(2));
        let start = starting_point(&path, Some(&checkpoint), &AtomicBool::new(false))
            .expect("a file opens");
        assert_eq!(FAILING_OPENS.with(std::cell::Cell::get), 0);
        assert_eq!(&*start.name, rotated.display().to_string());
        assert_eq!((start.offset, start.line), (3, 2));
    }

    /// The checkpointed file cannot be opened, and is rotated away meanwhile: the start finds it
    /// again by its identity under its new name. (Waiting for the name, it opened the new file
    /// at the path instead, and the rest of the checkpointed one was never read.)
    #[test]
    fn a_checkpointed_file_rotated_while_it_could_not_be_opened_is_found_again() {
        started_after_a_rotation_at_a_failed_open(std::io::ErrorKind::PermissionDenied);
    }

    /// The checkpointed file is renamed between being found and being opened (the open says
    /// not found): the start searches again and finds it under its new name. (It went on with
    /// the path's new file from its start, and the rest of the checkpointed one was never
    /// read.)
    #[test]
    fn a_checkpointed_file_renamed_as_it_is_opened_is_found_again() {
        started_after_a_rotation_at_a_failed_open(std::io::ErrorKind::NotFound);
    }

    /// The start of a checkpointed file whose first open fails with `kind` while the file is
    /// rotated to `.1` (and a new one written at the path): it resumes `.1` at the checkpoint.
    fn started_after_a_rotation_at_a_failed_open(kind: std::io::ErrorKind) {
        let (dir, path, checkpoint) = checkpointed_a1_then_a2();
        let rotated = dir.path().join("audit.ndjson.1");
        let (from, to) = (path.clone(), rotated.clone());
        FAILING_OPENS.with(|left| left.set(1));
        FAILING_OPEN_KIND.with(|k| k.set(kind));
        ON_FAILED_OPEN.with(|f| {
            *f.borrow_mut() = Some(Box::new(move || {
                std::fs::rename(&from, &to).unwrap();
                std::fs::write(&from, "b1\n").unwrap();
            }));
        });
        let start = starting_point(&path, Some(&checkpoint), &AtomicBool::new(false));
        ON_FAILED_OPEN.with(|f| f.borrow_mut().take());
        FAILING_OPEN_KIND.with(|k| k.set(std::io::ErrorKind::PermissionDenied));
        let start = start.expect("a file opens");
        assert_eq!(&*start.name, rotated.display().to_string());
        assert_eq!((start.offset, start.line), (3, 2));
    }

    /// `audit.ndjson` read and checkpointed after its line `a1`, then `a2` appended (unread).
    fn checkpointed_a1_then_a2() -> (tempfile::TempDir, PathBuf, Checkpoint) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.ndjson");
        std::fs::write(&path, "a1\n").unwrap();
        let mut a = OpenFile::open(&path, 0, 1, None).unwrap();
        let (tx, _rx) = mpsc::channel(64);
        assert!(reader_for(&path, tx).drain(&mut a));
        let checkpoint = checkpoint_at(&a);
        drop(a);
        let mut f = File::options().append(true).open(&path).unwrap();
        std::io::Write::write_all(&mut f, b"a2\n").unwrap();
        (dir, path, checkpoint)
    }

    fn checkpoint_at(open: &OpenFile) -> Checkpoint {
        Checkpoint {
            path: PathBuf::new(),
            position: open.position(),
        }
    }

    /// The checkpointed file was deleted while stopped (`rotate 1`, or compressed into a new
    /// file): the file rotated after it is read whole before the current one; the older one
    /// is not.
    #[test]
    fn when_the_checkpointed_file_is_gone_the_files_rotated_after_it_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.ndjson");
        write_at(&dir.path().join("audit.ndjson.2"), "old\n", 300);
        let gone = dir.path().join("audit.ndjson.9");
        write_at(&gone, "x1\nx2\n", 200);
        let mut x = OpenFile::open(&gone, 0, 1, None).unwrap();
        let (tx, _rx) = mpsc::channel(64);
        assert!(reader_for(&path, tx).drain(&mut x));
        let checkpoint = checkpoint_at(&x);
        drop(x);
        std::fs::remove_file(&gone).unwrap();
        write_at(&dir.path().join("audit.ndjson.1"), "y1\n", 100);
        write_at(&path, "z1\n", 10);
        let start = starting_point(&path, Some(&checkpoint), &AtomicBool::new(false))
            .expect("a file opens");
        assert_eq!(
            &*start.name,
            dir.path().join("audit.ndjson.1").display().to_string()
        );
        assert_eq!((start.offset, start.line), (0, 1));
    }

    /// `copytruncate` while stopped: the file was copied to `.1` (with lines not read yet) and
    /// emptied, then written again past the checkpoint. The copy is read from the checkpoint
    /// on, not the new content from there.
    #[test]
    fn a_copytruncated_file_is_resumed_in_its_copy_at_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.ndjson");
        std::fs::write(&path, "a1\na2\n").unwrap();
        let mut open = OpenFile::open(&path, 0, 1, None).unwrap();
        let (tx, _rx) = mpsc::channel(64);
        assert!(reader_for(&path, tx).drain(&mut open));
        let checkpoint = checkpoint_at(&open);
        drop(open);
        // More lines, then logrotate's copy and truncation, then a new, longer content.
        std::fs::write(&path, "a1\na2\na3\n").unwrap();
        std::fs::copy(&path, dir.path().join("audit.ndjson.1")).unwrap();
        std::fs::write(&path, "b1-longer\nb2\n").unwrap();
        let start = starting_point(&path, Some(&checkpoint), &AtomicBool::new(false))
            .expect("a file opens");
        assert_eq!(
            &*start.name,
            dir.path().join("audit.ndjson.1").display().to_string()
        );
        assert_eq!((start.offset, start.line), (6, 3), "at line a3");
    }

    /// The same while running: the read that meets the new content goes on in the copy, from
    /// the line after the last one taken; without a copy, from the start of the file.
    #[test]
    fn a_file_copytruncated_while_read_goes_on_in_its_copy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.ndjson");
        std::fs::write(&path, "a1\na2\n").unwrap();
        let (tx, mut rx) = mpsc::channel(64);
        let mut reader = reader_for(&path, tx);
        let mut open = OpenFile::open(&path, 0, 1, None).unwrap();
        assert!(reader.drain(&mut open));
        std::fs::write(&path, "a1\na2\na3\n").unwrap();
        std::fs::copy(&path, dir.path().join("audit.ndjson.1")).unwrap();
        std::fs::write(&path, "b1-longer\nb2\nb3\n").unwrap();
        assert!(reader.drain(&mut open));
        assert_eq!(
            lines_sent(&mut rx),
            [
                ("audit.ndjson", 1),
                ("audit.ndjson", 2),
                ("audit.ndjson.1", 3)
            ]
            .map(|(f, l)| (f.to_owned(), l))
        );
        // No copy this time: the file is read again from its start.
        std::fs::remove_file(dir.path().join("audit.ndjson.1")).unwrap();
        let mut open = OpenFile::open(&path, 0, 1, None).unwrap();
        assert!(reader.drain(&mut open));
        std::fs::write(&path, "c1-much-longer\nc2\nc3\nc4\n").unwrap();
        assert!(reader.drain(&mut open));
        let sent = lines_sent(&mut rx);
        assert_eq!(sent.len(), 3 + 4, "{sent:?}");
        assert_eq!(
            sent[3..],
            [1, 2, 3, 4].map(|l| ("audit.ndjson".to_owned(), l))
        );
    }

    /// A checkpoint that cannot be written (its directory is gone) stays to be written: the
    /// next tick writes it once it can, rather than the position being forgotten until the
    /// checkpoint moves again.
    #[test]
    fn a_checkpoint_that_could_not_be_written_is_written_at_the_next_try() {
        let dir = tempfile::tempdir().unwrap();
        let checkpoint = dir.path().join("later").join("audit.checkpoint");
        let follow = Follow::new(
            &dir.path().join("audit.ndjson"),
            &checkpoint,
            1,
            ROTATE_WAIT,
        )
        .unwrap();
        follow.tracker.mark_dirty();
        follow.tracker.lock().checkpoint = Some(pos(42));
        let position = follow.tracker.take_dirty().expect("dirty");
        follow.write(position);
        assert!(!checkpoint.exists());
        std::fs::create_dir(checkpoint.parent().unwrap()).unwrap();
        let again = follow.tracker.take_dirty().expect("still to be written");
        follow.write(again);
        let written = read_checkpoint(&checkpoint).unwrap().expect("a checkpoint");
        assert_eq!(written.position.offset, 42);
    }

    /// A followed path that is a symbolic link: the files rotated beside its target, under the
    /// target's name, are found (logrotate works on the target), as well as any beside the
    /// link under its own name.
    #[test]
    fn the_files_rotated_beside_a_symbolic_links_target_are_found() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("data")).unwrap();
        let target = dir.path().join("data").join("audit.ndjson");
        std::fs::write(&target, "new\n").unwrap();
        std::fs::write(dir.path().join("data").join("audit.ndjson.1"), "old\n").unwrap();
        std::fs::write(dir.path().join("data").join("other.ndjson.1"), "no\n").unwrap();
        let link = dir.path().join("current.ndjson");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        std::fs::write(dir.path().join("current.ndjson.1"), "beside\n").unwrap();
        let mut names: Vec<String> = rotation_siblings(&link)
            .into_iter()
            .map(|(p, _)| {
                // By the last two names: the temporary directory may itself be a link.
                let parent = p.parent().and_then(Path::file_name).unwrap();
                let parent = if parent == dir.path().file_name().unwrap() {
                    String::new()
                } else {
                    format!("{}/", parent.to_string_lossy())
                };
                format!("{parent}{}", p.file_name().unwrap().to_string_lossy())
            })
            .collect();
        names.sort();
        assert_eq!(names, ["current.ndjson.1", "data/audit.ndjson.1"]);
    }

    /// `copytruncate` while the file holds only an unfinished first line: the copy (where that
    /// line was finished) is found by it and read, not skipped.
    #[test]
    fn a_copytruncate_of_an_unfinished_first_line_goes_on_in_the_copy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.ndjson");
        std::fs::write(&path, "first-li").unwrap();
        let (tx, mut rx) = mpsc::channel(64);
        let mut reader = reader_for(&path, tx);
        let mut open = OpenFile::open(&path, 0, 1, None).unwrap();
        assert!(reader.drain(&mut open));
        std::fs::write(dir.path().join("audit.ndjson.1"), "first-line\nsecond\n").unwrap();
        std::fs::write(&path, "new\n").unwrap();
        assert!(reader.drain(&mut open));
        assert_eq!(
            lines_sent(&mut rx),
            [("audit.ndjson.1", 1), ("audit.ndjson.1", 2)].map(|(f, l)| (f.to_owned(), l))
        );
    }

    /// A writer cuts back a torn last line (as a full disk leaves one) and writes the line
    /// again, longer than what was read of it: the line is read whole from its start, not from
    /// where the read stopped; the same when the cut-back line is written again shorter.
    #[test]
    fn an_unfinished_line_cut_back_and_written_again_is_read_from_its_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.ndjson");
        std::fs::write(&path, "a1\ntorn-half").unwrap();
        let (tx, mut rx) = mpsc::channel(64);
        let mut reader = reader_for(&path, tx);
        let mut open = OpenFile::open(&path, 0, 1, None).unwrap();
        assert!(reader.drain(&mut open));
        std::fs::write(&path, "a1\nthe-whole-line\n").unwrap();
        assert!(reader.drain(&mut open));
        std::fs::write(&path, "a1\nthe-whole-line\nlonger-torn").unwrap();
        assert!(reader.drain(&mut open));
        std::fs::write(&path, "a1\nthe-whole-line\nb\nc\n").unwrap();
        assert!(reader.drain(&mut open));
        let mut raws = Vec::new();
        while let Ok(item) = rx.try_recv() {
            if let Item::Rejected { line, raw, .. } = item {
                raws.push((line, String::from_utf8(raw).unwrap()));
            }
        }
        assert_eq!(
            raws,
            [(1, "a1"), (2, "the-whole-line"), (3, "b"), (4, "c")].map(|(l, r)| (l, r.to_owned()))
        );
        assert_eq!(open.offset, "a1\nthe-whole-line\nb\nc\n".len() as u64);
    }

    /// The usual `copytruncate`: the file is copied, emptied, and written again *shorter* than
    /// the read position, with a line half read before the copy. The reader sees it is shorter
    /// and goes on in the copy from the line after the last one taken (finishing the half
    /// line), not in the new content from its start.
    #[test]
    fn a_file_copied_and_emptied_goes_on_in_its_copy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.ndjson");
        std::fs::write(&path, "a1\na2\npart").unwrap();
        let (tx, mut rx) = mpsc::channel(64);
        let mut reader = reader_for(&path, tx);
        let mut open = OpenFile::open(&path, 0, 1, None).unwrap();
        assert!(reader.drain(&mut open));
        assert_eq!(
            lines_sent(&mut rx),
            [
                ("audit.ndjson".to_owned(), 1),
                ("audit.ndjson".to_owned(), 2)
            ]
        );
        std::fs::write(&path, "a1\na2\npartial\na4\n").unwrap();
        std::fs::copy(&path, dir.path().join("audit.ndjson.1")).unwrap();
        std::fs::write(&path, "b\n").unwrap();
        let halt = Arc::clone(&reader.halt);
        let thread = std::thread::spawn(move || reader.run(Some(open)));
        let first = rx.blocking_recv();
        halt.store(true, Ordering::Relaxed);
        drop(rx);
        thread.join().unwrap();
        match first {
            Some(Item::Rejected { source, line, .. }) => {
                assert!(
                    source.ends_with("audit.ndjson.1"),
                    "from the copy: {source}"
                );
                assert_eq!(line, 3, "the half-read line, whole");
            }
            other => panic!("a line: {other:?}"),
        }
    }

    /// A stop while a rotated file is read to catch up: the file is not finished, so a line
    /// half read is not taken as a whole line (it would be rejected, and the checkpoint
    /// would pass its start).
    #[test]
    fn a_stop_while_catching_up_does_not_finish_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.ndjson");
        write_at(&dir.path().join("audit.ndjson.2"), "x1\nx2-half", 200);
        write_at(&dir.path().join("audit.ndjson.1"), "y1\n", 100);
        write_at(&path, "z1\n", 10);
        let (tx, mut rx) = mpsc::channel(64);
        let mut reader = reader_for(&path, tx);
        let mut rotated = OpenFile::open(&dir.path().join("audit.ndjson.2"), 0, 1, None).unwrap();
        assert!(!reader.waits_for_writer(&rotated));
        reader.halt.store(true, Ordering::Relaxed);
        assert!(matches!(
            reader.next_after_rotation(&mut rotated),
            AfterRotation::Stop
        ));
        assert_eq!(lines_sent(&mut rx), [("audit.ndjson.2".to_owned(), 1)]);
    }

    /// The checkpoint's fingerprint of the file's start tells a file truncated and written
    /// again past the checkpoint from the same file grown: the first is read from its start.
    #[test]
    fn a_file_whose_start_changed_since_the_checkpoint_is_read_from_its_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.ndjson");
        for first in ["a\n", &"a".repeat(2 * HEAD_BYTES)] {
            std::fs::write(&path, format!("{first}\nb\n")).unwrap();
            let mut open = OpenFile::open(&path, 0, 1, None).unwrap();
            let (tx, _rx) = mpsc::channel(64);
            assert!(reader_for(&path, tx).drain(&mut open));
            let checkpoint = open.position();
            assert!(checkpoint.head.is_some());
            // Grown: resumed at the checkpoint.
            std::fs::write(&path, format!("{first}\nb\nc\n")).unwrap();
            let resumed =
                OpenFile::open(&path, checkpoint.offset, checkpoint.line, checkpoint.head).unwrap();
            assert_eq!(resumed.offset, checkpoint.offset);
            assert!(!resumed.head_changed());
            // Truncated and written again, longer than before: from the start.
            std::fs::write(&path, format!("{}\nd\ne\nf\n", first.replace('a', "q"))).unwrap();
            assert!(resumed.head_changed(), "seen while running too");
            let reread =
                OpenFile::open(&path, checkpoint.offset, checkpoint.line, checkpoint.head).unwrap();
            assert_eq!((reread.offset, reread.line), (0, 1));
        }
    }

    /// On a filesystem without birth times, a file that was given the checkpointed file's inode
    /// (the checkpointed one deleted by rotation while stopped) is told apart by its start:
    /// the file rotated in between is read first, not skipped.
    #[test]
    fn a_reused_inode_does_not_skip_the_file_rotated_in_between() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.ndjson");
        std::fs::write(dir.path().join("audit.ndjson.2"), "older\n").unwrap();
        std::fs::write(&path, "c1\n").unwrap();
        std::fs::write(dir.path().join("audit.ndjson.1"), "b1\nb2\n").unwrap();
        let an_hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
        File::options()
            .write(true)
            .open(dir.path().join("audit.ndjson.2"))
            .unwrap()
            .set_modified(an_hour_ago)
            .unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        let minute_ago = std::time::SystemTime::now() - Duration::from_secs(60);
        let nanos = |t: std::time::SystemTime| {
            u64::try_from(t.duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()).unwrap()
        };
        let checkpoint = Checkpoint {
            path: path.clone(),
            position: Position {
                dev: meta.dev(),
                ino: meta.ino(),
                offset: 3,
                line: 2,
                head: Some(fnv1a(b"a1\n")),
                // No birth time, as on a filesystem without them.
                age: Age {
                    born: None,
                    modified: Some(nanos(minute_ago)),
                },
            },
        };
        let open = starting_point(&path, Some(&checkpoint), &AtomicBool::new(false))
            .expect("a file to read");
        assert!(open.name.ends_with("audit.ndjson.1"), "{}", open.name);
        assert_eq!((open.offset, open.line), (0, 1));
    }

    #[test]
    fn the_checkpoint_advances_only_over_lines_every_exporter_settled_contiguously() {
        let t = Tracker::new(2);
        let l = |n: u64| SEQ_BASE + n;
        for n in 0..4 {
            t.register(l(n), pos(n + 1));
        }
        t.settled(0, "a", &[l(1), l(2)], Settlement::Delivered);
        t.settled(1, "b", &[l(1), l(2)], Settlement::Delivered);
        assert_eq!(t.take_dirty(), None, "line 0 is not settled yet");
        t.settled(0, "a", &[l(0)], Settlement::Delivered);
        assert_eq!(t.take_dirty(), None, "exporter b has not settled line 0");
        // Another input's event (the HTTP listener, numbered by the pipeline from 0) is ignored.
        t.settled(1, "b", &[0], Settlement::Delivered);
        assert_eq!(t.take_dirty(), None, "an HTTP event does not settle line 0");
        t.settled(1, "b", &[l(0)], Settlement::Filtered);
        assert_eq!(t.take_dirty(), Some(pos(3)));
        t.complete(l(3));
        assert_eq!(t.take_dirty(), Some(pos(4)));
        assert_eq!(t.take_dirty(), None);
    }
}
