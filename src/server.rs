//! The daemon's HTTP endpoints: `/metrics` (Prometheus text), `/healthz` (200 or 503 with a JSON
//! body), `/` (a one-screen status). Everything is read from the backup directory per request.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Utc};

use crate::config::{Config, ScheduleConfig};
use crate::notify::metrics::{render, DaemonCounters};

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
        .route("/", get(index))
        .with_state(state)
}

async fn metrics(State(s): State<Arc<DaemonState>>) -> impl IntoResponse {
    match render(&s.cfg, Some(&s.counters)) {
        Ok(text) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            text,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// Healthy while the newest good backup is younger than one schedule period plus the run
/// timeout, or while no scheduled run has been due since the daemon started.
pub fn health(s: &DaemonState, now: DateTime<Utc>) -> (bool, serde_json::Value) {
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
    let setup = s.setup_problems.lock().expect("not poisoned").clone();
    let ok = (fresh || nothing_due_yet) && setup.is_empty();
    let status = match (setup.is_empty(), ok) {
        (false, _) => "broken setup",
        (true, true) => "ok",
        (true, false) => "stale",
    };
    let body = serde_json::json!({
        "status": status,
        "setup_problems": setup,
        "last_success": last_success,
        "max_age_seconds": (period + timeout).num_seconds(),
        "next_run": *s.next_run.lock().expect("not poisoned"),
        "schedule": sched.expr(),
        "started_at": s.started_at,
    });
    (ok, body)
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

async fn index(State(s): State<Arc<DaemonState>>) -> impl IntoResponse {
    let (ok, body) = health(&s, Utc::now());
    format!(
        "stackback {}\nhealth: {}\nschedule: {} ({})\nnext run: {}\nlast success: {}\nendpoints: /metrics /healthz\n",
        env!("CARGO_PKG_VERSION"),
        if ok { "ok".to_string() } else { body["status"].as_str().unwrap_or("").to_uppercase() },
        s.schedule.schedule.expr(),
        s.schedule.schedule.tz(),
        body["next_run"],
        body["last_success"],
    )
}
