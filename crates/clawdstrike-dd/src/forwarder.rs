//! The running forwarder: one Datadog exporter per configured region, one pipeline, one
//! metrics reporter per exporter, and the shutdown report.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use clawdstrike_datadog::exporter::DatadogExporter;
use clawdstrike_datadog::metrics::{MetricsHandle, MetricsReporter};
use clawdstrike_export::{
    BufferConfig, BufferStats, DurablePipeline, DurableSubmitError, Pipeline, Record, SettleHook,
    ShutdownReport, SubmitBatch, SubmitError,
};
use clawdstrike_keys::KeyHolder;

use crate::config::Settings;

/// Where inputs submit: the pipeline, or the durable buffer in front of it.
#[derive(Debug, Clone)]
pub(crate) enum Sink {
    /// In-memory queues only.
    Memory(Pipeline),
    /// The write-ahead log (`buffer: { type: disk }`): an event is on disk once taken.
    Durable(DurablePipeline),
}

/// Why a sink did not take an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Shutting down.
    Closed,
    /// A queue (or the disk buffer) is full: `why` names it.
    Full(String),
    /// The event is larger than the whole disk buffer: bad input, never taken however often
    /// it is retried.
    TooLarge(String),
    /// Anything else (a buffer write or fsync failed).
    Failed(String),
}

/// What a file input's submit came to ([`Sink::submit_input`]).
#[derive(Debug)]
pub(crate) enum Submitted {
    /// Taken.
    Taken,
    /// Larger than the disk buffer: a bad line for the rejects file, with why.
    TooLarge {
        event: Arc<clawdstrike_schema::SecurityEvent>,
        why: String,
    },
    /// Not taken (logged), with why.
    Refused {
        event: Arc<clawdstrike_schema::SecurityEvent>,
        why: Refused,
    },
}

/// Why [`Forwarder::start`] failed.
#[derive(Debug)]
pub(crate) struct StartError {
    /// What failed, for the user.
    pub(crate) message: String,
    /// A failure of the moment, not of the configuration: a key store that cannot be reached,
    /// a disk buffer directory that cannot be opened or is locked by another process. A later
    /// start may succeed (exit 1, which a supervisor restarts); otherwise exit 2.
    pub(crate) transient: bool,
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<StartError> for String {
    fn from(e: StartError) -> String {
        e.message
    }
}

impl StartError {
    fn config(e: impl std::fmt::Display) -> StartError {
        StartError {
            message: e.to_string(),
            transient: false,
        }
    }
}

impl From<clawdstrike_datadog::exporter::BuildError> for StartError {
    fn from(e: clawdstrike_datadog::exporter::BuildError) -> StartError {
        let transient = matches!(
            &e,
            clawdstrike_datadog::exporter::BuildError::Key { source, .. } if source.is_transient()
        );
        StartError {
            message: e.to_string(),
            transient,
        }
    }
}

impl From<clawdstrike_export::OpenError> for StartError {
    fn from(e: clawdstrike_export::OpenError) -> StartError {
        // The lock of another process, or an I/O hiccup, passes; a directory that cannot be
        // written (permissions, a read-only filesystem, a file in the way) needs a human.
        use std::io::ErrorKind::{
            AlreadyExists, NotADirectory, PermissionDenied, ReadOnlyFilesystem,
        };
        let transient = matches!(
            &e,
            clawdstrike_export::OpenError::Io { source, .. }
                if !matches!(
                    source.kind(),
                    PermissionDenied | ReadOnlyFilesystem | NotADirectory | AlreadyExists
                )
        );
        StartError {
            message: e.to_string(),
            transient,
        }
    }
}

/// How long the HTTP input waits for room in a full disk buffer before answering 503.
const DURABLE_TRY_WAIT: Duration = Duration::from_millis(250);

/// How many submits a file input (backfill or `--follow`) keeps awaiting the sink at once.
/// Under the disk buffer's `fsync: always` each waits for an fsync, and those waiting together
/// share one: a window, not one at a time, is what lets a single input go faster than one
/// fsync per event. Submits start in input order; one that waits for room may be overtaken.
pub(crate) const SUBMITS_IN_FLIGHT: usize = 256;

impl Sink {
    /// The pipeline behind the sink.
    pub(crate) fn pipeline(&self) -> &Pipeline {
        match self {
            Sink::Memory(p) => p,
            Sink::Durable(d) => d.pipeline(),
        }
    }

