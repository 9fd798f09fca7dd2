//! Security and exporter-health metrics: aggregated over a flush interval and sent to
//! `POST /api/v2/series` (counts, gauges) and `POST /api/v1/distribution_points`
//! (latencies), on their own task with their own retry budget, so metrics never delay or fail
//! log delivery.
//!
//! Security counts are taken when Datadog *accepts* an event (HTTP 202), so they equal the
//! events delivered, exactly, whatever the retries.

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clawdstrike_export::Record;
use clawdstrike_schema::{EventType, Outcome, Severity};
use serde::Serialize;

use crate::catalogue::{self, Metric, MetricKind};
use crate::tags::push_tag;

/// Datadog's limit of compressed bytes per series request.
pub const MAX_SERIES_COMPRESSED_BYTES: usize = 512_000;
/// Datadog's limit of uncompressed bytes per series request.
pub const MAX_SERIES_UNCOMPRESSED_BYTES: usize = 5_242_880;

/// The dimensions of a security count.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SecurityKey {
    guard: Arc<str>,
    severity: Severity,
    outcome: Outcome,
    event_type: EventType,
    env: Option<Arc<str>>,
    tenant: Option<Arc<str>>,
}

/// Borrowed form of [`SecurityKey`], for counting a batch without allocating per event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct SecurityKeyRef<'a> {
    guard: &'a str,
    severity: Severity,
    outcome: Outcome,
    event_type: EventType,
    env: Option<&'a str>,
    tenant: Option<&'a str>,
}

/// Counts (total, allowed, denied) per dimension.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Every event.
    pub total: u64,
    /// Allowed.
    pub allowed: u64,
    /// Denied.
    pub denied: u64,
}

/// Aggregates security counts of delivered events between flushes.
#[derive(Debug, Default)]
pub struct SecurityAggregator {
    counts: Mutex<HashMap<SecurityKey, Counts>>,
    default_env: Option<Arc<str>>,
}

impl SecurityAggregator {
    /// An aggregator; `default_env` tags events whose session has no environment.
    pub fn new(default_env: Option<String>) -> Self {
        Self { counts: Mutex::default(), default_env: default_env.map(Arc::from) }
    }

    /// Counts the delivered records at `indices` of `batch`.
    pub fn record_delivered(&self, batch: &[Record], indices: &[usize]) {
        let mut local: HashMap<SecurityKeyRef<'_>, Counts> = HashMap::new();
        for &i in indices {
            let e = &batch[i].event;
            let key = SecurityKeyRef {
                guard: &e.decision.guard,
                severity: e.decision.severity,
                outcome: e.outcome,
                event_type: e.event_type,
                env: e.session.environment.as_deref().or(self.default_env.as_deref()),
                tenant: e.session.tenant_id.as_deref(),
            };
            let c = local.entry(key).or_default();
            c.total += 1;
            if e.decision.allowed {
                c.allowed += 1;
            } else {
                c.denied += 1;
            }
        }
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        for (k, c) in local {
            let owned = SecurityKey {
                guard: Arc::from(k.guard),
                severity: k.severity,
                outcome: k.outcome,
                event_type: k.event_type,
                env: k.env.map(Arc::from),
                tenant: k.tenant.map(Arc::from),
            };
            let entry = counts.entry(owned).or_default();
            entry.total += c.total;
            entry.allowed += c.allowed;
            entry.denied += c.denied;
        }
    }

    /// Takes the counts accumulated since the last call, as tagged series points.
    pub fn take(&self, prefix: &str, extra_tags: &[String]) -> Vec<Point> {
        let counts = std::mem::take(&mut *self.counts.lock().unwrap_or_else(|e| e.into_inner()));
        let mut points = Vec::with_capacity(counts.len() * 3);
        for (k, c) in counts {
            let mut tags = String::new();
            crate::tags::push_required_tag(&mut tags, "guard", &k.guard);
            push_tag(&mut tags, "severity", k.severity.as_str());
            push_tag(&mut tags, "outcome", k.outcome.as_str());
            push_tag(&mut tags, "event_type", k.event_type.as_str());
            if let Some(env) = &k.env {
                push_tag(&mut tags, "env", env);
            }
            if let Some(tenant) = &k.tenant {
                push_tag(&mut tags, "tenant", tenant);
            }
            let tags: Vec<String> = tags.split(',').filter(|t| !t.is_empty()).map(str::to_owned).chain(extra_tags.iter().cloned()).collect();
            for (metric, value) in catalogue::SECURITY_METRICS.iter().zip([c.total, c.allowed, c.denied]) {
                if value > 0 {
                    points.push(Point::new(prefix, metric, value as f64, tags.clone()));
                }
            }
        }
        points
    }
}

