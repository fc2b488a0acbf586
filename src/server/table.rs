//! The status page's history table (every run `list` shows, newest first, with its change in
//! size against the previous run, its size anomalies, and the totals) and its list of files no
//! run names. Cells carry the exact numbers in `data-` attributes beside the
//! readable ones, so a script (or a test) can check them against `list --json`.

use std::fmt::Write as _;

use super::html::{self, badge, minute, pill, relative, Esc};
use super::page::{PageData, RunRow};
use crate::ops::list::{FileSummary, RunSummary};
use crate::units::human_bytes;

/// The table of runs, with the totals in its footer.
pub fn history(s: &mut String, d: &PageData) {
    let _ = write!(
        s,
        r#"<section class="panel"><h2>History: {n} runs in the directory</h2><table id="history"><thead><tr><th>Run (started)</th><th>Status</th><th class="num">Size</th><th class="num" title="against the previous run with backups">Change</th><th class="num">Duration</th><th>Verification</th><th>Restore test</th><th>Backups and errors</th></tr></thead><tbody>"#,
        n = d.history.len(),
    );
    if d.history.is_empty() {
        s.push_str(r#"<tr><td colspan="8" class="muted">No run yet.</td></tr>"#);
    }
    for row in &d.history {
        run_row(s, row, d);
    }
    s.push_str("</tbody>");
    totals(s, d);
    s.push_str("</table></section>");
}

fn run_row(s: &mut String, row: &RunRow, d: &PageData) {
    let r = &row.run;
    let id = Esc(r.run_id.as_str());
    let duration = r
        .duration_seconds
        .map_or_else(|| "—".to_string(), html::duration);
    let _ = write!(
        s,
        r#"<tr data-run="{id}" data-status="{st}" data-bytes="{b}"><td class="nowrap"><span class="mono">{id}</span><div class="muted small">{t} · {ago}</div></td><td data-field="status">{badge}</td><td class="num" data-field="size" title="{b} bytes">{size}</td><td class="num" data-field="change">{change}</td><td class="num" data-field="duration">{duration}</td><td class="nowrap" data-field="verification">{verify}</td><td data-field="restore-test">{test}</td><td>"#,
        st = r.status.as_str(),
        b = r.bytes,
        t = Esc(&minute(r.started_at, d.tz)),
        ago = Esc(&relative(r.started_at, d.now)),
        badge = badge(r.status.as_str()),
        size = human_bytes(r.bytes),
        change = change(r),
        verify = verification(r),
        test = restore_test(row),
    );
    if !r.artifacts.is_empty() {
        s.push_str(r#"<ul class="files">"#);
        for a in &r.artifacts {
            // The kind is in the file's name (db_, minio_...); spelled out on hover.
            let objects = a
                .objects
                .map_or(String::new(), |n| format!(" · {n} objects"));
            let _ = write!(
                s,
                r#"<li title="{k}"><span class="mono">{f}</span> <span class="muted small nowrap">{size}{objects}</span></li>"#,
                f = Esc(&a.file),
                k = Esc(&a.kind.to_string()),
                size = human_bytes(a.bytes),
            );
        }
        s.push_str("</ul>");
    }
    for a in &r.anomalies {
        let _ = write!(
            s,
            r#"<p class="anomaly" data-field="anomaly" data-metric="{m}" data-before="{b}" data-now="{n}">{pill} {text}</p>"#,
            m = a.metric.as_str(),
            b = a.before,
            n = a.now,
            pill = pill(
                "anomaly",
                if r.anomalies_acknowledged {
                    "anomaly, acknowledged"
                } else {
                    "anomaly"
                }
            ),
            text = Esc(&a.describe()),
        );
    }
    if let Some(e) = &r.error {
        let step = r
            .failed_step
            .as_ref()
            .map_or(String::new(), |st| format!("{st}: "));
        let _ = write!(s, r#"<p class="err">{}{}</p>"#, Esc(&step), Esc(e));
    }
    s.push_str("</td></tr>");
}

/// The change in size (and objects) against the previous run with backups.
fn change(r: &RunSummary) -> String {
    let Some(c) = &r.change else {
        return r#"<span class="muted">—</span>"#.into();
    };
    let mut parts = Vec::new();
    if let Some(p) = c.bytes_percent {
        parts.push(format!("{p:+.1}%"));
    }
    if let Some(p) = c.objects_percent {
        parts.push(format!("objects {p:+.1}%"));
    }
    if parts.is_empty() {
        return r#"<span class="muted">—</span>"#.into();
    }
    format!(
        r#"<span title="against run {}">{}</span>"#,
        Esc(c.previous_run_id.as_str()),
        parts.join("<br>")
    )
}

/// "verified" when every file the run wrote is on disk and passed its check.
fn verification(r: &RunSummary) -> String {
    let n = r.artifacts.len();
    let missing = r.artifacts.iter().filter(|a| !a.present).count();
    let unverified = r
        .artifacts
        .iter()
        .filter(|a| a.present && !a.verified)
        .count();
    let files = if n == 1 { "file" } else { "files" };
    match (n, missing, unverified) {
        (0, _, _) => r#"<span class="muted">—</span>"#.into(),
        (_, 0, 0) => format!(
            r#"<span title="{n} {files}, each on disk and verified">{}</span>"#,
            pill("ok", "verified")
        ),
        (_, 0, u) => pill("partial", &format!("{u} of {n} unverified")),
        (_, m, _) => pill("failed", &format!("{m} of {n} missing")),
    }
}

fn restore_test(row: &RunRow) -> String {
    match &row.restore_test {
        None => r#"<span class="muted">—</span>"#.into(),
        Some(t) => {
            let detail = if t.detail.is_empty() {
                String::new()
            } else {
                format!(r#"<div class="muted small">{}</div>"#, Esc(&t.detail))
            };
            format!("{}{detail}", badge(t.status.as_str()))
        }
    }
}

/// The numbers `list` ends with, each in an element named by `data-total`.
fn totals(s: &mut String, d: &PageData) {
    let t = &d.totals;
    let n = |key: &str, v: usize| format!(r#"<strong data-total="{key}">{v}</strong>"#);
    let bytes = |key: &str, v: u64| {
        format!(
            r#"<strong data-total="{key}" data-bytes="{v}" title="{v} bytes">{}</strong>"#,
            human_bytes(v)
        )
    };
    let _ = write!(
        s,
        r#"<tfoot><tr><td colspan="8" id="totals">{} runs: {} ok, {} partial, {} failed, {} incomplete · {} database and {} bucket backups · {} on disk, {} free</td></tr></tfoot>"#,
        n("runs", t.runs),
        n("ok", t.ok),
        n("partial", t.partial),
        n("failed", t.failed),
        n("incomplete", t.incomplete),
        n("database_backups", t.database_backups),
        n("bucket_backups", t.bucket_backups),
        bytes("bytes_on_disk", t.bytes_on_disk),
        bytes("free_bytes", t.free_bytes),
    );
}

/// Files no run record names (the old script's backups) and leftovers of interrupted runs.
pub fn other_files(s: &mut String, d: &PageData) {
    if d.unmanaged.is_empty() && d.temp_files.is_empty() {
        return;
    }
    s.push_str(r#"<section class="panel" id="other-files"><h2>Other files</h2><table><thead><tr><th>File</th><th class="num">Size</th><th>What it is</th></tr></thead><tbody>"#);
    let rows = |s: &mut String, files: &[FileSummary], what: &str| {
        for f in files {
            let _ = write!(
                s,
                r#"<tr><td class="mono">{}</td><td class="num">{}</td><td class="muted">{what}</td></tr>"#,
                Esc(&f.file),
                human_bytes(f.bytes),
            );
        }
    };
    rows(
        s,
        &d.unmanaged,
        "unmanaged: no run record names it; never pruned unless asked",
    );
    rows(s, &d.temp_files, "leftover of an interrupted run or prune");
    s.push_str("</tbody></table></section>");
}
