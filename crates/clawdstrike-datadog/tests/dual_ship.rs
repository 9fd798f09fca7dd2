//! Two Datadog exporters (US and EU) in one process, fed from one stream: a stalled region
//! never delays the other.

mod common;

use std::sync::Arc;
use std::time::Duration;

use clawdstrike_datadog::encode::Codec;
use clawdstrike_datadog::exporter::DatadogExporter;
use clawdstrike_export::{Pipeline, Record};
use clawdstrike_fakeintake::{Endpoint, FakeIntake, FaultAction};
use clawdstrike_keys::SecretString;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_region_does_not_delay_the_other() {
    let us = FakeIntake::start(SecretString::from(KEY_A), SecretString::from(APP_KEY))
        .await
        .unwrap();
    let eu = FakeIntake::start(SecretString::from(KEY_B), SecretString::from(APP_KEY))
        .await
        .unwrap();
    eu.fail_next(Endpoint::Logs, 1_000, FaultAction::Stall);
    let us_exporter = DatadogExporter::from_config_with_key(
        "datadog_us",
        &resolved(&us, Codec::Zstd),
        static_key(KEY_A),
    )
    .unwrap();
    let eu_exporter = DatadogExporter::from_config_with_key(
        "datadog_eu",
        &resolved(&eu, Codec::Zstd),
        static_key(KEY_B),
    )
    .unwrap();
    let pipeline = Pipeline::builder()
        .with_exporter(
            Arc::new(us_exporter),
            fast_pipeline().with_queue_capacity(20_000),
        )
        .with_exporter(
            Arc::new(eu_exporter),
            fast_pipeline().with_queue_capacity(20_000),
        )
        .build()
        .unwrap();
    let events = events(5_000);
    for e in &events {
        pipeline.submit(Record::new(e.clone())).await.unwrap();
    }
    // The US region receives everything while the EU intake hangs on every request.
    us.wait_for_items(5_000, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(us.unique_event_ids(), 5_000);
    assert_eq!(eu.total_items(), 0);
    let reports = pipeline.shutdown(Duration::from_millis(500)).await;
    eu.release_stalled();
    let us_report = reports.iter().find(|r| r.exporter == "datadog_us").unwrap();
    let eu_report = reports.iter().find(|r| r.exporter == "datadog_eu").unwrap();
    assert_eq!(us_report.delivered, 5_000);
    assert_eq!(eu_report.delivered, 0);
    assert_eq!(
        eu_report.left_behind, 5_000,
        "the stalled region reports what it left behind: {eu_report:?}"
    );
}
