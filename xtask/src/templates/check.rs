//! The checks of one dashboard, monitor or rule: structure (typed models), semantics (query
//! names, conditions, thresholds, tags, handles, key-like strings) and, for our own templates,
//! the catalogue (metrics, tags, log facets).

use clawdstrike_datadog::catalogue::{self, MetricKind};
use serde_json::Value;

use super::model::{self, DetectionMethod, MonitorType, RuleAggregation};
use super::queries::{self, Comparator};
use super::{Issue, Kind, escape_pointer};

/// What the catalogue check needs: the metric prefix the exporter is configured with.
#[derive(Debug, Clone)]
pub(crate) struct CatalogueContext {
    pub(crate) metric_prefix: String,
}

/// Checks one document of `kind`. With a catalogue context, also checks it against the
/// catalogue and the template policy (monitors notify someone).
pub(crate) fn check_document(
    kind: Kind,
    doc: &Value,
    catalogue: Option<&CatalogueContext>,
) -> Vec<Issue> {
    let mut issues = Vec::new();
    match kind {
        Kind::Dashboard => check_dashboard(doc, catalogue, &mut issues),
        Kind::Monitor => check_monitor(doc, catalogue, &mut issues),
        Kind::Rule => check_rule(doc, catalogue, &mut issues),
    }
    check_key_like(doc, "", &mut issues);
    issues
}

// ---------------------------------------------------------------------------------------------
// Dashboards
// ---------------------------------------------------------------------------------------------

fn check_dashboard(doc: &Value, ctx: Option<&CatalogueContext>, issues: &mut Vec<Issue>) {
    if let Err(err) = model::parse::<model::Dashboard>(doc) {
        issues.push(Issue::new(err.pointer, err.message));
    }
    if let Some(Value::Array(widgets)) = doc.get("widgets") {
        check_widgets(widgets, "/widgets", ctx, issues);
        // A free layout places every widget itself, and has no groups.
        if doc.get("layout_type").and_then(Value::as_str) == Some("free") {
            for (n, widget) in widgets.iter().enumerate() {
                if widget.get("layout").is_none() {
                    issues.push(Issue::new(
                        format!("/widgets/{n}"),
                        "a widget of a `free` layout needs its `layout` (x, y, width, height)",
                    ));
                }
                if widget["definition"]["type"] == "group" {
                    issues.push(Issue::new(
                        format!("/widgets/{n}/definition/type"),
                        "a `free` layout has no group widgets (use `ordered`)",
                    ));
                }
            }
            if doc.get("reflow_type").is_some() {
                issues.push(Issue::new(
                    "/reflow_type",
                    "`reflow_type` belongs to `ordered` layouts",
                ));
            }
        }
    }
    check_tags(doc.get("tags"), "/tags", issues);
    // Dashboard tags name the teams that own it: `team:<name>`, at most 5.
    if let Some(Value::Array(tags)) = doc.get("tags") {
        if tags.len() > 5 {
            issues.push(Issue::new("/tags", "a dashboard has at most 5 tags"));
        }
        for (n, tag) in tags.iter().enumerate() {
            if !tag.as_str().is_some_and(|t| t.starts_with("team:")) {
                issues.push(Issue::new(
                    format!("/tags/{n}"),
                    format!("dashboard tags are teams, `team:<name>`, not {tag}"),
                ));
            }
        }
    }
}

fn check_widgets(
    widgets: &[Value],
    base: &str,
    ctx: Option<&CatalogueContext>,
    issues: &mut Vec<Issue>,
) {
    for (n, widget) in widgets.iter().enumerate() {
        let pointer = format!("{base}/{n}");
        if let Err(err) = model::parse::<model::Widget>(widget) {
            issues.push(Issue::new(format!("{pointer}{}", err.pointer), err.message));
            continue;
        }
        let definition = &widget["definition"];
        let def_pointer = format!("{pointer}/definition");
        let Some(kind) = definition.get("type").and_then(Value::as_str) else {
            issues.push(Issue::new(
                &def_pointer,
                "missing field `type` (the widget type)",
            ));
            continue;
        };
        match model::parse_widget_definition(kind, definition) {
            Err(err) => issues.push(Issue::new(
                format!("{def_pointer}{}", err.pointer),
                err.message,
            )),
            Ok(model::Definition::Group(group)) => {
                check_widgets(
                    &group.widgets,
                    &format!("{def_pointer}/widgets"),
                    ctx,
                    issues,
                );
            }
            Ok(model::Definition::Other) => {
                check_definition(kind, definition, &def_pointer, ctx, issues)
            }
        }
    }
}

