//! End-to-end tests of the `clawdstrike-dd` binary: run as a process against the fake intake
//! on loopback, with real files and real sockets.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use clawdstrike_e2e::{
    Running, config_yaml, dd_command, dd_command_with_file_size_limit, fixture, poll_until,
    read_jsonl,
};
use clawdstrike_fakeintake::{Endpoint, FakeIntake, FaultAction, SignalSeed};
use clawdstrike_schema::{NdjsonReader, NdjsonRecord};

const KEY: &str = "e2eApiKey0000000000000000000000001";
const APP_KEY: &str = "e2eAppKey000000000000000000000000000000002";
const WAIT: Duration = Duration::from_secs(30);

async fn intake() -> FakeIntake {
    FakeIntake::start(KEY, APP_KEY).await.expect("fake intake")
}

fn write_config(dir: &Path, yaml: &str) -> std::path::PathBuf {
    let path = dir.join("clawdstrike-dd.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

/// Event ids of the good lines and numbers of the bad lines of an NDJSON file.
fn classify(path: &Path) -> (BTreeSet<String>, Vec<u64>) {
    let file = std::io::BufReader::new(std::fs::File::open(path).unwrap());
    let mut good = BTreeSet::new();
    let mut bad = Vec::new();
    for record in NdjsonReader::new(file) {
        match record.unwrap() {
            NdjsonRecord::Event(e) => {
                good.insert(e.event.event_id.to_string());
            }
            NdjsonRecord::Rejected(r) => bad.push(r.line),
        }
    }
    (good, bad)
}

fn received_ids(intake: &FakeIntake) -> BTreeSet<String> {
    intake
        .log_items()
        .iter()
        .filter_map(|i| i.value["event_id"].as_str().map(str::to_owned))
        .collect()
}

/// Acceptance 1: the README's first command prints what Datadog received.
#[test]
fn demo_prints_what_the_fake_datadog_received() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = dd_command(dir.path());
    cmd.arg("demo");
    // A proxy in the environment (and a dead one) must not come between the demo and the
    // fake intake on loopback.
    for var in ["HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "ALL_PROXY"] {
        cmd.env(var, "http://127.0.0.1:9");
    }
    cmd.env_remove("NO_PROXY").env_remove("no_proxy");
    let mut run = Running::spawn(cmd);
    let status = run.wait(WAIT);
    let out = run.stdout();
    assert!(
        status.success(),
        "demo failed: {status}\n{out}\n{}",
        run.stderr()
    );
    assert!(
        out.contains("log items: 42 (42 unique event ids, 0 duplicates)"),
        "{out}"
    );
    assert!(
        out.contains("by status:") && out.contains("by guard:") && out.contains("forbidden_path"),
        "{out}"
    );
    assert!(
        out.contains("\"event_id\": \""),
        "one item in full is printed: {out}"
    );
    assert!(
        out.contains("clawdstrike.events.total 42 in"),
        "security metric series are printed: {out}"
    );
    assert!(
        out.contains("clawdstrike.exporter.events.sent 42"),
        "exporter health series are printed: {out}"
    );
}

/// Acceptance 2: a file with bad lines: every good event delivered once, every bad line in the
/// rejects file with its line number and raw text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_delivers_good_events_once_and_rejects_bad_lines_with_their_numbers() {
    let intake = intake().await;
    let dir = tempfile::tempdir().unwrap();
    let mut mixed = std::fs::read(fixture("events.ndjson")).unwrap();
    mixed.extend(std::fs::read(fixture("bad-events.ndjson")).unwrap());
    let input = dir.path().join("mixed.ndjson");
    std::fs::write(&input, &mixed).unwrap();
    let (good, bad) = classify(&input);
    assert!(
        good.len() >= 42 && bad.len() >= 5,
        "fixtures changed: {} good, {} bad",
        good.len(),
        bad.len()
    );
    let config = write_config(dir.path(), &config_yaml(&intake.base_url(), "", ""));
    let rejects = dir.path().join("bad.ndjson");
    let mut cmd = dd_command(dir.path());
    cmd.env("DD_API_KEY", KEY)
        .arg("ship")
        .arg("--config")
        .arg(&config)
        .arg("--rejects")
        .arg(&rejects)
        .arg(&input);
    let mut run = Running::spawn(cmd);
    let status = run.wait(WAIT);
    assert_eq!(status.code(), Some(0), "stderr:\n{}", run.stderr());
    assert_eq!(received_ids(&intake), good, "every good event arrives");
    assert_eq!(intake.total_items(), good.len() as u64, "and only once");
    assert!(intake.duplicates().is_empty());
    let rejected = read_jsonl(&rejects);
    let lines: Vec<u64> = rejected
        .iter()
        .map(|r| r["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, bad, "every bad line, with its number");
    let raw_lines: Vec<&[u8]> = mixed.split(|&b| b == b'\n').collect();
    for r in &rejected {
        assert!(!r["error"].as_str().unwrap().is_empty());
        assert_eq!(r["source"], input.display().to_string());
        let n = r["line"].as_u64().unwrap() as usize;
        let expected = String::from_utf8_lossy(raw_lines[n - 1]);
        assert_eq!(
            r["raw"].as_str().unwrap(),
            expected.trim_end_matches('\r'),
            "raw line {n} kept"
        );
    }
    intake.shutdown().await;
}

/// Backfill from stdin (`-`): events arrive; bad lines are attributed to `-`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_reads_stdin() {
    let intake = intake().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &config_yaml(&intake.base_url(), "", ""));
    let mut cmd = dd_command(dir.path());
    cmd.env("DD_API_KEY", KEY)
        .arg("ship")
        .arg("--config")
        .arg(&config)
        .arg("-");
    let mut run = Running::spawn(cmd);
    let mut stdin = run.take_stdin().unwrap();
    let events = std::fs::read_to_string(fixture("events.ndjson")).unwrap();
    let first: Vec<&str> = events.lines().take(5).collect();
    use std::io::Write;
    writeln!(
        stdin,
        "{}\nnot json\n{}",
        first[..3].join("\n"),
        first[3..].join("\n")
    )
    .unwrap();
    drop(stdin);
    let status = run.wait(WAIT);
    assert_eq!(status.code(), Some(0), "stderr:\n{}", run.stderr());
    assert_eq!(intake.unique_event_ids(), 5);
    let rejected = read_jsonl(&dir.path().join("rejects.ndjson"));
    assert_eq!(
        rejected.len(),
        1,
        "default rejects file in the working directory"
    );
    assert_eq!(
        (rejected[0]["source"].as_str(), rejected[0]["line"].as_u64()),
        (Some("-"), Some(4))
    );
    intake.shutdown().await;
}

fn append(path: &Path, lines: &[&str]) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    for l in lines {
        writeln!(f, "{l}").unwrap();
    }
}

fn checkpoint_covers(checkpoint: &Path, file: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(file) else {
        return false;
    };
    read_jsonl(checkpoint).first().is_some_and(|c| {
        c["ino"].as_u64() == Some(meta.ino()) && c["offset"].as_u64() == Some(meta.len())
    })
}

/// `ship --follow log --checkpoint checkpoint` with `config`, in `dir`.
fn follow(dir: &Path, config: &Path, log: &Path, checkpoint: &Path) -> Running {
    follow_with(dd_command(dir), config, log, checkpoint)
}

/// [`follow`] with the given `clawdstrike-dd` command.
fn follow_with(mut cmd: Command, config: &Path, log: &Path, checkpoint: &Path) -> Running {
    cmd.env("DD_API_KEY", KEY)
        .arg("ship")
        .arg("--config")
        .arg(config)
        .arg("--follow")
        .arg(log)
        .arg("--checkpoint")
        .arg(checkpoint);
    Running::spawn(cmd)
}

/// `ship --config config --rejects rejects` in `dir`, more arguments to follow.
fn ship_with_rejects(dir: &Path, config: &Path, rejects: &Path) -> Command {
    let mut cmd = dd_command(dir);
    cmd.env("DD_API_KEY", KEY)
        .arg("ship")
        .arg("--config")
        .arg(config)
        .arg("--rejects")
        .arg(rejects);
    cmd
}