/// One metric point to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// Full metric name.
    pub metric: String,
    /// Kind.
    pub kind: MetricKind,
    /// Value (counts: the count over the interval; gauges: the sample).
    pub value: f64,
    /// Tags.
    pub tags: Vec<String>,
    /// Unit.
    pub unit: &'static str,
}

impl Point {
    /// A point of a catalogue metric.
    pub fn new(prefix: &str, metric: &Metric, value: f64, tags: Vec<String>) -> Self {
        Self { metric: catalogue::metric_name(prefix, metric), kind: metric.kind, value, tags, unit: metric.unit }
    }
}

#[derive(Serialize)]
struct SeriesPoint {
    timestamp: i64,
    value: f64,
}

#[derive(Serialize)]
struct Resource<'a> {
    name: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(Serialize)]
struct Series<'a> {
    metric: &'a str,
    #[serde(rename = "type")]
    kind: u8,
    points: [SeriesPoint; 1],
    tags: &'a [String],
    resources: [Resource<'a>; 1],
    #[serde(skip_serializing_if = "str::is_empty")]
    unit: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    interval: Option<u64>,
}

/// Encodes gauge and count points as `/api/v2/series` bodies (gzip), each within Datadog's
/// limits (512,000 bytes compressed, 5,242,880 uncompressed), splitting as needed.
pub fn encode_series(points: &[Point], timestamp: i64, host: &str, interval_secs: u64) -> Vec<Vec<u8>> {
    let json = |pts: &[Point]| -> Vec<u8> {
        let series: Vec<Series<'_>> = pts
            .iter()
            .filter(|p| p.kind != MetricKind::Distribution)
            .map(|p| Series {
                metric: &p.metric,
                kind: if p.kind == MetricKind::Count { 1 } else { 3 },
                points: [SeriesPoint { timestamp, value: p.value }],
                tags: &p.tags,
                resources: [Resource { name: host, kind: "host" }],
                unit: p.unit,
                interval: (p.kind == MetricKind::Count).then_some(interval_secs),
            })
            .collect();
        serde_json::to_vec(&serde_json::json!({ "series": series })).unwrap_or_default()
    };
    let mut out = Vec::new();
    let mut stack = vec![points];
    while let Some(chunk) = stack.pop() {
        if chunk.is_empty() {
            continue;
        }
        let body = json(chunk);
        let compressed = gzip(&body);
        if (body.len() > MAX_SERIES_UNCOMPRESSED_BYTES || compressed.len() > MAX_SERIES_COMPRESSED_BYTES) && chunk.len() > 1 {
            let (a, b) = chunk.split_at(chunk.len() / 2);
            stack.push(b);
            stack.push(a);
        } else {
            out.push(compressed);
        }
    }
    out
}

/// Gzip at level 6.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::with_capacity(data.len() / 4 + 64), flate2::Compression::new(6));
    let _ = enc.write_all(data);
    enc.finish().unwrap_or_default()
}

/// A counter whose increments between two reads are reported as a delta.
#[derive(Debug, Default)]
pub struct Delta {
    last: AtomicU64,
}

impl Delta {
    /// The increase since the previous call (0 if the counter went backwards).
    pub fn delta(&self, now: u64) -> u64 {
        let before = self.last.swap(now, Ordering::Relaxed);
        now.saturating_sub(before)
    }
}

/// A retry budget for metric requests: attempts and backoff, independent of the logs'.
#[derive(Debug, Clone, Copy)]
pub struct MetricsRetry {
    /// Attempts per request (default 3).
    pub attempts: u32,
    /// First backoff (default 1 s), doubled each attempt.
    pub backoff: Duration,
}

impl Default for MetricsRetry {
    fn default() -> Self {
        Self { attempts: 3, backoff: Duration::from_secs(1) }
    }
}
