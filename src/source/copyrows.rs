//! The tables and rows a plain pg_dump stream carries, counted as the stream goes by.
//!
//! pg_dump writes each table's data as `COPY <table> (<columns>) FROM stdin;`, one line per row
//! (text format escapes newlines inside values), and `\.` alone on a line to end the block. A
//! restore reports what it loaded from these counts instead of scanning every table afterwards:
//! that scan read the whole database a second time (and, right after a bulk load, wrote every
//! page again to set hint bits), serially, after psql had finished.

/// Running count over a plain dump fed in chunks of any size.
#[derive(Debug, Default)]
pub struct CopyRows {
    tables: u64,
    rows: u64,
    in_copy: bool,
    /// The current line so far, when it began in an earlier chunk: all of it outside COPY data
    /// (up to [`HEADER_MAX`] bytes), its first bytes inside (enough to tell `\.`).
    line: Vec<u8>,
    /// The current line is longer than what `line` keeps.
    long: bool,
}

/// A COPY header names one table and at most 1,600 columns of at most 63 bytes each, quoted:
/// about 210 KB. A longer line is not a header.
const HEADER_MAX: usize = 1 << 20;

impl CopyRows {
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts what `data` adds to the stream.
    pub fn feed(&mut self, mut data: &[u8]) {
        while let Some(i) = memchr::memchr(b'\n', data) {
            self.keep(&data[..i]);
            self.end_line();
            data = &data[i + 1..];
        }
        self.keep(data);
    }

    /// `(tables, rows)`: COPY blocks seen, and data lines inside them.
    pub fn counts(&self) -> (u64, u64) {
        (self.tables, self.rows)
    }

    fn keep(&mut self, part: &[u8]) {
        if self.long || part.is_empty() {
            return;
        }
        let cap = if self.in_copy { 3 } else { HEADER_MAX };
        if self.line.len() + part.len() > cap {
            self.long = true;
            self.line.clear();
        } else {
            self.line.extend_from_slice(part);
        }
    }

    fn end_line(&mut self) {
        let line = std::mem::take(&mut self.line);
        let long = std::mem::replace(&mut self.long, false);
        if self.in_copy {
            if !long && line == b"\\." {
                self.in_copy = false;
            } else {
                self.rows += 1;
            }
        } else if !long && line.starts_with(b"COPY ") && line.ends_with(b"FROM stdin;") {
            self.in_copy = true;
            self.tables += 1;
        }
        self.line = line;
        self.line.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &str = "\
--
-- Data for Name: orders; Type: TABLE DATA; Schema: public; Owner: app
--

COPY public.orders (id, note) FROM stdin;
1\tfirst\\nline
2\t\\\\.
3\t\\N
\\.


--
-- Data for Name: empty; Type: TABLE DATA; Schema: public; Owner: app
--

COPY \"Odd\".\"We\"\"ird\"  FROM stdin;
\\.


COPY public.one (x) FROM stdin;
\\.x
\\.
SELECT pg_catalog.setval('public.orders_id_seq', 3, true);
-- PostgreSQL database dump complete
";

    #[test]
    fn counts_blocks_and_rows_whatever_the_chunking() {
        let whole = {
            let mut c = CopyRows::new();
            c.feed(DUMP.as_bytes());
            c.counts()
        };
        // orders: 3 rows (an escaped newline, a value that is `\.` escaped, a NULL); the empty
        // table with a quoted name and no column list; one row that starts with `\.`.
        assert_eq!(whole, (3, 4));
        for size in 1..=DUMP.len() {
            let mut c = CopyRows::new();
            for chunk in DUMP.as_bytes().chunks(size) {
                c.feed(chunk);
            }
            assert_eq!(c.counts(), whole, "chunks of {size}");
        }
    }

    #[test]
    fn long_lines_are_rows_and_never_headers() {
        let mut c = CopyRows::new();
        let long_row = "x".repeat(3 * HEADER_MAX);
        c.feed(format!("COPY public.t (a) FROM stdin;\n{long_row}\n\\.\n").as_bytes());
        assert_eq!(c.counts(), (1, 1));
        // A line past the header bound that happens to look like one is not a header.
        let fake = format!("COPY {} FROM stdin;\nnot a row\n", "x".repeat(HEADER_MAX));
        c.feed(fake.as_bytes());
        assert_eq!(c.counts(), (1, 1));
    }
}
