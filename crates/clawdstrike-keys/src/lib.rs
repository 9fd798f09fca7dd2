//! API-key providers with rotation while running (work in progress).
//!
//! # Architecture invariant
//!
//! Depends on none of our crates; Vault and Kubernetes live behind cargo features.
