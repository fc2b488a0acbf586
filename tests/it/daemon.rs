//! `stackback daemon` with a seconds-resolution schedule against a real PostgreSQL: scheduled
//! runs, health and metrics endpoints, SIGTERM mid-run, timeouts, and surviving failing runs.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::support::notify::Receiver;
use crate::support::*;

/// A daemon started by a test (other test modules use it too: the anomaly tests read its page).
pub(crate) struct Daemon {
    child: Child,
    port: u16,
}

impl Daemon {
    /// Starts the daemon on a free port; when another process took the port first (the daemon
    /// exits, unable to listen), again on another one.
    pub(crate) fn start(env: &[(String, String)], args: &[&str]) -> Daemon {
        let mut all = vec!["daemon"];
        all.extend_from_slice(args);
        start_on_free_port("the daemon", |port| {
            let mut env = with(
                env.to_vec(),
                &[("BACKUP_HTTP_ADDR", &format!("127.0.0.1:{port}"))],
            );
            // Schedules of seconds: the start-up check may not hold the first run for minutes.
            if !env.iter().any(|(k, _)| k == "BACKUP_STARTUP_GRACE") {
                env.push(("BACKUP_STARTUP_GRACE".into(), "1s".into()));
            }
            let mut child = stackback_cmd(&all, &env)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    let mut err = String::new();
                    use std::io::Read;
                    child
                        .stderr
                        .take()
                        .unwrap()
                        .read_to_string(&mut err)
                        .unwrap();
                    return Err(format!("the daemon exited ({status}): {err}"));
                }
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Ok(Daemon { child, port });
                }
                assert!(
                    Instant::now() < deadline,
                    "the daemon never listened on {port}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    }

    pub(crate) fn get(&self, path: &str) -> (u16, String) {
        let out = std::process::Command::new("curl")
            .args([
                "-s",
                "-o",
                "-",
                "-w",
                "\n%{http_code}",
                &format!("http://127.0.0.1:{}{path}", self.port),
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap();
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    /// SIGTERM, then the exit code and stderr.
    pub(crate) fn stop(mut self, within: Duration) -> (i32, String) {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let mut err = String::new();
                use std::io::Read;
                self.child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut err)
                    .unwrap();
                return (status.code().unwrap_or(-1), err);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("the daemon did not exit within {within:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn count(dir: &std::path::Path, status: &str) -> usize {
    records(dir)
        .iter()
        .filter(|r| r["status"] == status)
        .count()
}

#[test]
fn two_scheduled_runs_then_a_clean_shutdown() {
    let c = cluster();
    let db = c.seeded_db("daemon");
    let tmp = tempfile::tempdir().unwrap();
    let mut env = c.env(&db, tmp.path());
    env.push(("BACKUP_SCHEDULE".into(), "*/2 * * * * *".into()));
    let d = Daemon::start(&env, &[]);
    let (code, body) = d.get("/healthz");
    assert_eq!(code, 200, "no run was due yet: healthy: {body}");
    wait_until(Duration::from_secs(30), "two scheduled runs", || {
        count(tmp.path(), "ok") >= 2
    });
    let (code, body) = d.get("/healthz");
    assert_eq!(code, 200, "{body}");
    let h: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(h["status"], "ok");
    assert!(h["next_run"].is_string());
    let (code, metrics) = d.get("/metrics");
    assert_eq!(code, 200);
    assert!(
        metrics.contains("backup_success{type=\"database\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("# TYPE backup_runs_total counter"),
        "{metrics}"
    );
    // The daemon's own memory, which the soak judges a leak by.
    for (gauge, least) in [
        ("process_resident_memory_bytes", 1e6),
        ("backup_daemon_heap_bytes", 1e4),
    ] {
        let v: f64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{gauge} ")))
            .unwrap_or_else(|| panic!("{gauge} missing: {metrics}"))
            .parse()
            .unwrap();
        assert!(v > least, "{gauge} {v}");
    }
    let scratch = tempfile::tempdir().unwrap();
    let exposition = scratch.path().join("metrics.txt");
    std::fs::write(&exposition, &metrics).unwrap();
    let lint = std::process::Command::new(find_binary("promtool"))
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&exposition).unwrap())
        .output()
        .unwrap();
    assert!(
        lint.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );
    let (code, page) = d.get("/");
    assert_eq!(code, 200);
    assert!(page.contains("*/2 * * * * *"), "{page}");

    let (code, err) = d.stop(Duration::from_secs(30));
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("next backup"), "the next run is logged: {err}");
    assert!(!files(tmp.path())
        .iter()
        .any(|f| f.starts_with(".stackback-tmp.")));
    let r = stackback(&["verify", "--all"], &env);
    assert_eq!(r.code, 0, "{}", r.all());
}

#[test]
fn sigterm_during_a_run_aborts_it_cleanly_after_the_grace_period() {
    let c = cluster();
    let db = c.seeded_db("sigterm");
    let tmp = tempfile::tempdir().unwrap();
    let mut env = c.env(&db, tmp.path());
    env.push(("BACKUP_SCHEDULE".into(), "0 2 * * *".into()));
    env.push(("BACKUP_STOP_GRACE".into(), "1s".into()));
    let lock = TableLock::hold(c, &db, "orders");
    let d = Daemon::start(&env, &["--run-now"]);
    lock.wait_for_waiter(&db);
    assert!(files(tmp.path())
        .iter()
        .any(|f| f.starts_with(".stackback-tmp.db_")));
    // A manual run beside the daemon's is refused with the lock's exit code.
    let manual = stackback(&["run"], &env);
    assert_eq!(manual.code, 4, "{}", manual.all());

    let (code, err) = d.stop(Duration::from_secs(20));
    drop(lock);
    assert_eq!(code, 0, "{err}");
    assert!(
        !files(tmp.path())
            .iter()
            .any(|f| f.starts_with(".stackback-tmp.")),
        "{:?}",
        files(tmp.path())
    );
    assert!(artifacts(tmp.path()).is_empty(), "{:?}", files(tmp.path()));
    let recs = records(tmp.path());
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0]["status"], "failed");
    assert!(
        recs[0]["error"]
            .as_str()
            .unwrap()
            .contains("BACKUP_STOP_GRACE"),
        "{}",
        recs[0]
    );
}

#[test]
fn a_hung_run_is_aborted_at_the_timeout_and_alerted() {
    let c = cluster();
    let db = c.seeded_db("timeout");
    let tmp = tempfile::tempdir().unwrap();
    let hook = Receiver::start();
    let mut env = c.env(&db, tmp.path());
    env.push(("BACKUP_SCHEDULE".into(), "0 2 * * *".into()));
    env.push(("BACKUP_TIMEOUT".into(), "2s".into()));
    env.push(("BACKUP_ALERT_WEBHOOK_URL".into(), hook.url("/hook")));
    let lock = TableLock::hold(c, &db, "orders");
    let d = Daemon::start(&env, &["--run-now"]);
    wait_until(
        Duration::from_secs(30),
        "the timed-out run's record",
        || count(tmp.path(), "failed") == 1,
    );
    let alert = &hook.wait_for(1)[0];
    assert!(
        alert["body"].as_str().unwrap().contains("BACKUP_TIMEOUT"),
        "{alert}"
    );
    assert!(!files(tmp.path())
        .iter()
        .any(|f| f.starts_with(".stackback-tmp.")));
    drop(lock);
    let (code, err) = d.stop(Duration::from_secs(20));
    assert_eq!(code, 0, "{err}");
}

#[test]
fn the_daemon_survives_ten_failing_runs_and_recovers_without_a_restart() {
    let c = cluster();
    let db = c.seeded_db("survive");
    let tmp = tempfile::tempdir().unwrap();
    let mut env = c.env(&db, tmp.path());
    env.push(("BACKUP_SCHEDULE".into(), "* * * * * *".into()));
    // Health allows one period plus the run timeout. Long enough for a good run on two busy
    // cores, short enough that the daemon turns unhealthy within the test's patience.
    env.push(("BACKUP_TIMEOUT".into(), "10s".into()));
    // The database is "down": it refuses connections.
    c.psql(
        "postgres",
        &format!("ALTER DATABASE {db} ALLOW_CONNECTIONS false"),
    )
    .unwrap();
    let d = Daemon::start(&env, &[]);
    wait_until(Duration::from_secs(60), "ten failed runs", || {
        count(tmp.path(), "failed") >= 10
    });
    wait_until(
        Duration::from_secs(30),
        "/healthz: 503 once runs were due and none succeeded",
        || d.get("/healthz").0 == 503,
    );
    c.psql(
        "postgres",
        &format!("ALTER DATABASE {db} ALLOW_CONNECTIONS true"),
    )
    .unwrap();
    wait_until(Duration::from_secs(30), "a good run after recovery", || {
        count(tmp.path(), "ok") >= 1
    });
    let (code, body) = d.get("/healthz");
    assert_eq!(code, 200, "{body}");
    let (code, err) = d.stop(Duration::from_secs(30));
    assert_eq!(code, 0, "{err}");
    let r = stackback(&["verify"], &env);
    assert_eq!(r.code, 0, "{}", r.all());
}
