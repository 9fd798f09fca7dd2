//! `clawdstrike-dd`: the forwarder that ships Clawdstrike security events to Datadog.
//!
//! ```text
//! clawdstrike-dd demo                                    # no account needed
//! clawdstrike-dd ship [--config F] events.ndjson ...     # backfill files (`-` = stdin)
//! clawdstrike-dd ship --follow /var/log/hushd/audit.ndjson
//! clawdstrike-dd ship --listen 127.0.0.1:8126            # Clawdstrike's webhook exporter
//! clawdstrike-dd check [--config F]
//! clawdstrike-dd signals list --since 1h --query 'source:clawdstrike'
//! clawdstrike-dd signals triage <ID> --state archived --reason false_positive
//! clawdstrike-dd fakeintake --listen 127.0.0.1:8080 --api-key KEY
//! ```
//!
//! # Exit codes
//!
//! | code | meaning |
//! |---|---|
//! | 0 | done; every event was delivered (bad input lines are in the rejects file) |
//! | 1 | a runtime failure: unreadable input, listener cannot bind, the disk buffer refused an event (a failed write or fsync), a bad line could not be written to the rejects file, `check` found a problem, a signals call failed |
//! | 2 | usage or configuration error (the message names the key and the file), a key that cannot be loaded (a store that cannot be reached is 1: a restart may succeed), or a follow checkpoint that cannot be parsed |
//! | 3 | shipped, but events were left undelivered: dead-lettered, dropped, left behind at the shutdown deadline, kept in the disk buffer for the next start, found in the disk buffer but no longer readable as events, or input not read to its end because of a signal |
//!
//! # Architecture invariant
//!
//! The binary may depend on any of our crates; nothing depends on it. It does no HTTP to
//! Datadog itself: every Datadog request goes through `clawdstrike-datadog`.

/// mimalloc rather than glibc's malloc: events are allocated by the reader thread and freed by
/// the pipeline's workers, a pattern under which glibc keeps per-thread arenas fragmented.
/// Measured with `cargo xtask bench` (which uses the same allocator): lower peak RSS and less
/// CPU per event than the system allocator. Transparent huge pages are off (`no_thp`): with
/// them, mimalloc's resident memory grew by tens of MiB for no speed gain.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod backfill;
mod check;
mod config;
mod demo;
mod follow;
mod forwarder;
mod http;
mod rejects;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use clawdstrike_datadog::config::process_env;
use clawdstrike_datadog::signals::{ListQuery, SignalsClient};
use clawdstrike_keys::{KeyHolder, RefreshOptions};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::watch;

use crate::config::Settings;
use crate::forwarder::{Forwarder, Keys};

/// Exit code: everything delivered.
const EXIT_OK: u8 = 0;
/// Exit code: runtime failure.
const EXIT_FAILURE: u8 = 1;
/// Exit code: usage or configuration error.
const EXIT_CONFIG: u8 = 2;
/// Exit code: events left undelivered.
const EXIT_UNDELIVERED: u8 = 3;

/// Ships Clawdstrike security events to Datadog.
#[derive(Debug, Parser)]
#[command(name = "clawdstrike-dd", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Ship events from NDJSON files, stdin (`-`), a followed file, or an HTTP listener.
    Ship(ShipArgs),
    /// Validate the configuration, resolve keys (never printed), check each exporter.
    Check(ConfigArg),
    /// Ship the bundled sample events to an embedded fake Datadog and show what arrived.
    Demo,
    /// Datadog Security Signals raised on our events (needs the application key).
    #[command(subcommand)]
    Signals(SignalsCommand),
    /// Run the Datadog emulator (for testing your own setup).
    Fakeintake(FakeIntakeArgs),
}

