//! The status page as HTML: one document with its own inline stylesheet and inline SVG charts
//! ([`super::chart`]). Nothing on it loads anything (no script, no stylesheet, font or image from
//! anywhere), and every string that comes from disk goes through [`Esc`].

use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use super::chart::{self, Bar, Chart, Unit};
use super::html::{self, badge, relative, time, Esc};
use super::page::{PageData, CHART_RUNS};
use super::table;
use crate::ops::list::RunSummary;
use crate::units::human_bytes;

/// The whole page.
pub fn page(d: &PageData) -> String {
    let mut s = String::with_capacity(32 * 1024);
    let _ = write!(
        s,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1"><meta name="referrer" content="no-referrer"><title>{title} · stackback</title><style>{style}</style></head><body><main>"#,
        title = if d.health.ok {
            "Backups ok"
        } else {
            "Backups need attention"
        },
        style = html::STYLE,
    );
    header(&mut s, d);
    banner(&mut s, d);
    s.push_str(r#"<section class="cards">"#);
    cards(&mut s, d);
    s.push_str("</section>");
    charts(&mut s, d);
    table::history(&mut s, d);
    table::other_files(&mut s, d);
    let _ = write!(
        s,
        r#"<footer>stackback {v} · <a href="/metrics">/metrics</a> · <a href="/healthz">/healthz</a> · <a href="/api/runs">/api/runs</a> (the same data as <span class="mono">stackback list --json</span>) · page generated {t}</footer></main></body></html>"#,
        v = env!("CARGO_PKG_VERSION"),
        t = time(d.now, d.tz),
    );
    s
}

/// A page that says what went wrong when the directory could not be read.
pub fn error_page(error: &str) -> String {
    format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Backups: error · stackback</title><style>{}</style></head><body><main><div class="banner bad"><strong>The backup directory cannot be read</strong><p class="err">{}</p></div></main></body></html>"#,
        html::STYLE,
        Esc(error)
    )
}

fn header(s: &mut String, d: &PageData) {
    let _ = write!(
        s,
        r#"<header><h1>Backups</h1><div class="muted">directory <span class="mono">{dir}</span> · schedule <span class="mono">{sched}</span> ({tz})</div></header>"#,
        dir = Esc(&d.backup_dir),
        sched = Esc(&d.schedule),
        tz = Esc(d.tz.name()),
    );
}

/// The verdict (the same as `/healthz`) and every warning `status` gives.
fn banner(s: &mut String, d: &PageData) {
    let h = &d.health;
    let headline = match (h.ok, h.status) {
        (true, _) => "Healthy: backups are current".to_string(),
        (false, "broken setup") => "Broken setup: backups will fail until it is fixed".into(),
        (false, _) => format!(
            "Stale: no good backup in the last {}",
            crate::units::human_age_seconds(h.max_age.num_seconds())
        ),
    };
    let _ = write!(
        s,
        r#"<section class="banner {cls}" id="health" data-health="{st}"><strong>{headline}</strong>"#,
        cls = if h.ok { "good" } else { "bad" },
        st = Esc(h.status),
        headline = Esc(&headline),
    );
    let notes: Vec<&String> = h.setup_problems.iter().chain(&d.status.warnings).collect();
    if !notes.is_empty() {
        s.push_str("<ul>");
        for n in notes {
            let _ = write!(s, "<li>{}</li>", Esc(n));
        }
        s.push_str("</ul>");
    }
    s.push_str("</section>");
}

