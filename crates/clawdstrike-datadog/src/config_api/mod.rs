//! A small client for Datadog's configuration APIs: dashboards, monitors and Cloud SIEM
//! detection rules (list, get, create, update, delete), monitor and rule validation.
//!
//! These APIs need both keys: `DD-API-KEY` and `DD-APPLICATION-KEY`. Bodies are plain JSON
//! ([`serde_json::Value`]): the client carries whatever Datadog accepts and leaves checking the
//! objects to the caller (`cargo xtask templates check` does that for our templates).
//!
//! Rate limits: a `429 Too Many Requests` is waited out using the `X-RateLimit-Reset` header
//! (seconds until the window resets), capped by [`ConfigClient::with_max_rate_limit_wait`], and
//! the request is sent again, at most [`ConfigClient::with_max_attempts`] times in all.
//!
//! ```no_run
//! # async fn demo() -> Result<(), clawdstrike_datadog::config_api::ConfigApiError> {
//! use clawdstrike_datadog::config_api::{ConfigClient, ObjectKind};
//! use secrecy::SecretString;
//!
//! let client = ConfigClient::new(
//!     "https://api.datadoghq.com",
//!     SecretString::from(std::env::var("DD_API_KEY").unwrap_or_default()),
//!     SecretString::from(std::env::var("DD_APP_KEY").unwrap_or_default()),
//! )?;
//! for monitor in client.list(ObjectKind::Monitor).await? {
//!     println!("{}", monitor["name"]);
//! }
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::time::Duration;

use reqwest::Method;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

/// The kinds of configuration object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectKind {
    /// A dashboard (`/api/v1/dashboard`).
    Dashboard,
    /// A monitor (`/api/v1/monitor`).
    Monitor,
    /// A Cloud SIEM detection rule (`/api/v2/security_monitoring/rules`).
    Rule,
}

impl ObjectKind {
    /// Every kind.
    pub const ALL: [ObjectKind; 3] = [ObjectKind::Dashboard, ObjectKind::Monitor, ObjectKind::Rule];

    /// The collection path of this kind.
    pub const fn path(self) -> &'static str {
        match self {
            ObjectKind::Dashboard => "/api/v1/dashboard",
            ObjectKind::Monitor => "/api/v1/monitor",
            ObjectKind::Rule => "/api/v2/security_monitoring/rules",
        }
    }

    /// A short name (`dashboard`, `monitor`, `rule`).
    pub const fn name(self) -> &'static str {
        match self {
            ObjectKind::Dashboard => "dashboard",
            ObjectKind::Monitor => "monitor",
            ObjectKind::Rule => "rule",
        }
    }

    /// The id of an object of this kind, as a string (monitor ids are numbers).
    pub fn id_of(self, object: &Value) -> Option<String> {
        match object.get("id")? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The outcome of a validation request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Validation {
    /// Datadog accepts the object.
    Valid,
    /// Datadog rejects it, with its reasons.
    Invalid(Vec<String>),
}

/// An error talking to a configuration API. It never contains a key.
#[derive(Debug)]
pub struct ConfigApiError {
    what: String,
    status: Option<u16>,
    message: String,
    retry_after: Option<Duration>,
}

impl ConfigApiError {
    fn new(what: &str, status: Option<u16>, message: impl Into<String>) -> Self {
        ConfigApiError {
            what: what.to_owned(),
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    /// The HTTP status, when Datadog answered.
    pub fn status(&self) -> Option<u16> {
        self.status
    }

    /// Whether sending the same request later may succeed (network errors, 408, 429, 5xx).
    pub fn is_retryable(&self) -> bool {
        match self.status {
            None => true,
            Some(s) => s == 408 || s == 429 || s >= 500,
        }
    }

    /// How long Datadog asked us to wait (from `X-RateLimit-Reset`), on a 429.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// Whether the object does not exist (404).
    pub fn is_not_found(&self) -> bool {
        self.status == Some(404)
    }

    /// The errors Datadog gave, or a description of the failure.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ConfigApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.status {
            Some(status) => write!(f, "{}: HTTP {status}: {}", self.what, self.message),
            None => write!(f, "{}: {}", self.what, self.message),
        }
    }
}

impl std::error::Error for ConfigApiError {}

/// A client for the configuration APIs of one Datadog site (or an override such as the fake
/// intake).
pub struct ConfigClient {
    http: reqwest::Client,
    base_url: String,
    api_key: SecretString,
    app_key: SecretString,
    max_rate_limit_wait: Duration,
    max_attempts: u32,
}

impl fmt::Debug for ConfigClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigClient")
            .field("base_url", &self.base_url)
            .field("api_key", &"[redacted]")
            .field("app_key", &"[redacted]")
            .field("max_rate_limit_wait", &self.max_rate_limit_wait)
            .field("max_attempts", &self.max_attempts)
            .finish()
    }
}

