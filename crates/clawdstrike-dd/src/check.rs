//! `check`: load and validate the configuration, resolve every key (naming only its provider),
//! validate the API key, test that the logs intake is reachable, and print a status report in
//! the spirit of the Datadog Agent's `status` and `configcheck`.

use std::path::Path;
use std::time::Duration;

use secrecy::ExposeSecret;

use clawdstrike_datadog::exporter::{DatadogExporter, redacted_url};
use clawdstrike_export::{Exporter, Health};
use clawdstrike_keys::{KeyHolder, KeySource, RefreshOptions};

use crate::config::Settings;

fn describe_source(source: &KeySource) -> String {
    match source {
        KeySource::Literal(_) => "literal (in the file, or from a ${VAR} in it)".to_owned(),
        KeySource::Env(var) => format!("env ${var}"),
        KeySource::File(path) => format!("file {}", path.display()),
        other => other.kind().to_owned(),
    }
}

/// `host:port` of an http(s) URL.
fn host_port(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split('/').next()?;
    let authority = authority.rsplit('@').next()?;
    if authority.contains(':') && !authority.ends_with(']') {
        Some(authority.to_owned())
    } else {
        Some(format!(
            "{authority}:{}",
            if scheme == "https" { 443 } else { 80 }
        ))
    }
}

/// Whether the file `path` can be appended to. An existing one must be a regular file (a
/// FIFO would block the check, and the writer); a missing one is created with `create_new`
/// and removed again, so nothing another process created meanwhile is touched.
fn file_writable(path: &Path) -> Result<(), String> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map(drop)
            .map_err(|e| e.to_string()),
        Ok(_) => Err("not a regular file".to_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if std::fs::symlink_metadata(path).is_ok() {
                return Err("a symbolic link to nothing".to_owned());
            }
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
            {
                Ok(_) => {
                    let _ = std::fs::remove_file(path);
                    Ok(())
                }
                // Created by someone else since: it exists, so try it as such.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => file_writable(path),
                Err(e) => Err(e.to_string()),
            }
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Whether files can be created in the directory `dir`, or in the directory nearest to it
/// that exists (the buffer creates the missing levels).
fn dir_writable(dir: &Path) -> Result<(), String> {
    let mut existing = dir;
    while !existing.exists() {
        match existing.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => existing = parent,
            _ => {
                existing = Path::new(".");
                break;
            }
        }
    }
    if !existing.is_dir() {
        return Err(format!("{} is not a directory", existing.display()));
    }
    file_writable(&existing.join(format!(".clawdstrike-dd-check-{}", std::process::id())))
        .map_err(|e| format!("cannot create files in {}: {e}", existing.display()))
}

/// Prints one path check; false when it failed.
fn report_path(label: &str, path: &Path, checked: Result<(), String>) -> bool {
    match checked {
        Ok(()) => {
            println!("{label}{} (writable)", path.display());
            true
        }
        Err(e) => {
            println!("{label}{} NOT WRITABLE: {e}", path.display());
            false
        }
    }
}

