//! The anomaly section (`BACKUP_ANOMALY_*`): how far a run's sizes and counts may stray from the
//! median of the recent good runs before it is an anomaly; validated when built, errors name the
//! setting.

use super::settings::Key;
use super::Settings;
use crate::anomaly::Rules;
use crate::error::Result;

/// Anomaly checks: the rules, or off.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AnomalyConfig {
    /// `None`: BACKUP_ANOMALY_DROP is `off`, nothing is compared, nothing is open.
    pub rules: Option<Rules>,
}

fn is_off(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "off" | "false" | "no" | "none"
    )
}

/// `30%`, `30 %` or `30` as the fraction 0.3.
fn percent(k: Key, v: &str) -> Result<f64> {
    let t = v.trim();
    let number = t.strip_suffix('%').unwrap_or(t).trim();
    number
        .parse::<f64>()
        .ok()
        .filter(|p| p.is_finite() && *p > 0.0)
        .map(|p| p / 100.0)
        .ok_or_else(|| {
            k.error(format!(
                "expected a percentage such as 30% (or off), got {v:?}"
            ))
        })
}

impl AnomalyConfig {
    pub fn build(s: &Settings) -> Result<Self> {
        let raw_window = s.text(Key::AnomalyWindow);
        let window: usize = raw_window
            .trim()
            .parse()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| {
                Key::AnomalyWindow.error(format!(
                    "expected a number of runs from 1 to 1000, got {raw_window:?}"
                ))
            })?;
        let raw_growth = s.text(Key::AnomalyGrowth);
        // Checked even when drops are off, so a typo does not wait for the day checks go on.
        let growth = if is_off(raw_growth) {
            None
        } else {
            Some(percent(Key::AnomalyGrowth, raw_growth)?)
        };
        let raw_drop = s.text(Key::AnomalyDrop);
        if is_off(raw_drop) {
            return Ok(AnomalyConfig { rules: None });
        }
        let drop = percent(Key::AnomalyDrop, raw_drop)?;
        if drop >= 1.0 {
            return Err(Key::AnomalyDrop.error(format!(
                "{raw_drop:?} can never be crossed (nothing drops by 100 % or more; an emptied table is always an anomaly): use less than 100%, or off"
            )));
        }
        Ok(AnomalyConfig {
            rules: Some(Rules {
                window,
                drop,
                growth,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, LoadInput};

    fn cfg(pairs: &[(&str, &str)]) -> Config {
        Config::load(&LoadInput {
            env: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..LoadInput::default()
        })
        .unwrap()
    }

    #[test]
    fn defaults_off_and_bad_values_name_the_key() {
        let d = cfg(&[]).anomaly().unwrap().rules.unwrap();
        assert_eq!((d.window, d.drop, d.growth), (7, 0.3, Some(3.0)));
        let r = cfg(&[
            ("BACKUP_ANOMALY_DROP", "12.5 %"),
            ("BACKUP_ANOMALY_GROWTH", "OFF"),
            ("BACKUP_ANOMALY_WINDOW", "14"),
        ])
        .anomaly()
        .unwrap()
        .rules
        .unwrap();
        assert_eq!((r.window, r.drop, r.growth), (14, 0.125, None));
        assert_eq!(
            cfg(&[("BACKUP_ANOMALY_DROP", "off")])
                .anomaly()
                .unwrap()
                .rules,
            None
        );
        for (k, v, key) in [
            ("BACKUP_ANOMALY_DROP", "lots", "anomaly.drop"),
            ("BACKUP_ANOMALY_DROP", "100%", "anomaly.drop"),
            ("BACKUP_ANOMALY_DROP", "-5%", "anomaly.drop"),
            ("BACKUP_ANOMALY_GROWTH", "0", "anomaly.growth"),
            ("BACKUP_ANOMALY_WINDOW", "0", "anomaly.window"),
            ("BACKUP_ANOMALY_WINDOW", "seven", "anomaly.window"),
        ] {
            let err = cfg(&[(k, v)]).anomaly().unwrap_err().to_string();
            assert!(err.contains(key), "{k}={v}: {err}");
        }
        // A broken growth setting is refused even while drops are off.
        assert!(cfg(&[
            ("BACKUP_ANOMALY_DROP", "off"),
            ("BACKUP_ANOMALY_GROWTH", "x")
        ])
        .anomaly()
        .is_err());
    }
}
