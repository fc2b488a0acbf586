//! Size anomalies with real runs against a real PostgreSQL and real S3 servers: a table losing
//! most of its rows, a bucket losing most of its objects, an acknowledged cleanup, and a series
//! of normal growth. Alerts are read from a real HTTP receiver, the metric from a real
//! Pushgateway and the daemon's `/metrics`, the page from the daemon.

use std::path::Path;

use crate::daemon::Daemon;
use crate::support::notify::{Pushgateway, Receiver};
use crate::support::s3::{bucket_name, noise, S3Server};
use crate::support::*;

/// The record of the run made last (by sequence).
fn newest(dir: &Path) -> serde_json::Value {
    records(dir)
        .into_iter()
        .max_by_key(|r| r["sequence"].as_u64().unwrap())
        .expect("a run record")
}

/// The texts of the anomaly alerts the receiver got.
fn anomaly_alerts(hook: &Receiver) -> Vec<String> {
    hook.requests()
        .iter()
        .filter_map(|r| {
            let body: serde_json::Value = serde_json::from_str(r["body"].as_str()?).ok()?;
            Some(body["text"].as_str()?.to_string())
        })
        .filter(|t| t.contains("ANOMALY"))
        .collect()
}

fn run_ok(env: &[(String, String)]) -> serde_json::Value {
    let r = stackback(&["run"], env);
    assert_eq!(r.code, 0, "{}", r.all());
    let dir = Path::new(&env.iter().find(|(k, _)| k == "BACKUP_DIR").unwrap().1).to_path_buf();
    let rec = newest(&dir);
    assert_eq!(rec["status"], "ok", "{rec}");
    rec
}

fn count(c: &crate::support::pg::Cluster, db: &str, table: &str) -> u64 {
    c.psql(db, &format!("SELECT count(*) FROM {table}"))
        .unwrap()
        .parse()
        .unwrap()
}

/// Deletes 60 % of the seed's orders (ids ending in 0-4 modulo 5: 0, 1, 2).
fn lose_orders(c: &crate::support::pg::Cluster, db: &str) {
    c.psql(db, "DELETE FROM orders WHERE id % 5 IN (0, 1, 2)")
        .unwrap();
    assert_eq!(count(c, db, "orders"), 48_000);
}

/// Puts the deleted orders back, as the seed wrote them.
fn restore_orders(c: &crate::support::pg::Cluster, db: &str) {
    c.psql(
        db,
        "INSERT INTO orders (id, user_id, total, note, placed_at) \
         SELECT g, 1 + g % 2000, ((g * 7) % 100000) / 100.0, \
                CASE WHEN g % 4 = 0 THEN NULL ELSE 'order note ' || g END, \
                timestamptz '2024-06-01 00:00:00+00' + g * interval '1 minute' \
         FROM generate_series(1, 120000) AS g WHERE g % 5 IN (0, 1, 2)",
    )
    .unwrap();
    assert_eq!(count(c, db, "orders"), 120_000);
}

fn orders_anomaly(rec: &serde_json::Value) -> serde_json::Value {
    rec["anomalies"]
        .as_array()
        .unwrap_or_else(|| panic!("no anomalies section: {rec}"))
        .iter()
        .find(|a| a["metric"] == "table_rows" && a["subject"] == "public.orders")
        .unwrap_or_else(|| panic!("no anomaly of public.orders: {rec}"))
        .clone()
}

