//! APM trace correlation: W3C `traceparent` parsing and Datadog's id forms.

use clawdstrike_export::TraceContext;

/// Parses a W3C `traceparent` header value (`00-<32 hex trace id>-<16 hex span id>-<2 hex
/// flags>`). Returns `None` for anything malformed, an all-zero id, or version `ff`.
pub fn parse_traceparent(value: &str) -> Option<TraceContext> {
    let value = value.trim();
    let mut parts = value.split('-');
    let version = parts.next()?;
    let trace = parts.next()?;
    let span = parts.next()?;
    let flags = parts.next()?;
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if !hex(version, 2) || version == "ff" || !hex(trace, 32) || !hex(span, 16) || !hex(flags, 2) {
        return None;
    }
    // Version 00 has exactly four parts; later versions may append more.
    if version == "00" && parts.next().is_some() {
        return None;
    }
    let trace_id = u128::from_str_radix(trace, 16).ok()?;
    let span_id = u64::from_str_radix(span, 16).ok()?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    (trace_id != 0 && span_id != 0).then_some(TraceContext {
        trace_id,
        span_id,
        sampled: flags & 1 == 1,
    })
}

/// Formats a trace context as a W3C `traceparent` header value.
pub fn format_traceparent(trace: &TraceContext) -> String {
    format!(
        "00-{:032x}-{:016x}-{:02x}",
        trace.trace_id,
        trace.span_id,
        u8::from(trace.sampled)
    )
}

/// A trace context a producer put in the event's metadata: `metadata.traceparent`, or
/// `metadata.trace.traceparent`.
pub fn trace_from_metadata(metadata: &serde_json::Value) -> Option<TraceContext> {
    let object = metadata.as_object()?;
    let value = object
        .get("traceparent")
        .or_else(|| object.get("trace").and_then(|t| t.get("traceparent")))?;
    parse_traceparent(value.as_str()?)
}

/// Datadog's `dd.trace_id`: the lower 64 bits of the trace id, as an unsigned decimal string.
pub fn dd_trace_id(trace_id: u128) -> String {
    (trace_id as u64).to_string()
}

/// Datadog's `dd.span_id`: the span id as an unsigned decimal string.
pub fn dd_span_id(span_id: u64) -> String {
    span_id.to_string()
}

/// `otel.trace_id`: the full 128-bit trace id as 32 lowercase hex digits.
pub fn otel_trace_id(trace_id: u128) -> String {
    format!("{trace_id:032x}")
}

/// The trace context of the current OpenTelemetry context, if it holds a valid span.
///
/// Call it where the event is *submitted* (the producer's task, inside its span), not at
/// export time: export runs on another task where the producer's span is gone.
#[cfg(feature = "opentelemetry")]
pub fn current_otel_trace() -> Option<TraceContext> {
    use opentelemetry::trace::TraceContextExt;
    let context = opentelemetry::Context::current();
    let span = context.span();
    let span_context = span.span_context();
    span_context.is_valid().then(|| TraceContext {
        trace_id: u128::from_be_bytes(span_context.trace_id().to_bytes()),
        span_id: u64::from_be_bytes(span_context.span_id().to_bytes()),
        sampled: span_context.is_sampled(),
    })
}

/// A record of `event` carrying the current OpenTelemetry trace context, if any.
#[cfg(feature = "opentelemetry")]
pub fn record_in_current_span(
    event: impl Into<std::sync::Arc<clawdstrike_schema::SecurityEvent>>,
) -> clawdstrike_export::Record {
    let record = clawdstrike_export::Record::new(event);
    match current_otel_trace() {
        Some(trace) => record.with_trace(trace),
        None => record,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_w3c_example() {
        let t =
            parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(t.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(t.span_id, 0x00f067aa0ba902b7);
        assert!(t.sampled);
        assert_eq!(dd_trace_id(t.trace_id), 0xa3ce929d0e0e4736u64.to_string());
        assert_eq!(
            otel_trace_id(t.trace_id),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(
            format_traceparent(&t),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
    }

    #[test]
    fn rejects_malformed_and_zero_ids() {
        for bad in [
            "",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad}");
        }
    }
}
