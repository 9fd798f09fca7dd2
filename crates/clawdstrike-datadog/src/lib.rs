//! The Datadog transport for Clawdstrike security events: log formatting, an intake client for
//! every Datadog site, compression, the intake's limits, metrics, APM correlation and a health
//! check — an [`Exporter`](clawdstrike_export::Exporter) for the `clawdstrike-export` pipeline.
//!
//! ```
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use clawdstrike_datadog::config::DatadogConfig;
//! use clawdstrike_datadog::exporter::DatadogExporter;
//! use clawdstrike_export::{Pipeline, Record};
//! use clawdstrike_fakeintake::FakeIntake;
//! use clawdstrike_schema::{EventType, ResourceType, SecurityEvent, Severity};
//!
//! // A Datadog emulator on loopback stands in for `https://http-intake.logs.<site>`.
//! let intake = FakeIntake::start("0123456789abcdef0123456789abcdef", "app-key").await?;
//! let env = |name: &str| (name == "DD_API_KEY").then(|| "0123456789abcdef0123456789abcdef".to_owned());
//! let yaml = format!(
//!     "api_key: ${{DD_API_KEY}}\nsite: datadoghq.eu\nlogs_url: {url}\napi_url: {url}\nlogs: {{ tags: [team:security] }}",
//!     url = intake.base_url()
//! );
//! let resolved = DatadogConfig::from_yaml(&yaml, &env)?.resolve(&env)?;
//! let exporter = DatadogExporter::from_config("datadog_eu", &resolved).await?;
//! let pipeline = Pipeline::builder().with_exporter(Arc::new(exporter), resolved.pipeline.clone()).build()?;
//!
//! let event = SecurityEvent::builder(EventType::ForbiddenPath)
//!     .agent_id("agent-7")
//!     .session_id("sess-123")
//!     .action("file_access")
//!     .denied("forbidden_path", Severity::Critical, "Access to forbidden path: /etc/shadow")
//!     .resource(ResourceType::File, "/etc/shadow")
//!     .build()?;
//! pipeline.submit(Record::new(event)).await?;
//! let reports = pipeline.shutdown(Duration::from_secs(10)).await;
//! assert_eq!(reports[0].delivered, 1);
//!
//! let item = &intake.log_items()[0].value;
//! assert_eq!(item["message"], "[forbidden_path] BLOCKED: Access to forbidden path: /etc/shadow");
//! assert_eq!(item["status"], "critical");
//! assert_eq!(item["security"]["guard"], "forbidden_path");
//! # Ok(())
//! # }
//! ```
//!
//! # What a log item looks like
//!
//! `message` is `[guard] BLOCKED: reason` (or `ALLOWED`); `status` maps severity (info and low
//! → `info`, medium → `warn`, high → `error`, critical → `critical`); `ddtags` carries
//! `env`, `event_type`, `guard`, `severity`, `outcome`, `allowed`, `tenant`, `resource_type`,
//! `version`, configured tags and the event's labels, normalised to Datadog's tag rules (a
//! label can neither forge a second tag with a comma nor override a reserved key: it is
//! renamed `label_<key>`). Attributes: `security.*`, `agent.*`, `session.*`, `resource.*`,
//! `threat.*`, `metadata` (capped), `labels`, Datadog's standard attributes (`evt.*`, `usr.id`,
//! `network.destination.*`, `file.path`) and, when a trace context is known, `dd.trace_id`,
//! `dd.span_id` and `otel.trace_id`. [`catalogue`] lists every name; templates are checked
//! against it.
//!
//! # Behaviour at the intake
//!
//! | intake answers | what happens |
//! |---|---|
//! | 202 | delivered; security metrics count the events |
//! | 408, 429, 5xx, network error | retryable: the framework retries with backoff, honouring `Retry-After`, else `X-RateLimit-Reset` (capped) |
//! | 3xx, 404, 405, 407, 415, … (a proxy or a wrong URL, never the intake itself) | retryable within the retry budget, so a fix in time loses nothing; redirects are never followed (a followed 302 would count a bodyless GET's 200 as delivered, and carry the key to another host); the reason names the redirect's target without its query |
//! | 400, 422 | dead-lettered with the server's reason (the API key blanked out should a proxy have echoed it) |
//! | 413 | split in halves and resent, down to one event (then dead-lettered) |
//! | 401, 403 | the key holder refreshes the key; retried once if it changed, else dead-lettered, health degraded, and no further requests until the key changes (one probe a minute) |
//!
//! Requests hold at most 1,000 items and 5,000,000 bytes uncompressed; items over 1 MB are
//! truncated by us, visibly (`truncated: true`), never silently by Datadog.
//!
//! # Features
//!
//! | feature | what it adds |
//! |---|---|
//! | `opentelemetry` | `apm::current_otel_trace` and `apm::record_in_current_span`: capture the current OpenTelemetry span at submit time |
//!
//! # Architecture invariant
//!
//! Depends on `clawdstrike-schema`, `clawdstrike-export` and `clawdstrike-keys` only among our
//! crates. All of the workspace's Datadog HTTP goes through this crate (reqwest is confined to
//! it and the fake intake by `deny.toml`).

pub mod apm;
pub mod catalogue;
pub mod classify;
pub mod config;
pub mod config_api;
pub mod encode;
pub mod exporter;
pub mod format;
pub mod health;
pub mod metrics;
pub mod signals;
pub mod site;
pub mod tags;
