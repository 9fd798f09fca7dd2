//! Body decoding per `Content-Encoding`, with a cap against decompression bombs.

use std::cell::RefCell;
use std::io::Read;

use bytes::Bytes;

/// Why a body could not be decoded.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// Decoded size over the cap.
    TooLarge,
    /// An encoding we do not know.
    Unsupported(String),
    /// Corrupt compressed data.
    Corrupt(String),
}

/// Whether `encoding` means "not compressed".
pub(crate) fn is_identity(encoding: Option<&str>) -> bool {
    encoding.is_none_or(|e| e.trim().is_empty() || e.trim().eq_ignore_ascii_case("identity"))
}

/// Decodes `body` per `encoding` (`identity`, `gzip`, `x-gzip`, `deflate` (zlib, or raw
/// deflate when the zlib header is absent), `zstd`, `zstd1`). At most `max` bytes come out.
pub(crate) fn decode(
    encoding: Option<&str>,
    body: Bytes,
    max: usize,
) -> Result<Bytes, DecodeError> {
    if is_identity(encoding) {
        if body.len() > max {
            return Err(DecodeError::TooLarge);
        }
        return Ok(body);
    }
    let enc = encoding.unwrap_or_default().trim().to_ascii_lowercase();
    if matches!(enc.as_str(), "zstd" | "zstd1")
        && let Some(decoded) = zstd_one_frame(&body, max)
    {
        return Ok(decoded);
    }
    let reader: Box<dyn Read + '_> = match enc.as_str() {
        "gzip" | "x-gzip" => Box::new(flate2::read::MultiGzDecoder::new(&body[..])),
        "deflate" => {
            if looks_like_zlib(&body) {
                Box::new(flate2::read::ZlibDecoder::new(&body[..]))
            } else {
                Box::new(flate2::read::DeflateDecoder::new(&body[..]))
            }
        }
        "zstd" | "zstd1" => Box::new(
            zstd::stream::read::Decoder::with_buffer(&body[..])
                .map_err(|e| DecodeError::Corrupt(format!("zstd: {e}")))?,
        ),
        other => return Err(DecodeError::Unsupported(other.to_owned())),
    };
    let mut out = Vec::with_capacity(size_hint(&enc, &body).min(max.saturating_add(1)));
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    reader
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|e| DecodeError::Corrupt(format!("{enc}: {e}")))?;
    if out.len() > max {
        return Err(DecodeError::TooLarge);
    }
    Ok(Bytes::from(out))
}

thread_local! {
    /// A zstd decoding context per thread, reused from one request to the next.
    static ZSTD: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// The common zstd body, one frame that announces its size (what `zstd`'s one-shot
/// compression writes): decoded in one call straight into a buffer of that size, with no
/// zero-filling and no intermediate copy. `None` sends every other body (several frames, no
/// size, over `max`, corrupt) to the streaming decoder, which decides and words the error.
fn zstd_one_frame(body: &[u8], max: usize) -> Option<Bytes> {
    let size = zstd::zstd_safe::get_frame_content_size(body)
        .ok()
        .flatten()?;
    let size = usize::try_from(size).ok().filter(|n| *n <= max)?;
    if zstd::zstd_safe::find_frame_compressed_size(body).ok()? != body.len() {
        return None;
    }
    let mut out = Vec::with_capacity(size);
    ZSTD.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.is_none() {
            *cell = zstd::bulk::Decompressor::new().ok();
        }
        cell.as_mut()?.decompress_to_buffer(body, &mut out).ok()
    })?;
    (out.len() == size).then(|| Bytes::from(out))
}

/// The decoded size the body announces, to size the output once rather than grow it by
/// copying: zstd's frame header carries the content size (when the sender wrote it), gzip's
/// trailer the last member's size modulo 2^32. Only a hint: the decoder's output decides.
fn size_hint(encoding: &str, body: &[u8]) -> usize {
    let guess = body.len().saturating_mul(4);
    let announced = match encoding {
        "zstd" | "zstd1" => zstd::zstd_safe::get_frame_content_size(body)
            .ok()
            .flatten()
            .and_then(|n| usize::try_from(n).ok()),
        "gzip" | "x-gzip" if body.len() >= 18 => body[body.len() - 4..]
            .try_into()
            .ok()
            .map(|b| u32::from_le_bytes(b) as usize),
        _ => None,
    };
    // A forged header on a tiny body must not buy a large allocation: no codec we accept
    // compresses realistic input beyond ~1,000:1.
    announced.map_or(guess, |n| n.min(body.len().saturating_mul(1_024)))
}

