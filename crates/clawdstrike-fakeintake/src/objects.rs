//! Configuration as code: dashboards, monitors (with validate) and Cloud SIEM detection rules
//! (with validation), stored as JSON.

use chrono::{SecondsFormat, Utc};
use hyper::Method;
use serde_json::{Map, Value, json};

use crate::http::{self, Resp};
use crate::ids::SplitMix64;
use crate::model::ObjectKind;
use crate::server::Req;
use crate::state::{Shared, lock};

/// The widget `definition.type` values Datadog documents (`shared/spec/datadog.md`, in its
/// order). There is no `pie`. Template tooling validates against this list; the emulator also
/// accepts [`MORE_WIDGET_TYPES`].
pub const DOCUMENTED_WIDGET_TYPES: &[&str] = &[
    "timeseries",
    "query_value",
    "toplist",
    "query_table",
    "sunburst",
    "heatmap",
    "distribution",
    "log_stream",
    "list_stream",
    "note",
    "free_text",
    "group",
    "alert_graph",
    "alert_value",
    "check_status",
    "change",
    "scatterplot",
    "treemap",
    "geomap",
    "hostmap",
    "manage_status",
    "slo",
    "image",
    "iframe",
    "event_stream",
    "event_timeline",
    "trace_service",
    "topology_map",
    "funnel",
    "servicemap",
];

/// Widget types Datadog has beyond the documented list, which the emulator accepts too.
pub const MORE_WIDGET_TYPES: &[&str] = &[
    "slo_list",
    "powerpack",
    "split_group",
    "run_workflow",
    "sankey",
];

fn known_widget_type(t: &str) -> bool {
    DOCUMENTED_WIDGET_TYPES.contains(&t) || MORE_WIDGET_TYPES.contains(&t)
}

/// Known monitor types.
pub(crate) const MONITOR_TYPES: &[&str] = &[
    "composite",
    "event alert",
    "event-v2 alert",
    "log alert",
    "metric alert",
    "process alert",
    "query alert",
    "rum alert",
    "service check",
    "synthetics alert",
    "trace-analytics alert",
    "slo alert",
    "audit alert",
    "ci-pipelines alert",
    "ci-tests alert",
    "error-tracking alert",
    "database-monitoring alert",
    "network-performance alert",
    "cost alert",
];

const RULE_TYPES: &[&str] = &[
    "log_detection",
    "workload_security",
    "application_security",
    "signal_correlation",
];
const AGGREGATIONS: &[&str] = &[
    "count",
    "cardinality",
    "sum",
    "max",
    "new_value",
    "geo_data",
    "event_count",
    "none",
];
const CASE_STATUSES: &[&str] = &["info", "low", "medium", "high", "critical"];
const WINDOWS: &[u64] = &[
    0, 60, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400,
];
const DETECTION_METHODS: &[&str] = &[
    "threshold",
    "new_value",
    "anomaly_detection",
    "impossible_travel",
    "hardcoded",
    "third_party",
    "anomaly_threshold",
    "sequence_detection",
];

fn now_iso() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The stored objects, in creation order.
#[derive(Debug)]
pub(crate) struct Objects {
    rng: SplitMix64,
    next_monitor: u64,
    dashboards: Vec<(String, Value)>,
    monitors: Vec<(String, Value)>,
    rules: Vec<(String, Value)>,
}

impl Objects {
    pub(crate) fn new(seed: u64) -> Self {
        Objects {
            rng: SplitMix64::new(seed),
            next_monitor: 1_000_001,
            dashboards: Vec::new(),
            monitors: Vec::new(),
            rules: Vec::new(),
        }
    }

    pub(crate) fn clear(&mut self) {
        self.dashboards.clear();
        self.monitors.clear();
        self.rules.clear();
    }

    fn list(&self, kind: ObjectKind) -> &Vec<(String, Value)> {
        match kind {
            ObjectKind::Dashboard => &self.dashboards,
            ObjectKind::Monitor => &self.monitors,
            ObjectKind::SecurityRule => &self.rules,
        }
    }

    fn list_mut(&mut self, kind: ObjectKind) -> &mut Vec<(String, Value)> {
        match kind {
            ObjectKind::Dashboard => &mut self.dashboards,
            ObjectKind::Monitor => &mut self.monitors,
            ObjectKind::SecurityRule => &mut self.rules,
        }
    }

