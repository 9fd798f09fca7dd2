//! The exporter framework every Clawdstrike exporter builds on (work in progress).
//!
//! # Architecture invariant
//!
//! Depends on `clawdstrike-schema` only among our crates; knows nothing of Datadog.
