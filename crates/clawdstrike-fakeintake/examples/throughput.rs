//! Measures how many log items per second the fake intake decodes, counts and keeps.
//!
//! ```text
//! cargo run -p clawdstrike-fakeintake --example throughput [-- REQUESTS CONCURRENCY CODEC KEEP]
//! ```
//!
//! Bodies (1,000 items of about 600 bytes) are compressed before the clock starts, so the
//! number is the intake's cost plus HTTP, not the client's compression.

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use clawdstrike_fakeintake::FakeIntake;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn body(batch: usize, codec: &str) -> Vec<u8> {
    let items: Vec<String> = (0..1000)
        .map(|i| {
            format!(
                r#"{{"message":"[forbidden_path] BLOCKED: Access to forbidden path: /home/user/.ssh/id_rsa","ddsource":"clawdstrike","service":"clawdstrike","hostname":"node-7","status":"critical","ddtags":"env:production,event_type:forbidden_path,guard:forbidden_path,severity:critical","timestamp":"2026-02-07T12:00:00.123Z","event_id":"0194f3c2-7b1e-7c3a-{batch:04x}-{i:012x}","event_type":"forbidden_path","security":{{"allowed":false,"guard":"forbidden_path","severity":"critical","outcome":"failure"}},"agent":{{"id":"agent-7","name":"hushd","version":"0.1.0"}},"session":{{"id":"sess-123","tenant_id":"acme-corp"}}}}"#
            )
        })
        .collect();
    let json = format!("[{}]", items.join(","));
    match codec {
        "gzip" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
            e.write_all(json.as_bytes()).unwrap();
            e.finish().unwrap()
        }
        "zstd" => zstd::encode_all(json.as_bytes(), 1).unwrap(),
        _ => json.into_bytes(),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let requests: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(300);
    let concurrency: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(4);
    let codec = args.get(3).cloned().unwrap_or_else(|| "zstd".into());
    let keep = args.get(4).is_none_or(|k| k != "nokeep");
    let intake = FakeIntake::builder()
        .with_api_key("bench")
        .with_keep_items(keep)
        .start()
        .await
        .unwrap();
    let addr = intake.local_addr();
    let bodies: Arc<Vec<Vec<u8>>> = Arc::new((0..requests).map(|b| body(b, &codec)).collect());
    let wire: usize = bodies.iter().map(Vec::len).sum();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let bodies = bodies.clone();
        let codec = codec.clone();
        tasks.push(tokio::spawn(async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.set_nodelay(true).unwrap();
            let mut buf = vec![0u8; 4096];
            for b in (worker..bodies.len()).step_by(concurrency) {
                let body = &bodies[b];
                let enc = if codec == "identity" { String::new() } else { format!("content-encoding: {codec}\r\n") };
                let head = format!(
                    "POST /api/v2/logs HTTP/1.1\r\nhost: x\r\ndd-api-key: bench\r\ncontent-type: application/json\r\n{enc}content-length: {}\r\n\r\n",
                    body.len()
                );
                s.write_all(head.as_bytes()).await.unwrap();
                s.write_all(body).await.unwrap();
                // `202` with a two-byte body: read until the body `{}` arrived.
                let mut got = Vec::new();
                while !got.ends_with(b"{}") {
                    let n = s.read(&mut buf).await.unwrap();
                    assert!(n > 0, "connection closed");
                    got.extend_from_slice(&buf[..n]);
                }
                assert!(got.starts_with(b"HTTP/1.1 202"), "{}", String::from_utf8_lossy(&got));
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = started.elapsed();
    let stats = intake.stats();
    assert_eq!(stats.unique_event_ids, (requests * 1000) as u64);
    println!(
        "{} items in {:.3} s: {:.0} items/s ({codec}, {:.1} MB on the wire, {:.1} MB decoded, keep_items={keep}, concurrency {concurrency})",
        stats.total_items,
        elapsed.as_secs_f64(),
        stats.total_items as f64 / elapsed.as_secs_f64(),
        wire as f64 / 1e6,
        stats.log_bytes_uncompressed as f64 / 1e6,
    );
    intake.shutdown().await;
}
