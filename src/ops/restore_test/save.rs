//! Recording a restore test's result: into the tested run's record (its `restore_test` section)
//! and into the state file, both under the backup directory's lock, so neither a backup's prune
//! nor another writer of the state file can interleave.

use std::time::Duration;

use crate::catalog::state::State;
use crate::catalog::{Catalog, RestoreTestRecord, RunId};
use crate::error::{Error, Result};
use crate::sink::local::BackupDir;

/// How long recording waits for a backup run that holds the directory lock.
const LOCK_WAIT: Duration = Duration::from_secs(15 * 60);

/// Writes `result` into run `run_id`'s record and notes it in the state file. The record is
/// rewritten atomically with a fresh self-checksum; unless pruning removed it meanwhile, or it no
/// longer proves itself (re-sealing an edited record would launder it): then only the state file
/// keeps the result.
pub(super) async fn save(
    dir: &BackupDir,
    run_id: &RunId,
    result: &RestoreTestRecord,
) -> Result<()> {
    let _lock = lock(dir).await?;
    let catalog = Catalog::new(dir.clone());
    let path = dir.join(&run_id.record_file());
    if path.exists() {
        let mut rec = catalog.load(run_id)?;
        if rec.checksum_ok() {
            rec.restore_test = Some(result.clone());
            catalog.write(&rec)?;
        } else {
            tracing::warn!(run = %run_id, "the tested run's record was modified after stackback wrote it: only the state file keeps the result");
        }
    } else {
        tracing::warn!(run = %run_id, "the tested run was pruned meanwhile: only the state file keeps the result");
    }
    let mut state = State::load(dir)?;
    state.note_restore_test(run_id, result.finished_at, result.ok);
    state.save(dir)
}

/// The directory lock, waiting for a backup that holds it (a test outlasts no backup by much).
async fn lock(dir: &BackupDir) -> Result<crate::sink::local::DirLock> {
    let deadline = tokio::time::Instant::now() + LOCK_WAIT;
    loop {
        match dir.lock() {
            Err(Error::Locked { .. }) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            other => return other,
        }
    }
}
