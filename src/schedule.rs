//! The backup schedule: cron expressions evaluated in the configured time zone.
//!
//! `BACKUP_SCHEDULE` takes 5-field cron (`0 2 * * *`), the nicknames `@hourly`, `@daily`,
//! `@weekly`, `@monthly`, `@yearly`, and a 6-field form with seconds first (`*/5 * * * * *`, for
//! tests). Next-run computation is pure (`now` passed in) and goes through the time zone, so 02:30
//! on a spring-forward night runs at the first valid instant and 01:30 on a fall-back night runs
//! once. The daemon recomputes from wall-clock time instead of sleeping for the whole gap, so
//! suspend and clock jumps cannot make it miss or double a run.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds};
use croner::Cron;

/// A parsed schedule in a time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    expr: String,
    cron: Cron,
    tz: Tz,
}

impl Schedule {
    /// # Errors
    /// A message naming what is wrong with the expression.
    pub fn parse(expr: &str, tz: Tz) -> Result<Schedule, String> {
        let e = expr.trim();
        let cron = match e {
            "@hourly" | "@daily" | "@midnight" | "@weekly" | "@monthly" | "@yearly" | "@annually" => {
                Cron::from_str(e)
            }
            _ => CronParser::builder()
                .seconds(Seconds::Optional)
                .build()
                .parse(e),
        }
        .map_err(|err| {
            format!("{expr:?} is not a cron schedule ({err}); examples: \"0 2 * * *\" (daily at 02:00), \"0 */6 * * *\", \"@daily\"")
        })?;
        Ok(Schedule {
            expr: e.to_string(),
            cron,
            tz,
        })
    }

    pub fn expr(&self) -> &str {
        &self.expr
    }

    pub fn tz(&self) -> Tz {
        self.tz
    }

    /// The first scheduled instant strictly after `now`.
    pub fn next_after(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&now.with_timezone(&self.tz), false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// The gap between the next two runs after `now`: how stale a backup may get before the next
    /// one is overdue.
    pub fn period_after(&self, now: DateTime<Utc>) -> Option<chrono::Duration> {
        let a = self.next_after(now)?;
        let b = self.next_after(a)?;
        Some(b - a)
    }

    /// Scheduled instants in `(from, to]`: runs that fell due meanwhile (skipped while a run was
    /// still going, or slept through).
    pub fn due_between(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> usize {
        let mut n = 0;
        let mut t = from;
        while let Some(next) = self.next_after(t) {
            if next > to || n > 10_000 {
                break;
            }
            n += 1;
            t = next;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn utc(s: &str) -> DateTime<Utc> {
        Utc.from_utc_datetime(
            &chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap(),
        )
    }

    #[test]
    fn next_runs_across_dst() {
        let berlin = chrono_tz::Europe::Berlin;
        let ny = chrono_tz::America::New_York;
        // (expression, zone, now in UTC, expected next run in UTC)
        let table = [
            (
                "0 2 * * *",
                chrono_tz::UTC,
                "2026-01-10 01:00:00",
                "2026-01-10 02:00:00",
            ),
            (
                "0 2 * * *",
                chrono_tz::UTC,
                "2026-01-10 02:00:00",
                "2026-01-11 02:00:00",
            ),
            // Berlin winter: 02:00 CET = 01:00 UTC; summer: 02:00 CEST = 00:00 UTC.
            (
                "0 2 * * *",
                berlin,
                "2026-01-10 00:00:00",
                "2026-01-10 01:00:00",
            ),
            (
                "0 2 * * *",
                berlin,
                "2026-07-10 01:00:00",
                "2026-07-11 00:00:00",
            ),
            // 2026-03-29: 02:00-03:00 does not exist in Berlin; the run happens once that day.
            (
                "0 2 * * *",
                berlin,
                "2026-03-28 12:00:00",
                "2026-03-29 01:00:00",
            ),
            (
                "30 2 * * *",
                berlin,
                "2026-03-28 12:00:00",
                "2026-03-29 01:00:00",
            ),
            // 2026-10-25: 02:30 happens twice in Berlin; the run happens once.
            (
                "30 2 * * *",
                berlin,
                "2026-10-24 12:00:00",
                "2026-10-25 00:30:00",
            ),
            (
                "30 2 * * *",
                berlin,
                "2026-10-25 00:31:00",
                "2026-10-26 01:30:00",
            ),
            // New York: DST starts 2026-03-08 (02:00 → 03:00), ends 2026-11-01.
            (
                "0 2 * * *",
                ny,
                "2026-03-07 12:00:00",
                "2026-03-08 07:00:00",
            ),
            (
                "0 2 * * *",
                ny,
                "2026-03-08 08:00:00",
                "2026-03-09 06:00:00",
            ),
            (
                "0 2 * * *",
                ny,
                "2026-10-31 12:00:00",
                "2026-11-01 07:00:00",
            ),
            (
                "0 */6 * * *",
                chrono_tz::UTC,
                "2026-01-10 06:00:01",
                "2026-01-10 12:00:00",
            ),
            (
                "0 0 * * 0",
                chrono_tz::UTC,
                "2026-01-10 00:00:00",
                "2026-01-11 00:00:00",
            ),
            (
                "@daily",
                chrono_tz::UTC,
                "2026-01-10 00:00:01",
                "2026-01-11 00:00:00",
            ),
            (
                "@hourly",
                chrono_tz::UTC,
                "2026-01-10 00:00:01",
                "2026-01-10 01:00:00",
            ),
            (
                "*/5 * * * * *",
                chrono_tz::UTC,
                "2026-01-10 00:00:01",
                "2026-01-10 00:00:05",
            ),
        ];
        for (expr, tz, now, want) in table {
            let s = Schedule::parse(expr, tz).unwrap();
            assert_eq!(
                s.next_after(utc(now)),
                Some(utc(want)),
                "{expr} in {tz} after {now}"
            );
        }
    }

    #[test]
    fn bad_expressions_are_explained() {
        for e in ["", "every night", "61 2 * * *", "0 25 * * *"] {
            let err = Schedule::parse(e, chrono_tz::UTC).unwrap_err();
            assert!(err.contains("not a cron schedule"), "{err}");
        }
    }

    #[test]
    fn periods_and_missed_runs() {
        let s = Schedule::parse("0 2 * * *", chrono_tz::Europe::Berlin).unwrap();
        assert_eq!(
            s.period_after(utc("2026-01-10 00:00:00")),
            Some(chrono::Duration::hours(24))
        );
        assert_eq!(
            s.period_after(utc("2026-03-28 12:00:00")),
            Some(chrono::Duration::hours(23))
        );
        let m = Schedule::parse("*/10 * * * *", chrono_tz::UTC).unwrap();
        assert_eq!(
            m.due_between(utc("2026-01-10 00:00:00"), utc("2026-01-10 00:35:00")),
            3
        );
    }
}
