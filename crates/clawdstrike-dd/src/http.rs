//! The HTTP input: what Clawdstrike's generic webhook exporter sends.
//!
//! `POST` (any path; `/v1/events` by convention) with a body of one event as a JSON object,
//! an array of events, or NDJSON. Answers:
//!
//! | status | when |
//! |---|---|
//! | 202 `{"accepted":N}` | every event of the body was taken |
//! | 400 `{"error":...,"problems":[{"item":N,"error":...}]}` | a malformed body or event: nothing taken; the bad items go to the rejects file |
//! | 400 `{"error":...,"accepted":N,"problems":[...]}` | events larger than the whole disk buffer: they go to the rejects file, every other event of the body was taken |
//! | 401 | missing or wrong `Authorization: Bearer <token>` |
//! | 405 | not `POST` (`GET /health` answers 200) |
//! | (closed) | the headers took longer than `input.http.read_timeout_ms` |
//! | 413 | body over `input.http.max_body_bytes` |
//! | 408 | the body stopped arriving for `input.http.read_timeout_ms` |
//! | 500 `{"error","accepted","next_item","problems"}` | the disk buffer could not write the event (disk full, I/O error) |
//! | 503 + `Retry-After: 1`, same body | the queue (or the disk buffer, after a 250 ms wait) is full, the disk buffer's fsync took over 5 s, or the forwarder is stopping |
//!
//! When a body stops part way (500, 503), every item before `next_item` (1-based) was taken
//! or is listed in `problems` (and kept in the rejects file), and none from it on was taken:
//! a client resends from `next_item`.
//!
//! With the disk buffer, a body's events are appended one after the other and made durable
//! together before the answer (under `fsync: always`, one fsync for the body, not one per
//! event); a body that stops part way keeps what it took. When a client goes away before its
//! answer, the events of its body not yet handed to the pipeline are dropped with it (it
//! never heard they were taken, and sends them again).
//!
//! A W3C `traceparent` header is attached to every event of the body for APM correlation.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clawdstrike_export::Record;
use clawdstrike_schema::decode_event;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::forwarder::{Refused, Sink};
use crate::rejects::{Reject, Rejects};

/// How much of a bad body (or item) the rejects file keeps: enough to see what is wrong,
/// without letting a misbehaving client fill the disk with 5 MiB bodies.
const REJECT_RAW_MAX: usize = 64 * 1024;

/// The slowest a body may arrive on the whole, in bytes per second (a 5 MiB body: 80 s more).
const MIN_BODY_RATE: f64 = 64.0 * 1024.0;

/// How long a body that partly fit waits for room for the rest before answering 503.
const PARTIAL_WAIT: Duration = Duration::from_secs(5);

/// Listener settings.
#[derive(Debug, Clone)]
pub(crate) struct HttpOptions {
    /// Bearer token (None: no auth, only allowed on loopback).
    pub(crate) token: Option<SecretString>,
    /// Body limit.
    pub(crate) max_body_bytes: usize,
    /// Time for a request's headers, and then for its body.
    pub(crate) read_timeout: Duration,
    /// Connections served at once.
    pub(crate) max_connections: usize,
}

#[derive(Debug)]
struct Shared {
    options: HttpOptions,
    sink: Sink,
    rejects: Arc<Rejects>,
}

type Resp = Response<Full<Bytes>>;

fn respond(status: StatusCode, body: serde_json::Value) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// Constant-time comparison of the presented token with ours.
fn token_ok(presented: Option<&HeaderValue>, token: &SecretString) -> bool {
    let Some(value) = presented.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let Some(given) = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
    else {
        return false;
    };
    let want = token.expose_secret().as_bytes();
    let given = given.trim().as_bytes();
    let mut diff = u8::from(want.len() != given.len());
    for (i, &b) in want.iter().enumerate() {
        diff |= b ^ given.get(i).copied().unwrap_or(0);
    }
    diff == 0
}

/// One problem of a body.
#[derive(Debug)]
struct Problem {
    item: u64,
    error: String,
    raw: Vec<u8>,
}

