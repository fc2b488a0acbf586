//! A restore's load over several connections, for a database this restore made (a new one, or
//! the one beside a target it replaces), which is dropped if the load fails.
//!
//! The plain dump is cut into its three sections as it streams by: the schema before the first
//! `COPY` runs through psql in one transaction; the rows of every `COPY` block go, in pieces of
//! whole lines, to whichever of N connections is free, each loading them with `COPY ... FROM
//! STDIN`; everything else after the first `COPY` (sequence values, then indexes, constraints and
//! grants) is spooled and runs through psql in one transaction once every row is in. pg_dump
//! writes all schema before any data and all data before any index, so this is the order a serial
//! load runs them in, with the rows loaded side by side. The server's own parsing and inserting is
//! a restore's wall time, and one session keeps it on one core.
//!
//! The count of rows the server reports taking must equal the count of rows the dump carries.

use std::io::{Read, Seek};
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::SinkExt;
use tokio::sync::{mpsc, oneshot, Mutex};
use tokio_postgres::CopyInSink;

use crate::config::PostgresConfig;
use crate::error::{Error, Result};
use crate::redact::Redactor;
use crate::source::child::feed_stdin;
use crate::source::postgres::{connect, psql_command, sql_err, PgTool};

use super::db::Loaded;
use reader::Reader;

mod lexer;
mod reader;

/// Rows travel in pieces of about this size: small enough to spread a table over every
/// connection, large enough that a piece costs one channel hop per megabyte or so.
pub(super) const PIECE: usize = 512 * 1024;

/// Post-data kept in memory up to this size, on disk (a 0600 temp file) beyond.
pub(super) const SPOOL_IN_MEMORY: usize = 8 << 20;

/// Rows of one table, whole lines: `copy` is the statement (`COPY t (cols) FROM stdin`), shared
/// by every piece of the block.
pub(super) struct Piece {
    copy: Arc<str>,
    data: Bytes,
}

/// What the reader learnt from the whole dump.
pub(super) struct Split {
    /// The session settings of the dump's preamble and the last `SET default_tablespace` and
    /// `SET default_table_access_method`, with psql's `\restrict`: what the post-data needs to
    /// run as it would have at the end of a serial load.
    tail_preamble: Vec<u8>,
    tail: tempfile::SpooledTempFile,
    tail_bytes: u64,
    tables: u64,
    rows: u64,
    plain_bytes: u64,
}

/// Loads the dump that `open` opens (decompressed, on the reader's thread) into `pg.db` over
/// `jobs` connections.
pub(crate) async fn load<R: Read>(
    open: impl FnOnce() -> Result<R> + Send + 'static,
    psql: &PgTool,
    pg: &PostgresConfig,
    no_owner: bool,
    jobs: usize,
    redactor: &Redactor,
) -> Result<Loaded> {
    let (head_tx, head_rx) = mpsc::channel(8);
    let (session_tx, session_rx) = oneshot::channel();
    let (piece_tx, piece_rx) = mpsc::channel(4 * jobs);
    let reader = tokio::task::spawn_blocking(move || {
        Reader::new(no_owner, head_tx, session_tx, piece_tx).run(open)
    });
    let reader_result = |joined: std::result::Result<Result<Split>, tokio::task::JoinError>| {
        joined.unwrap_or_else(|_| {
            Err(Error::step(
                "reading the dump",
                "the reader thread panicked; the load was stopped",
            ))
        })
    };
    // The schema first: no row can go in before its table exists.
    if let Err(e) = feed_stdin(psql_command(psql, pg), "psql", head_rx, redactor).await {
        drop(piece_rx);
        let _ = reader.await;
        return Err(e);
    }
    let (loaded_rows, connections) = match session_rx.await {
        Ok(session) => {
            let loaded = load_rows(pg, jobs, &session, piece_rx).await;
            if let Err(e) = loaded {
                let _ = reader.await;
                return Err(e);
            }
            loaded?
        }
        // The reader never reached a COPY block: the dump has no data, or the reader stopped
        // (which its result tells).
        Err(_) => (0, 0),
    };
    let split = reader_result(reader.await)?;
    if loaded_rows != split.rows {
        return Err(Error::step(
            "loading the rows",
            format!(
                "the server took {loaded_rows} rows, the dump holds {}: the load is not trusted",
                split.rows
            ),
        ));
    }
    if split.tail_bytes > 0 {
        let (tx, rx) = mpsc::channel(8);
        let (preamble, tail) = (split.tail_preamble, split.tail);
        let feeder = tokio::task::spawn_blocking(move || feed_tail(preamble, tail, tx));
        let fed = feed_stdin(psql_command(psql, pg), "psql", rx, redactor).await;
        let _ = feeder.await;
        fed?;
    }
    Ok(Loaded {
        plain_bytes: split.plain_bytes,
        tables: split.tables,
        rows: split.rows,
        connections,
    })
}

