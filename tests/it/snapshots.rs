//! Golden snapshots of what stackback prints and writes: `--help` of every command, `config`,
//! `list`/`status` (JSON and text), `verify`, `run`'s report and a run record. They pin today's
//! behaviour so a restructuring of src/ can prove it changed nothing a user or script sees.
//!
//! Volatile parts (run ids, times, durations, sizes, checksums, temp paths, ports, database and
//! bucket names, the host name, free space, versions of the machine's PostgreSQL) are replaced by
//! placeholders; every key, every line and the structure stay. Review a change with
//! `cargo insta review` (or read the `.snap.new` file beside the snapshot).

use std::path::Path;

use crate::support::s3::{bucket_name, moto};
use crate::support::*;

/// Every command and subcommand path, as `stackback --help` lists them (checked below, so a new
/// command cannot go unpinned). `help` itself is clap's and prints the same pages.
const COMMANDS: &[&[&str]] = &[
    &[],
    &["run"],
    &["verify"],
    &["config"],
    &["daemon"],
    &["alert"],
    &["alert", "test"],
    &["install"],
    &["install", "systemd"],
    &["install", "compose"],
    &["install", "cron"],
    &["completions"],
    &["man"],
    &["restore"],
    &["restore", "db"],
    &["restore", "run"],
    &["restore", "objects"],
    &["restore", "volume"],
    &["list"],
    &["status"],
    &["prune"],
    &["anomaly"],
    &["anomaly", "ack"],
];

/// Placeholders for what differs between machines and runs. Literal values (paths, names) are
/// replaced first, longest first, so a path that contains a name becomes one placeholder.
fn normalize(text: &str, literals: &[(String, &str)]) -> String {
    let mut lits: Vec<&(String, &str)> = literals.iter().filter(|(k, _)| !k.is_empty()).collect();
    lits.sort_by_key(|(k, _)| std::cmp::Reverse(k.len()));
    let mut out = text.to_string();
    for (from, to) in lits {
        out = out.replace(from.as_str(), to);
    }
    out
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string()
}

/// Filters for the outputs of runs: what differs between machines and runs becomes a placeholder.
/// Help pages and `config` get none of these (their numbers and durations are the behaviour).
fn settings(volatile: bool) -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path("golden");
    s.set_prepend_module_to_snapshot(false);
    if !volatile {
        return s;
    }
    for (re, to) in [
        // The next scheduled run, in the schedule's zone, with the time left.
        (
            r"\d{4}-\d{2}-\d{2} \d{2}:\d{2} [A-Z]+ \(in [^)]*\)",
            "[NEXT_RUN]",
        ),
        // RFC 3339 times (records, JSON) and the text renderings' "YYYY-MM-DD HH:MM:SS".
        (
            r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})?",
            "[TIME]",
        ),
        (r"\b[0-9a-f]{64}\b", "[SHA256]"),
        (
            r#""(stored_bytes|plain_bytes|bytes|duration_ms|duration_seconds|free_bytes|total_bytes|bytes_on_disk|last_success_age_seconds)": [0-9.eE+-]+"#,
            r#""$1": [N]"#,
        ),
        (
            r#""(pg_dump_version|server_version)": "[^"]*""#,
            r#""$1": "[VERSION]""#,
        ),
        (r"\b\d+(\.\d+)? ?(B|KiB|MiB|GiB|TiB|bytes)\b", "[SIZE]"),
        (r"\b\d+(\.\d+)? ?(ms|s)\b", "[DURATION]"),
        // Text tables pad columns to the longest (machine-dependent) name: keep one gap width.
        (r"(\S) {2,}", "$1  "),
    ] {
        s.add_filter(re, to);
    }
    s
}

fn snapshot(name: &str, text: &str) {
    settings(false).bind(|| insta::assert_snapshot!(name, text));
}

fn snapshot_volatile(name: &str, text: &str) {
    settings(true).bind(|| insta::assert_snapshot!(name, text));
}

/// The `Commands:` section of a help page: the first word of each entry.
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| *l != "Commands:")
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .filter(|c| c != "help")
        .collect()
}

#[test]
fn help_of_every_command() {
    let mut found: Vec<Vec<String>> = vec![vec![]];
    let mut i = 0;
    while i < found.len() {
        let path = found[i].clone();
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let r = stackback(&args, &[]);
        assert_eq!(r.code, 0, "{args:?}: {}", r.all());
        assert_eq!(r.stderr, "", "{args:?}");
        let name = if path.is_empty() {
            "help".to_string()
        } else {
            format!("help_{}", path.join("_"))
        };
        snapshot(&name, &r.stdout);
        for c in subcommands(&r.stdout) {
            let mut p = path.clone();
            p.push(c);
            found.push(p);
        }
        i += 1;
    }
    found.sort();
    let mut expected: Vec<Vec<String>> = COMMANDS
        .iter()
        .map(|p| p.iter().map(|s| s.to_string()).collect())
        .collect();
    expected.sort();
    assert_eq!(
        found, expected,
        "the command tree changed: pin the new pages"
    );
}

