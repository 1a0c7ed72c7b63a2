//! The embedded SQLite store.
//!
//! WAL mode; every write goes through one writer connection and starts with
//! `BEGIN IMMEDIATE` (a deferred read-then-write transaction would fail with
//! SQLITE_BUSY that `busy_timeout` does not retry); reads use a small pool.
//! `synchronous = NORMAL`: a process crash loses nothing committed, a power
//! loss can lose the last commits.

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};
use uuid::Uuid;

use super::{AgentSessionRecord, Store};
use crate::backoff::retry_delay;
use crate::config::QueueConfig;
use crate::error::{Error, Result};
use crate::model::{
    Attempt, AttemptResult, Enqueued, Lease, NewTask, ResultOutcome, RetryPolicy, Task, TaskFilter,
    TaskStatus, TaskType, TaskTypeSpec,
};

const TASK_COLUMNS: &str = "id, task_type, domain, payload, status, priority, attempts, \
    max_attempts, timeout_ms, retry_initial_ms, retry_factor, retry_max_ms, run_at, created_at, updated_at, started_at, finished_at, result, \
    last_error, idempotency_key, handler_version, metadata";

/// The SQLite implementation of [`Store`].
pub struct SqliteStore {
    writer: SqlitePool,
    readers: SqlitePool,
    default_max_attempts: u32,
    default_timeout: Duration,
    default_retry_policy: RetryPolicy,
    claim_rotation: AtomicUsize,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file named by a `sqlite://`
    /// URL and applies `migrations/sqlite`.
    pub async fn open(database_url: &str, queue: &QueueConfig) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(database_url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        if let Some(parent) = options
            .get_filename()
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
        {
            create_data_dir(parent)?;
        }
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("../migrations/sqlite").run(&writer).await?;
        let readers = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.read_only(true))
            .await?;
        Ok(SqliteStore {
            writer,
            readers,
            default_max_attempts: queue.default_max_attempts,
            default_timeout: queue.default_timeout,
            default_retry_policy: queue.default_retry_policy,
            claim_rotation: AtomicUsize::new(0),
        })
    }

    async fn write(&self) -> Result<Transaction<'static, Sqlite>> {
        Ok(self.writer.begin_with("BEGIN IMMEDIATE").await?)
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

fn millis(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

fn from_millis(ms: i64) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms).ok_or_else(|| Error::Corrupt(format!("timestamp {ms}")))
}

fn duration_millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

fn millis_duration(row: &SqliteRow, column: &str) -> Result<Duration> {
    Ok(Duration::from_millis(
        row.try_get::<i64, _>(column)?.max(0) as u64
    ))
}

fn retry_policy_from_row(row: &SqliteRow) -> Result<RetryPolicy> {
    Ok(RetryPolicy {
        initial_backoff: millis_duration(row, "retry_initial_ms")?,
        backoff_factor: row.try_get("retry_factor")?,
        max_backoff: millis_duration(row, "retry_max_ms")?,
    })
}

fn json_text<T: serde::Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).expect("JSON values always serialize")
}

fn parse_json<T: serde::de::DeserializeOwned>(column: &str, text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| Error::Corrupt(format!("{column}: {e}")))
}

fn parse_uuid(text: &str) -> Result<Uuid> {
    Uuid::parse_str(text).map_err(|e| Error::Corrupt(format!("task id {text}: {e}")))
}

fn task_from_row(row: &SqliteRow) -> Result<Task> {
    let status: String = row.try_get("status")?;
    let optional_time = |column: &str| -> Result<Option<DateTime<Utc>>> {
        row.try_get::<Option<i64>, _>(column)?
            .map(from_millis)
            .transpose()
    };
    let result: Option<String> = row.try_get("result")?;
    Ok(Task {
        id: parse_uuid(row.try_get("id")?)?,
        task_type: row.try_get("task_type")?,
        domain: row.try_get("domain")?,
        payload: parse_json("payload", row.try_get("payload")?)?,
        status: TaskStatus::parse(&status)
            .ok_or_else(|| Error::Corrupt(format!("task status {status}")))?,
        priority: row.try_get("priority")?,
        attempts: row.try_get("attempts")?,
        max_attempts: row.try_get("max_attempts")?,
        timeout: millis_duration(row, "timeout_ms")?,
        run_at: from_millis(row.try_get("run_at")?)?,
        created_at: from_millis(row.try_get("created_at")?)?,
        updated_at: from_millis(row.try_get("updated_at")?)?,
        started_at: optional_time("started_at")?,
        finished_at: optional_time("finished_at")?,
        result: result.map(|text| parse_json("result", &text)).transpose()?,
        last_error: row.try_get("last_error")?,
        idempotency_key: row.try_get("idempotency_key")?,
        handler_version: row.try_get("handler_version")?,
        metadata: parse_json("metadata", row.try_get("metadata")?)?,
        retry_policy: retry_policy_from_row(row)?,
    })
}

