//! The SQL both databases share, written once.
//!
//! Both schemas store the same columns (times and durations as Unix
//! milliseconds, JSON and ids readable as text), and both accept `$1`-style
//! placeholders, so most statements differ only in a few spellings: how a
//! bound text id becomes `tasks.id` (`$1` or `$1::uuid`), how a task's
//! columns are selected as text, whether a read locks its rows, and where
//! live tasks are counted from. A backend names those spellings once
//! ([`Spelling`]) and gets every statement built from them ([`Statements`]);
//! [`Shared`] runs them over any sqlx executor of that database.
//!
//! What really differs stays in the backend's folder: SQLite's writer
//! thread, its multi-row inserts and set-based expiry by id lists;
//! PostgreSQL's `SKIP LOCKED` claims, `UNNEST` inserts and `LISTEN/NOTIFY`.

use std::marker::PhantomData;
use std::ops::DerefMut;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{Connection, Database, Encode, Executor, IntoArguments, Pool, Type};
use uuid::Uuid;

use super::rows::{self, Columns, duration_millis, json_text, millis};
use super::rules::{self, TypeDefaults};
use crate::auth::tokens::{IssuedToken, TokenRecord};
use crate::error::Result;
use crate::model::{AgentSession, Attempt, Task, TaskFilter, TaskType, TaskTypeSpec, TypeStats};

/// How one database spells what differs in the shared SQL.
pub struct Spelling {
    /// The columns of a whole task, as [`rows::task`] reads them.
    pub task_columns: &'static str,
    /// `tasks.id` as text (`task_attempts.task_id` is text on both).
    pub id_text: &'static str,
    /// The cast that makes a bound text id comparable with `tasks.id`.
    pub id_cast: &'static str,
    /// What ends a `SELECT` whose rows the transaction updates next.
    pub for_update: &'static str,
    /// Where PENDING tasks are counted from.
    pub pending_tasks: &'static str,
    /// Where RUNNING tasks are counted from.
    pub running_tasks: &'static str,
    /// What opens a write transaction.
    pub begin: &'static str,
    /// A statement that announces ready work of task type `$1` to other
    /// replicas when the transaction commits, where there are any.
    pub announce_ready: Option<&'static str>,
}

/// The shared statements in one database's spelling, built once per
/// backend (see [`Dialect::statements`]).
pub struct Statements {
    fetch_task: String,
    fetch_task_locked: String,
    cancel: String,
    retry: String,
    end_one_attempt: String,
    attempts: String,
    queue_stats: String,
    task_columns: &'static str,
    id_cast: &'static str,
    begin: &'static str,
    announce_ready: Option<&'static str>,
}

impl Statements {
    /// Builds every shared statement with `spelling`.
    pub fn new(spelling: &Spelling) -> Self {
        let Spelling {
            task_columns,
            id_text,
            id_cast,
            for_update,
            pending_tasks,
            running_tasks,
            begin,
            announce_ready,
        } = spelling;
        let fetch_task = format!("SELECT {task_columns} FROM tasks WHERE id = $1{id_cast}");
        Statements {
            fetch_task_locked: format!("{fetch_task}{for_update}"),
            fetch_task,
            cancel: format!(
                "UPDATE tasks SET status = 'cancelled', last_error = $1, finished_at = $2,
                     updated_at = $2, lease_session = NULL, lease_agent = NULL, lease_expires_at = NULL
                 WHERE id = $3{id_cast} RETURNING {task_columns}"
            ),
            retry: format!(
                "UPDATE tasks SET status = 'pending', max_attempts = attempts + $1, run_at = $2,
                     updated_at = $2, finished_at = NULL, result = NULL
                 WHERE id = $3{id_cast} RETURNING {task_columns}"
            ),
            end_one_attempt: end_attempts_sql(
                id_text,
                "$1",
                "$2",
                "$3",
                &format!("id = $4{id_cast} AND attempts = $5"),
            ),
            attempts: attempts_sql(&format!("$1{id_cast}"), "$1"),
            queue_stats: queue_stats_sql(pending_tasks, running_tasks),
            task_columns,
            id_cast,
            begin,
            announce_ready: *announce_ready,
        }
    }

    /// One task by id (`$1`); with `FOR UPDATE` where the database needs it
    /// to keep the row until the transaction ends.
    pub fn fetch_task(&self, locked: bool) -> &str {
        if locked {
            &self.fetch_task_locked
        } else {
            &self.fetch_task
        }
    }

    /// Ends task `$4`'s attempt `$5` at `$1` with outcome `$2` and error
    /// `$3`, from the task row (see [`end_attempts_sql`]).
    pub fn end_one_attempt(&self) -> &str {
        &self.end_one_attempt
    }

