use chrono::{Duration, TimeZone, Utc};

use super::*;
use crate::catalog::{record_tables, ArtifactRecord, TableCount, Verification};
use crate::pipeline::Compression;

const RULES: Rules = Rules {
    window: 7,
    drop: 0.3,
    growth: Some(3.0),
};

/// What one run backed up: dump bytes, table rows, bucket objects and bytes.
#[derive(Clone)]
struct Shape {
    dump: u64,
    tables: Vec<(&'static str, u64)>,
    bucket: Option<(u64, u64)>,
}

fn shape(dump: u64, orders: u64) -> Shape {
    Shape {
        dump,
        tables: vec![("orders", orders), ("users", 2000)],
        bucket: Some((200, 4_000_000)),
    }
}

fn artifact(kind: ArtifactKind, source: &str, file: &str, plain: u64) -> ArtifactRecord {
    let t = Utc.with_ymd_and_hms(2026, 11, 1, 2, 0, 0).unwrap();
    ArtifactRecord {
        kind,
        file: file.into(),
        source: source.into(),
        compression: Compression::Gzip,
        stored_bytes: plain / 4,
        stored_sha256: String::new(),
        stored_blake3: None,
        plain_bytes: plain,
        plain_blake3: Some(String::new()),
        plain_sha256: None,
        started_at: t,
        duration_ms: 1,
        objects: None,
        index_file: None,
        index_sha256: None,
        index_stored_sha256: None,
        encryption: None,
        skipped: Vec::new(),
        verification: Verification {
            ok: true,
            checked_at: t,
            detail: String::new(),
            level: Default::default(),
        },
    }
}

/// Run number `seq` (a day apart), ok, with `s`'s values.
fn run(seq: u64, s: &Shape) -> RunRecord {
    let t = Utc.with_ymd_and_hms(2026, 11, 1, 2, 0, 0).unwrap() + Duration::days(seq as i64);
    let id = RunId::from_time(t);
    let mut r = RunRecord::new(id.clone(), t);
    r.sequence = Some(seq);
    r.status = RunState::Ok;
    let db = format!("db_app_{id}.sql.gz");
    r.artifacts
        .push(artifact(ArtifactKind::Database, "app", &db, s.dump));
    if let Some((objects, bytes)) = s.bucket {
        let mut a = artifact(
            ArtifactKind::Objects,
            "pdfs",
            &format!("minio_pdfs_{id}.tar.gz"),
            bytes,
        );
        a.objects = Some(objects);
        r.artifacts.push(a);
    }
    let tables = s
        .tables
        .iter()
        .map(|(name, rows)| TableCount {
            schema: "public".into(),
            name: (*name).into(),
            rows: *rows,
            exact: true,
        })
        .collect();
    record_tables(&mut r, &db, 1 << 28, tables);
    r
}

/// Runs 1..=n of `shapes`, each judged as the run would have been (anomalies recorded).
fn history(shapes: &[Shape], rules: &Rules) -> Vec<RunRecord> {
    let mut out: Vec<RunRecord> = Vec::new();
    for (i, s) in shapes.iter().enumerate() {
        let mut r = run(i as u64 + 1, s);
        r.anomalies = judge(&out, &r, rules, None);
        out.push(r);
    }
    out
}

fn normal(n: usize) -> Vec<Shape> {
    (0..n).map(|_| shape(10_000_000, 120_000)).collect()
}

#[test]
fn too_few_runs_are_not_judged_then_judging_starts() {
    let h = history(&normal(4), &RULES);
    assert_eq!(h[0].anomalies, None);
    assert_eq!(h[1].anomalies, None);
    assert_eq!(h[2].anomalies, None, "two runs before it: no judgement");
    assert_eq!(h[3].anomalies, Some(Vec::new()), "three before it: judged");
    // A window smaller than MIN_RUNS needs only that many runs.
    let small = Rules { window: 1, ..RULES };
    let h = history(&normal(2), &small);
    assert_eq!(h[1].anomalies, Some(Vec::new()));
}

#[test]
fn a_table_losing_sixty_percent_is_named_with_its_figures() {
    let mut shapes = normal(3);
    shapes.push(shape(4_500_000, 48_000));
    let h = history(&shapes, &RULES);
    let found = h[3].anomalies.clone().unwrap();
    let rows = found
        .iter()
        .find(|a| a.metric == AnomalyMetric::TableRows)
        .unwrap();
    assert_eq!(rows.subject, "public.orders");
    assert_eq!((rows.before, rows.now, rows.runs), (120_000, 48_000, 3));
    assert_eq!(rows.change_percent, -60.0);
    assert_eq!(rows.rule, AnomalyRule::Drop);
    let dump = found
        .iter()
        .find(|a| a.metric == AnomalyMetric::DumpBytes)
        .unwrap();
    assert_eq!((dump.subject.as_str(), dump.change_percent), ("app", -55.0));
    assert_eq!(
        found.len(),
        2,
        "users and the bucket did not change: {found:?}"
    );
    assert!(rows
        .describe()
        .contains("120000 rows → 48000 rows (-60.0 %"));
}

#[test]
fn the_bounds_are_strict_and_growth_can_be_switched_off() {
    let base = normal(3);
    let judge_one = |s: Shape, rules: &Rules| {
        let h = history(&base, rules);
        judge(&h, &run(4, &s), rules, None).unwrap()
    };
    // Exactly 30 % down and exactly 300 % up are within bounds; a row more is not.
    assert!(judge_one(shape(10_000_000, 84_000), &RULES).is_empty());
    assert_eq!(judge_one(shape(10_000_000, 83_999), &RULES).len(), 1);
    assert!(judge_one(shape(40_000_000, 120_000), &RULES).is_empty());
    let grown = judge_one(shape(40_000_001, 120_000), &RULES);
    assert_eq!(grown[0].rule, AnomalyRule::Growth);
    let no_growth = Rules {
        growth: None,
        ..RULES
    };
    assert!(judge_one(shape(90_000_000, 120_000), &no_growth).is_empty());
}

#[test]
fn tables_emptied_or_gone_and_new_tables() {
    let mut emptied = shape(9_000_000, 120_000);
    emptied.tables = vec![("orders", 120_000), ("users", 0)];
    let h = history(&normal(3), &RULES);
    let found = judge(&h, &run(4, &emptied), &RULES, None).unwrap();
    assert_eq!(found[0].rule, AnomalyRule::Emptied);
    assert_eq!(found[0].subject, "public.users");

    let mut gone = shape(9_000_000, 120_000);
    gone.tables = vec![("orders", 120_000), ("audit", 5)];
    let found = judge(&h, &run(4, &gone), &RULES, None).unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].rule, AnomalyRule::Missing);
    assert_eq!((found[0].before, found[0].now), (2000, 0));
    // The new table `audit` is not judged: it was measured in none of the runs before.

    // A run without row counts says nothing about tables.
    let mut uncounted = run(4, &shape(10_000_000, 120_000));
    uncounted.artifacts[0].file = "db_app_other.sql.gz".into();
    assert!(judge(&h, &uncounted, &RULES, None).unwrap().is_empty());
}

