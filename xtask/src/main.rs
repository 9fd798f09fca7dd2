//! `cargo xtask`: the repository's own automation (matklad's xtask pattern).
//!
//! - `cargo xtask tidy`: checks the crate layering (also run by `cargo test` as a unit test).
//! - `cargo xtask templates [check|publish|pull|diff]`: Datadog dashboards, monitors and
//!   detection rules as code (`templates/`); `check` also runs as unit tests.
//!
//! # Architecture invariant
//!
//! Nothing depends on `xtask`; it may depend on any of our crates.

/// The forwarder's allocator (see `clawdstrike-dd`), so that the benchmark measures what users run.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod bench;
mod templates;
mod tidy;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The workspace root (the directory holding the top-level `Cargo.toml`).
pub(crate) fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

const USAGE: &str = "usage: cargo xtask <command>

commands:
  tidy        check the crate layering against the architecture table
  templates   check the Datadog templates (default), or publish / pull / diff them
              (`cargo xtask templates --help`)
  bench       end-to-end benchmark against the fake intake (re-runs itself in release;
              `cargo xtask bench --help`)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("tidy") => match tidy::check_workspace() {
            Ok(()) => {
                println!("tidy: layering ok");
                ExitCode::SUCCESS
            }
            Err(problems) => {
                eprintln!("tidy: {problems}");
                ExitCode::FAILURE
            }
        },
        Some("templates") => templates::run(&args[1..]),
        Some("bench") => bench::run(&args[1..]),
        Some("help" | "--help" | "-h") | None => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!("unknown command `{other}`\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}
