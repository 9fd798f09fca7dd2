//! A Kubernetes API server emulator on loopback, speaking the real wire format for Secrets:
//! GET of one Secret, LIST and WATCH (chunked `{"type":..,"object":..}` lines) filtered by
//! `fieldSelector=metadata.name=<name>`, and `Status` bodies for errors. Watches resume from
//! the `resourceVersion` the client sends, like the real server.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};

type Body = BoxBody<Bytes, Infallible>;

#[derive(Default)]
struct State {
    /// name → (data, resourceVersion)
    secrets: BTreeMap<String, (BTreeMap<String, String>, u64)>,
    resource_version: u64,
    /// Every change: (resourceVersion, type, name).
    history: Vec<(u64, &'static str, String)>,
    watchers: Vec<(String, mpsc::UnboundedSender<Bytes>)>,
    forbidden: bool,
    /// A gateway in front answers 502 with a JSON page that is not a Status (no `code`).
    gateway_down: bool,
    /// Service-account tokens the TokenReview API accepts: token → (namespace, name, uid).
    service_accounts: BTreeMap<String, (String, String, String)>,
    token_reviews: usize,
    /// Query strings of LIST and WATCH requests.
    collection_queries: Vec<String>,
    watch_connections: usize,
    gets: usize,
}

#[derive(Clone)]
pub struct FakeApiServer {
    pub url: String,
    pub namespace: String,
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
    task: Arc<tokio::task::JoinHandle<()>>,
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        if Arc::strong_count(&self.task) == 1 {
            self.task.abort();
        }
    }
}

fn b64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

impl FakeApiServer {
    pub async fn start(namespace: &str) -> FakeApiServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State::default()));
        let changed = Arc::new(Notify::new());
        let ns = namespace.to_owned();
        let task = tokio::spawn({
            let state = state.clone();
            let changed = changed.clone();
            async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        break;
                    };
                    let state = state.clone();
                    let changed = changed.clone();
                    let ns = ns.clone();
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |req| {
                            let state = state.clone();
                            let changed = changed.clone();
                            let ns = ns.clone();
                            async move {
                                if req.uri().path() == TOKEN_REVIEWS {
                                    return Ok::<_, Infallible>(token_review(&state, req).await);
                                }
                                Ok::<_, Infallible>(handle(&state, &changed, &ns, req))
                            }
                        });
                        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            }
        });
        FakeApiServer {
            url,
            namespace: namespace.to_owned(),
            state,
            changed,
            task: Arc::new(task),
        }
    }

    /// A `kube::Client` pointed at this server.
    pub fn client(&self) -> kube::Client {
        let config = kube::Config::new(self.url.parse().unwrap());
        kube::Client::try_from(config).unwrap()
    }

    /// Creates or updates Secret `name` with `data`, notifying open watches.
    pub fn put_secret(&self, name: &str, data: &[(&str, &str)]) {
        let mut st = self.state.lock().unwrap();
        st.resource_version += 1;
        let rv = st.resource_version;
        let kind = if st.secrets.contains_key(name) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        let data = data
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        st.secrets.insert(name.to_owned(), (data, rv));
        st.history.push((rv, kind, name.to_owned()));
        let line = event_line(&self.namespace, kind, name, &st.secrets[name]);
        st.watchers
            .retain(|(watched, tx)| watched != name || tx.send(line.clone()).is_ok());
        drop(st);
        self.changed.notify_waiters();
    }

    /// Makes every request answer 403 Forbidden (an RBAC denial).
    pub fn set_forbidden(&self, forbidden: bool) {
        self.state.lock().unwrap().forbidden = forbidden;
    }

    /// Makes a gateway in front answer every GET of a secret with 502 and a JSON page of its
    /// own (`{"message": "no healthy upstream"}`, no `code`), as Envoy and others do.
    pub fn set_gateway_down(&self, down: bool) {
        self.state.lock().unwrap().gateway_down = down;
    }

    /// Ends every open watch stream (like an API server restart or a load-balancer timeout).
    pub fn drop_watches(&self) {
        self.state.lock().unwrap().watchers.clear();
    }

    /// Makes the TokenReview API accept `token` as service account `namespace/name`.
    pub fn add_service_account_token(&self, token: &str, namespace: &str, name: &str) {
        let uid = format!("uid-{name}");
        self.state.lock().unwrap().service_accounts.insert(
            token.to_owned(),
            (namespace.to_owned(), name.to_owned(), uid),
        );
    }

    pub fn token_reviews(&self) -> usize {
        self.state.lock().unwrap().token_reviews
    }

    pub fn watch_connections(&self) -> usize {
        self.state.lock().unwrap().watch_connections
    }

    pub fn open_watches(&self) -> usize {
        let mut st = self.state.lock().unwrap();
        st.watchers.retain(|(_, tx)| !tx.is_closed());
        st.watchers.len()
    }

    pub fn gets(&self) -> usize {
        self.state.lock().unwrap().gets
    }

    pub fn collection_queries(&self) -> Vec<String> {
        self.state.lock().unwrap().collection_queries.clone()
    }
}

fn secret_json(namespace: &str, name: &str, (data, rv): &(BTreeMap<String, String>, u64)) -> Value {
    let data: serde_json::Map<String, Value> = data
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(b64(v.as_bytes()))))
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "resourceVersion": rv.to_string(),
            "uid": "6f1d9a3c-0000-4000-8000-000000000001",
        },
        "type": "Opaque",
        "data": data,
    })
}

