//! The pipeline: fan-out to per-exporter lanes, each with a bounded queue, a batcher task and
//! up to `concurrency` batch tasks that export, retry and dead-letter.

use std::collections::VecDeque;
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures_util::FutureExt as _;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, TryAcquireError};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::{ConfigError, ExporterConfig, WhenFull};
use crate::dead_letter::{self, DeadLetterWriter};
use crate::exporter::{Exporter, Failure, Health, Record};
use crate::filter::Filter;
use crate::settle::{SettleHook, Settlement};
use crate::stats::{Counters, DropCounts, DropReason, ExporterStats};

/// The most exporters one pipeline fans out to.
pub const MAX_EXPORTERS: usize = 64;

const CLOSED: usize = 1 << (usize::BITS - 1);

/// Why `submit` or `try_submit` did not take an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// The pipeline is shutting down (or shut down); the event was not taken.
    #[error("the export pipeline is shut down")]
    Closed,
    /// `try_submit` only: this exporter's queue is full under `when_full: block`; the event was
    /// not taken by any exporter (answer 503 / retry later).
    #[error("the queue of exporter `{exporter}` is full")]
    Full {
        /// The exporter whose queue is full.
        exporter: Arc<str>,
    },
}

/// Why [`PipelineBuilder::build`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// No exporter was added.
    #[error("a pipeline needs at least one exporter")]
    NoExporters,
    /// More than [`MAX_EXPORTERS`] exporters.
    #[error("a pipeline fans out to at most {MAX_EXPORTERS} exporters")]
    TooManyExporters,
    /// Two exporters share a name (names key stats, logs and dead letters).
    #[error("two exporters are named `{0}`")]
    DuplicateName(String),
    /// Two exporters share a dead-letter file.
    #[error("exporters `{0}` and `{1}` share a dead-letter file")]
    SharedDeadLetterFile(String, String),
    /// An exporter's configuration is out of range.
    #[error("exporter `{exporter}`: {error}")]
    Config {
        /// The exporter.
        exporter: String,
        /// What is wrong.
        error: ConfigError,
    },
    /// `build` was called outside a Tokio runtime.
    #[error("the pipeline must be built inside a Tokio runtime")]
    NoRuntime,
}

/// What one batch's export call did, for [`BatchObserver`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BatchOutcome<'a> {
    /// The exporter's index in build order.
    pub exporter_index: usize,
    /// The exporter's name.
    pub exporter: &'a str,
    /// 1 for a first attempt, 2 for the first retry, ...
    pub attempt: u32,
    /// Events in the call.
    pub events: usize,
    /// Events exported.
    pub exported: usize,
    /// Events that failed retryably (retried, or dead-lettered if the budget ran out).
    pub retryable: usize,
    /// Events that failed permanently (dead-lettered).
    pub permanent: usize,
    /// How long the call took.
    pub latency: Duration,
}

/// Told about every export call (e.g. to publish per-batch metrics). Keep it short; never block.
pub trait BatchObserver: Send + Sync + fmt::Debug {
    /// One export call finished.
    fn observe(&self, outcome: &BatchOutcome<'_>);
}

/// What happened to one exporter's events, returned by [`Pipeline::shutdown`].
///
/// Exact once shutdown returns:
/// `submitted == filtered + delivered + dead_lettered + dropped.total()`, where
/// `dropped.shutdown_deadline == left_behind`. One exception: a submit that was still in its
/// commit phase (no awaits, so only if its thread was descheduled there, or a settle hook
/// blocked) when the deadline passed hands over its event after the report was made; that
/// event is counted as left behind in [`Pipeline::stats`], not in this report.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// The exporter's name.
    pub exporter: String,
    /// Events offered to this exporter.
    pub submitted: u64,
    /// Events its filter declined.
    pub filtered: u64,
    /// Events that entered its queue.
    pub accepted: u64,
    /// Events delivered.
    pub delivered: u64,
    /// Events dead-lettered (including failed dead-letter writes).
    pub dead_lettered: u64,
    /// Dead letters that could not be written.
    pub dead_letter_write_failed: u64,
    /// Dead letters whose write was still running when the deadline passed (counted in
    /// `dead_lettered`): it finishes in the background, and a failure is logged with each
    /// event's id but is not in `dead_letter_write_failed`. Such an event is settled only once
    /// written, so a disk buffer keeps it until then.
    pub dead_letter_writes_unfinished: u64,
    /// Drops by reason (`shutdown_deadline` is `left_behind`).
    pub dropped: DropCounts,
    /// Events neither delivered nor dead-lettered when the deadline passed.
    pub left_behind: u64,
    /// True when the deadline cut the flush short.
    pub deadline_reached: bool,
    /// True when the exporter's own `shutdown` returned before the deadline.
    pub exporter_shutdown_completed: bool,
}

/// Builds a [`Pipeline`]: add exporters with their configuration, then [`build`](Self::build).
#[derive(Debug, Default)]
pub struct PipelineBuilder {
    exporters: Vec<(Arc<dyn Exporter>, ExporterConfig)>,
    settle_hook: Option<Arc<dyn SettleHook>>,
    observer: Option<Arc<dyn BatchObserver>>,
}

impl PipelineBuilder {
    /// Adds an exporter (fan-out: every exporter gets every event its filter accepts).
    pub fn with_exporter(mut self, exporter: Arc<dyn Exporter>, config: ExporterConfig) -> Self {
        self.exporters.push((exporter, config));
        self
    }

    /// Sets the settlement hook (the durable-buffer seam; see [`SettleHook`]).
    pub fn with_settle_hook(mut self, hook: Arc<dyn SettleHook>) -> Self {
        self.settle_hook = Some(hook);
        self
    }

