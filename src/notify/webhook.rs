//! Webhook alerts: Slack-compatible `{"text": ...}`, Discord `{"content": ...}`, or a generic
//! JSON document with the structured fields; and the heartbeat ping.

use crate::config::WebhookFormat;

use super::Event;

/// The payload for `format`; `auto` picks Discord for Discord webhook URLs, Slack otherwise.
pub fn payload(url: &str, format: WebhookFormat, ev: &Event) -> serde_json::Value {
    let format = match format {
        WebhookFormat::Auto
            if url.contains("discord.com/api/webhooks")
                || url.contains("discordapp.com/api/webhooks") =>
        {
            WebhookFormat::Discord
        }
        WebhookFormat::Auto => WebhookFormat::Slack,
        f => f,
    };
    match format {
        WebhookFormat::Discord => {
            // Discord rejects content over 2,000 characters.
            let text: String = ev.text().chars().take(1990).collect();
            serde_json::json!({ "content": text })
        }
        WebhookFormat::Generic => {
            let mut v = serde_json::to_value(ev).expect("events serialise");
            v["text"] = serde_json::Value::String(ev.text());
            v
        }
        _ => serde_json::json!({ "text": ev.text() }),
    }
}

pub async fn post(url: &str, format: WebhookFormat, ev: &Event) -> Result<String, String> {
    let body = payload(url, format, ev);
    let resp = super::http()
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .map_err(|e| format!("webhook request failed: {}", without_url(&e)))?;
    let status = resp.status();
    if status.is_success() {
        Ok(format!("HTTP {}", status.as_u16()))
    } else {
        Err(format!("webhook answered HTTP {}", status.as_u16()))
    }
}

/// GET a heartbeat URL.
pub async fn ping(url: &str) -> Result<String, String> {
    let resp = super::http()
        .get(url)
        .send()
        .await
        .map_err(|e| format!("heartbeat request failed: {}", without_url(&e)))?;
    if resp.status().is_success() {
        Ok(format!("HTTP {}", resp.status().as_u16()))
    } else {
        Err(format!(
            "heartbeat answered HTTP {}",
            resp.status().as_u16()
        ))
    }
}

/// reqwest errors print the URL, and webhook URLs carry their token: leave it out.
fn without_url(e: &reqwest::Error) -> String {
    let mut s = error_chain(e);
    if let Some(u) = e.url() {
        s = s.replace(u.as_str(), "<url>");
    }
    s
}

/// A reqwest error with its causes: its own text leaves out the one that matters (the
/// certificate, the refused connection, the timeout).
pub(super) fn error_chain(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s.push_str(&format!(": {inner}"));
        src = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::EventKind;

    fn ev() -> Event {
        Event {
            event: EventKind::Failure,
            run_id: Some("20260101_020000".into()),
            host: "db1".into(),
            status: Some(crate::catalog::RunState::Failed),
            failed_step: Some(crate::catalog::Step::Database),
            error: Some("pg_dump failed".into()),
            started_at: None,
            finished_at: None,
            backup_dir: "/backups".into(),
            anomalies: Vec::new(),
        }
    }

    #[test]
    fn formats() {
        let s = payload(
            "https://hooks.slack.com/services/T/B/X",
            WebhookFormat::Auto,
            &ev(),
        );
        assert!(s["text"].as_str().unwrap().contains("FAILED"));
        let d = payload(
            "https://discord.com/api/webhooks/1/abc",
            WebhookFormat::Auto,
            &ev(),
        );
        assert!(d["content"].as_str().unwrap().contains("pg_dump failed"));
        let g = payload("https://example.com/hook", WebhookFormat::Generic, &ev());
        assert_eq!(g["event"], "failure");
        assert_eq!(g["run_id"], "20260101_020000");
        assert_eq!(g["failed_step"], "database");
        assert_eq!(g["host"], "db1");
    }
}