    /// True when a taken event is already safe on disk.
    pub(crate) fn is_durable(&self) -> bool {
        matches!(self, Sink::Durable(_))
    }

    /// Forces the disk buffer's appended records to disk (blocking; nothing without one).
    pub(crate) fn sync_buffer(&self) -> std::io::Result<()> {
        match self {
            Sink::Memory(_) => Ok(()),
            Sink::Durable(d) => d.sync(),
        }
    }

    /// Submits, waiting for room (backpressure); `seq` for the follow checkpoint (memory
    /// only: the durable buffer numbers its own records). Cancel-safe.
    pub(crate) async fn submit(&self, record: Record, seq: Option<u64>) -> Result<(), Refused> {
        match self {
            Sink::Memory(p) => match seq {
                Some(seq) => p.submit_with_seq(record, seq).await,
                None => p.submit(record).await,
            }
            .map_err(refused),
            Sink::Durable(d) => d.submit(record).await.map_err(durable_refused),
        }
    }

    /// [`submit`](Self::submit) for a file input: an event too large for the disk buffer comes
    /// back for the rejects file; any other refusal is logged.
    pub(crate) async fn submit_input(&self, record: Record, seq: Option<u64>) -> Submitted {
        let event = Arc::clone(&record.event);
        match self.submit(record, seq).await {
            Ok(()) => Submitted::Taken,
            Err(Refused::TooLarge(why)) => Submitted::TooLarge { event, why },
            Err(why) => {
                tracing::error!(reason = ?why, event_id = %event.event_id, "an event was read but not taken");
                Submitted::Refused { event, why }
            }
        }
    }

    /// Takes the events of one HTTP body ([`BodyIntake`]).
    pub(crate) fn body_intake(&self) -> BodyIntake<'_> {
        match self {
            Sink::Memory(p) => BodyIntake::Memory(p),
            Sink::Durable(d) => BodyIntake::Durable {
                batch: d.batch(),
                items: Vec::new(),
                failed: None,
            },
        }
    }
}

/// The events of one HTTP body on their way in. In memory each is submitted at once. With the
/// disk buffer they are appended one after the other and, at [`finish`](Self::finish), made
/// durable together (one fsync for the whole body under `fsync: always`, not one per event)
/// and handed to the pipeline in order; should the log fill first, what the body appended so
/// far is committed before waiting for room (only its delivery can free room). Dropped before
/// `finish` ends (the client went away), it frees what it appended and did not hand over:
/// nothing of an unanswered body is kept but what was taken for good.
pub(crate) enum BodyIntake<'a> {
    Memory(&'a Pipeline),
    Durable {
        batch: SubmitBatch<'a>,
        /// The body's item number of each event appended to the batch, in order: those taken
        /// are the first [`SubmitBatch::taken`] (whatever commits were cut short).
        items: Vec<u64>,
        /// A commit part way failed: the events from that item on are not taken.
        failed: Option<NotTaken>,
    },
}

/// The events of a body that [`BodyIntake`] counted as taken but could not take.
#[derive(Debug)]
pub(crate) struct NotTaken {
    /// The first of them: the body's items before it were taken (or refused on their own), the
    /// ones from it on were not.
    pub(crate) first_item: u64,
    pub(crate) why: Refused,
}

/// How long a body's fsync may take before the answer is a 503 (nothing of it taken): a disk
/// slower than that is stuck, not slow.
const BODY_SYNC_WAIT: Duration = Duration::from_secs(5);

