//! `stackback alert test`: a test message to every configured channel, one line each.

use stackback::config::Config;
use stackback::error::{exit, Error};

pub async fn test(cfg: &Config) -> Result<i32, Error> {
    let notify = cfg.notify()?;
    let redactor = cfg.redactor();
    let ev = stackback::notify::Event::test(notify);
    let mut results = stackback::notify::send(notify, &redactor, &ev).await;
    if let Some(url) = &notify.heartbeat_url {
        let r = stackback::notify::webhook::ping(url.expose()).await;
        results.push(stackback::notify::ChannelResult {
            channel: "heartbeat".into(),
            ok: r.is_ok(),
            detail: redactor.redact(&r.unwrap_or_else(|e| e)),
        });
    }
    if results.is_empty() {
        return Err(Error::config(
            "alert.webhook_url",
            "no alert channel is configured: set BACKUP_ALERT_WEBHOOK_URL and/or BACKUP_ALERT_EMAIL (with SMTP_HOST)",
        ));
    }
    for r in &results {
        println!(
            "{:<9} {}: {}",
            r.channel,
            if r.ok { "ok" } else { "FAILED" },
            r.detail
        );
    }
    Ok(if results.iter().all(|r| r.ok) {
        exit::OK
    } else {
        exit::FAILED
    })
}
