//! [`Shared`]: every statement both databases share, run over an executor
//! of either.

use std::marker::PhantomData;

use chrono::{DateTime, Utc};
use sqlx::{Encode, Executor, IntoArguments, Type};
use uuid::Uuid;

use super::Dialect;
use crate::auth::tokens::{IssuedToken, TokenRecord};
use crate::engine::flow::FlowChange;
use crate::error::{Error, Result};
use crate::model::{
    AgentSession, Attempt, Progress, Task, TaskFilter, TaskSelector, TaskType, TaskTypeSpec,
    TypeStats,
};
use crate::store::rows::{self, Columns, duration_millis, json_text, millis, parse_uuid};
use crate::store::rules::{self, TypeDefaults};

/// The shared statements, run over executors of database `DB`.
pub struct Shared<DB>(PhantomData<DB>);

impl<DB> Shared<DB>
where
    DB: Dialect,
    DB::Row: Columns,
    DB::Arguments: IntoArguments<DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> f64: Encode<'q, DB> + Type<DB>,
{
    /// One task, if it exists; `locked` keeps its row for the transaction.
    pub async fn fetch_task<'e>(
        executor: impl Executor<'e, Database = DB>,
        id: Uuid,
        locked: bool,
    ) -> Result<Option<Task>> {
        let sql = DB::statements().fetch_task(locked);
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id.to_string())
            .fetch_optional(executor)
            .await?;
        row.as_ref().map(rows::task).transpose()
    }

    /// One task type, if registered.
    pub async fn fetch_task_type<'e>(
        executor: impl Executor<'e, Database = DB>,
        task_type: &str,
    ) -> Result<Option<TaskType>> {
        let row = sqlx::query("SELECT * FROM task_types WHERE task_type = $1")
            .bind(task_type.to_owned())
            .fetch_optional(executor)
            .await?;
        row.as_ref().map(rows::task_type).transpose()
    }

    /// Every registered task type (of one domain, if given), by name.
    pub async fn list_task_types<'e>(
        executor: impl Executor<'e, Database = DB>,
        domain: Option<&str>,
    ) -> Result<Vec<TaskType>> {
        let rows = sqlx::query(
            "SELECT * FROM task_types WHERE (CAST($1 AS TEXT) IS NULL OR domain = $1)
             ORDER BY task_type",
        )
        .bind(domain.map(str::to_owned))
        .fetch_all(executor)
        .await?;
        rows.iter().map(rows::task_type).collect()
    }

    /// Registers or updates task types inside the caller's transaction. A
    /// type that belongs to another domain fails `AlreadyExists`: the
    /// upsert's `WHERE` also keeps a concurrent registration from another
    /// domain from being overwritten, and no row comes back.
    pub async fn register_task_types(
        connection: &mut DB::Connection,
        specs: &[TaskTypeSpec],
        defaults: &TypeDefaults,
    ) -> Result<Vec<TaskType>> {
        let now = millis(Utc::now());
        let mut registered = Vec::with_capacity(specs.len());
        for spec in specs {
            let existing = Self::fetch_task_type(&mut *connection, &spec.task_type).await?;
            if let Some(existing) = &existing
                && existing.domain != spec.domain
            {
                return Err(rules::domain_conflict(spec, &existing.domain));
            }
            let settings = rules::merged_defaults(spec, existing.as_ref(), defaults);
            let row = sqlx::query(
                "INSERT INTO task_types (task_type, domain, description, versions, capabilities,
                     default_max_attempts, default_timeout_ms, retry_initial_ms, retry_factor,
                     retry_max_ms, registered_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11)
                 ON CONFLICT (task_type) DO UPDATE SET
                     description = excluded.description, versions = excluded.versions,
                     capabilities = excluded.capabilities,
                     default_max_attempts = excluded.default_max_attempts,
                     default_timeout_ms = excluded.default_timeout_ms,
                     retry_initial_ms = excluded.retry_initial_ms,
                     retry_factor = excluded.retry_factor,
                     retry_max_ms = excluded.retry_max_ms,
                     updated_at = excluded.updated_at
                 WHERE task_types.domain = excluded.domain
                 RETURNING *",
            )
            .bind(spec.task_type.clone())
            .bind(spec.domain.clone())
            .bind(spec.description.clone())
            .bind(json_text(&rules::declared_versions(
                spec,
                existing.as_ref(),
            )))
            .bind(json_text(&spec.capabilities))
            .bind(i64::from(settings.max_attempts))
            .bind(duration_millis(settings.timeout))
            .bind(duration_millis(settings.retry_policy.initial_backoff))
            .bind(settings.retry_policy.backoff_factor)
            .bind(duration_millis(settings.retry_policy.max_backoff))
            .bind(now)
            .fetch_optional(&mut *connection)
            .await?;
            match row {
                Some(row) => {
                    let stored = rows::task_type(&row)?;
                    registered.push(match &spec.flow {
                        Some(change) if change.apply_to(&stored.flow)? != stored.flow => {
                            Self::set_flow_policy(&mut *connection, &spec.task_type, change).await?
                        }
                        _ => stored,
                    });
                }
                None => {
                    let owner = Self::fetch_task_type(&mut *connection, &spec.task_type)
                        .await?
                        .map(|t| t.domain)
                        .unwrap_or_default();
                    return Err(rules::domain_conflict(spec, &owner));
                }
            }
        }
        Ok(registered)
    }

    /// Applies `change` to a registered type's flow-control policy inside
    /// the caller's transaction; `FailedPrecondition` for an unregistered
    /// type, `InvalidArgument` for limits that do not fit together.
    pub async fn set_flow_policy(
        connection: &mut DB::Connection,
        task_type: &str,
        change: &FlowChange,
    ) -> Result<TaskType> {
        let existing = Self::fetch_task_type(&mut *connection, task_type)
            .await?
            .ok_or_else(|| rules::unregistered(task_type))?;
        let policy = change.apply_to(&existing.flow)?;
        // A new rate for the type starts with an empty bucket: setting a
        // limit never lets a burst through. Buckets per key, counted
        // under another rate or key, are dropped: each key starts full,
        // as a key never seen does (one second's worth at most).
        let new_rate = policy.rate_limit != existing.flow.rate_limit
            || policy.rate_limit_key != existing.flow.rate_limit_key;
        if new_rate {
            sqlx::query("DELETE FROM rate_buckets WHERE task_type = $1")
                .bind(task_type.to_owned())
                .execute(&mut *connection)
                .await?;
        }
        let row = sqlx::query(
            "UPDATE task_types SET paused = $2, max_running = NULLIF($3, 0),
                 concurrency_key = $4, max_running_per_key = NULLIF($5, 0),
                 rate_limit = NULLIF($6, 0), rate_window_ms = NULLIF($7, 0),
                 rate_tokens = CASE WHEN $8 = 1 THEN 0 ELSE rate_tokens END,
                 rate_refilled_at = CASE WHEN $8 = 1 THEN $9 ELSE rate_refilled_at END,
                 refuse_enqueues = $10, rate_limit_key = $11
             WHERE task_type = $1 RETURNING *",
        )
        .bind(task_type.to_owned())
        .bind(i64::from(policy.paused))
        .bind(i64::from(policy.max_running.unwrap_or(0)))
        .bind(policy.concurrency_key.as_ref().map(ToString::to_string))
        .bind(i64::from(policy.max_running_per_key.unwrap_or(0)))
        .bind(i64::from(policy.rate_limit.map_or(0, |rate| rate.count)))
        .bind(
            policy
                .rate_limit
                .map_or(0, |rate| duration_millis(rate.per)),
        )
        .bind(i64::from(new_rate))
        .bind(millis(Utc::now()))
        .bind(i64::from(policy.refuse_enqueues))
        .bind(policy.rate_limit_key.as_ref().map(ToString::to_string))
        .fetch_one(&mut *connection)
        .await?;
        rows::task_type(&row)
    }

    /// Every attempt of a task, oldest first.
    pub async fn list_attempts<'e>(
        executor: impl Executor<'e, Database = DB>,
        id: Uuid,
    ) -> Result<Vec<Attempt>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(DB::statements().attempts.as_str()))
            .bind(id.to_string())
            .fetch_all(executor)
            .await?;
        rows.iter().map(rows::attempt).collect()
    }

    /// Task counts per type and status (see `Store::queue_stats`).
    pub async fn queue_stats<'e>(
        executor: impl Executor<'e, Database = DB>,
        domain: Option<&str>,
        since: DateTime<Utc>,
    ) -> Result<Vec<TypeStats>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(DB::statements().queue_stats()))
            .bind(domain.map(str::to_owned))
            .bind(since.timestamp())
            .fetch_all(executor)
            .await?;
        rows::queue_stats(&rows)
    }

    /// Tasks matching the filter, newest first (see [`rules::task_listing`]),
    /// from the dialect's window first when it has one.
    pub async fn list_tasks(pool: &sqlx::Pool<DB>, filter: &TaskFilter) -> Result<Vec<Task>> {
        if let Some((window, rows)) = DB::listing_window(filter) {
            // The oldest task of the window: the `rows`-th newest of the
            // type below the page's start.
            let edge = TaskFilter {
                task_type: filter.task_type.clone(),
                before: filter.before,
                limit: 1,
                ..TaskFilter::default()
            };
            let offset = format!(" OFFSET {}", rows.saturating_sub(1));
            let edge = Self::listing(pool, window, &edge, &offset).await?;
            let windowed = TaskFilter {
                from_id: edge.first().map(|task| task.id),
                ..filter.clone()
            };
            let found = Self::listing(pool, window, &windowed, "").await?;
            // A full page, or the whole type fits in the window.
            if found.len() as u32 == filter.limit || edge.is_empty() {
                return Ok(found);
            }
        }
        Self::listing(pool, DB::listing_source(filter), filter, "").await
    }

    /// `filter`'s listing read from `source`, with `tail` after its limit.
    async fn listing(
        pool: &sqlx::Pool<DB>,
        source: &str,
        filter: &TaskFilter,
        tail: &str,
    ) -> Result<Vec<Task>> {
        let statements = DB::statements();
        let (listing, values) = rules::task_listing(filter, statements.id_cast);
        let sql = format!(
            "SELECT {} FROM {source} {listing}{tail}",
            statements.task_columns
        );
        let query = values
            .into_iter()
            .fold(sqlx::query(sqlx::AssertSqlSafe(sql)), |query, value| {
                query.bind(value)
            });
        let rows = query.bind(i64::from(filter.limit)).fetch_all(pool).await?;
        rows.iter().map(rows::task).collect()
    }

    /// Ends task `id`'s attempt `attempt` at `now` (Unix milliseconds) with
    /// `outcome` and `error`, from the task row (see [`end_attempts_sql`]).
    pub async fn end_one_attempt(
        connection: &mut DB::Connection,
        id: Uuid,
        attempt: u32,
        now: i64,
        outcome: &str,
        error: Option<String>,
    ) -> Result<()> {
        sqlx::query(sqlx::AssertSqlSafe(DB::statements().end_one_attempt()))
            .bind(now)
            .bind(outcome.to_owned())
            .bind(error)
            .bind(id.to_string())
            .bind(i64::from(attempt))
            .execute(connection)
            .await?;
        Ok(())
    }

    /// Cancels a PENDING or RUNNING task inside the caller's transaction,
    /// ending its current attempt `cancelled`. Returns the task before and
    /// after.
    pub async fn cancel(
        connection: &mut DB::Connection,
        id: Uuid,
        reason: &str,
    ) -> Result<(Task, Task)> {
        let now = millis(Utc::now());
        let before = Self::fetch_task(&mut *connection, id, true)
            .await?
            .ok_or_else(|| rules::not_found(id))?;
        rules::check_cancellable(&before)?;
        let reason = reason.to_owned();
        Self::end_one_attempt(
            connection,
            id,
            before.attempts,
            now,
            "cancelled",
            Some(reason.clone()),
        )
        .await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(DB::statements().cancel.as_str()))
            .bind(reason)
            .bind(now)
            .bind(id.to_string())
            .fetch_one(&mut *connection)
            .await?;
        Ok((before, rows::task(&row)?))
    }

    /// Up to `limit` ids of the tasks `selector` matches, after `after`,
    /// in id order: one page of a bulk operation.
    pub async fn select_task_ids<'e>(
        executor: impl Executor<'e, Database = DB>,
        selector: &TaskSelector,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<Uuid>> {
        let text = selector.error_contains.clone().unwrap_or_default();
        let pattern = rules::like_pattern(&text);
        let rows = sqlx::query(sqlx::AssertSqlSafe(DB::statements().select_ids()))
            .bind(selector.task_type.clone())
            .bind(selector.status.as_str().to_owned())
            .bind(selector.created_after.map_or(i64::MIN, millis))
            .bind(selector.created_before.map_or(i64::MAX, millis))
            .bind(text)
            .bind(pattern)
            .bind(after.unwrap_or(Uuid::nil()).to_string())
            .bind(i64::from(limit))
            .fetch_all(executor)
            .await?;
        rows.iter()
            .map(|row| rows::parse_uuid(&row.text("id")?))
            .collect()
    }

    /// Retries each of `ids` that is still DEAD, CANCELLED or EXPIRED, inside the
    /// caller's transaction; skips the rest (they changed meanwhile).
    pub async fn retry_many(
        connection: &mut DB::Connection,
        ids: &[Uuid],
        defaults: &TypeDefaults,
    ) -> Result<Vec<Task>> {
        let mut retried = Vec::with_capacity(ids.len());
        for id in ids {
            retried.extend(unless_changed(
                Self::retry(&mut *connection, *id, defaults).await,
            )?);
        }
        Ok(retried)
    }

    /// Cancels each of `ids` that is still PENDING or RUNNING, inside the
    /// caller's transaction; skips the rest. Returns each as it was and is.
    pub async fn cancel_many(
        connection: &mut DB::Connection,
        ids: &[Uuid],
        reason: &str,
    ) -> Result<Vec<(Task, Task)>> {
        let mut cancelled = Vec::with_capacity(ids.len());
        for id in ids {
            cancelled.extend(unless_changed(
                Self::cancel(&mut *connection, *id, reason).await,
            )?);
        }
        Ok(cancelled)
    }

    /// Deletes each of `ids` that is finished, with its attempts, inside the
    /// caller's transaction; returns how many went.
    pub async fn purge_many(connection: &mut DB::Connection, ids: &[Uuid]) -> Result<u64> {
        let mut purged = 0;
        for id in ids {
            let deleted = sqlx::query(sqlx::AssertSqlSafe(DB::statements().purge_one()))
                .bind(id.to_string())
                .fetch_optional(&mut *connection)
                .await?;
            if deleted.is_some() {
                sqlx::query("DELETE FROM task_attempts WHERE task_id = $1")
                    .bind(id.to_string())
                    .execute(&mut *connection)
                    .await?;
                purged += 1;
            }
        }
        Ok(purged)
    }

    /// Lets the task that took `key` for `task_type` before `created_before`
    /// let go of it, inside the caller's transaction: the key's window has
    /// passed, so an enqueue with it makes a new task.
    pub async fn release_expired_key(
        connection: &mut DB::Connection,
        task_type: &str,
        key: &str,
        created_before: DateTime<Utc>,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE tasks SET idempotency_key = NULL
             WHERE task_type = $1 AND idempotency_key = $2 AND created_at < $3",
        )
        .bind(task_type.to_owned())
        .bind(key.to_owned())
        .bind(millis(created_before))
        .execute(&mut *connection)
        .await?;
        Ok(())
    }

    /// Keeps the progress attempt `attempt` of task `id` reported; false
    /// when that attempt no longer runs (the fence), which changes nothing.
    pub async fn record_progress(
        connection: &mut DB::Connection,
        id: Uuid,
        attempt: u32,
        progress: &Progress,
    ) -> Result<bool> {
        let progress = serde_json::to_string(progress).expect("progress serializes");
        let row = sqlx::query(sqlx::AssertSqlSafe(DB::statements().record_progress()))
            .bind(progress)
            .bind(id.to_string())
            .bind(i64::from(attempt))
            .fetch_optional(&mut *connection)
            .await?;
        Ok(row.is_some())
    }

    /// Whether any PENDING task's deadline to start by has passed at `now`.
    pub async fn any_overdue<'e>(
        executor: impl Executor<'e, Database = DB>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let row = sqlx::query(
            "SELECT 1 FROM tasks
             WHERE status = 'pending' AND start_by IS NOT NULL AND start_by <= $1 LIMIT 1",
        )
        .bind(millis(now))
        .fetch_optional(executor)
        .await?;
        Ok(row.is_some())
    }

    /// Ends EXPIRED up to `limit` PENDING tasks not started by their
    /// `start_by`, the earliest deadlines first; returns their ids and
    /// types.
    pub async fn expire_overdue(
        connection: &mut DB::Connection,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<(Uuid, String)>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(DB::statements().expire_overdue()))
            .bind(millis(now))
            .bind(rules::EXPIRED_ERROR.to_owned())
            .bind(i64::from(limit))
            .fetch_all(&mut *connection)
            .await?;
        rows.iter()
            .map(|row| Ok((parse_uuid(&row.text("id")?)?, row.text("task_type")?)))
            .collect()
    }

    /// Puts a DEAD, CANCELLED or EXPIRED task back in the queue inside the caller's
    /// transaction, with its type's attempts (or `defaults`') afresh.
    pub async fn retry(
        connection: &mut DB::Connection,
        id: Uuid,
        defaults: &TypeDefaults,
    ) -> Result<Task> {
        let task = Self::fetch_task(&mut *connection, id, true)
            .await?
            .ok_or_else(|| rules::not_found(id))?;
        rules::check_retryable(&task)?;
        let fresh_attempts = Self::fetch_task_type(&mut *connection, &task.task_type)
            .await?
            .map_or(defaults.max_attempts, |t| t.default_max_attempts);
        let row = sqlx::query(sqlx::AssertSqlSafe(DB::statements().retry.as_str()))
            .bind(i64::from(fresh_attempts))
            .bind(millis(Utc::now()))
            .bind(id.to_string())
            .fetch_one(&mut *connection)
            .await?;
        if let Some(announce) = DB::statements().announce_ready {
            sqlx::query(announce)
                .bind(task.task_type.clone())
                .execute(&mut *connection)
                .await?;
        }
        rows::task(&row)
    }

    /// Returns to the queue, inside the caller's transaction, a task leased
    /// to `session_id` at `attempt` that its agent gave back unstarted: as
    /// if the claim never happened, its attempt uncounted. Answers the
    /// task's type, or `None` when that lease is no longer current.
    pub async fn give_back(
        connection: &mut DB::Connection,
        id: Uuid,
        attempt: u32,
        session_id: Uuid,
    ) -> Result<Option<String>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(DB::statements().give_back()))
            .bind(millis(Utc::now()))
            .bind(id.to_string())
            .bind(i64::from(attempt))
            .bind(session_id.to_string())
            .fetch_optional(&mut *connection)
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let task_type = row.text("task_type")?;
        sqlx::query("DELETE FROM task_attempts WHERE task_id = $1 AND attempt = $2")
            .bind(id.to_string())
            .bind(i64::from(attempt))
            .execute(&mut *connection)
            .await?;
        if let Some(announce) = DB::statements().announce_ready {
            sqlx::query(announce)
                .bind(task_type.clone())
                .execute(&mut *connection)
                .await?;
        }
        Ok(Some(task_type))
    }

    /// Records that an agent session registered.
    pub async fn record_session_start<'e>(
        executor: impl Executor<'e, Database = DB>,
        session: &AgentSession,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO agents (session_id, agent_id, agent_name, domains, task_types, labels,
                 feature_flags, connected_at, last_seen_at, status, handler_versions)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9, $10)",
        )
        .bind(session.session_id.to_string())
        .bind(session.agent_id.to_string())
        .bind(session.agent_name.clone())
        .bind(json_text(&session.domains))
        .bind(json_text(&session.task_types))
        .bind(json_text(&session.labels))
        .bind(json_text(&session.feature_flags))
        .bind(millis(session.connected_at))
        .bind(json_text(&session.status))
        .bind(json_text(&session.handler_versions))
        .execute(executor)
        .await?;
        Ok(())
    }

    /// Records that an agent session ended.
    pub async fn record_session_end<'e>(
        executor: impl Executor<'e, Database = DB>,
        session_id: Uuid,
    ) -> Result<()> {
        sqlx::query("UPDATE agents SET disconnected_at = $1 WHERE session_id = $2")
            .bind(millis(Utc::now()))
            .bind(session_id.to_string())
            .execute(executor)
            .await?;
        Ok(())
    }

    /// Rewrites the health probe's one row: proof that writes commit.
    pub async fn probe<'e>(executor: impl Executor<'e, Database = DB>) -> Result<()> {
        sqlx::query(
            "INSERT INTO health_probe (id, probed_at) VALUES (1, $1)
             ON CONFLICT (id) DO UPDATE SET probed_at = excluded.probed_at",
        )
        .bind(millis(Utc::now()))
        .execute(executor)
        .await?;
        Ok(())
    }

    /// Asks the replica that owns a live session to drain it.
    pub async fn request_drain<'e>(
        executor: impl Executor<'e, Database = DB>,
        session_id: Uuid,
    ) -> Result<()> {
        sqlx::query("UPDATE agents SET drain_requested = 1 WHERE session_id = $1")
            .bind(session_id.to_string())
            .execute(executor)
            .await?;
        Ok(())
    }

    /// The live sessions some replica asked to drain.
    pub async fn drains_requested<'e>(
        executor: impl Executor<'e, Database = DB>,
    ) -> Result<Vec<Uuid>> {
        let rows = sqlx::query(
            "SELECT session_id FROM agents WHERE drain_requested = 1 AND disconnected_at IS NULL",
        )
        .fetch_all(executor)
        .await?;
        rows.iter()
            .map(|row| rows::parse_uuid(&row.text("session_id")?))
            .collect()
    }

    /// Sessions that have not ended and were refreshed since `seen_since`.
    pub async fn live_sessions<'e>(
        executor: impl Executor<'e, Database = DB>,
        seen_since: DateTime<Utc>,
    ) -> Result<Vec<AgentSession>> {
        let rows = sqlx::query(
            "SELECT * FROM agents WHERE disconnected_at IS NULL AND last_seen_at >= $1
             ORDER BY session_id",
        )
        .bind(millis(seen_since))
        .fetch_all(executor)
        .await?;
        rows.iter().map(rows::agent_session).collect()
    }

    /// Keeps a new token's record and hash.
    pub async fn create_token<'e>(
        executor: impl Executor<'e, Database = DB>,
        token: &IssuedToken,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO api_tokens (id, name, role, domains, sha256, created_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(token.record.id.clone())
        .bind(token.record.name.clone())
        .bind(token.record.role.as_str().to_owned())
        .bind(json_text(&token.record.domains.to_list()))
        .bind(token.sha256.clone())
        .bind(millis(token.record.created_at))
        .execute(executor)
        .await?;
        Ok(())
    }

    /// Marks a token revoked; false if no live token has this id.
    pub async fn revoke_token<'e>(
        executor: impl Executor<'e, Database = DB>,
        id: &str,
    ) -> Result<bool> {
        let revoked = sqlx::query(
            "UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL
             RETURNING id",
        )
        .bind(millis(Utc::now()))
        .bind(id.to_owned())
        .fetch_optional(executor)
        .await?;
        Ok(revoked.is_some())
    }

    /// Every token, revoked ones included, oldest first.
    pub async fn list_tokens<'e>(
        executor: impl Executor<'e, Database = DB>,
    ) -> Result<Vec<TokenRecord>> {
        let rows = sqlx::query("SELECT * FROM api_tokens ORDER BY created_at, id")
            .fetch_all(executor)
            .await?;
        rows.iter().map(rows::token_record).collect()
    }

    /// The token whose SHA-256 is `sha256`, revoked or not.
    pub async fn find_token<'e>(
        executor: impl Executor<'e, Database = DB>,
        sha256: &str,
    ) -> Result<Option<TokenRecord>> {
        let row = sqlx::query("SELECT * FROM api_tokens WHERE sha256 = $1")
            .bind(sha256.to_owned())
            .fetch_optional(executor)
            .await?;
        row.as_ref().map(rows::token_record).transpose()
    }
}

/// What a one-task change inside a bulk operation did: `None` when the
/// task was gone or no longer in a state the change takes (it changed
/// since it was selected), which the batch skips.
fn unless_changed<T>(outcome: Result<T>) -> Result<Option<T>> {
    match outcome {
        Ok(changed) => Ok(Some(changed)),
        Err(Error::FailedPrecondition(_) | Error::NotFound(_)) => Ok(None),
        Err(error) => Err(error),
    }
}
