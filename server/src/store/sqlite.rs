//! The embedded SQLite store.
//!
//! WAL mode; one write at a time, each starting with `BEGIN IMMEDIATE` (a
//! deferred read-then-write transaction would fail with SQLITE_BUSY that
//! `busy_timeout` does not retry): claims and result batches on the writer
//! thread ([`super::writer_thread`]), every other write on the sqlx writer
//! connection, both under one lock. Reads use a small read-only pool.
//! `synchronous = NORMAL`: a process crash loses nothing committed, a power
//! loss can lose the last commits.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Connection, Sqlite, SqliteConnection, Transaction};
use tokio::sync::{Mutex, MutexGuard};
use uuid::Uuid;

use super::rows::{self, duration_millis, json_text, millis, parse_uuid};
use super::rules::{self, TypeDefaults};
use super::writer_thread::{self, WriterThread};
use super::{HandOff, ReadyNotifications, Store};
use crate::auth::tokens::{IssuedToken, TokenRecord};
use crate::error::{Error, Result};
use crate::model::{
    AgentSession, Attempt, AttemptResult, Enqueued, Lease, NewTask, RecordedTask, ResultOutcome,
    SessionStatus, Task, TaskFilter, TaskStatus, TaskType, TaskTypeSpec, TypeStats,
};

const TASK_COLUMNS: &str = "id, task_type, domain, payload, status, priority, attempts, max_attempts, \
    timeout_ms, retry_initial_ms, retry_factor, retry_max_ms, run_at, created_at, updated_at, started_at, \
    finished_at, result, last_error, idempotency_key, handler_version, metadata";

/// What a recorded result returns (see [`rows::recorded_task`]).
const RECORDED_COLUMNS: &str = "id, task_type, status, started_at, finished_at, updated_at, \
    metadata ->> '$.traceparent' AS traceparent";

/// The SQLite implementation of [`Store`].
pub struct SqliteStore {
    writer: Arc<Mutex<SqliteConnection>>,
    thread: WriterThread,
    readers: SqlitePool,
    checkpointer: Mutex<SqliteConnection>,
    /// See [`WAL_FRAMES_BEFORE_PAUSE`]; tests lower it.
    wal_frames_before_pause: i64,
    defaults: TypeDefaults,
    claim_rotation: Arc<AtomicUsize>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file named by a `sqlite://`
    /// URL and applies `migrations/sqlite`.
    pub async fn open(database_url: &str, defaults: TypeDefaults) -> Result<Self> {
        if database_url.contains(":memory:") || database_url.contains("mode=memory") {
            // The writer thread opens the file by name: an in-memory
            // database would be another, empty one.
            return Err(Error::InvalidArgument(format!(
                "{database_url} is an in-memory database, and taskplane keeps its queue in a \
                 file: give --database-url a file, such as sqlite://taskplane.db"
            )));
        }
        let options = Self::connect_options(database_url)?;
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
            .connect_with(options.read_only(true))
            .await?;
        let writer = Arc::new(Mutex::new(writer));
        let thread = WriterThread::start(&path, Arc::clone(&writer))?;
        Ok(SqliteStore {
            writer,
            thread,
            readers,
            checkpointer: Mutex::new(checkpointer),
            wal_frames_before_pause: WAL_FRAMES_BEFORE_PAUSE,
            defaults,
            claim_rotation: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// The connection settings every taskplane SQLite connection uses.
    pub fn connect_options(database_url: &str) -> Result<SqliteConnectOptions> {
        Ok(SqliteConnectOptions::from_str(database_url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
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
    async fn writer(&self) -> MutexGuard<'_, SqliteConnection> {
        self.writer.lock().await
    }
}

/// The ids one purge batch deletes (?1 the cutoff, ?2 the batch size),
/// read from the `tasks_finished` index: only what it deletes.
const PURGED_TASKS: &str = "SELECT id FROM tasks WHERE finished_at < ?1
     AND status IN ('completed', 'dead', 'cancelled') ORDER BY finished_at LIMIT ?2";

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
    super::end_attempts_sql(
        "id",
        "?1",
        "'lost'",
        "?2",
        "id IN (SELECT value FROM json_each(?3))",
    )
});

/// Ends task ?4's attempt ?5 at ?1 (Unix milliseconds) with outcome ?2 and
/// error ?3, from the task row (see `store::end_attempts_sql`).
static END_ONE_ATTEMPT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    super::end_attempts_sql("id", "?1", "?2", "?3", "id = ?4 AND attempts = ?5")
});

/// Ends task `id`'s attempt `attempt` at `now` (Unix milliseconds) with
/// `outcome` and `error`, from the task row (see [`END_ONE_ATTEMPT`]).
async fn end_one_attempt(
    tx: &mut Tx<'_>,
    id: Uuid,
    attempt: u32,
    now: i64,
    outcome: &str,
    error: Option<String>,
) -> Result<()> {
    sqlx::query(sqlx::AssertSqlSafe(END_ONE_ATTEMPT.as_str()))
        .bind(now)
        .bind(outcome.to_owned())
        .bind(error)
        .bind(id.to_string())
        .bind(attempt)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Starts a write transaction on the writer connection.
async fn write(writer: &mut SqliteConnection) -> Result<Tx<'_>> {
    Ok(writer.begin_with("BEGIN IMMEDIATE").await?)
}

/// Turns on SQLite's query planner stability guarantee for a connection.
///
/// The SQLite that sqlx bundles is built with STAT4, and without this
/// setting it plans a cached statement again whenever a bound value its plan
/// looked at changes. The claim binds the clock and a LIMIT that change on
/// every call, so every claim was parsed and planned afresh: 150 µs per
/// claim statement instead of 80 µs. Our statements write every value a
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

/// The `queue_stats` query, reading live tasks from their partial indexes:
/// left to itself, SQLite counts RUNNING tasks by walking `tasks_by_type`,
/// every task ever run.
static QUEUE_STATS: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| super::queue_stats_sql("?1", "?2", PENDING_TASKS, RUNNING_TASKS));

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

