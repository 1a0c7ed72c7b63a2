//! Schedules through real servers and agents: fire times make tasks on
//! time and only once, each overlap and catch-up policy does what it says,
//! pause and resume, DST computed rather than waited for, agent-declared
//! schedules reconciled across agent versions, and bad input refused with
//! nothing stored.

use std::time::Duration;

use integration_tests::{
    Backend, TestAgent, TestServer, fast_queue, http_get, metric_sample, on_every_backend, wait_for,
};
use serde_json::json;
use taskplane_agent::schedule::{CatchUp as DeclaredCatchUp, Schedule as Declared};
use taskplane_agent::{
    DomainRegistry, TaskContext, TaskError, TaskHandler, TaskRegistry, TaskResult,
};
use taskplane_proto::json::json_to_struct;
use taskplane_proto::v1::schedule_service_client::ScheduleServiceClient;
use taskplane_proto::v1::{
    CatchUpPolicy, CreateScheduleRequest, DeleteScheduleRequest, GetScheduleRequest,
    ListSchedulesRequest, ListTasksRequest, OverlapPolicy, PauseScheduleRequest,
    ResumeScheduleRequest, Schedule, ScheduleSpec, Task, TaskStatus, TriggerScheduleRequest,
    UpdateScheduleRequest,
};
use tonic::Code;
use tonic::transport::Channel;

/// Sleeps for as long as the payload's `sleep_ms`, then completes.
struct Sleep;

#[async_trait::async_trait]
impl TaskHandler for Sleep {
    async fn handle(&self, context: TaskContext) -> Result<TaskResult, TaskError> {
        let ms = context.payload["sleep_ms"].as_u64().unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok(TaskResult::new(json!({ "slept_ms": ms })))
    }
}

fn sleeper() -> TaskRegistry {
    let mut registry = TaskRegistry::new();
    registry.register_handler("tick", Box::new(Sleep));
    registry
}

/// A schedule of `tick` every second.
fn every_second(name: &str) -> ScheduleSpec {
    ScheduleSpec {
        name: name.to_owned(),
        task_type: "tick".to_owned(),
        interval: Some(prost_types::Duration {
            seconds: 1,
            nanos: 0,
        }),
        overlap: OverlapPolicy::Allow as i32,
        ..ScheduleSpec::default()
    }
}

async fn create(client: &mut ScheduleServiceClient<Channel>, spec: ScheduleSpec) -> Schedule {
    client
        .create_schedule(CreateScheduleRequest {
            schedule: Some(spec),
        })
        .await
        .expect("the schedule is created")
        .into_inner()
}

async fn get(client: &mut ScheduleServiceClient<Channel>, name: &str) -> Schedule {
    client
        .get_schedule(GetScheduleRequest {
            name: name.to_owned(),
            ..GetScheduleRequest::default()
        })
        .await
        .expect("the schedule is there")
        .into_inner()
}

/// The fire time a scheduled task stands for, in Unix milliseconds.
fn fire_ms(task: &Task) -> i64 {
    let text = &task.metadata["taskplane.fire_at"];
    let at: prost_types::Timestamp = text.parse().expect("an RFC 3339 fire time");
    at.seconds * 1000 + i64::from(at.nanos) / 1_000_000
}

