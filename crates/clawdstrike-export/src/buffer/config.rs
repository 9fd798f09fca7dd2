//! The buffer's configuration: `buffer: { type: disk, path, max_bytes, segment_bytes, fsync, when_full }`.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::WhenFull;

/// Where accepted events wait for delivery: in memory only (the pipeline's queues), or also in a
/// write-ahead log on disk that survives a crash.
///
/// YAML: `buffer: { type: memory }` (the default) or
/// `buffer: { type: disk, path: /var/lib/clawdstrike/buffer, max_bytes: 268435456 }`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", from = "BufferRepr")]
#[non_exhaustive]
pub enum BufferConfig {
    /// Only the pipeline's in-memory queues: a crash loses what they hold.
    #[default]
    Memory,
    /// A write-ahead log on disk ([`DiskBufferConfig`]).
    Disk(DiskBufferConfig),
}

/// How [`BufferConfig`] is read: `memory` as a variant with fields (none), so that a setting
/// under it (`max_bytes`, `path`: meant for a disk buffer) is refused rather than ignored.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum BufferRepr {
    Memory {},
    Disk(DiskBufferConfig),
}

impl From<BufferRepr> for BufferConfig {
    fn from(repr: BufferRepr) -> Self {
        match repr {
            BufferRepr::Memory {} => Self::Memory,
            BufferRepr::Disk(disk) => Self::Disk(disk),
        }
    }
}

/// The on-disk buffer. Every field but `path` is optional:
///
/// | setting | default | meaning |
/// |---|---|---|
/// | `path` | (required) | directory holding the segment files (created if missing) |
/// | `max_bytes` | 256 MiB | bound on the segment files' total size |
/// | `segment_bytes` | 8 MiB | a segment file is closed (and a new one started) past this size |
/// | `fsync` | `{ interval_ms: 1000 }` | `always`, `never` or `{ interval_ms: N }` |
/// | `when_full` | `block` | `block`, `drop_newest`, `drop_oldest` (see [`DurablePipeline`](crate::DurablePipeline)) |
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskBufferConfig {
    /// The directory of the log (one buffer per directory).
    pub path: PathBuf,
    /// Maximum bytes of segment files on disk (default 256 MiB; at least `segment_bytes`).
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// Size past which the current segment file is closed (default 8 MiB; at least 4 KiB).
    #[serde(default = "default_segment_bytes")]
    pub segment_bytes: u64,
    /// When appended records are forced to stable storage (default every 1,000 ms).
    #[serde(default)]
    pub fsync: FsyncPolicy,
    /// What an append does when the log is at `max_bytes` (default `block`).
    #[serde(default)]
    pub when_full: WhenFull,
}

fn default_max_bytes() -> u64 {
    256 * 1024 * 1024
}

fn default_segment_bytes() -> u64 {
    8 * 1024 * 1024
}

impl DiskBufferConfig {
    /// The defaults, in directory `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            max_bytes: default_max_bytes(),
            segment_bytes: default_segment_bytes(),
            fsync: FsyncPolicy::default(),
            when_full: WhenFull::Block,
        }
    }

    /// Sets `max_bytes`.
    pub fn with_max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = bytes;
        self
    }

    /// Sets `segment_bytes`.
    pub fn with_segment_bytes(mut self, bytes: u64) -> Self {
        self.segment_bytes = bytes;
        self
    }

    /// Sets the fsync policy.
    pub fn with_fsync(mut self, fsync: FsyncPolicy) -> Self {
        self.fsync = fsync;
        self
    }

    /// Sets the `when_full` policy.
    pub fn with_when_full(mut self, when_full: WhenFull) -> Self {
        self.when_full = when_full;
        self
    }

    /// Checks the ranges: `segment_bytes >= 4096`, `max_bytes >= segment_bytes`, a non-zero
    /// fsync interval.
    ///
    /// # Errors
    /// A message saying which setting is out of range.
    pub fn validate(&self) -> Result<(), String> {
        if self.segment_bytes < 4096 {
            return Err(format!(
                "buffer.segment_bytes must be at least 4096 (got {})",
                self.segment_bytes
            ));
        }
        if self.max_bytes < self.segment_bytes {
            return Err(format!(
                "buffer.max_bytes ({}) must be at least buffer.segment_bytes ({})",
                self.max_bytes, self.segment_bytes
            ));
        }
        if self.fsync == FsyncPolicy::Interval(Duration::ZERO) {
            return Err("buffer.fsync.interval_ms must be at least 1".to_owned());
        }
        Ok(())
    }
}

/// When appended records are forced to stable storage (`fsync`).
///
/// A record is written to the operating system before `submit` returns whatever the policy, so
/// it survives the process being killed (even with `SIGKILL`); the policy decides what a power
/// loss or kernel crash can take: nothing (`always`), up to the interval (`interval_ms`), or
/// whatever the kernel had not written back yet (`never`).
///
/// YAML: `fsync: always`, `fsync: never` or `fsync: { interval_ms: 1000 }`.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "FsyncRepr", into = "FsyncRepr")]
pub enum FsyncPolicy {
    /// Every append waits for an `fdatasync` covering its record before it returns (slowest,
    /// loses nothing). The fsyncs run on a thread of their own, not on the async runtime, and
    /// are shared: appends from concurrent producers that wait together are covered by one
    /// (group commit), so throughput grows with the number of producers. A failed fsync
    /// refuses every append it covered ([`DurableSubmitError::Io`](crate::DurableSubmitError::Io)).
    Always,
    /// `fdatasync` in the background at this interval when something was appended.
    Interval(Duration),
    /// Never; the kernel writes back on its own schedule.
    Never,
}

impl Default for FsyncPolicy {
    fn default() -> Self {
        FsyncPolicy::Interval(Duration::from_millis(1000))
    }
}

impl fmt::Debug for FsyncPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FsyncPolicy::Always => f.write_str("always"),
            FsyncPolicy::Never => f.write_str("never"),
            FsyncPolicy::Interval(d) => write!(f, "interval_ms: {}", d.as_millis()),
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum NamedFsync {
    Always,
    Never,
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum FsyncRepr {
    Named(NamedFsync),
    Interval {
        #[serde(rename = "interval_ms")]
        interval_ms: u64,
    },
}

impl TryFrom<FsyncRepr> for FsyncPolicy {
    type Error = String;
    fn try_from(repr: FsyncRepr) -> Result<Self, Self::Error> {
        Ok(match repr {
            FsyncRepr::Named(NamedFsync::Always) => FsyncPolicy::Always,
            FsyncRepr::Named(NamedFsync::Never) => FsyncPolicy::Never,
            FsyncRepr::Interval { interval_ms: 0 } => {
                return Err("fsync.interval_ms must be at least 1".to_owned());
            }
            FsyncRepr::Interval { interval_ms } => {
                FsyncPolicy::Interval(Duration::from_millis(interval_ms))
            }
        })
    }
}

impl From<FsyncPolicy> for FsyncRepr {
    fn from(policy: FsyncPolicy) -> Self {
        match policy {
            FsyncPolicy::Always => FsyncRepr::Named(NamedFsync::Always),
            FsyncPolicy::Never => FsyncRepr::Named(NamedFsync::Never),
            FsyncPolicy::Interval(d) => FsyncRepr::Interval {
                interval_ms: u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
            },
        }
    }
}
