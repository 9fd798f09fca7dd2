//! [`KeyHolder`]: the current key every request reads, and how it is refreshed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use rand::Rng;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::provider::StaticProvider;
use crate::{ApiKeyProvider, KeyError, KeySource};

/// How a [`KeyHolder`] refreshes its key.
///
/// | setting | default | meaning |
/// |---|---|---|
/// | [`interval`](Self::with_interval) | 5 min | period of the scheduled refresh ([`KeyHolder::spawn_refresher`]) |
/// | [`first_delay_max`](Self::with_first_delay_max) | = `interval` | the first scheduled refresh waits a random delay in `[0, first_delay_max]`, so a fleet started together does not hit the store at once |
/// | [`min_interval`](Self::with_min_interval) | 30 s | at most one rejection-triggered fetch per this period ([`KeyHolder::refresh_after_rejection`]) |
/// | [`fetch_timeout`](Self::with_fetch_timeout) | 30 s | a fetch that has not answered by then fails as [`KeyError::Unavailable`] (the last good key stays) |
///
/// The fetch timeout bounds every read, whatever the provider: fetches are serialised, so one
/// that hangs (a connection to a key store that vanished in a failover, which without it
/// waits for the kernel to give up, minutes later) would hold up every refresh, and every
/// request waiting on a re-read after Datadog rejected the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshOptions {
    interval: Duration,
    first_delay_max: Option<Duration>,
    min_interval: Duration,
    fetch_timeout: Duration,
}

impl Default for RefreshOptions {
    fn default() -> Self {
        RefreshOptions {
            interval: Duration::from_secs(300),
            first_delay_max: None,
            min_interval: Duration::from_secs(30),
            fetch_timeout: Duration::from_secs(30),
        }
    }
}

impl RefreshOptions {
    /// Sets the period of the scheduled refresh (a zero period is raised to 1 ms).
    #[must_use]
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval.max(Duration::from_millis(1));
        self
    }

    /// Sets the upper bound of the random delay before the first scheduled refresh.
    #[must_use]
    pub fn with_first_delay_max(mut self, max: Duration) -> Self {
        self.first_delay_max = Some(max);
        self
    }

    /// Sets the minimum time between two rejection-triggered fetches.
    #[must_use]
    pub fn with_min_interval(mut self, min_interval: Duration) -> Self {
        self.min_interval = min_interval;
        self
    }

    /// Sets how long a fetch may take before it fails (a zero timeout is raised to 1 ms).
    #[must_use]
    pub fn with_fetch_timeout(mut self, timeout: Duration) -> Self {
        self.fetch_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// How long a fetch may take before it fails.
    pub fn fetch_timeout(&self) -> Duration {
        self.fetch_timeout
    }

    /// The period of the scheduled refresh.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// The upper bound of the random first delay.
    pub fn first_delay_max(&self) -> Duration {
        self.first_delay_max.unwrap_or(self.interval)
    }

    /// The minimum time between two rejection-triggered fetches.
    pub fn min_interval(&self) -> Duration {
        self.min_interval
    }
}

/// What a refresh did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshOutcome {
    /// A different key is now current, with this generation: retry the request with it.
    Changed {
        /// The generation now current.
        generation: u64,
    },
    /// The store still holds the same key: retrying would be rejected again.
    Unchanged,
    /// The fetch failed; the last good key stays current.
    Failed(KeyError),
    /// A rejection-triggered fetch happened less than `min_interval` ago for a different
    /// generation; no fetch was made.
    Throttled,
}

/// A snapshot of the current key. Cheap to take ([`KeyHolder::current`]), does not change under
/// the reader; `Debug` never shows the key.
#[derive(Clone)]
pub struct CurrentKey(Arc<KeyState>);

struct KeyState {
    secret: SecretString,
    generation: u64,
}

impl CurrentKey {
    /// The key, to put in a request header. Do not log it.
    pub fn expose(&self) -> &str {
        self.0.secret.expose_secret()
    }

