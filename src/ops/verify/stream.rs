//! One pass over a stored stream ([`read_stream`]) and its comparison with the run record
//! ([`judge`]), apart from the file's name. [`super::check_artifact`] feeds them a file on disk; a
//! run feeds them a [`Follower`] of the file it is still writing ([`check_followed`]) and judges
//! what was seen once the file is committed and its record made ([`Followed::judge`]).

use std::io::{BufReader, Read};
use std::path::Path;

use super::{
    check_content, check_sidecar, check_size, open_error, CheckError, Checked, PlainProof,
};
use crate::archive::{ArchiveExpectations, ArchiveSeen};
use crate::catalog::{ArtifactKind, ArtifactRecord, VerifyLevel};
use crate::config::Thresholds;
use crate::crypt::Identities;
use crate::error::{Checksum, Problem};
use crate::pipeline::{
    Compression, Opening, PlainAlgo, PlainReader, PlainSum, StoredReader, StoredSums,
};
use crate::sink::follow::{FileId, Follower};
use crate::units::human_bytes;

/// What the check of a sealed file without its identity says it proved.
pub(super) const STORED_LEVEL: &str =
    "stored level: sha256 of the ciphertext ok, age header ok (no identity here for a full check)";

/// How to read one stored stream.
pub(super) struct Reading<'a> {
    pub kind: ArtifactKind,
    pub compression: Compression,
    pub sealed: bool,
    pub ids: Option<&'a Identities>,
    /// Hash the plain side with this algorithm (`None`: the codec's checksums prove it).
    pub hash_plain: Option<PlainAlgo>,
    pub exp: ArchiveExpectations<'a>,
}

/// What one full pass saw.
#[derive(Debug)]
pub(super) struct Seen {
    stored: StoredSums,
    plain_bytes: u64,
    plain_sum: Option<PlainSum>,
    /// What the content check found (`dump complete`, `5 objects match the index, ...`).
    content: ArchiveSeen,
    opened: bool,
}

fn unreadable(what: &str) -> impl Fn(std::io::Error) -> Problem + '_ {
    move |e| Problem::Unreadable {
        what: what.to_string(),
        detail: e.to_string(),
    }
}

/// Reads the whole stream once: the seal (with `how.ids`), the codec, the content. `what` names the
/// stream in errors.
pub(super) fn read_stream(
    r: impl Read,
    how: &Reading<'_>,
    what: &str,
) -> std::result::Result<Seen, CheckError> {
    let opening = Opening {
        compression: how.compression,
        unseal: how.ids,
        sealed: how.sealed,
    };
    let mut reader =
        PlainReader::open(BufReader::with_capacity(256 * 1024, r), opening).map_err(open_error)?;
    reader = match how.hash_plain {
        None => reader.without_plain_hash(),
        Some(algo) => reader.hashing_plain(algo).map_err(unreadable(what))?,
    };
    let content = check_content(how.kind, &mut reader, &how.exp)?;
    let digest = reader.finish().map_err(|e| {
        Problem::undecodable(format!(
            "{} stream does not decompress: {e}",
            how.compression
        ))
    })?;
    Ok(Seen {
        stored: digest.stored,
        plain_bytes: digest.plain_bytes,
        plain_sum: digest.plain_sum,
        content,
        opened: how.sealed,
    })
}

/// Compares a full pass with the record: the stored checksum, then the plain side.
pub(super) fn judge(
    seen: &Seen,
    a: &ArtifactRecord,
    proof: PlainProof,
) -> std::result::Result<Checked, CheckError> {
    stored_matches(&seen.stored, a)?;
    let want = a.plain_sum().ok_or_else(|| no_plain_sum(a))?;
    // A full check that computed no plain sum proves nothing of the plain side: that is a failure.
    let plain_differs = match (&seen.plain_sum, proof) {
        (Some(sum), _) => *sum != want,
        (None, PlainProof::Codec) => false,
        (None, PlainProof::Hash) => true,
    };
    if plain_differs || seen.plain_bytes != a.plain_bytes {
        return Err(CheckError::Bad(Problem::PlainMismatch {
            bytes: seen.plain_bytes,
            sum: seen
                .plain_sum
                .as_ref()
                .map_or_else(|| "not computed".into(), |s| s.to_string()),
        }));
    }
    let opened = if seen.opened { "decrypted, " } else { "" };
    Ok(Checked {
        detail: format!(
            "sha256 ok, {opened}{} decompressed, {}",
            human_bytes(seen.plain_bytes),
            seen.content.detail
        ),
        level: VerifyLevel::Full,
    })
}

