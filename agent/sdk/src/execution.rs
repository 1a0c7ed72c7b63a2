//! Running one assignment: the handler's context, its timeout and
//! cancellation, the `task` span, metrics, and the `result` message.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use prost::Message as _;
use taskplane_proto::json::{json_to_struct, struct_to_json};
use taskplane_proto::limits::{MAX_ERROR_BYTES, bounded_text};
use taskplane_proto::trace::{TRACEPARENT, TraceParent};
use taskplane_proto::v1::agent_message::Message as AgentMessageKind;
use taskplane_proto::v1::{AgentMessage, Assignment, Completed, Failed, task_result};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::follow_up::FollowUps;
use crate::handler::{TaskContext, TaskError, TaskHandler, TaskResult};
use crate::metrics::AgentMetrics;
use crate::progress::ProgressReports;
use crate::registry::TaskRegistry;

/// How long a cancelled or timed-out handler may take to stop by itself
/// before its future is dropped.
const CANCEL_GRACE: Duration = Duration::from_secs(1);

/// Runs one assignment and reports its result; returns the task id and the
/// attempt. `running` is dropped as the handler returns, before its result
/// waits for room on the stream. The
/// handler runs in a `task` span carrying the task id and, when the task
/// came with a W3C `traceparent`, its trace id and the enqueuer's span id.
/// Where a run reports and what it may reach: the session's stream, its
/// message limit, and its follow-up client.
pub(crate) struct Reporting {
    /// Where the result goes.
    pub outbound: mpsc::Sender<AgentMessage>,
    /// The largest message the server accepts.
    pub max_message_bytes: usize,
    /// How the handler enqueues follow-ups.
    pub follow_ups: FollowUps,
}

pub(crate) async fn run_assignment(
    registry: Arc<TaskRegistry>,
    metrics: Arc<AgentMetrics>,
    assignment: Assignment,
    cancel: CancellationToken,
    reporting: Reporting,
    running: impl Send,
) -> (String, u32) {
    let attempt = assignment.attempt;
    let span = tracing::info_span!(
        "task",
        task_id = %assignment.task_id,
        task_type = %assignment.task_type,
        attempt = assignment.attempt,
        trace_id = tracing::field::Empty,
        parent_span_id = tracing::field::Empty,
    );
    if let Some(trace) = assignment
        .metadata
        .get(TRACEPARENT)
        .and_then(|value| TraceParent::parse(value))
    {
        span.record("trace_id", trace.trace_id.as_str());
        span.record("parent_span_id", trace.parent_id.as_str());
    }
    metrics.started();
    let started = std::time::Instant::now();
    let task_type = assignment.task_type.clone();
    let (task_id, error) = run_in_span(registry, assignment, cancel, reporting, running)
        .instrument(span)
        .await;
    metrics.finished(&task_type, error.as_ref(), started.elapsed().as_secs_f64());
    (task_id, attempt)
}

/// Runs the handler and reports; returns the task id and the error, if any.
async fn run_in_span(
    registry: Arc<TaskRegistry>,
    assignment: Assignment,
    cancel: CancellationToken,
    reporting: Reporting,
    running: impl Send,
) -> (String, Option<TaskError>) {
    let timeout = assignment
        .timeout
        .and_then(|d| Duration::try_from(d).ok())
        .unwrap_or(Duration::from_secs(300));
    let began = std::time::Instant::now();
    let mut context = task_context(&assignment, timeout, cancel.clone());
    context.follow_ups = Some(reporting.follow_ups);
    context.progress = Some(ProgressReports::new(
        reporting.outbound.clone(),
        &assignment.task_id,
        assignment.attempt,
    ));
    let outcome = run_task(&registry, context, timeout, cancel).await;
    let ran_for = began.elapsed();
    drop(running);
    let (message, error) =
        result_message(&assignment, outcome, ran_for, reporting.max_message_bytes);
    if reporting.outbound.send(message).await.is_err() {
        tracing::warn!("stream closed before the result was sent; the server re-queues the task");
    }
    (assignment.task_id, error)
}