    /// The key as a [`SecretString`].
    pub fn secret(&self) -> &SecretString {
        &self.0.secret
    }

    /// The generation of this key: 1 for the first key, +1 at each change. Pass it to
    /// [`KeyHolder::refresh_after_rejection`] when the key is rejected.
    pub fn generation(&self) -> u64 {
        self.0.generation
    }
}

impl std::fmt::Debug for CurrentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CurrentKey")
            .field("key", &"[REDACTED]")
            .field("generation", &self.0.generation)
            .finish()
    }
}

/// Holds the current key of one provider, shared by every request (clone it freely).
///
/// Reading ([`current`](Self::current)) is lock-free. The key changes when a refresh finds a
/// different secret: on the schedule ([`spawn_refresher`](Self::spawn_refresher)), when a
/// request is rejected ([`refresh_after_rejection`](Self::refresh_after_rejection)), on demand
/// ([`refresh_now`](Self::refresh_now)), or when the provider reports a change by itself
/// ([`ApiKeyProvider::changes`]). A failed refresh keeps the last good key.
#[derive(Clone)]
pub struct KeyHolder {
    inner: Arc<Inner>,
}

struct Inner {
    provider: Arc<dyn ApiKeyProvider>,
    description: String,
    options: RefreshOptions,
    current: ArcSwap<KeyState>,
    generation_tx: watch::Sender<u64>,
    /// Serialises fetches and publications; holds what the last rejection-triggered fetch did.
    refresh: tokio::sync::Mutex<Option<RejectionAttempt>>,
    /// Counts completed rejection-triggered fetches, so a caller that waited on the lock while
    /// one ran can share its result (single-flight).
    rejection_fetches: AtomicU64,
    listener: Mutex<Option<AbortHandle>>,
}

struct RejectionAttempt {
    at: Instant,
    generation: u64,
    outcome: RefreshOutcome,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Ok(mut listener) = self.listener.lock()
            && let Some(handle) = listener.take()
        {
            handle.abort();
        }
    }
}

impl std::fmt::Debug for KeyHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyHolder")
            .field("provider", &self.inner.description)
            .field("generation", &self.inner.current.load().generation)
            .field("key", &"[REDACTED]")
            .field("options", &self.inner.options)
            .finish()
    }
}

impl KeyHolder {
    /// Fetches the first key from `provider` and holds it.
    ///
    /// When the provider reports changes by itself ([`ApiKeyProvider::changes`]), a task
    /// listening to them is spawned on the current Tokio runtime; it stops when the last clone
    /// of the holder is dropped.
    ///
    /// # Errors
    ///
    /// The [`KeyError`] of the first fetch; an empty key is [`KeyError::Invalid`].
    pub async fn new(
        provider: Arc<dyn ApiKeyProvider>,
        options: RefreshOptions,
    ) -> Result<KeyHolder, KeyError> {
        let description = provider.describe();
        let first = fetch_validated(provider.as_ref(), &description, options.fetch_timeout).await?;
        tracing::info!(provider = %description, "API key loaded");
        let holder = KeyHolder::build(provider, description, options, first);
        if let Some(changes) = holder.inner.provider.changes() {
            let handle = tokio::spawn(listen_for_changes(Arc::downgrade(&holder.inner), changes));
            if let Ok(mut listener) = holder.inner.listener.lock() {
                *listener = Some(handle.abort_handle());
            }
        }
        Ok(holder)
    }

    /// Builds the provider described by `source` and fetches the first key.
    ///
    /// # Errors
    ///
    /// The errors of [`KeySource::into_provider`] and of [`KeyHolder::new`].
    pub async fn from_source(
        source: KeySource,
        options: RefreshOptions,
    ) -> Result<KeyHolder, KeyError> {
        let provider = source.into_provider().await?;
        KeyHolder::new(provider, options).await
    }

