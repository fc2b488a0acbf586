//! Volume mode (`MINIO_DATA_DIR`): the data directory is tarred instead of read through S3, and
//! `restore volume` extracts it.

use crate::buckets::bucket_artifact;
use crate::support::s3::noise;
use crate::support::*;

#[test]
fn volume_mode_tars_the_data_directory_and_restores_it_inside_the_target_only() {
    let c = cluster();
    let db = c.seeded_db("vol");
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("minio-data");
    std::fs::create_dir_all(data.join("schedgen-pdfs/a")).unwrap();
    std::fs::write(data.join("schedgen-pdfs/a/xl.meta"), noise(3, 5000)).unwrap();
    std::fs::write(data.join("top.txt"), "top").unwrap();
    let dir = tmp.path().join("backups");
    let mut env = c.env(&db, &dir);
    env.push(("MINIO_DATA_DIR".into(), data.display().to_string()));
    env.push(("MINIO_BUCKET".into(), "schedgen-pdfs".into()));
    let r = stackback(&["run"], &env);
    assert_eq!(r.code, 0, "{}", r.all());
    let archive = bucket_artifact(&dir);
    assert!(archive
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("minio_schedgen-pdfs_"));
    let (ok, out) = tool("tar", &["-tzf", archive.to_str().unwrap()]);
    assert!(ok && out.contains("schedgen-pdfs/a/xl.meta"), "{out}");

    let into = tmp.path().join("restored");
    let r = stackback(
        &[
            "restore",
            "volume",
            "latest",
            "--into",
            into.to_str().unwrap(),
        ],
        &env,
    );
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(
        std::fs::read_to_string(into.join("schedgen-pdfs/a/xl.meta")).unwrap(),
        noise(3, 5000)
    );
    let r = stackback(
        &[
            "restore",
            "volume",
            "latest",
            "--into",
            into.to_str().unwrap(),
        ],
        &env,
    );
    assert_eq!(r.code, 2, "a non-empty target needs --force: {}", r.all());
    let r = stackback(
        &[
            "restore",
            "volume",
            "latest",
            "--into",
            into.to_str().unwrap(),
            "--force",
        ],
        &env,
    );
    assert_eq!(r.code, 0, "{}", r.all());
}
