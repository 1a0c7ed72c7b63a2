//! Conversions between domain types and `taskplane.v1` messages, and the
//! validation of what clients send.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use prost::Message as _;
use prost_types::{Duration as ProtoDuration, Timestamp};
use taskplane_proto::json::{first_non_finite, json_to_struct, struct_to_json};
use taskplane_proto::names::check_name;
use taskplane_proto::v1;
use uuid::Uuid;

use crate::config::QueueConfig;
use crate::engine::flow::{FlowChange, FlowPolicy, KeyPath, RateLimit};
use crate::error::{Error, Result};
use crate::model::{
    Attempt, NewTask, RetryPolicy, RetryPolicyPatch, Task, TaskFilter, TaskSelector, TaskStatus,
    TaskType,
};

/// The longest idempotency key accepted, in bytes.
const MAX_IDEMPOTENCY_KEY_BYTES: usize = 256;
/// The most metadata entries accepted on one task.
const MAX_METADATA_ENTRIES: usize = 64;
/// The most bytes of metadata (keys and values together) on one task.
const MAX_METADATA_BYTES: usize = 16 * 1024;
/// The longest handler version accepted, in bytes.
pub const MAX_HANDLER_VERSION_BYTES: usize = 64;
/// What an assignment carries beyond the task's own variable fields (ids,
/// attempt, deadlines, field tags), with room to spare.
const ASSIGNMENT_ENVELOPE_BYTES: usize = 1024;

/// The most attempts a task may ask for.
const MAX_ATTEMPTS_LIMIT: u32 = 1000;
/// The most labels a task may require.
const MAX_REQUIRED_LABELS: usize = 16;
/// The longest key or value of a required label.
const MAX_LABEL_BYTES: usize = 128;
/// The longest execution timeout a task may ask for.
const MAX_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);

/// A protobuf timestamp for an instant.
pub fn timestamp(at: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: at.timestamp(),
        nanos: at.timestamp_subsec_nanos() as i32,
    }
}

/// A protobuf duration.
pub fn proto_duration(duration: Duration) -> ProtoDuration {
    ProtoDuration {
        seconds: duration.as_secs() as i64,
        nanos: duration.subsec_nanos() as i32,
    }
}

/// A `std` duration from a protobuf one; `field` names it in the error.
pub fn std_duration(field: &str, duration: &ProtoDuration) -> Result<Duration> {
    Duration::try_from(*duration).map_err(|_| {
        Error::InvalidArgument(format!("{field} must be a positive duration, e.g. \"30s\""))
    })
}

fn instant(field: &str, at: &Timestamp) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp(at.seconds, at.nanos.max(0) as u32).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "{field} is out of range: use an RFC 3339 time such as \"2030-01-01T00:00:00Z\""
        ))
    })
}

/// The wire form of a retry policy.
pub fn proto_retry_policy(policy: &RetryPolicy) -> v1::RetryPolicy {
    v1::RetryPolicy {
        initial_backoff: Some(proto_duration(policy.initial_backoff)),
        backoff_factor: policy.backoff_factor,
        max_backoff: Some(proto_duration(policy.max_backoff)),
    }
}