/// Runs a task through the registry's handler of its type, with the
/// registry's feature flags, until it returns, `timeout` passes or `cancel`
/// fires: how an agent runs an assignment, and what
/// [`TaskRegistry::process_task`] runs in-process.
pub(crate) async fn run_task(
    registry: &TaskRegistry,
    mut context: TaskContext,
    timeout: Duration,
    cancel: CancellationToken,
) -> Result<TaskResult, TaskError> {
    let Some(handler) = registry.get_handler(&context.task_type) else {
        return Err(TaskError::Permanent(format!(
            "this agent has no handler for task type '{}'",
            context.task_type
        )));
    };
    context.feature_flags = registry.feature_flags();
    run_handler(handler, context, timeout, cancel).await
}

/// What a handler is given to run `assignment` within `timeout`.
fn task_context(
    assignment: &Assignment,
    timeout: Duration,
    cancel: CancellationToken,
) -> TaskContext {
    TaskContext {
        task_id: assignment.task_id.clone(),
        task_type: assignment.task_type.clone(),
        domain: assignment.domain.clone(),
        payload: serde_json::Value::Object(
            assignment
                .payload
                .as_ref()
                .map(struct_to_json)
                .unwrap_or_default(),
        ),
        metadata: assignment.metadata.clone(),
        attempt: assignment.attempt,
        handler_version: assignment.handler_version.clone(),
        deadline: Utc::now() + chrono::Duration::from_std(timeout).unwrap_or(chrono::Duration::MAX),
        cancellation: cancel,
        feature_flags: Arc::default(),
        follow_ups: None,
        progress: None,
    }
}

/// Runs a handler until it returns, `timeout` passes or `cancel` fires.
/// Cancellation is cooperative first: the token fires and the handler gets
/// [`CANCEL_GRACE`] to stop by itself; after that its future is dropped.
async fn run_handler(
    handler: &dyn TaskHandler,
    context: TaskContext,
    timeout: Duration,
    cancel: CancellationToken,
) -> Result<TaskResult, TaskError> {
    let work = handler.handle(context);
    tokio::pin!(work);
    let stopped = tokio::select! {
        outcome = &mut work => Ok(outcome),
        () = tokio::time::sleep(timeout) => Err(TaskError::Timeout(timeout)),
        () = cancel.cancelled() => Err(TaskError::Cancelled("the control plane cancelled the task".into())),
    };
    match stopped {
        Ok(outcome) => outcome,
        Err(reason) => {
            cancel.cancel();
            let _ = tokio::time::timeout(CANCEL_GRACE, work).await;
            Err(reason)
        }
    }
}

/// The `result` message reporting how `assignment` ended after its handler
/// ran for `ran_for`, and the error it ended with, if any.
fn result_message(
    assignment: &Assignment,
    outcome: Result<TaskResult, TaskError>,
    ran_for: Duration,
    max_message_bytes: usize,
) -> (AgentMessage, Option<TaskError>) {
    let error = match outcome {
        Ok(result) => {
            let completed = task_result::Outcome::Completed(Completed {
                result: Some(json_to_struct(&result.output)),
            });
            let message = reporting(assignment, completed, ran_for);
            let size = message.encoded_len();
            if size <= max_message_bytes {
                tracing::info!("task completed");
                return (message, None);
            }
            // Sent, it would end the stream and every attempt it carries.
            TaskError::Permanent(format!(
                "the handler's result is {size} bytes encoded, over the server's message limit of {max_message_bytes} bytes: store large results elsewhere and return a reference"
            ))
        }
        Err(error) => error,
    };
    tracing::warn!(%error, "task failed");
    let failed = task_result::Outcome::Failed(Failed {
        error: bounded_text(error.to_string(), MAX_ERROR_BYTES),
        retryable: error.is_retryable(),
        retry_after: error
            .retry_after()
            .and_then(|after| prost_types::Duration::try_from(after).ok()),
    });
    (reporting(assignment, failed, ran_for), Some(error))
}

/// The `result` message reporting `outcome` for the assignment's attempt.
fn reporting(
    assignment: &Assignment,
    outcome: task_result::Outcome,
    ran_for: Duration,
) -> AgentMessage {
    AgentMessage {
        message: Some(AgentMessageKind::Result(taskplane_proto::v1::TaskResult {
            task_id: assignment.task_id.clone(),
            attempt: assignment.attempt,
            outcome: Some(outcome),
            ran_for: prost_types::Duration::try_from(ran_for).ok(),
        })),
    }
}
