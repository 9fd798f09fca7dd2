//! The configuration client against the fake intake's configuration APIs.

mod common;

use clawdstrike_datadog::config_api::{ConfigClient, ObjectKind};
use clawdstrike_fakeintake::FakeIntake;
use clawdstrike_keys::SecretString;
use common::*;
use serde_json::json;

/// Every list is read whole, page after page: dashboards come 100 to a page by default, so
/// with more of them ours past the first page were taken for missing (and created again at
/// every publish).
#[tokio::test]
async fn lists_read_every_page() {
    let intake = FakeIntake::start(SecretString::from(KEY_A), SecretString::from(APP_KEY))
        .await
        .unwrap();
    let client = ConfigClient::new(
        intake.base_url(),
        SecretString::from(KEY_A),
        SecretString::from(APP_KEY),
    )
    .unwrap();
    for n in 0..250 {
        let body =
            json!({ "title": format!("board {n}"), "layout_type": "ordered", "widgets": [] });
        client.create(ObjectKind::Dashboard, &body).await.unwrap();
    }
    let listed = client.list(ObjectKind::Dashboard).await.unwrap();
    assert_eq!(listed.len(), 250);
    let mut titles: Vec<&str> = listed.iter().filter_map(|d| d["title"].as_str()).collect();
    titles.sort_unstable();
    titles.dedup();
    assert_eq!(titles.len(), 250, "each dashboard once");
    intake.shutdown().await;
}
