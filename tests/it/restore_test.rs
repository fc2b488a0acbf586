//! Restore tests (issue 11): row counts recorded in the dump's snapshot, and `stackback verify
//! --restore-test` against private PostgreSQL clusters and the shared S3 servers. Every test checks
//! that no scratch database (`psql -l`) or scratch bucket (boto3) is left, whatever happened.
//!
//! Each test takes a private cluster: a restore test drops every scratch database it finds on its
//! scratch server (what a killed test left), so two tests must never share one. For the same
//! reason the tests that use the shared S3 servers take turns ([`S3_TURN`]).

use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::fault::Alerts;
use crate::support::notify::Pushgateway;
use crate::support::pg::{Cluster, PASSWORD};
use crate::support::proxy::{Fault, Gate, Proxy, Rule};
use crate::support::s3::{s3_tests, small_bucket, S3Server};
use crate::support::*;

s3_tests!(
    a_good_backup_passes_and_leaves_nothing,
    objects_that_read_back_differently_are_caught,
    a_test_stopped_in_the_bucket_phase_leaves_no_scratch,
);

/// Restore tests remove every scratch bucket on their S3 server: one at a time on the shared ones.
pub(crate) static S3_TURN: Mutex<()> = Mutex::new(());

/// Scratch databases on `c`, as `psql -l` lists them.
pub(crate) fn scratch_dbs(c: &Cluster) -> Vec<String> {
    let out = std::process::Command::new(c.bin.join("psql"))
        .args(["-X", "-l", "-h", "127.0.0.1", "-p", &c.port.to_string()])
        .args(["-U", "postgres"])
        .env("PGPASSWORD", PASSWORD)
        .output()
        .unwrap();
    assert!(out.status.success(), "psql -l: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split('|').next())
        .map(|n| n.trim().to_string())
        .filter(|n| n.starts_with("stackback_restore_test_"))
        .collect()
}

/// Scratch buckets on `s3`, as boto3 lists them.
pub(crate) fn scratch_buckets(s3: &S3Server) -> Vec<String> {
    s3.tool(&["buckets", "stackback-restore-test-"])
        .lines()
        .map(String::from)
        .collect()
}

/// A seeded database of `c` backed up into a new directory; the environment used.
pub(crate) fn backed_up(
    c: &Cluster,
    db: &str,
    extra: &[(String, String)],
) -> (tempfile::TempDir, Vec<(String, String)>) {
    let tmp = tempfile::tempdir().unwrap();
    let mut env = c.env(db, tmp.path());
    env.extend_from_slice(extra);
    let r = stackback(&["run"], &env);
    assert_eq!(r.code, 0, "{}", r.all());
    (tmp, env)
}

pub(crate) fn record(dir: &std::path::Path) -> Value {
    only_record(dir)
}

/// `/metrics` of a daemon started on `env` (its schedule far away), then stopped.
pub(crate) fn metrics(env: &[(String, String)]) -> String {
    daemon_pages(env, &["/metrics"]).remove(0)
}

/// The bodies of `paths` served by a daemon started on `env` (its schedule far away), then
/// stopped.
pub(crate) fn daemon_pages(env: &[(String, String)], paths: &[&str]) -> Vec<String> {
    start_on_free_port("the daemon", |port| {
        let env = with(
            env.to_vec(),
            &[
                ("BACKUP_HTTP_ADDR", &format!("127.0.0.1:{port}")),
                ("BACKUP_SCHEDULE", "0 0 1 1 *"),
                ("BACKUP_STARTUP_GRACE", "1s"),
            ],
        );
        let mut child = stackback_cmd(&["daemon"], &env)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if child.try_wait().unwrap().is_some() {
                return Err("the daemon exited".to_string());
            }
            assert!(Instant::now() < deadline, "the daemon never listened");
            std::thread::sleep(Duration::from_millis(50));
        }
        let bodies = paths
            .iter()
            .map(|p| {
                let (ok, text) = tool("curl", &["-sf", &format!("http://127.0.0.1:{port}{p}")]);
                assert!(ok, "{p}: {text}");
                text
            })
            .collect();
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let _ = child.wait();
        Ok(bodies)
    })
}

/// The value of the unlabelled gauge `name` in a metrics text.
pub(crate) fn gauge(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .map(|v| v.trim().parse().unwrap())
}

