//! The remote's read side: its runs (`list --remote`), a streamed check of what landed
//! (`verify --remote`), and the fetch of one run into a scratch directory (`--from-remote`).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::pipeline::sha::Sha256;
use futures_util::StreamExt;
use tracing::info;

use super::{connect, read_back, remote_io, remote_records, RemoteEntry};
use crate::catalog::{ArtifactKind, RunId, RunRecord};
use crate::config::{Config, RemoteConfig};
use crate::error::{Error, RemoteError, RemoteErrorKind, Result};
use crate::ops::Selector;
use crate::sink::local::BackupDir;
use crate::sink::remote::Remote;

/// One run on the remote, and the files its record names that the remote lacks.
#[derive(Debug)]
pub struct RemoteRun {
    pub record: RunRecord,
    pub missing: Vec<String>,
    pub bytes: u64,
}

/// `stackback list --remote`.
#[derive(Debug)]
pub struct RemoteListing {
    pub remote: String,
    pub runs: Vec<RemoteRun>,
    pub unreadable: Vec<(String, String)>,
    /// Files on the remote that no record names (a run still uploading, someone else's).
    pub unnamed: usize,
}

pub async fn list(cfg: &Config) -> Result<RemoteListing> {
    let rcfg = require_remote(cfg)?;
    let dir = BackupDir::create(&cfg.backup_dir())?;
    let remote = connect(rcfg, &dir).await?;
    let result = remote_records(&remote).await;
    remote.close().await;
    let (files, entries) = result?;
    let mut listing = RemoteListing {
        remote: rcfg.display.clone(),
        runs: Vec::new(),
        unreadable: Vec::new(),
        unnamed: 0,
    };
    let mut runs = Vec::new();
    for e in entries {
        match e {
            RemoteEntry::Record(r) => runs.push(*r),
            RemoteEntry::Unreadable { file, error } => listing.unreadable.push((file, error)),
        }
    }
    for r in runs {
        let mut missing = Vec::new();
        let mut bytes = 0;
        for f in r
            .artifacts
            .iter()
            .filter(|a| a.verification.ok)
            .flat_map(|a| a.files())
        {
            match files.get(f) {
                Some(n) => bytes += n,
                None => missing.push(f.to_string()),
            }
        }
        listing.runs.push(RemoteRun {
            record: r,
            missing,
            bytes,
        });
    }
    let all_named: HashSet<String> = listing
        .runs
        .iter()
        .flat_map(|r| {
            r.record
                .files()
                .map(String::from)
                .chain([r.record.file_name()])
        })
        .collect();
    listing.unnamed = files.keys().filter(|f| !all_named.contains(*f)).count();
    Ok(listing)
}

fn require_remote(cfg: &Config) -> Result<&RemoteConfig> {
    cfg.remote()?.ok_or_else(|| {
        Error::Usage(
            "no remote is configured: set BACKUP_REMOTE_URL (see `stackback config`)".into(),
        )
    })
}

/// A newest-first pick among the remote's complete runs.
fn pick<'a>(runs: &'a [RemoteRun], sel: &Selector, kind: ArtifactKind) -> Result<&'a RemoteRun> {
    match sel {
        Selector::Latest => runs
            .iter()
            .rev()
            .find(|r| r.missing.is_empty() && r.record.good_artifacts(kind).next().is_some())
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "the remote holds no complete run with a {kind} backup"
                ))
            }),
        Selector::Run(id) => runs
            .iter()
            .find(|r| &r.record.run_id == id)
            .ok_or_else(|| Error::NotFound(format!("run {id} is not on the remote"))),
        Selector::File(f) => {
            let name = f.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            runs.iter()
                .rev()
                .find(|r| r.record.files().any(|x| x == name))
                .ok_or_else(|| Error::NotFound(format!("no run on the remote holds {name}")))
        }
    }
}

/// One file checked on the remote.
#[derive(Debug)]
pub struct RemoteCheck {
    pub run_id: RunId,
    pub file: String,
    pub ok: bool,
    pub detail: String,
}

