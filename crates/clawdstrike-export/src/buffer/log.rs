//! The write-ahead log: segment files, per-record settlement counts, the byte bound, the
//! acknowledgement file, and the background fsync.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use tokio::sync::Notify;

use super::config::{DiskBufferConfig, FsyncPolicy};
use super::frame::{self, ScanDamage};
use crate::config::WhenFull;
use crate::exporter::Record;

const SEGMENT_EXT: &str = "wal";
/// A segment in which no record was valid is renamed to this extension, not deleted.
const CORRUPT_EXT: &str = "corrupt";
const ACK_FILE: &str = "ack";
const ACK_MAGIC: &[u8; 8] = b"CLWBACK2";
/// How often the acknowledgement file is rewritten (when something settled) under the `always`
/// and `never` policies; `interval_ms` uses its own interval.
const ACK_INTERVAL: Duration = Duration::from_millis(1000);
/// How long `close` waits for submits under way (a task that is never polled again must not
/// hold the shutdown forever).
const CLOSE_WAIT: Duration = Duration::from_secs(5);
/// Held (an advisory lock) while the log is open: two processes on one directory would
/// overwrite each other's acknowledgement file and so lose records.
const LOCK_FILE: &str = "lock";
/// Keeps the records whose checksum holds but which no longer decode as an event, one JSON
/// line each, with the reason.
pub(super) const UNDECODABLE_FILE: &str = "undecodable.ndjson";

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One segment file and what is still owed on its records.
#[derive(Debug)]
struct Segment {
    id: u64,
    first_seq: u64,
    /// Settlements still expected per record (`seq - first_seq`); 0 = settled (or never a
    /// record: a gap left by a corrupt frame).
    counts: Vec<u8>,
    unsettled: usize,
    bytes: u64,
    /// The segment being appended to (always the last one).
    active: bool,
}

#[derive(Debug)]
struct State {
    segments: VecDeque<Segment>,
    /// Segments evicted by `drop_oldest` (their files deleted) whose records are not all settled
    /// yet: the pipeline still holds some of them and delivers them. What is still unsettled
    /// when the log closes, or in a segment the replay could no longer read, is lost.
    evicted: VecDeque<Segment>,
    /// The active segment's file.
    file: Option<Arc<File>>,
    next_seq: u64,
    next_segment_id: u64,
    disk_bytes: u64,
    /// Appended since the last fsync.
    dirty: bool,
    /// Settled since the last acknowledgement file.
    acks_dirty: bool,
    closed: bool,
    /// The last acknowledgement file is written (at close): later settlements are ignored.
    acks_final: bool,
    scratch: Vec<u8>,
    /// Under `always`: no record below this needs an fsync any more. It was covered by one
    /// that succeeded, or by one that failed (then it is in `sync_failed`), or it left the disk
    /// (evicted, or settled). Every record at or above it is in the active file: whatever
    /// closes that file resolves them first.
    synced_below: u64,
    /// Under `always`: records whose fsync failed, until each one's appender has heard so.
    sync_failed: Vec<FailedSync>,
    /// Under `always`: unresolved records whose appender stopped waiting (cancelled).
    gave_up: Vec<u64>,
    /// Records the replay found undecodable and could not keep aside: never submitted, so
    /// never settled. They stay in the log for the next start, unless `drop_oldest` evicts
    /// them (then they are lost and counted in `dropped_oldest`).
    not_kept: Vec<u64>,
    /// Segments the replay could not read: none of their records was submitted, though later
    /// segments' were. They stay for the next start, unless `drop_oldest` evicts them (then
    /// their records are lost and counted in `dropped_oldest`).
    not_replayed: Vec<u64>,
}

/// Under `always`: a run of records an fsync failed to cover.
#[derive(Debug)]
struct FailedSync {
    from: u64,
    to: u64,
    /// Appenders in the run not yet told.
    waiting: u64,
    kind: io::ErrorKind,
    message: String,
}

/// Counters, read by [`Log::stats`].
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) appended: AtomicU64,
    pub(super) settled: AtomicU64,
    pub(super) abandoned: AtomicU64,
    pub(super) dropped_newest: AtomicU64,
    pub(super) dropped_oldest: AtomicU64,
    pub(super) evicted: AtomicU64,
    pub(super) evicted_left_behind: AtomicU64,
    pub(super) write_errors: AtomicU64,
    pub(super) replayed: AtomicU64,
    pub(super) corrupt_records: AtomicU64,
    pub(super) corrupt_bytes: AtomicU64,
    pub(super) torn_tail_bytes: AtomicU64,
    pub(super) segments_deleted: AtomicU64,
    pub(super) fsyncs: AtomicU64,
    pub(super) undecodable: AtomicU64,
}

/// Why an append did not take the record.
#[derive(Debug)]
pub(super) enum AppendError {
    Closed,
    TooLarge(u64),
    Io(io::Error),
}

/// What an append did.
#[derive(Debug)]
pub(super) enum Appended {
    /// Written as this sequence number.
    Seq(u64),
    /// Dropped by `drop_newest`.
    Dropped,
}

/// Frees an appended record whose submit did not complete (refused or cancelled).
pub(super) struct Abandon<'a> {
    pub(super) log: &'a Log,
    pub(super) seq: Option<u64>,
}

impl Drop for Abandon<'_> {
    fn drop(&mut self) {
        if let Some(seq) = self.seq {
            self.log.abandon(seq);
        }
    }
}

/// Under `always`: an appender cancelled while it waits for its fsync frees its record and
/// stops counting as one to tell.
struct GiveUp<'a> {
    log: &'a Log,
    seq: Option<u64>,
}

impl Drop for GiveUp<'_> {
    fn drop(&mut self) {
        if let Some(seq) = self.seq {
            self.log.give_up(seq);
        }
    }
}

/// A submit under way, from before its append to after its record is handed over or freed.
pub(super) struct InFlight<'a>(&'a Log);

impl<'a> InFlight<'a> {
    pub(super) fn new(log: &'a Log) -> Self {
        *lock(&log.submitting) += 1;
        Self(log)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut n = lock(&self.0.submitting);
        *n -= 1;
        if *n == 0 {
            self.0.submits_done.notify_all();
        }
    }
}

/// A segment found at open, to replay.
#[derive(Debug)]
pub(super) struct FoundSegment {
    pub(super) id: u64,
    pub(super) path: PathBuf,
    pub(super) pending: usize,
    /// The previous segment's last plausible sequence number (see [`plausible`]).
    pub(super) previous_last: Option<u64>,
}

/// What [`Log::open`] found on disk.
#[derive(Debug, Default)]
pub(super) struct Found {
    pub(super) segments: Vec<FoundSegment>,
    pub(super) damage: ScanDamage,
    pub(super) already_acknowledged: u64,
    pub(super) ack_file_valid: bool,
}

#[derive(Debug)]
pub(super) struct Log {
    dir: PathBuf,
    pub(super) max_bytes: u64,
    segment_bytes: u64,
    fsync: FsyncPolicy,
    when_full: WhenFull,
    exporters: AtomicUsize,
    state: Mutex<State>,
    /// Signalled when room may have appeared (a segment deleted or fully settled) or on close.
    space: Notify,
    pub(super) counters: Counters,
    stop_sync: AtomicBool,
    /// An fsync of a segment failed. Sticky: the kernel may have dropped the data and marked
    /// it clean, so a later fsync of the same file could succeed without it being on disk.
    pub(super) fsync_failed: AtomicBool,
    /// The first sequence number of this run: records below it were found at open and reach
    /// the pipeline only through the replay.
    first_new_seq: u64,
    /// One past the last sequence number the replay handed to the pipeline (0: none yet).
    pub(super) replayed_through: AtomicU64,
    /// One `sync` at a time (the background thread and `close` share `ack.tmp`).
    syncing: Mutex<()>,
    /// Under `always`: appenders waiting for an fsync wake the group-commit thread here...
    commits: Arc<CommitInbox>,
    /// ...and it wakes them here after each fsync.
    committed: Notify,
    /// Files whose fsync failed (see `fsync_segment`); held while an fsync runs.
    failed_files: Mutex<Vec<Weak<File>>>,
    /// Submits under way (`InFlight`): `close` waits for them, so a record an appender frees
    /// after the shutdown began still makes the last acknowledgement file.
    submitting: Mutex<usize>,
    submits_done: Condvar,
    /// Tests: every data fsync fails.
    #[cfg(test)]
    fail_fsyncs: AtomicBool,
    /// The directory's lock, released at close (tasks stuck past the shutdown deadline may keep
    /// the log alive, and must not keep the directory from being opened again).
    dir_lock: Mutex<Option<File>>,
}