/// Exit 0, tables and rows printed, the result in the record, `list`, `status` and `/metrics`,
/// the objects read back, and no scratch database or bucket left.
fn a_good_backup_passes_and_leaves_nothing(s3: &S3Server) {
    let _turn = S3_TURN.lock().unwrap_or_else(|e| e.into_inner());
    let c = Cluster::private(true);
    let db = c.seeded_db("rtgood");
    let bucket = small_bucket(s3);
    let alerts = Alerts::start();
    let (tmp, env) = backed_up(&c, &db, &alerts.env(&s3.env(&bucket)));
    let r = stackback(&["verify", "--restore-test", "latest"], &env);
    assert_eq!(r.code, 0, "{}", r.all());
    for want in ["public.orders", "120000", "public.users", "2000", "match"] {
        assert!(r.stdout.contains(want), "{want}: {}", r.stdout);
    }
    assert!(r.stdout.contains("5 of 5 objects"), "{}", r.stdout);
    assert!(!r.stdout.contains("DIFFERS"), "{}", r.stdout);

    let rec = record(tmp.path());
    let t = &rec["restore_test"];
    assert_eq!(t["ok"], true, "{rec:#}");
    assert_eq!(t["database"]["tables"], 2);
    assert_eq!(t["database"]["rows"], 122000);
    assert_eq!(t["database"]["compared"], 2);
    assert_eq!(t["buckets"][0]["sampled"], 5);
    assert_eq!(t["buckets"][0]["bucket"], bucket.as_str());
    assert_eq!(t["error"], Value::Null);
    // The rewritten record still proves itself: verify passes it.
    let v = stackback(&["verify", "latest"], &env);
    assert_eq!(v.code, 0, "{}", v.all());

    let l = list_json(&env);
    assert_eq!(l["runs"][0]["restore_test"]["ok"], true, "{l:#}");
    assert_eq!(l["runs"][0]["restore_test"]["rows"], 122000);
    assert_eq!(l["runs"][0]["restore_test"]["objects_sampled"], 5);
    let s = stackback(&["status", "--json"], &env);
    let s: Value = serde_json::from_str(&s.stdout).unwrap();
    assert_eq!(s["restore_test"]["last_ok"], true, "{s:#}");
    assert!(s["restore_test"]["last_success_at"].is_string());
    let text = stackback(&["status"], &env).stdout;
    assert!(text.contains("restore test: ok"), "{text}");
    let text = stackback(&["list"], &env).stdout;
    assert!(text.contains("restore test ok"), "{text}");
    let m = metrics(&env);
    assert!(m.contains("\nbackup_restore_test_success 1\n"), "{m}");
    assert!(
        m.contains("\nbackup_restore_test_last_success_timestamp_seconds "),
        "{m}"
    );

    assert_eq!(scratch_dbs(&c), Vec::<String>::new());
    assert_eq!(scratch_buckets(s3), Vec::<String>::new());
    assert!(alerts.texts().is_empty(), "{:?}", alerts.texts());
}

/// The restore test's scratch server: a second cluster without the source's roles, reached as
/// `postgres` through BACKUP_RESTORE_TEST_URL.
pub(crate) fn scratch_url(scratch: &Cluster, user: &str, password: &str) -> String {
    format!(
        "postgresql://{user}:{password}@127.0.0.1:{}/postgres",
        scratch.port
    )
}

/// A failed test: exit 3, an alert with its own wording, the failure in the record and in
/// `status`, and no scratch database left.
pub(crate) fn assert_caught(
    r: &Run,
    tmp: &std::path::Path,
    env: &[(String, String)],
    alerts: &Alerts,
) {
    assert_eq!(r.code, 3, "{}", r.all());
    let rec = record(tmp);
    assert_eq!(rec["restore_test"]["ok"], false, "{rec:#}");
    assert!(rec["restore_test"]["error"].is_string());
    let mut texts = Vec::new();
    wait_until(Duration::from_secs(30), "the restore-test alert", || {
        texts = alerts.texts();
        !texts.is_empty()
    });
    assert!(texts[0].contains("RESTORE TEST FAILED"), "{texts:?}");
    let s: Value = serde_json::from_str(&stackback(&["status", "--json"], env).stdout).unwrap();
    assert_eq!(s["restore_test"]["last_ok"], false, "{s:#}");
    assert!(s["warnings"].to_string().contains("restore test"), "{s:#}");
}

