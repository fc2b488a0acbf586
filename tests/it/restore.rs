//! `stackback restore db` and `restore run` against a real PostgreSQL (and moto for the buckets).

use crate::support::pg::Cluster;
use crate::support::s3::{bucket_name, other, parse_dump, s3_tests, S3Server};
use crate::support::*;

s3_tests!(restore_run_restores_the_database_then_its_buckets);

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

/// `--no-owner` on a fresh server without the original roles: the dump's `ALTER ... OWNER TO`
/// would fail there, and the flag leaves every object to the restoring user.
#[test]
fn restore_db_without_owners_and_through_a_target_url() {
    let c = cluster();
    let db = c.seeded_db("noowner");
    let owner = Cluster::unique("app_owner");
    c.psql(
        &db,
        &format!(
            "CREATE ROLE {owner}; ALTER TABLE users OWNER TO {owner}; \
             ALTER TABLE orders OWNER TO {owner}; ALTER VIEW big_spenders OWNER TO {owner}"
        ),
    )
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let env = c.env(&db, tmp.path());
    let r = stackback(&["run"], &env);
    assert_eq!(r.code, 0, "{}", r.all());

    let fresh = Cluster::private(false);
    // Another server: its password goes in the URL (the configured one is never sent there).
    let url = |target: &str| {
        format!(
            "postgresql://postgres:{}@127.0.0.1:{}/{target}",
            crate::support::pg::PASSWORD,
            fresh.port
        )
    };
    let r = stackback(
        &[
            "restore",
            "db",
            "latest",
            "--target-url",
            &url("with_owners"),
            "--create",
        ],
        &env,
    );
    assert_eq!(
        r.code,
        1,
        "the original owner does not exist there: {}",
        r.all()
    );
    assert!(
        r.stderr
            .contains(&format!("role \"{owner}\" does not exist")),
        "{}",
        r.stderr
    );
    let r = stackback(
        &[
            "restore",
            "db",
            "latest",
            "--target-url",
            &url("without_owners"),
            "--create",
            "--no-owner",
        ],
        &env,
    );
    assert_eq!(r.code, 0, "{}", r.all());
    let owners = fresh
        .psql(
            "without_owners",
            "select distinct tableowner from pg_tables where schemaname = 'public' \
             union select distinct viewowner from pg_views where schemaname = 'public'",
        )
        .unwrap();
    assert_eq!(owners, "postgres");
    let digests = |cl: &Cluster, d: &str| cl.table_digests(d);
    assert_eq!(digests(c, &db), digests(&fresh, "without_owners"));
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
    let restore = || {
        stackback(
            &[
                "restore",
                "db",
                "latest",
                "--target-db",
                &target,
                "--create",
            ],
            &env,
        )
    };
    let r = restore();
    assert_eq!(r.code, 3, "{}", r.all());
    assert!(r.stderr.contains("refusing to restore"), "{}", r.stderr);
    // Proven by the stored BLAKE3 the run recorded (what `b3sum` prints of the intact file).
    let rec = only_record(tmp.path());
    let i = (0..2)
        .find(|i| rec["artifacts"][i]["kind"] == "database")
        .unwrap();
    let b3 = rec["artifacts"][i]["stored_blake3"].as_str().unwrap();
    assert!(r.stderr.contains(b3), "{}", r.stderr);
    // A record written before runs kept a stored BLAKE3 is proven by its SHA-256: refused too.
    let sha = rec["artifacts"][i]["stored_sha256"].as_str().unwrap();
    let rec_path = tmp
        .path()
        .join(format!("run_{}.json", rec["run_id"].as_str().unwrap()));
    forge_record(
        &rec_path,
        &[(
            format!("artifacts.{i}.stored_blake3"),
            serde_json::Value::Null,
        )],
    );
    let r = restore();
    assert_eq!(r.code, 3, "{}", r.all());
    assert!(
        r.stderr.contains("refusing to restore") && r.stderr.contains(sha),
        "{}",
        r.stderr
    );
    let exists = c
        .psql(
            "postgres",
            &format!("select count(*) from pg_database where datname = '{target}'"),
        )
        .unwrap();
    assert_eq!(exists, "0");
}

