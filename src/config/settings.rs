//! The settings table: every value stackback reads, with its TOML key, the environment names that
//! set it (the seed's and the official images' names first), whether it is a secret, its default
//! and a line of help. [`Key`] names a row, so a typo in a lookup is a compile error.

/// One configurable value.
#[derive(Debug)]
pub struct Setting {
    pub id: Key,
    /// `section.name`, as written in the TOML file.
    pub key: &'static str,
    /// Environment variables that set it, highest precedence first.
    pub env: &'static [&'static str],
    pub secret: bool,
    pub default: Option<&'static str>,
    pub help: &'static str,
}

macro_rules! settings {
    ($( $id:ident => $key:literal, [$($env:literal),*], $secret:literal, $default:expr, $help:literal; )*) => {
        /// A row of [`SETTINGS`].
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Key { $( $id, )* }

        /// Every setting stackback reads, in display order.
        pub const SETTINGS: &[Setting] = &[
            $( Setting { id: Key::$id, key: $key, env: &[$($env),*], secret: $secret, default: $default, help: $help }, )*
        ];
    };
}

impl Key {
    pub fn setting(self) -> &'static Setting {
        &SETTINGS[self as usize]
    }

    /// The TOML key, which errors name.
    pub fn name(self) -> &'static str {
        self.setting().key
    }

    /// A configuration error naming this setting by its key and, as operators of a `.env` know
    /// it, by its variable.
    pub fn error(self, message: impl Into<String>) -> crate::error::Error {
        let s = self.setting();
        match s.env.first() {
            Some(var) => crate::error::Error::config(format!("{} ({var})", s.key), message),
            None => crate::error::Error::config(s.key, message),
        }
    }

    pub fn by_name(name: &str) -> Option<Key> {
        SETTINGS.iter().find(|s| s.key == name).map(|s| s.id)
    }
}

