//! [`KeySource`]: the configuration form of a key, embedded by the Datadog and CLI configs.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use secrecy::SecretString;
use serde::Deserialize;
use serde::de::{self, MapAccess, Visitor};

use crate::provider::{EnvProvider, FileProvider, StaticProvider};
use crate::{ApiKeyProvider, KeyError};

/// The environment variable of the Datadog API key.
pub const DEFAULT_API_KEY_ENV: &str = "DD_API_KEY";
/// The environment variable of the Datadog application key.
pub const DEFAULT_APP_KEY_ENV: &str = "DD_APP_KEY";
/// The Kubernetes Secret the Datadog Agent reads by convention.
pub const DEFAULT_KUBERNETES_SECRET: &str = "datadog-secret";
/// The key of the API key in [`DEFAULT_KUBERNETES_SECRET`].
pub const DEFAULT_KUBERNETES_API_KEY: &str = "api-key";
/// The key of the application key in [`DEFAULT_KUBERNETES_SECRET`].
pub const DEFAULT_KUBERNETES_APP_KEY: &str = "app-key";
/// Where a pod's service-account token is mounted.
pub const SERVICE_ACCOUNT_TOKEN_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";
/// Where a pod's namespace is mounted.
pub const SERVICE_ACCOUNT_NAMESPACE_PATH: &str =
    "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// Where a key comes from, as written in a YAML/JSON configuration.
///
/// ```yaml
/// api_key: "literal key"                 # a plain string: the key itself
/// api_key: { env: DD_API_KEY }
/// api_key: { file: /var/run/secrets/datadog/api-key }
/// api_key:
///   vault:
///     address: https://vault:8200
///     mount: secret                      # KV v2 mount, default `secret`
///     path: datadog
///     field: api_key
///     ca_cert: /etc/ssl/vault-ca.pem     # optional
///     auth: { token: "..." }             # or { approle: { role_id, secret_id, mount } }
///                                        # or { kubernetes: { role, jwt_path, mount } }
/// api_key:
///   kubernetes: { secret: datadog-secret, key: api-key, namespace: monitoring }
/// ```
///
/// Every form parses in every build; [`into_provider`](Self::into_provider) of `vault` or
/// `kubernetes` fails with [`KeyError::FeatureDisabled`] when this crate was built without the
/// feature of the same name. A literal is a [`SecretString`] from the moment it is parsed, and
/// `Debug` never shows it. A number or boolean where a literal is expected is refused without
/// echoing the value (quote the key).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum KeySource {
    /// The key itself.
    Literal(SecretString),
    /// An environment variable, read by [`EnvProvider`].
    Env(String),
    /// A file, re-read at each refresh by [`FileProvider`].
    File(PathBuf),
    /// A Vault (or OpenBao) KV v2 secret (feature `vault`).
    Vault(VaultSource),
    /// A Kubernetes Secret (feature `kubernetes`).
    Kubernetes(KubernetesSource),
}

impl KeySource {
    /// The environment variable `DD_API_KEY`.
    pub fn env_default_api() -> KeySource {
        KeySource::Env(DEFAULT_API_KEY_ENV.to_owned())
    }

    /// The environment variable `DD_APP_KEY`.
    pub fn env_default_app() -> KeySource {
        KeySource::Env(DEFAULT_APP_KEY_ENV.to_owned())
    }

    /// Short non-secret name of the form (`literal`, `env`, `file`, `vault`, `kubernetes`).
    pub fn kind(&self) -> &'static str {
        match self {
            KeySource::Literal(_) => "literal",
            KeySource::Env(_) => "env",
            KeySource::File(_) => "file",
            KeySource::Vault(_) => "vault",
            KeySource::Kubernetes(_) => "kubernetes",
        }
    }

    /// Builds the provider. Vault and Kubernetes providers create their HTTP clients here (and
    /// the Kubernetes provider starts its watch on the current Tokio runtime); nothing is
    /// fetched yet.
    ///
    /// # Errors
    ///
    /// [`KeyError::FeatureDisabled`] for `vault`/`kubernetes` without the feature;
    /// [`KeyError::Invalid`] for an unusable configuration (bad Vault address, unreadable CA
    /// file, no Kubernetes configuration found).
    pub async fn into_provider(self) -> Result<Arc<dyn ApiKeyProvider>, KeyError> {
        match self {
            KeySource::Literal(key) => Ok(Arc::new(StaticProvider::new(key))),
            KeySource::Env(var) => Ok(Arc::new(EnvProvider::new(var))),
            KeySource::File(path) => Ok(Arc::new(FileProvider::new(path))),
            #[cfg(feature = "vault")]
            KeySource::Vault(source) => Ok(Arc::new(crate::vault::VaultProvider::new(source)?)),
            #[cfg(not(feature = "vault"))]
            KeySource::Vault(_) => Err(KeyError::FeatureDisabled {
                source_kind: "vault",
                feature: "vault",
            }),
            #[cfg(feature = "kubernetes")]
            KeySource::Kubernetes(source) => Ok(Arc::new(
                crate::kubernetes::KubernetesProvider::from_source(source).await?,
            )),
            #[cfg(not(feature = "kubernetes"))]
            KeySource::Kubernetes(_) => Err(KeyError::FeatureDisabled {
                source_kind: "kubernetes",
                feature: "kubernetes",
            }),
        }
    }
}

