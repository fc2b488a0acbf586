//! Telling humans and monitoring: alerts (webhook, email), the dead-man's heartbeat, and metrics.
//!
//! After every run, daemon or manual, [`after_run`] derives the events the run deserves
//! ([`events_for`], pure: failures, warnings, size anomalies, successes), sends each to every configured channel with timeouts and retries,
//! pings the heartbeat, and pushes metrics to the Pushgateway. A failing channel is logged and
//! reported, never turned into a failure of the backup itself.

pub mod email;
pub mod metrics;
pub mod webhook;

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::catalog::{RunRecord, RunState, Step};
use crate::config::{AlertOn, Config, NotifyConfig};
use crate::redact::Redactor;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Failure,
    Warning,
    Recovered,
    Success,
    Test,
    /// The local backup is good; its off-site copy failed.
    Offsite,
    /// A restore test of a backup failed: the backup may not come back.
    #[serde(rename = "restore_test_failure")]
    RestoreTestFailure,
    /// A good run differs from the recent good runs beyond bounds (a table lost rows, a bucket
    /// lost objects): the backup is valid, what it holds may not be.
    Anomaly,
}

/// Something a human should hear about.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub event: EventKind,
    pub run_id: Option<String>,
    pub host: String,
    pub status: Option<RunState>,
    pub failed_step: Option<Step>,
    pub error: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub backup_dir: String,
    /// The figures of an anomaly event: which value, the median before, the value now.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub anomalies: Vec<crate::catalog::Anomaly>,
}

impl Event {
    pub fn test(cfg: &NotifyConfig) -> Event {
        Event {
            event: EventKind::Test,
            run_id: None,
            host: crate::catalog::host_name(),
            status: None,
            failed_step: None,
            error: None,
            started_at: None,
            finished_at: Some(Utc::now()),
            backup_dir: cfg.backup_dir.display().to_string(),
            anomalies: Vec::new(),
        }
    }

    /// A failure before any run record existed (the directory, the lock, a setting).
    pub fn start_failure(cfg: &NotifyConfig, error: String) -> Event {
        Event {
            event: EventKind::Failure,
            status: Some(RunState::Failed),
            failed_step: Some(Step::Start),
            error: Some(error),
            ..Event::test(cfg)
        }
    }

    /// One line, for chat titles and email subjects.
    pub fn title(&self) -> String {
        let run = self.run_id.as_deref().unwrap_or("-");
        match self.event {
            EventKind::Failure => format!(
                "stackback: backup {} on {} (run {run}, step {})",
                if self.status == Some(RunState::Partial) {
                    "PARTIALLY FAILED"
                } else {
                    "FAILED"
                },
                self.host,
                self.failed_step
                    .as_ref()
                    .map_or_else(|| "?".to_string(), Step::to_string)
            ),
            EventKind::Warning => format!("stackback: backup warning on {} (run {run})", self.host),
            EventKind::Recovered => {
                format!("stackback: backups recovered on {} (run {run})", self.host)
            }
            EventKind::Success => format!("stackback: backup ok on {} (run {run})", self.host),
            EventKind::Test => format!("stackback: test alert from {}", self.host),
            EventKind::Offsite => format!(
                "stackback: OFF-SITE COPY FAILED on {} (run {run}; the local backup is good)",
                self.host
            ),
            EventKind::RestoreTestFailure => format!(
                "stackback: RESTORE TEST FAILED on {} (backup run {run}): the backup may not restore",
                self.host
            ),
            EventKind::Anomaly => {
                // The biggest change names the alert; the text lists them all.
                let biggest = self
                    .anomalies
                    .iter()
                    .max_by(|a, b| a.change_percent.abs().total_cmp(&b.change_percent.abs()));
                let first = biggest.map_or(String::new(), |a| {
                    format!(": {} {} {:+.1} %", a.metric.subject_kind(), a.subject, a.change_percent)
                });
                format!(
                    "stackback: backup size ANOMALY on {} (run {run}){first}",
                    self.host
                )
            }
        }
    }

