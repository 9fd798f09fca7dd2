//! `proptest` strategies that generate valid — and deliberately nasty — events.
//!
//! Enabled by the `proptest` feature. Exporter teams use [`security_event`] to test their own
//! mappings: every generated event passes [`SecurityEvent::validate`] and round-trips through
//! JSON, yet the values include unicode, very long strings, deeply nested `metadata`, label keys
//! and values with commas, colons and spaces, every enum value, and absent optionals.
//!
//! ```
//! use clawdstrike_schema::strategies::security_event;
//! use proptest::test_runner::{Config, TestRunner};
//!
//! // In a test crate you would write `proptest! { #[test] fn ... (event in security_event()) }`.
//! let mut runner = TestRunner::new(Config::with_cases(16));
//! runner
//!     .run(&security_event(), |event| {
//!         assert!(event.validate().is_ok());
//!         Ok(())
//!     })
//!     .unwrap();
//! ```

use proptest::collection::{btree_map, vec};
use proptest::option;
use proptest::prelude::*;
use uuid::Uuid;

use crate::{
    AgentInfo, Decision, EventCategory, EventType, IndicatorType, Outcome, ResourceInfo,
    ResourceType, SecurityEvent, SessionInfo, Severity, ThreatIndicator, ThreatInfo, Timestamp,
};

fn one_of<T: Copy + std::fmt::Debug + 'static>(all: &'static [T]) -> impl Strategy<Value = T> {
    proptest::sample::select(all)
}

/// Every [`EventType`].
pub fn event_type() -> impl Strategy<Value = EventType> {
    one_of(EventType::ALL)
}

/// Every [`EventCategory`].
pub fn event_category() -> impl Strategy<Value = EventCategory> {
    one_of(EventCategory::ALL)
}

/// Every [`Severity`].
pub fn severity() -> impl Strategy<Value = Severity> {
    one_of(Severity::ALL)
}

/// Every [`Outcome`].
pub fn outcome() -> impl Strategy<Value = Outcome> {
    one_of(Outcome::ALL)
}

/// Every [`ResourceType`].
pub fn resource_type() -> impl Strategy<Value = ResourceType> {
    one_of(ResourceType::ALL)
}

/// Strings a real producer might send, and strings that break naive code: empty, plain ASCII,
/// any unicode (including control characters and astral planes), separators that matter to
/// Datadog tags (`,` `:` space `|` `#`), and long ones (up to 8 KiB).
pub fn nasty_string() -> impl Strategy<Value = String> {
    prop_oneof![
        9 => short_nasty_string(),
        1 => (any::<char>(), 1_000usize..8_192).prop_map(|(c, n)| c.to_string().repeat((n / c.len_utf8()).max(1))),
    ]
}

/// Like [`nasty_string`] without the long ones (at most 64 characters): for keys and for
/// values inside nested `metadata`, so generated events stay a realistic size.
pub fn short_nasty_string() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z_]{1,16}",
        3 => "\\PC{0,16}",
        2 => any::<String>().prop_map(|s| s.chars().take(64).collect()),
        2 => "[ ,:|#=/\\\\\"'\\t a-zA-Z0-9]{0,24}",
        1 => Just("[REDACTED]".to_owned()),
    ]
}

/// A string that is not blank (required fields): a nasty string with a non-space character
/// added when it would be blank.
pub fn non_blank_string() -> impl Strategy<Value = String> {
    nasty_string().prop_map(|s| {
        if s.trim().is_empty() {
            format!("x{s}")
        } else {
            s
        }
    })
}

/// Timestamps from 1970 to 2200, with arbitrary nanoseconds.
pub fn timestamp() -> impl Strategy<Value = Timestamp> {
    (0i64..7_258_118_400, 0u32..1_000_000_000)
        .prop_map(|(secs, nanos)| Timestamp::from_unix(secs, nanos).expect("in range"))
}

/// Any JSON value, nested up to 6 levels and up to 64 elements per container, plus deep
/// single-child chains of up to 100 levels.
pub fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
            .prop_map(Value::from),
        short_nasty_string().prop_map(Value::String),
    ];
    let nested = leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..8).prop_map(Value::Array),
            btree_map(short_nasty_string(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    prop_oneof![
        8 => nested,
        1 => (1usize..100, short_nasty_string()).prop_map(|(depth, key)| {
            let mut v = Value::from("bottom");
            for _ in 0..depth {
                let mut map = serde_json::Map::new();
                map.insert(key.clone(), v);
                v = Value::Object(map);
            }
            v
        }),
    ]
}

/// `metadata`: usually an object, sometimes any JSON (the schema allows it).
pub fn metadata() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        1 => Just(serde_json::json!({})),
        6 => btree_map(short_nasty_string(), json_value(), 0..6).prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        1 => json_value(),
    ]
}

