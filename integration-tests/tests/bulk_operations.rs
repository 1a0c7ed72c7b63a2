//! Bulk operations through a real server: 10,000 tasks that died in an
//! outage are counted by a dry run that changes nothing, retried in
//! batches of 500, cancelled, and purged, while the few that failed for
//! another reason are left alone; bad selectors are refused and change
//! nothing.

use async_trait::async_trait;
use integration_tests::{
    Backend, TestAgent, TestServer, enqueue_request, on_every_backend, wait_for,
};
use serde_json::json;
use taskplane_agent::{TaskContext, TaskError, TaskHandler, TaskRegistry, TaskResult};
use taskplane_proto::v1::task_service_client::TaskServiceClient;
use taskplane_proto::v1::{
    BulkTasksRequest, BulkTasksResponse, EnqueueTasksRequest, GetQueueStatsRequest, TaskSelector,
    TaskStatus, TaskTypeStats,
};
use tonic::Code;
use tonic::transport::Channel;

/// Fails every task for good, with the payload's `why`.
struct Failing;

#[async_trait]
impl TaskHandler for Failing {
    async fn handle(&self, context: TaskContext) -> Result<TaskResult, TaskError> {
        let why = context.payload["why"].as_str().unwrap_or("unknown");
        Err(TaskError::Permanent(format!("{why}: the upstream refused")))
    }
}

async fn stats(tasks: &TaskServiceClient<Channel>) -> TaskTypeStats {
    let answer = tasks
        .clone()
        .get_queue_stats(GetQueueStatsRequest::default())
        .await
        .unwrap()
        .into_inner();
    answer
        .task_types
        .into_iter()
        .find(|t| t.task_type == "sync")
        .unwrap_or_default()
}

fn selecting(status: TaskStatus, error: &str, dry_run: bool) -> BulkTasksRequest {
    BulkTasksRequest {
        selector: Some(TaskSelector {
            task_type: "sync".into(),
            status: status as i32,
            error_contains: error.into(),
            ..Default::default()
        }),
        dry_run,
        reason: String::new(),
    }
}

fn outcome(matched: u64, changed: u64, batches: u32) -> BulkTasksResponse {
    BulkTasksResponse {
        matched,
        changed,
        batches,
    }
}

async fn ten_thousand_dead_tasks_are_counted_retried_cancelled_and_purged_in_batches(
    backend: Backend,
) {
    let server = TestServer::start(&backend).await;
    let mut registry = TaskRegistry::new();
    registry.register_handler("sync", Box::new(Failing));
    let agent =
        TestAgent::start_configured(&server, "failing", registry, |a| a.max_concurrency(64)).await;
    let tasks = server.tasks().await;
    let mut requests: Vec<_> = (0..10_000)
        .map(|_| enqueue_request("sync", json!({"why": "outage"})))
        .collect();
    requests.extend((0..5).map(|_| enqueue_request("sync", json!({"why": "bad input"}))));
    for chunk in requests.chunks_mut(1_000) {
        for request in chunk.iter_mut() {
            request.max_attempts = 1;
        }
        tasks
            .clone()
            .enqueue_tasks(EnqueueTasksRequest {
                tasks: chunk.to_vec(),
            })
            .await
            .unwrap();
    }
    wait_for(|| async { stats(&tasks).await.dead == 10_005 }).await;
    // Retried tasks wait for an agent: none is left to run them.
    agent.stop().await.unwrap();

    let mut client = tasks.clone();
    let dry = client
        .retry_tasks(selecting(TaskStatus::Dead, "outage", true))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(dry, outcome(10_000, 0, 0), "counted, not changed");
    assert_eq!(stats(&tasks).await.dead, 10_005);

    let retried = client
        .retry_tasks(selecting(TaskStatus::Dead, "outage", false))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(retried, outcome(10_000, 10_000, 20), "in batches of 500");
    let after = stats(&tasks).await;
    assert_eq!(
        (after.pending, after.dead),
        (10_000, 5),
        "the bad input stays dead"
    );

    let cancelled = client
        .cancel_tasks(selecting(TaskStatus::Pending, "", false))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cancelled.changed, 10_000);
    assert_eq!(stats(&tasks).await.cancelled, 10_000);

    let dry = client
        .purge_tasks(selecting(TaskStatus::Cancelled, "", true))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(dry, outcome(10_000, 0, 0));
    let purged = client
        .purge_tasks(selecting(TaskStatus::Cancelled, "", false))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(purged.changed, 10_000);
    let after = stats(&tasks).await;
    assert_eq!((after.pending, after.cancelled, after.dead), (0, 0, 5));
    server.stop().await;
}

async fn bad_selectors_are_refused_and_change_nothing(backend: Backend) {
    let server = TestServer::start(&backend).await;
    server.register_type("sync", "ops").await;
    let mut client = server.tasks().await;
    let refused = [
        (
            client
                .retry_tasks(selecting(TaskStatus::Pending, "", false))
                .await,
            Code::InvalidArgument,
            "not one that retry takes: choose DEAD or CANCELLED",
        ),
        (
            client
                .purge_tasks(selecting(TaskStatus::Running, "", true))
                .await,
            Code::InvalidArgument,
            "not one that purge takes",
        ),
        (
            client.cancel_tasks(BulkTasksRequest::default()).await,
            Code::InvalidArgument,
            "selector.task_type is required",
        ),
        (
            client
                .retry_tasks(BulkTasksRequest {
                    selector: Some(TaskSelector {
                        task_type: "nobody_serves_this".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .await,
            Code::FailedPrecondition,
            "'nobody_serves_this' is not registered",
        ),
    ];
    for (answer, code, says) in refused {
        let status = answer.unwrap_err();
        assert_eq!(status.code(), code, "{status:?}");
        assert!(status.message().contains(says), "{}", status.message());
    }
    server.stop().await;
}

on_every_backend!(
    ten_thousand_dead_tasks_are_counted_retried_cancelled_and_purged_in_batches,
    bad_selectors_are_refused_and_change_nothing,
);
