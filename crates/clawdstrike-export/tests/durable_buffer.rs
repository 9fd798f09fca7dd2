//! The durable buffer against real files: replay, acknowledgement-based removal, torn and
//! corrupt records, the byte bound with each `when_full` policy, configuration.

#![cfg(feature = "testing")]

mod common;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use clawdstrike_export::testing::{ScriptedExporter, Step};
use clawdstrike_export::{
    BufferConfig, DiskBufferConfig, DurablePipeline, DurableSubmitError, ExporterConfig, Failure,
    FsyncPolicy, Pipeline, Record, TraceContext, WhenFull,
};
use clawdstrike_schema::{EventType, ResourceType, SecurityEvent, Severity, Timestamp, Uuid};

fn id(i: u64) -> Uuid {
    Uuid::from_u128(u128::from(i) + 1)
}

/// Event `i`; every third one carries a trace context derived from `i`.
fn record(i: u64) -> Record {
    let event = SecurityEvent::builder(EventType::ForbiddenPath)
        .event_id(id(i))
        .timestamp(Timestamp::from_unix(1_790_000_000 + i as i64, 123_456_789).expect("valid time"))
        .label("n", i.to_string())
        .agent_id("agent-7")
        .session_id("sess-123")
        .action("file_access")
        .denied(
            "forbidden_path",
            Severity::High,
            "access to a forbidden path",
        )
        .resource(ResourceType::File, "/home/user/.ssh/id_rsa")
        .build()
        .expect("valid event");
    let record = Record::new(event);
    if i.is_multiple_of(3) {
        record.with_trace(trace(i))
    } else {
        record
    }
}

fn trace(i: u64) -> TraceContext {
    TraceContext {
        trace_id: 0xabc0_0000_0000_0000_0000_0000_0000_0000 | u128::from(i),
        span_id: 0x1000 + i,
        sampled: i.is_multiple_of(2),
    }
}

fn fast() -> ExporterConfig {
    ExporterConfig::default()
        .with_flush_interval(Duration::from_millis(5))
        .with_initial_backoff(Duration::from_millis(5))
        .with_max_backoff(Duration::from_millis(20))
}

fn config(dir: &Path) -> DiskBufferConfig {
    DiskBufferConfig::new(dir).with_fsync(FsyncPolicy::Never)
}

async fn open(
    config: &DiskBufferConfig,
    exporter: &Arc<ScriptedExporter>,
    pipeline: ExporterConfig,
) -> (DurablePipeline, clawdstrike_export::OpenReport) {
    let builder = Pipeline::builder().with_exporter(Arc::clone(exporter) as _, pipeline);
    DurablePipeline::open(config, builder)
        .await
        .expect("the buffer opens")
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    files.sort();
    files
}

/// Submits `range` while the exporter never answers, then shuts down with a short deadline:
/// every event is left behind in the log (the same state a crash leaves).
async fn leave_behind(dir: &Path, range: std::ops::Range<u64>) {
    leave_behind_in(&config(dir), range).await;
}

/// [`leave_behind`] with the buffer configured as `cfg`.
async fn leave_behind_in(cfg: &DiskBufferConfig, range: std::ops::Range<u64>) {
    let stuck = Arc::new(ScriptedExporter::new("stuck").with_default(Step::HangForever));
    let (durable, _) = open(cfg, &stuck, fast()).await;
    for i in range.clone() {
        durable.submit(record(i)).await.unwrap();
    }
    let reports = durable.shutdown(Duration::from_millis(50)).await;
    assert_eq!(reports[0].left_behind, range.end - range.start);
    assert_eq!(durable.buffer_stats().unsettled, range.end - range.start);
}

/// Opens the log at `cfg` behind an exporter that accepts everything, waits for the replay and
/// shuts down: what the open found, the ids replayed (in order) and the buffer's counters.
async fn replay_all(
    cfg: &DiskBufferConfig,
) -> (
    clawdstrike_export::OpenReport,
    Vec<Uuid>,
    clawdstrike_export::BufferStats,
) {
    let exporter = Arc::new(ScriptedExporter::new("ok"));
    let (durable, found) = open(cfg, &exporter, fast()).await;
    durable.wait_replayed().await;
    durable.shutdown(Duration::from_secs(5)).await;
    (found, exporter.exported_ids(), durable.buffer_stats())
}

/// Polls `fut` once: is it already done?
fn poll_once<F: Future>(fut: std::pin::Pin<&mut F>) -> Poll<F::Output> {
    fut.poll(&mut Context::from_waker(Waker::noop()))
}

#[tokio::test]
async fn unacknowledged_records_are_replayed_in_order_with_their_trace_context() {
    let dir = tempfile::tempdir().unwrap();
    leave_behind(dir.path(), 0..40).await;

    let exporter = Arc::new(ScriptedExporter::new("ok"));
    let (durable, found) = open(&config(dir.path()), &exporter, fast()).await;
    assert_eq!(found.to_replay, 40);
    assert_eq!(found.corrupt_records, 0);
    assert_eq!(found.torn_tail_bytes, 0);
    durable.wait_replayed().await;
    exporter.wait_for_exported(40).await;
    let exported = exporter.exported();
    let ids: Vec<Uuid> = exported.iter().map(|r| r.event.event_id).collect();
    assert_eq!(ids, (0..40).map(id).collect::<Vec<_>>(), "log order");
    for (i, r) in exported.iter().enumerate() {
        let expected = (i % 3 == 0).then(|| trace(i as u64));
        assert_eq!(r.trace, expected, "trace context of event {i}");
        assert_eq!(*r.event, *record(i as u64).event, "event {i} round-trips");
    }
    let reports = durable.shutdown(Duration::from_secs(5)).await;
    assert_eq!(reports[0].delivered, 40);
    assert_eq!(durable.buffer_stats().replayed, 40);

    // Acknowledged now: a third start replays nothing.
    let again = Arc::new(ScriptedExporter::new("ok"));
    let (durable, found) = open(&config(dir.path()), &again, fast()).await;
    assert_eq!(found.to_replay, 0);
    assert!(found.ack_file_valid);
    durable.shutdown(Duration::from_secs(5)).await;
    assert_eq!(again.exported_count(), 0);
}