#[test]
fn a_dump_that_needs_a_role_the_scratch_server_lacks_is_caught() {
    let c = Cluster::private(true);
    let scratch = Cluster::private(false);
    let db = c.seeded_db("rtrole");
    c.psql(
        &db,
        "CREATE ROLE app_owner; ALTER TABLE users OWNER TO app_owner",
    )
    .unwrap();
    let alerts = Alerts::start();
    let url = scratch_url(&scratch, "postgres", PASSWORD);
    let extra = alerts.env(&[("BACKUP_RESTORE_TEST_URL".into(), url)]);
    let (tmp, env) = backed_up(&c, &db, &extra);
    let r = stackback(&["verify", "--restore-test"], &env);
    assert!(r.stderr.contains("app_owner"), "{}", r.all());
    assert!(r.stderr.contains("BACKUP_GLOBALS"), "{}", r.all());
    assert_caught(&r, tmp.path(), &env, &alerts);
    assert_eq!(scratch_dbs(&scratch), Vec::<String>::new());
    assert_eq!(scratch_dbs(&c), Vec::<String>::new());
}

#[test]
fn a_dump_that_needs_an_extension_the_scratch_user_cannot_create_is_caught() {
    let c = Cluster::private(true);
    let scratch = Cluster::private(false);
    scratch
        .psql(
            "postgres",
            "CREATE ROLE tester LOGIN CREATEDB PASSWORD 'tester-pw'",
        )
        .unwrap();
    let db = c.seeded_db("rtext");
    c.psql(&db, "CREATE EXTENSION postgres_fdw").unwrap();
    let alerts = Alerts::start();
    let url = scratch_url(&scratch, "tester", "tester-pw");
    let extra = alerts.env(&[("BACKUP_RESTORE_TEST_URL".into(), url)]);
    let (tmp, env) = backed_up(&c, &db, &extra);
    let r = stackback(&["verify", "--restore-test", "latest"], &env);
    assert!(r.stderr.contains("postgres_fdw"), "{}", r.all());
    assert_caught(&r, tmp.path(), &env, &alerts);
    assert_eq!(scratch_dbs(&scratch), Vec::<String>::new());
}

#[test]
fn counts_that_no_longer_match_are_caught() {
    let c = Cluster::private(true);
    let db = c.seeded_db("rtforge");
    let alerts = Alerts::start();
    let push = Pushgateway::start();
    let extra = alerts.env(&[("BACKUP_PUSHGATEWAY_URL".into(), push.url())]);
    let (tmp, env) = backed_up(&c, &db, &extra);
    let rec = record(tmp.path());
    // Tables are recorded in (schema, name) order: orders, then users.
    assert_eq!(rec["row_counts"]["tables"][0]["name"], "orders", "{rec:#}");
    let file = tmp
        .path()
        .join(format!("run_{}.json", rec["run_id"].as_str().unwrap()));
    forge_record(&file, &[("row_counts.tables.0.rows", json!(119_999))]);
    let r = stackback(&["verify", "--restore-test", "latest"], &env);
    assert!(r.stdout.contains("DIFFERS"), "{}", r.all());
    assert!(r.stderr.contains("row counts"), "{}", r.all());
    assert_caught(&r, tmp.path(), &env, &alerts);
    let m = &record(tmp.path())["restore_test"]["database"]["mismatches"];
    assert_eq!(
        m,
        &json!([{"table": "public.orders", "recorded": 119999, "restored": 120000, "exact": true}])
    );
    // Pushed too: the Pushgateway's copy fires BackupRestoreTestFailed.
    assert_eq!(push.value("backup_restore_test_success", ""), Some(0.0));
    assert_eq!(scratch_dbs(&c), Vec::<String>::new());
}

#[test]
fn create_database_refused_exits_1_with_a_hint() {
    let c = Cluster::private(true);
    let db = c.seeded_db("rtnocreate");
    c.psql(
        "postgres",
        "CREATE ROLE nocreate LOGIN PASSWORD 'nocreate-pw'",
    )
    .unwrap();
    let url = format!(
        "postgresql://nocreate:nocreate-pw@127.0.0.1:{}/postgres",
        c.port
    );
    let (tmp, env) = backed_up(&c, &db, &[("BACKUP_RESTORE_TEST_URL".into(), url)]);
    let r = stackback(&["verify", "--restore-test", "latest"], &env);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("hint:"), "{}", r.stderr);
    assert!(r.stderr.contains("CREATEDB"), "{}", r.stderr);
    assert!(r.stderr.contains("BACKUP_RESTORE_TEST_URL"), "{}", r.stderr);
    assert!(!r.all().contains("nocreate-pw"), "{}", r.all());
    assert_eq!(record(tmp.path())["restore_test"]["ok"], false);
    assert_eq!(scratch_dbs(&c), Vec::<String>::new());
}

