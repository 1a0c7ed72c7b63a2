//! Durable storage of task types, tasks, attempts and agent sessions.
//!
//! One trait, [`Store`], one implementation per database. Every method that
//! writes is atomic: it commits all of its rows or none. Conditional updates
//! (`status = 'running' AND attempts = ?`) are the fence against stale results.

mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::config::QueueConfig;
use crate::error::{Error, Result};
use crate::model::{
    Attempt, AttemptResult, Enqueued, Lease, NewTask, ResultOutcome, Task, TaskFilter, TaskType,
    TaskTypeSpec,
};

pub use sqlite::SqliteStore;

/// A registered agent session, as recorded for operators.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentSessionRecord {
    /// The stream's id.
    pub session_id: Uuid,
    /// The agent instance.
    pub agent_id: Uuid,
    /// The name the agent gave.
    pub agent_name: String,
    /// Domains it serves.
    pub domains: Vec<String>,
    /// Labels it sent.
    pub labels: std::collections::BTreeMap<String, String>,
    /// Its slots at registration.
    pub max_concurrency: u32,
    /// When the stream registered.
    pub connected_at: DateTime<Utc>,
}

/// The durable side of the control plane.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Registers or updates task types in one transaction: all or none. A type
    /// that already belongs to another domain fails `AlreadyExists`.
    async fn register_task_types(&self, specs: &[TaskTypeSpec]) -> Result<Vec<TaskType>>;

    /// One task type, if registered.
    async fn get_task_type(&self, task_type: &str) -> Result<Option<TaskType>>;

    /// Every registered task type (of one domain, if given), by name.
    async fn list_task_types(&self, domain: Option<&str>) -> Result<Vec<TaskType>>;

    /// Stores tasks in one transaction: all or none. An unregistered type
    /// fails `FailedPrecondition` naming it; a matching idempotency key
    /// returns the existing task.
    async fn enqueue(&self, tasks: Vec<NewTask>) -> Result<Vec<Enqueued>>;

    /// One task, if it exists.
    async fn get_task(&self, id: Uuid) -> Result<Option<Task>>;

    /// Every attempt of a task, oldest first.
    async fn list_attempts(&self, id: Uuid) -> Result<Vec<Attempt>>;

    /// Tasks matching the filter, newest first.
    async fn list_tasks(&self, filter: &TaskFilter) -> Result<Vec<Task>>;

    /// Leases up to `limit` ready tasks of the given types: RUNNING, attempt
    /// counted, in priority then age order.
    async fn claim(&self, task_types: &[String], limit: u32, lease: &Lease) -> Result<Vec<Task>>;

    /// Records an attempt's result if `attempt` is still the current lease.
    async fn finish_attempt(
        &self,
        id: Uuid,
        attempt: u32,
        result: AttemptResult,
    ) -> Result<ResultOutcome>;

    /// Returns every task leased by a session to the queue (or to DEAD when it
    /// has no attempts left): its stream closed. Returns the ids it touched.
    async fn release_session(&self, session_id: Uuid) -> Result<Vec<Uuid>>;

    /// Extends the leases of every RUNNING task held by these sessions.
    async fn extend_leases(&self, session_ids: &[Uuid], expires_at: DateTime<Utc>) -> Result<()>;

    /// Returns tasks whose lease expired before `now` to the queue (or DEAD).
    async fn reap_expired_leases(&self, now: DateTime<Utc>) -> Result<Vec<Uuid>>;

    /// Cancels a PENDING or RUNNING task. Returns the task as it was before,
    /// so the caller can tell a running task's agent to stop.
    async fn cancel(&self, id: Uuid, reason: &str) -> Result<(Task, Task)>;

    /// Puts a DEAD or CANCELLED task back in the queue with fresh attempts.
    async fn retry(&self, id: Uuid) -> Result<Task>;

    /// Records that an agent session registered.
    async fn record_session_start(&self, session: &AgentSessionRecord) -> Result<()>;

    /// Records that an agent session ended.
    async fn record_session_end(&self, session_id: Uuid) -> Result<()>;
}

/// Opens the store named by a database URL and applies its migrations.
pub async fn open(database_url: &str, queue: &QueueConfig) -> Result<Arc<dyn Store>> {
    if database_url.starts_with("sqlite:") {
        return Ok(Arc::new(SqliteStore::open(database_url, queue).await?));
    }
    Err(Error::InvalidArgument(format!(
        "unsupported database url '{database_url}': use sqlite://path/to/file.db"
    )))
}
