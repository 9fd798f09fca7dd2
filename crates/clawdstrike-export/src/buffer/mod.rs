//! The durable buffer: a write-ahead log in front of the [`Pipeline`], so accepted events
//! survive a crash and are replayed on the next start.
//!
//! See [`DurablePipeline`] and the crate docs' "Durable buffer" section.

mod config;
mod frame;
mod log;

use std::fmt;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clawdstrike_schema::SecurityEvent;
use tokio::task::JoinHandle;

pub use self::config::{BufferConfig, DiskBufferConfig, FsyncPolicy};
use self::log::{Abandon, AppendError, Appended, FoundSegment, InFlight, Log};
pub(crate) use self::log::{sync_dir, unsyncable_is_ok};
use crate::exporter::Record;
use crate::pipeline::{BuildError, Pipeline, PipelineBuilder, ShutdownReport, SubmitError};
use crate::settle::{SettleHook, Settlement};

/// Why [`DurablePipeline::open`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The buffer configuration is out of range.
    #[error("invalid buffer configuration: {0}")]
    Config(String),
    /// The buffer directory or a segment could not be read or created.
    #[error("buffer directory `{path}`: {source}")]
    Io {
        /// The directory.
        path: std::path::PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// The pipeline could not be built.
    #[error(transparent)]
    Build(#[from] BuildError),
}

/// Why [`DurablePipeline::submit`] did not take an event.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DurableSubmitError {
    /// Shutting down (or shut down); the event was not taken.
    #[error("the export pipeline is shut down")]
    Closed,
    /// The event alone is larger than `max_bytes`; it was not taken.
    #[error("an event of {bytes} bytes does not fit a buffer of {max_bytes} bytes")]
    TooLarge {
        /// The record's size on disk.
        bytes: u64,
        /// The buffer's bound.
        max_bytes: u64,
    },
    /// Writing to the log failed (disk full, I/O error); the event was not taken.
    #[error("cannot write to the buffer: {0}")]
    Io(#[source] io::Error),
}

/// What [`DurablePipeline::open`] found on disk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OpenReport {
    /// Segment files holding unacknowledged records.
    pub segments: usize,
    /// Unacknowledged records, being replayed into the pipeline (in order, with their trace
    /// context).
    pub to_replay: u64,
    /// Records found in the log but already acknowledged (not replayed).
    pub already_acknowledged: u64,
    /// Records lost to damage: in each damaged stretch followed by valid records, as many as
    /// the sequence numbers missing around it (at least one), plus checksummed records with
    /// impossible sequence numbers.
    pub corrupt_records: u64,
    /// Bytes in those stretches.
    pub corrupt_bytes: u64,
    /// Bytes of damaged tails (an interrupted write at the end of a segment), skipped.
    pub torn_tail_bytes: u64,
    /// False when the acknowledgement file was missing or damaged: every record found was
    /// replayed, so some may be delivered twice.
    pub ack_file_valid: bool,
}