/// A database whose dump takes seconds to load: each row's CHECK sleeps 20 ms (the function is
/// made slow after the rows went in, so only the load pays).
pub(crate) fn keep_inserting(
    c: &Cluster,
    db: &str,
) -> (Arc<AtomicBool>, std::thread::JoinHandle<u32>) {
    let stop = Arc::new(AtomicBool::new(false));
    let (flag, port, db) = (stop.clone(), c.port, db.to_string());
    let psql = c.bin.join("psql");
    let writer = std::thread::spawn(move || {
        let mut n = 0;
        while !flag.load(Ordering::SeqCst) {
            let _ = std::process::Command::new(&psql)
                .args(["-X", "-q", "-h", "127.0.0.1", "-p", &port.to_string()])
                .args(["-U", "postgres", "-d", &db, "-c"])
                .arg(format!("INSERT INTO users (email, created_at) SELECT 'w{n}_' || g || '@x', now() FROM generate_series(1, 50) g"))
                .env("PGPASSWORD", PASSWORD)
                .output();
            n += 1;
        }
        n
    });
    (stop, writer)
}

/// The counts are taken in pg_dump's own snapshot: pg_dump ran with `--snapshot`, and each
/// table's recorded count equals the rows of its COPY block in the dump, while another session
/// kept inserting rows during the backup.
#[test]
fn row_counts_are_taken_in_the_dumps_snapshot() {
    let c = Cluster::private(true);
    let db = c.seeded_db("rtsnap");
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("pg_dump-args.log");
    let wrapper = tmp.path().join("pg_dump");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho \"$@\" >> {}\nexec {} \"$@\"\n",
            shell_quote(&log),
            c.bin.join("pg_dump").display()
        ),
    )
    .unwrap();
    sh(&format!("chmod +x {}", shell_quote(&wrapper)));
    let dir = tmp.path().join("backups");
    let env = with(
        c.env(&db, &dir),
        &[("PG_DUMP_PATH", wrapper.to_str().unwrap())],
    );
    let (stop, writer) = keep_inserting(&c, &db);
    let r = stackback(&["run"], &env);
    stop.store(true, Ordering::SeqCst);
    let inserts = writer.join().unwrap();
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(inserts > 1, "the writer ran during the backup");
    let args = std::fs::read_to_string(&log).unwrap();
    assert!(args.contains("--snapshot="), "{args}");
    let rec = only_record(&dir);
    let dump = rec["artifacts"][0]["file"].as_str().unwrap();
    for t in rec["row_counts"]["tables"].as_array().unwrap() {
        let name = format!(
            "{}.{}",
            t["schema"].as_str().unwrap(),
            t["name"].as_str().unwrap()
        );
        // Rows between `COPY <table> ...` and `\.`, counted by awk, not by stackback.
        let rows = sh(&format!(
            "gunzip -c {} | awk '/^COPY {} /{{on=1; next}} on && /^\\\\\\.$/{{on=0}} on{{n++}} END{{print n+0}}'",
            shell_quote(&dir.join(dump)),
            name.replace('.', "\\.")
        ));
        assert_eq!(
            t["rows"].as_u64().unwrap(),
            rows.trim().parse::<u64>().unwrap(),
            "{name}: {t}"
        );
        assert_eq!(t["exact"], true);
    }
    assert_eq!(rec["row_counts"]["file"], dump);

    // Above the limit: the planner's estimate, marked as such.
    c.psql(&db, "ANALYZE").unwrap();
    let r = stackback(
        &["run"],
        &with(env.clone(), &[("BACKUP_ROW_COUNT_EXACT_LIMIT", "0")]),
    );
    assert_eq!(r.code, 0, "{}", r.all());
    let rec = records(&dir).pop().unwrap();
    let orders = rec["row_counts"]["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "orders")
        .unwrap()
        .clone();
    assert_eq!(orders["exact"], false, "{orders}");
    let n = orders["rows"].as_u64().unwrap();
    assert!((108_000..=132_000).contains(&n), "{orders}");

    // An encrypted run's record names no table, so it counts nothing: no snapshot of ours, no
    // count in the record.
    let key = tmp.path().join("age.key");
    sh(&format!("age-keygen -o {} 2>/dev/null", shell_quote(&key)));
    let recipient = sh(&format!("age-keygen -y {}", shell_quote(&key)));
    std::fs::remove_file(&log).unwrap();
    let r = stackback(
        &["run"],
        &with(env.clone(), &[("BACKUP_AGE_RECIPIENTS", recipient.trim())]),
    );
    assert_eq!(r.code, 0, "{}", r.all());
    let args = std::fs::read_to_string(&log).unwrap();
    assert!(
        !args.contains("--snapshot="),
        "a sealed run exported a snapshot: {args}"
    );
    let rec = records(&dir)
        .into_iter()
        .max_by_key(|r| r["sequence"].as_u64())
        .unwrap();
    assert!(rec["row_counts"].is_null(), "{rec}");
}

