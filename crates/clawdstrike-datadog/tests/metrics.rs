//! Metrics transport: limits, failure isolation, DogStatsD, and trace-id conversion.

mod common;

use std::sync::Arc;
use std::time::Duration;

use clawdstrike_datadog::apm::{
    dd_span_id, dd_trace_id, format_traceparent, otel_trace_id, parse_traceparent,
};
use clawdstrike_datadog::catalogue::{MetricKind, SECURITY_METRICS};
use clawdstrike_datadog::encode::Codec;
use clawdstrike_datadog::metrics::{
    FlushReport, MAX_SERIES_COMPRESSED_BYTES, MAX_SERIES_UNCOMPRESSED_BYTES, MetricsReporter,
    MetricsRetry, MetricsTransport, Point, StatsSource, encode_series,
};
use clawdstrike_export::TraceContext;
use clawdstrike_fakeintake::FaultAction;
use clawdstrike_fakeintake::FaultTarget;
use clawdstrike_keys::SecretString;
use common::*;
use proptest::prelude::*;

#[test]
fn large_series_payloads_are_split_within_the_limits() {
    // 60,000 distinct series with long tags: far over one request.
    let points: Vec<Point> = (0..60_000)
        .map(|i| {
            Point::new(
                "clawdstrike",
                &SECURITY_METRICS[0],
                i as f64,
                vec![format!("guard:g{i}"), format!("tenant:{}", "t".repeat(100))],
            )
        })
        .collect();
    let bodies = encode_series(&points, 1_700_000_000, "host", 10);
    assert!(bodies.len() > 1);
    let mut total = 0;
    for gz in &bodies {
        assert!(gz.len() <= MAX_SERIES_COMPRESSED_BYTES);
        let mut text = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut text).unwrap();
        assert!(text.len() <= MAX_SERIES_UNCOMPRESSED_BYTES);
        let v: serde_json::Value = serde_json::from_slice(&text).unwrap();
        let series = v["series"].as_array().unwrap();
        assert_eq!(series[0]["type"], 1);
        assert_eq!(series[0]["interval"], 10);
        total += series.len();
    }
    assert_eq!(total, 60_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_metrics_endpoint_never_delays_logs() {
    let h = Harness::start(Codec::Zstd, static_key(KEY_A), fast_pipeline()).await;
    // Every metrics request hangs until released: Datadog's metrics API down "for minutes".
    h.intake
        .fail_next(FaultTarget::Metrics, 100_000, FaultAction::Stall);
    let pipeline = h.pipeline.clone();
    let stats: StatsSource = Arc::new(move || pipeline.stats().into_iter().next());
    let mut resolved = resolved(&h.intake, Codec::Zstd);
    resolved.metrics.flush_interval_ms = 100;
    let reporter = MetricsReporter::for_exporter(&h.exporter, &resolved, stats)
        .unwrap()
        .with_retry(MetricsRetry {
            attempts: 2,
            backoff: Duration::from_millis(10),
        })
        .spawn();
    // Wait until the reporter is stuck on the intake, then ship logs.
    h.intake
        .wait_until(Duration::from_secs(30), |s| s.stalled_now > 0)
        .await
        .unwrap();
    let events = events(3_000);
    h.submit_all(&events).await;
    h.intake
        .wait_for_items(3_000, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(
        h.intake.stats().stalled_now > 0,
        "metrics were still stalled while all logs arrived"
    );
    let reports = h.pipeline.shutdown(Duration::from_secs(30)).await;
    assert_eq!(reports[0].delivered, 3_000);
    let flushed = reporter.shutdown_within(Duration::from_millis(200)).await;
    h.intake.release_stalled();
    assert_eq!(flushed.sent, 0);
    assert_eq!(h.intake.unique_event_ids(), 3_000);
}

/// A reporter without pipeline stats, with three attempts a millisecond apart.
fn quick_retry_reporter(h: &Harness) -> MetricsReporter {
    let stats: StatsSource = Arc::new(|| None);
    MetricsReporter::for_exporter(&h.exporter, &resolved(&h.intake, Codec::Zstd), stats)
        .unwrap()
        .with_retry(MetricsRetry {
            attempts: 3,
            backoff: Duration::from_millis(1),
        })
}

/// The seconds of the points of `metric` (only those of a value other than 0 when
/// `nonzero`), in order, each once.
fn seconds(
    series: &[clawdstrike_fakeintake::MetricSeries],
    metric: &str,
    nonzero: bool,
) -> Vec<i64> {
    let mut seconds: Vec<i64> = series
        .iter()
        .filter(|s| s.metric == metric)
        .flat_map(|s| s.points.iter())
        .filter(|p| !nonzero || p.value != 0.0)
        .map(|p| p.timestamp)
        .collect();
    seconds.sort_unstable();
    seconds.dedup();
    seconds
}

/// How many requests reached the series endpoint.
fn series_requests(h: &Harness) -> usize {
    h.intake
        .requests()
        .iter()
        .filter(|r| r.endpoint == clawdstrike_fakeintake::Endpoint::Series)
        .count()
}

/// The flush after `first` reported its dropped points; then the pipeline stops.
async fn dropped_points_were_counted(h: Harness, dropped: u64) {
    assert_eq!(
        h.intake
            .metric_sum("clawdstrike.exporter.metrics.dropped", &[]) as u64,
        dropped
    );
    h.pipeline.shutdown(Duration::from_secs(10)).await;
}

/// Ten events delivered, then a flush while every metrics request answers `status`.
async fn flush_failing_with(status: u16) -> (Harness, MetricsReporter, FlushReport) {
    let h = Harness::start(Codec::Zstd, static_key(KEY_A), fast_pipeline()).await;
    h.intake
        .fail_next(FaultTarget::Metrics, 100_000, FaultAction::status(status));
    let mut reporter = quick_retry_reporter(&h);
    h.submit_all(&events(10)).await;
    wait_sent(&h.exporter, 10).await;
    let first = reporter.flush().await;
    (h, reporter, first)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_failures_carry_counts_and_drop_gauges_with_a_count_after_their_own_budget() {
    let (h, mut reporter, first) = flush_failing_with(503).await;
    assert_eq!(first.sent, 0);
    assert!(first.dropped > 0, "gauges are dropped: {first:?}");
    assert!(first.carried > 0, "counts are kept: {first:?}");
    // Three attempts per request, no more.
    assert_eq!(series_requests(&h), 3);
    // The next successful flush reports how many points were dropped.
    h.intake.clear_faults();
    let second = reporter.flush().await;
    assert!(second.sent > 0);
    assert_eq!(second.carried, 0);
    // In the same request as the next flush's points (a backlog of many failed flushes must
    // not cost a request each).
    assert_eq!(series_requests(&h), 4);
    // The failed interval's counts arrived with the next: the 10 events are counted, once.
    assert_eq!(
        h.intake.metric_sum("clawdstrike.events.total", &[]) as u64,
        10
    );
    // Under the failed flush's own timestamp, not the next one's: a rate over them shows no
    // spike (merged into the next flush's counts, the 10 looked like twice the rate).
    let series = h.intake.series();
    let second_flush = seconds(&series, "clawdstrike.exporter.api_key.valid", false);
    let carried = seconds(&series, "clawdstrike.events.total", true);
    // (The failed flush's gauges were dropped: every api_key.valid point is the next flush's.)
    assert!(!second_flush.is_empty() && !carried.is_empty());
    assert!(
        carried.iter().all(|t| second_flush.iter().all(|s| t < s)),
        "carried at {carried:?}, the next flush at {second_flush:?}"
    );
    // With the failed flush's interval too: the configured 10 s, it having no flush before it
    // (the next flush covers the one second since).
    let intervals: Vec<Option<i64>> = series
        .iter()
        .filter(|s| s.metric == "clawdstrike.events.total")
        .map(|s| s.interval)
        .collect();
    assert!(intervals.iter().all(|i| *i == Some(10)), "{intervals:?}");
    assert_eq!(
        h.intake.metric_stored_sum("clawdstrike.events.total", &[]) as u64,
        10,
        "and kept by Datadog"
    );
    assert_eq!(
        h.intake.metric_sum("clawdstrike.exporter.events.sent", &[]) as u64,
        10
    );
    dropped_points_were_counted(h, first.dropped).await;
}

/// Two flushes fail in a row: the counts of each are kept under their own second, sent with
/// the flush that succeeds, and stored once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_kept_over_two_failed_flushes_are_each_stored_once() {
    let (h, mut reporter, first) = flush_failing_with(503).await;
    assert!(first.carried > 0, "{first:?}");
    h.submit_all(&events(5)).await;
    wait_sent(&h.exporter, 15).await;
    let again = reporter.flush().await;
    assert!(again.carried > first.carried, "{again:?}");
    h.intake.clear_faults();
    let last = reporter.flush().await;
    assert_eq!(last.carried, 0, "{last:?}");
    // Each failed flush's counts under its own second, both before the last flush's.
    let series = h.intake.series();
    let kept = seconds(&series, "clawdstrike.events.total", true);
    let last_stamp = *seconds(&series, "clawdstrike.exporter.api_key.valid", false)
        .last()
        .unwrap();
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert!(
        kept.iter().all(|&t| t < last_stamp),
        "{kept:?} vs {last_stamp}"
    );
    assert_eq!(
        h.intake.metric_stored_sum("clawdstrike.events.total", &[]) as u64,
        15
    );
    assert_eq!(
        series_requests(&h),
        3 + 3 + 1,
        "the backlog goes in one request"
    );
}

/// A series request refused for good (400) is not carried: it would be refused again at
/// every flush. Its points are dropped and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_metrics_request_is_dropped_not_carried() {
    let (h, mut reporter, first) = flush_failing_with(400).await;
    assert_eq!((first.sent, first.carried), (0, 0), "{first:?}");
    assert!(first.dropped > 0, "{first:?}");
    // Refused again: the dropped-points count goes down with its request, and is not lost.
    let again = reporter.flush().await;
    assert_eq!((again.sent, again.carried), (0, 0), "{again:?}");
    h.intake.clear_faults();
    let second = reporter.flush().await;
    assert!(second.sent > 0);
    assert_eq!(h.intake.metric_sum("clawdstrike.events.total", &[]), 0.0);
    dropped_points_were_counted(h, first.dropped + again.dropped).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_metrics_request_waits_for_the_time_the_server_asks() {
    // `Retry-After`, or else Datadog's `X-RateLimit-Reset`: 20 s here, far longer than the
    // one-millisecond backoff. The reporter must not come back within it.
    for (name, action) in [
        ("Retry-After", FaultAction::status_with_retry_after(429, 20)),
        (
            "X-RateLimit-Reset",
            FaultAction::RateLimited {
                limit: 100,
                period: 60,
                reset: 20,
            },
        ),
    ] {
        let h = Harness::start(Codec::Zstd, static_key(KEY_A), fast_pipeline()).await;
        h.intake.fail_next(FaultTarget::Metrics, 1, action);
        let mut reporter = quick_retry_reporter(&h);
        // The flush is still waiting for its retry when this gives up on it.
        let flushed = tokio::time::timeout(Duration::from_secs(2), reporter.flush()).await;
        assert!(flushed.is_err(), "{name}: the flush did not wait");
        let series = series_requests(&h);
        assert_eq!(series, 1, "{name}: came back before the time asked");
        h.pipeline.shutdown(Duration::from_secs(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_are_never_overwritten_by_a_flush_in_the_same_second() {
    // Datadog keeps one value per series and second, the last one sent, which
    // `metric_stored_sum` models. With a tenth-of-a-second interval, a count sent at one tick
    // would be overwritten by the next tick's zero; and the final flush at shutdown, right
    // after a scheduled one, would overwrite it too.
    let h = Harness::start(Codec::Zstd, static_key(KEY_A), fast_pipeline()).await;
    let mut resolved = resolved(&h.intake, Codec::Zstd);
    resolved.metrics.flush_interval_ms = 100;
    let stats: StatsSource = Arc::new(|| None);
    let reporter = MetricsReporter::for_exporter(&h.exporter, &resolved, stats)
        .unwrap()
        .spawn();
    let sent = "clawdstrike.exporter.events.sent";
    let all = events(300);
    for (round, chunk) in all.chunks(100).enumerate() {
        h.submit_all(chunk).await;
        let total = 100.0 * (round + 1) as f64;
        // The schedule sends this chunk's count.
        h.intake
            .wait_until(Duration::from_secs(30), |_| {
                h.intake.metric_sum(sent, &[]) >= total
            })
            .await
            .unwrap();
    }
    let last = reporter.shutdown().await;
    assert!(last.sent > 0, "the final flush sent nothing");
    assert_eq!(h.intake.metric_sum(sent, &[]), 300.0);
    assert_eq!(
        h.intake.metric_stored_sum(sent, &[]),
        300.0,
        "counts were overwritten by later points of the same series and second"
    );
    // Nor are the points stamped ever further ahead to keep them apart: the schedule waits
    // for the next second, and only the final flush may take the one after.
    let now = chrono::Utc::now().timestamp();
    let ahead = h
        .intake
        .series()
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.timestamp - now))
        .max()
        .unwrap();
    assert!(ahead <= 1, "points stamped {ahead} s ahead of the clock");
    h.pipeline.shutdown(Duration::from_secs(10)).await;
}

/// Every exporter metric arrives with the tags the catalogue (and so the dashboards and
/// monitors checked against it) says it has, and no other but the common ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exporter_metrics_carry_the_tags_the_catalogue_declares() {
    use clawdstrike_datadog::catalogue::EXPORTER_METRICS;
    let h = Harness::start(Codec::Zstd, static_key(KEY_A), fast_pipeline()).await;
    let pipeline = h.pipeline.clone();
    let stats: StatsSource = Arc::new(move || pipeline.stats().into_iter().next());
    let resolved = resolved(&h.intake, Codec::Zstd);
    let mut reporter = MetricsReporter::for_exporter(&h.exporter, &resolved, stats).unwrap();
    h.submit_all(&events(20)).await;
    wait_sent(&h.exporter, 20).await;
    assert!(reporter.flush().await.sent > 0);
    let series = h.intake.series();
    let common = ["env", "service", "version"];
    let mut seen = 0;
    for metric in EXPORTER_METRICS {
        let name = format!("clawdstrike.{}", metric.name);
        for s in series.iter().filter(|s| s.metric == name) {
            seen += 1;
            let keys: Vec<&str> = s
                .tags
                .iter()
                .map(|t| t.split_once(':').map_or(t.as_str(), |(k, _)| k))
                .collect();
            for declared in metric.tags {
                assert!(
                    keys.contains(declared),
                    "{name}: no `{declared}` tag in {:?}",
                    s.tags
                );
            }
            for key in &keys {
                assert!(
                    metric.tags.contains(key) || common.contains(key),
                    "{name}: undeclared tag `{key}`"
                );
            }
        }
    }
    assert!(seen >= 10, "only {seen} exporter series arrived");
    h.pipeline.shutdown(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dogstatsd_over_udp() {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let h = Harness::start(Codec::Zstd, static_key(KEY_A), fast_pipeline()).await;
    let mut resolved = resolved(&h.intake, Codec::Zstd);
    resolved.metrics.transport = Some(MetricsTransport::Dogstatsd(format!("udp://{addr}")));
    let mut reporter =
        MetricsReporter::for_exporter(&h.exporter, &resolved, Arc::new(|| None)).unwrap();
    h.submit_all(&events(42)).await;
    wait_sent(&h.exporter, 42).await;
    let report = reporter.flush().await;
    assert!(report.sent > 0);
    let text = receive_until(&socket, "clawdstrike.exporter.events.sent").await;
    let total: f64 = text
        .lines()
        .filter(|l| l.starts_with("clawdstrike.events.total:"))
        .map(|l| l.split(['|', ':']).nth(1).unwrap().parse::<f64>().unwrap())
        .sum();
    assert_eq!(total, 42.0, "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("clawdstrike.exporter.events.sent:42|c|#exporter:datadog_test")),
        "{text}"
    );
    assert_eq!(series_requests(&h), 0);
    h.pipeline.shutdown(Duration::from_secs(10)).await;
}

/// Both datagram sockets DogStatsD speaks over.
trait Datagrams {
    async fn receive(&self, buf: &mut [u8]) -> std::io::Result<usize>;
}

impl Datagrams for tokio::net::UdpSocket {
    async fn receive(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.recv(buf).await
    }
}

impl Datagrams for tokio::net::UnixDatagram {
    async fn receive(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.recv(buf).await
    }
}

/// Reads datagrams until the text contains `needle`; each wait bounded by a deadline.
async fn receive_until(socket: &impl Datagrams, needle: &str) -> String {
    let mut text = String::new();
    let mut buf = vec![0u8; 65_536];
    while !text.contains(needle) {
        let n = tokio::time::timeout(Duration::from_secs(10), socket.receive(&mut buf))
            .await
            .unwrap()
            .unwrap();
        text.push_str(std::str::from_utf8(&buf[..n]).unwrap());
        text.push('\n');
    }
    text
}

#[test]
fn every_catalogue_metric_kind_is_known() {
    assert!(SECURITY_METRICS.iter().all(|m| m.kind == MetricKind::Count));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn trace_and_span_ids_convert_as_defined(trace_id in 1u128.., span_id in 1u64.., sampled in any::<bool>()) {
        let ctx = TraceContext { trace_id, span_id, sampled };
        // dd.trace_id: the lower 64 bits, unsigned decimal.
        prop_assert_eq!(dd_trace_id(trace_id), (trace_id & u128::from(u64::MAX)).to_string());
        prop_assert_eq!(dd_trace_id(trace_id).parse::<u64>().unwrap(), trace_id as u64);
        prop_assert_eq!(dd_span_id(span_id).parse::<u64>().unwrap(), span_id);
        // otel.trace_id: 32 lowercase hex digits of the full id.
        let hex = otel_trace_id(trace_id);
        prop_assert_eq!(hex.len(), 32);
        prop_assert!(hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        prop_assert_eq!(u128::from_str_radix(&hex, 16).unwrap(), trace_id);
        // traceparent round trip.
        prop_assert_eq!(parse_traceparent(&format_traceparent(&ctx)), Some(ctx));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dogstatsd_over_a_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dsd.socket");
    let socket = tokio::net::UnixDatagram::bind(&path).unwrap();
    let h = Harness::start(Codec::Zstd, static_key(KEY_A), fast_pipeline()).await;
    let mut resolved = resolved(&h.intake, Codec::Zstd);
    resolved.metrics.transport = Some(MetricsTransport::Dogstatsd(format!(
        "unix://{}",
        path.display()
    )));
    let mut reporter =
        MetricsReporter::for_exporter(&h.exporter, &resolved, Arc::new(|| None)).unwrap();
    h.submit_all(&events(7)).await;
    wait_sent(&h.exporter, 7).await;
    assert!(reporter.flush().await.sent > 0);
    let text = receive_until(&socket, "clawdstrike.exporter.events.sent").await;
    assert!(
        text.lines()
            .any(|l| l.starts_with("clawdstrike.exporter.events.sent:7|c|#exporter:datadog_test")),
        "{text}"
    );
    h.pipeline.shutdown(Duration::from_secs(10)).await;
}

/// A key rotated with the old one revoked at once, while no security event flows (so no logs
/// request meets the rejection first): the metrics request that is refused reads the key
/// again and goes again with the new one, instead of dropping its points until the next
/// scheduled refresh, minutes later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_key_is_read_again_and_the_metrics_go_with_the_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let (holder, key_file) = file_key(dir.path(), KEY_A).await;
    let h = Harness::start(Codec::Zstd, holder.clone(), fast_pipeline()).await;
    let mut reporter = quick_retry_reporter(&h);
    h.submit_all(&events(10)).await;
    wait_sent(&h.exporter, 10).await;

    std::fs::write(&key_file, KEY_B).unwrap();
    h.intake.set_api_keys([SecretString::from(KEY_B)]);
    let report = reporter.flush().await;
    assert_eq!(report.dropped, 0, "{report:?}");
    assert!(report.sent > 0, "{report:?}");
    assert_eq!(holder.current().expose(), KEY_B);
    assert_eq!(
        h.intake.metric_sum("clawdstrike.exporter.events.sent", &[]),
        10.0
    );
    h.pipeline.shutdown(Duration::from_secs(10)).await;
}