fn create_data_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| {
        Error::InvalidArgument(format!(
            "cannot create the data directory {}: {e}; choose another --database-url",
            dir.display()
        ))
    })
}

type Tx<'c> = Transaction<'c, Sqlite>;

/// One task by id (?1).
static FETCH_TASK: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?1"));

async fn fetch_task(tx: &mut Tx<'_>, id: Uuid) -> Result<Option<Task>> {
    let row = sqlx::query(sqlx::AssertSqlSafe(FETCH_TASK.as_str()))
        .bind(id.to_string())
        .fetch_optional(&mut **tx)
        .await?;
    row.as_ref().map(rows::task).transpose()
}

async fn fetch_task_type(tx: &mut Tx<'_>, task_type: &str) -> Result<Option<TaskType>> {
    let row = sqlx::query("SELECT * FROM task_types WHERE task_type = ?")
        .bind(task_type.to_owned())
        .fetch_optional(&mut **tx)
        .await?;
    row.as_ref().map(rows::task_type).transpose()
}

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
    sqlx::query(
        "UPDATE tasks SET
            status = CASE WHEN attempts >= max_attempts THEN 'dead' ELSE 'pending' END,
            finished_at = CASE WHEN attempts >= max_attempts THEN ?1 ELSE NULL END,
            last_error = ?2, updated_at = ?1,
            lease_session = NULL, lease_agent = NULL, lease_expires_at = NULL
         WHERE status = 'running' AND id IN (SELECT value FROM json_each(?3))",
    )
    .bind(now)
    .bind(reason.to_owned())
    .bind(ids_json)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Leases up to `limit` ready tasks of one type, in priority then age order.
/// The lease columns are the running attempt's record (`store::attempts_sql`).
/// Runs inside the writer thread's transaction, so nothing changes between
/// reading the tasks and leasing them.
///
/// The tasks are read, then leased by id, instead of one `UPDATE …
/// RETURNING`: SQLite stores the rows an UPDATE returns in a temporary
/// table before handing them out, which cost more than finding the leased
/// rows a second time (about 0.6 µs a task, a tenth of the claim).
fn claim_type(
    connection: &rusqlite::Connection,
    task_type: &str,
    limit: u32,
    lease: &Lease,
    now: DateTime<Utc>,
) -> Result<Vec<Task>> {
    static READY: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "SELECT {TASK_COLUMNS} FROM tasks
             WHERE status = 'pending' AND task_type = ?1 AND run_at <= ?2
             ORDER BY priority DESC, run_at, id LIMIT ?3"
        )
    });
    let mut tasks = {
        let mut statement = connection.prepare_cached(&READY)?;
        let ready = statement.query((task_type, millis(now), limit))?;
        writer_thread::decode(ready, |row| rows::task(row))?
    };
    if tasks.is_empty() {
        return Ok(tasks);
    }
    let ids: Vec<String> = tasks.iter().map(|task| task.id.to_string()).collect();
    let leased = connection
        .prepare_cached(
            "UPDATE tasks SET status = 'running', attempts = attempts + 1, started_at = ?1,
                 updated_at = ?1, lease_session = ?2, lease_agent = ?3, lease_expires_at = ?4
             WHERE id IN (SELECT value FROM json_each(?5)) AND status = 'pending'",
        )?
        .execute((
            millis(now),
            lease.session_id.to_string(),
            lease.agent_id.to_string(),
            millis(lease.expires_at),
            json_text(&ids),
        ))?;
    if leased != tasks.len() {
        return Err(Error::Corrupt(format!(
            "a claim read {} ready tasks and leased {leased}",
            tasks.len()
        )));
    }
    for task in &mut tasks {
        rules::start_attempt(task, now);
    }
    Ok(tasks)
}

async fn expire_leases(
    tx: &mut Tx<'_>,
    ids: Vec<String>,
    reason: &str,
    now: i64,
) -> Result<Vec<Uuid>> {
    if !ids.is_empty() {
        return_to_queue(tx, &ids, reason, now).await?;
    }
    ids.iter().map(|id| parse_uuid(id)).collect()
}

/// Completes many attempts in one statement: the tasks still RUNNING at that
/// attempt become COMPLETED (the fence), keeping who ran the attempt, which
/// is how their attempts read as completed (`store::attempts_sql`). `bulk`
/// is [`bulk_completions`]' JSON. Returns the tasks that changed.
fn complete_in_bulk(
    connection: &rusqlite::Connection,
    bulk: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Vec<RecordedTask>> {
    static COMPLETE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "UPDATE tasks SET status = 'completed', result = c.value ->> '$.result',
                 last_error = NULL, finished_at = ?1, updated_at = ?1, lease_expires_at = NULL
             FROM json_each(?2) AS c
             WHERE tasks.id = c.value ->> '$.id' AND tasks.status = 'running'
                 AND tasks.attempts = c.value ->> '$.attempt'
             RETURNING {RECORDED_COLUMNS}"
        )
    });
    let Some(bulk) = bulk else {
        return Ok(Vec::new());
    };
    let mut statement = connection.prepare_cached(&COMPLETE)?;
    let changed = statement.query((millis(now), bulk))?;
    writer_thread::decode(changed, |row| rows::recorded_task(row))
}

