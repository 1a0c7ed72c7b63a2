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
//! Writes that queue up while one runs share its transaction (group
//! commit), each under its own savepoint: a write that fails rolls back
//! alone, and callers hear back only once the transaction has committed. A
//! commit writes every page the group changed into the log once, where a
//! claim and the result batch beside it would each write the same index
//! pages again.
//!
//! The thread holds [`SqliteStore`](super::SqliteStore)'s writer lock while
//! it has writes queued, so its writes and the sqlx writer's (enqueues,
//! registrations, cancels and the rest) never overlap.

use std::cell::Cell;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use rusqlite::config::DbConfig;
use tokio::sync::oneshot;

use super::rows::Columns;
use super::writer_lock::WriterLock;
use crate::config::SqliteDurability;
use crate::error::{Error, Result};

/// The most writes one transaction holds. A claim and the result batch that
/// queues up while it runs are the common pair; the cap keeps the first
/// caller from waiting behind many more when several agents claim at once.
const MOST_WRITES_PER_COMMIT: usize = 4;

/// One queued write. Given the connection, inside the group's transaction,
/// it runs and says how to answer its caller once the transaction ends;
/// given an error, it answers with that error.
type Job = Box<dyn FnOnce(Result<&rusqlite::Connection>) -> Ran + Send>;

/// A write that ran.
struct Ran {
    /// Whether the write succeeded, so that its changes are kept.
    succeeded: bool,
    /// Answers the caller: `Ok` once the changes are committed (or, for a
    /// write that failed, with its own error), else why the commit failed.
    answer: Answer,
}

/// Answers a write's caller once its transaction has ended.
type Answer = Box<dyn FnOnce(Result<()>) + Send>;

/// Sends writes to the writer thread. The thread stops once this is dropped
/// and the writes already queued are done.
pub struct WriterThread {
    jobs: mpsc::Sender<Job>,
}

