//! Reading an artifact back while it is being written: the run's check of a new file starts with
//! its first bytes instead of after its last, so on a busy machine the read-back no longer adds its
//! whole length to the run (docs/PERFORMANCE.md).
//!
//! The writing side ([`Published`]) sits directly on the temp file, under every buffer, and
//! counts what has reached the file. A [`Follower`] reads the same inode through its own
//! descriptor, never past that count, and blocks when it has caught up. It ends at the writer's
//! end ([`Published::end`], called once the last byte is in the file) or fails when the writer is
//! dropped without one (the run failed and removes the temp file). What it reads comes from the
//! page cache, as a read-back after the fsync does; the caller then proves the committed name is
//! this same file ([`Follower::file_id`]) of the size it read.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// A file's identity on its file system: the committed name must lead to the inode that was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

impl FileId {
    pub fn of(meta: &std::fs::Metadata) -> Self {
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Open,
    /// Every byte is in the file.
    Done,
    /// The writer went away without finishing: the artifact will not exist.
    Abandoned,
}

#[derive(Debug)]
struct State {
    written: u64,
    end: End,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    grew: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves plain integers behind: still consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_end(&self, end: End) {
        let mut s = self.lock();
        if s.end == End::Open {
            s.end = end;
        }
        drop(s);
        self.grew.notify_all();
    }
}

/// The temp file, counting what reaches it for the [`Follower`]s.
#[derive(Debug)]
pub struct Published {
    file: File,
    shared: Arc<Shared>,
}

impl Published {
    pub fn new(file: File) -> Self {
        Published {
            file,
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    written: 0,
                    end: End::Open,
                }),
                grew: Condvar::new(),
            }),
        }
    }

    /// What opens [`Follower`]s of this file later, once the writer is buried under buffers.
    pub fn handle(&self) -> io::Result<FollowHandle> {
        Ok(FollowHandle {
            id: FileId::of(&self.file.metadata()?),
            shared: self.shared.clone(),
        })
    }

    /// Every byte is written: followers read to here and end. Dropping `self` afterwards does not
    /// abandon them.
    pub fn end(&self) {
        self.shared.set_end(End::Done);
    }
}

impl Write for Published {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        if n > 0 {
            self.shared.lock().written += n as u64;
            self.shared.grew.notify_all();
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Drop for Published {
    fn drop(&mut self) {
        self.shared.set_end(End::Abandoned);
    }
}

/// Opens followers of one [`Published`] file.
#[derive(Debug, Clone)]
pub struct FollowHandle {
    id: FileId,
    shared: Arc<Shared>,
}

impl FollowHandle {
    /// A reader of `path` (the written file's name) from its first byte.
    pub fn open(&self, path: &Path) -> io::Result<Follower> {
        let file = File::open(path)?;
        if FileId::of(&file.metadata()?) != self.id {
            return Err(io::Error::other(format!(
                "{} is no longer the file being written",
                path.display()
            )));
        }
        Ok(Follower {
            file,
            id: self.id,
            shared: self.shared.clone(),
            pos: 0,
        })
    }
}

/// Reads a file as it is written, through its own descriptor (see the module docs).
#[derive(Debug)]
pub struct Follower {
    file: File,
    id: FileId,
    shared: Arc<Shared>,
    pos: u64,
}

impl Follower {
    /// The inode this follower reads.
    pub fn file_id(&self) -> FileId {
        self.id
    }
}

impl Read for Follower {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let available = {
            let mut s = self.shared.lock();
            loop {
                if s.written > self.pos {
                    break s.written - self.pos;
                }
                match s.end {
                    End::Done => return Ok(0),
                    End::Abandoned => {
                        return Err(io::Error::other(
                            "the file was abandoned before it was complete",
                        ))
                    }
                    End::Open => {
                        s = self.shared.grew.wait(s).unwrap_or_else(|p| p.into_inner());
                    }
                }
            }
        };
        let want = buf
            .len()
            .min(usize::try_from(available).unwrap_or(usize::MAX));
        let n = self.file.read(&mut buf[..want])?;
        if n == 0 {
            // The writer counted bytes the file does not hold: truncated under us.
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "the file ends at {} bytes, but {} were written",
                    self.pos,
                    self.pos + available
                ),
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp() -> (tempfile::TempDir, std::path::PathBuf, File) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = File::create(&path).unwrap();
        (dir, path, file)
    }

    #[test]
    fn a_follower_reads_everything_written_while_it_reads() {
        let (_d, path, file) = temp();
        let mut w = Published::new(file);
        let mut f = w.handle().unwrap().open(&path).unwrap();
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            f.read_to_end(&mut got).map(|_| got)
        });
        let mut want = Vec::new();
        for i in 0..2000u32 {
            let chunk: Vec<u8> = (0..(i % 300)).map(|b| (b ^ i) as u8).collect();
            w.write_all(&chunk).unwrap();
            want.extend_from_slice(&chunk);
            if i % 500 == 0 {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
        w.end();
        drop(w);
        assert_eq!(reader.join().unwrap().unwrap(), want);
    }

    #[test]
    fn a_dropped_writer_fails_the_follower_instead_of_ending_it() {
        let (_d, path, file) = temp();
        let mut w = Published::new(file);
        let mut f = w.handle().unwrap().open(&path).unwrap();
        w.write_all(b"partial").unwrap();
        drop(w);
        let mut got = Vec::new();
        let e = f.read_to_end(&mut got).unwrap_err();
        assert!(e.to_string().contains("abandoned"), "{e}");
        assert_eq!(got, b"partial");
    }

    #[test]
    fn a_file_shorter_than_what_was_written_is_an_error() {
        let (_d, path, file) = temp();
        let mut w = Published::new(file);
        let mut f = w.handle().unwrap().open(&path).unwrap();
        w.write_all(&[7u8; 1000]).unwrap();
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(10)
            .unwrap();
        w.end();
        let mut got = Vec::new();
        let e = f.read_to_end(&mut got).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(got.len(), 10);
    }

    #[test]
    fn a_follower_names_the_inode_it_reads() {
        let (_d, path, file) = temp();
        let w = Published::new(file);
        let f = w.handle().unwrap().open(&path).unwrap();
        assert_eq!(f.file_id(), FileId::of(&std::fs::metadata(&path).unwrap()));
    }
}