/// The event ids of NDJSON lines.
fn event_ids(lines: &[&str]) -> BTreeSet<String> {
    lines
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["event_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

/// Every event of `lines` reached the intake, and none twice.
fn assert_each_line_arrived_once(intake: &FakeIntake, lines: &[&str]) {
    assert_eq!(received_ids(intake), event_ids(lines), "nothing lost");
    assert!(
        intake.duplicates().is_empty(),
        "nothing sent twice: {:?}",
        intake.duplicates()
    );
}

/// Acceptance 3: follow mode survives rotation (while running and while stopped) and a
/// SIGKILL; with the checkpoint written before the kill, nothing is lost and nothing is sent
/// twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_survives_rotation_and_sigkill_without_loss_or_duplicates() {
    let intake = intake().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &config_yaml(&intake.base_url(), "", ""));
    let all = std::fs::read_to_string(fixture("events.ndjson")).unwrap();
    let lines: Vec<&str> = all.lines().collect();
    let log = dir.path().join("audit.ndjson");
    let checkpoint = dir.path().join("audit.checkpoint");
    append(&log, &lines[0..10]);
    let start = || follow(dir.path(), &config, &log, &checkpoint);
    let mut run = start();
    intake
        .wait_for_items(10, WAIT)
        .await
        .expect("first 10 lines");
    // Rotation by rename while running: a new file starts, and the old writer, which has not
    // reopened the path yet, writes on to the old file after the forwarder saw the rename.
    std::fs::rename(&log, dir.path().join("audit.ndjson.1")).unwrap();
    append(&log, &lines[13..20]);
    run.wait_for_line("file renamed away", WAIT);
    append(&dir.path().join("audit.ndjson.1"), &lines[10..13]);
    intake
        .wait_for_items(20, WAIT)
        .await
        .expect("lines across the rotation");
    assert!(
        poll_until(WAIT, || checkpoint_covers(&checkpoint, &log)),
        "checkpoint reaches the end: {:?}",
        std::fs::read_to_string(&checkpoint)
    );
    run.signal("KILL");
    run.wait(WAIT);
    // While stopped: more lines, then another rotation, then a new file.
    append(&log, &lines[20..25]);
    std::fs::rename(&log, dir.path().join("audit.ndjson.2")).unwrap();
    append(&log, &lines[25..30]);
    let mut run = start();
    intake
        .wait_for_items(30, WAIT)
        .await
        .expect("lines written while stopped");
    // Truncation (copytruncate): the file is emptied and written again from its start.
    assert!(poll_until(WAIT, || checkpoint_covers(&checkpoint, &log)));
    std::fs::write(&log, "").unwrap();
    append(&log, &lines[30..32]);
    intake
        .wait_for_items(32, WAIT)
        .await
        .expect("lines after truncation");
    run.signal("TERM");
    let status = run.wait(WAIT);
    assert_eq!(status.code(), Some(0), "stderr:\n{}", run.stderr());
    assert_each_line_arrived_once(&intake, &lines[..32]);
    assert_eq!(intake.total_items(), 32);
    intake.shutdown().await;
}

/// `--rotate-wait-ms`: the forwarder waits that long (here 200 ms) for the writer of a file
/// renamed away to reopen the path. Lines the writer adds to the old file after the forwarder
/// moved on are not shipped (the checkpoint is in the new file), but they are not lost
/// silently: the log names the file, and the exit report counts them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_written_to_a_rotated_file_after_the_rotate_wait_are_reported() {
    let intake = intake().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &config_yaml(&intake.base_url(), "", ""));
    let all = std::fs::read_to_string(fixture("events.ndjson")).unwrap();
    let lines: Vec<&str> = all.lines().collect();
    let log = dir.path().join("audit.ndjson");
    let rotated = dir.path().join("audit.ndjson.1");
    let checkpoint = dir.path().join("audit.checkpoint");
    append(&log, &lines[0..3]);
    let mut cmd = dd_command(dir.path());
    cmd.env("DD_API_KEY", KEY)
        .args(["ship", "--rotate-wait-ms", "200", "--config"])
        .arg(&config)
        .arg("--follow")
        .arg(&log)
        .arg("--checkpoint")
        .arg(&checkpoint);
    let mut run = Running::spawn(cmd);
    intake.wait_for_items(3, WAIT).await.expect("first 3 lines");
    std::fs::rename(&log, &rotated).unwrap();
    append(&log, &lines[3..5]);
    run.wait_for_line("file rotated; following the new one", WAIT);
    intake
        .wait_for_items(5, WAIT)
        .await
        .expect("the new file's lines");
    append(&rotated, &lines[5..7]);
    run.wait_for_line("written to a rotated file after it was finished", WAIT);
    run.signal("TERM");
    assert_eq!(run.wait(WAIT).code(), Some(0), "{}", run.stderr());
    let late_bytes = lines[5..7].iter().map(|l| l.len() + 1).sum::<usize>();
    assert!(
        run.stderr().contains(&format!(
            "2 lines ({late_bytes} bytes) were written to rotated files after they were finished"
        )),
        "the exit report counts them:\n{}",
        run.stderr()
    );
    assert_each_line_arrived_once(&intake, &lines[..5]);
    intake.shutdown().await;
}

/// Follows `log` from `lines[..5]` until the checkpoint covers them, then stops it cleanly.
async fn follow_first_five_and_stop(
    intake: &FakeIntake,
    dir: &Path,
    config: &Path,
    log: &Path,
    checkpoint: &Path,
    lines: &[&str],
) {
    append(log, &lines[..5]);
    let mut run = follow(dir, config, log, checkpoint);
    intake.wait_for_items(5, WAIT).await.expect("first 5 lines");
    assert!(poll_until(WAIT, || checkpoint_covers(checkpoint, log)));
    run.signal("TERM");
    assert_eq!(run.wait(WAIT).code(), Some(0), "{}", run.stderr());
}

/// Two rotations while the forwarder is stopped (logrotate's renames: `.1` → `.2`, the file →
/// `.1`, a new file, twice): the rest of the checkpointed file (now `.2`), then the whole
/// file between it and the current one (now `.1`), then the current file are read. Older and
/// compressed rotated files beside them are not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_reads_every_file_rotated_while_it_was_stopped() {
    let intake = intake().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &config_yaml(&intake.base_url(), "", ""));
    let all = std::fs::read_to_string(fixture("events.ndjson")).unwrap();
    let lines: Vec<&str> = all.lines().collect();
    let log = dir.path().join("audit.ndjson");
    let rotated = |n: u32| dir.path().join(format!("audit.ndjson.{n}"));
    let checkpoint = dir.path().join("audit.checkpoint");
    // An old rotation, already shipped by someone else, and its compressed form.
    append(&rotated(1), &lines[30..32]);
    append(&dir.path().join("audit.ndjson.2.gz"), &lines[32..34]);
    follow_first_five_and_stop(&intake, dir.path(), &config, &log, &checkpoint, &lines).await;
    // While stopped: the file gets more lines, then two rotations.
    append(&log, &lines[5..10]);
    std::fs::rename(rotated(1), rotated(2)).unwrap();
    std::fs::rename(&log, rotated(1)).unwrap();
    append(&log, &lines[10..15]);
    std::fs::rename(rotated(2), rotated(3)).unwrap();
    std::fs::rename(rotated(1), rotated(2)).unwrap();
    std::fs::rename(&log, rotated(1)).unwrap();
    append(&log, &lines[15..20]);
    let mut run = follow(dir.path(), &config, &log, &checkpoint);
    let arrived = intake.wait_for_items(20, WAIT).await;
    assert!(
        arrived.is_ok(),
        "the lines of every rotated file arrive: {} of 20; stderr:\n{}",
        intake.total_items(),
        run.stderr()
    );
    run.wait_for_line(
        "reading a file rotated while this one was still being read",
        WAIT,
    );
    assert!(poll_until(WAIT, || checkpoint_covers(&checkpoint, &log)));
    run.signal("TERM");
    assert_eq!(run.wait(WAIT).code(), Some(0), "{}", run.stderr());
    assert_each_line_arrived_once(&intake, &lines[..20]);
    intake.shutdown().await;
}

/// `copytruncate` while stopped, after lines the forwarder had not read yet, and the file
/// written again past the checkpoint's offset: its start no longer matches the checkpoint's
/// fingerprint, so the unread lines are read from logrotate's copy and the file from its
/// start, never from the middle of a line. Then, while running, truncated and rewritten
/// between two looks at its size (no copy): read from its start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_followed_file_truncated_and_written_again_past_the_checkpoint_is_read_whole() {
    let intake = intake().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &config_yaml(&intake.base_url(), "", ""));
    let all = std::fs::read_to_string(fixture("events.ndjson")).unwrap();
    let lines: Vec<&str> = all.lines().collect();
    let log = dir.path().join("audit.ndjson");
    let checkpoint = dir.path().join("audit.checkpoint");
    follow_first_five_and_stop(&intake, dir.path(), &config, &log, &checkpoint, &lines).await;
    // One write of the whole new content (`O_TRUNC`, then the lines), longer than before.
    let rewrite = |range: std::ops::Range<usize>| {
        let text: String = lines[range].iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(&log, text).unwrap();
    };
    append(&log, &lines[5..8]);
    std::fs::copy(&log, dir.path().join("audit.ndjson.1")).unwrap();
    rewrite(8..15);
    let mut run = follow(dir.path(), &config, &log, &checkpoint);
    let arrived = intake.wait_for_items(15, WAIT).await;
    assert!(
        arrived.is_ok(),
        "the copy's unread lines and the rewritten file, whole: {} of 15; stderr:\n{}",
        intake.total_items(),
        run.stderr()
    );
    assert!(poll_until(WAIT, || checkpoint_covers(&checkpoint, &log)));
    rewrite(15..30);
    intake
        .wait_for_items(30, WAIT)
        .await
        .expect("rewritten while running, whole");
    run.signal("TERM");
    assert_eq!(run.wait(WAIT).code(), Some(0), "{}", run.stderr());
    assert_each_line_arrived_once(&intake, &lines[..30]);
    let rejects = dir.path().join("rejects.ndjson");
    assert!(
        !rejects.exists(),
        "no half line was read: {:?}",
        std::fs::read_to_string(&rejects)
    );
    intake.shutdown().await;
}

