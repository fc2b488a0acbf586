//! Command-line interface: the one place that prints and maps errors to exit codes.
//!
//! Every command is: parse → load configuration → one `stackback::ops` call → render its report.

use std::io::Write;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use stackback::config::{Config, LoadInput, Redactor};
use stackback::error::{exit, Error};
use stackback::ops::verify::{human_bytes, Outcome, Target, Thresholds};

#[derive(Parser, Debug)]
#[command(
    name = "stackback",
    version,
    about = "Verified, restorable backups of a PostgreSQL database and S3/MinIO buckets",
    after_help = "Configuration comes from defaults < TOML file < environment (POSTGRES_HOST, BACKUP_DIR, ...) < flags; \
                  `stackback config` shows every value and its source.\n\
                  Exit codes: 0 ok, 1 failed, 2 usage or configuration error, 3 verification failed, 4 locked by another run."
)]
struct Cli {
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
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
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
enum InstallCommand {
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
enum AlertCommand {
    /// Send a test message to every configured channel and report each result.
    Test,
}

#[derive(clap::Args, Debug, Clone)]
struct DbRestoreArgs {
    /// Database to restore into (default: the one the backup came from).
    #[arg(long)]
    target_db: Option<String>,
    /// Restore to another server: postgres://user@host:port/db (password: PGPASSWORD-style env or
    /// the URL; prefer POSTGRES_PASSWORD for the configured server).
    #[arg(long, value_name = "URL")]
    target_url: Option<String>,
    /// Create the target database if it does not exist.
    #[arg(long)]
    create: bool,
    /// Drop and recreate a target database that already has tables (needs --yes).
    #[arg(long)]
    clean: bool,
    /// Confirm --clean.
    #[arg(long)]
    yes: bool,
    /// Skip ALTER ... OWNER TO statements (a fresh server without the original roles).
    #[arg(long)]
    no_owner: bool,
}

#[derive(Subcommand, Debug)]
enum RestoreCommand {
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

fn load_config(
    cli: &Cli,
    extra: Vec<(&'static str, String, &'static str)>,
) -> Result<Config, Error> {
    let mut input = LoadInput::from_process();
    input.file = cli.config.clone();
    if let Some(d) = &cli.backup_dir {
        input
            .flags
            .push(("backup.dir", d.display().to_string(), "--backup-dir"));
    }
    input.flags.extend(extra);
    Config::load(&input)
}

async fn dispatch(cli: Cli) -> i32 {
    // These only describe the CLI: they must work whatever the configuration says.
    match &cli.command {
        Command::Completions { shell } => {
            clap_complete::generate(
                *shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "stackback",
                &mut std::io::stdout(),
            );
            return exit::OK;
        }
        Command::Man => {
            let man = clap_mangen::Man::new(<Cli as clap::CommandFactory>::command());
            return match man.render(&mut std::io::stdout()) {
                Ok(()) => exit::OK,
                Err(e) => {
                    eprintln!("error: cannot write the manual page: {e}");
                    exit::FAILED
                }
            };
        }
        _ => {}
    }
    let extra = match &cli.command {
        Command::Run {
            compression: Some(c),
        } => vec![("backup.compression", c.clone(), "--compression")],
        _ => vec![],
    };
    let cfg = match load_config(&cli, extra) {
        Ok(c) => c,
        Err(e) => return report_error(&e, &Redactor::default()),
    };
    let redactor = cfg.redactor();
    let result = match &cli.command {
        Command::Run { .. } => cmd_run(&cfg, matches!(cli.log_format, LogFormat::Json)).await,
        Command::Verify { target, all } => cmd_verify(&cfg, target.as_deref(), *all).await,
        Command::Config => cmd_config(&cfg),
        Command::Daemon { run_now } => cmd_daemon(cfg.clone(), *run_now).await,
        Command::Alert(AlertCommand::Test) => cmd_alert_test(&cfg).await,
        Command::Install(i) => cmd_install(&cfg, i),
        Command::Completions { .. } | Command::Man => unreachable!("handled before configuration"),
        Command::Restore(r) => cmd_restore(&cfg, r).await,
        Command::List { json } => cmd_list(&cfg, *json),
        Command::Status { json, check } => cmd_status(&cfg, *json, *check),
        Command::Prune {
            dry_run,
            include_unmanaged,
            json,
        } => cmd_prune(&cfg, *dry_run, *include_unmanaged, *json),
    };
    match result {
        Ok(code) => code,
        Err(e) => report_error(&e, &redactor),
    }
}

fn report_error(e: &Error, redactor: &Redactor) -> i32 {
    eprintln!("error: {}", redactor.redact(&e.to_string()));
    if let Some(h) = e.hint() {
        eprintln!("hint: {h}");
    }
    e.exit_code()
}

/// A progress bar on stderr while `work` runs, only on a terminal with text logs.
fn progress_bar(
    progress: std::sync::Arc<stackback::progress::Progress>,
    json_logs: bool,
) -> Option<(indicatif::ProgressBar, tokio::task::JoinHandle<()>)> {
    if json_logs || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return None;
    }
    let bar = indicatif::ProgressBar::new(0);
    let known = indicatif::ProgressStyle::with_template(
        "{msg:>16} [{bar:30}] {binary_bytes}/~{binary_total_bytes} {binary_bytes_per_sec} ETA {eta}",
    )
    .expect("a valid template")
    .progress_chars("=> ");
    let unknown = indicatif::ProgressStyle::with_template(
        "{spinner} {msg:>16} {binary_bytes} {binary_bytes_per_sec} {prefix}",
    )
    .expect("a valid template");
    let b = bar.clone();
    let ticker = tokio::spawn(async move {
        let mut last_step = String::new();
        loop {
            let s = progress.snapshot();
            if s.step != last_step {
                b.reset();
                b.set_style(if s.total.is_some() {
                    known.clone()
                } else {
                    unknown.clone()
                });
                last_step = s.step.clone();
            }
            b.set_message(s.step.clone());
            b.set_length(s.total.unwrap_or(0).max(s.bytes));
            b.set_position(s.bytes);
            if s.objects > 0 {
                b.set_prefix(format!("{} objects", s.objects));
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    });
    Some((bar, ticker))
}

async fn cmd_run(cfg: &Config, json_logs: bool) -> Result<i32, Error> {
    let progress = std::sync::Arc::new(stackback::progress::Progress::default());
    let bar = progress_bar(progress.clone(), json_logs);
    let report = stackback::ops::backup::run_observed(cfg, std::future::pending(), &progress).await;
    if let Some((bar, ticker)) = bar {
        ticker.abort();
        bar.finish_and_clear();
    }
    let report = report?;
    let r = &report.record;
    let secs = r
        .finished_at
        .map(|f| (f - r.started_at).num_milliseconds() as f64 / 1000.0)
        .unwrap_or(0.0);
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "run {}: {} in {secs:.1} s", r.run_id, r.status);
    for a in &r.artifacts {
        let _ = writeln!(
            out,
            "  {:<9} {}  {} ({} plain)  verified: {}",
            a.kind.to_string(),
            cfg.backup.dir.join(&a.file).display(),
            human_bytes(a.stored_bytes),
            human_bytes(a.plain_bytes),
            a.verification.detail
        );
    }
    for w in &r.warnings {
        let _ = writeln!(out, "  warning: {w}");
    }
    drop(out);
    let n = stackback::notify::after_run(cfg, r, None).await;
    for c in n.channels.iter().chain(&n.heartbeat).chain(&n.pushgateway) {
        if !c.ok {
            eprintln!("warning: {} failed: {}", c.channel, c.detail);
        }
    }
    if let Some(e) = &report.error {
        eprintln!(
            "error: run {} failed at step {}: {}",
            r.run_id,
            r.failed_step.as_deref().unwrap_or("?"),
            cfg.redactor().redact(&e.to_string())
        );
        if let Some(h) = e.hint() {
            eprintln!("hint: {h}");
        }
    }
    Ok(report.exit_code())
}

async fn cmd_verify(cfg: &Config, target: Option<&str>, all: bool) -> Result<i32, Error> {
    let target = if all {
        Target::All
    } else {
        match target {
            None | Some("latest") => Target::Latest,
            Some(t) => match stackback::catalog::RunId::try_from(t.to_string()) {
                Ok(id) => Target::Run(id),
                Err(_) => {
                    let p = PathBuf::from(t);
                    if p.components().count() == 1 && !p.exists() {
                        Target::File(cfg.backup.dir.join(p))
                    } else {
                        Target::File(p)
                    }
                }
            },
        }
    };
    let dir = stackback::sink::local::BackupDir::open(&cfg.backup.dir)?;
    let th = Thresholds {
        min_db_bytes: cfg.backup.min_db_bytes,
        min_objects_bytes: cfg.backup.min_objects_bytes,
    };
    let report =
        tokio::task::spawn_blocking(move || stackback::ops::verify::verify(&dir, &th, &target))
            .await
            .map_err(|e| Error::Step {
                what: "verification".into(),
                detail: e.to_string(),
            })??;
    let mut out = std::io::stdout().lock();
    for c in &report.checks {
        let (tag, text) = match &c.outcome {
            Outcome::Ok(t) => ("OK  ", t),
            Outcome::Failed(t) => ("FAIL", t),
            Outcome::Skipped(t) => ("SKIP", t),
        };
        let size = c.stored_bytes.map(human_bytes).unwrap_or_default();
        let run = c
            .run_id
            .as_ref()
            .map(|r| r.to_string())
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(out, "{tag} {run} {} {size}: {text}", c.file);
    }
    let _ = writeln!(
        out,
        "{} verified, {} failed, {} skipped",
        report.passed(),
        report.failed(),
        report.checks.len() - report.passed() - report.failed()
    );
    if report.failed() > 0 {
        return Ok(exit::VERIFY);
    }
    if report.passed() == 0 {
        eprintln!("error: no verified backup among the checked runs");
        return Ok(exit::VERIFY);
    }
    Ok(exit::OK)
}

fn cmd_config(cfg: &Config) -> Result<i32, Error> {
    let mut out = std::io::stdout().lock();
    for r in &cfg.resolved {
        let env = r.setting.env.join("|");
        let _ = writeln!(
            out,
            "{:<28} {:<40} {:<26} # {}",
            r.setting.key,
            r.display_value(),
            env,
            r.source
        );
    }
    Ok(exit::OK)
}

fn existing(overwrite: bool, skip: bool) -> stackback::ops::restore::Existing {
    use stackback::ops::restore::Existing;
    match (overwrite, skip) {
        (true, _) => Existing::Overwrite,
        (_, true) => Existing::Skip,
        _ => Existing::Refuse,
    }
}

async fn cmd_restore(cfg: &Config, cmd: &RestoreCommand) -> Result<i32, Error> {
    use stackback::ops::restore::{self, ObjectRestoreOptions, Selector};
    let db_opts = |a: &DbRestoreArgs, to_file: Option<PathBuf>| restore::DbRestoreOptions {
        target_db: a.target_db.clone(),
        target_url: a.target_url.clone(),
        create: a.create,
        clean: a.clean,
        yes: a.yes,
        no_owner: a.no_owner,
        to_file,
    };
    match cmd {
        RestoreCommand::Db {
            target,
            db,
            to_file,
        } => {
            let r =
                restore::restore_db(cfg, &Selector::parse(target), &db_opts(db, to_file.clone()))
                    .await?;
            print_db_restore(&r, to_file.is_some());
            Ok(exit::OK)
        }
        RestoreCommand::Run {
            target,
            db,
            overwrite,
            skip_existing,
            create_bucket,
        } => {
            let sel = Selector::parse(target);
            if matches!(sel, Selector::File(_)) {
                return Err(Error::Usage(format!(
                    "{target} is not a run id or `latest`"
                )));
            }
            // Pin `latest` to one run so the database and the buckets come from the same one.
            let sel = match sel {
                Selector::Latest => {
                    let dir = stackback::sink::local::BackupDir::open(&cfg.backup.dir)?;
                    let run = stackback::catalog::Catalog::new(dir)
                        .latest_with(stackback::catalog::ArtifactKind::Database)?;
                    Selector::Run(run.run_id)
                }
                s => s,
            };
            let r = restore::restore_db(cfg, &sel, &db_opts(db, None)).await?;
            print_db_restore(&r, false);
            let opts = ObjectRestoreOptions {
                bucket: None,
                endpoint: None,
                prefix: None,
                existing: existing(*overwrite, *skip_existing),
                create_bucket: *create_bucket,
                verify: true,
            };
            match restore::restore_objects(cfg, &sel, &opts).await {
                Ok(reports) => print_object_restores(&reports),
                Err(Error::NotFound(msg)) if msg.contains("no verified objects backup") => {
                    println!("no bucket backups in this run");
                }
                Err(e) => return Err(e),
            }
            Ok(exit::OK)
        }
        RestoreCommand::Objects {
            target,
            bucket,
            endpoint,
            prefix,
            overwrite,
            skip_existing,
            create_bucket,
            verify,
        } => {
            let opts = ObjectRestoreOptions {
                bucket: bucket.clone(),
                endpoint: endpoint.clone(),
                prefix: prefix.clone(),
                existing: existing(*overwrite, *skip_existing),
                create_bucket: *create_bucket,
                verify: *verify,
            };
            let reports = restore::restore_objects(cfg, &Selector::parse(target), &opts).await?;
            print_object_restores(&reports);
            Ok(exit::OK)
        }
        RestoreCommand::Volume {
            target,
            into,
            force,
        } => {
            let (cfg, sel, into, force) =
                (cfg.clone(), Selector::parse(target), into.clone(), *force);
            let r = tokio::task::spawn_blocking(move || {
                restore::restore_volume(&cfg, &sel, &into, force)
            })
            .await
            .map_err(|e| Error::Step {
                what: "restore".into(),
                detail: e.to_string(),
            })??;
            println!(
                "extracted {} into {}: {} entries",
                r.artifact,
                r.into.display(),
                r.entries
            );
            Ok(exit::OK)
        }
    }
}

fn print_object_restores(reports: &[stackback::ops::restore::ObjectRestoreReport]) {
    let mut out = std::io::stdout().lock();
    for r in reports {
        let _ = writeln!(
            out,
            "restored {} into bucket {}: {} objects uploaded, {} existing skipped, {} in {:.1} s{}",
            r.artifact,
            r.bucket,
            r.uploaded,
            r.skipped_existing,
            human_bytes(r.bytes),
            r.seconds,
            r.verified
                .map(|n| format!(", {n} objects read back and verified"))
                .unwrap_or_default()
        );
    }
}

fn print_db_restore(r: &stackback::ops::restore::DbRestoreReport, to_file: bool) {
    if to_file {
        println!(
            "wrote {} of plain SQL from {} to {} in {:.1} s",
            human_bytes(r.plain_bytes),
            r.artifact,
            r.target,
            r.seconds
        );
    } else {
        println!(
            "restored {} into database {}: {} tables, {} rows, {} of SQL in {:.1} s",
            r.artifact,
            r.target,
            r.tables,
            r.rows,
            human_bytes(r.plain_bytes),
            r.seconds
        );
    }
}

fn age(t: chrono::DateTime<chrono::Utc>) -> String {
    let s = (chrono::Utc::now() - t).num_seconds().max(0);
    match s {
        0..=119 => format!("{s}s ago"),
        120..=7199 => format!("{}m ago", s / 60),
        7200..=172_799 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86400),
    }
}

fn print_json<T: serde::Serialize>(v: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).expect("reports serialise")
    );
}

