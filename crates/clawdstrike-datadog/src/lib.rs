//! The Datadog transport for Clawdstrike security events (work in progress).
//!
//! # Architecture invariant
//!
//! Depends on `clawdstrike-schema`, `clawdstrike-export` and `clawdstrike-keys` only among our
//! crates.

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
pub mod site;
pub mod tags;
