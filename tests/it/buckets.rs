//! Bucket backups and object restores through the S3 API. Each test about stackback's behaviour
//! runs against both real S3 implementations, Garage and moto ([`s3_tests!`]); every result is
//! checked with an independent client (boto3) and GNU tar.

use std::path::{Path, PathBuf};

use crate::support::fault::sha256sum;
use crate::support::s3::{
    bucket_name, garage, moto, moto_tls, noise, other, parse_dump, s3_tests, small_bucket, S3Server,
};
use crate::support::tls::TestCa;
use crate::support::*;

s3_tests!(
    bucket_round_trips_into_both_servers,
    missing_bucket_and_unreachable_endpoint_fail_clearly,
    restore_refuses_a_non_empty_bucket_unless_told_and_skips_existing,
    a_damaged_bucket_archive_fails_verify_and_is_not_restored,
    several_buckets_in_one_run,
);

pub fn env_for(db: &str, dir: &Path, s3: &S3Server, bucket: &str) -> Vec<(String, String)> {
    let mut env = cluster().env(db, dir);
    env.extend(s3.env(bucket));
    env
}

/// The one bucket archive in `dir`.
pub fn bucket_artifact(dir: &Path) -> PathBuf {
    let arts: Vec<String> = artifacts(dir)
        .into_iter()
        .filter(|f| f.starts_with("minio_") && f.ends_with(".tar.gz"))
        .collect();
    assert_eq!(arts.len(), 1, "{:?}", files(dir));
    dir.join(&arts[0])
}

/// Backs up a populated bucket on `from`, restores it into fresh buckets on `from` and on the
/// other server, and compares every object with an independent client.
fn bucket_round_trips_into_both_servers(from: &S3Server) {
    let to = other(from);
    let c = cluster();
    let db = c.seeded_db("s3");
    let src = bucket_name("src");
    from.tool(&["populate", &src, "--bulk", "1520", "--big-mib", "120"]);
    let original = from.dump(&src);
    assert!(original.len() > 1500, "{}", original.len());

    let tmp = tempfile::tempdir().unwrap();
    let env = env_for(&db, tmp.path(), from, &src);
    let r = stackback(&["run"], &env);
    assert_eq!(r.code, 0, "{}", r.all());
    let rec = only_record(tmp.path());
    assert_eq!(rec["status"], "ok");
    let kinds: Vec<&str> = rec["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["database", "objects"],
        "the database is dumped first"
    );
    let objects = rec["artifacts"][1]["objects"].as_u64().unwrap();
    assert_eq!(objects as usize, original.len());

    // The seed's manual checks, and GNU tar extracting a browsable tree.
    let archive = bucket_artifact(tmp.path());
    let (ok, out) = tool("gunzip", &["-t", archive.to_str().unwrap()]);
    assert!(ok, "gunzip -t: {out}");
    let (ok, out) = tool("tar", &["-tzf", archive.to_str().unwrap()]);
    assert!(ok, "tar -tzf: {out}");
    assert!(out.lines().any(|l| l == "nested/prefix/a/b/c.pdf"), "{out}");
    assert!(out.lines().any(|l| l == ".stackback/objects.jsonl"));
    let x = tmp.path().join("extracted");
    std::fs::create_dir(&x).unwrap();
    let (ok, out) = tool(
        "tar",
        &["-xzf", archive.to_str().unwrap(), "-C", x.to_str().unwrap()],
    );
    assert!(ok, "tar -xzf: {out}");
    assert_eq!(
        std::fs::read(x.join("unicode/\u{fc}ber/\u{6771}\u{4eac} report.pdf")).unwrap(),
        "unicode \u{fc}".as_bytes()
    );
    assert_eq!(
        std::fs::metadata(x.join("big/video.bin")).unwrap().len(),
        120 << 20
    );

    let r = stackback(&["verify"], &env);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout
            .contains(&format!("{objects} objects match the index")),
        "{}",
        r.stdout
    );

    for target in [from, to] {
        let dst = bucket_name("dst");
        let mut env = env_for(&db, tmp.path(), target, &src);
        env.retain(|(k, _)| k != "MINIO_BUCKET");
        let r = stackback(
            &[
                "restore",
                "objects",
                "latest",
                "--bucket",
                &dst,
                "--create-bucket",
                "--verify",
            ],
            &env,
        );
        assert_eq!(r.code, 0, "restore into {}: {}", target.name, r.all());
        assert!(
            r.stdout.contains(&format!("{objects} objects uploaded")),
            "{}",
            r.stdout
        );
        assert!(
            r.stdout
                .contains(&format!("{objects} objects read back and verified")),
            "{}",
            r.stdout
        );
        let restored = target.objects(&dst, "");
        let expected = parse_dump(&original, if target.name == "garage" { "/" } else { "" });
        assert_eq!(restored.len(), expected.len());
        for (a, b) in expected.iter().zip(&restored) {
            assert_eq!(
                a, b,
                "object differs after restoring {} → {}",
                from.name, target.name
            );
        }
    }
}

