use super::*;
use crate::error::exit;
use crate::pipeline::Compression;

fn env(pairs: &[(&str, &str)]) -> LoadInput {
    LoadInput {
        env: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..LoadInput::default()
    }
}

fn load(pairs: &[(&str, &str)]) -> Config {
    Config::load(&env(pairs)).unwrap()
}

fn source_of(cfg: &Config, key: Key) -> Source {
    cfg.settings().resolved()[key as usize].source.clone()
}

#[test]
fn defaults_match_the_seed() {
    let cfg = load(&[]);
    let pg = cfg.postgres().unwrap();
    assert_eq!(pg.host, "localhost");
    assert_eq!(pg.port, 5432);
    assert_eq!(pg.db, "postgres");
    assert_eq!(cfg.backup_dir(), PathBuf::from("./backups"));
    assert_eq!(cfg.retention().unwrap().policy.days, 7);
    assert_eq!(cfg.store().unwrap().compression, Compression::Gzip);
    let th = cfg.thresholds().unwrap();
    assert_eq!((th.min_db_bytes, th.min_objects_bytes), (1024, 512));
    cfg.require(&Section::ALL).unwrap();
}

#[test]
fn layers_apply_in_order_and_record_their_source() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.toml");
    std::fs::write(&file, "[postgres]\nhost = \"filehost\"\nport = 6000\n[backup]\ndir = \"/b\"\ncompression = \"zstd\"\n").unwrap();
    let mut input = env(&[("POSTGRES_PORT", "7000"), ("BACKUP_DIR", "/envdir")]);
    input.file = Some(file.clone());
    input
        .flags
        .push((Key::BackupDir, "/flagdir".into(), "--backup-dir"));
    let cfg = Config::load(&input).unwrap();
    assert_eq!(cfg.postgres().unwrap().host, "filehost");
    assert_eq!(source_of(&cfg, Key::PostgresHost), Source::File(file));
    assert_eq!(cfg.postgres().unwrap().port, 7000);
    assert_eq!(
        source_of(&cfg, Key::PostgresPort),
        Source::Env("POSTGRES_PORT".into())
    );
    assert_eq!(cfg.backup_dir(), PathBuf::from("/flagdir"));
    assert_eq!(
        source_of(&cfg, Key::BackupDir),
        Source::Flag("--backup-dir".into())
    );
    assert_eq!(cfg.store().unwrap().compression, Compression::Zstd);
}

#[test]
fn unknown_keys_and_bad_values_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.toml");
    std::fs::write(&file, "[postgres]\nhots = \"x\"\n").unwrap();
    let mut input = env(&[]);
    input.file = Some(file);
    let err = Config::load(&input).unwrap_err().to_string();
    assert!(err.contains("postgres.hots"), "{err}");

    let bad = |pairs: &[(&str, &str)], section: Section, key: &str| {
        let err = load(pairs).require(&[section]).unwrap_err();
        assert_eq!(err.exit_code(), exit::USAGE);
        assert!(err.to_string().contains(key), "{err}");
    };
    bad(
        &[("POSTGRES_PORT", "abc")],
        Section::Postgres,
        "postgres.port",
    );
    bad(
        &[("BACKUP_COMPRESSION", "lz4")],
        Section::Store,
        "backup.compression",
    );
    bad(
        &[("TZ", "Mars/Base")],
        Section::Retention,
        "backup.timezone",
    );
    bad(
        &[("BACKUP_RETENTION_DAYS", "-1")],
        Section::Retention,
        "backup.retention_days",
    );
}

#[test]
fn an_empty_retention_policy_is_refused_when_loaded() {
    let cfg = load(&[("BACKUP_RETENTION_DAYS", "0")]);
    let err = cfg.retention().unwrap_err();
    assert!(
        err.to_string().contains("backup.retention_days")
            && err.to_string().contains("empty retention policy"),
        "{err}"
    );
    assert!(
        load(&[("BACKUP_RETENTION_DAYS", "0"), ("BACKUP_KEEP_LAST", "3")])
            .retention()
            .is_ok()
    );
}

