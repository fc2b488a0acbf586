//! Configuration: defaults < TOML file < environment < command-line flags, validated into [`Config`].
//!
//! Every setting is one row of [`SETTINGS`]: its TOML key (`section.name`), the environment names
//! that set it (the seed's and the official postgres image's names first), whether it is a secret,
//! and its default. Loading walks the layers in order and remembers, per key, the layer that set
//! it, so `stackback config` can show each value's source. Secrets accept `<NAME>_FILE` (Docker
//! secrets) in the environment and `<name>_file` in the TOML file; one trailing newline is trimmed.
//!
//! Loading is pure apart from reading the TOML file and secret files: the environment comes in as a
//! map, so tests and the daemon can load a configuration without touching the process environment.

mod value;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::pipeline::Compression;

pub use value::{parse_bool, parse_bytes, parse_duration, Secret};

/// One configurable value.
#[derive(Debug)]
pub struct Setting {
    /// `section.name`, as written in the TOML file.
    pub key: &'static str,
    /// Environment variables that set it, highest precedence first.
    pub env: &'static [&'static str],
    pub secret: bool,
    pub default: Option<&'static str>,
    pub help: &'static str,
}

macro_rules! settings {
    ($( $key:literal, [$($env:literal),*], $secret:literal, $default:expr, $help:literal; )*) => {
        /// Every setting stackback reads, in display order.
        pub const SETTINGS: &[Setting] = &[
            $( Setting { key: $key, env: &[$($env),*], secret: $secret, default: $default, help: $help }, )*
        ];
    };
}

