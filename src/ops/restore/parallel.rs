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

use std::io::{Read, Seek, Write};
use std::pin::Pin;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::SinkExt;
use tokio::sync::{mpsc, oneshot, Mutex};
use tokio_postgres::CopyInSink;

use crate::config::PostgresConfig;
use crate::error::{Error, Problem, Result};
use crate::redact::Redactor;
use crate::source::child::feed_stdin;
use crate::source::postgres::{connect, psql_command, sql_err, PgTool};

use super::db::Loaded;

/// Rows travel in pieces of about this size: small enough to spread a table over every
/// connection, large enough that a piece costs one channel hop per megabyte or so.
const PIECE: usize = 512 * 1024;

/// Post-data kept in memory up to this size, on disk (a 0600 temp file) beyond.
const SPOOL_IN_MEMORY: usize = 8 << 20;

/// Rows of one table, whole lines: `copy` is the statement (`COPY t (cols) FROM stdin`), shared
/// by every piece of the block.
struct Piece {
    copy: Arc<str>,
    data: Bytes,
}

/// What the reader learnt from the whole dump.
struct Split {
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

fn spool_error(e: std::io::Error) -> Error {
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

/// The blocking side: decompressed bytes in, cut into the schema (to the first psql), pieces of
/// rows (to the connections) and the spooled post-data.
struct Reader {
    no_owner: bool,
    head: Option<mpsc::Sender<Result<Bytes>>>,
    head_chunk: Vec<u8>,
    session: Option<oneshot::Sender<String>>,
    pieces: mpsc::Sender<Result<Piece>>,
    lexer: Lexer,
    /// Inside the preamble (before pg_dump's first table-of-contents comment).
    in_preamble: bool,
    preamble: Vec<u8>,
    session_sql: String,
    default_tablespace: Option<Bytes>,
    default_am: Option<Bytes>,
    tail: tempfile::SpooledTempFile,
    tail_bytes: u64,
    tables: u64,
    rows: u64,
    plain_bytes: u64,
}

/// Why the reader stopped early: the dump could not be read, or the load went away (it reports
/// its own error).
enum Stop {
    Failed(Error),
    Gone,
}

impl From<Error> for Stop {
    fn from(e: Error) -> Self {
        Stop::Failed(e)
    }
}

impl Reader {
    fn new(
        no_owner: bool,
        head: mpsc::Sender<Result<Bytes>>,
        session: oneshot::Sender<String>,
        pieces: mpsc::Sender<Result<Piece>>,
    ) -> Self {
        Reader {
            no_owner,
            head: Some(head),
            head_chunk: Vec::new(),
            session: Some(session),
            pieces,
            lexer: Lexer::default(),
            in_preamble: true,
            preamble: Vec::new(),
            session_sql: String::new(),
            default_tablespace: None,
            default_am: None,
            tail: tempfile::SpooledTempFile::new(SPOOL_IN_MEMORY),
            tail_bytes: 0,
            tables: 0,
            rows: 0,
            plain_bytes: 0,
        }
    }

    /// Reads the whole dump. A failure to read it is sent to whoever is loading at that moment
    /// (so psql is stopped before it could commit a truncated schema) and returned.
    fn run<R: Read>(mut self, open: impl FnOnce() -> Result<R>) -> Result<Split> {
        let cut = match open() {
            Ok(mut plain) => self.cut(&mut plain),
            Err(e) => Err(Stop::Failed(e)),
        };
        match cut {
            Ok(()) => {}
            Err(Stop::Gone) => {
                return Err(Error::step(
                    "reading the dump",
                    "the load stopped before the dump was read to the end",
                ))
            }
            Err(Stop::Failed(e)) => {
                let report = Error::step("reading the dump", &e);
                match self.head.take() {
                    Some(head) => {
                        let _ = head.blocking_send(Err(report));
                    }
                    None => {
                        let _ = self.pieces.blocking_send(Err(report));
                    }
                }
                return Err(e);
            }
        }
        let mut tail_preamble = std::mem::take(&mut self.preamble);
        for line in [&self.default_tablespace, &self.default_am]
            .into_iter()
            .flatten()
        {
            tail_preamble.extend_from_slice(line);
        }
        Ok(Split {
            tail_preamble,
            tail: self.tail,
            tail_bytes: self.tail_bytes,
            tables: self.tables,
            rows: self.rows,
            plain_bytes: self.plain_bytes,
        })
    }

    fn cut(&mut self, plain: &mut dyn Read) -> std::result::Result<(), Stop> {
        let mut buf = BytesMut::with_capacity(2 * PIECE);
        let mut eof = false;
        let mut copy: Option<Arc<str>> = None;
        // Within COPY data: how far `buf` is known to hold no terminator.
        let mut scanned = 0usize;
        loop {
            match &copy {
                None => match memchr::memchr(b'\n', &buf) {
                    Some(i) => {
                        let line = buf.split_to(i + 1).freeze();
                        copy = self.script_line(line)?;
                        scanned = 0;
                    }
                    None if eof => {
                        if !buf.is_empty() {
                            let line = buf.split().freeze();
                            self.script_line(line)?;
                        }
                        break;
                    }
                    None => eof = self.fill(plain, &mut buf)?,
                },
                Some(stmt) => {
                    if buf.starts_with(b"\\.\n") {
                        buf.advance(3);
                        copy = None;
                        continue;
                    }
                    let from = scanned.saturating_sub(3);
                    if let Some(i) = memchr::memmem::find(&buf[from..], b"\n\\.\n") {
                        let data = buf.split_to(from + i + 1).freeze();
                        buf.advance(3);
                        let stmt = stmt.clone();
                        self.send_rows(&stmt, data)?;
                        copy = None;
                        continue;
                    }
                    scanned = buf.len();
                    if buf.len() >= PIECE {
                        if let Some(j) = memchr::memrchr(b'\n', &buf) {
                            let data = buf.split_to(j + 1).freeze();
                            let stmt = stmt.clone();
                            self.send_rows(&stmt, data)?;
                            scanned = buf.len();
                            continue;
                        }
                    }
                    if eof {
                        return Err(Stop::Failed(Error::verification(
                            format!("{stmt}"),
                            Problem::undecodable(
                                "the dump ends inside this table's rows, without their end mark",
                            ),
                        )));
                    }
                    eof = self.fill(plain, &mut buf)?;
                }
            }
        }
        // A dump without rows: the connections are never needed.
        self.end_head(false)?;
        Ok(())
    }

    /// Appends up to a piece's worth of the dump to `buf`; true at its end.
    fn fill(
        &mut self,
        plain: &mut dyn Read,
        buf: &mut BytesMut,
    ) -> std::result::Result<bool, Stop> {
        let start = buf.len();
        buf.resize(start + PIECE, 0);
        let n = crate::pipeline::read_full(&mut &mut *plain, &mut buf[start..]).map_err(|e| {
            Stop::Failed(Error::verification(
                "the dump",
                Problem::undecodable(format!("could not be read to the end ({e})")),
            ))
        })?;
        buf.truncate(start + n);
        self.plain_bytes += n as u64;
        Ok(n == 0)
    }

    /// One line outside COPY data. Returns the statement of the COPY block it opens, if any.
    fn script_line(&mut self, line: Bytes) -> std::result::Result<Option<Arc<str>>, Stop> {
        // Only a line that begins a statement, outside any quote, is one of pg_dump's own: a
        // function's body or a comment may hold any text.
        let at_start = self.lexer.at_statement_start();
        self.lexer.line(&line);
        if at_start && line.starts_with(b"COPY ") && line.ends_with(b" FROM stdin;\n") {
            let stmt = std::str::from_utf8(&line[..line.len() - 2]).map_err(|_| {
                Stop::Failed(Error::verification(
                    "the dump",
                    Problem::undecodable("a COPY statement is not UTF-8"),
                ))
            })?;
            self.tables += 1;
            self.end_head(true)?;
            return Ok(Some(Arc::from(stmt)));
        }
        if self.no_owner
            && at_start
            && line.starts_with(b"ALTER ")
            && line.ends_with(b";\n")
            && line.windows(10).any(|w| w == b" OWNER TO ")
        {
            return Ok(None);
        }
        if self.head.is_some() {
            if at_start {
                self.observe(&line);
            }
            self.head_chunk.extend_from_slice(&line);
            if self.head_chunk.len() >= 256 * 1024 {
                let chunk = Bytes::from(std::mem::take(&mut self.head_chunk));
                self.head
                    .as_ref()
                    .expect("checked above")
                    .blocking_send(Ok(chunk))
                    .map_err(|_| Stop::Gone)?;
            }
        } else {
            self.tail
                .write_all(&line)
                .map_err(|e| Stop::Failed(spool_error(e)))?;
            self.tail_bytes += line.len() as u64;
        }
        Ok(None)
    }

    /// Keeps what the post-data's own session needs from the schema section.
    fn observe(&mut self, line: &Bytes) {
        if line.starts_with(b"-- Name: ") || line.starts_with(b"-- Data for Name: ") {
            self.in_preamble = false;
        }
        if self.in_preamble {
            if line.starts_with(b"SET ") || line.starts_with(b"SELECT pg_catalog.set_config(") {
                self.preamble.extend_from_slice(line);
                self.session_sql.push_str(&String::from_utf8_lossy(line));
            } else if line.starts_with(b"\\restrict ") {
                self.preamble.extend_from_slice(line);
            }
        } else if line.starts_with(b"SET default_tablespace = ") {
            self.default_tablespace = Some(line.clone());
        } else if line.starts_with(b"SET default_table_access_method = ") {
            self.default_am = Some(line.clone());
        }
    }

    /// The schema is whole: its last chunk goes to psql, whose stdin then closes, and the
    /// connections learn the session settings (when rows follow).
    fn end_head(&mut self, rows_follow: bool) -> std::result::Result<(), Stop> {
        let Some(head) = self.head.take() else {
            return Ok(());
        };
        if !self.head_chunk.is_empty() {
            let chunk = Bytes::from(std::mem::take(&mut self.head_chunk));
            head.blocking_send(Ok(chunk)).map_err(|_| Stop::Gone)?;
        }
        drop(head);
        let session = self.session.take().filter(|_| rows_follow);
        if let Some(session) = session {
            // No receiver means the load already stopped; the next send says so.
            let _ = session.send(std::mem::take(&mut self.session_sql));
        }
        Ok(())
    }

    fn send_rows(&mut self, copy: &Arc<str>, data: Bytes) -> std::result::Result<(), Stop> {
        if data.is_empty() {
            return Ok(());
        }
        self.rows += memchr::memchr_iter(b'\n', &data).count() as u64;
        self.pieces
            .blocking_send(Ok(Piece {
                copy: copy.clone(),
                data,
            }))
            .map_err(|_| Stop::Gone)
    }
}

/// Where a line of SQL script leaves the text: inside a quote, a comment, or between statements.
/// Enough of PostgreSQL's lexer to tell pg_dump's own `COPY` and `SET` lines from the same text
/// inside a function body, a string or a comment. pg_dump sets `standard_conforming_strings`, so
/// only `E'...'` strings take backslash escapes.
#[derive(Debug)]
struct Lexer {
    quote: Quote,
    /// Nothing but blanks and comments since the last `;` outside quotes.
    at_start: bool,
}

#[derive(Debug, PartialEq)]
enum Quote {
    None,
    /// `'...'`; `true` for `E'...'`.
    Single(bool),
    Ident,
    Dollar(Vec<u8>),
    /// `/* ... */`, nested to this depth.
    Block(u32),
}

impl Default for Lexer {
    fn default() -> Self {
        Lexer {
            quote: Quote::None,
            at_start: true,
        }
    }
}

fn ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80
}

/// The dollar-quote tag (`$$`, `$body$`) that starts at `line[i]`, if one does.
fn dollar_tag(line: &[u8], i: usize) -> Option<&[u8]> {
    let rest = &line[i + 1..];
    let n = rest.iter().take_while(|&&b| ident_byte(b)).count();
    let starts_ok = n == 0 || !rest[0].is_ascii_digit();
    (starts_ok && rest.get(n) == Some(&b'$')).then(|| &line[i..i + n + 2])
}

impl Lexer {
    fn at_statement_start(&self) -> bool {
        self.quote == Quote::None && self.at_start
    }

