//! Configuration: YAML-friendly serde types in the design document's shape, `${VAR}`
//! interpolation, Datadog's `DD_*` environment conventions, and errors that name the bad key.
//!
//! ```yaml
//! api_key: ${DD_API_KEY}          # or { env: NAME } | { file: PATH } | { vault: ... } | { kubernetes: ... }
//! app_key: { env: DD_APP_KEY }    # only for templates and signals
//! site: datadoghq.eu              # DD_SITE; unknown sites are an error
//! logs: { service: clawdstrike, source: clawdstrike, tags: [team:security], hostname: node-7 }
//! compression: { codec: zstd, level: 1 }   # none | gzip | deflate | zstd
//! batch: { max_events: 1000, flush_interval_ms: 1000 }
//! retry: { initial_backoff_ms: 1000, max_backoff_ms: 30000 }
//! ```
//!
//! Precedence: a value in the file beats the environment (`DD_SITE`, `DD_SERVICE`, `DD_ENV`,
//! `DD_VERSION`, `DD_HOSTNAME`, `DD_API_KEY`); `DD_TAGS` is added to the configured tags.

use std::collections::BTreeMap;
use std::fmt;

use clawdstrike_export::{
    BatchConfig, DeadLetterConfig, ExporterConfig, FilterConfig, QueueConfig, RetryConfig,
};
use clawdstrike_keys::KeySource;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::encode::{Compression, RequestLimits};
use crate::format::{DEFAULT_METADATA_MAX_BYTES, FormatOptions, MAX_ITEM_BYTES};
use crate::site::Site;

/// A configuration error naming the key (dotted path) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// Dotted path of the offending key (`exporters.datadog_eu.site`); empty for the root.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() || self.path == "." {
            write!(f, "configuration: {}", self.message)
        } else {
            write!(f, "configuration key `{}`: {}", self.path, self.message)
        }
    }
}

/// Looks up environment variables (a closure so tests need not touch the process environment).
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Replaces `${VAR}` and `${VAR:-default}` in `text`; `$$` is a literal `$`.
///
/// # Errors
/// A message naming the unset variable or the unterminated reference (never a value).
pub fn interpolate(text: &str, env: Env<'_>) -> Result<String, String> {
    if !text.contains('$') {
        return Ok(text.to_owned());
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body
                .find('}')
                .ok_or_else(|| format!("unterminated `${{` in {}", redact_refs(text)))?;
            let reference = &body[..end];
            let (name, default) = match reference.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (reference, None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!(
                    "`${{{reference}}}` is not a valid variable reference"
                ));
            }
            match env(name).or_else(|| default.map(str::to_owned)) {
                Some(value) => out.push_str(&value),
                None => {
                    return Err(format!(
                        "environment variable `{name}` is not set (referenced as `${{{name}}}`)"
                    ));
                }
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Only the `${...}` references of a string, for error messages: never the text around them,
/// which may be a secret written in the file.
fn redact_refs(text: &str) -> String {
    let refs: Vec<String> = text
        .match_indices("${")
        .map(|(i, _)| {
            let name: String = text[i + 2..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .take(64)
                .collect();
            format!("${{{name}")
        })
        .collect();
    format!("a value (its references: {})", refs.join(", "))
}

/// Interpolates every string under `value`; returns whether every reference under it
/// resolved.
///
/// An exporter turned off with a literal `enabled: false` (the file's root, or an entry of
/// `exporters`) needs none of its variables: nothing reads it. There, a reference that cannot
/// be resolved (an unset variable, say the key of a region not deployed on this host) leaves
/// out the whole setting it is in (`api_key: { file: ${EU_KEY_FILE} }` goes entirely, not
/// just the file), so its default applies, instead of failing the whole file. Only whole
/// exporters: a turned-off `apm` or `metrics` section is still read (the service, env and
/// version of log items come from `apm`).
fn interpolate_value(
    value: &mut serde_yaml_ng::Value,
    path: &mut Vec<String>,
    env: Env<'_>,
    lenient: bool,
) -> Result<bool, ConfigError> {
    use serde_yaml_ng::Value;
    let mut resolved = true;
    match value {
        Value::String(s) => match interpolate(s, env) {
            Ok(text) => *s = text,
            Err(_) if lenient => resolved = false,
            Err(message) => {
                return Err(ConfigError {
                    path: path.join("."),
                    message,
                });
            }
        },
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                path.push(i.to_string());
                resolved &= interpolate_value(item, path, env, lenient)?;
                path.pop();
            }
        }
        Value::Mapping(map) => {
            let exporter = path.is_empty() || (path.len() == 2 && path[0] == "exporters");
            let off = exporter && map.get("enabled") == Some(&Value::Bool(false));
            let mut left_out = Vec::new();
            for (k, v) in map.iter_mut() {
                path.push(k.as_str().map_or_else(|| format!("{k:?}"), str::to_owned));
                if !interpolate_value(v, path, env, lenient || off)? {
                    resolved = false;
                    if off {
                        left_out.push(k.clone());
                    }
                }
                path.pop();
            }
            for k in left_out {
                map.remove(&k);
            }
        }
        Value::Tagged(tagged) => {
            resolved = interpolate_value(&mut tagged.value, path, env, lenient)?;
        }
        _ => {}
    }
    Ok(resolved)
}

/// Parses YAML into `T`, interpolating `${VAR}` in every string value first. Errors name the
/// key path.
///
/// # Errors
/// [`ConfigError`] for YAML syntax errors, unset variables, unknown keys and bad values.
pub fn from_yaml<T: DeserializeOwned>(text: &str, env: Env<'_>) -> Result<T, ConfigError> {
    let mut value: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(text).map_err(|e| ConfigError {
            path: String::new(),
            message: format!("not valid YAML: {e}"),
        })?;
    if value.is_null() {
        value = serde_yaml_ng::Value::Mapping(Default::default());
    }
    interpolate_value(&mut value, &mut Vec::new(), env, false)?;
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let mut message = e.inner().to_string();
        // serde quotes the value it could not take (`invalid type: integer `1234`, expected a
        // string`, `invalid type: string "hvs.x", expected ...`): under a key that holds a
        // secret, that value is the secret.
        let secret = path.to_ascii_lowercase().split('.').any(|segment| {
            ["token", "key", "secret", "password", "auth"]
                .iter()
                .any(|s| segment.contains(s))
        });
        if secret {
            message = without_value(&message);
        }
        ConfigError { path, message }
    })
}

