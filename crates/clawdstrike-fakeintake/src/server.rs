//! The HTTP server: accept loop, one task per connection, fault handling, routing.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::{Body as _, Incoming};
use hyper::header::{CONTENT_ENCODING, HeaderName, HeaderValue, RETRY_AFTER};
use hyper::http::request::Parts;
use hyper::{Method, Request};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_util::task::TaskTracker;

use crate::codec;
use crate::config::FakeIntakeBuilder;
use crate::faults::FaultAction;
use crate::http::{self, Resp};
use crate::model::{Endpoint, KeyStatus, MetricApi, ObjectKind, RequestRecord};
use crate::state::{Keys, RateDecision, Shared, lock};
use crate::{FakeIntake, StartError, admin, logs, metrics, objects, signals};

pub(crate) async fn start(b: FakeIntakeBuilder) -> Result<FakeIntake, StartError> {
    let listener = TcpListener::bind(b.listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: b.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: b.listen,
        source,
    })?;
    let shared = Arc::new(Shared::new(
        b.settings,
        Keys {
            api: b.api_keys,
            app: b.app_keys,
        },
        b.rate_limit,
    ));
    let tracker = TaskTracker::new();
    tracker.spawn(accept_loop(listener, shared.clone(), tracker.clone()));
    tracing::debug!(%addr, "fake intake listening");
    Ok(FakeIntake::new(shared, addr, tracker))
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, tracker: TaskTracker) {
    loop {
        tokio::select! {
            () = shared.shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tracker.spawn(serve_connection(shared.clone(), stream));
                }
                Err(e) => {
                    // EMFILE and friends: back off a little instead of spinning.
                    tracing::warn!(error = %e, "fake intake: accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
}

async fn serve_connection(shared: Arc<Shared>, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    // A duplicate of the socket outlives hyper's copy, so that a reset can set SO_LINGER to
    // zero before the last close: the peer then gets a TCP RST, not a FIN.
    let (stream, guard) = match stream.into_std().and_then(|s| {
        let guard = s.try_clone()?;
        Ok((TcpStream::from_std(s)?, guard))
    }) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::warn!(error = %e, "fake intake: cannot set up connection");
            return;
        }
    };
    let kill = Arc::new(Notify::new());
    let spare = Arc::new(Spare::new(shared.idle_bodies.clone()));
    let service = {
        let shared = shared.clone();
        let kill = kill.clone();
        hyper::service::service_fn(move |req| {
            let shared = shared.clone();
            let kill = kill.clone();
            let spare = spare.clone();
            async move { Ok::<_, Infallible>(handle(shared, kill, &spare, req).await) }
        })
    };
    let builder = auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let mut reset = false;
    tokio::select! {
        _ = conn.as_mut() => {}
        () = kill.notified() => reset = true,
        () = shared.shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            tokio::select! {
                _ = conn.as_mut() => {}
                () = kill.notified() => reset = true,
                () = tokio::time::sleep(shared.settings.shutdown_grace) => {}
            }
        }
    }
    if reset {
        let _ = socket2::SockRef::from(&guard).set_linger(Some(Duration::ZERO));
    }
    drop(guard);
}

/// One request being handled: what routes and handlers need.
pub(crate) struct Req<'a> {
    pub(crate) parts: &'a Parts,
    pub(crate) body: Bytes,
    pub(crate) rec: &'a mut RequestRecord,
    pub(crate) query: Vec<(String, String)>,
}

impl Req<'_> {
    pub(crate) fn encoding(&self) -> Option<&str> {
        self.rec.content_encoding.as_deref()
    }

    pub(crate) fn method(&self) -> &Method {
        &self.parts.method
    }

    /// Answers `status` with Datadog's error body, and notes the reason in the record.
    pub(crate) fn refuse(&mut self, status: u16, reason: impl Into<String>) -> Resp {
        let reason = reason.into();
        self.rec.error = Some(reason.clone());
        http::error(status, reason)
    }

    /// Answers `status` with several errors.
    pub(crate) fn refuse_all(&mut self, status: u16, reasons: Vec<String>) -> Resp {
        self.rec.error = Some(reasons.join("; "));
        http::errors(status, reasons)
    }

    /// The body decoded and parsed as JSON.
    pub(crate) fn json_body(&mut self, max: usize) -> Result<Value, Box<Resp>> {
        let decoded = match codec::decode(self.encoding(), self.body.clone(), max) {
            Ok(d) => d,
            Err(e) => return Err(Box::new(logs::decode_error(self, e, max))),
        };
        self.rec.uncompressed_bytes = Some(decoded.len());
        serde_json::from_slice(&decoded)
            .map_err(|e| Box::new(self.refuse(400, format!("invalid JSON body: {e}"))))
    }
}

