//! Configuration: limits, retention, keys, and the builder that starts the server.

use std::net::SocketAddr;
use std::time::Duration;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

/// What to do with a log request carrying more items than [`LogsLimits::max_items`].
///
/// The spec gives 1,000 items per request as a limit and 413 as the "payload too large"
/// answer, without saying which answer goes with too many items; `Reject` (413) is the
/// default, `Accept` lets a test emulate a lenient intake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TooManyItems {
    /// Answer 413 and keep nothing.
    #[default]
    Reject,
    /// Accept the request anyway.
    Accept,
}

/// Limits of `POST /api/v2/logs`.
///
/// | field | default |
/// |---|---|
/// | `max_uncompressed_bytes` | 5,000,000 (413 above) |
/// | `max_items` | 1,000 (see [`TooManyItems`]) |
/// | `max_item_bytes` | 1,000,000 (kept, flagged `truncated_by_intake`) |
/// | `too_many_items` | [`TooManyItems::Reject`] |
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct LogsLimits {
    /// Largest decoded body.
    pub max_uncompressed_bytes: usize,
    /// Most items per request.
    pub max_items: usize,
    /// Largest item; larger ones are flagged as truncated by the intake.
    pub max_item_bytes: usize,
    /// What to do above `max_items`.
    pub too_many_items: TooManyItems,
}

impl Default for LogsLimits {
    fn default() -> Self {
        LogsLimits {
            max_uncompressed_bytes: 5_000_000,
            max_items: 1_000,
            max_item_bytes: 1_000_000,
            too_many_items: TooManyItems::Reject,
        }
    }
}

/// Limits of a metrics API. The compressed limit applies only to compressed bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct MetricLimits {
    /// Largest compressed body (413 above).
    pub max_compressed_bytes: Option<usize>,
    /// Largest decoded body (413 above).
    pub max_uncompressed_bytes: Option<usize>,
}

impl MetricLimits {
    /// These limits.
    pub fn new(max_compressed_bytes: Option<usize>, max_uncompressed_bytes: Option<usize>) -> Self {
        MetricLimits {
            max_compressed_bytes,
            max_uncompressed_bytes,
        }
    }

    /// `POST /api/v2/series`: 512,000 bytes compressed, 5,242,880 uncompressed.
    pub fn series_v2() -> Self {
        MetricLimits::new(Some(512_000), Some(5_242_880))
    }

    /// `POST /api/v1/series` and `distribution_points`: 3.2 MB compressed.
    pub fn series_v1() -> Self {
        MetricLimits::new(Some(3_200_000), None)
    }
}

/// A rate limit on the configuration APIs: `limit` requests per `period` (a fixed window
/// shared by all of them), 429 above, with `X-RateLimit-*` headers on every answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimit {
    /// Requests per window.
    pub limit: u32,
    /// Window length in seconds.
    pub period_secs: u64,
}

/// Everything the server needs that does not change at run time (keys, faults, rate limit
/// and retention of recorded data do change: see [`crate::FakeIntake`]).
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) logs: LogsLimits,
    pub(crate) series_v2: MetricLimits,
    pub(crate) series_v1: MetricLimits,
    pub(crate) distribution: MetricLimits,
    pub(crate) max_body_bytes: usize,
    pub(crate) max_decoded_bytes: usize,
    pub(crate) keep_items: bool,
    pub(crate) max_kept_items: usize,
    pub(crate) max_kept_requests: usize,
    pub(crate) id_attribute: String,
    pub(crate) expected_event_ids: usize,
    pub(crate) seed: u64,
    pub(crate) shutdown_grace: Duration,
}

/// Builds and starts a [`crate::FakeIntake`].
///
/// | setting | default |
/// |---|---|
/// | `listen` | `127.0.0.1:0` (a free port) |
/// | API keys / application keys | none (every request is refused until one is added) |
/// | `logs_limits` | [`LogsLimits::default`] |
/// | `series_limits` / `series_v1_limits` / `distribution_limits` | [`MetricLimits::series_v2`] / [`MetricLimits::series_v1`] / [`MetricLimits::series_v1`] |
/// | `max_body_bytes` (read cap, every Datadog API endpoint; the control endpoints under `/fakeintake/` read up to 16 MiB, 413 above) | 64 MiB (413 above) |
/// | `max_decoded_bytes` (decompression cap) | 64 MiB (413 above) |
/// | `keep_items` | `true` |
/// | `max_kept_items` | 1,000,000 (oldest evicted first) |
/// | `max_kept_requests` | 100,000 (oldest evicted first) |
/// | `id_attribute` | `event_id` |
/// | `expected_event_ids` (id table sized up front) | 0 (grows as ids arrive) |
/// | `rate_limit` | none |
/// | `seed` (ids) | 0 |
/// | `shutdown_grace` | 1 s |
#[derive(Debug, Clone)]
pub struct FakeIntakeBuilder {
    pub(crate) listen: SocketAddr,
    pub(crate) api_keys: Vec<SecretString>,
    pub(crate) app_keys: Vec<SecretString>,
    pub(crate) rate_limit: Option<RateLimit>,
    pub(crate) settings: Settings,
}

