//! Retention: which runs to keep and which to delete, as a pure function of the runs, the policy
//! and the time. No I/O here; `ops::prune` carries the decisions out.
//!
//! Rules (a run is kept if any rule keeps it):
//! - runs are ordered by their sequence (then id), which no clock can disturb;
//! - only `ok` runs are *good*; the newest `keep_min` good runs are always kept, whatever their age;
//! - the days window ends at the local calendar date of the newest good run (by sequence) that is
//!   not dated in the future, not at `now`, so a schedule that stalled never wipes history and a
//!   clock moved backwards deletes nothing; a run is inside the window when its local date is one
//!   of the last `days` dates up to that one (daily backups keep exactly `days` runs, across DST
//!   changes too);
//! - a run dated in the future, or after a later run (its host's clock was ahead when it ran), is
//!   kept: its date says nothing about its age, so no rule may delete it or anchor on it;
//! - `keep_last`, `keep_daily`, `keep_weekly` (ISO weeks), `keep_monthly` keep the newest good run
//!   of each of the newest N periods, evaluated in the configured time zone;
//! - `partial` runs are kept inside the window, and also when newer than every good run (their
//!   database backup is then the freshest there is); they never count for the KEEP rules;
//! - `failed` runs (a record, no artifacts) are kept inside the window;
//! - `incomplete` runs (killed mid-run) are removed once older than `grace`;
//! - a run the caller pins (a [`Pin`]: the last good run before an open size anomaly, see
//!   `crate::anomaly`) is kept whatever the rules above say, with the pin's reason.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use chrono_tz::Tz;
use serde::Serialize;

use crate::catalog::{RunId, RunState};

#[derive(Debug, Clone)]
pub struct RunInfo {
    /// The run's place in history (0 for runs recorded before sequences): runs are ordered by
    /// it, then by id, never by their clock alone.
    pub sequence: u64,
    pub id: RunId,
    pub state: RunState,
}

impl RunInfo {
    pub fn time(&self) -> DateTime<Utc> {
        self.id.time()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub days: u32,
    pub keep_last: u32,
    pub keep_daily: u32,
    pub keep_weekly: u32,
    pub keep_monthly: u32,
    pub keep_min: u32,
    pub grace: chrono::Duration,
}

impl Policy {
    /// # Errors
    /// A policy with no window and no KEEP rule would delete all but `keep_min` runs: refused.
    pub fn validate(&self) -> Result<(), String> {
        if self.keep_min == 0 {
            return Err(
                "BACKUP_KEEP_MIN must be at least 1: the newest good backup is never deleted"
                    .into(),
            );
        }
        if self.days == 0
            && self.keep_last == 0
            && self.keep_daily == 0
            && self.keep_weekly == 0
            && self.keep_monthly == 0
        {
            return Err("empty retention policy: BACKUP_RETENTION_DAYS is 0 and no BACKUP_KEEP_* rule is set, which would delete all but the newest backup".into());
        }
        Ok(())
    }
}

/// A run kept whatever the policy says, and why: a fact from outside the policy (an open size
/// anomaly whose evidence this run is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    pub id: RunId,
    pub reason: String,
}

/// The verdict on one run, with every reason that applies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub run_id: RunId,
    pub state: RunState,
    pub keep: bool,
    pub reasons: Vec<String>,
}

fn local_date(t: DateTime<Utc>, tz: Tz) -> NaiveDate {
    t.with_timezone(&tz).date_naive()
}

/// Decides, newest run first.
///
/// # Errors
/// An invalid policy (see [`Policy::validate`]).
pub fn plan(
    runs: &[RunInfo],
    policy: &Policy,
    now: DateTime<Utc>,
    tz: Tz,
    pins: &[Pin],
) -> Result<Vec<Decision>, String> {
    policy.validate()?;
    let mut sorted: Vec<&RunInfo> = runs.iter().collect();
    sorted.sort_by(|a, b| (b.sequence, &b.id).cmp(&(a.sequence, &a.id)));
    let good: Vec<&RunInfo> = sorted
        .iter()
        .copied()
        .filter(|r| r.state == RunState::Ok)
        .collect();
    let anchor = good.iter().find(|r| r.time() <= now + CLOCK_TOLERANCE);
    let window = Window::new(anchor.map(|r| r.time()), policy.days, tz);
    let mut reasons = keep_rules(&good, policy, tz);
    Ok(sorted
        .iter()
        .map(|r| {
            let mut why = reasons.remove(&r.id).unwrap_or_default();
            if let Some(clock) = misdated(r, anchor.copied(), now) {
                why.push(clock);
            }
            why.extend(state_reason(r, policy, &window, now));
            why.extend(
                pins.iter()
                    .filter(|p| p.id == r.id)
                    .map(|p| p.reason.clone()),
            );
            let keep = !why.is_empty();
            if !keep {
                why.push(delete_reason(r.state, policy));
            }
            Decision {
                run_id: r.id.clone(),
                state: r.state,
                keep,
                reasons: why,
            }
        })
        .collect())
}

