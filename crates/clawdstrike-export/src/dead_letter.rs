//! Dead letters: JSON lines, one per event, rotated by size.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

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
    /// A regular file: rotated by size, its directory entry synced. Not so `/dev/null` (to
    /// discard dead letters) or a pipe, which are never renamed.
    regular: bool,
}

/// What one [`DeadLetterWriter::write_lines`] call has written and not yet forced to disk.
#[derive(Debug, Default)]
struct Written {
    /// Lines written to the open file since its last fsync.
    unsynced: Vec<usize>,
    /// A file was created or renamed in the directory since its last fsync.
    dir_changed: bool,
    failed: Vec<(usize, io::Error)>,
}

impl Written {
    /// Fsyncs the open file (and the directory, after a creation or a rename); on failure the
    /// lines it covered count as not written: their events are not settled, so a disk buffer
    /// keeps them (a dead letter written twice beats one lost).
    fn sync(&mut self, path: &Path, slot: &mut Option<OpenFile>, faults: &Faults) {
        let mut result = match slot.as_ref() {
            // A file that cannot be fsynced at all (`/dev/null`, to discard dead letters)
            // has nothing to make durable.
            Some(open) if !self.unsynced.is_empty() => {
                crate::buffer::unsyncable_is_ok(open.file.sync_data())
            }
            _ => Ok(()),
        };
        if result.is_ok() && self.dir_changed {
            let dir = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            result = crate::buffer::sync_dir(dir);
            #[cfg(test)]
            faults
                .dir_syncs
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.dir_changed = result.is_err();
        }
        #[cfg(test)]
        if faults
            .fail_fsyncs
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            self.dir_changed |= result.is_ok();
            result = Err(io::Error::other("injected fsync failure"));
        }
        #[cfg(not(test))]
        let _ = faults;
        if let Err(e) = result {
            *slot = None;
            for i in self.unsynced.drain(..) {
                self.failed
                    .push((i, io::Error::new(e.kind(), format!("fsync failed: {e}"))));
            }
        }
        self.unsynced.clear();
    }
}

/// Appends dead-letter lines to a file, rotating it by size. Blocking: call it from
/// `spawn_blocking`.
#[derive(Debug)]
pub(crate) struct DeadLetterWriter {
    path: Option<PathBuf>,
    max_file_bytes: u64,
    max_files: u32,
    file: Mutex<Option<OpenFile>>,
    /// The directory has a change (a file created or renamed) not yet synced: kept across
    /// calls, since the next call may find the file already there.
    dir_unsynced: std::sync::atomic::AtomicBool,
    /// The file could not be locked (a filesystem without locks) and this was logged.
    unlocked_logged: std::sync::atomic::AtomicBool,
    faults: Faults,
}

/// Fsync failures on demand, and a count of directory fsyncs, for tests.
#[derive(Debug, Default)]
struct Faults {
    #[cfg(test)]
    fail_fsyncs: std::sync::atomic::AtomicBool,
    #[cfg(test)]
    dir_syncs: std::sync::atomic::AtomicUsize,
    #[cfg(test)]
    panic_on_write: std::sync::atomic::AtomicBool,
    #[cfg(test)]
    lock_waits: std::sync::atomic::AtomicUsize,
}

impl DeadLetterWriter {
    pub(crate) fn new(config: &DeadLetterConfig) -> Self {
        Self {
            path: config.path.clone(),
            max_file_bytes: config.max_file_bytes,
            max_files: config.max_files,
            file: Mutex::new(None),
            dir_unsynced: std::sync::atomic::AtomicBool::new(false),
            unlocked_logged: std::sync::atomic::AtomicBool::new(false),
            faults: Faults::default(),
        }
    }

