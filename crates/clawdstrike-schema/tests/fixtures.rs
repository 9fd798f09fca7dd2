//! The shared fixtures: every good event decodes, validates and re-encodes to the same JSON
//! (modulo the documented normalisations); every bad line is reported precisely.

use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;

use clawdstrike_schema::{DecodeError, NdjsonReader, NdjsonRecord, RejectedLine};

fn fixture(name: &str) -> PathBuf {
    let base = std::env::var_os("CLAWDSTRIKE_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared"));
    let path = base.join("fixtures").join(name);
    assert!(
        path.is_file(),
        "fixture {} not found (set CLAWDSTRIKE_SHARED)",
        path.display()
    );
    path
}

fn read_all(name: &str) -> Vec<NdjsonRecord> {
    let file = BufReader::new(File::open(fixture(name)).unwrap());
    NdjsonReader::new(file).collect::<Result<_, _>>().unwrap()
}

/// The documented normalisations: an absent `threat`, `metadata` or `labels` is written `{}`.
fn normalise(mut input: serde_json::Value) -> serde_json::Value {
    let object = input.as_object_mut().unwrap();
    for key in ["threat", "metadata", "labels"] {
        object.entry(key).or_insert_with(|| serde_json::json!({}));
    }
    input
}

#[test]
fn all_42_events_decode_validate_and_round_trip() {
    let raw_lines: Vec<String> = std::fs::read_to_string(fixture("events.ndjson"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let records = read_all("events.ndjson");
    assert_eq!(records.len(), 42);
    for (record, raw) in records.iter().zip(&raw_lines) {
        let NdjsonRecord::Event(decoded) = record else {
            panic!("rejected: {record:?}")
        };
        decoded.event.validate().unwrap();
        let input: serde_json::Value = serde_json::from_str(raw).unwrap();
        let output: serde_json::Value = serde_json::from_str(&decoded.event.to_json()).unwrap();
        assert_eq!(output, normalise(input), "line {}", decoded.line);
    }
}

fn rejected(records: &[NdjsonRecord]) -> Vec<&RejectedLine> {
    records
        .iter()
        .map(|r| match r {
            NdjsonRecord::Rejected(bad) => bad,
            NdjsonRecord::Event(ok) => panic!("line {} should have been rejected", ok.line),
        })
        .collect()
}

#[test]
fn every_bad_line_is_reported_with_its_number_and_field() {
    let records = read_all("bad-events.ndjson");
    let bad = rejected(&records);
    let summary: Vec<(u64, Vec<String>)> = bad.iter().map(|b| (b.line, b.error.fields())).collect();
    let fields = |f: &[&str]| f.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    assert_eq!(
        summary,
        vec![
            (1, fields(&["event_id"])),
            (2, fields(&["event_type"])),
            (3, fields(&["timestamp"])),
            (
                4,
                fields(&["schema_version", "agent.id", "action", "resource.name"])
            ),
            (5, vec![]),
            (6, vec![]),
            (7, vec![]),
            // line 8 is blank: skipped, not reported
            (9, fields(&["decision.severity"])),
        ]
    );
    // Syntax errors and non-objects say so.
    assert!(
        matches!(bad[4].error, DecodeError::Syntax { .. }),
        "{:?}",
        bad[4].error
    );
    assert!(
        matches!(bad[5].error, DecodeError::Syntax { .. }),
        "{:?}",
        bad[5].error
    );
    assert!(
        bad[4]
            .error
            .to_string()
            .starts_with("not valid JSON at column"),
        "{}",
        bad[4].error
    );
    assert_eq!(bad[6].error, DecodeError::NotAnObject { found: "an array" });
    // Reasons are readable and name the value.
    assert!(
        bad[1]
            .error
            .to_string()
            .contains("unknown variant `teleport`"),
        "{}",
        bad[1].error
    );
    assert!(
        bad[8 - 1]
            .error
            .to_string()
            .starts_with("field `decision.severity`: unknown variant `apocalyptic`")
    );
    // Raw bytes are kept byte for byte, with offsets that point at them.
    let text = std::fs::read(fixture("bad-events.ndjson")).unwrap();
    for b in &bad {
        let start = b.offset as usize;
        assert_eq!(
            &text[start..start + b.raw.len()],
            &b.raw[..],
            "line {}",
            b.line
        );
        assert!(!b.truncated);
    }
    assert_eq!(bad[6].raw, b"[1,2,3]");
}

#[test]
fn good_lines_around_bad_ones_survive_and_crlf_is_accepted() {
    let good = std::fs::read_to_string(fixture("events.ndjson")).unwrap();
    let bad = std::fs::read_to_string(fixture("bad-events.ndjson")).unwrap();
    let mut mixed = String::new();
    for (g, b) in good.lines().zip(bad.lines().chain(std::iter::repeat(""))) {
        mixed.push_str(g);
        mixed.push_str("\r\n");
        mixed.push_str(b);
        mixed.push('\n');
    }
    let records: Vec<_> = NdjsonReader::new(mixed.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    let events = records
        .iter()
        .filter(|r| matches!(r, NdjsonRecord::Event(_)))
        .count();
    let rejects = records.len() - events;
    assert_eq!(events, 42);
    assert_eq!(rejects, 8);
    // Offsets chain: each record ends where the next line starts.
    let ends: Vec<u64> = records
        .iter()
        .map(|r| match r {
            NdjsonRecord::Event(e) => e.end_offset,
            NdjsonRecord::Rejected(b) => b.end_offset,
        })
        .collect();
    assert!(ends.windows(2).all(|w| w[0] < w[1]));
    // The input ends with a blank line (one byte), which is skipped.
    assert_eq!(*ends.last().unwrap(), mixed.len() as u64 - 1);
}

fn first_good_line() -> String {
    let good = std::fs::read_to_string(fixture("events.ndjson")).unwrap();
    good.lines().next().unwrap().to_owned()
}

#[test]
fn a_byte_order_mark_at_the_start_is_skipped_and_nowhere_else() {
    let line = first_good_line();
    let input = format!("\u{feff}{line}\n\u{feff}{line}\n");
    let records: Vec<_> = NdjsonReader::new(input.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    let NdjsonRecord::Event(first) = &records[0] else {
        panic!("the first line, after a BOM, is an event: {:?}", records[0])
    };
    assert_eq!((first.line, first.offset), (1, 0));
    // Inside the input a BOM is a character like any other: not JSON.
    let NdjsonRecord::Rejected(second) = &records[1] else {
        panic!("a BOM on line 2 is not skipped")
    };
    assert_eq!(second.line, 2);
    // At the line limit, the BOM does not count against it (nor does a `\r`).
    for ending in ["\n", "\r\n", ""] {
        let input = format!("\u{feff}{line}{ending}");
        let records: Vec<_> = NdjsonReader::with_options(
            input.as_bytes(),
            clawdstrike_schema::NdjsonOptions::default().with_max_line_bytes(line.len()),
        )
        .collect::<Result<_, _>>()
        .unwrap();
        assert!(
            matches!(records[..], [NdjsonRecord::Event(_)]),
            "{ending:?}: {records:?}"
        );
    }
    // A file holding only a BOM (and a line end) is empty.
    assert!(NdjsonReader::new(&b"\xef\xbb\xbf\n"[..]).next().is_none());
    assert!(NdjsonReader::new(&b"\xef\xbb\xbf"[..]).next().is_none());
}

#[test]
fn the_line_limit_is_on_the_content_whatever_the_line_ending() {
    let line = first_good_line();
    let max = line.len();
    for ending in ["\n", "\r\n"] {
        let input = format!("{line}{ending}x{line}{ending}");
        let records: Vec<_> = NdjsonReader::with_options(
            input.as_bytes(),
            clawdstrike_schema::NdjsonOptions::default().with_max_line_bytes(max),
        )
        .collect::<Result<_, _>>()
        .unwrap();
        assert!(
            matches!(records[0], NdjsonRecord::Event(_)),
            "{ending:?}: a line of exactly the limit is taken"
        );
        let NdjsonRecord::Rejected(long) = &records[1] else {
            panic!("{ending:?}: one byte over the limit is rejected")
        };
        assert_eq!(
            long.error,
            DecodeError::TooLong {
                len: max as u64 + 1,
                max
            },
            "{ending:?}"
        );
        assert_eq!(long.raw.len(), max);
    }
    // The last line, without a line ending, or ending in a lone `\r`.
    for last in [line.clone(), format!("{line}\r")] {
        let records: Vec<_> = NdjsonReader::with_options(
            last.as_bytes(),
            clawdstrike_schema::NdjsonOptions::default().with_max_line_bytes(max),
        )
        .collect::<Result<_, _>>()
        .unwrap();
        assert!(
            matches!(records[..], [NdjsonRecord::Event(_)]),
            "{records:?}"
        );
    }
}
