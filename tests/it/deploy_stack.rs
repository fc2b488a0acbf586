//! The deployment files in the seed's stack, checked with the tools an operator would use:
//! promtool for the Prometheus rules (the seed's `BackupFailed` among them, verbatim).

use std::path::{Path, PathBuf};

use crate::support::*;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs a program found by [`find_binary`] (so a missing tool fails the test) in `dir`.
fn run_in(dir: &Path, name: &str, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(find_binary(name))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The lines of the YAML block that starts at the line containing `start`, as far as it is
/// indented deeper than that line, with the start line's indentation removed from each.
fn yaml_block(text: &str, start: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.contains(start))
        .unwrap_or_else(|| panic!("no line with {start:?}"));
    let indent = lines[at].len() - lines[at].trim_start().len();
    let mut block = vec![lines[at][indent..].to_string()];
    for l in &lines[at + 1..] {
        let deeper = l.len() - l.trim_start().len() > indent;
        if l.trim().is_empty() || !deeper || l.trim_start().starts_with("```") {
            break;
        }
        if l.trim_start().starts_with('#') {
            continue;
        }
        block.push(l[indent..].to_string());
    }
    block
}

/// The seed's alert rule is shipped as the seed wrote it (same name, expression, `for`, labels
/// and annotation), and the file passes `promtool check rules`.
#[test]
fn the_seeds_backup_failed_rule_ships_verbatim() {
    let seed = std::fs::read_to_string(repo().join("../shared/seed/BACKUP.md"))
        .expect("the seed document beside the checkout");
    let rules_path = repo().join("deploy/prometheus/stackback-rules.yml");
    let rules = std::fs::read_to_string(&rules_path).unwrap();
    let want = yaml_block(&seed, "- alert: BackupFailed");
    assert_eq!(want.len(), 7, "the seed's rule: {want:#?}");
    assert_eq!(yaml_block(&rules, "- alert: BackupFailed"), want);
    for name in ["BackupRunFailed", "BackupMetricsMissing"] {
        assert!(
            rules.contains(&format!("- alert: {name}\n")),
            "{name} missing"
        );
    }

    let (ok, out) = run_in(
        rules_path.parent().unwrap(),
        "promtool",
        &["check", "rules", "stackback-rules.yml"],
    );
    assert!(ok, "promtool check rules: {out}");
    assert!(out.contains("SUCCESS: 3 rules found"), "{out}");
}

/// `promtool test rules` runs stackback-rules.test.yml: series shaped as stackback pushes them
/// (job `backup`, instance, type) prove that the seed's BackupFailed fires once the last success
/// is more than 24 h old for an hour and stays quiet while backups succeed daily (one of them
/// late), that BackupRunFailed names the type whose run failed, and that BackupMetricsMissing
/// fires when there is nothing to compare.
#[test]
fn promtool_unit_tests_of_the_alert_rules_pass() {
    let dir = repo().join("deploy/prometheus");
    let tests = std::fs::read_to_string(dir.join("stackback-rules.test.yml")).unwrap();
    assert!(
        tests.contains(r#"job="backup", instance="schedgen-backup", type="database""#),
        "the series must be the ones stackback pushes"
    );
    let (ok, out) = run_in(
        &dir,
        "promtool",
        &["test", "rules", "stackback-rules.test.yml"],
    );
    assert!(ok, "promtool test rules: {out}");
    assert!(out.contains("SUCCESS"), "{out}");

    // The tests are not vacuous: with the seed's `for: 1h` shortened, the late backup of the
    // healthy case fires and the suite fails.
    let tmp = tempfile::tempdir().unwrap();
    let rules = std::fs::read_to_string(dir.join("stackback-rules.yml")).unwrap();
    assert_eq!(rules.matches("for: 1h\n").count(), 2, "{rules}");
    std::fs::write(
        tmp.path().join("stackback-rules.yml"),
        rules.replacen("for: 1h\n", "for: 20m\n", 1),
    )
    .unwrap();
    std::fs::write(tmp.path().join("stackback-rules.test.yml"), &tests).unwrap();
    let (ok, out) = run_in(
        tmp.path(),
        "promtool",
        &["test", "rules", "stackback-rules.test.yml"],
    );
    assert!(
        !ok && out.contains("alertname: BackupFailed"),
        "a shortened `for` must fail the tests: {out}"
    );
}
