//! `stackback restore db|objects|volume|run`.

use std::io::Write;

use futures_util::FutureExt;

use stackback::config::Config;
use stackback::error::{exit, Error};
use stackback::ops::restore::{
    self, DbRestoreOptions, DbRestoreReport, Existing, ObjectRestoreOptions, ObjectRestoreReport,
};
use stackback::ops::Selector;
use stackback::units::human_bytes;

use stackback::catalog::ArtifactKind;

use crate::cli::{DbRestoreArgs, RestoreArgs, RestoreCommand};

fn existing(overwrite: bool, skip: bool) -> Existing {
    match (overwrite, skip) {
        (true, _) => Existing::Overwrite,
        (_, true) => Existing::Skip,
        _ => Existing::Refuse,
    }
}

fn db_opts(a: &DbRestoreArgs, to_file: Option<std::path::PathBuf>) -> DbRestoreOptions {
    DbRestoreOptions {
        target_db: a.target_db.clone(),
        target_url: a.target_url.clone(),
        create: a.create,
        clean: a.clean,
        yes: a.yes,
        no_owner: a.no_owner,
        to_file,
        jobs: a.jobs.map(usize::from),
    }
}

pub async fn run(cfg: &Config, args: &RestoreArgs) -> Result<i32, Error> {
    if !args.from_remote {
        return restore(cfg, &args.cmd).await;
    }
    // The run comes off the remote into a scratch directory, checked file by file against its
    // record; the restore then reads that directory as it reads the local one.
    let mut cmd = args.cmd.clone();
    let (target, kind) = match &mut cmd {
        RestoreCommand::Db { target, .. } | RestoreCommand::Run { target, .. } => {
            (target, ArtifactKind::Database)
        }
        RestoreCommand::Objects { target, .. } => (target, ArtifactKind::Objects),
        RestoreCommand::Volume { target, .. } => (target, ArtifactKind::Volume),
    };
    let fetched = stackback::ops::offsite::fetch(cfg, &Selector::parse(target), kind).await?;
    println!(
        "fetched run {} from the remote ({}), checked against its record",
        fetched.run_id,
        human_bytes(fetched.bytes)
    );
    let sel_file = matches!(Selector::parse(target), Selector::File(_));
    if !sel_file {
        *target = fetched.run_id.to_string();
    }
    let local = cfg.with_backup_dir(&fetched.dir, "--from-remote");
    let code = restore(&local, &cmd).await;
    drop(fetched);
    code
}

/// SIGTERM and SIGINT as a future of why the restore stops. Installed only where a restore acts
/// on them: elsewhere the signals keep their default of ending the process.
fn stop() -> Result<futures_util::future::BoxFuture<'static, String>, Error> {
    let signal = crate::cli::signals::stop_requested()?;
    Ok(async move { format!("stopped: {} received", signal.await) }.boxed())
}

async fn restore(cfg: &Config, cmd: &RestoreCommand) -> Result<i32, Error> {
    match cmd {
        RestoreCommand::Db {
            target,
            db,
            to_file,
        } => {
            let opts = db_opts(db, to_file.clone());
            // Writing a file needs no cleanup: the signals keep their default there.
            let stop = match to_file {
                Some(_) => std::future::pending().boxed(),
                None => stop()?,
            };
            let r = restore::db::restore_db(cfg, &Selector::parse(target), &opts, stop).await?;
            print_db_restore(&r, to_file.is_some());
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
            let r = restore::restore_run(
                cfg,
                &sel,
                &db_opts(db, None),
                existing(*overwrite, *skip_existing),
                *create_bucket,
                stop()?.shared(),
            )
            .await?;
            print_db_restore(&r.db, false);
            if r.objects.is_empty() {
                println!("no bucket backups in this run");
            }
            print_object_restores(&r.objects);
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
            let reports =
                restore::objects::restore_objects(cfg, &Selector::parse(target), &opts).await?;
            print_object_restores(&reports);
        }
        RestoreCommand::Volume {
            target,
            into,
            force,
        } => {
            let r = restore::volume::restore_volume(cfg, &Selector::parse(target), into, *force)
                .await?;
            println!(
                "extracted {} into {}: {} entries",
                r.artifact,
                r.into.display(),
                r.entries
            );
        }
    }
    Ok(exit::OK)
}

fn print_object_restores(reports: &[ObjectRestoreReport]) {
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

fn print_db_restore(r: &DbRestoreReport, to_file: bool) {
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
            "restored {} into database {}: {} tables, {} rows, {} of SQL over {} in {:.1} s",
            r.artifact,
            r.target,
            r.tables,
            r.rows,
            human_bytes(r.plain_bytes),
            match r.connections {
                1 => "1 connection (one transaction)".to_string(),
                n => format!("{n} connections"),
            },
            r.seconds
        );
    }
}
