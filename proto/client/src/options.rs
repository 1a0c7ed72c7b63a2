//! [`NewTask`]: a task to enqueue, with typed options, and [`TaskFilter`]
//! for listing.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use serde_json::Value;
use taskplane_proto::json::json_to_struct;
use taskplane_proto::trace::TraceParent;
use taskplane_proto::v1;
use tonic::metadata::{Ascii, MetadataValue};

use crate::error::{Error, Result};
use crate::task::TaskStatus;

/// A task to enqueue: its type and payload, and whatever options it
/// needs; unset options take the task type's defaults.
///
/// ```
/// use std::time::Duration;
/// use serde_json::json;
/// use taskplane_client::NewTask;
///
/// let task = NewTask::new("invoice_generation", json!({"customer_id": 7}))
///     .priority(10)
///     .idempotency_key("invoice-7-2026-12")
///     .start_within(Duration::from_secs(600))
///     .metadata("tenant", "eu-1");
/// assert_eq!(task.task_type(), "invoice_generation");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct NewTask {
    task_type: String,
    payload: Value,
    priority: i32,
    run_at: Option<DateTime<Utc>>,
    start_by: Option<DateTime<Utc>>,
    idempotency_key: Option<String>,
    idempotency_window: Option<Duration>,
    max_attempts: Option<u32>,
    timeout: Option<Duration>,
    handler_version: Option<String>,
    metadata: BTreeMap<String, String>,
    required_labels: BTreeMap<String, String>,
    traceparent: Option<TraceParent>,
}

impl NewTask {
    /// A task of `task_type` with `payload`, which must be a JSON object.
    pub fn new(task_type: impl Into<String>, payload: Value) -> Self {
        NewTask {
            task_type: task_type.into(),
            payload,
            priority: 0,
            run_at: None,
            start_by: None,
            idempotency_key: None,
            idempotency_window: None,
            max_attempts: None,
            timeout: None,
            handler_version: None,
            metadata: BTreeMap::new(),
            required_labels: BTreeMap::new(),
            traceparent: None,
        }
    }

    /// The task type it runs as.
    pub fn task_type(&self) -> &str {
        &self.task_type
    }

    /// Higher runs first among ready tasks (default 0).
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// Not delivered before `at`.
    pub fn run_at(mut self, at: DateTime<Utc>) -> Self {
        self.run_at = Some(at);
        self
    }

    /// Not delivered before `delay` from now.
    pub fn delay(self, delay: Duration) -> Self {
        self.run_at(DateTime::<Utc>::from(SystemTime::now() + delay))
    }

    /// A deadline to start by: not leased to an agent by `at`, the task
    /// ends EXPIRED and never runs.
    pub fn start_by(mut self, at: DateTime<Utc>) -> Self {
        self.start_by = Some(at);
        self
    }

    /// [`NewTask::start_by`] `within` from now.
    pub fn start_within(self, within: Duration) -> Self {
        self.start_by(DateTime::<Utc>::from(SystemTime::now() + within))
    }

    /// Enqueueing the same key for the same type again returns the task
    /// that holds it.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// How long the idempotency key holds ("unique for 10 minutes"); past
    /// it, the same key makes a new task.
    pub fn idempotency_window(mut self, window: Duration) -> Self {
        self.idempotency_window = Some(window);
        self
    }

