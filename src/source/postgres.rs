//! PostgreSQL: finding the right client tools, asking the server its version, and running pg_dump
//! / pg_dumpall as byte streams.
//!
//! Connection settings reach the children only through `PG*` environment variables (PGPASSWORD
//! included), never argv, so `ps` shows no secret. pg_dump is chosen among PG_DUMP_PATH, every
//! `/usr/lib/postgresql/<major>/bin` and `PATH`: the lowest major version that is at least the
//! server's (a newer pg_dump can emit settings an older server rejects on restore), else an error
//! that names the version needed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::process::Command;

use crate::config::PostgresConfig;
use crate::error::{Error, PgCause, Result};

/// One installed PostgreSQL client program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgTool {
    pub path: PathBuf,
    pub major: u32,
    /// As the tool prints it: `15.18`.
    pub version: String,
}

/// Parses `pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)` into `(15, "15.18")`.
pub fn parse_tool_version(line: &str) -> Option<(u32, String)> {
    let after = line.split(')').nth(1)?.trim();
    let version = after.split_whitespace().next()?.to_string();
    let major = version
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()?;
    Some((major, version))
}

/// Where to look for client tools.
#[derive(Debug, Clone)]
pub struct ToolSearch {
    /// An explicit path (PG_DUMP_PATH); when set, nothing else is considered.
    pub explicit: Option<PathBuf>,
    /// Directories like `/usr/lib/postgresql` holding `<major>/bin/`.
    pub version_roots: Vec<PathBuf>,
    /// The directories of `PATH`.
    pub path_dirs: Vec<PathBuf>,
}

impl ToolSearch {
    pub fn system(explicit: Option<PathBuf>) -> Self {
        ToolSearch {
            explicit,
            version_roots: vec![PathBuf::from("/usr/lib/postgresql")],
            path_dirs: std::env::var_os("PATH")
                .map(|p| std::env::split_paths(&p).collect())
                .unwrap_or_default(),
        }
    }

    /// Candidate paths for `name`, deduplicated by canonical path.
    pub fn candidates(&self, name: &str) -> Vec<PathBuf> {
        if let Some(p) = &self.explicit {
            // PG_DUMP_PATH names pg_dump; its siblings (pg_dumpall, psql) live beside it.
            let p = if name == "pg_dump" {
                p.clone()
            } else {
                p.with_file_name(name)
            };
            return vec![p];
        }
        let mut out: Vec<PathBuf> = Vec::new();
        for root in &self.version_roots {
            if let Ok(rd) = std::fs::read_dir(root) {
                for e in rd.flatten() {
                    let p = e.path().join("bin").join(name);
                    if p.is_file() {
                        out.push(p);
                    }
                }
            }
        }
        let versioned = !out.is_empty();
        for d in &self.path_dirs {
            let p = d.join(name);
            if p.is_file() {
                out.push(p);
            }
        }
        let mut seen = Vec::new();
        out.retain(|p| {
            let c = std::fs::canonicalize(p).unwrap_or_else(|_| p.clone());
            // Debian's /usr/bin/pg_dump is postgresql-common's pg_wrapper: a Perl script that runs
            // one of the versioned binaries found above. Asking it its version costs a Perl start
            // (about 0.1 s, on every run) and can add nothing.
            let wrapper = versioned && c.file_name().is_some_and(|n| n == "pg_wrapper");
            if wrapper || seen.contains(&c) {
                false
            } else {
                seen.push(c);
                true
            }
        });
        out
    }