/// `--follow` with the disk buffer: a line counts as taken once the buffer has it, so the
/// checkpoint moves past lines Datadog never received (it stalls); after a SIGKILL the buffer
/// replays them and the checkpoint keeps them from being read again: each arrives once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_with_the_disk_buffer_checkpoints_taken_lines_and_replays_them_after_a_sigkill() {
    let intake = intake().await;
    intake.fail_next(Endpoint::Logs, 1000, FaultAction::Stall);
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "buffer: {{ type: disk, path: {} }}\nshutdown_timeout_ms: 1000\n",
        dir.path().join("buffer").display()
    );
    let config = write_config(dir.path(), &config_yaml(&intake.base_url(), "", &extra));
    let all = std::fs::read_to_string(fixture("events.ndjson")).unwrap();
    let lines: Vec<&str> = all.lines().collect();
    let log = dir.path().join("audit.ndjson");
    let checkpoint = dir.path().join("audit.checkpoint");
    append(&log, &lines[0..20]);
    let start = || follow(dir.path(), &config, &log, &checkpoint);
    let mut run = start();
    assert!(
        poll_until(WAIT, || checkpoint_covers(&checkpoint, &log)),
        "the checkpoint passes the lines the buffer took: {:?}",
        std::fs::read_to_string(&checkpoint)
    );
    assert_eq!(intake.total_items(), 0, "while Datadog stalls");
    run.signal("KILL");
    run.wait(WAIT);
    intake.clear_faults();
    intake.release_stalled();

    let mut run = start();
    intake
        .wait_for_items(20, WAIT)
        .await
        .expect("the buffer replays the taken lines");
    append(&log, &lines[20..25]);
    intake
        .wait_for_items(25, WAIT)
        .await
        .expect("new lines after the restart");
    run.signal("TERM");
    assert_eq!(run.wait(WAIT).code(), Some(0), "stderr:\n{}", run.stderr());
    assert_each_line_arrived_once(&intake, &lines[..25]);
    intake.shutdown().await;
}

/// A disk buffer that cannot write an event (here a file-size limit makes the segment's
/// `write` fail with `EFBIG`, as a full disk would) refuses it: following stops at that line
/// and says which, the run fails, and the checkpoint stays before the line. A restart without
/// the limit delivers every line; only lines at or after the refused one may arrive twice
/// (taken by the buffer after the refusal, and read again from the checkpoint).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn following_stops_at_a_line_the_disk_buffer_cannot_write_and_a_restart_delivers_it() {
    let intake = intake().await;
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "buffer: {{ type: disk, path: {} }}\nshutdown_timeout_ms: 2000\n",
        dir.path().join("buffer").display()
    );
    let config = write_config(dir.path(), &config_yaml(&intake.base_url(), "", &extra));
    let all = std::fs::read_to_string(fixture("events.ndjson")).unwrap();
    let lines: Vec<&str> = all.lines().collect();
    let log = dir.path().join("audit.ndjson");
    let checkpoint = dir.path().join("audit.checkpoint");
    append(&log, &lines);
    assert!(
        all.len() > 2 * 12 * 1024,
        "the file is well past the limit below"
    );

    // No file may grow past 12 KiB: the buffer's first segment fills after a dozen events.
    let limited = dd_command_with_file_size_limit(dir.path(), 24);
    let mut run = follow_with(limited, &config, &log, &checkpoint);
    let code = run.wait(WAIT).code();
    let stderr = run.stderr();
    assert!(
        matches!(code, Some(1 | 3)),
        "exit {code:?}, stderr:\n{stderr}"
    );
    let prefix = format!("following stopped at {} line ", log.display());
    let refused: usize = stderr
        .split(&prefix)
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the refused line is named:\n{stderr}"));
    assert!(
        (2..lines.len()).contains(&refused),
        "refused at line {refused} of {}",
        lines.len()
    );
    let line_start: usize = lines[..refused - 1].iter().map(|l| l.len() + 1).sum();
    // Every line before it was taken (a taken line is settled with the disk buffer), so the
    // checkpoint ends exactly where the refused line begins.
    let saved = read_jsonl(&checkpoint)
        .first()
        .and_then(|c| c["offset"].as_u64())
        .expect("a checkpoint was written");
    assert_eq!(
        saved, line_start as u64,
        "the checkpoint stops where line {refused} begins"
    );

    let mut run = follow(dir.path(), &config, &log, &checkpoint);
    assert!(
        poll_until(WAIT, || received_ids(&intake) == event_ids(&lines)),
        "every line arrives after the restart; stderr:\n{}",
        run.stderr()
    );
    run.signal("TERM");
    assert_eq!(run.wait(WAIT).code(), Some(0), "stderr:\n{}", run.stderr());
    assert_eq!(received_ids(&intake), event_ids(&lines), "nothing lost");
    let before = event_ids(&lines[..refused - 1]);
    let twice: Vec<String> = intake.duplicates().into_keys().collect();
    assert!(
        twice.iter().all(|id| !before.contains(id)),
        "no line before the refused one arrives twice: {twice:?}"
    );
    intake.shutdown().await;
}

/// A followed path that cannot be opened for a reason other than "not there yet" (here its
/// directory is a regular file: ENOTDIR, even for root; EACCES is the usual one) is reported,
/// once, instead of being waited on in silence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_followed_file_that_cannot_be_opened_is_reported() {
    let intake = intake().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &config_yaml(&intake.base_url(), "", ""));
    let not_a_dir = dir.path().join("logs");
    std::fs::write(&not_a_dir, b"").unwrap();
    let log = not_a_dir.join("audit.ndjson");
    let run = follow(
        dir.path(),
        &config,
        &log,
        &dir.path().join("audit.checkpoint"),
    );
    let line = run.wait_for_line("cannot open the followed file", WAIT);
    assert!(
        line.contains(&log.display().to_string()) && line.contains("Not a directory"),
        "{line}"
    );
    run.signal("TERM");
    let mut run = run;
    run.wait(WAIT);
    let reported = run
        .stderr()
        .matches("cannot open the followed file")
        .count();
    assert!(
        (1..=2).contains(&reported),
        "logged once per kind, not every 100 ms: {reported}"
    );
    intake.shutdown().await;
}

/// A bad line whose reject cannot be written (here the rejects file's directory does not
/// exist; a full disk is the same) is recorded nowhere, so it is not passed over: `--follow`
/// stops before it (exit 1, the line named, the checkpoint where it begins) and a restart with
/// a writable rejects file records it and goes on; `ship` of a file says so and exits 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_line_whose_reject_cannot_be_written_stops_following_before_it() {
    let intake = intake().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &config_yaml(&intake.base_url(), "", ""));
    let all = std::fs::read_to_string(fixture("events.ndjson")).unwrap();
    let lines: Vec<&str> = all.lines().collect();
    let input: Vec<&str> = [&lines[0..3], &["{\"not\": \"an event\"}"], &lines[3..6]].concat();
    let good: Vec<&str> = lines[0..6].to_vec();
    let nowhere = dir.path().join("missing").join("rejects.ndjson");
    let ship = |rejects: &Path| ship_with_rejects(dir.path(), &config, rejects);

    // Backfill: every good line is shipped, and the run fails saying why.
    let file = dir.path().join("backfill.ndjson");
    append(&file, &input);
    let mut cmd = ship(&nowhere);
    cmd.arg(&file);
    let mut run = Running::spawn(cmd);
    let code = run.wait(WAIT).code();
    let stderr = run.stderr();
    assert_eq!(code, Some(1), "stderr:\n{stderr}");
    assert!(
        stderr.contains("1 bad lines could not be written (or fsynced) to"),
        "{stderr}"
    );
    assert_each_line_arrived_once(&intake, &good);

    // Follow: stops before the bad line.
    intake.reset();
    let log = dir.path().join("audit.ndjson");
    let checkpoint = dir.path().join("audit.checkpoint");
    append(&log, &input);
    let mut cmd = ship(&nowhere);
    cmd.arg("--follow")
        .arg(&log)
        .arg("--checkpoint")
        .arg(&checkpoint);
    let mut run = Running::spawn(cmd);
    let code = run.wait(WAIT).code();
    let stderr = run.stderr();
    assert_eq!(code, Some(1), "stderr:\n{stderr}");
    assert!(
        stderr.contains(&format!("following stopped at {} line 4", log.display())),
        "{stderr}"
    );
    let line_start: usize = input[..3].iter().map(|l| l.len() + 1).sum();
    let saved = read_jsonl(&checkpoint)
        .first()
        .and_then(|c| c["offset"].as_u64())
        .expect("a checkpoint was written");
    assert_eq!(
        saved, line_start as u64,
        "the checkpoint stops where line 4 begins"
    );
    assert_eq!(received_ids(&intake), event_ids(&lines[0..3]));

    // A restart that can write the reject records it and delivers the rest, once.
    let rejects = dir.path().join("rejects.ndjson");
    let mut cmd = ship(&rejects);
    cmd.arg("--follow")
        .arg(&log)
        .arg("--checkpoint")
        .arg(&checkpoint);
    let mut run = Running::spawn(cmd);
    assert!(
        poll_until(WAIT, || checkpoint_covers(&checkpoint, &log)),
        "the checkpoint reaches the end; stderr:\n{}",
        run.stderr()
    );
    run.signal("TERM");
    assert_eq!(run.wait(WAIT).code(), Some(0), "stderr:\n{}", run.stderr());
    assert_each_line_arrived_once(&intake, &good);
    let rejected = read_jsonl(&rejects);
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert_eq!(rejected[0]["line"], 4);
    intake.shutdown().await;
}

