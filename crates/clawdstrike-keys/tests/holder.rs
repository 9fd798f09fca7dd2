//! The key holder through its public API: single-flight, throttling, rotation without
//! restart, last good key on failure, subscribers and the scheduled refresher.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use clawdstrike_keys::{
    ApiKeyProvider, FileProvider, KeyError, KeyHolder, RefreshOptions, RefreshOutcome,
};
use secrecy::SecretString;

/// Counts fetches; returns `key`, or a transient error while `down`.
#[derive(Debug)]
struct Counting {
    key: Mutex<String>,
    down: AtomicBool,
    /// Fetches never answer (a store that vanished mid-connection).
    hang: AtomicBool,
    fetches: AtomicUsize,
}

impl Counting {
    fn new(key: &str) -> Arc<Counting> {
        Arc::new(Counting {
            key: Mutex::new(key.to_owned()),
            down: AtomicBool::new(false),
            hang: AtomicBool::new(false),
            fetches: AtomicUsize::new(0),
        })
    }
    fn rotate(&self, key: &str) {
        *self.key.lock().unwrap() = key.to_owned();
    }
    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl ApiKeyProvider for Counting {
    fn describe(&self) -> String {
        "counting test provider".to_owned()
    }
    async fn fetch(&self) -> Result<SecretString, KeyError> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        // Give concurrent callers time to pile up behind this fetch.
        tokio::task::yield_now().await;
        if self.hang.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        if self.down.load(Ordering::SeqCst) {
            return Err(KeyError::Unavailable {
                provider: self.describe(),
                detail: "connection refused".into(),
            });
        }
        Ok(SecretString::from(self.key.lock().unwrap().clone()))
    }
}

