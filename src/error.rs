//! The library's one error type and the exit-code contract.
//!
//! Policy: every variant a user can meet says what failed (the file, the database, the setting),
//! why (the OS error, pg_dump's stderr) and, through [`Error::hint`], what to do next. Secrets never
//! appear: configuration values are redacted before they reach an error, and text that comes from
//! child processes is passed through [`crate::config::Redactor`] by the caller that owns the secrets.
//! The CLI maps [`Error::exit_code`] to the process exit status; nothing else decides exit codes.

use std::path::PathBuf;

/// Documented exit codes (README "Exit codes").
pub mod exit {
    /// Success.
    pub const OK: i32 = 0;
    /// The backup, restore or another operation failed.
    pub const FAILED: i32 = 1;
    /// Usage or configuration error: nothing was attempted.
    pub const USAGE: i32 = 2;
    /// Verification failed: a backup is missing, corrupt or does not match its run record.
    pub const VERIFY: i32 = 3;
    /// Another stackback run holds the backup directory's lock.
    pub const LOCKED: i32 = 4;
}

/// Everything that can go wrong in the library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("configuration: {key}: {message}")]
    Config { key: String, message: String },

    #[error("{0}")]
    Usage(String),

    #[error("another stackback run holds the lock on {path} ({holder})")]
    Locked { path: PathBuf, holder: String },

    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{tool} was not found ({searched})")]
    ToolNotFound {
        tool: &'static str,
        searched: String,
    },

    #[error("no usable {tool}: the server runs PostgreSQL {server_major}, which needs {tool} {server_major} or newer; found {found}")]
    ToolTooOld {
        tool: &'static str,
        server_major: u32,
        found: String,
    },

    #[error("{tool} failed ({status}): {stderr}")]
    Child {
        tool: String,
        status: String,
        stderr: String,
    },

    #[error("{what} failed: {detail}")]
    Step { what: String, detail: String },

    #[error("verification failed: {0}")]
    Verification(String),

    #[error("{0}")]
    NotFound(String),

    #[error("S3 {op} on bucket {bucket:?}: {detail}")]
    S3 {
        op: &'static str,
        bucket: String,
        detail: String,
    },
}

impl Error {
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }

    pub fn config(key: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Config {
            key: key.into(),
            message: message.into(),
        }
    }

    /// The process exit code this error maps to (see [`exit`]).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config { .. } | Error::Usage(_) => exit::USAGE,
            Error::Locked { .. } => exit::LOCKED,
            Error::Verification(_) => exit::VERIFY,
            _ => exit::FAILED,
        }
    }

    /// One line of advice for the operator, when there is something useful to say.
    pub fn hint(&self) -> Option<String> {
        match self {
            Error::Config { .. } => Some(
                "run `stackback config` to see every setting, its value and where it came from"
                    .into(),
            ),
            Error::Locked { .. } => Some(
                "wait for the other run to finish (the daemon or a cron job may be running one); \
                 `stackback status` shows the last run"
                    .into(),
            ),
            Error::Io { source, path, .. } => Some(io_hint(source, path)),
            Error::ToolNotFound { tool, .. } => Some(format!(
                "install the PostgreSQL client tools (Debian: `apt-get install postgresql-client`) \
                 or point PG_DUMP_PATH at {tool}"
            )),
            Error::ToolTooOld { server_major, .. } => Some(format!(
                "install the PostgreSQL {server_major} client (Debian: `apt-get install \
                 postgresql-client-{server_major}` from the PGDG repository) or set PG_DUMP_PATH"
            )),
            Error::Child { stderr, .. } => pg_hint(stderr),
            Error::Verification(_) => Some(
                "do not rely on this backup; run `stackback run` for a fresh one and check the \
                 disk holding BACKUP_DIR"
                    .into(),
            ),
            Error::S3 { detail, .. } => Some(s3_hint(detail)),
            _ => None,
        }
    }
}