/// An event larger than the whole disk buffer is bad input, not a reason to stop: `ship` of a
/// file and `--follow` both write it to the rejects file (its line number, the reason, the
/// event as JSON) and deliver the lines around it. (Stopping there would make a follow stall
/// at that line after every restart.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_too_large_for_the_disk_buffer_is_rejected_and_the_input_goes_on() {
    let intake = intake().await;
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "buffer: {{ type: disk, path: {}, max_bytes: 8192, segment_bytes: 4096 }}\n",
        dir.path().join("buffer").display()
    );
    let config = write_config(dir.path(), &config_yaml(&intake.base_url(), "", &extra));
    let all = std::fs::read_to_string(fixture("events.ndjson")).unwrap();
    let lines: Vec<&str> = all.lines().collect();
    let mut big: serde_json::Value = serde_json::from_str(lines[5]).unwrap();
    big["metadata"] = serde_json::json!({ "blob": "x".repeat(10_000) });
    let big = big.to_string();
    let input: Vec<&str> = [&lines[0..5], &[big.as_str()], &lines[6..8]].concat();
    let good: Vec<&str> = [&lines[0..5], &lines[6..8]].concat();
    let check_rejects = |rejects: &Path, source: &Path| {
        let rejected = read_jsonl(rejects);
        assert_eq!(rejected.len(), 1, "{rejected:?}");
        assert_eq!(rejected[0]["line"], 6);
        assert_eq!(rejected[0]["source"], source.display().to_string());
        assert!(
            rejected[0]["error"]
                .as_str()
                .is_some_and(|e| e.contains("does not fit a buffer of 8192 bytes")),
            "{rejected:?}"
        );
        let kept: serde_json::Value =
            serde_json::from_str(rejected[0]["raw"].as_str().unwrap()).unwrap();
        assert_eq!(kept["event_id"], big_id(&big));
        // Marked as the event encoded again, not the input's bytes.
        assert_eq!(rejected[0]["reencoded"], true, "{rejected:?}");
    };
    fn big_id(big: &str) -> serde_json::Value {
        serde_json::from_str::<serde_json::Value>(big).unwrap()["event_id"].clone()
    }

    let ship = |rejects: &Path| ship_with_rejects(dir.path(), &config, rejects);

    // Backfill.
    let file = dir.path().join("backfill.ndjson");
    append(&file, &input);
    let rejects = dir.path().join("backfill-rejects.ndjson");
    let mut cmd = ship(&rejects);
    cmd.arg(&file);
    let mut run = Running::spawn(cmd);
    assert_eq!(run.wait(WAIT).code(), Some(0), "stderr:\n{}", run.stderr());
    assert_each_line_arrived_once(&intake, &good);
    check_rejects(&rejects, &file);

    // Follow: the checkpoint passes the rejected line, and the lines after it arrive.
    intake.reset();
    let log = dir.path().join("audit.ndjson");
    let checkpoint = dir.path().join("audit.checkpoint");
    append(&log, &input);
    let rejects = dir.path().join("follow-rejects.ndjson");
    let mut cmd = ship(&rejects);
    cmd.arg("--follow")
        .arg(&log)
        .arg("--checkpoint")
        .arg(&checkpoint);
    let mut run = Running::spawn(cmd);
    assert!(
        poll_until(WAIT, || checkpoint_covers(&checkpoint, &log)),
        "the checkpoint reaches the end: {:?}\nstderr:\n{}",
        std::fs::read_to_string(&checkpoint),
        run.stderr()
    );
    intake
        .wait_for_items(good.len() as u64, WAIT)
        .await
        .expect("the lines around it");
    run.signal("TERM");
    assert_eq!(run.wait(WAIT).code(), Some(0), "stderr:\n{}", run.stderr());
    assert_each_line_arrived_once(&intake, &good);
    check_rejects(&rejects, &log);

    // The HTTP input: one body with the big event in the middle. The events after it are taken
    // too (the client does not resend after a 4xx); the answer names the item.
    intake.reset();
    let rejects = dir.path().join("http-rejects.ndjson");
    let mut cmd = ship(&rejects);
    cmd.arg("--listen").arg("127.0.0.1:0");
    let mut run = Running::spawn(cmd);
    let url = format!("http://{}/", listen_addr(&run));
    let answer = post(&reqwest::Client::new(), &url, None, input[3..].join("\n"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 400);
    let answer: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(answer["accepted"], 4, "{answer}");
    assert_eq!(answer["problems"][0]["item"], 3, "{answer}");
    intake
        .wait_for_items(4, WAIT)
        .await
        .expect("the events around it");
    // A large malformed body is answered 400, and only its first 64 KiB are kept.
    let junk = format!("{{\"oops\": \"{}", "x".repeat(200_000));
    let answer = post(&reqwest::Client::new(), &url, None, junk)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 400);
    // A body of many small bad lines: the first 100 are named and kept, all are counted, and
    // nothing of it is taken.
    let answer = post(&reqwest::Client::new(), &url, None, "1\n".repeat(5_000))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 400);
    let answer: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(
        (&answer["accepted"], &answer["problems_total"]),
        (&0.into(), &5_000.into()),
        "{answer}"
    );
    assert_eq!(answer["problems"].as_array().map(Vec::len), Some(100));
    run.signal("TERM");
    assert_eq!(run.wait(WAIT).code(), Some(0), "stderr:\n{}", run.stderr());
    assert_each_line_arrived_once(&intake, &[&input[3..5], &input[6..]].concat());
    let rejected = read_jsonl(&rejects);
    assert_eq!(rejected.len(), 2 + 100 + 1, "{}", rejected.len());
    assert!(
        rejected[102]["error"]
            .as_str()
            .is_some_and(|e| e.contains("4900 more bad items")),
        "{}",
        rejected[102]
    );
    assert_eq!(
        (&rejected[0]["source"], &rejected[0]["line"]),
        (&"http".into(), &3.into())
    );
    assert_eq!(rejected[1]["truncated"], true);
    assert_eq!(rejected[1]["raw"].as_str().map(str::len), Some(64 * 1024));
    intake.shutdown().await;
}

/// `ship --config` with the HTTP input as `extra` configures it: the running forwarder, and
/// the address it listens on.
fn ship_listening(intake: &FakeIntake, dir: &Path, extra: &str) -> (Running, String) {
    let config = write_config(dir, &config_yaml(&intake.base_url(), "", extra));
    let mut cmd = dd_command(dir);
    cmd.env("DD_API_KEY", KEY)
        .arg("ship")
        .arg("--config")
        .arg(&config);
    let run = Running::spawn(cmd);
    let addr = listen_addr(&run);
    (run, addr)
}

fn listen_addr(run: &Running) -> String {
    let line = run.wait_for_line("listening on http://", WAIT);
    line.rsplit("http://").next().unwrap().trim().to_owned()
}

fn post(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    body: String,
) -> reqwest::RequestBuilder {
    let mut req = client
        .post(url)
        .header("content-type", "application/json")
        .body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req
}

