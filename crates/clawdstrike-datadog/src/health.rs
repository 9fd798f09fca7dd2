//! `health_check` via `GET /api/v1/validate`.

use clawdstrike_export::Health;
use clawdstrike_keys::{KeyHolder, RefreshOutcome};
use reqwest::header::HeaderValue;

/// Calls `/api/v1/validate` with the current key: 200 `{"valid":true}` is healthy, 403 is
/// degraded (invalid key), and a network error or any other answer is unknown — a network
/// error is not an invalid key.
///
/// A rejected key is read again from its source first, and a new one validated in its place:
/// after a rotation with the old key revoked, the check does not report a key the next event
/// would replace anyway. The read is a fresh one (serialised with the others, not throttled),
/// and leaves no outcome behind: the logs path, on its own 403, still reads the key again
/// rather than reuse this check's "unchanged" from a moment before a new key was written.
pub async fn validate(client: &reqwest::Client, api_base: &str, key: &KeyHolder) -> Health {
    let current = key.current();
    match validate_with(client, api_base, &current).await {
        Ok(health) => health,
        // Already replaced since, or found changed now: the new key is what counts.
        Err(rejected) => {
            let replaced = key.current().generation() != current.generation()
                || matches!(key.refresh_now().await, RefreshOutcome::Changed { .. });
            if !replaced {
                return rejected;
            }
            validate_with(client, api_base, &key.current())
                .await
                .unwrap_or_else(|health| health)
        }
    }
}

/// `Err` for a rejected key.
async fn validate_with(
    client: &reqwest::Client,
    api_base: &str,
    current: &clawdstrike_keys::CurrentKey,
) -> Result<Health, Health> {
    let mut value = match HeaderValue::from_str(current.expose()) {
        Ok(v) => v,
        Err(_) => {
            return Ok(Health::Degraded {
                reason: "the API key contains characters not allowed in an HTTP header".to_owned(),
            });
        }
    };
    value.set_sensitive(true);
    let url = format!("{api_base}/api/v1/validate");
    let response = match client.get(&url).header("DD-API-KEY", value).send().await {
        Ok(r) => r,
        Err(e) => {
            // reqwest's own text would print the URL whole (credentials included).
            return Ok(Health::Unknown {
                reason: format!(
                    "cannot reach {}{}",
                    crate::exporter::redacted_url(&url),
                    crate::exporter::error_sources(&e)
                ),
            });
        }
    };
    let status = response.status();
    Ok(match status.as_u16() {
        200 => match response.json::<serde_json::Value>().await {
            Ok(body) if body.get("valid") == Some(&serde_json::Value::Bool(true)) => {
                Health::Healthy
            }
            Ok(body) => Health::Degraded {
                reason: format!(
                    "{} answered 200 without valid:true: {}",
                    crate::exporter::redacted_url(&url),
                    crate::exporter::excerpt(body.to_string().as_bytes(), &[current.expose()])
                ),
            },
            Err(e) => Health::Unknown {
                reason: format!(
                    "{} answered 200 with an unreadable body: {}",
                    crate::exporter::redacted_url(&url),
                    e.without_url()
                ),
            },
        },
        401 | 403 => {
            return Err(Health::Degraded {
                reason: format!(
                    "Datadog rejected the API key (HTTP {status} from /api/v1/validate)"
                ),
            });
        }
        _ => Health::Unknown {
            reason: format!(
                "{} answered HTTP {status}",
                crate::exporter::redacted_url(&url)
            ),
        },
    })
}
