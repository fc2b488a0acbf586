//! A fault-injecting HTTP/1.1 proxy to put in front of a real S3 server (or any HTTP service).
//!
//! stackback talks to `proxy.url()` instead of the server; requests pass through unchanged (the
//! `Host` header too, so SigV4 signatures stay valid) unless a [`Rule`] matches, and then the
//! rule's [`Fault`] is applied: an error status instead of the answer, a delay, a connection reset
//! before or in the middle of the answer, an upload cut in the middle of its body, a corrupted
//! answer or upload body, or a hold until the test opens a [`Gate`] (to make a race happen at a chosen point,
//! every time). Every request is logged.
//!
//! One upstream connection per request keeps the relaying simple; the client's connection is kept
//! alive between requests as HTTP/1.1 clients expect. Listens on port 0: no port race. Its threads
//! live as long as the test process (a test's proxy is small and never stopped).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// What to do with a matching request.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer with this status and an S3-style XML error body; nothing reaches the server.
    Status(u16),
    /// Wait this long before forwarding.
    Delay(Duration),
    /// Forward, then send the answer's body at most this many bytes per second.
    Throttle(usize),
    /// Reset the client's connection (RST) without answering; nothing reaches the server.
    Reset,
    /// Forward, send the answer's head and this many body bytes, then reset the connection.
    /// (S3 answers carry a Content-Length; a chunked answer is relayed whole, then reset.)
    ResetAfter(usize),
    /// Forward the request's head and only this many bytes of its body, then reset both the
    /// client's and the server's connection: an upload cut mid-way, as the server sees it too
    /// (a body shorter than its Content-Length, then a reset). No answer is sent.
    CutUpload(usize),
    /// Forward, and flip one byte in the middle of the answer's body (length unchanged).
    CorruptBody,
    /// Forward the request with one byte in the middle of its body flipped (length unchanged):
    /// an upload changed on the way, which the server must refuse.
    CorruptUpload,
    /// Wait until the gate opens, then forward.
    Hold(Gate),
}

/// Which requests a rule applies to.
#[derive(Clone, Debug)]
pub struct Rule {
    /// `GET`, `PUT`... or any method.
    pub method: Option<String>,
    /// The request target (path and query, as sent) must contain this.
    pub path_contains: String,
    /// Apply to this many matching requests, then let them pass; `None`: every one.
    pub times: Option<usize>,
    pub fault: Fault,
}

impl Rule {
    pub fn new(method: Option<&str>, path_contains: &str, fault: Fault) -> Rule {
        Rule {
            method: method.map(String::from),
            path_contains: path_contains.to_string(),
            times: None,
            fault,
        }
    }

    pub fn times(mut self, n: usize) -> Rule {
        self.times = Some(n);
        self
    }

    fn matches(&self, method: &str, target: &str) -> bool {
        self.method.as_deref().is_none_or(|m| m == method)
            && target.contains(&self.path_contains)
            && self.times != Some(0)
    }
}

/// A request the proxy saw, and what happened to it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub target: String,
    /// The status sent back (0 when the connection was reset instead).
    pub status: u16,
    pub fault: Option<String>,
}

/// Opens once; every hold on it waits until then. `reached` tells the test a request is held.
#[derive(Clone, Debug, Default)]
pub struct Gate(Arc<(Mutex<(bool, usize)>, Condvar)>);

impl Gate {
    pub fn new() -> Gate {
        Gate::default()
    }

    pub fn open(&self) {
        let (m, cv) = &*self.0;
        m.lock().unwrap().0 = true;
        cv.notify_all();
    }

    /// Waits until `n` requests are held here (panics after `limit`).
    pub fn wait_reached(&self, n: usize, limit: Duration) {
        let (m, cv) = &*self.0;
        let deadline = Instant::now() + limit;
        let mut g = m.lock().unwrap();
        while g.1 < n {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no request reached the gate within {limit:?}"
            );
            g = cv.wait_timeout(g, left).unwrap().0;
        }
    }

    fn hold(&self) {
        let (m, cv) = &*self.0;
        let mut g = m.lock().unwrap();
        g.1 += 1;
        cv.notify_all();
        // A test that forgets to open the gate must not hang the suite.
        let deadline = Instant::now() + Duration::from_secs(120);
        while !g.0 && Instant::now() < deadline {
            g = cv.wait_timeout(g, Duration::from_millis(200)).unwrap().0;
        }
    }
}

#[derive(Default)]
struct State {
    rules: Vec<Rule>,
    seen: Vec<Seen>,
}

pub struct Proxy {
    pub port: u16,
    state: Arc<Mutex<State>>,
}

