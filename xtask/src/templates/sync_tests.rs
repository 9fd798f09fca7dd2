//! `publish`, `diff` and `pull` end to end against the fake intake, started in-process.

use std::path::PathBuf;

use clawdstrike_datadog::config_api::ConfigClient;
use clawdstrike_fakeintake::{Endpoint, FakeIntake, FaultAction, ObjectKind};
use secrecy::SecretString;
use serde_json::{Value, json};

use super::sync::{self, Outcome, RemoteArgs};

const API_KEY: &str = "e2e-api-key";
const APP_KEY: &str = "e2e-app-key";

fn templates() -> PathBuf {
    crate::project_root().join("templates")
}

async fn start() -> (FakeIntake, ConfigClient) {
    let intake = FakeIntake::start(API_KEY, APP_KEY)
        .await
        .expect("the fake intake starts");
    let client = ConfigClient::new(
        intake.base_url(),
        SecretString::from(API_KEY),
        SecretString::from(APP_KEY),
    )
    .unwrap();
    (intake, client)
}

async fn run_publish(client: &ConfigClient, env: &str, apply: bool) -> (Outcome, String) {
    run_publish_in(client, &templates(), env, apply).await
}

async fn run_publish_in(
    client: &ConfigClient,
    dir: &std::path::Path,
    env: &str,
    apply: bool,
) -> (Outcome, String) {
    let mut out = Vec::new();
    let outcome = sync::publish(client, dir, env, apply, false, &mut out)
        .await
        .expect("publish runs");
    (outcome, String::from_utf8(out).unwrap())
}

async fn run_diff(client: &ConfigClient, env: &str) -> (Outcome, String) {
    let mut out = Vec::new();
    let outcome = sync::diff(client, &templates(), env, &mut out)
        .await
        .expect("diff runs");
    (outcome, String::from_utf8(out).unwrap())
}

fn counts(intake: &FakeIntake) -> [usize; 3] {
    [
        ObjectKind::Dashboard,
        ObjectKind::Monitor,
        ObjectKind::SecurityRule,
    ]
    .map(|k| intake.objects(k).len())
}

fn monitor_id(intake: &FakeIntake, template_id: &str) -> String {
    let tag = format!("template_id:{template_id}");
    let monitor = intake
        .objects(ObjectKind::Monitor)
        .into_iter()
        .find(|m| {
            m["tags"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t == tag.as_str())
        })
        .expect("the monitor exists");
    monitor["id"].to_string()
}

