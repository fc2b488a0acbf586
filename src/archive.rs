//! The bucket archive format and its checks.
//!
//! A bucket artifact is a tar stream whose entries are the objects, in listing order, under their
//! keys where a key is a safe relative path, so `tar -xzf` gives a browsable tree. Keys a path
//! cannot hold faithfully (`a//b`, `./x`, `../x`, `/x`, `dir/`, control characters, a key that is
//! also a "directory" of another key, anything under `.stackback/`) are stored as
//! `.stackback/objects/<n>` instead. The object index, one JSON line per object in entry order
//! ([`IndexEntry`]: exact key, entry path, size, ETag, last-modified, content headers, user
//! metadata, SHA-256 and BLAKE3), is the archive's last entry, `.stackback/objects.jsonl`, and is
//! also written beside the archive (`<artifact>.index.jsonl`) so restore and verify can plan before
//! reading the archive.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

mod sums;
pub use sums::{ObjectDigest, ObjectHasher, ObjectMismatch};

pub use crate::catalog::index_file_name;
use crate::catalog::ArtifactKind;
use crate::error::{Checksum, Problem};

/// Where the object index lives inside the archive.
pub const INDEX_ENTRY: &str = ".stackback/objects.jsonl";
/// Directory of entries whose keys cannot be paths.
pub const MAPPED_DIR: &str = ".stackback/objects/";

/// One object of a bucket archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexEntry {
    /// The object key, byte for byte.
    pub key: String,
    /// The tar entry holding its content.
    pub path: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_encoding: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_disposition: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_language: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// Always written: older builds prove objects by it, and `sha256sum` of an extracted entry
    /// prints it.
    pub sha256: String,
    /// Written since the index gained it; when present, readers prove the object by it instead of
    /// `sha256` (BLAKE3 is about 15 times faster here, and a restore hashes every object).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blake3: Option<String>,
}

/// True when `key` can be a relative path that extracts to exactly that key.
pub fn key_is_plain_path(key: &str) -> bool {
    !key.is_empty()
        && !key.starts_with('/')
        && !key.ends_with('/')
        && !key.chars().any(|c| c.is_control())
        && key
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
        && key.split('/').next() != Some(".stackback")
}

/// Assigns tar paths to keys in archive order, keeping extraction conflict-free: a key whose
/// path would be a file where an earlier entry needs a directory (or the reverse) is mapped.
/// Remembers 64-bit hashes, not keys, so memory stays small for millions of objects.
#[derive(Debug, Default)]
pub struct PathPlanner {
    files: HashSet<u64>,
    dirs: HashSet<u64>,
    mapped: u64,
}

fn h(s: &str) -> u64 {
    let d = sha2::Sha256::digest(s.as_bytes());
    u64::from_le_bytes(d[..8].try_into().expect("8 bytes"))
}

impl PathPlanner {
    pub fn path_for(&mut self, key: &str) -> String {
        let conflict = || {
            self.dirs.contains(&h(key))
                || key
                    .match_indices('/')
                    .any(|(i, _)| self.files.contains(&h(&key[..i])))
        };
        if key_is_plain_path(key) && !conflict() {
            self.files.insert(h(key));
            for (i, _) in key.match_indices('/') {
                self.dirs.insert(h(&key[..i]));
            }
            key.to_string()
        } else {
            self.mapped += 1;
            format!("{MAPPED_DIR}{:010}", self.mapped)
        }
    }
}

/// What the verifier knows beyond the archive itself.
#[derive(Debug, Clone, Default)]
pub struct ArchiveExpectations<'a> {
    /// The sidecar index, when present.
    pub index_file: Option<&'a Path>,
    /// SHA-256 of the index as the run recorded it.
    pub index_sha256: Option<&'a str>,
    /// Number of objects the run recorded.
    pub objects: Option<u64>,
    /// Hash every object and compare with the index. Off only for the run's check of the archive
    /// it has just written: each object was hashed on its way in, and the stored SHA-256 plus
    /// the codec's checksums prove the archive still holds those bytes; paths, sizes and order
    /// are still checked.
    pub hash_objects: bool,
}

