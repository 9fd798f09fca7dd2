//! Security and exporter-health metrics: aggregated over a flush interval and sent to
//! `POST /api/v2/series` (counts, gauges) and `POST /api/v1/distribution_points`
//! (latencies), on their own task with their own retry budget, so metrics never delay or fail
//! log delivery.
//!
//! Security counts are taken when Datadog *accepts* an event (HTTP 202), so they equal the
//! events delivered, exactly, whatever the retries. A series request that runs out of its
//! retry budget while Datadog surely did not take it (error statuses, connections refused)
//! keeps its counts for the next flush (summed into it); its gauges are dropped and counted
//! (`exporter.metrics.dropped`): the next flush has newer ones. A request refused for good
//! (400, 413, a revoked key), or one that may have been taken (a timeout after sending), is
//! dropped and counted whole: sending it again would be refused again, or count twice.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clawdstrike_export::Record;
use clawdstrike_keys::RefreshOutcome;
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

/// Counts of some events by dimension, from [`SecurityAggregator::tally`], waiting to be
/// [added](SecurityAggregator::add).
#[derive(Debug, Default)]
pub struct Tally(Vec<(SecurityKey, Counts)>);

/// Aggregates security counts of delivered events between flushes.
#[derive(Debug, Default)]
pub struct SecurityAggregator {
    counts: Mutex<HashMap<SecurityKey, Counts, foldhash::fast::RandomState>>,
    default_env: Option<Arc<str>>,
}

impl SecurityAggregator {
    /// An aggregator; `default_env` tags events whose session has no environment.
    pub fn new(default_env: Option<String>) -> Self {
        Self {
            counts: Mutex::default(),
            default_env: default_env.map(Arc::from),
        }
    }

    /// Counts the delivered records at `indices` of `batch`: [`tally`](Self::tally) then
    /// [`add`](Self::add).
    pub fn record_delivered(&self, batch: &[Record], indices: &[usize]) {
        self.add(self.tally(batch, indices));
    }

