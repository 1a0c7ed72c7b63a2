//! The SQLite writer thread: claims and result batches, the writes every
//! task makes, run on one OS thread that owns its own connection.
//!
//! Through sqlx, every statement is a trip between a Tokio task and the
//! connection's worker thread, and so are BEGIN, COMMIT and the returned
//! rows. A result batch took four round trips, each two thread wake-ups,
//! all while the write lock was held; on a busy 2-core machine a wake-up
//! waits for a CPU, and the writer sat idle for half of its hold. Here a
//! write is one hand-off in and one out, and writes queued behind it run
//! back to back without waking anyone.
//!
//! The thread holds [`SqliteStore`](super::SqliteStore)'s writer lock while
//! it has writes queued, so its writes and the sqlx writer's (enqueues,
//! registrations, cancels and the rest) never overlap.

use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use rusqlite::config::DbConfig;
use sqlx::SqliteConnection;
use tokio::sync::{Mutex, oneshot};

use super::rows::Columns;
use crate::error::{Error, Result};

/// One write to run on the thread's connection.
type Job = Box<dyn FnOnce(&mut rusqlite::Connection) + Send>;

/// Sends writes to the writer thread. The thread stops once this is dropped
/// and the writes already queued are done.
pub struct WriterThread {
    jobs: mpsc::Sender<Job>,
}

impl WriterThread {
    /// Opens a connection to the database file at `path` (already migrated)
    /// and starts the thread, which holds `lock` while it writes.
    pub fn start(path: &Path, lock: Arc<Mutex<SqliteConnection>>) -> Result<Self> {
        let connection = open(path)?;
        let (jobs, queued) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || run(connection, &queued, &lock))
            .map_err(|e| {
                Error::Unavailable(format!("cannot start the SQLite writer thread: {e}"))
            })?;
        Ok(WriterThread { jobs })
    }

    /// Runs `write` on the writer thread, holding the writer lock, and
    /// returns its answer.
    pub async fn write<T: Send + 'static>(
        &self,
        write: impl FnOnce(&mut rusqlite::Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (answer, answered) = oneshot::channel();
        let job: Job = Box::new(move |connection| {
            let _ = answer.send(write(connection));
        });
        self.jobs.send(job).map_err(|_| {
            Error::Unavailable("the SQLite writer thread has stopped: restart the server".into())
        })?;
        answered.await.map_err(|_| {
            Error::Corrupt(
                "the SQLite writer failed on this write; the server log has the panic".into(),
            )
        })?
    }
}

/// Runs writes until the [`WriterThread`] is dropped, taking `lock` when
/// one arrives and keeping it while more are queued.
fn run(
    mut connection: rusqlite::Connection,
    queued: &mpsc::Receiver<Job>,
    lock: &Mutex<SqliteConnection>,
) {
    while let Ok(first) = queued.recv() {
        let _writing = lock.blocking_lock();
        let mut next = Some(first);
        while let Some(job) = next {
            // A write that panics is a bug: its transaction rolls back as
            // it unwinds, its caller gets an error, and the other writes go
            // on.
            if std::panic::catch_unwind(AssertUnwindSafe(|| job(&mut connection))).is_err() {
                tracing::error!("a write on the SQLite writer thread panicked; it was rolled back");
            }
            next = queued.try_recv().ok();
        }
    }
}

/// A connection to the database file at `path` with the settings
/// `SqliteStore::connect_options` gives the sqlx connections (a test
/// compares them), and stable query plans.
pub fn open(path: &Path) -> Result<rusqlite::Connection> {
    let connection = rusqlite::Connection::open(path)?;
    connection.busy_timeout(Duration::from_secs(10))?;
    connection.pragma_update(None, "journal_mode", "wal")?;
    connection.pragma_update(None, "synchronous", "normal")?;
    connection.pragma_update(None, "foreign_keys", true)?;
    connection.pragma_update(None, "temp_store", "memory")?;
    connection.pragma_update(None, "wal_autocheckpoint", 0)?;
    // See `keep_plans_stable` in sqlite.rs.
    connection.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    Ok(connection)
}

/// Starts a write transaction that takes the database's write lock at once
/// (`BEGIN IMMEDIATE`, as the sqlx writer does).
pub fn begin(connection: &mut rusqlite::Connection) -> Result<rusqlite::Transaction<'_>> {
    Ok(connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?)
}