#[test]
fn a_bucket_losing_most_objects_alerts() {
    let mut s = shape(10_000_000, 120_000);
    s.bucket = Some((20, 400_000));
    let h = history(&normal(5), &RULES);
    let found = judge(&h, &run(6, &s), &RULES, None).unwrap();
    let kinds: Vec<(AnomalyMetric, &str, f64)> = found
        .iter()
        .map(|a| (a.metric, a.subject.as_str(), a.change_percent))
        .collect();
    assert_eq!(
        kinds,
        [
            (AnomalyMetric::BucketObjects, "pdfs", -90.0),
            (AnomalyMetric::BucketBytes, "pdfs", -90.0)
        ]
    );
}

#[test]
fn steady_growth_over_many_runs_never_alerts() {
    // 3 % more rows, dump and objects a day for sixty days: 5.9 times the start.
    let shapes: Vec<Shape> = (0..60)
        .map(|d| {
            let f = 1.03f64.powi(d);
            let mut s = shape((10_000_000.0 * f) as u64, (120_000.0 * f) as u64);
            s.bucket = Some(((200.0 * f) as u64, (4_000_000.0 * f) as u64));
            s
        })
        .collect();
    let h = history(&shapes, &RULES);
    for r in &h[3..] {
        assert_eq!(r.anomalies, Some(Vec::new()), "run {}", r.sequence.unwrap());
    }
    assert_eq!(open(&h, None), None);
}