/// The bad items of a body that are named in the answer and written to the rejects file one
/// by one; the others are counted. A 5 MiB body of `1` lines has 2.6 million bad items:
/// listing them all would take a gigabyte of memory and hundreds of megabytes of rejects for
/// a body that is refused whole anyway (the producer still has it).
const MAX_PROBLEMS: usize = 100;

/// An error's text is cut to this many bytes: serde's messages may quote the input.
const MAX_ERROR_BYTES: usize = 1024;

/// The bad items of a body: the first [`MAX_PROBLEMS`] in full, and how many in all.
#[derive(Debug, Default)]
struct Problems {
    listed: Vec<Problem>,
    total: u64,
}

impl Problems {
    fn push(&mut self, item: u64, error: &dyn std::fmt::Display, raw: &[u8]) {
        self.total += 1;
        if self.listed.len() < MAX_PROBLEMS {
            self.listed.push(Problem {
                item,
                error: cut_error(error.to_string()),
                raw: raw.to_vec(),
            });
        }
    }
}

/// `error` cut to [`MAX_ERROR_BYTES`] (at a character boundary), marked when it was.
fn cut_error(mut error: String) -> String {
    if error.len() > MAX_ERROR_BYTES {
        let mut end = MAX_ERROR_BYTES;
        while !error.is_char_boundary(end) {
            end -= 1;
        }
        error.truncate(end);
        error.push_str("... (cut)");
    }
    error
}

/// Splits a body into events: a JSON object, an array of objects, or NDJSON.
/// An event of a body with its item number: its array position, or its line (blank lines
/// counted) for NDJSON, the number the answers and the rejects file use.
type Item = (u64, clawdstrike_schema::SecurityEvent);

