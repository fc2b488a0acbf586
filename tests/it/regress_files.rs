//! Regression tests for what stackback deletes or creates on disk (issue 13), each named after
//! what broke.

use std::path::Path;

use crate::support::*;

/// A backup directory with one good run dated `days_ago`, then (by the caller) newer runs.
fn old_run(env: &[(String, String)], days_ago: u32) -> String {
    let r = stackback(&["run"], &faked_clock(env, &format!("-{days_ago}d")));
    assert_eq!(r.code, 0, "{}", r.all());
    r.stdout
        .split_whitespace()
        .nth(1)
        .unwrap()
        .trim_end_matches(':')
        .to_string()
}

#[test]
fn a_record_naming_a_path_never_makes_prune_delete_outside_the_directory() {
    let c = cluster();
    let db = c.seeded_db("paths");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("backups");
    let outside = tmp.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let victims = [outside.join("victim.sql.gz"), outside.join("other.sql.gz")];
    for v in &victims {
        std::fs::write(v, "precious").unwrap();
    }
    let env = with(c.env(&db, &dir), &[("BACKUP_RETENTION_DAYS", "3")]);
    // Two old runs whose records name paths (one relative, one absolute), resealed by a forger.
    let names = [
        "../outside/victim.sql.gz".to_string(),
        victims[1].display().to_string(),
    ];
    for (days, name) in [(20, &names[0]), (19, &names[1])] {
        let id = old_run(&env, days);
        forge_record(
            &dir.join(format!("run_{id}.json")),
            &[("artifacts.0.file", serde_json::Value::String(name.clone()))],
        );
    }
    // A retired record (an interrupted prune's) naming a path outside.
    let retired = dir.join(".stackback-retired.run_20200101_000000.json");
    let first = files(&dir)
        .into_iter()
        .find(|f| f.starts_with("run_"))
        .unwrap();
    let rec = std::fs::read_to_string(dir.join(first)).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&rec).unwrap();
    v["run_id"] = "20200101_000000".into();
    v["artifacts"][0]["file"] = victims[0].display().to_string().into();
    std::fs::write(&retired, serde_json::to_vec(&v).unwrap()).unwrap();

    let r = stackback(&["run"], &env);
    assert_eq!(r.code, 0, "{}", r.all());
    let r = stackback(&["prune", "--include-unmanaged"], &env);
    assert!(matches!(r.code, 0 | 1), "{}", r.all());
    for v in &victims {
        assert_eq!(
            std::fs::read_to_string(v).ok().as_deref(),
            Some("precious"),
            "{} was deleted",
            v.display()
        );
    }
    let l = stackback(&["list"], &env);
    assert_eq!(l.code, 0, "{}", l.all());
}

#[test]
fn include_unmanaged_never_deletes_the_files_of_an_unreadable_record() {
    let c = cluster();
    let db = c.seeded_db("unread");
    let tmp = tempfile::tempdir().unwrap();
    let env = with(c.env(&db, tmp.path()), &[("BACKUP_RETENTION_DAYS", "3")]);
    let id = old_run(&env, 20);
    let record = tmp.path().join(format!("run_{id}.json"));
    std::fs::write(&record, "{ this is not json").unwrap();
    let r = stackback(&["run"], &env);
    assert_eq!(r.code, 0, "{}", r.all());
    let r = stackback(&["prune", "--include-unmanaged", "--json"], &env);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains(&format!("run_{id}.json kept")),
        "{}",
        r.stdout
    );
    let arts = artifacts(tmp.path());
    assert!(
        arts.iter().any(|a| a.contains(&id)),
        "the files of the run whose record is unreadable were deleted: {arts:?}"
    );
}

/// The `openat` calls of `args` that create files (strace's own rendering).
fn creations(args: &[&str], env: &[(String, String)], log: &Path) -> Vec<String> {
    let strace = find_binary("strace");
    let bin = env!("CARGO_BIN_EXE_stackback");
    let mut cmd = stackback_cmd(args, env);
    let program_args: Vec<String> = cmd.get_args().map(|a| a.to_string_lossy().into()).collect();
    cmd = std::process::Command::new(strace);
    cmd.args(["-f", "-e", "trace=openat", "-o"])
        .arg(log)
        .arg(bin)
        .args(&program_args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .filter(|l| l.contains("O_CREAT"))
        .map(String::from)
        .collect()
}

#[test]
fn install_never_shows_secrets_and_writes_the_env_file_private_from_the_start() {
    let tmp = tempfile::tempdir().unwrap();
    let env = vec![
        ("POSTGRES_PASSWORD".to_string(), "pw-dry-run-9".to_string()),
        (
            "BACKUP_ALERT_WEBHOOK_URL".to_string(),
            "https://hooks.example.com/T/B/tok-dry-9".to_string(),
        ),
        (
            "BACKUP_DIR".to_string(),
            tmp.path().join("b").display().to_string(),
        ),
    ];
    for kind in ["systemd", "cron"] {
        let r = stackback(&["install", kind, "--dry-run"], &env);
        assert_eq!(r.code, 0, "{}", r.all());
        assert!(
            !r.stdout.contains("pw-dry-run-9") && !r.stdout.contains("tok-dry-9"),
            "{kind} --dry-run printed a secret: {}",
            r.stdout
        );
    }
    let root = tmp.path().join("root");
    let opened = creations(
        &["install", "cron", "--root", root.to_str().unwrap()],
        &env,
        &tmp.path().join("strace.log"),
    );
    // The env file (or its temp file) is created in etc/stackback/, and never readable by others.
    let env_file: Vec<&String> = opened
        .iter()
        .filter(|l| l.contains("etc/stackback/"))
        .collect();
    assert!(!env_file.is_empty(), "{opened:?}");
    for l in env_file {
        assert!(l.contains(", 0600)"), "created with another mode: {l}");
    }
    let written = std::fs::read_to_string(root.join("etc/stackback/stackback.env")).unwrap();
    assert!(
        written.contains("pw-dry-run-9"),
        "the real file keeps the secret: {written}"
    );
    assert_eq!(mode(&root.join("etc/stackback/stackback.env")), 0o600);
}

/// A run killed after its dump was renamed into place (during the bucket step, say) leaves a
/// finished file its record does not name. It belongs to that run: listed among the leftovers,
/// never as an old script's backup that `prune --include-unmanaged` would delete on its own.
#[test]
fn a_killed_runs_finished_file_is_its_leftover_not_an_unmanaged_backup() {
    let c = cluster();
    let db = c.seeded_db("leftover");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("backups");
    let env = with(c.env(&db, &dir), &[("BACKUP_RETENTION_DAYS", "30")]);
    let killed = old_run(&env, 2);
    let rec = dir.join(format!("run_{killed}.json"));
    let file = records(&dir)
        .into_iter()
        .find(|r| r["run_id"] == killed.as_str())
        .unwrap()["artifacts"][0]["file"]
        .as_str()
        .unwrap()
        .to_string();
    // What the record of a run killed before it wrote its artifacts looks like.
    forge_record(
        &rec,
        &[
            ("status", serde_json::json!("running")),
            ("artifacts", serde_json::json!([])),
            ("finished_at", serde_json::Value::Null),
        ],
    );
    let listing = list_json(&env);
    let names = |k: &str| -> Vec<String> {
        listing[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["file"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(!names("unmanaged").contains(&file), "{listing:#}");
    assert!(names("temp_files").contains(&file), "{listing:#}");

    let r = stackback(&["prune", "--include-unmanaged", "--json"], &env);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(
        rec.exists(),
        dir.join(&file).exists(),
        "the file and its run's record must go together: {}",
        r.stdout
    );
}
