//! The catalogue: every log attribute, tag and metric this crate emits, in one place.
//!
//! Dashboards, monitors and detection rules query these names (`@security.guard`,
//! `guard:forbidden_path`, `clawdstrike.events.denied`). `cargo xtask templates` checks every
//! template against this catalogue, and this crate's tests check that the formatter emits
//! exactly what is listed here, so the two cannot drift apart. Change a name deliberately:
//! it is a contract with every user's dashboards.

/// The default metric prefix. The shipped templates query metrics under this prefix.
pub const DEFAULT_METRIC_PREFIX: &str = "clawdstrike";

/// The default `ddsource` and `service` of our log items.
pub const DEFAULT_SOURCE: &str = "clawdstrike";

/// The JSON type of a log attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttrType {
    /// A string.
    String,
    /// A boolean.
    Bool,
    /// A number.
    Number,
    /// Any JSON (an object or array; `metadata`, `labels`).
    Json,
}

/// One log attribute (a facet path, queried as `@path` in Datadog).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attribute {
    /// Dotted path, e.g. `security.guard`.
    pub path: &'static str,
    /// JSON type.
    pub ty: AttrType,
    /// Always present on every item (else only when the event has the value).
    pub always: bool,
    /// What it holds.
    pub description: &'static str,
}

const fn attr(
    path: &'static str,
    ty: AttrType,
    always: bool,
    description: &'static str,
) -> Attribute {
    Attribute {
        path,
        ty,
        always,
        description,
    }
}

/// Datadog's reserved top-level keys of a log item (queried without `@`: `service:`,
/// `status:`, `source:` for `ddsource`, `host:` for `hostname`).
pub const RESERVED_KEYS: &[&str] = &[
    "message", "ddsource", "ddtags", "hostname", "service", "status",
];

/// The `status` values we send (Datadog's own vocabulary).
pub const STATUS_VALUES: &[&str] = &["info", "warn", "error", "critical"];

/// Every attribute of our log items (besides the reserved keys).
pub const LOG_ATTRIBUTES: &[Attribute] = {
    use AttrType::{Bool, Json, Number, String as S};
    &[
        attr(
            "timestamp",
            S,
            true,
            "the event's time, RFC 3339 with milliseconds",
        ),
        attr("event_id", S, true, "the event's UUID"),
        attr(
            "event_type",
            S,
            true,
            "event type (policy_violation, forbidden_path, ...)",
        ),
        attr(
            "event_category",
            S,
            true,
            "event category (file, network, ...)",
        ),
        attr(
            "action",
            S,
            true,
            "action kind (file_access, egress, shell, ...)",
        ),
        attr("schema_version", S, true, "event schema version"),
        attr(
            "ingested_at",
            S,
            false,
            "when a collector ingested the event",
        ),
        attr(
            "security.allowed",
            Bool,
            true,
            "whether the action was allowed",
        ),
        attr("security.guard", S, true, "the guard that decided"),
        attr(
            "security.severity",
            S,
            true,
            "info, low, medium, high or critical",
        ),
        attr("security.outcome", S, true, "success, failure or unknown"),
        attr("security.reason", S, true, "the decision's reason"),
        attr(
            "security.policy_hash",
            S,
            false,
            "hash of the policy in force",
        ),
        attr("security.ruleset", S, false, "ruleset name"),
        attr("agent.id", S, true, "agent id"),
        attr("agent.name", S, true, "agent name (hushd)"),
        attr("agent.version", S, true, "agent version"),
        attr("agent.type", S, true, "agent type (clawdstrike)"),
        attr("session.id", S, true, "AI-agent session id"),
        attr("session.user_id", S, false, "user of the session"),
        attr("session.tenant_id", S, false, "tenant of the session"),
        attr(
            "session.environment",
            S,
            false,
            "environment of the session",
        ),
        attr(
            "resource.type",
            S,
            true,
            "file, network, process, tool or configuration",
        ),
        attr(
            "resource.name",
            S,
            true,
            "resource name (path, host, command line, tool)",
        ),
        attr("resource.path", S, false, "filesystem path"),
        attr("resource.host", S, false, "network host"),
        attr("resource.port", Number, false, "network port"),
        attr(
            "threat.indicator.type",
            S,
            false,
            "domain, file_path or pattern",
        ),
        attr("threat.indicator.value", S, false, "the indicator's value"),
        attr("threat.tactic", S, false, "MITRE ATT&CK tactic id"),
        attr("threat.technique", S, false, "MITRE ATT&CK technique id"),
        attr("metadata", Json, true, "guard details, capped in size"),
        attr("labels", Json, true, "the event's user labels"),
        attr(
            "truncated",
            Bool,
            false,
            "true when we shortened the item to fit Datadog's 1 MB limit",
        ),
        // Datadog standard attributes, for Cloud SIEM and out-of-the-box rules.
        attr("evt.name", S, true, "standard attribute: the event type"),
        attr(
            "evt.category",
            S,
            true,
            "standard attribute: the event category",
        ),
        attr(
            "evt.outcome",
            S,
            true,
            "standard attribute: success or failure",
        ),
        attr("usr.id", S, false, "standard attribute: the session's user"),
        attr(
            "network.destination.ip",
            S,
            false,
            "standard attribute: destination IP, when the host is an address",
        ),
        attr(
            "network.destination.port",
            Number,
            false,
            "standard attribute: destination port",
        ),
        attr(
            "network.destination.host",
            S,
            false,
            "destination host name",
        ),
        attr("file.path", S, false, "standard attribute: the file path"),
        // APM correlation.
        attr(
            "dd.trace_id",
            S,
            false,
            "lower 64 bits of the trace id, decimal",
        ),
        attr("dd.span_id", S, false, "span id, decimal"),
        attr(
            "otel.trace_id",
            S,
            false,
            "the full 128-bit trace id, 32 lowercase hex",
        ),
        attr("dd.service", S, false, "unified service tagging: service"),
        attr("dd.env", S, false, "unified service tagging: env"),
        attr("dd.version", S, false, "unified service tagging: version"),
    ]
};

