//! The Vault provider against a real OpenBao dev server (`bao`, spawned per test).
#![cfg(feature = "vault")]

mod common;

use std::sync::Arc;
use std::time::Duration;

use clawdstrike_keys::{
    ApiKeyProvider, KeyError, KeyHolder, KeySource, RefreshOptions, RefreshOutcome, VaultAuth,
    VaultProvider, VaultSource,
};
use common::bao::Bao;
use common::{eventually, random_key};
use secrecy::{ExposeSecret, SecretString};

fn token_source(bao: &Bao, path: &str) -> VaultSource {
    VaultSource::new(
        &bao.address,
        path,
        "api_key",
        VaultAuth::Token(SecretString::from(bao.root_token.clone())),
    )
}

#[tokio::test]
async fn reads_a_kv2_field_with_a_token() {
    let bao = Bao::start().await;
    let key = random_key("vault-read");
    bao.put("datadog", "api_key", &key).await;

    let provider = VaultProvider::new(token_source(&bao, "datadog")).unwrap();
    assert_eq!(provider.fetch().await.unwrap().expose_secret(), key);
    assert!(provider.describe().contains("secret/datadog#api_key"));

    // Missing field and missing path are NotFound, naming what is missing.
    let mut source = token_source(&bao, "datadog");
    source.field = "app_key".into();
    let err = VaultProvider::new(source)
        .unwrap()
        .fetch()
        .await
        .unwrap_err();
    assert!(matches!(err, KeyError::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("app_key"), "{err}");
    let err = VaultProvider::new(token_source(&bao, "nowhere"))
        .unwrap()
        .fetch()
        .await
        .unwrap_err();
    assert!(matches!(err, KeyError::NotFound { .. }), "{err}");

    // A secret whose latest version is deleted (`kv delete`) answers 404 with metadata, not
    // Vault's errors array: NotFound all the same (not a transient outage, retried forever),
    // naming the status, never showing the body.
    vaultrs::kv2::delete_latest(&bao.root(), "secret", "datadog")
        .await
        .expect("soft delete");
    let err = provider.fetch().await.unwrap_err();
    assert!(matches!(err, KeyError::NotFound { .. }), "{err}");
    assert!(!err.is_transient(), "{err}");
    assert!(err.to_string().contains("HTTP 404"), "{err}");
}

/// A fixed periodic token (the usual kind for a service) is renewed by the reads once a third
/// of its period is spent: it used to expire after one period, and every read after with it.
#[tokio::test]
async fn a_periodic_token_is_renewed_by_the_reads() {
    let bao = Bao::start().await;
    let key = random_key("vault-renew");
    bao.put("datadog", "api_key", &key).await;
    let token = vaultrs::token::new(
        &bao.root(),
        Some(vaultrs::api::token::requests::CreateTokenRequest::builder().period("8s")),
    )
    .await
    .unwrap()
    .client_token;
    let mut source = token_source(&bao, "datadog");
    source.auth = VaultAuth::Token(SecretString::from(token.clone()));
    let provider = VaultProvider::new(source).unwrap();
    let ttl = || async {
        vaultrs::token::lookup(&bao.root(), &token)
            .await
            .unwrap()
            .ttl
    };
    // Fresh: a read does not renew it (TTLs are whole seconds).
    assert_eq!(provider.fetch().await.unwrap().expose_secret(), key);
    let fresh = ttl().await;
    assert!(fresh > 5, "not renewed yet: ttl {fresh} s");
    // More than a third of its period spent (the token's own clock), a read renews it: its
    // TTL rises again.
    eventually(
        "a third of the period spent",
        Duration::from_secs(15),
        || async { ttl().await <= 4 },
    )
    .await;
    assert_eq!(provider.fetch().await.unwrap().expose_secret(), key);
    let after = ttl().await;
    assert!(after > 4, "renewed: ttl {after} s");
}

/// A token and a namespace from a file or a Secret made with `--from-file` end in a newline:
/// trimmed (vaultrs panicked on the first request, a newline being no header value). One with
/// a newline inside is refused as invalid at the start, naming it but not showing it.
#[tokio::test]
async fn a_token_ending_in_a_newline_is_trimmed_and_one_with_a_newline_inside_is_refused() {
    let bao = Bao::start().await;
    let key = random_key("vault-newline");
    bao.put("datadog", "api_key", &key).await;
    let mut source = token_source(&bao, "datadog");
    source.auth = VaultAuth::Token(SecretString::from(format!("{}\n", bao.root_token)));
    let provider = VaultProvider::new(source).unwrap();
    assert_eq!(provider.fetch().await.unwrap().expose_secret(), key);

    let mut source = token_source(&bao, "datadog");
    source.auth = VaultAuth::Token(SecretString::from(format!("{}\nx", bao.root_token)));
    let err = VaultProvider::new(source).unwrap_err();
    assert!(matches!(err, KeyError::Invalid { .. }), "{err}");
    assert!(err.to_string().contains("Vault token"), "{err}");
    assert!(!err.to_string().contains(&bao.root_token), "{err}");
    let mut source = token_source(&bao, "datadog");
    source.namespace = Some("team\nb".to_owned());
    let err = VaultProvider::new(source).unwrap_err();
    assert!(err.to_string().contains("namespace"), "{err}");
}

#[tokio::test]
async fn a_rotation_is_picked_up_by_the_schedule_and_by_a_rejection() {
    let bao = Bao::start().await;
    let first = random_key("vault-rot1");
    bao.put("datadog", "api_key", &first).await;
    let source = KeySource::Vault(token_source(&bao, "datadog"));
    let options = RefreshOptions::default()
        .with_interval(Duration::from_millis(50))
        .with_first_delay_max(Duration::from_millis(50));
    let holder = KeyHolder::from_source(source, options).await.unwrap();
    assert_eq!(holder.current().expose(), first);

    // Scheduled refresh.
    let mut generations = holder.subscribe();
    let refresher = holder.spawn_refresher();
    let second = random_key("vault-rot2");
    bao.put("datadog", "api_key", &second).await;
    tokio::time::timeout(Duration::from_secs(10), generations.changed())
        .await
        .expect("the scheduled refresh publishes the new key")
        .unwrap();
    assert_eq!(holder.current().expose(), second);
    drop(refresher);

    // Rejection-triggered refresh.
    let rejected = holder.current();
    let third = random_key("vault-rot3");
    bao.put("datadog", "api_key", &third).await;
    assert_eq!(
        holder.refresh_after_rejection(rejected.generation()).await,
        RefreshOutcome::Changed {
            generation: rejected.generation() + 1
        }
    );
    assert_eq!(holder.current().expose(), third);
}

#[tokio::test]
async fn approle_login_reads_the_key() {
    let bao = Bao::start().await;
    let key = random_key("vault-approle");
    bao.put("datadog", "api_key", &key).await;
    let (role_id, secret_id) = bao.approle("datadog", |_| {}).await;

    let source = VaultSource::new(
        &bao.address,
        "datadog",
        "api_key",
        VaultAuth::approle(role_id, SecretString::from(secret_id)),
    );
    let provider = VaultProvider::new(source).unwrap();
    assert_eq!(provider.fetch().await.unwrap().expose_secret(), key);
    assert_eq!(provider.logins(), 1);
    assert_eq!(provider.fetch().await.unwrap().expose_secret(), key);
    assert_eq!(provider.logins(), 1, "the token is reused while valid");
}

#[tokio::test]
async fn a_used_up_token_gets_403_and_the_provider_logs_in_again() {
    // A token valid for one request: the second read gets the same 403 as an expired token.
    let bao = Bao::start().await;
    let key = random_key("vault-uses");
    bao.put("datadog", "api_key", &key).await;
    let (role_id, secret_id) = bao
        .approle("datadog", |role| {
            role.token_num_uses(1u64);
        })
        .await;
    let provider = VaultProvider::new(VaultSource::new(
        &bao.address,
        "datadog",
        "api_key",
        VaultAuth::approle(role_id, SecretString::from(secret_id)),
    ))
    .unwrap();
    assert_eq!(provider.fetch().await.unwrap().expose_secret(), key);
    assert_eq!(provider.logins(), 1);
    assert_eq!(provider.fetch().await.unwrap().expose_secret(), key);
    assert_eq!(
        provider.logins(),
        2,
        "403, then a fresh login and one retry"
    );
}

#[tokio::test]
async fn a_short_ttl_token_expires_and_is_renewed_by_logging_in_again() {
    let bao = Bao::start().await;
    let key = random_key("vault-ttl");
    bao.put("datadog", "api_key", &key).await;
    let (role_id, secret_id) = bao
        .approle("datadog", |role| {
            role.token_ttl("1s").token_max_ttl("1s");
        })
        .await;
    let provider = VaultProvider::new(VaultSource::new(
        &bao.address,
        "datadog",
        "api_key",
        VaultAuth::approle(role_id, SecretString::from(secret_id)),
    ))
    .unwrap();
    assert_eq!(provider.fetch().await.unwrap().expose_secret(), key);
    assert_eq!(provider.logins(), 1);
    // Keep reading: every read succeeds, and once the 1 s token expires a new login happens.
    eventually(
        "a second login after the token expired",
        Duration::from_secs(20),
        || async {
            assert_eq!(provider.fetch().await.unwrap().expose_secret(), key);
            provider.logins() >= 2
        },
    )
    .await;
}

#[tokio::test]
async fn a_policy_denial_is_forbidden_after_one_relogin_and_the_last_key_stays() {
    let bao = Bao::start().await;
    let key = random_key("vault-deny");
    bao.put("datadog", "api_key", &key).await;
    bao.put("other", "api_key", "unused").await;
    let (role_id, secret_id) = bao.approle("datadog", |_| {}).await;
    let provider = VaultProvider::new(VaultSource::new(
        &bao.address,
        "other",
        "api_key",
        VaultAuth::approle(role_id, SecretString::from(secret_id)),
    ))
    .unwrap();
    let err = provider.fetch().await.unwrap_err();
    assert!(matches!(err, KeyError::Forbidden { .. }), "{err}");
    assert!(!err.is_transient());
    assert!(err.to_string().contains("policy"), "{err}");
    assert_eq!(
        provider.logins(),
        2,
        "logged in, got 403, logged in again once, gave up"
    );

    // A fixed token that is revoked: Forbidden, and the holder keeps the last good key.
    let child = vaultrs::token::new(&bao.root(), None)
        .await
        .unwrap()
        .client_token;
    let holder = KeyHolder::new(
        Arc::new(
            VaultProvider::new(VaultSource::new(
                &bao.address,
                "datadog",
                "api_key",
                VaultAuth::Token(SecretString::from(child.clone())),
            ))
            .unwrap(),
        ),
        RefreshOptions::default(),
    )
    .await
    .unwrap();
    vaultrs::token::revoke(&bao.root(), &child).await.unwrap();
    match holder.refresh_after_rejection(1).await {
        RefreshOutcome::Failed(KeyError::Forbidden { .. }) => {}
        other => panic!("expected Failed(Forbidden), got {other:?}"),
    }
    assert_eq!(holder.current().expose(), key);
}

#[tokio::test]
async fn tls_with_a_custom_ca() {
    let bao = Bao::start_tls().await;
    let key = random_key("vault-tls");
    bao.put("datadog", "api_key", &key).await;
    let ca = bao.ca_cert.clone().unwrap();

    let provider = VaultProvider::new(token_source(&bao, "datadog").with_ca_cert(&ca)).unwrap();
    assert_eq!(provider.fetch().await.unwrap().expose_secret(), key);

    // Without the CA the server's certificate is not trusted.
    let err = VaultProvider::new(token_source(&bao, "datadog"))
        .unwrap()
        .fetch()
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err}");

    // A CA file that does not exist is a clear configuration error.
    let err = VaultProvider::new(token_source(&bao, "datadog").with_ca_cert("/nonexistent/ca.pem"))
        .unwrap_err();
    assert!(matches!(err, KeyError::Invalid { .. }), "{err}");
    assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
}

