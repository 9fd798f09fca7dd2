//! Helpers for the end-to-end tests in `tests/tests/`: the shared fixtures, the built
//! `clawdstrike-dd` binary run as a child process, and bounded waits.
//!
//! # Architecture invariant
//!
//! Nothing depends on this crate; it may depend on any of ours.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

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

/// A fixture file's path.
pub fn fixture(name: &str) -> PathBuf {
    shared_dir().join("fixtures").join(name)
}

/// The base of the deterministic event ids [`numbered_event`] gives (a UUID v7 layout).
pub const EVENT_ID_BASE: u128 = 0x0194_0000_0000_7000_8000_0000_0000_0000;

/// The shared fixture events, decoded.
///
/// # Panics
/// When the fixtures are missing or a line is rejected.
pub fn fixture_events() -> Vec<clawdstrike_schema::SecurityEvent> {
    use clawdstrike_schema::{NdjsonReader, NdjsonRecord};
    let file =
        BufReader::new(std::fs::File::open(fixture("events.ndjson")).expect("shared fixtures"));
    NdjsonReader::new(file)
        .map(|r| match r.expect("readable") {
            NdjsonRecord::Event(e) => e.event,
            NdjsonRecord::Rejected(bad) => panic!("fixture rejected: {}", bad.error),
        })
        .collect()
}

/// Fixture event `i` (cycling through `base`) with the unique id `EVENT_ID_BASE | i`.
pub fn numbered_event(
    base: &[clawdstrike_schema::SecurityEvent],
    i: u64,
) -> clawdstrike_schema::SecurityEvent {
    let mut e = base[(i % base.len() as u64) as usize].clone();
    e.event_id = clawdstrike_schema::Uuid::from_u128(EVENT_ID_BASE | u128::from(i));
    e
}

/// The built `clawdstrike-dd` binary (`$CLAWDSTRIKE_DD_BIN`, or beside this test executable,
/// built once per test process with `cargo build -p clawdstrike-dd` so it is never stale).
///
/// # Panics
/// When the binary cannot be built.
pub fn dd_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("CLAWDSTRIKE_DD_BIN") {
            return PathBuf::from(bin);
        }
        // target/<profile>/deps/<test>-<hash>
        let exe = std::env::current_exe().expect("current_exe");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>");
        let target_dir = profile_dir.parent().expect("target dir");
        let profile = profile_dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("debug");
        let mut build = Command::new(env!("CARGO"));
        build
            .args([
                "build",
                "--quiet",
                "-p",
                "clawdstrike-dd",
                "--bin",
                "clawdstrike-dd",
            ])
            .arg("--target-dir")
            .arg(target_dir)
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if profile != "debug" {
            build.args([
                "--profile",
                if profile == "release" {
                    "release"
                } else {
                    profile
                },
            ]);
        }
        let status = build.status().expect("run cargo build");
        assert!(status.success(), "cargo build -p clawdstrike-dd failed");
        let bin = profile_dir.join("clawdstrike-dd");
        assert!(bin.is_file(), "{} missing after the build", bin.display());
        bin
    })
    .clone()
}

/// A `clawdstrike-dd` command with a clean Datadog environment (no `DD_*` from the caller).
pub fn dd_command(dir: &Path) -> Command {
    clean_env(Command::new(dd_binary()), dir)
}

/// [`dd_command`] for a process that may not grow any file past `blocks` 512-byte blocks
/// (`RLIMIT_FSIZE`, set by `sh`'s `ulimit -f`), with `SIGXFSZ` ignored: a write past the limit
/// fails with `EFBIG` instead of killing the process, as a write to a full disk fails.
/// Arguments added to the command go to `clawdstrike-dd`.
pub fn dd_command_with_file_size_limit(dir: &Path, blocks: u64) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!(
            r#"trap '' XFSZ && ulimit -f {blocks} && exec "$0" "$@""#
        ))
        .arg(dd_binary());
    clean_env(cmd, dir)
}

fn clean_env(mut cmd: Command, dir: &Path) -> Command {
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("DD_")
            || name == "CLAWDSTRIKE_DD_CONFIG"
            || name == "CLAWDSTRIKE_DD_TOKEN"
        {
            cmd.env_remove(name);
        }
    }
    cmd.env("RUST_LOG", "warn,clawdstrike_dd=info")
        .current_dir(dir);
    cmd
}