#[tokio::test]
async fn delivered_records_are_not_replayed_and_only_the_left_behind_ones_are() {
    let dir = tempfile::tempdir().unwrap();
    // The first batch (events 0..10) is delivered, everything after hangs.
    let exporter = Arc::new(
        ScriptedExporter::new("half")
            .with_script([Step::Succeed])
            .with_default(Step::HangForever),
    );
    let (durable, _) = open(
        &config(dir.path()),
        &exporter,
        fast().with_max_batch_events(10),
    )
    .await;
    for i in 0..10 {
        durable.submit(record(i)).await.unwrap();
    }
    exporter.wait_for_exported(10).await;
    for i in 10..25 {
        durable.submit(record(i)).await.unwrap();
    }
    let reports = durable.shutdown(Duration::from_millis(50)).await;
    assert_eq!(reports[0].delivered, 10);
    assert_eq!(reports[0].left_behind, 15);

    let (found, ids, _) = replay_all(&config(dir.path())).await;
    assert_eq!(found.to_replay, 15);
    assert_eq!(found.already_acknowledged, 10);
    assert_eq!(ids, (10..25).map(id).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_torn_tail_is_counted_and_every_record_before_it_replayed() {
    let dir = tempfile::tempdir().unwrap();
    leave_behind(dir.path(), 0..10).await;
    let files = segments(dir.path());
    assert_eq!(files.len(), 1);
    // An interrupted write: the last record lost its last 7 bytes.
    let data = std::fs::read(&files[0]).unwrap();
    std::fs::write(&files[0], &data[..data.len() - 7]).unwrap();

    let (found, ids, stats) = replay_all(&config(dir.path())).await;
    assert_eq!(found.to_replay, 9);
    assert_eq!(found.corrupt_records, 0);
    assert!(found.torn_tail_bytes > 0, "{found:?}");
    assert_eq!(ids, (0..9).map(id).collect::<Vec<_>>());
    assert!(stats.torn_tail_bytes > 0);
}

#[tokio::test]
async fn a_corrupt_record_in_the_middle_is_counted_and_skipped_and_its_neighbours_replayed() {
    let dir = tempfile::tempdir().unwrap();
    leave_behind(dir.path(), 0..10).await;
    let files = segments(dir.path());
    let mut data = std::fs::read(&files[0]).unwrap();
    // Flip one bit inside record 4's event JSON.
    let pos = frame_starts(&data, 4)[4];
    data[pos + 12 + 60] ^= 0x01;
    std::fs::write(&files[0], &data).unwrap();

    let (found, ids, _) = replay_all(&config(dir.path())).await;
    assert_eq!(found.corrupt_records, 1, "{found:?}");
    assert_eq!(found.torn_tail_bytes, 0);
    assert_eq!(found.to_replay, 9);
    let expected: Vec<Uuid> = (0..10).filter(|&i| i != 4).map(id).collect();
    assert_eq!(ids, expected, "exactly record 4 is lost");
}

#[tokio::test]
async fn damage_across_several_records_counts_each_record_lost() {
    let dir = tempfile::tempdir().unwrap();
    leave_behind(dir.path(), 0..10).await;
    let files = segments(dir.path());
    let mut data = std::fs::read(&files[0]).unwrap();
    // Zero everything from inside record 3 to inside record 5: one damaged stretch, three
    // records (sequence numbers 3, 4 and 5 are missing between 2 and 6).
    let starts = frame_starts(&data, 7);
    data[starts[3] + 20..starts[5] + 20].fill(0);
    std::fs::write(&files[0], &data).unwrap();

    let (found, ids, _) = replay_all(&config(dir.path())).await;
    assert_eq!(found.corrupt_records, 3, "{found:?}");
    assert_eq!(found.to_replay, 7);
    let expected: Vec<Uuid> = [0, 1, 2, 6, 7, 8, 9].into_iter().map(id).collect();
    assert_eq!(ids, expected);
}

/// Where the first `n + 1` frames of a segment start, found by walking the frame headers
/// (magic, payload length, CRC: 12 bytes).
fn frame_starts(data: &[u8], n: usize) -> Vec<usize> {
    let mut starts = vec![0];
    for _ in 0..n {
        let pos = *starts.last().unwrap();
        let len = u32::from_le_bytes(data[pos + 4..pos + 8].try_into().unwrap()) as usize;
        starts.push(pos + 12 + len);
    }
    starts
}

/// One frame as the log writes it: magic, payload length, CRC-32 of the payload, then the
/// payload (sequence number, flags = no trace, event JSON).
fn raw_frame(seq: u64, event: &SecurityEvent) -> Vec<u8> {
    raw_frame_json(seq, &serde_json::to_vec(event).unwrap())
}

/// Rewrites record `seq` of the first segment (records `0..` in order) as a frame whose
/// checksum holds around `event_json`.
fn rewrite_record(dir: &std::path::Path, seq: u64, event_json: &str) {
    let file = &segments(dir)[0];
    let data = std::fs::read(file).unwrap();
    let at = seq as usize;
    let starts = frame_starts(&data, at + 1);
    let mut rewritten = data[..starts[at]].to_vec();
    rewritten.extend(raw_frame_json(seq, event_json.as_bytes()));
    rewritten.extend_from_slice(&data[starts[at + 1]..]);
    std::fs::write(file, &rewritten).unwrap();
}

/// [`raw_frame`] with any bytes for the event JSON.
fn raw_frame_json(seq: u64, event_json: &[u8]) -> Vec<u8> {
    let mut payload = seq.to_le_bytes().to_vec();
    payload.push(0);
    payload.extend_from_slice(event_json);
    let mut frame = b"CLWB".to_vec();
    frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    frame.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    frame.extend_from_slice(&payload);
    frame
}

#[tokio::test]
async fn checksummed_frames_with_impossible_sequence_numbers_are_counted_as_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    leave_behind(dir.path(), 0..5).await;
    let files = segments(dir.path());
    let mut data = std::fs::read(&files[0]).unwrap();
    // Valid checksums, impossible numbers: the last number (would overflow), one going
    // backwards, and one further on than the file has room for (would size a huge table).
    let stray = record(100).event;
    data.extend(raw_frame(u64::MAX, &stray));
    data.extend(raw_frame(2, &stray));
    data.extend(raw_frame(1 << 40, &stray));
    std::fs::write(&files[0], &data).unwrap();

    let (found, ids, _) = replay_all(&config(dir.path())).await;
    assert_eq!(found.corrupt_records, 3, "{found:?}");
    assert_eq!(found.to_replay, 5);
    assert_eq!(ids, (0..5).map(id).collect::<Vec<_>>());
}

/// A record whose checksum holds but whose JSON is no event this version reads (a newer
/// version's event type, say) is not dropped: it is kept, with the reason, in
/// `undecodable.ndjson`, freed, and counted; its neighbours are replayed, and it is not
/// replayed again after the next start.
#[tokio::test]
async fn a_record_that_no_longer_decodes_is_kept_aside_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    leave_behind(dir.path(), 0..5).await;
    let mut event = serde_json::to_value(&*record(2).event).unwrap();
    event["event_type"] = serde_json::json!("teleportation_attempt");
    let json = event.to_string();
    rewrite_record(dir.path(), 2, &json);

    let (found, ids, stats) = replay_all(&config(dir.path())).await;
    assert_eq!(
        (found.to_replay, found.corrupt_records),
        (5, 0),
        "{found:?}"
    );
    let expected: Vec<Uuid> = [0, 1, 3, 4].into_iter().map(id).collect();
    assert_eq!(ids, expected);
    assert_eq!(stats.undecodable, 1, "{stats:?}");
    assert_eq!(stats.unsettled, 0, "{stats:?}");
    let kept = std::fs::read_to_string(dir.path().join("undecodable.ndjson")).unwrap();
    let lines: Vec<serde_json::Value> = kept
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{kept}");
    assert_eq!(lines[0]["seq"], 2);
    assert_eq!(lines[0]["event_json"].as_str(), Some(json.as_str()));
    assert!(
        lines[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("teleportation_attempt")),
        "{kept}"
    );

    let (found, ids, stats) = replay_all(&config(dir.path())).await;
    assert_eq!((found.to_replay, ids.len(), stats.undecodable), (0, 0, 0));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("undecodable.ndjson")).unwrap(),
        kept
    );
}