/// Three normal nights, then 60 % of `orders` deleted: the fourth run is ok, alerts with the
/// table and the figures, sets `backup_anomaly` 1, and makes prune keep the night before the loss
/// beyond a one-day window. The rows come back: the next run is within bounds and closes it.
#[test]
fn a_table_losing_most_rows_alerts_is_kept_by_prune_and_a_normal_run_clears_it() {
    let c = cluster();
    let db = c.seeded_db("anomaly");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let hook = Receiver::start();
    let pg = Pushgateway::start();
    let env = with(
        c.env(&db, dir),
        &[
            ("BACKUP_ALERT_WEBHOOK_URL", &hook.url("/hook")),
            ("BACKUP_PUSHGATEWAY_URL", &pg.url()),
        ],
    );
    let mut nights = Vec::new();
    for day in ["-4d", "-3d", "-2d"] {
        let rec = run_ok(&faked_clock(&env, day));
        assert!(
            rec.get("anomalies").is_none(),
            "too few runs before it to judge: {rec}"
        );
        nights.push(rec["run_id"].as_str().unwrap().to_string());
    }
    assert_eq!(pg.value("backup_anomaly", ""), Some(0.0));
    let pre = nights[2].clone();

    lose_orders(c, &db);
    let rec = run_ok(&faked_clock(&env, "-1d"));
    let loss = rec["run_id"].as_str().unwrap().to_string();
    let a = orders_anomaly(&rec);
    assert_eq!(
        (
            &a["before"],
            &a["now"],
            &a["change_percent"],
            &a["rule"],
            &a["runs"]
        ),
        (
            &120_000.into(),
            &48_000.into(),
            &serde_json::json!(-60.0),
            &"drop".into(),
            &3.into()
        ),
        "{a}"
    );
    let alerts = anomaly_alerts(&hook);
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    for want in [
        "size ANOMALY on".to_string(),
        format!("(run {loss})"),
        "table public.orders: 120000 rows → 48000 rows (-60.0 %; before is the median of 3 good runs)".into(),
        "The backup is valid".into(),
        format!("stackback anomaly ack {loss}"),
    ] {
        assert!(alerts[0].contains(&want), "{want}: {}", alerts[0]);
    }
    assert_eq!(pg.value("backup_anomaly", ""), Some(1.0));

    let r = stackback(&["status", "--json"], &env);
    let s: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(s["anomaly"]["run_id"], loss.as_str(), "{s}");
    assert_eq!(s["anomaly"]["keep"], pre.as_str(), "{s}");
    let r = stackback(&["status"], &env);
    assert!(
        r.stdout
            .contains(&format!("anomaly:      OPEN in run {loss}")),
        "{}",
        r.stdout
    );
    let l = list_json(&env);
    let change = l["runs"][0]["change"]["bytes_percent"].as_f64().unwrap();
    assert!(change < -30.0, "{l}");
    let r = stackback(&["list"], &env);
    let line = r.stdout.lines().find(|l| l.starts_with(&loss)).unwrap();
    assert!(
        line.contains(&format!(" {change:+.1}%  ok")),
        "the size change, signed: {line}"
    );
    assert!(
        r.stdout
            .contains("    ANOMALY table public.orders: 120000 rows → 48000 rows"),
        "{}",
        r.stdout
    );

    // Retention of one day keeps only the run of the loss; the night before it stays as
    // evidence, and prune says why.
    let one_day = with(env.clone(), &[("BACKUP_RETENTION_DAYS", "1")]);
    let r = stackback(&["prune"], &one_day);
    assert_eq!(r.code, 0, "{}", r.all());
    let kept = r.stdout.lines().find(|l| l.starts_with(&pre)).unwrap();
    assert!(
        kept.contains(" keep ")
            && kept.contains(&format!(
                "the last good run before the size anomaly of run {loss}"
            )),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("deleted 2 runs"), "{}", r.stdout);
    let db_file = |id: &str| dir.join(format!("db_{db}_{id}.sql.gz"));
    assert!(db_file(&pre).exists());
    assert!(!db_file(&nights[0]).exists() && !db_file(&nights[1]).exists());

    // The daemon's page and metrics say the same (no run falls due while it is up).
    let d = Daemon::start(&with(env.clone(), &[("BACKUP_SCHEDULE", "0 0 1 1 *")]), &[]);
    let (code, page) = d.get("/");
    assert_eq!(code, 200, "{page}");
    assert!(
        page.contains(&format!("size anomaly in run {loss}")),
        "the banner: {page}"
    );
    assert!(
        page.contains(r#"data-metric="table_rows" data-before="120000" data-now="48000""#),
        "the run's row: {page}"
    );
    let (_, metrics) = d.get("/metrics");
    assert!(metrics.contains("\nbackup_anomaly 1\n"), "{metrics}");
    let (code, _) = d.stop(std::time::Duration::from_secs(30));
    assert_eq!(code, 0);

    // The rows come back: within bounds against the nights before the loss (the loss itself is
    // left out of the median), and the anomaly is closed.
    restore_orders(c, &db);
    let rec = run_ok(&env);
    assert_eq!(rec["anomalies"], serde_json::json!([]), "{rec}");
    assert_eq!(anomaly_alerts(&hook).len(), 1);
    assert_eq!(pg.value("backup_anomaly", ""), Some(0.0));
    let s: serde_json::Value =
        serde_json::from_str(&stackback(&["status", "--json"], &env).stdout).unwrap();
    assert!(s.get("anomaly").is_none(), "{s}");
    // Nothing pins the night before the loss any more.
    let r = stackback(&["prune"], &one_day);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(!db_file(&pre).exists(), "{}", r.stdout);
    assert_list_matches_disk(dir, &env);
}

/// A cleanup that was meant: the alert goes out, `anomaly ack` closes it (the metric drops at
/// once), and the next run at the new level is compared with the acknowledged run, not alerted.
#[test]
fn an_acknowledged_change_closes_the_anomaly_and_becomes_the_new_normal() {
    let c = cluster();
    let db = c.seeded_db("anoack");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let hook = Receiver::start();
    let pg = Pushgateway::start();
    let env = with(
        c.env(&db, dir),
        &[
            ("BACKUP_ALERT_WEBHOOK_URL", &hook.url("/hook")),
            ("BACKUP_PUSHGATEWAY_URL", &pg.url()),
        ],
    );
    for _ in 0..3 {
        run_ok(&env);
    }
    lose_orders(c, &db);
    let loss = run_ok(&env)["run_id"].as_str().unwrap().to_string();
    assert_eq!(anomaly_alerts(&hook).len(), 1);
    assert_eq!(pg.value("backup_anomaly", ""), Some(1.0));

    let r = stackback(
        &["anomaly", "ack", &loss, "--note", "purged the 2024 orders"],
        &env,
    );
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout
            .contains(&format!("acknowledged the anomalies of run {loss}"))
            && r.stdout.contains("no anomaly is open")
            && r.stdout.contains("pushgateway ok"),
        "{}",
        r.stdout
    );
    assert_eq!(
        pg.value("backup_anomaly", ""),
        Some(0.0),
        "pushed by the acknowledgement itself"
    );
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join(".stackback-state.json")).unwrap()).unwrap();
    let ack = &state["anomaly"]["acks"][0];
    assert_eq!(ack["run_id"], loss.as_str(), "{state}");
    assert_eq!(ack["note"], "purged the 2024 orders");
    assert_eq!(ack["sequence"], 4);
    assert_eq!(mode(&dir.join(".stackback-state.json")), 0o600);
    let s: serde_json::Value =
        serde_json::from_str(&stackback(&["status", "--json"], &env).stdout).unwrap();
    assert!(s.get("anomaly").is_none(), "{s}");
    let l = list_json(&env);
    let listed = l["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["run_id"] == loss.as_str())
        .unwrap();
    assert_eq!(listed["anomalies_acknowledged"], true, "{listed}");
    let r = stackback(&["verify", "--all"], &env);
    assert_eq!(
        r.code,
        0,
        "the record was left as the run wrote it: {}",
        r.all()
    );

    // The new level is normal now: compared with the acknowledged run, within bounds.
    let rec = run_ok(&env);
    assert_eq!(rec["anomalies"], serde_json::json!([]), "{rec}");
    assert_eq!(anomaly_alerts(&hook).len(), 1);
    assert_eq!(pg.value("backup_anomaly", ""), Some(0.0));

    // Acknowledging a run without anomalies, or no run at all, is refused.
    let r = stackback(&["anomaly", "ack", "latest"], &env);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("has no anomalies"), "{}", r.stderr);
    let r = stackback(&["anomaly", "ack", "20200101_000000"], &env);
    assert_eq!(r.code, 1, "{}", r.all());
    let r = stackback(
        &["anomaly", "ack", &loss],
        &with(env.clone(), &[("BACKUP_ANOMALY_DROP", "off")]),
    );
    assert_eq!(r.code, 2, "{}", r.all());
}

