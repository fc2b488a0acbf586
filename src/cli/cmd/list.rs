//! `stackback list`: every run, newest first, with unmanaged and leftover files and totals.

use std::io::Write;

use stackback::config::Config;
use stackback::error::{exit, Error};
use stackback::sink::local::BackupDir;
use stackback::units::human_bytes;

use crate::cli::render::{age, count, print_json};

pub fn run(cfg: &Config, json: bool) -> Result<i32, Error> {
    let dir = BackupDir::open(&cfg.backup_dir())?;
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
        "{}: {} ok, {} partial, {} failed, {} incomplete; {} and {}; {} on disk, {} free",
        count(t.runs, "run", "runs"),
        t.ok,
        t.partial,
        t.failed,
        t.incomplete,
        count(t.database_backups, "database backup", "database backups"),
        count(t.bucket_backups, "bucket backup", "bucket backups"),
        human_bytes(t.bytes_on_disk),
        human_bytes(t.free_bytes)
    );
    Ok(exit::OK)
}
