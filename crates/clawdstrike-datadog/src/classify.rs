//! Response classification: what each intake status means for the events it carried.
//!
//! The framework owns *how* to retry; this module says *whether*.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};

/// What to do with the events of a request after the intake answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Accepted (2xx).
    Accepted,
    /// Retry later through the framework (408, 429, 5xx, network errors, and every status the
    /// intake does not send itself: 3xx, 404, 405, 407, 415 ... come from a proxy or a wrong
    /// URL, which someone can fix before the retry budget runs out).
    Retry {
        /// Server-requested delay.
        retry_after: Option<Duration>,
    },
    /// Never retry as is: dead-letter with the server's reason (400, 422: the payload itself).
    Reject,
    /// Payload too large (413): split and resend.
    TooLarge,
    /// 401/403: ask the key holder for a new key.
    KeyRejected,
}

/// Classifies a logs-intake response status.
pub fn classify(status: StatusCode) -> Verdict {
    match status.as_u16() {
        200..=299 => Verdict::Accepted,
        401 | 403 => Verdict::KeyRejected,
        413 => Verdict::TooLarge,
        400 | 422 => Verdict::Reject,
        _ => Verdict::Retry { retry_after: None },
    }
}

/// The delay the server asked for: `Retry-After` (delay-seconds or an HTTP date; past dates give
/// zero), else `X-RateLimit-Reset` (seconds until the rate-limit window resets, what Datadog's
/// rate-limited endpoints send with a 429).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let Some(value) = headers.get(RETRY_AFTER) else {
        let reset = headers.get("x-ratelimit-reset")?.to_str().ok()?.trim();
        return reset.parse::<u64>().ok().map(Duration::from_secs);
    };
    let value = value.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let delta = when.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(delta.to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_as_the_spec_says() {
        let v = |s: u16| classify(StatusCode::from_u16(s).unwrap());
        assert_eq!(v(202), Verdict::Accepted);
        for s in [408, 429, 500, 502, 503, 504] {
            assert_eq!(v(s), Verdict::Retry { retry_after: None }, "{s}");
        }
        assert_eq!(v(400), Verdict::Reject);
        assert_eq!(v(422), Verdict::Reject);
        // Not the intake's own answers: a proxy or a wrong URL, fixable, so retried (within
        // the retry budget) rather than dead-lettered at once.
        for s in [301, 302, 307, 308, 404, 405, 407, 409, 415] {
            assert_eq!(v(s), Verdict::Retry { retry_after: None }, "{s}");
        }
        assert_eq!(v(413), Verdict::TooLarge);
        assert_eq!(v(401), Verdict::KeyRejected);
        assert_eq!(v(403), Verdict::KeyRejected);
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(
            RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        h.insert(RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
        let mut h = HeaderMap::new();
        h.insert("x-ratelimit-reset", "12".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(12)));
        h.insert(RETRY_AFTER, "3".parse().unwrap());
        assert_eq!(
            retry_after(&h),
            Some(Duration::from_secs(3)),
            "Retry-After first"
        );
    }
}
