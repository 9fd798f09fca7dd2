//! Request bodies: log items packed into JSON arrays within the intake's limits, then
//! compressed.

use std::io::Write;
use std::sync::Mutex;

use bytes::Bytes;
use clawdstrike_export::Record;
use serde::{Deserialize, Serialize};

use crate::format::{LogFormatter, Scratch};

thread_local! {
    /// The zstd context of this thread and its level.
    static ZSTD: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { std::cell::RefCell::new(None) };
    /// Request-sized buffers of this thread, reused: [`pack`] takes them for JSON arrays and
    /// [`Compression::compress`] gives them back once it has compressed their content. Encoding
    /// runs on a few threads, so a few buffers serve every request instead of a megabyte-sized
    /// allocation per request (which allocators hand back to the OS only after a delay, so
    /// that churning them inflates the resident set).
    static SPARE: std::cell::RefCell<Vec<Vec<u8>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Spare buffers kept per thread: a JSON array and zstd's output (gzip and deflate grow their
/// own, request-sized output).
const MAX_SPARE: usize = 2;

/// Uncompressed bodies given back once their request is done ([`recycle_body`]), for any
/// thread's next JSON array: such a body is the array itself, so it never comes back to the
/// thread-local spares of the encoding thread.
pub(crate) static RETURNED: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// Bodies kept in [`RETURNED`]: as many as requests in flight at the default concurrency.
const MAX_RETURNED: usize = 4;

/// Held by the tests that take from or give to [`RETURNED`], which is shared by every thread
/// of the process (each test has a thread of its own, so its spares are its own).
#[cfg(test)]
pub(crate) static POOL_TESTS: Mutex<()> = Mutex::new(());

/// An empty buffer with room for `capacity` bytes, reused when this thread has one or a body
/// was given back.
fn take_buffer(capacity: usize) -> Vec<u8> {
    let reused = SPARE
        .with(|spare| spare.borrow_mut().pop())
        .or_else(|| RETURNED.lock().unwrap_or_else(|e| e.into_inner()).pop());
    match reused {
        Some(mut buffer) => {
            buffer.clear();
            buffer.reserve(capacity);
            buffer
        }
        None => Vec::with_capacity(capacity),
    }
}

/// Keeps `buffer` for reuse by this thread (up to [`MAX_SPARE`]; none larger than twice a
/// request, as zstd's worst-case output for a full request slightly exceeds one).
fn recycle(mut buffer: Vec<u8>) {
    if buffer.capacity() > 2 * MAX_BYTES_PER_REQUEST {
        return;
    }
    buffer.clear();
    SPARE.with(|spare| {
        let mut spare = spare.borrow_mut();
        if spare.len() < MAX_SPARE {
            spare.push(buffer);
        }
    });
}

/// Gives back the body of a request that is done, so that a later JSON array reuses its memory
/// instead of a fresh request-sized allocation (whose pages the kernel must hand out and zero
/// again). Only an uncompressed body is worth it (a compressed one is small, or a gzip
/// stream's own buffer), and only once nothing else holds it; anything else is just dropped.
pub fn recycle_body(body: Bytes, compression: &Compression) {
    if compression.codec != Codec::None {
        return;
    }
    let Ok(mut body) = body.try_into_mut() else {
        return;
    };
    // Emptied first, so that turning it back into a vector moves no bytes.
    body.clear();
    let buffer = Vec::from(body);
    if buffer.capacity() > 2 * MAX_BYTES_PER_REQUEST {
        return;
    }
    let mut returned = RETURNED.lock().unwrap_or_else(|e| e.into_inner());
    if returned.len() < MAX_RETURNED {
        returned.push(buffer);
    }
}

/// Datadog's hard limits for one logs request.
pub const MAX_ITEMS_PER_REQUEST: usize = 1_000;
/// Datadog's hard limit of uncompressed bytes per logs request.
pub const MAX_BYTES_PER_REQUEST: usize = 5_000_000;

/// A compression codec for request bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    /// No compression.
    None,
    /// gzip (documented by Datadog).
    Gzip,
    /// deflate, zlib-wrapped as HTTP's `deflate` is (documented by Datadog).
    Deflate,
    /// zstd: what the Datadog Agent (level 1) and Vector (level 3) send by default.
    #[default]
    Zstd,
}

impl Codec {
    /// The `Content-Encoding` header value for logs, or `None` for no compression.
    pub fn content_encoding(self) -> Option<&'static str> {
        match self {
            Codec::None => None,
            Codec::Gzip => Some("gzip"),
            Codec::Deflate => Some("deflate"),
            Codec::Zstd => Some("zstd"),
        }
    }

    /// The codec's name, for tags.
    pub fn as_str(self) -> &'static str {
        match self {
            Codec::None => "none",
            Codec::Gzip => "gzip",
            Codec::Deflate => "deflate",
            Codec::Zstd => "zstd",
        }
    }

    /// The default level: 1 for zstd (as the Agent), 6 for gzip and deflate.
    pub fn default_level(self) -> i32 {
        match self {
            Codec::Zstd => 1,
            Codec::None => 0,
            Codec::Gzip | Codec::Deflate => 6,
        }
    }
}

