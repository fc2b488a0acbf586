//! Orchestration: each public function here is one command's worth of work, returning a typed
//! report. Nothing in `ops` prints; the CLI renders the reports.
//!
//! This module also owns backup selection: `latest`, a run id, or an artifact file
//! ([`Selector`]), resolved against the run records in one place for verify and restore.

pub mod anomaly;
pub mod backup;
pub mod daemon;
pub mod job;
pub mod list;
pub mod offsite;
pub mod prune;
pub mod restore;
pub mod restore_test;
pub mod setup;
pub mod verify;

use std::path::{Path, PathBuf};

use crate::catalog::{ArtifactKind, ArtifactRecord, Catalog, RunId, RunRecord};
use crate::error::{Error, Result};

/// Which backup a command means: `latest`, a run id (`YYYYMMDD_HHMMSS`), or an artifact file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    Latest,
    Run(RunId),
    File(PathBuf),
}

impl Selector {
    /// `latest`, a run id, or else a file (a bare name means the backup directory's file).
    pub fn parse(s: &str) -> Selector {
        if s == "latest" {
            return Selector::Latest;
        }
        match RunId::try_from(s.to_string()) {
            Ok(id) => Selector::Run(id),
            Err(_) => Selector::File(PathBuf::from(s)),
        }
    }

    /// For a file selector: its name when it is a file of the backup directory `dir` (a bare
    /// name, or a path whose directory is `dir`); `None` for a file elsewhere.
    pub fn file_in(path: &Path, dir: &Path) -> Option<String> {
        let name = path.file_name()?.to_str()?.to_string();
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
        match parent {
            None => Some(name),
            Some(p) => same_dir(p, dir).then_some(name),
        }
    }

    /// Pins `latest` to the run it means now, so several steps use the same run.
    pub fn pin(&self, catalog: &Catalog, kind: ArtifactKind) -> Result<Selector> {
        Ok(match self {
            Selector::Latest => Selector::Run(catalog.latest_with(kind)?.run_id),
            other => other.clone(),
        })
    }

    /// The verified artifacts of `kind` this selector names, with the run that holds them.
    ///
    /// # Errors
    /// [`Error::NoBackup`] when the selection holds no verified artifact of `kind`;
    /// [`Error::Usage`] for a file of another kind.
    pub fn artifacts(
        &self,
        catalog: &Catalog,
        kind: ArtifactKind,
    ) -> Result<(RunRecord, Vec<ArtifactRecord>)> {
        let dir = catalog.dir().path();
        let run = match self {
            Selector::Latest => catalog.latest_with(kind)?,
            Selector::Run(id) => {
                let r = catalog.load(id)?;
                if !r.has_good_artifacts() {
                    return Err(Error::NoBackup(format!(
                        "run {id} has status {}: it holds no backup to restore",
                        r.status
                    )));
                }
                r
            }
            Selector::File(p) => {
                let name = Selector::file_in(p, dir).ok_or_else(|| {
                    Error::NoBackup(format!(
                        "no run record in {} names {}: stackback cannot prove it complete",
                        dir.display(),
                        p.display()
                    ))
                })?;
                return match catalog.find_file(&name)? {
                    Some((r, a)) if a.kind != kind => Err(Error::Usage(format!(
                        "{name} (run {}) is a {} backup, not a {kind} backup",
                        r.run_id, a.kind
                    ))),
                    Some((r, a)) if r.has_good_artifacts() && a.verification.ok => Ok((r, vec![a])),
                    Some((r, _)) => Err(Error::NoBackup(format!(
                        "{name} belongs to run {} whose status is {}: it is not a verified backup",
                        r.run_id, r.status
                    ))),
                    None => Err(Error::NoBackup(format!(
                        "no run record in {} names {name}: stackback cannot prove it complete",
                        dir.display()
                    ))),
                };
            }
        };
        let arts: Vec<ArtifactRecord> = run.good_artifacts(kind).cloned().collect();
        if arts.is_empty() {
            return Err(Error::NoBackup(format!(
                "the selected run holds no verified {kind} backup"
            )));
        }
        Ok((run, arts))
    }
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Runs blocking work off the async runtime, turning a panic into an error.
pub(crate) async fn blocking<T, F>(what: &str, f: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::step(what, e))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_parse() {
        assert_eq!(Selector::parse("latest"), Selector::Latest);
        assert!(matches!(
            Selector::parse("20260101_020000"),
            Selector::Run(_)
        ));
        assert_eq!(
            Selector::parse("db_x_20260101_020000.sql.gz"),
            Selector::File("db_x_20260101_020000.sql.gz".into())
        );
    }

    #[test]
    fn files_elsewhere_are_not_the_directory_s() {
        let d = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        assert_eq!(
            Selector::file_in(Path::new("a.sql.gz"), d.path()).as_deref(),
            Some("a.sql.gz")
        );
        assert_eq!(
            Selector::file_in(&d.path().join("a.sql.gz"), d.path()).as_deref(),
            Some("a.sql.gz")
        );
        assert_eq!(
            Selector::file_in(&other.path().join("a.sql.gz"), d.path()),
            None
        );
    }
}
