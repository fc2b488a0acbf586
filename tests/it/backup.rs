//! `stackback run` against a real PostgreSQL: round trips through the seed's restore recipe, run
//! records, permissions, configuration output.

use std::path::Path;

use crate::support::*;

fn round_trip(compression: Option<&str>, suffix: &str, decompress: &str) {
    let c = cluster();
    let db = c.seeded_db("rt");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("backups");
    let mut args = vec!["run"];
    if let Some(comp) = compression {
        args.extend(["--compression", comp]);
    }
    let r = stackback(&args, &c.env(&db, &dir));
    assert_eq!(r.code, 0, "{}", r.all());

    let arts = artifacts(&dir);
    assert_eq!(arts.len(), 1, "{arts:?}");
    let name = &arts[0];
    assert!(
        name.starts_with(&format!("db_{db}_")) && name.ends_with(suffix),
        "{name}"
    );
    let id = &name[format!("db_{db}_").len()..name.len() - suffix.len()];
    assert_eq!(id.len(), 15, "{id}");
    let rec = only_record(&dir);
    assert_eq!(rec["status"], "ok");
    assert_eq!(rec["run_id"], id);
    assert_eq!(rec["artifacts"][0]["file"], name.as_str());
    assert_eq!(rec["artifacts"][0]["verification"]["ok"], true);
    assert!(rec["server_version"]
        .as_str()
        .unwrap()
        .starts_with(char::is_numeric));
    assert!(rec["pg_dump_version"].is_string());

    assert_list_matches_disk(&dir, &c.env(&db, &dir));
    let target = c.empty_db("restored");
    let out = c.restore_with_shell(&dir.join(name), &target, decompress);
    assert!(
        out.status.success(),
        "restore failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    c.assert_same_data(&db, &target);
}

#[test]
fn gzip_backup_restores_with_the_seeds_recipe_to_identical_data() {
    round_trip(None, ".sql.gz", "gunzip -c");
}

#[test]
fn zstd_backup_round_trips() {
    round_trip(Some("zstd"), ".sql.zst", "zstd -dc");
}

#[test]
fn uncompressed_backup_round_trips() {
    round_trip(Some("none"), ".sql", "cat");
}

#[test]
fn artifacts_pass_independent_checks_and_are_private() {
    let c = cluster();
    let db = c.seeded_db("perm");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("new/backups");
    // A permissive umask must not leak into the backup's permissions.
    let r = {
        let mut cmd = stackback_cmd(&["run"], &c.env(&db, &dir));
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                libc::umask(0);
                Ok(())
            });
        }
        cmd.output().unwrap()
    };
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(mode(&dir), 0o700);
    for f in files(&dir) {
        if f.starts_with(".stackback.lock") {
            continue;
        }
        assert_eq!(mode(&dir.join(&f)), 0o600, "{f}");
    }
    let art = dir.join(&artifacts(&dir)[0]);
    let (ok, out) = tool("gunzip", &["-t", art.to_str().unwrap()]);
    assert!(ok, "gunzip -t: {out}");
    // The seed's "inspect" step: the head of the dump is readable SQL.
    let (ok, head) = tool(
        "bash",
        &[
            "-c",
            &format!("gunzip -c {} | head -n 50", shell_quote(&art)),
        ],
    );
    assert!(ok && head.contains("PostgreSQL database dump"), "{head}");
    let rec = only_record(&dir);
    let sha = rec["artifacts"][0]["stored_sha256"]
        .as_str()
        .unwrap()
        .to_string();
    let (ok, out) = tool("sha256sum", &[art.to_str().unwrap()]);
    assert!(
        ok && out.starts_with(&sha),
        "sha256sum {out} vs record {sha}"
    );
}