    pub(crate) fn all(&self, kind: ObjectKind) -> Vec<Value> {
        self.list(kind).iter().map(|(_, v)| v.clone()).collect()
    }

    pub(crate) fn get(&self, kind: ObjectKind, id: &str) -> Option<&Value> {
        self.list(kind)
            .iter()
            .find(|(i, _)| i == id)
            .map(|(_, v)| v)
    }

    pub(crate) fn get_mut(&mut self, kind: ObjectKind, id: &str) -> Option<&mut Value> {
        self.list_mut(kind)
            .iter_mut()
            .find(|(i, _)| i == id)
            .map(|(_, v)| v)
    }

    pub(crate) fn remove(&mut self, kind: ObjectKind, id: &str) -> bool {
        let list = self.list_mut(kind);
        let before = list.len();
        list.retain(|(i, _)| i != id);
        list.len() != before
    }

    /// Stores `body` as a new object: assigns an id and the server-side fields Datadog adds.
    pub(crate) fn insert(&mut self, kind: ObjectKind, body: Value) -> Value {
        let mut obj = match body {
            Value::Object(m) => m,
            other => {
                let mut m = Map::new();
                m.insert("value".into(), other);
                m
            }
        };
        let now = now_iso();
        let id = match kind {
            ObjectKind::Dashboard => {
                let id = self.unique_triple(kind);
                let slug = slug(obj.get("title").and_then(Value::as_str).unwrap_or(""));
                obj.insert("id".into(), json!(id));
                obj.insert("url".into(), json!(format!("/dashboard/{id}/{slug}")));
                obj.insert("created_at".into(), json!(now));
                obj.insert("modified_at".into(), json!(now));
                obj.insert("author_handle".into(), json!("fakeintake@example.com"));
                obj.insert("author_name".into(), json!("Fake Intake"));
                obj.entry("description").or_insert(Value::Null);
                obj.entry("is_read_only").or_insert(json!(false));
                obj.entry("notify_list").or_insert(json!([]));
                obj.entry("template_variables").or_insert(json!([]));
                id
            }
            ObjectKind::Monitor => {
                let n = self.next_monitor;
                self.next_monitor += 1;
                obj.insert("id".into(), json!(n));
                obj.insert("created".into(), json!(now));
                obj.insert("modified".into(), json!(now));
                obj.insert(
                    "creator".into(),
                    json!({"email":"fakeintake@example.com","handle":"fakeintake@example.com","name":"Fake Intake"}),
                );
                obj.insert("overall_state".into(), json!("No Data"));
                obj.insert("org_id".into(), json!(1));
                obj.insert("deleted".into(), Value::Null);
                obj.entry("options").or_insert(json!({}));
                obj.entry("tags").or_insert(json!([]));
                obj.entry("multi").or_insert(json!(false));
                obj.entry("priority").or_insert(Value::Null);
                n.to_string()
            }
            ObjectKind::SecurityRule => {
                let id = self.unique_triple(kind);
                obj.insert("id".into(), json!(id));
                obj.insert("createdAt".into(), json!(Utc::now().timestamp_millis()));
                obj.insert("creationAuthorId".into(), json!(1));
                obj.insert("isDefault".into(), json!(false));
                obj.insert("isDeleted".into(), json!(false));
                obj.insert("version".into(), json!(1));
                obj.entry("type").or_insert(json!("log_detection"));
                obj.entry("tags").or_insert(json!([]));
                obj.entry("filters").or_insert(json!([]));
                obj.entry("hasExtendedTitle").or_insert(json!(false));
                id
            }
        };
        let value = Value::Object(obj);
        self.list_mut(kind).push((id, value.clone()));
        value
    }

    fn unique_triple(&mut self, kind: ObjectKind) -> String {
        loop {
            let id = self.rng.triple_id();
            if self.get(kind, &id).is_none() {
                return id;
            }
        }
    }

