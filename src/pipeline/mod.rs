//! Stream adapters between a source and a sink: hash the plain bytes, compress, hash and count the
//! stored bytes. Knows nothing of pg_dump, buckets or files.
//!
//! Writing: `source bytes → [blake3 plain, count, tail] → encoder (gzip | zstd | none) → [age
//! seal, when recipients are set] → [sha256 stored, count] → inner writer`. [`StoreWriter::finish`]
//! flushes the encoder's trailer and age's last chunk and returns the inner writer with a
//! [`Digest`] of both sides; until then nothing is complete. No plaintext byte of a sealed artifact
//! reaches the inner writer.
//!
//! Reading back (verification, restore): [`PlainReader`] opens the seal (with an identity),
//! decompresses, and hashes both sides, so one pass over the file proves the stored checksum, the
//! age authentication, the whole-stream decompression and the plain checksum at once. The plain
//! checksum is BLAKE3 for new runs and SHA-256 for records of schema 1-2 ([`plainsum`]).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha::Sha256;

use crate::crypt::{Identities, Recipients, SealWriter, UnsealError};

pub mod hasher;
pub mod pgz;
pub mod plainsum;
pub mod priority;
pub mod sha;
pub mod storedsum;
pub mod zst;

use plainsum::PlainHasher;
pub use plainsum::{PlainAlgo, PlainSum};
pub use storedsum::{blake3_file, StoredReader, StoredSums};
use storedsum::{StoredHasher, StoredWriter};

/// How artifacts are compressed on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    Gzip,
    Zstd,
    None,
}

impl Compression {
    /// The file name suffix after the content suffix (`.sql` + this).
    pub fn extension(self) -> &'static str {
        match self {
            Compression::Gzip => ".gz",
            Compression::Zstd => ".zst",
            Compression::None => "",
        }
    }

    pub fn check_level(self, level: i32) -> Result<(), String> {
        let (lo, hi) = match self {
            Compression::Gzip => (1, 9),
            Compression::Zstd => (1, 19),
            Compression::None => return Err("compression none takes no level".into()),
        };
        if (lo..=hi).contains(&level) {
            Ok(())
        } else {
            Err(format!("{self} levels go from {lo} to {hi}, got {level}"))
        }
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::None => "none",
        })
    }
}

impl FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "gzip" | "gz" => Ok(Compression::Gzip),
            "zstd" | "zst" => Ok(Compression::Zstd),
            "none" | "off" | "plain" => Ok(Compression::None),
            other => Err(format!(
                "unknown compression {other:?}; use gzip, zstd or none"
            )),
        }
    }
}

/// Sizes and checksums of one stream, on both sides of the compressor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    pub plain_bytes: u64,
    /// BLAKE3 of the plain stream, lowercase hex.
    pub plain_blake3: String,
    pub stored_bytes: u64,
    /// `None` when the writer was told not to compute it: a file checked as it is written gets
    /// its SHA-256 from that check's read of the file, proven the same bytes by the BLAKE3 here.
    pub stored_sha256: Option<String>,
    /// BLAKE3 of the stored bytes, lowercase hex ([`storedsum`]).
    #[serde(default)]
    pub stored_blake3: String,
}

