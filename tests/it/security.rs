//! Security (issue 13, deliver 4): secrets never in logs, errors, `config`, alert payloads,
//! `install --dry-run` output or a child's argv (read from /proc while pg_dump, pg_dumpall and
//! psql run); files 0600 and directories 0700 under umask 000; TLS verification on for every
//! https endpoint (S3, webhook, heartbeat, Pushgateway) with an unknown CA.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::fault::*;
use crate::support::notify::{spawn_reporting_port, Receiver};
use crate::support::s3::{bucket_name, moto, moto_tls, small_bucket};
use crate::support::tls::TestCa;
use crate::support::*;

/// Every descendant of `pid` seen while `child` runs, by argv, until it exits.
fn watch_descendants(child: &mut std::process::Child) -> (std::process::ExitStatus, Vec<String>) {
    let mut seen: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let mut stack = vec![child.id()];
        while let Some(p) = stack.pop() {
            for (c, argv) in children(p) {
                // Between fork and exec a child still shows stackback's own argv (what the
                // test typed): only programs stackback starts are under test.
                if argv.starts_with(env!("CARGO_BIN_EXE_stackback")) {
                    continue;
                }
                if !seen.contains(&argv) {
                    seen.push(argv);
                }
                stack.push(c);
            }
        }
        if let Some(s) = child.try_wait().unwrap() {
            return (s, seen);
        }
        assert!(Instant::now() < deadline, "still running: {seen:?}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn no_password_in_the_argv_of_pg_dump_pg_dumpall_or_psql() {
    let c = cluster();
    let db = c.seeded_db("argv");
    let tmp = tempfile::tempdir().unwrap();
    let env = with(c.env(&db, tmp.path()), &[("BACKUP_GLOBALS", "true")]);
    // The dump waits for this lock, so its argv is there to read for as long as the test wants.
    let lock = TableLock::hold(c, &db, "orders");
    let mut child = stackback_cmd(&["run"], &env)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    lock.wait_for_waiter(&db);
    drop(lock);
    let (status, seen) = watch_descendants(&mut child);
    assert!(status.success(), "{seen:?}");
    assert!(
        seen.iter()
            .any(|a| a.contains("pg_dump") && a.contains("--format")),
        "the dump was not seen: {seen:?}"
    );
    assert!(seen.iter().any(|a| a.contains("pg_dumpall")), "{seen:?}");
    // A restore to a URL that carries the password: psql gets it from its environment.
    let target = crate::support::pg::Cluster::unique("argvrestore");
    let url = format!(
        "postgres://postgres:{PASSWORD}@127.0.0.1:{}/{target}",
        c.port
    );
    let mut child = stackback_cmd(
        &["restore", "db", "latest", "--target-url", &url, "--create"],
        &env,
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let (status, restore_seen) = watch_descendants(&mut child);
    assert!(status.success(), "{restore_seen:?}");
    assert!(
        restore_seen.iter().any(|a| a.contains("psql")),
        "psql was not seen: {restore_seen:?}"
    );
    for argv in seen.iter().chain(&restore_seen) {
        assert!(!argv.contains(PASSWORD), "a password in argv: {argv}");
    }
}

#[test]
fn secrets_never_appear_in_output_logs_records_alerts_or_dry_runs() {
    let c = cluster();
    let s3 = moto();
    let good = small_bucket(s3);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("b");
    let hook = Receiver::start();
    let beat = Receiver::start();
    let closed = ClosedPort::new();
    let secrets = [
        PASSWORD,
        "Minio-S3cret-Mark9",
        "Tok3n-Hook-Mark9",
        "Tok3n-Beat-Mark9",
        "Smtp-Pw-Mark9",
        "Pgw-Pw-Mark9",
    ];
    let mut env = c.env(&c.seeded_db("secrets"), &dir);
    env.extend(s3.env(&format!("{good},{}", bucket_name("missing"))));
    let env = with(
        env,
        &[
            // moto takes any secret key: the backup of the good bucket works with this one.
            ("MINIO_SECRET_KEY", secrets[1]),
            (
                "BACKUP_ALERT_WEBHOOK_URL",
                &hook.url(&format!("/hook/{}", secrets[2])),
            ),
            (
                "BACKUP_HEARTBEAT_URL",
                &beat.url(&format!("/hb/{}", secrets[3])),
            ),
            ("BACKUP_ALERT_EMAIL", "ops@example.com"),
            ("SMTP_HOST", "127.0.0.1"),
            ("SMTP_PORT", &closed.port.to_string()),
            ("SMTP_USER", "ops"),
            ("SMTP_PASSWORD", secrets[4]),
            ("SMTP_TLS", "none"),
            (
                "BACKUP_PUSHGATEWAY_URL",
                &format!("http://pgw:{}@127.0.0.1:{}", secrets[5], closed.port),
            ),
            ("BACKUP_ALERT_ON", "always"),
        ],
    );
    let mut said = Vec::new();
    // A partial run (one bucket missing): errors, warnings for the failed email and push.
    for flags in [vec!["run"], vec!["-v", "--log-format", "json", "run"]] {
        let r = stackback(&flags, &env);
        assert_eq!(r.code, 1, "{}", r.all());
        said.push(r.all());
    }
    let r = stackback(
        &["run"],
        &with(env.clone(), &[("POSTGRES_PASSWORD", "Wr0ng-Mark9")]),
    );
    assert_eq!(r.code, 1, "{}", r.all());
    said.push(r.all());
    for args in [
        vec!["config"],
        vec!["status", "--json"],
        vec!["list", "--json"],
        vec!["verify", "--all"],
        vec!["alert", "test"],
        vec!["install", "systemd", "--dry-run"],
        vec!["install", "cron", "--dry-run"],
        vec!["prune", "--dry-run"],
    ] {
        said.push(format!("{args:?}: {}", stackback(&args, &env).all()));
    }
    let alerts = hook.wait_for(4);
    assert!(beat.wait_for(3).len() >= 3);
    for a in &alerts {
        said.push(format!("alert body: {}", a["body"]));
    }
    for f in files(&dir) {
        let bytes = std::fs::read(dir.join(&f)).unwrap_or_default();
        if f.starts_with("run_") || f.ends_with(".index.jsonl") || f.starts_with('.') {
            said.push(format!("{f}: {}", String::from_utf8_lossy(&bytes)));
        }
    }
    for text in &said {
        for s in secrets.iter().chain(&["Wr0ng-Mark9"]) {
            assert!(!text.contains(s), "the secret {s} leaked:\n{text}");
        }
    }
}

/// Every file under `dir` is 0600 and every directory 0700.
fn assert_private(dir: &Path) {
    assert_eq!(mode(dir), 0o700, "{}", dir.display());
    for f in files(dir) {
        let p = dir.join(&f);
        let m = std::fs::symlink_metadata(&p).unwrap();
        if m.is_dir() {
            assert_private(&p);
        } else {
            assert_eq!(mode(&p), 0o600, "{} is {:o}", p.display(), mode(&p));
        }
    }
}

#[test]
fn files_are_0600_and_directories_0700_under_umask_000() {
    let c = cluster();
    let s3 = moto();
    let b = small_bucket(s3);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("new/backups");
    let mut env = c.env(&c.seeded_db("umask"), &dir);
    env.extend(s3.env(&b));
    env.push(("BACKUP_GLOBALS".into(), "true".into()));
    let umask0 = |args: &[&str]| {
        let mut cmd = stackback_cmd(args, &env);
        unsafe {
            cmd.pre_exec(|| {
                libc::umask(0);
                Ok(())
            });
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    umask0(&["run"]);
    umask0(&["run", "--compression", "zstd"]);
    umask0(&["prune"]);
    assert_private(&dir);
    // What a restore writes for the operator holds the same data: private too.
    let dump = tmp.path().join("dump.sql");
    umask0(&[
        "restore",
        "db",
        "latest",
        "--to-file",
        dump.to_str().unwrap(),
    ]);
    assert_eq!(
        mode(&dump),
        0o600,
        "restore --to-file wrote {:o}",
        mode(&dump)
    );
}

/// An https receiver with a certificate of `ca`, which no client trusts; logs requests it gets.
fn https_receiver(ca: &TestCa, root: &Path) -> (u16, std::path::PathBuf) {
    let script = root.join("https_receiver.py");
    std::fs::write(
        &script,
        r#"
import json, os, ssl, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
portfile, log, cert, key = sys.argv[1:5]
class H(BaseHTTPRequestHandler):
    def any(self):
        n = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(n).decode("utf-8", "replace")
        with open(log, "a") as f:
            f.write(json.dumps({"path": self.path, "body": body}) + "\n")
        self.send_response(200); self.send_header("content-length", "0"); self.end_headers()
    do_GET = do_POST = do_PUT = any
    def log_message(self, *a): pass
s = ThreadingHTTPServer(("127.0.0.1", 0), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain(cert, key)
s.socket = ctx.wrap_socket(s.socket, server_side=True)
open(portfile + ".tmp", "w").write(str(s.server_address[1])); os.rename(portfile + ".tmp", portfile)
s.serve_forever()
"#,
    )
    .unwrap();
    let log = root.join("https.jsonl");
    let args = [log.as_path(), ca.cert.as_path(), ca.key.as_path()];
    let (port, _) = spawn_reporting_port("https", root, script.to_str().unwrap(), &args);
    (port, log)
}

#[test]
fn tls_is_verified_for_every_https_endpoint() {
    let c = cluster();
    let tmp = tempfile::tempdir().unwrap();
    let ca = TestCa::new(tmp.path());
    let (port, log) = https_receiver(&ca, tmp.path());
    // The server is reachable and answers https: with its CA trusted, curl gets through.
    let (ok, out) = tool(
        "curl",
        &[
            "-sf",
            "--cacert",
            ca.ca.to_str().unwrap(),
            &format!("https://127.0.0.1:{port}/probe"),
        ],
    );
    assert!(ok, "{out}");
    let url = |p: &str| format!("https://127.0.0.1:{port}{p}");
    let env = with(
        c.env(&c.seeded_db("tls"), &tmp.path().join("b")),
        &[
            ("BACKUP_ALERT_WEBHOOK_URL", &url("/hook")),
            ("BACKUP_HEARTBEAT_URL", &url("/hb")),
            ("BACKUP_PUSHGATEWAY_URL", &url("")),
        ],
    );
    let r = stackback(&["alert", "test"], &env);
    assert_eq!(r.code, 1, "an untrusted webhook was accepted: {}", r.all());
    assert!(
        r.all().to_lowercase().contains("certificate"),
        "{}",
        r.all()
    );
    let r = stackback(&["run"], &env);
    assert_eq!(r.code, 0, "the backup itself is fine: {}", r.all());
    for what in ["heartbeat", "pushgateway"] {
        assert!(
            r.stderr
                .lines()
                .any(|l| l.to_lowercase().contains(what) && l.contains("failed")),
            "no {what} failure reported: {}",
            r.stderr
        );
    }
    let heartbeat = r.stderr.lines().find(|l| l.contains("heartbeat")).unwrap();
    assert!(
        heartbeat.to_lowercase().contains("certificate"),
        "{heartbeat}"
    );
    let got = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(got.lines().count(), 1, "requests got through TLS: {got}");

    // S3 on https with a CA nobody was told about (the relay itself is moto).
    let s3 = moto_tls(&ca.cert, &ca.key, &ca.ca);
    let b = bucket_name("tls");
    s3.tool(&["mkbucket", &b]);
    s3.tool(&["put", &b, "a.txt", "abc"]);
    let mut s3env = c.env(&c.seeded_db("tls3"), &tmp.path().join("b3"));
    s3env.extend(s3.env(&b));
    let r = stackback(&["run"], &s3env);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.all().to_lowercase().contains("certificate") || r.all().contains("UnknownIssuer"),
        "{}",
        r.all()
    );
    assert_eq!(only_record(&tmp.path().join("b3"))["status"], "partial");
}

/// A push refused for its certificate says so, as the webhook and the heartbeat do: "error
/// sending request" alone sends the operator looking at the network.
#[test]
fn a_pushgateway_refused_for_its_certificate_says_so() {
    let c = cluster();
    let tmp = tempfile::tempdir().unwrap();
    let ca = TestCa::new(tmp.path());
    let (port, _log) = https_receiver(&ca, tmp.path());
    let env = with(
        c.env(&c.seeded_db("tlspush"), &tmp.path().join("b")),
        &[(
            "BACKUP_PUSHGATEWAY_URL",
            &format!("https://127.0.0.1:{port}"),
        )],
    );
    let r = stackback(&["run"], &env);
    assert_eq!(r.code, 0, "{}", r.all());
    let line = r
        .stderr
        .lines()
        .find(|l| l.contains("pushgateway") && l.contains("failed"))
        .unwrap_or_else(|| panic!("no push failure reported: {}", r.stderr));
    assert!(line.to_lowercase().contains("certificate"), "{line}");
}
