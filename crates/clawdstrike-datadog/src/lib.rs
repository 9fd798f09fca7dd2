//! The Datadog transport for Clawdstrike security events (work in progress).
//!
//! # Architecture invariant
//!
//! Depends on `clawdstrike-schema`, `clawdstrike-export` and `clawdstrike-keys` only among our crates.