/// The page size used when listing monitors and rules.
const PAGE_SIZE: usize = 100;

impl ConfigClient {
    /// A client for `base_url` (`https://api.datadoghq.com`, or the fake intake's URL).
    ///
    /// Defaults: a 429 is waited out for at most 60 s at a time, and a request is sent at most
    /// 5 times. Errors when the base URL is not http(s) or the TLS stack cannot start.
    pub fn new(
        base_url: impl Into<String>,
        api_key: SecretString,
        app_key: SecretString,
    ) -> Result<Self, ConfigApiError> {
        let base_url = base_url.into().trim_end_matches('/').to_owned();
        if !(base_url.starts_with("https://") || base_url.starts_with("http://")) {
            return Err(ConfigApiError::new(
                "configuration",
                None,
                "the base URL must start with https:// or http://",
            ));
        }
        if base_url.contains('@') {
            return Err(ConfigApiError::new(
                "configuration",
                None,
                "the base URL must not carry credentials",
            ));
        }
        // The shipping client's settings: no redirects (one would carry both keys to another
        // host, and turn a POST into a GET that "succeeds"), no proxy for loopback.
        let http = crate::exporter::http_client_for(
            &base_url,
            Duration::from_secs(60),
            Duration::from_secs(10),
        )
        .map_err(|e| {
            ConfigApiError::new(
                "configuration",
                None,
                format!("cannot build the HTTP client: {e}"),
            )
        })?;
        Ok(ConfigClient {
            http,
            base_url,
            api_key,
            app_key,
            max_rate_limit_wait: Duration::from_secs(60),
            max_attempts: 5,
        })
    }

    /// The longest a single 429 is waited out (default 60 s).
    pub fn with_max_rate_limit_wait(mut self, wait: Duration) -> Self {
        self.max_rate_limit_wait = wait;
        self
    }

    /// How many times a request is sent at most when Datadog answers 429 (default 5, at least 1).
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// The base URL.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    fn headers(&self) -> Result<HeaderMap, ConfigApiError> {
        let mut headers = HeaderMap::new();
        for (name, key) in [
            ("DD-API-KEY", &self.api_key),
            ("DD-APPLICATION-KEY", &self.app_key),
        ] {
            let mut value = HeaderValue::from_str(key.expose_secret()).map_err(|_| {
                ConfigApiError::new(
                    "configuration",
                    None,
                    format!("the {name} value is not a valid header value"),
                )
            })?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        Ok(headers)
    }

