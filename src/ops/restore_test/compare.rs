//! Pure decisions of a restore test: whether restored row counts match the recorded ones, which
//! objects to sample, and the names of scratch databases and buckets (derived from run ids, and
//! checked before any name reaches SQL or S3, where they are also quoted).

use sha2::{Digest as _, Sha256};

use crate::catalog::{RowMismatch, RunId, TableCount};

/// Scratch databases are named `stackback_restore_test_<run id>_<nonce>`.
pub const DB_PREFIX: &str = "stackback_restore_test_";
/// Scratch buckets are named `stackback-restore-test-<run id>-<nonce>-<n>`.
pub const BUCKET_PREFIX: &str = "stackback-restore-test-";

/// An estimate (a table above BACKUP_ROW_COUNT_EXACT_LIMIT) matches a restored count within 10 %
/// of the larger of the two, or within this many rows, whichever allows more: `reltuples` comes
/// from the last ANALYZE, which samples, and lags behind writes since.
pub const ESTIMATE_SLACK_ROWS: u64 = 1000;
pub const ESTIMATE_TOLERANCE: f64 = 0.10;

/// Whether a restored count matches a recorded one.
pub fn counts_match(recorded: &TableCount, restored: u64) -> bool {
    if recorded.exact {
        return recorded.rows == restored;
    }
    let diff = recorded.rows.abs_diff(restored);
    let allowed = (recorded.rows.max(restored) as f64 * ESTIMATE_TOLERANCE) as u64;
    diff <= allowed.max(ESTIMATE_SLACK_ROWS)
}

/// The tables whose restored counts disagree with the recorded ones: a recorded table missing
/// after the restore, a count that differs, and a restored table the backup did not record.
pub fn compare(recorded: &[TableCount], restored: &[TableCount]) -> Vec<RowMismatch> {
    let find = |list: &'_ [TableCount], t: &TableCount| -> Option<u64> {
        list.iter()
            .find(|x| x.schema == t.schema && x.name == t.name)
            .map(|x| x.rows)
    };
    let mut out = Vec::new();
    for r in recorded {
        let got = find(restored, r);
        if got.is_none_or(|n| !counts_match(r, n)) {
            out.push(RowMismatch {
                table: r.qualified(),
                recorded: Some(r.rows),
                restored: got,
                exact: r.exact,
            });
        }
    }
    for t in restored {
        if find(recorded, t).is_none() {
            out.push(RowMismatch {
                table: t.qualified(),
                recorded: None,
                restored: Some(t.rows),
                exact: true,
            });
        }
    }
    out
}

/// The scratch database for a test of `run` by the process `nonce`.
pub fn scratch_db_name(run: &RunId, nonce: u32) -> String {
    let name = format!("{DB_PREFIX}{run}_{nonce}");
    debug_assert!(is_scratch_db(&name), "{name}");
    name
}

/// True for names [`scratch_db_name`] makes: the prefix, then digits and underscores, at most
/// PostgreSQL's 63 bytes. Only such names are ever dropped as leftovers.
pub fn is_scratch_db(name: &str) -> bool {
    name.len() <= 63
        && name.strip_prefix(DB_PREFIX).is_some_and(|rest| {
            !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit() || b == b'_')
        })
}

/// The scratch bucket for bucket archive number `n` of a test of `run` by the process `nonce`
/// (S3 names: lowercase letters, digits and dashes).
pub fn scratch_bucket_name(run: &RunId, nonce: u32, n: usize) -> String {
    let name = format!(
        "{BUCKET_PREFIX}{}-{nonce}-{n}",
        run.as_str().replace('_', "-")
    );
    debug_assert!(is_scratch_bucket(&name), "{name}");
    name
}

/// True for names [`scratch_bucket_name`] makes: only such buckets are ever removed as leftovers.
pub fn is_scratch_bucket(name: &str) -> bool {
    name.len() <= 63
        && name.strip_prefix(BUCKET_PREFIX).is_some_and(|rest| {
            !rest.is_empty()
                && rest.bytes().all(|b| b.is_ascii_digit() || b == b'-')
                && !rest.ends_with('-')
        })
}