    /// A holder of a fixed key (a literal, or a test), without surrounding whitespace like every
    /// key. Refreshes always find it unchanged. Unlike [`from_source`](Self::from_source) it
    /// does not check the key: an empty one, or one with characters a header cannot carry,
    /// fails every request.
    pub fn from_static(key: SecretString) -> KeyHolder {
        let key = SecretString::from(key.expose_secret().trim());
        let provider: Arc<dyn ApiKeyProvider> = Arc::new(StaticProvider::new(key.clone()));
        let description = provider.describe();
        KeyHolder::build(provider, description, RefreshOptions::default(), key)
    }

    fn build(
        provider: Arc<dyn ApiKeyProvider>,
        description: String,
        options: RefreshOptions,
        first: SecretString,
    ) -> KeyHolder {
        let (generation_tx, _) = watch::channel(1);
        KeyHolder {
            inner: Arc::new(Inner {
                provider,
                description,
                options,
                current: ArcSwap::from_pointee(KeyState {
                    secret: first,
                    generation: 1,
                }),
                generation_tx,
                refresh: tokio::sync::Mutex::new(None),
                rejection_fetches: AtomicU64::new(0),
                listener: Mutex::new(None),
            }),
        }
    }

    /// The current key and its generation. Lock-free; call it for every request.
    pub fn current(&self) -> CurrentKey {
        CurrentKey(self.inner.current.load_full())
    }

    /// The provider's description (no secret).
    pub fn describe(&self) -> &str {
        &self.inner.description
    }

    /// The refresh options.
    pub fn options(&self) -> &RefreshOptions {
        &self.inner.options
    }

    /// Call when the service rejected the key of generation `rejected_generation` (e.g. a 403
    /// from Datadog). Returns:
    ///
    /// - [`Changed`](RefreshOutcome::Changed) at once, without fetching, when a newer key is
    ///   already current; otherwise after a fetch that found a different key. Retry the request.
    /// - [`Unchanged`](RefreshOutcome::Unchanged) when the store still holds the rejected key:
    ///   do not retry, the key is revoked.
    /// - [`Failed`](RefreshOutcome::Failed) when the fetch failed (the last good key stays).
    /// - [`Throttled`](RefreshOutcome::Throttled) when a rejection-triggered fetch for another
    ///   generation happened less than `min_interval` ago.
    ///
    /// Single-flight: concurrent callers for the same generation share one fetch and its
    /// outcome, and within `min_interval` later callers for that generation get the same
    /// outcome without a new fetch.
    pub async fn refresh_after_rejection(&self, rejected_generation: u64) -> RefreshOutcome {
        let inner = &self.inner;
        let current = inner.current.load().generation;
        if current > rejected_generation {
            return RefreshOutcome::Changed {
                generation: current,
            };
        }
        let fetches_before = inner.rejection_fetches.load(Ordering::Acquire);
        let mut last = inner.refresh.lock().await;
        let current = inner.current.load_full();
        if current.generation > rejected_generation {
            return RefreshOutcome::Changed {
                generation: current.generation,
            };
        }
        if let Some(attempt) = last.as_ref() {
            let shared = inner.rejection_fetches.load(Ordering::Acquire) != fetches_before;
            let recent = attempt.at.elapsed() < inner.options.min_interval;
            if attempt.generation == current.generation && (shared || recent) {
                return attempt.outcome.clone();
            }
            if recent {
                tracing::debug!(
                    provider = %inner.description,
                    generation = current.generation,
                    "key refresh after rejection throttled"
                );
                return RefreshOutcome::Throttled;
            }
        }
        tracing::info!(
            provider = %inner.description,
            generation = current.generation,
            "API key rejected; fetching it again"
        );
        let outcome = inner.fetch_and_publish(&current).await;
        *last = Some(RejectionAttempt {
            at: Instant::now(),
            generation: current.generation,
            outcome: outcome.clone(),
        });
        inner.rejection_fetches.fetch_add(1, Ordering::AcqRel);
        outcome
    }