/// Decodes every row a statement returns.
pub fn decode<T>(
    mut rows: rusqlite::Rows<'_>,
    decode: impl Fn(&NamedRow<'_, '_>) -> Result<T>,
) -> Result<Vec<T>> {
    // Columns are found by name once per statement: rusqlite finds a name
    // by asking SQLite for every column's name and comparing them without
    // case, which was a tenth of the writer's time when done for every
    // column of every claimed task.
    let names: Vec<String> = rows
        .as_ref()
        .map(|statement| {
            statement
                .column_names()
                .into_iter()
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let mut decoded = Vec::new();
    while let Some(row) = rows.next()? {
        decoded.push(decode(&NamedRow { row, names: &names })?);
    }
    Ok(decoded)
}

/// A returned row whose columns are found by their names, looked up once
/// per statement (see [`decode`]).
pub struct NamedRow<'r, 's> {
    row: &'r rusqlite::Row<'s>,
    names: &'r [String],
}

impl NamedRow<'_, '_> {
    fn get<T: rusqlite::types::FromSql>(&self, column: &str) -> Result<T> {
        let index = self
            .names
            .iter()
            .position(|name| name == column)
            .ok_or_else(|| Error::Corrupt(format!("no column {column} in the row")))?;
        Ok(self.row.get(index)?)
    }
}

impl Columns for NamedRow<'_, '_> {
    fn text(&self, column: &str) -> Result<String> {
        self.get(column)
    }
    fn optional_text(&self, column: &str) -> Result<Option<String>> {
        self.get(column)
    }
    fn integer(&self, column: &str) -> Result<i64> {
        self.get(column)
    }
    fn optional_integer(&self, column: &str) -> Result<Option<i64>> {
        self.get(column)
    }
    fn real(&self, column: &str) -> Result<f64> {
        self.get(column)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::suite::sqlite_store;
    use sqlx::Connection;

    /// A writer thread on a fresh migrated file, and the lock it takes.
    async fn thread_on_new_file() -> (
        tempfile::TempDir,
        WriterThread,
        Arc<Mutex<SqliteConnection>>,
    ) {
        let (dir, url, store) = sqlite_store("t.db").await;
        drop(store);
        let lock = Arc::new(Mutex::new(SqliteConnection::connect(&url).await.unwrap()));
        let thread = WriterThread::start(&dir.path().join("t.db"), Arc::clone(&lock)).unwrap();
        (dir, thread, lock)
    }

    #[tokio::test]
    async fn a_write_runs_holding_the_writer_lock() {
        let (_dir, thread, lock) = thread_on_new_file().await;
        let held = Arc::clone(&lock);
        let locked_out = thread
            .write(move |_| Ok(held.try_lock().is_err()))
            .await
            .unwrap();
        assert!(locked_out, "the write ran without holding the writer lock");
        let released = tokio::time::timeout(Duration::from_secs(10), lock.lock()).await;
        assert!(
            released.is_ok(),
            "the thread kept the lock with nothing queued"
        );
    }

    #[tokio::test]
    async fn a_write_waits_while_the_sqlx_writer_holds_the_lock() {
        let (_dir, thread, lock) = thread_on_new_file().await;
        let held = lock.lock().await;
        let write = thread.write(|connection| {
            Ok(connection.execute("UPDATE task_types SET updated_at = 1", [])?)
        });
        tokio::pin!(write);
        let early = tokio::time::timeout(Duration::from_millis(50), &mut write).await;
        assert!(
            early.is_err(),
            "the write ran while the sqlx writer held the lock"
        );
        drop(held);
        assert_eq!(write.await.unwrap(), 0, "no task types in a fresh file");
    }

    #[tokio::test]
    async fn a_write_that_panics_fails_alone_and_rolls_back() {
        let (_dir, thread, _lock) = thread_on_new_file().await;
        let failed = thread
            .write(|connection| -> Result<()> {
                let tx = begin(connection)?;
                tx.execute(
                    "INSERT INTO task_counts (task_type, status, second, count) VALUES ('t', 'completed', 1, 1)",
                    [],
                )?;
                panic!("a bug in a write");
            })
            .await;
        assert!(matches!(failed, Err(Error::Corrupt(_))), "{failed:?}");
        let counted: i64 = thread
            .write(|connection| {
                Ok(connection
                    .query_row("SELECT count(*) FROM task_counts", [], |row| row.get(0))?)
            })
            .await
            .unwrap();
        assert_eq!(counted, 0, "the panicking write's insert was kept");
    }

    #[tokio::test]
    async fn rows_are_decoded_by_column_name() {
        let (_dir, thread, _lock) = thread_on_new_file().await;
        let decoded = thread
            .write(|connection| {
                let mut statement = connection.prepare("SELECT 7 AS b, 'x' AS a, NULL AS c")?;
                decode(statement.query([])?, |row| {
                    Ok((row.text("a")?, row.integer("b")?, row.optional_text("c")?))
                })
            })
            .await
            .unwrap();
        assert_eq!(decoded, vec![("x".to_owned(), 7, None)]);
        let missing = thread
            .write(|connection| {
                let mut statement = connection.prepare("SELECT 1 AS a")?;
                decode(statement.query([])?, |row| row.integer("b"))
            })
            .await;
        assert!(
            matches!(&missing, Err(Error::Corrupt(message)) if message.contains("no column b")),
            "{missing:?}"
        );
    }
}
