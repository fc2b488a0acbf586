//! Configuration: defaults < TOML file < environment < command-line flags.
//!
//! Loading ([`Config::load`]) resolves every setting's raw value and its source ([`layers`]) and
//! refuses what is wrong whatever the command (an unknown TOML key, an unreadable secret file).
//! Values are parsed into typed sections ([`sections`]) only when a command asks for one, and each
//! section is validated as it is built: a command checks only the settings it uses. A section is
//! built once and kept.
//!
//! Loading is pure apart from reading the TOML file and secret files: the environment comes in as a
//! map, so tests and the daemon can load a configuration without touching the process environment.

mod anomaly;
mod crypt;
mod dburl;
mod layers;
mod notify;
mod remote;
mod restore_test;
mod sections;
mod settings;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::OnceLock;

pub use anomaly::AnomalyConfig;
pub use crypt::EncryptionConfig;
pub use dburl::SslMode;
pub use layers::{LoadInput, Resolved, Source};
pub use notify::{AlertOn, NotifyConfig, PushTarget, SmtpConfig, SmtpTls, WebhookFormat};
pub use remote::{RemoteConfig, RemoteTarget};
pub use restore_test::{RestoreTestConfig, RestoreTestMode};
pub use sections::{
    ObjectsConfig, PostgresConfig, RetentionConfig, ScheduleConfig, StatusConfig, StoreConfig,
    Thresholds,
};
pub use settings::{Key, Setting, SETTINGS};

use crate::error::Result;
use crate::redact::Redactor;

/// Every setting's resolved value and source, before any is parsed.
#[derive(Debug, Clone)]
pub struct Settings {
    resolved: Vec<Resolved>,
}

impl Settings {
    pub fn get(&self, k: Key) -> Option<&str> {
        self.resolved[k as usize].value.as_deref()
    }

    /// True when `k` was set by a file, the environment or a flag, not left at its default.
    pub fn is_set(&self, k: Key) -> bool {
        self.resolved[k as usize].source != Source::Default
    }

    /// Every setting in display order, for `stackback config`.
    pub fn resolved(&self) -> &[Resolved] {
        &self.resolved
    }

    /// A redactor that knows every secret, whether or not its section is valid.
    pub fn redactor(&self) -> Redactor {
        let mut r = Redactor::default();
        for item in &self.resolved {
            match (&item.value, item.setting.secret) {
                (Some(v), true) => {
                    r.add_url(v);
                    // A database URL may hold a raw password a URL parser would cut short.
                    if let Ok(p) = dburl::parse("", v) {
                        if let Some(pw) = p.password {
                            r.add(&pw);
                        }
                    }
                }
                (Some(v), false) => r.add_url_password(v),
                (None, _) => {}
            }
        }
        r
    }
}

/// A section built on first use and kept.
fn cached<T>(cell: &OnceLock<T>, build: impl FnOnce() -> Result<T>) -> Result<&T> {
    if let Some(v) = cell.get() {
        return Ok(v);
    }
    let v = build()?;
    Ok(cell.get_or_init(|| v))
}

/// The configuration: resolved settings, and the typed sections commands ask for.
#[derive(Debug, Clone)]
pub struct Config {
    settings: Settings,
    postgres: OnceLock<PostgresConfig>,
    store: OnceLock<StoreConfig>,
    thresholds: OnceLock<Thresholds>,
    retention: OnceLock<RetentionConfig>,
    status: OnceLock<StatusConfig>,
    objects: OnceLock<ObjectsConfig>,
    notify: OnceLock<NotifyConfig>,
    schedule: OnceLock<ScheduleConfig>,
    encryption: OnceLock<EncryptionConfig>,
    remote: OnceLock<Option<RemoteConfig>>,
    identities: OnceLock<Option<std::sync::Arc<crate::crypt::Identities>>>,
    restore_test: OnceLock<RestoreTestConfig>,
    anomaly: OnceLock<AnomalyConfig>,
}

/// A section, for commands that name what they use up front.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Postgres,
    Store,
    Thresholds,
    Retention,
    Status,
    Objects,
    Notify,
    Schedule,
    Http,
    Encryption,
    Remote,
    RestoreTest,
    Anomaly,
}

impl Section {
    pub const ALL: [Section; 13] = [
        Section::Postgres,
        Section::Store,
        Section::Thresholds,
        Section::Retention,
        Section::Status,
        Section::Objects,
        Section::Notify,
        Section::Schedule,
        Section::Http,
        Section::Encryption,
        Section::Remote,
        Section::RestoreTest,
        Section::Anomaly,
    ];
}

impl Config {
    /// Resolves the layers. Errors name the offending key.
    pub fn load(input: &LoadInput) -> Result<Config> {
        Ok(Config::from_settings(Settings {
            resolved: layers::resolve(input)?,
        }))
    }