    /// Fetches now and publishes the key if it changed. Not throttled (the scheduled refresher
    /// uses it); serialised with every other refresh.
    pub async fn refresh_now(&self) -> RefreshOutcome {
        self.inner.refresh_now().await
    }

    /// A receiver of the current generation; it is marked changed each time a new key is
    /// published.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.generation_tx.subscribe()
    }

    /// Spawns the scheduled refresh on the current Tokio runtime: a first refresh after a
    /// random delay in `[0, first_delay_max]`, then one every `interval`. The task stops when
    /// the returned handle is dropped or aborted, or when the last holder clone is dropped.
    ///
    /// # Panics
    ///
    /// When called outside a Tokio runtime.
    pub fn spawn_refresher(&self) -> RefresherHandle {
        let options = &self.inner.options;
        let max = options.first_delay_max();
        let first_delay = if max.is_zero() {
            Duration::ZERO
        } else {
            let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
            Duration::from_nanos(rand::rng().random_range(0..=nanos))
        };
        tracing::debug!(
            provider = %self.inner.description,
            first_delay_ms = first_delay.as_millis(),
            interval_ms = options.interval.as_millis(),
            "scheduled API key refresh started"
        );
        let handle = tokio::spawn(scheduled_refresh(
            Arc::downgrade(&self.inner),
            first_delay,
            options.interval,
        ));
        RefresherHandle { handle }
    }
}

impl Inner {
    async fn refresh_now(&self) -> RefreshOutcome {
        let _serialised = self.refresh.lock().await;
        let current = self.current.load_full();
        self.fetch_and_publish(&current).await
    }

    /// Fetches and, when the key differs from `current`, publishes it. Callers hold `refresh`.
    async fn fetch_and_publish(&self, current: &KeyState) -> RefreshOutcome {
        match fetch_validated(
            self.provider.as_ref(),
            &self.description,
            self.options.fetch_timeout,
        )
        .await
        {
            Ok(secret) if secret.expose_secret() != current.secret.expose_secret() => {
                let generation = current.generation + 1;
                self.current
                    .store(Arc::new(KeyState { secret, generation }));
                self.generation_tx.send_replace(generation);
                tracing::info!(provider = %self.description, generation, "API key changed");
                RefreshOutcome::Changed { generation }
            }
            Ok(_) => {
                tracing::debug!(provider = %self.description, "API key unchanged");
                RefreshOutcome::Unchanged
            }
            Err(err) => {
                tracing::warn!(
                    provider = %self.description,
                    error = %err,
                    transient = err.is_transient(),
                    "API key refresh failed; keeping the last good key"
                );
                RefreshOutcome::Failed(err)
            }
        }
    }
}

async fn fetch_validated(
    provider: &dyn ApiKeyProvider,
    description: &str,
    timeout: Duration,
) -> Result<SecretString, KeyError> {
    tracing::trace!(provider = %description, "fetching API key");
    let key = tokio::time::timeout(timeout, provider.fetch())
        .await
        .map_err(|_| {
            KeyError::unavailable(
                description,
                format!("no answer within {} ms", timeout.as_millis()),
            )
        })??;
    let text = key.expose_secret();
    if text.trim().is_empty() {
        return Err(KeyError::invalid(description, "the key is empty"));
    }
    // A key travels in an HTTP header: whitespace or control characters inside it (a key file
    // of two lines, a value pasted with a newline) would make every request fail, so such a
    // value never replaces a good key.
    if !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(KeyError::invalid(
            description,
            "the key contains whitespace, control or non-ASCII characters",
        ));
    }
    Ok(key)
}

/// The first and the longest wait before reading a changed key again after the store could
/// not be reached.
const CHANGE_RETRY_FIRST: Duration = Duration::from_secs(1);
const CHANGE_RETRY_MAX: Duration = Duration::from_secs(60);

