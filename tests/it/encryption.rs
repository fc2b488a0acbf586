//! Encryption at rest with age: what stackback writes, the stock `age` CLI opens; nothing readable
//! is left beside the ciphertexts; verify and restore say which key problem is which (2) and
//! which damage is which (3).

use std::path::{Path, PathBuf};

use crate::support::pg::Cluster;
use crate::support::s3::{bucket_name, garage, moto, parse_dump};
use crate::support::*;

/// An age identity and an OpenSSH ed25519 key made by the stock tools, in a private directory.
struct Keys {
    _dir: tempfile::TempDir,
    age_identity: PathBuf,
    age_recipient: String,
    ssh_key: PathBuf,
    ssh_recipient: String,
}

fn keys() -> Keys {
    let dir = tempfile::tempdir().unwrap();
    let age_identity = dir.path().join("key.txt");
    let (ok, out) = tool("age-keygen", &["-o", age_identity.to_str().unwrap()]);
    assert!(ok, "age-keygen: {out}");
    let (ok, age_recipient) = tool("age-keygen", &["-y", age_identity.to_str().unwrap()]);
    assert!(ok, "age-keygen -y: {age_recipient}");
    let ssh_key = dir.path().join("id_ed25519");
    let (ok, out) = tool(
        "ssh-keygen",
        &[
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "restore@second-host",
            "-f",
            ssh_key.to_str().unwrap(),
        ],
    );
    assert!(ok, "ssh-keygen: {out}");
    let ssh_recipient = std::fs::read_to_string(ssh_key.with_extension("pub")).unwrap();
    Keys {
        _dir: dir,
        age_identity,
        age_recipient: age_recipient.trim().to_string(),
        ssh_key,
        ssh_recipient: ssh_recipient.trim().to_string(),
    }
}

/// `file` decrypted by the stock `age` CLI with `identity`, piped into `check` (a shell command
/// reading stdin); returns check's stdout.
fn age_d(file: &Path, identity: &Path, check: &str) -> String {
    let (ok, out) = tool(
        "bash",
        &[
            "-o",
            "pipefail",
            "-c",
            &format!(
                "age -d -i {} {} | {check}",
                shell_quote(identity),
                shell_quote(file)
            ),
        ],
    );
    assert!(ok, "age -d {} | {check}: {out}", file.display());
    out
}

