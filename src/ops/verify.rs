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

use chrono::Utc;

use crate::catalog::{
    ArtifactKind, ArtifactRecord, Catalog, Entry, RunId, RunStatus, Verification,
};
use crate::error::{Error, Result};
use crate::pipeline::{Compression, PlainReader};
use crate::sink::local::{BackupDir, TEMP_PREFIX};
use crate::source::postgres::{tail_is_complete, DUMPALL_COMPLETE, DUMP_COMPLETE};

/// Minimum stored sizes, per kind (the seed: > 1 KiB for a database, > 512 B for a bucket).
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    pub min_db_bytes: u64,
    pub min_objects_bytes: u64,
}

impl Thresholds {
    fn min_for(&self, kind: ArtifactKind) -> u64 {
        match kind {
            ArtifactKind::Database => self.min_db_bytes,
            ArtifactKind::Objects | ArtifactKind::Volume => self.min_objects_bytes,
            // Roles alone are small; the completion line is the real check.
            ArtifactKind::Globals => 0,
        }
    }
}

/// What `verify` was asked to check.
#[derive(Debug, Clone)]
pub enum Target {
    /// The newest run with status ok.
    Latest,
    All,
    Run(RunId),
    /// A file in (or outside) the backup directory.
    File(std::path::PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ok(String),
    Failed(String),
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
        self.checks
            .iter()
            .filter(|c| matches!(c.outcome, Outcome::Failed(_)))
            .count()
    }
    pub fn passed(&self) -> usize {
        self.checks
            .iter()
            .filter(|c| matches!(c.outcome, Outcome::Ok(_)))
            .count()
    }
}

/// Checks one recorded artifact against the file on disk.
pub fn check_artifact(dir: &Path, a: &ArtifactRecord, th: &Thresholds) -> Verification {
    let result = check_inner(dir, a, th);
    Verification {
        ok: result.is_ok(),
        checked_at: Utc::now(),
        detail: match result {
            Ok(d) => d,
            Err(d) => d,
        },
    }
}

fn check_inner(
    dir: &Path,
    a: &ArtifactRecord,
    th: &Thresholds,
) -> std::result::Result<String, String> {
    let path = dir.join(&a.file);
    let meta = std::fs::metadata(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!("missing: {} does not exist", path.display()),
        _ => format!("cannot stat {}: {e}", path.display()),
    })?;
    let size = meta.len();
    if size != a.stored_bytes {
        return Err(format!(
            "size is {size} bytes, the run record says {} (truncated or replaced)",
            a.stored_bytes
        ));
    }
    let min = th.min_for(a.kind);
    if min > 0 && size <= min {
        return Err(format!(
            "only {size} bytes, at most the {min}-byte minimum for a {} backup (lower the threshold for a tiny {} if this is expected)",
            a.kind, a.kind
        ));
    }
    let file = File::open(&path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let mut reader = PlainReader::new(
        std::io::BufReader::with_capacity(256 * 1024, file),
        a.compression,
    )
    .map_err(|e| format!("cannot start decompressing: {e}"))?;
    let index_path = a.index_file.as_ref().map(|f| dir.join(f));
    let exp = crate::ops::archive::ArchiveExpectations {
        index_file: index_path.as_deref(),
        index_sha256: a.index_sha256.as_deref(),
        objects: a.objects,
    };
    if let Some(p) = &index_path {
        if !p.exists() {
            return Err(format!(
                "missing: the object index {} does not exist",
                p.display()
            ));
        }
    }
    let content = check_content(a.kind, &mut reader, &exp)?;
    let digest = reader
        .finish()
        .map_err(|e| format!("{} stream does not decompress: {e}", a.compression))?;
    if digest.stored_sha256 != a.stored_sha256 {
        return Err(format!(
            "sha256 of the file is {}, the run record says {}",
            digest.stored_sha256, a.stored_sha256
        ));
    }
    if digest.plain_sha256 != a.plain_sha256 || digest.plain_bytes != a.plain_bytes {
        return Err(format!(
            "decompressed content differs from the run record ({} bytes, sha256 {})",
            digest.plain_bytes, digest.plain_sha256
        ));
    }
    Ok(format!(
        "sha256 ok, {} decompressed, {content}",
        human_bytes(digest.plain_bytes)
    ))
}

/// Reads the whole plain stream and checks what it must contain for its kind.
fn check_content(
    kind: ArtifactKind,
    r: &mut dyn Read,
    exp: &crate::ops::archive::ArchiveExpectations<'_>,
) -> std::result::Result<String, String> {
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
                Err(format!(
                    "the dump does not end with {marker:?}: pg_dump did not finish writing it"
                ))
            }
        }
        ArtifactKind::Objects | ArtifactKind::Volume => {
            crate::ops::archive::check_archive(kind, r, exp)
        }
    }
}

