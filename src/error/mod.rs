//! The library's one error type and the exit-code contract.
//!
//! Policy: every variant a user can meet says what failed (the file, the database, the setting),
//! why (the OS error, pg_dump's stderr, the S3 service's code) and, through [`Error::hint`], what to
//! do next. Decisions are taken on variants and kinds, never on an error's text. Secrets never
//! appear: configuration values are redacted before they reach an error, and text that comes from
//! child processes is passed through [`crate::redact::Redactor`] by the caller that owns the
//! secrets. The CLI maps [`Error::exit_code`] to the process exit status; nothing else decides
//! exit codes.

mod problem;

use std::fmt;
use std::path::PathBuf;

pub use problem::{Checksum, Problem, ReadBack};

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
    /// The local backup is good and verified; its off-site copy failed (the next run catches up).
    pub const REMOTE: i32 = 5;
}

/// Why bytes are not a run record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordError {
    Invalid(String),
    /// Written by a newer stackback whose schema this build cannot read.
    TooNew {
        found: u32,
        supported: u32,
    },
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordError::Invalid(e) => write!(f, "not a valid run record: {e}"),
            RecordError::TooNew { found, supported } => write!(
                f,
                "written by a newer stackback (schema {found}; this build reads up to {supported}): upgrade stackback"
            ),
        }
    }
}

/// What went wrong with an S3 request, as far as the protocol tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum S3ErrorKind {
    /// The bucket does not exist (NoSuchBucket, or 404 on a bucket request).
    NoSuchBucket,
    /// The key does not exist.
    NoSuchKey,
    /// Credentials or signature refused (403, AccessDenied, SignatureDoesNotMatch...).
    AccessDenied,
    /// The request was refused as malformed: typically a wrong region or endpoint.
    BadRequest,
    /// The endpoint's TLS certificate is not trusted, or the handshake failed.
    Tls,
    /// No connection: refused, unresolvable, reset.
    Unreachable,
    Timeout,
    /// The connection broke in the middle of a body, on every attempt.
    Interrupted,
    /// The service answered with another error (5xx, ...).
    Service,
    Other,
}

/// What went wrong with the off-site remote, for hints and for telling transient faults apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteErrorKind {
    /// No connection: refused, unresolvable, reset, timed out.
    Unreachable,
    /// Credentials or key refused.
    Auth,
    /// The server's host key is unknown or changed (sftp).
    HostKey,
    NotFound,
    /// What landed differs from what was sent (size or SHA-256 read back).
    Mismatch,
    /// A file:// remote that is the local disk (an unmounted share).
    SameFilesystem,
    Other,
}

/// An off-site remote operation that failed.
#[derive(Debug, Clone)]
pub struct RemoteError {
    pub op: &'static str,
    /// The remote, as people may read it (no password).
    pub target: String,
    /// The file concerned, when there is one.
    pub name: Option<String>,
    pub kind: RemoteErrorKind,
    pub detail: String,
}

impl std::error::Error for RemoteError {}

impl fmt::Display for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "off-site {} on {}: ", self.op, self.target)?;
        if let Some(n) = &self.name {
            write!(f, "{n}: ")?;
        }
        f.write_str(&self.detail)
    }
}

/// An S3 request that failed.
#[derive(Debug, Clone)]
pub struct S3Error {
    pub op: &'static str,
    pub bucket: String,
    pub key: Option<String>,
    pub kind: S3ErrorKind,
    /// The service's error code (`NoSuchBucket`) and HTTP status, when it answered.
    pub code: Option<String>,
    pub status: Option<u16>,
    pub detail: String,
}

impl std::error::Error for S3Error {}

impl fmt::Display for S3Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "S3 {} on bucket {:?}: ", self.op, self.bucket)?;
        if let Some(k) = &self.key {
            write!(f, "key {k:?}: ")?;
        }
        f.write_str(&self.detail)
    }
}

/// What a probe of the database server found, for hints when pg_dump or psql then fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgCause {
    /// Password or authentication method refused (SQLSTATE 28P01 / 28000).
    Auth,
    /// The database does not exist (3D000).
    UnknownDatabase,
    /// No connection could be made.
    Unreachable,
    /// The user lacks privileges on some tables (checked before dumping).
    Privileges,
    /// The server went away during the dump.
    ServerGone,
}

