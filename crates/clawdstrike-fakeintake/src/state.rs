//! The state shared by the server tasks and the [`crate::FakeIntake`] handle.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Instant;

use bytes::Bytes;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::{RateLimit, Settings};
use crate::faults::FaultState;
use crate::id_counts::IdCounts;
use crate::model::{KeyStatus, LogItem, MetricSeries, RequestRecord, Stats};
use crate::objects::Objects;
use crate::signals::Signals;

/// Locks a mutex, recovering from poisoning (a panicking test must not wedge the server).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The valid keys. No `Debug` derive: it prints counts only.
#[derive(Default)]
pub(crate) struct Keys {
    pub(crate) api: Vec<SecretString>,
    pub(crate) app: Vec<SecretString>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("api", &self.api.len())
            .field("app", &self.app.len())
            .finish()
    }
}

fn check(keys: &[SecretString], given: Option<&str>) -> KeyStatus {
    match given {
        None => KeyStatus::Missing,
        Some(g) if keys.iter().any(|k| k.expose_secret() == g) => KeyStatus::Valid,
        Some(_) => KeyStatus::Invalid,
    }
}

impl Keys {
    pub(crate) fn check_api(&self, given: Option<&str>) -> KeyStatus {
        check(&self.api, given)
    }
    pub(crate) fn check_app(&self, given: Option<&str>) -> KeyStatus {
        check(&self.app, given)
    }
}

pub(crate) fn remove_key(keys: &mut Vec<SecretString>, key: &str) -> bool {
    let before = keys.len();
    keys.retain(|k| k.expose_secret() != key);
    keys.len() != before
}

/// A kept log item: a slice of a decoded body shared by all items of its request.
#[derive(Debug, Clone)]
pub(crate) struct KeptItem {
    pub(crate) body: Bytes,
    pub(crate) start: usize,
    pub(crate) len: usize,
    pub(crate) truncated: bool,
    pub(crate) request_seq: u64,
}

impl KeptItem {
    /// The id attribute's value, read without parsing the whole item into a tree.
    pub(crate) fn raw_id(&self, attr: &str) -> Option<String> {
        let raw = std::str::from_utf8(&self.body[self.start..self.start + self.len]).ok()?;
        crate::logs::probe_id(raw, attr).map(std::borrow::Cow::into_owned)
    }

    pub(crate) fn to_item(&self) -> LogItem {
        let raw = &self.body[self.start..self.start + self.len];
        LogItem {
            value: serde_json::from_slice(raw).unwrap_or(serde_json::Value::Null),
            raw_bytes: self.len,
            truncated_by_intake: self.truncated,
            request_seq: self.request_seq,
        }
    }
}

/// Everything recorded about traffic.
#[derive(Debug, Default)]
pub(crate) struct Recorded {
    pub(crate) requests: VecDeque<RequestRecord>,
    pub(crate) items: VecDeque<KeptItem>,
    pub(crate) id_counts: IdCounts,
    pub(crate) series: Vec<MetricSeries>,
    pub(crate) stats: Stats,
}

impl Recorded {
    /// Nothing recorded yet, the id table sized for the expected ids.
    fn for_settings(settings: &Settings) -> Recorded {
        Recorded {
            requests: VecDeque::new(),
            items: VecDeque::new(),
            id_counts: IdCounts::with_capacity(settings.expected_event_ids),
            series: Vec::new(),
            stats: Stats::default(),
        }
    }
}

/// The fixed-window state of the configuration-API rate limit.
#[derive(Debug)]
pub(crate) struct RateState {
    pub(crate) limit: Option<RateLimit>,
    pub(crate) window_start: Instant,
    pub(crate) used: u32,
}

impl RateState {
    /// A new limit (or none), with a fresh window.
    pub(crate) fn set(&mut self, limit: Option<RateLimit>) {
        self.limit = limit;
        self.used = 0;
        self.window_start = Instant::now();
    }
}

/// What the rate limiter decided: the headers to send, and whether to refuse.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RateDecision {
    pub(crate) limit: u32,
    pub(crate) period: u64,
    pub(crate) remaining: u32,
    pub(crate) reset: u64,
    pub(crate) refused: bool,
}

