//! Formatting a [`Record`] as one Datadog log item, serialised straight into the request
//! buffer (no intermediate JSON tree per event).

use std::io::Write;
use std::net::IpAddr;

use clawdstrike_export::{Record, TraceContext};
use clawdstrike_schema::{ResourceType, SecurityEvent, Severity};
use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};

use crate::apm;
use crate::tags::{self, label_key, push_required_tag, push_tag, tag_key};

/// Datadog's per-item limit. Larger items are truncated by Datadog silently, so we truncate
/// them ourselves, visibly (`truncated: true`).
pub const MAX_ITEM_BYTES: usize = 1_000_000;

/// Default cap on the serialised size of `metadata`.
pub const DEFAULT_METADATA_MAX_BYTES: usize = 64 * 1024;

/// The Datadog `status` of a severity: info and low → `info`, medium → `warn`, high → `error`,
/// critical → `critical`.
pub fn status(severity: Severity) -> &'static str {
    match severity {
        Severity::Medium => "warn",
        Severity::High => "error",
        Severity::Critical => "critical",
        _ => "info",
    }
}

/// The log message: `[guard] BLOCKED: reason` (or `ALLOWED`).
pub fn message(event: &SecurityEvent) -> String {
    format!(
        "[{}] {}: {}",
        event.decision.guard,
        if event.decision.allowed {
            "ALLOWED"
        } else {
            "BLOCKED"
        },
        event.decision.reason
    )
}

/// What the formatter puts on every item: identity and static tags.
#[derive(Debug, Clone)]
pub struct FormatOptions {
    /// `service` (default `clawdstrike`, or `DD_SERVICE`).
    pub service: String,
    /// `ddsource` (default `clawdstrike`).
    pub source: String,
    /// `hostname`.
    pub hostname: String,
    /// Environment used when the event's session has none (`DD_ENV`).
    pub env: Option<String>,
    /// Version for unified service tagging (`DD_VERSION`).
    pub version: Option<String>,
    /// Configured tags (`DD_TAGS` and `logs.tags`), raw; normalised by [`LogFormatter::new`].
    pub tags: Vec<String>,
    /// Cap on serialised `metadata` (default 64 KiB); larger metadata is replaced by a preview.
    pub metadata_max_bytes: usize,
    /// Cap on one item (default and maximum 1,000,000 bytes).
    pub max_item_bytes: usize,
    /// Attach `dd.*`/`otel.trace_id` when a trace context is known (default true).
    pub trace_correlation: bool,
}

impl Default for FormatOptions {
    fn default() -> Self {
        Self {
            service: crate::catalogue::DEFAULT_SOURCE.to_owned(),
            source: crate::catalogue::DEFAULT_SOURCE.to_owned(),
            hostname: "unknown".to_owned(),
            env: None,
            version: None,
            tags: Vec::new(),
            metadata_max_bytes: DEFAULT_METADATA_MAX_BYTES,
            max_item_bytes: MAX_ITEM_BYTES,
            trace_correlation: true,
        }
    }
}

/// Formats records as Datadog log items.
#[derive(Debug, Clone)]
pub struct LogFormatter {
    options: FormatOptions,
    /// Normalised configured tags with their keys.
    static_tags: Vec<(String, String)>,
    env_tag: Option<String>,
}

/// What happened while formatting one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ItemInfo {
    /// Serialised size in bytes.
    pub bytes: usize,
    /// True if we shortened the item (metadata preview or capped strings).
    pub truncated: bool,
}

/// Reusable buffers, one per formatting thread.
#[derive(Debug, Default)]
pub struct Scratch {
    tags: String,
}

#[derive(Clone, Copy)]
enum MetadataMode {
    Full,
    Preview { original_bytes: usize },
}

struct Limits {
    /// Maximum bytes of any one string (`usize::MAX` = no cap).
    string_cap: usize,
    /// Maximum labels.
    max_labels: usize,
    metadata: MetadataMode,
    truncated: bool,
}

