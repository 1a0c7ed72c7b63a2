//! The server's own vacuum of `tasks`, so that claims stay short between
//! autovacuum's visits.
//!
//! A claim leaves the entry of every task it leases dead in the index of
//! PENDING tasks (`tasks_ready`), and a result does the same in the index of
//! RUNNING ones (`tasks_leased`). Those entries sit at the head of the
//! index, exactly where the next claim starts reading, and only a `VACUUM`
//! removes them: until then every claim walks over all of them. Autovacuum
//! looks at a database once per `autovacuum_naptime` (a minute by default),
//! so a queue running 10,000 tasks a second built a head of 3,300 dead
//! pages, and an empty claim took 15 ms (`docs/performance.md`,
//! twenty-sixth stop). The server therefore counts the row versions its
//! claims and results leave behind, and vacuums `tasks` itself once they
//! pass autovacuum's own threshold for the table, checked every second
//! rather than every minute.

use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection};

use crate::error::Result;

/// Dead row versions that always justify a vacuum, whatever the table's size.
pub(super) const VACUUM_AFTER_ROWS: u64 = 10_000;

/// The share of the table's rows that, dead, justifies a vacuum on top of
/// [`VACUUM_AFTER_ROWS`]: the table's `autovacuum_vacuum_scale_factor`
/// (`migrations/postgres/0001_initial.sql`). A vacuum reads every index of
/// `tasks` whole, so a large table is vacuumed less often.
const VACUUM_SCALE_FACTOR: f64 = 0.02;

/// Counts the dead row versions this replica's claims and results left in
/// `tasks`, and vacuums the table once they are enough.
pub(super) struct QueueVacuum {
    dead_rows: AtomicU64,
    /// The dead rows that call for the next vacuum: [`VACUUM_AFTER_ROWS`]
    /// until a vacuum has told the table's size.
    threshold: AtomicU64,
}

impl Default for QueueVacuum {
    fn default() -> Self {
        QueueVacuum {
            dead_rows: AtomicU64::new(0),
            threshold: AtomicU64::new(VACUUM_AFTER_ROWS),
        }
    }
}

impl QueueVacuum {
    /// Records `rows` tasks claimed, or results written: each left one dead
    /// version behind.
    pub(super) fn record(&self, rows: usize) {
        self.dead_rows.fetch_add(rows as u64, Ordering::Relaxed);
    }

    /// Vacuums `tasks` if the dead rows counted since the last vacuum pass
    /// the threshold; returns whether it did. The count starts again
    /// whether or not the vacuum succeeds, so a database that refuses (a
    /// role that does not own the table) is asked again only after as many
    /// rows again, and its error surfaces no more often.
    pub(super) async fn vacuum_if_due(&self, options: &PgConnectOptions) -> Result<bool> {
        let dead_rows = self.dead_rows.load(Ordering::Relaxed);
        if dead_rows < self.threshold.load(Ordering::Relaxed) {
            return Ok(false);
        }
        self.dead_rows.fetch_sub(dead_rows, Ordering::Relaxed);
        // A connection of its own: a vacuum may take a while, and the pool's
        // connections serve claims and results meanwhile. Its notices (a
        // vacuum skipped because autovacuum holds the table) are not errors.
        let mut connection = options
            .clone()
            .options([("client_min_messages", "error")])
            .connect()
            .await?;
        // SKIP_LOCKED: when autovacuum or another replica is vacuuming the
        // table already, this one does nothing rather than wait. INDEX_CLEANUP
        // ON: the dead index entries are the point, so the vacuum may not
        // skip the indexes, as PostgreSQL does when few heap pages hold dead
        // rows.
        sqlx::query("VACUUM (SKIP_LOCKED, INDEX_CLEANUP ON) tasks")
            .execute(&mut connection)
            .await?;
        let rows = table_rows(&mut connection).await?;
        self.threshold.store(
            VACUUM_AFTER_ROWS + (VACUUM_SCALE_FACTOR * rows) as u64,
            Ordering::Relaxed,
        );
        connection.close().await?;
        Ok(true)
    }
}

/// PostgreSQL's estimate of the rows in `tasks`, as the last vacuum left it.
async fn table_rows(connection: &mut PgConnection) -> Result<f64> {
    let rows: f32 =
        sqlx::query_scalar("SELECT reltuples FROM pg_class WHERE oid = 'tasks'::regclass")
            .fetch_one(connection)
            .await?;
    Ok(f64::from(rows.max(0.0)))
}