/// The completions at the indices `bulk` of `results` as the JSON array
/// [`complete_in_bulk`] reads, or `None` when there are none. Encoded before
/// the batch goes to the writer thread, which has no CPU to spare in W1.
fn bulk_completions(results: &[(Uuid, u32, AttemptResult)], bulk: &[usize]) -> Option<String> {
    if bulk.is_empty() {
        return None;
    }
    let items: Vec<BulkCompletion> = bulk
        .iter()
        .map(|&i| {
            let (id, attempt, result) = &results[i];
            let AttemptResult::Completed(value) = result else {
                unreachable!("bulk holds completions only")
            };
            BulkCompletion {
                id: id.to_string(),
                attempt: *attempt,
                result: json_text(value),
            }
        })
        .collect();
    Some(json_text(&items))
}

/// Counts the completions among a batch's `outcomes` in `task_counts`, in
/// the batch's transaction: one upsert per task type, where a row trigger
/// would fire once per task (migration 0009).
fn count_completions(
    connection: &rusqlite::Connection,
    outcomes: &[ResultOutcome],
    now: DateTime<Utc>,
) -> Result<()> {
    let mut by_type: BTreeMap<&str, i64> = BTreeMap::new();
    for outcome in outcomes {
        if let ResultOutcome::Applied(task) = outcome
            && task.status == TaskStatus::Completed
        {
            *by_type.entry(task.task_type.as_str()).or_default() += 1;
        }
    }
    if by_type.is_empty() {
        return Ok(());
    }
    connection
        .prepare_cached(
            "INSERT INTO task_counts (task_type, status, second, count)
             SELECT key, 'completed', ?1, value FROM json_each(?2) WHERE true
             ON CONFLICT (task_type, status, second) DO UPDATE SET count = count + excluded.count",
        )?
        .execute((now.timestamp(), json_text(&by_type)))?;
    Ok(())
}

/// One completion in [`complete_in_bulk`]'s JSON array, serialized straight
/// to text (no intermediate `serde_json::Value` maps). Its result travels as
/// the text to store, so SQLite copies it without parsing it.
#[derive(serde::Serialize)]
struct BulkCompletion {
    id: String,
    attempt: u32,
    result: String,
}

/// Records one attempt's result inside a batch's transaction.
fn finish_one(
    connection: &rusqlite::Connection,
    id: Uuid,
    attempt: u32,
    result: &AttemptResult,
    now: DateTime<Utc>,
) -> Result<ResultOutcome> {
    static FINISH: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "UPDATE tasks SET status = ?1, result = ?2, last_error = ?3, run_at = ?4,
                 finished_at = CASE WHEN ?1 = 'pending' THEN NULL ELSE ?5 END, updated_at = ?5,
                 lease_session = CASE WHEN ?1 = 'completed' THEN lease_session END,
                 lease_agent = CASE WHEN ?1 = 'completed' THEN lease_agent END,
                 lease_expires_at = NULL
             WHERE id = ?6 AND status = 'running' AND attempts = ?7
             RETURNING {RECORDED_COLUMNS}"
        )
    });
    let task = {
        let mut statement = connection.prepare_cached(&FETCH_TASK)?;
        writer_thread::decode(statement.query([id.to_string()])?, |row| rows::task(row))?.pop()
    };
    let Some(task) = task else {
        return Ok(ResultOutcome::Stale);
    };
    let Some(end) = rules::end_attempt(&task, attempt, result, now) else {
        return Ok(ResultOutcome::Stale);
    };
    if end.status != TaskStatus::Completed {
        connection.prepare_cached(&END_ONE_ATTEMPT)?.execute((
            millis(now),
            end.outcome,
            end.error.as_deref(),
            id.to_string(),
            attempt,
        ))?;
    }
    let mut statement = connection.prepare_cached(&FINISH)?;
    let changed = statement.query((
        end.status.as_str(),
        end.result,
        end.error,
        millis(end.run_at),
        millis(now),
        id.to_string(),
        attempt,
    ))?;
    let task = writer_thread::decode(changed, |row| rows::recorded_task(row))?
        .pop()
        .ok_or_else(|| Error::Corrupt(format!("task {id} changed under the writer")))?;
    Ok(ResultOutcome::Applied(task))
}

