//! A minimal Security Signals API: list and search with filters, read one, change its triage
//! state. Signals are seeded from Rust ([`crate::FakeIntake::add_signal`]) or the admin
//! endpoint.

use chrono::{DateTime, Duration as ChronoDuration, SecondsFormat, Utc};
use hyper::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::http::{self, Resp};
use crate::ids::SplitMix64;
use crate::server::Req;
use crate::state::{Shared, lock};

/// Triage states a signal can be in.
pub(crate) const STATES: &[&str] = &["open", "under_review", "archived"];
const ARCHIVE_REASONS: &[&str] = &[
    "none",
    "false_positive",
    "testing_or_maintenance",
    "investigated_case_opened",
    "true_positive_benign",
    "true_positive_malicious",
    "other",
];

/// A signal to seed. Build with [`SignalSeed::new`] and the `with_*` setters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SignalSeed {
    /// The signal's message (title and body).
    pub message: String,
    /// Tags, `key:value`.
    #[serde(default)]
    pub tags: Vec<String>,
    /// When it fired (default: now).
    #[serde(default = "Utc::now")]
    pub timestamp: DateTime<Utc>,
    /// Extra attributes (`status`, `rule`, `attributes` of the matched logs, ...).
    #[serde(default)]
    pub attributes: Map<String, Value>,
}

impl SignalSeed {
    /// A signal with this message, no tags, fired now.
    pub fn new(message: impl Into<String>) -> Self {
        SignalSeed {
            message: message.into(),
            tags: Vec::new(),
            timestamp: Utc::now(),
            attributes: Map::new(),
        }
    }

    /// Adds a tag.
    pub fn with_tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// Sets when it fired.
    pub fn with_timestamp(mut self, timestamp: DateTime<Utc>) -> Self {
        self.timestamp = timestamp;
        self
    }

    /// Adds an attribute (top level of the signal's `attributes`).
    pub fn with_attribute(mut self, key: impl Into<String>, value: Value) -> Self {
        self.attributes.insert(key.into(), value);
        self
    }
}

#[derive(Debug, Clone)]
struct Signal {
    id: String,
    seed: SignalSeed,
    state: String,
    archive_reason: Option<String>,
    archive_comment: Option<String>,
    version: u64,
}

impl Signal {
    fn to_json(&self) -> Value {
        let mut attrs = self.seed.attributes.clone();
        attrs.insert(
            "timestamp".into(),
            json!(
                self.seed
                    .timestamp
                    .to_rfc3339_opts(SecondsFormat::Millis, true)
            ),
        );
        attrs.insert("message".into(), json!(self.seed.message));
        attrs.insert("tags".into(), json!(self.seed.tags));
        let mut triage = Map::new();
        triage.insert("state".into(), json!(self.state));
        if let Some(r) = &self.archive_reason {
            triage.insert("archiveReason".into(), json!(r));
        }
        if let Some(c) = &self.archive_comment {
            triage.insert("archiveComment".into(), json!(c));
        }
        let custom = attrs.entry("custom").or_insert_with(|| json!({}));
        if !custom.is_object() {
            *custom = json!({});
        }
        custom["workflow"] = json!({ "triage": Value::Object(triage) });
        json!({ "id": self.id, "type": "signal", "attributes": Value::Object(attrs) })
    }

    fn attribute(&self, path: &str) -> Option<&Value> {
        let mut parts = path.split('.');
        let mut cur = self.seed.attributes.get(parts.next()?)?;
        for p in parts {
            cur = cur.get(p)?;
        }
        Some(cur)
    }

    fn matches(&self, query: &str) -> bool {
        query.split_whitespace().all(|token| {
            if token == "*" || token == "AND" {
                return true;
            }
            let (negate, token) = match token.strip_prefix('-') {
                Some(t) => (true, t),
                None => (false, token),
            };
            let hit = match token.split_once(':') {
                Some(("state" | "@workflow.triage.state", v)) => self.state == v,
                Some((key, value)) => {
                    let tag = format!("{}:{value}", key.trim_start_matches('@'));
                    self.seed.tags.iter().any(|t| t.eq_ignore_ascii_case(&tag))
                        || self
                            .attribute(key.trim_start_matches('@'))
                            .is_some_and(|a| match a {
                                Value::String(s) => s == value,
                                other => {
                                    let text = other.to_string();
                                    text == value
                                }
                            })
                }
                None => {
                    let needle = token.trim_matches('"').to_lowercase();
                    self.seed.message.to_lowercase().contains(&needle)
                }
            };
            hit != negate
        })
    }
}

/// The stored signals.
#[derive(Debug)]
pub(crate) struct Signals {
    rng: SplitMix64,
    list: Vec<Signal>,
}

