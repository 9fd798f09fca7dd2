//! Soak test 2 of issue 9: the forwarder with the disk buffer, killed with SIGKILL at seeded
//! random moments while a producer posts events over HTTP and Datadog answers 503 to a share
//! of requests, restarted each time: every event acknowledged to its producer (HTTP 202)
//! before a kill is delivered. Duplicates (replays of events delivered just before a kill)
//! are counted, printed and bounded.
//!
//! `SOAK_KILLS` (default 5) and `SOAK_SEED` (default 7) size and seed the run.

use std::collections::BTreeSet;
use std::time::Duration;

use clawdstrike_e2e::{Running, config_yaml, dd_command, fixture};
use clawdstrike_fakeintake::{Endpoint, FakeIntake, FaultAction, RandomFaults};

const KEY: &str = "soakKillKey00000000000000000000001";
const WAIT: Duration = Duration::from_secs(30);

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A tiny seeded generator (xorshift64*), so a failing schedule can be replayed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_event_survives_repeated_sigkills() {
    let kills = env_u64("SOAK_KILLS", 5);
    let seed = env_u64("SOAK_SEED", 7);
    let mut rng = Rng(seed.max(1));
    let intake = FakeIntake::start(KEY, "soakAppKey").await.unwrap();
    // Datadog misbehaves too, so the buffer holds a backlog at every kill.
    intake.set_random_faults(Some(
        RandomFaults::new(seed)
            .on(Endpoint::Logs)
            .with(0.3, FaultAction::status(503)),
    ));
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "buffer: {{ type: disk, path: {} }}\nshutdown_timeout_ms: 2000\ninput: {{ http: {{ listen: 127.0.0.1:0 }} }}\n",
        dir.path().join("buffer").display()
    );
    let config = dir.path().join("clawdstrike-dd.yaml");
    std::fs::write(&config, config_yaml(&intake.base_url(), "", &extra)).unwrap();

    let templates: Vec<serde_json::Value> = std::fs::read_to_string(fixture("events.ndjson"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut next_id: u128 = 0;
    let mut make_body = |ids: &mut Vec<String>| {
        let mut body = String::new();
        for _ in 0..10 {
            let mut event = templates[(next_id % templates.len() as u128) as usize].clone();
            let id = format!(
                "{:032x}",
                0x0194_0000_0000_7000_8000_0000_0000_0000u128 | next_id
            );
            let id = format!(
                "{}-{}-{}-{}-{}",
                &id[..8],
                &id[8..12],
                &id[12..16],
                &id[16..20],
                &id[20..]
            );
            event["event_id"] = serde_json::Value::String(id.clone());
            ids.push(id);
            body.push_str(&event.to_string());
            body.push('\n');
            next_id += 1;
        }
        body
    };

    let client = reqwest::Client::new();
    let mut acknowledged = BTreeSet::new();
    let mut refused = 0u64;
    for round in 0..=kills {
        let mut cmd = dd_command(dir.path());
        cmd.env("DD_API_KEY", KEY)
            .arg("ship")
            .arg("--config")
            .arg(&config);
        let mut run = Running::spawn(cmd);
        let line = run.wait_for_line("listening on http://", WAIT);
        let url = format!("http://{}/", line.rsplit("http://").next().unwrap().trim());
        let posts = 5 + rng.below(40);
        for _ in 0..posts {
            let mut ids = Vec::new();
            let body = make_body(&mut ids);
            let response = client
                .post(&url)
                .header("content-type", "application/x-ndjson")
                .body(body)
                .send()
                .await
                .unwrap();
            match response.status().as_u16() {
                202 => acknowledged.extend(ids),
                503 => refused += 1,
                other => panic!(
                    "unexpected HTTP {other}: {}",
                    response.text().await.unwrap_or_default()
                ),
            }
        }
        if round < kills {
            // Kill at a random moment: sometimes right away, sometimes after deliveries began.
            if rng.below(2) == 1 {
                let _ = intake
                    .wait_for_requests(1 + rng.below(5), Duration::from_secs(5))
                    .await;
            }
            run.signal("KILL");
            run.wait(WAIT);
        } else {
            // The last run drains: everything acknowledged arrives, then SIGTERM.
            intake.set_random_faults(None);
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            while acknowledged
                .iter()
                .any(|id| !intake.event_id_counts().contains_key(id))
            {
                assert!(
                    std::time::Instant::now() < deadline,
                    "acknowledged events never arrived"
                );
                let _ = intake
                    .wait_for_items(intake.total_items() + 1, Duration::from_millis(500))
                    .await;
            }
            run.signal("TERM");
            run.wait(WAIT);
        }
    }
    let counts = intake.event_id_counts();
    let missing: Vec<_> = acknowledged
        .iter()
        .filter(|id| !counts.contains_key(*id))
        .collect();
    let duplicates: u64 = counts.values().map(|c| u64::from(c - 1)).sum();
    println!(
        "soak_sigkill: seed {seed}, {kills} kills, {} acknowledged, {refused} posts refused (503), {} delivered ids, {duplicates} duplicates, {} missing",
        acknowledged.len(),
        counts.len(),
        missing.len()
    );
    assert!(
        missing.is_empty(),
        "acknowledged but never delivered: {missing:?}"
    );
    // A replay re-sends at most what the buffer held unacknowledged at each kill.
    assert!(
        duplicates <= acknowledged.len() as u64 * kills,
        "{duplicates} duplicates"
    );
    intake.shutdown().await;
}
