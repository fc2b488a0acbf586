//! Deployment files and installers, checked with the tools operators use: hadolint,
//! systemd-analyze, and cron's own line format; plus completions, the man page, the seed's
//! backup-all.sh shim, and the manual's coverage of the seed document. The compose override and
//! the Prometheus rules in the seed's stack: [`crate::deploy_stack`].

use std::path::{Path, PathBuf};

use crate::support::*;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn dockerfile_has_no_hadolint_errors() {
    let df = repo().join("deploy/Dockerfile");
    // Every level, warnings included: what hadolint's defaults fail on.
    let hadolint = find_binary("hadolint");
    let (ok, out) = tool(hadolint.to_str().unwrap(), &[df.to_str().unwrap()]);
    assert!(ok, "hadolint: {out}");
    let text = std::fs::read_to_string(df).unwrap();
    for needle in [
        "HEALTHCHECK",
        "ENTRYPOINT [\"stackback\"]",
        "CMD [\"daemon\"]",
        "USER 10001",
        "backup-all.sh",
        "tzdata",
        "ca-certificates",
        "openssh-client",
        "XDG_STATE_HOME=/var/lib/stackback",
    ] {
        assert!(text.contains(needle), "Dockerfile lacks {needle}");
    }
    // Every PostgreSQL major version a server of the stack may run: pg_dump must be at least the
    // server's.
    for major in 13..=18 {
        assert!(
            text.contains(&format!("postgresql-client-{major}")),
            "Dockerfile lacks the PostgreSQL {major} client"
        );
    }
    // The image is built in a stackback checkout, never from a stack's directory.
    assert!(text.contains("docker build -t stackback:latest -f deploy/Dockerfile ."));
}

fn install(args: &[&str], env: &[(String, String)]) -> Run {
    let r = stackback(args, env);
    assert_eq!(r.code, 0, "{}", r.all());
    r
}

#[test]
fn generated_systemd_units_pass_systemd_analyze_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let env = vec![
        (
            "BACKUP_DIR".to_string(),
            tmp.path().join("backups").display().to_string(),
        ),
        ("BACKUP_SCHEDULE".to_string(), "30 3 * * 1-5".to_string()),
        (
            "POSTGRES_PASSWORD".to_string(),
            "pw-in-env-file".to_string(),
        ),
    ];
    let r = install(
        &["install", "systemd", "--root", root.to_str().unwrap()],
        &env,
    );
    assert!(
        r.stdout.contains("systemctl enable --now stackback.timer"),
        "{}",
        r.stdout
    );
    let dir = root.join("etc/systemd/system");
    let service = std::fs::read_to_string(dir.join("stackback.service")).unwrap();
    let timer = std::fs::read_to_string(dir.join("stackback.timer")).unwrap();
    assert!(
        timer.contains("OnCalendar=Mon..Fri *-*-* 03:30:00 UTC"),
        "{timer}"
    );
    assert!(timer.contains("Persistent=true") && timer.contains("RandomizedDelaySec=5m"));
    assert!(
        service.contains(&format!(
            "ExecStart={} run",
            std::fs::canonicalize(env!("CARGO_BIN_EXE_stackback"))
                .unwrap()
                .display()
        )),
        "{service}"
    );
    for h in [
        "Type=oneshot",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
        "EnvironmentFile=-/etc/stackback/stackback.env",
    ] {
        assert!(service.contains(h), "{h} missing:\n{service}");
    }
    // `-`: a missing directory does not stop the unit; the installer created it anyway, so the
    // first run of a fresh install finds it.
    assert!(
        service.contains(&format!(
            "ReadWritePaths=-{}",
            tmp.path().join("backups").display()
        )),
        "{service}"
    );
    let made = root.join(tmp.path().join("backups").strip_prefix("/").unwrap());
    assert!(
        made.is_dir(),
        "the installer did not create {}",
        made.display()
    );
    assert_eq!(mode(&made), 0o700);
    // The outer limit is above stackback's own: 6h + 60s + 60s margin by default.
    assert!(service.contains("TimeoutStartSec=21720"), "{service}");
    let (ok, out) = tool(
        "systemd-analyze",
        &[
            "verify",
            dir.join("stackback.service").to_str().unwrap(),
            dir.join("stackback.timer").to_str().unwrap(),
        ],
    );
    assert!(ok, "systemd-analyze verify: {out}");
    let (ok, out) = tool("systemd-analyze", &["calendar", "Mon..Fri *-*-* 03:30:00"]);
    assert!(ok, "{out}");
    // The environment file carries the settings, privately.
    let envf = root.join("etc/stackback/stackback.env");
    assert_eq!(mode(&envf), 0o600);
    assert!(std::fs::read_to_string(&envf)
        .unwrap()
        .contains("POSTGRES_PASSWORD=\"pw-in-env-file\""));
    // Dry run writes nothing; user mode targets the user's unit directory.
    let r = install(
        &[
            "install",
            "systemd",
            "--user",
            "--dry-run",
            "--root",
            tmp.path().join("dry").to_str().unwrap(),
        ],
        &env,
    );
    assert!(
        r.stdout.contains(".config/systemd/user/stackback.timer"),
        "{}",
        r.stdout
    );
    assert!(!tmp.path().join("dry").exists());
}