/// The body's events, or why not (with the bad items).
fn parse_body(body: &[u8]) -> Result<Vec<Item>, (String, Problems)> {
    // A byte order mark before the body (some Windows tools write one) is not part of it.
    let body = body
        .strip_prefix(clawdstrike_schema::UTF8_BOM)
        .unwrap_or(body);
    let trimmed = body.trim_ascii();
    if trimmed.is_empty() {
        return Err((
            "empty body: expected a JSON object, an array of objects, or NDJSON".to_owned(),
            Problems::default(),
        ));
    }
    let mut events = Vec::new();
    let mut problems = Problems::default();
    let kind;
    if trimmed[0] == b'[' {
        kind = "array item";
        let items: Vec<&serde_json::value::RawValue> = match serde_json::from_slice(trimmed) {
            Ok(items) => items,
            Err(e) => {
                return Err((
                    cut_error(format!("body is not a JSON array: {e}")),
                    Problems::default(),
                ));
            }
        };
        for (i, item) in items.iter().enumerate() {
            match decode_event(item.get().as_bytes()) {
                Ok(e) => events.push((i as u64 + 1, e)),
                Err(e) => problems.push(i as u64 + 1, &e, item.get().as_bytes()),
            }
        }
    } else if serde_json::from_slice::<&serde_json::value::RawValue>(trimmed).is_ok() {
        kind = "body";
        match decode_event(trimmed) {
            Ok(e) => events.push((1, e)),
            Err(e) => problems.push(1, &e, trimmed),
        }
    } else {
        kind = "line";
        for (i, line) in body.split(|&b| b == b'\n').enumerate() {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.trim_ascii().is_empty() {
                continue;
            }
            match decode_event(line) {
                Ok(e) => events.push((i as u64 + 1, e)),
                Err(e) => problems.push(i as u64 + 1, &e, line),
            }
        }
    }
    match problems.listed.first() {
        None => Ok(events),
        Some(first) => {
            let summary = if kind == "body" {
                format!("invalid event: {}; nothing was taken", first.error)
            } else {
                format!(
                    "{} bad {kind}(s), so no event of this body was taken; {kind} {}: {}",
                    problems.total, first.item, first.error
                )
            };
            Err((summary, problems))
        }
    }
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Resp, Infallible> {
    if req.method() == Method::GET && req.uri().path() == "/health" {
        return Ok(respond(StatusCode::OK, json!({ "status": "ok" })));
    }
    // A web browser's request (from any page, to loopback too, or through DNS rebinding)
    // carries `Origin` or `Sec-Fetch-Site`; a webhook's does not. Refused, or a page could post
    // forged events to a listener without a token.
    if req.headers().contains_key(hyper::header::ORIGIN)
        || req.headers().contains_key("sec-fetch-site")
    {
        return Ok(respond(
            StatusCode::FORBIDDEN,
            json!({ "error": "requests from web browsers (with an Origin or Sec-Fetch-Site header) are refused" }),
        ));
    }
    if let Some(token) = &shared.options.token
        && !token_ok(req.headers().get(AUTHORIZATION), token)
    {
        let mut r = respond(
            StatusCode::UNAUTHORIZED,
            json!({ "error": "missing or wrong bearer token" }),
        );
        r.headers_mut()
            .insert("www-authenticate", HeaderValue::from_static("Bearer"));
        return Ok(r);
    }
    if req.method() != Method::POST {
        return Ok(respond(
            StatusCode::METHOD_NOT_ALLOWED,
            json!({ "error": "use POST" }),
        ));
    }
    // A compressed body would read as a body that is not UTF-8, with its bytes in the rejects
    // file: say what is wrong instead.
    if let Some(encoding) = req.headers().get(hyper::header::CONTENT_ENCODING)
        && !encoding
            .to_str()
            .is_ok_and(|e| e.trim().eq_ignore_ascii_case("identity"))
    {
        return Ok(respond(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            json!({ "error": "compressed bodies are not accepted (send it without Content-Encoding)" }),
        ));
    }
    let limit = shared.options.max_body_bytes;
    let too_large = || {
        respond(
            StatusCode::PAYLOAD_TOO_LARGE,
            json!({ "error": format!("body over the limit of {limit} bytes") }),
        )
    };
    if req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > limit as u64)
    {
        return Ok(too_large());
    }
    let trace = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(clawdstrike_datadog::apm::parse_traceparent);
    // The timeout is on the gaps between parts of the body, not on the whole upload: a large
    // body over a slow link arrives, one that stops arriving is answered 408.
    // The whole body also has a bound, so that a trickle (one byte per gap) cannot hold a
    // connection: the gap timeout plus the limit at a slow link's rate.
    let deadline = tokio::time::Instant::now()
        + shared.options.read_timeout
        + Duration::from_secs_f64(limit as f64 / MIN_BODY_RATE);
    let mut incoming = Limited::new(req.into_body(), limit);
    let mut body = bytes::BytesMut::new();
    loop {
        let wait = shared
            .options
            .read_timeout
            .min(deadline.saturating_duration_since(tokio::time::Instant::now()));
        let Ok(frame) = tokio::time::timeout(wait, incoming.frame()).await else {
            return Ok(respond(
                StatusCode::REQUEST_TIMEOUT,
                json!({ "error": format!(
                    "the body stopped arriving for {:?}, or came slower than {} KiB/s",
                    shared.options.read_timeout,
                    MIN_BODY_RATE / 1024.0
                ) }),
            ));
        };
        match frame {
            None => break,
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    body.extend_from_slice(&data);
                }
            }
            Some(Err(e))
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some() =>
            {
                return Ok(too_large());
            }
            Some(Err(e)) => {
                return Ok(respond(
                    StatusCode::BAD_REQUEST,
                    json!({ "error": format!("cannot read the body: {e}") }),
                ));
            }
        }
    }
    let body = body.freeze();
    let events = match parse_body(&body) {
        Ok(events) => events,
        Err((error, problems)) => {
            let mut written = true;
            for p in &problems.listed {
                // The client hears why in the answer; a failed write is counted and fails the
                // run. After one, the others are not tried: each could wait out the lock.
                written = shared
                    .rejects
                    .write(&Reject {
                        source: "http",
                        line: p.item,
                        offset: 0,
                        error: p.error.clone(),
                        raw: &p.raw[..raw_cut(&p.raw)],
                        truncated: p.raw.len() > REJECT_RAW_MAX,
                        reencoded: false,
                    })
                    .is_ok();
                if !written {
                    break;
                }
            }
            let unlisted = problems.total - problems.listed.len() as u64;
            if unlisted > 0 && written {
                let _ = shared.rejects.write(&Reject {
                    source: "http",
                    line: 0,
                    offset: 0,
                    error: format!(
                        "and {unlisted} more bad items of the same body, not written one by one (the body was refused whole: {} bad items in all)",
                        problems.total
                    ),
                    raw: &[],
                    truncated: false,
                    reencoded: false,
                });
            }
            if problems.listed.is_empty() {
                // The client hears why in the answer; a failed write is counted and fails the run.
                let _ = shared.rejects.write(&Reject {
                    source: "http",
                    line: 0,
                    offset: 0,
                    error: error.clone(),
                    raw: &body[..raw_cut(&body)],
                    truncated: body.len() > REJECT_RAW_MAX,
                    reencoded: false,
                });
            }
            let listed: Vec<_> = problems
                .listed
                .iter()
                .map(|p| json!({ "item": p.item, "error": p.error }))
                .collect();
            return Ok(respond(
                StatusCode::BAD_REQUEST,
                json!({
                    "error": error,
                    "accepted": 0,
                    "problems": listed,
                    "problems_total": problems.total,
                }),
            ));
        }
    };
    let total = events.len();
    let mut taken = Taken::default();
    // With the disk buffer, the events are appended here and made durable together at the
    // end (one fsync for the body), before the answer.
    let mut intake = shared.sink.body_intake();
    let mut stop: Option<(StatusCode, String, u64)> = None;
    for (item, event) in events {
        let mut record = Record::new(event);
        if let Some(t) = trace {
            record = record.with_trace(t);
        }
        let event = std::sync::Arc::clone(&record.event);
        let mut refused = intake.try_take(item, record.clone()).await;
        if let Err(Refused::Full(why)) = &refused
            && (intake.any_taken(taken.accepted()) || !taken.too_large.is_empty())
        {
            // Part of the body is used: wait a little for room rather than make the producer
            // resend (and duplicate) what was taken.
            refused = match tokio::time::timeout(PARTIAL_WAIT, intake.take(item, record)).await {
                Ok(result) => result,
                Err(_) => Err(Refused::Full(why.clone())),
            };
        }
        match refused {
            Ok(()) => {
                taken.accepted_items.push(item);
            }
            Err(Refused::TooLarge(why)) => {
                // Bad input, kept in the rejects file; the rest of the body goes on (the client
                // does not resend after a 4xx, so nothing after it may be dropped).
                if let Err(e) = shared
                    .rejects
                    .write_event("http", item, 0, &event, why.clone())
                {
                    stop = Some((
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!(
                            "cannot keep an event larger than the disk buffer in the rejects file: {e}"
                        ),
                        item,
                    ));
                    break;
                }
                taken.too_large.push(json!({ "item": item, "error": why }));
            }
            Err(why) => {
                stop = Some((refusal_status(&why), refusal_text(why), item));
                break;
            }
        }
    }
    // What was taken so far is made durable and handed over, even when the body stopped
    // early: the answer counts it as taken.
    if let Err(not) = intake.finish(PARTIAL_WAIT).await {
        // Nothing from its first item on was taken: the answer says so, and a client resends
        // from there (the events too large for the buffer after it are kept in the rejects
        // file, and will be again).
        taken.not_from(not.first_item);
        stop = Some((
            refusal_status(&not.why),
            refusal_text(not.why),
            not.first_item,
        ));
    }
    if let Some((status, why, item)) = stop {
        return Ok(taken.stopped(status, &why, item));
    }
    debug_assert_eq!(taken.accepted() + taken.too_large.len(), total);
    if !taken.too_large.is_empty() {
        return Ok(respond(
            StatusCode::BAD_REQUEST,
            json!({
                "error": format!(
                    "{} of {total} events are larger than the disk buffer and were not taken (they are in the rejects file); the others were",
                    taken.too_large.len()
                ),
                "accepted": taken.accepted(),
                "problems": taken.too_large,
            }),
        ));
    }
    Ok(respond(
        StatusCode::ACCEPTED,
        json!({ "accepted": taken.accepted() }),
    ))
}

