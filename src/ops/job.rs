//! One backup job, as cron, systemd and the daemon start it: the run, bounded by BACKUP_TIMEOUT,
//! then what people and monitoring hear of it (alerts, heartbeat, metrics push). The CLI's `run`
//! and the daemon both come through here, so they cannot drift apart.
//!
//! A run that cannot even start (an unusable directory, a broken setting, a stuck lock) has no
//! run record, and under cron or systemd nobody would notice: it is alerted, the heartbeat gets
//! `/fail`, and the Pushgateway gets `backup_success 0` without losing the last success it holds.
//! A lock held by a run that is still going is not a failure (that run reports for itself),
//! unless the lock is older than BACKUP_TIMEOUT: then the run holding it is stuck.

use std::time::Duration;

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

/// The run is aborted cleanly once this long: the message its record keeps.
pub async fn timeout(limit: Duration) -> String {
    tokio::time::sleep(limit).await;
    format!(
        "aborted: the run exceeded BACKUP_TIMEOUT ({} s)",
        limit.as_secs()
    )
}

/// Runs one backup, aborted cleanly at BACKUP_TIMEOUT or when `stop` completes first, and
/// notifies.
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
    for w in cfg.warnings() {
        tracing::warn!("configuration: {w}");
    }
    let run = match cfg.run_timeout() {
        Ok(limit) => {
            let stop = async move {
                tokio::select! {
                    why = timeout(limit) => why,
                    why = stop => why,
                }
            };
            backup::run_until(cfg, stop, progress).await
        }
        Err(e) => Err(e),
    };
    let notify = match &run {
        Ok(report) => {
            let mut n = notify::after_run(cfg, notify_cfg, &report.record, daemon).await;
            if let Some(e) = report.offsite_error() {
                let mut text = e.to_string();
                if let Some(h) = e.hint() {
                    text.push_str(&format!(" (hint: {h})"));
                }
                let (kind, channels) =
                    notify::offsite_failed(cfg, notify_cfg, &report.record, &text).await;
                n.events.push(kind);
                n.channels.extend(channels);
            }
            n
        }
        Err(e) if !start_failure_is_news(cfg, e) => NotifyReport::default(),
        Err(e) => start_failure(cfg, e).await,
    };
    Ok(JobReport { run, notify })
}

/// Whether a run that could not start must be reported: always, except for a lock held by a run
/// that is still within BACKUP_TIMEOUT.
fn start_failure_is_news(cfg: &Config, e: &Error) -> bool {
    match e {
        Error::Locked { age, .. } => {
            let limit = cfg.run_timeout().unwrap_or(Duration::from_secs(6 * 3600));
            age.is_some_and(|a| a > limit)
        }
        _ => true,
    }
}

/// Alert, `/fail` ping and a metrics push for a run that never started.
async fn start_failure(cfg: &Config, e: &Error) -> NotifyReport {
    let Ok(notify_cfg) = cfg.notify() else {
        return NotifyReport::default();
    };
    let redactor = cfg.redactor();
    let mut text = e.to_string();
    if let Error::Locked { .. } = e {
        text.push_str(": longer than BACKUP_TIMEOUT, so the run holding it is stuck; find it (the pid above) and stop it");
    }
    if let Some(h) = e.hint() {
        text.push_str(&format!(" (hint: {h})"));
    }
    let ev = Event::start_failure(notify_cfg, redactor.redact(&text));
    NotifyReport {
        events: vec![ev.event],
        channels: notify::send(notify_cfg, &redactor, &ev).await,
        heartbeat: notify::heartbeat(notify_cfg, &redactor, false).await,
        pushgateway: notify::push_start_failure(cfg, notify_cfg, &redactor).await,
    }
}
