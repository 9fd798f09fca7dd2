//! A scripted in-memory exporter for tests (feature `testing`).
//!
//! ```
//! # use std::time::Duration;
//! # use clawdstrike_export::{Failure, testing::{ScriptedExporter, Step}};
//! let exporter = ScriptedExporter::new("fake")
//!     // First call: everything fails retryably, with a hint.
//!     .with_script([Step::FailAll(Failure::Retryable {
//!         reason: "HTTP 429".into(),
//!         retry_after: Some(Duration::from_secs(2)),
//!     })])
//!     // Every event whose id ends in `0` fails permanently the first time it is seen.
//!     .with_per_event(|record, seen| {
//!         (seen == 0 && record.event.event_id.as_u128() % 16 == 0)
//!             .then(|| Failure::permanent("bad event"))
//!     });
//! // Later calls succeed (the default step), and `exporter.exported_ids()` lists what arrived.
//! # let _ = exporter;
//! ```

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use clawdstrike_schema::Uuid;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::exporter::{ExportResult, Exporter, Failure, Health, Record};

/// What one `export` call does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Every event exported.
    Succeed,
    /// Every event fails this way.
    FailAll(Failure),
    /// Per-position outcomes (`None` = exported); positions past the end are exported
    /// (a partial batch).
    Outcomes(Vec<Option<Failure>>),
    /// Reports only the first `n` outcomes (all exported), like a buggy exporter; the
    /// framework must treat the rest as retryable failures.
    Short(usize),
    /// Waits, then does the inner step (a slow call).
    Delay(Duration, Box<Step>),
    /// Waits until [`ScriptedExporter::release`], then does the inner step.
    WaitForRelease(Box<Step>),
    /// Never completes (a stuck destination).
    HangForever,
}

type PerEvent = dyn Fn(&Record, u32) -> Option<Failure> + Send + Sync;

#[derive(Debug, Default)]
struct State {
    script: VecDeque<Step>,
    exported: Vec<Record>,
    batches: Vec<Vec<Uuid>>,
    call_times: Vec<Instant>,
    seen: HashMap<Uuid, u32>,
}

/// An in-memory [`Exporter`] driven by a script, recording everything it exported.
///
/// Each call takes the next scripted [`Step`] (then the default step, [`Step::Succeed`]
/// unless set). An optional per-event rule then fails individual events that the step
/// exported. Events are recorded as exported only when the call returns, so an abandoned call
/// records nothing, exactly like an undelivered request.
pub struct ScriptedExporter {
    name: String,
    default_step: Step,
    per_event: Option<Arc<PerEvent>>,
    size_estimate: Option<usize>,
    health: Health,
    state: Mutex<State>,
    calls: AtomicUsize,
    exported_count: AtomicUsize,
    progress: Notify,
    released: AtomicBool,
    release: Notify,
    shutdown_calls: AtomicUsize,
}