    /// Replaces (dashboards) or merges top-level fields into (monitors, rules) object `id`,
    /// keeping the server-side fields and bumping the modification time or version.
    fn update(&mut self, kind: ObjectKind, id: &str, body: Value) -> Option<Value> {
        let stored = self.get_mut(kind, id)?;
        let Value::Object(old) = stored else {
            return None;
        };
        let Value::Object(new) = body else {
            return None;
        };
        let keep: &[&str] = match kind {
            ObjectKind::Dashboard => &["id", "url", "created_at", "author_handle", "author_name"],
            ObjectKind::Monitor => &[
                "id",
                "created",
                "creator",
                "org_id",
                "overall_state",
                "deleted",
            ],
            ObjectKind::SecurityRule => &[
                "id",
                "createdAt",
                "creationAuthorId",
                "isDefault",
                "isDeleted",
                "version",
            ],
        };
        let mut merged = match kind {
            ObjectKind::Dashboard => {
                let mut m: Map<String, Value> = keep
                    .iter()
                    .filter_map(|k| old.get(*k).map(|v| ((*k).to_owned(), v.clone())))
                    .collect();
                for (k, v) in new {
                    if !keep.contains(&k.as_str()) {
                        m.insert(k, v);
                    }
                }
                m.entry("description").or_insert(Value::Null);
                m.entry("is_read_only").or_insert(json!(false));
                m.entry("notify_list").or_insert(json!([]));
                m.entry("template_variables").or_insert(json!([]));
                m
            }
            _ => {
                let mut m = old.clone();
                for (k, v) in new {
                    if !keep.contains(&k.as_str()) {
                        m.insert(k, v);
                    }
                }
                m
            }
        };
        let now = now_iso();
        match kind {
            ObjectKind::Dashboard => {
                merged.insert("modified_at".into(), json!(now));
            }
            ObjectKind::Monitor => {
                merged.insert("modified".into(), json!(now));
            }
            ObjectKind::SecurityRule => {
                let v = merged.get("version").and_then(Value::as_u64).unwrap_or(1);
                merged.insert("version".into(), json!(v + 1));
                merged.insert("updateAuthorId".into(), json!(1));
            }
        }
        *stored = Value::Object(merged);
        Some(stored.clone())
    }
}

fn slug(title: &str) -> String {
    let mut out = String::new();
    for c in title.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    out.trim_end_matches('-').to_owned()
}

pub(crate) fn handle(shared: &Shared, req: &mut Req<'_>, kind: ObjectKind) -> Resp {
    let base = match kind {
        ObjectKind::Dashboard => "/api/v1/dashboard",
        ObjectKind::Monitor => "/api/v1/monitor",
        ObjectKind::SecurityRule => "/api/v2/security_monitoring/rules",
    };
    let path = req.parts.uri.path().trim_end_matches('/');
    let rest = path
        .strip_prefix(base)
        .unwrap_or("")
        .trim_start_matches('/')
        .to_owned();
    if rest.contains('/') {
        return req.refuse(404, "Not found");
    }
    let max = shared.settings.max_decoded_bytes;
    let method = req.method().clone();
    match (method, rest.as_str()) {
        (Method::GET, "") => list(shared, req, kind),
        (Method::POST, "") => {
            let body = match req.json_body(max) {
                Ok(b) => b,
                Err(resp) => return *resp,
            };
            let errors = validate(kind, &body, false);
            if !errors.is_empty() {
                return req.refuse_all(400, errors);
            }
            let stored = lock(&shared.objects).insert(kind, body);
            http::json(200, &stored)
        }
        (Method::POST, "validate") if kind == ObjectKind::Monitor => {
            let body = match req.json_body(max) {
                Ok(b) => b,
                Err(resp) => return *resp,
            };
            let errors = validate_monitor(&body, true);
            if errors.is_empty() {
                http::json_static(200, "{}")
            } else {
                req.refuse_all(400, errors)
            }
        }
        (Method::POST, "validation") if kind == ObjectKind::SecurityRule => {
            let body = match req.json_body(max) {
                Ok(b) => b,
                Err(resp) => return *resp,
            };
            let errors = validate_rule(&body);
            if errors.is_empty() {
                http::empty(204)
            } else {
                req.refuse_all(400, errors)
            }
        }
        (Method::GET, id) => match lock(&shared.objects).get(kind, id) {
            Some(v) => http::json(200, v),
            None => not_found(req, kind),
        },
        (Method::PUT, id) => {
            let body = match req.json_body(max) {
                Ok(b) => b,
                Err(resp) => return *resp,
            };
            if !body.is_object() {
                return req.refuse(400, "body must be a JSON object");
            }
            let mut objects = lock(&shared.objects);
            let Some(current) = objects.get(kind, id).cloned() else {
                drop(objects);
                return not_found(req, kind);
            };
            // Validate what the object would become.
            let candidate = match kind {
                ObjectKind::Dashboard => body.clone(),
                _ => {
                    let mut m = current.as_object().cloned().unwrap_or_default();
                    if let Value::Object(b) = &body {
                        m.extend(b.clone());
                    }
                    Value::Object(m)
                }
            };
            let errors = validate(kind, &candidate, false);
            if !errors.is_empty() {
                drop(objects);
                return req.refuse_all(400, errors);
            }
            match objects.update(kind, id, body) {
                Some(v) => http::json(200, &v),
                None => {
                    drop(objects);
                    not_found(req, kind)
                }
            }
        }
        (Method::DELETE, id) => {
            if !lock(&shared.objects).remove(kind, id) {
                return not_found(req, kind);
            }
            match kind {
                ObjectKind::Dashboard => http::json(200, &json!({ "deleted_dashboard_id": id })),
                ObjectKind::Monitor => {
                    let n: Value = id.parse::<u64>().map(Value::from).unwrap_or(json!(id));
                    http::json(200, &json!({ "deleted_monitor_id": n }))
                }
                ObjectKind::SecurityRule => http::empty(204),
            }
        }
        _ => req.refuse(405, "Method Not Allowed"),
    }
}