/// A client that pipelines requests and never reads the answers does not hold its
/// connection for ever: once a write has waited `read_timeout_ms` for it, the connection is
/// closed, and its place (the only one here) serves the next client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_its_answers_gives_up_its_connection() {
    let intake = intake().await;
    let dir = tempfile::tempdir().unwrap();
    let extra = "input:\n  http:\n    listen: 127.0.0.1:0\n    max_connections: 1\n    read_timeout_ms: 300\n";
    let (mut run, addr) = ship_listening(&intake, dir.path(), extra);
    let addr: std::net::SocketAddr = addr.parse().unwrap();

    // A small receive window, so that the answers back up quickly.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stuck = socket.connect(addr).await.unwrap();
    let requests = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n".repeat(1_000);
    // Write until the forwarder stops taking requests (its answers are not read).
    let mut written = 0usize;
    loop {
        match stuck.try_write(requests.as_bytes()) {
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if tokio::time::timeout(Duration::from_secs(1), stuck.writable())
                    .await
                    .is_err()
                {
                    break;
                }
            }
            // Closed already: the writes backed up past the limit while this one waited.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
                ) =>
            {
                break;
            }
            Err(e) => panic!("{e} after {written} bytes"),
        }
        assert!(written < 1 << 30, "the forwarder never stopped reading");
    }
    let health = reqwest::Client::new()
        .get(format!("http://{addr}/health"))
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .expect("the listener serves the next client");
    assert_eq!(health.status(), 200);
    drop(stuck);
    run.signal("TERM");
    assert_eq!(run.wait(WAIT).code(), Some(0), "stderr:\n{}", run.stderr());
}

