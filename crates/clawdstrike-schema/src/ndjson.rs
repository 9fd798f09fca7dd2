//! A streaming NDJSON decoder over any [`BufRead`].

use std::io::{self, BufRead};

use crate::{DecodeError, SecurityEvent, decode_event};

/// Default maximum line length: 1 MiB.
pub const DEFAULT_MAX_LINE_BYTES: usize = 1 << 20;

/// The UTF-8 encoding of U+FEFF, the byte order mark, skipped at the start of an input (for
/// readers that split lines themselves).
pub const UTF8_BOM: &[u8] = b"\xef\xbb\xbf";

/// How many bytes beyond `max_line_bytes` a line reader holds, so that a line within the
/// limit is held whole with a byte order mark before it and a `\r` after it.
pub const LINE_SLACK: usize = 1 + UTF8_BOM.len();

/// The content of a line of `len` bytes (without its `\n`), of which `held` is the start (at
/// most the limit plus [`LINE_SLACK`]): without the byte order mark of an input's first line
/// (`at_input_start`), nor the `\r` that ends it (`ends_in_cr`). Returns what is held of the
/// content and the content's full length, which is what the line limit applies to.
pub fn line_content(held: &[u8], len: u64, at_input_start: bool, ends_in_cr: bool) -> (&[u8], u64) {
    let (mut held, mut len) = (held, len);
    if at_input_start && held.starts_with(UTF8_BOM) {
        held = &held[UTF8_BOM.len()..];
        len -= UTF8_BOM.len() as u64;
    }
    if ends_in_cr {
        len -= 1;
        // Held whole (a line within the limit): the `\r` is its last byte.
        held = &held[..held.len().min(usize::try_from(len).unwrap_or(usize::MAX))];
    }
    (held, len)
}

/// One good event and where it was read.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedEvent {
    /// 1-based line number.
    pub line: u64,
    /// Byte offset of the line's first byte in the stream.
    pub offset: u64,
    /// Byte offset just past the line, including its line ending: where the next line starts.
    /// A reader that checkpoints its position stores this.
    pub end_offset: u64,
    /// The decoded, validated event.
    pub event: SecurityEvent,
}

/// A line that is not a valid event, kept byte for byte so an operator can find and replay it.
#[derive(Debug, Clone, PartialEq)]
pub struct RejectedLine {
    /// 1-based line number.
    pub line: u64,
    /// Byte offset of the line's first byte in the stream.
    pub offset: u64,
    /// Byte offset just past the line, including its line ending.
    pub end_offset: u64,
    /// The raw bytes of the line, without its line ending. For a line over the maximum length
    /// only the first `max_line_bytes` bytes are kept (see `truncated`).
    pub raw: Vec<u8>,
    /// True when `raw` holds only a prefix of an over-long line.
    pub truncated: bool,
    /// Why the line was rejected.
    pub error: DecodeError,
}

/// What one step of [`NdjsonReader`] yields.
#[derive(Debug, Clone, PartialEq)]
pub enum NdjsonRecord {
    /// A valid event.
    Event(Box<DecodedEvent>),
    /// A bad line, with its position, raw bytes and reason.
    Rejected(RejectedLine),
}

/// Options of [`NdjsonReader`].
#[derive(Debug, Clone)]
pub struct NdjsonOptions {
    max_line_bytes: usize,
    first_line: u64,
    start_offset: u64,
}

impl Default for NdjsonOptions {
    fn default() -> Self {
        Self {
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            first_line: 1,
            start_offset: 0,
        }
    }
}

impl NdjsonOptions {
    /// Maximum line length in bytes (default 1 MiB). A longer line is rejected with
    /// [`DecodeError::TooLong`] and never held in memory beyond this many bytes.
    pub fn with_max_line_bytes(mut self, max: usize) -> Self {
        self.max_line_bytes = max.max(1);
        self
    }

    /// Numbering for a reader resumed mid-stream: the number of the next line and its byte
    /// offset (default 1 and 0).
    pub fn with_start(mut self, line: u64, offset: u64) -> Self {
        self.first_line = line;
        self.start_offset = offset;
        self
    }
}

/// Reads newline-delimited JSON events from any [`BufRead`], one line at a time.
///
/// Blank lines (empty or white space) are skipped but counted in line numbers; `\r\n` line
/// endings are accepted; a final line without a newline is read. Bad lines are yielded as
/// [`NdjsonRecord::Rejected`] and never stop the stream; only an I/O error does.
///
/// ```
/// use clawdstrike_schema::{NdjsonReader, NdjsonRecord};
///
/// let input = b"not json\n\n{\"also\": \"bad\"}\n";
/// let records: Vec<_> = NdjsonReader::new(&input[..]).collect::<Result<_, _>>().unwrap();
/// assert_eq!(records.len(), 2);
/// match &records[1] {
///     NdjsonRecord::Rejected(bad) => assert_eq!(bad.line, 3),
///     NdjsonRecord::Event(_) => unreachable!(),
/// }
/// ```
#[derive(Debug)]
pub struct NdjsonReader<R> {
    inner: R,
    options: NdjsonOptions,
    next_line: u64,
    offset: u64,
    buf: Vec<u8>,
    finished: bool,
}

impl<R: BufRead> NdjsonReader<R> {
    /// A reader with default options.
    pub fn new(inner: R) -> Self {
        Self::with_options(inner, NdjsonOptions::default())
    }

    /// A reader with the given options.
    pub fn with_options(inner: R, options: NdjsonOptions) -> Self {
        Self {
            inner,
            next_line: options.first_line,
            offset: options.start_offset,
            options,
            buf: Vec::new(),
            finished: false,
        }
    }

