//! Off-site copies against real remotes: a second S3 server (moto beside the Garage source and the
//! other way round), WebDAV and SFTP served by rclone, a file:// share on its own tmpfs. Each:
//! run, check what landed with a tool we did not write, lose the local directory, restore the
//! database and the bucket from the remote, compare with the originals by an independent client.
//! The remote can also be a three-node Garage cluster with a node frozen during the upload.
//! Faults: the remote down (exit 5, alert, local backup intact, the next run catches up), an
//! upload cut mid-way (retried; never counted as a copy), wrong credentials, an unknown SSH host
//! key, a share that is not mounted.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::support::notify::{Pushgateway, Receiver};
use crate::support::s3::{bucket_name, garage, moto, parse_dump, S3Server};
use crate::support::*;

/// A database and a populated bucket on `source`, with their environment for BACKUP_DIR `dir`.
fn stack(
    source: &S3Server,
    dir: &Path,
    prefix: &str,
) -> (String, String, Vec<String>, Vec<(String, String)>) {
    let c = cluster();
    let db = c.seeded_db(prefix);
    let bucket = bucket_name(prefix);
    source.tool(&["populate", &bucket, "--bulk", "150"]);
    let original = source.dump(&bucket);
    let mut env = c.env(&db, dir);
    env.extend(source.env(&bucket));
    (db, bucket, original, env)
}

/// The BACKUP_REMOTE_* variables for an S3 remote at `s3`.
pub(crate) fn s3_remote(s3: &S3Server, bucket: &str, prefix: &str) -> Vec<(String, String)> {
    s3.tool(&["mkbucket", bucket]);
    vec![
        (
            "BACKUP_REMOTE_URL".into(),
            format!("s3://{bucket}/{prefix}"),
        ),
        ("BACKUP_REMOTE_ENDPOINT".into(), s3.endpoint.clone()),
        ("BACKUP_REMOTE_REGION".into(), s3.region.into()),
        ("BACKUP_REMOTE_ACCESS_KEY".into(), s3.access_key.clone()),
        ("BACKUP_REMOTE_SECRET_KEY".into(), s3.secret_key.clone()),
    ]
}