/// A snapshot of the buffer's counters ([`DurablePipeline::buffer_stats`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BufferStats {
    /// Records appended since open.
    pub appended: u64,
    /// Records replayed into the pipeline since open.
    pub replayed: u64,
    /// Records settled by every exporter since open.
    pub settled: u64,
    /// Records whose submit was refused or cancelled after the append (freed at once), and
    /// records the replay found undecodable (see `undecodable`).
    pub abandoned: u64,
    /// Events refused by `when_full: drop_newest` (never appended, never submitted).
    pub dropped_newest: u64,
    /// Records lost to `when_full: drop_oldest` that never reached the pipeline: found at open
    /// and evicted before the replay handed them over (or in a segment the replay could not
    /// read, or undecodable and not kept aside). No exporter report counts them.
    pub dropped_oldest: u64,
    /// Unacknowledged records evicted from the log by `when_full: drop_oldest`. Not a loss by
    /// itself: the pipeline still delivers (and counts) those it holds in memory; they are just
    /// no longer durable. Those it never got are counted in `dropped_oldest`, those it left
    /// behind at shutdown in `evicted_left_behind`.
    pub evicted: u64,
    /// Evicted records the pipeline still held when its shutdown deadline passed: lost, since
    /// they are no longer on disk. The exporters' reports count them already (left behind),
    /// so they are not in `dropped_oldest`. Counted when the log closes.
    pub evicted_left_behind: u64,
    /// An fsync of the log failed since open: records it covered may not survive a power loss
    /// (they are still delivered from memory). Sticky until a restart; [`DurablePipeline::sync`]
    /// fails from then on.
    pub fsync_failed: bool,
    /// Appends that failed with an I/O error.
    pub write_errors: u64,
    /// Corrupt records found at open.
    pub corrupt_records: u64,
    /// Bytes of corrupt records found at open.
    pub corrupt_bytes: u64,
    /// Bytes of torn tails found at open.
    pub torn_tail_bytes: u64,
    /// Segment files deleted because every record in them was settled (or evicted).
    pub segments_deleted: u64,
    /// Data fsyncs of segment files since open. Under `always` one fsync covers every append
    /// waiting for it (group commit), so concurrent producers need far fewer than one each.
    pub fsyncs: u64,
    /// Records whose checksum holds but which do not decode as an event (written by another
    /// version?), found by the replay: kept in `undecodable.ndjson` in the buffer's directory
    /// (`seq`, `kept_at`, `error`, and the record's JSON as text in `event_json`), then freed
    /// (also counted in `abandoned`). Not delivered. A crash before the next acknowledgement
    /// write keeps such a record again at the next start: the same `seq` twice.
    pub undecodable: u64,
    /// Records found by the replay that do not decode as an event and could not be kept aside
    /// (writing `undecodable.ndjson` failed), still in the log: counted in `unsettled` too,
    /// and the next start tries to keep them aside again. They are never delivered. Should
    /// `drop_oldest` evict one, it leaves this count for `dropped_oldest` (lost) when the log
    /// closes.
    pub undecodable_not_kept: u64,
    /// Bytes of segment files on disk now.
    pub disk_bytes: u64,
    /// The bound on `disk_bytes`.
    pub max_bytes: u64,
    /// Segment files now.
    pub segments: usize,
    /// Records in the log not yet settled by every exporter: after a shutdown, what the next
    /// start replays.
    pub unsettled: u64,
}

