//! What a schedule is: its definition ([`ScheduleSpec`]), as stored
//! ([`Schedule`]), and what each of its fire times did ([`ScheduleRun`]).

use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::cadence::Cadence;
use crate::error::{Error, Result};
use crate::model::NewTask;

/// What a fire time does while the previous run's task has not finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overlap {
    /// It makes no task; the run is recorded as skipped. The default.
    #[default]
    Skip,
    /// It makes a task anyway.
    Allow,
    /// The first such fire time waits and is enqueued when the previous
    /// run finishes; later ones while it waits are skipped.
    BufferOne,
}

/// What fire times missed while no server was running make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CatchUp {
    /// Nothing: they are recorded as skipped.
    Skip,
    /// One task, for the latest of them. The default.
    #[default]
    RunOnce,
    /// A task each, the latest `catch_up_limit` of them.
    RunAll,
}

/// How many missed fire times [`CatchUp::RunAll`] enqueues by default.
pub const DEFAULT_CATCH_UP_LIMIT: u32 = 10;

/// The most missed fire times [`CatchUp::RunAll`] may enqueue at once.
pub const MAX_CATCH_UP_LIMIT: u32 = 1000;

/// The most a task's start may be jittered.
pub const MAX_JITTER: Duration = Duration::from_secs(24 * 3600);

/// Who stored a schedule, for [`Schedule::declared_by`].
pub const OPERATOR: &str = "operator";

impl Overlap {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Overlap::Skip => "skip",
            Overlap::Allow => "allow",
            Overlap::BufferOne => "buffer_one",
        }
    }

    /// Parses [`Overlap::as_str`]'s names.
    pub fn parse(text: &str) -> Result<Self> {
        match text {
            "skip" => Ok(Overlap::Skip),
            "allow" => Ok(Overlap::Allow),
            "buffer_one" => Ok(Overlap::BufferOne),
            other => Err(Error::InvalidArgument(format!(
                "overlap \"{other}\" is not a policy: write skip, allow or buffer_one"
            ))),
        }
    }
}

impl CatchUp {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            CatchUp::Skip => "skip",
            CatchUp::RunOnce => "run_once",
            CatchUp::RunAll => "run_all",
        }
    }

    /// Parses [`CatchUp::as_str`]'s names.
    pub fn parse(text: &str) -> Result<Self> {
        match text {
            "skip" => Ok(CatchUp::Skip),
            "run_once" => Ok(CatchUp::RunOnce),
            "run_all" => Ok(CatchUp::RunAll),
            other => Err(Error::InvalidArgument(format!(
                "catch_up \"{other}\" is not a policy: write skip, run_once or run_all"
            ))),
        }
    }
}

/// A schedule's definition, validated: when it fires and what it enqueues.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleSpec {
    /// Its unique name.
    pub name: String,
    /// The task each fire time enqueues (its `run_at` and idempotency key
    /// are set per fire time).
    pub task: NewTask,
    /// When it fires.
    pub cadence: Cadence,
    /// Each task's start is delayed by a random amount up to this.
    pub jitter: Duration,
    /// What a fire time does while the previous run has not finished.
    pub overlap: Overlap,
    /// What fire times missed while no server ran make.
    pub catch_up: CatchUp,
    /// The most missed fire times [`CatchUp::RunAll`] enqueues.
    pub catch_up_limit: u32,
    /// Stored paused.
    pub paused: bool,
    /// An agent's declaration replaces a stored one only when this is at
    /// least the stored one's.
    pub revision: u32,
}

/// A schedule as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    /// Its definition (`paused` is the stored state).
    pub spec: ScheduleSpec,
    /// The domain of its task type.
    pub domain: String,
    /// [`OPERATOR`], or `agent:<domain>` for one an agent declared.
    pub declared_by: String,
    /// The next fire time (meaningless while paused).
    pub next_fire_at: DateTime<Utc>,
    /// A fire time waiting for the previous run to finish.
    pub buffered_fire_at: Option<DateTime<Utc>>,
    /// The task of its latest run.
    pub last_task_id: Option<Uuid>,
    /// Bumped by every change, firings included: a firing applies only to
    /// the version it was planned from.
    pub version: i64,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// What one fire time (or several, collapsed by a catch-up) did.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleRun {
    /// The fire time.
    pub fire_at: DateTime<Utc>,
    /// The task it enqueued.
    pub task_id: Option<Uuid>,
    /// Why it enqueued none.
    pub skipped: Option<String>,
    /// How many fire times it stands for.
    pub fire_times: u32,
    /// Made by `TriggerSchedule`, not by the clock.
    pub triggered: bool,
    /// When it was recorded.
    pub recorded_at: DateTime<Utc>,
}

/// The owner name of schedules that agents of `domain` declare.
pub fn declared_by_agent(domain: &str) -> String {
    format!("agent:{domain}")
}
