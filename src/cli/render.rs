//! Renderings shared by several commands.

use chrono::{DateTime, Utc};

/// `42s ago`, `3d ago`.
pub fn age(t: DateTime<Utc>) -> String {
    format!(
        "{} ago",
        stackback::units::human_age_seconds((Utc::now() - t).num_seconds())
    )
}

pub fn print_json<T: serde::Serialize>(v: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).expect("reports serialise")
    );
}
