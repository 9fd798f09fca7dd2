//! The Datadog logs exporter: formats, packs, compresses and sends batches, classifies the
//! intake's answers, splits on 413 and refreshes the API key on 401/403.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use clawdstrike_export::{ExportResult, Exporter, Failure, Health, Record, default_size_estimate};
use clawdstrike_keys::{KeyHolder, RefreshOptions, RefreshOutcome, RefresherHandle};
use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE, HeaderValue, USER_AGENT};

use crate::classify::{Verdict, classify, retry_after};
use crate::config::ResolvedConfig;
use crate::encode::{Compression, EncodedRequest, Payload, RequestLimits, finish, pack};
use crate::format::LogFormatter;
use crate::metrics::{SecurityAggregator, Tally};

/// How often at most we probe the intake with a key Datadog already rejected.
const REJECTED_KEY_PROBE_INTERVAL: Duration = Duration::from_secs(60);

/// What the origin headers say about us.
const ORIGIN: &str = "clawdstrike-datadog";

/// Everything the exporter needs, ready to run.
#[derive(Debug, Clone)]
pub struct DatadogExporterOptions {
    /// Exporter name (stats, logs, dead letters), e.g. `datadog_us`.
    pub name: String,
    /// Full logs intake endpoint (`https://http-intake.logs.<site>/api/v2/logs`).
    pub logs_endpoint: String,
    /// API base URL (for `/api/v1/validate`).
    pub api_base: String,
    /// The log formatter.
    pub formatter: LogFormatter,
    /// Compression.
    pub compression: Compression,
    /// Request limits.
    pub limits: RequestLimits,
    /// Whole-request timeout.
    pub timeout: Duration,
    /// Connect timeout.
    pub connect_timeout: Duration,
}

/// Transport counters (cheap atomics), read by the metrics reporter.
#[derive(Debug, Default)]
pub struct TransportStats {
    events_sent: AtomicU64,
    events_truncated: AtomicU64,
    events_out_of_window: AtomicU64,
    /// The first out-of-window delivery was logged at `warn` (the next ones at `debug`).
    out_of_window_logged: AtomicBool,
    bytes_uncompressed: AtomicU64,
    bytes_compressed: AtomicU64,
    requests: Mutex<BTreeMap<String, u64>>,
    key_valid: AtomicBool,
    latencies: Mutex<LatencySamples>,
    /// Logs requests that failed since the last accepted one, and the last one's reason.
    failing: Mutex<(u64, String)>,
}

/// Batch export latencies (milliseconds) since the last read, reservoir-sampled beyond a cap.
#[derive(Debug, Default)]
struct LatencySamples {
    values: Vec<f64>,
    seen: u64,
}

/// Most latency samples kept per metrics interval.
const MAX_LATENCY_SAMPLES: usize = 4_096;

/// A snapshot of [`TransportStats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransportSnapshot {
    /// Events accepted by the intake.
    pub events_sent: u64,
    /// Items we truncated to fit 1 MB.
    pub events_truncated: u64,
    /// Events delivered with a timestamp outside the window Datadog documents (older than
    /// 18 h, more than 2 h ahead): accepted, but perhaps not indexed at their time.
    pub events_out_of_window: u64,
    /// Request bytes before compression (accepted or not).
    pub bytes_uncompressed: u64,
    /// Request bytes on the wire.
    pub bytes_compressed: u64,
    /// Requests by status code (`network_error` when there was no answer).
    pub requests: BTreeMap<String, u64>,
    /// False after Datadog rejected the current key.
    pub key_valid: bool,
}

impl TransportStats {
    fn count_request(&self, status: &str) {
        let mut requests = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        *requests.entry(status.to_owned()).or_default() += 1;
    }

    /// A logs request was accepted (`None`) or failed with `reason`.
    fn logs_outcome(&self, failure: Option<&str>) {
        let mut failing = self.failing.lock().unwrap_or_else(|e| e.into_inner());
        match failure {
            None => failing.0 = 0,
            Some(reason) => {
                failing.0 += 1;
                reason.clone_into(&mut failing.1);
            }
        }
    }

    /// Logs requests failed in a row, with the last reason, when there are any.
    fn failing(&self) -> Option<(u64, String)> {
        let failing = self.failing.lock().unwrap_or_else(|e| e.into_inner());
        (failing.0 > 0).then(|| failing.clone())
    }

