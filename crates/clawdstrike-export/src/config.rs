//! Per-exporter settings: queue, batching, concurrency, retry, filter and dead letters.
//!
//! Every struct deserialises from YAML or JSON with every field optional (missing fields take
//! the documented default) and unknown fields rejected, and has `with_*` setters for code.
//! This crate reads no environment variables: the code (or file) configuration is the only one.

use std::path::PathBuf;
use std::time::Duration;

use clawdstrike_schema::{EventType, Severity};
use serde::{Deserialize, Serialize};

/// What `submit` does when an exporter's queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Wait for room (backpressure); `try_submit` returns [`SubmitError::Full`](crate::SubmitError::Full).
    #[default]
    Block,
    /// Drop the event being submitted (counted as `queue_full_newest`).
    DropNewest,
    /// Evict the oldest queued event to make room (counted as `queue_full_oldest`).
    DropOldest,
}

impl WhenFull {
    /// The wire name (`block`, `drop_newest`, `drop_oldest`).
    pub const fn as_str(self) -> &'static str {
        match self {
            WhenFull::Block => "block",
            WhenFull::DropNewest => "drop_newest",
            WhenFull::DropOldest => "drop_oldest",
        }
    }
}

/// The bounded queue in front of one exporter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueConfig {
    /// Maximum events waiting in the queue (default 5,000; at least 1).
    ///
    /// The default is five batches of the default size: enough to keep every concurrent
    /// request fed with one batch forming. Under the default `block` policy a larger queue
    /// adds memory and queueing delay but no throughput (measured: 10,000 held ~13 MiB more
    /// at peak and ran no faster). Raise it for bursty producers under a drop policy.
    pub capacity: usize,
    /// What to do when it is full (default `block`).
    pub when_full: WhenFull,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            capacity: 5_000,
            when_full: WhenFull::Block,
        }
    }
}

/// When a batch is sent: whichever limit is reached first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatchConfig {
    /// Maximum events per batch (default 1,000).
    pub max_events: usize,
    /// Maximum bytes per batch as summed by [`Exporter::estimate_size`](crate::Exporter::estimate_size)
    /// (default 4,250,000: 85% of Datadog's 5 MB). An event larger than this is sent alone.
    pub max_bytes: usize,
    /// Maximum age of a batch in milliseconds before it is sent anyway (default 1,000).
    pub flush_interval_ms: u64,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_events: 1_000,
            max_bytes: 4_250_000,
            flush_interval_ms: 1_000,
        }
    }
}

/// Retry with exponential backoff and full jitter.
///
/// Before retry `n` (1-based) the framework waits a uniformly random delay in
/// `[0, min(initial * multiplier^(n-1), max)]`, or the exporter's `retry_after` hint capped at
/// `max_retry_after_ms` when it gave one. An event is dead-lettered once it has been attempted
/// `max_attempts` times or the next retry would start later than `max_elapsed_ms` after its
/// first attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// First backoff ceiling in milliseconds (default 1,000).
    pub initial_backoff_ms: u64,
    /// Largest backoff ceiling in milliseconds (default 30,000).
    pub max_backoff_ms: u64,
    /// Growth of the ceiling per retry (default 2.0; at least 1.0).
    pub multiplier: f64,
    /// Attempts per event, the first included (default 10; `null` = unlimited).
    pub max_attempts: Option<u32>,
    /// Time budget per event from its first attempt, in milliseconds (default 300,000;
    /// `null` = unlimited).
    pub max_elapsed_ms: Option<u64>,
    /// Cap on a destination's `retry_after` hint, in milliseconds (default 60,000).
    pub max_retry_after_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            initial_backoff_ms: 1_000,
            max_backoff_ms: 30_000,
            multiplier: 2.0,
            max_attempts: Some(10),
            max_elapsed_ms: Some(300_000),
            max_retry_after_ms: 60_000,
        }
    }
}

/// Which events an exporter receives. An event must pass every rule that is set; empty lists
/// are not rules. Filtered events are counted as `filtered`, not as drops.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FilterConfig {
    /// Only events at least this severe (default: all).
    pub min_severity: Option<Severity>,
    /// Only these event types (default: all).
    pub include_event_types: Vec<EventType>,
    /// Never these event types.
    pub exclude_event_types: Vec<EventType>,
    /// Only events decided by these guards (default: all).
    pub include_guards: Vec<String>,
    /// Never events decided by these guards.
    pub exclude_guards: Vec<String>,
}

