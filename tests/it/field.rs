//! Field readiness (issue 14): stackback in the seed's stack as an operator meets it — the stack's
//! `.env` as it is, its compose layout, the seed's names and recipes.

use std::time::Duration;

use crate::deploy_stack::{assert_fits_stack_with, stack, SEED_COMPOSE, SEED_ENV};
use crate::support::notify::{Pushgateway, Receiver};
use crate::support::pg::{Cluster, PASSWORD};
use crate::support::s3::{bucket_name, garage, small_bucket};
use crate::support::*;

/// `install compose` writes an override for the seed's stack, and for a stack that names its
/// services otherwise; both pass the checks the shipped override passes.
#[test]
fn install_compose_fits_the_override_to_the_stack() {
    let tmp = tempfile::tempdir().unwrap();
    let seed = stack(&tmp.path().join("a"), SEED_COMPOSE, SEED_ENV);
    std::fs::remove_file(seed.join("docker-compose.backup.yml")).unwrap();
    let r = stackback(
        &["install", "compose", "--stack-dir", seed.to_str().unwrap()],
        &[],
    );
    assert_eq!(r.code, 0, "{}", r.all());
    let env = std::fs::read_to_string(seed.join(".env")).unwrap();
    assert!(env.starts_with(SEED_ENV), "the stack's lines were changed");
    assert!(env.contains("STACKBACK_NETWORK=schedgen-network"), "{env}");
    assert_fits_stack_with(
        &seed,
        "docker-compose.backup.yml",
        &[],
        &["postgres", "minio"],
    );
    // A second install refuses to overwrite without --force, and adds nothing twice.
    let again = stackback(
        &["install", "compose", "--stack-dir", seed.to_str().unwrap()],
        &[],
    );
    assert_eq!(again.code, 2, "{}", again.all());

    let other = SEED_COMPOSE
        .replace("  postgres:\n", "  db:\n")
        .replace("  minio:\n", "  objects:\n")
        .replace("[postgres, minio]", "[db, objects]")
        .replace("schedgen-network", "backend-net");
    let dir = stack(&tmp.path().join("b"), &other, SEED_ENV);
    std::fs::remove_file(dir.join("docker-compose.backup.yml")).unwrap();
    let r = stackback(
        &["install", "compose", "--stack-dir", dir.to_str().unwrap()],
        &[],
    );
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("PostgreSQL service db"), "{}", r.stdout);
    let config = assert_fits_stack_with(&dir, "docker-compose.backup.yml", &[], &["db", "objects"]);
    assert_eq!(
        config["services"]["backup"]["environment"]["POSTGRES_HOST"], "db",
        "{config:#}"
    );
}

/// The stack's `.env` as it is: `MINIO_ENDPOINT=host:port` with `MINIO_USE_SSL=false`, and the
/// app's `postgresql+asyncpg://` URL (its own user and database) beside `POSTGRES_*`.
#[test]
fn a_run_with_the_stacks_env_backs_up_the_right_database_and_bucket() {
    let c = cluster();
    let db = c.seeded_db("stackenv");
    let s3 = garage();
    let b = small_bucket(s3);
    let tmp = tempfile::tempdir().unwrap();
    let hostport = s3.endpoint.trim_start_matches("http://").to_string();
    let env = with(
        c.env(&db, tmp.path()),
        &[
            ("MINIO_ENDPOINT", hostport.as_str()),
            ("MINIO_USE_SSL", "false"),
            ("MINIO_ROOT_USER", &s3.access_key),
            ("MINIO_ROOT_PASSWORD", &s3.secret_key),
            ("MINIO_REGION", s3.region),
            ("MINIO_BUCKET", &b),
            (
                "DATABASE_URL",
                "postgresql+asyncpg://app_user:app_pw@db.invalid:5432/app_db",
            ),
        ],
    );
    let cfg = stackback(&["config"], &env);
    assert_eq!(cfg.code, 0, "{}", cfg.all());
    assert!(cfg.stderr.contains("POSTGRES_DB wins"), "{}", cfg.all());
    let r = stackback(&["run"], &env);
    assert_eq!(r.code, 0, "{}", r.all());
    let rec = only_record(tmp.path());
    assert_eq!(rec["artifacts"][0]["source"], db.as_str());
    assert_eq!(rec["artifacts"][1]["source"], b.as_str());
}