    /// Every candidate that runs and reports a version.
    pub async fn tools(&self, name: &'static str) -> Result<Vec<PgTool>> {
        let candidates = self.candidates(name);
        // All at once: each is a process start, and the run waits for the slowest alone.
        let outputs = futures_util::future::join_all(
            candidates
                .iter()
                .map(|path| Command::new(path).arg("--version").output()),
        )
        .await;
        let mut tools = Vec::new();
        let mut problems = Vec::new();
        for (path, output) in candidates.iter().zip(outputs) {
            match output {
                Ok(out) if out.status.success() => {
                    let line = String::from_utf8_lossy(&out.stdout);
                    match parse_tool_version(line.trim()) {
                        Some((major, version)) => tools.push(PgTool {
                            path: path.clone(),
                            major,
                            version,
                        }),
                        None => problems.push(format!("{}: odd version {line:?}", path.display())),
                    }
                }
                Ok(out) => problems.push(format!("{}: {}", path.display(), out.status)),
                Err(e) => problems.push(format!("{}: {e}", path.display())),
            }
        }
        if tools.is_empty() {
            let searched = if let Some(p) = &self.explicit {
                format!(
                    "PG_DUMP_PATH points at {}",
                    p.with_file_name(name).display()
                )
            } else {
                format!(
                    "searched {}/*/bin and PATH",
                    self.version_roots
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            let searched = if problems.is_empty() {
                searched
            } else {
                format!("{searched}; {}", problems.join("; "))
            };
            return Err(Error::ToolNotFound {
                tool: name,
                searched,
            });
        }
        Ok(tools)
    }
}

/// Picks the client for a server: the lowest major that is >= the server's; the newest when the
/// server's version is unknown.
///
/// # Errors
/// [`Error::ToolTooOld`] naming the version needed when every candidate is older than the server.
pub fn select_tool<'a>(
    tool: &'static str,
    candidates: &'a [PgTool],
    server_major: Option<u32>,
) -> Result<&'a PgTool> {
    let newest = candidates
        .iter()
        .max_by_key(|t| t.major)
        .ok_or(Error::ToolNotFound {
            tool,
            searched: "no candidates".into(),
        })?;
    let Some(server) = server_major else {
        return Ok(newest);
    };
    candidates
        .iter()
        .filter(|t| t.major >= server)
        .min_by_key(|t| t.major)
        .ok_or_else(|| Error::ToolTooOld {
            tool,
            server_major: server,
            found: candidates
                .iter()
                .map(|t| format!("{} ({})", t.version, t.path.display()))
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// Environment for libpq children: the connection without argv.
pub fn pg_env(cfg: &PostgresConfig, db: &str) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("PGHOST", cfg.host.clone()),
        ("PGPORT", cfg.port.to_string()),
        ("PGUSER", cfg.user.clone()),
        ("PGDATABASE", db.to_string()),
        ("PGAPPNAME", "stackback".to_string()),
        ("PGCONNECT_TIMEOUT", "15".to_string()),
    ];
    if let Some(p) = &cfg.password {
        env.push(("PGPASSWORD", p.expose().to_string()));
    }
    if let Some(m) = cfg.sslmode {
        env.push(("PGSSLMODE", m.as_str().to_string()));
    }
    if let Some(r) = &cfg.sslrootcert {
        env.push(("PGSSLROOTCERT", r.display().to_string()));
    }
    env
}

/// Puts the connection into a child's environment, and nothing else: a `PGPASSWORD` of the
/// caller's environment is not inherited when these settings have no password.
fn set_pg_env(cmd: &mut Command, cfg: &PostgresConfig, db: &str) {
    cmd.env_remove("PGPASSWORD").env_remove("PGSSLMODE");
    for (k, v) in pg_env(cfg, db) {
        cmd.env(k, v);
    }
}

/// What a probe of the server learnt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    pub major: u32,
    /// As the server prints it: `15.18`.
    pub version: String,
    pub db_bytes: u64,
    /// The server's clock: a second opinion on this host's.
    pub now: chrono::DateTime<chrono::Utc>,
}

/// Why a connection failed, from the error's SQLSTATE or its I/O cause.
pub fn classify(e: &tokio_postgres::Error) -> Option<PgCause> {
    use tokio_postgres::error::SqlState;
    if let Some(code) = e.code() {
        return if *code == SqlState::INVALID_PASSWORD
            || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
        {
            Some(PgCause::Auth)
        } else if *code == SqlState::INVALID_CATALOG_NAME {
            Some(PgCause::UnknownDatabase)
        } else if *code == SqlState::ADMIN_SHUTDOWN || *code == SqlState::CRASH_SHUTDOWN {
            Some(PgCause::ServerGone)
        } else {
            None
        };
    }
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        if inner.downcast_ref::<std::io::Error>().is_some() {
            return Some(PgCause::Unreachable);
        }
        src = inner.source();
    }
    e.is_closed().then_some(PgCause::ServerGone)
}