#[tokio::test]
async fn an_undecodable_record_that_cannot_be_kept_aside_stays_in_the_log() {
    let dir = tempfile::tempdir().unwrap();
    leave_behind(dir.path(), 0..3).await;
    let mut event = serde_json::to_value(&*record(1).event).unwrap();
    event.as_object_mut().unwrap().remove("event_id");
    let json = event.to_string();
    rewrite_record(dir.path(), 1, &json);
    // A directory where the file goes: the append fails, as a full or read-only disk would
    // make it (even for root).
    let aside = dir.path().join("undecodable.ndjson");
    std::fs::create_dir(&aside).unwrap();

    let (_, ids, stats) = replay_all(&config(dir.path())).await;
    assert_eq!(ids, vec![id(0), id(2)]);
    assert_eq!(
        (
            stats.undecodable,
            stats.undecodable_not_kept,
            stats.unsettled
        ),
        (0, 1, 1),
        "{stats:?}"
    );

    // Once the file can be written, the next start keeps it aside and frees it.
    std::fs::remove_dir(&aside).unwrap();
    let (found, ids, stats) = replay_all(&config(dir.path())).await;
    assert_eq!((found.to_replay, ids.len()), (1, 0));
    assert_eq!(
        (
            stats.undecodable,
            stats.undecodable_not_kept,
            stats.unsettled
        ),
        (1, 0, 0),
        "{stats:?}"
    );
    let kept = std::fs::read_to_string(&aside).unwrap();
    let line: serde_json::Value = serde_json::from_str(kept.trim_end()).unwrap();
    assert_eq!(line["seq"], 1);
    assert_eq!(line["event_json"].as_str(), Some(json.as_str()));
}

/// A line of `undecodable.ndjson` that a full disk cuts short is cut back off: the file never
/// holds half a line, the record it was for stays in the log, and the next start keeps it aside
/// once (no second copy). The disk is "full" for real: the replay runs in a child process (this
/// test again) whose files may not grow past 6 KiB (`ulimit -f`, `SIGXFSZ` ignored), so the
/// second kept line gets a short write and then `EFBIG`, as `ENOSPC` would.
#[tokio::test]
async fn a_kept_line_cut_short_by_a_full_disk_is_cut_back_and_kept_whole_at_the_next_start() {
    const CHILD: &str = "CLAWDSTRIKE_TEST_UNDECODABLE_CHILD";
    const NAME: &str =
        "a_kept_line_cut_short_by_a_full_disk_is_cut_back_and_kept_whole_at_the_next_start";
    if let Some(dir) = std::env::var_os(CHILD) {
        let (_, ids, stats) = replay_all(&config(Path::new(&dir))).await;
        println!(
            "child: replayed {} undecodable {} not_kept {} unsettled {}",
            ids.len(),
            stats.undecodable,
            stats.undecodable_not_kept,
            stats.unsettled
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    leave_behind(dir.path(), 0..5).await;
    // Records 1 and 3 no longer decode (a newer version's event type), each about 4 KB of
    // JSON: the first kept line fits under 6 KiB, the second does not.
    let mut undecodable = Vec::new();
    for seq in [1, 3] {
        let mut event = serde_json::to_value(&*record(seq).event).unwrap();
        event["event_type"] = serde_json::json!("teleportation_attempt");
        event["metadata"] = serde_json::json!({ "note": "x".repeat(4_000) });
        let json = event.to_string();
        rewrite_record(dir.path(), seq, &json);
        undecodable.push(json);
    }
    let aside = dir.path().join("undecodable.ndjson");

    let stdout = common::rerun_with_file_size_limit(NAME, CHILD, dir.path().as_os_str(), 12);
    assert!(
        stdout.contains("child: replayed 3 undecodable 1 not_kept 1 unsettled 1"),
        "the first record is kept aside, the second is not and stays in the log: {stdout}"
    );
    let kept = std::fs::read(&aside).unwrap();
    assert!(
        kept.ends_with(b"\n") && kept.iter().filter(|&&b| b == b'\n').count() == 1,
        "only the first line, whole, with no part of the second after it: {} bytes, ending {:?}",
        kept.len(),
        String::from_utf8_lossy(&kept[kept.len().saturating_sub(40)..])
    );

    // Without the limit, the next start keeps the second record aside, once.
    let (found, ids, stats) = replay_all(&config(dir.path())).await;
    assert_eq!((found.to_replay, ids.len()), (1, 0), "{found:?}");
    assert_eq!(
        (
            stats.undecodable,
            stats.undecodable_not_kept,
            stats.unsettled
        ),
        (1, 0, 0),
        "{stats:?}"
    );
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&aside)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("every kept line is whole JSON"))
        .collect();
    let seqs: Vec<u64> = lines.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [1, 3]);
    for (line, json) in lines.iter().zip(&undecodable) {
        assert_eq!(line["event_json"].as_str(), Some(json.as_str()));
    }
}

