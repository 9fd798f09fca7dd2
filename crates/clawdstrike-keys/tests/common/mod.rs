//! Helpers shared by the integration tests: distinctive random keys, a TRACE log capture,
//! a real OpenBao dev server, and a Kubernetes API server emulator.

#![allow(dead_code, unreachable_pub, missing_docs)]

#[cfg(feature = "vault")]
pub mod bao;
#[cfg(feature = "kubernetes")]
pub mod fake_apiserver;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;

/// A random key that cannot appear in any output by accident.
pub fn random_key(label: &str) -> String {
    let mut rng = rand::rng();
    let tail: String = (0..24)
        .map(|_| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[rng.random_range(0..36)]))
        .collect();
    format!("{label}-{tail}")
}

/// Polls `condition` every 10 ms until it holds, failing the test after `deadline`.
pub async fn eventually<F, Fut>(what: &str, deadline: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let result = tokio::time::timeout(deadline, async {
        while !condition().await {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(
        result.is_ok(),
        "timed out after {deadline:?} waiting for: {what}"
    );
}

/// Everything written by `tracing` at every level, in memory.
#[derive(Clone, Default)]
pub struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl LogCapture {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogCapture {
    type Writer = LogCapture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Installs a process-wide subscriber at TRACE level (every crate, spans included) writing into
/// the returned capture.
pub fn capture_all_logs() -> LogCapture {
    let capture = LogCapture::default();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::FULL)
        .with_ansi(false)
        .with_writer(capture.clone())
        .init();
    capture
}
