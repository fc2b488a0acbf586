//! The layers a value can come from, lowest first: defaults < TOML file < environment < flags.
//!
//! Loading walks the layers in order and remembers, per setting, the layer that set it, so
//! `stackback config` can show each value's source. Secrets accept `<NAME>_FILE` (Docker secrets) in
//! the environment and `<name>_file` in the TOML file; one trailing newline is trimmed. Unknown
//! TOML keys are refused here, naming the key; values are only parsed by the sections that use
//! them ([`super::sections`]).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use super::settings::{Key, Setting, SETTINGS};
use crate::error::{Error, Result};

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Default,
    File(PathBuf),
    Env(String),
    EnvFile(String),
    Flag(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::File(p) => write!(f, "file {}", p.display()),
            Source::Env(n) => write!(f, "env {n}"),
            Source::EnvFile(n) => write!(f, "env {n} (file)"),
            Source::Flag(n) => write!(f, "flag {n}"),
        }
    }
}

/// What to load from.
#[derive(Debug, Default, Clone)]
pub struct LoadInput {
    /// Explicit `--config` path; falls back to `STACKBACK_CONFIG` in `env`.
    pub file: Option<PathBuf>,
    pub env: HashMap<String, String>,
    /// `(setting, value, flag name)` from the command line, highest precedence.
    pub flags: Vec<(Key, String, &'static str)>,
}

impl LoadInput {
    /// The process environment, no flags.
    pub fn from_process() -> Self {
        LoadInput {
            file: None,
            env: std::env::vars().collect(),
            flags: Vec::new(),
        }
    }
}

/// One resolved value with its provenance.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub setting: &'static Setting,
    pub value: Option<String>,
    pub source: Source,
}

impl Resolved {
    /// The value as it may be shown: secrets redacted, URL passwords masked.
    /// The value as shown by `config`: trimmed as the parsers trim it, secrets hidden, and any
    /// control character left inside escaped so that one setting stays one row.
    pub fn display_value(&self) -> String {
        let shown = self.shown_value();
        if shown.chars().any(char::is_control) {
            shown.escape_debug().to_string()
        } else {
            shown
        }
    }

    fn shown_value(&self) -> String {
        match self.value.as_deref().map(str::trim) {
            None => "(unset)".into(),
            Some(v) if self.setting.id == Key::PostgresUrl => crate::redact::redact_url(v),
            Some(_) if self.setting.secret => "***".into(),
            // Any URL may carry a password (a Pushgateway behind basic auth, say).
            Some(v) => crate::redact::redact_url_password(v),
        }
    }
}

/// Layers the inputs into one value per setting, in [`SETTINGS`] order.
pub(super) fn resolve(input: &LoadInput) -> Result<Vec<Resolved>> {
    let mut values: Vec<(Option<String>, Source)> = SETTINGS
        .iter()
        .map(|s| (s.default.map(String::from), Source::Default))
        .collect();

    let file = input
        .file
        .clone()
        .or_else(|| input.env.get("STACKBACK_CONFIG").map(PathBuf::from));
    if let Some(path) = file {
        for (key, value) in read_toml(&path)? {
            values[key as usize] = (Some(value), Source::File(path.clone()));
        }
    }

    for s in SETTINGS {
        // Lowest-precedence name first, so the first-listed name wins.
        for name in s.env.iter().rev() {
            if let Some(v) = env_value(&input.env, name, s.secret)? {
                values[s.id as usize] = v;
            }
        }
    }

    for (key, value, flag) in &input.flags {
        values[*key as usize] = (Some(value.clone()), Source::Flag((*flag).into()));
    }

    Ok(SETTINGS
        .iter()
        .zip(values)
        .map(|(setting, (value, source))| Resolved {
            setting,
            value,
            source,
        })
        .collect())
}

fn env_value(
    env: &HashMap<String, String>,
    name: &str,
    secret: bool,
) -> Result<Option<(Option<String>, Source)>> {
    let direct = env.get(name).filter(|v| !v.is_empty());
    let file_name = format!("{name}_FILE");
    let via_file = if secret {
        env.get(&file_name).filter(|v| !v.is_empty())
    } else {
        None
    };
    match (direct, via_file) {
        (Some(_), Some(_)) => Err(Error::config(
            name,
            format!("both {name} and {file_name} are set; keep one"),
        )),
        (Some(v), None) => Ok(Some((Some(v.clone()), Source::Env(name.into())))),
        (None, Some(path)) => Ok(Some((
            Some(read_secret_file(name, Path::new(path))?),
            Source::EnvFile(file_name),
        ))),
        (None, None) => Ok(None),
    }
}

fn read_secret_file(key: &str, path: &Path) -> Result<String> {
    let mut s = std::fs::read_to_string(path).map_err(|e| {
        Error::config(
            key,
            format!("cannot read secret file {}: {e}", path.display()),
        )
    })?;
    // Docker secrets and `echo > file` end with one newline that is not part of the secret.
    if s.ends_with('\n') {
        s.pop();
        if s.ends_with('\r') {
            s.pop();
        }
    }
    Ok(s)
}

/// Flattens the TOML file into `(setting, value)` pairs, rejecting unknown keys.
fn read_toml(path: &Path) -> Result<Vec<(Key, String)>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::config(
            "--config",
            format!("cannot read configuration file {}: {e}", path.display()),
        )
    })?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        Error::config(
            "--config",
            format!("{} is not valid TOML: {}", path.display(), e.message()),
        )
    })?;
    let mut out = Vec::new();
    for (section, body) in &table {
        let toml::Value::Table(body) = body else {
            return Err(Error::config(
                section.as_str(),
                format!(
                    "expected a [{section}] table in {}; known sections: postgres, backup, minio, schedule, restore_test, anomaly, alert, smtp, metrics, verify",
                    path.display()
                ),
            ));
        };
        for (name, value) in body {
            let full = format!("{section}.{name}");
            let (key_name, is_file) = match full.strip_suffix("_file") {
                Some(base) => (base.to_string(), true),
                None => (full.clone(), false),
            };
            let Some(key) = Key::by_name(&key_name) else {
                return Err(Error::config(
                    full,
                    format!("unknown key in {}", path.display()),
                ));
            };
            if is_file && !key.setting().secret {
                return Err(Error::config(
                    full,
                    format!(
                        "unknown key in {} (only secrets take a _file variant)",
                        path.display()
                    ),
                ));
            }
            let text = match value {
                toml::Value::String(v) => v.clone(),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                toml::Value::Float(f) => f.to_string(),
                other => {
                    return Err(Error::config(
                        full,
                        format!(
                            "expected a string, number or boolean, found {}",
                            other.type_str()
                        ),
                    ))
                }
            };
            let text = if is_file {
                read_secret_file(key.name(), Path::new(&text))?
            } else {
                text
            };
            out.push((key, text));
        }
    }
    Ok(out)
}