#[tokio::test]
async fn publish_twice_creates_once_then_diff_detects_drift_and_pull_exports_it() {
    let (intake, client) = start().await;

    // A dry run validates and plans, and changes nothing.
    let (outcome, out) = run_publish(&client, "production", false).await;
    assert_eq!(outcome, Outcome::Dirty, "{out}");
    assert!(
        out.contains("plan: 16 to create, 0 to update, 0 unchanged, 0 orphaned, 0 invalid"),
        "{out}"
    );
    assert!(
        out.contains("validated monitor monitors/high-denial-rate"),
        "{out}"
    );
    assert!(
        out.contains("validated rule rules/new-egress-destination"),
        "{out}"
    );
    assert_eq!(counts(&intake), [0, 0, 0]);

    // --apply creates every object once.
    let (outcome, out) = run_publish(&client, "production", true).await;
    assert_eq!(outcome, Outcome::Clean, "{out}");
    assert!(out.contains("[16/16] created"), "{out}");
    assert_eq!(counts(&intake), [3, 8, 5]);

    // Again: nothing new, nothing changed.
    let (outcome, out) = run_publish(&client, "production", true).await;
    assert_eq!(outcome, Outcome::Clean, "{out}");
    assert!(
        out.contains("plan: 0 to create, 0 to update, 16 unchanged, 0 orphaned, 0 invalid"),
        "{out}"
    );
    assert_eq!(counts(&intake), [3, 8, 5]);

    // What Datadog holds is the rendered template with its identity.
    let id = monitor_id(&intake, "monitors/high-denial-rate");
    let stored = intake.object(ObjectKind::Monitor, &id).unwrap();
    assert_eq!(
        stored["query"],
        "sum(last_10m):sum:clawdstrike.events.denied{env:production} by {guard}.as_count() > 100"
    );
    for tag in [
        "managed_by:clawdstrike-templates",
        "template_id:monitors/high-denial-rate",
        "template_env:production",
        "team:security",
    ] {
        assert!(
            stored["tags"].as_array().unwrap().iter().any(|t| t == tag),
            "{tag} missing from {}",
            stored["tags"]
        );
    }
    let dashboard = intake
        .objects(ObjectKind::Dashboard)
        .into_iter()
        .find(|d| d["title"] == "Clawdstrike security posture (production)")
        .unwrap();
    let description = dashboard["description"].as_str().unwrap();
    let (marker, hash) = description.rsplit_once(" hash=").unwrap();
    assert!(
        marker.ends_with(
            "[clawdstrike-templates] template_id=dashboards/security-posture env=production"
        ),
        "{description}"
    );
    assert!(
        hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()),
        "{description}"
    );

    // No drift.
    let (outcome, out) = run_diff(&client, "production").await;
    assert_eq!(outcome, Outcome::Clean, "{out}");
    assert!(out.contains("diff: no drift (16 objects in sync)"), "{out}");

    // Someone edits the monitor in Datadog: diff fails and says where.
    assert!(intake.modify_object(ObjectKind::Monitor, &id, |m| {
        m["options"]["thresholds"]["warning"] = json!(60);
        m["name"] = json!("edited by hand");
    }));
    let (outcome, out) = run_diff(&client, "production").await;
    assert_eq!(outcome, Outcome::Dirty, "{out}");
    assert!(
        out.contains(&format!(
            "~ update monitor monitors/high-denial-rate (id {id})"
        )),
        "{out}"
    );
    assert!(out.contains("/name: Datadog has \"edited by hand\", template has \"[Clawdstrike] High policy denial rate (production)\""), "{out}");
    assert!(
        out.contains("/options/thresholds/warning: Datadog has 60, template has 50"),
        "{out}"
    );
    assert!(
        out.contains(
            "diff: DRIFT: 0 missing in Datadog, 1 changed in Datadog, 0 orphaned (15 in sync)"
        ),
        "{out}"
    );

    // pull brings the edited object back into files, without Datadog's read-only fields,
    // in a form `check --structural` accepts.
    let backup = tempfile::tempdir().unwrap();
    let mut out = Vec::new();
    assert_eq!(
        sync::pull(&client, &templates(), "production", backup.path(), &mut out)
            .await
            .unwrap(),
        Outcome::Clean
    );
    let out = String::from_utf8(out).unwrap();
    assert!(out.contains("pull: 16 object(s) written"), "{out}");
    let pulled: Value = serde_json::from_str(
        &std::fs::read_to_string(backup.path().join("monitors/high-denial-rate.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(pulled["name"], "edited by hand");
    assert_eq!(pulled["options"]["thresholds"]["warning"], 60);
    assert!(pulled.get("id").is_none() && pulled.get("created").is_none());
    let files: Vec<PathBuf> = ["dashboards", "monitors", "rules"]
        .iter()
        .flat_map(|kind| {
            std::fs::read_dir(backup.path().join(kind))
                .unwrap()
                .map(|e| e.unwrap().path())
        })
        .collect();
    assert_eq!(files.len(), 16);
    let problems = super::check_structural(&files);
    assert!(problems.is_empty(), "{problems:#?}");

    // publish --apply puts the template back; diff is clean again; still one of each.
    let (outcome, out) = run_publish(&client, "production", true).await;
    assert_eq!(outcome, Outcome::Clean, "{out}");
    assert!(
        out.contains("plan: 0 to create, 1 to update, 15 unchanged"),
        "{out}"
    );
    assert_eq!(run_diff(&client, "production").await.0, Outcome::Clean);
    assert_eq!(counts(&intake), [3, 8, 5]);
    assert_eq!(
        intake.object(ObjectKind::Monitor, &id).unwrap()["options"]["thresholds"]["warning"],
        50
    );

    // A deleted object is drift too.
    assert!(intake.remove_object(ObjectKind::Monitor, &id));
    let (outcome, out) = run_diff(&client, "production").await;
    assert_eq!(outcome, Outcome::Dirty);
    assert!(
        out.contains("+ create monitor monitors/high-denial-rate"),
        "{out}"
    );

    intake.shutdown().await;
}

#[tokio::test]
async fn environments_are_separate_identities() {
    let (intake, client) = start().await;
    assert_eq!(
        run_publish(&client, "production", true).await.0,
        Outcome::Clean
    );
    assert_eq!(
        run_publish(&client, "staging", true).await.0,
        Outcome::Clean
    );
    assert_eq!(counts(&intake), [6, 16, 10]);
    assert_eq!(run_diff(&client, "production").await.0, Outcome::Clean);
    assert_eq!(run_diff(&client, "staging").await.0, Outcome::Clean);
    intake.shutdown().await;
}

/// A field removed from a template is drift: comparing fields finds only those the template
/// still sets, so `diff` said "in sync" and `publish` sent nothing while Datadog kept warning
/// at the removed threshold. The published content hash tells, and the update is sent.
#[tokio::test]
async fn a_field_removed_from_a_template_is_drift_and_is_published() {
    let (intake, client) = start().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("templates");
    super::tests::copy_dir(&templates(), &dir);
    assert_eq!(
        run_publish_in(&client, &dir, "production", true).await.0,
        Outcome::Clean
    );
    let file = dir.join("monitors/high-denial-rate.json");
    let mut monitor: Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let removed = monitor["options"]["thresholds"]
        .as_object_mut()
        .unwrap()
        .remove("warning");
    assert!(
        removed.is_some(),
        "the shipped template sets a warning threshold"
    );
    std::fs::write(&file, serde_json::to_string_pretty(&monitor).unwrap()).unwrap();

    let mut out = Vec::new();
    let outcome = sync::diff(&client, &dir, "production", &mut out)
        .await
        .unwrap();
    let out = String::from_utf8(out).unwrap();
    assert_eq!(outcome, Outcome::Dirty, "{out}");
    assert!(
        out.contains("~ update monitor monitors/high-denial-rate"),
        "{out}"
    );
    assert!(
        out.contains("the template changed since it was published"),
        "{out}"
    );

    let (outcome, out) = run_publish_in(&client, &dir, "production", true).await;
    assert_eq!(outcome, Outcome::Clean, "{out}");
    assert!(
        out.contains("0 to create, 1 to update, 15 unchanged"),
        "{out}"
    );
    let id = monitor_id(&intake, "monitors/high-denial-rate");
    let stored = intake.object(ObjectKind::Monitor, &id).unwrap();
    assert!(
        stored["options"]["thresholds"].get("warning").is_none(),
        "{}",
        stored["options"]["thresholds"]
    );
    let (outcome, out) = run_publish_in(&client, &dir, "production", true).await;
    assert!(
        out.contains("0 to update, 16 unchanged"),
        "{outcome:?} {out}"
    );
}

/// Templates made by `pull` publish back without perpetual drift: their identity (tags, the
/// dashboard marker) is not part of their content, so after the one update that takes in what
/// Datadog added, a publish changes nothing, and a dashboard keeps one marker line.
#[tokio::test]
async fn pulled_templates_publish_back_once_then_are_in_sync() {
    let (intake, client) = start().await;
    assert_eq!(
        run_publish(&client, "production", true).await.0,
        Outcome::Clean
    );
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("templates");
    super::tests::copy_dir(&templates(), &dir);
    for kind in ["dashboards", "monitors", "rules"] {
        std::fs::remove_dir_all(dir.join(kind)).unwrap();
    }
    let mut out = Vec::new();
    sync::pull(&client, &dir, "production", &dir, &mut out)
        .await
        .unwrap();
    // A dashboard owned by the values file's team keeps that tag (only monitors and rules get
    // the values file's tags added).
    let board = dir.join("dashboards/security-posture.json");
    let mut body: Value = serde_json::from_str(&std::fs::read_to_string(&board).unwrap()).unwrap();
    body["tags"] = json!(["team:security"]);
    std::fs::write(&board, serde_json::to_string_pretty(&body).unwrap()).unwrap();
    let (outcome, out) = run_publish_in(&client, &dir, "production", true).await;
    assert_eq!(outcome, Outcome::Clean, "{out}");
    let (outcome, out) = run_publish_in(&client, &dir, "production", true).await;
    assert_eq!(outcome, Outcome::Clean, "{out}");
    assert!(
        out.contains("0 to create, 0 to update, 16 unchanged"),
        "{out}"
    );
    let posture = intake
        .objects(ObjectKind::Dashboard)
        .into_iter()
        .find(|d| d["title"] == "Clawdstrike security posture (production)")
        .unwrap();
    assert_eq!(posture["tags"], json!(["team:security"]));
    for dashboard in intake.objects(ObjectKind::Dashboard) {
        let description = dashboard["description"].as_str().unwrap();
        assert_eq!(
            description.matches("[clawdstrike-templates]").count(),
            1,
            "{description}"
        );
    }
}

/// `--env` may name the values file (`values/prod.yaml` holding `env: production`): the
/// objects are found again by the environment they were tagged with, so a second publish
/// creates nothing and diff and pull see them.
#[tokio::test]
async fn an_environment_named_by_its_values_file_finds_its_objects_again() {
    let (intake, client) = start().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("templates");
    super::tests::copy_dir(&templates(), &dir);
    std::fs::rename(
        dir.join("values/production.yaml"),
        dir.join("values/prod.yaml"),
    )
    .unwrap();
    assert_eq!(
        run_publish_in(&client, &dir, "prod", true).await.0,
        Outcome::Clean
    );
    assert_eq!(counts(&intake), [3, 8, 5]);
    let (outcome, out) = run_publish_in(&client, &dir, "prod", true).await;
    assert_eq!(outcome, Outcome::Clean, "{out}");
    assert!(
        out.contains("0 to create, 0 to update, 16 unchanged"),
        "{out}"
    );
    assert_eq!(counts(&intake), [3, 8, 5], "no duplicates");
    let mut out = Vec::new();
    let outcome = sync::diff(&client, &dir, "prod", &mut out).await.unwrap();
    assert_eq!(outcome, Outcome::Clean, "{}", String::from_utf8_lossy(&out));
    let backup = tempfile::tempdir().unwrap();
    assert_eq!(sync::canonical_env(&dir, "prod"), "production");
    let mut out = Vec::new();
    sync::pull(&client, &dir, "prod", backup.path(), &mut out)
        .await
        .unwrap();
    let pulled = walk_files(backup.path());
    assert_eq!(pulled, 16, "{}", String::from_utf8_lossy(&out));
    intake.shutdown().await;
}

fn walk_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                walk_files(&e.path())
            } else {
                1
            }
        })
        .sum()
}

