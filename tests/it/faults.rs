//! Bucket operations through the fault-injecting proxy (support/proxy.rs) in front of a real S3
//! server: what stackback does when the bytes on the wire are wrong, late or cut. The proxy is
//! first checked on its own, with curl, so a failure below is stackback's and not the harness's.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::buckets::env_for;
use crate::support::proxy::{Fault, Gate, Proxy, Rule};
use crate::support::s3::{bucket_name, moto, noise, s3_tests, small_bucket, S3Server};
use crate::support::*;

s3_tests!(
    restore_objects_verify_finds_a_mismatch,
    an_object_deleted_between_listing_and_fetching_is_skipped_not_fatal,
);

/// `curl URL` through the proxy: (curl's exit code, body, seconds taken).
fn curl(url: &str) -> (i32, Vec<u8>, f64) {
    let t0 = Instant::now();
    let out = Command::new("curl")
        .args(["-s", "--max-time", "30", url])
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        out.stdout,
        t0.elapsed().as_secs_f64(),
    )
}

#[test]
fn the_fault_proxy_does_what_it_says() {
    let s3 = moto();
    let b = small_bucket(s3);
    let original = noise(0, 2000).into_bytes();
    let proxy = Proxy::start(&s3.endpoint);
    // moto refuses anonymous GETs: sign the URL for the proxy's address.
    let url = s3
        .tool_via(&proxy.url(), &["presign", &b, "docs/0.txt"])
        .trim()
        .to_string();
    let key = format!("/{b}/docs/0.txt");
    let rule = |fault| Rule::new(Some("GET"), &key, fault).times(1);

    let (code, body, _) = curl(&url);
    assert_eq!((code, body), (0, original.clone()), "passes through");
    proxy.add(rule(Fault::Status(503)));
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", &url])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "503");
    assert_eq!(curl(&url).1, original, "a rule with times(1) applies once");

    proxy.add(rule(Fault::Reset));
    let (code, body, _) = curl(&url);
    assert!(
        matches!(code, 52 | 56) && body.is_empty(),
        "reset: curl {code}"
    );

    proxy.add(rule(Fault::ResetAfter(100)));
    let (code, body, _) = curl(&url);
    assert!(
        code != 0 && body.len() == 100,
        "cut: curl {code}, {} bytes",
        body.len()
    );

    proxy.add(rule(Fault::CorruptBody));
    let (code, body, _) = curl(&url);
    assert_eq!(code, 0);
    assert_eq!(body.len(), original.len());
    assert_eq!(
        body.iter().zip(&original).filter(|(a, b)| a != b).count(),
        1
    );

    proxy.add(rule(Fault::Delay(Duration::from_millis(700))));
    let (code, body, secs) = curl(&url);
    assert!(
        code == 0 && body == original && secs >= 0.7,
        "delay: {secs} s"
    );

    proxy.add(rule(Fault::Throttle(4000)));
    let (code, body, secs) = curl(&url);
    assert!(
        code == 0 && body == original && secs >= 0.4,
        "throttle: {secs} s"
    );

    let gate = Gate::new();
    proxy.add(rule(Fault::Hold(gate.clone())));
    let held = std::thread::spawn({
        let url = url.clone();
        move || curl(&url)
    });
    gate.wait_reached(1, Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(200));
    assert!(!held.is_finished(), "the held request was answered");
    gate.open();
    assert_eq!(held.join().unwrap().1, original);

    let seen = proxy.seen();
    assert_eq!(seen.len(), 9, "{seen:?}");
    assert_eq!(seen[1].status, 503);
    assert_eq!(seen[3].status, 0, "the reset request got no status");
}

/// The objects are uploaded intact, but the read-back of one of them is corrupted on the wire:
/// `--verify` must catch it (exit 3), and name the object.
fn restore_objects_verify_finds_a_mismatch(s3: &S3Server) {
    let c = cluster();
    let db = c.seeded_db("rverify");
    let b = small_bucket(s3);
    let tmp = tempfile::tempdir().unwrap();
    let env = env_for(&db, tmp.path(), s3, &b);
    assert_eq!(stackback(&["run"], &env).code, 0);

    let proxy = Proxy::start(&s3.endpoint);
    let dst = bucket_name("rverify");
    proxy.add(Rule::new(
        Some("GET"),
        &format!("/{dst}/docs/3.txt"),
        Fault::CorruptBody,
    ));
    let endpoint = proxy.url();
    let args = [
        "restore",
        "objects",
        "latest",
        "--bucket",
        &dst,
        "--create-bucket",
        "--verify",
        "--endpoint",
        &endpoint,
    ];
    let r = stackback(&args, &env);
    assert_eq!(r.code, 3, "{}", r.all());
    assert!(
        r.stderr.contains(&format!(
            "object \"docs/3.txt\" in bucket {dst} reads back with blake3"
        )),
        "{}",
        r.stderr
    );
    // What the server holds is intact: the mismatch was on the way back, and verify saw it.
    assert_eq!(s3.objects(&dst, ""), s3.objects(&b, ""));
    assert!(proxy
        .seen()
        .iter()
        .any(|s| s.method == "GET" && s.target.contains("docs/3.txt") && s.fault.is_some()));

    // Without the fault the same restore verifies.
    proxy.clear();
    let r = stackback(&[&args[..], &["--overwrite"]].concat(), &env);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains("5 objects read back and verified"),
        "{}",
        r.stdout
    );
}

/// The proxy holds the GET of one listed object until the test has deleted it on the server, so
/// the object disappears between listing and fetching every time, not when timing allows.
fn an_object_deleted_between_listing_and_fetching_is_skipped_not_fatal(s3: &S3Server) {
    let c = cluster();
    let db = c.seeded_db("gone");
    let b = small_bucket(s3);
    let victim = "docs/3.txt";
    let proxy = Proxy::start(&s3.endpoint);
    let gate = Gate::new();
    proxy.add(Rule::new(
        Some("GET"),
        &format!("/{b}/{victim}"),
        Fault::Hold(gate.clone()),
    ));
    let tmp = tempfile::tempdir().unwrap();
    let env = with(
        env_for(&db, tmp.path(), s3, &b),
        &[("MINIO_ENDPOINT", &proxy.url())],
    );
    let child = stackback_cmd(&["run"], &env)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    gate.wait_reached(1, Duration::from_secs(60));
    s3.tool(&["delete", &b, victim]);
    gate.open();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rec = only_record(tmp.path());
    assert_eq!(rec["status"], "ok");
    let art = &rec["artifacts"][1];
    assert_eq!(art["skipped"], serde_json::json!([victim]), "{rec}");
    assert_eq!(art["objects"], 4);
    assert!(
        rec["warnings"][0].as_str().unwrap().contains(victim),
        "{rec}"
    );
    let r = stackback(&["verify"], &env);
    assert_eq!(r.code, 0, "{}", r.all());
}