settings! {
    "postgres.host", ["POSTGRES_HOST"], false, Some("localhost"), "database server host name, IP or socket directory";
    "postgres.port", ["POSTGRES_PORT"], false, Some("5432"), "database server port";
    "postgres.user", ["POSTGRES_USER"], false, Some("postgres"), "database user for pg_dump";
    "postgres.password", ["POSTGRES_PASSWORD"], true, None, "database password (passed to pg_dump via the environment, never argv)";
    "postgres.db", ["POSTGRES_DB"], false, None, "database to back up (default: the user name)";
    "postgres.url", ["DATABASE_URL"], true, None, "postgres://user:pass@host:port/db; wins over the POSTGRES_* parts it contains";
    "postgres.pg_dump", ["PG_DUMP_PATH"], false, None, "pg_dump to use (default: the best match among /usr/lib/postgresql/*/bin and PATH)";
    "postgres.globals", ["BACKUP_GLOBALS"], false, Some("false"), "also dump roles and tablespaces (pg_dumpall --globals-only --no-role-passwords)";
    "backup.dir", ["BACKUP_DIR"], false, Some("./backups"), "directory holding backups and run records";
    "backup.compression", ["BACKUP_COMPRESSION"], false, Some("gzip"), "gzip | zstd | none";
    "backup.compression_level", ["BACKUP_COMPRESSION_LEVEL"], false, None, "gzip 1-9 (default 6), zstd 1-19 (default 3)";
    "backup.retention_days", ["BACKUP_RETENTION_DAYS"], false, Some("7"), "delete runs older than this many days";
    "backup.keep_last", ["BACKUP_KEEP_LAST"], false, Some("0"), "also keep the newest N good runs";
    "backup.keep_daily", ["BACKUP_KEEP_DAILY"], false, Some("0"), "also keep the newest good run of each of the last N days";
    "backup.keep_weekly", ["BACKUP_KEEP_WEEKLY"], false, Some("0"), "also keep the newest good run of each of the last N ISO weeks";
    "backup.keep_monthly", ["BACKUP_KEEP_MONTHLY"], false, Some("0"), "also keep the newest good run of each of the last N months";
    "backup.keep_min", ["BACKUP_KEEP_MIN"], false, Some("1"), "never delete the newest N good runs, however old";
    "backup.failed_grace", ["BACKUP_FAILED_GRACE"], false, Some("24h"), "leftovers of interrupted runs are removed once this old";
    "backup.max_age", ["BACKUP_MAX_AGE"], false, Some("26h"), "`status --check` fails when the last good backup is older";
    "backup.min_free_warn_bytes", ["BACKUP_FREE_WARN_BYTES"], false, Some("1GiB"), "`status` warns below this much free space";
    "backup.timezone", ["TZ"], false, Some("UTC"), "time zone for the schedule and calendar retention (run ids are always UTC)";
    "backup.min_free_bytes", ["BACKUP_MIN_FREE_BYTES"], false, Some("0"), "fail before dumping when the backup volume has less free space (e.g. 2GiB)";
    "minio.endpoint", ["MINIO_ENDPOINT"], false, None, "S3 API endpoint, e.g. http://minio:9000; enables bucket backups";
    "minio.access_key", ["MINIO_ACCESS_KEY", "MINIO_ROOT_USER"], true, None, "access key id";
    "minio.secret_key", ["MINIO_SECRET_KEY", "MINIO_ROOT_PASSWORD"], true, None, "secret access key";
    "minio.bucket", ["MINIO_BUCKET"], false, None, "bucket to back up, or a comma list";
    "minio.region", ["MINIO_REGION"], false, Some("us-east-1"), "region used to sign requests";
    "minio.prefix", ["MINIO_PREFIX"], false, None, "only back up keys under this prefix";
    "minio.ca_file", ["MINIO_CA_FILE"], false, None, "PEM file of the CA that signed an https endpoint's certificate (in addition to the system roots)";
    "minio.concurrency", ["BACKUP_S3_CONCURRENCY"], false, Some("16"), "objects fetched or uploaded at once";
    "minio.data_dir", ["MINIO_DATA_DIR"], false, None, "volume mode: tar this directory instead of using the S3 API";
    "schedule.cron", ["BACKUP_SCHEDULE"], false, Some("0 2 * * *"), "when the daemon runs backups: 5-field cron, @daily, @hourly... (in TZ)";
    "schedule.timeout", ["BACKUP_TIMEOUT"], false, Some("6h"), "a run taking longer is aborted, cleaned up and alerted";
    "schedule.stop_grace", ["BACKUP_STOP_GRACE"], false, Some("60s"), "on SIGTERM, how long a running backup may take to finish before it is aborted";
    "alert.webhook_url", ["BACKUP_ALERT_WEBHOOK_URL"], true, None, "POST failure alerts here (Slack, Discord or any JSON receiver)";
    "alert.webhook_format", ["BACKUP_ALERT_WEBHOOK_FORMAT"], false, Some("auto"), "auto (Discord URLs get discord, others slack) | slack | discord | generic";
    "alert.email", ["BACKUP_ALERT_EMAIL"], false, None, "send failure alerts to these addresses (comma list) through SMTP_*";
    "alert.on", ["BACKUP_ALERT_ON"], false, Some("failure"), "failure | always | change (also \"recovered\" after a failure)";
    "alert.heartbeat_url", ["BACKUP_HEARTBEAT_URL"], true, None, "pinged after every good run, <url>/fail after a failed one (Healthchecks style)";
    "smtp.host", ["SMTP_HOST"], false, None, "SMTP server for alert emails";
    "smtp.port", ["SMTP_PORT"], false, None, "default 587 (starttls), 465 (tls), 25 (none)";
    "smtp.user", ["SMTP_USER"], false, None, "SMTP login";
    "smtp.password", ["SMTP_PASSWORD"], true, None, "SMTP password";
    "smtp.from", ["SMTP_FROM"], false, None, "sender address (default stackback@<host name>)";
    "smtp.tls", ["SMTP_TLS"], false, Some("starttls"), "starttls | tls | none";
    "metrics.pushgateway_url", ["BACKUP_PUSHGATEWAY_URL"], false, None, "push metrics to this Prometheus Pushgateway after every run";
    "metrics.http_addr", ["BACKUP_HTTP_ADDR"], false, Some("127.0.0.1:9187"), "the daemon's /metrics and /healthz address (containers: 0.0.0.0:9187)";
    "verify.min_db_bytes", ["BACKUP_MIN_DB_BYTES"], false, Some("1024"), "a database artifact must be larger than this (stored bytes)";
    "verify.min_objects_bytes", ["BACKUP_MIN_OBJECTS_BYTES"], false, Some("512"), "a bucket artifact must be larger than this (stored bytes)";
}

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
    /// `(key, value, flag name)` from the command line, highest precedence.
    pub flags: Vec<(&'static str, String, &'static str)>,
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

