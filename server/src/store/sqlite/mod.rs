//! The embedded SQLite store.
//!
//! WAL mode; one write at a time, each starting with `BEGIN IMMEDIATE` (a
//! deferred read-then-write transaction would fail with SQLITE_BUSY that
//! `busy_timeout` does not retry): claims and result batches on the writer
//! thread ([`super::writer_thread`]), every other write on the sqlx writer
//! connection, both under one lock. Reads use a small read-only pool.
//! `synchronous = FULL` by default, so that what a commit acknowledged
//! survives power loss; [`SqliteDurability::Normal`] trades that for
//! fewer syncs.

use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, Sqlite, SqliteConnection, Transaction};
use tokio::sync::{Mutex, MutexGuard};
use uuid::Uuid;

use super::rows::{self, json_text, millis, parse_uuid};
use super::rules::{self, TypeDefaults};
use super::sql::{self, Common, Dialect, Held, SharedStore, Spelling, Statements, Writer};
use super::{EnqueueBatch, Leases, ReadyNotifications, ResultBatch, Store};
use crate::config::SqliteDurability;
use crate::error::{Error, Result};
use crate::model::{
    Claimant, Enqueued, Lease, ResultOutcome, SessionStatus, Task, TaskFilter, TaskStatus,
};

mod enqueue;
mod limited;
mod writer_lock;
mod writer_thread;
mod writes;

use writer_lock::WriterLock;
use writer_thread::WriterThread;
pub use writer_thread::open as open_writer;

/// The columns of a whole task, as `rows::task` reads them.
pub(super) const TASK_COLUMNS: &str = "id, task_type, domain, payload, status, priority, attempts, max_attempts, \
    timeout_ms, retry_initial_ms, retry_factor, retry_max_ms, run_at, created_at, updated_at, started_at, \
    finished_at, result, last_error, idempotency_key, handler_version, metadata, required_labels, parent_id, progress, start_by";

/// What a recorded result returns (see [`rows::recorded_task`]).
pub(super) const RECORDED_COLUMNS: &str = "id, task_type, status, started_at, finished_at, updated_at, \
    metadata ->> '$.traceparent' AS traceparent";