/// What [`check_archive`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveSeen {
    /// For people: `5 objects match the index, ...`, `12 entries, ...`.
    pub detail: String,
    /// A bucket archive's objects, and the SHA-256 of its in-archive index: a check run before the
    /// record exists (the run's own, as the archive is written) compares these with it afterwards.
    pub objects: Option<u64>,
    pub index_sha256: Option<String>,
}

/// Reads every entry of a tar stream to its end. For bucket archives, every object entry must
/// match the index (path, size, BLAKE3 or SHA-256), in order, and the index must be the last entry.
pub fn check_archive(
    kind: ArtifactKind,
    r: &mut dyn Read,
    exp: &ArchiveExpectations<'_>,
) -> Result<ArchiveSeen, Problem> {
    let mut objects = match kind {
        ArtifactKind::Objects => Some(ObjectCheck::new(exp)?),
        _ => None,
    };
    let mut archive = tar::Archive::new(r);
    let (mut entries, mut bytes) = (0u64, 0u64);
    for entry in archive
        .entries()
        .map_err(|e| Problem::undecodable(format!("not a tar archive: {e}")))?
    {
        let mut entry = entry.map_err(|e| {
            Problem::undecodable(format!("tar entry {} unreadable: {e}", entries + 1))
        })?;
        entries += 1;
        let path = entry
            .path()
            .map_err(|e| Problem::undecodable(format!("tar entry {entries} has a bad path: {e}")))?
            .to_string_lossy()
            .into_owned();
        if let Some(check) = &mut objects {
            check.before_entry()?;
            if path == INDEX_ENTRY {
                let mut text = Vec::new();
                entry
                    .read_to_end(&mut text)
                    .map_err(|e| Problem::undecodable(format!("object index unreadable: {e}")))?;
                check.index(&text, exp.index_sha256)?;
                continue;
            }
        }
        let want = match &mut objects {
            Some(check) => check.expect(&path)?,
            None => None,
        };
        let mut hasher = HashingSink(exp.hash_objects.then(|| match &want {
            Some(w) => ObjectHasher::for_entry(w),
            None => ObjectHasher::both(),
        }));
        let n = std::io::copy(&mut entry, &mut hasher)
            .map_err(|e| Problem::undecodable(format!("tar entry {path:?} unreadable: {e}")))?;
        bytes += n;
        if let Some(check) = &mut objects {
            check.object(path, n, want, hasher.0.map(ObjectHasher::finish))?;
        }
    }
    match objects {
        None => Ok(ArchiveSeen {
            detail: format!("{entries} entries, {bytes} bytes of content"),
            objects: None,
            index_sha256: None,
        }),
        Some(check) => {
            let (n, index_sha256) = check.finish(exp.objects)?;
            Ok(ArchiveSeen {
                detail: format!("{n} objects match the index, {bytes} bytes"),
                objects: Some(n),
                index_sha256: Some(index_sha256),
            })
        }
    }
}

/// Checks a bucket archive's entries against its object index as they stream by: line by line
/// against the sidecar when there is one, else against the in-archive index at the end.
struct ObjectCheck {
    sidecar: Option<std::io::Lines<BufReader<std::fs::File>>>,
    /// Without a sidecar: `(path, size, sums)` of each entry, checked once the index is read.
    seen: Vec<(String, u64, Option<ObjectDigest>)>,
    /// The in-archive index, once read (empty when the sidecar is the reference).
    index: Option<Vec<IndexEntry>>,
    /// Its SHA-256.
    index_sha256: String,
    objects: u64,
}

impl ObjectCheck {
    fn new(exp: &ArchiveExpectations<'_>) -> Result<Self, Problem> {
        let sidecar = match exp.index_file {
            Some(p) => Some(
                BufReader::new(std::fs::File::open(p).map_err(|e| Problem::Unreadable {
                    what: format!("object index {}", p.display()),
                    detail: e.to_string(),
                })?)
                .lines(),
            ),
            None => None,
        };
        Ok(ObjectCheck {
            sidecar,
            seen: Vec::new(),
            index: None,
            index_sha256: String::new(),
            objects: 0,
        })
    }

