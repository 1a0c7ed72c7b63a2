//! The control plane's domain types, independent of gRPC and of any database.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// A JSON object: what payloads and results are.
pub type JsonObject = serde_json::Map<String, serde_json::Value>;

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskStatus {
    /// Waiting for its `run_at` and a free agent slot.
    Pending,
    /// Leased to an agent.
    Running,
    /// Finished successfully.
    Completed,
    /// Failed for good.
    Dead,
    /// Cancelled by a client.
    Cancelled,
    /// Not started by its `start_by`; never run.
    Expired,
}

impl TaskStatus {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Pending => "pending",
            TaskStatus::Running => "running",
            TaskStatus::Completed => "completed",
            TaskStatus::Dead => "dead",
            TaskStatus::Cancelled => "cancelled",
            TaskStatus::Expired => "expired",
        }
    }

    /// Parses the name stored in the database.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "pending" => TaskStatus::Pending,
            "running" => TaskStatus::Running,
            "completed" => TaskStatus::Completed,
            "dead" => TaskStatus::Dead,
            "cancelled" => TaskStatus::Cancelled,
            "expired" => TaskStatus::Expired,
            _ => return None,
        })
    }

    /// True when the task will not change again unless retried.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskStatus::Completed | TaskStatus::Dead | TaskStatus::Cancelled | TaskStatus::Expired
        )
    }
}

/// How failed attempts are retried (see [`crate::backoff::retry_delay`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// The delay before the first retry.
    pub initial_backoff: Duration,
    /// How much each further retry's delay grows (at least 1).
    pub backoff_factor: f64,
    /// No delay exceeds this.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial_backoff: Duration::from_secs(1),
            backoff_factor: 2.0,
            max_backoff: Duration::from_secs(300),
        }
    }
}

/// A partial [`RetryPolicy`]: the fields set override a base policy.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RetryPolicyPatch {
    /// Overrides `initial_backoff`.
    pub initial_backoff: Option<Duration>,
    /// Overrides `backoff_factor`.
    pub backoff_factor: Option<f64>,
    /// Overrides `max_backoff`.
    pub max_backoff: Option<Duration>,
}

impl RetryPolicyPatch {
    /// `base` with this patch's fields applied.
    pub fn apply_to(&self, base: RetryPolicy) -> RetryPolicy {
        RetryPolicy {
            initial_backoff: self.initial_backoff.unwrap_or(base.initial_backoff),
            backoff_factor: self.backoff_factor.unwrap_or(base.backoff_factor),
            max_backoff: self.max_backoff.unwrap_or(base.max_backoff),
        }
    }
}

/// A stored task.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    /// UUIDv7.
    pub id: Uuid,
    /// The registered type it runs as.
    pub task_type: String,
    /// The domain owning the type.
    pub domain: String,
    /// The handler's input.
    pub payload: JsonObject,
    /// Where it is in its life.
    pub status: TaskStatus,
    /// Higher runs first.
    pub priority: i32,
    /// Attempts started; the current one is the lease's fencing token.
    pub attempts: u32,
    /// Attempts allowed before the task is DEAD.
    pub max_attempts: u32,
    /// How long one attempt may run.
    pub timeout: Duration,
    /// Not delivered before this instant.
    pub run_at: DateTime<Utc>,
    /// When it was enqueued.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// When the latest attempt started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it reached a terminal state.
    pub finished_at: Option<DateTime<Utc>>,
    /// What the handler returned.
    pub result: Option<JsonObject>,
    /// The latest error.
    pub last_error: Option<String>,
    /// Deduplicates enqueues of one type.
    pub idempotency_key: Option<String>,
    /// The handler version asked for ("" when any).
    pub handler_version: String,
    /// Free-form string metadata.
    pub metadata: BTreeMap<String, String>,
    /// How its failed attempts are retried.
    pub retry_policy: RetryPolicy,
    /// Labels its agent must have (see [`crate::engine::routing`]).
    pub required_labels: BTreeMap<String, String>,
    /// The task whose handler enqueued this one.
    pub parent_id: Option<Uuid>,
    /// The latest progress its handler reported.
    pub progress: Option<Progress>,
    /// Not leased to an agent by then, it ends EXPIRED.
    pub start_by: Option<DateTime<Utc>>,
}

/// How far a running task's handler says it is.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Progress {
    /// Done, from 0 to 1.
    pub fraction: f64,
    /// What it is doing, in words.
    pub message: String,
    /// When it said so.
    pub reported_at: DateTime<Utc>,
}

