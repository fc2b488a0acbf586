//! `stackback restore db` and `restore run` against a real PostgreSQL (and moto for the buckets).

use crate::support::s3::{bucket_name, moto};
use crate::support::*;

/// A database with a fresh verified backup in its own directory.
fn backed_up(prefix: &str) -> (String, tempfile::TempDir, Vec<(String, String)>) {
    let c = cluster();
    let db = c.seeded_db(prefix);
    let tmp = tempfile::tempdir().unwrap();
    let env = c.env(&db, tmp.path());
    let r = stackback(&["run"], &env);
    assert_eq!(r.code, 0, "{}", r.all());
    (db, tmp, env)
}

#[test]
fn restore_db_into_a_new_database_gives_identical_data() {
    let c = cluster();
    let (db, _tmp, env) = backed_up("rdb");
    let target = format!("{db}_copy");
    let r = stackback(
        &[
            "restore",
            "db",
            "latest",
            "--target-db",
            &target,
            "--create",
        ],
        &env,
    );
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("2 tables, 122000 rows"), "{}", r.stdout);
    assert_eq!(c.table_digests(&db), c.table_digests(&target));
    assert_eq!(c.normalized_dump(&db), c.normalized_dump(&target));
}

#[test]
fn restore_db_refuses_to_clobber_and_cleans_when_told() {
    let c = cluster();
    let (db, _tmp, env) = backed_up("clobber");
    let before = c.table_digests(&db);
    c.psql(
        &db,
        "DELETE FROM orders WHERE id > 1000; UPDATE users SET name = 'changed'",
    )
    .unwrap();
    assert_ne!(before, c.table_digests(&db));

    let r = stackback(&["restore", "db", "latest"], &env);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("--clean --yes"), "{}", r.stderr);
    let r = stackback(&["restore", "db", "latest", "--clean"], &env);
    assert_eq!(r.code, 2, "--clean alone is not enough: {}", r.all());

    let r = stackback(&["restore", "db", "latest", "--clean", "--yes"], &env);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(
        before,
        c.table_digests(&db),
        "the restore brought the backup's data back"
    );

    let missing = format!("{db}_nope");
    let r = stackback(&["restore", "db", "latest", "--target-db", &missing], &env);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("--create"), "{}", r.stderr);
}

#[test]
fn restore_db_to_file_writes_the_plain_dump() {
    let (_db, tmp, env) = backed_up("tofile");
    let out = tmp.path().join("restore.sql");
    let r = stackback(
        &[
            "restore",
            "db",
            "latest",
            "--to-file",
            out.to_str().unwrap(),
        ],
        &env,
    );
    assert_eq!(r.code, 0, "{}", r.all());
    let art = tmp.path().join(
        artifacts(tmp.path())
            .into_iter()
            .find(|f| f.starts_with("db_"))
            .unwrap(),
    );
    let (ok, expected) = tool(
        "bash",
        &[
            "-c",
            &format!("gunzip -c {} | sha256sum", shell_quote(&art)),
        ],
    );
    assert!(ok);
    let (ok, got) = tool("sha256sum", &[out.to_str().unwrap()]);
    assert!(ok);
    assert_eq!(expected[..64], got[..64]);
}

#[test]
fn restore_db_without_owners_and_through_a_target_url() {
    let c = cluster();
    let (db, _tmp, env) = backed_up("noowner");
    let target = format!("{db}_url");
    let url = format!("postgresql://postgres@127.0.0.1:{}/{target}", c.port);
    let r = stackback(
        &[
            "restore",
            "db",
            "latest",
            "--target-url",
            &url,
            "--create",
            "--no-owner",
        ],
        &env,
    );
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(c.table_digests(&db), c.table_digests(&target));
}

#[test]
fn a_damaged_database_backup_is_refused_before_touching_the_server() {
    let c = cluster();
    let (db, tmp, env) = backed_up("dmgdb");
    let art = tmp.path().join(
        artifacts(tmp.path())
            .into_iter()
            .find(|f| f.starts_with("db_"))
            .unwrap(),
    );
    let mut bytes = std::fs::read(&art).unwrap();
    let n = bytes.len() - 100;
    bytes[n] ^= 1;
    std::fs::write(&art, bytes).unwrap();
    let target = format!("{db}_never");
    let r = stackback(
        &[
            "restore",
            "db",
            "latest",
            "--target-db",
            &target,
            "--create",
        ],
        &env,
    );
    assert_eq!(r.code, 3, "{}", r.all());
    assert!(r.stderr.contains("refusing to restore"), "{}", r.stderr);
    let exists = c
        .psql(
            "postgres",
            &format!("select count(*) from pg_database where datname = '{target}'"),
        )
        .unwrap();
    assert_eq!(exists, "0");
}

#[test]
fn restore_run_restores_the_database_then_its_buckets() {
    let c = cluster();
    let db = c.seeded_db("rrun");
    let s3 = moto();
    let bucket = bucket_name("rrun");
    s3.tool(&["populate", &bucket, "--bulk", "50"]);
    let tmp = tempfile::tempdir().unwrap();
    let mut env = c.env(&db, tmp.path());
    env.extend(s3.env(&bucket));
    assert_eq!(stackback(&["run"], &env).code, 0);
    let target = format!("{db}_run");
    let r = stackback(
        &[
            "restore",
            "run",
            "latest",
            "--target-db",
            &target,
            "--create",
            "--skip-existing",
        ],
        &env,
    );
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains(&format!("into database {target}")),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("0 objects uploaded, 66 existing skipped"),
        "{}",
        r.stdout
    );
    assert_eq!(c.table_digests(&db), c.table_digests(&target));
}
