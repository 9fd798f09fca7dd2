//! The error type shared by every provider and by the key holder.

/// Why a key could not be fetched.
///
/// Every variant names the provider (its non-secret [`describe`](crate::ApiKeyProvider::describe)
/// text) and what went wrong. No variant ever carries the key itself, so an error can be logged
/// and displayed freely.
///
/// The set is closed on purpose: callers match on it to decide whether to retry
/// ([`is_transient`](Self::is_transient)) or to give up and alert.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The key does not exist where the provider looks (unset variable, missing file, missing
    /// Vault path or field, missing Kubernetes Secret or key). Permanent until someone fixes
    /// the configuration or creates the secret.
    #[error("{provider}: not found: {detail}")]
    NotFound {
        /// The provider's description.
        provider: String,
        /// What was missing.
        detail: String,
    },
    /// The store refused access (file permissions, Vault policy, Kubernetes RBAC). Permanent
    /// until someone grants access.
    #[error("{provider}: access denied: {detail}")]
    Forbidden {
        /// The provider's description.
        provider: String,
        /// What the store said.
        detail: String,
    },
    /// The store could not be reached or failed (network error, timeout, 5xx). Transient:
    /// retrying later may succeed.
    #[error("{provider}: unavailable (transient): {detail}")]
    Unavailable {
        /// The provider's description.
        provider: String,
        /// What failed.
        detail: String,
    },
    /// The configuration or the stored value is unusable (bad URL, unreadable CA file, empty
    /// key, value not UTF-8). Permanent.
    #[error("{provider}: invalid: {detail}")]
    Invalid {
        /// The provider's description.
        provider: String,
        /// What is wrong.
        detail: String,
    },
    /// The configuration asks for a provider that this build does not include.
    #[error(
        "{source_kind} key source: support was not compiled in; rebuild with cargo feature `{feature}`"
    )]
    FeatureDisabled {
        /// The key-source kind (`vault`, `kubernetes`).
        source_kind: &'static str,
        /// The cargo feature of `clawdstrike-keys` that enables it.
        feature: &'static str,
    },
}

impl KeyError {
    /// `true` when retrying later may succeed (network trouble, server errors); `false` for
    /// errors that need a human (not found, forbidden, invalid configuration).
    pub fn is_transient(&self) -> bool {
        matches!(self, KeyError::Unavailable { .. })
    }

    /// The provider description this error is about (the source kind for
    /// [`FeatureDisabled`](Self::FeatureDisabled)).
    pub fn provider(&self) -> &str {
        match self {
            KeyError::NotFound { provider, .. }
            | KeyError::Forbidden { provider, .. }
            | KeyError::Unavailable { provider, .. }
            | KeyError::Invalid { provider, .. } => provider,
            KeyError::FeatureDisabled { source_kind, .. } => source_kind,
        }
    }

    pub(crate) fn not_found(provider: impl Into<String>, detail: impl Into<String>) -> Self {
        KeyError::NotFound {
            provider: provider.into(),
            detail: detail.into(),
        }
    }

    pub(crate) fn forbidden(provider: impl Into<String>, detail: impl Into<String>) -> Self {
        KeyError::Forbidden {
            provider: provider.into(),
            detail: detail.into(),
        }
    }

    pub(crate) fn unavailable(provider: impl Into<String>, detail: impl Into<String>) -> Self {
        KeyError::Unavailable {
            provider: provider.into(),
            detail: detail.into(),
        }
    }

    pub(crate) fn invalid(provider: impl Into<String>, detail: impl Into<String>) -> Self {
        KeyError::Invalid {
            provider: provider.into(),
            detail: detail.into(),
        }
    }

    /// Classifies an I/O error from reading a key file.
    pub(crate) fn from_io(provider: impl Into<String>, err: &std::io::Error) -> Self {
        use std::io::ErrorKind;
        let detail = err.to_string();
        match err.kind() {
            ErrorKind::NotFound => KeyError::not_found(provider, detail),
            ErrorKind::PermissionDenied => KeyError::forbidden(provider, detail),
            ErrorKind::InvalidData | ErrorKind::IsADirectory => KeyError::invalid(provider, detail),
            _ => KeyError::unavailable(provider, detail),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unavailable_is_transient() {
        assert!(KeyError::unavailable("p", "timeout").is_transient());
        assert!(!KeyError::not_found("p", "x").is_transient());
        assert!(!KeyError::forbidden("p", "x").is_transient());
        assert!(!KeyError::invalid("p", "x").is_transient());
        let disabled = KeyError::FeatureDisabled {
            source_kind: "vault",
            feature: "vault",
        };
        assert!(!disabled.is_transient());
        assert!(disabled.to_string().contains("cargo feature `vault`"));
    }

    #[test]
    fn io_errors_are_classified() {
        let nf = std::io::Error::from(std::io::ErrorKind::NotFound);
        assert!(matches!(
            KeyError::from_io("f", &nf),
            KeyError::NotFound { .. }
        ));
        let pd = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        assert!(matches!(
            KeyError::from_io("f", &pd),
            KeyError::Forbidden { .. }
        ));
        let other = std::io::Error::from(std::io::ErrorKind::Interrupted);
        assert!(KeyError::from_io("f", &other).is_transient());
    }
}