impl FilterConfig {
    /// Only events at least this severe.
    pub fn with_min_severity(mut self, severity: Severity) -> Self {
        self.min_severity = Some(severity);
        self
    }

    /// Only these event types.
    pub fn with_include_event_types(mut self, types: impl IntoIterator<Item = EventType>) -> Self {
        self.include_event_types = types.into_iter().collect();
        self
    }

    /// Never these event types.
    pub fn with_exclude_event_types(mut self, types: impl IntoIterator<Item = EventType>) -> Self {
        self.exclude_event_types = types.into_iter().collect();
        self
    }

    /// Only events decided by these guards.
    pub fn with_include_guards<S: Into<String>>(
        mut self,
        guards: impl IntoIterator<Item = S>,
    ) -> Self {
        self.include_guards = guards.into_iter().map(Into::into).collect();
        self
    }

    /// Never events decided by these guards.
    pub fn with_exclude_guards<S: Into<String>>(
        mut self,
        guards: impl IntoIterator<Item = S>,
    ) -> Self {
        self.exclude_guards = guards.into_iter().map(Into::into).collect();
        self
    }

    /// True when no rule is set (every event passes).
    pub fn is_empty(&self) -> bool {
        self.min_severity.is_none()
            && self.include_event_types.is_empty()
            && self.exclude_event_types.is_empty()
            && self.include_guards.is_empty()
            && self.exclude_guards.is_empty()
    }
}

/// Where events that cannot be delivered go: JSON lines, one per event, rotated by size.
///
/// Several processes may write the same file (a backfill beside the daemon, with the same
/// configuration): each line is written whole under the file's lock, and each process follows
/// the others' rotations. (On a filesystem without locks, the file is taken to be one
/// process's alone.) Within one pipeline, two exporters may not share a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeadLetterConfig {
    /// The file (e.g. `/var/lib/clawdstrike/datadog-us1.dlq.jsonl`). Default: none, in which
    /// case dead letters are counted and logged at `warn` (with the event id) but not written.
    pub path: Option<PathBuf>,
    /// Rotate when the file would grow past this many bytes (default 50 MiB).
    pub max_file_bytes: u64,
    /// Rotated files kept (`path.1` newest … `path.N` oldest; default 5; 0 = none kept).
    pub max_files: u32,
}

impl Default for DeadLetterConfig {
    fn default() -> Self {
        Self {
            path: None,
            max_file_bytes: 50 * 1024 * 1024,
            max_files: 5,
        }
    }
}

/// Everything the pipeline needs to know about one exporter besides the exporter itself.
///
/// ```
/// # use clawdstrike_export::{ExporterConfig, WhenFull};
/// // YAML works the same way (e.g. with `serde_yaml_ng`); JSON keeps this example dependency-free.
/// let json = r#"{"queue": {"capacity": 5000, "when_full": "drop_oldest"}, "concurrency": 2}"#;
/// let config: ExporterConfig = serde_json::from_str(json).unwrap();
/// assert_eq!(config.queue.when_full, WhenFull::DropOldest);
/// assert_eq!(config.batch.max_events, 1000); // default
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExporterConfig {
    /// The bounded queue.
    pub queue: QueueConfig,
    /// Batching limits.
    pub batch: BatchConfig,
    /// Maximum batches in flight (being exported or waiting to be retried) at once (default 4).
    pub concurrency: usize,
    /// Retry policy.
    pub retry: RetryConfig,
    /// Which events this exporter receives.
    pub filter: FilterConfig,
    /// Dead letters.
    pub dead_letter: DeadLetterConfig,
}