/// Validates a wire retry policy into overrides; unset fields override nothing.
pub fn retry_policy_patch(policy: Option<&v1::RetryPolicy>) -> Result<RetryPolicyPatch> {
    let Some(policy) = policy else {
        return Ok(RetryPolicyPatch::default());
    };
    let positive = |field: &str, value: Option<&ProtoDuration>| -> Result<Option<Duration>> {
        let Some(value) = value else { return Ok(None) };
        let duration = std_duration(field, value)?;
        if duration.is_zero() || duration > MAX_TIMEOUT {
            return Err(Error::InvalidArgument(format!(
                "{field} must be more than 0s and at most 7 days"
            )));
        }
        Ok(Some(duration))
    };
    let patch = RetryPolicyPatch {
        initial_backoff: positive(
            "retry_policy.initial_backoff",
            policy.initial_backoff.as_ref(),
        )?,
        backoff_factor: match policy.backoff_factor {
            0.0 => None,
            factor if (1.0..=100.0).contains(&factor) => Some(factor),
            factor => {
                return Err(Error::InvalidArgument(format!(
                    "retry_policy.backoff_factor is {factor}: use a number from 1 to 100 (0 keeps the default)"
                )));
            }
        },
        max_backoff: positive("retry_policy.max_backoff", policy.max_backoff.as_ref())?,
    };
    if let (Some(initial), Some(max)) = (patch.initial_backoff, patch.max_backoff)
        && max < initial
    {
        return Err(Error::InvalidArgument(
            "retry_policy.max_backoff is shorter than initial_backoff".into(),
        ));
    }
    Ok(patch)
}

/// The wire form of a status.
pub fn proto_status(status: TaskStatus) -> v1::TaskStatus {
    match status {
        TaskStatus::Pending => v1::TaskStatus::Pending,
        TaskStatus::Running => v1::TaskStatus::Running,
        TaskStatus::Completed => v1::TaskStatus::Completed,
        TaskStatus::Dead => v1::TaskStatus::Dead,
        TaskStatus::Cancelled => v1::TaskStatus::Cancelled,
        TaskStatus::Expired => v1::TaskStatus::Expired,
    }
}

/// The domain form of a wire status filter; UNSPECIFIED means any.
pub fn status_filter(status: i32) -> Result<Option<TaskStatus>> {
    Ok(match v1::TaskStatus::try_from(status) {
        Ok(v1::TaskStatus::Unspecified) => None,
        Ok(v1::TaskStatus::Pending) => Some(TaskStatus::Pending),
        Ok(v1::TaskStatus::Running) => Some(TaskStatus::Running),
        Ok(v1::TaskStatus::Completed) => Some(TaskStatus::Completed),
        Ok(v1::TaskStatus::Dead) => Some(TaskStatus::Dead),
        Ok(v1::TaskStatus::Cancelled) => Some(TaskStatus::Cancelled),
        Ok(v1::TaskStatus::Expired) => Some(TaskStatus::Expired),
        Err(_) => {
            return Err(Error::InvalidArgument(format!(
                "status {status} is unknown: use TASK_STATUS_PENDING, _RUNNING, _COMPLETED, _DEAD, _CANCELLED or _EXPIRED"
            )));
        }
    })
}

/// A bulk request's selector, checked: a registered-looking type, and a
/// status `allowed` (the first is the default when none is given).
pub fn task_selector(
    selector: Option<&v1::TaskSelector>,
    allowed: &[TaskStatus],
    action: &str,
) -> Result<TaskSelector> {
    let selector = selector.cloned().unwrap_or_default();
    if selector.task_type.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "selector.task_type is required: name the type whose tasks to {action}"
        )));
    }
    check_name("selector.task_type", &selector.task_type).map_err(Error::InvalidArgument)?;
    let names: Vec<String> = allowed.iter().map(|s| s.as_str().to_uppercase()).collect();
    let status = match status_filter(selector.status)? {
        None => allowed[0],
        Some(status) if allowed.contains(&status) => status,
        Some(status) => {
            return Err(Error::InvalidArgument(format!(
                "selector.status {} is not one that {action} takes: choose {}",
                status.as_str().to_uppercase(),
                names.join(" or ")
            )));
        }
    };
    Ok(TaskSelector {
        task_type: selector.task_type,
        status,
        created_after: optional_instant("selector.created_after", &selector.created_after)?,
        created_before: optional_instant("selector.created_before", &selector.created_before)?,
        error_contains: Some(selector.error_contains).filter(|text| !text.is_empty()),
    })
}