impl<'de> Deserialize<'de> for KeySource {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(KeySourceVisitor)
    }
}

struct KeySourceVisitor;

const FORMS: &[&str] = &["env", "file", "vault", "kubernetes"];

/// A map key where a form's name was expected, for an error message: quoted when it could be a
/// misspelt form (a few lowercase letters), otherwise not shown, since a key written in braces
/// (`api_key: {d41d8cd9...}`) reads as a map whose key is the secret.
fn form_name(name: &str) -> String {
    if name.len() <= 12 && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
        format!("`{name}`")
    } else {
        "(name not shown)".to_owned()
    }
}

impl KeySourceVisitor {
    fn not_a_string<E: de::Error>(what: &str) -> E {
        // The value is deliberately not echoed: it may be a key that YAML read as a number.
        E::custom(format_args!(
            "expected a key source (a quoted string, or a map with one of: env, file, vault, \
             kubernetes), found {what}; quote a literal key"
        ))
    }
}

impl<'de> Visitor<'de> for KeySourceVisitor {
    type Value = KeySource;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key (string) or a map with one of: env, file, vault, kubernetes")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<KeySource, E> {
        Ok(KeySource::Literal(SecretString::from(v)))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<KeySource, E> {
        Ok(KeySource::Literal(SecretString::from(v)))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<KeySource, E> {
        Err(Self::not_a_string("a boolean"))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<KeySource, E> {
        Err(Self::not_a_string("a number"))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<KeySource, E> {
        Err(Self::not_a_string("a number"))
    }

    fn visit_i128<E: de::Error>(self, _: i128) -> Result<KeySource, E> {
        Err(Self::not_a_string("a number"))
    }

    fn visit_u128<E: de::Error>(self, _: u128) -> Result<KeySource, E> {
        Err(Self::not_a_string("a number"))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<KeySource, E> {
        Err(Self::not_a_string("a number"))
    }

    fn visit_unit<E: de::Error>(self) -> Result<KeySource, E> {
        Err(Self::not_a_string("nothing (null)"))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<KeySource, A::Error> {
        let Some(form) = map.next_key::<String>()? else {
            return Err(de::Error::custom(
                "empty key source map: expected one of env, file, vault, kubernetes",
            ));
        };
        let source = match form.as_str() {
            "env" => KeySource::Env(map.next_value()?),
            "file" => KeySource::File(map.next_value()?),
            "vault" => KeySource::Vault(map.next_value()?),
            "kubernetes" => KeySource::Kubernetes(map.next_value()?),
            other => {
                return Err(de::Error::custom(format_args!(
                    "unknown key source form {}, expected one of {}",
                    form_name(other),
                    FORMS.join(", ")
                )));
            }
        };
        if let Some(extra) = map.next_key::<String>()? {
            return Err(de::Error::custom(format_args!(
                "a key source has exactly one form; found `{form}` and {}",
                form_name(&extra)
            )));
        }
        Ok(source)
    }
}

/// A key in a Vault (or OpenBao) KV version 2 secrets engine.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct VaultSource {
    /// The server, e.g. `https://vault:8200`.
    pub address: String,
    /// The KV v2 mount. Default `secret`.
    #[serde(default = "default_kv_mount")]
    pub mount: String,
    /// The secret's path inside the mount, e.g. `datadog`.
    pub path: String,
    /// The field of the secret holding the key, e.g. `api_key`.
    pub field: String,
    /// A PEM file of CA certificates to trust (for a private CA). Optional.
    #[serde(default)]
    pub ca_cert: Option<PathBuf>,
    /// A Vault Enterprise namespace. Optional.
    #[serde(default)]
    pub namespace: Option<String>,
    /// How to authenticate.
    pub auth: VaultAuth,
}

impl VaultSource {
    /// A source reading `field` of `path` in the `secret` mount of `address`.
    pub fn new(
        address: impl Into<String>,
        path: impl Into<String>,
        field: impl Into<String>,
        auth: VaultAuth,
    ) -> Self {
        VaultSource {
            address: address.into(),
            mount: default_kv_mount(),
            path: path.into(),
            field: field.into(),
            ca_cert: None,
            namespace: None,
            auth,
        }
    }

    /// Sets the KV v2 mount.
    #[must_use]
    pub fn with_mount(mut self, mount: impl Into<String>) -> Self {
        self.mount = mount.into();
        self
    }

    /// Sets the CA certificate file.
    #[must_use]
    pub fn with_ca_cert(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_cert = Some(path.into());
        self
    }
}

/// How the Vault provider authenticates: a map with exactly one of `token`, `approle`,
/// `kubernetes`.
#[derive(Clone, Debug, Deserialize)]
#[serde(try_from = "VaultAuthForm")]
#[non_exhaustive]
pub enum VaultAuth {
    /// A fixed token. When it expires the provider cannot log in again: refreshes fail with
    /// [`KeyError::Forbidden`] and the last good key stays.
    Token(SecretString),
    /// AppRole login; the provider logs in again when its token expires.
    AppRole {
        /// The role ID.
        role_id: String,
        /// The secret ID.
        secret_id: SecretString,
        /// The auth mount. Default `approle`.
        mount: String,
    },
    /// Kubernetes login with the pod's service-account token; the provider logs in again when
    /// its token expires (re-reading the JWT file, which the kubelet rotates).
    Kubernetes {
        /// The Vault role.
        role: String,
        /// The service-account token file. Default
        /// `/var/run/secrets/kubernetes.io/serviceaccount/token`.
        jwt_path: PathBuf,
        /// The auth mount. Default `kubernetes`.
        mount: String,
    },
}

/// The written form of [`VaultAuth`]: a map, so that every format (YAML included) reads it
/// the same way.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VaultAuthForm {
    token: Option<SecretString>,
    approle: Option<AppRoleForm>,
    kubernetes: Option<KubernetesAuthForm>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AppRoleForm {
    role_id: String,
    secret_id: SecretString,
    #[serde(default = "default_approle_mount")]
    mount: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KubernetesAuthForm {
    role: String,
    #[serde(default = "default_jwt_path")]
    jwt_path: PathBuf,
    #[serde(default = "default_kubernetes_mount")]
    mount: String,
}

impl TryFrom<VaultAuthForm> for VaultAuth {
    type Error = &'static str;

    fn try_from(form: VaultAuthForm) -> Result<Self, Self::Error> {
        match (form.token, form.approle, form.kubernetes) {
            (Some(token), None, None) => Ok(VaultAuth::Token(token)),
            (None, Some(a), None) => Ok(VaultAuth::AppRole {
                role_id: a.role_id,
                secret_id: a.secret_id,
                mount: a.mount,
            }),
            (None, None, Some(k)) => Ok(VaultAuth::Kubernetes {
                role: k.role,
                jwt_path: k.jwt_path,
                mount: k.mount,
            }),
            _ => Err("vault auth needs exactly one of: token, approle, kubernetes"),
        }
    }
}

impl VaultAuth {
    /// AppRole login at the `approle` mount.
    pub fn approle(role_id: impl Into<String>, secret_id: SecretString) -> Self {
        VaultAuth::AppRole {
            role_id: role_id.into(),
            secret_id,
            mount: default_approle_mount(),
        }
    }

    /// Kubernetes login at the `kubernetes` mount with the default JWT path.
    pub fn kubernetes(role: impl Into<String>) -> Self {
        VaultAuth::Kubernetes {
            role: role.into(),
            jwt_path: default_jwt_path(),
            mount: default_kubernetes_mount(),
        }
    }
}

/// A key in a Kubernetes Secret.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct KubernetesSource {
    /// The Secret's name. Default `datadog-secret` (the Datadog Agent's convention).
    #[serde(default = "default_kubernetes_secret")]
    pub secret: String,
    /// The key inside the Secret's `data`. Default `api-key`.
    #[serde(default = "default_kubernetes_key")]
    pub key: String,
    /// The namespace. Default: the pod's own (from the service account) when in a cluster,
    /// else the kubeconfig's current namespace.
    #[serde(default)]
    pub namespace: Option<String>,
}

impl KubernetesSource {
    /// `key` of Secret `secret`, in the default namespace.
    pub fn new(secret: impl Into<String>, key: impl Into<String>) -> Self {
        KubernetesSource {
            secret: secret.into(),
            key: key.into(),
            namespace: None,
        }
    }

    /// `api-key` of `datadog-secret`.
    pub fn default_api() -> Self {
        KubernetesSource::new(DEFAULT_KUBERNETES_SECRET, DEFAULT_KUBERNETES_API_KEY)
    }

    /// `app-key` of `datadog-secret`.
    pub fn default_app() -> Self {
        KubernetesSource::new(DEFAULT_KUBERNETES_SECRET, DEFAULT_KUBERNETES_APP_KEY)
    }

    /// Sets the namespace.
    #[must_use]
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }
}

fn default_kv_mount() -> String {
    "secret".to_owned()
}
fn default_approle_mount() -> String {
    "approle".to_owned()
}
fn default_kubernetes_mount() -> String {
    "kubernetes".to_owned()
}
fn default_jwt_path() -> PathBuf {
    PathBuf::from(SERVICE_ACCOUNT_TOKEN_PATH)
}
fn default_kubernetes_secret() -> String {
    DEFAULT_KUBERNETES_SECRET.to_owned()
}
fn default_kubernetes_key() -> String {
    DEFAULT_KUBERNETES_API_KEY.to_owned()
}