    fn record_latency(&self, millis: f64) {
        let mut samples = self.latencies.lock().unwrap_or_else(|e| e.into_inner());
        samples.seen += 1;
        if samples.values.len() < MAX_LATENCY_SAMPLES {
            samples.values.push(millis);
        } else {
            let slot = rand::random_range(0..samples.seen);
            if let Some(v) = samples.values.get_mut(slot as usize) {
                *v = millis;
            }
        }
    }

    /// Takes the batch latencies (ms) recorded since the last call (a uniform sample of at
    /// most 4,096).
    pub fn take_latencies(&self) -> Vec<f64> {
        std::mem::take(&mut *self.latencies.lock().unwrap_or_else(|e| e.into_inner())).values
    }

    /// A snapshot of the counters.
    pub fn snapshot(&self) -> TransportSnapshot {
        TransportSnapshot {
            events_sent: self.events_sent.load(Ordering::Relaxed),
            events_truncated: self.events_truncated.load(Ordering::Relaxed),
            events_out_of_window: self.events_out_of_window.load(Ordering::Relaxed),
            bytes_uncompressed: self.bytes_uncompressed.load(Ordering::Relaxed),
            bytes_compressed: self.bytes_compressed.load(Ordering::Relaxed),
            requests: self
                .requests
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            key_valid: self.key_valid.load(Ordering::Relaxed),
        }
    }
}

/// The key-rejection state: which key generation Datadog rejected, and when we may probe again.
#[derive(Debug, Default)]
struct Rejection {
    generation: Option<u64>,
    next_probe: Option<Instant>,
}

/// One request ready to send, with the security counts of its events (added on 202).
#[derive(Debug)]
struct Encoded {
    request: EncodedRequest,
    tally: Option<Tally>,
    /// Events of the request outside the window Datadog accepts (18 h old, 2 h ahead).
    out_of_window: u64,
}

/// How old an event may be for the logs intake (what it does with older ones is unverified).
const MAX_AGE_MS: i64 = 18 * 3_600_000;
/// How far in the future an event may be.
const MAX_AHEAD_MS: i64 = 2 * 3_600_000;

/// Ships security events to the Datadog logs intake.
#[derive(Debug, Clone)]
pub struct DatadogExporter {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    options: DatadogExporterOptions,
    client: reqwest::Client,
    key: KeyHolder,
    stats: Arc<TransportStats>,
    rejection: Mutex<Rejection>,
    security: Option<Arc<SecurityAggregator>>,
    /// Encoding (formatting and compression) is CPU-bound: at most one batch per core at a
    /// time, however many requests are in flight, so that extra concurrency waits on the
    /// network rather than crowding the CPU with threads and buffers.
    encoders: Arc<tokio::sync::Semaphore>,
    /// Keeps the scheduled key refresh running as long as the exporter lives.
    _refresher: Option<RefresherHandle>,
}

/// Why an exporter could not be built from configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The API key could not be loaded.
    #[error("exporter `{exporter}`: cannot load the API key: {source}")]
    Key {
        /// The exporter.
        exporter: String,
        /// Why (never the key).
        source: clawdstrike_keys::KeyError,
    },
    /// The HTTP client could not be built.
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// A transport setup error (the HTTP client could not be built).
#[derive(Debug, thiserror::Error)]
#[error("cannot build the HTTP client: {0}")]
pub struct ClientError(String);

/// The HTTP client every Datadog request of ours goes through: rustls (aws-lc-rs), HTTP/2
/// where offered, connection reuse, timeouts. Redirects are not followed: Datadog never
/// redirects its intake, and a redirecting proxy or login page would turn the POST into a
/// bodyless GET answered 200 (events counted delivered, never sent) or carry the `DD-API-KEY`
/// header to another host. A 3xx is a failure that names where it pointed.
///
/// # Errors
/// [`ClientError`] if the TLS stack cannot be initialised.
pub fn http_client(
    timeout: Duration,
    connect_timeout: Duration,
) -> Result<reqwest::Client, ClientError> {
    http_client_builder(timeout, connect_timeout)
        .build()
        .map_err(|e| ClientError(e.to_string()))
}

/// [`http_client`] for requests to `base` only: without the environment's proxies when `base`
/// is on loopback.
///
/// # Errors
/// [`ClientError`] if the TLS stack cannot be initialised.
pub(crate) fn http_client_for(
    base: &str,
    timeout: Duration,
    connect_timeout: Duration,
) -> Result<reqwest::Client, ClientError> {
    let builder = http_client_builder(timeout, connect_timeout);
    if is_loopback_url(base) {
        builder.no_proxy()
    } else {
        builder
    }
    .build()
    .map_err(|e| ClientError(e.to_string()))
}