/// Runs the check; true when every enabled exporter is healthy.
pub(crate) async fn run(settings: &Settings) -> bool {
    println!(
        "clawdstrike-dd {} — configuration check",
        env!("CARGO_PKG_VERSION")
    );
    println!("configuration: {}", settings.source);
    println!(
        "shutdown_timeout_ms: {}",
        settings.shutdown_timeout().as_millis()
    );
    let mut healthy = true;
    let rejects = settings.rejects_path();
    healthy &= report_path("rejects: ", &rejects, file_writable(&rejects));
    if let clawdstrike_export::BufferConfig::Disk(disk) = &settings.file.buffer {
        healthy &= report_path("disk buffer: ", &disk.path, dir_writable(&disk.path));
    }
    let http = &settings.file.input.http;
    if let Some(addr) = http.listen {
        // As `ship` reads it: an empty variable is no variable.
        let token = http.token.clone().or_else(|| {
            std::env::var(crate::config::TOKEN_ENV)
                .ok()
                .filter(|v| !v.is_empty())
                .map(secrecy::SecretString::from)
        });
        let problem = match &token {
            Some(t) if t.expose_secret().trim().is_empty() => Some("the bearer token is empty"),
            None if !addr.ip().is_loopback() => {
                Some("a bearer token is required when not on loopback")
            }
            _ => None,
        };
        match problem {
            None => println!(
                "http input: {addr} ({})",
                if token.is_some() {
                    "bearer token set"
                } else {
                    "loopback, no token"
                }
            ),
            Some(problem) => {
                println!("http input: {addr} — PROBLEM: `input.http.token`: {problem}");
                healthy = false;
            }
        }
    }
    for name in &settings.disabled {
        println!();
        println!("exporter `{name}`: disabled");
    }
    for entry in &settings.exporters {
        let r = &entry.resolved;
        println!();
        println!("exporter `{}`", entry.name);
        println!("  site:            {}", r.site);
        println!("  logs endpoint:   {}", redacted_url(&r.logs_endpoint));
        println!("  api base:        {}", redacted_url(&r.api_base));
        println!(
            "  service/source:  {} / {}",
            r.format.service, r.format.source
        );
        println!("  hostname:        {}", r.format.hostname);
        println!(
            "  env/version:     {} / {}",
            r.format.env.as_deref().unwrap_or("-"),
            r.format.version.as_deref().unwrap_or("-")
        );
        println!(
            "  compression:     {} level {}",
            r.compression.codec.as_str(),
            r.compression.effective_level()
        );
        println!(
            "  queue:           {} events, when_full {}; batch {} events / {} ms; concurrency {}",
            r.pipeline.queue.capacity,
            r.pipeline.queue.when_full.as_str(),
            r.pipeline.batch.max_events,
            r.pipeline.batch.flush_interval_ms,
            r.pipeline.concurrency
        );
        println!(
            "  metrics:         {} (prefix `{}`)",
            if r.metrics.enabled {
                "enabled"
            } else {
                "disabled"
            },
            r.metrics.prefix
        );
        if r.metrics.enabled {
            match r.metrics_env() {
                Some(env) => println!("  metrics env:     {env}"),
                None => println!(
                    "  metrics env:     - — WARNING: the exporter's own metrics carry no env (set DD_ENV, apm.env, or an env: tag in metrics.tags); the shipped health monitors filter on env and would never alert"
                ),
            }
        }
        if let Some(path) = &r.pipeline.dead_letter.path {
            // Rotation renames files in its directory: that must be writable too.
            let dir = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let checked = file_writable(path).and_then(|()| dir_writable(dir));
            healthy &= report_path("  dead letters:    ", path, checked);
        }
        println!("  api key:         {}", describe_source(&r.api_key));
        let key = match KeyHolder::from_source(r.api_key.clone(), RefreshOptions::default()).await {
            Ok(k) => {
                println!("    resolved:      OK ({}; value not shown)", k.describe());
                Some(k)
            }
            Err(e) => {
                println!("    resolved:      FAILED: {e}");
                healthy = false;
                None
            }
        };
        match &r.app_key {
            None => println!(
                "  application key: not configured (needed only by `signals` and templates)"
            ),
            Some(source) => {
                match KeyHolder::from_source(source.clone(), RefreshOptions::default()).await {
                    Ok(k) => println!(
                        "  application key: {} — resolved OK ({}; value not shown)",
                        describe_source(source),
                        k.describe()
                    ),
                    Err(e) => {
                        println!(
                            "  application key: {} — FAILED: {e}",
                            describe_source(source)
                        );
                        healthy = false;
                    }
                }
            }
        }
        let exporter = key.as_ref().map(|key| {
            DatadogExporter::from_config_with_key(&entry.name, r, key.clone())
                .map_err(|e| e.to_string())
        });
        match &exporter {
            // Through the client that ships: its proxy, TLS and timeouts.
            Some(Ok(exporter)) => match exporter.probe_logs_intake().await {
                Ok(status) => println!("  logs intake:     reachable (HTTP {status} to a GET)"),
                Err(reason) => {
                    println!("  logs intake:     UNREACHABLE: {reason}");
                    healthy = false;
                }
            },
            // No key to build the client with: a plain connection, at least.
            _ => match host_port(&r.logs_endpoint) {
                Some(addr) => match tokio::time::timeout(
                    Duration::from_secs(5),
                    tokio::net::TcpStream::connect(&addr),
                )
                .await
                {
                    Ok(Ok(_)) => println!("  logs intake:     reachable ({addr})"),
                    Ok(Err(e)) => {
                        println!("  logs intake:     UNREACHABLE ({addr}): {e}");
                        healthy = false;
                    }
                    Err(_) => {
                        println!("  logs intake:     UNREACHABLE ({addr}): timed out after 5 s");
                        healthy = false;
                    }
                },
                None => println!(
                    "  logs intake:     cannot parse {}",
                    redacted_url(&r.logs_endpoint)
                ),
            },
        }
        let Some(exporter) = exporter else { continue };
        let status = match exporter {
            Ok(exporter) => exporter.health_check().await,
            Err(reason) => Health::Unknown { reason },
        };
        match status {
            Health::Healthy => println!("  api key check:   OK (GET /api/v1/validate: valid)"),
            Health::Degraded { reason } => {
                println!("  api key check:   INVALID: {reason}");
                healthy = false;
            }
            Health::Unknown { reason } => {
                println!("  api key check:   UNKNOWN: {reason}");
                healthy = false;
            }
        }
    }
    println!();
    println!("status: {}", if healthy { "OK" } else { "PROBLEMS FOUND" });
    healthy
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port_come_from_the_url() {
        assert_eq!(
            host_port("https://http-intake.logs.datadoghq.com/api/v2/logs").unwrap(),
            "http-intake.logs.datadoghq.com:443"
        );
        assert_eq!(
            host_port("http://127.0.0.1:9000/api/v2/logs").unwrap(),
            "127.0.0.1:9000"
        );
        assert_eq!(host_port("http://proxy/api").unwrap(), "proxy:80");
    }
}