/// A bucket step that fails leaves a partial run whose database backup stays good. The wrong
/// secret is Garage's case only: moto accepts any credentials.
fn bucket_failures(s3: &S3Server, cases: &[(&str, &str, String, &str)]) {
    let c = cluster();
    let b = small_bucket(s3);
    for (what, var, value, hint) in cases {
        let db = c.seeded_db("s3fail");
        let tmp = tempfile::tempdir().unwrap();
        let mut env = env_for(&db, tmp.path(), s3, &b);
        env.retain(|(k, _)| k != var);
        env.push((var.to_string(), value.clone()));
        let r = stackback(&["run"], &env);
        assert_eq!(r.code, 1, "{what}: {}", r.all());
        assert!(r.stderr.contains(hint), "{what}: {}", r.stderr);
        assert!(!r.all().contains(&s3.secret_key), "{what}: secret printed");
        assert!(
            !artifacts(tmp.path())
                .iter()
                .any(|f| f.starts_with("minio_")),
            "{what}: {:?}",
            files(tmp.path())
        );
        let rec = only_record(tmp.path());
        // The database part succeeded: the run is partial, and its database backup stays usable.
        assert_eq!(rec["status"], "partial", "{what}");
        let bucket = if *var == "MINIO_BUCKET" {
            value.clone()
        } else {
            b.clone()
        };
        assert_eq!(rec["failed_step"], format!("objects:{bucket}"), "{what}");
        assert_eq!(artifacts(tmp.path()).len(), 1, "{what}");
        let v = stackback(&["verify", rec["run_id"].as_str().unwrap()], &env);
        assert_eq!(v.code, 0, "{what}: {}", v.all());
    }
}

fn missing_bucket_and_unreachable_endpoint_fail_clearly(s3: &S3Server) {
    let closed = ClosedPort::new();
    let cases = [
        (
            "missing bucket",
            "MINIO_BUCKET",
            "no-such-bucket-here".to_string(),
            "MINIO_BUCKET",
        ),
        (
            "unreachable",
            "MINIO_ENDPOINT",
            format!("http://127.0.0.1:{}", closed.port),
            "MINIO_ENDPOINT",
        ),
    ];
    bucket_failures(s3, &cases);
}

#[test]
fn a_wrong_secret_fails_clearly_on_garage() {
    let s3 = garage();
    let cases = [(
        "wrong secret",
        "MINIO_SECRET_KEY",
        "0".repeat(64),
        "MINIO_SECRET_KEY",
    )];
    bucket_failures(s3, &cases);
}