/// Semantic checks of one (structurally valid) widget definition.
fn check_definition(
    kind: &str,
    def: &Value,
    pointer: &str,
    ctx: Option<&CatalogueContext>,
    issues: &mut Vec<Issue>,
) {
    let mut requests: Vec<(String, &Value)> = Vec::new();
    match def.get("requests") {
        Some(Value::Array(items)) => {
            for (n, r) in items.iter().enumerate() {
                requests.push((format!("{pointer}/requests/{n}"), r));
            }
        }
        Some(Value::Object(map)) => {
            for (key, r) in map {
                requests.push((format!("{pointer}/requests/{}", escape_pointer(key)), r));
            }
        }
        _ => {}
    }
    if kind != "list_stream" && kind != "topology_map" && kind != "funnel" {
        for (rp, request) in &requests {
            if request.get("query").is_some() || request.get("request_type").is_some() {
                check_histogram_query(kind, request, rp, ctx, issues);
            }
            check_request(request, rp, ctx, issues);
        }
    }
    let Some(ctx) = ctx else { return };
    match kind {
        "log_stream" => {
            if let Some(query) = def.get("query").and_then(Value::as_str) {
                check_log_search(query, &format!("{pointer}/query"), issues);
            }
            if let Some(Value::Array(columns)) = def.get("columns") {
                for (n, column) in columns.iter().enumerate() {
                    let column = column.as_str().unwrap_or_default();
                    let bare = column
                        .strip_prefix("core_")
                        .or_else(|| column.strip_prefix("tag_"))
                        .unwrap_or(column);
                    if !["timestamp", "message", "date", "content"].contains(&bare) {
                        check_facet(bare, &format!("{pointer}/columns/{n}"), issues);
                    }
                }
            }
        }
        "list_stream" => {
            for (rp, request) in &requests {
                if request
                    .pointer("/query/data_source")
                    .and_then(Value::as_str)
                    == Some("logs_stream")
                    && let Some(query) = request
                        .pointer("/query/query_string")
                        .and_then(Value::as_str)
                {
                    check_log_search(query, &format!("{rp}/query/query_string"), issues);
                }
            }
        }
        _ => {
            let _ = ctx;
        }
    }
}

/// A logs query's search, computed facet (`compute.<compute_key>`: `metric` in a formula query,
/// `facet` in the older `log_query`) and group-by facets, against the catalogue.
fn check_logs_query(query: &Value, pointer: &str, compute_key: &str, issues: &mut Vec<Issue>) {
    if let Some(search) = query.pointer("/search/query").and_then(Value::as_str) {
        check_log_search(search, &format!("{pointer}/search/query"), issues);
    }
    if let Some(facet) = query
        .get("compute")
        .and_then(|c| c.get(compute_key))
        .and_then(Value::as_str)
    {
        check_facet(facet, &format!("{pointer}/compute/{compute_key}"), issues);
    }
    if let Some(Value::Array(groups)) = query.get("group_by") {
        for (n, group) in groups.iter().enumerate() {
            if let Some(facet) = group.get("facet").and_then(Value::as_str) {
                check_facet(facet, &format!("{pointer}/group_by/{n}/facet"), issues);
            }
        }
    }
}

/// The older per-source query objects a widget request may hold instead of `q` or `queries`.
const LEGACY_REQUEST_QUERIES: &[&str] = &[
    "log_query",
    "apm_query",
    "apm_stats_query",
    "rum_query",
    "security_query",
    "network_query",
    "event_query",
    "process_query",
    "profile_metrics_query",
    "audit_query",
];

/// A request's `query`: only a distribution widget's histogram request has one
/// (`request_type: histogram`, `query: {data_source, name, query}`); its metric query is
/// checked like any other.
fn check_histogram_query(
    kind: &str,
    request: &Value,
    pointer: &str,
    ctx: Option<&CatalogueContext>,
    issues: &mut Vec<Issue>,
) {
    let query = request.get("query").unwrap_or(&Value::Null);
    if kind != "distribution"
        || request.get("request_type").and_then(Value::as_str) != Some("histogram")
        || query.is_null()
    {
        let key = if query.is_null() {
            "request_type"
        } else {
            "query"
        };
        issues.push(Issue::new(
            format!("{pointer}/{key}"),
            format!("`query` and `request_type: histogram` go together, in a distribution widget's histogram request only (this is a {kind} request): use `q`, or `queries` with `formulas`"),
        ));
        return;
    }
    if request.get("q").is_some() || request.get("queries").is_some() {
        issues.push(Issue::new(
            pointer,
            "a histogram request has its `query` only, not `q` or `queries` besides",
        ));
    }
    match (
        query.get("data_source").and_then(Value::as_str),
        query.get("query").and_then(Value::as_str),
    ) {
        (Some("metrics"), Some(q)) => {
            let here = format!("{pointer}/query/query");
            let Some(rest) = q.strip_prefix("histogram:") else {
                issues.push(Issue::new(
                    here,
                    format!("a histogram query is `histogram:metric{{filter}}`, not `{q}`"),
                ));
                return;
            };
            if let Some(ctx) = ctx {
                // Read like any metric query (names, tags), then: a distribution.
                let as_query = format!("max:{rest}");
                check_metric_query(&as_query, &here, ctx, issues);
                for r in queries::metric_refs(&as_query) {
                    if let Some(metric) = catalogue::find_metric(&ctx.metric_prefix, &r.name)
                        && metric.kind != MetricKind::Distribution
                    {
                        issues.push(Issue::new(
                            &here,
                            format!(
                                "a histogram needs a distribution, and `{}` is a {:?}",
                                r.name, metric.kind
                            ),
                        ));
                    }
                }
            }
        }
        (Some(_), Some(_)) => {}
        _ => issues.push(Issue::new(
            format!("{pointer}/query"),
            "a histogram query has `data_source` and `query` (and a `name`)",
        )),
    }
}

