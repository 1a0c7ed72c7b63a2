//! Decoding stored rows into domain types, shared by every backend.
//!
//! Both schemas store times as Unix milliseconds (`BIGINT`), durations as
//! milliseconds, JSON as text (PostgreSQL's `jsonb` is selected `::text`) and
//! ids as text (PostgreSQL's `uuid` is selected `::text`), so one decoder
//! serves both through the small [`Columns`] trait.

use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::auth::tokens::TokenRecord;
use crate::auth::{DomainScope, Role};
use crate::engine::flow::{FlowPolicy, KeyPath, RateLimit};
use crate::error::{Error, Result};
use crate::model::{
    AgentSession, Attempt, NewTask, RecordedTask, RetryPolicy, RetryPolicyPatch, Task, TaskStatus,
    TaskType, TypeStats,
};
use crate::schedule::{Cadence, CatchUp, Overlap, Schedule, ScheduleRun, ScheduleSpec};

/// Typed column access, implemented for each backend's row type.
pub trait Columns {
    /// A non-null text column.
    fn text(&self, column: &str) -> Result<String>;
    /// A nullable text column.
    fn optional_text(&self, column: &str) -> Result<Option<String>>;
    /// A non-null integer column.
    fn integer(&self, column: &str) -> Result<i64>;
    /// A nullable integer column.
    fn optional_integer(&self, column: &str) -> Result<Option<i64>>;
    /// A non-null floating-point column.
    fn real(&self, column: &str) -> Result<f64>;
}

macro_rules! impl_columns {
    ($row:ty) => {
        impl Columns for $row {
            fn text(&self, column: &str) -> Result<String> {
                Ok(sqlx::Row::try_get(self, column)?)
            }
            fn optional_text(&self, column: &str) -> Result<Option<String>> {
                Ok(sqlx::Row::try_get(self, column)?)
            }
            fn integer(&self, column: &str) -> Result<i64> {
                Ok(sqlx::Row::try_get(self, column)?)
            }
            fn optional_integer(&self, column: &str) -> Result<Option<i64>> {
                Ok(sqlx::Row::try_get(self, column)?)
            }
            fn real(&self, column: &str) -> Result<f64> {
                Ok(sqlx::Row::try_get(self, column)?)
            }
        }
    };
}

impl_columns!(sqlx::sqlite::SqliteRow);
impl_columns!(sqlx::postgres::PgRow);

/// An instant as stored.
pub fn millis(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

/// An instant from its stored form.
pub fn from_millis(ms: i64) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms).ok_or_else(|| Error::Corrupt(format!("timestamp {ms}")))
}

/// The current instant, truncated to what is stored, so answers read back equal.
pub fn now() -> DateTime<Utc> {
    from_millis(millis(Utc::now())).expect("now is representable")
}

/// A duration as stored.
pub fn duration_millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// JSON text of a value.
pub fn json_text<T: serde::Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).expect("JSON values always serialize")
}

fn parse_json<T: serde::de::DeserializeOwned>(column: &str, text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| Error::Corrupt(format!("{column}: {e}")))
}

/// A task id from its stored text.
pub fn parse_uuid(text: &str) -> Result<Uuid> {
    Uuid::parse_str(text).map_err(|e| Error::Corrupt(format!("task id {text}: {e}")))
}

fn count(row: &impl Columns, column: &str) -> Result<u32> {
    let value = row.integer(column)?;
    u32::try_from(value).map_err(|_| Error::Corrupt(format!("{column} {value}")))
}

fn duration(row: &impl Columns, column: &str) -> Result<Duration> {
    Ok(Duration::from_millis(row.integer(column)?.max(0) as u64))
}

fn time(row: &impl Columns, column: &str) -> Result<DateTime<Utc>> {
    from_millis(row.integer(column)?)
}

fn optional_time(row: &impl Columns, column: &str) -> Result<Option<DateTime<Utc>>> {
    row.optional_integer(column)?.map(from_millis).transpose()
}

fn retry_policy(row: &impl Columns) -> Result<RetryPolicy> {
    Ok(RetryPolicy {
        initial_backoff: duration(row, "retry_initial_ms")?,
        backoff_factor: row.real("retry_factor")?,
        max_backoff: duration(row, "retry_max_ms")?,
    })
}

fn task_status(row: &impl Columns) -> Result<TaskStatus> {
    let status = row.text("status")?;
    TaskStatus::parse(&status).ok_or_else(|| Error::Corrupt(format!("task status {status}")))
}

