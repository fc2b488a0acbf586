//! Installing stackback as a scheduled job: a systemd service + timer, or a cron.d file, with the
//! real binary and working-directory paths filled in (the seed asked operators to hand-edit them).
//!
//! Everything here is pure text generation; [`write_files`] is the one place that touches disk.
//! The cron → `OnCalendar=` translation refuses what systemd cannot express (cron's "day of month
//! OR day of week" when both are restricted) instead of guessing.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

const DOW: [&str; 8] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

fn dow_name(s: &str) -> std::result::Result<String, String> {
    if let Ok(n) = s.parse::<usize>() {
        return DOW
            .get(n)
            .map(|d| d.to_string())
            .ok_or(format!("day of week {s} is out of range"));
    }
    let lower = s.to_ascii_lowercase();
    DOW.iter()
        .find(|d| d.to_ascii_lowercase() == lower)
        .map(|d| d.to_string())
        .ok_or(format!("unknown day of week {s:?}"))
}

/// One cron field as a systemd calendar component. `step_base` is where `*/n` starts.
fn field(f: &str, step_base: &str, name: &str) -> std::result::Result<String, String> {
    if f == "*" {
        return Ok("*".into());
    }
    f.split(',')
        .map(|part| {
            if let Some(step) = part.strip_prefix("*/") {
                return Ok(format!("{step_base}/{step}"));
            }
            if part.contains('/') {
                return Err(format!("the {name} field {f:?} uses a stepped range, which systemd calendars cannot express"));
            }
            if !part.chars().all(|c| c.is_ascii_digit() || c == '-') {
                return Err(format!("the {name} field {f:?} is not supported"));
            }
            Ok(part.replacen('-', "..", 1))
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map(|v| v.join(","))
}

fn two(f: &str) -> String {
    // `2` and `02` mean the same to systemd; keep plain numbers zero-padded for readability.
    if f.len() == 1 && f.chars().all(|c| c.is_ascii_digit()) {
        format!("0{f}")
    } else {
        f.to_string()
    }
}

/// Translates a cron schedule into a systemd `OnCalendar=` expression.
///
/// # Errors
/// Schedules systemd cannot express, with the reason.
pub fn on_calendar(expr: &str) -> std::result::Result<String, String> {
    let e = expr.trim();
    match e {
        "@hourly" => return Ok("hourly".into()),
        "@daily" | "@midnight" => return Ok("daily".into()),
        "@weekly" => return Ok("Sun *-*-* 00:00:00".into()),
        "@monthly" => return Ok("monthly".into()),
        "@yearly" | "@annually" => return Ok("yearly".into()),
        _ => {}
    }
    let f: Vec<&str> = e.split_whitespace().collect();
    let (sec, rest) = match f.len() {
        5 => ("00", &f[..]),
        6 => (f[0], &f[1..]),
        _ => return Err(format!("{expr:?} is not a 5-field cron schedule")),
    };
    let (min, hour, dom, mon, dow) = (rest[0], rest[1], rest[2], rest[3], rest[4]);
    if dom != "*" && dow != "*" {
        return Err(format!(
            "{expr:?} restricts both the day of month and the day of week; cron runs when EITHER matches, systemd only when BOTH do. Use two schedules, or `stackback install cron`"
        ));
    }
    let dow_part = if dow == "*" {
        String::new()
    } else {
        let days = dow
            .split(',')
            .map(|p| match p.split_once('-') {
                Some((a, b)) => Ok(format!("{}..{}", dow_name(a)?, dow_name(b)?)),
                None if p.contains('/') => Err(format!(
                    "the day-of-week field {dow:?} uses a step, which systemd cannot express"
                )),
                None => dow_name(p),
            })
            .collect::<std::result::Result<Vec<_>, String>>()?;
        format!("{} ", days.join(","))
    };
    Ok(format!(
        "{dow_part}*-{}-{} {}:{}:{}",
        field(mon, "1", "month")?,
        field(dom, "1", "day-of-month")?,
        two(&field(hour, "0", "hour")?),
        two(&field(min, "0", "minute")?),
        two(&field(sec, "0", "second")?)
    ))
}

/// Where and how to install.
#[derive(Debug, Clone)]
pub struct InstallSpec {
    pub binary: PathBuf,
    pub working_dir: PathBuf,
    pub backup_dir: PathBuf,
    pub env_file: PathBuf,
    pub schedule: String,
    pub user_mode: bool,
    pub randomized_delay: String,
}

/// A file to write: path (under the install root) and content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileOut {
    pub path: PathBuf,
    pub content: String,
    pub mode: u32,
}

/// `stackback.service` and `stackback.timer`.
pub fn systemd_units(s: &InstallSpec) -> std::result::Result<(String, String), String> {
    let cal = on_calendar(&s.schedule)?;
    let hardening = if s.user_mode {
        "NoNewPrivileges=yes\n".to_string()
    } else {
        format!(
            "NoNewPrivileges=yes\nProtectSystem=strict\nProtectHome=read-only\nReadWritePaths={}\nPrivateTmp=yes\n\
             PrivateDevices=yes\nProtectKernelTunables=yes\nProtectKernelModules=yes\nProtectControlGroups=yes\n\
             RestrictSUIDSGID=yes\nLockPersonality=yes\nUMask=0077\n",
            s.backup_dir.display()
        )
    };
    let service = format!(
        "# Generated by `stackback install systemd`.\n[Unit]\nDescription=stackback backup run (PostgreSQL and buckets)\n\
         Wants=network-online.target\nAfter=network-online.target\n\n\
         [Service]\nType=oneshot\nEnvironmentFile=-{env}\nWorkingDirectory={wd}\nExecStart={bin} run\n{hardening}",
        env = s.env_file.display(),
        wd = s.working_dir.display(),
        bin = s.binary.display(),
    );
    let timer = format!(
        "# Generated by `stackback install systemd` from BACKUP_SCHEDULE={sched:?}.\n[Unit]\n\
         Description=stackback backups on schedule ({sched})\n\n[Timer]\nOnCalendar={cal}\nPersistent=true\n\
         RandomizedDelaySec={delay}\nUnit=stackback.service\n\n[Install]\nWantedBy=timers.target\n",
        sched = s.schedule,
        delay = s.randomized_delay,
    );
    Ok((service, timer))
}

/// The `/etc/cron.d/stackback` file.
pub fn cron_file(s: &InstallSpec, log: &Path) -> std::result::Result<String, String> {
    let sched = s.schedule.trim();
    if sched.split_whitespace().count() == 6 {
        return Err(format!(
            "{sched:?} has a seconds field, which cron does not support"
        ));
    }
    crate::schedule::Schedule::parse(sched, chrono_tz::UTC)?;
    Ok(format!(
        "# Generated by `stackback install cron`. cron uses the system time zone.\nSHELL=/bin/sh\n\
         PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n\
         {sched} root cd {wd} && set -a && [ -r {env} ] && . {env}; set +a; exec {bin} run >> {log} 2>&1\n",
        wd = s.working_dir.display(),
        env = s.env_file.display(),
        bin = s.binary.display(),
        log = log.display(),
    ))
}

/// What kind of scheduled job to install.
#[derive(Debug, Clone)]
pub enum Kind {
    /// A service and a timer; per-user units with `user`.
    Systemd {
        user: bool,
        randomized_delay: String,
    },
    /// `/etc/cron.d/stackback`, its output appended to `log`.
    Cron { log: PathBuf },
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

/// The files to write and what to do next.
#[derive(Debug, Clone)]
pub struct Plan {
    pub files: Vec<FileOut>,
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
    schedule: &str,
    env: &std::collections::HashMap<String, String>,
    redact: bool,
) -> std::result::Result<Plan, String> {
    let user_mode = matches!(kind, Kind::Systemd { user: true, .. });
    let env_file = if user_mode {
        paths.home.join(".config/stackback/stackback.env")
    } else {
        PathBuf::from("/etc/stackback/stackback.env")
    };
    let spec = InstallSpec {
        binary: paths.binary.clone(),
        working_dir: paths.working_dir.clone(),
        backup_dir: paths.backup_dir.clone(),
        env_file: env_file.clone(),
        schedule: schedule.to_string(),
        user_mode,
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
                    file(dir.join("stackback.service"), service),
                    file(dir.join("stackback.timer"), timer),
                    env_out,
                ],
                next_steps: format!("{ctl} daemon-reload\n{ctl} enable --now stackback.timer\n{ctl} list-timers stackback.timer\n{ctl} start stackback.service   # a backup now\njournalctl {journal}-u stackback.service -f"),
            }
        }
        Kind::Cron { log } => Plan {
            files: vec![
                file(PathBuf::from("/etc/cron.d/stackback"), cron_file(&spec, log)?),
                env_out,
            ],
            next_steps: format!("cron picks up /etc/cron.d/stackback by itself (or: systemctl restart cron)\ntail -f {}", log.display()),
        },
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

/// Writes files under `root` (`/` normally), creating directories; refuses to overwrite an
/// existing env file, which holds the operator's settings.
pub fn write_files(root: &Path, files: &[FileOut]) -> Result<Vec<PathBuf>> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
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
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let tmp = path.with_file_name(format!(".{}.stackback-tmp", name.unwrap_or_default()));
        let _ = std::fs::remove_file(&tmp);
        // Created with its final mode: a file holding secrets is never readable by others, not
        // even between its creation and a chmod. The chmod then undoes what the umask took.
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
        std::fs::rename(&tmp, &path).map_err(|e| Error::io("cannot write", &path, e))?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cron_to_on_calendar() {
        let table = [
            ("0 2 * * *", "*-*-* 02:00:00"),
            ("30 1 * * *", "*-*-* 01:30:00"),
            ("0 */6 * * *", "*-*-* 0/6:00:00"),
            ("*/15 * * * *", "*-*-* *:0/15:00"),
            ("0 0 * * 0", "Sun *-*-* 00:00:00"),
            ("0 3 * * 1-5", "Mon..Fri *-*-* 03:00:00"),
            ("0 3 * * mon,wed", "Mon,Wed *-*-* 03:00:00"),
            ("0 4 1 * *", "*-*-1 04:00:00"),
            ("0 4 1,15 1-6 *", "*-1..6-1,15 04:00:00"),
            ("@daily", "daily"),
            ("@weekly", "Sun *-*-* 00:00:00"),
            ("*/5 * * * * *", "*-*-* *:*:0/5"),
        ];
        for (cron, want) in table {
            assert_eq!(on_calendar(cron).unwrap(), want, "{cron}");
        }
    }

    #[test]
    fn what_systemd_cannot_express_is_refused() {
        let e = on_calendar("0 2 1 * 1").unwrap_err();
        assert!(e.contains("EITHER"), "{e}");
        assert!(on_calendar("0 1-10/2 * * *").is_err());
        assert!(on_calendar("0 2 * *").is_err());
    }
}
