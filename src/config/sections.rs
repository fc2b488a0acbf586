//! Typed configuration sections, each parsed and validated from the resolved settings when it is
//! built. A command builds only the sections it uses, so a broken setting elsewhere (an email
//! alert without an SMTP host, say) never stops `list`, `verify` or `restore` during an incident.
//! Every error names the setting.

use std::path::PathBuf;
use std::time::Duration;

use super::settings::Key;
use super::{dburl, Settings, SslMode};
use crate::error::Result;
use crate::pipeline::Compression;
use crate::redact::Secret;
use crate::units::{parse_bool, parse_bytes, parse_duration};

impl Settings {
    pub(super) fn text(&self, k: Key) -> &str {
        self.get(k).unwrap_or_default()
    }

    pub(super) fn number<T: std::str::FromStr>(&self, k: Key, what: &str) -> Result<T> {
        let v = self.text(k);
        v.trim()
            .parse()
            .map_err(|_| k.error(format!("expected {what}, got {v:?}")))
    }

    /// A TCP port, 1-65535: 0 would mean "any port" to a listener and nothing to a client.
    pub(super) fn port(&self, k: Key) -> Result<Option<u16>> {
        self.get(k).map(|v| parse_port(k, v)).transpose()
    }

    pub(super) fn bytes(&self, k: Key) -> Result<u64> {
        parse_bytes(self.text(k)).map_err(|e| k.error(e))
    }

    pub(super) fn duration(&self, k: Key) -> Result<Duration> {
        parse_duration(self.text(k)).map_err(|e| k.error(e))
    }

    pub(super) fn flag(&self, k: Key) -> Result<bool> {
        parse_bool(self.text(k)).map_err(|e| k.error(e))
    }