/// serde's "invalid type/value/length: <the value>, expected ..." without the value. Other
/// messages (an unknown field, with the fields expected) name no value and stay whole.
fn without_value(message: &str) -> String {
    for prefix in ["invalid type: ", "invalid value: ", "invalid length "] {
        if let Some(rest) = message.strip_prefix(prefix) {
            let expected = rest.find(", expected").map_or("", |i| &rest[i..]);
            return format!("{prefix}(value not shown){expected}");
        }
    }
    message.to_owned()
}

fn yes() -> bool {
    true
}

/// `logs:` settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogsConfig {
    /// `service` (default `DD_SERVICE`, else `clawdstrike`).
    pub service: Option<String>,
    /// `ddsource` (default `clawdstrike`).
    pub source: Option<String>,
    /// Tags added to every item (`DD_TAGS` is added too).
    pub tags: Vec<String>,
    /// `hostname` (default `DD_HOSTNAME`, else the machine's host name).
    pub hostname: Option<String>,
    /// Cap on serialised `metadata` in bytes (default 65,536).
    pub metadata_max_bytes: Option<usize>,
}

/// `metrics:` settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Emit metrics (default true).
    pub enabled: bool,
    /// Metric name prefix (default `clawdstrike`; the shipped templates assume it).
    pub prefix: String,
    /// Tags added to every metric.
    pub tags: Vec<String>,
    /// Aggregation and flush interval in milliseconds (default 10,000).
    pub flush_interval_ms: u64,
    /// `api` (default) or `{ dogstatsd: "udp://127.0.0.1:8125" | "unix:///var/run/datadog/dsd.socket" }`.
    pub transport: Option<crate::metrics::MetricsTransport>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            prefix: crate::catalogue::DEFAULT_METRIC_PREFIX.to_owned(),
            tags: Vec::new(),
            flush_interval_ms: 10_000,
            transport: None,
        }
    }
}

