//! The Clawdstrike `SecurityEvent`, schema 1.0.0, wire-compatible with what Clawdstrike's
//! daemon (`hushd`) emits.
//!
//! This crate is what every exporter team (Datadog, Splunk, Elastic, ...) depends on to read,
//! validate and write events: the types with their exact wire names, validation with errors
//! that name the field, a builder, a streaming NDJSON decoder, and (behind the `proptest`
//! feature) strategies that generate valid events for property tests.
//!
//! ```
//! use clawdstrike_schema::{SecurityEvent, Severity};
//!
//! let line = r#"{"schema_version":"1.0.0","event_id":"0194f3c2-7b1e-7c3a-9d2e-5f1a2b3c4d5e",
//!   "event_type":"forbidden_path","event_category":"file","timestamp":"2026-02-07T12:00:00.123456789Z",
//!   "agent":{"id":"agent-7","name":"hushd","version":"0.1.0","type":"clawdstrike"},
//!   "session":{"id":"sess-123"},"outcome":"failure","action":"file_access",
//!   "decision":{"allowed":false,"guard":"forbidden_path","severity":"critical","reason":"no"},
//!   "resource":{"type":"file","name":"/home/user/.ssh/id_rsa"}}"#;
//! let event = SecurityEvent::from_json(line)?;
//! assert!(event.decision.severity >= Severity::High);
//!
//! let bad = line.replace("\"critical\"", "\"apocalyptic\"");
//! let err = SecurityEvent::from_json(&bad).unwrap_err();
//! assert_eq!(err.fields(), ["decision.severity"]);
//! # Ok::<(), clawdstrike_schema::DecodeError>(())
//! ```
//!
//! # Compatibility decisions
//!
//! - **Unknown fields** are accepted and ignored, so a newer producer that adds a field never
//!   breaks decoding. They are not carried through: re-encoding writes schema 1.0.0 fields only.
//! - **Unknown enum values** (a new `event_type`, an unheard-of `severity`) are *rejected loudly*:
//!   decoding fails with [`DecodeError::Field`] naming the field and listing the values this
//!   version knows, and the NDJSON decoder hands back the raw line ([`RejectedLine`]) so the
//!   caller keeps it (rejects file, dead letters). We reject rather than pass the value through
//!   because severity drives filtering and alerting (an unordered severity cannot be compared),
//!   and because monitors and detection rules are written against the known values: an event
//!   with an unknown type would be shipped but silently match nothing. Rejected lines are kept
//!   byte for byte, so nothing is lost and they can be replayed after an upgrade.
//! - **`schema_version`** must be of major version 1: `1.0.0`, or a later `1.x`, which may only
//!   add fields and values (both handled above). Any other value (`2.0.0`, `banana`) is
//!   rejected loudly like an unknown enum value ([`Problem::UnsupportedVersion`]): a new major
//!   version may change what a field means, and shipping it as 1.0.0 would mislabel it. The
//!   version is shipped as the producer wrote it.
//! - **A UTF-8 byte order mark** at the very start of NDJSON input (as some Windows editors
//!   write) is skipped.
//! - **Normalisations** on re-encoding (the only differences between input and output JSON):
//!   a missing `threat` is written `{}`, a missing `metadata` `{}`, missing `labels` `{}`;
//!   timestamps are written in UTC with a 0-, 3-, 6- or 9-digit fraction (see [`Timestamp`]);
//!   unknown fields are dropped.
//!
//! # Features
//!
//! | feature | what it adds |
//! |---|---|
//! | `proptest` | [`strategies`]: `proptest` strategies for valid, nasty events |
//!
//! # Architecture invariant
//!
//! This crate depends on nothing else of ours and does no I/O of its own: no tokio, no network,
//! no HTTP. The NDJSON decoder reads from whatever [`std::io::BufRead`] the caller gives it.
//! The workspace's `tidy` test enforces the first half.

mod builder;
mod decode;
mod event;
mod labels;
mod ndjson;
mod timestamp;
mod validate;

#[cfg(feature = "proptest")]
pub mod strategies;

pub use builder::SecurityEventBuilder;
pub use decode::{DecodeError, decode_event};
pub use event::{
    AgentInfo, Decision, EventCategory, EventType, IndicatorType, Outcome, ResourceInfo,
    ResourceType, SCHEMA_VERSION, SecurityEvent, SessionInfo, Severity, ThreatIndicator,
    ThreatInfo,
};
pub use labels::Labels;
pub use ndjson::{
    DEFAULT_MAX_LINE_BYTES, DecodedEvent, LINE_SLACK, NdjsonOptions, NdjsonReader, NdjsonRecord,
    RejectedLine, UTF8_BOM, line_content,
};
pub use timestamp::{Timestamp, TimestampError};
pub use uuid::Uuid;
pub use validate::{FieldIssue, Problem, ValidationError};
