//! One pass over a logs request body: checks that it is JSON, splits the top-level array into
//! its items, and reads each object item's top-level id attribute on the way.
//!
//! This is the fake intake's hot path (and so part of what the benchmark measures). The
//! grammar is exactly the one `serde_json` accepts for `Vec<&RawValue>` (RFC 8259: no trailing
//! commas, no comments, strings without raw control characters, `\u` followed by four hex
//! digits, nesting as deep as it goes), and the ids are those
//! [`probe_id`](crate::logs::probe_id) reads. When the scanner refuses a body, the caller asks
//! `serde_json` again for the error message; a test holds the two to the same answers on
//! mutated bodies.
//!
//! The cleverness, two tricks for strings, which hold most of a body's bytes:
//! - A body with no backslash and no control byte (what compact JSON without escapes looks
//!   like, and so what most shippers send) has every string end at the next quote. One
//!   branch-free pass first marks where the quotes are, a bit per byte ([`quote_bits`]), and
//!   each string is then one jump to the next marked quote.
//! - Any other body: inside strings, sixteen bytes at a time (one 128-bit word) are tested for
//!   the three bytes that end a plain run (`"`, `\` and control characters), the trick
//!   `serde_json` plays eight bytes at a time.

use std::borrow::Cow;

/// One item of the body: its span (no surrounding whitespace) and its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Item<'a> {
    pub(crate) start: usize,
    pub(crate) len: usize,
    pub(crate) id: Option<Cow<'a, str>>,
}

/// The body is not the JSON the scanner accepts; `serde_json` says why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refused;

type Step = Result<(), Refused>;

/// Splits `text` (a JSON array of items, or one JSON object) into `items`, reading the
/// top-level attribute `id_key` of each object item.
pub(crate) fn split<'a>(text: &'a str, id_key: &str, items: &mut Vec<Item<'a>>) -> Step {
    split_with(text, id_key, items, quote_bits(text.as_bytes()))
}

/// [`split`] with the given quote bits (empty: strings are read byte by byte).
fn split_with<'a>(
    text: &'a str,
    id_key: &str,
    items: &mut Vec<Item<'a>>,
    quotes: Vec<u64>,
) -> Step {
    let mut s = Scanner {
        text,
        b: text.as_bytes(),
        i: 0,
        stack: Vec::new(),
        quotes,
    };
    s.ws();
    match s.peek() {
        Some(b'[') => {
            s.i += 1;
            s.ws();
            if s.peek() == Some(b']') {
                s.i += 1;
            } else {
                loop {
                    items.push(s.item(id_key)?);
                    s.ws();
                    match s.peek() {
                        Some(b',') => {
                            s.i += 1;
                            s.ws();
                        }
                        Some(b']') => {
                            s.i += 1;
                            break;
                        }
                        _ => return Err(Refused),
                    }
                }
            }
        }
        Some(b'{') => items.push(s.item(id_key)?),
        _ => return Err(Refused),
    }
    s.ws();
    if s.i == s.b.len() {
        Ok(())
    } else {
        Err(Refused)
    }
}

struct Scanner<'a> {
    text: &'a str,
    b: &'a [u8],
    i: usize,
    /// The closing bytes of the containers open inside the value being skipped.
    stack: Vec<u8>,
    /// [`quote_bits`] of the text: empty when it has a backslash or a control byte.
    quotes: Vec<u64>,
}

