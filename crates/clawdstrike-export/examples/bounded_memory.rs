//! Submits 1,000,000 distinct events to a hung exporter under `drop_oldest`, then
//! `drop_newest`, and prints peak RSS and the drop counts: memory stays bounded by the queue.
//!
//! ```text
//! cargo run -p clawdstrike-export --example bounded_memory --features testing --release
//! ```

use std::sync::Arc;
use std::time::Duration;

use clawdstrike_export::testing::{ScriptedExporter, Step};
use clawdstrike_export::{ExporterConfig, Pipeline, Record, WhenFull};
use clawdstrike_schema::{EventType, ResourceType, SecurityEvent, Severity, Uuid};

const EVENTS: u64 = 1_000_000;
const CAPACITY: usize = 10_000;

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let template = SecurityEvent::builder(EventType::ForbiddenPath)
        .agent_id("agent-7")
        .session_id("sess-123")
        .action("file_access")
        .denied(
            "forbidden_path",
            Severity::High,
            "access to a forbidden path",
        )
        .resource(ResourceType::File, "/home/user/.ssh/id_rsa")
        .build()?;
    println!("baseline: VmRSS {} KiB", status_kib("VmRSS:"));
    for policy in [WhenFull::DropOldest, WhenFull::DropNewest] {
        let exporter = Arc::new(ScriptedExporter::new("hung").with_default(Step::HangForever));
        let config = ExporterConfig::default()
            .with_queue_capacity(CAPACITY)
            .with_when_full(policy);
        let pipeline = Pipeline::builder()
            .with_exporter(exporter, config)
            .build()?;
        for i in 0..EVENTS {
            // A distinct allocation per event, as a real producer would make.
            let mut event = template.clone();
            event.event_id = Uuid::from_u128(u128::from(i) + 1);
            pipeline.submit(Record::new(event)).await?;
        }
        let stats = pipeline.stats().remove(0);
        println!(
            "{:<12} submitted {} accepted {} dropped queue_full_newest {} queue_full_oldest {} \
             queue_depth {} in_flight_events {} | VmRSS {} KiB, VmHWM (peak) {} KiB",
            policy.as_str(),
            stats.submitted,
            stats.accepted,
            stats.dropped.queue_full_newest,
            stats.dropped.queue_full_oldest,
            stats.queue_depth,
            stats.in_flight_events,
            status_kib("VmRSS:"),
            status_kib("VmHWM:"),
        );
        let report = pipeline.shutdown(Duration::from_millis(50)).await.remove(0);
        println!(
            "{:<12} shutdown: delivered {} left_behind {} dropped total {}",
            policy.as_str(),
            report.delivered,
            report.left_behind,
            report.dropped.total()
        );
    }
    Ok(())
}
