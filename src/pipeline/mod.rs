//! Stream adapters between a source and a sink: hash the plain bytes, compress, hash and count the
//! stored bytes. Knows nothing of pg_dump, buckets or files.
//!
//! Writing: `source bytes → [sha256 plain, count] → encoder (gzip | zstd | none) → [sha256 stored,
//! count] → inner writer`. [`StoreWriter::finish`] flushes the encoder's trailer and returns the
//! inner writer with a [`Digest`] of both sides; until then nothing is complete.
//!
//! Reading back (verification, restore): [`PlainReader`] decompresses a stored stream while hashing
//! both sides, so one pass over the file proves the stored checksum, the whole-stream decompression
//! and the plain checksum at once.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

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
    pub plain_sha256: String,
    pub stored_bytes: u64,
    pub stored_sha256: String,
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
        (self.inner, self.bytes, hex::encode(self.hasher.finalize()))
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
    Gzip(flate2::write::GzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

/// The write side of the pipeline. Write plain bytes in; call [`StoreWriter::finish`].
pub struct StoreWriter<W: Write> {
    plain: Sha256,
    plain_bytes: u64,
    encoder: Encoder<HashWriter<W>>,
}

impl<W: Write> StoreWriter<W> {
    pub fn new(inner: W, compression: Compression, level: Option<i32>) -> io::Result<Self> {
        let stored = HashWriter::new(inner);
        let encoder = match compression {
            Compression::None => Encoder::None(stored),
            Compression::Gzip => Encoder::Gzip(flate2::write::GzEncoder::new(
                stored,
                flate2::Compression::new(level.unwrap_or(6) as u32),
            )),
            Compression::Zstd => {
                let mut e = zstd::stream::write::Encoder::new(stored, level.unwrap_or(3))?;
                // One worker beside the caller's thread: compression overlaps with reading the source.
                let threads = std::thread::available_parallelism()
                    .map(|n| n.get() as u32)
                    .unwrap_or(1);
                e.multithread(threads.clamp(1, 4))?;
                e.include_checksum(true)?;
                Encoder::Zstd(e)
            }
        };
        Ok(StoreWriter {
            plain: Sha256::new(),
            plain_bytes: 0,
            encoder,
        })
    }

    /// Finishes the compressed stream (trailer included) and returns the inner writer.
    pub fn finish(self) -> io::Result<(W, Digest)> {
        let stored = match self.encoder {
            Encoder::None(w) => w,
            Encoder::Gzip(e) => e.finish()?,
            Encoder::Zstd(e) => e.finish()?,
        };
        let (inner, stored_bytes, stored_sha256) = stored.finish();
        Ok((
            inner,
            Digest {
                plain_bytes: self.plain_bytes,
                plain_sha256: hex::encode(self.plain.finalize()),
                stored_bytes,
                stored_sha256,
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

/// Opens a stored file for reading its plain content.
pub fn open_plain(
    path: &std::path::Path,
    compression: Compression,
) -> io::Result<PlainReader<BufReader<std::fs::File>>> {
    let f = std::fs::File::open(path)?;
    PlainReader::new(BufReader::with_capacity(256 * 1024, f), compression)
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
        (self.bytes, hex::encode(self.hasher.finalize()))
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

/// Shares a [`HashReader`] between the decoder and the code that reads the stored digest at the end.
struct SharedStored<R>(std::rc::Rc<std::cell::RefCell<HashReader<R>>>);

impl<R: Read> Read for SharedStored<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.borrow_mut().read(buf)
    }
}

enum Decoder<R: BufRead> {
    None(R),
    Gzip(Box<flate2::bufread::MultiGzDecoder<R>>),
    Zstd(zstd::stream::read::Decoder<'static, R>),
}

/// The read side: decompresses a stored stream, hashing both sides.
pub struct PlainReader<R: Read> {
    stored: std::rc::Rc<std::cell::RefCell<HashReader<R>>>,
    decoder: Decoder<BufReader<SharedStored<R>>>,
    plain: Sha256,
    plain_bytes: u64,
}

impl<R: Read> PlainReader<R> {
    pub fn new(inner: R, compression: Compression) -> io::Result<Self> {
        let stored = std::rc::Rc::new(std::cell::RefCell::new(HashReader::new(inner)));
        let buffered = BufReader::with_capacity(256 * 1024, SharedStored(stored.clone()));
        let decoder = match compression {
            Compression::None => Decoder::None(buffered),
            Compression::Gzip => {
                Decoder::Gzip(Box::new(flate2::bufread::MultiGzDecoder::new(buffered)))
            }
            Compression::Zstd => Decoder::Zstd(zstd::stream::read::Decoder::with_buffer(buffered)?),
        };
        Ok(PlainReader {
            stored,
            decoder,
            plain: Sha256::new(),
            plain_bytes: 0,
        })
    }

    /// Reads whatever is left of the stored stream (bytes after the compressed end) and returns
    /// both digests. Trailing garbage after a complete gzip member changes the stored hash, so a
    /// tampered file is still caught by the stored checksum.
    pub fn finish(mut self) -> io::Result<Digest> {
        let mut sink = [0u8; 64 * 1024];
        while self.read(&mut sink)? > 0 {}
        drop(self.decoder);
        let stored = std::rc::Rc::try_unwrap(self.stored)
            .map_err(|_| io::Error::other("stored stream still shared"))?
            .into_inner();
        let mut stored = stored;
        io::copy(&mut stored, &mut io::sink())?;
        let (stored_bytes, stored_sha256) = stored.finish();
        Ok(Digest {
            plain_bytes: self.plain_bytes,
            plain_sha256: hex::encode(self.plain.finalize()),
            stored_bytes,
            stored_sha256,
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
        self.plain.update(&buf[..n]);
        self.plain_bytes += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(c: Compression) {
        let data: Vec<u8> = (0..300_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let mut w = StoreWriter::new(Vec::new(), c, None).unwrap();
        for chunk in data.chunks(7000) {
            w.write_all(chunk).unwrap();
        }
        let (stored, digest) = w.finish().unwrap();
        assert_eq!(digest.plain_bytes, data.len() as u64);
        assert_eq!(digest.stored_bytes, stored.len() as u64);
        assert_eq!(digest.stored_sha256, hex::encode(Sha256::digest(&stored)));
        assert_eq!(digest.plain_sha256, hex::encode(Sha256::digest(&data)));

        // A decoder we did not write must read what we wrote.
        let independent = match c {
            Compression::Gzip => Some("gzip"),
            Compression::Zstd => Some("zstd"),
            Compression::None => None,
        };
        if let Some(tool) = independent {
            let dir = tempfile::tempdir().unwrap();
            let f = dir.path().join("stored");
            std::fs::write(&f, &stored).unwrap();
            let out = std::process::Command::new(tool)
                .arg("-dc")
                .arg(&f)
                .output()
                .unwrap_or_else(|e| panic!("{tool} must be installed: {e}"));
            assert!(out.status.success(), "{tool} -dc failed");
            assert!(out.stdout == data, "{tool} -dc gives other bytes");
        }

        let mut r = PlainReader::new(&stored[..], c).unwrap();
        let mut back = Vec::new();
        r.read_to_end(&mut back).unwrap();
        assert_eq!(back, data);
        assert_eq!(r.finish().unwrap(), digest);
    }

    #[test]
    fn every_compression_round_trips_with_matching_digests() {
        roundtrip(Compression::Gzip);
        roundtrip(Compression::Zstd);
        roundtrip(Compression::None);
    }

    #[test]
    fn truncated_streams_fail_to_decompress() {
        for c in [Compression::Gzip, Compression::Zstd] {
            let mut w = StoreWriter::new(Vec::new(), c, None).unwrap();
            w.write_all(&vec![7u8; 100_000]).unwrap();
            let (stored, _) = w.finish().unwrap();
            let cut = &stored[..stored.len() - 6];
            let mut r = PlainReader::new(cut, c).unwrap();
            let mut back = Vec::new();
            assert!(
                r.read_to_end(&mut back).is_err(),
                "{c} truncated stream decoded"
            );
        }
    }

    #[test]
    fn levels_are_checked() {
        assert!(Compression::Gzip.check_level(9).is_ok());
        assert!(Compression::Gzip.check_level(10).is_err());
        assert!(Compression::Zstd.check_level(19).is_ok());
        assert!(Compression::None.check_level(1).is_err());
    }
}
