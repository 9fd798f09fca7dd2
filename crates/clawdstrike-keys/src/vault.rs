//! The Vault (and OpenBao) KV v2 provider, built on `vaultrs` (feature `vault`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use secrecy::zeroize::Zeroizing;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use vaultrs::client::{Client as _, VaultClient, VaultClientSettingsBuilder};
use vaultrs::error::ClientError;

use crate::provider::key_from_bytes;
use crate::{ApiKeyProvider, KeyError, VaultAuth, VaultSource};

/// Reads a field of a KV v2 secret from Vault or OpenBao.
///
/// With AppRole or Kubernetes auth the provider logs in at the first fetch, and logs in again
/// and retries once when Vault answers 403 (its token expired or was revoked). A 403 that
/// persists after a fresh login is [`KeyError::Forbidden`] (the policy denies the path). With a
/// fixed token there is nothing to log in with, so a 403 is [`KeyError::Forbidden`] at once.
pub struct VaultProvider {
    source: VaultSource,
    description: String,
    /// The client; its token is set by each login. A mutex so that one login serves every
    /// caller.
    client: tokio::sync::Mutex<Session>,
    logins: AtomicU64,
    /// What the client is built from, to build it again when the CA file changes.
    settings: vaultrs::client::VaultClientSettings,
}

/// How long a fetch spends at most on looking its fixed token up and renewing it.
const RENEW_BUDGET: Duration = Duration::from_secs(5);

struct Session {
    client: VaultClient,
    logged_in: bool,
    /// The CA file as the client read it (modified time, length, inode).
    ca: Option<CaStamp>,
    /// When a fixed token's renewal may be due next (None: look now).
    renew_check: Option<std::time::Instant>,
}

type CaStamp = (Option<std::time::SystemTime>, u64, u64);

fn ca_stamp(path: &std::path::Path) -> Option<CaStamp> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok(), meta.len(), meta.ino()))
}

