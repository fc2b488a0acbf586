//! Volume mode: a directory (a MinIO data volume, as the seed's script did) tarred as it is.
//!
//! Since 2022 MinIO stores objects in its own on-disk format (`xl.meta`), so such an archive only
//! restores into the same MinIO version; bucket backups through the S3 API do not have that limit.
//!
//! A live directory changes while it is read. Each file is copied exactly as large as its tar
//! header says, and a file that grew, shrank or was rewritten meanwhile is reported as
//! [`Error::SourceChanged`] instead of being archived half old, half new (a file that grew by
//! zeros would otherwise read as the end of the archive, and the archive verify as complete).

use std::fs::{self, File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::error::{Error, Result};
use crate::sink::local::ArtifactWriter;

/// Tars `src` into `archive` (entries relative to `src`, symlinks kept as links). Blocking.
/// Sockets, FIFOs and devices are left out (a data volume holds none).
pub fn tar_directory(src: &Path, archive: &mut ArtifactWriter) -> Result<()> {
    if !src.is_dir() {
        return Err(Error::NotFound(format!(
            "MINIO_DATA_DIR {} is not a directory",
            src.display()
        )));
    }
    let temp = archive.temp_path().to_path_buf();
    let mut tar = tar::Builder::new(archive.sink());
    tar.follow_symlinks(false);
    let write_err = |e: io::Error| Error::io("cannot write", &temp, e);
    add_dir(&mut tar, src, Path::new(""), &write_err)?;
    tar.finish().map_err(write_err)?;
    Ok(())
}

fn add_dir(
    tar: &mut tar::Builder<&mut dyn Write>,
    dir: &Path,
    rel: &Path,
    write_err: &dyn Fn(io::Error) -> Error,
) -> Result<()> {
    let read_err = |e: io::Error| Error::io("cannot archive", dir, e);
    let mut names: Vec<_> = fs::read_dir(dir)
        .map_err(read_err)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<_>>()
        .map_err(read_err)?;
    // Sorted: the same directory gives the same archive.
    names.sort();
    for name in names {
        let path = dir.join(&name);
        let rel = rel.join(&name);
        let meta =
            fs::symlink_metadata(&path).map_err(|e| Error::io("cannot archive", &path, e))?;
        let ft = meta.file_type();
        if ft.is_dir() {
            let mut h = header(&meta, tar::EntryType::Directory, 0);
            tar.append_data(&mut h, &rel, io::empty())
                .map_err(write_err)?;
            add_dir(tar, &path, &rel, write_err)?;
        } else if ft.is_symlink() {
            let target = fs::read_link(&path).map_err(|e| Error::io("cannot archive", &path, e))?;
            let mut h = header(&meta, tar::EntryType::Symlink, 0);
            tar.append_link(&mut h, &rel, &target).map_err(write_err)?;
        } else if ft.is_file() {
            add_file(tar, &path, &rel, write_err)?;
        } else {
            tracing::warn!(path = %path.display(), "not a file, directory or link: left out");
        }
    }
    Ok(())
}

/// Copies one file, exactly as large as its header says, and fails if it changed meanwhile.
fn add_file(
    tar: &mut tar::Builder<&mut dyn Write>,
    path: &Path,
    rel: &Path,
    write_err: &dyn Fn(io::Error) -> Error,
) -> Result<()> {
    let mut f = File::open(path).map_err(|e| Error::io("cannot archive", path, e))?;
    let before = f
        .metadata()
        .map_err(|e| Error::io("cannot archive", path, e))?;
    let size = before.len();
    let mut h = header(&before, tar::EntryType::Regular, size);
    let mut exact = Exact {
        inner: &mut f,
        left: size,
    };
    match tar.append_data(&mut h, rel, &mut exact) {
        Ok(()) => {}
        // Our reader's own error: the file ended early. The archive stays consistent (tar pads),
        // but what it holds of this file is wrong.
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && exact.left > 0 => {
            return Err(changed(path, format!("it shrank below {size} bytes")))
        }
        Err(e) => return Err(write_err(e)),
    }
    let mut probe = [0u8; 1];
    let more = f
        .read(&mut probe)
        .map_err(|e| Error::io("cannot archive", path, e))?;
    let after = f
        .metadata()
        .map_err(|e| Error::io("cannot archive", path, e))?;
    if more > 0
        || after.len() != size
        || after.mtime() != before.mtime()
        || after.mtime_nsec() != before.mtime_nsec()
    {
        return Err(changed(
            path,
            format!("{size} bytes when it was opened, {} now", after.len()),
        ));
    }
    Ok(())
}

fn changed(path: &Path, detail: String) -> Error {
    Error::SourceChanged {
        path: path.to_path_buf(),
        detail,
    }
}

fn header(meta: &Metadata, kind: tar::EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_metadata_in_mode(meta, tar::HeaderMode::Complete);
    h.set_entry_type(kind);
    h.set_size(size);
    h
}

/// Reads exactly `left` bytes: an early end is an `UnexpectedEof` error, bytes beyond are left.
struct Exact<'a> {
    inner: &'a mut File,
    left: u64,
}

impl Read for Exact<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{} bytes short", self.left),
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_reads_stop_at_the_size_and_notice_an_early_end() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        fs::write(&p, b"hello world").unwrap();
        let mut f = File::open(&p).unwrap();
        let mut out = Vec::new();
        Exact {
            inner: &mut f,
            left: 5,
        }
        .read_to_end(&mut out)
        .unwrap();
        assert_eq!(out, b"hello");
        let mut f = File::open(&p).unwrap();
        let err = Exact {
            inner: &mut f,
            left: 50,
        }
        .read_to_end(&mut Vec::new())
        .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
