//! Helpers shared by the integration tests of this crate.

use std::ffi::OsStr;

/// Runs test `name` of this test binary again, in a child process with `env` set to `value`,
/// where no file may grow past `blocks` 512-byte blocks (`ulimit -f`) and `SIGXFSZ` is ignored:
/// a write past the limit gets a short write, then `EFBIG`, as on a full disk. The test tells
/// it is the child by `env`. Asserts that the child passed; returns its stdout.
pub(crate) fn rerun_with_file_size_limit(
    name: &str,
    env: &str,
    value: &OsStr,
    blocks: u32,
) -> String {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            r#"trap "" XFSZ && ulimit -f {blocks} && exec "$0" "$@""#
        ))
        .arg(std::env::current_exe().expect("the test binary"))
        .args([name, "--exact", "--nocapture", "--test-threads", "1"])
        .env(env, value)
        .output()
        .expect("sh runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}
