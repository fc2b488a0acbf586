//! Sources of backup bytes: a database through pg_dump ([`postgres`], driven by [`child`]),
//! buckets through the S3 API ([`bucket`]), a directory ([`dir`]).

pub mod bucket;
pub mod child;
pub mod dir;
pub mod pgtls;
pub mod postgres;