/// Acceptance 4: the HTTP input: 401 without or with a wrong token (nothing accepted), 400
/// naming the problem, 413 over the limit, `traceparent` to `dd.trace_id`, then a SIGTERM
/// drains and exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_input_authenticates_validates_and_correlates_traces() {
    let intake = intake().await;
    let dir = tempfile::tempdir().unwrap();
    let extra = "input:\n  http:\n    listen: 127.0.0.1:0\n    token: ${HOOK_TOKEN}\n    max_body_bytes: 20000\n";
    let config = write_config(dir.path(), &config_yaml(&intake.base_url(), "", extra));
    let mut cmd = dd_command(dir.path());
    cmd.env("DD_API_KEY", KEY)
        // Read from a file, a token often ends in a newline: it is not part of the token.
        .env("HOOK_TOKEN", "hook-secret\n")
        .arg("ship")
        .arg("--config")
        .arg(&config);
    let mut run = Running::spawn(cmd);
    let url = format!("http://{}/v1/events", listen_addr(&run));
    let client = reqwest::Client::new();
    // Refused before its body is read, a request leaves a connection the server closes: those
    // go on connections of their own, not the pool the next requests take theirs from.
    let refused = || {
        reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap()
    };
    let events = std::fs::read_to_string(fixture("events.ndjson")).unwrap();
    let lines: Vec<&str> = events.lines().collect();

    let r = post(&refused(), &url, None, lines[0].to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = post(&refused(), &url, Some("wrong"), lines[0].to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // A compressed body is refused as such, not read as text.
    let r = post(&refused(), &url, Some("hook-secret"), lines[0].to_owned())
        .header("content-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    // A browser's request is refused even with the token (a page must not post events).
    for (name, value) in [
        ("origin", "https://evil.example"),
        ("sec-fetch-site", "cross-site"),
    ] {
        let r = post(&refused(), &url, Some("hook-secret"), lines[0].to_owned())
            .header(name, value)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{name}");
    }

    let bad = lines[1].replace("\"severity\":\"high\"", "\"severity\":\"apocalyptic\"");
    assert_ne!(bad, lines[1]);
    let r = post(&client, &url, Some("hook-secret"), bad)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("decision.severity"),
        "{body}"
    );
    let r = post(
        &client,
        &url,
        Some("hook-secret"),
        format!("{}\n{{\"schema_version\":", lines[2]),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("line 2"), "{body}");
    let r = post(&refused(), &url, Some("hook-secret"), "x".repeat(20_001))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);

    // Accepted: one object with a traceparent, an array, an NDJSON body.
    let r = post(&client, &url, Some("hook-secret"), lines[3].to_owned())
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let r = post(
        &client,
        &url,
        Some("hook-secret"),
        format!("[{},{}]", lines[4], lines[5]),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 202);
    let r = post(
        &client,
        &url,
        Some("hook-secret"),
        format!("{}\n{}\n", lines[6], lines[7]),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 202);
    intake.wait_for_items(5, WAIT).await.unwrap();

    let id_of = |l: &str| {
        serde_json::from_str::<serde_json::Value>(l).unwrap()["event_id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let expected: BTreeSet<String> = lines[3..8].iter().map(|l| id_of(l)).collect();
    run.signal("TERM");
    let status = run.wait(WAIT);
    assert_eq!(status.code(), Some(0), "stderr:\n{}", run.stderr());
    assert_eq!(
        received_ids(&intake),
        expected,
        "the 401 and 400 bodies were not accepted"
    );
    let traced = intake.log_items_with_id(&id_of(lines[3]));
    assert_eq!(
        traced[0].value["dd"]["trace_id"],
        0xa3ce929d0e0e4736u64.to_string()
    );
    assert_eq!(
        traced[0].value["dd"]["span_id"],
        0x00f067aa0ba902b7u64.to_string()
    );
    let rejected = read_jsonl(&dir.path().join("rejects.ndjson"));
    assert_eq!(
        rejected.len(),
        2,
        "the two bad events are in the rejects file: {rejected:?}"
    );
    assert!(
        !run.stderr().contains("hook-secret"),
        "the token is never logged"
    );
    intake.shutdown().await;
}

/// Dead letters whose write hangs (the dead-letter path is a FIFO nobody reads, like a hung
/// mount): the run still ends at its shutdown deadline, says how many were still being
/// written, and exits with code 3 instead of waiting for the stuck write forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_dead_letter_write_is_reported_and_does_not_keep_the_forwarder_from_exiting() {
    let intake = intake().await;
    intake.fail_next(Endpoint::Logs, 1000, FaultAction::status(400));
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("dead.fifo");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let exporter_extra = format!("    dead_letter: {{ path: {} }}\n", fifo.display());
    let config = write_config(
        dir.path(),
        &config_yaml(
            &intake.base_url(),
            &exporter_extra,
            "shutdown_timeout_ms: 1500\n",
        ),
    );
    let mut cmd = dd_command(dir.path());
    cmd.env("DD_API_KEY", KEY)
        .arg("ship")
        .arg("--config")
        .arg(&config)
        .arg(fixture("events.ndjson"));
    let mut run = Running::spawn(cmd);
    let status = run.wait(WAIT);
    let stderr = run.stderr();
    assert_eq!(status.code(), Some(3), "{stderr}");
    // However many were dead-lettered by the deadline, none was written and some were
    // still being written.
    assert!(
        stderr.contains("0 could not be written and ")
            && stderr.contains(" were still being written at the deadline")
            && !stderr.contains("and 0 were still being written"),
        "{stderr}"
    );
    intake.shutdown().await;
}

/// Slow clients do not hold the listener: headers sent too slowly get the connection closed,
/// a body sent too slowly gets 408, and a client sending in time is served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_http_clients_are_cut_off_and_others_are_served() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let intake = intake().await;
    let dir = tempfile::tempdir().unwrap();
    let extra = "input: { http: { listen: 127.0.0.1:0, read_timeout_ms: 300 } }\n";
    let (mut run, addr) = ship_listening(&intake, dir.path(), extra);
    // A connection that says nothing.
    let mut silent = tokio::net::TcpStream::connect(&addr).await.unwrap();
    // Headers that never end.
    let mut slow_head = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow_head
        .write_all(b"POST / HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    // A body that never comes whole.
    let mut slow_body = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow_body
        .write_all(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"a\":")
        .await
        .unwrap();
    // Meanwhile a client in time is served.
    let line = std::fs::read_to_string(fixture("events.ndjson"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_owned();
    let url = format!("http://{addr}/");
    let answer = post(&reqwest::Client::new(), &url, None, line)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 202);
    // A body slower in total than the timeout, but never silent for that long, is taken.
    let mut steady = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let line2 = std::fs::read_to_string(fixture("events.ndjson"))
        .unwrap()
        .lines()
        .nth(1)
        .unwrap()
        .to_owned();
    steady
        .write_all(
            format!(
                "POST / HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                line2.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut ticker = tokio::time::interval(std::time::Duration::from_millis(100));
    for part in line2.as_bytes().chunks(line2.len().div_ceil(6)) {
        ticker.tick().await;
        steady.write_all(part).await.unwrap();
    }
    let mut steady_answer = Vec::new();
    let answered = tokio::time::timeout(WAIT, steady.read_to_end(&mut steady_answer)).await;
    assert!(answered.is_ok(), "the steady body is answered");
    let steady_answer = String::from_utf8_lossy(&steady_answer);
    assert!(steady_answer.starts_with("HTTP/1.1 202"), "{steady_answer}");
    let mut silent_answer = Vec::new();
    let closed = tokio::time::timeout(WAIT, silent.read_to_end(&mut silent_answer)).await;
    assert!(closed.is_ok(), "the silent connection is closed");
    let mut head_answer = Vec::new();
    let closed = tokio::time::timeout(WAIT, slow_head.read_to_end(&mut head_answer)).await;
    assert!(closed.is_ok(), "the slow-headers connection is closed");
    let mut body_answer = Vec::new();
    let answered = tokio::time::timeout(WAIT, slow_body.read_to_end(&mut body_answer)).await;
    assert!(answered.is_ok(), "the slow-body request is answered");
    let body_answer = String::from_utf8_lossy(&body_answer);
    assert!(body_answer.starts_with("HTTP/1.1 408"), "{body_answer}");
    run.signal("TERM");
    assert_eq!(run.wait(WAIT).code(), Some(0), "{}", run.stderr());
    assert_eq!(intake.total_items(), 2);
    intake.shutdown().await;
}

/// Acceptance 4 (full queue): a stalled intake and a one-event queue: 503 with Retry-After.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_input_answers_503_when_the_queue_is_full() {
    let intake = intake().await;
    intake.fail_next(Endpoint::Logs, 1000, FaultAction::Stall);
    let dir = tempfile::tempdir().unwrap();
    let exporter_extra = "    queue: { capacity: 1 }\n    concurrency: 1\n";
    let extra = "input: { http: { listen: 127.0.0.1:0 } }\nshutdown_timeout_ms: 500\n";
    let config = write_config(
        dir.path(),
        &config_yaml(&intake.base_url(), exporter_extra, extra).replace(
            "batch: { flush_interval_ms: 20 }",
            "batch: { flush_interval_ms: 20, max_events: 1 }",
        ),
    );
    let mut cmd = dd_command(dir.path());
    cmd.env("DD_API_KEY", KEY)
        .arg("ship")
        .arg("--config")
        .arg(&config);
    let mut run = Running::spawn(cmd);
    let url = format!("http://{}/", listen_addr(&run));
    let client = reqwest::Client::new();
    let events = std::fs::read_to_string(fixture("events.ndjson")).unwrap();
    let mut saw_503 = None;
    for line in events.lines().take(20) {
        let r = post(&client, &url, None, line.to_owned())
            .send()
            .await
            .unwrap();
        if r.status() == 503 {
            saw_503 = Some(
                r.headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap().to_owned()),
            );
            break;
        }
        assert_eq!(r.status(), 202);
    }
    assert_eq!(
        saw_503,
        Some(Some("1".to_owned())),
        "a full queue answers 503 with Retry-After"
    );
    // A body of several events against the full queue: nothing taken, and the answer says the
    // client resends from its first item (NDJSON, blank line counted: item 2).
    let lines: Vec<&str> = events.lines().skip(30).take(3).collect();
    let r = post(&client, &url, None, format!("\n{}", lines.join("\n")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let answer: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        (&answer["accepted"], &answer["next_item"]),
        (&0.into(), &2.into()),
        "{answer}"
    );
    run.signal("TERM");
    let status = run.wait(WAIT);
    assert_eq!(
        status.code(),
        Some(3),
        "events were left behind: stderr:\n{}",
        run.stderr()
    );
    intake.shutdown().await;
}

/// Acceptance 5: SIGTERM during a backlog against a stalled intake: the drain stops at the
/// deadline, the report names what was left behind, and the exit code says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_backlog_drains_to_the_deadline_and_reports_leftovers() {
    let intake = intake().await;
    intake.fail_next(Endpoint::Logs, 1000, FaultAction::Stall);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &config_yaml(&intake.base_url(), "", "shutdown_timeout_ms: 1000\n").replace(
            "batch: { flush_interval_ms: 20 }",
            "batch: { flush_interval_ms: 20, max_events: 5 }",
        ),
    );
    let mut cmd = dd_command(dir.path());
    cmd.env("DD_API_KEY", KEY)
        .arg("ship")
        .arg("--config")
        .arg(&config)
        .arg(fixture("events.ndjson"));
    let mut run = Running::spawn(cmd);
    intake
        .wait_until(WAIT, |s| s.stalled_now >= 1)
        .await
        .expect("requests reach the stalled intake");
    run.signal("TERM");
    let status = run.wait(WAIT);
    let stderr = run.stderr();
    assert_eq!(status.code(), Some(3), "stderr:\n{stderr}");
    assert!(
        stderr.contains("the shutdown deadline was reached"),
        "{stderr}"
    );
    let left: u64 = stderr
        .split("left behind at the deadline ")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .and_then(|n| n.parse().ok())
        .expect("report names the left-behind count");
    assert!(left > 0, "{stderr}");
    intake.shutdown().await;
}

/// Runs `check --config config` with `DD_API_KEY=key` (and no token in the environment):
/// its exit code, stdout and stderr.
fn run_check(dir: &Path, config: &Path, key: &str) -> (Option<i32>, String, String) {
    let mut cmd = dd_command(dir);
    cmd.env("DD_API_KEY", key)
        .env_remove("CLAWDSTRIKE_DD_TOKEN")
        .arg("check")
        .arg("--config")
        .arg(config);
    let mut run = Running::spawn(cmd);
    let code = run.wait(WAIT).code();
    (code, run.stdout(), run.stderr())
}

/// `check`: a good key is validated without being printed; a wrong one fails the check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_each_exporter_and_never_prints_keys() {
    let intake = intake().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &config_yaml(&intake.base_url(), "", ""));
    for (key, code, verdict) in [
        (KEY, 0, "api key check:   OK"),
        ("wrongKeyCanary000000000000000000", 1, "INVALID"),
    ] {
        let (status, out, err) = run_check(dir.path(), &config, key);
        assert_eq!(status, Some(code), "{out}\n{err}");
        assert!(
            out.contains(verdict)
                && out.contains("env $DD_API_KEY")
                && out.contains("logs intake:     reachable"),
            "{out}"
        );
        assert!(
            !out.contains(key) && !err.contains(key),
            "the key is never printed"
        );
    }
    // What `ship` would fail on fails the check too: a rejects file that cannot be written,
    // a listener off loopback without a token. Credentials in a URL are not printed.
    let blocker = dir.path().join("a-file");
    std::fs::write(&blocker, "").unwrap();
    let with_credentials = intake
        .base_url()
        .replacen("http://", "http://user:secretpw@", 1);
    let extra = format!(
        "rejects: {}\ninput: {{ http: {{ listen: \"0.0.0.0:0\" }} }}\n",
        blocker.join("rejects.ndjson").display()
    );
    std::fs::write(&config, config_yaml(&with_credentials, "", &extra)).unwrap();
    let (status, out, err) = run_check(dir.path(), &config, KEY);
    assert_eq!(status, Some(1), "{out}\n{err}");
    assert!(out.contains("rejects.ndjson NOT WRITABLE"), "{out}");
    assert!(
        out.contains("PROBLEM: `input.http.token`: a bearer token is required"),
        "{out}"
    );
    assert!(out.contains("logs intake:     reachable"), "{out}");
    assert!(
        !out.contains("secretpw") && !err.contains("secretpw"),
        "{out}"
    );
    // A FIFO where the rejects file goes: reported, not opened (which would block).
    let fifo = dir.path().join("rejects.fifo");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    std::fs::write(
        &config,
        config_yaml(
            &intake.base_url(),
            "",
            &format!("rejects: {}\n", fifo.display()),
        ),
    )
    .unwrap();
    let (status, out, _) = run_check(dir.path(), &config, KEY);
    assert_eq!(status, Some(1), "{out}");
    assert!(out.contains("NOT WRITABLE: not a regular file"), "{out}");

    std::fs::write(&config, "exporters: { eu: { site: datadoghq.moon } }\n").unwrap();
    let (status, _, err) = run_check(dir.path(), &config, KEY);
    assert_eq!(status, Some(2));
    assert!(
        err.contains("exporters.eu.site") && err.contains(&config.display().to_string()),
        "the error names the key and the file: {err}"
    );
    intake.shutdown().await;
}

