//! Installing stackback as a scheduled job: a systemd service + timer ([`systemd`]), or a cron.d
//! file ([`cron`]), with the real binary and working-directory paths filled in (the seed asked
//! operators to hand-edit them), named as the operator wants (`--name backup` gives the seed's
//! `backup.service`).
//!
//! Everything here is pure text generation; [`write_files`] is the one place that touches disk.

pub mod compose;
mod cron;
mod systemd;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use cron::cron_file;
pub use systemd::{on_calendar, systemd_units};

use crate::error::{Error, Result};

/// Where and how to install.
#[derive(Debug, Clone)]
pub struct InstallSpec {
    /// Unit and cron file name (`stackback`, or the seed's `backup` / `schedgen-backup`).
    pub name: String,
    pub binary: PathBuf,
    pub working_dir: PathBuf,
    pub backup_dir: PathBuf,
    pub env_file: PathBuf,
    pub schedule: String,
    pub user_mode: bool,
    pub randomized_delay: String,
    /// `TZ`: the timer's zone and the job's.
    pub timezone: chrono_tz::Tz,
    /// `BACKUP_TIMEOUT` and `BACKUP_STOP_GRACE`, under which the outer limit is set.
    pub timeout: Duration,
    pub stop_grace: Duration,
}

/// A file to write: path (under the install root) and content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileOut {
    pub path: PathBuf,
    pub content: String,
    pub mode: u32,
}

/// What kind of scheduled job to install.
#[derive(Debug, Clone)]
pub enum Kind {
    /// A service and a timer; per-user units with `user`.
    Systemd {
        user: bool,
        randomized_delay: String,
    },
    /// `/etc/cron.d/<name>`, its output appended to `log` (default `/var/log/<name>.log`).
    Cron { log: Option<PathBuf> },
}

/// What the schedule needs from the configuration.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub name: String,
    pub cron: String,
    pub timezone: chrono_tz::Tz,
    pub timeout: Duration,
    pub stop_grace: Duration,
}

/// Where things are on this machine.
#[derive(Debug, Clone)]
pub struct Paths {
    pub binary: PathBuf,
    pub working_dir: PathBuf,
    /// Absolute.
    pub backup_dir: PathBuf,
    pub home: PathBuf,
}

/// The files to write, the directories to create, and what to do next.
#[derive(Debug, Clone)]
pub struct Plan {
    pub files: Vec<FileOut>,
    /// Created (mode 0700) if missing: the backup directory, so the first run finds it.
    pub dirs: Vec<PathBuf>,
    pub next_steps: String,
}

/// Decides the files of a `kind` install: their paths, contents and modes.
///
/// # Errors
/// A schedule the target cannot express, with the reason.
/// `redact` shows `***` for the values of secrets (a dry run's output).
pub fn plan(
    kind: &Kind,
    paths: &Paths,
    schedule: &Schedule,
    env: &std::collections::HashMap<String, String>,
    redact: bool,
) -> std::result::Result<Plan, String> {
    let user_mode = matches!(kind, Kind::Systemd { user: true, .. });
    let env_file = if user_mode {
        paths.home.join(".config/stackback/stackback.env")
    } else {
        PathBuf::from("/etc/stackback/stackback.env")
    };
    let name = &schedule.name;
    let spec = InstallSpec {
        name: name.clone(),
        binary: paths.binary.clone(),
        working_dir: paths.working_dir.clone(),
        backup_dir: paths.backup_dir.clone(),
        env_file: env_file.clone(),
        schedule: schedule.cron.clone(),
        user_mode,
        timezone: schedule.timezone,
        timeout: schedule.timeout,
        stop_grace: schedule.stop_grace,
        randomized_delay: match kind {
            Kind::Systemd {
                randomized_delay, ..
            } => randomized_delay.clone(),
            Kind::Cron { .. } => String::new(),
        },
    };
    let env_out = FileOut {
        path: env_file,
        content: env_file_content(env, redact),
        mode: 0o600,
    };
    let file = |path: PathBuf, content: String| FileOut {
        path,
        content,
        mode: 0o644,
    };
    Ok(match kind {
        Kind::Systemd { user, .. } => {
            let (service, timer) = systemd_units(&spec)?;
            let (dir, ctl, journal) = if *user {
                (
                    paths.home.join(".config/systemd/user"),
                    "systemctl --user",
                    "--user ",
                )
            } else {
                (PathBuf::from("/etc/systemd/system"), "systemctl", "")
            };
            Plan {
                files: vec![
                    file(dir.join(format!("{name}.service")), service),
                    file(dir.join(format!("{name}.timer")), timer),
                    env_out,
                ],
                dirs: vec![paths.backup_dir.clone()],
                next_steps: format!("{ctl} daemon-reload\n{ctl} enable --now {name}.timer\n{ctl} list-timers {name}.timer\n{ctl} start {name}.service   # a backup now\njournalctl {journal}-u {name}.service -f"),
            }
        }
        Kind::Cron { log } => {
            let log = log
                .clone()
                .unwrap_or_else(|| PathBuf::from(format!("/var/log/{name}.log")));
            Plan {
                files: vec![
                    file(PathBuf::from(format!("/etc/cron.d/{name}")), cron_file(&spec, &log)?),
                    env_out,
                ],
                dirs: vec![paths.backup_dir.clone()],
                next_steps: format!("cron picks up /etc/cron.d/{name} by itself (or: systemctl restart cron)\ntail -f {}", log.display()),
            }
        }
    })
}