/// A dead letter that cannot be written anywhere is not settled: the log keeps the event, and
/// the next start (with a writable dead-letter file) writes it. Settled, it was deleted from
/// the log with nothing left of it but a counter.
#[tokio::test]
async fn a_dead_letter_that_cannot_be_written_stays_in_the_log_for_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let buffer = dir.path().join("buffer");
    let dlq_dir = dir.path().join("dlq");
    // A regular file where the directory should be: the write fails, even for root.
    std::fs::write(&dlq_dir, b"").unwrap();
    let dlq = dlq_dir.join("dead.ndjson");
    let rejecting = || {
        Arc::new(
            ScriptedExporter::new("rejecting")
                .with_default(Step::FailAll(Failure::permanent("HTTP 400"))),
        )
    };
    let (durable, _) = open(
        &config(&buffer),
        &rejecting(),
        fast().with_dead_letter_path(&dlq),
    )
    .await;
    for i in 0..5 {
        durable.submit(record(i)).await.unwrap();
    }
    let report = durable.shutdown(Duration::from_secs(10)).await.remove(0);
    assert_eq!(
        (report.dead_lettered, report.dead_letter_write_failed),
        (5, 5)
    );
    assert_eq!(durable.buffer_stats().unsettled, 5, "the log keeps them");

    std::fs::remove_file(&dlq_dir).unwrap();
    std::fs::create_dir(&dlq_dir).unwrap();
    let (durable, found) = open(
        &config(&buffer),
        &rejecting(),
        fast().with_dead_letter_path(&dlq),
    )
    .await;
    assert_eq!(found.to_replay, 5);
    durable.wait_replayed().await;
    let report = durable.shutdown(Duration::from_secs(10)).await.remove(0);
    assert_eq!(
        (report.dead_lettered, report.dead_letter_write_failed),
        (5, 0)
    );
    assert_eq!(durable.buffer_stats().unsettled, 0);
    let written: Vec<String> = std::fs::read_to_string(&dlq)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["event"]["event_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let mut written = written;
    written.sort();
    let mut expected: Vec<String> = (0..5).map(|i| id(i).to_string()).collect();
    expected.sort();
    assert_eq!(written, expected);
}

#[tokio::test]
async fn a_directory_is_used_by_one_open_log_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let exporter = Arc::new(ScriptedExporter::new("ok"));
    let (first, _) = open(&config(dir.path()), &exporter, fast()).await;
    let builder = Pipeline::builder().with_exporter(Arc::clone(&exporter) as _, fast());
    let second = DurablePipeline::open(&config(dir.path()), builder).await;
    let message = match second {
        Ok(_) => panic!("a second log opened the directory in use"),
        Err(e) => e.to_string(),
    };
    assert!(
        message.contains("in use by another process")
            && message.contains(&dir.path().display().to_string()),
        "{message}"
    );
    // Released at shutdown: the directory opens again.
    first.shutdown(Duration::from_secs(5)).await;
    let (again, _) = open(&config(dir.path()), &exporter, fast()).await;
    again.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn garbage_files_and_an_empty_directory_never_crash_the_open() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("00000000000000000007.wal"),
        b"\x00\x01garbage",
    )
    .unwrap();
    // What a crash during a segment's first write leaves: the start of one frame.
    std::fs::write(
        dir.path().join("00000000000000000009.wal"),
        b"CLWB\x40\x00\x00\x00\x01\x02",
    )
    .unwrap();
    std::fs::write(dir.path().join("ack"), b"not an ack file").unwrap();
    // Files that only look like segments (a copy, a hand-made name): not the log's. Before,
    // `1.wal` was read as `00000000000000000001.wal`, which does not exist: the open failed.
    std::fs::write(dir.path().join("1.wal"), b"stray").unwrap();
    std::fs::write(dir.path().join("backup.wal"), b"stray").unwrap();
    let exporter = Arc::new(ScriptedExporter::new("ok"));
    let (durable, found) = open(&config(dir.path()), &exporter, fast()).await;
    for stray in ["1.wal", "backup.wal"] {
        assert_eq!(std::fs::read(dir.path().join(stray)).unwrap(), b"stray");
    }
    assert_eq!(found.to_replay, 0);
    assert!(!found.ack_file_valid);
    assert_eq!(found.torn_tail_bytes, 9 + 10);
    // The torn first write is ordinary crash debris: deleted.
    assert!(!dir.path().join("00000000000000000009.wal").exists());
    assert!(!dir.path().join("00000000000000000009.corrupt").exists());
    // Kept aside for investigation, not deleted, and not read again.
    assert_eq!(
        std::fs::read(dir.path().join("00000000000000000007.corrupt")).unwrap(),
        b"\x00\x01garbage"
    );
    assert!(!dir.path().join("00000000000000000007.wal").exists());
    durable.submit(record(1)).await.unwrap();
    let reports = durable.shutdown(Duration::from_secs(5)).await;
    assert_eq!(reports[0].delivered, 1);
}

#[tokio::test]
async fn segments_are_deleted_once_every_exporter_has_settled_their_records() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path()).with_segment_bytes(4096);
    let fast_one = Arc::new(ScriptedExporter::new("fast"));
    let slow_one = Arc::new(
        ScriptedExporter::new("slow").with_default(Step::WaitForRelease(Box::new(Step::Succeed))),
    );
    let builder = Pipeline::builder()
        .with_exporter(Arc::clone(&fast_one) as _, fast())
        .with_exporter(Arc::clone(&slow_one) as _, fast());
    let (durable, _) = DurablePipeline::open(&cfg, builder).await.unwrap();
    for i in 0..60 {
        durable.submit(record(i)).await.unwrap();
    }
    fast_one.wait_for_exported(60).await;
    // One exporter delivered everything; the other has not: nothing is removed.
    let stats = durable.buffer_stats();
    assert!(stats.segments >= 4, "{stats:?}");
    assert_eq!(stats.unsettled, 60);
    assert_eq!(stats.segments_deleted, 0);
    assert_eq!(segments(dir.path()).len(), stats.segments);

    slow_one.release();
    slow_one.wait_for_exported(60).await;
    let reports = durable.shutdown(Duration::from_secs(5)).await;
    assert_eq!(reports[1].delivered, 60);
    let stats = durable.buffer_stats();
    assert_eq!(stats.unsettled, 0);
    assert_eq!(stats.settled, 60);
    // Only the segment still open for appends may remain.
    assert!(segments(dir.path()).len() <= 1);
    assert!(stats.segments_deleted >= 3, "{stats:?}");
}

/// Fills a log of `max_bytes` (4 segments of 4 KiB) while the exporter holds every batch.
async fn full_log(
    dir: &Path,
    when_full: WhenFull,
) -> (DurablePipeline, Arc<ScriptedExporter>, DiskBufferConfig) {
    let cfg = config(dir)
        .with_segment_bytes(4096)
        .with_max_bytes(4 * 4096)
        .with_when_full(when_full);
    let exporter = Arc::new(
        ScriptedExporter::new("held").with_default(Step::WaitForRelease(Box::new(Step::Succeed))),
    );
    let (durable, _) = open(&cfg, &exporter, fast().with_queue_capacity(100_000)).await;
    (durable, exporter, cfg)
}