/// The filter of a `ListTasks` request, returning at most `limit` tasks.
pub fn task_filter(request: v1::ListTasksRequest, limit: u32) -> Result<TaskFilter> {
    let before = match request.page_token.as_str() {
        "" => None,
        token => Some(Uuid::parse_str(token).map_err(|_| {
            Error::InvalidArgument("page_token is not one this server issued: pass next_page_token from the previous answer".into())
        })?),
    };
    let parent_id = match request.parent_id.as_str() {
        "" => None,
        id => Some(Uuid::parse_str(id).map_err(|_| {
            Error::InvalidArgument(format!(
                "parent_id '{id}' is not a task id: pass the id of the task whose follow-ups to list"
            ))
        })?),
    };
    Ok(TaskFilter {
        task_type: Some(request.task_type).filter(|t| !t.is_empty()),
        domain: Some(request.domain).filter(|d| !d.is_empty()),
        status: status_filter(request.status)?,
        before,
        created_after: optional_instant("created_after", &request.created_after)?,
        created_before: optional_instant("created_before", &request.created_before)?,
        error_contains: Some(request.error_contains).filter(|text| !text.is_empty()),
        parent_id,
        from_id: None,
        limit,
    })
}

fn optional_instant(field: &str, at: &Option<Timestamp>) -> Result<Option<DateTime<Utc>>> {
    at.as_ref().map(|at| instant(field, at)).transpose()
}

/// The wire form of a task.
pub fn proto_task(task: &Task) -> v1::Task {
    v1::Task {
        id: task.id.to_string(),
        task_type: task.task_type.clone(),
        domain: task.domain.clone(),
        payload: Some(json_to_struct(&task.payload)),
        status: proto_status(task.status) as i32,
        priority: task.priority,
        attempts: task.attempts,
        max_attempts: task.max_attempts,
        run_at: Some(timestamp(task.run_at)),
        created_at: Some(timestamp(task.created_at)),
        started_at: task.started_at.map(timestamp),
        finished_at: task.finished_at.map(timestamp),
        result: task.result.as_ref().map(json_to_struct),
        last_error: task.last_error.clone().unwrap_or_default(),
        idempotency_key: task.idempotency_key.clone().unwrap_or_default(),
        handler_version: task.handler_version.clone(),
        metadata: task.metadata.clone().into_iter().collect(),
        timeout: Some(proto_duration(task.timeout)),
        updated_at: Some(timestamp(task.updated_at)),
        retry_policy: Some(proto_retry_policy(&task.retry_policy)),
        required_labels: task.required_labels.clone().into_iter().collect(),
        waiting_for: String::new(),
        parent_id: task.parent_id.map(|id| id.to_string()).unwrap_or_default(),
        progress: task.progress.as_ref().map(|progress| v1::TaskProgress {
            fraction: progress.fraction,
            message: progress.message.clone(),
            reported_at: Some(timestamp(progress.reported_at)),
        }),
        start_by: task.start_by.map(timestamp),
    }
}

/// The wire form of an attempt.
pub fn proto_attempt(attempt: &Attempt) -> v1::TaskAttempt {
    v1::TaskAttempt {
        attempt: attempt.attempt,
        agent_id: attempt.agent_id.clone(),
        session_id: attempt.session_id.clone(),
        started_at: Some(timestamp(attempt.started_at)),
        finished_at: attempt.finished_at.map(timestamp),
        outcome: attempt.outcome.clone().unwrap_or_default(),
        error: attempt.error.clone().unwrap_or_default(),
    }
}

/// The wire form of a task type, with its live agent count.
pub fn handler_info(
    task_type: &TaskType,
    live_agents: u32,
    health: Vec<v1::AgentHandlerHealth>,
) -> v1::HandlerInfo {
    v1::HandlerInfo {
        task_type: task_type.task_type.clone(),
        domain: task_type.domain.clone(),
        description: task_type.description.clone(),
        versions: task_type.versions.clone(),
        capabilities: task_type.capabilities.clone(),
        registered_at: Some(timestamp(task_type.registered_at)),
        updated_at: Some(timestamp(task_type.updated_at)),
        live_agents,
        default_max_attempts: task_type.default_max_attempts,
        default_timeout: Some(proto_duration(task_type.default_timeout)),
        default_retry_policy: Some(proto_retry_policy(&task_type.default_retry_policy)),
        health,
        flow: Some(proto_flow_policy(&task_type.flow)),
    }
}

