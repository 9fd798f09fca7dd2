//! The one rustls crypto provider of the workspace: aws-lc-rs.

/// Installs aws-lc-rs as the process-wide rustls crypto provider unless one is installed
/// already (idempotent; a provider installed by the application wins).
///
/// The Vault client is built with `rustls-no-provider`, so that no second provider (`ring`)
/// enters the build; it then needs this process default.
pub fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race with another installer is fine: a provider is installed either way.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    }
}