impl std::fmt::Debug for VaultProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultProvider")
            .field("source", &self.source)
            .field("logins", &self.logins.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// A field value of a KV secret: strings are kept as secrets, anything else is ignored without
/// being echoed in an error.
#[derive(Deserialize)]
#[serde(untagged)]
enum Field {
    Text(SecretString),
    Other(serde::de::IgnoredAny),
}

impl VaultProvider {
    /// Builds the HTTP client for `source`. Nothing is sent until the first fetch.
    ///
    /// The client ignores the `VAULT_*` environment variables: everything comes from `source`.
    ///
    /// # Errors
    ///
    /// [`KeyError::Invalid`] for an address that is not an `http`/`https` URL, or a CA file
    /// that cannot be read or parsed.
    pub fn new(source: VaultSource) -> Result<Self, KeyError> {
        crate::tls::ensure_crypto_provider();
        let parsed = url::Url::parse(&source.address);
        let shown = match &parsed {
            Ok(url) => {
                // Never show credentials embedded in the address.
                let mut shown = url.clone();
                let _ = shown.set_username("");
                let _ = shown.set_password(None);
                shown.to_string()
            }
            Err(_) => "(invalid address)".to_owned(),
        };
        let description = format!(
            "vault {} {}/{}#{}",
            shown.trim_end_matches('/'),
            source.mount,
            source.path,
            source.field
        );
        let url =
            parsed.map_err(|e| KeyError::invalid(&description, format!("bad address: {e}")))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(KeyError::invalid(
                &description,
                "the address must not contain credentials; configure `auth` instead",
            ));
        }
        if !matches!(url.scheme(), "http" | "https") {
            return Err(KeyError::invalid(
                &description,
                "the address must start with http:// or https://",
            ));
        }
        // A CA to trust says TLS was meant; over http:// it would be ignored (vaultrs only
        // uses it for https) and the token, the login secrets and the key would travel in
        // clear text.
        if url.scheme() == "http" && source.ca_cert.is_some() {
            return Err(KeyError::invalid(
                &description,
                "`ca_cert` is set but the address is http://, where it would be ignored and secrets sent unencrypted; use https://",
            ));
        }
        // The token and the namespace travel in headers (vaultrs panics on a value that is not
        // one): trimmed like every key (a Secret made with `--from-file` ends in a newline),
        // and refused if anything else is left that a header cannot carry.
        let token = match &source.auth {
            VaultAuth::Token(token) => token.expose_secret().trim().to_owned(),
            _ => String::new(),
        };
        let namespace = source.namespace.as_deref().map(str::trim);
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(KeyError::invalid(
                &description,
                "the Vault token contains whitespace, control or non-ASCII characters",
            ));
        }
        if namespace.is_some_and(|ns| !ns.bytes().all(|b| b.is_ascii_graphic())) {
            return Err(KeyError::invalid(
                &description,
                "the Vault namespace contains whitespace, control or non-ASCII characters",
            ));
        }
        let mut builder = VaultClientSettingsBuilder::default();
        builder
            .address(url.as_str())
            .token(token)
            .verify(true)
            .ca_certs(
                source
                    .ca_cert
                    .iter()
                    .map(|p| p.to_string_lossy().into_owned())
                    .collect(),
            )
            .timeout(Some(std::time::Duration::from_secs(10)));
        if let Some(ns) = namespace {
            builder.set_namespace(ns.to_owned());
        }
        let settings = builder
            .build()
            .map_err(|e| KeyError::invalid(&description, format!("client settings: {e}")))?;
        let ca = source.ca_cert.as_deref().and_then(ca_stamp);
        let client = VaultClient::new(settings.clone())
            .map_err(|e| KeyError::invalid(&description, error_chain(&e)))?;
        let logged_in = matches!(source.auth, VaultAuth::Token(_));
        Ok(VaultProvider {
            source,
            description,
            client: tokio::sync::Mutex::new(Session {
                client,
                logged_in,
                ca,
                renew_check: None,
            }),
            logins: AtomicU64::new(0),
            settings,
        })
    }

    /// How many times the provider logged in (AppRole / Kubernetes auth). For diagnostics and
    /// tests.
    pub fn logins(&self) -> u64 {
        self.logins.load(Ordering::Relaxed)
    }

    async fn login(&self, session: &mut Session) -> Result<(), KeyError> {
        let auth = match &self.source.auth {
            VaultAuth::Token(_) => {
                return Err(KeyError::forbidden(
                    &self.description,
                    "the Vault token was refused (expired or revoked?) and a fixed token \
                     cannot log in again; configure AppRole or Kubernetes auth",
                ));
            }
            VaultAuth::AppRole {
                role_id,
                secret_id,
                mount,
            } => vaultrs::auth::approle::login(
                &session.client,
                mount,
                role_id.trim(),
                secret_id.expose_secret().trim(),
            )
            .await
            .map_err(|e| self.classify(&e, "AppRole login"))?,
            VaultAuth::Kubernetes {
                role,
                jwt_path,
                mount,
            } => {
                let jwt = tokio::fs::read(jwt_path).await.map_err(|e| {
                    KeyError::from_io(
                        &self.description,
                        &std::io::Error::new(
                            e.kind(),
                            format!("service-account token {}: {e}", jwt_path.display()),
                        ),
                    )
                })?;
                let jwt = Zeroizing::new(jwt);
                let jwt = std::str::from_utf8(&jwt)
                    .map_err(|_| {
                        KeyError::invalid(
                            &self.description,
                            "the service-account token is not UTF-8",
                        )
                    })?
                    .trim();
                vaultrs::auth::kubernetes::login(&session.client, mount, role, jwt)
                    .await
                    .map_err(|e| self.classify(&e, "Kubernetes login"))?
            }
        };
        let token = Zeroizing::new(auth.client_token);
        session.client.set_token(&token);
        session.logged_in = true;
        let n = self.logins.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::debug!(
            provider = %self.description,
            logins = n,
            lease_seconds = auth.lease_duration,
            "logged in to Vault"
        );
        Ok(())
    }

    /// Builds the client again when its CA file changed (a CA bundle rotated by cert-manager or
    /// trust-manager, Vault's certificate reissued under the new CA): the client reads the file
    /// only when built, and every fetch after the rotation failed verification until a restart.
    /// A file that cannot be read or parsed now leaves the client as it was.
    fn reload_ca_if_changed(&self, session: &mut Session) {
        let Some(path) = self.source.ca_cert.as_deref() else {
            return;
        };
        let now = ca_stamp(path);
        if now.is_none() || now == session.ca {
            return;
        }
        match VaultClient::new(self.settings.clone()) {
            Ok(client) => {
                tracing::info!(provider = %self.description, ca = %path.display(), "the CA file changed; connecting to Vault with it");
                session.client = client;
                session.ca = now;
                // A lookup that failed with the old CA is no reason to wait with the new one.
                session.renew_check = None;
                // The fixed token is in the settings; a login's token is not.
                session.logged_in = matches!(self.source.auth, VaultAuth::Token(_));
            }
            Err(e) => {
                tracing::warn!(provider = %self.description, ca = %path.display(), error = %error_chain(&e), "the CA file changed but cannot be used; keeping the previous one")
            }
        }
    }

    /// Renews a fixed token once a third of its TTL is spent. A periodic token (the usual kind
    /// for a service) lives only as long as its holder renews it; AppRole and Kubernetes auth
    /// log in again instead. The token is looked up only when its renewal may be due (the
    /// time is kept from the last lookup), within [`RENEW_BUDGET`], so a slow Vault does not
    /// make the read that follows miss the fetch timeout. A token that cannot be looked up or
    /// renewed is read with as it is (a warning says so; a 403 later says the rest).
    async fn renew_if_due(&self, session: &mut Session) {
        use std::time::Instant;
        if session.renew_check.is_some_and(|at| Instant::now() < at) {
            return;
        }
        let client = &session.client;
        let next = tokio::time::timeout(RENEW_BUDGET, async {
            let info = match vaultrs::token::lookup_self(client).await {
                Ok(info) => info,
                Err(e) => {
                    tracing::warn!(provider = %self.description, error = %self.classify(&e, "token lookup"), "cannot look the Vault token up, so it is not renewed (its policy needs lookup-self and renew-self)");
                    return Duration::from_secs(300);
                }
            };
            if info.renewable != Some(true) || info.ttl == 0 {
                return Duration::from_secs(3600);
            }
            let due_at = info.creation_ttl * 2 / 3;
            if info.ttl > due_at {
                return Duration::from_secs(info.ttl - due_at);
            }
            match vaultrs::token::renew_self(client, None).await {
                Ok(auth) => {
                    tracing::debug!(provider = %self.description, lease_seconds = auth.lease_duration, "renewed the Vault token");
                    Duration::from_secs((auth.lease_duration / 3).max(1))
                }
                Err(e) => {
                    tracing::warn!(provider = %self.description, error = %self.classify(&e, "token renewal"), ttl_seconds = info.ttl, "cannot renew the Vault token; it expires when its TTL runs out");
                    Duration::from_secs(60)
                }
            }
        })
        .await
        .unwrap_or_else(|_| {
            tracing::warn!(provider = %self.description, "the Vault token lookup or renewal took longer than {RENEW_BUDGET:?}; trying again later");
            Duration::from_secs(60)
        });
        session.renew_check = Some(Instant::now() + next);
    }

    async fn read(&self, session: &Session) -> Result<SecretString, ReadError> {
        let fields: HashMap<String, Field> =
            vaultrs::kv2::read(&session.client, &self.source.mount, &self.source.path)
                .await
                .map_err(|e| match e {
                    ClientError::APIError { code: 403, .. }
                    | ClientError::RestClientError {
                        source: rustify::errors::ClientError::ServerResponseError { code: 403, .. },
                    } => ReadError::Denied,
                    other => ReadError::Other(self.classify(&other, "read")),
                })?;
        match fields.get(&self.source.field) {
            Some(Field::Text(value)) => {
                key_from_bytes(&self.description, value.expose_secret().as_bytes())
                    .map_err(ReadError::Other)
            }
            Some(Field::Other(_)) => Err(ReadError::Other(KeyError::invalid(
                &self.description,
                format!("field `{}` is not a string", self.source.field),
            ))),
            None => Err(ReadError::Other(KeyError::not_found(
                &self.description,
                format!("the secret has no field `{}`", self.source.field),
            ))),
        }
    }

    fn classify(&self, err: &ClientError, what: &str) -> KeyError {
        let detail = format!("{what}: {}", error_chain(err));
        match err {
            ClientError::APIError { code, .. } => match code {
                404 => KeyError::not_found(&self.description, detail),
                400 | 401 | 403 => KeyError::forbidden(&self.description, detail),
                // 412: a performance standby not caught up yet (Vault Enterprise); 408: a
                // timeout. Both pass.
                408 | 412 | 429 | 500.. => KeyError::unavailable(&self.description, detail),
                _ => KeyError::invalid(&self.description, detail),
            },
            // A status whose body vaultrs could not read as Vault's `errors` array. On the KV
            // read, a 404 is a secret whose latest version is deleted (its body carries
            // metadata instead): not found, not an outage retried forever. Any other such
            // status, or one on a login, may be a proxy's or load balancer's page, so it
            // stays transient as before. Named by its status (the message alone says only
            // "Server returned error"); its body is not shown.
            ClientError::RestClientError {
                source: rustify::errors::ClientError::ServerResponseError { code, .. },
            } => {
                let detail = format!("{what}: HTTP {code}");
                if *code == 404 && what == "read" {
                    KeyError::not_found(
                        &self.description,
                        format!("{detail} (no such secret, or its latest version is deleted)"),
                    )
                } else {
                    KeyError::unavailable(&self.description, detail)
                }
            }
            ClientError::ResponseEmptyError | ClientError::ResponseDataEmptyError => {
                KeyError::not_found(&self.description, detail)
            }
            ClientError::JsonParseError { .. } => KeyError::invalid(&self.description, detail),
            _ => KeyError::unavailable(&self.description, detail),
        }
    }
}