    /// The byte offset just past the last line read: a safe place to resume from.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The number the next line will have.
    pub fn next_line_number(&self) -> u64 {
        self.next_line
    }

    /// Consumes the reader, returning the inner reader.
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// Reads one raw line into `self.buf` (at most `max_line_bytes` of it, plus room for a
    /// byte order mark before it and a `\r` ending it). Returns `None` at end of input, else
    /// `(total_len, consumed_bytes, ends_in_cr)`, where `total_len` counts the line without its
    /// `\n` but with its `\r`.
    fn read_raw_line(&mut self) -> io::Result<Option<(u64, u64, bool)>> {
        self.buf.clear();
        let max = self.options.max_line_bytes.saturating_add(LINE_SLACK);
        let mut total: u64 = 0;
        let mut consumed: u64 = 0;
        let mut last = None;
        loop {
            let available = match self.inner.fill_buf() {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if available.is_empty() {
                return Ok(if consumed == 0 {
                    None
                } else {
                    Some((total, consumed, last == Some(b'\r')))
                });
            }
            let (chunk, found_newline) = match memchr::memchr(b'\n', available) {
                Some(i) => (&available[..i], true),
                None => (available, false),
            };
            let room = max.saturating_sub(self.buf.len());
            self.buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
            total += chunk.len() as u64;
            if let Some(&byte) = chunk.last() {
                last = Some(byte);
            }
            let used = chunk.len() + usize::from(found_newline);
            consumed += used as u64;
            self.inner.consume(used);
            if found_newline {
                return Ok(Some((total, consumed, last == Some(b'\r'))));
            }
        }
    }
}

impl<R: BufRead> Iterator for NdjsonReader<R> {
    type Item = io::Result<NdjsonRecord>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.finished {
            let (len, consumed, ends_in_cr) = match self.read_raw_line() {
                Ok(Some(line)) => line,
                Ok(None) => {
                    self.finished = true;
                    return None;
                }
                Err(e) => {
                    self.finished = true;
                    return Some(Err(e));
                }
            };
            let line = self.next_line;
            let offset = self.offset;
            self.next_line += 1;
            self.offset += consumed;
            let end_offset = self.offset;

            // A UTF-8 byte order mark at the very start of the input (some Windows editors
            // write one) is not part of the first line; the limit is on the line's content.
            let (content, len) = line_content(&self.buf, len, offset == 0, ends_in_cr);
            let max = self.options.max_line_bytes;
            if len > max as u64 {
                return Some(Ok(NdjsonRecord::Rejected(RejectedLine {
                    line,
                    offset,
                    end_offset,
                    raw: content[..content.len().min(max)].to_vec(),
                    truncated: true,
                    error: DecodeError::TooLong { len, max },
                })));
            }
            if content.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return Some(Ok(match decode_event(content) {
                Ok(event) => NdjsonRecord::Event(Box::new(DecodedEvent {
                    line,
                    offset,
                    end_offset,
                    event,
                })),
                Err(error) => NdjsonRecord::Rejected(RejectedLine {
                    line,
                    offset,
                    end_offset,
                    raw: content.to_vec(),
                    truncated: false,
                    error,
                }),
            }));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that hands out one byte at a time, to prove lines spanning buffer refills work.
    struct Trickle<'a>(&'a [u8]);
    impl io::Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            if self.0.is_empty() || out.is_empty() {
                return Ok(0);
            }
            out[0] = self.0[0];
            self.0 = &self.0[1..];
            Ok(1)
        }
    }

    #[test]
    fn over_long_line_is_rejected_without_buffering_it_and_next_line_survives() {
        let mut input = vec![b'x'; 10_000];
        input.extend_from_slice(b"\nnot json either\n");
        let reader = io::BufReader::with_capacity(64, Trickle(&input));
        let opts = NdjsonOptions::default().with_max_line_bytes(100);
        let records: Vec<_> = NdjsonReader::with_options(reader, opts)
            .map(Result::unwrap)
            .collect();
        assert_eq!(records.len(), 2);
        let NdjsonRecord::Rejected(first) = &records[0] else {
            panic!("expected rejection")
        };
        assert_eq!(first.raw.len(), 100);
        assert!(first.truncated);
        assert_eq!(
            first.error,
            DecodeError::TooLong {
                len: 10_000,
                max: 100
            }
        );
        let NdjsonRecord::Rejected(second) = &records[1] else {
            panic!("expected rejection")
        };
        assert_eq!((second.line, second.offset), (2, 10_001));
        assert_eq!(second.raw, b"not json either");
        assert_eq!(second.end_offset, input.len() as u64);
    }

    #[test]
    fn invalid_utf8_is_reported_not_panicked_on() {
        let input = b"{\"schema_version\":\"\xff\"}\r\n";
        let records: Vec<_> = NdjsonReader::new(&input[..]).map(Result::unwrap).collect();
        let NdjsonRecord::Rejected(bad) = &records[0] else {
            panic!("expected rejection")
        };
        assert_eq!(bad.error, DecodeError::InvalidUtf8 { valid_up_to: 19 });
        assert_eq!(bad.raw, &input[..input.len() - 2]);
    }

    #[test]
    fn io_errors_end_the_stream_with_an_error() {
        struct Broken;
        impl io::Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("disk on fire"))
            }
        }
        let mut reader = NdjsonReader::new(io::BufReader::new(Broken));
        assert_eq!(
            reader.next().unwrap().unwrap_err().to_string(),
            "disk on fire"
        );
        assert!(reader.next().is_none());
    }
}
