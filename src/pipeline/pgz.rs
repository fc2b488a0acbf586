//! Gzip on every core: the stream is cut into blocks of [`BLOCK`] plain bytes, each compressed by
//! libdeflate on a worker thread into an independent gzip member (pigz `--independent` / BGZF
//! style), written in order. `gunzip`, `gzip -t`, zlib and every other gzip reader concatenate
//! the members, so a file written here is an ordinary `.gz` file.
//!
//! Each member carries one FEXTRA subfield, `SB` (8 bytes: the member's total size and its plain
//! size, both u32 little-endian), so [`ParGzReader`] can cut the file into members without
//! inflating it and decompress them on every core too. A file without that subfield (written by
//! `gzip`, by an earlier stackback, or edited) is read by flate2's sequential decoder from the
//! first foreign member on. Sizes read from a file are untrusted: a member or plain size outside
//! the bounds this writer produces is refused before anything is allocated, and every member's
//! CRC-32 and ISIZE are checked after inflating it.
//!
//! Blocks that do not compress (JPEG, ZIP, encrypted data) are stored, not deflated: a level-1
//! probe of the block's first 64 KiB decides, so an incompressible object costs a copy rather
//! than a full deflate search.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use libdeflater::{CompressionLvl, Compressor, Decompressor};

use super::read_full;

/// Plain bytes per member. 1 MiB keeps the loss against one continuous stream (the 32 KiB window
/// restarts at every member) under 0.5 % on dumps, and the memory in flight small.
pub const BLOCK: usize = 1 << 20;
/// Header of our members: the 10 fixed bytes, XLEN, and the `SB` subfield.
const HEADER: usize = 10 + 2 + 4 + 8;
const TRAILER: usize = 8;
/// A member this writer produces is never larger than this (a stored block of [`BLOCK`] bytes plus
/// framing is far below it); anything larger in a file is damage, not data.
const MAX_MEMBER: usize = BLOCK + BLOCK / 8 + 4096;
/// Bytes the incompressibility probe deflates.
const PROBE: usize = 64 * 1024;
/// A probe that saves less than this share of its input marks the block incompressible.
const PROBE_MIN_SAVING: f64 = 0.03;

/// Worker threads for compression and decompression: every core, at most 4, so the memory in
/// flight (two blocks in and out per worker) stays the same on a large host.
pub fn workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 4)
}

type Job<I, O> = (I, SyncSender<O>);

/// A fixed set of threads, each with its own state (a libdeflate compressor or decompressor),
/// running jobs in any order; the caller keeps the order by queueing the result receivers.
struct Pool<I: Send + 'static, O: Send + 'static> {
    tx: Option<SyncSender<Job<I, O>>>,
    threads: Vec<JoinHandle<()>>,
}

impl<I: Send + 'static, O: Send + 'static> Pool<I, O> {
    /// `idle`: the workers run at idle priority ([`super::priority`]). A backup's compressors do;
    /// a restore's decompressors keep their creator's priority: a restore is the work an
    /// operator waits on, and on a busy host it must not yield to everything else (measured on
    /// an idle one, the priority made no difference; docs/PERFORMANCE.md). Those a backup's check
    /// starts inherit its idle priority.
    fn new<S, M, F>(n: usize, idle: bool, make: M, work: F) -> io::Result<Self>
    where
        M: Fn() -> S + Send + Clone + 'static,
        F: Fn(&mut S, I) -> O + Send + Clone + 'static,
    {
        let (tx, rx) = sync_channel::<Job<I, O>>(n);
        let rx = Arc::new(Mutex::new(rx));
        let mut threads = Vec::with_capacity(n);
        for i in 0..n {
            let rx = rx.clone();
            let make = make.clone();
            let work = work.clone();
            let t = std::thread::Builder::new()
                .name(format!("gzip-{i}"))
                .spawn(move || {
                    if idle {
                        super::priority::lower_this_thread();
                    }
                    let mut state = make();
                    loop {
                        // A poisoned lock means another worker panicked: stop, and the caller
                        // sees the dropped result sender as a failure.
                        let job = match rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        let Ok((input, reply)) = job else { return };
                        // The caller may have given up (an error elsewhere): nothing to tell.
                        let _ = reply.send(work(&mut state, input));
                    }
                })?;
            threads.push(t);
        }
        Ok(Pool {
            tx: Some(tx),
            threads,
        })
    }