fn event_line(
    namespace: &str,
    kind: &str,
    name: &str,
    secret: &(BTreeMap<String, String>, u64),
) -> Bytes {
    let mut line =
        json!({ "type": kind, "object": secret_json(namespace, name, secret) }).to_string();
    line.push('\n');
    Bytes::from(line)
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    let body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "details": { "kind": "secrets" },
        "code": code.as_u16(),
    });
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())).boxed())
        .unwrap()
}

fn json_response(value: &Value) -> Response<Body> {
    Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(value.to_string())).boxed())
        .unwrap()
}

fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == key).then(|| v.replace("%3D", "=").replace("%3d", "="))
    })
}

fn handle(
    state: &Mutex<State>,
    changed: &Notify,
    ns: &str,
    req: Request<Incoming>,
) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let prefix = format!("/api/v1/namespaces/{ns}/secrets");
    let mut st = state.lock().unwrap();
    if req.method() != hyper::Method::GET || !path.starts_with(&prefix) {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
        );
    }
    let rest = &path[prefix.len()..];
    if let Some(name) = rest.strip_prefix('/') {
        st.gets += 1;
        if st.gateway_down {
            return Response::builder()
                .status(StatusCode::BAD_GATEWAY)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(r#"{"message":"no healthy upstream"}"#)).boxed())
                .unwrap();
        }
        if st.forbidden {
            return status(
                StatusCode::FORBIDDEN,
                "Forbidden",
                &format!(
                    "secrets \"{name}\" is forbidden: User \"system:serviceaccount:{ns}:clawdstrike\" \
                     cannot get resource \"secrets\" in API group \"\" in the namespace \"{ns}\""
                ),
            );
        }
        return match st.secrets.get(name) {
            Some(secret) => json_response(&secret_json(ns, name, secret)),
            None => status(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("secrets \"{name}\" not found"),
            ),
        };
    }
    if !rest.is_empty() {
        return status(StatusCode::NOT_FOUND, "NotFound", "no such path");
    }
    // A collection request (LIST or WATCH): only with a metadata.name field selector.
    st.collection_queries.push(query.clone());
    let watch = query_param(&query, "watch").as_deref() == Some("true");
    if st.forbidden {
        let verb = if watch { "watch" } else { "list" };
        return status(
            StatusCode::FORBIDDEN,
            "Forbidden",
            &format!(
                "secrets is forbidden: User \"system:serviceaccount:{ns}:clawdstrike\" cannot {verb} \
                 resource \"secrets\" in API group \"\" in the namespace \"{ns}\""
            ),
        );
    }
    let Some(name) = query_param(&query, "fieldSelector")
        .and_then(|s| s.strip_prefix("metadata.name=").map(str::to_owned))
    else {
        return status(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "secrets is forbidden: the Role allows only one secret (resourceNames)",
        );
    };
    if !watch {
        let items: Vec<Value> = st
            .secrets
            .get(&name)
            .map(|s| secret_json(ns, &name, s))
            .into_iter()
            .collect();
        return json_response(&json!({
            "apiVersion": "v1",
            "kind": "SecretList",
            "metadata": { "resourceVersion": st.resource_version.to_string() },
            "items": items,
        }));
    }
    let since: u64 = query_param(&query, "resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
    // Replay what happened after the client's resourceVersion, then stream live events.
    for (rv, kind, changed_name) in &st.history {
        if *rv > since && *changed_name == name {
            let _ = tx.send(event_line(ns, kind, &name, &st.secrets[&name]));
        }
    }
    st.watchers.push((name, tx));
    st.watch_connections += 1;
    drop(st);
    changed.notify_waiters();
    let body = StreamBody::new(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|line| (Ok::<_, Infallible>(Frame::data(line)), rx))
    }));
    Response::builder()
        .header("content-type", "application/json")
        .body(BodyExt::boxed(body))
        .unwrap()
}

const TOKEN_REVIEWS: &str = "/apis/authentication.k8s.io/v1/tokenreviews";

/// `POST /apis/authentication.k8s.io/v1/tokenreviews`, as Vault's Kubernetes auth calls it.
async fn token_review(state: &Mutex<State>, req: Request<Incoming>) -> Response<Body> {
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let review: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let token = review["spec"]["token"].as_str().unwrap_or_default();
    let mut st = state.lock().unwrap();
    st.token_reviews += 1;
    let status = match st.service_accounts.get(token) {
        Some((ns, name, uid)) => json!({
            "authenticated": true,
            "user": {
                "username": format!("system:serviceaccount:{ns}:{name}"),
                "uid": uid,
                "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{ns}")],
            },
            "audiences": review["spec"]["audiences"].clone(),
        }),
        None => json!({ "authenticated": false, "error": "invalid bearer token" }),
    };
    json_response(&json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "metadata": { "creationTimestamp": null },
        "spec": review["spec"].clone(),
        "status": status,
    }))
}

/// A service-account JWT with the claims Vault's Kubernetes auth reads (not signed by a real
/// key: Vault delegates verification to the TokenReview API).
pub fn service_account_jwt(namespace: &str, name: &str) -> String {
    fn b64url(bytes: &[u8]) -> String {
        b64(bytes)
            .trim_end_matches('=')
            .replace('+', "-")
            .replace('/', "_")
    }
    let header = json!({ "alg": "RS256", "kid": "test" });
    let claims = json!({
        "iss": "kubernetes/serviceaccount",
        "kubernetes.io/serviceaccount/namespace": namespace,
        "kubernetes.io/serviceaccount/secret.name": format!("{name}-token"),
        "kubernetes.io/serviceaccount/service-account.name": name,
        "kubernetes.io/serviceaccount/service-account.uid": format!("uid-{name}"),
        "sub": format!("system:serviceaccount:{namespace}:{name}"),
    });
    format!(
        "{}.{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes()),
        b64url(&[7u8; 256])
    )
}
