//! `clawdstrike-dd`: the forwarder that ships Clawdstrike security events to Datadog.
//!
//! # Architecture invariant
//!
//! The binary may depend on any of our crates; nothing depends on it.

fn main() {
    eprintln!("clawdstrike-dd: not yet implemented");
    std::process::exit(2);
}
