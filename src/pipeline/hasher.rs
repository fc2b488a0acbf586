//! SHA-256 of a stream on a thread of its own (the plain checksum of records of schema 1-2). SHA-256 cannot be split across cores, and on a CPU
//! without SHA extensions it runs at about 230 MB/s: on the reading thread it would cap the
//! whole pipeline there. Here the reading thread only copies each block into a queue of 1 MiB
//! buffers (bounded, so memory stays bounded whatever the stream's size) and goes on.

use std::io;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::thread::JoinHandle;

use super::sha::Sha256;

const CHUNK: usize = 1 << 20;
/// Buffers queued to the hashing thread: enough to ride out a burst, few enough to bound memory.
const QUEUED: usize = 4;

/// A SHA-256 computed on its own thread; [`Sha256Thread::finish`] returns the hex digest.
pub struct Sha256Thread {
    buf: Vec<u8>,
    tx: Option<SyncSender<Vec<u8>>>,
    thread: Option<JoinHandle<String>>,
}

impl Sha256Thread {
    pub fn new() -> io::Result<Self> {
        let (tx, rx) = sync_channel::<Vec<u8>>(QUEUED);
        let thread = std::thread::Builder::new()
            .name("sha256".into())
            .spawn(move || {
                let mut h = Sha256::new();
                for chunk in rx {
                    h.update(&chunk);
                }
                h.finish_hex()
            })?;
        Ok(Sha256Thread {
            buf: Vec::with_capacity(CHUNK),
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    pub fn update(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let n = data.len().min(CHUNK - self.buf.len());
            self.buf.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.buf.len() == CHUNK {
                self.send()?;
            }
        }
        Ok(())
    }

    fn send(&mut self) -> io::Result<()> {
        let full = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .as_ref()
            .expect("send after finish")
            .send(full)
            .map_err(|_| died())
    }

    pub fn finish(mut self) -> io::Result<String> {
        if !self.buf.is_empty() {
            self.send()?;
        }
        self.tx.take();
        self.thread
            .take()
            .expect("finished once")
            .join()
            .map_err(|_| died())
    }
}

impl Drop for Sha256Thread {
    fn drop(&mut self) {
        // Dropped without finish (an error elsewhere): end the thread, ignore its digest.
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn died() -> io::Error {
    io::Error::other(
        "the SHA-256 thread stopped unexpectedly (it panicked); run the backup again and report this",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest as _;

    #[test]
    fn matches_a_one_shot_hash_for_any_split() {
        let data: Vec<u8> = (0..3 * CHUNK + 12345)
            .map(|i| (i * 7 % 253) as u8)
            .collect();
        let want = hex::encode(sha2::Sha256::digest(&data));
        for piece in [1usize, 4096, CHUNK - 1, CHUNK, 5 * CHUNK] {
            let mut h = Sha256Thread::new().unwrap();
            for c in data.chunks(piece) {
                h.update(c).unwrap();
            }
            assert_eq!(h.finish().unwrap(), want, "pieces of {piece}");
        }
        assert_eq!(
            Sha256Thread::new().unwrap().finish().unwrap(),
            hex::encode(sha2::Sha256::digest(b""))
        );
    }
}
