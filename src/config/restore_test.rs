//! The restore-test section (`BACKUP_RESTORE_TEST*`): when the daemon runs restore tests, on
//! which scratch server, for how long, with how many objects; validated when built, errors name
//! the setting.

use std::time::Duration;

use super::settings::Key;
use super::{dburl, PostgresConfig, Settings};
use crate::error::Result;
use crate::redact::Secret;

/// When the daemon runs restore tests.
#[derive(Debug, Clone)]
pub enum RestoreTestMode {
    Off,
    /// After every run that ended ok, of that run.
    AfterRun,
    /// Of the latest good run, on this schedule.
    Schedule(Box<crate::schedule::Schedule>),
}

/// Restore tests: when the daemon runs them, where, how long they may take, how many objects.
#[derive(Debug, Clone)]
pub struct RestoreTestConfig {
    pub mode: RestoreTestMode,
    /// The scratch server's URL (`BACKUP_RESTORE_TEST_URL`); `None`: the source server.
    pub url: Option<Secret>,
    pub timeout: Duration,
    /// Objects per bucket archive uploaded and read back (without `--full`).
    pub sample: usize,
}

impl RestoreTestConfig {
    pub fn build(s: &Settings) -> Result<Self> {
        let raw = s.text(Key::RestoreTest).trim();
        let mode = match raw.to_ascii_lowercase().as_str() {
            "off" | "false" | "no" | "" => RestoreTestMode::Off,
            "after-run" => RestoreTestMode::AfterRun,
            _ => RestoreTestMode::Schedule(Box::new(
                crate::schedule::Schedule::parse(raw, s.timezone()?).map_err(|e| {
                    Key::RestoreTest
                        .error(format!("expected off, after-run or a cron expression: {e}"))
                })?,
            )),
        };
        let url = s.get(Key::RestoreTestUrl);
        if let Some(u) = url {
            // Checked now, so a typo stops the daemon at start rather than the first test.
            dburl::parse(Key::RestoreTestUrl.name(), u)?;
        }
        let timeout = s.duration(Key::RestoreTestTimeout)?;
        if timeout.is_zero() {
            return Err(Key::RestoreTestTimeout.error("must be longer than 0 s"));
        }
        let sample: usize = s
            .text(Key::RestoreTestSample)
            .trim()
            .parse()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| Key::RestoreTestSample.error("expected a whole number of at least 1"))?;
        Ok(RestoreTestConfig {
            mode,
            url: url.map(Secret::new),
            timeout,
            sample,
        })
    }
}

impl PostgresConfig {
    /// The scratch server of restore tests, connected to the database their admin statements
    /// run in: `url`'s server and database (`postgres` when it names none), else this server
    /// and its database (which this user can reach). The configured password goes only to the
    /// configured server, as with [`PostgresConfig::with_url`].
    pub fn for_restore_test(&self, url: Option<&str>) -> Result<PostgresConfig> {
        let Some(raw) = url else {
            return Ok(self.clone());
        };
        let named_db = dburl::parse(Key::RestoreTestUrl.name(), raw)?.db;
        let mut c = self.with_url(raw)?;
        c.db = named_db.unwrap_or_else(|| "postgres".into());
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, LoadInput};

    fn cfg(pairs: &[(&str, &str)]) -> Config {
        Config::load(&LoadInput {
            env: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..LoadInput::default()
        })
        .unwrap()
    }

    #[test]
    fn modes_parse_and_bad_values_name_the_key() {
        let mode = |v: &str| {
            cfg(&[("BACKUP_RESTORE_TEST", v)])
                .restore_test()
                .map(|r| r.mode.clone())
        };
        assert!(matches!(mode("off").unwrap(), RestoreTestMode::Off));
        assert!(matches!(
            mode("after-run").unwrap(),
            RestoreTestMode::AfterRun
        ));
        assert!(matches!(
            mode("0 4 * * 0").unwrap(),
            RestoreTestMode::Schedule(_)
        ));
        let defaults = cfg(&[]);
        let d = defaults.restore_test().unwrap();
        assert!(matches!(d.mode, RestoreTestMode::Off));
        assert_eq!((d.timeout.as_secs(), d.sample), (3600, 20));
        for (k, v, key) in [
            ("BACKUP_RESTORE_TEST", "sometimes", "restore_test.mode"),
            ("BACKUP_RESTORE_TEST_URL", "mysql://x", "restore_test.url"),
            ("BACKUP_RESTORE_TEST_TIMEOUT", "0s", "restore_test.timeout"),
            ("BACKUP_RESTORE_TEST_SAMPLE", "0", "restore_test.sample"),
        ] {
            let err = cfg(&[(k, v)]).restore_test().unwrap_err().to_string();
            assert!(err.contains(key), "{k}={v}: {err}");
        }
    }

    #[test]
    fn the_scratch_server_gets_no_password_it_was_not_given() {
        let c = cfg(&[
            ("POSTGRES_HOST", "db1"),
            ("POSTGRES_PASSWORD", "source-pw"),
            ("POSTGRES_DB", "app"),
        ]);
        let pg = c.postgres().unwrap();
        let same = pg.for_restore_test(None).unwrap();
        assert_eq!((same.host.as_str(), same.db.as_str()), ("db1", "app"));
        let other = pg.for_restore_test(Some("postgres://tester@db2")).unwrap();
        assert!(other.password.is_none());
        assert_eq!(
            (other.host.as_str(), other.db.as_str()),
            ("db2", "postgres")
        );
        let named = pg
            .for_restore_test(Some("postgres://t:pw@db2/admin"))
            .unwrap();
        assert_eq!(named.db, "admin");
        assert_eq!(named.password.unwrap().expose(), "pw");
    }
}