    pub(crate) fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Tests: every later [`write_lines`](Self::write_lines) panics.
    #[cfg(test)]
    pub(crate) fn panic_on_write(&self) {
        self.faults
            .panic_on_write
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Writes each line, and forces them to disk before returning; returns the indices of
    /// those that could not be written (or whose fsync failed), with why.
    ///
    /// Durable before the caller settles the events: with a disk buffer, settling lets the
    /// buffer forget an event, and a power loss must not then lose its dead letter too.
    pub(crate) fn write_lines(&self, lines: &[Vec<u8>]) -> Vec<(usize, io::Error)> {
        let Some(path) = &self.path else {
            return Vec::new();
        };
        #[cfg(test)]
        assert!(
            !self
                .faults
                .panic_on_write
                .load(std::sync::atomic::Ordering::Relaxed),
            "injected dead-letter writer panic"
        );
        let mut guard = self
            .file
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut batch = Written {
            dir_changed: self.dir_unsynced.load(std::sync::atomic::Ordering::Relaxed),
            ..Written::default()
        };
        for (i, line) in lines.iter().enumerate() {
            if let Err(error) = self.write_one(path, &mut guard, line, &mut batch) {
                // Forget the handle so the next write reopens (the directory may come back);
                // what it holds from this call is synced first.
                batch.sync(path, &mut guard, &self.faults);
                *guard = None;
                batch.failed.push((i, error));
            } else {
                batch.unsynced.push(i);
            }
        }
        batch.sync(path, &mut guard, &self.faults);
        self.dir_unsynced
            .store(batch.dir_changed, std::sync::atomic::Ordering::Relaxed);
        batch.failed.sort_by_key(|(i, _)| *i);
        batch.failed
    }

    /// Writes one line to the file `path` names, rotating it first if the line would take it
    /// past `max_file_bytes`.
    ///
    /// Another process may append to the same file and rotate it (a backfill beside the
    /// daemon, with the same configuration). So each line is written under the file's lock, at
    /// its length read under that lock (a line cut short by a full disk is cut back to exactly
    /// where it began, never into the other's lines), to the file the path names at that
    /// moment (not one the other process has rotated away), and a rotation happens under the
    /// lock of the file it renames.
    fn write_one(
        &self,
        path: &Path,
        slot: &mut Option<OpenFile>,
        line: &[u8],
        batch: &mut Written,
    ) -> io::Result<()> {
        let line_len = line.len() as u64;
        // Each pass either writes, or finds the file renamed or due for rotation and opens the
        // new one; only another process rotating without pause could keep it going, and then
        // for [`LOCK_WAIT`] at most.
        let started = std::time::Instant::now();
        for pass in 0.. {
            if pass >= MIN_PASSES && started.elapsed() >= LOCK_WAIT {
                break;
            }
            if slot.is_none() {
                let file = OpenOptions::new().create(true).append(true).open(path)?;
                let regular = file.metadata()?.file_type().is_file();
                *slot = Some(OpenFile { file, regular });
            }
            let open = slot
                .as_ref()
                .ok_or_else(|| io::Error::other("dead-letter file not open"))?;
            if !open.regular {
                // `/dev/null` or a pipe: never rotated, nothing to cut back.
                return (&open.file).write_all(line);
            }
            let locked = self.lock(&open.file, path)?;
            let state = open
                .file
                .metadata()
                .and_then(|m| Ok((m.len(), names_file(path, &m)?)));
            let (len, current) = match state {
                Ok(state) => state,
                Err(e) => {
                    unlock(&open.file, locked);
                    return Err(e);
                }
            };
            if !current {
                // Renamed away (or removed) by another process's rotation: what this call
                // wrote there goes to disk, then the file the path names now is opened.
                unlock(&open.file, locked);
                batch.sync(path, slot, &self.faults);
                *slot = None;
                if pass >= MIN_PASSES {
                    // Not a burst of rotations after all (or a filesystem whose inodes are not
                    // stable): no hot loop until the time limit.
                    std::thread::sleep(Duration::from_millis(10));
                }
                continue;
            }
            if len > 0 && len + line_len > self.max_file_bytes {
                // The lines this call wrote to the file about to be renamed go to disk first;
                // closing it (below) gives up its lock once the rotation is done.
                batch.sync(path, slot, &self.faults);
                if slot.is_none() {
                    // The fsync failed and closed the file, and with it the lock: the
                    // rotation waits for the file to be opened and locked again.
                    continue;
                }
                let rotated = self.rotate(path);
                *slot = None;
                rotated?;
                batch.dir_changed = true;
                continue;
            }
            // A file just created (or still empty) needs its directory entry synced too.
            batch.dir_changed |= len == 0;
            let written = (&open.file).write_all(line);
            if written.is_err() {
                // A full disk may have taken part of the line: cut it back off, or the next
                // line (once there is room) would be glued to it and neither would read back.
                // (Without locks, the file is taken to be this process's alone.)
                let _ = open.file.set_len(len);
            }
            unlock(&open.file, locked);
            return written;
        }
        Err(io::Error::other(format!(
            "the dead-letter file kept being renamed for {} s while writing (another process rotating it)",
            LOCK_WAIT.as_secs()
        )))
    }

    /// Takes `file`'s exclusive lock (see [`lock_shared_file`]); false on a filesystem without
    /// locks, where the write goes ahead unlocked (and this is logged once).
    fn lock(&self, file: &File, path: &Path) -> io::Result<bool> {
        #[cfg(test)]
        let waited = || {
            self.faults
                .lock_waits
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        };
        #[cfg(not(test))]
        let waited = || {};
        match lock_shared_file(file, LOCK_WAIT, waited) {
            Ok(locked) => Ok(locked),
            Err(LockError::Unsupported(e)) => {
                if !self
                    .unlocked_logged
                    .swap(true, std::sync::atomic::Ordering::Relaxed)
                {
                    tracing::warn!(path = %path.display(), error = %e, "the dead-letter file cannot be locked here; writing without the lock (it is then taken to be this process's alone)");
                }
                Ok(false)
            }
            Err(LockError::Io(e)) => Err(e),
        }
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

/// Passes through [`DeadLetterWriter::write_one`], at least, before it gives up (after
/// [`LOCK_WAIT`]) on a file that keeps being renamed.
const MIN_PASSES: usize = 8;

/// How long a line waits for another process to give up the file's lock before it fails.
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// Why [`lock_shared_file`] did not lock.
#[derive(Debug)]
pub enum LockError {
    /// The filesystem has no locks (`ENOLCK`: an NFS mount without its lock daemon, or
    /// `EOPNOTSUPP`): the caller may go on unlocked.
    Unsupported(io::Error),
    /// Another process held the lock for the whole wait, or locking failed otherwise.
    Io(io::Error),
}

/// Takes the exclusive lock of a file that other processes append to as well (a dead-letter
/// or rejects file shared by a backfill and the daemon), each holding it for one write.
///
/// Waits up to `wait`, backing off from 1 to 50 ms, calling `waited` at each miss: a process
/// stopped while holding the lock (or a hung network filesystem) must not hold the caller for
/// ever. Blocking: call it off the async runtime's workers where the wait matters.
///
/// # Errors
/// [`LockError::Unsupported`] on a filesystem without locks; [`LockError::Io`] when the lock
/// was still held at the end of the wait (`WouldBlock`), or any other failure.
pub fn lock_shared_file(
    file: &File,
    wait: Duration,
    mut waited: impl FnMut(),
) -> Result<bool, LockError> {
    let started = std::time::Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(true),
            Err(fs::TryLockError::WouldBlock) => {}
            Err(fs::TryLockError::Error(e)) if locks_unsupported(&e) => {
                return Err(LockError::Unsupported(e));
            }
            Err(fs::TryLockError::Error(e)) => return Err(LockError::Io(e)),
        }
        waited();
        if started.elapsed() >= wait {
            return Err(LockError::Io(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!(
                    "another process has held the file's lock for over {} s",
                    wait.as_secs_f64()
                ),
            )));
        }
        std::thread::sleep(pause.min(wait.saturating_sub(started.elapsed())));
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// A filesystem without locks: `ENOLCK` (an NFS mount without its lock daemon) or
/// `EOPNOTSUPP`, on Linux; elsewhere what the standard library calls unsupported.
fn locks_unsupported(e: &io::Error) -> bool {
    #[cfg(target_os = "linux")]
    if matches!(e.raw_os_error(), Some(37 | 95)) {
        return true;
    }
    e.kind() == io::ErrorKind::Unsupported
}

fn unlock(file: &File, locked: bool) {
    if locked {
        let _ = file.unlock();
    }
}

/// Whether `path` still names the open file whose metadata is `open` (another process's
/// rotation renames it away).
fn names_file(path: &Path, open: &fs::Metadata) -> io::Result<bool> {
    match fs::metadata(path) {
        Ok(named) => Ok(same_file(open, &named)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Whether two metadata are of one file (where that cannot be told, they are taken to be).
fn same_file(a: &fs::Metadata, b: &fs::Metadata) -> bool {
    match (identity(a), identity(b)) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    }
}

/// A file's device and inode, where there are such.
#[cfg(unix)]
pub(crate) fn identity(metadata: &fs::Metadata) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    Some((metadata.dev(), metadata.ino()))
}

#[cfg(not(unix))]
pub(crate) fn identity(_: &fs::Metadata) -> Option<(u64, u64)> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    fn writer(path: &Path, max_file_bytes: u64) -> DeadLetterWriter {
        DeadLetterWriter::new(&DeadLetterConfig {
            path: Some(path.to_owned()),
            max_file_bytes,
            max_files: 2,
        })
    }

    /// Lines are fsynced before `write_lines` returns; a file that cannot be fsynced at all
    /// (`/dev/null`, to discard dead letters) is not a failure.
    /// It is never rotated either (renaming `/dev/null` would be a disaster as root).
    #[cfg(unix)]
    #[test]
    fn a_file_that_cannot_be_fsynced_at_all_still_takes_dead_letters() {
        let w = writer(Path::new("/dev/null"), 4);
        for _ in 0..3 {
            let failed = w.write_lines(&[b"{}\n".to_vec(), b"{}\n".to_vec()]);
            assert!(failed.is_empty(), "{failed:?}");
        }
        assert!(Path::new("/dev/null").exists());
        assert!(!Path::new("/dev/null.1").exists());
    }

    /// A failed fsync reports every line it covered as not written, in order (their events
    /// stay unsettled); a directory change whose fsync failed is synced by the next call,
    /// which finds the file already there.
    #[test]
    fn a_failed_fsync_fails_its_lines_and_the_directory_is_synced_later() {
        let dir = tempfile::tempdir().unwrap();
        let w = writer(&dir.path().join("dlq.jsonl"), 1 << 20);
        w.faults.fail_fsyncs.store(true, Ordering::Relaxed);
        let lines: Vec<Vec<u8>> = (0..3).map(|i| format!("line-{i}\n").into_bytes()).collect();
        let failed = w.write_lines(&lines);
        let indices: Vec<usize> = failed.iter().map(|(i, _)| *i).collect();
        assert_eq!(indices, [0, 1, 2]);
        assert!(
            failed[0].1.to_string().contains("fsync"),
            "{:?}",
            failed[0].1
        );
        w.faults.fail_fsyncs.store(false, Ordering::Relaxed);
        let before = w.faults.dir_syncs.load(Ordering::Relaxed);
        assert!(w.write_lines(&lines[..1]).is_empty());
        assert_eq!(w.faults.dir_syncs.load(Ordering::Relaxed), before + 1);
        // Nothing left to sync in the directory: the next call syncs only the file.
        assert!(w.write_lines(&lines[..1]).is_empty());
        assert_eq!(w.faults.dir_syncs.load(Ordering::Relaxed), before + 1);
    }

    /// Every line of `path` and its rotated files, oldest first.
    fn lines_oldest_first(path: &Path, max_files: u32) -> Vec<String> {
        let mut names: Vec<PathBuf> = (1..=max_files)
            .rev()
            .map(|n| PathBuf::from(format!("{}.{n}", path.display())))
            .collect();
        names.push(path.to_owned());
        let mut lines = Vec::new();
        for name in names {
            if let Ok(text) = fs::read_to_string(&name) {
                let size = text.len() as u64;
                assert!(
                    size <= 100,
                    "{} has {size} bytes, over the limit",
                    name.display()
                );
                lines.extend(text.lines().map(str::to_owned));
            }
        }
        lines
    }

    /// Two writers of `path` (files of 100 bytes, `max_files` kept), as two processes would be.
    fn two_writers(path: &Path, max_files: u32) -> [DeadLetterWriter; 2] {
        let config = DeadLetterConfig {
            path: Some(path.to_owned()),
            max_file_bytes: 100,
            max_files,
        };
        [
            DeadLetterWriter::new(&config),
            DeadLetterWriter::new(&config),
        ]
    }

    /// Two writers of one file, as two processes would be (a backfill beside the daemon):
    /// each rotation by one is followed by the other, which writes to the file the path names
    /// now, not to the one renamed away, so the files hold the lines in the order they were
    /// written, none past the size limit.
    #[test]
    fn a_second_writer_follows_the_first_ones_rotations() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dlq.jsonl");
        let writers = two_writers(&path, 50);
        let mut expected = Vec::new();
        for n in 0..60 {
            let line = format!("{{\"writer\":{},\"n\":{n:02}}}", n % 2);
            assert!(
                writers[n % 2]
                    .write_lines(&[format!("{line}\n").into_bytes()])
                    .is_empty()
            );
            expected.push(line);
        }
        assert_eq!(lines_oldest_first(&path, 50), expected);
    }

    /// A writer waits for another process's lock on the file; that process rotated the file
    /// meanwhile, so the line goes to the file the path names now.
    #[test]
    fn a_writer_waits_for_the_lock_and_follows_a_rotation_made_under_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dlq.jsonl");
        let rotated = dir.path().join("dlq.jsonl.1");
        fs::write(&path, "old\n").unwrap();
        let other = OpenOptions::new().append(true).open(&path).unwrap();
        other.lock().unwrap();
        let w = writer(&path, 1 << 20);
        std::thread::scope(|scope| {
            let writing = scope.spawn(|| w.write_lines(&[b"new\n".to_vec()]));
            while w.faults.lock_waits.load(Ordering::Relaxed) == 0 {
                assert!(!writing.is_finished(), "wrote without waiting for the lock");
                std::thread::yield_now();
            }
            fs::rename(&path, &rotated).unwrap();
            other.unlock().unwrap();
            let failed = writing.join().unwrap();
            assert!(failed.is_empty(), "{failed:?}");
        });
        assert_eq!(fs::read_to_string(&rotated).unwrap(), "old\n");
        assert_eq!(fs::read_to_string(&path).unwrap(), "new\n");
    }