/// A running child with its stdout and stderr collected on threads.
#[derive(Debug)]
pub struct Running {
    child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    lines: mpsc::Receiver<String>,
    /// One message per output pipe when it reaches its end (the child exited).
    closed: mpsc::Receiver<()>,
}

fn collect(
    pipe: impl Read + Send + 'static,
    into: Arc<Mutex<String>>,
    lines: mpsc::Sender<String>,
    closed: mpsc::Sender<()>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            {
                let mut into = into.lock().unwrap();
                into.push_str(&line);
                into.push('\n');
            }
            let _ = lines.send(line);
        }
        let _ = closed.send(());
    });
}

impl Running {
    /// Spawns `cmd` with piped output (and piped stdin).
    ///
    /// # Panics
    /// When it cannot be spawned.
    pub fn spawn(mut cmd: Command) -> Running {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn clawdstrike-dd");
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, lines) = mpsc::channel();
        let (closed_tx, closed) = mpsc::channel();
        collect(
            child.stdout.take().expect("stdout"),
            Arc::clone(&stdout),
            tx.clone(),
            closed_tx.clone(),
        );
        collect(
            child.stderr.take().expect("stderr"),
            Arc::clone(&stderr),
            tx,
            closed_tx,
        );
        Running {
            child,
            stdout,
            stderr,
            lines,
            closed,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The child's stdin (taken; drop it to send EOF).
    pub fn take_stdin(&mut self) -> Option<std::process::ChildStdin> {
        self.child.stdin.take()
    }

    /// Waits (bounded) for an output line containing `needle`; returns it.
    ///
    /// # Panics
    /// On timeout, with the output so far.
    pub fn wait_for_line(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!(
                    "no line containing {needle:?} within {timeout:?}; stdout:\n{}\nstderr:\n{}",
                    self.stdout(),
                    self.stderr()
                ),
            }
        }
    }

    /// Sends a signal with `kill -<sig> <pid>`.
    ///
    /// # Panics
    /// When `kill` cannot run.
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{sig} failed");
    }

    /// Waits (bounded) for the exit, and for every line the child printed.
    ///
    /// The child's output pipes reach their end when it exits (clawdstrike-dd never closes
    /// them earlier), so both readers finishing means it is gone and its output is complete.
    ///
    /// # Panics
    /// On timeout (the child is killed), with the output so far.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        for _ in 0..2 {
            let left = deadline.saturating_duration_since(Instant::now());
            if self.closed.recv_timeout(left).is_err() {
                let _ = self.child.kill();
                panic!(
                    "clawdstrike-dd did not exit within {timeout:?}; stdout:\n{}\nstderr:\n{}",
                    self.stdout(),
                    self.stderr()
                );
            }
        }
        self.child.wait().expect("wait for clawdstrike-dd")
    }

    /// Everything printed on stdout so far.
    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    /// Everything printed on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Polls `condition` every 20 ms until it holds or `timeout` passes; returns whether it held.
pub fn poll_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A forwarder configuration pointing one exporter (`e2e`) at `base_url`, with test-speed
/// batching and retry, metrics off, plus `extra` top-level YAML.
pub fn config_yaml(base_url: &str, exporter_extra: &str, extra: &str) -> String {
    format!(
        "exporters:\n  e2e:\n    api_key: {{ env: DD_API_KEY }}\n    logs_url: {base_url}\n    api_url: {base_url}\n    logs: {{ hostname: e2e-host }}\n    metrics: {{ enabled: false }}\n    batch: {{ flush_interval_ms: 20 }}\n    retry: {{ initial_backoff_ms: 10, max_backoff_ms: 100 }}\n    request: {{ timeout_ms: 5000 }}\n{exporter_extra}{extra}"
    )
}

/// The JSON lines of a file (empty when it does not exist).
///
/// # Panics
/// On a line that is not JSON.
pub fn read_jsonl(path: &Path) -> Vec<serde_json::Value> {
    match std::fs::read_to_string(path) {
        Ok(text) => text
            .lines()
            .map(|l| serde_json::from_str(l).expect("JSON line"))
            .collect(),
        Err(_) => Vec::new(),
    }
}
