//! Sources of backup bytes: a database through pg_dump ([`postgres`], driven by [`child`]),
//! buckets through the S3 API ([`bucket`]), a directory ([`dir`]); the snapshot pg_dump shares
//! with the row counts recorded beside it ([`snapshot`]); the tables and rows a plain dump carries
//! ([`copyrows`]).

pub mod bucket;
pub mod child;
pub mod copyrows;
pub mod dir;
pub mod pgtls;
pub mod postgres;
pub mod snapshot;
