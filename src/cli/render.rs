//! Renderings shared by several commands.

use chrono::{DateTime, Utc};

/// `42s ago`, `3d ago`.
pub fn age(t: DateTime<Utc>) -> String {
    format!(
        "{} ago",
        stackback::units::human_age_seconds((Utc::now() - t).num_seconds())
    )
}

/// `1 run`, `3 runs`.
pub fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// `2026-11-29 02:00 CET (in 6h 12m)`: a future instant in the schedule's zone, to the minute,
/// with the time left.
pub fn when(t: DateTime<Utc>, tz: chrono_tz::Tz) -> String {
    let left = (t - Utc::now()).num_seconds().max(0);
    let (h, m) = (left / 3600, (left % 3600) / 60);
    let left = match (h, m) {
        (0, 0) => "less than a minute".to_string(),
        (0, m) => format!("{m}m"),
        (h, m) if h < 48 => format!("{h}h {m}m"),
        (h, _) => format!("{}d {}h", h / 24, h % 24),
    };
    format!(
        "{} (in {left})",
        t.with_timezone(&tz).format("%Y-%m-%d %H:%M %Z")
    )
}

pub fn print_json<T: serde::Serialize>(v: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).expect("reports serialise")
    );
}
