//! Data retention on a running server: finished tasks and their attempts
//! disappear once past the retention; unfinished ones stay.

use std::time::Duration;

use integration_tests::{
    Backend, TestAgent, TestServer, enqueue, enqueue_request, fast_queue, wait_for, wait_terminal,
};
use serde_json::json;
use taskplane_agent::{TaskContext, TaskError, TaskHandler, TaskRegistry, TaskResult};
use taskplane_proto::v1::{GetTaskRequest, ListTaskAttemptsRequest, TaskStatus};
use tonic::Code;

struct Done;

#[async_trait::async_trait]
impl TaskHandler for Done {
    async fn handle(&self, _: TaskContext) -> Result<TaskResult, TaskError> {
        Ok(TaskResult::new(json!({"done": true})))
    }
}

async fn finished_tasks_are_purged_after_the_retention(backend: Backend) {
    let queue = taskplane_server::QueueConfig {
        retention: Some(Duration::from_millis(300)),
        purge_interval: Duration::from_millis(50),
        purge_batch: 2,
        ..fast_queue()
    };
    let server = TestServer::start_with(&backend, queue).await;
    server.register_type("unserved", "retention").await;
    let mut registry = TaskRegistry::new();
    registry.register_handler("finish", Box::new(Done));
    let agent = TestAgent::start(&server, "finisher", registry).await;
    let mut tasks = server.tasks().await;

    let waiting = enqueue(&mut tasks, enqueue_request("unserved", json!({}))).await;
    let mut finished = Vec::new();
    for n in 0..5 {
        let task = enqueue(&mut tasks, enqueue_request("finish", json!({ "n": n }))).await;
        finished.push(task.id);
    }
    for id in &finished {
        let task = wait_terminal(&mut tasks, id).await;
        assert_eq!(task.status(), TaskStatus::Completed);
    }
    // Purged in batches of two until none is left, attempts included.
    for id in &finished {
        wait_for(|| {
            let mut tasks = tasks.clone();
            let id = id.clone();
            async move {
                matches!(tasks.get_task(GetTaskRequest { id }).await, Err(s) if s.code() == Code::NotFound)
            }
        })
        .await;
        let attempts = tasks
            .list_task_attempts(ListTaskAttemptsRequest { id: id.clone() })
            .await;
        assert_eq!(attempts.unwrap_err().code(), Code::NotFound);
    }
    let kept = tasks
        .get_task(GetTaskRequest { id: waiting.id })
        .await
        .expect("an unfinished task is never purged")
        .into_inner();
    assert_eq!(kept.status(), TaskStatus::Pending);
    agent.stop().await.unwrap();
    server.stop().await;
}

integration_tests::on_every_backend!(finished_tasks_are_purged_after_the_retention);
