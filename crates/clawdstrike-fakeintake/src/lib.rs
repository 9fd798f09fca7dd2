//! A Datadog emulator on loopback, with fault injection, for tests, demos and benchmarks.
//!
//! It serves Datadog's paths on one port: the logs intake (`POST /api/v2/logs`), the key
//! check (`GET /api/v1/validate`), the metrics APIs (`POST /api/v2/series`,
//! `/api/v1/series`, `/api/v1/distribution_points`), dashboards, monitors (with
//! `validate`), Cloud SIEM detection rules (with `validation`) and a minimal Security
//! Signals API. It checks keys that can change at run time, decodes gzip, deflate and zstd,
//! enforces Datadog's limits, records everything for inspection (credentials redacted), and
//! lets a test script faults: a status with or without `Retry-After`, a delay, a connection
//! reset, a stall. The same controls are on an admin endpoint (`/fakeintake/...`) for tests
//! that are not written in Rust, and the crate ships a binary, `clawdstrike-fakeintake`.
//!
//! ```
//! use std::time::Duration;
//! use clawdstrike_fakeintake::{Endpoint, FakeIntake, FaultAction};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let intake = FakeIntake::start("api-key", "app-key").await?;
//! // The next request to the logs intake gets a 503 with Retry-After: 1.
//! intake.fail_next(Endpoint::Logs, 1, FaultAction::status_with_retry_after(503, 1));
//!
//! // Point any client at `base_url()` (it keeps Datadog's paths). Here, a raw HTTP/1.1 request.
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//! let body = r#"[{"message":"hi","event_id":"e-1"}]"#;
//! for _ in 0..2 {
//!     let mut s = tokio::net::TcpStream::connect(intake.local_addr()).await?;
//!     let req = format!(
//!         "POST /api/v2/logs HTTP/1.1\r\nhost: x\r\ndd-api-key: api-key\r\n\
//!          content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
//!         body.len()
//!     );
//!     s.write_all(req.as_bytes()).await?;
//!     let mut answer = String::new();
//!     s.read_to_string(&mut answer).await?;
//! }
//!
//! let stats = intake.wait_for_items(1, Duration::from_secs(5)).await?;
//! assert_eq!(stats.responses_by_status.get(&503), Some(&1));
//! assert_eq!(intake.unique_event_ids(), 1);
//! assert!(intake.duplicates().is_empty());
//! assert_eq!(intake.log_items()[0].value["message"], "hi");
//! assert_eq!(intake.requests()[0].header("dd-api-key"), Some("<redacted>"));
//! intake.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! # Features
//!
//! No cargo features: everything below is always there.
//!
//! | area | what it does |
//! |---|---|
//! | logs | `DD-API-KEY` (401 missing, 403 invalid); identity, `gzip`, `deflate` (zlib or raw), `zstd`/`zstd1`; 5,000,000 bytes uncompressed and 1,000 items (413), items over 1,000,000 bytes kept and flagged `truncated_by_intake`; 400 with a reason for a body that is not a JSON array or object; `202 {}` |
//! | validate | `200 {"valid":true}` / `403 {"errors":["Forbidden"]}` |
//! | metrics | v2 series (512,000 B compressed, 5,242,880 B uncompressed), v1 series (3.2 MB compressed), distribution points; decoded series with [`FakeIntake::metric_sum`] |
//! | configuration | dashboards, monitors (+ `validate`), detection rules (+ `validation`, paging): CRUD with Datadog-shaped ids and timestamps; API **and** application key; optional rate limit with `X-RateLimit-*` headers |
//! | signals | list and search (`filter[query]`, `filter[from]`, `filter[to]`, `sort`, `page[limit]`, `page[cursor]`), get, `PATCH .../state` |
//! | faults | a queue consumed in order per endpoint (status ± `Retry-After` and body, delay, reset, stall, 429 with rate-limit headers) and a seeded random mode |
//! | inspection | items (optionally capped or off), request records with keys redacted, counts by `event_id`, duplicates, byte totals, [`FakeIntake::wait_until`] on a watch channel |
//! | admin | `/fakeintake/stats`, `/reset`, `/faults`, `/faults/random`, `/release`, `/keys`, `/logs`, `/requests`, `/series`, `/duplicates`, `/signals`, `/rate_limit` |
//!
//! The limits are configurable ([`LogsLimits`], [`MetricLimits`]); the spec gives 1,000
//! items per request without saying which answer goes with more, so [`TooManyItems`]
//! chooses (413 by default).
//!
//! # Architecture invariant
//!
//! Depends on none of our crates: it emulates Datadog and knows no Clawdstrike types. Items
//! are counted by a configurable top-level attribute (`event_id` by default), nothing more.
//! The workspace's `tidy` test enforces the dependency half of this.

mod admin;
mod codec;
mod config;
mod faults;
mod http;
mod id_counts;
mod ids;
mod intake;
mod logs;
mod metrics;
mod model;
mod objects;
mod scan;
mod server;
mod signals;
mod state;

pub use config::{FakeIntakeBuilder, LogsLimits, MetricLimits, RateLimit, TooManyItems};
pub use faults::{Fault, FaultAction, FaultTarget, RandomFault, RandomFaults};
pub use intake::{FakeIntake, StartError, WaitTimeout};
pub use model::{
    Endpoint, KeyStatus, LogItem, MetricApi, MetricPoint, MetricSeries, ObjectKind, RequestRecord,
    Stats,
};
pub use objects::{DOCUMENTED_WIDGET_TYPES, MORE_WIDGET_TYPES};
pub use signals::SignalSeed;