#[derive(Debug, Args)]
struct ConfigArg {
    /// YAML configuration file (default: the `DD_*` environment alone).
    #[arg(long, short, env = "CLAWDSTRIKE_DD_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct ShipArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// NDJSON files to ship, in order; `-` reads stdin.
    #[arg(value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Follow the one FILE like `tail -F` (rotation and truncation survive), with a checkpoint.
    #[arg(long)]
    follow: bool,
    /// Checkpoint file for --follow (default: FILE.clawdstrike-dd.checkpoint).
    #[arg(long, value_name = "PATH", requires = "follow")]
    checkpoint: Option<PathBuf>,
    /// With --follow: how long a file renamed away is still read after its last write, for
    /// its writer to reopen the path (lines written to it later are counted, not shipped).
    #[arg(long, value_name = "MS", requires = "follow", default_value_t = follow::ROTATE_WAIT.as_millis() as u64, value_parser = clap::value_parser!(u64).range(0..=3_600_000))]
    rotate_wait_ms: u64,
    /// Accept events over HTTP on this address (overrides `input.http.listen`).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Append bad lines here (overrides `rejects`; default rejects.ndjson).
    #[arg(long, value_name = "PATH")]
    rejects: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum SignalsCommand {
    /// List recent signals.
    List(SignalsListArgs),
    /// Change a signal's triage state.
    Triage(SignalsTriageArgs),
}

#[derive(Debug, Args)]
struct SignalsTarget {
    #[command(flatten)]
    config: ConfigArg,
    /// Which exporter's site and keys to use (default: the first).
    #[arg(long, value_name = "NAME")]
    exporter: Option<String>,
}

#[derive(Debug, Args)]
struct SignalsListArgs {
    #[command(flatten)]
    target: SignalsTarget,
    /// How far back: `15m`, `1h`, `7d` (default 1h).
    #[arg(long, default_value = "1h")]
    since: String,
    /// Datadog search query (default `source:clawdstrike`; `*` for every signal).
    #[arg(long, default_value = "source:clawdstrike")]
    query: String,
    /// At most this many signals.
    #[arg(long, default_value_t = 50)]
    limit: u32,
    /// Print the raw JSON objects, one per line.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct SignalsTriageArgs {
    #[command(flatten)]
    target: SignalsTarget,
    /// The signal's id.
    id: String,
    /// New state.
    #[arg(long, value_parser = ["open", "under_review", "archived"])]
    state: String,
    /// Archive reason (with `archived`): false_positive, testing_or_maintenance, true_positive_benign, ...
    #[arg(long)]
    reason: Option<String>,
    /// Archive comment.
    #[arg(long)]
    comment: Option<String>,
}

#[derive(Debug, Args)]
struct FakeIntakeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// A valid API key (repeatable; default: a random one, printed).
    #[arg(long = "api-key", value_name = "KEY")]
    api_keys: Vec<String>,
    /// A valid application key (repeatable).
    #[arg(long = "app-key", value_name = "KEY")]
    app_keys: Vec<String>,
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,clawdstrike_dd=info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("clawdstrike-dd: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let code = runtime.block_on(run(cli));
    // A write still stuck in a blocking task after the report (a dead letter on a hung mount)
    // must not keep the process from exiting with its code: the runtime is not waited for.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    ExitCode::from(code)
}

async fn run(cli: Cli) -> u8 {
    match cli.command {
        Command::Demo => match demo::run().await {
            Ok(()) => EXIT_OK,
            Err(e) => {
                eprintln!("clawdstrike-dd demo: {e}");
                EXIT_FAILURE
            }
        },
        Command::Check(args) => match load(args.config.as_deref()) {
            Ok(settings) => {
                if check::run(&settings).await {
                    EXIT_OK
                } else {
                    EXIT_FAILURE
                }
            }
            Err(code) => code,
        },
        Command::Ship(args) => ship(args).await,
        Command::Signals(cmd) => signals(cmd).await,
        Command::Fakeintake(args) => fakeintake(args).await,
    }
}

/// Loads the configuration or prints why not (exit 2).
fn load(path: Option<&Path>) -> Result<Settings, u8> {
    config::load(path, &process_env).map_err(|e| {
        match path {
            Some(path) => eprintln!("clawdstrike-dd: {}: {e}", path.display()),
            None => eprintln!("clawdstrike-dd: {e}"),
        }
        EXIT_CONFIG
    })
}

/// Turns SIGTERM/SIGINT into `true` on the returned channel; a second signal exits at once.
fn watch_signals() -> (watch::Sender<bool>, watch::Receiver<bool>) {
    let (tx, rx) = watch::channel(false);
    // The caller's sender keeps the channel open if the handlers cannot be installed, and
    // lets it stop the inputs itself.
    let stopper = tx.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot install signal handlers");
            return;
        };
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        tracing::info!("signal received: draining (a second signal exits at once)");
        let _ = tx.send(true);
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        eprintln!("clawdstrike-dd: second signal, exiting without draining");
        std::process::exit(i32::from(EXIT_UNDELIVERED));
    });
    (stopper, rx)
}