    fn before_entry(&self) -> Result<(), Problem> {
        if self.index.is_some() {
            return Err(Problem::index(format!(
                "entries after the object index {INDEX_ENTRY}"
            )));
        }
        Ok(())
    }

    fn index(&mut self, text: &[u8], recorded: Option<&str>) -> Result<(), Problem> {
        let got = hex::encode(sha2::Sha256::digest(text));
        if let Some(want) = recorded {
            if got != want {
                return Err(Problem::ChecksumMismatch {
                    what: Checksum::Index,
                    actual: got,
                    recorded: want.to_string(),
                });
            }
        }
        self.index_sha256 = got;
        self.index = Some(if self.sidecar.is_some() {
            Vec::new()
        } else {
            parse_index(text)?
        });
        Ok(())
    }

    /// The sidecar's entry for the next object, when there is a sidecar.
    fn expect(&mut self, path: &str) -> Result<Option<IndexEntry>, Problem> {
        let Some(lines) = self.sidecar.as_mut() else {
            return Ok(None);
        };
        let line = lines
            .next()
            .ok_or_else(|| Problem::index(format!("entry {path:?} is not in the object index")))?
            .map_err(|e| Problem::index(format!("object index unreadable: {e}")))?;
        let want = serde_json::from_str(&line).map_err(|e| {
            Problem::index(format!(
                "object index line {} is not valid: {e}",
                self.objects + 1
            ))
        })?;
        Ok(Some(want))
    }

    fn object(
        &mut self,
        path: String,
        size: u64,
        want: Option<IndexEntry>,
        sums: Option<ObjectDigest>,
    ) -> Result<(), Problem> {
        self.objects += 1;
        match want {
            Some(want) => compare(&want, &path, size, sums.as_ref()),
            None => {
                self.seen.push((path, size, sums));
                Ok(())
            }
        }
    }

    /// Returns the number of objects checked and the in-archive index's SHA-256.
    fn finish(mut self, recorded: Option<u64>) -> Result<(u64, String), Problem> {
        let Some(index) = self.index else {
            return Err(Problem::index(format!(
                "the object index {INDEX_ENTRY} is missing: the archive is incomplete"
            )));
        };
        if let Some(lines) = self.sidecar.as_mut() {
            if lines.next().is_some() {
                return Err(Problem::index(
                    "the object index lists more objects than the archive holds",
                ));
            }
        } else {
            if index.len() != self.seen.len() {
                return Err(Problem::index(format!(
                    "the object index lists {} objects, the archive holds {}",
                    index.len(),
                    self.seen.len()
                )));
            }
            for (want, (path, n, sums)) in index.iter().zip(&self.seen) {
                compare(want, path, *n, sums.as_ref())?;
            }
        }
        if let Some(want) = recorded {
            if want != self.objects {
                return Err(Problem::index(format!(
                    "{} objects, the run record says {want}",
                    self.objects
                )));
            }
        }
        Ok((self.objects, self.index_sha256))
    }
}

/// `sums` is `None` when the objects were not hashed ([`ArchiveExpectations::hash_objects`]).
fn compare(
    want: &IndexEntry,
    path: &str,
    size: u64,
    sums: Option<&ObjectDigest>,
) -> Result<(), Problem> {
    if want.path != path {
        return Err(Problem::index(format!(
            "entry {path:?} is out of order: the index expects {:?}",
            want.path
        )));
    }
    if want.size != size {
        return Err(Problem::index(format!(
            "object {:?} differs from the index (size {size} vs {})",
            want.key, want.size
        )));
    }
    if let Some(Err(m)) = sums.map(|d| d.check(want)) {
        return Err(Problem::index(format!(
            "object {:?} differs from the index ({m})",
            want.key
        )));
    }
    Ok(())
}

/// Parses an index (JSON lines).
pub fn parse_index(text: &[u8]) -> Result<Vec<IndexEntry>, Problem> {
    text.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_slice(l).map_err(|e| {
                Problem::index(format!("object index line {} is not valid: {e}", i + 1))
            })
        })
        .collect()
}

/// Hashes what is written, or only counts it (`None`).
struct HashingSink(Option<ObjectHasher>);

impl std::io::Write for HashingSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(h) = &mut self.0 {
            h.update(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests;