    /// The counts of the records at `indices` of `batch`, not yet added. The exporter takes
    /// them while it encodes a request, when the events are still in cache, and adds them
    /// once the intake has accepted that request.
    pub fn tally(&self, batch: &[Record], indices: &[usize]) -> Tally {
        // A fast hasher: this runs once per event.
        let mut local: HashMap<SecurityKeyRef<'_>, Counts, foldhash::fast::RandomState> =
            HashMap::default();
        for &i in indices {
            let e = &batch[i].event;
            let key = SecurityKeyRef {
                guard: &e.decision.guard,
                severity: e.decision.severity,
                outcome: e.outcome,
                event_type: e.event_type,
                env: e
                    .session
                    .environment
                    .as_deref()
                    .or(self.default_env.as_deref()),
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
        Tally(
            local
                .into_iter()
                .map(|(k, c)| {
                    let owned = SecurityKey {
                        guard: Arc::from(k.guard),
                        severity: k.severity,
                        outcome: k.outcome,
                        event_type: k.event_type,
                        env: k.env.map(Arc::from),
                        tenant: k.tenant.map(Arc::from),
                    };
                    (owned, c)
                })
                .collect(),
        )
    }

    /// Adds a [`tally`](Self::tally) to the counts.
    pub fn add(&self, tally: Tally) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        for (key, c) in tally.0 {
            let entry = counts.entry(key).or_default();
            entry.total += c.total;
            entry.allowed += c.allowed;
            entry.denied += c.denied;
        }
    }

    /// Takes the counts accumulated since the last call, as tagged series points. Keys whose
    /// tags normalise alike (`ACME` and `acme`, values cut at 200 characters) are summed into
    /// one series: two points of one series and timestamp would overwrite each other.
    pub fn take(&self, prefix: &str, extra_tags: &[String]) -> Vec<Point> {
        let counts = std::mem::take(&mut *self.counts.lock().unwrap_or_else(|e| e.into_inner()));
        let mut series: BTreeMap<Vec<String>, [u64; 3]> = BTreeMap::new();
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
            let own: Vec<String> = tags
                .split(',')
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
                .collect();
            // The event's own tags (its env) win over the reporter's common tags.
            let extra = extra_tags.iter().filter(|t| {
                !own.iter()
                    .any(|o| crate::tags::tag_key(o) == crate::tags::tag_key(t))
            });
            let tags: Vec<String> = own.iter().cloned().chain(extra.cloned()).collect();
            let sums = series.entry(tags).or_default();
            for (sum, value) in sums.iter_mut().zip([c.total, c.allowed, c.denied]) {
                *sum += value;
            }
        }
        let mut points = Vec::with_capacity(series.len() * 3);
        for (tags, sums) in series {
            for (metric, value) in catalogue::SECURITY_METRICS.iter().zip(sums) {
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
        Self {
            metric: catalogue::metric_name(prefix, metric),
            kind: metric.kind,
            value,
            tags,
            unit: metric.unit,
        }
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
pub fn encode_series(
    points: &[Point],
    timestamp: i64,
    host: &str,
    interval_secs: u64,
) -> Vec<Vec<u8>> {
    let stamped: Vec<Stamped> = points
        .iter()
        .map(|p| Stamped {
            point: p.clone(),
            timestamp,
            interval: interval_secs,
        })
        .collect();
    encode_series_ranges(&stamped, host)
        .into_iter()
        .map(|(_, body)| body)
        .collect()
}

/// A point with the timestamp and count interval it is sent under.
#[derive(Debug, Clone)]
struct Stamped {
    point: Point,
    timestamp: i64,
    interval: u64,
}

/// [`encode_series`] of points each under its own timestamp and interval, each body with the
/// range of `points` it holds.
fn encode_series_ranges(points: &[Stamped], host: &str) -> Vec<(std::ops::Range<usize>, Vec<u8>)> {
    let json = |pts: &[Stamped]| -> Vec<u8> {
        let series: Vec<Series<'_>> = pts
            .iter()
            .filter(|s| s.point.kind != MetricKind::Distribution)
            .map(|s| Series {
                metric: &s.point.metric,
                kind: if s.point.kind == MetricKind::Count {
                    1
                } else {
                    3
                },
                points: [SeriesPoint {
                    timestamp: s.timestamp,
                    value: s.point.value,
                }],
                tags: &s.point.tags,
                resources: [Resource {
                    name: host,
                    kind: "host",
                }],
                unit: s.point.unit,
                interval: (s.point.kind == MetricKind::Count).then_some(s.interval),
            })
            .collect();
        serde_json::to_vec(&serde_json::json!({ "series": series })).unwrap_or_default()
    };
    let mut out = Vec::new();
    let mut stack = Vec::new();
    stack.push(0..points.len());
    while let Some(range) = stack.pop() {
        if range.is_empty() {
            continue;
        }
        let body = json(&points[range.clone()]);
        let compressed = gzip(&body);
        if (body.len() > MAX_SERIES_UNCOMPRESSED_BYTES
            || compressed.len() > MAX_SERIES_COMPRESSED_BYTES)
            && range.len() > 1
        {
            let mid = range.start + range.len() / 2;
            stack.push(mid..range.end);
            stack.push(range.start..mid);
        } else {
            out.push((range, compressed));
        }
    }
    out
}

/// Gzip at level 6.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 4 + 64),
        flate2::Compression::new(6),
    );
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
        Self {
            attempts: 3,
            backoff: Duration::from_secs(1),
        }
    }
}

/// Where metrics go.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum MetricsTransport {
    /// Datadog's HTTP API (`/api/v2/series`, `/api/v1/distribution_points`), the default.
    Api,
    /// DogStatsD to a local Datadog Agent: `udp://127.0.0.1:8125` or `unix:///path/dsd.socket`.
    Dogstatsd(String),
}

/// What one flush did, counting the points kept from earlier failed flushes that it sent
/// again (so a point kept over several flushes is in several reports).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlushReport {
    /// Points (series and distributions) sent and accepted.
    pub sent: u64,
    /// Points dropped: refused for good, or their retry budget ran out (gauges and latency
    /// samples always, the next flush having newer ones; counts when Datadog may have taken
    /// them or refused them for good).
    pub dropped: u64,
    /// Count points whose request surely failed (error statuses, connections refused), kept
    /// and sent again with the next flush, under their own timestamp and interval, so that a
    /// rate over them shows no spike. Datadog takes points up to an hour old: older ones, those
    /// past the first 10,000 kept, and those of a last flush at shutdown that fails, are
    /// dropped (counted in `dropped`, and said).
    pub carried: u64,
}

/// Publishes one Datadog exporter's security and health metrics every flush interval, on its
/// own task, with its own retry budget: a failing metrics endpoint never delays logs.
pub struct MetricsReporter {
    prefix: String,
    tags: Vec<String>,
    host: String,
    exporter: String,
    interval: Duration,
    api_base: String,
    client: reqwest::Client,
    key: clawdstrike_keys::KeyHolder,
    security: Arc<SecurityAggregator>,
    transport: Arc<crate::exporter::TransportStats>,
    pipeline_stats: StatsSource,
    queue_capacity: usize,
    retry: MetricsRetry,
    dogstatsd: Option<String>,
    deltas: HashMap<String, u64>,
    dropped_points: u64,
    /// Counts whose request failed, sent again with the next flush (see
    /// [`FlushReport::carried`]).
    carried: Vec<Stamped>,
    /// The exporter's codec, the `codec` tag of the compressed-bytes count.
    codec: &'static str,
    /// The timestamp of the last series sent: Datadog keeps one value per series and second,
    /// the last one, so no two flushes may share a timestamp.
    last_timestamp: Option<i64>,
}