impl RateState {
    pub(crate) fn admit(&mut self, now: Instant) -> Option<RateDecision> {
        let limit = self.limit?;
        let period = limit.period_secs.max(1);
        let elapsed = now.saturating_duration_since(self.window_start).as_secs();
        if elapsed >= period {
            self.window_start = now;
            self.used = 0;
        }
        let elapsed = now.saturating_duration_since(self.window_start).as_secs();
        let reset = period.saturating_sub(elapsed).max(1);
        let refused = self.used >= limit.limit;
        if !refused {
            self.used += 1;
        }
        Some(RateDecision {
            limit: limit.limit,
            period,
            remaining: limit.limit.saturating_sub(self.used),
            reset,
            refused,
        })
    }
}

/// The shared state.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) settings: Settings,
    pub(crate) keys: RwLock<Keys>,
    pub(crate) faults: Mutex<FaultState>,
    pub(crate) rec: Mutex<Recorded>,
    pub(crate) objects: Mutex<Objects>,
    pub(crate) signals: Mutex<Signals>,
    pub(crate) rate: Mutex<RateState>,
    pub(crate) changed: watch::Sender<u64>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) release: Mutex<CancellationToken>,
    pub(crate) stalled_now: AtomicU64,
    pub(crate) seq: AtomicU64,
    /// The idle body buffers kept by connections (see `server::Spare`).
    pub(crate) idle_bodies: Arc<crate::server::IdleBodies>,
}

impl Shared {
    pub(crate) fn new(settings: Settings, keys: Keys, rate_limit: Option<RateLimit>) -> Shared {
        let seed = settings.seed;
        let rec = Recorded::for_settings(&settings);
        Shared {
            settings,
            keys: RwLock::new(keys),
            faults: Mutex::new(FaultState::default()),
            rec: Mutex::new(rec),
            objects: Mutex::new(Objects::new(seed)),
            signals: Mutex::new(Signals::new(seed.wrapping_add(1))),
            rate: Mutex::new(RateState {
                limit: rate_limit,
                window_start: Instant::now(),
                used: 0,
            }),
            changed: watch::channel(0).0,
            shutdown: CancellationToken::new(),
            release: Mutex::new(CancellationToken::new()),
            stalled_now: AtomicU64::new(0),
            seq: AtomicU64::new(0),
            idle_bodies: Arc::new(crate::server::IdleBodies::new()),
        }
    }

    pub(crate) fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub(crate) fn keys(&self) -> std::sync::RwLockReadGuard<'_, Keys> {
        self.keys.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn keys_mut(&self) -> std::sync::RwLockWriteGuard<'_, Keys> {
        self.keys.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes every `wait_*` caller.
    pub(crate) fn notify(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Records a finished (or abandoned) request.
    pub(crate) fn record(&self, record: RequestRecord) {
        {
            let mut rec = lock(&self.rec);
            let stats = &mut rec.stats;
            stats.requests += 1;
            *stats
                .requests_by_endpoint
                .entry(record.endpoint.to_string())
                .or_default() += 1;
            if let Some(status) = record.status {
                *stats.responses_by_status.entry(status).or_default() += 1;
            }
            if record.fault.is_some() {
                stats.faults_injected += 1;
            }
            let max = self.settings.max_kept_requests;
            if max > 0 {
                if rec.requests.len() >= max {
                    rec.requests.pop_front();
                }
                rec.requests.push_back(record);
            }
        }
        self.notify();
    }

    pub(crate) fn stats(&self) -> Stats {
        let mut s = lock(&self.rec).stats.clone();
        s.stalled_now = self.stalled_now.load(Ordering::Relaxed);
        s
    }

    /// The token stalled requests wait on.
    pub(crate) fn release_token(&self) -> CancellationToken {
        lock(&self.release).clone()
    }

    /// Releases every stalled request.
    pub(crate) fn release_stalled(&self) {
        let mut token = lock(&self.release);
        token.cancel();
        *token = CancellationToken::new();
    }

    /// Clears recorded traffic, faults and the rate-limit window; releases stalls.
    pub(crate) fn reset_traffic(&self) {
        {
            let mut f = lock(&self.faults);
            f.queue.clear();
            f.random = None;
        }
        self.release_stalled();
        {
            // The new id table is allocated before the lock is taken.
            let fresh = Recorded::for_settings(&self.settings);
            *lock(&self.rec) = fresh;
        }
        {
            let mut rate = lock(&self.rate);
            rate.used = 0;
            rate.window_start = Instant::now();
        }
        self.notify();
    }

    pub(crate) fn event_id_counts(&self) -> HashMap<String, u32> {
        lock(&self.rec).id_counts.iter().collect()
    }

    pub(crate) fn duplicates(&self) -> BTreeMap<String, u32> {
        lock(&self.rec)
            .id_counts
            .iter()
            .filter(|(_, c)| *c > 1)
            .collect()
    }
}