/// Start-up decisions of `ship`: a backfill ends with its files even when the configuration
/// (the daemon's) has a listener; an empty bearer token and a checkpoint that cannot be
/// parsed are configuration errors (2: a restart would fail the same way).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ship_start_up_decisions() {
    let intake = intake().await;
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.ndjson");
    std::fs::copy(fixture("events.ndjson"), &events).unwrap();
    // The daemon's listener in the file: the backfill neither starts it nor waits for it.
    let config = write_config(
        dir.path(),
        &config_yaml(
            &intake.base_url(),
            "",
            "input: { http: { listen: \"127.0.0.1:0\" } }\n",
        ),
    );
    let mut run = Running::spawn({
        let mut cmd = ship_with_rejects(dir.path(), &config, &dir.path().join("r.ndjson"));
        cmd.arg(&events);
        cmd
    });
    assert_eq!(run.wait(WAIT).code(), Some(0), "{}", run.stderr());
    assert_eq!(intake.unique_event_ids(), 42);

    let config = write_config(
        dir.path(),
        &config_yaml(
            &intake.base_url(),
            "",
            "input: { http: { listen: \"127.0.0.1:0\", token: \"\" } }\n",
        ),
    );
    let mut cmd = ship_with_rejects(dir.path(), &config, &dir.path().join("r.ndjson"));
    cmd.arg("--listen").arg("127.0.0.1:0");
    let mut run = Running::spawn(cmd);
    assert_eq!(run.wait(WAIT).code(), Some(2), "{}", run.stderr());
    assert!(
        run.stderr().contains("input.http.token"),
        "{}",
        run.stderr()
    );

    let config = write_config(dir.path(), &config_yaml(&intake.base_url(), "", ""));
    let checkpoint = dir.path().join("events.checkpoint");
    std::fs::write(&checkpoint, "{ not a checkpoint").unwrap();
    let mut cmd = ship_with_rejects(dir.path(), &config, &dir.path().join("r.ndjson"));
    cmd.arg("--follow")
        .arg("--checkpoint")
        .arg(&checkpoint)
        .arg(&events);
    let mut run = Running::spawn(cmd);
    assert_eq!(run.wait(WAIT).code(), Some(2), "{}", run.stderr());
    assert!(
        run.stderr().contains("cannot be parsed"),
        "{}",
        run.stderr()
    );
    intake.shutdown().await;
}

/// `signals list` and `signals triage` through the fake intake's Security Signals API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_are_listed_and_triaged_with_the_application_key() {
    let intake = intake().await;
    let ours = intake
        .add_signal(SignalSeed::new("Secret leaked by agent-7").with_tag("source:clawdstrike"));
    let theirs = intake.add_signal(SignalSeed::new("Unrelated").with_tag("source:other"));
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &config_yaml(&intake.base_url(), "", ""));
    let mut cmd = dd_command(dir.path());
    cmd.env("DD_API_KEY", KEY)
        .env("DD_APP_KEY", APP_KEY)
        .args(["signals", "list", "--since", "1h", "--config"])
        .arg(&config);
    let mut run = Running::spawn(cmd);
    assert_eq!(run.wait(WAIT).code(), Some(0), "{}", run.stderr());
    let out = run.stdout();
    assert!(
        out.contains(&ours) && out.contains("open") && !out.contains(&theirs),
        "{out}"
    );
    let mut cmd = dd_command(dir.path());
    cmd.env("DD_API_KEY", KEY)
        .env("DD_APP_KEY", APP_KEY)
        .args([
            "signals",
            "triage",
            &ours,
            "--state",
            "under_review",
            "--config",
        ])
        .arg(&config);
    let mut run = Running::spawn(cmd);
    assert_eq!(run.wait(WAIT).code(), Some(0), "{}", run.stderr());
    assert_eq!(intake.signal_state(&ours).as_deref(), Some("under_review"));
    let mut cmd = dd_command(dir.path());
    cmd.env("DD_API_KEY", KEY)
        .args(["signals", "list", "--config"])
        .arg(&config);
    let mut run = Running::spawn(cmd);
    assert_eq!(
        run.wait(WAIT).code(),
        Some(2),
        "no application key is a configuration error"
    );
    assert!(run.stderr().contains("app_key"), "{}", run.stderr());
    intake.shutdown().await;
}

/// `fakeintake`: the emulator as a subcommand accepts its key and stops on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fakeintake_subcommand_serves_the_datadog_api() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = dd_command(dir.path());
    cmd.args(["fakeintake", "--listen", "127.0.0.1:0", "--api-key", "k1"]);
    let mut run = Running::spawn(cmd);
    let line = run.wait_for_line("fakeintake listening on", WAIT);
    let base = line.rsplit(' ').next().unwrap().trim().to_owned();
    let client = reqwest::Client::new();
    let ok = client
        .get(format!("{base}/api/v1/validate"))
        .header("DD-API-KEY", "k1")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let bad = client
        .get(format!("{base}/api/v1/validate"))
        .header("DD-API-KEY", "k2")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 403);
    run.signal("TERM");
    assert_eq!(run.wait(WAIT).code(), Some(0));
}

/// Multi-region: two exporters (two fake intakes, two keys) each receive every event; one
/// stalled region makes the exit code report its leftovers while the other is complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_region_receives_every_event_and_a_stalled_one_is_reported() {
    let us = intake().await;
    let eu = FakeIntake::start("euKey000000000000000000000000003", APP_KEY)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let region = |name: &str, var: &str, url: &str| {
        format!(
            "  {name}:\n    api_key: {{ env: {var} }}\n    logs_url: {url}\n    api_url: {url}\n    metrics: {{ enabled: false }}\n    batch: {{ flush_interval_ms: 20 }}\n    retry: {{ initial_backoff_ms: 10, max_backoff_ms: 100 }}\n"
        )
    };
    let yaml = format!(
        "exporters:\n{}{}shutdown_timeout_ms: 1000\n",
        region("datadog_us", "DD_US_API_KEY", &us.base_url()),
        region("datadog_eu", "DD_EU_API_KEY", &eu.base_url())
    );
    let config = write_config(dir.path(), &yaml);
    let ship = || {
        let mut cmd = dd_command(dir.path());
        cmd.env("DD_US_API_KEY", KEY)
            .env("DD_EU_API_KEY", "euKey000000000000000000000000003")
            .arg("ship")
            .arg("--config")
            .arg(&config)
            .arg(fixture("events.ndjson"));
        Running::spawn(cmd)
    };
    let mut run = ship();
    assert_eq!(run.wait(WAIT).code(), Some(0), "{}", run.stderr());
    assert_eq!((us.unique_event_ids(), eu.unique_event_ids()), (42, 42));
    // The EU intake stalls: US still gets everything; EU's leftovers make the exit code 3.
    eu.fail_next(Endpoint::Logs, 1000, FaultAction::Stall);
    us.reset();
    let mut run = ship();
    us.wait_for_items(42, WAIT)
        .await
        .expect("the healthy region is not held back");
    assert_eq!(run.wait(WAIT).code(), Some(3), "{}", run.stderr());
    let stderr = run.stderr();
    assert!(
        stderr.contains("exporter `datadog_us`: submitted 42, delivered 42"),
        "{stderr}"
    );
    assert!(
        stderr.contains("exporter `datadog_eu`: submitted 42, delivered 0"),
        "{stderr}"
    );
    us.shutdown().await;
    eu.shutdown().await;
}

/// A listener off loopback without a token is refused as a configuration error (exit 2).
#[test]
fn a_public_listener_without_a_token_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = dd_command(dir.path());
    cmd.env("DD_API_KEY", KEY)
        .args(["ship", "--listen", "0.0.0.0:0"]);
    let mut run = Running::spawn(cmd);
    assert_eq!(run.wait(WAIT).code(), Some(2));
    assert!(
        run.stderr().contains("input.http.token"),
        "{}",
        run.stderr()
    );
}

/// Ships the 42 fixture events with `config` and returns once the whole file is read and a
/// request is held by the (stalling) intake.
async fn ship_fixtures_until_stalled(dir: &Path, config: &Path, intake: &FakeIntake) -> Running {
    let mut cmd = dd_command(dir);
    cmd.env("DD_API_KEY", KEY)
        .arg("ship")
        .arg("--config")
        .arg(config)
        .arg(fixture("events.ndjson"));
    let run = Running::spawn(cmd);
    run.wait_for_line("read 42 events", WAIT);
    intake
        .wait_until(WAIT, |s| s.stalled_now >= 1)
        .await
        .expect("a request reaches the stalled intake");
    run
}