settings! {
    PostgresHost => "postgres.host", ["POSTGRES_HOST"], false, Some("localhost"), "database server host name, IP or socket directory";
    PostgresPort => "postgres.port", ["POSTGRES_PORT"], false, Some("5432"), "database server port";
    PostgresUser => "postgres.user", ["POSTGRES_USER"], false, Some("postgres"), "database user for pg_dump";
    PostgresPassword => "postgres.password", ["POSTGRES_PASSWORD"], true, None, "database password (passed to pg_dump via the environment, never argv)";
    PostgresDb => "postgres.db", ["POSTGRES_DB"], false, None, "database to back up (default: the user name)";
    PostgresUrl => "postgres.url", ["DATABASE_URL"], true, None, "the app's URL (postgres://, postgresql+asyncpg://...): fills what POSTGRES_* leave unset";
    BackupDatabaseUrl => "postgres.backup_url", ["BACKUP_DATABASE_URL"], true, None, "a URL for the backup alone: wins over POSTGRES_* and DATABASE_URL for the parts it contains";
    PostgresSslmode => "postgres.sslmode", ["POSTGRES_SSLMODE", "PGSSLMODE"], false, None, "disable | allow | prefer (libpq's default) | require | verify-ca | verify-full";
    PostgresSslrootcert => "postgres.sslrootcert", ["PGSSLROOTCERT"], false, None, "CA certificate (PEM) for verify-ca and verify-full, or `system` (default ~/.postgresql/root.crt)";
    LockWait => "postgres.lock_wait_timeout", ["BACKUP_LOCK_WAIT_TIMEOUT"], false, Some("10m"), "pg_dump waits at most this long for a table lock (--lock-wait-timeout)";
    PgDump => "postgres.pg_dump", ["PG_DUMP_PATH"], false, None, "pg_dump to use (default: the best match among /usr/lib/postgresql/*/bin and PATH)";
    DumpClean => "postgres.dump_clean", ["BACKUP_PG_DUMP_CLEAN"], false, Some("true"), "dumps drop each object before creating it (pg_dump --clean --if-exists), so `gunzip -c | psql` restores over a live database";
    Globals => "postgres.globals", ["BACKUP_GLOBALS"], false, Some("false"), "also dump roles and tablespaces (pg_dumpall --globals-only --no-role-passwords)";
    RowCountExactLimit => "postgres.row_count_exact_limit", ["BACKUP_ROW_COUNT_EXACT_LIMIT"], false, Some("256MiB"), "row counts recorded with each dump are exact (count(*)) for tables up to this heap size, the planner's estimate above; 0: estimates only";
    BackupDir => "backup.dir", ["BACKUP_DIR"], false, Some("./backups"), "directory holding backups and run records";
    Compression => "backup.compression", ["BACKUP_COMPRESSION"], false, Some("gzip"), "gzip | zstd | none";
    CompressionLevel => "backup.compression_level", ["BACKUP_COMPRESSION_LEVEL"], false, None, "gzip 1-9 (default 5), zstd 1-19 (default 1)";
    RetentionDays => "backup.retention_days", ["BACKUP_RETENTION_DAYS"], false, Some("7"), "delete runs older than this many days";
    KeepLast => "backup.keep_last", ["BACKUP_KEEP_LAST"], false, Some("0"), "also keep the newest N good runs";
    KeepDaily => "backup.keep_daily", ["BACKUP_KEEP_DAILY"], false, Some("0"), "also keep the newest good run of each of the last N days";
    KeepWeekly => "backup.keep_weekly", ["BACKUP_KEEP_WEEKLY"], false, Some("0"), "also keep the newest good run of each of the last N ISO weeks";
    KeepMonthly => "backup.keep_monthly", ["BACKUP_KEEP_MONTHLY"], false, Some("0"), "also keep the newest good run of each of the last N months";
    KeepMin => "backup.keep_min", ["BACKUP_KEEP_MIN"], false, Some("1"), "never delete the newest N good runs, however old";
    FailedGrace => "backup.failed_grace", ["BACKUP_FAILED_GRACE"], false, Some("24h"), "leftovers of interrupted runs are removed once this old";
    MaxAge => "backup.max_age", ["BACKUP_MAX_AGE"], false, Some("26h"), "`status --check` fails when the last good backup is older";
    FreeWarn => "backup.min_free_warn_bytes", ["BACKUP_FREE_WARN_BYTES"], false, Some("1GiB"), "`status` warns below this much free space";
    Timezone => "backup.timezone", ["TZ"], false, Some("UTC"), "time zone for the schedule and calendar retention (run ids are always UTC)";
    MinFree => "backup.min_free_bytes", ["BACKUP_MIN_FREE_BYTES"], false, Some("0"), "fail before dumping when the backup volume has less free space (e.g. 2GiB)";
    AgeRecipients => "encryption.age_recipients", ["BACKUP_AGE_RECIPIENTS"], false, None, "encrypt every new artifact to these public keys (comma list of age1..., ssh-ed25519 ..., ssh-rsa ...)";
    AgeRecipientsFile => "encryption.age_recipients_file", ["BACKUP_AGE_RECIPIENTS_FILE"], false, None, "a file of recipients, one per line (`age -R` format); adds to BACKUP_AGE_RECIPIENTS";
    AgeIdentityFile => "encryption.age_identity_file", ["BACKUP_AGE_IDENTITY_FILE"], false, None, "the age identity (or ssh private key) that decrypts: for verify --full checks and restores; keep it off the backup host";
    RemoteUrl => "remote.url", ["BACKUP_REMOTE_URL"], false, None, "off-site copy after every verified run: s3://bucket/prefix, webdav(s)://host/path, sftp://user@host[:port]/path or file:///mnt/share";
    RemoteEndpoint => "remote.endpoint", ["BACKUP_REMOTE_ENDPOINT"], false, None, "s3:// remotes: the S3 API endpoint (http://garage:3900); default AWS";
    RemoteRegion => "remote.region", ["BACKUP_REMOTE_REGION"], false, Some("us-east-1"), "s3:// remotes: the region used to sign requests";
    RemoteAccessKey => "remote.access_key", ["BACKUP_REMOTE_ACCESS_KEY"], true, None, "s3:// remotes: access key id";
    RemoteSecretKey => "remote.secret_key", ["BACKUP_REMOTE_SECRET_KEY"], true, None, "s3:// remotes: secret access key";
    RemoteVirtualHost => "remote.virtual_host_style", ["BACKUP_REMOTE_VIRTUAL_HOST_STYLE"], false, Some("false"), "s3:// remotes: bucket.host URLs instead of path-style host/bucket";
    RemoteUser => "remote.user", ["BACKUP_REMOTE_USER"], false, None, "webdav(s):// remotes: user name (or in the URL)";
    RemotePassword => "remote.password", ["BACKUP_REMOTE_PASSWORD"], true, None, "webdav(s):// remotes: password";
    RemoteSshKeyFile => "remote.ssh_key_file", ["BACKUP_REMOTE_SSH_KEY_FILE"], false, None, "sftp:// remotes: the private key to log in with";
    RemoteKnownHosts => "remote.known_hosts", ["BACKUP_REMOTE_KNOWN_HOSTS"], false, None, "sftp:// remotes: known_hosts file with the server's host key (required: unknown hosts are refused)";
    RemoteAllowSameFs => "remote.allow_same_fs", ["BACKUP_REMOTE_ALLOW_SAME_FS"], false, Some("false"), "file:// remotes: accept a directory on BACKUP_DIR's file system (an unmounted share looks like that)";
    RemoteRetentionDays => "remote.retention_days", ["BACKUP_REMOTE_RETENTION_DAYS"], false, None, "off-site retention window in days (default: BACKUP_RETENTION_DAYS)";
    RemoteKeepLast => "remote.keep_last", ["BACKUP_REMOTE_KEEP_LAST"], false, None, "off-site: keep the newest N good runs (default: BACKUP_KEEP_LAST)";
    RemoteKeepDaily => "remote.keep_daily", ["BACKUP_REMOTE_KEEP_DAILY"], false, None, "off-site: keep one run a day for N days (default: BACKUP_KEEP_DAILY)";
    RemoteKeepWeekly => "remote.keep_weekly", ["BACKUP_REMOTE_KEEP_WEEKLY"], false, None, "off-site: keep one run a week for N weeks (default: BACKUP_KEEP_WEEKLY)";
    RemoteKeepMonthly => "remote.keep_monthly", ["BACKUP_REMOTE_KEEP_MONTHLY"], false, None, "off-site: keep one run a month for N months (default: BACKUP_KEEP_MONTHLY)";
    RemoteKeepMin => "remote.keep_min", ["BACKUP_REMOTE_KEEP_MIN"], false, None, "off-site: never delete the newest N good runs (default: BACKUP_KEEP_MIN)";
    MinioEndpoint => "minio.endpoint", ["MINIO_ENDPOINT"], false, None, "S3 API endpoint: http://minio:9000, or minio:9000 with MINIO_USE_SSL; enables bucket backups";
    MinioUseSsl => "minio.use_ssl", ["MINIO_USE_SSL"], false, Some("false"), "for an endpoint given as host:port (the MinIO SDK convention): https when true";
    MinioPort => "minio.port", ["MINIO_PORT"], false, None, "port for an endpoint given without one";
    MinioAccessKey => "minio.access_key", ["MINIO_ACCESS_KEY", "MINIO_ROOT_USER"], true, None, "access key id";
    MinioSecretKey => "minio.secret_key", ["MINIO_SECRET_KEY", "MINIO_ROOT_PASSWORD"], true, None, "secret access key";
    MinioBucket => "minio.bucket", ["MINIO_BUCKET"], false, None, "bucket to back up, or a comma list";
    MinioRegion => "minio.region", ["MINIO_REGION"], false, Some("us-east-1"), "region used to sign requests";
    MinioPrefix => "minio.prefix", ["MINIO_PREFIX"], false, None, "only back up keys under this prefix";
    MinioCaFile => "minio.ca_file", ["MINIO_CA_FILE"], false, None, "PEM file of the CA that signed an https endpoint's certificate (in addition to the system roots)";
    S3Concurrency => "minio.concurrency", ["BACKUP_S3_CONCURRENCY"], false, Some("16"), "objects fetched or uploaded at once";
    MinioDataDir => "minio.data_dir", ["MINIO_DATA_DIR"], false, None, "volume mode: tar this directory instead of using the S3 API";
    Schedule => "schedule.cron", ["BACKUP_SCHEDULE"], false, Some("0 2 * * *"), "when the daemon runs backups: 5-field cron, @daily, @hourly... (in TZ)";
    Timeout => "schedule.timeout", ["BACKUP_TIMEOUT"], false, Some("6h"), "a run taking longer is aborted, cleaned up and alerted";
    StartupGrace => "schedule.startup_grace", ["BACKUP_STARTUP_GRACE"], false, Some("2m"), "the daemon retries its setup check this long at start (the database may still be starting)";
    StopGrace => "schedule.stop_grace", ["BACKUP_STOP_GRACE"], false, Some("60s"), "on SIGTERM, how long a running backup may take to finish before it is aborted";
    RestoreTest => "restore_test.mode", ["BACKUP_RESTORE_TEST"], false, Some("off"), "the daemon's restore tests: off | after-run (each good run) | a cron expression (e.g. 0 4 * * 0: the latest run, weekly)";
    RestoreTestUrl => "restore_test.url", ["BACKUP_RESTORE_TEST_URL"], true, None, "scratch PostgreSQL server for restore tests, postgres://user:password@host:port/db (default: the source server; the user needs CREATEDB)";
    RestoreTestTimeout => "restore_test.timeout", ["BACKUP_RESTORE_TEST_TIMEOUT"], false, Some("1h"), "a restore test taking longer is stopped, its scratch database and bucket dropped, and it fails";
    RestoreTestSample => "restore_test.sample", ["BACKUP_RESTORE_TEST_SAMPLE"], false, Some("20"), "objects per bucket archive a restore test uploads and reads back (--full: all of them)";
    AnomalyWindow => "anomaly.window", ["BACKUP_ANOMALY_WINDOW"], false, Some("7"), "each good run is compared with the median of this many good runs before it (none until 3 came before, or this many if fewer)";
    AnomalyDrop => "anomaly.drop", ["BACKUP_ANOMALY_DROP"], false, Some("30%"), "a dump size, table row count or bucket's objects or bytes more than this below the median is an anomaly (alerted, the run stays ok); off: no anomaly checks";
    AnomalyGrowth => "anomaly.growth", ["BACKUP_ANOMALY_GROWTH"], false, Some("300%"), "growth of more than this above the median is an anomaly too; off: growth never is";
    WebhookUrl => "alert.webhook_url", ["BACKUP_ALERT_WEBHOOK_URL"], true, None, "POST failure alerts here (Slack, Discord or any JSON receiver)";
    WebhookFormat => "alert.webhook_format", ["BACKUP_ALERT_WEBHOOK_FORMAT"], false, Some("auto"), "auto (Discord URLs get discord, others slack) | slack | discord | generic";
    AlertEmail => "alert.email", ["BACKUP_ALERT_EMAIL"], false, None, "send failure alerts to these addresses (comma list) through SMTP_*";
    AlertOn => "alert.on", ["BACKUP_ALERT_ON"], false, Some("failure"), "failure | always | change (also \"recovered\" after a failure)";
    HeartbeatUrl => "alert.heartbeat_url", ["BACKUP_HEARTBEAT_URL"], true, None, "pinged after every good run, <url>/fail after a failed one (Healthchecks style)";
    SmtpHost => "smtp.host", ["SMTP_HOST"], false, None, "SMTP server for alert emails";
    SmtpPort => "smtp.port", ["SMTP_PORT"], false, None, "default 587 (starttls), 465 (tls), 25 (none)";
    SmtpUser => "smtp.user", ["SMTP_USER"], false, None, "SMTP login";
    SmtpPassword => "smtp.password", ["SMTP_PASSWORD"], true, None, "SMTP password";
    SmtpFrom => "smtp.from", ["SMTP_FROM"], false, None, "sender address (default stackback@<host name>)";
    SmtpTls => "smtp.tls", ["SMTP_TLS"], false, Some("starttls"), "starttls | tls | none";
    SmtpCaFile => "smtp.ca_file", ["SMTP_CA_FILE"], false, None, "PEM file of the CA that signed the SMTP server's certificate (in addition to the built-in roots)";
    PushgatewayUrl => "metrics.pushgateway_url", ["BACKUP_PUSHGATEWAY_URL"], false, None, "push metrics to this Prometheus Pushgateway after every run (http://pushgateway:9091, or the seed's .../metrics/job/backup)";
    PushgatewayJob => "metrics.job", ["BACKUP_PUSHGATEWAY_JOB"], false, Some("backup"), "the Pushgateway job label (the seed's push URL uses backup)";
    Instance => "metrics.instance", ["BACKUP_INSTANCE"], false, None, "the instance label of pushed metrics (default: the host name)";
    HttpAddr => "metrics.http_addr", ["BACKUP_HTTP_ADDR"], false, Some("127.0.0.1:9187"), "the daemon's /metrics and /healthz address (containers: 0.0.0.0:9187)";
    MinDbBytes => "verify.min_db_bytes", ["BACKUP_MIN_DB_BYTES"], false, Some("1024"), "a database artifact must be larger than this (stored bytes)";
    MinObjectsBytes => "verify.min_objects_bytes", ["BACKUP_MIN_OBJECTS_BYTES"], false, Some("512"), "a volume-mode archive must be larger than this (stored bytes); bucket archives are checked against their object index";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_index_their_rows() {
        for (i, s) in SETTINGS.iter().enumerate() {
            assert_eq!(s.id as usize, i);
            assert_eq!(Key::by_name(s.key), Some(s.id));
        }
    }
}