    /// The `queue_stats` query (`$1` the domain or NULL, `$2` the first
    /// second that counts as recent).
    pub fn queue_stats(&self) -> &str {
        &self.queue_stats
    }
}

/// A database taskplane stores in: its shared statements, and where a
/// listing reads from.
pub trait Dialect: Database {
    /// The shared statements in this database's spelling.
    fn statements() -> &'static Statements;

    /// Where a `ListTasks` listing of `filter` reads from: the table, or
    /// the table with an index named where the planner needs telling.
    fn listing_source(_filter: &TaskFilter) -> &'static str {
        "tasks"
    }
}

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
            .bind(json_text(&spec.versions))
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
                Some(row) => registered.push(rows::task_type(&row)?),
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

    /// Tasks matching the filter, newest first (see [`rules::task_listing`]).
    pub async fn list_tasks<'e>(
        executor: impl Executor<'e, Database = DB>,
        filter: &TaskFilter,
    ) -> Result<Vec<Task>> {
        let statements = DB::statements();
        let (listing, values) = rules::task_listing(filter, statements.id_cast);
        let sql = format!(
            "SELECT {} FROM {} {listing}",
            statements.task_columns,
            DB::listing_source(filter)
        );
        let query = values
            .into_iter()
            .fold(sqlx::query(sqlx::AssertSqlSafe(sql)), |query, value| {
                query.bind(value)
            });
        let rows = query
            .bind(i64::from(filter.limit))
            .fetch_all(executor)
            .await?;
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

    /// Puts a DEAD or CANCELLED task back in the queue inside the caller's
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

    /// Records that an agent session registered.
    pub async fn record_session_start<'e>(
        executor: impl Executor<'e, Database = DB>,
        session: &AgentSession,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO agents (session_id, agent_id, agent_name, domains, task_types, labels,
                 connected_at, last_seen_at, status)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8)",
        )
        .bind(session.session_id.to_string())
        .bind(session.agent_id.to_string())
        .bind(session.agent_name.clone())
        .bind(json_text(&session.domains))
        .bind(json_text(&session.task_types))
        .bind(json_text(&session.labels))
        .bind(millis(session.connected_at))
        .bind(json_text(&session.status))
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

/// The reads both databases serve the same way. [`Store`](super::Store)
/// answers its reads through a backend's [`Store::common`](super::Store::common).
#[async_trait]
pub trait Reads: Send + Sync {
    /// One task type, if registered.
    async fn task_type(&self, task_type: &str) -> Result<Option<TaskType>>;
    /// Every registered task type (of one domain, if given), by name.
    async fn task_types(&self, domain: Option<&str>) -> Result<Vec<TaskType>>;
    /// One task, if it exists.
    async fn task(&self, id: Uuid) -> Result<Option<Task>>;
    /// Every attempt of a task, oldest first.
    async fn attempts(&self, id: Uuid) -> Result<Vec<Attempt>>;
    /// Task counts per type and status.
    async fn queue_stats(
        &self,
        domain: Option<&str>,
        since: DateTime<Utc>,
    ) -> Result<Vec<TypeStats>>;
    /// Tasks matching the filter, newest first.
    async fn tasks(&self, filter: &TaskFilter) -> Result<Vec<Task>>;
    /// Sessions that have not ended and were refreshed since `seen_since`.
    async fn live_sessions(&self, seen_since: DateTime<Utc>) -> Result<Vec<AgentSession>>;
    /// Every token, oldest first.
    async fn tokens(&self) -> Result<Vec<TokenRecord>>;
    /// The token whose SHA-256 is `sha256`.
    async fn token(&self, sha256: &str) -> Result<Option<TokenRecord>>;
}