/// The CA file is read again when it changes (a bundle rotated by cert-manager, Vault's
/// certificate reissued under the new CA): the client used to keep the CA it was built with,
/// and every fetch failed verification until a restart. Here the file first holds another
/// server's CA, then, renamed over it, the right one.
#[tokio::test]
async fn a_changed_ca_file_is_used_without_a_restart() {
    let bao = Bao::start_tls().await;
    let other = Bao::start_tls().await;
    let key = random_key("vault-ca-rotation");
    bao.put("datadog", "api_key", &key).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::copy(other.ca_cert.as_ref().unwrap(), &ca).unwrap();
    let provider = VaultProvider::new(token_source(&bao, "datadog").with_ca_cert(&ca)).unwrap();
    let err = provider.fetch().await.unwrap_err();
    assert!(err.is_transient(), "not trusted yet: {err}");
    let next = dir.path().join("ca.pem.new");
    std::fs::copy(bao.ca_cert.as_ref().unwrap(), &next).unwrap();
    std::fs::rename(&next, &ca).unwrap();
    assert_eq!(provider.fetch().await.unwrap().expose_secret(), key);
}

/// A token lookup that failed under the old CA put the periodic token's renewal off for
/// minutes; the CA changing clears that wait, so the first read with the new CA renews a token
/// that is due (it would otherwise have expired meanwhile).
#[tokio::test]
async fn a_changed_ca_file_lets_a_due_token_be_renewed_at_once() {
    let bao = Bao::start_tls().await;
    let other = Bao::start_tls().await;
    let key = random_key("vault-ca-renew");
    bao.put("datadog", "api_key", &key).await;
    let token = vaultrs::token::new(
        &bao.root(),
        Some(vaultrs::api::token::requests::CreateTokenRequest::builder().period("12s")),
    )
    .await
    .unwrap()
    .client_token;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::copy(other.ca_cert.as_ref().unwrap(), &ca).unwrap();
    let mut source = token_source(&bao, "datadog").with_ca_cert(&ca);
    source.auth = VaultAuth::Token(SecretString::from(token.clone()));
    let provider = VaultProvider::new(source).unwrap();
    // The lookup fails (the server is not trusted): renewal is put off.
    assert!(provider.fetch().await.unwrap_err().is_transient());
    let ttl = || async {
        vaultrs::token::lookup(&bao.root(), &token)
            .await
            .unwrap()
            .ttl
    };
    // Past a third of its period (TTL 8 s of 12): due for renewal, with 7 s left to spare.
    eventually(
        "a third of the period spent",
        Duration::from_secs(15),
        || async { ttl().await <= 7 },
    )
    .await;
    let next = dir.path().join("ca.pem.new");
    std::fs::copy(bao.ca_cert.as_ref().unwrap(), &next).unwrap();
    std::fs::rename(&next, &ca).unwrap();
    assert_eq!(provider.fetch().await.unwrap().expose_secret(), key);
    let after = ttl().await;
    assert!(after > 7, "renewed: ttl {after} s");
}