async fn hundred_rejections(holder: &KeyHolder, generation: u64) -> Vec<RefreshOutcome> {
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let holder = holder.clone();
            tokio::spawn(async move { holder.refresh_after_rejection(generation).await })
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap());
    }
    outcomes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hundred_concurrent_rejections_cause_one_fetch_and_the_rotation_is_visible() {
    let provider = Counting::new("old-key");
    let holder = KeyHolder::new(
        provider.clone(),
        RefreshOptions::default().with_min_interval(Duration::ZERO),
    )
    .await
    .unwrap();
    assert_eq!(provider.fetches(), 1, "the initial fetch");
    let rejected = holder.current();
    assert_eq!(rejected.expose(), "old-key");

    provider.rotate("new-key");
    let outcomes = hundred_rejections(&holder, rejected.generation()).await;

    assert_eq!(
        provider.fetches(),
        2,
        "100 rejections must cause exactly one fetch"
    );
    for outcome in &outcomes {
        assert_eq!(*outcome, RefreshOutcome::Changed { generation: 2 });
    }
    // The next request sees the new key, no restart.
    let next = holder.current();
    assert_eq!(next.expose(), "new-key");
    assert_eq!(next.generation(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hundred_rejections_of_a_revoked_unchanged_key_fetch_once_and_say_unchanged() {
    let provider = Counting::new("revoked-key");
    let holder = KeyHolder::new(provider.clone(), RefreshOptions::default())
        .await
        .unwrap();
    let outcomes = hundred_rejections(&holder, 1).await;
    assert_eq!(provider.fetches(), 2);
    assert!(
        outcomes.iter().all(|o| *o == RefreshOutcome::Unchanged),
        "{outcomes:?}"
    );
    assert_eq!(holder.current().generation(), 1);
}

#[tokio::test(start_paused = true)]
async fn rejection_fetches_are_throttled_to_one_per_min_interval() {
    let provider = Counting::new("k1");
    let options = RefreshOptions::default().with_min_interval(Duration::from_secs(30));
    let holder = KeyHolder::new(provider.clone(), options).await.unwrap();

    provider.rotate("k2");
    assert_eq!(
        holder.refresh_after_rejection(1).await,
        RefreshOutcome::Changed { generation: 2 }
    );
    // The new key is rejected too, right away: no second fetch within 30 s.
    provider.rotate("k3");
    assert_eq!(
        holder.refresh_after_rejection(2).await,
        RefreshOutcome::Throttled
    );
    assert_eq!(provider.fetches(), 2);
    assert_eq!(holder.current().expose(), "k2");

    tokio::time::advance(Duration::from_secs(30)).await;
    assert_eq!(
        holder.refresh_after_rejection(2).await,
        RefreshOutcome::Changed { generation: 3 }
    );
    assert_eq!(provider.fetches(), 3);
}

#[tokio::test]
async fn a_failed_refresh_keeps_the_last_good_key() {
    let provider = Counting::new("last-good");
    let holder = KeyHolder::new(provider.clone(), RefreshOptions::default())
        .await
        .unwrap();
    provider.down.store(true, Ordering::SeqCst);
    provider.rotate("never-seen");

    match holder.refresh_after_rejection(1).await {
        RefreshOutcome::Failed(err) => {
            assert!(err.is_transient(), "{err}");
            assert!(err.to_string().contains("counting test provider"), "{err}");
        }
        other => panic!("expected Failed, got {other:?}"),
    }
    assert!(matches!(
        holder.refresh_now().await,
        RefreshOutcome::Failed(_)
    ));
    assert_eq!(holder.current().expose(), "last-good");
    assert_eq!(holder.current().generation(), 1);

    provider.down.store(false, Ordering::SeqCst);
    assert_eq!(
        holder.refresh_now().await,
        RefreshOutcome::Changed { generation: 2 }
    );
    assert_eq!(holder.current().expose(), "never-seen");
}

/// Fetches are serialised, so one that never answers would hold up every later refresh and
/// every request waiting on a re-read after a rejection. Each fails at the fetch timeout
/// instead, as transient, and the last good key stays.
#[tokio::test(start_paused = true)]
async fn a_fetch_that_never_answers_fails_at_the_timeout_and_keeps_the_key() {
    let provider = Counting::new("last-good");
    let options = RefreshOptions::default().with_fetch_timeout(Duration::from_secs(30));
    let holder = KeyHolder::new(provider.clone(), options).await.unwrap();
    provider.hang.store(true, Ordering::SeqCst);
    let started = tokio::time::Instant::now();
    let (first, rejected) = tokio::join!(holder.refresh_now(), holder.refresh_after_rejection(1));
    for outcome in [first, rejected] {
        match outcome {
            RefreshOutcome::Failed(err) => {
                assert!(err.is_transient(), "{err}");
                assert!(
                    err.to_string().contains("no answer within 30000 ms"),
                    "{err}"
                );
            }
            other => panic!("expected Failed, got {other:?}"),
        }
    }
    // One after the other (the paused clock makes these exact virtual times).
    assert_eq!(started.elapsed(), Duration::from_secs(60));
    assert_eq!(holder.current().expose(), "last-good");
    // The first fetch is bounded too.
    let err = KeyHolder::new(provider, options_with_timeout(5))
        .await
        .unwrap_err();
    assert!(matches!(err, KeyError::Unavailable { .. }), "{err}");
}

fn options_with_timeout(secs: u64) -> RefreshOptions {
    RefreshOptions::default().with_fetch_timeout(Duration::from_secs(secs))
}

#[tokio::test]
async fn the_first_fetch_error_is_returned_by_new() {
    let provider = Counting::new("x");
    provider.down.store(true, Ordering::SeqCst);
    let err = KeyHolder::new(provider, RefreshOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, KeyError::Unavailable { .. }), "{err}");
}

#[tokio::test]
async fn subscribers_learn_of_a_new_key() {
    let provider = Counting::new("a");
    let holder = KeyHolder::new(provider.clone(), RefreshOptions::default())
        .await
        .unwrap();
    let mut generations = holder.subscribe();
    assert_eq!(*generations.borrow_and_update(), 1);

    assert_eq!(holder.refresh_now().await, RefreshOutcome::Unchanged);
    assert!(
        !generations.has_changed().unwrap(),
        "no change, no notification"
    );

    provider.rotate("b");
    holder.refresh_now().await;
    tokio::time::timeout(Duration::from_secs(5), generations.changed())
        .await
        .expect("notified")
        .unwrap();
    assert_eq!(*generations.borrow_and_update(), 2);
}

#[tokio::test(start_paused = true)]
async fn the_scheduled_refresher_waits_a_random_first_delay_then_every_interval() {
    let provider = Counting::new("s1");
    let options = RefreshOptions::default()
        .with_interval(Duration::from_secs(60))
        .with_first_delay_max(Duration::from_secs(10));
    let holder = KeyHolder::new(provider.clone(), options).await.unwrap();
    let refresher = holder.spawn_refresher();
    let generations = holder.subscribe();

    provider.rotate("s2");
    // Within the first-delay bound the refresher has fetched once.
    tokio::time::sleep(Duration::from_secs(10) + Duration::from_millis(1)).await;
    assert_eq!(provider.fetches(), 2);
    assert!(generations.has_changed().unwrap());
    assert_eq!(holder.current().expose(), "s2");

    // Then once per interval.
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(provider.fetches(), 3);

    // Dropping the handle stops it.
    drop(refresher);
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(provider.fetches(), 3);
}

#[tokio::test(start_paused = true)]
async fn first_delays_are_spread_across_a_fleet() {
    // 20 holders started together must not all refresh at the same instant.
    let options = RefreshOptions::default()
        .with_interval(Duration::from_secs(3600))
        .with_first_delay_max(Duration::from_secs(1000));
    let mut fleet = Vec::new();
    for _ in 0..20 {
        let provider = Counting::new("fleet");
        let holder = KeyHolder::new(provider.clone(), options.clone())
            .await
            .unwrap();
        let handle = holder.spawn_refresher();
        fleet.push((provider, holder, handle));
    }
    let mut first_refresh: Vec<Option<u64>> = vec![None; fleet.len()];
    for second in 0..=1001 {
        for (i, (provider, _, _)) in fleet.iter().enumerate() {
            if provider.fetches() >= 2 && first_refresh[i].is_none() {
                first_refresh[i] = Some(second);
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // Everyone refreshed within the bound, exactly once (the interval is an hour)...
    assert!(
        first_refresh.iter().all(Option::is_some),
        "{first_refresh:?}"
    );
    assert!(fleet.iter().all(|(p, _, _)| p.fetches() == 2));
    // ...and not all at the same moment.
    let distinct: std::collections::BTreeSet<_> = first_refresh.iter().flatten().collect();
    assert!(
        distinct.len() > 1,
        "all 20 refreshed at the same second: {first_refresh:?}"
    );
}

#[tokio::test]
async fn rotation_of_a_file_is_picked_up_by_the_refresher() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("api-key");
    std::fs::write(&path, "file-key-1\n").unwrap();
    let options = RefreshOptions::default()
        .with_interval(Duration::from_millis(20))
        .with_first_delay_max(Duration::from_millis(20));
    let holder = KeyHolder::new(Arc::new(FileProvider::new(&path)), options)
        .await
        .unwrap();
    let _refresher = holder.spawn_refresher();
    let mut generations = holder.subscribe();

    let tmp = dir.path().join(".api-key.tmp");
    std::fs::write(&tmp, "file-key-2\n").unwrap();
    std::fs::rename(&tmp, &path).unwrap();

    tokio::time::timeout(Duration::from_secs(10), generations.changed())
        .await
        .expect("the refresher publishes the rotated key")
        .unwrap();
    assert_eq!(holder.current().expose(), "file-key-2");
}