/// A flow-control policy on the wire (zero and empty limit nothing).
pub fn proto_flow_policy(policy: &FlowPolicy) -> v1::FlowPolicy {
    v1::FlowPolicy {
        paused: policy.paused,
        refuse_enqueues: policy.refuse_enqueues,
        max_running: policy.max_running.unwrap_or(0),
        concurrency_key: policy
            .concurrency_key
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        max_running_per_key: policy.max_running_per_key.unwrap_or(0),
        rate_limit: policy
            .rate_limit
            .map(|rate| rate.to_string())
            .unwrap_or_default(),
        rate_limit_key: policy
            .rate_limit_key
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
    }
}

/// The limits an agent declares for a type, as a change that replaces
/// every limit (pausing is left to operators), checked to fit together.
pub fn declared_flow(limits: &v1::FlowLimits) -> Result<FlowChange> {
    let change = flow_change(&v1::SetTaskTypePolicyRequest {
        task_type: String::new(),
        paused: None,
        max_running: Some(limits.max_running),
        concurrency_key: Some(limits.concurrency_key.clone()),
        max_running_per_key: Some(limits.max_running_per_key),
        rate_limit: Some(limits.rate_limit.clone()),
        rate_limit_key: Some(limits.rate_limit_key.clone()),
        refuse_enqueues: None,
    })?;
    change.apply_to(&FlowPolicy::default())?;
    Ok(change)
}

/// A `SetTaskTypePolicyRequest` as a change, its key path checked.
pub fn flow_change(request: &v1::SetTaskTypePolicyRequest) -> Result<FlowChange> {
    Ok(FlowChange {
        paused: request.paused,
        refuse_enqueues: request.refuse_enqueues,
        max_running: request.max_running,
        concurrency_key: key_path_change("concurrency_key", request.concurrency_key.as_deref())?,
        max_running_per_key: request.max_running_per_key,
        rate_limit: request
            .rate_limit
            .as_deref()
            .map(|text| {
                (!text.is_empty())
                    .then(|| RateLimit::parse(text))
                    .transpose()
            })
            .transpose()?,
        rate_limit_key: key_path_change("rate_limit_key", request.rate_limit_key.as_deref())?,
    })
}

/// A key path given as `option`: unset keeps it, empty removes it.
fn key_path_change(option: &str, path: Option<&str>) -> Result<Option<Option<KeyPath>>> {
    path.map(|path| {
        (!path.is_empty())
            .then(|| KeyPath::parse(option, path))
            .transpose()
    })
    .transpose()
}

/// Parses a task id, naming the problem if it is not a UUID.
pub fn task_id(id: &str) -> Result<Uuid> {
    if id.is_empty() {
        return Err(Error::InvalidArgument(
            "id is required: pass the id EnqueueTask returned".into(),
        ));
    }
    Uuid::parse_str(id).map_err(|_| {
        Error::InvalidArgument(format!(
            "id '{}' is not a task id: task ids are UUIDs such as 0193…",
            id.escape_debug()
        ))
    })
}

