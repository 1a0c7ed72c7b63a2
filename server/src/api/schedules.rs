//! `taskplane.v1.ScheduleService`: recurring work, managed by operators.
//!
//! Every method acts within the caller's domain scope: a schedule belongs to
//! the domain of its task type.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use taskplane_proto::names::check_name;
use taskplane_proto::v1::schedule_service_server::ScheduleService;
use taskplane_proto::v1::{
    self, CreateScheduleRequest, DeleteScheduleRequest, DeleteScheduleResponse, EnqueueTaskRequest,
    GetScheduleRequest, ListSchedulesRequest, ListSchedulesResponse, PauseScheduleRequest,
    ResumeScheduleRequest, TriggerScheduleRequest, TriggerScheduleResponse, UpdateScheduleRequest,
};
use tonic::{Request, Response, Status};

use crate::api::convert::{
    new_task, proto_duration, proto_status, proto_task, std_duration, timestamp,
};
use crate::auth::{Principal, check_domain, principal};
use crate::config::QueueConfig;
use crate::engine::plane::ControlPlane;
use crate::engine::scheduler;
use crate::error::{Error, Result};
use crate::schedule::model::{DEFAULT_CATCH_UP_LIMIT, MAX_CATCH_UP_LIMIT, MAX_JITTER};
use crate::schedule::{
    Cadence, CatchUp, Overlap, Schedule, ScheduleRun, ScheduleSpec, unknown_schedule,
};
use crate::store::unregistered;

/// How many upcoming fire times a schedule shows by default, and at most.
const DEFAULT_UPCOMING: u32 = 5;
const MAX_UPCOMING: u32 = 100;

/// How many of its latest runs `GetSchedule` shows.
const RECENT_RUNS: u32 = 20;

/// Serves `ScheduleService`.
pub struct ScheduleApi {
    plane: Arc<ControlPlane>,
}

impl ScheduleApi {
    /// Serves the given control plane.
    pub fn new(plane: Arc<ControlPlane>) -> Self {
        ScheduleApi { plane }
    }

    /// The schedule named `name`, if the caller may act on its domain.
    async fn load(
        &self,
        name: &str,
        principal: Option<&Principal>,
        what: &str,
    ) -> Result<Schedule, Status> {
        let schedule = self
            .plane
            .store
            .schedules()
            .schedule(name)
            .await?
            .ok_or_else(|| unknown_schedule(name))?;
        check_domain(principal, &schedule.domain, what)?;
        Ok(schedule)
    }

    /// Pauses or resumes the schedule named `name`.
    async fn set_paused(
        &self,
        name: &str,
        principal: Option<&Principal>,
        paused: bool,
    ) -> Result<Response<v1::Schedule>, Status> {
        self.load(name, principal, "manage schedules").await?;
        let schedule = self
            .plane
            .store
            .schedules()
            .set_schedule_paused(name, paused)
            .await?;
        tracing::info!(schedule = %name, paused, "schedule paused or resumed");
        self.plane.schedules_changed.notify_one();
        Ok(Response::new(
            self.describe(&schedule, None, DEFAULT_UPCOMING, false)
                .await?,
        ))
    }

    /// Checks that `spec`'s task type is registered and in the caller's scope.
    async fn check_task_type(
        &self,
        spec: &ScheduleSpec,
        principal: Option<&Principal>,
    ) -> Result<(), Status> {
        let task_type = &spec.task.task_type;
        let registered = self
            .plane
            .store
            .get_task_type(task_type)
            .await?
            .ok_or_else(|| unregistered(task_type))?;
        check_domain(principal, &registered.domain, "manage schedules")
    }

    /// The schedule as answered, with `count` fire times from `from` (its
    /// next fire time when unset) and, when `runs` says so, its latest runs.
    async fn describe(
        &self,
        schedule: &Schedule,
        from: Option<DateTime<Utc>>,
        count: u32,
        runs: bool,
    ) -> Result<v1::Schedule> {
        let upcoming = if schedule.spec.paused && from.is_none() {
            Vec::new()
        } else {
            let from = from.unwrap_or(schedule.next_fire_at);
            schedule.spec.cadence.upcoming(from, count as usize)
        };
        let mut recent_runs = Vec::new();
        if runs {
            for run in self
                .plane
                .store
                .schedules()
                .schedule_runs(&schedule.spec.name, RECENT_RUNS)
                .await?
            {
                let task = match run.task_id {
                    Some(id) => self.plane.store.get_task(id).await?,
                    None => None,
                };
                recent_runs.push(proto_run(&run, task.map(|t| proto_status(t.status))));
            }
        }
        Ok(proto_schedule(schedule, &upcoming, recent_runs))
    }
}