    /// Attempts before the task is DEAD.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = Some(attempts);
        self
    }

    /// How long one attempt may run.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The handler version to run it, e.g. `"v2"`.
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.handler_version = Some(version.into());
        self
    }

    /// Adds a metadata entry.
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Runs it only on an agent that has this label.
    pub fn require_label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.required_labels.insert(key.into(), value.into());
        self
    }

    /// Carries a W3C trace context to the handler, so its spans join the
    /// caller's trace.
    pub fn traceparent(mut self, trace: TraceParent) -> Self {
        self.traceparent = Some(trace);
        self
    }

    /// The `traceparent` header to send with the enqueue, if any.
    pub(crate) fn trace_header(&self) -> Option<MetadataValue<Ascii>> {
        self.traceparent
            .as_ref()
            .map(|trace| trace.to_string().parse().expect("a trace context is ASCII"))
    }

    /// True when sending it twice cannot make two tasks.
    pub(crate) fn is_idempotent(&self) -> bool {
        self.idempotency_key.is_some()
    }

    /// The wire request; a payload that is not a JSON object is refused
    /// here, before anything is sent.
    pub(crate) fn to_request(&self) -> Result<v1::EnqueueTaskRequest> {
        let Value::Object(payload) = &self.payload else {
            return Err(Error::InvalidRequest(format!(
                "the payload of a {} task must be a JSON object, e.g. json!({{\"user_id\": 7}})",
                self.task_type
            )));
        };
        let duration = |what: &str, duration: Duration| {
            prost_types::Duration::try_from(duration)
                .map_err(|_| Error::InvalidRequest(format!("{what} is too long")))
        };
        Ok(v1::EnqueueTaskRequest {
            task_type: self.task_type.clone(),
            payload: Some(json_to_struct(payload)),
            priority: self.priority,
            run_at: self.run_at.map(timestamp),
            start_by: self.start_by.map(timestamp),
            idempotency_key: self.idempotency_key.clone().unwrap_or_default(),
            idempotency_window: self
                .idempotency_window
                .map(|window| duration("idempotency_window", window))
                .transpose()?,
            max_attempts: self.max_attempts.unwrap_or(0),
            timeout: self
                .timeout
                .map(|timeout| duration("timeout", timeout))
                .transpose()?,
            handler_version: self.handler_version.clone().unwrap_or_default(),
            metadata: self.metadata.clone().into_iter().collect(),
            required_labels: self.required_labels.clone().into_iter().collect(),
            ..Default::default()
        })
    }
}

/// An instant on the wire.
pub(crate) fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: at.timestamp_subsec_nanos() as i32,
    }
}

/// Which tasks [`Client::list`](crate::Client::list) returns, newest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskFilter {
    /// Only this type.
    pub task_type: Option<String>,
    /// Only this domain.
    pub domain: Option<String>,
    /// Only this status.
    pub status: Option<TaskStatus>,
    /// At most this many (the server's default when `None`).
    pub limit: Option<u32>,
    /// Only tasks created at or after this instant.
    pub created_after: Option<DateTime<Utc>>,
    /// Only tasks created before this instant.
    pub created_before: Option<DateTime<Utc>>,
    /// Only tasks whose last error contains this text.
    pub error_contains: Option<String>,
    /// Only the follow-ups of this task (its id).
    pub parent_id: Option<String>,
}

impl TaskFilter {
    pub(crate) fn to_request(&self) -> v1::ListTasksRequest {
        v1::ListTasksRequest {
            task_type: self.task_type.clone().unwrap_or_default(),
            domain: self.domain.clone().unwrap_or_default(),
            status: self.status.unwrap_or(TaskStatus::Unspecified) as i32,
            page_size: self.limit.unwrap_or(0),
            created_after: self.created_after.map(timestamp),
            created_before: self.created_before.map(timestamp),
            error_contains: self.error_contains.clone().unwrap_or_default(),
            parent_id: self.parent_id.clone().unwrap_or_default(),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn options_reach_the_request_and_a_non_object_payload_is_refused() {
        let request = NewTask::new("report", json!({"rows": []}))
            .priority(3)
            .idempotency_key("k")
            .idempotency_window(Duration::from_secs(600))
            .version("v2")
            .require_label("region", "eu")
            .to_request()
            .unwrap();
        assert_eq!(request.priority, 3);
        assert_eq!(request.idempotency_key, "k");
        assert_eq!(request.idempotency_window.unwrap().seconds, 600);
        assert_eq!(request.handler_version, "v2");
        assert_eq!(request.required_labels["region"], "eu");
        let refused = NewTask::new("report", json!([1, 2])).to_request();
        assert!(matches!(refused, Err(Error::InvalidRequest(m)) if m.contains("JSON object")));
    }
}