/// Checks a widget request: a query, `q` xor `queries`, query names, formulas, and the
/// catalogue.
fn check_request(
    request: &Value,
    pointer: &str,
    ctx: Option<&CatalogueContext>,
    issues: &mut Vec<Issue>,
) {
    let queries = request.get("queries").and_then(Value::as_array);
    if request.get("q").is_some() && queries.is_some() {
        issues.push(Issue::new(
            format!("{pointer}/q"),
            "a request has either `q` or `queries` (with `formulas`), not both",
        ));
    }
    if let (Some(ctx), Some(q)) = (ctx, request.get("q").and_then(Value::as_str)) {
        check_metric_query(q, &format!("{pointer}/q"), ctx, issues);
    }
    let legacy = LEGACY_REQUEST_QUERIES
        .iter()
        .find(|key| request.get(**key).is_some());
    if request.get("q").is_none()
        && queries.is_none()
        && legacy.is_none()
        && request.get("query").is_none()
    {
        issues.push(Issue::new(
            pointer,
            "a request needs a query: `q`, or `queries` with `formulas`",
        ));
    }
    // The older form of a logs request: its search and facets are held to the catalogue too.
    if let (Some(_), Some(log_query)) = (ctx, request.get("log_query")) {
        check_logs_query(log_query, &format!("{pointer}/log_query"), "facet", issues);
    }
    let Some(queries) = queries else { return };
    let mut names: Vec<&str> = Vec::new();
    for (n, query) in queries.iter().enumerate() {
        let qp = format!("{pointer}/queries/{n}");
        let name = query
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if names.contains(&name) {
            issues.push(Issue::new(
                format!("{qp}/name"),
                format!("query name `{name}` is used twice in this request"),
            ));
        }
        names.push(name);
        let source = query
            .get("data_source")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if source == "metrics" || source == "cloud_cost" {
            match query.get("query").and_then(Value::as_str) {
                None => issues.push(Issue::new(&qp, format!("a `{source}` query needs `query`"))),
                Some(q) => {
                    if let (Some(ctx), "metrics") = (ctx, source) {
                        check_metric_query(q, &format!("{qp}/query"), ctx, issues);
                    }
                }
            }
        } else {
            if query.get("compute").is_none() {
                issues.push(Issue::new(
                    &qp,
                    format!(
                        "a `{source}` query needs `compute` (e.g. {{\"aggregation\": \"count\"}})"
                    ),
                ));
            }
            if ctx.is_some() && source == "logs" {
                check_logs_query(query, &qp, "metric", issues);
            }
        }
    }
    match request.get("formulas").and_then(Value::as_array) {
        None => issues.push(Issue::new(
            pointer,
            "a request with `queries` needs `formulas` (e.g. [{\"formula\": \"<query name>\"}])",
        )),
        Some(formulas) => {
            for (n, formula) in formulas.iter().enumerate() {
                let fp = format!("{pointer}/formulas/{n}/formula");
                let text = formula
                    .get("formula")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                check_names(text, &names, "formula", &fp, issues);
            }
        }
    }
}