/// Every file under `dir`, recursively (records, state files, sidecars, leftovers).
fn every_file(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(every_file(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Fails naming the file and the needle if any file under `dir` holds any of `needles`.
fn assert_nothing_readable(dir: &Path, needles: &[String]) {
    for f in every_file(dir) {
        let bytes = std::fs::read(&f).unwrap();
        for n in needles {
            assert!(
                !bytes.windows(n.len()).any(|w| w == n.as_bytes()),
                "{} holds {n:?} in the clear",
                f.display()
            );
        }
    }
}

fn artifact(dir: &Path, prefix: &str, suffix: &str) -> PathBuf {
    let found: Vec<String> = files(dir)
        .into_iter()
        .filter(|f| f.starts_with(prefix) && f.ends_with(suffix))
        .collect();
    assert_eq!(found.len(), 1, "{prefix}*{suffix} in {:?}", files(dir));
    dir.join(&found[0])
}

/// One run of a database (with globals) and a bucket, sealed to an age and an ssh recipient,
/// with no identity on the backing-up host. The stock `age` opens every kind with either key,
/// the contents pass gzip/tar checks, and no table name, object key or dump text is readable
/// anywhere in BACKUP_DIR, the run record included.
#[test]
fn an_encrypted_run_opens_with_stock_age_and_leaves_nothing_readable() {
    let k = keys();
    let c = cluster();
    let db = c.seeded_db("enc");
    let s3 = garage();
    let bucket = bucket_name("enc");
    s3.tool(&["populate", &bucket, "--bulk", "120"]);
    let original = s3.dump(&bucket);
    let tmp = tempfile::tempdir().unwrap();
    let share = tempfile::tempdir().unwrap();
    let _mount = Mount::tmpfs(share.path(), "size=128m,mode=0700");
    let recipients_file = k._dir.path().join("recipients.txt");
    std::fs::write(
        &recipients_file,
        format!("# the restore host's ssh key\n{}\n", k.ssh_recipient),
    )
    .unwrap();
    let mut env = with(
        c.env(&db, tmp.path()),
        &[
            ("BACKUP_GLOBALS", "true"),
            ("BACKUP_AGE_RECIPIENTS", &k.age_recipient),
            (
                "BACKUP_AGE_RECIPIENTS_FILE",
                recipients_file.to_str().unwrap(),
            ),
            (
                "BACKUP_REMOTE_URL",
                &format!("file://{}/offsite", share.path().display()),
            ),
        ],
    );
    env.extend(s3.env(&bucket));
    let r = stackback(&["run"], &env);
    assert_eq!(r.code, 0, "{}", r.all());

    let dir = tmp.path();
    let dump = artifact(dir, "db_", ".sql.gz.age");
    let globals = artifact(dir, "globals_", ".sql.gz.age");
    let archive = artifact(dir, "minio_", ".tar.gz.age");
    let index = artifact(dir, "minio_", ".index.jsonl.age");
    for f in [&dump, &globals, &archive, &index] {
        assert_eq!(mode(f) & 0o777, 0o600, "{}", f.display());
    }
    // No plaintext twin of any artifact.
    for f in files(dir) {
        assert!(
            f.ends_with(".age") || f.ends_with(".json") || f.starts_with(".stackback"),
            "unencrypted file {f} in {:?}",
            files(dir)
        );
    }

    let rec = only_record(dir);
    assert_eq!(rec["status"], "ok", "{rec:#}");
    for a in rec["artifacts"].as_array().unwrap() {
        assert_eq!(a["encryption"], "age", "{a:#}");
        assert_eq!(a["verification"]["level"], "stored", "{a:#}");
    }

    // Both identities open every kind with the stock CLI.
    for id in [&k.age_identity, &k.ssh_key] {
        age_d(&dump, id, "gunzip -t");
        age_d(&globals, id, "gunzip -t");
        let listing = age_d(&archive, id, "tar -tzf -");
        assert!(listing.contains("bulk/00/object-00007.txt"), "{listing}");
        let lines = age_d(&index, id, "cat");
        assert!(lines.contains("bulk/01/object-00119.txt"), "{lines}");
    }
    // The decrypted dump is the database: the seed's recipe restores it.
    let restored = format!("{db}_age");
    c.psql("postgres", &format!("CREATE DATABASE {restored}"))
        .unwrap();
    let (ok, out) = tool(
        "bash",
        &[
            "-o",
            "pipefail",
            "-c",
            &format!(
                "age -d -i {} {} | gunzip -c | PGPASSWORD='{}' {} -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p {} -U postgres -d {restored} >/dev/null",
                shell_quote(&k.age_identity),
                shell_quote(&dump),
                crate::support::pg::PASSWORD,
                c.bin.join("psql").display(),
                c.port
            ),
        ],
    );
    assert!(ok, "{out}");
    c.assert_same_data(&db, &restored);

    // Nothing from inside the backup is readable on disk: table names, the view, dump syntax,
    // object keys and their contents.
    let mut needles: Vec<String> = ["orders", "big_spenders", "COPY public", "CREATE TABLE"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for o in parse_dump(&original, "") {
        let key = o["key"].as_str().unwrap();
        if key.starts_with("bulk/") || key.starts_with("nested/") {
            needles.push(key.to_string());
        }
    }
    needles.extend([
        "bulk object 17".into(),
        "%PDF-1.4 nested".into(),
        "cos-301".into(),
    ]);
    assert_nothing_readable(dir, &needles);
    // Nor on the remote, which holds the same files.
    let remote_files = every_file(share.path());
    assert_eq!(remote_files.len(), 5, "{remote_files:?} {}", r.all());
    assert_nothing_readable(share.path(), &needles);
}

/// Verify without an identity checks the stored level and exits 0 saying so; with the identity
/// it decrypts and checks everything; a wrong identity is a settings problem (2) for verify and
/// restore, and restore writes nothing; a flipped ciphertext byte is damage (3) either way.
#[test]
fn verify_levels_wrong_identity_and_a_flipped_ciphertext_byte() {
    let k = keys();
    let stranger = keys();
    let c = cluster();
    let db = c.seeded_db("encv");
    let tmp = tempfile::tempdir().unwrap();
    let base = with(
        c.env(&db, tmp.path()),
        &[("BACKUP_AGE_RECIPIENTS", &k.age_recipient)],
    );
    let own = with(
        base.clone(),
        &[("BACKUP_AGE_IDENTITY_FILE", k.age_identity.to_str().unwrap())],
    );
    let wrong = with(
        base.clone(),
        &[(
            "BACKUP_AGE_IDENTITY_FILE",
            stranger.age_identity.to_str().unwrap(),
        )],
    );
    // With the identity on the host, the run's own check is full.
    let r = stackback(&["run"], &own);
    assert_eq!(r.code, 0, "{}", r.all());
    let rec = only_record(tmp.path());
    assert_eq!(rec["artifacts"][0]["verification"]["level"], "full");

    let r = stackback(&["verify", "latest"], &base);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("stored level"), "{}", r.stdout);
    let r = stackback(&["verify", "latest"], &own);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("dump complete"), "{}", r.stdout);
    assert!(!r.stdout.contains("stored level"), "{}", r.stdout);

    let r = stackback(&["verify", "latest"], &wrong);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("BACKUP_AGE_IDENTITY_FILE"),
        "{}",
        r.stderr
    );
    for env in [&wrong, &base] {
        let target = Cluster::unique("never");
        let r = stackback(
            &[
                "restore",
                "db",
                "latest",
                "--target-db",
                &target,
                "--create",
            ],
            env,
        );
        assert_eq!(r.code, 2, "{}", r.all());
        assert!(
            r.stderr.contains("BACKUP_AGE_IDENTITY_FILE"),
            "{}",
            r.stderr
        );
        let exists = c
            .psql(
                "postgres",
                &format!("select count(*) from pg_database where datname = '{target}'"),
            )
            .unwrap();
        assert_eq!(exists, "0", "nothing is created before the key is proven");
    }
    let bad_identity = tmp.path().join("not-a-key.txt");
    std::fs::write(&bad_identity, "this is not a key\n").unwrap();
    let r = stackback(
        &["verify", "latest"],
        &with(
            base.clone(),
            &[("BACKUP_AGE_IDENTITY_FILE", bad_identity.to_str().unwrap())],
        ),
    );
    assert_eq!(r.code, 2, "{}", r.all());
    std::fs::remove_file(&bad_identity).unwrap();

    // One flipped byte in the middle of the ciphertext: authentication fails.
    let art = artifact(tmp.path(), "db_", ".sql.gz.age");
    let mut bytes = std::fs::read(&art).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&art, &bytes).unwrap();
    for env in [&own, &base] {
        let r = stackback(&["verify", "latest"], env);
        assert_eq!(r.code, 3, "{}", r.all());
        assert!(r.stdout.contains("FAIL"), "{}", r.stdout);
    }
    let target = Cluster::unique("flipped");
    let r = stackback(
        &[
            "restore",
            "db",
            "latest",
            "--target-db",
            &target,
            "--create",
        ],
        &own,
    );
    assert_eq!(r.code, 3, "{}", r.all());
    // The stock CLI agrees that the file is damaged.
    let (ok, _) = tool(
        "bash",
        &[
            "-c",
            &format!(
                "age -d -i {} {} >/dev/null",
                shell_quote(&k.age_identity),
                shell_quote(&art)
            ),
        ],
    );
    assert!(!ok, "age -d accepted a flipped byte");
}

