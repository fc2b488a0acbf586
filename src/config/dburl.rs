//! `postgres://user:pass@host:port/db?sslmode=...` URLs: the one parser for `DATABASE_URL` and
//! `restore db --target-url`.

use crate::error::{Error, Result};
use crate::redact::{percent_decode, redact_url};

/// The parts a URL sets; absent parts leave the other settings alone.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UrlParts {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub db: Option<String>,
    pub sslmode: Option<String>,
}

/// Parses a PostgreSQL connection URL. `key` names the setting in errors.
pub fn parse(key: &str, raw: &str) -> Result<UrlParts> {
    let bad = |why: &str| Error::config(key, format!("{why} (value: {})", redact_url(raw)));
    let u = url::Url::parse(raw).map_err(|e| bad(&format!("not a URL: {e}")))?;
    if u.scheme() != "postgres" && u.scheme() != "postgresql" {
        return Err(bad("expected a postgres:// or postgresql:// URL"));
    }
    let dec = |s: &str| percent_decode(s).map_err(|_| bad("invalid percent-encoding"));
    let mut parts = UrlParts {
        host: u.host_str().filter(|h| !h.is_empty()).map(String::from),
        port: u.port(),
        ..UrlParts::default()
    };
    if !u.username().is_empty() {
        parts.user = Some(dec(u.username())?);
    }
    if let Some(p) = u.password() {
        parts.password = Some(dec(p)?);
    }
    let path = u.path().trim_start_matches('/');
    if !path.is_empty() {
        parts.db = Some(dec(path)?);
    }
    for (k, v) in u.query_pairs() {
        match k.as_ref() {
            "sslmode" => parts.sslmode = Some(v.into_owned()),
            "host" => parts.host = Some(v.into_owned()),
            "port" => parts.port = Some(v.parse().map_err(|_| bad("invalid port"))?),
            "user" => parts.user = Some(v.into_owned()),
            "dbname" => parts.db = Some(v.into_owned()),
            _ => {}
        }
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_decoded() {
        let p = parse(
            "postgres.url",
            "postgresql://app:p%40ss@db.internal:6543/appdb?sslmode=require",
        )
        .unwrap();
        assert_eq!(p.host.as_deref(), Some("db.internal"));
        assert_eq!(p.port, Some(6543));
        assert_eq!(p.user.as_deref(), Some("app"));
        assert_eq!(p.password.as_deref(), Some("p@ss"));
        assert_eq!(p.db.as_deref(), Some("appdb"));
        assert_eq!(p.sslmode.as_deref(), Some("require"));
        let err = parse("postgres.url", "mysql://x:secret@h/d").unwrap_err();
        assert!(!err.to_string().contains("secret"), "{err}");
    }
}
