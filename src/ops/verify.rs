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

use crate::archive::{ArchiveExpectations, ArchiveSeen};
use crate::catalog::{
    ArtifactKind, ArtifactRecord, Catalog, Entry, RunId, RunRecord, RunState, VerifyLevel,
};
use crate::config::Thresholds;
use crate::crypt::{Identities, UnsealError};
use crate::error::{Checksum, Error, Problem, Result};
use crate::ops::Selector;
use crate::pipeline::OpenError;
use crate::sink::local::{BackupDir, TEMP_PREFIX};
use crate::source::postgres::{tail_is_complete, DUMPALL_COMPLETE, DUMP_COMPLETE};

mod stream;
pub use stream::{check_followed, Followed};

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
    /// Encrypted, and this host's identity cannot open it (a settings problem: exit 2).
    Unopenable(String),
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
    pub fn unopenable(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Unopenable(_)))
    }
    pub fn skipped(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Skipped(_)))
    }
    fn count(&self, f: impl Fn(&Outcome) -> bool) -> usize {
        self.checks.iter().filter(|c| f(&c.outcome)).count()
    }
}

/// Why an artifact check did not pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckError {
    /// The backup is bad (exit 3).
    Bad(Problem),
    /// This host cannot decrypt it (exit 2): the backup itself may be fine.
    Key(String),
}

impl From<Problem> for CheckError {
    fn from(p: Problem) -> Self {
        CheckError::Bad(p)
    }
}

impl std::fmt::Display for CheckError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CheckError::Bad(p) => p.fmt(f),
            CheckError::Key(k) => f.write_str(k),
        }
    }
}

/// What a passed check found, and how deep it went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub detail: String,
    pub level: VerifyLevel,
}

/// How a full check proves the decompressed content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlainProof {
    /// Its checksum against the record's (`plain_blake3`, or `plain_sha256` in records of
    /// schema 1-2), and each bucket object's SHA-256 against the index: `verify`, on a file of
    /// any age.
    Hash,
    /// The codec's own checksums (each gzip member's CRC-32 and size, zstd's frame checksum,
    /// age's MACs), computed from the plain bytes as they were written, plus the stored SHA-256:
    /// the run's check of a file it has just written and hashed on the way in. It skips a second
    /// single-core SHA-256 pass over the plain bytes.
    Codec,
}

/// Checks one recorded artifact against the file on disk. A sealed artifact is checked in full
/// with `ids`, and at the stored level without.
pub fn check_artifact(
    dir: &Path,
    a: &ArtifactRecord,
    th: &Thresholds,
    ids: Option<&Identities>,
    proof: PlainProof,
) -> std::result::Result<Checked, CheckError> {
    let path = dir.join(&a.file);
    check_size(&path, a, th)?;
    let sidecar = a.index_file.as_ref().map(|f| dir.join(f));
    if let Some(p) = &sidecar {
        check_sidecar(p, a, ids)?;
    }
    if a.sealed() && ids.is_none() {
        let detail = stream::check_sealed_file(&path, a)?;
        return Ok(Checked {
            detail,
            level: VerifyLevel::Stored,
        });
    }
    let want = a.plain_sum().ok_or_else(|| stream::no_plain_sum(a))?;
    let what = path.display().to_string();
    let file = File::open(&path).map_err(|e| Problem::Unreadable {
        what: what.clone(),
        detail: e.to_string(),
    })?;
    // A sealed index is proven above against the same plain checksum the archive's own copy
    // must match: the archive is checked against that copy, with no plaintext written anywhere.
    let how = stream::Reading {
        kind: a.kind,
        compression: a.compression,
        sealed: a.sealed(),
        ids,
        hash_plain: (proof == PlainProof::Hash).then_some(want.algo),
        exp: ArchiveExpectations {
            index_file: sidecar.as_deref().filter(|_| !a.sealed()),
            index_sha256: a.index_sha256.as_deref(),
            objects: a.objects,
            hash_objects: proof == PlainProof::Hash,
        },
    };
    let seen = stream::read_stream(file, &how, &what)?;
    stream::judge(&seen, a, proof)
}

/// The file exists, has the recorded size, and is above the kind's threshold.
fn check_size(
    path: &Path,
    a: &ArtifactRecord,
    th: &Thresholds,
) -> std::result::Result<(), Problem> {
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
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
    Ok(())
}

/// A reader that could not be opened: a key problem, or damage.
fn open_error(e: OpenError) -> CheckError {
    match e {
        OpenError::NoIdentity => CheckError::Key(e.to_string()),
        OpenError::Unseal(UnsealError::NoMatchingKey) => CheckError::Key(e.to_string()),
        OpenError::Unseal(UnsealError::Corrupt(d)) => {
            CheckError::Bad(Problem::undecodable(format!("age header: {d}")))
        }
        OpenError::Unseal(UnsealError::Io(e)) => {
            CheckError::Bad(Problem::undecodable(format!("cannot start reading: {e}")))
        }
    }
}