fn task_type_from_row(row: &SqliteRow) -> Result<TaskType> {
    Ok(TaskType {
        task_type: row.try_get("task_type")?,
        domain: row.try_get("domain")?,
        description: row.try_get("description")?,
        versions: parse_json("versions", row.try_get("versions")?)?,
        capabilities: parse_json("capabilities", row.try_get("capabilities")?)?,
        default_max_attempts: row.try_get("default_max_attempts")?,
        default_timeout: millis_duration(row, "default_timeout_ms")?,
        default_retry_policy: retry_policy_from_row(row)?,
        registered_at: from_millis(row.try_get("registered_at")?)?,
        updated_at: from_millis(row.try_get("updated_at")?)?,
    })
}

async fn fetch_task(tx: &mut Transaction<'static, Sqlite>, id: Uuid) -> Result<Option<Task>> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?"
    )))
    .bind(id.to_string())
    .fetch_optional(&mut **tx)
    .await?;
    row.as_ref().map(task_from_row).transpose()
}

async fn fetch_task_type(
    tx: &mut Transaction<'static, Sqlite>,
    task_type: &str,
) -> Result<Option<TaskType>> {
    let row = sqlx::query("SELECT * FROM task_types WHERE task_type = ?")
        .bind(task_type.to_owned())
        .fetch_optional(&mut **tx)
        .await?;
    row.as_ref().map(task_type_from_row).transpose()
}

fn not_found(id: Uuid) -> Error {
    Error::NotFound(format!(
        "no task has id {id}: check the id returned by EnqueueTask"
    ))
}

/// Ends the attempt rows and returns the tasks that lost their lease to the
/// queue, or to DEAD when they have no attempts left.
async fn return_to_queue(
    tx: &mut Transaction<'static, Sqlite>,
    ids: &[String],
    reason: &str,
    now: i64,
) -> Result<()> {
    let ids_json = json_text(ids);
    sqlx::query(
        "UPDATE task_attempts SET finished_at = ?1, outcome = 'lost', error = ?2
         WHERE finished_at IS NULL AND (task_id, attempt) IN
           (SELECT id, attempts FROM tasks WHERE id IN (SELECT value FROM json_each(?3)))",
    )
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
async fn claim_type(
    tx: &mut Transaction<'static, Sqlite>,
    task_type: &str,
    limit: u32,
    lease: &Lease,
    now: i64,
) -> Result<Vec<Task>> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE tasks SET status = 'running', attempts = attempts + 1, started_at = ?1,
             updated_at = ?1, lease_session = ?2, lease_agent = ?3, lease_expires_at = ?4
         WHERE id IN (
             SELECT id FROM tasks
             WHERE status = 'pending' AND task_type = ?5 AND run_at <= ?1
             ORDER BY priority DESC, run_at, id LIMIT ?6)
         RETURNING {TASK_COLUMNS}"
    )))
    .bind(now)
    .bind(lease.session_id.to_string())
    .bind(lease.agent_id.to_string())
    .bind(millis(lease.expires_at))
    .bind(task_type.to_owned())
    .bind(limit)
    .fetch_all(&mut **tx)
    .await?;
    let mut tasks = rows.iter().map(task_from_row).collect::<Result<Vec<_>>>()?;
    // RETURNING does not keep the subquery's order.
    tasks.sort_by(|a, b| {
        b.priority
            .cmp(&a.priority)
            .then(a.run_at.cmp(&b.run_at))
            .then(a.id.cmp(&b.id))
    });
    Ok(tasks)
}