    fn submit(&self, input: I) -> io::Result<Receiver<O>> {
        let (reply, rx) = sync_channel(1);
        self.tx
            .as_ref()
            .expect("submit after shutdown")
            .send((input, reply))
            .map_err(|_| worker_died())?;
        Ok(rx)
    }
}

impl<I: Send + 'static, O: Send + 'static> Drop for Pool<I, O> {
    fn drop(&mut self) {
        self.tx.take();
        for t in self.threads.drain(..) {
            // A worker's panic was already reported as a dropped reply.
            let _ = t.join();
        }
    }
}

fn worker_died() -> io::Error {
    io::Error::other("a gzip worker thread stopped unexpectedly (it panicked); nothing was lost on disk, run the backup again and report this")
}

fn wait<O>(rx: Receiver<io::Result<O>>) -> io::Result<O> {
    rx.recv().map_err(|_| worker_died())?
}

/// Compresses one block into a whole member (header, deflate data, trailer).
fn compress_member(
    c: &mut (Compressor, Compressor, Compressor),
    plain: Vec<u8>,
) -> io::Result<Vec<u8>> {
    let (deflate, probe, store) = c;
    let crc = libdeflater::crc32(&plain);
    let bound = deflate.deflate_compress_bound(plain.len());
    let mut out = vec![0u8; HEADER + bound + TRAILER];
    let head = &plain[..plain.len().min(PROBE)];
    let incompressible = if head.len() < 512 {
        false
    } else {
        let mut scratch = vec![0u8; probe.deflate_compress_bound(head.len())];
        let n = probe
            .deflate_compress(head, &mut scratch)
            .map_err(|e| io::Error::other(format!("deflate: {e}")))?;
        (n as f64) > head.len() as f64 * (1.0 - PROBE_MIN_SAVING)
    };
    let engine = if incompressible { store } else { deflate };
    let n = engine
        .deflate_compress(&plain, &mut out[HEADER..HEADER + bound])
        .map_err(|e| io::Error::other(format!("deflate: {e}")))?;
    let total = HEADER + n + TRAILER;
    out.truncate(total);
    write_header(&mut out[..HEADER], total as u32, plain.len() as u32);
    out[HEADER + n..HEADER + n + 4].copy_from_slice(&crc.to_le_bytes());
    out[HEADER + n + 4..].copy_from_slice(&(plain.len() as u32).to_le_bytes());
    Ok(out)
}

fn write_header(h: &mut [u8], member: u32, plain: u32) {
    // ID1 ID2 CM=deflate FLG=FEXTRA MTIME=0 XFL=0 OS=255 (unknown): byte-for-byte reproducible.
    h[..10].copy_from_slice(&[0x1f, 0x8b, 8, 4, 0, 0, 0, 0, 0, 255]);
    h[10..12].copy_from_slice(&12u16.to_le_bytes());
    h[12..16].copy_from_slice(&[b'S', b'B', 8, 0]);
    h[16..20].copy_from_slice(&member.to_le_bytes());
    h[20..24].copy_from_slice(&plain.to_le_bytes());
}

/// The member and plain sizes of a header written by [`write_header`]; `None` for any other
/// header (a foreign member), and for sizes this writer never produces.
fn parse_header(h: &[u8; HEADER]) -> Option<(usize, usize)> {
    if h[..4] != [0x1f, 0x8b, 8, 4] || h[10..16] != [12, 0, b'S', b'B', 8, 0] {
        return None;
    }
    let member = u32::from_le_bytes(h[16..20].try_into().ok()?) as usize;
    let plain = u32::from_le_bytes(h[20..24].try_into().ok()?) as usize;
    ((HEADER + TRAILER..=MAX_MEMBER).contains(&member) && plain <= BLOCK).then_some((member, plain))
}

type Compressors = (Compressor, Compressor, Compressor);
/// Jobs: a member's deflate data and trailer, and its plain size.
type InflatePool = Pool<(Vec<u8>, usize), io::Result<Vec<u8>>>;

/// The writer: plain bytes in, gzip members out, in order.
pub struct ParGzWriter<W: Write> {
    inner: W,
    buf: Vec<u8>,
    pool: Pool<Vec<u8>, io::Result<Vec<u8>>>,
    pending: VecDeque<Receiver<io::Result<Vec<u8>>>>,
    max_pending: usize,
    members: u64,
}

