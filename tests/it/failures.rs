//! Every way a backup can fail must exit non-zero, leave no artifact that could pass for a backup,
//! and leave a run record that says failed and why (where the directory is writable at all).

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::*;

/// Runs a backup expected to fail; returns the run and the record's error text.
fn failing_run(env: &[(String, String)], dir: &std::path::Path, code: i32) -> (Run, String) {
    let r = stackback(&["run"], env);
    assert_eq!(r.code, code, "{}", r.all());
    assert!(
        artifacts(dir).is_empty(),
        "artifacts left behind: {:?}",
        artifacts(dir)
    );
    assert!(
        !files(dir).iter().any(|f| f.starts_with(".stackback-tmp.")),
        "temp files left behind: {:?}",
        files(dir)
    );
    let rec = only_record(dir);
    assert_eq!(rec["status"], "failed", "{rec}");
    let err = rec["error"].as_str().unwrap().to_string();
    assert!(!err.contains(PASSWORD));
    assert!(!r.all().contains(PASSWORD));
    if files(dir).iter().any(|f| f.starts_with(".stackback.lock")) {
        assert_list_matches_disk(dir, env);
        let l = list_json(env);
        assert_eq!(l["runs"][0]["status"], "failed");
    }
    (r, err)
}

#[test]
fn wrong_password_names_the_setting_to_fix() {
    let c = cluster();
    let tmp = tempfile::tempdir().unwrap();
    let mut env = c.env(&c.empty_db("nodump"), tmp.path());
    env.retain(|(k, _)| k != "POSTGRES_PASSWORD");
    env.push(("POSTGRES_PASSWORD".into(), "wrong-password".into()));
    let (r, err) = failing_run(&env, tmp.path(), 1);
    assert!(err.contains("password authentication failed"), "{err}");
    assert!(r.stderr.contains("POSTGRES_PASSWORD"), "{}", r.stderr);
    assert!(
        !r.all().contains("wrong-password"),
        "the secret was printed: {}",
        r.all()
    );
}

#[test]
fn unknown_database_is_reported_with_pg_dumps_words() {
    let c = cluster();
    let tmp = tempfile::tempdir().unwrap();
    let env = c.env("no_such_db", tmp.path());
    let (r, err) = failing_run(&env, tmp.path(), 1);
    assert!(err.contains("does not exist"), "{err}");
    assert!(r.stderr.contains("POSTGRES_DB"), "{}", r.stderr);
    assert_eq!(only_record(tmp.path())["failed_step"], "database");
}

#[test]
fn unreachable_server_says_so() {
    let c = cluster();
    let tmp = tempfile::tempdir().unwrap();
    let mut env = c.env(&c.empty_db("nodump"), tmp.path());
    env.retain(|(k, _)| k != "POSTGRES_PORT");
    let closed = ClosedPort::new();
    env.push(("POSTGRES_PORT".into(), closed.port.to_string()));
    let (r, err) = failing_run(&env, tmp.path(), 1);
    assert!(err.to_lowercase().contains("connection refused"), "{err}");
    assert!(r.stderr.contains("POSTGRES_HOST"), "{}", r.stderr);
}

#[test]
fn missing_pg_dump_is_a_clear_failure() {
    let c = cluster();
    let tmp = tempfile::tempdir().unwrap();
    let mut env = c.env(&c.empty_db("nodump"), tmp.path());
    env.push(("PG_DUMP_PATH".into(), "/nonexistent/bin/pg_dump".into()));
    let (r, err) = failing_run(&env, tmp.path(), 1);
    assert!(err.contains("pg_dump was not found"), "{err}");
    assert!(r.stderr.contains("postgresql-client"), "{}", r.stderr);
}

