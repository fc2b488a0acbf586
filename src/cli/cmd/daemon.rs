//! `stackback daemon`: the scheduler, stopped cleanly by SIGTERM or SIGINT.

use stackback::config::Config;
use stackback::error::{exit, Error};

pub async fn run(cfg: Config, run_now: bool) -> Result<i32, Error> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let stop = crate::cli::signals::stop_requested()?;
    tokio::spawn(async move {
        let name = stop.await;
        tracing::info!("{name}: finishing up");
        let _ = tx.send(true);
    });
    stackback::ops::daemon::daemon(cfg, run_now, rx).await?;
    Ok(exit::OK)
}