/// Submits events 0..200 into a log far too small for them; the bound holds after each.
async fn submit_200_within_the_bound(durable: &DurablePipeline, cfg: &DiskBufferConfig) {
    for i in 0..200 {
        durable.submit(record(i)).await.unwrap();
        assert!(durable.buffer_stats().disk_bytes <= cfg.max_bytes);
    }
}

#[tokio::test]
async fn block_waits_for_acknowledgements_when_the_log_is_full() {
    let dir = tempfile::tempdir().unwrap();
    let (durable, exporter, cfg) = full_log(dir.path(), WhenFull::Block).await;
    let mut i = 0;
    let blocked = loop {
        let mut submit = Box::pin(durable.submit(record(i)));
        match poll_once(submit.as_mut()) {
            Poll::Ready(result) => result.unwrap(),
            Poll::Pending => break submit,
        }
        i += 1;
        assert!(i < 1_000, "the log never filled");
    };
    let stats = durable.buffer_stats();
    assert!(stats.disk_bytes <= cfg.max_bytes, "{stats:?}");
    assert!(
        stats.disk_bytes + 1024 > cfg.max_bytes,
        "blocked early: {stats:?}"
    );
    assert_eq!(stats.appended, i);

    exporter.release();
    blocked.await.unwrap();
    for j in i + 1..i + 50 {
        durable.submit(record(j)).await.unwrap();
        assert!(durable.buffer_stats().disk_bytes <= cfg.max_bytes);
    }
    let reports = durable.shutdown(Duration::from_secs(5)).await;
    assert_eq!(reports[0].delivered, i + 50);
    let stats = durable.buffer_stats();
    assert_eq!(stats.dropped_newest + stats.dropped_oldest, 0);
    assert_eq!(stats.settled, i + 50);
}

#[tokio::test]
async fn drop_newest_refuses_new_events_when_full_and_counts_them() {
    let dir = tempfile::tempdir().unwrap();
    let (durable, exporter, cfg) = full_log(dir.path(), WhenFull::DropNewest).await;
    submit_200_within_the_bound(&durable, &cfg).await;
    let stats = durable.buffer_stats();
    assert!(stats.dropped_newest > 0, "{stats:?}");
    assert_eq!(stats.appended + stats.dropped_newest, 200);
    exporter.release();
    let reports = durable.shutdown(Duration::from_secs(5)).await;
    // The appended ones are the oldest, and exactly those were delivered.
    assert_eq!(reports[0].delivered, stats.appended);
    assert_eq!(
        exporter.exported_ids().len() as u64,
        stats.appended,
        "every appended event delivered"
    );
    let mut delivered = exporter.exported_ids();
    delivered.sort();
    assert_eq!(delivered, (0..stats.appended).map(id).collect::<Vec<_>>());
}

#[tokio::test]
async fn drop_oldest_evicts_the_oldest_records_and_says_which_left_behind_ones_are_lost() {
    let dir = tempfile::tempdir().unwrap();
    let (durable, _exporter, cfg) = full_log(dir.path(), WhenFull::DropOldest).await;
    submit_200_within_the_bound(&durable, &cfg).await;
    let stats = durable.buffer_stats();
    assert_eq!(stats.appended, 200);
    assert!(stats.evicted > 0, "{stats:?}");
    assert_eq!(stats.unsettled + stats.evicted, 200);
    // Evicted, but the pipeline still holds them: nothing is lost yet.
    assert_eq!(stats.dropped_oldest, 0, "{stats:?}");
    // A shutdown the exporter never answers: the evicted events are left behind and on disk no
    // more, so they are lost (counted at close); the next start replays exactly the others.
    let reports = durable.shutdown(Duration::from_millis(50)).await;
    assert_eq!(reports[0].left_behind, 200);
    let after = durable.buffer_stats();
    // Counted once: the report has all 200 as left behind; the buffer says which of them are
    // lost (evicted) and which it keeps, and drops none of its own.
    assert_eq!(after.evicted_left_behind, stats.evicted, "{after:?}");
    assert_eq!(after.dropped_oldest, 0, "{after:?}");
    assert_eq!(after.unsettled + after.evicted_left_behind, 200);
    let (found, ids, _) = replay_all(&cfg).await;
    assert_eq!(found.to_replay, stats.unsettled);
    assert_eq!(ids, (stats.evicted..200).map(id).collect::<Vec<_>>());
}

/// A record that does not decode and could not be kept aside stays in the log; when
/// `drop_oldest` evicts its segment it is lost, and counted as such (in `dropped_oldest`, not
/// among the evicted records the pipeline held, which its report already counts).
#[tokio::test]
async fn drop_oldest_evicting_a_record_that_could_not_be_kept_aside_counts_it_lost() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path())
        .with_segment_bytes(4096)
        .with_max_bytes(4 * 4096)
        .with_when_full(WhenFull::DropOldest);
    // Three records left behind in the first segment; the second no longer decodes, and the
    // file it would be kept aside in cannot be written.
    leave_behind_in(&cfg, 0..3).await;
    let mut event = serde_json::to_value(&*record(1).event).unwrap();
    event.as_object_mut().unwrap().remove("event_id");
    rewrite_record(dir.path(), 1, &event.to_string());
    std::fs::create_dir(dir.path().join("undecodable.ndjson")).unwrap();

    let exporter = Arc::new(
        ScriptedExporter::new("held").with_default(Step::WaitForRelease(Box::new(Step::Succeed))),
    );
    let (durable, found) = open(&cfg, &exporter, fast().with_queue_capacity(100_000)).await;
    assert_eq!(found.to_replay, 3);
    durable.wait_replayed().await;
    let before = durable.buffer_stats();
    assert_eq!(
        (before.undecodable, before.undecodable_not_kept),
        (0, 1),
        "{before:?}"
    );
    // New events fill the log until the first segment, with the record, is evicted.
    let mut i = 3;
    while durable.buffer_stats().undecodable_not_kept == 1 {
        durable.submit(record(i)).await.unwrap();
        i += 1;
        assert!(i < 1_000, "the first segment was never evicted");
    }
    let evicted = durable.buffer_stats();
    assert!(evicted.evicted >= 3, "{evicted:?}");
    // Nothing is counted lost before the log closes: the pipeline still holds the others.
    assert_eq!(evicted.dropped_oldest, 0, "{evicted:?}");

    let reports = durable.shutdown(Duration::from_millis(50)).await;
    let after = durable.buffer_stats();
    // The pipeline left behind everything it got: records 0 and 2 and the new ones.
    assert_eq!(reports[0].left_behind, 2 + (i - 3));
    // Of the evicted records, the one it never got is lost and counted once, as dropped; the
    // others are the evicted ones it left behind.
    assert_eq!(after.dropped_oldest, 1, "{after:?}");
    assert_eq!(after.evicted_left_behind, evicted.evicted - 1, "{after:?}");
    assert_eq!(after.undecodable_not_kept, 0, "{after:?}");
    // Every record is accounted for exactly once: kept for the next start, or lost.
    assert_eq!(
        after.unsettled + after.evicted_left_behind + after.dropped_oldest,
        i,
        "{after:?}"
    );
}