/// The SQLite implementation of [`Store`].
pub struct SqliteStore {
    writer: Arc<WriterLock>,
    thread: WriterThread,
    /// The shared reads, from a small read-only pool, and writes, on `writer`.
    common: SharedStore<Sqlite, Arc<WriterLock>>,
    checkpointer: Mutex<SqliteConnection>,
    /// See [`WAL_FRAMES_BEFORE_PAUSE`]; tests lower it.
    wal_frames_before_pause: i64,
    claim_rotation: Arc<AtomicUsize>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file named by a `sqlite://`
    /// URL and applies `migrations/sqlite`; its commits reach the disk as
    /// `durability` says.
    pub async fn open(
        database_url: &str,
        defaults: TypeDefaults,
        durability: SqliteDurability,
    ) -> Result<Self> {
        if database_url.contains(":memory:") || database_url.contains("mode=memory") {
            // The writer thread opens the file by name: an in-memory
            // database would be another, empty one.
            return Err(Error::InvalidArgument(format!(
                "{database_url} is an in-memory database, and taskplane keeps its queue in a \
                 file: give --database-url a file, such as sqlite://taskplane.db"
            )));
        }
        let options = Self::connect_options(database_url, durability)?;
        let path = options.get_filename().to_owned();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            create_data_dir(parent)?;
        }
        let mut writer = SqliteConnection::connect_with(&options).await?;
        sqlx::migrate!("../migrations/sqlite")
            .run(&mut writer)
            .await?;
        keep_plans_stable(&mut writer).await?;
        let mut checkpointer = SqliteConnection::connect_with(&options).await?;
        keep_plans_stable(&mut checkpointer).await?;
        let readers = SqlitePoolOptions::new()
            .max_connections(4)
            .after_connect(|connection, _| Box::pin(keep_plans_stable(connection)))
            .connect_with(options.clone().read_only(true))
            .await?;
        let writer = Arc::new(WriterLock::new(writer, options));
        let thread = WriterThread::start(&path, durability, Arc::clone(&writer))?;
        Ok(SqliteStore {
            common: SharedStore::new(readers, Arc::clone(&writer), defaults),
            writer,
            thread,
            checkpointer: Mutex::new(checkpointer),
            wal_frames_before_pause: WAL_FRAMES_BEFORE_PAUSE,
            claim_rotation: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// The connection settings every taskplane SQLite connection uses.
    pub fn connect_options(
        database_url: &str,
        durability: SqliteDurability,
    ) -> Result<SqliteConnectOptions> {
        Ok(SqliteConnectOptions::from_str(database_url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(match durability {
                SqliteDurability::Full => SqliteSynchronous::Full,
                SqliteDurability::Normal => SqliteSynchronous::Normal,
            })
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
            // The page cache stays at SQLite's 2 MiB; the kernel caches the
            // file. A commit that split a b-tree page walks the whole page
            // hash (`pcache1TruncateUnsafe`), so a 64 MiB cache cost CPU on
            // every such commit and W3 ran no faster with it.
            //
            // Statement journals and temporary b-trees stay in memory: a
            // big multi-row statement's journal otherwise spills past 64 KiB
            // into a file created and deleted under /var/tmp on the writer.
            .pragma("temp_store", "memory")
            // Commits never copy the WAL into the database themselves: a
            // separate connection checkpoints in the background
            // (`Store::checkpoint`), so the writer's latency stays flat.
            .pragma("wal_autocheckpoint", "0"))
    }

    /// The writer connection, once every earlier write is done with it.
    async fn writer(&self) -> Result<MutexGuard<'_, SqliteConnection>> {
        WriterLock::hold(&self.writer).await
    }
}

/// The ids one purge batch deletes (?1 the cutoff, ?2 the batch size),
/// read from the `tasks_finished` index: only what it deletes.
const PURGED_TASKS: &str = "SELECT id FROM tasks WHERE finished_at < ?1
     AND status IN ('completed', 'dead', 'cancelled', 'expired') ORDER BY finished_at LIMIT ?2";

/// Copies what the write-ahead log holds into the database, without waiting
/// for the writer or readers; answers (busy, frames in the log, frames
/// copied).
const CHECKPOINT: &str = "PRAGMA wal_checkpoint(PASSIVE)";

/// Frames (4 KiB pages) the write-ahead log may hold before a checkpoint
/// pauses the writer to empty it: 64 MiB.
const WAL_FRAMES_BEFORE_PAUSE: i64 = 16_384;

/// Ends the current attempts of the tasks in the JSON array ?3 at ?1,
/// `lost` with the error ?2.
static END_LOST_ATTEMPTS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    sql::end_attempts_sql(
        "id",
        "?1",
        "'lost'",
        "?2",
        "id IN (SELECT value FROM json_each(?3))",
    )
});

/// Starts a write transaction on the writer connection.
async fn write(writer: &mut SqliteConnection) -> Result<Tx<'_>> {
    Ok(writer.begin_with("BEGIN IMMEDIATE").await?)
}

/// Turns on SQLite's query planner stability guarantee for a connection.
///
/// The SQLite that sqlx bundles is built with STAT4, and without this
/// setting it plans a cached statement again whenever a bound value its plan
/// looked at changes. The claim binds the clock and a LIMIT that change on
/// every call, so every claim was parsed and planned afresh (measured in
/// docs/performance.md). Our statements write every value a
/// plan depends on literally (the partial indexes' states), so a plan fixed
/// at prepare time loses nothing.
async fn keep_plans_stable(connection: &mut SqliteConnection) -> sqlx::Result<()> {
    let mut handle = connection.lock_handle().await?;
    let database = handle.as_raw_handle().as_ptr();
    // SAFETY: `handle` keeps the connection's worker thread off the database
    // handle until it is dropped, and SQLITE_DBCONFIG_ENABLE_QPSG takes an
    // int (1 = on) and an optional int pointer to report back into (none).
    let code = unsafe {
        libsqlite3_sys::sqlite3_db_config(
            database,
            libsqlite3_sys::SQLITE_DBCONFIG_ENABLE_QPSG,
            1 as std::ffi::c_int,
            std::ptr::null_mut::<std::ffi::c_int>(),
        )
    };
    if code == libsqlite3_sys::SQLITE_OK {
        Ok(())
    } else {
        Err(sqlx::Error::Configuration(
            format!("SQLite refused to keep query plans stable (error code {code})").into(),
        ))
    }
}

/// PENDING tasks, read through their partial index.
const PENDING_TASKS: &str = "tasks INDEXED BY tasks_ready";
/// RUNNING tasks, read through their partial index.
const RUNNING_TASKS: &str = "tasks INDEXED BY tasks_leased";

