//! Progress through a real server and agent: a handler's reports reach
//! `WatchTask` while it runs and stay on the task, and `taskplane enqueue
//! --wait` draws them as a bar.

use std::time::Duration;

use async_trait::async_trait;
use integration_tests::{
    Backend, TestAgent, TestServer, enqueue, enqueue_request, on_every_backend, run_shell,
};
use serde_json::json;
use taskplane_agent::{TaskContext, TaskError, TaskHandler, TaskRegistry, TaskResult};
use taskplane_proto::v1::{GetTaskRequest, TaskStatus, WatchTaskRequest};

/// Reports a quarter, then half way, lingers, and completes.
struct Stepping;

#[async_trait]
impl TaskHandler for Stepping {
    async fn handle(&self, context: TaskContext) -> Result<TaskResult, TaskError> {
        context.report_progress(0.25, "reading");
        tokio::time::sleep(Duration::from_millis(300)).await;
        context.report_progress(0.5, "halfway");
        tokio::time::sleep(Duration::from_millis(600)).await;
        Ok(TaskResult::new(json!({"done": true})))
    }
}

async fn progress_reaches_watchers_and_the_cli_draws_it(backend: Backend) {
    let server = TestServer::start(&backend).await;
    let mut registry = TaskRegistry::new();
    registry.register_handler("import", Box::new(Stepping));
    let agent = TestAgent::start(&server, "importer", registry).await;
    let mut tasks = server.tasks().await;
    let id = enqueue(&mut tasks, enqueue_request("import", json!({})))
        .await
        .id;
    let mut watch = tasks
        .watch_task(WatchTaskRequest { id: id.clone() })
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    while let Some(task) = watch.message().await.unwrap() {
        if let Some(progress) = &task.progress
            && task.status() == TaskStatus::Running
        {
            seen.push((progress.fraction, progress.message.clone()));
        }
    }
    seen.dedup();
    assert_eq!(
        seen,
        [(0.25, "reading".to_owned()), (0.5, "halfway".to_owned())],
        "each report, while it ran"
    );
    let done = tasks
        .get_task(GetTaskRequest { id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(done.status(), TaskStatus::Completed);
    assert_eq!(
        done.progress.unwrap().message,
        "halfway",
        "kept on the task"
    );

    let cli = env!("CARGO_BIN_EXE_taskplane-under-test");
    let drawn = run_shell(&format!(
        "{cli} enqueue import --payload '{{}}' --wait --server {} 2>&1",
        server.url()
    ))
    .await;
    assert!(
        drawn.contains("[##########----------]  50% halfway"),
        "{drawn}"
    );
    agent.stop().await.unwrap();
    server.stop().await;
}

on_every_backend!(progress_reaches_watchers_and_the_cli_draws_it);
