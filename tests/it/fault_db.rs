//! Faults during the database step (issue 13, deliver 2), against real PostgreSQL: the process
//! killed at 10 %, 50 % and 90 % of a dump, SIGTERM, the server stopped mid-dump or down at the
//! start, a wrong password, a table the dump user may not read. Each scenario asserts the exit
//! code and message, the alert (where the process lives to send one), that nothing new passes for
//! a good backup, that the earlier backup is byte for byte intact and verifies, and that the next
//! run succeeds once the fault is gone.

use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::fault::*;
use crate::support::pg::{Cluster, TableLock};
use crate::support::*;

/// The stored size of the newest ok run's database artifact.
fn db_size(dir: &std::path::Path) -> u64 {
    records(dir)
        .iter()
        .rev()
        .find(|r| r["status"] == "ok")
        .map(|r| r["artifacts"][0]["stored_bytes"].as_u64().unwrap())
        .expect("a good run")
}

/// The run record of `id`.
fn record_of(dir: &std::path::Path, id: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join(format!("run_{id}.json"))).unwrap()).unwrap()
}

/// The run ids in `dir` that are not `known`.
fn new_runs(dir: &std::path::Path, known: &[String]) -> Vec<serde_json::Value> {
    records(dir)
        .into_iter()
        .filter(|r| !known.iter().any(|k| r["run_id"] == k.as_str()))
        .collect()
}

/// The run after the fault: it succeeds, verifies, and the earlier backup is still there.
fn next_run_succeeds(dir: &std::path::Path, env: &[(String, String)], base: &Baseline) {
    let r = stackback(&["run"], env);
    assert_eq!(r.code, 0, "the run after the fault: {}", r.all());
    let r = stackback(&["verify", "latest"], env);
    assert_eq!(r.code, 0, "{}", r.all());
    base.assert_untouched(dir, env);
}

#[test]
fn sigkill_at_10_50_and_90_percent_of_a_database_dump() {
    let c = cluster();
    let db = big_db("kill");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let alerts = Alerts::start();
    let env = alerts.env(&c.env(&db, dir));
    let first = good_run_before(&env, 30);
    let total = db_size(dir);
    assert!(total > 20 << 20, "the dump is too small to time: {total}");
    let base = Baseline::take(dir);
    let pings = alerts.pings();
    assert_eq!(pings.len(), 1, "{pings:?}");
    let mut known = vec![first];
    for pct in [10u64, 50, 90] {
        let watch = TempWatch::new(dir, "db_");
        let mut child = stackback_cmd(&["run"], &env)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let at = total * pct / 100;
        signal_when(&mut child, libc::SIGKILL, &format!("{pct} %"), || {
            watch.size().is_some_and(|s| s >= at)
        });
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{pct} %");
        let killed = new_runs(dir, &known);
        assert_eq!(killed.len(), 1, "{pct} %: {killed:?}");
        let id = killed[0]["run_id"].as_str().unwrap().to_string();
        // A killed process sends nothing: its record says running, which readers call incomplete,
        // and the heartbeat misses its ping (Healthchecks alerts on the silence).
        assert_eq!(killed[0]["status"], "running", "{pct} %");
        let l = list_json(&env);
        let run = l["runs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["run_id"] == id.as_str())
            .unwrap();
        assert_eq!(run["status"], "incomplete", "{pct} %: {run}");
        assert_eq!(alerts.pings(), pings, "{pct} %: a ping for a killed run");
        assert!(alerts.texts().is_empty(), "{:?}", alerts.texts());
        base.assert_nothing_good_added(dir, &env, 0);
        base.assert_untouched(dir, &env);
        let s = stackback(&["status", "--json"], &env);
        let s: serde_json::Value = serde_json::from_str(&s.stdout).unwrap();
        assert_eq!(s["last_success"]["run_id"], known[0].as_str(), "{s}");
        known.push(id);
    }
    next_run_succeeds(dir, &env, &base);
    assert!(alerts.pings().last().unwrap().ends_with("/hb"));
}

#[test]
fn sigterm_mid_dump_aborts_the_run_cleanly_and_alerts() {
    let c = cluster();
    let db = c.seeded_db("term");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let alerts = Alerts::start();
    let env = alerts.env(&c.env(&db, dir));
    let first = good_run_before(&env, 30);
    let base = Baseline::take(dir);
    // pg_dump waits for this lock: the run is mid-dump, with a temp file and a child, when the
    // SIGTERM (systemctl stop, docker stop, a shutdown) arrives.
    let lock = TableLock::hold(c, &db, "orders");
    // Watch from before the start: the temp file exists before pg_dump reaches the lock.
    let watch = TempWatch::new(dir, "db_");
    let mut child = stackback_cmd(&["run"], &env)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    lock.wait_for_waiter(&db);
    signal_when(&mut child, libc::SIGTERM, "the dump's temp file", || {
        watch.size().is_some()
    });
    let t0 = Instant::now();
    let out = child.wait_with_output().unwrap();
    drop(lock);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(t0.elapsed() < Duration::from_secs(60));
    assert_eq!(
        out.status.code(),
        Some(1),
        "SIGTERM must end the run as a failure it reports ({:?}): {stderr}",
        out.status
    );
    let rec = &new_runs(dir, &[first])[0];
    assert_eq!(rec["status"], "failed", "{rec}");
    assert!(
        rec["error"].as_str().unwrap_or("").contains("SIGTERM"),
        "{rec}"
    );
    assert!(
        !files(dir).iter().any(|f| f.starts_with(".stackback-tmp.")),
        "temp files left: {:?}",
        files(dir)
    );
    alerts.failure(1, &["SIGTERM"]);
    alerts.assert_fail_ping();
    base.assert_nothing_good_added(dir, &env, 0);
    base.assert_untouched(dir, &env);
    next_run_succeeds(dir, &env, &base);
}

#[test]
fn postgres_stopped_mid_dump_fails_the_run_and_the_next_one_succeeds() {
    let mut c = Cluster::private(true);
    let db = c.seeded_db("stopped");
    fill_big(&c, &db);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let alerts = Alerts::start();
    let env = alerts.env(&c.env(&db, dir));
    let first = good_run_before(&env, 30);
    let total = db_size(dir);
    let base = Baseline::take(dir);
    let watch = TempWatch::new(dir, "db_");
    let mut child = stackback_cmd(&["run"], &env)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while watch.size().is_none_or(|s| s < total / 3) {
        assert!(child.try_wait().unwrap().is_none(), "the run ended early");
        assert!(Instant::now() < deadline, "the dump never reached a third");
        std::thread::sleep(Duration::from_millis(5));
    }
    // Immediate shutdown: what a crash, an OOM kill or `pg_ctl stop -m immediate` does.
    c.stop(libc::SIGQUIT);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("pg_dump failed"), "{stderr}");
    assert!(stderr.contains("hint:"), "{stderr}");
    let rec = &new_runs(dir, std::slice::from_ref(&first))[0];
    assert_eq!(rec["status"], "failed", "{rec}");
    assert_eq!(rec["failed_step"], "database", "{rec}");
    alerts.failure(1, &["pg_dump failed"]);
    alerts.assert_fail_ping();
    base.assert_nothing_good_added(dir, &env, 0);
    base.assert_untouched(dir, &env);

    // Down at the start: the run fails before writing anything, and says where it looked.
    let r = stackback(&["run"], &env);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("POSTGRES_HOST"), "{}", r.all());
    alerts.failure(2, &["refused"]);
    alerts.assert_fail_ping();
    base.assert_nothing_good_added(dir, &env, 0);
    base.assert_untouched(dir, &env);

    c.restart();
    next_run_succeeds(dir, &env, &base);
    assert!(alerts.pings().last().unwrap().ends_with("/hb"));
}