/// A validated request to enqueue one task.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTask {
    /// The registered type to run.
    pub task_type: String,
    /// The handler's input.
    pub payload: JsonObject,
    /// Higher runs first.
    pub priority: i32,
    /// Delay until; `None` is now.
    pub run_at: Option<DateTime<Utc>>,
    /// Deduplication key within the type.
    pub idempotency_key: Option<String>,
    /// How long the key holds; `None`: as long as its task is kept.
    pub idempotency_window: Option<Duration>,
    /// `None` takes the type's default.
    pub max_attempts: Option<u32>,
    /// `None` takes the type's default.
    pub timeout: Option<Duration>,
    /// "" lets the agent choose.
    pub handler_version: String,
    /// Free-form string metadata.
    pub metadata: BTreeMap<String, String>,
    /// Overrides of the type's retry policy.
    pub retry_policy: RetryPolicyPatch,
    /// Labels its agent must have; empty for any agent.
    pub required_labels: BTreeMap<String, String>,
    /// The task this one follows from.
    pub parent_id: Option<Uuid>,
    /// The deadline to start by; `None` is none.
    pub start_by: Option<DateTime<Utc>>,
}

/// The outcome of enqueueing one task.
#[derive(Debug, Clone, PartialEq)]
pub struct Enqueued {
    /// The stored task (the existing one when the idempotency key matched).
    pub task: Task,
    /// False when an idempotency key matched an existing task.
    pub created: bool,
}

/// What the control plane knows of a task type.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskType {
    /// Its name.
    pub task_type: String,
    /// The domain that owns it.
    pub domain: String,
    /// What it does, in words.
    pub description: String,
    /// Handler versions served, e.g. `["v1", "v2"]`.
    pub versions: Vec<String>,
    /// Free-form capability tags.
    pub capabilities: Vec<String>,
    /// Attempts for tasks that set none.
    pub default_max_attempts: u32,
    /// Timeout for tasks that set none.
    pub default_timeout: Duration,
    /// Retry policy for tasks that set none.
    pub default_retry_policy: RetryPolicy,
    /// First registration.
    pub registered_at: DateTime<Utc>,
    /// Latest registration.
    pub updated_at: DateTime<Utc>,
    /// The operator's flow-control policy (see [`crate::engine::flow`]).
    pub flow: crate::engine::flow::FlowPolicy,
}

/// A validated registration of one task type.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskTypeSpec {
    /// Its name.
    pub task_type: String,
    /// The domain that owns it.
    pub domain: String,
    /// What it does, in words.
    pub description: String,
    /// Handler versions served.
    pub versions: Vec<String>,
    /// Free-form capability tags.
    pub capabilities: Vec<String>,
    /// `None` keeps the stored value or the server default.
    pub default_max_attempts: Option<u32>,
    /// `None` keeps the stored value or the server default.
    pub default_timeout: Option<Duration>,
    /// Overrides of the stored (or the server's default) retry policy.
    pub default_retry_policy: RetryPolicyPatch,
    /// Flow-control limits its agent declares, replacing the stored ones;
    /// `None` keeps those.
    pub flow: Option<crate::engine::flow::FlowChange>,
}

/// What one claim may take: ready tasks of `task_types` that name no
/// handler version or one of `versions`, and whose required labels are all
/// among `labels` (see [`crate::engine::routing`]).
#[derive(Debug, Clone, Copy)]
pub struct Claimant<'a> {
    /// The types, in the order the claim takes them.
    pub task_types: &'a [String],
    /// `type<TAB>version` of every version the claim may take
    /// ([`crate::engine::routing::version_key`]).
    pub versions: &'a [String],
    /// The agent's labels.
    pub labels: &'a BTreeMap<String, String>,
    /// Types of the agent under a flow-control policy (paused or limited,
    /// [`crate::engine::flow`]): claimed within their limits, before the
    /// rest. Not in `task_types`.
    pub limited: &'a [String],
}

/// Which tasks a bulk retry, cancel or purge takes: every condition holds.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskSelector {
    /// Their type.
    pub task_type: String,
    /// Their status.
    pub status: TaskStatus,
    /// Created at or after this.
    pub created_after: Option<DateTime<Utc>>,
    /// Created before this.
    pub created_before: Option<DateTime<Utc>>,
    /// Their last error contains this text.
    pub error_contains: Option<String>,
}

/// Who holds a lease and until when.
#[derive(Debug, Clone, PartialEq)]
pub struct Lease {
    /// The agent stream holding it.
    pub session_id: Uuid,
    /// The agent instance.
    pub agent_id: Uuid,
    /// When it lapses unless extended.
    pub expires_at: DateTime<Utc>,
}

/// How an attempt ended, as reported by its agent.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptResult {
    /// The handler succeeded.
    Completed(JsonObject),
    /// The handler failed.
    Failed {
        /// The handler's error.
        error: String,
        /// Whether another attempt may succeed (if attempts remain).
        retryable: bool,
        /// A uniform sample in `[0, 1)` that jitters the retry delay.
        jitter: f64,
        /// The least delay before the retry that the handler asked for.
        retry_after: Option<Duration>,
    },
}

