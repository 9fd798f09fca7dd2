//! The file provider against real files: rotation by atomic rename and by the Kubernetes
//! `..data` symlink swap, trimming, and the permission warning.

mod common;

use std::path::Path;
use std::sync::Arc;

use clawdstrike_keys::{
    ApiKeyProvider, FileProvider, KeyError, KeyHolder, RefreshOptions, RefreshOutcome,
};
use secrecy::ExposeSecret;

#[tokio::test]
async fn rotation_by_atomic_rename_is_seen_after_a_rejection() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("api-key");
    std::fs::write(&path, "rename-key-1\n").unwrap();
    let holder = KeyHolder::new(
        Arc::new(FileProvider::new(&path)),
        RefreshOptions::default(),
    )
    .await
    .unwrap();
    let rejected = holder.current();
    assert_eq!(
        rejected.expose(),
        "rename-key-1",
        "trailing newline trimmed"
    );

    let tmp = dir.path().join("api-key.new");
    std::fs::write(&tmp, "rename-key-2\n").unwrap();
    std::fs::rename(&tmp, &path).unwrap();

    assert_eq!(
        holder.refresh_after_rejection(rejected.generation()).await,
        RefreshOutcome::Changed { generation: 2 }
    );
    assert_eq!(holder.current().expose(), "rename-key-2");
}

/// Lays out a directory the way the kubelet mounts a Secret volume:
/// `api-key -> ..data/api-key`, `..data -> ..<timestamp>/`.
#[cfg(unix)]
fn kubelet_write(volume: &Path, version: &str, value: &str) {
    use std::os::unix::fs::symlink;
    let versioned = volume.join(format!("..{version}"));
    std::fs::create_dir(&versioned).unwrap();
    std::fs::write(versioned.join("api-key"), value).unwrap();
    // Swap `..data` atomically: new symlink under a temporary name, then rename over.
    let tmp_link = volume.join("..data_tmp");
    symlink(format!("..{version}"), &tmp_link).unwrap();
    std::fs::rename(&tmp_link, volume.join("..data")).unwrap();
    let key_link = volume.join("api-key");
    if std::fs::symlink_metadata(&key_link).is_err() {
        symlink("..data/api-key", &key_link).unwrap();
    }
}

#[cfg(unix)]
#[tokio::test]
async fn rotation_by_kubernetes_symlink_swap_is_seen() {
    let volume = tempfile::tempdir().unwrap();
    kubelet_write(volume.path(), "2026_11_23_10_00_00.1", "symlink-key-1\n");
    let provider = Arc::new(FileProvider::new(volume.path().join("api-key")));
    let holder = KeyHolder::new(provider, RefreshOptions::default())
        .await
        .unwrap();
    assert_eq!(holder.current().expose(), "symlink-key-1");

    kubelet_write(volume.path(), "2026_11_23_11_00_00.2", "symlink-key-2\n");
    // The old version directory is removed by the kubelet after the swap.
    std::fs::remove_dir_all(volume.path().join("..2026_11_23_10_00_00.1")).unwrap();

    assert_eq!(
        holder.refresh_now().await,
        RefreshOutcome::Changed { generation: 2 }
    );
    assert_eq!(holder.current().expose(), "symlink-key-2");
}

#[tokio::test]
async fn surrounding_whitespace_is_trimmed_and_empty_files_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k");
    std::fs::write(&path, "  spaced-key \r\n\n").unwrap();
    let provider = FileProvider::new(&path);
    assert_eq!(
        provider.fetch().await.unwrap().expose_secret(),
        "spaced-key"
    );

    std::fs::write(&path, "\n").unwrap();
    let err = provider.fetch().await.unwrap_err();
    assert!(matches!(err, KeyError::Invalid { .. }), "{err}");
    assert!(err.to_string().contains("empty"), "{err}");
}