/// RFC 1950 header: CM = 8, window ≤ 32 KiB, FCHECK makes the pair a multiple of 31.
fn looks_like_zlib(b: &[u8]) -> bool {
    b.len() >= 2
        && b[0] & 0x0f == 8
        && b[0] >> 4 <= 7
        && (u16::from(b[0]) << 8 | u16::from(b[1])) % 31 == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const TEXT: &[u8] = b"[{\"message\":\"hello\"}]";

    fn gzip(b: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(b).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn every_codec_round_trips() {
        let zlib = {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(TEXT).unwrap();
            e.finish().unwrap()
        };
        let raw_deflate = {
            let mut e =
                flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(TEXT).unwrap();
            e.finish().unwrap()
        };
        let zstd = zstd::encode_all(TEXT, 1).unwrap();
        for (enc, body) in [
            (None, TEXT.to_vec()),
            (Some("identity"), TEXT.to_vec()),
            (Some("gzip"), gzip(TEXT)),
            (Some("deflate"), zlib),
            (Some("deflate"), raw_deflate),
            (Some("zstd"), zstd.clone()),
            (Some("zstd1"), zstd),
        ] {
            let out = decode(enc, Bytes::from(body), 1 << 20).unwrap();
            assert_eq!(&out[..], TEXT, "{enc:?}");
        }
    }

    /// The one-call path and the streaming path give the same answers: several frames, a
    /// frame without its size, a frame over the cap, a truncated frame.
    #[test]
    fn zstd_bodies_of_every_shape() {
        let one = zstd::bulk::compress(TEXT, 1).unwrap();
        let mut two = one.clone();
        two.extend_from_slice(&one);
        let sizeless = {
            let mut e = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
            e.include_contentsize(false).unwrap();
            e.write_all(TEXT).unwrap();
            e.finish().unwrap()
        };
        assert!(zstd_one_frame(&one, 1 << 20).is_some());
        assert!(zstd_one_frame(&two, 1 << 20).is_none());
        assert!(zstd_one_frame(&sizeless, 1 << 20).is_none());
        let decoded = |body: &[u8], max| decode(Some("zstd"), Bytes::copy_from_slice(body), max);
        assert_eq!(&decoded(&one, 1 << 20).unwrap()[..], TEXT);
        assert_eq!(decoded(&two, 1 << 20).unwrap(), [TEXT, TEXT].concat());
        assert_eq!(&decoded(&sizeless, 1 << 20).unwrap()[..], TEXT);
        assert_eq!(decoded(&one, TEXT.len() - 1), Err(DecodeError::TooLarge));
        assert_eq!(&decoded(&one, TEXT.len()).unwrap()[..], TEXT);
        let truncated = &one[..one.len() - 1];
        assert!(zstd_one_frame(truncated, 1 << 20).is_none());
        assert!(matches!(
            decoded(truncated, 1 << 20),
            Err(DecodeError::Corrupt(_))
        ));
    }

    #[test]
    fn caps_and_errors() {
        let big = vec![b' '; 10_000];
        assert_eq!(
            decode(Some("gzip"), Bytes::from(gzip(&big)), 9_999),
            Err(DecodeError::TooLarge)
        );
        assert!(decode(Some("gzip"), Bytes::from(gzip(&big)), 10_000).is_ok());
        assert_eq!(
            decode(None, Bytes::from(big), 9_999),
            Err(DecodeError::TooLarge)
        );
        assert!(matches!(
            decode(Some("br"), Bytes::from_static(b"x"), 10),
            Err(DecodeError::Unsupported(_))
        ));
        assert!(matches!(
            decode(Some("gzip"), Bytes::from_static(b"not gzip"), 100),
            Err(DecodeError::Corrupt(_))
        ));
    }
}