    /// Sets an observer told about every export call.
    pub fn with_batch_observer(mut self, observer: Arc<dyn BatchObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Validates the configuration and starts one batcher task per exporter.
    ///
    /// # Errors
    /// [`BuildError`]: no exporters, too many, duplicate names or dead-letter files, a
    /// configuration value out of range, or no Tokio runtime.
    pub fn build(self) -> Result<Pipeline, BuildError> {
        if self.exporters.is_empty() {
            return Err(BuildError::NoExporters);
        }
        if self.exporters.len() > MAX_EXPORTERS {
            return Err(BuildError::TooManyExporters);
        }
        for (i, (exporter, config)) in self.exporters.iter().enumerate() {
            config.validate().map_err(|error| BuildError::Config {
                exporter: exporter.name().to_owned(),
                error,
            })?;
            for (other, other_config) in &self.exporters[..i] {
                if other.name() == exporter.name() {
                    return Err(BuildError::DuplicateName(exporter.name().to_owned()));
                }
                if let (Some(a), Some(b)) =
                    (&config.dead_letter.path, &other_config.dead_letter.path)
                    && files_clash(
                        a,
                        config.dead_letter.max_files,
                        b,
                        other_config.dead_letter.max_files,
                    )
                {
                    return Err(BuildError::SharedDeadLetterFile(
                        other.name().to_owned(),
                        exporter.name().to_owned(),
                    ));
                }
            }
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| BuildError::NoRuntime)?;
        let lanes: Vec<Arc<Lane>> = self
            .exporters
            .into_iter()
            .enumerate()
            .map(|(index, (exporter, config))| {
                Arc::new(Lane::new(
                    index,
                    exporter,
                    &config,
                    self.settle_hook.clone(),
                    self.observer.clone(),
                ))
            })
            .collect();
        for lane in &lanes {
            let handle = runtime.spawn(run_batcher(Arc::clone(lane)));
            *lock(&lane.batcher) = Some(handle);
        }
        Ok(Pipeline {
            inner: Arc::new(Inner {
                lanes: lanes.into_boxed_slice(),
                gate: AtomicUsize::new(0),
                gate_drained: Notify::new(),
                next_seq: AtomicU64::new(0),
            }),
        })
    }
}

/// The export pipeline. Cheap to clone (all clones share one pipeline); see the crate docs.
#[derive(Debug, Clone)]
pub struct Pipeline {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    lanes: Box<[Arc<Lane>]>,
    /// Submits in their await-free commit step (past their last await: try_submit's whole
    /// call), with [`CLOSED`] set once shutdown began.
    gate: AtomicUsize,
    gate_drained: Notify,
    next_seq: AtomicU64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Dropped without shutdown: let the batchers flush what they hold and exit.
        for lane in &self.lanes {
            lane.close_queue();
        }
    }
}

/// Decrements the submit gate when a submit's commit step ends.
struct GateGuard<'a>(&'a Inner);

impl Drop for GateGuard<'_> {
    fn drop(&mut self) {
        if self.0.gate.fetch_sub(1, Ordering::AcqRel) == CLOSED | 1 {
            self.0.gate_drained.notify_waiters();
        }
    }
}

/// Queue slots reserved on `block` lanes; given back unless the submit commits.
struct Reserved<'a> {
    lanes: &'a [Arc<Lane>],
    mask: u64,
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        for (i, lane) in self.lanes.iter().enumerate() {
            if self.mask & (1 << i) != 0 {
                lane.release_slots(1);
            }
        }
    }
}

impl Pipeline {
    /// Starts a [`PipelineBuilder`].
    pub fn builder() -> PipelineBuilder {
        PipelineBuilder::default()
    }

    /// Submits an event to every exporter whose filter accepts it. Waits while a `block`
    /// exporter's queue is full (backpressure); under a drop policy it never waits (the drop is
    /// counted). The sequence number reported to the [`SettleHook`] is assigned from a counter;
    /// use [`submit_with_seq`](Self::submit_with_seq) to supply your own.
    ///
    /// Cancel-safe: if the future is dropped before it completes, no exporter took the event.
    ///
    /// # Errors
    /// [`SubmitError::Closed`] once shutdown has begun.
    pub async fn submit(&self, record: Record) -> Result<(), SubmitError> {
        let seq = self.inner.next_seq.fetch_add(1, Ordering::Relaxed);
        self.submit_with_seq(record, seq).await
    }

    /// [`submit`](Self::submit) with a caller-supplied sequence number (e.g. a write-ahead
    /// log's record id), reported back to the [`SettleHook`].
    ///
    /// # Errors
    /// [`SubmitError::Closed`] once shutdown has begun.
    pub async fn submit_with_seq(&self, record: Record, seq: u64) -> Result<(), SubmitError> {
        let inner = &*self.inner;
        if inner.gate.load(Ordering::Acquire) & CLOSED != 0 {
            return Err(SubmitError::Closed);
        }
        let targets = inner.targets(&record);
        let mut reserved = Reserved {
            lanes: &inner.lanes,
            mask: 0,
        };
        for (i, lane) in inner.lanes.iter().enumerate() {
            if targets & (1 << i) == 0 {
                continue;
            }
            if let Some(slots) = &lane.slots {
                match slots.acquire().await {
                    Ok(permit) => permit.forget(),
                    Err(_) => return Err(SubmitError::Closed),
                }
                reserved.mask |= 1 << i;
            }
        }
        // Only now, past the last await, does the submit pass the gate that the shutdown waits
        // on: a submit parked on a full queue, whose caller may never poll it again, must not
        // hold the shutdown until its deadline (closing the queues' slots fails it when it is
        // polled). The shutdown may have begun while it waited: its reserved slots go back.
        let _gate = inner.enter()?;
        reserved.mask = 0;
        inner.commit(record, seq, targets);
        Ok(())
    }

    /// Like [`submit`](Self::submit) but never waits.
    ///
    /// # Errors
    /// [`SubmitError::Full`] when a `block` exporter's queue is full (no exporter took the
    /// event), [`SubmitError::Closed`] once shutdown has begun.
    pub fn try_submit(&self, record: Record) -> Result<(), SubmitError> {
        let seq = self.inner.next_seq.fetch_add(1, Ordering::Relaxed);
        self.try_submit_with_seq(record, seq)
    }

    /// [`try_submit`](Self::try_submit) with a caller-supplied sequence number.
    ///
    /// # Errors
    /// As [`try_submit`](Self::try_submit).
    pub fn try_submit_with_seq(&self, record: Record, seq: u64) -> Result<(), SubmitError> {
        let inner = &*self.inner;
        let _gate = inner.enter()?;
        let targets = inner.targets(&record);
        let mut reserved = Reserved {
            lanes: &inner.lanes,
            mask: 0,
        };
        for (i, lane) in inner.lanes.iter().enumerate() {
            if targets & (1 << i) == 0 {
                continue;
            }
            if let Some(slots) = &lane.slots {
                match slots.try_acquire() {
                    Ok(permit) => permit.forget(),
                    Err(TryAcquireError::NoPermits) => {
                        lane.counters.rejected.fetch_add(1, Ordering::Relaxed);
                        return Err(SubmitError::Full {
                            exporter: Arc::clone(&lane.name),
                        });
                    }
                    Err(TryAcquireError::Closed) => return Err(SubmitError::Closed),
                }
                reserved.mask |= 1 << i;
            }
        }
        reserved.mask = 0;
        inner.commit(record, seq, targets);
        Ok(())
    }

