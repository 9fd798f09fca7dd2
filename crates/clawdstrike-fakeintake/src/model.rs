//! The public data types: endpoints, what was recorded, statistics.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::faults::FaultAction;

/// A Datadog API the fake intake serves. Names (`Display`, serde) are the ones the admin
/// endpoint uses: `logs`, `series`, `series_v1`, `distribution_points`, `validate`,
/// `dashboards`, `monitors`, `rules`, `signals`, `unknown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Endpoint {
    /// `POST /api/v2/logs`.
    Logs,
    /// `POST /api/v2/series`.
    Series,
    /// `POST /api/v1/series`.
    SeriesV1,
    /// `POST /api/v1/distribution_points`.
    DistributionPoints,
    /// `GET /api/v1/validate`.
    Validate,
    /// `/api/v1/dashboard[/{id}]`.
    Dashboards,
    /// `/api/v1/monitor[/{id}|/validate]`.
    Monitors,
    /// `/api/v2/security_monitoring/rules[/{id}|/validation]`.
    Rules,
    /// `/api/v2/security_monitoring/signals[...]`.
    Signals,
    /// Any other path (answered 404).
    Unknown,
}

impl Endpoint {
    /// Every endpoint, in a stable order.
    pub const ALL: [Endpoint; 10] = [
        Endpoint::Logs,
        Endpoint::Series,
        Endpoint::SeriesV1,
        Endpoint::DistributionPoints,
        Endpoint::Validate,
        Endpoint::Dashboards,
        Endpoint::Monitors,
        Endpoint::Rules,
        Endpoint::Signals,
        Endpoint::Unknown,
    ];

    /// The endpoint serving `path` (any method).
    pub fn classify(path: &str) -> Endpoint {
        let path = path.trim_end_matches('/');
        if path == "/api/v2/logs" {
            Endpoint::Logs
        } else if path == "/api/v2/series" {
            Endpoint::Series
        } else if path == "/api/v1/series" {
            Endpoint::SeriesV1
        } else if path == "/api/v1/distribution_points" {
            Endpoint::DistributionPoints
        } else if path == "/api/v1/validate" {
            Endpoint::Validate
        } else if path == "/api/v1/dashboard" || path.starts_with("/api/v1/dashboard/") {
            Endpoint::Dashboards
        } else if path == "/api/v1/monitor" || path.starts_with("/api/v1/monitor/") {
            Endpoint::Monitors
        } else if path == "/api/v2/security_monitoring/rules"
            || path.starts_with("/api/v2/security_monitoring/rules/")
        {
            Endpoint::Rules
        } else if path == "/api/v2/security_monitoring/signals"
            || path.starts_with("/api/v2/security_monitoring/signals/")
        {
            Endpoint::Signals
        } else {
            Endpoint::Unknown
        }
    }

    /// The configuration APIs (dashboards, monitors, rules, signals): they need an
    /// application key too, and are the ones rate limiting applies to.
    pub fn is_config(self) -> bool {
        matches!(
            self,
            Endpoint::Dashboards | Endpoint::Monitors | Endpoint::Rules | Endpoint::Signals
        )
    }

    /// The metrics APIs (`series`, `series_v1`, `distribution_points`).
    pub fn is_metrics(self) -> bool {
        matches!(
            self,
            Endpoint::Series | Endpoint::SeriesV1 | Endpoint::DistributionPoints
        )
    }

    /// The admin-endpoint name of this endpoint.
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Logs => "logs",
            Endpoint::Series => "series",
            Endpoint::SeriesV1 => "series_v1",
            Endpoint::DistributionPoints => "distribution_points",
            Endpoint::Validate => "validate",
            Endpoint::Dashboards => "dashboards",
            Endpoint::Monitors => "monitors",
            Endpoint::Rules => "rules",
            Endpoint::Signals => "signals",
            Endpoint::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Endpoint {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Endpoint::ALL
            .into_iter()
            .find(|e| e.as_str() == s)
            .ok_or_else(|| format!("unknown endpoint `{s}`"))
    }
}

/// How the `DD-API-KEY` of a request compared with the valid keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyStatus {
    /// No key header.
    Missing,
    /// One of the valid keys.
    Valid,
    /// A key that is not (or no longer) valid.
    Invalid,
    /// Not checked (a fault answered first, or the path is unknown).
    NotChecked,
}

/// One request as the fake intake saw it. Credential header values are replaced by
/// `<redacted>`: a record never holds a key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RequestRecord {
    /// Arrival order, from 1.
    pub seq: u64,
    /// Which API.
    pub endpoint: Endpoint,
    /// HTTP method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Request headers, lowercase names, credentials redacted.
    pub headers: Vec<(String, String)>,
    /// The `Content-Encoding` header, if any.
    pub content_encoding: Option<String>,
    /// Body size on the wire (compressed, if it was).
    pub compressed_bytes: usize,
    /// Body size after decoding, when it was decoded.
    pub uncompressed_bytes: Option<usize>,
    /// Number of log items or series in the body, when it was parsed.
    pub items: Option<usize>,
    /// How the API key compared.
    pub api_key: KeyStatus,
    /// The status answered; `None` when the connection was reset or stalled.
    pub status: Option<u16>,
    /// The fault injected, if any.
    pub fault: Option<FaultAction>,
    /// Why the request was refused (4xx reasons), if it was.
    pub error: Option<String>,
}

