//! Command-line interface: the one place that prints and maps errors to exit codes.
//!
//! Every command is: parse → load configuration → one `stackback::ops` call → render its report.
//! This file holds the command-line definition and the dispatch; each command lives in
//! [`cmd`], and the shared renderings in [`render`].

mod cmd;
mod render;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use stackback::config::{Config, Key, LoadInput};
use stackback::error::{exit, Error};
use stackback::redact::Redactor;

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
    config: Option<PathBuf>,

    /// Backup directory (overrides BACKUP_DIR).
    #[arg(long, global = true, value_name = "DIR")]
    backup_dir: Option<PathBuf>,

    /// More log output (debug level); RUST_LOG overrides.
    #[arg(short, long, global = true)]
    verbose: bool,

    /// Log format on stderr (also LOG_FORMAT).
    #[arg(
        long,
        global = true,
        value_enum,
        env = "LOG_FORMAT",
        default_value = "text"
    )]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Back up the database (and buckets, when configured), verify, record the run.
    Run {
        /// gzip (default, the seed's format), zstd or none.
        #[arg(long, value_name = "KIND")]
        compression: Option<String>,
    },
    /// Check existing backups: size, whole-stream decompression, checksums, completeness.
    Verify {
        /// A run id (YYYYMMDD_HHMMSS), an artifact file, or `latest` (default).
        target: Option<String>,
        /// Every run and file in the backup directory.
        #[arg(long, conflicts_with = "target")]
        all: bool,
    },
    /// Print the effective configuration (secrets redacted) and where each value came from.
    Config,
    /// Run backups on BACKUP_SCHEDULE, serve /metrics and /healthz, alert on failures.
    Daemon {
        /// Also run one backup right away.
        #[arg(long)]
        run_now: bool,
    },
    /// Alert channels.
    #[command(subcommand)]
    Alert(AlertCommand),
    /// Install stackback as a scheduled job (systemd timer or cron).
    #[command(subcommand)]
    Install(InstallCommand),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Print the manual page (roff), generated from the command-line definition.
    Man,
    /// Restore a backup.
    #[command(subcommand)]
    Restore(RestoreCommand),
    /// List every run in the backup directory, newest first, with totals and disk use.
    List {
        /// Stable JSON (schema: docs/list-json.md).
        #[arg(long)]
        json: bool,
    },
    /// Last run, last success, backup count, disk use, free space.
    Status {
        #[arg(long)]
        json: bool,
        /// Exit 1 when the last good backup is older than BACKUP_MAX_AGE (for health checks).
        #[arg(long)]
        check: bool,
    },
    /// Apply the retention policy now (it also runs after every good backup).
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
}

#[derive(Subcommand, Debug)]
pub(crate) enum InstallCommand {
    /// Write stackback.service and stackback.timer (OnCalendar from BACKUP_SCHEDULE).
    Systemd {
        /// Per-user units (~/.config/systemd/user) instead of system ones.
        #[arg(long)]
        user: bool,
        /// Print the files instead of writing them.
        #[arg(long)]
        dry_run: bool,
        /// Write under this directory instead of / (packaging, tests).
        #[arg(long, value_name = "DIR", default_value = "/")]
        root: PathBuf,
        /// systemd's RandomizedDelaySec for the timer.
        #[arg(long, default_value = "5m")]
        randomized_delay: String,
    },
    /// Write /etc/cron.d/stackback with the schedule and log redirection.
    Cron {
        #[arg(long)]
        dry_run: bool,
        #[arg(long, value_name = "DIR", default_value = "/")]
        root: PathBuf,
        /// Where the job's output goes.
        #[arg(long, default_value = "/var/log/stackback.log")]
        log: PathBuf,
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
    /// Restore to another server: postgres://user@host:port/db (password: PGPASSWORD-style env or
    /// the URL; prefer POSTGRES_PASSWORD for the configured server).
    #[arg(long, value_name = "URL")]
    pub(crate) target_url: Option<String>,
    /// Create the target database if it does not exist.
    #[arg(long)]
    pub(crate) create: bool,
    /// Drop and recreate a target database that already has tables (needs --yes).
    #[arg(long)]
    pub(crate) clean: bool,
    /// Confirm --clean.
    #[arg(long)]
    pub(crate) yes: bool,
    /// Skip ALTER ... OWNER TO statements (a fresh server without the original roles).
    #[arg(long)]
    pub(crate) no_owner: bool,
}

#[derive(Subcommand, Debug)]
pub(crate) enum RestoreCommand {
    /// Restore a database backup into PostgreSQL (one transaction, stops at the first error).
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

pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
            let _ = e.print();
            return code;
        }
    };
    init_logging(cli.verbose, cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return exit::FAILED;
        }
    };
    runtime.block_on(dispatch(cli))
}

fn init_logging(verbose: bool, format: LogFormat) {
    let default = if verbose {
        "stackback=debug,info"
    } else {
        "info"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder
            .with_target(false)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
}

fn load_config(cli: &Cli) -> Result<Config, Error> {
    let mut input = LoadInput::from_process();
    input.file = cli.config.clone();
    if let Some(d) = &cli.backup_dir {
        input
            .flags
            .push((Key::BackupDir, d.display().to_string(), "--backup-dir"));
    }
    if let Command::Run {
        compression: Some(c),
    } = &cli.command
    {
        input
            .flags
            .push((Key::Compression, c.clone(), "--compression"));
    }
    Config::load(&input)
}

async fn dispatch(cli: Cli) -> i32 {
    // These only describe the CLI: they must work whatever the configuration says.
    match &cli.command {
        Command::Completions { shell } => return cmd::describe::completions(*shell),
        Command::Man => return cmd::describe::man(),
        _ => {}
    }
    let cfg = match load_config(&cli) {
        Ok(c) => c,
        Err(e) => return report_error(&e, &Redactor::default()),
    };
    let redactor = cfg.redactor();
    let json_logs = matches!(cli.log_format, LogFormat::Json);
    let result = match &cli.command {
        Command::Run { .. } => cmd::run::run(&cfg, json_logs).await,
        Command::Verify { target, all } => cmd::verify::run(&cfg, target.as_deref(), *all).await,
        Command::Config => cmd::config::run(&cfg),
        Command::Daemon { run_now } => cmd::daemon::run(cfg.clone(), *run_now).await,
        Command::Alert(AlertCommand::Test) => cmd::alert::test(&cfg).await,
        Command::Install(i) => cmd::install::run(&cfg, i),
        Command::Completions { .. } | Command::Man => unreachable!("handled before configuration"),
        Command::Restore(r) => cmd::restore::run(&cfg, r).await,
        Command::List { json } => cmd::list::run(&cfg, *json),
        Command::Status { json, check } => cmd::status::run(&cfg, *json, *check),
        Command::Prune {
            dry_run,
            include_unmanaged,
            json,
        } => cmd::prune::run(&cfg, *dry_run, *include_unmanaged, *json).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => report_error(&e, &redactor),
    }
}

pub(crate) fn report_error(e: &Error, redactor: &Redactor) -> i32 {
    eprintln!("error: {}", redactor.redact(&e.to_string()));
    if let Some(h) = e.hint() {
        eprintln!("hint: {h}");
    }
    e.exit_code()
}