/// A segment the replay cannot read stays in the log, its records never submitted, while the
/// later segments' records are. When `drop_oldest` evicts it, its records are lost and counted
/// as dropped, not among the evicted records the pipeline held (which its report counts).
#[tokio::test]
async fn drop_oldest_evicting_a_segment_the_replay_could_not_read_counts_it_lost() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path())
        .with_segment_bytes(4096)
        .with_max_bytes(4 * 4096)
        .with_when_full(WhenFull::DropOldest);
    leave_behind_in(&cfg, 0..10).await;
    let files = segments(dir.path());
    assert!(files.len() >= 2, "{files:?}");

    let exporter = Arc::new(
        ScriptedExporter::new("held").with_default(Step::WaitForRelease(Box::new(Step::Succeed))),
    );
    let (durable, found) = open(&cfg, &exporter, fast().with_queue_capacity(100_000)).await;
    assert_eq!(found.to_replay, 10);
    // The replay task has not run yet (this test's runtime has one thread and has not
    // yielded): the first segment becomes unreadable (a directory in its place) before the
    // replay reads it, after the open counted its records.
    let first = &files[0];
    let in_first = {
        let before = std::fs::read(first).unwrap();
        std::fs::remove_file(first).unwrap();
        std::fs::create_dir(first).unwrap();
        before.len()
    };
    assert!(in_first > 0);
    durable.wait_replayed().await;
    let replayed = durable.buffer_stats().replayed;
    let unread = 10 - replayed;
    assert!(unread > 0 && replayed > 0, "replayed {replayed}");
    // New events fill the log until the unread segment is evicted.
    let mut i = 10;
    while durable.buffer_stats().evicted < unread {
        durable.submit(record(i)).await.unwrap();
        i += 1;
        assert!(i < 1_000, "the first segment was never evicted");
    }
    let evicted = durable.buffer_stats();
    assert_eq!(evicted.dropped_oldest, 0, "{evicted:?}");

    let reports = durable.shutdown(Duration::from_millis(50)).await;
    let after = durable.buffer_stats();
    // The pipeline left behind everything it got: the replayed records and the new ones.
    assert_eq!(reports[0].left_behind, replayed + (i - 10));
    // The unread segment's records are lost and counted once, as dropped; the other evicted
    // records are ones the pipeline left behind.
    assert_eq!(after.dropped_oldest, unread, "{after:?}");
    assert_eq!(
        after.evicted_left_behind,
        evicted.evicted - unread,
        "{after:?}"
    );
    assert_eq!(
        after.unsettled + after.evicted_left_behind + after.dropped_oldest,
        i,
        "{after:?}"
    );
}

#[tokio::test]
async fn drop_oldest_evicted_events_that_are_delivered_are_not_counted_as_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let (durable, exporter, cfg) = full_log(dir.path(), WhenFull::DropOldest).await;
    submit_200_within_the_bound(&durable, &cfg).await;
    let evicted = durable.buffer_stats().evicted;
    assert!(evicted > 0);
    exporter.release();
    let reports = durable.shutdown(Duration::from_secs(5)).await;
    let stats = durable.buffer_stats();
    // Every event counted once: all 200 delivered (the evicted ones from memory), none dropped.
    assert_eq!(reports[0].delivered, 200);
    assert_eq!(stats.dropped_oldest, 0, "{stats:?}");
    assert_eq!(stats.evicted, evicted);
    assert_eq!(stats.settled, 200, "evicted records are settled too");
    assert_eq!(stats.unsettled, 0);
    let mut ids = exporter.exported_ids();
    ids.sort();
    assert_eq!(ids, (0..200).map(id).collect::<Vec<_>>());
    let (found, replayed, _) = replay_all(&cfg).await;
    assert_eq!((found.to_replay, replayed.len()), (0, 0));
}

#[tokio::test]
async fn a_submit_cancelled_while_blocked_or_refused_after_shutdown_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    // A `block` pipeline queue of 1 behind a held exporter: the third submit waits in the
    // pipeline after its append, and is then cancelled.
    let exporter = Arc::new(
        ScriptedExporter::new("held").with_default(Step::WaitForRelease(Box::new(Step::Succeed))),
    );
    let (durable, _) = open(
        &config(dir.path()),
        &exporter,
        fast()
            .with_queue_capacity(1)
            .with_max_batch_events(1)
            .with_concurrency(1),
    )
    .await;
    durable.submit(record(0)).await.unwrap();
    exporter.wait_for_calls(1).await;
    let mut i = 1;
    loop {
        let mut submit = pin!(durable.submit(record(i)));
        if poll_once(submit.as_mut()).is_pending() {
            // Appended, then waiting for room in the pipeline: cancel it here.
            assert_eq!(durable.buffer_stats().appended, i + 1);
            break;
        }
        i += 1;
        assert!(i < 100, "the pipeline queue never filled");
    }
    let stats = durable.buffer_stats();
    assert_eq!(stats.abandoned, 1);
    assert_eq!(stats.unsettled, i);
    exporter.release();
    durable.shutdown(Duration::from_secs(5)).await;
    assert!(matches!(
        durable.submit(record(1000)).await,
        Err(DurableSubmitError::Closed)
    ));
    assert_eq!(durable.buffer_stats().unsettled, 0);
    let mut delivered = exporter.exported_ids();
    delivered.sort();
    assert_eq!(delivered, (0..i).map(id).collect::<Vec<_>>());
}