impl LogFormatter {
    /// A formatter; configured tags are normalised once here.
    pub fn new(mut options: FormatOptions) -> Self {
        options.max_item_bytes = options.max_item_bytes.clamp(16 * 1024, MAX_ITEM_BYTES);
        let static_tags = options
            .tags
            .iter()
            .filter_map(|t| tags::normalise_tag(t))
            .map(|t| (tag_key(&t).to_owned(), t))
            .collect();
        let env_tag = options.env.as_deref().and_then(|e| {
            let mut t = String::new();
            push_tag(&mut t, "env", e);
            (!t.is_empty()).then_some(t)
        });
        Self {
            options,
            static_tags,
            env_tag,
        }
    }

    /// The options in force.
    pub fn options(&self) -> &FormatOptions {
        &self.options
    }

    /// The `ddtags` of a record, as sent (for tests and inspection).
    pub fn ddtags(&self, event: &SecurityEvent) -> String {
        let mut out = String::new();
        self.build_tags(event, usize::MAX, &mut out);
        out
    }

    fn build_tags(&self, event: &SecurityEvent, max_labels: usize, out: &mut String) {
        out.clear();
        match event.session.environment.as_deref() {
            Some(env) => push_tag(out, "env", env),
            None => {
                if let Some(t) = &self.env_tag {
                    out.push_str(t);
                }
            }
        }
        push_tag(out, "event_type", event.event_type.as_str());
        push_required_tag(out, "guard", &event.decision.guard);
        push_tag(out, "severity", event.decision.severity.as_str());
        push_tag(out, "outcome", event.outcome.as_str());
        push_tag(
            out,
            "allowed",
            if event.decision.allowed {
                "true"
            } else {
                "false"
            },
        );
        if let Some(tenant) = &event.session.tenant_id {
            push_tag(out, "tenant", tenant);
        }
        push_tag(out, "resource_type", event.resource.resource_type.as_str());
        if let Some(version) = &self.options.version {
            push_tag(out, "version", version);
        }
        let has_env = out.starts_with("env:");
        // An event's own label beats a configured tag with the same key.
        let label_keys: Vec<String> = if self.static_tags.is_empty() {
            Vec::new()
        } else {
            event
                .labels
                .keys()
                .take(max_labels)
                .filter_map(label_key)
                .collect()
        };
        // A configured tag gives way only to a key this event's tags actually carry: a
        // configured `version:` stays when `DD_VERSION` is unset, a `tenant:` when the event
        // has no tenant.
        let wrote = |key: &str| match key {
            "env" => has_env,
            "tenant" => event.session.tenant_id.is_some(),
            "version" => self.options.version.is_some(),
            _ => crate::catalogue::LOG_TAGS.iter().any(|t| t.key == key),
        };
        for (key, tag) in &self.static_tags {
            let ours = wrote(key);
            if !ours && !label_keys.iter().any(|k| k == key) {
                if !out.is_empty() {
                    out.push(',');
                }
                out.push_str(tag);
            }
        }
        for (key, value) in event.labels.iter().take(max_labels) {
            if let Some(key) = label_key(key) {
                push_tag(out, &key, value);
            }
        }
    }

    /// Serialises `record` as one log item at the end of `out`. Never exceeds
    /// `max_item_bytes`: an oversized item is rewritten with capped strings, a metadata preview
    /// and `truncated: true`.
    pub fn write_item(
        &self,
        record: &Record,
        scratch: &mut Scratch,
        out: &mut Vec<u8>,
    ) -> ItemInfo {
        let event = &record.event;
        let start = out.len();
        let metadata_bytes = json_len(&event.metadata);
        let metadata = if metadata_bytes > self.options.metadata_max_bytes {
            MetadataMode::Preview {
                original_bytes: metadata_bytes,
            }
        } else {
            MetadataMode::Full
        };
        let mut limits = Limits {
            string_cap: usize::MAX,
            max_labels: usize::MAX,
            metadata,
            truncated: matches!(metadata, MetadataMode::Preview { .. }),
        };
        self.build_tags(event, limits.max_labels, &mut scratch.tags);
        self.serialize(record, &scratch.tags, &limits, out);
        if out.len() - start <= self.options.max_item_bytes {
            return ItemInfo {
                bytes: out.len() - start,
                truncated: limits.truncated,
            };
        }
        // Too big: cap every string, keep a metadata preview, fewer labels; halve until it fits.
        limits.truncated = true;
        limits.max_labels = 32;
        limits.metadata = MetadataMode::Preview {
            original_bytes: metadata_bytes,
        };
        limits.string_cap = self.options.max_item_bytes / 64;
        self.build_tags(event, limits.max_labels, &mut scratch.tags);
        loop {
            out.truncate(start);
            self.serialize(record, &scratch.tags, &limits, out);
            if out.len() - start <= self.options.max_item_bytes || limits.string_cap <= 16 {
                return ItemInfo {
                    bytes: out.len() - start,
                    truncated: true,
                };
            }
            limits.string_cap /= 2;
        }
    }