fn restore_refuses_a_non_empty_bucket_unless_told_and_skips_existing(s3: &S3Server) {
    let c = cluster();
    let db = c.seeded_db("s3refuse");
    let b = small_bucket(s3);
    let tmp = tempfile::tempdir().unwrap();
    let env = env_for(&db, tmp.path(), s3, &b);
    assert_eq!(stackback(&["run"], &env).code, 0);
    let backed_up = s3.objects(&b, "");
    // Two objects change after the backup; only one of them is under the prefix restored below.
    s3.tool(&["put", &b, "docs/1.txt", "changed after the backup"]);
    s3.tool(&["put", &b, "docs/2.txt", "changed after the backup"]);
    let changed = s3.objects(&b, "");

    let r = stackback(&["restore", "objects", "latest"], &env);
    assert_eq!(
        r.code,
        2,
        "a non-empty bucket is a usage error: {}",
        r.all()
    );
    assert!(r.stderr.contains("--overwrite"), "{}", r.stderr);
    assert_eq!(
        s3.objects(&b, ""),
        changed,
        "a refused restore wrote nothing"
    );

    let r = stackback(&["restore", "objects", "latest", "--skip-existing"], &env);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains("0 objects uploaded, 5 existing skipped"),
        "{}",
        r.stdout
    );
    assert_eq!(s3.objects(&b, ""), changed, "existing objects were kept");

    let r = stackback(
        &[
            "restore",
            "objects",
            "latest",
            "--overwrite",
            "--prefix",
            "docs/1",
        ],
        &env,
    );
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("1 objects uploaded"), "{}", r.stdout);
    let now = s3.objects(&b, "");
    let by_key =
        |v: &[serde_json::Value], k: &str| v.iter().find(|o| o["key"] == k).cloned().unwrap();
    assert_eq!(by_key(&now, "docs/1.txt"), by_key(&backed_up, "docs/1.txt"));
    assert_eq!(by_key(&now, "docs/2.txt"), by_key(&changed, "docs/2.txt"));
    assert_eq!(now.len(), 5);

    let r = stackback(
        &["restore", "objects", "latest", "--bucket", "missing-target"],
        &env,
    );
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("--create-bucket"), "{}", r.stderr);
}

fn a_damaged_bucket_archive_fails_verify_and_is_not_restored(s3: &S3Server) {
    let c = cluster();
    let db = c.seeded_db("s3dmg");
    let b = small_bucket(s3);
    let tmp = tempfile::tempdir().unwrap();
    let env = env_for(&db, tmp.path(), s3, &b);
    assert_eq!(stackback(&["run"], &env).code, 0);
    let archive = bucket_artifact(tmp.path());
    let mut bytes = std::fs::read(&archive).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    std::fs::write(&archive, bytes).unwrap();
    let r = stackback(&["verify"], &env);
    assert_eq!(r.code, 3, "{}", r.all());
    let dst = bucket_name("dmg");
    let r = stackback(
        &[
            "restore",
            "objects",
            "latest",
            "--bucket",
            &dst,
            "--create-bucket",
        ],
        &env,
    );
    assert_eq!(r.code, 3, "{}", r.all());
    assert!(r.stderr.contains("refusing to restore"), "{}", r.stderr);
}

/// moto only: the harness serves https with moto (Garage has no TLS listener of its own).
#[test]
fn https_endpoints_with_a_private_ca() {
    let c = cluster();
    let db = c.seeded_db("tls");
    let tmp = tempfile::tempdir().unwrap();
    let tls = TestCa::new(tmp.path());
    let (cert, key, ca) = (tls.cert, tls.key, tls.ca);
    let s3 = moto_tls(&cert, &key, &ca);
    let b = bucket_name("tls");
    s3.tool(&["populate", &b, "--bulk", "20"]);

    let dir = tmp.path().join("b1");
    let env = env_for(&db, &dir, &s3, &b);
    let r = stackback(&["run"], &env);
    assert_eq!(r.code, 1, "an unknown CA must be refused: {}", r.all());
    let rec = only_record(&dir);
    assert_eq!(rec["status"], "partial");
    // Refused because of the certificate, not for any other reason a connection can fail.
    let err = rec["error"].as_str().unwrap();
    assert!(err.contains("UnknownIssuer"), "{err}");

    let dir = tmp.path().join("b2");
    let mut env = env_for(&db, &dir, &s3, &b);
    env.push(("MINIO_CA_FILE".into(), ca.display().to_string()));
    let r = stackback(&["run"], &env);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(only_record(&dir)["artifacts"][1]["objects"], 36);

    env.retain(|(k, _)| k != "MINIO_CA_FILE");
    env.push(("MINIO_CA_FILE".into(), key.display().to_string()));
    let r = stackback(&["run"], &env);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("minio.ca_file"), "{}", r.stderr);
}