#[test]
fn pg_dump_dying_mid_stream_fails_the_run_even_though_the_gzip_is_valid() {
    let c = cluster();
    let db = c.seeded_db("killed");
    let tmp = tempfile::tempdir().unwrap();
    // Hold a lock pg_dump needs, so it is mid-dump (connected, waiting) when its backend is killed.
    let lock = TableLock::hold(c, &db, "orders");
    let child = stackback_cmd(&["run"], &c.env(&db, tmp.path()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    lock.wait_for_waiter(&db);
    c.psql(
        "postgres",
        &format!("select pg_terminate_backend(pid) from pg_stat_activity where datname = '{db}' and wait_event_type = 'Lock'"),
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    drop(lock);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(artifacts(tmp.path()).is_empty(), "{:?}", files(tmp.path()));
    let rec = only_record(tmp.path());
    assert_eq!(rec["status"], "failed");
    let err = rec["error"].as_str().unwrap();
    assert!(err.contains("pg_dump failed"), "{err}");
    assert!(err.contains("terminat"), "{err}");
}

#[test]
fn read_only_backup_directory_fails_before_dumping() {
    let tmp = tempfile::tempdir().unwrap();
    let mnt = Mount::tmpfs(&tmp.path().join("ro"), "ro,size=1m");
    // The "server" is a socket that only counts connections: a run that reached the database step
    // would have connected to it.
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    probe.set_nonblocking(true).unwrap();
    let port = probe.local_addr().unwrap().port().to_string();
    let env = with(
        cluster().env("ro", &mnt.path),
        &[("POSTGRES_PORT", port.as_str())],
    );
    let r = stackback(&["run"], &env);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("Read-only file system"), "{}", r.stderr);
    assert!(r.stderr.contains("hint:"), "{}", r.stderr);
    assert!(
        matches!(probe.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the run connected to the database before failing: {}",
        r.all()
    );
}

#[test]
fn a_full_disk_fails_cleanly_and_still_records_why() {
    let c = cluster();
    let db = c.seeded_db("full");
    let tmp = tempfile::tempdir().unwrap();
    let mnt = Mount::tmpfs(&tmp.path().join("small"), "size=256k");
    let (r, err) = failing_run(&c.env(&db, &mnt.path), &mnt.path, 1);
    assert!(err.contains("No space left on device"), "{err}");
    assert!(r.stderr.contains("full"), "{}", r.stderr);
}

#[test]
fn a_configured_free_space_floor_stops_the_run_in_preflight() {
    let c = cluster();
    let tmp = tempfile::tempdir().unwrap();
    let mut env = c.env(&c.empty_db("nodump"), tmp.path());
    env.push(("BACKUP_MIN_FREE_BYTES".into(), "1000TiB".into()));
    let (_, err) = failing_run(&env, tmp.path(), 1);
    assert!(err.contains("BACKUP_MIN_FREE_BYTES"), "{err}");
    assert_eq!(only_record(tmp.path())["failed_step"], "preflight");
}

#[test]
fn a_second_run_beside_a_running_one_exits_4() {
    let c = cluster();
    let db = c.seeded_db("locked");
    let tmp = tempfile::tempdir().unwrap();
    // Keep the first run busy: pg_dump waits for a table lock.
    let lock = TableLock::hold(c, &db, "users");
    let env = c.env(&db, tmp.path());
    let mut first = stackback_cmd(&["run"], &env)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !files(tmp.path()).iter().any(|f| f.starts_with("run_")) {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(50));
    }
    let second = stackback(&["run"], &env);
    assert_eq!(second.code, 4, "{}", second.all());
    assert!(second.stderr.contains("lock"), "{}", second.stderr);
    drop(lock);
    let first = first.wait().unwrap();
    assert_eq!(first.code(), Some(0));
}

#[test]
fn sigkill_mid_dump_leaves_nothing_that_counts_as_a_backup() {
    let c = cluster();
    let db = c.seeded_db("sigkill");
    let tmp = tempfile::tempdir().unwrap();
    let env = c.env(&db, tmp.path());
    // One good backup first: it must stay the only one that counts. Its clock is ten seconds
    // back, so the next run has a second of its own without waiting for one.
    assert_eq!(stackback(&["run"], &faked_clock(&env, "-10")).code, 0);

    let lock = TableLock::hold(c, &db, "orders");
    let mut child = stackback_cmd(&["run"], &env)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !files(tmp.path())
        .iter()
        .any(|f| f.starts_with(".stackback-tmp.db_"))
    {
        assert!(
            Instant::now() < deadline,
            "the dump never started: {:?}",
            files(tmp.path())
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    drop(lock);

    let r = stackback(&["verify", "--all"], &env);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("1 verified, 0 failed"), "{}", r.stdout);
    assert!(r.stdout.contains("incomplete run"), "{}", r.stdout);
    // `latest` must not pick the killed run's leftovers as a backup.
    let recs: Vec<serde_json::Value> = files(tmp.path())
        .into_iter()
        .filter(|f| f.starts_with("run_"))
        .map(|f| serde_json::from_slice(&std::fs::read(tmp.path().join(f)).unwrap()).unwrap())
        .collect();
    assert_eq!(recs.len(), 2);
    assert_eq!(recs.iter().filter(|r| r["status"] == "ok").count(), 1);
    assert_eq!(artifacts(tmp.path()).len(), 1, "{:?}", files(tmp.path()));
}