    fn serialize(&self, record: &Record, ddtags: &str, limits: &Limits, out: &mut Vec<u8>) {
        let item = Item {
            f: self,
            record,
            ddtags,
            limits,
        };
        let mut ser = serde_json::Serializer::new(out);
        // Serialising into a Vec cannot fail: all map keys are strings.
        let _ = item.serialize(&mut ser);
    }
}

/// Serialised JSON length of a value without building the string.
fn json_len(value: &serde_json::Value) -> usize {
    match value {
        serde_json::Value::Object(map) if map.is_empty() => 2,
        other => {
            let mut counter = Counter(0);
            let _ = serde_json::to_writer(&mut counter, other);
            counter.0
        }
    }
}

struct Counter(usize);

impl Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A string capped at `cap` bytes on a character boundary.
fn cap(s: &str, cap: usize) -> &str {
    if s.len() <= cap {
        return s;
    }
    let mut end = cap;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

struct Item<'a> {
    f: &'a LogFormatter,
    record: &'a Record,
    ddtags: &'a str,
    limits: &'a Limits,
}

/// Writes `key: value` only when the value is present.
macro_rules! opt_entry {
    ($map:expr, $key:expr, $value:expr) => {
        if let Some(v) = $value {
            $map.serialize_entry($key, &v)?;
        }
    };
}

impl Serialize for Item<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let e: &SecurityEvent = &self.record.event;
        let o = &self.f.options;
        let c = self.limits.string_cap;
        let mut m = s.serialize_map(None)?;
        if c == usize::MAX {
            m.serialize_entry("message", &Message(e))?;
        } else {
            m.serialize_entry("message", cap(&message(e), c))?;
        }
        m.serialize_entry("ddsource", &o.source)?;
        m.serialize_entry("service", &o.service)?;
        m.serialize_entry("hostname", &o.hostname)?;
        m.serialize_entry("status", status(e.decision.severity))?;
        m.serialize_entry("ddtags", self.ddtags)?;
        m.serialize_entry("timestamp", &Millis(&e.timestamp))?;
        m.serialize_entry("event_id", &e.event_id)?;
        m.serialize_entry("event_type", e.event_type.as_str())?;
        m.serialize_entry("event_category", e.event_category.as_str())?;
        m.serialize_entry("action", cap(&e.action, c))?;
        m.serialize_entry("schema_version", cap(&e.schema_version, c))?;
        opt_entry!(
            m,
            "ingested_at",
            e.ingested_at.map(|t| t.to_rfc3339_millis())
        );
        m.serialize_entry("security", &Security { e, c })?;
        m.serialize_entry(
            "agent",
            &Obj(&[
                ("id", Some(cap(&e.agent.id, c))),
                ("name", Some(cap(&e.agent.name, c))),
                ("version", Some(cap(&e.agent.version, c))),
                ("type", Some(cap(&e.agent.agent_type, c))),
            ]),
        )?;
        m.serialize_entry(
            "session",
            &Obj(&[
                ("id", Some(cap(&e.session.id, c))),
                ("user_id", e.session.user_id.as_deref().map(|v| cap(v, c))),
                (
                    "tenant_id",
                    e.session.tenant_id.as_deref().map(|v| cap(v, c)),
                ),
                (
                    "environment",
                    e.session.environment.as_deref().map(|v| cap(v, c)),
                ),
            ]),
        )?;
        m.serialize_entry("resource", &Resource { e, c })?;
        if !e.threat.is_empty() {
            m.serialize_entry("threat", &Threat { e, c })?;
        }
        match self.limits.metadata {
            MetadataMode::Full => m.serialize_entry("metadata", &e.metadata)?,
            MetadataMode::Preview { original_bytes } => m.serialize_entry(
                "metadata",
                &MetadataPreview {
                    original_bytes,
                    preview_cap: c.min(1024),
                    value: &e.metadata,
                },
            )?,
        }
        m.serialize_entry(
            "labels",
            &Labels {
                e,
                c,
                max: self.limits.max_labels,
            },
        )?;
        if self.limits.truncated {
            m.serialize_entry("truncated", &true)?;
        }
        m.serialize_entry(
            "evt",
            &Obj(&[
                ("name", Some(e.event_type.as_str())),
                ("category", Some(e.event_category.as_str())),
                ("outcome", Some(e.outcome.as_str())),
            ]),
        )?;
        if let Some(user) = &e.session.user_id {
            m.serialize_entry("usr", &Obj(&[("id", Some(cap(user, c)))]))?;
        }
        if e.resource.resource_type == ResourceType::Network
            && (e.resource.host.is_some() || e.resource.port.is_some())
        {
            m.serialize_entry("network", &Network { e, c })?;
        }
        if e.resource.resource_type == ResourceType::File
            && let Some(path) = &e.resource.path
        {
            m.serialize_entry("file", &Obj(&[("path", Some(cap(path, c)))]))?;
        }
        let trace = if o.trace_correlation {
            self.record
                .trace
                .or_else(|| apm::trace_from_metadata(&e.metadata))
        } else {
            None
        };
        if let Some(trace) = trace {
            m.serialize_entry("dd", &Dd { trace, o })?;
            m.serialize_entry(
                "otel",
                &Obj(&[(
                    "trace_id",
                    Some(apm::otel_trace_id(trace.trace_id).as_str()),
                )]),
            )?;
        }
        m.end()
    }
}

