//! `stackback prune`: retention now, every decision with its reason.

use std::io::Write;

use stackback::config::Config;
use stackback::error::{exit, Error};
use stackback::units::human_bytes;

use crate::cli::render::print_json;

pub async fn run(
    cfg: &Config,
    dry_run: bool,
    include_unmanaged: bool,
    json: bool,
) -> Result<i32, Error> {
    let opts = stackback::ops::prune::PruneOptions {
        dry_run,
        include_unmanaged,
        current: None,
    };
    let r = stackback::ops::prune::run(cfg, &opts).await?;
    if json {
        print_json(&r);
        return Ok(exit::OK);
    }
    let mut out = std::io::stdout().lock();
    for d in &r.decisions {
        let _ = writeln!(
            out,
            "{} {:<10} {:<6} {}",
            d.run_id,
            format!("{:?}", d.state).to_lowercase(),
            if d.keep { "keep" } else { "delete" },
            d.reasons.join("; ")
        );
    }
    for n in &r.notes {
        let _ = writeln!(out, "note: {n}");
    }
    let verb = if dry_run { "would delete" } else { "deleted" };
    let _ = writeln!(
        out,
        "{verb} {} runs, {} files, {}",
        r.deleted_runs().len(),
        r.deleted_files.len(),
        human_bytes(r.freed_bytes)
    );
    Ok(exit::OK)
}
