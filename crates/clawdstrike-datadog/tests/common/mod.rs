//! Shared harness: a fake intake, a Datadog exporter pointed at it, and a pipeline.
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use clawdstrike_datadog::config::{DatadogConfig, ResolvedConfig};
use clawdstrike_datadog::encode::{Codec, Compression};
use clawdstrike_datadog::exporter::DatadogExporter;
use clawdstrike_export::{ExporterConfig, Pipeline, Record};
use clawdstrike_fakeintake::FakeIntake;
use clawdstrike_keys::{KeyHolder, SecretString};
use clawdstrike_schema::{NdjsonReader, NdjsonRecord, SecurityEvent, Uuid};

/// Distinctive keys, so a leak test can search for them.
pub const KEY_A: &str = "kA7q9ZxLeakCanary0000000000000001";
pub const KEY_B: &str = "kB3m5WyLeakCanary0000000000000002";
pub const APP_KEY: &str = "appLeakCanary00000000000000000000000000003";

pub fn shared() -> PathBuf {
    std::env::var_os("CLAWDSTRIKE_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared"))
}

/// The 42 fixture events.
pub fn fixtures() -> Vec<SecurityEvent> {
    let file =
        std::fs::File::open(shared().join("fixtures/events.ndjson")).expect("shared fixtures");
    NdjsonReader::new(std::io::BufReader::new(file))
        .map(|r| match r.unwrap() {
            NdjsonRecord::Event(e) => e.event,
            NdjsonRecord::Rejected(bad) => panic!("fixture rejected: {}", bad.error),
        })
        .collect()
}

/// `n` realistic events (the fixtures, cycled) with unique ids.
pub fn events(n: usize) -> Vec<SecurityEvent> {
    let base = fixtures();
    (0..n)
        .map(|i| {
            let mut e = base[i % base.len()].clone();
            e.event_id = Uuid::from_u128(0x0194_0000_0000_7000_8000_0000_0000_0000 | i as u128);
            e
        })
        .collect()
}

/// Test-speed framework settings: tiny backoffs, small batches.
pub fn fast_pipeline() -> ExporterConfig {
    ExporterConfig::default()
        .with_flush_interval(Duration::from_millis(20))
        .with_initial_backoff(Duration::from_millis(5))
        .with_max_backoff(Duration::from_millis(40))
        .with_max_retry_after(Duration::from_millis(200))
        .with_max_attempts(Some(50))
        .with_max_elapsed(Some(Duration::from_secs(60)))
}

pub fn resolved(intake: &FakeIntake, codec: Codec) -> ResolvedConfig {
    let yaml = format!(
        "site: datadoghq.eu\nlogs_url: {url}\napi_url: {url}\nlogs: {{ hostname: test-host, tags: [team:qa] }}\nrequest: {{ timeout_ms: 2000, connect_timeout_ms: 1000 }}",
        url = intake.base_url()
    );
    let mut config = DatadogConfig::from_yaml(&yaml, &|_| None).unwrap();
    config.compression = Compression { codec, level: None };
    config.resolve(&|_| None).unwrap()
}

pub struct Harness {
    pub intake: FakeIntake,
    pub exporter: DatadogExporter,
    pub pipeline: Pipeline,
    pub dead_letters: Option<tempfile::TempDir>,
}

impl Harness {
    pub async fn start(codec: Codec, key: KeyHolder, pipeline: ExporterConfig) -> Harness {
        let intake = FakeIntake::start(SecretString::from(KEY_A), SecretString::from(APP_KEY))
            .await
            .unwrap();
        Self::with_intake(intake, codec, key, pipeline).await
    }

    pub async fn with_intake(
        intake: FakeIntake,
        codec: Codec,
        key: KeyHolder,
        pipeline: ExporterConfig,
    ) -> Harness {
        let resolved = resolved(&intake, codec);
        let exporter =
            DatadogExporter::from_config_with_key("datadog_test", &resolved, key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let config = pipeline.with_dead_letter_path(dir.path().join("dlq.jsonl"));
        let built = Pipeline::builder()
            .with_exporter(Arc::new(exporter.clone()), config)
            .build()
            .unwrap();
        Harness {
            intake,
            exporter,
            pipeline: built,
            dead_letters: Some(dir),
        }
    }

    pub async fn submit_all(&self, events: &[SecurityEvent]) {
        for e in events {
            self.pipeline.submit(Record::new(e.clone())).await.unwrap();
        }
    }

    pub fn dead_letter_path(&self) -> PathBuf {
        self.dead_letters.as_ref().unwrap().path().join("dlq.jsonl")
    }

    pub fn dead_letters(&self) -> Vec<serde_json::Value> {
        read_jsonl(&self.dead_letter_path())
    }
}

pub fn read_jsonl(path: &Path) -> Vec<serde_json::Value> {
    match std::fs::read_to_string(path) {
        Ok(text) => text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect(),
        Err(_) => Vec::new(),
    }
}

pub fn static_key(key: &str) -> KeyHolder {
    KeyHolder::from_static(SecretString::from(key))
}

/// A holder reading `key` from `dir/api-key`, re-read at every rejection (no throttle), and
/// that file, for rotating it.
#[allow(dead_code)] // not every test binary rotates keys
pub async fn file_key(dir: &Path, key: &str) -> (KeyHolder, PathBuf) {
    let key_file = dir.join("api-key");
    std::fs::write(&key_file, key).unwrap();
    let holder = KeyHolder::from_source(
        clawdstrike_keys::KeySource::File(key_file.clone()),
        clawdstrike_keys::RefreshOptions::default().with_min_interval(Duration::ZERO),
    )
    .await
    .unwrap();
    (holder, key_file)
}

/// Every log line of this test process at TRACE level (installed once per process).
pub fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static BUF: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    BUF.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = {
            let buf = Arc::clone(&buf);
            move || Capture(Arc::clone(&buf))
        };
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(writer)
            .with_ansi(false)
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
        buf
    })
    .clone()
}

pub struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Waits (bounded) until the exporter has seen `n` events accepted by the intake.
pub async fn wait_sent(exporter: &DatadogExporter, n: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while exporter.transport_stats().snapshot().events_sent < n {
        assert!(
            std::time::Instant::now() < deadline,
            "the exporter never saw {n} events accepted"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
