//! Template parameters (`templates/values/<environment>.yaml`), the compliance mapping
//! (`templates/compliance.yaml`) and rendering.
//!
//! # Placeholder syntax
//!
//! `[[name]]` inside any string of a template is replaced by a value: `[[env]]`, `[[service]]`,
//! `[[metric_prefix]]`, `[[notify.critical]]`, `[[notify.warning]]`. Double square brackets
//! never collide with the `{{mustache}}` variables Datadog itself evaluates in monitor messages
//! (`{{value}}`, `{{#is_alert}}`, `{{log.attributes.security.guard}}`), which pass through
//! untouched. An unknown placeholder is an error. An empty `metric_prefix` takes the dot after
//! it along: `[[metric_prefix]].events.total` renders `events.total`.
//!
//! A widget written `{"[[compliance]]": "<framework id>"}` expands into a `group` widget
//! rendered from `templates/compliance.yaml` (one widget per control of that framework).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Value, json};

use super::{Issue, escape_pointer};

/// One environment's parameters.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Values {
    /// The `env` tag value of that environment.
    pub(crate) env: String,
    /// The `service` our logs carry.
    pub(crate) service: String,
    /// The metric prefix the exporter is configured with.
    pub(crate) metric_prefix: String,
    /// Notification handles per severity.
    pub(crate) notify: Notify,
    /// Extra tags added to every monitor and rule.
    #[serde(default)]
    pub(crate) tags: Vec<String>,
}

/// Notification handles per severity.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Notify {
    pub(crate) critical: String,
    pub(crate) warning: String,
}

/// The placeholder names, for error messages.
pub(crate) const PLACEHOLDERS: &[&str] = &[
    "env",
    "service",
    "metric_prefix",
    "notify.critical",
    "notify.warning",
];

impl Values {
    fn lookup(&self, name: &str) -> Option<&str> {
        Some(match name {
            "env" => &self.env,
            "service" => &self.service,
            "metric_prefix" => &self.metric_prefix,
            "notify.critical" => &self.notify.critical,
            "notify.warning" => &self.notify.warning,
            _ => return None,
        })
    }

    /// Checks the values themselves (pointers into the values file).
    pub(crate) fn check(&self, issues: &mut Vec<Issue>) {
        for (pointer, value) in [("/env", &self.env), ("/service", &self.service)] {
            if !super::check::is_valid_tag(&format!("x:{value}")) || value.is_empty() {
                issues.push(Issue::new(
                    pointer,
                    format!(
                        "`{value}` is not a valid tag value (lowercase letters, digits, `_-./`)"
                    ),
                ));
            }
        }
        let prefix_ok = self.metric_prefix.is_empty()
            || (self
                .metric_prefix
                .starts_with(|c: char| c.is_ascii_alphabetic())
                && self
                    .metric_prefix
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
                && !self.metric_prefix.ends_with('.'));
        if !prefix_ok {
            issues.push(Issue::new("/metric_prefix", format!("`{}` is not a valid metric prefix (letters, digits, `_` and `.`, starting with a letter)", self.metric_prefix)));
        }
        for (pointer, handle) in [
            ("/notify/critical", &self.notify.critical),
            ("/notify/warning", &self.notify.warning),
        ] {
            if let Err(message) = super::check::check_handle(handle) {
                issues.push(Issue::new(pointer, message));
            }
        }
        for (n, tag) in self.tags.iter().enumerate() {
            if !super::check::is_valid_tag(tag) {
                issues.push(Issue::new(
                    format!("/tags/{n}"),
                    super::check::invalid_tag_message(tag),
                ));
            }
        }
    }
}

/// Replaces every `[[name]]` in the strings of `value`; unknown names become issues.
pub(crate) fn render(value: &mut Value, values: &Values, pointer: &str, issues: &mut Vec<Issue>) {
    match value {
        Value::String(s) if s.contains("[[") => match render_str(s, values) {
            Ok(rendered) => *s = rendered,
            Err(message) => issues.push(Issue::new(pointer, message)),
        },
        Value::Array(items) => {
            for (n, item) in items.iter_mut().enumerate() {
                render(item, values, &format!("{pointer}/{n}"), issues);
            }
        }
        Value::Object(map) => {
            for (key, item) in map.iter_mut() {
                render(
                    item,
                    values,
                    &format!("{pointer}/{}", escape_pointer(key)),
                    issues,
                );
            }
        }
        _ => {}
    }
}