/// Labels with keys and values that contain commas, colons, spaces and unicode.
pub fn labels() -> impl Strategy<Value = crate::Labels> {
    let key = prop_oneof![
        3 => "[a-z][a-z_-]{0,12}",
        1 => Just("env".to_owned()),
        1 => Just("service".to_owned()),
        1 => Just("host".to_owned()),
        1 => Just("allowed".to_owned()),
        2 => nasty_string(),
    ];
    let value = prop_oneof![
        3 => "[a-z0-9_-]{0,12}",
        1 => Just("x,allowed:true".to_owned()),
        1 => Just("a b:c".to_owned()),
        2 => nasty_string(),
    ];
    btree_map(key, value, 0..6).prop_map(crate::Labels::from)
}

fn threat() -> impl Strategy<Value = ThreatInfo> {
    let indicator =
        (one_of(IndicatorType::ALL), nasty_string()).prop_map(|(indicator_type, value)| {
            ThreatIndicator {
                indicator_type,
                value,
            }
        });
    (
        option::of(indicator),
        option::of("TA[0-9]{4}"),
        option::of("T[0-9]{4}(\\.[0-9]{3})?"),
    )
        .prop_map(|(indicator, tactic, technique)| ThreatInfo {
            indicator,
            tactic,
            technique,
        })
}

fn guard() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::sample::select(&[
            "forbidden_path", "path_allowlist", "egress_allowlist", "secret_leak",
            "patch_integrity", "mcp_tool", "prompt_injection", "jailbreak_detection",
            "shell_command", "computer_use", "posture", "posture_budget", "engine", "custom",
        ][..]).prop_map(str::to_owned),
        1 => nasty_string(),
    ]
}

/// A valid [`SecurityEvent`] (it passes [`SecurityEvent::validate`]).
pub fn security_event() -> impl Strategy<Value = SecurityEvent> {
    let ids = (
        any::<u128>().prop_map(Uuid::from_u128),
        event_type(),
        event_category(),
        timestamp(),
        option::of(timestamp()),
        outcome(),
        non_blank_string(),
    );
    let agent = (
        non_blank_string(),
        nasty_string(),
        nasty_string(),
        nasty_string(),
    )
        .prop_map(|(id, name, version, agent_type)| AgentInfo {
            id,
            name,
            version,
            agent_type,
        });
    let session = (
        non_blank_string(),
        option::of(nasty_string()),
        option::of(nasty_string()),
        option::of(nasty_string()),
    )
        .prop_map(|(id, user_id, tenant_id, environment)| SessionInfo {
            id,
            user_id,
            tenant_id,
            environment,
        });
    let decision = (
        any::<bool>(),
        guard(),
        severity(),
        nasty_string(),
        option::of("0x[0-9a-f]{64}"),
        option::of(nasty_string()),
    )
        .prop_map(
            |(allowed, guard, severity, reason, policy_hash, ruleset)| Decision {
                allowed,
                guard,
                severity,
                reason,
                policy_hash,
                ruleset,
            },
        );
    let resource = (
        resource_type(),
        non_blank_string(),
        option::of(nasty_string()),
        option::of(nasty_string()),
        option::of(any::<u16>()),
    )
        .prop_map(|(resource_type, name, path, host, port)| ResourceInfo {
            resource_type,
            name,
            path,
            host,
            port,
        });
    (
        ids,
        agent,
        session,
        threat(),
        decision,
        resource,
        metadata(),
        labels(),
    )
        .prop_map(
            |(
                (event_id, event_type, event_category, timestamp, ingested_at, outcome, action),
                agent,
                session,
                threat,
                decision,
                resource,
                metadata,
                labels,
            )| {
                SecurityEvent {
                    schema_version: crate::SCHEMA_VERSION.to_owned(),
                    event_id,
                    event_type,
                    event_category,
                    timestamp,
                    ingested_at,
                    agent,
                    session,
                    outcome,
                    action,
                    threat,
                    decision,
                    resource,
                    metadata,
                    labels,
                }
            },
        )
}