    /// Sends one request, waiting out 429s. Returns the status and the body (`Null` if empty).
    async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), ConfigApiError> {
        let what = format!(
            "{method} {}",
            path_and_query.split('?').next().unwrap_or(path_and_query)
        );
        let url = format!("{}{path_and_query}", self.base_url);
        let bytes = match body {
            Some(b) => Some(serde_json::to_vec(b).map_err(|e| {
                ConfigApiError::new(&what, None, format!("cannot encode the body: {e}"))
            })?),
            None => None,
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut request = self
                .http
                .request(method.clone(), &url)
                .headers(self.headers()?);
            if let Some(bytes) = &bytes {
                request = request.body(bytes.clone());
            }
            let response = request
                .send()
                .await
                .map_err(|e| ConfigApiError::new(&what, None, describe_transport(&e)))?;
            let status = response.status().as_u16();
            let reset = response
                .headers()
                .get("X-RateLimit-Reset")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let location = response
                .status()
                .is_redirection()
                .then(|| crate::exporter::redirect_target(&response));
            let body = response
                .bytes()
                .await
                .map_err(|e| ConfigApiError::new(&what, Some(status), describe_transport(&e)))?;
            let json: Value = if body.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&body).unwrap_or(Value::Null)
            };
            if status == 429 {
                let wait = reset
                    .unwrap_or(Duration::from_secs(1))
                    .min(self.max_rate_limit_wait);
                if attempt < self.max_attempts {
                    tracing::info!(request = %what, wait_s = wait.as_secs(), attempt, "Datadog rate limit: waiting for the window to reset");
                    tokio::time::sleep(wait).await;
                    continue;
                }
                let mut err = ConfigApiError::new(
                    &what,
                    Some(429),
                    format!("rate limited {attempt} times; giving up"),
                );
                err.retry_after = reset;
                return Err(err);
            }
            if (200..300).contains(&status) || status == 400 {
                return Ok((status, json));
            }
            if (300..400).contains(&status) {
                let to = location.as_deref().unwrap_or("nowhere");
                return Err(ConfigApiError::new(
                    &what,
                    Some(status),
                    self.scrub(&format!(
                        "redirected to {to}; not followed (the request carries both keys): use the API's own URL (site or api_url)"
                    )),
                ));
            }
            return Err(ConfigApiError::new(
                &what,
                Some(status),
                // Keys blanked over the whole body before `error_text` cuts it: a cut inside
                // a key would leave a prefix that no longer matches.
                self.scrub(&error_text(
                    &json,
                    &self.scrub(&String::from_utf8_lossy(&body)),
                )),
            ));
        }
    }

    /// `text` from a server with both keys blanked out: a proxy or firewall error page may
    /// echo the request's headers.
    fn scrub(&self, text: &str) -> String {
        let text = crate::exporter::blank_key(text, self.api_key.expose_secret());
        crate::exporter::blank_key(&text, self.app_key.expose_secret()).into_owned()
    }

    async fn expect_ok(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ConfigApiError> {
        let what = format!("{method} {path}");
        let (status, json) = self.send(method, path, body).await?;
        if status == 400 {
            return Err(ConfigApiError::new(
                &what,
                Some(400),
                self.scrub(&errors_of(&json).join("; ")),
            ));
        }
        Ok(json)
    }

    /// Every object of `kind` (dashboards as Datadog's list summaries: `id`, `title`,
    /// `description`, ...; monitors and rules in full).
    pub async fn list(&self, kind: ObjectKind) -> Result<Vec<Value>, ConfigApiError> {
        let path = kind.path();
        let mut all = Vec::new();
        for page in 0.. {
            // Every list is paged, each in its own way. Dashboards: `count` defaults to 100, so
            // an organisation with more had ours past the first page taken for missing (and
            // created again at every publish).
            let (query, items_at) = match kind {
                ObjectKind::Dashboard => (
                    format!("count={PAGE_SIZE}&start={}", page * PAGE_SIZE),
                    "/dashboards",
                ),
                ObjectKind::Monitor => (format!("page={page}&page_size={PAGE_SIZE}"), ""),
                ObjectKind::Rule => (
                    format!("page%5Bsize%5D={PAGE_SIZE}&page%5Bnumber%5D={page}"),
                    "/data",
                ),
            };
            let json = self
                .expect_ok(Method::GET, &format!("{path}?{query}"), None)
                .await?;
            let items = json
                .pointer(items_at)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let n = items.len();
            let before = all.len();
            merge_new(&mut all, items, kind);
            if n < PAGE_SIZE || all.len() == before {
                break;
            }
        }
        Ok(all)
    }

    /// One object by id. A missing object is an error with [`ConfigApiError::is_not_found`].
    pub async fn get(&self, kind: ObjectKind, id: &str) -> Result<Value, ConfigApiError> {
        self.expect_ok(
            Method::GET,
            &format!("{}/{}", kind.path(), encode_segment(id)),
            None,
        )
        .await
    }

    /// Creates an object; returns it as Datadog stored it (with its `id`).
    pub async fn create(&self, kind: ObjectKind, body: &Value) -> Result<Value, ConfigApiError> {
        self.expect_ok(Method::POST, kind.path(), Some(body)).await
    }

    /// Replaces object `id` with `body`; returns it as Datadog stored it.
    pub async fn update(
        &self,
        kind: ObjectKind,
        id: &str,
        body: &Value,
    ) -> Result<Value, ConfigApiError> {
        self.expect_ok(
            Method::PUT,
            &format!("{}/{}", kind.path(), encode_segment(id)),
            Some(body),
        )
        .await
    }

    /// Deletes object `id`.
    pub async fn delete(&self, kind: ObjectKind, id: &str) -> Result<(), ConfigApiError> {
        self.expect_ok(
            Method::DELETE,
            &format!("{}/{}", kind.path(), encode_segment(id)),
            None,
        )
        .await
        .map(|_| ())
    }

    /// Validates a monitor (`POST /api/v1/monitor/validate`).
    pub async fn validate_monitor(&self, body: &Value) -> Result<Validation, ConfigApiError> {
        self.validate("/api/v1/monitor/validate", body).await
    }

    /// Validates a detection rule (`POST /api/v2/security_monitoring/rules/validation`).
    pub async fn validate_rule(&self, body: &Value) -> Result<Validation, ConfigApiError> {
        self.validate("/api/v2/security_monitoring/rules/validation", body)
            .await
    }

    async fn validate(&self, path: &str, body: &Value) -> Result<Validation, ConfigApiError> {
        let (status, json) = self.send(Method::POST, path, Some(body)).await?;
        if status == 400 {
            Ok(Validation::Invalid(
                errors_of(&json).iter().map(|e| self.scrub(e)).collect(),
            ))
        } else {
            Ok(Validation::Valid)
        }
    }
}