fn cmd_list(cfg: &Config, json: bool) -> Result<i32, Error> {
    let dir = stackback::sink::local::BackupDir::open(&cfg.backup.dir)?;
    let l = stackback::ops::list::list(&dir)?;
    if json {
        print_json(&l);
        return Ok(exit::OK);
    }
    let mut out = std::io::stdout().lock();
    for r in &l.runs {
        let _ = writeln!(
            out,
            "{}  {:<10} {:>9}  {:<10} {}",
            r.run_id,
            age(r.started_at),
            human_bytes(r.bytes),
            r.status,
            r.error
                .as_deref()
                .map(|e| e.chars().take(100).collect::<String>())
                .unwrap_or_default()
        );
        for a in &r.artifacts {
            let state = match (a.present, a.verified) {
                (false, _) => "MISSING",
                (true, true) => "verified",
                (true, false) => "unverified",
            };
            let _ = writeln!(
                out,
                "    {:<9} {:<60} {:>9}  {state}",
                a.kind.to_string(),
                a.file,
                human_bytes(a.bytes)
            );
        }
    }
    for f in &l.unmanaged {
        let _ = writeln!(
            out,
            "unmanaged  {:<60} {:>9}  (no run record: not counted, never pruned unless asked)",
            f.file,
            human_bytes(f.bytes)
        );
    }
    for f in &l.temp_files {
        let _ = writeln!(
            out,
            "leftover   {:<60} {:>9}  (temp file of an interrupted run or prune)",
            f.file,
            human_bytes(f.bytes)
        );
    }
    let t = &l.totals;
    let _ = writeln!(
        out,
        "{} runs: {} ok, {} partial, {} failed, {} incomplete; {} database and {} bucket backups; {} on disk, {} free",
        t.runs, t.ok, t.partial, t.failed, t.incomplete, t.database_backups, t.bucket_backups,
        human_bytes(t.bytes_on_disk), human_bytes(t.free_bytes)
    );
    Ok(exit::OK)
}