/// Validates an enqueue request; `position` names it within a batch.
pub fn new_task(
    request: v1::EnqueueTaskRequest,
    config: &QueueConfig,
    position: Option<usize>,
) -> Result<NewTask> {
    let at = position
        .map(|i| format!("tasks[{i}]: "))
        .unwrap_or_default();
    let invalid = |message: String| Error::InvalidArgument(format!("{at}{message}"));
    if request.task_type.is_empty() {
        return Err(invalid("task_type is required: name a registered task type, e.g. \"welcome_email\" (RegistryService.ListTaskTypes lists them)".into()));
    }
    check_name("task_type", &request.task_type).map_err(invalid)?;
    let Some(payload) = request.payload else {
        return Err(invalid(
            "payload is required: send a JSON object, {} when the task needs no input".into(),
        ));
    };
    if let Some(path) = first_non_finite(&payload) {
        return Err(invalid(format!(
            "payload.{path} is NaN or infinite, which JSON cannot hold: send a finite number, null or a string"
        )));
    }
    let payload_bytes = payload.encoded_len();
    let payload = struct_to_json(&payload);
    let size = serde_json::to_vec(&payload)
        .map(|bytes| bytes.len())
        .unwrap_or(usize::MAX);
    if size > config.max_payload_bytes {
        return Err(invalid(format!(
            "payload is {size} bytes of JSON; the limit is {} bytes: store large data elsewhere and pass a reference (an URL or a key)",
            config.max_payload_bytes
        )));
    }
    if request.idempotency_key.len() > MAX_IDEMPOTENCY_KEY_BYTES {
        return Err(invalid(format!(
            "idempotency_key is {} bytes; the limit is {MAX_IDEMPOTENCY_KEY_BYTES} bytes",
            request.idempotency_key.len()
        )));
    }
    if request.handler_version.len() > MAX_HANDLER_VERSION_BYTES {
        return Err(invalid(format!(
            "handler_version is {} bytes; the limit is {MAX_HANDLER_VERSION_BYTES} bytes",
            request.handler_version.len()
        )));
    }
    if request.max_attempts > MAX_ATTEMPTS_LIMIT {
        return Err(invalid(format!(
            "max_attempts is {}; the limit is {MAX_ATTEMPTS_LIMIT} (0 takes the task type's default)",
            request.max_attempts
        )));
    }
    if request.metadata.len() > MAX_METADATA_ENTRIES {
        return Err(invalid(format!(
            "metadata has {} entries; the limit is {MAX_METADATA_ENTRIES}",
            request.metadata.len()
        )));
    }
    if request.required_labels.len() > MAX_REQUIRED_LABELS
        || request
            .required_labels
            .iter()
            .any(|(k, v)| k.is_empty() || k.len() > MAX_LABEL_BYTES || v.len() > MAX_LABEL_BYTES)
    {
        return Err(invalid(format!(
            "required_labels must have at most {MAX_REQUIRED_LABELS} pairs, each with a non-empty key and a key and value of at most {MAX_LABEL_BYTES} bytes, e.g. {{\"region\": \"eu\"}}"
        )));
    }
    let metadata_bytes: usize = request
        .metadata
        .iter()
        .map(|(k, v)| k.len() + v.len())
        .sum();
    if metadata_bytes > MAX_METADATA_BYTES {
        return Err(invalid(format!(
            "metadata is {metadata_bytes} bytes; the limit is {MAX_METADATA_BYTES} bytes: keep metadata to short labels and put data in the payload"
        )));
    }
    // Whatever the limits are set to, the task must reach its agent.
    let delivered = payload_bytes
        + metadata_bytes
        + request.task_type.len()
        + request.idempotency_key.len()
        + request.handler_version.len()
        + ASSIGNMENT_ENVELOPE_BYTES;
    if delivered > config.max_message_bytes {
        return Err(invalid(format!(
            "this task would be {delivered} bytes delivered to an agent; the message limit is {} bytes (--max-message-bytes): make the payload smaller",
            config.max_message_bytes
        )));
    }
    let timeout = request
        .timeout
        .as_ref()
        .map(|t| std_duration("timeout", t))
        .transpose()
        .map_err(|e| invalid(e.to_string()))?;
    if timeout.is_some_and(|t| t.is_zero() || t > MAX_TIMEOUT) {
        return Err(invalid(
            "timeout must be more than 0s and at most 7 days".into(),
        ));
    }
    let run_at = request
        .run_at
        .as_ref()
        .map(|t| instant("run_at", t))
        .transpose()
        .map_err(|e| invalid(e.to_string()))?;
    let start_by = request
        .start_by
        .as_ref()
        .map(|t| instant("start_by", t))
        .transpose()
        .map_err(|e| invalid(e.to_string()))?;
    check_start_by(start_by, run_at, Utc::now()).map_err(invalid)?;
    let retry_policy =
        retry_policy_patch(request.retry_policy.as_ref()).map_err(|e| invalid(e.to_string()))?;
    let parent_id = match request.parent_id.as_str() {
        "" => None,
        id => Some(Uuid::parse_str(id).map_err(|_| {
            invalid(format!(
                "parent_id '{id}' is not a task id: pass the id EnqueueTask returned for the parent"
            ))
        })?),
    };
    let idempotency_window = request
        .idempotency_window
        .as_ref()
        .map(|window| std_duration("idempotency_window", window))
        .transpose()?;
    if idempotency_window.is_some() && request.idempotency_key.is_empty() {
        return Err(Error::InvalidArgument(
            "idempotency_window needs an idempotency_key: say which key the window applies to"
                .into(),
        ));
    }
    Ok(NewTask {
        task_type: request.task_type,
        payload,
        priority: request.priority,
        run_at,
        idempotency_key: Some(request.idempotency_key).filter(|k| !k.is_empty()),
        idempotency_window,
        max_attempts: Some(request.max_attempts).filter(|&n| n > 0),
        timeout,
        handler_version: request.handler_version,
        metadata: request.metadata.into_iter().collect::<BTreeMap<_, _>>(),
        retry_policy,
        required_labels: request.required_labels.into_iter().collect(),
        parent_id,
        start_by,
    })
}