    fn from_settings(settings: Settings) -> Config {
        Config {
            settings,
            postgres: OnceLock::new(),
            store: OnceLock::new(),
            thresholds: OnceLock::new(),
            retention: OnceLock::new(),
            status: OnceLock::new(),
            objects: OnceLock::new(),
            notify: OnceLock::new(),
            schedule: OnceLock::new(),
            encryption: OnceLock::new(),
            remote: OnceLock::new(),
            identities: OnceLock::new(),
            restore_test: OnceLock::new(),
            anomaly: OnceLock::new(),
        }
    }

    /// Builds the named sections now, so a command fails before it starts rather than half-way.
    pub fn require(&self, sections: &[Section]) -> Result<()> {
        for s in sections {
            match s {
                Section::Postgres => self.postgres().map(drop)?,
                Section::Store => self.store().map(drop)?,
                Section::Thresholds => self.thresholds().map(drop)?,
                Section::Retention => self.retention().map(drop)?,
                Section::Status => self.status().map(drop)?,
                Section::Objects => self.objects().map(drop)?,
                Section::Notify => self.notify().map(drop)?,
                Section::Schedule => self.schedule().map(drop)?,
                Section::Http => self.http_addr().map(drop)?,
                Section::Encryption => self.encryption().map(drop)?,
                Section::Remote => self.remote().map(drop)?,
                Section::RestoreTest => self.restore_test().map(drop)?,
                Section::Anomaly => self.anomaly().map(drop)?,
            }
        }
        Ok(())
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Settings that disagree with each other, and which one wins.
    pub fn warnings(&self) -> Vec<String> {
        sections::warnings(&self.settings)
    }

    pub fn redactor(&self) -> Redactor {
        self.settings.redactor()
    }

    pub fn backup_dir(&self) -> PathBuf {
        self.settings.backup_dir()
    }

    /// The same configuration reading and writing backups in `dir` (a restore from files fetched
    /// off the remote into a scratch directory). Sections are built afresh from the settings.
    pub fn with_backup_dir(&self, dir: &std::path::Path, why: &str) -> Config {
        let mut settings = self.settings.clone();
        let r = &mut settings.resolved[Key::BackupDir as usize];
        r.value = Some(dir.display().to_string());
        r.source = layers::Source::Flag(why.to_string());
        Config::from_settings(settings)
    }

    pub fn timezone(&self) -> Result<chrono_tz::Tz> {
        self.settings.timezone()
    }

    /// `BACKUP_TIMEOUT`: how long one run may take, whoever starts it.
    pub fn run_timeout(&self) -> Result<std::time::Duration> {
        sections::run_timeout(&self.settings)
    }

    pub fn http_addr(&self) -> Result<SocketAddr> {
        sections::http_addr(&self.settings)
    }

    pub fn postgres(&self) -> Result<&PostgresConfig> {
        cached(&self.postgres, || PostgresConfig::build(&self.settings))
    }

    pub fn store(&self) -> Result<&StoreConfig> {
        cached(&self.store, || StoreConfig::build(&self.settings))
    }

    pub fn thresholds(&self) -> Result<&Thresholds> {
        cached(&self.thresholds, || Thresholds::build(&self.settings))
    }

    pub fn retention(&self) -> Result<&RetentionConfig> {
        cached(&self.retention, || RetentionConfig::build(&self.settings))
    }

    pub fn status(&self) -> Result<&StatusConfig> {
        cached(&self.status, || StatusConfig::build(&self.settings))
    }

    pub fn objects(&self) -> Result<&ObjectsConfig> {
        cached(&self.objects, || ObjectsConfig::build(&self.settings))
    }

    pub fn notify(&self) -> Result<&NotifyConfig> {
        cached(&self.notify, || NotifyConfig::build(&self.settings))
    }

    pub fn schedule(&self) -> Result<&ScheduleConfig> {
        cached(&self.schedule, || ScheduleConfig::build(&self.settings))
    }

    pub fn encryption(&self) -> Result<&EncryptionConfig> {
        cached(&self.encryption, || EncryptionConfig::build(&self.settings))
    }

    /// The off-site remote, when BACKUP_REMOTE_URL is set.
    pub fn remote(&self) -> Result<Option<&RemoteConfig>> {
        let local = self.retention()?;
        cached(&self.remote, || RemoteConfig::build(&self.settings, local)).map(Option::as_ref)
    }

    /// The identities of BACKUP_AGE_IDENTITY_FILE, read on first use: only commands that decrypt
    /// read the key, and a bad key file is a configuration error (exit 2) naming the setting.
    pub fn identities(&self) -> Result<Option<std::sync::Arc<crate::crypt::Identities>>> {
        cached(&self.identities, || crypt::load_identities(&self.settings)).cloned()
    }

    pub fn restore_test(&self) -> Result<&RestoreTestConfig> {
        cached(&self.restore_test, || {
            RestoreTestConfig::build(&self.settings)
        })
    }

    pub fn anomaly(&self) -> Result<&AnomalyConfig> {
        cached(&self.anomaly, || AnomalyConfig::build(&self.settings))
    }
}

#[cfg(test)]
mod tests;
