//! Schedules in either database: [`Schedules`], served by every
//! [`SharedStore`], and the firing that backends write inside their
//! enqueue transaction ([`Shared::record_firing`]).

use std::sync::LazyLock;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{Connection, Encode, Executor, IntoArguments, Type};

use super::common::{SharedStore, Writer};
use super::{Dialect, Shared};
use crate::error::{Error, Result};
use crate::model::Enqueued;
use crate::schedule::model::OPERATOR;
use crate::schedule::{Firing, RunPlan, Schedule, ScheduleRun, ScheduleSpec, unknown_schedule};
use crate::store::rows::{self, Columns, duration_millis, json_text, millis};
use crate::store::rules;

/// How many runs are kept per schedule; older ones are deleted as new ones
/// are recorded.
pub const RUNS_KEPT: i64 = 100;

/// Every column of `schedules`, in the order [`Shared::write_schedule`] binds them.
const COLUMNS: [&str; 25] = [
    "name",
    "task_type",
    "payload",
    "metadata",
    "priority",
    "max_attempts",
    "timeout_ms",
    "handler_version",
    "required_labels",
    "cron",
    "interval_ms",
    "timezone",
    "jitter_ms",
    "overlap",
    "catch_up",
    "catch_up_limit",
    "declared_by",
    "revision",
    "paused",
    "next_fire_at",
    "buffered_fire_at",
    "last_task_id",
    "version",
    "created_at",
    "updated_at",
];

/// Inserts a schedule, or replaces every column but `created_at` of the
/// one with its name.
static UPSERT: LazyLock<String> = LazyLock::new(|| {
    let placeholders: Vec<String> = (1..=COLUMNS.len()).map(|i| format!("${i}")).collect();
    let updates: Vec<String> = COLUMNS
        .iter()
        .filter(|c| !matches!(**c, "name" | "created_at"))
        .map(|c| format!("{c} = excluded.{c}"))
        .collect();
    format!(
        "INSERT INTO schedules ({}) VALUES ({}) ON CONFLICT (name) DO UPDATE SET {}",
        COLUMNS.join(", "),
        placeholders.join(", "),
        updates.join(", ")
    )
});

/// A schedule's row with its type's domain.
const SELECT: &str = "SELECT schedules.*, task_types.domain FROM schedules
     JOIN task_types ON task_types.task_type = schedules.task_type";

/// The state a schedule is written with, beside its definition.
struct Stored<'a> {
    spec: &'a ScheduleSpec,
    declared_by: &'a str,
    next_fire_at: DateTime<Utc>,
    version: i64,
    created_at: DateTime<Utc>,
}