/// A task from a row holding the task columns.
pub fn task(row: &impl Columns) -> Result<Task> {
    Ok(Task {
        id: parse_uuid(&row.text("id")?)?,
        task_type: row.text("task_type")?,
        domain: row.text("domain")?,
        payload: parse_json("payload", &row.text("payload")?)?,
        status: task_status(row)?,
        priority: i32::try_from(row.integer("priority")?)
            .map_err(|_| Error::Corrupt("priority".into()))?,
        attempts: count(row, "attempts")?,
        max_attempts: count(row, "max_attempts")?,
        timeout: duration(row, "timeout_ms")?,
        run_at: time(row, "run_at")?,
        created_at: time(row, "created_at")?,
        updated_at: time(row, "updated_at")?,
        started_at: optional_time(row, "started_at")?,
        finished_at: optional_time(row, "finished_at")?,
        result: row
            .optional_text("result")?
            .map(|text| parse_json("result", &text))
            .transpose()?,
        last_error: row.optional_text("last_error")?,
        idempotency_key: row.optional_text("idempotency_key")?,
        handler_version: row.text("handler_version")?,
        metadata: parse_json("metadata", &row.text("metadata")?)?,
        retry_policy: retry_policy(row)?,
        required_labels: parse_json("required_labels", &row.text("required_labels")?)?,
        parent_id: row
            .optional_text("parent_id")?
            .map(|id| parse_uuid(&id))
            .transpose()?,
        progress: row
            .optional_text("progress")?
            .map(|text| parse_json("progress", &text))
            .transpose()?,
        start_by: optional_time(row, "start_by")?,
    })
}

/// What a recorded result left, from a row holding the recorded columns
/// (`id`, `task_type`, `status`, `started_at`, `finished_at`, `updated_at`
/// and `traceparent`).
pub fn recorded_task(row: &impl Columns) -> Result<RecordedTask> {
    Ok(RecordedTask {
        id: parse_uuid(&row.text("id")?)?,
        task_type: row.text("task_type")?,
        status: task_status(row)?,
        started_at: optional_time(row, "started_at")?,
        finished_at: optional_time(row, "finished_at")?,
        updated_at: time(row, "updated_at")?,
        traceparent: row.optional_text("traceparent")?,
    })
}

/// A task type from a `task_types` row.
pub fn task_type(row: &impl Columns) -> Result<TaskType> {
    Ok(TaskType {
        task_type: row.text("task_type")?,
        domain: row.text("domain")?,
        description: row.text("description")?,
        versions: parse_json("versions", &row.text("versions")?)?,
        capabilities: parse_json("capabilities", &row.text("capabilities")?)?,
        default_max_attempts: count(row, "default_max_attempts")?,
        default_timeout: duration(row, "default_timeout_ms")?,
        default_retry_policy: retry_policy(row)?,
        registered_at: time(row, "registered_at")?,
        updated_at: time(row, "updated_at")?,
        flow: flow_policy(row)?,
    })
}

/// A type's rate-limit bucket from its `task_types` row: the tokens left
/// and when they were last refilled (Unix milliseconds).
pub fn rate_bucket(row: &impl Columns) -> Result<(f64, i64)> {
    Ok((row.real("rate_tokens")?, row.integer("rate_refilled_at")?))
}

/// A task type's flow-control policy from its `task_types` row.
fn flow_policy(row: &impl Columns) -> Result<FlowPolicy> {
    let limit = |column: &str| -> Result<Option<u32>> {
        row.optional_integer(column)?
            .map(|value| {
                u32::try_from(value).map_err(|_| Error::Corrupt(format!("{column} {value}")))
            })
            .transpose()
    };
    Ok(FlowPolicy {
        paused: row.integer("paused")? != 0,
        refuse_enqueues: row.integer("refuse_enqueues")? != 0,
        max_running: limit("max_running")?,
        concurrency_key: row
            .optional_text("concurrency_key")?
            .map(|path| KeyPath::parse("concurrency_key", &path))
            .transpose()
            .map_err(|error| Error::Corrupt(format!("concurrency_key: {error}")))?,
        max_running_per_key: limit("max_running_per_key")?,
        rate_limit: match (
            limit("rate_limit")?,
            row.optional_integer("rate_window_ms")?,
        ) {
            (Some(count), Some(window)) => Some(RateLimit {
                count,
                per: Duration::from_millis(window.max(0) as u64),
            }),
            _ => None,
        },
        rate_limit_key: row
            .optional_text("rate_limit_key")?
            .map(|path| KeyPath::parse("rate_limit_key", &path))
            .transpose()
            .map_err(|error| Error::Corrupt(format!("rate_limit_key: {error}")))?,
    })
}

/// An attempt from a `task_attempts` row.
pub fn attempt(row: &impl Columns) -> Result<Attempt> {
    Ok(Attempt {
        attempt: count(row, "attempt")?,
        agent_id: row.text("agent_id")?,
        session_id: row.text("session_id")?,
        started_at: time(row, "started_at")?,
        finished_at: optional_time(row, "finished_at")?,
        outcome: row.optional_text("outcome")?,
        error: row.optional_text("error")?,
    })
}

/// Folds `(task_type, domain, status, count, recent)` rows into per-type stats.
pub fn queue_stats(rows: &[impl Columns]) -> Result<Vec<TypeStats>> {
    let mut stats: std::collections::BTreeMap<String, TypeStats> =
        std::collections::BTreeMap::new();
    for row in rows {
        let task_type = row.text("task_type")?;
        let entry = stats.entry(task_type.clone()).or_insert_with(|| TypeStats {
            task_type,
            ..TypeStats::default()
        });
        entry.domain = row.text("domain")?;
        let status = task_status(row)?;
        let count = row.integer("count")?.max(0) as u64;
        let recent = row.integer("recent")?.max(0) as u64;
        entry.by_status.insert(status.as_str(), count);
        match status {
            TaskStatus::Completed => entry.completed_recently = recent,
            TaskStatus::Dead => entry.dead_recently = recent,
            _ => {}
        }
    }
    Ok(stats.into_values().collect())
}