/// What a restore test's scratch server refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScratchRefusal {
    /// No connection (unreachable, authentication).
    Connect,
    /// CREATE DATABASE (no CREATEDB privilege).
    CreateDatabase,
    /// CreateBucket on the S3 server.
    CreateBucket,
}

/// Everything that can go wrong in the library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("configuration: {key}: {message}")]
    Config { key: String, message: String },

    #[error("{0}")]
    Usage(String),

    #[error("another stackback run holds the lock on {path} ({holder}{})", age.map(|a| format!(", for {}", crate::units::human_age_seconds(a.as_secs() as i64))).unwrap_or_default())]
    Locked {
        path: PathBuf,
        holder: String,
        /// How long the lock has been held (from the lock file's time), when known.
        age: Option<std::time::Duration>,
    },

    /// A file of a live directory changed while it was archived (volume mode).
    #[error("{path} changed while it was archived ({detail})", path = path.display())]
    SourceChanged { path: PathBuf, detail: String },

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
        /// What a probe of the server found, when one was made.
        cause: Option<PgCause>,
    },

    #[error("{what} failed: {detail}")]
    Postgres {
        what: String,
        cause: Option<PgCause>,
        detail: String,
    },

    #[error("{what} failed: {detail}")]
    Step { what: String, detail: String },

    #[error("verification failed: {subject}: {problem}")]
    Verification { subject: String, problem: Problem },

    #[error("reading run record {path} failed: {problem}", path = path.display())]
    Record { path: PathBuf, problem: RecordError },

    #[error("{0}")]
    NotFound(String),

    /// The selection names no verified backup.
    #[error("{0}")]
    NoBackup(String),

    #[error("{0}")]
    S3(Box<S3Error>),

    #[error("{0}")]
    Remote(Box<RemoteError>),

    /// An encrypted backup that this host cannot open: no identity, or one that is not among the
    /// file's recipients. A settings problem (exit 2), never a damaged backup.
    #[error("cannot decrypt {file}: {detail}")]
    Key { file: String, detail: String },
    /// A restore test could not use its scratch server: nothing was learnt about the backup.
    #[error("restore test: {server} refused {what}: {detail}")]
    ScratchRefused {
        refusal: ScratchRefusal,
        /// `host:port` of the scratch PostgreSQL server, or the S3 endpoint.
        server: String,
        /// What was asked: `to create database stackback_restore_test_...`.
        what: String,
        detail: String,
        /// The user it connected as, for the hint.
        user: String,
    },
}

impl From<RemoteError> for Error {
    fn from(e: RemoteError) -> Self {
        Error::Remote(Box::new(e))
    }
}

impl From<S3Error> for Error {
    fn from(e: S3Error) -> Self {
        Error::S3(Box::new(e))
    }
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

    pub fn step(what: impl Into<String>, detail: impl fmt::Display) -> Self {
        Error::Step {
            what: what.into(),
            detail: detail.to_string(),
        }
    }

    pub fn verification(subject: impl fmt::Display, problem: Problem) -> Self {
        Error::Verification {
            subject: subject.to_string(),
            problem,
        }
    }

