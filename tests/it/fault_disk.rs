//! Faults of the backup directory's file system (issue 13, deliver 2): full while the dump is
//! written, read-only, unwritable (immutable for root, or owned by root for an unprivileged user).
//! Each run fails with exit 1 and the OS's reason, is alerted and pings `/fail`, leaves no temp
//! file and no new backup, keeps the earlier backup byte for byte, and the next run succeeds once
//! the file system is fixed. tmpfs mounts and chattr need root, as the suite does.

use std::os::unix::process::CommandExt;
use std::path::Path;

use crate::support::fault::*;
use crate::support::*;

fn no_temp_files(dir: &Path) {
    assert!(
        !files(dir).iter().any(|f| f.starts_with(".stackback-tmp.")),
        "temp files left behind: {:?}",
        files(dir)
    );
}

/// The run after the fault: ok, verified, the earlier backup untouched.
fn next_run_succeeds(dir: &Path, env: &[(String, String)], base: &Baseline) {
    let r = stackback(&["run"], env);
    assert_eq!(r.code, 0, "the run after the fault: {}", r.all());
    let r = stackback(&["verify", "latest"], env);
    assert_eq!(r.code, 0, "{}", r.all());
    base.assert_untouched(dir, env);
}

fn remount(path: &Path, options: &str) {
    sh(&format!("mount -o remount,{options} {}", shell_quote(path)));
}

#[test]
fn a_disk_that_fills_up_during_the_dump_fails_the_run_and_keeps_the_earlier_backup() {
    let c = cluster();
    let db = big_db("full");
    let tmp = tempfile::tempdir().unwrap();
    let mnt = Mount::tmpfs(&tmp.path().join("small"), "size=300m");
    let dir = mnt.path.clone();
    let alerts = Alerts::start();
    let env = alerts.env(&c.env(&db, &dir));
    good_run_before(&env, 30);
    let used: u64 = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.metadata().unwrap().len())
        .sum();
    // Room for the earlier backup and half of another: the disk fills in the middle of the dump.
    remount(&dir, &format!("size={}", used + used / 2));
    let base = Baseline::take(&dir);
    let r = stackback(&["run"], &env);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("No space left on device"), "{}", r.all());
    assert!(
        r.stderr.contains("hint:") && r.stderr.contains("full"),
        "{}",
        r.all()
    );
    let text = alerts.failure(1, &["No space left on device"]);
    assert!(text.contains("database"), "{text}");
    alerts.assert_fail_ping();
    no_temp_files(&dir);
    let rec = records(&dir)
        .into_iter()
        .max_by_key(|r| r["sequence"].as_u64())
        .unwrap();
    assert_eq!(rec["status"], "failed", "{rec}");
    assert_eq!(rec["failed_step"], "database", "{rec}");
    base.assert_nothing_good_added(&dir, &env, 0);
    base.assert_untouched(&dir, &env);

    remount(&dir, "size=300m");
    next_run_succeeds(&dir, &env, &base);
}

#[test]
fn a_read_only_backup_directory_fails_alerts_and_recovers() {
    let c = cluster();
    let db = c.seeded_db("rofs");
    let tmp = tempfile::tempdir().unwrap();
    let mnt = Mount::tmpfs(&tmp.path().join("ro"), "size=16m");
    let dir = mnt.path.clone();
    let alerts = Alerts::start();
    let env = alerts.env(&c.env(&db, &dir));
    good_run_before(&env, 30);
    let base = Baseline::take(&dir);
    remount(&dir, "ro");
    let r = stackback(&["run"], &env);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("Read-only file system"), "{}", r.all());
    assert!(r.stderr.contains("hint:"), "{}", r.all());
    alerts.failure(1, &["Read-only file system"]);
    alerts.assert_fail_ping();
    // Reading needs no writing: the earlier backup still verifies on the read-only mount.
    base.assert_untouched(&dir, &env);
    remount(&dir, "rw");
    base.assert_nothing_good_added(&dir, &env, 0);
    next_run_succeeds(&dir, &env, &base);
}

/// chattr +i: not even root may create a file in the directory.
#[test]
fn an_immutable_backup_directory_fails_alerts_and_recovers() {
    let c = cluster();
    let db = c.seeded_db("immutable");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("backups");
    let alerts = Alerts::start();
    let env = alerts.env(&c.env(&db, &dir));
    good_run_before(&env, 30);
    let base = Baseline::take(&dir);
    let q = shell_quote(&dir);
    sh(&format!("chattr +i {q}"));
    let r = stackback(&["run"], &env);
    sh(&format!("chattr -i {q}"));
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("Operation not permitted"), "{}", r.all());
    assert!(r.stderr.contains("hint:"), "{}", r.all());
    alerts.failure(1, &["Operation not permitted"]);
    alerts.assert_fail_ping();
    base.assert_nothing_good_added(&dir, &env, 0);
    base.assert_untouched(&dir, &env);
    next_run_succeeds(&dir, &env, &base);
}

/// stackback as an unprivileged user (`nobody`) whose backup directory lost its write bit.
#[test]
fn a_directory_the_user_may_not_write_fails_alerts_and_recovers() {
    let c = cluster();
    let db = c.seeded_db("unwritable");
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let dir = tmp.path().join("backups");
    std::fs::create_dir(&dir).unwrap();
    let home = tmp.path().join("home");
    std::fs::create_dir(&home).unwrap();
    sh(&format!(
        "chown nobody {} {}",
        shell_quote(&dir),
        shell_quote(&home)
    ));
    let alerts = Alerts::start();
    let env = alerts.env(&with(c.env(&db, &dir), &[("HOME", home.to_str().unwrap())]));
    let as_nobody = |args: &[&str]| -> Run {
        let out = stackback_cmd(args, &env)
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap();
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    };
    let r = as_nobody(&["run"]);
    assert_eq!(r.code, 0, "a good run as nobody: {}", r.all());
    let base = Baseline::take(&dir);
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o500)).unwrap();
    let r = as_nobody(&["run"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("Permission denied"), "{}", r.all());
    assert!(r.stderr.contains("hint:"), "{}", r.all());
    alerts.failure(1, &["Permission denied"]);
    alerts.assert_fail_ping();
    let v = as_nobody(&["verify", "--all"]);
    assert_eq!(v.code, 0, "{}", v.all());
    assert!(v.stdout.contains("1 verified, 0 failed"), "{}", v.stdout);
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    base.assert_untouched(&dir, &env);
    base.assert_nothing_good_added(&dir, &env, 0);
    let r = as_nobody(&["run"]);
    assert_eq!(r.code, 0, "the run after the fault: {}", r.all());
    base.assert_untouched(&dir, &env);
}
