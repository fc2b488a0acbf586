//! `stackback daemon`: backups on a cron schedule, with alerts, metrics and a health endpoint.
//!
//! The loop sleeps in short slices and compares wall-clock time with the next scheduled instant,
//! which is recomputed after every run and whenever the clock moves backwards; so suspend, clock
//! jumps and DST never make it miss or double a run. Runs happen one at a time: occurrences that
//! fall due while a run is still going are skipped, logged and counted. A run is aborted cleanly
//! when it exceeds BACKUP_TIMEOUT. On shutdown nothing new starts; a running backup gets
//! BACKUP_STOP_GRACE to finish, then is aborted cleanly. A failing run never stops the daemon.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::config::{Config, RestoreTestMode, Section};
use crate::error::{Error, Result};
use crate::server::DaemonState;

mod restore_tests;

/// Runs until `shutdown` flips to true. Returns after the HTTP server and any run have stopped.
pub async fn daemon(cfg: Config, run_now: bool, mut shutdown: watch::Receiver<bool>) -> Result<()> {
    // The daemon uses every section: a broken setting stops it now, not at 02:00.
    cfg.require(&Section::ALL)?;
    // Restore tests of sealed backups need the identity; a host that has none would fail every
    // test. The identity belongs off the backup host: test from there with --from-remote.
    if !matches!(cfg.restore_test()?.mode, RestoreTestMode::Off)
        && cfg.encryption()?.recipients.is_some()
        && cfg.identities()?.is_none()
    {
        return Err(Error::config(
            "restore_test.mode (BACKUP_RESTORE_TEST)",
            "restore tests of encrypted backups need BACKUP_AGE_IDENTITY_FILE, which this host does not have (and should not: keep the identity off the backup host); set BACKUP_RESTORE_TEST=off here and run `stackback verify --restore-test --from-remote latest` on the host that holds the identity",
        ));
    }
    let addr = cfg.http_addr()?;
    let schedule = cfg.schedule()?.clone();
    let state = Arc::new(DaemonState {
        cfg: cfg.clone(),
        schedule: schedule.clone(),
        started_at: Utc::now(),
        counters: Default::default(),
        next_run: std::sync::Mutex::new(None),
        setup_problems: Default::default(),
    });
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::step(format!("listening on {addr} (BACKUP_HTTP_ADDR)"), e))?;
    info!(addr = %addr, "serving /metrics and /healthz");
    let mut server_stop = shutdown.clone();
    let app = crate::server::router(state.clone());
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = server_stop.wait_for(|s| *s).await;
            })
            .await
    });

    check_setup(&state).await;
    let mode = cfg.restore_test()?.mode.clone();
    // Backups and restore tests take turns.
    let turn = Arc::new(tokio::sync::Mutex::new(()));
    let tests = restore_tests::spawn(&state, &mode, &turn, &shutdown);
    let sched = &schedule.schedule;
    let mut next = if run_now {
        Some(Utc::now())
    } else {
        sched.next_after(Utc::now())
    };
    loop {
        *state.next_run.lock().expect("not poisoned") = next;
        match next {
            Some(n) => {
                info!(next_run = %n.with_timezone(&sched.tz()), schedule = sched.expr(), "next backup")
            }
            None => warn!(schedule = sched.expr(), "the schedule has no future run"),
        }
        next = wait_until_due(&state, next, &mut shutdown).await;
        if *shutdown.borrow() {
            break;
        }
        let started = Utc::now();
        {
            let _turn = turn.lock().await;
            let ok_run = one_run(&state, shutdown.clone()).await;
            if matches!(mode, RestoreTestMode::AfterRun) {
                restore_tests::after_run(&state, ok_run, shutdown.clone()).await;
            }
        }
        crate::memory::give_back();
        let mem = crate::memory::usage();
        info!(
            heap_in_use_bytes = mem.heap_in_use,
            resident_bytes = mem.resident,
            "memory after the run"
        );
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
        next = sched.next_after(Utc::now().max(started));
    }
    info!("shutting down");
    if let Some(t) = tests {
        let _ = t.await;
    }
    let _ = server.await;
    Ok(())
}