/// Sends the preamble, then the spooled post-data, in chunks.
fn feed_tail(
    preamble: Vec<u8>,
    mut tail: tempfile::SpooledTempFile,
    tx: mpsc::Sender<Result<Bytes>>,
) {
    if tx.blocking_send(Ok(Bytes::from(preamble))).is_err() {
        return;
    }
    if let Err(e) = tail.rewind() {
        let _ = tx.blocking_send(Err(spool_error(e)));
        return;
    }
    loop {
        let mut chunk = vec![0u8; 256 * 1024];
        match crate::pipeline::read_full(&mut tail, &mut chunk) {
            Ok(0) => return,
            Ok(n) => {
                chunk.truncate(n);
                if tx.blocking_send(Ok(Bytes::from(chunk))).is_err() {
                    return;
                }
            }
            Err(e) => {
                let _ = tx.blocking_send(Err(spool_error(e)));
                return;
            }
        }
    }
}

pub(super) fn spool_error(e: std::io::Error) -> Error {
    Error::step(
        "spooling the dump's indexes and constraints",
        format!("the temp file failed ({e}); check the space in $TMPDIR"),
    )
}

/// Runs `jobs` connections, each taking the next piece of rows as it is free, until the reader
/// is done. Returns the rows the server reported taking, and how many connections took any.
async fn load_rows(
    pg: &PostgresConfig,
    jobs: usize,
    session: &str,
    pieces: mpsc::Receiver<Result<Piece>>,
) -> Result<(u64, usize)> {
    let pieces = Arc::new(Mutex::new(pieces));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..jobs {
        set.spawn(load_worker(pg.clone(), session.to_owned(), pieces.clone()));
    }
    let (mut rows, mut busy) = (0, 0);
    while let Some(done) = set.join_next().await {
        match done {
            Ok(Ok((n, pieces))) => {
                rows += n;
                busy += usize::from(pieces > 0);
            }
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(Error::step(
                    "loading the rows",
                    "a loading task panicked; the load was stopped",
                ))
            }
        }
    }
    Ok((rows, busy))
}

/// A `COPY ... FROM STDIN` in progress.
type OpenCopy = Pin<Box<CopyInSink<Bytes>>>;

/// One connection's share of the rows: a `COPY` stays open while its pieces keep coming. Returns
/// the rows the server took and the pieces loaded.
async fn load_worker(
    pg: PostgresConfig,
    session: String,
    pieces: Arc<Mutex<mpsc::Receiver<Result<Piece>>>>,
) -> Result<(u64, u64)> {
    let client = connect(&pg, &pg.db).await?;
    client
        .batch_execute(&session)
        .await
        .map_err(sql_err("applying the dump's session settings"))?;
    let mut open: Option<(Arc<str>, OpenCopy)> = None;
    let (mut rows, mut taken) = (0, 0);
    let copy_err = |copy: &str| format!("loading rows ({copy})");
    loop {
        let next = pieces.lock().await.recv().await;
        let Some(piece) = next else { break };
        let piece = piece?;
        taken += 1;
        if !matches!(&open, Some((c, _)) if Arc::ptr_eq(c, &piece.copy)) {
            if let Some((copy, mut sink)) = open.take() {
                rows += sink
                    .as_mut()
                    .finish()
                    .await
                    .map_err(|e| sql_err(&copy_err(&copy))(e))?;
            }
            let sink = client
                .copy_in::<_, Bytes>(&*piece.copy)
                .await
                .map_err(|e| sql_err(&copy_err(&piece.copy))(e))?;
            open = Some((piece.copy.clone(), Box::pin(sink)));
        }
        let (copy, sink) = open.as_mut().expect("opened above");
        sink.send(piece.data)
            .await
            .map_err(|e| sql_err(&copy_err(copy))(e))?;
    }
    if let Some((copy, mut sink)) = open {
        rows += sink
            .as_mut()
            .finish()
            .await
            .map_err(|e| sql_err(&copy_err(&copy))(e))?;
    }
    Ok((rows, taken))
}