#[test]
fn a_persisting_loss_stays_open_and_the_run_before_it_is_kept() {
    let mut shapes = normal(4);
    shapes.extend((0..5).map(|_| shape(4_500_000, 48_000)));
    let h = history(&shapes, &RULES);
    // Every run after the loss is compared with the runs before it, not with the loss.
    for r in &h[4..] {
        let a = r.anomalies.as_ref().unwrap();
        assert!(
            a.iter()
                .any(|a| a.subject == "public.orders" && a.before == 120_000),
            "{a:?}"
        );
    }
    let o = open(&h, None).unwrap();
    assert_eq!(o.run_id, h[8].run_id);
    assert_eq!(o.since, h[4].run_id);
    assert_eq!(o.keep, Some(h[3].run_id.clone()));

    // Retention has deleted all but the kept run before the loss: judging goes on.
    let mut pruned: Vec<RunRecord> = vec![h[3].clone()];
    pruned.extend(h[4..].iter().cloned());
    let mut next = run(10, &shape(4_600_000, 48_000));
    next.anomalies = judge(&pruned, &next, &RULES, None);
    assert!(!next.anomalies.as_ref().unwrap().is_empty());

    // Back to normal: within bounds, closed.
    let mut back = run(10, &shape(10_100_000, 121_000));
    back.anomalies = judge(&h, &back, &RULES, None);
    assert_eq!(back.anomalies, Some(Vec::new()));
    let mut closed = h.clone();
    closed.push(back);
    assert_eq!(open(&closed, None), None);
}

#[test]
fn an_acknowledgement_closes_it_and_starts_a_new_baseline() {
    let mut shapes = normal(4);
    shapes.extend((0..2).map(|_| shape(4_500_000, 48_000)));
    let h = history(&shapes, &RULES);
    assert!(open(&h, None).is_some());
    // Acknowledging the first run of the streak leaves the newer one open.
    let first = (h[4].sequence.unwrap(), h[4].run_id.clone());
    assert_eq!(open(&h, Some(&first)).unwrap().since, h[5].run_id);
    let newest = (h[5].sequence.unwrap(), h[5].run_id.clone());
    assert_eq!(open(&h, Some(&newest)), None);
    // The next run at the new level is compared with the acknowledged run alone.
    let next = run(7, &shape(4_600_000, 48_500));
    assert_eq!(
        judge(&h, &next, &RULES, Some(&newest)),
        Some(Vec::new()),
        "an acknowledged change is the new normal"
    );
    assert!(!judge(&h, &next, &RULES, None).unwrap().is_empty());
}

#[test]
fn runs_are_ordered_by_sequence_not_by_date() {
    // Run 4's clock was a year ahead: it still comes before run 5.
    let mut h = history(&normal(3), &RULES);
    let mut ahead = run(4, &shape(10_000_000, 120_000));
    ahead.run_id = RunId::from_time(Utc.with_ymd_and_hms(2027, 11, 1, 2, 0, 0).unwrap());
    ahead.anomalies = judge(&h, &ahead, &RULES, None);
    assert_eq!(ahead.anomalies, Some(Vec::new()));
    h.push(ahead);
    let lost = run(5, &shape(4_500_000, 48_000));
    let found = judge(&h, &lost, &RULES, None).unwrap();
    assert_eq!(
        found
            .iter()
            .find(|a| a.subject == "public.orders")
            .unwrap()
            .runs,
        4
    );
}

#[test]
fn failed_partial_and_modified_runs_are_not_compared_with() {
    let mut h = history(&normal(3), &RULES);
    let mut failed = run(4, &shape(1, 1));
    failed.status = RunState::Failed;
    let mut partial = run(5, &shape(1, 1));
    partial.status = RunState::Partial;
    h.push(failed);
    h.push(partial);
    let next = run(6, &shape(10_000_000, 120_000));
    let found = judge(&h, &next, &RULES, None).unwrap();
    assert!(found.is_empty(), "{found:?}");
}

#[test]
fn medians() {
    assert_eq!(median(&mut [5]), 5);
    assert_eq!(median(&mut [9, 1, 5]), 5);
    assert_eq!(median(&mut [1, 9, 5, 7]), 6);
    assert_eq!(median(&mut [u64::MAX, u64::MAX]), u64::MAX);
    assert_eq!(change_percent(3, 2), -33.3);
}
