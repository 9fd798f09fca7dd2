//! Tests of `cargo xtask templates`.