impl<W: Write> ParGzWriter<W> {
    /// `level` is libdeflate's (1-12); gzip's 1-9 map to the same numbers.
    pub fn new(inner: W, level: i32) -> io::Result<Self> {
        let lvl = CompressionLvl::new(level)
            .map_err(|_| io::Error::other(format!("gzip level {level} is out of range")))?;
        let n = workers();
        let pool = Pool::new(
            n,
            true,
            move || -> Compressors {
                (
                    Compressor::new(lvl),
                    Compressor::new(CompressionLvl::new(1).expect("level 1")),
                    Compressor::new(CompressionLvl::new(0).expect("level 0 stores")),
                )
            },
            compress_member,
        )?;
        Ok(ParGzWriter {
            inner,
            buf: Vec::with_capacity(BLOCK),
            pool,
            pending: VecDeque::new(),
            max_pending: 2 * n,
            members: 0,
        })
    }

    fn submit(&mut self) -> io::Result<()> {
        let block = std::mem::replace(&mut self.buf, Vec::with_capacity(BLOCK));
        self.pending.push_back(self.pool.submit(block)?);
        self.members += 1;
        while self.pending.len() > self.max_pending {
            self.write_front()?;
        }
        // Members already done go out now: less memory held, and the disk works meanwhile.
        while let Some(front) = self.pending.front() {
            match front.try_recv() {
                Ok(member) => {
                    self.pending.pop_front();
                    self.inner.write_all(&member?)?;
                }
                Err(std::sync::mpsc::TryRecvError::Empty) => break,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => return Err(worker_died()),
            }
        }
        Ok(())
    }

    fn write_front(&mut self) -> io::Result<()> {
        if let Some(rx) = self.pending.pop_front() {
            let member = wait(rx)?;
            self.inner.write_all(&member)?;
        }
        Ok(())
    }

    /// Compresses what is left, writes every member, and returns the inner writer. An empty
    /// stream still gets one (empty) member: a zero-byte file is not valid gzip.
    pub fn finish(mut self) -> io::Result<W> {
        if !self.buf.is_empty() || self.members == 0 {
            self.submit()?;
        }
        while !self.pending.is_empty() {
            self.write_front()?;
        }
        self.inner.flush()?;
        let ParGzWriter { inner, pool, .. } = self;
        drop(pool);
        Ok(inner)
    }
}

impl<W: Write> Write for ParGzWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = BLOCK - self.buf.len();
        let n = data.len().min(room);
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == BLOCK {
            self.submit()?;
        }
        Ok(n)
    }

    /// Writes out the members already handed to the workers. The partial block stays: cutting
    /// a member at every flush would make small members and a worse ratio.
    fn flush(&mut self) -> io::Result<()> {
        while !self.pending.is_empty() {
            self.write_front()?;
        }
        self.inner.flush()
    }
}

