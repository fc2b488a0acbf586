//! systemd units: `<name>.service` (one `stackback run`, hardened, bounded by an outer time limit
//! above stackback's own) and `<name>.timer` (`OnCalendar=` from `BACKUP_SCHEDULE`, in `TZ`).
//!
//! The cron → `OnCalendar=` translation refuses what systemd cannot express (cron's "day of month
//! OR day of week" when both are restricted) instead of guessing.

use super::InstallSpec;

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
        // Full forms, not systemd's `daily`...: a time zone can follow them.
        "@hourly" => return Ok("*-*-* *:00:00".into()),
        "@daily" | "@midnight" => return Ok("*-*-* 00:00:00".into()),
        "@weekly" => return Ok("Sun *-*-* 00:00:00".into()),
        "@monthly" => return Ok("*-*-01 00:00:00".into()),
        "@yearly" | "@annually" => return Ok("*-01-01 00:00:00".into()),
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

/// The unit's outer time limit: stackback's own (`BACKUP_TIMEOUT`, then `BACKUP_STOP_GRACE` for a
/// clean abort and its alert) comes first; systemd kills only a stackback that hung past both.
fn outer_limit(s: &InstallSpec) -> u64 {
    (s.timeout + s.stop_grace).as_secs() + 60
}

/// `<name>.service` and `<name>.timer`.
pub fn systemd_units(s: &InstallSpec) -> std::result::Result<(String, String), String> {
    let cal = on_calendar(&s.schedule)?;
    let hardening = if s.user_mode {
        "NoNewPrivileges=yes\n".to_string()
    } else {
        // `-`: a backup directory that does not exist yet does not keep the unit from starting
        // (the installer creates it; stackback would too).
        format!(
            "NoNewPrivileges=yes\nProtectSystem=strict\nProtectHome=read-only\nReadWritePaths=-{}\nPrivateTmp=yes\n\
             PrivateDevices=yes\nProtectKernelTunables=yes\nProtectKernelModules=yes\nProtectControlGroups=yes\n\
             RestrictSUIDSGID=yes\nLockPersonality=yes\nUMask=0077\n",
            s.backup_dir.display()
        )
    };
    let service = format!(
        "# Generated by `stackback install systemd`.\n[Unit]\nDescription=stackback backup run (PostgreSQL and buckets)\n\
         Wants=network-online.target\nAfter=network-online.target\n\n\
         [Service]\nType=oneshot\nEnvironmentFile=-{env}\nWorkingDirectory={wd}\nExecStart={bin} run\n\
         # Above BACKUP_TIMEOUT + BACKUP_STOP_GRACE: stackback's own abort and alert come first.\n\
         TimeoutStartSec={limit}\n{hardening}",
        env = s.env_file.display(),
        wd = s.working_dir.display(),
        bin = s.binary.display(),
        limit = outer_limit(s),
    );
    let timer = format!(
        "# Generated by `stackback install systemd` from BACKUP_SCHEDULE={sched:?} in TZ={tz}.\n[Unit]\n\
         Description=stackback backups on schedule ({sched}, {tz})\n\n[Timer]\nOnCalendar={cal} {tz}\nPersistent=true\n\
         RandomizedDelaySec={delay}\nUnit={name}.service\n\n[Install]\nWantedBy=timers.target\n",
        sched = s.schedule,
        tz = s.timezone,
        delay = s.randomized_delay,
        name = s.name,
    );
    Ok((service, timer))
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
            ("@daily", "*-*-* 00:00:00"),
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
