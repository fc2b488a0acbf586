//! `stackback daemon`: backups on a cron schedule, with alerts, metrics and a health endpoint.
//!
//! The loop sleeps in slices of at most a second (short enough for seconds-resolution test
//! schedules, cheap otherwise) and compares wall-clock time with the next scheduled instant, which
//! is recomputed after every run and whenever the clock moves backwards; so suspend, clock jumps
//! and DST never make it miss or double a run. Runs happen one at a time: occurrences that fall due
//! while a run is still going are skipped, logged and counted. A run is aborted cleanly when it
//! exceeds BACKUP_TIMEOUT. On shutdown nothing new starts; a running backup gets BACKUP_STOP_GRACE
//! to finish, then is aborted cleanly. A failing run never stops the daemon.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::server::DaemonState;

/// Runs until `shutdown` flips to true. Returns after the HTTP server and any run have stopped.
pub async fn daemon(cfg: Config, run_now: bool, mut shutdown: watch::Receiver<bool>) -> Result<()> {
    let state = Arc::new(DaemonState {
        cfg: cfg.clone(),
        started_at: Utc::now(),
        counters: Default::default(),
        next_run: std::sync::Mutex::new(None),
    });
    let listener = tokio::net::TcpListener::bind(cfg.daemon.http_addr)
        .await
        .map_err(|e| Error::Step {
            what: format!("listening on {} (BACKUP_HTTP_ADDR)", cfg.daemon.http_addr),
            detail: e.to_string(),
        })?;
    info!(addr = %cfg.daemon.http_addr, "serving /metrics and /healthz");
    let mut server_stop = shutdown.clone();
    let app = crate::server::router(state.clone());
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = server_stop.wait_for(|s| *s).await;
            })
            .await
    });

    let sched = &cfg.daemon.schedule;
    let mut next = if run_now {
        Some(Utc::now())
    } else {
        sched.next_after(Utc::now())
    };
    let mut last_tick = Utc::now();
    loop {
        *state.next_run.lock().expect("not poisoned") = next;
        if let Some(n) = next {
            info!(next_run = %n.with_timezone(&sched.tz()), schedule = sched.expr(), "next backup");
        } else {
            warn!(schedule = sched.expr(), "the schedule has no future run");
        }
        // Wait for the next run, a clock change, or shutdown.
        loop {
            if *shutdown.borrow() {
                break;
            }
            let now = Utc::now();
            if now < last_tick - chrono::Duration::seconds(5) {
                warn!("the clock moved backwards: recomputing the next run");
                next = sched.next_after(now);
                *state.next_run.lock().expect("not poisoned") = next;
            }
            last_tick = now;
            if next.is_some_and(|n| now >= n) {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                _ = shutdown.changed() => {}
            }
        }
        if *shutdown.borrow() {
            break;
        }
        let started = Utc::now();
        one_run(&state, shutdown.clone()).await;
        let skipped = next.map_or(0, |n| sched.due_between(n, Utc::now()));
        if skipped > 0 {
            warn!(
                skipped,
                "scheduled runs fell due while the run was going: skipped"
            );
            state
                .counters
                .skipped
                .fetch_add(skipped as u64, Ordering::Relaxed);
        }
        last_tick = Utc::now();
        next = sched.next_after(Utc::now().max(started));
    }
    info!("shutting down");
    let _ = server.await;
    Ok(())
}

/// One scheduled run with its timeout, shutdown grace, alerts and metrics. Never fails.
async fn one_run(state: &Arc<DaemonState>, mut shutdown: watch::Receiver<bool>) {
    let cfg = &state.cfg;
    let timeout = cfg.daemon.timeout;
    let grace = cfg.daemon.stop_grace;
    let stop = async move {
        tokio::select! {
            _ = tokio::time::sleep(timeout) => format!("aborted: the run exceeded BACKUP_TIMEOUT ({} s)", timeout.as_secs()),
            _ = async {
                let _ = shutdown.wait_for(|s| *s).await;
                tokio::time::sleep(grace).await;
            } => format!("aborted: the daemon was stopped and the run did not finish within BACKUP_STOP_GRACE ({} s)", grace.as_secs()),
        }
    };
    match crate::ops::backup::run_until(cfg, stop).await {
        Ok(report) => {
            let r = &report.record;
            if report.error.is_some() {
                error!(run = %r.run_id, status = %r.status, step = r.failed_step.as_deref().unwrap_or(""), error = r.error.as_deref().unwrap_or(""), "backup run failed");
            } else {
                info!(run = %r.run_id, "backup run ok");
            }
            let n = crate::notify::after_run(cfg, r, Some(&state.counters)).await;
            for c in n.channels.iter().chain(&n.heartbeat).chain(&n.pushgateway) {
                if c.ok {
                    info!(channel = %c.channel, detail = %c.detail, "notified");
                }
            }
        }
        Err(e @ Error::Locked { .. }) => {
            warn!(error = %e, "skipping this scheduled run: another run holds the lock");
            state.counters.skipped.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => {
            // No run record could be written (the directory is unusable): alert all the same.
            error!(error = %cfg.redactor().redact(&e.to_string()), "backup run could not start");
            let mut ev = crate::notify::Event::test(cfg);
            ev.event = crate::notify::EventKind::Failure;
            ev.status = Some("failed".into());
            ev.failed_step = Some("start".into());
            ev.error = Some(cfg.redactor().redact(&format!(
                "{e}{}",
                e.hint().map(|h| format!(" (hint: {h})")).unwrap_or_default()
            )));
            crate::notify::send(cfg, &ev).await;
        }
    }
}
