//! The parallel gzip path (issue 12) end to end: a dump large enough for several gzip members,
//! read by tools we did not write (`gzip -t`, `gunzip -c | psql`, Python's zlib counting the
//! members) and by `stackback verify`, which must also catch damage inside a later member; and a
//! bucket of incompressible objects (the stored-block fast path) restored byte for byte.

use std::path::Path;

use crate::buckets::{bucket_artifact, env_for};
use crate::support::s3::{bucket_name, garage, parse_dump};
use crate::support::*;

/// Gzip members in `file`, counted by Python's zlib (one decompressor per member).
fn gzip_members(file: &Path) -> Vec<u64> {
    let script = "import sys, zlib\n\
        data = open(sys.argv[1], 'rb').read()\n\
        while data:\n\
        \x20   d = zlib.decompressobj(31)\n\
        \x20   out = d.decompress(data)\n\
        \x20   assert d.eof, 'a member is cut short'\n\
        \x20   print(len(out))\n\
        \x20   data = d.unused_data\n";
    let out = python3().args(["-c", script]).arg(file).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.parse().unwrap())
        .collect()
}

#[test]
fn a_dump_of_several_gzip_members_restores_with_gunzip_and_psql_and_verifies() {
    let c = cluster();
    let db = c.empty_db("mm");
    // About 9 MB of plain SQL: nine 1 MiB members and a partial one.
    c.psql(
        &db,
        "CREATE TABLE wide (id int PRIMARY KEY, body text, doc jsonb);
         INSERT INTO wide SELECT g, repeat(md5(g::text), 3) || ' row ' || g,
           jsonb_build_object('n', g, 'tag', 't' || g % 17)
         FROM generate_series(1, 60000) g;",
    )
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let env = c.env(&db, tmp.path());
    let r = stackback(&["run"], &env);
    assert_eq!(r.code, 0, "{}", r.all());
    let dump = tmp.path().join(&artifacts(tmp.path())[0]);
    assert!(dump.to_str().unwrap().ends_with(".sql.gz"));

    let members = gzip_members(&dump);
    assert!(members.len() >= 5, "{members:?}");
    assert!(members[..members.len() - 1].iter().all(|&m| m == 1 << 20));
    let rec = only_record(tmp.path());
    assert_eq!(
        members.iter().sum::<u64>(),
        rec["artifacts"][0]["plain_bytes"].as_u64().unwrap()
    );
    let (ok, out) = tool("gzip", &["-t", dump.to_str().unwrap()]);
    assert!(ok, "gzip -t: {out}");
    let plain = facts(&dump, "gunzip -c");
    assert_eq!(
        plain.plain_blake3,
        rec["artifacts"][0]["plain_blake3"].as_str().unwrap()
    );

    // The seed's recipe restores it.
    let copy = c.empty_db("mmcopy");
    let out = c.restore_with_shell(&dump, &copy, "gunzip -c");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    c.assert_same_data(&db, &copy);

    let r = stackback(&["verify", "latest"], &env);
    assert_eq!(r.code, 0, "{}", r.all());

    // A record of schema 2 keeps the plain side's SHA-256 instead of BLAKE3: verify checks that
    // one, computed here by coreutils, and fails on a wrong one.
    let record = tmp.path().join(
        files(tmp.path())
            .into_iter()
            .find(|f| f.starts_with("run_") && f.ends_with(".json"))
            .unwrap(),
    );
    let current = std::fs::read(&record).unwrap();
    let plain_sha = sh(&format!("gunzip -c {} | sha256sum", shell_quote(&dump)));
    let plain_sha = plain_sha.split_whitespace().next().unwrap().to_string();
    // A schema-3 record keeps BLAKE3: one holding only a SHA-256 was written by no build.
    for (schema, sum, want) in [
        (2, plain_sha.clone(), 0),
        (2, "ab".repeat(32), 3),
        (3, plain_sha.clone(), 3),
    ] {
        forge_record(
            &record,
            &[
                ("schema", schema.into()),
                ("artifacts.0.plain_blake3", serde_json::Value::Null),
                ("artifacts.0.plain_sha256", sum.clone().into()),
            ],
        );
        let r = stackback(&["verify", "latest"], &env);
        assert_eq!(
            r.code,
            want,
            "schema {schema}, plain sha256 {sum}: {}",
            r.all()
        );
        std::fs::write(&record, &current).unwrap();
    }

    // One flipped bit inside the third member's deflate data: gzip and we both refuse it.
    let mut bytes = std::fs::read(&dump).unwrap();
    let third = {
        // Members are laid out back to back; their stored sizes come from Python too.
        let script = "import sys, zlib\n\
            data = open(sys.argv[1], 'rb').read(); at = 0\n\
            for _ in range(2):\n\
            \x20   d = zlib.decompressobj(31); d.decompress(data[at:]); at = len(data) - len(d.unused_data)\n\
            print(at)\n";
        let out = python3().args(["-c", script]).arg(&dump).output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<usize>()
            .unwrap()
    };
    bytes[third + 200] ^= 0x10;
    std::fs::write(&dump, &bytes).unwrap();
    let (ok, _) = tool("gzip", &["-t", dump.to_str().unwrap()]);
    assert!(!ok, "gzip -t accepted a damaged member");
    let r = stackback(&["verify", "latest"], &env);
    assert_eq!(r.code, 3, "{}", r.all());
    assert!(r.stdout.contains("FAIL"), "{}", r.stdout);
}

