//! The status page's data: what an operator asks first ("are my backups fine?"), gathered once
//! per request by [`build`] into a [`PageData`] (from `ops::list`, the daemon's health verdict and
//! its schedule). [`super::render`] turns it into HTML.
//!
//! Off-site copies and restore tests: the page reads them as [`RemoteView`] and
//! [`RestoreTestView`], which [`remote_view`] (today: `None`, shown as "not configured"),
//! [`run_restore_test`] (each run's `restore_test` section, through `list`) and
//! [`latest_restore_test`] (the state file's last test, which outlives a pruned run) fill.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use super::Health;
use crate::catalog::state::RestoreTestState;
use crate::catalog::RunId;
use crate::config::Config;
use crate::error::Result;
use crate::ops::list::{FileSummary, RunSummary, Status, Totals};
use crate::schedule::Schedule;
use crate::sink::local::BackupDir;

/// How many runs the charts show, newest last.
pub const CHART_RUNS: usize = 30;

/// The state of a check the page shows beside runs (off-site copy, restore test).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewStatus {
    Ok,
    Failed,
    /// Started, or due and not done yet.
    Pending,
}

impl ViewStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ViewStatus::Ok => "ok",
            ViewStatus::Failed => "failed",
            ViewStatus::Pending => "pending",
        }
    }
}

/// The off-site copy as the page shows it.
#[derive(Debug, Clone)]
pub struct RemoteView {
    pub status: ViewStatus,
    /// Where copies go (a bucket, a host path), as the operator configured it.
    pub target: String,
    /// The newest run copied.
    pub last_run: Option<RunId>,
    /// When the newest copy that succeeded finished.
    pub last_success: Option<DateTime<Utc>>,
    /// One line: the error, or what is not copied yet.
    pub detail: String,
}

/// A restore test as the page shows it: one per tested run, and the newest for the summary.
#[derive(Debug, Clone)]
pub struct RestoreTestView {
    pub status: ViewStatus,
    /// The run whose backups were restored.
    pub run_id: Option<RunId>,
    pub tested_at: Option<DateTime<Utc>>,
    /// When the newest restore test that passed finished.
    pub last_success: Option<DateTime<Utc>>,
    /// One line: tables and rows compared, or what failed.
    pub detail: String,
}

/// A row of the history table.
#[derive(Debug, Clone)]
pub struct RunRow {
    pub run: RunSummary,
    pub restore_test: Option<RestoreTestView>,
}

/// Everything the page shows, read once per request.
#[derive(Debug, Clone)]
pub struct PageData {
    pub now: DateTime<Utc>,
    pub tz: Tz,
    pub schedule: String,
    pub backup_dir: String,
    pub health: Health,
    /// What `stackback status` reports: last run, last success, warnings.
    pub status: Status,
    /// Every run in the directory, newest first (`list`'s order).
    pub history: Vec<RunRow>,
    pub totals: Totals,
    pub unmanaged: Vec<FileSummary>,
    pub temp_files: Vec<FileSummary>,
    /// None: off-site copies are not configured.
    pub remote: Option<RemoteView>,
    /// None: restore tests are not configured (or none ran yet).
    pub restore_test: Option<RestoreTestView>,
}

/// What [`build`] reads besides the backup directory.
pub struct PageInput<'a> {
    pub cfg: &'a Config,
    pub schedule: &'a Schedule,
    pub health: &'a Health,
    pub now: DateTime<Utc>,
}

/// Reads the backup directory and gathers the page's data.
pub fn build(input: &PageInput) -> Result<PageData> {
    let dir = BackupDir::open(&input.cfg.backup_dir())?;
    let listing = crate::ops::list::list(&dir)?;
    let status = crate::ops::list::status(
        &dir,
        input.now,
        input.cfg.status()?,
        input.cfg.anomaly()?,
        input.health.next_run,
    )?;
    let history: Vec<RunRow> = listing
        .runs
        .into_iter()
        .map(|run| RunRow {
            restore_test: run_restore_test(&run),
            run,
        })
        .collect();
    let restore_test = latest_restore_test(&history, status.restore_test.as_ref());
    Ok(PageData {
        now: input.now,
        tz: input.schedule.tz(),
        schedule: input.schedule.expr().to_string(),
        backup_dir: listing.backup_dir,
        health: input.health.clone(),
        status,
        remote: remote_view(input.cfg),
        restore_test,
        history,
        totals: listing.totals,
        unmanaged: listing.unmanaged,
        temp_files: listing.temp_files,
    })
}

/// The off-site copy's state. None until off-site copies exist; then from their settings and
/// the state kept beside each run record (docs/run-record.md: not in the record itself).
fn remote_view(_cfg: &Config) -> Option<RemoteView> {
    None
}

/// One run's restore test, from the run's `restore_test` section as `list` carries it.
fn run_restore_test(run: &RunSummary) -> Option<RestoreTestView> {
    let t = run.restore_test.as_ref()?;
    let mut detail = match (t.tables, t.rows) {
        (Some(tables), Some(rows)) => format!("{tables} tables, {rows} rows"),
        _ => "the dump did not load".to_string(),
    };
    if t.objects_sampled > 0 {
        detail.push_str(&format!(", {} objects read back", t.objects_sampled));
    }
    if t.mismatches > 0 {
        detail.push_str(&format!(", {} mismatches", t.mismatches));
    }
    if let Some(e) = t.error.as_deref().filter(|_| !t.ok) {
        detail = format!("{detail}: {e}");
    }
    Some(RestoreTestView {
        status: if t.ok {
            ViewStatus::Ok
        } else {
            ViewStatus::Failed
        },
        run_id: Some(run.run_id.clone()),
        tested_at: Some(t.tested_at),
        last_success: t.ok.then_some(t.tested_at),
        detail,
    })
}

