//! `restore db` loading rows over several connections into a database it makes, against a real
//! PostgreSQL: every section of the dump comes back, and a load that fails half-way leaves no
//! database it made behind and the target it would replace as it was.

use crate::support::pg::{Cluster, PASSWORD};
use crate::support::*;

/// A fresh verified backup of `db` in its own directory.
fn backed_up(c: &Cluster, db: &str) -> (tempfile::TempDir, Vec<(String, String)>) {
    let tmp = tempfile::tempdir().unwrap();
    let env = c.env(db, tmp.path());
    let r = stackback(&["run"], &env);
    assert_eq!(r.code, 0, "{}", r.all());
    (tmp, env)
}

/// `restore db latest` into a new database `target` over `jobs` connections.
fn restore_new(env: &[(String, String)], target: &str, jobs: &str) -> Run {
    stackback(
        &[
            "restore",
            "db",
            "latest",
            "--target-db",
            target,
            "--create",
            "--jobs",
            jobs,
        ],
        env,
    )
}

/// A source whose dump has every section, several megabytes of rows (many pieces), an empty
/// table, and text that looks like pg_dump's own lines inside a function body and a comment.
fn tricky_source(c: &Cluster) -> String {
    let db = c.empty_db("par");
    c.psql(
        &db,
        r#"
        CREATE TABLE big (id bigserial PRIMARY KEY, payload text NOT NULL, doc jsonb);
        INSERT INTO big (payload, doc)
            SELECT repeat(md5(g::text), 3) || E'\ttab\nnewline\\backslash',
                   jsonb_build_object('g', g, 'even', g % 2 = 0)
            FROM generate_series(1, 60000) g;
        SELECT setval('big_id_seq', 123456);
        CREATE TABLE child (id int PRIMARY KEY, big_id bigint NOT NULL REFERENCES big (id));
        INSERT INTO child SELECT g, g * 7 FROM generate_series(1, 5000) g;
        CREATE TABLE nothing_here (a int);
        CREATE INDEX big_payload ON big (payload);
        CREATE VIEW big_even AS SELECT id FROM big WHERE (doc ->> 'even')::boolean;
        CREATE FUNCTION tricky() RETURNS text LANGUAGE sql AS $f$
SELECT 'x
COPY public.big (id, payload, doc) FROM stdin;
SET default_tablespace = nowhere;
\.
'::text
$f$;
        COMMENT ON TABLE child IS 'two lines;
COPY public.child (id, big_id) FROM stdin;';
        "#,
    )
    .unwrap();
    db
}

#[test]
fn a_parallel_restore_brings_back_every_section_of_the_dump() {
    let c = cluster();
    let src = tricky_source(c);
    let (_tmp, env) = backed_up(c, &src);

    let target = Cluster::unique("par_copy");
    let r = restore_new(&env, &target, "3");
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains("3 tables, 65000 rows"),
        "the rows counted from the dump: {}",
        r.stdout
    );
    // Several megabytes of rows travel in half-megabyte pieces: more than one connection took
    // some (the count is of connections that loaded rows, not of those opened).
    let over = r
        .stdout
        .split(" connections")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse::<usize>().ok());
    assert!(
        matches!(over, Some(2..=3)),
        "connections that loaded rows: {}",
        r.stdout
    );
    assert_eq!(c.table_digests(&src), c.table_digests(&target));
    assert_eq!(c.normalized_dump(&src), c.normalized_dump(&target));
    assert_eq!(
        c.psql(&target, "select tricky()").unwrap(),
        c.psql(&src, "select tricky()").unwrap()
    );
    assert_eq!(
        c.psql(&target, "select last_value from big_id_seq")
            .unwrap(),
        "123456"
    );
    assert_eq!(
        c.psql(&target, "select count(*) from big_even").unwrap(),
        "30000"
    );

    // --jobs 1 loads through psql alone, in one transaction, to the same data.
    let serial = Cluster::unique("par_serial");
    let r = restore_new(&env, &serial, "1");
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains("over 1 connection (one transaction)"),
        "{}",
        r.stdout
    );
    assert_eq!(c.table_digests(&src), c.table_digests(&serial));
}