fn render_str(input: &str, values: &Values) -> Result<String, String> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(start) = rest.find("[[") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("]]") else {
            return Err("unterminated placeholder `[[` (expected `[[name]]`)".to_owned());
        };
        let name = after[..end].trim();
        let Some(value) = values.lookup(name) else {
            return Err(format!(
                "unknown placeholder `[[{name}]]`; known: {}",
                PLACEHOLDERS.join(", ")
            ));
        };
        out.push_str(value);
        rest = &after[end + 2..];
        // Metric names are written `[[metric_prefix]].events.total`: with no prefix (the
        // exporter's `metrics.prefix: ""`) the name is `events.total`, not `.events.total`.
        if name == "metric_prefix" && value.is_empty() {
            rest = rest.strip_prefix('.').unwrap_or(rest);
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The guard → control mapping (`templates/compliance.yaml`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Compliance {
    pub(crate) frameworks: Vec<Framework>,
    /// Guard → framework id → control ids.
    pub(crate) guards: BTreeMap<String, BTreeMap<String, Vec<String>>>,
}

/// A compliance framework.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Framework {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) controls: Vec<Control>,
}

/// A control of a framework.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Control {
    pub(crate) id: String,
    pub(crate) title: String,
}

impl Compliance {
    /// Checks the mapping: known frameworks and controls, every control covered, guard names
    /// valid tag values.
    pub(crate) fn check(&self, issues: &mut Vec<Issue>) {
        for (guard, frameworks) in &self.guards {
            let guard_pointer = format!("/guards/{}", escape_pointer(guard));
            if guard.is_empty()
                || !guard
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            {
                issues.push(Issue::new(
                    &guard_pointer,
                    format!(
                        "guard `{guard}` is not a guard name (lowercase letters, digits and `_`)"
                    ),
                ));
            }
            for (framework_id, controls) in frameworks {
                let framework_pointer = format!("{guard_pointer}/{}", escape_pointer(framework_id));
                let Some(framework) = self.frameworks.iter().find(|f| &f.id == framework_id) else {
                    issues.push(Issue::new(
                        &framework_pointer,
                        format!(
                            "unknown framework `{framework_id}`; defined: {}",
                            self.framework_ids()
                        ),
                    ));
                    continue;
                };
                for (n, control) in controls.iter().enumerate() {
                    if !framework.controls.iter().any(|c| &c.id == control) {
                        let defined: Vec<&str> =
                            framework.controls.iter().map(|c| c.id.as_str()).collect();
                        issues.push(Issue::new(
                            format!("{framework_pointer}/{n}"),
                            format!(
                                "unknown {} control `{control}`; defined: {}",
                                framework.name,
                                defined.join(", ")
                            ),
                        ));
                    }
                }
            }
        }
        for (f, framework) in self.frameworks.iter().enumerate() {
            for (c, control) in framework.controls.iter().enumerate() {
                if self.guards_for(&framework.id, &control.id).is_empty() {
                    issues.push(Issue::new(
                        format!("/frameworks/{f}/controls/{c}"),
                        format!("{} control `{}` has no guard mapped to it: its dashboard widget would always be empty", framework.name, control.id),
                    ));
                }
            }
        }
    }

