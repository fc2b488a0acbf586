//! Retention on a directory of real artifacts whose run times are fabricated through their names
//! and run records; `list` and `status` must agree with what is on disk after each step.

use std::path::Path;

use crate::support::*;
use chrono::{Duration, Utc};
use stackback::catalog::{RunId, RunRecord, RunState, Step};

/// Copies the real run in `dir` as a run that started at `when`, with `status`.
fn fabricate(dir: &Path, real: &RunRecord, when: chrono::DateTime<Utc>, status: RunState) -> RunId {
    let id = RunId::from_time(when);
    let mut rec = real.clone();
    rec.run_id = id.clone();
    rec.started_at = when;
    rec.finished_at = Some(when + Duration::seconds(5));
    rec.status = status;
    rec.prune = None;
    if status == RunState::Failed {
        rec.artifacts.clear();
        rec.failed_step = Some(Step::Database);
        rec.error = Some("pg_dump failed (exit code 1): connection refused".into());
    }
    if status == RunState::Running {
        rec.finished_at = None;
    }
    for a in &mut rec.artifacts {
        let new = a.file.replace(real.run_id.as_str(), id.as_str());
        std::fs::copy(dir.join(&a.file), dir.join(&new)).unwrap();
        a.file = new;
    }
    if status == RunState::Running {
        // A killed run: its artifact made it to its final name, the record never said so.
        rec.artifacts.clear();
    }
    std::fs::write(dir.join(id.record_file()), rec.to_json()).unwrap();
    id
}

