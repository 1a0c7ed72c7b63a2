//! `taskplane schedule …`: create, inspect and act on schedules through
//! `ScheduleService`.

use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};
use taskplane_common::AuthChannel;
use taskplane_proto::json::json_to_struct;
use taskplane_proto::v1::schedule_service_client::ScheduleServiceClient;
use taskplane_proto::v1::{
    CatchUpPolicy, ListSchedulesRequest, OverlapPolicy, Schedule, ScheduleRun, ScheduleSpec,
};

use super::output::{print, print_task, status_name, time};
use super::{ClientArgs, ClientError, Output, key_value, parse_payload};

/// `taskplane schedule …`.
#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// Creates a schedule.
    Create(Definition),
    /// Replaces a schedule's definition (its paused state is kept).
    Update(Definition),
    /// Lists the schedules with their next fire time.
    List {
        /// Only this task type.
        #[arg(long = "type")]
        task_type: Option<String>,
        /// Only this domain.
        #[arg(long)]
        domain: Option<String>,
    },
    /// Shows a schedule, its next fire times and its latest runs.
    Get {
        /// The schedule's name.
        name: String,
        /// How many upcoming fire times to show.
        #[arg(long, default_value_t = 5)]
        upcoming: u32,
        /// Compute the upcoming fire times from this RFC 3339 instant.
        #[arg(long)]
        from: Option<String>,
    },
    /// Stops a schedule from firing.
    Pause {
        /// The schedule's name.
        name: String,
    },
    /// Resumes a paused schedule from its next fire time after now.
    Resume {
        /// The schedule's name.
        name: String,
    },
    /// Deletes a schedule and its run history (its tasks stay).
    Delete {
        /// The schedule's name.
        name: String,
    },
    /// Enqueues the schedule's task now.
    Trigger {
        /// The schedule's name.
        name: String,
    },
}

/// A schedule's definition on the command line.
#[derive(Debug, Args)]
pub struct Definition {
    /// Its unique name, e.g. nightly-backup.
    #[arg(long)]
    pub name: String,
    /// The registered task type it enqueues.
    #[arg(long)]
    pub task_type: String,
    /// A cron expression: five fields (minute hour day-of-month month
    /// day-of-week), six with seconds first, or @hourly, @daily, …
    #[arg(long, required_unless_present = "every", conflicts_with = "every")]
    pub cron: Option<String>,
    /// Or fire every this long, e.g. 30s or 5m.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub every: Option<Duration>,
    /// The IANA time zone of the cron expression, e.g. Europe/Berlin (default UTC).
    #[arg(long)]
    pub timezone: Option<String>,
    /// The task's payload, a JSON object.
    #[arg(long, default_value = "{}")]
    pub payload: String,
    /// What a fire time does while the previous run has not finished.
    #[arg(long, value_enum, default_value = "skip")]
    pub overlap: OverlapArg,
    /// What fire times missed while no server ran make.
    #[arg(long, value_enum, default_value = "run_once")]
    pub catch_up: CatchUpArg,
    /// The most missed fire times run-all enqueues (default 10).
    #[arg(long)]
    pub catch_up_limit: Option<u32>,
    /// Delay each task by a random amount up to this, e.g. 30s.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub jitter: Option<Duration>,
    /// The tasks' priority.
    #[arg(long, default_value_t = 0)]
    pub priority: i32,
    /// Attempts before a task is DEAD (default: the type's).
    #[arg(long)]
    pub max_attempts: Option<u32>,
    /// Metadata for the tasks, KEY=VALUE (repeatable).
    #[arg(long = "metadata", value_parser = key_value)]
    pub metadata: Vec<(String, String)>,
    /// A label each task requires of its agent, KEY=VALUE (repeatable).
    #[arg(long = "require-label", value_parser = key_value)]
    pub required_labels: Vec<(String, String)>,
    /// Create it paused.
    #[arg(long)]
    pub paused: bool,
}

/// `--overlap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum OverlapArg {
    /// Make no task while the previous run goes on.
    Skip,
    /// Make a task anyway.
    Allow,
    /// Let one fire time wait for the previous run.
    BufferOne,
}

/// `--catch-up`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum CatchUpArg {
    /// Make nothing for missed fire times.
    Skip,
    /// One task for the latest missed fire time.
    RunOnce,
    /// A task per missed fire time, up to the limit.
    RunAll,
}

impl Definition {
    fn spec(self) -> Result<ScheduleSpec, ClientError> {
        let payload = parse_payload(&self.payload)?;
        let duration = |d: Duration| prost_types::Duration {
            seconds: d.as_secs() as i64,
            nanos: d.subsec_nanos() as i32,
        };
        Ok(ScheduleSpec {
            name: self.name,
            task_type: self.task_type,
            payload: Some(json_to_struct(&payload)),
            metadata: self.metadata.into_iter().collect(),
            required_labels: self.required_labels.into_iter().collect(),
            priority: self.priority,
            max_attempts: self.max_attempts.unwrap_or(0),
            cron: self.cron.unwrap_or_default(),
            interval: self.every.map(duration),
            timezone: self.timezone.unwrap_or_default(),
            jitter: self.jitter.map(duration),
            overlap: match self.overlap {
                OverlapArg::Skip => OverlapPolicy::Skip,
                OverlapArg::Allow => OverlapPolicy::Allow,
                OverlapArg::BufferOne => OverlapPolicy::BufferOne,
            } as i32,
            catch_up: match self.catch_up {
                CatchUpArg::Skip => CatchUpPolicy::Skip,
                CatchUpArg::RunOnce => CatchUpPolicy::RunOnce,
                CatchUpArg::RunAll => CatchUpPolicy::RunAll,
            } as i32,
            catch_up_limit: self.catch_up_limit.unwrap_or(0),
            paused: self.paused,
            ..ScheduleSpec::default()
        })
    }
}

