//! `POST /api/v2/logs`: decode, count, keep. This is the benchmark's hot path: one
//! decompression (straight into a buffer of the announced size for zstd), one UTF-8 check,
//! one pass ([`scan`]) that checks the JSON, splits the array into raw items and reads each
//! item's id, one lock to commit. serde_json reads the body again only to word a refusal.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::codec::{self, DecodeError};
use crate::config::TooManyItems;
use crate::http::{self, Resp};
use crate::id_counts::Id;
use crate::scan;
use crate::server::Req;
use crate::state::{KeptItem, Shared, lock};

pub(crate) fn handle(shared: &Shared, req: &mut Req<'_>) -> Resp {
    let limits = &shared.settings.logs;
    let cap = limits
        .max_uncompressed_bytes
        .min(shared.settings.max_decoded_bytes);
    let decoded = match codec::decode(req.encoding(), req.body.clone(), cap) {
        Ok(d) => d,
        Err(e) => return decode_error(req, e, cap),
    };
    req.rec.uncompressed_bytes = Some(decoded.len());
    let Ok(text) = std::str::from_utf8(&decoded) else {
        return req.refuse(400, "body is not valid UTF-8");
    };
    // One pass in the common case; serde_json (slower, but with an error message) only when
    // the scanner refuses the body.
    let mut items = Vec::new();
    if scan::split(text, &shared.settings.id_attribute, &mut items).is_err() {
        items = match slow_split(text, &shared.settings.id_attribute) {
            Ok(items) => items,
            Err(why) => return req.refuse(400, why),
        };
    }
    req.rec.items = Some(items.len());
    if items.len() > limits.max_items && limits.too_many_items == TooManyItems::Reject {
        return req.refuse(
            413,
            format!(
                "Payload too large: {} items, the limit is {} per request",
                items.len(),
                limits.max_items
            ),
        );
    }

    let keep = shared.settings.keep_items && shared.settings.max_kept_items > 0;
    let max_kept = shared.settings.max_kept_items;
    // Ids are read outside the lock; inside, the id table's slots for the whole request are
    // loaded at once before the counts are bumped one by one.
    let ids: Vec<Option<Id<'_>>> = items
        .iter()
        .map(|item| item.id.as_deref().map(Id::parse))
        .collect();
    {
        let mut guard = lock(&shared.rec);
        let rec = &mut *guard;
        rec.id_counts.warm(ids.iter().flatten());
        let stats = &mut rec.stats;
        stats.log_requests_accepted += 1;
        stats.log_bytes_compressed += req.body.len() as u64;
        stats.log_bytes_uncompressed += decoded.len() as u64;
        stats.total_items += items.len() as u64;
        for (item, id) in items.iter().zip(&ids) {
            let truncated = item.len > limits.max_item_bytes;
            if truncated {
                stats.items_truncated_by_intake += 1;
            }
            match id {
                None => stats.items_without_event_id += 1,
                Some(id) => match rec.id_counts.bump(id) {
                    1 => stats.unique_event_ids += 1,
                    2 => stats.duplicate_event_ids += 1,
                    _ => {}
                },
            }
            if keep {
                if rec.items.len() >= max_kept {
                    rec.items.pop_front();
                    stats.dropped_items += 1;
                }
                rec.items.push_back(KeptItem {
                    body: decoded.clone(),
                    start: item.start,
                    len: item.len,
                    truncated,
                    request_seq: req.rec.seq,
                });
            } else {
                stats.dropped_items += 1;
            }
        }
        stats.kept_items = rec.items.len() as u64;
    }
    shared.notify();
    http::json_static(202, "{}")
}

/// The slow reading of a body, by serde_json: the items of a JSON array (or the one object),
/// each object item's id by [`probe_id`]. The message says why a body is refused.
pub(crate) fn slow_split<'a>(text: &'a str, id_attr: &str) -> Result<Vec<scan::Item<'a>>, String> {
    let raws: Vec<&RawValue> = match text.trim_start().as_bytes().first() {
        Some(b'[') => serde_json::from_str(text)
            .map_err(|e| format!("invalid JSON array of log items: {e}"))?,
        Some(b'{') => vec![
            serde_json::from_str::<&RawValue>(text)
                .map_err(|e| format!("invalid JSON log item: {e}"))?,
        ],
        _ => return Err("body must be a JSON array of log items or a single JSON object".into()),
    };
    let base = text.as_ptr() as usize;
    Ok(raws
        .into_iter()
        .map(|raw| {
            let s = raw.get();
            scan::Item {
                start: s.as_ptr() as usize - base,
                len: s.len(),
                id: if s.starts_with('{') {
                    probe_id(s, id_attr)
                } else {
                    None
                },
            }
        })
        .collect())
}

