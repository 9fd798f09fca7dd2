//! Soak 1: events through the Datadog exporter and the pipeline to the fake intake under a
//! seeded random schedule of every fault in the spec (429 with and without `Retry-After` and
//! with rate-limit headers, 500, 502, 503, 408, connection resets, stalls, 413, slow answers,
//! answers slower than our request timeout) and an API key rotated mid-run: zero events lost,
//! duplicates counted and bounded.
//!
//! `SOAK_EVENTS` sets the number of events (default 50,000 for the README's test command: about
//! 20 s on 2 cores in a debug build), `SOAK_SEED` the fault schedule's seed. CI runs the full
//! million in its own step (`.ci/run`); by hand, faster:
//!
//! ```text
//! SOAK_EVENTS=1000000 cargo nextest run --release -p clawdstrike-e2e --test soak_faults --no-capture
//! ```
//!
//! Why duplicates happen, and their bound: an event is sent again only when a request carrying
//! it failed *on our side* without a verdict from the intake. A reset or a stall is never
//! processed by the intake, but a request that our client timed out on (the intake answered
//! later than `request.timeout_ms`) may have been accepted. So duplicates are at most the
//! events carried by requests that ended in a client-side network error:
//! `duplicates <= network_errors * max_batch_events`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clawdstrike_datadog::config::DatadogConfig;
use clawdstrike_datadog::encode::{Codec, Compression};
use clawdstrike_datadog::exporter::DatadogExporter;
use clawdstrike_export::{ExporterConfig, Pipeline, Record};
use clawdstrike_fakeintake::{Endpoint, FakeIntake, FaultAction, LogsLimits, RandomFaults};
use clawdstrike_keys::{KeyHolder, KeySource, RefreshOptions, SecretString};

const KEY_1: &str = "soakKeyOne000000000000000000000001";
const KEY_2: &str = "soakKeyTwo000000000000000000000002";
const REQUEST_TIMEOUT_MS: u64 = 1_500;
const MAX_BATCH: usize = 100;

fn soak_events() -> u64 {
    std::env::var("SOAK_EVENTS")
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(50_000)
}