#[tokio::test]
async fn a_bad_address_is_invalid_and_an_unreachable_one_is_transient() {
    let err = VaultProvider::new(VaultSource::new(
        "not a url",
        "p",
        "f",
        VaultAuth::Token(SecretString::from("t")),
    ))
    .unwrap_err();
    assert!(matches!(err, KeyError::Invalid { .. }), "{err}");

    // Credentials in the address are refused, and not echoed.
    let err = VaultProvider::new(VaultSource::new(
        "https://user:pa55word@vault:8200",
        "p",
        "f",
        VaultAuth::Token(SecretString::from("t")),
    ))
    .unwrap_err();
    assert!(matches!(err, KeyError::Invalid { .. }), "{err}");
    assert!(!err.to_string().contains("pa55word"), "{err}");

    // A CA to trust with an http:// address: TLS was meant, and secrets would go in clear.
    let mut source = VaultSource::new(
        "http://vault:8200",
        "p",
        "f",
        VaultAuth::Token(SecretString::from("t")),
    );
    source.ca_cert = Some("/etc/ssl/private-ca.pem".into());
    let err = VaultProvider::new(source).unwrap_err();
    assert!(matches!(err, KeyError::Invalid { .. }), "{err}");
    assert!(err.to_string().contains("ca_cert"), "{err}");

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = VaultProvider::new(VaultSource::new(
        format!("http://127.0.0.1:{port}"),
        "p",
        "f",
        VaultAuth::Token(SecretString::from("t")),
    ))
    .unwrap()
    .fetch()
    .await
    .unwrap_err();
    assert!(err.is_transient(), "{err}");
}

