//! Restore tests stopped (SIGTERM, timeout, SIGKILL) and run by the daemon (after each run, on
//! its schedule): the scratch is gone afterwards in every case. Helpers are restore_test.rs's.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::restore_test::*;
use crate::support::fault::Alerts;
use crate::support::notify::Pushgateway;
use crate::support::pg::{Cluster, PASSWORD};
use crate::support::*;

fn slow_db(c: &Cluster, rows: u32) -> String {
    let db = c.seeded_db("rtslow");
    c.psql(
        &db,
        &format!(
            "CREATE FUNCTION slow_ok(int) RETURNS boolean LANGUAGE plpgsql AS $$ BEGIN RETURN true; END $$; \
             CREATE TABLE slow (x int CHECK (public.slow_ok(x))); \
             INSERT INTO slow SELECT generate_series(1, {rows}); \
             CREATE OR REPLACE FUNCTION slow_ok(int) RETURNS boolean LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(0.02); RETURN true; END $$"
        ),
    )
    .unwrap();
    db
}

/// Starts `verify --restore-test` and waits until psql is loading the scratch database.
fn start_loading(c: &Cluster, env: &[(String, String)]) -> std::process::Child {
    let child = stackback_cmd(&["verify", "--restore-test", "latest"], env)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until(
        Duration::from_secs(60),
        "the load into the scratch database",
        || {
            c.psql(
            "postgres",
            "select count(*) from pg_stat_activity where datname like 'stackback\\_restore\\_test\\_%' and state = 'active'",
        )
        .unwrap()
            != "0"
        },
    );
    child
}

#[test]
fn sigterm_mid_test_drops_the_scratch_and_records_nothing() {
    let c = Cluster::private(true);
    let db = slow_db(&c, 500);
    let alerts = Alerts::start();
    let (tmp, env) = backed_up(&c, &db, &alerts.env(&[]));
    let child = start_loading(&c, &env);
    assert_eq!(scratch_dbs(&c).len(), 1);
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("SIGTERM"), "{stderr}");
    assert_eq!(scratch_dbs(&c), Vec::<String>::new());
    assert_eq!(record(tmp.path())["restore_test"], Value::Null);
    assert!(alerts.texts().is_empty(), "{:?}", alerts.texts());
}

#[test]
fn a_timeout_fails_the_test_and_drops_the_scratch() {
    let c = Cluster::private(true);
    let db = slow_db(&c, 500);
    let alerts = Alerts::start();
    let extra = alerts.env(&[("BACKUP_RESTORE_TEST_TIMEOUT".into(), "2s".into())]);
    let (tmp, env) = backed_up(&c, &db, &extra);
    let t0 = Instant::now();
    let r = stackback(&["verify", "--restore-test", "latest"], &env);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(t0.elapsed() < Duration::from_secs(9), "{:?}", t0.elapsed());
    let rec = record(tmp.path());
    assert_eq!(rec["restore_test"]["ok"], false);
    assert!(
        rec["restore_test"]["error"]
            .as_str()
            .unwrap()
            .contains("BACKUP_RESTORE_TEST_TIMEOUT"),
        "{rec:#}"
    );
    assert_eq!(scratch_dbs(&c), Vec::<String>::new());
    wait_until(Duration::from_secs(30), "the restore-test alert", || {
        alerts
            .texts()
            .iter()
            .any(|t| t.contains("RESTORE TEST FAILED"))
    });
}

#[test]
fn a_sigkilled_tests_scratch_is_dropped_by_the_next_test() {
    let c = Cluster::private(true);
    let db = slow_db(&c, 150);
    let (tmp, env) = backed_up(&c, &db, &[]);
    let mut child = start_loading(&c, &env);
    child.kill().unwrap();
    let _ = child.wait();
    let left = scratch_dbs(&c);
    assert_eq!(left.len(), 1, "a killed test leaves its scratch database");
    let r = stackback(&["verify", "--restore-test", "latest"], &env);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains(&format!("dropped {}", left[0])),
        "{}",
        r.stdout
    );
    assert_eq!(scratch_dbs(&c), Vec::<String>::new());
    assert_eq!(record(tmp.path())["restore_test"]["ok"], true);
}