/// The acknowledgement file: every seq below `watermark` is settled, and so is every seq in
/// `ranges` (half-open, sorted). `next_seq` is the next sequence number to assign: kept so
/// that a number is never reused, or a stale `ack` file could mark a new record settled.
#[derive(Debug, Default)]
struct Acks {
    watermark: u64,
    next_seq: u64,
    ranges: Vec<(u64, u64)>,
}

impl Acks {
    fn contains(&self, seq: u64) -> bool {
        if seq < self.watermark {
            return true;
        }
        let i = self.ranges.partition_point(|&(start, _)| start <= seq);
        i > 0 && seq < self.ranges[i - 1].1
    }

    fn read(path: &Path) -> Option<Acks> {
        let data = fs::read(path).ok()?;
        let (body, crc) = data.split_at_checked(data.len().checked_sub(4)?)?;
        if crc32fast::hash(body).to_le_bytes() != crc || !body.starts_with(ACK_MAGIC) {
            return None;
        }
        let u64_at = |p: usize| {
            body.get(p..p + 8)
                .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
        };
        let watermark = u64_at(8)?;
        let next_seq = u64_at(16)?;
        let n = u64_at(24)? as usize;
        let mut ranges = Vec::with_capacity(n.min(1 << 20));
        for i in 0..n {
            ranges.push((u64_at(32 + 16 * i)?, u64_at(40 + 16 * i)?));
        }
        Some(Acks {
            watermark,
            next_seq,
            ranges,
        })
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(36 + 16 * self.ranges.len());
        out.extend_from_slice(ACK_MAGIC);
        out.extend_from_slice(&self.watermark.to_le_bytes());
        out.extend_from_slice(&self.next_seq.to_le_bytes());
        out.extend_from_slice(&(self.ranges.len() as u64).to_le_bytes());
        for (start, end) in &self.ranges {
            out.extend_from_slice(&start.to_le_bytes());
            out.extend_from_slice(&end.to_le_bytes());
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.{SEGMENT_EXT}"))
}

/// The ids of the files `<id>.<extension>` in `dir`, named as [`segment_path`] names them (20
/// digits). Any other file with that extension (`1.wal`, `copy.wal`) is not the log's: it is
/// left alone, with a warning, rather than read under another file's name.
fn ids_with_extension(dir: &Path, extension: &str) -> io::Result<Vec<u64>> {
    Ok(fs::read_dir(dir)?
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            if path.extension()? != extension {
                return None;
            }
            let id = path
                .file_stem()
                .and_then(|stem| stem.to_str())
                .filter(|stem| stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|stem| stem.parse::<u64>().ok());
            if id.is_none() {
                tracing::warn!(file = %path.display(), "not a buffer file name; left alone");
            }
            id
        })
        .collect())
}

/// An fsync's result, where a file or directory that cannot be fsynced at all (`EINVAL`:
/// `/dev/null`, some filesystems' directories; unsupported) has nothing to make durable.
pub(crate) fn unsyncable_is_ok(synced: io::Result<()>) -> io::Result<()> {
    match synced {
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::InvalidInput | io::ErrorKind::Unsupported
            ) =>
        {
            Ok(())
        }
        synced => synced,
    }
}

/// Fsyncs `dir`, so that the files created or renamed in it survive a power loss. Where a
/// directory cannot be fsynced at all (not Unix; a filesystem answering `EINVAL`), there is
/// nothing to do.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        unsyncable_is_ok(File::open(dir)?.sync_all())
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// Where `seq` is among `segments` (sorted by sequence number): the segment's index and the
/// record's offset in it.
fn position(segments: &VecDeque<Segment>, seq: u64) -> Option<(usize, usize)> {
    let i = segments.partition_point(|s| s.first_seq <= seq);
    let index = i.checked_sub(1)?;
    let offset = usize::try_from(seq - segments[index].first_seq).ok()?;
    (offset < segments[index].counts.len()).then_some((index, offset))
}

impl State {
    /// Under `always`: the records below `upto` need no more fsync; `failure` says the one
    /// that covered them failed.
    fn resolve(&mut self, upto: u64, failure: Option<&io::Error>) {
        if upto <= self.synced_below {
            return;
        }
        let before = self.gave_up.len() as u64;
        self.gave_up.retain(|&seq| seq >= upto);
        let waiting = upto - self.synced_below - (before - self.gave_up.len() as u64);
        if let Some(e) = failure
            && waiting > 0
        {
            self.sync_failed.push(FailedSync {
                from: self.synced_below,
                to: upto,
                waiting,
                kind: e.kind(),
                message: e.to_string(),
            });
        }
        self.synced_below = upto;
    }

    /// Under `always`: whether record `seq` is on stable storage, once that is known. Each
    /// appender asks once; a failure is handed out as often as the run has records.
    fn outcome(&mut self, seq: u64) -> Option<io::Result<()>> {
        if seq >= self.synced_below {
            return None;
        }
        let Some(i) = self
            .sync_failed
            .iter()
            .position(|f| (f.from..f.to).contains(&seq))
        else {
            return Some(Ok(()));
        };
        let failed = &mut self.sync_failed[i];
        let error = io::Error::new(failed.kind, failed.message.clone());
        failed.waiting -= 1;
        if failed.waiting == 0 {
            self.sync_failed.swap_remove(i);
        }
        Some(Err(error))
    }

    /// The segment holding `seq`, on disk or evicted (then `true`), and the record's offset.
    fn locate(&mut self, seq: u64) -> Option<(&mut Segment, usize, bool)> {
        if let Some((i, o)) = position(&self.segments, seq) {
            return Some((&mut self.segments[i], o, false));
        }
        let (i, o) = position(&self.evicted, seq)?;
        Some((&mut self.evicted[i], o, true))
    }

    fn acks(&self) -> Acks {
        let mut acks = Acks {
            watermark: self.next_seq,
            next_seq: self.next_seq,
            ranges: Vec::new(),
        };
        let mut found_pending = false;
        let mut run: Option<(u64, u64)> = None;
        for segment in &self.segments {
            for (offset, &count) in segment.counts.iter().enumerate() {
                let seq = segment.first_seq + offset as u64;
                if count > 0 {
                    if !found_pending {
                        found_pending = true;
                        acks.watermark = seq;
                    }
                    if let Some(r) = run.take() {
                        acks.ranges.push(r);
                    }
                } else if found_pending {
                    run = match run {
                        Some((start, end)) if end == seq => Some((start, seq + 1)),
                        Some(r) => {
                            acks.ranges.push(r);
                            Some((seq, seq + 1))
                        }
                        None => Some((seq, seq + 1)),
                    };
                }
            }
        }
        if let Some(r) = run {
            acks.ranges.push(r);
        }
        acks
    }
}

/// The frames of one segment whose sequence numbers can be this log's: after the previous
/// segment's, increasing through the file, no further apart than the file has room for, and
/// never the last number. The others (a CRC-valid frame from another buffer, say) are counted
/// as corrupt: numbers read from disk must not crash the reader, size an allocation, or make a
/// segment look settled.
pub(super) fn plausible<'a>(
    frames: Vec<frame::Frame<'a>>,
    previous_last: Option<u64>,
    file_len: usize,
    damage: &mut ScanDamage,
) -> Vec<frame::Frame<'a>> {
    let max_span = (file_len / frame::MIN_FRAME) as u64;
    // Damaged stretches the scan skipped (each at least one record).
    let stretches = damage.corrupt_records;
    let mut kept: Vec<frame::Frame<'a>> = Vec::with_capacity(frames.len());
    for f in frames {
        let ok = f.seq != u64::MAX
            && previous_last.is_none_or(|p| f.seq > p)
            && kept.last().is_none_or(|k| f.seq > k.seq)
            && kept.first().is_none_or(|k| f.seq - k.seq < max_span);
        if ok {
            kept.push(f);
        } else {
            damage.corrupt_records += 1;
            damage.corrupt_bytes += f.encoded_len() as u64;
        }
    }
    // Numbers run without gaps through a segment (a failed write ends its segment without
    // using a number), so the numbers missing between valid records say how many records the
    // stretches held.
    let missing: u64 = kept.windows(2).map(|w| w[1].seq - w[0].seq - 1).sum();
    damage.corrupt_records += missing.saturating_sub(stretches);
    kept
}

