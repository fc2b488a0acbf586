//! `stackback config`: every setting, its value (secrets redacted) and its source; then the
//! problems of any section that does not validate (exit 2).

use std::io::Write;

use stackback::config::{Config, Section};
use stackback::error::{exit, Error};

pub fn run(cfg: &Config) -> Result<i32, Error> {
    let mut out = std::io::stdout().lock();
    let rows = cfg.settings().resolved();
    // Columns as wide as their longest entry, so every row lines up.
    let key_w = rows.iter().map(|r| r.setting.key.len()).max().unwrap_or(0);
    let env_w = rows
        .iter()
        .map(|r| r.setting.env.join("|").len())
        .max()
        .unwrap_or(0);
    for r in rows {
        let env = r.setting.env.join("|");
        let _ = writeln!(
            out,
            "{:<key_w$} {:<40} {:<env_w$} # {}",
            r.setting.key,
            r.display_value(),
            env,
            r.source
        );
    }
    drop(out);
    for w in cfg.warnings() {
        eprintln!("warning: {w}");
    }
    let problems: Vec<Error> = Section::ALL
        .iter()
        .filter_map(|s| cfg.require(&[*s]).err())
        .collect();
    let redactor = cfg.redactor();
    for e in &problems {
        eprintln!("error: {}", redactor.redact(&e.to_string()));
    }
    Ok(if problems.is_empty() {
        exit::OK
    } else {
        exit::USAGE
    })
}