/// The keys to upload and read back: all of them, or `n` chosen by a hash of `seed` and the key,
/// so each test (another seed) looks at other objects, and a test can be replayed.
pub fn sample<'a>(keys: &[&'a str], n: Option<usize>, seed: &str) -> Vec<&'a str> {
    let Some(n) = n.filter(|n| *n < keys.len()) else {
        return keys.to_vec();
    };
    let mut ranked: Vec<([u8; 32], &str)> = keys
        .iter()
        .map(|k| {
            let mut h = Sha256::new();
            h.update(seed.as_bytes());
            h.update([0]);
            h.update(k.as_bytes());
            (h.finalize().into(), *k)
        })
        .collect();
    ranked.sort();
    ranked.into_iter().take(n).map(|(_, k)| k).collect()
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn t(name: &str, rows: u64, exact: bool) -> TableCount {
        TableCount {
            schema: "public".into(),
            name: name.into(),
            rows,
            exact,
        }
    }

    #[test]
    fn exact_counts_must_be_equal_and_estimates_close() {
        assert!(counts_match(&t("a", 10, true), 10));
        assert!(!counts_match(&t("a", 10, true), 11));
        assert!(!counts_match(&t("a", 0, true), 1));
        // 10 % of the larger, or 1000 rows.
        assert!(counts_match(&t("b", 1_000_000, false), 1_099_000));
        assert!(!counts_match(&t("b", 1_000_000, false), 1_200_000));
        assert!(counts_match(&t("b", 100, false), 1_100));
        assert!(!counts_match(&t("b", 100, false), 1_101));
    }

    #[test]
    fn mismatches_name_missing_changed_and_unexpected_tables() {
        let recorded = [t("users", 2000, true), t("orders", 120_000, true)];
        assert!(compare(&recorded, &recorded).is_empty());
        let restored = [t("orders", 119_999, true), t("extra", 5, true)];
        let m = compare(&recorded, &restored);
        let tables: Vec<(&str, Option<u64>, Option<u64>)> = m
            .iter()
            .map(|m| (m.table.as_str(), m.recorded, m.restored))
            .collect();
        assert_eq!(
            tables,
            [
                ("public.users", Some(2000), None),
                ("public.orders", Some(120_000), Some(119_999)),
                ("public.extra", None, Some(5)),
            ]
        );
        // Same name in another schema is another table.
        let other = [TableCount {
            schema: "audit".into(),
            ..t("users", 2000, true)
        }];
        assert_eq!(compare(&recorded[..1], &other).len(), 2);
    }

    #[test]
    fn scratch_names_are_checked_before_use() {
        let run = RunId::from_time(chrono::Utc.with_ymd_and_hms(2026, 11, 26, 2, 0, 0).unwrap());
        let db = scratch_db_name(&run, 4_294_967_295);
        assert_eq!(db, "stackback_restore_test_20261126_020000_4294967295");
        assert!(is_scratch_db(&db));
        for bad in [
            "stackback_restore_test_",
            "stackback_restore_test_1; DROP DATABASE prod",
            "stackback_restore_test_1\"x",
            "app_db",
            "stackback_restore_test_20261126_020000_12345678901234567890123456789",
        ] {
            assert!(!is_scratch_db(bad), "{bad}");
        }
        let b = scratch_bucket_name(&run, 77, 1);
        assert_eq!(b, "stackback-restore-test-20261126-020000-77-1");
        assert!(is_scratch_bucket(&b));
        for bad in [
            "stackback-restore-test-",
            "pdfs",
            "stackback-restore-test-1-",
            "stackback-restore-test-a",
        ] {
            assert!(!is_scratch_bucket(bad), "{bad}");
        }
    }

    #[test]
    fn samples_are_stable_per_seed_and_complete_when_asked() {
        let keys: Vec<String> = (0..100).map(|i| format!("k{i}")).collect();
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let a = sample(&keys, Some(10), "run1");
        assert_eq!(a.len(), 10);
        assert_eq!(a, sample(&keys, Some(10), "run1"));
        assert_ne!(a, sample(&keys, Some(10), "run2"));
        assert_eq!(sample(&keys, None, "x").len(), 100);
        assert_eq!(sample(&keys[..3], Some(10), "x").len(), 3);
    }
}
