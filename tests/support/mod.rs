//! Test harness: a throwaway PostgreSQL cluster per test binary, helpers to run the `stackback`
//! binary with a clean environment, and independent checks (psql, pg_dump, gunzip) of results.
//!
//! The cluster is started on first use from the machine's PostgreSQL binaries, as the `postgres`
//! user when the tests run as root (initdb refuses root), on a free 127.0.0.1 port with password
//! authentication over TCP. The postmaster is spawned from a thread that lives as long as the test
//! process and gets SIGQUIT when that process ends (PR_SET_PDEATHSIG), so no server outlives the
//! tests; data directories of dead test processes are removed by the next run (and by
//! scripts/test.sh). If the cluster cannot start, the test panics: a missing service is a failure.

#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

pub const PASSWORD: &str = "t3st-Secret-pw";
const ROOT_PREFIX: &str = "stackback-test-";

pub struct Cluster {
    pub port: u16,
    pub bin: PathBuf,
    pub root: PathBuf,
    create_lock: Mutex<()>,
}

static CLUSTER: OnceLock<Cluster> = OnceLock::new();
static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// The shared cluster of this test binary, started (and seeded) on first use.
pub fn cluster() -> &'static Cluster {
    CLUSTER.get_or_init(|| {
        Cluster::start()
            .unwrap_or_else(|e| panic!("cannot start the throwaway PostgreSQL cluster: {e}"))
    })
}

/// The newest installed PostgreSQL server's bin directory.
pub fn pg_bin() -> PathBuf {
    let mut best: Option<(u32, PathBuf)> = None;
    if let Ok(rd) = std::fs::read_dir("/usr/lib/postgresql") {
        for e in rd.flatten() {
            let v: u32 = match e.file_name().to_string_lossy().parse() {
                Ok(v) => v,
                Err(_) => continue,
            };
            let bin = e.path().join("bin");
            if bin.join("initdb").exists() && best.as_ref().is_none_or(|(b, _)| v > *b) {
                best = Some((v, bin));
            }
        }
    }
    best.map(|b| b.1).expect(
        "no PostgreSQL server under /usr/lib/postgresql: run scripts/test.sh, which installs it",
    )
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

/// uid and gid of the `postgres` user.
fn postgres_ids() -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    for line in passwd.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.first() == Some(&"postgres") {
            return (f[2].parse().unwrap(), f[3].parse().unwrap());
        }
    }
    panic!("no postgres user: install the postgresql package (scripts/test.sh does)");
}

/// Spawns a server that gets `signal` when the test process ends, however it ends
/// (PR_SET_PDEATHSIG). Its output goes to `log`.
pub fn spawn_tied(mut cmd: Command, log: &Path, signal: i32) {
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
    std::thread::spawn(move || {
        let r = cmd.spawn().map(|mut c| {
            std::thread::spawn(move || {
                let _ = c.wait();
            });
        });
        tx.send(r.map_err(|e| e.to_string())).unwrap();
        loop {
            std::thread::park();
        }
    });
    rx.recv()
        .unwrap()
        .unwrap_or_else(|e| panic!("cannot start the server logging to {}: {e}", log.display()));
}

/// Runs `cmd` as the postgres user when we are root.
fn as_pg(cmd: &mut Command) -> &mut Command {
    if is_root() {
        let (uid, gid) = postgres_ids();
        cmd.uid(uid).gid(gid);
    }
    cmd
}

fn chown_pg(path: &Path) {
    if is_root() {
        let (uid, gid) = postgres_ids();
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
    }
}