/// Where a `ListTasks` listing reads: the PENDING and RUNNING partial
/// indexes when the filter asks for those states. SQLite keeps no
/// statistics here, so on its own it walks `tasks_by_type` in id order and
/// reads every task of the type ever run to find the few still pending or
/// running (a quarter of a second per listing at 400,000 tasks).
fn listing_source(filter: &TaskFilter) -> &'static str {
    match (filter.status, &filter.task_type) {
        (Some(TaskStatus::Pending), Some(_)) => PENDING_TASKS,
        (Some(TaskStatus::Running), _) => RUNNING_TASKS,
        _ => "tasks",
    }
}

/// PENDING tasks of a type, newest first, are looked for among the
/// type's newest [`PENDING_WINDOW`] tasks first, through `tasks_by_type`
/// in id order: when most of a type waits (a backlog), a page is there,
/// where the ready index would have to read and sort every pending task of
/// the type (a second at a million). When few wait among much history, the
/// window holds less than a page and the ready index answers.
fn listing_window(filter: &TaskFilter) -> Option<(&'static str, u32)> {
    match (filter.status, &filter.task_type) {
        (Some(TaskStatus::Pending), Some(_)) => Some((TASKS_BY_TYPE, PENDING_WINDOW)),
        _ => None,
    }
}

/// Tasks of a type in id order.
const TASKS_BY_TYPE: &str = "tasks INDEXED BY tasks_by_type";
/// How many of a type's newest tasks a PENDING listing reads first.
const PENDING_WINDOW: u32 = 2000;

/// The shared statements in SQLite's spelling (see `impl Dialect`).
static STATEMENTS: LazyLock<Statements> = LazyLock::new(|| {
    Statements::new(&Spelling {
        task_columns: TASK_COLUMNS,
        pending_tasks: PENDING_TASKS,
        running_tasks: RUNNING_TASKS,
        // A deferred read-then-write transaction would fail with
        // SQLITE_BUSY, which `busy_timeout` does not retry.
        begin: "BEGIN IMMEDIATE",
        ..Spelling::PLAIN
    })
});

/// SQLite's spellings of the shared SQL: ids and JSON are stored as text,
/// no row locks (one writer at a time), and live tasks are counted through
/// their partial indexes: left to itself, SQLite counts RUNNING tasks by
/// walking `tasks_by_type`, every task ever run.
impl Dialect for Sqlite {
    const STATEMENTS: &'static LazyLock<Statements> = &STATEMENTS;

    fn listing_source(filter: &TaskFilter) -> &'static str {
        listing_source(filter)
    }

    fn listing_window(filter: &TaskFilter) -> Option<(&'static str, u32)> {
        listing_window(filter)
    }
}

/// The shared writes wait for the one writer connection, as every sqlx
/// write here does.
#[async_trait]
impl Writer<Sqlite> for Arc<WriterLock> {
    async fn hold(&self) -> Result<Held<'_, Sqlite>> {
        Ok(Box::new(WriterLock::hold(self).await?))
    }
}

fn create_data_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| {
        Error::InvalidArgument(format!(
            "cannot create the data directory {}: {e}; choose another --database-url",
            dir.display()
        ))
    })
}

type Tx<'c> = Transaction<'c, Sqlite>;

