//! The exporter against the fake intake over loopback: volume, limits, codecs, faults, keys.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use clawdstrike_datadog::encode::Codec;
use clawdstrike_export::{Exporter, Health};
use clawdstrike_fakeintake::{Endpoint, FaultAction};
use clawdstrike_keys::{KeyHolder, RefreshOptions, SecretString};
use common::*;

const DEADLINE: Duration = Duration::from_secs(60);

fn ids(events: &[clawdstrike_schema::SecurityEvent]) -> BTreeSet<String> {
    events.iter().map(|e| e.event_id.to_string()).collect()
}

/// Issue 5's volume run and issue 6's metric accounting in one pass (100,000 events is the
/// slowest test here; running it once keeps CI short).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_thousand_events_arrive_exactly_once_and_metrics_count_them_exactly() {
    let h = Harness::start(Codec::Zstd, static_key(KEY_A), fast_pipeline()).await;
    let pipeline = h.pipeline.clone();
    let stats: clawdstrike_datadog::metrics::StatsSource = std::sync::Arc::new(move || {
        pipeline
            .stats()
            .into_iter()
            .find(|s| s.name == "datadog_test")
    });
    let mut resolved = resolved(&h.intake, Codec::Zstd);
    resolved.metrics.flush_interval_ms = 200;
    let reporter =
        clawdstrike_datadog::metrics::MetricsReporter::for_exporter(&h.exporter, &resolved, stats)
            .unwrap()
            .spawn();
    let events = events(100_000);
    h.submit_all(&events).await;
    let reports = h.pipeline.shutdown(DEADLINE).await;
    let flushed = reporter.shutdown().await;
    assert_eq!(flushed.dropped, 0);
    assert_eq!(reports[0].delivered, 100_000, "{reports:?}");
    assert_eq!(reports[0].dead_lettered + reports[0].left_behind, 0);
    assert_eq!(h.intake.unique_event_ids(), 100_000);
    assert!(
        h.intake.duplicates().is_empty(),
        "duplicates: {}",
        h.intake.duplicates().len()
    );
    let logs: Vec<_> = h
        .intake
        .requests()
        .into_iter()
        .filter(|r| r.endpoint == Endpoint::Logs)
        .collect();
    assert!(!logs.is_empty());
    for r in &logs {
        assert!(r.items.unwrap() <= 1_000, "{} items", r.items.unwrap());
        assert!(r.uncompressed_bytes.unwrap() <= 5_000_000);
        assert_eq!(r.content_encoding.as_deref(), Some("zstd"));
        assert_eq!(r.status, Some(202));
    }
    assert!(h.intake.log_items().iter().all(|i| !i.truncated_by_intake));
    let snapshot = h.exporter.transport_stats().snapshot();
    assert_eq!(snapshot.events_sent, 100_000);

    // Metric counts equal the events delivered, per guard, severity and outcome, exactly.
    let sum = |metric: &str, tag: &str| h.intake.metric_sum(metric, &[tag]) as u64;
    assert_eq!(
        h.intake.metric_sum("clawdstrike.events.total", &[]) as u64,
        100_000
    );
    let mut by: std::collections::BTreeMap<String, u64> = Default::default();
    for e in &events {
        *by.entry(format!("guard:{}", e.decision.guard)).or_default() += 1;
        *by.entry(format!("severity:{}", e.decision.severity))
            .or_default() += 1;
        *by.entry(format!("outcome:{}", e.outcome)).or_default() += 1;
    }
    for (tag, expected) in &by {
        assert_eq!(sum("clawdstrike.events.total", tag), *expected, "{tag}");
    }
    let denied = events.iter().filter(|e| !e.decision.allowed).count() as u64;
    assert_eq!(
        h.intake.metric_sum("clawdstrike.events.denied", &[]) as u64,
        denied
    );
    assert_eq!(
        h.intake.metric_sum("clawdstrike.events.allowed", &[]) as u64,
        100_000 - denied
    );
    assert_eq!(
        h.intake.metric_sum(
            "clawdstrike.exporter.events.sent",
            &["exporter:datadog_test"]
        ) as u64,
        100_000
    );
    // Every series request stayed within Datadog's limits.
    for r in h
        .intake
        .requests()
        .iter()
        .filter(|r| r.endpoint == Endpoint::Series)
    {
        assert!(r.compressed_bytes <= 512_000 && r.uncompressed_bytes.unwrap() <= 5_242_880);
        assert_eq!(r.status, Some(202));
    }
    assert!(
        h.intake
            .series()
            .iter()
            .any(|s| s.metric == "clawdstrike.exporter.queue.depth")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_codec_round_trips() {
    for codec in [Codec::None, Codec::Gzip, Codec::Deflate, Codec::Zstd] {
        let h = Harness::start(codec, static_key(KEY_A), fast_pipeline()).await;
        let events = events(500);
        h.submit_all(&events).await;
        let reports = h.pipeline.shutdown(DEADLINE).await;
        assert_eq!(reports[0].delivered, 500, "{codec:?}");
        let got: BTreeSet<String> = h
            .intake
            .log_items()
            .iter()
            .map(|i| i.value["event_id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(got, ids(&events), "{codec:?}");
        // The item that arrived is byte-for-byte the one we formatted.
        let first = h.intake.log_items_with_id(&events[0].event_id.to_string());
        assert_eq!(
            first[0].value["message"],
            format!(
                "[{}] BLOCKED: {}",
                events[0].decision.guard, events[0].decision.reason
            )
        );
        assert_eq!(first[0].value["hostname"], "test-host");
        for r in h
            .intake
            .requests()
            .iter()
            .filter(|r| r.endpoint == Endpoint::Logs)
        {
            assert_eq!(
                r.content_encoding.as_deref(),
                codec.content_encoding(),
                "{codec:?}"
            );
            assert!(r.headers.iter().any(
                |(k, v)| k.eq_ignore_ascii_case("dd-evp-origin") && v == "clawdstrike-datadog"
            ));
        }
    }
}

/// Each transient fault, injected on the first requests: zero events lost, none dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_faults_lose_nothing() {
    let cases: Vec<(&str, FaultAction)> = vec![
        ("408", FaultAction::status(408)),
        ("429", FaultAction::status(429)),
        (
            "429 + Retry-After",
            FaultAction::status_with_retry_after(429, 1),
        ),
        ("500", FaultAction::status(500)),
        ("502", FaultAction::status(502)),
        ("503", FaultAction::status(503)),
        ("504", FaultAction::status(504)),
        ("reset", FaultAction::Reset),
        ("timeout", FaultAction::Stall),
        ("413", FaultAction::status(413)),
    ];
    for (name, action) in cases {
        let h = Harness::start(
            Codec::Gzip,
            static_key(KEY_A),
            fast_pipeline().with_max_batch_events(200),
        )
        .await;
        h.intake.fail_next(Endpoint::Logs, 3, action);
        let events = events(1_000);
        h.submit_all(&events).await;
        let reports = h.pipeline.shutdown(DEADLINE).await;
        h.intake.release_stalled();
        assert_eq!(reports[0].delivered, 1_000, "{name}: {reports:?}");
        assert_eq!(h.intake.unique_event_ids(), 1_000, "{name}");
        assert!(h.dead_letters().is_empty(), "{name}");
        let faulted = h.intake.stats().faults_injected;
        assert_eq!(faulted, 3, "{name}: the faults were consumed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_400_is_dead_lettered_with_the_server_reason() {
    let h = Harness::start(
        Codec::Zstd,
        static_key(KEY_A),
        fast_pipeline().with_max_batch_events(50),
    )
    .await;
    h.intake.fail_next(
        Endpoint::Logs,
        1,
        FaultAction::status_with_body(400, "{\"errors\":[\"bad payload\"]}"),
    );
    let events = events(50);
    h.submit_all(&events).await;
    let reports = h.pipeline.shutdown(DEADLINE).await;
    assert_eq!(reports[0].dead_lettered, 50, "{reports:?}");
    let dlq = h.dead_letters();
    assert_eq!(dlq.len(), 50);
    for d in &dlq {
        let error = d["error"].as_str().unwrap();
        assert!(
            error.starts_with("HTTP 400") && error.contains("bad payload"),
            "{error}"
        );
        assert_eq!(d["retryable"], false);
        assert_eq!(d["exporter"], "datadog_test");
    }
    let dead: BTreeSet<String> = dlq
        .iter()
        .map(|d| d["event"]["event_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(dead, ids(&events));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_413_splits_until_the_parts_fit_and_a_lone_oversized_event_is_dead_lettered() {
    let h = Harness::start(
        Codec::Zstd,
        static_key(KEY_A),
        fast_pipeline().with_max_batch_events(64),
    )
    .await;
    // 64 → 32+32 → ... : seven 413s in a row force splitting down to a single event.
    h.intake
        .fail_next(Endpoint::Logs, 7, FaultAction::status(413));
    let events = events(64);
    h.submit_all(&events).await;
    let reports = h.pipeline.shutdown(DEADLINE).await;
    let r = &reports[0];
    assert_eq!(r.delivered + r.dead_lettered, 64, "{r:?}");
    assert_eq!(
        r.dead_lettered, 1,
        "only the event that was still refused alone is dead-lettered"
    );
    assert!(
        h.dead_letters()[0]["error"]
            .as_str()
            .unwrap()
            .starts_with("HTTP 413: a single event")
    );
    assert_eq!(h.intake.unique_event_ids(), 63);
}

/// A key file holding `KEY_A` in `dir`, and a holder reading it that may refresh at any time
/// (the tests rotate the key by rewriting the file).
async fn key_file_with_a(dir: &tempfile::TempDir) -> (std::path::PathBuf, KeyHolder) {
    let key_file = dir.path().join("api-key");
    std::fs::write(&key_file, format!("{KEY_A}\n")).unwrap();
    let holder = KeyHolder::from_source(
        clawdstrike_keys::KeySource::File(key_file.clone()),
        RefreshOptions::default().with_min_interval(Duration::ZERO),
    )
    .await
    .unwrap();
    (key_file, holder)
}

/// Rotates to `KEY_B`: Datadog now accepts only B, and the key file holds B.
fn rotate_to_b(intake: &clawdstrike_fakeintake::FakeIntake, key_file: &std::path::Path) {
    intake.set_api_keys([SecretString::from(KEY_B)]);
    std::fs::write(key_file, format!("{KEY_B}\n")).unwrap();
}

/// Security counts are tallied while a request is encoded and added only on its 202: through
/// a 413 split, a 503 retried later and a 403 answered by a key refresh, they equal the events
/// delivered, exactly: no event counted twice (a tally added on a failure, or a split half
/// tallying the whole batch) and none lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_counts_equal_the_events_delivered_through_413_503_and_403() {
    let dir = tempfile::tempdir().unwrap();
    let (key_file, holder) = key_file_with_a(&dir).await;
    let h = Harness::start(
        Codec::Zstd,
        holder,
        fast_pipeline().with_max_batch_events(64),
    )
    .await;
    // The batch of 64 gets a 413 (split in halves); the first half a 503 (retried later); the
    // second half finds the key rotated: 403, refresh, the same request again with key B.
    h.intake
        .fail_next(Endpoint::Logs, 1, FaultAction::status(413));
    h.intake
        .fail_next(Endpoint::Logs, 1, FaultAction::status(503));
    rotate_to_b(&h.intake, &key_file);
    let events = events(64);
    h.submit_all(&events).await;
    let reports = h.pipeline.shutdown(DEADLINE).await;
    assert_eq!(reports[0].delivered, 64, "{reports:?}");
    assert_eq!(h.intake.unique_event_ids(), 64);
    let statuses = h.intake.stats().responses_by_status;
    for status in [413, 503, 403] {
        assert!(
            statuses.get(&status).copied().unwrap_or(0) >= 1,
            "{statuses:?}"
        );
    }

    let points = h
        .exporter
        .security_aggregator()
        .expect("security metrics are on by default")
        .take("clawdstrike", &[]);
    let sum = |metric: &str, tag: Option<&str>| -> u64 {
        points
            .iter()
            .filter(|p| p.metric == metric && tag.is_none_or(|t| p.tags.iter().any(|x| x == t)))
            .map(|p| p.value as u64)
            .sum()
    };
    assert_eq!(sum("clawdstrike.events.total", None), 64, "{points:?}");
    let denied = events.iter().filter(|e| !e.decision.allowed).count() as u64;
    assert_eq!(sum("clawdstrike.events.denied", None), denied);
    assert_eq!(sum("clawdstrike.events.allowed", None), 64 - denied);
    let mut by_guard: std::collections::BTreeMap<String, u64> = Default::default();
    for e in &events {
        *by_guard
            .entry(format!("guard:{}", e.decision.guard))
            .or_default() += 1;
    }
    for (tag, expected) in &by_guard {
        assert_eq!(
            sum("clawdstrike.events.total", Some(tag)),
            *expected,
            "{tag}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_403_after_rotation_is_delivered_with_the_new_key() {
    let dir = tempfile::tempdir().unwrap();
    let (key_file, holder) = key_file_with_a(&dir).await;
    let h = Harness::start(Codec::Zstd, holder.clone(), fast_pipeline()).await;
    rotate_to_b(&h.intake, &key_file);
    let events = events(2_000);
    h.submit_all(&events).await;
    let reports = h.pipeline.shutdown(DEADLINE).await;
    assert_eq!(reports[0].delivered, 2_000, "{reports:?}");
    assert!(h.dead_letters().is_empty());
    assert_eq!(holder.current().expose(), KEY_B);
    assert!(
        h.intake
            .stats()
            .responses_by_status
            .get(&403)
            .copied()
            .unwrap_or(0)
            >= 1
    );
    assert_eq!(h.exporter.health_check().await, Health::Healthy);
}

/// Datadog rejects the key while the key store cannot be read (a file briefly gone, Vault
/// sealed, the Kubernetes API down): whether the store holds a new key is not known, so the
/// events are retried, and go with the key the store holds next. They used to be dead-lettered
/// as if the key were revoked, and the exporter sent nothing for a minute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_403_while_the_key_store_cannot_be_read_is_retried_not_dead_lettered() {
    a_403_while_the_key_store_answers_badly_is_retried(|key_file| {
        std::fs::remove_file(key_file).unwrap();
    })
    .await;
}

/// The same when the store answers with a value that is no key (a key file read while it is
/// being rewritten, empty; a proxy's page): retried, not dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_403_while_the_key_store_holds_no_valid_key_is_retried_not_dead_lettered() {
    a_403_while_the_key_store_answers_badly_is_retried(|key_file| {
        std::fs::write(key_file, "").unwrap();
    })
    .await;
}

async fn a_403_while_the_key_store_answers_badly_is_retried(break_store: fn(&std::path::Path)) {
    let dir = tempfile::tempdir().unwrap();
    let (key_file, holder) = key_file_with_a(&dir).await;
    // No attempt limit: the test decides when the store has a key again.
    let h = Harness::start(
        Codec::Zstd,
        holder.clone(),
        fast_pipeline().with_max_attempts(None),
    )
    .await;
    h.intake.set_api_keys([SecretString::from(KEY_B)]);
    break_store(&key_file);
    let events = events(200);
    h.submit_all(&events).await;
    // Two 403s: the events were sent again after the store could not be read.
    h.intake
        .wait_until(Duration::from_secs(20), |s| {
            s.responses_by_status.get(&403).copied().unwrap_or(0) >= 2
        })
        .await
        .expect("the rejected events are sent again");
    assert!(
        !h.exporter.transport_stats().snapshot().key_valid,
        "the key is reported invalid while it is rejected"
    );
    std::fs::write(&key_file, format!("{KEY_B}\n")).unwrap();
    let reports = h.pipeline.shutdown(DEADLINE).await;
    assert_eq!(reports[0].delivered, 200, "{reports:?}");
    assert!(h.dead_letters().is_empty());
    assert_eq!(holder.current().expose(), KEY_B);
    assert_eq!(h.intake.unique_event_ids(), 200);
    assert!(h.exporter.transport_stats().snapshot().key_valid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_403_without_a_new_key_dead_letters_degrades_and_stops_hammering() {
    let h = Harness::start(
        Codec::Zstd,
        static_key(KEY_A),
        fast_pipeline().with_max_batch_events(100),
    )
    .await;
    assert_eq!(h.exporter.health_check().await, Health::Healthy);
    h.intake.revoke_api_key(KEY_A);
    let events = events(5_000);
    h.submit_all(&events).await;
    let reports = h.pipeline.shutdown(DEADLINE).await;
    assert_eq!(reports[0].dead_lettered, 5_000, "{reports:?}");
    assert_eq!(reports[0].delivered, 0);
    // 50 batches, but only those already in flight when the first 403 came back (at most the
    // concurrency, 4) reached the intake: the key is known bad until it changes.
    let log_requests = h
        .intake
        .requests()
        .iter()
        .filter(|r| r.endpoint == Endpoint::Logs)
        .count();
    assert!(
        log_requests <= 4,
        "{log_requests} requests with a rejected key"
    );
    assert!(
        h.dead_letters()[0]["error"]
            .as_str()
            .unwrap()
            .contains("rejected the API key")
    );
    assert!(matches!(
        h.exporter.health_check().await,
        Health::Degraded { .. }
    ));
    assert!(!h.exporter.transport_stats().snapshot().key_valid);
}

/// After a rotation with the old key revoked, and before any event has made the logs path
/// read the key again, the health check reads it itself and validates the new one, rather than
/// reporting a key that the next request would replace anyway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_check_reads_a_rejected_key_again() {
    let dir = tempfile::tempdir().unwrap();
    let (holder, key_file) = file_key(dir.path(), KEY_A).await;
    let h = Harness::start(Codec::Zstd, holder.clone(), fast_pipeline()).await;
    assert_eq!(h.exporter.health_check().await, Health::Healthy);
    std::fs::write(&key_file, KEY_B).unwrap();
    h.intake.set_api_keys([SecretString::from(KEY_B)]);
    assert_eq!(h.exporter.health_check().await, Health::Healthy);
    assert_eq!(holder.current().expose(), KEY_B);
    // Revoked with nothing new in the file: degraded, naming the rejection.
    h.intake.set_api_keys([SecretString::from(KEY_A)]);
    match h.exporter.health_check().await {
        Health::Degraded { reason } => assert!(reason.contains("rejected the API key"), "{reason}"),
        other => panic!("{other:?}"),
    }
    h.pipeline.shutdown(DEADLINE).await;
}

/// A health check that found the revoked key still in its source leaves nothing behind that
/// stops the logs path from reading it again on its own 403, once the new key is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_checks_unchanged_key_does_not_stop_the_logs_path_reading_it_again() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("api-key");
    std::fs::write(&key_file, KEY_A).unwrap();
    // The default throttle of re-reads after a rejection (30 s), which a reused outcome would
    // fall within.
    let holder = KeyHolder::from_source(
        clawdstrike_keys::KeySource::File(key_file.clone()),
        RefreshOptions::default(),
    )
    .await
    .unwrap();
    let h = Harness::start(Codec::Zstd, holder.clone(), fast_pipeline()).await;
    h.intake.set_api_keys([SecretString::from(KEY_B)]);
    assert!(matches!(
        h.exporter.health_check().await,
        Health::Degraded { .. }
    ));
    std::fs::write(&key_file, KEY_B).unwrap();
    h.submit_all(&events(100)).await;
    let reports = h.pipeline.shutdown(DEADLINE).await;
    assert_eq!(reports[0].delivered, 100, "{reports:?}");
    assert!(h.dead_letters().is_empty());
    assert_eq!(holder.current().expose(), KEY_B);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_intake_is_unknown_health_not_invalid() {
    let h = Harness::start(Codec::Zstd, static_key(KEY_A), fast_pipeline()).await;
    let resolved = {
        let mut r = resolved(&h.intake, Codec::Zstd);
        r.api_base = "http://127.0.0.1:9".to_owned();
        r
    };
    let exporter = clawdstrike_datadog::exporter::DatadogExporter::from_config_with_key(
        "down",
        &resolved,
        static_key(KEY_A),
    )
    .unwrap();
    assert!(matches!(
        exporter.health_check().await,
        Health::Unknown { .. }
    ));
}

/// The validate endpoint can answer 200 while the logs intake refuses everything (a wrong
/// `logs_url`, a proxy, an outage of the intake alone): requests failing in a row make the
/// exporter degraded, naming the last failure; one accepted request makes it healthy again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_logs_requests_make_a_validated_exporter_degraded() {
    let h = Harness::start(Codec::Zstd, static_key(KEY_A), fast_pipeline()).await;
    let records: Vec<clawdstrike_export::Record> = events(2)
        .into_iter()
        .map(clawdstrike_export::Record::new)
        .collect();
    assert!(matches!(h.exporter.health_check().await, Health::Healthy));
    h.intake
        .fail_next(Endpoint::Logs, 3, FaultAction::status(503));
    for _ in 0..3 {
        assert_eq!(h.exporter.export(&records).await.exported_count(), 0);
    }
    match h.exporter.health_check().await {
        Health::Degraded { reason } => {
            assert!(reason.contains("failed the last 3 requests"), "{reason}");
            assert!(reason.contains("HTTP 503"), "{reason}");
        }
        other => panic!("degraded, not {other:?}"),
    }
    assert_eq!(h.exporter.export(&records).await.exported_count(), 2);
    assert!(matches!(h.exporter.health_check().await, Health::Healthy));
}

/// Events older than 18 h (a replayed backlog) or more than 2 h ahead (a skewed clock) are
/// delivered, and counted and logged: Datadog may not index them at their time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_outside_the_intake_window_are_counted() {
    let h = Harness::start(Codec::Zstd, static_key(KEY_A), fast_pipeline()).await;
    let now = clawdstrike_schema::Timestamp::now().unix_millis() / 1000;
    let mut batch = events(3);
    batch[0].timestamp = clawdstrike_schema::Timestamp::from_unix(now - 20 * 3600, 0).unwrap();
    batch[1].timestamp = clawdstrike_schema::Timestamp::from_unix(now + 3 * 3600, 0).unwrap();
    batch[2].timestamp = clawdstrike_schema::Timestamp::from_unix(now - 3600, 0).unwrap();
    let records: Vec<_> = batch
        .into_iter()
        .map(clawdstrike_export::Record::new)
        .collect();
    assert_eq!(h.exporter.export(&records).await.exported_count(), 3);
    let snapshot = h.exporter.transport_stats().snapshot();
    assert_eq!(
        (snapshot.events_sent, snapshot.events_out_of_window),
        (3, 2)
    );
}

/// A proxy that echoes the request (the API key header included) in its error body: the key
/// is blanked out of the failure's reason, even where the reason's 512-byte cut would fall
/// inside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_echoed_key_is_blanked_out_of_failure_reasons() {
    let h = Harness::start(Codec::Zstd, static_key(KEY_A), fast_pipeline()).await;
    let records: Vec<_> = events(1)
        .into_iter()
        .map(clawdstrike_export::Record::new)
        .collect();
    for pad in [0, 490] {
        h.intake.fail_next(
            Endpoint::Logs,
            1,
            FaultAction::status_with_body(400, format!("{}DD-API-KEY: {KEY_A}", "x".repeat(pad))),
        );
        let result = h.exporter.export(&records).await;
        let reason = result.outcomes()[0]
            .as_ref()
            .expect("a failure")
            .reason()
            .to_owned();
        assert!(!reason.contains(&KEY_A[..8]), "pad {pad}: {reason}");
    }
}