#[tonic::async_trait]
impl ScheduleService for ScheduleApi {
    async fn create_schedule(
        &self,
        request: Request<CreateScheduleRequest>,
    ) -> Result<Response<v1::Schedule>, Status> {
        let principal = principal(&request);
        let spec = schedule_spec(request.into_inner().schedule, &self.plane.config)?;
        self.check_task_type(&spec, principal.as_ref()).await?;
        let schedule = self.plane.store.schedules().create_schedule(&spec).await?;
        tracing::info!(schedule = %spec.name, cadence = ?spec.cadence, "schedule created");
        self.plane.schedules_changed.notify_one();
        Ok(Response::new(
            self.describe(&schedule, None, DEFAULT_UPCOMING, false)
                .await?,
        ))
    }

    async fn get_schedule(
        &self,
        request: Request<GetScheduleRequest>,
    ) -> Result<Response<v1::Schedule>, Status> {
        let principal = principal(&request);
        let request = request.into_inner();
        let schedule = self
            .load(&request.name, principal.as_ref(), "read schedules")
            .await?;
        let from = request
            .upcoming_from
            .map(|at| {
                DateTime::from_timestamp(at.seconds, at.nanos.max(0) as u32)
                    .ok_or_else(|| Error::InvalidArgument("upcoming_from is out of range".into()))
            })
            .transpose()?;
        let count = match request.upcoming_count {
            0 => DEFAULT_UPCOMING,
            n => n.min(MAX_UPCOMING),
        };
        Ok(Response::new(
            self.describe(&schedule, from, count, true).await?,
        ))
    }

    async fn list_schedules(
        &self,
        request: Request<ListSchedulesRequest>,
    ) -> Result<Response<ListSchedulesResponse>, Status> {
        let principal = principal(&request);
        let request = request.into_inner();
        let non_empty = |s: &String| (!s.is_empty()).then(|| s.clone());
        let listed = self
            .plane
            .store
            .schedules()
            .schedules(
                non_empty(&request.task_type).as_deref(),
                non_empty(&request.domain).as_deref(),
            )
            .await?;
        let mut schedules = Vec::with_capacity(listed.len());
        for schedule in listed {
            if principal
                .as_ref()
                .is_none_or(|p| p.domains.allows(&schedule.domain))
            {
                schedules.push(self.describe(&schedule, None, 1, false).await?);
            }
        }
        Ok(Response::new(ListSchedulesResponse { schedules }))
    }

    async fn update_schedule(
        &self,
        request: Request<UpdateScheduleRequest>,
    ) -> Result<Response<v1::Schedule>, Status> {
        let principal = principal(&request);
        let spec = schedule_spec(request.into_inner().schedule, &self.plane.config)?;
        self.load(&spec.name, principal.as_ref(), "manage schedules")
            .await?;
        self.check_task_type(&spec, principal.as_ref()).await?;
        let schedule = self.plane.store.schedules().update_schedule(&spec).await?;
        tracing::info!(schedule = %spec.name, cadence = ?spec.cadence, "schedule updated");
        self.plane.schedules_changed.notify_one();
        Ok(Response::new(
            self.describe(&schedule, None, DEFAULT_UPCOMING, false)
                .await?,
        ))
    }

    async fn pause_schedule(
        &self,
        request: Request<PauseScheduleRequest>,
    ) -> Result<Response<v1::Schedule>, Status> {
        let principal = principal(&request);
        self.set_paused(&request.into_inner().name, principal.as_ref(), true)
            .await
    }

    async fn resume_schedule(
        &self,
        request: Request<ResumeScheduleRequest>,
    ) -> Result<Response<v1::Schedule>, Status> {
        let principal = principal(&request);
        self.set_paused(&request.into_inner().name, principal.as_ref(), false)
            .await
    }

