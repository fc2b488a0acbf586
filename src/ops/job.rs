//! One backup job, as cron, systemd and the daemon start it: the run, then what people and
//! monitoring hear of it (alerts, heartbeat, metrics push). The CLI's `run` and the daemon both
//! come through here, so they cannot drift apart.

use crate::config::Config;
use crate::error::{Error, Result};
use crate::notify::metrics::DaemonCounters;
use crate::notify::{self, Event, NotifyReport};
use crate::ops::backup::{self, RunReport};
use crate::progress::Progress;

/// What a job did.
#[derive(Debug)]
pub struct JobReport {
    /// The run, or why none could start.
    pub run: std::result::Result<RunReport, Error>,
    pub notify: NotifyReport,
}

impl JobReport {
    /// The exit code: the run's, or the start failure's.
    pub fn exit_code(&self) -> i32 {
        match &self.run {
            Ok(r) => r.exit_code(),
            Err(e) => e.exit_code(),
        }
    }
}

/// Runs one backup (aborted cleanly when `stop` completes first) and notifies.
///
/// # Errors
/// Only when the alert settings themselves are invalid: then nobody could be told of anything.
pub async fn run(
    cfg: &Config,
    stop: impl std::future::Future<Output = String>,
    progress: &Progress,
    daemon: Option<&DaemonCounters>,
) -> Result<JobReport> {
    let notify_cfg = cfg.notify()?;
    let run = backup::run_until(cfg, stop, progress).await;
    let notify = match &run {
        Ok(report) => notify::after_run(cfg, notify_cfg, &report.record, daemon).await,
        // Another run holds the lock: that run reports for itself.
        Err(Error::Locked { .. }) => NotifyReport::default(),
        Err(e) if daemon.is_some() => {
            let redactor = cfg.redactor();
            let text = redactor.redact(&format!(
                "{e}{}",
                e.hint()
                    .map(|h| format!(" (hint: {h})"))
                    .unwrap_or_default()
            ));
            let ev = Event::start_failure(notify_cfg, text);
            NotifyReport {
                events: vec![ev.event],
                channels: notify::send(notify_cfg, &redactor, &ev).await,
                ..NotifyReport::default()
            }
        }
        Err(_) => NotifyReport::default(),
    };
    Ok(JobReport { run, notify })
}