async fn listen_for_changes(inner: Weak<Inner>, mut changes: watch::Receiver<()>) {
    let mut signals_open = true;
    while signals_open && changes.changed().await.is_ok() {
        // The provider says the key changed, so the current one may be revoked any moment: a
        // read that fails for a transient reason (the store unreachable, a timeout) is tried
        // again soon, backing off, not left to the next scheduled refresh minutes away. A new
        // change signal meanwhile reads at once and starts the backoff over; signals ending
        // (the watch gone) do not drop the pending read.
        let mut wait = CHANGE_RETRY_FIRST;
        loop {
            let outcome = {
                let Some(inner) = inner.upgrade() else { return };
                inner.refresh_now().await
            };
            if !matches!(&outcome, RefreshOutcome::Failed(e) if e.is_transient()) {
                break;
            }
            let signalled = if signals_open {
                tokio::select! {
                    () = tokio::time::sleep(wait) => false,
                    changed = changes.changed() => {
                        signals_open = changed.is_ok();
                        signals_open
                    }
                }
            } else {
                tokio::time::sleep(wait).await;
                false
            };
            wait = if signalled {
                CHANGE_RETRY_FIRST
            } else {
                (wait * 2).min(CHANGE_RETRY_MAX)
            };
        }
    }
}

async fn scheduled_refresh(inner: Weak<Inner>, first_delay: Duration, interval: Duration) {
    tokio::time::sleep(first_delay).await;
    loop {
        {
            let Some(inner) = inner.upgrade() else { break };
            inner.refresh_now().await;
        }
        tokio::time::sleep(interval).await;
    }
}

/// The scheduled refresh task of [`KeyHolder::spawn_refresher`]. Dropping it stops the task.
#[derive(Debug)]
pub struct RefresherHandle {
    handle: tokio::task::JoinHandle<()>,
}

impl RefresherHandle {
    /// Stops the task (same as dropping the handle).
    pub fn abort(&self) {
        self.handle.abort();
    }
}

impl Drop for RefresherHandle {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use std::sync::atomic::AtomicUsize;

    /// A static key is trimmed like every key: a literal interpolated from a variable may end
    /// in a newline, which no request could carry.
    #[test]
    fn a_static_key_is_trimmed() {
        let holder = KeyHolder::from_static(SecretString::from(" key-1\n"));
        assert_eq!(holder.current().expose(), "key-1");
    }

    /// Returns the key in `key` (or `Err` when `fail`), counting fetches.
    #[derive(Debug, Default)]
    struct Scripted {
        key: Mutex<String>,
        fail: std::sync::atomic::AtomicBool,
        fetches: AtomicUsize,
        gate: Option<Arc<tokio::sync::Semaphore>>,
        changes: Option<watch::Sender<()>>,
        fetched: tokio::sync::Notify,
    }

    impl Scripted {
        fn new(key: &str) -> Arc<Self> {
            Arc::new(Scripted {
                key: Mutex::new(key.to_owned()),
                ..Default::default()
            })
        }
        fn set(&self, key: &str) {
            *self.key.lock().unwrap() = key.to_owned();
        }
    }

    #[async_trait]
    impl ApiKeyProvider for Scripted {
        fn describe(&self) -> String {
            "scripted".into()
        }
        async fn fetch(&self) -> Result<SecretString, KeyError> {
            if let Some(gate) = &self.gate {
                gate.acquire().await.unwrap().forget();
            }
            self.fetches.fetch_add(1, Ordering::SeqCst);
            self.fetched.notify_waiters();
            if self.fail.load(Ordering::SeqCst) {
                return Err(KeyError::unavailable("scripted", "store down"));
            }
            Ok(SecretString::from(self.key.lock().unwrap().clone()))
        }
        fn changes(&self) -> Option<watch::Receiver<()>> {
            self.changes.as_ref().map(watch::Sender::subscribe)
        }
    }

