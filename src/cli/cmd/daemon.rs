//! `stackback daemon`: the scheduler, stopped cleanly by SIGTERM or SIGINT.

use stackback::config::Config;
use stackback::error::{exit, Error};

pub async fn run(cfg: Config, run_now: bool) -> Result<i32, Error> {
    use tokio::signal::unix::{signal, SignalKind};
    let (tx, rx) = tokio::sync::watch::channel(false);
    let mut term = signal(SignalKind::terminate()).map_err(|e| Error::Step {
        what: "installing the SIGTERM handler".into(),
        detail: e.to_string(),
    })?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| Error::Step {
        what: "installing the SIGINT handler".into(),
        detail: e.to_string(),
    })?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: finishing up"),
            _ = int.recv() => tracing::info!("SIGINT: finishing up"),
        }
        let _ = tx.send(true);
    });
    stackback::ops::daemon::daemon(cfg, run_now, rx).await?;
    Ok(exit::OK)
}