fn io_hint(source: &std::io::Error, path: &std::path::Path) -> String {
    match source.raw_os_error() {
        Some(28) => format!(
            "the disk holding {} is full: free space, lower BACKUP_RETENTION_DAYS or move BACKUP_DIR",
            path.display()
        ),
        Some(30) => format!(
            "{} is on a read-only file system: mount it read-write or choose another BACKUP_DIR",
            path.display()
        ),
        Some(13) | Some(1) => format!(
            "stackback's user cannot write {}: fix its owner or permissions, or choose another BACKUP_DIR",
            path.display()
        ),
        _ => format!("check that {} exists and is writable", path.display()),
    }
}

/// Reads pg_dump/psql stderr and names the usual culprit.
fn pg_hint(stderr: &str) -> Option<String> {
    let s = stderr.to_ascii_lowercase();
    let hint = if s.contains("password authentication failed") || s.contains("no password supplied")
    {
        "check POSTGRES_USER and POSTGRES_PASSWORD (or POSTGRES_PASSWORD_FILE / DATABASE_URL)"
    } else if s.contains("database") && s.contains("does not exist") {
        "check POSTGRES_DB (or the database in DATABASE_URL); `psql -l` lists the databases"
    } else if s.contains("connection refused")
        || s.contains("could not translate host name")
        || s.contains("timeout expired")
        || s.contains("no route to host")
        || s.contains("could not connect")
    {
        "the server is unreachable: check POSTGRES_HOST and POSTGRES_PORT and that PostgreSQL is running (`pg_isready -h HOST -p PORT`)"
    } else if s.contains("server version mismatch")
        || s.contains("aborting because of server version mismatch")
    {
        "pg_dump is older than the server: install a newer PostgreSQL client or set PG_DUMP_PATH"
    } else if s.contains("permission denied") {
        "the database user lacks privileges: back up as the database owner or a superuser"
    } else if s.contains("terminating connection") || s.contains("server closed the connection") {
        "the server ended the dump's connection: check the PostgreSQL log, then run the backup again"
    } else {
        return None;
    };
    Some(hint.into())
}

fn s3_hint(detail: &str) -> String {
    let d = detail.to_ascii_lowercase();
    if d.contains("--create-bucket") {
        "create the bucket first, or let stackback create it".into()
    } else if d.contains("nosuchbucket") || d.contains("does not exist") {
        "check MINIO_BUCKET; `aws s3 ls --endpoint-url MINIO_ENDPOINT` lists the buckets".into()
    } else if d.contains("signature")
        || d.contains("accessdenied")
        || d.contains("invalidaccesskey")
        || d.contains("forbidden")
    {
        "check MINIO_ACCESS_KEY / MINIO_SECRET_KEY (or MINIO_ROOT_USER / MINIO_ROOT_PASSWORD) and MINIO_REGION".into()
    } else if d.contains("certificate") || d.contains("tls handshake") {
        "the endpoint's TLS certificate is not trusted: set MINIO_CA_FILE to the CA that signed it"
            .into()
    } else if d.contains("cannot reach") || d.contains("connect") || d.contains("timeout") {
        "the endpoint is unreachable: check MINIO_ENDPOINT and that the server is running".into()
    } else {
        "check the MINIO_* settings and the server's log".into()
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_contract() {
        assert_eq!(Error::config("k", "bad").exit_code(), exit::USAGE);
        assert_eq!(
            Error::Locked {
                path: "x".into(),
                holder: "pid 1".into()
            }
            .exit_code(),
            exit::LOCKED
        );
        assert_eq!(Error::Verification("x".into()).exit_code(), exit::VERIFY);
        assert_eq!(
            Error::Step {
                what: "a".into(),
                detail: "b".into()
            }
            .exit_code(),
            exit::FAILED
        );
    }

    #[test]
    fn pg_hints_name_the_setting_to_check() {
        let h = pg_hint("pg_dump: error: connection to server at \"127.0.0.1\", port 5 failed: FATAL:  password authentication failed for user \"x\"").unwrap();
        assert!(h.contains("POSTGRES_PASSWORD"));
        let h = pg_hint("FATAL:  database \"nope\" does not exist").unwrap();
        assert!(h.contains("POSTGRES_DB"));
        let h = pg_hint("connection to server at \"127.0.0.1\", port 1 failed: Connection refused")
            .unwrap();
        assert!(h.contains("POSTGRES_HOST"));
        assert!(pg_hint("something else").is_none());
    }
}
