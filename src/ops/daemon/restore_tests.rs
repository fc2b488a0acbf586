//! The daemon's restore tests (`BACKUP_RESTORE_TEST`): after each good run (`after-run`), or of
//! the latest good run on a cron schedule of their own. Backups and restore tests take turns
//! through one mutex, so a backup's prune never deletes the run under test; a test stops (and
//! drops its scratch) when the daemon shuts down. A failing test alerts through
//! [`crate::ops::restore_test::job`]; it never stops the daemon.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{watch, Mutex};
use tracing::{error, info, warn};

use crate::catalog::RunId;
use crate::config::RestoreTestMode;
use crate::ops::restore_test::{self, RestoreTestOptions};
use crate::ops::Selector;
use crate::schedule::Schedule;
use crate::server::DaemonState;

/// One restore test of `sel`, stopped by the daemon's shutdown. Never fails.
pub(super) async fn test(state: &DaemonState, sel: Selector, mut shutdown: watch::Receiver<bool>) {
    let stop = async move {
        let _ = shutdown.wait_for(|s| *s).await;
        "stopped: the daemon is shutting down".to_string()
    };
    let cfg = &state.cfg;
    match restore_test::job(
        cfg,
        &sel,
        &RestoreTestOptions::default(),
        stop,
        Some(&state.counters),
    )
    .await
    {
        Ok((report, _)) => match &report.error {
            None => {
                info!(run = %report.run_id, detail = %report.result.summary(), "restore test ok")
            }
            Some(e) => {
                error!(run = %report.run_id, error = %cfg.redactor().redact(&e.to_string()), "restore test failed")
            }
        },
        Err(e) => {
            error!(error = %cfg.redactor().redact(&e.to_string()), "restore test could not start")
        }
    }
}

/// After a good run in `after-run` mode: a test of that run.
pub(super) async fn after_run(
    state: &DaemonState,
    run: Option<RunId>,
    shutdown: watch::Receiver<bool>,
) {
    if let Some(id) = run {
        if !*shutdown.borrow() {
            test(state, Selector::Run(id), shutdown).await;
        }
    }
}

/// Starts the scheduled tests when `mode` has a schedule of its own.
pub(super) fn spawn(
    state: &Arc<DaemonState>,
    mode: &RestoreTestMode,
    turn: &Arc<Mutex<()>>,
    shutdown: &watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<()>> {
    match mode {
        RestoreTestMode::Schedule(s) => Some(tokio::spawn(scheduled(
            state.clone(),
            (**s).clone(),
            turn.clone(),
            shutdown.clone(),
        ))),
        _ => None,
    }
}

/// Tests of the latest good run on `schedule`, until shutdown; `turn` is held while one runs.
async fn scheduled(
    state: Arc<DaemonState>,
    schedule: Schedule,
    turn: Arc<Mutex<()>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut next = schedule.next_after(Utc::now());
    loop {
        let Some(due) = next else {
            warn!(
                schedule = schedule.expr(),
                "the restore-test schedule has no future run"
            );
            return;
        };
        info!(next_test = %due.with_timezone(&schedule.tz()), "next restore test");
        // Short slices against wall-clock time, as the backup loop does: suspend and clock jumps
        // neither skip nor double a test.
        while Utc::now() < due {
            if *shutdown.borrow() {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                _ = shutdown.changed() => {}
            }
        }
        {
            let _turn = turn.lock().await;
            if *shutdown.borrow() {
                return;
            }
            test(&state, Selector::Latest, shutdown.clone()).await;
        }
        crate::memory::give_back();
        next = schedule.next_after(Utc::now().max(due));
    }
}
