//! The deployment files in the seed's stack, checked with the tools an operator would use:
//! `docker-compose config` (Debian's docker-compose 1.29) for the compose override dropped into a
//! stack shaped like the seed's, promtool for the Prometheus rules (the seed's `BackupFailed`
//! among them, verbatim).

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::Value;

use crate::support::*;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs a program found by [`find_binary`] (so a missing tool fails the test) in `dir`.
fn run_in(dir: &Path, name: &str, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(find_binary(name))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The lines of the YAML block that starts at the line containing `start`, as far as it is
/// indented deeper than that line, with the start line's indentation removed from each.
fn yaml_block(text: &str, start: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.contains(start))
        .unwrap_or_else(|| panic!("no line with {start:?}"));
    let indent = lines[at].len() - lines[at].trim_start().len();
    let mut block = vec![lines[at][indent..].to_string()];
    for l in &lines[at + 1..] {
        let deeper = l.len() - l.trim_start().len() > indent;
        if l.trim().is_empty() || !deeper || l.trim_start().starts_with("```") {
            break;
        }
        if l.trim_start().starts_with('#') {
            continue;
        }
        block.push(l[indent..].to_string());
    }
    block
}

/// The seed's alert rule is shipped as the seed wrote it (same name, expression, `for`, labels
/// and annotation), and the file passes `promtool check rules`.
#[test]
fn the_seeds_backup_failed_rule_ships_verbatim() {
    let seed = std::fs::read_to_string(repo().join("../shared/seed/BACKUP.md"))
        .expect("the seed document beside the checkout");
    let rules_path = repo().join("deploy/prometheus/stackback-rules.yml");
    let rules = std::fs::read_to_string(&rules_path).unwrap();
    let want = yaml_block(&seed, "- alert: BackupFailed");
    assert_eq!(want.len(), 7, "the seed's rule: {want:#?}");
    assert_eq!(yaml_block(&rules, "- alert: BackupFailed"), want);
    for name in [
        "BackupRunFailed",
        "BackupMetricsMissing",
        "BackupRestoreTestFailed",
        "BackupRestoreTestStale",
        "BackupSizeAnomaly",
    ] {
        assert!(
            rules.contains(&format!("- alert: {name}\n")),
            "{name} missing"
        );
    }

    let (ok, out) = run_in(
        rules_path.parent().unwrap(),
        "promtool",
        &["check", "rules", "stackback-rules.yml"],
    );
    assert!(ok, "promtool check rules: {out}");
    assert!(out.contains("SUCCESS: 6 rules found"), "{out}");
}