/// A connection's body buffer between requests, so that a connection sending large bodies
/// reuses one allocation (memory the kernel does not have to hand out and zero again)
/// instead of a fresh one per request. One per connection (HTTP/2 streams of a connection
/// share it, the last one done keeps its buffer), at most [`BODY_BUFFER_MAX`] each, and all
/// connections' idle spares together at most [`IdleBodies::MAX`]: many keep-alive
/// connections do not each pin a large buffer.
#[derive(Debug)]
struct Spare {
    slot: Mutex<Option<BytesMut>>,
    idle: Arc<IdleBodies>,
}

/// Up to this much is reserved for a body from its `Content-Length` before the bytes arrive,
/// and kept as a connection's spare buffer.
const BODY_BUFFER_MAX: usize = 8 << 20;

/// The bytes held by idle spare buffers, over every connection of an intake.
#[derive(Debug)]
pub(crate) struct IdleBodies {
    held: AtomicUsize,
    max: usize,
}

impl IdleBodies {
    /// The budget of one intake: eight connections' worth of the largest spare.
    pub(crate) const MAX: usize = 8 * BODY_BUFFER_MAX;

    pub(crate) fn new() -> Self {
        Self::with_max(Self::MAX)
    }

    fn with_max(max: usize) -> Self {
        Self {
            held: AtomicUsize::new(0),
            max,
        }
    }

    /// Counts `bytes` as held, if the budget has room for them.
    fn reserve(&self, bytes: usize) -> bool {
        self.held
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
                held.checked_add(bytes).filter(|&n| n <= self.max)
            })
            .is_ok()
    }

    fn release(&self, bytes: usize) {
        self.held.fetch_sub(bytes, Ordering::Relaxed);
    }
}

impl Spare {
    fn new(idle: Arc<IdleBodies>) -> Self {
        Self {
            slot: Mutex::new(None),
            idle,
        }
    }

    /// The spare, for a body of `announced` bytes; none if the body is known to be far
    /// smaller (its items, if kept, would hold the whole spare).
    fn take(&self, announced: Option<usize>) -> Option<BytesMut> {
        let mut slot = lock(&self.slot);
        let far_larger =
            |buf: &BytesMut| announced.is_some_and(|n| buf.capacity() > 2 * n + (64 << 10));
        if slot.as_ref().is_some_and(far_larger) {
            return None;
        }
        let buf = slot.take()?;
        self.idle.release(buf.capacity());
        Some(buf)
    }

    /// Keeps `body`'s buffer for the connection's next request, unless something else still
    /// holds the body (kept items), it is too large to keep idle, or the idle spares of all
    /// connections already hold the budget.
    fn put_back(&self, body: Bytes) {
        let Ok(mut buf) = body.try_into_mut() else {
            return;
        };
        if buf.capacity() > BODY_BUFFER_MAX || !self.idle.reserve(buf.capacity()) {
            return;
        }
        buf.clear();
        if let Some(old) = lock(&self.slot).replace(buf) {
            self.idle.release(old.capacity());
        }
    }
}

impl Drop for Spare {
    fn drop(&mut self) {
        if let Some(buf) = lock(&self.slot).take() {
            self.idle.release(buf.capacity());
        }
    }
}

/// Why a body could not be read.
enum BodyError {
    /// Over `max_body_bytes`, announced or sent.
    TooLarge,
    /// The connection failed or the framing was wrong.
    Read(hyper::Error),
}