impl BodyIntake<'_> {
    /// Whether any of the body's events was taken for good, so that a client sending the body
    /// again would duplicate it (`accepted`: the events counted as taken so far). With the disk
    /// buffer, events appended and not committed are not: they are freed if the body stops.
    pub(crate) fn any_taken(&self, accepted: usize) -> bool {
        match self {
            BodyIntake::Memory(_) => accepted > 0,
            BodyIntake::Durable { batch, .. } => batch.taken() > 0,
        }
    }

    /// Takes body item `item` without waiting for room in memory ([`Refused::Full`]); the disk
    /// buffer is given a moment ([`DURABLE_TRY_WAIT`]), since its appends wait for room.
    pub(crate) async fn try_take(&mut self, item: u64, record: Record) -> Result<(), Refused> {
        match self {
            BodyIntake::Memory(p) => p.try_submit(record).map_err(refused),
            BodyIntake::Durable { .. } => {
                match tokio::time::timeout(DURABLE_TRY_WAIT, self.take(item, record)).await {
                    Ok(r) => r,
                    Err(_) => Err(Refused::Full(format!(
                        "the disk buffer did not take the event within {} ms (it, or an export queue, is full)",
                        DURABLE_TRY_WAIT.as_millis()
                    ))),
                }
            }
        }
    }

    /// Takes body item `item`, waiting for room (the caller bounds the wait). Cancel-safe.
    pub(crate) async fn take(&mut self, item: u64, record: Record) -> Result<(), Refused> {
        use futures_util::FutureExt;
        let (batch, items, failed) = match self {
            BodyIntake::Memory(p) => return p.submit(record).await.map_err(refused),
            BodyIntake::Durable {
                batch,
                items,
                failed,
            } => (batch, items, failed),
        };
        if let Some(f) = failed {
            return Err(f.why.clone());
        }
        let mut before = batch.pending();
        let appended = match batch.append(record.clone()).now_or_never() {
            Some(appended) => appended,
            None => {
                // The log is full, and this body's events in it can only make room once they
                // are committed and delivered: committed first.
                if batch.pending() > 0
                    && let Err(e) = batch.commit().await
                {
                    let why = durable_refused(e);
                    *failed = items.get(batch.taken()).map(|&first_item| NotTaken {
                        first_item,
                        why: why.clone(),
                    });
                    return Err(why);
                }
                before = batch.pending();
                batch.append(record).await
            }
        };
        appended.map_err(durable_refused)?;
        // Taken yet not appended: dropped by `when_full: drop_newest` (counted).
        if batch.pending() > before {
            items.push(item);
        }
        Ok(())
    }

    /// With the disk buffer: waits for the events appended to be durable, then hands them to
    /// the pipeline, waiting for room in its queues [`DURABLE_TRY_WAIT`] while none of the
    /// body is taken, `wait` once some is (as the events of a body that fit partly wait in
    /// memory). Those it could not take are freed, and said: the first of them, and why.
    pub(crate) async fn finish(self, wait: Duration) -> Result<(), NotTaken> {
        let BodyIntake::Durable {
            mut batch,
            items,
            failed,
        } = self
        else {
            return Ok(());
        };
        if let Some(f) = failed {
            return Err(f);
        }
        let mut why = match tokio::time::timeout(BODY_SYNC_WAIT, batch.sync()).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(durable_refused(e)),
            Err(_) => Some(Refused::Full(format!(
                "the disk buffer's fsync did not complete within {} s",
                BODY_SYNC_WAIT.as_secs()
            ))),
        };
        // What synced is handed over (a failed fsync keeps those before it).
        if !matches!(why, Some(Refused::Full(_))) {
            let mut budget = if batch.taken() > 0 {
                wait
            } else {
                DURABLE_TRY_WAIT
            };
            loop {
                match tokio::time::timeout(budget, batch.commit()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        why.get_or_insert(durable_refused(e));
                    }
                    // Part of the body is taken now: the rest may wait longer (the commit
                    // goes on where it stopped).
                    Err(_) if batch.taken() > 0 && budget < wait => {
                        budget = wait;
                        continue;
                    }
                    Err(_) => {
                        why.get_or_insert(Refused::Full(format!(
                            "the export queues did not take the body's events within {} ms",
                            budget.as_millis()
                        )));
                    }
                }
                break;
            }
        }
        match (items.get(batch.taken()), why) {
            (None, _) => Ok(()),
            (Some(&first_item), why) => Err(NotTaken {
                first_item,
                // Not expected: every path that leaves an event untaken says why.
                why: why.unwrap_or_else(|| {
                    Refused::Failed("the disk buffer did not take every event".to_owned())
                }),
            }),
        }
    }
}

fn refused(e: SubmitError) -> Refused {
    match e {
        SubmitError::Closed => Refused::Closed,
        SubmitError::Full { exporter } => {
            Refused::Full(format!("the queue of exporter `{exporter}` is full"))
        }
    }
}