impl Signals {
    pub(crate) fn new(seed: u64) -> Self {
        Signals {
            rng: SplitMix64::new(seed),
            list: Vec::new(),
        }
    }

    pub(crate) fn add(&mut self, seed: SignalSeed) -> String {
        let id = self.rng.signal_id();
        self.list.push(Signal {
            id: id.clone(),
            seed,
            state: "open".into(),
            archive_reason: None,
            archive_comment: None,
            version: 1,
        });
        id
    }

    pub(crate) fn clear(&mut self) {
        self.list.clear();
    }

    pub(crate) fn all(&self) -> Vec<Value> {
        self.list.iter().map(Signal::to_json).collect()
    }

    pub(crate) fn state(&self, id: &str) -> Option<String> {
        self.list
            .iter()
            .find(|s| s.id == id)
            .map(|s| s.state.clone())
    }
}

/// `filter[from]`/`filter[to]`: RFC 3339, Unix milliseconds, `now` or `now-15m` (s, m, h, d).
fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    if let Ok(ms) = s.parse::<i64>() {
        return DateTime::from_timestamp_millis(ms);
    }
    let rest = s.strip_prefix("now")?;
    if rest.is_empty() {
        return Some(Utc::now());
    }
    let (sign, rest) = match rest.as_bytes().first()? {
        b'-' => (-1, &rest[1..]),
        b'+' => (1, &rest[1..]),
        _ => return None,
    };
    let unit = rest.chars().last()?;
    let n: i64 = rest[..rest.len() - unit.len_utf8()].parse().ok()?;
    let d = match unit {
        's' => ChronoDuration::seconds(n),
        'm' => ChronoDuration::minutes(n),
        'h' => ChronoDuration::hours(n),
        'd' => ChronoDuration::days(n),
        _ => return None,
    };
    Some(Utc::now() + d * sign)
}

struct ListParams {
    query: Option<String>,
    from: Option<String>,
    to: Option<String>,
    sort: Option<String>,
    cursor: Option<String>,
    limit: Option<usize>,
}

pub(crate) fn handle(shared: &Shared, req: &mut Req<'_>) -> Resp {
    let path = req
        .parts
        .uri
        .path()
        .trim_end_matches('/')
        .strip_prefix("/api/v2/security_monitoring/signals")
        .unwrap_or("")
        .trim_start_matches('/')
        .to_owned();
    let parts: Vec<&str> = if path.is_empty() {
        Vec::new()
    } else {
        path.split('/').collect()
    };
    let method = req.method().clone();
    match (method, parts.as_slice()) {
        (Method::GET, []) => {
            let get = |k: &str| http::query_get(&req.query, k).map(str::to_owned);
            let params = ListParams {
                query: get("filter[query]"),
                from: get("filter[from]"),
                to: get("filter[to]"),
                sort: get("sort"),
                cursor: get("page[cursor]"),
                limit: get("page[limit]").and_then(|l| l.parse().ok()),
            };
            list(shared, req, params)
        }
        (Method::POST, ["search"]) => {
            let body = match req.json_body(shared.settings.max_decoded_bytes) {
                Ok(b) => b,
                Err(r) => return *r,
            };
            let s = |p: &str| body.pointer(p).and_then(Value::as_str).map(str::to_owned);
            let params = ListParams {
                query: s("/filter/query"),
                from: s("/filter/from"),
                to: s("/filter/to"),
                sort: s("/sort"),
                cursor: s("/page/cursor"),
                limit: body
                    .pointer("/page/limit")
                    .and_then(Value::as_u64)
                    .map(|l| l as usize),
            };
            list(shared, req, params)
        }
        (Method::GET, [id]) => {
            let found = lock(&shared.signals)
                .list
                .iter()
                .find(|s| s.id == *id)
                .map(Signal::to_json);
            match found {
                Some(s) => http::json(200, &json!({ "data": s })),
                None => req.refuse(404, "Signal not found"),
            }
        }
        (Method::PATCH, [id, "state"]) => {
            let id = (*id).to_owned();
            patch_state(shared, req, &id)
        }
        _ => req.refuse(405, "Method Not Allowed"),
    }
}

