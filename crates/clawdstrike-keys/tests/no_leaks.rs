//! No key value in any log line (TRACE level, every crate, spans included), in any `Debug` of
//! the holder, providers, configuration or current key, nor in any error message, across the
//! file, literal, env, holder, Vault and Kubernetes scenarios.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use clawdstrike_keys::{
    ApiKeyProvider, FileProvider, KeyError, KeyHolder, KeySource, RefreshOptions, RefreshOutcome,
};
use common::random_key;
use secrecy::SecretString;

/// Keys (and other secrets) used, and every text that must not contain them.
#[derive(Default)]
struct Ledger {
    secrets: Vec<String>,
    texts: Vec<String>,
}

impl Ledger {
    fn secret(&mut self, label: &str) -> String {
        let key = random_key(label);
        self.secrets.push(key.clone());
        key
    }
    fn text(&mut self, text: impl Into<String>) {
        self.texts.push(text.into());
    }
    fn debug(&mut self, value: &dyn std::fmt::Debug) {
        self.texts.push(format!("{value:?}"));
        self.texts.push(format!("{value:#?}"));
    }
    fn outcome(&mut self, outcome: &RefreshOutcome) {
        self.debug(outcome);
        if let RefreshOutcome::Failed(err) = outcome {
            self.error(err);
        }
    }
    fn error(&mut self, err: &KeyError) {
        self.texts.push(err.to_string());
        self.debug(err);
    }
    fn holder(&mut self, holder: &KeyHolder) {
        self.debug(holder);
        self.debug(&holder.current());
        self.text(holder.describe().to_owned());
    }
}

#[derive(Debug)]
struct Flaky {
    key: Mutex<String>,
    down: AtomicBool,
}

#[async_trait]
impl ApiKeyProvider for Flaky {
    fn describe(&self) -> String {
        "flaky test provider".into()
    }
    async fn fetch(&self) -> Result<SecretString, KeyError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(KeyError::Unavailable {
                provider: self.describe(),
                detail: "timeout".into(),
            });
        }
        Ok(SecretString::from(self.key.lock().unwrap().clone()))
    }
}

async fn file_scenarios(ledger: &mut Ledger) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("api-key");
    let k1 = ledger.secret("leak-file1");
    std::fs::write(&path, format!("{k1}\n")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let source: KeySource = serde_json::from_value(serde_json::json!({ "file": path })).unwrap();
    ledger.debug(&source);
    let holder = KeyHolder::from_source(
        source,
        RefreshOptions::default().with_min_interval(Duration::ZERO),
    )
    .await
    .unwrap();
    let _refresher = holder.spawn_refresher();
    let k2 = ledger.secret("leak-file2");
    std::fs::write(dir.path().join("new"), &k2).unwrap();
    std::fs::rename(dir.path().join("new"), &path).unwrap();
    ledger.outcome(&holder.refresh_after_rejection(1).await);
    assert_eq!(holder.current().expose(), k2);
    ledger.outcome(&holder.refresh_after_rejection(2).await); // unchanged
    std::fs::remove_file(&path).unwrap();
    ledger.outcome(&holder.refresh_now().await); // failed, not found
    std::fs::write(&path, "").unwrap();
    ledger.outcome(&holder.refresh_now().await); // failed, empty
    ledger.holder(&holder);
    ledger.debug(&FileProvider::new(&path));
}