/// Restores from sealed backups: the database with the age identity, the bucket with the ssh
/// key onto the other S3 server, each compared with an independent client.
#[test]
fn restore_db_and_objects_from_encrypted_backups() {
    let k = keys();
    let c = cluster();
    let db = c.seeded_db("encr");
    let from = moto();
    let to = garage();
    let bucket = bucket_name("encr");
    from.tool(&["populate", &bucket, "--bulk", "60"]);
    let original = from.dump(&bucket);
    let tmp = tempfile::tempdir().unwrap();
    let recipients = format!("{}, {}", k.age_recipient, k.ssh_recipient);
    let mut env = with(
        c.env(&db, tmp.path()),
        &[("BACKUP_AGE_RECIPIENTS", &recipients)],
    );
    env.extend(from.env(&bucket));
    let r = stackback(&["run"], &env);
    assert_eq!(r.code, 0, "{}", r.all());

    let target = format!("{db}_back");
    let r = stackback(
        &[
            "restore",
            "db",
            "latest",
            "--target-db",
            &target,
            "--create",
        ],
        &with(
            env.clone(),
            &[("BACKUP_AGE_IDENTITY_FILE", k.age_identity.to_str().unwrap())],
        ),
    );
    assert_eq!(r.code, 0, "{}", r.all());
    c.assert_same_data(&db, &target);

    let mut env2 = with(
        c.env(&db, tmp.path()),
        &[
            ("BACKUP_AGE_RECIPIENTS", &recipients),
            ("BACKUP_AGE_IDENTITY_FILE", k.ssh_key.to_str().unwrap()),
        ],
    );
    env2.extend(to.env(&bucket));
    let r = stackback(&["restore", "objects", "latest", "--create-bucket"], &env2);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(to.objects(&bucket, ""), parse_dump(&original, "/"));
}

