//! Verification: proves that an artifact on disk is the complete, intact backup its run record says.
//!
//! One pass over the file checks, in order: it exists; its size equals the record's and exceeds the
//! kind's threshold; the whole stream decompresses (not just the header); the SHA-256 of the stored
//! bytes and of the decompressed stream equal the record's; the content is complete (a plain dump
//! ends with pg_dump's completion line; a bucket archive matches its object index). Each artifact
//! gets an [`Outcome`]; a bad artifact never stops the others from being checked.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use crate::archive::ArchiveExpectations;
use crate::catalog::{ArtifactKind, ArtifactRecord, Catalog, Entry, RunId, RunRecord, RunState};
use crate::config::Thresholds;
use crate::error::{Checksum, Error, Problem, Result};
use crate::ops::Selector;
use crate::pipeline::PlainReader;
use crate::sink::local::{BackupDir, TEMP_PREFIX};
use crate::source::postgres::{tail_is_complete, DUMPALL_COMPLETE, DUMP_COMPLETE};
use crate::units::human_bytes;

/// The minimum stored size for a kind (the seed: > 1 KiB for a database, > 512 B for a bucket).
fn min_for(th: &Thresholds, kind: ArtifactKind) -> u64 {
    match kind {
        ArtifactKind::Database => th.min_db_bytes,
        ArtifactKind::Volume => th.min_objects_bytes,
        // Roles alone are small; the completion line is the real check. A bucket archive is
        // checked object by object against its index: an empty bucket is a valid backup.
        ArtifactKind::Globals | ArtifactKind::Objects => 0,
    }
}

/// What `verify` was asked to check.
#[derive(Debug, Clone)]
pub enum Target {
    /// Every run and file in the backup directory.
    All,
    One(Selector),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ok(String),
    Failed(Problem),
    /// Not a backup, so not checked: failed or incomplete runs, unmanaged files.
    Skipped(String),
}

/// The check of one artifact (or of a run record that could not be used).
#[derive(Debug, Clone)]
pub struct ArtifactCheck {
    pub run_id: Option<RunId>,
    pub file: String,
    pub kind: Option<ArtifactKind>,
    pub stored_bytes: Option<u64>,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    pub checks: Vec<ArtifactCheck>,
}

impl VerifyReport {
    pub fn failed(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Failed(_)))
    }
    pub fn passed(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Ok(_)))
    }
    pub fn skipped(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Skipped(_)))
    }
    fn count(&self, f: impl Fn(&Outcome) -> bool) -> usize {
        self.checks.iter().filter(|c| f(&c.outcome)).count()
    }
}

/// Checks one recorded artifact against the file on disk; `Ok` carries a one-line summary.
pub fn check_artifact(
    dir: &Path,
    a: &ArtifactRecord,
    th: &Thresholds,
) -> std::result::Result<String, Problem> {
    let path = dir.join(&a.file);
    let meta = std::fs::metadata(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Problem::Missing {
            what: path.display().to_string(),
        },
        _ => Problem::Unreadable {
            what: path.display().to_string(),
            detail: e.to_string(),
        },
    })?;
    let size = meta.len();
    if size != a.stored_bytes {
        return Err(Problem::SizeMismatch {
            actual: size,
            recorded: a.stored_bytes,
        });
    }
    let min = min_for(th, a.kind);
    if min > 0 && size <= min {
        return Err(Problem::TooSmall {
            size,
            min,
            kind: a.kind.to_string(),
        });
    }
    let unreadable = |e: std::io::Error| Problem::Unreadable {
        what: path.display().to_string(),
        detail: e.to_string(),
    };
    let file = File::open(&path).map_err(unreadable)?;
    let mut reader = PlainReader::new(
        std::io::BufReader::with_capacity(256 * 1024, file),
        a.compression,
    )
    .map_err(|e| Problem::undecodable(format!("cannot start decompressing: {e}")))?;
    let index_path = a.index_file.as_ref().map(|f| dir.join(f));
    if let Some(p) = &index_path {
        check_sidecar(p, a.index_sha256.as_deref())?;
    }
    let exp = ArchiveExpectations {
        index_file: index_path.as_deref(),
        index_sha256: a.index_sha256.as_deref(),
        objects: a.objects,
    };
    let content = check_content(a.kind, &mut reader, &exp)?;
    let digest = reader.finish().map_err(|e| {
        Problem::undecodable(format!("{} stream does not decompress: {e}", a.compression))
    })?;
    if digest.stored_sha256 != a.stored_sha256 {
        return Err(Problem::ChecksumMismatch {
            what: Checksum::Stored,
            actual: digest.stored_sha256,
            recorded: a.stored_sha256.clone(),
        });
    }
    if digest.plain_sha256 != a.plain_sha256 || digest.plain_bytes != a.plain_bytes {
        return Err(Problem::PlainMismatch {
            bytes: digest.plain_bytes,
            sha256: digest.plain_sha256,
        });
    }
    Ok(format!(
        "sha256 ok, {} decompressed, {content}",
        human_bytes(digest.plain_bytes)
    ))
}