/// After a run: the local directory is lost; the database comes back from the remote into a new
/// database and the bucket into a fresh bucket on `restore_to`, each compared with the original.
pub(crate) fn lose_and_restore(
    env: &[(String, String)],
    db: &str,
    bucket: &str,
    original: &[String],
    restore_to: &S3Server,
) {
    let c = cluster();
    let dir = PathBuf::from(&env.iter().find(|(k, _)| k == "BACKUP_DIR").unwrap().1);
    std::fs::remove_dir_all(&dir).unwrap();

    let r = stackback(&["list", "--remote", "--json"], env);
    assert_eq!(r.code, 0, "{}", r.all());
    let l: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(l["runs"][0]["complete"], true, "{l:#}");
    let r = stackback(&["verify", "--remote", "latest"], env);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("0 failed"), "{}", r.stdout);

    let target = format!("{db}_remote");
    let r = stackback(
        &[
            "restore",
            "db",
            "latest",
            "--from-remote",
            "--target-db",
            &target,
            "--create",
        ],
        env,
    );
    assert_eq!(r.code, 0, "{}", r.all());
    c.assert_same_data(db, &target);

    let fresh = format!("{bucket}-back");
    let mut env2: Vec<(String, String)> = env
        .iter()
        .filter(|(k, _)| !k.starts_with("MINIO_"))
        .cloned()
        .collect();
    env2.extend(restore_to.env(&fresh));
    let r = stackback(
        &[
            "restore",
            "objects",
            "latest",
            "--from-remote",
            "--bucket",
            &fresh,
            "--create-bucket",
        ],
        &env2,
    );
    assert_eq!(r.code, 0, "{}", r.all());
    let strip = if restore_to.name == "garage" { "/" } else { "" };
    assert_eq!(restore_to.objects(&fresh, ""), parse_dump(original, strip));
    // Scratch copies are gone.
    let left: Vec<String> = files(&dir)
        .into_iter()
        .chain(
            std::fs::read_dir(&dir)
                .unwrap()
                .filter_map(|e| e.ok())
                .filter(|e| e.path().is_dir())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(".stackback-fetch")),
        )
        .filter(|n| n.starts_with(".stackback-fetch") || n.starts_with("db_"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// `run` with a remote: exit 0, the remote holds every file and the record (checked by boto3
/// against the record's SHA-256), status shows the copy.
fn run_and_check_s3_remote(source: &S3Server, remote: &S3Server) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("backups");
    let (db, bucket, original, mut env) = stack(source, &dir, "off");
    let rbucket = bucket_name("offsite");
    env.extend(s3_remote(remote, &rbucket, "host1/stack"));
    let r = stackback(&["run"], &env);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains("1 run(s) copied and checked"),
        "{}",
        r.stdout
    );
    let rec = only_record(&dir);
    let objects = remote.objects(&rbucket, "");
    let on_remote = |name: &str| {
        objects
            .iter()
            .find(|o| o["key"] == format!("host1/stack/{name}"))
            .unwrap_or_else(|| panic!("{name} not on the remote: {objects:#?}"))
            .clone()
    };
    for a in rec["artifacts"].as_array().unwrap() {
        let o = on_remote(a["file"].as_str().unwrap());
        assert_eq!(o["sha256"], a["stored_sha256"], "{o:#}");
    }
    let record_name = format!("run_{}.json", rec["run_id"].as_str().unwrap());
    let local = std::fs::read(dir.join(&record_name)).unwrap();
    assert_eq!(
        on_remote(&record_name)["sha256"],
        hex::encode(Sha256::digest(&local)),
        "the remote record is byte for byte the local one"
    );
    let r = stackback(&["status", "--json"], &env);
    let s: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(s["remote"]["last_ok"], true, "{s:#}");
    lose_and_restore(&env, &db, &bucket, &original, remote);
}

#[test]
fn s3_remote_moto_beside_a_garage_source() {
    run_and_check_s3_remote(garage(), moto());
}

#[test]
fn s3_remote_garage_beside_a_moto_source() {
    run_and_check_s3_remote(moto(), garage());
}

/// A program's server on a free port, killed with the test.
fn rclone_serve(kind: &str, root: &Path, extra: &[&str]) -> (u16, Tied) {
    let log_dir = root_dir(&format!("rclone-{kind}"));
    start_on_free_port(&format!("rclone serve {kind}"), |port| {
        let mut cmd = Command::new("rclone");
        cmd.args(["serve", kind, "--addr", &format!("127.0.0.1:{port}")])
            .args(extra)
            .arg(root)
            .env("RCLONE_CONFIG", "/dev/null");
        let server = spawn_tied(cmd, &log_dir.join(format!("{port}.log")), libc::SIGTERM);
        wait_port(port, &server, "rclone")?;
        Ok((port, server))
    })
}

/// Each file of the run record in `dir`, compared by sha256sum with its copy under `remote_dir`.
fn assert_same_files(dir_record: &serde_json::Value, remote_dir: &Path) {
    for a in dir_record["artifacts"].as_array().unwrap() {
        let f = remote_dir.join(a["file"].as_str().unwrap());
        let (ok, out) = tool("sha256sum", &[f.to_str().unwrap()]);
        assert!(ok, "{out}");
        assert_eq!(&out[..64], a["stored_sha256"].as_str().unwrap());
    }
}