#[test]
fn a_parallel_load_that_fails_half_way_leaves_nothing_it_made() {
    let c = cluster();
    // A CHECK that passes for the role that made the rows and fails for the role that restores
    // them: the schema loads, many rows of `fine` load, then the rows of `picky` are refused.
    let restorer = Cluster::unique("restorer");
    c.psql(
        "postgres",
        &format!("CREATE ROLE {restorer} LOGIN SUPERUSER PASSWORD '{PASSWORD}'"),
    )
    .unwrap();
    let src = c.empty_db("parfail");
    c.psql(
        &src,
        &format!(
            "CREATE TABLE fine (id int PRIMARY KEY, pad text);
             INSERT INTO fine SELECT g, repeat('x', 100) FROM generate_series(1, 50000) g;
             CREATE TABLE picky (id int CHECK (id < 100 OR current_user <> '{restorer}'));
             INSERT INTO picky SELECT generate_series(1, 1000);"
        ),
    )
    .unwrap();
    let (_tmp, env) = backed_up(c, &src);
    let url = |db: &str| {
        format!(
            "postgresql://{restorer}:{PASSWORD}@127.0.0.1:{}/{db}",
            c.port
        )
    };
    let exists = |db: &str| {
        c.psql(
            "postgres",
            &format!("select count(*) from pg_database where datname like '{db}%'"),
        )
        .unwrap()
    };

    // Into a database the restore creates: it is dropped with whatever was loaded.
    let made = Cluster::unique("parfail_new");
    let r = stackback(
        &[
            "restore",
            "db",
            "latest",
            "--target-url",
            &url(&made),
            "--create",
            "--jobs",
            "2",
        ],
        &env,
    );
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stderr.contains("picky_id_check") && r.stderr.contains("public.picky"),
        "the error names the table and the constraint: {}",
        r.stderr
    );
    assert_eq!(exists(&made), "0", "the database the restore made was left");

    // Beside a target with data (--clean): the target stays as it was, no scratch is left.
    let target = c.empty_db("parfail_live");
    c.psql(
        &target,
        "CREATE TABLE live (a int); INSERT INTO live VALUES (1), (2)",
    )
    .unwrap();
    let before = c.table_digests(&target);
    let r = stackback(
        &[
            "restore",
            "db",
            "latest",
            "--target-url",
            &url(&target),
            "--clean",
            "--yes",
            "--jobs",
            "2",
        ],
        &env,
    );
    assert_eq!(r.code, 1, "{}", r.all());
    assert_eq!(c.table_digests(&target), before, "the target was changed");
    let scratch = c
        .psql(
            "postgres",
            &format!("select count(*) from pg_database where datname like '{target}%' and datname <> '{target}'"),
        )
        .unwrap();
    assert_eq!(scratch, "0", "a scratch database was left");

    // The same backup restores as the role that made it.
    let ok = Cluster::unique("parfail_ok");
    let r = restore_new(&env, &ok, "2");
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(c.table_digests(&src), c.table_digests(&ok));
}

#[test]
fn a_signal_mid_load_drops_the_database_the_restore_made() {
    let c = cluster();
    // Each row passes a CHECK that sleeps: the load takes seconds, long enough to be stopped.
    let src = c.empty_db("parsig");
    c.psql(
        &src,
        "CREATE FUNCTION slow_ok(int) RETURNS boolean LANGUAGE plpgsql AS $$ BEGIN RETURN true; END $$; \
         CREATE TABLE slow (x int CHECK (public.slow_ok(x))); \
         INSERT INTO slow SELECT generate_series(1, 1000); \
         CREATE OR REPLACE FUNCTION slow_ok(int) RETURNS boolean LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(0.02); RETURN true; END $$",
    )
    .unwrap();
    let (_tmp, env) = backed_up(c, &src);

    for signal in [libc::SIGINT, libc::SIGTERM] {
        let target = Cluster::unique("parsig_new");
        let child = stackback_cmd(
            &[
                "restore",
                "db",
                "latest",
                "--target-db",
                &target,
                "--create",
                "--jobs",
                "2",
            ],
            &env,
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
        wait_until(
            std::time::Duration::from_secs(60),
            "rows loading into the new database",
            || {
                c.psql(
                    "postgres",
                    &format!("select count(*) from pg_stat_activity where datname like '{target}%' and query like 'COPY %' and state = 'active'"),
                )
                .unwrap()
                    != "0"
            },
        );
        // The rows go into a scratch name: the target's name appears only once all is in.
        assert_eq!(
            c.psql(
                "postgres",
                &format!("select count(*) from pg_database where datname = '{target}'"),
            )
            .unwrap(),
            "0",
            "a half-loaded database under the target's name"
        );
        unsafe {
            libc::kill(child.id() as i32, signal);
        }
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("received") && stderr.contains("was dropped"),
            "{stderr}"
        );
        assert_eq!(
            c.psql(
                "postgres",
                &format!("select count(*) from pg_database where datname like '{target}%'"),
            )
            .unwrap(),
            "0",
            "the half-loaded database was left"
        );
    }
}