fn durable_refused(e: DurableSubmitError) -> Refused {
    match e {
        DurableSubmitError::Closed => Refused::Closed,
        too_large @ DurableSubmitError::TooLarge { .. } => Refused::TooLarge(too_large.to_string()),
        other => Refused::Failed(other.to_string()),
    }
}

/// Everything that runs while shipping.
#[derive(Debug)]
pub(crate) struct Forwarder {
    /// Where inputs submit.
    pub(crate) sink: Sink,
    metrics: Vec<MetricsHandle>,
}

/// What the shutdown found.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// Per exporter.
    pub(crate) reports: Vec<ShutdownReport>,
    /// The disk buffer's counters after it closed, if there is one.
    buffer: Option<BufferStats>,
}

impl Outcome {
    /// Events neither delivered nor filtered, over every exporter, and those the disk buffer
    /// dropped by its `when_full` policy or could not read back (never submitted to an
    /// exporter).
    pub(crate) fn undelivered(&self) -> u64 {
        let exporters: u64 = self
            .reports
            .iter()
            .map(|r| r.dead_lettered + r.dropped.total())
            .sum();
        let buffer = self
            .buffer
            .as_ref()
            .map_or(0, |b| b.dropped_newest + b.dropped_oldest + b.undecodable);
        exporters + buffer
    }

    /// Events kept in the disk buffer for the next start (not delivered by this run).
    pub(crate) fn kept_for_next_start(&self) -> u64 {
        self.buffer.as_ref().map_or(0, |b| b.unsettled)
    }

    /// True when the disk buffer's fsync failed (what the follow checkpoint must not trust).
    pub(crate) fn buffer_fsync_failed(&self) -> bool {
        self.buffer.as_ref().is_some_and(|b| b.fsync_failed)
    }

    /// Prints the report to stderr.
    pub(crate) fn print(&self) {
        for r in &self.reports {
            eprintln!(
                "clawdstrike-dd: exporter `{}`: submitted {}, delivered {}, filtered {}, dead-lettered {}, dropped {} (queue full {}, left behind at the deadline {}){}",
                r.exporter,
                r.submitted,
                r.delivered,
                r.filtered,
                r.dead_lettered,
                r.dropped.total(),
                r.dropped.queue_full_newest + r.dropped.queue_full_oldest,
                r.left_behind,
                if r.deadline_reached {
                    "; the shutdown deadline was reached"
                } else {
                    ""
                },
            );
            if r.dead_letter_write_failed > 0 || r.dead_letter_writes_unfinished > 0 {
                eprintln!(
                    "clawdstrike-dd: exporter `{}`: of its dead letters, {} could not be written and {} were still being written at the deadline (the log names their events)",
                    r.exporter, r.dead_letter_write_failed, r.dead_letter_writes_unfinished
                );
            }
        }
        if let Some(b) = &self.buffer {
            eprintln!(
                "clawdstrike-dd: disk buffer: {} events appended ({} fsyncs), {} replayed, {} settled",
                b.appended, b.fsyncs, b.replayed, b.settled
            );
            if b.dropped_newest > 0 {
                eprintln!(
                    "clawdstrike-dd: the disk buffer was full: {} new events were dropped (when_full: drop_newest)",
                    b.dropped_newest
                );
            }
            if b.evicted > 0 {
                eprintln!(
                    "clawdstrike-dd: the disk buffer was full: {} of its oldest events were evicted (when_full: drop_oldest); {} of them were lost before their replay, {} were left behind at the deadline (lost: no longer on disk), the others were settled from memory",
                    b.evicted, b.dropped_oldest, b.evicted_left_behind
                );
            }
            if b.undecodable > 0 {
                eprintln!(
                    "clawdstrike-dd: {} events in the disk buffer could not be read back as events (written by another version?); they were not sent, and are kept with the reason in undecodable.ndjson in the buffer's directory",
                    b.undecodable
                );
            }
            if b.fsync_failed {
                eprintln!(
                    "clawdstrike-dd: an fsync of the disk buffer failed: some events may not have survived a power loss"
                );
            }
            if b.undecodable_not_kept > 0 {
                eprintln!(
                    "clawdstrike-dd: {} records in the disk buffer could not be read back as events and could not be kept aside in undecodable.ndjson either (see the errors above); they stay in the buffer, will not be sent, and the next start tries again to keep them aside",
                    b.undecodable_not_kept
                );
            }
            let to_send = b.unsettled.saturating_sub(b.undecodable_not_kept);
            if to_send > 0 {
                eprintln!(
                    "clawdstrike-dd: {to_send} events are kept in the disk buffer and sent at the next start"
                );
            }
        }
    }
}