/// Kubernetes auth for real: OpenBao validates the service-account token by calling the
/// TokenReview API of the emulated Kubernetes API server.
#[cfg(feature = "kubernetes")]
#[tokio::test]
async fn kubernetes_auth_logs_in_with_the_service_account_token() {
    use common::fake_apiserver::{FakeApiServer, service_account_jwt};
    let apiserver = FakeApiServer::start("monitoring").await;
    let jwt = service_account_jwt("monitoring", "clawdstrike");
    apiserver.add_service_account_token(&jwt, "monitoring", "clawdstrike");

    let bao = Bao::start_tls().await;
    let key = random_key("vault-k8s-auth");
    bao.put("datadog", "api_key", &key).await;
    bao.kubernetes_auth(&apiserver.url, "datadog", "monitoring", "clawdstrike")
        .await;

    let dir = tempfile::tempdir().unwrap();
    let jwt_path = dir.path().join("token");
    std::fs::write(&jwt_path, format!("{jwt}\n")).unwrap();
    let auth = VaultAuth::Kubernetes {
        role: "clawdstrike".into(),
        jwt_path: jwt_path.clone(),
        mount: "kubernetes".into(),
    };
    let ca = bao.ca_cert.clone().unwrap();
    let source = VaultSource::new(&bao.address, "datadog", "api_key", auth).with_ca_cert(&ca);
    let provider = VaultProvider::new(source).unwrap();
    assert_eq!(provider.fetch().await.unwrap().expose_secret(), key);
    assert_eq!(provider.logins(), 1);
    assert!(
        apiserver.token_reviews() >= 1,
        "Vault asked the API server to review the token"
    );

    // A token the API server does not accept: a clear Forbidden error.
    std::fs::write(&jwt_path, service_account_jwt("monitoring", "intruder")).unwrap();
    let source = VaultSource::new(
        &bao.address,
        "datadog",
        "api_key",
        VaultAuth::Kubernetes {
            role: "clawdstrike".into(),
            jwt_path,
            mount: "kubernetes".into(),
        },
    )
    .with_ca_cert(&ca);
    let err = VaultProvider::new(source)
        .unwrap()
        .fetch()
        .await
        .unwrap_err();
    assert!(matches!(err, KeyError::Forbidden { .. }), "{err}");
    assert!(err.to_string().contains("Kubernetes login"), "{err}");

    // Outside a pod the default token file is missing: NotFound, naming it.
    let source = VaultSource::new(
        &bao.address,
        "datadog",
        "api_key",
        VaultAuth::kubernetes("clawdstrike"),
    )
    .with_ca_cert(&ca);
    let err = VaultProvider::new(source)
        .unwrap()
        .fetch()
        .await
        .unwrap_err();
    assert!(matches!(err, KeyError::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("serviceaccount/token"), "{err}");
}