/// An agent session from an `agents` row.
pub fn agent_session(row: &impl Columns) -> Result<AgentSession> {
    Ok(AgentSession {
        session_id: parse_uuid(&row.text("session_id")?)?,
        agent_id: parse_uuid(&row.text("agent_id")?)?,
        agent_name: row.text("agent_name")?,
        domains: parse_json("domains", &row.text("domains")?)?,
        task_types: parse_json("task_types", &row.text("task_types")?)?,
        labels: parse_json("labels", &row.text("labels")?)?,
        feature_flags: parse_json("feature_flags", &row.text("feature_flags")?)?,
        handler_versions: parse_json("handler_versions", &row.text("handler_versions")?)?,
        connected_at: time(row, "connected_at")?,
        status: parse_json("status", &row.text("status")?)?,
    })
}

/// A token as stored (`api_tokens`).
pub fn token_record(row: &impl Columns) -> Result<TokenRecord> {
    Ok(TokenRecord {
        id: row.text("id")?,
        name: row.text("name")?,
        role: Role::parse(&row.text("role")?).map_err(|e| Error::Corrupt(e.to_string()))?,
        domains: DomainScope::from_list(parse_json("domains", &row.text("domains")?)?),
        created_at: time(row, "created_at")?,
        revoked_at: row
            .optional_integer("revoked_at")?
            .map(from_millis)
            .transpose()?,
    })
}

/// A schedule from a `schedules` row joined with its type's `domain`.
pub fn schedule(row: &impl Columns) -> Result<Schedule> {
    let name = row.text("name")?;
    let corrupt = |error: Error| Error::Corrupt(format!("schedule {name}: {error}"));
    let cadence = match (
        row.optional_text("cron")?,
        row.optional_integer("interval_ms")?,
    ) {
        (Some(cron), _) => Cadence::cron(&cron, &row.text("timezone")?).map_err(corrupt)?,
        (None, Some(interval)) => {
            Cadence::every(Duration::from_millis(interval.max(0) as u64)).map_err(corrupt)?
        }
        (None, None) => return Err(Error::Corrupt(format!("schedule {name} has no cadence"))),
    };
    let optional_count = |column: &str| -> Result<Option<u32>> {
        row.optional_integer(column)?
            .map(|value| {
                u32::try_from(value).map_err(|_| Error::Corrupt(format!("{column} {value}")))
            })
            .transpose()
    };
    let spec = ScheduleSpec {
        task: NewTask {
            task_type: row.text("task_type")?,
            payload: parse_json("payload", &row.text("payload")?)?,
            priority: i32::try_from(row.integer("priority")?)
                .map_err(|_| Error::Corrupt(format!("schedule {name}: priority")))?,
            run_at: None,
            idempotency_key: None,
            idempotency_window: None,
            max_attempts: optional_count("max_attempts")?,
            timeout: row
                .optional_integer("timeout_ms")?
                .map(|ms| Duration::from_millis(ms.max(0) as u64)),
            handler_version: row.text("handler_version")?,
            metadata: parse_json("metadata", &row.text("metadata")?)?,
            retry_policy: RetryPolicyPatch::default(),
            required_labels: parse_json("required_labels", &row.text("required_labels")?)?,
            parent_id: None,
            start_by: None,
        },
        cadence,
        jitter: duration(row, "jitter_ms")?,
        overlap: Overlap::parse(&row.text("overlap")?)?,
        catch_up: CatchUp::parse(&row.text("catch_up")?)?,
        catch_up_limit: count(row, "catch_up_limit")?,
        paused: row.integer("paused")? != 0,
        revision: count(row, "revision")?,
        name,
    };
    Ok(Schedule {
        spec,
        domain: row.text("domain")?,
        declared_by: row.text("declared_by")?,
        next_fire_at: time(row, "next_fire_at")?,
        buffered_fire_at: optional_time(row, "buffered_fire_at")?,
        last_task_id: row
            .optional_text("last_task_id")?
            .as_deref()
            .map(parse_uuid)
            .transpose()?,
        version: row.integer("version")?,
        created_at: time(row, "created_at")?,
        updated_at: time(row, "updated_at")?,
    })
}

/// A run from a `schedule_runs` row.
pub fn schedule_run(row: &impl Columns) -> Result<ScheduleRun> {
    Ok(ScheduleRun {
        fire_at: time(row, "fire_at")?,
        task_id: row
            .optional_text("task_id")?
            .as_deref()
            .map(parse_uuid)
            .transpose()?,
        skipped: row.optional_text("skipped")?,
        fire_times: count(row, "fire_times")?,
        triggered: row.integer("triggered")? != 0,
        recorded_at: time(row, "recorded_at")?,
    })
}