/// One resolved value with its provenance, for display.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub setting: &'static Setting,
    pub value: Option<String>,
    pub source: Source,
}

impl Resolved {
    /// The value as it may be shown: secrets redacted, URL passwords masked.
    pub fn display_value(&self) -> String {
        match &self.value {
            None => "(unset)".into(),
            Some(v) if self.setting.key == "postgres.url" => redact_url(v),
            Some(_) if self.setting.secret => "***".into(),
            Some(v) => v.clone(),
        }
    }
}

/// Connection settings for the database server.
#[derive(Debug, Clone)]
pub struct PostgresConfig {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<Secret>,
    pub db: String,
    pub sslmode: Option<String>,
    pub pg_dump: Option<PathBuf>,
    pub globals: bool,
}

/// Where and how backups are written and checked.
#[derive(Debug, Clone)]
pub struct BackupConfig {
    pub dir: PathBuf,
    pub compression: Compression,
    pub compression_level: Option<i32>,
    pub retention: crate::retention::Policy,
    pub max_age: std::time::Duration,
    pub free_warn_bytes: u64,
    pub timezone: chrono_tz::Tz,
    pub min_free_bytes: u64,
    pub min_db_bytes: u64,
    pub min_objects_bytes: u64,
}

/// Object storage: buckets through the S3 API, or a data directory (volume mode).
#[derive(Debug, Clone)]
pub struct ObjectsConfig {
    pub endpoint: Option<String>,
    pub access_key: Option<Secret>,
    pub secret_key: Option<Secret>,
    pub buckets: Vec<String>,
    pub region: String,
    pub prefix: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub concurrency: usize,
    pub data_dir: Option<PathBuf>,
}

impl ObjectsConfig {
    /// What a backup run needs beyond what every command needs: a bucket to back up.
    pub fn check_for_backup(&self) -> Result<()> {
        if self.s3_enabled() && self.buckets.is_empty() {
            return Err(Error::config(
                "minio.bucket",
                "MINIO_ENDPOINT is set but no bucket is: set MINIO_BUCKET (one, or a comma list)",
            ));
        }
        Ok(())
    }

    /// True when a run should back up buckets through the S3 API.
    pub fn s3_enabled(&self) -> bool {
        self.data_dir.is_none() && self.endpoint.is_some()
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
}

/// Alerts, heartbeat and metrics.
#[derive(Debug, Clone)]
pub struct NotifyConfig {
    pub webhook_url: Option<Secret>,
    pub webhook_format: WebhookFormat,
    pub emails: Vec<String>,
    pub on: AlertOn,
    pub heartbeat_url: Option<Secret>,
    pub smtp: SmtpConfig,
    pub pushgateway_url: Option<String>,
}

/// The daemon: schedule, limits, HTTP address.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub schedule: crate::schedule::Schedule,
    pub timeout: std::time::Duration,
    pub stop_grace: std::time::Duration,
    pub http_addr: std::net::SocketAddr,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub postgres: PostgresConfig,
    pub backup: BackupConfig,
    pub objects: ObjectsConfig,
    pub notify: NotifyConfig,
    pub daemon: DaemonConfig,
    /// Every setting with its value and source, for `stackback config`.
    pub resolved: Vec<Resolved>,
}

impl Config {
    /// Loads and validates. Errors name the offending key.
    pub fn load(input: &LoadInput) -> Result<Config> {
        let resolved = resolve(input)?;
        build(resolved)
    }

    /// A redactor that knows every secret in this configuration.
    pub fn redactor(&self) -> Redactor {
        let mut r = Redactor::default();
        for item in &self.resolved {
            if let (true, Some(v)) = (item.setting.secret, &item.value) {
                r.add(v);
                if item.setting.key == "postgres.url" {
                    if let Ok(u) = url::Url::parse(v) {
                        if let Some(p) = u.password() {
                            r.add(p);
                            if let Ok(decoded) = urlencoding_decode(p) {
                                r.add(&decoded);
                            }
                        }
                    }
                }
            }
        }
        r
    }
}