/// Where the quotes of `b` are, bit `j` of word `w` for byte `64 w + j` (the last word for
/// the bytes after the last whole 64), if `b` has no backslash and no control byte: then no
/// string has an escape or a byte it may not hold, and each ends at the next quote. Empty
/// otherwise. One pass without branches: the compiler turns the byte tests into vector
/// compares; each 8 flag bytes (0 or 1) become 8 bits by one multiplication, which moves the
/// bit of byte `k` to bit `56 + k` with no carries between them.
fn quote_bits(b: &[u8]) -> Vec<u64> {
    const GATHER: u64 = 0x0102_0408_1020_4080;
    let mut bits = Vec::with_capacity(b.len() / 64 + 1);
    let mut other = 0u8;
    let mut blocks = b.chunks_exact(64);
    for block in &mut blocks {
        let mut flags = [0u8; 64];
        for (flag, &c) in flags.iter_mut().zip(block) {
            *flag = u8::from(c == b'"');
            other |= u8::from(c < 0x20) | u8::from(c == b'\\');
        }
        let mut word = 0u64;
        for (k, eight) in flags.chunks_exact(8).enumerate() {
            let mut lanes = [0u8; 8];
            lanes.copy_from_slice(eight);
            word |= (u64::from_le_bytes(lanes).wrapping_mul(GATHER) >> 56) << (8 * k);
        }
        bits.push(word);
    }
    let mut word = 0u64;
    for (j, &c) in blocks.remainder().iter().enumerate() {
        word |= u64::from(c == b'"') << j;
        other |= u8::from(c < 0x20) | u8::from(c == b'\\');
    }
    bits.push(word);
    if other != 0 {
        bits.clear();
    }
    bits
}

