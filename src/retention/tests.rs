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
                    at("2026-02-01 00:00") + chrono::Duration::days(d) + chrono::Duration::hours(h),
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
            name: "monthly in a zone east of UTC: 23:30 UTC on the 31st is next month in Berlin",
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