/// Parses an expression and checks it names only `defined` queries.
fn check_names(text: &str, defined: &[&str], what: &str, pointer: &str, issues: &mut Vec<Issue>) {
    match super::expr::names_used(text) {
        Err(message) => issues.push(Issue::new(
            pointer,
            format!("{what} `{text}` does not parse: {message}"),
        )),
        Ok(used) => {
            for name in used {
                if !defined.contains(&name.as_str()) {
                    issues.push(Issue::new(
                        pointer,
                        format!("{what} `{text}` names `{name}`, which is not a query here (queries: {})", defined.join(", ")),
                    ));
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Monitors
// ---------------------------------------------------------------------------------------------

fn check_monitor(doc: &Value, ctx: Option<&CatalogueContext>, issues: &mut Vec<Issue>) {
    let monitor = match model::parse::<model::Monitor>(doc) {
        Ok(monitor) => monitor,
        Err(err) => {
            issues.push(Issue::new(err.pointer, err.message));
            return;
        }
    };
    check_tags(doc.get("tags"), "/tags", issues);
    let message = monitor.message.as_deref().unwrap_or_default();
    check_mustache(message, "/message", issues);
    let threshold_kinds = [
        MonitorType::MetricAlert,
        MonitorType::QueryAlert,
        MonitorType::LogAlert,
    ];
    match monitor.kind {
        MonitorType::MetricAlert | MonitorType::QueryAlert | MonitorType::LogAlert => {}
        MonitorType::Composite => {
            if let Err(message) = queries::check_composite(&monitor.query) {
                issues.push(Issue::new("/query", message));
            }
        }
        // Valid in Datadog, but over data this workspace does not send, and with query
        // languages this check does not read: such a template would pass unchecked.
        _ => issues.push(Issue::new(
            "/type",
            format!(
                "{} monitors are not checked here (their queries are not over the metrics and logs the exporter sends): use `metric alert`, `query alert` or `log alert`, or `composite` over monitor ids",
                doc.get("type").unwrap_or(&Value::Null)
            ),
        )),
    }
    let comparison = queries::split_comparison(&monitor.query);
    if threshold_kinds.contains(&monitor.kind) && comparison.is_none() {
        issues.push(Issue::new(
            "/query",
            "the query must end with a comparison to a number, like `> 100`",
        ));
    }
    if let Some((left, _, _)) = &comparison {
        match monitor.kind {
            MonitorType::MetricAlert | MonitorType::QueryAlert => {
                if let Err(message) = queries::check_metric_monitor_head(left) {
                    issues.push(Issue::new("/query", message));
                } else {
                    check_group_variables(message, left, issues);
                    if let Some(ctx) = ctx {
                        check_metric_query(left, "/query", ctx, issues);
                    }
                }
            }
            MonitorType::LogAlert => match queries::parse_log_monitor(left) {
                Err(message) => issues.push(Issue::new("/query", message)),
                Ok(parsed) => {
                    if ctx.is_some() {
                        check_log_search(&parsed.search, "/query", issues);
                        for facet in &parsed.facets {
                            check_facet(facet, "/query", issues);
                        }
                    }
                }
            },
            _ => {}
        }
    }
    if let Some((_, cmp, threshold)) = comparison
        && threshold_kinds.contains(&monitor.kind)
    {
        let thresholds = monitor.options.as_ref().and_then(|o| o.thresholds.as_ref());
        check_thresholds(thresholds, cmp, threshold, issues);
    }
    if let Some(ctx) = ctx {
        let _ = ctx;
        if !notifies_in(message, Notified::Alert) {
            issues.push(Issue::new("/message", "the message notifies nobody when it alerts: add a handle such as [[notify.critical]] or [[notify.warning]] (outside any section, or in {{#is_alert}})"));
        }
        let no_data = monitor.options.as_ref().and_then(|o| o.notify_no_data) == Some(true);
        if no_data && !notifies_in(message, Notified::NoData) {
            issues.push(Issue::new("/message", "notify_no_data is on, but no handle is notified when data stops: put one outside any section, or in {{#is_no_data}} (a {{#is_alert}} section is skipped then)"));
        }
        if monitor.kind == MonitorType::LogAlert {
            check_message_attributes(message, "/message", issues);
        }
    }
}

fn check_thresholds(
    thresholds: Option<&model::Thresholds>,
    cmp: Comparator,
    threshold: f64,
    issues: &mut Vec<Issue>,
) {
    let symbol = cmp.symbol();
    let Some(t) = thresholds else {
        issues.push(Issue::new(
            "/options",
            format!(
                "missing `thresholds`; `critical` must equal the query's threshold {threshold}"
            ),
        ));
        return;
    };
    match t.critical {
        None => issues.push(Issue::new("/options/thresholds", format!("missing `critical`; it must equal the query's threshold {threshold}"))),
        Some(critical) if critical != threshold => issues.push(Issue::new(
            "/options/thresholds/critical",
            format!("critical threshold {critical} differs from the query's threshold `{symbol} {threshold}`"),
        )),
        Some(_) => {}
    }
    let Some(above) = cmp.fires_above() else {
        return;
    };
    let (side, word) = if above {
        ("below", "above")
    } else {
        ("above", "below")
    };
    let beyond = |value: f64, limit: f64| if above { value < limit } else { value > limit };
    if let Some(warning) = t.warning
        && !beyond(warning, threshold)
    {
        issues.push(Issue::new(
                "/options/thresholds/warning",
                format!("warning threshold {warning} must be {side} the critical threshold {threshold} for `{symbol}` (alerts fire {word} it)"),
            ));
    }
    if let Some(recovery) = t.critical_recovery
        && !beyond(recovery, threshold)
    {
        issues.push(Issue::new(
                "/options/thresholds/critical_recovery",
                format!("critical recovery threshold {recovery} must be {side} the critical threshold {threshold} for `{symbol}`"),
            ));
    }
    if let Some(recovery) = t.warning_recovery {
        match t.warning {
            None => issues.push(Issue::new("/options/thresholds/warning_recovery", "a warning recovery threshold needs a warning threshold")),
            Some(warning) if !beyond(recovery, warning) => issues.push(Issue::new(
                "/options/thresholds/warning_recovery",
                format!("warning recovery threshold {recovery} must be {side} the warning threshold {warning} for `{symbol}`"),
            )),
            Some(_) => {}
        }
    }
}

/// Checks that `{{#section}}` / `{{^section}}` blocks of a monitor message are closed in order.
fn check_mustache(message: &str, pointer: &str, issues: &mut Vec<Issue>) {
    let mut open: Vec<&str> = Vec::new();
    let mut rest = message;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            issues.push(Issue::new(pointer, "unterminated `{{` in the message"));
            return;
        };
        let tag = after[..end].trim();
        if let Some(name) = tag.strip_prefix('#').or_else(|| tag.strip_prefix('^')) {
            open.push(name.split_whitespace().next().unwrap_or_default());
        } else if let Some(name) = tag.strip_prefix('/') {
            match open.pop() {
                Some(top) if top == name.trim() => {}
                Some(top) => {
                    issues.push(Issue::new(
                        pointer,
                        format!("`{{{{/{}}}}}` closes `{{{{#{top}}}}}`", name.trim()),
                    ));
                    return;
                }
                None => {
                    issues.push(Issue::new(
                        pointer,
                        format!("`{{{{/{}}}}}` closes nothing", name.trim()),
                    ));
                    return;
                }
            }
        }
        rest = &after[end + 2..];
    }
    if let Some(top) = open.pop() {
        issues.push(Issue::new(
            pointer,
            format!("`{{{{#{top}}}}}` is never closed"),
        ));
    }
}

/// `{{tag.name}}` in a metric monitor's message must name a tag the query groups by (else
/// Datadog renders it empty).
fn check_group_variables(message: &str, query: &str, issues: &mut Vec<Issue>) {
    let groups: Vec<String> = queries::metric_refs(query)
        .into_iter()
        .flat_map(|r| r.group_keys)
        .collect();
    let mut rest = message;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { return };
        let tag = after[..end].trim();
        if let Some(key) = tag.strip_suffix(".name") {
            let plain = !key.is_empty()
                && key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
            if plain && !groups.iter().any(|g| g == key) {
                let listed = if groups.is_empty() {
                    "none".to_owned()
                } else {
                    groups.join(", ")
                };
                issues.push(Issue::new(
                    "/message",
                    format!("`{{{{{tag}}}}}`: the query does not group by `{key}` (it groups by: {listed}), so Datadog would render it empty"),
                ));
            }
        }
        rest = &after[end + 2..];
    }
}

/// `{{log.attributes.X}}` and `{{log.tags.X}}` in a log monitor message must be ours.
fn check_message_attributes(message: &str, pointer: &str, issues: &mut Vec<Issue>) {
    let mut rest = message;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { return };
        let tag = after[..end].trim();
        if let Some(path) = tag.strip_prefix("log.attributes.") {
            if catalogue::find_attribute(path).is_none() {
                issues.push(Issue::new(
                    pointer,
                    format!("`{{{{{tag}}}}}`: `{path}` is not an attribute we send"),
                ));
            }
        } else if let Some(key) = tag.strip_prefix("log.tags.")
            && !is_log_tag_key(key)
        {
            issues.push(Issue::new(
                pointer,
                format!("`{{{{{tag}}}}}`: `{key}` is not a tag we set"),
            ));
        }
        rest = &after[end + 2..];
    }
}

// ---------------------------------------------------------------------------------------------
// Rules
// ---------------------------------------------------------------------------------------------

fn check_rule(doc: &Value, ctx: Option<&CatalogueContext>, issues: &mut Vec<Issue>) {
    let rule = match model::parse::<model::Rule>(doc) {
        Ok(rule) => rule,
        Err(err) => {
            issues.push(Issue::new(err.pointer, err.message));
            return;
        }
    };
    check_tags(doc.get("tags"), "/tags", issues);
    let method = rule
        .options
        .detection_method
        .unwrap_or(DetectionMethod::Threshold);
    // Query names: explicit, else a, b, c... by position (Datadog's default).
    let mut names: Vec<String> = Vec::new();
    for (n, query) in rule.queries.iter().enumerate() {
        let name = query
            .name
            .clone()
            .unwrap_or_else(|| char::from(b'a' + (n % 26) as u8).to_string());
        if names.contains(&name) {
            issues.push(Issue::new(
                format!("/queries/{n}/name"),
                format!("query name `{name}` is used twice"),
            ));
        }
        if name.is_empty()
            || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            || name.starts_with(|c: char| c.is_ascii_digit())
        {
            issues.push(Issue::new(
                format!("/queries/{n}/name"),
                format!(
                    "query name `{name}` must be letters, digits and `_`, not starting with a digit"
                ),
            ));
        }
        names.push(name);
        let aggregation = query.aggregation.unwrap_or(RuleAggregation::Count);
        let distinct = query
            .distinct_fields
            .as_ref()
            .is_some_and(|d| !d.is_empty());
        if aggregation == RuleAggregation::Cardinality && !distinct {
            issues.push(Issue::new(
                format!("/queries/{n}"),
                "a `cardinality` query needs `distinctFields` (what to count distinct values of)",
            ));
        }
        if aggregation == RuleAggregation::NewValue {
            if method != DetectionMethod::NewValue {
                issues.push(Issue::new(
                    format!("/queries/{n}/aggregation"),
                    "a `new_value` query needs `options.detectionMethod: new_value`",
                ));
            }
            let has_metrics =
                query.metrics.as_ref().is_some_and(|m| !m.is_empty()) || query.metric.is_some();
            if !has_metrics {
                issues.push(Issue::new(
                    format!("/queries/{n}"),
                    "a `new_value` query needs `metrics`: the fields whose new values it detects",
                ));
            }
        }
        if let Some(ctx) = ctx {
            let _ = ctx;
            check_log_search(&query.query, &format!("/queries/{n}/query"), issues);
            for (field, list) in [
                ("groupByFields", &query.group_by_fields),
                ("distinctFields", &query.distinct_fields),
                ("metrics", &query.metrics),
            ] {
                for (m, facet) in list.iter().flatten().enumerate() {
                    check_facet(facet, &format!("/queries/{n}/{field}/{m}"), issues);
                }
            }
            if let Some(metric) = &query.metric {
                check_facet(metric, &format!("/queries/{n}/metric"), issues);
            }
        }
    }
    if method == DetectionMethod::NewValue
        && !rule
            .queries
            .iter()
            .any(|q| q.aggregation == Some(RuleAggregation::NewValue))
    {
        issues.push(Issue::new(
            "/options/detectionMethod",
            "a `new_value` rule needs a query with `aggregation: new_value`",
        ));
    }
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    if rule.cases.is_empty() {
        issues.push(Issue::new("/cases", "a rule needs at least one case"));
    }
    for (n, case) in rule.cases.iter().enumerate() {
        match case.condition.as_deref() {
            Some(condition) if !condition.trim().is_empty() => {
                check_names(
                    condition,
                    &name_refs,
                    "condition",
                    &format!("/cases/{n}/condition"),
                    issues,
                );
            }
            _ => {
                if method == DetectionMethod::Threshold {
                    issues.push(Issue::new(format!("/cases/{n}"), "a threshold rule's case needs a `condition` over its queries, like `a > 0`"));
                }
            }
        }
        for (m, handle) in case.notifications.iter().flatten().enumerate() {
            if let Err(message) = check_handle(handle) {
                issues.push(Issue::new(format!("/cases/{n}/notifications/{m}"), message));
            }
        }
    }
    let options = &rule.options;
    if method == DetectionMethod::Threshold && options.evaluation_window.is_none_or(|w| w.0 == 0) {
        issues.push(Issue::new(
            "/options",
            "a threshold rule needs a non-zero `evaluationWindow`",
        ));
    }
    if let (Some(keep_alive), Some(max)) = (options.keep_alive, options.max_signal_duration)
        && keep_alive > max
    {
        issues.push(Issue::new(
            "/options/keepAlive",
            format!(
                "keepAlive {} s exceeds maxSignalDuration {} s",
                keep_alive.0, max.0
            ),
        ));
    }
    if let (Some(window), Some(keep_alive)) = (options.evaluation_window, options.keep_alive)
        && window > keep_alive
    {
        issues.push(Issue::new(
            "/options/evaluationWindow",
            format!(
                "evaluationWindow {} s exceeds keepAlive {} s",
                window.0, keep_alive.0
            ),
        ));
    }
}

// ---------------------------------------------------------------------------------------------
// Shared: tags, handles, key-like strings, the catalogue
// ---------------------------------------------------------------------------------------------

/// A state a monitor notifies in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Notified {
    Alert,
    NoData,
}

