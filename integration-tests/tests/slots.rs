//! An agent's slots changed while it runs (`Agent::concurrency`), with a
//! real agent on a real server: more slots bring more tasks at once, none
//! pauses delivery (the server stops leasing to it), and the slots come
//! back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use integration_tests::{Backend, TestAgent, TestServer, enqueue_request, wait_for};
use serde_json::json;
use taskplane_agent::{TaskContext, TaskError, TaskHandler, TaskRegistry, TaskResult};
use taskplane_proto::v1::task_service_client::TaskServiceClient;
use taskplane_proto::v1::{GetTaskRequest, TaskStatus};
use tonic::transport::Channel;

/// Handlers that hold their slot until released, counting how many run.
#[derive(Default)]
struct Gate {
    running: AtomicUsize,
    started: AtomicUsize,
    open: AtomicBool,
}

struct Held(Arc<Gate>);

#[async_trait::async_trait]
impl TaskHandler for Held {
    async fn handle(&self, _: TaskContext) -> Result<TaskResult, TaskError> {
        let gate = &self.0;
        gate.started.fetch_add(1, Ordering::SeqCst);
        gate.running.fetch_add(1, Ordering::SeqCst);
        while !gate.open.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        gate.running.fetch_sub(1, Ordering::SeqCst);
        Ok(TaskResult::new(json!({})))
    }
}

/// Enqueues `count` held tasks; returns their ids.
async fn enqueue(tasks: &mut TaskServiceClient<Channel>, count: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..count {
        let task = tasks
            .enqueue_task(enqueue_request("held", json!({})))
            .await
            .unwrap()
            .into_inner();
        ids.push(task.task.unwrap().id);
    }
    ids
}

/// The status of task `id`.
async fn status(tasks: &mut TaskServiceClient<Channel>, id: &str) -> TaskStatus {
    tasks
        .get_task(GetTaskRequest { id: id.to_owned() })
        .await
        .unwrap()
        .into_inner()
        .status()
}

/// Waits until every task of `ids` is COMPLETED.
async fn wait_completed(tasks: &TaskServiceClient<Channel>, ids: &[String]) {
    for id in ids {
        wait_for(|| {
            let mut tasks = tasks.clone();
            async move { status(&mut tasks, id).await == TaskStatus::Completed }
        })
        .await;
    }
}

/// How long a test waits to see that something does not happen.
const QUIET: Duration = Duration::from_millis(300);

integration_tests::on_every_backend!(slots_changed_while_running_reach_the_server_at_once);

async fn slots_changed_while_running_reach_the_server_at_once(backend: Backend) {
    let server = TestServer::start(&backend).await;
    let gate = Arc::new(Gate::default());
    let mut registry = TaskRegistry::new();
    registry.register_handler("held", Box::new(Held(gate.clone())));
    // No prefetch: the server sends exactly the slots it knows of, so only
    // a `credit` can bring more.
    let agent = TestAgent::start_configured(&server, "slots", registry, |agent| {
        agent.max_concurrency(1).prefetch(0)
    })
    .await;
    let mut tasks = server.tasks().await;

    let first = enqueue(&mut tasks, 4).await;
    wait_for(|| async { gate.running.load(Ordering::SeqCst) == 1 }).await;
    tokio::time::sleep(QUIET).await;
    assert_eq!(
        gate.started.load(Ordering::SeqCst),
        1,
        "one slot runs one task"
    );

    agent.concurrency().set(4).unwrap();
    wait_for(|| async { gate.running.load(Ordering::SeqCst) == 4 }).await;

    // No slots: what runs finishes, and the server leases nothing more.
    agent.concurrency().set(0).unwrap();
    tokio::time::sleep(QUIET).await;
    gate.open.store(true, Ordering::SeqCst);
    wait_completed(&tasks, &first).await;
    let paused = enqueue(&mut tasks, 2).await;
    tokio::time::sleep(QUIET).await;
    for id in &paused {
        assert_eq!(
            status(&mut tasks, id).await,
            TaskStatus::Pending,
            "a paused agent is leased nothing"
        );
    }
    assert_eq!(gate.started.load(Ordering::SeqCst), 4);

    agent.concurrency().set(2).unwrap();
    wait_completed(&tasks, &paused).await;
    assert_eq!(gate.started.load(Ordering::SeqCst), 6);
    agent.stop().await.unwrap();
    server.stop().await;
}