/// The tasks schedule `name` made, by fire time.
async fn tasks_of(server: &TestServer, name: &str) -> Vec<Task> {
    let mut tasks: Vec<Task> = server
        .tasks()
        .await
        .list_tasks(ListTasksRequest {
            task_type: "tick".to_owned(),
            page_size: 500,
            ..ListTasksRequest::default()
        })
        .await
        .unwrap()
        .into_inner()
        .tasks
        .into_iter()
        .filter(|t| t.metadata.get("taskplane.schedule") == Some(&name.to_owned()))
        .collect();
    tasks.sort_by_key(fire_ms);
    tasks
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

async fn a_per_second_schedule_makes_a_task_each_second(backend: Backend) {
    let server = TestServer::start(&backend).await;
    let agent = TestAgent::start(&server, "ticker", sleeper()).await;
    let mut schedules = server.schedules().await;
    let created = create(&mut schedules, every_second("per-second")).await;
    assert_eq!(created.upcoming.len(), 5);
    tokio::time::sleep(Duration::from_secs(5)).await;
    schedules
        .delete_schedule(DeleteScheduleRequest {
            name: "per-second".into(),
        })
        .await
        .unwrap();
    let tasks = tasks_of(&server, "per-second").await;
    assert!(
        (4..=6).contains(&tasks.len()),
        "5 s of a per-second schedule made {} tasks",
        tasks.len()
    );
    // One task per fire time, each a second after the last, each keyed by it.
    for pair in tasks.windows(2) {
        assert_eq!(fire_ms(&pair[1]) - fire_ms(&pair[0]), 1000);
    }
    for task in &tasks {
        assert_eq!(
            task.idempotency_key,
            format!("schedule:per-second:{}", fire_ms(task))
        );
    }
    // The agent ran them.
    let client = server.tasks().await;
    for task in &tasks {
        integration_tests::wait_status(&client, &task.id, TaskStatus::Completed).await;
    }
    // Counted, with the lag of each from its fire time to its commit.
    let (_, text) = http_get(server.metrics_address, "/metrics").await;
    let fires = metric_sample(
        &text,
        "taskplane_schedule_fires_total{schedule=\"per-second\"}",
    );
    assert_eq!(fires, Some(tasks.len() as f64), "{text}");
    let lags = metric_sample(
        &text,
        "taskplane_schedule_lag_seconds_count{schedule=\"per-second\"}",
    );
    assert_eq!(lags, Some(tasks.len() as f64), "{text}");
    agent.stop().await.unwrap();
    server.stop().await;
}

/// Three schedules, one per catch-up policy, every second; the server is
/// down for 3.5 s (grace 300 ms), so at least three fire times are missed.
async fn a_stopped_server_follows_each_catch_up_policy(backend: Backend) {
    let queue = taskplane_server::QueueConfig {
        schedule_grace: Duration::from_millis(300),
        ..fast_queue()
    };
    let server = TestServer::start_with(&backend, queue).await;
    server.register_type("tick", "clock").await;
    let mut schedules = server.schedules().await;
    for (name, catch_up) in [
        ("skip", CatchUpPolicy::Skip),
        ("once", CatchUpPolicy::RunOnce),
        ("all", CatchUpPolicy::RunAll),
    ] {
        let spec = ScheduleSpec {
            catch_up: catch_up as i32,
            ..every_second(name)
        };
        create(&mut schedules, spec).await;
    }
    // Let each fire at least once before the stop.
    wait_for(|| async { tasks_of(&server, "skip").await.len() >= 2 }).await;
    let server = server.restart_after(Duration::from_millis(3500)).await;
    // Two fire times after the restart.
    wait_for(|| async {
        let tasks = tasks_of(&server, "all").await;
        tasks.len() >= 2 && fire_ms(tasks.last().unwrap()) >= now_ms() - 200
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut schedules = server.schedules().await;

    // run_all: every fire time has its task, the missed ones too.
    let all = tasks_of(&server, "all").await;
    for pair in all.windows(2) {
        assert_eq!(
            fire_ms(&pair[1]) - fire_ms(&pair[0]),
            1000,
            "a gap in run_all"
        );
    }

    // skip and run_once: the missed fire times make one run, of at least 3.
    for (name, makes_task) in [("skip", false), ("once", true)] {
        let schedule = get(&mut schedules, name).await;
        let catch_up = schedule
            .recent_runs
            .iter()
            .find(|run| run.fire_times >= 3)
            .unwrap_or_else(|| {
                panic!(
                    "{name}: no run stands for the missed fire times: {:?}",
                    schedule.recent_runs
                )
            });
        assert_eq!(
            !catch_up.task_id.is_empty(),
            makes_task,
            "{name}: {catch_up:?}"
        );
        if !makes_task {
            assert!(catch_up.skipped.starts_with("catch-up"), "{catch_up:?}");
        }
        // No other task falls inside the outage.
        let fired = catch_up.fire_at.as_ref().unwrap();
        let fired_ms = fired.seconds * 1000;
        let missed_from = fired_ms - i64::from(catch_up.fire_times) * 1000;
        let tasks = tasks_of(&server, name).await;
        let inside: Vec<i64> = tasks
            .iter()
            .map(fire_ms)
            .filter(|ms| *ms > missed_from && *ms <= fired_ms)
            .collect();
        let expected = if makes_task { vec![fired_ms] } else { vec![] };
        assert_eq!(inside, expected, "{name}");
    }
    server.stop().await;
}

/// A handler slower than the interval: with overlap skip, a fire time while
/// a run goes on makes no task, and runs never overlap.
async fn skip_overlap_never_runs_two_at_once(backend: Backend) {
    let server = TestServer::start(&backend).await;
    let agent = TestAgent::start(&server, "slow", sleeper()).await;
    let mut schedules = server.schedules().await;
    let spec = ScheduleSpec {
        overlap: OverlapPolicy::Skip as i32,
        payload: Some(json_to_struct(
            json!({ "sleep_ms": 2500 }).as_object().unwrap(),
        )),
        ..every_second("slow")
    };
    create(&mut schedules, spec).await;
    wait_for(|| async {
        get(&mut server.schedules().await, "slow")
            .await
            .recent_runs
            .iter()
            .filter(|r| r.skipped.starts_with("overlap"))
            .count()
            >= 3
    })
    .await;
    schedules
        .pause_schedule(PauseScheduleRequest {
            name: "slow".into(),
        })
        .await
        .unwrap();
    let (_, text) = http_get(server.metrics_address, "/metrics").await;
    let skips = metric_sample(
        &text,
        "taskplane_schedule_skips_total{schedule=\"slow\",reason=\"overlap\"}",
    );
    assert!(skips.is_some_and(|n| n >= 3.0), "{text}");
    let mut client = server.tasks().await;
    let mut runs = Vec::new();
    for task in tasks_of(&server, "slow").await {
        let done = integration_tests::wait_terminal(&mut client, &task.id).await;
        runs.push(done);
    }
    assert!(!runs.is_empty());
    for pair in runs.windows(2) {
        let finished = pair[0].finished_at.unwrap();
        let started = pair[1].started_at.unwrap();
        assert!(
            (started.seconds, started.nanos) >= (finished.seconds, finished.nanos),
            "a run started before the previous one finished"
        );
    }
    agent.stop().await.unwrap();
    server.stop().await;
}

/// The same slow handler with buffer_one: the first fire time during a run
/// waits and is enqueued as that run finishes; the rest are skipped.
async fn buffer_one_enqueues_one_waiting_fire_time_when_the_run_ends(backend: Backend) {
    let server = TestServer::start(&backend).await;
    let agent = TestAgent::start(&server, "slow", sleeper()).await;
    let mut schedules = server.schedules().await;
    let spec = ScheduleSpec {
        overlap: OverlapPolicy::BufferOne as i32,
        payload: Some(json_to_struct(
            json!({ "sleep_ms": 2500 }).as_object().unwrap(),
        )),
        ..every_second("buffered")
    };
    create(&mut schedules, spec).await;
    wait_for(|| async {
        let schedule = get(&mut server.schedules().await, "buffered").await;
        schedule.buffered_fire_at.is_some()
    })
    .await;
    wait_for(|| async { tasks_of(&server, "buffered").await.len() >= 2 }).await;
    schedules
        .pause_schedule(PauseScheduleRequest {
            name: "buffered".into(),
        })
        .await
        .unwrap();
    let mut client = server.tasks().await;
    let tasks = tasks_of(&server, "buffered").await;
    let first = integration_tests::wait_terminal(&mut client, &tasks[0].id).await;
    let second = integration_tests::wait_terminal(&mut client, &tasks[1].id).await;
    // The second task stands for a fire time during the first run, and was
    // enqueued only once that run had finished.
    let ms = |at: &prost_types::Timestamp| at.seconds * 1000 + i64::from(at.nanos) / 1_000_000;
    let first_finished = ms(first.finished_at.as_ref().unwrap());
    assert!(
        fire_ms(&second) < first_finished,
        "it fired during the first run"
    );
    assert!(ms(second.created_at.as_ref().unwrap()) >= first_finished);
    let runs = get(&mut schedules, "buffered").await.recent_runs;
    assert!(
        runs.iter().any(|r| r.skipped.contains("already waits")),
        "{runs:?}"
    );
    agent.stop().await.unwrap();
    server.stop().await;
}

async fn pause_stops_fire_times_and_resume_starts_them_again(backend: Backend) {
    let server = TestServer::start(&backend).await;
    server.register_type("tick", "clock").await;
    let mut schedules = server.schedules().await;
    create(&mut schedules, every_second("pausable")).await;
    wait_for(|| async { !tasks_of(&server, "pausable").await.is_empty() }).await;
    let paused = schedules
        .pause_schedule(PauseScheduleRequest {
            name: "pausable".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(paused.paused);
    assert!(paused.next_fire_at.is_none());
    let before = tasks_of(&server, "pausable").await.len();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(tasks_of(&server, "pausable").await.len(), before);
    // A trigger runs even a paused schedule, at once.
    let triggered = schedules
        .trigger_schedule(TriggerScheduleRequest {
            name: "pausable".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    assert_eq!(triggered.metadata["taskplane.schedule"], "pausable");
    let resumed_at = now_ms();
    let resumed = schedules
        .resume_schedule(ResumeScheduleRequest {
            name: "pausable".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!resumed.paused);
    wait_for(|| async { tasks_of(&server, "pausable").await.len() >= before + 3 }).await;
    // The fire times passed while paused were not caught up.
    let tasks = tasks_of(&server, "pausable").await;
    let after_resume: Vec<i64> = tasks
        .iter()
        .filter(|t| !t.idempotency_key.contains("trigger"))
        .map(fire_ms)
        .filter(|ms| *ms > fire_ms(&tasks[before - 1]))
        .collect();
    assert!(
        after_resume.iter().all(|ms| *ms > resumed_at),
        "{after_resume:?}"
    );
    let runs = get(&mut schedules, "pausable").await.recent_runs;
    assert!(
        runs.iter()
            .any(|r| r.triggered && r.task_id == triggered.id)
    );
    server.stop().await;
}

async fn bad_input_names_the_field_and_stores_nothing(backend: Backend) {
    let server = TestServer::start(&backend).await;
    server.register_type("tick", "clock").await;
    let mut schedules = server.schedules().await;
    let cases = [
        (
            ScheduleSpec {
                cron: "61 * * * *".into(),
                interval: None,
                ..every_second("bad-cron")
            },
            Code::InvalidArgument,
            "schedule.cron",
        ),
        (
            ScheduleSpec {
                cron: "0 2 * * *".into(),
                interval: None,
                timezone: "Mars/Olympus".into(),
                ..every_second("bad-zone")
            },
            Code::InvalidArgument,
            "schedule.timezone",
        ),
        (
            ScheduleSpec {
                task_type: "nobody_serves_this".into(),
                ..every_second("bad-type")
            },
            Code::FailedPrecondition,
            "nobody_serves_this",
        ),
        (
            ScheduleSpec {
                interval: None,
                ..every_second("no-cadence")
            },
            Code::InvalidArgument,
            "cron or interval is required",
        ),
        (
            ScheduleSpec {
                required_labels: [(String::new(), "eu".to_owned())].into(),
                ..every_second("blank-label")
            },
            Code::InvalidArgument,
            "schedule.required_labels",
        ),
    ];
    for (spec, code, names) in cases {
        let status = schedules
            .create_schedule(CreateScheduleRequest {
                schedule: Some(spec),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), code, "{status:?}");
        assert!(status.message().contains(names), "{}", status.message());
    }
    create(&mut schedules, every_second("taken")).await;
    let status = schedules
        .create_schedule(CreateScheduleRequest {
            schedule: Some(ScheduleSpec {
                cron: "@hourly".into(),
                interval: None,
                ..every_second("taken")
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);
    let listed = schedules
        .list_schedules(ListSchedulesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .schedules;
    assert_eq!(listed.len(), 1);
    // The duplicate changed nothing: still every second.
    assert!(listed[0].spec.as_ref().unwrap().interval.is_some());
    server.stop().await;
}

/// The clock injected through `upcoming_from`: New York's 02:30 does not
/// exist on 8 March 2026, and 01:30 happens twice on 1 November.
async fn dst_changes_are_computed_not_waited_for(backend: Backend) {
    let server = TestServer::start(&backend).await;
    server.register_type("tick", "clock").await;
    let mut schedules = server.schedules().await;
    for (name, cron) in [("ny-0230", "30 2 * * *"), ("ny-0130", "30 1 * * *")] {
        let spec = ScheduleSpec {
            cron: cron.into(),
            interval: None,
            timezone: "America/New_York".into(),
            ..every_second(name)
        };
        create(&mut schedules, spec).await;
    }
    let upcoming = |name: &str, from: &str| {
        let mut schedules = schedules.clone();
        let name = name.to_owned();
        let from: prost_types::Timestamp = from.parse().unwrap();
        async move {
            schedules
                .get_schedule(GetScheduleRequest {
                    name,
                    upcoming_from: Some(from),
                    upcoming_count: 3,
                })
                .await
                .unwrap()
                .into_inner()
                .upcoming
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        upcoming("ny-0230", "2026-03-07T00:00:00Z").await,
        [
            "2026-03-07T07:30:00Z",
            "2026-03-08T07:00:00Z",
            "2026-03-09T06:30:00Z"
        ]
    );
    assert_eq!(
        upcoming("ny-0130", "2026-10-31T12:00:00Z").await,
        [
            "2026-11-01T05:30:00Z",
            "2026-11-02T06:30:00Z",
            "2026-11-03T06:30:00Z"
        ]
    );
    server.stop().await;
}

/// A domain that declares its schedules, as an agent of one revision would.
struct Clock {
    revision: u32,
}

impl DomainRegistry for Clock {
    fn register_handlers(&self, registry: &mut TaskRegistry) -> Vec<String> {
        registry.register_handler("tick", Box::new(Sleep));
        vec!["tick".to_owned()]
    }

    fn domain_name(&self) -> &'static str {
        "clock"
    }

    fn schedules(&self) -> Vec<Declared> {
        let mut declared = vec![
            Declared::cron(
                "hourly-tick",
                "tick",
                if self.revision >= 2 {
                    "30 * * * *"
                } else {
                    "0 * * * *"
                },
            )
            .catch_up(DeclaredCatchUp::Skip)
            .revision(self.revision),
        ];
        if self.revision >= 2 {
            declared.push(Declared::cron("daily-tick", "tick", "@daily").revision(self.revision));
        }
        declared
    }
}

fn clock_agent(revision: u32) -> TaskRegistry {
    let mut registry = TaskRegistry::new();
    registry.register_domain("clock", Box::new(Clock { revision }));
    registry
}

async fn declared_schedules_are_reconciled_across_agent_versions(backend: Backend) {
    let server = TestServer::start(&backend).await;
    let mut schedules = server.schedules().await;
    let cron_of = |schedule: &Schedule| schedule.spec.as_ref().unwrap().cron.clone();

    let v1 = TestAgent::start(&server, "clock-v1", clock_agent(1)).await;
    let hourly = get(&mut schedules, "hourly-tick").await;
    assert_eq!(cron_of(&hourly), "0 * * * *");
    assert_eq!(hourly.declared_by, "agent:clock");
    v1.stop().await.unwrap();

    // An operator pauses it; the newer agent changes it and adds one.
    schedules
        .pause_schedule(PauseScheduleRequest {
            name: "hourly-tick".into(),
        })
        .await
        .unwrap();
    let v2 = TestAgent::start(&server, "clock-v2", clock_agent(2)).await;
    let hourly = get(&mut schedules, "hourly-tick").await;
    assert_eq!(cron_of(&hourly), "30 * * * *");
    assert!(hourly.paused, "a declaration keeps the operator's pause");
    assert_eq!(cron_of(&get(&mut schedules, "daily-tick").await), "@daily");

    // The older agent comes back: it changes nothing and deletes nothing.
    let v1 = TestAgent::start(&server, "clock-v1-again", clock_agent(1)).await;
    assert_eq!(
        cron_of(&get(&mut schedules, "hourly-tick").await),
        "30 * * * *"
    );
    assert_eq!(cron_of(&get(&mut schedules, "daily-tick").await), "@daily");

    // An operator's schedule of the same name is never taken over.
    v1.stop().await.unwrap();
    v2.stop().await.unwrap();
    schedules
        .delete_schedule(DeleteScheduleRequest {
            name: "daily-tick".into(),
        })
        .await
        .unwrap();
    let operators = ScheduleSpec {
        cron: "0 12 * * *".into(),
        interval: None,
        ..every_second("daily-tick")
    };
    create(&mut schedules, operators).await;
    let v2 = TestAgent::start(&server, "clock-v2-again", clock_agent(2)).await;
    let daily = get(&mut schedules, "daily-tick").await;
    assert_eq!(cron_of(&daily), "0 12 * * *");
    assert_eq!(daily.declared_by, "operator");
    v2.stop().await.unwrap();
    server.stop().await;
}

async fn update_replaces_the_definition_and_unknown_names_are_not_found(backend: Backend) {
    let server = TestServer::start(&backend).await;
    server.register_type("tick", "clock").await;
    let mut schedules = server.schedules().await;
    let paused = ScheduleSpec {
        paused: true,
        ..every_second("changing")
    };
    create(&mut schedules, paused).await;
    let hourly = ScheduleSpec {
        cron: "@hourly".into(),
        interval: None,
        ..every_second("changing")
    };
    let updated = schedules
        .update_schedule(UpdateScheduleRequest {
            schedule: Some(hourly.clone()),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.spec.as_ref().unwrap().cron, "@hourly");
    assert!(updated.paused, "an update keeps the pause");
    let resumed = schedules
        .resume_schedule(ResumeScheduleRequest {
            name: "changing".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let next = resumed.next_fire_at.unwrap();
    assert_eq!((next.seconds % 3600, next.nanos), (0, 0), "{next}");

    let missing = ScheduleSpec {
        name: "nobody".into(),
        ..hourly
    };
    let update = schedules
        .update_schedule(UpdateScheduleRequest {
            schedule: Some(missing),
        })
        .await
        .unwrap_err();
    let delete = schedules
        .delete_schedule(DeleteScheduleRequest {
            name: "nobody".into(),
        })
        .await
        .unwrap_err();
    let trigger = schedules
        .trigger_schedule(TriggerScheduleRequest {
            name: "nobody".into(),
        })
        .await
        .unwrap_err();
    for status in [update, delete, trigger] {
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
        assert!(status.message().contains("'nobody'"), "{status:?}");
    }
    server.stop().await;
}

/// A schedule's tasks carry its `required_labels`, so they run only where
/// the labels match; the definition reads back with them.
async fn a_schedules_tasks_require_its_labels(backend: Backend) {
    let server = TestServer::start(&backend).await;
    server.register_type("tick", "clock").await;
    let mut schedules = server.schedules().await;
    let spec = ScheduleSpec {
        required_labels: [("region".to_owned(), "eu".to_owned())].into(),
        paused: true,
        ..every_second("eu-only")
    };
    let created = create(&mut schedules, spec).await;
    assert_eq!(
        created.spec.unwrap().required_labels,
        [("region".to_owned(), "eu".to_owned())].into()
    );
    let task = schedules
        .trigger_schedule(TriggerScheduleRequest {
            name: "eu-only".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    assert_eq!(
        task.required_labels,
        [("region".to_owned(), "eu".to_owned())].into()
    );
    let stored = get(&mut schedules, "eu-only").await;
    assert_eq!(stored.spec.unwrap().required_labels.len(), 1);
    server.stop().await;
}

on_every_backend!(
    a_schedules_tasks_require_its_labels,
    update_replaces_the_definition_and_unknown_names_are_not_found,
    a_per_second_schedule_makes_a_task_each_second,
    a_stopped_server_follows_each_catch_up_policy,
    skip_overlap_never_runs_two_at_once,
    buffer_one_enqueues_one_waiting_fire_time_when_the_run_ends,
    pause_stops_fire_times_and_resume_starts_them_again,
    bad_input_names_the_field_and_stores_nothing,
    dst_changes_are_computed_not_waited_for,
    declared_schedules_are_reconciled_across_agent_versions,
);