/// Opens a connection to `db` with these settings (the one place stackback connects itself).
///
/// # Errors
/// [`Error::Postgres`] with the server's message and its [`PgCause`].
pub async fn connect(cfg: &PostgresConfig, db: &str) -> Result<tokio_postgres::Client> {
    let what = || format!("connecting to database {db} on {}:{}", cfg.host, cfg.port);
    let mode = cfg.sslmode.unwrap_or_default();
    let attempts =
        super::pgtls::attempts(mode, cfg.sslrootcert.as_deref()).map_err(|e| Error::Postgres {
            what: what(),
            cause: None,
            detail: e,
        })?;
    let mut last = None;
    for attempt in attempts {
        let mut pc = tokio_postgres::Config::new();
        pc.host(&cfg.host)
            .port(cfg.port)
            .user(&cfg.user)
            .dbname(db)
            .application_name("stackback")
            .connect_timeout(Duration::from_secs(15))
            .ssl_mode(attempt.mode);
        if let Some(p) = &cfg.password {
            pc.password(p.expose());
        }
        let connected = match attempt.tls {
            Some(tls) => timed(pc.connect(tls)).await.map(|r| r.map(spawn_conn)),
            None => timed(pc.connect(tokio_postgres::NoTls))
                .await
                .map(|r| r.map(spawn_conn)),
        };
        last = Some(match connected {
            Ok(Ok(client)) => return Ok(client),
            Ok(Err(e)) => Error::Postgres {
                what: what(),
                // No password, and the server did not answer with its own error: it asked for one.
                cause: classify(&e).or(cfg.password.is_none().then_some(PgCause::Auth)),
                detail: sql_detail(&e),
            },
            Err(()) => Error::Postgres {
                what: what(),
                cause: Some(PgCause::Unreachable),
                detail: "timed out after 20 s".into(),
            },
        });
    }
    Err(last.expect("every sslmode makes at least one attempt"))
}

/// Drives a connection on its own task; the client is what the caller keeps.
fn spawn_conn<S, T>(
    (client, conn): (tokio_postgres::Client, tokio_postgres::Connection<S, T>),
) -> tokio_postgres::Client
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(conn);
    client
}

async fn timed<T>(f: impl std::future::Future<Output = T>) -> std::result::Result<T, ()> {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .map_err(|_| ())
}

/// The server's message for a database error, the error and its causes otherwise.
pub fn sql_detail(e: &tokio_postgres::Error) -> String {
    if let Some(d) = e.as_db_error() {
        return d.message().to_string();
    }
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s.push_str(&format!(": {inner}"));
        src = inner.source();
    }
    s
}

/// An SQL identifier, quoted: names from a catalog or a run record never reach SQL unquoted.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Maps a failed query to [`Error::Postgres`].
pub fn sql_err(what: &str) -> impl Fn(tokio_postgres::Error) -> Error + '_ {
    move |e| Error::Postgres {
        what: what.to_string(),
        cause: classify(&e),
        detail: sql_detail(&e),
    }
}

/// Asks the server its version and the database's size.
///
/// # Errors
/// The connection's own error, classified, for hints: callers still run pg_dump, whose error the
/// operator sees.
pub async fn probe(cfg: &PostgresConfig) -> Result<ServerInfo> {
    let client = connect(cfg, &cfg.db).await?;
    let row = client
        .query_one(
            "select current_setting('server_version_num')::int, current_setting('server_version'), pg_database_size(current_database()), now()",
            &[],
        )
        .await
        .map_err(sql_err("asking the server its version"))?;
    let num: i32 = row.get(0);
    let size: i64 = row.get(2);
    Ok(ServerInfo {
        major: (num / 10000) as u32,
        version: row.get(1),
        db_bytes: size.max(0) as u64,
        now: row.get(3),
    })
}

/// Why a dump that failed could not finish, asked of the server afterwards: it is gone, or the
/// user lacks privileges on some relation. `None` when neither explains it.
pub async fn diagnose(cfg: &PostgresConfig) -> Option<PgCause> {
    let client = match connect(cfg, &cfg.db).await {
        Ok(c) => c,
        Err(Error::Postgres { cause, .. }) => return cause.or(Some(PgCause::ServerGone)),
        Err(_) => return Some(PgCause::ServerGone),
    };
    let denied: i64 = client
        .query_one(
            "select count(*) from pg_class c join pg_namespace n on n.oid = c.relnamespace \
             where c.relkind in ('r', 'p', 'm', 'S') \
             and n.nspname not in ('pg_catalog', 'information_schema') \
             and n.nspname not like 'pg\\_toast%' \
             and (not has_schema_privilege(n.oid, 'USAGE') or not has_table_privilege(c.oid, 'SELECT'))",
            &[],
        )
        .await
        .ok()?
        .get(0);
    (denied > 0).then_some(PgCause::Privileges)
}