    /// A snapshot of every exporter's counters, in build order.
    pub fn stats(&self) -> Vec<ExporterStats> {
        self.inner.lanes.iter().map(|lane| lane.stats()).collect()
    }

    /// Runs every exporter's `health_check`, in build order.
    pub async fn health_checks(&self) -> Vec<(String, Health)> {
        let mut out = Vec::with_capacity(self.inner.lanes.len());
        for lane in &self.inner.lanes {
            out.push((lane.name.to_string(), lane.exporter.health_check().await));
        }
        out
    }

    /// The names of the exporters, in build order.
    pub fn exporter_names(&self) -> Vec<&str> {
        self.inner.lanes.iter().map(|lane| &*lane.name).collect()
    }

    /// Stops accepting events, flushes every queue, retries what it can until `deadline` from
    /// now, calls each exporter's `shutdown` (also bounded by the deadline) and reports, per
    /// exporter in build order, what happened to every event. Exporters shut down in parallel.
    ///
    /// Never overruns the deadline by more than scheduling delay, even when an exporter's
    /// `export` or `shutdown` never completes: at the deadline in-flight calls are abandoned
    /// (their futures dropped) and their events reported as `left_behind`. Calling it again,
    /// later or concurrently, waits for the first call to finish (by the first call's
    /// deadline, not its own) and returns its report.
    pub async fn shutdown(&self, deadline: Duration) -> Vec<ShutdownReport> {
        let now = Instant::now();
        // A deadline too far to represent is "a century", which is the same thing in practice.
        let deadline_at = now
            .checked_add(deadline)
            .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600));
        let inner = &*self.inner;
        inner.gate.fetch_or(CLOSED, Ordering::AcqRel);
        for lane in &inner.lanes {
            if let Some(slots) = &lane.slots {
                slots.close();
            }
        }
        // Submits in their (await-free) commit phase finish before the queues close.
        let _ = tokio::time::timeout_at(deadline_at, async {
            loop {
                let mut drained = pin!(inner.gate_drained.notified());
                drained.as_mut().enable();
                if inner.gate.load(Ordering::Acquire) & !CLOSED == 0 {
                    return;
                }
                drained.await;
            }
        })
        .await;
        for lane in &inner.lanes {
            lane.close_queue();
        }
        let handles: Vec<_> = inner
            .lanes
            .iter()
            .map(|lane| tokio::spawn(Arc::clone(lane).finish(deadline_at)))
            .collect();
        let mut reports = Vec::with_capacity(handles.len());
        for (handle, lane) in handles.into_iter().zip(inner.lanes.iter()) {
            match handle.await {
                Ok(report) => reports.push(report),
                Err(error) => {
                    tracing::error!(exporter = %lane.name, %error, "shutdown task failed");
                    reports.push(lane.report(true, false));
                }
            }
        }
        reports
    }
}

impl Inner {
    fn enter(&self) -> Result<GateGuard<'_>, SubmitError> {
        let before = self.gate.fetch_add(1, Ordering::AcqRel);
        let guard = GateGuard(self);
        if before & CLOSED != 0 {
            return Err(SubmitError::Closed);
        }
        Ok(guard)
    }

    fn targets(&self, record: &Record) -> u64 {
        let mut mask = 0;
        for (i, lane) in self.lanes.iter().enumerate() {
            if lane.filter.accepts(&record.event) {
                mask |= 1 << i;
            }
        }
        mask
    }

    /// Await-free: hands the record to every target lane (slots already reserved on `block`
    /// lanes) and counts the filtered ones.
    fn commit(&self, record: Record, seq: u64, targets: u64) {
        let last = if targets == 0 {
            usize::MAX
        } else {
            63 - targets.leading_zeros() as usize
        };
        let mut record = Some(record);
        for (i, lane) in self.lanes.iter().enumerate() {
            lane.counters.submitted.fetch_add(1, Ordering::Relaxed);
            if targets & (1 << i) == 0 {
                lane.counters.filtered.fetch_add(1, Ordering::Relaxed);
                lane.settle(&[seq], Settlement::Filtered);
                continue;
            }
            let rec = if i == last {
                record.take()
            } else {
                record.clone()
            };
            if let Some(rec) = rec {
                lane.push(Entry { record: rec, seq });
            }
        }
    }
}

/// Whether two exporters' dead-letter files (each `path` and its rotated `path.1` ...
/// `path.N`) meet: one file named two ways (`..`, symbolic links, hard links, a relative path
/// against an absolute one), or one exporter's file being the other's rotated name. One file
/// would mix two exporters' dead letters (their counts of bytes and files apart), and a
/// rotation by one would rename or delete the other's file.
fn files_clash(a: &Path, a_rotated: u32, b: &Path, b_rotated: u32) -> bool {
    let resolve = |p: &Path| -> PathBuf {
        if let Ok(file) = std::fs::canonicalize(p) {
            return file;
        }
        let dir = p
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        match (std::fs::canonicalize(dir), p.file_name()) {
            (Ok(dir), Some(name)) => dir.join(name),
            _ => p.to_path_buf(),
        }
    };
    let names = |p: &Path, rotated: u32| -> Vec<PathBuf> {
        let base = resolve(p);
        let mut names = vec![base.clone()];
        names.extend((1..=rotated).map(|n| {
            let mut name = base.clone().into_os_string();
            name.push(format!(".{n}"));
            PathBuf::from(name)
        }));
        names
    };
    if a == b {
        return true;
    }
    let a_names = names(a, a_rotated);
    let b_names = names(b, b_rotated);
    if b_names.iter().any(|n| a_names.contains(n)) {
        return true;
    }
    // Hard links: one existing regular file under two names.
    let files = |names: &[PathBuf]| -> Vec<(u64, u64)> {
        names.iter().filter_map(|n| file_identity(n)).collect()
    };
    let a_files = files(&a_names);
    files(&b_names).iter().any(|id| a_files.contains(id))
}

/// The device and inode of an existing regular file.
fn file_identity(path: &Path) -> Option<(u64, u64)> {
    let metadata = std::fs::metadata(path).ok()?;
    metadata
        .is_file()
        .then(|| dead_letter::identity(&metadata))
        .flatten()
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Debug)]
struct Entry {
    record: Record,
    seq: u64,
}

