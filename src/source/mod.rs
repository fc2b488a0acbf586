//! Sources of backup bytes: a database through pg_dump, buckets through the S3 API, a directory.
//!
//! [`run_child`] is the one way a child process's stdout becomes a stream: stderr is drained on its
//! own task (a chatty child can never deadlock on a full pipe), the exit status is always checked
//! after the last byte, and a non-zero exit becomes an error carrying the child's stderr. A dump that
//! dies mid-stream leaves a compressor output that would pass `gunzip -t`; only this check tells.

pub mod bucket;
pub mod dir;
pub mod postgres;

use std::io::Write;
use std::process::Stdio;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

use crate::config::Redactor;
use crate::error::{Error, Result};

/// Largest amount of a child's stderr kept for errors and logs.
const STDERR_KEEP: usize = 32 * 1024;
const CHUNK: usize = 256 * 1024;

/// How a successful child ended.
#[derive(Debug, Default)]
pub struct ChildOutcome {
    /// Whatever the child wrote to stderr (warnings), redacted.
    pub stderr: String,
}

/// Runs `cmd`, writing its stdout into `sink` chunk by chunk.
///
/// # Errors
/// [`Error::Child`] when the child cannot start or exits non-zero (with its stderr); [`Error::Io`]
/// when `sink` fails (the child is killed first). Dropping the future kills the child.
pub async fn run_child(
    mut cmd: Command,
    tool: &str,
    sink: &mut dyn Write,
    sink_name: &std::path::Path,
    redactor: &Redactor,
    progress: &crate::progress::Progress,
) -> Result<ChildOutcome> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| Error::Child {
        tool: tool.to_string(),
        status: "could not start".into(),
        stderr: e.to_string(),
    })?;
    let stderr = child.stderr.take().expect("stderr is piped");
    let stderr_task = tokio::spawn(drain(stderr));
    let mut stdout = child.stdout.take().expect("stdout is piped");

    let mut buf = vec![0u8; CHUNK];
    let copy_result: Result<()> = loop {
        let n = match stdout.read(&mut buf).await {
            Ok(0) => break Ok(()),
            Ok(n) => n,
            Err(e) => {
                break Err(Error::Child {
                    tool: tool.to_string(),
                    status: "reading its output failed".into(),
                    stderr: e.to_string(),
                })
            }
        };
        // Compression is CPU work on the runtime thread; chunks are small enough that other
        // tasks (the daemon's HTTP server) still get their turn between them.
        if let Err(e) = sink.write_all(&buf[..n]) {
            break Err(Error::io("cannot write", sink_name, e));
        }
        progress.add_bytes(n as u64);
    };
    if copy_result.is_err() {
        let _ = child.start_kill();
    }
    let status = child.wait().await.map_err(|e| Error::Child {
        tool: tool.to_string(),
        status: "could not be waited for".into(),
        stderr: e.to_string(),
    })?;
    let stderr_text = redactor.redact(stderr_task.await.unwrap_or_default().trim());
    copy_result?;
    if !status.success() {
        let status = match status.code() {
            Some(c) => format!("exit code {c}"),
            None => "killed by a signal".into(),
        };
        return Err(Error::Child {
            tool: tool.to_string(),
            status,
            stderr: if stderr_text.is_empty() {
                "(no error output)".into()
            } else {
                stderr_text
            },
        });
    }
    Ok(ChildOutcome {
        stderr: stderr_text,
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
