//! Tests of `cargo xtask templates`.
//!
//! - The shipped templates pass `check` (so `cargo test` enforces it, like CI's
//!   `cargo xtask templates`).
//! - Mutation tests: for each rule `check` enforces, a copy of the shipped templates is broken
//!   in that one way and the test asserts the exact problem (file, JSON pointer, message).
//! - `--structural` covers every widget type of the spec and flags the design document's
//!   flawed JSON.
//! - publish / diff / pull end to end against the fake intake (in `sync_tests`).

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::{check_structural, check_templates};

/// A copy of the shipped `templates/` in a temporary directory.
struct Fixture {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

pub(super) fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

impl Fixture {
    fn new() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("templates");
        copy_dir(&crate::project_root().join("templates"), &dir);
        Fixture { _tmp: tmp, dir }
    }

    /// Applies `change` to the parsed file `rel` (JSON or YAML) and writes it back.
    fn mutate(&self, rel: &str, change: impl FnOnce(&mut Value)) -> &Self {
        let path = self.dir.join(rel);
        let mut doc = super::load_document(&path).unwrap();
        change(&mut doc);
        let text = if rel.ends_with(".json") {
            serde_json::to_string_pretty(&doc).unwrap()
        } else {
            serde_yaml_ng::to_string(&doc).unwrap()
        };
        std::fs::write(path, text).unwrap();
        self
    }

    fn write(&self, rel: &str, text: &str) -> &Self {
        std::fs::write(self.dir.join(rel), text).unwrap();
        self
    }

