//! `clawdstrike-fakeintake`: the Datadog emulator as a program.
//!
//! ```text
//! clawdstrike-fakeintake --listen 127.0.0.1:8080 --api-key KEY [--api-key KEY2] [--app-key KEY]
//! ```
//!
//! Prints `fakeintake listening on http://ADDR` on stdout once bound, then serves until
//! SIGINT or SIGTERM. The admin endpoint is on the same port under `/fakeintake/`.

use std::net::SocketAddr;

use clap::Parser;
use clawdstrike_fakeintake::FakeIntake;
use secrecy::SecretString;

/// A Datadog intake emulator on loopback, with fault injection.
#[derive(Parser)]
#[command(name = "clawdstrike-fakeintake", version, about)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// A valid API key (repeatable).
    #[arg(long = "api-key", value_name = "KEY")]
    api_keys: Vec<String>,
    /// A valid application key (repeatable).
    #[arg(long = "app-key", value_name = "KEY")]
    app_keys: Vec<String>,
    /// Do not keep decoded log items (counts still work): for benchmarks.
    #[arg(long)]
    no_keep_items: bool,
    /// Keep at most this many log items for inspection.
    #[arg(long, default_value_t = 1_000_000)]
    max_kept_items: usize,
}

impl std::fmt::Debug for Args {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Args")
            .field("listen", &self.listen)
            .field("api_keys", &self.api_keys.len())
            .field("app_keys", &self.app_keys.len())
            .finish_non_exhaustive()
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let mut builder = FakeIntake::builder()
        .with_listen(args.listen)
        .with_keep_items(!args.no_keep_items)
        .with_max_kept_items(args.max_kept_items);
    for key in args.api_keys {
        builder = builder.with_api_key(SecretString::from(key));
    }
    for key in args.app_keys {
        builder = builder.with_app_key(SecretString::from(key));
    }
    let intake = match builder.start().await {
        Ok(i) => i,
        Err(e) => {
            eprintln!("clawdstrike-fakeintake: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    println!("fakeintake listening on {}", intake.base_url());
    wait_for_signal().await;
    intake.shutdown().await;
    std::process::ExitCode::SUCCESS
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}