async fn literal_and_holder_scenarios(ledger: &mut Ledger) {
    let literal = ledger.secret("leak-literal");
    let source: KeySource = serde_yaml_ng::from_str(&format!("\"{literal}\"")).unwrap();
    ledger.debug(&source);
    let provider = source.clone().into_provider().await.unwrap();
    ledger.debug(&provider);
    ledger.text(provider.describe());
    let holder = KeyHolder::from_source(source, RefreshOptions::default())
        .await
        .unwrap();
    ledger.outcome(&holder.refresh_after_rejection(1).await);
    ledger.holder(&holder);
    ledger.holder(&KeyHolder::from_static(SecretString::from(literal)));

    // A key YAML reads as a number: the parse error must not echo it.
    let digits = format!(
        "{}",
        700_000_000_000_000_000u64 + rand::random_range(0..99_999_999_999u64)
    );
    ledger.secrets.push(digits.clone());
    let err = serde_yaml_ng::from_str::<KeySource>(&digits).unwrap_err();
    ledger.text(err.to_string());

    let k1 = ledger.secret("leak-flaky1");
    let flaky = Arc::new(Flaky {
        key: Mutex::new(k1),
        down: AtomicBool::new(false),
    });
    let holder = KeyHolder::new(flaky.clone(), RefreshOptions::default())
        .await
        .unwrap();
    let k2 = ledger.secret("leak-flaky2");
    *flaky.key.lock().unwrap() = k2;
    flaky.down.store(true, Ordering::SeqCst);
    ledger.outcome(&holder.refresh_after_rejection(1).await);
    ledger.outcome(&holder.refresh_after_rejection(1).await);
    flaky.down.store(false, Ordering::SeqCst);
    ledger.outcome(&holder.refresh_now().await);
    ledger.holder(&holder);
}

#[cfg(feature = "vault")]
async fn vault_scenarios(ledger: &mut Ledger) {
    use clawdstrike_keys::{VaultAuth, VaultProvider, VaultSource};
    let bao = common::bao::Bao::start().await;
    ledger.secrets.push(bao.root_token.clone());
    let k1 = ledger.secret("leak-vault1");
    bao.put("datadog", "api_key", &k1).await;
    let (role_id, secret_id) = bao
        .approle("datadog", |role| {
            role.token_num_uses(1u64);
        })
        .await;
    ledger.secrets.push(secret_id.clone());
    let source = VaultSource::new(
        &bao.address,
        "datadog",
        "api_key",
        VaultAuth::approle(role_id.clone(), SecretString::from(secret_id.clone())),
    );
    ledger.debug(&source);
    let provider = Arc::new(VaultProvider::new(source).unwrap());
    let holder = KeyHolder::new(provider.clone(), RefreshOptions::default())
        .await
        .unwrap();
    let k2 = ledger.secret("leak-vault2");
    bao.put("datadog", "api_key", &k2).await;
    // The one-use token is spent: 403, login again, read.
    ledger.outcome(&holder.refresh_after_rejection(1).await);
    assert_eq!(holder.current().expose(), k2);
    assert!(provider.logins() >= 2);
    ledger.debug(&provider);
    ledger.holder(&holder);

    // Denied by policy, and a revoked fixed token.
    let denied = VaultProvider::new(VaultSource::new(
        &bao.address,
        "elsewhere",
        "api_key",
        VaultAuth::approle(role_id, SecretString::from(secret_id)),
    ))
    .unwrap();
    ledger.error(&denied.fetch().await.unwrap_err());
    let token = VaultSource::new(
        &bao.address,
        "datadog",
        "api_key",
        VaultAuth::Token(SecretString::from(bao.root_token.clone())),
    );
    ledger.debug(&token);
    let mut missing = token.clone();
    missing.field = "nope".into();
    ledger.error(
        &VaultProvider::new(missing)
            .unwrap()
            .fetch()
            .await
            .unwrap_err(),
    );
}

