//! Response helpers, query-string parsing and header redaction.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use hyper::{Response, StatusCode};
use serde_json::Value;

pub(crate) type Resp = Response<Full<Bytes>>;

/// Header names whose values are never kept.
const REDACTED_HEADERS: &[&str] = &[
    "dd-api-key",
    "dd-application-key",
    "authorization",
    "proxy-authorization",
    "cookie",
    "x-api-key",
];

/// What a redacted header value reads as in inspection.
pub(crate) const REDACTED: &str = "<redacted>";

pub(crate) fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

pub(crate) fn raw(code: u16, content_type: Option<&'static str>, body: impl Into<Bytes>) -> Resp {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status(code);
    if let Some(ct) = content_type {
        resp.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(ct));
    }
    resp
}

pub(crate) fn json(code: u16, value: &Value) -> Resp {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    raw(code, Some("application/json"), body)
}

pub(crate) fn json_static(code: u16, body: &'static str) -> Resp {
    raw(
        code,
        Some("application/json"),
        Bytes::from_static(body.as_bytes()),
    )
}

pub(crate) fn empty(code: u16) -> Resp {
    raw(code, None, Bytes::new())
}

/// Datadog's error shape: `{"errors":["..."]}`.
pub(crate) fn errors<I, S>(code: u16, messages: I) -> Resp
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let list: Vec<Value> = messages
        .into_iter()
        .map(|m| Value::String(m.into()))
        .collect();
    json(code, &serde_json::json!({ "errors": list }))
}

pub(crate) fn error(code: u16, message: impl Into<String>) -> Resp {
    errors(code, [message.into()])
}

/// Copies headers for inspection, with credential values replaced by [`REDACTED`].
pub(crate) fn redacted_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(name, value)| {
            let name = name.as_str().to_owned();
            let value = if REDACTED_HEADERS.contains(&name.as_str()) {
                REDACTED.to_owned()
            } else {
                String::from_utf8_lossy(value.as_bytes()).into_owned()
            };
            (name, value)
        })
        .collect()
}

pub(crate) fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Parses `a=1&b%5Bc%5D=x+y` into decoded pairs.
pub(crate) fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    let Some(query) = query else {
        return Vec::new();
    };
    query
        .split('&')
        .filter(|s| !s.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

pub(crate) fn query_get<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_are_percent_decoded() {
        let pairs = query_pairs(Some("filter%5Bquery%5D=env%3Aprod+guard&page[limit]=5&x"));
        assert_eq!(query_get(&pairs, "filter[query]"), Some("env:prod guard"));
        assert_eq!(query_get(&pairs, "page[limit]"), Some("5"));
        assert_eq!(query_get(&pairs, "x"), Some(""));
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("a%2"), "a%2");
    }

    #[test]
    fn credentials_are_redacted() {
        let mut h = HeaderMap::new();
        h.insert("DD-API-KEY", HeaderValue::from_static("secret1"));
        h.insert("dd-application-key", HeaderValue::from_static("secret2"));
        h.insert("content-type", HeaderValue::from_static("application/json"));
        let kept = redacted_headers(&h);
        let text = format!("{kept:?}");
        assert!(
            !text.contains("secret1") && !text.contains("secret2"),
            "{text}"
        );
        assert!(kept.contains(&("content-type".into(), "application/json".into())));
    }
}
