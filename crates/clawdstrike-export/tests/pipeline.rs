//! Public-API tests of the pipeline, against the scripted exporter and real files.
//! Most run on Tokio's paused clock, so backoff and flush intervals take no real time.

#![cfg(feature = "testing")]

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use clawdstrike_export::testing::{ScriptedExporter, Step};
use clawdstrike_export::{
    BatchObserver, BatchOutcome, BuildError, DeadLetter, ExportResult, Exporter, ExporterConfig,
    Failure, FilterConfig, Pipeline, Record, SettleHook, Settlement, SubmitError, WhenFull,
};
use clawdstrike_schema::{EventType, ResourceType, SecurityEvent, Severity, Timestamp, Uuid};
use tokio::time::Instant;

fn event_with(i: u64, event_type: EventType, guard: &str, severity: Severity) -> Record {
    let event = SecurityEvent::builder(event_type)
        .event_id(Uuid::from_u128(u128::from(i) + 1))
        .agent_id("agent-7")
        .session_id("sess-123")
        .action("file_access")
        .denied(guard, severity, "test")
        .resource(ResourceType::File, "/etc/shadow")
        .build()
        .expect("valid event");
    Record::new(event)
}

fn event(i: u64) -> Record {
    event_with(
        i,
        EventType::ForbiddenPath,
        "forbidden_path",
        Severity::High,
    )
}

fn id(i: u64) -> Uuid {
    Uuid::from_u128(u128::from(i) + 1)
}

fn ids(range: impl IntoIterator<Item = u64>) -> Vec<Uuid> {
    range.into_iter().map(id).collect()
}

/// Fast settings: small batches, short flush interval and backoff.
fn fast() -> ExporterConfig {
    ExporterConfig::default()
        .with_flush_interval(Duration::from_millis(10))
        .with_initial_backoff(Duration::from_millis(10))
        .with_max_backoff(Duration::from_millis(100))
}

fn pipeline(exporter: &Arc<ScriptedExporter>, config: ExporterConfig) -> Pipeline {
    Pipeline::builder()
        .with_exporter(Arc::clone(exporter) as Arc<dyn Exporter>, config)
        .build()
        .expect("valid pipeline")
}

fn read_dead_letters(path: &Path) -> Vec<DeadLetter> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|l| serde_json::from_str(l).expect("a dead-letter line is JSON"))
        .collect()
}

fn sorted(mut v: Vec<Uuid>) -> Vec<Uuid> {
    v.sort();
    v
}

/// A `block` pipeline of one-event batches, one in flight and two queued, to an exporter
/// that holds every call until released.
fn stalled_until_released() -> (Arc<ScriptedExporter>, Pipeline) {
    let exporter = Arc::new(
        ScriptedExporter::new("stalled")
            .with_default(Step::WaitForRelease(Box::new(Step::Succeed))),
    );
    let p = pipeline(
        &exporter,
        fast()
            .with_queue_capacity(2)
            .with_max_batch_events(1)
            .with_concurrency(1),
    );
    (exporter, p)
}

#[tokio::test(start_paused = true)]
async fn block_makes_submit_wait_until_the_stalled_exporter_is_released() {
    let (exporter, p) = stalled_until_released();
    // Fill everything: one batch in flight, one waiting for a slot, a full queue.
    let mut accepted = 0;
    loop {
        match p.try_submit(event(accepted)) {
            Ok(()) => accepted += 1,
            Err(SubmitError::Full { exporter }) => {
                assert_eq!(&*exporter, "stalled");
                break;
            }
            Err(other) => panic!("unexpected {other}"),
        }
        tokio::task::yield_now().await;
        assert!(
            accepted < 100,
            "a stalled exporter must fill the bounded queue"
        );
    }
    assert_eq!(p.stats()[0].rejected, 1);

    let mut blocked = pin!(p.submit(event(accepted)));
    assert!(futures_util::poll!(&mut blocked).is_pending());
    // An hour of (virtual) time changes nothing: the exporter is still stalled.
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert!(
        futures_util::poll!(&mut blocked).is_pending(),
        "submit must wait while the queue is full"
    );

    exporter.release();
    blocked
        .await
        .expect("submit completes once the exporter drains the queue");
    let report = p.shutdown(Duration::from_secs(10)).await.remove(0);
    assert_eq!(report.delivered, accepted + 1);
    assert_eq!(sorted(exporter.exported_ids()), ids(0..=accepted));
    assert_eq!(report.dropped.total(), 0);
}

/// A submit parked on a full `block` queue whose caller never polls it again does not hold
/// the shutdown until its deadline (an hour of virtual time here): the shutdown delivers what
/// was accepted and returns, and the parked submit, polled at last, is refused as closed,
/// its event counted nowhere.
#[tokio::test(start_paused = true)]
async fn a_parked_submit_never_polled_again_does_not_hold_the_shutdown() {
    let (exporter, p) = stalled_until_released();
    let mut accepted = 0;
    while p.try_submit(event(accepted)).is_ok() {
        accepted += 1;
        tokio::task::yield_now().await;
        assert!(accepted < 100, "the queue never filled");
    }
    let mut parked = pin!(p.submit(event(accepted)));
    assert!(futures_util::poll!(&mut parked).is_pending());

    exporter.release();
    let started = tokio::time::Instant::now();
    let report = p.shutdown(Duration::from_secs(3600)).await.remove(0);
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the shutdown waited {:?} for a submit nobody polls",
        started.elapsed()
    );
    assert_eq!(report.accepted, accepted, "{report:?}");
    assert_eq!(report.delivered, accepted, "{report:?}");
    assert_eq!(parked.await, Err(SubmitError::Closed));
    assert_eq!(sorted(exporter.exported_ids()), ids(0..accepted));
}

#[tokio::test(start_paused = true)]
async fn drop_newest_keeps_the_first_events_and_counts_the_rest() {
    let exporter = Arc::new(
        ScriptedExporter::new("x").with_default(Step::WaitForRelease(Box::new(Step::Succeed))),
    );
    let p = pipeline(
        &exporter,
        fast()
            .with_queue_capacity(10)
            .with_when_full(WhenFull::DropNewest),
    );
    // The producer never yields, so the batcher cannot drain: exactly 10 fit.
    for i in 0..100 {
        p.submit(event(i))
            .await
            .expect("drop policies never refuse");
    }
    let stats = p.stats().remove(0);
    assert_eq!(stats.accepted, 10);
    assert_eq!(stats.dropped.queue_full_newest, 90);
    assert_eq!(stats.dropped.queue_full_oldest, 0);
    exporter.release();
    let report = p.shutdown(Duration::from_secs(10)).await.remove(0);
    assert_eq!(sorted(exporter.exported_ids()), ids(0..10));
    assert_eq!(report.delivered + report.dropped.total(), 100);
}