pub(super) fn no_plain_sum(a: &ArtifactRecord) -> CheckError {
    CheckError::Bad(Problem::undecodable(format!(
        "the run record keeps no plain checksum for {}",
        a.file
    )))
}

/// The stored sums against the record: the SHA-256 always, the BLAKE3 when the record keeps one
/// (runs before it existed do not), and the size.
fn stored_matches(seen: &StoredSums, a: &ArtifactRecord) -> std::result::Result<(), Problem> {
    let mismatch = |actual: &str, recorded: &str| Problem::ChecksumMismatch {
        what: Checksum::Stored,
        actual: actual.to_string(),
        recorded: recorded.to_string(),
    };
    let sha = seen.sha256.as_deref().unwrap_or("not computed");
    if sha != a.stored_sha256 {
        return Err(mismatch(sha, &a.stored_sha256));
    }
    if let Some(want) = &a.stored_blake3 {
        let got = seen.blake3.as_deref().unwrap_or("not computed");
        if got != want {
            return Err(mismatch(got, want));
        }
    }
    if seen.bytes != a.stored_bytes {
        return Err(Problem::SizeMismatch {
            actual: seen.bytes,
            recorded: a.stored_bytes,
        });
    }
    Ok(())
}

/// The stored level of a sealed stream: its sums and size, and a well-formed age header.
pub(super) fn read_sealed(r: impl Read, what: &str) -> std::result::Result<StoredSums, Problem> {
    let mut hashed = StoredReader::new(r);
    let mut buffered = BufReader::with_capacity(256 * 1024, &mut hashed);
    crate::crypt::check_header(&mut buffered)
        .map_err(|e| Problem::undecodable(format!("not an age file: {e}")))?;
    std::io::copy(&mut buffered, &mut std::io::sink()).map_err(unreadable(what))?;
    drop(buffered);
    Ok(hashed.finish())
}

/// The stored level of a sealed file against its record.
pub(super) fn check_sealed_file(
    path: &Path,
    a: &ArtifactRecord,
) -> std::result::Result<String, Problem> {
    let what = path.display().to_string();
    let f = std::fs::File::open(path).map_err(unreadable(&what))?;
    stored_matches(&read_sealed(f, &what)?, a)?;
    Ok(STORED_LEVEL.into())
}

/// What a run saw of a file while writing it, to be judged once it is committed and recorded.
#[derive(Debug)]
pub struct Followed {
    id: FileId,
    seen: std::result::Result<SeenAs, CheckError>,
}

#[derive(Debug)]
enum SeenAs {
    Full(Seen),
    /// Sealed, and this host has no identity: the ciphertext only.
    Stored(StoredSums),
}

/// Reads a new artifact through `f` as the run writes it, to the end the writer marks: the run's
/// own check ([`PlainProof::Codec`]), sealed files at the stored level without `ids`. A bucket
/// archive's entries are checked against the index inside it (its index file is complete only
/// after the archive); [`Followed::judge`] then binds that index to the record and to the file.
pub fn check_followed(
    f: Follower,
    kind: ArtifactKind,
    compression: Compression,
    sealed: bool,
    ids: Option<&Identities>,
) -> Followed {
    let id = f.file_id();
    let what = "the file being written";
    let seen = if sealed && ids.is_none() {
        read_sealed(f, what)
            .map(SeenAs::Stored)
            .map_err(CheckError::Bad)
    } else {
        let how = Reading {
            kind,
            compression,
            sealed,
            ids,
            hash_plain: None,
            exp: ArchiveExpectations {
                index_file: None,
                index_sha256: None,
                objects: None,
                hash_objects: false,
            },
        };
        read_stream(f, &how, what).map(SeenAs::Full)
    };
    Followed { id, seen }
}

impl Followed {
    /// The SHA-256 of the stored file as this check read it (`None` when the check failed).
    pub fn stored_sha256(&self) -> Option<&str> {
        let sums = match &self.seen {
            Ok(SeenAs::Full(seen)) => &seen.stored,
            Ok(SeenAs::Stored(sums)) => sums,
            Err(_) => return None,
        };
        sums.sha256.as_deref()
    }

