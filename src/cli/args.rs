//! The command-line definition (clap): commands in the order an operator needs them, their
//! flags and help. Dispatch and rendering live in [`super`] and [`super::cmd`].

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "stackback",
    version,
    about = "Verified, restorable backups of a PostgreSQL database and S3/MinIO buckets",
    after_help = "Configuration comes from defaults < TOML file < environment (POSTGRES_HOST, BACKUP_DIR, ...) < flags; \
                  `stackback config` shows every value and its source.\n\
                  Exit codes: 0 ok, 1 failed, 2 usage or configuration error, 3 verification failed, 4 locked by another run."
)]
pub(crate) struct Cli {
    /// TOML configuration file (also STACKBACK_CONFIG).
    #[arg(long, global = true, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,

    /// Backup directory (overrides BACKUP_DIR).
    #[arg(long, global = true, value_name = "DIR")]
    pub(crate) backup_dir: Option<PathBuf>,

    /// More log output (debug level); RUST_LOG overrides.
    #[arg(short, long, global = true, conflicts_with = "quiet")]
    pub(crate) verbose: bool,

    /// Only errors and warnings on stderr (for cron); the report on stdout stays.
    #[arg(short, long, global = true)]
    pub(crate) quiet: bool,

    /// Log format on stderr (also LOG_FORMAT).
    #[arg(
        long,
        global = true,
        value_enum,
        env = "LOG_FORMAT",
        default_value = "text"
    )]
    pub(crate) log_format: LogFormat,

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Back up the database (and buckets, when configured), verify, record the run.
    #[command(display_order = 1)]
    Run {
        /// Compression of this run's artifacts (overrides BACKUP_COMPRESSION; gzip is the seed's).
        #[arg(long, value_enum, value_name = "KIND")]
        compression: Option<CompressionArg>,
    },
    /// Check existing backups: size, whole-stream decompression, checksums, completeness.
    #[command(display_order = 2)]
    Verify {
        /// A run id (YYYYMMDD_HHMMSS), an artifact file, or `latest` (default).
        target: Option<String>,
        /// Every run and file in the backup directory.
        #[arg(long, conflicts_with = "target")]
        all: bool,
        /// Check the off-site copies instead: each file streamed from the remote and compared
        /// with its record's size and SHA-256 (nothing is written to disk).
        #[arg(long)]
        remote: bool,
        /// Restore the run into a scratch database (BACKUP_RESTORE_TEST_URL, default the source
        /// server) and a scratch bucket, compare row counts and objects, drop them again.
        #[arg(long, conflicts_with = "all")]
        restore_test: bool,
        /// With --restore-test: every object of each bucket archive, not a sample.
        #[arg(long, requires = "restore_test")]
        full: bool,
        /// With --restore-test: test the run on the off-site remote (fetched into a scratch
        /// directory and checked first): a second host holding the identity tests what the
        /// backup host sent away.
        #[arg(long, requires = "restore_test")]
        from_remote: bool,
    },
    /// List every run in the backup directory, newest first, with totals and disk use.
    #[command(display_order = 3)]
    List {
        /// Stable JSON (schema: docs/list-json.md).
        #[arg(long)]
        json: bool,
        /// The runs on the off-site remote (BACKUP_REMOTE_URL), with the files each lacks there.
        #[arg(long)]
        remote: bool,
    },
    /// Last run, last success, backup count, disk use, free space.
    #[command(display_order = 4)]
    Status {
        #[arg(long)]
        json: bool,
        /// Exit 1 when the last good backup is older than BACKUP_MAX_AGE (for health checks).
        #[arg(long)]
        check: bool,
    },
    /// Restore a backup.
    #[command(display_order = 5)]
    Restore(RestoreArgs),
    /// Apply the retention policy now (it also runs after every good backup).
    #[command(display_order = 6)]
    Prune {
        /// Print each decision and its reason; delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// Also delete old files no run record names (e.g. the old backup script's).
        #[arg(long)]
        include_unmanaged: bool,
        #[arg(long)]
        json: bool,
    },
    /// Size anomalies: acknowledge an expected change so it stops being reported.
    #[command(subcommand, display_order = 7)]
    Anomaly(AnomalyCommand),
    /// Run backups on BACKUP_SCHEDULE, serve /metrics and /healthz, alert on failures.
    #[command(display_order = 11)]
    Daemon {
        /// Also run one backup right away.
        #[arg(long)]
        run_now: bool,
    },
    /// Install stackback as a scheduled job (systemd timer, cron) or into a compose stack.
    #[command(subcommand, display_order = 12)]
    Install(InstallCommand),
    /// Alert channels.
    #[command(subcommand, display_order = 13)]
    Alert(AlertCommand),
    /// Print the effective configuration (secrets redacted) and where each value came from.
    #[command(display_order = 21)]
    Config,
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(display_order = 22)]
    Completions { shell: clap_complete::Shell },
    /// Print the manual page (roff), generated from the command-line definition.
    #[command(display_order = 23)]
    Man,
}