async fn ship(args: ShipArgs) -> u8 {
    let mut settings = match load(args.config.config.as_deref()) {
        Ok(s) => s,
        Err(code) => return code,
    };
    if let Some(r) = args.rejects {
        settings.file.rejects = Some(r);
    }
    // A backfill (files, no --follow) ends with its files: the configuration's listener, meant
    // for the daemon, is not started (it would keep the run going, or collide with the
    // daemon's port); --listen still asks for one.
    let backfill = !args.files.is_empty() && !args.follow;
    let listen = args
        .listen
        .or(settings.file.input.http.listen.filter(|_| !backfill));
    if args.files.is_empty() && listen.is_none() {
        eprintln!(
            "clawdstrike-dd: nothing to ship: give NDJSON files (`-` for stdin), --follow FILE, or --listen ADDR"
        );
        return EXIT_CONFIG;
    }
    if args.follow && (args.files.len() != 1 || args.files[0].as_os_str() == "-") {
        eprintln!("clawdstrike-dd: --follow takes exactly one file (not stdin)");
        return EXIT_CONFIG;
    }
    let token = settings
        .file
        .input
        .http
        .token
        .clone()
        .or_else(|| process_env(config::TOKEN_ENV).map(SecretString::from))
        // A token read from a file (a Kubernetes Secret) often ends in a newline, which no
        // client sends: compared untrimmed, every request would be refused.
        .map(|t| SecretString::from(t.expose_secret().trim()));
    if listen.is_some()
        && token
            .as_ref()
            .is_some_and(|t| t.expose_secret().trim().is_empty())
    {
        eprintln!(
            "clawdstrike-dd: configuration key `input.http.token`: the bearer token is empty (every request would be refused); set a value or leave it out"
        );
        return EXIT_CONFIG;
    }
    if let Some(addr) = listen
        && token.is_none()
        && !addr.ip().is_loopback()
    {
        eprintln!(
            "clawdstrike-dd: configuration key `input.http.token`: a bearer token is required when listening on {addr} (not loopback); set it or {}",
            config::TOKEN_ENV
        );
        return EXIT_CONFIG;
    }
    let max_line_bytes = settings
        .file
        .input
        .max_line_bytes
        .unwrap_or(clawdstrike_schema::DEFAULT_MAX_LINE_BYTES);
    let rejects = Arc::new(rejects::Rejects::new(&settings.rejects_path()));
    let follow = if args.follow {
        let file = &args.files[0];
        let checkpoint = args.checkpoint.clone().unwrap_or_else(|| {
            let mut p = file.clone().into_os_string();
            p.push(".clawdstrike-dd.checkpoint");
            PathBuf::from(p)
        });
        let rotate_wait = std::time::Duration::from_millis(args.rotate_wait_ms);
        match follow::Follow::new(file, &checkpoint, settings.exporters.len(), rotate_wait) {
            Ok(f) => Some(f),
            Err(e) => {
                eprintln!("clawdstrike-dd: {}", e.message);
                // A checkpoint that cannot be parsed needs a human (restarting would fail
                // the same way); one that cannot be read right now may read at a restart.
                return if e.transient {
                    EXIT_FAILURE
                } else {
                    EXIT_CONFIG
                };
            }
        }
    } else {
        None
    };
    let listener = match listen {
        Some(addr) => match http::bind(addr).await {
            Ok(l) => {
                let local = l
                    .local_addr()
                    .map_or_else(|_| addr.to_string(), |a| a.to_string());
                eprintln!("clawdstrike-dd: listening on http://{local}");
                Some(l)
            }
            Err(e) => {
                eprintln!("clawdstrike-dd: cannot listen on {addr}: {e}");
                return EXIT_FAILURE;
            }
        },
        None => None,
    };
    let (stopper, stop) = watch_signals();
    let forwarder = match Forwarder::start(
        &settings,
        Keys::Configured,
        follow.as_ref().map(follow::Follow::hook),
    )
    .await
    {
        Ok(f) => f,
        Err(e) => {
            eprintln!("clawdstrike-dd: cannot start: {e}");
            return if e.transient {
                EXIT_FAILURE
            } else {
                EXIT_CONFIG
            };
        }
    };
    let sink = forwarder.sink.clone();
    let mut incomplete = false;
    let mut failed = false;

    let http_task = listener.map(|l| {
        let options = http::HttpOptions {
            token,
            max_body_bytes: settings
                .file
                .input
                .http
                .max_body_bytes
                .unwrap_or(config::DEFAULT_MAX_BODY_BYTES),
            read_timeout: std::time::Duration::from_millis(
                settings
                    .file
                    .input
                    .http
                    .read_timeout_ms
                    .unwrap_or(config::DEFAULT_READ_TIMEOUT_MS),
            ),
            max_connections: settings
                .file
                .input
                .http
                .max_connections
                .unwrap_or(config::DEFAULT_MAX_CONNECTIONS),
        };
        let sink = sink.clone();
        let rejects = Arc::clone(&rejects);
        let mut stop = stop.clone();
        tokio::spawn(async move { http::serve(l, options, sink, rejects, &mut stop).await })
    });

    if let Some(f) = &follow {
        let mut stop = stop.clone();
        let report = f.run(max_line_bytes, &sink, &rejects, &mut stop).await;
        if report.refused > 0 {
            eprintln!(
                "clawdstrike-dd: {} lines were read but not taken (refused, or their reject could not be written: see the log); following stopped at {}, and a restart reads them again from the checkpoint",
                report.refused,
                report.stopped_at.as_deref().unwrap_or("?")
            );
            failed = true;
            // The other inputs (the HTTP listener) stop too, so the process ends and says so.
            stopper.send_replace(true);
        }
        if report.reader_failed {
            eprintln!(
                "clawdstrike-dd: the file reader failed (see the log); following stopped, and a restart reads on from the checkpoint"
            );
            failed = true;
            stopper.send_replace(true);
        }
        eprintln!(
            "clawdstrike-dd: followed {}: {} events submitted, {} lines rejected",
            args.files[0].display(),
            report.submitted,
            report.rejected
        );
        if report.late_bytes > 0 {
            eprintln!(
                "clawdstrike-dd: {} lines ({} bytes) were written to rotated files after they were finished, and not shipped (see the log; raise --rotate-wait-ms)",
                report.late_lines, report.late_bytes
            );
        }
    } else if !args.files.is_empty() {
        let mut stop_rx = stop.clone();
        let report =
            backfill::run(&args.files, max_line_bytes, &sink, &rejects, &mut stop_rx).await;
        for e in &report.errors {
            eprintln!("clawdstrike-dd: {e}");
        }
        failed |= !report.errors.is_empty();
        incomplete |= report.interrupted;
        if report.refused > 0 {
            eprintln!(
                "clawdstrike-dd: {} events were read but not taken (refused: see the log); they were not shipped; {} of them are in the rejects file {} with why",
                report.refused,
                report.refused_kept,
                rejects.path().display()
            );
            failed = true;
        }
        eprintln!(
            "clawdstrike-dd: read {} events, rejected {} lines{}",
            report.submitted,
            report.rejected,
            if report.interrupted {
                " (interrupted before the end of the input)"
            } else {
                ""
            }
        );
    }
    if let Some(task) = http_task {
        let _ = task.await;
    }
    let outcome = forwarder.shutdown(settings.shutdown_timeout()).await;
    if let Some(f) = &follow {
        f.finish(outcome.buffer_fsync_failed(), &rejects);
    }
    outcome.print();
    if rejects.count() > 0 {
        eprintln!(
            "clawdstrike-dd: {} entries (bad lines, events not taken) written to {}",
            rejects.count(),
            rejects.path().display()
        );
    }
    if rejects.failed() > 0 {
        eprintln!(
            "clawdstrike-dd: {} bad lines could not be written (or fsynced) to {} (see the log)",
            rejects.failed(),
            rejects.path().display()
        );
        failed = true;
    }
    if outcome.undelivered() > 0 || outcome.kept_for_next_start() > 0 || incomplete {
        EXIT_UNDELIVERED
    } else if failed {
        EXIT_FAILURE
    } else {
        EXIT_OK
    }
}