/// `psql` reading a dump from stdin into `cfg.db`: stops at the first error, one transaction.
pub fn psql_command(tool: &PgTool, cfg: &PostgresConfig) -> Command {
    let mut cmd = Command::new(&tool.path);
    // `-f -`: psql wraps only files (and -c) in --single-transaction; plain stdin it would run
    // statement by statement, committing whatever came before an error.
    cmd.args([
        "-X",
        "-q",
        "-v",
        "ON_ERROR_STOP=1",
        "--single-transaction",
        "--no-password",
        "-f",
        "-",
    ]);
    set_pg_env(&mut cmd, cfg, &cfg.db);
    cmd
}

/// A pg_dump (or pg_dumpall) command for `db`, connection through the environment.
pub fn dump_command(tool: &Path, cfg: &PostgresConfig, db: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(tool);
    // --no-password: never wait for a prompt that no one will answer.
    cmd.arg("--no-password").args(args);
    set_pg_env(&mut cmd, cfg, db);
    cmd
}

/// `pg_dump --format=plain` of the configured database. A table lock that another session holds
/// stops it after `lock_wait_timeout` instead of hanging it. With `dump_clean`, every object is
/// dropped (if it exists) before it is created, so the seed's `gunzip -c | psql` into the live
/// database restores the backed-up state. With `snapshot` (an id from
/// [`super::snapshot::Snapshot`]), pg_dump sees exactly what that exported snapshot sees.
pub fn database_command(tool: &PgTool, cfg: &PostgresConfig, snapshot: Option<&str>) -> Command {
    let lock_wait = format!(
        "--lock-wait-timeout={}",
        cfg.lock_wait_timeout.as_millis().max(1)
    );
    let snapshot = snapshot.map(|s| format!("--snapshot={s}"));
    let mut args = vec!["--format=plain", lock_wait.as_str()];
    if cfg.dump_clean {
        args.extend(["--clean", "--if-exists"]);
    }
    args.extend(snapshot.as_deref());
    dump_command(&tool.path, cfg, &cfg.db, &args)
}

/// `pg_dumpall --globals-only --no-role-passwords`, connecting to the configured database.
pub fn globals_command(tool: &PgTool, cfg: &PostgresConfig) -> Command {
    let mut cmd = dump_command(
        &tool.path,
        cfg,
        &cfg.db,
        &["--globals-only", "--no-role-passwords"],
    );
    // pg_dumpall connects to its own maintenance database unless told otherwise.
    cmd.arg(format!("--database={}", cfg.db));
    cmd
}

/// The line pg_dump writes after the last object: its absence means the dump did not finish.
pub const DUMP_COMPLETE: &str = "-- PostgreSQL database dump complete";
/// pg_dumpall's equivalent.
pub const DUMPALL_COMPLETE: &str = "-- PostgreSQL database cluster dump complete";

