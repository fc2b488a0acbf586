//! Units people type and read: byte sizes, durations, booleans; and their human renderings.
//!
//! Parsing is shared by every setting that takes a size or a duration; rendering by every report
//! that shows one, so `1.5 MiB` means the same thing in `list`, `status`, alerts and errors.

use std::time::Duration;

/// `true/false`, `yes/no`, `on/off`, `1/0`, case-insensitive; empty is false.
pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Ok(true),
        "false" | "no" | "off" | "0" | "" => Ok(false),
        other => Err(format!("expected true or false, got {other:?}")),
    }
}

/// A byte count: `1024`, `512B`, `10k`/`10KiB` (1024), `5MB`/`5MiB`, `2G`, `1T` (binary multiples).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let num: f64 = num
        .parse()
        .map_err(|_| format!("expected a size such as 1024, 512KiB or 2GiB, got {s:?}"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        other => return Err(format!("unknown size unit {other:?} in {s:?}")),
    };
    if num < 0.0 || !num.is_finite() {
        return Err(format!("size must be positive, got {s:?}"));
    }
    Ok((num * mult as f64).round() as u64)
}

/// A duration: `90` (seconds), `30s`, `15m`, `6h`, `2d`, or combinations such as `1h30m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = 0u64;
    let mut num = String::new();
    for c in t.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: u64 = num
            .parse()
            .map_err(|_| format!("expected a duration such as 90s, 15m or 6h, got {s:?}"))?;
        num.clear();
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            _ => return Err(format!("unknown duration unit {c:?} in {s:?}")),
        };
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("duration {s:?} is too long"))?;
    }
    if !num.is_empty() {
        return Err(format!("duration {s:?} ends without a unit (s, m, h, d)"));
    }
    Ok(Duration::from_secs(total))
}

/// `1.5 MiB`, `812 B`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// An age in the largest unit that keeps it readable: `42s`, `17m`, `5h`, `3d`.
pub fn human_age_seconds(s: i64) -> String {
    let s = s.max(0);
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("1024").unwrap(), 1024);
        assert_eq!(parse_bytes("1KiB").unwrap(), 1024);
        assert_eq!(parse_bytes("2G").unwrap(), 2 << 30);
        assert_eq!(parse_bytes("1.5MiB").unwrap(), 3 << 19);
        assert!(parse_bytes("ten").is_err());
        assert!(parse_bytes("5 parsecs").is_err());
        assert_eq!(human_bytes(812), "812 B");
        assert_eq!(human_bytes(3 << 19), "1.5 MiB");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("6h").unwrap(), Duration::from_secs(6 * 3600));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert!(parse_duration("5").is_ok());
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("1h5").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
        assert_eq!(human_age_seconds(7200), "2h");
    }

    #[test]
    fn bools() {
        assert!(parse_bool("Yes").unwrap());
        assert!(!parse_bool("0").unwrap());
        assert!(parse_bool("maybe").is_err());
    }
}