fn cmd_status(cfg: &Config, json: bool, check: bool) -> Result<i32, Error> {
    let dir = stackback::sink::local::BackupDir::open(&cfg.backup.dir)?;
    let now = chrono::Utc::now();
    let s = stackback::ops::list::status(
        &dir,
        now,
        cfg.backup.max_age,
        cfg.backup.free_warn_bytes,
        cfg.daemon.schedule.next_after(now),
    )?;
    if json {
        print_json(&s);
    } else {
        let mut out = std::io::stdout().lock();
        match &s.last_run {
            Some(r) => {
                let _ = writeln!(
                    out,
                    "last run:     {} ({}), {}{}",
                    r.run_id,
                    age(r.started_at),
                    r.status,
                    r.duration_seconds
                        .map(|d| format!(" in {d:.1} s, {}", human_bytes(r.bytes)))
                        .unwrap_or_default()
                );
            }
            None => {
                let _ = writeln!(out, "last run:     none");
            }
        }
        let _ = writeln!(
            out,
            "last success: {}",
            s.last_success
                .as_ref()
                .map(|r| format!("{} ({})", r.run_id, age(r.started_at)))
                .unwrap_or_else(|| "none".into())
        );
        if let Some(n) = s.next_run {
            let _ = writeln!(out, "next run:     {n}");
        }
        let _ = writeln!(
            out,
            "backups:      {} good runs, {} on disk, {} free",
            s.good_backups,
            human_bytes(s.bytes_on_disk),
            human_bytes(s.free_bytes)
        );
        for w in &s.warnings {
            let _ = writeln!(out, "warning:      {w}");
        }
    }
    if check && s.stale {
        eprintln!("error: backups are stale: {}", s.warnings.join("; "));
        return Ok(exit::FAILED);
    }
    Ok(exit::OK)
}

