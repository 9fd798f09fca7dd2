//! The pipeline's central promise, as a property: under random exporter behaviour (success,
//! retryable and permanent failures, partial and short batches, slow and stuck calls,
//! retry-after hints) and random queue policies, every submitted event is accounted for exactly
//! once per exporter: delivered, dead-lettered, dropped by policy, filtered, or left behind at
//! the shutdown deadline, and the shutdown report's numbers match.

#![cfg(feature = "testing")]

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clawdstrike_export::testing::{ScriptedExporter, Step};
use clawdstrike_export::{
    DeadLetter, ExporterConfig, Failure, FilterConfig, Pipeline, Record, SettleHook, Settlement,
    WhenFull,
};
use clawdstrike_schema::{SecurityEvent, Severity, Uuid};
use proptest::prelude::*;
use proptest::test_runner::TestRunner;

fn failure() -> impl Strategy<Value = Failure> {
    prop_oneof![
        Just(Failure::retryable("HTTP 503")),
        (1u64..800).prop_map(|ms| Failure::Retryable {
            reason: "HTTP 429".into(),
            retry_after: Some(Duration::from_millis(ms)),
        }),
        Just(Failure::permanent("HTTP 400")),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    let base = prop_oneof![
        4 => Just(Step::Succeed),
        2 => failure().prop_map(Step::FailAll),
        3 => proptest::collection::vec(proptest::option::weighted(0.4, failure()), 0..12).prop_map(Step::Outcomes),
        1 => (0usize..6).prop_map(Step::Short),
    ];
    prop_oneof![
        8 => base.clone(),
        2 => (1u64..300, base).prop_map(|(ms, s)| Step::Delay(Duration::from_millis(ms), Box::new(s))),
        1 => Just(Step::HangForever),
    ]
}

fn when_full() -> impl Strategy<Value = WhenFull> {
    prop_oneof![
        Just(WhenFull::Block),
        Just(WhenFull::DropNewest),
        Just(WhenFull::DropOldest)
    ]
}

#[derive(Debug, Clone)]
struct Case {
    events: u64,
    template: SecurityEvent,
    script: Vec<Step>,
    permanent_every: Option<u64>,
    capacity: usize,
    when_full: WhenFull,
    max_events: usize,
    concurrency: usize,
    max_attempts: u32,
    // The second, healthy exporter of the fan-out.
    second_when_full: WhenFull,
    second_min_severity: Option<Severity>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        (
            1u64..150,
            clawdstrike_schema::strategies::security_event(),
            proptest::collection::vec(step(), 0..14),
        ),
        proptest::option::of(2u64..9),
        (1usize..40, when_full(), 1usize..12, 1usize..4, 1u32..5),
        (
            when_full(),
            proptest::option::of(clawdstrike_schema::strategies::severity()),
        ),
    )
        .prop_map(
            |(
                (events, template, script),
                permanent_every,
                (capacity, when_full, max_events, concurrency, max_attempts),
                (second_when_full, second_min_severity),
            )| Case {
                events,
                template,
                script,
                permanent_every,
                capacity,
                when_full,
                max_events,
                concurrency,
                max_attempts,
                second_when_full,
                second_min_severity,
            },
        )
}

#[derive(Debug, Default)]
struct Settled(Mutex<Vec<(usize, u64, Settlement)>>);

impl SettleHook for Settled {
    fn settled(&self, exporter: usize, _name: &str, seqs: &[u64], how: Settlement) {
        self.0
            .lock()
            .expect("lock")
            .extend(seqs.iter().map(|&s| (exporter, s, how)));
    }
}

fn seq_of(id: Uuid) -> u64 {
    u64::try_from(id.as_u128() - 1).expect("small id")
}