/// A queue smaller than a batch: the batcher, holding a batch it has begun, is woken before
/// the queue fills, so a producer that lets it run loses nothing to the drop policy (it used to
/// wait for a whole batch's worth, which a queue of 10 never holds: 40 of these 51 dropped).
#[tokio::test(start_paused = true)]
async fn a_queue_smaller_than_a_batch_is_drained_before_it_fills() {
    let exporter = Arc::new(ScriptedExporter::new("x"));
    let p = pipeline(
        &exporter,
        fast()
            .with_queue_capacity(10)
            .with_max_batch_events(100)
            .with_flush_interval(Duration::from_secs(1))
            .with_when_full(WhenFull::DropNewest),
    );
    let started = Instant::now();
    for i in 0..51 {
        p.submit(event(i))
            .await
            .expect("drop policies never refuse");
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
    }
    assert_eq!(Instant::now(), started, "no flush interval passed");
    let stats = p.stats().remove(0);
    assert_eq!(
        (stats.accepted, stats.dropped.queue_full_newest),
        (51, 0),
        "{stats:?}"
    );
    let report = p.shutdown(Duration::from_secs(10)).await.remove(0);
    assert_eq!(sorted(exporter.exported_ids()), ids(0..51));
    assert_eq!(report.delivered, 51);
}

#[tokio::test(start_paused = true)]
async fn drop_oldest_keeps_the_last_events_and_counts_the_evicted() {
    let exporter = Arc::new(
        ScriptedExporter::new("x").with_default(Step::WaitForRelease(Box::new(Step::Succeed))),
    );
    let p = pipeline(
        &exporter,
        fast()
            .with_queue_capacity(10)
            .with_when_full(WhenFull::DropOldest),
    );
    for i in 0..100 {
        p.submit(event(i))
            .await
            .expect("drop policies never refuse");
    }
    let stats = p.stats().remove(0);
    assert_eq!(stats.accepted, 100);
    assert_eq!(stats.dropped.queue_full_oldest, 90);
    assert_eq!(stats.dropped.queue_full_newest, 0);
    assert_eq!(stats.queue_depth, 10);
    exporter.release();
    let report = p.shutdown(Duration::from_secs(10)).await.remove(0);
    assert_eq!(sorted(exporter.exported_ids()), ids(90..100));
    assert_eq!(report.delivered, 10);
    assert_eq!(report.submitted, report.delivered + report.dropped.total());
}

#[tokio::test(start_paused = true)]
async fn shutdown_respects_its_deadline_with_a_stuck_exporter_and_reports_exactly() {
    // Two calls succeed, then the destination hangs forever.
    let exporter = Arc::new(
        ScriptedExporter::new("stuck")
            .with_script([Step::Succeed, Step::Succeed])
            .with_default(Step::HangForever),
    );
    let p = pipeline(
        &exporter,
        fast().with_max_batch_events(10).with_concurrency(2),
    );
    for i in 0..50 {
        p.submit(event(i)).await.expect("room in the queue");
    }
    let started = Instant::now();
    let report = p.shutdown(Duration::from_secs(5)).await.remove(0);
    assert!(
        Instant::now() - started <= Duration::from_secs(5),
        "shutdown overran its deadline"
    );
    assert!(report.deadline_reached);
    assert!(report.exporter_shutdown_completed);
    assert_eq!(exporter.shutdown_calls(), 1);
    assert_eq!(report.submitted, 50);
    assert_eq!(report.delivered, 20);
    assert_eq!(report.left_behind, 30);
    assert_eq!(report.dropped.shutdown_deadline, 30);
    assert_eq!(report.dead_lettered, 0);
    assert_eq!(sorted(exporter.exported_ids()), ids(0..20));
    // Submitting after shutdown is refused, never silently lost.
    assert_eq!(p.try_submit(event(99)), Err(SubmitError::Closed));
    assert_eq!(p.submit(event(99)).await, Err(SubmitError::Closed));
    assert_eq!(p.stats()[0].submitted, 50);
}

/// An exporter whose export and shutdown both never complete.
#[derive(Debug)]
struct Frozen;

