//! `stackback run`: one backup job, with a progress bar on a terminal.

use std::io::Write;
use std::sync::Arc;

use stackback::config::Config;
use stackback::error::Error;
use stackback::progress::Progress;
use stackback::units::human_bytes;

pub async fn run(cfg: &Config, json_logs: bool) -> Result<i32, Error> {
    let progress = Arc::new(Progress::default());
    let bar = progress_bar(progress.clone(), json_logs);
    // A stop from systemd (`systemctl stop`, TimeoutStartSec), docker or Ctrl-C aborts the run
    // like BACKUP_TIMEOUT does: children killed, temp files removed, the run recorded as failed
    // and alerted. Dying by the signal's default would leave a silent `running` record.
    let signal = crate::cli::signals::stop_requested()?;
    let stop = async move {
        let name = signal.await;
        format!("aborted: {name} received (the run was stopped by the system or an operator)")
    };
    let job = stackback::ops::job::run(cfg, stop, &progress, None).await;
    if let Some((bar, ticker)) = bar {
        ticker.abort();
        bar.finish_and_clear();
    }
    let stackback::ops::job::JobReport { run, notify } = job?;
    let report = run?;
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
            cfg.backup_dir().join(&a.file).display(),
            human_bytes(a.stored_bytes),
            human_bytes(a.plain_bytes),
            a.verification.detail
        );
    }
    for w in &r.warnings {
        let _ = writeln!(out, "  warning: {w}");
    }
    if let Some(o) = &report.offsite {
        let _ = writeln!(
            out,
            "  off-site  {}: {} run(s) copied and checked, {} in {:.1} s{}{}",
            o.remote,
            o.copied.len(),
            human_bytes(o.bytes),
            o.seconds,
            if o.pending > 0 {
                format!(", {} still to copy", o.pending)
            } else {
                String::new()
            },
            if o.deleted_runs.is_empty() {
                String::new()
            } else {
                format!(
                    ", {} deleted by the remote's retention",
                    o.deleted_runs.len()
                )
            }
        );
    }
    drop(out);
    let n = &notify;
    for c in n.channels.iter().chain(&n.heartbeat).chain(&n.pushgateway) {
        if !c.ok {
            eprintln!("warning: {} failed: {}", c.channel, c.detail);
        }
    }
    if let Some(e) = &report.error {
        eprintln!(
            "error: run {} failed at step {}: {}",
            r.run_id,
            r.failed_step
                .as_ref()
                .map_or_else(|| "?".to_string(), |s| s.to_string()),
            cfg.redactor().redact(&e.to_string())
        );
        if let Some(h) = e.hint() {
            eprintln!("hint: {h}");
        }
    }
    if let Some(e) = report.offsite_error() {
        eprintln!(
            "error: run {}: the local backup is good, but its off-site copy failed: {}",
            r.run_id,
            cfg.redactor().redact(&e.to_string())
        );
        if let Some(h) = e.hint() {
            eprintln!("hint: {h}");
        }
    }
    Ok(report.exit_code())
}

/// A progress bar on stderr while the run goes, only on a terminal with text logs.
fn progress_bar(
    progress: Arc<Progress>,
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
