//! Off-site copies: after every verified run, the run's files and then its record go to the
//! remote (the record last: on the remote as locally, the record is the commit), each read back and
//! checked against the record's size and SHA-256. The same run then copies every verified local
//! run the remote lacks (catch-up, oldest first) and applies the remote's retention. Also the read
//! side: the remote's runs (`list --remote`), a streamed check of what landed (`verify --remote`),
//! and a fetch of one run into a scratch directory for `restore --from-remote`.
//!
//! A failure here never touches the local backup: it is reported beside the run (exit 5), and the
//! local view of the remote lives in `.stackback-remote.json`, not in the record.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::pipeline::sha::Sha256;
use chrono::Utc;
use futures_util::StreamExt;
use tracing::{info, warn};

use crate::catalog::remote_state::{CopiedRun, RemoteState};
use crate::catalog::{Catalog, RunId, RunRecord, RunState};
use crate::config::RemoteConfig;
use crate::error::{Error, RemoteError, RemoteErrorKind, Result};
use crate::retention::{plan, RunInfo};
use crate::sink::local::BackupDir;
use crate::sink::remote::Remote;

/// Tries per file: an upload cut by a reset or a read-back that does not match is sent again.
const ATTEMPTS: u32 = 3;

/// A run record larger than this on the remote is not one of ours.
const MAX_RECORD_BYTES: u64 = 16 << 20;

/// What one off-site copy did.
#[derive(Debug, Default)]
pub struct OffsiteReport {
    pub remote: String,
    /// Runs copied by this attempt: the new one first, then catch-up.
    pub copied: Vec<CopiedReport>,
    pub bytes: u64,
    pub seconds: f64,
    /// Verified local runs the remote still lacks after this attempt.
    pub pending: usize,
    /// Runs the remote's retention deleted.
    pub deleted_runs: Vec<RunId>,
    /// Why remote retention did not run, when it did not.
    pub retention_note: Option<String>,
    pub error: Option<Error>,
}

#[derive(Debug, Clone)]
pub struct CopiedReport {
    pub run_id: RunId,
    pub files: usize,
    pub bytes: u64,
}

/// The ssh client's control files: a private directory we own (never `$HOME`).
fn ssh_state_dir(dir: &BackupDir) -> PathBuf {
    dir.join(".stackback-ssh")
}

/// Connects to the remote of `cfg`.
pub async fn connect(cfg: &RemoteConfig, dir: &BackupDir) -> Result<Remote> {
    Remote::connect(cfg, &ssh_state_dir(dir), Some(dir.path())).await
}

/// Copies `current` and every verified run the remote lacks, then applies remote retention when
/// `prune_trusted` (the local prune ran with a clock that agrees with the database server's).
/// Ends early, as a failure, when `stop` completes. The caller holds the directory lock.
pub async fn copy_after_run(
    cfg: &RemoteConfig,
    dir: &BackupDir,
    current: &RunRecord,
    prune_trusted: bool,
    stop: impl Future<Output = String>,
) -> OffsiteReport {
    let t0 = Instant::now();
    let mut report = OffsiteReport {
        remote: cfg.display.clone(),
        ..Default::default()
    };
    let mut state = RemoteState::load(dir);
    if state.remote != cfg.display {
        // Another remote: what the old one held says nothing about this one.
        state = RemoteState {
            remote: cfg.display.clone(),
            ..Default::default()
        };
    }
    let result = tokio::select! {
        r = sync(cfg, dir, current, prune_trusted, &mut report, &mut state) => r,
        why = stop => Err(Error::step("off-site copy", why)),
    };
    report.seconds = t0.elapsed().as_secs_f64();
    let now = Utc::now();
    state.last_attempt_at = Some(now);
    state.last_bytes = report.bytes;
    state.last_seconds = report.seconds;
    match result {
        Ok(()) => {
            state.last_ok = Some(true);
            state.last_success_at = Some(now);
            state.last_error = None;
            info!(remote = %report.remote, runs = report.copied.len(), bytes = report.bytes, "off-site copy done");
        }
        Err(e) => {
            warn!(remote = %report.remote, error = %e, "off-site copy failed; the local backup is intact");
            state.last_ok = Some(false);
            state.last_error = Some(e.to_string());
            report.error = Some(e);
        }
    }
    if let Err(e) = state.save(dir) {
        warn!(error = %e, "cannot save the off-site state");
        report.error.get_or_insert(e);
    }
    report
}