    /// The process exit code this error maps to (see [`exit`]).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config { .. } | Error::Usage(_) | Error::Key { .. } => exit::USAGE,
            Error::Locked { .. } => exit::LOCKED,
            Error::Verification { .. } => exit::VERIFY,
            _ => exit::FAILED,
        }
    }

    /// The S3 error kind, when this is an S3 error.
    pub fn s3_kind(&self) -> Option<S3ErrorKind> {
        match self {
            Error::S3(e) => Some(e.kind),
            _ => None,
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
            Error::SourceChanged { .. } => Some(
                "volume mode copies files as they are: stop MinIO (or back up a snapshot of its volume) during the backup, or back the buckets up through the S3 API (unset MINIO_DATA_DIR)"
                    .into(),
            ),
            Error::ToolNotFound { tool, .. } => Some(format!(
                "install the PostgreSQL client tools (Debian: `apt-get install postgresql-client`) \
                 or point PG_DUMP_PATH at {tool}"
            )),
            Error::ToolTooOld { server_major, .. } => Some(format!(
                "install the PostgreSQL {server_major} client (Debian: `apt-get install \
                 postgresql-client-{server_major}` from the PGDG repository) or set PG_DUMP_PATH"
            )),
            Error::Child { cause, .. } | Error::Postgres { cause, .. } => {
                cause.map(|c| pg_hint(c).to_string())
            }
            Error::Verification {
                problem: Problem::RestoreLoad { .. },
                ..
            } => Some(
                "the backup does not restore as it is: read psql's error above; a role or extension the dump needs must exist on the scratch server (BACKUP_RESTORE_TEST_URL; BACKUP_GLOBALS=true backs roles up), else restoring it after a loss fails the same way"
                    .into(),
            ),
            Error::Verification {
                problem: Problem::RowCounts { .. } | Problem::ObjectsDiffer { .. },
                ..
            } => Some(
                "the restored data differs from what the backup recorded: do not rely on this backup; run `stackback run` for a fresh one and test it"
                    .into(),
            ),
            Error::Verification { .. } => Some(
                "do not rely on this backup; run `stackback run` for a fresh one and check the \
                 disk holding BACKUP_DIR"
                    .into(),
            ),
            Error::ScratchRefused { refusal, user, .. } => Some(scratch_hint(*refusal, user)),
            Error::S3(e) => Some(s3_hint(e.kind).into()),
            Error::Remote(e) => Some(remote_hint(e.kind).into()),
            Error::Key { .. } => Some(
                "set BACKUP_AGE_IDENTITY_FILE to the identity (age-keygen output or ssh private key)                  of one of the recipients the backup was encrypted to (BACKUP_AGE_RECIPIENTS when it                  was made)"
                    .into(),
            ),
            _ => None,
        }
    }
}

fn io_hint(source: &std::io::Error, path: &std::path::Path) -> String {
    match source.raw_os_error() {
        Some(libc_errno::ENOSPC) => format!(
            "the disk holding {} is full: free space, lower BACKUP_RETENTION_DAYS or move BACKUP_DIR",
            path.display()
        ),
        Some(libc_errno::EROFS) => format!(
            "{} is on a read-only file system: mount it read-write or choose another BACKUP_DIR",
            path.display()
        ),
        Some(libc_errno::EACCES) | Some(libc_errno::EPERM) => format!(
            "stackback's user cannot write {}: fix its owner or permissions, or choose another BACKUP_DIR",
            path.display()
        ),
        _ => format!("check that {} exists and is writable", path.display()),
    }
}

/// The errno values the hints distinguish (Linux).
mod libc_errno {
    pub const EPERM: i32 = 1;
    pub const EACCES: i32 = 13;
    pub const ENOSPC: i32 = 28;
    pub const EROFS: i32 = 30;
}

fn scratch_hint(refusal: ScratchRefusal, user: &str) -> String {
    match refusal {
        ScratchRefusal::Connect => "check BACKUP_RESTORE_TEST_URL (when unset, restore tests use the source server as POSTGRES_* configure it) and that the server accepts this user".into(),
        ScratchRefusal::CreateDatabase => format!(
            "restore tests load the dump into a scratch database: grant CREATEDB to {user} (ALTER ROLE \"{user}\" CREATEDB) or set BACKUP_RESTORE_TEST_URL to a server where it may create databases"
        ),
        ScratchRefusal::CreateBucket => "restore tests upload objects into a scratch bucket (stackback-restore-test-*) and delete it: give the MINIO_* credentials the right to create and delete buckets".into(),
    }
}

fn pg_hint(cause: PgCause) -> &'static str {
    match cause {
        PgCause::Auth => {
            "check POSTGRES_USER and POSTGRES_PASSWORD (or POSTGRES_PASSWORD_FILE / DATABASE_URL)"
        }
        PgCause::UnknownDatabase => {
            "check POSTGRES_DB (or the database in DATABASE_URL); `psql -l` lists the databases"
        }
        PgCause::Unreachable => {
            "the server is unreachable: check POSTGRES_HOST and POSTGRES_PORT and that PostgreSQL is running (`pg_isready -h HOST -p PORT`)"
        }
        PgCause::Privileges => {
            "the database user lacks privileges: back up as the database owner or a superuser"
        }
        PgCause::ServerGone => {
            "the server ended the dump's connection: check the PostgreSQL log, then run the backup again"
        }
    }
}