/// A malformed recipient is a configuration error naming the setting (or the file and line),
/// found before anything is written.
#[test]
fn a_malformed_recipient_names_its_setting_and_writes_nothing() {
    let k = keys();
    let c = cluster();
    let db = c.seeded_db("encbad");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("backups");
    let env = with(
        c.env(&db, &dir),
        &[(
            "BACKUP_AGE_RECIPIENTS",
            &format!("{},age1nope", k.age_recipient),
        )],
    );
    let r = stackback(&["run"], &env);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("BACKUP_AGE_RECIPIENTS"), "{}", r.stderr);
    assert!(r.stderr.contains("recipient 2"), "{}", r.stderr);
    assert!(
        !dir.exists() || artifacts(&dir).is_empty(),
        "{:?}",
        files(&dir)
    );

    let list = tmp.path().join("recipients.txt");
    std::fs::write(
        &list,
        format!("{}\n\nssh-ed25519 AAAAnotbase64\n", k.age_recipient),
    )
    .unwrap();
    let env = with(
        c.env(&db, &dir),
        &[("BACKUP_AGE_RECIPIENTS_FILE", list.to_str().unwrap())],
    );
    let r = stackback(&["run"], &env);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("BACKUP_AGE_RECIPIENTS_FILE"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("line 3"), "{}", r.stderr);
    assert!(
        !dir.exists() || artifacts(&dir).is_empty(),
        "{:?}",
        files(&dir)
    );
}

/// A second host holding the identity restore-tests what the backup host sent off-site; the
/// sealed run's record keeps no table names (no row counts), and a daemon asked for restore tests
/// on a host without the identity refuses to start, saying where the test belongs.
#[test]
fn restore_test_from_the_remote_with_the_identity_and_a_daemon_without_it_refused() {
    let k = keys();
    let c = cluster();
    let db = c.seeded_db("encrt");
    let tmp = tempfile::tempdir().unwrap();
    let share = tempfile::tempdir().unwrap();
    let _mount = Mount::tmpfs(share.path(), "size=128m,mode=0700");
    let backup_host = with(
        c.env(&db, &tmp.path().join("backups")),
        &[
            ("BACKUP_AGE_RECIPIENTS", &k.age_recipient),
            (
                "BACKUP_REMOTE_URL",
                &format!("file://{}/offsite", share.path().display()),
            ),
        ],
    );
    let r = stackback(&["run"], &backup_host);
    assert_eq!(r.code, 0, "{}", r.all());
    let rec = only_record(&tmp.path().join("backups"));
    assert!(rec.get("row_counts").is_none(), "{rec:#}");

    let mut cmd = stackback_cmd(
        &["daemon"],
        &with(backup_host.clone(), &[("BACKUP_RESTORE_TEST", "after-run")]),
    );
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let t0 = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t0.elapsed() > std::time::Duration::from_secs(30) {
            let _ = child.kill();
            panic!("the daemon started although it cannot restore-test sealed backups");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--from-remote"), "{stderr}");

    // The second host: its own empty directory, the remote, the identity.
    let second = with(
        c.env(&db, &tmp.path().join("second")),
        &[
            ("BACKUP_AGE_IDENTITY_FILE", k.age_identity.to_str().unwrap()),
            (
                "BACKUP_REMOTE_URL",
                &format!("file://{}/offsite", share.path().display()),
            ),
        ],
    );
    let r = stackback(
        &["verify", "--restore-test", "--from-remote", "latest"],
        &second,
    );
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("2 tables"), "{}", r.stdout);
    let leftovers = c
        .psql(
            "postgres",
            "select count(*) from pg_database where datname like 'stackback_restore_test_%'",
        )
        .unwrap();
    assert_eq!(leftovers, "0");
    // Without the identity the second host cannot test: a settings problem.
    let without: Vec<(String, String)> = second
        .iter()
        .filter(|(k, _)| k != "BACKUP_AGE_IDENTITY_FILE")
        .cloned()
        .collect();
    let r = stackback(
        &["verify", "--restore-test", "--from-remote", "latest"],
        &without,
    );
    assert_eq!(r.code, 2, "{}", r.all());
}