#[async_trait]
impl<DB, W> Reads for SharedStore<DB, W>
where
    DB: Dialect,
    DB::Row: Columns,
    DB::Arguments: IntoArguments<DB>,
    W: Send + Sync,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> f64: Encode<'q, DB> + Type<DB>,
{
    async fn task_type(&self, task_type: &str) -> Result<Option<TaskType>> {
        Shared::<DB>::fetch_task_type(&self.readers, task_type).await
    }

    async fn task_types(&self, domain: Option<&str>) -> Result<Vec<TaskType>> {
        Shared::<DB>::list_task_types(&self.readers, domain).await
    }

    async fn task(&self, id: Uuid) -> Result<Option<Task>> {
        Shared::<DB>::fetch_task(&self.readers, id, false).await
    }

    async fn attempts(&self, id: Uuid) -> Result<Vec<Attempt>> {
        Shared::<DB>::list_attempts(&self.readers, id).await
    }

    async fn queue_stats(
        &self,
        domain: Option<&str>,
        since: DateTime<Utc>,
    ) -> Result<Vec<TypeStats>> {
        Shared::<DB>::queue_stats(&self.readers, domain, since).await
    }

    async fn tasks(&self, filter: &TaskFilter) -> Result<Vec<Task>> {
        Shared::<DB>::list_tasks(&self.readers, filter).await
    }

    async fn live_sessions(&self, seen_since: DateTime<Utc>) -> Result<Vec<AgentSession>> {
        Shared::<DB>::live_sessions(&self.readers, seen_since).await
    }

    async fn tokens(&self) -> Result<Vec<TokenRecord>> {
        Shared::<DB>::list_tokens(&self.readers).await
    }

    async fn token(&self, sha256: &str) -> Result<Option<TokenRecord>> {
        Shared::<DB>::find_token(&self.readers, sha256).await
    }
}

/// The connection a backend's shared writes run on, held until dropped.
pub type Held<'a, DB> = Box<dyn DerefMut<Target = <DB as Database>::Connection> + Send + 'a>;

/// Where a backend's shared writes run: SQLite's one writer connection, or
/// a connection from PostgreSQL's pool.
#[async_trait]
pub trait Writer<DB: Database>: Send + Sync {
    /// Waits for the connection and holds it until the result is dropped.
    async fn hold(&self) -> Result<Held<'_, DB>>;
}

/// The writes both databases make the same way, each in one transaction.
/// [`Store`](super::Store) answers them through a backend's
/// [`Store::common`](super::Store::common).
#[async_trait]
pub trait Writes: Send + Sync {
    /// Registers or updates task types: all or none.
    async fn register_task_types(&self, specs: &[TaskTypeSpec]) -> Result<Vec<TaskType>>;
    /// Cancels a PENDING or RUNNING task; returns it before and after.
    async fn cancel(&self, id: Uuid, reason: &str) -> Result<(Task, Task)>;
    /// Puts a DEAD or CANCELLED task back in the queue.
    async fn retry(&self, id: Uuid) -> Result<Task>;
    /// Records that an agent session registered.
    async fn record_session_start(&self, session: &AgentSession) -> Result<()>;
    /// Records that an agent session ended.
    async fn record_session_end(&self, session_id: Uuid) -> Result<()>;
    /// Keeps a new token's record and hash.
    async fn create_token(&self, token: &IssuedToken) -> Result<()>;
    /// Marks a token revoked; false if no live token has this id.
    async fn revoke_token(&self, id: &str) -> Result<bool>;
}

/// What a store of database `DB` shares with the other backend: [`Reads`]
/// from a pool of readers, [`Writes`] on the connections `W` holds.
pub struct SharedStore<DB: Database, W> {
    readers: Pool<DB>,
    writer: W,
    defaults: TypeDefaults,
}

impl<DB: Database, W> SharedStore<DB, W> {
    /// Reads from `readers` and writes through `writer`; new task types
    /// get `defaults` where they name none.
    pub fn new(readers: Pool<DB>, writer: W, defaults: TypeDefaults) -> Self {
        SharedStore {
            readers,
            writer,
            defaults,
        }
    }

    /// The pool the reads use.
    #[cfg(test)]
    pub fn readers(&self) -> &Pool<DB> {
        &self.readers
    }
}

/// Everything a store shares: its [`Reads`] and its [`Writes`].
pub trait Common: Reads + Writes {}

impl<T: Reads + Writes> Common for T {}

/// Runs `$body` with `$tx`, a write transaction on `$writes`' connection,
/// and commits it when the body succeeds.
macro_rules! in_transaction {
    ($writes:expr, |$tx:ident| $body:expr) => {{
        let mut held = $writes.writer.hold().await?;
        let mut $tx = held.begin_with(DB::statements().begin).await?;
        let done = $body;
        $tx.commit().await?;
        Ok(done)
    }};
}