#[async_trait]
impl Store for SqliteStore {
    async fn register_task_types(&self, specs: &[TaskTypeSpec]) -> Result<Vec<TaskType>> {
        let now = millis(Utc::now());
        let mut tx = self.write().await?;
        let mut registered = Vec::with_capacity(specs.len());
        for spec in specs {
            let existing = fetch_task_type(&mut tx, &spec.task_type).await?;
            if let Some(existing) = &existing
                && existing.domain != spec.domain
            {
                return Err(Error::AlreadyExists(format!(
                    "task type '{}' belongs to domain '{}', not '{}': rename the type or serve it \
                     from the '{}' domain",
                    spec.task_type, existing.domain, spec.domain, existing.domain
                )));
            }
            let max_attempts = spec
                .default_max_attempts
                .or(existing.as_ref().map(|t| t.default_max_attempts))
                .unwrap_or(self.default_max_attempts);
            let timeout = spec
                .default_timeout
                .or(existing.as_ref().map(|t| t.default_timeout))
                .unwrap_or(self.default_timeout);
            let retry = spec.default_retry_policy.apply_to(
                existing
                    .as_ref()
                    .map_or(self.default_retry_policy, |t| t.default_retry_policy),
            );
            let row = sqlx::query(
                "INSERT INTO task_types (task_type, domain, description, versions, capabilities,
                     default_max_attempts, default_timeout_ms, retry_initial_ms, retry_factor,
                     retry_max_ms, registered_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?9, ?10, ?11, ?8, ?8)
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
            .bind(max_attempts)
            .bind(duration_millis(timeout))
            .bind(now)
            .bind(duration_millis(retry.initial_backoff))
            .bind(retry.backoff_factor)
            .bind(duration_millis(retry.max_backoff))
            .fetch_one(&mut *tx)
            .await?;
            registered.push(task_type_from_row(&row)?);
        }
        tx.commit().await?;
        Ok(registered)
    }

    async fn get_task_type(&self, task_type: &str) -> Result<Option<TaskType>> {
        let row = sqlx::query("SELECT * FROM task_types WHERE task_type = ?")
            .bind(task_type.to_owned())
            .fetch_optional(&self.readers)
            .await?;
        row.as_ref().map(task_type_from_row).transpose()
    }

    async fn list_task_types(&self, domain: Option<&str>) -> Result<Vec<TaskType>> {
        let rows = sqlx::query(
            "SELECT * FROM task_types WHERE (?1 IS NULL OR domain = ?1) ORDER BY task_type",
        )
        .bind(domain.map(str::to_owned))
        .fetch_all(&self.readers)
        .await?;
        rows.iter().map(task_type_from_row).collect()
    }

