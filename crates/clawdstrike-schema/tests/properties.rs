//! Properties over the generated events (feature `proptest`).
#![cfg(feature = "proptest")]

use clawdstrike_schema::strategies::security_event;
use clawdstrike_schema::{NdjsonOptions, NdjsonReader, NdjsonRecord, SecurityEvent};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_generated_event_validates(event in security_event()) {
        prop_assert!(event.validate().is_ok(), "{:?}", event.validate());
    }

    #[test]
    fn json_round_trip_is_lossless(event in security_event()) {
        let json = event.to_json();
        let back = SecurityEvent::from_json(&json).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&back, &event);
        prop_assert_eq!(back.to_json(), json);
    }

    #[test]
    fn ndjson_stream_of_generated_events_yields_them_all(events in proptest::collection::vec(security_event(), 1..8)) {
        let mut buf = Vec::new();
        for event in &events {
            event.write_json(&mut buf);
            buf.push(b'\n');
        }
        let decoded: Vec<SecurityEvent> = NdjsonReader::with_options(&buf[..], NdjsonOptions::default().with_max_line_bytes(64 << 20))
            .map(|r| match r.unwrap() {
                NdjsonRecord::Event(e) => Ok(e.event),
                NdjsonRecord::Rejected(bad) => Err(TestCaseError::fail(bad.error.to_string())),
            })
            .collect::<Result<_, _>>()?;
        prop_assert_eq!(decoded, events);
    }
}
