//! Alerts and metrics against real receivers: an SMTP server, an HTTP receiver, a Pushgateway.

use crate::support::notify::{Pushgateway, Receiver, Smtp};
use crate::support::*;

fn broken(env: Vec<(String, String)>) -> Vec<(String, String)> {
    with(env, &[("POSTGRES_PASSWORD", "wrong-password")])
}

#[test]
fn a_failed_run_reaches_webhook_and_email_within_seconds() {
    let c = cluster();
    let tmp = tempfile::tempdir().unwrap();
    let smtp = Smtp::start();
    let hook = Receiver::start();
    let env = broken(with(
        c.env(&c.empty_db("nodump"), tmp.path()),
        &[
            (
                "BACKUP_ALERT_WEBHOOK_URL",
                &hook.url("/services/T000/B000/token123"),
            ),
            ("BACKUP_ALERT_EMAIL", "ops@example.com, oncall@example.com"),
            ("SMTP_HOST", "127.0.0.1"),
            ("SMTP_PORT", &smtp.port.to_string()),
            ("SMTP_TLS", "none"),
            ("SMTP_FROM", "backups@example.com"),
        ],
    ));
    let t0 = std::time::Instant::now();
    let r = stackback(&["run"], &env);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        t0.elapsed().as_secs() < 20,
        "alerting took {:?}",
        t0.elapsed()
    );
    assert!(
        !r.all().contains("token123"),
        "the webhook token leaked: {}",
        r.all()
    );

    let reqs = hook.wait_for(1);
    assert_eq!(reqs[0]["method"], "POST");
    let body: serde_json::Value = serde_json::from_str(reqs[0]["body"].as_str().unwrap()).unwrap();
    let text = body["text"].as_str().unwrap();
    assert!(
        text.contains("FAILED") && text.contains("password authentication failed"),
        "{text}"
    );
    assert!(text.contains("stackback status"), "{text}");

    let mails = smtp.wait_for(1);
    let m = &mails[0];
    assert!(
        m.contains("To: ops@example.com, oncall@example.com")
            || (m.contains("ops@example.com") && m.contains("oncall@example.com")),
        "{m}"
    );
    assert!(m.contains("From: backups@example.com"), "{m}");
    assert!(m.contains("Subject: stackback: backup FAILED on"), "{m}");
    assert!(m.contains("password authentication failed"), "{m}");
    assert!(m.contains("Investigate:"), "{m}");
    assert!(
        !m.contains("wrong-password"),
        "the password leaked into the email"
    );
}

#[test]
fn discord_and_generic_payloads() {
    let c = cluster();
    let tmp = tempfile::tempdir().unwrap();
    let hook = Receiver::start();
    for (format, path) in [("discord", "/discord"), ("generic", "/generic")] {
        let env = broken(with(
            c.env(&c.empty_db("nodump"), tmp.path()),
            &[
                ("BACKUP_ALERT_WEBHOOK_URL", &hook.url(path)),
                ("BACKUP_ALERT_WEBHOOK_FORMAT", format),
            ],
        ));
        assert_eq!(stackback(&["run"], &env).code, 1);
    }
    let reqs = hook.wait_for(2);
    let body = |p: &str| -> serde_json::Value {
        serde_json::from_str(
            reqs.iter().find(|r| r["path"] == p).unwrap()["body"]
                .as_str()
                .unwrap(),
        )
        .unwrap()
    };
    let d = body("/discord");
    assert!(d["content"].as_str().unwrap().contains("FAILED"), "{d}");
    assert!(d.get("text").is_none());
    let g = body("/generic");
    assert_eq!(g["event"], "failure");
    assert_eq!(g["status"], "failed");
    assert_eq!(g["failed_step"], "database");
    assert!(g["run_id"].as_str().unwrap().len() == 15);
    assert!(g["error"]
        .as_str()
        .unwrap()
        .contains("password authentication failed"));
    assert!(g["host"].is_string() && g["started_at"].is_string() && g["finished_at"].is_string());
}

#[test]
fn heartbeat_flaky_webhooks_and_recovered_alerts() {
    let c = cluster();
    let db = c.seeded_db("hb");
    let tmp = tempfile::tempdir().unwrap();
    let hook = Receiver::start();
    let env = with(
        c.env(&db, tmp.path()),
        &[
            ("BACKUP_HEARTBEAT_URL", &hook.url("/hb/uuid-1234")),
            ("BACKUP_ALERT_WEBHOOK_URL", &hook.url("/flaky")),
            ("BACKUP_ALERT_ON", "change"),
        ],
    );
    // Ten seconds back: the next run has a second of its own without waiting for one.
    assert_eq!(
        stackback(&["run"], &faked_clock(&broken(env.clone()), "-10")).code,
        1
    );
    let r = stackback(&["run"], &env);
    assert_eq!(r.code, 0, "{}", r.all());
    let reqs = hook.requests();
    let paths: Vec<&str> = reqs.iter().map(|r| r["path"].as_str().unwrap()).collect();
    assert!(paths.contains(&"/hb/uuid-1234/fail"), "{paths:?}");
    assert!(paths.contains(&"/hb/uuid-1234"), "{paths:?}");
    // The webhook failed twice (HTTP 500) and was retried: the alert still arrived.
    let alerts: Vec<&serde_json::Value> = reqs.iter().filter(|r| r["path"] == "/flaky").collect();
    assert!(alerts.len() >= 3, "{reqs:?}");
    let texts: Vec<String> = alerts
        .iter()
        .map(|r| r["body"].as_str().unwrap().to_string())
        .collect();
    assert!(texts.iter().any(|t| t.contains("FAILED")), "{texts:?}");
    assert!(texts.iter().any(|t| t.contains("recovered")), "{texts:?}");
}