#[tokio::test]
async fn orphans_are_reported_and_pruned_only_when_asked() {
    let (intake, client) = start().await;
    assert_eq!(
        run_publish(&client, "production", true).await.0,
        Outcome::Clean
    );
    // A managed monitor whose template is gone.
    intake.insert_object(
        ObjectKind::Monitor,
        json!({ "name": "old", "type": "metric alert", "query": "avg(last_5m):avg:clawdstrike.exporter.queue.depth{*} > 1", "message": "@slack-x",
                "tags": ["managed_by:clawdstrike-templates", "template_id:monitors/retired", "template_env:production"] }),
    );
    let (outcome, out) = run_diff(&client, "production").await;
    assert_eq!(outcome, Outcome::Dirty);
    assert!(out.contains("- orphan monitor monitors/retired"), "{out}");
    assert_eq!(
        run_publish(&client, "production", true).await.0,
        Outcome::Clean,
        "apply without --prune keeps it"
    );
    assert_eq!(counts(&intake), [3, 9, 5]);
    let mut out = Vec::new();
    assert_eq!(
        sync::publish(&client, &templates(), "production", true, true, &mut out)
            .await
            .unwrap(),
        Outcome::Clean
    );
    assert!(
        String::from_utf8(out)
            .unwrap()
            .contains("deleted monitor monitors/retired")
    );
    assert_eq!(counts(&intake), [3, 8, 5]);
    assert_eq!(run_diff(&client, "production").await.0, Outcome::Clean);
    intake.shutdown().await;
}

