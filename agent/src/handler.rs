//! What a handler is: the [`TaskHandler`] trait, the [`TaskContext`] it gets,
//! and the [`TaskResult`] or [`TaskError`] it returns.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

/// Runs one task type.
///
/// Only [`handle`](TaskHandler::handle) is required; the other methods
/// describe the handler to the control plane when the agent registers.
#[async_trait]
pub trait TaskHandler: Send + Sync {
    /// Runs one attempt of a task.
    async fn handle(&self, context: TaskContext) -> Result<TaskResult, TaskError>;

    /// What the task type does, in words (shown by `RegistryService`).
    fn description(&self) -> String {
        String::new()
    }

    /// The handler versions served, e.g. `["v1", "v2"]`.
    fn versions(&self) -> Vec<String> {
        Vec::new()
    }

    /// Free-form capability tags, e.g. `["smtp"]`.
    fn capabilities(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Everything a handler knows about the attempt it runs.
#[derive(Debug, Clone)]
pub struct TaskContext {
    /// The task's id (a UUIDv7 string).
    pub task_id: String,
    /// Its type.
    pub task_type: String,
    /// The domain owning the type.
    pub domain: String,
    /// The input the client enqueued (a JSON object).
    pub payload: serde_json::Value,
    /// String metadata, e.g. `handler_version` or `traceparent`.
    pub metadata: HashMap<String, String>,
    /// Which attempt this is, from 1.
    pub attempt: u32,
    /// The handler version the client asked for ("" when any).
    pub handler_version: String,
    /// When the attempt's timeout ends.
    pub deadline: DateTime<Utc>,
    /// Cancelled when the task is cancelled, times out or the agent stops.
    pub cancellation: CancellationToken,
}

/// What a successful handler returns: a JSON object stored as the task's result.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskResult {
    /// The result object.
    pub output: serde_json::Map<String, serde_json::Value>,
}

impl TaskResult {
    /// A result from any JSON value; a non-object is stored as `{"value": …}`.
    pub fn new(value: serde_json::Value) -> Self {
        match value {
            serde_json::Value::Object(output) => TaskResult { output },
            other => TaskResult {
                output: serde_json::Map::from_iter([("value".to_owned(), other)]),
            },
        }
    }

    /// A result with nothing to report.
    pub fn empty() -> Self {
        TaskResult::default()
    }
}

/// Why a handler failed, and whether another attempt may succeed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TaskError {
    /// A passing fault (network, overload): the task is retried with backoff.
    #[error("{0}")]
    Retryable(String),
    /// The task cannot succeed as given (bad payload, missing configuration).
    #[error("{0}")]
    Permanent(String),
    /// No handler version fits the task.
    #[error("unsupported version: {0}")]
    UnsupportedVersion(String),
    /// The attempt ran past its timeout.
    #[error("the attempt ran past its timeout of {0:?}")]
    Timeout(std::time::Duration),
    /// The task was cancelled while running.
    #[error("cancelled: {0}")]
    Cancelled(String),
}

impl TaskError {
    /// Whether the control plane should retry the task.
    pub fn is_retryable(&self) -> bool {
        matches!(self, TaskError::Retryable(_) | TaskError::Timeout(_))
    }

    /// A permanent error for a payload field that is missing or of the wrong type.
    pub fn bad_payload(field: &str, expected: &str) -> Self {
        TaskError::Permanent(format!("payload field '{field}' must be {expected}"))
    }
}