/// The columns a schedule is shown in.
pub(super) const SCHEDULE_COLUMNS: [&str; 7] = [
    "name",
    "task_type",
    "cadence",
    "timezone",
    "paused",
    "next_fire_at",
    "declared_by",
];

/// A schedule as the CLI shows it.
pub(super) fn schedule_json(schedule: &Schedule) -> Value {
    let spec = schedule.spec.clone().unwrap_or_default();
    let cadence = match &spec.interval {
        Some(interval) => format!(
            "every {}",
            humantime::format_duration(Duration::new(
                interval.seconds.max(0) as u64,
                interval.nanos.max(0) as u32
            ))
        ),
        None => spec.cron.clone(),
    };
    json!({
        "name": spec.name, "task_type": spec.task_type, "domain": schedule.domain,
        "cadence": cadence, "timezone": spec.timezone,
        "overlap": OverlapPolicy::try_from(spec.overlap).map(|p| p.as_str_name().trim_start_matches("OVERLAP_POLICY_").to_lowercase()).unwrap_or_default(),
        "catch_up": CatchUpPolicy::try_from(spec.catch_up).map(|p| p.as_str_name().trim_start_matches("CATCH_UP_POLICY_").to_lowercase()).unwrap_or_default(),
        "paused": if schedule.paused { "yes" } else { "no" },
        "next_fire_at": time(&schedule.next_fire_at),
        "upcoming": schedule.upcoming.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "buffered_fire_at": time(&schedule.buffered_fire_at),
        "declared_by": schedule.declared_by,
        "required_labels": spec.required_labels,
        "runs": schedule.recent_runs.iter().map(run_json).collect::<Vec<_>>(),
    })
}

fn run_json(run: &ScheduleRun) -> Value {
    json!({
        "fire_at": time(&run.fire_at), "task_id": run.task_id,
        "status": if run.task_id.is_empty() { String::new() } else { status_name(run.status) },
        "skipped": run.skipped, "fire_times": run.fire_times,
        "triggered": if run.triggered { "yes" } else { "no" },
    })
}

/// `taskplane schedule …`.
pub async fn schedule(args: &ClientArgs, command: ScheduleCommand) -> Result<(), ClientError> {
    let client = super::client(args).await?;
    let one = |schedule: Schedule| {
        let row = schedule_json(&schedule);
        print(
            args.output,
            &SCHEDULE_COLUMNS,
            std::slice::from_ref(&row),
            row.clone(),
        );
    };
    match command {
        ScheduleCommand::Create(definition) => {
            one(client.create_schedule(definition.spec()?).await?);
        }
        ScheduleCommand::Update(definition) => {
            one(client.update_schedule(definition.spec()?).await?);
        }
        ScheduleCommand::List { task_type, domain } => {
            let schedules = client
                .list_schedules(task_type.as_deref(), domain.as_deref())
                .await?;
            let rows: Vec<Value> = schedules.iter().map(schedule_json).collect();
            print(
                args.output,
                &SCHEDULE_COLUMNS,
                &rows,
                Value::Array(rows.clone()),
            );
        }
        ScheduleCommand::Get {
            name,
            upcoming,
            from,
        } => {
            let upcoming_from = from
                .map(|text| {
                    chrono::DateTime::parse_from_rfc3339(&text)
                        .map(|at| at.to_utc())
                        .map_err(|e| {
                            ClientError::Usage(format!("--from is not an RFC 3339 time: {e}"))
                        })
                })
                .transpose()?;
            let schedule = client
                .get_schedule_upcoming(&name, upcoming, upcoming_from)
                .await?;
            let row = schedule_json(&schedule);
            if args.output == Output::Json {
                print(args.output, &[], &[], row);
                return Ok(());
            }
            print(
                args.output,
                &SCHEDULE_COLUMNS,
                std::slice::from_ref(&row),
                row.clone(),
            );
            let upcoming: Vec<Value> = schedule
                .upcoming
                .iter()
                .map(|at| json!({ "upcoming": at.to_string() }))
                .collect();
            print(args.output, &["upcoming"], &upcoming, Value::Null);
            let runs: Vec<Value> = schedule.recent_runs.iter().map(run_json).collect();
            print(
                args.output,
                &[
                    "fire_at",
                    "task_id",
                    "status",
                    "skipped",
                    "fire_times",
                    "triggered",
                ],
                &runs,
                Value::Null,
            );
        }
        ScheduleCommand::Pause { name } => {
            one(client.pause_schedule(&name).await?);
        }
        ScheduleCommand::Resume { name } => {
            one(client.resume_schedule(&name).await?);
        }
        ScheduleCommand::Delete { name } => {
            client.delete_schedule(&name).await?;
            print(
                args.output,
                &["deleted"],
                &[json!({ "deleted": name })],
                json!({ "deleted": name }),
            );
        }
        ScheduleCommand::Trigger { name } => {
            let task = client.trigger_schedule(&name).await?;
            print_task(args.output, &task);
        }
    }
    Ok(())
}

/// The schedules, for `taskplane stats`.
pub(super) async fn list_all(
    channel: AuthChannel,
    domain: String,
) -> Result<Vec<Schedule>, ClientError> {
    let mut client = ScheduleServiceClient::new(channel);
    Ok(client
        .list_schedules(ListSchedulesRequest {
            domain,
            ..ListSchedulesRequest::default()
        })
        .await?
        .into_inner()
        .schedules)
}
