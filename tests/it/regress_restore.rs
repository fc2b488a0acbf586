//! Regression tests for the restore paths found in review (issue 13), each named after what broke.

use std::path::Path;

use crate::support::pg::{Cluster, PASSWORD};
use crate::support::s3::{bucket_name, moto, small_bucket, S3Server};
use crate::support::tls::TestCa;
use crate::support::*;

/// A database with a fresh verified backup in its own directory.
fn backed_up(c: &Cluster, prefix: &str) -> (String, tempfile::TempDir, Vec<(String, String)>) {
    let db = c.seeded_db(prefix);
    let tmp = tempfile::tempdir().unwrap();
    let env = c.env(&db, tmp.path());
    let r = stackback(&["run"], &env);
    assert_eq!(r.code, 0, "{}", r.all());
    (db, tmp, env)
}

/// A backup whose dump gives a table to a role that no longer exists when it is restored: psql
/// stops half-way through the load, at `ALTER TABLE ... OWNER TO`.
fn backup_that_fails_to_load(c: &Cluster, tmp: &Path) -> Vec<(String, String)> {
    let role = Cluster::unique("gone");
    let src = c.seeded_db("halfway");
    c.psql("postgres", &format!("CREATE ROLE {role}")).unwrap();
    c.psql(&src, &format!("ALTER TABLE orders OWNER TO {role}"))
        .unwrap();
    let env = c.env(&src, tmp);
    let r = stackback(&["run"], &env);
    assert_eq!(r.code, 0, "{}", r.all());
    c.psql(
        &src,
        &format!("REASSIGN OWNED BY {role} TO postgres; DROP OWNED BY {role}"),
    )
    .unwrap();
    c.psql("postgres", &format!("DROP ROLE {role}")).unwrap();
    env
}

#[test]
fn restore_clean_that_fails_leaves_the_target_as_it_was() {
    let c = cluster();
    let (db, tmp, env) = backed_up(c, "clean");
    // The live database moved on since the backup: what a failed restore must not destroy.
    c.psql(&db, "DELETE FROM orders WHERE id % 2 = 0").unwrap();
    let before = c.table_digests(&db);

    // psql cannot be found (PG_DUMP_PATH names a directory holding only pg_dump).
    let only = tmp.path().join("only-pg_dump");
    std::fs::create_dir(&only).unwrap();
    std::os::unix::fs::symlink(c.bin.join("pg_dump"), only.join("pg_dump")).unwrap();
    let no_psql = with(
        env.clone(),
        &[("PG_DUMP_PATH", only.join("pg_dump").to_str().unwrap())],
    );
    let r = stackback(&["restore", "db", "latest", "--clean", "--yes"], &no_psql);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("psql"), "{}", r.all());
    assert_eq!(c.table_digests(&db), before, "the target was changed");

    // The load itself fails half-way.
    let other = tmp.path().join("other");
    let failing = backup_that_fails_to_load(c, &other);
    let r = stackback(
        &[
            "restore",
            "db",
            "latest",
            "--target-db",
            &db,
            "--clean",
            "--yes",
        ],
        &failing,
    );
    assert_eq!(r.code, 1, "{}", r.all());
    assert_eq!(c.table_digests(&db), before, "the target was changed");

    // And a restore that works replaces it, leaving no scratch database behind.
    let r = stackback(&["restore", "db", "latest", "--clean", "--yes"], &env);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_ne!(c.table_digests(&db), before);
    let left = c
        .psql(
            "postgres",
            &format!(
                "select count(*) from pg_database where datname like '{db}%' and datname <> '{db}'"
            ),
        )
        .unwrap();
    assert_eq!(left, "0", "scratch databases left behind");
}

#[test]
fn a_dump_that_fails_half_way_commits_nothing() {
    let c = cluster();
    let tmp = tempfile::tempdir().unwrap();
    let env = backup_that_fails_to_load(c, tmp.path());
    let target = Cluster::unique("half");
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
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("does not exist"), "{}", r.all());
    let tables = c
        .psql(
            &target,
            "select count(*) from pg_tables where schemaname = 'public'",
        )
        .unwrap_or_else(|_| "0".into());
    assert_eq!(
        tables, "0",
        "tables created before the error were committed"
    );
}