impl<DB> Shared<DB>
where
    DB: Dialect,
    DB::Row: Columns,
    DB::Arguments: IntoArguments<DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Type<DB>,
    for<'q> f64: Encode<'q, DB> + Type<DB>,
{
    /// One schedule, if it exists.
    pub async fn fetch_schedule<'e>(
        executor: impl Executor<'e, Database = DB>,
        name: &str,
    ) -> Result<Option<Schedule>> {
        let sql = format!("{SELECT} WHERE schedules.name = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(name.to_owned())
            .fetch_optional(executor)
            .await?;
        row.as_ref().map(rows::schedule).transpose()
    }

    /// Writes a schedule's every column (see [`UPSERT`]), its buffered fire
    /// time and last task cleared or kept as `keep` holds them.
    async fn write_schedule(
        connection: &mut DB::Connection,
        stored: Stored<'_>,
        keep: Option<&Schedule>,
    ) -> Result<Schedule> {
        let Stored {
            spec,
            declared_by,
            next_fire_at,
            version,
            created_at,
        } = stored;
        let task = &spec.task;
        sqlx::query(sqlx::AssertSqlSafe(UPSERT.as_str()))
            .bind(spec.name.clone())
            .bind(task.task_type.clone())
            .bind(json_text(&task.payload))
            .bind(json_text(&task.metadata))
            .bind(i64::from(task.priority))
            .bind(task.max_attempts.map(i64::from))
            .bind(task.timeout.map(duration_millis))
            .bind(task.handler_version.clone())
            .bind(json_text(&task.required_labels))
            .bind(spec.cadence.expression().map(str::to_owned))
            .bind(spec.cadence.interval().map(duration_millis))
            .bind(spec.cadence.timezone().to_owned())
            .bind(duration_millis(spec.jitter))
            .bind(spec.overlap.as_str().to_owned())
            .bind(spec.catch_up.as_str().to_owned())
            .bind(i64::from(spec.catch_up_limit))
            .bind(declared_by.to_owned())
            .bind(i64::from(spec.revision))
            .bind(i64::from(spec.paused))
            .bind(millis(next_fire_at))
            .bind(keep.and_then(|s| s.buffered_fire_at).map(millis))
            .bind(keep.and_then(|s| s.last_task_id).map(|id| id.to_string()))
            .bind(version)
            .bind(millis(created_at))
            .bind(millis(Utc::now()))
            .execute(&mut *connection)
            .await?;
        Self::fetch_schedule(&mut *connection, &spec.name)
            .await?
            .ok_or_else(|| unknown_schedule(&spec.name))
    }

    /// Creates a schedule inside the caller's transaction: `AlreadyExists`
    /// for a taken name, `FailedPrecondition` for an unregistered type.
    pub async fn create_schedule(
        connection: &mut DB::Connection,
        spec: &ScheduleSpec,
        declared_by: &str,
    ) -> Result<Schedule> {
        if Self::fetch_schedule(&mut *connection, &spec.name)
            .await?
            .is_some()
        {
            return Err(Error::AlreadyExists(format!(
                "a schedule named '{}' exists: choose another name, or UpdateSchedule it",
                spec.name
            )));
        }
        if Self::fetch_task_type(&mut *connection, &spec.task.task_type)
            .await?
            .is_none()
        {
            return Err(rules::unregistered(&spec.task.task_type));
        }
        let now = Utc::now();
        let next_fire_at = first_fire_time(spec, now)?;
        let stored = Stored {
            spec,
            declared_by,
            next_fire_at,
            version: 1,
            created_at: now,
        };
        Self::write_schedule(connection, stored, None).await
    }

    /// Replaces a schedule's definition inside the caller's transaction,
    /// keeping its paused state, its owner and, while its cadence is the
    /// same, its next fire time.
    pub async fn replace_schedule(
        connection: &mut DB::Connection,
        spec: &ScheduleSpec,
        existing: &Schedule,
    ) -> Result<Schedule> {
        if Self::fetch_task_type(&mut *connection, &spec.task.task_type)
            .await?
            .is_none()
        {
            return Err(rules::unregistered(&spec.task.task_type));
        }
        let spec = ScheduleSpec {
            paused: existing.spec.paused,
            ..spec.clone()
        };
        let next_fire_at = if spec.cadence == existing.spec.cadence {
            existing.next_fire_at
        } else {
            first_fire_time(&spec, Utc::now())?
        };
        Self::rewrite_schedule(connection, existing, &spec, next_fire_at).await
    }

    /// Pauses or resumes a schedule inside the caller's transaction; a
    /// resumed one fires next at its first fire time after now.
    pub async fn set_schedule_paused(
        connection: &mut DB::Connection,
        name: &str,
        paused: bool,
    ) -> Result<Schedule> {
        let existing = Self::fetch_schedule(&mut *connection, name)
            .await?
            .ok_or_else(|| unknown_schedule(name))?;
        let spec = ScheduleSpec {
            paused,
            ..existing.spec.clone()
        };
        let next_fire_at = if paused {
            existing.next_fire_at
        } else {
            first_fire_time(&spec, Utc::now())?
        };
        Self::rewrite_schedule(connection, &existing, &spec, next_fire_at).await
    }

    /// Writes `spec` over `existing` as its next version, keeping its
    /// owner, creation time, buffered fire time and last task.
    async fn rewrite_schedule(
        connection: &mut DB::Connection,
        existing: &Schedule,
        spec: &ScheduleSpec,
        next_fire_at: DateTime<Utc>,
    ) -> Result<Schedule> {
        let stored = Stored {
            spec,
            declared_by: &existing.declared_by,
            next_fire_at,
            version: existing.version + 1,
            created_at: existing.created_at,
        };
        Self::write_schedule(connection, stored, Some(existing)).await
    }

    /// Creates the schedules agents of a domain declare that are missing,
    /// and replaces those this owner declared before whose definition
    /// changed, when the declaration's revision is at least the stored
    /// one's. Schedules of another owner, operators included, are left
    /// alone, and none is deleted. Returns how many it wrote.
    pub async fn declare_schedules(
        connection: &mut DB::Connection,
        specs: &[ScheduleSpec],
        declared_by: &str,
    ) -> Result<u32> {
        let mut written = 0;
        for spec in specs {
            match Self::fetch_schedule(&mut *connection, &spec.name).await? {
                None => {
                    Self::create_schedule(connection, spec, declared_by).await?;
                    written += 1;
                }
                Some(existing) if existing.declared_by != declared_by => {
                    tracing::warn!(schedule = %spec.name, owner = %existing.declared_by, %declared_by, "a declared schedule's name is taken by another owner; left alone");
                }
                Some(existing)
                    if spec.revision < existing.spec.revision
                        || ScheduleSpec {
                            paused: existing.spec.paused,
                            ..spec.clone()
                        } == existing.spec => {}
                Some(existing) => {
                    Self::replace_schedule(connection, spec, &existing).await?;
                    written += 1;
                }
            }
        }
        Ok(written)
    }

    /// Writes a firing inside the transaction that enqueued its tasks
    /// (`enqueued`, one per [`RunPlan::Enqueue`], in order): moves the
    /// schedule on if it is still at the version the firing was planned
    /// from (else `Aborted`, and the caller rolls everything back), and
    /// records its runs.
    pub async fn record_firing(
        connection: &mut DB::Connection,
        firing: &Firing,
        enqueued: &[Enqueued],
    ) -> Result<()> {
        let now = millis(Utc::now());
        let last_task = enqueued.last().map(|e| e.task.id.to_string());
        let moved = match &firing.advance {
            Some(advance) => sqlx::query(
                "UPDATE schedules SET next_fire_at = $1, buffered_fire_at = $2,
                     last_task_id = COALESCE($3, last_task_id), version = version + 1,
                     updated_at = $4
                 WHERE name = $5 AND version = $6 RETURNING name",
            )
            .bind(millis(advance.next_fire_at))
            .bind(advance.buffered_fire_at.map(millis))
            .bind(last_task)
            .bind(now)
            .bind(firing.schedule.clone())
            .bind(advance.expected_version),
            None => sqlx::query(
                "UPDATE schedules SET last_task_id = COALESCE($1, last_task_id),
                     version = version + 1, updated_at = $2
                 WHERE name = $3 RETURNING name",
            )
            .bind(last_task)
            .bind(now)
            .bind(firing.schedule.clone()),
        }
        .fetch_optional(&mut *connection)
        .await?;
        if moved.is_none() {
            return Err(match firing.advance {
                Some(_) => Error::Aborted(format!(
                    "schedule '{}' changed since this firing was planned (another replica fired it, or it was edited)",
                    firing.schedule
                )),
                None => unknown_schedule(&firing.schedule),
            });
        }
        let mut tasks = enqueued.iter();
        for run in &firing.runs {
            let (task_id, skipped) = match &run.plan {
                RunPlan::Enqueue => (tasks.next().map(|e| e.task.id.to_string()), None::<String>),
                RunPlan::Skipped(reason) => (None, Some(reason.describe().to_owned())),
            };
            sqlx::query(
                "INSERT INTO schedule_runs (schedule, fire_at, task_id, skipped, fire_times,
                     triggered, recorded_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
            )
            .bind(firing.schedule.clone())
            .bind(millis(run.fire_at))
            .bind(task_id)
            .bind(skipped)
            .bind(i64::from(run.fire_times))
            .bind(i64::from(firing.advance.is_none()))
            .bind(now)
            .execute(&mut *connection)
            .await?;
        }
        sqlx::query(
            "DELETE FROM schedule_runs WHERE schedule = $1 AND fire_at < (
                 SELECT fire_at FROM schedule_runs WHERE schedule = $1
                 ORDER BY fire_at DESC LIMIT 1 OFFSET $2)",
        )
        .bind(firing.schedule.clone())
        .bind(RUNS_KEPT - 1)
        .execute(&mut *connection)
        .await?;
        Ok(())
    }
}