fn s3_hint(kind: S3ErrorKind) -> &'static str {
    match kind {
        S3ErrorKind::NoSuchBucket => {
            "check MINIO_BUCKET; `aws s3 ls --endpoint-url MINIO_ENDPOINT` lists the buckets"
        }
        S3ErrorKind::AccessDenied => {
            "check MINIO_ACCESS_KEY / MINIO_SECRET_KEY (or MINIO_ROOT_USER / MINIO_ROOT_PASSWORD) and MINIO_REGION"
        }
        S3ErrorKind::BadRequest => "check MINIO_REGION and MINIO_ENDPOINT",
        S3ErrorKind::Tls => {
            "the endpoint's TLS certificate is not trusted: set MINIO_CA_FILE to the CA that signed it"
        }
        S3ErrorKind::Unreachable | S3ErrorKind::Timeout => {
            "the endpoint is unreachable: check MINIO_ENDPOINT and that the server is running"
        }
        S3ErrorKind::Interrupted => {
            "the connection to the S3 endpoint broke in the middle of an object, on every attempt: check the network and any proxy between stackback and the server, then run the backup again"
        }
        S3ErrorKind::NoSuchKey | S3ErrorKind::Service | S3ErrorKind::Other => {
            "check the MINIO_* settings and the server's log"
        }
    }
}

fn remote_hint(kind: RemoteErrorKind) -> &'static str {
    match kind {
        RemoteErrorKind::Unreachable => {
            "the remote is unreachable: check BACKUP_REMOTE_URL / BACKUP_REMOTE_ENDPOINT and the network; the local backup is kept and the next run uploads what the remote lacks"
        }
        RemoteErrorKind::Auth => {
            "the remote refused the credentials: check BACKUP_REMOTE_ACCESS_KEY / BACKUP_REMOTE_SECRET_KEY, BACKUP_REMOTE_USER / BACKUP_REMOTE_PASSWORD or BACKUP_REMOTE_SSH_KEY_FILE"
        }
        RemoteErrorKind::HostKey => {
            "the server's host key is not in BACKUP_REMOTE_KNOWN_HOSTS (or changed): check the key with the server's administrator, then add it (ssh-keyscan -p PORT HOST)"
        }
        RemoteErrorKind::NotFound => {
            "check the bucket or directory in BACKUP_REMOTE_URL exists on the remote"
        }
        RemoteErrorKind::Mismatch => {
            "what the remote stored differs from what was sent: the copy was not counted; check the remote's storage and run again"
        }
        RemoteErrorKind::SameFilesystem => {
            "mount the share, or set BACKUP_REMOTE_ALLOW_SAME_FS=true if a directory on the same disk is really meant (it does not survive the loss of this host)"
        }
        RemoteErrorKind::Other => "check the remote settings (BACKUP_REMOTE_*) and the remote's log",
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
                holder: "pid 1".into(),
                age: None,
            }
            .exit_code(),
            exit::LOCKED
        );
        assert_eq!(
            Error::verification("f", Problem::RecordModified).exit_code(),
            exit::VERIFY
        );
        assert_eq!(Error::step("a", "b").exit_code(), exit::FAILED);
    }

    #[test]
    fn hints_follow_the_cause() {
        let e = Error::Child {
            tool: "pg_dump".into(),
            status: "exit code 1".into(),
            stderr: "whatever it said".into(),
            cause: Some(PgCause::Auth),
        };
        assert!(e.hint().unwrap().contains("POSTGRES_PASSWORD"));
        let e = Error::Child {
            tool: "pg_dump".into(),
            status: "exit code 1".into(),
            stderr: "x".into(),
            cause: None,
        };
        assert!(e.hint().is_none());
        let io = Error::io("cannot write", "/b", std::io::Error::from_raw_os_error(28));
        assert!(io.hint().unwrap().contains("full"));
    }
}
