//! What a handler is: the [`TaskHandler`] trait, the [`TaskContext`] it gets,
//! and the [`TaskResult`] or [`TaskError`] it returns.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::flow::FlowLimits;
use crate::follow_up::{FollowUps, follow_up_request};
use crate::progress::ProgressReports;

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

    /// Flow-control limits for the task type (see [`FlowLimits`]): `None`
    /// (the default) declares none and leaves what an operator set.
    fn flow_limits(&self) -> Option<FlowLimits> {
        None
    }

    /// Checks the handler's own dependencies (a connection, a directory).
    /// `None` (the default) means the handler has nothing to check. Results
    /// travel in heartbeats and show in `ListAgents` and `GetTaskType`.
    async fn health_check(&self) -> Option<HandlerHealth> {
        None
    }
}

/// The result of a handler's self-check.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HandlerHealth {
    /// Whether the handler can do its work now.
    pub healthy: bool,
    /// What was checked, or what is wrong, in words.
    pub message: String,
}

impl HandlerHealth {
    /// A passing check.
    pub fn healthy(message: impl Into<String>) -> Self {
        HandlerHealth {
            healthy: true,
            message: message.into(),
        }
    }

    /// A failing check, saying what is wrong.
    pub fn unhealthy(message: impl Into<String>) -> Self {
        HandlerHealth {
            healthy: false,
            message: message.into(),
        }
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
    /// The agent's feature flags (its registry's, e.g. `TASK_FEATURE_FLAGS`).
    pub feature_flags: Arc<BTreeMap<String, bool>>,
    /// How [`TaskContext::enqueue`] reaches the server: the agent's own
    /// connection (`None` outside an agent, e.g. in a unit test).
    pub follow_ups: Option<FollowUps>,
    /// Where [`TaskContext::report_progress`] goes: the agent's stream
    /// (`None` outside an agent).
    pub progress: Option<ProgressReports>,
}

impl TaskContext {
    /// Whether the agent runs with feature flag `flag` on (unset flags are off).
    pub fn feature_enabled(&self, flag: &str) -> bool {
        self.feature_flags.get(flag).copied().unwrap_or(false)
    }

    /// A context for running a handler outside an agent, e.g. in a unit
    /// test: attempt 1, no metadata, a five-minute deadline, a fresh
    /// cancellation token, and a placeholder task id.
    pub fn new(task_type: impl Into<String>, payload: serde_json::Value) -> Self {
        TaskContext {
            task_id: "00000000-0000-7000-8000-000000000000".to_owned(),
            task_type: task_type.into(),
            domain: String::new(),
            payload,
            metadata: HashMap::new(),
            attempt: 1,
            handler_version: String::new(),
            deadline: Utc::now() + chrono::Duration::minutes(5),
            cancellation: CancellationToken::new(),
            feature_flags: Arc::default(),
            follow_ups: None,
            progress: None,
        }
    }

    /// Tells the server how far this attempt is: `fraction` done (0 to 1)
    /// and what it is doing. `GetTask` and `WatchTask` show the latest, and
    /// `taskplane enqueue --wait` draws it as a bar. Cheap to call often:
    /// at most a few reports a second go out. Outside an agent it does
    /// nothing.
    pub fn report_progress(&self, fraction: f64, message: impl Into<String>) {
        if let Some(progress) = &self.progress {
            progress.report(fraction, message.into());
        }
    }

    /// Enqueues a follow-up task of `task_type` with `payload` (a JSON
    /// object) over the agent's own connection and within its token's
    /// domains, with this task recorded as its parent (`Task.parent_id`);
    /// returns the new task's id. Delivery is at least once: a retried
    /// attempt enqueues again unless the follow-up carries an idempotency
    /// key ([`TaskContext::enqueue_request`]).
    pub async fn enqueue(
        &self,
        task_type: &str,
        payload: serde_json::Value,
    ) -> Result<String, TaskError> {
        self.enqueue_request(follow_up_request(task_type, payload)?)
            .await
    }

    /// [`TaskContext::enqueue`] with every setting of the request
    /// (priority, delay, idempotency key, labels…); its `parent_id` is set
    /// to this task.
    pub async fn enqueue_request(
        &self,
        request: taskplane_proto::v1::EnqueueTaskRequest,
    ) -> Result<String, TaskError> {
        let Some(follow_ups) = &self.follow_ups else {
            return Err(TaskError::Permanent(format!(
                "the follow-up '{}' cannot be enqueued: this handler does not run in an agent connected to a server",
                request.task_type
            )));
        };
        follow_ups.enqueue(&self.task_id, request).await
    }

    /// The W3C trace context the task was enqueued with, if any: pass it on
    /// (e.g. as an HTTP `traceparent` header) to keep one trace.
    pub fn traceparent(&self) -> Option<taskplane_proto::trace::TraceParent> {
        self.metadata
            .get(taskplane_proto::trace::TRACEPARENT)
            .and_then(|value| taskplane_proto::trace::TraceParent::parse(value))
    }
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
    /// A passing fault whose source said when to come back (an HTTP
    /// `Retry-After`): the retry waits at least `after`, or the backoff if
    /// that is longer, but never longer than the retry policy's
    /// `max_backoff`.
    #[error("{message} (retry after {after:?})")]
    RetryAfter {
        /// What went wrong.
        message: String,
        /// The least time to wait before the next attempt.
        after: std::time::Duration,
    },
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
        matches!(
            self,
            TaskError::Retryable(_) | TaskError::RetryAfter { .. } | TaskError::Timeout(_)
        )
    }

    /// The least time the retry should wait, when the failure said.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            TaskError::RetryAfter { after, .. } => Some(*after),
            _ => None,
        }
    }

    /// A permanent error for a payload field that is missing or of the wrong type.
    pub fn bad_payload(field: &str, expected: &str) -> Self {
        TaskError::Permanent(format!("payload field '{field}' must be {expected}"))
    }
}