    /// The whole message: what failed, the error, and the first command to investigate.
    pub fn text(&self) -> String {
        let mut t = self.title();
        if !self.anomalies.is_empty() {
            t.push_str(
                "\nThe backup is valid (verified, status ok), but it differs from the recent good runs:",
            );
            for a in &self.anomalies {
                t.push_str(&format!("\n- {}", a.describe()));
            }
        }
        if let Some(e) = &self.error {
            t.push_str(&format!("\nError: {e}"));
        }
        if let (Some(s), Some(f)) = (self.started_at, self.finished_at) {
            t.push_str(&format!(
                "\nRun: {} to {} UTC",
                s.format("%Y-%m-%d %H:%M:%S"),
                f.format("%H:%M:%S")
            ));
        }
        t.push_str(&format!("\nBackup directory: {}", self.backup_dir));
        match self.event {
            EventKind::Failure | EventKind::Warning | EventKind::Offsite => t.push_str(&format!(
                "\nInvestigate: stackback status; stackback list; the log of the run ({}).",
                self.run_id
                    .as_deref()
                    .map(|r| format!("run_{r}.json in the backup directory"))
                    .unwrap_or_else(|| "journalctl -u stackback or docker logs".into())
            )),
            EventKind::Test => t.push_str("\nThis is a test message: the channel works."),
            EventKind::Anomaly => t.push_str(&format!(
                "\nThe last good run before it is kept, whatever the retention policy says, until a run is back within bounds.\nInvestigate: stackback list (each run's change); if the change is expected: stackback anomaly ack {}.",
                self.run_id.as_deref().unwrap_or("RUN")
            )),
            EventKind::RestoreTestFailure => t.push_str(&format!(
                "\nInvestigate: stackback list; the restore_test section of run_{}.json in the backup directory; stackback verify --restore-test {0} to run it again.",
                self.run_id.as_deref().unwrap_or("latest")
            )),
            _ => {}
        }
        t
    }
}

/// The events a finished run deserves under the alert policy.
pub fn events_for(cfg: &NotifyConfig, rec: &RunRecord, previous: Option<&RunRecord>) -> Vec<Event> {
    let base = |event: EventKind, error: Option<String>| Event {
        event,
        run_id: Some(rec.run_id.to_string()),
        host: rec.host.clone(),
        status: Some(rec.status),
        failed_step: rec.failed_step.clone(),
        error,
        started_at: Some(rec.started_at),
        finished_at: rec.finished_at,
        backup_dir: cfg.backup_dir.display().to_string(),
        anomalies: Vec::new(),
    };
    let mut out = Vec::new();
    if rec.status != RunState::Ok {
        out.push(base(EventKind::Failure, rec.error.clone()));
        return out;
    }
    // Whatever BACKUP_ALERT_ON says: a backup of a database that lost half its rows is news.
    if let Some(found) = rec.anomalies.as_ref().filter(|a| !a.is_empty()) {
        out.push(Event {
            anomalies: found.clone(),
            ..base(EventKind::Anomaly, None)
        });
    }
    let mut warnings: Vec<String> = Vec::new();
    if let Some(low) = &rec.low_space {
        warnings.push(format!(
            "low free space: only {} free in {}; the last backup took {}",
            crate::units::human_bytes(low.free_bytes),
            cfg.backup_dir.display(),
            crate::units::human_bytes(low.previous_bytes)
        ));
    }
    if let Some(e) = rec.prune.as_ref().and_then(|p| p.error.clone()) {
        warnings.push(format!("pruning old backups failed: {e}"));
    }
    if !warnings.is_empty() {
        out.push(base(EventKind::Warning, Some(warnings.join("; "))));
    }
    let was_bad = previous.is_some_and(|p| p.status != RunState::Ok);
    match cfg.on {
        AlertOn::Always => out.push(base(EventKind::Success, None)),
        AlertOn::Change if was_bad => out.push(base(EventKind::Recovered, None)),
        _ => {}
    }
    out
}

/// How one channel did.
#[derive(Debug, Clone, Serialize)]
pub struct ChannelResult {
    pub channel: String,
    pub ok: bool,
    pub detail: String,
}