impl Default for FakeIntakeBuilder {
    fn default() -> Self {
        FakeIntakeBuilder {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            api_keys: Vec::new(),
            app_keys: Vec::new(),
            rate_limit: None,
            settings: Settings {
                logs: LogsLimits::default(),
                series_v2: MetricLimits::series_v2(),
                series_v1: MetricLimits::series_v1(),
                distribution: MetricLimits::series_v1(),
                max_body_bytes: 64 << 20,
                max_decoded_bytes: 64 << 20,
                keep_items: true,
                max_kept_items: 1_000_000,
                max_kept_requests: 100_000,
                id_attribute: "event_id".to_owned(),
                expected_event_ids: 0,
                seed: 0,
                shutdown_grace: Duration::from_secs(1),
            },
        }
    }
}

impl FakeIntakeBuilder {
    /// The address to bind (default `127.0.0.1:0`).
    pub fn with_listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// Adds a valid API key.
    pub fn with_api_key(mut self, key: impl Into<SecretString>) -> Self {
        self.api_keys.push(key.into());
        self
    }

    /// Adds a valid application key (configuration and signals APIs).
    pub fn with_app_key(mut self, key: impl Into<SecretString>) -> Self {
        self.app_keys.push(key.into());
        self
    }

    /// Limits of the logs API.
    pub fn with_logs_limits(mut self, limits: LogsLimits) -> Self {
        self.settings.logs = limits;
        self
    }

    /// Limits of `POST /api/v2/series`.
    pub fn with_series_limits(mut self, limits: MetricLimits) -> Self {
        self.settings.series_v2 = limits;
        self
    }

    /// Limits of `POST /api/v1/series`.
    pub fn with_series_v1_limits(mut self, limits: MetricLimits) -> Self {
        self.settings.series_v1 = limits;
        self
    }

    /// Limits of `POST /api/v1/distribution_points`.
    pub fn with_distribution_limits(mut self, limits: MetricLimits) -> Self {
        self.settings.distribution = limits;
        self
    }

    /// Largest body read from the wire on any Datadog API endpoint (413 above). The control
    /// endpoints under `/fakeintake/` have their own cap of 16 MiB (413 above).
    pub fn with_max_body_bytes(mut self, bytes: usize) -> Self {
        self.settings.max_body_bytes = bytes;
        self
    }

    /// Largest body after decompression on any endpoint (413 above).
    pub fn with_max_decoded_bytes(mut self, bytes: usize) -> Self {
        self.settings.max_decoded_bytes = bytes;
        self
    }

    /// Whether decoded log items are kept for [`crate::FakeIntake::log_items`]. Counts (by
    /// `event_id`, totals, bytes) are kept either way; turn this off for benchmarks.
    pub fn with_keep_items(mut self, keep: bool) -> Self {
        self.settings.keep_items = keep;
        self
    }

    /// At most this many items are kept for inspection (the oldest are evicted).
    pub fn with_max_kept_items(mut self, max: usize) -> Self {
        self.settings.max_kept_items = max;
        self
    }

    /// At most this many request records are kept (the oldest are evicted).
    pub fn with_max_kept_requests(mut self, max: usize) -> Self {
        self.settings.max_kept_requests = max;
        self
    }

    /// The top-level attribute items are counted by (default `event_id`).
    pub fn with_id_attribute(mut self, name: impl Into<String>) -> Self {
        self.settings.id_attribute = name.into();
        self
    }

    /// Sizes the table of event ids for about `count` distinct canonical UUIDs (other ids are
    /// kept apart and not sized), at start and at each [`reset`](crate::FakeIntake::reset),
    /// so that a run of that many never grows it (a growth re-inserts every id seen so far
    /// into a table twice the size). For benchmarks, whose intake shares the machine with what
    /// they measure; counting is the same either way. The table is allocated up front: 16
    /// bytes a slot, a power of two of slots at most 3/4 filled, so 21 to 43 bytes per
    /// expected id (a count too large to allocate for leaves the table at its usual start).
    pub fn with_expected_event_ids(mut self, count: usize) -> Self {
        self.settings.expected_event_ids = count;
        self
    }

    /// Rate-limits the configuration APIs.
    pub fn with_rate_limit(mut self, limit: RateLimit) -> Self {
        self.rate_limit = Some(limit);
        self
    }

    /// Seed of the generated object and signal ids.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.settings.seed = seed;
        self
    }

    /// How long shutdown waits for in-flight requests before closing connections.
    pub fn with_shutdown_grace(mut self, grace: Duration) -> Self {
        self.settings.shutdown_grace = grace;
        self
    }

    /// Binds and starts serving on the current tokio runtime.
    ///
    /// # Errors
    ///
    /// [`crate::StartError::Bind`] when the address cannot be bound.
    pub async fn start(self) -> Result<crate::FakeIntake, crate::StartError> {
        crate::server::start(self).await
    }
}