#[test]
fn webdav_remote_through_rclone() {
    let served = tempfile::tempdir().unwrap();
    let (port, _server) = rclone_serve(
        "webdav",
        served.path(),
        &["--user", "dav", "--pass", "dav-secret"],
    );
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("backups");
    let (db, bucket, original, env) = stack(moto(), &dir, "dav");
    let env = with(
        env,
        &[
            (
                "BACKUP_REMOTE_URL",
                &format!("webdav://127.0.0.1:{port}/offsite/host1"),
            ),
            ("BACKUP_REMOTE_USER", "dav"),
            ("BACKUP_REMOTE_PASSWORD", "dav-secret"),
        ],
    );
    let r = stackback(&["run"], &env);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(!r.all().contains("dav-secret"), "{}", r.all());
    let rec = only_record(&dir);
    let remote_dir = served.path().join("offsite/host1");
    assert_same_files(&rec, &remote_dir);
    // No partial upload is left under any name.
    let names: Vec<String> = std::fs::read_dir(&remote_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");

    // Wrong password: the local backup stays good, the copy fails with exit 5.
    let wrong = with(env.clone(), &[("BACKUP_REMOTE_PASSWORD", "nope")]);
    let r = stackback(&["run"], &wrong);
    assert_eq!(r.code, 5, "{}", r.all());
    assert!(r.stderr.contains("off-site copy failed"), "{}", r.stderr);
    assert!(
        r.stderr.contains("BACKUP_REMOTE_USER"),
        "the hint names the credentials: {}",
        r.stderr
    );
    lose_and_restore(&env, &db, &bucket, &original, garage());
}

/// An ed25519 key pair made by ssh-keygen in `dir`.
fn ssh_key(dir: &Path, name: &str) -> PathBuf {
    let key = dir.join(name);
    let (ok, out) = tool(
        "ssh-keygen",
        &["-q", "-t", "ed25519", "-N", "", "-f", key.to_str().unwrap()],
    );
    assert!(ok, "{out}");
    key
}

#[test]
fn sftp_remote_through_rclone_with_a_checked_host_key() {
    let keys = tempfile::tempdir().unwrap();
    let client = ssh_key(keys.path(), "client");
    let host = ssh_key(keys.path(), "host");
    let other_host = ssh_key(keys.path(), "other-host");
    let served = tempfile::tempdir().unwrap();
    let authorized = client.with_extension("pub");
    let (port, _server) = rclone_serve(
        "sftp",
        served.path(),
        &[
            "--authorized-keys",
            authorized.to_str().unwrap(),
            "--key",
            host.to_str().unwrap(),
        ],
    );
    let known = |key: &Path, file: &str| {
        let pubkey = std::fs::read_to_string(key.with_extension("pub")).unwrap();
        let mut parts = pubkey.split_whitespace();
        let line = format!(
            "[127.0.0.1]:{port} {} {}\n",
            parts.next().unwrap(),
            parts.next().unwrap()
        );
        let p = keys.path().join(file);
        std::fs::write(&p, line).unwrap();
        p
    };
    let good_known = known(&host, "known_hosts");
    let bad_known = known(&other_host, "known_hosts.bad");
    let empty_known = keys.path().join("known_hosts.empty");
    std::fs::write(&empty_known, "").unwrap();

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("backups");
    let (db, bucket, original, env) = stack(garage(), &dir, "sftp");
    let env = with(
        env,
        &[
            (
                "BACKUP_REMOTE_URL",
                &format!("sftp://backup@127.0.0.1:{port}/offsite/host1"),
            ),
            ("BACKUP_REMOTE_SSH_KEY_FILE", client.to_str().unwrap()),
            ("BACKUP_REMOTE_KNOWN_HOSTS", good_known.to_str().unwrap()),
            // The ssh client must not need a writable home.
            ("HOME", "/nonexistent"),
        ],
    );
    let r = stackback(&["run"], &env);
    assert_eq!(r.code, 0, "{}", r.all());
    let rec = only_record(&dir);
    assert_same_files(&rec, &served.path().join("offsite/host1"));

    // A host whose key does not match, or that is not listed at all: refused, exit 5.
    for k in [&bad_known, &empty_known] {
        let r = stackback(
            &["run"],
            &with(
                env.clone(),
                &[("BACKUP_REMOTE_KNOWN_HOSTS", k.to_str().unwrap())],
            ),
        );
        assert_eq!(r.code, 5, "{}: {}", k.display(), r.all());
        assert!(
            r.stderr.contains("host key") || r.stderr.contains("Host key"),
            "{}",
            r.stderr
        );
    }
    lose_and_restore(&env, &db, &bucket, &original, moto());
}

/// file:// on its own tmpfs works; the same path when nothing is mounted there (the same file
/// system as BACKUP_DIR) is refused unless allowed.
#[test]
fn file_remote_on_a_separate_tmpfs_and_an_unmounted_share_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let share = tmp.path().join("nas");
    let dir = tmp.path().join("backups");
    let (db, bucket, original, env) = stack(moto(), &dir, "file");
    let env = with(
        env,
        &[(
            "BACKUP_REMOTE_URL",
            &format!("file://{}/host1", share.display()),
        )],
    );
    std::fs::create_dir_all(&share).unwrap();
    // Not mounted: the share is the backup directory's file system.
    let r = stackback(&["run"], &env);
    assert_eq!(r.code, 5, "{}", r.all());
    assert!(
        r.stderr.contains("BACKUP_REMOTE_ALLOW_SAME_FS"),
        "{}",
        r.stderr
    );
    assert!(
        !share.join("host1").exists()
            || std::fs::read_dir(share.join("host1")).unwrap().count() == 0
    );
    let verify = stackback(&["verify", "--all"], &env);
    assert_eq!(
        verify.code,
        0,
        "the local backup is intact: {}",
        verify.all()
    );

    let _mount = Mount::tmpfs(&share, "size=256m,mode=0700");
    let r = stackback(&["run"], &env);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains("2 run(s) copied"),
        "the first run is caught up: {}",
        r.stdout
    );
    for rec in records(&dir) {
        assert_same_files(&rec, &share.join("host1"));
    }
    lose_and_restore(&env, &db, &bucket, &original, garage());
}