/// Checks that a plain dump's tail holds the completion line, followed by nothing but blank lines,
/// comments and psql's `\unrestrict` meta-command (PostgreSQL 13.22/15.14/17.6 and later).
pub fn tail_is_complete(tail: &[u8], marker: &str) -> bool {
    let text = String::from_utf8_lossy(tail);
    let Some(pos) = text.rfind(marker) else {
        return false;
    };
    text[pos + marker.len()..].lines().all(|l| {
        let l = l.trim();
        l.is_empty() || l.starts_with("--") || l.starts_with("\\unrestrict")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool(major: u32) -> PgTool {
        PgTool {
            path: PathBuf::from(format!("/usr/lib/postgresql/{major}/bin/pg_dump")),
            major,
            version: format!("{major}.1"),
        }
    }

    #[test]
    fn version_lines_parse() {
        assert_eq!(
            parse_tool_version("pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"),
            Some((15, "15.18".into()))
        );
        assert_eq!(
            parse_tool_version("pg_dump (PostgreSQL) 17beta2"),
            Some((17, "17beta2".into()))
        );
        assert_eq!(parse_tool_version("garbage"), None);
    }

    #[test]
    fn selection_prefers_the_lowest_sufficient_major() {
        let c = vec![tool(13), tool(17), tool(15)];
        assert_eq!(select_tool("pg_dump", &c, Some(14)).unwrap().major, 15);
        assert_eq!(select_tool("pg_dump", &c, Some(15)).unwrap().major, 15);
        assert_eq!(select_tool("pg_dump", &c, Some(16)).unwrap().major, 17);
        assert_eq!(select_tool("pg_dump", &c, Some(12)).unwrap().major, 13);
        assert_eq!(select_tool("pg_dump", &c, None).unwrap().major, 17);
    }

    #[test]
    fn selection_names_the_version_needed_when_all_are_older() {
        let c = vec![tool(15)];
        let err = select_tool("pg_dump", &c, Some(16)).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("PostgreSQL 16"), "{msg}");
        assert!(msg.contains("15.1"), "{msg}");
        assert!(err.hint().unwrap().contains("postgresql-client-16"));
    }

    #[test]
    fn discovery_walks_version_dirs_and_path() {
        let root = tempfile::tempdir().unwrap();
        for v in ["13", "16"] {
            let bin = root.path().join("pg").join(v).join("bin");
            std::fs::create_dir_all(&bin).unwrap();
            std::fs::write(bin.join("pg_dump"), "").unwrap();
        }
        let extra = root.path().join("usrbin");
        std::fs::create_dir_all(&extra).unwrap();
        std::fs::write(extra.join("pg_dump"), "").unwrap();
        let s = ToolSearch {
            explicit: None,
            version_roots: vec![root.path().join("pg")],
            path_dirs: vec![extra.clone(), root.path().join("missing")],
        };
        let mut found = s.candidates("pg_dump");
        found.sort();
        assert_eq!(found.len(), 3);
        assert!(found.contains(&extra.join("pg_dump")));
        // Debian's wrapper on PATH is left out when versioned binaries exist, kept when alone.
        let common = root.path().join("share/postgresql-common");
        std::fs::create_dir_all(&common).unwrap();
        std::fs::write(common.join("pg_wrapper"), "#!/usr/bin/perl\n").unwrap();
        let wrapped = root.path().join("wrapped");
        std::fs::create_dir_all(&wrapped).unwrap();
        std::os::unix::fs::symlink(common.join("pg_wrapper"), wrapped.join("pg_dump")).unwrap();
        let with_wrapper = ToolSearch {
            path_dirs: vec![wrapped.clone()],
            ..s.clone()
        };
        let found = with_wrapper.candidates("pg_dump");
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(!found.contains(&wrapped.join("pg_dump")));
        let only_wrapper = ToolSearch {
            version_roots: vec![],
            ..with_wrapper
        };
        assert_eq!(
            only_wrapper.candidates("pg_dump"),
            vec![wrapped.join("pg_dump")]
        );
        let none = ToolSearch {
            explicit: None,
            version_roots: vec![],
            path_dirs: vec![],
        };
        assert!(none.candidates("pg_dump").is_empty());
    }

    #[test]
    fn completion_marker_tolerates_unrestrict() {
        let ok = b"COPY ...\n\\.\n\n--\n-- PostgreSQL database dump complete\n--\n\n\\unrestrict abc123\n\n";
        assert!(tail_is_complete(ok, DUMP_COMPLETE));
        let cut = b"COPY public.t (a) FROM stdin;\n1\n2\n";
        assert!(!tail_is_complete(cut, DUMP_COMPLETE));
        let trailing = b"-- PostgreSQL database dump complete\n--\nDROP TABLE x;\n";
        assert!(!tail_is_complete(trailing, DUMP_COMPLETE));
    }

    #[test]
    fn password_travels_in_the_environment_only() {
        let cfg = PostgresConfig {
            host: "h".into(),
            port: 1,
            user: "u".into(),
            password: Some(crate::redact::Secret::new("pw")),
            db: "d".into(),
            sslmode: None,
            sslrootcert: None,
            lock_wait_timeout: Duration::from_secs(600),
            pg_dump: None,
            globals: false,
            dump_clean: true,
            row_count_exact_limit: 0,
        };
        let cmd = dump_command(Path::new("/bin/pg_dump"), &cfg, "d", &["--format=plain"]);
        let args: Vec<_> = cmd
            .as_std()
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(!args.iter().any(|a| a.contains("pw")), "{args:?}");
        let envs: Vec<_> = cmd
            .as_std()
            .get_envs()
            .map(|(k, v)| {
                (
                    k.to_string_lossy().into_owned(),
                    v.map(|v| v.to_string_lossy().into_owned()),
                )
            })
            .collect();
        assert!(envs.contains(&("PGPASSWORD".into(), Some("pw".into()))));
    }
}
