//! The Kubernetes Secret provider against an emulated API server on loopback that speaks the
//! real wire format (Secret JSON with base64 data, chunked watch streams, Status bodies).
#![cfg(feature = "kubernetes")]

mod common;

use std::sync::Arc;
use std::time::Duration;

use clawdstrike_keys::{ApiKeyProvider, KeyError, KeyHolder, KubernetesProvider, RefreshOptions};
use common::fake_apiserver::FakeApiServer;
use common::{eventually, random_key};
use secrecy::ExposeSecret;

const NS: &str = "monitoring";

#[tokio::test]
async fn gets_the_key_and_watches_only_that_secret() {
    let server = FakeApiServer::start(NS).await;
    let key = random_key("k8s-get");
    server.put_secret("datadog-secret", &[("api-key", &key), ("app-key", "other")]);
    server.put_secret("unrelated", &[("api-key", "not-this-one")]);

    let provider = KubernetesProvider::new(server.client(), NS, "datadog-secret", "api-key");
    assert_eq!(
        provider.describe(),
        "kubernetes secret monitoring/datadog-secret#api-key"
    );
    assert_eq!(provider.fetch().await.unwrap().expose_secret(), key);

    eventually("the watch is open", Duration::from_secs(10), || async {
        server.open_watches() == 1
    })
    .await;
    let queries = server.collection_queries();
    assert!(!queries.is_empty());
    for query in &queries {
        assert!(
            query.contains("fieldSelector=metadata.name%3Ddatadog-secret")
                || query.contains("fieldSelector=metadata.name=datadog-secret"),
            "a list/watch without the name field selector needs a wider Role: {query}"
        );
    }
}

#[tokio::test]
async fn a_missing_key_in_the_secret_is_not_found() {
    let server = FakeApiServer::start(NS).await;
    server.put_secret("datadog-secret", &[("app-key", "x")]);
    let provider = KubernetesProvider::new(server.client(), NS, "datadog-secret", "api-key");
    let err = provider.fetch().await.unwrap_err();
    assert!(matches!(err, KeyError::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("`api-key`"), "{err}");

    let provider = KubernetesProvider::new(server.client(), NS, "absent", "api-key");
    let err = provider.fetch().await.unwrap_err();
    assert!(matches!(err, KeyError::NotFound { .. }), "{err}");
}

#[tokio::test]
async fn a_rotation_arrives_through_the_watch() {
    let server = FakeApiServer::start(NS).await;
    let first = random_key("k8s-rot1");
    server.put_secret("datadog-secret", &[("api-key", &first)]);
    let provider = Arc::new(KubernetesProvider::new(
        server.client(),
        NS,
        "datadog-secret",
        "api-key",
    ));
    let holder = KeyHolder::new(provider, RefreshOptions::default())
        .await
        .unwrap();
    assert_eq!(holder.current().expose(), first);
    eventually("the watch is open", Duration::from_secs(10), || async {
        server.open_watches() == 1
    })
    .await;
    let gets_before = server.gets();

    let second = random_key("k8s-rot2");
    server.put_secret("datadog-secret", &[("api-key", &second)]);

    // No refresher, no rejection: the watch alone brings the new key.
    eventually(
        "the watched rotation is published",
        Duration::from_secs(10),
        || async { holder.current().expose() == second },
    )
    .await;
    assert!(holder.current().generation() >= 2);
    // The watch only signals; the value is read by a GET, so a watch event lagging behind a
    // read can never put an older key back.
    assert!(server.gets() > gets_before, "the refresh reads the Secret");
}

/// A gateway's 502 whose JSON page is not the API server's Status (kube reads it with code 0)
/// is an outage that passes, not an invalid configuration: the holder keeps its key and backs
/// off rather than give up.
#[tokio::test]
async fn a_gateways_502_without_a_status_code_is_transient() {
    let server = FakeApiServer::start(NS).await;
    server.put_secret("datadog-secret", &[("api-key", "whatever")]);
    server.set_gateway_down(true);
    let provider = KubernetesProvider::new(server.client(), NS, "datadog-secret", "api-key");
    let err = provider.fetch().await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(matches!(err, KeyError::Unavailable { .. }), "{err}");
    server.set_gateway_down(false);
    assert_eq!(provider.fetch().await.unwrap().expose_secret(), "whatever");
}

#[tokio::test]
async fn rbac_denial_is_a_clear_forbidden_error() {
    let server = FakeApiServer::start(NS).await;
    server.put_secret("datadog-secret", &[("api-key", "whatever")]);
    server.set_forbidden(true);
    let provider = KubernetesProvider::new(server.client(), NS, "datadog-secret", "api-key");
    let err = provider.fetch().await.unwrap_err();
    assert!(matches!(err, KeyError::Forbidden { .. }), "{err}");
    assert!(!err.is_transient());
    let text = err.to_string();
    assert!(text.contains("403"), "{text}");
    assert!(
        text.contains("secrets \"datadog-secret\" is forbidden"),
        "{text}"
    );
    assert!(text.contains("monitoring/datadog-secret#api-key"), "{text}");

    let err = KeyHolder::new(Arc::new(provider), RefreshOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, KeyError::Forbidden { .. }), "{err}");
}

#[tokio::test]
async fn the_watch_reconnects_after_the_stream_drops() {
    let server = FakeApiServer::start(NS).await;
    let first = random_key("k8s-drop1");
    server.put_secret("datadog-secret", &[("api-key", &first)]);
    let provider = Arc::new(KubernetesProvider::new(
        server.client(),
        NS,
        "datadog-secret",
        "api-key",
    ));
    let holder = KeyHolder::new(provider, RefreshOptions::default())
        .await
        .unwrap();
    eventually("the watch is open", Duration::from_secs(10), || async {
        server.open_watches() == 1
    })
    .await;
    let connections = server.watch_connections();

    // The stream ends (API server restart, idle timeout); a rotation happens meanwhile.
    server.drop_watches();
    let second = random_key("k8s-drop2");
    server.put_secret("datadog-secret", &[("api-key", &second)]);

    eventually(
        "the watch reconnected and delivered the rotation",
        Duration::from_secs(20),
        || async { holder.current().expose() == second },
    )
    .await;
    // The new watch lists the Secret before it watches: the rotation may be seen (and read)
    // before the watch connection itself is counted.
    eventually("the watch reconnected", Duration::from_secs(10), || async {
        server.watch_connections() > connections
    })
    .await;

    // And it keeps working on the new stream.
    eventually("the new watch is open", Duration::from_secs(10), || async {
        server.open_watches() == 1
    })
    .await;
    let third = random_key("k8s-drop3");
    server.put_secret("datadog-secret", &[("api-key", &third)]);
    eventually(
        "the next rotation arrives",
        Duration::from_secs(10),
        || async { holder.current().expose() == third },
    )
    .await;
}
