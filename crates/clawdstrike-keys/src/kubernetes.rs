//! The Kubernetes Secret provider, built on `kube` and `k8s-openapi` (feature `kubernetes`).

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::watch;

use crate::provider::key_from_bytes;
use crate::source::SERVICE_ACCOUNT_NAMESPACE_PATH;
use crate::{ApiKeyProvider, KeyError, KubernetesSource};

/// Reads one key of one Kubernetes Secret, and watches that Secret for changes.
///
/// [`fetch`](ApiKeyProvider::fetch) GETs the Secret. The watch is limited by
/// `fieldSelector=metadata.name=<secret>`, so the pod's Role needs only `get`, `list` and
/// `watch` on that one Secret (`resourceNames: [<secret>]`). When the watch sees a new value,
/// the provider signals [`changes`](ApiKeyProvider::changes) and the
/// [`KeyHolder`](crate::KeyHolder) refreshes: the value it publishes is the one a GET reads,
/// never the watch event's, so a watch event that lags behind a read cannot put an older key
/// back. When the watch stream drops or fails, it reconnects with exponential backoff
/// (0.8 s doubling to 30 s, with jitter).
pub struct KubernetesProvider {
    api: Api<Secret>,
    secret: String,
    key: String,
    description: String,
    changes: watch::Receiver<()>,
    watch_task: tokio::task::JoinHandle<()>,
}

struct Shared {
    /// The last value the watch saw, to signal only real changes.
    last_seen: Mutex<Option<SecretString>>,
    changes: watch::Sender<()>,
}

impl std::fmt::Debug for KubernetesProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesProvider")
            .field("description", &self.description)
            .finish_non_exhaustive()
    }
}

impl Drop for KubernetesProvider {
    fn drop(&mut self) {
        self.watch_task.abort();
    }
}

impl KubernetesProvider {
    /// Builds the provider from a configuration: the client from the in-cluster service account
    /// or the local kubeconfig; the namespace from `source`, else the pod's service-account
    /// namespace, else the client's default namespace. Starts the watch.
    ///
    /// # Errors
    ///
    /// [`KeyError::Invalid`] when no Kubernetes configuration can be found.
    pub async fn from_source(source: KubernetesSource) -> Result<Self, KeyError> {
        crate::tls::ensure_crypto_provider();
        let description = format!("kubernetes secret {}#{}", source.secret, source.key);
        let client = kube::Client::try_default().await.map_err(|e| {
            KeyError::invalid(
                &description,
                format!("no Kubernetes configuration (not in a cluster, no kubeconfig?): {e}"),
            )
        })?;
        let namespace = match source.namespace {
            Some(ns) => ns,
            None => match tokio::fs::read_to_string(SERVICE_ACCOUNT_NAMESPACE_PATH).await {
                Ok(ns) if !ns.trim().is_empty() => ns.trim().to_owned(),
                _ => client.default_namespace().to_owned(),
            },
        };
        Ok(KubernetesProvider::new(
            client,
            &namespace,
            &source.secret,
            &source.key,
        ))
    }

    /// A provider reading `key` of Secret `secret` in `namespace` through `client`; starts the
    /// watch on the current Tokio runtime.
    ///
    /// # Panics
    ///
    /// When called outside a Tokio runtime.
    pub fn new(client: kube::Client, namespace: &str, secret: &str, key: &str) -> Self {
        crate::tls::ensure_crypto_provider();
        let description = format!("kubernetes secret {namespace}/{secret}#{key}");
        let api: Api<Secret> = Api::namespaced(client, namespace);
        let (tx, changes) = watch::channel(());
        let shared = Arc::new(Shared {
            last_seen: Mutex::new(None),
            changes: tx,
        });
        let watch_task = tokio::spawn(watch_secret(
            api.clone(),
            secret.to_owned(),
            key.to_owned(),
            description.clone(),
            shared,
        ));
        KubernetesProvider {
            api,
            secret: secret.to_owned(),
            key: key.to_owned(),
            description,
            changes,
            watch_task,
        }
    }

    fn classify(&self, err: &kube::Error) -> KeyError {
        classify(&self.description, err)
    }
}

fn classify(description: &str, err: &kube::Error) -> KeyError {
    match err {
        kube::Error::Api(status) => {
            let detail = format!(
                "API server answered {} {}: {}",
                status.code, status.reason, status.message
            );
            match status.code {
                401 | 403 => KeyError::forbidden(description, detail),
                404 => KeyError::not_found(description, detail),
                // 0: an error body without a code (a gateway's JSON page), not the API
                // server's Status; 408: a timeout. Both pass.
                0 | 408 | 429 | 500.. => KeyError::unavailable(description, detail),
                _ => KeyError::invalid(description, detail),
            }
        }
        kube::Error::SerdeError(_) => {
            KeyError::invalid(description, "the API server's answer is not a Secret")
        }
        other => KeyError::unavailable(description, other.to_string()),
    }
}

/// The value of `key` in `secret`'s data (base64 already decoded by `ByteString`).
fn extract(description: &str, secret: &Secret, key: &str) -> Result<SecretString, KeyError> {
    let value = secret
        .data
        .as_ref()
        .and_then(|data| data.get(key))
        .ok_or_else(|| {
            KeyError::not_found(description, format!("the Secret has no key `{key}`"))
        })?;
    key_from_bytes(description, &value.0)
}

async fn watch_secret(
    api: Api<Secret>,
    secret: String,
    key: String,
    description: String,
    shared: Arc<Shared>,
) {
    let config = watcher::Config::default().fields(&format!("metadata.name={secret}"));
    let mut events = std::pin::pin!(watcher::watcher(api, config).default_backoff());
    while let Some(event) = events.next().await {
        match event {
            Ok(Event::Apply(object) | Event::InitApply(object)) => {
                if object.metadata.name.as_deref() != Some(secret.as_str()) {
                    continue;
                }
                match extract(&description, &object, &key) {
                    Ok(value) => {
                        let changed = {
                            let mut last =
                                shared.last_seen.lock().unwrap_or_else(|e| e.into_inner());
                            let changed = last
                                .as_ref()
                                .is_none_or(|l| l.expose_secret() != value.expose_secret());
                            if changed {
                                *last = Some(value.clone());
                            }
                            changed
                        };
                        if changed {
                            // Only a signal: the refresh that follows reads the Secret itself,
                            // so a watch event that lags behind a read cannot put an older key
                            // back.
                            tracing::debug!(provider = %description, "watch saw a new key");
                            shared.changes.send_replace(());
                        }
                    }
                    Err(err) => {
                        tracing::warn!(provider = %description, error = %err, "watched Secret is unusable; keeping the last key");
                    }
                }
            }
            Ok(Event::Delete(_)) => {
                tracing::warn!(provider = %description, "watched Secret was deleted; keeping the last key");
            }
            Ok(Event::Init | Event::InitDone) => {}
            Err(err) => {
                tracing::warn!(
                    provider = %description,
                    error = %err,
                    "Secret watch failed; reconnecting with backoff"
                );
            }
        }
    }
}

#[async_trait]
impl ApiKeyProvider for KubernetesProvider {
    fn describe(&self) -> String {
        self.description.clone()
    }

    async fn fetch(&self) -> Result<SecretString, KeyError> {
        let object = self
            .api
            .get(&self.secret)
            .await
            .map_err(|e| self.classify(&e))?;
        extract(&self.description, &object, &self.key)
    }

    fn changes(&self) -> Option<watch::Receiver<()>> {
        Some(self.changes.clone())
    }
}
