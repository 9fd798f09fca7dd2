//! The file provider warns, once, when the key file is readable by its group or by others.
//! (Its own test binary: it installs the process-wide log subscriber.)
#![cfg(unix)]

mod common;

use clawdstrike_keys::{ApiKeyProvider, FileProvider};

#[tokio::test]
async fn a_file_readable_by_others_is_warned_about_once() {
    use std::os::unix::fs::PermissionsExt;
    // A process-wide subscriber: this binary holds this one test, so nothing else logs.
    let capture = common::capture_all_logs();

    let dir = tempfile::tempdir().unwrap();
    let private = dir.path().join("private");
    std::fs::write(&private, "private-key").unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o600)).unwrap();
    FileProvider::new(&private).fetch().await.unwrap();
    assert!(!capture.text().contains("readable"), "{}", capture.text());

    let shared = dir.path().join("shared");
    std::fs::write(&shared, "shared-key").unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o644)).unwrap();
    let provider = FileProvider::new(&shared);
    provider.fetch().await.unwrap();
    provider.fetch().await.unwrap();
    let text = capture.text();
    assert_eq!(
        text.matches("readable by its group or by others").count(),
        1,
        "{text}"
    );
    assert!(text.contains("644"), "{text}");
    assert!(!text.contains("shared-key"), "{text}");
}
