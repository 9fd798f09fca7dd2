//! A Datadog emulator on loopback (work in progress).
//!
//! # Architecture invariant
//!
//! Depends on none of our crates: it emulates Datadog and knows no Clawdstrike types.
