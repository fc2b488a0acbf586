//! Enough of PostgreSQL's lexer to follow a plain dump's SQL script line by line.

/// Where a line of SQL script leaves the text: inside a quote, a comment, or between statements.
/// Enough of PostgreSQL's lexer to tell pg_dump's own `COPY` and `SET` lines from the same text
/// inside a function body, a string or a comment. pg_dump sets `standard_conforming_strings`, so
/// only `E'...'` strings take backslash escapes.
#[derive(Debug)]
pub(super) struct Lexer {
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
    pub(super) fn at_statement_start(&self) -> bool {
        self.quote == Quote::None && self.at_start
    }

    pub(super) fn line(&mut self, line: &[u8]) {
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

    #[test]
    fn dollar_tags_are_told_from_parameters() {
        assert_eq!(dollar_tag(b"$$ x", 0), Some(&b"$$"[..]));
        assert_eq!(dollar_tag(b"$body$ x", 0), Some(&b"$body$"[..]));
        assert_eq!(dollar_tag(b"$1 + $2", 0), None);
        assert_eq!(dollar_tag(b"$a", 0), None);
    }
}
