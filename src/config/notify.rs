//! The alert and metrics sections: webhook, email through SMTP, heartbeat, Pushgateway.

use std::path::PathBuf;

use super::settings::Key;
use super::Settings;
use crate::error::Result;
use crate::redact::Secret;

/// Where metrics are pushed: the Pushgateway's base URL, and the group (job, instance).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushTarget {
    /// `http://pushgateway:9091` (credentials included, if any).
    pub base: String,
    pub job: String,
    pub instance: String,
}

impl PushTarget {
    /// `BACKUP_PUSHGATEWAY_URL` as a base URL, or as the seed writes it, ending in
    /// `/metrics/job/<job>[/instance/<instance>]`: then those name the group, unless
    /// `BACKUP_PUSHGATEWAY_JOB` / `BACKUP_INSTANCE` are set.
    fn build(s: &Settings) -> Result<Option<PushTarget>> {
        let Some(url) = s.http_url(Key::PushgatewayUrl)? else {
            return Ok(None);
        };
        let trimmed = url.trim_end_matches('/');
        let (base, group) = match trimmed.split_once("/metrics/job/") {
            Some((base, group)) => (base.to_string(), Some(group)),
            None => (trimmed.to_string(), None),
        };
        let mut segments = group.into_iter().flat_map(|g| g.split('/'));
        let url_job = segments.next().filter(|j| !j.is_empty());
        let url_instance = match (segments.next(), segments.next()) {
            (Some("instance"), Some(i)) if !i.is_empty() => Some(i),
            _ => None,
        };
        let job = match (s.is_set(Key::PushgatewayJob), url_job) {
            (false, Some(j)) => j.to_string(),
            _ => s.text(Key::PushgatewayJob).to_string(),
        };
        let instance = match (s.get(Key::Instance), url_instance) {
            (Some(i), _) => i.to_string(),
            (None, Some(i)) => i.to_string(),
            (None, None) => crate::catalog::host_name(),
        };
        for (k, v) in [(Key::PushgatewayJob, &job), (Key::Instance, &instance)] {
            if v.is_empty() || v.contains(['/', ' ']) {
                return Err(k.error(format!("{v:?} cannot be a Pushgateway label value")));
            }
        }
        Ok(Some(PushTarget {
            base,
            job,
            instance,
        }))
    }

    /// The URL of this group.
    pub fn url(&self) -> String {
        format!(
            "{}/metrics/job/{}/instance/{}",
            self.base, self.job, self.instance
        )
    }
}

/// Which runs produce alerts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertOn {
    Failure,
    Always,
    Change,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookFormat {
    Auto,
    Slack,
    Discord,
    Generic,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    Starttls,
    Tls,
    None,
}

#[derive(Debug, Clone)]
pub struct SmtpConfig {
    pub host: Option<String>,
    pub port: u16,
    pub user: Option<String>,
    pub password: Option<Secret>,
    pub from: String,
    pub tls: SmtpTls,
    /// PEM of a private CA trusted beside the built-in roots.
    pub ca_file: Option<PathBuf>,
}

/// Alerts, heartbeat and metrics push.
#[derive(Debug, Clone)]
pub struct NotifyConfig {
    pub webhook_url: Option<Secret>,
    pub webhook_format: WebhookFormat,
    pub emails: Vec<String>,
    pub on: AlertOn,
    pub heartbeat_url: Option<Secret>,
    pub smtp: SmtpConfig,
    pub pushgateway: Option<PushTarget>,
    /// Where the alerts say the backups are.
    pub backup_dir: PathBuf,
}

/// Picks a variant by its lower-case names; an error lists the choices.
fn choose<T: Copy>(k: Key, v: &str, table: &[(&[&str], T)], names: &str) -> Result<T> {
    let v = v.to_ascii_lowercase();
    table
        .iter()
        .find(|(ns, _)| ns.contains(&v.as_str()))
        .map(|(_, t)| *t)
        .ok_or_else(|| k.error(format!("unknown value {v:?}; use {names}")))
}

impl SmtpConfig {
    fn build(s: &Settings) -> Result<Self> {
        let tls = choose(
            Key::SmtpTls,
            s.text(Key::SmtpTls),
            &[
                (&["starttls", ""], SmtpTls::Starttls),
                (&["tls", "ssl"], SmtpTls::Tls),
                (&["none", "off"], SmtpTls::None),
            ],
            "starttls, tls or none",
        )?;
        let port = match s.port(Key::SmtpPort)? {
            Some(p) => p,
            None => match tls {
                SmtpTls::Starttls => 587,
                SmtpTls::Tls => 465,
                SmtpTls::None => 25,
            },
        };
        Ok(SmtpConfig {
            host: s.get(Key::SmtpHost).map(String::from),
            port,
            user: s.get(Key::SmtpUser).map(String::from),
            password: s.get(Key::SmtpPassword).map(Secret::new),
            from: s
                .get(Key::SmtpFrom)
                .map(String::from)
                .unwrap_or_else(|| format!("stackback@{}", crate::catalog::host_name())),
            tls,
            ca_file: s.get(Key::SmtpCaFile).map(PathBuf::from),
        })
    }
}

impl NotifyConfig {
    pub fn build(s: &Settings) -> Result<Self> {
        let webhook_format = choose(
            Key::WebhookFormat,
            s.text(Key::WebhookFormat),
            &[
                (&["auto", ""], WebhookFormat::Auto),
                (&["slack"], WebhookFormat::Slack),
                (&["discord"], WebhookFormat::Discord),
                (&["generic", "json"], WebhookFormat::Generic),
            ],
            "auto, slack, discord or generic",
        )
        .map_err(|_| {
            Key::WebhookFormat.error(format!(
                "unknown format {:?}; use auto, slack, discord or generic",
                s.text(Key::WebhookFormat).to_ascii_lowercase()
            ))
        })?;
        let on = choose(
            Key::AlertOn,
            s.text(Key::AlertOn),
            &[
                (&["failure", ""], AlertOn::Failure),
                (&["always"], AlertOn::Always),
                (&["change"], AlertOn::Change),
            ],
            "failure, always or change",
        )?;
        let emails = s.list(Key::AlertEmail);
        // lettre's own parser: what it refuses here it would refuse at 02:00 when sending.
        if let Some(e) = emails
            .iter()
            .find(|e| e.parse::<lettre::message::Mailbox>().is_err())
        {
            return Err(Key::AlertEmail.error(format!("{e:?} is not an email address")));
        }
        let smtp = SmtpConfig::build(s)?;
        if !emails.is_empty() && smtp.host.is_none() {
            return Err(Key::SmtpHost.error(
                "BACKUP_ALERT_EMAIL is set but SMTP_HOST is not: email alerts need an SMTP server",
            ));
        }
        let webhook_url = s.http_url(Key::WebhookUrl)?.map(Secret::new);
        let heartbeat_url = s.http_url(Key::HeartbeatUrl)?.map(Secret::new);
        Ok(NotifyConfig {
            webhook_url,
            webhook_format,
            emails,
            on,
            heartbeat_url,
            smtp,
            pushgateway: PushTarget::build(s)?,
            backup_dir: s.backup_dir(),
        })
    }
}