#[derive(Debug)]
struct QueueState {
    items: VecDeque<Entry>,
    closed: bool,
    /// Nothing reads the queue any more: the batcher has ended (or given up at the deadline).
    sealed: bool,
    /// The batcher wants waking once `items.len()` reaches this.
    wake_at: usize,
}

/// Fired at the shutdown deadline: every await in the lane's tasks gives up.
#[derive(Debug, Default)]
struct Abort {
    fired: AtomicBool,
    notify: Notify,
}

impl Abort {
    fn fire(&self) {
        self.fired.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    fn is_fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }

    async fn wait(&self) {
        loop {
            let mut notified = pin!(self.notify.notified());
            notified.as_mut().enable();
            if self.is_fired() {
                return;
            }
            notified.await;
        }
    }
}

#[derive(Debug, Clone)]
struct RetryPolicy {
    initial: Duration,
    max: Duration,
    multiplier: f64,
    max_attempts: Option<u32>,
    max_elapsed: Option<Duration>,
    max_retry_after: Duration,
}

/// One exporter's lane: queue, settings, counters.
struct Lane {
    index: usize,
    name: Arc<str>,
    exporter: Arc<dyn Exporter>,
    filter: Filter,
    when_full: WhenFull,
    capacity: usize,
    max_events: usize,
    max_bytes: usize,
    flush_interval: Duration,
    concurrency: usize,
    retry: RetryPolicy,
    queue: Mutex<QueueState>,
    /// Free queue slots, for `block` lanes only.
    slots: Option<Semaphore>,
    wake: Notify,
    in_flight: Arc<Semaphore>,
    abort: Abort,
    counters: Counters,
    /// Events the batcher holds (drained from the queue, not yet in a batch task).
    assembling: AtomicUsize,
    dead_letters: Arc<DeadLetterWriter>,
    hook: Option<Arc<dyn SettleHook>>,
    observer: Option<Arc<dyn BatchObserver>>,
    batcher: Mutex<Option<JoinHandle<()>>>,
    finished: AtomicBool,
    /// The report of the first shutdown, for any other call (concurrent or later).
    final_report: tokio::sync::watch::Sender<Option<ShutdownReport>>,
    /// Dead letters being written.
    dead_letters_writing: AtomicU64,
    /// A panicking `estimate_size` or hook has been logged (once per lane).
    panic_logged: AtomicBool,
}