    async fn delete_schedule(
        &self,
        request: Request<DeleteScheduleRequest>,
    ) -> Result<Response<DeleteScheduleResponse>, Status> {
        let principal = principal(&request);
        let name = request.into_inner().name;
        self.load(&name, principal.as_ref(), "manage schedules")
            .await?;
        self.plane.store.schedules().delete_schedule(&name).await?;
        tracing::info!(schedule = %name, "schedule deleted");
        Ok(Response::new(DeleteScheduleResponse {}))
    }

    async fn trigger_schedule(
        &self,
        request: Request<TriggerScheduleRequest>,
    ) -> Result<Response<TriggerScheduleResponse>, Status> {
        let principal = principal(&request);
        let name = request.into_inner().name;
        self.load(&name, principal.as_ref(), "trigger schedules")
            .await?;
        let task = scheduler::trigger(&self.plane, &name).await?;
        Ok(Response::new(TriggerScheduleResponse {
            task: Some(proto_task(&task)),
        }))
    }
}

/// Validates a schedule's definition from the wire. Errors name the field
/// (`schedule.cron`, `schedule.timezone`, …) and what to write instead.
pub fn schedule_spec(spec: Option<v1::ScheduleSpec>, config: &QueueConfig) -> Result<ScheduleSpec> {
    let spec = spec.ok_or_else(|| {
        Error::InvalidArgument(
            "schedule is required: send its name, task_type and cron or interval".into(),
        )
    })?;
    in_field(check_spec(spec, config))
}

/// Prefixes an invalid-argument message with `schedule.`, the message
/// field every spec arrives in.
fn in_field<T>(result: Result<T>) -> Result<T> {
    result.map_err(|error| match error {
        Error::InvalidArgument(message) => Error::InvalidArgument(format!("schedule.{message}")),
        other => other,
    })
}

fn check_spec(spec: v1::ScheduleSpec, config: &QueueConfig) -> Result<ScheduleSpec> {
    let invalid = |message: String| Error::InvalidArgument(message);
    if spec.name.is_empty() {
        return Err(invalid(
            "name is required: name the schedule, e.g. \"nightly-backup\"".into(),
        ));
    }
    check_name("name", &spec.name).map_err(invalid)?;
    let task = new_task(
        EnqueueTaskRequest {
            task_type: spec.task_type,
            payload: Some(spec.payload.unwrap_or_default()),
            priority: spec.priority,
            max_attempts: spec.max_attempts,
            timeout: spec.timeout,
            handler_version: spec.handler_version,
            metadata: spec.metadata,
            required_labels: spec.required_labels,
            ..EnqueueTaskRequest::default()
        },
        config,
        None,
    )?;
    let cadence = match (spec.cron.trim().is_empty(), spec.interval) {
        (false, None) => Cadence::cron(&spec.cron, &spec.timezone)?,
        (true, Some(interval)) if spec.timezone.is_empty() || spec.timezone == "UTC" => {
            Cadence::every(std_duration("interval", &interval)?)?
        }
        (true, Some(_)) => {
            return Err(invalid(
                "timezone applies to cron expressions only: an interval fires at multiples of itself since the Unix epoch; leave timezone empty".into(),
            ));
        }
        (false, Some(_)) => {
            return Err(invalid(
                "cron and interval are both set: set exactly one".into(),
            ));
        }
        (true, None) => {
            return Err(invalid(
                "cron or interval is required: e.g. cron \"0 2 * * *\" (02:00 daily) or interval \"30s\"".into(),
            ));
        }
    };
    let jitter = spec
        .jitter
        .map(|jitter| std_duration("jitter", &jitter))
        .transpose()?
        .unwrap_or(Duration::ZERO);
    if jitter > MAX_JITTER {
        return Err(invalid(format!(
            "jitter is {jitter:?}; the most is {MAX_JITTER:?}"
        )));
    }
    let catch_up_limit = match spec.catch_up_limit {
        0 => DEFAULT_CATCH_UP_LIMIT,
        n if n > MAX_CATCH_UP_LIMIT => {
            return Err(invalid(format!(
                "catch_up_limit is {n}; the most is {MAX_CATCH_UP_LIMIT}"
            )));
        }
        n => n,
    };
    Ok(ScheduleSpec {
        name: spec.name,
        task,
        cadence,
        jitter,
        overlap: overlap(spec.overlap)?,
        catch_up: catch_up(spec.catch_up)?,
        catch_up_limit,
        paused: spec.paused,
        revision: spec.revision,
    })
}