/// A setting a command does not use never blocks it: email alerts without an SMTP host, an S3
/// endpoint without credentials.
#[test]
fn list_verify_status_and_restore_work_beside_an_incomplete_setting() {
    let c = cluster();
    let db = c.seeded_db("incident");
    let tmp = tempfile::tempdir().unwrap();
    let env = c.env(&db, tmp.path());
    assert_eq!(stackback(&["run"], &env).code, 0);
    let broken = with(
        env,
        &[
            ("BACKUP_ALERT_EMAIL", "ops@example.com"),
            ("MINIO_ENDPOINT", "http://minio:9000"),
            ("BACKUP_SCHEDULE", "every night"),
        ],
    );
    for args in [
        vec!["list"],
        vec!["list", "--json"],
        vec!["verify", "latest"],
        vec!["status"],
    ] {
        let r = stackback(&args, &broken);
        assert_eq!(r.code, 0, "{args:?}: {}", r.all());
    }
    let target = Cluster::unique("incident_copy");
    let r = stackback(
        &[
            "restore",
            "db",
            "latest",
            "--target-db",
            &target,
            "--create",
        ],
        &broken,
    );
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(c.table_digests(&db), c.table_digests(&target));
    // What does use them says so, naming the setting.
    let r = stackback(&["alert", "test"], &broken);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("smtp.host"), "{}", r.all());
}

/// The seed's restore recipe, verbatim (`gunzip -c FILE | psql -U schedgen -d schedgen`), over the
/// live database whose rows changed since the backup, brings back the backed-up state.
#[test]
fn the_seeds_restore_recipe_restores_over_a_live_database() {
    let c = cluster();
    let db = c.seeded_db("recipe");
    let tmp = tempfile::tempdir().unwrap();
    let env = c.env(&db, tmp.path());
    assert_eq!(stackback(&["run"], &env).code, 0);
    let at_backup = c.table_digests(&db);
    c.psql(
        &db,
        "INSERT INTO users (email, name, created_at) SELECT 'late' || g || '@example.com', 'late', \
         '2026-01-01' FROM generate_series(1, 50) g; \
         UPDATE orders SET total = total + 1 WHERE id % 3 = 0; \
         DELETE FROM orders WHERE id % 7 = 0",
    )
    .unwrap();
    assert_ne!(c.table_digests(&db), at_backup);
    let file = tmp.path().join(&artifacts(tmp.path())[0]);
    let script = format!(
        "gunzip -c {} | {} -h 127.0.0.1 -p {} -U postgres -d {db}",
        shell_quote(&file),
        c.bin.join("psql").display(),
        c.port
    );
    let out = std::process::Command::new("bash")
        .args(["-c", &script])
        .env("PGPASSWORD", PASSWORD)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let errors = String::from_utf8_lossy(&out.stderr);
    assert!(!errors.contains("ERROR"), "{errors}");
    assert_eq!(c.table_digests(&db), at_backup);
}