/// The daemon in `after-run` mode tests each good run right after it, and alerts when the test
/// fails (here: the scratch server lacks the dump's role).
#[test]
fn the_daemon_tests_after_each_run_and_alerts_on_failure() {
    let c = Cluster::private(true);
    let scratch = Cluster::private(false);
    let db = c.seeded_db("rtdaemon");
    c.psql(
        &db,
        "CREATE ROLE d_owner; ALTER TABLE orders OWNER TO d_owner",
    )
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let alerts = Alerts::start();
    let env = alerts.env(&with(
        c.env(&db, tmp.path()),
        &[
            ("BACKUP_RESTORE_TEST", "after-run"),
            (
                "BACKUP_RESTORE_TEST_URL",
                &scratch_url(&scratch, "postgres", PASSWORD),
            ),
        ],
    ));
    let bad = stackback(
        &["daemon"],
        &with(env.clone(), &[("BACKUP_RESTORE_TEST", "sometimes")]),
    );
    assert_eq!(bad.code, 2, "{}", bad.all());
    assert!(bad.stderr.contains("restore_test.mode"), "{}", bad.stderr);
    let daemon = start_on_free_port("the daemon", |port| {
        let env = with(
            env.clone(),
            &[
                ("BACKUP_HTTP_ADDR", &format!("127.0.0.1:{port}")),
                ("BACKUP_SCHEDULE", "0 0 1 1 *"),
                ("BACKUP_STARTUP_GRACE", "1s"),
            ],
        );
        let mut child = stackback_cmd(&["daemon", "--run-now"], &env)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        match child.try_wait().unwrap() {
            Some(s) => Err(format!("the daemon exited: {s}")),
            None => Ok(child),
        }
    });
    wait_until(Duration::from_secs(90), "the restore-test alert", || {
        alerts
            .texts()
            .iter()
            .any(|t| t.contains("RESTORE TEST FAILED") && t.contains("d_owner"))
    });
    unsafe {
        libc::kill(daemon.id() as i32, libc::SIGTERM);
    }
    let out = daemon.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rec = record(tmp.path());
    assert_eq!(rec["status"], "ok");
    assert_eq!(rec["restore_test"]["ok"], false, "{rec:#}");
    assert_eq!(scratch_dbs(&scratch), Vec::<String>::new());
}

/// A session adding users in a loop until told to stop; how many inserts it made.

#[test]
fn the_daemon_tests_on_its_schedule_and_the_last_success_outlives_pruning() {
    let c = Cluster::private(true);
    let db = c.seeded_db("rtcron");
    let tmp = tempfile::tempdir().unwrap();
    let push = Pushgateway::start();
    let env = with(
        c.env(&db, tmp.path()),
        &[("BACKUP_PUSHGATEWAY_URL", &push.url())],
    );
    // Ten days ago by this host's clock: the next run's retention (7 days) prunes it.
    let r = stackback(&["run"], &faked_clock(&env, "-10d"));
    assert_eq!(r.code, 0, "{}", r.all());
    let tested = record(tmp.path())["run_id"].as_str().unwrap().to_string();

    let cron = with(env.clone(), &[("BACKUP_RESTORE_TEST", "*/2 * * * * *")]);
    let daemon = start_on_free_port("the daemon", |port| {
        let env = with(
            cron.clone(),
            &[
                ("BACKUP_HTTP_ADDR", &format!("127.0.0.1:{port}")),
                ("BACKUP_SCHEDULE", "0 0 1 1 *"),
                ("BACKUP_STARTUP_GRACE", "1s"),
            ],
        );
        let mut child = stackback_cmd(&["daemon"], &env)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        match child.try_wait().unwrap() {
            Some(s) => Err(format!("the daemon exited: {s}")),
            None => Ok((child, port)),
        }
    });
    let (child, port) = daemon;
    wait_until(Duration::from_secs(90), "a scheduled restore test", || {
        record(tmp.path())["restore_test"]["ok"] == true
    });
    let get = |path: &str| {
        let (ok, text) = tool("curl", &["-sf", &format!("http://127.0.0.1:{port}{path}")]);
        assert!(ok, "{path}: {text}");
        text
    };
    assert_eq!(
        gauge(&get("/metrics"), "backup_restore_test_success"),
        Some(1.0)
    );
    // The daemon's push after a test keeps its own counters, as after its runs (the manual run
    // before it pushed none).
    wait_until(Duration::from_secs(30), "the daemon's push", || {
        push.value("backup_restore_test_success", "") == Some(1.0)
    });
    assert_eq!(push.value("backup_skipped_runs_total", ""), Some(0.0));
    // The daemon's own memory is served, never pushed: a push describes runs.
    assert!(gauge(&get("/metrics"), "backup_daemon_heap_bytes").is_some());
    for name in ["backup_daemon_heap_bytes", "process_resident_memory_bytes"] {
        assert_eq!(push.value(name, ""), None, "{name} was pushed");
    }
    let page = get("/");
    assert!(page.contains(&tested), "{page}");
    assert!(page.contains("2 tables, 122000 rows"), "{page}");
    // Stopped whenever: a test under way drops its scratch database first.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(scratch_dbs(&c), Vec::<String>::new());
    let passed = record(tmp.path())["restore_test"]["finished_at"]
        .as_str()
        .unwrap()
        .parse::<chrono::DateTime<chrono::Utc>>()
        .unwrap();

    let r = stackback(&["run"], &env);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        !tmp.path().join(format!("run_{tested}.json")).exists(),
        "the tested run was not pruned"
    );
    let s: Value = serde_json::from_str(&stackback(&["status", "--json"], &env).stdout).unwrap();
    assert_eq!(s["restore_test"]["last_ok"], true, "{s:#}");
    assert_eq!(
        s["restore_test"]["last_success_run_id"],
        tested.as_str(),
        "{s:#}"
    );
    let pages = daemon_pages(&env, &["/metrics", "/"]);
    assert_eq!(gauge(&pages[0], "backup_restore_test_success"), Some(1.0));
    let at = gauge(
        &pages[0],
        "backup_restore_test_last_success_timestamp_seconds",
    )
    .unwrap();
    assert!(
        (at - passed.timestamp_millis() as f64 / 1000.0).abs() < 0.01,
        "{at} {passed}"
    );
    assert!(pages[1].contains(&tested), "{}", pages[1]);
    assert!(pages[1].contains("pruned"), "{}", pages[1]);
}