/// The remote is down: exit 5, an alert that says so, the local backup intact and verified, the
/// metric at 0; the next run with the remote back copies both runs, oldest after the new one.
#[test]
fn remote_down_alerts_exit_5_and_the_next_run_catches_up() {
    let hook = Receiver::start();
    let pgw = Pushgateway::start();
    let closed = ClosedPort::new();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("backups");
    let c = cluster();
    let db = c.seeded_db("down");
    let rbucket = bucket_name("down");
    let mut env = with(
        c.env(&db, &dir),
        &[
            ("BACKUP_ALERT_WEBHOOK_URL", &hook.url("/hook")),
            ("BACKUP_PUSHGATEWAY_URL", &pgw.url()),
        ],
    );
    // The pushed value of a metric of this job (no labels beyond the group's).
    let metric = |name: &str| -> Option<f64> {
        sh(&format!("curl -sf {}/metrics", pgw.url()))
            .lines()
            .find(|l| l.starts_with(&format!("{name}{{")) && l.contains("job=\"backup\""))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    };
    // Garage checks signatures (moto accepts any key), so wrong credentials are refused there.
    let up = s3_remote(garage(), &rbucket, "h");
    let down: Vec<(String, String)> = up
        .iter()
        .map(|(k, v)| {
            if k == "BACKUP_REMOTE_ENDPOINT" {
                (k.clone(), format!("http://127.0.0.1:{}", closed.port))
            } else {
                (k.clone(), v.clone())
            }
        })
        .collect();
    env.extend(down);
    let r = stackback(&["run"], &env);
    assert_eq!(r.code, 5, "{}", r.all());
    assert!(r.stderr.contains("local backup is good"), "{}", r.stderr);
    let reqs = hook.wait_for(1);
    let body = reqs[0]["body"].to_string();
    assert!(body.contains("OFF-SITE COPY FAILED"), "{body}");
    assert_eq!(only_record(&dir)["status"], "ok");
    assert_eq!(stackback(&["verify", "latest"], &env).code, 0);
    let r = stackback(&["status", "--json"], &env);
    let s: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(s["remote"]["last_ok"], false, "{s:#}");
    assert_eq!(metric("backup_remote_success"), Some(0.0));
    assert_eq!(metric("backup_remote_last_success_timestamp_seconds"), None);

    let mut env_up: Vec<(String, String)> = env
        .iter()
        .filter(|(k, _)| !k.starts_with("BACKUP_REMOTE_"))
        .cloned()
        .collect();
    env_up.extend(up);
    let r = stackback(&["run"], &env_up);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("2 run(s) copied"), "{}", r.stdout);
    assert_eq!(metric("backup_remote_success"), Some(1.0));
    let last = metric("backup_remote_last_success_timestamp_seconds").expect("pushed");
    assert!(
        (last - chrono::Utc::now().timestamp() as f64).abs() < 600.0,
        "{last}"
    );
    let r = stackback(&["list", "--remote", "--json"], &env_up);
    let l: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(l["runs"].as_array().unwrap().len(), 2, "{l:#}");
    let r = stackback(&["verify", "--remote", "--all"], &env_up);
    assert_eq!(r.code, 0, "{}", r.all());

    // Wrong credentials: exit 5 and a hint that names them.
    let wrong = with(
        env_up.clone(),
        &[("BACKUP_REMOTE_SECRET_KEY", "not-the-secret")],
    );
    let r = stackback(&["run"], &wrong);
    assert_eq!(r.code, 5, "{}", r.all());
    assert!(
        r.stderr.contains("BACKUP_REMOTE_SECRET_KEY"),
        "{}",
        r.stderr
    );
}