/// Carried points older than this are dropped: Datadog refuses points more than an hour old
/// (five minutes of margin for the clocks and for a flush's own retries, which can take a
/// minute or more).
const MAX_CARRIED_AGE_SECS: i64 = 3600 - 300;
/// At most this many count points are kept from failed flushes (about one request's worth);
/// past it, the oldest are dropped (counted, and said).
const MAX_CARRIED: usize = 10_000;

/// Adds the count points kept from failed flushes to the points of the flush stamped `now`.
/// Datadog keeps one value per series and second, so a kept point never goes out beside
/// another of its series and second: one kept at `now` or later (the clock stepped back) is
/// added to this flush's point of its series, and two kept under the same second are added
/// together.
fn merge_kept(stamped: &mut Vec<Stamped>, kept: Vec<Stamped>, now: i64) {
    if kept.is_empty() {
        return;
    }
    let key = |s: &Stamped| (s.timestamp, s.point.metric.clone(), s.point.tags.clone());
    let mut index: HashMap<(i64, String, Vec<String>), usize> = stamped
        .iter()
        .enumerate()
        .filter(|(_, s)| s.point.kind == MetricKind::Count)
        .map(|(i, s)| (key(s), i))
        .collect();
    for mut k in kept {
        k.timestamp = k.timestamp.min(now);
        match index.get(&key(&k)) {
            Some(&i) => stamped[i].point.value += k.point.value,
            None => {
                index.insert(key(&k), stamped.len());
                stamped.push(k);
            }
        }
    }
}

/// Where the reporter reads the framework's counters for its exporter.
pub type StatsSource = Arc<dyn Fn() -> Option<clawdstrike_export::ExporterStats> + Send + Sync>;

impl std::fmt::Debug for MetricsReporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsReporter")
            .field("prefix", &self.prefix)
            .field("exporter", &self.exporter)
            .field("interval", &self.interval)
            .field("api_base", &self.api_base)
            .field("dogstatsd", &self.dogstatsd)
            .finish_non_exhaustive()
    }
}

/// The running reporter; [`shutdown`](Self::shutdown) flushes one last time.
#[derive(Debug)]
pub struct MetricsHandle {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<MetricsReporter>,
}

impl MetricsHandle {
    /// Stops the schedule and sends what is left; the whole shutdown (a flush already in
    /// progress included) is bounded by `deadline`, after which the reporter is abandoned.
    pub async fn shutdown_within(self, deadline: Duration) -> FlushReport {
        let _ = self.stop.send(());
        let task = self.task;
        let abort = task.abort_handle();
        let finish = async move {
            match task.await {
                Ok(mut reporter) => {
                    let mut report = reporter.flush().await;
                    if report.carried > 0 {
                        tracing::warn!(exporter = %reporter.exporter, points = report.carried, "the last metrics flush failed; its count points are dropped");
                        report.dropped += report.carried;
                        report.carried = 0;
                    }
                    report
                }
                Err(_) => FlushReport::default(),
            }
        };
        match tokio::time::timeout(deadline, finish).await {
            Ok(report) => report,
            Err(_) => {
                abort.abort();
                tracing::warn!(
                    "metrics reporter did not finish within its shutdown deadline; last points dropped"
                );
                FlushReport::default()
            }
        }
    }

    /// [`shutdown_within`](Self::shutdown_within) ten seconds.
    pub async fn shutdown(self) -> FlushReport {
        self.shutdown_within(Duration::from_secs(10)).await
    }
}