#[test]
fn a_wrong_password_fails_clearly_and_alerts_without_the_password() {
    let c = cluster();
    let db = c.seeded_db("wrongpw");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let alerts = Alerts::start();
    let env = alerts.env(&c.env(&db, dir));
    good_run_before(&env, 30);
    let base = Baseline::take(dir);
    let wrong = with(env.clone(), &[("POSTGRES_PASSWORD", "Wr0ng-pw-x1")]);
    let r = stackback(&["run"], &wrong);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stderr.contains("password authentication failed"),
        "{}",
        r.all()
    );
    assert!(r.stderr.contains("POSTGRES_PASSWORD"), "{}", r.all());
    let text = alerts.failure(1, &["password authentication failed"]);
    alerts.assert_fail_ping();
    for secret in ["Wr0ng-pw-x1", PASSWORD] {
        assert!(!r.all().contains(secret) && !text.contains(secret));
        for f in files(dir) {
            let bytes = std::fs::read(dir.join(&f)).unwrap_or_default();
            assert!(!String::from_utf8_lossy(&bytes).contains(secret), "{f}");
        }
    }
    base.assert_nothing_good_added(dir, &env, 0);
    base.assert_untouched(dir, &env);
    next_run_succeeds(dir, &env, &base);
}

#[test]
fn a_table_the_dump_user_may_not_read_fails_the_run_naming_it() {
    let c = cluster();
    let db = c.seeded_db("noread");
    let role = Cluster::unique("dumper");
    c.psql(
        "postgres",
        &format!("CREATE ROLE {role} LOGIN PASSWORD 'Dump-er-pw1'"),
    )
    .unwrap();
    // The role owns nothing and may read every table but one.
    c.psql(
        &db,
        &format!(
            "GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role};
             GRANT SELECT ON ALL SEQUENCES IN SCHEMA public TO {role};
             REVOKE SELECT ON orders FROM {role};"
        ),
    )
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let alerts = Alerts::start();
    let env = alerts.env(&with(
        c.env(&db, dir),
        &[
            ("POSTGRES_USER", &role),
            ("POSTGRES_PASSWORD", "Dump-er-pw1"),
        ],
    ));
    let r = stackback(&["run"], &env);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("permission denied"), "{}", r.all());
    assert!(r.stderr.contains("orders"), "{}", r.all());
    assert!(r.stderr.contains("privileges"), "the hint: {}", r.all());
    alerts.failure(1, &["orders"]);
    alerts.assert_fail_ping();
    let rec = only_record(dir);
    assert_eq!(rec["status"], "failed", "{rec}");
    assert!(artifacts(dir).is_empty(), "{:?}", files(dir));
    let base = Baseline::take(dir);
    base.assert_nothing_good_added(dir, &env, 0);

    c.psql(&db, &format!("GRANT SELECT ON orders TO {role}"))
        .unwrap();
    next_run_succeeds(dir, &env, &base);
    let id = records(dir).iter().find(|r| r["status"] == "ok").unwrap()["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(record_of(dir, &id)["status"], "ok");
}