#[test]
fn a_failing_alert_channel_does_not_change_the_backups_result() {
    let c = cluster();
    let db = c.seeded_db("chanfail");
    let tmp = tempfile::tempdir().unwrap();
    let hook = Receiver::start();
    let env = with(
        c.env(&db, tmp.path()),
        &[
            ("BACKUP_ALERT_WEBHOOK_URL", &hook.url("/down")),
            ("BACKUP_ALERT_ON", "always"),
        ],
    );
    let r = stackback(&["run"], &env);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stderr.contains("webhook failed"), "{}", r.stderr);
    assert_eq!(only_record(tmp.path())["status"], "ok");
}

#[test]
fn alert_test_reports_each_channel() {
    let closed = ClosedPort::new();
    let tmp = tempfile::tempdir().unwrap();
    let hook = Receiver::start();
    let env = vec![
        ("BACKUP_DIR".to_string(), tmp.path().display().to_string()),
        ("BACKUP_ALERT_WEBHOOK_URL".to_string(), hook.url("/test")),
        (
            "BACKUP_ALERT_EMAIL".to_string(),
            "ops@example.com".to_string(),
        ),
        ("SMTP_HOST".to_string(), "127.0.0.1".to_string()),
        ("SMTP_PORT".to_string(), closed.port.to_string()),
        ("SMTP_TLS".to_string(), "none".to_string()),
    ];
    let r = stackback(&["alert", "test"], &env);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stdout.contains("webhook   ok"), "{}", r.stdout);
    assert!(r.stdout.contains("email     FAILED"), "{}", r.stdout);
    let body = &hook.wait_for(1)[0]["body"];
    assert!(body.as_str().unwrap().contains("test alert"), "{body}");

    let r = stackback(&["alert", "test"], &env[..1]);
    assert_eq!(r.code, 2, "no channel configured: {}", r.all());
}

#[test]
fn pushgateway_keeps_the_last_success_after_a_failed_run() {
    let c = cluster();
    let db = c.seeded_db("push");
    let tmp = tempfile::tempdir().unwrap();
    let pg = Pushgateway::start();
    let env = with(
        c.env(&db, tmp.path()),
        &[("BACKUP_PUSHGATEWAY_URL", &pg.url())],
    );
    // Ten seconds back: the next run has a second of its own without waiting for one.
    assert_eq!(stackback(&["run"], &faked_clock(&env, "-10")).code, 0);
    let last = pg
        .value("backup_last_success_timestamp_seconds", "type=\"database\"")
        .expect("pushed");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((now - 120.0..now).contains(&last), "{last} vs now {now}");
    assert_eq!(pg.value("backup_success", "type=\"database\""), Some(1.0));
    assert_eq!(pg.value("backup_runs_total", "result=\"ok\""), Some(1.0));
    assert!(pg.value("backup_size_bytes", "type=\"database\"").unwrap() > 1024.0);

    assert_eq!(stackback(&["run"], &broken(env.clone())).code, 1);
    assert_eq!(pg.value("backup_success", "type=\"database\""), Some(0.0));
    assert_eq!(
        pg.value("backup_last_success_timestamp_seconds", "type=\"database\""),
        Some(last),
        "a failed run must not erase the last success"
    );
    assert_eq!(
        pg.value("backup_runs_total", "result=\"failed\""),
        Some(1.0)
    );
}

#[test]
fn low_free_space_is_alerted_although_the_backup_is_good() {
    let c = cluster();
    let db = c.seeded_db("lowspace");
    let tmp = tempfile::tempdir().unwrap();
    // 40 MiB: room for the backups, but less than the last backup plus the 64 MiB margin.
    let mnt = Mount::tmpfs(&tmp.path().join("small"), "size=40m");
    let hook = Receiver::start();
    let env = with(
        c.env(&db, &mnt.path),
        &[("BACKUP_ALERT_WEBHOOK_URL", &hook.url("/space"))],
    );
    // Ten seconds back: the next run has a second of its own without waiting for one.
    assert_eq!(stackback(&["run"], &faked_clock(&env, "-10")).code, 0);
    assert!(
        hook.requests().is_empty(),
        "the first run has nothing to compare with"
    );
    let r = stackback(&["run"], &env);
    assert_eq!(r.code, 0, "{}", r.all());
    let body = hook.wait_for(1)[0]["body"].as_str().unwrap().to_string();
    assert!(
        body.contains("warning") && body.contains("low free space"),
        "{body}"
    );
    let r = stackback(&["status"], &env);
    assert!(
        r.stdout.contains("free on the backup volume"),
        "status warns too: {}",
        r.stdout
    );
}