fn cmd_prune(
    cfg: &Config,
    dry_run: bool,
    include_unmanaged: bool,
    json: bool,
) -> Result<i32, Error> {
    let dir = stackback::sink::local::BackupDir::open(&cfg.backup.dir)?;
    let opts = stackback::ops::prune::PruneOptions {
        dry_run,
        include_unmanaged,
        current: None,
    };
    let r = stackback::ops::prune::prune(
        &dir,
        &cfg.backup.retention,
        cfg.backup.timezone,
        chrono::Utc::now(),
        &opts,
    )?;
    if json {
        print_json(&r);
        return Ok(exit::OK);
    }
    let mut out = std::io::stdout().lock();
    for d in &r.decisions {
        let _ = writeln!(
            out,
            "{} {:<10} {:<6} {}",
            d.run_id,
            format!("{:?}", d.state).to_lowercase(),
            if d.keep { "keep" } else { "delete" },
            d.reasons.join("; ")
        );
    }
    for n in &r.notes {
        let _ = writeln!(out, "note: {n}");
    }
    let verb = if dry_run { "would delete" } else { "deleted" };
    let _ = writeln!(
        out,
        "{verb} {} runs, {} files, {}",
        r.deleted_runs().len(),
        r.deleted_files.len(),
        human_bytes(r.freed_bytes)
    );
    Ok(exit::OK)
}