/// How far ahead of `now` a run may be dated before its date is distrusted: clocks of two hosts,
/// or one clock after an NTP step, disagree by seconds, not by this.
pub const CLOCK_TOLERANCE: chrono::Duration = chrono::Duration::minutes(5);

/// How far this host's clock may be from the database server's before prune refuses to act on
/// dates taken from it.
pub const MAX_SKEW: chrono::Duration = chrono::Duration::minutes(10);

/// Why a run's date cannot be trusted, if it cannot: dated in the future, or after a run that
/// came later in the sequence.
fn misdated(r: &RunInfo, anchor: Option<&RunInfo>, now: DateTime<Utc>) -> Option<String> {
    if r.time() > now + CLOCK_TOLERANCE {
        return Some("dated in the future (the clock was ahead when it ran): kept, whatever its date says; delete it by hand once it is not needed".into());
    }
    let a = anchor?;
    (r.sequence < a.sequence && r.time() > a.time() + CLOCK_TOLERANCE).then(|| {
        format!(
            "dated after run {}, which came later (the clock was ahead when it ran): kept, whatever its date says",
            a.id
        )
    })
}

/// The days window: the last `days` local dates up to the newest good run's.
struct Window {
    newest_good: Option<DateTime<Utc>>,
    start: Option<NaiveDate>,
    tz: Tz,
}

impl Window {
    fn new(newest_good: Option<DateTime<Utc>>, days: u32, tz: Tz) -> Window {
        let start = match (newest_good, days) {
            (Some(t), d) if d > 0 => Some(local_date(t, tz) - chrono::Days::new(u64::from(d) - 1)),
            _ => None,
        };
        Window {
            newest_good,
            start,
            tz,
        }
    }

    fn contains(&self, r: &RunInfo) -> bool {
        match self.start {
            Some(start) => local_date(r.time(), self.tz) >= start,
            // No good run yet: nothing anchors the window, so nothing is old.
            None => self.newest_good.is_none(),
        }
    }
}

/// The KEEP rules (min, last, daily, weekly, monthly) over the good runs, newest first.
fn keep_rules(good: &[&RunInfo], policy: &Policy, tz: Tz) -> HashMap<RunId, Vec<String>> {
    let mut reasons: HashMap<RunId, Vec<String>> = HashMap::new();
    let mut add = |r: &RunInfo, why: String| reasons.entry(r.id.clone()).or_default().push(why);
    for r in good.iter().take(policy.keep_min as usize) {
        add(
            r,
            format!(
                "one of the newest {} good runs (BACKUP_KEEP_MIN)",
                policy.keep_min
            ),
        );
    }
    for r in good.iter().take(policy.keep_last as usize) {
        add(
            r,
            format!(
                "one of the last {} good runs (BACKUP_KEEP_LAST)",
                policy.keep_last
            ),
        );
    }
    let mut bucket = |n: u32, label: &str, setting: &str, key: &dyn Fn(NaiveDate) -> (i32, u32)| {
        let mut seen = HashSet::new();
        for r in good {
            if seen.len() >= n as usize {
                break;
            }
            if seen.insert(key(local_date(r.time(), tz))) {
                add(r, format!("newest good run of its {label} ({setting})"));
            }
        }
    };
    bucket(policy.keep_daily, "day", "BACKUP_KEEP_DAILY", &|d| {
        (d.year(), d.ordinal())
    });
    bucket(policy.keep_weekly, "ISO week", "BACKUP_KEEP_WEEKLY", &|d| {
        let w = d.iso_week();
        (w.year(), w.week())
    });
    bucket(policy.keep_monthly, "month", "BACKUP_KEEP_MONTHLY", &|d| {
        (d.year(), d.month())
    });
    reasons
}

/// Why a run is kept for its state and age, if it is.
fn state_reason(r: &RunInfo, policy: &Policy, w: &Window, now: DateTime<Utc>) -> Option<String> {
    let days = policy.days;
    match r.state {
        RunState::Ok => w
            .contains(r)
            .then(|| format!("inside the {days}-day window")),
        RunState::Partial if w.contains(r) => {
            Some(format!("partial run inside the {days}-day window"))
        }
        RunState::Partial => w.newest_good.is_none_or(|g| r.time() > g).then(|| {
            "partial run newer than every good run: its database backup is the freshest".into()
        }),
        RunState::Failed => w
            .contains(r)
            .then(|| format!("failed run (a record only) inside the {days}-day window")),
        RunState::Incomplete | RunState::Running | RunState::Unreadable => (now - r.time()
            < policy.grace)
            .then(|| "interrupted run, still inside the grace period".into()),
    }
}

fn delete_reason(state: RunState, policy: &Policy) -> String {
    let days = policy.days;
    match state {
        RunState::Ok => format!("good run outside the {days}-day window and every KEEP rule"),
        RunState::Partial => format!("partial run outside the {days}-day window"),
        RunState::Failed => format!("failed run outside the {days}-day window"),
        RunState::Incomplete | RunState::Running | RunState::Unreadable => {
            "leftovers of an interrupted run, older than the grace period".into()
        }
    }
}

#[cfg(test)]
mod tests;
