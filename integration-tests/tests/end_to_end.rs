//! A task's life end to end: enqueue over gRPC, pushed to an SDK agent over
//! its stream, handled, reported, and read back — plus the errors a client
//! meets on the way.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use integration_tests::{
    Backend, TestAgent, TestServer, attempts_of, enqueue, enqueue_request, wait_terminal,
};
use serde_json::json;
use taskplane_agent::{TaskContext, TaskError, TaskHandler, TaskRegistry, TaskResult};
use taskplane_proto::json::struct_to_json;
use taskplane_proto::v1::{EnqueueTasksRequest, GetTaskRequest, ListTasksRequest, TaskStatus};
use tonic::Code;

/// Adds `a` and `b`.
struct Add;

#[async_trait::async_trait]
impl TaskHandler for Add {
    async fn handle(&self, context: TaskContext) -> Result<TaskResult, TaskError> {
        let a = context.payload["a"]
            .as_i64()
            .ok_or_else(|| TaskError::bad_payload("a", "an integer"))?;
        let b = context.payload["b"]
            .as_i64()
            .ok_or_else(|| TaskError::bad_payload("b", "an integer"))?;
        Ok(TaskResult::new(
            json!({ "sum": a + b, "attempt": context.attempt }),
        ))
    }
}

/// Fails with a retryable error until its `succeed_on` attempt.
struct Flaky {
    calls: Arc<AtomicU32>,
}

#[async_trait::async_trait]
impl TaskHandler for Flaky {
    async fn handle(&self, context: TaskContext) -> Result<TaskResult, TaskError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let succeed_on = context.payload["succeed_on"].as_u64().unwrap_or(u64::MAX) as u32;
        if context.attempt >= succeed_on {
            Ok(TaskResult::new(json!({ "succeeded_on": context.attempt })))
        } else {
            Err(TaskError::Retryable(format!(
                "transient failure on attempt {}",
                context.attempt
            )))
        }
    }
}

fn math_registry(calls: Arc<AtomicU32>) -> TaskRegistry {
    let mut registry = TaskRegistry::new();
    registry.register_handler("add", Box::new(Add));
    registry.register_handler("flaky", Box::new(Flaky { calls }));
    registry
}

