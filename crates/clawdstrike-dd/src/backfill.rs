//! Backfill: NDJSON files or stdin, read to the end on a reader thread, bad lines to the
//! rejects file, good events submitted with backpressure. A progress line on stderr when it is
//! a terminal.

use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clawdstrike_export::Record;
use clawdstrike_schema::{DecodedEvent, NdjsonOptions, NdjsonReader, NdjsonRecord};
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::{mpsc, watch};

use crate::forwarder::{Refused, SUBMITS_IN_FLIGHT, Sink, Submitted};
use crate::rejects::{Reject, Rejects};

/// What a reader thread sends.
#[derive(Debug)]
enum Item {
    Event(Box<DecodedEvent>),
    Rejected(clawdstrike_schema::RejectedLine),
    Progress(u64),
    Failed(String),
}

/// What a backfill did.
#[derive(Debug, Default)]
pub(crate) struct BackfillReport {
    /// Events submitted.
    pub(crate) submitted: u64,
    /// Events the sink refused (shutting down, a failed write or fsync of the disk buffer):
    /// read, but not taken. Each goes to the rejects file with why, since the input (stdin)
    /// may not be there to read again.
    pub(crate) refused: u64,
    /// Of those, the ones written to the rejects file.
    pub(crate) refused_kept: u64,
    /// Lines rejected (events larger than the disk buffer included).
    pub(crate) rejected: u64,
    /// Stopped by a signal before the end of the input.
    pub(crate) interrupted: bool,
    /// Read errors (file missing, I/O).
    pub(crate) errors: Vec<String>,
}

impl BackfillReport {
    fn count(&mut self, submitted: Submitted, rejects: &Rejects, source: &str, at: (u64, u64)) {
        match submitted {
            Submitted::Taken => self.submitted += 1,
            Submitted::TooLarge { event, why } => {
                self.rejected += 1;
                // A failure is counted in `rejects.failed()`: the run fails at the end.
                let _ = rejects.write_event(source, at.0, at.1, &event, why);
            }
            Submitted::Refused { event, why } => {
                self.refused += 1;
                let why = match why {
                    Refused::Closed => "not taken: shutting down".to_owned(),
                    Refused::Full(why) | Refused::TooLarge(why) | Refused::Failed(why) => {
                        format!("not taken: {why}")
                    }
                };
                // A failure is counted in `rejects.failed()`: the run fails at the end.
                if rejects.write_event(source, at.0, at.1, &event, why).is_ok() {
                    self.refused_kept += 1;
                }
            }
        }
    }
}