#[test]
fn prune_keeps_the_window_and_the_last_good_backup_and_removes_leftovers() {
    let c = cluster();
    let db = c.seeded_db("prune");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let env = c.env(&db, dir);
    assert_eq!(stackback(&["run"], &env).code, 0);
    let real: RunRecord = serde_json::from_slice(
        &std::fs::read(
            dir.join(
                files(dir)
                    .into_iter()
                    .find(|f| f.starts_with("run_"))
                    .unwrap(),
            ),
        )
        .unwrap(),
    )
    .unwrap();
    let real_files: Vec<String> = real.artifacts.iter().map(|a| a.file.clone()).collect();

    // Two months ago, so the test holds whatever today's date.
    let base = (Utc::now() - Duration::days(60))
        .date_naive()
        .and_hms_opt(2, 0, 0)
        .unwrap()
        .and_utc();
    let mut good = Vec::new();
    for d in 0..15 {
        good.push(fabricate(
            dir,
            &real,
            base - Duration::days(d),
            RunState::Ok,
        ));
    }
    let failed = fabricate(dir, &real, base + Duration::hours(6), RunState::Failed);
    let old_failed = fabricate(dir, &real, base - Duration::days(30), RunState::Failed);
    let killed = fabricate(
        dir,
        &real,
        base - Duration::days(3) + Duration::hours(1),
        RunState::Running,
    );
    std::fs::write(
        dir.join(format!(".stackback-tmp.db_{db}_{killed}.sql.gz.abc123")),
        b"partial",
    )
    .unwrap();
    let old_tmp = dir.join(format!(".stackback-tmp.db_{db}_{killed}.sql.gz.abc123"));
    let ancient = std::time::SystemTime::now() - std::time::Duration::from_secs(3 * 86400);
    std::fs::File::options()
        .write(true)
        .open(&old_tmp)
        .unwrap()
        .set_modified(ancient)
        .unwrap();
    // A backup of the old shell script: same naming, no run record.
    let unmanaged = format!(
        "db_{db}_{}.sql.gz",
        RunId::from_time(base - Duration::days(60))
    );
    std::fs::copy(dir.join(&real.artifacts[0].file), dir.join(&unmanaged)).unwrap();
    // The real run is today's: move it out of the way so the fabricated calendar is what counts.
    for f in &real_files {
        std::fs::remove_file(dir.join(f)).unwrap();
    }
    std::fs::remove_file(dir.join(real.run_id.record_file())).unwrap();
    assert_list_matches_disk(dir, &env);

    // Dry run: every decision with its reason, nothing deleted.
    let before = files(dir);
    let r = stackback(&["prune", "--dry-run"], &env);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(files(dir), before, "a dry run deleted something");
    assert!(
        r.stdout.contains("outside the 7-day window"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("would delete 10 runs"), "{}", r.stdout);

    let r = stackback(&["prune"], &env);
    assert_eq!(r.code, 0, "{}", r.all());
    let l = list_json(&env);
    let ids: Vec<&str> = l["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["run_id"].as_str().unwrap())
        .collect();
    for (i, g) in good.iter().enumerate() {
        assert_eq!(ids.contains(&g.as_str()), i < 7, "good run {g} (day -{i})");
        let file = format!("db_{db}_{g}.sql.gz");
        assert_eq!(dir.join(&file).exists(), i < 7, "{file}");
    }
    assert!(
        ids.contains(&failed.as_str()),
        "the newest failed run's record stays (it tells what broke)"
    );
    assert!(!ids.contains(&old_failed.as_str()));
    assert!(
        !ids.contains(&killed.as_str()),
        "the interrupted run is gone"
    );
    assert!(
        !dir.join(format!("db_{db}_{killed}.sql.gz")).exists(),
        "the interrupted run's artifact is gone"
    );
    assert!(!old_tmp.exists(), "old temp files are gone");
    assert!(
        dir.join(&unmanaged).exists(),
        "unmanaged files are never deleted unless asked"
    );
    assert!(!files(dir)
        .iter()
        .any(|f| f.starts_with(".stackback-retired.")));
    assert_list_matches_disk(dir, &env);

    let r = stackback(&["verify", "--all"], &env);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("7 verified, 0 failed"), "{}", r.stdout);

    let r = stackback(&["prune", "--include-unmanaged"], &env);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(!dir.join(&unmanaged).exists());

    // status agrees with list.
    let r = stackback(&["status", "--json"], &env);
    assert_eq!(r.code, 0, "{}", r.all());
    let s: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(s["last_success"]["run_id"], good[0].as_str());
    assert_eq!(s["last_run"]["run_id"], failed.as_str());
    assert_eq!(s["good_backups"], 7);
    assert_eq!(s["stale"], true, "the newest good run is two months old");
    let r = stackback(&["status", "--check"], &env);
    assert_eq!(r.code, 1, "{}", r.all());
}

/// Good runs four and five days old, then only failures: a 2-day window counted from the newest
/// *good* run keeps both (one counted from today would not). The next good run then prunes them.
#[test]
fn failing_runs_never_prune_the_last_good_backups() {
    let c = cluster();
    let db = c.seeded_db("keepgood");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let env = with(c.env(&db, dir), &[("BACKUP_RETENTION_DAYS", "2")]);
    for days_ago in ["-5d", "-4d"] {
        let r = stackback(&["run"], &faked_clock(&env, days_ago));
        assert_eq!(r.code, 0, "{}", r.all());
    }
    let good: Vec<String> = artifacts(dir);
    assert_eq!(good.len(), 2);

    let broken = with(env.clone(), &[("POSTGRES_PASSWORD", "wrong")]);
    for _ in 0..3 {
        assert_eq!(stackback(&["run"], &broken).code, 1);
    }
    let r = stackback(&["prune"], &env);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(artifacts(dir), good, "the good backups must survive");
    let r = stackback(&["status"], &env);
    assert!(r.stdout.contains("failed"), "{}", r.stdout);
    let r = stackback(&["status", "--check"], &env);
    assert_eq!(r.code, 1, "the last good backup is 4 days old: {}", r.all());

    // After the next good run, the old good runs are outside the window counted from it: the
    // run's own prune removes them and keeps the backup just made.
    let r = stackback(&["run"], &env);
    assert_eq!(r.code, 0, "{}", r.all());
    let rec = records(dir)
        .into_iter()
        .rfind(|r| r["status"] == "ok")
        .unwrap();
    assert_eq!(
        rec["prune"]["deleted_runs"].as_array().unwrap().len(),
        2,
        "{rec}"
    );
    let left = artifacts(dir);
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(!good.contains(&left[0]), "{left:?}");
    let l = list_json(&env);
    assert_eq!(l["totals"]["database_backups"], 1, "{l}");
    assert_eq!(l["totals"]["failed"], 3, "failed runs of today stay: {l}");
    assert_list_matches_disk(dir, &env);
}

#[test]
fn list_shows_an_empty_directory_and_status_says_stale() {
    let tmp = tempfile::tempdir().unwrap();
    let env = vec![("BACKUP_DIR".to_string(), tmp.path().display().to_string())];
    let r = stackback(&["list"], &env);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("0 runs"), "{}", r.stdout);
    let r = stackback(&["status", "--check"], &env);
    assert_eq!(r.code, 1);
    assert!(r.stdout.contains("no good backup"), "{}", r.stdout);
}

