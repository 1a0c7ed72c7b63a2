//! Recurring work: schedules that enqueue a task at each fire time.
//!
//! - [`cadence`]: when a schedule fires (cron in a time zone, or an interval);
//! - [`model`]: the schedule, its policies and its runs;
//! - [`plan`]: what a due schedule does at an instant, as a pure function.
//!
//! Storage is in `store/sql/schedules.rs`; the loop that fires due
//! schedules is `maintenance/schedules.rs`; `ScheduleService` is
//! `api/schedules.rs`.
//!
//! Exactly once: a schedule's next fire time and a version live in its
//! row. A firing is planned from one version and written in the same
//! transaction as the tasks it enqueues, conditional on that version still
//! being current, so of two replicas firing the same schedule one commits
//! and the other changes nothing. Each task also carries the idempotency
//! key [`fire_key`] of its fire time, so a fire time can never make two
//! tasks even across a version change.

pub mod cadence;
pub mod model;
pub mod plan;

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use rand::Rng;

pub use cadence::Cadence;
pub use model::{CatchUp, Overlap, Schedule, ScheduleRun, ScheduleSpec};
pub use plan::{Advance, Firing, PlannedRun, RunPlan, SkipReason};

use crate::error::Error;
use crate::model::NewTask;

/// The metadata key naming the schedule that enqueued a task.
pub const SCHEDULE_METADATA: &str = "taskplane.schedule";

/// The metadata key holding the fire time a scheduled task stands for.
pub const FIRE_AT_METADATA: &str = "taskplane.fire_at";

/// The idempotency key of the task of `schedule`'s fire time `fire_at`.
pub fn fire_key(schedule: &str, fire_at: DateTime<Utc>) -> String {
    format!("schedule:{schedule}:{}", fire_at.timestamp_millis())
}

/// The error when no schedule has `name`.
pub fn unknown_schedule(name: &str) -> Error {
    Error::NotFound(format!(
        "no schedule is named '{name}': ScheduleService.ListSchedules lists them"
    ))
}

/// The task a run of `spec` enqueues for `fire_at`: the spec's task, keyed
/// by `key`, starting at the fire time delayed by a random amount up to
/// `jitter`, with the schedule and the fire time in its metadata.
pub fn task_for_run(
    spec: &ScheduleSpec,
    fire_at: DateTime<Utc>,
    key: String,
    jitter: Duration,
) -> NewTask {
    let mut task = spec.task.clone();
    let jitter_ms = jitter.as_millis() as i64;
    let jitter = if jitter_ms > 0 {
        rand::rng().random_range(0..jitter_ms)
    } else {
        0
    };
    task.run_at = Some(fire_at + chrono::Duration::milliseconds(jitter));
    task.idempotency_key = Some(key);
    task.metadata
        .insert(SCHEDULE_METADATA.to_owned(), spec.name.clone());
    task.metadata.insert(
        FIRE_AT_METADATA.to_owned(),
        fire_at.to_rfc3339_opts(SecondsFormat::Millis, true),
    );
    task
}