/// Whether a valid handle in `message` is notified in `state`: one outside every conditional
/// section, or inside sections all true in that state (`{{#is_alert}}` when alerting,
/// `{{#is_no_data}}` when data stops, `{{^is_alert}}` in the no-data state, ...). A section
/// on anything else (`{{#is_match ...}}`) may be true.
fn notifies_in(message: &str, state: Notified) -> bool {
    let holds = |name: &str, inverted: bool| -> bool {
        let name = name.split_whitespace().next().unwrap_or_default();
        let value = match name {
            "is_alert" => Some(state == Notified::Alert),
            "is_no_data" => Some(state == Notified::NoData),
            "is_warning"
            | "is_recovery"
            | "is_alert_recovery"
            | "is_warning_recovery"
            | "is_alert_to_warning"
            | "is_warning_to_alert"
            | "is_renotify" => Some(false),
            _ => None,
        };
        value.is_none_or(|v| v != inverted)
    };
    // Each open section, and whether it holds in `state`.
    let mut open: Vec<(&str, bool)> = Vec::new();
    let mut rest = message;
    loop {
        let next_tag = rest.find("{{");
        let next_handle = rest.find('@');
        match (next_tag, next_handle) {
            (Some(t), h) if h.is_none_or(|h| t < h) => {
                let Some(end) = rest[t..].find("}}") else {
                    return false;
                };
                let tag = &rest[t + 2..t + end];
                if let Some(name) = tag.strip_prefix('#') {
                    open.push((name.trim(), holds(name.trim(), false)));
                } else if let Some(name) = tag.strip_prefix('^') {
                    open.push((name.trim(), holds(name.trim(), true)));
                } else if tag.starts_with('/') {
                    open.pop();
                }
                rest = &rest[t + end + 2..];
            }
            (_, Some(h)) => {
                let token: &str = rest[h..]
                    .split(|c: char| c.is_whitespace() || c == '{' || c == '}')
                    .next()
                    .unwrap_or_default();
                let token = token.trim_end_matches([',', '.', ';', ':', ')', '!', '?']);
                if check_handle(token).is_ok() && open.iter().all(|(_, holds)| *holds) {
                    return true;
                }
                rest = &rest[h + token.len().max(1)..];
            }
            _ => return false,
        }
    }
}