fn not_found(req: &mut Req<'_>, kind: ObjectKind) -> Resp {
    let what = match kind {
        ObjectKind::Dashboard => "Dashboard",
        ObjectKind::Monitor => "Monitor",
        ObjectKind::SecurityRule => "Rule",
    };
    req.refuse(404, format!("{what} not found"))
}

fn list(shared: &Shared, req: &mut Req<'_>, kind: ObjectKind) -> Resp {
    let all = lock(&shared.objects).all(kind);
    match kind {
        ObjectKind::Dashboard => {
            // Paged by `count` (100 by default, as Datadog's API declares) from offset `start`.
            let count = http::query_get(&req.query, "count")
                .and_then(|s| s.parse::<usize>().ok())
                .unwrap_or(100)
                .max(1);
            let start = http::query_get(&req.query, "start")
                .and_then(|s| s.parse::<usize>().ok())
                .unwrap_or(0);
            let summaries: Vec<Value> = all
                .iter()
                .skip(start)
                .take(count)
                .map(|d| {
                    let mut s = Map::new();
                    for k in [
                        "id",
                        "title",
                        "description",
                        "layout_type",
                        "url",
                        "is_read_only",
                        "created_at",
                        "modified_at",
                        "author_handle",
                    ] {
                        s.insert(k.into(), d.get(k).cloned().unwrap_or(Value::Null));
                    }
                    s.insert("deleted_at".into(), Value::Null);
                    Value::Object(s)
                })
                .collect();
            http::json(200, &json!({ "dashboards": summaries }))
        }
        ObjectKind::Monitor => {
            let name = http::query_get(&req.query, "name").map(str::to_lowercase);
            let tags: Vec<String> = ["tags", "monitor_tags"]
                .iter()
                .filter_map(|k| http::query_get(&req.query, k))
                .flat_map(|t| t.split(','))
                .map(|t| t.trim().to_owned())
                .filter(|t| !t.is_empty())
                .collect();
            let filtered: Vec<Value> = all
                .into_iter()
                .filter(|m| {
                    name.as_ref().is_none_or(|n| {
                        m.get("name")
                            .and_then(Value::as_str)
                            .is_some_and(|x| x.to_lowercase().contains(n))
                    })
                })
                .filter(|m| {
                    let have: Vec<&str> = m
                        .get("tags")
                        .and_then(Value::as_array)
                        .map(|a| a.iter().filter_map(Value::as_str).collect())
                        .unwrap_or_default();
                    tags.iter().all(|t| have.contains(&t.as_str()))
                })
                .collect();
            http::json(200, &Value::Array(filtered))
        }
        ObjectKind::SecurityRule => {
            let size = http::query_get(&req.query, "page[size]")
                .and_then(|s| s.parse::<usize>().ok())
                .unwrap_or(10)
                .clamp(1, 1000);
            let number = http::query_get(&req.query, "page[number]")
                .and_then(|s| s.parse::<usize>().ok())
                .unwrap_or(0);
            let total = all.len();
            let page: Vec<Value> = all
                .into_iter()
                .skip(number.saturating_mul(size))
                .take(size)
                .collect();
            http::json(
                200,
                &json!({
                    "data": page,
                    "meta": {"page": {"total_count": total, "total_filtered_count": total}}
                }),
            )
        }
    }
}

