//! A small Security Signals API client (use case DD-6): list the signals raised on our events
//! and change a signal's triage state. Needs the API key **and** the application key.
//!
//! - `GET /api/v2/security_monitoring/signals` with `filter[query]`, `filter[from]`,
//!   `filter[to]`, `sort`, `page[limit]`, `page[cursor]`;
//! - `PATCH /api/v2/security_monitoring/signals/{id}/state` with
//!   `{"data":{"attributes":{"state":"open|under_review|archived","archive_reason":...}}}`.

use std::time::Duration;

use clawdstrike_keys::KeyHolder;
use reqwest::header::HeaderValue;
use serde_json::{Value, json};

use crate::exporter::{ClientError, http_client_for};

/// Triage states.
pub const STATES: &[&str] = &["open", "under_review", "archived"];

/// Why a signals call failed (never contains a key).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignalsError {
    /// Datadog answered with an error status.
    #[error("HTTP {status} from {url}: {body}")]
    Http {
        /// The status.
        status: u16,
        /// The URL (no credentials: keys travel in headers).
        url: String,
        /// The first 512 bytes of the body.
        body: String,
    },
    /// No answer.
    #[error("cannot reach {url}: {reason}")]
    Network {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// An answer we cannot read.
    #[error("unexpected answer from {url}: {reason}")]
    Decode {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// A bad argument (unknown state, key not usable in a header).
    #[error("{0}")]
    Invalid(String),
    /// The HTTP client could not be built.
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// A list request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListQuery {
    /// `filter[query]` (Datadog search syntax), e.g. `source:clawdstrike`.
    pub query: Option<String>,
    /// `filter[from]`: RFC 3339, Unix milliseconds or `now-1h`.
    pub from: Option<String>,
    /// `filter[to]`.
    pub to: Option<String>,
    /// `timestamp` or `-timestamp` (newest first).
    pub sort: Option<String>,
    /// `page[limit]` (Datadog allows up to 1,000).
    pub limit: Option<u32>,
    /// `page[cursor]` from a previous page.
    pub cursor: Option<String>,
}

/// One signal, with the fields a triage list shows; `raw` keeps the whole object.
#[derive(Debug, Clone, PartialEq)]
pub struct Signal {
    /// Its id.
    pub id: String,
    /// When it fired (as sent).
    pub timestamp: String,
    /// Its message (title and body).
    pub message: String,
    /// Its tags.
    pub tags: Vec<String>,
    /// Its triage state (`open`, `under_review`, `archived`).
    pub state: String,
    /// The whole JSON object.
    pub raw: Value,
}

/// A page of signals.
#[derive(Debug, Clone, PartialEq)]
pub struct SignalPage {
    /// The signals.
    pub signals: Vec<Signal>,
    /// The cursor of the next page, if any.
    pub next_cursor: Option<String>,
}

/// The Security Signals API client.
#[derive(Debug, Clone)]
pub struct SignalsClient {
    client: reqwest::Client,
    api_base: String,
    api_key: KeyHolder,
    app_key: KeyHolder,
}

fn header(key: &KeyHolder, what: &str) -> Result<HeaderValue, SignalsError> {
    let mut value = HeaderValue::from_str(key.current().expose()).map_err(|_| {
        SignalsError::Invalid(format!(
            "the {what} contains characters not allowed in an HTTP header"
        ))
    })?;
    value.set_sensitive(true);
    Ok(value)
}

impl SignalsClient {
    /// A client for `api_base` (`https://api.datadoghq.com`, or a fake intake).
    ///
    /// # Errors
    /// [`SignalsError::Client`] when the TLS stack cannot be initialised.
    pub fn new(
        api_base: &str,
        api_key: KeyHolder,
        app_key: KeyHolder,
    ) -> Result<Self, SignalsError> {
        Ok(SignalsClient {
            client: http_client_for(api_base, Duration::from_secs(30), Duration::from_secs(10))?,
            api_base: api_base.trim_end_matches('/').to_owned(),
            api_key,
            app_key,
        })
    }

    fn request(
        &self,
        method: reqwest::Method,
        url: &str,
    ) -> Result<reqwest::RequestBuilder, SignalsError> {
        Ok(self
            .client
            .request(method, url)
            .header("DD-API-KEY", header(&self.api_key, "API key")?)
            .header(
                "DD-APPLICATION-KEY",
                header(&self.app_key, "application key")?,
            ))
    }

    async fn send(
        &self,
        url: &str,
        builder: reqwest::RequestBuilder,
    ) -> Result<Value, SignalsError> {
        // Errors name the URL without credentials (`api_url` may carry a proxy's user and
        // password), and reqwest's own message without the URL.
        let shown = crate::exporter::redacted_url(url);
        let response = builder.send().await.map_err(|e| SignalsError::Network {
            url: shown.clone(),
            reason: e.without_url().to_string(),
        })?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| SignalsError::Network {
            url: shown.clone(),
            reason: e.without_url().to_string(),
        })?;
        if !status.is_success() {
            let (api_key, app_key) = (self.api_key.current(), self.app_key.current());
            return Err(SignalsError::Http {
                status: status.as_u16(),
                url: shown,
                body: crate::exporter::excerpt(&body, &[api_key.expose(), app_key.expose()]),
            });
        }
        serde_json::from_slice(&body).map_err(|e| SignalsError::Decode {
            url: shown,
            reason: e.to_string(),
        })
    }

    /// Lists one page of signals.
    ///
    /// # Errors
    /// [`SignalsError::Http`] (403: the application key lacks `security_monitoring_signals_read`),
    /// [`SignalsError::Network`], [`SignalsError::Decode`].
    pub async fn list(&self, query: &ListQuery) -> Result<SignalPage, SignalsError> {
        let url = format!("{}/api/v2/security_monitoring/signals", self.api_base);
        let mut params: Vec<(&str, String)> = Vec::new();
        let fields = [
            ("filter[query]", &query.query),
            ("filter[from]", &query.from),
            ("filter[to]", &query.to),
            ("sort", &query.sort),
            ("page[cursor]", &query.cursor),
        ];
        for (name, value) in fields {
            if let Some(v) = value {
                params.push((name, v.clone()));
            }
        }
        if let Some(limit) = query.limit {
            params.push(("page[limit]", limit.to_string()));
        }
        let builder = self.request(reqwest::Method::GET, &url)?.query(&params);
        let body = self.send(&url, builder).await?;
        let data =
            body.get("data")
                .and_then(Value::as_array)
                .ok_or_else(|| SignalsError::Decode {
                    url: url.clone(),
                    reason: "no `data` array".to_owned(),
                })?;
        let signals = data.iter().map(signal_from_json).collect();
        let next_cursor = body
            .pointer("/meta/page/after")
            .and_then(Value::as_str)
            .map(str::to_owned);
        Ok(SignalPage {
            signals,
            next_cursor,
        })
    }

    /// Sets a signal's triage state (`archive_reason` only with `archived`).
    ///
    /// # Errors
    /// [`SignalsError::Invalid`] for an unknown state; [`SignalsError::Http`] (404: no such
    /// signal; 403: the application key lacks `security_monitoring_signals_write`), and the
    /// others of [`list`](Self::list).
    pub async fn set_state(
        &self,
        id: &str,
        state: &str,
        archive_reason: Option<&str>,
        comment: Option<&str>,
    ) -> Result<String, SignalsError> {
        if !STATES.contains(&state) {
            return Err(SignalsError::Invalid(format!(
                "unknown triage state `{state}`, expected one of {}",
                STATES.join(", ")
            )));
        }
        if id.is_empty() || id.contains('/') {
            return Err(SignalsError::Invalid(format!("`{id}` is not a signal id")));
        }
        let url = format!(
            "{}/api/v2/security_monitoring/signals/{id}/state",
            self.api_base
        );
        let mut attributes = json!({ "state": state });
        if let Some(reason) = archive_reason {
            attributes["archive_reason"] = json!(reason);
        }
        if let Some(comment) = comment {
            attributes["archive_comment"] = json!(comment);
        }
        let builder = self
            .request(reqwest::Method::PATCH, &url)?
            .json(&json!({ "data": { "attributes": attributes } }));
        let body = self.send(&url, builder).await?;
        Ok(body
            .pointer("/data/attributes/state")
            .and_then(Value::as_str)
            .unwrap_or(state)
            .to_owned())
    }
}

fn signal_from_json(value: &Value) -> Signal {
    let attrs = value.get("attributes");
    let text = |path: &str| {
        attrs
            .and_then(|a| a.pointer(path))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    Signal {
        id: value
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        timestamp: text("/timestamp"),
        message: text("/message"),
        tags: attrs
            .and_then(|a| a.get("tags"))
            .and_then(Value::as_array)
            .map(|t| {
                t.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default(),
        state: text("/custom/workflow/triage/state"),
        raw: value.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_are_read_from_the_api_shape() {
        let v = json!({"id":"AAA","type":"signal","attributes":{"timestamp":"2026-11-20T09:00:00.000Z","message":"Secret leak","tags":["source:clawdstrike"],
            "custom":{"workflow":{"triage":{"state":"under_review"}}}}});
        let s = signal_from_json(&v);
        assert_eq!(
            (s.id.as_str(), s.state.as_str(), s.message.as_str()),
            ("AAA", "under_review", "Secret leak")
        );
        assert_eq!(s.tags, ["source:clawdstrike"]);
    }
}