/// The notification handle prefixes Datadog understands.
const HANDLE_PREFIXES: &[&str] = &[
    "@pagerduty-",
    "@slack-",
    "@opsgenie-",
    "@webhook-",
    "@teams-",
    "@oncall-",
    "@jira-",
    "@servicenow-",
];

/// Checks a notification handle (`@pagerduty-security`, `@slack-security`, `@team@example.com`).
pub(crate) fn check_handle(handle: &str) -> Result<(), String> {
    let known = HANDLE_PREFIXES
        .iter()
        .any(|p| handle.starts_with(p) && handle.len() > p.len());
    let email = handle.strip_prefix('@').is_some_and(|rest| {
        rest.split_once('@')
            .is_some_and(|(user, domain)| !user.is_empty() && domain.contains('.'))
    });
    let clean = !handle.contains(char::is_whitespace);
    if (known || email) && clean {
        Ok(())
    } else {
        Err(format!(
            "`{handle}` is not a notification handle (expected {} or an @email address)",
            HANDLE_PREFIXES
                .iter()
                .map(|p| format!("{p}<name>"))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }
}

/// Whether `tag` is a tag Datadog stores as written (lowercase; letters, digits, `_-:./`;
/// starting with a letter; at most 200 characters).
pub(crate) fn is_valid_tag(tag: &str) -> bool {
    tag.len() <= 200
        && tag.starts_with(|c: char| c.is_ascii_lowercase())
        && tag
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-:./".contains(c))
}

pub(crate) fn invalid_tag_message(tag: &str) -> String {
    format!(
        "tag `{tag}` is not a valid Datadog tag (lowercase letters, digits and `_-:./`, starting with a letter, at most 200 characters); Datadog would rewrite it"
    )
}

fn check_tags(tags: Option<&Value>, pointer: &str, issues: &mut Vec<Issue>) {
    let Some(Value::Array(tags)) = tags else {
        return;
    };
    for (n, tag) in tags.iter().enumerate() {
        let tag = tag.as_str().unwrap_or_default();
        if !is_valid_tag(tag) {
            issues.push(Issue::new(
                format!("{pointer}/{n}"),
                invalid_tag_message(tag),
            ));
        }
    }
}

/// Reports strings that look like Datadog API keys (32 hex) or application keys (40 hex).
fn check_key_like(value: &Value, pointer: &str, issues: &mut Vec<Issue>) {
    match value {
        Value::String(s) => {
            if let Some(len) = key_like_run(s) {
                let what = if len == 32 {
                    "a Datadog API key (32 hex characters)"
                } else {
                    "a Datadog application key (40 hex characters)"
                };
                issues.push(Issue::new(pointer, format!("looks like {what}: never put keys in templates; publish reads them from DD_API_KEY and DD_APP_KEY")));
            }
        }
        Value::Array(items) => {
            for (n, item) in items.iter().enumerate() {
                check_key_like(item, &format!("{pointer}/{n}"), issues);
            }
        }
        Value::Object(map) => {
            for (key, item) in map {
                check_key_like(item, &format!("{pointer}/{}", escape_pointer(key)), issues);
            }
        }
        _ => {}
    }
}

/// The length of the first standalone run of exactly 32 or 40 hex digits in `s`.
pub(crate) fn key_like_run(s: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_alphanumeric() {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_alphanumeric() {
                i += 1;
            }
            let word = &bytes[start..i];
            if (word.len() == 32 || word.len() == 40)
                && word.iter().all(u8::is_ascii_hexdigit)
                && word.iter().any(u8::is_ascii_digit)
            {
                return Some(word.len());
            }
        } else {
            i += 1;
        }
    }
    None
}

/// Checks every metric a metric query reads against the catalogue.
fn check_metric_query(query: &str, pointer: &str, ctx: &CatalogueContext, issues: &mut Vec<Issue>) {
    let refs = queries::metric_refs(query);
    if refs.is_empty() {
        issues.push(Issue::new(
            pointer,
            format!("no metric found in `{query}` (expected `aggregator:metric{{filter}}`)"),
        ));
    }
    for r in refs {
        let Some(metric) = catalogue::find_metric(&ctx.metric_prefix, &r.name) else {
            issues.push(Issue::new(
                pointer,
                format!(
                    "metric `{}` is not one we emit (the catalogue, under prefix `{}`)",
                    r.name, ctx.metric_prefix
                ),
            ));
            continue;
        };
        let carried: Vec<&str> = metric
            .tags
            .iter()
            .chain(catalogue::COMMON_METRIC_TAGS)
            .copied()
            .collect();
        for (place, keys) in [("filters on", &r.filter_keys), ("groups by", &r.group_keys)] {
            for key in keys {
                if !carried.contains(&key.as_str()) {
                    issues.push(Issue::new(
                        pointer,
                        format!("`{}` {place} tag `{key}`, which the metric does not carry (its tags: {})", r.name, carried.join(", ")),
                    ));
                }
            }
        }
        for (key, value) in &r.filter_values {
            check_closed_value(
                key,
                value,
                &format!("`{}` filters on", r.name),
                pointer,
                issues,
            );
        }
        if r.aggregator.starts_with('p') && metric.kind != MetricKind::Distribution {
            issues.push(Issue::new(
                pointer,
                format!(
                    "`{}:{}`: percentiles need a distribution, and `{}` is a {:?}",
                    r.aggregator, r.name, r.name, metric.kind
                ),
            ));
        }
    }
}

/// The bare keys a log search may use besides our tags.
const SEARCH_RESERVED: &[&str] = &["service", "status", "source", "host"];

fn is_log_tag_key(key: &str) -> bool {
    catalogue::LOG_TAGS.iter().any(|t| t.key == key)
}

/// Checks the keys of a log search against the catalogue.
fn check_log_search(query: &str, pointer: &str, issues: &mut Vec<Issue>) {
    for term in queries::search_terms(query) {
        check_facet(&term.key, pointer, issues);
        for value in queries::literal_values(&term.value) {
            check_closed_value(&term.key, &value, "the search has", pointer, issues);
        }
        if term.key == "status" {
            let value = term.value.trim_matches('"');
            if !catalogue::STATUS_VALUES.contains(&value) {
                issues.push(Issue::new(
                    pointer,
                    format!(
                        "`status:{value}`: we send status {}",
                        catalogue::STATUS_VALUES.join(", ")
                    ),
                ));
            }
        }
    }
}

/// Checks a value of a closed-valued tag or attribute (`severity:crit` would never match):
/// literal values only (no wildcards or placeholders), tag values as Datadog lowercases them.
fn check_closed_value(key: &str, value: &str, what: &str, pointer: &str, issues: &mut Vec<Issue>) {
    let (name, attribute) = match key.trim_start_matches(['!', '-']).strip_prefix('@') {
        Some(path) => (path, true),
        None => (key.trim_start_matches(['!', '-']), false),
    };
    let Some(allowed) = catalogue::closed_values(name) else {
        return;
    };
    if value.contains(['*', '?', '[', '$']) {
        return;
    }
    let compared = if attribute {
        value.to_owned()
    } else {
        value.to_lowercase()
    };
    if !allowed.contains(&compared.as_str()) {
        let shown = if attribute {
            format!("@{name}")
        } else {
            name.to_owned()
        };
        issues.push(Issue::new(
            pointer,
            format!(
                "{what} `{shown}:{value}`, a value we never send (we send {})",
                allowed.join(", ")
            ),
        ));
    }
}

/// Checks a facet (`@security.guard`) or a bare key (`service`, a tag key).
fn check_facet(facet: &str, pointer: &str, issues: &mut Vec<Issue>) {
    if let Some(path) = facet.strip_prefix('@') {
        if catalogue::find_attribute(path).is_none() {
            issues.push(Issue::new(
                pointer,
                format!("log facet `@{path}` is not an attribute we send (see the catalogue)"),
            ));
        }
    } else if !SEARCH_RESERVED.contains(&facet) && !is_log_tag_key(facet) {
        let hint = if catalogue::find_attribute(facet).is_some() {
            format!(" (did you mean the attribute `@{facet}`?)")
        } else {
            String::new()
        };
        issues.push(Issue::new(
            pointer,
            format!("log tag `{facet}` is not a tag we set{hint}"),
        ));
    }
}