#[test]
fn each_section_is_validated_only_when_used() {
    // An email alert without an SMTP server breaks alerts, not the rest.
    let cfg = load(&[
        ("BACKUP_ALERT_EMAIL", "ops@example.com"),
        ("MINIO_ENDPOINT", "http://m:9000"),
    ]);
    assert!(cfg.notify().unwrap_err().to_string().contains("smtp.host"));
    assert!(cfg.objects().is_err());
    cfg.require(&[
        Section::Postgres,
        Section::Thresholds,
        Section::Retention,
        Section::Status,
    ])
    .unwrap();
}

#[test]
fn secrets_come_from_files_with_one_newline_trimmed() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("pw");
    std::fs::write(&f, "s3cret \n").unwrap();
    let cfg = load(&[("POSTGRES_PASSWORD_FILE", f.to_str().unwrap())]);
    assert_eq!(
        cfg.postgres().unwrap().password.as_ref().unwrap().expose(),
        "s3cret "
    );
    let shown = &cfg.settings().resolved()[Key::PostgresPassword as usize];
    assert_eq!(shown.display_value(), "***");
    assert_eq!(
        shown.source,
        Source::EnvFile("POSTGRES_PASSWORD_FILE".into())
    );

    let err = Config::load(&env(&[
        ("POSTGRES_PASSWORD", "a"),
        ("POSTGRES_PASSWORD_FILE", f.to_str().unwrap()),
    ]))
    .unwrap_err();
    assert!(err.to_string().contains("both"));
}

#[test]
fn the_apps_database_url_fills_what_postgres_settings_leave_unset() {
    let cfg = load(&[
        ("POSTGRES_USER", "schedgen"),
        ("POSTGRES_DB", "schedgen"),
        (
            "DATABASE_URL",
            "postgresql+asyncpg://app:p%40ss@db.internal:6543/appdb?sslmode=require",
        ),
    ]);
    let pg = cfg.postgres().unwrap();
    // Explicit POSTGRES_* win; the URL fills the rest.
    assert_eq!((pg.user.as_str(), pg.db.as_str()), ("schedgen", "schedgen"));
    assert_eq!((pg.host.as_str(), pg.port), ("db.internal", 6543));
    assert_eq!(pg.password.as_ref().unwrap().expose(), "p@ss");
    assert_eq!(pg.sslmode, Some(SslMode::Require));
    let w = cfg.warnings().join("\n");
    assert!(
        w.contains("POSTGRES_USER wins") && w.contains("POSTGRES_DB wins"),
        "{w}"
    );
    let shown = &cfg.settings().resolved()[Key::PostgresUrl as usize];
    assert!(!shown.display_value().contains("p%40ss"));
    assert_eq!(
        cfg.redactor().redact("login p@ss failed"),
        "login *** failed"
    );
}

#[test]
fn the_backup_url_wins_over_everything() {
    let cfg = load(&[
        ("POSTGRES_USER", "schedgen"),
        ("DATABASE_URL", "postgresql+asyncpg://app:x@db/app"),
        (
            "BACKUP_DATABASE_URL",
            "postgres://backup:y@replica:5433/schedgen",
        ),
    ]);
    let pg = cfg.postgres().unwrap();
    assert_eq!(
        (pg.user.as_str(), pg.host.as_str(), pg.port, pg.db.as_str()),
        ("backup", "replica", 5433, "schedgen")
    );
    assert_eq!(pg.password.as_ref().unwrap().expose(), "y");
}

