//! `stackback list`: every run, newest first, with its change in size (and objects) against the
//! previous run and its size anomalies; unmanaged and leftover files; totals.

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
        let change = r.change.as_ref();
        let objects = change
            .and_then(|c| c.objects_percent)
            .map(|p| format!("objects {}  ", signed(p)))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{}  {:<10} {:>9} {:>8}  {:<10} {objects}{}",
            r.run_id,
            age(r.started_at),
            human_bytes(r.bytes),
            change
                .and_then(|c| c.bytes_percent)
                .map(signed)
                .unwrap_or_default(),
            r.status,
            r.error
                .as_deref()
                .map(|e| e.chars().take(100).collect::<String>())
                .unwrap_or_default()
        );
        for a in &r.anomalies {
            let _ = writeln!(
                out,
                "    ANOMALY{} {}",
                if r.anomalies_acknowledged {
                    " (acknowledged)"
                } else {
                    ""
                },
                a.describe()
            );
        }
        if let Some(t) = &r.restore_test {
            let _ = writeln!(out, "    restore test {}", restore_test_line(t));
        }
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

/// `stackback list --remote [--json]`.
pub async fn remote(cfg: &Config, json: bool) -> Result<i32, Error> {
    let l = stackback::ops::offsite::list(cfg).await?;
    if json {
        let runs: Vec<serde_json::Value> = l
            .runs
            .iter()
            .rev()
            .map(|r| {
                serde_json::json!({
                    "run_id": r.record.run_id.to_string(),
                    "sequence": r.record.sequence,
                    "status": r.record.status,
                    "started_at": r.record.started_at,
                    "bytes": r.bytes,
                    "complete": r.missing.is_empty(),
                    "missing": r.missing,
                    "files": r.record.files().collect::<Vec<_>>(),
                })
            })
            .collect();
        let unreadable: Vec<serde_json::Value> = l
            .unreadable
            .iter()
            .map(|(f, e)| serde_json::json!({"file": f, "error": e}))
            .collect();
        print_json(&serde_json::json!({
            "remote": l.remote,
            "runs": runs,
            "unreadable": unreadable,
            "unnamed_files": l.unnamed,
        }));
        return Ok(exit::OK);
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "remote {}", l.remote);
    for r in l.runs.iter().rev() {
        let _ = writeln!(
            out,
            "{}  {:<10} {:>9}  {:<10} {}",
            r.record.run_id,
            age(r.record.started_at),
            human_bytes(r.bytes),
            r.record.status,
            if r.missing.is_empty() {
                "complete".to_string()
            } else {
                format!("INCOMPLETE: {} missing", r.missing.join(", "))
            }
        );
    }
    for (f, e) in &l.unreadable {
        let _ = writeln!(out, "UNREADABLE {f}: {e}");
    }
    let _ = writeln!(
        out,
        "{} run(s) on the remote, {} in all{}",
        l.runs.len(),
        human_bytes(l.runs.iter().map(|r| r.bytes).sum()),
        if l.unnamed > 0 {
            format!("; {} file(s) no record names", l.unnamed)
        } else {
            String::new()
        }
    );
    Ok(exit::OK)
}

/// `ok 3d ago: 2 tables, 122000 rows, 5 objects read back (3.1 s)`, or why it failed.
pub(crate) fn restore_test_line(t: &stackback::ops::list::RestoreTestSummary) -> String {
    let mut s = format!(
        "{} {}",
        if t.ok { "ok" } else { "FAILED" },
        age(t.tested_at)
    );
    if let (Some(tables), Some(rows)) = (t.tables, t.rows) {
        s.push_str(&format!(": {tables} tables, {rows} rows"));
    }
    if t.objects_sampled > 0 {
        s.push_str(&format!(", {} objects read back", t.objects_sampled));
    }
    s.push_str(&format!(" ({:.1} s)", t.duration_seconds));
    if let Some(e) = t.error.as_deref().filter(|_| !t.ok) {
        s.push_str(&format!(": {}", e.chars().take(160).collect::<String>()));
    }
    s
}

/// `+2.1%`, `-55.0%`, `+0.0%`: a change, signed.
fn signed(p: f64) -> String {
    format!("{p:+.1}%")
}