/// A [`Pipeline`] behind a write-ahead log on disk.
///
/// [`submit`](Self::submit) appends the event to the log (a CRC-checked frame in the current
/// segment file, written to the operating system before it returns, fsynced as the
/// [`FsyncPolicy`] says), then submits it to the pipeline with the record's sequence number. The
/// pipeline tells the log (through a [`SettleHook`]) when each exporter has settled the event
/// (delivered, dead-lettered, filtered or dropped by its queue policy); once every exporter
/// has, the record is acknowledged, and a segment file is deleted when all its records are.
/// Events left behind at the shutdown deadline are not settled, so they stay in the log.
///
/// On [`open`](Self::open), unacknowledged records are replayed into the pipeline in log order
/// with their trace context, by a background task ([`wait_replayed`](Self::wait_replayed)
/// waits for it). Which records were acknowledged is kept in a small `ack` file written at
/// every fsync and at shutdown; after a crash, records acknowledged since the last one are
/// delivered again (at-least-once). A torn or corrupt record is detected by its checksum,
/// counted ([`OpenReport`]) and skipped; the records before and after it are replayed. One
/// whose checksum holds but which does not decode is kept aside with the reason
/// ([`BufferStats::undecodable`]), or, when that write fails, left in the log for the next
/// start ([`BufferStats::undecodable_not_kept`]).
///
/// The log is bounded by `max_bytes` of segment files. When an append would pass it:
/// `block` waits for segments to be freed, `drop_newest` drops the new event (counted,
/// never submitted), `drop_oldest` deletes the oldest segment, unacknowledged records and all
/// (counted in [`BufferStats::evicted`]): they are no longer durable, but the pipeline still
/// delivers those it holds in memory. Only the evicted records that are never delivered (not
/// yet replayed, or left behind at shutdown) are lost: [`BufferStats::dropped_oldest`] counts
/// those no exporter ever got, [`BufferStats::evicted_left_behind`] those the exporters'
/// reports count as left behind, so every event is counted once.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// use async_trait::async_trait;
/// use clawdstrike_export::{
///     DiskBufferConfig, DurablePipeline, ExportResult, Exporter, ExporterConfig, FsyncPolicy,
///     Pipeline, Record,
/// };
/// use clawdstrike_schema::{EventType, ResourceType, SecurityEvent, Severity};
///
/// #[derive(Debug)]
/// struct Stdout;
///
/// #[async_trait]
/// impl Exporter for Stdout {
///     fn name(&self) -> &str {
///         "stdout"
///     }
///     async fn export(&self, batch: &[Record]) -> ExportResult {
///         ExportResult::exported(batch.len())
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let config = DiskBufferConfig::new(dir.path())
///     .with_max_bytes(64 * 1024 * 1024)
///     .with_fsync(FsyncPolicy::Interval(Duration::from_millis(500)));
/// let builder = Pipeline::builder().with_exporter(Arc::new(Stdout), ExporterConfig::default());
/// let (durable, found) = DurablePipeline::open(&config, builder).await?;
/// assert_eq!(found.to_replay, 0);
///
/// let event = SecurityEvent::builder(EventType::ForbiddenPath)
///     .agent_id("agent-7")
///     .session_id("sess-123")
///     .action("file_access")
///     .denied("forbidden_path", Severity::High, "access to a forbidden path")
///     .resource(ResourceType::File, "/home/user/.ssh/id_rsa")
///     .build()?;
/// durable.submit(Record::new(event)).await?;
///
/// let reports = durable.shutdown(Duration::from_secs(5)).await;
/// assert_eq!(reports[0].delivered, 1);
/// assert_eq!(durable.buffer_stats().unsettled, 0);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct DurablePipeline {
    pipeline: Pipeline,
    log: Arc<Log>,
    replay: Arc<Mutex<Option<JoinHandle<()>>>>,
    /// Releases the directory's lock when the last handle goes, even if tasks stuck past a
    /// shutdown deadline (or a dropped pipeline's) keep the log itself alive.
    _dir_lock: Arc<DirLockRelease>,
}

#[derive(Debug)]
struct DirLockRelease(Arc<Log>);

impl Drop for DirLockRelease {
    fn drop(&mut self) {
        self.0.release_dir_lock();
    }
}

impl fmt::Debug for DurablePipeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DurablePipeline")
            .field("pipeline", &self.pipeline)
            .field("buffer", &self.buffer_stats())
            .finish_non_exhaustive()
    }
}

/// Events submitted together ([`DurablePipeline::batch`]). [`append`](Self::append) writes
/// each to the log in turn; [`sync`](Self::sync) waits until they are durable (one group fsync
/// for all under [`FsyncPolicy::Always`]); [`commit`](Self::commit) syncs and hands them to
/// the pipeline in order. The events taken are always the first ones appended
/// ([`taken`](Self::taken)).
///
/// Dropping the batch frees the records appended and not handed over: they are neither
/// delivered nor replayed, as with a cancelled [`DurablePipeline::submit`]. Drop it once
/// done: like a submit under way, a live batch holds up the buffer's shutdown (until its
/// deadline). Its records also hold room in the log until they are committed (and then
/// settled): under `block`, commit what is pending before waiting for room, or the batch may
/// wait for room only it can free.
pub struct SubmitBatch<'a> {
    durable: &'a DurablePipeline,
    /// Appended, not handed over yet: sequence numbers and records, in order.
    pending: std::collections::VecDeque<(u64, Record)>,
    /// How many of the first `pending` records are known durable (under `always`: their
    /// outcome was taken).
    synced: usize,
    /// A sync failed: the records after the failed one were freed, and no more may be
    /// appended (they would be taken after a gap).
    failed: bool,
    /// Handed over to the pipeline.
    taken: usize,
    /// Dropped last, after the pending records are freed: `close` waits for it.
    _in_flight: InFlight<'a>,
}