impl fmt::Debug for ScriptedExporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScriptedExporter")
            .field("name", &self.name)
            .field("calls", &self.calls())
            .field("exported", &self.exported_count())
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ScriptedExporter {
    /// An exporter that exports everything, until scripted otherwise.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            default_step: Step::Succeed,
            per_event: None,
            size_estimate: None,
            health: Health::Healthy,
            state: Mutex::new(State::default()),
            calls: AtomicUsize::new(0),
            exported_count: AtomicUsize::new(0),
            progress: Notify::new(),
            released: AtomicBool::new(false),
            release: Notify::new(),
            shutdown_calls: AtomicUsize::new(0),
        }
    }

    /// The step for calls after the script runs out (default [`Step::Succeed`]).
    pub fn with_default(mut self, step: Step) -> Self {
        self.default_step = step;
        self
    }

    /// Appends steps for the next calls, in order.
    pub fn with_script(self, steps: impl IntoIterator<Item = Step>) -> Self {
        lock(&self.state).script.extend(steps);
        self
    }

    /// Appends a step while the exporter is in use.
    pub fn push_step(&self, step: Step) {
        lock(&self.state).script.push_back(step);
    }

    /// A per-event rule, applied to events the call's step exported: `rule(record, seen)`
    /// where `seen` is how many earlier calls carried this event. `Some(failure)` fails it.
    pub fn with_per_event(
        mut self,
        rule: impl Fn(&Record, u32) -> Option<Failure> + Send + Sync + 'static,
    ) -> Self {
        self.per_event = Some(Arc::new(rule));
        self
    }

    /// A fixed `estimate_size` per event (default: the trait's default estimate).
    pub fn with_size_estimate(mut self, bytes: usize) -> Self {
        self.size_estimate = Some(bytes);
        self
    }

    /// What `health_check` answers (default [`Health::Healthy`]).
    pub fn with_health(mut self, health: Health) -> Self {
        self.health = health;
        self
    }

    /// Lets calls waiting in [`Step::WaitForRelease`] (now and later) proceed.
    pub fn release(&self) {
        self.released.store(true, Ordering::SeqCst);
        self.release.notify_waiters();
    }

    /// Makes later [`Step::WaitForRelease`] calls wait again.
    pub fn hold(&self) {
        self.released.store(false, Ordering::SeqCst);
    }

    /// Number of `export` calls started.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// Number of events exported so far.
    pub fn exported_count(&self) -> usize {
        self.exported_count.load(Ordering::SeqCst)
    }

    /// Every exported record, in the order calls returned.
    pub fn exported(&self) -> Vec<Record> {
        lock(&self.state).exported.clone()
    }

    /// The ids of every exported event (an id twice means a duplicate delivery).
    pub fn exported_ids(&self) -> Vec<Uuid> {
        lock(&self.state)
            .exported
            .iter()
            .map(|r| r.event.event_id)
            .collect()
    }

    /// The event ids of every call's batch, in call order.
    pub fn batches(&self) -> Vec<Vec<Uuid>> {
        lock(&self.state).batches.clone()
    }

    /// When each call started (Tokio time, so paused-clock tests see virtual instants).
    pub fn call_times(&self) -> Vec<Instant> {
        lock(&self.state).call_times.clone()
    }

    /// How many times `shutdown` was called.
    pub fn shutdown_calls(&self) -> usize {
        self.shutdown_calls.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` events were exported.
    pub async fn wait_for_exported(&self, n: usize) {
        self.wait_until(|| self.exported_count() >= n).await;
    }

    /// Waits until at least `n` calls started.
    pub async fn wait_for_calls(&self, n: usize) {
        self.wait_until(|| self.calls() >= n).await;
    }

    async fn wait_until(&self, done: impl Fn() -> bool) {
        loop {
            let mut notified = std::pin::pin!(self.progress.notified());
            notified.as_mut().enable();
            if done() {
                return;
            }
            notified.await;
        }
    }

    async fn wait_released(&self) {
        loop {
            let mut notified = std::pin::pin!(self.release.notified());
            notified.as_mut().enable();
            if self.released.load(Ordering::SeqCst) {
                return;
            }
            notified.await;
        }
    }
}

#[async_trait]
impl Exporter for ScriptedExporter {
    fn name(&self) -> &str {
        &self.name
    }

    fn estimate_size(&self, record: &Record) -> usize {
        self.size_estimate
            .unwrap_or_else(|| crate::default_size_estimate(&record.event))
    }

    async fn export(&self, batch: &[Record]) -> ExportResult {
        let (mut step, seen) = {
            let mut state = lock(&self.state);
            let step = state
                .script
                .pop_front()
                .unwrap_or_else(|| self.default_step.clone());
            state
                .batches
                .push(batch.iter().map(|r| r.event.event_id).collect());
            state.call_times.push(Instant::now());
            let seen: Vec<u32> = batch
                .iter()
                .map(|r| {
                    let count = state.seen.entry(r.event.event_id).or_insert(0);
                    *count += 1;
                    *count - 1
                })
                .collect();
            (step, seen)
        };
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.progress.notify_waiters();
        let n = batch.len();
        let mut outcomes = loop {
            match step {
                Step::Succeed => break vec![None; n],
                Step::FailAll(failure) => break vec![Some(failure); n],
                Step::Outcomes(mut outcomes) => {
                    outcomes.resize(n, None);
                    break outcomes;
                }
                Step::Short(k) => break vec![None; k.min(n)],
                Step::Delay(delay, next) => {
                    tokio::time::sleep(delay).await;
                    step = *next;
                }
                Step::WaitForRelease(next) => {
                    self.wait_released().await;
                    step = *next;
                }
                Step::HangForever => std::future::pending::<()>().await,
            }
        };
        if let Some(rule) = &self.per_event {
            for ((outcome, record), seen) in outcomes.iter_mut().zip(batch).zip(&seen) {
                if outcome.is_none() {
                    *outcome = rule(record, *seen);
                }
            }
        }
        {
            let mut state = lock(&self.state);
            let exported = outcomes
                .iter()
                .zip(batch)
                .filter(|(o, _)| o.is_none())
                .map(|(_, r)| r.clone());
            let before = state.exported.len();
            state.exported.extend(exported);
            let added = state.exported.len() - before;
            self.exported_count.fetch_add(added, Ordering::SeqCst);
        }
        self.progress.notify_waiters();
        ExportResult::from_outcomes(outcomes)
    }

    async fn health_check(&self) -> Health {
        self.health.clone()
    }

    async fn shutdown(&self) {
        self.shutdown_calls.fetch_add(1, Ordering::SeqCst);
    }
}