/// Reads a body of at most `max` bytes into one buffer (the connection's spare when it
/// fits), copying each chunk as it arrives, while it is still in cache. A body announced
/// (`Content-Length`, which hyper has checked against the framing) over `max` is refused
/// before it is read.
async fn read_body(mut body: Incoming, max: usize, spare: &Spare) -> Result<Bytes, BodyError> {
    let announced = body
        .size_hint()
        .exact()
        .map(|n| usize::try_from(n).unwrap_or(usize::MAX));
    if announced.is_some_and(|n| n > max) {
        return Err(BodyError::TooLarge);
    }
    let mut buf = spare.take(announced).unwrap_or_default();
    buf.clear();
    if let Some(n) = announced {
        buf.reserve(n.min(BODY_BUFFER_MAX));
    }
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(BodyError::Read)?;
        if let Ok(data) = frame.into_data() {
            if data.len() > max - buf.len() {
                return Err(BodyError::TooLarge);
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

async fn handle(
    shared: Arc<Shared>,
    kill: Arc<Notify>,
    spare: &Spare,
    req: Request<Incoming>,
) -> Resp {
    if req.uri().path() == "/fakeintake" || req.uri().path().starts_with("/fakeintake/") {
        return admin::handle(&shared, req).await;
    }
    let endpoint = Endpoint::classify(req.uri().path());
    let (parts, body) = req.into_parts();
    let mut rec = RequestRecord {
        seq: shared.next_seq(),
        endpoint,
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map(ToString::to_string)
            .unwrap_or_default(),
        headers: http::redacted_headers(&parts.headers),
        content_encoding: http::header_str(&parts.headers, CONTENT_ENCODING.as_str())
            .map(str::to_owned),
        compressed_bytes: 0,
        uncompressed_bytes: None,
        items: None,
        api_key: KeyStatus::NotChecked,
        status: None,
        fault: None,
        error: None,
    };
    let max = shared.settings.max_body_bytes;
    let body = match read_body(body, max, spare).await {
        Ok(body) => body,
        Err(e) => {
            let resp = match e {
                BodyError::TooLarge => {
                    let msg = format!("Payload too large: body over {max} bytes");
                    rec.error = Some(msg.clone());
                    http::error(413, msg)
                }
                BodyError::Read(e) => {
                    rec.error = Some(format!("cannot read body: {e}"));
                    http::error(400, "cannot read body")
                }
            };
            rec.status = Some(resp.status().as_u16());
            shared.record(rec);
            return resp;
        }
    };
    rec.compressed_bytes = body.len();

    let fault = lock(&shared.faults).take(endpoint);
    if let Some(action) = fault {
        rec.fault = Some(action.clone());
        tracing::debug!(%endpoint, fault = %action.kind(), "fake intake: injecting fault");
        match action {
            FaultAction::Status {
                status,
                retry_after,
                body,
            } => {
                let mut resp = match body {
                    Some(b) => http::raw(status, Some("application/json"), b),
                    None => http::error(
                        status,
                        http::status(status)
                            .canonical_reason()
                            .unwrap_or("Injected fault"),
                    ),
                };
                if let Some(ra) = retry_after.and_then(|r| HeaderValue::from_str(&r).ok()) {
                    resp.headers_mut().insert(RETRY_AFTER, ra);
                }
                rec.status = Some(status);
                shared.record(rec);
                return resp;
            }
            FaultAction::RateLimited {
                limit,
                period,
                reset,
            } => {
                let mut resp = http::error(429, "Too many requests");
                rate_headers(&mut resp, limit, period, 0, reset);
                rec.status = Some(429);
                shared.record(rec);
                return resp;
            }
            FaultAction::Delay(d) => {
                tokio::select! {
                    () = tokio::time::sleep(d) => {}
                    () = shared.shutdown.cancelled() => {}
                }
            }
            FaultAction::Reset => {
                lock(&shared.rec).stats.connections_reset += 1;
                shared.record(rec);
                kill.notify_one();
                return std::future::pending().await;
            }
            FaultAction::Stall => {
                let release = shared.release_token();
                shared.stalled_now.fetch_add(1, Ordering::SeqCst);
                lock(&shared.rec).stats.requests_stalled += 1;
                shared.record(rec);
                tokio::select! {
                    () = release.cancelled() => {}
                    () = shared.shutdown.cancelled() => {}
                }
                shared.stalled_now.fetch_sub(1, Ordering::SeqCst);
                shared.notify();
                kill.notify_one();
                return std::future::pending().await;
            }
        }
    }

    let (resp, body) = {
        let mut req = Req {
            parts: &parts,
            body,
            query: http::query_pairs(parts.uri.query()),
            rec: &mut rec,
        };
        let resp = route(&shared, endpoint, &mut req);
        (resp, req.body)
    };
    rec.status = Some(resp.status().as_u16());
    shared.record(rec);
    spare.put_back(body);
    resp
}

fn route(shared: &Shared, endpoint: Endpoint, req: &mut Req<'_>) -> Resp {
    let api_key = http::header_str(&req.parts.headers, "dd-api-key");
    match endpoint {
        Endpoint::Unknown => req.refuse(404, "Not found"),
        Endpoint::Logs => {
            if req.method() != Method::POST {
                return req.refuse(405, "Method Not Allowed");
            }
            let status = shared.keys().check_api(api_key);
            req.rec.api_key = status;
            match status {
                KeyStatus::Missing => req.refuse(401, "Unauthorized: missing DD-API-KEY header"),
                KeyStatus::Invalid => req.refuse(403, "Forbidden"),
                _ => logs::handle(shared, req),
            }
        }
        Endpoint::Series | Endpoint::SeriesV1 | Endpoint::DistributionPoints => {
            if req.method() != Method::POST {
                return req.refuse(405, "Method Not Allowed");
            }
            let status = shared.keys().check_api(api_key);
            req.rec.api_key = status;
            if status != KeyStatus::Valid {
                return req.refuse(403, "Forbidden");
            }
            let api = match endpoint {
                Endpoint::Series => MetricApi::SeriesV2,
                Endpoint::SeriesV1 => MetricApi::SeriesV1,
                _ => MetricApi::Distribution,
            };
            metrics::handle(shared, req, api)
        }
        Endpoint::Validate => {
            if req.method() != Method::GET && req.method() != Method::POST {
                return req.refuse(405, "Method Not Allowed");
            }
            let status = shared.keys().check_api(api_key);
            req.rec.api_key = status;
            if status == KeyStatus::Valid {
                http::json_static(200, r#"{"valid":true}"#)
            } else {
                req.refuse(403, "Forbidden")
            }
        }
        Endpoint::Dashboards | Endpoint::Monitors | Endpoint::Rules | Endpoint::Signals => {
            let app_key = http::header_str(&req.parts.headers, "dd-application-key");
            let (api_status, app_status) = {
                let keys = shared.keys();
                (keys.check_api(api_key), keys.check_app(app_key))
            };
            req.rec.api_key = api_status;
            if api_status != KeyStatus::Valid || app_status != KeyStatus::Valid {
                return req.refuse(403, "Forbidden");
            }
            let decision = lock(&shared.rate).admit(Instant::now());
            if let Some(RateDecision { refused: true, .. }) = decision {
                let mut resp = req.refuse(429, "Too many requests");
                add_rate_headers(&mut resp, decision);
                return resp;
            }
            let mut resp = match endpoint {
                Endpoint::Dashboards => objects::handle(shared, req, ObjectKind::Dashboard),
                Endpoint::Monitors => objects::handle(shared, req, ObjectKind::Monitor),
                Endpoint::Rules => objects::handle(shared, req, ObjectKind::SecurityRule),
                _ => signals::handle(shared, req),
            };
            add_rate_headers(&mut resp, decision);
            resp
        }
    }
}

fn add_rate_headers(resp: &mut Resp, decision: Option<RateDecision>) {
    if let Some(d) = decision {
        rate_headers(resp, d.limit, d.period, d.remaining, d.reset);
    }
}

fn rate_headers(resp: &mut Resp, limit: u32, period: u64, remaining: u32, reset: u64) {
    let h = resp.headers_mut();
    for (name, value) in [
        ("x-ratelimit-limit", limit.to_string()),
        ("x-ratelimit-period", period.to_string()),
        ("x-ratelimit-remaining", remaining.to_string()),
        ("x-ratelimit-reset", reset.to_string()),
    ] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(HeaderName::from_static(name), v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(capacity: usize) -> Bytes {
        let mut buf = BytesMut::with_capacity(capacity);
        buf.extend_from_slice(b"[{}]");
        buf.freeze()
    }

    fn held(idle: &IdleBodies) -> usize {
        idle.held.load(Ordering::Relaxed)
    }

    /// Connections keep idle spares only while all of them together stay within the budget;
    /// a spare taken for a request, or dropped with its connection, gives its bytes back.
    #[test]
    fn idle_spares_of_all_connections_stay_within_one_budget() {
        let idle = Arc::new(IdleBodies::with_max(3 << 20));
        let first = Spare::new(Arc::clone(&idle));
        let second = Spare::new(Arc::clone(&idle));
        first.put_back(body(2 << 20));
        let kept = held(&idle);
        assert!(kept >= 2 << 20, "the first spare is kept: {kept}");
        second.put_back(body(2 << 20));
        assert_eq!(held(&idle), kept, "the second would pass the budget");
        assert!(second.take(None).is_none());

        drop(first);
        assert_eq!(held(&idle), 0, "a closed connection's spare is given back");
        second.put_back(body(2 << 20));
        assert!(held(&idle) >= 2 << 20, "now there is room");
        let taken = second.take(None).expect("the spare serves the next body");
        assert!(taken.capacity() >= 2 << 20);
        assert_eq!(held(&idle), 0, "a spare in use is not idle");

        // A spare far larger than the next body stays (and stays counted); the smaller body's
        // buffer then replaces it, and only the smaller one is counted.
        second.put_back(body(2 << 20));
        assert!(second.take(Some(10)).is_none());
        second.put_back(body(64 << 10));
        let small = held(&idle);
        assert!(
            ((64 << 10)..(1 << 20)).contains(&small),
            "the replaced spare is given back: {small}"
        );
        assert!(second.take(None).is_some());
        assert_eq!(held(&idle), 0);

        // A body still held elsewhere (kept items) is not kept, and costs nothing.
        let shared = body(1 << 20);
        let _items = shared.clone();
        second.put_back(shared);
        assert_eq!(held(&idle), 0);
        assert!(second.take(None).is_none());
    }
}
