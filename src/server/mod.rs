//! The daemon's HTTP endpoints: `/metrics` (Prometheus text), `/healthz` (200 or 503 with a JSON
//! body), `/` (the status page, [`page`]) and `/api/runs` (what `stackback list --json` prints).
//! Everything is read from the backup directory per request.

mod chart;
mod html;
pub mod page;
mod render;
mod table;

use std::sync::{Arc, LazyLock};

use axum::extract::State;
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Utc};

use crate::config::{Config, ScheduleConfig};
use crate::notify::metrics::{render, render_process, DaemonCounters};

/// What the endpoints share with the scheduler.
pub struct DaemonState {
    pub cfg: Config,
    pub schedule: ScheduleConfig,
    pub started_at: DateTime<Utc>,
    pub counters: DaemonCounters,
    pub next_run: std::sync::Mutex<Option<DateTime<Utc>>>,
    /// What the setup check found broken; cleared by a good run.
    pub setup_problems: std::sync::Mutex<Vec<String>>,
}

pub fn router(state: Arc<DaemonState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/api/runs", get(api_runs))
        .route("/", get(index))
        .with_state(state)
}

async fn metrics(State(s): State<Arc<DaemonState>>) -> impl IntoResponse {
    match render(&s.cfg, Some(&s.counters)) {
        Ok(text) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            text + &render_process(),
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// What `/healthz` decides, typed, so the status page shows the same verdict.
#[derive(Debug, Clone)]
pub struct Health {
    pub ok: bool,
    /// `ok`, `stale` or `broken setup`.
    pub status: &'static str,
    pub setup_problems: Vec<String>,
    pub last_success: Option<DateTime<Utc>>,
    pub max_age: chrono::Duration,
    pub next_run: Option<DateTime<Utc>>,
}

/// Healthy while the newest good backup is younger than one schedule period plus the run
/// timeout, or while no scheduled run has been due since the daemon started.
pub fn health_check(s: &DaemonState, now: DateTime<Utc>) -> Health {
    let sched = &s.schedule.schedule;
    let timeout =
        chrono::Duration::from_std(s.schedule.timeout).unwrap_or(chrono::Duration::hours(6));
    let period = sched.period_after(now).unwrap_or(chrono::Duration::days(1));
    let first_due = sched.next_after(s.started_at);
    let nothing_due_yet = first_due.is_none_or(|t| now < t + timeout);
    let last_success = crate::sink::local::BackupDir::open(&s.cfg.backup_dir())
        .ok()
        .and_then(|d| crate::catalog::Catalog::new(d).records().ok())
        .and_then(|rs| {
            rs.into_iter()
                .rev()
                .find(|r| r.status == crate::catalog::RunState::Ok)
        })
        .map(|r| r.finished_at.unwrap_or(r.started_at));
    let fresh = last_success.is_some_and(|t| now - t <= period + timeout);
    // A good run that finished since the daemon started proves the setup works. The scheduler
    // clears the problems once the run's alerts and push are done, but its record, read here, is
    // on disk before that: without this, /healthz would say "broken setup" for that moment.
    let proven = last_success.is_some_and(|t| t >= s.started_at);
    let setup = if proven {
        Vec::new()
    } else {
        s.setup_problems.lock().expect("not poisoned").clone()
    };
    let ok = (fresh || nothing_due_yet) && setup.is_empty();
    let status = match (setup.is_empty(), ok) {
        (false, _) => "broken setup",
        (true, true) => "ok",
        (true, false) => "stale",
    };
    Health {
        ok,
        status,
        setup_problems: setup,
        last_success,
        max_age: period + timeout,
        next_run: *s.next_run.lock().expect("not poisoned"),
    }
}

/// [`health_check`] as `/healthz` answers it: the verdict and its JSON body.
pub fn health(s: &DaemonState, now: DateTime<Utc>) -> (bool, serde_json::Value) {
    let h = health_check(s, now);
    let body = serde_json::json!({
        "status": h.status,
        "setup_problems": h.setup_problems,
        "last_success": h.last_success,
        "max_age_seconds": h.max_age.num_seconds(),
        "next_run": h.next_run,
        "schedule": s.schedule.schedule.expr(),
        "started_at": s.started_at,
    });
    (h.ok, body)
}

async fn healthz(State(s): State<Arc<DaemonState>>) -> impl IntoResponse {
    let (ok, body) = health(&s, Utc::now());
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
}

/// The page's policy: nothing from any origin, not even this one, except the page's own inline
/// stylesheet, named by its hash (so text that escaped escaping still could not style or script
/// anything). No forms, no framing, no `<base>`.
static CSP: LazyLock<String> = LazyLock::new(|| {
    format!(
        "default-src 'none'; style-src '{}'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        html::style_hash()
    )
});

/// Headers every answer of the page and the API carries.
fn guarded(mut r: Response, content_type: &'static str) -> Response {
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if let Ok(v) = HeaderValue::from_str(&CSP) {
        h.insert(HeaderName::from_static("content-security-policy"), v);
    }
    r
}

async fn index(State(s): State<Arc<DaemonState>>) -> Response {
    // Reading the directory blocks: off the async workers.
    let (code, body) = tokio::task::spawn_blocking(move || page_answer(&s, Utc::now()))
        .await
        .unwrap_or_else(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()));
    guarded((code, body).into_response(), "text/html; charset=utf-8")
}

fn page_answer(s: &DaemonState, now: DateTime<Utc>) -> (StatusCode, String) {
    let h = health_check(s, now);
    let input = page::PageInput {
        cfg: &s.cfg,
        schedule: &s.schedule.schedule,
        health: &h,
        now,
    };
    match page::build(&input) {
        Ok(data) => (StatusCode::OK, render::page(&data)),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            render::error_page(&s.cfg.redactor().redact(&e.to_string())),
        ),
    }
}

/// `stackback list --json`, the same serialisation of the same report.
async fn api_runs(State(s): State<Arc<DaemonState>>) -> Response {
    let (code, body) = tokio::task::spawn_blocking(move || runs_answer(&s))
        .await
        .unwrap_or_else(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()));
    guarded((code, body).into_response(), "application/json")
}

fn runs_answer(s: &DaemonState) -> (StatusCode, String) {
    let listed = crate::sink::local::BackupDir::open(&s.cfg.backup_dir())
        .and_then(|d| crate::ops::list::list(&d));
    match listed {
        Ok(l) => (
            StatusCode::OK,
            serde_json::to_string_pretty(&l).expect("reports serialise"),
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            serde_json::json!({ "error": s.cfg.redactor().redact(&e.to_string()) }).to_string(),
        ),
    }
}