/// One tag key we set on log items (`key:value` in `ddtags`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TagKey {
    /// The key.
    pub key: &'static str,
    /// Always present (else only when the event or configuration has the value).
    pub always: bool,
    /// What it holds.
    pub description: &'static str,
}

/// The tag keys we set on every log item, besides configured tags and event labels.
/// A label may not override any of these (nor a Datadog reserved tag key).
pub const LOG_TAGS: &[TagKey] = &[
    TagKey {
        key: "event_type",
        always: true,
        description: "event type",
    },
    TagKey {
        key: "guard",
        always: true,
        description: "guard name",
    },
    TagKey {
        key: "severity",
        always: true,
        description: "severity",
    },
    TagKey {
        key: "outcome",
        always: true,
        description: "success, failure or unknown",
    },
    TagKey {
        key: "allowed",
        always: true,
        description: "true or false",
    },
    TagKey {
        key: "resource_type",
        always: true,
        description: "resource type",
    },
    TagKey {
        key: "env",
        always: false,
        description: "session environment, else DD_ENV",
    },
    TagKey {
        key: "tenant",
        always: false,
        description: "session tenant",
    },
    TagKey {
        key: "version",
        always: false,
        description: "DD_VERSION (unified service tagging)",
    },
];

/// The values a closed-valued tag (`severity`) or log attribute (`security.severity`, without
/// `@`) takes, as sent; `None` for open-valued ones (guard, action, ids, environment, ...).
/// Templates are checked against these: a monitor on `event_type:secret_detection` would
/// never fire.
pub fn closed_values(key: &str) -> Option<Vec<&'static str>> {
    use clawdstrike_schema::{EventCategory, EventType, Outcome, ResourceType, Severity};
    fn names<T: Copy>(all: &[T], name: fn(T) -> &'static str) -> Option<Vec<&'static str>> {
        Some(all.iter().map(|v| name(*v)).collect())
    }
    match key {
        "event_type" | "evt.name" => names(EventType::ALL, EventType::as_str),
        "event_category" | "evt.category" => names(EventCategory::ALL, EventCategory::as_str),
        "outcome" | "security.outcome" | "evt.outcome" => names(Outcome::ALL, Outcome::as_str),
        "severity" | "security.severity" => names(Severity::ALL, Severity::as_str),
        "resource_type" | "resource.type" => names(ResourceType::ALL, ResourceType::as_str),
        "allowed" | "security.allowed" => Some(vec!["true", "false"]),
        _ => None,
    }
}

/// Datadog's reserved tag keys: a user label never sets these.
pub const RESERVED_TAG_KEYS: &[&str] = &["host", "device", "source", "service", "env", "version"];

/// How a metric is aggregated and sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// A count over the flush interval (`type: 1` in v2 series).
    Count,
    /// A gauge sampled at flush (`type: 3`).
    Gauge,
    /// A distribution (`/api/v1/distribution_points`), for percentiles.
    Distribution,
}

/// One metric we emit, by its name without the prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metric {
    /// Name after the prefix, e.g. `events.total` → `clawdstrike.events.total`.
    pub name: &'static str,
    /// Kind.
    pub kind: MetricKind,
    /// The tag keys it carries (besides configured metric tags).
    pub tags: &'static [&'static str],
    /// Unit, Datadog's vocabulary (`event`, `byte`, `request`, `millisecond`).
    pub unit: &'static str,
    /// What it counts.
    pub description: &'static str,
}

const SECURITY_TAGS: &[&str] = &[
    "guard",
    "severity",
    "outcome",
    "event_type",
    "env",
    "tenant",
];

/// Security metrics, aggregated over the flush interval. Break them down by tag:
/// `sum:clawdstrike.events.total{*} by {guard}`.
pub const SECURITY_METRICS: &[Metric] = &[
    Metric {
        name: "events.total",
        kind: MetricKind::Count,
        tags: SECURITY_TAGS,
        unit: "event",
        description: "every security event shipped",
    },
    Metric {
        name: "events.allowed",
        kind: MetricKind::Count,
        tags: SECURITY_TAGS,
        unit: "event",
        description: "events whose action was allowed",
    },
    Metric {
        name: "events.denied",
        kind: MetricKind::Count,
        tags: SECURITY_TAGS,
        unit: "event",
        description: "events whose action was denied (policy violations)",
    },
];

