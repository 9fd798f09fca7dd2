//! RFC 3339 timestamps with nanosecond precision, normalised to UTC.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An instant, read from and written as RFC 3339 in UTC (`2026-02-07T12:00:00.123456789Z`).
///
/// Normalisations (documented, and the only ones): an offset other than `Z` is converted to
/// UTC, and the fraction is written with 0, 3, 6 or 9 digits, whichever is the shortest exact
/// form (`.1Z` is written `.100Z`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(DateTime<Utc>);

impl Timestamp {
    /// The current time.
    pub fn now() -> Self {
        Self(Utc::now())
    }

    /// From seconds and nanoseconds since the Unix epoch; `None` when out of range.
    pub fn from_unix(secs: i64, nanos: u32) -> Option<Self> {
        DateTime::from_timestamp(secs, nanos).map(Self)
    }

    /// Milliseconds since the Unix epoch.
    pub fn unix_millis(&self) -> i64 {
        self.0.timestamp_millis()
    }

    /// Nanoseconds since the Unix epoch, saturating outside the `i64` range (years ~1677–2262).
    pub fn unix_nanos(&self) -> i64 {
        self.0
            .timestamp_nanos_opt()
            .unwrap_or(if self.0.timestamp() < 0 {
                i64::MIN
            } else {
                i64::MAX
            })
    }

    /// The instant as a `chrono` date-time.
    pub fn as_datetime(&self) -> &DateTime<Utc> {
        &self.0
    }

    /// RFC 3339 with millisecond precision (`2026-02-07T12:00:00.123Z`), Datadog's preferred form.
    pub fn to_rfc3339_millis(&self) -> String {
        self.0.to_rfc3339_opts(SecondsFormat::Millis, true)
    }
}

impl From<DateTime<Utc>> for Timestamp {
    fn from(value: DateTime<Utc>) -> Self {
        Self(value)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.to_rfc3339_opts(SecondsFormat::AutoSi, true))
    }
}

/// The error for a string that is not an RFC 3339 timestamp.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an RFC 3339 timestamp ({0}); expected e.g. 2026-02-07T12:00:00.123456789Z")]
pub struct TimestampError(String);

impl FromStr for Timestamp {
    type Err = TimestampError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DateTime::parse_from_rfc3339(s)
            .map(|t| Self(t.with_timezone(&Utc)))
            .map_err(|e| TimestampError(e.to_string()))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Timestamp;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an RFC 3339 timestamp string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Timestamp, E> {
                v.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_nanoseconds_and_shortest_exact_fraction() {
        for (input, output) in [
            (
                "2026-02-07T12:00:00.123456789Z",
                "2026-02-07T12:00:00.123456789Z",
            ),
            ("2026-02-07T12:00:00Z", "2026-02-07T12:00:00Z"),
            ("2026-02-07T12:00:00.123Z", "2026-02-07T12:00:00.123Z"),
            ("2026-02-07T12:00:00.1Z", "2026-02-07T12:00:00.100Z"),
            ("2026-02-07T14:00:00.5+02:00", "2026-02-07T12:00:00.500Z"),
        ] {
            let t: Timestamp = input.parse().unwrap();
            assert_eq!(t.to_string(), output, "for {input}");
        }
    }

    #[test]
    fn rejects_words() {
        let err = "yesterday".parse::<Timestamp>().unwrap_err();
        assert!(err.to_string().contains("RFC 3339"), "{err}");
    }
}