    /// A lock another process holds past the wait fails the caller (bounded, never for ever);
    /// once given up, it is taken.
    #[test]
    fn a_lock_held_past_the_wait_fails_and_one_given_up_is_taken() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shared.jsonl");
        fs::write(&path, "").unwrap();
        let holder = File::open(&path).unwrap();
        holder.lock().unwrap();
        let file = File::open(&path).unwrap();
        let mut misses = 0;
        match lock_shared_file(&file, Duration::from_millis(30), || misses += 1) {
            Err(LockError::Io(e)) => assert_eq!(e.kind(), io::ErrorKind::WouldBlock, "{e}"),
            other => panic!("{other:?}"),
        }
        assert!(misses >= 1);
        holder.unlock().unwrap();
        assert!(matches!(
            lock_shared_file(&file, Duration::from_millis(30), || {}),
            Ok(true)
        ));
    }

    /// Two writers of one file at once: every line lands whole, exactly once.
    #[test]
    fn two_writers_at_once_keep_every_line_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dlq.jsonl");
        let writers = two_writers(&path, 200);
        std::thread::scope(|scope| {
            for (id, w) in writers.iter().enumerate() {
                scope.spawn(move || {
                    for call in 0..50 {
                        let lines: Vec<Vec<u8>> = (0..3)
                            .map(|k| {
                                format!("{{\"writer\":{id},\"n\":{:03}}}\n", call * 3 + k)
                                    .into_bytes()
                            })
                            .collect();
                        assert!(w.write_lines(&lines).is_empty());
                    }
                });
            }
        });
        let mut seen = lines_oldest_first(&path, 200);
        seen.sort();
        let mut expected: Vec<String> = (0..2)
            .flat_map(|id| (0..150).map(move |n| format!("{{\"writer\":{id},\"n\":{n:03}}}")))
            .collect();
        expected.sort();
        assert_eq!(seen, expected);
    }

    /// Across a rotation in the middle of one call, every line lands once, in order.
    #[test]
    fn lines_written_across_a_rotation_are_all_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dlq.jsonl");
        let w = writer(&path, 10);
        let lines: Vec<Vec<u8>> = (0..3).map(|i| format!("line-{i}\n").into_bytes()).collect();
        assert!(w.write_lines(&lines).is_empty());
        let older = fs::read_to_string(dir.path().join("dlq.jsonl.2")).unwrap();
        let old = fs::read_to_string(dir.path().join("dlq.jsonl.1")).unwrap();
        let current = fs::read_to_string(&path).unwrap();
        assert_eq!(format!("{older}{old}{current}"), "line-0\nline-1\nline-2\n");
    }
}
