//! Volume mode (`MINIO_DATA_DIR`): the data directory is tarred instead of read through S3, and
//! `restore volume` extracts it, never outside the target directory.

use std::path::Path;

use crate::buckets::bucket_artifact;
use crate::support::s3::noise;
use crate::support::*;

/// A volume-mode backup of a small MinIO-like data directory: (tmp, env, data dir, run id).
fn volume_backup() -> (
    tempfile::TempDir,
    Vec<(String, String)>,
    std::path::PathBuf,
    String,
) {
    let c = cluster();
    let db = c.seeded_db("vol");
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("minio-data");
    std::fs::create_dir_all(data.join("schedgen-pdfs/a")).unwrap();
    std::fs::write(data.join("schedgen-pdfs/a/xl.meta"), noise(3, 5000)).unwrap();
    std::fs::write(data.join("top.txt"), "top").unwrap();
    let dir = tmp.path().join("backups");
    let env = with(
        c.env(&db, &dir),
        &[
            ("MINIO_DATA_DIR", data.to_str().unwrap()),
            ("MINIO_BUCKET", "schedgen-pdfs"),
        ],
    );
    let r = stackback(&["run"], &env);
    assert_eq!(r.code, 0, "{}", r.all());
    let id = only_record(&dir)["run_id"].as_str().unwrap().to_string();
    (tmp, env, data, id)
}

fn restore(env: &[(String, String)], into: &Path, force: bool) -> Run {
    let mut args = vec![
        "restore",
        "volume",
        "latest",
        "--into",
        into.to_str().unwrap(),
    ];
    if force {
        args.push("--force");
    }
    stackback(&args, env)
}

/// `diff -r`: the two trees hold the same files with the same bytes.
fn assert_same_tree(a: &Path, b: &Path) {
    let (ok, out) = tool("diff", &["-r", a.to_str().unwrap(), b.to_str().unwrap()]);
    assert!(ok, "the trees differ:\n{out}");
}

#[test]
fn volume_mode_tars_the_data_directory_and_restores_it() {
    let (tmp, env, data, _) = volume_backup();
    let archive = bucket_artifact(&tmp.path().join("backups"));
    assert!(archive
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("minio_schedgen-pdfs_"));
    let (ok, out) = tool("tar", &["-tzf", archive.to_str().unwrap()]);
    assert!(ok && out.contains("schedgen-pdfs/a/xl.meta"), "{out}");
    assert!(out.lines().any(|l| l == "top.txt"), "{out}");

    let into = tmp.path().join("restored");
    let r = restore(&env, &into, false);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_same_tree(&data, &into);

    // A non-empty target needs --force; with it, the backup's files replace what is there (and
    // files the backup does not hold are left alone).
    std::fs::write(into.join("top.txt"), "changed since").unwrap();
    std::fs::write(into.join("schedgen-pdfs/a/xl.meta"), "changed too").unwrap();
    let r = restore(&env, &into, false);
    assert_eq!(r.code, 2, "a non-empty target needs --force: {}", r.all());
    assert_eq!(
        std::fs::read_to_string(into.join("top.txt")).unwrap(),
        "changed since",
        "a refused restore wrote nothing"
    );
    std::fs::write(into.join("extra.txt"), "mine").unwrap();
    let r = restore(&env, &into, true);
    assert_eq!(r.code, 0, "{}", r.all());
    std::fs::remove_file(into.join("extra.txt")).unwrap();
    assert_same_tree(&data, &into);
}

/// A tar entry: name, kind (`file` or `symlink`), content or link target.
type Entry<'a> = (&'a str, &'a str, &'a str);

/// Builds a tar.gz with Python's tarfile (not our code): `entries` are (name, kind, payload), kind
/// `file` (payload: content) or `symlink` (payload: target).
fn craft_archive(path: &Path, entries: &[Entry]) {
    let spec = serde_json::to_string(entries).unwrap();
    let script = r#"
import io, json, sys, tarfile
with tarfile.open(sys.argv[1], "w:gz") as t:
    for name, kind, payload in json.loads(sys.argv[2]):
        info = tarfile.TarInfo(name)
        if kind == "symlink":
            info.type, info.linkname = tarfile.SYMTYPE, payload
            t.addfile(info)
        else:
            data = payload.encode()
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
"#;
    let out = python3()
        .args(["-c", script, path.to_str().unwrap(), &spec])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Archives that try to write outside the target: `..`, an absolute path, and a file through a
/// symlink that points out. Each is put in place of a real volume backup (its record resealed to
/// match, as an attacker with write access to the backup directory could), so only the extraction
/// itself stands between the entry and the file system.
#[test]
fn restore_volume_never_writes_outside_the_target() {
    let (tmp, env, _, id) = volume_backup();
    let dir = tmp.path().join("backups");
    let archive = bucket_artifact(&dir);
    let outside = tmp.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let abs = outside.join("absolute.txt");
    let cases: [(&str, Vec<Entry>); 3] = [
        (
            "dot-dot",
            vec![
                ("fine.txt", "file", "inside"),
                ("../outside/dotdot.txt", "file", "escaped"),
            ],
        ),
        ("absolute", vec![(abs.to_str().unwrap(), "file", "escaped")]),
        (
            "symlink",
            vec![
                ("link", "symlink", outside.to_str().unwrap()),
                ("link/through-link.txt", "file", "escaped"),
            ],
        ),
    ];
    for (what, entries) in cases {
        craft_archive(&archive, &entries);
        forge_record(
            &dir.join(format!("run_{id}.json")),
            &facts(&archive, "gunzip -c").edits(1),
        );
        let into = tmp.path().join(format!("into-{what}"));
        let r = restore(&env, &into, false);
        assert_eq!(
            files(&outside),
            Vec::<String>::new(),
            "{what}: an entry was written outside the target: {}",
            r.all()
        );
        match what {
            // An absolute name is taken relative to the target, as GNU tar does.
            "absolute" => {
                assert_eq!(r.code, 0, "{what}: {}", r.all());
                let inside = into.join(abs.strip_prefix("/").unwrap());
                assert_eq!(std::fs::read_to_string(inside).unwrap(), "escaped");
            }
            "dot-dot" => {
                assert_eq!(r.code, 3, "{what}: {}", r.all());
                assert!(r.stderr.contains("outside the target"), "{}", r.stderr);
            }
            _ => {
                assert_eq!(r.code, 1, "{what}: {}", r.all());
                assert!(r.stderr.contains("cannot extract"), "{}", r.stderr);
            }
        }
    }
}
