//! The exporter framework every Clawdstrike exporter builds on (Datadog today; Splunk,
//! Elastic, Sentinel next): the [`Exporter`] trait and the [`Pipeline`] around it.
//!
//! An exporter says *whether* each event of a batch was exported, failed retryably (with an
//! optional retry-after hint) or failed permanently; the pipeline owns *how* events get there:
//! a bounded queue per exporter with a `when_full` policy, filtering, batching by count, bytes
//! and age, up to N batches in flight, retry with exponential backoff and full jitter,
//! dead letters, a shutdown with a deadline, and counters for every outcome. Loss is never
//! silent: every event is counted somewhere.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use async_trait::async_trait;
//! use clawdstrike_export::{ExportResult, Exporter, ExporterConfig, Pipeline, Record, WhenFull};
//! use clawdstrike_schema::{EventType, ResourceType, SecurityEvent, Severity};
//!
//! #[derive(Debug)]
//! struct Stdout;
//!
//! #[async_trait]
//! impl Exporter for Stdout {
//!     fn name(&self) -> &str {
//!         "stdout"
//!     }
//!
//!     async fn export(&self, batch: &[Record]) -> ExportResult {
//!         for record in batch {
//!             println!("{}", record.event.to_json());
//!         }
//!         ExportResult::exported(batch.len())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let pipeline = Pipeline::builder()
//!     .with_exporter(
//!         Arc::new(Stdout),
//!         ExporterConfig::default()
//!             .with_when_full(WhenFull::DropOldest)
//!             .with_max_batch_events(500)
//!             .with_flush_interval(Duration::from_millis(200)),
//!     )
//!     .build()?;
//!
//! let event = SecurityEvent::builder(EventType::ForbiddenPath)
//!     .agent_id("agent-7")
//!     .session_id("sess-123")
//!     .action("file_access")
//!     .denied("forbidden_path", Severity::High, "access to a forbidden path")
//!     .resource(ResourceType::File, "/home/user/.ssh/id_rsa")
//!     .build()?;
//! pipeline.submit(Record::new(event)).await?;
//!
//! let reports = pipeline.shutdown(Duration::from_secs(5)).await;
//! assert_eq!(reports[0].delivered, 1);
//! # Ok(())
//! # }
//! ```
//!
//! # Features
//!
//! | feature | what it adds |
//! |---|---|
//! | `testing` | `testing::ScriptedExporter`: an in-memory exporter scripted per call (`testing::Step`: succeed, fail retryably with or without retry-after, fail permanently, partial or short results, delay, wait for release, hang forever) or per event, recording every event it exported |
//!
//! # Configuration and defaults
//!
//! Each exporter has an [`ExporterConfig`] (serde, YAML-friendly, unknown fields rejected,
//! every field optional) with `with_*` setters. The crate reads no environment variables.
//!
//! | setting | default | meaning |
//! |---|---|---|
//! | `queue.capacity` | 5,000 | events waiting per exporter |
//! | `queue.when_full` | `block` | `block` (backpressure), `drop_newest`, `drop_oldest` |
//! | `batch.max_events` | 1,000 | events per batch |
//! | `batch.max_bytes` | 4,250,000 | bytes per batch, summed from [`Exporter::estimate_size`] |
//! | `batch.flush_interval_ms` | 1,000 | oldest event's wait before a partial batch goes |
//! | `concurrency` | 4 | batches in flight (exporting or backing off) |
//! | `retry.initial_backoff_ms` | 1,000 | first backoff ceiling (at least 1) |
//! | `retry.max_backoff_ms` | 30,000 | largest backoff ceiling |
//! | `retry.multiplier` | 2.0 | ceiling growth per retry; the delay is uniform in `[0, ceiling]` |
//! | `retry.max_attempts` | 10 | attempts per event (`null`: unlimited) |
//! | `retry.max_elapsed_ms` | 300,000 | time per event from its first attempt (`null`: unlimited) |
//! | `retry.max_retry_after_ms` | 60,000 | cap on a destination's retry-after hint (at least 1) |
//! | `filter.*` | none | `min_severity`, `include_/exclude_event_types`, `include_/exclude_guards` |
//! | `dead_letter.path` | none | JSON-lines file; without one, dead letters are counted and logged |
//! | `dead_letter.max_file_bytes` | 50 MiB | rotate past this size |
//! | `dead_letter.max_files` | 5 | rotated files kept (`path.1` newest) |
//!
//! [`PipelineBuilder::build`] enforces the ranges (capacity, batch limits, concurrency at
//! least 1; `multiplier >= 1`; `initial <= max` backoff), unique exporter names and
//! unique dead-letter files.
//!
//! # What happens to each event
//!
//! Per exporter, every event [`Pipeline::submit`] took ends up in exactly one of: *filtered*,
//! *delivered*, *dead-lettered*, *dropped* by the queue policy (`queue_full_newest`,
//! `queue_full_oldest`) or *left behind* when the shutdown deadline passed (counted as the drop
//! reason `shutdown_deadline`). [`ShutdownReport`] has these exact numbers:
//! `submitted == filtered + delivered + dead_lettered + dropped.total()`. A property test
//! checks it, per event id, under random exporter behaviour. Only failed events are retried;
//! permanent failures and exhausted retry budgets become dead letters ([`DeadLetter`], one
//! JSON line per event, fsynced before the event is settled); a dead-letter write (or its
//! fsync) that fails is logged with the event id, counted (`dead_letter_write_failed`), never
//! blocks the exporter, and is not settled, so a disk buffer keeps the event for the next
//! start. Events refused with an error
//! ([`SubmitError::Closed`], or [`SubmitError::Full`] from `try_submit`) were never taken.
//!
//! Fan-out isolation: each exporter has its own queue, batcher task, batch tasks and retry
//! state, so a slow or failing exporter never delays another's deliveries, as long as it does
//! not apply backpressure: with `when_full: block`, a full queue makes `submit` wait, which
//! holds back every exporter of the fan-out (one event is taken by all exporters or none).
//! Give an exporter that may stall a drop policy or a queue large enough to ride it out.
//!
//! Memory: per exporter the pipeline holds at most
//! `queue.capacity + (1 + concurrency) * batch.max_events` events (the queue, the batch being
//! assembled, the batches in flight); a drop policy keeps it there whatever the producer does.
//!
//! # Durable buffer
//!
//! [`DurablePipeline`] puts a write-ahead log on disk in front of the pipeline, so accepted
//! events survive a crash (even `SIGKILL`) and are replayed on the next start
//! ([`BufferConfig`], YAML `buffer: { type: disk, path, max_bytes, segment_bytes, fsync,
//! when_full }`):
//!
//! | setting | default | meaning |
//! |---|---|---|
//! | `path` | (required) | directory of the segment files, the `ack` file and a `lock` file (one process at a time) |
//! | `max_bytes` | 256 MiB | bound on the segment files on disk |
//! | `segment_bytes` | 8 MiB | size past which a new segment file is started |
//! | `fsync` | `{ interval_ms: 1000 }` | `always` (each append waits for an fsync; concurrent appends share one), `never`, or in the background every N ms |
//! | `when_full` | `block` | `block`, `drop_newest` (counted, never submitted), `drop_oldest` (deletes the oldest segment: its records are no longer durable, counted as `evicted`; those then never delivered are counted in `dropped_oldest`) |
//!
//! - [`DurablePipeline::submit`] appends one CRC-32-checked frame (sequence number, trace
//!   context, event JSON) to the current segment with a `write` to the operating system
//!   before it returns, then submits the event with [`Pipeline::submit_with_seq`] using the
//!   record's sequence number.
//! - [`DurablePipeline::batch`] takes many events at once (an HTTP body): a [`SubmitBatch`]
//!   appends them one after the other, then [`SubmitBatch::commit`] waits for one fsync for
//!   all (under `always`) and submits them in order. What it takes is always the first ones
//!   appended; dropped, it frees the rest.
//! - A [`SettleHook`] counts, per record, the exporters that settled it ([`Settlement`]:
//!   delivered, dead-lettered, filtered or dropped by the queue policy); a record is
//!   acknowledged once all have, and a segment file is deleted once all its records are.
//!   Events left behind at the shutdown deadline are deliberately *not* settled.
//! - On [`DurablePipeline::open`] every segment is scanned; unacknowledged records are replayed
//!   in log order with their trace context (a background task,
//!   [`DurablePipeline::wait_replayed`]). What was acknowledged is recorded in an `ack` file
//!   (a watermark and settled ranges, CRC-checked) every second or at every `interval_ms`
//!   fsync, and at shutdown, so a clean
//!   restart replays exactly what was left behind; after a crash, records acknowledged since
//!   the last `ack` write are delivered again (at-least-once).
//! - A torn tail (an interrupted write) or a corrupt record is found by its checksum,
//!   counted ([`OpenReport`], [`BufferStats`]) and skipped; the scanner resynchronises on the
//!   next valid frame, so the records before and after it are replayed. Never a panic.
//!   A record whose checksum holds but which does not decode as an event (written by another
//!   version?) is not dropped: the replay keeps it, with the reason, in `undecodable.ndjson`
//!   beside the segments ([`BufferStats::undecodable`]); should that write fail, the record
//!   stays in the log and the next start tries again ([`BufferStats::undecodable_not_kept`]).
//! - Memory is still bounded by the pipeline's queues: the log holds exactly the events the
//!   pipeline holds (plus, until their segment is deleted, settled neighbours on disk).
//! - Fan-out: acknowledgement is per record, not per exporter, so a replay after a restart
//!   resends a record to every exporter, including those that had already delivered it.
//!
//! The lower-level seam it uses is public: anything that appends each event somewhere, submits
//! it with [`Pipeline::submit_with_seq`] and installs a [`SettleHook`] can do the same.
//!
//! # Telemetry
//!
//! [`Pipeline::stats`] returns an [`ExporterStats`] per exporter (atomic loads: accepted,
//! filtered, exported, retried, failed, dead-lettered, drops by reason, queue depth, in flight,
//! and an export-latency histogram with raw bucket counts and `p50`/`p99`). A
//! [`BatchObserver`] sees every export call. `tracing` events: `debug` per batch, `warn` on
//! dead letters and on drops (rate-limited to powers of two), `error` on a failed dead-letter
//! write.
//!
//! # Architecture invariant
//!
//! Depends on `clawdstrike-schema` only among our crates; knows nothing of Datadog.

mod buffer;
mod config;
mod dead_letter;
mod exporter;
mod filter;
mod pipeline;
mod settle;
mod stats;
#[cfg(feature = "testing")]
pub mod testing;

pub use buffer::{
    BufferConfig, BufferStats, DiskBufferConfig, DurablePipeline, DurableSubmitError, FsyncPolicy,
    OpenError, OpenReport, SubmitBatch,
};
pub use config::{
    BatchConfig, ConfigError, DeadLetterConfig, ExporterConfig, FilterConfig, QueueConfig,
    RetryConfig, WhenFull,
};
pub use dead_letter::{DeadLetter, LockError, lock_shared_file};
pub use exporter::{
    ExportResult, Exporter, Failure, Health, Record, SchemaFormat, TraceContext,
    default_size_estimate,
};
pub use pipeline::{
    BatchObserver, BatchOutcome, BuildError, MAX_EXPORTERS, Pipeline, PipelineBuilder,
    ShutdownReport, SubmitError,
};
pub use settle::{SettleHook, Settlement};
pub use stats::{DropCounts, DropReason, ExporterStats, LATENCY_BUCKETS_MICROS, LatencySnapshot};
