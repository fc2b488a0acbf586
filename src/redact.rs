//! Secrets: a wrapper that cannot print itself, and the redactor that scrubs every known secret
//! from text before it is logged, stored in a run record, or sent in an alert.

use std::fmt;

/// A secret string: `Debug` and `Display` print `***`, so it cannot leak through logs or errors.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The secret itself, for the one place that must hand it over (a child's environment, a
    /// login).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Replaces every known secret in a text with `***`.
#[derive(Debug, Default, Clone)]
pub struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    pub fn add(&mut self, secret: &str) {
        // Very short values would redact ordinary words; they are not real secrets anyway.
        if secret.len() >= 3 && !self.secrets.iter().any(|s| s == secret) {
            self.secrets.push(secret.to_string());
            self.secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        }
    }

    /// Adds a URL's password (raw and percent-decoded) and the URL itself.
    pub fn add_url(&mut self, raw: &str) {
        self.add(raw);
        self.add_url_password(raw);
    }

    /// Adds the password of a URL, when `raw` is one that carries one; the rest is not secret.
    pub fn add_url_password(&mut self, raw: &str) {
        if let Ok(u) = url::Url::parse(raw) {
            if let Some(p) = u.password() {
                self.add(p);
                if let Ok(decoded) = percent_decode(p) {
                    self.add(&decoded);
                }
            }
        }
    }

    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in &self.secrets {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), "***");
            }
        }
        out
    }
}

/// `postgres://user:***@host/db`: the URL with its password masked; `***` when it does not parse.
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "***".into(),
    }
}

/// `value` with the password masked when it is a URL that carries one, else as it is.
pub fn redact_url_password(value: &str) -> String {
    match url::Url::parse(value) {
        Ok(u) if u.password().is_some() => redact_url(value),
        _ => value.to_string(),
    }
}

/// Decodes `%XX` escapes (a `+` stays a `+`: URLs' userinfo is not form-encoded).
pub fn percent_decode(s: &str) -> Result<String, std::string::FromUtf8Error> {
    let bytes: Vec<u8> = url::form_urlencoded::parse(s.replace('+', "%2B").as_bytes())
        .next()
        .map(|(k, _)| k.into_owned().into_bytes())
        .unwrap_or_default();
    String::from_utf8(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "*** Secret(***)");
    }

    #[test]
    fn url_passwords_are_redacted_raw_and_decoded() {
        let mut r = Redactor::default();
        r.add_url("postgres://u:p%40ss@h/db");
        assert_eq!(r.redact("login p@ss failed"), "login *** failed");
        assert_eq!(redact_url("postgres://u:pw@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact_url("not a url"), "***");
    }
}