/// A writer that hashes and counts what passes through it.
pub struct HashWriter<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> HashWriter<W> {
    pub fn new(inner: W) -> Self {
        HashWriter {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    pub fn finish(self) -> (W, u64, String) {
        (self.inner, self.bytes, self.hasher.finish_hex())
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

enum Encoder<W: Write> {
    None(W),
    Gzip(pgz::ParGzWriter<W>),
    Zstd(zst::ZstdWriter<W>),
}

/// The default gzip level, on libdeflate's scale (gzip's 1-9 share it). libdeflate's 5 makes a
/// dump within 4 % of `gzip -6`'s size in 62 % of its own level 6's time (docs/PERFORMANCE.md).
pub const GZIP_LEVEL: i32 = 5;

/// The default zstd level. On dumps, level 1 makes output as small as level 3's (41.46 against
/// 41.49 MB on the bench's scale-20 dump, in 2 MiB jobs) in two thirds of its CPU; on two cores
/// that CPU is what the dump itself needs (docs/PERFORMANCE.md).
pub const ZSTD_LEVEL: i32 = 1;

/// How many plain bytes [`StoreWriter`] keeps from the end of the stream: enough for pg_dump's
/// completion line and what may follow it.
pub const TAIL: usize = 4096;

/// The write side of the pipeline. Write plain bytes in; call [`StoreWriter::finish`].
pub struct StoreWriter<W: Write> {
    // Inline: BLAKE3 at several GB/s on one core costs the writing thread less than a queue's copy.
    plain: Box<blake3::Hasher>,
    plain_bytes: u64,
    /// The last [`TAIL`] plain bytes: a sealed dump's completion line is checked here, in the
    /// stream, since the file itself can only be read back with the identity.
    tail: Vec<u8>,
    encoder: Encoder<SealWriter<StoredWriter<W>>>,
}

impl<W: Write> StoreWriter<W> {
    pub fn new(
        inner: W,
        compression: Compression,
        level: Option<i32>,
        recipients: Option<&Recipients>,
    ) -> io::Result<Self> {
        Self::with_stored_sha256(inner, compression, level, recipients, true)
    }

    /// Like [`StoreWriter::new`]; without `sha256`, the stored side gets only its BLAKE3 (the
    /// caller reads the file back and takes its SHA-256 there: one SHA-256 pass instead of two).
    pub fn with_stored_sha256(
        inner: W,
        compression: Compression,
        level: Option<i32>,
        recipients: Option<&Recipients>,
        sha256: bool,
    ) -> io::Result<Self> {
        let mut sums = StoredHasher::both();
        if !sha256 {
            sums.no_sha256();
        }
        let stored = SealWriter::new(StoredWriter { inner, sums }, recipients)?;
        let encoder = match compression {
            Compression::None => Encoder::None(stored),
            Compression::Gzip => {
                Encoder::Gzip(pgz::ParGzWriter::new(stored, level.unwrap_or(GZIP_LEVEL))?)
            }
            Compression::Zstd => Encoder::Zstd(zst::writer(stored, level.unwrap_or(ZSTD_LEVEL))?),
        };
        Ok(StoreWriter {
            plain: Box::default(),
            plain_bytes: 0,
            tail: Vec::with_capacity(TAIL * 2),
            encoder,
        })
    }

    /// The last plain bytes written (up to [`TAIL`]).
    pub fn tail(&self) -> &[u8] {
        &self.tail
    }

    /// Finishes the compressed stream (trailer included), then the seal, and returns the inner
    /// writer.
    pub fn finish(self) -> io::Result<(W, Digest)> {
        let sealed = match self.encoder {
            Encoder::None(w) => w,
            Encoder::Gzip(e) => e.finish()?,
            Encoder::Zstd(e) => zst::finish(e)?,
        };
        let StoredWriter { inner, sums } = sealed.finish()?;
        let sums = sums.finish();
        Ok((
            inner,
            Digest {
                plain_bytes: self.plain_bytes,
                plain_blake3: self.plain.finalize().to_hex().to_string(),
                stored_bytes: sums.bytes,
                stored_sha256: sums.sha256,
                stored_blake3: sums.blake3.unwrap_or_default(),
            },
        ))
    }
}

impl<W: Write> Write for StoreWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = match &mut self.encoder {
            Encoder::None(w) => w.write(buf)?,
            Encoder::Gzip(e) => e.write(buf)?,
            Encoder::Zstd(e) => e.write(buf)?,
        };
        self.plain.update(&buf[..n]);
        self.plain_bytes += n as u64;
        keep_tail(&mut self.tail, &buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        match &mut self.encoder {
            Encoder::None(w) => w.flush(),
            Encoder::Gzip(e) => e.flush(),
            Encoder::Zstd(e) => e.flush(),
        }
    }
}

/// Reads until `buf` is full or the stream ends; returns the bytes read.
pub fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

fn keep_tail(tail: &mut Vec<u8>, buf: &[u8]) {
    if buf.len() >= TAIL {
        tail.clear();
        tail.extend_from_slice(&buf[buf.len() - TAIL..]);
    } else {
        tail.extend_from_slice(buf);
        if tail.len() > TAIL {
            tail.drain(..tail.len() - TAIL);
        }
    }
}

/// How a stored file is opened: its compression, and the identities when it is sealed.
#[derive(Clone, Copy)]
pub struct Opening<'a> {
    pub compression: Compression,
    /// `Some` for a sealed file: `Err` when the file is sealed and no identity was configured.
    pub unseal: Option<&'a Identities>,
    pub sealed: bool,
}

/// Why a stored file could not be opened for reading its plain content.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The file is sealed and no identity was given.
    #[error(
        "the file is encrypted (age) and no identity is configured: set BACKUP_AGE_IDENTITY_FILE"
    )]
    NoIdentity,
    #[error(transparent)]
    Unseal(#[from] UnsealError),
}