fn read_keeping_tail(r: &mut dyn Read, keep: usize) -> std::result::Result<Vec<u8>, String> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut tail: Vec<u8> = Vec::with_capacity(keep * 2);
    loop {
        let n = r
            .read(&mut buf)
            .map_err(|e| format!("stream does not decompress: {e}"))?;
        if n == 0 {
            return Ok(tail);
        }
        tail.extend_from_slice(&buf[..n]);
        if tail.len() > keep {
            tail.drain(..tail.len() - keep);
        }
    }
}

/// Runs `verify` over a target.
pub fn verify(dir: &BackupDir, th: &Thresholds, target: &Target) -> Result<VerifyReport> {
    let catalog = Catalog::new(dir.clone());
    let mut report = VerifyReport::default();
    match target {
        Target::All => {
            let entries = catalog.entries()?;
            let mut named = std::collections::HashSet::new();
            for e in &entries {
                if let Entry::Record(r) = e {
                    for a in &r.artifacts {
                        named.insert(a.file.clone());
                    }
                }
                check_entry(dir, th, e, &mut report);
            }
            for name in dir.file_names()? {
                if name.starts_with(TEMP_PREFIX) || named.contains(&name) {
                    continue;
                }
                if crate::ops::list::artifact_kind_of(&name).is_some() {
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
        }
        Target::Latest => {
            let latest = catalog
                .records()?
                .into_iter()
                .rev()
                .find(|r| r.status == RunStatus::Ok)
                .ok_or_else(|| {
                    Error::Verification(format!(
                        "no successful run recorded in {}: nothing to verify",
                        dir.path().display()
                    ))
                })?;
            check_entry(dir, th, &Entry::Record(Box::new(latest)), &mut report);
        }
        Target::Run(id) => {
            let entry = match catalog.load(id) {
                Ok(r) => Entry::Record(Box::new(r)),
                Err(e) => Entry::Unreadable {
                    run_id: id.clone(),
                    file: crate::catalog::RunRecord::file_name(id),
                    error: e.to_string(),
                },
            };
            check_entry(dir, th, &entry, &mut report);
        }
        Target::File(path) => {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| Error::Usage(format!("{} is not a file name", path.display())))?
                .to_string();
            let in_dir = path
                .parent()
                .map(|p| p.as_os_str().is_empty())
                .unwrap_or(true)
                || same_dir(path.parent().unwrap(), dir.path());
            let found = if in_dir {
                catalog.find_file(&name)?
            } else {
                None
            };
            match found {
                Some((rec, a)) => check_record_artifacts(dir, th, &rec, Some(&a.file), &mut report),
                None => report.checks.push(ArtifactCheck {
                    run_id: RunId::from_artifact_name(&name),
                    file: path.display().to_string(),
                    kind: crate::ops::list::artifact_kind_of(&name),
                    stored_bytes: std::fs::metadata(path).ok().map(|m| m.len()),
                    outcome: Outcome::Failed(format!(
                        "no run record in {} names this file, so nothing proves it complete (a file of another tool, or its run record is missing)",
                        dir.path().display()
                    )),
                }),
            }
        }
    }
    Ok(report)
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
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
            outcome: Outcome::Failed(format!("run record unusable: {error}")),
        }),
        Entry::Record(r) => check_record_artifacts(dir, th, r, None, report),
    }
}

fn check_record_artifacts(
    dir: &BackupDir,
    th: &Thresholds,
    r: &crate::catalog::RunRecord,
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
            &crate::catalog::RunRecord::file_name(&r.run_id),
            None,
            Outcome::Failed("run record was modified after stackback wrote it (its self-checksum does not match): its artifacts cannot be trusted".into()),
        ));
        return;
    }
    let why_not = match r.status {
        RunStatus::Ok | RunStatus::Partial => None,
        RunStatus::Failed => Some(format!(
            "failed run ({}): not a backup",
            r.error.as_deref().unwrap_or("no error recorded")
        )),
        RunStatus::Running if dir.is_locked() => Some("run in progress".into()),
        RunStatus::Running => {
            Some("incomplete run (interrupted before it finished): not a backup".into())
        }
    };
    if let Some(why) = why_not {
        report.checks.push(base(
            &crate::catalog::RunRecord::file_name(&r.run_id),
            None,
            Outcome::Skipped(why),
        ));
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
            let v = check_artifact(dir.path(), a, th);
            if v.ok {
                Outcome::Ok(v.detail)
            } else {
                Outcome::Failed(v.detail)
            }
        };
        let mut c = base(&a.file, Some(a.kind), outcome);
        c.stored_bytes = Some(a.stored_bytes);
        report.checks.push(c);
    }
}

/// `1.5 MiB`, `812 B`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Decompresses `path` (compression guessed from its name) into `out`: the restore side's reader.
pub fn open_plain(
    path: &Path,
    compression: Compression,
) -> Result<PlainReader<std::io::BufReader<File>>> {
    let f = File::open(path).map_err(|e| Error::io("cannot open", path, e))?;
    PlainReader::new(
        std::io::BufReader::with_capacity(256 * 1024, f),
        compression,
    )
    .map_err(|e| Error::io("cannot decompress", path, e))
}
