//! The on-disk record format and the scanner that reads it back, tolerating torn and corrupt
//! records.
//!
//! A segment file is a sequence of frames:
//!
//! ```text
//! magic u32 LE | payload length u32 LE | CRC-32 (IEEE) of the payload u32 LE | payload
//! payload = seq u64 LE | flags u8 | [trace_id u128 LE | span_id u64 LE | sampled u8] | event JSON
//! ```
//!
//! The trace block is present when `flags & 1`. A frame that is cut short, has a wrong magic or
//! a wrong checksum is invalid; the scanner then looks for the next valid frame (magic, length
//! and checksum all agreeing), so one bad record never hides the records after it.

use crate::exporter::TraceContext;

/// Marks the start of a frame (`CLWB` read as little-endian bytes).
const MAGIC: u32 = u32::from_le_bytes(*b"CLWB");
/// magic + length + crc.
pub(super) const HEADER: usize = 12;
/// A payload longer than this is taken for a corrupt length.
const MAX_PAYLOAD: usize = 64 * 1024 * 1024;
/// Payload bytes before the event JSON: seq and flags, then the trace context if any.
const SEQ_AND_FLAGS: usize = 9;
const TRACE_BYTES: usize = 25;
/// The largest event JSON a frame can carry and be read back.
pub(super) const MAX_EVENT_JSON: usize = MAX_PAYLOAD - SEQ_AND_FLAGS - TRACE_BYTES;
const FLAG_TRACE: u8 = 1;

/// The shortest frame: header, seq and flags, no trace, empty JSON.
pub(super) const MIN_FRAME: usize = HEADER + SEQ_AND_FLAGS;

/// The length in the file of a frame carrying `event_json_len` bytes of JSON.
pub(super) fn frame_len(with_trace: bool, event_json_len: usize) -> usize {
    MIN_FRAME + if with_trace { TRACE_BYTES } else { 0 } + event_json_len
}

/// Appends one frame for `seq` to `out`.
pub(super) fn encode(out: &mut Vec<u8>, seq: u64, trace: Option<TraceContext>, event_json: &[u8]) {
    let start = out.len();
    out.extend_from_slice(&MAGIC.to_le_bytes());
    out.extend_from_slice(&[0; 8]); // length and crc, filled below
    let payload_start = out.len();
    out.extend_from_slice(&seq.to_le_bytes());
    match trace {
        Some(t) => {
            out.push(FLAG_TRACE);
            out.extend_from_slice(&t.trace_id.to_le_bytes());
            out.extend_from_slice(&t.span_id.to_le_bytes());
            out.push(u8::from(t.sampled));
        }
        None => out.push(0),
    }
    out.extend_from_slice(event_json);
    let len = u32::try_from(out.len() - payload_start).unwrap_or(u32::MAX);
    let crc = crc32fast::hash(&out[payload_start..]);
    out[start + 4..start + 8].copy_from_slice(&len.to_le_bytes());
    out[start + 8..start + 12].copy_from_slice(&crc.to_le_bytes());
}

/// One decoded frame.
#[derive(Debug)]
pub(super) struct Frame<'a> {
    pub(super) seq: u64,
    pub(super) trace: Option<TraceContext>,
    pub(super) event_json: &'a [u8],
}

impl Frame<'_> {
    /// Its length in the file.
    pub(super) fn encoded_len(&self) -> usize {
        frame_len(self.trace.is_some(), self.event_json.len())
    }
}

/// What a scan found besides the valid frames.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct ScanDamage {
    /// Invalid stretches followed by a valid frame (a record lost in the middle).
    pub(super) corrupt_records: u64,
    /// Bytes in those stretches.
    pub(super) corrupt_bytes: u64,
    /// Bytes of an invalid stretch at the end of the file (an interrupted write).
    pub(super) torn_tail_bytes: u64,
}