/// Compression settings (`compression: { codec, level }`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Compression {
    /// The codec (default `zstd`).
    #[serde(default)]
    pub codec: Codec,
    /// The level (default: 1 for zstd, 6 for gzip/deflate). Clamped to the codec's range.
    #[serde(default)]
    pub level: Option<i32>,
}

impl Default for Compression {
    fn default() -> Self {
        Self {
            codec: Codec::Zstd,
            level: None,
        }
    }
}

impl Compression {
    /// Settings for `codec` at `level`.
    pub fn new(codec: Codec, level: i32) -> Self {
        Self {
            codec,
            level: Some(level),
        }
    }

    /// The level in force.
    pub fn effective_level(&self) -> i32 {
        let level = self.level.unwrap_or_else(|| self.codec.default_level());
        match self.codec {
            Codec::None => 0,
            Codec::Gzip | Codec::Deflate => level.clamp(0, 9),
            Codec::Zstd => level.clamp(1, 19),
        }
    }

    /// Compresses `data`.
    ///
    /// # Errors
    /// Only if the compressor fails (out of memory); callers treat it as retryable.
    pub fn compress(&self, data: Vec<u8>) -> std::io::Result<Vec<u8>> {
        let level = self.effective_level();
        let compressed = match self.codec {
            // The buffer becomes the body. One far larger than its content (a spare that served
            // a bigger request) would be held at full size until the request is done: copy.
            Codec::None if data.capacity() > 2 * data.len() + 4096 => {
                let body = data.clone();
                recycle(data);
                return Ok(body);
            }
            Codec::None => return Ok(data),
            Codec::Gzip => {
                let mut enc = flate2::write::GzEncoder::new(
                    Vec::with_capacity(data.len() / 4),
                    flate2::Compression::new(level as u32),
                );
                enc.write_all(&data)?;
                enc.finish()?
            }
            Codec::Deflate => {
                let mut enc = flate2::write::ZlibEncoder::new(
                    Vec::with_capacity(data.len() / 4),
                    flate2::Compression::new(level as u32),
                );
                enc.write_all(&data)?;
                enc.finish()?
            }
            Codec::Zstd => ZSTD.with(|cell| {
                // One compression context per thread, reused across requests; the output goes
                // to a reused buffer of the worst-case size, then into one of the exact size.
                let mut cell = cell.borrow_mut();
                let reuse = matches!(&*cell, Some((l, _)) if *l == level);
                if !reuse {
                    *cell = Some((level, zstd::bulk::Compressor::new(level)?));
                }
                let mut out = take_buffer(zstd::zstd_safe::compress_bound(data.len()));
                let result = match &mut *cell {
                    Some((_, compressor)) => compressor
                        .compress_to_buffer(&data, &mut out)
                        .map(|_| out.as_slice().to_vec()),
                    None => zstd::bulk::compress(&data, level),
                };
                recycle(out);
                result
            })?,
        };
        recycle(data);
        Ok(compressed)
    }
}

/// Per-request limits (a lower goal than Datadog's hard limits may be configured).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    /// Items per request (at most 1,000).
    pub max_items: usize,
    /// Uncompressed bytes per request (at most 5,000,000).
    pub max_bytes: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        Self {
            max_items: MAX_ITEMS_PER_REQUEST,
            max_bytes: MAX_BYTES_PER_REQUEST,
        }
    }
}

impl RequestLimits {
    /// Clamps the limits into Datadog's hard limits (and at least room for one item).
    pub fn clamped(self) -> Self {
        Self {
            max_items: self.max_items.clamp(1, MAX_ITEMS_PER_REQUEST),
            max_bytes: self
                .max_bytes
                .clamp(crate::format::MAX_ITEM_BYTES + 2, MAX_BYTES_PER_REQUEST),
        }
    }
}

/// One request body, before compression.
#[derive(Debug)]
pub struct Payload {
    /// The JSON array.
    pub json: Vec<u8>,
    /// Indices (into the batch) of the records it carries, in order.
    pub indices: Vec<usize>,
    /// How many of its items we truncated.
    pub truncated: usize,
}

/// One request body, compressed and ready to send.
#[derive(Debug, Clone)]
pub struct EncodedRequest {
    /// The (compressed) body.
    pub body: Bytes,
    /// Uncompressed size.
    pub uncompressed_len: usize,
    /// Indices (into the batch) of the records it carries.
    pub indices: Vec<usize>,
    /// How many of its items we truncated.
    pub truncated: usize,
}

