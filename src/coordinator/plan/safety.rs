//! The plan's safety settings: the monitoring hold, host checks and backups
//! (docs/plan.md#monitor, #host_checks, #backup).

use serde::{Deserialize, Serialize};

/// The monitoring hold: commands that suspend the site's health monitoring (so a planned
/// stop does not trigger a failover) before the first stop, and resume it when the
/// rollout ends or pauses. Either driver; rendered like the command driver's templates.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Monitor {
    /// Suspends monitoring (the `monitor_suspend` command).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<String>,
    /// Resumes monitoring (the `monitor_resume` command).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<String>,
    /// Keep monitoring suspended while the rollout is paused or held.
    #[serde(default)]
    pub keep_suspended_on_pause: bool,
}

impl Monitor {
    pub(super) fn is_unset(&self) -> bool {
        *self == Monitor::default()
    }
}

/// Host checks: free space on `paths` and a writable temp directory, at preflight and
/// before each later wave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostChecks {
    /// Absolute paths that need `min_free` free.
    #[serde(default)]
    pub paths: Vec<std::path::PathBuf>,
    /// Bytes each path needs free (written `20GiB`, `500MiB`, `10GB` or a number).
    #[serde(with = "size", default)]
    pub min_free: u64,
}

/// Sizes in plan files: `20GiB`, `500MiB`, `10GB`, or a number of bytes.
mod size {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(n: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(*n)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(n),
            Raw::S(s) => crate::hostcheck::parse_size(&s).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "invalid size {s:?}: a number of bytes or a size such as \"20GiB\", \"500MiB\", \"10GB\""
                ))
            }),
        }
    }
}

/// Where the agent driver's `backup` steps save the PAC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupSpec {
    /// Directory on the coordinator's machine (absolute).
    pub dir: std::path::PathBuf,
    /// How many of the PAC's backup files to keep there (the newest).
    #[serde(default = "keep5")]
    pub keep: usize,
}

fn keep5() -> usize {
    5
}