fn u32_at(data: &[u8], pos: usize) -> Option<u32> {
    data.get(pos..pos + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// The payload of a valid frame starting at `pos`, or `None`.
/// True if `data` is only the beginning of one frame: what a crash during a segment's first
/// write leaves (a magic number, and a length the file is too short for, or less).
pub(super) fn is_torn_first_frame(data: &[u8]) -> bool {
    if data.len() < 8 {
        return MAGIC.to_le_bytes().starts_with(&data[..data.len().min(4)]);
    }
    u32_at(data, 0) == Some(MAGIC)
        && u32_at(data, 4).is_some_and(|len| HEADER + len as usize > data.len())
}

fn frame_at(data: &[u8], pos: usize) -> Option<&[u8]> {
    if u32_at(data, pos)? != MAGIC {
        return None;
    }
    let len = u32_at(data, pos + 4)? as usize;
    if !(9..=MAX_PAYLOAD).contains(&len) {
        return None;
    }
    let crc = u32_at(data, pos + 8)?;
    let payload = data.get(pos + HEADER..pos + HEADER + len)?;
    (crc32fast::hash(payload) == crc).then_some(payload)
}

fn decode_payload(payload: &[u8]) -> Option<Frame<'_>> {
    let seq = u64::from_le_bytes(payload.get(..8)?.try_into().ok()?);
    let flags = *payload.get(8)?;
    if flags & FLAG_TRACE != 0 {
        let trace_id = u128::from_le_bytes(payload.get(9..25)?.try_into().ok()?);
        let span_id = u64::from_le_bytes(payload.get(25..33)?.try_into().ok()?);
        let sampled = *payload.get(33)? != 0;
        Some(Frame {
            seq,
            trace: Some(TraceContext {
                trace_id,
                span_id,
                sampled,
            }),
            event_json: payload.get(34..)?,
        })
    } else {
        Some(Frame {
            seq,
            trace: None,
            event_json: payload.get(9..)?,
        })
    }
}

/// Every valid frame of `data`, in file order, and the damage found around them.
pub(super) fn scan(data: &[u8]) -> (Vec<Frame<'_>>, ScanDamage) {
    let mut frames = Vec::new();
    let mut damage = ScanDamage::default();
    let mut pos = 0;
    while pos < data.len() {
        if let Some(payload) = frame_at(data, pos)
            && let Some(frame) = decode_payload(payload)
        {
            pos += HEADER + payload.len();
            frames.push(frame);
            continue;
        }
        // Invalid here: resynchronise on the next valid frame, if any.
        let next = (pos + 1..data.len().saturating_sub(HEADER - 1))
            .find(|&p| frame_at(data, p).and_then(decode_payload).is_some());
        match next {
            Some(next) => {
                damage.corrupt_records += 1;
                damage.corrupt_bytes += (next - pos) as u64;
                pos = next;
            }
            None => {
                damage.torn_tail_bytes += (data.len() - pos) as u64;
                break;
            }
        }
    }
    (frames, damage)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(n: u64) -> Vec<u8> {
        let mut out = Vec::new();
        for seq in 0..n {
            let trace = (seq % 2 == 0).then_some(TraceContext {
                trace_id: u128::from(seq) + 7,
                span_id: seq + 3,
                sampled: true,
            });
            encode(&mut out, seq, trace, format!("{{\"n\":{seq}}}").as_bytes());
        }
        out
    }

    #[test]
    fn round_trips_with_and_without_trace() {
        let data = frames(5);
        let (found, damage) = scan(&data);
        assert_eq!(damage, ScanDamage::default());
        assert_eq!(found.len(), 5);
        for (seq, f) in found.iter().enumerate() {
            assert_eq!(f.seq, seq as u64);
            assert_eq!(f.event_json, format!("{{\"n\":{seq}}}").as_bytes());
            assert_eq!(f.trace.is_some(), seq % 2 == 0);
        }
        assert_eq!(found[2].trace.map(|t| t.trace_id), Some(9));
    }

    #[test]
    fn a_torn_tail_keeps_every_complete_frame_before_it() {
        let data = frames(4);
        let last = data.len() - frames(3).len();
        for cut in 1..last {
            let (found, damage) = scan(&data[..data.len() - cut]);
            assert_eq!(found.len(), 3, "cut {cut}");
            assert_eq!(damage.corrupt_records, 0);
            assert!(damage.torn_tail_bytes > 0);
        }
    }

    #[test]
    fn a_flipped_bit_in_the_middle_loses_only_that_record() {
        let clean = frames(6);
        let start = frames(2).len();
        for offset in [0, 3, 5, 9, 13, 20, 40] {
            let mut data = clean.clone();
            data[start + offset] ^= 0x40;
            let (found, damage) = scan(&data);
            let seqs: Vec<u64> = found.iter().map(|f| f.seq).collect();
            assert!(seqs.starts_with(&[0, 1]), "offset {offset}: {seqs:?}");
            assert!(seqs.ends_with(&[3, 4, 5]), "offset {offset}: {seqs:?}");
            assert_eq!(damage.corrupt_records, 1, "offset {offset}");
            assert_eq!(damage.torn_tail_bytes, 0);
        }
    }
}
