//! Command-line interface: the one place that prints and maps errors to exit codes.
//!
//! Every command is: parse → load configuration → one `stackback::ops` call → render its report.
//! [`args`] is the command-line definition; each command lives in [`cmd`], and the shared
//! renderings in [`render`].

mod args;
mod cmd;
mod render;
mod signals;

use clap::Parser;
use stackback::config::{Config, Key, LoadInput};
use stackback::error::{exit, Error};
use stackback::redact::Redactor;

pub(crate) use args::*;

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
    init_logging(cli.verbose, cli.quiet, cli.log_format);
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

fn init_logging(verbose: bool, quiet: bool, format: LogFormat) {
    let default = match (verbose, quiet) {
        (true, _) => "stackback=debug,info",
        (_, true) => "warn",
        _ => "info",
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
            .push((Key::Compression, c.name().to_string(), "--compression"));
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
        Command::Verify {
            target,
            all,
            remote: true,
            restore_test: false,
            ..
        } => cmd::verify::remote(&cfg, target.as_deref(), *all).await,
        Command::Verify {
            restore_test: true,
            target,
            full,
            from_remote,
            ..
        } => cmd::restore_test::run(&cfg, target.as_deref(), *full, *from_remote).await,
        Command::Verify { target, all, .. } => {
            cmd::verify::run(&cfg, target.as_deref(), *all).await
        }
        Command::Config => cmd::config::run(&cfg),
        Command::Daemon { run_now } => cmd::daemon::run(cfg.clone(), *run_now).await,
        Command::Alert(AlertCommand::Test) => cmd::alert::test(&cfg).await,
        Command::Anomaly(AnomalyCommand::Ack { run, note, json }) => {
            cmd::anomaly::ack(&cfg, run, note.clone(), *json).await
        }
        Command::Install(i) => cmd::install::run(&cfg, i),
        Command::Completions { .. } | Command::Man => unreachable!("handled before configuration"),
        Command::Restore(r) => cmd::restore::run(&cfg, r).await,
        Command::List { json, remote: true } => cmd::list::remote(&cfg, *json).await,
        Command::List { json, .. } => cmd::list::run(&cfg, *json),
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
