//! The API key never appears in logs (captured at TRACE level, our crates and the HTTP stack),
//! in `Debug` output, or in errors, across rotation, rejection and health checks.

mod common;

use std::time::Duration;

use clawdstrike_datadog::encode::Codec;
use clawdstrike_export::Exporter;
use clawdstrike_fakeintake::{Endpoint, FaultAction};
use clawdstrike_keys::SecretString;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_never_appear_in_trace_logs_debug_or_errors() {
    let logs = captured_logs();
    let dir = tempfile::tempdir().unwrap();
    let (holder, key_file) = file_key(dir.path(), KEY_A).await;
    let h = Harness::start(
        Codec::Gzip,
        holder.clone(),
        fast_pipeline().with_max_batch_events(100),
    )
    .await;

    // Faults, rotation, then revocation, then health checks in every state.
    h.intake
        .fail_next(Endpoint::Logs, 2, FaultAction::status(503));
    h.submit_all(&events(300)).await;
    h.intake.set_api_keys([SecretString::from(KEY_B)]);
    std::fs::write(&key_file, KEY_B).unwrap();
    h.submit_all(&events(300)).await;
    let healthy = h.exporter.health_check().await;
    h.intake.revoke_api_key(KEY_B);
    h.submit_all(&events(300)).await;
    let degraded = h.exporter.health_check().await;
    let reports = h.pipeline.shutdown(Duration::from_secs(60)).await;

    let mut texts = vec![
        String::from_utf8_lossy(&logs.lock().unwrap()).into_owned(),
        format!("{:?}", h.exporter),
        format!("{:?}", holder),
        format!("{:?} {:?} {:?}", healthy, degraded, reports),
        std::fs::read_to_string(h.dead_letter_path()).unwrap_or_default(),
    ];
    texts.extend(h.dead_letters().iter().map(|d| d["error"].to_string()));
    assert!(
        texts[0].len() > 10_000,
        "the capture must have seen TRACE output ({} bytes)",
        texts[0].len()
    );
    assert!(texts[0].contains("TRACE"), "TRACE level was captured");
    for text in &texts {
        for key in [KEY_A, KEY_B, APP_KEY] {
            assert!(
                !text.contains(key),
                "a key leaked into: {}",
                &text[..text.len().min(300)]
            );
        }
    }
    assert!(reports[0].dead_lettered > 0, "the revocation scenario ran");
}

/// A proxy or firewall error page may echo the request's headers, keys included, and
/// `api_url` may carry a proxy's user and password: the signals and configuration clients'
/// errors show neither.
#[tokio::test]
async fn error_pages_that_echo_the_keys_do_not_carry_them_into_errors() {
    use clawdstrike_datadog::config_api::{ConfigClient, ObjectKind};
    use clawdstrike_datadog::signals::{ListQuery, SignalsClient};
    use clawdstrike_fakeintake::{FakeIntake, FaultTarget};

    let intake = FakeIntake::start(SecretString::from(KEY_A), SecretString::from(APP_KEY))
        .await
        .unwrap();
    // The keys sit across the points where the clients cut a page (300 and 512 characters):
    // blanked after a cut, their first characters would remain.
    let mut page = format!("<html>Bad gateway.{}", "a".repeat(260));
    page.push_str("DD-API-KEY: ");
    assert_eq!(page.len(), 290);
    page.push_str(KEY_A);
    page.push_str(&"b".repeat(500 - page.len() - 20));
    page.push_str("DD-APPLICATION-KEY: ");
    page.push_str(APP_KEY);
    page.push_str("</html>");
    let echo = FaultAction::Status {
        status: 502,
        retry_after: None,
        body: Some(page),
    };
    intake.fail_next(FaultTarget::All, 2, echo);
    let base = intake.base_url();
    let with_credentials = base.replacen("http://", "http://proxyuser:proxysecretpw@", 1);
    let signals =
        SignalsClient::new(&with_credentials, static_key(KEY_A), static_key(APP_KEY)).unwrap();
    let signals_err = signals
        .list(&ListQuery::default())
        .await
        .expect_err("the fault answers 502")
        .to_string();
    let config = ConfigClient::new(
        base.as_str(),
        SecretString::from(KEY_A),
        SecretString::from(APP_KEY),
    )
    .unwrap()
    .with_max_attempts(1);
    let config_err = config
        .list(ObjectKind::Monitor)
        .await
        .expect_err("the fault answers 502")
        .to_string();
    for text in [&signals_err, &config_err] {
        assert!(
            text.contains("502") || text.contains("Bad gateway"),
            "{text}"
        );
        assert!(
            text.contains("[reda"),
            "the page is shown, keys blanked: {text}"
        );
        for secret in [&KEY_A[..8], &APP_KEY[..8], "proxysecretpw"] {
            assert!(!text.contains(secret), "{secret} leaked into: {text}");
        }
    }
    intake.shutdown().await;
}

/// The configuration client does not follow a redirect: it would carry both keys to the other
/// host (reqwest strips only `Authorization` and cookies there) and turn a POST into a GET.
/// The error names where the redirect pointed.
#[tokio::test]
async fn the_configuration_client_follows_no_redirect() {
    use clawdstrike_datadog::config_api::{ConfigClient, ObjectKind};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let elsewhere = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    elsewhere.set_nonblocking(true).unwrap();
    let target = format!("http://{}/api/v1/monitor", elsewhere.local_addr().unwrap());
    // Shown without its credentials or query (they may hold secrets).
    let location = target.replacen("http://", "http://user:redirsecret@", 1) + "?token=redirsecret";
    let redirecting = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", redirecting.local_addr().unwrap());
    let answer = format!(
        "HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let server = tokio::spawn(async move {
        let (mut conn, _) = redirecting.accept().await.unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = conn.read(&mut buf).await.unwrap();
            assert!(n > 0, "the request head ends");
            head.extend_from_slice(&buf[..n]);
        }
        conn.write_all(answer.as_bytes()).await.unwrap();
        conn.shutdown().await.unwrap();
    });
    let config = ConfigClient::new(
        base.as_str(),
        SecretString::from(KEY_A),
        SecretString::from(APP_KEY),
    )
    .unwrap();
    let err = config
        .list(ObjectKind::Monitor)
        .await
        .expect_err("a redirect is an error");
    server.await.unwrap();
    assert_eq!(err.status(), Some(302));
    let text = err.to_string();
    assert!(
        text.contains(&target) && text.contains("not followed"),
        "{text}"
    );
    assert!(!text.contains("redirsecret"), "{text}");
    // Had the client followed it, it would have connected before returning.
    assert_eq!(
        elsewhere.accept().map(|_| ()).unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock,
        "the redirect's target was contacted"
    );
}