async fn signals_client(target: &SignalsTarget) -> Result<SignalsClient, u8> {
    let settings = load(target.config.config.as_deref())?;
    let entry = match &target.exporter {
        Some(name) => settings.exporters.iter().find(|e| &e.name == name),
        None => settings.exporters.first(),
    };
    let Some(entry) = entry else {
        eprintln!(
            "clawdstrike-dd: no enabled exporter named `{}`",
            target.exporter.as_deref().unwrap_or_default()
        );
        return Err(EXIT_CONFIG);
    };
    let r = &entry.resolved;
    let Some(app_source) = r.app_key.clone() else {
        eprintln!(
            "clawdstrike-dd: configuration key `exporters.{}.app_key`: the Security Signals API needs an application key; set it or DD_APP_KEY",
            entry.name
        );
        return Err(EXIT_CONFIG);
    };
    let key = |source, what: &'static str| async move {
        KeyHolder::from_source(source, RefreshOptions::default())
            .await
            .map_err(|e| {
                eprintln!(
                    "clawdstrike-dd: cannot load the {what} of exporter `{}`: {e}",
                    entry.name
                );
                EXIT_CONFIG
            })
    };
    let api = key(r.api_key.clone(), "API key").await?;
    let app = key(app_source, "application key").await?;
    SignalsClient::new(&r.api_base, api, app).map_err(|e| {
        eprintln!("clawdstrike-dd: {e}");
        EXIT_FAILURE
    })
}