/// `promtool test rules` runs stackback-rules.test.yml: series shaped as stackback pushes them
/// (job `backup`, instance, type) prove that the seed's BackupFailed fires once the last success
/// is more than 24 h old for an hour and stays quiet while backups succeed daily (one of them
/// late), that BackupRunFailed names the type whose run failed, and that BackupMetricsMissing
/// fires when there is nothing to compare.
#[test]
fn promtool_unit_tests_of_the_alert_rules_pass() {
    let dir = repo().join("deploy/prometheus");
    let tests = std::fs::read_to_string(dir.join("stackback-rules.test.yml")).unwrap();
    assert!(
        tests.contains(r#"job="backup", instance="schedgen-backup", type="database""#),
        "the series must be the ones stackback pushes"
    );
    let (ok, out) = run_in(
        &dir,
        "promtool",
        &["test", "rules", "stackback-rules.test.yml"],
    );
    assert!(ok, "promtool test rules: {out}");
    assert!(out.contains("SUCCESS"), "{out}");

    // The tests are not vacuous: with the seed's `for: 1h` shortened, the late backup of the
    // healthy case fires and the suite fails.
    let tmp = tempfile::tempdir().unwrap();
    let rules = std::fs::read_to_string(dir.join("stackback-rules.yml")).unwrap();
    assert_eq!(rules.matches("for: 1h\n").count(), 2, "{rules}");
    std::fs::write(
        tmp.path().join("stackback-rules.yml"),
        rules.replacen("for: 1h\n", "for: 20m\n", 1),
    )
    .unwrap();
    std::fs::write(tmp.path().join("stackback-rules.test.yml"), &tests).unwrap();
    let (ok, out) = run_in(
        tmp.path(),
        "promtool",
        &["test", "rules", "stackback-rules.test.yml"],
    );
    assert!(
        !ok && out.contains("alertname: BackupFailed"),
        "a shortened `for` must fail the tests: {out}"
    );

    // Nor are the restore-test cases: a 7-day staleness limit fires between weekly tests.
    std::fs::write(
        tmp.path().join("stackback-rules.yml"),
        rules.replacen("> 8 * 86400", "> 7 * 86400", 1),
    )
    .unwrap();
    let (ok, out) = run_in(
        tmp.path(),
        "promtool",
        &["test", "rules", "stackback-rules.test.yml"],
    );
    assert!(
        !ok && out.contains("alertname: BackupRestoreTestStale"),
        "a 7-day limit must fail the restore-test cases: {out}"
    );

    // Nor is the anomaly case: a rule on the wrong value never fires.
    std::fs::write(
        tmp.path().join("stackback-rules.yml"),
        rules.replacen("backup_anomaly == 1", "backup_anomaly == 2", 1),
    )
    .unwrap();
    let (ok, out) = run_in(
        tmp.path(),
        "promtool",
        &["test", "rules", "stackback-rules.test.yml"],
    );
    assert!(
        !ok && out.contains("alertname: BackupSizeAnomaly"),
        "a rule that cannot fire must fail the anomaly case: {out}"
    );
}

/// The seed's stack (BACKUP.md: project `schedgen`, containers `schedgen-*`, volume
/// `schedgen_minio_data`, an app and a worker beside PostgreSQL and MinIO), its services on a named
/// network, and one `.env` shared by all of them in the stack's own conventions.
pub(crate) const SEED_COMPOSE: &str = r#"services:
  backend:
    build: ./backend
    container_name: schedgen-backend
    env_file: .env
    ports: ["8000:8000"]
    depends_on: [postgres, minio]
    networks: [schedgen-network]
  pdf-worker:
    build: ./backend
    command: ["python", "-m", "app.worker"]
    env_file: .env
    depends_on: [postgres, minio]
    networks: [schedgen-network]
  postgres:
    image: postgres:16-alpine
    container_name: schedgen-postgres
    environment:
      POSTGRES_USER: ${POSTGRES_USER}
      POSTGRES_PASSWORD: ${POSTGRES_PASSWORD}
      POSTGRES_DB: ${POSTGRES_DB}
    volumes:
      - postgres_data:/var/lib/postgresql/data
    networks: [schedgen-network]
  minio:
    image: minio/minio:latest
    container_name: schedgen-minio
    command: server /data --console-address ":9001"
    environment:
      MINIO_ROOT_USER: ${MINIO_ROOT_USER}
      MINIO_ROOT_PASSWORD: ${MINIO_ROOT_PASSWORD}
    volumes:
      - minio_data:/data
    networks: [schedgen-network]
volumes:
  postgres_data:
  minio_data:
networks:
  schedgen-network:
    driver: bridge
"#;

pub(crate) const SEED_ENV: &str = r#"POSTGRES_USER=schedgen
POSTGRES_PASSWORD=pg-secret
POSTGRES_DB=schedgen
DATABASE_URL=postgresql+asyncpg://schedgen:pg-secret@postgres:5432/schedgen
MINIO_ENDPOINT=minio:9000
MINIO_USE_SSL=false
MINIO_ROOT_USER=minioadmin
MINIO_ROOT_PASSWORD=minio-secret
MINIO_BUCKET=schedgen-pdfs
BACKUP_SCHEDULE="0 2 * * *"  # Daily at 2:00 AM (default)
BACKUP_RETENTION_DAYS=7
BACKUP_ALERT_WEBHOOK_URL=https://hooks.slack.com/services/YOUR/WEBHOOK/URL
BACKUP_ALERT_EMAIL=admin@example.com
"#;

/// A stack directory `ROOT/schedgen` (so compose's project is `schedgen`, as in the seed) with
/// `compose` as its docker-compose.yml, `env` as its .env, and the override copied in as
/// docs/manual.md says.
pub(crate) fn stack(root: &Path, compose: &str, env: &str) -> PathBuf {
    let dir = root.join("schedgen");
    std::fs::create_dir_all(dir.join("backend")).unwrap();
    std::fs::write(dir.join("backend/Dockerfile"), "FROM python:3.12-slim\n").unwrap();
    std::fs::write(dir.join("docker-compose.yml"), compose).unwrap();
    std::fs::write(dir.join(".env"), env).unwrap();
    std::fs::copy(
        repo().join("deploy/docker-compose.backup.yml"),
        dir.join("docker-compose.backup.yml"),
    )
    .unwrap();
    dir
}

/// YAML text as JSON, read by PyYAML (the Python test tools' virtual environment).
fn yaml_to_json(yaml: &str) -> Value {
    let mut child = python3()
        .args([
            "-c",
            "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(yaml.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "PyYAML: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `docker-compose -f F1 -f F2 ... config` in `dir`, with only `env` (plus PATH and HOME) in its
/// environment; the resolved configuration, or the error text.
fn compose_config(dir: &Path, files: &[&str], env: &[(&str, &str)]) -> Result<Value, String> {
    let mut args = Vec::new();
    for f in files {
        args.extend(["-f", f]);
    }
    args.push("config");
    let out = std::process::Command::new(find_binary("docker-compose"))
        .args(&args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", std::env::var("HOME").unwrap_or_default())
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!("{text}{}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(yaml_to_json(&text))
}

/// The networks a resolved service is on (compose's `default` when it lists none).
fn networks(config: &Value, service: &str) -> BTreeSet<String> {
    let svc = &config["services"][service];
    assert!(svc.is_object(), "no service {service}: {config:#}");
    match &svc["networks"] {
        Value::Object(m) => m.keys().cloned().collect(),
        Value::Array(a) => a.iter().map(|n| n.as_str().unwrap().to_string()).collect(),
        _ => BTreeSet::from(["default".to_string()]),
    }
}

/// Seconds of a compose duration (`90s`, `1m30s`, `2m`).
fn seconds(d: &str) -> f64 {
    let (mut total, mut num) = (0.0, String::new());
    let mut chars = d.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let mut unit = c.to_string();
        if c == 'm' && chars.peek() == Some(&'s') {
            unit.push(chars.next().unwrap());
        }
        let n: f64 = std::mem::take(&mut num).parse().unwrap();
        total += n * match unit.as_str() {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            _ => panic!("unit {unit} in {d:?}"),
        };
    }
    assert!(num.is_empty(), "{d:?} has no unit");
    total
}

/// The host paths a compose file refers to: bind-mount sources, build contexts, secret and config
/// files, env files (`(service or section, path)`).
fn host_paths(config: &Value) -> Vec<(String, String)> {
    let mut paths = Vec::new();
    let services = config["services"].as_object().cloned().unwrap_or_default();
    for (name, svc) in &services {
        for v in svc["volumes"].as_array().into_iter().flatten() {
            let source = match v {
                Value::String(s) => s.split(':').next().unwrap().to_string(),
                _ => v["source"].as_str().unwrap_or_default().to_string(),
            };
            // A named volume is a name, not a path.
            if source.contains('/') || source.starts_with('.') || source.starts_with('~') {
                paths.push((name.clone(), source));
            }
        }
        match &svc["build"] {
            Value::String(s) => paths.push((name.clone(), s.clone())),
            Value::Object(b) => paths.push((name.clone(), b["context"].as_str().unwrap().into())),
            _ => {}
        }
        match &svc["env_file"] {
            Value::String(s) => paths.push((name.clone(), s.clone())),
            Value::Array(a) => {
                for f in a {
                    paths.push((name.clone(), f.as_str().unwrap().to_string()));
                }
            }
            _ => {}
        }
    }
    for section in ["secrets", "configs"] {
        for (name, v) in config[section].as_object().into_iter().flatten() {
            if let Some(f) = v["file"].as_str() {
                paths.push((format!("{section}.{name}"), f.to_string()));
            }
        }
    }
    paths
}

/// Asserts that `path` (absolute, as `config` resolves it, or relative to the stack, as a file
/// has it) stays inside the stack directory `dir`.
fn assert_inside(dir: &Path, owner: &str, path: &str) {
    let inside = if path.starts_with('/') {
        let canonical = std::fs::canonicalize(dir).unwrap();
        [dir, canonical.as_path()]
            .iter()
            .any(|d| Path::new(path).starts_with(d))
    } else {
        !path.starts_with('~')
            && Path::new(path)
                .components()
                .all(|c| c != std::path::Component::ParentDir)
    };
    assert!(
        inside,
        "{owner} refers to {path}, outside the stack {}",
        dir.display()
    );
}

/// [`assert_fits_stack_with`] for a stack whose database and MinIO services are named as the
/// seed's: `postgres` and `minio`.
pub(crate) fn assert_fits_stack(dir: &Path, override_file: &str, env: &[(&str, &str)]) -> Value {
    assert_fits_stack_with(dir, override_file, env, &["postgres", "minio"])
}

/// The checks a compose override for the stack in `dir` must pass: `config` of the stack's file
/// plus `override_file` resolves; the backup service shares a network with each service of
/// `peers` (the stack's PostgreSQL and MinIO), has a host name and a stop grace above stackback's 60 s;
/// no file of the stack or the override refers to a path outside the stack directory, and the
/// override builds nothing. Returns the resolved configuration. (Also for the output of
/// `stackback install compose`.)
pub(crate) fn assert_fits_stack_with(
    dir: &Path,
    override_file: &str,
    env: &[(&str, &str)],
    peers: &[&str],
) -> Value {
    let config = compose_config(dir, &["docker-compose.yml", override_file], env)
        .unwrap_or_else(|e| panic!("docker-compose config: {e}"));
    let backup = &config["services"]["backup"];
    let on = networks(&config, "backup");
    for peer in peers {
        // One shared network is enough to reach the service by name.
        assert!(
            !networks(&config, peer).is_disjoint(&on),
            "backup is on {on:?}, {peer} on {:?}: no network in common",
            networks(&config, peer)
        );
    }
    let host = backup["hostname"].as_str().unwrap_or_default();
    assert!(!host.is_empty(), "no hostname: {backup:#}");
    let grace = backup["stop_grace_period"].as_str().unwrap_or("10s");
    assert!(
        seconds(grace) > 60.0,
        "stop_grace_period {grace} is not above BACKUP_STOP_GRACE's 60s"
    );
    for (owner, path) in host_paths(&config) {
        assert_inside(dir, &owner, &path);
    }
    for file in ["docker-compose.yml", override_file] {
        let raw = yaml_to_json(&std::fs::read_to_string(dir.join(file)).unwrap());
        for (owner, path) in host_paths(&raw) {
            assert_inside(dir, &format!("{file}: {owner}"), &path);
        }
    }
    let raw = yaml_to_json(&std::fs::read_to_string(dir.join(override_file)).unwrap());
    assert!(
        raw["services"]["backup"]["build"].is_null(),
        "the override must not build: the stack has no stackback sources"
    );
    config
}

/// The override, copied into a seed-shaped stack as docs/manual.md says (with the stack's network
/// named in .env), resolves with the stack's own files: the backup service on the stack's
/// network, a stable host name, a stop grace above BACKUP_STOP_GRACE, the image by name, the
/// stack's `.env` passed as it is, and no path outside the stack.
#[test]
fn the_override_fits_the_seeds_stack() {
    let tmp = tempfile::tempdir().unwrap();
    let env = format!("{SEED_ENV}STACKBACK_NETWORK=schedgen-network\n");
    let dir = stack(tmp.path(), SEED_COMPOSE, &env);
    let config = assert_fits_stack(&dir, "docker-compose.backup.yml", &[]);
    let backup = &config["services"]["backup"];
    assert_eq!(
        networks(&config, "backup"),
        BTreeSet::from(["schedgen-network".to_string()])
    );
    assert_eq!(backup["image"], "stackback:latest");
    assert_eq!(backup["container_name"], "schedgen-backup");
    assert_eq!(backup["hostname"], "schedgen-backup");
    assert_eq!(backup["user"], "10001");
    let e = &backup["environment"];
    // The stack's settings reach stackback as the stack wrote them (quotes and comment gone, as
    // compose reads .env); the override adds only where backups go and the database host.
    assert_eq!(e["MINIO_ENDPOINT"], "minio:9000");
    assert_eq!(e["MINIO_USE_SSL"], "false");
    assert_eq!(
        e["DATABASE_URL"],
        "postgresql+asyncpg://schedgen:pg-secret@postgres:5432/schedgen"
    );
    assert_eq!(e["POSTGRES_USER"], "schedgen");
    assert_eq!(e["POSTGRES_HOST"], "postgres");
    assert_eq!(e["BACKUP_SCHEDULE"], "0 2 * * *");
    assert_eq!(e["BACKUP_DIR"], "/backups");
    let backups = dir.join("backups");
    assert!(
        backup["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v.as_str() == Some(&format!("{}:/backups:rw", backups.display()))),
        "{backup:#}"
    );

    // A published image and a chosen instance name, from the shell or .env.
    let config = assert_fits_stack(
        &dir,
        "docker-compose.backup.yml",
        &[
            ("STACKBACK_IMAGE", "registry.example.com/stackback:1.2"),
            ("BACKUP_INSTANCE", "prod-backup"),
        ],
    );
    assert_eq!(
        config["services"]["backup"]["image"],
        "registry.example.com/stackback:1.2"
    );
    assert_eq!(config["services"]["backup"]["hostname"], "prod-backup");

    // Volume mode, as the override's comments say: the stack's own MinIO volume, read-only.
    let text = std::fs::read_to_string(dir.join("docker-compose.backup.yml")).unwrap();
    let volume_mode = text
        .replace(
            "# - minio_data:/minio-data:ro",
            "- minio_data:/minio-data:ro",
        )
        .replace(
            "# MINIO_DATA_DIR: /minio-data",
            "MINIO_DATA_DIR: /minio-data",
        );
    assert_ne!(volume_mode, text, "the override lost its volume-mode lines");
    std::fs::write(dir.join("docker-compose.volume.yml"), volume_mode).unwrap();
    let config = assert_fits_stack(&dir, "docker-compose.volume.yml", &[]);
    let backup = &config["services"]["backup"];
    assert!(
        backup["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v.as_str() == Some("minio_data:/minio-data:ro")),
        "{backup:#}"
    );
    assert!(config["services"]["minio"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v.as_str() == Some("minio_data:/data:rw")));
    assert_eq!(backup["environment"]["MINIO_DATA_DIR"], "/minio-data");
}

/// A stack whose services list no network is on compose's `default` network, and so is the
/// backup service without any setting. A stack with a named network needs STACKBACK_NETWORK (as
/// docs/manual.md says): without it the backup lands on `default`, where it cannot reach
/// postgres, and the check above catches that.
#[test]
fn the_override_on_the_default_network_and_the_setting_it_needs_otherwise() {
    let tmp = tempfile::tempdir().unwrap();
    let plain: String = SEED_COMPOSE
        .lines()
        .filter(|l| {
            !l.contains("networks:")
                && !l.contains("schedgen-network")
                && !l.contains("driver: bridge")
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let dir = stack(tmp.path(), &plain, SEED_ENV);
    let config = assert_fits_stack(&dir, "docker-compose.backup.yml", &[]);
    assert_eq!(
        networks(&config, "backup"),
        BTreeSet::from(["default".to_string()])
    );

    let tmp = tempfile::tempdir().unwrap();
    let dir = stack(tmp.path(), SEED_COMPOSE, SEED_ENV);
    let config = compose_config(
        &dir,
        &["docker-compose.yml", "docker-compose.backup.yml"],
        &[],
    )
    .unwrap();
    assert_eq!(
        networks(&config, "backup"),
        BTreeSet::from(["default".to_string()])
    );
    assert_ne!(networks(&config, "backup"), networks(&config, "postgres"));
}

/// deploy/docker-compose.example.yml (a seed-shaped stack to try the service in) with
/// deploy/.env.example and the override.
#[test]
fn the_example_stack_passes_the_same_checks() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = stack(
        tmp.path(),
        &std::fs::read_to_string(repo().join("deploy/docker-compose.example.yml")).unwrap(),
        &std::fs::read_to_string(repo().join("deploy/.env.example")).unwrap(),
    );
    let config = assert_fits_stack(&dir, "docker-compose.backup.yml", &[]);
    assert_eq!(
        networks(&config, "backup"),
        BTreeSet::from(["schedgen-network".to_string()])
    );
    assert_eq!(
        config["services"]["backup"]["environment"]["MINIO_ENDPOINT"],
        "minio:9000"
    );
}

/// The checks are not vacuous: each fault issue 14 found in the old override, put back into the
/// current one, fails [`assert_fits_stack`] with its own message.
#[test]
fn the_stack_checks_catch_the_faults_of_the_old_override() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = stack(tmp.path(), SEED_COMPOSE, SEED_ENV);
    let good = std::fs::read_to_string(dir.join("docker-compose.backup.yml")).unwrap();
    let network = [("STACKBACK_NETWORK", "schedgen-network")];
    let image = "    image: ${STACKBACK_IMAGE:-stackback:latest}\n";
    let build = "    image: stackback:latest\n    build:\n      context: ..\n      dockerfile: deploy/Dockerfile\n";
    // (what, text of the good override, replaced by, environment, the check's message)
    type Fault<'a> = (&'a str, &'a str, &'a str, &'a [(&'a str, &'a str)], &'a str);
    let faults: &[Fault] = &[
        (
            "a build context outside the stack",
            image,
            build,
            &network,
            "outside the stack",
        ),
        (
            "backups outside the stack",
            "      - ./backups:/backups\n",
            "      - ../backups:/backups\n",
            &network,
            "outside the stack",
        ),
        (
            "no host name",
            "    hostname: ${BACKUP_INSTANCE:-schedgen-backup}\n",
            "",
            &network,
            "no hostname",
        ),
        (
            "Docker's stop grace",
            "    stop_grace_period: 90s\n",
            "    stop_grace_period: 10s\n",
            &network,
            "is not above",
        ),
        // Without STACKBACK_NETWORK the service lands on `default`.
        ("none of the stack's networks", "", "", &[], "backup is on"),
    ];
    for (what, from, to, env, message) in faults {
        assert!(good.contains(from), "{what}: {from:?} not in the override");
        std::fs::write(dir.join("faulty.yml"), good.replacen(from, to, 1)).unwrap();
        let panic = std::panic::catch_unwind(|| assert_fits_stack(&dir, "faulty.yml", env))
            .err()
            .unwrap_or_else(|| panic!("{what} passed the checks"));
        let text = panic.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(text.contains(message), "{what}: {text}");
    }
}