/// `--compression` values, so help and completions list them.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum CompressionArg {
    // Plain comments, not doc comments: clap would turn these into a long help per value.
    // `.sql.gz`, `.tar.gz`: the seed's format.
    Gzip,
    // `.zst`: much faster.
    Zstd,
    // Uncompressed.
    None,
}

impl CompressionArg {
    pub(crate) fn name(self) -> &'static str {
        match self {
            CompressionArg::Gzip => "gzip",
            CompressionArg::Zstd => "zstd",
            CompressionArg::None => "none",
        }
    }
}

#[derive(Subcommand, Debug)]
pub(crate) enum InstallCommand {
    /// Write NAME.service and NAME.timer (OnCalendar from BACKUP_SCHEDULE, in TZ).
    Systemd {
        /// Unit name (the seed's: backup).
        #[arg(long, default_value = "stackback")]
        name: String,
        /// Per-user units (~/.config/systemd/user) instead of system ones.
        #[arg(long)]
        user: bool,
        /// Print the files instead of writing them (secrets shown as ***).
        #[arg(long)]
        dry_run: bool,
        /// Write under this directory instead of / (packaging, tests).
        #[arg(long, value_name = "DIR", default_value = "/")]
        root: PathBuf,
        /// systemd's RandomizedDelaySec for the timer.
        #[arg(long, default_value = "5m")]
        randomized_delay: String,
    },
    /// Write /etc/cron.d/NAME with the schedule, an outer time limit and log redirection.
    Cron {
        /// Cron file name (the seed's: schedgen-backup).
        #[arg(long, default_value = "stackback")]
        name: String,
        /// Print the files instead of writing them (secrets shown as ***).
        #[arg(long)]
        dry_run: bool,
        #[arg(long, value_name = "DIR", default_value = "/")]
        root: PathBuf,
        /// Where the job's output goes (default /var/log/NAME.log).
        #[arg(long)]
        log: Option<PathBuf>,
    },
    /// Fit docker-compose.backup.yml to a compose stack (its PostgreSQL and MinIO services,
    /// network and volume) and add what its .env lacks.
    Compose {
        /// The stack's directory, holding its docker-compose.yml and .env.
        #[arg(long, value_name = "DIR", default_value = ".")]
        stack_dir: PathBuf,
        /// Print what would be written.
        #[arg(long)]
        dry_run: bool,
        /// Replace an existing docker-compose.backup.yml.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum AnomalyCommand {
    /// Record that a run's anomalies are an expected change (a cleanup, a migration): they and
    /// those of earlier runs stop being open, and later runs are compared from this run on.
    Ack {
        /// A run id (YYYYMMDD_HHMMSS), or `latest` (the newest good run).
        run: String,
        /// Why, kept with the acknowledgement in the backup directory's state file.
        #[arg(long, value_name = "TEXT")]
        note: Option<String>,
        /// The report as JSON (docs/list-json.md).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum AlertCommand {
    /// Send a test message to every configured channel and report each result.
    Test,
}

#[derive(clap::Args, Debug, Clone)]
pub(crate) struct DbRestoreArgs {
    /// Database to restore into (default: the one the backup came from).
    #[arg(long)]
    pub(crate) target_db: Option<String>,
    /// Restore to another server: postgres://user:password@host:port/db (another server gets only
    /// the password its URL gives).
    #[arg(long, value_name = "URL")]
    pub(crate) target_url: Option<String>,
    /// Create the target database if it does not exist.
    #[arg(long)]
    pub(crate) create: bool,
    /// Replace a target database that already has tables (loaded beside it, swapped in once the
    /// load succeeded; needs --yes).
    #[arg(long)]
    pub(crate) clean: bool,
    /// Confirm --clean.
    #[arg(long)]
    pub(crate) yes: bool,
    /// Skip ALTER ... OWNER TO statements (a fresh server without the original roles).
    #[arg(long)]
    pub(crate) no_owner: bool,
    /// Connections loading rows into a database the restore makes (--create, or --clean beside
    /// the target), which is dropped if the load fails; default: this host's cores, at most 4.
    /// 1, or a target that already exists, loads in one psql transaction.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub(crate) jobs: Option<u16>,
}

#[derive(clap::Args, Debug)]
pub(crate) struct RestoreArgs {
    /// Take the backup from the off-site remote (BACKUP_REMOTE_*), fetched into a scratch
    /// directory under BACKUP_DIR and checked against its record, then removed: a restore on a
    /// host that never saw the local backups.
    #[arg(long, global = true)]
    pub(crate) from_remote: bool,
    #[command(subcommand)]
    pub(crate) cmd: RestoreCommand,
}

#[derive(Subcommand, Debug, Clone)]
pub(crate) enum RestoreCommand {
    /// Restore a database backup into PostgreSQL, all or nothing (stops at the first error).
    Db {
        /// A database backup file, a run id, or `latest`.
        target: String,
        #[command(flatten)]
        db: DbRestoreArgs,
        /// Write the plain SQL to this file instead of restoring.
        #[arg(long, value_name = "PATH")]
        to_file: Option<PathBuf>,
    },
    /// Restore a whole run: the database, then its buckets.
    Run {
        /// A run id or `latest`.
        target: String,
        #[command(flatten)]
        db: DbRestoreArgs,
        /// Replace objects that already exist in the target buckets.
        #[arg(long, conflicts_with = "skip_existing")]
        overwrite: bool,
        /// Keep objects that already exist in the target buckets.
        #[arg(long)]
        skip_existing: bool,
        /// Create target buckets that do not exist.
        #[arg(long)]
        create_bucket: bool,
    },
    /// Upload a bucket archive's objects back, with content types and user metadata.
    Objects {
        /// A bucket archive file, a run id, or `latest`.
        target: String,
        /// Target bucket (default: the bucket the archive came from).
        #[arg(long)]
        bucket: Option<String>,
        /// Target S3 endpoint (default: MINIO_ENDPOINT; credentials from MINIO_* as usual).
        #[arg(long)]
        endpoint: Option<String>,
        /// Only restore keys that start with this prefix.
        #[arg(long)]
        prefix: Option<String>,
        /// Replace objects that already exist in the target.
        #[arg(long, conflicts_with = "skip_existing")]
        overwrite: bool,
        /// Keep objects that already exist in the target.
        #[arg(long)]
        skip_existing: bool,
        /// Create the target bucket if it does not exist.
        #[arg(long)]
        create_bucket: bool,
        /// Read every object back afterwards and check its SHA-256.
        #[arg(long)]
        verify: bool,
    },
    /// Extract a volume-mode archive (MINIO_DATA_DIR backups) into a directory.
    Volume {
        /// A volume archive file, a run id, or `latest`.
        target: String,
        /// Directory to extract into.
        #[arg(long, value_name = "DIR")]
        into: PathBuf,
        /// Extract even if DIR is not empty.
        #[arg(long)]
        force: bool,
    },
}