fn http_client_builder(timeout: Duration, connect_timeout: Duration) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(connect_timeout)
        .pool_idle_timeout(Duration::from_secs(60))
        .tcp_keepalive(Duration::from_secs(30))
        .user_agent(concat!("clawdstrike-datadog/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
}

/// Whether `url`'s host is `localhost` or a loopback address.
pub(crate) fn is_loopback_url(url: &str) -> bool {
    let Ok(u) = reqwest::Url::parse(url) else {
        return false;
    };
    let host = u.host_str().unwrap_or_default().trim_end_matches('.');
    host.eq_ignore_ascii_case("localhost")
        || host.to_ascii_lowercase().ends_with(".localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The outcome of one request, per carried index.
type Outcomes = Vec<(usize, Option<Failure>)>;

impl DatadogExporter {
    /// An exporter sending with `key`.
    ///
    /// # Errors
    /// [`ClientError`] if the HTTP client cannot be built.
    pub fn new(options: DatadogExporterOptions, key: KeyHolder) -> Result<Self, ClientError> {
        Self::assemble(options, key, None, None)
    }

    fn assemble(
        options: DatadogExporterOptions,
        key: KeyHolder,
        security: Option<Arc<SecurityAggregator>>,
        refresher: Option<RefresherHandle>,
    ) -> Result<Self, ClientError> {
        let client =
            if is_loopback_url(&options.logs_endpoint) && is_loopback_url(&options.api_base) {
                // A Datadog on loopback (the fake intake of the demo and of tests, a local relay)
                // is never reached through an HTTP(S)_PROXY from the environment. (One client
                // serves both the intake and the API: with only one of them local, the
                // environment's proxies stay, as the remote one may need them.)
                http_client_builder(options.timeout, options.connect_timeout).no_proxy()
            } else {
                http_client_builder(options.timeout, options.connect_timeout)
            }
            .build()
            .map_err(|e| ClientError(e.to_string()))?;
        let stats = Arc::new(TransportStats::default());
        stats.key_valid.store(true, Ordering::Relaxed);
        Ok(Self {
            inner: Arc::new(Inner {
                options,
                client,
                key,
                stats,
                rejection: Mutex::new(Rejection::default()),
                security,
                encoders: Arc::new(tokio::sync::Semaphore::new(
                    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
                )),
                _refresher: refresher,
            }),
        })
    }

    /// Builds an exporter from resolved configuration: loads the API key through its provider
    /// (and keeps it refreshed on a schedule), and counts delivered events for the security
    /// metrics when metrics are enabled.
    ///
    /// # Errors
    /// [`BuildError::Key`] when the first key fetch fails; [`BuildError::Client`].
    pub async fn from_config(name: &str, resolved: &ResolvedConfig) -> Result<Self, BuildError> {
        let key = KeyHolder::from_source(resolved.api_key.clone(), RefreshOptions::default())
            .await
            .map_err(|source| BuildError::Key {
                exporter: name.to_owned(),
                source,
            })?;
        Self::from_config_with_key(name, resolved, key)
    }

    /// Like [`from_config`](Self::from_config) with a key holder the caller built.
    ///
    /// # Errors
    /// [`BuildError::Client`].
    pub fn from_config_with_key(
        name: &str,
        resolved: &ResolvedConfig,
        key: KeyHolder,
    ) -> Result<Self, BuildError> {
        let refresher = key.spawn_refresher();
        let security = resolved
            .metrics
            .enabled
            .then(|| Arc::new(SecurityAggregator::new(resolved.format.env.clone())));
        let options = DatadogExporterOptions {
            name: name.to_owned(),
            logs_endpoint: resolved.logs_endpoint.clone(),
            api_base: resolved.api_base.clone(),
            formatter: LogFormatter::new(resolved.format.clone()),
            compression: resolved.compression,
            limits: resolved.request.limits(),
            timeout: Duration::from_millis(resolved.request.timeout_ms),
            connect_timeout: Duration::from_millis(resolved.request.connect_timeout_ms),
        };
        Ok(Self::assemble(options, key, security, Some(refresher))?)
    }

    /// The security-metrics aggregator (counts of delivered events), when metrics are enabled.
    pub fn security_aggregator(&self) -> Option<Arc<SecurityAggregator>> {
        self.inner.security.clone()
    }

    /// The transport counters.
    pub fn transport_stats(&self) -> Arc<TransportStats> {
        Arc::clone(&self.inner.stats)
    }

    /// The key holder.
    pub fn key_holder(&self) -> &KeyHolder {
        &self.inner.key
    }

    /// The options in force.
    pub fn options(&self) -> &DatadogExporterOptions {
        &self.inner.options
    }

    /// The HTTP client (shared with the metrics reporter).
    pub(crate) fn client(&self) -> &reqwest::Client {
        &self.inner.client
    }

    /// Whether the logs intake answers at all, through the very client that ships (its proxy
    /// settings, TLS, timeouts): one `GET` of the logs endpoint, without the key. Any answer
    /// but a redirect is `Ok` with its status (the intake only takes `POST`, so 4xx is usual);
    /// a redirect is an error naming its target, since shipping does not follow redirects.
    ///
    /// # Errors
    /// Why not, with the URL redacted.
    pub async fn probe_logs_intake(&self) -> Result<u16, String> {
        let url = &self.inner.options.logs_endpoint;
        match self.inner.client.get(url).send().await {
            Ok(response) if response.status().is_redirection() => Err(format!(
                "HTTP {}{}",
                response.status().as_u16(),
                redirect_reason(&response)
            )),
            // A proxy refusing us, or a gateway that cannot reach the intake, is not the intake.
            Ok(response) if matches!(response.status().as_u16(), 407 | 502 | 503 | 504) => {
                Err(format!(
                    "HTTP {} (a proxy or gateway between here and the intake)",
                    response.status().as_u16()
                ))
            }
            Ok(response) => Ok(response.status().as_u16()),
            Err(e) => Err(network_reason(&e, url)),
        }
    }
}

impl Inner {
    /// True when the current key is one Datadog already rejected and no probe is due.
    fn key_known_bad(&self) -> bool {
        let generation = self.key.current().generation();
        let mut rejection = self.rejection.lock().unwrap_or_else(|e| e.into_inner());
        match rejection.generation {
            Some(bad) if bad == generation => {
                let now = Instant::now();
                match rejection.next_probe {
                    Some(at) if now < at => true,
                    _ => {
                        rejection.next_probe = Some(now + REJECTED_KEY_PROBE_INTERVAL);
                        false
                    }
                }
            }
            _ => false,
        }
    }

    /// Whether the logs intake rejected the current key (read only: unlike
    /// [`key_known_bad`](Self::key_known_bad) it never takes the next probe).
    fn key_rejected(&self) -> bool {
        let generation = self.key.current().generation();
        self.rejection
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .generation
            == Some(generation)
    }

    fn mark_key_rejected(&self, generation: u64) {
        let mut rejection = self.rejection.lock().unwrap_or_else(|e| e.into_inner());
        if rejection.generation != Some(generation) {
            tracing::error!(exporter = %self.options.name, generation, "Datadog rejected the API key and no new key is available; events are dead-lettered until the key changes");
        }
        rejection.generation = Some(generation);
        rejection
            .next_probe
            .get_or_insert(Instant::now() + REJECTED_KEY_PROBE_INTERVAL);
        self.stats.key_valid.store(false, Ordering::Relaxed);
    }

    fn mark_key_accepted(&self) {
        let mut rejection = self.rejection.lock().unwrap_or_else(|e| e.into_inner());
        if rejection.generation.take().is_some() {
            tracing::info!(exporter = %self.options.name, "Datadog accepts the API key again");
        }
        rejection.next_probe = None;
        self.stats.key_valid.store(true, Ordering::Relaxed);
    }

    /// Compresses a packed payload and, when security metrics are on, tallies its events
    /// while they are still in cache from formatting.
    fn finish(&self, batch: &[Record], payload: Payload) -> std::io::Result<Encoded> {
        let tally = self
            .security
            .as_ref()
            .map(|security| security.tally(batch, &payload.indices));
        let now = clawdstrike_schema::Timestamp::now().unix_millis();
        let out_of_window = payload
            .indices
            .iter()
            .filter(|&&i| {
                let at = batch[i].event.timestamp.unix_millis();
                at < now - MAX_AGE_MS || at > now + MAX_AHEAD_MS
            })
            .count() as u64;
        let request = finish(payload, &self.options.compression)?;
        Ok(Encoded {
            request,
            tally,
            out_of_window,
        })
    }

    /// Formats and compresses the records at `indices` off the async runtime.
    async fn encode(
        self: &Arc<Self>,
        batch: &Arc<Vec<Record>>,
        indices: Vec<usize>,
    ) -> Result<Vec<Encoded>, Failure> {
        let inner = Arc::clone(self);
        let batch = Arc::clone(batch);
        let work = move || {
            let payloads = pack(
                &inner.options.formatter,
                &batch,
                &indices,
                inner.options.limits,
            );
            payloads
                .into_iter()
                .map(|p| inner.finish(&batch, p))
                .collect::<Result<Vec<_>, _>>()
        };
        match self.encode_blocking(work).await {
            Ok(Ok(requests)) => Ok(requests),
            Ok(Err(e)) => Err(Failure::retryable(format!("compression failed: {e}"))),
            Err(e) => Err(Failure::retryable(format!("encoding task failed: {e}"))),
        }
    }

    /// Runs encoding `work` on the blocking pool, at most one batch per core at a time. The
    /// permit travels with the work: it is held until the work ends, even if the caller stops
    /// waiting (a cancelled export).
    async fn encode_blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, tokio::task::JoinError> {
        // The semaphore is never closed; should it be, encoding goes on unthrottled.
        let permit = Arc::clone(&self.encoders).acquire_owned().await.ok();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work()
        })
        .await
    }

    /// Sends one request body once with the current key.
    async fn post(
        &self,
        request: &EncodedRequest,
        key: &clawdstrike_keys::CurrentKey,
    ) -> Result<reqwest::Response, PostError> {
        let mut builder = self
            .client
            .post(&self.options.logs_endpoint)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header("DD-EVP-ORIGIN", HeaderValue::from_static(ORIGIN))
            .header(
                "DD-EVP-ORIGIN-VERSION",
                HeaderValue::from_static(env!("CARGO_PKG_VERSION")),
            )
            .header(
                USER_AGENT,
                HeaderValue::from_static(concat!(
                    "clawdstrike-datadog/",
                    env!("CARGO_PKG_VERSION")
                )),
            );
        let mut value = HeaderValue::from_str(key.expose())?;
        value.set_sensitive(true);
        builder = builder.header("DD-API-KEY", value);
        if let Some(encoding) = self.options.compression.codec.content_encoding() {
            builder = builder.header(CONTENT_ENCODING, HeaderValue::from_static(encoding));
        }
        Ok(builder.body(request.body.clone()).send().await?)
    }

    /// Sends a request, handling 413 (split) and 401/403 (key refresh) itself; returns the
    /// outcome of each carried event.
    fn send<'a>(
        self: &'a Arc<Self>,
        batch: &'a Arc<Vec<Record>>,
        encoded: Encoded,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Outcomes> + Send + 'a>> {
        Box::pin(async move {
            let Encoded {
                request,
                tally,
                out_of_window,
            } = encoded;
            let all = |failure: Option<Failure>| {
                self.stats
                    .logs_outcome(failure.as_ref().map(Failure::reason));
                request
                    .indices
                    .iter()
                    .map(|&i| (i, failure.clone()))
                    .collect::<Outcomes>()
            };
            let mut key = self.key.current();
            let mut refreshed = false;
            loop {
                self.stats
                    .bytes_uncompressed
                    .fetch_add(request.uncompressed_len as u64, Ordering::Relaxed);
                self.stats
                    .bytes_compressed
                    .fetch_add(request.body.len() as u64, Ordering::Relaxed);
                let response = match self.post(&request, &key).await {
                    Ok(response) => response,
                    Err(PostError::Network(e)) => {
                        self.stats.count_request("network_error");
                        let reason = network_reason(&e, &self.options.logs_endpoint);
                        tracing::debug!(exporter = %self.options.name, %reason, "logs request failed");
                        return all(Some(Failure::retryable(reason)));
                    }
                    Err(PostError::KeyNotAHeader) => {
                        // Not sent: without its key the request could only be refused, and a
                        // refusal would be blamed on Datadog.
                        return all(Some(Failure::permanent(format!(
                            "the API key (generation {}) contains characters an HTTP header cannot carry; not sent",
                            key.generation()
                        ))));
                    }
                };
                let status = response.status();
                self.stats.count_request(status.as_str());
                let verdict = classify(status);
                let hint = retry_after(response.headers());
                match verdict {
                    Verdict::Accepted => {
                        self.mark_key_accepted();
                        if let (Some(security), Some(tally)) = (&self.security, tally) {
                            security.add(tally);
                        }
                        self.stats
                            .events_sent
                            .fetch_add(request.indices.len() as u64, Ordering::Relaxed);
                        self.stats
                            .events_truncated
                            .fetch_add(request.truncated as u64, Ordering::Relaxed);
                        if out_of_window > 0 {
                            self.stats
                                .events_out_of_window
                                .fetch_add(out_of_window, Ordering::Relaxed);
                            if self
                                .stats
                                .out_of_window_logged
                                .swap(true, Ordering::Relaxed)
                            {
                                tracing::debug!(exporter = %self.options.name, events = out_of_window, "delivered events outside the intake's time window");
                            } else {
                                tracing::warn!(exporter = %self.options.name, events = out_of_window, "delivered events older than 18 h or more than 2 h ahead: Datadog accepted them, but may not index them at their time (a replayed backlog, or a skewed clock); counted in clawdstrike.exporter.events.out_of_window, logged once");
                            }
                        }
                        let outcomes = all(None);
                        crate::encode::recycle_body(request.body, &self.options.compression);
                        return outcomes;
                    }
                    Verdict::Retry { .. } => {
                        let reason = format!(
                            "HTTP {status}{}{}",
                            redirect_reason(&response),
                            body_reason(response, key.expose()).await
                        );
                        return all(Some(Failure::Retryable {
                            reason: reason.into(),
                            retry_after: hint,
                        }));
                    }
                    Verdict::Reject => {
                        let reason =
                            format!("HTTP {status}{}", body_reason(response, key.expose()).await);
                        return all(Some(Failure::permanent(reason)));
                    }
                    Verdict::TooLarge => return self.split(batch, request).await,
                    Verdict::KeyRejected => {
                        if !refreshed {
                            refreshed = true;
                            match self.key.refresh_after_rejection(key.generation()).await {
                                RefreshOutcome::Changed { .. } => {
                                    key = self.key.current();
                                    tracing::info!(exporter = %self.options.name, generation = key.generation(), "retrying with the refreshed API key");
                                    continue;
                                }
                                RefreshOutcome::Unchanged => {
                                    tracing::warn!(exporter = %self.options.name, "API key rejected and the store holds no other")
                                }
                                // The store refuses us (forbidden): no new key can come
                                // without someone acting. (Not found may be a rotation in
                                // progress, a Secret deleted and created again; invalid may be
                                // a key file read while it was being rewritten, or a proxy's
                                // page: both retried.)
                                RefreshOutcome::Failed(
                                    e @ clawdstrike_keys::KeyError::Forbidden { .. },
                                ) => {
                                    tracing::warn!(exporter = %self.options.name, error = %e, "API key rejected and the key store cannot be read")
                                }
                                // The store is unavailable for now, or was read moments ago for
                                // the key before: whether it holds a new key is not known, so
                                // the events are not dead-lettered as if the key were revoked.
                                // They wait for the next read the holder allows; the key is
                                // reported invalid meanwhile (the api_key.valid monitor).
                                other => {
                                    self.stats.key_valid.store(false, Ordering::Relaxed);
                                    tracing::warn!(exporter = %self.options.name, outcome = ?other, "API key rejected and the key store not read; retrying");
                                    return all(Some(Failure::Retryable {
                                        reason: format!(
                                            "HTTP {status}: Datadog rejected the API key (generation {}) and the key store could not be read again yet",
                                            key.generation()
                                        )
                                        .into(),
                                        retry_after: Some(self.key.options().min_interval()),
                                    }));
                                }
                            }
                        }
                        self.mark_key_rejected(key.generation());
                        return all(Some(Failure::permanent(format!(
                            "HTTP {status}: Datadog rejected the API key (generation {})",
                            key.generation()
                        ))));
                    }
                }
            }
        })
    }

    /// 413: split the request's events in halves and send each; a single event that is still
    /// too large fails permanently.
    async fn split(
        self: &Arc<Self>,
        batch: &Arc<Vec<Record>>,
        request: EncodedRequest,
    ) -> Outcomes {
        if request.indices.len() <= 1 {
            let reason = format!(
                "HTTP 413: a single event of {} bytes is too large for the intake",
                request.uncompressed_len
            );
            return request
                .indices
                .iter()
                .map(|&i| (i, Some(Failure::permanent(reason.clone()))))
                .collect();
        }
        tracing::warn!(exporter = %self.options.name, events = request.indices.len(), "HTTP 413: splitting the request in halves");
        let mid = request.indices.len() / 2;
        let mut outcomes = Vec::with_capacity(request.indices.len());
        for half in [&request.indices[..mid], &request.indices[mid..]] {
            // Pack each half into exactly one request: the halves are below the limits already.
            let limits = RequestLimits {
                max_items: half.len(),
                max_bytes: usize::MAX,
            };
            let inner = Arc::clone(self);
            let batch_ref = Arc::clone(batch);
            let indices = half.to_vec();
            let encoded = self
                .encode_blocking(move || {
                    // Every payload `pack` makes is sent (one, as the half fits the limits).
                    pack(&inner.options.formatter, &batch_ref, &indices, limits)
                        .into_iter()
                        .map(|p| inner.finish(&batch_ref, p))
                        .collect::<Result<Vec<_>, _>>()
                })
                .await;
            match encoded {
                Ok(Ok(requests)) if !requests.is_empty() => {
                    for req in requests {
                        outcomes.extend(self.send(batch, req).await);
                    }
                }
                failed => {
                    let reason = format!("re-encoding after HTTP 413 failed: {failed:?}");
                    outcomes.extend(
                        half.iter()
                            .map(|&i| (i, Some(Failure::retryable(reason.clone())))),
                    );
                }
            }
        }
        outcomes
    }
}