impl RequestRecord {
    /// The value of a header (name case-insensitive); credentials read `<redacted>`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One decoded log item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct LogItem {
    /// The item as sent.
    pub value: Value,
    /// Its size in bytes, as serialised in the request.
    pub raw_bytes: usize,
    /// Over the per-item limit: Datadog would have truncated it silently.
    pub truncated_by_intake: bool,
    /// The [`RequestRecord::seq`] of the request that carried it.
    pub request_seq: u64,
}

/// Which metrics API a series came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricApi {
    /// `POST /api/v2/series`.
    SeriesV2,
    /// `POST /api/v1/series`.
    SeriesV1,
    /// `POST /api/v1/distribution_points`.
    Distribution,
}

/// One point of a series. A distribution point `[ts, [v1, v2]]` is kept as one
/// `MetricPoint` per value, all with the same timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MetricPoint {
    /// Unix seconds.
    pub timestamp: i64,
    /// The value.
    pub value: f64,
}

/// One decoded metric series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct MetricSeries {
    /// The API it came through.
    pub api: MetricApi,
    /// The metric name.
    pub metric: String,
    /// `count`, `rate`, `gauge`, `unspecified` or `distribution` (v2's integer types are
    /// mapped to these names).
    pub metric_type: String,
    /// The points.
    pub points: Vec<MetricPoint>,
    /// The tags, as sent.
    pub tags: Vec<String>,
    /// The host (v1 `host`, or v2's `resources` entry of type `host`).
    pub host: Option<String>,
    /// The unit, if sent.
    pub unit: Option<String>,
    /// The interval in seconds, if sent.
    pub interval: Option<i64>,
    /// The [`RequestRecord::seq`] of the request that carried it.
    pub request_seq: u64,
    /// When it arrived, Unix seconds: Datadog keeps only points at most an hour older than
    /// that and at most ten minutes ahead of it ([`MetricSeries::in_window`]).
    pub received_at: i64,
}

impl MetricSeries {
    /// True when every filter matches a tag: `key:value` exactly, `key:*` any value of
    /// `key`, or a bare `key` as a whole tag.
    pub fn has_tags(&self, filters: &[&str]) -> bool {
        filters.iter().all(|f| {
            if let Some(key) = f.strip_suffix(":*") {
                self.tags
                    .iter()
                    .any(|t| t.split_once(':').is_some_and(|(k, _)| k == key))
            } else {
                self.tags.iter().any(|t| t == f)
            }
        })
    }

    /// Whether Datadog would keep a point of this series at `timestamp`: at most an hour old
    /// and at most ten minutes ahead when it arrived.
    pub fn in_window(&self, timestamp: i64) -> bool {
        (self.received_at - 3_600..=self.received_at + 600).contains(&timestamp)
    }

    /// Sum of the values of all points.
    pub fn sum(&self) -> f64 {
        self.points.iter().map(|p| p.value).sum()
    }
}

/// A snapshot of the counters. Cheap to take; what `wait_until` predicates look at.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Stats {
    /// Requests to the Datadog APIs (not the admin endpoint).
    pub requests: u64,
    /// Requests by endpoint name.
    pub requests_by_endpoint: BTreeMap<String, u64>,
    /// Responses by status code (resets and stalls are not responses).
    pub responses_by_status: BTreeMap<u16, u64>,
    /// Faults injected (scripted and random).
    pub faults_injected: u64,
    /// Connections reset by a fault.
    pub connections_reset: u64,
    /// Requests stalled by a fault, in total.
    pub requests_stalled: u64,
    /// Requests stalled right now (waiting for release, reset or shutdown).
    pub stalled_now: u64,
    /// Log requests accepted (202).
    pub log_requests_accepted: u64,
    /// Log items accepted, duplicates included.
    pub total_items: u64,
    /// Distinct `event_id` values accepted.
    pub unique_event_ids: u64,
    /// `event_id` values accepted more than once.
    pub duplicate_event_ids: u64,
    /// Items accepted without an `event_id`.
    pub items_without_event_id: u64,
    /// Items over the per-item limit (Datadog would have truncated them).
    pub items_truncated_by_intake: u64,
    /// Items kept for inspection right now.
    pub kept_items: u64,
    /// Items not kept, or evicted, because of the inspection cap or `keep_items(false)`.
    pub dropped_items: u64,
    /// Bytes of accepted log bodies on the wire (compressed).
    pub log_bytes_compressed: u64,
    /// Bytes of accepted log bodies once decoded.
    pub log_bytes_uncompressed: u64,
    /// Series accepted (all metrics APIs).
    pub series: u64,
    /// Metric points accepted.
    pub metric_points: u64,
    /// Metric points accepted (202) that Datadog would then drop: more than an hour old or
    /// more than ten minutes ahead (seconds mistaken for milliseconds, say).
    pub metric_points_out_of_window: u64,
}

/// The kind of a configuration object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectKind {
    /// A dashboard (`/api/v1/dashboard`), id like `abc-def-ghi`.
    Dashboard,
    /// A monitor (`/api/v1/monitor`), integer id.
    Monitor,
    /// A Cloud SIEM detection rule (`/api/v2/security_monitoring/rules`), id like `abc-def-ghi`.
    SecurityRule,
}