pub(crate) fn validate(kind: ObjectKind, body: &Value, strict: bool) -> Vec<String> {
    match kind {
        ObjectKind::Dashboard => validate_dashboard(body),
        ObjectKind::Monitor => validate_monitor(body, strict),
        ObjectKind::SecurityRule => validate_rule(body),
    }
}

fn non_empty_str<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
}

fn check_string_array(v: &Value, key: &str, errors: &mut Vec<String>, at: &str) {
    match v.get(key) {
        None | Some(Value::Null) => {}
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => {}
        Some(_) => errors.push(format!("{at}{key} must be an array of strings")),
    }
}

pub(crate) fn validate_dashboard(d: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    if !d.is_object() {
        return vec!["body must be a JSON object".into()];
    }
    if non_empty_str(d, "title").is_none() {
        errors.push("title is required and must be a non-empty string".into());
    }
    match d.get("layout_type").and_then(Value::as_str) {
        Some("ordered" | "free") => {}
        Some(other) => errors.push(format!("layout_type `{other}` is not one of ordered, free")),
        None => errors.push("layout_type is required (ordered or free)".into()),
    }
    match d.get("widgets") {
        Some(Value::Array(w)) => check_widgets(w, "widgets", &mut errors),
        _ => errors.push("widgets is required and must be an array".into()),
    }
    errors
}

fn check_widgets(widgets: &[Value], at: &str, errors: &mut Vec<String>) {
    for (i, w) in widgets.iter().enumerate() {
        let here = format!("{at}[{i}]");
        let Some(def) = w.get("definition").filter(|d| d.is_object()) else {
            errors.push(format!(
                "{here}.definition is required and must be an object"
            ));
            continue;
        };
        match def.get("type").and_then(Value::as_str) {
            Some(t) if known_widget_type(t) => {}
            Some(t) => errors.push(format!(
                "{here}.definition.type `{t}` is not a known widget type"
            )),
            None => errors.push(format!("{here}.definition.type is required")),
        }
        if let Some(Value::Array(inner)) = def.get("widgets") {
            check_widgets(inner, &format!("{here}.definition.widgets"), errors);
        }
    }
}

/// A comparison at the end of a monitor query: `... > 10`.
fn query_threshold(query: &str) -> Option<(&'static str, f64)> {
    let tail = match query.rfind(')') {
        Some(i) => &query[i + 1..],
        None => query,
    };
    for op in [">=", "<=", ">", "<", "=="] {
        if let Some(i) = tail.rfind(op) {
            let value = tail[i + op.len()..].trim();
            return value.parse::<f64>().ok().map(|v| (op, v));
        }
    }
    None
}