/// The disk buffer (`buffer: { type: disk }`): events taken while Datadog stalls survive a
/// SIGKILL and are delivered by the next run, exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_disk_buffer_keeps_events_across_a_sigkill_and_replays_them() {
    let intake = intake().await;
    intake.fail_next(Endpoint::Logs, 1000, FaultAction::Stall);
    let dir = tempfile::tempdir().unwrap();
    let buffer = dir.path().join("buffer");
    let extra = format!(
        "buffer: {{ type: disk, path: {}, fsync: always }}\nshutdown_timeout_ms: 1000\ninput: {{ http: {{ listen: 127.0.0.1:0 }} }}\n",
        buffer.display()
    );
    let config = write_config(dir.path(), &config_yaml(&intake.base_url(), "", &extra));
    let mut run = ship_fixtures_until_stalled(dir.path(), &config, &intake).await;
    // A second forwarder on the same buffer cannot start while the first holds its lock: a
    // failure of the moment (exit 1, which a supervisor retries), not a configuration error
    // (exit 2, which the systemd unit never restarts).
    let mut second = dd_command(dir.path());
    second
        .env("DD_API_KEY", KEY)
        .arg("ship")
        .arg("--config")
        .arg(&config)
        .arg(fixture("events.ndjson"));
    let mut second = Running::spawn(second);
    assert_eq!(second.wait(WAIT).code(), Some(1), "{}", second.stderr());
    assert!(
        second.stderr().contains("in use by another process"),
        "{}",
        second.stderr()
    );
    run.signal("KILL");
    run.wait(WAIT);
    assert_eq!(
        intake.total_items(),
        0,
        "nothing was delivered before the kill"
    );
    intake.clear_faults();
    intake.release_stalled();
    // The next run (listening only) replays the buffer.
    let mut cmd = dd_command(dir.path());
    cmd.env("DD_API_KEY", KEY)
        .arg("ship")
        .arg("--config")
        .arg(&config);
    let mut run = Running::spawn(cmd);
    intake
        .wait_for_items(42, WAIT)
        .await
        .expect("the buffer is replayed");
    run.signal("TERM");
    assert_eq!(run.wait(WAIT).code(), Some(0), "{}", run.stderr());
    assert_eq!(intake.unique_event_ids(), 42);
    assert!(intake.duplicates().is_empty(), "{:?}", intake.duplicates());
    intake.shutdown().await;
}

/// Starts `ship` in `dir` with the disk buffer (`buffer`: its options after the path), the
/// HTTP input and `more` top-level YAML, and POSTs the 42 fixture events as one NDJSON body:
/// the running forwarder, the answer's status and JSON, and the body's lines.
async fn post_the_fixtures_through_the_buffer(
    intake: &FakeIntake,
    dir: &Path,
    buffer: &str,
    more: &str,
) -> (Running, u16, serde_json::Value, String) {
    let extra = format!(
        "buffer: {{ type: disk, path: {}, {buffer} }}\ninput: {{ http: {{ listen: 127.0.0.1:0 }} }}\n{more}",
        dir.join("buffer").display()
    );
    let (run, addr) = ship_listening(intake, dir, &extra);
    let events = std::fs::read_to_string(fixture("events.ndjson")).unwrap();
    let r = post(
        &reqwest::Client::new(),
        &format!("http://{addr}/"),
        None,
        events.clone(),
    )
    .send()
    .await
    .unwrap_or_else(|e| panic!("{e}; stderr:\n{}", run.stderr()));
    let status = r.status().as_u16();
    let answer = r.json().await.unwrap();
    (run, status, answer, events)
}

/// An HTTP body through the disk buffer under `fsync: always`: its events are made durable
/// together before the answer, one fsync for the body rather than one per event (which made a
/// body of 42 events wait for 42 fsyncs, one after the other).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_body_shares_one_fsync_of_the_disk_buffer() {
    let intake = intake().await;
    let dir = tempfile::tempdir().unwrap();
    let (mut run, status, answer, events) =
        post_the_fixtures_through_the_buffer(&intake, dir.path(), "fsync: always", "").await;
    assert_eq!(
        (status, &answer["accepted"]),
        (202, &serde_json::json!(42)),
        "{answer}"
    );
    intake.wait_for_items(42, WAIT).await.expect("delivered");
    run.signal("TERM");
    assert_eq!(run.wait(WAIT).code(), Some(0), "{}", run.stderr());
    let stderr = run.stderr();
    let fsyncs: u64 = stderr
        .split("42 events appended (")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no buffer report:\n{stderr}"));
    assert!(fsyncs <= 3, "{fsyncs} fsyncs for one body of 42 events");
    assert_each_line_arrived_once(&intake, &events.lines().collect::<Vec<_>>());
    intake.shutdown().await;
}

/// An HTTP body that fills the disk buffer part way: the answer (503) counts the events taken
/// before the buffer filled, and those are kept and delivered, not dropped with the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_events_of_a_body_taken_before_the_disk_buffer_filled_are_delivered() {
    let intake = intake().await;
    intake.fail_next(Endpoint::Logs, 1000, FaultAction::Stall);
    let dir = tempfile::tempdir().unwrap();
    let (mut run, status, answer, events) = post_the_fixtures_through_the_buffer(
        &intake,
        dir.path(),
        "max_bytes: 16384, segment_bytes: 4096, fsync: always",
        "shutdown_timeout_ms: 2000\n",
    )
    .await;
    assert_eq!(status, 503, "{answer}");
    let accepted = answer["accepted"].as_u64().unwrap();
    assert!((1..42).contains(&accepted), "{answer}");
    assert_eq!(answer["next_item"].as_u64(), Some(accepted + 1), "{answer}");
    intake.clear_faults();
    intake.release_stalled();
    intake
        .wait_for_items(accepted, WAIT)
        .await
        .expect("the events taken are delivered");
    run.signal("TERM");
    assert_eq!(run.wait(WAIT).code(), Some(0), "{}", run.stderr());
    let lines: Vec<&str> = events.lines().collect();
    assert_each_line_arrived_once(&intake, &lines[..usize::try_from(accepted).unwrap()]);
    intake.shutdown().await;
}

/// A body larger than the whole disk buffer, with Datadog up: its first events are committed
/// (and delivered, freeing room) before the buffer waits for room, so the whole body is taken.
/// Held back until the end, they took room only they could free, and the body stalled into a
/// 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_larger_than_the_disk_buffer_is_taken_whole() {
    let intake = intake().await;
    let dir = tempfile::tempdir().unwrap();
    let (mut run, status, answer, events) = post_the_fixtures_through_the_buffer(
        &intake,
        dir.path(),
        "max_bytes: 8192, segment_bytes: 4096, fsync: always",
        "",
    )
    .await;
    assert!(
        events.len() > 3 * 8192,
        "the body is larger than the buffer"
    );
    assert_eq!(
        (status, &answer["accepted"]),
        (202, &serde_json::json!(42)),
        "{answer}"
    );
    intake.wait_for_items(42, WAIT).await.expect("delivered");
    run.signal("TERM");
    assert_eq!(run.wait(WAIT).code(), Some(0), "{}", run.stderr());
    assert_each_line_arrived_once(&intake, &events.lines().collect::<Vec<_>>());
    intake.shutdown().await;
}

/// Ships the 42 fixture events through a disk buffer too small for them (16 KiB) while the
/// intake holds every request, releases them once the whole file is read, and returns the
/// exit code and stderr.
async fn ship_through_a_full_buffer(intake: &FakeIntake, when_full: &str) -> (Option<i32>, String) {
    // Every request stalls until the whole file is read, so the buffer fills whatever the
    // machine's speed.
    intake.fail_next(Endpoint::Logs, 1000, FaultAction::Stall);
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "buffer: {{ type: disk, path: {}, max_bytes: 16384, segment_bytes: 4096, fsync: never, when_full: {when_full} }}\n",
        dir.path().join("buffer").display()
    );
    let config = write_config(dir.path(), &config_yaml(&intake.base_url(), "", &extra));
    let mut run = ship_fixtures_until_stalled(dir.path(), &config, intake).await;
    intake.clear_faults();
    intake.release_stalled();
    let code = run.wait(WAIT).code();
    (code, run.stderr())
}

/// The number that starts the forwarder's "the disk buffer was full: N ..." line.
fn buffer_report_count(stderr: &str) -> u64 {
    stderr
        .split("the disk buffer was full: ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no buffer report in stderr:\n{stderr}"))
}

/// `when_full: drop_newest` with the disk buffer: the events it refused are reported and make
/// the exit code 3; every other event arrives once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_the_full_disk_buffer_drops_are_reported_and_fail_the_run() {
    let intake = intake().await;
    let (code, stderr) = ship_through_a_full_buffer(&intake, "drop_newest").await;
    let dropped = buffer_report_count(&stderr);
    assert!(dropped > 0, "16 KiB cannot hold 42 events:\n{stderr}");
    assert_eq!(code, Some(3), "dropped events fail the run:\n{stderr}");
    assert_eq!(intake.unique_event_ids() + dropped, 42, "counts are exact");
    assert!(intake.duplicates().is_empty(), "{:?}", intake.duplicates());
    intake.shutdown().await;
}

/// `when_full: drop_oldest` with the disk buffer: evicted events the pipeline still holds are
/// delivered, so nothing is counted lost and the run succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_evicted_from_the_disk_buffer_but_delivered_are_not_counted_lost() {
    let intake = intake().await;
    let (code, stderr) = ship_through_a_full_buffer(&intake, "drop_oldest").await;
    let evicted = buffer_report_count(&stderr);
    assert!(evicted > 0, "16 KiB cannot hold 42 events:\n{stderr}");
    assert!(
        stderr.contains("0 of them were lost before their replay, 0 were left behind"),
        "{stderr}"
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        intake.unique_event_ids(),
        42,
        "evicted events are delivered"
    );
    assert!(intake.duplicates().is_empty(), "{:?}", intake.duplicates());
    intake.shutdown().await;
}