impl Log {
    /// Opens (creating) the directory, reads the acknowledgement file and scans every segment:
    /// what is already settled is deleted, what is not is kept for replay.
    pub(super) fn open(config: &DiskBufferConfig) -> io::Result<(Arc<Log>, Found)> {
        if !config.path.is_dir() {
            // The levels about to be created, deepest first.
            let mut created = Vec::new();
            let mut level = config.path.as_path();
            while !level.exists() {
                created.push(level.to_path_buf());
                match level.parent() {
                    Some(parent) if !parent.as_os_str().is_empty() => level = parent,
                    _ => break,
                }
            }
            fs::create_dir_all(&config.path)?;
            // Each new directory's entry in its parent, so that the buffer directory survives
            // a power loss: under `always` that is part of nothing being lost.
            if config.fsync != FsyncPolicy::Never {
                for dir in created.iter().rev() {
                    let parent = dir
                        .parent()
                        .filter(|p| !p.as_os_str().is_empty())
                        .unwrap_or(Path::new("."));
                    let synced = sync_dir(parent);
                    if config.fsync == FsyncPolicy::Always {
                        synced?;
                    }
                }
            }
        }
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(config.path.join(LOCK_FILE))?;
        match lock_file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!(
                        "the buffer directory {} is in use by another process",
                        config.path.display()
                    ),
                ));
            }
            Err(fs::TryLockError::Error(e)) => return Err(e),
        }
        let acks = Acks::read(&config.path.join(ACK_FILE));
        let mut found = Found {
            ack_file_valid: acks.is_some(),
            ..Found::default()
        };
        let acks = acks.unwrap_or_default();
        let mut ids = ids_with_extension(&config.path, SEGMENT_EXT)?;
        // Segments kept aside as corrupt keep their ids: a new segment must not be renamed
        // over one of them later.
        let corrupt_after = ids_with_extension(&config.path, CORRUPT_EXT)?
            .into_iter()
            .max()
            .map_or(0, |id| id.saturating_add(1));
        ids.sort_unstable();
        let mut state = State {
            segments: VecDeque::new(),
            evicted: VecDeque::new(),
            file: None,
            next_seq: acks.watermark.max(acks.next_seq),
            next_segment_id: corrupt_after,
            disk_bytes: 0,
            dirty: false,
            acks_dirty: false,
            closed: false,
            acks_final: false,
            not_kept: Vec::new(),
            not_replayed: Vec::new(),
            scratch: Vec::with_capacity(4096),
            synced_below: 0,
            sync_failed: Vec::new(),
            gave_up: Vec::new(),
        };
        let mut previous_last = None;
        for id in ids {
            let path = segment_path(&config.path, id);
            state.next_segment_id = state.next_segment_id.max(id.saturating_add(1));
            let data = fs::read(&path)?;
            let (frames, mut damage) = frame::scan(&data);
            let after = previous_last;
            let frames = plausible(frames, after, data.len(), &mut damage);
            found.damage.corrupt_records += damage.corrupt_records;
            found.damage.corrupt_bytes += damage.corrupt_bytes;
            found.damage.torn_tail_bytes += damage.torn_tail_bytes;
            let (Some(first), Some(last)) = (
                frames.iter().map(|f| f.seq).min(),
                frames.iter().map(|f| f.seq).max(),
            ) else {
                if data.is_empty() || frame::is_torn_first_frame(&data) {
                    // An ordinary crash during the segment's first write.
                    let _ = fs::remove_file(&path);
                } else {
                    // Not one valid record: keep the bytes for whoever investigates, out of
                    // the log's way (and outside `max_bytes`).
                    let kept = path.with_extension(CORRUPT_EXT);
                    match fs::rename(&path, &kept) {
                        Ok(()) => tracing::warn!(
                            file = %kept.display(),
                            bytes = data.len(),
                            "a buffer segment holds no valid record; kept aside"
                        ),
                        Err(e) => tracing::warn!(
                            file = %path.display(),
                            error = %e,
                            "a buffer segment holds no valid record and cannot be renamed"
                        ),
                    }
                }
                continue;
            };
            previous_last = Some(last);
            state.next_seq = state.next_seq.max(last + 1);
            let mut segment = Segment {
                id,
                first_seq: first,
                counts: vec![0; usize::try_from(last - first + 1).unwrap_or(0)],
                unsettled: 0,
                bytes: data.len() as u64,
                active: false,
            };
            for f in &frames {
                if acks.contains(f.seq) {
                    found.already_acknowledged += 1;
                } else if let Some(count) = segment.counts.get_mut((f.seq - first) as usize)
                    && *count == 0
                {
                    *count = u8::MAX; // set to the exporter count once the pipeline exists
                    segment.unsettled += 1;
                }
            }
            if segment.unsettled == 0 {
                let _ = fs::remove_file(&path);
                continue;
            }
            found.segments.push(FoundSegment {
                id,
                path,
                pending: segment.unsettled,
                previous_last: after,
            });
            state.disk_bytes += segment.bytes;
            state.segments.push_back(segment);
        }
        let first_new_seq = state.next_seq;
        state.synced_below = first_new_seq;
        let commits = Arc::new(CommitInbox::default());
        let log = Arc::new(Log {
            dir: config.path.clone(),
            max_bytes: config.max_bytes,
            segment_bytes: config.segment_bytes,
            fsync: config.fsync,
            when_full: config.when_full,
            exporters: AtomicUsize::new(1),
            state: Mutex::new(state),
            space: Notify::new(),
            counters: Counters::default(),
            stop_sync: AtomicBool::new(false),
            fsync_failed: AtomicBool::new(false),
            first_new_seq,
            replayed_through: AtomicU64::new(0),
            syncing: Mutex::new(()),
            commits: Arc::clone(&commits),
            committed: Notify::new(),
            failed_files: Mutex::new(Vec::new()),
            submitting: Mutex::new(0),
            submits_done: Condvar::new(),
            #[cfg(test)]
            fail_fsyncs: AtomicBool::new(false),
            dir_lock: Mutex::new(Some(lock_file)),
        });
        let c = &log.counters;
        c.corrupt_records
            .store(found.damage.corrupt_records, Ordering::Relaxed);
        c.corrupt_bytes
            .store(found.damage.corrupt_bytes, Ordering::Relaxed);
        c.torn_tail_bytes
            .store(found.damage.torn_tail_bytes, Ordering::Relaxed);
        // The background thread fsyncs (under `interval_ms`) and, whatever the policy, keeps
        // the acknowledgement file recent, so a crash replays only what was settled since.
        let every = match config.fsync {
            FsyncPolicy::Interval(every) => every,
            FsyncPolicy::Always | FsyncPolicy::Never => ACK_INTERVAL,
        };
        spawn_syncer(Arc::downgrade(&log), every);
        if config.fsync == FsyncPolicy::Always {
            spawn_committer(Arc::downgrade(&log), commits)?;
        }
        Ok((log, found))
    }

    /// Sets how many settlements each record waits for (the pipeline's exporter count), and
    /// applies it to the records found at open.
    pub(super) fn set_exporters(&self, n: usize) {
        let n = n.clamp(1, usize::from(u8::MAX - 1));
        self.exporters.store(n, Ordering::Relaxed);
        let mut st = lock(&self.state);
        for segment in &mut st.segments {
            for count in &mut segment.counts {
                if *count == u8::MAX {
                    *count = n as u8;
                }
            }
        }
    }

    fn exporters(&self) -> u8 {
        self.exporters.load(Ordering::Relaxed) as u8
    }

    /// True if `seq` still waits for its first settlement (not yet submitted, not dropped).
    /// A record evicted after the replay read its segment still is: the replay has it.
    pub(super) fn is_pending(&self, seq: u64) -> bool {
        let n = self.exporters();
        let mut st = lock(&self.state);
        st.locate(seq)
            .is_some_and(|(segment, o, _)| segment.counts[o] == n)
    }

    /// The replay could not read segment `id`: evicted before its turn, so its records never
    /// reached the pipeline. They are lost to `drop_oldest`.
    pub(super) fn lost_before_replay(&self, id: u64) {
        let mut st = lock(&self.state);
        let mut lost = 0;
        st.evicted.retain(|s| {
            if s.id == id {
                lost += s.unsettled as u64;
            }
            s.id != id
        });
        self.counters
            .dropped_oldest
            .fetch_add(lost, Ordering::Relaxed);
    }

    /// Appends `record`, waiting for room under `block`, and under `always` for an fsync that
    /// covers it.
    pub(super) async fn append(&self, record: &Record) -> Result<Appended, AppendError> {
        match self.write_record(record).await {
            Ok(Appended::Seq(seq)) if self.waits_for_fsync() => self.durable(seq).await,
            other => other,
        }
    }

    /// Whether an appended record is durable only once the group commit fsynced it (`always`):
    /// then [`durable`](Self::durable) must be awaited for it, or [`give_up`](Self::give_up)
    /// called.
    pub(super) fn waits_for_fsync(&self) -> bool {
        self.fsync == FsyncPolicy::Always
    }

    /// [`append`](Self::append) without the wait for the fsync under `always`: the record is
    /// written (to the operating system), not yet durable.
    pub(super) async fn write_record(&self, record: &Record) -> Result<Appended, AppendError> {
        let mut json = Vec::with_capacity(1024);
        record.event.write_json(&mut json);
        let frame_len = frame::frame_len(record.trace.is_some(), json.len()) as u64;
        // Larger than the buffer, or than the reader accepts back (it would replay as corrupt).
        if frame_len > self.max_bytes || json.len() > frame::MAX_EVENT_JSON {
            return Err(AppendError::TooLarge(frame_len));
        }
        loop {
            let notified = self.space.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            let mut to_delete = Vec::new();
            let outcome = {
                let mut st = lock(&self.state);
                if st.closed {
                    Some(Err(AppendError::Closed))
                } else {
                    if st.disk_bytes + frame_len > self.max_bytes {
                        // Fully settled segments only wait to be deleted: free them. An
                        // inactive one may be left by a failed write or fsync, with no later
                        // settlement or roll to collect it; the active one waits to be rolled.
                        self.collect_settled(&mut st, &mut to_delete);
                        self.reclaim_active(&mut st, &mut to_delete);
                    }
                    if st.disk_bytes + frame_len <= self.max_bytes {
                        Some(self.write(&mut st, record, &json, frame_len, &mut to_delete))
                    } else {
                        match self.when_full {
                            WhenFull::Block => None,
                            WhenFull::DropNewest => {
                                self.counters.dropped_newest.fetch_add(1, Ordering::Relaxed);
                                Some(Ok(Appended::Dropped))
                            }
                            WhenFull::DropOldest => {
                                while st.disk_bytes + frame_len > self.max_bytes
                                    && self.evict_oldest(&mut st, &mut to_delete)
                                {
                                }
                                Some(self.write(&mut st, record, &json, frame_len, &mut to_delete))
                            }
                        }
                    }
                }
            };
            self.delete(to_delete);
            match outcome {
                Some(result) => return result,
                None => notified.await,
            }
        }
    }

    /// Under `always`: waits until record `seq` is on stable storage (the group-commit thread
    /// fsyncs for every appender waiting), then counts it appended. If the fsync failed, the
    /// record is freed (the acknowledgement file keeps it from being replayed behind the
    /// producer's back) and the error returned.
    pub(super) async fn durable(&self, seq: u64) -> Result<Appended, AppendError> {
        // Cancelled while waiting: written, but never handed over; and no one will ask for its
        // outcome.
        let mut cancelled = GiveUp {
            log: self,
            seq: Some(seq),
        };
        self.wait_synced(seq).await;
        cancelled.seq = None;
        self.take_outcome(seq)
            .map(|()| Appended::Seq(seq))
            .map_err(AppendError::Io)
    }

    /// Under `always`: waits until an fsync covered record `seq` (and so every record before
    /// it), asking the group commit for one, without taking the outcome: cancel-safe.
    pub(super) async fn wait_synced(&self, seq: u64) {
        loop {
            let notified = self.committed.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if seq < lock(&self.state).synced_below {
                return;
            }
            self.commits.request();
            notified.await;
        }
    }

    /// Under `always`, once [`wait_synced`](Self::wait_synced) covered record `seq`: takes its
    /// outcome, once. Synced, it counts as appended; otherwise it is freed, and the error
    /// returned.
    pub(super) fn take_outcome(&self, seq: u64) -> io::Result<()> {
        let Some(outcome) = lock(&self.state).outcome(seq) else {
            // Not covered yet (not expected): given up, as if cancelled.
            self.give_up(seq);
            return Err(io::Error::other("the record's fsync has not happened yet"));
        };
        match outcome {
            Ok(()) => {
                self.counters.appended.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                self.counters.write_errors.fetch_add(1, Ordering::Relaxed);
                self.abandon(seq);
                Err(e)
            }
        }
    }

    /// Under `always`: a record written by [`write_record`](Self::write_record) whose fsync
    /// will not be waited for is freed, and no longer counted as one whose outcome is to be
    /// told.
    pub(super) fn give_up(&self, seq: u64) {
        {
            let mut st = lock(&self.state);
            if st.outcome(seq).is_none() {
                st.gave_up.push(seq);
            }
        }
        self.abandon(seq);
    }

    /// Under `always`, on the group-commit thread: one fsync of the active file covers every
    /// record written to it and not yet covered, however many appenders wait for them.
    fn commit_pending(&self) {
        let (file, upto) = {
            let mut st = lock(&self.state);
            if st.synced_below >= st.next_seq {
                return;
            }
            if let Some(file) = st.file.clone() {
                (file, st.next_seq)
            } else {
                // Not expected: whatever closes the active file resolves its records first.
                let e = io::Error::other("the buffer segment was closed before its fsync");
                let upto = st.next_seq;
                st.resolve(upto, Some(&e));
                return;
            }
        };
        let synced = self.fsync_segment(&file);
        let mut st = lock(&self.state);
        let mut upto = upto;
        if let Err(e) = &synced {
            self.fsync_failed.store(true, Ordering::Relaxed);
            tracing::error!(error = %e, "fsync of a buffer segment failed; the events it covered are refused");
            if st.file.as_ref().is_some_and(|f| Arc::ptr_eq(f, &file)) {
                // Not retried, and nothing more goes to this file: what was written to it after
                // `upto` is no safer (see `sync`).
                st.file = None;
                if let Some(segment) = st.segments.back_mut() {
                    segment.active = false;
                }
                upto = st.next_seq;
            }
        }
        st.resolve(upto, synced.as_ref().err());
    }

    /// Under `always`: the records in the active file need no fsync of it any more (it is
    /// being closed); `failure` says why they are not durable.
    fn resolve_active(&self, st: &mut State, failure: Option<&io::Error>) {
        if self.fsync == FsyncPolicy::Always {
            let upto = st.next_seq;
            st.resolve(upto, failure);
        }
    }

    /// One fsync of a segment's data, counted. Fsyncs take turns, and a file whose fsync
    /// failed fails every later one: the kernel reports a writeback error once, so a second
    /// fsync of the same file (from `roll` racing the commit thread, say) could succeed without
    /// the data.
    fn fsync_segment(&self, file: &Arc<File>) -> io::Result<()> {
        let mut failed = lock(&self.failed_files);
        failed.retain(|f| f.strong_count() > 0);
        if failed
            .iter()
            .any(|f| std::ptr::eq(f.as_ptr(), Arc::as_ptr(file)))
        {
            return Err(io::Error::other(
                "an earlier fsync of this buffer segment failed",
            ));
        }
        self.counters.fsyncs.fetch_add(1, Ordering::Relaxed);
        #[cfg(test)]
        let synced = if self.fail_fsyncs.load(Ordering::Relaxed) {
            Err(io::Error::other("injected fsync failure"))
        } else {
            file.sync_data()
        };
        #[cfg(not(test))]
        let synced = file.sync_data();
        if synced.is_err() {
            failed.push(Arc::downgrade(file));
        }
        synced
    }

    fn write(
        &self,
        st: &mut State,
        record: &Record,
        json: &[u8],
        frame_len: u64,
        to_delete: &mut Vec<u64>,
    ) -> Result<Appended, AppendError> {
        let roll =
            st.segments.back().is_none_or(|s| {
                !s.active || (s.bytes > 0 && s.bytes + frame_len > self.segment_bytes)
            }) || st.file.is_none();
        if roll {
            self.roll(st, to_delete).map_err(|e| {
                self.counters.write_errors.fetch_add(1, Ordering::Relaxed);
                AppendError::Io(e)
            })?;
        }
        let seq = st.next_seq;
        let mut buf = std::mem::take(&mut st.scratch);
        buf.clear();
        frame::encode(&mut buf, seq, record.trace, json);
        let file = st.file.clone();
        let written = match &file {
            Some(file) => (&**file).write_all(&buf),
            None => Err(io::Error::other("no active segment")),
        };
        st.scratch = buf;
        if let Err(e) = written {
            // The segment may end in a partial frame: never append after it.
            self.counters.write_errors.fetch_add(1, Ordering::Relaxed);
            // Under `interval_ms`, what was written to it since the last fsync must not lose
            // its turn when it is let go: the syncer (and `roll`) only sync the active file.
            if matches!(self.fsync, FsyncPolicy::Interval(_))
                && st.dirty
                && let Some(file) = &file
            {
                if let Err(e) = self.fsync_segment(file) {
                    // As in `sync`: sticky, so the follow checkpoint stops trusting the buffer.
                    self.fsync_failed.store(true, Ordering::Relaxed);
                    tracing::error!(error = %e, "fsync of a buffer segment failed; its records may not survive a power loss");
                }
                st.dirty = false;
            }
            self.resolve_active(st, Some(&e));
            st.file = None;
            if let Some(s) = st.segments.back_mut() {
                s.active = false;
                s.bytes += frame_len; // an upper bound of what reached the file
            }
            st.disk_bytes += frame_len;
            return Err(AppendError::Io(e));
        }
        st.next_seq += 1;
        let n = self.exporters();
        let Some(segment) = st.segments.back_mut() else {
            return Err(AppendError::Io(io::Error::other("no active segment")));
        };
        if segment.counts.is_empty() {
            segment.first_seq = seq;
        }
        segment.counts.push(n);
        segment.unsettled += 1;
        segment.bytes += frame_len;
        st.disk_bytes += frame_len;
        st.dirty = true;
        // Under `always` the record counts as appended once an fsync covers it (`durable`).
        if self.fsync != FsyncPolicy::Always {
            self.counters.appended.fetch_add(1, Ordering::Relaxed);
        }
        Ok(Appended::Seq(seq))
    }

    /// Fsyncs the log's directory (failing on purpose in tests that ask for fsync failures).
    fn sync_dir(&self) -> io::Result<()> {
        #[cfg(test)]
        if self.fail_fsyncs.load(Ordering::Relaxed) {
            return Err(io::Error::other("injected directory fsync failure"));
        }
        sync_dir(&self.dir)
    }

    /// Closes the active segment (deleting it if fully settled) and starts a new one.
    fn roll(&self, st: &mut State, to_delete: &mut Vec<u64>) -> io::Result<()> {
        // What was appended since the last fsync must not lose its turn: the syncer (and under
        // `always` the group fsync) only ever syncs the active file.
        let unsynced = match self.fsync {
            FsyncPolicy::Always => st.synced_below < st.next_seq,
            FsyncPolicy::Interval(_) => st.dirty,
            FsyncPolicy::Never => false,
        };
        if unsynced {
            // Whatever lets the active file go first fsyncs what it holds, or says it failed.
            debug_assert!(
                st.file.is_some() || self.fsync_failed.load(Ordering::Relaxed),
                "unsynced records in a segment let go without an fsync"
            );
            let synced = match &st.file {
                Some(file) => self.fsync_segment(file),
                None => Err(io::Error::other(
                    "the buffer segment was closed before its fsync",
                )),
            };
            if let Err(e) = &synced
                && st.file.is_some()
            {
                // Under `interval_ms` its records stay in the pipeline's memory and are
                // delivered, but may not survive a power loss: say so from now on (see `sync`).
                // Under `always` their appenders are refused. Either way, a new file.
                self.fsync_failed.store(true, Ordering::Relaxed);
                tracing::error!(error = %e, "fsync of a buffer segment failed; its records may not survive a power loss");
            }
            self.resolve_active(st, synced.as_ref().err());
        }
        st.dirty = false;
        if let Some(last) = st.segments.back_mut()
            && last.active
        {
            last.active = false;
        }
        st.file = None;
        self.collect_settled(st, to_delete);
        let id = st.next_segment_id;
        let path = segment_path(&self.dir, id);
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)?;
        st.next_segment_id += 1;
        if self.fsync != FsyncPolicy::Never
            && let Err(e) = self.sync_dir()
        {
            // The new segment's entry may not survive a power loss, and with it whatever is
            // fsynced into it. Under `always` nothing is acknowledged on that footing: the
            // write fails. Under `interval_ms` the failure is sticky, as a failed fsync is.
            tracing::error!(error = %e, "fsync of the buffer directory failed; a new segment may not survive a power loss");
            if self.fsync == FsyncPolicy::Always {
                let _ = fs::remove_file(&path);
                return Err(e);
            }
            self.fsync_failed.store(true, Ordering::Relaxed);
        }
        let first_seq = st.next_seq;
        st.segments.push_back(Segment {
            id,
            first_seq,
            counts: Vec::new(),
            unsettled: 0,
            bytes: 0,
            active: true,
        });
        st.file = Some(Arc::new(file));
        Ok(())
    }

    /// Removes fully settled, inactive segments from the state; their ids go to `to_delete`.
    fn collect_settled(&self, st: &mut State, to_delete: &mut Vec<u64>) {
        let mut freed = 0;
        st.segments.retain(|s| {
            let done = !s.active && s.unsettled == 0;
            if done {
                freed += s.bytes;
                to_delete.push(s.id);
            }
            !done
        });
        st.disk_bytes -= freed;
    }

    fn reclaim_active(&self, st: &mut State, to_delete: &mut Vec<u64>) {
        if let Some(last) = st.segments.back_mut()
            && last.active
            && last.unsettled == 0
            && last.bytes > 0
        {
            last.active = false;
            // Every record in it is settled: no appender waits for its fsync but cancelled ones,
            // and nothing in it needs one any more.
            self.resolve_active(st, None);
            st.file = None;
            st.dirty = false;
            self.collect_settled(st, to_delete);
        }
    }

    /// `drop_oldest`: deletes the oldest segment, unsettled records and all (counted as
    /// evicted). Its records stay tracked: those the pipeline holds are still settled when it
    /// delivers them; only those it never does are lost (see [`Log::close`]).
    fn evict_oldest(&self, st: &mut State, to_delete: &mut Vec<u64>) -> bool {
        let Some(mut oldest) = st.segments.pop_front() else {
            return false;
        };
        if oldest.active {
            // Records waiting for its fsync go on, not durable, like the rest of it (its file
            // is deleted: nothing in it needs an fsync any more).
            self.resolve_active(st, None);
            st.file = None;
            st.dirty = false;
            oldest.active = false;
        }
        self.counters
            .evicted
            .fetch_add(oldest.unsettled as u64, Ordering::Relaxed);
        st.disk_bytes -= oldest.bytes;
        st.acks_dirty = true;
        to_delete.push(oldest.id);
        if oldest.unsettled > 0 {
            st.evicted.push_back(oldest);
        }
        true
    }

    fn delete(&self, ids: Vec<u64>) {
        for id in ids {
            match fs::remove_file(segment_path(&self.dir, id)) {
                Ok(()) => {
                    self.counters
                        .segments_deleted
                        .fetch_add(1, Ordering::Relaxed);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(segment = id, error = %e, "cannot delete a settled buffer segment")
                }
            }
        }
    }

    /// Keeps a record that no longer decodes as an event (its checksum holds, so it was written
    /// like this: by another version?) as a line of [`UNDECODABLE_FILE`], with `error`, on disk
    /// before this returns; the caller then frees it. Blocking. Returns the file's path.
    pub(super) fn keep_undecodable(
        &self,
        seq: u64,
        error: &str,
        event_json: &[u8],
    ) -> io::Result<PathBuf> {
        let path = self.dir.join(UNDECODABLE_FILE);
        let kept = serde_json::json!({
            "seq": seq,
            "kept_at": clawdstrike_schema::Timestamp::now().to_rfc3339_millis(),
            "error": error,
            "event_json": String::from_utf8_lossy(event_json),
        });
        let mut line = kept.to_string();
        line.push('\n');
        let mut file = OpenOptions::new().create(true).append(true).open(&path)?;
        let len = file.metadata()?.len();
        if let Err(e) = file
            .write_all(line.as_bytes())
            .and_then(|()| file.sync_data())
        {
            // The record stays in the log and is kept again at the next start: no half line
            // (a full disk) or second copy (a failed fsync) before that one.
            let _ = file.set_len(len);
            return Err(e);
        }
        let _ = sync_dir(&self.dir);
        self.counters.undecodable.fetch_add(1, Ordering::Relaxed);
        Ok(path)
    }

    /// One exporter settled `seqs`.
    pub(super) fn settle(&self, seqs: &[u64]) {
        self.settle_with(seqs, false);
    }

    /// `seq` will never be settled by the pipeline (its submit was cancelled or refused).
    pub(super) fn abandon(&self, seq: u64) {
        self.settle_with(&[seq], true);
    }

    fn settle_with(&self, seqs: &[u64], all: bool) {
        let mut to_delete = Vec::new();
        let mut done = 0u64;
        let mut room = false;
        {
            let mut st = lock(&self.state);
            if st.acks_final {
                // The final acknowledgement file is written and the directory may be another
                // process's by now: a settlement this late (a dead-letter write that outlived
                // the shutdown deadline) changes nothing on disk. The record is replayed at the
                // next start, which is what the shutdown report said of it.
                return;
            }
            let mut evicted_done = false;
            for &seq in seqs {
                let Some((segment, o, evicted)) = st.locate(seq) else {
                    continue; // a stale seq, or one already counted lost
                };
                let count = &mut segment.counts[o];
                if *count == 0 {
                    continue;
                }
                *count = if all { 0 } else { *count - 1 };
                if *count == 0 {
                    segment.unsettled -= 1;
                    done += 1;
                    if segment.unsettled == 0 {
                        if evicted {
                            evicted_done = true;
                        } else {
                            room = true;
                        }
                    }
                }
            }
            if evicted_done {
                st.evicted.retain(|s| s.unsettled > 0);
            }
            if done > 0 {
                st.acks_dirty = true;
            }
            if room {
                self.collect_settled(&mut st, &mut to_delete);
            }
        }
        if all {
            self.counters.abandoned.fetch_add(done, Ordering::Relaxed);
        } else {
            self.counters.settled.fetch_add(done, Ordering::Relaxed);
        }
        self.delete(to_delete);
        if room {
            self.space.notify_waiters();
        }
    }

    /// Forces appended data to disk and writes the acknowledgement file (if anything changed).
    pub(super) fn sync(&self, force_acks: bool) -> io::Result<()> {
        self.sync_with(force_acks, false)
    }

    /// [`sync`](Self::sync); `last` for close's own, after which settlements and syncs change
    /// nothing on disk.
    fn sync_with(&self, force_acks: bool, last: bool) -> io::Result<()> {
        let _one_at_a_time = lock(&self.syncing);
        let (file, acks) = {
            let mut st = lock(&self.state);
            if st.acks_final {
                // Closed: the final acknowledgement file is written, and the directory may be
                // another process's by now.
                drop(st);
                return if self.fsync_failed.load(Ordering::Relaxed) {
                    Err(io::Error::other(
                        "an earlier fsync of the buffer failed: records it covered may not be on disk",
                    ))
                } else {
                    Ok(())
                };
            }
            // Under `always` the commit thread fsyncs for the appenders (`commit_pending`).
            let file = if st.dirty && matches!(self.fsync, FsyncPolicy::Interval(_)) {
                // As in `roll`: a file let go was fsynced first, or its failure is known.
                debug_assert!(
                    st.file.is_some() || self.fsync_failed.load(Ordering::Relaxed),
                    "unsynced records in a segment let go without an fsync"
                );
                st.file.clone()
            } else {
                None
            };
            st.dirty = false;
            let acks = (st.acks_dirty || force_acks).then(|| st.acks());
            st.acks_dirty = false;
            // Close's last sync: what is settled from here on is not in the file, so it must
            // change nothing on disk either (see `settle_with`).
            st.acks_final = last;
            (file, acks)
        };
        if let Some(file) = file
            && let Err(e) = self.fsync_segment(&file)
        {
            // Not retried: a second fsync of this file could succeed without the data (the
            // kernel may have marked the failed pages clean). Appends go to a new file; the
            // failure is sticky, so callers that wait for durability (the follow checkpoint)
            // stop trusting the buffer until a restart.
            self.fsync_failed.store(true, Ordering::Relaxed);
            let mut st = lock(&self.state);
            if st.file.as_ref().is_some_and(|f| Arc::ptr_eq(f, &file)) {
                st.file = None;
                if let Some(segment) = st.segments.back_mut() {
                    segment.active = false;
                }
            }
            drop(st);
            tracing::error!(error = %e, "fsync of a buffer segment failed; its records may not survive a power loss");
        }
        let written = self.write_acks(acks);
        if written.is_err() {
            // The acknowledgement file is written afresh each time: retrying is sound.
            lock(&self.state).acks_dirty = true;
        }
        written?;
        if self.fsync_failed.load(Ordering::Relaxed) {
            return Err(io::Error::other(
                "an earlier fsync of the buffer failed: records it covered may not be on disk",
            ));
        }
        Ok(())
    }

    fn write_acks(&self, acks: Option<Acks>) -> io::Result<()> {
        if let Some(acks) = acks {
            let tmp = self.dir.join("ack.tmp");
            let mut f = File::create(&tmp)?;
            f.write_all(&acks.encode())?;
            if self.fsync != FsyncPolicy::Never {
                f.sync_all()?;
            }
            drop(f);
            fs::rename(&tmp, self.dir.join(ACK_FILE))?;
        }
        Ok(())
    }

    /// Refuses further appends, wakes blocked ones, syncs and writes the acknowledgement file.
    /// Evicted records still unsettled are on disk no more, so they are lost: those the
    /// pipeline held were left behind at its deadline (its report counts them already:
    /// `evicted_left_behind`), the others never reached it (`dropped_oldest`).
    pub(super) fn close(&self) -> io::Result<()> {
        {
            let mut st = lock(&self.state);
            st.closed = true;
            let replayed_through = self.replayed_through.load(Ordering::Relaxed);
            let (mut held, mut never) = (0, 0);
            let not_kept = st.not_kept.clone();
            let not_replayed = st.not_replayed.clone();
            for segment in st.evicted.drain(..) {
                let read = !not_replayed.contains(&segment.id);
                for (offset, &count) in segment.counts.iter().enumerate() {
                    let seq = segment.first_seq + offset as u64;
                    if count == 0 {
                        continue;
                    }
                    let submitted = read && seq < replayed_through && !not_kept.contains(&seq);
                    if seq >= self.first_new_seq || submitted {
                        held += 1;
                    } else {
                        never += 1;
                    }
                }
            }
            self.counters
                .evicted_left_behind
                .fetch_add(held, Ordering::Relaxed);
            self.counters
                .dropped_oldest
                .fetch_add(never, Ordering::Relaxed);
        }
        self.stop_sync.store(true, Ordering::Relaxed);
        self.space.notify_waiters();
        // Appenders still waiting (for room, or under `always` for their fsync) finish now:
        // closed, refused by the closed pipeline and freed, or handed over. Their outcome must
        // make the last acknowledgement file, or a refused record would be replayed.
        let deadline = std::time::Instant::now() + CLOSE_WAIT;
        let mut submitting = lock(&self.submitting);
        while *submitting > 0 {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                tracing::warn!(
                    submits = *submitting,
                    "closing the buffer with submits still under way; their events may be replayed at the next start"
                );
                break;
            }
            submitting = self
                .submits_done
                .wait_timeout(submitting, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        drop(submitting);
        let synced = self.sync_with(true, true);
        self.release_dir_lock();
        synced
    }

    /// Lets another log open the directory.
    pub(super) fn release_dir_lock(&self) {
        lock(&self.dir_lock).take();
    }

    pub(super) fn snapshot(&self) -> (u64, usize, u64) {
        let st = lock(&self.state);
        let unsettled = st.segments.iter().map(|s| s.unsettled as u64).sum();
        (st.disk_bytes, st.segments.len(), unsettled)
    }

    /// The replay found `seq` undecodable and could not keep it aside: it stays in the log.
    pub(super) fn not_kept(&self, seq: u64) {
        lock(&self.state).not_kept.push(seq);
    }

    /// The replay could not read segment `id`: its records stay in the log, never submitted.
    pub(super) fn not_replayed(&self, id: u64) {
        lock(&self.state).not_replayed.push(id);
    }

    /// Records the replay could not keep aside that are still in the log's segments (those
    /// `drop_oldest` evicted are counted in `dropped_oldest` when the log closes).
    pub(super) fn not_kept_in_log(&self) -> u64 {
        let st = lock(&self.state);
        st.not_kept
            .iter()
            .filter(|&&seq| position(&st.segments, seq).is_some())
            .count() as u64
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        self.stop_sync.store(true, Ordering::Relaxed);
        self.commits.stop();
    }
}

