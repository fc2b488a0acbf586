//! This host's view of its off-site copies, kept beside the run records in
//! `.stackback-remote.json` and never inside them: a record is uploaded as it is, so the local and
//! the remote copy stay byte for byte the same, and what the remote got is known without asking it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::sink::local::BackupDir;

pub const REMOTE_STATE: &str = ".stackback-remote.json";

/// What the last off-site copy did, and which runs the remote holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RemoteState {
    /// The remote as people may read it (no password).
    pub remote: String,
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// Whether the last attempt copied everything it set out to.
    pub last_ok: Option<bool>,
    pub last_success_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    /// Bytes sent by the last attempt, and its duration.
    pub last_bytes: u64,
    pub last_seconds: f64,
    /// Runs copied and checked, by run id.
    #[serde(default)]
    pub runs: BTreeMap<String, CopiedRun>,
}

/// One run on the remote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CopiedRun {
    pub copied_at: DateTime<Utc>,
    pub bytes: u64,
}

impl RemoteState {
    /// The saved state; none (default) when there is none or it cannot be read: it is a cache
    /// of what the remote holds, rebuilt by the next copy.
    pub fn load(dir: &BackupDir) -> RemoteState {
        std::fs::read(dir.join(REMOTE_STATE))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Saves atomically (temp, fsync, rename, fsync the directory).
    pub fn save(&self, dir: &BackupDir) -> Result<()> {
        dir.write_atomic(
            REMOTE_STATE,
            &serde_json::to_vec_pretty(self).expect("the remote state serialises"),
        )
    }
}