#[async_trait]
impl<DB, W> Writes for SharedStore<DB, W>
where
    DB: Dialect,
    DB::Row: Columns,
    DB::Arguments: IntoArguments<DB>,
    W: Writer<DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> f64: Encode<'q, DB> + Type<DB>,
{
    async fn register_task_types(&self, specs: &[TaskTypeSpec]) -> Result<Vec<TaskType>> {
        in_transaction!(self, |tx| Shared::<DB>::register_task_types(
            &mut tx,
            specs,
            &self.defaults
        )
        .await?)
    }

    async fn cancel(&self, id: Uuid, reason: &str) -> Result<(Task, Task)> {
        in_transaction!(self, |tx| Shared::<DB>::cancel(&mut tx, id, reason).await?)
    }

    async fn retry(&self, id: Uuid) -> Result<Task> {
        in_transaction!(self, |tx| Shared::<DB>::retry(&mut tx, id, &self.defaults)
            .await?)
    }

    async fn record_session_start(&self, session: &AgentSession) -> Result<()> {
        Shared::<DB>::record_session_start(&mut **self.writer.hold().await?, session).await
    }

    async fn record_session_end(&self, session_id: Uuid) -> Result<()> {
        Shared::<DB>::record_session_end(&mut **self.writer.hold().await?, session_id).await
    }

    async fn create_token(&self, token: &IssuedToken) -> Result<()> {
        Shared::<DB>::create_token(&mut **self.writer.hold().await?, token).await
    }

    async fn revoke_token(&self, id: &str) -> Result<bool> {
        Shared::<DB>::revoke_token(&mut **self.writer.hold().await?, id).await
    }
}

/// The `queue_stats` query, reading PENDING and RUNNING tasks from
/// `pending` and `running` (SQLite must be told to use the partial
/// indexes). Each (type, status) comes from exactly one branch: PENDING
/// from the ready index, RUNNING from the lease index, finished states from
/// `task_counts`.
fn queue_stats_sql(pending: &str, running: &str) -> String {
    format!(
        "WITH counts (task_type, status, count, recent) AS (
             SELECT task_type, 'pending', count(*), 0 FROM {pending}
             WHERE status = 'pending' GROUP BY task_type
             UNION ALL
             SELECT task_type, 'running', count(*), 0 FROM {running}
             WHERE status = 'running' GROUP BY task_type
             UNION ALL
             SELECT task_type, status, CAST(sum(count) AS BIGINT),
                    CAST(sum(CASE WHEN second >= $2 THEN count ELSE 0 END) AS BIGINT)
             FROM task_counts GROUP BY task_type, status)
         SELECT counts.task_type, task_types.domain, counts.status, counts.count, counts.recent
         FROM counts JOIN task_types ON task_types.task_type = counts.task_type
         WHERE (counts.count > 0 OR counts.recent > 0)
           AND (CAST($1 AS TEXT) IS NULL OR task_types.domain = $1)"
    )
}

/// The attempts of one task in order, given how each database spells the
/// task's id as a `tasks.id` and as a `task_attempts.task_id`.
///
/// A task's latest attempt, while it runs and once it completed the task,
/// is read from the task row: who holds or held the lease, which attempt it
/// is, when it started. So the claim and the completion, the path every
/// task takes, write no attempt row; `task_attempts` holds the attempts
/// that ended otherwise (see [`end_attempts_sql`]). A row for that same
/// attempt, from before this rule, gives way to the task row.
fn attempts_sql(task_id: &str, attempt_task_id: &str) -> String {
    format!(
        "WITH latest AS (
             SELECT attempts AS attempt, lease_agent AS agent_id, lease_session AS session_id,
                    started_at, CASE WHEN status = 'completed' THEN finished_at END AS finished_at,
                    CASE WHEN status = 'completed' THEN 'completed' END AS outcome,
                    CAST(NULL AS TEXT) AS error
             FROM tasks
             WHERE id = {task_id} AND status IN ('running', 'completed') AND lease_agent IS NOT NULL)
         SELECT attempt, agent_id, session_id, started_at, finished_at, outcome, error
         FROM task_attempts
         WHERE task_id = {attempt_task_id} AND attempt NOT IN (SELECT attempt FROM latest)
         UNION ALL
         SELECT * FROM latest
         ORDER BY attempt"
    )
}

/// Ends the current attempt of each RUNNING task that `condition` picks,
/// given how each database spells `tasks.id` as text, the clock, the
/// outcome and the error: a `task_attempts` row taken from the task row,
/// written before the task row forgets who ran the attempt. Completions
/// write none (see [`attempts_sql`]). An open row written before that rule
/// is filled in; an ended one is never overwritten.
pub fn end_attempts_sql(
    id_text: &str,
    now: &str,
    outcome: &str,
    error: &str,
    condition: &str,
) -> String {
    format!(
        "INSERT INTO task_attempts
             (task_id, attempt, agent_id, session_id, started_at, finished_at, outcome, error)
         SELECT {id_text}, attempts, lease_agent, lease_session, started_at, {now}, {outcome}, {error}
         FROM tasks WHERE status = 'running' AND {condition}
         ON CONFLICT (task_id, attempt) DO UPDATE
             SET finished_at = excluded.finished_at, outcome = excluded.outcome, error = excluded.error
             WHERE task_attempts.finished_at IS NULL"
    )
}