fn setting(key: &str) -> &'static Setting {
    SETTINGS
        .iter()
        .find(|s| s.key == key)
        .expect("settings table holds every key the loader asks for")
}

/// Layers the inputs into one value per setting.
fn resolve(input: &LoadInput) -> Result<Vec<Resolved>> {
    let mut values: BTreeMap<&'static str, (Option<String>, Source)> = SETTINGS
        .iter()
        .map(|s| (s.key, (s.default.map(String::from), Source::Default)))
        .collect();

    let file = input
        .file
        .clone()
        .or_else(|| input.env.get("STACKBACK_CONFIG").map(PathBuf::from));
    if let Some(path) = file {
        for (key, value) in read_toml(&path)? {
            values.insert(key, (Some(value), Source::File(path.clone())));
        }
    }

    for s in SETTINGS {
        // Lowest-precedence name first, so the first-listed name wins.
        for name in s.env.iter().rev() {
            if let Some(v) = env_value(&input.env, name, s.secret)? {
                values.insert(s.key, v);
            }
        }
    }

    for (key, value, flag) in &input.flags {
        let s = setting(key);
        values.insert(s.key, (Some(value.clone()), Source::Flag((*flag).into())));
    }

    Ok(SETTINGS
        .iter()
        .map(|s| {
            let (value, source) = values.remove(s.key).expect("every key was seeded");
            Resolved {
                setting: s,
                value,
                source,
            }
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

/// Flattens the TOML file into `(key, value)` pairs, rejecting unknown keys.
fn read_toml(path: &Path) -> Result<Vec<(&'static str, String)>> {
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
                    "expected a [{section}] table in {}; known sections: postgres, backup, minio, schedule, alert, smtp, metrics, verify",
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
            let Some(s) = SETTINGS.iter().find(|s| s.key == key_name) else {
                return Err(Error::config(
                    full,
                    format!("unknown key in {}", path.display()),
                ));
            };
            if is_file && !s.secret {
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
                read_secret_file(s.key, Path::new(&text))?
            } else {
                text
            };
            out.push((s.key, text));
        }
    }
    Ok(out)
}

fn build(resolved: Vec<Resolved>) -> Result<Config> {
    let get = |key: &str| -> Option<String> {
        resolved
            .iter()
            .find(|r| r.setting.key == key)
            .and_then(|r| r.value.clone())
    };
    let req = |key: &str| -> String { get(key).unwrap_or_default() };

    let mut host = req("postgres.host");
    let mut port: u16 = req("postgres.port")
        .parse()
        .map_err(|_| Error::config("postgres.port", "expected a port number (1-65535)"))?;
    let mut user = req("postgres.user");
    let mut password = get("postgres.password").map(Secret::new);
    let mut db = get("postgres.db");
    let mut sslmode = None;
    if let Some(raw) = get("postgres.url") {
        let parts = parse_database_url(&raw)?;
        if let Some(h) = parts.host {
            host = h;
        }
        if let Some(p) = parts.port {
            port = p;
        }
        if let Some(u) = parts.user {
            user = u;
        }
        if let Some(p) = parts.password {
            password = Some(Secret::new(p));
        }
        if let Some(d) = parts.db {
            db = Some(d);
        }
        sslmode = parts.sslmode;
    }
    let db = db.unwrap_or_else(|| user.clone());
    validate_db_name(&db)?;

    let compression: Compression = req("backup.compression")
        .parse()
        .map_err(|e: String| Error::config("backup.compression", e))?;
    let compression_level = match get("backup.compression_level") {
        None => None,
        Some(v) => {
            let level: i32 = v.parse().map_err(|_| {
                Error::config(
                    "backup.compression_level",
                    format!("expected a number, got {v:?}"),
                )
            })?;
            compression
                .check_level(level)
                .map_err(|e| Error::config("backup.compression_level", e))?;
            Some(level)
        }
    };
    let tz_name = req("backup.timezone");
    let timezone: chrono_tz::Tz = tz_name.trim_start_matches(':').parse().map_err(|_| {
        Error::config(
            "backup.timezone",
            format!("unknown time zone {tz_name:?}; use an IANA name such as Europe/Berlin or UTC"),
        )
    })?;
    let num = |key: &str| -> Result<u32> {
        req(key)
            .parse()
            .map_err(|_| Error::config(key, format!("expected a whole number, got {:?}", req(key))))
    };
    let bytes =
        |key: &str| -> Result<u64> { parse_bytes(&req(key)).map_err(|e| Error::config(key, e)) };
    let duration = |key: &str| -> Result<std::time::Duration> {
        parse_duration(&req(key)).map_err(|e| Error::config(key, e))
    };

    let objects = build_objects(&get)?;
    let schedule = crate::schedule::Schedule::parse(&req("schedule.cron"), timezone)
        .map_err(|e| Error::config("schedule.cron", e))?;
    let daemon = DaemonConfig {
        schedule,
        timeout: duration("schedule.timeout")?,
        stop_grace: duration("schedule.stop_grace")?,
        http_addr: req("metrics.http_addr").parse().map_err(|_| {
            Error::config(
                "metrics.http_addr",
                format!(
                    "expected HOST:PORT such as 127.0.0.1:9187, got {:?}",
                    req("metrics.http_addr")
                ),
            )
        })?,
    };
    let notify = build_notify(&get)?;

    Ok(Config {
        objects,
        notify,
        daemon,
        postgres: PostgresConfig {
            host,
            port,
            user,
            password,
            db,
            sslmode,
            pg_dump: get("postgres.pg_dump").map(PathBuf::from),
            globals: parse_bool(&req("postgres.globals"))
                .map_err(|e| Error::config("postgres.globals", e))?,
        },
        backup: BackupConfig {
            dir: PathBuf::from(req("backup.dir")),
            compression,
            compression_level,
            retention: crate::retention::Policy {
                days: num("backup.retention_days")?,
                keep_last: num("backup.keep_last")?,
                keep_daily: num("backup.keep_daily")?,
                keep_weekly: num("backup.keep_weekly")?,
                keep_monthly: num("backup.keep_monthly")?,
                keep_min: num("backup.keep_min")?,
                grace: chrono::Duration::from_std(duration("backup.failed_grace")?)
                    .map_err(|e| Error::config("backup.failed_grace", e.to_string()))?,
            },
            max_age: duration("backup.max_age")?,
            free_warn_bytes: bytes("backup.min_free_warn_bytes")?,
            timezone,
            min_free_bytes: bytes("backup.min_free_bytes")?,
            min_db_bytes: bytes("verify.min_db_bytes")?,
            min_objects_bytes: bytes("verify.min_objects_bytes")?,
        },
        resolved,
    })
}

fn build_notify(get: &dyn Fn(&str) -> Option<String>) -> Result<NotifyConfig> {
    let webhook_format = match get("alert.webhook_format")
        .unwrap_or_default()
        .to_ascii_lowercase()
        .as_str()
    {
        "auto" | "" => WebhookFormat::Auto,
        "slack" => WebhookFormat::Slack,
        "discord" => WebhookFormat::Discord,
        "generic" | "json" => WebhookFormat::Generic,
        other => {
            return Err(Error::config(
                "alert.webhook_format",
                format!("unknown format {other:?}; use auto, slack, discord or generic"),
            ))
        }
    };
    let on = match get("alert.on")
        .unwrap_or_default()
        .to_ascii_lowercase()
        .as_str()
    {
        "failure" | "" => AlertOn::Failure,
        "always" => AlertOn::Always,
        "change" => AlertOn::Change,
        other => {
            return Err(Error::config(
                "alert.on",
                format!("unknown value {other:?}; use failure, always or change"),
            ))
        }
    };
    let tls = match get("smtp.tls")
        .unwrap_or_default()
        .to_ascii_lowercase()
        .as_str()
    {
        "starttls" | "" => SmtpTls::Starttls,
        "tls" | "ssl" => SmtpTls::Tls,
        "none" | "off" => SmtpTls::None,
        other => {
            return Err(Error::config(
                "smtp.tls",
                format!("unknown value {other:?}; use starttls, tls or none"),
            ))
        }
    };
    let port = match get("smtp.port") {
        Some(p) => p.parse().map_err(|_| {
            Error::config("smtp.port", format!("expected a port number, got {p:?}"))
        })?,
        None => match tls {
            SmtpTls::Starttls => 587,
            SmtpTls::Tls => 465,
            SmtpTls::None => 25,
        },
    };
    let emails: Vec<String> = get("alert.email")
        .map(|e| {
            e.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    for e in &emails {
        if !e.contains('@') {
            return Err(Error::config(
                "alert.email",
                format!("{e:?} is not an email address"),
            ));
        }
    }
    let host = get("smtp.host");
    if !emails.is_empty() && host.is_none() {
        return Err(Error::config(
            "smtp.host",
            "BACKUP_ALERT_EMAIL is set but SMTP_HOST is not: email alerts need an SMTP server",
        ));
    }
    for key in [
        "alert.webhook_url",
        "alert.heartbeat_url",
        "metrics.pushgateway_url",
    ] {
        if let Some(u) = get(key) {
            let parsed = url::Url::parse(&u)
                .ok()
                .filter(|u| u.scheme() == "http" || u.scheme() == "https");
            if parsed.is_none() {
                return Err(Error::config(key, "expected an http:// or https:// URL"));
            }
        }
    }
    Ok(NotifyConfig {
        webhook_url: get("alert.webhook_url").map(Secret::new),
        webhook_format,
        emails,
        on,
        heartbeat_url: get("alert.heartbeat_url").map(Secret::new),
        smtp: SmtpConfig {
            host,
            port,
            user: get("smtp.user"),
            password: get("smtp.password").map(Secret::new),
            from: get("smtp.from")
                .unwrap_or_else(|| format!("stackback@{}", crate::catalog::host_name())),
            tls,
        },
        pushgateway_url: get("metrics.pushgateway_url"),
    })
}

fn build_objects(get: &dyn Fn(&str) -> Option<String>) -> Result<ObjectsConfig> {
    let buckets: Vec<String> = get("minio.bucket")
        .map(|b| {
            b.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    for b in &buckets {
        if b.contains('/') || b.starts_with('.') {
            return Err(Error::config(
                "minio.bucket",
                format!("{b:?} is not a bucket name"),
            ));
        }
    }
    let concurrency: usize = get("minio.concurrency")
        .unwrap_or_default()
        .parse()
        .ok()
        .filter(|n| (1..=256).contains(n))
        .ok_or_else(|| Error::config("minio.concurrency", "expected a number from 1 to 256"))?;
    let endpoint = get("minio.endpoint");
    if let Some(e) = &endpoint {
        let u = url::Url::parse(e)
            .map_err(|err| Error::config("minio.endpoint", format!("{e:?} is not a URL: {err}")))?;
        if u.scheme() != "http" && u.scheme() != "https" {
            return Err(Error::config(
                "minio.endpoint",
                "expected an http:// or https:// URL",
            ));
        }
    }
    let data_dir = get("minio.data_dir").map(PathBuf::from);
    let cfg = ObjectsConfig {
        endpoint,
        access_key: get("minio.access_key").map(Secret::new),
        secret_key: get("minio.secret_key").map(Secret::new),
        buckets,
        region: get("minio.region").unwrap_or_default(),
        prefix: get("minio.prefix").filter(|p| !p.is_empty()),
        ca_file: get("minio.ca_file").map(PathBuf::from),
        concurrency,
        data_dir,
    };
    if cfg.s3_enabled() && (cfg.access_key.is_none() || cfg.secret_key.is_none()) {
        return Err(Error::config(
                "minio.secret_key",
                "MINIO_ENDPOINT is set but the credentials are not: set MINIO_ACCESS_KEY and MINIO_SECRET_KEY (or MINIO_ROOT_USER and MINIO_ROOT_PASSWORD)",
            ));
    }
    Ok(cfg)
}

impl PostgresConfig {
    /// These settings with a `postgres://` URL's parts applied over them (`--target-url`).
    pub fn with_url(&self, raw: &str) -> Result<PostgresConfig> {
        let parts = parse_database_url(raw)?;
        let mut c = self.clone();
        if let Some(h) = parts.host {
            c.host = h;
        }
        if let Some(p) = parts.port {
            c.port = p;
        }
        if let Some(u) = parts.user {
            c.user = u;
        }
        if let Some(p) = parts.password {
            c.password = Some(Secret::new(p));
        }
        if let Some(d) = parts.db {
            c.db = d;
        }
        if parts.sslmode.is_some() {
            c.sslmode = parts.sslmode;
        }
        Ok(c)
    }
}

/// Database names become part of file names: refuse what would escape BACKUP_DIR.
fn validate_db_name(db: &str) -> Result<()> {
    if db.is_empty() || db.contains('/') || db.contains('\0') || db == "." || db == ".." {
        return Err(Error::config(
            "postgres.db",
            format!("{db:?} cannot be used as a database name in a file name"),
        ));
    }
    Ok(())
}

#[derive(Debug, Default, PartialEq)]
struct UrlParts {
    host: Option<String>,
    port: Option<u16>,
    user: Option<String>,
    password: Option<String>,
    db: Option<String>,
    sslmode: Option<String>,
}

fn parse_database_url(raw: &str) -> Result<UrlParts> {
    let bad = |why: &str| {
        Error::config(
            "postgres.url",
            format!("{why} (value: {})", redact_url(raw)),
        )
    };
    let u = url::Url::parse(raw).map_err(|e| bad(&format!("not a URL: {e}")))?;
    if u.scheme() != "postgres" && u.scheme() != "postgresql" {
        return Err(bad("expected a postgres:// or postgresql:// URL"));
    }
    let dec = |s: &str| urlencoding_decode(s).map_err(|_| bad("invalid percent-encoding"));
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

fn urlencoding_decode(s: &str) -> std::result::Result<String, std::string::FromUtf8Error> {
    let bytes: Vec<u8> = url::form_urlencoded::parse(s.replace('+', "%2B").as_bytes())
        .next()
        .map(|(k, _)| k.into_owned().into_bytes())
        .unwrap_or_default();
    String::from_utf8(bytes)
}

/// `postgres://user:***@host/db`: the URL with its password masked.
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

/// Replaces every known secret in a text with `***` before it is logged or stored.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> LoadInput {
        LoadInput {
            env: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..LoadInput::default()
        }
    }

    fn source_of(cfg: &Config, key: &str) -> Source {
        cfg.resolved
            .iter()
            .find(|r| r.setting.key == key)
            .unwrap()
            .source
            .clone()
    }

    #[test]
    fn defaults_match_the_seed() {
        let cfg = Config::load(&env(&[])).unwrap();
        assert_eq!(cfg.postgres.host, "localhost");
        assert_eq!(cfg.postgres.port, 5432);
        assert_eq!(cfg.backup.dir, PathBuf::from("./backups"));
        assert_eq!(cfg.backup.retention.days, 7);
        assert_eq!(cfg.backup.compression, Compression::Gzip);
        assert_eq!(cfg.backup.min_db_bytes, 1024);
        assert_eq!(cfg.backup.min_objects_bytes, 512);
        assert_eq!(cfg.postgres.db, "postgres");
    }

    #[test]
    fn layers_apply_in_order_and_record_their_source() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("s.toml");
        std::fs::write(&file, "[postgres]\nhost = \"filehost\"\nport = 6000\n[backup]\ndir = \"/b\"\ncompression = \"zstd\"\n").unwrap();
        let mut input = env(&[("POSTGRES_PORT", "7000"), ("BACKUP_DIR", "/envdir")]);
        input.file = Some(file.clone());
        input
            .flags
            .push(("backup.dir", "/flagdir".into(), "--backup-dir"));
        let cfg = Config::load(&input).unwrap();
        assert_eq!(cfg.postgres.host, "filehost");
        assert_eq!(source_of(&cfg, "postgres.host"), Source::File(file));
        assert_eq!(cfg.postgres.port, 7000);
        assert_eq!(
            source_of(&cfg, "postgres.port"),
            Source::Env("POSTGRES_PORT".into())
        );
        assert_eq!(cfg.backup.dir, PathBuf::from("/flagdir"));
        assert_eq!(
            source_of(&cfg, "backup.dir"),
            Source::Flag("--backup-dir".into())
        );
        assert_eq!(cfg.backup.compression, Compression::Zstd);
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("s.toml");
        std::fs::write(&file, "[postgres]\nhots = \"x\"\n").unwrap();
        let mut input = env(&[]);
        input.file = Some(file);
        let err = Config::load(&input).unwrap_err().to_string();
        assert!(err.contains("postgres.hots"), "{err}");

        let err = Config::load(&env(&[("POSTGRES_PORT", "abc")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("postgres.port"), "{err}");
        let err = Config::load(&env(&[("BACKUP_COMPRESSION", "lz4")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("backup.compression"), "{err}");
        let err = Config::load(&env(&[("TZ", "Mars/Base")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("backup.timezone"), "{err}");
        let err = Config::load(&env(&[("BACKUP_RETENTION_DAYS", "-1")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("backup.retention_days"), "{err}");
    }

    #[test]
    fn secrets_come_from_files_with_one_newline_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        std::fs::write(&f, "s3cret \n").unwrap();
        let cfg = Config::load(&env(&[("POSTGRES_PASSWORD_FILE", f.to_str().unwrap())])).unwrap();
        assert_eq!(cfg.postgres.password.as_ref().unwrap().expose(), "s3cret ");
        let shown = cfg
            .resolved
            .iter()
            .find(|r| r.setting.key == "postgres.password")
            .unwrap();
        assert_eq!(shown.display_value(), "***");
        assert_eq!(
            shown.source,
            Source::EnvFile("POSTGRES_PASSWORD_FILE".into())
        );

        let err = Config::load(&env(&[
            ("POSTGRES_PASSWORD", "a"),
            ("POSTGRES_PASSWORD_FILE", f.to_str().unwrap()),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("both"));
    }

    #[test]
    fn database_url_wins_for_its_parts_and_is_redacted() {
        let cfg = Config::load(&env(&[
            ("POSTGRES_HOST", "ignored"),
            ("POSTGRES_DB", "ignored"),
            (
                "DATABASE_URL",
                "postgresql://app:p%40ss@db.internal:6543/appdb?sslmode=require",
            ),
        ]))
        .unwrap();
        assert_eq!(cfg.postgres.host, "db.internal");
        assert_eq!(cfg.postgres.port, 6543);
        assert_eq!(cfg.postgres.user, "app");
        assert_eq!(cfg.postgres.password.as_ref().unwrap().expose(), "p@ss");
        assert_eq!(cfg.postgres.db, "appdb");
        assert_eq!(cfg.postgres.sslmode.as_deref(), Some("require"));
        let shown = cfg
            .resolved
            .iter()
            .find(|r| r.setting.key == "postgres.url")
            .unwrap();
        assert!(!shown.display_value().contains("p%40ss"));
        let r = cfg.redactor();
        assert_eq!(r.redact("login p@ss failed"), "login *** failed");
    }

    #[test]
    fn bucket_settings_accept_the_minio_images_names() {
        let cfg = Config::load(&env(&[
            ("MINIO_ENDPOINT", "http://minio:9000"),
            ("MINIO_ROOT_USER", "admin"),
            ("MINIO_ROOT_PASSWORD", "adminsecret"),
            ("MINIO_BUCKET", "pdfs, avatars"),
        ]))
        .unwrap();
        assert!(cfg.objects.s3_enabled());
        assert_eq!(cfg.objects.buckets, vec!["pdfs", "avatars"]);
        assert_eq!(cfg.objects.region, "us-east-1");
        assert_eq!(cfg.objects.concurrency, 16);
        assert_eq!(cfg.redactor().redact("key adminsecret"), "key ***");
        let err = Config::load(&env(&[
            ("MINIO_ENDPOINT", "http://m:9000"),
            ("MINIO_BUCKET", "b"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("MINIO_ACCESS_KEY"), "{err}");
        let err = Config::load(&env(&[("MINIO_ENDPOINT", "ftp://m")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("minio.endpoint"), "{err}");
    }

    #[test]
    fn database_names_cannot_escape_the_backup_dir() {
        assert!(Config::load(&env(&[("POSTGRES_DB", "../etc")])).is_err());
    }
}