/// Logs requests failing in a row that make an otherwise healthy exporter degraded.
const FAILING_IN_A_ROW: u64 = 3;

/// Why [`DatadogExporter::post`] did not get an answer.
#[derive(Debug)]
enum PostError {
    /// The key cannot be a header value: not sent.
    KeyNotAHeader,
    /// No answer.
    Network(reqwest::Error),
}

impl From<reqwest::header::InvalidHeaderValue> for PostError {
    fn from(_: reqwest::header::InvalidHeaderValue) -> Self {
        PostError::KeyNotAHeader
    }
}

impl From<reqwest::Error> for PostError {
    fn from(e: reqwest::Error) -> Self {
        PostError::Network(e)
    }
}

/// `url` without what must not reach a log or a dead-letter file: user and password, query,
/// fragment.
pub fn redacted_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => "(unparsable URL)".to_owned(),
    }
}

/// Where a 3xx points, resolved against the request and without credentials, query or
/// fragment (they may hold secrets).
pub(crate) fn redirect_target(response: &reqwest::Response) -> String {
    response
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map_or_else(
            || "nowhere said".to_owned(),
            |l| match response.url().join(l) {
                Ok(u) => redacted_url(u.as_str()),
                Err(_) => "an unparsable location".to_owned(),
            },
        )
}