/// `stackback verify --remote`: every file of the chosen runs streamed from the remote and checked
/// against its record's size and SHA-256; nothing is written to disk.
pub async fn verify(cfg: &Config, sel: Option<&Selector>) -> Result<Vec<RemoteCheck>> {
    let rcfg = require_remote(cfg)?;
    let dir = BackupDir::create(&cfg.backup_dir())?;
    let listing = list(cfg).await?;
    let chosen: Vec<&RemoteRun> = match sel {
        None => listing.runs.iter().collect(),
        Some(s) => vec![pick(&listing.runs, s, ArtifactKind::Database)
            .or_else(|_| pick(&listing.runs, s, ArtifactKind::Objects))?],
    };
    let remote = connect(rcfg, &dir).await?;
    let mut out = Vec::new();
    for run in chosen {
        let r = &run.record;
        for a in r.artifacts.iter().filter(|a| a.verification.ok) {
            let mut wanted = vec![(
                a.file.clone(),
                Some((a.stored_bytes, a.stored_sha256.clone())),
            )];
            if let Some(ix) = &a.index_file {
                wanted.push((
                    ix.clone(),
                    a.index_stored_sha256.clone().map(|s| (u64::MAX, s)),
                ));
            }
            for (file, expect) in wanted {
                let check = match read_back(&remote, &file).await {
                    Err(e) => RemoteCheck {
                        run_id: r.run_id.clone(),
                        file,
                        ok: false,
                        detail: e.to_string(),
                    },
                    Ok((n, sha)) => {
                        let (ok, detail) = match expect {
                            Some((size, want)) if (size == u64::MAX || size == n) && want == sha => {
                                (true, format!("{n} bytes, sha256 ok (streamed from the remote)"))
                            }
                            Some((size, want)) => (
                                false,
                                format!(
                                    "{n} bytes with sha256 {sha}; the record says {} with sha256 {want}",
                                    if size == u64::MAX { "any size".to_string() } else { format!("{size} bytes") }
                                ),
                            ),
                            None => (true, format!("{n} bytes read (no sum recorded for it)")),
                        };
                        RemoteCheck {
                            run_id: r.run_id.clone(),
                            file,
                            ok,
                            detail,
                        }
                    }
                };
                out.push(check);
            }
        }
    }
    remote.close().await;
    Ok(out)
}

/// A run fetched from the remote into a private scratch directory, removed on drop.
#[derive(Debug)]
pub struct Fetched {
    pub dir: PathBuf,
    pub run_id: RunId,
    pub bytes: u64,
}

impl Drop for Fetched {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Downloads the chosen run (its verified files and its record) into a scratch directory under
/// BACKUP_DIR, each file checked against the record's size and SHA-256 as it arrives. Restore
/// then works on that directory exactly as on the local one.
pub async fn fetch(cfg: &Config, sel: &Selector, kind: ArtifactKind) -> Result<Fetched> {
    let rcfg = require_remote(cfg)?;
    let dir = BackupDir::create(&cfg.backup_dir())?;
    let listing = list(cfg).await?;
    let run = pick(&listing.runs, sel, kind)?;
    if !run.missing.is_empty() {
        return Err(Error::NotFound(format!(
            "run {} is incomplete on the remote: {} missing",
            run.record.run_id,
            run.missing.join(", ")
        )));
    }
    let scratch = dir.join(&format!(".stackback-fetch-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    BackupDir::create(&scratch)?;
    let mut fetched = Fetched {
        dir: scratch.clone(),
        run_id: run.record.run_id.clone(),
        bytes: 0,
    };
    let remote = connect(rcfg, &dir).await?;
    let result = async {
        let r = &run.record;
        for a in r.artifacts.iter().filter(|a| a.verification.ok) {
            fetched.bytes += fetch_file(&remote, &scratch, &a.file, Some(&a.stored_sha256)).await?;
            if let Some(ix) = &a.index_file {
                fetched.bytes +=
                    fetch_file(&remote, &scratch, ix, a.index_stored_sha256.as_deref()).await?;
            }
        }
        let name = r.file_name();
        fetch_file(&remote, &scratch, &name, None).await?;
        // The record must still be the one listed (and its checksum hold).
        let bytes = std::fs::read(scratch.join(&name))
            .map_err(|e| Error::io("cannot read", &scratch, e))?;
        RunRecord::from_json(&bytes).map_err(|e| Error::Record {
            path: scratch.join(&name),
            problem: e,
        })?;
        Ok::<(), Error>(())
    }
    .await;
    remote.close().await;
    result?;
    info!(run = %fetched.run_id, bytes = fetched.bytes, "run fetched from the remote");
    Ok(fetched)
}

async fn fetch_file(remote: &Remote, into: &Path, name: &str, sha: Option<&str>) -> Result<u64> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = into.join(name);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| Error::io("cannot create", &path, e))?;
    let mut s = remote.read(name).await?;
    let mut h = Sha256::new();
    let mut n = 0u64;
    while let Some(chunk) = s.next().await {
        let chunk = chunk.map_err(|e| remote_io(remote, "downloading", name, &e))?;
        h.update(&chunk);
        n += chunk.len() as u64;
        f.write_all(&chunk)
            .map_err(|e| Error::io("cannot write", &path, e))?;
    }
    let got = h.finish_hex();
    if let Some(want) = sha {
        if got != want {
            return Err(Error::from(RemoteError {
                op: "downloading",
                target: remote.display().to_string(),
                name: Some(name.to_string()),
                kind: RemoteErrorKind::Mismatch,
                detail: format!("sha256 {got}, the record says {want}: the remote copy is damaged"),
            }));
        }
    }
    Ok(n)
}