#[test]
fn minio_endpoints_as_the_sdk_convention_gives_them() {
    let ep = |pairs: &[(&str, &str)]| {
        let mut all = vec![("MINIO_ACCESS_KEY", "a"), ("MINIO_SECRET_KEY", "b")];
        all.extend_from_slice(pairs);
        load(&all).objects().map(|o| o.endpoint.clone().unwrap())
    };
    assert_eq!(
        ep(&[("MINIO_ENDPOINT", "minio:9000")]).unwrap(),
        "http://minio:9000"
    );
    assert_eq!(
        ep(&[("MINIO_ENDPOINT", "minio:9000"), ("MINIO_USE_SSL", "true")]).unwrap(),
        "https://minio:9000"
    );
    assert_eq!(
        ep(&[("MINIO_ENDPOINT", "minio"), ("MINIO_PORT", "9000")]).unwrap(),
        "http://minio:9000"
    );
    assert_eq!(
        ep(&[
            ("MINIO_ENDPOINT", "http://minio:9000"),
            ("MINIO_PORT", "9999")
        ])
        .unwrap(),
        "http://minio:9000"
    );
    let cfg = load(&[("MINIO_ENDPOINT", "minio:9000"), ("MINIO_PORT", "9999")]);
    assert!(cfg.warnings().join(" ").contains("endpoint's port is used"));
    assert!(ep(&[("MINIO_ENDPOINT", "ftp://m")]).is_err());
}

#[test]
fn bucket_settings_accept_the_minio_images_names() {
    let cfg = load(&[
        ("MINIO_ENDPOINT", "http://minio:9000"),
        ("MINIO_ROOT_USER", "admin"),
        ("MINIO_ROOT_PASSWORD", "adminsecret"),
        ("MINIO_BUCKET", "pdfs, avatars"),
    ]);
    let o = cfg.objects().unwrap();
    assert!(o.s3_enabled());
    assert_eq!(o.buckets, vec!["pdfs", "avatars"]);
    assert_eq!(o.region, "us-east-1");
    assert_eq!(o.concurrency, 16);
    assert_eq!(cfg.redactor().redact("key adminsecret"), "key ***");
    let err = load(&[("MINIO_ENDPOINT", "http://m:9000"), ("MINIO_BUCKET", "b")])
        .objects()
        .unwrap_err()
        .to_string();
    assert!(err.contains("MINIO_ACCESS_KEY"), "{err}");
    let err = load(&[("MINIO_ENDPOINT", "ftp://m")])
        .objects()
        .unwrap_err()
        .to_string();
    assert!(err.contains("minio.endpoint"), "{err}");
}

#[test]
fn a_target_url_for_another_server_gets_no_password_it_was_not_given() {
    let cfg = load(&[("POSTGRES_HOST", "db1"), ("POSTGRES_PASSWORD", "source-pw")]);
    let pg = cfg.postgres().unwrap();
    let other = pg.with_url("postgres://u@db2/x").unwrap();
    assert!(other.password.is_none());
    let same = pg.with_url("postgres://u@db1/x").unwrap();
    assert_eq!(same.password.unwrap().expose(), "source-pw");
    let given = pg.with_url("postgres://u:theirs@db2/x").unwrap();
    assert_eq!(given.password.unwrap().expose(), "theirs");
}

#[test]
fn the_seeds_push_url_names_the_group() {
    let t = |pairs: &[(&str, &str)]| load(pairs).notify().unwrap().pushgateway.clone().unwrap();
    let seed = t(&[(
        "BACKUP_PUSHGATEWAY_URL",
        "http://prometheus:9090/metrics/job/backup",
    )]);
    assert_eq!(seed.base, "http://prometheus:9090");
    assert_eq!(seed.job, "backup");
    let plain = t(&[
        ("BACKUP_PUSHGATEWAY_URL", "http://pgw:9091/"),
        ("BACKUP_INSTANCE", "schedgen-backup"),
    ]);
    assert_eq!(
        plain.url(),
        "http://pgw:9091/metrics/job/backup/instance/schedgen-backup"
    );
    let own = t(&[
        (
            "BACKUP_PUSHGATEWAY_URL",
            "http://pgw:9091/metrics/job/other/instance/x",
        ),
        ("BACKUP_PUSHGATEWAY_JOB", "mine"),
    ]);
    assert_eq!((own.job.as_str(), own.instance.as_str()), ("mine", "x"));
}

#[test]
fn database_names_cannot_escape_the_backup_dir() {
    assert!(load(&[("POSTGRES_DB", "../etc")]).postgres().is_err());
}