/// Sends an event to every configured channel.
pub async fn send(cfg: &NotifyConfig, redactor: &Redactor, ev: &Event) -> Vec<ChannelResult> {
    let mut out = Vec::new();
    if let Some(url) = &cfg.webhook_url {
        let r = retry(|| webhook::post(url.expose(), cfg.webhook_format, ev)).await;
        out.push(result("webhook", r, redactor));
    }
    if !cfg.emails.is_empty() {
        let r = retry(|| email::send(&cfg.smtp, &cfg.emails, ev)).await;
        out.push(result("email", r, redactor));
    }
    out
}

/// Pings the heartbeat URL (the good one, or `<url>/fail`), when one is configured.
pub async fn heartbeat(cfg: &NotifyConfig, redactor: &Redactor, ok: bool) -> Option<ChannelResult> {
    let url = cfg.heartbeat_url.as_ref()?;
    let target = if ok {
        url.expose().to_string()
    } else {
        format!("{}/fail", url.expose().trim_end_matches('/'))
    };
    let r = retry(|| webhook::ping(&target)).await;
    Some(result("heartbeat", r, redactor))
}

fn result(channel: &str, r: Result<String, String>, redactor: &Redactor) -> ChannelResult {
    match r {
        Ok(d) => ChannelResult {
            channel: channel.into(),
            ok: true,
            detail: d,
        },
        Err(e) => {
            let e = redactor.redact(&e);
            tracing::warn!(channel, error = %e, "alert channel failed");
            ChannelResult {
                channel: channel.into(),
                ok: false,
                detail: e,
            }
        }
    }
}

/// Three attempts, 1 s then 2 s apart.
async fn retry<F, Fut>(mut f: F) -> Result<String, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<String, String>>,
{
    let mut last = String::new();
    for attempt in 0..3u32 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_secs(u64::from(attempt))).await;
        }
        match f().await {
            Ok(d) => return Ok(d),
            Err(e) => last = e,
        }
    }
    Err(format!("{last} (after 3 attempts)"))
}

/// What happened after a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NotifyReport {
    pub events: Vec<EventKind>,
    pub channels: Vec<ChannelResult>,
    pub heartbeat: Option<ChannelResult>,
    pub pushgateway: Option<ChannelResult>,
}

/// Alerts, heartbeat and metrics push for a finished run. Never fails.
pub async fn after_run(
    cfg: &Config,
    notify: &NotifyConfig,
    rec: &RunRecord,
    daemon: Option<&metrics::DaemonCounters>,
) -> NotifyReport {
    let redactor = cfg.redactor();
    let mut report = NotifyReport::default();
    let previous = crate::sink::local::BackupDir::open(&cfg.backup_dir())
        .ok()
        .and_then(|d| crate::catalog::Catalog::new(d).records().ok())
        // The run before this one in the sequence: a clock that jumped must not pick another.
        .and_then(|rs| rs.into_iter().rfind(|r| r.order() < rec.order()));
    for ev in events_for(notify, rec, previous.as_ref()) {
        report.events.push(ev.event);
        report.channels.extend(send(notify, &redactor, &ev).await);
    }
    report.heartbeat = heartbeat(notify, &redactor, rec.status == RunState::Ok).await;
    report.pushgateway = push_metrics(cfg, notify, &redactor, daemon).await;
    report
}

/// The alert for a good run whose off-site copy failed (sent whatever BACKUP_ALERT_ON says: the
/// backup no longer survives the loss of this host).
pub async fn offsite_failed(
    cfg: &Config,
    notify: &NotifyConfig,
    rec: &RunRecord,
    error: &str,
) -> (EventKind, Vec<ChannelResult>) {
    let redactor = cfg.redactor();
    let ev = Event {
        anomalies: Vec::new(),
        event: EventKind::Offsite,
        run_id: Some(rec.run_id.to_string()),
        host: rec.host.clone(),
        status: Some(rec.status),
        failed_step: None,
        error: Some(redactor.redact(error)),
        started_at: Some(rec.started_at),
        finished_at: rec.finished_at,
        backup_dir: notify.backup_dir.display().to_string(),
    };
    (ev.event, send(notify, &redactor, &ev).await)
}

