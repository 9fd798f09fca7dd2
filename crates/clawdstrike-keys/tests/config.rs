//! The configuration form: every YAML shape parses, literals are secret from the start, and
//! mistakes get errors that do not echo a key.

use clawdstrike_keys::{KeyError, KeySource, KubernetesSource, VaultAuth};
use secrecy::ExposeSecret;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Config {
    api_key: KeySource,
}

fn parse(yaml: &str) -> Result<KeySource, serde_yaml_ng::Error> {
    serde_yaml_ng::from_str::<Config>(yaml).map(|c| c.api_key)
}

#[test]
fn a_plain_string_is_a_literal_that_debug_does_not_show() {
    let source = parse("api_key: \"literal-5f3a9c\"").unwrap();
    match &source {
        KeySource::Literal(key) => assert_eq!(key.expose_secret(), "literal-5f3a9c"),
        other => panic!("{other:?}"),
    }
    assert!(!format!("{source:?}").contains("literal-5f3a9c"));
}

#[test]
fn env_and_file_forms() {
    assert!(
        matches!(parse("api_key: { env: DD_API_KEY }").unwrap(), KeySource::Env(v) if v == "DD_API_KEY")
    );
    assert!(matches!(
        parse("api_key: { file: /var/run/secrets/datadog/api-key }").unwrap(),
        KeySource::File(p) if p.to_str() == Some("/var/run/secrets/datadog/api-key")
    ));
    assert!(matches!(KeySource::env_default_api(), KeySource::Env(v) if v == "DD_API_KEY"));
    assert!(matches!(KeySource::env_default_app(), KeySource::Env(v) if v == "DD_APP_KEY"));
}