impl fmt::Debug for Lane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lane")
            .field("index", &self.index)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Lane {
    fn new(
        index: usize,
        exporter: Arc<dyn Exporter>,
        config: &ExporterConfig,
        hook: Option<Arc<dyn SettleHook>>,
        observer: Option<Arc<dyn BatchObserver>>,
    ) -> Self {
        let retry = &config.retry;
        Self {
            index,
            name: Arc::from(exporter.name()),
            exporter,
            filter: Filter::new(&config.filter),
            when_full: config.queue.when_full,
            capacity: config.queue.capacity,
            max_events: config.batch.max_events,
            max_bytes: config.batch.max_bytes,
            flush_interval: Duration::from_millis(config.batch.flush_interval_ms),
            concurrency: config.concurrency,
            retry: RetryPolicy {
                initial: Duration::from_millis(retry.initial_backoff_ms),
                max: Duration::from_millis(retry.max_backoff_ms),
                multiplier: retry.multiplier,
                max_attempts: retry.max_attempts,
                max_elapsed: retry.max_elapsed_ms.map(Duration::from_millis),
                max_retry_after: Duration::from_millis(retry.max_retry_after_ms),
            },
            queue: Mutex::new(QueueState {
                items: VecDeque::new(),
                closed: false,
                sealed: false,
                wake_at: 1,
            }),
            slots: (config.queue.when_full == WhenFull::Block)
                .then(|| Semaphore::new(config.queue.capacity.min(Semaphore::MAX_PERMITS))),
            wake: Notify::new(),
            in_flight: Arc::new(Semaphore::new(config.concurrency)),
            abort: Abort::default(),
            counters: Counters::default(),
            assembling: AtomicUsize::new(0),
            dead_letters: Arc::new(DeadLetterWriter::new(&config.dead_letter)),
            hook,
            observer,
            batcher: Mutex::new(None),
            finished: AtomicBool::new(false),
            final_report: tokio::sync::watch::Sender::new(None),
            dead_letters_writing: AtomicU64::new(0),
            panic_logged: AtomicBool::new(false),
        }
    }

    /// Logs, once per lane, that user code (`what`) panicked and what the pipeline did instead.
    fn log_panic(&self, what: &str, instead: &str) {
        if !self.panic_logged.swap(true, Ordering::Relaxed) {
            tracing::error!(exporter = %self.name, "{what} panicked; {instead} (logged once per exporter)");
        }
    }

    /// Reports settlements to the hook. A panicking hook is the hook's loss: the pipeline's
    /// own bookkeeping (counts, slots, batches in flight) goes on.
    fn settle(&self, seqs: &[u64], how: Settlement) {
        if let Some(hook) = &self.hook
            && !seqs.is_empty()
        {
            let call = std::panic::catch_unwind(AssertUnwindSafe(|| {
                hook.settled(self.index, &self.name, seqs, how);
            }));
            if call.is_err() {
                tracing::error!(exporter = %self.name, events = seqs.len(), ?how, "the settle hook panicked; it missed these settlements");
            }
        }
    }

    /// The exporter's size estimate; the default one if it panics (a batcher that died here
    /// would leave the lane's queue stuck).
    fn estimate_size(&self, record: &Record) -> usize {
        std::panic::catch_unwind(AssertUnwindSafe(|| self.exporter.estimate_size(record)))
            .unwrap_or_else(|_| {
                self.log_panic("estimate_size", "batches use the default estimate");
                crate::exporter::default_size_estimate(&record.event)
            })
    }

    fn release_slots(&self, n: usize) {
        if let Some(slots) = &self.slots
            && n > 0
        {
            slots.add_permits(n);
        }
    }

    fn count_drop(&self, reason: DropReason, n: u64) {
        let total = self.counters.count_drop(reason, n);
        // Rate-limited: log when the total crosses a power of two (1, 2, 4, 8, ...).
        let before = total - n;
        if n > 0 && (before == 0 || before.ilog2() != total.ilog2()) {
            tracing::warn!(
                exporter = %self.name,
                reason = reason.as_str(),
                dropped_total = total,
                "dropped events"
            );
        }
    }

    /// Pushes an accepted entry (a `block` slot is already reserved).
    fn push(&self, entry: Entry) {
        let mut queue = lock(&self.queue);
        if queue.sealed {
            // A submit still committing when the shutdown stopped waiting for submits (its
            // deadline passed) and the batcher ended: left behind like what the queue held
            // then, and counted, never kept in a queue nobody reads. Not settled, so a disk
            // buffer keeps it for the next start.
            drop(queue);
            drop(entry);
            self.counters.accepted.fetch_add(1, Ordering::Relaxed);
            self.release_slots(1);
            self.leave_behind(1);
            return;
        }
        let mut evicted = None;
        if queue.items.len() >= self.capacity {
            match self.when_full {
                WhenFull::Block => {} // unreachable: a slot was reserved
                WhenFull::DropNewest => {
                    drop(queue);
                    let seq = entry.seq;
                    drop(entry);
                    self.count_drop(DropReason::QueueFullNewest, 1);
                    self.settle(&[seq], Settlement::Dropped(DropReason::QueueFullNewest));
                    return;
                }
                WhenFull::DropOldest => evicted = queue.items.pop_front(),
            }
        }
        queue.items.push_back(entry);
        let wake = queue.items.len() >= queue.wake_at;
        if wake {
            queue.wake_at = usize::MAX;
        }
        drop(queue);
        self.counters.accepted.fetch_add(1, Ordering::Relaxed);
        if wake {
            self.wake.notify_one();
        }
        if let Some(old) = evicted {
            self.count_drop(DropReason::QueueFullOldest, 1);
            self.settle(&[old.seq], Settlement::Dropped(DropReason::QueueFullOldest));
        }
    }

    fn close_queue(&self) {
        lock(&self.queue).closed = true;
        self.wake.notify_one();
    }

    fn leave_behind(&self, n: usize) {
        if n > 0 {
            self.count_drop(DropReason::ShutdownDeadline, n as u64);
        }
    }

    fn stats(&self) -> ExporterStats {
        let c = &self.counters;
        let queued = lock(&self.queue).items.len();
        ExporterStats {
            name: self.name.to_string(),
            submitted: c.submitted.load(Ordering::Relaxed),
            filtered: c.filtered.load(Ordering::Relaxed),
            accepted: c.accepted.load(Ordering::Relaxed),
            rejected: c.rejected.load(Ordering::Relaxed),
            exported: c.exported.load(Ordering::Relaxed),
            retried: c.retried.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            dead_lettered: c.dead_lettered.load(Ordering::Relaxed),
            dead_letter_write_failed: c.dead_letter_write_failed.load(Ordering::Relaxed),
            dropped: c.drops(),
            queue_depth: queued + self.assembling.load(Ordering::Relaxed),
            in_flight_batches: c.in_flight_batches.load(Ordering::Relaxed),
            in_flight_events: c.in_flight_events.load(Ordering::Relaxed),
            batches: c.batches.load(Ordering::Relaxed),
            export_latency: c.latency.snapshot(),
        }
    }

    fn report(&self, deadline_reached: bool, exporter_shutdown_completed: bool) -> ShutdownReport {
        let c = &self.counters;
        // Before the failure count: a write finishing between the two loads is then counted
        // twice (unfinished and failed) rather than in neither.
        let unfinished = self.dead_letters_writing.load(Ordering::Acquire);
        let dropped = c.drops();
        ShutdownReport {
            exporter: self.name.to_string(),
            submitted: c.submitted.load(Ordering::Acquire),
            filtered: c.filtered.load(Ordering::Acquire),
            accepted: c.accepted.load(Ordering::Acquire),
            delivered: c.exported.load(Ordering::Acquire),
            dead_lettered: c.dead_lettered.load(Ordering::Acquire),
            dead_letter_write_failed: c.dead_letter_write_failed.load(Ordering::Acquire),
            dead_letter_writes_unfinished: unfinished,
            dropped,
            left_behind: dropped.shutdown_deadline,
            deadline_reached,
            exporter_shutdown_completed,
        }
    }

    /// Waits for the lane to drain (or the deadline), then shuts the exporter down.
    async fn finish(self: Arc<Self>, deadline_at: Instant) -> ShutdownReport {
        if self.finished.swap(true, Ordering::AcqRel) {
            // Another shutdown, concurrent or later: the first one's report, once final.
            let mut reports = self.final_report.subscribe();
            return match reports.wait_for(Option::is_some).await {
                Ok(report) => report.clone().unwrap_or_else(|| self.report(true, false)),
                Err(_) => self.report(true, false),
            };
        }
        let batcher = lock(&self.batcher).take();
        let mut batcher = batcher;
        let drained = tokio::time::timeout_at(deadline_at, async {
            if let Some(handle) = batcher.as_mut() {
                self.batcher_ended(handle.await);
            }
            batcher = None;
            self.in_flight
                .acquire_many(self.concurrency_u32())
                .await
                .map(|p| p.forget())
        })
        .await;
        let deadline_reached = drained.is_err();
        if deadline_reached {
            self.abort.fire();
            // Every await in the lane's tasks races the abort, so these finish promptly.
            if let Some(handle) = batcher {
                self.batcher_ended(handle.await);
            }
            if let Ok(permits) = self.in_flight.acquire_many(self.concurrency_u32()).await {
                permits.forget();
            }
        }
        // A panicking `shutdown` is one that did not complete; the report is still published,
        // or a second `shutdown` would wait for it forever.
        // The call is guarded as well as its future (see `run_batch`).
        let completed =
            match std::panic::catch_unwind(AssertUnwindSafe(|| self.exporter.shutdown())) {
                Ok(future) => {
                    tokio::time::timeout_at(deadline_at, AssertUnwindSafe(future).catch_unwind())
                        .await
                        .is_ok_and(|r| r.is_ok())
                }
                Err(_) => false,
            };
        if !completed {
            tracing::warn!(exporter = %self.name, "exporter shutdown did not finish before the deadline");
        }
        let report = self.report(deadline_reached, completed);
        self.final_report.send_replace(Some(report.clone()));
        tracing::info!(
            exporter = %report.exporter,
            delivered = report.delivered,
            dead_lettered = report.dead_lettered,
            dropped = report.dropped.total(),
            left_behind = report.left_behind,
            "exporter shut down"
        );
        report
    }

    /// The batcher task ended. If it panicked (only user code could), what it held and what is
    /// queued would otherwise be in no count: left behind.
    fn batcher_ended(&self, joined: Result<(), tokio::task::JoinError>) {
        if joined.is_err() {
            tracing::error!(exporter = %self.name, "the batcher failed; what it held and what is queued is left behind");
            self.abandon(self.assembling.load(Ordering::Acquire));
        }
    }

    fn concurrency_u32(&self) -> u32 {
        u32::try_from(self.concurrency).unwrap_or(u32::MAX)
    }

    /// Abandons everything the batcher holds or the queue still has (deadline passed).
    fn abandon(&self, held: usize) {
        let queued = {
            let mut queue = lock(&self.queue);
            let n = queue.items.len();
            queue.items.clear();
            queue.sealed = true;
            n
        };
        self.release_slots(queued);
        self.assembling.store(0, Ordering::Relaxed);
        self.leave_behind(held + queued);
    }
}