pub(crate) fn validate_monitor(m: &Value, strict: bool) -> Vec<String> {
    let mut errors = Vec::new();
    if !m.is_object() {
        return vec!["body must be a JSON object".into()];
    }
    let kind = m.get("type").and_then(Value::as_str);
    match kind {
        Some(t) if MONITOR_TYPES.contains(&t) => {}
        Some(t) => errors.push(format!("Invalid monitor type: `{t}`")),
        None => errors.push("The `type` field is required".into()),
    }
    let query = non_empty_str(m, "query");
    if query.is_none() {
        errors.push("The `query` field is required".into());
    }
    if strict {
        for key in ["name", "message"] {
            if non_empty_str(m, key).is_none() {
                errors.push(format!("The `{key}` field is required"));
            }
        }
    }
    check_string_array(m, "tags", &mut errors, "");
    if let Some(p) = m.get("priority").filter(|p| !p.is_null())
        && !p.as_u64().is_some_and(|p| (1..=5).contains(&p))
    {
        errors.push("priority must be null or an integer from 1 to 5".into());
    }
    if m.get("options")
        .is_some_and(|o| !o.is_object() && !o.is_null())
    {
        errors.push("options must be an object".into());
    }
    if let (Some(t), Some(q)) = (kind, query) {
        if t == "log alert" && !q.trim_start().starts_with("logs(") {
            errors.push("a log alert query must start with logs(\"...\")".into());
        }
        if matches!(t, "metric alert" | "query alert" | "log alert") {
            match query_threshold(q) {
                None => errors.push(format!(
                    "The value provided for parameter 'query' is invalid: no comparison to a threshold at the end of `{q}`"
                )),
                Some((op, critical)) => {
                    let thresholds = m.pointer("/options/thresholds");
                    let get = |k: &str| thresholds.and_then(|t| t.get(k)).and_then(Value::as_f64);
                    if let Some(c) = get("critical")
                        && (c - critical).abs() > f64::EPSILON * c.abs().max(1.0)
                    {
                            errors.push(format!(
                                "Alert threshold ({c}) does not match that used in the query ({critical})."
                            ));
                    }
                    if let Some(w) = get("warning") {
                        let ok = match op {
                            ">" | ">=" => w < critical,
                            "<" | "<=" => w > critical,
                            _ => true,
                        };
                        if !ok {
                            let rel = if op.starts_with('>') { "less" } else { "greater" };
                            errors.push(format!(
                                "Warning threshold ({w}) must be {rel} than the alert threshold ({critical}) with {op} comparison."
                            ));
                        }
                    }
                }
            }
        }
    }
    errors
}

fn condition_identifiers(condition: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let bytes = condition.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            out.push(&condition[start..i]);
        } else if c.is_ascii_digit() {
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'.') {
                i += 1;
            }
        } else {
            i += 1;
        }
    }
    out
}