/// Packs the records at `indices` into as few JSON arrays as the limits allow.
pub fn pack(
    formatter: &LogFormatter,
    batch: &[Record],
    indices: &[usize],
    limits: RequestLimits,
) -> Vec<Payload> {
    let limits = limits.clamped();
    let mut payloads = Vec::new();
    let mut scratch = Scratch::default();
    // Sized for the items still to come (about 1.3 KB each), so buffers do not grow by copying.
    let capacity =
        |remaining: usize| (remaining.min(limits.max_items) * 1_300 + 2).min(limits.max_bytes);
    let mut current = Payload {
        json: take_buffer(capacity(indices.len())),
        indices: Vec::new(),
        truncated: 0,
    };
    current.json.push(b'[');
    for (position, &index) in indices.iter().enumerate() {
        let mark = current.json.len();
        if !current.indices.is_empty() {
            current.json.push(b',');
        }
        let item_start = current.json.len();
        let info = formatter.write_item(&batch[index], &mut scratch, &mut current.json);
        let full_items = current.indices.len() >= limits.max_items;
        let full_bytes = current.json.len() + 1 > limits.max_bytes;
        if !current.indices.is_empty() && (full_items || full_bytes) {
            // Move the item just written into a fresh payload.
            let mut next = take_buffer(capacity(indices.len() - position));
            next.push(b'[');
            next.extend_from_slice(&current.json[item_start..]);
            current.json.truncate(mark);
            current.json.push(b']');
            let done = std::mem::replace(
                &mut current,
                Payload {
                    json: next,
                    indices: Vec::new(),
                    truncated: 0,
                },
            );
            payloads.push(done);
        }
        current.indices.push(index);
        current.truncated += usize::from(info.truncated);
    }
    if !current.indices.is_empty() {
        current.json.push(b']');
        payloads.push(current);
    }
    payloads
}

/// Compresses a payload into a request.
///
/// # Errors
/// When the compressor fails.
pub fn finish(payload: Payload, compression: &Compression) -> std::io::Result<EncodedRequest> {
    let uncompressed_len = payload.json.len();
    let body = compression.compress(payload.json)?;
    Ok(EncodedRequest {
        body: Bytes::from(body),
        uncompressed_len,
        indices: payload.indices,
        truncated: payload.truncated,
    })
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    /// An uncompressed body that nothing else holds comes back as the next array's buffer,
    /// the same memory; one still held elsewhere, or a compressed one, does not.
    #[test]
    fn a_sent_uncompressed_body_is_the_next_arrays_buffer() {
        let _pool = POOL_TESTS.lock().unwrap_or_else(|e| e.into_inner());
        let none = Compression {
            codec: Codec::None,
            level: None,
        };
        let zstd = Compression::default();
        let body = |capacity: usize| {
            let mut json = Vec::with_capacity(capacity);
            json.extend_from_slice(b"[{\"a\":1}]");
            Bytes::from(json)
        };
        RETURNED.lock().unwrap().clear();
        let sent = body(1 << 20);
        let at = sent.as_ptr();
        recycle_body(sent, &none);
        let reused = take_buffer(1_000);
        assert_eq!(reused.as_ptr(), at, "the same allocation");
        assert!(reused.is_empty() && reused.capacity() >= 1 << 20);

        let shared = body(1 << 20);
        let holder = shared.clone();
        recycle_body(shared, &none);
        recycle_body(body(1 << 20), &zstd);
        assert!(RETURNED.lock().unwrap().is_empty());
        drop(holder);

        for _ in 0..MAX_RETURNED + 2 {
            recycle_body(body(4_096), &none);
        }
        assert_eq!(RETURNED.lock().unwrap().len(), MAX_RETURNED);
        RETURNED.lock().unwrap().clear();
    }

    fn decompress(codec: Codec, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        match codec {
            Codec::None => out.extend_from_slice(body),
            Codec::Gzip => {
                flate2::read::GzDecoder::new(body)
                    .read_to_end(&mut out)
                    .unwrap();
            }
            Codec::Deflate => {
                flate2::read::ZlibDecoder::new(body)
                    .read_to_end(&mut out)
                    .unwrap();
            }
            Codec::Zstd => out = zstd::decode_all(body).unwrap(),
        }
        out
    }

    #[test]
    fn reused_buffers_never_carry_bytes_from_one_request_to_the_next() {
        let _pool = POOL_TESTS.lock().unwrap_or_else(|e| e.into_inner());
        for codec in [Codec::None, Codec::Gzip, Codec::Deflate, Codec::Zstd] {
            let compression = Compression::new(codec, codec.default_level());
            // Shrinking sizes: a reused buffer that kept earlier bytes would show them.
            for (round, n) in [300_000usize, 50_000, 1_000, 10, 0].into_iter().enumerate() {
                let data: Vec<u8> = (0..n).map(|j| (j % 251) as u8 ^ round as u8).collect();
                let mut json = take_buffer(n);
                assert!(
                    json.is_empty(),
                    "{codec:?}: a spare buffer came back non-empty"
                );
                json.extend_from_slice(&data);
                let body = compression.compress(json).unwrap();
                assert_eq!(decompress(codec, &body), data, "{codec:?}, {n} bytes");
            }
        }
    }
}
