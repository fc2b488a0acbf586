//! `stackback verify --restore-test`: one restore test, its tables and rows, its objects; exit 3
//! when the backup did not come back as recorded, 1 when the test itself could not run.

use std::io::Write;

use stackback::config::Config;
use stackback::error::Error;
use stackback::ops::restore_test::{RestoreTestOptions, RestoreTestReport};
use stackback::ops::Selector;

pub async fn run(
    cfg: &Config,
    target: Option<&str>,
    full: bool,
    from_remote: bool,
) -> Result<i32, Error> {
    let sel = target.map_or(Selector::Latest, Selector::parse);
    if from_remote {
        // The run is fetched and checked against its record, then tested like a local one; its
        // result is printed, alerted and pushed, and goes away with the scratch copy.
        let fetched =
            stackback::ops::offsite::fetch(cfg, &sel, stackback::catalog::ArtifactKind::Database)
                .await?;
        let local = cfg.with_backup_dir(&fetched.dir, "--from-remote");
        let id = fetched.run_id.to_string();
        let code = Box::pin(run(&local, Some(&id), full, false)).await;
        drop(fetched);
        return code;
    }
    // SIGTERM, SIGINT: the scratch database and bucket are dropped before exiting.
    let signal = crate::cli::signals::stop_requested()?;
    let stop = async move { format!("stopped: {} received", signal.await) };
    let opts = RestoreTestOptions { full };
    let (report, notify) = stackback::ops::restore_test::job(cfg, &sel, &opts, stop, None).await?;
    print(&report);
    for c in notify.channels.iter().chain(&notify.pushgateway) {
        if !c.ok {
            eprintln!("warning: {} failed: {}", c.channel, c.detail);
        }
    }
    if let Some(e) = &report.error {
        crate::cli::report_error(e, &cfg.redactor());
    }
    Ok(report.exit_code())
}

fn print(r: &RestoreTestReport) {
    let t = &r.result;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "restore test of run {} on {}: {} in {:.1} s",
        r.run_id,
        if t.server.is_empty() {
            "-"
        } else {
            t.server.as_str()
        },
        if t.ok { "ok" } else { "FAILED" },
        t.duration_ms as f64 / 1000.0
    );
    for l in &r.leftovers {
        let _ = writeln!(out, "  dropped {l}, left by an interrupted restore test");
    }
    if let Some(d) = &t.database {
        let _ = writeln!(
            out,
            "  database {}: {} tables, {} rows restored; {} tables compared with the counts recorded at backup time",
            d.artifact, d.tables, d.rows, d.compared
        );
    }
    let n = |v: Option<u64>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
    for l in &r.tables {
        let differs = t
            .database
            .as_ref()
            .is_some_and(|d| d.mismatches.iter().any(|m| m.table == l.table));
        let verdict = match (differs, l.recorded, l.restored) {
            (true, ..) => "DIFFERS",
            (false, None, _) => "not recorded",
            (false, Some(a), Some(b)) if a != b => "within tolerance",
            _ => "match",
        };
        let _ = writeln!(
            out,
            "    {:<40} recorded {:>12}{} restored {:>12}  {verdict}",
            l.table,
            n(l.recorded),
            if l.exact { "  " } else { " ~" },
            n(l.restored)
        );
    }
    for b in &t.buckets {
        let _ = writeln!(
            out,
            "  bucket {} ({}): {} of {} objects uploaded and read back, {} differ",
            b.bucket,
            b.artifact,
            b.sampled,
            b.objects,
            b.mismatches.len()
        );
        for m in &b.mismatches {
            let _ = writeln!(out, "    {:?} {}: {}", m.key, m.field, m.detail);
        }
    }
    if !r.recorded {
        let _ = writeln!(out, "  (not recorded)");
    }
}