    /// A change signal followed by a failed read (the store briefly unreachable) is read again
    /// after a short backoff, not at the next scheduled refresh (none is running here).
    #[tokio::test(start_paused = true)]
    async fn a_signalled_change_that_cannot_be_read_yet_is_read_again_soon() {
        let (tx, _rx) = watch::channel(());
        let p = Arc::new(Scripted {
            key: Mutex::new("k1".into()),
            changes: Some(tx.clone()),
            ..Default::default()
        });
        let holder = KeyHolder::new(p.clone(), RefreshOptions::default())
            .await
            .unwrap();
        let mut generations = holder.subscribe();
        p.fail.store(true, Ordering::SeqCst);
        p.set("k2");
        let fetches_reach = |n: usize| {
            let p = Arc::clone(&p);
            async move {
                let reached = async {
                    loop {
                        let fetched = p.fetched.notified();
                        if p.fetches.load(Ordering::SeqCst) >= n {
                            break;
                        }
                        fetched.await;
                    }
                };
                tokio::time::timeout(Duration::from_secs(120), reached)
                    .await
                    .expect("the changed key was not read again after a failed read");
                tokio::time::Instant::now()
            }
        };
        let signalled = tokio::time::Instant::now();
        tx.send_replace(());
        // Failed reads at once, then 1 s, 2 s and 4 s later (the clock is paused: exact).
        let mut at = Vec::new();
        for n in 2..=5 {
            at.push(fetches_reach(n).await - signalled);
        }
        assert_eq!(at, [0, 1, 3, 7].map(Duration::from_secs));
        // A new signal reads at once and starts the backoff over.
        let signalled = tokio::time::Instant::now();
        tx.send_replace(());
        assert_eq!(fetches_reach(6).await - signalled, Duration::ZERO);
        assert_eq!(fetches_reach(7).await - signalled, Duration::from_secs(1));
        assert_eq!(holder.current().expose(), "k1", "the last good key is kept");
        p.fail.store(false, Ordering::SeqCst);
        tokio::time::timeout(Duration::from_secs(60), generations.changed())
            .await
            .expect("the changed key was read again within the backoff")
            .unwrap();
        assert_eq!(holder.current().expose(), "k2");
    }

