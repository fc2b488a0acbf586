//! Size anomalies: a run compared with the recent good runs, as a pure function of the run
//! records, the rules (BACKUP_ANOMALY_*) and the newest acknowledgement. No I/O here;
//! `ops::backup` records the result, `ops::anomaly` acknowledges, and retention, metrics, `status`
//! and alerts read it.
//!
//! A backup can verify perfectly and still hold a disaster (a table emptied by a migration, a
//! bucket that lost its uploads). The rule:
//! - measured per run: the plain size of each database dump, the rows of each table (counted in
//!   the dump's snapshot, when recorded), the objects and plain bytes of each bucket archive, the
//!   plain bytes of a volume archive;
//! - each value is compared with the median of the same value over the last `window` good runs
//!   before it (by sequence, never by date); a value more than `drop` below it, or more than
//!   `growth` above it, or a table that had rows and has none (or is gone), is an anomaly;
//! - the history a run is compared with starts at the newest acknowledged run (an acknowledged
//!   change is the new normal), and leaves out runs with anomalies nobody acknowledged, so a loss
//!   that persists keeps being reported instead of becoming the median;
//! - no judgement until [`MIN_RUNS`] good runs (or `window`, if smaller) came before, unless the
//!   history already holds a judged run or starts at an acknowledged one: once started, judging
//!   goes on with whatever good runs retention left;
//! - a value is only compared when it was measured in at least that many of the runs compared
//!   with, or in all of them (a new table or bucket is not judged on one run);
//! - an anomaly is *open* while the newest judged good run has anomalies nobody acknowledged: a
//!   later run back within bounds, or an acknowledgement, closes it.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::catalog::{
    recorded_tables, Anomaly, AnomalyMetric, AnomalyRule, ArtifactKind, RunId, RunRecord, RunState,
};

/// Good runs needed before a directory's runs are compared at all (or the window, if smaller):
/// a median of one or two runs is the previous run's noise.
pub const MIN_RUNS: usize = 3;

/// The rule's parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rules {
    /// Good runs the median is taken over (BACKUP_ANOMALY_WINDOW).
    pub window: usize,
    /// A fall below the median by more than this fraction is an anomaly (0.3: 30 %).
    pub drop: f64,
    /// A rise above the median by more than this fraction is (3.0: 300 %); `None`: never.
    pub growth: Option<f64>,
}

/// The newest acknowledged run, as `(sequence, run id)`: anomalies of runs up to it are
/// acknowledged, and comparisons start at it.
pub type Mark<'a> = Option<&'a (u64, RunId)>;

/// One value measured in a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Measure {
    pub metric: AnomalyMetric,
    pub subject: String,
    pub value: u64,
}

/// What a run holds that anomalies are judged on: its verified artifacts' values.
pub fn measures(rec: &RunRecord) -> Vec<Measure> {
    let mut out = Vec::new();
    let mut add = |metric, subject: &str, value| {
        out.push(Measure {
            metric,
            subject: subject.to_string(),
            value,
        })
    };
    for a in rec.artifacts.iter().filter(|a| a.verification.ok) {
        match a.kind {
            ArtifactKind::Database => {
                add(AnomalyMetric::DumpBytes, &a.source, a.plain_bytes);
                for t in recorded_tables(rec, a).unwrap_or_default() {
                    add(AnomalyMetric::TableRows, &t.qualified(), t.rows);
                }
            }
            ArtifactKind::Objects => {
                if let Some(n) = a.objects {
                    add(AnomalyMetric::BucketObjects, &a.source, n);
                }
                add(AnomalyMetric::BucketBytes, &a.source, a.plain_bytes);
            }
            ArtifactKind::Volume => add(AnomalyMetric::VolumeBytes, &a.source, a.plain_bytes),
            // Roles and tablespaces: a few kilobytes that say nothing about the data.
            ArtifactKind::Globals => {}
        }
    }
    out
}

fn acknowledged(r: &RunRecord, mark: Mark<'_>) -> bool {
    mark.is_some_and(|(s, id)| r.order() <= (*s, id))
}

/// A good run whose anomalies nobody acknowledged: left out of later comparisons.
pub fn suspect(r: &RunRecord, mark: Mark<'_>) -> bool {
    r.anomalies.as_ref().is_some_and(|a| !a.is_empty()) && !acknowledged(r, mark)
}

/// The runs comparisons may read: good, and untouched since they were written.
fn good(r: &RunRecord) -> bool {
    r.status == RunState::Ok && r.checksum_ok()
}

fn median(values: &mut [u64]) -> u64 {
    values.sort_unstable();
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        ((u128::from(values[n / 2 - 1]) + u128::from(values[n / 2])) / 2) as u64
    }
}

/// `(now - before) / before` in percent, to one decimal.
pub fn change_percent(before: u64, now: u64) -> f64 {
    let p = (now as f64 - before as f64) / before as f64 * 100.0;
    (p * 10.0).round() / 10.0
}