#[async_trait]
impl Exporter for Frozen {
    fn name(&self) -> &str {
        "frozen"
    }
    async fn export(&self, _batch: &[Record]) -> ExportResult {
        std::future::pending().await
    }
    async fn shutdown(&self) {
        std::future::pending::<()>().await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_frozen_exporter_shutdown_cannot_make_shutdown_overrun() {
    let p = Pipeline::builder()
        .with_exporter(Arc::new(Frozen), fast())
        .build()
        .expect("valid");
    for i in 0..7 {
        p.submit(event(i)).await.expect("room");
    }
    let started = Instant::now();
    let report = p.shutdown(Duration::from_secs(3)).await.remove(0);
    assert!(Instant::now() - started <= Duration::from_secs(3));
    assert!(report.deadline_reached);
    assert!(!report.exporter_shutdown_completed);
    assert_eq!(report.left_behind, 7);
    assert_eq!(report.delivered, 0);
}

#[tokio::test(start_paused = true)]
async fn a_hung_exporter_in_a_fan_out_does_not_delay_the_other() {
    let hung = Arc::new(ScriptedExporter::new("hung").with_default(Step::HangForever));
    let failing = Arc::new(
        ScriptedExporter::new("failing")
            .with_default(Step::FailAll(Failure::retryable("HTTP 503"))),
    );
    let healthy = Arc::new(ScriptedExporter::new("healthy"));
    let p = Pipeline::builder()
        .with_exporter(
            hung.clone(),
            // Its 4 hung batches of 100, the one being assembled and the queue hold 600 events:
            // the rest make room under `drop_oldest`.
            fast()
                .with_queue_capacity(100)
                .with_max_batch_events(100)
                .with_when_full(WhenFull::DropOldest),
        )
        .with_exporter(
            failing.clone(),
            fast()
                .with_queue_capacity(100)
                .with_when_full(WhenFull::DropNewest)
                .with_max_attempts(None),
        )
        .with_exporter(healthy.clone(), fast().with_queue_capacity(100))
        .build()
        .expect("valid");
    let producer = {
        let p = p.clone();
        tokio::spawn(async move {
            for i in 0..5_000 {
                p.submit(event(i)).await.expect("open");
            }
        })
    };
    tokio::time::timeout(Duration::from_secs(3600), healthy.wait_for_exported(5_000))
        .await
        .expect("the healthy exporter delivers everything while the others are stuck");
    producer.await.expect("producer finished");
    assert_eq!(sorted(healthy.exported_ids()), ids(0..5_000));
    let stats = p.stats();
    assert_eq!(stats[0].exported, 0);
    assert!(stats[0].dropped.queue_full_oldest > 0);
    assert!(stats[1].retried > 0);
    let reports = p.shutdown(Duration::from_secs(1)).await;
    for r in &reports {
        assert_eq!(r.submitted, 5_000, "{}", r.exporter);
        assert_eq!(
            r.submitted,
            r.filtered + r.delivered + r.dead_lettered + r.dropped.total(),
            "{}",
            r.exporter
        );
    }
    assert_eq!(reports[2].delivered, 5_000);
}

#[tokio::test(start_paused = true)]
async fn the_filter_applies_min_severity_types_and_guards() {
    let exporter = Arc::new(ScriptedExporter::new("filtered"));
    let filter = FilterConfig::default()
        .with_min_severity(Severity::Medium)
        .with_include_event_types([
            EventType::ForbiddenPath,
            EventType::EgressBlocked,
            EventType::SecretDetected,
        ])
        .with_exclude_event_types([EventType::SecretDetected])
        .with_include_guards(["forbidden_path", "egress", "secret_leak"])
        .with_exclude_guards(["egress"]);
    let p = pipeline(&exporter, fast().with_filter(filter));
    let types = [
        EventType::ForbiddenPath,
        EventType::EgressBlocked,
        EventType::SecretDetected,
        EventType::PolicyAllow,
    ];
    let guards = ["forbidden_path", "egress", "secret_leak", "other"];
    let mut expected = Vec::new();
    let mut i = 0;
    for &t in &types {
        for &g in &guards {
            for &s in Severity::ALL {
                p.submit(event_with(i, t, g, s)).await.expect("open");
                let passes = s >= Severity::Medium
                    && matches!(t, EventType::ForbiddenPath | EventType::EgressBlocked)
                    && matches!(g, "forbidden_path" | "secret_leak");
                if passes {
                    expected.push(id(i));
                }
                i += 1;
            }
        }
    }
    let report = p.shutdown(Duration::from_secs(10)).await.remove(0);
    assert_eq!(sorted(exporter.exported_ids()), sorted(expected.clone()));
    assert_eq!(report.delivered, expected.len() as u64);
    assert_eq!(report.filtered, i - expected.len() as u64);
    assert_eq!(report.dropped.total(), 0, "filtered events are not drops");
}

#[tokio::test(start_paused = true)]
async fn only_the_failed_events_of_a_partial_batch_are_retried() {
    let exporter = Arc::new(
        ScriptedExporter::new("partial").with_script([Step::Outcomes(vec![
            None,
            Some(Failure::retryable("throttled")),
            None,
            Some(Failure::permanent("HTTP 400: bad event")),
            Some(Failure::retryable("throttled")),
        ])]),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let dlq = dir.path().join("dlq.jsonl");
    let p = pipeline(
        &exporter,
        fast().with_max_batch_events(5).with_dead_letter_path(&dlq),
    );
    for i in 0..5 {
        p.submit(event(i)).await.expect("open");
    }
    let report = p.shutdown(Duration::from_secs(10)).await.remove(0);
    let batches = exporter.batches();
    assert_eq!(batches, vec![ids(0..5), vec![id(1), id(4)]]);
    assert_eq!(
        sorted(exporter.exported_ids()),
        sorted(vec![id(0), id(1), id(2), id(4)])
    );
    let dead = read_dead_letters(&dlq);
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].event.event_id, id(3));
    assert!(!dead[0].retryable);
    assert_eq!(dead[0].attempts, 1);
    assert_eq!(dead[0].error, "HTTP 400: bad event");
    assert_eq!(dead[0].exporter, "partial");
    assert!(
        dead[0].failed_at.parse::<Timestamp>().is_ok(),
        "failed_at is RFC 3339: {}",
        dead[0].failed_at
    );
    let stats = p.stats().remove(0);
    assert_eq!(stats.retried, 2);
    assert_eq!(stats.failed, 3);
    assert_eq!((report.delivered, report.dead_lettered), (4, 1));
}

#[tokio::test(start_paused = true)]
async fn a_short_result_counts_the_missing_events_as_retryable() {
    let exporter = Arc::new(ScriptedExporter::new("short").with_script([Step::Short(2)]));
    let p = pipeline(&exporter, fast().with_max_batch_events(5));
    for i in 0..5 {
        p.submit(event(i)).await.expect("open");
    }
    let report = p.shutdown(Duration::from_secs(10)).await.remove(0);
    assert_eq!(exporter.batches(), vec![ids(0..5), ids(2..5)]);
    assert_eq!(report.delivered, 5);
    assert_eq!(sorted(exporter.exported_ids()), ids(0..5));
}

#[tokio::test(start_paused = true)]
async fn retry_after_hints_are_honoured_and_capped() {
    for (hint, cap, expected) in [
        (
            Duration::from_secs(3600),
            Duration::from_secs(2),
            Duration::from_secs(2),
        ),
        (
            Duration::from_millis(500),
            Duration::from_secs(2),
            Duration::from_millis(500),
        ),
    ] {
        let exporter = Arc::new(
            ScriptedExporter::new("throttled").with_script([Step::FailAll(Failure::Retryable {
                reason: "HTTP 429".into(),
                retry_after: Some(hint),
            })]),
        );
        let p = pipeline(&exporter, fast().with_max_retry_after(cap));
        p.submit(event(0)).await.expect("open");
        exporter.wait_for_exported(1).await;
        let times = exporter.call_times();
        assert_eq!(times.len(), 2);
        assert_eq!(
            times[1] - times[0],
            expected,
            "hint {hint:?} capped at {cap:?}"
        );
        p.shutdown(Duration::from_secs(1)).await;
    }
}

/// `Retry-After: 0` (or a date already past) on every answer is no hint: the backoff applies,
/// so the attempt budget is not spent in ten back-to-back round trips (which it was, at one
/// instant of the paused clock).
#[tokio::test(start_paused = true)]
async fn a_zero_retry_after_leaves_the_backoff_in_place() {
    let exporter = Arc::new(
        ScriptedExporter::new("throttled").with_default(Step::FailAll(Failure::Retryable {
            reason: "HTTP 503".into(),
            retry_after: Some(Duration::ZERO),
        })),
    );
    let p = pipeline(
        &exporter,
        fast()
            .with_initial_backoff(Duration::from_secs(1))
            .with_max_backoff(Duration::from_secs(8))
            .with_max_attempts(Some(10)),
    );
    p.submit(event(0)).await.expect("open");
    let report = p.shutdown(Duration::from_secs(3600)).await.remove(0);
    assert_eq!((exporter.calls(), report.dead_lettered), (10, 1));
    let times = exporter.call_times();
    let waited = times[9] - times[0];
    assert!(
        waited >= Duration::from_millis(100),
        "ten attempts within {waited:?}: the zero hint replaced the backoff"
    );
}

#[tokio::test(start_paused = true)]
async fn an_exhausted_attempt_budget_dead_letters_as_retryable() {
    let exporter = Arc::new(
        ScriptedExporter::new("down").with_default(Step::FailAll(Failure::retryable("HTTP 503"))),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let dlq = dir.path().join("dlq.jsonl");
    let p = pipeline(
        &exporter,
        fast()
            .with_max_attempts(Some(3))
            .with_dead_letter_path(&dlq),
    );
    p.submit(event(0)).await.expect("open");
    let report = p.shutdown(Duration::from_secs(60)).await.remove(0);
    assert_eq!(exporter.calls(), 3);
    assert_eq!(report.dead_lettered, 1);
    let dead = read_dead_letters(&dlq);
    assert_eq!(dead.len(), 1);
    assert!(dead[0].retryable);
    assert_eq!(dead[0].attempts, 3);
    assert!(dead[0].error.starts_with("HTTP 503"), "{}", dead[0].error);
    assert!(dead[0].error.contains("retry budget exhausted"));
    let stats = p.stats().remove(0);
    assert_eq!((stats.retried, stats.failed), (2, 3));
}

#[tokio::test(start_paused = true)]
async fn an_exhausted_time_budget_dead_letters_within_the_budget() {
    let exporter = Arc::new(
        ScriptedExporter::new("down").with_default(Step::FailAll(Failure::retryable("HTTP 503"))),
    );
    let p = pipeline(
        &exporter,
        fast()
            .with_initial_backoff(Duration::from_millis(500))
            .with_max_backoff(Duration::from_secs(2))
            .with_max_attempts(None)
            .with_max_elapsed(Some(Duration::from_secs(5))),
    );
    p.submit(event(0)).await.expect("open");
    let report = p.shutdown(Duration::from_secs(60)).await.remove(0);
    assert_eq!(report.dead_lettered, 1);
    assert!(!report.deadline_reached);
    let times = exporter.call_times();
    assert!(times.len() >= 2);
    assert!(
        times[times.len() - 1] - times[0] <= Duration::from_secs(5),
        "retried past the time budget"
    );
}

#[tokio::test(start_paused = true)]
async fn batches_are_cut_by_count_then_by_age() {
    let exporter = Arc::new(ScriptedExporter::new("counted"));
    let p = pipeline(
        &exporter,
        fast()
            .with_max_batch_events(4)
            .with_flush_interval(Duration::from_secs(1)),
    );
    let start = Instant::now();
    for i in 0..10 {
        p.submit(event(i)).await.expect("open");
    }
    exporter.wait_for_exported(10).await;
    assert_eq!(exporter.batches(), vec![ids(0..4), ids(4..8), ids(8..10)]);
    let times = exporter.call_times();
    assert_eq!(times[0], start, "a full batch goes at once");
    assert_eq!(
        times[2] - start,
        Duration::from_secs(1),
        "a partial batch waits for the flush interval"
    );
    p.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
async fn batches_are_cut_by_the_exporters_size_estimate() {
    let exporter = Arc::new(ScriptedExporter::new("sized").with_size_estimate(100));
    let p = pipeline(
        &exporter,
        fast().with_max_batch_events(1000).with_max_batch_bytes(350),
    );
    for i in 0..10 {
        p.submit(event(i)).await.expect("open");
    }
    p.shutdown(Duration::from_secs(10)).await;
    assert_eq!(
        exporter.batches(),
        vec![ids(0..3), ids(3..6), ids(6..9), ids(9..10)]
    );

    // An event larger than the limit is sent alone, never dropped.
    let big = Arc::new(ScriptedExporter::new("big").with_size_estimate(1_000));
    let p = pipeline(&big, fast().with_max_batch_bytes(350));
    for i in 0..3 {
        p.submit(event(i)).await.expect("open");
    }
    p.shutdown(Duration::from_secs(10)).await;
    assert_eq!(big.batches(), vec![ids(0..1), ids(1..2), ids(2..3)]);
}

#[tokio::test(start_paused = true)]
async fn dead_letters_rotate_by_size() {
    let exporter = Arc::new(
        ScriptedExporter::new("rejecting")
            .with_default(Step::FailAll(Failure::permanent("HTTP 400"))),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let dlq = dir.path().join("dlq.jsonl");
    let p = pipeline(
        &exporter,
        fast()
            .with_max_batch_events(1)
            .with_concurrency(1)
            .with_dead_letter_path(&dlq)
            .with_dead_letter_max_file_bytes(2_000)
            .with_dead_letter_max_files(2),
    );
    for i in 0..20 {
        p.submit(event(i)).await.expect("open");
    }
    let report = p.shutdown(Duration::from_secs(10)).await.remove(0);
    assert_eq!(report.dead_lettered, 20);
    assert_eq!(report.dead_letter_write_failed, 0);
    let rotated1 = dir.path().join("dlq.jsonl.1");
    let rotated2 = dir.path().join("dlq.jsonl.2");
    assert!(
        !dir.path().join("dlq.jsonl.3").exists(),
        "only max_files rotated files are kept"
    );
    let mut kept = Vec::new();
    for path in [&rotated2, &rotated1, &dlq] {
        assert!(
            std::fs::metadata(path).expect("file exists").len() <= 2_000,
            "{} too big",
            path.display()
        );
        kept.extend(
            read_dead_letters(path)
                .into_iter()
                .map(|d| d.event.event_id),
        );
    }
    // The newest events are kept, oldest first across the files; the oldest were rotated away.
    assert!(kept.len() < 20 && !kept.is_empty());
    assert_eq!(kept, ids(20 - kept.len() as u64..20));
}

#[tokio::test(start_paused = true)]
async fn a_failing_dead_letter_write_is_counted_and_never_hangs() {
    let exporter = Arc::new(
        ScriptedExporter::new("rejecting")
            .with_default(Step::FailAll(Failure::permanent("HTTP 400"))),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    // A regular file where the directory should be: opening fails even for root (where a
    // read-only directory would not).
    let not_a_dir = dir.path().join("not-a-directory");
    std::fs::write(&not_a_dir, b"").expect("write");
    let p = pipeline(
        &exporter,
        fast().with_dead_letter_path(not_a_dir.join("dlq.jsonl")),
    );
    for i in 0..5 {
        p.submit(event(i)).await.expect("open");
    }
    let report = p.shutdown(Duration::from_secs(10)).await.remove(0);
    assert!(
        !report.deadline_reached,
        "a failing write must not stall the lane"
    );
    assert_eq!(
        report.dead_lettered, 5,
        "the events are still accounted for"
    );
    assert_eq!(report.dead_letter_write_failed, 5);
    assert_eq!(p.stats()[0].dead_letter_write_failed, 5);
}

/// A dead-letter line that a full disk cuts short is cut back off, so the next line (once
/// there is room) starts on a line of its own and every line reads back. The disk is "full" for
/// real: the first pipeline runs in a child process (this test again) whose files may not grow
/// past 2 KiB (`ulimit -f`, `SIGXFSZ` ignored): a line crossing it gets a short write, then
/// `EFBIG`, as `ENOSPC` would.
#[tokio::test]
async fn a_dead_letter_cut_short_by_a_full_disk_leaves_no_half_line() {
    const CHILD: &str = "CLAWDSTRIKE_TEST_DEAD_LETTER_CHILD";
    const NAME: &str = "a_dead_letter_cut_short_by_a_full_disk_leaves_no_half_line";
    let rejecting = || {
        Arc::new(
            ScriptedExporter::new("rejecting")
                .with_default(Step::FailAll(Failure::permanent("HTTP 400"))),
        )
    };
    async fn dead_letter(
        exporter: &Arc<ScriptedExporter>,
        dlq: &Path,
        range: std::ops::Range<u64>,
    ) -> (u64, u64) {
        let p = pipeline(
            exporter,
            fast().with_max_batch_events(100).with_dead_letter_path(dlq),
        );
        for i in range {
            p.submit(event(i)).await.expect("open");
        }
        let report = p.shutdown(Duration::from_secs(10)).await.remove(0);
        (report.dead_lettered, report.dead_letter_write_failed)
    }
    if let Some(dlq) = std::env::var_os(CHILD) {
        let (dead, failed) = dead_letter(&rejecting(), Path::new(&dlq), 0..6).await;
        println!("child: dead_lettered {dead} write_failed {failed}");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let dlq = dir.path().join("dlq.jsonl");
    let stdout = common::rerun_with_file_size_limit(NAME, CHILD, dlq.as_os_str(), 4);
    let line = stdout
        .lines()
        .find_map(|l| {
            l.split_once("child: dead_lettered 6 write_failed ")
                .map(|(_, n)| n)
        })
        .unwrap_or_else(|| panic!("the child's report: {stdout}"));
    let failed: usize = line.trim().parse().expect("a count");
    let kept = std::fs::read(&dlq).expect("the dead-letter file");
    let whole = kept.iter().filter(|&&b| b == b'\n').count();
    assert!(
        (1..6).contains(&failed) && whole == 6 - failed,
        "the limit cut a line ({failed} failed, {whole} whole lines)"
    );
    assert!(
        kept.ends_with(b"\n"),
        "no part of the cut line is left: {} bytes, ending {:?}",
        kept.len(),
        String::from_utf8_lossy(&kept[kept.len().saturating_sub(40)..])
    );

    // With room again, the next dead letter starts a line of its own: every line reads back.
    assert_eq!(dead_letter(&rejecting(), &dlq, 6..7).await, (1, 0));
    let read = read_dead_letters(&dlq);
    assert_eq!(read.len(), 6 - failed + 1);
    assert_eq!(read.last().map(|d| d.event.event_id), Some(id(6)));
}

#[derive(Debug, Default)]
struct Recorder {
    settled: Mutex<Vec<(usize, u64, Settlement)>>,
    batches: Mutex<Vec<(u32, usize, usize)>>,
}

impl SettleHook for Recorder {
    fn settled(&self, exporter: usize, _name: &str, seqs: &[u64], how: Settlement) {
        let mut settled = self.settled.lock().expect("lock");
        settled.extend(seqs.iter().map(|&s| (exporter, s, how)));
    }
}

impl BatchObserver for Recorder {
    fn observe(&self, outcome: &BatchOutcome<'_>) {
        self.batches.lock().expect("lock").push((
            outcome.attempt,
            outcome.events,
            outcome.exported,
        ));
    }
}

#[tokio::test(start_paused = true)]
async fn the_settle_hook_reports_each_sequence_number_once_and_skips_left_behind() {
    let good = Arc::new(ScriptedExporter::new("good").with_per_event(|record, _| {
        (record.event.event_id == id(2)).then(|| Failure::permanent("bad"))
    }));
    let stuck = Arc::new(ScriptedExporter::new("stuck").with_default(Step::HangForever));
    let recorder = Arc::new(Recorder::default());
    let p = Pipeline::builder()
        .with_exporter(good.clone(), fast())
        .with_exporter(
            stuck.clone(),
            fast()
                .with_queue_capacity(2)
                .with_when_full(WhenFull::DropNewest)
                .with_filter(FilterConfig::default().with_min_severity(Severity::High)),
        )
        .with_settle_hook(recorder.clone())
        .with_batch_observer(recorder.clone())
        .build()
        .expect("valid");
    for (i, severity) in [
        Severity::High,
        Severity::Low,
        Severity::High,
        Severity::High,
        Severity::Critical,
    ]
    .into_iter()
    .enumerate()
    {
        let i = i as u64;
        p.submit_with_seq(
            event_with(i, EventType::ForbiddenPath, "g", severity),
            100 + i,
        )
        .await
        .expect("open");
    }
    let reports = p.shutdown(Duration::from_secs(5)).await;
    let mut settled = recorder.settled.lock().expect("lock").clone();
    settled.sort_by_key(|&(e, s, _)| (e, s));
    let full = Settlement::Dropped(clawdstrike_export::DropReason::QueueFullNewest);
    assert_eq!(
        settled,
        vec![
            (0, 100, Settlement::Delivered),
            (0, 101, Settlement::Delivered),
            (0, 102, Settlement::DeadLettered),
            (0, 103, Settlement::Delivered),
            (0, 104, Settlement::Delivered),
            // seq 100 and 102 are queued then left behind at the deadline: not settled.
            (1, 101, Settlement::Filtered),
            (1, 103, full),
            (1, 104, full),
        ]
    );
    assert_eq!(reports[1].left_behind, 2);
    assert_eq!(
        recorder.batches.lock().expect("lock").as_slice(),
        &[(1, 5, 4)]
    );
}

#[tokio::test(start_paused = true)]
async fn stats_track_latency_in_flight_and_queue_depth() {
    let exporter = Arc::new(
        ScriptedExporter::new("slow")
            .with_default(Step::Delay(
                Duration::from_millis(30),
                Box::new(Step::Succeed),
            ))
            .with_script([Step::WaitForRelease(Box::new(Step::Succeed))]),
    );
    let p = pipeline(
        &exporter,
        fast().with_max_batch_events(10).with_concurrency(1),
    );
    for i in 0..35 {
        p.submit(event(i)).await.expect("open");
    }
    exporter.wait_for_calls(1).await;
    let stats = p.stats().remove(0);
    assert_eq!((stats.in_flight_batches, stats.in_flight_events), (1, 10));
    assert_eq!(stats.queue_depth, 25);
    assert_eq!(stats.accepted, 35);
    exporter.release();
    assert_eq!(
        p.health_checks().await,
        vec![("slow".to_owned(), clawdstrike_export::Health::Healthy)]
    );
    let report = p.shutdown(Duration::from_secs(10)).await.remove(0);
    assert_eq!(report.delivered, 35);
    let stats = p.stats().remove(0);
    assert_eq!(
        (
            stats.in_flight_batches,
            stats.in_flight_events,
            stats.queue_depth
        ),
        (0, 0, 0)
    );
    assert_eq!(stats.batches, 4);
    let latency = stats.export_latency;
    assert_eq!(latency.count(), 4);
    assert_eq!(
        latency.p50(),
        Duration::from_millis(50),
        "30 ms calls land in the 50 ms bucket"
    );
    assert_eq!(latency.counts().len(), latency.bounds_micros().len() + 1);
}

#[derive(Debug)]
struct PanicsOnce(std::sync::atomic::AtomicBool, Arc<ScriptedExporter>);

#[async_trait]
impl Exporter for PanicsOnce {
    fn name(&self) -> &str {
        "panics-once"
    }
    async fn export(&self, batch: &[Record]) -> ExportResult {
        if !self.0.swap(true, std::sync::atomic::Ordering::SeqCst) {
            panic!("exporter bug");
        }
        self.1.export(batch).await
    }
}

#[tokio::test(start_paused = true)]
async fn a_panicking_export_is_retried_not_lost() {
    let inner = Arc::new(ScriptedExporter::new("inner"));
    let exporter = Arc::new(PanicsOnce(false.into(), inner.clone()));
    let p = Pipeline::builder()
        .with_exporter(exporter, fast())
        .build()
        .expect("valid");
    for i in 0..3 {
        p.submit(event(i)).await.expect("open");
    }
    let report = p.shutdown(Duration::from_secs(10)).await.remove(0);
    assert_eq!(report.delivered, 3);
    assert_eq!(sorted(inner.exported_ids()), ids(0..3));
}

/// An exporter whose `estimate_size` always panics (a bug in another team's exporter).
#[derive(Debug)]
struct PanicsInEstimate(Arc<ScriptedExporter>);

#[async_trait]
impl Exporter for PanicsInEstimate {
    fn name(&self) -> &str {
        "panics-in-estimate"
    }
    fn estimate_size(&self, _record: &Record) -> usize {
        panic!("estimate bug");
    }
    async fn export(&self, batch: &[Record]) -> ExportResult {
        self.0.export(batch).await
    }
}

/// A settle hook and a batch observer that panic on every call.
#[derive(Debug)]
struct PanickingHooks;

impl SettleHook for PanickingHooks {
    fn settled(&self, _exporter: usize, _name: &str, _seqs: &[u64], _how: Settlement) {
        panic!("hook bug");
    }
}

impl BatchObserver for PanickingHooks {
    fn observe(&self, _outcome: &BatchOutcome<'_>) {
        panic!("observer bug");
    }
}

/// User code the pipeline calls besides `export` — `estimate_size`, the settle hook, the batch
/// observer — may panic: every event is still delivered and the books still balance (before,
/// a panicking estimate killed the batcher and left the queue stuck and uncounted, and a
/// panicking hook killed the batch task before it released its in-flight count).
#[tokio::test(start_paused = true)]
async fn panics_in_estimate_size_and_hooks_lose_nothing() {
    let inner = Arc::new(ScriptedExporter::new("inner"));
    let p = Pipeline::builder()
        .with_exporter(
            Arc::new(PanicsInEstimate(inner.clone())),
            fast().with_max_batch_events(4),
        )
        .with_settle_hook(Arc::new(PanickingHooks))
        .with_batch_observer(Arc::new(PanickingHooks))
        .build()
        .expect("valid");
    for i in 0..10 {
        p.submit(event(i)).await.expect("open");
    }
    let report = p.shutdown(Duration::from_secs(10)).await.remove(0);
    assert_eq!(
        (
            report.delivered,
            report.left_behind,
            report.deadline_reached
        ),
        (10, 0, false)
    );
    assert_eq!(sorted(inner.exported_ids()), ids(0..10));
    let stats = p.stats().remove(0);
    assert_eq!(
        (
            stats.in_flight_batches,
            stats.in_flight_events,
            stats.queue_depth
        ),
        (0, 0, 0)
    );
}

/// Two shutdowns at once: the second waits for the first and returns the same, final, report
/// (before, it could report as soon as the in-flight batches were done, before the exporter's
/// own shutdown had run).
#[tokio::test(start_paused = true)]
async fn a_concurrent_second_shutdown_returns_the_final_report() {
    let exporter = Arc::new(
        ScriptedExporter::new("held").with_default(Step::WaitForRelease(Box::new(Step::Succeed))),
    );
    let p = Pipeline::builder()
        .with_exporter(exporter.clone(), fast().with_max_batch_events(2))
        .build()
        .expect("valid");
    for i in 0..4 {
        p.submit(event(i)).await.expect("open");
    }
    exporter.wait_for_calls(1).await;
    let first = tokio::spawn({
        let p = p.clone();
        async move { p.shutdown(Duration::from_secs(60)).await }
    });
    let second = tokio::spawn({
        let p = p.clone();
        async move { p.shutdown(Duration::from_secs(60)).await }
    });
    tokio::task::yield_now().await;
    exporter.release();
    let (first, second) = (first.await.expect("first"), second.await.expect("second"));
    assert_eq!(first, second);
    assert_eq!(second[0].delivered, 4);
    assert!(second[0].exporter_shutdown_completed);
    assert_eq!(exporter.shutdown_calls(), 1);
}

/// An exporter whose own `shutdown` panics.
#[derive(Debug)]
struct PanicsInShutdown(Arc<ScriptedExporter>);

#[async_trait]
impl Exporter for PanicsInShutdown {
    fn name(&self) -> &str {
        "panics-in-shutdown"
    }
    async fn export(&self, batch: &[Record]) -> ExportResult {
        self.0.export(batch).await
    }
    async fn shutdown(&self) {
        panic!("shutdown bug");
    }
}

/// A panicking exporter `shutdown` is one that did not complete: both of two concurrent
/// shutdowns return that report (before, the first one's task died before publishing it, and
/// the second waited for it forever).
#[tokio::test(start_paused = true)]
async fn a_panicking_exporter_shutdown_still_gives_every_caller_the_report() {
    let inner = Arc::new(ScriptedExporter::new("inner"));
    let p = Pipeline::builder()
        .with_exporter(Arc::new(PanicsInShutdown(inner)), fast())
        .build()
        .expect("valid");
    for i in 0..3 {
        p.submit(event(i)).await.expect("open");
    }
    let (first, second) = tokio::join!(
        p.shutdown(Duration::from_secs(10)),
        tokio::time::timeout(Duration::from_secs(60), p.shutdown(Duration::from_secs(10)))
    );
    let second = second.expect("the second shutdown returns");
    assert_eq!(first, second);
    assert_eq!(first[0].delivered, 3);
    assert!(!first[0].exporter_shutdown_completed);
}

/// Opens the FIFO's read side when dropped, so that a writer blocked on it (and the runtime
/// waiting for that writer) is let go even when the test fails before reading it.
struct Unblock(std::path::PathBuf);

impl Drop for Unblock {
    fn drop(&mut self) {
        use std::os::unix::fs::OpenOptionsExt;
        const O_NONBLOCK: i32 = 0o4000;
        let _ = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(O_NONBLOCK)
            .open(&self.0);
    }
}

/// A dead-letter write still blocked when the deadline passes (here the dead-letter path is a
/// FIFO nobody reads yet) is reported as unfinished, not passed over; it completes afterwards.
/// On the real clock: a paused one does not advance while a blocking task runs.
#[tokio::test]
async fn a_dead_letter_write_unfinished_at_the_deadline_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fifo = dir.path().join("dlq.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(made.success());
    let exporter = Arc::new(
        ScriptedExporter::new("rejecting")
            .with_default(Step::FailAll(Failure::permanent("HTTP 400"))),
    );
    let p = Pipeline::builder()
        .with_exporter(exporter, fast().with_dead_letter_path(&fifo))
        .build()
        .expect("valid");
    let unblock = Unblock(fifo.clone());
    for i in 0..3 {
        p.submit(event(i)).await.expect("open");
    }
    // The dead letters are counted before their write starts, which blocks on the FIFO.
    let counted = tokio::time::timeout(Duration::from_secs(30), async {
        while p.stats()[0].dead_lettered < 3 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(counted.is_ok(), "the 3 dead letters are counted");
    // ... and no longer counted in flight while their write waits (checked at the end, once
    // the write is let go).
    let during = p.stats().remove(0);
    let report = p.shutdown(Duration::from_millis(100)).await.remove(0);
    assert!(report.deadline_reached);
    assert_eq!(
        (
            report.dead_lettered,
            report.dead_letter_writes_unfinished,
            report.dead_letter_write_failed
        ),
        (3, 3, 0)
    );
    // A reader lets the write finish: every dead letter arrives.
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let file = std::fs::File::open(&fifo).expect("open the FIFO");
        std::io::BufReader::new(file)
            .lines()
            .take(3)
            .map(|l| l.expect("a line"))
            .collect::<Vec<_>>()
    });
    let lines = reader.join().expect("reader");
    assert_eq!(lines.len(), 3);
    assert!(lines.iter().all(|l| l.contains("HTTP 400")), "{lines:?}");
    drop(unblock);
    assert_eq!(during.in_flight_events, 0, "{during:?}");
    assert_eq!(
        during.accepted,
        during.exported + during.dead_lettered + during.dropped.total() + during.queue_depth as u64,
        "{during:?}"
    );
}

#[test]
fn config_reads_yaml_with_documented_defaults_and_rejects_unknown_fields() {
    let yaml = "
queue: { capacity: 5000, when_full: drop_oldest }
batch: { max_events: 500 }
concurrency: 2
retry: { max_attempts: null, max_retry_after_ms: 10000 }
filter: { min_severity: high, exclude_event_types: [session_start], include_guards: [forbidden_path] }
dead_letter: { path: /var/lib/clawdstrike/dlq.jsonl }
";
    let config: ExporterConfig = serde_yaml_ng::from_str(yaml).expect("valid YAML config");
    assert_eq!(config.queue.capacity, 5000);
    assert_eq!(config.queue.when_full, WhenFull::DropOldest);
    assert_eq!(config.batch.max_events, 500);
    assert_eq!(config.batch.max_bytes, 4_250_000);
    assert_eq!(config.batch.flush_interval_ms, 1_000);
    assert_eq!(config.concurrency, 2);
    assert_eq!(config.retry.max_attempts, None);
    assert_eq!(config.retry.initial_backoff_ms, 1_000);
    assert_eq!(config.retry.max_backoff_ms, 30_000);
    assert_eq!(config.retry.max_retry_after_ms, 10_000);
    assert_eq!(config.filter.min_severity, Some(Severity::High));
    assert_eq!(
        config.filter.exclude_event_types,
        vec![EventType::SessionStart]
    );
    assert_eq!(config.dead_letter.max_file_bytes, 50 * 1024 * 1024);
    assert_eq!(config.dead_letter.max_files, 5);

    let defaults = ExporterConfig::default();
    assert_eq!(
        (defaults.queue.capacity, defaults.queue.when_full),
        (5_000, WhenFull::Block)
    );
    assert_eq!(
        (defaults.batch.max_events, defaults.concurrency),
        (1_000, 4)
    );
    assert_eq!(defaults.retry.max_attempts, Some(10));
    assert_eq!(defaults.retry.max_elapsed_ms, Some(300_000));

    let err = serde_yaml_ng::from_str::<ExporterConfig>("queue: { capacty: 5 }").expect_err("typo");
    assert!(err.to_string().contains("capacty"), "{err}");
}

#[tokio::test]
async fn build_rejects_invalid_configurations() {
    let x = || Arc::new(ScriptedExporter::new("x")) as Arc<dyn Exporter>;
    assert_eq!(
        Pipeline::builder().build().expect_err("empty"),
        BuildError::NoExporters
    );
    let err = Pipeline::builder()
        .with_exporter(x(), ExporterConfig::default().with_queue_capacity(0))
        .build();
    match err.expect_err("capacity 0") {
        BuildError::Config { exporter, error } => {
            assert_eq!(exporter, "x");
            assert_eq!(error.field, "queue.capacity");
        }
        other => panic!("unexpected {other}"),
    }
    let err = Pipeline::builder()
        .with_exporter(x(), ExporterConfig::default().with_backoff_multiplier(0.5))
        .build()
        .expect_err("multiplier");
    assert!(err.to_string().contains("retry.multiplier"), "{err}");
    // A zero backoff would retry back to back forever; a zero cap on `Retry-After` would
    // retry at once against a server that asked for time.
    for (config, field) in [
        (
            ExporterConfig::default().with_initial_backoff(Duration::ZERO),
            "retry.initial_backoff_ms",
        ),
        (
            ExporterConfig::default().with_max_retry_after(Duration::ZERO),
            "retry.max_retry_after_ms",
        ),
    ] {
        let err = Pipeline::builder()
            .with_exporter(x(), config)
            .build()
            .expect_err(field);
        assert!(err.to_string().contains(field), "{err}");
    }
    let err = Pipeline::builder()
        .with_exporter(x(), ExporterConfig::default())
        .with_exporter(x(), ExporterConfig::default())
        .build()
        .expect_err("duplicate");
    assert_eq!(err, BuildError::DuplicateName("x".into()));
    // Exporters `x` and `y` with dead-letter files `a` and `b`.
    let two = |a: &Path, b: &Path| {
        Pipeline::builder()
            .with_exporter(x(), ExporterConfig::default().with_dead_letter_path(a))
            .with_exporter(
                Arc::new(ScriptedExporter::new("y")),
                ExporterConfig::default().with_dead_letter_path(b),
            )
            .build()
    };
    let shared = BuildError::SharedDeadLetterFile("x".into(), "y".into());
    let same = Path::new("/tmp/same.jsonl");
    assert_eq!(
        two(same, same).expect_err("shared dead-letter file"),
        shared
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    let dlq = dir.path().join("dlq.jsonl");
    // The same file named two ways is the same file.
    assert_eq!(
        two(&dlq, &dir.path().join("sub/../dlq.jsonl")).expect_err("one file named two ways"),
        shared
    );
    // One exporter's file is the other's rotated name: a rotation would rename it away.
    assert_eq!(
        two(&dlq, &dir.path().join("dlq.jsonl.2")).expect_err("a file and another's rotated name"),
        shared
    );
    // A hard link to an existing file, or to its rotated one, is that file.
    std::fs::write(&dlq, "").unwrap();
    std::fs::write(dir.path().join("dlq.jsonl.1"), "").unwrap();
    for (target, link) in [
        ("dlq.jsonl", "linked.jsonl"),
        ("dlq.jsonl.1", "linked-1.jsonl"),
    ] {
        let link = dir.path().join(link);
        std::fs::hard_link(dir.path().join(target), &link).unwrap();
        assert_eq!(
            two(&dlq, &link).expect_err("a hard link"),
            shared,
            "{}",
            link.display()
        );
    }
    // Distinct files are fine.
    two(&dlq, &dir.path().join("dlq-y.jsonl")).expect("distinct files");
}

#[test]
fn build_outside_a_runtime_is_an_error() {
    let err = Pipeline::builder()
        .with_exporter(
            Arc::new(ScriptedExporter::new("x")),
            ExporterConfig::default(),
        )
        .build()
        .expect_err("no runtime");
    assert_eq!(err, BuildError::NoRuntime);
}

#[tokio::test(start_paused = true)]
async fn cancelling_a_blocked_submit_takes_the_event_nowhere() {
    let stalled = Arc::new(
        ScriptedExporter::new("stalled")
            .with_default(Step::WaitForRelease(Box::new(Step::Succeed))),
    );
    let open = Arc::new(ScriptedExporter::new("open"));
    let p = Pipeline::builder()
        .with_exporter(open.clone(), fast())
        .with_exporter(
            stalled.clone(),
            fast()
                .with_queue_capacity(1)
                .with_max_batch_events(1)
                .with_concurrency(1),
        )
        .build()
        .expect("valid");
    let mut accepted = 0;
    while p.try_submit(event(accepted)).is_ok() {
        accepted += 1;
        tokio::task::yield_now().await;
    }
    {
        let mut blocked = pin!(p.submit(event(1_000)));
        assert!(futures_util::poll!(&mut blocked).is_pending());
    } // dropped: cancelled
    stalled.release();
    let reports = p.shutdown(Duration::from_secs(10)).await;
    let open_ids: HashSet<Uuid> = open.exported_ids().into_iter().collect();
    assert!(
        !open_ids.contains(&id(1_000)),
        "a cancelled submit reached one exporter of the fan-out"
    );
    assert_eq!(reports[0].submitted, accepted);
    assert_eq!(reports[1].submitted, accepted);
    assert_eq!(reports[0].delivered, accepted);
    assert_eq!(reports[1].delivered, accepted);
}

#[tokio::test(start_paused = true)]
async fn extreme_settings_neither_panic_nor_hang() {
    let exporter = Arc::new(
        ScriptedExporter::new("extreme")
            .with_script([Step::FailAll(Failure::retryable("once")), Step::Succeed]),
    );
    let mut config = fast()
        .with_max_batch_events(2)
        .with_initial_backoff(Duration::from_millis(1));
    config.batch.flush_interval_ms = u64::MAX;
    config.retry.max_backoff_ms = u64::MAX;
    config.retry.multiplier = 1e300;
    config.retry.max_elapsed_ms = Some(u64::MAX);
    let p = pipeline(&exporter, config);
    for i in 0..3 {
        p.submit(event(i)).await.expect("open");
    }
    exporter.wait_for_exported(2).await;
    let report = p.shutdown(Duration::MAX).await.remove(0);
    assert_eq!(
        report.delivered, 3,
        "the never-due partial batch is flushed at shutdown"
    );
    assert!(!report.deadline_reached);
}

/// Holds the first submit in its commit phase: the settle hook, called there for an event the
/// first exporter's filter declined, waits until the test lets it go.
#[derive(Debug)]
struct HoldInCommit {
    entered: Mutex<Option<std::sync::mpsc::Sender<()>>>,
    release: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
}

impl SettleHook for HoldInCommit {
    fn settled(&self, exporter: usize, _name: &str, _seqs: &[u64], how: Settlement) {
        if exporter == 0 && matches!(how, Settlement::Filtered) {
            let entered = self.entered.lock().expect("lock").take();
            if let Some(entered) = entered {
                entered.send(()).expect("the test waits");
                let release = self.release.lock().expect("lock").take();
                release.expect("once").recv().expect("the test releases");
            }
        }
    }
}

/// A submit still in its (await-free) commit phase when the shutdown's deadline passes hands
/// its event to a lane whose batcher has already ended. The event is counted as left behind at
/// the deadline, not kept in a queue nobody reads (where it was in no count at all).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submit_still_committing_at_the_deadline_is_counted_left_behind() {
    let (entered_tx, entered_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel();
    let hook = Arc::new(HoldInCommit {
        entered: Mutex::new(Some(entered_tx)),
        release: Mutex::new(Some(release_rx)),
    });
    let picky = Arc::new(ScriptedExporter::new("picky"));
    let all = Arc::new(ScriptedExporter::new("all"));
    let pipeline = Pipeline::builder()
        .with_exporter(
            picky as _,
            fast().with_filter(FilterConfig::default().with_min_severity(Severity::Critical)),
        )
        .with_exporter(Arc::clone(&all) as _, fast())
        .with_settle_hook(hook)
        .build()
        .expect("valid");
    let submitting = {
        let pipeline = pipeline.clone();
        tokio::spawn(async move { pipeline.submit(event(1)).await })
    };
    tokio::task::spawn_blocking(move || entered_rx.recv().expect("the submit commits"))
        .await
        .unwrap();
    // The shutdown stops waiting for the submit at once (zero deadline), and the second
    // exporter's batcher ends: its queue is closed and empty.
    let reports = pipeline.shutdown(Duration::ZERO).await;
    assert_eq!(reports[1].accepted, 0, "{reports:?}");
    release_tx.send(()).unwrap();
    submitting
        .await
        .unwrap()
        .expect("the submit had passed the gate");

    let stats = &pipeline.stats()[1];
    assert_eq!(stats.accepted, 1, "{stats:?}");
    assert_eq!(stats.queue_depth, 0, "{stats:?}");
    assert_eq!(stats.dropped.shutdown_deadline, 1, "{stats:?}");
    assert_eq!(all.exported_ids(), Vec::<Uuid>::new());
}

/// An exporter written without `async fn`, whose `export` and `shutdown` panic before they
/// return their futures (the first `export` call only).
#[derive(Debug, Default)]
struct PanicsBeforeItsFuture {
    calls: std::sync::atomic::AtomicUsize,
    delivered: Mutex<Vec<Uuid>>,
}

impl Exporter for PanicsBeforeItsFuture {
    fn name(&self) -> &str {
        "early-panic"
    }

    fn export<'life0, 'life1, 'async_trait>(
        &'life0 self,
        batch: &'life1 [Record],
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ExportResult> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        if self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            panic!("bug before the future");
        }
        Box::pin(async move {
            let mut delivered = self.delivered.lock().expect("lock");
            delivered.extend(batch.iter().map(|r| r.event.event_id));
            ExportResult::exported(batch.len())
        })
    }

    fn shutdown<'life0, 'async_trait>(
        &'life0 self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        panic!("bug before the shutdown future");
    }
}

/// A panic in `export` before it returns its future is retried like one inside it, and a
/// panic in `shutdown` before its future still publishes the report, so a second `shutdown`
/// returns it instead of waiting forever.
#[tokio::test(start_paused = true)]
async fn a_panic_before_the_exporters_future_is_caught_like_one_inside_it() {
    let exporter = Arc::new(PanicsBeforeItsFuture::default());
    let p = Pipeline::builder()
        .with_exporter(Arc::clone(&exporter) as _, fast())
        .build()
        .expect("valid");
    p.submit(event(1)).await.expect("open");
    let (first, second) = tokio::time::timeout(Duration::from_secs(600), async {
        tokio::join!(
            p.shutdown(Duration::from_secs(60)),
            p.shutdown(Duration::from_secs(60))
        )
    })
    .await
    .expect("both shutdowns return");
    assert_eq!(*exporter.delivered.lock().unwrap(), ids([1]));
    for reports in [first, second] {
        assert_eq!(reports[0].delivered, 1, "{reports:?}");
        assert!(!reports[0].exporter_shutdown_completed, "{reports:?}");
    }
}

/// While part of a batch waits out a retry, the events already delivered (or dead-lettered)
/// are no longer counted in flight: `accepted == exported + dead_lettered + drops +
/// queue_depth + in_flight_events` holds throughout, not only once the batch task ends.
#[tokio::test(start_paused = true)]
async fn events_leave_in_flight_as_they_settle_not_when_their_batch_ends() {
    let exporter = Arc::new(
        ScriptedExporter::new("partial").with_per_event(|record, seen| {
            (record.event.event_id == id(9) && seen == 0).then(|| Failure::Retryable {
                reason: "slow down".into(),
                retry_after: Some(Duration::from_secs(30)),
            })
        }),
    );
    let p = pipeline(&exporter, fast().with_max_batch_events(10));
    for i in 0..10 {
        p.submit(event(i)).await.expect("open");
    }
    while exporter.calls() < 1 || p.stats()[0].exported < 9 {
        tokio::task::yield_now().await;
    }
    let s = &p.stats()[0];
    assert_eq!((s.exported, s.in_flight_events), (9, 1), "{s:?}");
    assert_eq!(
        s.accepted,
        s.exported
            + s.dead_lettered
            + s.dropped.total()
            + s.queue_depth as u64
            + s.in_flight_events as u64,
        "{s:?}"
    );
    let reports = p.shutdown(Duration::from_secs(120)).await;
    assert_eq!(reports[0].delivered, 10);
    assert_eq!(p.stats()[0].in_flight_events, 0);
}