/// Ships every source in order (`-` is stdin). Stops early when `stop` turns true.
pub(crate) async fn run(
    sources: &[PathBuf],
    max_line_bytes: usize,
    sink: &Sink,
    rejects: &Rejects,
    stop: &mut watch::Receiver<bool>,
) -> BackfillReport {
    let mut report = BackfillReport::default();
    let progress = std::io::stderr().is_terminal();
    for source in sources {
        if *stop.borrow() {
            report.interrupted = true;
            break;
        }
        let name = source.display().to_string();
        let (reader, total): (Box<dyn BufRead + Send>, Option<u64>) = if name == "-" {
            (
                Box::new(BufReader::with_capacity(1 << 16, std::io::stdin())),
                None,
            )
        } else {
            match std::fs::File::open(source) {
                Ok(f) => {
                    let len = f.metadata().ok().map(|m| m.len());
                    (Box::new(BufReader::with_capacity(1 << 16, f)), len)
                }
                Err(e) => {
                    report.errors.push(format!("cannot open {name}: {e}"));
                    continue;
                }
            }
        };
        let (tx, mut rx) = mpsc::channel::<Item>(1024);
        let halt = Arc::new(AtomicBool::new(false));
        let thread_halt = Arc::clone(&halt);
        let options = NdjsonOptions::default().with_max_line_bytes(max_line_bytes);
        let thread = std::thread::spawn(move || {
            let mut lines = NdjsonReader::with_options(reader, options);
            let mut last_progress = Instant::now();
            while !thread_halt.load(Ordering::Relaxed) {
                let item = match lines.next() {
                    None => break,
                    Some(Ok(NdjsonRecord::Event(e))) => Item::Event(e),
                    Some(Ok(NdjsonRecord::Rejected(bad))) => Item::Rejected(bad),
                    Some(Err(e)) => Item::Failed(e.to_string()),
                };
                let failed = matches!(item, Item::Failed(_));
                if tx.blocking_send(item).is_err() || failed {
                    return;
                }
                if last_progress.elapsed() > Duration::from_millis(200) {
                    last_progress = Instant::now();
                    let _ = tx.blocking_send(Item::Progress(lines.offset()));
                }
            }
        });
        let mut shown = Instant::now();
        let mut in_flight = FuturesUnordered::new();
        loop {
            let item = tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => { report.interrupted = true; None }
                Some((at, submitted)) = in_flight.next(), if !in_flight.is_empty() => {
                    report.count(submitted, rejects, &name, at);
                    continue;
                }
                item = rx.recv(), if in_flight.len() < SUBMITS_IN_FLIGHT => item,
            };
            let Some(item) = item else { break };
            match item {
                Item::Event(decoded) => {
                    let DecodedEvent {
                        line,
                        offset,
                        event,
                        ..
                    } = *decoded;
                    let submit = sink.submit_input(Record::new(event), None);
                    in_flight.push(submit.map(move |s| ((line, offset), s)));
                }
                Item::Rejected(bad) => {
                    report.rejected += 1;
                    // A failure is counted in `rejects.failed()`: the run fails at the end.
                    let _ = rejects.write(&Reject {
                        source: &name,
                        line: bad.line,
                        offset: bad.offset,
                        error: bad.error.to_string(),
                        raw: &bad.raw,
                        truncated: bad.truncated,
                        reencoded: false,
                    });
                }
                Item::Progress(offset) => {
                    if progress && shown.elapsed() > Duration::from_millis(200) {
                        shown = Instant::now();
                        let of = total.map(|t| format!(" of {t}")).unwrap_or_default();
                        let pct = total
                            .filter(|t| *t > 0)
                            .map(|t| format!(" ({:.0}%)", offset as f64 * 100.0 / t as f64))
                            .unwrap_or_default();
                        eprint!(
                            "\r{name}: {offset}{of} bytes{pct}, {} events, {} rejected   ",
                            report.submitted, report.rejected
                        );
                        let _ = std::io::stderr().flush();
                    }
                }
                Item::Failed(e) => report.errors.push(format!("reading {name}: {e}")),
            }
        }
        // The input is read: wait for the submits still under way (cancelled by a stop, which
        // leaves nothing half-taken: see `Sink::submit`).
        while !report.interrupted && !in_flight.is_empty() {
            tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => report.interrupted = true,
                Some((at, submitted)) = in_flight.next() => {
                    report.count(submitted, rejects, &name, at);
                }
            }
        }
        // Stopped: count what already finished; the rest is cancelled (not taken, or freed).
        while let Some(Some((at, submitted))) = in_flight.next().now_or_never() {
            report.count(submitted, rejects, &name, at);
        }
        drop(in_flight);
        halt.store(true, Ordering::Relaxed);
        drop(rx);
        // The thread ends at its next line (stdin may block: it is detached then).
        if !report.interrupted {
            // A reader that died (a panic) dropped its sender: that looked like the end of the
            // input, so it must not pass for it.
            let joined = tokio::task::spawn_blocking(move || thread.join()).await;
            if !matches!(joined, Ok(Ok(()))) {
                report
                    .errors
                    .push(format!("reading {name}: the reader failed before the end"));
            }
        }
        if progress {
            eprintln!(
                "\r{name}: done, {} events, {} rejected            ",
                report.submitted, report.rejected
            );
        }
        if report.interrupted {
            break;
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An event the sink refused (a failed disk-buffer write, a shutdown) goes to the rejects
    /// file with its source, line and why: from stdin there is no other copy of it.
    #[test]
    fn a_refused_event_is_kept_in_the_rejects_file() {
        let dir = std::env::temp_dir().join(format!("cdd-backfill-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("rejects.ndjson");
        let _ = std::fs::remove_file(&path);
        let rejects = Rejects::new(&path);
        let line = crate::demo::SAMPLES.lines().next().unwrap();
        let event = Arc::new(clawdstrike_schema::decode_event(line.as_bytes()).unwrap());
        let mut report = BackfillReport::default();
        for why in [
            Refused::Failed("the disk buffer write failed: No space left on device".into()),
            Refused::Closed,
        ] {
            let submitted = Submitted::Refused {
                event: Arc::clone(&event),
                why,
            };
            report.count(submitted, &rejects, "-", (7, 1234));
        }
        assert_eq!((report.refused, report.refused_kept), (2, 2));
        let kept: Vec<serde_json::Value> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(kept.len(), 2);
        assert_eq!(
            kept[0]["error"],
            "not taken: the disk buffer write failed: No space left on device"
        );
        assert_eq!(kept[1]["error"], "not taken: shutting down");
        for k in &kept {
            assert_eq!(
                (k["source"].as_str(), k["line"].as_u64()),
                (Some("-"), Some(7))
            );
            assert_eq!(k["reencoded"], true);
            let back = clawdstrike_schema::decode_event(k["raw"].as_str().unwrap().as_bytes());
            assert_eq!(back.unwrap().event_id, event.event_id);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
