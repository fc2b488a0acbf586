//! Email alerts through SMTP (lettre over rustls): STARTTLS, implicit TLS, or plain for a local relay.

use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::{SmtpConfig, SmtpTls};

use super::Event;

pub async fn send(smtp: &SmtpConfig, to: &[String], ev: &Event) -> Result<String, String> {
    let host = smtp.host.as_deref().ok_or("SMTP_HOST is not set")?;
    let mut msg = Message::builder()
        .from(
            smtp.from
                .parse()
                .map_err(|e| format!("SMTP_FROM {:?}: {e}", smtp.from))?,
        )
        .subject(ev.title());
    for addr in to {
        msg = msg.to(addr
            .parse()
            .map_err(|e| format!("BACKUP_ALERT_EMAIL {addr:?}: {e}"))?);
    }
    let msg = msg
        .header(ContentType::TEXT_PLAIN)
        .body(ev.text())
        .map_err(|e| format!("cannot build the email: {e}"))?;
    let tls = match smtp.tls {
        SmtpTls::None => Tls::None,
        SmtpTls::Starttls => Tls::Required(tls_parameters(smtp, host)?),
        SmtpTls::Tls => Tls::Wrapper(tls_parameters(smtp, host)?),
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
        .tls(tls)
        .port(smtp.port)
        .timeout(Some(Duration::from_secs(15)));
    if let (Some(u), Some(p)) = (&smtp.user, &smtp.password) {
        builder = builder.credentials(Credentials::new(u.clone(), p.expose().to_string()));
    }
    let resp = builder
        .build()
        .send(msg)
        .await
        .map_err(|e| format!("SMTP {host}:{}: {e}", smtp.port))?;
    Ok(format!("accepted by {host}: {}", resp.code()))
}

/// Certificate checks for `host`: the built-in roots, plus `SMTP_CA_FILE` when set.
fn tls_parameters(smtp: &SmtpConfig, host: &str) -> Result<TlsParameters, String> {
    let mut b = TlsParameters::builder(host.to_string());
    if let Some(ca) = &smtp.ca_file {
        let pem = std::fs::read(ca)
            .map_err(|e| format!("SMTP_CA_FILE {}: cannot read: {e}", ca.display()))?;
        let cert = Certificate::from_pem(&pem)
            .map_err(|e| format!("SMTP_CA_FILE {}: not a PEM certificate: {e}", ca.display()))?;
        b = b.add_root_certificate(cert);
    }
    b.build_rustls()
        .map_err(|e| format!("SMTP {host}: TLS setup failed: {e}"))
}
