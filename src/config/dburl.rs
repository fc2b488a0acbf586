//! `postgres://user:pass@host:port/db?sslmode=...` URLs: the one parser for `DATABASE_URL` and
//! `restore db --target-url`.

use std::str::FromStr;

use crate::error::{Error, Result};
use crate::redact::{percent_decode, redact_url};

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    Disable,
    Allow,
    #[default]
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl FromStr for SslMode {
    type Err = String;
    fn from_str(s: &str) -> Result<SslMode, String> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(format!(
                    "unknown sslmode {other:?}; use disable, allow, prefer, require, verify-ca or verify-full"
                ))
            }
        })
    }
}

impl SslMode {
    /// The name libpq (and so pg_dump) takes in `PGSSLMODE`.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// Whether the certificate chain is checked.
    pub fn verifies(self) -> bool {
        matches!(self, SslMode::VerifyCa | SslMode::VerifyFull)
    }
}

/// The parts a URL sets; absent parts leave the other settings alone.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UrlParts {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub db: Option<String>,
    pub sslmode: Option<SslMode>,
    pub sslrootcert: Option<String>,
}

/// Parses a PostgreSQL connection URL. `key` names the setting in errors. A password with raw
/// `#`, `&`, `?`, `/` or `@` (as people paste them) is taken whole, as libpq does.
pub fn parse(key: &str, raw: &str) -> Result<UrlParts> {
    let bad = |why: &str| Error::config(key, format!("{why} (value: {})", redact_url(raw)));
    let escaped = escape_userinfo(raw);
    let u = url::Url::parse(&escaped).map_err(|e| bad(&format!("not a URL: {e}")))?;
    // An app's URL may name its driver: postgresql+asyncpg://, postgresql+psycopg://...
    let base = u.scheme().split('+').next().unwrap_or_default();
    if base != "postgres" && base != "postgresql" {
        return Err(bad(
            "expected a postgres:// or postgresql:// URL (a +driver suffix is fine)",
        ));
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
            "sslmode" => parts.sslmode = Some(v.parse().map_err(|e: String| bad(&e))?),
            "sslrootcert" => parts.sslrootcert = Some(v.into_owned()),
            "host" => parts.host = Some(v.into_owned()),
            "port" => parts.port = Some(v.parse().map_err(|_| bad("invalid port"))?),
            "user" => parts.user = Some(v.into_owned()),
            "dbname" => parts.db = Some(v.into_owned()),
            _ => {}
        }
    }
    Ok(parts)
}

/// Percent-encodes the user and password of `scheme://user:password@rest`, taking everything up
/// to the last `@` as theirs, so characters a URL gives other meanings (`#`, `?`, `/`, `&`, `@`)
/// stay part of the password. `%XX` escapes already there are kept.
fn escape_userinfo(raw: &str) -> String {
    let Some((scheme, rest)) = raw.split_once("://") else {
        return raw.to_string();
    };
    let Some(at) = rest.rfind('@') else {
        return raw.to_string();
    };
    let (userinfo, host) = (&rest[..at], &rest[at..]);
    let escape = |s: &str| -> String {
        let b = s.as_bytes();
        let mut out = String::new();
        let mut i = 0;
        while i < b.len() {
            let c = b[i];
            let escaped_already = c == b'%'
                && b.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit);
            if c.is_ascii_alphanumeric() || b"-._~".contains(&c) || escaped_already {
                out.push(c as char);
            } else {
                out.push_str(&format!("%{c:02X}"));
            }
            i += 1;
        }
        out
    };
    let userinfo = match userinfo.split_once(':') {
        Some((user, password)) => format!("{}:{}", escape(user), escape(password)),
        None => escape(userinfo),
    };
    format!("{scheme}://{userinfo}{host}")
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
        assert_eq!(p.sslmode, Some(SslMode::Require));
        let err = parse("postgres.url", "mysql://x:secret@h/d").unwrap_err();
        assert!(!err.to_string().contains("secret"), "{err}");
    }

    #[test]
    fn driver_suffixes_are_accepted() {
        for scheme in [
            "postgresql+asyncpg",
            "postgresql+psycopg",
            "postgres",
            "postgresql+psycopg2",
        ] {
            let p = parse("k", &format!("{scheme}://app:pw@db:5432/app")).unwrap();
            assert_eq!(p.user.as_deref(), Some("app"), "{scheme}");
            assert_eq!(p.db.as_deref(), Some("app"), "{scheme}");
        }
        assert!(parse("k", "mysql+pymysql://a@b/c").is_err());
    }

    #[test]
    fn raw_passwords_are_taken_whole() {
        let p = parse(
            "k",
            "postgresql://u:p#ss&w0rd?x/@y@db:5433/app?sslmode=verify-full",
        )
        .unwrap();
        assert_eq!(p.password.as_deref(), Some("p#ss&w0rd?x/@y"));
        assert_eq!(p.host.as_deref(), Some("db"));
        assert_eq!(p.port, Some(5433));
        assert_eq!(p.db.as_deref(), Some("app"));
        assert_eq!(p.sslmode, Some(SslMode::VerifyFull));
        let p = parse("k", "postgres://u:p%40ss@h/d").unwrap();
        assert_eq!(p.password.as_deref(), Some("p@ss"));
        assert!(parse("k", "postgres://h/d?sslmode=maybe").is_err());
    }
}
