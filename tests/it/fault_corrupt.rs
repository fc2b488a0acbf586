//! Corrupted backups (issue 13, deliver 2): truncation at any length, a bit flipped at a random
//! offset (property-based: proptest picks the offsets, each flipped file is checked by
//! `stackback verify`), edited run records (by hand, or resealed by a forger), and damaged object
//! indexes, beside the archive and inside it. `verify` must answer exit 3 for every one, and the
//! untouched backup must verify again once the damage is undone.

use std::path::{Path, PathBuf};

use proptest::test_runner::{Config, TestCaseError, TestRunner};

use crate::buckets::env_for;
use crate::support::s3::{moto, small_bucket};
use crate::support::*;

/// A good backup of the sample database, and of a small bucket when `bucket`: (tmp, env, id).
fn backup(bucket: bool) -> (tempfile::TempDir, Vec<(String, String)>, String) {
    let c = cluster();
    let db = c.seeded_db("corrupt");
    let tmp = tempfile::tempdir().unwrap();
    let env = if bucket {
        let s3 = moto();
        env_for(&db, tmp.path(), s3, &small_bucket(s3))
    } else {
        c.env(&db, tmp.path())
    };
    let r = stackback(&["run"], &env);
    assert_eq!(r.code, 0, "{}", r.all());
    let id = only_record(tmp.path())["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    (tmp, env, id)
}

fn find(dir: &Path, prefix: &str, suffix: &str) -> PathBuf {
    let f = artifacts(dir)
        .into_iter()
        .find(|f| f.starts_with(prefix) && f.ends_with(suffix))
        .unwrap_or_else(|| panic!("no {prefix}*{suffix} in {:?}", files(dir)));
    dir.join(f)
}

/// `stackback verify ID` must fail with exit 3 and say FAIL.
fn verify_fails(env: &[(String, String)], id: &str, what: &str) -> Run {
    let r = stackback(&["verify", id], env);
    assert_eq!(r.code, 3, "{what}: {}", r.all());
    assert!(r.stdout.contains("FAIL"), "{what}: {}", r.stdout);
    r
}

fn verify_passes(env: &[(String, String)], id: &str) {
    let r = stackback(&["verify", id], env);
    assert_eq!(r.code, 0, "the undamaged backup: {}", r.all());
}

#[test]
fn truncation_at_any_length_fails_verification() {
    let (tmp, env, id) = backup(true);
    for file in [
        find(tmp.path(), "db_", ".sql.gz"),
        find(tmp.path(), "minio_", ".tar.gz"),
        find(tmp.path(), "minio_", ".index.jsonl"),
    ] {
        let original = std::fs::read(&file).unwrap();
        let n = original.len();
        for keep in [0, 1, 10, n / 3, n / 2, n - 9, n - 8, n - 4, n - 1] {
            std::fs::write(&file, &original[..keep]).unwrap();
            verify_fails(
                &env,
                &id,
                &format!("{} cut to {keep} of {n}", file.display()),
            );
        }
        std::fs::write(&file, &original).unwrap();
        verify_passes(&env, &id);
    }
}

/// A runner with a bounded number of cases and no regression files written into the tree.
fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

/// Flips one bit at an offset proptest picks in `file`, runs `verify`, puts the byte back.
fn flips_are_caught(env: &[(String, String)], id: &str, file: &Path, cases: u32) {
    let original = std::fs::read(file).unwrap();
    let len = original.len();
    runner(cases)
        .run(&(0..len, 0u8..8), |(at, bit)| {
            let mut bytes = original.clone();
            bytes[at] ^= 1 << bit;
            std::fs::write(file, &bytes).unwrap();
            let r = stackback(&["verify", id], env);
            std::fs::write(file, &original).unwrap();
            if r.code != 3 {
                return Err(TestCaseError::fail(format!(
                    "bit {bit} of byte {at} of {len} flipped in {}: exit {}: {}",
                    file.display(),
                    r.code,
                    r.all()
                )));
            }
            Ok(())
        })
        .unwrap();
    verify_passes(env, id);
}

#[test]
fn a_bit_flipped_anywhere_in_a_database_backup_fails_verification() {
    let (tmp, env, id) = backup(false);
    flips_are_caught(&env, &id, &find(tmp.path(), "db_", ".sql.gz"), 40);
}

#[test]
fn a_bit_flipped_anywhere_in_a_bucket_archive_or_its_index_fails_verification() {
    let (tmp, env, id) = backup(true);
    flips_are_caught(&env, &id, &find(tmp.path(), "minio_", ".tar.gz"), 30);
    flips_are_caught(&env, &id, &find(tmp.path(), "minio_", ".index.jsonl"), 20);
}

#[test]
fn an_edited_run_record_fails_verification_however_it_was_edited() {
    let (tmp, env, id) = backup(true);
    let p = tmp.path().join(format!("run_{id}.json"));
    let original = std::fs::read_to_string(&p).unwrap();
    let rec: serde_json::Value = serde_json::from_str(&original).unwrap();
    // By hand: the self-checksum no longer matches.
    let by_hand = [
        (
            "a size",
            original.replacen("\"stored_bytes\": ", "\"stored_bytes\": 1", 1),
        ),
        (
            "the status",
            original.replace("\"status\": \"ok\"", "\"status\": \"okay\""),
        ),
        (
            "the checksum",
            original.replace(rec["record_sha256"].as_str().unwrap(), &"0".repeat(64)),
        ),
        (
            "an object count",
            original.replace("\"objects\": 5", "\"objects\": 4"),
        ),
        ("cut short", original[..original.len() / 2].to_string()),
        ("emptied", String::new()),
        ("not an object", "[]".into()),
        (
            "a higher schema",
            original.replace("\"schema\": 3", "\"schema\": 99"),
        ),
    ];
    for (what, text) in by_hand {
        assert_ne!(text, original, "{what}: the edit changed nothing");
        std::fs::write(&p, &text).unwrap();
        verify_fails(&env, &id, what);
    }
    // By a forger who recomputes the checksum: the content check still fails.
    let forged: [(&str, Vec<(String, serde_json::Value)>); 6] = [
        (
            "a stored SHA-256",
            vec![("artifacts.0.stored_sha256".into(), "ab".repeat(32).into())],
        ),
        (
            "a stored BLAKE3",
            vec![("artifacts.0.stored_blake3".into(), "ba".repeat(32).into())],
        ),
        (
            "a plain BLAKE3",
            vec![("artifacts.0.plain_blake3".into(), "cd".repeat(32).into())],
        ),
        (
            "a stored size",
            vec![("artifacts.0.stored_bytes".into(), 12345.into())],
        ),
        (
            "the index SHA-256",
            vec![("artifacts.1.index_sha256".into(), "ef".repeat(32).into())],
        ),
        (
            "an object count",
            vec![("artifacts.1.objects".into(), 6.into())],
        ),
    ];
    for (what, edits) in forged {
        std::fs::write(&p, &original).unwrap();
        forge_record(&p, &edits);
        verify_fails(&env, &id, &format!("forged {what}"));
    }
    std::fs::write(&p, &original).unwrap();
    verify_passes(&env, &id);
}

#[test]
fn a_damaged_object_index_fails_verification_beside_and_inside_the_archive() {
    let (tmp, env, id) = backup(true);
    let index = find(tmp.path(), "minio_", ".index.jsonl");
    let original = std::fs::read_to_string(&index).unwrap();
    let lines: Vec<&str> = original.lines().collect();
    assert_eq!(lines.len(), 5, "{original}");
    let swapped = [lines[1], lines[0], lines[2], lines[3], lines[4]].join("\n") + "\n";
    let damaged = [
        ("a line removed", lines[1..].join("\n") + "\n"),
        ("a line doubled", original.clone() + lines[4] + "\n"),
        ("two lines swapped", swapped),
        (
            "a key renamed",
            original.replacen("docs/2.txt", "docs/9.txt", 1),
        ),
        (
            "a path pointing elsewhere",
            original.replacen("\"path\":\"docs/2.txt\"", "\"path\":\"docs/3.txt\"", 1),
        ),
        (
            "a size changed",
            original.replacen("\"size\":2000", "\"size\":1999", 1),
        ),
        ("not JSON", original.replacen('{', "[", 1)),
        ("empty", String::new()),
    ];
    for (what, text) in damaged {
        assert_ne!(text, original, "{what}: the edit changed nothing");
        std::fs::write(&index, &text).unwrap();
        verify_fails(&env, &id, &format!("index beside the archive: {what}"));
    }
    std::fs::write(&index, &original).unwrap();
    verify_passes(&env, &id);

    // Inside the archive: a copy whose own index says another size, resealed with the archive's
    // real sizes and checksums, as someone with write access to the directory could.
    let archive = find(tmp.path(), "minio_", ".tar.gz");
    let x = tmp.path().join("x");
    std::fs::create_dir(&x).unwrap();
    let (xq, aq) = (shell_quote(&x), shell_quote(&archive));
    sh(&format!(
        "tar -xzf {aq} -C {xq} && sed -i 's/\"size\":2000/\"size\":1999/' {xq}/.stackback/objects.jsonl && \
         cd {xq} && tar --format=gnu -czf {aq} docs .stackback"
    ));
    std::fs::remove_dir_all(&x).unwrap();
    forge_record(
        &tmp.path().join(format!("run_{id}.json")),
        &facts(&archive, "gunzip -c").edits(1),
    );
    verify_fails(&env, &id, "index inside the archive");
}
