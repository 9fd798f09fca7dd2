//! The running forwarder: one Datadog exporter per configured region, one pipeline, one
//! metrics reporter per exporter, and the shutdown report.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use clawdstrike_datadog::exporter::DatadogExporter;
use clawdstrike_datadog::metrics::{MetricsHandle, MetricsReporter};
use clawdstrike_export::{Pipeline, SettleHook, ShutdownReport};
use clawdstrike_keys::KeyHolder;

use crate::config::Settings;

/// Everything that runs while shipping.
#[derive(Debug)]
pub(crate) struct Forwarder {
    /// The pipeline (cheap to clone).
    pub(crate) pipeline: Pipeline,
    metrics: Vec<MetricsHandle>,
}

/// What the shutdown found.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// Per exporter.
    pub(crate) reports: Vec<ShutdownReport>,
}

impl Outcome {
    /// Events neither delivered nor filtered, over every exporter.
    pub(crate) fn undelivered(&self) -> u64 {
        self.reports.iter().map(|r| r.dead_lettered + r.dropped.total()).sum()
    }

    /// Prints the report to stderr.
    pub(crate) fn print(&self) {
        for r in &self.reports {
            eprintln!(
                "clawdstrike-dd: exporter `{}`: submitted {}, delivered {}, filtered {}, dead-lettered {}, dropped {} (queue full {}, left behind at the deadline {}){}",
                r.exporter,
                r.submitted,
                r.delivered,
                r.filtered,
                r.dead_lettered,
                r.dropped.total(),
                r.dropped.queue_full_newest + r.dropped.queue_full_oldest,
                r.left_behind,
                if r.deadline_reached { "; the shutdown deadline was reached" } else { "" },
            );
        }
    }
}

/// How exporters get their keys.
#[derive(Debug, Clone)]
pub(crate) enum Keys {
    /// From each exporter's configured source.
    Configured,
    /// One fixed key for every exporter (the demo).
    Static(KeyHolder),
}

impl Forwarder {
    /// Builds the exporters (loading their keys), the pipeline and the metrics reporters.
    ///
    /// # Errors
    /// A message naming the exporter (never a key).
    pub(crate) async fn start(settings: &Settings, keys: Keys, hook: Option<Arc<dyn SettleHook>>) -> Result<Forwarder, String> {
        let pipeline_cell: Arc<OnceLock<Pipeline>> = Arc::new(OnceLock::new());
        let mut builder = Pipeline::builder();
        let mut reporters = Vec::new();
        for entry in &settings.exporters {
            let exporter = match &keys {
                Keys::Configured => DatadogExporter::from_config(&entry.name, &entry.resolved).await.map_err(|e| e.to_string())?,
                Keys::Static(holder) => {
                    DatadogExporter::from_config_with_key(&entry.name, &entry.resolved, holder.clone()).map_err(|e| e.to_string())?
                }
            };
            let cell = Arc::clone(&pipeline_cell);
            let name = entry.name.clone();
            let stats = Arc::new(move || cell.get().and_then(|p| p.stats().into_iter().find(|s| s.name == name)));
            if let Some(reporter) = MetricsReporter::for_exporter(&exporter, &entry.resolved, stats) {
                reporters.push(reporter);
            }
            builder = builder.with_exporter(Arc::new(exporter), entry.resolved.pipeline.clone());
        }
        if let Some(hook) = hook {
            builder = builder.with_settle_hook(hook);
        }
        let pipeline = builder.build().map_err(|e| e.to_string())?;
        let _ = pipeline_cell.set(pipeline.clone());
        let metrics = reporters.into_iter().map(MetricsReporter::spawn).collect();
        Ok(Forwarder { pipeline, metrics })
    }

    /// Drains the pipeline within `deadline`, then flushes the metrics with what time is left
    /// (at least half a second).
    pub(crate) async fn shutdown(self, deadline: Duration) -> Outcome {
        let started = Instant::now();
        let reports = self.pipeline.shutdown(deadline).await;
        let left = deadline.saturating_sub(started.elapsed()).max(Duration::from_millis(500));
        for handle in self.metrics {
            let _ = handle.shutdown_within(left).await;
        }
        Outcome { reports }
    }
}