/// The exporter's own health, for the exporter-health dashboard and monitors.
pub const EXPORTER_METRICS: &[Metric] = &[
    Metric {
        name: "exporter.events.sent",
        kind: MetricKind::Count,
        tags: &["exporter"],
        unit: "event",
        description: "events accepted by Datadog (202)",
    },
    Metric {
        name: "exporter.events.truncated",
        kind: MetricKind::Count,
        tags: &["exporter"],
        unit: "event",
        description: "log items we truncated to fit 1 MB",
    },
    Metric {
        name: "exporter.events.out_of_window",
        kind: MetricKind::Count,
        tags: &["exporter"],
        unit: "event",
        description: "events delivered older than 18 h or more than 2 h ahead (Datadog may not index them at their time)",
    },
    Metric {
        name: "exporter.bytes.uncompressed",
        kind: MetricKind::Count,
        tags: &["exporter"],
        unit: "byte",
        description: "request bytes before compression",
    },
    Metric {
        name: "exporter.bytes.compressed",
        kind: MetricKind::Count,
        tags: &["exporter", "codec"],
        unit: "byte",
        description: "request bytes on the wire",
    },
    Metric {
        name: "exporter.requests",
        kind: MetricKind::Count,
        tags: &["exporter", "endpoint", "status_code"],
        unit: "request",
        description: "intake requests by status code (`network_error` when none)",
    },
    Metric {
        name: "exporter.retries",
        kind: MetricKind::Count,
        tags: &["exporter"],
        unit: "event",
        description: "event retries scheduled",
    },
    Metric {
        name: "exporter.dead_letters",
        kind: MetricKind::Count,
        tags: &["exporter"],
        unit: "event",
        description: "events dead-lettered",
    },
    Metric {
        name: "exporter.dropped",
        kind: MetricKind::Count,
        tags: &["exporter", "reason"],
        unit: "event",
        description: "events dropped by the queue policy, by reason",
    },
    Metric {
        name: "exporter.queue.depth",
        kind: MetricKind::Gauge,
        tags: &["exporter"],
        unit: "event",
        description: "events waiting in the queue",
    },
    Metric {
        name: "exporter.queue.capacity",
        kind: MetricKind::Gauge,
        tags: &["exporter"],
        unit: "event",
        description: "the queue's capacity",
    },
    Metric {
        name: "exporter.in_flight",
        kind: MetricKind::Gauge,
        tags: &["exporter"],
        unit: "request",
        description: "batches being exported",
    },
    Metric {
        name: "exporter.api_key.valid",
        kind: MetricKind::Gauge,
        tags: &["exporter"],
        unit: "",
        description: "1 while Datadog accepts the API key, 0 after it rejected it",
    },
    Metric {
        name: "exporter.batch.latency",
        kind: MetricKind::Distribution,
        tags: &["exporter"],
        unit: "millisecond",
        description: "time to export one batch, retries included",
    },
    Metric {
        name: "exporter.metrics.dropped",
        kind: MetricKind::Count,
        tags: &["exporter"],
        unit: "",
        description: "metric points dropped: refused for good, or their retry budget ran out (counts Datadog surely did not take are kept for the next flush instead)",
    },
];

/// Tag keys every metric may also carry from configuration (unified service tagging).
pub const COMMON_METRIC_TAGS: &[&str] = &["env", "service", "version"];

/// Every metric we emit.
pub fn all_metrics() -> impl Iterator<Item = &'static Metric> {
    SECURITY_METRICS.iter().chain(EXPORTER_METRICS)
}

/// The full name of `metric` under `prefix` (`prefix.name`; just `name` for an empty prefix).
pub fn metric_name(prefix: &str, metric: &Metric) -> String {
    if prefix.is_empty() {
        metric.name.to_owned()
    } else {
        format!("{prefix}.{}", metric.name)
    }
}

/// Looks up a full metric name under `prefix`.
pub fn find_metric(prefix: &str, full_name: &str) -> Option<&'static Metric> {
    let name = if prefix.is_empty() {
        Some(full_name)
    } else {
        full_name
            .strip_prefix(prefix)
            .and_then(|r| r.strip_prefix('.'))
    };
    name.and_then(|n| all_metrics().find(|m| m.name == n))
}

/// Looks up a log attribute by path (without `@`). A path inside `metadata.` or `labels.`
/// matches those free-form attributes.
pub fn find_attribute(path: &str) -> Option<&'static Attribute> {
    LOG_ATTRIBUTES.iter().find(|a| a.path == path).or_else(|| {
        let (head, _) = path.split_once('.')?;
        LOG_ATTRIBUTES
            .iter()
            .find(|a| a.path == head && a.ty == AttrType::Json)
    })
}