impl<'a> Scanner<'a> {
    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    #[inline]
    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.i += 1;
        }
    }

    #[inline]
    fn eat(&mut self, byte: u8) -> Step {
        if self.peek() == Some(byte) {
            self.i += 1;
            Ok(())
        } else {
            Err(Refused)
        }
    }

    /// One item at the current position (whitespace skipped).
    fn item(&mut self, id_key: &str) -> Result<Item<'a>, Refused> {
        let start = self.i;
        let id = if self.peek() == Some(b'{') {
            self.object_with_id(id_key)?
        } else {
            self.value()?;
            None
        };
        Ok(Item {
            start,
            len: self.i - start,
            id,
        })
    }

    /// An object, reading the first top-level `id_key` whose value is a string or a number.
    /// Values of other kinds under that key are passed over; a value that cannot be read as
    /// text (an escape that is no character, a number out of range) ends the search with none.
    fn object_with_id(&mut self, id_key: &str) -> Result<Option<Cow<'a, str>>, Refused> {
        self.i += 1;
        self.ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(None);
        }
        let mut id = None;
        let mut searching = true;
        loop {
            let k0 = self.i;
            if self.peek() != Some(b'"') {
                return Err(Refused);
            }
            let escaped = self.string()?;
            let key = &self.text[k0..self.i];
            self.ws();
            self.eat(b':')?;
            self.ws();
            let wanted = searching
                && if escaped {
                    match serde_json::from_str::<String>(key) {
                        Ok(k) => k == id_key,
                        Err(_) => {
                            searching = false;
                            false
                        }
                    }
                } else {
                    &key[1..key.len() - 1] == id_key
                };
            let v0 = self.i;
            match self.peek() {
                Some(b'"') if wanted => {
                    let escaped = self.string()?;
                    let raw = &self.text[v0..self.i];
                    id = if escaped {
                        serde_json::from_str::<String>(raw).ok().map(Cow::Owned)
                    } else {
                        Some(Cow::Borrowed(&raw[1..raw.len() - 1]))
                    };
                    searching = false;
                }
                Some(b'-' | b'0'..=b'9') if wanted => {
                    self.number()?;
                    id = crate::logs::number_text(&self.text[v0..self.i]).map(Cow::Owned);
                    searching = false;
                }
                _ => self.value()?,
            }
            self.ws();
            match self.peek() {
                Some(b',') => {
                    self.i += 1;
                    self.ws();
                }
                Some(b'}') => {
                    self.i += 1;
                    return Ok(id);
                }
                _ => return Err(Refused),
            }
        }
    }

    /// Skips one value at the current position (whitespace skipped), containers included,
    /// without recursion.
    fn value(&mut self) -> Step {
        self.stack.clear();
        loop {
            match self.peek().ok_or(Refused)? {
                b'"' => {
                    self.string()?;
                }
                b'{' => {
                    self.i += 1;
                    self.ws();
                    if self.peek() == Some(b'}') {
                        self.i += 1;
                    } else {
                        self.stack.push(b'}');
                        self.key()?;
                        continue;
                    }
                }
                b'[' => {
                    self.i += 1;
                    self.ws();
                    if self.peek() == Some(b']') {
                        self.i += 1;
                    } else {
                        self.stack.push(b']');
                        continue;
                    }
                }
                b't' => self.word(b"true")?,
                b'f' => self.word(b"false")?,
                b'n' => self.word(b"null")?,
                b'-' | b'0'..=b'9' => self.number()?,
                _ => return Err(Refused),
            }
            // A value ended: close what it ends, or go on to the next member.
            loop {
                let Some(&close) = self.stack.last() else {
                    return Ok(());
                };
                self.ws();
                match self.peek() {
                    Some(b',') => {
                        self.i += 1;
                        self.ws();
                        if close == b'}' {
                            self.key()?;
                        }
                        break;
                    }
                    Some(c) if c == close => {
                        self.i += 1;
                        self.stack.pop();
                    }
                    _ => return Err(Refused),
                }
            }
        }
    }

    /// `"key"`, a colon, and the whitespace up to the value.
    #[inline(always)]
    fn key(&mut self) -> Step {
        if self.peek() != Some(b'"') {
            return Err(Refused);
        }
        self.string()?;
        self.ws();
        self.eat(b':')?;
        self.ws();
        Ok(())
    }

    fn word(&mut self, word: &[u8]) -> Step {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(Refused)
        }
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    fn number(&mut self) -> Step {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => {
                self.i += 1;
                if let Some(b'0'..=b'9') = self.peek() {
                    return Err(Refused);
                }
            }
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(Refused),
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return Err(Refused);
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            if self.digits() == 0 {
                return Err(Refused);
            }
        }
        Ok(())
    }

    fn digits(&mut self) -> usize {
        let from = self.i;
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
        self.i - from
    }

    /// A string at its opening quote; ends past the closing one. True if it has escapes.
    #[inline(always)]
    fn string(&mut self) -> Result<bool, Refused> {
        if self.quotes.is_empty() {
            return self.string_bytewise();
        }
        // No escapes and no control bytes anywhere: the string ends at the next quote.
        let from = self.i + 1;
        let mut w = from / 64;
        let mut bits = self.quotes[w] & (u64::MAX << (from % 64));
        while bits == 0 {
            w += 1;
            bits = *self.quotes.get(w).ok_or(Refused)?;
        }
        self.i = w * 64 + bits.trailing_zeros() as usize + 1;
        Ok(false)
    }

    /// [`Self::string`] when the text has escapes or control bytes.
    #[inline(never)]
    fn string_bytewise(&mut self) -> Result<bool, Refused> {
        self.i += 1;
        let mut escaped = false;
        loop {
            self.plain_run();
            match self.peek() {
                Some(b'"') => {
                    self.i += 1;
                    return Ok(escaped);
                }
                Some(b'\\') => {
                    escaped = true;
                    match self.b.get(self.i + 1) {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                            self.i += 2;
                        }
                        Some(b'u') => match self.b.get(self.i + 2..self.i + 6) {
                            Some(hex) if hex.iter().all(u8::is_ascii_hexdigit) => self.i += 6,
                            _ => return Err(Refused),
                        },
                        _ => return Err(Refused),
                    }
                }
                // A control character, or the end of the text.
                _ => return Err(Refused),
            }
        }
    }

    /// Moves to the next `"`, `\` or control character (or the end).
    #[inline]
    fn plain_run(&mut self) {
        let rest = &self.b[self.i..];
        let mut offset = 0;
        let mut chunks = rest.chunks_exact(16);
        for chunk in &mut chunks {
            let at = specials_16(chunk) as usize;
            if at < 16 {
                self.i += offset + at;
                return;
            }
            offset += 16;
        }
        self.i += offset;
        while let Some(c) = self.peek() {
            if c == b'"' || c == b'\\' || c < 0x20 {
                return;
            }
            self.i += 1;
        }
    }
}