#[test]
fn a_target_url_without_a_password_is_not_sent_the_source_password() {
    let c = cluster();
    let (_db, _tmp, env) = backed_up(c, "pwsend");
    // Another server whose superuser happens to have the same password as the source's.
    let other = Cluster::private(false);
    let url = format!("postgres://postgres@127.0.0.1:{}/copied", other.port);
    let r = stackback(
        &["restore", "db", "latest", "--target-url", &url, "--create"],
        &env,
    );
    assert_eq!(
        r.code,
        1,
        "the source's password opened another server: {}",
        r.all()
    );
    assert!(r.stderr.to_lowercase().contains("password"), "{}", r.all());
    // Given for that server, it is used.
    let url = format!(
        "postgres://postgres:{PASSWORD}@127.0.0.1:{}/copied",
        other.port
    );
    let r = stackback(
        &["restore", "db", "latest", "--target-url", &url, "--create"],
        &env,
    );
    assert_eq!(r.code, 0, "{}", r.all());
}

/// A private cluster that only accepts TLS connections, with a certificate from `ca`.
fn tls_only_cluster(ca: &TestCa) -> Cluster {
    let c = Cluster::private(true);
    let data = c.root.join("data");
    for (from, to) in [(&ca.cert, "server.crt"), (&ca.key, "server.key")] {
        std::fs::copy(from, data.join(to)).unwrap();
    }
    sh(&format!(
        "cd {d} && chown postgres:postgres server.crt server.key && chmod 600 server.key && \
         printf 'hostssl all all 127.0.0.1/32 scram-sha-256\\nhost all all 127.0.0.1/32 reject\\nlocal all all trust\\n' > pg_hba.conf && \
         chown postgres:postgres pg_hba.conf",
        d = shell_quote(&data)
    ));
    c.psql("postgres", "ALTER SYSTEM SET ssl = on").unwrap();
    c.psql("postgres", "SELECT pg_reload_conf()").unwrap();
    c
}

#[test]
fn sslmode_is_honoured_by_stackbacks_own_connections() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = TestCa::new(tmp.path());
    let c = tls_only_cluster(&ca);
    let db = c.seeded_db("tls");
    let dir = tmp.path().join("backups");
    let url = |mode: &str, extra: &str| {
        format!(
            "postgres://postgres:{PASSWORD}@127.0.0.1:{}/{db}?sslmode={mode}{extra}",
            c.port
        )
    };
    let env = |u: String| {
        vec![
            ("DATABASE_URL".to_string(), u),
            ("BACKUP_DIR".to_string(), dir.display().to_string()),
        ]
    };
    // require: encrypted, certificate not checked.
    let r = stackback(&["run"], &env(url("require", "")));
    assert_eq!(r.code, 0, "{}", r.all());
    let r = stackback(
        &[
            "restore",
            "db",
            "latest",
            "--target-db",
            "copy_req",
            "--create",
        ],
        &env(url("require", "")),
    );
    assert_eq!(r.code, 0, "{}", r.all());
    // verify-full: the unknown CA is refused, the right one accepted.
    let r = stackback(
        &[
            "restore",
            "db",
            "latest",
            "--target-db",
            "copy_bad",
            "--create",
        ],
        &env(url("verify-full", "")),
    );
    assert_eq!(r.code, 1, "an unknown CA was accepted: {}", r.all());
    let root = format!("&sslrootcert={}", ca.ca.display());
    let r = stackback(
        &[
            "restore",
            "db",
            "latest",
            "--target-db",
            "copy_full",
            "--create",
        ],
        &env(url("verify-full", &root)),
    );
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(c.table_digests(&db), c.table_digests("copy_full"));
}

#[test]
fn restore_volume_strips_setuid_and_setgid() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(data.join("sub")).unwrap();
    for (name, m) in [("suid", 0o4755), ("sub/sgid", 0o2755), ("plain", 0o640)] {
        let p = data.join(name);
        std::fs::write(&p, name).unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(m)).unwrap();
    }
    let c = cluster();
    let env = with(
        c.env(&c.empty_db("vol"), &tmp.path().join("backups")),
        &[
            ("MINIO_DATA_DIR", data.to_str().unwrap()),
            ("BACKUP_MIN_DB_BYTES", "0"),
            ("BACKUP_MIN_OBJECTS_BYTES", "0"),
        ],
    );
    let r = stackback(&["run"], &env);
    assert_eq!(r.code, 0, "{}", r.all());
    let into = tmp.path().join("restored");
    let r = stackback(
        &[
            "restore",
            "volume",
            "latest",
            "--into",
            into.to_str().unwrap(),
        ],
        &env,
    );
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(mode(&into.join("suid")), 0o755);
    assert_eq!(mode(&into.join("sub/sgid")), 0o755);
    assert_eq!(mode(&into.join("plain")), 0o640);
}