async fn an_enqueued_task_is_pushed_handled_and_completed(backend: Backend) {
    let server = TestServer::start(&backend).await;
    let agent = TestAgent::start(&server, "math", math_registry(Arc::default())).await;
    let mut tasks = server.tasks().await;

    let enqueued = tasks
        .enqueue_task(enqueue_request("add", json!({"a": 2, "b": 40})))
        .await
        .unwrap()
        .into_inner();
    assert!(enqueued.created);
    let task = enqueued.task.unwrap();
    // RUNNING when it was handed straight to the idle agent (see
    // `a_task_enqueued_while_its_agent_sits_idle_is_handed_to_it_at_once`).
    assert!(
        matches!(task.status(), TaskStatus::Pending | TaskStatus::Running),
        "{task:?}"
    );
    assert_eq!(uuid_version(&task.id), 7, "task ids are UUIDv7");
    assert_eq!(task.domain, "default");

    let done = wait_terminal(&mut tasks, &task.id).await;
    assert_eq!(done.status(), TaskStatus::Completed, "{done:?}");
    assert_eq!(
        serde_json::Value::Object(struct_to_json(done.result.as_ref().unwrap())),
        json!({"sum": 42, "attempt": 1})
    );
    assert_eq!(done.attempts, 1);
    let (created, started, finished) = (
        done.created_at.unwrap(),
        done.started_at.unwrap(),
        done.finished_at.unwrap(),
    );
    assert!(created.seconds <= started.seconds && started.seconds <= finished.seconds);

    let fetched = tasks
        .get_task(GetTaskRequest {
            id: task.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fetched, done);
    agent.stop().await.unwrap();
    server.stop().await;
}

async fn a_task_enqueued_while_its_agent_sits_idle_is_handed_to_it_at_once(backend: Backend) {
    let server = TestServer::start(&backend).await;
    let agent = TestAgent::start(&server, "math", math_registry(Arc::default())).await;
    let mut tasks = server.tasks().await;

    // Once the agent has finished a task and found nothing more waiting, the
    // next one is stored already leased to it: the answer says RUNNING.
    let mut handed_off = None;
    for _ in 0..50 {
        let task = enqueue(&mut tasks, enqueue_request("add", json!({"a": 1, "b": 2}))).await;
        if task.status() == TaskStatus::Running {
            handed_off = Some(task);
            break;
        }
        wait_terminal(&mut tasks, &task.id).await;
    }
    let task = handed_off.expect("an idle agent is handed a new task as it is stored");
    assert_eq!(task.attempts, 1);
    assert!(task.started_at.is_some());

    let done = wait_terminal(&mut tasks, &task.id).await;
    assert_eq!(done.status(), TaskStatus::Completed, "{done:?}");
    assert_eq!(done.attempts, 1);
    assert_eq!(
        serde_json::Value::Object(struct_to_json(done.result.as_ref().unwrap())),
        json!({"sum": 3, "attempt": 1})
    );
    let attempts = attempts_of(&mut tasks, &task.id).await;
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    assert_eq!(attempts[0].attempt, 1);
    assert_eq!(attempts[0].outcome, "completed");
    agent.stop().await.unwrap();
    server.stop().await;
}

async fn a_failed_handler_shows_its_error_and_retryable_failures_are_retried(backend: Backend) {
    let server = TestServer::start(&backend).await;
    let calls = Arc::new(AtomicU32::new(0));
    let agent = TestAgent::start(&server, "math", math_registry(calls.clone())).await;
    let mut tasks = server.tasks().await;

    // A bad payload is a permanent failure: DEAD after one attempt, error kept.
    let bad = enqueue(&mut tasks, enqueue_request("add", json!({"a": "two"}))).await;
    let dead = wait_terminal(&mut tasks, &bad.id).await;
    assert_eq!(dead.status(), TaskStatus::Dead);
    assert_eq!(dead.attempts, 1);
    assert_eq!(dead.last_error, "payload field 'a' must be an integer");

    // Retryable failures back off and run again until attempt 3 succeeds.
    let flaky = enqueue(
        &mut tasks,
        enqueue_request("flaky", json!({"succeed_on": 3})),
    )
    .await;
    let done = wait_terminal(&mut tasks, &flaky.id).await;
    assert_eq!(done.status(), TaskStatus::Completed, "{done:?}");
    assert_eq!(done.attempts, 3);
    assert_eq!(calls.load(Ordering::SeqCst), 3);

    // With no attempts left, a retryable failure is DEAD too.
    let mut hopeless = enqueue_request("flaky", json!({}));
    hopeless.max_attempts = 2;
    let hopeless = enqueue(&mut tasks, hopeless).await;
    let dead = wait_terminal(&mut tasks, &hopeless.id).await;
    assert_eq!((dead.status(), dead.attempts), (TaskStatus::Dead, 2));
    assert_eq!(dead.last_error, "transient failure on attempt 2");
    agent.stop().await.unwrap();
    server.stop().await;
}

async fn unregistered_types_fail_precondition_and_write_nothing(backend: Backend) {
    let server = TestServer::start(&backend).await;
    let agent = TestAgent::start(&server, "math", math_registry(Arc::default())).await;
    let mut tasks = server.tasks().await;

    let err = tasks
        .enqueue_task(enqueue_request("send_fax", json!({})))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message()
            .contains("task type 'send_fax' is not registered"),
        "{}",
        err.message()
    );

    // A batch with one unregistered type stores none of its tasks.
    let batch = EnqueueTasksRequest {
        tasks: vec![
            enqueue_request("add", json!({"a": 1, "b": 1})),
            enqueue_request("send_fax", json!({})),
        ],
    };
    let err = tasks.enqueue_tasks(batch).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let listed = tasks
        .list_tasks(ListTasksRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(
        listed.tasks.is_empty(),
        "nothing may be written: {listed:?}"
    );
    agent.stop().await.unwrap();
    server.stop().await;
}

async fn malformed_requests_are_invalid_arguments_a_person_can_act_on(backend: Backend) {
    let server = TestServer::start_with(
        &backend,
        taskplane_server::QueueConfig {
            max_payload_bytes: 1024,
            ..integration_tests::fast_queue()
        },
    )
    .await;
    let _agent = TestAgent::start(&server, "math", math_registry(Arc::default())).await;
    let mut tasks = server.tasks().await;

    let cases = [
        (enqueue_request("", json!({})), "task_type is required"),
        (
            enqueue_request("Send Email", json!({})),
            "task_type 'Send Email' is not a valid name",
        ),
        (
            taskplane_proto::v1::EnqueueTaskRequest {
                task_type: "add".into(),
                ..Default::default()
            },
            "payload is required",
        ),
        (
            enqueue_request("add", json!({"blob": "x".repeat(2000)})),
            "the limit is 1024 bytes",
        ),
    ];
    for (request, expected) in cases {
        let err = tasks.enqueue_task(request).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
        assert!(
            err.message().contains(expected),
            "{:?} does not contain {expected:?}",
            err.message()
        );
    }
    let err = tasks
        .get_task(GetTaskRequest {
            id: "not-an-id".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = tasks
        .get_task(GetTaskRequest { id: uuid_like() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(
        tasks
            .list_tasks(ListTasksRequest::default())
            .await
            .unwrap()
            .into_inner()
            .tasks
            .is_empty()
    );
}

async fn a_batch_is_stored_atomically_and_pages_through_list_tasks(backend: Backend) {
    let server = TestServer::start(&backend).await;
    let mut registry = server.registry().await;
    registry
        .register_task_type(taskplane_proto::v1::RegisterTaskTypeRequest {
            task_type: "add".into(),
            domain: "math".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut tasks = server.tasks().await;
    let batch = EnqueueTasksRequest {
        tasks: (0..5)
            .map(|i| enqueue_request("add", json!({"a": i, "b": 0})))
            .collect(),
    };
    let results = tasks
        .enqueue_tasks(batch)
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(results.len(), 5);

    let mut seen = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = tasks
            .list_tasks(ListTasksRequest {
                page_size: 2,
                page_token,
                domain: "math".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        seen.extend(page.tasks.into_iter().map(|t| t.id));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let mut expected: Vec<String> = results.into_iter().map(|r| r.task.unwrap().id).collect();
    expected.reverse();
    assert_eq!(seen, expected, "newest first, each once");
    server.stop().await;
}

fn uuid_version(id: &str) -> u32 {
    // The version is the first hex digit of the third group.
    id.split('-')
        .nth(2)
        .and_then(|g| g.chars().next())
        .and_then(|c| c.to_digit(16))
        .unwrap_or(0)
}

fn uuid_like() -> String {
    "01900000-0000-7000-8000-000000000000".to_owned()
}

integration_tests::on_every_backend!(
    an_enqueued_task_is_pushed_handled_and_completed,
    a_task_enqueued_while_its_agent_sits_idle_is_handed_to_it_at_once,
    a_failed_handler_shows_its_error_and_retryable_failures_are_retried,
    unregistered_types_fail_precondition_and_write_nothing,
    malformed_requests_are_invalid_arguments_a_person_can_act_on,
    a_batch_is_stored_atomically_and_pages_through_list_tasks,
);