/// Ends the attempts `lost` and returns the tasks that lost their lease to
/// the queue, or to DEAD when they have no attempts left.
async fn return_to_queue(tx: &mut Tx<'_>, ids: &[String], reason: &str, now: i64) -> Result<()> {
    let ids_json = json_text(ids);
    sqlx::query(sqlx::AssertSqlSafe(END_LOST_ATTEMPTS.as_str()))
        .bind(now)
        .bind(reason.to_owned())
        .bind(ids_json.clone())
        .execute(&mut **tx)
        .await?;
    static RETURN_TO_QUEUE: LazyLock<String> = LazyLock::new(|| {
        let assignments = rules::lost_lease_assignments("?1", "?2");
        format!(
            "UPDATE tasks SET {assignments}
             WHERE status = 'running' AND id IN (SELECT value FROM json_each(?3))"
        )
    });
    sqlx::query(sqlx::AssertSqlSafe(RETURN_TO_QUEUE.as_str()))
        .bind(now)
        .bind(reason.to_owned())
        .bind(ids_json)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    async fn return_leases(&self, leases: Leases, reason: &str) -> Result<Vec<Uuid>> {
        let mut writer = self.writer().await?;
        let mut tx = write(&mut writer).await?;
        let ids: Vec<String> = match leases {
            Leases::OfSession(session_id) => {
                sqlx::query_scalar(
                    "SELECT id FROM tasks WHERE status = 'running' AND lease_session = $1",
                )
                .bind(session_id.to_string())
                .fetch_all(&mut *tx)
                .await?
            }
            Leases::ExpiredBefore(expired) => {
                sqlx::query_scalar(
                    "SELECT id FROM tasks WHERE status = 'running' AND lease_expires_at < $1",
                )
                .bind(millis(expired))
                .fetch_all(&mut *tx)
                .await?
            }
        };
        if !ids.is_empty() {
            return_to_queue(&mut tx, &ids, reason, millis(leases.now())).await?;
        }
        tx.commit().await?;
        ids.iter().map(|id| parse_uuid(id)).collect()
    }

    fn common(&self) -> &dyn Common {
        &self.common
    }

    async fn due_types(&self, task_types: &[String], now: DateTime<Utc>) -> Result<Vec<String>> {
        // `'pending'` written out, so that the planner uses `tasks_ready`.
        Ok(sqlx::query_scalar(
            "SELECT value FROM json_each($1) WHERE EXISTS (
                 SELECT 1 FROM tasks
                 WHERE status = 'pending' AND task_type = value AND run_at <= $2
                     AND (start_by IS NULL OR start_by > $2))",
        )
        .bind(json_text(task_types))
        .bind(millis(now))
        .fetch_all(self.common.readers())
        .await?)
    }

    async fn enqueue_with_keys(&self, batch: EnqueueBatch<'_>) -> Result<Vec<Enqueued>> {
        enqueue::enqueue_with_keys(&mut *self.writer().await?, batch).await
    }

    async fn enqueue_without_keys(&self, batch: EnqueueBatch<'_>) -> Result<Vec<Enqueued>> {
        let (tasks, hand_off, now) = (batch.tasks, batch.hand_off, batch.now);
        // Every write waits for the writer, so no registration can change a
        // type between this lookup and the insert.
        let mut writer = self.writer().await?;
        let types = enqueue::fetch_task_types(&mut writer, &tasks).await?;
        let mut tasks = rules::new_tasks(tasks, &types, now)?;
        let leases = rules::hand_off(&mut tasks, hand_off);
        if tasks.len() <= enqueue::ROWS_PER_INSERT {
            // One statement is atomic by itself: no transaction to begin
            // and commit, one trip through sqlx's worker thread.
            enqueue::insert_tasks(&mut writer, &tasks, &leases).await?;
        } else {
            let mut tx = write(&mut writer).await?;
            for (chunk, leases) in tasks
                .chunks(enqueue::ROWS_PER_INSERT)
                .zip(leases.chunks(enqueue::ROWS_PER_INSERT))
            {
                enqueue::insert_tasks(&mut tx, chunk, leases).await?;
            }
            tx.commit().await?;
        }
        Ok(rules::newly_created(tasks))
    }

    async fn fold_task_counts(&self, before: DateTime<Utc>) -> Result<()> {
        let mut writer = self.writer().await?;
        let mut tx = write(&mut writer).await?;
        sqlx::query(
            "INSERT INTO task_counts (task_type, status, second, count)
             SELECT task_type, status, 0, sum(count) FROM task_counts
             WHERE second > 0 AND second < ?1 GROUP BY task_type, status
             ON CONFLICT (task_type, status, second) DO UPDATE SET count = count + excluded.count",
        )
        .bind(before.timestamp())
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM task_counts WHERE (second > 0 AND second < ?1) OR count = 0")
            .bind(before.timestamp())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn claim(&self, claimant: &Claimant<'_>, limit: u32, lease: &Lease) -> Result<Vec<Task>> {
        if limit == 0 || (claimant.task_types.is_empty() && claimant.limited.is_empty()) {
            return Ok(Vec::new());
        }
        let now = rows::now();
        let (task_types, lease) = (claimant.task_types.to_vec(), lease.clone());
        let limited = claimant.limited.to_vec();
        let route = writes::Route::new(claimant);
        let rotation = Arc::clone(&self.claim_rotation);
        self.thread
            .write(move |connection| {
                // Limited types first: their limits bound what they take,
                // so they cannot starve the other types, while a backlog
                // of those could starve them.
                let mut tasks = Vec::new();
                for task_type in &limited {
                    let wanted = limit - tasks.len() as u32;
                    if wanted == 0 {
                        return Ok(tasks);
                    }
                    tasks.extend(limited::claim_limited(
                        connection, task_type, wanted, &route, &lease, now,
                    )?);
                }
                let limit = limit - tasks.len() as u32;
                if limit == 0 || task_types.is_empty() {
                    return Ok(tasks);
                }
                // One type takes one step: its share is the whole limit.
                let mut plan = super::FairClaim::new(&task_types, limit, &rotation);
                // The first pass reads every type's share in one statement,
                // then leases them all in another: with many types, two
                // statements per type were most of a claim's cost.
                let (first_pass, share) = plan.first_pass();
                let ready =
                    writes::ready_in_turn(connection, first_pass, share, limit, &route, now)?;
                let claimed = writes::lease_tasks(connection, ready, &lease, now)?;
                plan.record_first_pass(claimed);
                while let Some((task_type, wanted)) = plan.next_step() {
                    let claimed =
                        writes::claim_type(connection, task_type, wanted, &route, &lease, now)?;
                    plan.record(claimed);
                }
                tasks.extend(plan.into_tasks());
                Ok(tasks)
            })
            .await
    }

    async fn write_results(&self, batch: ResultBatch) -> Result<Vec<ResultOutcome>> {
        let (results, bulk, single, now) = (batch.results, batch.bulk, batch.single, batch.now);
        let bulk_json = writes::bulk_completions(&results, &bulk);
        self.thread
            .write(move |connection| {
                let mut outcomes = vec![None; results.len()];
                let applied = writes::complete_in_bulk(connection, bulk_json.as_deref(), now)?;
                rules::bulk_outcomes(&results, &bulk, applied, &mut outcomes);
                for index in single {
                    let (id, attempt, result) = &results[index];
                    outcomes[index] =
                        Some(writes::record_one(connection, *id, *attempt, result, now)?);
                }
                let outcomes = rules::all_outcomes(outcomes);
                writes::count_completions(connection, &outcomes, now)?;
                Ok(outcomes)
            })
            .await
    }

    async fn refresh_sessions(
        &self,
        sessions: &[(Uuid, SessionStatus)],
        lease: chrono::Duration,
    ) -> Result<()> {
        let mut writer = self.writer().await?;
        let mut tx = write(&mut writer).await?;
        let lease_expires_at = Utc::now() + lease;
        let ids: Vec<String> = sessions.iter().map(|(id, _)| id.to_string()).collect();
        sqlx::query(
            "UPDATE tasks SET lease_expires_at = ?1
             WHERE status = 'running' AND lease_session IN (SELECT value FROM json_each(?2))",
        )
        .bind(millis(lease_expires_at))
        .bind(json_text(&ids))
        .execute(&mut *tx)
        .await?;
        for (session_id, status) in sessions {
            sqlx::query("UPDATE agents SET last_seen_at = ?1, status = ?2 WHERE session_id = ?3")
                .bind(millis(Utc::now()))
                .bind(json_text(status))
                .bind(session_id.to_string())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn checkpoint(&self) -> Result<()> {
        // PASSIVE never waits for the writer or readers; what it cannot copy
        // now, the next call does.
        let mut checkpointer = self.checkpointer.lock().await;
        let (_, frames, _): (i64, i64, i64) = sqlx::query_as(CHECKPOINT)
            .fetch_one(&mut *checkpointer)
            .await?;
        if frames >= self.wal_frames_before_pause {
            // SQLite writes the log from its beginning again only when a
            // transaction starts after a checkpoint copied all of it. Under
            // sustained writes a commit always lands while a checkpoint
            // copies, so the log was never reused and grew without bound
            // (500 MB in one 200,000-task drain). Holding the writer, a
            // second pass copies what arrived during the first, and the
            // next commit starts the log over.
            let _no_commits = self.writer().await?;
            sqlx::query(CHECKPOINT).execute(&mut *checkpointer).await?;
        }
        Ok(())
    }

    async fn purge_finished(&self, before: DateTime<Utc>, limit: u32) -> Result<u64> {
        let cutoff = millis(before);
        let mut writer = self.writer().await?;
        let mut tx = write(&mut writer).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM task_attempts WHERE task_id IN ({PURGED_TASKS})"
        )))
        .bind(cutoff)
        .bind(limit)
        .execute(&mut *tx)
        .await?;
        let deleted = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM tasks WHERE id IN ({PURGED_TASKS})"
        )))
        .bind(cutoff)
        .bind(limit)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query("DELETE FROM agents WHERE disconnected_at < ?1")
            .bind(cutoff)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(deleted)
    }

    async fn ready_notifications(&self) -> Result<Option<ReadyNotifications>> {
        // One process owns an SQLite file: in-process wake-ups are enough.
        Ok(None)
    }
}

#[cfg(test)]
mod tests;