async fn cmd_daemon(cfg: Config, run_now: bool) -> Result<i32, Error> {
    use tokio::signal::unix::{signal, SignalKind};
    let (tx, rx) = tokio::sync::watch::channel(false);
    let mut term = signal(SignalKind::terminate()).map_err(|e| Error::Step {
        what: "installing the SIGTERM handler".into(),
        detail: e.to_string(),
    })?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| Error::Step {
        what: "installing the SIGINT handler".into(),
        detail: e.to_string(),
    })?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: finishing up"),
            _ = int.recv() => tracing::info!("SIGINT: finishing up"),
        }
        let _ = tx.send(true);
    });
    stackback::ops::daemon::daemon(cfg, run_now, rx).await?;
    Ok(exit::OK)
}

async fn cmd_alert_test(cfg: &Config) -> Result<i32, Error> {
    let ev = stackback::notify::Event::test(cfg);
    let mut results = stackback::notify::send(cfg, &ev).await;
    if let Some(url) = &cfg.notify.heartbeat_url {
        let r = stackback::notify::webhook::ping(url.expose()).await;
        results.push(stackback::notify::ChannelResult {
            channel: "heartbeat".into(),
            ok: r.is_ok(),
            detail: cfg.redactor().redact(&r.unwrap_or_else(|e| e)),
        });
    }
    if results.is_empty() {
        return Err(Error::config(
            "alert.webhook_url",
            "no alert channel is configured: set BACKUP_ALERT_WEBHOOK_URL and/or BACKUP_ALERT_EMAIL (with SMTP_HOST)",
        ));
    }
    for r in &results {
        println!(
            "{:<9} {}: {}",
            r.channel,
            if r.ok { "ok" } else { "FAILED" },
            r.detail
        );
    }
    Ok(if results.iter().all(|r| r.ok) {
        exit::OK
    } else {
        exit::FAILED
    })
}