fn list(shared: &Shared, req: &mut Req<'_>, p: ListParams) -> Resp {
    let from = match p.from.as_deref().map(|f| parse_time(f).ok_or(f)) {
        Some(Err(f)) => return req.refuse(400, format!("filter[from] `{f}` is not a time")),
        Some(Ok(t)) => Some(t),
        None => None,
    };
    let to = match p.to.as_deref().map(|t| parse_time(t).ok_or(t)) {
        Some(Err(t)) => return req.refuse(400, format!("filter[to] `{t}` is not a time")),
        Some(Ok(t)) => Some(t),
        None => None,
    };
    let descending = match p.sort.as_deref() {
        None | Some("timestamp") => false,
        Some("-timestamp") => true,
        Some(other) => {
            return req.refuse(
                400,
                format!("sort `{other}` is not timestamp or -timestamp"),
            );
        }
    };
    let limit = p.limit.unwrap_or(10).clamp(1, 1000);
    let offset = match p.cursor.as_deref() {
        None | Some("") => 0,
        Some(c) => match c.strip_prefix("fi-").and_then(|n| n.parse::<usize>().ok()) {
            Some(n) => n,
            None => return req.refuse(400, format!("page[cursor] `{c}` is not a valid cursor")),
        },
    };
    let signals = lock(&shared.signals);
    let mut matching: Vec<&Signal> = signals
        .list
        .iter()
        .filter(|s| from.is_none_or(|f| s.seed.timestamp >= f))
        .filter(|s| to.is_none_or(|t| s.seed.timestamp <= t))
        .filter(|s| p.query.as_deref().is_none_or(|q| s.matches(q)))
        .collect();
    matching.sort_by_key(|s| s.seed.timestamp);
    if descending {
        matching.reverse();
    }
    let page: Vec<Value> = matching
        .iter()
        .skip(offset)
        .take(limit)
        .map(|s| s.to_json())
        .collect();
    let more = offset + page.len() < matching.len();
    let mut body = json!({ "data": page, "meta": { "page": {} } });
    if more {
        let after = format!("fi-{}", offset + limit);
        body["meta"]["page"]["after"] = json!(after);
        body["links"] = json!({
            "next": format!("/api/v2/security_monitoring/signals?page%5Bcursor%5D={after}&page%5Blimit%5D={limit}")
        });
    }
    http::json(200, &body)
}

fn patch_state(shared: &Shared, req: &mut Req<'_>, id: &str) -> Resp {
    let body = match req.json_body(shared.settings.max_decoded_bytes) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let attrs = body.pointer("/data/attributes");
    let state = attrs.and_then(|a| a.get("state")).and_then(Value::as_str);
    let Some(state) = state.filter(|s| STATES.contains(s)) else {
        return req.refuse(
            400,
            format!("data.attributes.state must be one of {}", STATES.join(", ")),
        );
    };
    let reason = attrs
        .and_then(|a| a.get("archive_reason"))
        .and_then(Value::as_str);
    if let Some(r) = reason
        && !ARCHIVE_REASONS.contains(&r)
    {
        return req.refuse(
            400,
            format!(
                "archive_reason `{r}` is not one of {}",
                ARCHIVE_REASONS.join(", ")
            ),
        );
    }
    let comment = attrs
        .and_then(|a| a.get("archive_comment"))
        .and_then(Value::as_str);
    let mut signals = lock(&shared.signals);
    let Some(sig) = signals.list.iter_mut().find(|s| s.id == id) else {
        drop(signals);
        return req.refuse(404, "Signal not found");
    };
    sig.state = state.to_owned();
    if state == "archived" {
        sig.archive_reason = Some(reason.unwrap_or("none").to_owned());
        sig.archive_comment = comment.map(str::to_owned);
    } else {
        sig.archive_reason = None;
        sig.archive_comment = None;
    }
    sig.version += 1;
    let resp = json!({
        "data": {
            "id": sig.id,
            "type": "signal_metadata",
            "attributes": {
                "state": sig.state,
                "archive_reason": sig.archive_reason,
                "archive_comment": sig.archive_comment,
                "version": sig.version,
                "triage_state_update_timestamp": Utc::now().timestamp_millis(),
            }
        }
    });
    drop(signals);
    http::json(200, &resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_in_every_documented_form() {
        assert!(parse_time("2026-02-07T12:00:00Z").is_some());
        assert_eq!(parse_time("1000").unwrap().timestamp_millis(), 1000);
        let past = parse_time("now-15m").unwrap();
        assert!(past < Utc::now());
        assert!(parse_time("yesterday").is_none());
    }

    #[test]
    fn queries_match_tags_attributes_and_text() {
        let mut s = Signals::new(1);
        s.add(
            SignalSeed::new("Secret leaked by agent-7")
                .with_tag("source:clawdstrike")
                .with_attribute("security", json!({"guard":"secret_leak"})),
        );
        let sig = &s.list[0];
        assert!(sig.matches("source:clawdstrike"));
        assert!(sig.matches("@security.guard:secret_leak leaked"));
        assert!(sig.matches("state:open"));
        assert!(!sig.matches("source:other"));
        assert!(!sig.matches("-source:clawdstrike"));
        assert!(!sig.matches("nothing"));
    }
}