/// The message, written straight into the output (no temporary string).
struct Message<'a>(&'a SecurityEvent);

impl Serialize for Message<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let d = &self.0.decision;
        s.collect_str(&format_args!(
            "[{}] {}: {}",
            d.guard,
            if d.allowed { "ALLOWED" } else { "BLOCKED" },
            d.reason
        ))
    }
}

/// RFC 3339 with milliseconds in UTC (`2026-02-07T12:00:00.123Z`), formatted by hand.
struct Millis<'a>(&'a clawdstrike_schema::Timestamp);

impl Serialize for Millis<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use chrono::{Datelike, Timelike};
        let t = self.0.as_datetime();
        let year = t.year();
        if !(0..=9999).contains(&year) {
            return s.serialize_str(&self.0.to_rfc3339_millis());
        }
        let mut buf = *b"0000-00-00T00:00:00.000Z";
        let mut put = |at: usize, value: u32, digits: usize| {
            let mut v = value;
            for i in (0..digits).rev() {
                buf[at + i] = b'0' + (v % 10) as u8;
                v /= 10;
            }
        };
        put(0, year as u32, 4);
        put(5, t.month(), 2);
        put(8, t.day(), 2);
        put(11, t.hour(), 2);
        put(14, t.minute(), 2);
        // A leap second is carried in the nanoseconds (>= 1e9): clamp like chrono's formatter.
        put(17, t.second(), 2);
        put(20, (t.nanosecond() % 1_000_000_000) / 1_000_000, 3);
        s.serialize_str(std::str::from_utf8(&buf).unwrap_or("1970-01-01T00:00:00.000Z"))
    }
}

/// An object of optional string fields (absent ones omitted).
struct Obj<'a>(&'a [(&'static str, Option<&'a str>)]);

impl Serialize for Obj<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        for (k, v) in self.0 {
            opt_entry!(m, k, v);
        }
        m.end()
    }
}

struct Security<'a> {
    e: &'a SecurityEvent,
    c: usize,
}

impl Serialize for Security<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (d, c) = (&self.e.decision, self.c);
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("allowed", &d.allowed)?;
        m.serialize_entry("guard", cap(&d.guard, c))?;
        m.serialize_entry("severity", d.severity.as_str())?;
        m.serialize_entry("outcome", self.e.outcome.as_str())?;
        m.serialize_entry("reason", cap(&d.reason, c))?;
        opt_entry!(
            m,
            "policy_hash",
            d.policy_hash.as_deref().map(|v| cap(v, c))
        );
        opt_entry!(m, "ruleset", d.ruleset.as_deref().map(|v| cap(v, c)));
        m.end()
    }
}

