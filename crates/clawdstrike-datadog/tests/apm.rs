//! APM correlation end to end: the trace context captured at submit time arrives on the item.

mod common;

use std::time::Duration;

use clawdstrike_datadog::encode::Codec;
use clawdstrike_export::Record;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_traceparent_in_metadata_correlates_the_item() {
    let h = Harness::start(Codec::Zstd, static_key(KEY_A), fast_pipeline()).await;
    let mut event = events(1).remove(0);
    event.metadata = serde_json::json!({ "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" });
    h.pipeline.submit(Record::new(event.clone())).await.unwrap();
    h.pipeline.shutdown(Duration::from_secs(30)).await;
    let item = &h.intake.log_items_with_id(&event.event_id.to_string())[0].value;
    assert_eq!(item["dd"]["trace_id"], (0x8448eb211c80319cu64).to_string());
    assert_eq!(item["dd"]["span_id"], (0xb7ad6b7169203331u64).to_string());
    assert_eq!(item["otel"]["trace_id"], "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(item["dd"]["service"], "clawdstrike");
}

#[cfg(feature = "opentelemetry")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_submitted_inside_an_opentelemetry_span_arrives_with_its_ids() {
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };

    let h = Harness::start(Codec::Zstd, static_key(KEY_A), fast_pipeline()).await;
    let trace_id: u128 = 0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736;
    let span_id: u64 = 0x00f0_67aa_0ba9_02b7;
    let span = SpanContext::new(
        TraceId::from(trace_id),
        SpanId::from(span_id),
        TraceFlags::SAMPLED,
        false,
        TraceState::default(),
    );
    let event = events(2);
    {
        let _guard = opentelemetry::Context::current()
            .with_remote_span_context(span)
            .attach();
        // Captured here, in the producer's span...
        let record = clawdstrike_datadog::apm::record_in_current_span(event[0].clone());
        h.pipeline.submit(record).await.unwrap();
    }
    // ...and an event submitted outside any span carries none.
    h.pipeline
        .submit(clawdstrike_datadog::apm::record_in_current_span(
            event[1].clone(),
        ))
        .await
        .unwrap();
    h.pipeline.shutdown(Duration::from_secs(30)).await;
    let inside = &h.intake.log_items_with_id(&event[0].event_id.to_string())[0].value;
    assert_eq!(inside["dd"]["trace_id"], (trace_id as u64).to_string());
    assert_eq!(inside["dd"]["span_id"], span_id.to_string());
    assert_eq!(
        inside["otel"]["trace_id"],
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    let outside = &h.intake.log_items_with_id(&event[1].event_id.to_string())[0].value;
    assert!(outside.get("dd").is_none() && outside.get("otel").is_none());
}
