//! Email alerts against a real SMTP server (aiosmtpd, support/smtpd.py): authentication on a local
//! relay, STARTTLS and implicit TLS with a certificate from a throwaway CA.
//!
//! The TLS tests prove that TLS is required, attempted and verified (the handshake fails on the
//! unknown issuer, and nothing is sent in the clear), then deliver once `SMTP_CA_FILE` names the CA,
//! with AUTH only inside TLS.

use crate::support::notify::{Smtp, SmtpSetup};
use crate::support::tls::TestCa;
use crate::support::*;

const SECRET: &str = "smtp-s3cret-pw";

fn env(smtp: &Smtp, tls: &str, dir: &std::path::Path) -> Vec<(String, String)> {
    let port = smtp.port.to_string();
    with(
        Vec::new(),
        &[
            ("BACKUP_DIR", dir.to_str().unwrap()),
            ("BACKUP_ALERT_EMAIL", "ops@example.com"),
            ("SMTP_HOST", "127.0.0.1"),
            ("SMTP_PORT", port.as_str()),
            ("SMTP_TLS", tls),
            ("SMTP_FROM", "backups@example.com"),
        ],
    )
}

fn alert_test(env: &[(String, String)]) -> Run {
    let r = stackback(&["alert", "test"], env);
    assert!(
        !r.all().contains(SECRET),
        "the SMTP password was printed: {}",
        r.all()
    );
    r
}

#[test]
fn smtp_auth_on_a_local_relay() {
    let tmp = tempfile::tempdir().unwrap();
    let smtp = Smtp::start_with(&SmtpSetup {
        auth: Some(("backup-bot", SECRET)),
        ..Default::default()
    });
    let base = env(&smtp, "none", tmp.path());

    let wrong = with(
        base.clone(),
        &[("SMTP_USER", "backup-bot"), ("SMTP_PASSWORD", "not-it")],
    );
    let r = alert_test(&wrong);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stdout.contains("email     FAILED"), "{}", r.stdout);
    assert!(smtp.messages().is_empty());

    let right = with(
        base,
        &[("SMTP_USER", "backup-bot"), ("SMTP_PASSWORD", SECRET)],
    );
    let r = alert_test(&right);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("email     ok"), "{}", r.stdout);
    let mail = &smtp.wait_for(1)[0];
    assert!(mail.contains("test alert"), "{mail}");
    assert!(mail.contains("From: backups@example.com"), "{mail}");
    let auths: Vec<(String, bool)> = smtp
        .events()
        .iter()
        .filter(|e| e["event"] == "auth")
        .map(|e| (e["login"].as_str().unwrap().to_string(), e["ok"] == true))
        .collect();
    // The wrong password was tried three times (every channel gets 3 attempts), then the right
    // one once.
    let bot = |ok| ("backup-bot".to_string(), ok);
    assert_eq!(auths, [bot(false), bot(false), bot(false), bot(true)]);
}

/// SMTP_TLS=starttls: a server that does not offer STARTTLS gets nothing, not even the AUTH; one
/// that offers it gets a TLS handshake that is verified (and refused: the CA is unknown).
#[test]
fn smtp_starttls_is_required_and_verified() {
    let tmp = tempfile::tempdir().unwrap();
    let creds = [("SMTP_USER", "backup-bot"), ("SMTP_PASSWORD", SECRET)];

    let plain = Smtp::start();
    let r = alert_test(&with(env(&plain, "starttls", tmp.path()), &creds));
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stdout.contains("email     FAILED"), "{}", r.stdout);
    let cmds = plain.commands();
    assert!(
        !cmds.iter().any(|c| c == "AUTH" || c == "MAIL"),
        "sent in the clear: {cmds:?}"
    );
    assert!(plain.messages().is_empty());

    let ca = TestCa::new(tmp.path());
    let tls = Smtp::start_with(&SmtpSetup {
        starttls: Some(&ca),
        auth: Some(("backup-bot", SECRET)),
        ..Default::default()
    });
    let r = alert_test(&with(env(&tls, "starttls", tmp.path()), &creds));
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stdout.contains("email     FAILED"), "{}", r.stdout);
    assert!(r.stdout.contains("UnknownIssuer"), "{}", r.stdout);
    let cmds = tls.commands();
    assert!(cmds.iter().any(|c| c == "STARTTLS"), "{cmds:?}");
    assert!(!cmds.iter().any(|c| c == "AUTH" || c == "MAIL"), "{cmds:?}");
    assert!(tls.messages().is_empty());

    // Trusting the CA, the message goes out, and the login only after STARTTLS.
    let trusted = with(
        env(&tls, "starttls", tmp.path()),
        &[("SMTP_CA_FILE", ca.ca.to_str().unwrap())],
    );
    let r = alert_test(&with(trusted, &creds));
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(tls.wait_for(1)[0].contains("test alert"));
    let cmds = tls.commands();
    let at = |name: &str| cmds.iter().rposition(|c| c == name);
    assert!(
        at("STARTTLS").is_some() && at("STARTTLS") < at("AUTH") && at("AUTH") < at("MAIL"),
        "{cmds:?}"
    );
}

/// SMTP_TLS=tls: the connection starts with a verified TLS handshake; a plain server gets no
/// SMTP command at all.
#[test]
fn smtp_implicit_tls_is_verified() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = TestCa::new(tmp.path());
    let creds = [("SMTP_USER", "backup-bot"), ("SMTP_PASSWORD", SECRET)];
    let smtps = Smtp::start_with(&SmtpSetup {
        implicit_tls: Some(&ca),
        auth: Some(("backup-bot", SECRET)),
        ..Default::default()
    });
    let r = alert_test(&with(env(&smtps, "tls", tmp.path()), &creds));
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stdout.contains("UnknownIssuer"), "{}", r.stdout);
    assert!(smtps.commands().is_empty(), "{:?}", smtps.commands());
    assert!(smtps.messages().is_empty());

    let trusted = with(
        env(&smtps, "tls", tmp.path()),
        &[("SMTP_CA_FILE", ca.ca.to_str().unwrap())],
    );
    let r = alert_test(&with(trusted, &creds));
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(smtps.wait_for(1)[0].contains("test alert"));
    let auths = smtps.events();
    assert!(
        auths
            .iter()
            .any(|e| e["event"] == "auth" && e["ok"] == true),
        "{auths:?}"
    );

    let plain = Smtp::start();
    let r = alert_test(&with(env(&plain, "tls", tmp.path()), &creds));
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(plain.commands().is_empty(), "{:?}", plain.commands());
    assert!(plain.messages().is_empty());
}