impl MetricsReporter {
    /// A reporter for `exporter`, or `None` when metrics are disabled in `resolved`.
    /// `stats` returns the framework's counters for this exporter (e.g. from
    /// `Pipeline::stats()`, found by name).
    pub fn for_exporter(
        exporter: &crate::exporter::DatadogExporter,
        resolved: &crate::config::ResolvedConfig,
        stats: StatsSource,
    ) -> Option<MetricsReporter> {
        let security = exporter.security_aggregator()?;
        let m = &resolved.metrics;
        if resolved.metrics_env().is_none() {
            tracing::warn!(exporter = %exporter.options().name, "the exporter's own metrics carry no env (set DD_ENV, apm.env, or an env: tag in metrics.tags): the shipped health monitors filter on env and will never see them");
        }
        let mut tags: Vec<String> = m
            .tags
            .iter()
            .filter_map(|t| crate::tags::normalise_tag(t))
            .collect();
        let mut common = String::new();
        if let Some(env) = &resolved.format.env {
            push_tag(&mut common, "env", env);
        }
        push_tag(&mut common, "service", &resolved.format.service);
        if let Some(version) = &resolved.format.version {
            push_tag(&mut common, "version", version);
        }
        for t in common.split(',').filter(|t| !t.is_empty()) {
            if !tags
                .iter()
                .any(|x| crate::tags::tag_key(x) == crate::tags::tag_key(t))
            {
                tags.push(t.to_owned());
            }
        }
        Some(MetricsReporter {
            prefix: m.prefix.clone(),
            tags,
            host: resolved.format.hostname.clone(),
            exporter: exporter.options().name.clone(),
            interval: Duration::from_millis(m.flush_interval_ms.max(100)),
            api_base: resolved.api_base.clone(),
            client: exporter.client().clone(),
            key: exporter.key_holder().clone(),
            security,
            transport: exporter.transport_stats(),
            pipeline_stats: stats,
            queue_capacity: resolved.pipeline.queue.capacity,
            retry: MetricsRetry::default(),
            dogstatsd: match &m.transport {
                Some(MetricsTransport::Dogstatsd(addr)) => Some(addr.clone()),
                _ => None,
            },
            deltas: HashMap::new(),
            dropped_points: 0,
            carried: Vec::new(),
            last_timestamp: None,
            codec: resolved.compression.codec.as_str(),
        })
    }

    /// Overrides the retry budget of metric requests.
    pub fn with_retry(mut self, retry: MetricsRetry) -> Self {
        self.retry = retry;
        self
    }

