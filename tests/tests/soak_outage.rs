//! Soak 3: the intake is down (every logs request answers 503) for a long stretch while events
//! keep coming, through the durable buffer: the buffer fills, its `when_full: drop_newest`
//! policy applies, memory stays bounded by the buffer's cap, and once the intake recovers the
//! counts are exact, per event id: delivered + dropped by policy == submitted.
//!
//! `SOAK_OUTAGE_EVENTS` sets how many events arrive during the outage (default 100,000).

use std::sync::Arc;
use std::time::Duration;

use clawdstrike_datadog::config::DatadogConfig;
use clawdstrike_datadog::exporter::DatadogExporter;
use clawdstrike_export::{
    DiskBufferConfig, DurablePipeline, ExporterConfig, FsyncPolicy, Pipeline, Record, WhenFull,
};
use clawdstrike_fakeintake::{Endpoint, FakeIntake, FaultAction, RandomFaults};
use clawdstrike_keys::{KeyHolder, SecretString};
use clawdstrike_schema::Uuid;

const KEY: &str = "outageKey00000000000000000000001";

/// A `/proc/self/status` value in bytes (`VmRSS`, `VmHWM`).
fn status_bytes(key: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("{key} in /proc/self/status"))
        * 1024
}

fn vm_rss() -> u64 {
    status_bytes("VmRSS")
}

/// Resets the kernel's peak-RSS mark (`VmHWM`) to the current RSS; false where not allowed.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_outage_fills_the_buffer_memory_stays_bounded_and_the_counts_are_exact() {
    let n: u64 = std::env::var("SOAK_OUTAGE_EVENTS")
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(100_000);
    let base = clawdstrike_e2e::fixture_events();
    let intake = FakeIntake::builder()
        .with_api_key(SecretString::from(KEY))
        .with_keep_items(false)
        .with_max_kept_requests(0)
        .start()
        .await
        .expect("fake intake");
    intake.set_random_faults(Some(
        RandomFaults::new(3)
            .on(Endpoint::Logs)
            .with(1.0, FaultAction::status(503)),
    ));
    let yaml = format!(
        "site: datadoghq.eu\nlogs_url: {url}\napi_url: {url}\nlogs: {{ hostname: outage-host }}\nrequest: {{ timeout_ms: 5000, connect_timeout_ms: 1000 }}",
        url = intake.base_url()
    );
    let resolved = DatadogConfig::from_yaml(&yaml, &|_| None)
        .unwrap()
        .resolve(&|_| None)
        .unwrap();
    let exporter = DatadogExporter::from_config_with_key(
        "datadog_outage",
        &resolved,
        KeyHolder::from_static(SecretString::from(KEY)),
    )
    .unwrap();

    // The cap: 2 MiB of log, i.e. at most 2 MiB / (smallest record) events held anywhere.
    let dir = tempfile::tempdir().unwrap();
    let max_bytes: u64 = 2 * 1024 * 1024;
    let buffer = DiskBufferConfig::new(dir.path().join("buffer"))
        .with_max_bytes(max_bytes)
        .with_segment_bytes(128 * 1024)
        .with_fsync(FsyncPolicy::Never)
        .with_when_full(WhenFull::DropNewest);
    let builder = Pipeline::builder().with_exporter(
        Arc::new(exporter),
        ExporterConfig::default()
            .with_queue_capacity(50_000)
            .with_max_batch_events(500)
            .with_flush_interval(Duration::from_millis(20))
            .with_initial_backoff(Duration::from_millis(5))
            .with_max_backoff(Duration::from_millis(50))
            .with_max_attempts(None)
            .with_max_elapsed(None),
    );
    let (durable, found) = DurablePipeline::open(&buffer, builder).await.unwrap();
    assert_eq!(found.to_replay, 0);

    let smallest_json = base.iter().map(|e| e.to_json().len()).min().unwrap() as u64;
    let largest_json = base.iter().map(|e| e.to_json().len()).max().unwrap() as u64;
    let max_held = max_bytes / smallest_json;
    // Generous: 8 times the JSON size per event held (the event in memory, its formatted
    // item and compressed copy in a request being retried), plus 24 MiB of slack for the
    // allocator, the runtime and the intake.
    let bound = max_held * largest_json * 8 + 24 * 1024 * 1024;

    let rss_before = vm_rss();
    // The kernel's own peak mark sees every spike; the samples are the fallback where it
    // cannot be reset.
    let exact_peak = reset_peak_rss();
    let mut peak = rss_before;
    // Which events the buffer took (one producer: the appended counter tells).
    let mut kept = vec![false; n as usize];
    for i in 0..n {
        let before = durable.buffer_stats().appended;
        durable
            .submit(Record::new(clawdstrike_e2e::numbered_event(&base, i)))
            .await
            .unwrap();
        kept[i as usize] = durable.buffer_stats().appended > before;
        if i % 5_000 == 0 {
            peak = peak.max(vm_rss());
        }
    }
    peak = peak.max(vm_rss());
    if exact_peak {
        peak = peak.max(status_bytes("VmHWM"));
    }
    let during = durable.buffer_stats();
    let outage_requests = intake
        .stats()
        .responses_by_status
        .get(&503)
        .copied()
        .unwrap_or(0);
    println!(
        "soak_outage: {n} events during the outage ({outage_requests} requests answered 503); buffer {during:?}\n  RSS {} -> peak {} MiB ({}; bound {} MiB; unbounded would hold about {} MiB of events)",
        rss_before >> 20,
        peak >> 20,
        if exact_peak {
            "VmHWM"
        } else {
            "sampled every 5,000 events"
        },
        bound >> 20,
        (n * largest_json) >> 20,
    );
    assert!(outage_requests > 0, "the outage was not exercised");
    assert!(during.disk_bytes <= max_bytes);
    assert!(during.dropped_newest > 0, "the buffer never filled");
    assert_eq!(during.appended + during.dropped_newest, n);
    assert!(
        peak.saturating_sub(rss_before) <= bound,
        "RSS grew by {} MiB, bound {} MiB",
        (peak - rss_before) >> 20,
        bound >> 20
    );

    // The intake recovers: everything held is delivered.
    intake.set_random_faults(None);
    let report = durable.shutdown(Duration::from_secs(120)).await.remove(0);
    let after = durable.buffer_stats();
    let stats = intake.stats();
    println!(
        "  after recovery: delivered {}, dropped by the buffer's policy {}, intake unique ids {}",
        report.delivered, after.dropped_newest, stats.unique_event_ids
    );
    assert_eq!(report.delivered, after.appended);
    assert_eq!(
        report.dead_lettered + report.dropped.total() + report.left_behind,
        0
    );
    assert_eq!(
        report.delivered + after.dropped_newest,
        n,
        "counts are exact"
    );
    assert_eq!(stats.unique_event_ids, report.delivered);
    assert_eq!(after.unsettled, 0);
    // Per event: delivered exactly once if the buffer took it, never if its policy dropped it.
    // (Under drop_newest, a later, smaller event can still fit the last bytes of the log.)
    let counts = intake.event_id_counts();
    for i in 0..n {
        let id = Uuid::from_u128(clawdstrike_e2e::EVENT_ID_BASE | u128::from(i)).to_string();
        let expected = u32::from(kept[i as usize]);
        assert_eq!(
            counts.get(&id).copied().unwrap_or(0),
            expected,
            "event {i}: delivered once iff the buffer took it"
        );
    }
    assert_eq!(kept.iter().filter(|&&k| k).count() as u64, after.appended);
    intake.shutdown().await;
}
