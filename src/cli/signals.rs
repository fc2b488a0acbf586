//! SIGTERM and SIGINT as a future: how `run` and `daemon` learn that systemd, docker or an
//! operator wants them to stop, so they stop cleanly instead of dying mid-write.

use stackback::error::Error;
use tokio::signal::unix::{signal, SignalKind};

/// Installs the handlers now (so a signal that arrives before the future is polled still counts)
/// and returns a future that completes with the name of the first signal received.
pub fn stop_requested() -> Result<impl std::future::Future<Output = &'static str>, Error> {
    let install = |kind: SignalKind, name: &str| {
        signal(kind).map_err(|e| Error::Step {
            what: format!("installing the {name} handler"),
            detail: e.to_string(),
        })
    };
    let mut term = install(SignalKind::terminate(), "SIGTERM")?;
    let mut int = install(SignalKind::interrupt(), "SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    })
}