impl fmt::Debug for SubmitBatch<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubmitBatch")
            .field("pending", &self.pending.len())
            .field("synced", &self.synced)
            .field("taken", &self.taken)
            .finish_non_exhaustive()
    }
}

impl SubmitBatch<'_> {
    /// Appends the event to the log, waiting for room under `block`. It is written but not yet
    /// durable under `always`, and not yet submitted: [`commit`](Self::commit) does both.
    /// Under `drop_newest` a full log drops it (counted) and this returns `Ok`.
    ///
    /// Cancel-safe: dropped while it waits for room, the event is not appended.
    ///
    /// # Errors
    /// As [`DurablePipeline::submit`]; the event is not in the batch, and the batch may go on.
    /// After a failed [`sync`](Self::sync), [`DurableSubmitError::Io`]: the events appended
    /// after the failed one were freed, and one appended now would be taken after that gap.
    pub async fn append(&mut self, record: Record) -> Result<(), DurableSubmitError> {
        if self.failed {
            return Err(DurableSubmitError::Io(io::Error::other(
                "an fsync of this batch failed: it takes no more events",
            )));
        }
        match self.durable.log.write_record(&record).await {
            Ok(Appended::Seq(seq)) => {
                self.pending.push_back((seq, record));
                Ok(())
            }
            Ok(Appended::Dropped) => Ok(()),
            Err(e) => Err(self.durable.refusal(e)),
        }
    }

    /// Events appended and not handed over yet.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Events handed over to the pipeline (by [`commit`](Self::commit)): taken for good.
    pub fn taken(&self) -> usize {
        self.taken
    }

    /// Waits until the events appended are durable: under `always`, until a group fsync
    /// covered them (one for all); at once otherwise.
    ///
    /// Cancel-safe: nothing is lost or decided while it waits.
    ///
    /// # Errors
    /// The fsync failed ([`DurableSubmitError::Io`]): the events it covered are freed, and
    /// the ones after them too, so that those the batch still holds are the first ones
    /// appended.
    pub async fn sync(&mut self) -> Result<(), DurableSubmitError> {
        let log = &*self.durable.log;
        if !log.waits_for_fsync() {
            self.synced = self.pending.len();
            return Ok(());
        }
        let Some(&(last, _)) = self.pending.back() else {
            return Ok(());
        };
        if self.synced == self.pending.len() {
            return Ok(());
        }
        log.wait_synced(last).await;
        // Every outcome is known: taken in one go, with no wait in between.
        let mut failed = None;
        let mut kept = self.synced;
        for &(seq, _) in self.pending.range(self.synced..) {
            match log.take_outcome(seq) {
                Ok(()) if failed.is_none() => kept += 1,
                // Synced, but after one that was not: freed, so what is taken stays a prefix.
                Ok(()) => log.abandon(seq),
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        self.pending.truncate(kept);
        self.synced = kept;
        self.failed |= failed.is_some();
        match failed {
            Some(e) => Err(DurableSubmitError::Io(e)),
            None => Ok(()),
        }
    }

    /// [`sync`](Self::sync)s, then hands the events to the pipeline in order, waiting under
    /// `block` for room in its queues. Returns [`taken`](Self::taken): every event appended
    /// to this batch.
    ///
    /// Cancel-safe: cancelled (a timeout), the events handed over are taken and counted in
    /// [`taken`](Self::taken); the others wait in the batch, for another commit or to be
    /// freed when it is dropped.
    ///
    /// # Errors
    /// A failed fsync ([`DurableSubmitError::Io`]): the events synced before it are handed
    /// over first. A shutdown begun ([`DurableSubmitError::Closed`]): the events not handed
    /// over wait in the batch.
    pub async fn commit(&mut self) -> Result<usize, DurableSubmitError> {
        let synced = self.sync().await;
        while let Some((seq, record)) = self.pending.front() {
            let (seq, record) = (*seq, record.clone());
            // Cancel-safe: the pipeline queues the record only after its last wait; until it
            // did, the record stays at the front of `pending`.
            match self.durable.pipeline.submit_with_seq(record, seq).await {
                Ok(()) => {
                    self.pending.pop_front();
                    self.synced -= 1;
                    self.taken += 1;
                }
                Err(SubmitError::Closed | SubmitError::Full { .. }) => {
                    return Err(DurableSubmitError::Closed);
                }
            }
        }
        synced.map(|()| self.taken)
    }
}

impl Drop for SubmitBatch<'_> {
    fn drop(&mut self) {
        let log = &*self.durable.log;
        for (i, (seq, _)) in self.pending.drain(..).enumerate() {
            // Under `always`, a record whose outcome was not taken is given up (so that a
            // failed fsync's range does not wait for it).
            if log.waits_for_fsync() && i >= self.synced {
                log.give_up(seq);
            } else {
                log.abandon(seq);
            }
        }
    }
}