struct Resource<'a> {
    e: &'a SecurityEvent,
    c: usize,
}

impl Serialize for Resource<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (r, c) = (&self.e.resource, self.c);
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("type", r.resource_type.as_str())?;
        m.serialize_entry("name", cap(&r.name, c))?;
        opt_entry!(m, "path", r.path.as_deref().map(|v| cap(v, c)));
        opt_entry!(m, "host", r.host.as_deref().map(|v| cap(v, c)));
        opt_entry!(m, "port", r.port);
        m.end()
    }
}

struct Threat<'a> {
    e: &'a SecurityEvent,
    c: usize,
}

impl Serialize for Threat<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (t, c) = (&self.e.threat, self.c);
        let mut m = s.serialize_map(None)?;
        if let Some(i) = &t.indicator {
            m.serialize_entry(
                "indicator",
                &Obj(&[
                    ("type", Some(i.indicator_type.as_str())),
                    ("value", Some(cap(&i.value, c))),
                ]),
            )?;
        }
        opt_entry!(m, "tactic", t.tactic.as_deref().map(|v| cap(v, c)));
        opt_entry!(m, "technique", t.technique.as_deref().map(|v| cap(v, c)));
        m.end()
    }
}

struct Network<'a> {
    e: &'a SecurityEvent,
    c: usize,
}

impl Serialize for Network<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = &self.e.resource;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry(
            "destination",
            &Destination {
                host: r.host.as_deref(),
                port: r.port,
                c: self.c,
            },
        )?;
        m.end()
    }
}

struct Destination<'a> {
    host: Option<&'a str>,
    port: Option<u16>,
    c: usize,
}

impl Serialize for Destination<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        if let Some(host) = self.host {
            let bare = host.trim_start_matches('[').trim_end_matches(']');
            if bare.parse::<IpAddr>().is_ok() {
                m.serialize_entry("ip", cap(bare, self.c))?;
            } else {
                m.serialize_entry("host", cap(host, self.c))?;
            }
        }
        opt_entry!(m, "port", self.port);
        m.end()
    }
}

struct Labels<'a> {
    e: &'a SecurityEvent,
    c: usize,
    max: usize,
}

impl Serialize for Labels<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        for (k, v) in self.e.labels.iter().take(self.max) {
            m.serialize_entry(cap(k, self.c), cap(v, self.c))?;
        }
        m.end()
    }
}

struct MetadataPreview<'a> {
    original_bytes: usize,
    preview_cap: usize,
    value: &'a serde_json::Value,
}

impl Serialize for MetadataPreview<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut text = Vec::new();
        let _ = serde_json::to_writer(
            LimitedWriter {
                out: &mut text,
                left: self.preview_cap,
            },
            self.value,
        );
        let preview = String::from_utf8_lossy(&text);
        let mut m = s.serialize_map(Some(3))?;
        m.serialize_entry("truncated", &true)?;
        m.serialize_entry("original_bytes", &self.original_bytes)?;
        m.serialize_entry("preview", &preview)?;
        m.end()
    }
}

/// A writer that keeps the first `left` bytes and then fails, ending serialisation early.
struct LimitedWriter<'a> {
    out: &'a mut Vec<u8>,
    left: usize,
}

impl Write for LimitedWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Err(std::io::Error::other("preview full"));
        }
        let n = buf.len().min(self.left);
        self.out.extend_from_slice(&buf[..n]);
        self.left -= n;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct Dd<'a> {
    trace: TraceContext,
    o: &'a FormatOptions,
}

impl Serialize for Dd<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("trace_id", &apm::dd_trace_id(self.trace.trace_id))?;
        m.serialize_entry("span_id", &apm::dd_span_id(self.trace.span_id))?;
        m.serialize_entry("service", &self.o.service)?;
        opt_entry!(m, "env", self.o.env.as_deref());
        opt_entry!(m, "version", self.o.version.as_deref());
        m.end()
    }
}
