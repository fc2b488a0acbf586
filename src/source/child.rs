//! The one way stackback drives a child process (pg_dump, pg_dumpall, psql).
//!
//! A child's stdout becomes a stream into a sink ([`stream_stdout`]), or a stream of chunks becomes
//! its stdin ([`feed_stdin`]). Either way stderr is drained on its own task (a chatty child can
//! never deadlock on a full pipe), the exit status is always checked after the last byte, and a
//! non-zero exit becomes [`Error::Child`] carrying the child's stderr. A dump that dies mid-stream
//! leaves a compressor output that would pass `gunzip -t`; only this check tells. Dropping the
//! future kills the child.

use std::io::Write;
use std::process::Stdio;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::redact::Redactor;

/// Largest amount of a child's stderr kept for errors and logs.
const STDERR_KEEP: usize = 32 * 1024;
const CHUNK: usize = 256 * 1024;

/// How a successful child ended.
#[derive(Debug, Default)]
pub struct ChildOutcome {
    /// Whatever the child wrote to stderr (warnings), redacted.
    pub stderr: String,
    /// Bytes that went through stdout or stdin.
    pub bytes: u64,
}

struct Running {
    tool: String,
    child: Child,
    stderr: JoinHandle<String>,
}

fn spawn(mut cmd: Command, tool: &str, stdin: bool, stdout: bool) -> Result<Running> {
    let pipe = |on: bool| if on { Stdio::piped() } else { Stdio::null() };
    cmd.stdin(pipe(stdin))
        .stdout(pipe(stdout))
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| Error::Child {
        tool: tool.to_string(),
        status: "could not start".into(),
        stderr: e.to_string(),
        cause: None,
    })?;
    let stderr = tokio::spawn(drain(child.stderr.take().expect("stderr is piped")));
    Ok(Running {
        tool: tool.to_string(),
        child,
        stderr,
    })
}

impl Running {
    /// Waits for the exit; a non-zero one becomes an error carrying stderr.
    async fn finish(mut self, redactor: &Redactor) -> Result<String> {
        let status = self.child.wait().await.map_err(|e| Error::Child {
            tool: self.tool.clone(),
            status: "could not be waited for".into(),
            stderr: e.to_string(),
            cause: None,
        })?;
        let stderr = redactor.redact(self.stderr.await.unwrap_or_default().trim());
        if status.success() {
            return Ok(stderr);
        }
        Err(Error::Child {
            tool: self.tool,
            status: match status.code() {
                Some(c) => format!("exit code {c}"),
                None => "killed by a signal".into(),
            },
            stderr: if stderr.is_empty() {
                "(no error output)".into()
            } else {
                stderr
            },
            cause: None,
        })
    }
}

/// Runs `cmd`, writing its stdout into `sink` chunk by chunk.
///
/// # Errors
/// [`Error::Child`] when the child cannot start or exits non-zero (with its stderr); [`Error::Io`]
/// when `sink` fails (the child is killed first).
pub async fn stream_stdout(
    cmd: Command,
    tool: &str,
    sink: &mut dyn Write,
    sink_name: &std::path::Path,
    redactor: &Redactor,
    progress: &Progress,
) -> Result<ChildOutcome> {
    let mut run = spawn(cmd, tool, false, true)?;
    let mut stdout = run.child.stdout.take().expect("stdout is piped");
    let mut buf = vec![0u8; CHUNK];
    let mut bytes = 0u64;
    let copied: Result<()> = loop {
        let n = match stdout.read(&mut buf).await {
            Ok(0) => break Ok(()),
            Ok(n) => n,
            Err(e) => {
                break Err(Error::Child {
                    tool: tool.to_string(),
                    status: "reading its output failed".into(),
                    stderr: e.to_string(),
                    cause: None,
                })
            }
        };
        // Compression is CPU work on the runtime thread; chunks are small enough that other
        // tasks (the daemon's HTTP server) still get their turn between them.
        if let Err(e) = sink.write_all(&buf[..n]) {
            break Err(Error::io("cannot write", sink_name, e));
        }
        bytes += n as u64;
        progress.add_bytes(n as u64);
    };
    if copied.is_err() {
        let _ = run.child.start_kill();
    }
    let finished = run.finish(redactor).await;
    copied?;
    Ok(ChildOutcome {
        stderr: finished?,
        bytes,
    })
}

/// Runs `cmd`, writing the chunks from `input` to its stdin. An `Err` chunk (the source could not
/// be read to the end) kills the child before its stdin closes, so it never sees a clean end of a
/// truncated input; that error is returned.
pub async fn feed_stdin(
    cmd: Command,
    tool: &str,
    mut input: mpsc::Receiver<Result<Bytes>>,
    redactor: &Redactor,
) -> Result<ChildOutcome> {
    let mut run = spawn(cmd, tool, true, false)?;
    let mut stdin = run.child.stdin.take().expect("stdin is piped");
    let mut bytes = 0u64;
    let mut source_error = None;
    while let Some(chunk) = input.recv().await {
        match chunk {
            Ok(b) => {
                // A write error means the child exited early: its status says why.
                if stdin.write_all(&b).await.is_err() {
                    break;
                }
                bytes += b.len() as u64;
            }
            Err(e) => {
                let _ = run.child.start_kill();
                source_error = Some(e);
                break;
            }
        }
    }
    drop(input);
    if source_error.is_none() {
        let _ = stdin.shutdown().await;
    }
    drop(stdin);
    let finished = run.finish(redactor).await;
    if let Some(e) = source_error {
        return Err(e);
    }
    Ok(ChildOutcome {
        stderr: finished?,
        bytes,
    })
}

/// Reads a stream to its end, keeping the first [`STDERR_KEEP`] bytes.
async fn drain(mut r: impl AsyncRead + Unpin) -> String {
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    let mut dropped = 0usize;
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = STDERR_KEEP.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
                dropped += n.saturating_sub(room);
            }
        }
    }
    let mut s = String::from_utf8_lossy(&kept).into_owned();
    if dropped > 0 {
        s.push_str(&format!("\n[... {dropped} more bytes of error output]"));
    }
    s
}