/// Twenty objects, three normal runs, then seventeen objects deleted: the next run alerts with the
/// bucket and its figures, and `list` shows the objects' change.
fn a_bucket_losing_most_objects_alerts(s3: &S3Server) {
    let c = cluster();
    let db = c.empty_db("anobucket");
    let bucket = bucket_name("anomaly");
    s3.tool(&["mkbucket", &bucket]);
    for i in 0..20 {
        s3.tool(&["put", &bucket, &format!("uploads/{i}.txt"), &noise(i, 3000)]);
    }
    let tmp = tempfile::tempdir().unwrap();
    let hook = Receiver::start();
    let mut env = with(
        c.env(&db, tmp.path()),
        &[
            ("BACKUP_ALERT_WEBHOOK_URL", &hook.url("/hook")),
            // An empty database dumps below the default 1 KiB floor: not what is tested here.
            ("BACKUP_MIN_DB_BYTES", "0"),
        ],
    );
    env.extend(s3.env(&bucket));
    for _ in 0..3 {
        run_ok(&env);
    }
    for i in 3..20 {
        s3.tool(&["delete", &bucket, &format!("uploads/{i}.txt")]);
    }
    let rec = run_ok(&env);
    let found = rec["anomalies"].as_array().unwrap();
    let objects = found
        .iter()
        .find(|a| a["metric"] == "bucket_objects")
        .unwrap_or_else(|| panic!("{rec}"));
    assert_eq!(objects["subject"], bucket.as_str());
    assert_eq!(
        (&objects["before"], &objects["now"]),
        (&20.into(), &3.into())
    );
    assert_eq!(objects["change_percent"], serde_json::json!(-85.0));
    assert!(
        found
            .iter()
            .any(|a| a["metric"] == "bucket_bytes" && a["rule"] == "drop"),
        "{rec}"
    );
    let alerts = anomaly_alerts(&hook);
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert!(
        alerts[0].contains(&format!(
            "bucket {bucket}: 20 objects → 3 objects (-85.0 %; before is the median of 3 good runs)"
        )),
        "{}",
        alerts[0]
    );
    let r = stackback(&["list"], &env);
    assert!(r.stdout.contains("objects -85.0%"), "{}", r.stdout);
}