/// `restore run` onto another S3 server (the disaster case: the old one is gone): the database,
/// then each bucket, created there and compared object by object with boto3.
fn restore_run_restores_the_database_then_its_buckets(s3: &S3Server) {
    let c = cluster();
    let db = c.seeded_db("rrun");
    let bucket = bucket_name("rrun");
    s3.tool(&["populate", &bucket, "--bulk", "50"]);
    let original = s3.dump(&bucket);
    let tmp = tempfile::tempdir().unwrap();
    let mut env = c.env(&db, tmp.path());
    env.extend(s3.env(&bucket));
    assert_eq!(stackback(&["run"], &env).code, 0);

    let target = other(s3);
    let mut env = c.env(&db, tmp.path());
    env.extend(target.env(&bucket));
    let db_target = format!("{db}_run");
    let r = stackback(
        &[
            "restore",
            "run",
            "latest",
            "--target-db",
            &db_target,
            "--create",
            "--create-bucket",
        ],
        &env,
    );
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains(&format!("into database {db_target}")),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("66 objects uploaded"), "{}", r.stdout);
    c.assert_same_data(&db, &db_target);
    let strip = if target.name == "garage" { "/" } else { "" };
    assert_eq!(target.objects(&bucket, ""), parse_dump(&original, strip));
}

/// `restore db` from each compression (gzip is covered above): the same data comes back.
#[test]
fn restore_db_from_zstd_and_uncompressed_backups() {
    let c = cluster();
    for compression in ["zstd", "none"] {
        let db = c.seeded_db(compression);
        let tmp = tempfile::tempdir().unwrap();
        let env = c.env(&db, tmp.path());
        let r = stackback(&["run", "--compression", compression], &env);
        assert_eq!(r.code, 0, "{}", r.all());
        let suffix = if compression == "zstd" {
            ".sql.zst"
        } else {
            ".sql"
        };
        assert!(
            artifacts(tmp.path())[0].ends_with(suffix),
            "{:?}",
            files(tmp.path())
        );
        let target = format!("{db}_back");
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
        assert_eq!(r.code, 0, "{compression}: {}", r.all());
        assert!(r.stdout.contains("2 tables, 122000 rows"), "{}", r.stdout);
        c.assert_same_data(&db, &target);
    }
}

/// `BACKUP_GLOBALS=true`: the globals file restores with psql on a fresh server, and the roles
/// come back with their attributes (not their passwords: pg_dumpall leaves those out on request).
#[test]
fn globals_restore_with_psql_on_a_fresh_server() {
    let c = cluster();
    let db = c.seeded_db("globals");
    let role = Cluster::unique("reporting");
    c.psql(
        "postgres",
        &format!("CREATE ROLE {role} LOGIN CONNECTION LIMIT 7 PASSWORD 'role-pw'"),
    )
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let env = with(c.env(&db, tmp.path()), &[("BACKUP_GLOBALS", "true")]);
    let r = stackback(&["run"], &env);
    assert_eq!(r.code, 0, "{}", r.all());
    let globals = artifacts(tmp.path())
        .into_iter()
        .find(|f| f.starts_with("globals_"))
        .expect("a globals file");

    let fresh = Cluster::private(false);
    // The file also creates roles the fresh server already has (postgres): psql reports those
    // and goes on, as the seed's recipe does.
    sh(&format!(
        "gunzip -c {} | PGPASSWORD='{PASSWORD}' {} -X -q -h 127.0.0.1 -p {} -U postgres -d postgres >/dev/null 2>&1 || true",
        shell_quote(&tmp.path().join(&globals)),
        fresh.bin.join("psql").display(),
        fresh.port
    ));
    let got = fresh
        .psql(
            "postgres",
            &format!("select rolcanlogin, rolconnlimit, rolpassword is null from pg_authid where rolname = '{role}'"),
        )
        .unwrap();
    assert_eq!(got, "t|7|t", "the role came back, without its password");
}