/// The object index beside a bucket archive must be there and be the one the run recorded: a
/// restore reads it (content types, metadata) before it reads the archive.
pub fn check_sidecar(path: &Path, recorded: Option<&str>) -> std::result::Result<(), Problem> {
    let (_, sha) = crate::pipeline::hash_file(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Problem::Missing {
            what: format!("the object index {}", path.display()),
        },
        _ => Problem::Unreadable {
            what: format!("the object index {}", path.display()),
            detail: e.to_string(),
        },
    })?;
    match recorded {
        Some(want) if want != sha => Err(Problem::ChecksumMismatch {
            what: Checksum::Index,
            actual: sha,
            recorded: want.to_string(),
        }),
        _ => Ok(()),
    }
}

/// Reads the whole plain stream and checks what it must contain for its kind.
fn check_content(
    kind: ArtifactKind,
    r: &mut dyn Read,
    exp: &ArchiveExpectations<'_>,
) -> std::result::Result<String, Problem> {
    match kind {
        ArtifactKind::Database | ArtifactKind::Globals => {
            let marker = if kind == ArtifactKind::Database {
                DUMP_COMPLETE
            } else {
                DUMPALL_COMPLETE
            };
            let tail = read_keeping_tail(r, 4096)?;
            if tail_is_complete(&tail, marker) {
                Ok("dump complete".into())
            } else {
                Err(Problem::IncompleteDump { marker })
            }
        }
        ArtifactKind::Objects | ArtifactKind::Volume => crate::archive::check_archive(kind, r, exp),
    }
}

fn read_keeping_tail(r: &mut dyn Read, keep: usize) -> std::result::Result<Vec<u8>, Problem> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut tail: Vec<u8> = Vec::with_capacity(keep * 2);
    loop {
        let n = r
            .read(&mut buf)
            .map_err(|e| Problem::undecodable(format!("stream does not decompress: {e}")))?;
        if n == 0 {
            return Ok(tail);
        }
        tail.extend_from_slice(&buf[..n]);
        if tail.len() > keep {
            tail.drain(..tail.len() - keep);
        }
    }
}

/// Runs `verify` over a target. Blocking: it reads whole files.
pub fn verify(dir: &BackupDir, th: &Thresholds, target: &Target) -> Result<VerifyReport> {
    let catalog = Catalog::new(dir.clone());
    let mut report = VerifyReport::default();
    match target {
        Target::All => check_all(dir, th, &catalog, &mut report)?,
        Target::One(Selector::Latest) => {
            let latest = catalog.latest_ok()?.ok_or_else(|| {
                Error::verification(
                    "latest",
                    Problem::NoGoodRun {
                        dir: dir.path().display().to_string(),
                    },
                )
            })?;
            check_entry(dir, th, &Entry::Record(Box::new(latest)), &mut report);
        }
        Target::One(Selector::Run(id)) => {
            let entry = match catalog.load(id) {
                Ok(r) => Entry::Record(Box::new(r)),
                Err(e) => Entry::Unreadable {
                    run_id: id.clone(),
                    file: id.record_file(),
                    error: e.to_string(),
                },
            };
            check_entry(dir, th, &entry, &mut report);
        }
        Target::One(Selector::File(path)) => check_file(dir, th, &catalog, path, &mut report)?,
    }
    Ok(report)
}

