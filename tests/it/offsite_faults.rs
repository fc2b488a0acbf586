//! Off-site copies under faults of the remote itself: a distributed object store losing a node
//! mid-upload, and an upload cut mid-way. Helpers are offsite.rs's.

use crate::offsite::{lose_and_restore, s3_remote};
use crate::support::garage_cluster::GarageCluster;
use crate::support::proxy::{Fault, Proxy, Rule};
use crate::support::s3::{bucket_name, garage, moto};
use crate::support::*;

/// The remote is a three-node Garage cluster (replication factor 3). One node, not the one
/// stackback talks to, is frozen (SIGSTOP: a hung node, the harder case than a dead one, whose
/// connections stay open) while the bucket's 200 MiB archive is on its way; two of three nodes are
/// Garage's write quorum, so the run still copies, checks and exits 0, and a host that lost its
/// backup directory restores from the two nodes left.
#[test]
fn s3_remote_three_node_garage_cluster_with_a_node_frozen_mid_upload() {
    let remote = GarageCluster::start();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("backups");
    let c = cluster();
    let db = c.seeded_db("ha");
    let bucket = bucket_name("ha");
    moto().tool(&["populate", &bucket, "--bulk", "20", "--big-mib", "200"]);
    let original = moto().dump(&bucket);
    let rbucket = bucket_name("ha-remote");
    let mut env = with(
        c.env(&db, &dir),
        // Uncompressed: the archive stays 200 MiB, long enough on the wire to stop a node in it.
        &[("BACKUP_COMPRESSION", "none")],
    );
    env.extend(moto().env(&bucket));
    env.extend(s3_remote(&remote.s3, &rbucket, "cluster/host1"));

    let out = tmp.path().join("run.out");
    let err = tmp.path().join("run.err");
    let mut child = stackback_cmd(&["run"], &env)
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    // Node 0 holds a replica of every block, so its data directory grows with the upload.
    let started = std::time::Instant::now();
    let stored_at_stop = loop {
        let stored = remote.data_bytes(0);
        if stored >= 16 << 20 {
            break stored;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before the upload reached the cluster: {}{}",
            std::fs::read_to_string(&out).unwrap(),
            std::fs::read_to_string(&err).unwrap()
        );
        assert!(
            started.elapsed() < std::time::Duration::from_secs(300),
            "no upload reached the cluster within 5 minutes"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    remote.nodes[2].server.signal(libc::SIGSTOP);
    assert!(
        stored_at_stop < 150 << 20,
        "the node was stopped too late to be mid-upload ({stored_at_stop} bytes already stored)"
    );
    let status = child.wait().unwrap();
    let stdout = std::fs::read_to_string(&out).unwrap();
    let stderr = std::fs::read_to_string(&err).unwrap();
    assert_eq!(status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("1 run(s) copied and checked"), "{stdout}");
    // The frozen node got only what it had before the stop: the copy is on the other two.
    assert!(
        remote.data_bytes(2) < remote.data_bytes(1),
        "node 2 was frozen, yet holds as much as node 1"
    );
    let rec = only_record(&dir);
    let objects = remote.s3.objects(&rbucket, "");
    for a in rec["artifacts"].as_array().unwrap() {
        let key = format!("cluster/host1/{}", a["file"].as_str().unwrap());
        let o = objects
            .iter()
            .find(|o| o["key"] == key)
            .unwrap_or_else(|| panic!("{key} not on the cluster: {objects:#?}"));
        assert_eq!(o["sha256"], a["stored_sha256"], "{o:#}");
    }
    lose_and_restore(&env, &db, &bucket, &original, garage());
}

/// The bucket's archive as its run record names it, and the record's file name.
fn archive_and_record(rec: &serde_json::Value) -> (String, String) {
    let archive = rec["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["file"].as_str().unwrap().to_string())
        .find(|f| f.starts_with("minio_"))
        .unwrap_or_else(|| panic!("no bucket archive in {rec:#}"));
    (
        archive,
        format!("run_{}.json", rec["run_id"].as_str().unwrap()),
    )
}

/// Uploads of the bucket's archive to an S3 remote cut mid-body by a proxy (the server gets a
/// part of the body, then a reset). Cut every time: exit 5, the local backup intact, and on the
/// remote (seen by boto3) nothing under the archive's name, no record, no multipart upload left
/// open, and `list --remote` shows no run: a half object never counts as a copy. Cut twice: the
/// retries carry the run to exit 0 and the catch-up copies the earlier run too.
#[test]
fn upload_cut_mid_way_is_retried_and_never_counts_as_a_copy() {
    let s3 = garage();
    let proxy = Proxy::start(&s3.endpoint);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("backups");
    let c = cluster();
    let db = c.seeded_db("cut");
    let bucket = bucket_name("cut");
    moto().tool(&["populate", &bucket, "--bulk", "20", "--big-mib", "20"]);
    let rbucket = bucket_name("cut-remote");
    // Uncompressed, the 20 MiB archive goes up as a multipart upload of several parts.
    let mut env = with(c.env(&db, &dir), &[("BACKUP_COMPRESSION", "none")]);
    env.extend(moto().env(&bucket));
    env.extend(s3_remote(s3, &rbucket, "h"));
    let env = with(env, &[("BACKUP_REMOTE_ENDPOINT", &proxy.url())]);
    let cut = || Rule::new(Some("PUT"), "/minio_", Fault::CutUpload(1 << 20));
    let cuts = |p: &Proxy| p.seen().iter().filter(|s| s.fault.is_some()).count();

    proxy.add(cut());
    let r = stackback(&["run"], &env);
    assert_eq!(r.code, 5, "{}", r.all());
    assert!(r.stderr.contains("off-site copy failed"), "{}", r.stderr);
    assert!(cuts(&proxy) > 0, "no upload was cut: {:#?}", proxy.seen());
    let first = only_record(&dir);
    assert_eq!(first["status"], "ok");
    let v = stackback(&["verify", "latest"], &env);
    assert_eq!(v.code, 0, "the local backup is intact: {}", v.all());
    let (archive, record) = archive_and_record(&first);
    let keys: Vec<String> = s3
        .objects(&rbucket, "")
        .iter()
        .map(|o| o["key"].as_str().unwrap().to_string())
        .collect();
    assert!(
        !keys.contains(&format!("h/{archive}")),
        "a cut upload shows under its final name: {keys:?}"
    );
    assert!(
        !keys.contains(&format!("h/{record}")),
        "the record went up without its archive: {keys:?}"
    );
    assert_eq!(
        s3.tool(&["uploads", &rbucket]),
        "",
        "a failed multipart upload is left open on the remote (its parts are kept and billed)"
    );
    let r = stackback(&["list", "--remote", "--json"], &env);
    assert_eq!(r.code, 0, "{}", r.all());
    let l: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(l["runs"], serde_json::json!([]), "{l:#}");

    // Two cuts, then the uploads go through: the retries carry the run.
    proxy.clear();
    proxy.add(cut().times(2));
    let before = cuts(&proxy);
    let r = stackback(&["run"], &env);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(cuts(&proxy) - before, 2, "{:#?}", proxy.seen());
    assert!(
        r.stdout.contains("2 run(s) copied and checked"),
        "{}",
        r.stdout
    );
    let objects = s3.objects(&rbucket, "");
    for rec in records(&dir) {
        for a in rec["artifacts"].as_array().unwrap() {
            let key = format!("h/{}", a["file"].as_str().unwrap());
            let o = objects
                .iter()
                .find(|o| o["key"] == key)
                .unwrap_or_else(|| panic!("{key} not on the remote: {objects:#?}"));
            assert_eq!(o["sha256"], a["stored_sha256"], "{o:#}");
        }
    }
    assert_eq!(s3.tool(&["uploads", &rbucket]), "");
    let r = stackback(&["list", "--remote", "--json"], &env);
    let l: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let runs = l["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "{l:#}");
    assert!(runs.iter().all(|r| r["complete"] == true), "{l:#}");
    let r = stackback(&["verify", "--remote", "--all"], &env);
    assert_eq!(r.code, 0, "{}", r.all());
}