    /// Runs the schedule on its own task.
    pub fn spawn(mut self) -> MetricsHandle {
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(self.interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await;
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = ticker.tick() => {
                        // A tick in the second of the last flush waits for the next tick: its
                        // counts would overwrite the last ones at Datadog (with an interval under
                        // a second). What it would have sent stays in the deltas for the next.
                        if self.dogstatsd.is_none()
                            && self.next_timestamp(chrono::Utc::now().timestamp()).1
                        {
                            continue;
                        }
                        // A flush that outlives the interval must not pile up behind itself.
                        let _ = self.flush().await;
                    }
                }
            }
            self
        });
        MetricsHandle { stop, task }
    }

    fn count_delta(&mut self, name: &str, now: u64) -> u64 {
        let before = self.deltas.insert(name.to_owned(), now).unwrap_or(0);
        now.saturating_sub(before)
    }

    /// Everything to send now: security counts and exporter health.
    fn collect(&mut self) -> (Vec<Point>, Vec<f64>) {
        let prefix = self.prefix.clone();
        let mut points = self.security.take(&prefix, &self.tags);
        let with = |extra: &[(&str, &str)], base: &[String]| -> Vec<String> {
            let mut t = String::new();
            for (k, v) in extra {
                push_tag(&mut t, k, v);
            }
            t.split(',')
                .filter(|x| !x.is_empty())
                .map(str::to_owned)
                .chain(base.iter().cloned())
                .collect()
        };
        let exporter_tags = with(&[("exporter", &self.exporter)], &self.tags);
        let metric = |name: &str| {
            catalogue::EXPORTER_METRICS
                .iter()
                .find(|m| m.name == name)
                .expect("catalogue metric")
        };
        let snapshot = self.transport.snapshot();
        for (name, value) in [
            ("exporter.events.sent", snapshot.events_sent),
            ("exporter.events.truncated", snapshot.events_truncated),
            (
                "exporter.events.out_of_window",
                snapshot.events_out_of_window,
            ),
            ("exporter.bytes.uncompressed", snapshot.bytes_uncompressed),
        ] {
            let delta = self.count_delta(name, value);
            points.push(Point::new(
                &prefix,
                metric(name),
                delta as f64,
                exporter_tags.clone(),
            ));
        }
        let delta = self.count_delta("exporter.bytes.compressed", snapshot.bytes_compressed);
        points.push(Point::new(
            &prefix,
            metric("exporter.bytes.compressed"),
            delta as f64,
            with(
                &[("exporter", &self.exporter), ("codec", self.codec)],
                &self.tags,
            ),
        ));
        for (status, count) in &snapshot.requests {
            let delta = self.count_delta(&format!("requests:{status}"), *count);
            if delta > 0 {
                let tags = with(
                    &[
                        ("exporter", &self.exporter),
                        ("endpoint", "logs"),
                        ("status_code", status),
                    ],
                    &self.tags,
                );
                points.push(Point::new(
                    &prefix,
                    metric("exporter.requests"),
                    delta as f64,
                    tags,
                ));
            }
        }
        points.push(Point::new(
            &prefix,
            metric("exporter.api_key.valid"),
            if snapshot.key_valid { 1.0 } else { 0.0 },
            exporter_tags.clone(),
        ));
        points.push(Point::new(
            &prefix,
            metric("exporter.queue.capacity"),
            self.queue_capacity as f64,
            exporter_tags.clone(),
        ));
        if let Some(stats) = (self.pipeline_stats)() {
            let retried = self.count_delta("exporter.retries", stats.retried);
            points.push(Point::new(
                &prefix,
                metric("exporter.retries"),
                retried as f64,
                exporter_tags.clone(),
            ));
            let dead = self.count_delta("exporter.dead_letters", stats.dead_lettered);
            points.push(Point::new(
                &prefix,
                metric("exporter.dead_letters"),
                dead as f64,
                exporter_tags.clone(),
            ));
            for (reason, count) in stats.dropped.iter() {
                let reason = reason.as_str().to_owned();
                let delta = self.count_delta(&format!("dropped:{reason}"), count);
                if delta > 0 {
                    let tags = with(
                        &[("exporter", &self.exporter), ("reason", &reason)],
                        &self.tags,
                    );
                    points.push(Point::new(
                        &prefix,
                        metric("exporter.dropped"),
                        delta as f64,
                        tags,
                    ));
                }
            }
            points.push(Point::new(
                &prefix,
                metric("exporter.queue.depth"),
                stats.queue_depth as f64,
                exporter_tags.clone(),
            ));
            points.push(Point::new(
                &prefix,
                metric("exporter.in_flight"),
                stats.in_flight_batches as f64,
                exporter_tags.clone(),
            ));
        }
        if self.dropped_points > 0 {
            points.push(Point::new(
                &prefix,
                metric("exporter.metrics.dropped"),
                self.dropped_points as f64,
                exporter_tags,
            ));
            self.dropped_points = 0;
        }
        (points, self.transport.take_latencies())
    }

    /// The timestamp for a flush at `now`, and whether it is ahead of `now` because the last
    /// flush had this second already. A clock stepped back by more than a minute starts
    /// over from `now` rather than stamping points far ahead (Datadog refuses points more
    /// than ten minutes ahead).
    fn next_timestamp(&self, now: i64) -> (i64, bool) {
        match self.last_timestamp {
            Some(last) if last >= now && last - now < 60 => (last + 1, true),
            _ => (now, false),
        }
    }

    /// Collects and sends one interval's metrics now (the schedule calls this, and shutdown
    /// once more). The points are stamped with the current second, or the second after the
    /// last flush's when that is not earlier (a flush right after another, a clock stepped
    /// back): Datadog would keep only the last of two counts of one series and second.
    pub async fn flush(&mut self) -> FlushReport {
        let (points, latencies) = self.collect();
        let (timestamp, _) = self.next_timestamp(chrono::Utc::now().timestamp());
        let interval = count_interval(self.last_timestamp, timestamp, self.interval);
        self.last_timestamp = Some(timestamp);
        let latency_metric = catalogue::EXPORTER_METRICS
            .iter()
            .find(|m| m.name == "exporter.batch.latency")
            .expect("catalogue");
        let mut report = FlushReport::default();
        if let Some(address) = self.dogstatsd.clone() {
            let latency_name = catalogue::metric_name(&self.prefix, latency_metric);
            let mut exporter_tags = String::new();
            push_tag(&mut exporter_tags, "exporter", &self.exporter);
            let lines = dogstatsd_lines(
                &points,
                &latency_name,
                &latencies,
                &exporter_tags,
                &self.tags,
            );
            match send_dogstatsd(&address, &lines).await {
                Ok(()) => report.sent += (points.len() + latencies.len()) as u64,
                Err(e) => {
                    tracing::warn!(exporter = %self.exporter, error = %e, "DogStatsD send failed; metric points dropped");
                    report.dropped += (points.len() + latencies.len()) as u64;
                }
            }
        } else {
            let dropped_metric = catalogue::metric_name(
                &self.prefix,
                catalogue::EXPORTER_METRICS
                    .iter()
                    .find(|m| m.name == "exporter.metrics.dropped")
                    .expect("catalogue"),
            );
            let mut stamped: Vec<Stamped> = points
                .into_iter()
                .map(|point| Stamped {
                    point,
                    timestamp,
                    interval,
                })
                .collect();
            // Counts kept from failed flushes go with these, in the same requests, under their
            // own timestamp and interval; those older than Datadog takes are dropped.
            let mut too_old = 0u64;
            let mut kept = std::mem::take(&mut self.carried);
            kept.retain(|k| {
                let fresh = timestamp - k.timestamp <= MAX_CARRIED_AGE_SECS;
                if !fresh {
                    too_old += 1;
                    if k.point.metric == dropped_metric {
                        self.dropped_points += k.point.value as u64;
                    }
                }
                fresh
            });
            merge_kept(&mut stamped, kept, timestamp);
            if too_old > 0 {
                tracing::warn!(exporter = %self.exporter, points = too_old, "count points kept from failed metrics flushes are now an hour old, more than Datadog takes; dropped");
                report.dropped += too_old;
            }
            let mut capped = 0u64;
            for (range, body) in encode_series_ranges(&stamped, &self.host) {
                let n = count_series(&body);
                // Counts go again only when Datadog surely did not take them (a refusal would
                // come again; a request that may have been taken would count twice).
                let carry = match self.post("/api/v2/series", body).await {
                    Posted::Accepted => {
                        report.sent += n;
                        continue;
                    }
                    Posted::Refused | Posted::Failed { maybe_taken: true } => false,
                    Posted::Failed { maybe_taken: false } => true,
                };
                for s in &stamped[range] {
                    let p = &s.point;
                    match p.kind {
                        // The flush's own points come first in `stamped`, the kept ones after:
                        // past the cap, the oldest go.
                        MetricKind::Count if carry && self.carried.len() < MAX_CARRIED => {
                            report.carried += 1;
                            self.carried.push(s.clone());
                        }
                        MetricKind::Distribution => {}
                        _ => {
                            if p.kind == MetricKind::Count && carry {
                                capped += 1;
                            }
                            report.dropped += 1;
                            // The dropped-points count itself is not lost with its request:
                            // it is reported with the next.
                            if p.metric == dropped_metric {
                                self.dropped_points += p.value as u64;
                            }
                        }
                    }
                }
            }
            if capped > 0 {
                tracing::warn!(exporter = %self.exporter, points = capped, "{MAX_CARRIED} count points are kept from failed metrics flushes already; the oldest of the others are dropped");
            }
            if !latencies.is_empty() {
                let mut tags = Vec::new();
                let mut t = String::new();
                push_tag(&mut t, "exporter", &self.exporter);
                tags.push(t);
                tags.extend(self.tags.iter().cloned());
                let body = serde_json::json!({ "series": [{
                    "metric": catalogue::metric_name(&self.prefix, latency_metric),
                    "points": [[timestamp, latencies]],
                    "tags": tags,
                    "host": self.host,
                }]});
                let n = latencies.len() as u64;
                if let Posted::Accepted = self
                    .post(
                        "/api/v1/distribution_points",
                        gzip(&serde_json::to_vec(&body).unwrap_or_default()),
                    )
                    .await
                {
                    report.sent += n;
                } else {
                    report.dropped += n;
                }
            }
        }
        self.dropped_points += report.dropped;
        report
    }

    /// POSTs one gzip body with the retry budget.
    async fn post(&self, path: &str, body: Vec<u8>) -> Posted {
        let url = format!("{}{path}", self.api_base);
        let body = bytes::Bytes::from(body);
        let mut backoff = self.retry.backoff;
        // A rejected key is read again (the holder throttles the reads): on the first new key,
        // the request goes again at once (not counted against the retry budget).
        let mut reread = false;
        let mut attempt = 0;
        // An attempt whose outcome is unknown (a timeout after sending): Datadog may have
        // taken it.
        let mut maybe_taken = false;
        while attempt < self.retry.attempts.max(1) {
            attempt += 1;
            let key = self.key.current();
            let mut value = match reqwest::header::HeaderValue::from_str(key.expose()) {
                Ok(v) => v,
                Err(_) => return Posted::Refused,
            };
            value.set_sensitive(true);
            let result = self
                .client
                .post(&url)
                .header("DD-API-KEY", value)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(reqwest::header::CONTENT_ENCODING, "gzip")
                .body(body.clone())
                .send()
                .await;
            let mut hint = None;
            match result {
                Ok(r) if r.status().is_success() => return Posted::Accepted,
                Ok(r) if matches!(r.status().as_u16(), 401 | 403) => {
                    // The key may have been rotated and the old one revoked: the same re-read
                    // the logs path makes (single-flight and throttled by the holder), so that
                    // metrics do not go missing until the next scheduled refresh.
                    match self.key.refresh_after_rejection(key.generation()).await {
                        RefreshOutcome::Changed { .. } => {
                            // The first new key goes at once, outside the retry budget.
                            if !reread {
                                reread = true;
                                attempt -= 1;
                            }
                            continue;
                        }
                        RefreshOutcome::Unchanged => {
                            tracing::warn!(exporter = %self.exporter, status = %r.status(), %path, "metrics request refused (API key rejected); points dropped");
                            return Posted::Refused;
                        }
                        // The store not read (failed, or read moments ago): the key is not
                        // known to be revoked, so the request is retried like a failure of
                        // the API.
                        other => {
                            tracing::debug!(exporter = %self.exporter, outcome = ?other, attempt, %path, "metrics request refused (API key rejected) and the key store not read");
                        }
                    }
                }
                Ok(r) if matches!(r.status().as_u16(), 400 | 413) => {
                    tracing::warn!(exporter = %self.exporter, status = %r.status(), %path, "metrics request refused; points dropped");
                    return Posted::Refused;
                }
                Ok(r) => {
                    // A 429's `Retry-After` or `X-RateLimit-Reset` says when to come back.
                    hint = crate::classify::retry_after(r.headers()).filter(|h| !h.is_zero());
                    tracing::debug!(exporter = %self.exporter, status = %r.status(), attempt, %path, "metrics request failed")
                }
                Err(e) => {
                    maybe_taken |= !e.is_connect();
                    // Not reqwest's own text: it prints the URL whole.
                    tracing::debug!(exporter = %self.exporter, error = %e.without_url(), attempt, %path, "metrics request failed")
                }
            }
            if attempt < self.retry.attempts {
                tokio::time::sleep(hint.map_or(backoff, |h| h.min(MAX_RETRY_AFTER))).await;
                backoff *= 2;
            }
        }
        tracing::warn!(exporter = %self.exporter, %path, maybe_taken, "metrics retry budget exhausted");
        Posted::Failed { maybe_taken }
    }
}

