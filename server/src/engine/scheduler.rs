//! Firing schedules: each round reads the schedules that are due, plans
//! what each does now ([`crate::schedule::plan`]) and writes the tasks and
//! the firing in one transaction ([`ControlPlane::store_firing`]). Every
//! replica runs the rounds; of two that fire the same schedule, the one
//! whose write finds the schedule changed (`Aborted`) writes nothing.

use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::engine::plane::ControlPlane;
use crate::error::{Error, Result};
use crate::model::{Enqueued, Task};
use crate::schedule::{
    Firing, Overlap, PlannedRun, RunPlan, Schedule, ScheduleSpec, fire_key, plan, task_for_run,
    unknown_schedule,
};

/// The most schedules one round fires; a full round starts the next at once.
const DUE_PER_ROUND: u32 = 100;

/// What a round found: when to look again.
pub enum NextRound {
    /// More schedules are due now.
    AtOnce,
    /// The earliest next fire time of an active schedule, if any.
    At(Option<DateTime<Utc>>),
}

/// Fires every schedule due now (up to [`DUE_PER_ROUND`]). A schedule whose
/// firing fails is logged and tried again next round; the others go on.
pub async fn fire_due(plane: &ControlPlane) -> Result<NextRound> {
    let now = Utc::now();
    let grace =
        chrono::Duration::from_std(plane.config.schedule_grace).unwrap_or(chrono::Duration::MAX);
    let due = plane
        .store
        .schedules()
        .due_schedules(now, DUE_PER_ROUND)
        .await?;
    for schedule in &due {
        let running = previous_running(plane, schedule).await?;
        let Some(firing) = plan::plan(schedule, now, running, grace) else {
            continue;
        };
        match fire(plane, &schedule.spec, &firing).await {
            Ok(_) => {}
            Err(Error::Aborted(reason)) => {
                tracing::debug!(schedule = %schedule.spec.name, %reason, "firing not written")
            }
            Err(error) => {
                tracing::warn!(schedule = %schedule.spec.name, %error, "firing failed; the next round retries")
            }
        }
    }
    if due.len() as u32 == DUE_PER_ROUND {
        return Ok(NextRound::AtOnce);
    }
    Ok(NextRound::At(
        plane.store.schedules().next_fire_time().await?,
    ))
}

/// Whether the task of the schedule's latest run has not finished yet
/// (always false when its overlap policy allows overlaps).
async fn previous_running(plane: &ControlPlane, schedule: &Schedule) -> Result<bool> {
    let Some(id) = schedule.last_task_id else {
        return Ok(false);
    };
    if schedule.spec.overlap == Overlap::Allow {
        return Ok(false);
    }
    let task = plane.store.get_task(id).await?;
    Ok(task.is_some_and(|task| !task.status.is_terminal()))
}

/// Writes one firing with the tasks of its runs, each keyed by its fire
/// time and jittered, and counts what it did.
async fn fire(plane: &ControlPlane, spec: &ScheduleSpec, firing: &Firing) -> Result<Vec<Enqueued>> {
    let tasks = firing
        .runs
        .iter()
        .filter(|run| run.plan == RunPlan::Enqueue)
        .map(|run| {
            task_for_run(
                spec,
                run.fire_at,
                fire_key(&spec.name, run.fire_at),
                spec.jitter,
            )
        })
        .collect();
    let enqueued = plane.store_firing(tasks, firing).await?;
    let now = Utc::now();
    for run in &firing.runs {
        match run.plan {
            RunPlan::Enqueue => plane.metrics.schedule_fired(&spec.name, run.fire_at, now),
            RunPlan::Skipped(reason) => {
                tracing::info!(schedule = %spec.name, fire_at = %run.fire_at, fire_times = run.fire_times, reason = reason.describe(), "fire time skipped");
                plane
                    .metrics
                    .schedule_skipped(&spec.name, reason.label(), run.fire_times)
            }
        }
    }
    for task in &enqueued {
        tracing::info!(schedule = %spec.name, task_id = %task.task.id, created = task.created, "schedule fired");
    }
    Ok(enqueued)
}

/// Enqueues a schedule's task now, whatever its overlap policy and whether
/// it is paused, without moving its fire times (`TriggerSchedule`).
pub async fn trigger(plane: &ControlPlane, name: &str) -> Result<Task> {
    let schedule = plane
        .store
        .schedules()
        .schedule(name)
        .await?
        .ok_or_else(|| unknown_schedule(name))?;
    let now = Utc::now();
    let firing = Firing {
        schedule: name.to_owned(),
        advance: None,
        runs: vec![PlannedRun {
            fire_at: now,
            fire_times: 1,
            plan: RunPlan::Enqueue,
        }],
    };
    let key = format!("schedule:{name}:trigger:{}", Uuid::now_v7());
    let task = task_for_run(&schedule.spec, now, key, Duration::ZERO);
    let mut enqueued = plane.store_firing(vec![task], &firing).await?;
    plane.metrics.schedule_fired(name, now, Utc::now());
    let task = enqueued.pop().expect("a trigger enqueues one task").task;
    tracing::info!(schedule = %name, task_id = %task.id, "schedule triggered");
    Ok(task)
}