crate::support::s3::s3_tests!(a_bucket_losing_most_objects_alerts);

/// Ten runs, each after 3 % more orders and one more object: nothing is ever an anomaly, every
/// judged run says so (`anomalies: []`), and `list` shows the growth.
#[test]
fn steady_growth_over_a_series_of_runs_never_alerts() {
    let c = cluster();
    let db = c.seeded_db("anogrow");
    let s3 = crate::support::s3::moto();
    let bucket = bucket_name("grow");
    s3.tool(&["mkbucket", &bucket]);
    for i in 0..10 {
        s3.tool(&["put", &bucket, &format!("a/{i}.txt"), &noise(i, 2500)]);
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let hook = Receiver::start();
    let mut env = with(
        c.env(&db, dir),
        &[
            ("BACKUP_ALERT_WEBHOOK_URL", &hook.url("/hook")),
            ("BACKUP_ALERT_ON", "always"),
        ],
    );
    env.extend(s3.env(&bucket));
    let mut next_id = 200_000;
    for n in 0..10 {
        if n > 0 {
            c.psql(
                &db,
                &format!(
                    "INSERT INTO orders (id, user_id, total, note, placed_at) \
                     SELECT g, 1 + g % 2000, (g % 1000) / 10.0, 'order note ' || g, \
                            timestamptz '2025-01-01 00:00:00+00' + g * interval '1 minute' \
                     FROM generate_series({next_id}, {}) AS g",
                    next_id + 3599
                ),
            )
            .unwrap();
            next_id += 3600;
            s3.tool(&[
                "put",
                &bucket,
                &format!("a/{}.txt", 10 + n),
                &noise(99 + n, 2500),
            ]);
        }
        let rec = run_ok(&env);
        if n < 3 {
            assert!(rec.get("anomalies").is_none(), "run {n}: {rec}");
        } else {
            assert_eq!(rec["anomalies"], serde_json::json!([]), "run {n}: {rec}");
        }
    }
    assert_eq!(count(c, &db, "orders"), 120_000 + 9 * 3600);
    // Every run was reported (BACKUP_ALERT_ON=always), none as an anomaly.
    assert_eq!(hook.wait_for(10).len(), 10);
    assert_eq!(anomaly_alerts(&hook), Vec::<String>::new());
    let s: serde_json::Value =
        serde_json::from_str(&stackback(&["status", "--json"], &env).stdout).unwrap();
    assert!(s.get("anomaly").is_none(), "{s}");
    let l = list_json(&env);
    let runs = l["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 10);
    for r in &runs[..9] {
        let change = &r["change"];
        assert!(
            change["bytes_percent"].as_f64().unwrap() > 0.0
                && change["objects_percent"].as_f64().unwrap() > 0.0,
            "{r}"
        );
    }
    assert!(
        runs[9].get("change").is_none(),
        "the first run has nothing before it"
    );
    let text = stackback(&["list"], &env).stdout;
    assert!(text.contains("objects +10.0%"), "{text}");
    assert!(!text.contains("ANOMALY"), "{text}");
}