fn run(case: &Case) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let dlq = dir.path().join("dlq.jsonl");
    let mut scripted = ScriptedExporter::new("scripted").with_script(case.script.clone());
    if let Some(k) = case.permanent_every {
        scripted = scripted.with_per_event(move |record, seen| {
            (seen == 0 && (record.event.event_id.as_u128() as u64).is_multiple_of(k))
                .then(|| Failure::permanent("poison event"))
        });
    }
    let scripted = Arc::new(scripted);
    let healthy = Arc::new(ScriptedExporter::new("healthy"));
    let settled = Arc::new(Settled::default());
    let has_hang = case.script.iter().any(|s| matches!(s, Step::HangForever));

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    let (ok, reports) = runtime.block_on(async {
        let config = ExporterConfig::default()
            .with_queue_capacity(case.capacity)
            .with_when_full(case.when_full)
            .with_max_batch_events(case.max_events)
            .with_flush_interval(Duration::from_millis(50))
            .with_concurrency(case.concurrency)
            .with_initial_backoff(Duration::from_millis(20))
            .with_max_backoff(Duration::from_millis(200))
            .with_max_attempts(Some(case.max_attempts))
            .with_max_retry_after(Duration::from_millis(500))
            .with_dead_letter_path(&dlq);
        let filter = FilterConfig {
            min_severity: case.second_min_severity,
            ..FilterConfig::default()
        };
        let second = ExporterConfig::default()
            .with_queue_capacity(case.capacity)
            .with_when_full(case.second_when_full)
            .with_flush_interval(Duration::from_millis(50))
            .with_filter(filter);
        let pipeline = Pipeline::builder()
            .with_exporter(scripted.clone(), config)
            .with_exporter(healthy.clone(), second)
            .with_settle_hook(settled.clone())
            .build()
            .expect("valid pipeline");
        let producer = {
            let pipeline = pipeline.clone();
            let template = case.template.clone();
            let events = case.events;
            tokio::spawn(async move {
                let mut ok = Vec::new();
                for seq in 0..events {
                    let mut event = template.clone();
                    event.event_id = Uuid::from_u128(u128::from(seq) + 1);
                    event.decision.severity = Severity::ALL[(seq % 5) as usize];
                    if pipeline
                        .submit_with_seq(Record::new(event), seq)
                        .await
                        .is_ok()
                    {
                        ok.push(seq);
                    }
                    if seq % 7 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
                ok
            })
        };
        // Give the producer time to finish (a stuck `block` exporter may hold it forever; then
        // shutdown releases it with `Closed`).
        let mut producer = producer;
        let ok = match tokio::time::timeout(Duration::from_secs(30), &mut producer).await {
            Ok(ok) => Some(ok.expect("producer")),
            Err(_) => None,
        };
        let reports = pipeline.shutdown(Duration::from_secs(60)).await;
        let ok = match ok {
            Some(ok) => ok,
            None => producer.await.expect("producer"),
        };
        (ok, reports)
    });

    let ok: HashSet<u64> = ok.into_iter().collect();
    let settled = settled.0.lock().expect("lock").clone();
    for (index, report) in reports.iter().enumerate() {
        let mut by_seq: HashMap<u64, Settlement> = HashMap::new();
        for &(e, seq, how) in settled.iter().filter(|(e, _, _)| *e == index) {
            prop_assert!(
                ok.contains(&seq),
                "exporter {e} settled seq {seq} that was never accepted"
            );
            prop_assert!(
                by_seq.insert(seq, how).is_none(),
                "exporter {e} settled seq {seq} twice"
            );
        }
        let count =
            |pred: &dyn Fn(&Settlement) -> bool| by_seq.values().filter(|h| pred(h)).count() as u64;
        let delivered = count(&|h| *h == Settlement::Delivered);
        let dead = count(&|h| *h == Settlement::DeadLettered);
        let filtered = count(&|h| *h == Settlement::Filtered);
        let dropped = count(&|h| matches!(h, Settlement::Dropped(_)));
        let left_behind = ok.len() as u64 - by_seq.len() as u64;

        let exporter = if index == 0 { &scripted } else { &healthy };
        let exported = exporter.exported_ids();
        let exported_set: HashSet<u64> = exported.iter().map(|&id| seq_of(id)).collect();
        prop_assert_eq!(
            exported_set.len(),
            exported.len(),
            "an event was delivered twice"
        );
        let delivered_set: HashSet<u64> = by_seq
            .iter()
            .filter(|(_, h)| **h == Settlement::Delivered)
            .map(|(s, _)| *s)
            .collect();
        prop_assert_eq!(&exported_set, &delivered_set);

        prop_assert_eq!(report.submitted, ok.len() as u64);
        prop_assert_eq!(report.delivered, delivered);
        prop_assert_eq!(report.dead_lettered, dead);
        prop_assert_eq!(report.filtered, filtered);
        prop_assert_eq!(
            report.dropped.queue_full_newest + report.dropped.queue_full_oldest,
            dropped
        );
        prop_assert_eq!(report.left_behind, left_behind);
        prop_assert_eq!(
            report.submitted,
            report.filtered + report.delivered + report.dead_lettered + report.dropped.total()
        );
        prop_assert_eq!(report.dead_letter_write_failed, 0);
        if index == 0 {
            // The dead-letter file holds exactly the dead-lettered events, once each.
            let text = std::fs::read_to_string(&dlq).unwrap_or_default();
            let lines: Vec<DeadLetter> = text
                .lines()
                .map(|l| serde_json::from_str(l).expect("dead-letter JSON"))
                .collect();
            let in_file: HashSet<u64> = lines.iter().map(|d| seq_of(d.event.event_id)).collect();
            prop_assert_eq!(
                in_file.len(),
                lines.len(),
                "an event was dead-lettered twice"
            );
            let dead_set: HashSet<u64> = by_seq
                .iter()
                .filter(|(_, h)| **h == Settlement::DeadLettered)
                .map(|(s, _)| *s)
                .collect();
            prop_assert_eq!(&in_file, &dead_set);
            prop_assert!(exported_set.is_disjoint(&in_file));
            if !has_hang {
                // Nothing can be stuck: a 60 s deadline outlasts every retry budget here.
                prop_assert_eq!(report.left_behind, 0);
            }
        } else {
            // The healthy exporter never fails: whatever its filter and queue let through arrives.
            prop_assert_eq!(report.dead_lettered, 0);
            if !has_hang {
                prop_assert_eq!(report.left_behind, 0);
            }
        }
    }
    Ok(())
}

