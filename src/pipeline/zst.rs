//! zstd compression whose worker threads run at background priority ([`super::priority`]).
//!
//! zstd starts a context's workers on the thread of its first compressing call, and a thread
//! takes its creator's priority: left alone they would be started by the thread that reads the
//! source, at its priority. Instead every context of the process works on one shared pool (zstd's
//! `ZSTD_threadPool`), created once by a thread lowered to background priority. One pool also
//! means that two streams compressing at once (a daemon's run beside a command) share the same
//! few threads instead of each bringing their own.

use std::io::{self, Write};
use std::sync::OnceLock;

use zstd::stream::raw::{CParameter, InBuffer, Operation, OutBuffer, WriteBuf};
use zstd::stream::zio;
use zstd::zstd_safe::{self, CCtx, ResetDirective, ThreadPool};

// Every core, at most 4, as for gzip: the memory in flight grows with them. On two cores one
// works beside the thread that feeds it, so compression overlaps with reading.
use super::pgz::workers;

/// Plain bytes per zstd worker job: zstd's default job is 4 windows (8 MiB at level 3) with that
/// much again in flight per worker, 50 MiB of buffers; 2 MiB jobs keep a run under the 64 MiB
/// bound at a ratio within 1 % (docs/PERFORMANCE.md).
const JOB: u32 = 2 << 20;

/// The process's pool, or `None` when its threads could not be started (each context then
/// starts its own, at the caller's priority, or fails there with zstd's own error).
fn pool() -> Option<&'static ThreadPool> {
    static POOL: OnceLock<Option<ThreadPool>> = OnceLock::new();
    POOL.get_or_init(|| {
        std::thread::Builder::new()
            .name("zstd".into())
            .spawn(|| {
                super::priority::lower_this_thread();
                ThreadPool::try_new(workers())
            })
            .ok()?
            .join()
            .ok()?
    })
    .as_ref()
}

/// A compression context on the shared pool, driven by zstd's own streaming writer.
pub struct Pooled(CCtx<'static>);

fn zstd_error(code: usize) -> io::Error {
    io::Error::other(format!("zstd: {}", zstd_safe::get_error_name(code)))
}

impl Operation for Pooled {
    fn run<C: WriteBuf + ?Sized>(
        &mut self,
        input: &mut InBuffer<'_>,
        output: &mut OutBuffer<'_, C>,
    ) -> io::Result<usize> {
        self.0.compress_stream(output, input).map_err(zstd_error)
    }

    fn flush<C: WriteBuf + ?Sized>(&mut self, output: &mut OutBuffer<'_, C>) -> io::Result<usize> {
        self.0.flush_stream(output).map_err(zstd_error)
    }

    fn reinit(&mut self) -> io::Result<()> {
        self.0
            .reset(ResetDirective::SessionOnly)
            .map(|_| ())
            .map_err(zstd_error)
    }

    fn finish<C: WriteBuf + ?Sized>(
        &mut self,
        output: &mut OutBuffer<'_, C>,
        _finished_frame: bool,
    ) -> io::Result<usize> {
        self.0.end_stream(output).map_err(zstd_error)
    }
}

/// Writes one zstd frame (with its content checksum) into `W`; end it with [`finish`].
pub type ZstdWriter<W> = zio::Writer<W, Pooled>;

/// A writer compressing at `level` on the shared pool.
pub fn writer<W: Write>(inner: W, level: i32) -> io::Result<ZstdWriter<W>> {
    let mut c = CCtx::try_create().ok_or_else(|| io::Error::other("zstd: out of memory"))?;
    let set = |c: &mut CCtx<'static>, p| c.set_parameter(p).map(|_| ()).map_err(zstd_error);
    set(&mut c, CParameter::CompressionLevel(level))?;
    set(&mut c, CParameter::NbWorkers(workers() as u32))?;
    set(&mut c, CParameter::JobSize(JOB))?;
    set(&mut c, CParameter::ChecksumFlag(true))?;
    if let Some(pool) = pool() {
        c.ref_thread_pool(pool).map_err(zstd_error)?;
    }
    Ok(zio::Writer::new(inner, Pooled(c)))
}

/// Ends the frame (the last block and the checksum) and returns the inner writer.
pub fn finish<W: Write>(mut w: ZstdWriter<W>) -> io::Result<W> {
    w.finish()?;
    Ok(w.into_inner().0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n);
        let mut i = 0u64;
        while v.len() < n {
            v.extend_from_slice(format!("{i}\trow {}\t{}\n", i % 89, i * 17 % 1000).as_bytes());
            i += 1;
        }
        v.truncate(n);
        v
    }

    fn compress(data: &[u8], chunk: usize) -> Vec<u8> {
        let mut w = writer(Vec::new(), 1).unwrap();
        for c in data.chunks(chunk.max(1)) {
            w.write_all(c).unwrap();
        }
        finish(w).unwrap()
    }

    #[test]
    fn every_size_around_a_job_round_trips_through_zstd_itself() {
        let job = JOB as usize;
        for n in [0, 1, 4095, job - 1, job, job + 1, 3 * job + 7] {
            let data = text(n);
            let z = compress(&data, 256 << 10);
            assert_eq!(zstd::decode_all(&z[..]).unwrap(), data, "size {n}");
            // A content checksum is in the frame header's flags (bit 2 of the descriptor).
            assert_eq!(z[4] & 0x04, 0x04, "size {n}: no checksum flag");
        }
    }

    #[test]
    fn two_streams_at_once_share_the_pool_and_stay_apart() {
        let (a, b) = (text(5 << 20), text(3 << 20 | 5));
        let (ta, tb) = (a.clone(), b.clone());
        let ja = std::thread::spawn(move || compress(&ta, 100_000));
        let jb = std::thread::spawn(move || compress(&tb, 77_777));
        assert_eq!(zstd::decode_all(&ja.join().unwrap()[..]).unwrap(), a);
        assert_eq!(zstd::decode_all(&jb.join().unwrap()[..]).unwrap(), b);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_workers_run_idle() {
        // More than one job, so the workers have worked.
        let data = text(3 * JOB as usize);
        assert_eq!(
            zstd::decode_all(&compress(&data, 1 << 20)[..]).unwrap(),
            data
        );
        let tids = super::super::priority::threads_named("zstd");
        assert_eq!(tids.len(), workers(), "zstd's pool: {tids:?}");
        for tid in tids {
            assert_eq!(
                super::super::priority::is_idle(tid),
                Some(true),
                "thread {tid}"
            );
        }
    }
}