#[test]
fn config_with_every_kind_of_source() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("stackback.toml");
    std::fs::write(
        &file,
        "[postgres]\nhost = \"db.internal\"\nuser = \"schedgen\"\npassword_file = \"SECRET\"\n\n\
         [backup]\nretention_days = 14\ncompression = \"zstd\"\nkeep_daily = 3\n\n\
         [alert]\nwebhook_url = \"https://hooks.example.com/services/T0/B0/hook-token\"\n"
            .replace("SECRET", &tmp.path().join("pg_pw").display().to_string()),
    )
    .unwrap();
    std::fs::write(tmp.path().join("pg_pw"), "file-secret\n").unwrap();
    let env = vec![
        ("POSTGRES_PORT".to_string(), "6543".to_string()),
        ("POSTGRES_DB".to_string(), "schedgen".to_string()),
        (
            "MINIO_ENDPOINT".to_string(),
            "http://minio:9000".to_string(),
        ),
        ("MINIO_ROOT_USER".to_string(), "minio-admin".to_string()),
        (
            "MINIO_ROOT_PASSWORD".to_string(),
            "minio-secret".to_string(),
        ),
        ("MINIO_BUCKET".to_string(), "pdfs,images".to_string()),
        (
            "BACKUP_ALERT_EMAIL".to_string(),
            "ops@example.com".to_string(),
        ),
        ("SMTP_HOST".to_string(), "smtp.example.com".to_string()),
        ("SMTP_PASSWORD".to_string(), "smtp-secret".to_string()),
        ("TZ".to_string(), "Europe/Berlin".to_string()),
    ];
    let r = stackback(
        &[
            "config",
            "--config",
            file.to_str().unwrap(),
            "--backup-dir",
            "/srv/backups",
        ],
        &env,
    );
    assert_eq!(r.code, 0, "{}", r.all());
    for secret in ["file-secret", "minio-secret", "smtp-secret", "hook-token"] {
        assert!(!r.all().contains(secret), "{secret} printed: {}", r.stdout);
    }
    let host = host_name();
    let lits = [
        (tmp.path().display().to_string(), "[TMP]"),
        (format!("@{host}"), "@[HOST]"),
    ];
    snapshot("config", &normalize(&r.stdout, &lits));

    // Nothing configured: every default and its source.
    let r = stackback(&["config"], &[]);
    assert_eq!(r.code, 0, "{}", r.all());
    snapshot("config_defaults", &normalize(&r.stdout, &lits));
}

/// A directory with a good run (database + bucket), a failed run and an old script's backup; the
/// outputs that describe it.
#[test]
fn list_status_verify_and_a_run_record() {
    let c = cluster();
    let db = c.seeded_db("snap");
    let s3 = moto();
    let bucket = bucket_name("snap");
    s3.tool(&["mkbucket", &bucket]);
    for i in 0..3 {
        s3.tool(&["put", &bucket, &format!("docs/{i}.txt"), &"x".repeat(900)]);
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("backups");
    let mut env = c.env(&db, &dir);
    env.extend(s3.env(&bucket));
    // Tiny objects compress below the default threshold; the threshold is not what is pinned.
    env.push(("BACKUP_MIN_OBJECTS_BYTES".into(), "0".into()));
    // Always warn about free space, so the warning is pinned whatever this machine's disk holds.
    env.push(("BACKUP_FREE_WARN_BYTES".into(), "1000TiB".into()));
    let run = stackback(&["run"], &env);
    assert_eq!(run.code, 0, "{}", run.all());

    let mut broken = env.clone();
    broken.retain(|(k, _)| k != "POSTGRES_PASSWORD");
    broken.push(("POSTGRES_PASSWORD".into(), "wrong".into()));
    let failed = stackback(&["run"], &broken);
    assert_eq!(failed.code, 1, "{}", failed.all());

    let first = dir.join(artifacts(&dir).into_iter().next().unwrap());
    std::fs::copy(&first, dir.join(format!("db_{db}_20251201_020000.sql.gz"))).unwrap();

    let mut ids: Vec<String> = files(&dir)
        .into_iter()
        .filter_map(|f| Some(f.strip_prefix("run_")?.strip_suffix(".json")?.to_string()))
        .collect();
    ids.sort();
    assert_eq!(ids.len(), 2, "{:?}", files(&dir));
    let host = host_name();
    let lits = [
        (dir.display().to_string(), "[DIR]"),
        (db.clone(), "[DB]"),
        (bucket.clone(), "[BUCKET]"),
        (ids[0].clone(), "[RUN_OK]"),
        (ids[1].clone(), "[RUN_FAILED]"),
        (format!("\"host\": \"{host}\""), "\"host\": \"[HOST]\""),
        (format!(" on {host}"), " on [HOST]"),
        (format!("port {}", c.port), "port [PG_PORT]"),
        (s3.endpoint.clone(), "[S3_ENDPOINT]"),
    ];
    let snap = |name: &str, text: &str| snapshot_volatile(name, &normalize(text, &lits));

    snap("run_stdout", &run.stdout);
    snap("run_failed_stdout", &failed.stdout);
    let record = std::fs::read_to_string(dir.join(format!("run_{}.json", ids[0]))).unwrap();
    snap("run_record", &record);
    let record = std::fs::read_to_string(dir.join(format!("run_{}.json", ids[1]))).unwrap();
    snap("run_record_failed", &record);

    for (name, args) in [
        ("list_json", vec!["list", "--json"]),
        ("list", vec!["list"]),
        ("status_json", vec!["status", "--json"]),
        ("status", vec!["status"]),
        ("verify_all", vec!["verify", "--all"]),
        ("prune_dry_run_json", vec!["prune", "--dry-run", "--json"]),
    ] {
        let r = stackback(&args, &env);
        assert_eq!(r.code, 0, "{args:?}: {}", r.all());
        snap(name, &r.stdout);
    }
    assert!(Path::new(&dir)
        .join(format!("run_{}.json", ids[0]))
        .exists());
}
