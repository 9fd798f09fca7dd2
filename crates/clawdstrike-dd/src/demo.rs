//! `demo`: the embedded fake intake, the bundled sample events through the real pipeline and
//! metrics reporter, and what Datadog received. No account, loopback only.

use std::collections::BTreeMap;
use std::time::Duration;

use clawdstrike_datadog::config::DatadogConfig;
use clawdstrike_export::Record;
use clawdstrike_fakeintake::FakeIntake;
use clawdstrike_keys::KeyHolder;
use clawdstrike_schema::{NdjsonReader, NdjsonRecord};
use secrecy::SecretString;

use crate::config::{ExporterEntry, ForwarderConfig, Settings};
use crate::forwarder::{Forwarder, Keys};

/// The sample events shipped with the binary.
pub(crate) const SAMPLES: &str = include_str!("../samples/events.ndjson");

/// Runs the demo; returns the process exit code.
pub(crate) async fn run() -> Result<(), String> {
    let key = format!("{:032x}", rand::random::<u128>());
    let app_key = format!("{:040x}", rand::random::<u128>());
    let intake = FakeIntake::start(SecretString::from(key.clone()), SecretString::from(app_key))
        .await
        .map_err(|e| format!("cannot start the fake intake: {e}"))?;
    println!("fake Datadog intake listening on {}", intake.base_url());
    let yaml = format!(
        "site: datadoghq.com\nlogs_url: {url}\napi_url: {url}\nlogs: {{ service: clawdstrike-demo, hostname: demo-host, tags: [team:security] }}\n\
         metrics: {{ flush_interval_ms: 60000 }}\nbatch: {{ flush_interval_ms: 50 }}\nretry: {{ initial_backoff_ms: 50, max_backoff_ms: 500 }}\n",
        url = intake.base_url()
    );
    let no_env = |_: &str| None;
    let config = DatadogConfig::from_yaml(&yaml, &no_env).map_err(|e| e.to_string())?;
    let resolved = config.resolve(&no_env).map_err(|e| e.to_string())?;
    let settings = Settings {
        exporters: vec![ExporterEntry {
            name: "datadog_demo".to_owned(),
            resolved,
        }],
        disabled: Vec::new(),
        file: ForwarderConfig::default(),
        source: "demo".to_owned(),
    };
    let forwarder = Forwarder::start(
        &settings,
        Keys::Static(KeyHolder::from_static(SecretString::from(key))),
        None,
    )
    .await?;
    let mut sent = 0u64;
    let mut shift = None;
    for record in NdjsonReader::new(SAMPLES.as_bytes()) {
        match record {
            Ok(NdjsonRecord::Event(e)) => {
                // The samples happen now, as a live agent's would (Datadog indexes events by
                // their time, and the bundled ones were recorded long ago): all moved by the
                // same amount, so their spacing stays.
                let mut event = e.event;
                let shift = *shift.get_or_insert_with(|| {
                    clawdstrike_schema::Timestamp::now().unix_millis()
                        - event.timestamp.unix_millis()
                });
                event.timestamp = shifted(event.timestamp, shift);
                event.ingested_at = event.ingested_at.map(|t| shifted(t, shift));
                forwarder
                    .sink
                    .submit(Record::new(event), None)
                    .await
                    .map_err(|e| format!("{e:?}"))?;
                sent += 1;
            }
            Ok(NdjsonRecord::Rejected(bad)) => {
                return Err(format!(
                    "bundled sample line {} is invalid: {}",
                    bad.line, bad.error
                ));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    println!(
        "shipped {sent} sample events through the pipeline; shutting down (final flush of logs and metrics)"
    );
    let outcome = forwarder.shutdown(Duration::from_secs(10)).await;
    let _ = intake.wait_for_items(sent, Duration::from_secs(10)).await;
    let items = intake.log_items();

    println!();
    println!("== What Datadog received ==");
    println!(
        "log items: {} ({} unique event ids, {} duplicates)",
        items.len(),
        intake.unique_event_ids(),
        intake.duplicates().len()
    );
    let mut by_status: BTreeMap<String, u64> = BTreeMap::new();
    let mut by_guard: BTreeMap<String, u64> = BTreeMap::new();
    for item in &items {
        let v = &item.value;
        *by_status
            .entry(v["status"].as_str().unwrap_or("?").to_owned())
            .or_default() += 1;
        let guard = v
            .pointer("/security/guard")
            .and_then(|g| g.as_str())
            .unwrap_or("?");
        *by_guard.entry(guard.to_owned()).or_default() += 1;
    }
    println!();
    println!("by status:");
    for (status, n) in &by_status {
        println!("  {status:<10} {n}");
    }
    println!();
    println!("by guard:");
    for (guard, n) in &by_guard {
        println!("  {guard:<24} {n}");
    }
    if let Some(first) = items.first() {
        println!();
        println!("one log item in full:");
        println!(
            "{}",
            serde_json::to_string_pretty(&first.value).unwrap_or_default()
        );
    }
    println!();
    let all = intake.series();
    let mut by_name: BTreeMap<&str, Vec<(f64, String)>> = BTreeMap::new();
    for s in &all {
        let value: f64 = s.points.iter().map(|p| p.value).sum();
        by_name
            .entry(s.metric.as_str())
            .or_default()
            .push((value, s.tags.join(",")));
    }
    println!("metric series ({} received; name, value, tags):", all.len());
    if by_name.is_empty() {
        println!("  (none received)");
    }
    for (metric, series) in &by_name {
        if series.len() <= 2 {
            for (value, tags) in series {
                println!("  {metric} {value} [{tags}]");
            }
        } else {
            let total: f64 = series.iter().map(|(v, _)| v).sum();
            println!(
                "  {metric} {total} in {} series, e.g. {} [{}]",
                series.len(),
                series[0].0,
                series[0].1
            );
        }
    }
    println!();
    outcome.print();
    intake.shutdown().await;
    if outcome.undelivered() > 0 || items.len() as u64 != sent {
        return Err(format!("only {} of {sent} events arrived", items.len()));
    }
    println!("demo: OK — {sent} events delivered, no Datadog account needed.");
    Ok(())
}

/// `t` moved by `millis`.
fn shifted(t: clawdstrike_schema::Timestamp, millis: i64) -> clawdstrike_schema::Timestamp {
    let at = t.unix_millis() + millis;
    clawdstrike_schema::Timestamp::from_unix(
        at.div_euclid(1000),
        u32::try_from(at.rem_euclid(1000) * 1_000_000).unwrap_or(0),
    )
    .unwrap_or(t)
}
