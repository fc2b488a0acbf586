//! The remote section: where off-site copies go (BACKUP_REMOTE_URL and the settings its scheme
//! needs), and the retention policy there. Built only by the commands that reach the remote.

use std::path::PathBuf;

use super::settings::Key;
use super::{RetentionConfig, Settings};
use crate::error::Result;
use crate::redact::Secret;

/// Where off-site copies go.
#[derive(Debug, Clone)]
pub enum RemoteTarget {
    /// An S3 bucket (any S3-compatible server), under a prefix.
    S3 {
        bucket: String,
        prefix: String,
        endpoint: Option<String>,
        region: String,
        access_key: Option<Secret>,
        secret_key: Option<Secret>,
        virtual_host_style: bool,
    },
    /// A WebDAV collection: `http(s)://host[:port]/path`.
    WebDav {
        endpoint: url::Url,
        user: Option<String>,
        password: Option<Secret>,
    },
    /// A directory on an SFTP server, logged in with a key, the host key checked.
    Sftp {
        user: Option<String>,
        host: String,
        port: u16,
        path: String,
        key_file: PathBuf,
        known_hosts: PathBuf,
    },
    /// A mounted share.
    File { path: PathBuf, allow_same_fs: bool },
}

/// The remote and its retention.
#[derive(Debug, Clone)]
pub struct RemoteConfig {
    pub target: RemoteTarget,
    /// The URL as people may read it (no password).
    pub display: String,
    pub retention: RetentionConfig,
}

impl RemoteConfig {
    /// `None` when BACKUP_REMOTE_URL is unset. `local` is the local policy remote retention
    /// defaults to.
    pub fn build(s: &Settings, local: &RetentionConfig) -> Result<Option<Self>> {
        let Some(raw) = s.get(Key::RemoteUrl).map(str::trim) else {
            return Ok(None);
        };
        let bad = |m: String| Key::RemoteUrl.error(m);
        // The URL parser folds `a/../b` away; a path that says `..` is refused as written.
        let path_part = raw.split_once("://").map_or(raw, |(_, rest)| rest);
        let path_part = path_part.split(['?', '#']).next().unwrap_or_default();
        check_path(Key::RemoteUrl, path_part)?;
        let url = url::Url::parse(raw).map_err(|e| {
            bad(format!(
                "not a URL ({e}): use s3://bucket/prefix, webdav(s)://host/path, sftp://user@host/path or file:///path"
            ))
        })?;
        let target = match url.scheme() {
            "s3" => s3_target(s, &url)?,
            "webdav" | "webdavs" => webdav_target(s, &url)?,
            "sftp" => sftp_target(s, &url)?,
            // `file:relative` parses as `/relative`: only the written `file:///` form is a path.
            "file" if raw.starts_with("file:///") => RemoteTarget::File {
                path: url.to_file_path().map_err(|_| {
                    bad("file:// needs an absolute path: file:///mnt/nas/backups".into())
                })?,
                allow_same_fs: s.flag(Key::RemoteAllowSameFs)?,
            },
            "file" => {
                return Err(bad(
                    "file:// needs an absolute path: file:///mnt/nas/backups".into(),
                ))
            }
            other => {
                return Err(bad(format!(
                    "unsupported scheme {other:?}: use s3, webdav, webdavs, sftp or file"
                )))
            }
        };
        Ok(Some(RemoteConfig {
            target,
            display: crate::redact::redact_url_password(raw),
            retention: retention(s, local)?,
        }))
    }
}

fn s3_target(s: &Settings, url: &url::Url) -> Result<RemoteTarget> {
    let bucket = url.host_str().unwrap_or_default().to_string();
    if bucket.is_empty() {
        return Err(Key::RemoteUrl.error("s3:// needs a bucket: s3://bucket/prefix"));
    }
    let prefix = url.path().trim_matches('/').to_string();
    check_path(Key::RemoteUrl, &prefix)?;
    let endpoint = s.http_url(Key::RemoteEndpoint)?;
    let access_key = s.get(Key::RemoteAccessKey).map(Secret::new);
    let secret_key = s.get(Key::RemoteSecretKey).map(Secret::new);
    if access_key.is_some() != secret_key.is_some() {
        return Err(Key::RemoteSecretKey
            .error("set both BACKUP_REMOTE_ACCESS_KEY and BACKUP_REMOTE_SECRET_KEY, or neither"));
    }
    Ok(RemoteTarget::S3 {
        bucket,
        prefix,
        endpoint,
        region: s.text(Key::RemoteRegion).trim().to_string(),
        access_key,
        secret_key,
        virtual_host_style: s.flag(Key::RemoteVirtualHost)?,
    })
}

fn webdav_target(s: &Settings, url: &url::Url) -> Result<RemoteTarget> {
    let scheme = if url.scheme() == "webdavs" {
        "https"
    } else {
        "http"
    };
    let host = url
        .host_str()
        .ok_or_else(|| Key::RemoteUrl.error("webdav:// needs a host: webdav://host:port/path"))?;
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    let path = url.path().trim_end_matches('/');
    let endpoint = url::Url::parse(&format!("{scheme}://{host}{port}{path}/"))
        .map_err(|e| Key::RemoteUrl.error(format!("not a usable WebDAV URL: {e}")))?;
    let url_user = (!url.username().is_empty()).then(|| decode(url.username()));
    let url_password = url.password().map(decode);
    Ok(RemoteTarget::WebDav {
        endpoint,
        user: s.get(Key::RemoteUser).map(String::from).or(url_user),
        password: s
            .get(Key::RemotePassword)
            .map(String::from)
            .or(url_password)
            .map(Secret::new),
    })
}

