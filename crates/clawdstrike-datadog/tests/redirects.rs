//! A redirecting proxy in front of the intake: the exporter does not follow it. Followed, a
//! 302 turns the POST into a bodyless GET that a login page answers 200 (the batch counted
//! delivered, never sent), and a 307 carries the body and the `DD-API-KEY` header to the host
//! it names.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use clawdstrike_datadog::config::DatadogConfig;
use clawdstrike_datadog::exporter::DatadogExporter;
use clawdstrike_export::{Exporter, Record};
use clawdstrike_keys::{KeyHolder, SecretString};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const KEY: &str = "0123456789abcdef0123456789abcdef";

/// A server on loopback answering every request with `response` (built from its own address),
/// counting requests.
async fn answering(
    response: impl Fn(&str) -> String + Send + Sync + 'static,
) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&seen);
    let own = addr.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            // Read the request head (and whatever body came with it), then answer and close.
            let mut buf = vec![0u8; 1 << 16];
            let _ = socket.read(&mut buf).await;
            let _ = socket.write_all(response(&own).as_bytes()).await;
            let _ = socket.shutdown().await;
        }
    });
    (addr, seen)
}

fn exporter_for(url: &str) -> DatadogExporter {
    let yaml = format!(
        "site: datadoghq.eu\nlogs_url: {url}\napi_url: {url}\nrequest: {{ timeout_ms: 5000, connect_timeout_ms: 1000 }}"
    );
    let config = DatadogConfig::from_yaml(&yaml, &|_| None).unwrap();
    let resolved = config.resolve(&|_| None).unwrap();
    DatadogExporter::from_config_with_key(
        "datadog_test",
        &resolved,
        KeyHolder::from_static(SecretString::from(KEY)),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_not_followed_and_their_target_is_named_without_its_query() {
    // The "login page" the redirects point at: it would answer 200 to anything.
    let (portal, portal_hits) = answering(|_| {
        "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}".to_owned()
    })
    .await;
    let records: Vec<Record> = common::events(3).into_iter().map(Record::new).collect();
    for status in ["302 Found", "307 Temporary Redirect"] {
        let location = format!("http://{portal}/login?session=s3cr3t-token");
        let (proxy, proxy_hits) = answering(move |_| {
            format!(
                "HTTP/1.1 {status}\r\nlocation: {location}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            )
        })
        .await;
        let exporter = exporter_for(&format!("http://{proxy}"));
        let result = exporter.export(&records).await;
        assert_eq!(
            result.exported_count(),
            0,
            "{status}: nothing counted delivered"
        );
        for outcome in result.outcomes() {
            let failure = outcome.as_ref().expect("a failure");
            assert!(failure.is_retryable(), "{status}: {}", failure.reason());
            let reason = failure.reason();
            assert!(
                reason.contains(&format!("redirect to http://{portal}/login")),
                "{status}: {reason}"
            );
            assert!(!reason.contains("s3cr3t"), "{status}: no query: {reason}");
        }
        assert_eq!(proxy_hits.load(Ordering::SeqCst), 1, "{status}");
        assert_eq!(
            portal_hits.load(Ordering::SeqCst),
            0,
            "{status}: nothing (and no key) went to the redirect's host"
        );
    }
}

/// A URL with credentials (a proxy's) never shows up whole in a failure's reason, which ends up
/// in dead-letter files and logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_failures_name_the_endpoint_without_credentials_or_query() {
    // A port nothing listens on: bind one, note it, close it.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let exporter = exporter_for(&format!("http://proxyuser:pr0xy-pass@127.0.0.1:{port}/dd"));
    let records: Vec<Record> = common::events(1).into_iter().map(Record::new).collect();
    let result = exporter.export(&records).await;
    let reason = result.outcomes()[0]
        .as_ref()
        .expect("a failure")
        .reason()
        .to_owned();
    assert!(
        reason.contains(&format!("http://127.0.0.1:{port}/dd/api/v2/logs")),
        "{reason}"
    );
    for secret in ["pr0xy-pass", "proxyuser"] {
        assert!(!reason.contains(secret), "{secret} in {reason}");
    }
}
