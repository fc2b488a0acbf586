//! The blocking side of a bucket backup: the tar builder over the compressor, each object's index
//! sums taken as tar reads it, and the object index (sealed with the archive when it is), appended
//! as the archive's last entry.

use std::io::{self, BufWriter, Read, Write};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::{Body, Fetched, Msg, Outputs};
use crate::archive::{ObjectHasher, PathPlanner, INDEX_ENTRY};
use crate::crypt::{Identities, Recipients, SealWriter};
use crate::error::{Error, Result, S3Error};
use crate::pipeline::HashWriter;
use crate::sink::local::{ArtifactWriter, TempArtifact};

#[derive(Debug, Default)]
pub(super) struct WriterStats {
    pub(super) objects: u64,
    pub(super) bytes: u64,
    pub(super) skipped: Vec<String>,
    pub(super) index_sha256: String,
    pub(super) index_stored_sha256: Option<String>,
}

/// Reads a body, failing unless it holds exactly `size` bytes.
struct ExactReader {
    body: Body,
    chunk: Bytes,
    remaining: u64,
    key: String,
}

impl ExactReader {
    fn refill(&mut self) -> io::Result<bool> {
        loop {
            if !self.chunk.is_empty() {
                return Ok(true);
            }
            match &mut self.body {
                Body::Full(b) => {
                    if b.is_empty() {
                        return Ok(false);
                    }
                    self.chunk = std::mem::take(b);
                }
                Body::Stream(rx) => match rx.blocking_recv() {
                    None => return Ok(false),
                    Some(Ok(b)) => self.chunk = b,
                    Some(Err(e)) => return Err(e),
                },
            }
        }
    }
}

impl Read for ExactReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            if self.refill()? {
                return Err(io::Error::other(format!(
                    "object {:?} has more bytes than its Content-Length",
                    self.key
                )));
            }
            return Ok(0);
        }
        if !self.refill()? {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("object {:?} ended {} bytes early", self.key, self.remaining),
            ));
        }
        let n = buf.len().min(self.chunk.len()).min(self.remaining as usize);
        buf[..n].copy_from_slice(&self.chunk[..n]);
        self.chunk = self.chunk.slice(n..);
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// Sorts an error from appending an object: OS errors come from the archive file (disk full), a
/// typed S3 error from the body's fetch task, the rest from the body's length checks.
fn body_or_disk(e: io::Error, key: &str, io_err: &impl Fn(io::Error) -> Error) -> Error {
    if e.raw_os_error().is_some() {
        return io_err(e);
    }
    if e.get_ref().is_some_and(|inner| inner.is::<S3Error>()) {
        let inner = e.into_inner().expect("checked above");
        return match inner.downcast::<S3Error>() {
            Ok(s3) => Error::S3(s3),
            Err(other) => Error::step(format!("fetching object {key:?}"), other.to_string()),
        };
    }
    Error::Step {
        what: format!("fetching object {key:?}"),
        detail: e.to_string(),
    }
}

/// Counts an object's bytes and takes both of its index sums as tar reads it.
struct ObjectReader<R> {
    inner: R,
    sums: ObjectHasher,
    bytes: u64,
}

impl<R: Read> Read for ObjectReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sums.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

fn header(size: u64, mtime: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(mtime);
    h.set_entry_type(tar::EntryType::Regular);
    h
}