/// A sample of BACKUP_RESTORE_TEST_SAMPLE objects, or every one with `--full`; objects that come
/// back from the scratch bucket altered (a byte flipped on the way by the fault proxy in front of
/// the real server) fail the test: exit 3, an alert, each differing key in the record, the source
/// bucket untouched, and no scratch bucket or database left.
fn objects_that_read_back_differently_are_caught(s3: &S3Server) {
    let _turn = S3_TURN.lock().unwrap_or_else(|e| e.into_inner());
    let c = Cluster::private(true);
    let db = c.seeded_db("rtobj");
    let bucket = small_bucket(s3);
    let source = s3.dump(&bucket);
    let alerts = Alerts::start();
    let (tmp, env) = backed_up(&c, &db, &alerts.env(&s3.env(&bucket)));

    let sampled = stackback(
        &["verify", "--restore-test", "latest"],
        &with(env.clone(), &[("BACKUP_RESTORE_TEST_SAMPLE", "2")]),
    );
    assert_eq!(sampled.code, 0, "{}", sampled.all());
    assert!(
        sampled.stdout.contains("2 of 5 objects"),
        "{}",
        sampled.stdout
    );
    let t = &record(tmp.path())["restore_test"];
    assert_eq!(
        (t["full"].clone(), t["buckets"][0]["sampled"].clone()),
        (json!(false), json!(2))
    );

    let proxy = Proxy::start(&s3.endpoint);
    // Only the read-back GETs name a key (`/<scratch bucket>/docs/N.txt`); the uploads are PUTs
    // and the listing of the cleanup names no key.
    proxy.add(Rule::new(Some("GET"), "/docs/", Fault::CorruptBody));
    let via = with(env.clone(), &[("MINIO_ENDPOINT", &proxy.url())]);
    let r = stackback(&["verify", "--restore-test", "--full", "latest"], &via);
    assert!(r.stdout.contains("5 of 5 objects"), "{}", r.all());
    assert!(r.stderr.contains("do not read back"), "{}", r.all());
    assert_caught(&r, tmp.path(), &env, &alerts);
    let corrupted: Vec<_> = proxy
        .seen()
        .into_iter()
        .filter(|s| s.fault.is_some())
        .map(|s| s.target)
        .collect();
    assert_eq!(corrupted.len(), 5, "{corrupted:?}");
    assert!(
        corrupted
            .iter()
            .all(|t| t.contains("/stackback-restore-test-")),
        "{corrupted:?}"
    );
    let t = &record(tmp.path())["restore_test"];
    assert_eq!(t["full"], true, "{t:#}");
    // The database half passed; the bucket half names each key and what differs.
    assert_eq!(t["database"]["mismatches"], Value::Null, "{t:#}");
    let m = t["buckets"][0]["mismatches"].as_array().unwrap();
    let keys: Vec<&str> = m.iter().map(|m| m["key"].as_str().unwrap()).collect();
    assert_eq!(
        keys,
        [
            "docs/0.txt",
            "docs/1.txt",
            "docs/2.txt",
            "docs/3.txt",
            "docs/4.txt"
        ]
    );
    assert!(m.iter().all(|m| m["field"] == "blake3"), "{t:#}");

    assert_eq!(s3.dump(&bucket), source, "the source bucket was touched");
    assert_eq!(scratch_buckets(s3), Vec::<String>::new());
    assert_eq!(scratch_dbs(&c), Vec::<String>::new());
}