/// `apm:` settings (trace correlation and unified service tagging).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApmConfig {
    /// Attach `dd.trace_id`/`dd.span_id`/`otel.trace_id` when a trace context is known (default true).
    pub enabled: bool,
    /// `env` (default `DD_ENV`).
    pub env: Option<String>,
    /// `version` (default `DD_VERSION`).
    pub version: Option<String>,
    /// `service` for correlation: the logs' service when `logs.service` is not set (it may
    /// not differ from it).
    pub service: Option<String>,
}

impl Default for ApmConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            env: None,
            version: None,
            service: None,
        }
    }
}

/// `request:` settings: per-request limits and timeouts.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RequestConfig {
    /// Items per request (default and maximum 1,000).
    pub max_items: usize,
    /// Uncompressed bytes per request (default and maximum 5,000,000).
    pub max_bytes: usize,
    /// Whole-request timeout in milliseconds (default 30,000).
    pub timeout_ms: u64,
    /// Connect timeout in milliseconds (default 10,000).
    pub connect_timeout_ms: u64,
}

impl Default for RequestConfig {
    fn default() -> Self {
        Self {
            max_items: crate::encode::MAX_ITEMS_PER_REQUEST,
            max_bytes: crate::encode::MAX_BYTES_PER_REQUEST,
            timeout_ms: 30_000,
            connect_timeout_ms: 10_000,
        }
    }
}

impl RequestConfig {
    /// The limits, clamped to Datadog's.
    pub fn limits(&self) -> RequestLimits {
        RequestLimits {
            max_items: self.max_items,
            max_bytes: self.max_bytes,
        }
        .clamped()
    }
}

/// One Datadog exporter's configuration (one region / account).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatadogConfig {
    /// Whether this exporter runs (default true).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// API key source (default: the `DD_API_KEY` environment variable).
    #[serde(default)]
    pub api_key: Option<KeySource>,
    /// Application key source (templates and signals only; default `DD_APP_KEY` where needed).
    #[serde(default)]
    pub app_key: Option<KeySource>,
    /// Datadog site (default `DD_SITE`, else `datadoghq.com`).
    #[serde(default)]
    pub site: Option<Site>,
    /// Logs settings.
    #[serde(default)]
    pub logs: LogsConfig,
    /// Metrics settings.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// APM correlation settings.
    #[serde(default)]
    pub apm: ApmConfig,
    /// Compression (default zstd level 1).
    #[serde(default)]
    pub compression: Compression,
    /// Per-request limits and timeouts.
    #[serde(default)]
    pub request: RequestConfig,
    /// Override of the logs intake base URL (proxies, Observability Pipelines, tests).
    #[serde(default)]
    pub logs_url: Option<String>,
    /// Override of the API base URL (metrics, validate, configuration, signals).
    #[serde(default)]
    pub api_url: Option<String>,
    /// Queue (framework).
    #[serde(default)]
    pub queue: QueueConfig,
    /// Batching (framework; default 1000 events / 4.25 MB / 1 s).
    #[serde(default)]
    pub batch: BatchConfig,
    /// Batches in flight (framework; default 4).
    #[serde(default)]
    pub concurrency: Option<usize>,
    /// Retry policy (framework).
    #[serde(default)]
    pub retry: RetryConfig,
    /// Which events to ship (framework).
    #[serde(default)]
    pub filter: FilterConfig,
    /// Dead letters (framework).
    #[serde(default)]
    pub dead_letter: DeadLetterConfig,
}

impl Default for DatadogConfig {
    fn default() -> Self {
        from_yaml("{}", &|_| None)
            .unwrap_or_else(|e| unreachable!("the empty configuration is valid: {e}"))
    }
}

/// A configuration with every default and environment convention applied.
#[derive(Debug, Clone)]
pub struct ResolvedConfig {
    /// The site.
    pub site: Site,
    /// Logs intake endpoint (`.../api/v2/logs`).
    pub logs_endpoint: String,
    /// API base URL (no trailing slash).
    pub api_base: String,
    /// API key source.
    pub api_key: KeySource,
    /// Application key source, if configured or `DD_APP_KEY` is set.
    pub app_key: Option<KeySource>,
    /// What goes on every item.
    pub format: FormatOptions,
    /// Compression.
    pub compression: Compression,
    /// Request limits and timeouts.
    pub request: RequestConfig,
    /// Metrics.
    pub metrics: MetricsConfig,
    /// APM.
    pub apm: ApmConfig,
    /// The framework settings for this exporter.
    pub pipeline: ExporterConfig,
}

