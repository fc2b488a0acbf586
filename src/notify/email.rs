//! Email alerts through SMTP (lettre over rustls): STARTTLS, implicit TLS, or plain for a local relay.

use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
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
    let builder = match smtp.tls {
        SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host),
        SmtpTls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host)
            .map_err(|e| format!("SMTP {host}: {e}"))?,
        SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(host)
            .map_err(|e| format!("SMTP {host}: {e}"))?,
    };
    let mut builder = builder
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
