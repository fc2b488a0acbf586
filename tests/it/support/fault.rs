//! What every fault scenario of issue 13 asserts, in one place: the alert went out, nothing that
//! passes for a good backup appeared, the backups made before the fault are byte for byte what
//! they were and still verify; plus the means to time a fault inside a run (a temp file's size,
//! a proxy's request count, a child process of stackback).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Child;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::notify::Receiver;
use super::pg::Cluster;
use super::*;

/// A webhook and a heartbeat receiver, and the environment pointing at them.
pub struct Alerts {
    pub hook: Receiver,
    pub beat: Receiver,
}

impl Alerts {
    pub fn start() -> Alerts {
        Alerts {
            hook: Receiver::start(),
            beat: Receiver::start(),
        }
    }

    pub fn env(&self, env: &[(String, String)]) -> Vec<(String, String)> {
        with(
            env.to_vec(),
            &[
                ("BACKUP_ALERT_WEBHOOK_URL", &self.hook.url("/hook")),
                ("BACKUP_HEARTBEAT_URL", &self.beat.url("/hb")),
            ],
        )
    }

    /// The text of every alert received so far (Slack's `{"text"}` body, decoded).
    pub fn texts(&self) -> Vec<String> {
        self.hook
            .requests()
            .iter()
            .map(|r| {
                let body = r["body"].as_str().unwrap_or("");
                serde_json::from_str::<serde_json::Value>(body)
                    .ok()
                    .and_then(|v| v["text"].as_str().map(String::from))
                    .unwrap_or_else(|| body.to_string())
            })
            .collect()
    }

    /// Paths the heartbeat was pinged on, in order.
    pub fn pings(&self) -> Vec<String> {
        self.beat
            .requests()
            .iter()
            .map(|r| r["path"].as_str().unwrap_or("").to_string())
            .collect()
    }

    /// Waits for the `n`-th alert (counting from 1) and returns its text; it must say FAILED and
    /// contain every one of `words`. Alerts are sent before stackback exits, so once the run has
    /// returned, this only waits for the receiver to write its log.
    pub fn failure(&self, n: usize, words: &[&str]) -> String {
        let mut texts = Vec::new();
        wait_until(Duration::from_secs(30), "the failure alert", || {
            texts = self.texts();
            texts.len() >= n
        });
        let t = texts[n - 1].clone();
        assert!(t.contains("FAILED"), "alert {n} is not a failure: {t}");
        for w in words {
            assert!(t.contains(w), "alert {n} does not say {w:?}: {t}");
        }
        t
    }

    /// The last heartbeat ping was `/fail` (the Healthchecks convention for a failed run).
    pub fn assert_fail_ping(&self) {
        wait_until(Duration::from_secs(30), "the /fail ping", || {
            self.pings().last().is_some_and(|p| p.ends_with("/fail"))
        });
    }
}

/// The good backups in a directory before a fault: file → SHA-256 (by sha256sum), and the ok runs.
pub struct Baseline {
    pub files: BTreeMap<String, String>,
    pub ok_runs: Vec<String>,
}