    /// A value that cannot travel in an HTTP header (two lines, an inner space, a control or
    /// non-ASCII character) is refused at start and never replaces a good key later.
    #[tokio::test(start_paused = true)]
    async fn a_key_with_inner_whitespace_or_controls_never_replaces_a_good_key() {
        for bad in ["k1\nk2", "k 1", "k\u{7f}1", "k\u{e9}1"] {
            let err = KeyHolder::new(Scripted::new(bad), RefreshOptions::default())
                .await
                .unwrap_err();
            assert!(matches!(err, KeyError::Invalid { .. }), "{bad:?}: {err}");
            assert!(
                !err.to_string().contains(bad),
                "the value is not in the error"
            );
        }
        let p = Scripted::new("good-key");
        let holder = KeyHolder::new(p.clone(), RefreshOptions::default())
            .await
            .unwrap();
        p.set("good-key\nnext-key");
        assert!(matches!(
            holder.refresh_now().await,
            RefreshOutcome::Failed(KeyError::Invalid { .. })
        ));
        assert_eq!(holder.current().expose(), "good-key");
        assert_eq!(holder.current().generation(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn rejection_of_unchanged_key_is_unchanged_then_throttled() {
        let p = Scripted::new("k1");
        let holder = KeyHolder::new(p.clone(), RefreshOptions::default())
            .await
            .unwrap();
        assert_eq!(
            holder.refresh_after_rejection(1).await,
            RefreshOutcome::Unchanged
        );
        // Same generation again within min_interval: shared outcome, no fetch.
        assert_eq!(
            holder.refresh_after_rejection(1).await,
            RefreshOutcome::Unchanged
        );
        assert_eq!(p.fetches.load(Ordering::SeqCst), 2);

        // The key rotates through the schedule path; its rejection right after is throttled.
        p.set("k2");
        assert_eq!(
            holder.refresh_now().await,
            RefreshOutcome::Changed { generation: 2 }
        );
        assert_eq!(
            holder.refresh_after_rejection(2).await,
            RefreshOutcome::Throttled
        );
        assert_eq!(p.fetches.load(Ordering::SeqCst), 3);

        // After min_interval, a rejection fetches again.
        tokio::time::advance(Duration::from_secs(31)).await;
        p.set("k3");
        assert_eq!(
            holder.refresh_after_rejection(2).await,
            RefreshOutcome::Changed { generation: 3 }
        );
        assert_eq!(holder.current().expose(), "k3");
        assert_eq!(p.fetches.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn stale_rejection_returns_changed_without_fetch() {
        let p = Scripted::new("k1");
        let holder = KeyHolder::new(p.clone(), RefreshOptions::default())
            .await
            .unwrap();
        p.set("k2");
        assert_eq!(
            holder.refresh_now().await,
            RefreshOutcome::Changed { generation: 2 }
        );
        let before = p.fetches.load(Ordering::SeqCst);
        assert_eq!(
            holder.refresh_after_rejection(1).await,
            RefreshOutcome::Changed { generation: 2 }
        );
        assert_eq!(p.fetches.load(Ordering::SeqCst), before);
    }

    #[tokio::test]
    async fn failed_refresh_keeps_last_good_key() {
        let p = Scripted::new("good");
        let holder = KeyHolder::new(p.clone(), RefreshOptions::default())
            .await
            .unwrap();
        p.fail.store(true, Ordering::SeqCst);
        let outcome = holder.refresh_now().await;
        assert!(
            matches!(outcome, RefreshOutcome::Failed(ref e) if e.is_transient()),
            "{outcome:?}"
        );
        assert_eq!(holder.current().expose(), "good");
        assert_eq!(holder.current().generation(), 1);
        let outcome = holder.refresh_after_rejection(1).await;
        assert!(matches!(outcome, RefreshOutcome::Failed(_)), "{outcome:?}");
        assert_eq!(holder.current().expose(), "good");
    }

    #[tokio::test]
    async fn empty_key_is_refused() {
        let p = Scripted::new("first");
        let holder = KeyHolder::new(p.clone(), RefreshOptions::default())
            .await
            .unwrap();
        p.set("  ");
        assert!(matches!(
            holder.refresh_now().await,
            RefreshOutcome::Failed(KeyError::Invalid { .. })
        ));
        assert_eq!(holder.current().expose(), "first");
    }

    #[tokio::test]
    async fn concurrent_rejections_share_one_fetch_even_without_throttle() {
        let gate = Arc::new(tokio::sync::Semaphore::new(1));
        let p = Arc::new(Scripted {
            key: Mutex::new("same".into()),
            gate: Some(gate.clone()),
            ..Default::default()
        });
        let holder = KeyHolder::new(
            p.clone(),
            RefreshOptions::default().with_min_interval(Duration::ZERO),
        )
        .await
        .unwrap();
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let h = holder.clone();
                tokio::spawn(async move { h.refresh_after_rejection(1).await })
            })
            .collect();
        // Let every task queue up before the one fetch may proceed.
        tokio::task::yield_now().await;
        gate.add_permits(1);
        for t in tasks {
            assert_eq!(t.await.unwrap(), RefreshOutcome::Unchanged);
        }
        // The first fetch in `new`, then one shared by all 20 callers.
        assert_eq!(p.fetches.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn static_holder_is_unchanged_and_redacted() {
        let holder = KeyHolder::from_static(SecretString::from("static-qq7"));
        assert_eq!(holder.current().expose(), "static-qq7");
        assert_eq!(holder.refresh_now().await, RefreshOutcome::Unchanged);
        assert!(!format!("{holder:?} {:?}", holder.current()).contains("static-qq7"));
    }
}