#[tokio::test]
async fn fsync_always_and_interval_policies_deliver_and_acknowledge() {
    for fsync in [
        FsyncPolicy::Always,
        FsyncPolicy::Interval(Duration::from_millis(5)),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let exporter = Arc::new(ScriptedExporter::new("ok"));
        let cfg = DiskBufferConfig::new(dir.path()).with_fsync(fsync);
        let (durable, _) = open(&cfg, &exporter, fast()).await;
        for i in 0..20 {
            durable.submit(record(i)).await.unwrap();
        }
        durable.sync().unwrap();
        let reports = durable.shutdown(Duration::from_secs(5)).await;
        assert_eq!(reports[0].delivered, 20, "{fsync:?}");
        assert_eq!(durable.buffer_stats().unsettled, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fsync_always_with_concurrent_producers_delivers_each_event_once() {
    // Under `always` each submit returns once an fsync covers its record; producers that wait
    // together share one (group commit). Whatever the grouping, every event is appended,
    // delivered once and settled.
    let dir = tempfile::tempdir().unwrap();
    let exporter = Arc::new(ScriptedExporter::new("ok"));
    let cfg = DiskBufferConfig::new(dir.path()).with_fsync(FsyncPolicy::Always);
    let (durable, _) = open(&cfg, &exporter, fast()).await;
    let producers: Vec<_> = (0..8u64)
        .map(|p| {
            let durable = durable.clone();
            tokio::spawn(async move {
                for i in (p..200).step_by(8) {
                    durable.submit(record(i)).await.unwrap();
                }
            })
        })
        .collect();
    for producer in producers {
        producer.await.unwrap();
    }
    let stats = durable.buffer_stats();
    assert_eq!(stats.appended, 200);
    assert!((1..=200).contains(&stats.fsyncs), "{} fsyncs", stats.fsyncs);
    let reports = durable.shutdown(Duration::from_secs(5)).await;
    assert_eq!(reports[0].delivered, 200);
    let mut delivered = exporter.exported_ids();
    delivered.sort();
    assert_eq!(delivered, (0..200).map(id).collect::<Vec<_>>());
    assert_eq!(durable.buffer_stats().unsettled, 0);
}

#[tokio::test]
async fn an_event_larger_than_the_log_is_refused_with_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path())
        .with_segment_bytes(4096)
        .with_max_bytes(4096);
    let exporter = Arc::new(ScriptedExporter::new("ok"));
    let (durable, _) = open(&cfg, &exporter, fast()).await;
    let mut big = record(0);
    Arc::make_mut(&mut big.event).metadata = serde_json::json!({ "blob": "x".repeat(8192) });
    match durable.submit(big).await {
        Err(DurableSubmitError::TooLarge { bytes, max_bytes }) => {
            assert!(bytes > 8192);
            assert_eq!(max_bytes, 4096);
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    durable.shutdown(Duration::from_secs(5)).await;
}

#[test]
fn configuration_reads_from_yaml_with_documented_defaults() {
    let config: BufferConfig = serde_yaml_ng::from_str("type: disk\npath: /var/lib/cs").unwrap();
    let BufferConfig::Disk(disk) = config else {
        panic!("expected a disk buffer")
    };
    assert_eq!(disk, DiskBufferConfig::new("/var/lib/cs"));
    assert_eq!(disk.max_bytes, 256 * 1024 * 1024);
    assert_eq!(disk.segment_bytes, 8 * 1024 * 1024);
    assert_eq!(
        disk.fsync,
        FsyncPolicy::Interval(Duration::from_millis(1000))
    );
    assert_eq!(disk.when_full, WhenFull::Block);

    let yaml = "type: disk\npath: /b\nmax_bytes: 1048576\nsegment_bytes: 65536\nfsync: { interval_ms: 200 }\nwhen_full: drop_oldest";
    let BufferConfig::Disk(disk) = serde_yaml_ng::from_str(yaml).unwrap() else {
        panic!("expected a disk buffer")
    };
    assert_eq!(
        disk,
        DiskBufferConfig::new("/b")
            .with_max_bytes(1 << 20)
            .with_segment_bytes(1 << 16)
            .with_fsync(FsyncPolicy::Interval(Duration::from_millis(200)))
            .with_when_full(WhenFull::DropOldest)
    );
    for (text, policy) in [
        ("always", FsyncPolicy::Always),
        ("never", FsyncPolicy::Never),
    ] {
        let yaml = format!("type: disk\npath: /b\nfsync: {text}");
        let BufferConfig::Disk(disk) = serde_yaml_ng::from_str(&yaml).unwrap() else {
            panic!("expected a disk buffer")
        };
        assert_eq!(disk.fsync, policy);
    }
    assert_eq!(
        serde_yaml_ng::from_str::<BufferConfig>("type: memory").unwrap(),
        BufferConfig::Memory
    );
    assert_eq!(BufferConfig::default(), BufferConfig::Memory);
    let text = serde_yaml_ng::to_string(&BufferConfig::Memory).unwrap();
    assert_eq!(
        serde_yaml_ng::from_str::<BufferConfig>(&text).unwrap(),
        BufferConfig::Memory
    );
    // Round trip.
    let text = serde_yaml_ng::to_string(&BufferConfig::Disk(disk.clone())).unwrap();
    assert_eq!(
        serde_yaml_ng::from_str::<BufferConfig>(&text).unwrap(),
        BufferConfig::Disk(disk)
    );

    for bad in [
        "type: disk",                                      // no path
        "type: disk\npath: /b\nmax_byte: 1",               // unknown field
        "type: disk\npath: /b\nfsync: sometimes",          // unknown policy
        "type: disk\npath: /b\nfsync: { interval_ms: 0 }", // zero interval
        "type: tape\npath: /b",                            // unknown type
        // A disk setting under a memory buffer is a mistake to point out, not to ignore.
        "type: memory\nmax_bytes: 1048576",
        "type: memory\npath: /b",
    ] {
        assert!(
            serde_yaml_ng::from_str::<BufferConfig>(bad).is_err(),
            "accepted: {bad}"
        );
    }
    assert!(
        DiskBufferConfig::new("/b")
            .with_segment_bytes(1 << 20)
            .with_max_bytes(1 << 19)
            .validate()
            .is_err()
    );
    assert!(
        DiskBufferConfig::new("/b")
            .with_segment_bytes(100)
            .validate()
            .is_err()
    );
}

#[tokio::test]
async fn open_rejects_an_invalid_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path()).with_segment_bytes(10);
    let exporter = Arc::new(ScriptedExporter::new("ok"));
    let builder = Pipeline::builder().with_exporter(exporter as _, fast());
    let err = DurablePipeline::open(&cfg, builder).await.unwrap_err();
    assert!(err.to_string().contains("segment_bytes"), "{err}");
}

#[tokio::test]
async fn a_stale_ack_file_after_a_crash_never_hides_records_appended_since() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path()).with_segment_bytes(4096);
    // Run 1: event 0 never gets through, the others do; a clean shutdown writes the `ack` file
    // (everything but 0 acknowledged, up to the last sequence number).
    let picky = Arc::new(ScriptedExporter::new("picky").with_per_event(|record, _| {
        (record.event.event_id == id(0)).then(|| Failure::retryable("stuck"))
    }));
    // Unlimited attempts: on a slow machine ten fast retries could end before the shutdown and
    // dead-letter event 0 (settled, so not replayed).
    let (durable, _) = open(&cfg, &picky, fast().with_max_attempts(None)).await;
    for i in 0..30 {
        durable.submit(record(i)).await.unwrap();
    }
    picky.wait_for_exported(29).await;
    durable.shutdown(Duration::from_millis(50)).await;

    // Run 2: only event 0's segment is left; new events are appended, then the process
    // "crashes" (dropped without shutdown: no new `ack` file).
    let stuck = Arc::new(ScriptedExporter::new("stuck").with_default(Step::HangForever));
    let (durable, found) = open(&cfg, &stuck, fast()).await;
    assert_eq!(found.to_replay, 1);
    for i in 100..130 {
        durable.submit(record(i)).await.unwrap();
    }
    drop(durable);

    // Run 3: the stale `ack` file must not hide the new records.
    let (found, mut ids, _) = replay_all(&cfg).await;
    assert_eq!(found.to_replay, 31, "{found:?}");
    ids.sort();
    let mut expected: Vec<Uuid> = std::iter::once(0).chain(100..130).map(id).collect();
    expected.sort();
    assert_eq!(ids, expected);
}