/// The index of the first byte of `chunk` (16 bytes) that is `"`, `\` or a control
/// character, or 16: the classic zero-byte test on a 128-bit word, three times. Each flags
/// the lowest matching byte exactly (a borrow only runs upwards from a match), which is the
/// one the caller wants.
#[inline]
fn specials_16(chunk: &[u8]) -> u32 {
    const ONES: u128 = u128::MAX / 255;
    const HIGH: u128 = ONES << 7;
    let mut word = [0u8; 16];
    word.copy_from_slice(chunk);
    let x = u128::from_le_bytes(word);
    let control = x.wrapping_sub(ONES * 0x20) & !x;
    let q = x ^ (ONES * u128::from(b'"'));
    let quote = q.wrapping_sub(ONES) & !q;
    let s = x ^ (ONES * u128::from(b'\\'));
    let backslash = s.wrapping_sub(ONES) & !s;
    let hit = (control | quote | backslash) & HIGH;
    hit.trailing_zeros() / 8
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::SplitMix64;

    fn scan(text: &str) -> Result<Vec<Item<'_>>, Refused> {
        let mut items = Vec::new();
        split(text, "event_id", &mut items).map(|()| items)
    }

    #[test]
    fn every_special_byte_is_found_at_every_position_of_a_word() {
        // Escapes, the closing quote and control characters at each offset of the first two
        // 16-byte words (and in the tail shorter than a word), after ASCII or multibyte UTF-8
        // (bytes >= 0x80), with the same answer as serde_json. DEL and space are not special.
        let specials = [
            ("\\n", true),
            ("\\\"", true),
            ("", true), // the closing quote right after the filler
            ("\t", false),
            ("\u{0}", false),
            ("\u{1f}", false),
            ("\u{7f}", true),
            (" ", true),
        ];
        for len in 0..40 {
            for filler in ["a", "\u{e9}", "\u{1f600}"] {
                for (special, valid) in specials {
                    let text = format!(r#"[{{"event_id":"{}{special}"}}]"#, filler.repeat(len));
                    let oracle = serde_json::from_str::<serde_json::Value>(&text).ok();
                    assert_eq!(oracle.is_some(), valid, "{text:?}");
                    match scan(&text) {
                        Ok(items) => {
                            let id = oracle.expect("accepted only what serde_json accepts")[0]
                                ["event_id"]
                                .as_str()
                                .unwrap()
                                .to_owned();
                            assert_eq!(items[0].id.as_deref(), Some(id.as_str()), "{text:?}");
                        }
                        Err(Refused) => assert!(!valid, "refused {text:?}"),
                    }
                }
            }
        }
    }

    #[test]
    fn splits_items_and_reads_ids() {
        let text = r#" [ {"a":[1,{"event_id":"no"}],"event_id":"yes"} , 3, "s", {"event_id":42},
            {"event_id":null,"event_id":"b"}, {"event_\u0069d":"e\"sc"}, {}, [] ] "#;
        let items = scan(text).unwrap();
        let got: Vec<(&str, Option<&str>)> = items
            .iter()
            .map(|it| (&text[it.start..it.start + it.len], it.id.as_deref()))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    r#"{"a":[1,{"event_id":"no"}],"event_id":"yes"}"#,
                    Some("yes")
                ),
                ("3", None),
                (r#""s""#, None),
                (r#"{"event_id":42}"#, Some("42")),
                (r#"{"event_id":null,"event_id":"b"}"#, Some("b")),
                (r#"{"event_\u0069d":"e\"sc"}"#, Some("e\"sc")),
                ("{}", None),
                ("[]", None),
            ]
        );
        assert!(matches!(items[0].id, Some(Cow::Borrowed(_))));
        assert_eq!(scan("[]").unwrap(), vec![]);
        assert_eq!(
            scan(r#" {"event_id":"x"} "#).unwrap()[0].id.as_deref(),
            Some("x")
        );
    }

    #[test]
    fn refuses_what_json_refuses() {
        for bad in [
            "",
            " ",
            "[",
            "]",
            "[,]",
            "[1,]",
            "[1 2]",
            "{",
            "{\"a\"}",
            "{\"a\":}",
            "{\"a\":1,}",
            "{a:1}",
            "[01]",
            "[1.]",
            "[.5]",
            "[1e]",
            "[-]",
            "[+1]",
            "[tru]",
            "[nul]",
            "[\"a]",
            "[\"\\x\"]",
            "[\"\\u12g4\"]",
            "[\"\\u12\"]",
            "[\"a\u{1}b\"]",
            "[] x",
            "[][]",
            "[}",
            "{\"a\":1]",
            "[{\"a\":[1}]",
            "[\"\t\"]",
            "1",
            "\"s\"",
            "null",
        ] {
            assert_eq!(scan(bad), Err(Refused), "{bad:?}");
        }
    }

    #[test]
    fn a_string_left_open_at_the_end_of_the_text_is_refused_at_every_length() {
        // The opening quote as the last byte, or a string running to the end, with the end
        // of the text on either side of a 64-byte block boundary: the bit path must look past
        // the last word and refuse, as serde_json does.
        for len in 1..200 {
            for text in [
                format!("[{}\"", " ".repeat(len)),
                format!("[\"{}", "a".repeat(len)),
                format!("[\"a\",{}\"", " ".repeat(len)),
            ] {
                assert!(!quote_bits(text.as_bytes()).is_empty(), "{text:?}");
                assert_eq!(scan(&text), Err(Refused), "{text:?}");
                assert!(oracle(&text).is_none(), "{text:?}");
            }
        }
    }

    #[test]
    fn quote_bits_mark_every_quote_and_only_in_text_without_escapes_or_controls() {
        // Every length around the 64-byte blocks, a quote at every position, after ASCII and
        // after multibyte UTF-8; a backslash or any control byte anywhere empties the answer.
        for len in 0..200 {
            for filler in [b'a', 0xc3, 0x7f] {
                let mut text = vec![filler; len];
                assert_eq!(quote_bits(&text).len(), len / 64 + 1, "{len}");
                assert!(quote_bits(&text).iter().all(|&w| w == 0), "{len}");
                for at in 0..len {
                    text[at] = b'"';
                    let bits = quote_bits(&text);
                    let marked: Vec<usize> = (0..bits.len() * 64)
                        .filter(|&i| bits[i / 64] & (1 << (i % 64)) != 0)
                        .collect();
                    assert_eq!(marked, vec![at], "len {len}");
                    for spoiler in [b'\\', 0x00, b'\n', 0x1f] {
                        let mut spoiled = text.clone();
                        spoiled[(at + 1) % len] = spoiler;
                        if (at + 1) % len != at {
                            assert!(quote_bits(&spoiled).is_empty(), "len {len}, {spoiler}");
                        }
                    }
                    text[at] = filler;
                }
            }
        }
    }

    /// What the slow path (serde_json, then `probe_id` per object item) makes of `text`.
    fn oracle(text: &str) -> Option<Vec<(usize, usize, Option<String>)>> {
        crate::logs::slow_split(text, "event_id").ok().map(|items| {
            items
                .into_iter()
                .map(|it| (it.start, it.len, it.id.map(Cow::into_owned)))
                .collect()
        })
    }

    /// Mutated bodies (bytes deleted, inserted, duplicated, swapped), thousands of them: the
    /// scanner accepts exactly what serde_json accepts, with the same spans and ids.
    #[test]
    fn agrees_with_serde_json_on_mutated_bodies() {
        let seeds = [
            r#"[{"message":"a \"quoted\" \\ line\n","event_id":"0194-a","n":-12.5e+3,"t":true,"f":false,"z":null,"o":{"k":[1,2,{"x":"y"}]},"e":{},"a":[]}]"#,
            r#"[{"event_id":17},{"event_id":-0.5E2},{"event_id":1e400},{"event_id":"\ud800"},{"event_i\u0064":"k"}]"#,
            r#"  {"ddtags":"env:prod,team:sec","event_id":"\u00e9t\u00E9","nested":[[[[[]]]]]}  "#,
            r#"[1,"two",[3],{"four":4},null,true,false,-0,0.0,1E-7,"\/\b\f\n\r\t\u0000"]"#,
            // No backslash, no control byte: strings end at the next quote (quote_bits). A
            // log item as the formatter writes it, and strings across 64-byte blocks.
            r#"[{"action":"file_access","agent":{"id":"agent-9","name":"hushd","type":"clawdstrike"},"ddsource":"clawdstrike","ddtags":"env:production,event_type:forbidden_path,severity:critical","event_id":"128b2f33-0c5c-4fd0-a6a3-a4506513270e","message":"[forbidden_path] BLOCKED: Access to /home/dev/.ssh/id_rsa","metadata":{"bytes":259631,"ok":true,"none":null},"labels":{},"tags":[]}]"#,
            r#"[{"event_id":"x"},"a string that runs across the first 64-byte block boundary","é","",{"event_id":"a string long enough to run across the next 64-byte block of the text"},[1.5,-2,3e9]]"#,
            r#" [ {"event_id" : 7 , "k" : [ "v" , { } ] } , { "a" : "b" , "event_id" : "c" } ] "#,
        ];
        let alphabet: &[u8] = b"{}[]\",:\\ 0123456789-+.eEtrufalsn\"\"\"\t\nu\x01a\xc3\xa9";
        let mut rng = SplitMix64::new(0x5eed);
        let mut checked = 0;
        let mut accepted = 0;
        let mut plain_checked = 0;
        let mut plain_accepted = 0;
        for round in 0..70_000 {
            let mut body: Vec<u8> = seeds[round % seeds.len()].as_bytes().to_vec();
            for _ in 0..=(rng.next_u64() % 3) {
                let at = (rng.next_u64() as usize) % (body.len() + 1);
                match rng.next_u64() % 4 {
                    0 if at < body.len() => {
                        body.remove(at);
                    }
                    1 => {
                        let c = alphabet[(rng.next_u64() as usize) % alphabet.len()];
                        body.insert(at, c);
                    }
                    2 if at < body.len() => {
                        let c = body[at];
                        body.insert(at, c);
                    }
                    _ if at + 1 < body.len() => body.swap(at, at + 1),
                    _ => {}
                }
            }
            let Ok(text) = std::str::from_utf8(&body) else {
                continue;
            };
            let owned = |items: Vec<Item<'_>>| {
                items
                    .into_iter()
                    .map(|it| (it.start, it.len, it.id.map(Cow::into_owned)))
                    .collect::<Vec<_>>()
            };
            let fast = scan(text).ok().map(owned);
            let slow = oracle(text);
            assert_eq!(fast, slow, "body: {text:?}");
            // Where the quote bits apply, reading strings byte by byte gives the same answer.
            let bits = quote_bits(text.as_bytes());
            if !bits.is_empty() {
                let mut items = Vec::new();
                let bytewise = split_with(text, "event_id", &mut items, Vec::new()).map(|()| items);
                assert_eq!(bytewise.ok().map(owned), slow, "body: {text:?}");
                plain_checked += 1;
                plain_accepted += usize::from(slow.is_some());
            }
            checked += 1;
            accepted += usize::from(slow.is_some());
        }
        // Both verdicts must have been exercised, on both ways of reading strings, or the
        // test proves little.
        assert!(checked > 60_000, "{checked}");
        assert!(
            accepted > 5_000 && checked - accepted > 5_000,
            "{accepted} of {checked}"
        );
        assert!(
            plain_accepted > 2_000 && plain_checked - plain_accepted > 2_000,
            "{plain_accepted} of {plain_checked} without escapes or controls"
        );
    }
}
