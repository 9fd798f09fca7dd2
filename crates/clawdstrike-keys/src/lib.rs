//! API-key providers with rotation while running.
//!
//! Datadog API and application keys come from an [`ApiKeyProvider`] (environment variable,
//! file, Vault KV v2, Kubernetes Secret, or your own). A [`KeyHolder`] keeps the current key
//! for every request to read without locking, and replaces it when it changes:
//!
//! - on a schedule ([`KeyHolder::spawn_refresher`]), with a random first delay so that a fleet
//!   started together does not stampede the store;
//! - when the service rejects the key ([`KeyHolder::refresh_after_rejection`]): single-flight
//!   (a hundred concurrent 403s cause one fetch), throttled (one fetch per `min_interval`), and
//!   answering [`RefreshOutcome::Changed`] only when the store really holds a different key, so
//!   a revoked key is not retried forever;
//! - when the provider learns of a change by itself (the Kubernetes watch).
//!
//! A failed refresh keeps the last good key. Subscribers ([`KeyHolder::subscribe`]) learn of
//! each new generation. Keys are [`secrecy::SecretString`] from the moment they are read and
//! never appear in `Debug`, `Display`, errors or logs.
//!
//! ```
//! use clawdstrike_keys::{KeyHolder, KeySource, RefreshOptions, RefreshOutcome};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), clawdstrike_keys::KeyError> {
//! let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("api-key");
//! std::fs::write(&path, "first-key\n").unwrap();
//!
//! let source: KeySource = serde_json::from_value(serde_json::json!({ "file": path })).unwrap();
//! let holder = KeyHolder::from_source(source, RefreshOptions::default()).await?;
//! let _refresher = holder.spawn_refresher(); // stops when dropped
//!
//! let key = holder.current();
//! assert_eq!(key.expose(), "first-key");
//!
//! // The key is rotated, and Datadog answers 403 to the old one.
//! std::fs::write(&path, "second-key\n").unwrap();
//! match holder.refresh_after_rejection(key.generation()).await {
//!     RefreshOutcome::Changed { .. } => assert_eq!(holder.current().expose(), "second-key"),
//!     other => panic!("{other:?}"),
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Configuration
//!
//! [`KeySource`] is the serde form the Datadog and CLI configurations embed: a plain string is
//! the key itself; `{ env: VAR }`, `{ file: PATH }`, `{ vault: {..} }` and
//! `{ kubernetes: {..} }` select a provider (see [`KeySource`] for every field).
//!
//! # Features
//!
//! | feature | default | adds |
//! |---|---|---|
//! | `vault` | no | [`VaultProvider`]: Vault / OpenBao KV v2 via `vaultrs` (token, AppRole, Kubernetes auth; logs in again on 403; custom CA) |
//! | `kubernetes` | no | [`KubernetesProvider`]: one Secret via `kube` (get + watch by `metadata.name`) |
//!
//! Without a feature, the matching [`KeySource`] form still parses and
//! [`KeySource::into_provider`] fails with [`KeyError::FeatureDisabled`].
//!
//! TLS is rustls with the aws-lc-rs crypto provider only; the providers install it as the
//! process default when no default is installed yet.
//!
//! # Architecture invariant
//!
//! Depends on none of our crates; Vault and Kubernetes live behind cargo features.

mod error;
mod holder;
#[cfg(feature = "kubernetes")]
mod kubernetes;
mod provider;
mod source;
#[cfg(any(feature = "vault", feature = "kubernetes"))]
mod tls;
#[cfg(feature = "vault")]
mod vault;

pub use error::KeyError;
pub use holder::{CurrentKey, KeyHolder, RefreshOptions, RefreshOutcome, RefresherHandle};
#[cfg(feature = "kubernetes")]
pub use kubernetes::KubernetesProvider;
pub use provider::{ApiKeyProvider, EnvProvider, FileProvider, StaticProvider};
pub use secrecy::{ExposeSecret, SecretString};
pub use source::{
    DEFAULT_API_KEY_ENV, DEFAULT_APP_KEY_ENV, DEFAULT_KUBERNETES_API_KEY,
    DEFAULT_KUBERNETES_APP_KEY, DEFAULT_KUBERNETES_SECRET, KeySource, KubernetesSource,
    SERVICE_ACCOUNT_NAMESPACE_PATH, SERVICE_ACCOUNT_TOKEN_PATH, VaultAuth, VaultSource,
};
#[cfg(any(feature = "vault", feature = "kubernetes"))]
pub use tls::ensure_crypto_provider;
#[cfg(feature = "vault")]
pub use vault::VaultProvider;