/// What became of one metrics request.
enum Posted {
    Accepted,
    /// Refused for good (400, 413, a revoked key): sending it again would be refused again.
    Refused,
    /// The retry budget ran out; `maybe_taken` when an attempt's outcome is unknown.
    Failed {
        maybe_taken: bool,
    },
}

/// The `interval` of a flush's counts, in whole seconds: the time since the last flush's
/// timestamp (a slow flush, a skipped tick and a flush interval of 1.5 s all make it differ
/// from the configured one, and Datadog divides by it for rates), or the configured interval,
/// rounded, for the first flush.
fn count_interval(last: Option<i64>, timestamp: i64, configured: Duration) -> u64 {
    match last {
        Some(last) if timestamp > last => {
            u64::try_from(timestamp - last).map_or(1, |s| s.min(3600))
        }
        _ => ((configured.as_millis() + 500) / 1000).clamp(1, 3600) as u64,
    }
}

/// The longest server-requested wait before a metrics retry.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

fn count_series(gz: &[u8]) -> u64 {
    use std::io::Read;
    let mut text = Vec::new();
    let _ = flate2::read::GzDecoder::new(gz).read_to_end(&mut text);
    serde_json::from_slice::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v["series"].as_array().map(|a| a.len() as u64))
        .unwrap_or(0)
}