/// The lane's batcher: assembles batches by count, bytes and age and hands each to a batch
/// task once one of the `concurrency` slots is free.
async fn run_batcher(lane: Arc<Lane>) {
    let max_events = lane.max_events;
    let mut carry: VecDeque<Entry> = VecDeque::new();
    let mut front_size: Option<usize> = None;
    let mut records: Vec<Record> = Vec::with_capacity(max_events);
    let mut seqs: Vec<u64> = Vec::with_capacity(max_events);
    let mut bytes = 0usize;
    let mut opened_at: Option<Instant> = None;
    loop {
        // Move drained entries into the batch while they fit.
        while records.len() < max_events {
            let Some(front) = carry.front() else { break };
            let size = *front_size.get_or_insert_with(|| lane.estimate_size(&front.record));
            if !records.is_empty() && bytes.saturating_add(size) > lane.max_bytes {
                break;
            }
            front_size = None;
            if let Some(entry) = carry.pop_front() {
                records.push(entry.record);
                seqs.push(entry.seq);
                bytes = bytes.saturating_add(size);
                opened_at.get_or_insert_with(Instant::now);
            }
        }
        lane.assembling
            .store(carry.len() + records.len(), Ordering::Relaxed);
        let full = records.len() >= max_events || !carry.is_empty();
        if !full {
            enum Next {
                Drained(usize),
                Exit,
                Flush,
                Wait(Option<Instant>),
            }
            let next = {
                let mut queue = lock(&lane.queue);
                if !queue.items.is_empty() {
                    let n = (max_events - records.len()).min(queue.items.len());
                    carry.extend(queue.items.drain(..n));
                    Next::Drained(n)
                } else if queue.closed {
                    if records.is_empty() {
                        queue.sealed = true;
                        Next::Exit
                    } else {
                        Next::Flush
                    }
                } else {
                    // `None` (never due) also when the interval is too long to represent.
                    let due = opened_at.and_then(|t| t.checked_add(lane.flush_interval));
                    if due.is_none_or(|due| due > Instant::now()) {
                        // Woken for a full batch, or at half the queue's capacity if that
                        // comes first: a queue smaller than a batch must not fill (and refuse
                        // or drop under its policy) while the batcher sleeps.
                        queue.wake_at = if records.is_empty() {
                            1
                        } else {
                            (max_events - records.len()).min(lane.capacity.div_ceil(2))
                        };
                        Next::Wait(due)
                    } else {
                        Next::Flush
                    }
                }
            };
            match next {
                Next::Drained(n) => {
                    lane.release_slots(n);
                    continue;
                }
                Next::Exit => {
                    lane.assembling.store(0, Ordering::Relaxed);
                    return;
                }
                Next::Flush => {}
                Next::Wait(due) => {
                    tokio::select! {
                        biased;
                        () = lane.abort.wait() => {
                            lane.abandon(records.len() + carry.len());
                            return;
                        }
                        () = lane.wake.notified() => continue,
                        () = sleep_until_opt(due) => {}
                    }
                }
            }
        }
        // Send the batch once a slot is free.
        let permit = tokio::select! {
            biased;
            () = lane.abort.wait() => {
                lane.abandon(records.len() + carry.len());
                return;
            }
            permit = Arc::clone(&lane.in_flight).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => {
                    lane.abandon(records.len() + carry.len());
                    return;
                }
            },
        };
        let batch = std::mem::replace(&mut records, Vec::with_capacity(max_events));
        let batch_seqs = std::mem::replace(&mut seqs, Vec::with_capacity(max_events));
        bytes = 0;
        opened_at = None;
        let c = &lane.counters;
        c.batches.fetch_add(1, Ordering::Relaxed);
        c.in_flight_batches.fetch_add(1, Ordering::Relaxed);
        c.in_flight_events.fetch_add(batch.len(), Ordering::Relaxed);
        lane.assembling.store(carry.len(), Ordering::Relaxed);
        tokio::spawn(run_batch(Arc::clone(&lane), batch, batch_seqs, permit));
    }
}

