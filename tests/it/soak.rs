//! Soak (issue 13, deliver 5): the daemon makes 50 consecutive runs on a seconds-resolution
//! schedule, of a database and a bucket, with retention that prunes (`BACKUP_RETENTION_DAYS=0
//! BACKUP_KEEP_LAST=5`). After every run: the directory holds at most the files of the 5 kept
//! runs plus the one in progress. The daemon's open file descriptors at run 50 equal those at
//! run 1. A leak is judged after a warm-up of 10 runs on two counts that only a leak moves: the
//! live heap the daemon logs after each run (bytes allocated and not freed, counted by its global
//! allocator), whose median over runs 41-50 may exceed that of runs 11-20 by at most 16 KiB (a
//! leak of about 550 bytes a run fails it), and its threads, none more in runs 41-50 than in runs
//! 11-20. Resident memory is reported, not judged: even with the freed heap given back after each
//! run, glibc's arenas and the threads' stacks make it swing by ±3 MB from one run to the next
//! while the live heap stays flat to the byte. The numbers are printed and written to
//! `$CARGO_TARGET_TMPDIR/soak.txt` for docs/RELIABILITY.md.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::s3::{moto, small_bucket};
use crate::support::*;

const RUNS: usize = 50;
/// Runs after which the live heap is expected to be flat.
const WARMUP: usize = 10;
/// Runs in each window whose median RSS is compared.
const WINDOW: usize = 10;

/// The daemon's use of the machine after one run.
#[derive(Clone, Copy)]
struct Sample {
    fds: usize,
    /// VmRSS, KiB.
    rss: u64,
    /// RssAnon (the heap and the threads' stacks), KiB.
    anon: u64,
    threads: u64,
    /// Heap in use, as the daemon logs it after each run (`backup_daemon_heap_bytes` on
    /// /metrics), KiB.
    heap: u64,
}

/// A [`Sample`] of the daemon `pid` that serves /metrics on `addr` and has logged `log`.
fn sample(pid: u32, addr: &str, log: &str) -> Sample {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap()
    };
    // As the daemon logged it after the run, with nothing else going on; /metrics must agree
    // that it reports it.
    let (ok, metrics) = tool("curl", &["-sf", &format!("http://{addr}/metrics")]);
    assert!(ok, "/metrics: {metrics}");
    assert!(metrics.contains("\nbackup_daemon_heap_bytes "), "{metrics}");
    let heap: u64 = log
        .lines()
        .rfind(|l| l.contains("memory after the run"))
        .and_then(|l| l.split_once("heap_in_use_bytes="))
        .and_then(|(_, v)| v.split_whitespace().next())
        .unwrap_or_else(|| panic!("no heap_in_use_bytes logged: {log}"))
        .parse()
        .unwrap();
    Sample {
        fds,
        rss: field("VmRSS:"),
        anon: field("RssAnon:"),
        threads: field("Threads:"),
        heap: heap.div_ceil(1024),
    }
}

/// (artifact files, their bytes) in `dir`.
fn disk(dir: &std::path::Path) -> (usize, u64) {
    let arts = artifacts(dir);
    let bytes = arts
        .iter()
        .map(|f| std::fs::metadata(dir.join(f)).map(|m| m.len()).unwrap_or(0))
        .sum();
    (arts.len(), bytes)
}