/// The environment file the service reads: this shell's stackback settings (`NAME_FILE`
/// references kept as references). Written 0600 and never overwritten.
fn env_file_content() -> String {
    let mut out = String::from("# stackback settings for the scheduled job (generated by `stackback install`).\n# Edit freely; see `stackback config` for every setting.\n");
    for s in stackback::config::SETTINGS {
        for name in s.env {
            for n in [name.to_string(), format!("{name}_FILE")] {
                if let Ok(v) = std::env::var(&n) {
                    let q = v
                        .replace('\\', "\\\\")
                        .replace('"', "\\\"")
                        .replace('$', "\\$")
                        .replace('`', "\\`");
                    out.push_str(&format!("{n}=\"{q}\"\n"));
                }
            }
        }
    }
    out
}

fn cmd_install(cfg: &Config, cmd: &InstallCommand) -> Result<i32, Error> {
    use stackback::install::{cron_file, systemd_units, write_files, FileOut, InstallSpec};
    let abs = |p: &std::path::Path| -> PathBuf {
        std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
    };
    let binary = std::env::current_exe()
        .and_then(std::fs::canonicalize)
        .map_err(|e| Error::io("cannot find the stackback binary", "/proc/self/exe", e))?;
    let working_dir = std::env::current_dir()
        .map_err(|e| Error::io("cannot read the current directory", ".", e))?;
    let user_mode = matches!(cmd, InstallCommand::Systemd { user: true, .. });
    let home = PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into()));
    let env_file = if user_mode {
        home.join(".config/stackback/stackback.env")
    } else {
        PathBuf::from("/etc/stackback/stackback.env")
    };
    let spec = InstallSpec {
        binary,
        working_dir,
        backup_dir: abs(&cfg.backup.dir),
        env_file: env_file.clone(),
        schedule: cfg.daemon.schedule.expr().to_string(),
        user_mode,
        randomized_delay: match cmd {
            InstallCommand::Systemd {
                randomized_delay, ..
            } => randomized_delay.clone(),
            _ => String::new(),
        },
    };
    let env_out = FileOut {
        path: env_file,
        content: env_file_content(),
        mode: 0o600,
    };
    let (files, dry_run, root, next_steps) = match cmd {
        InstallCommand::Systemd {
            user,
            dry_run,
            root,
            ..
        } => {
            let (service, timer) =
                systemd_units(&spec).map_err(|e| Error::config("schedule.cron", e))?;
            let dir = if *user {
                home.join(".config/systemd/user")
            } else {
                PathBuf::from("/etc/systemd/system")
            };
            let ctl = if *user {
                "systemctl --user"
            } else {
                "systemctl"
            };
            (
                vec![
                    FileOut { path: dir.join("stackback.service"), content: service, mode: 0o644 },
                    FileOut { path: dir.join("stackback.timer"), content: timer, mode: 0o644 },
                    env_out,
                ],
                *dry_run,
                root.clone(),
                format!("{ctl} daemon-reload\n{ctl} enable --now stackback.timer\n{ctl} list-timers stackback.timer\n{ctl} start stackback.service   # a backup now\njournalctl {}-u stackback.service -f", if *user { "--user " } else { "" }),
            )
        }
        InstallCommand::Cron { dry_run, root, log } => {
            let content = cron_file(&spec, log).map_err(|e| Error::config("schedule.cron", e))?;
            (
                vec![FileOut { path: PathBuf::from("/etc/cron.d/stackback"), content, mode: 0o644 }, env_out],
                *dry_run,
                root.clone(),
                format!("cron picks up /etc/cron.d/stackback by itself (or: systemctl restart cron)\ntail -f {}", log.display()),
            )
        }
    };
    if dry_run {
        for f in &files {
            println!("# {} (mode {:o})\n{}", f.path.display(), f.mode, f.content);
        }
        return Ok(exit::OK);
    }
    let written = write_files(&root, &files)?;
    for w in &written {
        println!("wrote {}", w.display());
    }
    println!("next:\n{next_steps}");
    Ok(exit::OK)
}