/// Runs worth a copy: verified, with a record whose checksum holds.
fn copyable(r: &RunRecord) -> bool {
    matches!(r.status, RunState::Ok | RunState::Partial)
        && r.has_good_artifacts()
        && r.checksum_ok()
}

async fn sync(
    cfg: &RemoteConfig,
    dir: &BackupDir,
    current: &RunRecord,
    prune_trusted: bool,
    report: &mut OffsiteReport,
    state: &mut RemoteState,
) -> Result<()> {
    let remote = connect(cfg, dir).await?;
    let result = async {
        let swept = remote.sweep_partials().await?;
        if swept > 0 {
            info!(files = swept, "removed partial uploads an earlier copy left on the remote");
        }
        let on_remote: HashSet<String> = remote.list().await?.into_iter().map(|f| f.name).collect();
        let records = Catalog::new(dir.clone()).records()?;
        // The new run first (it is the one an outage would cost), then the rest oldest first.
        let mut todo: Vec<&RunRecord> = Vec::new();
        let current = records.iter().find(|r| r.run_id == current.run_id);
        todo.extend(current);
        todo.extend(records.iter().filter(|r| Some(*r) != current));
        let todo: Vec<&RunRecord> = todo
            .into_iter()
            .filter(|r| copyable(r) && !on_remote.contains(&r.file_name()))
            .collect();
        report.pending = todo.len();
        for r in todo {
            let (files, bytes) = copy_run(&remote, dir, r, &mut report.bytes).await?;
            state.runs.insert(
                r.run_id.to_string(),
                CopiedRun {
                    copied_at: Utc::now(),
                    bytes,
                },
            );
            report.pending -= 1;
            report.copied.push(CopiedReport {
                run_id: r.run_id.clone(),
                files,
                bytes,
            });
        }
        if prune_trusted {
            let keep_current = current.map(|r| r.run_id.clone());
            report.deleted_runs = remote_retention(&remote, cfg, keep_current.as_ref()).await?;
            for id in &report.deleted_runs {
                state.runs.remove(&id.to_string());
            }
        } else {
            report.retention_note = Some(
                "skipped: the local prune did not run with a trusted clock, so the remote keeps everything".into(),
            );
        }
        Ok(())
    }
    .await;
    remote.close().await;
    result
}

/// Uploads one run's verified files, then its record; each read back and checked.
async fn copy_run(
    remote: &Remote,
    dir: &BackupDir,
    r: &RunRecord,
    total: &mut u64,
) -> Result<(usize, u64)> {
    let mut files = 0;
    let mut bytes = 0;
    for a in r.artifacts.iter().filter(|a| a.verification.ok) {
        let sent = upload_checked(remote, dir, &a.file, &a.stored_sha256, a.stored_bytes).await?;
        files += 1;
        bytes += sent;
        *total += sent;
        if let Some(index) = &a.index_file {
            let local = dir.join(index);
            let (size, sha) = match &a.index_stored_sha256 {
                Some(sha) => (file_len(&local)?, sha.clone()),
                // Records of older builds did not keep the index's sum: the file's own, checked
                // against the archive's copy of the index when it is restored.
                None => hash_local(&local).await?,
            };
            let sent = upload_checked(remote, dir, index, &sha, size).await?;
            files += 1;
            bytes += sent;
            *total += sent;
        }
    }
    let name = r.file_name();
    let (size, sha) = hash_local(&dir.join(&name)).await?;
    let sent = upload_checked(remote, dir, &name, &sha, size).await?;
    *total += sent;
    info!(run = %r.run_id, files, bytes, "run copied off-site");
    Ok((files + 1, bytes + sent))
}

fn file_len(p: &Path) -> Result<u64> {
    std::fs::metadata(p)
        .map(|m| m.len())
        .map_err(|e| Error::io("cannot read", p, e))
}

async fn hash_local(p: &Path) -> Result<(u64, String)> {
    let path = p.to_path_buf();
    crate::ops::blocking("hashing a file", move || {
        crate::pipeline::hash_file(&path).map_err(|e| Error::io("cannot read", &path, e))
    })
    .await
}

