//! The fake intake over real HTTP on loopback, with reqwest as the client.

use std::io::Write;
use std::time::Duration;

use clawdstrike_fakeintake::{
    Endpoint, FakeIntake, FaultAction, FaultTarget, KeyStatus, LogsLimits, ObjectKind, RateLimit,
    SignalSeed, TooManyItems,
};
use serde_json::{Value, json};

const API: &str = "api-key-0123";
const APP: &str = "app-key-4567";
const WAIT: Duration = Duration::from_secs(10);

async fn start() -> FakeIntake {
    FakeIntake::start(API, APP).await.expect("start")
}

/// One client for the process (building one loads the TLS roots: slow in debug builds).
/// No idle connections are pooled, so tests on different runtimes never share a connection.
fn client() -> reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT
        .get_or_init(|| {
            reqwest::Client::builder()
                .no_proxy()
                .pool_max_idle_per_host(0)
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client")
        })
        .clone()
}

type Codec = (Option<&'static str>, fn(&[u8]) -> Vec<u8>);

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

fn zlib(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

fn raw_deflate(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

fn items(ids: impl IntoIterator<Item = String>) -> Vec<u8> {
    let v: Vec<Value> = ids
        .into_iter()
        .map(|id| json!({"message": format!("m {id}"), "event_id": id, "ddsource": "test"}))
        .collect();
    serde_json::to_vec(&v).unwrap()
}

async fn post_logs(
    intake: &FakeIntake,
    key: Option<&str>,
    encoding: Option<&str>,
    body: Vec<u8>,
) -> reqwest::Result<reqwest::Response> {
    let mut req = client()
        .post(intake.logs_url())
        .header("content-type", "application/json");
    if let Some(k) = key {
        req = req.header("DD-API-KEY", k);
    }
    if let Some(e) = encoding {
        req = req.header("content-encoding", e);
    }
    req.body(body).send().await
}

/// The status of an uncompressed logs request.
async fn logs_status(intake: &FakeIntake, key: Option<&str>, body: Vec<u8>) -> u16 {
    post_logs(intake, key, None, body)
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn status_and_json(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, body)
}

/// A deterministic, poorly compressible string.
fn noise(len: usize) -> String {
    let mut x: u64 = 0x1234_5678;
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            char::from(
                b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                    [((x >> 33) % 62) as usize],
            )
        })
        .collect()
}

// ---------------------------------------------------------------- logs

#[tokio::test]
async fn every_codec_decodes_to_the_same_items() {
    let intake = start().await;
    let codecs: Vec<Codec> = vec![
        (None, |b| b.to_vec()),
        (Some("identity"), |b| b.to_vec()),
        (Some("gzip"), gzip),
        (Some("deflate"), zlib),
        (Some("deflate"), raw_deflate),
        (Some("zstd"), |b| zstd::encode_all(b, 1).unwrap()),
        (Some("zstd1"), |b| zstd::encode_all(b, 3).unwrap()),
    ];
    let mut compressed_total = 0;
    let mut uncompressed_total = 0;
    for (i, (enc, f)) in codecs.iter().enumerate() {
        let body = items([format!("c{i}-a"), format!("c{i}-b")]);
        let wire = f(&body);
        compressed_total += wire.len();
        uncompressed_total += body.len();
        let resp = post_logs(&intake, Some(API), *enc, wire).await.unwrap();
        assert_eq!(status_and_json(resp).await, (202, json!({})), "{enc:?}");
    }
    let stats = intake.stats();
    assert_eq!(stats.total_items, 14);
    assert_eq!(stats.unique_event_ids, 14);
    assert_eq!(stats.log_bytes_compressed, compressed_total as u64);
    assert_eq!(stats.log_bytes_uncompressed, uncompressed_total as u64);
    let kept = intake.log_items();
    assert_eq!(kept.len(), 14);
    assert_eq!(kept[4].value["event_id"], "c2-a");
    assert_eq!(kept[4].value["message"], "m c2-a");
    let encodings: Vec<Option<String>> = intake
        .requests()
        .iter()
        .map(|r| r.content_encoding.clone())
        .collect();
    assert_eq!(encodings[2].as_deref(), Some("gzip"));
    assert_eq!(encodings[6].as_deref(), Some("zstd1"));
}

#[tokio::test]
async fn missing_key_is_401_invalid_is_403_and_keys_change_at_run_time() {
    let intake = start().await;
    let body = || items(["k1".to_owned()]);
    let (status, json) =
        status_and_json(post_logs(&intake, None, None, body()).await.unwrap()).await;
    assert_eq!(status, 401);
    assert!(json["errors"].is_array(), "{json}");
    let (status, json) = status_and_json(
        post_logs(&intake, Some("nope"), None, body())
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, json), (403, json!({"errors": ["Forbidden"]})));

    intake.add_api_key("rotated");
    assert_eq!(logs_status(&intake, Some("rotated"), body()).await, 202);
    assert!(intake.revoke_api_key(API));
    assert_eq!(logs_status(&intake, Some(API), body()).await, 403);
    intake.set_api_keys(["k-a", "k-b"]);
    assert_eq!(logs_status(&intake, Some("rotated"), body()).await, 403);
    assert_eq!(logs_status(&intake, Some("k-b"), body()).await, 202);

    // The same over the admin endpoint.
    let resp = client()
        .post(format!("{}/fakeintake/keys", intake.base_url()))
        .json(&json!({"add_api_keys": ["via-admin"], "revoke_api_keys": ["k-b"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        status_and_json(resp).await,
        (200, json!({"api_keys": 2, "app_keys": 1}))
    );
    assert_eq!(logs_status(&intake, Some("via-admin"), body()).await, 202);
    assert_eq!(logs_status(&intake, Some("k-b"), body()).await, 403);

    let statuses: Vec<KeyStatus> = intake.requests().iter().map(|r| r.api_key).collect();
    assert_eq!(
        statuses[..3],
        [KeyStatus::Missing, KeyStatus::Invalid, KeyStatus::Valid]
    );
    assert_eq!(intake.total_items(), 3, "only accepted requests count");
}

#[tokio::test]
async fn recorded_requests_never_hold_a_key() {
    let intake = start().await;
    post_logs(
        &intake,
        Some(API),
        Some("gzip"),
        gzip(&items(["r1".to_owned()])),
    )
    .await
    .unwrap();
    client()
        .get(format!("{}/api/v1/dashboard", intake.base_url()))
        .header("DD-API-KEY", API)
        .header("DD-APPLICATION-KEY", APP)
        .send()
        .await
        .unwrap();
    let records = intake.requests();
    assert_eq!(records[0].header("DD-API-KEY"), Some("<redacted>"));
    assert_eq!(records[1].header("dd-application-key"), Some("<redacted>"));
    assert_eq!(records[0].header("content-encoding"), Some("gzip"));
    let dump = format!("{records:?} {intake:?}");
    assert!(!dump.contains(API) && !dump.contains(APP), "{dump}");
    let admin = client()
        .get(format!("{}/fakeintake/requests", intake.base_url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !admin.contains(API) && admin.contains("<redacted>"),
        "{admin}"
    );
}

#[tokio::test]
async fn body_over_5_000_000_bytes_uncompressed_is_413() {
    let intake = start().await;
    // One item, 5,000,001 bytes of JSON in total.
    let overhead = r#"[{"message":""}]"#.len();
    let body = format!(r#"[{{"message":"{}"}}]"#, "x".repeat(5_000_001 - overhead));
    assert_eq!(body.len(), 5_000_001);
    let (status, json) = status_and_json(
        post_logs(&intake, Some(API), None, body.clone().into_bytes())
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 413, "{json}");
    // Small on the wire, too big once decoded.
    let (status, _) = status_and_json(
        post_logs(
            &intake,
            Some(API),
            Some("zstd"),
            zstd::encode_all(body.as_bytes(), 1).unwrap(),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, 413);
    assert_eq!(intake.total_items(), 0);

    // The boundary, with a configured limit.
    let small = FakeIntake::builder()
        .with_api_key(API)
        .with_logs_limits({
            let mut l = LogsLimits::default();
            l.max_uncompressed_bytes = 100;
            l
        })
        .start()
        .await
        .unwrap();
    let at = format!(r#"[{{"message":"{}"}}]"#, "y".repeat(100 - overhead));
    assert_eq!(
        post_logs(&small, Some(API), Some("gzip"), gzip(at.as_bytes()))
            .await
            .unwrap()
            .status(),
        202
    );
    let over = format!(r#"[{{"message":"{}"}}]"#, "y".repeat(101 - overhead));
    assert_eq!(
        post_logs(&small, Some(API), Some("gzip"), gzip(over.as_bytes()))
            .await
            .unwrap()
            .status(),
        413
    );
}

#[tokio::test]
async fn more_than_1000_items_is_413_unless_configured_to_accept() {
    let intake = start().await;
    let ids = |n: usize, p: &'static str| (0..n).map(move |i| format!("{p}{i}"));
    let (status, json) = status_and_json(
        post_logs(
            &intake,
            Some(API),
            Some("gzip"),
            gzip(&items(ids(1001, "a"))),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, 413);
    assert!(
        json["errors"][0].as_str().unwrap().contains("1001 items"),
        "{json}"
    );
    assert_eq!(
        post_logs(
            &intake,
            Some(API),
            Some("gzip"),
            gzip(&items(ids(1000, "b")))
        )
        .await
        .unwrap()
        .status(),
        202
    );
    assert_eq!(intake.total_items(), 1000);

    let lenient = FakeIntake::builder()
        .with_api_key(API)
        .with_logs_limits({
            let mut l = LogsLimits::default();
            l.too_many_items = TooManyItems::Accept;
            l
        })
        .start()
        .await
        .unwrap();
    assert_eq!(
        logs_status(&lenient, Some(API), items(ids(1001, "c"))).await,
        202
    );
    assert_eq!(lenient.total_items(), 1001);
}

#[tokio::test]
async fn items_over_1_000_000_bytes_are_kept_and_flagged_as_truncated_by_intake() {
    let intake = start().await;
    let item = |len: usize, id: &str| {
        let overhead = format!(r#"{{"event_id":"{id}","message":""}}"#).len();
        format!(
            r#"{{"event_id":"{id}","message":"{}"}}"#,
            "z".repeat(len - overhead)
        )
    };
    let at = item(1_000_000, "at-limit");
    let over = item(1_000_001, "over-limit");
    assert_eq!((at.len(), over.len()), (1_000_000, 1_000_001));
    let body = format!("[{at},{over}]");
    assert_eq!(
        post_logs(&intake, Some(API), Some("gzip"), gzip(body.as_bytes()))
            .await
            .unwrap()
            .status(),
        202
    );
    let kept = intake.log_items();
    assert_eq!(kept.len(), 2);
    assert_eq!(
        (kept[0].raw_bytes, kept[0].truncated_by_intake),
        (1_000_000, false)
    );
    assert_eq!(
        (kept[1].raw_bytes, kept[1].truncated_by_intake),
        (1_000_001, true)
    );
    assert_eq!(intake.stats().items_truncated_by_intake, 1);
    assert_eq!(intake.log_items_with_id("over-limit").len(), 1);
}

#[tokio::test]
async fn bodies_that_are_not_a_json_array_or_object_are_400_with_a_reason() {
    let intake = start().await;
    for (enc, body, needle) in [
        (None, b"\"just a string\"".to_vec(), "JSON array"),
        (None, b"[{\"message\":".to_vec(), "invalid JSON"),
        (None, b"42".to_vec(), "JSON array"),
        (Some("gzip"), b"not gzip at all".to_vec(), "decode"),
        (Some("br"), b"whatever".to_vec(), "Content-Encoding"),
    ] {
        let (status, json) =
            status_and_json(post_logs(&intake, Some(API), enc, body).await.unwrap()).await;
        assert_eq!(status, 400, "{json}");
        assert!(
            json["errors"][0].as_str().unwrap().contains(needle),
            "{needle}: {json}"
        );
    }
    // A single object is one item.
    assert_eq!(
        logs_status(
            &intake,
            Some(API),
            br#"{"message":"one","event_id":"solo"}"#.to_vec()
        )
        .await,
        202
    );
    assert_eq!(intake.unique_event_ids(), 1);
}

#[tokio::test]
async fn duplicates_are_counted_by_event_id() {
    let intake = start().await;
    post_logs(
        &intake,
        Some(API),
        None,
        items(["a", "b"].map(String::from)),
    )
    .await
    .unwrap();
    post_logs(
        &intake,
        Some(API),
        None,
        items(["b", "c", "b"].map(String::from)),
    )
    .await
    .unwrap();
    post_logs(
        &intake,
        Some(API),
        None,
        br#"[{"message":"no id"}]"#.to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(intake.total_items(), 6);
    assert_eq!(intake.unique_event_ids(), 3);
    assert_eq!(
        intake.duplicates().into_iter().collect::<Vec<_>>(),
        vec![("b".to_owned(), 3)]
    );
    assert_eq!(intake.event_id_counts()["a"], 1);
    assert_eq!(intake.stats().items_without_event_id, 1);
    assert_eq!(intake.stats().duplicate_event_ids, 1);
}

#[tokio::test]
async fn counts_work_without_keeping_items() {
    let intake = FakeIntake::builder()
        .with_api_key(API)
        .with_keep_items(false)
        .start()
        .await
        .unwrap();
    post_logs(
        &intake,
        Some(API),
        None,
        items((0..10).map(|i| format!("n{i}"))),
    )
    .await
    .unwrap();
    assert!(intake.log_items().is_empty());
    assert_eq!(intake.unique_event_ids(), 10);
    assert_eq!(intake.stats().dropped_items, 10);

    let capped = FakeIntake::builder()
        .with_api_key(API)
        .with_max_kept_items(3)
        .start()
        .await
        .unwrap();
    post_logs(
        &capped,
        Some(API),
        None,
        items((0..5).map(|i| format!("n{i}"))),
    )
    .await
    .unwrap();
    let kept: Vec<Value> = capped
        .log_items()
        .into_iter()
        .map(|i| i.value["event_id"].clone())
        .collect();
    assert_eq!(
        kept,
        vec![json!("n2"), json!("n3"), json!("n4")],
        "the most recent are kept"
    );
    assert_eq!(capped.unique_event_ids(), 5);
}

#[tokio::test]
async fn wait_for_items_gives_up_with_the_last_stats() {
    let intake = start().await;
    let err = intake
        .wait_for_items(1, Duration::from_millis(50))
        .await
        .unwrap_err();
    assert_eq!(err.last.total_items, 0);
    // And wakes up on arrival, from another task.
    let url = intake.logs_url();
    let sender = tokio::spawn(async move {
        client()
            .post(url)
            .header("dd-api-key", API)
            .body(items(["w".to_owned()]))
            .send()
            .await
            .unwrap()
            .status()
    });
    let stats = intake.wait_for_items(1, WAIT).await.unwrap();
    assert_eq!(stats.total_items, 1);
    assert_eq!(sender.await.unwrap(), 202);
}

#[tokio::test]
async fn http2_prior_knowledge_is_served() {
    let intake = start().await;
    let h2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let resp = h2
        .post(intake.logs_url())
        .header("dd-api-key", API)
        .header("content-encoding", "zstd")
        .body(zstd::encode_all(&items(["h2".to_owned()])[..], 1).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 202);
    assert_eq!(intake.unique_event_ids(), 1);
}

// ---------------------------------------------------------------- validate

#[tokio::test]
async fn validate_answers_valid_or_forbidden() {
    let intake = start().await;
    let get = |key: Option<&'static str>| {
        let mut r = client().get(format!("{}/api/v1/validate", intake.base_url()));
        if let Some(k) = key {
            r = r.header("DD-API-KEY", k);
        }
        r.send()
    };
    assert_eq!(
        status_and_json(get(Some(API)).await.unwrap()).await,
        (200, json!({"valid": true}))
    );
    assert_eq!(
        status_and_json(get(Some("bad")).await.unwrap()).await,
        (403, json!({"errors": ["Forbidden"]}))
    );
    assert_eq!(get(None).await.unwrap().status(), 403);
}

// ---------------------------------------------------------------- faults

#[tokio::test]
async fn scripted_statuses_are_consumed_in_order_with_and_without_retry_after() {
    let intake = start().await;
    intake.fail_next(Endpoint::Logs, 2, FaultAction::status(503));
    intake.fail_next(
        Endpoint::Logs,
        1,
        FaultAction::status_with_retry_after(429, 1),
    );
    intake.fail_next(
        Endpoint::Logs,
        1,
        FaultAction::status_with_body(500, r#"{"errors":["boom"]}"#),
    );
    intake.fail_next(Endpoint::Validate, 1, FaultAction::status(408));
    let mut seen = Vec::new();
    for i in 0..5 {
        let resp = post_logs(&intake, Some(API), None, items([format!("f{i}")]))
            .await
            .unwrap();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        let (status, body) = status_and_json(resp).await;
        seen.push((status, retry_after, body));
    }
    assert_eq!(seen[0].0, 503);
    assert_eq!(seen[0].1, None);
    assert!(seen[0].2["errors"].is_array());
    assert_eq!(seen[1].0, 503);
    assert_eq!((seen[2].0, seen[2].1.as_deref()), (429, Some("1")));
    assert_eq!((seen[3].0, &seen[3].2), (500, &json!({"errors": ["boom"]})));
    assert_eq!((seen[4].0, &seen[4].2), (202, &json!({})));
    assert_eq!(
        intake.unique_event_ids(),
        1,
        "faulted requests deliver nothing"
    );
    assert_eq!(
        intake.pending_faults().len(),
        1,
        "the validate fault is still queued"
    );
    assert_eq!(intake.stats().faults_injected, 4);
}

#[tokio::test]
async fn a_delay_fault_then_handles_normally() {
    let intake = start().await;
    intake.fail_next(
        FaultTarget::All,
        1,
        FaultAction::delay(Duration::from_millis(50)),
    );
    let resp = post_logs(&intake, Some(API), None, items(["d".to_owned()]))
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    assert_eq!(intake.unique_event_ids(), 1);
    let rec = &intake.requests()[0];
    assert_eq!(
        rec.fault,
        Some(FaultAction::delay(Duration::from_millis(50)))
    );
    assert_eq!(rec.status, Some(202));
}

/// `all` means every Datadog API: a stray request to an unknown path does not use the fault
/// up.
#[tokio::test]
async fn an_all_fault_is_not_used_up_by_an_unknown_path() {
    let intake = start().await;
    intake.fail_next(FaultTarget::All, 1, FaultAction::status(503));
    let stray = client()
        .get(format!("{}/api/v9/nothing", intake.base_url()))
        .header("DD-API-KEY", API)
        .send()
        .await
        .unwrap();
    assert_eq!(stray.status(), 404);
    let resp = post_logs(&intake, Some(API), None, items(["a".to_owned()]))
        .await
        .unwrap();
    assert_eq!(resp.status(), 503, "the fault waited for a Datadog API");
}

/// Setting a limit from the admin endpoint starts a fresh window, as `set_rate_limit` does.
#[tokio::test]
async fn a_rate_limit_set_over_http_starts_a_fresh_window() {
    let intake = start().await;
    let get = || {
        client()
            .get(format!("{}/api/v1/dashboard", intake.base_url()))
            .header("DD-API-KEY", API)
            .header("DD-APPLICATION-KEY", APP)
            .send()
    };
    intake.set_rate_limit(Some(RateLimit {
        limit: 100,
        period_secs: 60,
    }));
    for _ in 0..3 {
        assert_eq!(get().await.unwrap().status(), 200);
    }
    let put = client()
        .put(format!("{}/fakeintake/rate_limit", intake.base_url()))
        .json(&json!({"limit": 2, "period_secs": 60}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    let first = get().await.unwrap();
    assert_eq!(
        first.status(),
        200,
        "the three earlier requests are not counted"
    );
    assert_eq!(first.headers()["x-ratelimit-remaining"], "1");
}

#[tokio::test]
async fn a_reset_fault_is_a_connection_error_for_the_client() {
    let intake = start().await;
    intake.fail_next(Endpoint::Logs, 1, FaultAction::Reset);
    let err = post_logs(&intake, Some(API), None, items(["r".to_owned()]))
        .await
        .unwrap_err();
    assert!(!err.is_timeout() && !err.is_status(), "{err:?}");
    let stats = intake.stats();
    assert_eq!(stats.connections_reset, 1);
    assert_eq!(stats.total_items, 0);
    assert_eq!(intake.requests()[0].status, None);
    // The next request is served.
    assert_eq!(
        logs_status(&intake, Some(API), items(["r".to_owned()])).await,
        202
    );
}

#[tokio::test]
async fn a_stall_times_the_client_out_and_reset_releases_it() {
    let intake = start().await;
    intake.fail_next(Endpoint::Logs, 1, FaultAction::Stall);
    let quick = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let err = quick
        .post(intake.logs_url())
        .header("dd-api-key", API)
        .body(items(["s".to_owned()]))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert_eq!(intake.stats().stalled_now, 1);
    intake.reset();
    intake
        .wait_until(WAIT, |s| s.stalled_now == 0)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_stalled_request_is_released_by_the_admin_endpoint() {
    let intake = start().await;
    intake.fail_next(Endpoint::Validate, 1, FaultAction::Stall);
    let url = format!("{}/api/v1/validate", intake.base_url());
    let waiting =
        tokio::spawn(async move { client().get(url).header("dd-api-key", API).send().await });
    intake
        .wait_until(WAIT, |s| s.stalled_now == 1)
        .await
        .unwrap();
    let resp = client()
        .post(format!("{}/fakeintake/release", intake.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let err = waiting.await.unwrap().unwrap_err();
    assert!(!err.is_timeout(), "released, not timed out: {err:?}");
    intake
        .wait_until(WAIT, |s| s.stalled_now == 0)
        .await
        .unwrap();
}

#[tokio::test]
async fn shutdown_releases_stalled_requests() {
    let intake = start().await;
    intake.fail_next(Endpoint::Logs, 1, FaultAction::Stall);
    let url = intake.logs_url();
    let waiting = tokio::spawn(async move {
        client()
            .post(url)
            .header("dd-api-key", API)
            .body("[]")
            .send()
            .await
    });
    intake
        .wait_until(WAIT, |s| s.stalled_now == 1)
        .await
        .unwrap();
    tokio::time::timeout(WAIT, intake.shutdown())
        .await
        .expect("shutdown does not hang on a stall");
    assert!(waiting.await.unwrap().is_err());
}

#[tokio::test]
async fn faults_are_scripted_over_the_admin_endpoint() {
    let intake = start().await;
    let admin = |p: &str| format!("{}/fakeintake/{p}", intake.base_url());
    let resp = client()
        .post(admin("faults"))
        .json(&json!([
            {"endpoint": "logs", "count": 2, "action": {"status": 503}},
            {"endpoint": "logs", "action": {"status": 429, "retry_after": 1}},
            {"endpoint": "metrics", "action": "reset"}
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(status_and_json(resp).await, (200, json!({"queued": 3})));
    let (_, listed) = status_and_json(client().get(admin("faults")).send().await.unwrap()).await;
    assert_eq!(
        listed["queue"][0],
        json!({"endpoint": "logs", "count": 2, "action": {"status": 503}})
    );
    assert_eq!(listed["queue"][2]["action"], json!("reset"));

    let mut statuses = Vec::new();
    for i in 0..4 {
        statuses.push(logs_status(&intake, Some(API), items([format!("a{i}")])).await);
    }
    assert_eq!(statuses, [503, 503, 429, 202]);
    let (_, stats) = status_and_json(client().get(admin("stats")).send().await.unwrap()).await;
    assert_eq!(stats["total_items"], 1);
    assert_eq!(stats["responses_by_status"]["503"], 2);

    let bad = client()
        .post(admin("faults"))
        .json(&json!({"endpoint": "nowhere", "action": {"status": 503}}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);

    let resp = client().post(admin("reset")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        intake.pending_faults().is_empty(),
        "reset clears the metrics fault"
    );
    assert_eq!(intake.stats().total_items, 0);
}

/// The control endpoints read bodies up to 16 MiB whatever `max_body_bytes` says: at the cap a
/// body is read and applied, one byte over it is 413 (the limit, not a malformed body) and
/// changes nothing.
#[tokio::test]
async fn control_bodies_are_read_up_to_16_mib_and_413_over_it() {
    let intake = FakeIntake::builder()
        .with_api_key(API)
        .with_max_body_bytes(1_000)
        .start()
        .await
        .unwrap();
    let fault = br#"{"endpoint":"logs","action":{"status":503}}"#;
    let padded = |len: usize| {
        let mut body = fault.to_vec();
        body.resize(len, b' ');
        body
    };
    let post = |body: Vec<u8>| {
        client()
            .post(format!("{}/fakeintake/faults", intake.base_url()))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let cap = 16 << 20;
    let (status, json) = status_and_json(post(padded(cap)).await.unwrap()).await;
    assert_eq!((status, json), (200, json!({"queued": 1})));
    let (status, json) = status_and_json(post(padded(cap + 1)).await.unwrap()).await;
    assert_eq!(status, 413, "{json}");
    assert!(
        json.to_string()
            .contains("Payload too large: body over 16777216 bytes"),
        "{json}"
    );
    assert_eq!(
        intake.pending_faults().len(),
        1,
        "the refused body queued nothing"
    );
}

#[tokio::test]
async fn random_faults_replay_with_the_same_seed_over_the_admin_endpoint() {
    async fn run(seed: u64) -> Vec<u16> {
        let intake = start().await;
        let resp = client()
            .post(format!("{}/fakeintake/faults/random", intake.base_url()))
            .json(&json!({"seed": seed, "endpoint": "logs", "faults": [
                {"probability": 0.3, "action": {"status": 503}},
                {"probability": 0.2, "action": {"status": 429, "retry_after": 1}}
            ]}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let mut out = Vec::new();
        for i in 0..30 {
            out.push(logs_status(&intake, Some(API), items([format!("x{i}")])).await);
        }
        out
    }
    let a = run(7).await;
    assert_eq!(a, run(7).await);
    assert!(
        a.contains(&503) && a.contains(&429) && a.contains(&202),
        "{a:?}"
    );
}

// ---------------------------------------------------------------- metrics

async fn post_metrics(
    intake: &FakeIntake,
    path: &str,
    encoding: Option<&str>,
    body: Vec<u8>,
) -> (u16, Value) {
    let mut req = client()
        .post(format!("{}{path}", intake.base_url()))
        .header("dd-api-key", API);
    if let Some(e) = encoding {
        req = req.header("content-encoding", e);
    }
    status_and_json(req.body(body).send().await.unwrap()).await
}

/// Posts `body` uncompressed to `/api/v2/series`; the status.
async fn post_v2(intake: &FakeIntake, body: &Value) -> u16 {
    post_metrics(
        intake,
        "/api/v2/series",
        None,
        serde_json::to_vec(body).unwrap(),
    )
    .await
    .0
}

#[tokio::test]
async fn series_v2_v1_and_distribution_points_are_decoded() {
    let intake = start().await;
    // Points near now: Datadog keeps none more than an hour old.
    let t0 = chrono::Utc::now().timestamp() - 100;
    let t1 = t0 + 10;
    let v2 = json!({"series": [
        {"metric": "clawdstrike.events", "type": 1, "points": [{"timestamp": t0, "value": 3.0}, {"timestamp": t1, "value": 4.0}],
         "tags": ["guard:egress", "env:test"], "resources": [{"name": "node-7", "type": "host"}], "interval": 10},
        {"metric": "clawdstrike.events", "type": 1, "points": [{"timestamp": t0, "value": 5.0}], "tags": ["guard:secret", "env:test"]},
        {"metric": "clawdstrike.queue", "type": 3, "points": [{"timestamp": t0, "value": 9.0}]}
    ]});
    let body = serde_json::to_vec(&v2).unwrap();
    assert_eq!(
        post_metrics(
            &intake,
            "/api/v2/series",
            Some("zstd1"),
            zstd::encode_all(&body[..], 1).unwrap()
        )
        .await,
        (202, json!({"errors": []}))
    );
    assert_eq!(
        post_metrics(&intake, "/api/v2/series", Some("gzip"), gzip(&body))
            .await
            .0,
        202
    );
    let v1 = json!({"series": [{"metric": "old.count", "type": "count", "points": [[t0, 1.5], [t1, 2.5]], "host": "h", "tags": ["a:b"]}]});
    assert_eq!(
        post_metrics(
            &intake,
            "/api/v1/series",
            Some("deflate"),
            zlib(&serde_json::to_vec(&v1).unwrap())
        )
        .await,
        (202, json!({"status": "ok"}))
    );
    let dist = json!({"series": [{"metric": "latency", "points": [[t0, [1.0, 2.0, 3.0]]], "tags": ["p:x"]}]});
    assert_eq!(
        post_metrics(
            &intake,
            "/api/v1/distribution_points",
            None,
            serde_json::to_vec(&dist).unwrap()
        )
        .await
        .0,
        202
    );

    assert_eq!(intake.metric_sum("clawdstrike.events", &[]), 24.0);
    assert_eq!(
        intake.metric_sum("clawdstrike.events", &["guard:egress"]),
        14.0
    );
    assert_eq!(
        intake.metric_sum("clawdstrike.events", &["guard:*", "env:test"]),
        24.0
    );
    assert_eq!(intake.metric_sum("clawdstrike.events", &["env:prod"]), 0.0);
    assert_eq!(intake.metric_sum("old.count", &["a:b"]), 4.0);
    assert_eq!(intake.metric_sum("latency", &[]), 6.0);
    // What Datadog stores: one value per series and timestamp, the last sent. The v2 body was
    // sent twice, so its points count once; the same series with its tags in another order
    // replaces a value; distribution points all count.
    assert_eq!(intake.metric_stored_sum("clawdstrike.events", &[]), 12.0);
    let again = json!({"series": [{"metric": "clawdstrike.events", "type": 1,
        "points": [{"timestamp": t0, "value": 7.0}], "tags": ["env:test", "guard:secret"]}]});
    assert_eq!(post_v2(&intake, &again).await, 202);
    assert_eq!(intake.metric_stored_sum("clawdstrike.events", &[]), 14.0);
    assert_eq!(intake.metric_sum("clawdstrike.events", &[]), 31.0);
    assert_eq!(intake.metric_stored_sum("latency", &[]), 6.0);
    // Tags are normalised as Datadog does: `ENV:Test` is `env:test`, the same series.
    let shouted = json!({"series": [{"metric": "clawdstrike.events", "type": 1,
        "points": [{"timestamp": t0, "value": 1.0}], "tags": ["GUARD:secret", "ENV:Test"]}]});
    assert_eq!(post_v2(&intake, &shouted).await, 202);
    assert_eq!(intake.metric_stored_sum("clawdstrike.events", &[]), 8.0);
    // Points out of Datadog's window (milliseconds for seconds; a day old) are accepted,
    // counted apart, and not stored.
    let stale = json!({"series": [{"metric": "clawdstrike.events", "type": 1, "points": [
        {"timestamp": t0 * 1000, "value": 50.0}, {"timestamp": t0 - 86_400, "value": 60.0}]}]});
    assert_eq!(post_v2(&intake, &stale).await, 202);
    assert_eq!(intake.stats().metric_points_out_of_window, 2);
    assert_eq!(intake.metric_stored_sum("clawdstrike.events", &[]), 8.0);
    assert_eq!(intake.metric_sum("clawdstrike.events", &[]), 142.0);
    // The v1 APIs take deflate or gzip, not zstd.
    for path in ["/api/v1/series", "/api/v1/distribution_points"] {
        let (status, _) = post_metrics(
            &intake,
            path,
            Some("zstd1"),
            zstd::encode_all(&serde_json::to_vec(&dist).unwrap()[..], 1).unwrap(),
        )
        .await;
        assert_eq!(status, 400, "{path}");
    }
    let series = intake.series();
    assert_eq!(series[0].metric_type, "count");
    assert_eq!(series[0].host.as_deref(), Some("node-7"));
    assert_eq!(series[2].metric_type, "gauge");
    assert_eq!(intake.stats().series, 11);
}

#[tokio::test]
async fn series_limits_and_errors() {
    let intake = start().await;
    // Over 512,000 bytes compressed, under 5,242,880 uncompressed.
    let big = json!({"series": [{"metric": "m", "points": [], "tags": [noise(800_000)]}]});
    let body = serde_json::to_vec(&big).unwrap();
    let wire = gzip(&body);
    assert!(
        wire.len() > 512_000 && body.len() < 5_242_880,
        "{} {}",
        wire.len(),
        body.len()
    );
    assert_eq!(
        post_metrics(&intake, "/api/v2/series", Some("gzip"), wire)
            .await
            .0,
        413
    );
    // Over 5,242,880 uncompressed.
    let huge = json!({"series": [{"metric": "m", "points": [], "tags": ["x".repeat(5_242_881)]}]});
    assert_eq!(
        post_metrics(
            &intake,
            "/api/v2/series",
            None,
            serde_json::to_vec(&huge).unwrap()
        )
        .await
        .0,
        413
    );
    // The v1 API takes 3.2 MB compressed.
    assert_eq!(
        post_metrics(&intake, "/api/v1/series", Some("gzip"), gzip(&body))
            .await
            .0,
        202
    );
    // Shape errors name the problem.
    let (status, json) = post_metrics(
        &intake,
        "/api/v2/series",
        None,
        br#"{"series":[{"metric":"m","type":7,"points":[]}]}"#.to_vec(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        json["errors"][0].as_str().unwrap().contains("series[0]"),
        "{json}"
    );
    assert_eq!(
        post_metrics(&intake, "/api/v2/series", None, b"[]".to_vec())
            .await
            .0,
        400
    );
    let resp = client()
        .post(format!("{}/api/v2/series", intake.base_url()))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
}

// ---------------------------------------------------------------- configuration APIs

async fn api(
    intake: &FakeIntake,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = client()
        .request(method, format!("{}{path}", intake.base_url()))
        .header("DD-API-KEY", API)
        .header("DD-APPLICATION-KEY", APP);
    if let Some(b) = body {
        req = req.json(&b);
    }
    status_and_json(req.send().await.unwrap()).await
}

use reqwest::Method as M;

#[tokio::test]
async fn dashboards_crud_list_and_drift() {
    let intake = start().await;
    let dash = json!({"title": "Security posture", "layout_type": "ordered", "widgets": [
        {"definition": {"type": "sunburst", "requests": []}},
        {"definition": {"type": "group", "widgets": [{"definition": {"type": "note", "content": "x"}}]}}
    ]});
    let (status, created) = api(&intake, M::POST, "/api/v1/dashboard", Some(dash.clone())).await;
    assert_eq!(status, 200, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(id.len() == 11 && id.split('-').count() == 3, "{id}");
    assert!(created["created_at"].is_string() && created["url"].as_str().unwrap().contains(&id));

    let (status, list) = api(&intake, M::GET, "/api/v1/dashboard", None).await;
    assert_eq!(status, 200);
    assert_eq!(list["dashboards"][0]["id"], json!(id));
    assert_eq!(list["dashboards"][0]["title"], "Security posture");

    let mut changed = dash.clone();
    changed["title"] = json!("Renamed");
    let (status, updated) = api(
        &intake,
        M::PUT,
        &format!("/api/v1/dashboard/{id}"),
        Some(changed),
    )
    .await;
    assert_eq!(
        (status, &updated["title"], &updated["id"]),
        (200, &json!("Renamed"), &json!(id))
    );
    assert_eq!(updated["created_at"], created["created_at"]);

    // Drift behind the client's back.
    assert!(
        intake.modify_object(ObjectKind::Dashboard, &id, |d| d["title"] =
            json!("Drifted"))
    );
    let (_, got) = api(&intake, M::GET, &format!("/api/v1/dashboard/{id}"), None).await;
    assert_eq!(got["title"], "Drifted");

    let mut pie = dash.clone();
    pie["widgets"][0]["definition"]["type"] = json!("pie");
    let (status, err) = api(&intake, M::POST, "/api/v1/dashboard", Some(pie)).await;
    assert_eq!(status, 400);
    assert!(
        err["errors"][0].as_str().unwrap().contains("`pie`"),
        "{err}"
    );
    let (status, _) = api(
        &intake,
        M::POST,
        "/api/v1/dashboard",
        Some(json!({"title": "t"})),
    )
    .await;
    assert_eq!(status, 400);

    let (status, del) = api(&intake, M::DELETE, &format!("/api/v1/dashboard/{id}"), None).await;
    assert_eq!((status, del), (200, json!({"deleted_dashboard_id": id})));
    assert_eq!(
        api(&intake, M::GET, &format!("/api/v1/dashboard/{id}"), None)
            .await
            .0,
        404
    );
    assert!(intake.objects(ObjectKind::Dashboard).is_empty());
}

#[tokio::test]
async fn configuration_apis_need_the_application_key_too() {
    let intake = start().await;
    let resp = client()
        .get(format!("{}/api/v1/monitor", intake.base_url()))
        .header("DD-API-KEY", API)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let resp = client()
        .get(format!("{}/api/v1/monitor", intake.base_url()))
        .header("DD-API-KEY", API)
        .header("DD-APPLICATION-KEY", "revoked-app")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    intake.add_app_key("revoked-app");
    assert_eq!(api(&intake, M::GET, "/api/v1/monitor", None).await.0, 200);
}

#[tokio::test]
async fn monitors_crud_validate_and_list_filters() {
    let intake = start().await;
    let monitor = json!({"name": "Critical policy violation", "type": "log alert",
        "query": "logs(\"@security.severity:critical\").index(\"*\").rollup(\"count\").last(\"5m\") > 0",
        "message": "{{#is_alert}}Critical{{/is_alert}} @pagerduty-security", "tags": ["team:security"],
        "options": {"thresholds": {"critical": 0}}});
    assert_eq!(
        api(
            &intake,
            M::POST,
            "/api/v1/monitor/validate",
            Some(monitor.clone())
        )
        .await,
        (200, json!({}))
    );
    let mut bad = monitor.clone();
    bad["type"] = json!("log alarm");
    bad.as_object_mut().unwrap().remove("message");
    let (status, err) = api(&intake, M::POST, "/api/v1/monitor/validate", Some(bad)).await;
    assert_eq!(status, 400);
    assert_eq!(err["errors"].as_array().unwrap().len(), 2, "{err}");

    let (status, created) = api(&intake, M::POST, "/api/v1/monitor", Some(monitor.clone())).await;
    assert_eq!(status, 200, "{created}");
    let id = created["id"].as_u64().expect("integer id");
    assert_eq!(created["overall_state"], "No Data");
    let mut other = monitor.clone();
    other["name"] = json!("Other");
    other["tags"] = json!(["team:platform"]);
    api(&intake, M::POST, "/api/v1/monitor", Some(other)).await;

    let (_, list) = api(&intake, M::GET, "/api/v1/monitor", None).await;
    assert_eq!(list.as_array().unwrap().len(), 2);
    let (_, list) = api(&intake, M::GET, "/api/v1/monitor?name=critical", None).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    let (_, list) = api(
        &intake,
        M::GET,
        "/api/v1/monitor?monitor_tags=team%3Aplatform",
        None,
    )
    .await;
    assert_eq!(list[0]["name"], "Other");

    let (status, updated) = api(
        &intake,
        M::PUT,
        &format!("/api/v1/monitor/{id}"),
        Some(json!({"message": "changed"})),
    )
    .await;
    assert_eq!(
        (status, &updated["message"], &updated["name"]),
        (200, &json!("changed"), &monitor["name"])
    );
    let (status, del) = api(&intake, M::DELETE, &format!("/api/v1/monitor/{id}"), None).await;
    assert_eq!((status, del), (200, json!({"deleted_monitor_id": id})));
    assert_eq!(
        api(&intake, M::GET, &format!("/api/v1/monitor/{id}"), None)
            .await
            .0,
        404
    );
}

fn rule(name: &str) -> Value {
    json!({"name": name, "message": "Secret leaked", "isEnabled": true, "type": "log_detection",
        "queries": [{"query": "source:clawdstrike @security.guard:secret_leak", "aggregation": "count", "name": "leaks", "groupByFields": ["@session.id"]}],
        "cases": [{"name": "leak", "status": "critical", "condition": "leaks > 0", "notifications": ["@slack-security"]}],
        "options": {"evaluationWindow": 300, "keepAlive": 3600, "maxSignalDuration": 86400, "detectionMethod": "threshold"},
        "tags": ["tactic:TA0010-exfiltration"]})
}

#[tokio::test]
async fn rules_crud_validation_and_paging() {
    let intake = start().await;
    let base = "/api/v2/security_monitoring/rules";
    let (status, body) = api(
        &intake,
        M::POST,
        &format!("{base}/validation"),
        Some(rule("r")),
    )
    .await;
    assert_eq!((status, body), (204, Value::Null));
    let mut bad = rule("r");
    bad["options"]["evaluationWindow"] = json!(301);
    bad["cases"][0]["status"] = json!("urgent");
    let (status, err) = api(
        &intake,
        M::POST,
        &format!("{base}/validation"),
        Some(bad.clone()),
    )
    .await;
    assert_eq!(status, 400);
    let text = err.to_string();
    assert!(
        text.contains("evaluationWindow") && text.contains("urgent"),
        "{text}"
    );
    assert_eq!(
        api(&intake, M::POST, base, Some(bad)).await.0,
        400,
        "create validates too"
    );

    let mut ids = Vec::new();
    for i in 0..5 {
        let (status, created) = api(&intake, M::POST, base, Some(rule(&format!("rule {i}")))).await;
        assert_eq!(status, 200, "{created}");
        assert_eq!(created["version"], 1);
        ids.push(created["id"].as_str().unwrap().to_owned());
    }
    let (_, page) = api(
        &intake,
        M::GET,
        &format!("{base}?page%5Bsize%5D=2&page%5Bnumber%5D=2"),
        None,
    )
    .await;
    assert_eq!(page["data"].as_array().unwrap().len(), 1);
    assert_eq!(page["data"][0]["name"], "rule 4");
    assert_eq!(page["meta"]["page"]["total_count"], 5);

    let (status, updated) = api(
        &intake,
        M::PUT,
        &format!("{base}/{}", ids[0]),
        Some(json!({"isEnabled": false})),
    )
    .await;
    assert_eq!(
        (status, &updated["isEnabled"], &updated["version"]),
        (200, &json!(false), &json!(2))
    );
    assert_eq!(
        intake.object(ObjectKind::SecurityRule, &ids[0]).unwrap()["isEnabled"],
        false
    );
    assert_eq!(
        api(&intake, M::DELETE, &format!("{base}/{}", ids[0]), None)
            .await
            .0,
        204
    );
    assert_eq!(
        api(&intake, M::GET, &format!("{base}/{}", ids[0]), None)
            .await
            .0,
        404
    );
    assert_eq!(intake.objects(ObjectKind::SecurityRule).len(), 4);
}

#[tokio::test]
async fn rate_limits_answer_429_with_datadog_headers() {
    let intake = start().await;
    intake.set_rate_limit(Some(RateLimit {
        limit: 2,
        period_secs: 60,
    }));
    let get = || {
        client()
            .get(format!("{}/api/v1/dashboard", intake.base_url()))
            .header("DD-API-KEY", API)
            .header("DD-APPLICATION-KEY", APP)
            .send()
    };
    let first = get().await.unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["x-ratelimit-remaining"], "1");
    assert_eq!(get().await.unwrap().status(), 200);
    let limited = get().await.unwrap();
    assert_eq!(limited.status(), 429);
    let h = limited.headers();
    assert_eq!(
        (
            &h["x-ratelimit-limit"],
            &h["x-ratelimit-period"],
            &h["x-ratelimit-remaining"]
        ),
        (
            &"2".parse().unwrap(),
            &"60".parse().unwrap(),
            &"0".parse().unwrap()
        )
    );
    let reset: u64 = h["x-ratelimit-reset"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&reset));

    intake.set_rate_limit(None);
    intake.fail_next(
        FaultTarget::Config,
        1,
        FaultAction::RateLimited {
            limit: 10,
            period: 10,
            reset: 3,
        },
    );
    let injected = get().await.unwrap();
    assert_eq!(injected.status(), 429);
    assert_eq!(injected.headers()["x-ratelimit-reset"], "3");
    assert_eq!(get().await.unwrap().status(), 200);
}

// ---------------------------------------------------------------- signals

#[tokio::test]
async fn signals_list_filter_page_and_change_state() {
    let intake = start().await;
    let t0 = chrono::DateTime::parse_from_rfc3339("2026-02-07T12:00:00Z")
        .unwrap()
        .to_utc();
    let mut ids = Vec::new();
    for (i, guard) in ["secret_leak", "egress", "secret_leak"].iter().enumerate() {
        ids.push(
            intake.add_signal(
                SignalSeed::new(format!("Clawdstrike {guard} #{i}"))
                    .with_tag("source:clawdstrike")
                    .with_tag(format!("guard:{guard}"))
                    .with_timestamp(t0 + chrono::Duration::minutes(i as i64))
                    .with_attribute("security", json!({"guard": guard})),
            ),
        );
    }
    let base = "/api/v2/security_monitoring/signals";
    let (status, all) = api(&intake, M::GET, base, None).await;
    assert_eq!(status, 200);
    assert_eq!(all["data"].as_array().unwrap().len(), 3);
    assert_eq!(all["data"][0]["type"], "signal");
    assert_eq!(
        all["data"][0]["attributes"]["custom"]["workflow"]["triage"]["state"],
        "open"
    );
    assert_eq!(
        all["data"][0]["attributes"]["message"],
        "Clawdstrike secret_leak #0"
    );

    let (_, leaks) = api(
        &intake,
        M::GET,
        &format!("{base}?filter%5Bquery%5D=guard%3Asecret_leak&sort=-timestamp"),
        None,
    )
    .await;
    let msgs: Vec<&str> = leaks["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["attributes"]["message"].as_str().unwrap())
        .collect();
    assert_eq!(
        msgs,
        ["Clawdstrike secret_leak #2", "Clawdstrike secret_leak #0"]
    );
    let (_, window) = api(
        &intake,
        M::GET,
        &format!("{base}?filter[from]=2026-02-07T12:00:30Z&filter[to]=2026-02-07T12:01:30Z"),
        None,
    )
    .await;
    assert_eq!(window["data"].as_array().unwrap().len(), 1);
    assert_eq!(window["data"][0]["id"], json!(ids[1]));

    let (_, page1) = api(&intake, M::GET, &format!("{base}?page[limit]=2"), None).await;
    assert_eq!(page1["data"].as_array().unwrap().len(), 2);
    let after = page1["meta"]["page"]["after"].as_str().unwrap().to_owned();
    let (_, page2) = api(
        &intake,
        M::GET,
        &format!("{base}?page[limit]=2&page[cursor]={after}"),
        None,
    )
    .await;
    assert_eq!(page2["data"].as_array().unwrap().len(), 1);
    assert!(page2["meta"]["page"].get("after").is_none());

    let patch =
        json!({"data": {"attributes": {"state": "archived", "archive_reason": "false_positive"}}});
    let (status, resp) = api(
        &intake,
        M::PATCH,
        &format!("{base}/{}/state", ids[0]),
        Some(patch),
    )
    .await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp["data"]["attributes"]["state"], "archived");
    assert_eq!(intake.signal_state(&ids[0]).as_deref(), Some("archived"));
    let (_, archived) = api(&intake, M::GET, &format!("{base}/{}", ids[0]), None).await;
    assert_eq!(
        archived["data"]["attributes"]["custom"]["workflow"]["triage"]["archiveReason"],
        "false_positive"
    );

    let bad = json!({"data": {"attributes": {"state": "closed"}}});
    assert_eq!(
        api(
            &intake,
            M::PATCH,
            &format!("{base}/{}/state", ids[0]),
            Some(bad)
        )
        .await
        .0,
        400
    );
    let ok = json!({"data": {"attributes": {"state": "under_review"}}});
    assert_eq!(
        api(&intake, M::PATCH, &format!("{base}/nope/state"), Some(ok))
            .await
            .0,
        404
    );
    let (status, searched) = api(
        &intake,
        M::POST,
        &format!("{base}/search"),
        Some(json!({"filter": {"query": "egress"}})),
    )
    .await;
    assert_eq!(
        (status, searched["data"].as_array().unwrap().len()),
        (200, 1)
    );
}

// ---------------------------------------------------------------- the binary

#[tokio::test]
async fn the_binary_starts_serves_and_stops() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_clawdstrike-fakeintake"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--api-key",
            "bin-key",
            "--api-key",
            "bin-key-2",
        ])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the binary");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .expect("it prints its address")
        .unwrap()
        .unwrap();
    let url = line
        .strip_prefix("fakeintake listening on ")
        .expect(&line)
        .to_owned();
    for key in ["bin-key", "bin-key-2"] {
        let resp = client()
            .get(format!("{url}/api/v1/validate"))
            .header("dd-api-key", key)
            .send()
            .await
            .unwrap();
        assert_eq!(status_and_json(resp).await, (200, json!({"valid": true})));
    }
    let resp = client()
        .get(format!("{url}/api/v1/validate"))
        .header("dd-api-key", "other")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let (_, stats) = status_and_json(
        client()
            .get(format!("{url}/fakeintake/stats"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(stats["requests"], 3);
    child.kill().await.unwrap();
}

// ---------------------------------------------------------------- request bodies

async fn connect(intake: &FakeIntake) -> tokio::net::TcpStream {
    tokio::net::TcpStream::connect(intake.local_addr())
        .await
        .unwrap()
}

/// Sends one HTTP/1.1 request on `stream` (the body in `chunks`: announced with
/// `Content-Length`, or sent with chunked transfer encoding) and reads the response: its status
/// and body. The connection stays open for the next request.
async fn exchange(
    stream: &mut tokio::net::TcpStream,
    headers: &str,
    chunks: &[&[u8]],
    chunked: bool,
) -> (u16, String) {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let mut out =
        format!("POST /api/v2/logs HTTP/1.1\r\nhost: intake\r\nDD-API-KEY: {API}\r\n{headers}");
    if chunked {
        out.push_str("transfer-encoding: chunked\r\n\r\n");
    } else {
        let len: usize = chunks.iter().map(|c| c.len()).sum();
        out.push_str(&format!("content-length: {len}\r\n\r\n"));
    }
    let mut wire = out.into_bytes();
    for chunk in chunks {
        if chunked {
            wire.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        }
        wire.extend_from_slice(chunk);
        if chunked {
            wire.extend_from_slice(b"\r\n");
        }
    }
    if chunked {
        wire.extend_from_slice(b"0\r\n\r\n");
    }
    stream.write_all(&wire).await.unwrap();
    let mut reader = BufReader::new(&mut *stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).await.unwrap();
    let status: u16 = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let mut len = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).await.unwrap();
        if line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            len = value.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body).await.unwrap();
    (status, String::from_utf8(body).unwrap())
}

#[tokio::test]
async fn bodies_over_max_body_bytes_are_413_whether_announced_or_streamed() {
    let intake = FakeIntake::builder()
        .with_api_key(API)
        .with_max_body_bytes(1_000)
        .start()
        .await
        .unwrap();
    let fits = items((0..10).map(|i| format!("id-{i}")));
    assert!(fits.len() <= 1_000);
    let over = items((0..40).map(|i| format!("id-{i}")));
    assert!(over.len() > 1_000);
    let (half, rest) = over.split_at(over.len() / 2);
    for chunked in [false, true] {
        // A connection per request: hyper may close one whose refused body was not read.
        let mut conn = connect(&intake).await;
        let (status, body) = exchange(&mut conn, "", &[half, rest], chunked).await;
        assert_eq!(status, 413, "chunked {chunked}");
        assert!(
            body.contains("Payload too large: body over 1000 bytes"),
            "{body}"
        );
        // A body that fits, split the same way.
        let mut conn = connect(&intake).await;
        let (status, _) = exchange(&mut conn, "", &[&fits[..5], &fits[5..]], chunked).await;
        assert_eq!(status, 202, "chunked {chunked}");
    }
    assert_eq!(intake.total_items(), 20);
}

/// One connection sends bodies of different sizes and encodings in turn, so that its body
/// buffer is reused (compressed bodies are not kept: their decoded copy is): every item is
/// counted once with its own id, and the kept items of earlier requests are intact.
#[tokio::test]
async fn a_connection_reusing_its_body_buffer_keeps_every_item_intact() {
    let intake = FakeIntake::builder()
        .with_api_key(API)
        .with_keep_items(true)
        .start()
        .await
        .unwrap();
    let mut conn = connect(&intake).await;
    let mut sent = Vec::new();
    for (round, count) in [300usize, 3, 1_000, 40, 700].into_iter().enumerate() {
        let ids: Vec<String> = (0..count).map(|i| format!("r{round}-{i}")).collect();
        let body = items(ids.clone());
        let (chunks, gzip_header) = if round % 2 == 0 {
            (gzip(&body), "content-encoding: gzip\r\n")
        } else {
            (body, "")
        };
        let (a, b) = chunks.split_at(chunks.len() / 3);
        let (status, reply) = exchange(&mut conn, gzip_header, &[a, b], round == 3).await;
        assert_eq!(status, 202, "round {round}: {reply}");
        sent.extend(ids);
    }
    assert_eq!(intake.total_items(), sent.len() as u64);
    assert_eq!(intake.unique_event_ids(), sent.len() as u64);
    let kept: Vec<String> = intake
        .log_items()
        .into_iter()
        .map(|item| {
            let id = item.value["event_id"].as_str().unwrap().to_owned();
            assert_eq!(item.value["message"], format!("m {id}"));
            id
        })
        .collect();
    assert_eq!(kept, sent);
}

#[tokio::test]
async fn an_id_table_sized_up_front_counts_the_same_before_and_after_a_reset() {
    let intake = FakeIntake::builder()
        .with_api_key(API)
        .with_expected_event_ids(10)
        .start()
        .await
        .unwrap();
    for _ in 0..2 {
        // More ids than the table was sized for, and repeats.
        for request in 0..3u128 {
            let ids = (0..1_000u128).map(|i| uuid_text((request * 1_000 + i) % 2_000));
            assert_eq!(logs_status(&intake, Some(API), items(ids)).await, 202);
        }
        assert_eq!(intake.total_items(), 3_000);
        assert_eq!(intake.unique_event_ids(), 2_000);
        assert_eq!(intake.stats().duplicate_event_ids, 1_000);
        intake.reset();
        assert_eq!(intake.unique_event_ids(), 0);
    }
}

/// A canonical (lowercase, hyphenated) UUID for `n`.
fn uuid_text(n: u128) -> String {
    format!("01940000-0000-7000-8000-{n:012x}")
}
