//! Test harness: runs the `stackback` binary with a clean environment, starts real services that
//! die with the test process, and checks results with tools stackback did not write.
//!
//! - [`pg`]: throwaway PostgreSQL clusters (one shared, private ones for tests that stop or
//!   reconfigure the server).
//! - [`s3`]: Garage and moto, and the macro that runs one bucket test against both.
//! - [`garage_cluster`]: a three-node Garage cluster (replication factor 3), one per test.
//! - [`notify`]: SMTP, webhook receiver, Pushgateway.
//! - [`proxy`]: a fault-injecting HTTP proxy to put in front of a server.
//! - [`tls`]: a throwaway CA and a server certificate it signed.
//! - [`fault`]: what every fault scenario asserts (alerts, earlier backups, nothing good added).
//!
//! A service that cannot start makes the test fail, never skip.

#![allow(dead_code)]

pub mod fault;
pub mod garage_cluster;
pub mod notify;
pub mod pg;
pub mod proxy;
pub mod s3;
pub mod tls;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use pg::{cluster, TableLock, PASSWORD};

/// A file of the repository's test support directory.
pub fn support_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/it/support")
        .join(name)
}

/// The result of running the binary.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn all(&self) -> String {
        format!("stdout:\n{}\nstderr:\n{}", self.stdout, self.stderr)
    }
}