fn merge_new(all: &mut Vec<Value>, items: Vec<Value>, kind: ObjectKind) {
    for item in items {
        let id = kind.id_of(&item);
        if id.is_none() || !all.iter().any(|seen| kind.id_of(seen) == id) {
            all.push(item);
        }
    }
}

/// Percent-encodes a path segment (ids are simple, but never trust them).
fn encode_segment(id: &str) -> String {
    let mut out = String::new();
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Datadog's `{"errors": [...]}` as strings.
fn errors_of(json: &Value) -> Vec<String> {
    match json.get("errors").and_then(Value::as_array) {
        Some(errors) => errors
            .iter()
            .map(|e| match e {
                Value::String(s) => s.clone(),
                Value::Object(o) => o
                    .get("detail")
                    .or_else(|| o.get("title"))
                    .and_then(Value::as_str)
                    .map_or_else(|| e.to_string(), str::to_owned),
                other => other.to_string(),
            })
            .collect(),
        None => vec!["rejected without a reason".to_owned()],
    }
}

fn error_text(json: &Value, body: &str) -> String {
    if json.get("errors").is_some() {
        errors_of(json).join("; ")
    } else {
        let text = body.trim();
        if text.is_empty() {
            "no body".to_owned()
        } else {
            text.chars().take(300).collect()
        }
    }
}

/// A transport error without the URL's query (never holds keys: they travel in headers).
fn describe_transport(err: &reqwest::Error) -> String {
    let kind = if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "cannot connect"
    } else {
        "transport error"
    };
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(err);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}: {detail}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_keys() {
        let client = ConfigClient::new(
            "http://127.0.0.1:9",
            SecretString::from("0123456789abcdef0123456789abcdef"),
            SecretString::from("0123456789abcdef0123456789abcdef01234567"),
        )
        .unwrap();
        let debug = format!("{client:?}");
        assert!(!debug.contains("0123456789abcdef"), "{debug}");
        assert!(debug.contains("[redacted]"));
    }

    #[test]
    fn base_urls_are_checked() {
        let key = || SecretString::from("k");
        assert!(ConfigClient::new("ftp://x", key(), key()).is_err());
        assert!(ConfigClient::new("https://user:pw@x", key(), key()).is_err());
        assert_eq!(
            ConfigClient::new("https://api.datadoghq.com/", key(), key())
                .unwrap()
                .base_url(),
            "https://api.datadoghq.com"
        );
    }

    #[test]
    fn ids_and_errors() {
        assert_eq!(
            ObjectKind::Monitor
                .id_of(&serde_json::json!({"id": 12}))
                .as_deref(),
            Some("12")
        );
        assert_eq!(encode_segment("abc-123/x"), "abc-123%2Fx");
        assert_eq!(
            errors_of(&serde_json::json!({"errors": ["a", {"detail": "b"}]})),
            ["a", "b"]
        );
    }
}