fn corrupt(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

/// Inflates one of our members' deflate data and checks its CRC-32 and ISIZE.
fn inflate_member(d: &mut Decompressor, job: (Vec<u8>, usize)) -> io::Result<Vec<u8>> {
    let (body, plain) = job;
    let (deflate, trailer) = body.split_at(body.len() - TRAILER);
    let crc = u32::from_le_bytes(trailer[..4].try_into().expect("4 bytes"));
    let isize = u32::from_le_bytes(trailer[4..].try_into().expect("4 bytes"));
    let mut out = vec![0u8; plain];
    let n = d
        .deflate_decompress(deflate, &mut out)
        .map_err(|e| corrupt(format!("a gzip member does not inflate: {e}")))?;
    if n != plain || isize as usize != plain {
        return Err(corrupt(format!(
            "a gzip member inflates to {n} bytes, its header says {plain} and its trailer {isize}"
        )));
    }
    if libdeflater::crc32(&out) != crc {
        return Err(corrupt("a gzip member fails its CRC-32 check"));
    }
    Ok(out)
}

enum Mode<R: Read> {
    /// Our members: cut here, inflated by the pool.
    Members(R),
    /// From the first foreign member on: flate2, sequentially.
    Foreign(Box<flate2::read::MultiGzDecoder<io::Chain<io::Cursor<Vec<u8>>, R>>>),
    Done,
}

/// The reader: gzip bytes in, plain bytes out; our members are inflated on every core.
pub struct ParGzReader<R: Read> {
    mode: Mode<R>,
    pool: Option<InflatePool>,
    pending: VecDeque<Receiver<io::Result<Vec<u8>>>>,
    max_pending: usize,
    out: Vec<u8>,
    pos: usize,
    members: u64,
}

impl<R: Read> ParGzReader<R> {
    pub fn new(inner: R) -> Self {
        ParGzReader {
            mode: Mode::Members(inner),
            pool: None,
            pending: VecDeque::new(),
            max_pending: 2 * workers(),
            out: Vec::new(),
            pos: 0,
            members: 0,
        }
    }

    /// Reads the next member's header; queues it, or switches to the sequential decoder.
    /// Returns false at the end of the stream.
    fn queue_next(&mut self) -> io::Result<bool> {
        let Mode::Members(inner) = &mut self.mode else {
            return Ok(false);
        };
        let mut head = [0u8; HEADER];
        let got = read_full(inner, &mut head)?;
        if got == 0 {
            if self.members == 0 {
                return Err(corrupt("the gzip stream is empty"));
            }
            self.mode = Mode::Done;
            return Ok(false);
        }
        match (got == HEADER).then(|| parse_header(&head)).flatten() {
            Some((member, plain)) => {
                let mut body = vec![0u8; member - HEADER];
                inner.read_exact(&mut body).map_err(|e| match e.kind() {
                    io::ErrorKind::UnexpectedEof => corrupt("the gzip stream is truncated"),
                    _ => e,
                })?;
                if self.pool.is_none() {
                    self.pool = Some(Pool::new(
                        workers(),
                        false,
                        Decompressor::new,
                        inflate_member,
                    )?);
                }
                let pool = self.pool.as_ref().expect("just set");
                self.pending.push_back(pool.submit((body, plain))?);
                self.members += 1;
                Ok(true)
            }
            None => {
                // Not ours (or damaged): hand everything from this header on to flate2, which
                // also reports a bad header as such.
                let Mode::Members(inner) = std::mem::replace(&mut self.mode, Mode::Done) else {
                    unreachable!("checked above")
                };
                let rest = io::Cursor::new(head[..got].to_vec()).chain(inner);
                self.mode = Mode::Foreign(Box::new(flate2::read::MultiGzDecoder::new(rest)));
                self.members += 1;
                Ok(true)
            }
        }
    }
}

impl<R: Read> Read for ParGzReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.pos < self.out.len() {
                let n = buf.len().min(self.out.len() - self.pos);
                buf[..n].copy_from_slice(&self.out[self.pos..self.pos + n]);
                self.pos += n;
                return Ok(n);
            }
            while self.pending.len() < self.max_pending && matches!(self.mode, Mode::Members(_)) {
                if !self.queue_next()? {
                    break;
                }
            }
            if let Some(rx) = self.pending.pop_front() {
                self.out = wait(rx)?;
                self.pos = 0;
                continue;
            }
            return match &mut self.mode {
                Mode::Foreign(d) => d.read(buf),
                _ => Ok(0),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo_random(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn text(n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n);
        let mut i = 0u64;
        while v.len() < n {
            v.extend_from_slice(
                format!("{i}\tcustomer {}\t{}\n", i % 97, i * 31 % 1000).as_bytes(),
            );
            i += 1;
        }
        v.truncate(n);
        v
    }

    /// The plain size of each member, walking the headers.
    fn members(gz: &[u8]) -> Vec<usize> {
        let mut at = 0;
        let mut plains = Vec::new();
        while at < gz.len() {
            let (member, plain) = parse_header(gz[at..at + HEADER].try_into().unwrap()).unwrap();
            plains.push(plain);
            at += member;
        }
        assert_eq!(at, gz.len());
        plains
    }

    fn compress(data: &[u8], write_size: usize) -> Vec<u8> {
        let mut w = ParGzWriter::new(Vec::new(), 6).unwrap();
        for c in data.chunks(write_size.max(1)) {
            w.write_all(c).unwrap();
        }
        w.finish().unwrap()
    }

    fn gunzip(gz: &[u8]) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x.gz");
        std::fs::write(&f, gz).unwrap();
        let t = std::process::Command::new("gzip")
            .arg("-t")
            .arg(&f)
            .status()
            .unwrap();
        assert!(t.success(), "gzip -t refuses our stream");
        std::process::Command::new("gzip")
            .arg("-dc")
            .arg(&f)
            .output()
            .unwrap()
            .stdout
    }

    /// Every size class around the block boundary, for text and for incompressible bytes,
    /// read back by `gzip` and by our reader, written in small and large pieces.
    #[test]
    fn block_boundaries_round_trip_through_gzip_and_our_reader() {
        for n in [0, 1, 511, 512, BLOCK - 1, BLOCK, BLOCK + 1, 3 * BLOCK + 17] {
            for data in [text(n), pseudo_random(n, n as u64)] {
                for ws in [4096, 3 * BLOCK] {
                    let gz = compress(&data, ws);
                    assert_eq!(gunzip(&gz), data, "gzip -dc, {n} bytes");
                    let mut back = Vec::new();
                    ParGzReader::new(&gz[..]).read_to_end(&mut back).unwrap();
                    assert_eq!(back, data, "our reader, {n} bytes");
                    let plains = members(&gz);
                    assert_eq!(plains.len(), n.div_ceil(BLOCK).max(1), "{n} bytes");
                    assert!(plains[..plains.len() - 1].iter().all(|&p| p == BLOCK));
                }
            }
        }
    }

    #[test]
    fn incompressible_blocks_are_stored_and_text_is_deflated() {
        let noise = pseudo_random(2 * BLOCK, 7);
        let gz = compress(&noise, 1 << 16);
        // Stored: the input plus framing (5 bytes per 64 KiB stored block), nothing more.
        let framing = 2 * (HEADER + TRAILER + 5 * BLOCK.div_ceil(65535));
        assert!(gz.len() <= noise.len() + framing, "{}", gz.len());
        let t = text(2 * BLOCK);
        let packed = compress(&t, 1 << 16).len();
        assert!(packed < t.len() / 2, "text stored, not deflated: {packed}");
    }

    #[test]
    fn foreign_gzip_and_mixed_streams_are_read() {
        let data = text(3 * BLOCK / 2);
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        e.write_all(&data).unwrap();
        let foreign = e.finish().unwrap();
        let mut back = Vec::new();
        ParGzReader::new(&foreign[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
        // Ours, then a foreign member: concatenated, as gzip readers do.
        let mut mixed = compress(&data, 1 << 20);
        mixed.extend_from_slice(&foreign);
        let mut back = Vec::new();
        ParGzReader::new(&mixed[..]).read_to_end(&mut back).unwrap();
        assert_eq!(back.len(), 2 * data.len());
        assert_eq!(gunzip(&mixed), back);
    }

    #[test]
    fn damage_is_refused() {
        let data = text(2 * BLOCK + 100);
        let gz = compress(&data, 1 << 20);
        let read = |b: &[u8]| {
            let mut out = Vec::new();
            ParGzReader::new(b).read_to_end(&mut out).map(|_| out)
        };
        // Truncated anywhere: an error, never a short success.
        for cut in [1, 10, HEADER, HEADER + 5, gz.len() / 2, gz.len() - 1] {
            assert!(read(&gz[..cut]).is_err(), "cut at {cut} read as complete");
        }
        // A flipped byte in the deflate data or the CRC of the second member.
        let second = u32::from_le_bytes(gz[16..20].try_into().unwrap()) as usize;
        let second_len =
            u32::from_le_bytes(gz[second + 16..second + 20].try_into().unwrap()) as usize;
        for at in [second + HEADER + 100, second + second_len - TRAILER + 1] {
            let mut bad = gz.clone();
            bad[at] ^= 0x40;
            assert!(read(&bad).is_err(), "flip at {at} read as good");
        }
        // A header claiming a giant member is not trusted: nothing of that size is allocated, the
        // member is read as a foreign one (the size is ours, not gzip's), and it still inflates.
        let mut odd = gz.clone();
        odd[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(read(&odd).unwrap(), data);
        // A member size inside the bounds but wrong cuts the stream wrongly: refused.
        let mut bad = gz.clone();
        bad[16..20].copy_from_slice(&((second - 1) as u32).to_le_bytes());
        assert!(read(&bad).is_err());
        assert!(read(&[]).is_err());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn compressors_run_idle_and_decompressors_keep_their_creators_priority() {
        // SAFETY: a plain query of the calling thread.
        let policy = || unsafe { libc::sched_getscheduler(0) };
        let normal = policy();
        assert_ne!(normal, libc::SCHED_IDLE, "the test thread itself is idle");
        for (idle, want) in [(true, libc::SCHED_IDLE), (false, normal)] {
            // Each worker's state is the policy it found itself under when it started.
            let pool: Pool<(), i32> = Pool::new(workers(), idle, policy, |p, ()| *p).unwrap();
            let replies: Vec<_> = (0..8).map(|_| pool.submit(()).unwrap()).collect();
            for r in replies {
                assert_eq!(r.recv().unwrap(), want, "idle: {idle}");
            }
        }
    }
}
