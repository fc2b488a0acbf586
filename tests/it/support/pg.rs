//! Throwaway PostgreSQL clusters from the machine's PostgreSQL binaries.
//!
//! [`cluster()`] is the one shared by every test that only reads the server: each such test
//! works in databases of its own, cloned from the `seeded` template. The template accepts no
//! connections, so nothing can dump it while another test clones it (PostgreSQL refuses to clone
//! a database in use). A test that stops, kills or reconfigures the server takes
//! [`Cluster::private`] instead, which is shut down and removed when dropped.
//!
//! Clusters run as the `postgres` user when the tests run as root (initdb refuses root), on
//! 127.0.0.1 with password authentication over TCP, and get SIGQUIT (immediate shutdown) when the
//! test process ends, however it ends. Data directories of dead test processes are removed by the
//! next run (and by scripts/test.sh).

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::{spawn_tied, start_on_free_port, support_file, Tied};

pub const PASSWORD: &str = "t3st-Secret-pw";
pub const ROOT_PREFIX: &str = "stackback-test-";
/// The template every test database is cloned from.
const TEMPLATE: &str = "seeded";

pub struct Cluster {
    pub port: u16,
    pub bin: PathBuf,
    pub root: PathBuf,
    server: Tied,
    private: bool,
    create_lock: Mutex<()>,
}