#[cfg(feature = "kubernetes")]
async fn kubernetes_scenarios(ledger: &mut Ledger) {
    use clawdstrike_keys::KubernetesProvider;
    use common::eventually;
    let server = common::fake_apiserver::FakeApiServer::start("ns").await;
    let k1 = ledger.secret("leak-k8s1");
    server.put_secret("datadog-secret", &[("api-key", &k1)]);
    let provider = Arc::new(KubernetesProvider::new(
        server.client(),
        "ns",
        "datadog-secret",
        "api-key",
    ));
    ledger.debug(&provider);
    let holder = KeyHolder::new(provider, RefreshOptions::default())
        .await
        .unwrap();
    eventually("watch open", Duration::from_secs(10), || async {
        server.open_watches() == 1
    })
    .await;
    let k2 = ledger.secret("leak-k8s2");
    server.put_secret("datadog-secret", &[("api-key", &k2)]);
    eventually("watched rotation", Duration::from_secs(10), || async {
        holder.current().expose() == k2
    })
    .await;
    server.drop_watches();
    let k3 = ledger.secret("leak-k8s3");
    server.put_secret("datadog-secret", &[("api-key", &k3)]);
    eventually(
        "rotation after reconnect",
        Duration::from_secs(20),
        || async { holder.current().expose() == k3 },
    )
    .await;
    server.set_forbidden(true);
    ledger.outcome(&holder.refresh_now().await);
    server.drop_watches();
    // Let the watcher hit the 403 (it logs it) before looking at the logs.
    let queries = server.collection_queries().len();
    eventually(
        "the watcher retried and got 403",
        Duration::from_secs(20),
        || async { server.collection_queries().len() > queries },
    )
    .await;
    ledger.holder(&holder);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_key_in_logs_debug_or_errors() {
    let logs = common::capture_all_logs();
    let mut ledger = Ledger::default();

    file_scenarios(&mut ledger).await;
    literal_and_holder_scenarios(&mut ledger).await;
    #[cfg(feature = "vault")]
    vault_scenarios(&mut ledger).await;
    #[cfg(feature = "kubernetes")]
    kubernetes_scenarios(&mut ledger).await;

    let logs = logs.text();
    // The capture really saw the scenarios, down to TRACE.
    assert!(logs.contains("API key changed"), "{logs}");
    assert!(logs.contains("API key refresh failed; keeping the last good key"));
    assert!(logs.contains("readable by its group or by others"));
    assert!(logs.contains("TRACE"), "TRACE events were not captured");
    #[cfg(feature = "vault")]
    assert!(logs.contains("Vault answered 403; logging in again"));

    for secret in &ledger.secrets {
        assert!(
            !logs.contains(secret.as_str()),
            "a secret appears in the logs:\n{logs}"
        );
        for text in &ledger.texts {
            assert!(
                !text.contains(secret.as_str()),
                "a secret appears in: {text}"
            );
        }
    }
    assert!(
        ledger.texts.len() > 40,
        "only {} texts checked",
        ledger.texts.len()
    );
}

/// The environment provider, in a child process: the test cannot set variables in its own
/// process (`set_var` is unsafe), so it runs itself again with `DD_API_KEY` set and checks the
/// child's whole output.
#[test]
fn no_env_key_in_logs_debug_or_errors() {
    const CHILD: &str = "CLAWDSTRIKE_KEYS_ENV_LEAK_CHILD";
    if std::env::var_os(CHILD).is_some() {
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(std::io::stdout)
            .init();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let key = std::env::var("DD_API_KEY").unwrap();
            let source = KeySource::env_default_api();
            println!("{source:?}");
            let holder = KeyHolder::from_source(source, RefreshOptions::default())
                .await
                .unwrap();
            assert_eq!(holder.current().expose(), key);
            println!(
                "{holder:?} {:?} {:?}",
                holder.current(),
                holder.refresh_now().await
            );
            let err =
                KeyHolder::from_source(KeySource::env_default_app(), RefreshOptions::default())
                    .await
                    .unwrap_err();
            println!("{err} {err:?}");
            println!("child scenarios done");
        });
        return;
    }
    let key = random_key("leak-env");
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "no_env_key_in_logs_debug_or_errors",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .env("DD_API_KEY", &key)
        .env_remove("DD_APP_KEY")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "child failed:\n{text}");
    assert!(text.contains("child scenarios done"), "{text}");
    assert!(text.contains("API key loaded"), "{text}");
    assert!(
        text.contains("environment variable DD_APP_KEY: not found"),
        "{text}"
    );
    assert!(!text.contains(&key), "the env key leaked:\n{text}");
}