/// The environment file the service reads: the stackback settings among `env` (`NAME_FILE`
/// references kept as references), quoted for a shell and for systemd's `EnvironmentFile=`. With
/// `redact`, secrets and URL passwords show as `***`.
pub fn env_file_content(env: &std::collections::HashMap<String, String>, redact: bool) -> String {
    let mut out = String::from("# stackback settings for the scheduled job (generated by `stackback install`).\n# Edit freely; see `stackback config` for every setting.\n");
    for s in crate::config::SETTINGS {
        for name in s.env {
            for n in [name.to_string(), format!("{name}_FILE")] {
                if let Some(v) = env.get(&n) {
                    let shown = match (redact, s.secret && !n.ends_with("_FILE")) {
                        (true, true) => "***".to_string(),
                        (true, false) => crate::redact::redact_url_password(v),
                        (false, _) => v.clone(),
                    };
                    let q = shown
                        .replace('\\', "\\\\")
                        .replace('"', "\\\"")
                        .replace('$', "\\$")
                        .replace('`', "\\`");
                    out.push_str(&format!("{n}=\"{q}\"\n"));
                }
            }
        }
    }
    out
}

/// Carries out a plan under `root` (`/` normally): creates its directories (0700), writes its
/// files. Returns what was created or written.
pub fn execute(root: &Path, plan: &Plan) -> Result<Vec<PathBuf>> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let mut done = Vec::new();
    for d in &plan.dirs {
        let path = root.join(d.strip_prefix("/").unwrap_or(d));
        if path.exists() {
            continue;
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&path)
            .and_then(|()| std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)))
            .map_err(|e| Error::io("cannot create", &path, e))?;
        done.push(path);
    }
    done.extend(write_files(root, &plan.files)?);
    Ok(done)
}

/// Writes files under `root` (`/` normally), creating directories; refuses to overwrite an
/// existing env file, which holds the operator's settings.
pub fn write_files(root: &Path, files: &[FileOut]) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for f in files {
        let rel = f.path.strip_prefix("/").unwrap_or(&f.path);
        let path = root.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io("cannot create", parent, e))?;
        }
        if f.mode == 0o600 && path.exists() {
            continue;
        }
        replace_file(
            path.parent().unwrap_or(Path::new("/")),
            &FileOut {
                path: path.clone(),
                ..f.clone()
            },
        )?;
        written.push(path);
    }
    Ok(written)
}

/// Writes `f` (an absolute path in `dir`) through a temp file created with its final mode: a file
/// holding secrets is never readable by others, not even between its creation and a chmod. The
/// chmod then undoes what the umask took.
fn replace_file(dir: &Path, f: &FileOut) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let name = f.path.file_name().map(|n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(".{}.stackback-tmp", name.unwrap_or_default()));
    let _ = std::fs::remove_file(&tmp);
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(f.mode)
        .open(&tmp)
        .map_err(|e| Error::io("cannot write", &tmp, e))?;
    out.set_permissions(std::fs::Permissions::from_mode(f.mode))
        .and_then(|()| out.write_all(f.content.as_bytes()))
        .and_then(|()| out.sync_all())
        .map_err(|e| Error::io("cannot write", &tmp, e))?;
    std::fs::rename(&tmp, &f.path).map_err(|e| Error::io("cannot write", &f.path, e))
}
