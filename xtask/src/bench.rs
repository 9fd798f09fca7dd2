//! `cargo xtask bench`: the end-to-end benchmark, from `Pipeline::submit` to `202` from the fake
//! intake on loopback, against the serialise-and-compress limit measured in the same run.
//!
//! ```text
//! cargo xtask bench [--events N] [--repeat K] [--latency-rate R] [--latency-seconds S] [--stall-events M]
//!                    [--only none|gzip1|gzip6|zstd1|zstd3|disk]... [--throughput-only]
//! ```
//!
//! A debug build re-runs itself as `cargo run --release -p xtask -- bench ...` (set
//! `XTASK_BENCH_DEBUG=1` to measure the debug build instead). Writes
//! `target/bench/report.json` and `target/bench/throughput.svg`.
//!
//! Method:
//! - Events: the 42 fixtures of `shared/fixtures/events.ndjson`, cycled, each with a fresh
//!   `event_id`. For throughput they are built before the clock starts (the run measures
//!   `submit` to `202`); the latency and memory runs build them as they submit.
//! - Allocator: mimalloc, the forwarder's (`clawdstrike-dd`), so the figures are the product's.
//! - The fake intake runs in the same process on its own Tokio runtime (threads `intake-*`,
//!   `keep_items(false)`, its table of event ids sized for the run up front, since it shares
//!   the cores with what is measured); the pipeline on another (threads `pipeline-*`, 2
//!   workers). CPU per thread comes from `/proc/self/task/*/stat`, so the pipeline's CPU
//!   excludes the intake's.
//! - Runs: each codec is measured `--repeat` times (5), each run with its own limit; the best
//!   pipeline run and the best limit are compared (other work on the machine only slows runs
//!   down), and every run's figures are printed and kept in the report. Five, not three: on a
//!   shared 2-core host the pipeline, which needs both cores, is slowed far more often than
//!   the one-thread limit (the same binary's single runs of `none` ranged 63-99% of their
//!   limit, while the limit moved by a few per cent), so three runs often held no undisturbed
//!   pipeline run at all. The runs go round
//!   robin (first run of every codec, then the second...), so that a slow stretch of a shared
//!   host costs each codec one run rather than all the runs of one codec. Each run's figures
//!   go to stderr as it ends, with its CPU per million events (pipeline and intake) and how
//!   busy the cores were: a slow run that kept the cores as busy but spent more CPU on the
//!   same work was slowed by the machine (another tenant's use of the caches and memory), not
//!   by the pipeline waiting. The table (stdout) follows the last run.
//! - Throughput: one producer task submits N events (Datadog exporter, `resolved.pipeline`
//!   defaults); the clock stops when the intake has accepted all N. MB/s counts the
//!   uncompressed JSON bodies the intake decoded.
//! - Disk buffer: the zstd 1 run again through `DurablePipeline` (default disk settings,
//!   fsync every second, log in `target/bench/wal`, removed afterwards): the cost of the WAL.
//!   It takes its turn in the round robin (`--repeat` runs, the best reported, every run in
//!   the report); it has no limit of its own.
//! - Limit: one thread formats (`LogFormatter::write_item`, via `encode::pack`) and compresses
//!   (`encode::finish`) the very records the pipeline then gets (same memory, so the same cache
//!   behaviour), in batches of 1,000 with the same codec and level.
//! - For reference (not a goal): the same limit on two threads at once, each with half the
//!   records, started together and timed until both are done. It shows what serialisation
//!   alone gets out of both cores when both are busy.
//! - Latency: a fixed rate for a few seconds; an exporter wrapper stamps each event when the
//!   Datadog exporter's `export` returns it as delivered (that is, right after the intake's
//!   `202`); latency = that instant minus the event's submit instant.
//! - Peak RSS: a fresh child process (`bench --probe rss`) runs only the producer and the
//!   pipeline (default configuration, zstd 1) against a fake intake in the parent, so the
//!   intake's own memory (its per-event-id counts) is not charged to the pipeline.
//! - Stalled intake: every logs request stalls; a fresh child process (`bench --probe stall`)
//!   submits M events to a `drop_newest` pipeline; its RSS growth is compared with the bound
//!   the pipeline documents, `(capacity + (1 + concurrency) * max_events)` events, times the
//!   in-memory size of an event (measured first, on a fresh heap), plus the request bodies in
//!   flight.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use clawdstrike_datadog::config::{DatadogConfig, ResolvedConfig};
use clawdstrike_datadog::encode::{Codec, Compression, finish, pack};
use clawdstrike_datadog::exporter::DatadogExporter;
use clawdstrike_datadog::format::LogFormatter;
use clawdstrike_export::{
    DiskBufferConfig, DurablePipeline, ExportResult, Exporter, Health, Pipeline, Record, WhenFull,
};
use clawdstrike_fakeintake::{Endpoint, FakeIntake, FaultAction, RandomFaults};
use clawdstrike_keys::{KeyHolder, SecretString};
use clawdstrike_schema::{NdjsonReader, NdjsonRecord, SecurityEvent, Uuid};
use serde_json::json;

const KEY: &str = "benchmarkapikey0000000000000000a";
const ID_PREFIX: u128 = 0x0194_0000_0000_7000_8000_0000_0000_0000;