/// Every record's artifacts, then the files no record names (skipped as unmanaged).
fn check_all(
    dir: &BackupDir,
    th: &Thresholds,
    catalog: &Catalog,
    report: &mut VerifyReport,
) -> Result<()> {
    let mut named = std::collections::HashSet::new();
    for e in &catalog.entries()? {
        if let Entry::Record(r) = e {
            named.extend(r.artifacts.iter().map(|a| a.file.clone()));
        }
        check_entry(dir, th, e, report);
    }
    for name in dir.file_names()? {
        if name.starts_with(TEMP_PREFIX) || named.contains(&name) {
            continue;
        }
        if ArtifactKind::of_file_name(&name).is_some() {
            report.checks.push(ArtifactCheck {
                run_id: RunId::from_artifact_name(&name),
                file: name,
                kind: None,
                stored_bytes: None,
                outcome: Outcome::Skipped(
                    "unmanaged: no stackback run record names this file".into(),
                ),
            });
        }
    }
    Ok(())
}

/// One file: its artifact when a record of the directory names it, else a failure (nothing
/// proves an unrecorded file complete).
fn check_file(
    dir: &BackupDir,
    th: &Thresholds,
    catalog: &Catalog,
    path: &std::path::Path,
    report: &mut VerifyReport,
) -> Result<()> {
    let found = match Selector::file_in(path, dir.path()) {
        Some(name) => catalog.find_file(&name)?,
        None => None,
    };
    if let Some((rec, a)) = found {
        check_record_artifacts(dir, th, &rec, Some(&a.file), report);
        return Ok(());
    }
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let on_disk = if path.components().count() == 1 {
        dir.join(&path.display().to_string())
    } else {
        path.to_path_buf()
    };
    report.checks.push(ArtifactCheck {
        run_id: name.as_deref().and_then(RunId::from_artifact_name),
        file: on_disk.display().to_string(),
        kind: name.as_deref().and_then(ArtifactKind::of_file_name),
        stored_bytes: std::fs::metadata(&on_disk).ok().map(|m| m.len()),
        outcome: Outcome::Failed(Problem::Unrecorded {
            dir: dir.path().display().to_string(),
        }),
    });
    Ok(())
}

fn check_entry(dir: &BackupDir, th: &Thresholds, e: &Entry, report: &mut VerifyReport) {
    match e {
        Entry::Unreadable {
            run_id,
            file,
            error,
        } => report.checks.push(ArtifactCheck {
            run_id: Some(run_id.clone()),
            file: file.clone(),
            kind: None,
            stored_bytes: None,
            outcome: Outcome::Failed(Problem::RecordUnusable {
                detail: error.clone(),
            }),
        }),
        Entry::Record(r) => check_record_artifacts(dir, th, r, None, report),
    }
}

fn check_record_artifacts(
    dir: &BackupDir,
    th: &Thresholds,
    r: &RunRecord,
    only: Option<&str>,
    report: &mut VerifyReport,
) {
    let base = |file: &str, kind: Option<ArtifactKind>, outcome: Outcome| ArtifactCheck {
        run_id: Some(r.run_id.clone()),
        file: file.to_string(),
        kind,
        stored_bytes: None,
        outcome,
    };
    if !r.checksum_ok() {
        report.checks.push(base(
            &r.file_name(),
            None,
            Outcome::Failed(Problem::RecordModified),
        ));
        return;
    }
    let why_not = match r.status {
        RunState::Ok | RunState::Partial => None,
        RunState::Failed => Some(format!(
            "failed run ({}): not a backup",
            r.error.as_deref().unwrap_or("no error recorded")
        )),
        RunState::Running if dir.is_locked() => Some("run in progress".into()),
        RunState::Running | RunState::Incomplete | RunState::Unreadable => {
            Some("incomplete run (interrupted before it finished): not a backup".into())
        }
    };
    if let Some(why) = why_not {
        report
            .checks
            .push(base(&r.file_name(), None, Outcome::Skipped(why)));
        return;
    }
    for a in &r.artifacts {
        if only.is_some_and(|f| f != a.file) {
            continue;
        }
        let outcome = if !a.verification.ok {
            Outcome::Skipped(format!(
                "failed verification when written: {}",
                a.verification.detail
            ))
        } else {
            match check_artifact(dir.path(), a, th) {
                Ok(d) => Outcome::Ok(d),
                Err(p) => Outcome::Failed(p),
            }
        };
        let mut c = base(&a.file, Some(a.kind), outcome);
        c.stored_bytes = Some(a.stored_bytes);
        report.checks.push(c);
    }
}

/// `stackback verify`: the backup directory and thresholds from the configuration.
pub async fn run(cfg: &crate::config::Config, target: Target) -> Result<VerifyReport> {
    let th = *cfg.thresholds()?;
    let dir = BackupDir::open(&cfg.backup_dir())?;
    crate::ops::blocking("verification", move || verify(&dir, &th, &target)).await
}