/// The settlement hook the log installs in the pipeline.
#[derive(Debug)]
struct Hook(Arc<Log>);

impl SettleHook for Hook {
    fn settled(&self, _exporter: usize, _name: &str, seqs: &[u64], _how: Settlement) {
        self.0.settle(seqs);
    }
}

impl DurablePipeline {
    /// Opens (or creates) the log in `config.path`, builds the pipeline from `builder` with the
    /// log's [`SettleHook`] installed (replacing any other), and starts replaying the
    /// unacknowledged records found on disk into it. Must run inside a Tokio runtime.
    ///
    /// # Errors
    /// [`OpenError::Config`] for a setting out of range, [`OpenError::Io`] when the directory
    /// cannot be created or read, [`OpenError::Build`] from [`PipelineBuilder::build`].
    pub async fn open(
        config: &DiskBufferConfig,
        builder: PipelineBuilder,
    ) -> Result<(Self, OpenReport), OpenError> {
        config.validate().map_err(OpenError::Config)?;
        let cfg = config.clone();
        let opened = tokio::task::spawn_blocking(move || Log::open(&cfg))
            .await
            .map_err(|e| OpenError::Io {
                path: config.path.clone(),
                source: io::Error::other(e.to_string()),
            })?;
        let (log, found) = opened.map_err(|source| OpenError::Io {
            path: config.path.clone(),
            source,
        })?;
        let pipeline = builder
            .with_settle_hook(Arc::new(Hook(Arc::clone(&log))))
            .build()?;
        log.set_exporters(pipeline.exporter_names().len());
        let report = OpenReport {
            segments: found.segments.len(),
            to_replay: found.segments.iter().map(|s| s.pending as u64).sum(),
            already_acknowledged: found.already_acknowledged,
            corrupt_records: found.damage.corrupt_records,
            corrupt_bytes: found.damage.corrupt_bytes,
            torn_tail_bytes: found.damage.torn_tail_bytes,
            ack_file_valid: found.ack_file_valid,
        };
        if report.corrupt_records > 0 || report.torn_tail_bytes > 0 {
            tracing::warn!(
                path = %config.path.display(),
                corrupt_records = report.corrupt_records,
                corrupt_bytes = report.corrupt_bytes,
                torn_tail_bytes = report.torn_tail_bytes,
                "the buffer had damaged records; they were skipped, the others are replayed"
            );
        }
        let handle = tokio::spawn(replay(Arc::clone(&log), pipeline.clone(), found.segments));
        Ok((
            Self {
                pipeline,
                _dir_lock: Arc::new(DirLockRelease(Arc::clone(&log))),
                log,
                replay: Arc::new(Mutex::new(Some(handle))),
            },
            report,
        ))
    }