impl WriterThread {
    /// Opens a connection to the database file at `path` (already migrated)
    /// and starts the thread, which holds `lock` while it writes.
    pub fn start(path: &Path, durability: SqliteDurability, lock: Arc<WriterLock>) -> Result<Self> {
        let connection = open(path, durability)?;
        let (jobs, queued) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || run(connection, &queued, &lock))
            .map_err(|e| {
                Error::Unavailable(format!("cannot start the SQLite writer thread: {e}"))
            })?;
        Ok(WriterThread { jobs })
    }

    /// Runs `write` on the writer thread, inside a transaction and holding
    /// the writer lock, and returns its answer once that transaction has
    /// committed. A write that returns an error changes nothing. The write
    /// must not begin or end transactions itself.
    pub async fn write<T: Send + 'static>(
        &self,
        write: impl FnOnce(&rusqlite::Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (answer, answered) = oneshot::channel();
        let job: Job = Box::new(move |connection| {
            let written = connection.and_then(write);
            Ran {
                succeeded: written.is_ok(),
                answer: Box::new(move |committed| {
                    let _ = answer.send(committed.and(written));
                }),
            }
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
fn run(connection: rusqlite::Connection, queued: &mpsc::Receiver<Job>, lock: &WriterLock) {
    while let Ok(first) = queued.recv() {
        let _writing = lock.blocking_hold();
        let mut next = Some(first);
        while let Some(first) = next {
            commit_together(&connection, first, queued);
            next = queued.try_recv().ok();
        }
    }
}

/// Runs `first`, and the writes that queue up while it runs, in one
/// transaction, each under its own savepoint; commits, and then answers
/// the callers.
fn commit_together(connection: &rusqlite::Connection, first: Job, queued: &mpsc::Receiver<Job>) {
    if !connection.is_autocommit() {
        // The last group's ROLLBACK failed (a full disk, an I/O error), so
        // SQLite still holds its transaction open: end it before the next.
        let _ = connection.execute_batch("ROLLBACK");
    }
    if let Err(error) = connection.execute_batch("BEGIN IMMEDIATE") {
        refuse(first, transaction_failed("begin", &error));
        return;
    }
    let mut to_answer = Vec::new();
    let mut next = Some(first);
    let mut ran = 0;
    while let Some(job) = next {
        to_answer.extend(in_savepoint(connection, job));
        ran += 1;
        next = if ran < MOST_WRITES_PER_COMMIT {
            queued.try_recv().ok()
        } else {
            None
        };
    }
    let committed = connection.execute_batch("COMMIT").inspect_err(|_| {
        // A failed COMMIT leaves the transaction open.
        let _ = connection.execute_batch("ROLLBACK");
    });
    for answer in to_answer {
        answer(
            committed
                .as_ref()
                .map(drop)
                .map_err(|error| transaction_failed("commit", error)),
        );
    }
}

/// Runs one write under a savepoint: releases it when the write succeeds and
/// returns how to answer its caller after the commit; rolls it back when
/// the write fails or panics, and answers (or, for a panic, drops) the
/// caller at once.
fn in_savepoint(connection: &rusqlite::Connection, job: Job) -> Option<Answer> {
    if let Err(error) = connection.execute_batch("SAVEPOINT write") {
        refuse(job, transaction_failed("begin", &error));
        return None;
    }
    // A write that panics is a bug: its caller gets an error and the other
    // writes go on.
    match std::panic::catch_unwind(AssertUnwindSafe(|| job(Ok(connection)))) {
        Ok(Ran {
            succeeded: true,
            answer,
        }) => match connection.execute_batch("RELEASE write") {
            Ok(()) => return Some(answer),
            Err(error) => {
                roll_back(connection);
                answer(Err(transaction_failed("release", &error)));
            }
        },
        Ok(Ran { answer, .. }) => {
            roll_back(connection);
            answer(Ok(()));
        }
        Err(_) => {
            roll_back(connection);
            tracing::error!("a write on the SQLite writer thread panicked; it was rolled back");
        }
    }
    None
}

/// Answers `job`'s caller with `error`, without running it.
fn refuse(job: Job, error: Error) {
    (job(Err(error)).answer)(Ok(()));
}

/// Undoes what the write under the current savepoint changed.
fn roll_back(connection: &rusqlite::Connection) {
    if let Err(error) = connection.execute_batch("ROLLBACK TO write; RELEASE write") {
        tracing::error!(%error, "could not roll a failed write back on the SQLite writer thread");
    }
}

/// Why a write's transaction could not `step` (begin, release or commit): the
/// database is busy or failing, so the caller may try again.
fn transaction_failed(step: &str, error: &rusqlite::Error) -> Error {
    Error::Unavailable(format!(
        "SQLite could not {step} the write's transaction ({error}); try again"
    ))
}

/// A connection to the database file at `path` with the settings
/// `SqliteStore::connect_options` gives the sqlx connections (a test
/// compares them), and stable query plans.
pub fn open(path: &Path, durability: SqliteDurability) -> Result<rusqlite::Connection> {
    let connection = rusqlite::Connection::open(path)?;
    connection.busy_timeout(Duration::from_secs(10))?;
    connection.pragma_update(None, "journal_mode", "wal")?;
    connection.pragma_update(None, "synchronous", durability.pragma())?;
    connection.pragma_update(None, "foreign_keys", true)?;
    connection.pragma_update(None, "temp_store", "memory")?;
    connection.pragma_update(None, "wal_autocheckpoint", 0)?;
    // See `keep_plans_stable` in sqlite.rs.
    connection.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    Ok(connection)
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
        decoded.push(decode(&NamedRow {
            row,
            names: &names,
            next: Cell::new(0),
        })?);
    }
    Ok(decoded)
}

/// A returned row whose columns are found by their names, looked up once
/// per statement (see [`decode`]).
pub struct NamedRow<'r, 's> {
    row: &'r rusqlite::Row<'s>,
    names: &'r [String],
    /// Where the search for the next column starts: just after the last
    /// one found, since decoders mostly ask for columns in the order the
    /// statement names them.
    next: Cell<usize>,
}

impl NamedRow<'_, '_> {
    fn get<T: rusqlite::types::FromSql>(&self, column: &str) -> Result<T> {
        let start = self.next.get();
        let index = (start..self.names.len())
            .chain(0..start)
            .find(|&index| self.names[index] == column)
            .ok_or_else(|| Error::Corrupt(format!("no column {column} in the row")))?;
        self.next.set(index + 1);
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
    use futures::FutureExt;
    use sqlx::{Connection, SqliteConnection};

    /// A writer thread on a fresh migrated file, and the lock it takes.
    async fn thread_on_new_file() -> (tempfile::TempDir, WriterThread, Arc<WriterLock>) {
        let (dir, url, store) = sqlite_store("t.db").await;
        drop(store);
        let lock = Arc::new(WriterLock::new(
            SqliteConnection::connect(&url).await.unwrap(),
            super::super::SqliteStore::connect_options(&url, SqliteDurability::Full).unwrap(),
        ));
        let thread = WriterThread::start(
            &dir.path().join("t.db"),
            SqliteDurability::Full,
            Arc::clone(&lock),
        )
        .unwrap();
        (dir, thread, lock)
    }

    #[tokio::test]
    async fn a_write_runs_holding_the_writer_lock() {
        let (_dir, thread, lock) = thread_on_new_file().await;
        let held = Arc::clone(&lock);
        let locked_out = thread
            .write(move |_| Ok(held.hold().now_or_never().is_none()))
            .await
            .unwrap();
        assert!(locked_out, "the write ran without holding the writer lock");
        let released = tokio::time::timeout(Duration::from_secs(10), lock.hold()).await;
        assert!(
            released.is_ok(),
            "the thread kept the lock with nothing queued"
        );
    }

    #[tokio::test]
    async fn a_write_waits_while_the_sqlx_writer_holds_the_lock() {
        let (_dir, thread, lock) = thread_on_new_file().await;
        let held = lock.hold().await.unwrap();
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

    /// Counts one completion of task type `t` in `second`.
    fn count_in(connection: &rusqlite::Connection, second: i64) -> Result<()> {
        connection.execute(
            "INSERT INTO task_counts (task_type, status, second, count) VALUES ('t', 'completed', ?1, 1)",
            [second],
        )?;
        Ok(())
    }

    /// The seconds counted in `task_counts`, read through a new connection
    /// to the file: what is committed.
    fn committed_seconds(path: &Path) -> Vec<i64> {
        let reader = rusqlite::Connection::open(path).unwrap();
        let mut statement = reader
            .prepare("SELECT second FROM task_counts ORDER BY second")
            .unwrap();
        statement
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    /// Queues `write` on `thread` and returns the future that answers it.
    fn queue<T: Send + 'static>(
        thread: &Arc<WriterThread>,
        write: impl FnOnce(&rusqlite::Connection) -> Result<T> + Send + 'static,
    ) -> tokio::task::JoinHandle<Result<T>> {
        let thread = Arc::clone(thread);
        tokio::spawn(async move { thread.write(write).await })
    }

    #[tokio::test]
    async fn writes_queued_together_commit_together_and_a_failing_one_alone_rolls_back() {
        let (dir, thread, lock) = thread_on_new_file().await;
        let path = dir.path().join("t.db");
        let thread = Arc::new(thread);
        // Hold the lock so that the writes queue up behind each other.
        let held = lock.hold().await.unwrap();
        let first = queue(&thread, |connection| count_in(connection, 1));
        tokio::task::yield_now().await;
        let failing = queue(&thread, |connection| -> Result<()> {
            count_in(connection, 2)?;
            Err(Error::InvalidArgument("this write fails".into()))
        });
        tokio::task::yield_now().await;
        let reader_path = path.clone();
        let last = queue(&thread, move |connection| {
            count_in(connection, 3)?;
            Ok(committed_seconds(&reader_path))
        });
        tokio::task::yield_now().await;
        drop(held);
        first.await.unwrap().unwrap();
        let failed = failing.await.unwrap();
        assert!(
            matches!(&failed, Err(Error::InvalidArgument(m)) if m == "this write fails"),
            "{failed:?}"
        );
        let seen_while_writing = last.await.unwrap().unwrap();
        assert_eq!(
            seen_while_writing,
            Vec::<i64>::new(),
            "the first write was committed before the last one ran: no group commit"
        );
        assert_eq!(
            committed_seconds(&path),
            vec![1, 3],
            "the failed write's insert was kept, or a successful one's was lost"
        );
    }

    #[tokio::test]
    async fn a_failed_commit_reaches_every_write_of_the_group_and_keeps_none() {
        let (dir, thread, lock) = thread_on_new_file().await;
        let thread = Arc::new(thread);
        let held = lock.hold().await.unwrap();
        let plain = queue(&thread, |connection| count_in(connection, 1));
        tokio::task::yield_now().await;
        // A deferred foreign key is checked at COMMIT: this write succeeds,
        // and the commit of its group fails.
        let breaking = queue(&thread, |connection| {
            connection.execute_batch(
                "PRAGMA defer_foreign_keys = ON;
                 INSERT INTO tasks (id, task_type, domain, payload, status, max_attempts,
                     timeout_ms, retry_initial_ms, retry_factor, retry_max_ms, run_at,
                     created_at, updated_at)
                 VALUES ('x', 'no such type', 'd', '{}', 'pending', 1, 1, 1, 1.0, 1, 0, 0, 0)",
            )?;
            Ok(())
        });
        tokio::task::yield_now().await;
        drop(held);
        for answered in [plain.await.unwrap(), breaking.await.unwrap()] {
            assert!(
                matches!(&answered, Err(Error::Unavailable(m)) if m.contains("could not commit")),
                "{answered:?}"
            );
        }
        assert_eq!(
            committed_seconds(&dir.path().join("t.db")),
            Vec::<i64>::new()
        );
        thread
            .write(|connection| count_in(connection, 2))
            .await
            .expect("the thread writes again after a failed commit");
        assert_eq!(committed_seconds(&dir.path().join("t.db")), vec![2]);
    }

    #[tokio::test]
    async fn a_write_that_panics_fails_alone_and_rolls_back() {
        let (dir, thread, _lock) = thread_on_new_file().await;
        let failed = thread
            .write(|connection| -> Result<()> {
                count_in(connection, 1)?;
                panic!("a bug in a write");
            })
            .await;
        assert!(matches!(failed, Err(Error::Corrupt(_))), "{failed:?}");
        thread
            .write(|connection| count_in(connection, 2))
            .await
            .unwrap();
        assert_eq!(
            committed_seconds(&dir.path().join("t.db")),
            vec![2],
            "the panicking write's insert was kept"
        );
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