#[async_trait]
impl Store for SqliteStore {
    async fn register_task_types(&self, specs: &[TaskTypeSpec]) -> Result<Vec<TaskType>> {
        let now = millis(Utc::now());
        let mut writer = self.writer().await;
        let mut tx = write(&mut writer).await?;
        let mut registered = Vec::with_capacity(specs.len());
        for spec in specs {
            let existing = fetch_task_type(&mut tx, &spec.task_type).await?;
            if let Some(existing) = &existing
                && existing.domain != spec.domain
            {
                return Err(rules::domain_conflict(spec, &existing.domain));
            }
            let settings = rules::merged_defaults(spec, existing.as_ref(), &self.defaults);
            let row = sqlx::query(
                "INSERT INTO task_types (task_type, domain, description, versions, capabilities,
                     default_max_attempts, default_timeout_ms, retry_initial_ms, retry_factor,
                     retry_max_ms, registered_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11)
                 ON CONFLICT (task_type) DO UPDATE SET
                     description = excluded.description, versions = excluded.versions,
                     capabilities = excluded.capabilities,
                     default_max_attempts = excluded.default_max_attempts,
                     default_timeout_ms = excluded.default_timeout_ms,
                     retry_initial_ms = excluded.retry_initial_ms,
                     retry_factor = excluded.retry_factor,
                     retry_max_ms = excluded.retry_max_ms,
                     updated_at = excluded.updated_at
                 RETURNING *",
            )
            .bind(spec.task_type.clone())
            .bind(spec.domain.clone())
            .bind(spec.description.clone())
            .bind(json_text(&spec.versions))
            .bind(json_text(&spec.capabilities))
            .bind(settings.max_attempts)
            .bind(duration_millis(settings.timeout))
            .bind(duration_millis(settings.retry_policy.initial_backoff))
            .bind(settings.retry_policy.backoff_factor)
            .bind(duration_millis(settings.retry_policy.max_backoff))
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
            registered.push(rows::task_type(&row)?);
        }
        tx.commit().await?;
        Ok(registered)
    }

    async fn get_task_type(&self, task_type: &str) -> Result<Option<TaskType>> {
        let row = sqlx::query("SELECT * FROM task_types WHERE task_type = ?")
            .bind(task_type.to_owned())
            .fetch_optional(&self.readers)
            .await?;
        row.as_ref().map(rows::task_type).transpose()
    }

    async fn list_task_types(&self, domain: Option<&str>) -> Result<Vec<TaskType>> {
        let rows = sqlx::query(
            "SELECT * FROM task_types WHERE (?1 IS NULL OR domain = ?1) ORDER BY task_type",
        )
        .bind(domain.map(str::to_owned))
        .fetch_all(&self.readers)
        .await?;
        rows.iter().map(rows::task_type).collect()
    }

    async fn enqueue_handing_off(
        &self,
        tasks: Vec<NewTask>,
        hand_off: &HandOff<'_>,
    ) -> Result<Vec<Enqueued>> {
        let now = rows::now();
        let mut writer = self.writer().await;
        if tasks.iter().any(|t| t.idempotency_key.is_some()) {
            return enqueue_with_keys(&mut writer, tasks, hand_off, now).await;
        }
        // Every write waits for the writer, so no registration can change a
        // type between this lookup and the insert.
        let types = fetch_task_types(&mut writer, &tasks).await?;
        let mut tasks = rules::new_tasks(tasks, &types, now)?;
        let leases = rules::hand_off(&mut tasks, hand_off);
        if tasks.len() <= ROWS_PER_INSERT {
            // One statement is atomic by itself: no transaction to begin
            // and commit, one trip through sqlx's worker thread.
            insert_tasks(&mut writer, &tasks, &leases).await?;
        } else {
            let mut tx = write(&mut writer).await?;
            for (chunk, leases) in tasks
                .chunks(ROWS_PER_INSERT)
                .zip(leases.chunks(ROWS_PER_INSERT))
            {
                insert_tasks(&mut tx, chunk, leases).await?;
            }
            tx.commit().await?;
        }
        Ok(rules::newly_created(tasks))
    }

    async fn get_task(&self, id: Uuid) -> Result<Option<Task>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(FETCH_TASK.as_str()))
            .bind(id.to_string())
            .fetch_optional(&self.readers)
            .await?;
        row.as_ref().map(rows::task).transpose()
    }

    async fn list_attempts(&self, id: Uuid) -> Result<Vec<Attempt>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(super::attempts_sql("?1", "?1")))
            .bind(id.to_string())
            .fetch_all(&self.readers)
            .await?;
        rows.iter().map(rows::attempt).collect()
    }

    async fn queue_stats(
        &self,
        domain: Option<&str>,
        since: DateTime<Utc>,
    ) -> Result<Vec<TypeStats>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(QUEUE_STATS.as_str()))
            .bind(domain.map(str::to_owned))
            .bind(since.timestamp())
            .fetch_all(&self.readers)
            .await?;
        rows::queue_stats(&rows)
    }

    async fn fold_task_counts(&self, before: DateTime<Utc>) -> Result<()> {
        let mut writer = self.writer().await;
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

    async fn list_tasks(&self, filter: &TaskFilter) -> Result<Vec<Task>> {
        let rows = super::listing_query::<Sqlite>(filter, TASK_COLUMNS, listing_source(filter), "")
            .fetch_all(&self.readers)
            .await?;
        rows.iter().map(rows::task).collect()
    }

    async fn claim(&self, task_types: &[String], limit: u32, lease: &Lease) -> Result<Vec<Task>> {
        if limit == 0 || task_types.is_empty() {
            return Ok(Vec::new());
        }
        let now = rows::now();
        let (task_types, lease) = (task_types.to_vec(), lease.clone());
        let rotation = Arc::clone(&self.claim_rotation);
        let tasks = self
            .thread
            .write(move |connection| {
                // One type takes one step: its share is the whole limit.
                let mut plan = super::FairClaim::new(&task_types, limit, &rotation);
                let mut tasks = Vec::new();
                while let Some((task_type, wanted)) = plan.next_step() {
                    let claimed = claim_type(connection, task_type, wanted, &lease, now)?;
                    plan.record(task_type, wanted, claimed.len() as u32);
                    tasks.extend(claimed);
                }
                Ok(tasks)
            })
            .await?;
        Ok(super::delivery_order(tasks))
    }

    async fn finish_attempts(
        &self,
        results: Vec<(Uuid, u32, AttemptResult)>,
    ) -> Result<Vec<ResultOutcome>> {
        let now = rows::now();
        let (bulk, single) = rules::split_completions(&results);
        let bulk_json = bulk_completions(&results, &bulk);
        self.thread
            .write(move |connection| {
                let mut outcomes = vec![None; results.len()];
                let applied = complete_in_bulk(connection, bulk_json.as_deref(), now)?;
                rules::bulk_outcomes(&results, &bulk, applied, &mut outcomes);
                for index in single {
                    let (id, attempt, result) = &results[index];
                    outcomes[index] = Some(finish_one(connection, *id, *attempt, result, now)?);
                }
                let outcomes = rules::all_outcomes(outcomes);
                count_completions(connection, &outcomes, now)?;
                Ok(outcomes)
            })
            .await
    }

    async fn release_session(&self, session_id: Uuid) -> Result<Vec<Uuid>> {
        let now = millis(Utc::now());
        let mut writer = self.writer().await;
        let mut tx = write(&mut writer).await?;
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM tasks WHERE status = 'running' AND lease_session = ?",
        )
        .bind(session_id.to_string())
        .fetch_all(&mut *tx)
        .await?;
        let released = expire_leases(&mut tx, ids, super::STREAM_CLOSED, now).await?;
        tx.commit().await?;
        Ok(released)
    }

    async fn refresh_sessions(
        &self,
        sessions: &[(Uuid, SessionStatus)],
        lease_expires_at: DateTime<Utc>,
    ) -> Result<()> {
        if sessions.is_empty() {
            return Ok(());
        }
        let mut writer = self.writer().await;
        let mut tx = write(&mut writer).await?;
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

    async fn reap_expired_leases(&self, now: DateTime<Utc>) -> Result<Vec<Uuid>> {
        let now = millis(now);
        let mut writer = self.writer().await;
        let mut tx = write(&mut writer).await?;
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM tasks WHERE status = 'running' AND lease_expires_at < ?",
        )
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        let reaped = expire_leases(&mut tx, ids, super::LEASE_EXPIRED, now).await?;
        tx.commit().await?;
        Ok(reaped)
    }

    async fn cancel(&self, id: Uuid, reason: &str) -> Result<(Task, Task)> {
        let now = millis(Utc::now());
        let mut writer = self.writer().await;
        let mut tx = write(&mut writer).await?;
        let before = fetch_task(&mut tx, id)
            .await?
            .ok_or_else(|| rules::not_found(id))?;
        rules::check_cancellable(&before)?;
        end_one_attempt(
            &mut tx,
            id,
            before.attempts,
            now,
            "cancelled",
            Some(reason.to_owned()),
        )
        .await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE tasks SET status = 'cancelled', last_error = ?1, finished_at = ?2,
                 updated_at = ?2, lease_session = NULL, lease_agent = NULL, lease_expires_at = NULL
             WHERE id = ?3 RETURNING {TASK_COLUMNS}"
        )))
        .bind(reason.to_owned())
        .bind(now)
        .bind(id.to_string())
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok((before, rows::task(&row)?))
    }

    async fn retry(&self, id: Uuid) -> Result<Task> {
        let now = millis(Utc::now());
        let mut writer = self.writer().await;
        let mut tx = write(&mut writer).await?;
        let task = fetch_task(&mut tx, id)
            .await?
            .ok_or_else(|| rules::not_found(id))?;
        rules::check_retryable(&task)?;
        let fresh_attempts = fetch_task_type(&mut tx, &task.task_type)
            .await?
            .map_or(self.defaults.max_attempts, |t| t.default_max_attempts);
        sqlx::query(
            "UPDATE tasks SET status = 'pending', max_attempts = attempts + ?1, run_at = ?2,
                 updated_at = ?2, finished_at = NULL, result = NULL
             WHERE id = ?3",
        )
        .bind(fresh_attempts)
        .bind(now)
        .bind(id.to_string())
        .execute(&mut *tx)
        .await?;
        let task = fetch_task(&mut tx, id)
            .await?
            .ok_or_else(|| rules::not_found(id))?;
        tx.commit().await?;
        Ok(task)
    }

    async fn record_session_start(&self, session: &AgentSession) -> Result<()> {
        let mut writer = self.writer().await;
        let mut tx = write(&mut writer).await?;
        sqlx::query(
            "INSERT INTO agents (session_id, agent_id, agent_name, domains, task_types, labels,
                 connected_at, last_seen_at, status)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8)",
        )
        .bind(session.session_id.to_string())
        .bind(session.agent_id.to_string())
        .bind(session.agent_name.clone())
        .bind(json_text(&session.domains))
        .bind(json_text(&session.task_types))
        .bind(json_text(&session.labels))
        .bind(millis(session.connected_at))
        .bind(json_text(&session.status))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn record_session_end(&self, session_id: Uuid) -> Result<()> {
        let mut writer = self.writer().await;
        let mut tx = write(&mut writer).await?;
        sqlx::query("UPDATE agents SET disconnected_at = ? WHERE session_id = ?")
            .bind(millis(Utc::now()))
            .bind(session_id.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn live_sessions(&self, seen_since: DateTime<Utc>) -> Result<Vec<AgentSession>> {
        let rows = sqlx::query(
            "SELECT * FROM agents WHERE disconnected_at IS NULL AND last_seen_at >= ? ORDER BY session_id",
        )
        .bind(millis(seen_since))
        .fetch_all(&self.readers)
        .await?;
        rows.iter().map(rows::agent_session).collect()
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
            let _no_commits = self.writer().await;
            sqlx::query(CHECKPOINT).execute(&mut *checkpointer).await?;
        }
        Ok(())
    }

    async fn purge_finished(&self, before: DateTime<Utc>, limit: u32) -> Result<u64> {
        let cutoff = millis(before);
        let mut writer = self.writer().await;
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

    async fn create_token(&self, token: &IssuedToken) -> Result<()> {
        sqlx::query(
            "INSERT INTO api_tokens (id, name, role, domains, sha256, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&token.record.id)
        .bind(&token.record.name)
        .bind(token.record.role.as_str())
        .bind(json_text(&token.record.domains.to_list()))
        .bind(&token.sha256)
        .bind(millis(token.record.created_at))
        .execute(&mut *self.writer().await)
        .await?;
        Ok(())
    }

    async fn revoke_token(&self, id: &str) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
        )
        .bind(millis(Utc::now()))
        .bind(id)
        .execute(&mut *self.writer().await)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn list_tokens(&self) -> Result<Vec<TokenRecord>> {
        let rows = sqlx::query("SELECT * FROM api_tokens ORDER BY created_at, id")
            .fetch_all(&self.readers)
            .await?;
        rows.iter().map(rows::token_record).collect()
    }

    async fn find_token(&self, sha256: &str) -> Result<Option<TokenRecord>> {
        let row = sqlx::query("SELECT * FROM api_tokens WHERE sha256 = $1")
            .bind(sha256)
            .fetch_optional(&self.readers)
            .await?;
        row.as_ref().map(rows::token_record).transpose()
    }

    async fn ready_notifications(&self) -> Result<Option<ReadyNotifications>> {
        // One process owns an SQLite file: in-process wake-ups are enough.
        Ok(None)
    }
}

/// Enqueues tasks of which some carry idempotency keys: each key is looked
/// up first, and a taken one answers with the task that holds it.
async fn enqueue_with_keys(
    writer: &mut SqliteConnection,
    tasks: Vec<NewTask>,
    hand_off: &HandOff<'_>,
    now: DateTime<Utc>,
) -> Result<Vec<Enqueued>> {
    let mut tx = write(writer).await?;
    let types = fetch_task_types(&mut tx, &tasks).await?;
    let mut tasks = rules::new_tasks(tasks, &types, now)?;
    let leases = rules::hand_off(&mut tasks, hand_off);
    let mut enqueued = Vec::with_capacity(tasks.len());
    for (task, lease) in tasks.into_iter().zip(leases) {
        if let Some(key) = &task.idempotency_key {
            let existing: Option<String> = sqlx::query_scalar(
                "SELECT id FROM tasks WHERE task_type = ? AND idempotency_key = ?",
            )
            .bind(task.task_type.clone())
            .bind(key.clone())
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(id) = existing {
                let id = parse_uuid(&id)?;
                let task = fetch_task(&mut tx, id)
                    .await?
                    .ok_or_else(|| rules::not_found(id))?;
                enqueued.push(Enqueued {
                    task,
                    created: false,
                });
                continue;
            }
        }
        insert_tasks(&mut tx, std::slice::from_ref(&task), &[lease]).await?;
        enqueued.push(Enqueued {
            task,
            created: true,
        });
    }
    tx.commit().await?;
    Ok(enqueued)
}

/// The registered types among those `tasks` name, by name.
async fn fetch_task_types(
    connection: &mut SqliteConnection,
    tasks: &[NewTask],
) -> Result<BTreeMap<String, TaskType>> {
    let names: BTreeSet<&str> = tasks.iter().map(|t| t.task_type.as_str()).collect();
    let rows =
        sqlx::query("SELECT * FROM task_types WHERE task_type IN (SELECT value FROM json_each(?))")
            .bind(json_text(&names))
            .fetch_all(connection)
            .await?;
    rows.iter()
        .map(|row| rows::task_type(row).map(|t| (t.task_type.clone(), t)))
        .collect()
}

/// The most tasks one INSERT writes: 22 bound values each, well inside
/// SQLite's 32,766.
const ROWS_PER_INSERT: usize = 500;

/// Inserts tasks with one multi-row statement: PENDING, or RUNNING under
/// the lease beside them (their first attempt, read from the task row).
async fn insert_tasks(
    connection: &mut SqliteConnection,
    tasks: &[Task],
    leases: &[Option<Lease>],
) -> Result<()> {
    const ROW: &str = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
    let sql = format!(
        "INSERT INTO tasks (id, task_type, domain, payload, status, priority, attempts,
             max_attempts, timeout_ms, run_at, created_at, updated_at, started_at,
             idempotency_key, handler_version, metadata, retry_initial_ms, retry_factor,
             retry_max_ms, lease_session, lease_agent, lease_expires_at)
         VALUES {}",
        vec![ROW; tasks.len()].join(", ")
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for (task, lease) in tasks.iter().zip(leases) {
        query = query
            .bind(task.id.to_string())
            .bind(task.task_type.clone())
            .bind(task.domain.clone())
            .bind(json_text(&task.payload))
            .bind(task.status.as_str())
            .bind(task.priority)
            .bind(task.attempts)
            .bind(task.max_attempts)
            .bind(duration_millis(task.timeout))
            .bind(millis(task.run_at))
            .bind(millis(task.created_at))
            .bind(millis(task.created_at))
            .bind(task.started_at.map(millis))
            .bind(task.idempotency_key.clone())
            .bind(task.handler_version.clone())
            .bind(json_text(&task.metadata))
            .bind(duration_millis(task.retry_policy.initial_backoff))
            .bind(task.retry_policy.backoff_factor)
            .bind(duration_millis(task.retry_policy.max_backoff))
            .bind(lease.as_ref().map(|l| l.session_id.to_string()))
            .bind(lease.as_ref().map(|l| l.agent_id.to_string()))
            .bind(lease.as_ref().map(|l| millis(l.expires_at)));
    }
    query.execute(connection).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::config::DbConfig;
    use sqlx::Row;

    /// Whether `connection` has the query planner stability guarantee on.
    async fn plans_are_stable(connection: &mut SqliteConnection) -> bool {
        let mut handle = connection.lock_handle().await.unwrap();
        let mut enabled: std::ffi::c_int = -1;
        // SAFETY: as in `keep_plans_stable`; -1 asks for the current value,
        // written into `enabled`.
        let code = unsafe {
            libsqlite3_sys::sqlite3_db_config(
                handle.as_raw_handle().as_ptr(),
                libsqlite3_sys::SQLITE_DBCONFIG_ENABLE_QPSG,
                -1 as std::ffi::c_int,
                &mut enabled as *mut std::ffi::c_int,
            )
        };
        assert_eq!(code, libsqlite3_sys::SQLITE_OK);
        enabled == 1
    }

    #[tokio::test]
    async fn a_purge_reads_only_the_finished_tasks_index() {
        let (_dir, _url, store) = crate::store::suite::sqlite_store("t.db").await;
        let plan = sqlx::query(sqlx::AssertSqlSafe(format!(
            "EXPLAIN QUERY PLAN {PURGED_TASKS}"
        )))
        .bind(0_i64)
        .bind(10_i64)
        .fetch_all(&mut *store.writer().await)
        .await
        .unwrap();
        let steps: Vec<String> = plan.iter().map(|row| row.get("detail")).collect();
        assert_eq!(
            steps,
            ["SEARCH tasks USING INDEX tasks_finished (finished_at<?)"],
            "no other table or index is read, and nothing is sorted"
        );
    }

    #[tokio::test]
    async fn queue_stats_read_only_live_tasks_and_the_counts() {
        let (_dir, _url, store) = crate::store::suite::sqlite_store("t.db").await;
        let plan = sqlx::query(sqlx::AssertSqlSafe(format!(
            "EXPLAIN QUERY PLAN {}",
            QUEUE_STATS.as_str()
        )))
        .bind(None::<String>)
        .bind(0_i64)
        .fetch_all(&mut *store.writer().await)
        .await
        .unwrap();
        let reads: Vec<String> = plan
            .iter()
            .map(|row| row.get::<String, _>("detail"))
            .filter(|step| step.contains(" tasks"))
            .collect();
        assert_eq!(
            reads,
            [
                "SCAN tasks USING COVERING INDEX tasks_ready",
                "SCAN tasks USING INDEX tasks_leased"
            ],
            "finished tasks are never read"
        );
    }

    /// The steps of `EXPLAIN QUERY PLAN` for a listing of `filter` read from `source`.
    async fn listing_plan(store: &SqliteStore, filter: &TaskFilter, source: &str) -> Vec<String> {
        let (listing, values) = super::super::rules::task_listing(filter, "");
        let explain = format!("EXPLAIN QUERY PLAN SELECT id FROM {source} {listing}");
        let query = values
            .into_iter()
            .fold(sqlx::query(sqlx::AssertSqlSafe(explain)), |q, v| q.bind(v))
            .bind(i64::from(filter.limit));
        let plan = query.fetch_all(&mut *store.writer().await).await.unwrap();
        plan.iter().map(|row| row.get("detail")).collect()
    }

    #[tokio::test]
    async fn pending_and_running_listings_read_their_partial_indexes() {
        let (_dir, _url, store) = crate::store::suite::sqlite_store("t.db").await;
        let cases = [
            (TaskStatus::Pending, "tasks_ready"),
            (TaskStatus::Running, "tasks_leased"),
        ];
        for (status, index) in cases {
            let filter = TaskFilter {
                task_type: Some("send_email".into()),
                domain: None,
                status: Some(status),
                before: None,
                limit: 10,
            };
            let plan = listing_plan(&store, &filter, listing_source(&filter)).await;
            assert!(
                plan.iter().any(|step| step.contains(index)),
                "{status:?}: {plan:?}"
            );
            assert!(!plan.iter().any(|step| step.contains("tasks_by_type")));
            // Left to itself, SQLite walks every task of the type instead.
            let unhinted = listing_plan(&store, &filter, "tasks").await;
            assert!(
                unhinted.iter().any(|step| step.contains("tasks_by_type")),
                "{status:?}: {unhinted:?}"
            );
        }
    }

    #[tokio::test]
    async fn every_connection_keeps_its_query_plans() {
        let (_dir, url, store) = crate::store::suite::sqlite_store("t.db").await;
        assert!(plans_are_stable(&mut *store.writer().await).await);
        assert!(plans_are_stable(&mut *store.checkpointer.lock().await).await);
        let mut reader = store.readers.acquire().await.unwrap();
        assert!(plans_are_stable(&mut reader).await);
        // A fresh connection does not have it: the check can fail.
        let mut fresh =
            SqliteConnection::connect_with(&SqliteStore::connect_options(&url).unwrap())
                .await
                .unwrap();
        assert!(!plans_are_stable(&mut fresh).await);
    }

    #[tokio::test]
    async fn the_log_is_reused_under_sustained_writes() {
        const COMMITS: u64 = 5_000;
        /// Commits between two checkpoints at most, however the test's
        /// tasks are scheduled.
        const COMMITS_PER_CHECKPOINT: u64 = 20;
        let (dir, _url, mut store) = crate::store::suite::sqlite_store("t.db").await;
        store.wal_frames_before_pause = 256;
        let store = std::sync::Arc::new(store);
        sqlx::query("CREATE TABLE filler (bytes BLOB)")
            .execute(&mut *store.writer().await)
            .await
            .unwrap();
        let (checkpoint_began, mut checkpoints) = tokio::sync::watch::channel(0_u64);
        let writing = tokio::spawn({
            let store = store.clone();
            async move {
                for commit in 1..=COMMITS {
                    sqlx::query("INSERT INTO filler VALUES (randomblob(3000))")
                        .execute(&mut *store.writer().await)
                        .await
                        .unwrap();
                    if commit % COMMITS_PER_CHECKPOINT == 0 {
                        // Keeps committing while that checkpoint copies.
                        checkpoints.changed().await.unwrap();
                    }
                }
            }
        });
        while !writing.is_finished() {
            checkpoint_began.send_modify(|began| *began += 1);
            store.checkpoint().await.unwrap();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        writing.await.unwrap();
        // Each commit appends at least its new leaf page to the log, so a
        // log that is never reused ends at least COMMITS pages long.
        let log_bytes = std::fs::metadata(dir.path().join("t.db-wal"))
            .unwrap()
            .len();
        assert!(
            log_bytes < COMMITS * 4096 / 4,
            "the log grew to {log_bytes} bytes over {COMMITS} commits"
        );
    }

    #[tokio::test]
    async fn claims_and_completions_write_no_attempt_rows_and_older_rows_read_right() {
        use crate::store::suite::{lease, new_task, spec};
        let (_dir, _url, store) = crate::store::suite::sqlite_store("t.db").await;
        store.register_task_types(&[spec("a", "d")]).await.unwrap();
        store
            .enqueue(vec![new_task("a"), new_task("a"), new_task("a")])
            .await
            .unwrap();
        let ran = lease();
        let claimed = store.claim(&["a".into()], 3, &ran).await.unwrap();
        let (plain, older, lost) = (claimed[0].id, claimed[1].id, claimed[2].id);
        // An open row for each claim, as migrations 0003 and 0004 wrote them.
        for id in [older, lost] {
            sqlx::query(
                "INSERT INTO task_attempts (task_id, attempt, agent_id, session_id, started_at)
                 VALUES (?1, 1, 'older-agent', 'older-session', 0)",
            )
            .bind(id.to_string())
            .execute(&mut *store.writer().await)
            .await
            .unwrap();
        }
        store
            .finish_attempts(vec![
                (plain, 1, AttemptResult::Completed(Default::default())),
                (older, 1, AttemptResult::Completed(Default::default())),
            ])
            .await
            .unwrap();
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM task_attempts WHERE task_id = ?1")
            .bind(plain.to_string())
            .fetch_one(&mut *store.writer().await)
            .await
            .unwrap();
        assert_eq!(rows, 0, "a claim and a completion write no attempt row");
        for id in [plain, older] {
            let attempts = store.list_attempts(id).await.unwrap();
            assert_eq!(attempts.len(), 1, "an older row gives way to the task row");
            assert_eq!(
                (
                    attempts[0].agent_id.as_str(),
                    attempts[0].outcome.as_deref()
                ),
                (ran.agent_id.to_string().as_str(), Some("completed"))
            );
        }
        store.release_session(ran.session_id).await.unwrap();
        let attempts = store.list_attempts(lost).await.unwrap();
        assert_eq!(attempts.len(), 1, "the older open row is filled in");
        assert_eq!(attempts[0].outcome.as_deref(), Some("lost"));
        assert!(attempts[0].finished_at.is_some());
    }

    #[tokio::test]
    async fn the_writer_keeps_statement_journals_in_memory() {
        let (_dir, _url, store) = crate::store::suite::sqlite_store("t.db").await;
        let temp_store: i64 = sqlx::query_scalar("PRAGMA temp_store")
            .fetch_one(&mut *store.writer().await)
            .await
            .unwrap();
        assert_eq!(temp_store, 2, "2 is MEMORY; 0, the default, means files");
    }

    #[tokio::test]
    async fn the_writer_thread_connects_with_the_sqlx_connections_settings() {
        let (_dir, _url, store) = crate::store::suite::sqlite_store("t.db").await;
        const SETTINGS: [&str; 5] = [
            "synchronous",
            "foreign_keys",
            "temp_store",
            "wal_autocheckpoint",
            "busy_timeout",
        ];
        let mut sqlx_settings = Vec::new();
        for setting in SETTINGS {
            let value: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("PRAGMA {setting}")))
                .fetch_one(&mut *store.writer().await)
                .await
                .unwrap();
            sqlx_settings.push(value);
        }
        let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut *store.writer().await)
            .await
            .unwrap();
        let (thread_settings, thread_journal, stable) = store
            .thread
            .write(|connection| {
                let mut values = Vec::new();
                for setting in SETTINGS {
                    values.push(
                        connection.query_row(&format!("PRAGMA {setting}"), [], |row| {
                            row.get::<_, i64>(0)
                        })?,
                    );
                }
                let journal: String =
                    connection.query_row("PRAGMA journal_mode", [], |row| row.get(0))?;
                let stable = connection.db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG)?;
                Ok((values, journal, stable))
            })
            .await
            .unwrap();
        assert_eq!(thread_settings, sqlx_settings, "{SETTINGS:?}");
        assert_eq!((journal.as_str(), thread_journal.as_str()), ("wal", "wal"));
        assert!(stable, "the writer thread's plans are not stable");
    }

    #[tokio::test]
    async fn an_in_memory_database_is_refused_with_what_to_give_instead() {
        for url in ["sqlite::memory:", "sqlite://t.db?mode=memory"] {
            let refused = SqliteStore::open(url, crate::store::suite::defaults()).await;
            assert!(
                matches!(&refused, Err(Error::InvalidArgument(message)) if message.contains("--database-url a file")),
                "{url}: {:?}",
                refused.as_ref().err()
            );
        }
    }

    #[tokio::test]
    async fn sqlite_is_built_without_memory_statistics() {
        let (_dir, _url, store) = crate::store::suite::sqlite_store("t.db").await;
        let options: Vec<String> = sqlx::query_scalar("PRAGMA compile_options")
            .fetch_all(&mut *store.writer().await)
            .await
            .unwrap();
        assert!(
            options.iter().any(|o| o == "DEFAULT_MEMSTATUS=0"),
            "LIBSQLITE3_FLAGS from .cargo/config.toml did not reach the SQLite build: {options:?}"
        );
    }
}