    /// Appends the event to the log, then submits it to the pipeline (waiting under `block`,
    /// in the log or in a `block` exporter's queue). When this returns `Ok`, the event is on
    /// disk (as the fsync policy allows) and will be delivered, dead-lettered or counted as
    /// dropped, or replayed after a restart; under `drop_newest` a full log drops it (counted
    /// in [`BufferStats::dropped_newest`]) and this still returns `Ok`.
    ///
    /// Cancel-safe: if the future is dropped, the event is either not appended or freed.
    ///
    /// # Errors
    /// [`DurableSubmitError::Closed`] once shutdown has begun, [`DurableSubmitError::TooLarge`]
    /// for an event larger than `max_bytes`, [`DurableSubmitError::Io`] when the write fails.
    pub async fn submit(&self, record: Record) -> Result<(), DurableSubmitError> {
        // Dropped last, after `Abandon`: `close` waits for it.
        let _in_flight = InFlight::new(&self.log);
        let seq = match self.log.append(&record).await {
            Ok(Appended::Seq(seq)) => seq,
            Ok(Appended::Dropped) => return Ok(()),
            Err(e) => return Err(self.refusal(e)),
        };
        let mut guard = Abandon {
            log: &self.log,
            seq: Some(seq),
        };
        match self.pipeline.submit_with_seq(record, seq).await {
            Ok(()) => {
                guard.seq = None;
                Ok(())
            }
            Err(SubmitError::Closed | SubmitError::Full { .. }) => Err(DurableSubmitError::Closed),
        }
    }

    fn refusal(&self, e: AppendError) -> DurableSubmitError {
        match e {
            AppendError::Closed => DurableSubmitError::Closed,
            AppendError::TooLarge(bytes) => DurableSubmitError::TooLarge {
                bytes,
                max_bytes: self.log.max_bytes,
            },
            AppendError::Io(e) => DurableSubmitError::Io(e),
        }
    }

    /// Starts a [`SubmitBatch`]: events appended one after the other, then made durable
    /// together (one fsync under [`FsyncPolicy::Always`], instead of one per event) and
    /// submitted in order. For a producer that hands over many events at once (an HTTP body)
    /// and answers once for all of them.
    pub fn batch(&self) -> SubmitBatch<'_> {
        SubmitBatch {
            durable: self,
            pending: std::collections::VecDeque::new(),
            synced: 0,
            failed: false,
            taken: 0,
            _in_flight: InFlight::new(&self.log),
        }
    }

    /// The pipeline (stats, health checks). Submit through [`submit`](Self::submit), not
    /// through the pipeline, or the event is not durable.
    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// Waits until every record found at open has been handed to the pipeline (or shutdown
    /// stopped the replay). Returns at once on later calls.
    pub async fn wait_replayed(&self) {
        let handle = self
            .replay
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(handle) = handle {
            let _ = handle.await;
        }
    }

    /// A snapshot of the buffer's counters.
    pub fn buffer_stats(&self) -> BufferStats {
        let c = &self.log.counters;
        let (disk_bytes, segments, unsettled) = self.log.snapshot();
        BufferStats {
            appended: c.appended.load(Ordering::Relaxed),
            replayed: c.replayed.load(Ordering::Relaxed),
            settled: c.settled.load(Ordering::Relaxed),
            abandoned: c.abandoned.load(Ordering::Relaxed),
            dropped_newest: c.dropped_newest.load(Ordering::Relaxed),
            dropped_oldest: c.dropped_oldest.load(Ordering::Relaxed),
            evicted: c.evicted.load(Ordering::Relaxed),
            evicted_left_behind: c.evicted_left_behind.load(Ordering::Relaxed),
            fsync_failed: self.log.fsync_failed.load(Ordering::Relaxed),
            write_errors: c.write_errors.load(Ordering::Relaxed),
            corrupt_records: c.corrupt_records.load(Ordering::Relaxed),
            corrupt_bytes: c.corrupt_bytes.load(Ordering::Relaxed),
            torn_tail_bytes: c.torn_tail_bytes.load(Ordering::Relaxed),
            segments_deleted: c.segments_deleted.load(Ordering::Relaxed),
            fsyncs: c.fsyncs.load(Ordering::Relaxed),
            undecodable: c.undecodable.load(Ordering::Relaxed),
            undecodable_not_kept: self.log.not_kept_in_log(),
            disk_bytes,
            max_bytes: self.log.max_bytes,
            segments,
            unsettled,
        }
    }

    /// Forces appended records to disk and records acknowledgements now (whatever the fsync
    /// policy; `never` skips the fsync but still writes the acknowledgement file).
    ///
    /// # Errors
    /// The I/O error of the fsync or of the acknowledgement file; after any failed fsync since
    /// open, always an error (a retried fsync can succeed without the data being on disk).
    pub fn sync(&self) -> io::Result<()> {
        self.log.sync(true)
    }

    /// Shuts the pipeline down ([`Pipeline::shutdown`]: stop accepting, flush, deliver until
    /// `deadline`), then closes the log: syncs it and records what was acknowledged, so a
    /// restart replays exactly the events left behind.
    pub async fn shutdown(&self, deadline: Duration) -> Vec<ShutdownReport> {
        let reports = self.pipeline.shutdown(deadline).await;
        self.wait_replayed().await;
        let log = Arc::clone(&self.log);
        match tokio::task::spawn_blocking(move || log.close()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "closing the buffer failed"),
            Err(e) => tracing::error!(error = %e, "closing the buffer failed"),
        }
        reports
    }
}

