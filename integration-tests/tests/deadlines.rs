//! Deadlines to start by, through a real server and agent: a task that no
//! agent could start in time (its type paused) ends EXPIRED without ever
//! reaching its handler, as `WatchTask`, queue statistics and the metrics
//! show; one that can start in time runs; a retry runs the expired one; and
//! a deadline already past, or not after `run_at`, is refused.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use integration_tests::{
    Backend, TestAgent, TestServer, enqueue, enqueue_request, fast_queue, http_get, metric_sample,
    on_every_backend, wait_terminal,
};
use serde_json::json;
use taskplane_agent::{TaskContext, TaskError, TaskHandler, TaskRegistry, TaskResult};
use taskplane_proto::v1::{
    GetQueueStatsRequest, GetTaskRequest, RetryTaskRequest, SetTaskTypePolicyRequest, TaskStatus,
};
use taskplane_server::QueueConfig;

/// Counts the tasks that reached it.
struct Counting(Arc<AtomicU32>);

#[async_trait]
impl TaskHandler for Counting {
    async fn handle(&self, _context: TaskContext) -> Result<TaskResult, TaskError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(TaskResult::new(json!({})))
    }
}

fn in_from_now(span: Duration) -> prost_types::Timestamp {
    prost_types::Timestamp::from(SystemTime::now() + span)
}

async fn set_paused(server: &TestServer, paused: bool) {
    server
        .registry()
        .await
        .set_task_type_policy(SetTaskTypePolicyRequest {
            task_type: "charge".into(),
            paused: Some(paused),
            ..Default::default()
        })
        .await
        .unwrap();
}

async fn a_task_not_started_by_its_deadline_expires_and_never_runs(backend: Backend) {
    let server = TestServer::start(&backend).await;
    let runs = Arc::new(AtomicU32::new(0));
    let mut registry = TaskRegistry::new();
    registry.register_handler("charge", Box::new(Counting(runs.clone())));
    let agent = TestAgent::start(&server, "a", registry).await;
    let mut tasks = server.tasks().await;
    // An agent with free slots is connected; only the pause holds the task.
    set_paused(&server, true).await;
    let mut request = enqueue_request("charge", json!({}));
    request.start_by = Some(in_from_now(Duration::from_millis(300)));
    let expiring = enqueue(&mut tasks, request).await;
    assert!(expiring.start_by.is_some());
    let mut request = enqueue_request("charge", json!({}));
    request.start_by = Some(in_from_now(Duration::from_secs(60)));
    let in_time = enqueue(&mut tasks, request).await;

    let ended = wait_terminal(&mut tasks, &expiring.id).await;
    assert_eq!(ended.status(), TaskStatus::Expired, "{ended:?}");
    assert_eq!(ended.attempts, 0);
    assert!(
        ended.last_error.contains("start_by"),
        "{}",
        ended.last_error
    );
    set_paused(&server, false).await;
    let done = wait_terminal(&mut tasks, &in_time.id).await;
    assert_eq!(done.status(), TaskStatus::Completed);
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the expired task never ran");

    let stats = tasks
        .get_queue_stats(GetQueueStatsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .task_types;
    assert_eq!(stats[0].expired, 1);
    let (_, text) = http_get(server.metrics_address, "/metrics").await;
    assert_eq!(
        metric_sample(&text, "taskplane_tasks_expired_total{task_type=\"charge\"}"),
        Some(1.0)
    );

    // A retry is a fresh chance, without the deadline.
    let retried = tasks
        .retry_task(RetryTaskRequest {
            id: expiring.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(retried.start_by, None);
    let done = wait_terminal(&mut tasks, &expiring.id).await;
    assert_eq!(done.status(), TaskStatus::Completed);
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    agent.stop().await.unwrap();
    server.stop().await;
}

async fn a_deadline_past_or_before_run_at_is_refused(backend: Backend) {
    let server = TestServer::start(&backend).await;
    server.register_type("charge", "billing").await;
    let mut tasks = server.tasks().await;
    let mut past = enqueue_request("charge", json!({}));
    past.start_by = Some(prost_types::Timestamp::from(
        SystemTime::now() - Duration::from_secs(1),
    ));
    let refused = tasks.enqueue_task(past).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(
        refused.message().contains("start_by") && refused.message().contains("has passed"),
        "{}",
        refused.message()
    );
    let mut too_early = enqueue_request("charge", json!({}));
    too_early.run_at = Some(in_from_now(Duration::from_secs(120)));
    too_early.start_by = Some(in_from_now(Duration::from_secs(60)));
    let refused = tasks.enqueue_task(too_early).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(
        refused.message().contains("not after run_at"),
        "{}",
        refused.message()
    );
    let stats = tasks
        .get_queue_stats(GetQueueStatsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .task_types;
    assert!(stats.is_empty(), "nothing was enqueued: {stats:?}");
    server.stop().await;
}

/// Between its deadline and the expiry round (a poll interval, here long),
/// a task is still PENDING, and `GetTask` says why it will not run.
async fn a_task_past_its_deadline_says_so_until_it_expires(backend: Backend) {
    let queue = QueueConfig {
        poll_interval: Duration::from_secs(30),
        ..fast_queue()
    };
    let server = TestServer::start_with(&backend, queue).await;
    server.register_type("charge", "billing").await;
    let mut tasks = server.tasks().await;
    let mut request = enqueue_request("charge", json!({}));
    request.start_by = Some(in_from_now(Duration::from_millis(100)));
    let id = enqueue(&mut tasks, request).await.id;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let task = tasks
        .get_task(GetTaskRequest { id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(task.status(), TaskStatus::Pending);
    assert!(
        task.waiting_for.contains("start_by") && task.waiting_for.contains("ends EXPIRED"),
        "{}",
        task.waiting_for
    );
    server.stop().await;
}

on_every_backend!(
    a_task_past_its_deadline_says_so_until_it_expires,
    a_task_not_started_by_its_deadline_expires_and_never_runs,
    a_deadline_past_or_before_run_at_is_refused,
);