impl From<io::Error> for OpenError {
    fn from(e: io::Error) -> Self {
        OpenError::Unseal(UnsealError::Io(e))
    }
}

/// Opens a stored file for reading its plain content.
pub fn open_plain(
    path: &std::path::Path,
    how: Opening<'_>,
) -> Result<PlainReader<BufReader<std::fs::File>>, OpenError> {
    let f = std::fs::File::open(path)?;
    PlainReader::open(BufReader::with_capacity(256 * 1024, f), how)
}

/// SHA-256 and length of a whole file, read in 1 MiB blocks.
pub fn hash_file(path: &std::path::Path) -> io::Result<(u64, String)> {
    let mut r = HashReader::new(std::fs::File::open(path)?);
    let mut buf = vec![0u8; 1 << 20];
    while r.read(&mut buf)? > 0 {}
    Ok(r.finish())
}

/// A reader that hashes and counts what is read through it.
pub struct HashReader<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> HashReader<R> {
    pub fn new(inner: R) -> Self {
        HashReader {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }
    pub fn finish(self) -> (u64, String) {
        (self.bytes, self.hasher.finish_hex())
    }
}

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Shares a [`StoredReader`] between the decoder and the code that reads the stored digest at the
/// end.
struct SharedStored<R>(std::rc::Rc<std::cell::RefCell<StoredReader<R>>>);

impl<R: Read> Read for SharedStored<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.borrow_mut().read(buf)
    }
}

enum Decoder<R: BufRead> {
    None(R),
    Gzip(Box<pgz::ParGzReader<R>>),
    Zstd(zstd::stream::read::Decoder<'static, R>),
}

/// The compressed stream under the decoder: the stored bytes, or what the seal lets through.
enum Opened<R: Read> {
    Plain(SharedStored<R>),
    Sealed(Box<age::stream::StreamReader<BufReader<SharedStored<R>>>>),
}

impl<R: Read> Read for Opened<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Opened::Plain(r) => r.read(buf),
            Opened::Sealed(r) => r.read(buf),
        }
    }
}

/// The read side: opens the seal, decompresses a stored stream, hashing both sides.
pub struct PlainReader<R: Read> {
    stored: std::rc::Rc<std::cell::RefCell<StoredReader<R>>>,
    decoder: Decoder<BufReader<Opened<R>>>,
    plain: Option<PlainHasher>,
    plain_bytes: u64,
}

/// What [`PlainReader::finish`] measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadBack {
    pub plain_bytes: u64,
    /// `None` when the reader was told not to hash the plain side.
    pub plain_sum: Option<PlainSum>,
    pub stored: StoredSums,
}

