//! `stackback verify` catches damaged backups and damaged or missing run records.

use std::path::{Path, PathBuf};

use crate::support::*;

/// A fresh verified backup in its own directory.
fn backup() -> (tempfile::TempDir, Vec<(String, String)>, PathBuf, String) {
    let c = cluster();
    let db = c.seeded_db("v");
    let tmp = tempfile::tempdir().unwrap();
    let env = c.env(&db, tmp.path());
    let r = stackback(&["run"], &env);
    assert_eq!(r.code, 0, "{}", r.all());
    let art = tmp.path().join(&artifacts(tmp.path())[0]);
    let id = only_record(tmp.path())["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    (tmp, env, art, id)
}

fn record_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("run_{id}.json"))
}

#[test]
fn an_intact_backup_verifies_by_run_file_latest_and_all() {
    let (tmp, env, art, id) = backup();
    for args in [
        vec!["verify"],
        vec!["verify", "latest"],
        vec!["verify", id.as_str()],
        vec!["verify", art.to_str().unwrap()],
        vec!["verify", art.file_name().unwrap().to_str().unwrap()],
        vec!["verify", "--all"],
    ] {
        let r = stackback(&args, &env);
        assert_eq!(r.code, 0, "{args:?}: {}", r.all());
        assert!(
            r.stdout.contains("1 verified, 0 failed"),
            "{args:?}: {}",
            r.stdout
        );
        assert!(r.stdout.contains("dump complete"), "{}", r.stdout);
    }
    drop(tmp);
}

#[test]
fn a_truncated_file_fails_verification() {
    let (_tmp, env, art, id) = backup();
    let len = std::fs::metadata(&art).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&art).unwrap();
    f.set_len(len / 2).unwrap();
    let r = stackback(&["verify", &id], &env);
    assert_eq!(r.code, 3, "{}", r.all());
    assert!(r.stdout.contains("FAIL"), "{}", r.stdout);
    assert!(r.stdout.contains("truncated"), "{}", r.stdout);
}

#[test]
fn a_flipped_byte_fails_verification() {
    let (_tmp, env, art, id) = backup();
    let mut bytes = std::fs::read(&art).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&art, &bytes).unwrap();
    let r = stackback(&["verify", &id], &env);
    assert_eq!(r.code, 3, "{}", r.all());
    assert!(r.stdout.contains("FAIL"), "{}", r.stdout);
}

#[test]
fn a_truncated_dump_that_is_still_valid_gzip_fails_on_completeness() {
    // What a pipe-based script produces when pg_dump dies: a clean gzip of half a dump.
    let (tmp, env, art, id) = backup();
    let half = tmp.path().join("half.sql.gz");
    sh(&format!(
        "(gunzip -c {} || true) | head -c 200000 | gzip > {}",
        shell_quote(&art),
        shell_quote(&half)
    ));
    assert!(
        tool("gunzip", &["-t", half.to_str().unwrap()]).0,
        "the half dump is valid gzip"
    );
    // Without a record naming it, such a file is never taken for a backup...
    let r = stackback(&["verify", half.to_str().unwrap()], &env);
    assert_eq!(r.code, 3, "{}", r.all());
    assert!(r.stdout.contains("no run record"), "{}", r.stdout);

    // ...and with one whose sizes and checksums all match it, only the completeness check is
    // left to catch it.
    std::fs::rename(&half, &art).unwrap();
    forge_record(
        &record_path(tmp.path(), &id),
        &facts(&art, "gunzip -c").edits(0),
    );
    let r = stackback(&["verify", &id], &env);
    assert_eq!(r.code, 3, "{}", r.all());
    assert!(
        r.stdout.contains("does not end with") && r.stdout.contains("did not finish"),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("modified"), "{}", r.stdout);
}

#[test]
fn a_missing_run_record_fails_verification() {
    let (tmp, env, art, id) = backup();
    std::fs::remove_file(record_path(tmp.path(), &id)).unwrap();
    let r = stackback(&["verify", &id], &env);
    assert_eq!(r.code, 3, "{}", r.all());
    let r = stackback(&["verify", art.to_str().unwrap()], &env);
    assert_eq!(r.code, 3, "{}", r.all());
    assert!(r.stdout.contains("no run record"), "{}", r.stdout);
    let r = stackback(&["verify"], &env);
    assert_eq!(r.code, 3, "{}", r.all());
}

#[test]
fn an_edited_run_record_fails_verification() {
    let (tmp, env, _art, id) = backup();
    let p = record_path(tmp.path(), &id);
    let original = std::fs::read(&p).unwrap();
    // Edit a field verification does not otherwise read: the self-checksum still catches it.
    let text = std::fs::read_to_string(&p)
        .unwrap()
        .replace("\"duration_ms\": ", "\"duration_ms\": 1");
    std::fs::write(&p, text).unwrap();
    let r = stackback(&["verify", &id], &env);
    assert_eq!(r.code, 3, "{}", r.all());
    assert!(r.stdout.contains("modified"), "{}", r.stdout);

    // A record whose checksum was recomputed by hand still cannot hide a swapped artifact. The
    // forger's checksum is right: an untouched record resealed by it still verifies.
    std::fs::write(&p, &original).unwrap();
    forge_record::<&str>(&p, &[]);
    let r = stackback(&["verify", &id], &env);
    assert_eq!(
        r.code,
        0,
        "the forger computes the documented checksum: {}",
        r.all()
    );
    forge_record(&p, &[("artifacts.0.stored_sha256", "0".repeat(64).into())]);
    let r = stackback(&["verify", &id], &env);
    assert_eq!(r.code, 3, "{}", r.all());
    assert!(!r.stdout.contains("modified"), "{}", r.stdout);
    assert!(
        r.stdout
            .contains(&format!("the run record says {}", "0".repeat(64))),
        "{}",
        r.stdout
    );

    std::fs::write(&p, "{ not json").unwrap();
    let r = stackback(&["verify", "--all"], &env);
    assert_eq!(r.code, 3, "{}", r.all());
    assert!(r.stdout.contains("run record unusable"), "{}", r.stdout);
}
