//! `stackback install systemd|cron`: the scheduled job's files, with the real paths filled in.

use std::path::PathBuf;

use stackback::config::{Config, Key};
use stackback::error::{exit, Error};
use stackback::install::{execute, plan, Kind, Paths, Schedule};

use crate::cli::InstallCommand;

pub fn run(cfg: &Config, cmd: &InstallCommand) -> Result<i32, Error> {
    let (kind, name, dry_run, root) = match cmd {
        InstallCommand::Compose {
            stack_dir,
            dry_run,
            force,
        } => return compose(stack_dir, *dry_run, *force),
        InstallCommand::Systemd {
            name,
            user,
            dry_run,
            root,
            randomized_delay,
        } => (
            Kind::Systemd {
                user: *user,
                randomized_delay: randomized_delay.clone(),
            },
            name,
            *dry_run,
            root,
        ),
        InstallCommand::Cron {
            name,
            dry_run,
            root,
            log,
        } => (Kind::Cron { log: log.clone() }, name, *dry_run, root),
    };
    if name.is_empty() || name.contains(['/', ' ']) || name.starts_with('.') {
        return Err(Error::Usage(format!(
            "--name {name:?}: a unit or file name has no slash, space or leading dot"
        )));
    }
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
    let sched = cfg.schedule()?;
    let schedule = Schedule {
        name: name.clone(),
        cron: sched.schedule.expr().to_string(),
        timezone: sched.schedule.tz(),
        timeout: sched.timeout,
        stop_grace: sched.stop_grace,
    };
    let env = std::env::vars().collect();
    let plan = plan(&kind, &paths, &schedule, &env, dry_run).map_err(|e| Key::Schedule.error(e))?;
    if dry_run {
        for f in &plan.files {
            println!("# {} (mode {:o})\n{}", f.path.display(), f.mode, f.content);
        }
        for d in &plan.dirs {
            println!("# and the directory {} (mode 700)", d.display());
        }
        return Ok(exit::OK);
    }
    for w in execute(root, &plan)? {
        println!("wrote {}", w.display());
    }
    println!("next:\n{}", plan.next_steps);
    Ok(exit::OK)
}

fn compose(dir: &std::path::Path, dry_run: bool, force: bool) -> Result<i32, Error> {
    let r = stackback::install::compose::install(dir, dry_run, force)?;
    let s = &r.stack;
    println!(
        "stack {}: PostgreSQL service {}, MinIO service {}, network {}",
        s.project,
        s.postgres,
        s.minio.as_deref().unwrap_or("(none)"),
        s.network.as_deref().unwrap_or("default")
    );
    if dry_run {
        println!("# {}\n{}", r.override_file.display(), r.override_content);
        for l in &r.env_added {
            println!("# {} += {l}", r.env_file.display());
        }
        return Ok(exit::OK);
    }
    println!("wrote {}", r.override_file.display());
    for l in &r.env_added {
        println!("added to {}: {l}", r.env_file.display());
    }
    println!(
        "next:\n  docker build -t stackback:latest -f deploy/Dockerfile .   # in a stackback checkout, once\n  mkdir -p backups && sudo chown 10001 backups\n  docker compose -f docker-compose.yml -f docker-compose.backup.yml up -d backup"
    );
    Ok(exit::OK)
}