static CLUSTER: OnceLock<Cluster> = OnceLock::new();
static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// The shared cluster, started (and seeded) on first use.
pub fn cluster() -> &'static Cluster {
    CLUSTER.get_or_init(|| Cluster::start(true, false))
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
    /// A cluster of the calling test's own, with the sample data's template when `seeded`. It is
    /// shut down and removed when dropped.
    pub fn private(seeded: bool) -> Cluster {
        Cluster::start(seeded, true)
    }

    fn start(seeded: bool, private: bool) -> Cluster {
        let c = Cluster::try_start(private)
            .unwrap_or_else(|e| panic!("cannot start a throwaway PostgreSQL cluster: {e}"));
        if seeded {
            c.psql("postgres", &format!("CREATE DATABASE {TEMPLATE}"))
                .unwrap();
            c.psql_file(TEMPLATE, &support_file("seed.sql")).unwrap();
            // A template nobody can connect to cannot be in use when a test clones it.
            c.psql(
                "postgres",
                &format!("ALTER DATABASE {TEMPLATE} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false"),
            )
            .unwrap();
        }
        c
    }

    fn try_start(private: bool) -> Result<Cluster, String> {
        remove_stale_roots();
        let bin = pg_bin();
        let root = super::root_dir("pg");
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
        let (port, server) = start_on_free_port("postgres", |port| {
            let server = spawn_postgres(&bin, &root, port);
            wait_ready(&bin, port, &server)?;
            Ok((port, server))
        });
        Ok(Cluster {
            port,
            bin,
            root,
            server,
            private,
            create_lock: Mutex::new(()),
        })
    }

    /// Stops the server the way a crash or an operator would: `SIGQUIT` (immediate), `SIGINT`
    /// (fast), `SIGKILL`... Private clusters only.
    pub fn stop(&self, signal: i32) {
        assert!(self.private, "only a private cluster may be stopped");
        self.server.stop(signal, Duration::from_secs(30));
    }

    /// Starts a stopped private cluster again, on the same port and data (a fault is over).
    pub fn restart(&mut self) {
        assert!(self.private, "only a private cluster may be restarted");
        assert!(!self.server.alive(), "the server is still running");
        // A server stopped by SIGQUIT or SIGKILL may leave its pid file: postgres itself
        // checks that the pid in it is gone before starting.
        self.server = spawn_postgres(&self.bin, &self.root, self.port);
        wait_ready(&self.bin, self.port, &self.server)
            .unwrap_or_else(|e| panic!("the restarted server did not come up: {e}"));
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

    /// A name no other test (or test process) uses.
    pub fn unique(prefix: &str) -> String {
        format!(
            "{prefix}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        )
    }

    fn create_db(&self, prefix: &str, template: &str) -> String {
        let name = Self::unique(prefix);
        let _g = self.create_lock.lock().unwrap();
        self.psql(
            "postgres",
            &format!("CREATE DATABASE {name} TEMPLATE {template}"),
        )
        .unwrap();
        name
    }

    /// A new database holding the sample data.
    pub fn seeded_db(&self, prefix: &str) -> String {
        self.create_db(prefix, TEMPLATE)
    }

    /// A new empty database.
    pub fn empty_db(&self, prefix: &str) -> String {
        self.create_db(prefix, "template0")
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
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
                .args(["-U", "postgres", "--no-password", "--schema-only"])
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
        let sequences = self
            .psql(db, "select sequencename || ' ' || coalesce(last_value::text, 'unset') from pg_sequences where schemaname = 'public' order by 1")
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
            .chain(sequences.lines().map(|l| format!("sequence {l}")))
            .collect()
    }

    /// Both data and schema of `a` and `b` are the same.
    pub fn assert_same_data(&self, a: &str, b: &str) {
        assert_eq!(
            self.table_digests(a),
            self.table_digests(b),
            "table contents differ"
        );
        let (da, db) = (self.normalized_dump(a), self.normalized_dump(b));
        if da != db {
            let diff = da
                .lines()
                .zip(db.lines())
                .find(|(x, y)| x != y)
                .map(|(x, y)| format!("{a}: {x}\n{b}: {y}"))
                .unwrap_or_else(|| "one dump is a prefix of the other".into());
            panic!("schema or data differ between {a} and {b}:\n{diff}");
        }
    }

    /// Restores a plain dump the way the seed documents it: `gunzip -c FILE | psql`.
    pub fn restore_with_shell(&self, file: &Path, db: &str, decompress: &str) -> Output {
        let script = format!(
            "set -o pipefail; {decompress} {} | {} -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p {} -U postgres -d {db}",
            super::shell_quote(file),
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

impl Drop for Cluster {
    fn drop(&mut self) {
        // The shared cluster lives in a static and is never dropped: it dies with the process.
        if self.private {
            self.server.signal(libc::SIGQUIT);
            let deadline = Instant::now() + Duration::from_secs(10);
            while self.server.alive() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

/// The server process of the cluster under `root`, on `port`.
fn spawn_postgres(bin: &Path, root: &Path, port: u16) -> Tied {
    let mut cmd = Command::new(bin.join("postgres"));
    cmd.arg("-D")
        .arg(root.join("data"))
        .args(["-p", &port.to_string(), "-k"])
        .arg(root)
        .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
        .args(["-c", "full_page_writes=off", "-c", "synchronous_commit=off"])
        .args(["-c", "max_connections=200"]);
    as_pg(&mut cmd);
    // SIGQUIT: PostgreSQL's immediate shutdown, so no server outlives the tests.
    spawn_tied(cmd, &root.join("postgres.log"), libc::SIGQUIT)
}

fn wait_ready(bin: &Path, port: u16, server: &Tied) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ok = Command::new(bin.join("pg_isready"))
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q"])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if ok && server.alive() {
            return Ok(());
        }
        if !server.alive() {
            return Err(format!("postgres exited; log:\n{}", server.log_text()));
        }
        if Instant::now() > deadline {
            panic!(
                "postgres did not become ready in 30 s; log:\n{}",
                server.log_text()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
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
        let app = Cluster::unique("stackback_test_blocker");
        let mut child = cluster
            .psql_cmd(db)
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
        super::wait_until(
            Duration::from_secs(20),
            "the blocking session's lock",
            || {
                cluster
                .psql(
                    "postgres",
                    &format!("select count(*) from pg_locks l join pg_stat_activity a using (pid) where a.application_name = '{app}' and a.datname = '{db}' and l.mode = 'AccessExclusiveLock' and l.granted"),
                )
                .unwrap()
                    != "0"
            },
        );
        TableLock {
            cluster,
            child,
            app,
        }
    }

    /// Waits until some other session of `db` waits for a lock (pg_dump is then mid-dump).
    pub fn wait_for_waiter(&self, db: &str) {
        super::wait_until(
            Duration::from_secs(30),
            "a session waiting for the lock",
            || {
                self.cluster
                .psql("postgres", &format!("select count(*) from pg_stat_activity where datname = '{db}' and wait_event_type = 'Lock'"))
                .unwrap()
                    != "0"
            },
        );
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