/// A JSON number as the id text [`probe_id`] makes of it (`None` when out of range).
pub(crate) fn number_text(raw: &str) -> Option<String> {
    serde_json::from_str::<Scalar<'_>>(raw)
        .ok()
        .and_then(|s| s.0.map(Cow::into_owned))
}

pub(crate) fn decode_error(req: &mut Req<'_>, e: DecodeError, cap: usize) -> Resp {
    match e {
        DecodeError::TooLarge => req.refuse(
            413,
            format!("Payload too large: more than {cap} bytes uncompressed"),
        ),
        DecodeError::Unsupported(enc) => {
            req.refuse(400, format!("unsupported Content-Encoding `{enc}`"))
        }
        DecodeError::Corrupt(why) => req.refuse(400, format!("cannot decode body: {why}")),
    }
}

/// The string (or number, stringified) value of top-level attribute `key` of a JSON object.
///
/// `item` must be valid JSON (the callers have validated it): the probe stops reading at the
/// first occurrence of `key` whose value is a string or a number, and leaves the rest of the
/// item unparsed. Occurrences with other values (null, bool, array, object) read as none.
pub(crate) fn probe_id<'a>(item: &'a str, key: &str) -> Option<Cow<'a, str>> {
    let mut found = None;
    let mut de = serde_json::Deserializer::from_str(item);
    // Stopping early makes serde_json report the unread rest of the object: not an error here.
    let _ = IdProbe {
        key,
        found: &mut found,
    }
    .deserialize(&mut de);
    found
}

struct IdProbe<'k, 'f, 'de> {
    key: &'k str,
    found: &'f mut Option<Cow<'de, str>>,
}

impl<'de> DeserializeSeed<'de> for IdProbe<'_, '_, 'de> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for IdProbe<'_, '_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while let Some(key) = map.next_key::<Text<'de>>()? {
            if key.0 == self.key {
                *self.found = map.next_value::<Scalar<'de>>()?.0;
                if self.found.is_some() {
                    return Ok(());
                }
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

/// A string, borrowed when it has no escapes.
struct Text<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// A string or number as text; anything else is skipped and reads `None`.
struct Scalar<'de>(Option<Cow<'de, str>>);

impl<'de> de::Deserialize<'de> for Scalar<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Scalar<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Scalar(Some(Cow::Borrowed(v))))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Scalar(Some(Cow::Owned(v.to_owned()))))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Scalar(Some(Cow::Owned(v.to_string()))))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Scalar(Some(Cow::Owned(v.to_string()))))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(Scalar(Some(Cow::Owned(v.to_string()))))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Scalar(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Scalar(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Scalar(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Scalar(None))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_finds_the_id_anywhere_at_top_level_only() {
        assert_eq!(
            probe_id(r#"{"a":{"event_id":"no"},"event_id":"yes"}"#, "event_id").as_deref(),
            Some("yes")
        );
        assert_eq!(
            probe_id(r#"{"event_id":"esc\"aped"}"#, "event_id").as_deref(),
            Some("esc\"aped")
        );
        assert_eq!(
            probe_id(r#"{"event_id":42}"#, "event_id").as_deref(),
            Some("42")
        );
        assert_eq!(probe_id(r#"{"event_id":null}"#, "event_id"), None);
        assert_eq!(probe_id(r#"{"other":[1,{"x":2}]}"#, "event_id"), None);
        assert_eq!(probe_id(r#"{"id":"x"}"#, "id").as_deref(), Some("x"));
        // The first non-null occurrence wins; a null one is passed over.
        assert_eq!(
            probe_id(r#"{"event_id":"a","event_id":"b"}"#, "event_id").as_deref(),
            Some("a")
        );
        assert_eq!(
            probe_id(r#"{"event_id":null,"x":[],"event_id":"b"}"#, "event_id").as_deref(),
            Some("b")
        );
        assert!(matches!(
            probe_id(r#"{"event_id":"b"}"#, "event_id"),
            Some(Cow::Borrowed(_))
        ));
    }
}
