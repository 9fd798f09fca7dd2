//! The durable-buffer seam: a hook told when each event is settled for an exporter.

use std::fmt;

use crate::stats::DropReason;

/// How an event was settled for one exporter: it will never be handed to that exporter again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Settlement {
    /// The exporter delivered it.
    Delivered,
    /// It was written as a dead letter (or logged, when no dead-letter file is configured).
    /// A dead letter whose write failed is not settled: a write-ahead log keeps it.
    DeadLettered,
    /// The exporter's filter declined it.
    Filtered,
    /// Dropped by the queue policy. Never [`DropReason::ShutdownDeadline`]: events left behind
    /// at shutdown are *not* settled, so a write-ahead log replays them on the next start.
    Dropped(DropReason),
}

/// Told when events are settled, with the sequence numbers given to
/// [`Pipeline::submit_with_seq`](crate::Pipeline::submit_with_seq) (or assigned by
/// [`Pipeline::submit`](crate::Pipeline::submit)).
///
/// Each event is settled exactly once per exporter of the fan-out (`exporter` is the
/// exporter's index in build order). A write-ahead log appends a record before submitting it
/// and frees it once every exporter has settled it. Called on the pipeline's tasks, sometimes
/// while a producer waits: keep it short and never block.
pub trait SettleHook: Send + Sync + fmt::Debug {
    /// `seqs` were settled by exporter number `exporter` (named `name`) as `how`.
    fn settled(&self, exporter: usize, name: &str, seqs: &[u64], how: Settlement);
}