/// The blocking side: tar + compression + per-object hashing + index.
pub(super) fn write_archive(
    mut rx: mpsc::Receiver<Msg>,
    out: Outputs,
) -> Result<(ArtifactWriter, TempArtifact, WriterStats)> {
    let Outputs {
        mut archive,
        mut index,
        recipients,
    } = out;
    let archive_path = archive.temp_path().to_path_buf();
    let index_path = index.temp_path().to_path_buf();
    let io_err = |e: io::Error| Error::io("cannot write", &archive_path, e);
    let index_file = index
        .writer()
        .try_clone()
        .map_err(|e| Error::io("cannot reopen", &index_path, e))?;
    let (mut index_w, scratch) = IndexWriter::new(index_file, recipients.as_deref())
        .map_err(|e| Error::io("cannot start writing", &index_path, e))?;
    let mut stats = WriterStats::default();
    let mut planner = PathPlanner::default();
    {
        let mut tar = tar::Builder::new(archive.sink());
        loop {
            let msg = rx.blocking_recv().ok_or_else(|| Error::Step {
                what: "writing the archive".into(),
                detail: "aborted before the listing finished".into(),
            })?;
            let f = match msg {
                Msg::Finish => break,
                Msg::Object(f) => f,
            };
            let Fetched {
                mut meta,
                mtime,
                body,
            } = *f;
            meta.path = planner.path_for(&meta.key);
            let mut reader = ObjectReader {
                inner: ExactReader {
                    body,
                    chunk: Bytes::new(),
                    remaining: meta.size,
                    key: meta.key.clone(),
                },
                sums: ObjectHasher::both(),
                bytes: 0,
            };
            let mut h = header(meta.size, mtime);
            tar.append_data(&mut h, &meta.path, &mut reader)
                .map_err(|e| body_or_disk(e, &meta.key, &io_err))?;
            // tar stops reading at the header's size: make sure nothing was left behind.
            let mut probe = [0u8; 1];
            reader.read(&mut probe).map_err(|e| Error::Step {
                what: format!("fetching object {:?}", meta.key),
                detail: e.to_string(),
            })?;
            let (n, sums) = (reader.bytes, reader.sums.finish());
            (meta.sha256, meta.blake3) = (sums.sha256.unwrap_or_default(), sums.blake3);
            stats.objects += 1;
            stats.bytes += n;
            serde_json::to_writer(&mut index_w, &meta)
                .map_err(|e| Error::io("cannot write", &index_path, e.into()))?;
            index_w
                .write_all(b"\n")
                .map_err(|e| Error::io("cannot write", &index_path, e))?;
        }
        (stats.index_sha256, stats.index_stored_sha256) = append_index(
            &mut tar,
            index_w,
            scratch.as_ref(),
            &index_path,
            &archive_path,
        )?;
    }
    Ok((archive, index, stats))
}

/// Ends the archive with the object index as its last entry; returns the index's SHA-256.
fn append_index(
    tar: &mut tar::Builder<&mut dyn Write>,
    index_w: IndexWriter,
    scratch: Option<&Identities>,
    index_path: &std::path::Path,
    archive_path: &std::path::Path,
) -> Result<(String, Option<String>)> {
    let (index_bytes, index_sha, stored_sha) = index_w
        .finish()
        .map_err(|e| Error::io("cannot write", index_path, e))?;
    let mut h = header(
        index_bytes,
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    );
    let f =
        std::fs::File::open(index_path).map_err(|e| Error::io("cannot reopen", index_path, e))?;
    let io_err = |e: io::Error| Error::io("cannot write", archive_path, e);
    match scratch {
        None => tar.append_data(&mut h, INDEX_ENTRY, f).map_err(io_err)?,
        Some(ids) => {
            // Read back through the seal with the run's scratch key: the plain index never
            // touches the disk.
            let plain = crate::crypt::unseal(f, ids)
                .map_err(|e| Error::step("reading back the sealed object index", e))?;
            tar.append_data(&mut h, INDEX_ENTRY, plain)
                .map_err(io_err)?
        }
    }
    tar.finish().map_err(io_err)?;
    Ok((index_sha, scratch.map(|_| stored_sha)))
}

/// The object index file: plain content hashed, optionally sealed, stored bytes hashed.
struct IndexWriter(HashWriter<SealWriter<HashWriter<BufWriter<std::fs::File>>>>);

impl IndexWriter {
    /// A writer of the index into `file`. When sealed, the file is also sealed to a scratch key
    /// returned here (and dropped after the run), so the index can be read back into the archive.
    fn new(
        file: std::fs::File,
        recipients: Option<&Recipients>,
    ) -> io::Result<(IndexWriter, Option<Identities>)> {
        let stored = HashWriter::new(BufWriter::new(file));
        let (sealed, scratch) = match recipients {
            None => (SealWriter::Plain(stored), None),
            Some(r) => {
                let (w, ids) = r.seal_with_scratch_key(stored)?;
                (SealWriter::Age(w), Some(ids))
            }
        };
        Ok((IndexWriter(HashWriter::new(sealed)), scratch))
    }

    /// Plain bytes, plain SHA-256, stored SHA-256.
    fn finish(self) -> io::Result<(u64, String, String)> {
        let (sealed, n, plain_sha) = self.0.finish();
        let (buf, _, stored_sha) = sealed.finish()?.finish();
        buf.into_inner().map_err(|e| e.into_error())?;
        Ok((n, plain_sha, stored_sha))
    }
}

impl Write for IndexWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}