/// The seed's metric names reach the Pushgateway under the seed's job, with a stable instance;
/// the first round's group (job `stackback`) is deleted so it cannot alert forever.
#[test]
fn metrics_carry_the_seeds_names_and_job() {
    let c = cluster();
    let tmp = tempfile::tempdir().unwrap();
    let pgw = Pushgateway::start();
    let old = format!(
        "{}/metrics/job/stackback/instance/schedgen-backup",
        pgw.url()
    );
    let put = std::process::Command::new("curl")
        .args(["-sf", "--data-binary", "@-", "-X", "PUT", &old])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut p| {
            use std::io::Write;
            p.stdin
                .take()
                .unwrap()
                .write_all(b"backup_success{type=\"database\"} 0\n")?;
            p.wait()
        })
        .unwrap();
    assert!(put.success());
    let env = with(
        c.env(&c.seeded_db("seednames"), tmp.path()),
        &[
            (
                "BACKUP_PUSHGATEWAY_URL",
                &format!("{}/metrics/job/backup", pgw.url()),
            ),
            ("BACKUP_INSTANCE", "schedgen-backup"),
        ],
    );
    assert_eq!(stackback(&["run"], &env).code, 0);
    let text = sh(&format!("curl -sf {}/metrics", pgw.url()));
    let line = |name: &str| {
        text.lines()
            .find(|l| {
                l.starts_with(&format!("{name}{{"))
                    && l.contains("job=\"backup\"")
                    && l.contains("instance=\"schedgen-backup\"")
                    && l.contains("type=\"database\"")
            })
            .map(String::from)
    };
    assert!(
        line("backup_success").is_some_and(|l| l.ends_with(" 1")),
        "{text}"
    );
    assert!(line("backup_last_success_timestamp").is_some(), "{text}");
    assert!(
        line("backup_last_success_timestamp_seconds").is_some(),
        "{text}"
    );
    assert!(
        !text.contains("job=\"stackback\""),
        "the first round's group is still there: {text}"
    );
}

/// A daemon started beside a database that does not answer says so within its start-up grace:
/// in the log, on /healthz, and with an alert — not at the first scheduled run.
#[test]
fn the_daemon_reports_a_broken_setup_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let hook = Receiver::start();
    let closed = ClosedPort::new();
    let port = free_port();
    let env = vec![
        ("POSTGRES_HOST".to_string(), "127.0.0.1".to_string()),
        ("POSTGRES_PORT".to_string(), closed.port.to_string()),
        ("BACKUP_DIR".to_string(), tmp.path().display().to_string()),
        ("BACKUP_STARTUP_GRACE".to_string(), "3s".to_string()),
        ("BACKUP_SCHEDULE".to_string(), "0 2 1 1 *".to_string()),
        ("BACKUP_HTTP_ADDR".to_string(), format!("127.0.0.1:{port}")),
        ("BACKUP_ALERT_WEBHOOK_URL".to_string(), hook.url("/hook")),
    ];
    let mut child = stackback_cmd(&["daemon"], &env)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let health = || {
        sh(&format!(
            "curl -s -w ' %{{http_code}}' http://127.0.0.1:{port}/healthz || true"
        ))
    };
    wait_until(
        Duration::from_secs(60),
        "/healthz to report the broken setup",
        || {
            let h = health();
            h.ends_with(" 503") && h.contains("broken setup") && h.contains("database")
        },
    );
    let alerts = hook.wait_for(1);
    assert!(
        alerts[0]["body"]
            .as_str()
            .unwrap_or("")
            .contains("setup check"),
        "{alerts:?}"
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// `restore volume` on a bucket archive made through the S3 API points to `restore objects`.
#[test]
fn restore_volume_refuses_an_api_mode_archive() {
    let c = cluster();
    let s3 = garage();
    let b = bucket_name("apimode");
    s3.tool(&["mkbucket", &b]);
    s3.tool(&["put", &b, "a.txt", "abc"]);
    let tmp = tempfile::tempdir().unwrap();
    let mut env = c.env(&c.seeded_db("apimode"), tmp.path());
    env.extend(s3.env(&b));
    assert_eq!(stackback(&["run"], &env).code, 0);
    let into = tmp.path().join("into");
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
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("stackback restore objects"),
        "{}",
        r.all()
    );
    assert!(!into.exists(), "nothing is created for a refused restore");
}