/// The object index beside a bucket archive must be there and be the one the run recorded: a
/// restore reads it (content types, metadata) before it reads the archive. A sealed index is
/// checked as stored (its ciphertext's checksum), and decrypted to its plain checksum when `ids`
/// are given.
pub fn check_sidecar(
    path: &Path,
    a: &ArtifactRecord,
    ids: Option<&Identities>,
) -> std::result::Result<(), CheckError> {
    let what = || format!("the object index {}", path.display());
    let missing = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::NotFound => Problem::Missing { what: what() },
        _ => Problem::Unreadable {
            what: what(),
            detail: e.to_string(),
        },
    };
    let (_, sha) = crate::pipeline::hash_file(path).map_err(missing)?;
    let stored_want = if a.sealed() {
        a.index_stored_sha256.as_deref()
    } else {
        a.index_sha256.as_deref()
    };
    if let Some(want) = stored_want.filter(|w| *w != sha) {
        return Err(CheckError::Bad(Problem::ChecksumMismatch {
            what: Checksum::Index,
            actual: sha,
            recorded: want.to_string(),
        }));
    }
    if let (true, Some(ids), Some(want)) = (a.sealed(), ids, a.index_sha256.as_deref()) {
        let f = File::open(path).map_err(missing)?;
        let plain = crate::crypt::unseal(f, ids).map_err(|e| open_error(e.into()))?;
        let mut r = crate::pipeline::HashReader::new(plain);
        std::io::copy(&mut r, &mut std::io::sink())
            .map_err(|e| Problem::undecodable(format!("{}: {e}", what())))?;
        let (_, got) = r.finish();
        if got != want {
            return Err(CheckError::Bad(Problem::ChecksumMismatch {
                what: Checksum::Index,
                actual: got,
                recorded: want.to_string(),
            }));
        }
    }
    Ok(())
}

/// Reads the whole plain stream and checks what it must contain for its kind.
fn check_content(
    kind: ArtifactKind,
    r: &mut dyn Read,
    exp: &ArchiveExpectations<'_>,
) -> std::result::Result<ArchiveSeen, Problem> {
    match kind {
        ArtifactKind::Database | ArtifactKind::Globals => {
            let marker = if kind == ArtifactKind::Database {
                DUMP_COMPLETE
            } else {
                DUMPALL_COMPLETE
            };
            let tail = read_keeping_tail(r, 4096)?;
            if tail_is_complete(&tail, marker) {
                Ok(ArchiveSeen {
                    detail: "dump complete".into(),
                    objects: None,
                    index_sha256: None,
                })
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

/// What every check of one `verify` needs.
struct Ctx<'a> {
    dir: &'a BackupDir,
    th: &'a Thresholds,
    ids: Option<&'a Identities>,
}

/// Runs `verify` over a target. Blocking: it reads whole files. Sealed artifacts are checked in
/// full with `ids`, at the stored level without.
pub fn verify(
    dir: &BackupDir,
    th: &Thresholds,
    ids: Option<&Identities>,
    target: &Target,
) -> Result<VerifyReport> {
    let ctx = Ctx { dir, th, ids };
    let catalog = Catalog::new(dir.clone());
    let mut report = VerifyReport::default();
    match target {
        Target::All => check_all(&ctx, &catalog, &mut report)?,
        Target::One(Selector::Latest) => {
            let latest = catalog.latest_ok()?.ok_or_else(|| {
                Error::verification(
                    "latest",
                    Problem::NoGoodRun {
                        dir: dir.path().display().to_string(),
                    },
                )
            })?;
            check_entry(&ctx, &Entry::Record(Box::new(latest)), &mut report);
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
            check_entry(&ctx, &entry, &mut report);
        }
        Target::One(Selector::File(path)) => check_file(&ctx, &catalog, path, &mut report)?,
    }
    Ok(report)
}

/// Every record's artifacts, then the files no record names (skipped as unmanaged).
fn check_all(ctx: &Ctx<'_>, catalog: &Catalog, report: &mut VerifyReport) -> Result<()> {
    let dir = ctx.dir;
    let mut named = std::collections::HashSet::new();
    for e in &catalog.entries()? {
        if let Entry::Record(r) = e {
            named.extend(r.artifacts.iter().map(|a| a.file.clone()));
        }
        check_entry(ctx, e, report);
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
    ctx: &Ctx<'_>,
    catalog: &Catalog,
    path: &std::path::Path,
    report: &mut VerifyReport,
) -> Result<()> {
    let dir = ctx.dir;
    let found = match Selector::file_in(path, dir.path()) {
        Some(name) => catalog.find_file(&name)?,
        None => None,
    };
    if let Some((rec, a)) = found {
        check_record_artifacts(ctx, &rec, Some(&a.file), report);
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

fn check_entry(ctx: &Ctx<'_>, e: &Entry, report: &mut VerifyReport) {
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
        Entry::Record(r) => check_record_artifacts(ctx, r, None, report),
    }
}

fn check_record_artifacts(
    ctx: &Ctx<'_>,
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
        RunState::Running if ctx.dir.is_locked() => Some("run in progress".into()),
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
            match check_artifact(ctx.dir.path(), a, ctx.th, ctx.ids, PlainProof::Hash) {
                Ok(c) => Outcome::Ok(c.detail),
                Err(CheckError::Bad(p)) => Outcome::Failed(p),
                Err(CheckError::Key(k)) => Outcome::Unopenable(k),
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
    let ids = cfg.identities()?;
    crate::ops::blocking("verification", move || {
        verify(&dir, &th, ids.as_deref(), &target)
    })
    .await
}
