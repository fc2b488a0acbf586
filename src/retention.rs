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
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(s: &str) -> DateTime<Utc> {
        Utc.from_utc_datetime(&chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap())
    }

    fn run(s: &str, state: RunState) -> RunInfo {
        RunInfo {
            sequence: 0,
            id: RunId::from_time(at(s)),
            state,
        }
    }

    fn policy(days: u32) -> Policy {
        Policy {
            days,
            keep_last: 0,
            keep_daily: 0,
            keep_weekly: 0,
            keep_monthly: 0,
            keep_min: 1,
            grace: chrono::Duration::hours(24),
        }
    }

    /// Daily good runs at `hh:mm` UTC from `first` for `n` days.
    fn daily(first: &str, n: i64) -> Vec<RunInfo> {
        (0..n)
            .map(|i| RunInfo {
                sequence: 0,
                id: RunId::from_time(at(first) + chrono::Duration::days(i)),
                state: RunState::Ok,
            })
            .collect()
    }

    fn kept(runs: &[RunInfo], p: &Policy, now: &str, tz: Tz) -> Vec<String> {
        let mut k: Vec<String> = plan(runs, p, at(now), tz, &[])
            .unwrap()
            .into_iter()
            .filter(|d| d.keep)
            .map(|d| d.run_id.to_string())
            .collect();
        k.sort();
        k
    }

    struct Case {
        name: &'static str,
        runs: Vec<RunInfo>,
        policy: Policy,
        now: &'static str,
        tz: Tz,
        kept: usize,
        must_keep: Vec<&'static str>,
    }

    fn id(s: &str) -> String {
        RunId::from_time(at(s)).to_string()
    }

    #[test]
    fn retention_table() {
        let utc = chrono_tz::UTC;
        let berlin = chrono_tz::Europe::Berlin;
        let ny = chrono_tz::America::New_York;
        let mut failing_after_good = daily("2026-01-01 02:00", 3);
        failing_after_good.extend((3..30).map(|i| RunInfo {
            sequence: 0,
            id: RunId::from_time(at("2026-01-01 02:00") + chrono::Duration::days(i)),
            state: RunState::Failed,
        }));
        let mut several_a_day = Vec::new();
        for d in 0..10 {
            for h in [0, 6, 12, 18] {
                several_a_day.push(RunInfo {
                    sequence: 0,
                    id: RunId::from_time(
                        at("2026-02-01 00:00")
                            + chrono::Duration::days(d)
                            + chrono::Duration::hours(h),
                    ),
                    state: RunState::Ok,
                });
            }
        }
        let cases = vec![
            Case {
                name: "seed default: 7 daily runs kept of 20",
                runs: daily("2026-01-01 02:00", 20),
                policy: policy(7),
                now: "2026-01-20 03:00",
                tz: utc,
                kept: 7,
                must_keep: vec!["2026-01-20 02:00", "2026-01-14 02:00"],
            },
            Case {
                name: "nothing to delete",
                runs: daily("2026-01-01 02:00", 3),
                policy: policy(7),
                now: "2026-01-03 03:00",
                tz: utc,
                kept: 3,
                must_keep: vec![],
            },
            Case {
                name: "no runs at all",
                runs: vec![],
                policy: policy(7),
                now: "2026-01-03 03:00",
                tz: utc,
                kept: 0,
                must_keep: vec![],
            },
            Case {
                name: "stalled schedule: window anchors at the newest good run",
                runs: daily("2026-01-01 02:00", 10),
                policy: policy(7),
                now: "2026-03-01 00:00",
                tz: utc,
                kept: 7,
                must_keep: vec!["2026-01-10 02:00", "2026-01-04 02:00"],
            },
            Case {
                name: "every recent run failed: good history survives",
                runs: failing_after_good,
                policy: policy(7),
                now: "2026-01-31 03:00",
                tz: utc,
                kept: 3 + 27,
                must_keep: vec!["2026-01-03 02:00", "2026-01-01 02:00"],
            },
            Case {
                name: "only one good run, months old",
                runs: vec![run("2025-06-01 02:00", RunState::Ok)],
                policy: policy(7),
                now: "2026-01-01 00:00",
                tz: utc,
                kept: 1,
                must_keep: vec!["2025-06-01 02:00"],
            },
            Case {
                name: "clock moved backwards: every run is dated in the future, none is deleted",
                runs: daily("2026-01-01 02:00", 20),
                policy: policy(7),
                now: "2025-12-01 00:00",
                tz: utc,
                kept: 20,
                must_keep: vec!["2026-01-20 02:00"],
            },
            Case {
                name: "keep_min 3 beyond a 1-day window",
                runs: daily("2026-01-01 02:00", 10),
                policy: Policy {
                    days: 1,
                    keep_min: 3,
                    ..policy(1)
                },
                now: "2026-01-10 03:00",
                tz: utc,
                kept: 3,
                must_keep: vec!["2026-01-08 02:00"],
            },
            Case {
                name: "several runs a day, 2-day window",
                runs: several_a_day.clone(),
                policy: policy(2),
                now: "2026-02-10 19:00",
                tz: utc,
                kept: 8,
                must_keep: vec!["2026-02-09 00:00"],
            },
            Case {
                name: "several runs a day, keep_daily 5 (newest of each day)",
                runs: several_a_day.clone(),
                policy: Policy {
                    keep_daily: 5,
                    ..policy(1)
                },
                now: "2026-02-10 19:00",
                tz: utc,
                kept: 4 + 4,
                must_keep: vec!["2026-02-06 18:00"],
            },
            Case {
                name: "keep_last 10 with a 1-day window",
                runs: several_a_day,
                policy: Policy {
                    keep_last: 10,
                    ..policy(1)
                },
                now: "2026-02-10 19:00",
                tz: utc,
                kept: 10,
                must_keep: vec!["2026-02-08 12:00"],
            },
            // 02:00 Berlin is 01:00 UTC in winter, 00:00 UTC in summer; DST starts 2026-03-29.
            Case {
                name: "DST spring forward (Berlin): still 7 runs",
                runs: daily("2026-03-24 00:30", 12),
                policy: policy(7),
                now: "2026-04-05 01:00",
                tz: berlin,
                kept: 7,
                must_keep: vec!["2026-03-30 00:30"],
            },
            Case {
                name: "DST fall back (Berlin): still 7 runs",
                runs: daily("2026-10-20 00:30", 12),
                policy: policy(7),
                now: "2026-11-01 01:00",
                tz: berlin,
                kept: 7,
                must_keep: vec!["2026-10-25 00:30"],
            },
            Case {
                name: "DST (New York), late-evening runs stay on their local day",
                runs: daily("2026-03-01 03:30", 14),
                policy: policy(7),
                now: "2026-03-15 04:00",
                tz: ny,
                kept: 7,
                must_keep: vec!["2026-03-08 03:30"],
            },
            Case {
                name: "weekly: ISO weeks across a year end",
                runs: daily("2025-12-20 02:00", 21),
                policy: Policy {
                    keep_weekly: 3,
                    ..policy(1)
                },
                now: "2026-01-09 03:00",
                tz: utc,
                kept: 3,
                must_keep: vec!["2026-01-04 02:00", "2025-12-28 02:00", "2026-01-09 02:00"],
            },
            Case {
                name: "monthly: month ends",
                runs: daily("2026-01-25 02:00", 40),
                policy: Policy {
                    keep_monthly: 3,
                    ..policy(1)
                },
                now: "2026-03-06 03:00",
                tz: utc,
                kept: 3,
                must_keep: vec!["2026-01-31 02:00", "2026-02-28 02:00", "2026-03-05 02:00"],
            },
            Case {
                name:
                    "monthly in a zone east of UTC: 23:30 UTC on the 31st is next month in Berlin",
                runs: vec![
                    run("2026-01-31 23:30", RunState::Ok),
                    run("2026-01-30 23:30", RunState::Ok),
                    run("2026-02-15 12:00", RunState::Ok),
                ],
                policy: Policy {
                    keep_monthly: 2,
                    ..policy(1)
                },
                now: "2026-02-16 00:00",
                tz: berlin,
                kept: 2,
                must_keep: vec!["2026-02-15 12:00", "2026-01-30 23:30"],
            },
            Case {
                name: "GFS union: daily 3 + weekly 2 + monthly 2",
                runs: daily("2026-01-01 02:00", 60),
                policy: Policy {
                    keep_daily: 3,
                    keep_weekly: 2,
                    keep_monthly: 2,
                    ..policy(1)
                },
                now: "2026-03-02 03:00",
                tz: utc,
                kept: 4,
                must_keep: vec!["2026-03-01 02:00", "2026-02-28 02:00", "2026-02-22 02:00"],
            },
            Case {
                name: "incomplete run inside grace is kept, older one removed",
                runs: vec![
                    run("2026-01-10 02:00", RunState::Ok),
                    run("2026-01-10 03:00", RunState::Incomplete),
                    run("2026-01-08 03:00", RunState::Incomplete),
                ],
                policy: policy(7),
                now: "2026-01-10 12:00",
                tz: utc,
                kept: 2,
                must_keep: vec!["2026-01-10 03:00"],
            },
            Case {
                name: "partial newer than every good run is kept",
                runs: vec![
                    run("2025-01-01 02:00", RunState::Ok),
                    run("2025-03-01 02:00", RunState::Partial),
                    run("2024-12-01 02:00", RunState::Partial),
                ],
                policy: policy(7),
                now: "2025-03-02 00:00",
                tz: utc,
                kept: 2,
                must_keep: vec!["2025-03-01 02:00"],
            },
            Case {
                name: "failed runs only: nothing is deleted",
                runs: vec![
                    run("2026-01-01 02:00", RunState::Failed),
                    run("2025-01-01 02:00", RunState::Failed),
                ],
                policy: policy(7),
                now: "2026-01-02 00:00",
                tz: utc,
                kept: 2,
                must_keep: vec![],
            },
            Case {
                name: "old failed runs go once a good run exists",
                runs: vec![
                    run("2026-01-20 02:00", RunState::Ok),
                    run("2026-01-01 02:00", RunState::Failed),
                ],
                policy: policy(7),
                now: "2026-01-20 03:00",
                tz: utc,
                kept: 1,
                must_keep: vec!["2026-01-20 02:00"],
            },
        ];
        assert!(cases.len() >= 20);
        for c in cases {
            let k = kept(&c.runs, &c.policy, c.now, c.tz);
            assert_eq!(k.len(), c.kept, "{}: kept {k:?}", c.name);
            for m in &c.must_keep {
                assert!(k.contains(&id(m)), "{}: {m} not kept: {k:?}", c.name);
            }
            // Whatever the case, the newest good run survives.
            if let Some(newest) = c
                .runs
                .iter()
                .filter(|r| r.state == RunState::Ok)
                .map(|r| r.id.to_string())
                .max()
            {
                assert!(k.contains(&newest), "{}: newest good run deleted", c.name);
            }
        }
    }

    #[test]
    fn a_run_from_a_clock_years_ahead_deletes_nothing_made_at_the_true_time() {
        // Sequences as the runs happened: three true days, one run five years ahead, two true.
        let runs: Vec<RunInfo> = [
            "2026-01-01 02:00",
            "2026-01-02 02:00",
            "2026-01-03 02:00",
            "2031-01-01 02:00",
            "2026-01-04 02:00",
            "2026-01-05 02:00",
        ]
        .iter()
        .enumerate()
        .map(|(i, t)| RunInfo {
            sequence: i as u64 + 1,
            ..run(t, RunState::Ok)
        })
        .collect();
        // Pruned at the true time, and by a host whose clock is still five years ahead.
        for now in ["2026-01-05 03:00", "2031-01-02 00:00"] {
            let d = plan(&runs, &policy(7), at(now), chrono_tz::UTC, &[]).unwrap();
            assert!(d.iter().all(|d| d.keep), "{now}: {d:?}");
            let future = d
                .iter()
                .find(|d| d.run_id.to_string() == id("2031-01-01 02:00"))
                .unwrap();
            assert!(
                future.reasons.iter().any(|r| r.contains("clock was ahead")),
                "{future:?}"
            );
        }
        // Later true runs move the window on: the old true runs go, the misdated one stays.
        let mut later = runs.clone();
        later.push(RunInfo {
            sequence: 7,
            ..run("2026-01-20 02:00", RunState::Ok)
        });
        let d = plan(
            &later,
            &policy(7),
            at("2026-01-20 03:00"),
            chrono_tz::UTC,
            &[],
        )
        .unwrap();
        let kept: Vec<String> = d
            .iter()
            .filter(|d| d.keep)
            .map(|d| d.run_id.to_string())
            .collect();
        assert_eq!(kept, ["20260120_020000", "20310101_020000"]);
    }

    #[test]
    fn empty_policy_and_keep_min_zero_are_refused() {
        let p = Policy {
            days: 0,
            ..policy(0)
        };
        assert!(plan(&[], &p, at("2026-01-01 00:00"), chrono_tz::UTC, &[]).is_err());
        let p = Policy {
            keep_min: 0,
            ..policy(7)
        };
        assert!(plan(&[], &p, at("2026-01-01 00:00"), chrono_tz::UTC, &[]).is_err());
        let p = Policy {
            days: 0,
            keep_last: 2,
            ..policy(0)
        };
        assert!(plan(&[], &p, at("2026-01-01 00:00"), chrono_tz::UTC, &[]).is_ok());
    }

    #[test]
    fn every_decision_says_why() {
        let runs = daily("2026-01-01 02:00", 10);
        for d in plan(
            &runs,
            &policy(3),
            at("2026-01-10 03:00"),
            chrono_tz::UTC,
            &[],
        )
        .unwrap()
        {
            assert!(!d.reasons.is_empty());
            if !d.keep {
                assert!(
                    d.reasons[0].contains("outside the 3-day window"),
                    "{:?}",
                    d.reasons
                );
            }
        }
    }

    #[test]
    fn a_pinned_run_is_kept_beyond_every_rule_with_its_reason() {
        let runs = daily("2026-01-01 02:00", 10);
        let pinned = RunId::from_time(at("2026-01-02 02:00"));
        let pins = [Pin {
            id: pinned.clone(),
            reason: "the last good run before an open anomaly".into(),
        }];
        let d = plan(
            &runs,
            &policy(3),
            at("2026-01-10 03:00"),
            chrono_tz::UTC,
            &pins,
        )
        .unwrap();
        let kept: Vec<&Decision> = d.iter().filter(|d| d.keep).collect();
        assert_eq!(kept.len(), 4, "{d:?}");
        let p = d.iter().find(|d| d.run_id == pinned).unwrap();
        assert!(p.keep);
        assert_eq!(p.reasons, ["the last good run before an open anomaly"]);
    }
}