enum ReadError {
    /// 403: the token may have expired.
    Denied,
    Other(KeyError),
}

/// `err` and its sources, for an error message. vaultrs errors carry Vault's `errors` array,
/// which holds messages such as "permission denied", never secret values.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    if let Some(ClientError::APIError { errors, .. }) = err.downcast_ref::<ClientError>()
        && !errors.is_empty()
    {
        text.push_str(": ");
        text.push_str(&errors.join("; "));
    }
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[async_trait]
impl ApiKeyProvider for VaultProvider {
    fn describe(&self) -> String {
        self.description.clone()
    }

    async fn fetch(&self) -> Result<SecretString, KeyError> {
        let mut session = self.client.lock().await;
        self.reload_ca_if_changed(&mut session);
        if !session.logged_in {
            self.login(&mut session).await?;
        }
        if matches!(self.source.auth, VaultAuth::Token(_)) {
            self.renew_if_due(&mut session).await;
        }
        match self.read(&session).await {
            Ok(key) => return Ok(key),
            Err(ReadError::Other(err)) => return Err(err),
            Err(ReadError::Denied) => {}
        }
        if matches!(self.source.auth, VaultAuth::Token(_)) {
            return Err(KeyError::forbidden(
                &self.description,
                "Vault answered 403 permission denied (token expired or revoked, or the \
                 policy does not allow reading this path)",
            ));
        }
        tracing::info!(
            provider = %self.description,
            "Vault answered 403; logging in again (token expired?)"
        );
        session.logged_in = false;
        self.login(&mut session).await?;
        match self.read(&session).await {
            Ok(key) => Ok(key),
            Err(ReadError::Other(err)) => Err(err),
            Err(ReadError::Denied) => Err(KeyError::forbidden(
                &self.description,
                "Vault answered 403 permission denied after a fresh login: the policy does \
                 not allow reading this path",
            )),
        }
    }
}
