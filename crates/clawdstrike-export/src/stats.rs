//! Self-telemetry: per-exporter counters (atomics) and an export-latency histogram.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

/// Why an event was dropped. Drops are never silent: each is counted here and logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DropReason {
    /// The queue was full under `drop_newest`: the submitted event was dropped.
    QueueFullNewest,
    /// The queue was full under `drop_oldest`: the oldest queued event was evicted.
    QueueFullOldest,
    /// Shutdown's deadline passed before the event was delivered or dead-lettered
    /// ("left behind").
    ShutdownDeadline,
}

impl DropReason {
    /// The metric tag value (`queue_full_newest`, `queue_full_oldest`, `shutdown_deadline`).
    pub const fn as_str(self) -> &'static str {
        match self {
            DropReason::QueueFullNewest => "queue_full_newest",
            DropReason::QueueFullOldest => "queue_full_oldest",
            DropReason::ShutdownDeadline => "shutdown_deadline",
        }
    }
}

/// Drop counts by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DropCounts {
    /// See [`DropReason::QueueFullNewest`].
    pub queue_full_newest: u64,
    /// See [`DropReason::QueueFullOldest`].
    pub queue_full_oldest: u64,
    /// See [`DropReason::ShutdownDeadline`].
    pub shutdown_deadline: u64,
}

impl DropCounts {
    /// All drops.
    pub fn total(&self) -> u64 {
        self.queue_full_newest + self.queue_full_oldest + self.shutdown_deadline
    }

    /// The count for one reason.
    pub fn get(&self, reason: DropReason) -> u64 {
        match reason {
            DropReason::QueueFullNewest => self.queue_full_newest,
            DropReason::QueueFullOldest => self.queue_full_oldest,
            DropReason::ShutdownDeadline => self.shutdown_deadline,
        }
    }

    /// `(reason, count)` pairs, for publishing as tagged metrics.
    pub fn iter(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        [
            DropReason::QueueFullNewest,
            DropReason::QueueFullOldest,
            DropReason::ShutdownDeadline,
        ]
        .into_iter()
        .map(|r| (r, self.get(r)))
    }
}

/// Upper bounds of the latency buckets, in microseconds; a last, unbounded bucket follows.
pub const LATENCY_BUCKETS_MICROS: [u64; 20] = [
    100,
    250,
    500,
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    30_000_000,
    60_000_000,
    120_000_000,
    300_000_000,
];

const BUCKETS: usize = LATENCY_BUCKETS_MICROS.len() + 1;

/// A fixed-bucket histogram of export-call latencies (lock-free).
#[derive(Debug, Default)]
pub(crate) struct LatencyHistogram {
    counts: [AtomicU64; BUCKETS],
    sum_micros: AtomicU64,
}

impl LatencyHistogram {
    pub(crate) fn record(&self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let bucket = LATENCY_BUCKETS_MICROS.partition_point(|&bound| bound < micros);
        self.counts[bucket].fetch_add(1, Relaxed);
        self.sum_micros.fetch_add(micros, Relaxed);
    }

    pub(crate) fn snapshot(&self) -> LatencySnapshot {
        let mut counts = [0; BUCKETS];
        for (out, c) in counts.iter_mut().zip(&self.counts) {
            *out = c.load(Relaxed);
        }
        LatencySnapshot {
            counts,
            sum_micros: self.sum_micros.load(Relaxed),
        }
    }
}

/// A point-in-time copy of the export-latency histogram (one sample per `export` call).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatencySnapshot {
    counts: [u64; BUCKETS],
    sum_micros: u64,
}

impl LatencySnapshot {
    /// Samples per bucket: `counts()[i]` counts latencies `<= LATENCY_BUCKETS_MICROS[i]` (and
    /// above the previous bound); the last entry counts everything above the last bound.
    pub fn counts(&self) -> &[u64] {
        &self.counts
    }

