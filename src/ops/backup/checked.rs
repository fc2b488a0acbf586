//! The run's check of each new file, and the artifact's place in the record: a writer whose file
//! is read back as it is written ([`crate::sink::follow`]), the judgement of what was read once the
//! file is committed, the check after the commit for files that are not followed (volume
//! archives), and what a failed check removes.

use super::*;

impl RunCtx<'_> {
    /// Judges what [`Self::followed_writer`]'s check read against the committed file and its
    /// record, and adds the artifact to the record (a failed check removes its files). The file's
    /// SHA-256 is the one that check read: the writer computed only its BLAKE3, which the
    /// judgement compares with the file's.
    pub(super) async fn judge_and_add(
        &mut self,
        mut art: ArtifactRecord,
        followed: Followed,
    ) -> Result<()> {
        if let Some(sha) = followed.stored_sha256() {
            art.stored_sha256 = sha.to_string();
        }
        let (dir, th) = (self.dir.path().to_path_buf(), self.cfg.thresholds);
        let ids = self.cfg.identities.clone();
        let judged = art.clone();
        let checked = crate::ops::blocking("verification", move || {
            Ok(followed.judge(&dir, &judged, &th, ids.as_deref()))
        })
        .await?;
        self.add_checked(art, checked)
    }

    /// A writer of `name`, and the run's check of what it writes, started on a thread of its own:
    /// it reads the file while the source still produces, instead of after
    /// (see [`crate::sink::follow`]), and takes the file's SHA-256 on the way.
    pub(super) fn followed_writer(
        &self,
        name: &str,
        kind: ArtifactKind,
    ) -> Result<(ArtifactWriter, tokio::sync::oneshot::Receiver<Followed>)> {
        let store = self.cfg.store;
        let (w, f) = ArtifactWriter::followed(
            self.dir,
            name,
            store.compression,
            store.compression_level,
            self.cfg.recipients.as_deref(),
        )?;
        let compression = store.compression;
        let sealed = self.cfg.recipients.is_some();
        let ids = self.cfg.identities.clone();
        // A thread of its own at background priority (not tokio's pool, whose threads cannot
        // be given their priority back): the source and the writer come first.
        let check = crate::pipeline::priority::spawn("check", move || {
            check_followed(f, kind, compression, sealed, ids.as_deref())
        })
        .map_err(|e| Error::step("verification", format!("cannot start its thread: {e}")))?;
        Ok((w, check))
    }

    /// Verifies the artifact from disk and adds it to the record; a failed check removes the file.
    pub(super) async fn verify_and_add(&mut self, art: ArtifactRecord) -> Result<()> {
        let dir = self.dir.path().to_path_buf();
        let th = self.cfg.thresholds;
        let to_check = art.clone();
        let ids = self.cfg.identities.clone();
        let checked = crate::ops::blocking("verification", move || {
            Ok(crate::ops::verify::check_artifact(
                &dir,
                &to_check,
                &th,
                ids.as_deref(),
                crate::ops::verify::PlainProof::Codec,
            ))
        })
        .await?;
        self.add_checked(art, checked)
    }

    /// Records a check's result on the artifact and adds it to the record; a failed check removes
    /// the file.
    fn add_checked(
        &mut self,
        mut art: ArtifactRecord,
        checked: std::result::Result<Checked, CheckError>,
    ) -> Result<()> {
        let (ok, detail, level) = match &checked {
            Ok(c) => (true, in_stream_note(art.kind, c), c.level),
            Err(e) => (false, e.to_string(), VerifyLevel::Full),
        };
        info!(file = %art.file, ok, level = %level, detail = %detail, "verified");
        art.verification = Verification {
            ok,
            checked_at: Utc::now(),
            detail,
            level,
        };
        if let Err(e) = checked {
            for f in art.files() {
                self.dir.remove(f)?;
            }
            return Err(match e {
                CheckError::Bad(problem) => Error::verification(&art.file, problem),
                // The identity of this host is not among the recipients: a settings problem.
                CheckError::Key(detail) => Error::Key {
                    file: art.file.clone(),
                    detail,
                },
            });
        }
        self.rec.artifacts.push(art);
        Ok(())
    }
}