/// An SFTP remote with an ordinary BACKUP_DIR of 60-odd characters: the ssh client's control
/// socket lives under BACKUP_DIR and must fit in a Unix socket path (107 bytes).
#[test]
fn sftp_remote_with_a_long_backup_dir() {
    let keys = tempfile::tempdir().unwrap();
    let client = ssh_key(keys.path(), "client");
    let host = ssh_key(keys.path(), "host");
    let served = tempfile::tempdir().unwrap();
    let authorized = client.with_extension("pub");
    let (port, _server) = rclone_serve(
        "sftp",
        served.path(),
        &[
            "--authorized-keys",
            authorized.to_str().unwrap(),
            "--key",
            host.to_str().unwrap(),
        ],
    );
    let pubkey = std::fs::read_to_string(host.with_extension("pub")).unwrap();
    let mut parts = pubkey.split_whitespace();
    let known = keys.path().join("known_hosts");
    std::fs::write(
        &known,
        format!(
            "[127.0.0.1]:{port} {} {}\n",
            parts.next().unwrap(),
            parts.next().unwrap()
        ),
    )
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp
        .path()
        .join("srv/backups/production-postgres-and-buckets");
    assert!(dir.as_os_str().len() > 45, "{}", dir.display());
    let c = cluster();
    let db = c.seeded_db("sftplong");
    let env = with(
        c.env(&db, &dir),
        &[
            (
                "BACKUP_REMOTE_URL",
                &format!("sftp://backup@127.0.0.1:{port}/offsite"),
            ),
            ("BACKUP_REMOTE_SSH_KEY_FILE", client.to_str().unwrap()),
            ("BACKUP_REMOTE_KNOWN_HOSTS", known.to_str().unwrap()),
        ],
    );
    // What a cut upload leaves (a partial name) is swept by the next copy; a stranger's hidden
    // file is not ours and stays.
    std::fs::create_dir_all(served.path().join("offsite")).unwrap();
    let partial = served
        .path()
        .join("offsite/.stackback-partial.db_x_20260101_000000.sql.gz");
    std::fs::write(&partial, "half a file").unwrap();
    let stranger = served.path().join("offsite/.someone-elses");
    std::fs::write(&stranger, "not ours").unwrap();
    let r = stackback(&["run"], &env);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_same_files(&only_record(&dir), &served.path().join("offsite"));
    assert!(
        !partial.exists(),
        "the partial upload was left on the remote"
    );
    assert!(stranger.exists(), "a file that is not ours was deleted");
}