/// A record whose checksum holds but which does not decode: kept aside with the reason, then
/// freed; left in the log (replayed at the next start) when it cannot be kept.
async fn keep_undecodable(log: &Arc<Log>, seq: u64, error: String, event_json: &[u8]) {
    let keeper = Arc::clone(log);
    let json = event_json.to_vec();
    let reason = error.clone();
    let kept = tokio::task::spawn_blocking(move || keeper.keep_undecodable(seq, &reason, &json))
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e.to_string())));
    match kept {
        Ok(path) => {
            tracing::error!(seq, %error, kept_in = %path.display(), "a buffered record does not decode as an event (written by another version?); it was kept aside with the reason and will not be delivered");
            log.abandon(seq);
        }
        Err(io) => {
            log.not_kept(seq);
            tracing::error!(seq, %error, io_error = %io, "a buffered record does not decode as an event and cannot be kept aside; it stays in the buffer, and the next start tries again")
        }
    }
}

/// Hands the records found at open to the pipeline, in log order.
async fn replay(log: Arc<Log>, pipeline: Pipeline, segments: Vec<FoundSegment>) {
    for segment in segments {
        let path = segment.path.clone();
        let data = match tokio::task::spawn_blocking(move || std::fs::read(&path)).await {
            Ok(Ok(data)) => data,
            Ok(Err(e)) if e.kind() == io::ErrorKind::NotFound => {
                // Evicted by `drop_oldest` before its turn: its records never reach the pipeline.
                log.lost_before_replay(segment.id);
                continue;
            }
            Ok(Err(e)) => {
                tracing::error!(segment = segment.id, error = %e, "cannot read a buffer segment to replay; it stays for the next start");
                log.not_replayed(segment.id);
                continue;
            }
            Err(_) => return,
        };
        // The same frames `Log::open` counted (a stray frame reusing a pending number must not
        // be replayed in its place).
        let (frames, mut damage) = frame::scan(&data);
        for f in log::plausible(frames, segment.previous_last, data.len(), &mut damage) {
            if !log.is_pending(f.seq) {
                continue;
            }
            let event: SecurityEvent = match serde_json::from_slice(f.event_json) {
                Ok(event) => event,
                Err(e) => {
                    keep_undecodable(&log, f.seq, e.to_string(), f.event_json).await;
                    continue;
                }
            };
            let record = Record {
                event: Arc::new(event),
                trace: f.trace,
            };
            if pipeline.submit_with_seq(record, f.seq).await.is_err() {
                return; // shutting down: the rest stays in the log for the next start
            }
            log.counters.replayed.fetch_add(1, Ordering::Relaxed);
            log.replayed_through.fetch_max(f.seq + 1, Ordering::Relaxed);
        }
    }
}