#[test]
fn fifty_daemon_runs_stay_inside_retention_without_leaking() {
    let c = cluster();
    let s3 = moto();
    let b = small_bucket(s3);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("backups");
    let mut env = c.env(&c.seeded_db("soak"), &dir);
    env.extend(s3.env(&b));
    let addr = format!("127.0.0.1:{}", free_port());
    let env = with(
        env,
        &[
            ("BACKUP_SCHEDULE", "*/2 * * * * *"),
            ("BACKUP_RETENTION_DAYS", "0"),
            ("BACKUP_KEEP_LAST", "5"),
            ("BACKUP_HTTP_ADDR", &addr),
        ],
    );
    let log = tmp.path().join("daemon.log");
    let mut daemon = stackback_cmd(&["daemon"], &env)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let pid = daemon.id();
    // The daemon logs its memory once a run is over and the memory it freed given back.
    let finished = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .matches("memory after the run")
            .count()
    };
    let mut samples: Vec<Sample> = Vec::with_capacity(RUNS);
    let mut run_bytes = 0u64;
    let mut worst_disk = (0usize, 0u64);
    let deadline = Instant::now() + Duration::from_secs(600);
    for n in 1..=RUNS {
        while finished() < n {
            assert!(
                daemon.try_wait().unwrap().is_none(),
                "the daemon died: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            assert!(Instant::now() < deadline, "run {n} never finished");
            std::thread::sleep(Duration::from_millis(20));
        }
        // Measured between runs, after the daemon gave the run's freed memory back: the next
        // run starts at the next even second.
        let u = sample(pid, &addr, &std::fs::read_to_string(&log).unwrap());
        let (files_now, bytes_now) = disk(&dir);
        let newest = records(&dir)
            .into_iter()
            .filter(|r| r["status"] != "running")
            .max_by_key(|r| r["sequence"].as_u64())
            .unwrap();
        assert_eq!(newest["status"], "ok", "run {n}: {newest}");
        let this_run: u64 = newest["artifacts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["stored_bytes"].as_u64().unwrap())
            .sum();
        run_bytes = run_bytes.max(this_run);
        // 5 kept runs and one in progress, 3 files each (dump, archive, index); the index is
        // not counted in stored_bytes, so allow it a margin of its own.
        assert!(
            files_now <= 6 * 3,
            "run {n}: {files_now} files: {:?}",
            files(&dir)
        );
        assert!(
            bytes_now <= 6 * (run_bytes + 64 * 1024),
            "run {n}: {bytes_now} bytes on disk, one run is {run_bytes}"
        );
        worst_disk = (worst_disk.0.max(files_now), worst_disk.1.max(bytes_now));
        samples.push(u);
    }
    unsafe {
        libc::kill(pid as i32, libc::SIGTERM);
    }
    let status = daemon.wait().unwrap();
    let median = |w: &[Sample], pick: fn(&Sample) -> u64| {
        let mut w: Vec<u64> = w.iter().map(pick).collect();
        w.sort_unstable();
        w[w.len() / 2]
    };
    let (early, late) = (&samples[WARMUP..WARMUP + WINDOW], &samples[RUNS - WINDOW..]);
    let (first, warm, last) = (samples[0], samples[WARMUP - 1], samples[RUNS - 1]);
    let growth = |a: u64, b: u64| (b as f64 - a as f64) * 100.0 / a as f64;
    let line = |name: &str, pick: fn(&Sample) -> u64| {
        let (e, l) = (median(early, pick), median(late, pick));
        format!(
            "{name}: run 1 {} KiB, run {WARMUP} {} KiB, run {RUNS} {} KiB; medians of runs {}-{} and {}-{}: {e} and {l} KiB ({:+.1} %)",
            pick(&first),
            pick(&warm),
            pick(&last),
            WARMUP + 1,
            WARMUP + WINDOW,
            RUNS - WINDOW + 1,
            RUNS,
            growth(e, l)
        )
    };
    let series = |pick: fn(&Sample) -> u64| {
        samples
            .iter()
            .map(|u| pick(u).to_string())
            .collect::<Vec<_>>()
            .join(" ")
    };
    let (heap_early, heap_late) = (median(early, |u| u.heap), median(late, |u| u.heap));
    let report = format!(
        "soak: {RUNS} daemon runs (*/2 s schedule, RETENTION_DAYS=0 KEEP_LAST=5, database + bucket)\n\
         disk: at most {} artifact files, {} bytes (one run: {run_bytes} bytes; bound 6 runs)\n\
         fds: run 1 {}, run {RUNS} {}\n\
         {}\n{}\n{}\n\
         live heap after each run, KiB: {}\n\
         RssAnon after each run, KiB: {}\n\
         threads after each run: {}\n",
        worst_disk.0,
        worst_disk.1,
        first.fds,
        last.fds,
        line("live heap", |u| u.heap),
        line("VmRSS", |u| u.rss),
        line("RssAnon", |u| u.anon),
        series(|u| u.heap),
        series(|u| u.anon),
        series(|u| u.threads),
    );
    println!("{report}");
    let _ = std::fs::write(
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("soak.txt"),
        &report,
    );
    assert_eq!(status.code(), Some(0), "SIGTERM ends the daemon with 0");
    assert_eq!(
        records(&dir).iter().filter(|r| r["status"] == "ok").count(),
        5
    );
    assert_eq!(last.fds, first.fds, "open file descriptors grew: {report}");
    assert!(
        heap_late <= heap_early + 16,
        "the live heap grew by more than 16 KiB after the warm-up: {report}"
    );
    let threads = |w: &[Sample]| w.iter().map(|u| u.threads).max().unwrap();
    assert!(
        threads(late) <= threads(early),
        "the daemon has more threads than it had after the warm-up: {report}"
    );
}
