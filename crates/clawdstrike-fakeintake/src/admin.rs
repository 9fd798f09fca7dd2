//! The admin endpoint, `/fakeintake/...`: script faults, change keys, read what was received.
//! It is never faulted, rate-limited or recorded, and needs no key (the server is for loopback).

use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request};
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::config::RateLimit;
use crate::faults::{Fault, RandomFaults};
use crate::http::{self, Resp};
use crate::signals::SignalSeed;
use crate::state::{Shared, lock, remove_key};

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(Fault),
    Many(Vec<Fault>),
}

/// `POST /fakeintake/keys`: each list optional, applied in the order set, add, revoke.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct KeysUpdate {
    api_keys: Option<Vec<String>>,
    #[serde(default)]
    add_api_keys: Vec<String>,
    #[serde(default)]
    revoke_api_keys: Vec<String>,
    app_keys: Option<Vec<String>>,
    #[serde(default)]
    add_app_keys: Vec<String>,
    #[serde(default)]
    revoke_app_keys: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ResetRequest {
    #[serde(default)]
    all: bool,
}

fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, Box<Resp>> {
    serde_json::from_slice(body)
        .map_err(|e| Box::new(http::error(400, format!("invalid JSON body: {e}"))))
}

/// The most a request to a control endpoint may carry (a seeded fault schedule, signals, keys):
/// the Datadog endpoints' `max_body_bytes` does not apply here.
const ADMIN_BODY_MAX: usize = 16 << 20;

pub(crate) async fn handle(shared: &Shared, req: Request<Incoming>) -> Resp {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, ADMIN_BODY_MAX).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<LengthLimitError>() => {
            return http::error(
                413,
                format!(
                    "Payload too large: body over {ADMIN_BODY_MAX} bytes (the cap of the control endpoints)"
                ),
            );
        }
        Err(e) => return http::error(400, format!("cannot read body: {e}")),
    };
    let query = http::query_pairs(parts.uri.query());
    let limit = http::query_get(&query, "limit").and_then(|l| l.parse::<usize>().ok());
    let path = parts.uri.path().trim_end_matches('/');
    let method = parts.method.clone();
    let result: Result<Resp, Box<Resp>> = (|| {
        Ok(match (method, path) {
            (Method::GET, "/fakeintake/stats") => http::json(200, &json!(shared.stats())),
            (Method::POST, "/fakeintake/reset") => {
                let r: ResetRequest = if body.is_empty() {
                    ResetRequest::default()
                } else {
                    parse(&body)?
                };
                shared.reset_traffic();
                if r.all {
                    lock(&shared.objects).clear();
                    lock(&shared.signals).clear();
                    lock(&shared.rate).set(None);
                }
                http::json(200, &json!({ "reset": true, "all": r.all }))
            }
            (Method::GET, "/fakeintake/faults") => {
                let f = lock(&shared.faults);
                let queue: Vec<&Fault> = f.queue.iter().collect();
                let random = f.random.as_ref().map(|(r, _)| r);
                http::json(200, &json!({ "queue": queue, "random": random }))
            }
            (Method::POST, "/fakeintake/faults") => {
                let faults = match parse::<OneOrMany>(&body)? {
                    OneOrMany::One(f) => vec![f],
                    OneOrMany::Many(v) => v,
                };
                let n = faults.len();
                lock(&shared.faults)
                    .queue
                    .extend(faults.into_iter().map(|f| {
                        let n = f.count;
                        f.times(n)
                    }));
                http::json(200, &json!({ "queued": n }))
            }
            (Method::DELETE, "/fakeintake/faults") => {
                let mut f = lock(&shared.faults);
                f.queue.clear();
                f.set_random(None);
                http::json(200, &json!({ "cleared": true }))
            }
            (Method::POST | Method::PUT, "/fakeintake/faults/random") => {
                let r: RandomFaults = parse(&body)?;
                if r.faults
                    .iter()
                    .any(|f| !(0.0..=1.0).contains(&f.probability))
                {
                    return Err(Box::new(http::error(
                        400,
                        "probabilities must be between 0 and 1",
                    )));
                }
                lock(&shared.faults).set_random(Some(r));
                http::json(200, &json!({ "random": true }))
            }
            (Method::DELETE, "/fakeintake/faults/random") => {
                lock(&shared.faults).set_random(None);
                http::json(200, &json!({ "random": false }))
            }
            (Method::POST, "/fakeintake/release") => {
                shared.release_stalled();
                http::json(200, &json!({ "released": true }))
            }
            (Method::POST, "/fakeintake/keys") => {
                let u: KeysUpdate = parse(&body)?;
                let mut keys = shared.keys_mut();
                if let Some(set) = u.api_keys {
                    keys.api = set.into_iter().map(SecretString::from).collect();
                }
                keys.api
                    .extend(u.add_api_keys.into_iter().map(SecretString::from));
                for k in &u.revoke_api_keys {
                    remove_key(&mut keys.api, k);
                }
                if let Some(set) = u.app_keys {
                    keys.app = set.into_iter().map(SecretString::from).collect();
                }
                keys.app
                    .extend(u.add_app_keys.into_iter().map(SecretString::from));
                for k in &u.revoke_app_keys {
                    remove_key(&mut keys.app, k);
                }
                http::json(
                    200,
                    &json!({ "api_keys": keys.api.len(), "app_keys": keys.app.len() }),
                )
            }
            (Method::GET, "/fakeintake/logs") => {
                let rec = lock(&shared.rec);
                let n = limit.unwrap_or(usize::MAX).min(rec.items.len());
                let items: Vec<_> = rec
                    .items
                    .iter()
                    .skip(rec.items.len() - n)
                    .map(|k| k.to_item())
                    .collect();
                http::json(200, &json!(items))
            }
            (Method::GET, "/fakeintake/requests") => {
                let rec = lock(&shared.rec);
                let n = limit.unwrap_or(usize::MAX).min(rec.requests.len());
                let list: Vec<_> = rec.requests.iter().skip(rec.requests.len() - n).collect();
                http::json(200, &json!(list))
            }
            (Method::GET, "/fakeintake/series") => {
                let metric = http::query_get(&query, "metric");
                let rec = lock(&shared.rec);
                let list: Vec<_> = rec
                    .series
                    .iter()
                    .filter(|s| metric.is_none_or(|m| s.metric == m))
                    .collect();
                http::json(200, &json!(list))
            }
            (Method::GET, "/fakeintake/duplicates") => http::json(200, &json!(shared.duplicates())),
            (Method::GET, "/fakeintake/signals") => {
                http::json(200, &Value::Array(lock(&shared.signals).all()))
            }
            (Method::POST, "/fakeintake/signals") => {
                let seed: SignalSeed = parse(&body)?;
                let id = lock(&shared.signals).add(seed);
                http::json(200, &json!({ "id": id }))
            }
            (Method::PUT, "/fakeintake/rate_limit") => {
                let limit: RateLimit = parse(&body)?;
                lock(&shared.rate).set(Some(limit));
                http::json(200, &json!(limit))
            }
            (Method::DELETE, "/fakeintake/rate_limit") => {
                lock(&shared.rate).set(None);
                http::json(200, &json!({ "rate_limit": null }))
            }
            _ => http::error(404, "Not found"),
        })
    })();
    let resp = result.unwrap_or_else(|e| *e);
    shared.notify();
    resp
}