impl Proxy {
    /// A proxy in front of `upstream` (`http://host:port`), on a port of its own.
    pub fn start(upstream: &str) -> Proxy {
        let addr: SocketAddr = upstream
            .strip_prefix("http://")
            .expect("the proxy speaks plain http")
            .trim_end_matches('/')
            .parse()
            .expect("upstream as http://IP:PORT");
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let st = st.clone();
                std::thread::spawn(move || {
                    let _ = serve(conn, addr, &st);
                });
            }
        });
        Proxy { port, state }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn add(&self, rule: Rule) {
        self.state.lock().unwrap().rules.push(rule);
    }

    pub fn clear(&self) {
        self.state.lock().unwrap().rules.clear();
    }

    /// Every request so far, in arrival order.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }
}

/// The fault for this request, if a rule matches (counting it against the rule's `times`).
fn pick(state: &Mutex<State>, method: &str, target: &str) -> Option<Fault> {
    let mut st = state.lock().unwrap();
    let rule = st.rules.iter_mut().find(|r| r.matches(method, target))?;
    if let Some(n) = &mut rule.times {
        *n -= 1;
    }
    Some(rule.fault.clone())
}

fn log(state: &Mutex<State>, method: &str, target: &str, status: u16, fault: &Option<Fault>) {
    state.lock().unwrap().seen.push(Seen {
        method: method.to_string(),
        target: target.to_string(),
        status,
        fault: fault.as_ref().map(|f| format!("{f:?}")),
    });
}

/// One HTTP message head: the start line and headers, as received.
struct Head {
    raw: Vec<u8>,
    start: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn read(r: &mut impl BufRead) -> std::io::Result<Option<Head>> {
        let mut raw = Vec::new();
        loop {
            let n = r.read_until(b'\n', &mut raw)?;
            if n == 0 {
                return if raw.is_empty() {
                    Ok(None)
                } else {
                    Err(std::io::ErrorKind::UnexpectedEof.into())
                };
            }
            if raw.ends_with(b"\r\n\r\n") || raw == b"\r\n" {
                break;
            }
        }
        let text = String::from_utf8_lossy(&raw).into_owned();
        let mut lines = text.split("\r\n");
        let start = lines.next().unwrap_or_default().to_string();
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        Ok(Some(Head {
            raw,
            start,
            headers,
        }))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn chunked(&self) -> bool {
        self.header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    }

    fn content_length(&self) -> Option<u64> {
        self.header("content-length")?.parse().ok()
    }
}

fn serve(client: TcpStream, upstream: SocketAddr, state: &Mutex<State>) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut client_w = client;
    while let Some(req) = Head::read(&mut reader)? {
        let mut parts = req.start.split(' ');
        let method = parts.next().unwrap_or_default().to_string();
        let target = parts.next().unwrap_or_default().to_string();
        let fault = pick(state, &method, &target);
        match &fault {
            Some(Fault::Status(code)) => {
                // Drain the body so the connection stays usable for the next request.
                relay_body(&req, &mut reader, &mut std::io::sink(), &Body::Plain)?;
                let body = format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{}</Code><Message>injected by the test proxy</Message></Error>",
                    if *code == 503 { "SlowDown" } else { "InternalError" }
                );
                write!(
                    client_w,
                    "HTTP/1.1 {code} Injected\r\ncontent-type: application/xml\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                )?;
                log(state, &method, &target, *code, &fault);
                continue;
            }
            Some(Fault::Reset) => {
                log(state, &method, &target, 0, &fault);
                return reset(&client_w);
            }
            Some(Fault::CutUpload(n)) => {
                if req
                    .header("expect")
                    .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
                {
                    // Otherwise the client would hold the body back.
                    client_w.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
                }
                let up = TcpStream::connect(upstream)?;
                let mut up_w = up.try_clone()?;
                up_w.write_all(&req.raw)?;
                // The framing does not matter here: the first `n` bytes on the wire are sent.
                let n = req
                    .content_length()
                    .map_or(*n as u64, |len| len.min(*n as u64));
                std::io::copy(&mut (&mut reader).take(n), &mut up_w)?;
                up_w.flush()?;
                log(state, &method, &target, 0, &fault);
                reset(&up)?;
                return reset(&client_w);
            }
            Some(Fault::Delay(d)) => std::thread::sleep(*d),
            Some(Fault::Hold(g)) => g.hold(),
            _ => {}
        }
        if req
            .header("expect")
            .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
        {
            // Answer the client ourselves; the server's own 100 is skipped below.
            client_w.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }
        let up = TcpStream::connect(upstream)?;
        let mut up_w = up.try_clone()?;
        up_w.write_all(&req.raw)?;
        let upload = match &fault {
            Some(Fault::CorruptUpload) => Body::Corrupt,
            _ => Body::Plain,
        };
        relay_body(&req, &mut reader, &mut up_w, &upload)?;
        up_w.flush()?;
        let mut up_r = BufReader::new(up);
        let resp = loop {
            let h = Head::read(&mut up_r)?.ok_or(std::io::ErrorKind::UnexpectedEof)?;
            if !h
                .start
                .split(' ')
                .nth(1)
                .is_some_and(|s| s.starts_with('1'))
            {
                break h;
            }
        };
        let status: u16 = resp
            .start
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let no_body = method == "HEAD" || status == 204 || status == 304;
        let body = match &fault {
            Some(Fault::CorruptBody) => Body::Corrupt,
            Some(Fault::ResetAfter(n)) => Body::ResetAfter(*n),
            Some(Fault::Throttle(bps)) => Body::Throttle(*bps),
            _ => Body::Plain,
        };
        log(state, &method, &target, status, &fault);
        client_w.write_all(&resp.raw)?;
        if no_body {
            continue;
        }
        if resp.content_length().is_none() && !resp.chunked() {
            // Delimited by the end of the connection: relay to EOF, then close ours too.
            relay_until_eof(&mut up_r, &mut client_w, &body)?;
            return client_w.shutdown(Shutdown::Both);
        }
        if let Body::ResetAfter(_) = body {
            relay_body(&resp, &mut up_r, &mut client_w, &body)?;
            return reset(&client_w);
        }
        relay_body(&resp, &mut up_r, &mut client_w, &body)?;
        client_w.flush()?;
    }
    Ok(())
}