    fn framework_ids(&self) -> String {
        self.frameworks
            .iter()
            .map(|f| f.id.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The guards mapped to `control` of `framework`, sorted.
    pub(crate) fn guards_for(&self, framework: &str, control: &str) -> Vec<&str> {
        self.guards
            .iter()
            .filter(|(_, frameworks)| {
                frameworks
                    .get(framework)
                    .is_some_and(|controls| controls.iter().any(|c| c == control))
            })
            .map(|(guard, _)| guard.as_str())
            .collect()
    }

    /// The `group` widget of one framework.
    fn group_widget(&self, framework: &Framework) -> Value {
        let mut table = String::from("| Control | Guards giving evidence |\n|---|---|\n");
        let mut widgets = Vec::new();
        for control in &framework.controls {
            let guards = self.guards_for(&framework.id, &control.id);
            table.push_str(&format!(
                "| **{}** {} | {} |\n",
                control.id,
                control.title,
                guards.join(", ")
            ));
            let search = format!(
                "service:[[service]] env:[[env]] @security.guard:({})",
                guards.join(" OR ")
            );
            widgets.push(json!({
                "definition": {
                    "type": "toplist",
                    "title": format!("{} {}: decisions by guard and outcome", framework.name, control.id),
                    "requests": [{
                        "response_format": "scalar",
                        "queries": [{
                            "data_source": "logs",
                            "name": "decisions",
                            "search": { "query": search },
                            "indexes": ["*"],
                            "compute": { "aggregation": "count" },
                            "group_by": [
                                { "facet": "@security.guard", "limit": 20, "sort": { "aggregation": "count", "order": "desc" } },
                                { "facet": "@security.outcome", "limit": 3, "sort": { "aggregation": "count", "order": "desc" } }
                            ]
                        }],
                        "formulas": [{ "formula": "decisions", "limit": { "count": 20, "order": "desc" } }]
                    }]
                }
            }));
        }
        widgets.insert(
            0,
            json!({ "definition": { "type": "note", "content": table, "background_color": "white", "font_size": "14", "text_align": "left", "show_tick": false, "has_padding": true } }),
        );
        json!({
            "definition": {
                "type": "group",
                "layout_type": "ordered",
                "title": format!("{} controls", framework.name),
                "show_title": true,
                "widgets": widgets
            }
        })
    }

    /// Expands every `{"[[compliance]]": "<framework>"}` widget of a dashboard. With `broken`
    /// (the mapping file exists but does not parse, already reported), unknown frameworks are
    /// not reported again.
    pub(crate) fn expand(
        compliance: Option<&Compliance>,
        broken: bool,
        dashboard: &mut Value,
        issues: &mut Vec<Issue>,
    ) {
        fn walk(
            compliance: Option<&Compliance>,
            broken: bool,
            widgets: &mut Value,
            pointer: &str,
            issues: &mut Vec<Issue>,
        ) {
            let Value::Array(items) = widgets else { return };
            for (n, widget) in items.iter_mut().enumerate() {
                let here = format!("{pointer}/{n}");
                let directive = widget
                    .as_object()
                    .filter(|m| m.len() == 1)
                    .and_then(|m| m.get("[[compliance]]"))
                    .cloned();
                if let Some(directive) = directive {
                    let id = directive.as_str().unwrap_or_default();
                    match compliance
                        .and_then(|c| c.frameworks.iter().find(|f| f.id == id).map(|f| (c, f)))
                    {
                        Some((c, framework)) => *widget = c.group_widget(framework),
                        None => {
                            let defined =
                                compliance
                                    .map(Compliance::framework_ids)
                                    .unwrap_or_else(|| {
                                        "none (no templates/compliance.yaml)".to_owned()
                                    });
                            if !broken {
                                issues.push(Issue::new(
                                    format!("{here}/{}", escape_pointer("[[compliance]]")),
                                    format!(
                                        "unknown compliance framework `{id}`; defined: {defined}"
                                    ),
                                ));
                            }
                            // Stand in a note, so the widget checks do not report it again.
                            *widget = json!({ "definition": { "type": "note", "content": format!("unknown compliance framework `{id}`") } });
                        }
                    }
                } else if let Some(inner) = widget.pointer_mut("/definition/widgets") {
                    walk(
                        compliance,
                        broken,
                        inner,
                        &format!("{here}/definition/widgets"),
                        issues,
                    );
                }
            }
        }
        if let Some(widgets) = dashboard.get_mut("widgets") {
            walk(compliance, broken, widgets, "/widgets", issues);
        }
    }
}