/// How exporters get their keys.
#[derive(Debug, Clone)]
pub(crate) enum Keys {
    /// From each exporter's configured source.
    Configured,
    /// One fixed key for every exporter (the demo).
    Static(KeyHolder),
}

impl Forwarder {
    /// Builds the exporters (loading their keys), the pipeline and the metrics reporters.
    ///
    /// # Errors
    /// A message naming the exporter (never a key).
    pub(crate) async fn start(
        settings: &Settings,
        keys: Keys,
        hook: Option<Arc<dyn SettleHook>>,
    ) -> Result<Forwarder, StartError> {
        let pipeline_cell: Arc<OnceLock<Pipeline>> = Arc::new(OnceLock::new());
        let mut builder = Pipeline::builder();
        let mut reporters = Vec::new();
        for entry in &settings.exporters {
            let exporter = match &keys {
                Keys::Configured => {
                    DatadogExporter::from_config(&entry.name, &entry.resolved).await?
                }
                Keys::Static(holder) => DatadogExporter::from_config_with_key(
                    &entry.name,
                    &entry.resolved,
                    holder.clone(),
                )?,
            };
            let cell = Arc::clone(&pipeline_cell);
            let name = entry.name.clone();
            let stats = Arc::new(move || {
                cell.get()
                    .and_then(|p| p.stats().into_iter().find(|s| s.name == name))
            });
            if let Some(reporter) = MetricsReporter::for_exporter(&exporter, &entry.resolved, stats)
            {
                reporters.push(reporter);
            }
            builder = builder.with_exporter(Arc::new(exporter), entry.resolved.pipeline.clone());
        }
        let sink = match &settings.file.buffer {
            BufferConfig::Disk(disk) => {
                // The log installs its own settle hook: a followed line is safe once taken.
                let (durable, found) = DurablePipeline::open(disk, builder).await?;
                if found.to_replay > 0 {
                    tracing::info!(
                        events = found.to_replay,
                        path = %disk.path.display(),
                        "replaying undelivered events from the disk buffer"
                    );
                }
                Sink::Durable(durable)
            }
            _ => {
                if let Some(hook) = hook {
                    builder = builder.with_settle_hook(hook);
                }
                Sink::Memory(builder.build().map_err(StartError::config)?)
            }
        };
        let _ = pipeline_cell.set(sink.pipeline().clone());
        let metrics = reporters.into_iter().map(MetricsReporter::spawn).collect();
        Ok(Forwarder { sink, metrics })
    }

    /// Drains the pipeline within `deadline`, then flushes the metrics with what time is left
    /// (at least half a second).
    pub(crate) async fn shutdown(self, deadline: Duration) -> Outcome {
        let started = Instant::now();
        let reports = match &self.sink {
            Sink::Memory(p) => p.shutdown(deadline).await,
            Sink::Durable(d) => d.shutdown(deadline).await,
        };
        let left = deadline
            .saturating_sub(started.elapsed())
            .max(Duration::from_millis(500));
        // Each reporter flushes on its own task, so regions flush in parallel.
        let flushes: Vec<_> = self
            .metrics
            .into_iter()
            .map(|handle| tokio::spawn(handle.shutdown_within(left)))
            .collect();
        for flush in flushes {
            let _ = flush.await;
        }
        let buffer = match &self.sink {
            Sink::Memory(_) => None,
            Sink::Durable(d) => Some(d.buffer_stats()),
        };
        Outcome { reports, buffer }
    }
}

#[cfg(test)]
mod tests {
    use clawdstrike_datadog::exporter::BuildError;
    use clawdstrike_keys::KeyError;

    use super::*;