pub(crate) fn validate_rule(r: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    if !r.is_object() {
        return vec!["body must be a JSON object".into()];
    }
    if non_empty_str(r, "name").is_none() {
        errors.push("name is required and must be a non-empty string".into());
    }
    if !r.get("message").is_some_and(Value::is_string) {
        errors.push("message is required and must be a string".into());
    }
    if !r.get("isEnabled").is_some_and(Value::is_boolean) {
        errors.push("isEnabled is required and must be a boolean".into());
    }
    if let Some(t) = r.get("type") {
        match t.as_str() {
            Some(t) if RULE_TYPES.contains(&t) => {}
            _ => errors.push(format!("type {t} is not one of {}", RULE_TYPES.join(", "))),
        }
    }
    check_string_array(r, "tags", &mut errors, "");
    let mut names: Vec<String> = Vec::new();
    match r.get("queries").and_then(Value::as_array) {
        Some(qs) if !qs.is_empty() => {
            for (i, q) in qs.iter().enumerate() {
                let at = format!("queries[{i}].");
                if !q.is_object() {
                    errors.push(format!("queries[{i}] must be an object"));
                    continue;
                }
                if q.get("query").is_some_and(|v| !v.is_string()) {
                    errors.push(format!("{at}query must be a string"));
                }
                if let Some(a) = q.get("aggregation") {
                    match a.as_str() {
                        Some(a) if AGGREGATIONS.contains(&a) => {}
                        _ => errors.push(format!(
                            "{at}aggregation {a} is not one of {}",
                            AGGREGATIONS.join(", ")
                        )),
                    }
                }
                check_string_array(q, "groupByFields", &mut errors, &at);
                check_string_array(q, "distinctFields", &mut errors, &at);
                let default = char::from(b'a' + (i % 26) as u8).to_string();
                match q.get("name") {
                    None | Some(Value::Null) => names.push(default),
                    Some(Value::String(n)) if n.is_empty() => names.push(default),
                    Some(Value::String(n)) => names.push(n.clone()),
                    Some(_) => errors.push(format!("{at}name must be a string")),
                }
            }
        }
        _ => errors.push("queries is required and must be a non-empty array".into()),
    }
    match r.get("cases").and_then(Value::as_array) {
        Some(cs) if !cs.is_empty() => {
            for (i, c) in cs.iter().enumerate() {
                let at = format!("cases[{i}].");
                if !c.is_object() {
                    errors.push(format!("cases[{i}] must be an object"));
                    continue;
                }
                match c.get("status").and_then(Value::as_str) {
                    Some(s) if CASE_STATUSES.contains(&s) => {}
                    Some(s) => errors.push(format!(
                        "{at}status `{s}` is not one of {}",
                        CASE_STATUSES.join(", ")
                    )),
                    None => errors.push(format!("{at}status is required")),
                }
                match c.get("condition") {
                    None | Some(Value::Null) => {}
                    Some(Value::String(cond)) => {
                        for ident in condition_identifiers(cond) {
                            if !names.iter().any(|n| n == ident) {
                                errors.push(format!(
                                    "{at}condition `{cond}` refers to `{ident}`, which is not a query name"
                                ));
                            }
                        }
                    }
                    Some(_) => errors.push(format!("{at}condition must be a string")),
                }
                check_string_array(c, "notifications", &mut errors, &at);
            }
        }
        _ => errors.push("cases is required and must be a non-empty array".into()),
    }
    match r.get("options") {
        Some(Value::Object(o)) => {
            for key in ["evaluationWindow", "keepAlive", "maxSignalDuration"] {
                if let Some(v) = o.get(key)
                    && !v.as_u64().is_some_and(|s| WINDOWS.contains(&s))
                {
                    errors.push(format!(
                        "options.{key} {v} is not one of {WINDOWS:?} (seconds)"
                    ));
                }
            }
            if let Some(m) = o.get("detectionMethod") {
                match m.as_str() {
                    Some(m) if DETECTION_METHODS.contains(&m) => {}
                    _ => errors.push(format!(
                        "options.detectionMethod {m} is not one of {}",
                        DETECTION_METHODS.join(", ")
                    )),
                }
            }
        }
        _ => errors.push("options is required and must be an object".into()),
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule() -> Value {
        json!({"name":"r","message":"m","isEnabled":true,"type":"log_detection",
            "queries":[{"query":"source:x","aggregation":"count","name":"a"}],
            "cases":[{"status":"high","condition":"a > 3"}],
            "options":{"evaluationWindow":300,"keepAlive":600,"maxSignalDuration":3600,"detectionMethod":"threshold"}})
    }

    #[test]
    fn rule_validation_catches_each_rule() {
        assert_eq!(validate_rule(&rule()), Vec::<String>::new());
        let mut r = rule();
        r["cases"][0]["status"] = json!("severe");
        assert!(validate_rule(&r)[0].contains("status `severe`"));
        let mut r = rule();
        r["options"]["keepAlive"] = json!(601);
        assert!(validate_rule(&r)[0].contains("keepAlive"));
        let mut r = rule();
        r["cases"][0]["condition"] = json!("b > 3");
        assert!(validate_rule(&r)[0].contains("`b`"));
        let mut r = rule();
        r["queries"] = json!([]);
        assert!(validate_rule(&r)[0].contains("queries"));
        let mut r = rule();
        r["queries"][0]["aggregation"] = json!("avg");
        assert!(validate_rule(&r)[0].contains("aggregation"));
        let mut r = rule();
        r["queries"][0].as_object_mut().unwrap().remove("name");
        assert!(validate_rule(&r).is_empty(), "unnamed first query is `a`");
    }

    #[test]
    fn monitor_thresholds_must_agree_with_the_query() {
        let m = json!({"name":"n","message":"m","type":"log alert",
            "query":"logs(\"x\").index(\"*\").rollup(\"count\").last(\"5m\") > 10",
            "options":{"thresholds":{"critical":10,"warning":5}}});
        assert!(validate_monitor(&m, true).is_empty());
        let mut bad = m.clone();
        bad["options"]["thresholds"]["warning"] = json!(20);
        assert!(validate_monitor(&bad, true)[0].contains("Warning threshold"));
        let mut bad = m.clone();
        bad["options"]["thresholds"]["critical"] = json!(11);
        assert!(validate_monitor(&bad, true)[0].contains("does not match"));
        let mut bad = m;
        bad["type"] = json!("pie alert");
        assert!(validate_monitor(&bad, true)[0].contains("Invalid monitor type"));
    }

    #[test]
    fn slugs() {
        assert_eq!(
            slug("Clawdstrike: Security Posture!"),
            "clawdstrike-security-posture"
        );
    }
}