#[test]
fn schedules_systemd_cannot_express_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let env = vec![("BACKUP_SCHEDULE".to_string(), "0 2 1 * 1".to_string())];
    let r = stackback(
        &["install", "systemd", "--root", tmp.path().to_str().unwrap()],
        &env,
    );
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("EITHER"), "{}", r.stderr);
    assert!(files(tmp.path()).is_empty());
}

#[test]
fn the_cron_file_parses_back() {
    let tmp = tempfile::tempdir().unwrap();
    let env = vec![("BACKUP_SCHEDULE".to_string(), "15 */6 * * *".to_string())];
    install(
        &["install", "cron", "--root", tmp.path().to_str().unwrap()],
        &env,
    );
    let text = std::fs::read_to_string(tmp.path().join("etc/cron.d/stackback")).unwrap();
    let job: Vec<&str> = text.lines().filter(|l| l.contains(" root ")).collect();
    assert_eq!(job.len(), 1, "{text}");
    let fields: Vec<&str> = job[0].splitn(7, ' ').collect();
    assert_eq!(&fields[..5], ["15", "*/6", "*", "*", "*"], "{text}");
    assert_eq!(fields[5], "root");
    let cmd = fields[6];
    assert!(
        cmd.contains(&format!(
            "{} run",
            std::fs::canonicalize(env!("CARGO_BIN_EXE_stackback"))
                .unwrap()
                .display()
        )),
        "{cmd}"
    );
    assert!(cmd.ends_with(">> /var/log/stackback.log 2>&1"), "{cmd}");
    // The job's shell command is valid sh.
    let (ok, out) = tool("sh", &["-n", "-c", cmd]);
    assert!(ok, "{out}");
}

/// The generic files in deploy/systemd and deploy/cron (for those who install by hand) pass the
/// same tools as the generated ones and carry the same limits: an outer time limit above
/// stackback's own, a backup directory that exists on the first run, the time zone in OnCalendar.
#[test]
fn the_generic_units_and_cron_file_pass_their_tools() {
    let tmp = tempfile::tempdir().unwrap();
    let bin = std::fs::canonicalize(env!("CARGO_BIN_EXE_stackback")).unwrap();
    let service = std::fs::read_to_string(repo().join("deploy/systemd/stackback.service")).unwrap();
    let timer = std::fs::read_to_string(repo().join("deploy/systemd/stackback.timer")).unwrap();
    for needle in [
        "TimeoutStartSec=6h5min",
        "StateDirectory=stackback",
        "ReadWritePaths=-/var/lib/stackback",
    ] {
        assert!(service.contains(needle), "{needle}:\n{service}");
    }
    assert!(timer.contains("OnCalendar=*-*-* 02:00:00 UTC"), "{timer}");
    // systemd-analyze wants an ExecStart= that exists.
    std::fs::write(
        tmp.path().join("stackback.service"),
        service.replace("/usr/local/bin/stackback", bin.to_str().unwrap()),
    )
    .unwrap();
    std::fs::write(tmp.path().join("stackback.timer"), &timer).unwrap();
    let (ok, out) = tool(
        "systemd-analyze",
        &[
            "verify",
            tmp.path().join("stackback.service").to_str().unwrap(),
            tmp.path().join("stackback.timer").to_str().unwrap(),
        ],
    );
    assert!(ok, "systemd-analyze verify: {out}");
    let (ok, out) = tool("systemd-analyze", &["calendar", "*-*-* 02:00:00 UTC"]);
    assert!(ok, "{out}");

    let cron = std::fs::read_to_string(repo().join("deploy/cron/stackback")).unwrap();
    let job: Vec<&str> = cron.lines().filter(|l| l.contains(" root ")).collect();
    assert_eq!(job.len(), 1, "{cron}");
    let fields: Vec<&str> = job[0].splitn(7, ' ').collect();
    assert_eq!(&fields[..6], ["0", "2", "*", "*", "*", "root"], "{cron}");
    assert!(
        fields[6].contains("timeout -k 60s 6h5m /usr/local/bin/stackback run"),
        "{cron}"
    );
    let (ok, out) = tool("sh", &["-n", "-c", fields[6]]);
    assert!(ok, "{out}");
}