/// Under `always`: how appenders wake the group-commit thread (a plain thread, since fsync
/// blocks), and how the log stops it.
#[derive(Debug, Default)]
struct CommitInbox {
    /// (an appender waits for an fsync, the log is gone)
    flags: Mutex<(bool, bool)>,
    wake: Condvar,
}

impl CommitInbox {
    fn request(&self) {
        let mut flags = lock(&self.flags);
        if !flags.0 {
            flags.0 = true;
            self.wake.notify_one();
        }
    }

    fn stop(&self) {
        lock(&self.flags).1 = true;
        self.wake.notify_one();
    }

    /// Waits for a request; false once the log is gone.
    fn next(&self) -> bool {
        let mut flags = lock(&self.flags);
        loop {
            if flags.1 {
                return false;
            }
            if flags.0 {
                flags.0 = false;
                return true;
            }
            flags = self
                .wake
                .wait(flags)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// The `always` policy's group commit: while one fsync runs, appenders keep writing; the next
/// fsync covers all of them at once.
fn spawn_committer(log: Weak<Log>, commits: Arc<CommitInbox>) -> io::Result<()> {
    std::thread::Builder::new()
        .name("clawdstrike-buffer-commit".to_owned())
        .spawn(move || {
            while commits.next() {
                let Some(log) = log.upgrade() else { return };
                log.commit_pending();
                log.committed.notify_waiters();
            }
        })
        .map(drop)
}

/// The `interval_ms` policy: a plain thread (fsync blocks) holding only a weak reference.
fn spawn_syncer(log: Weak<Log>, every: Duration) {
    let spawned = std::thread::Builder::new()
        .name("clawdstrike-buffer-sync".to_owned())
        .spawn(move || {
            loop {
                std::thread::sleep(every);
                let Some(log) = log.upgrade() else { return };
                if log.stop_sync.load(Ordering::Relaxed) {
                    return;
                }
                // The fsync failure itself is logged once, where it happens; this says when
                // the acknowledgement file cannot be written.
                if let Err(e) = log.sync(false)
                    && !log.fsync_failed.load(Ordering::Relaxed)
                {
                    tracing::warn!(error = %e, "writing the buffer's acknowledgement file failed");
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the buffer fsync thread; fsync happens at close only");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clawdstrike_schema::{EventType, ResourceType, SecurityEvent, Severity, Uuid};

    fn record(i: u64) -> Record {
        let event = SecurityEvent::builder(EventType::ForbiddenPath)
            .event_id(Uuid::from_u128(u128::from(i) + 1))
            .agent_id("agent-7")
            .session_id("sess-1")
            .action("file_access")
            .denied("forbidden_path", Severity::High, "forbidden")
            .resource(ResourceType::File, "/etc/shadow")
            .build()
            .expect("valid event");
        Record::new(event)
    }

    fn open_always(dir: &Path) -> Arc<Log> {
        let config = DiskBufferConfig::new(dir).with_fsync(FsyncPolicy::Always);
        Log::open(&config).expect("the log opens").0
    }

    /// Writes a record as `append` does, without waiting for its fsync.
    fn write_only(log: &Log, i: u64) -> u64 {
        match try_write(log, i) {
            Ok(Appended::Seq(seq)) => seq,
            other => panic!("the write failed: {other:?}"),
        }
    }

    /// The active segment's handle becomes read-only: the next write to it fails (`EBADF`),
    /// as a write to a full disk does, with what was written before still in the page cache.
    fn break_active_file(log: &Log) {
        let mut st = lock(&log.state);
        let id = st.segments.back().expect("an active segment").id;
        let read_only = File::open(segment_path(&log.dir, id)).expect("the segment opens");
        st.file = Some(Arc::new(read_only));
    }

    /// Writes a record as `append` does (no waiting for room or for its fsync).
    fn try_write(log: &Log, i: u64) -> Result<Appended, AppendError> {
        let record = record(i);
        let mut json = Vec::new();
        record.event.write_json(&mut json);
        let frame_len = frame::frame_len(false, json.len()) as u64;
        let mut to_delete = Vec::new();
        let mut st = lock(&log.state);
        log.write(&mut st, &record, &json, frame_len, &mut to_delete)
    }

    /// A batch's commit whose shared fsync fails takes none of its events: each is refused and
    /// freed (none delivered), and the failure is told, or given up, once per event, so the
    /// failed range does not stay waiting for appenders that never come.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_whose_fsync_fails_takes_none_of_its_events() {
        #[derive(Debug)]
        struct Accept;
        #[async_trait::async_trait]
        impl crate::Exporter for Accept {
            fn name(&self) -> &str {
                "accept"
            }
            async fn export(&self, batch: &[Record]) -> crate::ExportResult {
                crate::ExportResult::exported(batch.len())
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let config = DiskBufferConfig::new(dir.path()).with_fsync(FsyncPolicy::Always);
        let builder = crate::Pipeline::builder()
            .with_exporter(Arc::new(Accept), crate::ExporterConfig::default());
        let (durable, _) = crate::DurablePipeline::open(&config, builder)
            .await
            .expect("the buffer opens");
        let mut batch = durable.batch();
        for i in 0..5 {
            batch.append(record(i)).await.expect("appended");
        }
        durable.log.fail_fsyncs.store(true, Ordering::Relaxed);
        let outcome = batch.commit().await;
        durable.log.fail_fsyncs.store(false, Ordering::Relaxed);
        assert!(
            matches!(outcome, Err(crate::DurableSubmitError::Io(_))),
            "{outcome:?}"
        );
        assert_eq!((batch.taken(), batch.pending()), (0, 0));
        assert!(
            matches!(
                batch.append(record(5)).await,
                Err(crate::DurableSubmitError::Io(_))
            ),
            "a batch whose fsync failed takes no more"
        );
        drop(batch);
        assert!(
            lock(&durable.log.state).sync_failed.is_empty(),
            "every event's failure was told or given up"
        );
        let stats = durable.buffer_stats();
        assert_eq!((stats.appended, stats.abandoned), (0, 5));
        let reports = durable.shutdown(Duration::from_secs(5)).await;
        assert_eq!(reports[0].delivered, 0);
    }

    /// Under `interval_ms`, a write that fails retires its segment; the records written to it
    /// since the last fsync are fsynced first, since the syncer only ever syncs the active file.
    /// Should that fsync fail, the failure is sticky (`sync` fails, so the follow checkpoint
    /// stops trusting the buffer) instead of the records silently never being synced.
    #[test]
    fn a_failed_write_fsyncs_what_its_segment_holds_before_letting_it_go() {
        let dir = tempfile::tempdir().unwrap();
        let config = DiskBufferConfig::new(dir.path())
            .with_fsync(FsyncPolicy::Interval(Duration::from_secs(3600)));
        let log = Log::open(&config).expect("the log opens").0;
        let fsyncs = || log.counters.fsyncs.load(Ordering::Relaxed);

        write_only(&log, 0);
        break_active_file(&log);
        let before = fsyncs();
        assert!(matches!(try_write(&log, 1), Err(AppendError::Io(_))));
        assert_eq!(
            fsyncs(),
            before + 1,
            "record 0 is fsynced before its file goes"
        );
        assert!(
            lock(&log.state).file.is_none(),
            "nothing more goes to that file"
        );
        assert!(!log.fsync_failed.load(Ordering::Relaxed));
        assert!(log.sync(false).is_ok());

        // The next record goes to a new segment; this time the fsync fails too.
        write_only(&log, 2);
        assert_eq!(lock(&log.state).segments.len(), 2);
        break_active_file(&log);
        log.fail_fsyncs.store(true, Ordering::Relaxed);
        assert!(matches!(try_write(&log, 3), Err(AppendError::Io(_))));
        log.fail_fsyncs.store(false, Ordering::Relaxed);
        assert!(log.fsync_failed.load(Ordering::Relaxed));
        assert!(log.sync(false).is_err(), "the buffer is not to be trusted");
    }

    /// A failed write retires a segment whose records are all settled (the usual state at a
    /// low event rate): its room is free for the next event, even when the bound is one
    /// segment. Before, it stayed counted, and every later event waited (`block`) or was
    /// dropped (`drop_newest`) until a restart.
    #[tokio::test]
    async fn a_settled_segment_retired_by_a_failed_write_frees_its_room() {
        let dir = tempfile::tempdir().unwrap();
        let config = DiskBufferConfig::new(dir.path())
            .with_segment_bytes(4096)
            .with_max_bytes(4096)
            .with_fsync(FsyncPolicy::Interval(Duration::from_secs(3600)))
            .with_when_full(WhenFull::DropNewest);
        let log = Log::open(&config).expect("the log opens").0;
        log.set_exporters(1);
        let mut json = Vec::new();
        record(0).event.write_json(&mut json);
        let frame = frame::frame_len(false, json.len()) as u64;
        // One record less than a segment holds; the write of the last one fails.
        let seqs: Vec<u64> = (0..4096 / frame - 1).map(|i| write_only(&log, i)).collect();
        assert_eq!(lock(&log.state).segments.len(), 1);
        log.settle(&seqs);
        break_active_file(&log);
        assert!(matches!(try_write(&log, 100), Err(AppendError::Io(_))));
        // The next event, twice the size, does not fit beside the retired segment's records.
        let mut big = record(101);
        Arc::make_mut(&mut big.event).resource.name = "x".repeat(json.len());
        let appended = log.append(&big).await.expect("the append runs");
        assert!(matches!(appended, Appended::Seq(_)), "{appended:?}");
        assert_eq!(log.counters.dropped_newest.load(Ordering::Relaxed), 0);
    }

    /// Under `always`, nothing is acknowledged into a segment whose directory entry could not
    /// be fsynced: the write fails, and the file is not left behind.
    #[test]
    fn a_failed_directory_fsync_fails_the_write_into_the_new_segment() {
        let dir = tempfile::tempdir().unwrap();
        let log = open_always(dir.path());
        log.fail_fsyncs.store(true, Ordering::Relaxed);
        assert!(matches!(try_write(&log, 0), Err(AppendError::Io(_))));
        log.fail_fsyncs.store(false, Ordering::Relaxed);
        assert!(
            ids_with_extension(dir.path(), SEGMENT_EXT)
                .unwrap()
                .is_empty()
        );
        let seq = write_only(&log, 1);
        log.commit_pending();
        assert!(matches!(outcome(&log, seq), Some(Ok(()))));
    }

    /// Once closed (final acknowledgement file written, directory lock released), a late
    /// settlement (a dead-letter write that outlived the shutdown deadline) deletes nothing:
    /// the record is replayed at the next start, as the shutdown report said.
    #[test]
    fn a_settlement_after_close_changes_nothing_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let config = DiskBufferConfig::new(dir.path())
            .with_segment_bytes(4096)
            .with_fsync(FsyncPolicy::Interval(Duration::from_secs(3600)));
        let log = Log::open(&config).expect("the log opens").0;
        log.set_exporters(1);
        // Records until a second segment starts: the first is then closed, and deleted once
        // all its records are settled.
        let mut seqs = Vec::new();
        while lock(&log.state).segments.len() < 2 {
            seqs.push(write_only(&log, seqs.len() as u64));
        }
        log.close().expect("the log closes");
        log.settle(&seqs);
        assert_eq!(
            ids_with_extension(dir.path(), SEGMENT_EXT).unwrap().len(),
            2
        );
        drop(log);
        let (_again, found) = Log::open(&config).expect("the log opens again");
        let pending: usize = found.segments.iter().map(|s| s.pending).sum();
        assert_eq!(pending, seqs.len(), "every record is replayed");
    }

    /// A buffer path several levels deep that does not exist yet is created (each new level's
    /// entry fsynced under `always`) and used.
    #[test]
    fn a_buffer_directory_several_levels_deep_is_created() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("var/lib/clawdstrike/buffer");
        let log = open_always(&deep);
        let seq = write_only(&log, 0);
        log.commit_pending();
        assert!(matches!(outcome(&log, seq), Some(Ok(()))));
        assert_eq!(ids_with_extension(&deep, SEGMENT_EXT).unwrap().len(), 1);
    }

    fn outcome(log: &Log, seq: u64) -> Option<io::Result<()>> {
        lock(&log.state).outcome(seq)
    }

    #[test]
    fn one_group_fsync_covers_every_record_written_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let log = open_always(dir.path());
        let seqs: Vec<u64> = (0..3).map(|i| write_only(&log, i)).collect();
        assert!(
            outcome(&log, seqs[0]).is_none(),
            "not durable before an fsync"
        );
        let before = log.counters.fsyncs.load(Ordering::Relaxed);
        log.commit_pending();
        assert_eq!(log.counters.fsyncs.load(Ordering::Relaxed), before + 1);
        for seq in seqs {
            assert!(matches!(outcome(&log, seq), Some(Ok(()))), "record {seq}");
        }
        // Nothing new: no fsync.
        log.commit_pending();
        assert_eq!(log.counters.fsyncs.load(Ordering::Relaxed), before + 1);
    }

    #[test]
    fn a_failed_group_fsync_refuses_each_record_it_covered_and_retires_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let log = open_always(dir.path());
        let good = write_only(&log, 0);
        log.commit_pending();
        assert!(matches!(outcome(&log, good), Some(Ok(()))));
        log.fail_fsyncs.store(true, Ordering::Relaxed);
        let covered: Vec<u64> = (1..3).map(|i| write_only(&log, i)).collect();
        let given_up = write_only(&log, 9);
        drop(GiveUp {
            log: &log,
            seq: Some(given_up),
        });
        let failed_file = lock(&log.state).file.clone().expect("an active file");
        log.commit_pending();
        assert!(log.fsync_failed.load(Ordering::Relaxed));
        assert!(
            lock(&log.state).file.is_none(),
            "nothing more goes to that file"
        );
        for &seq in &covered {
            match outcome(&log, seq) {
                Some(Err(e)) => assert!(e.to_string().contains("injected"), "{e}"),
                other => panic!("record {seq}: expected the fsync error, got {other:?}"),
            }
        }
        assert!(
            lock(&log.state).sync_failed.is_empty(),
            "each appender took its error (the cancelled one is not waited for): the run is forgotten"
        );
        assert_eq!(log.counters.abandoned.load(Ordering::Relaxed), 1);
        // A sound fsync later: the failed file still fails (the kernel reports an error once;
        // a second fsync could succeed without the data), and the next record goes to a new
        // file and is durable.
        log.fail_fsyncs.store(false, Ordering::Relaxed);
        assert!(log.fsync_segment(&failed_file).is_err());
        let next = write_only(&log, 3);
        log.commit_pending();
        assert!(matches!(outcome(&log, next), Some(Ok(()))));
        assert_eq!(lock(&log.state).segments.len(), 2);
        // But `sync` says the buffer is not to be trusted until a restart.
        assert!(log.sync(true).is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_append_whose_fsync_fails_is_refused_freed_and_not_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let log = open_always(dir.path());
        match log.append(&record(0)).await {
            Ok(Appended::Seq(_)) => {}
            other => panic!("the first append is durable: {other:?}"),
        }
        log.fail_fsyncs.store(true, Ordering::Relaxed);
        match log.append(&record(1)).await {
            Err(AppendError::Io(e)) => assert!(e.to_string().contains("injected"), "{e}"),
            other => panic!("expected the fsync error, got {other:?}"),
        }
        log.fail_fsyncs.store(false, Ordering::Relaxed);
        let c = &log.counters;
        assert_eq!(c.appended.load(Ordering::Relaxed), 1);
        assert_eq!(c.write_errors.load(Ordering::Relaxed), 1);
        assert_eq!(c.abandoned.load(Ordering::Relaxed), 1);
        assert!(log.close().is_err(), "the failed fsync stays reported");
        drop(log);
        let config = DiskBufferConfig::new(dir.path()).with_fsync(FsyncPolicy::Always);
        let (_reopened, found) = Log::open(&config).expect("the log reopens");
        let pending: usize = found.segments.iter().map(|s| s.pending).sum();
        assert_eq!(
            pending, 1,
            "the durable record only; the refused one is not replayed"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appends_each_return_once_an_fsync_covers_them() {
        let dir = tempfile::tempdir().unwrap();
        let log = open_always(dir.path());
        let tasks: Vec<_> = (0..64)
            .map(|i| {
                let log = Arc::clone(&log);
                tokio::spawn(
                    async move { matches!(log.append(&record(i)).await, Ok(Appended::Seq(_))) },
                )
            })
            .collect();
        for task in tasks {
            assert!(task.await.unwrap());
        }
        let c = &log.counters;
        assert_eq!(c.appended.load(Ordering::Relaxed), 64);
        let fsyncs = c.fsyncs.load(Ordering::Relaxed);
        assert!((1..=64).contains(&fsyncs), "{fsyncs} fsyncs");
        let st = lock(&log.state);
        assert_eq!(st.synced_below, st.next_seq, "every record is covered");
    }
}