/// ` (redirect to URL, not followed: set the final URL in the configuration)` for a 3xx.
fn redirect_reason(response: &reqwest::Response) -> String {
    if !response.status().is_redirection() {
        return String::new();
    }
    let to = redirect_target(response);
    format!(" (redirect to {to}, not followed: configure the final URL)")
}

/// Why a request got no answer, naming `url` without credentials or query (reqwest's own text
/// would print the URL whole).
fn network_reason(e: &reqwest::Error, url: &str) -> String {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_request() {
        "request failed"
    } else {
        "network error"
    };
    format!("{kind}: {}{}", redacted_url(url), error_sources(e))
}

/// `: <source>: <its source>...` of `e`: the causes without `e`'s own text (reqwest's prints
/// the URL whole).
pub(crate) fn error_sources(e: &dyn std::error::Error) -> String {
    let mut out = String::new();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// `text` with `key` blanked out, should a server (a proxy echoing the request) have repeated
/// it. Keys under 4 characters are left: blanking them would blank ordinary text.
pub(crate) fn blank_key<'a>(text: &'a str, key: &str) -> std::borrow::Cow<'a, str> {
    if key.len() >= 4 && text.contains(key) {
        std::borrow::Cow::Owned(text.replace(key, "[redacted]"))
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

/// The first 512 bytes of a server's answer, for an error message, with `keys` blanked out
/// should the server (a proxy or firewall echoing the request, say) have repeated them.
/// Blanked over the whole body first: a cut could fall inside a key and leave a prefix of it
/// that no longer matches.
pub(crate) fn excerpt(body: &[u8], keys: &[&str]) -> String {
    let mut text = String::from_utf8_lossy(body);
    for key in keys {
        if let std::borrow::Cow::Owned(blanked) = blank_key(&text, key) {
            text = std::borrow::Cow::Owned(blanked);
        }
    }
    let text = text.trim();
    text[..text.floor_char_boundary(512)].to_owned()
}

/// `: <excerpt of the body>` when the server explained itself (see [`excerpt`]).
async fn body_reason(response: reqwest::Response, key: &str) -> String {
    match response.bytes().await {
        Ok(body) if !body.is_empty() => format!(": {}", excerpt(&body, &[key])),
        _ => String::new(),
    }
}

#[async_trait]
impl Exporter for DatadogExporter {
    fn name(&self) -> &str {
        &self.inner.options.name
    }

    fn estimate_size(&self, record: &Record) -> usize {
        // The log item repeats the reason in `message` and adds tags and standard attributes.
        default_size_estimate(&record.event) + record.event.decision.reason.len() + 480
    }

    async fn export(&self, batch: &[Record]) -> ExportResult {
        let inner = &self.inner;
        if batch.is_empty() {
            return ExportResult::exported(0);
        }
        if inner.key_known_bad() {
            return ExportResult::failed(
                batch.len(),
                Failure::permanent(format!(
                    "Datadog rejected the API key (generation {}); not sending until the key changes",
                    inner.key.current().generation()
                )),
            );
        }
        let started = Instant::now();
        let batch = Arc::new(batch.to_vec());
        let requests = match inner.encode(&batch, (0..batch.len()).collect()).await {
            Ok(requests) => requests,
            Err(failure) => return ExportResult::failed(batch.len(), failure),
        };
        // An event no request answered for is not delivered: it is retried (it cannot happen
        // unless encoding dropped an index, and then it must not pass for delivered).
        let mut result = ExportResult::failed(
            batch.len(),
            Failure::retryable("no request carried this event (an encoding fault)"),
        );
        for request in requests {
            for (index, outcome) in inner.send(&batch, request).await {
                result.set(index, outcome);
            }
        }
        inner
            .stats
            .record_latency(started.elapsed().as_secs_f64() * 1_000.0);
        result
    }

    /// `GET /api/v1/validate` with the current key, then what the logs intake itself said: a
    /// key it rejected, or requests failing in a row (a wrong `logs_url`, a proxy answering
    /// 4xx, the intake down), is not healthy whatever the validate endpoint thinks.
    async fn health_check(&self) -> Health {
        let validated = crate::health::validate(
            &self.inner.client,
            &self.inner.options.api_base,
            &self.inner.key,
        )
        .await;
        if !matches!(validated, Health::Healthy) {
            return validated;
        }
        if self.inner.key_rejected() {
            return Health::Degraded {
                reason: "the logs intake rejected the current API key".to_owned(),
            };
        }
        match self.inner.stats.failing() {
            Some((n, last)) if n >= FAILING_IN_A_ROW => Health::Degraded {
                reason: format!(
                    "the logs intake failed the last {n} requests ({}); last: {last}",
                    redacted_url(&self.inner.options.logs_endpoint)
                ),
            },
            _ => Health::Healthy,
        }
    }
}

#[cfg(test)]
mod tests {
    use clawdstrike_export::{Exporter, Record};
    use clawdstrike_fakeintake::FakeIntake;
    use clawdstrike_keys::{KeyHolder, SecretString};
    use clawdstrike_schema::{EventType, ResourceType, SecurityEvent, Severity};

    use super::DatadogExporter;
    use crate::config::DatadogConfig;
    use crate::encode::{Codec, Compression, POOL_TESTS, RETURNED};

    /// Once the intake has answered 202, nothing in the HTTP client still holds an
    /// uncompressed body: it goes back to the pool, for the next array to be written into.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[expect(
        clippy::await_holding_lock,
        reason = "the other holders are synchronous tests on their own threads"
    )]
    async fn an_accepted_uncompressed_body_is_given_back() {
        let _pool = POOL_TESTS.lock().unwrap_or_else(|e| e.into_inner());
        RETURNED.lock().unwrap().clear();
        let intake = FakeIntake::builder()
            .with_api_key("key-1")
            .start()
            .await
            .unwrap();
        let url = intake.base_url();
        let yaml = format!("site: datadoghq.eu\nlogs_url: {url}\napi_url: {url}");
        let mut config = DatadogConfig::from_yaml(&yaml, &|_| None).unwrap();
        config.compression = Compression::new(Codec::None, Codec::None.default_level());
        let resolved = config.resolve(&|_| None).unwrap();
        let exporter = DatadogExporter::from_config_with_key(
            "test",
            &resolved,
            KeyHolder::from_static(SecretString::from("key-1")),
        )
        .unwrap();
        let batch: Vec<Record> = (0..50)
            .map(|i| {
                let event = SecurityEvent::builder(EventType::ForbiddenPath)
                    .agent_id("agent-7")
                    .session_id(format!("sess-{i}"))
                    .action("file_access")
                    .denied("forbidden_path", Severity::High, "no")
                    .resource(ResourceType::File, "/etc/shadow")
                    .build()
                    .unwrap();
                Record::new(event)
            })
            .collect();
        let result = exporter.export(&batch).await;
        assert!(result.into_outcomes().iter().all(Option::is_none));
        assert_eq!(intake.unique_event_ids(), 50);
        // The pool was emptied under the lock: the one buffer in it is this request's body.
        assert_eq!(RETURNED.lock().unwrap().len(), 1);
        RETURNED.lock().unwrap().clear();
    }
}
