//! The handle: start, address, keys, faults, inspection, waiting, shutdown.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use serde_json::Value;
use tokio_util::task::TaskTracker;

use crate::config::{FakeIntakeBuilder, RateLimit};
use crate::faults::{Fault, FaultAction, FaultTarget, RandomFaults};
use crate::model::{LogItem, MetricApi, MetricSeries, ObjectKind, RequestRecord, Stats};
use crate::signals::SignalSeed;
use crate::state::{Shared, lock, remove_key};

/// Why the fake intake did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The error from the OS.
        source: std::io::Error,
    },
}

/// A `wait_*` call gave up: the condition did not hold within the timeout.
#[derive(Debug, Clone, thiserror::Error)]
#[error("fake intake: condition not met within {timeout:?} (last stats: {last:?})")]
pub struct WaitTimeout {
    /// The timeout that elapsed.
    pub timeout: Duration,
    /// The stats when it elapsed, to say how far it got.
    pub last: Box<Stats>,
}

/// A running fake intake. Dropping it stops the server and releases stalled requests; call
/// [`FakeIntake::shutdown`] to also wait until every connection is closed.
pub struct FakeIntake {
    shared: Arc<Shared>,
    addr: SocketAddr,
    tracker: TaskTracker,
}

impl fmt::Debug for FakeIntake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeIntake")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Drop for FakeIntake {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
    }
}

impl FakeIntake {
    pub(crate) fn new(shared: Arc<Shared>, addr: SocketAddr, tracker: TaskTracker) -> Self {
        FakeIntake {
            shared,
            addr,
            tracker,
        }
    }

    /// A builder with the defaults of [`FakeIntakeBuilder`].
    pub fn builder() -> FakeIntakeBuilder {
        FakeIntakeBuilder::default()
    }

    /// Starts on `127.0.0.1:0` with one valid API key and one valid application key.
    ///
    /// # Errors
    ///
    /// [`StartError::Bind`] when no loopback port can be bound.
    pub async fn start(
        api_key: impl Into<SecretString>,
        app_key: impl Into<SecretString>,
    ) -> Result<FakeIntake, StartError> {
        Self::builder()
            .with_api_key(api_key)
            .with_app_key(app_key)
            .start()
            .await
    }