#[tokio::test]
async fn validation_failures_are_partial_failures() {
    let (intake, client) = start().await;
    // Datadog rejects the first rule it validates (rules/critical-policy-violation).
    intake.fail_next(
        Endpoint::Rules,
        1,
        FaultAction::status_with_body(400, r#"{"errors":["query is invalid"]}"#),
    );
    let (outcome, out) = run_publish(&client, "production", true).await;
    assert_eq!(outcome, Outcome::Dirty, "{out}");
    assert!(
        out.contains("INVALID rule rules/critical-policy-violation: query is invalid"),
        "{out}"
    );
    assert!(
        out.contains(
            "rule rules/critical-policy-violation: not created, Datadog's validation rejected it"
        ),
        "{out}"
    );
    assert_eq!(counts(&intake), [3, 8, 4], "everything else was applied");
    // Next run completes it.
    assert_eq!(
        run_publish(&client, "production", true).await.0,
        Outcome::Clean
    );
    assert_eq!(counts(&intake), [3, 8, 5]);
    intake.shutdown().await;
}

#[tokio::test]
async fn rate_limits_are_waited_out() {
    let (intake, client) = start().await;
    // The first two monitor requests answer 429 with X-RateLimit-Reset: 0.
    intake.fail_next(
        Endpoint::Monitors,
        2,
        FaultAction::RateLimited {
            limit: 1,
            period: 1,
            reset: 0,
        },
    );
    let (outcome, out) = run_publish(&client, "production", true).await;
    assert_eq!(outcome, Outcome::Clean, "{out}");
    assert_eq!(counts(&intake), [3, 8, 5]);
    assert_eq!(intake.stats().responses_by_status.get(&429), Some(&2));
    intake.shutdown().await;
}

#[tokio::test]
async fn the_cli_path_reads_keys_through_the_keys_crate() {
    let (intake, _) = start().await;
    let keys = tempfile::tempdir().unwrap();
    let write = |name: &str, key: &str| -> PathBuf {
        let path = keys.path().join(name);
        std::fs::write(&path, format!("{key}\n")).unwrap();
        path
    };
    let remote = RemoteArgs {
        env: "production".to_owned(),
        site: "datadoghq.com".to_owned(),
        api_url: Some(intake.base_url()),
        api_key_file: Some(write("api", API_KEY)),
        app_key_file: Some(write("app", APP_KEY)),
        dir: templates(),
    };
    let client = sync::client_for(&remote).await.unwrap();
    assert_eq!(
        run_publish(&client, "production", true).await.0,
        Outcome::Clean
    );
    assert!(!format!("{client:?}").contains(API_KEY));

    // A wrong application key is refused, and the error does not echo it.
    let bad = RemoteArgs {
        app_key_file: Some(write("bad", "not-the-app-key")),
        ..remote.clone()
    };
    let client = sync::client_for(&bad).await.unwrap();
    let err = sync::diff(&client, &templates(), "production", &mut Vec::new())
        .await
        .unwrap_err();
    assert!(
        err.contains("HTTP 403") || err.contains("HTTP 401"),
        "{err}"
    );
    assert!(!err.contains("not-the-app-key"));

    // An unknown site is an error, not a fallback to US1.
    let unknown = RemoteArgs {
        api_url: None,
        site: "datadoghq.co".to_owned(),
        ..remote
    };
    assert!(
        sync::client_for(&unknown)
            .await
            .unwrap_err()
            .contains("unknown Datadog site `datadoghq.co`")
    );
    intake.shutdown().await;
}

#[test]
fn an_unknown_environment_is_refused() {
    let err = sync::desired_objects(&templates(), "qa").unwrap_err();
    assert_eq!(
        err,
        "no values file for environment `qa` (known: production, staging)"
    );
}