/// Completions are valid bash that registers `stackback`; the man page renders with man(1) and
/// names every command.
#[test]
fn completions_and_man_page() {
    let tmp = tempfile::tempdir().unwrap();
    let r = stackback(&["completions", "bash"], &[]);
    assert_eq!(r.code, 0, "{}", r.all());
    let script = tmp.path().join("stackback.bash");
    std::fs::write(&script, &r.stdout).unwrap();
    let (ok, out) = tool("bash", &["-n", script.to_str().unwrap()]);
    assert!(ok, "bash -n: {out}");
    let registered = sh(&format!(
        "source {} && complete -p stackback",
        shell_quote(&script)
    ));
    assert!(registered.contains("_stackback"), "{registered}");

    let r = stackback(&["man"], &[]);
    assert_eq!(r.code, 0, "{}", r.all());
    let page = tmp.path().join("stackback.1");
    std::fs::write(&page, &r.stdout).unwrap();
    let text = sh(&format!(
        "MANWIDTH=100 man -l {} 2>&1 | col -b",
        shell_quote(&page)
    ));
    assert!(
        text.contains("NAME") && text.contains("stackback - "),
        "{text}"
    );
    for cmd in [
        "run",
        "verify",
        "config",
        "daemon",
        "alert",
        "install",
        "completions",
        "man",
        "restore",
        "list",
        "status",
        "prune",
    ] {
        assert!(
            text.lines()
                .any(|l| l.trim_start().starts_with(&format!("stackback-{cmd}("))
                    || l.trim_start().starts_with(cmd)),
            "the man page does not list {cmd}:\n{text}"
        );
    }
}

#[test]
fn json_logs_on_request() {
    let closed = ClosedPort::new();
    let tmp = tempfile::tempdir().unwrap();
    let env = vec![
        ("BACKUP_DIR".to_string(), tmp.path().display().to_string()),
        ("LOG_FORMAT".to_string(), "json".to_string()),
        ("POSTGRES_PORT".to_string(), closed.port.to_string()),
        ("POSTGRES_HOST".to_string(), "127.0.0.1".to_string()),
    ];
    let r = stackback(&["run"], &env);
    assert_eq!(r.code, 1);
    let first = r
        .stderr
        .lines()
        .find(|l| l.starts_with('{'))
        .expect("a JSON log line");
    let v: serde_json::Value = serde_json::from_str(first).unwrap();
    assert!(v["level"].is_string() && v["fields"].is_object(), "{first}");
}

#[test]
fn the_seeds_backup_all_sh_still_works() {
    let c = cluster();
    let db = c.seeded_db("shim");
    let tmp = tempfile::tempdir().unwrap();
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_stackback"))
        .parent()
        .unwrap()
        .to_path_buf();
    let mut env = c.env(&db, tmp.path());
    env.push((
        "PATH".into(),
        format!("{}:/usr/bin:/bin", bin_dir.display()),
    ));
    let out = std::process::Command::new(repo().join("deploy/backup-all.sh"))
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(only_record(tmp.path())["status"], "ok");
    // What the shim wrote is the seed's backup: gunzip and psql restore it to the same data.
    let art = tmp.path().join(&artifacts(tmp.path())[0]);
    assert!(art.to_str().unwrap().ends_with(".sql.gz"), "{art:?}");
    let (ok, out) = tool("gunzip", &["-t", art.to_str().unwrap()]);
    assert!(ok, "gunzip -t: {out}");
    let target = c.empty_db("shim_restored");
    let out = c.restore_with_shell(&art, &target, "gunzip -c");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    c.assert_same_data(&db, &target);
}

/// Every heading of the seed document (../shared/seed/BACKUP.md) has a section in the manual.
const SEED_HEADINGS: &[&str] = &[
    "Overview",
    "Features",
    "Backup Components",
    "Backup Script",
    "Backup Files",
    "Deployment Options",
    "Option 1: Docker Compose",
    "Option 2: Systemd Timer",
    "Option 3: Cron",
    "Alert Configuration",
    "Webhook Alerts",
    "Email Alerts",
    "Backup Verification",
    "Restore Procedures",
    "Restore Database",
    "Restore MinIO Volumes",
    "Monitoring",
    "Check Backup Status",
    "Grafana Dashboard",
    "Troubleshooting",
    "Backup Script Fails",
    "Cron Not Running",
    "Alerts Not Sending",
    "Best Practices",
    "Security Considerations",
    "Related Documents",
];

#[test]
fn the_manual_covers_every_heading_of_the_seed() {
    let manual = std::fs::read_to_string(repo().join("docs/manual.md")).unwrap();
    let headings: Vec<String> = manual
        .lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| l.trim_start_matches('#').trim().to_string())
        .collect();
    for h in SEED_HEADINGS {
        assert!(
            headings.iter().any(|m| m.starts_with(h)),
            "the manual has no section for the seed's {h:?}"
        );
    }
    // The seed document is beside every checkout (CI's too): check against it directly.
    let seed_path = repo().join("../shared/seed/BACKUP.md");
    let seed = std::fs::read_to_string(&seed_path)
        .unwrap_or_else(|e| panic!("the seed document {}: {e}", seed_path.display()));
    {
        for l in seed
            .lines()
            .filter(|l| l.starts_with("## ") || l.starts_with("### "))
        {
            // "### 1. Backup Script (`scripts/backup-all.sh`)" → "Backup Script"
            let h = l.trim_start_matches('#').trim();
            let h = h
                .split_once(". ")
                .filter(|(n, _)| n.chars().all(|c| c.is_ascii_digit()))
                .map_or(h, |(_, rest)| rest);
            let h = h.split(" (").next().unwrap();
            assert!(
                SEED_HEADINGS.contains(&h),
                "seed heading {h:?} missing from SEED_HEADINGS"
            );
        }
    }
}
