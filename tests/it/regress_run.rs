//! Regression tests for `stackback run` found in review (issue 13), each named after what broke.

use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::notify::{Pushgateway, Receiver};
use crate::support::pg::{Cluster, TableLock, PASSWORD};
use crate::support::s3::{bucket_name, s3_tests, S3Server};
use crate::support::*;

s3_tests!(an_empty_or_tiny_bucket_is_a_good_backup);

/// The run id `stackback run` printed (`run <id>: ok in ...`).
fn run_id(r: &Run) -> String {
    r.stdout
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("no run id in {}", r.all()))
        .trim_end_matches(':')
        .to_string()
}

#[test]
fn a_run_with_the_clock_years_ahead_never_deletes_the_true_history() {
    let c = cluster();
    let db = c.seeded_db("clock");
    let tmp = tempfile::tempdir().unwrap();
    let env = with(c.env(&db, tmp.path()), &[("BACKUP_RETENTION_DAYS", "7")]);
    let mut true_runs = Vec::new();
    for offset in ["-3d", "-2d", "-1d"] {
        let r = stackback(&["run"], &faked_clock(&env, offset));
        assert_eq!(r.code, 0, "{}", r.all());
        true_runs.push(run_id(&r));
    }
    // A VM whose clock jumped five years ahead, for one run.
    let r = stackback(&["run"], &faked_clock(&env, "+1800d"));
    assert!(r.code == 0, "{}", r.all());
    let future = run_id(&r);
    for _ in 0..2 {
        let r = stackback(&["run"], &env);
        assert_eq!(r.code, 0, "{}", r.all());
        true_runs.push(run_id(&r));
    }
    let arts = artifacts(tmp.path());
    for id in &true_runs {
        assert!(
            arts.iter().any(|a| a.contains(id.as_str())),
            "run {id}, made at the true time, was deleted: {arts:?}"
        );
    }
    // `latest` is the run made most recently, not the one dated latest.
    let newest = true_runs.last().unwrap();
    let s = stackback(&["status", "--json"], &env);
    let status: serde_json::Value = serde_json::from_str(&s.stdout).unwrap();
    assert_eq!(
        status["last_success"]["run_id"],
        newest.as_str(),
        "{status}"
    );
    let warnings = status["warnings"].to_string();
    assert!(
        warnings.contains(&future) && warnings.contains("future"),
        "status does not warn about the future-dated run: {warnings}"
    );
    let r = stackback(&["verify", "latest"], &env);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains(newest.as_str()), "{}", r.stdout);
    // A manual prune under the wrong clock deletes nothing made at the true time either.
    let r = stackback(&["prune"], &faked_clock(&env, "+1800d"));
    assert!(matches!(r.code, 0 | 1), "{}", r.all());
    let arts = artifacts(tmp.path());
    for id in &true_runs {
        assert!(
            arts.iter().any(|a| a.contains(id.as_str())),
            "{id}: {arts:?}"
        );
    }
}

/// The `pg_dump` children of process `parent`, by their command lines.
fn pg_dump_children(parent: u32) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let status = std::fs::read_to_string(e.path().join("status")).unwrap_or_default();
        let ppid = status
            .lines()
            .find_map(|l| l.strip_prefix("PPid:"))
            .map(|p| p.trim().to_string());
        if ppid.as_deref() != Some(parent.to_string().as_str()) {
            continue;
        }
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains("pg_dump") {
            out.push(cmdline);
        }
    }
    out
}

