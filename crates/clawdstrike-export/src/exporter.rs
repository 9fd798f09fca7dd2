//! The `Exporter` trait: what each destination (Datadog, Splunk, ...) implements.
//!
//! The framework owns *how* to retry (backoff, budgets, concurrency, dead letters); each
//! exporter says *whether* each event should be retried, through [`ExportResult`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use clawdstrike_schema::SecurityEvent;

/// The output schema an exporter writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SchemaFormat {
    /// Clawdstrike's own event shape (what Datadog receives).
    Native,
    /// Elastic Common Schema.
    Ecs,
    /// Open Cybersecurity Schema Framework.
    Ocsf,
    /// ArcSight Common Event Format.
    Cef,
}

/// W3C / OpenTelemetry trace context captured when an event was submitted.
///
/// Captured at submit time because export runs on another task, where the producer's span is
/// gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceContext {
    /// The 128-bit trace id (never zero).
    pub trace_id: u128,
    /// The 64-bit span id (never zero).
    pub span_id: u64,
    /// Whether the producer sampled the trace.
    pub sampled: bool,
}

/// One queued event with what was captured about it at submit time.
///
/// Cheap to clone: the event is shared between the exporters of a fan-out.
#[derive(Debug, Clone)]
pub struct Record {
    /// The event.
    pub event: Arc<SecurityEvent>,
    /// The trace context of the producer, if any.
    pub trace: Option<TraceContext>,
}

impl Record {
    /// A record without trace context.
    pub fn new(event: impl Into<Arc<SecurityEvent>>) -> Self {
        Self {
            event: event.into(),
            trace: None,
        }
    }

    /// Attaches a trace context.
    pub fn with_trace(mut self, trace: TraceContext) -> Self {
        self.trace = Some(trace);
        self
    }
}

/// Why one event was not exported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Transient: the framework retries the event with backoff, honouring `retry_after`
    /// (capped by the retry policy; a zero `retry_after` counts as none, so the backoff applies).
    Retryable {
        /// Why, e.g. `HTTP 503 Service Unavailable`.
        reason: Arc<str>,
        /// How long the destination asked us to wait, if it said.
        retry_after: Option<Duration>,
    },
    /// Permanent: the framework dead-letters the event with this reason and never retries it.
    Permanent {
        /// Why, e.g. `HTTP 400: invalid JSON` (the server's own reason where there is one).
        reason: Arc<str>,
    },
}

impl Failure {
    /// A retryable failure without a retry-after hint.
    pub fn retryable(reason: impl Into<Arc<str>>) -> Self {
        Failure::Retryable {
            reason: reason.into(),
            retry_after: None,
        }
    }

    /// A permanent failure.
    pub fn permanent(reason: impl Into<Arc<str>>) -> Self {
        Failure::Permanent {
            reason: reason.into(),
        }
    }

    /// The reason.
    pub fn reason(&self) -> &str {
        match self {
            Failure::Retryable { reason, .. } | Failure::Permanent { reason } => reason,
        }
    }

    /// True for [`Failure::Retryable`].
    pub fn is_retryable(&self) -> bool {
        matches!(self, Failure::Retryable { .. })
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

/// What happened to each event of a batch, in batch order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExportResult {
    /// One entry per event of the batch, in order: `None` = exported.
    outcomes: Vec<Option<Failure>>,
}

impl ExportResult {
    /// Every one of `n` events exported.
    pub fn exported(n: usize) -> Self {
        Self {
            outcomes: vec![None; n],
        }
    }

    /// Every one of `n` events failed the same way.
    pub fn failed(n: usize, failure: Failure) -> Self {
        Self {
            outcomes: vec![Some(failure); n],
        }
    }

    /// From per-event outcomes, in batch order (`None` = exported).
    pub fn from_outcomes(outcomes: Vec<Option<Failure>>) -> Self {
        Self { outcomes }
    }

    /// Per-event outcomes, in batch order (`None` = exported).
    pub fn outcomes(&self) -> &[Option<Failure>] {
        &self.outcomes
    }

    /// Consumes the result into its per-event outcomes.
    pub fn into_outcomes(self) -> Vec<Option<Failure>> {
        self.outcomes
    }

    /// How many events were exported.
    pub fn exported_count(&self) -> usize {
        self.outcomes.iter().filter(|o| o.is_none()).count()
    }

    /// Sets the outcome of the event at `index` (grows the result with "exported" if needed).
    pub fn set(&mut self, index: usize, outcome: Option<Failure>) {
        if self.outcomes.len() <= index {
            self.outcomes.resize(index + 1, None);
        }
        self.outcomes[index] = outcome;
    }
}

/// The health of an exporter's destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// The destination accepts our credentials and data.
    Healthy,
    /// The destination answers but something is wrong (an invalid key, say).
    Degraded {
        /// What is wrong.
        reason: String,
    },
    /// We could not tell (a network error is not an invalid key).
    Unknown {
        /// Why we could not tell.
        reason: String,
    },
}

