//! `stackback anomaly ack RUN`: acknowledge a run's size anomalies as an expected change.

use stackback::config::Config;
use stackback::error::{exit, Error};

use crate::cli::render::print_json;

pub async fn ack(cfg: &Config, run: &str, note: Option<String>, json: bool) -> Result<i32, Error> {
    let r = stackback::ops::anomaly::ack(cfg, run, note).await?;
    if json {
        print_json(&r);
        return Ok(exit::OK);
    }
    if r.recorded {
        println!(
            "acknowledged the anomalies of run {} (and of the runs before it):",
            r.run_id
        );
    } else {
        println!(
            "the anomalies of run {} were acknowledged already:",
            r.run_id
        );
    }
    for a in &r.anomalies {
        println!("  {}", a.describe());
    }
    println!(
        "later runs are compared with run {} and the good runs after it",
        r.run_id
    );
    match &r.still_open {
        Some(o) => println!(
            "still open: the anomaly of the newer run {} ({}); `stackback anomaly ack {0}` if it is expected too",
            o.run_id,
            stackback::anomaly::summary(&o.anomalies)
        ),
        None => println!("no anomaly is open"),
    }
    if let Some(p) = &r.pushgateway {
        println!(
            "pushgateway {}: {}",
            if p.ok { "ok" } else { "FAILED" },
            p.detail
        );
    }
    Ok(exit::OK)
}