#[test]
fn incompressible_objects_are_stored_and_restore_byte_for_byte() {
    let s3 = garage();
    let c = cluster();
    let db = c.seeded_db("mmb");
    let src = bucket_name("noise");
    s3.tool(&["mkbucket", &src]);
    let tmp = tempfile::tempdir().unwrap();
    // 3 MiB of random bytes (stored blocks) beside 3 MiB of text (deflated).
    let random = tmp.path().join("random.jpg");
    std::fs::write(
        &random,
        (0..3u64 << 20)
            .scan(0x9e37_79b9_7f4a_7c15u64, |x, _| {
                *x ^= *x << 13;
                *x ^= *x >> 7;
                *x ^= *x << 17;
                Some(*x as u8)
            })
            .collect::<Vec<u8>>(),
    )
    .unwrap();
    let text = tmp.path().join("text.txt");
    std::fs::write(&text, "lorem ipsum dolor sit amet\n".repeat(3 << 20 >> 5)).unwrap();
    s3.tool(&["putfile", &src, "img/random.jpg", random.to_str().unwrap()]);
    s3.tool(&["putfile", &src, "doc/text.txt", text.to_str().unwrap()]);
    let original = s3.dump(&src);

    let dir = tmp.path().join("backups");
    let env = env_for(&db, &dir, s3, &src);
    let r = stackback(&["run"], &env);
    assert_eq!(r.code, 0, "{}", r.all());
    let archive = bucket_artifact(&dir);
    let stored = std::fs::metadata(&archive).unwrap().len();
    // The random object is stored (it cannot shrink) and the text shrinks: about 3 MiB in all.
    assert!(stored > 3 << 20, "{stored}");
    assert!(stored < (3 << 20) + (1 << 19), "{stored}");
    let (ok, out) = tool("tar", &["-tzf", archive.to_str().unwrap()]);
    assert!(ok, "tar -tzf: {out}");
    assert!(out.lines().any(|l| l == "img/random.jpg"), "{out}");

    let dst = bucket_name("noisecopy");
    let mut renv = env.clone();
    renv.retain(|(k, _)| k != "MINIO_BUCKET");
    let r = stackback(
        &[
            "restore",
            "objects",
            "latest",
            "--bucket",
            &dst,
            "--create-bucket",
        ],
        &renv,
    );
    assert_eq!(r.code, 0, "{}", r.all());
    // Bytes, by an independent client. (Content types are left aside: an object uploaded with
    // none comes back as application/octet-stream, which the AWS SDK sends by default.)
    let facts = |v: Vec<serde_json::Value>| -> Vec<(String, u64, String)> {
        v.into_iter()
            .map(|o| {
                (
                    o["key"].as_str().unwrap().to_string(),
                    o["size"].as_u64().unwrap(),
                    o["sha256"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    assert_eq!(
        facts(s3.objects(&dst, "")),
        facts(parse_dump(&original, "/"))
    );
}