fn card(s: &mut String, id: &str, title: &str, big: &str, lines: &[String]) {
    let _ = write!(
        s,
        r#"<div class="card" id="{id}"><h2>{title}</h2><div class="big">{big}</div>"#
    );
    for l in lines {
        let _ = write!(s, r#"<p class="muted">{l}</p>"#);
    }
    s.push_str("</div>");
}

/// Last run, next run, last good backup, off-site copy, restore test, disk. Arguments of
/// [`card`] are HTML: each piece from disk is escaped where it is put in.
fn cards(s: &mut String, d: &PageData) {
    last_run_card(s, d);
    match d.health.next_run {
        Some(n) => {
            let big = Esc(&relative(n, d.now)).to_string();
            let when = Esc(&time(n, d.tz)).to_string();
            card(s, "next-run", "Next run", &big, &[when]);
        }
        None => card(s, "next-run", "Next run", "none scheduled", &[]),
    }
    match &d.status.last_success {
        Some(r) => {
            let done = r.finished_at.unwrap_or(r.started_at);
            let big = Esc(&relative(done, d.now)).to_string();
            let lines = [
                format!("{} · {}", run_id(r), human_bytes(r.bytes)),
                format!("finished {}", Esc(&time(done, d.tz))),
            ];
            card(s, "last-good", "Last good backup", &big, &lines);
        }
        None => {
            let lines = ["there is no good backup".to_string()];
            card(s, "last-good", "Last good backup", &badge("failed"), &lines);
        }
    }
    remote_card(s, d);
    restore_test_card(s, d);
    let t = &d.totals;
    let lines = [
        format!(
            "{} free of {}",
            human_bytes(t.free_bytes),
            human_bytes(t.total_bytes)
        ),
        format!(
            "{} database and {} bucket backups",
            t.database_backups, t.bucket_backups
        ),
    ];
    let big = format!("{} on disk", human_bytes(t.bytes_on_disk));
    card(s, "disk", "Backup directory", &big, &lines);
}

fn run_id(r: &RunSummary) -> String {
    format!(r#"<span class="mono">{}</span>"#, Esc(r.run_id.as_str()))
}

fn last_run_card(s: &mut String, d: &PageData) {
    let Some(r) = &d.status.last_run else {
        return card(s, "last-run", "Last run", "none yet", &[]);
    };
    let big = format!(
        "{} {}",
        badge(r.status.as_str()),
        Esc(&relative(r.started_at, d.now))
    );
    let took = r
        .duration_seconds
        .map_or(String::new(), |t| format!(" · {}", html::duration(t)));
    let mut lines = vec![
        format!("{}{took} · {}", run_id(r), human_bytes(r.bytes)),
        format!("started {}", Esc(&time(r.started_at, d.tz))),
    ];
    if let Some(e) = &r.error {
        lines.push(format!(r#"<span class="err">{}</span>"#, Esc(&one_line(e))));
    }
    card(s, "last-run", "Last run", &big, &lines);
}

const NOT_CONFIGURED: &str = r#"<span class="muted">not configured</span>"#;

fn remote_card(s: &mut String, d: &PageData) {
    let Some(r) = &d.remote else {
        let lines = ["every backup is on this host only".to_string()];
        return card(s, "remote", "Off-site copy", NOT_CONFIGURED, &lines);
    };
    let mut lines = vec![format!(
        r#"to <span class="mono">{}</span>"#,
        Esc(&r.target)
    )];
    if let Some(id) = &r.last_run {
        lines.push(format!(
            r#"newest copy: <span class="mono">{}</span>"#,
            Esc(id.as_str())
        ));
    }
    lines.push(last_success_line(r.last_success, d));
    if !r.detail.is_empty() {
        lines.push(Esc(&r.detail).to_string());
    }
    card(
        s,
        "remote",
        "Off-site copy",
        &badge(r.status.as_str()),
        &lines,
    );
}

fn restore_test_card(s: &mut String, d: &PageData) {
    let Some(t) = &d.restore_test else {
        let lines = ["backups are verified, never test-restored".to_string()];
        return card(s, "restore-test", "Restore test", NOT_CONFIGURED, &lines);
    };
    let mut lines = Vec::new();
    if let Some(id) = &t.run_id {
        let when = t.tested_at.map(|w| relative(w, d.now)).unwrap_or_default();
        lines.push(format!(
            r#"of <span class="mono">{}</span> · {}"#,
            Esc(id.as_str()),
            Esc(&when)
        ));
    }
    lines.push(last_success_line(t.last_success, d));
    if !t.detail.is_empty() {
        lines.push(Esc(&t.detail).to_string());
    }
    card(
        s,
        "restore-test",
        "Restore test",
        &badge(t.status.as_str()),
        &lines,
    );
}

fn last_success_line(t: Option<DateTime<Utc>>, d: &PageData) -> String {
    match t {
        Some(t) => format!("last success {}", Esc(&relative(t, d.now))),
        None => "no success yet".into(),
    }
}

/// An error's first line, cut to fit a card.
fn one_line(e: &str) -> String {
    let first = e.lines().next().unwrap_or("");
    match first.char_indices().nth(160) {
        Some((i, _)) => format!("{}…", &first[..i]),
        None => first.to_string(),
    }
}

/// Size and duration of the newest [`CHART_RUNS`] runs, oldest on the left.
fn charts(s: &mut String, d: &PageData) {
    let runs: Vec<&RunSummary> = d
        .history
        .iter()
        .take(CHART_RUNS)
        .map(|r| &r.run)
        .rev()
        .collect();
    let span = match (runs.first(), runs.last()) {
        (Some(a), Some(b)) => b.started_at - a.started_at,
        _ => chrono::Duration::zero(),
    };
    // Enough of the date to tell the labelled runs apart, and no more.
    let label_format = if span < chrono::Duration::minutes(10) {
        "%H:%M:%S"
    } else if span < chrono::Duration::days(1) {
        "%H:%M"
    } else if span < chrono::Duration::days(4) {
        "%m-%d %H:%M"
    } else {
        "%b %d"
    };
    let bars = |value: &dyn Fn(&RunSummary) -> Option<f64>| -> Vec<Bar> {
        runs.iter()
            .map(|r| Bar {
                run_id: r.run_id.as_str().to_string(),
                state: r.status,
                value: value(r),
                label: r
                    .started_at
                    .with_timezone(&d.tz)
                    .format(label_format)
                    .to_string(),
            })
            .collect()
    };
    let size_bars = bars(&|r| Some(r.bytes as f64));
    let time_bars = bars(&|r| r.duration_seconds);
    let size = chart::render(&Chart {
        id: "chart-size",
        title: "Backup size per run (bytes on disk)",
        unit: Unit::Bytes,
        ok_fill: "#4a72b8",
        bars: &size_bars,
    });
    let duration = chart::render(&Chart {
        id: "chart-duration",
        title: "Run duration",
        unit: Unit::Seconds,
        ok_fill: "#2f8f83",
        bars: &time_bars,
    });
    let _ = write!(
        s,
        r#"<section class="panel"><h2>The last {n} runs</h2><div class="charts"><div><h3>Size</h3>{size}</div><div><h3>Duration</h3>{duration}</div></div><p class="legend"><span class="key"><span class="swatch ok"></span><span class="swatch ok2"></span>ok (size, duration)</span><span class="key"><span class="swatch partial"></span>partial</span><span class="key"><span class="swatch failed"></span>failed or unreadable</span><span class="key"><span class="swatch other"></span>running or incomplete</span></p></section>"#,
        n = runs.len(),
    );
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::catalog::{ArtifactKind, RunId, RunState, Step};
    use crate::ops::list::{ArtifactSummary, Status, Totals};
    use crate::server::page::RunRow;
    use crate::server::Health;

    const HOSTILE: &str = r#"<script>alert("x")</script><img src=x onerror=alert(1)>"#;

    fn run(i: i64, status: RunState) -> RunSummary {
        let started =
            Utc.with_ymd_and_hms(2026, 11, 1, 2, 0, 0).unwrap() + chrono::Duration::days(i);
        RunSummary {
            run_id: RunId::from_time(started),
            started_at: started,
            finished_at: Some(started + chrono::Duration::seconds(40 + i)),
            duration_seconds: Some(40.0 + i as f64),
            status,
            failed_step: (status == RunState::Failed).then(|| Step::Objects(HOSTILE.into())),
            error: (status == RunState::Failed).then(|| HOSTILE.to_string()),
            artifacts: vec![ArtifactSummary {
                kind: ArtifactKind::Objects,
                file: format!("minio_{HOSTILE}_{i}.tar.gz"),
                bytes: 1000 * i as u64,
                verified: true,
                present: true,
                objects: Some(3),
            }],
            bytes: 1000 * i as u64,
            restore_test: None,
            change: None,
            anomalies: Vec::new(),
            anomalies_acknowledged: false,
        }
    }

    /// `n` runs, newest first, the newest one failed with hostile text everywhere.
    fn data(n: i64) -> PageData {
        let history: Vec<RunRow> = (0..n)
            .rev()
            .map(|i| RunRow {
                run: run(
                    i,
                    if i == n - 1 {
                        RunState::Failed
                    } else {
                        RunState::Ok
                    },
                ),
                restore_test: None,
            })
            .collect();
        let now = history[0].run.started_at + chrono::Duration::hours(1);
        PageData {
            now,
            tz: chrono_tz::Europe::Berlin,
            schedule: "0 2 * * *".into(),
            backup_dir: format!("/backups/{HOSTILE}"),
            health: Health {
                ok: false,
                status: "broken setup",
                setup_problems: vec![HOSTILE.into()],
                last_success: None,
                max_age: chrono::Duration::hours(30),
                next_run: Some(now + chrono::Duration::hours(20)),
            },
            status: Status {
                schema: 1,
                last_run: Some(history[0].run.clone()),
                last_success: history.get(1).map(|r| r.run.clone()),
                last_success_age_seconds: None,
                next_run: None,
                good_backups: 1,
                bytes_on_disk: 0,
                free_bytes: 0,
                warnings: vec![HOSTILE.into()],
                stale: false,
                max_age_seconds: 0,
                remote: None,
                restore_test: None,
                anomaly: None,
            },
            history,
            totals: Totals::default(),
            unmanaged: Vec::new(),
            temp_files: Vec::new(),
            remote: None,
            restore_test: None,
        }
    }

    #[test]
    fn text_from_disk_never_becomes_markup() {
        let html = page(&data(3));
        assert!(
            !html.contains("<script") && !html.contains("<img"),
            "{html}"
        );
        // The directory, setup problem, warning, last run's error, failed step, file names.
        assert!(html.matches("&lt;script&gt;").count() >= 6, "{html}");
        assert!(error_page(HOSTILE).contains("&lt;script&gt;alert(&quot;x&quot;)"));
    }

    #[test]
    fn the_charts_hold_the_newest_thirty_runs_oldest_first() {
        let d = data(35);
        let html = page(&d);
        assert_eq!(
            html.matches(r#"<rect class="mark""#).count(),
            2 * CHART_RUNS
        );
        let newest = d.history[0].run.run_id.as_str();
        let oldest_shown = d.history[CHART_RUNS - 1].run.run_id.as_str();
        let not_shown = d.history[CHART_RUNS].run.run_id.as_str();
        assert!(!html.contains(&format!(r#"<rect class="mark" data-run="{not_shown}""#)));
        let pos = |id: &str| {
            html.find(&format!(r#"<rect class="mark" data-run="{id}""#))
                .unwrap()
        };
        assert!(pos(oldest_shown) < pos(newest), "oldest on the left");
        assert_eq!(
            html.matches("<tr data-run=").count(),
            35,
            "the table has every run"
        );
    }

    #[test]
    fn sections_without_data_say_not_configured() {
        let html = page(&data(2));
        let card = |id: &str| {
            let from = html.find(&format!(r#"id="{id}""#)).unwrap();
            html[from..from + html[from..].find("</div></div>").unwrap_or(200)].to_string()
        };
        assert!(card("remote").contains("not configured"));
        assert!(card("restore-test").contains("not configured"));
    }

    #[test]
    fn filled_views_show_their_state_escaped() {
        use crate::server::page::{RemoteView, RestoreTestView, ViewStatus};
        let mut d = data(2);
        let tested = d.history[1].run.run_id.clone();
        d.remote = Some(RemoteView {
            status: ViewStatus::Failed,
            target: format!("s3://{HOSTILE}"),
            last_run: Some(tested.clone()),
            last_success: Some(d.now - chrono::Duration::days(2)),
            detail: HOSTILE.into(),
        });
        let view = RestoreTestView {
            status: ViewStatus::Ok,
            run_id: Some(tested.clone()),
            tested_at: Some(d.now),
            last_success: Some(d.now),
            detail: "12 tables, 3402 rows, 0 mismatches".into(),
        };
        d.history[1].restore_test = Some(view.clone());
        d.restore_test = Some(view);
        let html = page(&d);
        assert!(!html.contains("<script"), "{html}");
        assert!(html.contains(r#"data-state="failed">failed</span>"#));
        assert!(html.contains("last success 2d ago"), "{html}");
        assert!(html.contains(&format!("of <span class=\"mono\">{tested}</span>")));
        let row = &html[html.find(&format!(r#"<tr data-run="{tested}""#)).unwrap()..];
        let row = &row[..row.find("</tr>").unwrap()];
        assert!(
            row.contains(r#"data-state="ok">ok</span><div class="muted small">12 tables"#),
            "{row}"
        );
    }

    #[test]
    fn anomalies_and_changes_show_in_their_run_row_escaped() {
        use crate::catalog::{Anomaly, AnomalyMetric, AnomalyRule};
        use crate::ops::list::RunChange;
        let mut d = data(3);
        let prev = d.history[2].run.run_id.clone();
        let r = &mut d.history[1].run;
        r.change = Some(RunChange {
            previous_run_id: prev,
            bytes_percent: Some(-55.2),
            objects_percent: Some(-90.0),
        });
        r.anomalies = vec![Anomaly {
            metric: AnomalyMetric::TableRows,
            subject: format!("public.{HOSTILE}"),
            before: 120_000,
            now: 48_000,
            change_percent: -60.0,
            rule: AnomalyRule::Drop,
            runs: 7,
        }];
        let id = r.run_id.clone();
        let html = page(&d);
        assert!(!html.contains("<script"), "{html}");
        let row = &html[html.find(&format!(r#"<tr data-run="{id}""#)).unwrap()..];
        let row = &row[..row.find("</tr>").unwrap()];
        assert!(
            row.contains(r#"data-field="change"><span title="against run"#)
                && row.contains("-55.2%<br>objects -90.0%"),
            "{row}"
        );
        assert!(
            row.contains(r#"data-metric="table_rows" data-before="120000" data-now="48000""#),
            "{row}"
        );
        assert!(
            row.contains(r#"data-state="anomaly">anomaly</span>"#),
            "{row}"
        );
        assert!(row.contains("public.&lt;script&gt;"), "{row}");
        assert!(row.contains("120000 rows → 48000 rows (-60.0 %"), "{row}");
    }
}