/// Every fault of the spec but 413, rolled per logs request (about one request in three is
/// faulted). The 413s are real: the intake takes at most `MAX_BATCH - 1` items per request,
/// so every full batch is refused and split, as Datadog does past 1,000 items. (A random 413
/// could also strike a one-event request, which no split can help: that event is rightly
/// dead-lettered, and the run would fail for nothing.)
fn schedule(seed: u64) -> RandomFaults {
    RandomFaults::new(seed)
        .on(Endpoint::Logs)
        .with(0.03, FaultAction::status_with_retry_after(429, 1))
        .with(0.03, FaultAction::status(429))
        .with(
            0.02,
            FaultAction::RateLimited {
                limit: 100,
                period: 60,
                reset: 1,
            },
        )
        .with(0.03, FaultAction::status(500))
        .with(0.02, FaultAction::status(502))
        .with(0.03, FaultAction::status_with_retry_after(503, 1))
        .with(0.03, FaultAction::status(408))
        .with(0.03, FaultAction::Reset)
        .with(0.01, FaultAction::Stall)
        .with(0.03, FaultAction::delay(Duration::from_millis(30)))
        // Slower than our timeout: the intake accepts what we gave up on (the duplicates).
        .with(
            0.01,
            FaultAction::delay(Duration::from_millis(REQUEST_TIMEOUT_MS + 300)),
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_arrives_under_a_seeded_random_fault_schedule_and_a_key_rotation() {
    let n = soak_events();
    let seed = std::env::var("SOAK_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_0001_u64);
    let base = clawdstrike_e2e::fixture_events();
    let intake = FakeIntake::builder()
        .with_api_key(SecretString::from(KEY_1))
        .with_keep_items(false)
        .with_max_kept_requests(0)
        .with_logs_limits({
            let mut limits = LogsLimits::default();
            limits.max_items = MAX_BATCH - 1;
            limits
        })
        .start()
        .await
        .expect("fake intake");
    intake.set_random_faults(Some(schedule(seed)));

    // The key lives in a real file; rotation writes the new key there, then revokes the old
    // one at the intake. Requests still carrying the old key get 403 and re-read the file.
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("dd_api_key");
    std::fs::write(&key_file, KEY_1).unwrap();
    let key = KeyHolder::from_source(
        KeySource::File(key_file.clone()),
        RefreshOptions::default().with_min_interval(Duration::ZERO),
    )
    .await
    .expect("key file");

    let yaml = format!(
        "site: datadoghq.eu\nlogs_url: {url}\napi_url: {url}\nlogs: {{ hostname: soak-host, tags: [team:soak] }}\nrequest: {{ timeout_ms: {REQUEST_TIMEOUT_MS}, connect_timeout_ms: 1000 }}",
        url = intake.base_url()
    );
    let mut config = DatadogConfig::from_yaml(&yaml, &|_| None).unwrap();
    config.compression = Compression {
        codec: Codec::Zstd,
        level: None,
    };
    let resolved = config.resolve(&|_| None).unwrap();
    let exporter = DatadogExporter::from_config_with_key("datadog_soak", &resolved, key).unwrap();
    let transport = exporter.transport_stats();
    let pipeline = Pipeline::builder()
        .with_exporter(
            Arc::new(exporter),
            ExporterConfig::default()
                .with_max_batch_events(MAX_BATCH)
                .with_flush_interval(Duration::from_millis(20))
                .with_initial_backoff(Duration::from_millis(5))
                .with_max_backoff(Duration::from_millis(50))
                .with_max_retry_after(Duration::from_millis(100))
                .with_max_attempts(None)
                .with_max_elapsed(None)
                .with_dead_letter_path(dir.path().join("dead.jsonl")),
        )
        .build()
        .unwrap();

    let started = Instant::now();
    for i in 0..n {
        if i == n / 2 {
            std::fs::write(&key_file, KEY_2).unwrap();
            intake.set_api_keys([SecretString::from(KEY_2)]);
        }
        pipeline
            .submit(Record::new(clawdstrike_e2e::numbered_event(&base, i)))
            .await
            .unwrap();
    }
    // Stalled requests end at our timeout; the pipeline retries them. Shutdown flushes all.
    let report = pipeline.shutdown(Duration::from_secs(600)).await.remove(0);
    let elapsed = started.elapsed();
    intake.set_random_faults(None);

    let stats = intake.stats();
    let transport = transport.snapshot();
    let network_errors = transport
        .requests
        .get("network_error")
        .copied()
        .unwrap_or(0);
    let duplicates = stats.total_items - stats.unique_event_ids;
    let bound = network_errors * MAX_BATCH as u64;
    println!(
        "soak_faults: seed {seed:#x}, {n} events in {:.1} s\n  intake: {} requests, {} faults injected, {} resets, {} stalled, responses {:?}\n  exporter requests by status: {:?}\n  pipeline: delivered {}, retried {}, dead-lettered {}, dropped {}\n  received: {} unique event ids, {} items, {} duplicates (bound {bound} = {network_errors} network errors x {MAX_BATCH})",
        elapsed.as_secs_f64(),
        stats.requests,
        stats.faults_injected,
        stats.connections_reset,
        stats.requests_stalled,
        stats.responses_by_status,
        transport.requests,
        report.delivered,
        pipeline.stats()[0].retried,
        report.dead_lettered,
        report.dropped.total(),
        stats.unique_event_ids,
        stats.total_items,
        duplicates,
    );

    // Zero lost: every event id arrived, nothing was dead-lettered, dropped or left behind.
    assert_eq!(stats.unique_event_ids, n, "events lost");
    assert_eq!(report.delivered, n);
    assert_eq!(report.dead_lettered, 0);
    assert_eq!(report.dropped.total(), 0);
    assert_eq!(report.left_behind, 0);
    // Every fault kind was actually exercised, the rotation too.
    let by_status = &stats.responses_by_status;
    for status in [429, 500, 502, 503, 408, 413, 403] {
        assert!(
            by_status.get(&status).copied().unwrap_or(0) > 0,
            "no {status} answered: {by_status:?}"
        );
    }
    assert!(stats.connections_reset > 0, "no reset");
    assert!(stats.requests_stalled > 0, "no stall");
    assert_eq!(intake.duplicates().len() as u64, stats.duplicate_event_ids);
    // Duplicates only from requests that failed on our side.
    assert!(
        duplicates <= bound,
        "{duplicates} duplicates > bound {bound}"
    );
    intake.release_stalled();
    intake.shutdown().await;
}