/// Uploads `name` and reads it back until its size and SHA-256 are the expected ones.
async fn upload_checked(
    remote: &Remote,
    dir: &BackupDir,
    name: &str,
    sha: &str,
    size: u64,
) -> Result<u64> {
    let mut attempt = 1;
    loop {
        let tried = async {
            let sent = remote.upload(&dir.join(name), name).await?;
            let (got_size, got_sha) = read_back(remote, name).await?;
            if got_size != size || got_sha != sha {
                return Err(Error::from(RemoteError {
                    op: "checking what landed",
                    target: remote.display().to_string(),
                    name: Some(name.to_string()),
                    kind: RemoteErrorKind::Mismatch,
                    detail: format!(
                        "the remote holds {got_size} bytes with sha256 {got_sha}, the record says {size} bytes with sha256 {sha}"
                    ),
                }));
            }
            Ok(sent)
        }
        .await;
        match tried {
            Ok(sent) => return Ok(sent),
            Err(e) if attempt < ATTEMPTS && retryable(&e) => {
                warn!(file = name, attempt, error = %e, "off-site upload failed; trying again");
                tokio::time::sleep(Duration::from_secs(2u64.pow(attempt))).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

fn retryable(e: &Error) -> bool {
    matches!(
        e,
        Error::Remote(r) if matches!(r.kind, RemoteErrorKind::Unreachable | RemoteErrorKind::Mismatch | RemoteErrorKind::Other)
    )
}

/// Streams a remote file: its size and SHA-256.
async fn read_back(remote: &Remote, name: &str) -> Result<(u64, String)> {
    let mut s = remote.read(name).await?;
    let mut h = Sha256::new();
    let mut n = 0u64;
    while let Some(chunk) = s.next().await {
        let chunk = chunk.map_err(|e| {
            Error::from(RemoteError {
                op: "reading back",
                target: remote.display().to_string(),
                name: Some(name.to_string()),
                kind: crate::sink::remote::io_kind(&e),
                detail: e.to_string(),
            })
        })?;
        n += chunk.len() as u64;
        h.update(&chunk);
    }
    Ok((n, h.finish_hex()))
}

/// A run record on the remote, or why it could not be read.
#[derive(Debug)]
pub enum RemoteEntry {
    Record(Box<RunRecord>),
    Unreadable { file: String, error: String },
}

/// The remote's files, and its records oldest first.
async fn remote_records(remote: &Remote) -> Result<(HashMap<String, u64>, Vec<RemoteEntry>)> {
    let files: HashMap<String, u64> = remote
        .list()
        .await?
        .into_iter()
        .map(|f| (f.name, f.size))
        .collect();
    let mut names: Vec<&String> = files
        .keys()
        .filter(|n| RunId::from_record_file(n).is_some())
        .collect();
    names.sort();
    let mut out = Vec::new();
    for name in names {
        if files[name] > MAX_RECORD_BYTES {
            out.push(RemoteEntry::Unreadable {
                file: name.clone(),
                error: format!("{} bytes: too large for a run record", files[name]),
            });
            continue;
        }
        let bytes = download(remote, name, MAX_RECORD_BYTES).await?;
        match RunRecord::from_json(&bytes) {
            // The record must be the one its name says.
            Ok(r) if r.file_name() == *name => out.push(RemoteEntry::Record(Box::new(r))),
            Ok(r) => out.push(RemoteEntry::Unreadable {
                file: name.clone(),
                error: format!("holds run {} under another run's name", r.run_id),
            }),
            Err(e) => out.push(RemoteEntry::Unreadable {
                file: name.clone(),
                error: e.to_string(),
            }),
        }
    }
    out.sort_by(|a, b| match (a, b) {
        (RemoteEntry::Record(a), RemoteEntry::Record(b)) => a.order().cmp(&b.order()),
        (RemoteEntry::Unreadable { .. }, RemoteEntry::Record(_)) => std::cmp::Ordering::Less,
        (RemoteEntry::Record(_), RemoteEntry::Unreadable { .. }) => std::cmp::Ordering::Greater,
        (RemoteEntry::Unreadable { file: a, .. }, RemoteEntry::Unreadable { file: b, .. }) => {
            a.cmp(b)
        }
    });
    Ok((files, out))
}

async fn download(remote: &Remote, name: &str, limit: u64) -> Result<Vec<u8>> {
    let mut s = remote.read(name).await?;
    let mut out = Vec::new();
    while let Some(chunk) = s.next().await {
        let chunk = chunk.map_err(|e| remote_io(remote, "downloading", name, &e))?;
        out.extend_from_slice(&chunk);
        if out.len() as u64 > limit {
            return Err(remote_io(
                remote,
                "downloading",
                name,
                &std::io::Error::other("larger than a run record can be"),
            ));
        }
    }
    Ok(out)
}

fn remote_io(remote: &Remote, op: &'static str, name: &str, e: &std::io::Error) -> Error {
    Error::from(RemoteError {
        op,
        target: remote.display().to_string(),
        name: Some(name.to_string()),
        kind: crate::sink::remote::io_kind(e),
        detail: e.to_string(),
    })
}

/// Applies the remote's policy to the runs whose records are on the remote: a record is deleted
/// before its files, only files that record names are deleted, and never `current`.
async fn remote_retention(
    remote: &Remote,
    cfg: &RemoteConfig,
    current: Option<&RunId>,
) -> Result<Vec<RunId>> {
    let (files, entries) = remote_records(remote).await?;
    let records: Vec<RunRecord> = entries
        .into_iter()
        .filter_map(|e| match e {
            RemoteEntry::Record(r) => Some(*r),
            RemoteEntry::Unreadable { .. } => None,
        })
        .collect();
    let runs: Vec<RunInfo> = records
        .iter()
        .map(|r| RunInfo {
            sequence: r.sequence.unwrap_or(0),
            id: r.run_id.clone(),
            // A record still `running` on the remote was never uploaded by a finished run.
            state: match r.status {
                RunState::Running => RunState::Incomplete,
                s => s,
            },
        })
        .collect();
    let decisions = plan(
        &runs,
        &cfg.retention.policy,
        Utc::now(),
        cfg.retention.timezone,
        // The pre-anomaly run is pinned locally; the remote keeps to its own policy.
        &[],
    )
    .map_err(|e| Error::config("remote.retention_days (BACKUP_REMOTE_RETENTION_DAYS)", e))?;
    let mut deleted = Vec::new();
    for d in decisions.iter().filter(|d| !d.keep) {
        if Some(&d.run_id) == current {
            continue;
        }
        let Some(r) = records.iter().find(|r| r.run_id == d.run_id) else {
            continue;
        };
        remote.delete(&r.file_name()).await?;
        for f in r.files() {
            // Only a file of this run, by name; anything else on the remote is not ours.
            if files.contains_key(f) && crate::catalog::is_artifact_of(f, &r.run_id) {
                remote.delete(f).await?;
            }
        }
        info!(run = %r.run_id, reasons = ?d.reasons, "off-site run deleted by the remote's retention");
        deleted.push(r.run_id.clone());
    }
    Ok(deleted)
}

/// The sequence after the remote's newest run: a rebuilt host continues the history it left
/// there. `None` when the remote cannot say (unreachable, empty); never an error, since a run
/// must not depend on the remote to start.
pub async fn remote_next_sequence(cfg: &RemoteConfig, dir: &BackupDir) -> Option<u64> {
    let work = async {
        let remote = connect(cfg, dir).await.ok()?;
        let newest = remote
            .list()
            .await
            .ok()?
            .into_iter()
            .filter_map(|f| RunId::from_record_file(&f.name).map(|id| (id, f.name)))
            .max_by(|a, b| a.0.cmp(&b.0));
        let seq = match newest {
            Some((_, name)) => download(&remote, &name, MAX_RECORD_BYTES)
                .await
                .ok()
                .and_then(|b| RunRecord::from_json(&b).ok())
                .and_then(|r| r.sequence),
            None => None,
        };
        remote.close().await;
        seq.map(|s| s + 1)
    };
    tokio::time::timeout(Duration::from_secs(20), work)
        .await
        .ok()
        .flatten()
}

mod read;
pub use read::{fetch, list, verify, Fetched, RemoteCheck, RemoteListing, RemoteRun};