async fn signals(cmd: SignalsCommand) -> u8 {
    match cmd {
        SignalsCommand::List(args) => {
            let client = match signals_client(&args.target).await {
                Ok(c) => c,
                Err(code) => return code,
            };
            let since = args.since.trim();
            if since.len() < 2
                || !since[..since.len() - 1].bytes().all(|b| b.is_ascii_digit())
                || !since.ends_with(['s', 'm', 'h', 'd'])
            {
                eprintln!("clawdstrike-dd: --since `{since}` is not a duration like 15m, 1h or 7d");
                return EXIT_CONFIG;
            }
            let query = ListQuery {
                query: Some(args.query.clone()),
                from: Some(format!("now-{since}")),
                to: Some("now".to_owned()),
                sort: Some("-timestamp".to_owned()),
                limit: Some(args.limit.clamp(1, 1000)),
                cursor: None,
            };
            match client.list(&query).await {
                Ok(page) => {
                    if args.json {
                        for s in &page.signals {
                            println!("{}", s.raw);
                        }
                    } else {
                        println!("{:<40} {:<25} {:<13} MESSAGE", "ID", "TIMESTAMP", "STATE");
                        for s in &page.signals {
                            let message = s.message.lines().next().unwrap_or_default();
                            println!("{:<40} {:<25} {:<13} {message}", s.id, s.timestamp, s.state);
                        }
                        println!(
                            "{} signal(s) in the last {since} matching `{}`",
                            page.signals.len(),
                            args.query
                        );
                    }
                    EXIT_OK
                }
                Err(e) => {
                    eprintln!("clawdstrike-dd: {e}");
                    EXIT_FAILURE
                }
            }
        }
        SignalsCommand::Triage(args) => {
            let client = match signals_client(&args.target).await {
                Ok(c) => c,
                Err(code) => return code,
            };
            match client
                .set_state(
                    &args.id,
                    &args.state,
                    args.reason.as_deref(),
                    args.comment.as_deref(),
                )
                .await
            {
                Ok(state) => {
                    println!("signal {}: {state}", args.id);
                    EXIT_OK
                }
                Err(e) => {
                    eprintln!("clawdstrike-dd: {e}");
                    EXIT_FAILURE
                }
            }
        }
    }
}

async fn fakeintake(args: FakeIntakeArgs) -> u8 {
    let mut api_keys = args.api_keys;
    if api_keys.is_empty() {
        let key = format!("{:032x}", rand::random::<u128>());
        println!("no --api-key given; accepting the generated key {key}");
        api_keys.push(key);
    }
    let mut builder = clawdstrike_fakeintake::FakeIntake::builder().with_listen(args.listen);
    for key in api_keys {
        builder = builder.with_api_key(SecretString::from(key));
    }
    for key in args.app_keys {
        builder = builder.with_app_key(SecretString::from(key));
    }
    let intake = match builder.start().await {
        Ok(i) => i,
        Err(e) => {
            eprintln!("clawdstrike-dd fakeintake: {e}");
            return EXIT_FAILURE;
        }
    };
    println!("fakeintake listening on {}", intake.base_url());
    let (_stopper, mut stop) = watch_signals();
    let _ = stop.wait_for(|s| *s).await;
    intake.shutdown().await;
    EXIT_OK
}