/// DogStatsD lines (`name:value|c|#tag,tag`) for points and latency samples.
pub fn dogstatsd_lines(
    points: &[Point],
    latency_metric: &str,
    latencies: &[f64],
    exporter_tag: &str,
    tags: &[String],
) -> Vec<String> {
    let mut lines = Vec::with_capacity(points.len() + latencies.len());
    for p in points {
        let kind = match p.kind {
            MetricKind::Count => "c",
            MetricKind::Gauge => "g",
            MetricKind::Distribution => "d",
        };
        let tags = p.tags.join(",");
        if tags.is_empty() {
            lines.push(format!("{}:{}|{kind}", p.metric, p.value));
        } else {
            lines.push(format!("{}:{}|{kind}|#{tags}", p.metric, p.value));
        }
    }
    let mut all_tags = vec![exporter_tag.to_owned()];
    all_tags.extend(tags.iter().cloned());
    let tag_text = all_tags.join(",");
    for v in latencies {
        lines.push(format!("{latency_metric}:{v}|d|#{tag_text}"));
    }
    lines
}

/// Sends DogStatsD lines, packed into datagrams of at most 8 KiB.
async fn send_dogstatsd(address: &str, lines: &[String]) -> std::io::Result<()> {
    let mut datagrams: Vec<String> = Vec::new();
    for line in lines {
        match datagrams.last_mut() {
            Some(d) if d.len() + 1 + line.len() <= 8_192 => {
                d.push('\n');
                d.push_str(line);
            }
            _ => datagrams.push(line.clone()),
        }
    }
    if let Some(target) = address.strip_prefix("udp://") {
        let socket = tokio::net::UdpSocket::bind(if target.starts_with('[') {
            "[::]:0"
        } else {
            "0.0.0.0:0"
        })
        .await?;
        socket.connect(target).await?;
        for d in &datagrams {
            socket.send(d.as_bytes()).await?;
        }
        Ok(())
    } else if let Some(path) = address.strip_prefix("unix://") {
        let socket = tokio::net::UnixDatagram::unbound()?;
        for d in &datagrams {
            socket.send_to(d.as_bytes(), path).await?;
        }
        Ok(())
    } else {
        Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("DogStatsD address `{address}` must start with udp:// or unix://"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clawdstrike_schema::{EventType, ResourceType, SecurityEvent};

    /// Kept counts never go out beside another point of their series and second (Datadog
    /// would keep only the last): two kept under one second are added together, and one kept
    /// at or after this flush's second (the clock stepped back) joins this flush's point.
    #[test]
    fn kept_counts_are_merged_where_they_share_a_series_and_second() {
        let point = |metric: &str, value: f64| Point {
            metric: metric.to_owned(),
            kind: MetricKind::Count,
            value,
            tags: vec!["exporter:dd".to_owned()],
            unit: "",
        };
        let at = |timestamp: i64, interval: u64, p: Point| Stamped {
            point: p,
            timestamp,
            interval,
        };
        let mut stamped = vec![
            at(1000, 10, point("events.total", 2.0)),
            at(1000, 10, point("events.denied", 1.0)),
        ];
        let kept = vec![
            at(990, 10, point("events.total", 1.0)),
            at(990, 10, point("events.total", 4.0)),
            at(1005, 10, point("events.total", 3.0)),
            at(990, 10, point("events.denied", 7.0)),
        ];
        merge_kept(&mut stamped, kept, 1000);
        let mut got: Vec<(i64, &str, f64)> = stamped
            .iter()
            .map(|s| (s.timestamp, s.point.metric.as_str(), s.point.value))
            .collect();
        got.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        assert_eq!(
            got,
            [
                (990, "events.denied", 7.0),
                (990, "events.total", 5.0),
                (1000, "events.denied", 1.0),
                (1000, "events.total", 5.0),
            ]
        );
    }

    /// Counts say the seconds they cover: since the last flush (a slow flush, a skipped tick,
    /// an interval of 1.5 s), else the configured interval rounded; at least 1, at most an
    /// hour.
    #[test]
    fn the_count_interval_is_the_time_since_the_last_flush() {
        let ten = Duration::from_secs(10);
        assert_eq!(count_interval(None, 100, ten), 10);
        assert_eq!(count_interval(None, 100, Duration::from_millis(1500)), 2);
        assert_eq!(count_interval(None, 100, Duration::from_millis(100)), 1);
        assert_eq!(count_interval(Some(80), 100, ten), 20);
        assert_eq!(count_interval(Some(99), 100, ten), 1);
        assert_eq!(count_interval(Some(100), 100, ten), 10);
        assert_eq!(count_interval(Some(0), 100_000, ten), 3600);
    }

    /// Environments that differ only in case become one tag value: one series, the counts
    /// summed (two points of one series and time would overwrite each other at Datadog).
    #[test]
    fn keys_that_normalise_alike_are_one_series_with_summed_counts() {
        let agg = SecurityAggregator::new(None);
        let event = |env: &str| {
            SecurityEvent::builder(EventType::GuardBlock)
                .agent_id("a")
                .session_id("s")
                .action("shell")
                .environment(env)
                .resource(ResourceType::Process, "ls")
                .build()
                .unwrap()
        };
        let batch = vec![
            Record::new(event("Prod")),
            Record::new(event("prod")),
            Record::new(event("PROD")),
        ];
        agg.record_delivered(&batch, &[0, 1, 2]);
        let points = agg.take("clawdstrike", &[]);
        let totals: Vec<_> = points
            .iter()
            .filter(|p| p.metric == "clawdstrike.events.total")
            .collect();
        assert_eq!(totals.len(), 1, "{points:?}");
        assert_eq!(totals[0].value, 3.0);
        assert!(
            totals[0].tags.contains(&"env:prod".to_owned()),
            "{:?}",
            totals[0].tags
        );
    }

    #[test]
    fn an_event_env_is_not_doubled_by_the_reporters_env() {
        let agg = SecurityAggregator::new(Some("fallback".into()));
        let with_env = SecurityEvent::builder(EventType::GuardBlock)
            .agent_id("a")
            .session_id("s")
            .action("shell")
            .environment("production")
            .resource(ResourceType::Process, "ls")
            .build()
            .unwrap();
        let without_env = SecurityEvent::builder(EventType::GuardBlock)
            .agent_id("a")
            .session_id("s")
            .action("shell")
            .resource(ResourceType::Process, "ls")
            .build()
            .unwrap();
        let batch = vec![Record::new(with_env), Record::new(without_env)];
        agg.record_delivered(&batch, &[0, 1]);
        let points = agg.take(
            "clawdstrike",
            &["env:demo".to_owned(), "service:clawdstrike".to_owned()],
        );
        for p in &points {
            let envs: Vec<_> = p.tags.iter().filter(|t| t.starts_with("env:")).collect();
            assert_eq!(envs.len(), 1, "{:?}", p.tags);
            assert!(p.tags.contains(&"service:clawdstrike".to_owned()));
        }
        assert!(
            points
                .iter()
                .any(|p| p.tags.contains(&"env:production".to_owned()))
        );
        assert!(
            points
                .iter()
                .any(|p| p.tags.contains(&"env:fallback".to_owned()))
        );
    }
}
