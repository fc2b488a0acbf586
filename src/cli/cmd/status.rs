//! `stackback status`: last run, last success, good backups, disk use, warnings; `--check` for
//! health checks.

use std::io::Write;

use stackback::config::Config;
use stackback::error::{exit, Error};
use stackback::sink::local::BackupDir;
use stackback::units::human_bytes;

use crate::cli::render::{age, count, print_json, when};

pub fn run(cfg: &Config, json: bool, check: bool) -> Result<i32, Error> {
    let dir = BackupDir::open(&cfg.backup_dir())?;
    let now = chrono::Utc::now();
    // A broken schedule setting must not hide the status: it only loses the next run.
    let next_run = cfg.schedule().ok().and_then(|s| s.schedule.next_after(now));
    let s = stackback::ops::list::status(&dir, now, cfg.status()?, cfg.anomaly()?, next_run)?;
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
        if let Some(t) = &s.restore_test {
            let _ = writeln!(
                out,
                "restore test: {} (run {}, {}), last passed: {}",
                if t.last_ok { "ok" } else { "FAILED" },
                t.last_run_id,
                age(t.last_tested_at),
                t.last_success_at.map(age).unwrap_or_else(|| "never".into())
            );
        }
        if let Some(a) = &s.anomaly {
            let _ = writeln!(
                out,
                "anomaly:      OPEN in run {}{}; before it: {}",
                a.run_id,
                if a.since == a.run_id {
                    String::new()
                } else {
                    format!(" (since run {})", a.since)
                },
                a.keep
                    .as_ref()
                    .map(|k| format!("run {k} (kept until resolved)"))
                    .unwrap_or_else(|| "no good run".into())
            );
            for x in &a.anomalies {
                let _ = writeln!(out, "              {}", x.describe());
            }
        }
        if let Some(n) = s.next_run {
            let tz = cfg.schedule().map_or(chrono_tz::UTC, |s| s.schedule.tz());
            let _ = writeln!(out, "next run:     {}", when(n, tz));
        }
        let _ = writeln!(
            out,
            "backups:      {}, {} on disk, {} free",
            count(s.good_backups, "good run", "good runs"),
            human_bytes(s.bytes_on_disk),
            human_bytes(s.free_bytes)
        );
        if let Some(r) = &s.remote {
            let _ = writeln!(
                out,
                "off-site:     {} {}, last success {}, {} run(s) there",
                r.remote,
                if r.last_ok == Some(true) {
                    "ok"
                } else {
                    "FAILING"
                },
                r.last_success_at.map(age).unwrap_or_else(|| "never".into()),
                r.runs.len()
            );
        }
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