    pub(super) fn list(&self, k: Key) -> Vec<String> {
        self.get(k)
            .map(|e| {
                e.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub(super) fn http_url(&self, k: Key) -> Result<Option<String>> {
        match self.get(k) {
            None => Ok(None),
            Some(u) => url::Url::parse(u)
                .ok()
                .filter(|p| p.scheme() == "http" || p.scheme() == "https")
                .map(|_| Some(u.to_string()))
                .ok_or_else(|| k.error("expected an http:// or https:// URL")),
        }
    }

    /// `TZ`: the zone of the schedule and of calendar retention.
    pub fn timezone(&self) -> Result<chrono_tz::Tz> {
        let name = self.text(Key::Timezone);
        name.trim_start_matches(':').parse().map_err(|_| {
            Key::Timezone.error(format!(
                "unknown time zone {name:?}; use an IANA name such as Europe/Berlin or UTC"
            ))
        })
    }

    /// `BACKUP_DIR`, as given (created by the run that first needs it).
    pub fn backup_dir(&self) -> PathBuf {
        PathBuf::from(self.text(Key::BackupDir))
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
    /// As set; `None` means libpq's default, `prefer`.
    pub sslmode: Option<SslMode>,
    pub sslrootcert: Option<PathBuf>,
    pub lock_wait_timeout: Duration,
    pub pg_dump: Option<PathBuf>,
    pub globals: bool,
    /// Dumps carry `DROP ... IF EXISTS`, so the seed's recipe restores over a live database.
    pub dump_clean: bool,
    /// Row counts are exact for tables with at most this many bytes of heap, estimates above.
    pub row_count_exact_limit: u64,
}

impl PostgresConfig {
    pub fn build(s: &Settings) -> Result<Self> {
        let mut c = PostgresConfig {
            host: s.text(Key::PostgresHost).to_string(),
            port: parse_port(Key::PostgresPort, s.text(Key::PostgresPort))?,
            user: s.text(Key::PostgresUser).to_string(),
            password: s.get(Key::PostgresPassword).map(Secret::new),
            db: String::new(),
            sslmode: s
                .get(Key::PostgresSslmode)
                .map(|m| m.parse().map_err(|e: String| Key::PostgresSslmode.error(e)))
                .transpose()?,
            sslrootcert: s.get(Key::PostgresSslrootcert).map(PathBuf::from),
            lock_wait_timeout: s.duration(Key::LockWait)?,
            pg_dump: s.get(Key::PgDump).map(PathBuf::from),
            globals: s.flag(Key::Globals)?,
            dump_clean: s.flag(Key::DumpClean)?,
            row_count_exact_limit: s.bytes(Key::RowCountExactLimit)?,
        };
        let mut db = s.get(Key::PostgresDb).map(String::from);
        // The app's URL only fills what POSTGRES_* leave unset: it may name the app's own user.
        if let Some(raw) = s.get(Key::PostgresUrl) {
            let mut parts = dburl::parse(Key::PostgresUrl.name(), raw)?;
            parts.keep_unset(s);
            db = db.or(parts.db.clone());
            c.apply(parts);
        }
        if let Some(raw) = s.get(Key::BackupDatabaseUrl) {
            let parts = dburl::parse(Key::BackupDatabaseUrl.name(), raw)?;
            db = parts.db.clone().or(db);
            c.apply(parts);
        }
        c.db = db.unwrap_or_else(|| c.user.clone());
        validate_db_name(&c.db)?;
        Ok(c)
    }

    fn apply(&mut self, parts: dburl::UrlParts) {
        if let Some(h) = parts.host {
            self.host = h;
        }
        if let Some(p) = parts.port {
            self.port = p;
        }
        if let Some(u) = parts.user {
            self.user = u;
        }
        if let Some(p) = parts.password {
            self.password = Some(Secret::new(p));
        }
        if let Some(d) = parts.db {
            self.db = d;
        }
        if parts.sslmode.is_some() {
            self.sslmode = parts.sslmode;
        }
        if let Some(r) = parts.sslrootcert {
            self.sslrootcert = Some(PathBuf::from(r));
        }
    }

    /// These settings with a `postgres://` URL's parts applied over them (`--target-url`). The
    /// configured password is never sent to another server: a URL naming another host or port
    /// without a password of its own connects without one.
    pub fn with_url(&self, raw: &str) -> Result<PostgresConfig> {
        let parts = dburl::parse("--target-url", raw)?;
        let other_server = parts.host.as_ref().is_some_and(|h| h != &self.host)
            || parts.port.is_some_and(|p| p != self.port);
        let mut c = self.clone();
        if other_server && parts.password.is_none() {
            c.password = None;
        }
        c.apply(parts);
        Ok(c)
    }
}

impl dburl::UrlParts {
    /// Leaves out the parts that an explicitly set `POSTGRES_*` (or sslmode setting) gives.
    fn keep_unset(&mut self, s: &Settings) {
        let set = |k: Key| s.is_set(k);
        if set(Key::PostgresHost) {
            self.host = None;
        }
        if set(Key::PostgresPort) {
            self.port = None;
        }
        if set(Key::PostgresUser) {
            self.user = None;
        }
        if set(Key::PostgresPassword) {
            self.password = None;
        }
        if set(Key::PostgresDb) {
            self.db = None;
        }
        if set(Key::PostgresSslmode) {
            self.sslmode = None;
        }
    }
}

/// Database names become part of file names: refuse what would escape BACKUP_DIR.
fn validate_db_name(db: &str) -> Result<()> {
    if db.is_empty() || db.contains('/') || db.contains('\0') || db == "." || db == ".." {
        return Err(Key::PostgresDb.error(format!(
            "{db:?} cannot be used as a database name in a file name"
        )));
    }
    Ok(())
}

/// How a run writes its artifacts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreConfig {
    pub compression: Compression,
    pub compression_level: Option<i32>,
    /// Fail in pre-flight below this much free space (0: no floor).
    pub min_free_bytes: u64,
}

impl StoreConfig {
    pub fn build(s: &Settings) -> Result<Self> {
        let compression: Compression = s
            .text(Key::Compression)
            .parse()
            .map_err(|e: String| Key::Compression.error(e))?;
        let compression_level = match s.get(Key::CompressionLevel) {
            None => None,
            Some(_) => {
                let level: i32 = s.number(Key::CompressionLevel, "a number")?;
                compression
                    .check_level(level)
                    .map_err(|e| Key::CompressionLevel.error(e))?;
                Some(level)
            }
        };
        Ok(StoreConfig {
            compression,
            compression_level,
            min_free_bytes: s.bytes(Key::MinFree)?,
        })
    }
}

/// Minimum stored sizes, per kind (the seed: > 1 KiB for a database, > 512 B for a bucket).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    pub min_db_bytes: u64,
    pub min_objects_bytes: u64,
}

impl Thresholds {
    pub fn build(s: &Settings) -> Result<Self> {
        Ok(Thresholds {
            min_db_bytes: s.bytes(Key::MinDbBytes)?,
            min_objects_bytes: s.bytes(Key::MinObjectsBytes)?,
        })
    }
}

/// Which runs to keep, in which time zone.
#[derive(Debug, Clone, PartialEq)]
pub struct RetentionConfig {
    pub policy: crate::retention::Policy,
    pub timezone: chrono_tz::Tz,
}

impl RetentionConfig {
    /// # Errors
    /// Unparsable numbers, and a policy that would delete all but the newest backup.
    pub fn build(s: &Settings) -> Result<Self> {
        let n = |k: Key| s.number::<u32>(k, "a whole number");
        let policy = crate::retention::Policy {
            days: n(Key::RetentionDays)?,
            keep_last: n(Key::KeepLast)?,
            keep_daily: n(Key::KeepDaily)?,
            keep_weekly: n(Key::KeepWeekly)?,
            keep_monthly: n(Key::KeepMonthly)?,
            keep_min: n(Key::KeepMin)?,
            grace: chrono::Duration::from_std(s.duration(Key::FailedGrace)?)
                .map_err(|e| Key::FailedGrace.error(e.to_string()))?,
        };
        policy.validate().map_err(|e| {
            let key = if policy.keep_min == 0 {
                Key::KeepMin
            } else {
                Key::RetentionDays
            };
            key.error(e)
        })?;
        Ok(RetentionConfig {
            policy,
            timezone: s.timezone()?,
        })
    }
}

/// What `status` warns about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusConfig {
    pub max_age: Duration,
    pub free_warn_bytes: u64,
}

impl StatusConfig {
    pub fn build(s: &Settings) -> Result<Self> {
        Ok(StatusConfig {
            max_age: s.duration(Key::MaxAge)?,
            free_warn_bytes: s.bytes(Key::FreeWarn)?,
        })
    }
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
    pub fn build(s: &Settings) -> Result<Self> {
        let buckets = s.list(Key::MinioBucket);
        for b in &buckets {
            if b.contains('/') || b.starts_with('.') {
                return Err(Key::MinioBucket.error(format!("{b:?} is not a bucket name")));
            }
        }
        let concurrency: usize = s
            .text(Key::S3Concurrency)
            .parse()
            .ok()
            .filter(|n| (1..=256).contains(n))
            .ok_or_else(|| Key::S3Concurrency.error("expected a number from 1 to 256"))?;
        let endpoint = s
            .get(Key::MinioEndpoint)
            .map(|e| minio_endpoint(s, e))
            .transpose()?;
        let cfg = ObjectsConfig {
            endpoint,
            access_key: s.get(Key::MinioAccessKey).map(Secret::new),
            secret_key: s.get(Key::MinioSecretKey).map(Secret::new),
            buckets,
            region: s.text(Key::MinioRegion).to_string(),
            prefix: s.get(Key::MinioPrefix).map(String::from),
            ca_file: s.get(Key::MinioCaFile).map(PathBuf::from),
            concurrency,
            data_dir: s.get(Key::MinioDataDir).map(PathBuf::from),
        };
        if cfg.s3_enabled() && (cfg.access_key.is_none() || cfg.secret_key.is_none()) {
            return Err(Key::MinioSecretKey.error(
                "MINIO_ENDPOINT is set but the credentials are not: set MINIO_ACCESS_KEY and MINIO_SECRET_KEY (or MINIO_ROOT_USER and MINIO_ROOT_PASSWORD)",
            ));
        }
        Ok(cfg)
    }