#[derive(Debug, Clone)]
struct Options {
    events: u64,
    /// Throughput runs per codec (the best counts).
    repeat: u64,
    latency_rate: u64,
    latency_seconds: u64,
    stall_events: u64,
    /// Only these codecs (labels without spaces: `zstd1`), for profiling.
    only: Vec<String>,
    /// Stop after the throughput table (for profiling): no latency, memory or report.
    throughput_only: bool,
    /// A measurement run in a fresh child process (`rss` or `stall`), so that its RSS is its own.
    probe: Option<String>,
    /// For the `stall` probe: the parent's measured RSS per event held.
    per_event: Option<f64>,
    /// For probes: the parent's fake intake.
    intake_url: Option<String>,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        events: 500_000,
        repeat: 5,
        latency_rate: 20_000,
        latency_seconds: 5,
        stall_events: 200_000,
        only: Vec::new(),
        throughput_only: false,
        probe: None,
        per_event: None,
        intake_url: None,
    };
    let mut it = args.iter();
    fn number(flag: &str, v: Option<&String>) -> Result<u64, String> {
        v.and_then(|v| v.replace('_', "").parse().ok())
            .ok_or_else(|| format!("{flag} needs a number"))
    }
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--events" => o.events = number(flag, it.next())?.max(1_000),
            "--repeat" => o.repeat = number(flag, it.next())?.max(1),
            "--latency-rate" => o.latency_rate = number(flag, it.next())?.max(1),
            "--latency-seconds" => o.latency_seconds = number(flag, it.next())?.max(1),
            "--stall-events" => o.stall_events = number(flag, it.next())?,
            "--only" => o.only.push(
                it.next()
                    .ok_or("--only needs a codec (none, gzip1, gzip6, zstd1, zstd3)")?
                    .clone(),
            ),
            "--throughput-only" => o.throughput_only = true,
            "--per-event-bytes" => o.per_event = Some(number(flag, it.next())? as f64),
            "--intake-url" => {
                o.intake_url = Some(it.next().ok_or("--intake-url needs a URL")?.clone())
            }
            "--probe" => o.probe = Some(it.next().ok_or("--probe needs rss or stall")?.clone()),
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown option `{other}`")),
        }
    }
    Ok(o)
}

const USAGE: &str = "usage: cargo xtask bench [--events N] [--repeat K] [--latency-rate EVENTS_PER_S] [--latency-seconds S] [--stall-events N] [--only CODEC]... [--throughput-only]";

