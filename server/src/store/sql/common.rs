//! [`SharedStore`]: what a store of either database serves the same way,
//! [`Reads`] from a pool and [`Writes`] on what its [`Writer`] holds.

use std::ops::DerefMut;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{Connection, Database, Encode, Executor, IntoArguments, Pool, Type};
use uuid::Uuid;

use super::schedules::Schedules;
use super::{Dialect, Shared};
use crate::auth::tokens::{IssuedToken, TokenRecord};
use crate::engine::flow::FlowChange;
use crate::error::Result;
use crate::model::{
    AgentSession, Attempt, Progress, Task, TaskFilter, TaskSelector, TaskType, TaskTypeSpec,
    TypeStats,
};
use crate::store::rows::{Columns, millis};
use crate::store::rules::TypeDefaults;

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
    /// Up to `limit` ids of tasks a selector matches after `after`, in id order.
    async fn task_ids(
        &self,
        selector: &TaskSelector,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<Uuid>>;
    /// Sessions that have not ended and were refreshed since `seen_since`.
    async fn live_sessions(&self, seen_since: DateTime<Utc>) -> Result<Vec<AgentSession>>;
    /// The live sessions some replica asked to drain.
    async fn drains_requested(&self) -> Result<Vec<Uuid>>;
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

    async fn task_ids(
        &self,
        selector: &TaskSelector,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<Uuid>> {
        Shared::<DB>::select_task_ids(&self.readers, selector, after, limit).await
    }

    async fn live_sessions(&self, seen_since: DateTime<Utc>) -> Result<Vec<AgentSession>> {
        Shared::<DB>::live_sessions(&self.readers, seen_since).await
    }

    async fn drains_requested(&self) -> Result<Vec<Uuid>> {
        Shared::<DB>::drains_requested(&self.readers).await
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
    /// Changes a task type's flow-control policy; returns the type.
    async fn set_flow_policy(&self, task_type: &str, change: &FlowChange) -> Result<TaskType>;
    /// Cancels a PENDING or RUNNING task; returns it before and after.
    async fn cancel(&self, id: Uuid, reason: &str) -> Result<(Task, Task)>;
    /// Puts a DEAD, CANCELLED or EXPIRED task back in the queue.
    async fn retry(&self, id: Uuid) -> Result<Task>;
    /// Retries those of `ids` still DEAD, CANCELLED or EXPIRED, in one
    /// transaction.
    async fn retry_many(&self, ids: &[Uuid]) -> Result<Vec<Task>>;
    /// Cancels those of `ids` still PENDING or RUNNING, in one
    /// transaction; returns each as it was and is.
    async fn cancel_many(&self, ids: &[Uuid], reason: &str) -> Result<Vec<(Task, Task)>>;
    /// Deletes those of `ids` that are finished, in one transaction.
    async fn purge_many(&self, ids: &[Uuid]) -> Result<u64>;
    /// Keeps a running attempt's progress; false when it no longer runs.
    async fn record_progress(&self, id: Uuid, attempt: u32, progress: &Progress) -> Result<bool>;
    /// Ends EXPIRED up to `limit` tasks past their deadline to start by;
    /// returns their ids and types.
    async fn expire_overdue(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<(Uuid, String)>>;
    /// Deletes `task_type`'s rate buckets last spent from before
    /// `full_since` (full again by now).
    async fn prune_rate_buckets(&self, task_type: &str, full_since: DateTime<Utc>) -> Result<()>;
    /// Returns a task its agent gave back unstarted to the queue, its
    /// attempt uncounted; see [`Shared::give_back`].
    async fn give_back(&self, id: Uuid, attempt: u32, session_id: Uuid) -> Result<Option<String>>;
    /// Records that an agent session registered.
    async fn record_session_start(&self, session: &AgentSession) -> Result<()>;
    /// Records that an agent session ended.
    async fn record_session_end(&self, session_id: Uuid) -> Result<()>;
    /// Asks the replica that owns a live session to drain it.
    async fn request_drain(&self, session_id: Uuid) -> Result<()>;
    /// Keeps a new token's record and hash.
    async fn create_token(&self, token: &IssuedToken) -> Result<()>;
    /// Marks a token revoked; false if no live token has this id.
    async fn revoke_token(&self, id: &str) -> Result<bool>;
    /// Commits a small write, to prove that the database takes writes.
    async fn probe(&self) -> Result<()>;
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
    pub fn readers(&self) -> &Pool<DB> {
        &self.readers
    }

    /// Where the writes run.
    pub fn writer(&self) -> &W {
        &self.writer
    }
}

/// Everything a store shares: its [`Reads`], its [`Writes`] and its
/// [`Schedules`].
pub trait Common: Reads + Writes + Schedules {}

impl<T: Reads + Writes + Schedules> Common for T {}

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

    async fn set_flow_policy(&self, task_type: &str, change: &FlowChange) -> Result<TaskType> {
        in_transaction!(self, |tx| Shared::<DB>::set_flow_policy(
            &mut tx, task_type, change
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

    async fn retry_many(&self, ids: &[Uuid]) -> Result<Vec<Task>> {
        in_transaction!(self, |tx| Shared::<DB>::retry_many(
            &mut tx,
            ids,
            &self.defaults
        )
        .await?)
    }

    async fn cancel_many(&self, ids: &[Uuid], reason: &str) -> Result<Vec<(Task, Task)>> {
        in_transaction!(self, |tx| Shared::<DB>::cancel_many(&mut tx, ids, reason)
            .await?)
    }

    async fn purge_many(&self, ids: &[Uuid]) -> Result<u64> {
        in_transaction!(self, |tx| Shared::<DB>::purge_many(&mut tx, ids).await?)
    }

    async fn record_progress(&self, id: Uuid, attempt: u32, progress: &Progress) -> Result<bool> {
        Shared::<DB>::record_progress(&mut **self.writer.hold().await?, id, attempt, progress).await
    }

    async fn expire_overdue(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<(Uuid, String)>> {
        // A read first: most rounds find nothing, and need not take the
        // writer (SQLite's one writer, every 500 ms) to learn it.
        if !Shared::<DB>::any_overdue(&self.readers, now).await? {
            return Ok(Vec::new());
        }
        in_transaction!(self, |tx| Shared::<DB>::expire_overdue(&mut tx, now, limit)
            .await?)
    }

    async fn prune_rate_buckets(&self, task_type: &str, full_since: DateTime<Utc>) -> Result<()> {
        sqlx::query("DELETE FROM rate_buckets WHERE task_type = $1 AND refilled_at < $2")
            .bind(task_type.to_owned())
            .bind(millis(full_since))
            .execute(&mut **self.writer.hold().await?)
            .await?;
        Ok(())
    }

    async fn give_back(&self, id: Uuid, attempt: u32, session_id: Uuid) -> Result<Option<String>> {
        in_transaction!(self, |tx| Shared::<DB>::give_back(
            &mut tx, id, attempt, session_id
        )
        .await?)
    }

    async fn record_session_start(&self, session: &AgentSession) -> Result<()> {
        Shared::<DB>::record_session_start(&mut **self.writer.hold().await?, session).await
    }

    async fn record_session_end(&self, session_id: Uuid) -> Result<()> {
        Shared::<DB>::record_session_end(&mut **self.writer.hold().await?, session_id).await
    }

    async fn request_drain(&self, session_id: Uuid) -> Result<()> {
        Shared::<DB>::request_drain(&mut **self.writer.hold().await?, session_id).await
    }

    async fn create_token(&self, token: &IssuedToken) -> Result<()> {
        Shared::<DB>::create_token(&mut **self.writer.hold().await?, token).await
    }

    async fn revoke_token(&self, id: &str) -> Result<bool> {
        Shared::<DB>::revoke_token(&mut **self.writer.hold().await?, id).await
    }

    async fn probe(&self) -> Result<()> {
        Shared::<DB>::probe(&mut **self.writer.hold().await?).await
    }
}