/// Backs `bucket` up and returns the environment and the backup directory's files.
fn bucket_backup(s3: &S3Server, bucket: &str, dir: &Path) -> Vec<(String, String)> {
    let c = cluster();
    let mut env = c.env(&c.empty_db("b"), dir);
    env.extend(s3.env(bucket));
    env.push(("BACKUP_MIN_DB_BYTES".into(), "0".into()));
    let r = stackback(&["run"], &env);
    assert_eq!(r.code, 0, "{}", r.all());
    env
}

#[test]
fn verify_checks_the_index_sidecar_that_restore_relies_on() {
    let s3 = moto();
    let b = small_bucket(s3);
    let tmp = tempfile::tempdir().unwrap();
    let env = bucket_backup(s3, &b, tmp.path());
    let sidecar = files(tmp.path())
        .into_iter()
        .find(|f| f.ends_with(".index.jsonl"))
        .unwrap();
    let path = tmp.path().join(&sidecar);
    // Damage what only restore reads: a content type.
    let text = std::fs::read_to_string(&path).unwrap();
    let damaged = text.replacen("\"content_type\":\"", "\"content_type\":\"x-", 1);
    assert_ne!(text, damaged);
    std::fs::write(&path, damaged).unwrap();
    let r = stackback(&["verify", "latest"], &env);
    assert_eq!(r.code, 3, "a damaged index passed verify: {}", r.all());

    // Restore falls back to the index inside the archive, which is intact.
    let target = bucket_name("fromarchive");
    let r = stackback(
        &[
            "restore",
            "objects",
            "latest",
            "--bucket",
            &target,
            "--create-bucket",
            "--verify",
        ],
        &env,
    );
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(s3.objects(&b, ""), s3.objects(&target, ""));
}

#[test]
fn a_truncated_large_object_is_never_completed_under_its_key() {
    use stackback::archive::IndexEntry;
    let s3 = moto();
    let b = bucket_name("abort");
    s3.tool(&["mkbucket", &b]);
    let cfg = stackback::config::ObjectsConfig {
        endpoint: Some(s3.endpoint.clone()),
        access_key: Some(stackback::redact::Secret::new(&s3.access_key)),
        secret_key: Some(stackback::redact::Secret::new(&s3.secret_key)),
        buckets: vec![b.clone()],
        region: s3.region.into(),
        prefix: None,
        ca_file: None,
        concurrency: 4,
        data_dir: None,
    };
    let meta = IndexEntry {
        key: "big.bin".into(),
        path: "big.bin".into(),
        size: 20 << 20,
        etag: None,
        last_modified: None,
        content_type: None,
        content_encoding: None,
        content_disposition: None,
        content_language: None,
        cache_control: None,
        metadata: Default::default(),
        sha256: String::new(),
        blake3: None,
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let result = rt.block_on(async {
        let client = stackback::s3::client(&cfg, None).unwrap();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        // The archive reader dies after 12 of the object's 20 MiB: its channel just closes.
        tokio::spawn(async move {
            for _ in 0..12 {
                let _ = tx.send(Ok(bytes::Bytes::from(vec![7u8; 1 << 20]))).await;
            }
        });
        stackback::s3::upload::put_large(&client, &b, &meta, rx, false).await
    });
    assert!(
        result.is_err(),
        "a 12 MiB upload of a 20 MiB object succeeded"
    );
    let listed = s3.dump(&b);
    assert!(listed.is_empty(), "{listed:?}");
}

#[test]
fn part_sizes_scale_with_the_object() {
    use stackback::s3::upload::part_size;
    for size in [0u64, 5 << 20, 100 << 30, 1 << 40, 5 << 40] {
        let part = part_size(size) as u64;
        assert!(
            part >= 5 << 20,
            "{size}: parts of {part} bytes are below S3's minimum"
        );
        assert!(
            size.div_ceil(part) <= 10_000,
            "{size}: {} parts, S3 allows 10,000",
            size.div_ceil(part)
        );
    }
}
