//! `stackback verify`: one line per artifact, exit 3 when any check failed.

use std::io::Write;

use stackback::config::Config;
use stackback::error::{exit, Error};
use stackback::ops::verify::{Outcome, Target};
use stackback::ops::Selector;
use stackback::units::human_bytes;

pub async fn run(cfg: &Config, target: Option<&str>, all: bool) -> Result<i32, Error> {
    let target = if all {
        Target::All
    } else {
        Target::One(target.map_or(Selector::Latest, Selector::parse))
    };
    let report = stackback::ops::verify::run(cfg, target).await?;
    let mut out = std::io::stdout().lock();
    for c in &report.checks {
        let (tag, text) = match &c.outcome {
            Outcome::Ok(t) => ("OK  ", t.clone()),
            Outcome::Failed(p) => ("FAIL", p.to_string()),
            Outcome::Unopenable(k) => ("KEY ", k.clone()),
            Outcome::Skipped(t) => ("SKIP", t.clone()),
        };
        let size = c.stored_bytes.map(human_bytes).unwrap_or_default();
        let run = c
            .run_id
            .as_ref()
            .map_or_else(|| "-".to_string(), |r| r.to_string());
        let _ = writeln!(out, "{tag} {run} {} {size}: {text}", c.file);
    }
    let _ = writeln!(
        out,
        "{} verified, {} failed, {} skipped",
        report.passed(),
        report.failed(),
        report.skipped()
    );
    if report.failed() > 0 {
        return Ok(exit::VERIFY);
    }
    if report.unopenable() > 0 {
        eprintln!("error: this host's BACKUP_AGE_IDENTITY_FILE cannot open the encrypted backups marked KEY: set it to the identity of one of their recipients (or unset it to verify them at the stored level)");
        return Ok(exit::USAGE);
    }
    if report.passed() == 0 {
        eprintln!("error: no verified backup among the checked runs");
        return Ok(exit::VERIFY);
    }
    Ok(exit::OK)
}

/// `stackback verify --remote [RUN|latest|--all]`.
pub async fn remote(cfg: &Config, target: Option<&str>, all: bool) -> Result<i32, Error> {
    let sel = if all {
        None
    } else {
        Some(target.map_or(Selector::Latest, Selector::parse))
    };
    let checks = stackback::ops::offsite::verify(cfg, sel.as_ref()).await?;
    let mut out = std::io::stdout().lock();
    for c in &checks {
        let tag = if c.ok { "OK  " } else { "FAIL" };
        let _ = writeln!(out, "{tag} {} {}: {}", c.run_id, c.file, c.detail);
    }
    let failed = checks.iter().filter(|c| !c.ok).count();
    let _ = writeln!(
        out,
        "{} verified on the remote, {failed} failed",
        checks.len() - failed
    );
    if failed > 0 {
        return Ok(exit::VERIFY);
    }
    if checks.is_empty() {
        eprintln!("error: the remote holds no backup to verify");
        return Ok(exit::VERIFY);
    }
    Ok(exit::OK)
}