/// The answer's status when the sink did not take an event: 503 (try again later) when it
/// is full or shutting down, 500 when the disk buffer failed.
fn refusal_status(why: &Refused) -> StatusCode {
    match why {
        Refused::Failed(_) | Refused::TooLarge(_) => StatusCode::INTERNAL_SERVER_ERROR,
        Refused::Closed | Refused::Full(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

fn refusal_text(why: Refused) -> String {
    match why {
        Refused::Closed => "the forwarder is shutting down".to_owned(),
        Refused::Full(why) | Refused::Failed(why) | Refused::TooLarge(why) => why,
    }
}

/// What became of a body's events so far.
#[derive(Debug, Default)]
struct Taken {
    /// The item numbers of the events taken.
    accepted_items: Vec<u64>,
    /// Events larger than the disk buffer (in the rejects file), as `problems`.
    too_large: Vec<serde_json::Value>,
}

impl Taken {
    /// Events taken.
    fn accepted(&self) -> usize {
        self.accepted_items.len()
    }

    /// None of the items from `first` on was taken after all (a commit of the disk buffer
    /// failed).
    fn not_from(&mut self, first: u64) {
        self.accepted_items.retain(|&item| item < first);
        self.too_large
            .retain(|p| p["item"].as_u64().is_some_and(|item| item < first));
    }

    /// The answer when the body stopped at `next_item` (1-based): every item before it was
    /// taken or is in `problems`, none from it on was taken. A client resends from `next_item`.
    fn stopped(&self, status: StatusCode, why: &str, next_item: u64) -> Resp {
        let mut r = respond(
            status,
            json!({
                "error": why,
                "accepted": self.accepted(),
                "next_item": next_item,
                "problems": self.too_large,
            }),
        );
        if status == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("1"));
        }
        r
    }
}

/// Where to cut `raw` for the rejects file: at most [`REJECT_RAW_MAX`] bytes, and not inside
/// a UTF-8 character (a split one would make the whole line escaped, up to four times larger).
fn raw_cut(raw: &[u8]) -> usize {
    if raw.len() <= REJECT_RAW_MAX {
        return raw.len();
    }
    // A UTF-8 character is at most 4 bytes: at most 3 continuation bytes to step back over.
    // (Input that is not UTF-8 is escaped anyway: its cut may fall anywhere.)
    (REJECT_RAW_MAX - 3..=REJECT_RAW_MAX)
        .rev()
        .find(|&i| (raw[i] as i8) >= -0x40)
        .unwrap_or(REJECT_RAW_MAX)
}

/// Binds `addr`.
///
/// # Errors
/// The bind error.
pub(crate) async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves until `stop`.
pub(crate) async fn serve(
    listener: TcpListener,
    options: HttpOptions,
    sink: Sink,
    rejects: Arc<Rejects>,
    stop: &mut watch::Receiver<bool>,
) {
    // Without a timer hyper's header timeout does nothing: a client that sends its headers a
    // byte at a time would hold its connection (and, in numbers, the listener) forever.
    // HTTP/1 only (what webhook clients speak): the automatic HTTP/2 detection reads the
    // first bytes with no timer at all, so a silent connection would hold its place forever.
    // The header timer also closes a keep-alive connection left idle that long.
    let mut builder =
        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.read_timeout);
    let builder = Arc::new(builder);
    let connections = Arc::new(tokio::sync::Semaphore::new(options.max_connections));
    let shared = Arc::new(Shared {
        options,
        sink,
        rejects,
    });
    loop {
        // At most `max_connections` at once: more wait in the kernel's backlog.
        let permit = tokio::select! {
            permit = Arc::clone(&connections).acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = stop.wait_for(|s| *s) => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|s| *s) => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors (EMFILE) fails again at once: pause rather than spin
                // and flood the log.
                tracing::warn!(error = %e, "accept failed; pausing 100 ms");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(100)) => {}
                    _ = stop.wait_for(|s| *s) => break,
                }
                continue;
            }
        };
        let shared = Arc::clone(&shared);
        let builder = Arc::clone(&builder);
        let write_timeout = shared.options.read_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |req| handle(Arc::clone(&shared), req));
            let stream = WriteDeadline::new(stream, write_timeout);
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// A connection whose writes fail once one has waited `limit` for the client to read.
///
/// hyper's header timer runs only while a request head is read: a client that pipelines
/// requests (`GET /health` needs no token) and never reads the answers would otherwise hold
/// its connection, and `max_connections` of them the listener, for ever.
struct WriteDeadline {
    stream: tokio::net::TcpStream,
    limit: Duration,
    /// Set while a write (or flush) is pending: when it fires, the write fails.
    stalled: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl WriteDeadline {
    fn new(stream: tokio::net::TcpStream, limit: Duration) -> Self {
        Self {
            stream,
            limit,
            stalled: None,
        }
    }

    /// `result` of a write or flush, failed when it has been pending past the limit.
    fn bounded<T>(
        &mut self,
        cx: &mut std::task::Context<'_>,
        result: std::task::Poll<std::io::Result<T>>,
    ) -> std::task::Poll<std::io::Result<T>> {
        use std::task::Poll;
        if result.is_ready() {
            self.stalled = None;
            return result;
        }
        let limit = self.limit;
        let timer = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client has not read its answers for too long",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl tokio::io::AsyncRead for WriteDeadline {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for WriteDeadline {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let result = std::pin::Pin::new(&mut this.stream).poll_write(cx, buf);
        this.bounded(cx, result)
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let result = std::pin::Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.bounded(cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let result = std::pin::Pin::new(&mut this.stream).poll_flush(cx);
        this.bounded(cx, result)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bundled sample events, one per line.
    fn samples() -> String {
        std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/samples/events.ndjson"
        ))
        .unwrap()
    }

    #[test]
    fn bodies_are_objects_arrays_or_ndjson_and_errors_name_the_item() {
        let good = samples();
        let lines: Vec<&str> = good.lines().take(3).collect();
        assert_eq!(parse_body(lines[0].as_bytes()).unwrap().len(), 1);
        assert_eq!(
            parse_body(format!("[{},{}]", lines[0], lines[1]).as_bytes())
                .unwrap()
                .len(),
            2
        );
        assert_eq!(parse_body(lines.join("\n").as_bytes()).unwrap().len(), 3);
        let bad = lines[1].replace("\"severity\":\"high\"", "\"severity\":\"apocalyptic\"");
        let (error, problems) = parse_body(format!("{}\n{bad}\n", lines[0]).as_bytes())
            .err()
            .unwrap();
        assert!(
            error.contains("line 2") && error.contains("decision.severity"),
            "{error}"
        );
        assert_eq!((problems.total, problems.listed.len()), (1, 1));
        let (error, _) = parse_body(b"{\"oops\": ").err().unwrap();
        assert!(error.contains("line 1"), "{error}");
        let (error, _) = parse_body(b"  ").err().unwrap();
        assert!(error.contains("empty body"), "{error}");
    }

    /// A body of many small bad lines is refused with its first problems listed and all of them
    /// counted, and an error that quotes a long input is cut: the answer and the rejects stay
    /// small whatever the body.
    #[test]
    fn a_body_of_many_bad_lines_lists_the_first_and_counts_them_all() {
        let (error, problems) = parse_body("1\n".repeat(10_000).as_bytes()).err().unwrap();
        assert_eq!(problems.total, 10_000);
        assert_eq!(problems.listed.len(), MAX_PROBLEMS);
        assert_eq!(problems.listed[MAX_PROBLEMS - 1].item, MAX_PROBLEMS as u64);
        assert!(error.starts_with("10000 bad line(s)"), "{error}");
        let good = samples();
        let long = good.lines().next().unwrap().replace(
            "\"severity\":\"critical\"",
            &format!("\"severity\":\"{}\"", "é".repeat(5_000)),
        );
        assert_ne!(long, good.lines().next().unwrap());
        let (error, problems) = parse_body(long.as_bytes()).err().unwrap();
        let cut = &problems.listed[0].error;
        assert!(
            cut.len() <= MAX_ERROR_BYTES + 16 && cut.ends_with("(cut)"),
            "{cut}"
        );
        assert!(error.len() < 2 * MAX_ERROR_BYTES, "{error}");
    }

    /// NDJSON items are numbered by line, blank lines counted, like the problems of a bad body:
    /// `next_item` and the rejects file point at the right line.
    #[test]
    fn ndjson_events_are_numbered_by_their_line() {
        let good = samples();
        let lines: Vec<&str> = good.lines().take(2).collect();
        let body = format!("\n{}\n\n{}\n", lines[0], lines[1]);
        let items: Vec<u64> = parse_body(body.as_bytes())
            .unwrap()
            .into_iter()
            .map(|(item, _)| item)
            .collect();
        assert_eq!(items, [2, 4]);
        let array: Vec<u64> = parse_body(format!("[{},{}]", lines[0], lines[1]).as_bytes())
            .unwrap()
            .into_iter()
            .map(|(item, _)| item)
            .collect();
        assert_eq!(array, [1, 2]);
        // A byte order mark before any kind of body is skipped.
        for body in [
            format!("\u{feff}{}\n{}\n", lines[0], lines[1]),
            format!("\u{feff}[{},{}]", lines[0], lines[1]),
            format!("\u{feff}{}", lines[0]),
        ] {
            assert!(parse_body(body.as_bytes()).is_ok(), "{body}");
        }
    }

    /// A commit of the disk buffer that failed from item 4 on: the answer's `accepted` and
    /// `problems` say nothing of the items from 4 on (the client resends them).
    #[test]
    fn a_failed_commit_takes_back_the_items_from_its_first_one_on() {
        let mut taken = Taken::default();
        for item in [1, 2, 4, 5] {
            taken.accepted_items.push(item);
        }
        taken
            .too_large
            .push(json!({ "item": 3, "error": "too large" }));
        taken
            .too_large
            .push(json!({ "item": 6, "error": "too large" }));
        taken.not_from(4);
        assert_eq!(
            (taken.accepted(), taken.accepted_items.as_slice()),
            (2, &[1, 2][..])
        );
        assert_eq!(
            taken.too_large,
            [json!({ "item": 3, "error": "too large" })]
        );
    }

    /// The rejects file keeps at most 64 KiB of a bad body, cut before a UTF-8 character that
    /// straddles the limit, and never more than 3 bytes short of it.
    #[test]
    fn raw_is_cut_at_a_character_boundary_near_the_limit() {
        let short = "é".repeat(10);
        assert_eq!(raw_cut(short.as_bytes()), short.len());
        let mut text = "a".repeat(REJECT_RAW_MAX - 1);
        text.push('é');
        text.push_str("tail");
        let cut = raw_cut(text.as_bytes());
        assert_eq!(cut, REJECT_RAW_MAX - 1);
        assert!(std::str::from_utf8(&text.as_bytes()[..cut]).is_ok());
        let junk = vec![0x80u8; REJECT_RAW_MAX * 2];
        assert!(raw_cut(&junk) >= REJECT_RAW_MAX - 3);
    }

    #[test]
    fn tokens_compare_exactly() {
        let token = SecretString::from("s3cret");
        assert!(token_ok(
            Some(&HeaderValue::from_static("Bearer s3cret")),
            &token
        ));
        assert!(!token_ok(
            Some(&HeaderValue::from_static("Bearer s3cre")),
            &token
        ));
        assert!(!token_ok(
            Some(&HeaderValue::from_static("Bearer s3cret2")),
            &token
        ));
        assert!(!token_ok(
            Some(&HeaderValue::from_static("Basic s3cret")),
            &token
        ));
        assert!(!token_ok(None, &token));
    }
}