pub fn sha256sum(p: &Path) -> String {
    sh(&format!("sha256sum {}", shell_quote(p)))
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

impl Baseline {
    pub fn take(dir: &Path) -> Baseline {
        let files = artifacts(dir)
            .into_iter()
            .map(|f| {
                let sum = sha256sum(&dir.join(&f));
                (f, sum)
            })
            .collect();
        let ok_runs = records(dir)
            .iter()
            .filter(|r| r["status"] == "ok")
            .map(|r| r["run_id"].as_str().unwrap().to_string())
            .collect();
        Baseline { files, ok_runs }
    }

    /// Every earlier backup is still there with the same bytes, and verifies by its run id.
    pub fn assert_untouched(&self, dir: &Path, env: &[(String, String)]) {
        for (f, sum) in &self.files {
            let p = dir.join(f);
            assert!(
                p.exists(),
                "the earlier backup {f} is gone: {:?}",
                files(dir)
            );
            assert_eq!(&sha256sum(&p), sum, "the earlier backup {f} changed");
        }
        for id in &self.ok_runs {
            let r = stackback(&["verify", id], env);
            assert_eq!(
                r.code,
                0,
                "earlier run {id} no longer verifies: {}",
                r.all()
            );
        }
    }

    /// Nothing new passes for a good backup: the ok runs are the earlier ones, `verify --all`
    /// verifies exactly the earlier artifacts plus `extra_good` (the database of a partial run),
    /// every new artifact file is named by a run that is not ok (a failed run's are gone; a killed
    /// run's stay, listed as incomplete, until BACKUP_FAILED_GRACE), and `list` agrees with the
    /// disk.
    pub fn assert_nothing_good_added(
        &self,
        dir: &Path,
        env: &[(String, String)],
        extra_good: usize,
    ) {
        let l = list_json(env);
        let runs = l["runs"].as_array().unwrap();
        let mut ok: Vec<String> = runs
            .iter()
            .filter(|r| r["status"] == "ok")
            .map(|r| r["run_id"].as_str().unwrap().to_string())
            .collect();
        ok.sort();
        let mut want = self.ok_runs.clone();
        want.sort();
        assert_eq!(ok, want, "a run became ok: {l}");
        for run in runs.iter().filter(|r| r["status"] == "failed") {
            for a in run["artifacts"].as_array().unwrap() {
                assert_eq!(a["present"], false, "a failed run left a file: {run}");
            }
        }
        let named_by_bad_runs: Vec<&str> = runs
            .iter()
            .filter(|r| r["status"] != "ok")
            .flat_map(|r| r["artifacts"].as_array().unwrap())
            .filter_map(|a| a["file"].as_str())
            .collect();
        // A run killed after its database step has the dump under its final name, which its
        // record (still `running`) does not name yet: listed among the leftovers with that run's
        // id, and no backup.
        let incomplete: Vec<&str> = runs
            .iter()
            .filter(|r| r["status"] == "incomplete")
            .filter_map(|r| r["run_id"].as_str())
            .collect();
        let strays: Vec<&str> = l["temp_files"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|u| {
                u["run_id"]
                    .as_str()
                    .is_some_and(|id| incomplete.contains(&id))
            })
            .filter_map(|u| u["file"].as_str())
            .collect();
        for f in artifacts(dir) {
            if self.files.contains_key(&f) || f.ends_with(".index.jsonl") {
                continue;
            }
            if strays.contains(&f.as_str()) {
                let r = stackback(&["verify", &f], env);
                assert_eq!(r.code, 3, "a killed run's {f} passes verify: {}", r.all());
                continue;
            }
            assert!(
                named_by_bad_runs.contains(&f.as_str()),
                "{f} appeared after the fault and no failed, partial or incomplete run names it: {l}"
            );
        }
        let r = stackback(&["verify", "--all"], env);
        let backups = self
            .files
            .keys()
            .filter(|f| !f.ends_with(".index.jsonl"))
            .count()
            + extra_good;
        // With no backup at all, verify says a backup is missing.
        assert_eq!(r.code, if backups == 0 { 3 } else { 0 }, "{}", r.all());
        assert!(
            r.stdout.contains(&format!("{backups} verified, 0 failed")),
            "verify --all counts other backups than the {backups} expected: {}",
            r.stdout
        );
        assert_list_matches_disk(dir, env);
    }
}

/// One good run whose clock is `back` seconds behind, so the runs after it get run ids of their
/// own without waiting for the next second.
pub fn good_run_before(env: &[(String, String)], back: u32) -> String {
    let r = stackback(&["run"], &faked_clock(env, &format!("-{back}")));
    assert_eq!(r.code, 0, "{}", r.all());
    r.stdout
        .split_whitespace()
        .nth(1)
        .unwrap()
        .trim_end_matches(':')
        .to_string()
}

/// Watches the hidden temp files a run writes (`.stackback-tmp.<prefix>...`), ignoring those left
/// by runs killed earlier (they stay until BACKUP_FAILED_GRACE).
pub struct TempWatch {
    dir: std::path::PathBuf,
    prefix: String,
    old: Vec<String>,
}

impl TempWatch {
    /// Starts watching for temp files of `prefix` (`db_`, `minio_`) made from now on.
    pub fn new(dir: &Path, prefix: &str) -> TempWatch {
        let prefix = format!(".stackback-tmp.{prefix}");
        let old = files(dir)
            .into_iter()
            .filter(|f| f.starts_with(&prefix))
            .collect();
        TempWatch {
            dir: dir.to_path_buf(),
            prefix,
            old,
        }
    }

    /// The size of the new temp file, once there is one.
    pub fn size(&self) -> Option<u64> {
        files(&self.dir)
            .into_iter()
            .filter(|f| f.starts_with(&self.prefix) && !self.old.contains(f))
            .filter_map(|f| std::fs::metadata(self.dir.join(f)).ok())
            .map(|m| m.len())
            .max()
    }
}

/// Polls until `ready` holds, then sends `signal` to `child`. Fails if the child exits first.
pub fn signal_when(child: &mut Child, signal: i32, what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if ready() {
            break;
        }
        if let Some(s) = child.try_wait().unwrap() {
            panic!("the run ended ({s}) before {what}");
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
    unsafe {
        libc::kill(child.id() as i32, signal);
    }
}

/// The direct children of `pid`: (pid, argv joined by spaces).
pub fn children(pid: u32) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let status = std::fs::read_to_string(e.path().join("status")).unwrap_or_default();
        let ppid = status
            .lines()
            .find_map(|l| l.strip_prefix("PPid:"))
            .and_then(|p| p.trim().parse::<u32>().ok());
        if ppid == Some(pid) {
            let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            out.push((child, String::from_utf8_lossy(&cmdline).replace('\0', " ")));
        }
    }
    out
}

/// Rows of the big table: about 90 MB of plain dump, 50 MB gzipped, a few seconds to dump, so a
/// fault can be timed at 10 %, 50 % and 90 % of it by the temp file's size.
pub const BIG_ROWS: u32 = 450_000;

/// Fills `db` with [`BIG_ROWS`] rows of hex text that compresses about 2:1.
pub fn fill_big(c: &Cluster, db: &str) {
    c.psql(
        db,
        &format!(
            "CREATE TABLE bulk (id int PRIMARY KEY, a text, b text);
             INSERT INTO bulk SELECT g, md5(random()::text) || md5(random()::text) || md5(random()::text),
               repeat(md5(g::text), 2) || md5(random()::text) FROM generate_series(1, {BIG_ROWS}) g;"
        ),
    )
    .unwrap();
}

/// A new database on the shared cluster with the sample data plus the big table, cloned from a
/// template made once per test process.
pub fn big_db(prefix: &str) -> String {
    static TEMPLATE: OnceLock<String> = OnceLock::new();
    let c = cluster();
    let t = TEMPLATE.get_or_init(|| {
        let t = c.seeded_db("bigseed");
        fill_big(c, &t);
        c.psql(
            "postgres",
            &format!("ALTER DATABASE {t} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false"),
        )
        .unwrap();
        t
    });
    let name = Cluster::unique(prefix);
    // Clones of one template must not run at once (PostgreSQL refuses a template in use).
    static CLONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _g = CLONE.lock().unwrap();
    c.psql("postgres", &format!("CREATE DATABASE {name} TEMPLATE {t}"))
        .unwrap();
    name
}