/// Checks the setup (retrying for BACKUP_STARTUP_GRACE) and reports what is broken: in the log,
/// on /healthz, and as an alert.
async fn check_setup(state: &Arc<DaemonState>) {
    let cfg = &state.cfg;
    let grace = state.schedule.startup_grace;
    let report = crate::ops::setup::check_with_grace(cfg, grace, Duration::from_secs(5)).await;
    for w in &report.warnings {
        warn!("setup: {w}");
    }
    if report.problems.is_empty() {
        info!("setup checked: directory, database and buckets answer");
        return;
    }
    let text = report.problems.join("; ");
    error!(problems = %text, "the setup is broken: backups will fail until it is fixed");
    *state.setup_problems.lock().expect("not poisoned") = report.problems.clone();
    if let Ok(n) = cfg.notify() {
        let redactor = cfg.redactor();
        let ev = crate::notify::Event::start_failure(n, format!("setup check: {text}"));
        crate::notify::send(n, &redactor, &ev).await;
        crate::notify::heartbeat(n, &redactor, false).await;
    }
}

/// Waits for `next`, shutdown, or a clock that moved backwards (then the next run is recomputed).
/// Returns the instant waited for.
async fn wait_until_due(
    state: &DaemonState,
    mut next: Option<DateTime<Utc>>,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<DateTime<Utc>> {
    let sched = &state.schedule.schedule;
    let mut last_tick = Utc::now();
    loop {
        if *shutdown.borrow() {
            return next;
        }
        let now = Utc::now();
        if now < last_tick - chrono::Duration::seconds(5) {
            warn!("the clock moved backwards: recomputing the next run");
            next = sched.next_after(now);
            *state.next_run.lock().expect("not poisoned") = next;
        }
        last_tick = now;
        if next.is_some_and(|n| now >= n) {
            return next;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// One scheduled run with its timeout, shutdown grace, alerts and metrics. Never fails; returns
/// the run's id when it ended ok.
async fn one_run(
    state: &Arc<DaemonState>,
    mut shutdown: watch::Receiver<bool>,
) -> Option<crate::catalog::RunId> {
    let cfg = &state.cfg;
    let grace = state.schedule.stop_grace;
    // BACKUP_TIMEOUT is the job's own; a shutdown adds the grace period.
    let stop = async move {
        let _ = shutdown.wait_for(|s| *s).await;
        tokio::time::sleep(grace).await;
        format!(
            "aborted: the daemon was stopped and the run did not finish within BACKUP_STOP_GRACE ({} s)",
            grace.as_secs()
        )
    };
    let progress = crate::progress::Progress::default();
    let job = match crate::ops::job::run(cfg, stop, &progress, Some(&state.counters)).await {
        Ok(j) => j,
        Err(e) => {
            error!(error = %cfg.redactor().redact(&e.to_string()), "backup run could not start");
            return None;
        }
    };
    match &job.run {
        Ok(report) => {
            let r = &report.record;
            if report.error.is_some() {
                error!(run = %r.run_id, status = %r.status, step = %r.failed_step.as_ref().map(|s| s.to_string()).unwrap_or_default(), error = r.error.as_deref().unwrap_or(""), "backup run failed");
            } else {
                info!(run = %r.run_id, "backup run ok");
                // A good run proves the setup works now.
                state.setup_problems.lock().expect("not poisoned").clear();
            }
        }
        Err(e @ Error::Locked { .. }) => {
            warn!(error = %e, "skipping this scheduled run: another run holds the lock");
            state.counters.skipped.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => {
            error!(error = %cfg.redactor().redact(&e.to_string()), "backup run could not start");
        }
    }
    let n = &job.notify;
    for c in n.channels.iter().chain(&n.heartbeat).chain(&n.pushgateway) {
        if c.ok {
            info!(channel = %c.channel, detail = %c.detail, "notified");
        }
    }
    match &job.run {
        Ok(r) if r.error.is_none() => Some(r.record.run_id.clone()),
        _ => None,
    }
}
