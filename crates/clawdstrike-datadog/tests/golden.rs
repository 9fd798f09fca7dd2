//! Golden tests: each fixture event maps to a reviewed expected log item
//! (`tests/golden/log-items.json`). Regenerate deliberately with `UPDATE_GOLDEN=1` and review
//! the diff: these items are what dashboards, monitors and rules query.

use std::path::PathBuf;

use clawdstrike_datadog::catalogue::{LOG_ATTRIBUTES, RESERVED_KEYS, find_attribute};
use clawdstrike_datadog::format::{FormatOptions, LogFormatter, Scratch};
use clawdstrike_export::{Record, TraceContext};
use clawdstrike_schema::{NdjsonReader, NdjsonRecord};

fn shared() -> PathBuf {
    std::env::var_os("CLAWDSTRIKE_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared"))
}

fn items() -> Vec<serde_json::Value> {
    let file =
        std::fs::File::open(shared().join("fixtures/events.ndjson")).expect("shared fixtures");
    let formatter = LogFormatter::new(FormatOptions {
        hostname: "node-7".into(),
        env: Some("prod".into()),
        version: Some("1.2.3".into()),
        tags: vec!["team:platform".into(), "region:us".into()],
        ..FormatOptions::default()
    });
    let mut scratch = Scratch::default();
    NdjsonReader::new(std::io::BufReader::new(file))
        .enumerate()
        .map(|(i, r)| {
            let NdjsonRecord::Event(decoded) = r.unwrap() else {
                panic!("fixture line {} rejected", i + 1)
            };
            let mut record = Record::new(decoded.event);
            // Every fifth event carries a trace, to pin the APM attributes too.
            if i % 5 == 0 {
                record = record.with_trace(TraceContext {
                    trace_id: 0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736 + i as u128,
                    span_id: 0x00f0_67aa_0ba9_02b7,
                    sampled: true,
                });
            }
            let mut out = Vec::new();
            formatter.write_item(&record, &mut scratch, &mut out);
            serde_json::from_slice(&out).unwrap()
        })
        .collect()
}

#[test]
fn every_fixture_event_maps_to_its_reviewed_log_item() {
    let golden_path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/log-items.json");
    let actual = items();
    assert_eq!(actual.len(), 42);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(
            &golden_path,
            serde_json::to_string_pretty(&actual).unwrap() + "\n",
        )
        .unwrap();
    }
    let expected: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&golden_path).expect("golden file")).unwrap();
    for (i, (a, e)) in actual.iter().zip(&expected).enumerate() {
        assert_eq!(a, e, "fixture line {}", i + 1);
    }
    assert_eq!(actual.len(), expected.len());
}

/// Collects every leaf path of a JSON object (`security.guard`).
fn leaf_paths(value: &serde_json::Value, prefix: &str, out: &mut Vec<String>) {
    match value.as_object() {
        Some(map) if !prefix.starts_with("metadata") && !prefix.starts_with("labels") => {
            for (k, v) in map {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaf_paths(v, &path, out);
            }
        }
        _ => out.push(prefix.to_owned()),
    }
}

#[test]
fn the_formatter_emits_exactly_the_catalogue() {
    let mut seen = std::collections::BTreeSet::new();
    for item in items() {
        let mut paths = Vec::new();
        leaf_paths(&item, "", &mut paths);
        for path in paths {
            if RESERVED_KEYS.contains(&path.as_str()) {
                continue;
            }
            let attr = find_attribute(&path)
                .unwrap_or_else(|| panic!("`{path}` is emitted but not in the catalogue"));
            seen.insert(attr.path);
        }
    }
    for attr in LOG_ATTRIBUTES.iter().filter(|a| a.always) {
        assert!(
            seen.contains(attr.path),
            "catalogue says `{}` is always present, but no item has it",
            attr.path
        );
    }
}