    /// What a backup run needs beyond what every command needs: a bucket to back up.
    pub fn check_for_backup(&self) -> Result<()> {
        if self.s3_enabled() && self.buckets.is_empty() {
            return Err(Key::MinioBucket.error(
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

/// `MINIO_ENDPOINT` as a URL, or as `host[:port]` with `MINIO_USE_SSL` and `MINIO_PORT` (the MinIO
/// SDK convention, as a stack's `.env` holds it). When both the endpoint and `MINIO_PORT` give a
/// port, the endpoint's wins (`stackback config` warns).
fn minio_endpoint(s: &Settings, raw: &str) -> Result<String> {
    let raw = raw.trim();
    let port = s.port(Key::MinioPort)?;
    let with_scheme = if raw.contains("://") {
        raw.to_string()
    } else {
        let scheme = if s.flag(Key::MinioUseSsl)? {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{raw}")
    };
    let mut u = url::Url::parse(&with_scheme).map_err(|err| {
        Key::MinioEndpoint.error(format!("{raw:?} is not a URL or host:port: {err}"))
    })?;
    if u.scheme() != "http" && u.scheme() != "https" {
        return Err(Key::MinioEndpoint.error(
            "expected an http:// or https:// URL, or host:port (with MINIO_USE_SSL for https)",
        ));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err(Key::MinioEndpoint.error(format!("{raw:?} names no host")));
    }
    if let (None, Some(p)) = (u.port(), port) {
        let _ = u.set_port(Some(p));
    }
    // The SDK takes the endpoint as given: no trailing slash of the URL parser's.
    Ok(u.as_str().trim_end_matches('/').to_string())
}

/// What `stackback config` points out: settings that disagree with each other, and which one wins.
pub fn warnings(s: &Settings) -> Vec<String> {
    let mut out = Vec::new();
    if let (Some(e), Some(p)) = (s.get(Key::MinioEndpoint), s.get(Key::MinioPort)) {
        let with_scheme = if e.contains("://") {
            e.to_string()
        } else {
            format!("http://{e}")
        };
        if let Some(ep) = url::Url::parse(&with_scheme).ok().and_then(|u| u.port()) {
            if p.trim() != ep.to_string() {
                out.push(format!(
                    "MINIO_ENDPOINT gives port {ep} and MINIO_PORT says {}: the endpoint's port is used",
                    p.trim()
                ));
            }
        }
    }
    if let Some(Ok(parts)) = s.get(Key::PostgresUrl).map(|u| dburl::parse("", u)) {
        let pairs = [
            (Key::PostgresHost, parts.host.clone()),
            (Key::PostgresPort, parts.port.map(|p| p.to_string())),
            (Key::PostgresUser, parts.user.clone()),
            (Key::PostgresDb, parts.db.clone()),
        ];
        for (k, from_url) in pairs {
            let explicit = s.get(k).filter(|_| s.is_set(k));
            if let (Some(mine), Some(theirs)) = (explicit, from_url) {
                if mine != theirs {
                    out.push(format!(
                        "DATABASE_URL (the app's) says {} {theirs:?} but {} is {mine:?}: {} wins (set BACKUP_DATABASE_URL for a URL of the backup's own)",
                        k.name().trim_start_matches("postgres."),
                        k.setting().env[0],
                        k.setting().env[0]
                    ));
                }
            }
        }
    }
    out
}

/// When the daemon runs backups, and how long one may take.
#[derive(Debug, Clone)]
pub struct ScheduleConfig {
    pub schedule: crate::schedule::Schedule,
    pub timeout: Duration,
    pub stop_grace: Duration,
    pub startup_grace: Duration,
}

impl ScheduleConfig {
    pub fn build(s: &Settings) -> Result<Self> {
        let schedule = crate::schedule::Schedule::parse(s.text(Key::Schedule), s.timezone()?)
            .map_err(|e| Key::Schedule.error(e))?;
        Ok(ScheduleConfig {
            schedule,
            timeout: s.duration(Key::Timeout)?,
            stop_grace: s.duration(Key::StopGrace)?,
            startup_grace: s.duration(Key::StartupGrace)?,
        })
    }
}

/// `BACKUP_TIMEOUT`.
pub fn run_timeout(s: &Settings) -> Result<Duration> {
    s.duration(Key::Timeout)
}

/// The daemon's HTTP address.
pub fn http_addr(s: &Settings) -> Result<std::net::SocketAddr> {
    let v = s.text(Key::HttpAddr);
    v.parse().map_err(|_| {
        Key::HttpAddr.error(format!(
            "expected HOST:PORT such as 127.0.0.1:9187, got {v:?}"
        ))
    })
}

fn parse_port(k: Key, v: &str) -> Result<u16> {
    match v.trim().parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(k.error(format!("expected a port number (1-65535), got {v:?}"))),
    }
}