/// `MINIO_BUCKET=a,b`: one archive per bucket, each holding only its bucket's objects, and
/// `restore objects` puts each back into its own bucket (here on the other server).
fn several_buckets_in_one_run(s3: &S3Server) {
    let c = cluster();
    let db = c.seeded_db("multi");
    let (a, b) = (small_bucket(s3), bucket_name("second"));
    s3.tool(&["mkbucket", &b]);
    for i in 0..3 {
        s3.tool(&["put", &b, &format!("other/{i}.txt"), &noise(100 + i, 3000)]);
    }
    let tmp = tempfile::tempdir().unwrap();
    let env = env_for(&db, tmp.path(), s3, &format!("{a},{b}"));
    let r = stackback(&["run"], &env);
    assert_eq!(r.code, 0, "{}", r.all());
    let rec = only_record(tmp.path());
    let objects: Vec<(String, u64)> = rec["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["kind"] == "objects")
        .map(|x| {
            (
                x["source"].as_str().unwrap().to_string(),
                x["objects"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(objects, [(a.clone(), 5), (b.clone(), 3)]);
    for (bucket, first) in [(&a, "docs/0.txt"), (&b, "other/0.txt")] {
        let id = rec["run_id"].as_str().unwrap();
        let archive = tmp.path().join(format!("minio_{bucket}_{id}.tar.gz"));
        let (ok, listing) = tool("tar", &["-tzf", archive.to_str().unwrap()]);
        assert!(ok && listing.lines().any(|l| l == first), "{listing}");
        assert_eq!(
            listing
                .lines()
                .filter(|l| !l.starts_with(".stackback"))
                .count(),
            if bucket == &a { 5 } else { 3 },
            "{bucket}: {listing}"
        );
    }
    let r = stackback(&["verify"], &env);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("3 verified, 0 failed"), "{}", r.stdout);

    let target = other(s3);
    let mut env = env_for(&db, tmp.path(), target, "");
    env.retain(|(k, _)| k != "MINIO_BUCKET");
    let r = stackback(&["restore", "objects", "latest", "--create-bucket"], &env);
    assert_eq!(r.code, 0, "{}", r.all());
    for bucket in [&a, &b] {
        assert_eq!(
            target.objects(bucket, ""),
            s3.objects(bucket, ""),
            "{bucket}"
        );
    }
}

/// Rewrites a bucket archive with one byte of `key`'s entry changed (same size). With `strip`,
/// the index entries (inside the archive, and the returned copy for beside it) lose their
/// `blake3`, as indexes written before it were.
fn change_object(archive: &Path, key: &str, strip: bool) -> String {
    let script = r#"
import io, json, sys, tarfile
src, key, strip = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
def drop(text):
    lines = [json.loads(l) for l in text.decode().splitlines() if l]
    for l in lines:
        l.pop("blake3", None)
    return "".join(json.dumps(l) + "\n" for l in lines).encode()
out, index = io.BytesIO(), b""
with tarfile.open(src, "r:gz") as i, tarfile.open(fileobj=out, mode="w:gz", format=tarfile.GNU_FORMAT) as o:
    for m in i.getmembers():
        data = i.extractfile(m).read()
        if m.name == key:
            data = bytes([data[0] ^ 1]) + data[1:]
        if m.name == ".stackback/objects.jsonl":
            data = drop(data) if strip else data
            index = data
            m.size = len(data)
        o.addfile(m, io.BytesIO(data))
open(src, "wb").write(out.getvalue())
sys.stdout.write(index.decode())
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script, archive.to_str().unwrap(), key])
        .arg(if strip { "1" } else { "0" })
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Every object's index entry keeps its SHA-256 and its BLAKE3, as `sha256sum` and `b3sum` print
/// them. An object changed inside the archive, with the archive's own sums forged to match (so
/// only the object's sum can tell), is refused by `verify` and by a restore, naming the BLAKE3;
/// with an index from before BLAKE3 (no `blake3` field), by its SHA-256.
#[test]
fn a_changed_object_is_caught_by_the_sum_its_index_keeps() {
    let s3 = moto();
    let c = cluster();
    let db = c.seeded_db("objsum");
    let b = small_bucket(s3);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("backups");
    let env = env_for(&db, &dir, s3, &b);
    let r = stackback(&["run"], &env);
    assert_eq!(r.code, 0, "{}", r.all());
    let rec = only_record(&dir);
    let id = rec["run_id"].as_str().unwrap().to_string();
    let record = dir.join(format!("run_{id}.json"));
    let archive = bucket_artifact(&dir);
    let sidecar = dir.join(rec["artifacts"][1]["index_file"].as_str().unwrap());
    let index = std::fs::read_to_string(&sidecar).unwrap();
    let lines: Vec<serde_json::Value> = index
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5);
    for l in &lines {
        let key = l["key"].as_str().unwrap();
        let i: u64 = key
            .trim_start_matches("docs/")
            .trim_end_matches(".txt")
            .parse()
            .unwrap();
        let f = tmp.path().join("object");
        std::fs::write(&f, noise(i, 2000)).unwrap();
        assert_eq!(l["sha256"], sha256sum(&f), "{l}");
        let b3 = sh(&format!("b3sum {}", f.display()));
        assert_eq!(l["blake3"], b3.split_whitespace().next().unwrap(), "{l}");
    }

    let pristine = std::fs::read(&archive).unwrap();
    for (strip, algorithm) in [(false, "blake3"), (true, "sha256")] {
        std::fs::write(&archive, &pristine).unwrap();
        let index = change_object(&archive, "docs/1.txt", strip);
        std::fs::write(&sidecar, &index).unwrap();
        let mut edits = facts(&archive, "gunzip -c").edits(1);
        edits.push((
            "artifacts.1.index_sha256".into(),
            sha256sum(&sidecar).into(),
        ));
        forge_record(&record, &edits);
        let r = stackback(&["verify", &id], &env);
        assert_eq!(r.code, 3, "{}", r.all());
        assert!(
            r.all().contains(&format!(
                "\"docs/1.txt\" differs from the index ({algorithm} "
            )),
            "{algorithm}: {}",
            r.all()
        );
        let dst = bucket_name("objsum");
        let args = [
            "restore",
            "objects",
            &id,
            "--bucket",
            &dst,
            "--create-bucket",
        ];
        let r = stackback(&args, &env);
        assert_eq!(r.code, 3, "{}", r.all());
        assert!(
            r.all()
                .contains(&format!("object \"docs/1.txt\": {algorithm} ")),
            "{algorithm}: {}",
            r.all()
        );
        // Whatever landed before the refusal is intact, and the changed object did not land.
        let source = s3.objects(&b, "");
        for o in s3.objects(&dst, "") {
            assert_ne!(
                o["key"], "docs/1.txt",
                "{algorithm}: the changed object landed"
            );
            assert!(
                source.contains(&o),
                "{algorithm}: {o} differs from the source"
            );
        }
    }
}