#[test]
fn vault_forms_with_each_auth() {
    let source = parse(
        r#"
api_key:
  vault:
    address: https://vault:8200
    path: datadog
    field: api_key
    ca_cert: /etc/ssl/vault-ca.pem
    auth: { token: "vault-token-8d1e" }
"#,
    )
    .unwrap();
    let KeySource::Vault(vault) = &source else {
        panic!("{source:?}")
    };
    assert_eq!(vault.mount, "secret", "default mount");
    assert_eq!(
        vault.ca_cert.as_deref().and_then(|p| p.to_str()),
        Some("/etc/ssl/vault-ca.pem")
    );
    assert!(matches!(&vault.auth, VaultAuth::Token(t) if t.expose_secret() == "vault-token-8d1e"));
    assert!(!format!("{source:?}").contains("vault-token-8d1e"));

    let source = parse(
        r#"
api_key:
  vault:
    address: http://127.0.0.1:8200
    mount: kv
    path: dd
    field: key
    auth: { approle: { role_id: r-1, secret_id: "secret-id-77ab" } }
"#,
    )
    .unwrap();
    let KeySource::Vault(vault) = &source else {
        panic!("{source:?}")
    };
    match &vault.auth {
        VaultAuth::AppRole {
            role_id,
            secret_id,
            mount,
        } => {
            assert_eq!(role_id, "r-1");
            assert_eq!(secret_id.expose_secret(), "secret-id-77ab");
            assert_eq!(mount, "approle");
        }
        other => panic!("{other:?}"),
    }
    assert!(!format!("{source:?}").contains("secret-id-77ab"));

    let source = parse(
        "api_key: { vault: { address: 'https://v', path: p, field: f, auth: { kubernetes: { role: dd } } } }",
    )
    .unwrap();
    let KeySource::Vault(vault) = &source else {
        panic!("{source:?}")
    };
    match &vault.auth {
        VaultAuth::Kubernetes {
            role,
            jwt_path,
            mount,
        } => {
            assert_eq!(role, "dd");
            assert_eq!(
                jwt_path.to_str(),
                Some("/var/run/secrets/kubernetes.io/serviceaccount/token")
            );
            assert_eq!(mount, "kubernetes");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn kubernetes_form_defaults_to_the_agent_convention() {
    let source = parse("api_key: { kubernetes: {} }").unwrap();
    assert!(matches!(&source, KeySource::Kubernetes(k) if *k == KubernetesSource::default_api()));
    let source =
        parse("api_key: { kubernetes: { secret: s, key: app-key, namespace: monitoring } }")
            .unwrap();
    assert!(matches!(
        &source,
        KeySource::Kubernetes(k) if *k == KubernetesSource::new("s", "app-key").with_namespace("monitoring")
    ));
    assert_eq!(KubernetesSource::default_app().key, "app-key");
    assert_eq!(KubernetesSource::default_app().secret, "datadog-secret");
}

#[test]
fn a_key_that_yaml_reads_as_a_number_is_refused_without_echoing_it() {
    let err = parse("api_key: 918273645546372819")
        .unwrap_err()
        .to_string();
    assert!(err.contains("quote"), "{err}");
    assert!(!err.contains("918273645546372819"), "{err}");
}

#[test]
fn unknown_or_double_forms_are_refused_clearly() {
    let err = parse("api_key: { envv: DD_API_KEY }")
        .unwrap_err()
        .to_string();
    assert!(err.contains("envv") && err.contains("env"), "{err}");
    let err = parse("api_key: { env: A, file: /b }")
        .unwrap_err()
        .to_string();
    assert!(err.contains("exactly one"), "{err}");
    // A key written in braces reads as a map whose key is the secret: never echoed.
    for yaml in [
        "api_key: {d41d8cd98f00b204e9800998ecf8427e}",
        "api_key: { env: A, d41d8cd98f00b204e9800998ecf8427e }",
    ] {
        let err = parse(yaml).unwrap_err().to_string();
        assert!(!err.contains("d41d8cd98f00"), "{err}");
        assert!(err.contains("not shown"), "{err}");
    }
    let err = parse(
        "api_key: { vault: { address: x, path: p, field: f, auth: { token: t }, bogus: 1 } }",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("bogus"), "{err}");
}

#[tokio::test]
async fn literal_and_env_sources_become_providers() {
    // The second is trimmed like every other source: a variable interpolated into the file
    // may end in a newline, which a header cannot carry.
    for yaml in ["api_key: literal-0c4d", "api_key: \"  literal-0c4d\\n\""] {
        let provider = parse(yaml).unwrap().into_provider().await.unwrap();
        assert_eq!(
            provider.fetch().await.unwrap().expose_secret(),
            "literal-0c4d"
        );
        assert!(!format!("{provider:?} {}", provider.describe()).contains("literal-0c4d"));
    }

    // Cargo sets CARGO_PKG_NAME for the test process.
    let provider = KeySource::Env("CARGO_PKG_NAME".into())
        .into_provider()
        .await
        .unwrap();
    assert_eq!(
        provider.fetch().await.unwrap().expose_secret(),
        env!("CARGO_PKG_NAME")
    );
    assert_eq!(provider.describe(), "environment variable CARGO_PKG_NAME");

    let provider = KeySource::Env("CLAWDSTRIKE_KEYS_SURELY_UNSET_VAR".into())
        .into_provider()
        .await
        .unwrap();
    let err = provider.fetch().await.unwrap_err();
    assert!(matches!(err, KeyError::NotFound { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("CLAWDSTRIKE_KEYS_SURELY_UNSET_VAR"),
        "{err}"
    );
}

#[cfg(not(feature = "vault"))]
#[tokio::test]
async fn vault_without_the_feature_is_a_clear_error() {
    let source = parse(
        "api_key: { vault: { address: 'https://v', path: p, field: f, auth: { token: t } } }",
    )
    .unwrap();
    let err = source.into_provider().await.unwrap_err();
    assert!(
        matches!(
            err,
            KeyError::FeatureDisabled {
                feature: "vault",
                ..
            }
        ),
        "{err}"
    );
}

#[cfg(not(feature = "kubernetes"))]
#[tokio::test]
async fn kubernetes_without_the_feature_is_a_clear_error() {
    let err = parse("api_key: { kubernetes: {} }")
        .unwrap()
        .into_provider()
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            KeyError::FeatureDisabled {
                feature: "kubernetes",
                ..
            }
        ),
        "{err}"
    );
}