/// The newest restore test, with the time of the newest one that passed. The state file
/// (`status.restore_test`) knows both even after pruning removed the tested runs, so it wins; the
/// detail comes from the tested run's row while that run is still in the directory. Without a
/// state file (lost, or unreadable: `status` warns), the history alone answers.
fn latest_restore_test(
    history: &[RunRow],
    state: Option<&RestoreTestState>,
) -> Option<RestoreTestView> {
    let tests = || history.iter().filter_map(|r| r.restore_test.as_ref());
    let passed = tests()
        .filter(|t| t.status == ViewStatus::Ok)
        .filter_map(|t| t.tested_at)
        .max();
    let newest = tests().max_by_key(|t| t.tested_at);
    let Some(st) = state.filter(|st| newest.is_none_or(|n| n.tested_at <= Some(st.last_tested_at)))
    else {
        let newest = newest?;
        return Some(RestoreTestView {
            last_success: newest.last_success.or(passed),
            ..newest.clone()
        });
    };
    let row = tests().find(|t| t.run_id.as_ref() == Some(&st.last_run_id));
    Some(RestoreTestView {
        status: if st.last_ok {
            ViewStatus::Ok
        } else {
            ViewStatus::Failed
        },
        run_id: Some(st.last_run_id.clone()),
        tested_at: Some(st.last_tested_at),
        last_success: st.last_success_at.or(passed),
        detail: row.map_or_else(
            || "the tested run has been pruned since".to_string(),
            |r| r.detail.clone(),
        ),
    })
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn row(day: u32, status: Option<ViewStatus>) -> RunRow {
        let t = Utc.with_ymd_and_hms(2026, 11, day, 2, 0, 0).unwrap();
        RunRow {
            run: RunSummary {
                run_id: RunId::from_time(t),
                started_at: t,
                finished_at: None,
                duration_seconds: None,
                status: crate::catalog::RunState::Ok,
                failed_step: None,
                error: None,
                artifacts: Vec::new(),
                bytes: 0,
                restore_test: None,
                change: None,
                anomalies: Vec::new(),
                anomalies_acknowledged: false,
            },
            restore_test: status.map(|status| RestoreTestView {
                status,
                run_id: Some(RunId::from_time(t)),
                tested_at: Some(t + chrono::Duration::hours(1)),
                last_success: None,
                detail: String::new(),
            }),
        }
    }

    #[test]
    fn the_summary_is_the_newest_test_with_the_newest_success() {
        assert!(latest_restore_test(&[row(3, None), row(2, None)], None).is_none());
        let rows = [
            row(4, None),
            row(3, Some(ViewStatus::Failed)),
            row(2, Some(ViewStatus::Ok)),
            row(1, Some(ViewStatus::Ok)),
        ];
        let t = latest_restore_test(&rows, None).unwrap();
        assert_eq!(t.status, ViewStatus::Failed);
        assert_eq!(t.run_id, Some(rows[1].run.run_id.clone()));
        assert_eq!(
            t.last_success,
            rows[2].restore_test.as_ref().unwrap().tested_at
        );
    }
    /// The state file outlives pruning: with every tested run gone, the card still shows the last
    /// test and the last success; with the tested run still there, its detail too.
    #[test]
    fn the_state_file_keeps_the_summary_when_the_tested_run_is_pruned() {
        let at = |d| Utc.with_ymd_and_hms(2026, 11, d, 3, 0, 0).unwrap();
        let mut tested = row(1, Some(ViewStatus::Failed));
        let state = RestoreTestState {
            last_run_id: tested.run.run_id.clone(),
            last_tested_at: at(9),
            last_ok: false,
            last_success_run_id: Some(tested.run.run_id.clone()),
            last_success_at: Some(at(8)),
        };
        let t = latest_restore_test(&[row(5, None)], Some(&state)).unwrap();
        assert_eq!(t.status, ViewStatus::Failed);
        assert_eq!(t.run_id, Some(state.last_run_id.clone()));
        assert_eq!((t.tested_at, t.last_success), (Some(at(9)), Some(at(8))));
        assert!(t.detail.contains("pruned"), "{}", t.detail);

        tested.restore_test.as_mut().unwrap().detail = "2 tables, 5 rows".into();
        let t = latest_restore_test(&[row(5, None), tested], Some(&state)).unwrap();
        assert_eq!(t.detail, "2 tables, 5 rows");

        // A state file older than the history's newest test (it was lost and began again): the
        // history's newer test wins.
        let newer = row(20, Some(ViewStatus::Ok));
        let t = latest_restore_test(std::slice::from_ref(&newer), Some(&state)).unwrap();
        assert_eq!(t.status, ViewStatus::Ok);
        assert_eq!(t.run_id, Some(newer.run.run_id.clone()));
    }
}