#[test]
fn every_event_is_accounted_for_exactly_once() {
    // The event strategy and the pipeline futures are deep in debug builds: give them room.
    let outcome = std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(|| {
            let config = ProptestConfig {
                cases: 256,
                failure_persistence: None,
                ..ProptestConfig::default()
            };
            TestRunner::new(config)
                .run(&case(), |case| run(&case))
                .map_err(|e| e.to_string())
        })
        .expect("spawn")
        .join()
        .expect("the property test thread panicked");
    if let Err(failure) = outcome {
        panic!("{failure}");
    }
}

/// The same accounting on a multi-threaded runtime with real time and concurrent producers,
/// where the paused single-threaded runs above cannot show races.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounting_holds_with_concurrent_producers_on_real_threads() {
    const PRODUCERS: u64 = 4;
    const PER_PRODUCER: u64 = 5_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let dlq = dir.path().join("dlq.jsonl");
    let flaky = Arc::new(
        ScriptedExporter::new("flaky").with_per_event(|record, seen| {
            let n = record.event.event_id.as_u128();
            match (n % 10, seen) {
                (0, _) => Some(Failure::permanent("poison")),
                (1..=3, 0) => Some(Failure::retryable("HTTP 503")),
                (4, 0 | 1) => Some(Failure::Retryable {
                    reason: "HTTP 429".into(),
                    retry_after: Some(Duration::from_millis(1)),
                }),
                _ => None,
            }
        }),
    );
    let dropping = Arc::new(ScriptedExporter::new("dropping"));
    let settled = Arc::new(Settled::default());
    let pipeline = Pipeline::builder()
        .with_exporter(
            flaky.clone(),
            ExporterConfig::default()
                .with_queue_capacity(500)
                .with_max_batch_events(100)
                .with_flush_interval(Duration::from_millis(5))
                .with_initial_backoff(Duration::from_millis(1))
                .with_max_backoff(Duration::from_millis(5))
                .with_dead_letter_path(&dlq),
        )
        .with_exporter(
            dropping.clone(),
            ExporterConfig::default()
                .with_queue_capacity(50)
                .with_when_full(WhenFull::DropOldest)
                .with_max_batch_events(10)
                .with_flush_interval(Duration::from_millis(5)),
        )
        .with_settle_hook(settled.clone())
        .build()
        .expect("valid");
    let template = SecurityEvent::builder(clawdstrike_schema::EventType::ForbiddenPath)
        .agent_id("a")
        .session_id("s")
        .action("file_access")
        .denied("forbidden_path", Severity::High, "r")
        .resource(clawdstrike_schema::ResourceType::File, "/x")
        .build()
        .expect("valid event");
    let mut producers = Vec::new();
    for p in 0..PRODUCERS {
        let pipeline = pipeline.clone();
        let template = template.clone();
        producers.push(tokio::spawn(async move {
            for i in 0..PER_PRODUCER {
                let seq = p * PER_PRODUCER + i;
                let mut event = template.clone();
                event.event_id = Uuid::from_u128(u128::from(seq) + 1);
                pipeline
                    .submit_with_seq(Record::new(event), seq)
                    .await
                    .expect("open");
            }
        }));
    }
    for producer in producers {
        producer.await.expect("producer");
    }
    let reports = pipeline.shutdown(Duration::from_secs(30)).await;
    let total = PRODUCERS * PER_PRODUCER;
    let flaky_report = &reports[0];
    assert!(!flaky_report.deadline_reached);
    assert_eq!(flaky_report.submitted, total);
    assert_eq!(flaky_report.dead_lettered, total / 10);
    assert_eq!(flaky_report.delivered, total - total / 10);
    let exported = flaky.exported_ids();
    assert_eq!(
        exported.iter().collect::<HashSet<_>>().len(),
        exported.len(),
        "duplicate delivery"
    );
    assert_eq!(exported.len() as u64, flaky_report.delivered);
    let lines = std::fs::read_to_string(&dlq)
        .expect("dead letters")
        .lines()
        .count() as u64;
    assert_eq!(lines, total / 10);
    let r = &reports[1];
    assert_eq!(r.submitted, total);
    assert_eq!(r.delivered + r.dropped.queue_full_oldest, total);
    assert_eq!(r.left_behind, 0);
    assert_eq!(dropping.exported_count() as u64, r.delivered);
    // The settle hook saw each (exporter, seq) once.
    let settled = settled.0.lock().expect("lock");
    let unique: HashSet<(usize, u64)> = settled.iter().map(|&(e, s, _)| (e, s)).collect();
    assert_eq!(unique.len(), settled.len());
    assert_eq!(unique.len() as u64, 2 * total);
}