fn overlap(value: i32) -> Result<Overlap> {
    match v1::OverlapPolicy::try_from(value) {
        Ok(v1::OverlapPolicy::Unspecified | v1::OverlapPolicy::Skip) => Ok(Overlap::Skip),
        Ok(v1::OverlapPolicy::Allow) => Ok(Overlap::Allow),
        Ok(v1::OverlapPolicy::BufferOne) => Ok(Overlap::BufferOne),
        Err(_) => Err(Error::InvalidArgument(format!(
            "overlap {value} is not a policy: use OVERLAP_POLICY_SKIP, _ALLOW or _BUFFER_ONE"
        ))),
    }
}

fn catch_up(value: i32) -> Result<CatchUp> {
    match v1::CatchUpPolicy::try_from(value) {
        Ok(v1::CatchUpPolicy::Unspecified | v1::CatchUpPolicy::RunOnce) => Ok(CatchUp::RunOnce),
        Ok(v1::CatchUpPolicy::Skip) => Ok(CatchUp::Skip),
        Ok(v1::CatchUpPolicy::RunAll) => Ok(CatchUp::RunAll),
        Err(_) => Err(Error::InvalidArgument(format!(
            "catch_up {value} is not a policy: use CATCH_UP_POLICY_SKIP, _RUN_ONCE or _RUN_ALL"
        ))),
    }
}

/// A schedule's definition on the wire.
pub fn proto_spec(spec: &ScheduleSpec) -> v1::ScheduleSpec {
    let task = &spec.task;
    v1::ScheduleSpec {
        name: spec.name.clone(),
        task_type: task.task_type.clone(),
        payload: Some(taskplane_proto::json::json_to_struct(&task.payload)),
        metadata: task.metadata.clone().into_iter().collect(),
        priority: task.priority,
        max_attempts: task.max_attempts.unwrap_or(0),
        timeout: task.timeout.map(proto_duration),
        handler_version: task.handler_version.clone(),
        required_labels: task.required_labels.clone().into_iter().collect(),
        cron: spec.cadence.expression().unwrap_or_default().to_owned(),
        interval: spec.cadence.interval().map(proto_duration),
        timezone: spec.cadence.timezone().to_owned(),
        jitter: (!spec.jitter.is_zero()).then(|| proto_duration(spec.jitter)),
        overlap: match spec.overlap {
            Overlap::Skip => v1::OverlapPolicy::Skip,
            Overlap::Allow => v1::OverlapPolicy::Allow,
            Overlap::BufferOne => v1::OverlapPolicy::BufferOne,
        } as i32,
        catch_up: match spec.catch_up {
            CatchUp::Skip => v1::CatchUpPolicy::Skip,
            CatchUp::RunOnce => v1::CatchUpPolicy::RunOnce,
            CatchUp::RunAll => v1::CatchUpPolicy::RunAll,
        } as i32,
        catch_up_limit: spec.catch_up_limit,
        paused: spec.paused,
        revision: spec.revision,
    }
}

fn proto_schedule(
    schedule: &Schedule,
    upcoming: &[DateTime<Utc>],
    recent_runs: Vec<v1::ScheduleRun>,
) -> v1::Schedule {
    v1::Schedule {
        spec: Some(proto_spec(&schedule.spec)),
        domain: schedule.domain.clone(),
        paused: schedule.spec.paused,
        next_fire_at: (!schedule.spec.paused).then(|| timestamp(schedule.next_fire_at)),
        upcoming: upcoming.iter().copied().map(timestamp).collect(),
        buffered_fire_at: schedule.buffered_fire_at.map(timestamp),
        declared_by: schedule.declared_by.clone(),
        created_at: Some(timestamp(schedule.created_at)),
        updated_at: Some(timestamp(schedule.updated_at)),
        recent_runs,
    }
}

fn proto_run(run: &ScheduleRun, status: Option<v1::TaskStatus>) -> v1::ScheduleRun {
    v1::ScheduleRun {
        fire_at: Some(timestamp(run.fire_at)),
        task_id: run.task_id.map(|id| id.to_string()).unwrap_or_default(),
        status: status.unwrap_or(v1::TaskStatus::Unspecified) as i32,
        skipped: run.skipped.clone().unwrap_or_default(),
        fire_times: run.fire_times,
        triggered: run.triggered,
        recorded_at: Some(timestamp(run.recorded_at)),
    }
}