/// Checks a task's deadline to start by: in the future, and after its
/// `run_at` (a task may not be due only once it can no longer start).
fn check_start_by(
    start_by: Option<DateTime<Utc>>,
    run_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> std::result::Result<(), String> {
    let Some(start_by) = start_by else {
        return Ok(());
    };
    if start_by <= now {
        return Err(format!(
            "start_by {} has passed: give a deadline in the future, or leave start_by unset",
            start_by.to_rfc3339()
        ));
    }
    if let Some(run_at) = run_at.filter(|&run_at| start_by <= run_at) {
        return Err(format!(
            "start_by {} is not after run_at {}: the task could never start; move start_by later or run_at earlier",
            start_by.to_rfc3339(),
            run_at.to_rfc3339()
        ));
    }
    Ok(())
}

/// The assignment that sends a claimed task to its agent.
pub fn assignment(task: &Task, lease_expires_at: DateTime<Utc>) -> v1::ServerMessage {
    v1::ServerMessage {
        message: Some(v1::server_message::Message::Assignment(v1::Assignment {
            task_id: task.id.to_string(),
            task_type: task.task_type.clone(),
            payload: Some(json_to_struct(&task.payload)),
            attempt: task.attempts,
            handler_version: task.handler_version.clone(),
            metadata: task.metadata.clone().into_iter().collect(),
            lease_expires_at: Some(timestamp(lease_expires_at)),
            timeout: Some(proto_duration(task.timeout)),
            domain: task.domain.clone(),
        })),
    }
}

/// The `heartbeat_ack` message telling an agent its heartbeat arrived.
pub fn heartbeat_ack() -> v1::ServerMessage {
    v1::ServerMessage {
        message: Some(v1::server_message::Message::HeartbeatAck(
            v1::HeartbeatAck {},
        )),
    }
}

/// The `cancel` message telling an agent to stop a task.
pub fn cancel(task_id: Uuid, reason: String) -> v1::ServerMessage {
    v1::ServerMessage {
        message: Some(v1::server_message::Message::Cancel(v1::Cancel {
            task_id: task_id.to_string(),
            reason,
        })),
    }
}