impl ResolvedConfig {
    /// The `env` the exporter's own metrics carry (`DD_ENV`, `apm.env`, or an `env:` tag of
    /// `metrics.tags`). Security metrics take it from each event's session; these have no
    /// event to take it from, and the shipped health monitors filter on it, so without one
    /// they never alert.
    pub fn metrics_env(&self) -> Option<String> {
        self.metrics
            .tags
            .iter()
            .filter_map(|t| crate::tags::normalise_tag(t))
            .find_map(|t| t.strip_prefix("env:").map(str::to_owned))
            .or_else(|| self.format.env.clone())
    }
}

/// The machine's host name (Linux), or `unknown`.
pub fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| process_env("HOSTNAME"))
        .unwrap_or_else(|| "unknown".to_owned())
}

fn trim_url(url: &str) -> String {
    url.trim_end_matches('/').to_owned()
}

impl DatadogConfig {
    /// Parses one exporter's configuration from YAML (with `${VAR}` interpolation).
    ///
    /// # Errors
    /// [`ConfigError`] naming the key.
    pub fn from_yaml(text: &str, env: Env<'_>) -> Result<Self, ConfigError> {
        from_yaml(text, env)
    }

    /// Applies defaults and `DD_*` environment conventions.
    ///
    /// # Errors
    /// [`ConfigError`] for an unknown `DD_SITE`, a bad URL override or invalid framework settings.
    pub fn resolve(&self, env: Env<'_>) -> Result<ResolvedConfig, ConfigError> {
        let err = |path: &str, message: String| ConfigError {
            path: path.to_owned(),
            message,
        };
        let site = match self.site {
            Some(site) => site,
            None => match env("DD_SITE") {
                Some(s) => s.parse().map_err(|e: crate::site::UnknownSite| {
                    err("site", format!("from DD_SITE: {e}"))
                })?,
                None => Site::default(),
            },
        };
        for (path, url) in [("logs_url", &self.logs_url), ("api_url", &self.api_url)] {
            let Some(url) = url else { continue };
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                // Not the value itself: it may hold a password.
                return Err(err(
                    path,
                    "not an http(s) URL: it must start with http:// or https://".to_owned(),
                ));
            }
            // The API paths are appended to it: a query or fragment would swallow them.
            if url.contains(['?', '#']) {
                return Err(err(
                    path,
                    "a base URL (scheme, host, port, path prefix) without `?query` or `#fragment`"
                        .to_owned(),
                ));
            }
        }
        // The full intake endpoint given as the base works too (`.../api/v2/logs`).
        let logs_base = self.logs_url.as_deref().map_or_else(
            || site.logs_base_url(),
            |u| {
                let base = trim_url(u);
                base.strip_suffix("/api/v2/logs")
                    .map_or(base.clone(), str::to_owned)
            },
        );
        let api_base = self
            .api_url
            .as_deref()
            .map_or_else(|| site.api_base_url(), trim_url);
        let mut tags = self.logs.tags.clone();
        if let Some(dd_tags) = env("DD_TAGS") {
            tags.extend(
                dd_tags
                    .split([' ', ','])
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned),
            );
        }
        // A metric name is letters, digits, `_` and `.`, from a letter: Datadog rewrites any
        // other character to `_`, so the templates would query names that never arrive (and
        // DogStatsD's `:`, `|`, `#` would break its lines).
        let prefix = &self.metrics.prefix;
        if self.metrics.enabled
            && (!prefix.starts_with(|c: char| c.is_ascii_alphabetic())
                || !prefix
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
                || prefix.ends_with('.')
                || prefix.contains(".."))
        {
            return Err(err(
                "metrics.prefix",
                format!(
                    "`{prefix}` is no metric name prefix: letters, digits, `_` and `.`, starting with a letter (Datadog rewrites other characters, so dashboards and monitors would find nothing)"
                ),
            ));
        }
        // Datadog ties logs to traces by `service` (with `env` and `version`): the logs carry
        // one service, so `apm.service` names it when `logs.service` does not, and may not
        // name another.
        if let (Some(logs), Some(apm)) = (&self.logs.service, &self.apm.service)
            && logs != apm
        {
            return Err(err(
                "apm.service",
                format!(
                    "`{apm}` differs from logs.service `{logs}`: Datadog correlates logs with traces by their service, so the two must be the same (set one of them)"
                ),
            ));
        }
        let service = self
            .logs
            .service
            .clone()
            .or_else(|| self.apm.service.clone())
            .or_else(|| env("DD_SERVICE"))
            .unwrap_or_else(|| crate::catalogue::DEFAULT_SOURCE.to_owned());
        let format = FormatOptions {
            service,
            source: self
                .logs
                .source
                .clone()
                .unwrap_or_else(|| crate::catalogue::DEFAULT_SOURCE.to_owned()),
            hostname: self
                .logs
                .hostname
                .clone()
                .or_else(|| env("DD_HOSTNAME"))
                .unwrap_or_else(system_hostname),
            env: self.apm.env.clone().or_else(|| env("DD_ENV")),
            version: self.apm.version.clone().or_else(|| env("DD_VERSION")),
            tags,
            metadata_max_bytes: self
                .logs
                .metadata_max_bytes
                .unwrap_or(DEFAULT_METADATA_MAX_BYTES),
            max_item_bytes: MAX_ITEM_BYTES,
            trace_correlation: self.apm.enabled,
        };
        let mut pipeline = ExporterConfig {
            queue: self.queue.clone(),
            batch: self.batch.clone(),
            retry: self.retry.clone(),
            filter: self.filter.clone(),
            dead_letter: self.dead_letter.clone(),
            ..ExporterConfig::default()
        };
        if let Some(c) = self.concurrency {
            pipeline.concurrency = c;
        }
        pipeline.validate().map_err(|e| err("", e.to_string()))?;
        let app_key = self
            .app_key
            .clone()
            .or_else(|| env("DD_APP_KEY").map(|_| KeySource::env_default_app()));
        Ok(ResolvedConfig {
            site,
            logs_endpoint: format!("{logs_base}/api/v2/logs"),
            api_base,
            api_key: self
                .api_key
                .clone()
                .unwrap_or_else(KeySource::env_default_api),
            app_key,
            format,
            compression: self.compression,
            request: self.request.clone(),
            metrics: self.metrics.clone(),
            apm: self.apm.clone(),
            pipeline,
        })
    }
}