/// Compares `current` with the good runs before it in `records` (the directory's records in
/// sequence order; `current` itself and anything after it are ignored).
///
/// `None`: not judged (too few good runs before it, or none that could be compared with).
/// `Some` of an empty list: every value within bounds.
pub fn judge(
    records: &[RunRecord],
    current: &RunRecord,
    rules: &Rules,
    mark: Mark<'_>,
) -> Option<Vec<Anomaly>> {
    let history: Vec<&RunRecord> = records
        .iter()
        .filter(|r| good(r) && r.order() < current.order())
        .filter(|r| mark.is_none_or(|(s, id)| r.order() >= (*s, id)))
        .collect();
    let need = MIN_RUNS.min(rules.window).max(1);
    let starts_at_ack = history
        .first()
        .is_some_and(|r| mark.is_some_and(|(s, id)| r.order() == (*s, id)));
    let judged_before = history.iter().any(|r| r.anomalies.is_some());
    if history.len() < need && !starts_at_ack && !judged_before {
        return None;
    }
    let baseline: Vec<BTreeMap<(AnomalyMetric, String), u64>> = history
        .iter()
        .rev()
        .filter(|r| !suspect(r, mark))
        .take(rules.window)
        .map(|r| {
            measures(r)
                .into_iter()
                .map(|m| ((m.metric, m.subject), m.value))
                .collect()
        })
        .collect();
    if baseline.is_empty() {
        return None;
    }
    let runs = baseline.len();
    // The median of a value over the runs that measured it, when enough did.
    let before = |key: &(AnomalyMetric, String)| -> Option<(u64, u32)> {
        let mut values: Vec<u64> = baseline
            .iter()
            .filter_map(|b| b.get(key).copied())
            .collect();
        let n = values.len();
        (n > 0 && (n >= need || n == runs)).then(|| (median(&mut values), n as u32))
    };
    let now: BTreeMap<(AnomalyMetric, String), u64> = measures(current)
        .into_iter()
        .map(|m| ((m.metric, m.subject), m.value))
        .collect();
    let mut found = Vec::new();
    for (key, &value) in &now {
        let Some((b, n)) = before(key) else { continue };
        if let Some(rule) = crossed(key.0, b, value, rules) {
            found.push(anomaly(key, b, value, rule, n));
        }
    }
    // A table that had rows and is not in this dump: only when this run counted rows at all (a
    // run that could not count says nothing about tables).
    if now.keys().any(|(m, _)| *m == AnomalyMetric::TableRows) {
        let mut tables: Vec<&(AnomalyMetric, String)> = baseline
            .iter()
            .flat_map(|b| b.keys())
            .filter(|k| k.0 == AnomalyMetric::TableRows && !now.contains_key(*k))
            .collect();
        tables.sort();
        tables.dedup();
        for key in tables {
            if let Some((b, n)) = before(key).filter(|(b, _)| *b > 0) {
                found.push(anomaly(key, b, 0, AnomalyRule::Missing, n));
            }
        }
    }
    found.sort_by(|a, b| (a.metric, &a.subject).cmp(&(b.metric, &b.subject)));
    Some(found)
}

/// Which bound `now` crosses against the median `before`, if any. Nothing is judged against a
/// median of zero: no percentage describes growth from nothing.
fn crossed(metric: AnomalyMetric, before: u64, now: u64, rules: &Rules) -> Option<AnomalyRule> {
    if before == 0 {
        return None;
    }
    // One division, correctly rounded: exactly 30 % off compares equal to a `30%` setting.
    let change = (now as f64 - before as f64) / before as f64;
    if now == 0 && metric == AnomalyMetric::TableRows {
        Some(AnomalyRule::Emptied)
    } else if change < -rules.drop {
        Some(AnomalyRule::Drop)
    } else if rules.growth.is_some_and(|g| change > g) {
        Some(AnomalyRule::Growth)
    } else {
        None
    }
}

fn anomaly(
    key: &(AnomalyMetric, String),
    before: u64,
    now: u64,
    rule: AnomalyRule,
    runs: u32,
) -> Anomaly {
    Anomaly {
        metric: key.0,
        subject: key.1.clone(),
        before,
        now,
        change_percent: change_percent(before, now),
        rule,
        runs,
    }
}

/// An anomaly nobody has closed yet.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Open {
    /// The newest judged good run: it has the anomalies.
    pub run_id: RunId,
    /// The first run of the streak of runs with unacknowledged anomalies that ends at `run_id`.
    pub since: RunId,
    /// The last good run before `since`: the backup from before the change, which retention
    /// keeps while the anomaly is open. `None` when no good run came before it.
    pub keep: Option<RunId>,
    pub anomalies: Vec<Anomaly>,
}

/// The open anomaly of a directory (its records in sequence order), if any.
pub fn open(records: &[RunRecord], mark: Mark<'_>) -> Option<Open> {
    let runs: Vec<&RunRecord> = records.iter().filter(|r| good(r)).collect();
    let newest = runs.iter().rposition(|r| r.anomalies.is_some())?;
    if !suspect(runs[newest], mark) {
        return None;
    }
    let mut first = newest;
    for j in (0..newest).rev() {
        let r = runs[j];
        if r.anomalies.is_some() && !suspect(r, mark) {
            break;
        }
        if suspect(r, mark) {
            first = j;
        }
    }
    Some(Open {
        run_id: runs[newest].run_id.clone(),
        since: runs[first].run_id.clone(),
        keep: first.checked_sub(1).map(|k| runs[k].run_id.clone()),
        anomalies: runs[newest].anomalies.clone().unwrap_or_default(),
    })
}

/// One line: the anomalies of a run, the first few spelled out.
pub fn summary(anomalies: &[Anomaly]) -> String {
    let mut s: Vec<String> = anomalies.iter().take(3).map(Anomaly::describe).collect();
    if anomalies.len() > 3 {
        s.push(format!("and {} more", anomalies.len() - 3));
    }
    s.join("; ")
}

#[cfg(test)]
mod tests;
