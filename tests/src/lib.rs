//! Helpers for the end-to-end tests in `tests/tests/`.
//!
//! # Architecture invariant
//!
//! Nothing depends on this crate; it may depend on any of ours.

use std::path::PathBuf;

/// The `shared/` directory beside the repository (fixtures, specs), or `$CLAWDSTRIKE_SHARED`.
///
/// # Panics
/// When neither exists: the end-to-end tests need the shared fixtures.
pub fn shared_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CLAWDSTRIKE_SHARED") {
        return PathBuf::from(dir);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared");
    assert!(
        root.is_dir(),
        "shared fixtures not found at {}; set CLAWDSTRIKE_SHARED",
        root.display()
    );
    root
}
