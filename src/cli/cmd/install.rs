//! `stackback install systemd|cron`: the scheduled job's files, with the real paths filled in.

use std::path::PathBuf;

use stackback::config::{Config, Key};
use stackback::error::{exit, Error};
use stackback::install::{plan, write_files, Kind, Paths};

use crate::cli::InstallCommand;

pub fn run(cfg: &Config, cmd: &InstallCommand) -> Result<i32, Error> {
    let (kind, dry_run, root) = match cmd {
        InstallCommand::Systemd {
            user,
            dry_run,
            root,
            randomized_delay,
        } => (
            Kind::Systemd {
                user: *user,
                randomized_delay: randomized_delay.clone(),
            },
            *dry_run,
            root,
        ),
        InstallCommand::Cron { dry_run, root, log } => {
            (Kind::Cron { log: log.clone() }, *dry_run, root)
        }
    };
    let backup_dir = cfg.backup_dir();
    let paths = Paths {
        binary: std::env::current_exe()
            .and_then(std::fs::canonicalize)
            .map_err(|e| Error::io("cannot find the stackback binary", "/proc/self/exe", e))?,
        working_dir: std::env::current_dir()
            .map_err(|e| Error::io("cannot read the current directory", ".", e))?,
        backup_dir: std::path::absolute(&backup_dir).unwrap_or(backup_dir),
        home: PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into())),
    };
    let env = std::env::vars().collect();
    let schedule = cfg.schedule()?.schedule.expr().to_string();
    let plan = plan(&kind, &paths, &schedule, &env, dry_run).map_err(|e| Key::Schedule.error(e))?;
    if dry_run {
        for f in &plan.files {
            println!("# {} (mode {:o})\n{}", f.path.display(), f.mode, f.content);
        }
        return Ok(exit::OK);
    }
    for w in write_files(root, &plan.files)? {
        println!("wrote {}", w.display());
    }
    println!("next:\n{}", plan.next_steps);
    Ok(exit::OK)
}