/// A destination for security events.
///
/// Implement [`name`](Self::name) and [`export`](Self::export); the other methods have
/// defaults, so adding one later breaks nobody. Usable as `Arc<dyn Exporter>`.
///
/// `export` must not panic and must not retry on its own beyond what its protocol requires
/// (a Datadog 413 is split and resent inside `export`; a 503 is returned as
/// [`Failure::Retryable`] and the framework retries it). Should it panic anyway, the batch is
/// retried like a retryable failure; a panicking `estimate_size` is replaced by
/// [`default_size_estimate`]; a panicking [`SettleHook`](crate::SettleHook) or
/// [`BatchObserver`](crate::BatchObserver) misses that call. Every case is logged, and no event
/// is lost or left out of the counts.
#[async_trait]
pub trait Exporter: Send + Sync + fmt::Debug {
    /// A stable, human-readable name (`datadog-us1`), used in stats, logs and dead letters.
    fn name(&self) -> &str;

    /// The output schema.
    fn schema(&self) -> SchemaFormat {
        SchemaFormat::Native
    }

    /// An estimate of the bytes `event` adds to a request, for byte-based batching.
    /// The default is a rough estimate from the event's JSON size.
    fn estimate_size(&self, record: &Record) -> usize {
        default_size_estimate(&record.event)
    }

    /// Exports one batch, reporting per event. The result must have one outcome per event of
    /// `batch`, in order; a shorter result counts the missing events as retryable failures.
    async fn export(&self, batch: &[Record]) -> ExportResult;

    /// Checks the destination (credentials, reachability).
    async fn health_check(&self) -> Health {
        Health::Unknown {
            reason: "this exporter has no health check".to_owned(),
        }
    }

    /// Releases resources; called once by the pipeline after the last export.
    async fn shutdown(&self) {}
}

/// A cheap estimate of an event's JSON size: string lengths plus structure, no serialisation.
pub fn default_size_estimate(event: &SecurityEvent) -> usize {
    const FIXED: usize = 420; // keys, punctuation, ids, timestamps, enums
    let strings = event.action.len()
        + event.agent.id.len()
        + event.agent.name.len()
        + event.agent.version.len()
        + event.session.id.len()
        + event.session.user_id.as_ref().map_or(0, String::len)
        + event.session.tenant_id.as_ref().map_or(0, String::len)
        + event.session.environment.as_ref().map_or(0, String::len)
        + event.decision.guard.len()
        + event.decision.reason.len()
        + event.decision.policy_hash.as_ref().map_or(0, String::len)
        + event.decision.ruleset.as_ref().map_or(0, String::len)
        + event.resource.name.len()
        + event.resource.path.as_ref().map_or(0, String::len)
        + event.resource.host.as_ref().map_or(0, String::len)
        + event
            .threat
            .indicator
            .as_ref()
            .map_or(0, |i| i.value.len() + 24)
        + event
            .labels
            .iter()
            .map(|(k, v)| k.len() + v.len() + 6)
            .sum::<usize>();
    FIXED + strings + json_size_estimate(&event.metadata)
}

/// The JSON size of `value` without serialising it (no allocation): exact but for string
/// escapes and number formatting, which it approximates. The batcher calls
/// [`Exporter::estimate_size`] once per event on one task, so this stays cheap.
fn json_size_estimate(value: &serde_json::Value) -> usize {
    use serde_json::Value;
    match value {
        Value::Null => 4,
        Value::Bool(true) => 4,
        Value::Bool(false) => 5,
        Value::Number(n) => {
            let digits = |u: u64| u.checked_ilog10().map_or(1, |d| d as usize + 1);
            match (n.as_u64(), n.as_i64()) {
                (Some(u), _) => digits(u),
                (None, Some(i)) => 1 + digits(i.unsigned_abs()),
                _ => 10, // a float: its shortest round-trip form is usually about this long
            }
        }
        Value::String(s) => s.len() + 2,
        Value::Array(items) => {
            2 + items
                .iter()
                .map(|v| json_size_estimate(v) + 1)
                .sum::<usize>()
        }
        Value::Object(map) => {
            2 + map
                .iter()
                .map(|(k, v)| k.len() + 4 + json_size_estimate(v))
                .sum::<usize>()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::json_size_estimate;

    #[test]
    fn the_metadata_size_estimate_tracks_the_serialised_size_without_serialising() {
        for value in [
            serde_json::json!({}),
            serde_json::json!({"pid": 4242, "argv": ["curl", "-s", "https://x"], "ok": true, "n": null}),
            serde_json::json!({"nested": {"deep": {"list": [1, 2.5, -3, "four", false]}}, "k": "v"}),
            serde_json::json!({"blob": "x".repeat(10_000)}),
        ] {
            let exact = serde_json::to_vec(&value).unwrap().len();
            let estimate = json_size_estimate(&value);
            assert!(
                estimate * 10 >= exact * 8 && estimate * 10 <= exact * 15,
                "{value}: estimate {estimate}, exact {exact}"
            );
        }
    }
}