    /// Judges what was read against the committed file in `dir` and its record: the name leads to
    /// the inode that was read, of the recorded size, above the kind's minimum; a bucket archive's
    /// index file is the recorded one; then the checksums, and for a bucket archive its index
    /// inside (the recorded one, so the same as the file beside it) and its object count.
    pub fn judge(
        self,
        dir: &Path,
        a: &ArtifactRecord,
        th: &Thresholds,
        ids: Option<&Identities>,
    ) -> std::result::Result<Checked, CheckError> {
        let path = dir.join(&a.file);
        check_size(&path, a, th)?;
        if let Some(index) = &a.index_file {
            check_sidecar(&dir.join(index), a, ids)?;
        }
        let meta = std::fs::metadata(&path).map_err(unreadable(&path.display().to_string()))?;
        // What binds the file read to the bytes written: a writer that left the SHA-256 to this
        // check still computed the BLAKE3.
        if a.stored_blake3.is_none() {
            return Err(CheckError::Bad(Problem::undecodable(format!(
                "the run recorded no stored BLAKE3 for {}: nothing binds the file read back to \
                 what was written",
                a.file
            ))));
        }
        if FileId::of(&meta) != self.id {
            return Err(CheckError::Bad(Problem::Unreadable {
                what: path.display().to_string(),
                detail: "it is not the file that was read back while it was written".into(),
            }));
        }
        match self.seen? {
            SeenAs::Full(seen) => {
                let index_differs = a
                    .index_sha256
                    .as_ref()
                    .is_some_and(|want| seen.content.index_sha256.as_ref() != Some(want));
                if index_differs {
                    return Err(CheckError::Bad(Problem::ChecksumMismatch {
                        what: Checksum::Index,
                        actual: seen.content.index_sha256.clone().unwrap_or_default(),
                        recorded: a.index_sha256.clone().unwrap_or_default(),
                    }));
                }
                if seen.content.objects != a.objects {
                    return Err(CheckError::Bad(Problem::index(format!(
                        "the archive holds {:?} objects, the run record says {:?}",
                        seen.content.objects, a.objects
                    ))));
                }
                judge(&seen, a, PlainProof::Codec)
            }
            SeenAs::Stored(sums) => {
                stored_matches(&sums, a)?;
                Ok(Checked {
                    detail: STORED_LEVEL.into(),
                    level: VerifyLevel::Stored,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Seek, SeekFrom, Write};

    use super::*;
    use crate::catalog::{Encryption, Verification};
    use crate::crypt::Recipients;
    use crate::pipeline::Digest;
    use crate::sink::local::{ArtifactWriter, BackupDir};

    const TH: Thresholds = Thresholds {
        min_db_bytes: 0,
        min_objects_bytes: 0,
    };

    fn dump() -> Vec<u8> {
        let mut d = b"-- PostgreSQL database dump\n".to_vec();
        for i in 0..60_000u32 {
            writeln!(
                d,
                "{i}\tname {}\t{}",
                i % 977,
                i.wrapping_mul(2_654_435_761)
            )
            .unwrap();
        }
        d.extend_from_slice(b"--\n-- PostgreSQL database dump complete\n--\n\n");
        d
    }

    fn record(name: &str, c: Compression, sealed: bool, d: &Digest) -> ArtifactRecord {
        ArtifactRecord {
            kind: ArtifactKind::Database,
            file: name.into(),
            source: "app".into(),
            compression: c,
            stored_bytes: d.stored_bytes,
            stored_sha256: d.stored_sha256.clone().unwrap_or_default(),
            stored_blake3: Some(d.stored_blake3.clone()),
            plain_bytes: d.plain_bytes,
            plain_blake3: Some(d.plain_blake3.clone()),
            plain_sha256: None,
            started_at: chrono::Utc::now(),
            duration_ms: 1,
            objects: None,
            index_file: None,
            index_sha256: None,
            index_stored_sha256: None,
            encryption: sealed.then_some(Encryption::Age),
            skipped: Vec::new(),
            verification: Verification {
                ok: false,
                checked_at: chrono::Utc::now(),
                detail: String::new(),
                level: VerifyLevel::Full,
            },
        }
    }

    /// Writes `dump()` through an [`ArtifactWriter`] with a follower opened first; `damage` runs
    /// on the committed file before the follower reads anything. Returns the judgement.
    fn followed_run(
        c: Compression,
        recipients: Option<&Recipients>,
        damage: impl FnOnce(&Path),
    ) -> std::result::Result<Checked, CheckError> {
        let tmp = tempfile::tempdir().unwrap();
        let dir = BackupDir::create(&tmp.path().join("b")).unwrap();
        let name = format!("db_app.sql{}", c.extension());
        let (mut w, f) = ArtifactWriter::followed(&dir, &name, c, None, recipients).unwrap();
        w.sink().write_all(&dump()).unwrap();
        let digest = w.commit().unwrap();
        assert_eq!(digest.stored_sha256, None, "the follower computes it");
        damage(&dir.path().join(&name));
        let followed = check_followed(f, ArtifactKind::Database, c, recipients.is_some(), None);
        // As a run records it: the SHA-256 the follower read.
        let mut a = record(&name, c, recipients.is_some(), &digest);
        a.stored_sha256 = followed.stored_sha256().unwrap_or_default().to_string();
        followed.judge(dir.path(), &a, &TH, None)
    }

    fn flip_byte(path: &Path, at: u64) {
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        let mut b = [0u8; 1];
        f.seek(SeekFrom::Start(at)).unwrap();
        std::io::Read::read_exact(&mut f, &mut b).unwrap();
        f.seek(SeekFrom::Start(at)).unwrap();
        f.write_all(&[b[0] ^ 0x10]).unwrap();
    }

    #[test]
    fn a_followed_check_passes_an_intact_file_in_full() {
        for c in [Compression::Gzip, Compression::Zstd, Compression::None] {
            let checked = followed_run(c, None, |_| {}).unwrap();
            assert_eq!(checked.level, VerifyLevel::Full, "{c}");
            assert!(
                checked.detail.ends_with("dump complete"),
                "{c}: {}",
                checked.detail
            );
        }
    }

    #[test]
    fn a_followed_check_reads_the_file_not_the_writer() {
        // A byte changed in the file after it was written: the follower reads it from disk.
        for c in [Compression::Gzip, Compression::Zstd, Compression::None] {
            let e = followed_run(c, None, |p| {
                let len = std::fs::metadata(p).unwrap().len();
                flip_byte(p, len / 2);
            })
            .unwrap_err();
            assert!(matches!(e, CheckError::Bad(_)), "{c}: {e}");
        }
    }

    #[test]
    fn a_followed_check_fails_when_the_name_leads_to_another_file() {
        let e = followed_run(Compression::Zstd, None, |p| {
            let copy = std::fs::read(p).unwrap();
            std::fs::remove_file(p).unwrap();
            std::fs::write(p, copy).unwrap();
        })
        .unwrap_err();
        assert!(
            e.to_string().contains("not the file that was read back"),
            "{e}"
        );
    }

    #[test]
    fn a_followed_check_of_a_sealed_file_without_identity_is_at_the_stored_level() {
        let id = age::x25519::Identity::generate();
        let r = Recipients::parse(Some(&id.to_public().to_string()), None)
            .unwrap()
            .unwrap();
        let checked = followed_run(Compression::Zstd, Some(&r), |_| {}).unwrap();
        assert_eq!(checked.level, VerifyLevel::Stored);
        let e = followed_run(Compression::Zstd, Some(&r), |p| {
            let len = std::fs::metadata(p).unwrap().len();
            flip_byte(p, len / 2);
        })
        .unwrap_err();
        assert!(
            matches!(
                e,
                CheckError::Bad(Problem::ChecksumMismatch {
                    what: Checksum::Stored,
                    ..
                })
            ),
            "{e}"
        );
    }

    /// A bucket archive of two objects and its index, written through a followed writer, with its
    /// index file beside it; `edit` changes the record before the judgement.
    fn followed_bucket(
        edit: impl FnOnce(&mut ArtifactRecord, &Path),
    ) -> std::result::Result<Checked, CheckError> {
        use crate::archive::INDEX_ENTRY;
        use sha2::Digest as _;
        let tmp = tempfile::tempdir().unwrap();
        let dir = BackupDir::create(&tmp.path().join("b")).unwrap();
        let name = "bucket_media_20260101_020000.tar.gz";
        let (mut w, f) =
            ArtifactWriter::followed(&dir, name, Compression::Gzip, None, None).unwrap();
        let objects: [(&str, &[u8]); 2] = [("a.pdf", b"%PDF-1.7 first"), ("b/c.txt", b"second")];
        let mut index = Vec::new();
        {
            let mut tar = tar::Builder::new(w.sink());
            for (key, body) in objects {
                let mut h = tar::Header::new_gnu();
                h.set_size(body.len() as u64);
                h.set_mode(0o600);
                tar.append_data(&mut h, key, body).unwrap();
                let e = crate::archive::tests::entry(key, body, true);
                serde_json::to_writer(&mut index, &e).unwrap();
                index.push(b'\n');
            }
            let mut h = tar::Header::new_gnu();
            h.set_size(index.len() as u64);
            h.set_mode(0o600);
            tar.append_data(&mut h, INDEX_ENTRY, &index[..]).unwrap();
            tar.finish().unwrap();
        }
        let digest = w.commit().unwrap();
        let index_name = crate::catalog::index_file_name(name);
        std::fs::write(dir.path().join(&index_name), &index).unwrap();
        let mut a = record(name, Compression::Gzip, false, &digest);
        a.kind = ArtifactKind::Objects;
        a.objects = Some(2);
        a.index_file = Some(index_name);
        a.index_sha256 = Some(hex::encode(sha2::Sha256::digest(&index)));
        let followed = check_followed(f, ArtifactKind::Objects, Compression::Gzip, false, None);
        a.stored_sha256 = followed.stored_sha256().unwrap().to_string();
        edit(&mut a, dir.path());
        followed.judge(dir.path(), &a, &TH, None)
    }

    #[test]
    fn a_followed_bucket_archive_is_bound_to_its_recorded_index_and_count() {
        use sha2::Digest as _;
        let ok = followed_bucket(|_, _| {}).unwrap();
        assert!(
            ok.detail.contains("2 objects match the index"),
            "{}",
            ok.detail
        );
        // An index file and a record that agree with each other, not with the archive's index.
        let e = followed_bucket(|a, dir| {
            let other = b"{}\n";
            std::fs::write(dir.join(a.index_file.as_ref().unwrap()), other).unwrap();
            a.index_sha256 = Some(hex::encode(sha2::Sha256::digest(other)));
        })
        .unwrap_err();
        assert!(
            matches!(
                e,
                CheckError::Bad(Problem::ChecksumMismatch {
                    what: Checksum::Index,
                    ..
                })
            ),
            "{e}"
        );
        // An index file that is not the recorded one.
        let e = followed_bucket(|a, dir| {
            std::fs::write(dir.join(a.index_file.as_ref().unwrap()), b"{}\n").unwrap();
        })
        .unwrap_err();
        assert!(e.to_string().contains("index"), "{e}");
        let e = followed_bucket(|a, _| a.objects = Some(3)).unwrap_err();
        assert!(e.to_string().contains("the run record says"), "{e}");
        // The index file beside the archive must be there.
        let e = followed_bucket(|a, _| a.index_file = Some("bucket_other.index.jsonl".into()))
            .unwrap_err();
        assert!(matches!(e, CheckError::Bad(Problem::Missing { .. })), "{e}");
    }

    #[test]
    fn the_followed_sha256_is_the_files_and_the_blake3_binds_it_to_what_was_written() {
        use sha2::Digest as _;
        let tmp = tempfile::tempdir().unwrap();
        let dir = BackupDir::create(&tmp.path().join("b")).unwrap();
        let name = "db_app.sql.zst";
        let (mut w, f) =
            ArtifactWriter::followed(&dir, name, Compression::Zstd, None, None).unwrap();
        w.sink().write_all(&dump()).unwrap();
        let digest = w.commit().unwrap();
        let followed = check_followed(f, ArtifactKind::Database, Compression::Zstd, false, None);
        let file = std::fs::read(dir.path().join(name)).unwrap();
        assert_eq!(
            followed.stored_sha256(),
            Some(hex::encode(sha2::Sha256::digest(&file)).as_str())
        );
        let mut a = record(name, Compression::Zstd, false, &digest);
        a.stored_sha256 = followed.stored_sha256().unwrap().to_string();
        a.stored_blake3 = None;
        let e = followed.judge(dir.path(), &a, &TH, None).unwrap_err();
        assert!(e.to_string().contains("no stored BLAKE3"), "{e}");
    }
}