impl<R: Read> PlainReader<R> {
    /// A reader of an unsealed stream.
    pub fn new(inner: R, compression: Compression) -> io::Result<Self> {
        let how = Opening {
            compression,
            unseal: None,
            sealed: false,
        };
        Self::open(inner, how).map_err(|e| match e {
            OpenError::Unseal(UnsealError::Io(e)) => e,
            other => io::Error::other(other),
        })
    }

    /// A reader of a stored stream, sealed or not. A wrong identity or a damaged header fails
    /// here; damage further in fails a later `read` with `InvalidData`.
    pub fn open(inner: R, how: Opening<'_>) -> Result<Self, OpenError> {
        let stored = std::rc::Rc::new(std::cell::RefCell::new(StoredReader {
            inner,
            sums: StoredHasher::both(),
        }));
        let shared = SharedStored(stored.clone());
        let opened = match (how.sealed, how.unseal) {
            (false, _) => Opened::Plain(shared),
            (true, None) => return Err(OpenError::NoIdentity),
            (true, Some(ids)) => Opened::Sealed(Box::new(crate::crypt::unseal(shared, ids)?)),
        };
        let buffered = BufReader::with_capacity(256 * 1024, opened);
        let decoder = match how.compression {
            Compression::None => Decoder::None(buffered),
            Compression::Gzip => Decoder::Gzip(Box::new(pgz::ParGzReader::new(buffered))),
            Compression::Zstd => Decoder::Zstd(zstd::stream::read::Decoder::with_buffer(buffered)?),
        };
        Ok(PlainReader {
            stored,
            decoder,
            plain: Some(PlainHasher::new(PlainAlgo::Blake3)?),
            plain_bytes: 0,
        })
    }

    /// Skips the plain side's checksum. For a check whose plain content is already proven by the
    /// codec (every gzip member's CRC-32, zstd's frame checksum, age's per-chunk MAC, all computed
    /// from the plain bytes as they were written) and whose stored bytes are proven by the stored
    /// SHA-256.
    pub fn without_plain_hash(mut self) -> Self {
        self.plain = None;
        self
    }

    /// Skips the stored side's checksums (it still counts): for a restore, which proved the whole
    /// file before reading it, and whose codec checks every block as it is read.
    pub fn without_stored_hash(self) -> Self {
        self.stored.borrow_mut().sums.stop_hashing();
        self
    }

    /// Hashes the plain side with `algo` (BLAKE3 unless told otherwise): the one the record
    /// being checked keeps.
    pub fn hashing_plain(mut self, algo: PlainAlgo) -> io::Result<Self> {
        self.plain = Some(PlainHasher::new(algo)?);
        Ok(self)
    }

    /// Reads whatever is left of the stored stream (bytes after the compressed end) and returns
    /// both digests. Trailing garbage after a complete gzip member changes the stored hash, so a
    /// tampered file is still caught by the stored checksum.
    pub fn finish(mut self) -> io::Result<ReadBack> {
        let mut sink = [0u8; 64 * 1024];
        while self.read(&mut sink)? > 0 {}
        drop(self.decoder);
        let stored = std::rc::Rc::try_unwrap(self.stored)
            .map_err(|_| io::Error::other("stored stream still shared"))?
            .into_inner();
        let mut stored = stored;
        io::copy(&mut stored, &mut io::sink())?;
        Ok(ReadBack {
            plain_bytes: self.plain_bytes,
            plain_sum: self.plain.take().map(|h| h.finish()).transpose()?,
            stored: stored.sums.finish(),
        })
    }
}

impl<R: Read> Read for PlainReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = match &mut self.decoder {
            Decoder::None(r) => r.read(buf)?,
            Decoder::Gzip(r) => r.read(buf)?,
            Decoder::Zstd(r) => r.read(buf)?,
        };
        if let Some(h) = &mut self.plain {
            h.update(&buf[..n])?;
        }
        self.plain_bytes += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests;