#[test]
fn run_honours_backup_timeout_and_bounds_pg_dumps_lock_wait() {
    let c = cluster();
    let db = c.seeded_db("hung");
    let tmp = tempfile::tempdir().unwrap();
    let env = with(c.env(&db, tmp.path()), &[("BACKUP_TIMEOUT", "8s")]);
    let lock = TableLock::hold(c, &db, "orders");
    let t0 = Instant::now();
    let mut child = stackback_cmd(&["run"], &env)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut seen: Vec<String> = Vec::new();
    let status = loop {
        // The dump itself, not the `pg_dump --version` probe before it.
        if !seen.iter().any(|c| c.contains("--format")) {
            seen = pg_dump_children(child.id());
        }
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t0.elapsed() > Duration::from_secs(90) {
            let _ = child.kill();
            panic!("stackback run ignored BACKUP_TIMEOUT=8s: still running after 90 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    drop(lock);
    assert_eq!(status.code(), Some(1));
    assert!(
        seen.iter().any(|c| c.contains("--lock-wait-timeout")),
        "pg_dump runs without --lock-wait-timeout: {seen:?}"
    );
    let rec = only_record(tmp.path());
    assert_eq!(rec["status"], "failed", "{rec}");
    assert!(
        rec["error"]
            .as_str()
            .unwrap_or("")
            .contains("BACKUP_TIMEOUT"),
        "{rec}"
    );
    assert!(artifacts(tmp.path()).is_empty());
    // A shorter BACKUP_LOCK_WAIT_TIMEOUT makes pg_dump give up first, saying why.
    let lock = TableLock::hold(c, &db, "orders");
    let quick = with(env.clone(), &[("BACKUP_LOCK_WAIT_TIMEOUT", "2s")]);
    let t0 = Instant::now();
    let r = stackback(&["run"], &quick);
    drop(lock);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(t0.elapsed() < Duration::from_secs(8), "{:?}", t0.elapsed());
    assert!(r.stderr.to_lowercase().contains("lock"), "{}", r.all());
    // The lock is free again: the next run works.
    let r = stackback(&["run"], &env);
    assert_eq!(r.code, 0, "{}", r.all());
}

/// Receivers for every channel, and the environment that points at them.
struct Channels {
    hook: Receiver,
    beat: Receiver,
    push: Pushgateway,
}

impl Channels {
    fn start() -> Channels {
        Channels {
            hook: Receiver::start(),
            beat: Receiver::start(),
            push: Pushgateway::start(),
        }
    }

    fn env(&self, env: Vec<(String, String)>) -> Vec<(String, String)> {
        with(
            env,
            &[
                ("BACKUP_ALERT_WEBHOOK_URL", &self.hook.url("/hook")),
                ("BACKUP_HEARTBEAT_URL", &self.beat.url("/hb")),
                ("BACKUP_PUSHGATEWAY_URL", &self.push.url()),
            ],
        )
    }

    fn alerts(&self) -> Vec<String> {
        self.hook
            .requests()
            .iter()
            .map(|r| r["body"].as_str().unwrap_or("").to_string())
            .collect()
    }

    fn pings(&self) -> Vec<String> {
        self.beat
            .requests()
            .iter()
            .map(|r| r["path"].as_str().unwrap_or("").to_string())
            .collect()
    }
}

#[test]
fn a_run_that_cannot_start_is_heard() {
    let c = cluster();
    let db = c.seeded_db("nostart");
    let tmp = tempfile::tempdir().unwrap();
    let ch = Channels::start();
    let good = ch.env(c.env(&db, &tmp.path().join("good")));
    let r = stackback(&["run"], &good);
    assert_eq!(r.code, 0, "{}", r.all());
    let last_success = ch
        .push
        .value("backup_last_success_timestamp_seconds", "database")
        .expect("the good run pushed its success");
    let pings = ch.pings().len();

    // A backup directory that cannot be created: under a regular file.
    std::fs::write(tmp.path().join("file"), "x").unwrap();
    let broken = with(
        good.clone(),
        &[(
            "BACKUP_DIR",
            tmp.path().join("file/backups").to_str().unwrap(),
        )],
    );
    let r = stackback(&["run"], &broken);
    assert_eq!(r.code, 1, "{}", r.all());
    wait_until(Duration::from_secs(30), "the start failure alert", || {
        ch.alerts().iter().any(|a| a.contains("FAILED"))
    });
    wait_until(Duration::from_secs(30), "the /fail ping", || {
        ch.pings().len() > pings && ch.pings().last().unwrap().ends_with("/fail")
    });
    assert_eq!(
        ch.push.value("backup_success", "database"),
        Some(0.0),
        "the failure was not pushed"
    );
    assert_eq!(
        ch.push
            .value("backup_last_success_timestamp_seconds", "database"),
        Some(last_success),
        "the push wiped the last success"
    );

    // An incomplete bucket setting is a configuration error: exit 2, and alerted too.
    let alerts = ch.alerts().len();
    let r = stackback(
        &["run"],
        &with(good.clone(), &[("MINIO_ENDPOINT", "http://127.0.0.1:9")]),
    );
    assert_eq!(r.code, 2, "{}", r.all());
    wait_until(Duration::from_secs(30), "the configuration alert", || {
        ch.alerts().len() > alerts
    });
}

/// Holds the backup directory's lock from this process, as a stuck run would.
struct HeldLock(#[allow(dead_code)] std::fs::File);

impl HeldLock {
    fn take(dir: &std::path::Path) -> HeldLock {
        std::fs::create_dir_all(dir).unwrap();
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(dir.join(".stackback.lock"))
            .unwrap();
        f.try_lock().unwrap();
        HeldLock(f)
    }
}

#[test]
fn a_lock_held_longer_than_the_timeout_is_heard() {
    let c = cluster();
    let db = c.seeded_db("stuck");
    let tmp = tempfile::tempdir().unwrap();
    let ch = Channels::start();
    let env = with(ch.env(c.env(&db, tmp.path())), &[("BACKUP_TIMEOUT", "1h")]);
    let _held = HeldLock::take(tmp.path());
    // A young lock: another run is going; it reports for itself.
    let r = stackback(&["run"], &env);
    assert_eq!(r.code, 4, "{}", r.all());
    std::thread::sleep(Duration::from_secs(2));
    assert!(ch.alerts().is_empty(), "{:?}", ch.alerts());
    assert!(ch.pings().is_empty(), "{:?}", ch.pings());
    // Held for longer than BACKUP_TIMEOUT: a stuck run, which nobody else will report.
    sh(&format!(
        "touch -d '2 hours ago' {}",
        shell_quote(&tmp.path().join(".stackback.lock"))
    ));
    let r = stackback(&["run"], &env);
    assert_eq!(r.code, 4, "{}", r.all());
    wait_until(Duration::from_secs(30), "the stuck-lock alert", || {
        !ch.alerts().is_empty()
    });
    wait_until(Duration::from_secs(30), "the /fail ping", || {
        ch.pings().iter().any(|p| p.ends_with("/fail"))
    });
}

#[test]
fn a_file_that_changes_while_archived_never_yields_a_short_archive() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("growing.bin"), vec![1u8; 8 << 20]).unwrap();
    std::fs::write(data.join("steady.txt"), "steady").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, path) = (stop.clone(), data.join("growing.bin"));
        std::thread::spawn(move || {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
            let mut grown = 0usize;
            // Zeros, as a database file extending itself: they read like the end of a tar.
            while !stop.load(Ordering::Relaxed) && grown < 512 << 20 {
                f.write_all(&[0u8; 64 << 10]).unwrap();
                grown += 64 << 10;
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let c = cluster();
    let env = with(
        c.env(&c.empty_db("live"), &tmp.path().join("backups")),
        &[
            ("MINIO_DATA_DIR", data.to_str().unwrap()),
            ("BACKUP_MIN_DB_BYTES", "0"),
        ],
    );
    let r = stackback(&["run"], &env);
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert_eq!(
        r.code,
        1,
        "a changing file was archived as if whole: {}",
        r.all()
    );
    assert!(r.stderr.contains("changed while"), "{}", r.all());
    let rec = only_record(&tmp.path().join("backups"));
    assert_eq!(rec["status"], "partial", "the database backup stays: {rec}");
}

fn an_empty_or_tiny_bucket_is_a_good_backup(s3: &S3Server) {
    let c = cluster();
    for objects in [0, 1] {
        let b = bucket_name("tiny");
        s3.tool(&["mkbucket", &b]);
        if objects == 1 {
            s3.tool(&["put", &b, "a.txt", "abc"]);
        }
        let tmp = tempfile::tempdir().unwrap();
        let mut env = c.env(&c.empty_db("tiny"), tmp.path());
        env.extend(s3.env(&b));
        env.push(("BACKUP_MIN_DB_BYTES".into(), "0".into()));
        let r = stackback(&["run"], &env);
        assert_eq!(r.code, 0, "{objects} objects: {}", r.all());
        let rec = only_record(tmp.path());
        assert_eq!(rec["status"], "ok", "{rec}");
        assert_eq!(rec["artifacts"][1]["objects"], objects, "{rec}");
    }
}

#[test]
fn a_database_url_password_with_hash_or_ampersand_is_kept_whole() {
    let c = cluster();
    let db = c.seeded_db("urlpw");
    let role = Cluster::unique("urlrole");
    let pw = "p#ss&w0rd?x";
    c.psql(
        "postgres",
        &format!("CREATE ROLE {role} LOGIN SUPERUSER PASSWORD '{pw}'"),
    )
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("postgresql://{role}:{pw}@127.0.0.1:{}/{db}", c.port);
    let env = vec![
        ("DATABASE_URL".to_string(), url),
        ("BACKUP_DIR".to_string(), tmp.path().display().to_string()),
    ];
    let r = stackback(&["run"], &env);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        !r.all().contains(pw),
        "the password was printed: {}",
        r.all()
    );
    let cfg = stackback(&["config"], &env);
    assert!(!cfg.stdout.contains("w0rd"), "{}", cfg.stdout);
}

#[test]
fn pushgateway_credentials_are_never_printed() {
    let c = cluster();
    let tmp = tempfile::tempdir().unwrap();
    let closed = ClosedPort::new();
    let env = with(
        c.env(&c.seeded_db("pgw"), tmp.path()),
        &[(
            "BACKUP_PUSHGATEWAY_URL",
            &format!("http://pushuser:pgw-s3cret-9@127.0.0.1:{}", closed.port),
        )],
    );
    let cfg = stackback(&["config"], &env);
    assert_eq!(cfg.code, 0, "{}", cfg.all());
    assert!(!cfg.all().contains("pgw-s3cret-9"), "{}", cfg.all());
    let r = stackback(&["run"], &env);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stderr.contains("pushgateway"),
        "the failed push is reported: {}",
        r.all()
    );
    assert!(!r.all().contains("pgw-s3cret-9"), "{}", r.all());
    assert!(!r.all().contains(PASSWORD), "{}", r.all());
}