/// Removes data directories left by test processes that no longer exist.
fn remove_stale_roots() {
    let Ok(rd) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(ROOT_PREFIX) else {
            continue;
        };
        let pid = rest.split('-').next().unwrap_or("");
        if !pid.is_empty() && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

fn run_ok(cmd: &mut Command, what: &str) -> Result<Output, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("{what}: cannot start: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(out)
}

impl Cluster {
    fn start() -> Result<Cluster, String> {
        remove_stale_roots();
        let bin = pg_bin();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let root =
            std::env::temp_dir().join(format!("{ROOT_PREFIX}{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&root).map_err(|e| e.to_string())?;
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
        chown_pg(&root);
        let pwfile = root.join("pwfile");
        std::fs::write(&pwfile, PASSWORD).unwrap();
        chown_pg(&pwfile);
        let data = root.join("data");
        run_ok(
            as_pg(
                Command::new(bin.join("initdb"))
                    .arg("-D")
                    .arg(&data)
                    .args(["-U", "postgres", "-E", "UTF8", "--no-locale", "--no-sync"])
                    .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
                    .arg(format!("--pwfile={}", pwfile.display())),
            ),
            "initdb",
        )?;

        let port = free_port();
        let mut cmd = Command::new(bin.join("postgres"));
        cmd.arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-k"])
            .arg(&root)
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .args(["-c", "full_page_writes=off", "-c", "synchronous_commit=off"])
            .args(["-c", "max_connections=100"]);
        as_pg(&mut cmd);
        // SIGQUIT: PostgreSQL's immediate shutdown, so no server outlives the tests.
        spawn_tied(cmd, &root.join("postgres.log"), libc::SIGQUIT);

        let c = Cluster {
            port,
            bin,
            root,
            create_lock: Mutex::new(()),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = Command::new(c.bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q"])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                break;
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(c.root.join("postgres.log")).unwrap_or_default();
                return Err(format!("server did not become ready in 30 s; log:\n{log}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        c.psql("postgres", "CREATE DATABASE seeded")?;
        let seed = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/seed.sql");
        c.psql_file("seeded", &seed)?;
        Ok(c)
    }

    fn psql_cmd(&self, db: &str) -> Command {
        let mut cmd = Command::new(self.bin.join("psql"));
        cmd.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .args(["-U", "postgres", "-d", db])
            .env("PGPASSWORD", PASSWORD)
            .env_remove("PGSERVICE");
        cmd
    }

    /// Runs SQL, returns unaligned tuples-only output.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String, String> {
        let out = run_ok(
            self.psql_cmd(db).args(["-tA", "-c", sql]),
            &format!("psql {sql:?}"),
        )?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    pub fn psql_file(&self, db: &str, file: &Path) -> Result<String, String> {
        let out = run_ok(self.psql_cmd(db).arg("-f").arg(file), "psql -f")?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn unique(prefix: &str) -> String {
        format!(
            "{prefix}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        )
    }

    /// A new database holding the sample data.
    pub fn seeded_db(&self, prefix: &str) -> String {
        let name = Self::unique(prefix);
        let _g = self.create_lock.lock().unwrap();
        self.psql(
            "postgres",
            &format!("CREATE DATABASE {name} TEMPLATE seeded"),
        )
        .unwrap();
        name
    }

    /// A new empty database.
    pub fn empty_db(&self, prefix: &str) -> String {
        let name = Self::unique(prefix);
        let _g = self.create_lock.lock().unwrap();
        self.psql(
            "postgres",
            &format!("CREATE DATABASE {name} TEMPLATE template0"),
        )
        .unwrap();
        name
    }

    /// The seed's environment variables pointing at `db`.
    pub fn env(&self, db: &str, backup_dir: &Path) -> Vec<(String, String)> {
        vec![
            ("POSTGRES_HOST".into(), "127.0.0.1".into()),
            ("POSTGRES_PORT".into(), self.port.to_string()),
            ("POSTGRES_USER".into(), "postgres".into()),
            ("POSTGRES_PASSWORD".into(), PASSWORD.into()),
            ("POSTGRES_DB".into(), db.into()),
            ("BACKUP_DIR".into(), backup_dir.display().to_string()),
        ]
    }

    /// Schema of `db` as pg_dump prints it, minus lines that differ between any two dumps
    /// (comments, psql's per-dump \restrict key). Data is compared by [`Cluster::table_digests`],
    /// since row order on disk may legitimately differ after a restore.
    pub fn normalized_dump(&self, db: &str) -> String {
        let out = run_ok(
            Command::new(self.bin.join("pg_dump"))
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    "postgres",
                    "--no-password",
                ])
                .arg("--schema-only")
                .arg(db)
                .env("PGPASSWORD", PASSWORD),
            "pg_dump for comparison",
        )
        .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| {
                !l.starts_with("--")
                    && !l.starts_with("\\restrict")
                    && !l.starts_with("\\unrestrict")
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Row count and md5 of every table's rows in a stable order: a check independent of pg_dump.
    pub fn table_digests(&self, db: &str) -> Vec<String> {
        let tables = self
            .psql(
                db,
                "select tablename from pg_tables where schemaname = 'public' order by 1",
            )
            .unwrap();
        tables
            .lines()
            .map(|t| {
                let d = self
                    .psql(
                        db,
                        &format!("select count(*) || ' ' || coalesce(md5(string_agg(x::text, '|' order by x::text)), '-') from {t} x"),
                    )
                    .unwrap();
                format!("{t}: {d}")
            })
            .chain(
                self.psql(db, "select sequencename || ' ' || coalesce(last_value::text, 'unset') from pg_sequences where schemaname = 'public' order by 1")
                    .unwrap()
                    .lines()
                    .map(|l| format!("sequence {l}"))
                    .collect::<Vec<_>>(),
            )
            .collect()
    }

    /// Restores a plain dump the way the seed documents it: `gunzip -c FILE | psql`.
    pub fn restore_with_shell(&self, file: &Path, db: &str, decompress: &str) -> Output {
        let script = format!(
            "set -o pipefail; {decompress} {} | {} -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p {} -U postgres -d {db}",
            shell_quote(file),
            self.bin.join("psql").display(),
            self.port
        );
        Command::new("bash")
            .args(["-c", &script])
            .env("PGPASSWORD", PASSWORD)
            .output()
            .unwrap()
    }
}

pub fn shell_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
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

/// Parses the one run record in `dir` (panics unless exactly one).
pub fn only_record(dir: &Path) -> serde_json::Value {
    let recs: Vec<String> = files(dir)
        .into_iter()
        .filter(|f| f.starts_with("run_"))
        .collect();
    assert_eq!(recs.len(), 1, "expected one run record, found {recs:?}");
    serde_json::from_slice(&std::fs::read(dir.join(&recs[0])).unwrap()).unwrap()
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

pub fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// A session holding an exclusive lock on a table, so a pg_dump that needs it waits mid-dump.
/// Dropping it ends the session on the server (killing psql alone would leave it sleeping).
pub struct TableLock<'a> {
    cluster: &'a Cluster,
    child: std::process::Child,
    /// Unique per lock, so dropping one never ends another test's blocking session.
    app: String,
}

impl<'a> TableLock<'a> {
    pub fn hold(cluster: &'a Cluster, db: &str, table: &str) -> TableLock<'a> {
        use std::io::Write;
        let app = format!(
            "stackback-test-blocker-{}",
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let mut child = Command::new(cluster.bin.join("psql"))
            .args([
                "-X",
                "-q",
                "-h",
                "127.0.0.1",
                "-p",
                &cluster.port.to_string(),
                "-U",
                "postgres",
                "-d",
                db,
            ])
            .env("PGPASSWORD", PASSWORD)
            .env("PGAPPNAME", &app)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let stdin = child.stdin.as_mut().unwrap();
        writeln!(
            stdin,
            "BEGIN; LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(120);"
        )
        .unwrap();
        stdin.flush().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let held = cluster
                .psql(
                    "postgres",
                    &format!("select count(*) from pg_locks l join pg_stat_activity a using (pid) where a.application_name = '{app}' and a.datname = '{db}' and l.mode = 'AccessExclusiveLock' and l.granted"),
                )
                .unwrap();
            if held != "0" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the blocking session never got its lock"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        TableLock {
            cluster,
            child,
            app,
        }
    }

    /// Waits until some other session of `db` waits for a lock (pg_dump is then mid-dump).
    pub fn wait_for_waiter(&self, db: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let n = self
                .cluster
                .psql("postgres", &format!("select count(*) from pg_stat_activity where datname = '{db}' and wait_event_type = 'Lock'"))
                .unwrap();
            if n != "0" {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "nothing started waiting for the lock"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for TableLock<'_> {
    fn drop(&mut self) {
        let _ = self.cluster.psql(
            "postgres",
            &format!("select pg_terminate_backend(pid) from pg_stat_activity where application_name = '{}'", self.app),
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn list_json(env: &[(String, String)]) -> serde_json::Value {
    let r = stackback(&["list", "--json"], env);
    assert_eq!(r.code, 0, "{}", r.all());
    serde_json::from_str(&r.stdout).unwrap()
}

/// `list` agrees with the directory: every artifact it calls present exists, and every artifact
/// file on disk is either named by a run or listed as unmanaged.
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
    let unmanaged: Vec<String> = l["unmanaged"]
        .as_array()
        .unwrap()
        .iter()
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

pub mod notify;
pub mod s3;