/// Good runs on these days (12:00 UTC); with a 1-day window, KEEP_LAST=1, KEEP_DAILY=3,
/// KEEP_WEEKLY=3 and KEEP_MONTHLY=2 each rule keeps something no other rule does.
const DAYS: [&str; 7] = [
    "2026-09-01", // ISO week 36: nothing keeps it
    "2026-09-15", // week 38: newest of September (monthly)
    "2026-10-05", // week 41: an older run of its week
    "2026-10-07", // week 41: newest of its week (weekly)
    "2026-10-13", // week 42: the third newest day (daily)
    "2026-10-14", // week 42: daily and weekly
    "2026-10-20", // week 43: the window, KEEP_LAST, KEEP_MIN, every rule
];
const KEPT: [&str; 5] = [
    "2026-09-15",
    "2026-10-07",
    "2026-10-13",
    "2026-10-14",
    "2026-10-20",
];

/// `BACKUP_KEEP_*` end to end, set through the environment and through a TOML file: the same
/// runs survive `stackback prune`, each with the rule that kept it.
#[test]
fn keep_rules_from_the_environment_and_from_a_file() {
    let c = cluster();
    let db = c.empty_db("keep");
    let tmp = tempfile::tempdir().unwrap();
    let made = tmp.path().join("made");
    // A window long enough that nothing is pruned while the history is made.
    let setup = with(
        c.env(&db, &made),
        &[
            ("BACKUP_MIN_DB_BYTES", "0"),
            ("BACKUP_RETENTION_DAYS", "400"),
        ],
    );
    for day in DAYS {
        let r = stackback(&["run"], &faked_clock(&setup, &format!("@{day} 12:00:00")));
        assert_eq!(r.code, 0, "{day}: {}", r.all());
    }
    let id = |day: &str| format!("{}_120000", day.replace('-', ""));
    let toml = tmp.path().join("stackback.toml");
    std::fs::write(
        &toml,
        "[backup]\nretention_days = 1\nkeep_last = 1\nkeep_daily = 3\nkeep_weekly = 3\nkeep_monthly = 2\n",
    )
    .unwrap();
    let through_env = [
        ("BACKUP_RETENTION_DAYS", "1"),
        ("BACKUP_KEEP_LAST", "1"),
        ("BACKUP_KEEP_DAILY", "3"),
        ("BACKUP_KEEP_WEEKLY", "3"),
        ("BACKUP_KEEP_MONTHLY", "2"),
    ];
    for how in ["env", "file"] {
        let dir = tmp.path().join(how);
        std::fs::create_dir(&dir).unwrap();
        for f in files(&made) {
            if !f.starts_with('.') {
                std::fs::copy(made.join(&f), dir.join(&f)).unwrap();
            }
        }
        let base = with(c.env(&db, &dir), &[("BACKUP_MIN_DB_BYTES", "0")]);
        let (env, args): (_, Vec<&str>) = if how == "env" {
            (with(base, &through_env), vec![])
        } else {
            (base, vec!["--config", toml.to_str().unwrap()])
        };
        let r = stackback(
            &[&["prune", "--dry-run", "--json"], &args[..]].concat(),
            &env,
        );
        assert_eq!(r.code, 0, "{how}: {}", r.all());
        let plan: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        let reasons = |day: &str| -> String {
            plan["decisions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|d| d["run_id"] == id(day).as_str())
                .unwrap()["reasons"]
                .to_string()
        };
        // Each reason names the setting exactly as it is configured.
        for (day, rule) in [
            (
                "2026-10-13",
                "newest good run of its day (BACKUP_KEEP_DAILY)",
            ),
            (
                "2026-10-07",
                "newest good run of its ISO week (BACKUP_KEEP_WEEKLY)",
            ),
            (
                "2026-09-15",
                "newest good run of its month (BACKUP_KEEP_MONTHLY)",
            ),
        ] {
            assert!(reasons(day).contains(rule), "{how}: {day}: {plan}");
        }
        assert!(
            reasons("2026-10-20").contains("BACKUP_KEEP_LAST"),
            "{how}: {plan}"
        );

        let r = stackback(&[&["prune"], &args[..]].concat(), &env);
        assert_eq!(r.code, 0, "{how}: {}", r.all());
        let left: Vec<String> = records(&dir)
            .iter()
            .map(|r| r["run_id"].as_str().unwrap().to_string())
            .collect();
        let kept: Vec<String> = KEPT.iter().map(|d| id(d)).collect();
        assert_eq!(left, kept, "{how}");
        let arts: Vec<String> = KEPT
            .iter()
            .map(|d| format!("db_{db}_{}.sql.gz", id(d)))
            .collect();
        assert_eq!(artifacts(&dir), arts, "{how}");
    }
}