impl Default for ExporterConfig {
    fn default() -> Self {
        Self {
            queue: QueueConfig::default(),
            batch: BatchConfig::default(),
            concurrency: 4,
            retry: RetryConfig::default(),
            filter: FilterConfig::default(),
            dead_letter: DeadLetterConfig::default(),
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl ExporterConfig {
    /// Queue capacity in events.
    pub fn with_queue_capacity(mut self, capacity: usize) -> Self {
        self.queue.capacity = capacity;
        self
    }

    /// What to do when the queue is full.
    pub fn with_when_full(mut self, when_full: WhenFull) -> Self {
        self.queue.when_full = when_full;
        self
    }

    /// Maximum events per batch.
    pub fn with_max_batch_events(mut self, max: usize) -> Self {
        self.batch.max_events = max;
        self
    }

    /// Maximum estimated bytes per batch.
    pub fn with_max_batch_bytes(mut self, max: usize) -> Self {
        self.batch.max_bytes = max;
        self
    }

    /// Maximum age of a batch (millisecond precision).
    pub fn with_flush_interval(mut self, interval: Duration) -> Self {
        self.batch.flush_interval_ms = millis(interval);
        self
    }

    /// Maximum batches in flight.
    pub fn with_concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency;
        self
    }

    /// The whole retry policy.
    pub fn with_retry(mut self, retry: RetryConfig) -> Self {
        self.retry = retry;
        self
    }

    /// First backoff ceiling.
    pub fn with_initial_backoff(mut self, backoff: Duration) -> Self {
        self.retry.initial_backoff_ms = millis(backoff);
        self
    }

    /// Largest backoff ceiling.
    pub fn with_max_backoff(mut self, backoff: Duration) -> Self {
        self.retry.max_backoff_ms = millis(backoff);
        self
    }

    /// Backoff growth per retry.
    pub fn with_backoff_multiplier(mut self, multiplier: f64) -> Self {
        self.retry.multiplier = multiplier;
        self
    }

    /// Attempts per event (`None` = unlimited).
    pub fn with_max_attempts(mut self, attempts: Option<u32>) -> Self {
        self.retry.max_attempts = attempts;
        self
    }

    /// Time budget per event from its first attempt (`None` = unlimited).
    pub fn with_max_elapsed(mut self, budget: Option<Duration>) -> Self {
        self.retry.max_elapsed_ms = budget.map(millis);
        self
    }

    /// Cap on `retry_after` hints.
    pub fn with_max_retry_after(mut self, cap: Duration) -> Self {
        self.retry.max_retry_after_ms = millis(cap);
        self
    }

    /// The whole filter.
    pub fn with_filter(mut self, filter: FilterConfig) -> Self {
        self.filter = filter;
        self
    }

    /// The dead-letter file.
    pub fn with_dead_letter_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.dead_letter.path = Some(path.into());
        self
    }

    /// Rotate the dead-letter file past this size.
    pub fn with_dead_letter_max_file_bytes(mut self, bytes: u64) -> Self {
        self.dead_letter.max_file_bytes = bytes;
        self
    }

    /// Rotated dead-letter files kept.
    pub fn with_dead_letter_max_files(mut self, files: u32) -> Self {
        self.dead_letter.max_files = files;
        self
    }

    /// Checks the invariants [`PipelineBuilder::build`](crate::PipelineBuilder::build) enforces.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first field out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field: &'static str, reason: &'static str| Err(ConfigError { field, reason });
        if self.queue.capacity == 0 {
            return bad("queue.capacity", "must be at least 1");
        }
        if self.batch.max_events == 0 {
            return bad("batch.max_events", "must be at least 1");
        }
        if self.batch.max_bytes == 0 {
            return bad("batch.max_bytes", "must be at least 1");
        }
        if self.batch.flush_interval_ms == 0 {
            return bad("batch.flush_interval_ms", "must be at least 1");
        }
        if self.concurrency == 0 {
            return bad("concurrency", "must be at least 1");
        }
        let retry = &self.retry;
        if !retry.multiplier.is_finite() || retry.multiplier < 1.0 {
            return bad(
                "retry.multiplier",
                "must be a finite number of at least 1.0",
            );
        }
        // A zero backoff stays zero at every multiplication: every attempt would follow the
        // last at once (a one-second outage would use them all up), and a zero cap on the
        // server's `Retry-After` would retry at once against a server that asked for time.
        if retry.initial_backoff_ms == 0 {
            return bad("retry.initial_backoff_ms", "must be at least 1");
        }
        if retry.max_retry_after_ms == 0 {
            return bad("retry.max_retry_after_ms", "must be at least 1");
        }
        if retry.initial_backoff_ms > retry.max_backoff_ms {
            return bad(
                "retry.initial_backoff_ms",
                "must not exceed retry.max_backoff_ms",
            );
        }
        if retry.max_attempts == Some(0) {
            return bad(
                "retry.max_attempts",
                "must be at least 1 (or null for unlimited)",
            );
        }
        if self.dead_letter.max_file_bytes == 0 {
            return bad("dead_letter.max_file_bytes", "must be at least 1");
        }
        Ok(())
    }
}

/// A configuration value out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid exporter configuration: `{field}` {reason}")]
pub struct ConfigError {
    /// The field, as a YAML path (`batch.max_events`).
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: &'static str,
}
