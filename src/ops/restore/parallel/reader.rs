//! The blocking side of a parallel load: the decompressed dump cut, as it streams, into the
//! schema (to the first psql), pieces of rows (to the connections) and the spooled post-data.

use std::io::{Read, Write};
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use tokio::sync::{mpsc, oneshot};

use super::lexer::Lexer;
use super::{spool_error, Piece, Split, PIECE, SPOOL_IN_MEMORY};
use crate::error::{Error, Problem, Result};

/// The blocking side: decompressed bytes in, cut into the schema (to the first psql), pieces of
/// rows (to the connections) and the spooled post-data.
pub(super) struct Reader {
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
pub(super) enum Stop {
    Failed(Error),
    Gone,
}

impl From<Error> for Stop {
    fn from(e: Error) -> Self {
        Stop::Failed(e)
    }
}

impl Reader {
    pub(super) fn new(
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
    pub(super) fn run<R: Read>(mut self, open: impl FnOnce() -> Result<R>) -> Result<Split> {
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
        // Within COPY data: how far `buf` is known to hold no terminator, and no newline.
        let mut scanned = 0usize;
        let mut no_newline = 0usize;
        loop {
            match &copy {
                None => match memchr::memchr(b'\n', &buf) {
                    Some(i) => {
                        let line = buf.split_to(i + 1).freeze();
                        copy = self.script_line(line)?;
                        (scanned, no_newline) = (0, 0);
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
                        if let Some(j) = memchr::memrchr(b'\n', &buf[no_newline..]) {
                            let data = buf.split_to(no_newline + j + 1).freeze();
                            let stmt = stmt.clone();
                            self.send_rows(&stmt, data)?;
                            scanned = buf.len();
                        }
                        // What is left is part of one row: a long row is searched once.
                        no_newline = buf.len();
                        if buf.len() < PIECE {
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
        if at_start {
            self.check_loadable(&line)?;
        }
        if at_start && line.starts_with(b"COPY ") {
            let stmt = std::str::from_utf8(&line[..line.len() - 2])
                .map_err(|_| not_parallel("a COPY statement is not UTF-8"))?;
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

    /// Refuses what loading rows over separate sessions cannot honour: a dump that changes its
    /// session's `search_path` or role between objects (pg_dump before 9.6.8 / 10.3, or
    /// `--use-set-session-authorization`), whose unqualified `COPY` would land elsewhere in a
    /// session that did not follow; and a `COPY` line that is not whole (a name holding a newline),
    /// whose rows could not be told from SQL.
    fn check_loadable(&self, line: &[u8]) -> std::result::Result<(), Stop> {
        let session = [
            "SET search_path",
            "SET SESSION AUTHORIZATION",
            "RESET SESSION AUTHORIZATION",
            "SET ROLE",
            "RESET ROLE",
        ];
        if !self.in_preamble && session.iter().any(|p| line.starts_with(p.as_bytes())) {
            return Err(not_parallel(
                "the dump changes its session's search_path or role between objects",
            ));
        }
        if line.starts_with(b"COPY ") && !line.ends_with(b" FROM stdin;\n") {
            return Err(not_parallel("a COPY statement spans lines"));
        }
        Ok(())
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

/// A dump the parallel load must not take: the database is dropped, and `--jobs 1` loads it.
fn not_parallel(why: &str) -> Stop {
    Stop::Failed(Error::step(
        "loading over several connections",
        format!("{why}, so its rows cannot be loaded over several connections: restore it with --jobs 1"),
    ))
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Seek};

    use super::*;

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
            // An error sent to the schema's psql is the reader's own, returned as well.
            if let Ok(chunk) = chunk {
                head.extend_from_slice(&chunk);
            }
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
    fn a_row_longer_than_a_piece_travels_whole() {
        let long = "x".repeat(3 * PIECE + 17);
        let rows = format!("1\t{long}\n2\tshort\n");
        let dump = format!("COPY public.t (a, b) FROM stdin;\n{rows}\\.\n");
        let (_, _, pieces, split) = cut(dump.as_bytes());
        assert_eq!(split.unwrap().rows, 2);
        let joined: Vec<u8> = pieces.iter().flat_map(|(_, d)| d.clone()).collect();
        assert_eq!(joined, rows.as_bytes());
        assert!(pieces.iter().all(|(_, d)| d.ends_with(b"\n")));
    }

    #[test]
    fn what_separate_sessions_cannot_load_is_refused() {
        // pg_dump before 9.6.8 / 10.3: an unqualified COPY after a per-object search_path.
        let old = "SET client_encoding = 'UTF8';\n--\n-- Name: t; Type: TABLE\n--\n\
                   SET search_path = s1, pg_catalog;\nCREATE TABLE t (a int);\n\
                   COPY t (a) FROM stdin;\n1\n\\.\n";
        let (_, _, _, split) = cut(old.as_bytes());
        let err = split.err().expect("refused").to_string();
        assert!(err.contains("--jobs 1"), "{err}");
        // The same line in the preamble is every session's, and fine.
        let modern = "SET search_path = s1, pg_catalog;\n--\n-- Name: t; Type: TABLE\n--\n\
                      CREATE TABLE t (a int);\nCOPY t (a) FROM stdin;\n1\n\\.\n";
        assert!(cut(modern.as_bytes()).3.is_ok());
        // A table name holding a newline: its COPY spans two lines.
        let split_copy =
            "CREATE TABLE \"a\nb\" (x int);\nCOPY public.\"a\nb\" (x) FROM stdin;\n1\n\\.\n";
        assert!(cut(split_copy.as_bytes()).3.is_err());
    }
}