    // ----- addresses -----

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`: the base URL for both the logs intake and the API (the
    /// endpoints keep Datadog's paths).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `{base_url}/api/v2/logs`.
    pub fn logs_url(&self) -> String {
        format!("{}/api/v2/logs", self.base_url())
    }

    // ----- keys -----

    /// Replaces the valid API keys.
    pub fn set_api_keys<I, K>(&self, keys: I)
    where
        I: IntoIterator<Item = K>,
        K: Into<SecretString>,
    {
        self.shared.keys_mut().api = keys.into_iter().map(Into::into).collect();
    }

    /// Adds a valid API key.
    pub fn add_api_key(&self, key: impl Into<SecretString>) {
        self.shared.keys_mut().api.push(key.into());
    }

    /// Revokes an API key; true if it was valid.
    pub fn revoke_api_key(&self, key: &str) -> bool {
        remove_key(&mut self.shared.keys_mut().api, key)
    }

    /// Replaces the valid application keys.
    pub fn set_app_keys<I, K>(&self, keys: I)
    where
        I: IntoIterator<Item = K>,
        K: Into<SecretString>,
    {
        self.shared.keys_mut().app = keys.into_iter().map(Into::into).collect();
    }

    /// Adds a valid application key.
    pub fn add_app_key(&self, key: impl Into<SecretString>) {
        self.shared.keys_mut().app.push(key.into());
    }

    /// Revokes an application key; true if it was valid.
    pub fn revoke_app_key(&self, key: &str) -> bool {
        remove_key(&mut self.shared.keys_mut().app, key)
    }

    // ----- faults -----

    /// Appends a scripted fault. Faults are consumed in order: for each request, the first
    /// queued fault whose target matches applies (and its count goes down by one).
    pub fn push_fault(&self, fault: Fault) {
        lock(&self.shared.faults).queue.push_back(fault);
    }

    /// Shorthand: the next `count` requests to `target` get `action`.
    pub fn fail_next(&self, target: impl Into<FaultTarget>, count: u32, action: FaultAction) {
        self.push_fault(Fault::new(target, action).times(count));
    }

    /// Scripted faults not yet consumed.
    pub fn pending_faults(&self) -> Vec<Fault> {
        lock(&self.shared.faults).queue.iter().cloned().collect()
    }

    /// Removes every scripted fault and the random mode.
    pub fn clear_faults(&self) {
        let mut f = lock(&self.shared.faults);
        f.queue.clear();
        f.set_random(None);
    }

    /// Turns the seeded random fault mode on (`Some`) or off (`None`).
    pub fn set_random_faults(&self, random: Option<RandomFaults>) {
        lock(&self.shared.faults).set_random(random);
    }

    /// Releases every stalled request (their connections are reset).
    pub fn release_stalled(&self) {
        self.shared.release_stalled();
    }

    /// Rate-limits the configuration APIs (`None` turns it off).
    pub fn set_rate_limit(&self, limit: Option<RateLimit>) {
        lock(&self.shared.rate).set(limit);
    }

    /// Forgets recorded traffic (requests, items, counts, series), removes faults, releases
    /// stalled requests, restarts the rate-limit window. Keeps keys, configuration objects and
    /// signals.
    pub fn reset(&self) {
        self.shared.reset_traffic();
    }

    // ----- inspection -----

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// The kept log items, oldest first (see [`FakeIntakeBuilder::with_keep_items`]).
    pub fn log_items(&self) -> Vec<LogItem> {
        lock(&self.shared.rec)
            .items
            .iter()
            .map(|k| k.to_item())
            .collect()
    }

    /// The kept log items whose `event_id` (the id attribute) is `id`. Only the matching
    /// items are parsed, so this stays cheap with many items kept.
    pub fn log_items_with_id(&self, id: &str) -> Vec<LogItem> {
        let attr = self.shared.settings.id_attribute.as_str();
        lock(&self.shared.rec)
            .items
            .iter()
            .filter(|k| k.raw_id(attr).as_deref() == Some(id))
            .map(|k| k.to_item())
            .collect()
    }

    /// The kept request records, oldest first. Credential headers read `<redacted>`.
    pub fn requests(&self) -> Vec<RequestRecord> {
        lock(&self.shared.rec).requests.iter().cloned().collect()
    }

    /// Log items accepted, duplicates included.
    pub fn total_items(&self) -> u64 {
        self.stats().total_items
    }

    /// Distinct `event_id` values accepted.
    pub fn unique_event_ids(&self) -> u64 {
        self.stats().unique_event_ids
    }

    /// How many times each `event_id` was accepted.
    pub fn event_id_counts(&self) -> HashMap<String, u32> {
        self.shared.event_id_counts()
    }

    /// `event_id` values accepted more than once, with their counts.
    pub fn duplicates(&self) -> BTreeMap<String, u32> {
        self.shared.duplicates()
    }

    /// Every series accepted, in arrival order.
    pub fn series(&self) -> Vec<MetricSeries> {
        lock(&self.shared.rec).series.clone()
    }

    /// The sum of all point values of metric `name` over series carrying every tag filter
    /// (`key:value`, `key:*`); see [`MetricSeries::has_tags`].
    pub fn metric_sum(&self, name: &str, tag_filters: &[&str]) -> f64 {
        lock(&self.shared.rec)
            .series
            .iter()
            .filter(|s| s.metric == name && s.has_tags(tag_filters))
            .map(MetricSeries::sum)
            .sum()
    }

    /// What Datadog would store of metric `name` over series carrying every tag filter, summed:
    /// like [`metric_sum`](Self::metric_sum), except that
    /// - Datadog keeps one value per series (metric, host and tag set: in any order, and
    ///   normalised as it normalises tags, so `env:Prod` is `env:prod`) and timestamp, the one
    ///   submitted last. So a reporter that sends two counts of one series in the same second
    ///   loses the first here, as it would there. Distribution points are all kept (Datadog
    ///   aggregates them);
    /// - points more than an hour old or more than ten minutes ahead when they arrived are not
    ///   kept ([`MetricSeries::in_window`]).
    pub fn metric_stored_sum(&self, name: &str, tag_filters: &[&str]) -> f64 {
        let rec = lock(&self.shared.rec);
        let mut stored: HashMap<(Vec<String>, Option<&str>, i64), f64> = HashMap::new();
        let mut distributions = 0.0;
        for s in rec
            .series
            .iter()
            .filter(|s| s.metric == name && s.has_tags(tag_filters))
        {
            let kept = s.points.iter().filter(|p| s.in_window(p.timestamp));
            if s.api == MetricApi::Distribution {
                distributions += kept.map(|p| p.value).sum::<f64>();
                continue;
            }
            let mut tags: Vec<String> = s.tags.iter().map(|t| normalise_tag(t)).collect();
            tags.sort_unstable();
            tags.dedup();
            for p in kept {
                stored.insert((tags.clone(), s.host.as_deref(), p.timestamp), p.value);
            }
        }
        distributions + stored.values().sum::<f64>()
    }

    // ----- waiting -----

    /// Waits until `condition` holds for the stats, or `timeout` passes. Woken by every
    /// change, never by polling on a timer.
    ///
    /// # Errors
    ///
    /// [`WaitTimeout`] with the last stats.
    pub async fn wait_until<F>(
        &self,
        timeout: Duration,
        mut condition: F,
    ) -> Result<Stats, WaitTimeout>
    where
        F: FnMut(&Stats) -> bool,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut rx = self.shared.changed.subscribe();
        loop {
            rx.borrow_and_update();
            let stats = self.stats();
            if condition(&stats) {
                return Ok(stats);
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => {
                    return Err(WaitTimeout {
                        timeout,
                        last: Box::new(self.stats()),
                    });
                }
            }
        }
    }

    /// Waits until at least `n` log items were accepted.
    ///
    /// # Errors
    ///
    /// [`WaitTimeout`] with the last stats.
    pub async fn wait_for_items(&self, n: u64, timeout: Duration) -> Result<Stats, WaitTimeout> {
        self.wait_until(timeout, |s| s.total_items >= n).await
    }

    /// Waits until at least `n` API requests were seen (any outcome).
    ///
    /// # Errors
    ///
    /// [`WaitTimeout`] with the last stats.
    pub async fn wait_for_requests(&self, n: u64, timeout: Duration) -> Result<Stats, WaitTimeout> {
        self.wait_until(timeout, |s| s.requests >= n).await
    }

    // ----- configuration objects -----

    /// Every stored object of a kind, as the API returns it (with `id` and timestamps).
    pub fn objects(&self, kind: ObjectKind) -> Vec<Value> {
        lock(&self.shared.objects).all(kind)
    }

    /// One stored object.
    pub fn object(&self, kind: ObjectKind, id: &str) -> Option<Value> {
        lock(&self.shared.objects).get(kind, id).cloned()
    }

    /// Stores an object as if created through the API (no validation); returns it with its id.
    pub fn insert_object(&self, kind: ObjectKind, body: Value) -> Value {
        lock(&self.shared.objects).insert(kind, body)
    }

    /// Changes an object behind the client's back (drift); false if there is no such object.
    pub fn modify_object<F: FnOnce(&mut Value)>(
        &self,
        kind: ObjectKind,
        id: &str,
        change: F,
    ) -> bool {
        match lock(&self.shared.objects).get_mut(kind, id) {
            Some(v) => {
                change(v);
                true
            }
            None => false,
        }
    }

    /// Deletes an object; false if there is no such object.
    pub fn remove_object(&self, kind: ObjectKind, id: &str) -> bool {
        lock(&self.shared.objects).remove(kind, id)
    }

    // ----- signals -----

    /// Adds a security signal (state `open`); returns its id.
    pub fn add_signal(&self, seed: SignalSeed) -> String {
        let id = lock(&self.shared.signals).add(seed);
        self.shared.notify();
        id
    }

    /// Every signal, in the API's JSON shape.
    pub fn signals(&self) -> Vec<Value> {
        lock(&self.shared.signals).all()
    }

    /// A signal's triage state (`open`, `under_review`, `archived`).
    pub fn signal_state(&self, id: &str) -> Option<String> {
        lock(&self.shared.signals).state(id)
    }

    // ----- shutdown -----

    /// Stops accepting, releases stalled requests, lets in-flight requests finish (within the
    /// shutdown grace) and waits until every connection task ended.
    pub async fn shutdown(self) {
        self.shared.shutdown.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

/// A tag as Datadog stores it: lowercased, with every character but letters, digits and
/// `_ - : . /` turned into `_`.
fn normalise_tag(tag: &str) -> String {
    tag.chars()
        .flat_map(char::to_lowercase)
        .map(|c| {
            if c.is_alphanumeric() || "_-:./".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}