    async fn enqueue(&self, tasks: Vec<NewTask>) -> Result<Vec<Enqueued>> {
        // Stored times have millisecond precision; answer with what is stored.
        let now = from_millis(millis(Utc::now()))?;
        let mut tx = self.write().await?;
        let mut types: BTreeMap<String, TaskType> = BTreeMap::new();
        let mut enqueued = Vec::with_capacity(tasks.len());
        for new in tasks {
            if !types.contains_key(&new.task_type) {
                let Some(task_type) = fetch_task_type(&mut tx, &new.task_type).await? else {
                    return Err(Error::FailedPrecondition(format!(
                        "task type '{}' is not registered: start an agent that serves it, or \
                         register it with RegistryService.RegisterTaskType",
                        new.task_type
                    )));
                };
                types.insert(new.task_type.clone(), task_type);
            }
            let task_type = &types[&new.task_type];
            if let Some(key) = &new.idempotency_key {
                let existing =
                    sqlx::query("SELECT id FROM tasks WHERE task_type = ? AND idempotency_key = ?")
                        .bind(new.task_type.clone())
                        .bind(key.clone())
                        .fetch_optional(&mut *tx)
                        .await?;
                if let Some(row) = existing {
                    let id = parse_uuid(row.try_get("id")?)?;
                    let task = fetch_task(&mut tx, id)
                        .await?
                        .ok_or_else(|| not_found(id))?;
                    enqueued.push(Enqueued {
                        task,
                        created: false,
                    });
                    continue;
                }
            }
            let task = Task {
                id: Uuid::now_v7(),
                domain: task_type.domain.clone(),
                status: TaskStatus::Pending,
                attempts: 0,
                max_attempts: new.max_attempts.unwrap_or(task_type.default_max_attempts),
                timeout: new.timeout.unwrap_or(task_type.default_timeout),
                run_at: new
                    .run_at
                    .map_or(Ok(now), |at| from_millis(millis(at)))?
                    .max(now),
                created_at: now,
                updated_at: now,
                started_at: None,
                finished_at: None,
                result: None,
                last_error: None,
                task_type: new.task_type,
                payload: new.payload,
                priority: new.priority,
                idempotency_key: new.idempotency_key,
                handler_version: new.handler_version,
                metadata: new.metadata,
                retry_policy: new.retry_policy.apply_to(task_type.default_retry_policy),
            };
            sqlx::query(
                "INSERT INTO tasks (id, task_type, domain, payload, status, priority, attempts,
                     max_attempts, timeout_ms, run_at, created_at, updated_at, idempotency_key,
                     handler_version, metadata, retry_initial_ms, retry_factor, retry_max_ms)
                 VALUES (?1, ?2, ?3, ?4, 'pending', ?5, 0, ?6, ?7, ?8, ?9, ?9, ?10, ?11, ?12,
                     ?13, ?14, ?15)",
            )
            .bind(task.id.to_string())
            .bind(task.task_type.clone())
            .bind(task.domain.clone())
            .bind(json_text(&task.payload))
            .bind(task.priority)
            .bind(task.max_attempts)
            .bind(duration_millis(task.timeout))
            .bind(millis(task.run_at))
            .bind(millis(now))
            .bind(task.idempotency_key.clone())
            .bind(task.handler_version.clone())
            .bind(json_text(&task.metadata))
            .bind(duration_millis(task.retry_policy.initial_backoff))
            .bind(task.retry_policy.backoff_factor)
            .bind(duration_millis(task.retry_policy.max_backoff))
            .execute(&mut *tx)
            .await?;
            enqueued.push(Enqueued {
                task,
                created: true,
            });
        }
        tx.commit().await?;
        Ok(enqueued)
    }

    async fn get_task(&self, id: Uuid) -> Result<Option<Task>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?"
        )))
        .bind(id.to_string())
        .fetch_optional(&self.readers)
        .await?;
        row.as_ref().map(task_from_row).transpose()
    }

    async fn list_attempts(&self, id: Uuid) -> Result<Vec<Attempt>> {
        let rows = sqlx::query("SELECT * FROM task_attempts WHERE task_id = ? ORDER BY attempt")
            .bind(id.to_string())
            .fetch_all(&self.readers)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(Attempt {
                    attempt: row.try_get("attempt")?,
                    agent_id: row.try_get("agent_id")?,
                    session_id: row.try_get("session_id")?,
                    started_at: from_millis(row.try_get("started_at")?)?,
                    finished_at: row
                        .try_get::<Option<i64>, _>("finished_at")?
                        .map(from_millis)
                        .transpose()?,
                    outcome: row.try_get("outcome")?,
                    error: row.try_get("error")?,
                })
            })
            .collect()
    }

    async fn list_tasks(&self, filter: &TaskFilter) -> Result<Vec<Task>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {TASK_COLUMNS} FROM tasks
             WHERE (?1 IS NULL OR task_type = ?1) AND (?2 IS NULL OR domain = ?2)
               AND (?3 IS NULL OR status = ?3) AND (?4 IS NULL OR id < ?4)
             ORDER BY id DESC LIMIT ?5"
        )))
        .bind(filter.task_type.clone())
        .bind(filter.domain.clone())
        .bind(filter.status.map(|s| s.as_str().to_owned()))
        .bind(filter.before.map(|id| id.to_string()))
        .bind(filter.limit)
        .fetch_all(&self.readers)
        .await?;
        rows.iter().map(task_from_row).collect()
    }

    async fn claim(&self, task_types: &[String], limit: u32, lease: &Lease) -> Result<Vec<Task>> {
        if limit == 0 || task_types.is_empty() {
            return Ok(Vec::new());
        }
        let now = millis(Utc::now());
        // Per-type fairness: each type gets an equal share of the slots first,
        // starting from a rotating type, so one type's flood cannot starve
        // another; slots a type leaves unused go to types with more waiting.
        let start = self.claim_rotation.fetch_add(1, Ordering::Relaxed) % task_types.len();
        let rotated: Vec<&String> = task_types[start..]
            .iter()
            .chain(&task_types[..start])
            .collect();
        let share = (limit / rotated.len() as u32).max(1);
        let mut tx = self.write().await?;
        let mut tasks = Vec::new();
        let mut more_waiting = Vec::new();
        for task_type in &rotated {
            let wanted = share.min(limit - tasks.len() as u32);
            if wanted == 0 {
                break;
            }
            let claimed = claim_type(&mut tx, task_type, wanted, lease, now).await?;
            if claimed.len() as u32 == wanted {
                more_waiting.push(*task_type);
            }
            tasks.extend(claimed);
        }
        for task_type in more_waiting {
            let wanted = limit - tasks.len() as u32;
            if wanted == 0 {
                break;
            }
            tasks.extend(claim_type(&mut tx, task_type, wanted, lease, now).await?);
        }
        if !tasks.is_empty() {
            let ids: Vec<String> = tasks.iter().map(|t| t.id.to_string()).collect();
            sqlx::query(
                "INSERT INTO task_attempts (task_id, attempt, agent_id, session_id, started_at)
                 SELECT id, attempts, lease_agent, lease_session, started_at FROM tasks
                 WHERE id IN (SELECT value FROM json_each(?1))",
            )
            .bind(json_text(&ids))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(tasks)
    }

    async fn finish_attempt(
        &self,
        id: Uuid,
        attempt: u32,
        result: AttemptResult,
    ) -> Result<ResultOutcome> {
        let now_at = Utc::now();
        let now = millis(now_at);
        let mut tx = self.write().await?;
        let Some(task) = fetch_task(&mut tx, id).await? else {
            return Ok(ResultOutcome::Stale);
        };
        if task.status != TaskStatus::Running || task.attempts != attempt {
            return Ok(ResultOutcome::Stale);
        }
        let (status, result_text, error, run_at) = match &result {
            AttemptResult::Completed(value) => (
                TaskStatus::Completed,
                Some(json_text(value)),
                None,
                task.run_at,
            ),
            AttemptResult::Failed {
                error,
                retryable,
                jitter,
            } => {
                if *retryable && task.attempts < task.max_attempts {
                    let delay = retry_delay(attempt, &task.retry_policy, *jitter);
                    let delay = chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
                    (
                        TaskStatus::Pending,
                        None,
                        Some(error.clone()),
                        now_at + delay,
                    )
                } else {
                    (TaskStatus::Dead, None, Some(error.clone()), task.run_at)
                }
            }
        };
        // The status check above and this condition are the fence: only the
        // current attempt of a RUNNING task can finish it.
        sqlx::query(
            "UPDATE tasks SET status = ?1, result = ?2, last_error = ?3, run_at = ?4,
                 finished_at = CASE WHEN ?1 = 'pending' THEN NULL ELSE ?5 END, updated_at = ?5,
                 lease_session = NULL, lease_agent = NULL, lease_expires_at = NULL
             WHERE id = ?6 AND status = 'running' AND attempts = ?7",
        )
        .bind(status.as_str())
        .bind(result_text)
        .bind(error.clone())
        .bind(millis(run_at))
        .bind(now)
        .bind(id.to_string())
        .bind(attempt)
        .execute(&mut *tx)
        .await?;
        let outcome = if error.is_some() {
            "failed"
        } else {
            "completed"
        };
        sqlx::query(
            "UPDATE task_attempts SET finished_at = ?1, outcome = ?2, error = ?3
             WHERE task_id = ?4 AND attempt = ?5",
        )
        .bind(now)
        .bind(outcome)
        .bind(error)
        .bind(id.to_string())
        .bind(attempt)
        .execute(&mut *tx)
        .await?;
        let task = fetch_task(&mut tx, id)
            .await?
            .ok_or_else(|| not_found(id))?;
        tx.commit().await?;
        Ok(ResultOutcome::Applied(Box::new(task)))
    }

    async fn release_session(&self, session_id: Uuid) -> Result<Vec<Uuid>> {
        let now = millis(Utc::now());
        let mut tx = self.write().await?;
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM tasks WHERE status = 'running' AND lease_session = ?",
        )
        .bind(session_id.to_string())
        .fetch_all(&mut *tx)
        .await?;
        if !ids.is_empty() {
            return_to_queue(
                &mut tx,
                &ids,
                "the agent's stream closed while it ran this attempt",
                now,
            )
            .await?;
        }
        tx.commit().await?;
        ids.iter().map(|id| parse_uuid(id)).collect()
    }

    async fn extend_leases(&self, session_ids: &[Uuid], expires_at: DateTime<Utc>) -> Result<()> {
        if session_ids.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = session_ids.iter().map(Uuid::to_string).collect();
        let mut tx = self.write().await?;
        sqlx::query(
            "UPDATE tasks SET lease_expires_at = ?1
             WHERE status = 'running' AND lease_session IN (SELECT value FROM json_each(?2))",
        )
        .bind(millis(expires_at))
        .bind(json_text(&ids))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn reap_expired_leases(&self, now: DateTime<Utc>) -> Result<Vec<Uuid>> {
        let now = millis(now);
        let mut tx = self.write().await?;
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM tasks WHERE status = 'running' AND lease_expires_at < ?",
        )
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        if !ids.is_empty() {
            return_to_queue(
                &mut tx,
                &ids,
                "the lease expired before the agent reported",
                now,
            )
            .await?;
        }
        tx.commit().await?;
        ids.iter().map(|id| parse_uuid(id)).collect()
    }

    async fn cancel(&self, id: Uuid, reason: &str) -> Result<(Task, Task)> {
        let now = millis(Utc::now());
        let mut tx = self.write().await?;
        let before = fetch_task(&mut tx, id)
            .await?
            .ok_or_else(|| not_found(id))?;
        if before.status.is_terminal() {
            return Err(Error::FailedPrecondition(format!(
                "task {id} is already {}: only PENDING or RUNNING tasks can be cancelled",
                before.status.as_str().to_uppercase()
            )));
        }
        sqlx::query(
            "UPDATE tasks SET status = 'cancelled', last_error = ?1, finished_at = ?2,
                 updated_at = ?2, lease_session = NULL, lease_agent = NULL, lease_expires_at = NULL
             WHERE id = ?3",
        )
        .bind(reason.to_owned())
        .bind(now)
        .bind(id.to_string())
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE task_attempts SET finished_at = ?1, outcome = 'cancelled', error = ?2
             WHERE task_id = ?3 AND finished_at IS NULL",
        )
        .bind(now)
        .bind(reason.to_owned())
        .bind(id.to_string())
        .execute(&mut *tx)
        .await?;
        let after = fetch_task(&mut tx, id)
            .await?
            .ok_or_else(|| not_found(id))?;
        tx.commit().await?;
        Ok((before, after))
    }

    async fn retry(&self, id: Uuid) -> Result<Task> {
        let now = millis(Utc::now());
        let mut tx = self.write().await?;
        let task = fetch_task(&mut tx, id)
            .await?
            .ok_or_else(|| not_found(id))?;
        if !matches!(task.status, TaskStatus::Dead | TaskStatus::Cancelled) {
            return Err(Error::FailedPrecondition(format!(
                "task {id} is {}: only DEAD or CANCELLED tasks can be retried",
                task.status.as_str().to_uppercase()
            )));
        }
        let task_type = fetch_task_type(&mut tx, &task.task_type).await?;
        let fresh_attempts =
            task_type.map_or(self.default_max_attempts, |t| t.default_max_attempts);
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
            .ok_or_else(|| not_found(id))?;
        tx.commit().await?;
        Ok(task)
    }

    async fn record_session_start(&self, session: &AgentSessionRecord) -> Result<()> {
        let mut tx = self.write().await?;
        sqlx::query(
            "INSERT INTO agents (session_id, agent_id, agent_name, domains, labels,
                 max_concurrency, connected_at)
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(session.session_id.to_string())
        .bind(session.agent_id.to_string())
        .bind(session.agent_name.clone())
        .bind(json_text(&session.domains))
        .bind(json_text(&session.labels))
        .bind(session.max_concurrency)
        .bind(millis(session.connected_at))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn record_session_end(&self, session_id: Uuid) -> Result<()> {
        let mut tx = self.write().await?;
        sqlx::query("UPDATE agents SET disconnected_at = ? WHERE session_id = ?")
            .bind(millis(Utc::now()))
            .bind(session_id.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! Unit tests of the SQLite store on real database files.
    use super::*;
    use crate::model::JsonObject;

    async fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("nested/dir/t.db").display());
        let store = SqliteStore::open(&url, &QueueConfig::default())
            .await
            .unwrap();
        (dir, store)
    }

    fn spec(task_type: &str, domain: &str) -> TaskTypeSpec {
        TaskTypeSpec {
            task_type: task_type.into(),
            domain: domain.into(),
            description: String::new(),
            versions: vec!["v1".into()],
            capabilities: vec![],
            default_max_attempts: None,
            default_timeout: None,
            default_retry_policy: Default::default(),
        }
    }

    fn new_task(task_type: &str) -> NewTask {
        NewTask {
            task_type: task_type.into(),
            payload: JsonObject::new(),
            priority: 0,
            run_at: None,
            idempotency_key: None,
            max_attempts: None,
            timeout: None,
            handler_version: String::new(),
            metadata: BTreeMap::new(),
            retry_policy: Default::default(),
        }
    }

    fn lease() -> Lease {
        Lease {
            session_id: Uuid::now_v7(),
            agent_id: Uuid::now_v7(),
            expires_at: Utc::now() + chrono::Duration::seconds(30),
        }
    }

    #[tokio::test]
    async fn registration_with_a_conflicting_entry_writes_nothing() {
        let (_dir, store) = store().await;
        store
            .register_task_types(&[spec("invoice_generation", "billing")])
            .await
            .unwrap();
        let err = store
            .register_task_types(&[
                spec("welcome_email", "user_management"),
                spec("invoice_generation", "user_management"),
            ])
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::AlreadyExists(ref m) if m.contains("belongs to domain 'billing'")),
            "{err}"
        );
        assert!(
            store
                .get_task_type("welcome_email")
                .await
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn claim_orders_by_priority_then_age_and_fences_stale_results() {
        let (_dir, store) = store().await;
        store.register_task_types(&[spec("a", "d")]).await.unwrap();
        let mut low = new_task("a");
        low.priority = 1;
        let mut high = new_task("a");
        high.priority = 5;
        let enqueued = store.enqueue(vec![low, high]).await.unwrap();
        let claimed = store.claim(&["a".into()], 10, &lease()).await.unwrap();
        assert_eq!(claimed.len(), 2);
        assert_eq!(claimed[0].id, enqueued[1].task.id, "higher priority first");
        assert_eq!(claimed[0].attempts, 1);

        let first = claimed[0].id;
        let stale = store
            .finish_attempt(first, 7, AttemptResult::Completed(JsonObject::new()))
            .await
            .unwrap();
        assert_eq!(stale, ResultOutcome::Stale);
        let done = store
            .finish_attempt(first, 1, AttemptResult::Completed(JsonObject::new()))
            .await
            .unwrap();
        assert!(matches!(done, ResultOutcome::Applied(ref t) if t.status == TaskStatus::Completed));
    }

    #[tokio::test]
    async fn released_sessions_return_tasks_and_exhausted_ones_die() {
        let (_dir, store) = store().await;
        store.register_task_types(&[spec("a", "d")]).await.unwrap();
        let mut once = new_task("a");
        once.max_attempts = Some(1);
        store.enqueue(vec![new_task("a"), once]).await.unwrap();
        let lease = lease();
        let claimed = store.claim(&["a".into()], 10, &lease).await.unwrap();
        assert_eq!(
            store.release_session(lease.session_id).await.unwrap().len(),
            2
        );
        let statuses: Vec<TaskStatus> = statuses_of(&store, &claimed).await;
        assert_eq!(statuses, vec![TaskStatus::Pending, TaskStatus::Dead]);
    }

    #[tokio::test]
    async fn one_types_flood_does_not_starve_another() {
        let (_dir, store) = store().await;
        store
            .register_task_types(&[spec("flood", "d"), spec("trickle", "d")])
            .await
            .unwrap();
        store
            .enqueue((0..50).map(|_| new_task("flood")).collect())
            .await
            .unwrap();
        store
            .enqueue(vec![new_task("trickle"), new_task("trickle")])
            .await
            .unwrap();
        let types = ["flood".to_string(), "trickle".to_string()];
        let claimed = store.claim(&types, 4, &lease()).await.unwrap();
        let trickle = claimed.iter().filter(|t| t.task_type == "trickle").count();
        assert_eq!(
            (claimed.len(), trickle),
            (4, 2),
            "the older flood must not take every slot"
        );
        // Unused shares go to the type with more waiting.
        let claimed = store.claim(&types, 10, &lease()).await.unwrap();
        assert!(claimed.iter().all(|t| t.task_type == "flood") && claimed.len() == 10);
    }

    async fn statuses_of(store: &SqliteStore, tasks: &[Task]) -> Vec<TaskStatus> {
        let mut statuses = Vec::new();
        for task in tasks {
            statuses.push(store.get_task(task.id).await.unwrap().unwrap().status);
        }
        statuses
    }
}