/// The first fire time of `spec` after `now`.
fn first_fire_time(spec: &ScheduleSpec, now: DateTime<Utc>) -> Result<DateTime<Utc>> {
    spec.cadence.next_after(now).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "schedule '{}' never fires again: write a cron expression that matches a future time",
            spec.name
        ))
    })
}

/// Schedules, stored the same way in both databases. Reads come from the
/// store's readers; every write is one transaction.
#[async_trait]
pub trait Schedules: Send + Sync {
    /// Creates a schedule an operator defined.
    async fn create_schedule(&self, spec: &ScheduleSpec) -> Result<Schedule>;
    /// Replaces a schedule's definition (see [`Shared::replace_schedule`]).
    async fn update_schedule(&self, spec: &ScheduleSpec) -> Result<Schedule>;
    /// Pauses or resumes a schedule.
    async fn set_schedule_paused(&self, name: &str, paused: bool) -> Result<Schedule>;
    /// Deletes a schedule and its runs; `NotFound` if there is none.
    async fn delete_schedule(&self, name: &str) -> Result<()>;
    /// Reconciles the schedules agents of one owner declare (see
    /// [`Shared::declare_schedules`]), all or none.
    async fn declare_schedules(&self, specs: &[ScheduleSpec], declared_by: &str) -> Result<u32>;
    /// One schedule, if it exists.
    async fn schedule(&self, name: &str) -> Result<Option<Schedule>>;
    /// Every schedule (of one task type and one domain, if given), by name.
    async fn schedules(
        &self,
        task_type: Option<&str>,
        domain: Option<&str>,
    ) -> Result<Vec<Schedule>>;
    /// A schedule's latest runs, newest first.
    async fn schedule_runs(&self, name: &str, limit: u32) -> Result<Vec<ScheduleRun>>;
    /// Up to `limit` active schedules due at `now` or holding a buffered
    /// fire time, earliest first.
    async fn due_schedules(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<Schedule>>;
    /// The earliest next fire time of any active schedule.
    async fn next_fire_time(&self) -> Result<Option<DateTime<Utc>>>;
}

#[async_trait]
impl<DB, W> Schedules for SharedStore<DB, W>
where
    DB: Dialect,
    DB::Row: Columns,
    DB::Arguments: IntoArguments<DB>,
    W: Writer<DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Type<DB>,
    for<'q> f64: Encode<'q, DB> + Type<DB>,
{
    async fn create_schedule(&self, spec: &ScheduleSpec) -> Result<Schedule> {
        in_transaction!(self, |tx| Shared::<DB>::create_schedule(
            &mut tx, spec, OPERATOR
        )
        .await?)
    }

    async fn update_schedule(&self, spec: &ScheduleSpec) -> Result<Schedule> {
        in_transaction!(self, |tx| {
            let existing = Shared::<DB>::fetch_schedule(&mut *tx, &spec.name)
                .await?
                .ok_or_else(|| unknown_schedule(&spec.name))?;
            Shared::<DB>::replace_schedule(&mut tx, spec, &existing).await?
        })
    }

    async fn set_schedule_paused(&self, name: &str, paused: bool) -> Result<Schedule> {
        in_transaction!(self, |tx| Shared::<DB>::set_schedule_paused(
            &mut tx, name, paused
        )
        .await?)
    }

    async fn delete_schedule(&self, name: &str) -> Result<()> {
        in_transaction!(self, |tx| {
            sqlx::query("DELETE FROM schedule_runs WHERE schedule = $1")
                .bind(name.to_owned())
                .execute(&mut *tx)
                .await?;
            let deleted = sqlx::query("DELETE FROM schedules WHERE name = $1 RETURNING name")
                .bind(name.to_owned())
                .fetch_optional(&mut *tx)
                .await?;
            if deleted.is_none() {
                return Err(unknown_schedule(name));
            }
        })
    }

    async fn declare_schedules(&self, specs: &[ScheduleSpec], declared_by: &str) -> Result<u32> {
        in_transaction!(self, |tx| Shared::<DB>::declare_schedules(
            &mut tx,
            specs,
            declared_by
        )
        .await?)
    }

    async fn schedule(&self, name: &str) -> Result<Option<Schedule>> {
        Shared::<DB>::fetch_schedule(self.readers(), name).await
    }

    async fn schedules(
        &self,
        task_type: Option<&str>,
        domain: Option<&str>,
    ) -> Result<Vec<Schedule>> {
        let sql = format!(
            "{SELECT} WHERE (CAST($1 AS TEXT) IS NULL OR schedules.task_type = $1)
               AND (CAST($2 AS TEXT) IS NULL OR task_types.domain = $2)
             ORDER BY schedules.name"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(task_type.map(str::to_owned))
            .bind(domain.map(str::to_owned))
            .fetch_all(self.readers())
            .await?;
        rows.iter().map(rows::schedule).collect()
    }

    async fn schedule_runs(&self, name: &str, limit: u32) -> Result<Vec<ScheduleRun>> {
        let rows = sqlx::query(
            "SELECT * FROM schedule_runs WHERE schedule = $1
             ORDER BY fire_at DESC, triggered DESC LIMIT $2",
        )
        .bind(name.to_owned())
        .bind(i64::from(limit))
        .fetch_all(self.readers())
        .await?;
        rows.iter().map(rows::schedule_run).collect()
    }

    async fn due_schedules(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<Schedule>> {
        // Two branches, each a probe of its partial index: an `OR` would
        // read every schedule each round. Paused schedules holding a fire
        // time are left out here, which keeps the second branch on its
        // index (`paused = 0` would match the other one's condition).
        let sql = format!(
            "{SELECT} WHERE schedules.paused = 0 AND schedules.next_fire_at <= $1
             UNION
             {SELECT} WHERE schedules.buffered_fire_at IS NOT NULL
             ORDER BY next_fire_at LIMIT $2"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(millis(now))
            .bind(i64::from(limit))
            .fetch_all(self.readers())
            .await?;
        let mut due = Vec::with_capacity(rows.len());
        for row in &rows {
            let schedule = rows::schedule(row)?;
            if !schedule.spec.paused {
                due.push(schedule);
            }
        }
        Ok(due)
    }

    async fn next_fire_time(&self) -> Result<Option<DateTime<Utc>>> {
        let row =
            sqlx::query("SELECT MIN(next_fire_at) AS next_fire_at FROM schedules WHERE paused = 0")
                .fetch_one(self.readers())
                .await?;
        row.optional_integer("next_fire_at")?
            .map(rows::from_millis)
            .transpose()
    }
}