/// Runs `stackback ARGS` with exactly `env` (plus PATH and HOME): nothing leaks from the caller.
pub fn stackback(args: &[&str], env: &[(String, String)]) -> Run {
    let out = stackback_cmd(args, env).output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

pub fn stackback_cmd(args: &[&str], env: &[(String, String)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_stackback"));
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env(
            "HOME",
            std::env::var("HOME").unwrap_or_else(|_| "/root".into()),
        )
        .env("RUST_LOG", "info")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// `env` with each of `extra` set, replacing an earlier value of the same name.
pub fn with(mut env: Vec<(String, String)>, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    for (k, v) in extra {
        env.retain(|(ek, _)| ek != k);
        env.push((k.to_string(), v.to_string()));
    }
    env
}

/// Files in a directory, sorted (hidden ones included).
pub fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Artifact files (what an operator would take for backups): no records, no hidden files.
pub fn artifacts(dir: &Path) -> Vec<String> {
    files(dir)
        .into_iter()
        .filter(|f| !f.starts_with('.') && !f.starts_with("run_"))
        .collect()
}

/// Every run record in `dir`, oldest first; an unparseable one fails the test.
pub fn records(dir: &Path) -> Vec<serde_json::Value> {
    files(dir)
        .into_iter()
        .filter(|f| f.starts_with("run_") && f.ends_with(".json"))
        .map(|f| {
            let bytes = std::fs::read(dir.join(&f)).unwrap();
            serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                panic!(
                    "{f} is not JSON ({e}): {:?}",
                    String::from_utf8_lossy(&bytes)
                )
            })
        })
        .collect()
}

/// Parses the one run record in `dir` (panics unless exactly one).
pub fn only_record(dir: &Path) -> serde_json::Value {
    let recs = records(dir);
    assert_eq!(recs.len(), 1, "expected one run record in {:?}", files(dir));
    recs.into_iter().next().unwrap()
}

/// A tmpfs mounted for the test's lifetime (root only: the suite runs as root in CI).
pub struct Mount {
    pub path: PathBuf,
}

impl Mount {
    pub fn tmpfs(path: &Path, options: &str) -> Mount {
        std::fs::create_dir_all(path).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(path)
            .output()
            .expect("mount(8) must exist");
        assert!(
            out.status.success(),
            "mounting a tmpfs failed (these tests need root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Mount {
            path: path.to_path_buf(),
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Runs a program we did not write and returns whether it succeeded, with its output.
pub fn tool(cmd: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// `bash -c SCRIPT`, which must succeed; its stdout.
pub fn sh(script: &str) -> String {
    let out = Command::new("bash")
        .args(["-c", &format!("set -euo pipefail; {script}")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn shell_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

pub fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

pub fn wait_until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn list_json(env: &[(String, String)]) -> serde_json::Value {
    let r = stackback(&["list", "--json"], env);
    assert_eq!(r.code, 0, "{}", r.all());
    serde_json::from_str(&r.stdout).unwrap()
}

/// `list` agrees with the directory: every artifact it calls present exists, and every artifact
/// file on disk is either named by a run or listed as unmanaged or as a leftover.
pub fn assert_list_matches_disk(dir: &Path, env: &[(String, String)]) {
    let l = list_json(env);
    let mut named = Vec::new();
    for r in l["runs"].as_array().unwrap() {
        for a in r["artifacts"].as_array().unwrap() {
            let f = a["file"].as_str().unwrap();
            assert_eq!(a["present"].as_bool().unwrap(), dir.join(f).exists(), "{f}");
            named.push(f.to_string());
        }
    }
    // Unmanaged files, and leftovers (a killed run's finished file its record does not name).
    let unmanaged: Vec<String> = ["unmanaged", "temp_files"]
        .iter()
        .flat_map(|k| l[*k].as_array().unwrap())
        .map(|f| f["file"].as_str().unwrap().to_string())
        .collect();
    for f in artifacts(dir) {
        if f.ends_with(".index.jsonl") {
            continue;
        }
        assert!(
            named.contains(&f) || unmanaged.contains(&f),
            "{f} is on disk but not listed"
        );
    }
    let records = files(dir).iter().filter(|f| f.starts_with("run_")).count();
    assert_eq!(l["totals"]["runs"].as_u64().unwrap() as usize, records);
}

/// A free 127.0.0.1 port, for servers that cannot bind port 0 and report it. Another process can
/// take it before the server binds it: starters retry with a new port when the server dies.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A server process tied to the test process (it gets `signal` when the test process ends,
/// however it ends: PR_SET_PDEATHSIG).
pub struct Tied {
    pub pid: u32,
    exited: Arc<AtomicBool>,
    pub log: PathBuf,
}

impl Tied {
    pub fn alive(&self) -> bool {
        !self.exited.load(Ordering::SeqCst)
    }

    pub fn signal(&self, sig: i32) {
        if self.alive() {
            unsafe {
                libc::kill(self.pid as i32, sig);
            }
        }
    }

    /// Signals the process and waits until it has exited.
    pub fn stop(&self, sig: i32, within: Duration) {
        self.signal(sig);
        wait_until(within, "the server to exit", || !self.alive());
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Spawns a server whose output goes to `log`.
pub fn spawn_tied(mut cmd: Command, log: &Path, signal: i32) -> Tied {
    let f = std::fs::File::create(log).unwrap();
    cmd.stdin(Stdio::null())
        .stdout(f.try_clone().unwrap())
        .stderr(f);
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, signal) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    // PDEATHSIG fires when the spawning *thread* ends: spawn from one that never does.
    let (tx, rx) = std::sync::mpsc::channel();
    let exited = Arc::new(AtomicBool::new(false));
    let ex = exited.clone();
    std::thread::spawn(move || {
        match cmd.spawn() {
            Ok(mut c) => {
                tx.send(Ok(c.id())).unwrap();
                std::thread::spawn(move || {
                    let _ = c.wait();
                    ex.store(true, Ordering::SeqCst);
                });
            }
            Err(e) => tx.send(Err(e.to_string())).unwrap(),
        }
        loop {
            std::thread::park();
        }
    });
    let pid = rx
        .recv()
        .unwrap()
        .unwrap_or_else(|e| panic!("cannot start the server logging to {}: {e}", log.display()));
    Tied {
        pid,
        exited,
        log: log.to_path_buf(),
    }
}

/// Waits until `port` accepts connections. `Err` when the server died first (typically: the port
/// was taken in the meantime), so the caller can retry on another port.
pub fn wait_port(port: u16, server: &Tied, what: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if !server.alive() {
            return Err(format!("{what} exited; log:\n{}", server.log_text()));
        }
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            panic!(
                "{what} did not listen on {port} within 60 s; log:\n{}",
                server.log_text()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts a server on a free port, retrying on another port when it dies before listening.
pub fn start_on_free_port<T>(what: &str, mut start: impl FnMut(u16) -> Result<T, String>) -> T {
    let mut last = String::new();
    for _ in 0..5 {
        match start(free_port()) {
            Ok(t) => return t,
            Err(e) => last = e,
        }
    }
    panic!("{what} could not start on any of 5 ports: {last}");
}

/// A directory for one server's files, removed by scripts/test.sh once this process is gone.
pub fn root_dir(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let root = std::env::temp_dir().join(format!(
        "{}{}-{name}-{nanos}",
        pg::ROOT_PREFIX,
        std::process::id()
    ));
    std::fs::create_dir_all(&root).unwrap();
    root
}

/// The Python virtual environment that scripts/lib.sh installs the Python test tools into (moto,
/// boto3, aiosmtpd, PyYAML, hadolint): `$STACKBACK_VENV`, else `$XDG_CACHE_HOME/stackback-venv`,
/// else `~/.cache/stackback-venv`. The same rule as lib.sh's.
pub fn venv_dir() -> PathBuf {
    if let Some(v) = std::env::var_os("STACKBACK_VENV").filter(|v| !v.is_empty()) {
        return PathBuf::from(v);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| home_dir().join(".cache"));
    cache.join("stackback-venv")
}

fn home_dir() -> PathBuf {
    PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into()))
}

/// A `python3` command for the support scripts that import boto3, aiosmtpd or PyYAML: the
/// virtual environment's interpreter when it exists, else `python3` from PATH (where a missing
/// module makes the script, and so the test, fail).
pub fn python3() -> Command {
    let venv = venv_dir().join("bin/python3");
    Command::new(if venv.is_file() {
        venv
    } else {
        PathBuf::from("python3")
    })
}

/// A program from the Python test tools' virtual environment, PATH or ~/.cargo/bin, in that
/// order. Panics (the test fails) when it is in none of them.
pub fn find_binary(name: &str) -> PathBuf {
    let venv = venv_dir().join("bin").join(name);
    if venv.is_file() {
        return venv;
    }
    if let Ok(p) = std::env::var("PATH") {
        for d in std::env::split_paths(&p) {
            if d.join(name).is_file() {
                return d.join(name);
            }
        }
    }
    let cargo = home_dir().join(".cargo/bin").join(name);
    if cargo.is_file() {
        return cargo;
    }
    panic!("{name} is not installed: scripts/test.sh installs it (see scripts/lib.sh)");
}

/// Sets fields of a run record (dotted paths: `artifacts.0.stored_sha256`) and recomputes its
/// self-checksum as docs/run-record.md documents it: what a forger, or a careless hand, would do.
pub fn forge_record<S: AsRef<str>>(path: &Path, edits: &[(S, serde_json::Value)]) {
    let mut cmd = python3();
    cmd.arg(support_file("record.py")).arg(path);
    for (field, value) in edits {
        cmd.arg(field.as_ref()).arg(value.to_string());
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "record.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Size, SHA-256 and BLAKE3 of a file and size and BLAKE3 of its decompressed content, by
/// coreutils, `b3sum` and `decompress`.
pub struct Facts {
    pub stored_bytes: u64,
    pub stored_sha256: String,
    pub stored_blake3: String,
    pub plain_bytes: u64,
    pub plain_blake3: String,
}

pub fn facts(file: &Path, decompress: &str) -> Facts {
    let f = shell_quote(file);
    let sha = |cmd: String| sh(&cmd).split_whitespace().next().unwrap().to_string();
    let size = |cmd: String| sh(&cmd).trim().parse::<u64>().unwrap();
    Facts {
        stored_bytes: size(format!("wc -c < {f}")),
        stored_sha256: sha(format!("sha256sum {f}")),
        stored_blake3: sha(format!("b3sum {f}")),
        plain_bytes: size(format!("{decompress} {f} | wc -c")),
        plain_blake3: sha(format!("{decompress} {f} | b3sum")),
    }
}

impl Facts {
    /// The record edits that make artifact `i` describe this file.
    pub fn edits(&self, i: usize) -> Vec<(String, serde_json::Value)> {
        vec![
            (
                format!("artifacts.{i}.stored_bytes"),
                self.stored_bytes.into(),
            ),
            (
                format!("artifacts.{i}.stored_sha256"),
                self.stored_sha256.clone().into(),
            ),
            (
                format!("artifacts.{i}.stored_blake3"),
                self.stored_blake3.clone().into(),
            ),
            (
                format!("artifacts.{i}.plain_bytes"),
                self.plain_bytes.into(),
            ),
            (
                format!("artifacts.{i}.plain_blake3"),
                self.plain_blake3.clone().into(),
            ),
        ]
    }
}

/// `env` plus libfaketime (Debian's `faketime` package), so stackback and its children see the
/// clock `spec` gives, in FAKETIME's syntax: `@2020-01-01 00:00:00` starts the clock there (it
/// ticks on), `-3d` shifts it back three days. Timers keep the real monotonic clock.
pub fn faked_clock(env: &[(String, String)], spec: &str) -> Vec<(String, String)> {
    let lib = std::fs::read_dir("/usr/lib")
        .unwrap()
        .flatten()
        .map(|e| e.path().join("faketime/libfaketime.so.1"))
        .find(|p| p.exists())
        .expect("libfaketime is not installed: scripts/test.sh installs Debian's faketime");
    with(
        env.to_vec(),
        &[
            ("LD_PRELOAD", lib.to_str().unwrap()),
            ("FAKETIME", spec),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ],
    )
}

/// A 127.0.0.1 port bound by this guard but never listened on: connecting to it is refused, and no
/// other process can start listening there while the guard lives (a port from [`free_port`] could
/// be taken by another test's server in between, and answer).
pub struct ClosedPort {
    fd: i32,
    pub port: u16,
}

impl ClosedPort {
    pub fn new() -> ClosedPort {
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
            assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
            let mut addr: libc::sockaddr_in = std::mem::zeroed();
            addr.sin_family = libc::AF_INET as libc::sa_family_t;
            addr.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
            let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            let rc = libc::bind(fd, &addr as *const _ as *const libc::sockaddr, len);
            assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
            let mut got: libc::sockaddr_in = std::mem::zeroed();
            let mut got_len = len;
            libc::getsockname(fd, &mut got as *mut _ as *mut libc::sockaddr, &mut got_len);
            ClosedPort {
                fd,
                port: u16::from_be(got.sin_port),
            }
        }
    }
}

impl Drop for ClosedPort {
    fn drop(&mut self) {
        unsafe {
            libc::close(self.fd);
        }
    }
}
