//! Datadog tag normalisation.
//!
//! Datadog lowercases tags, allows letters, digits and `_ - : . /`, replaces anything else with
//! `_`, requires a leading letter and caps a tag at 200 characters. We apply the same rules
//! ourselves, to keys and values separately, so a comma in a label value can never forge a
//! second tag and the tag that arrives is exactly the one we meant.

use crate::catalogue::{LOG_TAGS, RESERVED_TAG_KEYS};

/// Datadog's maximum tag length, in characters.
pub const MAX_TAG_CHARS: usize = 200;

/// True for a character that is kept as is in a normalised tag (ASCII fast path).
fn ascii_tag_char(b: u8, allow_colon: bool) -> bool {
    b.is_ascii_lowercase()
        || b.is_ascii_digit()
        || matches!(b, b'_' | b'-' | b'.' | b'/')
        || (allow_colon && b == b':')
}

fn push_normalised(out: &mut String, s: &str, allow_colon: bool, max_chars: usize) {
    // Fast path: most values (guards, enums, ids) are already valid lowercase ASCII.
    if s.len() <= max_chars
        && !s.contains("__")
        && !(s.starts_with('_') && out.ends_with('_'))
        && s.bytes().all(|b| ascii_tag_char(b, allow_colon))
    {
        out.push_str(s);
        return;
    }
    let mut written = 0;
    let mut last_underscore = out.ends_with('_');
    for c in s.chars() {
        if written >= max_chars {
            break;
        }
        let mapped =
            if c.is_alphanumeric() || matches!(c, '-' | '.' | '/') || (allow_colon && c == ':') {
                Some(c)
            } else {
                None
            };
        match mapped {
            Some(c) => {
                for lower in c.to_lowercase() {
                    out.push(lower);
                }
                last_underscore = false;
                written += 1;
            }
            None if !last_underscore => {
                out.push('_');
                last_underscore = true;
                written += 1;
            }
            None => {}
        }
    }
}

/// Normalises a tag key: lowercase, `[letters digits _ - . /]`, starting with a letter, no `:`.
/// Returns `None` when nothing usable is left.
pub fn normalise_key(key: &str) -> Option<String> {
    let start = key.find(|c: char| c.is_alphabetic())?;
    let mut out = String::with_capacity(key.len());
    push_normalised(&mut out, &key[start..], false, MAX_TAG_CHARS);
    let trimmed = out.trim_end_matches('_');
    (!trimmed.is_empty()).then(|| trimmed.to_owned())
}

/// Appends `key:value` to a comma-separated tag list, normalising the value (a `:` is allowed
/// inside values; a `,` never is) and respecting the 200-character cap. `key` must already be
/// normalised. Empty values write nothing.
pub fn push_tag(out: &mut String, key: &str, value: &str) {
    let room = MAX_TAG_CHARS.saturating_sub(key.chars().count() + 1);
    if room == 0 {
        return;
    }
    let start = out.len();
    if !out.is_empty() {
        out.push(',');
    }
    out.push_str(key);
    out.push(':');
    let value_start = out.len();
    push_normalised(out, value, true, room);
    while out.len() > value_start && out.ends_with('_') {
        out.pop();
    }
    if out.len() == value_start {
        out.truncate(start);
    }
}

/// Like [`push_tag`] for a tag that must always be present: a value that normalises to
/// nothing is written as `unknown`.
pub fn push_required_tag(out: &mut String, key: &str, value: &str) {
    let before = out.len();
    push_tag(out, key, value);
    if out.len() == before {
        push_tag(out, key, "unknown");
    }
}

/// Normalises a whole `key:value` (or bare `key`) tag from configuration; `None` if unusable.
pub fn normalise_tag(tag: &str) -> Option<String> {
    match tag.split_once(':') {
        Some((key, value)) => {
            let key = normalise_key(key)?;
            let mut out = String::new();
            push_tag(&mut out, &key, value);
            (!out.is_empty()).then_some(out)
        }
        None => normalise_key(tag),
    }
}

/// The tag key a user label gets: its normalised key, renamed `label_<key>` when it would
/// collide with a tag we set or one of Datadog's reserved keys. `None` when unusable.
pub fn label_key(key: &str) -> Option<String> {
    let key = normalise_key(key)?;
    let reserved =
        RESERVED_TAG_KEYS.contains(&key.as_str()) || LOG_TAGS.iter().any(|t| t.key == key);
    Some(if reserved {
        format!("label_{key}")
    } else {
        key
    })
}

/// The key of a normalised tag (`env` of `env:prod`).
pub fn tag_key(tag: &str) -> &str {
    tag.split_once(':').map_or(tag, |(k, _)| k)
}

/// True if `tag` is a valid normalised Datadog tag.
pub fn is_valid_tag(tag: &str) -> bool {
    let mut chars = tag.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    // Lowercase = a fixed point of lowercasing (some capitals, like U+1D546, have no lowercase).
    let lowercase = |c: char| c.to_lowercase().eq(std::iter::once(c));
    first.is_alphabetic()
        && lowercase(first)
        && tag.chars().count() <= MAX_TAG_CHARS
        && tag.chars().all(|c| {
            (c.is_alphanumeric() && lowercase(c)) || matches!(c, '_' | '-' | ':' | '.' | '/')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commas_never_forge_a_tag() {
        let mut out = String::new();
        push_tag(&mut out, "team", "x,allowed:true");
        assert_eq!(out, "team:x_allowed:true");
        assert_eq!(out.split(',').count(), 1);
    }

    #[test]
    fn values_are_lowercased_and_cleaned() {
        let mut out = String::from("a:b");
        push_tag(&mut out, "severity", "Critical Issue!!");
        assert_eq!(out, "a:b,severity:critical_issue");
    }

    #[test]
    fn keys_must_start_with_a_letter_and_lose_colons() {
        assert_eq!(
            normalise_key("9 Cost:Center").as_deref(),
            Some("cost_center")
        );
        assert_eq!(normalise_key("123"), None);
        assert_eq!(normalise_key("Team"), Some("team".to_owned()));
    }

    #[test]
    fn reserved_and_our_keys_are_renamed_for_labels() {
        assert_eq!(label_key("env").as_deref(), Some("label_env"));
        assert_eq!(label_key("Service").as_deref(), Some("label_service"));
        assert_eq!(label_key("allowed").as_deref(), Some("label_allowed"));
        assert_eq!(label_key("team").as_deref(), Some("team"));
    }

    #[test]
    fn tags_are_capped_at_200_characters() {
        let mut out = String::new();
        push_tag(&mut out, "k", &"é".repeat(500));
        assert_eq!(out.chars().count(), 200);
        assert!(is_valid_tag(&out));
    }

    #[test]
    fn empty_values_write_nothing() {
        let mut out = String::from("a:b");
        push_tag(&mut out, "team", ",,,");
        assert_eq!(out, "a:b");
    }
}
