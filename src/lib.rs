//! stackback: verified, restorable backups of an application stack's PostgreSQL database and
//! S3/MinIO buckets.
//!
//! The library holds all the logic; the `stackback` binary parses flags, calls one function of
//! [`ops`] and renders the typed report it returns. Data flows one way:
//!
//! ```text
//! source (pg_dump, bucket) ──► pipeline (blake3 plain → compress → sha256 stored) ──► sink (backup dir) ──► catalog (run record)
//! ```
//!
//! ```no_run
//! # async fn demo() -> stackback::Result<()> {
//! use stackback::config::{Config, LoadInput};
//! let cfg = Config::load(&LoadInput::from_process())?;
//! let report = stackback::ops::backup::run(&cfg).await?;
//! println!("run {} finished: {}", report.record.run_id, report.record.status);
//! # Ok(()) }
//! ```
//!
//! Layers, lowest first (a module imports only from layers below it): `units`, `memory`, `redact`, `error`,
//! `pipeline`, `catalog`, `sink`, `archive`, `retention`, `anomaly`, `schedule`, `config`, `s3`, `source`,
//! `progress`; then `notify`, `install`, `ops`, `server`. docs/ARCHITECTURE.md draws them.

pub mod anomaly;
pub mod archive;
pub mod catalog;
pub mod config;
pub mod crypt;
pub mod error;
pub mod install;
pub mod memory;
pub mod notify;
pub mod ops;
pub mod pipeline;
pub mod progress;
pub mod redact;
pub mod retention;
pub mod s3;
pub mod schedule;
pub mod server;
pub mod sink;
pub mod source;
pub mod units;

pub use error::{exit, Error, Result};