    fn problems(&self) -> Vec<String> {
        check_templates(&self.dir)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    /// Asserts `check` reports exactly one problem, equal to `expected`.
    #[track_caller]
    fn assert_only(&self, expected: &str) {
        let problems = self.problems();
        assert_eq!(
            problems,
            [expected.to_owned()],
            "expected exactly one problem"
        );
    }

    /// Asserts `check` reports exactly these problems (in report order).
    #[track_caller]
    fn assert_all(&self, expected: &[&str]) {
        assert_eq!(self.problems(), expected);
    }

    /// Asserts `check` reports exactly one problem, starting with `prefix` (for serde messages
    /// that go on to list every allowed value).
    #[track_caller]
    fn assert_only_starting(&self, prefix: &str) {
        let problems = self.problems();
        assert_eq!(
            problems.len(),
            1,
            "expected exactly one problem, got {problems:#?}"
        );
        assert!(
            problems[0].starts_with(prefix),
            "expected a problem starting with\n  {prefix}\ngot\n  {}",
            problems[0]
        );
    }
}

/// Sets (or adds, for a new last key) the value at `pointer`.
fn set(doc: &mut Value, pointer: &str, value: Value) {
    if let Some(slot) = doc.pointer_mut(pointer) {
        *slot = value;
        return;
    }
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let parent = doc
        .pointer_mut(parent)
        .unwrap_or_else(|| panic!("no {parent}"));
    parent
        .as_object_mut()
        .unwrap_or_else(|| panic!("{pointer}: parent is not an object"))
        .insert(key.to_owned(), value);
}

const POSTURE: &str = "dashboards/security-posture.json";
const EXPORTER: &str = "dashboards/exporter-health.json";
const DENIALS: &str = "monitors/high-denial-rate.json";
const CRITICAL: &str = "monitors/critical-policy-violation.json";
const QUEUE: &str = "monitors/queue-saturated.json";
const API_KEY: &str = "monitors/api-key-invalid.json";
const FORBIDDEN: &str = "rules/repeated-forbidden-path.json";
const EGRESS: &str = "rules/new-egress-destination.json";

// ---------------------------------------------------------------------------------------------
// The shipped templates
// ---------------------------------------------------------------------------------------------

#[test]
fn shipped_templates_pass_check() {
    let problems: Vec<String> = check_templates(&crate::project_root().join("templates"))
        .iter()
        .map(ToString::to_string)
        .collect();
    assert!(
        problems.is_empty(),
        "cargo xtask templates fails:\n{}",
        problems.join("\n")
    );
}

#[test]
fn shipped_templates_cover_the_issue() {
    let set = super::TemplateSet::load(&crate::project_root().join("templates"));
    let ids: Vec<&str> = set.templates.iter().map(|t| t.id.as_str()).collect();
    for id in [
        "dashboards/security-posture",
        "dashboards/exporter-health",
        "dashboards/security-compliance",
        "monitors/critical-policy-violation",
        "monitors/high-denial-rate",
        "monitors/secret-detected",
        "monitors/egress-blocked-burst",
        "monitors/exporter-delivery-failing",
        "monitors/dead-letters-growing",
        "monitors/queue-saturated",
        "monitors/api-key-invalid",
        "rules/critical-policy-violation",
        "rules/secret-leak",
        "rules/repeated-forbidden-path",
        "rules/new-egress-destination",
        "rules/prompt-injection",
    ] {
        assert!(ids.contains(&id), "missing template {id}");
    }
    let compliance = set.compliance.as_ref().unwrap();
    for (framework, controls) in [
        ("soc2", &["CC6.1", "CC6.2", "CC6.3", "CC7.1"][..]),
        ("gdpr", &["Art. 25", "Art. 32", "Art. 33"][..]),
        ("hipaa", &["§164.308", "§164.310", "§164.312"][..]),
    ] {
        for control in controls {
            assert!(
                !compliance.guards_for(framework, control).is_empty(),
                "{framework} {control} has no guard"
            );
        }
    }
    // The compliance dashboard renders one group per framework, one widget per control.
    let values = &set.values[0].1;
    let template = set
        .templates
        .iter()
        .find(|t| t.id == "dashboards/security-compliance")
        .unwrap();
    let (doc, issues) = set.render(template, values);
    assert!(issues.is_empty(), "{issues:?}");
    let groups: Vec<&Value> = doc["widgets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["definition"]["type"] == "group")
        .collect();
    assert_eq!(groups.len(), 3);
    assert_eq!(
        groups[0]["definition"]["widgets"].as_array().unwrap().len(),
        1 + 4
    );
    let cc61 = &groups[0]["definition"]["widgets"][1]["definition"];
    assert_eq!(cc61["title"], "SOC 2 CC6.1: decisions by guard and outcome");
    assert!(
        cc61["requests"][0]["queries"][0]["search"]["query"]
            .as_str()
            .unwrap()
            .contains("@security.guard:(egress_allowlist OR forbidden_path")
    );
    // No sunburst-less posture dashboard, no pie anywhere.
    let posture = set
        .templates
        .iter()
        .find(|t| t.id == "dashboards/security-posture")
        .unwrap();
    let text = posture.raw.to_string();
    assert!(
        text.contains("\"sunburst\"")
            && text.contains("\"log_stream\"")
            && !text.contains("\"pie\"")
    );
}

#[test]
fn placeholders_render_and_datadog_mustache_passes_through() {
    let set = super::TemplateSet::load(&crate::project_root().join("templates"));
    let values = set.values_for("production").unwrap();
    let template = set
        .templates
        .iter()
        .find(|t| t.id == "monitors/high-denial-rate")
        .unwrap();
    let (doc, issues) = set.render(template, values);
    assert!(issues.is_empty());
    assert_eq!(
        doc["query"],
        "sum(last_10m):sum:clawdstrike.events.denied{env:production} by {guard}.as_count() > 100"
    );
    let message = doc["message"].as_str().unwrap();
    assert!(message.starts_with("{{#is_alert}}@pagerduty-security{{/is_alert}}{{#is_warning}}@slack-security{{/is_warning}}"), "{message}");
    assert!(message.contains("{{value}}"));
}

// ---------------------------------------------------------------------------------------------
// Mutation tests: one per rule
// ---------------------------------------------------------------------------------------------

#[test]
fn rule_file_must_parse() {
    Fixture::new()
        .write(DENIALS, "{ \"name\": ")
        .assert_only_starting(
            "templates/monitors/high-denial-rate.json#: invalid JSON: EOF while parsing",
        );
}

#[test]
fn rule_unknown_top_level_key() {
    Fixture::new()
        .mutate(DENIALS, |m| set(m, "/escalation", json!("x")))
        .assert_only_starting("templates/monitors/high-denial-rate.json#/escalation: unknown field `escalation`, expected one of `name`, `type`");
}

#[test]
fn rule_unknown_nested_key() {
    Fixture::new()
        .mutate(DENIALS, |m| set(m, "/options/thresholds/critcal", json!(100)))
        .assert_only_starting("templates/monitors/high-denial-rate.json#/options/thresholds/critcal: unknown field `critcal`, expected one of `critical`");
}

#[test]
fn rule_unknown_key_in_widget_definition() {
    Fixture::new()
        .mutate(POSTURE, |d| set(d, "/widgets/0/definition/titel", json!("x")))
        .assert_only_starting("templates/dashboards/security-posture.json#/widgets/0/definition/titel: unknown field `titel`, expected one of");
}

#[test]
fn rule_unknown_key_in_widget_request() {
    Fixture::new()
        .mutate(POSTURE, |d| set(d, "/widgets/0/definition/requests/0/qq", json!("x")))
        .assert_only_starting("templates/dashboards/security-posture.json#/widgets/0/definition/requests/0/qq: unknown field `qq`, expected one of");
}

/// `query` is no key of a metric widget's request (only topology and funnel requests, which
/// have models of their own): it used to pass, and skip every check of the query in it.
#[test]
fn rule_query_key_in_a_metric_widget_request() {
    Fixture::new()
        .mutate(EXPORTER, |d| {
            set(
                d,
                "/widgets/0/definition/requests/0",
                json!({ "query": "sum:[[metric_prefix]].exporter.events.snet{env:[[env]]}.as_count()", "display_type": "bars" }),
            )
        })
        .assert_only_starting("templates/dashboards/exporter-health.json#/widgets/0/definition/requests/0/query: `query` and `request_type: histogram` go together, in a distribution widget's histogram request only");
    // A distribution widget's histogram request has one, and its metric is checked.
    let histogram = |metric: &str| {
        json!({ "definition": { "type": "distribution", "title": "latency", "requests": [{
            "request_type": "histogram",
            "query": { "data_source": "metrics", "name": "q1", "query": format!("histogram:[[metric_prefix]].{metric}{{env:[[env]]}}") }
        }] } })
    };
    Fixture::new()
        .mutate(EXPORTER, |d| {
            set(d, "/widgets/0", histogram("exporter.batch.latency"))
        })
        .assert_all(&[]);
    Fixture::new()
        .mutate(EXPORTER, |d| set(d, "/widgets/0", histogram("exporter.batch.latncy")))
        .assert_only_starting("templates/dashboards/exporter-health.json#/widgets/0/definition/requests/0/query/query: metric `clawdstrike.exporter.batch.latncy` is not one we emit");
    Fixture::new()
        .mutate(EXPORTER, |d| {
            set(d, "/widgets/0/definition/requests/0/request_type", json!("histogram"))
        })
        .assert_only_starting("templates/dashboards/exporter-health.json#/widgets/0/definition/requests/0/request_type: `query` and `request_type: histogram` go together");
    Fixture::new()
        .mutate(EXPORTER, |d| set(d, "/widgets/0", histogram("exporter.retries")))
        .assert_only_starting("templates/dashboards/exporter-health.json#/widgets/0/definition/requests/0/query/query: a histogram needs a distribution");
}

/// A monitor type whose query this check does not read (an event, a service check, ...) is
/// refused: it used to pass with its query unchecked, whatever it named.
#[test]
fn rule_monitor_types_that_are_not_checked() {
    Fixture::new()
        .mutate(DENIALS, |m| set(m, "/type", json!("event-v2 alert")))
        .assert_only_starting("templates/monitors/high-denial-rate.json#/type: \"event-v2 alert\" monitors are not checked here");
}

/// A composite monitor's query is monitor ids and operators.
#[test]
fn rule_composite_query() {
    use super::queries::check_composite;
    for good in ["123 && 456", "!(1 || 22) && 333", "(1)"] {
        assert_eq!(check_composite(good), Ok(()), "{good}");
    }
    for (bad, why) in [
        ("123 &", "unexpected `&`"),
        ("123 && ", "ends without"),
        ("(1 || 2", "not closed"),
        ("1 2", "unexpected `2`"),
        ("avg:x{*} > 1", "unexpected `a`"),
        ("1 && )", "unexpected `)`"),
    ] {
        let err = check_composite(bad).unwrap_err();
        assert!(err.contains(why), "{bad}: {err}");
    }
    Fixture::new()
        .mutate(DENIALS, |m| {
            set(m, "/type", json!("composite"));
            set(m, "/query", json!("1 && x"));
        })
        .assert_only_starting(
            "templates/monitors/high-denial-rate.json#/query: a composite query is monitor ids",
        );
}

/// A value of a closed-valued tag or attribute that we never send is refused: the monitor or
/// rule would never fire. Wildcards and other values we send pass.
#[test]
fn rule_closed_values_are_ours() {
    Fixture::new()
        .mutate("monitors/secret-detected.json", |m| {
            let q = m["query"].as_str().unwrap().replace("event_type:secret_detected", "event_type:secret_detection");
            set(m, "/query", json!(q));
        })
        .assert_only("templates/monitors/secret-detected.json#/query: the search has `event_type:secret_detection`, a value we never send (we send policy_violation, policy_allow, guard_block, guard_warn, secret_detected, egress_blocked, forbidden_path, patch_rejected, session_start, session_end)");
    Fixture::new()
        .mutate("monitors/egress-blocked-burst.json", |m| {
            let q = m["query"].as_str().unwrap().replace("event_type:egress_blocked", "event_type:egress_block");
            set(m, "/query", json!(q));
        })
        .assert_only_starting("templates/monitors/egress-blocked-burst.json#/query: `clawdstrike.events.denied` filters on `event_type:egress_block`, a value we never send");
    Fixture::new()
        .mutate("rules/critical-policy-violation.json", |r| {
            let q = r["queries"][0]["query"].as_str().unwrap().replace("@security.severity:critical", "@security.severity:(crit OR high)");
            set(r, "/queries/0/query", json!(q));
        })
        .assert_only_starting("templates/rules/critical-policy-violation.json#/queries/0/query: the search has `@security.severity:crit`, a value we never send (we send info, low, medium, high, critical)");
    Fixture::new()
        .mutate("rules/critical-policy-violation.json", |r| {
            let q = r["queries"][0]["query"].as_str().unwrap().replace(
                "@security.severity:critical",
                "@security.severity:(high OR \"critical\") -@evt.outcome:fail*",
            );
            set(r, "/queries/0/query", json!(q));
        })
        .assert_all(&[]);
}

/// A `free` layout places each widget and has no groups; dashboard tags are `team:` tags.
#[test]
fn rule_free_layouts_and_dashboard_tags() {
    let problems = Fixture::new()
        .mutate(POSTURE, |d| set(d, "/layout_type", json!("free")))
        .problems();
    assert!(!problems.is_empty());
    assert!(
        problems
            .iter()
            .all(|p| p.contains("`layout` (x, y, width, height)")
                || p.contains("no group widgets")
                || p.contains("`reflow_type`")),
        "{problems:#?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.contains("#/widgets/0: a widget of a `free` layout needs its `layout`")),
        "{problems:#?}"
    );
    Fixture::new()
        .mutate(POSTURE, |d| set(d, "/tags", json!(["team:security", "env:prod"])))
        .assert_only("templates/dashboards/security-posture.json#/tags/1: dashboard tags are teams, `team:<name>`, not \"env:prod\"");
}

#[test]
fn rule_unknown_widget_type_pie() {
    Fixture::new().mutate(POSTURE, |d| set(d, "/widgets/2/definition/type", json!("pie"))).assert_only_starting(
        "templates/dashboards/security-posture.json#/widgets/2/definition/type: unknown widget type `pie` (Datadog has no pie widget: use `sunburst`), expected one of timeseries,",
    );
}

#[test]
fn rule_unknown_monitor_type() {
    Fixture::new()
        .mutate(DENIALS, |m| set(m, "/type", json!("metric-alert")))
        .assert_only_starting("templates/monitors/high-denial-rate.json#/type: unknown variant `metric-alert`, expected one of `composite`");
}

#[test]
fn rule_missing_required_field() {
    Fixture::new()
        .mutate(DENIALS, |m| {
            m.as_object_mut().unwrap().remove("query");
        })
        .assert_only("templates/monitors/high-denial-rate.json#: missing field `query`");
}

#[test]
fn rule_dashboard_enum_values() {
    Fixture::new()
        .mutate(POSTURE, |d| set(d, "/layout_type", json!("grid")))
        .assert_only("templates/dashboards/security-posture.json#/layout_type: unknown variant `grid`, expected `ordered` or `free`");
}

#[test]
fn rule_widget_enum_values() {
    Fixture::new().mutate(POSTURE, |d| set(d, "/widgets/3/definition/requests/0/display_type", json!("pie"))).assert_only(
        "templates/dashboards/security-posture.json#/widgets/3/definition/requests/0/display_type: unknown variant `pie`, expected one of `area`, `bars`, `line`, `overlay`",
    );
}

#[test]
fn rule_monitor_option_enum_values() {
    Fixture::new().mutate(CRITICAL, |m| set(m, "/options/on_missing_data", json!("ignore"))).assert_only(
        "templates/monitors/critical-policy-violation.json#/options/on_missing_data: unknown variant `ignore`, expected one of `default`, `show_no_data`, `show_and_notify_no_data`, `resolve`",
    );
}

#[test]
fn rule_monitor_priority_range() {
    Fixture::new()
        .mutate(CRITICAL, |m| set(m, "/priority", json!(0)))
        .assert_only("templates/monitors/critical-policy-violation.json#/priority: invalid priority 0, expected 1 (highest) to 5");
}

#[test]
fn rule_case_status_values() {
    Fixture::new().mutate(FORBIDDEN, |r| set(r, "/cases/0/status", json!("severe"))).assert_only(
        "templates/rules/repeated-forbidden-path.json#/cases/0/status: unknown variant `severe`, expected one of `info`, `low`, `medium`, `high`, `critical`",
    );
}

#[test]
fn rule_query_aggregation_values() {
    Fixture::new().mutate(FORBIDDEN, |r| set(r, "/queries/0/aggregation", json!("avg"))).assert_only(
        "templates/rules/repeated-forbidden-path.json#/queries/0/aggregation: unknown variant `avg`, expected one of `count`, `cardinality`, `sum`, `max`, `new_value`, `geo_data`, `event_count`, `none`",
    );
}

#[test]
fn rule_detection_method_values() {
    Fixture::new().mutate(FORBIDDEN, |r| set(r, "/options/detectionMethod", json!("thresholds"))).assert_only_starting(
        "templates/rules/repeated-forbidden-path.json#/options/detectionMethod: unknown variant `thresholds`, expected one of `threshold`, `new_value`",
    );
}

#[test]
fn rule_evaluation_window_values() {
    Fixture::new().mutate(FORBIDDEN, |r| set(r, "/options/evaluationWindow", json!(120))).assert_only(
        "templates/rules/repeated-forbidden-path.json#/options/evaluationWindow: invalid duration 120 s, expected one of 0, 60, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400",
    );
}

#[test]
fn rule_keep_alive_and_max_signal_duration_values() {
    Fixture::new().mutate(FORBIDDEN, |r| set(r, "/options/maxSignalDuration", json!(100_000))).assert_only(
        "templates/rules/repeated-forbidden-path.json#/options/maxSignalDuration: invalid duration 100000 s, expected one of 0, 60, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400",
    );
}

#[test]
fn rule_new_value_option_values() {
    Fixture::new()
        .mutate(EGRESS, |r| set(r, "/options/newValueOptions/forgetAfter", json!(3)))
        .assert_only("templates/rules/new-egress-destination.json#/options/newValueOptions/forgetAfter: invalid forgetAfter (days) 3, expected one of 1, 2, 7, 14, 21, 28");
}

#[test]
fn rule_case_condition_must_parse() {
    Fixture::new()
        .mutate(FORBIDDEN, |r| set(r, "/cases/1/condition", json!("attempts >=")))
        .assert_only("templates/rules/repeated-forbidden-path.json#/cases/1/condition: condition `attempts >=` does not parse: unexpected end of expression");
}

#[test]
fn rule_case_condition_names_defined_queries() {
    Fixture::new().mutate(FORBIDDEN, |r| set(r, "/cases/0/condition", json!("attempts >= 10 && path >= 5"))).assert_only(
        "templates/rules/repeated-forbidden-path.json#/cases/0/condition: condition `attempts >= 10 && path >= 5` names `path`, which is not a query here (queries: attempts, paths)",
    );
}

#[test]
fn rule_threshold_case_needs_condition() {
    Fixture::new()
        .mutate(FORBIDDEN, |r| {
            r["cases"][1].as_object_mut().unwrap().remove("condition");
        })
        .assert_only("templates/rules/repeated-forbidden-path.json#/cases/1: a threshold rule's case needs a `condition` over its queries, like `a > 0`");
}

#[test]
fn rule_query_names_unique() {
    Fixture::new()
        .mutate(FORBIDDEN, |r| set(r, "/queries/1/name", json!("attempts")))
        .assert_all(&[
            "templates/rules/repeated-forbidden-path.json#/cases/0/condition: condition `attempts >= 10 && paths >= 5` names `paths`, which is not a query here (queries: attempts, attempts)",
            "templates/rules/repeated-forbidden-path.json#/queries/1/name: query name `attempts` is used twice",
        ]);
}

#[test]
fn rule_cardinality_needs_distinct_fields() {
    Fixture::new()
        .mutate(FORBIDDEN, |r| set(r, "/queries/1/distinctFields", json!([])))
        .assert_only("templates/rules/repeated-forbidden-path.json#/queries/1: a `cardinality` query needs `distinctFields` (what to count distinct values of)");
}

#[test]
fn rule_new_value_needs_metrics() {
    Fixture::new()
        .mutate(EGRESS, |r| {
            r["queries"][0].as_object_mut().unwrap().remove("metrics");
        })
        .assert_only("templates/rules/new-egress-destination.json#/queries/0: a `new_value` query needs `metrics`: the fields whose new values it detects");
}

#[test]
fn rule_new_value_aggregation_needs_new_value_method() {
    let fixture = Fixture::new();
    fixture.mutate(EGRESS, |r| {
        set(r, "/options/detectionMethod", json!("threshold"));
        set(r, "/options/evaluationWindow", json!(300));
        set(r, "/cases/0/condition", json!("egress > 0"));
    });
    fixture.assert_only("templates/rules/new-egress-destination.json#/queries/0/aggregation: a `new_value` query needs `options.detectionMethod: new_value`");
}

#[test]
fn rule_new_value_method_needs_new_value_query() {
    Fixture::new()
        .mutate(EGRESS, |r| {
            set(r, "/queries/0/aggregation", json!("count"));
        })
        .assert_only("templates/rules/new-egress-destination.json#/options/detectionMethod: a `new_value` rule needs a query with `aggregation: new_value`");
}

#[test]
fn rule_threshold_needs_evaluation_window() {
    Fixture::new()
        .mutate(FORBIDDEN, |r| set(r, "/options/evaluationWindow", json!(0)))
        .assert_only("templates/rules/repeated-forbidden-path.json#/options: a threshold rule needs a non-zero `evaluationWindow`");
}

#[test]
fn rule_keep_alive_within_max_signal_duration() {
    Fixture::new()
        .mutate(FORBIDDEN, |r| set(r, "/options/maxSignalDuration", json!(1800)))
        .assert_only("templates/rules/repeated-forbidden-path.json#/options/keepAlive: keepAlive 3600 s exceeds maxSignalDuration 1800 s");
}

#[test]
fn rule_evaluation_window_within_keep_alive() {
    Fixture::new()
        .mutate(FORBIDDEN, |r| set(r, "/options/evaluationWindow", json!(7200)))
        .assert_only("templates/rules/repeated-forbidden-path.json#/options/evaluationWindow: evaluationWindow 7200 s exceeds keepAlive 3600 s");
}

#[test]
fn rule_case_notifications_are_handles() {
    Fixture::new().mutate(FORBIDDEN, |r| set(r, "/cases/0/notifications/0", json!("security-team"))).assert_only_starting(
        "templates/rules/repeated-forbidden-path.json#/cases/0/notifications/0: `security-team` is not a notification handle (expected @pagerduty-<name>,",
    );
}

#[test]
fn rule_formula_must_parse() {
    Fixture::new()
        .mutate(EXPORTER, |d| set(d, "/widgets/7/definition/requests/0/formulas/1/formula", json!("100 * depth /")))
        .assert_only("templates/dashboards/exporter-health.json#/widgets/7/definition/requests/0/formulas/1/formula: formula `100 * depth /` does not parse: unexpected end of expression");
}

#[test]
fn rule_formula_names_defined_queries() {
    Fixture::new().mutate(EXPORTER, |d| set(d, "/widgets/7/definition/requests/0/formulas/1/formula", json!("100 * depth / capacty"))).assert_only(
        "templates/dashboards/exporter-health.json#/widgets/7/definition/requests/0/formulas/1/formula: formula `100 * depth / capacty` names `capacty`, which is not a query here (queries: depth, capacity)",
    );
}

#[test]
fn rule_request_queries_need_formulas() {
    Fixture::new()
        .mutate(EXPORTER, |d| {
            d["widgets"][7]["definition"]["requests"][0].as_object_mut().unwrap().remove("formulas");
        })
        .assert_only("templates/dashboards/exporter-health.json#/widgets/7/definition/requests/0: a request with `queries` needs `formulas` (e.g. [{\"formula\": \"<query name>\"}])");
}

#[test]
fn rule_request_query_names_unique() {
    Fixture::new()
        .mutate(EXPORTER, |d| set(d, "/widgets/7/definition/requests/0/queries/1/name", json!("depth")))
        .assert_all(&[
            "templates/dashboards/exporter-health.json#/widgets/7/definition/requests/0/formulas/1/formula: formula `100 * depth / capacity` names `capacity`, which is not a query here (queries: depth, depth)",
            "templates/dashboards/exporter-health.json#/widgets/7/definition/requests/0/queries/1/name: query name `depth` is used twice in this request",
        ]);
}

#[test]
fn rule_request_q_or_queries() {
    Fixture::new()
        .mutate(EXPORTER, |d| set(d, "/widgets/7/definition/requests/0/q", json!("avg:clawdstrike.exporter.queue.depth{*}")))
        .assert_only("templates/dashboards/exporter-health.json#/widgets/7/definition/requests/0/q: a request has either `q` or `queries` (with `formulas`), not both");
}

#[test]
fn rule_log_query_needs_compute() {
    Fixture::new()
        .mutate(POSTURE, |d| {
            d["widgets"][5]["definition"]["requests"][0]["queries"][0].as_object_mut().unwrap().remove("compute");
        })
        .assert_only("templates/dashboards/security-posture.json#/widgets/5/definition/requests/0/queries/0: a `logs` query needs `compute` (e.g. {\"aggregation\": \"count\"})");
}

#[test]
fn rule_metric_query_needs_query() {
    Fixture::new()
        .mutate(POSTURE, |d| {
            d["widgets"][2]["definition"]["requests"][0]["queries"][0].as_object_mut().unwrap().remove("query");
        })
        .assert_only("templates/dashboards/security-posture.json#/widgets/2/definition/requests/0/queries/0: a `metrics` query needs `query`");
}

#[test]
fn rule_warning_below_critical_for_above() {
    Fixture::new().mutate(DENIALS, |m| set(m, "/options/thresholds/warning", json!(150))).assert_only(
        "templates/monitors/high-denial-rate.json#/options/thresholds/warning: warning threshold 150 must be below the critical threshold 100 for `>` (alerts fire above it)",
    );
}

#[test]
fn rule_warning_above_critical_for_below() {
    Fixture::new().mutate(API_KEY, |m| set(m, "/options/thresholds/warning", json!(0.5))).assert_only(
        "templates/monitors/api-key-invalid.json#/options/thresholds/warning: warning threshold 0.5 must be above the critical threshold 1 for `<` (alerts fire below it)",
    );
}

#[test]
fn rule_critical_matches_query() {
    Fixture::new()
        .mutate(DENIALS, |m| set(m, "/options/thresholds/critical", json!(90)))
        .assert_only("templates/monitors/high-denial-rate.json#/options/thresholds/critical: critical threshold 90 differs from the query's threshold `> 100`");
}

#[test]
fn rule_critical_threshold_required() {
    Fixture::new()
        .mutate(DENIALS, |m| {
            m["options"]["thresholds"].as_object_mut().unwrap().remove("critical");
        })
        .assert_only("templates/monitors/high-denial-rate.json#/options/thresholds: missing `critical`; it must equal the query's threshold 100");
}

#[test]
fn rule_recovery_thresholds_consistent() {
    Fixture::new()
        .mutate(QUEUE, |m| set(m, "/options/thresholds/critical_recovery", json!(95)))
        .assert_only("templates/monitors/queue-saturated.json#/options/thresholds/critical_recovery: critical recovery threshold 95 must be below the critical threshold 90 for `>`");
    Fixture::new()
        .mutate(QUEUE, |m| set(m, "/options/thresholds/warning_recovery", json!(80)))
        .assert_only("templates/monitors/queue-saturated.json#/options/thresholds/warning_recovery: warning recovery threshold 80 must be below the warning threshold 75 for `>`");
}

#[test]
fn rule_monitor_query_has_comparison() {
    Fixture::new()
        .mutate(DENIALS, |m| set(m, "/query", json!("sum(last_10m):sum:[[metric_prefix]].events.denied{env:[[env]]}.as_count()")))
        .assert_only("templates/monitors/high-denial-rate.json#/query: the query must end with a comparison to a number, like `> 100`");
}

#[test]
fn rule_metric_monitor_query_has_time_aggregation() {
    Fixture::new().mutate(DENIALS, |m| set(m, "/query", json!("sum:[[metric_prefix]].events.denied{env:[[env]]}.as_count() > 100"))).assert_only(
        "templates/monitors/high-denial-rate.json#/query: a metric monitor query starts with a time aggregation over a window, like `avg(last_5m):`",
    );
}

#[test]
fn rule_log_monitor_query_shape() {
    Fixture::new()
        .mutate(CRITICAL, |m| set(m, "/query", json!("logs(\"service:[[service]]\").index(\"*\").last(\"5m\") > 0")))
        .assert_only("templates/monitors/critical-policy-violation.json#/query: a log monitor query needs `.rollup(\"count\")` (or another rollup)");
}

#[test]
fn rule_message_sections_closed() {
    Fixture::new()
        .mutate(DENIALS, |m| {
            set(
                m,
                "/message",
                json!("{{#is_alert}}[[notify.critical]] denials"),
            )
        })
        .assert_only(
            "templates/monitors/high-denial-rate.json#/message: `{{#is_alert}}` is never closed",
        );
}

#[test]
fn rule_monitor_notifies_someone() {
    Fixture::new()
        .mutate(DENIALS, |m| set(m, "/message", json!("Too many denials: {{value}}")))
        .assert_only("templates/monitors/high-denial-rate.json#/message: the message notifies nobody when it alerts: add a handle such as [[notify.critical]] or [[notify.warning]] (outside any section, or in {{#is_alert}})");
    // A handle only in sections that are false when alerting notifies nobody then.
    Fixture::new()
        .mutate(DENIALS, |m| {
            set(
                m,
                "/message",
                json!("{{#is_recovery}}[[notify.critical]]{{/is_recovery}}{{^is_alert}}[[notify.warning]]{{/is_alert}} denials"),
            )
        })
        .assert_only("templates/monitors/high-denial-rate.json#/message: the message notifies nobody when it alerts: add a handle such as [[notify.critical]] or [[notify.warning]] (outside any section, or in {{#is_alert}})");
}

/// An email address is a handle like any other (values file `notify.critical:
/// "@secops@example.com"`), in the notification check as in the values check.
#[test]
fn rule_monitor_email_handles_notify() {
    let fixture = Fixture::new();
    for values in ["values/production.yaml", "values/staging.yaml"] {
        fixture.mutate(values, |v| {
            v["notify"]["critical"] = json!("@secops@example.com");
            v["notify"]["warning"] = json!("@secops-low@example.com");
        });
    }
    assert_eq!(fixture.problems(), Vec::<String>::new());
}

/// A monitor that notifies when data stops must reach someone then: `{{#is_alert}}` is false
/// in the no-data state (the API-key monitor once sent its no-data alert to nobody).
#[test]
fn rule_no_data_notifies_someone() {
    const KEY: &str = "monitors/api-key-invalid.json";
    Fixture::new()
        .mutate(KEY, |m| {
            set(m, "/message", json!("{{#is_alert}}[[notify.critical]]{{/is_alert}} key rejected"))
        })
        .assert_only("templates/monitors/api-key-invalid.json#/message: notify_no_data is on, but no handle is notified when data stops: put one outside any section, or in {{#is_no_data}} (a {{#is_alert}} section is skipped then)");
    // Outside any section, or in {{#is_no_data}}, or in {{^is_alert}}: notified.
    for message in [
        "[[notify.critical]] key rejected or silent",
        "{{#is_alert}}[[notify.critical]]{{/is_alert}}{{#is_no_data}}[[notify.warning]]{{/is_no_data}}",
        "{{#is_alert}}[[notify.critical]]{{/is_alert}}{{^is_alert}}[[notify.warning]]{{/is_alert}}",
    ] {
        let fixture = Fixture::new();
        fixture.mutate(KEY, |m| set(m, "/message", json!(message)));
        assert_eq!(fixture.problems(), Vec::<String>::new(), "{message}");
    }
}

/// A widget request without any query, and the older `log_query` form of one, are held to
/// the same rules as the others.
#[test]
fn rule_every_request_has_a_query_checked_against_the_catalogue() {
    Fixture::new()
        .mutate(EXPORTER, |d| {
            set(
                d,
                "/widgets/1/definition/requests/0",
                json!({"display_type": "line"}),
            )
        })
        .assert_only("templates/dashboards/exporter-health.json#/widgets/1/definition/requests/0: a request needs a query: `q`, or `queries` with `formulas`");
    Fixture::new()
        .mutate(EXPORTER, |d| {
            set(
                d,
                "/widgets/1/definition/requests/0",
                json!({"display_type": "line", "log_query": {
                    "index": "*",
                    "search": {"query": "@security.guard:egress_allowlist"},
                    "compute": {"aggregation": "count"},
                    "group_by": [{"facet": "@decision.gaurd"}]
                }}),
            )
        })
        .assert_only("templates/dashboards/exporter-health.json#/widgets/1/definition/requests/0/log_query/group_by/0/facet: log facet `@decision.gaurd` is not an attribute we send (see the catalogue)");
}

/// File names are template ids, which travel in tags: one with a space would never be found
/// again, and each publish would create a duplicate.
#[test]
fn rule_template_file_names_are_tag_safe() {
    let fixture = Fixture::new();
    std::fs::rename(
        fixture.dir.join(DENIALS),
        fixture.dir.join("monitors/High denials.json"),
    )
    .unwrap();
    fixture.assert_only("templates/monitors/High denials.json#: the file name is the template id (`monitors/High denials`), which travels in tags: use lowercase letters, digits, `-`, `_` and `.`");
}

/// With the exporter's `metrics.prefix: ""`, `[[metric_prefix]].events.denied` is
/// `events.denied`, which the catalogue knows without a prefix.
#[test]
fn an_empty_metric_prefix_renders_bare_metric_names() {
    let fixture = Fixture::new();
    for values in ["values/production.yaml", "values/staging.yaml"] {
        fixture.mutate(values, |v| v["metric_prefix"] = json!(""));
    }
    assert_eq!(fixture.problems(), Vec::<String>::new());
    let set = super::TemplateSet::load(&fixture.dir);
    let values = set.values_for("production").unwrap();
    let template = set
        .templates
        .iter()
        .find(|t| t.id == "monitors/high-denial-rate")
        .unwrap();
    let (body, _) = set.render(template, values);
    let query = body["query"].as_str().unwrap();
    assert!(query.contains(":events.denied{"), "{query}");
}

#[test]
fn rule_unknown_placeholder() {
    Fixture::new().mutate(DENIALS, |m| set(m, "/name", json!("High denials ([[environment]])"))).assert_only(
        "templates/monitors/high-denial-rate.json#/name: unknown placeholder `[[environment]]`; known: env, service, metric_prefix, notify.critical, notify.warning",
    );
}

#[test]
fn rule_metric_in_catalogue() {
    // The design document's prefix: not what the exporter emits.
    Fixture::new().mutate(DENIALS, |m| set(m, "/query", json!("sum(last_10m):sum:clawdstrike.security.events.denied{env:[[env]]} by {guard}.as_count() > 100"))).assert_only(
        "templates/monitors/high-denial-rate.json#/query: metric `clawdstrike.security.events.denied` is not one we emit (the catalogue, under prefix `clawdstrike`)",
    );
}

#[test]
fn rule_metric_under_the_configured_prefix() {
    // A hard-coded prefix breaks for an environment configured with another one.
    let fixture = Fixture::new();
    fixture.mutate("values/staging.yaml", |v| {
        set(v, "/metric_prefix", json!("acme.clawdstrike"))
    });
    fixture.mutate(DENIALS, |m| {
        set(
            m,
            "/query",
            json!("sum(last_10m):sum:clawdstrike.events.denied{env:[[env]]} by {guard}.as_count() > 100"),
        )
    });
    fixture.assert_only(
        "templates/monitors/high-denial-rate.json#/query: metric `clawdstrike.events.denied` is not one we emit (the catalogue, under prefix `acme.clawdstrike`) (rendered with templates/values/staging.yaml)",
    );
}

#[test]
fn rule_metric_group_by_tag_carried() {
    Fixture::new().mutate(DENIALS, |m| set(m, "/query", json!("sum(last_10m):sum:[[metric_prefix]].events.denied{env:[[env]]} by {guard,session_id}.as_count() > 100"))).assert_only(
        "templates/monitors/high-denial-rate.json#/query: `clawdstrike.events.denied` groups by tag `session_id`, which the metric does not carry (its tags: guard, severity, outcome, event_type, env, tenant, env, service, version)",
    );
}

#[test]
fn rule_metric_filter_tag_carried() {
    Fixture::new().mutate(EXPORTER, |d| set(d, "/widgets/0/definition/requests/0/q", json!("sum:[[metric_prefix]].exporter.events.sent{env:[[env]],guard:secret_leak}.as_count()"))).assert_only(
        "templates/dashboards/exporter-health.json#/widgets/0/definition/requests/0/q: `clawdstrike.exporter.events.sent` filters on tag `guard`, which the metric does not carry (its tags: exporter, env, service, version)",
    );
}

#[test]
fn rule_percentiles_need_a_distribution() {
    Fixture::new().mutate(EXPORTER, |d| set(d, "/widgets/0/definition/requests/0/q", json!("p95:[[metric_prefix]].exporter.events.sent{env:[[env]]}"))).assert_only(
        "templates/dashboards/exporter-health.json#/widgets/0/definition/requests/0/q: `p95:clawdstrike.exporter.events.sent`: percentiles need a distribution, and `clawdstrike.exporter.events.sent` is a Count",
    );
}

#[test]
fn rule_log_facet_in_catalogue() {
    Fixture::new()
        .mutate(FORBIDDEN, |r| set(r, "/queries/0/groupByFields/0", json!("@session.uuid")))
        .assert_only("templates/rules/repeated-forbidden-path.json#/queries/0/groupByFields/0: log facet `@session.uuid` is not an attribute we send (see the catalogue)");
}

#[test]
fn rule_log_search_facets_in_catalogue() {
    Fixture::new()
        .mutate(CRITICAL, |m| set(m, "/query", json!("logs(\"service:[[service]] @security.verdict:deny\").index(\"*\").rollup(\"count\").last(\"5m\") > 0")))
        .assert_only("templates/monitors/critical-policy-violation.json#/query: log facet `@security.verdict` is not an attribute we send (see the catalogue)");
}

#[test]
fn rule_log_tag_keys_we_set() {
    Fixture::new().mutate(POSTURE, |d| set(d, "/widgets/7/definition/query", json!("service:[[service]] security.guard:secret_leak"))).assert_only(
        "templates/dashboards/security-posture.json#/widgets/7/definition/query: log tag `security.guard` is not a tag we set (did you mean the attribute `@security.guard`?)",
    );
}

#[test]
fn rule_log_status_values() {
    Fixture::new()
        .mutate(POSTURE, |d| set(d, "/widgets/7/definition/query", json!("service:[[service]] status:fatal")))
        .assert_only("templates/dashboards/security-posture.json#/widgets/7/definition/query: `status:fatal`: we send status info, warn, error, critical");
}

#[test]
fn rule_log_stream_columns_in_catalogue() {
    Fixture::new()
        .mutate(POSTURE, |d| set(d, "/widgets/7/definition/columns/2", json!("@security.rule")))
        .assert_only("templates/dashboards/security-posture.json#/widgets/7/definition/columns/2: log facet `@security.rule` is not an attribute we send (see the catalogue)");
}

#[test]
fn rule_message_attributes_in_catalogue() {
    Fixture::new().mutate(CRITICAL, |m| set(m, "/message", json!("[[notify.critical]] guard {{log.attributes.security.verdict}}"))).assert_only(
        "templates/monitors/critical-policy-violation.json#/message: `{{log.attributes.security.verdict}}`: `security.verdict` is not an attribute we send",
    );
}

#[test]
fn rule_no_api_key_like_strings() {
    Fixture::new().mutate(DENIALS, |m| set(m, "/tags/0", json!("api_key:0123456789abcdef0123456789abcdef"))).assert_only(
        "templates/monitors/high-denial-rate.json#/tags/0: looks like a Datadog API key (32 hex characters): never put keys in templates; publish reads them from DD_API_KEY and DD_APP_KEY",
    );
}

#[test]
fn rule_no_app_key_like_strings() {
    let fixture = Fixture::new();
    fixture.mutate(POSTURE, |d| {
        set(
            d,
            "/description",
            json!("app key 0123456789abcdef0123456789abcdef01234567 for the team"),
        )
    });
    let problems = fixture.problems();
    assert_eq!(
        problems,
        [
            "templates/dashboards/security-posture.json#/description: looks like a Datadog application key (40 hex characters): never put keys in templates; publish reads them from DD_API_KEY and DD_APP_KEY"
        ]
    );
    assert!(
        !problems[0].contains("0123456789abcdef0123"),
        "the problem must not echo the key"
    );
}

#[test]
fn rule_tags_valid() {
    Fixture::new().mutate(DENIALS, |m| set(m, "/tags/0", json!("Team:Security"))).assert_only(
        "templates/monitors/high-denial-rate.json#/tags/0: tag `Team:Security` is not a valid Datadog tag (lowercase letters, digits and `_-:./`, starting with a letter, at most 200 characters); Datadog would rewrite it",
    );
}

#[test]
fn rule_values_file_strict() {
    Fixture::new()
        .mutate("values/production.yaml", |v| set(v, "/notify/info", json!("@slack-x")))
        .assert_only("templates/values/production.yaml#/notify/info: unknown field `info`, expected `critical` or `warning`");
}

#[test]
fn rule_values_handles_valid() {
    Fixture::new().mutate("values/production.yaml", |v| set(v, "/notify/critical", json!("pagerduty-security"))).assert_only_starting(
        "templates/values/production.yaml#/notify/critical: `pagerduty-security` is not a notification handle (expected @pagerduty-<name>,",
    );
}

#[test]
fn rule_values_metric_prefix_valid() {
    Fixture::new().mutate("values/staging.yaml", |v| set(v, "/metric_prefix", json!("acme clawdstrike"))).assert_only(
        "templates/values/staging.yaml#/metric_prefix: `acme clawdstrike` is not a valid metric prefix (letters, digits, `_` and `.`, starting with a letter)",
    );
}

#[test]
fn rule_compliance_controls_exist() {
    Fixture::new()
        .mutate("compliance.yaml", |c| set(c, "/guards/secret_leak/soc2/1", json!("CC9.9")))
        .assert_only("templates/compliance.yaml#/guards/secret_leak/soc2/1: unknown SOC 2 control `CC9.9`; defined: CC6.1, CC6.2, CC6.3, CC7.1");
}

#[test]
fn rule_compliance_every_control_covered() {
    Fixture::new()
        .mutate("compliance.yaml", |c| {
            for frameworks in c["guards"].as_object_mut().unwrap().values_mut() {
                if let Some(hipaa) = frameworks.get_mut("hipaa").and_then(Value::as_array_mut) {
                    hipaa.retain(|control| control != "§164.310");
                }
            }
        })
        .assert_only("templates/compliance.yaml#/frameworks/2/controls/1: HIPAA control `§164.310` has no guard mapped to it: its dashboard widget would always be empty");
}

#[test]
fn rule_compliance_framework_known() {
    Fixture::new()
        .mutate("dashboards/security-compliance.json", |d| set(d, "/widgets/4", json!({"[[compliance]]": "pci"})))
        .assert_only("templates/dashboards/security-compliance.json#/widgets/4/[[compliance]]: unknown compliance framework `pci`; defined: soc2, gdpr, hipaa");
}

#[test]
fn rule_only_template_files() {
    Fixture::new()
        .write("monitors/notes.txt", "hello")
        .assert_only(
            "templates/monitors/notes.txt#: not a template (expected .json, .yaml or .yml)",
        );
}

#[test]
fn yaml_templates_are_checked_too() {
    let fixture = Fixture::new();
    let doc = super::load_document(&fixture.dir.join(DENIALS)).unwrap();
    std::fs::remove_file(fixture.dir.join(DENIALS)).unwrap();
    let mut doc = doc;
    set(&mut doc, "/options/thresholds/warning", json!(100));
    fixture.write(
        "monitors/high-denial-rate.yaml",
        &serde_yaml_ng::to_string(&doc).unwrap(),
    );
    fixture.assert_only(
        "templates/monitors/high-denial-rate.yaml#/options/thresholds/warning: warning threshold 100 must be below the critical threshold 100 for `>` (alerts fire above it)",
    );
}

#[test]
fn every_problem_is_reported() {
    let fixture = Fixture::new();
    fixture.mutate(DENIALS, |m| {
        set(m, "/options/thresholds/warning", json!(150));
        set(m, "/tags/0", json!("Bad Tag"));
    });
    fixture.mutate(POSTURE, |d| {
        set(d, "/widgets/2/definition/type", json!("pie"));
        set(d, "/widgets/4/definition/titel", json!("x"));
    });
    let problems = fixture.problems();
    assert_eq!(problems.len(), 4, "{problems:#?}");
}

// ---------------------------------------------------------------------------------------------
// --structural
// ---------------------------------------------------------------------------------------------

/// One valid widget of every type the spec lists.
fn every_widget_type() -> Value {
    let metric = json!([{ "q": "avg:system.cpu.user{*}" }]);
    json!({
        "title": "Every widget", "layout_type": "ordered", "widgets": [
            { "definition": { "type": "timeseries", "requests": metric } },
            { "definition": { "type": "query_value", "requests": metric, "precision": 1 } },
            { "definition": { "type": "toplist", "requests": metric } },
            { "definition": { "type": "query_table", "requests": metric, "has_search_bar": "never" } },
            { "definition": { "type": "sunburst", "requests": metric, "legend": { "type": "table" } } },
            { "definition": { "type": "heatmap", "requests": metric } },
            { "definition": { "type": "distribution", "requests": metric } },
            { "definition": { "type": "log_stream", "query": "service:web", "columns": ["host"] } },
            { "definition": { "type": "list_stream", "requests": [{ "columns": [{ "field": "timestamp", "width": "auto" }], "query": { "data_source": "logs_stream", "query_string": "service:web" }, "response_format": "event_list" }] } },
            { "definition": { "type": "note", "content": "hello" } },
            { "definition": { "type": "free_text", "text": "hello" } },
            { "definition": { "type": "group", "layout_type": "ordered", "widgets": [{ "definition": { "type": "note", "content": "inside" } }] } },
            { "definition": { "type": "alert_graph", "alert_id": "123", "viz_type": "timeseries" } },
            { "definition": { "type": "alert_value", "alert_id": "123" } },
            { "definition": { "type": "check_status", "check": "http.can_connect", "grouping": "check" } },
            { "definition": { "type": "change", "requests": [{ "q": "avg:system.cpu.user{*}", "compare_to": "hour_before" }] } },
            { "definition": { "type": "scatterplot", "requests": { "x": { "q": "avg:a{*}" }, "y": { "q": "avg:b{*}" } } } },
            { "definition": { "type": "treemap", "requests": [{ "queries": [{ "data_source": "metrics", "name": "q", "query": "sum:a{*} by {host}" }], "formulas": [{ "formula": "q" }], "response_format": "scalar" }] } },
            { "definition": { "type": "geomap", "requests": [{ "q": "sum:a{*} by {country}" }], "style": { "palette": "hostmap_blues", "palette_flip": false }, "view": { "focus": "WORLD" } } },
            { "definition": { "type": "hostmap", "requests": { "fill": { "q": "avg:system.cpu.user{*} by {host}" } }, "node_type": "host" } },
            { "definition": { "type": "manage_status", "query": "tag:security", "summary_type": "monitors" } },
            { "definition": { "type": "slo", "view_type": "detail", "slo_id": "abc", "time_windows": ["7d", "30d"] } },
            { "definition": { "type": "image", "url": "https://example.com/a.png", "sizing": "cover" } },
            { "definition": { "type": "iframe", "url": "https://example.com" } },
            { "definition": { "type": "event_stream", "query": "sources:github", "event_size": "s" } },
            { "definition": { "type": "event_timeline", "query": "sources:github" } },
            { "definition": { "type": "trace_service", "env": "prod", "service": "web", "span_name": "http.request" } },
            { "definition": { "type": "topology_map", "requests": [{ "query": { "data_source": "service_map", "service": "web", "filters": ["env:prod"] }, "request_type": "topology" }] } },
            { "definition": { "type": "funnel", "requests": [{ "query": { "data_source": "rum", "query_string": "@type:view", "steps": [] }, "request_type": "funnel" }] } },
            { "definition": { "type": "servicemap", "service": "web", "filters": ["env:prod"] } }
        ]
    })
}

#[test]
fn structural_covers_every_widget_type_of_the_spec() {
    let dashboard = every_widget_type();
    let types: Vec<&str> = dashboard["widgets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["definition"]["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        super::model::WIDGET_TYPES,
        "one widget per type of the spec, in its order"
    );
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("every.json");
    std::fs::write(&path, dashboard.to_string()).unwrap();
    let problems = check_structural(std::slice::from_ref(&path));
    assert!(problems.is_empty(), "{problems:#?}");

    // And a typo inside any of them is caught with its pointer.
    let mut broken = every_widget_type();
    set(
        &mut broken,
        "/widgets/21/definition/time_window",
        json!(["7d"]),
    );
    std::fs::write(&path, broken.to_string()).unwrap();
    let problems = check_structural(std::slice::from_ref(&path));
    assert_eq!(problems.len(), 1);
    assert!(problems[0].to_string().starts_with(&format!(
        "{}#/widgets/21/definition/time_window: unknown field `time_window`",
        path.display()
    )));
}

#[test]
fn structural_flags_the_design_documents_flawed_dashboard_but_not_foreign_metrics() {
    let design = json!({
        "title": "Clawdstrike Security Dashboard", "description": "AI Agent Security Posture", "layout_type": "ordered",
        "widgets": [
            { "definition": { "title": "Policy Violations (24h)", "type": "query_value", "requests": [{ "q": "sum:clawdstrike.security.events.denied{*}.as_count()", "aggregator": "sum" }], "precision": 0, "custom_unit": "violations" } },
            { "definition": { "title": "Events by Guard", "type": "pie", "requests": [{ "q": "sum:clawdstrike.security.events.by_guard{*} by {guard}.as_count()" }] } }
        ]
    });
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("design.json");
    std::fs::write(&path, design.to_string()).unwrap();
    let problems = check_structural(std::slice::from_ref(&path));
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert!(problems[0].to_string().starts_with(&format!(
        "{}#/widgets/1/definition/type: unknown widget type `pie`",
        path.display()
    )));
}

#[test]
fn structural_checks_monitors_and_rules_and_refuses_unknown_documents() {
    let tmp = tempfile::tempdir().unwrap();
    let monitor = tmp.path().join("monitor.json");
    std::fs::write(&monitor, json!({ "name": "cpu", "type": "metric alert", "query": "avg(last_5m):avg:system.cpu.user{*} > 90", "message": "@slack-ops", "options": { "thresholds": { "critical": 90, "warning": 95 } } }).to_string()).unwrap();
    let rule = tmp.path().join("rule.json");
    std::fs::write(&rule, json!({ "name": "r", "message": "m", "isEnabled": true, "queries": [{ "query": "source:x", "aggregation": "count" }], "cases": [{ "status": "high", "condition": "b > 0" }], "options": { "evaluationWindow": 300, "keepAlive": 600, "maxSignalDuration": 900 } }).to_string()).unwrap();
    let other = tmp.path().join("other.json");
    std::fs::write(&other, "{\"hello\": 1}").unwrap();
    let problems: Vec<String> = check_structural(&[monitor.clone(), rule.clone(), other.clone()])
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        problems,
        [
            format!(
                "{}#/options/thresholds/warning: warning threshold 95 must be below the critical threshold 90 for `>` (alerts fire above it)",
                monitor.display()
            ),
            format!(
                "{}#/cases/0/condition: condition `b > 0` names `b`, which is not a query here (queries: a)",
                rule.display()
            ),
            format!(
                "{}#: not a dashboard (`widgets`), monitor (`query` and `type`) or detection rule (`cases`)",
                other.display()
            ),
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// More mutation tests: the remaining rules
// ---------------------------------------------------------------------------------------------

#[test]
fn rule_query_name_format() {
    // (cases/0 no longer names the query, so only the name is reported)
    let fixture = Fixture::new();
    fixture.mutate(FORBIDDEN, |r| {
        set(r, "/queries/1/name", json!("distinct-paths"));
        set(r, "/cases/0/condition", json!("attempts >= 10"));
    });
    fixture.assert_only("templates/rules/repeated-forbidden-path.json#/queries/1/name: query name `distinct-paths` must be letters, digits and `_`, not starting with a digit");
}

#[test]
fn rule_at_least_one_case() {
    Fixture::new()
        .mutate(FORBIDDEN, |r| set(r, "/cases", json!([])))
        .assert_only(
            "templates/rules/repeated-forbidden-path.json#/cases: a rule needs at least one case",
        );
}

#[test]
fn rule_thresholds_required() {
    Fixture::new()
        .mutate(DENIALS, |m| {
            m["options"].as_object_mut().unwrap().remove("thresholds");
        })
        .assert_only("templates/monitors/high-denial-rate.json#/options: missing `thresholds`; `critical` must equal the query's threshold 100");
}

#[test]
fn rule_warning_recovery_needs_warning() {
    Fixture::new()
        .mutate(QUEUE, |m| {
            m["options"]["thresholds"].as_object_mut().unwrap().remove("warning");
        })
        .assert_only("templates/monitors/queue-saturated.json#/options/thresholds/warning_recovery: a warning recovery threshold needs a warning threshold");
}

#[test]
fn rule_message_sections_close_in_order() {
    Fixture::new()
        .mutate(DENIALS, |m| set(m, "/message", json!("{{#is_alert}}[[notify.critical]]{{/is_warning}}")))
        .assert_only("templates/monitors/high-denial-rate.json#/message: `{{/is_warning}}` closes `{{#is_alert}}`");
}

#[test]
fn rule_unterminated_placeholder() {
    Fixture::new()
        .mutate(DENIALS, |m| set(m, "/name", json!("High denials ([[env)")))
        .assert_only("templates/monitors/high-denial-rate.json#/name: unterminated placeholder `[[` (expected `[[name]]`)");
}

#[test]
fn rule_metric_query_names_a_metric() {
    Fixture::new()
        .mutate(EXPORTER, |d| set(d, "/widgets/0/definition/requests/0/q", json!("[[metric_prefix]].exporter.events.sent")))
        .assert_only("templates/dashboards/exporter-health.json#/widgets/0/definition/requests/0/q: no metric found in `clawdstrike.exporter.events.sent` (expected `aggregator:metric{filter}`)");
}

#[test]
fn rule_message_tags_in_catalogue() {
    Fixture::new()
        .mutate(CRITICAL, |m| set(m, "/message", json!("[[notify.critical]] team {{log.tags.team}}")))
        .assert_only("templates/monitors/critical-policy-violation.json#/message: `{{log.tags.team}}`: `team` is not a tag we set");
}

#[test]
fn rule_dashboard_tags_valid() {
    Fixture::new().mutate(POSTURE, |d| set(d, "/tags", json!(["team:security", "team:Sec Ops"]))).assert_only(
        "templates/dashboards/security-posture.json#/tags/1: tag `team:Sec Ops` is not a valid Datadog tag (lowercase letters, digits and `_-:./`, starting with a letter, at most 200 characters); Datadog would rewrite it",
    );
}

#[test]
fn rule_widget_needs_type() {
    Fixture::new()
        .mutate(POSTURE, |d| {
            d["widgets"][0]["definition"].as_object_mut().unwrap().remove("type");
        })
        .assert_only("templates/dashboards/security-posture.json#/widgets/0/definition: missing field `type` (the widget type)");
}

#[test]
fn rule_values_env_is_a_tag_value() {
    Fixture::new()
        .mutate("values/staging.yaml", |v| set(v, "/env", json!("Staging Env")))
        .assert_only("templates/values/staging.yaml#/env: `Staging Env` is not a valid tag value (lowercase letters, digits, `_-./`)");
}

#[test]
fn rule_values_tags_valid() {
    Fixture::new().mutate("values/staging.yaml", |v| set(v, "/tags/0", json!("Team:Security"))).assert_only(
        "templates/values/staging.yaml#/tags/0: tag `Team:Security` is not a valid Datadog tag (lowercase letters, digits and `_-:./`, starting with a letter, at most 200 characters); Datadog would rewrite it",
    );
}

#[test]
fn rule_at_least_one_values_file() {
    let fixture = Fixture::new();
    for name in ["production.yaml", "staging.yaml"] {
        std::fs::remove_file(fixture.dir.join("values").join(name)).unwrap();
    }
    fixture.assert_only("templates/values#: no values file: add values/<environment>.yaml");
}

#[test]
fn rule_compliance_frameworks_known() {
    Fixture::new()
        .mutate("compliance.yaml", |c| set(c, "/guards/secret_leak/pci", json!(["10.2"])))
        .assert_only("templates/compliance.yaml#/guards/secret_leak/pci: unknown framework `pci`; defined: soc2, gdpr, hipaa");
}

#[test]
fn rule_compliance_guard_names() {
    Fixture::new().mutate("compliance.yaml", |c| set(c, "/guards/Secret Leak", json!({ "soc2": ["CC6.1"] }))).assert_only(
        "templates/compliance.yaml#/guards/Secret Leak: guard `Secret Leak` is not a guard name (lowercase letters, digits and `_`)",
    );
}

#[test]
fn rule_compliance_file_strict() {
    Fixture::new()
        .mutate("compliance.yaml", |c| set(c, "/frameworks/0/controls/0/name", json!("x")))
        .assert_only_starting("templates/compliance.yaml#/frameworks/0/controls/0/name: unknown field `name`, expected `id` or `title`");
}

#[test]
fn rule_template_ids_unique() {
    let fixture = Fixture::new();
    let doc = super::load_document(&fixture.dir.join(DENIALS)).unwrap();
    fixture.write(
        "monitors/high-denial-rate.yaml",
        &serde_yaml_ng::to_string(&doc).unwrap(),
    );
    fixture.assert_only(
        "templates/monitors/high-denial-rate.yaml#: another file has the same name: template ids (`monitors/high-denial-rate`) must be unique",
    );
}

#[test]
fn rule_message_group_variables_are_grouped_by() {
    Fixture::new().mutate(DENIALS, |m| set(m, "/message", json!("[[notify.critical]] tenant {{tenant.name}}"))).assert_only(
        "templates/monitors/high-denial-rate.json#/message: `{{tenant.name}}`: the query does not group by `tenant` (it groups by: guard), so Datadog would render it empty",
    );
}

#[test]
fn the_command_exits_non_zero_on_problems() {
    use std::process::ExitCode;
    let fixture = Fixture::new();
    let dir = fixture.dir.display().to_string();
    let run = |args: &[&str]| super::run(&args.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>());
    assert_eq!(
        run(&["--dir", &dir]),
        ExitCode::SUCCESS,
        "no subcommand means check"
    );
    assert_eq!(run(&["check", "--dir", &dir]), ExitCode::SUCCESS);
    fixture.mutate(DENIALS, |m| {
        set(m, "/options/thresholds/warning", json!(150))
    });
    assert_eq!(run(&["--dir", &dir]), ExitCode::FAILURE);
    assert_eq!(run(&["check", "--no-such-flag"]), ExitCode::from(2));
    let structural = fixture
        .dir
        .join("monitors/egress-blocked-burst.json")
        .display()
        .to_string();
    assert_eq!(
        run(&["check", "--structural", &structural]),
        ExitCode::FAILURE,
        "unrendered placeholders are not valid tags"
    );
}