    /// A body that fills the disk buffer while Datadog holds every request: the commit inside
    /// `take` is cut short by the 250 ms wait after handing some events over. Once Datadog
    /// answers, the rest of the body goes in, and `finish` takes every event: the item numbers
    /// follow what the batch took however its commits were cut. (They once lost step with it,
    /// and the answer sent the client back to items already taken.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_body_whose_commit_was_cut_short_is_taken_whole() {
        use clawdstrike_export::testing::{ScriptedExporter, Step};
        use clawdstrike_export::{DiskBufferConfig, ExporterConfig, FsyncPolicy};
        let dir = tempfile::tempdir().unwrap();
        let exporter = Arc::new(
            ScriptedExporter::new("gated")
                .with_default(Step::WaitForRelease(Box::new(Step::Succeed))),
        );
        let config = DiskBufferConfig::new(dir.path())
            .with_fsync(FsyncPolicy::Never)
            .with_max_bytes(8192)
            .with_segment_bytes(4096);
        let pipeline = ExporterConfig::default()
            .with_queue_capacity(1)
            .with_concurrency(1)
            .with_max_batch_events(1)
            .with_flush_interval(Duration::from_millis(5));
        let builder = Pipeline::builder().with_exporter(Arc::clone(&exporter) as _, pipeline);
        let (durable, _) = DurablePipeline::open(&config, builder).await.unwrap();
        let sink = Sink::Durable(durable.clone());
        let events: Vec<clawdstrike_schema::SecurityEvent> = crate::demo::SAMPLES
            .lines()
            .map(|l| clawdstrike_schema::decode_event(l.as_bytes()).unwrap())
            .collect();
        let mut intake = sink.body_intake();
        let mut item = 0;
        let full = loop {
            item += 1;
            let event = events[(item as usize) % events.len()].clone();
            match intake.try_take(item, Record::new(event)).await {
                Ok(()) => assert!(item < 100, "the buffer never filled"),
                Err(why) => break why,
            }
        };
        assert!(matches!(full, Refused::Full(_)), "{full:?}");
        assert!(
            intake.any_taken(0),
            "the commit handed some over before it was cut"
        );
        exporter.release();
        let event = events[(item as usize) % events.len()].clone();
        intake.take(item, Record::new(event)).await.unwrap();
        if let Err(not) = intake.finish(Duration::from_secs(5)).await {
            panic!("{not:?}");
        }
        let reports = durable.shutdown(Duration::from_secs(5)).await;
        assert_eq!(reports[0].delivered, item);
    }

    fn key_error(source: KeyError) -> StartError {
        StartError::from(BuildError::Key {
            exporter: "datadog".to_owned(),
            source,
        })
    }

    /// Exit 1 (a supervisor restarts) for what a later start may not meet; exit 2 (left
    /// stopped) for what needs a human.
    #[test]
    fn only_failures_of_the_moment_are_transient() {
        let provider = || "vault at http://127.0.0.1:8200".to_owned();
        let detail = || "x".to_owned();
        let unavailable = KeyError::Unavailable {
            provider: provider(),
            detail: detail(),
        };
        assert!(key_error(unavailable).transient);
        for needs_a_human in [
            KeyError::NotFound {
                provider: provider(),
                detail: detail(),
            },
            KeyError::Forbidden {
                provider: provider(),
                detail: detail(),
            },
        ] {
            assert!(!key_error(needs_a_human).transient);
        }
        let locked = clawdstrike_export::OpenError::Io {
            path: "/var/lib/clawdstrike-dd/buffer".into(),
            source: std::io::Error::new(std::io::ErrorKind::WouldBlock, "in use"),
        };
        assert!(StartError::from(locked).transient);
        for kind in [
            std::io::ErrorKind::PermissionDenied,
            std::io::ErrorKind::ReadOnlyFilesystem,
            std::io::ErrorKind::NotADirectory,
        ] {
            let denied = clawdstrike_export::OpenError::Io {
                path: "/var/lib/clawdstrike-dd/buffer".into(),
                source: std::io::Error::from(kind),
            };
            assert!(!StartError::from(denied).transient, "{kind:?}");
        }
        let invalid = clawdstrike_export::OpenError::Config("max_bytes: 0".to_owned());
        assert!(!StartError::from(invalid).transient);
    }
}