impl AttemptResult {
    /// A failure, with a fresh jitter sample for its retry delay.
    pub fn failed(error: String, retryable: bool) -> Self {
        AttemptResult::Failed {
            error,
            retryable,
            jitter: rand::random::<f64>(),
            retry_after: None,
        }
    }

    /// This failure, its retry waiting at least `after` (within the policy).
    pub fn retrying_after(self, after: Option<Duration>) -> Self {
        match self {
            AttemptResult::Failed {
                error,
                retryable,
                jitter,
                ..
            } => AttemptResult::Failed {
                error,
                retryable,
                jitter,
                retry_after: after,
            },
            completed => completed,
        }
    }
}

/// What a recorded result left of its task: what the server counts and
/// announces afterwards. The payload and result are not read back: nobody
/// on that path needs them, and decoding them cost more than the write.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedTask {
    /// The task's id.
    pub id: Uuid,
    /// Its type.
    pub task_type: String,
    /// Its status now: COMPLETED, PENDING (a retry) or DEAD.
    pub status: TaskStatus,
    /// When the attempt that ended began.
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished for good (not set for a retry).
    pub finished_at: Option<DateTime<Utc>>,
    /// When the result was recorded.
    pub updated_at: DateTime<Utc>,
    /// The trace context it was enqueued with (`traceparent` metadata).
    pub traceparent: Option<String>,
}

/// What a reported result did.
#[derive(Debug, Clone, PartialEq)]
pub enum ResultOutcome {
    /// The result was recorded; what it left of the task.
    Applied(RecordedTask),
    /// The attempt is no longer the current lease; nothing changed.
    Stale,
}

/// One attempt of a task, as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    /// The attempt number (the lease's fencing token).
    pub attempt: u32,
    /// The agent instance that ran it.
    pub agent_id: String,
    /// The stream it was assigned on.
    pub session_id: String,
    /// When it was assigned.
    pub started_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
    /// How it ended: completed, failed, lost or cancelled.
    pub outcome: Option<String>,
    /// Its error, if it failed.
    pub error: Option<String>,
}

/// A handler's latest self-check, as an agent reported it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HandlerCheck {
    /// The task type whose handler checked itself.
    pub task_type: String,
    /// Whether it can do its work.
    pub healthy: bool,
    /// What was checked or what is wrong.
    pub message: String,
}

/// What changes during an agent session's life, refreshed every heartbeat
/// interval by the replica that owns the stream.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SessionStatus {
    /// Current slots (credit).
    pub slots: u32,
    /// Assignments not answered yet.
    pub running: u32,
    /// Whether the agent asked for no new work.
    pub draining: bool,
    /// The latest message from the agent.
    pub last_seen_at: DateTime<Utc>,
    /// The handlers' latest self-checks.
    pub health: Vec<HandlerCheck>,
    /// When the agent sent them.
    pub health_checked_at: Option<DateTime<Utc>>,
}

/// An agent session, as every replica sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentSession {
    /// The stream's id.
    pub session_id: Uuid,
    /// The agent instance.
    pub agent_id: Uuid,
    /// The name the agent gave.
    pub agent_name: String,
    /// Domains it serves.
    pub domains: Vec<String>,
    /// Task types it serves.
    pub task_types: Vec<String>,
    /// Labels it sent.
    pub labels: BTreeMap<String, String>,
    /// Feature flags it sent.
    pub feature_flags: BTreeMap<String, bool>,
    /// The handler versions it serves, per task type (types it serves with
    /// no versions are left out).
    pub handler_versions: BTreeMap<String, Vec<String>>,
    /// When the stream registered.
    pub connected_at: DateTime<Utc>,
    /// Its state as of the latest refresh.
    pub status: SessionStatus,
}

/// How many tasks of one type are in each status.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TypeStats {
    /// The task type.
    pub task_type: String,
    /// Its domain.
    pub domain: String,
    /// Counts by status.
    pub by_status: std::collections::BTreeMap<&'static str, u64>,
    /// Completed since the `since` instant asked for.
    pub completed_recently: u64,
    /// Dead since the `since` instant asked for.
    pub dead_recently: u64,
}

/// Filters and paging for listing tasks (newest first).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskFilter {
    /// Only this type.
    pub task_type: Option<String>,
    /// Only this domain.
    pub domain: Option<String>,
    /// Only this status.
    pub status: Option<TaskStatus>,
    /// Only tasks older than this id (the page token).
    pub before: Option<Uuid>,
    /// Only tasks created at or after this.
    pub created_after: Option<DateTime<Utc>>,
    /// Only tasks created before this.
    pub created_before: Option<DateTime<Utc>>,
    /// Only tasks whose last error contains this text.
    pub error_contains: Option<String>,
    /// Only the follow-ups of this task.
    pub parent_id: Option<Uuid>,
    /// Only this task and newer ones: the window a listing reads first
    /// (see `Dialect::listing_window`).
    pub from_id: Option<Uuid>,
    /// At most this many.
    pub limit: u32,
}