/// How a body is passed on.
enum Body {
    Plain,
    Corrupt,
    ResetAfter(usize),
    Throttle(usize),
}

/// Copies one message body framed as `head` says (length or chunked), applying `how` to its bytes.
fn relay_body(
    head: &Head,
    r: &mut impl BufRead,
    w: &mut impl Write,
    how: &Body,
) -> std::io::Result<()> {
    if head.chunked() {
        // Chunked framing is relayed as is; a corruption goes into the first chunk's data.
        let mut first = true;
        loop {
            let mut line = Vec::new();
            r.read_until(b'\n', &mut line)?;
            w.write_all(&line)?;
            let size = usize::from_str_radix(
                String::from_utf8_lossy(&line)
                    .trim()
                    .split(';')
                    .next()
                    .unwrap_or("0"),
                16,
            )
            .map_err(|_| std::io::Error::other("bad chunk size"))?;
            if size == 0 {
                // Trailers, up to the empty line.
                loop {
                    let mut t = Vec::new();
                    r.read_until(b'\n', &mut t)?;
                    w.write_all(&t)?;
                    if t == b"\r\n" || t.is_empty() {
                        return Ok(());
                    }
                }
            }
            let mut data = vec![0u8; size + 2];
            r.read_exact(&mut data)?;
            if first {
                transform(&mut data[..size], how);
                first = false;
            }
            write_paced(w, &data, how)?;
        }
    }
    let len = head.content_length().unwrap_or(0) as usize;
    let mut sent = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    while sent < len {
        let n = r.read(&mut buf[..(len - sent).min(64 * 1024)])?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let chunk = &mut buf[..n];
        if matches!(how, Body::Corrupt) && sent <= len / 2 && len / 2 < sent + n {
            chunk[len / 2 - sent] ^= 0x20;
        }
        if let Body::ResetAfter(limit) = how {
            let keep = (*limit).saturating_sub(sent).min(n);
            w.write_all(&chunk[..keep])?;
            w.flush()?;
            if sent + n >= *limit {
                return Ok(());
            }
        } else {
            write_paced(w, chunk, how)?;
        }
        sent += n;
    }
    Ok(())
}

fn transform(data: &mut [u8], how: &Body) {
    if matches!(how, Body::Corrupt) && !data.is_empty() {
        let mid = data.len() / 2;
        data[mid] ^= 0x20;
    }
}

fn write_paced(w: &mut impl Write, data: &[u8], how: &Body) -> std::io::Result<()> {
    let Body::Throttle(bps) = how else {
        return w.write_all(data);
    };
    let step = (*bps / 10).max(1);
    for piece in data.chunks(step) {
        w.write_all(piece)?;
        w.flush()?;
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

fn relay_until_eof(r: &mut impl Read, w: &mut impl Write, how: &Body) -> std::io::Result<()> {
    let mut all = Vec::new();
    r.read_to_end(&mut all)?;
    transform(&mut all, how);
    write_paced(w, &all, how)
}

/// Makes the coming close send RST instead of FIN: SO_LINGER with a zero timeout.
fn reset(s: &TcpStream) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // The RST goes out when the caller drops its last handle of the socket.
    Ok(())
}