/// Two runs that start in the same second: the clock of both is set to the same second (the
/// second run starts while the first's id is taken), so the collision path runs every time.
#[test]
fn two_quick_runs_never_share_an_id() {
    let c = cluster();
    let db = c.seeded_db("twice");
    let tmp = tempfile::tempdir().unwrap();
    let env = faked_clock(&c.env(&db, tmp.path()), "@2020-01-01 00:00:00");
    for _ in 0..2 {
        let r = stackback(&["run"], &env);
        assert_eq!(r.code, 0, "{}", r.all());
    }
    let ids: Vec<String> = records(tmp.path())
        .iter()
        .map(|r| r["run_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, ["20200101_000000", "20200101_000001"]);
    assert_eq!(
        artifacts(tmp.path()),
        [
            format!("db_{db}_20200101_000000.sql.gz"),
            format!("db_{db}_20200101_000001.sql.gz")
        ]
    );
    let r = stackback(&["verify", "--all"], &c.env(&db, tmp.path()));
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("2 verified, 0 failed"), "{}", r.stdout);
}

#[test]
fn globals_are_dumped_without_role_passwords_when_asked() {
    let c = cluster();
    let db = c.seeded_db("glob");
    c.psql(
        "postgres",
        "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'app_reader') \
         THEN CREATE ROLE app_reader LOGIN PASSWORD 'reader-pw'; END IF; END $$",
    )
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut env = c.env(&db, tmp.path());
    env.push(("BACKUP_GLOBALS".into(), "true".into()));
    let r = stackback(&["run"], &env);
    assert_eq!(r.code, 0, "{}", r.all());
    let globals: Vec<String> = artifacts(tmp.path())
        .into_iter()
        .filter(|f| f.starts_with("globals_"))
        .collect();
    assert_eq!(globals.len(), 1);
    let (ok, text) = tool(
        "bash",
        &[
            "-c",
            &format!("gunzip -c {}", shell_quote(&tmp.path().join(&globals[0]))),
        ],
    );
    assert!(ok);
    assert!(text.contains("CREATE ROLE app_reader"), "{text}");
    assert!(
        !text.contains("SCRAM-SHA-256$"),
        "role password leaked into the globals dump"
    );
    assert_eq!(
        only_record(tmp.path())["artifacts"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn database_url_alone_is_enough_and_its_password_never_shows() {
    let c = cluster();
    let db = c.seeded_db("url");
    let tmp = tempfile::tempdir().unwrap();
    let env = vec![
        (
            "DATABASE_URL".to_string(),
            format!("postgresql://postgres:{PASSWORD}@127.0.0.1:{}/{db}", c.port),
        ),
        ("BACKUP_DIR".to_string(), tmp.path().display().to_string()),
    ];
    let r = stackback(&["run"], &env);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(!r.all().contains(PASSWORD));
    let cfg = stackback(&["config"], &env);
    assert_eq!(cfg.code, 0);
    assert!(!cfg.all().contains(PASSWORD), "{}", cfg.stdout);
    assert!(cfg.stdout.contains("postgres.url"), "{}", cfg.stdout);
    assert!(cfg.stdout.contains("env DATABASE_URL"), "{}", cfg.stdout);
    let help = stackback(&["--help"], &env);
    assert!(!help.all().contains(PASSWORD));
}

#[test]
fn config_shows_sources_and_redacts_secrets() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("stackback.toml");
    std::fs::write(&file, "[backup]\nretention_days = 14\n").unwrap();
    let env = vec![
        (
            "POSTGRES_PASSWORD".to_string(),
            "do-not-print-me".to_string(),
        ),
        ("STACKBACK_CONFIG".to_string(), file.display().to_string()),
    ];
    let r = stackback(&["config", "--backup-dir", "/srv/b"], &env);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(!r.stdout.contains("do-not-print-me"));
    let line = |key: &str| {
        r.stdout
            .lines()
            .find(|l| l.starts_with(key))
            .unwrap()
            .to_string()
    };
    assert!(line("postgres.password").contains("***"));
    assert!(line("postgres.password").contains("env POSTGRES_PASSWORD"));
    assert!(
        line("backup.retention_days").contains("14")
            && line("backup.retention_days").contains("file ")
    );
    assert!(
        line("backup.dir").contains("/srv/b") && line("backup.dir").contains("flag --backup-dir")
    );
    assert!(line("postgres.host").contains("default"));

    std::fs::write(&file, "[backup]\nretention = 14\n").unwrap();
    let r = stackback(&["config"], &env);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("backup.retention"), "{}", r.stderr);
}

#[test]
fn an_empty_database_backs_up_when_the_threshold_allows_it() {
    let c = cluster();
    let db = c.empty_db("empty");
    let tmp = tempfile::tempdir().unwrap();
    let mut env = c.env(&db, tmp.path());
    // An empty database compresses below the seed's 1 KiB minimum: the check must say so...
    let r = stackback(&["run"], &env);
    assert_eq!(r.code, 3, "{}", r.all());
    assert!(r.stderr.contains("minimum"), "{}", r.stderr);
    assert!(artifacts(tmp.path()).is_empty());
    // ...and a threshold of 0 accepts it.
    env.push(("BACKUP_MIN_DB_BYTES".into(), "0".into()));
    let r = stackback(&["run"], &env);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(artifacts(tmp.path()).len(), 1);
}

#[test]
fn secrets_from_files_work_like_docker_secrets() {
    let c = cluster();
    let db = c.seeded_db("secretfile");
    let tmp = tempfile::tempdir().unwrap();
    let pw = tmp.path().join("pg_password");
    std::fs::write(&pw, format!("{PASSWORD}\n")).unwrap();
    let mut env: Vec<(String, String)> = c
        .env(&db, &tmp.path().join("b"))
        .into_iter()
        .filter(|(k, _)| k != "POSTGRES_PASSWORD")
        .collect();
    env.push(("POSTGRES_PASSWORD_FILE".into(), pw.display().to_string()));
    let r = stackback(&["run"], &env);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(Path::new(&tmp.path().join("b")).is_dir());
}
