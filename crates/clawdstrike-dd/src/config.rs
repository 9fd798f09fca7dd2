//! The forwarder's configuration file: the design document's `exporters:` map plus the
//! forwarder's own keys (input, rejects, shutdown deadline, buffer).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clawdstrike_datadog::config::{ConfigError, DatadogConfig, Env, ResolvedConfig};
use clawdstrike_export::BufferConfig;
use secrecy::SecretString;
use serde::Deserialize;

/// Name of the exporter built from the `DD_*` environment when the file has no `exporters:`.
pub(crate) const DEFAULT_EXPORTER: &str = "datadog";
/// Default HTTP body limit: 5 MiB.
pub(crate) const DEFAULT_MAX_BODY_BYTES: usize = 5 * 1024 * 1024;
/// Default `input.http.read_timeout_ms`.
pub(crate) const DEFAULT_READ_TIMEOUT_MS: u64 = 10_000;
/// Default `input.http.max_connections`.
pub(crate) const DEFAULT_MAX_CONNECTIONS: usize = 1_024;
/// Default shutdown deadline: 30 s.
pub(crate) const DEFAULT_SHUTDOWN_TIMEOUT_MS: u64 = 30_000;
/// Default rejects file.
pub(crate) const DEFAULT_REJECTS: &str = "rejects.ndjson";
/// Environment variable holding the HTTP bearer token when the file sets none.
pub(crate) const TOKEN_ENV: &str = "CLAWDSTRIKE_DD_TOKEN";

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct ForwarderConfig {
    /// Datadog exporters by name (several = several regions or accounts).
    pub(crate) exporters: Option<BTreeMap<String, DatadogConfig>>,
    /// Inputs.
    pub(crate) input: InputConfig,
    /// Rejects file (default `rejects.ndjson` in the working directory).
    pub(crate) rejects: Option<PathBuf>,
    /// Shutdown deadline in milliseconds (default 30,000).
    pub(crate) shutdown_timeout_ms: Option<u64>,
    /// Buffer: `{ type: memory }` (default) or `{ type: disk, path, max_bytes, ... }`.
    pub(crate) buffer: BufferConfig,
}

/// `input:`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct InputConfig {
    /// The HTTP listener.
    pub(crate) http: HttpInputConfig,
    /// Longest accepted NDJSON line in bytes (default 1 MiB).
    pub(crate) max_line_bytes: Option<usize>,
}

/// `input.http:`.
#[derive(Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct HttpInputConfig {
    /// Address to listen on (`--listen` overrides).
    pub(crate) listen: Option<SocketAddr>,
    /// Bearer token (default `CLAWDSTRIKE_DD_TOKEN`); required unless bound to loopback.
    pub(crate) token: Option<SecretString>,
    /// Largest request body in bytes (default 5 MiB).
    pub(crate) max_body_bytes: Option<usize>,
    /// How long a client may take to send a request's headers, and then its body, in ms
    /// (default 10,000); a slower one is cut off (headers) or answered 408 (body).
    pub(crate) read_timeout_ms: Option<u64>,
    /// Connections served at once (default 1,024); more wait to be accepted.
    pub(crate) max_connections: Option<usize>,
}

impl std::fmt::Debug for HttpInputConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpInputConfig")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("max_body_bytes", &self.max_body_bytes)
            .field("read_timeout_ms", &self.read_timeout_ms)
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

/// One exporter, resolved.
#[derive(Debug, Clone)]
pub(crate) struct ExporterEntry {
    /// Its name.
    pub(crate) name: String,
    /// Defaults and environment applied.
    pub(crate) resolved: ResolvedConfig,
}

/// The configuration with every default applied.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// Enabled exporters, in name order.
    pub(crate) exporters: Vec<ExporterEntry>,
    /// Disabled exporters (named, for `check`).
    pub(crate) disabled: Vec<String>,
    /// The raw file (for the input keys).
    pub(crate) file: ForwarderConfig,
    /// Where the configuration came from.
    pub(crate) source: String,
}

impl Settings {
    /// Shutdown deadline.
    pub(crate) fn shutdown_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(
            self.file
                .shutdown_timeout_ms
                .unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT_MS),
        )
    }

    /// Rejects file.
    pub(crate) fn rejects_path(&self) -> PathBuf {
        self.file
            .rejects
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_REJECTS))
    }
}

/// Loads `path` (or, without one, the `DD_*` environment alone) and resolves every exporter.
///
/// # Errors
/// [`ConfigError`] naming the key path.
pub(crate) fn load(path: Option<&Path>, env: Env<'_>) -> Result<Settings, ConfigError> {
    let (file, source) = match path {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
                path: String::new(),
                message: format!("cannot read the file: {e}"),
            })?;
            (
                clawdstrike_datadog::config::from_yaml::<ForwarderConfig>(&text, env)?,
                path.display().to_string(),
            )
        }
        None => (
            ForwarderConfig::default(),
            "DD_* environment (no --config)".to_owned(),
        ),
    };
    from_file(file, source, env)
}

