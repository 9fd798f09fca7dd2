//! Properties of the log-item mapping over the schema crate's strategies.

use std::sync::Arc;

use clawdstrike_datadog::catalogue::{LOG_TAGS, RESERVED_TAG_KEYS, STATUS_VALUES};
use clawdstrike_datadog::encode::{RequestLimits, pack};
use clawdstrike_datadog::format::{FormatOptions, LogFormatter, MAX_ITEM_BYTES, Scratch};
use clawdstrike_datadog::tags::{is_valid_tag, tag_key};
use clawdstrike_export::Record;
use clawdstrike_schema::SecurityEvent;
use clawdstrike_schema::strategies::security_event;
use proptest::prelude::*;

fn formatter() -> LogFormatter {
    LogFormatter::new(FormatOptions {
        hostname: "node-7".into(),
        env: Some("prod".into()),
        tags: vec!["team:security".into(), "Bad Tag,with:comma".into()],
        ..FormatOptions::default()
    })
}

fn item(f: &LogFormatter, event: &SecurityEvent) -> (serde_json::Value, usize) {
    let mut out = Vec::new();
    let info = f.write_item(
        &Record::new(event.clone()),
        &mut Scratch::default(),
        &mut out,
    );
    assert_eq!(info.bytes, out.len());
    (
        serde_json::from_slice(&out).expect("a log item is valid JSON"),
        out.len(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_item_is_within_1mb_with_valid_tags_and_status(event in security_event()) {
        let f = formatter();
        let (item, len) = item(&f, &event);
        prop_assert!(len <= MAX_ITEM_BYTES);
        prop_assert_eq!(item["timestamp"].as_str().unwrap(), event.timestamp.to_rfc3339_millis());
        let status = item["status"].as_str().unwrap();
        prop_assert!(STATUS_VALUES.contains(&status), "status {status}");
        let ddtags = item["ddtags"].as_str().unwrap();
        for tag in ddtags.split(',') {
            prop_assert!(is_valid_tag(tag), "invalid tag {tag:?} in {ddtags:?}");
        }
    }

    #[test]
    fn no_label_can_forge_or_override_a_tag(event in security_event()) {
        let f = formatter();
        let (item, _) = item(&f, &event);
        let tags: Vec<&str> = item["ddtags"].as_str().unwrap().split(',').collect();
        // Exactly one of each of our own tags, with the event's true value.
        for key in ["event_type", "guard", "severity", "outcome", "allowed", "resource_type"] {
            let ours: Vec<_> = tags.iter().filter(|t| tag_key(t) == key).collect();
            prop_assert_eq!(ours.len(), 1, "tag {} appears {:?}", key, ours);
        }
        let allowed = format!("allowed:{}", event.decision.allowed);
        prop_assert!(tags.contains(&allowed.as_str()));
        let severity = format!("severity:{}", event.decision.severity);
        prop_assert!(tags.contains(&severity.as_str()));
        // Reserved keys appear at most once (env), and never from a label.
        for key in RESERVED_TAG_KEYS {
            prop_assert!(tags.iter().filter(|t| tag_key(t) == *key).count() <= 1, "{key} twice in {tags:?}");
        }
        // Every tag is ours, configured, or a label's (possibly renamed); none has a comma.
        let label_tags = tags.iter().filter(|t| !LOG_TAGS.iter().any(|k| k.key == tag_key(t)) && !t.starts_with("team:") && !t.starts_with("bad_tag_with:"));
        prop_assert!(label_tags.count() <= event.labels.len());
    }

    #[test]
    fn requests_respect_the_intake_limits(events in proptest::collection::vec(security_event(), 1..12), max_items in 1usize..5) {
        let f = formatter();
        let batch: Vec<Record> = events.into_iter().map(Record::new).collect();
        let indices: Vec<usize> = (0..batch.len()).collect();
        let limits = RequestLimits { max_items, max_bytes: 1_000_002 };
        let payloads = pack(&f, &batch, &indices, limits);
        let mut seen = Vec::new();
        for p in &payloads {
            prop_assert!(p.indices.len() <= max_items);
            prop_assert!(p.json.len() <= 1_000_002);
            let items: Vec<serde_json::Value> = serde_json::from_slice(&p.json).unwrap();
            prop_assert_eq!(items.len(), p.indices.len());
            seen.extend_from_slice(&p.indices);
        }
        prop_assert_eq!(seen, indices);
    }
}

#[test]
fn a_huge_event_is_truncated_visibly_below_1mb() {
    let f = formatter();
    let big = "A".repeat(3_000_000);
    let mut event = SecurityEvent::builder(clawdstrike_schema::EventType::GuardBlock)
        .agent_id("agent-1")
        .session_id("s")
        .action("shell")
        .denied(
            "shell_command",
            clawdstrike_schema::Severity::High,
            big.clone(),
        )
        .resource(clawdstrike_schema::ResourceType::Process, big.clone())
        .metadata(serde_json::json!({ "blob": big }))
        .build()
        .unwrap();
    for i in 0..5_000 {
        event.labels.insert(format!("k{i}"), "v".repeat(100));
    }
    let (item, len) = item(&f, &event);
    assert!(len <= MAX_ITEM_BYTES, "{len}");
    assert_eq!(item["truncated"], true);
    assert_eq!(item["metadata"]["truncated"], true);
    assert_eq!(item["metadata"]["original_bytes"], 3_000_011);
    assert!(item["security"]["reason"].as_str().unwrap().len() < big.len());
}

#[test]
fn large_metadata_alone_becomes_a_preview() {
    let f = formatter();
    let event = SecurityEvent::builder(clawdstrike_schema::EventType::GuardBlock)
        .agent_id("a")
        .session_id("s")
        .action("shell")
        .resource(clawdstrike_schema::ResourceType::Process, "ls")
        .metadata(serde_json::json!({ "blob": "x".repeat(100_000) }))
        .build()
        .unwrap();
    let (item, _) = item(&f, &event);
    assert_eq!(item["truncated"], true);
    assert_eq!(item["metadata"]["truncated"], true);
    assert!(
        item["metadata"]["preview"]
            .as_str()
            .unwrap()
            .starts_with("{\"blob\":\"xxx")
    );
    // Everything else is intact.
    assert_eq!(item["resource"]["name"], "ls");
}

#[test]
fn shared_records_format_identically() {
    let f = formatter();
    let event = Arc::new(
        SecurityEvent::builder(clawdstrike_schema::EventType::PolicyAllow)
            .agent_id("a")
            .session_id("s")
            .action("egress")
            .resource(clawdstrike_schema::ResourceType::Network, "example.com")
            .build()
            .unwrap(),
    );
    let mut a = Vec::new();
    let mut b = Vec::new();
    f.write_item(
        &Record::new(Arc::clone(&event)),
        &mut Scratch::default(),
        &mut a,
    );
    f.write_item(&Record::new(event), &mut Scratch::default(), &mut b);
    assert_eq!(a, b);
}

/// A configured `version:` or `tenant:` tag is kept unless the formatter writes that key
/// itself (`DD_VERSION` set, the event has a tenant): it used to be dropped whenever the key
/// was one the formatter may write.
#[test]
fn configured_tags_give_way_only_to_keys_actually_written() {
    let configured = |version: Option<&str>| {
        LogFormatter::new(FormatOptions {
            version: version.map(str::to_owned),
            tags: vec!["version:1.2.3".into(), "tenant:acme".into()],
            ..FormatOptions::default()
        })
    };
    let base =
        clawdstrike_schema::SecurityEvent::builder(clawdstrike_schema::EventType::GuardBlock)
            .agent_id("a")
            .session_id("s")
            .action("shell")
            .resource(clawdstrike_schema::ResourceType::Process, "ls");
    let without_tenant = base.clone().build().unwrap();
    let with_tenant = base.tenant("globex").build().unwrap();
    let tags = |f: &LogFormatter, e: &SecurityEvent| -> Vec<String> {
        f.ddtags(e).split(',').map(str::to_owned).collect()
    };
    let t = tags(&configured(None), &without_tenant);
    assert!(t.contains(&"version:1.2.3".to_owned()), "{t:?}");
    assert!(t.contains(&"tenant:acme".to_owned()), "{t:?}");
    let t = tags(&configured(Some("9.9")), &with_tenant);
    assert!(t.contains(&"version:9.9".to_owned()), "{t:?}");
    assert!(!t.contains(&"version:1.2.3".to_owned()), "{t:?}");
    assert!(t.contains(&"tenant:globex".to_owned()), "{t:?}");
    assert!(!t.contains(&"tenant:acme".to_owned()), "{t:?}");
}