/// Runs the benchmark (re-running itself in release when built in debug).
pub(crate) fn run(args: &[String]) -> ExitCode {
    if cfg!(debug_assertions) && std::env::var_os("XTASK_BENCH_DEBUG").is_none() {
        eprintln!("bench: re-running in release: cargo run --release -p xtask -- bench");
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(crate::project_root())
            .args(["run", "--release", "--quiet", "-p", "xtask", "--", "bench"])
            .args(args)
            .status();
        return match status {
            Ok(s) if s.success() => ExitCode::SUCCESS,
            Ok(_) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("bench: cannot run cargo: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let options = match parse(args) {
        Ok(o) => o,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("bench: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match bench(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e}");
            ExitCode::FAILURE
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn shared_dir() -> PathBuf {
    std::env::var_os("CLAWDSTRIKE_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::project_root().join("../shared"))
}

fn fixtures() -> Result<Vec<SecurityEvent>, BoxError> {
    let path = shared_dir().join("fixtures/events.ndjson");
    let file = std::fs::File::open(&path)
        .map_err(|e| format!("{}: {e} (set CLAWDSTRIKE_SHARED)", path.display()))?;
    let mut out = Vec::new();
    for r in NdjsonReader::new(std::io::BufReader::new(file)) {
        match r? {
            NdjsonRecord::Event(e) => out.push(e.event),
            NdjsonRecord::Rejected(bad) => {
                return Err(format!("fixture rejected: {}", bad.error).into());
            }
        }
    }
    if out.is_empty() {
        return Err("no fixtures".into());
    }
    Ok(out)
}

fn event(base: &[SecurityEvent], i: u64) -> SecurityEvent {
    let mut e = base[(i % base.len() as u64) as usize].clone();
    e.event_id = Uuid::from_u128(ID_PREFIX | u128::from(i));
    e
}

fn index_of(event: &SecurityEvent) -> usize {
    (event.event_id.as_u128() & 0xffff_ffff_ffff) as usize
}

/// `/proc` helpers: CPU seconds of the process and of threads by name prefix, RSS.
mod proc {
    fn ticks(stat: &str) -> u64 {
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let fields: Vec<&str> = after.split_whitespace().collect();
        let f = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        f(11) + f(12)
    }

    fn hz() -> f64 {
        100.0
    }

    pub(super) fn process_cpu() -> f64 {
        ticks(&std::fs::read_to_string("/proc/self/stat").unwrap_or_default()) as f64 / hz()
    }

    /// CPU seconds of live threads whose name starts with `prefix`.
    pub(super) fn threads_cpu(prefix: &str) -> f64 {
        let mut total = 0;
        if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
            for entry in dir.flatten() {
                let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
                let name = stat
                    .split_once('(')
                    .and_then(|(_, r)| r.rsplit_once(')'))
                    .map_or("", |(n, _)| n);
                if name.starts_with(prefix) {
                    total += ticks(&stat);
                }
            }
        }
        total as f64 / hz()
    }

    /// A `/proc/self/status` value in bytes (`VmRSS`, `VmHWM`).
    pub(super) fn status_bytes(key: &str) -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024)
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn resolved(intake: &FakeIntake, compression: Compression) -> Result<ResolvedConfig, BoxError> {
    resolved_for(&intake.base_url(), compression)
}

fn resolved_for(url: &str, compression: Compression) -> Result<ResolvedConfig, BoxError> {
    let yaml = format!(
        "site: datadoghq.eu\nlogs_url: {url}\napi_url: {url}\nlogs: {{ hostname: bench-host, service: clawdstrike, tags: [team:bench] }}"
    );
    let mut config = DatadogConfig::from_yaml(&yaml, &|_| None)?;
    config.compression = compression;
    Ok(config.resolve(&|_| None)?)
}

fn runtime(name: &'static str, workers: usize) -> Result<tokio::runtime::Runtime, BoxError> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name(name)
        .enable_all()
        .build()?)
}

/// One codec's measurements.
#[derive(Debug, Clone)]
struct CodecResult {
    label: String,
    limit_eps: f64,
    limit_mbps: f64,
    /// For reference, not a goal: the same limit on two threads (each half the records), the
    /// most serialisation alone gets out of both cores when both are busy.
    limit2_eps: f64,
    ratio_compressed: f64,
    create_us: f64,
    pipeline_eps: f64,
    pipeline_mbps: f64,
    pipeline_cpu_per_million: f64,
    intake_cpu_per_million: f64,
    process_cpu_per_million: f64,
    /// Every run's pipeline and limit events/s (the fields above are from the best run).
    pipeline_runs: Vec<f64>,
    limit_runs: Vec<f64>,
    limit2_runs: Vec<f64>,
    /// Every run's pipeline and intake CPU seconds per million events: a slow run that cost
    /// more CPU for the same work was slowed by the machine, not by idle cores.
    cpu_runs: Vec<(f64, f64)>,
}

impl CodecResult {
    /// The best of several runs: the fastest pipeline run (with its CPU figures) and the
    /// fastest limit. Taking each side's best discounts interference from other work on the
    /// machine, which only ever slows a run down; the limit's best is the stricter yardstick.
    fn best_of(runs: Vec<CodecResult>) -> Option<CodecResult> {
        let pipeline_runs: Vec<f64> = runs.iter().map(|r| r.pipeline_eps).collect();
        let limit_runs: Vec<f64> = runs.iter().map(|r| r.limit_eps).collect();
        let limit2_runs: Vec<f64> = runs.iter().map(|r| r.limit2_eps).collect();
        let cpu_runs: Vec<(f64, f64)> = runs
            .iter()
            .map(|r| (r.pipeline_cpu_per_million, r.intake_cpu_per_million))
            .collect();
        let best_limit = runs
            .iter()
            .max_by(|a, b| a.limit_eps.total_cmp(&b.limit_eps))?
            .clone();
        let mut best = runs
            .into_iter()
            .max_by(|a, b| a.pipeline_eps.total_cmp(&b.pipeline_eps))?;
        best.limit_eps = best_limit.limit_eps;
        best.limit_mbps = best_limit.limit_mbps;
        best.pipeline_runs = pipeline_runs;
        best.limit_runs = limit_runs;
        best.limit2_eps = limit2_runs.iter().copied().fold(0.0, f64::max);
        best.limit2_runs = limit2_runs;
        best.cpu_runs = cpu_runs;
        Some(best)
    }

    /// Each run's pipeline over the limit measured in that same run (for the spread; the goal
    /// compares the bests).
    fn run_ratios(&self) -> Vec<f64> {
        self.pipeline_runs
            .iter()
            .zip(&self.limit_runs)
            .map(|(p, l)| p / l)
            .collect()
    }
}

/// `min-max` of some runs, in thousands.
fn spread(runs: &[f64]) -> String {
    let min = runs.iter().copied().fold(f64::INFINITY, f64::min);
    let max = runs.iter().copied().fold(0.0, f64::max);
    format!("{:.0}-{:.0}k", min / 1e3, max / 1e3)
}

/// The same limit on two threads at once, each formatting and compressing half the records:
/// both start together (a barrier) and the clock runs until both are done.
fn limit_two_threads(records: &[Record], resolved: &ResolvedConfig) -> f64 {
    let (first, second) = records.split_at(records.len() / 2);
    let start = std::sync::Barrier::new(2);
    let elapsed = std::thread::scope(|scope| {
        let other = scope.spawn(|| {
            start.wait();
            limit(first, resolved);
        });
        start.wait();
        let started = Instant::now();
        limit(second, resolved);
        let _ = other.join();
        started.elapsed()
    });
    records.len() as f64 / elapsed.as_secs_f64()
}

/// The serialise-and-compress limit: one thread, batches of 1,000, same formatter and codec.
/// Returns events/s, MB/s of JSON and the compression ratio.
fn limit(records: &[Record], resolved: &ResolvedConfig) -> (f64, f64, f64) {
    let formatter = LogFormatter::new(resolved.format.clone());
    let limits = resolved.request.limits();
    let mut busy = Duration::ZERO;
    let mut raw = 0u64;
    let mut compressed = 0u64;
    for batch in records.chunks(1_000) {
        let indices: Vec<usize> = (0..batch.len()).collect();
        let started = Instant::now();
        for payload in pack(&formatter, batch, &indices, limits) {
            raw += payload.json.len() as u64;
            if let Ok(request) = finish(payload, &resolved.compression) {
                compressed += request.body.len() as u64;
            }
        }
        busy += started.elapsed();
    }
    let secs = busy.as_secs_f64();
    (
        records.len() as f64 / secs,
        raw as f64 / secs / 1e6,
        raw as f64 / compressed.max(1) as f64,
    )
}

/// A fake intake for a run of `events` events: nothing kept but counts, its id table sized
/// for them up front (so that it never grows during the run).
fn start_intake(rt: &tokio::runtime::Runtime, events: u64) -> Result<FakeIntake, BoxError> {
    Ok(rt.block_on(
        FakeIntake::builder()
            .with_api_key(SecretString::from(KEY))
            .with_expected_event_ids(usize::try_from(events).unwrap_or(usize::MAX))
            .with_keep_items(false)
            .with_max_kept_requests(0)
            .start(),
    )?)
}

fn exporter(resolved: &ResolvedConfig, name: &str) -> Result<DatadogExporter, BoxError> {
    Ok(DatadogExporter::from_config_with_key(
        name,
        resolved,
        KeyHolder::from_static(SecretString::from(KEY)),
    )?)
}

fn throughput(
    base: &Arc<Vec<SecurityEvent>>,
    label: &str,
    compression: Compression,
    n: u64,
    intake_rt: &tokio::runtime::Runtime,
    rt: &tokio::runtime::Runtime,
    wal: Option<&std::path::Path>,
) -> Result<CodecResult, BoxError> {
    let intake = start_intake(intake_rt, n)?;
    let resolved = resolved(&intake, compression)?;
    // The events exist before the clock starts: the run measures `submit` to `202`, not the
    // producer building events. The limit formats and compresses these very records first.
    let created = Instant::now();
    let records: Vec<Record> = (0..n).map(|i| Record::new(event(base, i))).collect();
    let create_us = created.elapsed().as_secs_f64() * 1e6 / n as f64;
    // The disk-buffer run is compared with the plain zstd 1 run, not with a limit of its own.
    // (Skipping the limit's pass over the records warms nothing the pipeline would reuse: the
    // records are far larger than the caches.)
    let (limit_eps, limit_mbps, ratio) = match wal {
        None => limit(&records, &resolved),
        Some(_) => (0.0, 0.0, 0.0),
    };
    let limit2_eps = match wal {
        None => limit_two_threads(&records, &resolved),
        Some(_) => 0.0,
    };
    let _in_runtime = rt.enter();
    let exporter = exporter(&resolved, "bench")?;
    let config = resolved.pipeline.clone();
    let cpu0 = (proc::process_cpu(), proc::threads_cpu("intake"));
    let started = Instant::now();
    let elapsed = rt.block_on(async {
        let builder = Pipeline::builder().with_exporter(Arc::new(exporter), config);
        let (pipeline, durable) = match wal {
            None => (builder.build()?, None),
            Some(dir) => {
                let (durable, _) =
                    DurablePipeline::open(&DiskBufferConfig::new(dir), builder).await?;
                (durable.pipeline().clone(), Some(durable))
            }
        };
        let producer = {
            let pipeline = pipeline.clone();
            let durable = durable.clone();
            tokio::spawn(async move {
                for record in records {
                    match &durable {
                        Some(durable) => durable.submit(record).await?,
                        None => pipeline.submit(record).await?,
                    }
                }
                Ok::<_, BoxError>(())
            })
        };
        producer.await??;
        intake.wait_for_items(n, Duration::from_secs(600)).await?;
        let elapsed = started.elapsed();
        match durable {
            Some(durable) => durable.shutdown(Duration::from_secs(10)).await,
            None => pipeline.shutdown(Duration::from_secs(10)).await,
        };
        Ok::<_, BoxError>(elapsed)
    })?;
    let cpu1 = (proc::process_cpu(), proc::threads_cpu("intake"));
    let stats = intake.stats();
    if stats.unique_event_ids != n {
        return Err(format!(
            "{label}: the intake has {} distinct events, expected {n}",
            stats.unique_event_ids
        )
        .into());
    }
    intake_rt.block_on(intake.shutdown());
    let secs = elapsed.as_secs_f64();
    let per_million = |cpu: f64| cpu / n as f64 * 1e6;
    let process = cpu1.0 - cpu0.0;
    let intake_cpu = cpu1.1 - cpu0.1;
    Ok(CodecResult {
        label: label.to_owned(),
        limit_eps,
        limit_mbps,
        limit2_eps,
        ratio_compressed: ratio,
        create_us,
        pipeline_eps: n as f64 / secs,
        pipeline_mbps: stats.log_bytes_uncompressed as f64 / secs / 1e6,
        pipeline_cpu_per_million: per_million(process - intake_cpu),
        intake_cpu_per_million: per_million(intake_cpu),
        process_cpu_per_million: per_million(process),
        pipeline_runs: Vec::new(),
        limit_runs: Vec::new(),
        limit2_runs: Vec::new(),
        cpu_runs: Vec::new(),
    })
}

/// Stamps delivery instants per event (right after the intake's 202).
#[derive(Debug)]
struct Timed {
    inner: DatadogExporter,
    t0: Instant,
    submitted: Arc<Vec<AtomicU64>>,
    latencies: Mutex<Vec<u64>>,
}

#[async_trait]
impl Exporter for Timed {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn estimate_size(&self, record: &Record) -> usize {
        self.inner.estimate_size(record)
    }
    async fn export(&self, batch: &[Record]) -> ExportResult {
        let result = self.inner.export(batch).await;
        let now = self.t0.elapsed().as_nanos() as u64;
        let mut latencies = self.latencies.lock().unwrap_or_else(|e| e.into_inner());
        for (record, outcome) in batch.iter().zip(result.outcomes()) {
            if outcome.is_none()
                && let Some(at) = self.submitted.get(index_of(&record.event))
            {
                latencies.push(now.saturating_sub(at.load(Ordering::Relaxed)));
            }
        }
        result
    }
    async fn health_check(&self) -> Health {
        self.inner.health_check().await
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1e6
}

/// p50 and p99 submit-to-202 latency in ms at `rate` events/s, and how many events.
fn latency(
    base: &Arc<Vec<SecurityEvent>>,
    o: &Options,
    intake_rt: &tokio::runtime::Runtime,
    rt: &tokio::runtime::Runtime,
) -> Result<(f64, f64, f64, usize), BoxError> {
    let n = o.latency_rate * o.latency_seconds;
    let intake = start_intake(intake_rt, n)?;
    let resolved = resolved(&intake, Compression::default())?;
    let _in_runtime = rt.enter();
    let timed = Arc::new(Timed {
        inner: exporter(&resolved, "bench-latency")?,
        t0: Instant::now(),
        submitted: Arc::new((0..n).map(|_| AtomicU64::new(0)).collect()),
        latencies: Mutex::new(Vec::with_capacity(n as usize)),
    });
    let config = resolved.pipeline.clone();
    let base2 = Arc::clone(base);
    let rate = o.latency_rate;
    rt.block_on(async {
        let pipeline = Pipeline::builder()
            .with_exporter(Arc::clone(&timed) as Arc<dyn Exporter>, config)
            .build()?;
        let producer = {
            let pipeline = pipeline.clone();
            let timed = Arc::clone(&timed);
            tokio::spawn(async move {
                // Ticks of 1 ms, each submitting the events due by then.
                let mut tick = tokio::time::interval(Duration::from_millis(1));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                let start = Instant::now();
                let mut i = 0;
                while i < n {
                    tick.tick().await;
                    let due = ((start.elapsed().as_secs_f64() * rate as f64) as u64).min(n);
                    while i < due {
                        let e = event(&base2, i);
                        timed.submitted[i as usize]
                            .store(timed.t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
                        pipeline.submit(Record::new(e)).await?;
                        i += 1;
                    }
                }
                Ok::<_, clawdstrike_export::SubmitError>(())
            })
        };
        producer.await??;
        intake.wait_for_items(n, Duration::from_secs(120)).await?;
        pipeline.shutdown(Duration::from_secs(10)).await;
        Ok::<_, BoxError>(())
    })?;
    intake_rt.block_on(intake.shutdown());
    let mut l = timed
        .latencies
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    l.sort_unstable();
    let mean = l.iter().map(|&x| x as f64).sum::<f64>() / l.len().max(1) as f64 / 1e6;
    Ok((percentile(&l, 0.50), percentile(&l, 0.99), mean, l.len()))
}

/// RSS bytes per event held in memory (`Arc<SecurityEvent>` of the fixtures), measured.
fn bytes_per_event(base: &[SecurityEvent]) -> f64 {
    let n = 50_000u64;
    let before = proc::status_bytes("VmRSS");
    let held: Vec<Record> = (0..n).map(|i| Record::new(event(base, i))).collect();
    let after = proc::status_bytes("VmRSS");
    let per = after.saturating_sub(before) as f64 / n as f64;
    drop(held);
    per
}

struct Stall {
    rss_before: u64,
    rss_during: u64,
    cap: u64,
    bound_events: u64,
    dropped: u64,
    queued: usize,
}

/// Runs `bench --probe <kind>` in a fresh process and parses its `PROBE {json}` line.
fn probe(
    kind: &str,
    o: &Options,
    per_event: f64,
    url: &str,
) -> Result<serde_json::Value, BoxError> {
    let output = Command::new(std::env::current_exe()?)
        .args(["bench", "--probe", kind, "--intake-url", url])
        .args(["--per-event-bytes", &format!("{per_event:.0}")])
        .args(["--events", &o.events.to_string()])
        .args(["--stall-events", &o.stall_events.to_string()])
        .env("XTASK_BENCH_DEBUG", "1")
        .output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("PROBE "))
        .ok_or_else(|| {
            format!(
                "probe {kind} failed: {}\n{stdout}\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            )
        })?;
    Ok(serde_json::from_str(line)?)
}

fn bench(o: &Options) -> Result<(), BoxError> {
    let base = Arc::new(fixtures()?);
    // On a fresh heap (and never in a probe, whose RSS it would distort): the RSS an event
    // held in memory costs.
    let per_event = match o.probe {
        Some(_) => o.per_event.unwrap_or(2_000.0),
        None => bytes_per_event(&base),
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let intake_rt = runtime("intake", 2)?;
    let rt = runtime("pipeline", 2)?;
    match (o.probe.as_deref(), o.intake_url.as_deref()) {
        (Some(kind @ ("rss" | "stall")), Some(url)) => {
            let stall = kind == "stall";
            let _in_runtime = rt.enter();
            let mut resolved = resolved_for(url, Compression::default())?;
            if stall {
                resolved.pipeline = resolved.pipeline.with_when_full(WhenFull::DropNewest);
            }
            let config = resolved.pipeline.clone();
            let bound_events =
                (config.queue.capacity + (1 + config.concurrency) * config.batch.max_events) as u64;
            // Request bodies in flight: `concurrency` uncompressed arrays and compressed copies.
            let bodies = (config.concurrency * config.batch.max_events) as f64 * 1_200.0 * 2.0;
            let cap = (bound_events as f64 * per_event + bodies) as u64;
            let exp = exporter(&resolved, "bench-probe")?;
            let n = if stall { o.stall_events } else { o.events };
            let rss_before = proc::status_bytes("VmRSS");
            let base2 = Arc::clone(&base);
            let started = Instant::now();
            let (rss_after, delivered, dropped, held) = rt.block_on(async {
                let pipeline = Pipeline::builder()
                    .with_exporter(Arc::new(exp), config)
                    .build()?;
                let producer = {
                    let pipeline = pipeline.clone();
                    tokio::spawn(async move {
                        for i in 0..n {
                            pipeline.submit(Record::new(event(&base2, i))).await?;
                        }
                        Ok::<_, clawdstrike_export::SubmitError>(())
                    })
                };
                producer.await??;
                let rss = proc::status_bytes("VmRSS");
                let stats = pipeline.stats().remove(0);
                let deadline = Duration::from_secs(if stall { 1 } else { 120 });
                let report = pipeline.shutdown(deadline).await.remove(0);
                Ok::<_, BoxError>((
                    rss,
                    report.delivered,
                    stats.dropped.total(),
                    stats.queue_depth + stats.in_flight_events,
                ))
            })?;
            let secs = started.elapsed().as_secs_f64();
            println!(
                "PROBE {}",
                json!({
                    "baseline_rss_bytes": rss_before, "peak_rss_bytes": proc::status_bytes("VmHWM"),
                    "rss_before_bytes": rss_before, "rss_during_bytes": rss_after,
                    "delivered": delivered, "events_per_s": n as f64 / secs,
                    "cap_bytes": cap, "bound_events": bound_events,
                    "dropped": dropped, "held": held, "bytes_per_event": per_event,
                })
            );
            return Ok(());
        }
        (Some(other), _) => {
            return Err(format!("unknown probe `{other}` (or no --intake-url)").into());
        }
        (None, _) => {}
    }
    let json_bytes: Vec<usize> = base.iter().map(|e| e.to_json().len()).collect();
    let avg_event_json = json_bytes.iter().sum::<usize>() as f64 / json_bytes.len() as f64;
    println!(
        "clawdstrike bench: {} events per run, best of {} runs per codec, {} fixtures (avg {avg_event_json:.0} B of event JSON), {cores} cores",
        o.events,
        o.repeat,
        base.len()
    );
    let codecs = [
        ("none", Compression::new(Codec::None, 0)),
        ("gzip 1", Compression::new(Codec::Gzip, 1)),
        ("gzip 6", Compression::new(Codec::Gzip, 6)),
        ("zstd 1", Compression::new(Codec::Zstd, 1)),
        ("zstd 3", Compression::new(Codec::Zstd, 3)),
    ];
    let codecs: Vec<_> = codecs
        .into_iter()
        .filter(|(label, _)| {
            o.only.is_empty() || o.only.iter().any(|c| *c == label.replace(' ', ""))
        })
        .collect();
    // Round robin: run k of every codec, then run k + 1 of every codec. A slow stretch of the
    // machine (other tenants of the host) then costs every codec one run, instead of all the
    // runs of whichever codec it fell on.
    // Each run is reported on stderr as it ends (the table waits for the best of them). The
    // disk-buffer run (zstd 1 through `DurablePipeline`, default disk settings: fsync every
    // second) takes its turn after the codecs.
    let with_disk = o.only.is_empty() || o.only.iter().any(|c| c == "disk");
    let wal_dir = crate::project_root().join("target/bench/wal");
    let mut runs: Vec<Vec<CodecResult>> = vec![Vec::new(); codecs.len()];
    let mut disk_runs = Vec::new();
    for k in 1..=o.repeat {
        for ((label, compression), runs) in codecs.iter().zip(&mut runs) {
            let run = throughput(&base, label, *compression, o.events, &intake_rt, &rt, None)?;
            // Where a slow run's time went: more CPU per event, or cores left idle.
            eprintln!(
                "  run {k}/{}: {label:<6} pipeline {:>4.0}k events/s, limit {:>4.0}k ({:.0}%); \
                 cpu s/M {:.2} + intake {:.2}, cores busy {:.0}%",
                o.repeat,
                run.pipeline_eps / 1e3,
                run.limit_eps / 1e3,
                100.0 * run.pipeline_eps / run.limit_eps,
                run.pipeline_cpu_per_million,
                run.intake_cpu_per_million,
                100.0 * run.process_cpu_per_million * run.pipeline_eps / 1e6 / cores as f64
            );
            runs.push(run);
        }
        if with_disk {
            let _ = std::fs::remove_dir_all(&wal_dir);
            let run = throughput(
                &base,
                "zstd 1 + disk buffer",
                Compression::default(),
                o.events,
                &intake_rt,
                &rt,
                Some(&wal_dir),
            )?;
            let _ = std::fs::remove_dir_all(&wal_dir);
            eprintln!(
                "  run {k}/{}: zstd 1 + disk buffer pipeline {:>4.0}k events/s",
                o.repeat,
                run.pipeline_eps / 1e3
            );
            disk_runs.push(run);
        }
    }
    println!(
        "\n{:<8} {:>12} {:>9} {:>12} {:>9} {:>7} {:>8} {:>11} {:>11} {:>13}   runs: pipeline / limit",
        "codec",
        "pipeline/s",
        "MB/s",
        "limit/s",
        "MB/s",
        "ratio",
        "compr.",
        "cpu s/M",
        "intake s/M",
        "2-thr limit/s",
    );
    let mut results = Vec::new();
    for runs in runs {
        let r = CodecResult::best_of(runs).ok_or("no runs")?;
        println!(
            "{:<8} {:>12.0} {:>9.1} {:>12.0} {:>9.1} {:>6.0}% {:>7.1}x {:>11.2} {:>11.2} {:>13.0}   {} / {}",
            r.label,
            r.pipeline_eps,
            r.pipeline_mbps,
            r.limit_eps,
            r.limit_mbps,
            100.0 * r.pipeline_eps / r.limit_eps,
            r.ratio_compressed,
            r.pipeline_cpu_per_million,
            r.intake_cpu_per_million,
            r.limit2_eps,
            spread(&r.pipeline_runs),
            spread(&r.limit_runs),
        );
        results.push(r);
    }
    // The best disk-buffer run, under the table (it has no limit of its own).
    let disk = CodecResult::best_of(disk_runs);
    if let Some(r) = &disk {
        println!(
            "{:<8} {:>12.0} {:>9.1} {:>12} {:>9} {:>7} {:>8} {:>11.2} {:>11.2} {:>13}   {} (zstd 1 + disk buffer, fsync every 1 s)",
            "zstd1+wal",
            r.pipeline_eps,
            r.pipeline_mbps,
            "",
            "",
            "",
            "",
            r.pipeline_cpu_per_million,
            r.intake_cpu_per_million,
            "",
            spread(&r.pipeline_runs),
        );
    }
    if let Some(r) = results.first() {
        println!(
            "(cpu s/M = the pipeline's CPU per million events, from submit (events are built before the clock starts; building one, a fixture clone with a fresh id, costs {:.2} us); intake s/M = the in-process fake intake's; 2-thr limit/s = the same limit on both cores at once, each thread half the records: for reference, not a goal)",
            r.create_us
        );
    }
    if o.throughput_only {
        println!("(--throughput-only: no latency, memory, goals or report)");
        return Ok(());
    }
    let (p50, p99, mean, samples) = latency(&base, o, &intake_rt, &rt)?;
    println!(
        "\nlatency submit -> 202 at {} events/s (zstd 1, default config, {samples} events): p50 {p50:.1} ms, p99 {p99:.1} ms, mean {mean:.1} ms",
        o.latency_rate
    );
    // Peak RSS: the pipeline alone in a fresh process, against a fake intake in this one; as
    // many runs as for throughput, and the highest counts (a peak is a worst case).
    let mut peaks = Vec::new();
    let mut rss_baseline = 0;
    for _ in 0..o.repeat {
        let intake = start_intake(&intake_rt, o.events)?;
        let rss = probe("rss", o, per_event, &intake.base_url())?;
        let received = intake.stats().unique_event_ids;
        intake_rt.block_on(intake.shutdown());
        if received != o.events || rss["delivered"].as_u64() != Some(o.events) {
            return Err(format!("rss probe: {received} events received of {}", o.events).into());
        }
        peaks.push(rss["peak_rss_bytes"].as_u64().unwrap_or(0));
        rss_baseline = rss_baseline.max(rss["baseline_rss_bytes"].as_u64().unwrap_or(0));
    }
    let hwm = peaks.iter().copied().max().unwrap_or(0);
    println!(
        "peak RSS (VmHWM of a fresh process running only the producer and the pipeline, default configuration, zstd 1, {} events; the fake intake in another process): {:.1} MiB, the highest of {} runs ({} MiB; baseline before a run {:.1} MiB)",
        o.events,
        mib(hwm),
        peaks.len(),
        peaks
            .iter()
            .map(|p| format!("{:.1}", mib(*p)))
            .collect::<Vec<_>>()
            .join(", "),
        mib(rss_baseline)
    );
    let intake = start_intake(&intake_rt, o.stall_events)?;
    intake.set_random_faults(Some(
        RandomFaults::new(7)
            .on(Endpoint::Logs)
            .with(1.0, FaultAction::Stall),
    ));
    let st = probe("stall", o, per_event, &intake.base_url())?;
    intake.set_random_faults(None);
    intake.release_stalled();
    intake_rt.block_on(intake.shutdown());
    let stall = Stall {
        rss_before: st["rss_before_bytes"].as_u64().unwrap_or(0),
        rss_during: st["rss_during_bytes"].as_u64().unwrap_or(0),
        cap: st["cap_bytes"].as_u64().unwrap_or(0),
        bound_events: st["bound_events"].as_u64().unwrap_or(0),
        dropped: st["dropped"].as_u64().unwrap_or(0),
        queued: st["held"].as_u64().unwrap_or(0) as usize,
    };
    let growth = stall.rss_during.saturating_sub(stall.rss_before);
    println!(
        "stalled intake (fresh process): {} events submitted (drop_newest), {} held, {} dropped; RSS {:.1} -> {:.1} MiB (+{:.1} MiB); cap {:.1} MiB = {} events x {per_event:.0} B + request bodies",
        o.stall_events,
        stall.queued,
        stall.dropped,
        mib(stall.rss_before),
        mib(stall.rss_during),
        mib(growth),
        mib(stall.cap),
        stall.bound_events,
    );
    let zstd1 = results.iter().find(|r| r.label == "zstd 1");
    let goals = json!({
        "throughput_85pct_of_limit": results.iter().map(|r| json!({
            "codec": r.label, "ratio": r.pipeline_eps / r.limit_eps, "met": r.pipeline_eps >= 0.85 * r.limit_eps,
            "ratio_within_each_run": r.run_ratios(),
        })).collect::<Vec<_>>(),
        "zstd1_150k_eps": zstd1.map(|r| json!({"events_per_s": r.pipeline_eps, "met": r.pipeline_eps >= 150_000.0})),
        "peak_rss_under_64mib": json!({"peak_rss_bytes": hwm, "met": hwm < 64 * 1024 * 1024}),
        "stalled_memory_under_cap": json!({"growth_bytes": growth, "cap_bytes": stall.cap, "met": growth <= stall.cap}),
    });
    println!("\ngoals:");
    for r in &results {
        let ratio = r.pipeline_eps / r.limit_eps;
        let each: Vec<String> = r
            .run_ratios()
            .iter()
            .map(|x| format!("{:.0}%", 100.0 * x))
            .collect();
        println!(
            "  {:<7} pipeline/limit {:>5.1}% (goal >= 85%): {}   (within each run: {})",
            r.label,
            100.0 * ratio,
            if ratio >= 0.85 { "met" } else { "MISSED" },
            each.join(", ")
        );
    }
    if let Some(r) = zstd1 {
        println!(
            "  zstd 1  {:.0} events/s (goal >= 150,000): {}",
            r.pipeline_eps,
            if r.pipeline_eps >= 150_000.0 {
                "met"
            } else {
                "MISSED"
            }
        );
    }
    println!(
        "  peak RSS {:.1} MiB (goal < 64 MiB): {}",
        mib(hwm),
        if hwm < 64 * 1024 * 1024 {
            "met"
        } else {
            "MISSED"
        }
    );
    println!(
        "  stalled-intake growth {:.1} MiB (cap {:.1} MiB): {}",
        mib(growth),
        mib(stall.cap),
        if growth <= stall.cap { "met" } else { "MISSED" }
    );
    let report = json!({
        "events_per_codec": o.events,
        "fixtures": base.len(),
        "avg_event_json_bytes": avg_event_json,
        "cores": cores,
        "codecs": results.iter().map(|r| json!({
            "codec": r.label,
            "pipeline_events_per_s": r.pipeline_eps,
            "pipeline_mb_per_s": r.pipeline_mbps,
            "limit_events_per_s": r.limit_eps,
            "limit_mb_per_s": r.limit_mbps,
            "pipeline_over_limit": r.pipeline_eps / r.limit_eps,
            "compression_ratio": r.ratio_compressed,
            "producer_event_creation_us": r.create_us,
            "pipeline_cpu_s_per_million": r.pipeline_cpu_per_million,
            "intake_cpu_s_per_million": r.intake_cpu_per_million,
            "process_cpu_s_per_million": r.process_cpu_per_million,
            "pipeline_events_per_s_runs": r.pipeline_runs,
            "limit_events_per_s_runs": r.limit_runs,
            "limit_two_threads_events_per_s": r.limit2_eps,
            "limit_two_threads_events_per_s_runs": r.limit2_runs,
            "pipeline_cpu_s_per_million_runs": r.cpu_runs.iter().map(|c| c.0).collect::<Vec<_>>(),
            "intake_cpu_s_per_million_runs": r.cpu_runs.iter().map(|c| c.1).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "latency": { "rate_events_per_s": o.latency_rate, "events": samples, "p50_ms": p50, "p99_ms": p99, "mean_ms": mean, "codec": "zstd 1" },
        "peak_rss_bytes": hwm,
        "peak_rss_bytes_runs": peaks,
        "stalled": {
            "events_submitted": o.stall_events, "held": stall.queued, "dropped": stall.dropped,
            "rss_before_bytes": stall.rss_before, "rss_during_bytes": stall.rss_during,
            "growth_bytes": growth, "cap_bytes": stall.cap, "bound_events": stall.bound_events,
            "bytes_per_event_in_memory": per_event,
        },
        "goals": goals,
        "disk_buffer": disk.as_ref().map(|r| json!({
            "codec": "zstd 1", "fsync": "interval_ms: 1000",
            "pipeline_events_per_s": r.pipeline_eps,
            "pipeline_mb_per_s": r.pipeline_mbps,
            "pipeline_cpu_s_per_million": r.pipeline_cpu_per_million,
            "pipeline_events_per_s_runs": r.pipeline_runs,
        })),
    });
    let dir = crate::project_root().join("target/bench");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("report.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    std::fs::write(dir.join("throughput.svg"), svg(&results))?;
    println!(
        "\nwrote {} and {}",
        dir.join("report.json").display(),
        dir.join("throughput.svg").display()
    );
    Ok(())
}

/// A grouped bar chart: events/s by codec, pipeline next to its limit.
fn svg(results: &[CodecResult]) -> String {
    let (w, h) = (820.0, 440.0);
    let (left, right, top, bottom) = (80.0, 20.0, 50.0, 60.0);
    let plot_w = w - left - right;
    let plot_h = h - top - bottom;
    let max = results
        .iter()
        .map(|r| r.limit_eps.max(r.pipeline_eps))
        .fold(1.0, f64::max)
        * 1.1;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">
<rect width="{w}" height="{h}" fill="white"/>
<text x="{}" y="24" text-anchor="middle" font-size="16">Throughput by codec: pipeline (submit to 202) vs serialise+compress limit (1 thread)</text>
"#,
        w / 2.0
    );
    for k in 0..=5 {
        let v = max * f64::from(k) / 5.0;
        let y = top + plot_h - plot_h * f64::from(k) / 5.0;
        let _ = writeln!(
            s,
            r##"<line x1="{left}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{:.0}k</text>"##,
            w - right,
            left - 6.0,
            y + 4.0,
            v / 1000.0
        );
    }
    let group = plot_w / results.len().max(1) as f64;
    let bar = group * 0.35;
    for (i, r) in results.iter().enumerate() {
        let x0 = left + group * i as f64 + group * 0.12;
        for (j, (value, color)) in [(r.pipeline_eps, "#3b6fb6"), (r.limit_eps, "#a0a0a0")]
            .into_iter()
            .enumerate()
        {
            let bh = plot_h * value / max;
            let x = x0 + j as f64 * (bar + 4.0);
            let y = top + plot_h - bh;
            let _ = writeln!(
                s,
                r#"<rect x="{x:.1}" y="{y:.1}" width="{bar:.1}" height="{bh:.1}" fill="{color}"/><text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="10">{:.0}k</text>"#,
                x + bar / 2.0,
                y - 4.0,
                value / 1000.0
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{} ({:.0}%)</text>"#,
            x0 + bar + 2.0,
            top + plot_h + 20.0,
            r.label,
            100.0 * r.pipeline_eps / r.limit_eps
        );
    }
    let _ = write!(
        s,
        r##"<rect x="{left}" y="{:.1}" width="12" height="12" fill="#3b6fb6"/><text x="{:.1}" y="{:.1}">pipeline, events/s</text>
<rect x="{:.1}" y="{:.1}" width="12" height="12" fill="#a0a0a0"/><text x="{:.1}" y="{:.1}">limit, events/s</text>
<line x1="{left}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="black"/>
</svg>
"##,
        h - 22.0,
        left + 18.0,
        h - 12.0,
        left + 170.0,
        h - 22.0,
        left + 188.0,
        h - 12.0,
        top + plot_h,
        w - right,
        top + plot_h
    );
    s
}