/// Resolves a parsed file.
///
/// # Errors
/// [`ConfigError`] naming the key path.
pub(crate) fn from_file(
    file: ForwarderConfig,
    source: String,
    env: Env<'_>,
) -> Result<Settings, ConfigError> {
    if let BufferConfig::Disk(disk) = &file.buffer {
        disk.validate().map_err(|message| ConfigError {
            path: "buffer".to_owned(),
            message,
        })?;
    }
    if file.input.max_line_bytes == Some(0) {
        return Err(ConfigError {
            path: "input.max_line_bytes".to_owned(),
            message: "must be at least 1".to_owned(),
        });
    }
    for (path, zero) in [
        (
            "input.http.max_body_bytes",
            file.input.http.max_body_bytes == Some(0),
        ),
        (
            "input.http.read_timeout_ms",
            file.input.http.read_timeout_ms == Some(0),
        ),
        (
            "input.http.max_connections",
            file.input.http.max_connections == Some(0),
        ),
    ] {
        if zero {
            return Err(ConfigError {
                path: path.to_owned(),
                message: "must be at least 1".to_owned(),
            });
        }
    }
    let exporters = file.exporters.clone().unwrap_or_else(|| {
        BTreeMap::from([(DEFAULT_EXPORTER.to_owned(), DatadogConfig::default())])
    });
    let mut entries = Vec::new();
    let mut disabled = Vec::new();
    for (name, config) in exporters {
        if !config.enabled {
            disabled.push(name);
            continue;
        }
        let resolved = config.resolve(env).map_err(|e| ConfigError {
            path: if e.path.is_empty() {
                format!("exporters.{name}")
            } else {
                format!("exporters.{name}.{}", e.path)
            },
            message: e.message,
        })?;
        entries.push(ExporterEntry { name, resolved });
    }
    if entries.is_empty() {
        return Err(ConfigError {
            path: "exporters".to_owned(),
            message: "no enabled exporter".to_owned(),
        });
    }
    Ok(Settings {
        exporters: entries,
        disabled,
        file,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str, vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let env = move |name: &str| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let file = clawdstrike_datadog::config::from_yaml::<ForwarderConfig>(yaml, &env)?;
        from_file(file, "test".to_owned(), &env)
    }

    #[test]
    fn the_design_documents_multi_region_shape_loads() {
        let yaml = "
exporters:
  datadog_us:
    api_key: ${DD_US_API_KEY}
    site: datadoghq.com
    logs: { service: clawdstrike, tags: [region:us] }
  datadog_eu:
    api_key: ${DD_EU_API_KEY}
    site: datadoghq.eu
    logs: { tags: [region:eu] }
  old: { enabled: false }
input: { http: { listen: 127.0.0.1:8126, max_body_bytes: 1000 }, max_line_bytes: 4096 }
rejects: /tmp/r.ndjson
shutdown_timeout_ms: 5000
";
        let s = parse(yaml, &[("DD_US_API_KEY", "a"), ("DD_EU_API_KEY", "b")]).unwrap();
        let names: Vec<_> = s.exporters.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["datadog_eu", "datadog_us"]);
        assert_eq!(s.disabled, ["old"]);
        assert_eq!(
            s.exporters[0].resolved.logs_endpoint,
            "https://http-intake.logs.datadoghq.eu/api/v2/logs"
        );
        assert_eq!(s.shutdown_timeout().as_millis(), 5000);
        assert_eq!(s.rejects_path(), PathBuf::from("/tmp/r.ndjson"));
    }

    #[test]
    fn errors_name_the_key_path() {
        let err = parse("exporters: { eu: { site: datadoghq.moon } }", &[]).unwrap_err();
        assert_eq!(err.path, "exporters.eu.site");
        let err = parse("input: { http: { lisen: x } }", &[]).unwrap_err();
        assert_eq!(err.path, "input.http.lisen");
        let err = parse("buffer: { type: tape }", &[]).unwrap_err();
        assert_eq!(err.path, "buffer.type");
        let err = parse("buffer: { type: disk, path: /tmp/b, max_bytes: 10 }", &[]).unwrap_err();
        assert!(err.to_string().contains("max_bytes"), "{err}");
        let s = parse("buffer: { type: disk, path: /tmp/b, fsync: always }", &[]).unwrap();
        assert!(matches!(s.file.buffer, BufferConfig::Disk(_)));
        let err = parse("exporters:\n  eu:\n    api_key: ${NOPE}\n", &[]).unwrap_err();
        assert_eq!(err.path, "exporters.eu.api_key");
    }

    #[test]
    fn a_disabled_exporter_needs_none_of_its_variables() {
        // The file every region deploys, with the EU exporter turned off here: its key's
        // variable is not set on this host.
        let yaml = "
exporters:
  us:
    api_key: ${DD_US_API_KEY}
    site: datadoghq.com
  eu:
    enabled: false
    api_key:
      file: ${DD_EU_KEY_FILE}
    app_key: ${DD_EU_APP_KEY}
    site: ${DD_EU_SITE}
    logs: { tags: [\"region:${REGION}\"] }
";
        let s = parse(yaml, &[("DD_US_API_KEY", "a")]).unwrap();
        assert_eq!(s.disabled, ["eu"]);
        assert_eq!(s.exporters.len(), 1);
        assert_eq!(s.exporters[0].name, "us");
        // Turned on, the same section needs them; so does a section whose `enabled` is not
        // a literal false.
        let err = parse(
            &yaml.replace("enabled: false", "enabled: true"),
            &[("DD_US_API_KEY", "a")],
        )
        .unwrap_err();
        assert_eq!(err.path, "exporters.eu.api_key.file");
        let err = parse(yaml, &[]).unwrap_err();
        assert_eq!(err.path, "exporters.us.api_key");
        // Only whole exporters: a turned-off `apm` section is still read (log items take
        // their service from it), so its variables are still needed.
        let err = parse(
            "exporters:\n  us:\n    apm:\n      enabled: false\n      service: ${SVC}\n",
            &[],
        )
        .unwrap_err();
        assert_eq!(err.path, "exporters.us.apm.service");
    }

    #[test]
    fn without_exporters_one_comes_from_the_environment() {
        let s = parse("", &[("DD_SITE", "us5.datadoghq.com")]).unwrap();
        assert_eq!(s.exporters.len(), 1);
        assert_eq!(s.exporters[0].name, DEFAULT_EXPORTER);
        assert_eq!(
            s.exporters[0].resolved.api_base,
            "https://api.us5.datadoghq.com"
        );
        assert_eq!(s.rejects_path(), PathBuf::from(DEFAULT_REJECTS));
    }

    fn deploy(path: &str) -> String {
        std::fs::read_to_string(format!(
            "{}/../../deploy/{path}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    #[test]
    fn the_shipped_deployment_configurations_load() {
        let docs: Vec<serde_yaml_ng::Value> =
            serde_yaml_ng::Deserializer::from_str(&deploy("kubernetes/configmap.yaml"))
                .map(|d| serde_yaml_ng::Value::deserialize(d).unwrap())
                .collect();
        let text = docs[0]["data"]["config.yaml"].as_str().unwrap();
        let s = parse(text, &[("CLAWDSTRIKE_DD_TOKEN", "t")]).unwrap();
        assert_eq!(s.exporters[0].resolved.api_key.kind(), "kubernetes");
        assert_eq!(s.file.input.http.listen.unwrap().port(), 8126);
        let s = parse(&deploy("systemd/config.yaml"), &[("DD_API_KEY", "k")]).unwrap();
        assert_eq!(s.exporters[0].resolved.site.to_string(), "datadoghq.com");
        // The Role grants exactly the one Secret the configuration reads.
        let rbac: Vec<serde_yaml_ng::Value> =
            serde_yaml_ng::Deserializer::from_str(&deploy("kubernetes/rbac.yaml"))
                .map(|d| serde_yaml_ng::Value::deserialize(d).unwrap())
                .collect();
        let role = rbac.iter().find(|d| d["kind"] == "Role").unwrap();
        assert_eq!(
            role["rules"][0]["resourceNames"],
            serde_yaml_ng::Value::from(vec!["datadog-secret"])
        );
        assert!(
            text.contains("secret: datadog-secret, key: api-key") && text.contains("key: app-key")
        );
        let secret = deploy("kubernetes/secret.yaml");
        assert!(
            secret.contains("name: datadog-secret")
                && secret.contains("api-key:")
                && secret.contains("app-key:")
        );
    }

    #[test]
    fn the_readme_configuration_examples_load() {
        let readme =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
                .unwrap();
        let vars = [
            ("DD_US_API_KEY", "a"),
            ("DD_EU_API_KEY", "b"),
            ("CLAWDSTRIKE_DD_TOKEN", "t"),
            ("DD_API_KEY", "k"),
        ];
        let mut checked = 0;
        for block in readme.split("```yaml\n").skip(1) {
            let block = &block[..block.find("```").unwrap()];
            if block.starts_with("exporters:") {
                parse(block, &vars)
                    .unwrap_or_else(|e| panic!("README example does not load: {e}\n{block}"));
                checked += 1;
            }
        }
        assert!(
            checked >= 2,
            "the README's configuration examples were found"
        );
    }
}