fn sftp_target(s: &Settings, url: &url::Url) -> Result<RemoteTarget> {
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| Key::RemoteUrl.error("sftp:// needs a host: sftp://user@host:22/path"))?
        .to_string();
    let key_file = s
        .get(Key::RemoteSshKeyFile)
        .map(|p| PathBuf::from(p.trim()))
        .ok_or_else(|| {
            Key::RemoteSshKeyFile
                .error("sftp:// remotes log in with a key: set BACKUP_REMOTE_SSH_KEY_FILE")
        })?;
    let known_hosts = s.get(Key::RemoteKnownHosts).map(|p| PathBuf::from(p.trim())).ok_or_else(|| {
        Key::RemoteKnownHosts.error(
            "sftp:// remotes need the server's host key: set BACKUP_REMOTE_KNOWN_HOSTS to a known_hosts file (ssh-keyscan -p PORT HOST > known_hosts, then check it)",
        )
    })?;
    for (k, p) in [
        (Key::RemoteSshKeyFile, &key_file),
        (Key::RemoteKnownHosts, &known_hosts),
    ] {
        std::fs::metadata(p).map_err(|e| k.error(format!("cannot read {}: {e}", p.display())))?;
    }
    let path = decode(url.path());
    check_path(Key::RemoteUrl, path.trim_matches('/'))?;
    Ok(RemoteTarget::Sftp {
        user: (!url.username().is_empty()).then(|| url.username().to_string()),
        host,
        port: url.port().unwrap_or(22),
        path: if path.is_empty() { ".".into() } else { path },
        key_file,
        known_hosts,
    })
}

fn decode(s: &str) -> String {
    crate::redact::percent_decode(s).unwrap_or_else(|_| s.to_string())
}

/// A remote directory or prefix: plain segments, no `..`, no control characters.
fn check_path(k: Key, p: &str) -> Result<()> {
    if p.split('/').any(|seg| seg == ".." || seg == ".") || p.chars().any(char::is_control) {
        return Err(k.error(format!(
            "{p:?}: the remote path may not hold . or .. segments or control characters"
        )));
    }
    Ok(())
}

/// The remote policy: each BACKUP_REMOTE_* value, else the local one.
fn retention(s: &Settings, local: &RetentionConfig) -> Result<RetentionConfig> {
    let n = |k: Key, fallback: u32| -> Result<u32> {
        match s.get(k) {
            Some(_) => s.number::<u32>(k, "a whole number"),
            None => Ok(fallback),
        }
    };
    let l = &local.policy;
    let policy = crate::retention::Policy {
        days: n(Key::RemoteRetentionDays, l.days)?,
        keep_last: n(Key::RemoteKeepLast, l.keep_last)?,
        keep_daily: n(Key::RemoteKeepDaily, l.keep_daily)?,
        keep_weekly: n(Key::RemoteKeepWeekly, l.keep_weekly)?,
        keep_monthly: n(Key::RemoteKeepMonthly, l.keep_monthly)?,
        keep_min: n(Key::RemoteKeepMin, l.keep_min)?,
        grace: l.grace,
    };
    policy.validate().map_err(|e| {
        let key = if policy.keep_min == 0 {
            Key::RemoteKeepMin
        } else {
            Key::RemoteRetentionDays
        };
        key.error(e)
    })?;
    Ok(RetentionConfig {
        policy,
        timezone: local.timezone,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, LoadInput};

    fn remote(pairs: &[(&str, &str)]) -> Result<Option<RemoteConfig>> {
        let input = LoadInput {
            env: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..LoadInput::default()
        };
        let cfg = Config::load(&input).unwrap();
        cfg.remote().map(|o| o.cloned())
    }

    #[test]
    fn each_scheme_parses_and_bad_urls_name_the_setting() {
        assert!(remote(&[]).unwrap().is_none());
        let r = remote(&[
            ("BACKUP_REMOTE_URL", "s3://offsite/host1/db"),
            ("BACKUP_REMOTE_ENDPOINT", "http://garage:3900"),
            ("BACKUP_RETENTION_DAYS", "9"),
            ("BACKUP_REMOTE_KEEP_LAST", "3"),
        ])
        .unwrap()
        .unwrap();
        match &r.target {
            RemoteTarget::S3 { bucket, prefix, .. } => {
                assert_eq!((bucket.as_str(), prefix.as_str()), ("offsite", "host1/db"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            (r.retention.policy.days, r.retention.policy.keep_last),
            (9, 3)
        );
        let r = remote(&[(
            "BACKUP_REMOTE_URL",
            "webdavs://u:p%40ss@nas:8443/dav/backups",
        )])
        .unwrap()
        .unwrap();
        match &r.target {
            RemoteTarget::WebDav {
                endpoint,
                user,
                password,
            } => {
                assert_eq!(endpoint.as_str(), "https://nas:8443/dav/backups/");
                assert_eq!(user.as_deref(), Some("u"));
                assert_eq!(
                    password.as_ref().map(|p| p.expose().to_string()),
                    Some("p@ss".into())
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(!r.display.contains("p%40ss"), "{}", r.display);
        for (url, key) in [
            ("ftp://x/y", "remote.url"),
            ("s3:///nobucket", "remote.url"),
            ("s3://b/../x", "remote.url"),
            ("sftp://u@h/x", "remote.ssh_key_file"),
            ("file:relative", "remote.url"),
        ] {
            let e = remote(&[("BACKUP_REMOTE_URL", url)])
                .unwrap_err()
                .to_string();
            assert!(e.contains(key), "{url}: {e}");
        }
        let e = remote(&[
            ("BACKUP_REMOTE_URL", "s3://b"),
            ("BACKUP_REMOTE_ACCESS_KEY", "a"),
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("remote.secret_key"), "{e}");
    }
}