    fn line(&mut self, line: &[u8]) {
        if self.at_statement_start() && line.first() == Some(&b'\\') {
            // A psql meta-command (`\restrict`) ends at its line and is no statement.
            return;
        }
        let at = |i: usize, s: &[u8]| line[i..].starts_with(s);
        let mut i = 0;
        while i < line.len() {
            let c = line[i];
            match &mut self.quote {
                Quote::None => match c {
                    b'-' if at(i, b"--") => return,
                    b'/' if at(i, b"/*") => {
                        self.quote = Quote::Block(1);
                        i += 2;
                        continue;
                    }
                    b'\'' => {
                        let e = i > 0
                            && matches!(line[i - 1], b'E' | b'e')
                            && (i < 2 || !ident_byte(line[i - 2]));
                        self.quote = Quote::Single(e);
                        self.at_start = false;
                    }
                    b'"' => {
                        self.quote = Quote::Ident;
                        self.at_start = false;
                    }
                    b'$' if i == 0 || !ident_byte(line[i - 1]) => {
                        self.at_start = false;
                        if let Some(tag) = dollar_tag(line, i) {
                            i += tag.len();
                            self.quote = Quote::Dollar(tag.to_vec());
                            continue;
                        }
                    }
                    b';' => self.at_start = true,
                    c if c.is_ascii_whitespace() => {}
                    _ => self.at_start = false,
                },
                Quote::Single(escapes) => {
                    if *escapes && c == b'\\' {
                        i += 2;
                        continue;
                    }
                    if c == b'\'' {
                        if at(i, b"''") {
                            i += 2;
                            continue;
                        }
                        self.quote = Quote::None;
                    }
                }
                Quote::Ident => {
                    if c == b'"' {
                        if at(i, b"\"\"") {
                            i += 2;
                            continue;
                        }
                        self.quote = Quote::None;
                    }
                }
                Quote::Dollar(tag) => {
                    if c == b'$' && line[i..].starts_with(tag) {
                        i += tag.len();
                        self.quote = Quote::None;
                        continue;
                    }
                }
                Quote::Block(depth) => {
                    if at(i, b"/*") {
                        *depth += 1;
                        i += 2;
                        continue;
                    }
                    if at(i, b"*/") {
                        *depth -= 1;
                        if *depth == 0 {
                            self.quote = Quote::None;
                        }
                        i += 2;
                        continue;
                    }
                }
            }
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Which lines of `script` begin a statement outside any quote.
    fn starts(script: &str) -> Vec<bool> {
        let mut lx = Lexer::default();
        script
            .split_inclusive('\n')
            .map(|l| {
                let s = lx.at_statement_start();
                lx.line(l.as_bytes());
                s
            })
            .collect()
    }

    #[test]
    fn statements_are_told_from_text_inside_quotes_and_comments() {
        let script = "\\restrict abc\n\
            SET x = 1;\n\
            CREATE FUNCTION f() RETURNS text LANGUAGE sql AS $_$\n\
            COPY public.t (a) FROM stdin;\n\
            SELECT 'it''s'$_$;\n\
            COPY public.t (a) FROM stdin;\n";
        assert_eq!(starts(script), [true, true, true, false, false, true]);

        let script = "COMMENT ON TABLE t IS 'two\n\
            SET y = 2;\n\
            lines';\n\
            SET y = 3;\n\
            SELECT E'a\\'\n\
            COPY x FROM stdin;\n\
            ';\n\
            /* a /* nested */ comment\n\
            COPY x FROM stdin;\n\
            */ SELECT \"we;ird\n\
            id\" FROM t;\n\
            SELECT $1, a$b; -- a comment; $$\n\
            ALTER TABLE t OWNER TO r;\n";
        assert_eq!(
            starts(script),
            [true, false, false, true, true, false, false, true, false, false, false, true, true]
        );
    }

    /// What went to the schema's psql, the session settings, the pieces (statement, rows) and
    /// the reader's result.
    type Cut = (
        Vec<u8>,
        Option<String>,
        Vec<(String, Vec<u8>)>,
        Result<Split>,
    );

    /// Runs the reader over `dump`.
    fn cut(dump: &[u8]) -> Cut {
        let (head_tx, mut head_rx) = mpsc::channel(1 << 10);
        let (session_tx, session_rx) = oneshot::channel();
        let (piece_tx, mut piece_rx) = mpsc::channel(1 << 10);
        let dump = dump.to_vec();
        let split = Reader::new(true, head_tx, session_tx, piece_tx)
            .run(move || Ok(std::io::Cursor::new(dump)));
        let mut head = Vec::new();
        while let Ok(chunk) = head_rx.try_recv() {
            head.extend_from_slice(&chunk.unwrap());
        }
        let mut pieces = Vec::new();
        while let Ok(piece) = piece_rx.try_recv() {
            match piece {
                Ok(p) => pieces.push((p.copy.to_string(), p.data.to_vec())),
                Err(e) => pieces.push(("error".into(), e.to_string().into_bytes())),
            }
        }
        (head, session_rx.blocking_recv().ok(), pieces, split)
    }

    #[test]
    fn a_dump_is_cut_into_schema_rows_and_post_data() {
        let rows: String = (0..300_000).map(|i| format!("{i}\tv{i}\n")).collect();
        let dump = format!(
            "\\restrict k\nSET client_encoding = 'UTF8';\nSELECT pg_catalog.set_config('search_path', '', false);\n\
             --\n-- Name: t; Type: TABLE\n--\nSET default_tablespace = '';\nCREATE TABLE public.t (a int, b text);\n\
             ALTER TABLE public.t OWNER TO someone;\n\
             COPY public.t (a, b) FROM stdin;\n{rows}\\.\n\nCOPY public.e (a) FROM stdin;\n\\.\n\
             SELECT pg_catalog.setval('s', 5, true);\nCREATE INDEX i ON public.t (a);\n\\unrestrict k\n"
        );
        let (head, session, pieces, split) = cut(dump.as_bytes());
        let split = split.unwrap();
        let head = String::from_utf8(head).unwrap();
        assert!(
            head.ends_with("CREATE TABLE public.t (a int, b text);\n"),
            "{head}"
        );
        assert!(!head.contains("OWNER TO"), "--no-owner: {head}");
        assert_eq!(
            session.as_deref(),
            Some("SET client_encoding = 'UTF8';\nSELECT pg_catalog.set_config('search_path', '', false);\n")
        );
        assert!(pieces.len() > 2, "rows in several pieces: {}", pieces.len());
        assert!(pieces
            .iter()
            .all(|(c, d)| c == "COPY public.t (a, b) FROM stdin"
                && d.ends_with(b"\n")
                && d.len() <= 2 * PIECE));
        let joined: Vec<u8> = pieces.into_iter().flat_map(|(_, d)| d).collect();
        assert_eq!(joined, rows.as_bytes(), "every row, once, in order");
        assert_eq!((split.tables, split.rows), (2, 300_000));
        assert_eq!(split.plain_bytes, dump.len() as u64);
        let mut tail = String::new();
        let mut spool = split.tail;
        spool.rewind().unwrap();
        spool.read_to_string(&mut tail).unwrap();
        assert_eq!(
            tail,
            "\nSELECT pg_catalog.setval('s', 5, true);\nCREATE INDEX i ON public.t (a);\n\\unrestrict k\n"
        );
        assert_eq!(
            String::from_utf8(split.tail_preamble).unwrap(),
            "\\restrict k\nSET client_encoding = 'UTF8';\nSELECT pg_catalog.set_config('search_path', '', false);\nSET default_tablespace = '';\n"
        );
    }

    #[test]
    fn a_dump_that_ends_inside_rows_is_an_error_to_the_loaders() {
        let (_, _, pieces, split) =
            cut(b"CREATE TABLE public.t (a int);\nCOPY public.t (a) FROM stdin;\n1\n2\n");
        assert!(split.is_err());
        let last = pieces.last().expect("the error reaches the connections");
        assert_eq!(last.0, "error");
        assert!(String::from_utf8_lossy(&last.1).contains("without their end mark"));

        // A dump without rows never asks for the connections.
        let (_, session, _, split) = cut(b"CREATE TABLE public.t (a int);\n");
        assert!(
            split.is_ok() && session.is_none(),
            "no rows, no connections"
        );
    }

    #[test]
    fn dollar_tags_are_told_from_parameters() {
        assert_eq!(dollar_tag(b"$$ x", 0), Some(&b"$$"[..]));
        assert_eq!(dollar_tag(b"$body$ x", 0), Some(&b"$body$"[..]));
        assert_eq!(dollar_tag(b"$1 + $2", 0), None);
        assert_eq!(dollar_tag(b"$a", 0), None);
    }
}
