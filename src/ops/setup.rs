//! The daemon's check of its own setup when it starts: the backup directory can be written, the
//! database answers, every bucket answers, alerts have somewhere to go. A container that starts
//! beside its database retries for `BACKUP_STARTUP_GRACE` (the database may still be starting);
//! what is still broken then is reported at once (log, `/healthz` 503, an alert), not at 02:00.

use std::time::Duration;

use crate::config::Config;
use crate::error::Error;
use crate::sink::local::BackupDir;

/// What the check found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetupReport {
    /// Things that will make every backup fail.
    pub problems: Vec<String>,
    /// Things that work but should be looked at (no alert channel, say).
    pub warnings: Vec<String>,
}

/// Checks once.
pub async fn check(cfg: &Config) -> SetupReport {
    let redactor = cfg.redactor();
    let mut r = SetupReport::default();
    let mut problem = |what: &str, e: Error| {
        let hint = e
            .hint()
            .map(|h| format!(" (hint: {h})"))
            .unwrap_or_default();
        r.problems
            .push(redactor.redact(&format!("{what}: {e}{hint}")));
    };
    if let Err(e) = writable(cfg) {
        problem("backup directory", e);
    }
    match cfg.postgres() {
        Ok(pg) => {
            if let Err(e) = crate::source::postgres::probe(pg).await {
                problem("database", e);
            }
        }
        Err(e) => problem("database settings", e),
    }
    match cfg.objects() {
        Ok(o) if o.s3_enabled() => match crate::s3::client(o, None) {
            Ok(client) => {
                for b in &o.buckets {
                    if let Err(e) = crate::s3::check_bucket(&client, b).await {
                        problem(&format!("bucket {b}"), e);
                    }
                }
            }
            Err(e) => problem("bucket settings", e),
        },
        Ok(o) => {
            if let Some(d) = o.data_dir.as_ref().filter(|d| !d.is_dir()) {
                problem(
                    "volume mode",
                    Error::NotFound(format!("MINIO_DATA_DIR {} is not a directory", d.display())),
                );
            }
        }
        Err(e) => problem("bucket settings", e),
    }
    if let Ok(n) = cfg.notify() {
        if n.webhook_url.is_none() && n.emails.is_empty() && n.heartbeat_url.is_none() {
            r.warnings.push(
                "no alert channel is configured (BACKUP_ALERT_WEBHOOK_URL, BACKUP_ALERT_EMAIL, BACKUP_HEARTBEAT_URL): a failed backup will only show in the log and on /healthz".into(),
            );
        }
    }
    r
}

/// The directory exists (or can be made) and takes a file.
fn writable(cfg: &Config) -> crate::error::Result<()> {
    let dir = BackupDir::create(&cfg.backup_dir())?;
    let probe = dir.create_temp("setup-check")?;
    drop(probe);
    Ok(())
}

/// Checks until everything works or `grace` is over, every `every`. Returns the last report.
pub async fn check_with_grace(cfg: &Config, grace: Duration, every: Duration) -> SetupReport {
    let deadline = tokio::time::Instant::now() + grace;
    loop {
        let r = check(cfg).await;
        if r.problems.is_empty() || tokio::time::Instant::now() + every > deadline {
            return r;
        }
        tracing::info!(problems = %r.problems.join("; "), "setup not ready yet: checking again");
        tokio::time::sleep(every).await;
    }
}