async fn sleep_until_opt(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

/// A dead-lettered event with why.
struct Dead {
    record: Record,
    seq: u64,
    reason: Arc<str>,
    retryable: bool,
}

/// Exports one batch, retrying its retryable failures, until every event is delivered,
/// dead-lettered, or left behind at the deadline.
async fn run_batch(
    lane: Arc<Lane>,
    mut records: Vec<Record>,
    mut seqs: Vec<u64>,
    permit: OwnedSemaphorePermit,
) {
    // The batch's events not yet settled (delivered or dead-lettered).
    let mut in_flight = records.len();
    let first_attempt = Instant::now();
    let mut attempts: u32 = 0;
    let mut ceiling = lane.retry.initial;
    let c = &lane.counters;
    loop {
        attempts += 1;
        let n = records.len();
        let started = Instant::now();
        // Both the call and its future are guarded: a hand-written `export` (not
        // `async fn`) may panic before it returns a future.
        let call = async {
            match std::panic::catch_unwind(AssertUnwindSafe(|| lane.exporter.export(&records))) {
                Ok(future) => AssertUnwindSafe(future).catch_unwind().await,
                Err(panic) => Err(panic),
            }
        };
        let result = tokio::select! {
            biased;
            () = lane.abort.wait() => {
                lane.leave_behind(n);
                break;
            }
            result = call => result,
        };
        let latency = started.elapsed();
        c.latency.record(latency);
        let outcomes = match result {
            Ok(result) => result.into_outcomes(),
            Err(_) => {
                tracing::error!(exporter = %lane.name, "exporter panicked in export; retrying the batch");
                vec![Some(Failure::retryable("the exporter panicked")); n]
            }
        };
        // Fast path: everything delivered.
        if outcomes.len() >= n && outcomes[..n].iter().all(Option::is_none) {
            c.exported.fetch_add(n as u64, Ordering::Relaxed);
            lane.settle(&seqs, Settlement::Delivered);
            lane.observe(attempts, n, n, 0, 0, latency);
            tracing::debug!(exporter = %lane.name, events = n, attempt = attempts, ?latency, "batch exported");
            break;
        }
        let mut retry_records = Vec::new();
        let mut retry_seqs = Vec::new();
        let mut delivered_seqs = Vec::new();
        let mut dead: Vec<Dead> = Vec::new();
        let mut hint: Option<Duration> = None;
        let mut last_retry_reason: Option<Arc<str>> = None;
        let short: Option<Arc<str>> = (outcomes.len() < n).then(|| {
            Arc::from(format!(
                "the exporter reported {} outcomes for {n} events",
                outcomes.len()
            ))
        });
        let mut outcomes = outcomes.into_iter();
        for (record, seq) in records.drain(..).zip(seqs.drain(..)) {
            match outcomes.next() {
                Some(None) => delivered_seqs.push(seq),
                Some(Some(Failure::Permanent { reason })) => {
                    dead.push(Dead {
                        record,
                        seq,
                        reason,
                        retryable: false,
                    });
                }
                Some(Some(Failure::Retryable {
                    reason,
                    retry_after,
                })) => {
                    // A zero hint (`Retry-After: 0`, a date already past, a skewed clock) is
                    // no hint: honoured, it would spend the whole retry budget in round trips.
                    if let Some(after) = retry_after.filter(|after| !after.is_zero()) {
                        hint = Some(hint.map_or(after, |h| h.max(after)));
                    }
                    last_retry_reason = Some(reason);
                    retry_records.push(record);
                    retry_seqs.push(seq);
                }
                None => {
                    last_retry_reason = short.clone();
                    retry_records.push(record);
                    retry_seqs.push(seq);
                }
            }
        }
        let delivered = delivered_seqs.len();
        c.exported.fetch_add(delivered as u64, Ordering::Relaxed);
        // Settled events leave `in_flight_events` as they settle, not when the batch task ends
        // (after a retry's wait, minutes later): the stats' identity holds meanwhile.
        c.in_flight_events.fetch_sub(delivered, Ordering::Relaxed);
        in_flight -= delivered;
        c.failed
            .fetch_add((n - delivered) as u64, Ordering::Relaxed);
        lane.settle(&delivered_seqs, Settlement::Delivered);
        lane.observe(
            attempts,
            n,
            delivered,
            retry_records.len(),
            dead.len(),
            latency,
        );
        tracing::debug!(
            exporter = %lane.name,
            events = n,
            exported = delivered,
            retryable = retry_records.len(),
            permanent = dead.len(),
            attempt = attempts,
            ?latency,
            "batch partly failed"
        );
        let mut delay = Duration::ZERO;
        if !retry_records.is_empty() {
            delay = match hint {
                Some(after) => after.min(lane.retry.max_retry_after),
                None => full_jitter(ceiling),
            };
            ceiling = Duration::try_from_secs_f64(ceiling.as_secs_f64() * lane.retry.multiplier)
                .unwrap_or(lane.retry.max)
                .min(lane.retry.max);
            let out_of_attempts = lane.retry.max_attempts.is_some_and(|max| attempts >= max);
            let out_of_time = lane
                .retry
                .max_elapsed
                .is_some_and(|budget| first_attempt.elapsed().saturating_add(delay) > budget);
            if out_of_attempts || out_of_time {
                let why = if out_of_attempts { "attempts" } else { "time" };
                let last = last_retry_reason.as_deref().unwrap_or("retryable failure");
                let reason: Arc<str> = Arc::from(format!(
                    "{last} (retry budget exhausted: {why}, {attempts} attempts)"
                ));
                for (record, seq) in retry_records.drain(..).zip(retry_seqs.drain(..)) {
                    dead.push(Dead {
                        record,
                        seq,
                        reason: Arc::clone(&reason),
                        retryable: true,
                    });
                }
            }
        }
        // Dead letters are counted as such when their write starts (which may take until the
        // deadline on a slow disk): they leave `in_flight_events` then too.
        c.in_flight_events.fetch_sub(dead.len(), Ordering::Relaxed);
        in_flight -= dead.len();
        if !dead.is_empty() && !lane.dead_letter(dead, attempts).await {
            // The deadline passed while writing; the dead letters are counted, the rest stay.
            lane.leave_behind(retry_records.len());
            break;
        }
        if retry_records.is_empty() {
            break;
        }
        c.retried
            .fetch_add(retry_records.len() as u64, Ordering::Relaxed);
        records = retry_records;
        seqs = retry_seqs;
        tokio::select! {
            biased;
            () = lane.abort.wait() => {
                lane.leave_behind(records.len());
                break;
            }
            () = tokio::time::sleep(delay) => {}
        }
    }
    c.in_flight_events.fetch_sub(in_flight, Ordering::Relaxed);
    c.in_flight_batches.fetch_sub(1, Ordering::Relaxed);
    drop(permit);
}

impl Lane {
    fn observe(
        &self,
        attempt: u32,
        events: usize,
        exported: usize,
        retryable: usize,
        permanent: usize,
        latency: Duration,
    ) {
        if let Some(observer) = &self.observer {
            let outcome = BatchOutcome {
                exporter_index: self.index,
                exporter: &self.name,
                attempt,
                events,
                exported,
                retryable,
                permanent,
                latency,
            };
            if std::panic::catch_unwind(AssertUnwindSafe(|| observer.observe(&outcome))).is_err() {
                self.log_panic("the batch observer", "the batch goes on");
            }
        }
    }

    /// Counts, writes (off the runtime) and settles dead letters. Returns false when the
    /// deadline passed before the write finished (it completes in the background).
    async fn dead_letter(self: &Arc<Self>, dead: Vec<Dead>, attempts: u32) -> bool {
        let n = dead.len();
        self.counters
            .dead_lettered
            .fetch_add(n as u64, Ordering::Relaxed);
        tracing::warn!(
            exporter = %self.name,
            events = n,
            attempts,
            error = %dead[0].reason,
            retryable = dead[0].retryable,
            "dead-lettering events"
        );
        if self.dead_letters.path().is_none() {
            for d in &dead {
                tracing::warn!(
                    exporter = %self.name,
                    event_id = %d.record.event.event_id,
                    error = %d.reason,
                    "dead letter (no dead-letter file configured)"
                );
            }
            let seqs: Vec<u64> = dead.iter().map(|d| d.seq).collect();
            self.settle(&seqs, Settlement::DeadLettered);
            return true;
        }
        let lane = Arc::clone(self);
        self.dead_letters_writing
            .fetch_add(n as u64, Ordering::AcqRel);
        /// Takes the batch off `dead_letters_writing` however the write ends.
        struct Writing(Arc<Lane>, u64);
        impl Drop for Writing {
            fn drop(&mut self) {
                self.0
                    .dead_letters_writing
                    .fetch_sub(self.1, Ordering::AcqRel);
            }
        }
        let writing = Writing(Arc::clone(self), n as u64);
        let write = tokio::task::spawn_blocking(move || {
            let _writing = writing;
            let failed_at = dead_letter::now_rfc3339();
            let written = std::panic::catch_unwind(AssertUnwindSafe(|| {
                let lines: Vec<Vec<u8>> = dead
                    .iter()
                    .map(|d| {
                        dead_letter::format_line(
                            &lane.name,
                            &failed_at,
                            attempts,
                            &d.reason,
                            d.retryable,
                            &d.record.event,
                        )
                    })
                    .collect();
                lane.dead_letters.write_lines(&lines)
            }));
            // A panic here (an event's `Serialize`, say) is a failed write of the whole batch.
            let failed = written.unwrap_or_else(|_| {
                (0..dead.len())
                    .map(|i| (i, std::io::Error::other("the dead-letter writer panicked")))
                    .collect()
            });
            lane.counters
                .dead_letter_write_failed
                .fetch_add(failed.len() as u64, Ordering::Relaxed);
            let mut written = vec![true; dead.len()];
            for (i, error) in failed {
                written[i] = false;
                tracing::error!(
                    exporter = %lane.name,
                    path = ?lane.dead_letters.path(),
                    event_id = %dead[i].record.event.event_id,
                    dead_letter_error = %dead[i].reason,
                    %error,
                    "could not write a dead letter; the event is counted as dead-lettered and dead_letter_write_failed, and is not settled (a disk buffer keeps it and replays it at the next start)"
                );
            }
            // A dead letter written nowhere is not settled: a write-ahead log keeps the event
            // (and a follow checkpoint stays before its line) rather than drop it.
            let seqs: Vec<u64> = dead
                .iter()
                .zip(&written)
                .filter_map(|(d, &ok)| ok.then_some(d.seq))
                .collect();
            lane.settle(&seqs, Settlement::DeadLettered);
        });
        tokio::select! {
            biased;
            result = write => {
                if let Err(error) = result {
                    tracing::error!(exporter = %self.name, %error, "dead-letter writer task failed");
                }
                true
            }
            () = self.abort.wait() => false,
        }
    }
}

/// A uniformly random delay in `[0, ceiling]` (full jitter).
fn full_jitter(ceiling: Duration) -> Duration {
    let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
    if nanos == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos(random_u64() % nanos.saturating_add(1))
}

/// splitmix64 over a global counter seeded from the clock: cheap, lock-free, good enough for
/// jitter (not for anything secret).
fn random_u64() -> u64 {
    static STATE: AtomicU64 = AtomicU64::new(0);
    static SEEDED: AtomicBool = AtomicBool::new(false);
    if !SEEDED.swap(true, Ordering::Relaxed) {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x5eed, |d| d.as_nanos() as u64);
        STATE.fetch_add(seed, Ordering::Relaxed);
    }
    let mut z = STATE
        .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
        .wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A panic while writing dead letters (an event's `Serialize`, say) fails the whole
    /// batch's write: every event counts as dead-lettered and `dead_letter_write_failed`, and
    /// none is settled (a disk buffer keeps them for the next start).
    #[tokio::test]
    async fn a_dead_letter_writer_panic_fails_every_line_and_settles_none() {
        #[derive(Debug)]
        struct Rejecting;
        #[async_trait::async_trait]
        impl Exporter for Rejecting {
            fn name(&self) -> &str {
                "rejecting"
            }
            async fn export(&self, batch: &[Record]) -> crate::ExportResult {
                crate::ExportResult::failed(batch.len(), Failure::permanent("HTTP 400"))
            }
        }
        #[derive(Debug, Default)]
        struct Settled(Mutex<Vec<(u64, Settlement)>>);
        impl SettleHook for Settled {
            fn settled(&self, _exporter: usize, _name: &str, seqs: &[u64], how: Settlement) {
                lock(&self.0).extend(seqs.iter().map(|&s| (s, how)));
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let dlq = dir.path().join("dlq.jsonl");
        let settled = Arc::new(Settled::default());
        let pipeline = Pipeline::builder()
            .with_exporter(
                Arc::new(Rejecting),
                ExporterConfig::default()
                    .with_flush_interval(Duration::from_millis(10))
                    .with_dead_letter_path(&dlq),
            )
            .with_settle_hook(Arc::clone(&settled) as _)
            .build()
            .unwrap();
        pipeline.inner.lanes[0].dead_letters.panic_on_write();
        for i in 0..3 {
            let event = clawdstrike_schema::SecurityEvent::builder(
                clawdstrike_schema::EventType::ForbiddenPath,
            )
            .agent_id("agent-1")
            .session_id(format!("sess-{i}"))
            .action("file_access")
            .denied("forbidden_path", clawdstrike_schema::Severity::High, "no")
            .resource(clawdstrike_schema::ResourceType::File, "/etc/shadow")
            .build()
            .unwrap();
            pipeline.submit(Record::new(event)).await.unwrap();
        }
        let report = pipeline.shutdown(Duration::from_secs(10)).await.remove(0);
        assert_eq!(report.dead_lettered, 3, "{report:?}");
        assert_eq!(report.dead_letter_write_failed, 3, "{report:?}");
        assert_eq!(*lock(&settled.0), [], "settled although not written");
        assert!(!dlq.exists());
    }

    #[test]
    fn full_jitter_stays_within_the_ceiling() {
        let ceiling = Duration::from_millis(10);
        let mut below_half = false;
        let mut above_half = false;
        for _ in 0..1000 {
            let d = full_jitter(ceiling);
            assert!(d <= ceiling);
            below_half |= d < ceiling / 2;
            above_half |= d > ceiling / 2;
        }
        assert!(
            below_half && above_half,
            "jitter should spread over [0, ceiling]"
        );
        assert_eq!(full_jitter(Duration::ZERO), Duration::ZERO);
    }
}