/// After a restore test: an alert when it failed (whatever BACKUP_ALERT_ON says: a backup that
/// does not restore is always news), and a metrics push. Never fails.
pub async fn after_restore_test(
    cfg: &Config,
    notify: &NotifyConfig,
    run_id: &crate::catalog::RunId,
    result: &crate::catalog::RestoreTestRecord,
    daemon: Option<&metrics::DaemonCounters>,
) -> NotifyReport {
    let redactor = cfg.redactor();
    let mut report = NotifyReport::default();
    if !result.ok {
        let ev = Event {
            event: EventKind::RestoreTestFailure,
            run_id: Some(run_id.to_string()),
            host: crate::catalog::host_name(),
            status: None,
            failed_step: None,
            error: Some(result.summary()),
            started_at: Some(result.started_at),
            finished_at: Some(result.finished_at),
            backup_dir: notify.backup_dir.display().to_string(),
            anomalies: Vec::new(),
        };
        report.events.push(ev.event);
        report.channels = send(notify, &redactor, &ev).await;
    }
    report.pushgateway = push_metrics(cfg, notify, &redactor, daemon).await;
    report
}

/// For a run that never started: `backup_success 0` and the time, added to what the Pushgateway
/// holds (POST), so the last success it has stays there for the staleness alert.
pub async fn push_start_failure(
    cfg: &Config,
    notify: &NotifyConfig,
    redactor: &Redactor,
) -> Option<ChannelResult> {
    let target = notify.pushgateway.as_ref()?;
    let text = metrics::start_failure_text(cfg);
    let r = retry(|| metrics::send(target, &text, metrics::Push::Add)).await;
    Some(result("pushgateway", r, redactor))
}

/// Pushes the metrics rendered from the run records, when a Pushgateway is configured.
pub async fn push_metrics(
    cfg: &Config,
    notify: &NotifyConfig,
    redactor: &Redactor,
    daemon: Option<&metrics::DaemonCounters>,
) -> Option<ChannelResult> {
    let target = notify.pushgateway.as_ref()?;
    let r = match metrics::render(cfg, daemon) {
        Ok(text) => retry(|| metrics::send(target, &text, metrics::Push::Replace)).await,
        Err(e) => Err(e.to_string()),
    };
    Some(result("pushgateway", r, redactor))
}

/// An HTTP client with a timeout: no channel may hang a run.
pub(crate) fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(5))
        .user_agent(concat!("stackback/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("a client with a timeout always builds")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{Anomaly, AnomalyMetric, AnomalyRule, RunId};

    #[test]
    fn an_anomalous_good_run_alerts_with_its_figures_whatever_alert_on_says() {
        let cfg = Config::load(&crate::config::LoadInput::default()).unwrap();
        let notify = cfg.notify().unwrap();
        assert_eq!(notify.on, AlertOn::Failure);
        let mut rec = RunRecord::new(RunId::from_time(Utc::now()), Utc::now());
        rec.status = RunState::Ok;
        assert!(events_for(notify, &rec, None).is_empty());
        rec.anomalies = Some(vec![
            Anomaly {
                metric: AnomalyMetric::DumpBytes,
                subject: "app".into(),
                before: 10_000_000,
                now: 4_500_000,
                change_percent: -55.0,
                rule: AnomalyRule::Drop,
                runs: 3,
            },
            Anomaly {
                metric: AnomalyMetric::TableRows,
                subject: "public.orders".into(),
                before: 120_000,
                now: 48_000,
                change_percent: -60.0,
                rule: AnomalyRule::Drop,
                runs: 3,
            },
        ]);
        let ev = events_for(notify, &rec, None);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].event, EventKind::Anomaly);
        let title = ev[0].title();
        assert!(
            title.contains("ANOMALY") && title.contains("table public.orders -60.0 %"),
            "{title}"
        );
        let text = ev[0].text();
        for want in [
            "table public.orders: 120000 rows → 48000 rows (-60.0 %",
            "database dump app:",
            &format!("stackback anomaly ack {}", rec.run_id),
        ] {
            assert!(text.contains(want), "{want}: {text}");
        }
        // Checked and within bounds: nothing to say.
        rec.anomalies = Some(Vec::new());
        assert!(events_for(notify, &rec, None).is_empty());
    }
}
