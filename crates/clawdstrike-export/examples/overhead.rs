//! The pipeline's own overhead: N events through a no-op exporter; prints events/s (wall) and
//! events per CPU-second (user + system time of the whole process, from `/proc/self/stat`).
//!
//! ```text
//! cargo run -p clawdstrike-export --example overhead --release -- 2000000 [EXPORTERS] [PRODUCERS]
//! ```
//!
//! `EXPORTERS` (default 1) no-op exporters in a fan-out; `PRODUCERS` (default 1) tasks submitting.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use clawdstrike_export::{ExportResult, Exporter, ExporterConfig, Pipeline, Record};
use clawdstrike_schema::{EventType, ResourceType, SecurityEvent, Severity};

#[derive(Debug)]
struct Noop(String);

#[async_trait]
impl Exporter for Noop {
    fn name(&self) -> &str {
        &self.0
    }

    fn estimate_size(&self, _record: &Record) -> usize {
        600
    }

    async fn export(&self, batch: &[Record]) -> ExportResult {
        ExportResult::exported(batch.len())
    }
}

/// User + system CPU seconds of this process (clock ticks at the usual 100 Hz).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the `(comm)`; utime and stime are fields 14 and 15 (1-based).
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    #[allow(clippy::cast_precision_loss)]
    let secs = (ticks(11) + ticks(12)) as f64 / 100.0;
    secs
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2_000_000);
    let event = Arc::new(
        SecurityEvent::builder(EventType::ForbiddenPath)
            .agent_id("agent-7")
            .session_id("sess-123")
            .action("file_access")
            .denied(
                "forbidden_path",
                Severity::High,
                "access to a forbidden path",
            )
            .resource(ResourceType::File, "/home/user/.ssh/id_rsa")
            .build()?,
    );
    let exporters: usize = std::env::args()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1);
    let producers: u64 = std::env::args()
        .nth(3)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1)
        .max(1);
    let mut builder = Pipeline::builder();
    for i in 0..exporters {
        builder = builder.with_exporter(
            Arc::new(Noop(format!("noop-{i}"))),
            ExporterConfig::default(),
        );
    }
    let pipeline = builder.build()?;
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..producers {
        let pipeline = pipeline.clone();
        let event = Arc::clone(&event);
        let share = n / producers + u64::from(p < n % producers);
        tasks.push(tokio::spawn(async move {
            for _ in 0..share {
                pipeline.submit(Record::new(Arc::clone(&event))).await?;
            }
            Ok::<_, clawdstrike_export::SubmitError>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let reports = pipeline.shutdown(Duration::from_secs(60)).await;
    let wall = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_before;
    for report in &reports {
        assert_eq!(report.delivered, n, "every event delivered");
    }
    #[allow(clippy::cast_precision_loss)]
    let n_f = n as f64;
    println!(
        "{n} events, {producers} producer(s), fan-out to {exporters} no-op exporter(s) (default config, block): wall {wall:.3} s = {:.0} events/s; \
         CPU {cpu:.2} s = {:.0} events per CPU-second (per core)",
        n_f / wall,
        if cpu > 0.0 { n_f / cpu } else { f64::INFINITY },
    );
    Ok(())
}