    /// The bucket upper bounds, in microseconds (one fewer than [`counts`](Self::counts)).
    pub fn bounds_micros(&self) -> &'static [u64] {
        &LATENCY_BUCKETS_MICROS
    }

    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Sum of all samples.
    pub fn sum(&self) -> Duration {
        Duration::from_micros(self.sum_micros)
    }

    /// Mean latency (zero without samples).
    pub fn mean(&self) -> Duration {
        self.sum_micros
            .checked_div(self.count())
            .map_or(Duration::ZERO, Duration::from_micros)
    }

    /// The upper bound of the bucket holding quantile `q` (0.0–1.0); zero without samples.
    /// The unbounded last bucket reports [`Duration::MAX`].
    pub fn quantile(&self, q: f64) -> Duration {
        let total = self.count();
        if total == 0 {
            return Duration::ZERO;
        }
        #[allow(
            clippy::cast_precision_loss,
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss
        )]
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return LATENCY_BUCKETS_MICROS
                    .get(i)
                    .map_or(Duration::MAX, |&b| Duration::from_micros(b));
            }
        }
        Duration::MAX
    }

    /// Median (bucket upper bound).
    pub fn p50(&self) -> Duration {
        self.quantile(0.50)
    }

    /// 99th percentile (bucket upper bound).
    pub fn p99(&self) -> Duration {
        self.quantile(0.99)
    }
}

/// The live counters of one exporter lane.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) submitted: AtomicU64,
    pub(crate) filtered: AtomicU64,
    pub(crate) accepted: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) exported: AtomicU64,
    pub(crate) retried: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) dead_lettered: AtomicU64,
    pub(crate) dead_letter_write_failed: AtomicU64,
    pub(crate) dropped_newest: AtomicU64,
    pub(crate) dropped_oldest: AtomicU64,
    pub(crate) dropped_deadline: AtomicU64,
    pub(crate) batches: AtomicU64,
    pub(crate) in_flight_batches: AtomicUsize,
    pub(crate) in_flight_events: AtomicUsize,
    pub(crate) latency: LatencyHistogram,
}

impl Counters {
    pub(crate) fn drops(&self) -> DropCounts {
        DropCounts {
            queue_full_newest: self.dropped_newest.load(Relaxed),
            queue_full_oldest: self.dropped_oldest.load(Relaxed),
            shutdown_deadline: self.dropped_deadline.load(Relaxed),
        }
    }

    /// Counts a drop; returns the new total for that reason (for rate-limited logging).
    pub(crate) fn count_drop(&self, reason: DropReason, n: u64) -> u64 {
        let counter = match reason {
            DropReason::QueueFullNewest => &self.dropped_newest,
            DropReason::QueueFullOldest => &self.dropped_oldest,
            DropReason::ShutdownDeadline => &self.dropped_deadline,
        };
        counter.fetch_add(n, Relaxed) + n
    }
}

/// A snapshot of one exporter's counters. Cheap: a few dozen atomic loads.
///
/// Counters are cumulative since the pipeline was built. While the pipeline runs,
/// `submitted == filtered + accepted + dropped.queue_full_newest` and
/// `accepted == exported + dead_lettered + dropped.queue_full_oldest + dropped.shutdown_deadline
/// + queue_depth + in_flight_events` (up to events moving between two loads).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExporterStats {
    /// The exporter's name.
    pub name: String,
    /// Events offered to this exporter (accepted by the pipeline's `submit`).
    pub submitted: u64,
    /// Events this exporter's filter declined (not a drop).
    pub filtered: u64,
    /// Events that entered the queue.
    pub accepted: u64,
    /// `try_submit` calls refused because this exporter's queue was full under `block`
    /// (the caller got [`SubmitError::Full`](crate::SubmitError::Full); not a drop).
    pub rejected: u64,
    /// Events delivered.
    pub exported: u64,
    /// Event retries (an event retried three times counts three).
    pub retried: u64,
    /// Failed event attempts, retryable or not.
    pub failed: u64,
    /// Events dead-lettered (including those whose dead-letter write failed).
    pub dead_lettered: u64,
    /// Dead letters that could not be written (each also logged at `error` with its event id,
    /// and not settled: with a disk buffer, replayed at the next start).
    pub dead_letter_write_failed: u64,
    /// Drops by reason.
    pub dropped: DropCounts,
    /// Events waiting in the queue (including those being assembled into a batch).
    pub queue_depth: usize,
    /// Batches being exported or waiting to be retried.
    pub in_flight_batches: usize,
    /// Events in those batches.
    pub in_flight_events: usize,
    /// Batches sent (first attempts).
    pub batches: u64,
    /// Latency of each `export` call.
    pub export_latency: LatencySnapshot,
}