/// A test stopped while it reads objects back from its scratch bucket (the fault proxy holds
/// those GETs, so the signal lands there every time). SIGTERM: the scratch bucket and database
/// are dropped before it exits 1, nothing is recorded or alerted. SIGKILL: both are left, and the
/// next test drops them before it starts, says so, and passes.
fn a_test_stopped_in_the_bucket_phase_leaves_no_scratch(s3: &S3Server) {
    let _turn = S3_TURN.lock().unwrap_or_else(|e| e.into_inner());
    let c = Cluster::private(true);
    let db = c.seeded_db("rtstop");
    let bucket = small_bucket(s3);
    let alerts = Alerts::start();
    let (tmp, env) = backed_up(&c, &db, &alerts.env(&s3.env(&bucket)));
    let proxy = Proxy::start(&s3.endpoint);
    let via = with(env.clone(), &[("MINIO_ENDPOINT", &proxy.url())]);
    // Starts a test, waits until a read-back is held, signals it; its output and the scratch
    // bucket it had made.
    let stopped = |signal: i32| {
        let gate = Gate::new();
        proxy.clear();
        proxy.add(Rule::new(Some("GET"), "/docs/", Fault::Hold(gate.clone())));
        let child = stackback_cmd(&["verify", "--restore-test", "--full", "latest"], &via)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        gate.wait_reached(1, Duration::from_secs(90));
        let made = scratch_buckets(s3);
        assert_eq!(made.len(), 1, "{made:?}");
        assert_eq!(scratch_dbs(&c).len(), 1);
        unsafe {
            libc::kill(child.id() as i32, signal);
        }
        let out = child.wait_with_output().unwrap();
        // The held GETs go on to the server now: reads of a bucket that is gone, or left.
        proxy.clear();
        gate.open();
        (out, made.into_iter().next().unwrap())
    };

    let (out, _) = stopped(libc::SIGTERM);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("SIGTERM"), "{stderr}");
    assert_eq!(scratch_buckets(s3), Vec::<String>::new());
    assert_eq!(scratch_dbs(&c), Vec::<String>::new());
    assert_eq!(record(tmp.path())["restore_test"], Value::Null);

    let (_, left_bucket) = stopped(libc::SIGKILL);
    assert_eq!(scratch_buckets(s3), std::slice::from_ref(&left_bucket));
    let left_db = scratch_dbs(&c);
    assert_eq!(left_db.len(), 1);
    let r = stackback(&["verify", "--restore-test", "latest"], &env);
    assert_eq!(r.code, 0, "{}", r.all());
    for left in [&left_bucket, &left_db[0]] {
        assert!(
            r.stdout.contains(&format!("dropped {left}")),
            "{}",
            r.stdout
        );
    }
    assert_eq!(scratch_buckets(s3), Vec::<String>::new());
    assert_eq!(scratch_dbs(&c), Vec::<String>::new());
    assert_eq!(record(tmp.path())["restore_test"]["ok"], true);
    assert!(alerts.texts().is_empty(), "{:?}", alerts.texts());
}

/// BACKUP_RESTORE_TEST as a cron expression: the daemon tests the latest good run on that
/// schedule, and /metrics and the status page carry the result. The last success is kept in the
/// state file: once the next run's retention pruned the tested run, `status`, `/metrics` and the
/// page still know when a test last passed, and of which run.
/// A backup whose file no longer matches its run record fails the restore test before any
/// scratch database is made: exit 3, the failure recorded, alerted and pushed as any other.
#[test]
fn a_damaged_backup_fails_the_test_before_any_scratch_is_made() {
    let c = Cluster::private(true);
    let db = c.seeded_db("rtdamaged");
    let alerts = Alerts::start();
    let (tmp, env) = backed_up(&c, &db, &alerts.env(&[]));
    let dump = tmp
        .path()
        .join(record(tmp.path())["artifacts"][0]["file"].as_str().unwrap());
    let mut bytes = std::fs::read(&dump).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&dump, bytes).unwrap();
    let r = stackback(&["verify", "--restore-test", "latest"], &env);
    assert!(r.stderr.contains("sha256 of the file is"), "{}", r.all());
    assert_caught(&r, tmp.path(), &env, &alerts);
    let t = &record(tmp.path())["restore_test"];
    assert_eq!(t["database"], Value::Null, "{t:#}");
    assert!(t["error"].as_str().unwrap().contains("sha256"), "{t:#}");
    assert_eq!(scratch_dbs(&c), Vec::<String>::new());
}
