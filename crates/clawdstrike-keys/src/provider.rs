//! The [`ApiKeyProvider`] trait and the providers that need no cargo feature: a fixed key, an
//! environment variable and a file.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use secrecy::zeroize::Zeroizing;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::watch;

use crate::KeyError;

/// Where a key comes from: fetches the current secret on demand.
///
/// Implement it for any store; the [`KeyHolder`](crate::KeyHolder) calls [`fetch`](Self::fetch)
/// at start, on its schedule and when Datadog rejects the key. Implementations must never put
/// the key in their `Debug`, in [`describe`](Self::describe), in errors or in logs.
#[async_trait]
pub trait ApiKeyProvider: Send + Sync + std::fmt::Debug {
    /// Non-secret description for logs, e.g. `file /var/run/secrets/dd/api-key`.
    fn describe(&self) -> String;

    /// Fetches the current key.
    ///
    /// # Errors
    ///
    /// A [`KeyError`] naming this provider: [`NotFound`](KeyError::NotFound),
    /// [`Forbidden`](KeyError::Forbidden), [`Invalid`](KeyError::Invalid) (permanent) or
    /// [`Unavailable`](KeyError::Unavailable) (transient).
    async fn fetch(&self) -> Result<SecretString, KeyError>;

    /// A channel that ticks when the provider learns by itself that the key changed (e.g. a
    /// Kubernetes watch). The holder then calls [`fetch`](Self::fetch) and publishes the new
    /// key. Default: `None` (the provider is only polled).
    fn changes(&self) -> Option<watch::Receiver<()>> {
        None
    }
}

/// Turns fetched text into a key: trims surrounding whitespace (the trailing newline of a file
/// written by `echo`), rejects an empty result.
pub(crate) fn key_from_bytes(provider: &str, bytes: &[u8]) -> Result<SecretString, KeyError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| KeyError::invalid(provider, "the key is not valid UTF-8"))?;
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(KeyError::invalid(provider, "the key is empty"));
    }
    Ok(SecretString::from(trimmed))
}

/// A fixed key (a literal in the configuration, or a test key). [`fetch`](ApiKeyProvider::fetch)
/// always returns it.
pub struct StaticProvider {
    key: SecretString,
}

impl StaticProvider {
    /// A provider that always returns `key`, without surrounding whitespace, as every provider
    /// trims: a literal often comes from a variable interpolated into the configuration
    /// (`api_key: ${DD_API_KEY}`), whose value may end in a newline (`echo ... | base64`).
    pub fn new(key: SecretString) -> Self {
        StaticProvider {
            key: SecretString::from(key.expose_secret().trim()),
        }
    }
}

impl std::fmt::Debug for StaticProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticProvider")
            .field("key", &"[REDACTED]")
            .finish()
    }
}

#[async_trait]
impl ApiKeyProvider for StaticProvider {
    fn describe(&self) -> String {
        "literal key".to_owned()
    }

    async fn fetch(&self) -> Result<SecretString, KeyError> {
        if self.key.expose_secret().trim().is_empty() {
            return Err(KeyError::invalid(self.describe(), "the key is empty"));
        }
        Ok(self.key.clone())
    }
}

/// Reads an environment variable at each fetch (`DD_API_KEY`, `DD_APP_KEY` by default).
///
/// The environment of a running process rarely changes, so this provider is in effect static;
/// it exists so that the same configuration form covers every source.
#[derive(Debug, Clone)]
pub struct EnvProvider {
    var: String,
}

impl EnvProvider {
    /// A provider reading the variable `var`.
    pub fn new(var: impl Into<String>) -> Self {
        EnvProvider { var: var.into() }
    }

    /// The variable name.
    pub fn var(&self) -> &str {
        &self.var
    }
}

#[async_trait]
impl ApiKeyProvider for EnvProvider {
    fn describe(&self) -> String {
        format!("environment variable {}", self.var)
    }

    async fn fetch(&self) -> Result<SecretString, KeyError> {
        match std::env::var_os(&self.var) {
            None => Err(KeyError::not_found(
                self.describe(),
                "the variable is not set",
            )),
            Some(value) => {
                let value = Zeroizing::new(value.into_encoded_bytes());
                key_from_bytes(&self.describe(), &value)
            }
        }
    }
}

/// Reads a file at each fetch.
///
/// The path is opened anew every time and symlinks are followed, so both an atomic rename
/// (`mv new-key api-key`) and a Kubernetes mounted-secret update (the kubelet swaps the `..data`
/// symlink) are seen at the next fetch. Surrounding whitespace (the trailing newline) is
/// trimmed. Logs a warning, once, when the file is readable by its group or by others.
#[derive(Debug)]
pub struct FileProvider {
    path: PathBuf,
    warned_permissions: AtomicBool,
}

impl FileProvider {
    /// A provider reading `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileProvider {
            path: path.into(),
            warned_permissions: AtomicBool::new(false),
        }
    }

    /// The file path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    #[cfg(unix)]
    async fn warn_if_shared(&self) {
        use std::os::unix::fs::PermissionsExt;
        if self.warned_permissions.load(Ordering::Relaxed) {
            return;
        }
        if let Ok(meta) = tokio::fs::metadata(&self.path).await {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 && !self.warned_permissions.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    path = %self.path.display(),
                    mode = format_args!("{mode:o}"),
                    "API key file is readable by its group or by others; restrict it to the owner \
                     (chmod 600, or defaultMode: 0400 on a Kubernetes secret volume)"
                );
            }
        }
    }

    #[cfg(not(unix))]
    async fn warn_if_shared(&self) {
        let _ = &self.warned_permissions;
    }
}

#[async_trait]
impl ApiKeyProvider for FileProvider {
    fn describe(&self) -> String {
        format!("file {}", self.path.display())
    }

    async fn fetch(&self) -> Result<SecretString, KeyError> {
        let bytes = tokio::fs::read(&self.path)
            .await
            .map_err(|e| KeyError::from_io(self.describe(), &e))?;
        let bytes = Zeroizing::new(bytes);
        let key = key_from_bytes(&self.describe(), &bytes)?;
        self.warn_if_shared().await;
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_from_bytes_trims_and_rejects_empty() {
        let key = key_from_bytes("p", b"  abc123\n").unwrap();
        assert_eq!(key.expose_secret(), "abc123");
        assert!(matches!(
            key_from_bytes("p", b" \n\t"),
            Err(KeyError::Invalid { .. })
        ));
        assert!(matches!(
            key_from_bytes("p", &[0xff, 0xfe]),
            Err(KeyError::Invalid { .. })
        ));
    }

    #[tokio::test]
    async fn static_provider_returns_its_key_and_redacts_debug() {
        let p = StaticProvider::new(SecretString::from("static-key-zq81"));
        assert_eq!(p.fetch().await.unwrap().expose_secret(), "static-key-zq81");
        assert!(!format!("{p:?}").contains("static-key-zq81"));
    }

    #[tokio::test]
    async fn missing_file_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let p = FileProvider::new(dir.path().join("absent"));
        let err = p.fetch().await.unwrap_err();
        assert!(matches!(err, KeyError::NotFound { .. }), "{err}");
        assert!(err.to_string().contains("absent"));
    }
}
