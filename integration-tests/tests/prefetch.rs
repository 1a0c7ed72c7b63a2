//! The prefetch window, with real agents on a real server: agents queue
//! assignments beyond their slots, the work still spreads evenly over
//! agents, and a queued task never waits behind slow handlers while another
//! agent could run it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use integration_tests::{Backend, TestAgent, TestServer, attempts_of, enqueue_request, wait_for};
use serde_json::json;
use taskplane_agent::{TaskContext, TaskError, TaskHandler, TaskRegistry, TaskResult};
use taskplane_proto::v1::EnqueueTasksRequest;
use taskplane_proto::v1::task_service_client::TaskServiceClient;
use tonic::transport::Channel;

/// One run of a handler, as the handler saw it.
#[derive(Debug, Clone)]
struct Run {
    agent: &'static str,
    task_id: String,
    attempt: u32,
    started: Instant,
    ended: Instant,
}

/// Sleeps for the payload's `sleep_ms` and records the run.
struct Recorder {
    agent: &'static str,
    runs: Arc<Mutex<Vec<Run>>>,
}

#[async_trait::async_trait]
impl TaskHandler for Recorder {
    async fn handle(&self, context: TaskContext) -> Result<TaskResult, TaskError> {
        let started = Instant::now();
        let sleep = context.payload["sleep_ms"].as_u64().unwrap_or(0);
        if sleep > 0 {
            tokio::time::sleep(Duration::from_millis(sleep)).await;
        }
        self.runs.lock().unwrap().push(Run {
            agent: self.agent,
            task_id: context.task_id.clone(),
            attempt: context.attempt,
            started,
            ended: Instant::now(),
        });
        Ok(TaskResult::new(json!({})))
    }
}

fn recording(agent: &'static str, runs: &Arc<Mutex<Vec<Run>>>) -> TaskRegistry {
    let mut registry = TaskRegistry::new();
    registry.register_handler(
        "work",
        Box::new(Recorder {
            agent,
            runs: runs.clone(),
        }),
    );
    registry
}

/// Enqueues `count` tasks of `work` sleeping `sleep_ms`, in batches of a
/// thousand; returns their ids.
async fn enqueue_work(
    tasks: &mut TaskServiceClient<Channel>,
    count: usize,
    sleep_ms: u64,
) -> Vec<String> {
    let mut ids = Vec::new();
    for batch in (0..count).collect::<Vec<_>>().chunks(1000) {
        let request = EnqueueTasksRequest {
            tasks: batch
                .iter()
                .map(|_| enqueue_request("work", json!({ "sleep_ms": sleep_ms })))
                .collect(),
        };
        let results = tasks.enqueue_tasks(request).await.unwrap().into_inner();
        ids.extend(
            results
                .results
                .into_iter()
                .map(|r| r.task.expect("stored").id),
        );
    }
    ids
}

/// Waits until `count` runs are recorded; returns them.
async fn runs_reaching(runs: &Arc<Mutex<Vec<Run>>>, count: usize) -> Vec<Run> {
    wait_for(|| {
        let done = runs.lock().unwrap().len() >= count;
        async move { done }
    })
    .await;
    runs.lock().unwrap().clone()
}

async fn two_agents_of_sixteen_slots_share_a_drain_and_run_each_task_once(backend: Backend) {
    const TASKS: usize = 4000;
    let server = TestServer::start(&backend).await;
    let runs = Arc::new(Mutex::new(Vec::new()));
    let sixteen_slots = |agent: taskplane_agent::AgentBuilder| agent.max_concurrency(16);
    let first =
        TestAgent::start_configured(&server, "a", recording("a", &runs), sixteen_slots).await;
    let second =
        TestAgent::start_configured(&server, "b", recording("b", &runs), sixteen_slots).await;
    let mut tasks = server.tasks().await;
    let ids = enqueue_work(&mut tasks, TASKS, 0).await;
    runs_reaching(&runs, TASKS).await;
    first.stop().await.unwrap();
    second.stop().await.unwrap();

    // Read after the agents stopped, so that a duplicate run shows.
    let ran = runs.lock().unwrap().clone();
    let mut times_run: HashMap<&str, usize> = HashMap::new();
    for run in &ran {
        *times_run.entry(run.task_id.as_str()).or_default() += 1;
    }
    assert_eq!(times_run.len(), TASKS, "every task ran");
    assert!(
        ids.iter().all(|id| times_run.get(id.as_str()) == Some(&1)),
        "a task ran twice"
    );
    let by_a = ran.iter().filter(|run| run.agent == "a").count();
    let share = by_a as f64 / TASKS as f64;
    assert!(
        (0.4..=0.6).contains(&share),
        "agent a ran {by_a} of {TASKS} tasks: neither agent may do more than 60 %"
    );
    server.stop().await;
}

integration_tests::on_every_backend!(
    two_agents_of_sixteen_slots_share_a_drain_and_run_each_task_once,
    tasks_queued_behind_slow_handlers_go_to_an_idle_agent_with_their_attempts_uncounted,
);

async fn tasks_queued_behind_slow_handlers_go_to_an_idle_agent_with_their_attempts_uncounted(
    backend: Backend,
) {
    const SLOW_MS: u64 = 600;
    const SLOW_TASKS: usize = 5;
    let server = TestServer::start(&backend).await;
    let runs = Arc::new(Mutex::new(Vec::new()));
    let one_slot = |agent: taskplane_agent::AgentBuilder| agent.max_concurrency(1).prefetch(16);
    let busy =
        TestAgent::start_configured(&server, "busy", recording("busy", &runs), one_slot).await;
    let mut tasks = server.tasks().await;
    // Fast tasks first: the busy agent's window opens to all it asked for.
    enqueue_work(&mut tasks, 300, 0).await;
    runs_reaching(&runs, 300).await;

    // Slow ones next: one runs, the rest would queue behind it.
    let slow = enqueue_work(&mut tasks, SLOW_TASKS, SLOW_MS).await;
    let idle =
        TestAgent::start_configured(&server, "idle", recording("idle", &runs), one_slot).await;
    let ran = runs_reaching(&runs, 300 + SLOW_TASKS).await;
    busy.stop().await.unwrap();
    idle.stop().await.unwrap();

    let slow_runs: Vec<&Run> = ran
        .iter()
        .filter(|run| slow.contains(&run.task_id))
        .collect();
    assert_eq!(
        slow_runs.len(),
        SLOW_TASKS,
        "each slow task ran once: {slow_runs:?}"
    );
    let first_end_on_busy = slow_runs
        .iter()
        .filter(|run| run.agent == "busy")
        .map(|run| run.ended)
        .min()
        .expect("the busy agent ran a slow task");
    let first_start_on_idle = slow_runs
        .iter()
        .filter(|run| run.agent == "idle")
        .map(|run| run.started)
        .min()
        .expect("the idle agent ran a slow task");
    assert!(
        first_start_on_idle < first_end_on_busy,
        "the idle agent waited for the busy agent's first slow task to end: the rest sat in its queue"
    );
    for id in &slow {
        let attempts = attempts_of(&mut tasks, id).await;
        assert_eq!(
            attempts.len(),
            1,
            "a task given back unstarted keeps its attempts: {attempts:?}"
        );
        assert_eq!(attempts[0].outcome, "completed", "{attempts:?}");
        let run = slow_runs.iter().find(|run| &run.task_id == id).unwrap();
        assert_eq!(run.attempt, 1);
    }
    server.stop().await;
}
