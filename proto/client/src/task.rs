//! [`Task`]: a task as the client sees it, its JSON as `serde_json` values
//! and its times as `chrono` instants.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use taskplane_proto::json::struct_to_json;
use taskplane_proto::v1;

pub use taskplane_proto::v1::TaskStatus;

/// One task, as the server last reported it.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    /// Its id (a UUIDv7).
    pub id: String,
    /// Its registered type.
    pub task_type: String,
    /// The domain owning the type.
    pub domain: String,
    /// Where it is in its life.
    pub status: TaskStatus,
    /// The handler's input.
    pub payload: Map<String, Value>,
    /// What the handler returned, once COMPLETED.
    pub result: Option<Map<String, Value>>,
    /// The latest error, if an attempt failed or the task was cancelled or
    /// expired.
    pub last_error: Option<String>,
    /// Attempts started so far.
    pub attempts: u32,
    /// Attempts allowed before it is DEAD.
    pub max_attempts: u32,
    /// Higher runs first.
    pub priority: i32,
    /// Not delivered before this instant.
    pub run_at: Option<DateTime<Utc>>,
    /// Not leased to an agent by then, it ends EXPIRED.
    pub start_by: Option<DateTime<Utc>>,
    /// When it was enqueued.
    pub created_at: Option<DateTime<Utc>>,
    /// When its latest attempt started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// The key that made its enqueue idempotent.
    pub idempotency_key: Option<String>,
    /// The handler version asked for, if any.
    pub handler_version: Option<String>,
    /// Its metadata.
    pub metadata: BTreeMap<String, String>,
    /// Labels an agent must have to be given it.
    pub required_labels: BTreeMap<String, String>,
    /// The task whose handler enqueued it.
    pub parent_id: Option<String>,
    /// The latest progress its handler reported.
    pub progress: Option<Progress>,
    /// Why a due PENDING task waits (no agent, a paused type, a limit), as
    /// `get` reports it.
    pub waiting_for: Option<String>,
}

impl Task {
    /// True when the task will not change again unless retried.
    pub fn is_finished(&self) -> bool {
        is_terminal(self.status)
    }
}

/// True for COMPLETED, DEAD, CANCELLED and EXPIRED.
pub(crate) fn is_terminal(status: TaskStatus) -> bool {
    matches!(
        status,
        TaskStatus::Completed | TaskStatus::Dead | TaskStatus::Cancelled | TaskStatus::Expired
    )
}

/// An instant from the wire.
pub(crate) fn instant(at: Option<&prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    at.and_then(|at| DateTime::from_timestamp(at.seconds, at.nanos.max(0) as u32))
}

fn text(value: String) -> Option<String> {
    Some(value).filter(|value| !value.is_empty())
}

impl From<v1::Task> for Task {
    fn from(task: v1::Task) -> Self {
        Task {
            status: task.status(),
            payload: task
                .payload
                .as_ref()
                .map(struct_to_json)
                .unwrap_or_default(),
            result: task.result.as_ref().map(struct_to_json),
            run_at: instant(task.run_at.as_ref()),
            start_by: instant(task.start_by.as_ref()),
            created_at: instant(task.created_at.as_ref()),
            started_at: instant(task.started_at.as_ref()),
            finished_at: instant(task.finished_at.as_ref()),
            progress: task.progress.map(|progress| Progress {
                fraction: progress.fraction,
                reported_at: instant(progress.reported_at.as_ref()),
                message: progress.message,
            }),
            id: task.id,
            task_type: task.task_type,
            domain: task.domain,
            last_error: text(task.last_error),
            attempts: task.attempts,
            max_attempts: task.max_attempts,
            priority: task.priority,
            idempotency_key: text(task.idempotency_key),
            handler_version: text(task.handler_version),
            metadata: task.metadata.into_iter().collect(),
            required_labels: task.required_labels.into_iter().collect(),
            parent_id: text(task.parent_id),
            waiting_for: text(task.waiting_for),
        }
    }
}

/// How far a task's handler says it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// Done, from 0 to 1.
    pub fraction: f64,
    /// What it is doing, in words.
    pub message: String,
    /// When it said so.
    pub reported_at: Option<DateTime<Utc>>,
}

/// What an enqueue did: the task, and whether this call created it (false
/// when its idempotency key returned a task already there).
#[derive(Debug, Clone, PartialEq)]
pub struct Enqueued {
    /// The task.
    pub task: Task,
    /// False when the idempotency key named an existing task.
    pub created: bool,
}
