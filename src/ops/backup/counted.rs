//! The database step's dump in a snapshot shared with the row counts recorded beside it
//! ([`crate::source::snapshot`]): one `REPEATABLE READ` transaction exports its snapshot, pg_dump
//! runs with `--snapshot`, and the same transaction counts each table while pg_dump runs. The
//! transaction stays open until pg_dump has exited (it must outlive pg_dump's import of the
//! snapshot). Counts that cannot be taken are a warning: the dump is the backup. A sealed run
//! counts nothing (its record must not name tables) and lets pg_dump take its own snapshot.

use tracing::warn;

use super::RunCtx;
use crate::catalog::ArtifactKind;
use crate::error::{Error, Result};
use crate::source::postgres;
use crate::source::snapshot::Snapshot;

impl RunCtx<'_> {
    /// pg_dump in a snapshot exported by a transaction of ours, which counts the rows of each
    /// table in that same snapshot while pg_dump runs, and stays open until pg_dump has exited.
    /// Without a snapshot (an old standby, a refused export) the dump goes on alone, uncounted;
    /// when the server did not even answer the probe, pg_dump alone says why it fails.
    pub(super) async fn dump_in_snapshot(
        &mut self,
        tool: &postgres::PgTool,
        server_answered: bool,
    ) -> Result<()> {
        let pg = self.cfg.postgres;
        // A sealed run's record must not name tables, so its counts would be thrown away: it
        // does not scan the tables for them.
        let count = self.cfg.recipients.is_none();
        let snapshot = if server_answered && count {
            match Snapshot::export(pg).await {
                Ok(s) => Some(s),
                Err(e) => {
                    self.uncounted(&e);
                    None
                }
            }
        } else {
            None
        };
        let cmd = postgres::database_command(tool, pg, snapshot.as_ref().map(|s| s.id.as_str()));
        let limit = pg.row_count_exact_limit;
        let progress = self.progress;
        let (dumped, counted) = {
            let counting = async {
                let s = snapshot.as_ref()?;
                // pg_dump writes its first byte once it holds its locks on every table (and so
                // has imported the snapshot): counting from then on never waits in line for a
                // lock beside pg_dump, and cannot end the transaction before pg_dump imported it.
                while progress.snapshot().bytes == 0 {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                Some(s.count_rows(limit).await)
            };
            let dump = self.dump_sql(ArtifactKind::Database, "pg_dump", cmd);
            tokio::pin!(counting, dump);
            // A dump that fails does not wait for the counts.
            tokio::select! {
                d = &mut dump => match d {
                    Ok(()) => (Ok(()), counting.await),
                    Err(e) => (Err(e), None),
                },
                c = &mut counting => (dump.await, c),
            }
        };
        if let Some(s) = snapshot {
            s.release().await;
        }
        dumped?;
        match counted {
            // Table names and sizes are names from inside the backup: a sealed run's record does
            // not show them (restore tests then prove the load and the tables, anomalies judge
            // sizes only), so a sealed run counts nothing.
            Some(Ok(tables)) => {
                let file = self.rec.artifacts.last().map(|a| a.file.clone());
                if let Some(file) = file {
                    crate::catalog::record_tables(self.rec, &file, limit, tables);
                }
            }
            Some(Err(e)) => self.uncounted(&e),
            None => {}
        }
        Ok(())
    }

    fn uncounted(&mut self, e: &Error) {
        let msg = format!(
            "row counts not recorded: {}",
            self.redactor.redact(&e.to_string())
        );
        warn!("{msg}");
        self.rec.warnings.push(msg);
    }
}