/// Several exporters by name (`exporters: { datadog_us: {...}, datadog_eu: {...} }`).
pub type Exporters = BTreeMap<String, DatadogConfig>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn interpolation_reads_variables_defaults_and_escapes() {
        let e = env(&[("A", "1")]);
        assert_eq!(
            interpolate("x-${A}-${B:-two}-$$-$", &e).unwrap(),
            "x-1-two-$-$"
        );
        let err = interpolate("${MISSING}", &e).unwrap_err();
        assert!(err.contains("`MISSING` is not set"), "{err}");
        assert!(interpolate("${A", &e).unwrap_err().contains("unterminated"));
        // A secret written in the file around a broken reference is never echoed.
        let err = interpolate("s3cr3tPart${A}moreSecret${TOK", &e).unwrap_err();
        assert!(
            !err.contains("s3cr3t") && !err.contains("moreSecret"),
            "{err}"
        );
        assert!(err.contains("${A") && err.contains("${TOK"), "{err}");
    }

    /// A secret of the wrong YAML type (an unquoted number) is not echoed by serde's message.
    #[test]
    fn a_secret_of_the_wrong_type_is_not_echoed() {
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Input {
            token: Option<String>,
            port: Option<u16>,
        }
        let err = from_yaml::<Input>("token: 918273645\n", &|_| None).unwrap_err();
        assert_eq!(err.path, "token");
        assert!(!err.to_string().contains("918273645"), "{err}");
        assert!(err.to_string().contains("expected a string"), "{err}");
        // A string where a form is expected (`auth: "hvs.…"` for a Vault auth block).
        let err = DatadogConfig::from_yaml(
            "api_key: { vault: { address: \"http://v\", path: p, auth: \"hvs.s3cr3tT0ken\" } }\n",
            &|_| None,
        )
        .unwrap_err();
        assert!(!err.to_string().contains("s3cr3tT0ken"), "{err}");
        // A misspelt form keeps its list of the expected ones.
        let err = DatadogConfig::from_yaml("api_key: { evn: X }\n", &|_| None).unwrap_err();
        assert!(err.to_string().contains("env"), "{err}");
        // Elsewhere the value helps and is shown.
        let err = from_yaml::<Input>("port: 70000\n", &|_| None).unwrap_err();
        assert!(err.to_string().contains("70000"), "{err}");
    }

    #[test]
    fn errors_name_the_bad_key() {
        let err = DatadogConfig::from_yaml("site: datadoghq.moon\n", &|_| None).unwrap_err();
        assert_eq!(err.path, "site");
        assert!(
            err.to_string()
                .contains("unknown Datadog site `datadoghq.moon`"),
            "{err}"
        );
        let err = DatadogConfig::from_yaml("logs: { servce: x }\n", &|_| None).unwrap_err();
        assert_eq!(err.path, "logs.servce");
        assert!(err.message.contains("unknown field `servce`"), "{err}");
        let err =
            DatadogConfig::from_yaml("compression: { codec: brotli }\n", &|_| None).unwrap_err();
        assert_eq!(err.path, "compression.codec");
        let err = DatadogConfig::from_yaml("api_key: ${NOPE}\n", &|_| None).unwrap_err();
        assert_eq!(err.path, "api_key");
        assert!(err.message.contains("`NOPE` is not set"));
    }

    /// `logs_url` is a base: the full endpoint given instead works; a query or fragment (which
    /// would swallow the appended path) is refused with the key named.
    #[test]
    fn intake_urls_are_bases_without_query() {
        let resolve = |yaml: &str| {
            DatadogConfig::from_yaml(yaml, &|_| None)
                .unwrap()
                .resolve(&|_| None)
        };
        for url in [
            "https://proxy.internal:3834",
            "https://proxy.internal:3834/",
            "https://proxy.internal:3834/api/v2/logs",
            "https://proxy.internal:3834/api/v2/logs/",
        ] {
            let r = resolve(&format!("logs_url: {url}")).unwrap();
            assert_eq!(
                r.logs_endpoint, "https://proxy.internal:3834/api/v2/logs",
                "{url}"
            );
        }
        for (key, url) in [
            ("logs_url", "https://proxy.internal/?token=x"),
            ("api_url", "https://proxy.internal/#frag"),
        ] {
            let err = resolve(&format!("{key}: \"{url}\"")).unwrap_err();
            assert_eq!(err.path, key);
            assert!(err.message.contains("without `?query`"), "{err}");
        }
    }

    #[test]
    fn dd_environment_conventions_are_defaults_and_the_file_wins() {
        let e = env(&[
            ("DD_SITE", "datadoghq.eu"),
            ("DD_SERVICE", "svc-env"),
            ("DD_ENV", "staging"),
            ("DD_VERSION", "9.9"),
            ("DD_TAGS", "team:a region:b,zone:c"),
            ("DD_HOSTNAME", "host-env"),
        ]);
        let r = DatadogConfig::from_yaml("logs: { tags: [x:y] }", &e)
            .unwrap()
            .resolve(&e)
            .unwrap();
        assert_eq!(r.site, Site::Eu1);
        assert_eq!(
            r.logs_endpoint,
            "https://http-intake.logs.datadoghq.eu/api/v2/logs"
        );
        assert_eq!(r.api_base, "https://api.datadoghq.eu");
        assert_eq!(r.format.service, "svc-env");
        assert_eq!(r.format.env.as_deref(), Some("staging"));
        assert_eq!(r.format.version.as_deref(), Some("9.9"));
        assert_eq!(r.format.hostname, "host-env");
        assert_eq!(r.format.tags, ["x:y", "team:a", "region:b", "zone:c"]);
        let r = DatadogConfig::from_yaml(
            "site: us5.datadoghq.com\nlogs: { service: svc-file, hostname: h }",
            &e,
        )
        .unwrap()
        .resolve(&e)
        .unwrap();
        assert_eq!(r.site, Site::Us5);
        assert_eq!(r.format.service, "svc-file");
        assert_eq!(r.format.hostname, "h");
        let err = DatadogConfig::default()
            .resolve(&env(&[("DD_SITE", "nope")]))
            .unwrap_err();
        assert!(err.to_string().contains("from DD_SITE"), "{err}");
    }

    /// `apm.service` names the logs' service when `logs.service` does not; it may not name
    /// another (Datadog correlates logs and traces by service).
    #[test]
    fn apm_service_names_the_logs_service_and_may_not_contradict_it() {
        let none = |_: &str| None;
        let resolve = |yaml: &str| {
            DatadogConfig::from_yaml(yaml, &none)
                .unwrap()
                .resolve(&none)
        };
        let r = resolve("apm: { service: agent-gateway }").unwrap();
        assert_eq!(r.format.service, "agent-gateway");
        let r = resolve("logs: { service: same }\napm: { service: same }").unwrap();
        assert_eq!(r.format.service, "same");
        let err = resolve("logs: { service: a }\napm: { service: b }").unwrap_err();
        assert!(err.to_string().contains("apm.service"), "{err}");
    }

    /// The exporter's own metrics take their env from `metrics.tags` first, then `DD_ENV` or
    /// `apm.env`; none is none (the forwarder and `check` warn).
    #[test]
    fn the_metrics_env_comes_from_metrics_tags_then_dd_env() {
        let resolve = |yaml: &str, vars: &[(&str, &str)]| {
            let e = env(vars);
            DatadogConfig::from_yaml(yaml, &e)
                .unwrap()
                .resolve(&e)
                .unwrap()
                .metrics_env()
        };
        assert_eq!(resolve("{}", &[]), None);
        // A bare `env` tag is no env (it used to panic).
        assert_eq!(resolve("metrics: { tags: [env, ENV] }", &[]), None);
        assert_eq!(
            resolve("{}", &[("DD_ENV", "staging")]).as_deref(),
            Some("staging")
        );
        assert_eq!(
            resolve(
                "metrics: { tags: [team:x, env:Prod] }",
                &[("DD_ENV", "staging")]
            )
            .as_deref(),
            Some("prod")
        );
    }

    /// A metric prefix Datadog would rewrite (or that breaks DogStatsD lines) is refused at
    /// start, naming the option; the usual ones pass.
    #[test]
    fn a_metric_prefix_datadog_would_rewrite_is_refused() {
        let none = |_: &str| None;
        let resolve = |prefix: &str| {
            DatadogConfig::from_yaml(&format!("metrics: {{ prefix: '{prefix}' }}"), &none)
                .unwrap()
                .resolve(&none)
        };
        for good in ["clawdstrike", "acme.clawdstrike", "cs_prod2"] {
            assert!(resolve(good).is_ok(), "{good}");
        }
        for bad in [
            "clawdstrike-prod",
            "2fast",
            "a:b",
            "a|b",
            "a#b",
            "a.",
            "a..b",
            "",
        ] {
            let err = resolve(bad).unwrap_err().to_string();
            assert!(err.contains("metrics.prefix"), "{bad}: {err}");
        }
        // Unused with metrics off: not checked.
        let off = DatadogConfig::from_yaml("metrics: { enabled: false, prefix: my-app }", &none)
            .unwrap()
            .resolve(&none);
        assert!(off.is_ok());
    }

    #[test]
    fn url_overrides_and_design_document_shape() {
        let yaml = "
enabled: true
api_key: ${DD_API_KEY}
site: datadoghq.com
logs_url: http://127.0.0.1:9000/
api_url: http://127.0.0.1:9001
logs: { service: clawdstrike-prod, source: clawdstrike, tags: [env:production, team:security] }
metrics: { enabled: true, prefix: clawdstrike, tags: [env:production] }
apm: { enabled: true, env: production }
compression: { codec: gzip, level: 6 }
batch: { max_events: 500, flush_interval_ms: 5000 }
retry: { initial_backoff_ms: 1000 }
";
        let e = env(&[("DD_API_KEY", "k")]);
        let r = DatadogConfig::from_yaml(yaml, &e)
            .unwrap()
            .resolve(&e)
            .unwrap();
        assert_eq!(r.logs_endpoint, "http://127.0.0.1:9000/api/v2/logs");
        assert_eq!(r.api_base, "http://127.0.0.1:9001");
        assert_eq!(r.pipeline.batch.max_events, 500);
        assert_eq!(r.compression.effective_level(), 6);
        assert!(
            !format!("{:?}", r.api_key).contains('k')
                || !format!("{:?}", r.api_key).contains("\"k\"")
        );
        let err = DatadogConfig::from_yaml("logs_url: ftp://x", &e)
            .unwrap()
            .resolve(&e)
            .unwrap_err();
        assert_eq!(err.path, "logs_url");
    }
}