/// A batch under `always`: its events share the fsyncs (one submit at a time takes one fsync
/// each), are delivered once each, and are settled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_shares_its_fsyncs_and_is_delivered_once_each() {
    let dir = tempfile::tempdir().unwrap();
    let exporter = Arc::new(ScriptedExporter::new("ok"));
    let cfg = DiskBufferConfig::new(dir.path()).with_fsync(FsyncPolicy::Always);
    let (durable, _) = open(&cfg, &exporter, fast()).await;
    for i in 0..50 {
        durable.submit(record(i)).await.unwrap();
    }
    let one_by_one = durable.buffer_stats().fsyncs;
    assert!(one_by_one >= 50, "{one_by_one} fsyncs for 50 submits");
    let mut batch = durable.batch();
    for i in 50..250 {
        batch.append(record(i)).await.unwrap();
    }
    assert_eq!(batch.pending(), 200);
    assert_eq!(batch.commit().await.unwrap(), 200);
    assert_eq!((batch.pending(), batch.taken()), (0, 200));
    drop(batch);
    let stats = durable.buffer_stats();
    assert_eq!(stats.appended, 250);
    assert!(
        stats.fsyncs - one_by_one <= 2,
        "{} fsyncs for a batch of 200",
        stats.fsyncs - one_by_one
    );
    let reports = durable.shutdown(Duration::from_secs(5)).await;
    assert_eq!(reports[0].delivered, 250);
    let mut delivered = exporter.exported_ids();
    delivered.sort();
    assert_eq!(delivered, (0..250).map(id).collect::<Vec<_>>());
    assert_eq!(durable.buffer_stats().unsettled, 0);
}

/// A batch dropped before or during its commit frees what it appended: nothing of it is
/// delivered, and nothing is replayed at the next start (its producer never heard it was
/// taken, and sends it again). An event too large for the log is refused alone, and the batch
/// goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_batch_frees_its_events() {
    for (fsync, during_commit) in [
        (FsyncPolicy::Always, false),
        (FsyncPolicy::Always, true),
        (FsyncPolicy::Never, false),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let exporter = Arc::new(ScriptedExporter::new("ok"));
        let cfg = DiskBufferConfig::new(dir.path())
            .with_fsync(fsync)
            .with_segment_bytes(64 * 1024)
            .with_max_bytes(1024 * 1024);
        let (durable, _) = open(&cfg, &exporter, fast()).await;
        let mut batch = durable.batch();
        for i in 0..10 {
            batch.append(record(i)).await.unwrap();
        }
        let mut big = record(10);
        Arc::make_mut(&mut big.event).metadata =
            serde_json::json!({ "blob": "x".repeat(2 * 1024 * 1024) });
        assert!(matches!(
            batch.append(big).await,
            Err(clawdstrike_export::DurableSubmitError::TooLarge { .. })
        ));
        batch.append(record(11)).await.unwrap();
        assert_eq!(batch.pending(), 11);
        if during_commit {
            let commit = batch.commit();
            let mut commit = std::pin::pin!(commit);
            assert!(
                poll_once(commit.as_mut()).is_pending(),
                "waits for the fsync"
            );
        }
        assert_eq!(batch.taken(), 0);
        drop(batch);
        let stats = durable.buffer_stats();
        assert_eq!(
            stats.abandoned, 11,
            "{fsync:?}, during the commit: {during_commit}"
        );
        assert_eq!(stats.unsettled, 0);
        let reports = durable.shutdown(Duration::from_secs(5)).await;
        assert_eq!(reports[0].delivered, 0);
        let (found, replayed, _) = replay_all(&cfg).await;
        assert_eq!((found.to_replay, replayed.len()), (0, 0));
    }
}

/// A commit cancelled while the pipeline's queues are full (a timeout) keeps the event it was
/// handing over: the next commit goes on from it, and every event is delivered once, in
/// order. (Taking it out of the batch before the handover lost it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_cancelled_while_the_queues_are_full_goes_on_where_it_stopped() {
    for fsync in [FsyncPolicy::Always, FsyncPolicy::Never] {
        let dir = tempfile::tempdir().unwrap();
        let exporter = Arc::new(
            ScriptedExporter::new("gated")
                .with_default(Step::WaitForRelease(Box::new(Step::Succeed))),
        );
        let cfg = DiskBufferConfig::new(dir.path()).with_fsync(fsync);
        let tight = fast()
            .with_queue_capacity(1)
            .with_concurrency(1)
            .with_max_batch_events(1);
        let (durable, _) = open(&cfg, &exporter, tight).await;
        let mut batch = durable.batch();
        for i in 0..10 {
            batch.append(record(i)).await.unwrap();
        }
        let cancelled = tokio::time::timeout(Duration::from_millis(100), batch.commit()).await;
        assert!(cancelled.is_err(), "the queues are full: {cancelled:?}");
        assert!(batch.taken() < 10);
        assert_eq!(
            batch.taken() + batch.pending(),
            10,
            "{fsync:?}: nothing lost"
        );
        exporter.release();
        assert_eq!(batch.commit().await.unwrap(), 10);
        drop(batch);
        let reports = durable.shutdown(Duration::from_secs(5)).await;
        assert_eq!(reports[0].delivered, 10, "{fsync:?}");
        assert_eq!(exporter.exported_ids(), (0..10).map(id).collect::<Vec<_>>());
        assert_eq!(durable.buffer_stats().abandoned, 0);
    }
}
