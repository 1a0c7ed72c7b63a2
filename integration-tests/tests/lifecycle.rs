//! The task lifecycle in detail, in process over real gRPC and SQLite:
//! backoff, dead letters and RetryTask, delays, priority, idempotency under
//! concurrency, cancellation, timeouts and WatchTask.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use integration_tests::{
    Backend, TestAgent, TestServer, enqueue, enqueue_request, run_shell, wait_terminal,
};
use prost_types::Timestamp;
use serde_json::json;
use taskplane_agent::{TaskContext, TaskError, TaskHandler, TaskRegistry, TaskResult};
use taskplane_proto::v1::{
    CancelTaskRequest, ListTaskAttemptsRequest, ListTasksRequest, RetryPolicy, RetryTaskRequest,
    TaskStatus, WatchTaskRequest,
};
use tonic::Code;

/// Fails (retryably) while `attempt < fail_until`; sleeps `ms` first unless cancelled.
struct Scripted {
    saw_cancel: Arc<AtomicBool>,
}

#[async_trait::async_trait]
impl TaskHandler for Scripted {
    async fn handle(&self, context: TaskContext) -> Result<TaskResult, TaskError> {
        let ms = context.payload["ms"].as_u64().unwrap_or(0);
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(ms)) => {}
            () = context.cancellation.cancelled() => {
                self.saw_cancel.store(true, Ordering::SeqCst);
                return Err(TaskError::Cancelled("handler stopped".into()));
            }
        }
        let fail_until = context.payload["fail_until"].as_u64().unwrap_or(0) as u32;
        if context.attempt < fail_until {
            return Err(TaskError::Retryable(format!(
                "attempt {} failed",
                context.attempt
            )));
        }
        Ok(TaskResult::new(json!({ "attempt": context.attempt })))
    }
}

async fn setup(backend: &Backend) -> (TestServer, TestAgent, Arc<AtomicBool>) {
    let server = TestServer::start(backend).await;
    let saw_cancel = Arc::new(AtomicBool::new(false));
    let mut registry = TaskRegistry::new();
    registry.register_handler(
        "scripted",
        Box::new(Scripted {
            saw_cancel: saw_cancel.clone(),
        }),
    );
    let agent = TestAgent::start(&server, "scripted-agent", registry).await;
    (server, agent, saw_cancel)
}

fn millis(timestamp: &Option<Timestamp>) -> i64 {
    let t = timestamp.as_ref().expect("timestamp set");
    t.seconds * 1000 + i64::from(t.nanos) / 1_000_000
}

fn in_ms(ms: i64) -> Timestamp {
    let at = std::time::SystemTime::now() + Duration::from_millis(ms as u64);
    Timestamp::from(at)
}

async fn retries_wait_their_backoff_and_exhausted_tasks_die_then_retry_task_revives_them(
    backend: Backend,
) {
    let (server, agent, _) = setup(&backend).await;
    let mut tasks = server.tasks().await;
    let mut request = enqueue_request("scripted", json!({"fail_until": 99}));
    request.max_attempts = 3;
    request.retry_policy = Some(RetryPolicy {
        initial_backoff: Some(prost_types::Duration {
            seconds: 0,
            nanos: 200_000_000,
        }),
        backoff_factor: 2.0,
        max_backoff: Some(prost_types::Duration {
            seconds: 1,
            nanos: 0,
        }),
    });
    let id = enqueue(&mut tasks, request).await.id;
    let dead = wait_terminal(&mut tasks, &id).await;
    assert_eq!((dead.status(), dead.attempts), (TaskStatus::Dead, 3));
    assert_eq!(dead.last_error, "attempt 3 failed");

    // The whole history is kept, and no retry came before its backoff:
    // retry n waits at least half of 200 ms · 2^(n-1).
    let attempts = tasks
        .list_task_attempts(ListTaskAttemptsRequest { id: id.clone() })
        .await
        .unwrap()
        .into_inner()
        .attempts;
    let errors: Vec<&str> = attempts.iter().map(|a| a.error.as_str()).collect();
    assert_eq!(
        errors,
        ["attempt 1 failed", "attempt 2 failed", "attempt 3 failed"]
    );
    for (n, pair) in attempts.windows(2).enumerate() {
        let waited = millis(&pair[1].started_at) - millis(&pair[0].finished_at);
        let minimum = 100 * (1 << n);
        assert!(
            waited >= minimum,
            "retry {} came after {waited} ms, before its {minimum} ms backoff",
            n + 1
        );
    }

    // RetryTask revives a DEAD task with fresh attempts; a COMPLETED one cannot be retried.
    let revived = tasks
        .retry_task(RetryTaskRequest { id: id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(revived.status(), TaskStatus::Pending);
    assert_eq!(revived.max_attempts, 6, "three more attempts");
    let dead_again = wait_terminal(&mut tasks, &id).await;
    assert_eq!(
        (dead_again.status(), dead_again.attempts),
        (TaskStatus::Dead, 6)
    );

    let ok = enqueue(&mut tasks, enqueue_request("scripted", json!({})))
        .await
        .id;
    wait_terminal(&mut tasks, &ok).await;
    let err = tasks
        .retry_task(RetryTaskRequest { id: ok })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message()
            .contains("only DEAD, CANCELLED or EXPIRED tasks can be retried"),
        "{}",
        err.message()
    );
    agent.stop().await.unwrap();
    server.stop().await;
}

async fn delayed_tasks_are_not_delivered_early(backend: Backend) {
    let (server, agent, _) = setup(&backend).await;
    let mut tasks = server.tasks().await;
    let mut request = enqueue_request("scripted", json!({}));
    request.run_at = Some(in_ms(400));
    let task = enqueue(&mut tasks, request).await;
    let done = wait_terminal(&mut tasks, &task.id).await;
    assert_eq!(done.status(), TaskStatus::Completed);
    assert!(
        millis(&done.started_at) >= millis(&task.run_at),
        "started before run_at"
    );
    agent.stop().await.unwrap();
    server.stop().await;
}

async fn ready_tasks_go_out_by_priority_then_age(backend: Backend) {
    let server = TestServer::start(&backend).await;
    let mut registry = server.registry().await;
    registry
        .register_task_type(taskplane_proto::v1::RegisterTaskTypeRequest {
            task_type: "ordered".into(),
            // Handlers registered outside a DomainRegistry belong to "default".
            domain: taskplane_agent::registry::DEFAULT_DOMAIN.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut tasks = server.tasks().await;
    let mut ids = Vec::new();
    for (name, priority) in [("low-old", 0), ("high", 10), ("low-new", 0), ("mid", 5)] {
        let mut request = enqueue_request("ordered", json!({ "name": name }));
        request.priority = priority;
        ids.push((name, enqueue(&mut tasks, request).await.id));
    }
    // A one-slot agent receives them one at a time, in delivery order.
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    struct Record(Arc<std::sync::Mutex<Vec<String>>>);
    #[async_trait::async_trait]
    impl TaskHandler for Record {
        async fn handle(&self, context: TaskContext) -> Result<TaskResult, TaskError> {
            self.0
                .lock()
                .unwrap()
                .push(context.payload["name"].as_str().unwrap().to_owned());
            Ok(TaskResult::empty())
        }
    }
    let mut handlers = TaskRegistry::new();
    handlers.register_handler("ordered", Box::new(Record(order.clone())));
    let agent = taskplane_agent::Agent::builder()
        .registry(handlers)
        .server(server.url())
        .max_concurrency(1)
        .build()
        .unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let token = stop.clone();
    let running = tokio::spawn(agent.run(async move { token.cancelled().await }));
    for (_, id) in &ids {
        wait_terminal(&mut tasks, id).await;
    }
    assert_eq!(
        *order.lock().unwrap(),
        ["high", "mid", "low-old", "low-new"]
    );
    stop.cancel();
    running.await.unwrap().unwrap();
    server.stop().await;
}

async fn fifty_concurrent_enqueues_of_one_key_make_one_task(backend: Backend) {
    let (server, agent, _) = setup(&backend).await;
    let mut handles = Vec::new();
    for _ in 0..50 {
        let mut client = server.tasks().await;
        handles.push(tokio::spawn(async move {
            let mut request = enqueue_request("scripted", json!({}));
            request.idempotency_key = "order-42".into();
            client.enqueue_task(request).await.unwrap().into_inner()
        }));
    }
    let mut created = 0;
    let mut ids = std::collections::BTreeSet::new();
    for handle in handles {
        let response = handle.await.unwrap();
        created += usize::from(response.created);
        ids.insert(response.task.unwrap().id);
    }
    assert_eq!((created, ids.len()), (1, 1), "one task, created once");
    let mut tasks = server.tasks().await;
    let listed = tasks
        .list_tasks(ListTasksRequest::default())
        .await
        .unwrap()
        .into_inner()
        .tasks;
    assert_eq!(listed.len(), 1);
    agent.stop().await.unwrap();
    server.stop().await;
}

async fn cancelling_pending_and_running_tasks(backend: Backend) {
    let (server, agent, saw_cancel) = setup(&backend).await;
    let mut tasks = server.tasks().await;

    // Pending: delayed far ahead, cancelled before it could run.
    let mut later = enqueue_request("scripted", json!({}));
    later.run_at = Some(in_ms(60_000));
    let pending = enqueue(&mut tasks, later).await.id;
    let cancelled = tasks
        .cancel_task(CancelTaskRequest {
            id: pending.clone(),
            reason: "customer changed their mind".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (cancelled.status(), cancelled.attempts),
        (TaskStatus::Cancelled, 0)
    );
    assert_eq!(cancelled.last_error, "customer changed their mind");

    // Running: the agent is told, the handler's token fires, the task ends CANCELLED.
    let long = enqueue(
        &mut tasks,
        enqueue_request("scripted", json!({"ms": 30_000})),
    )
    .await
    .id;
    let mut watch = tasks
        .watch_task(WatchTaskRequest { id: long.clone() })
        .await
        .unwrap()
        .into_inner();
    while watch.message().await.unwrap().unwrap().status() != TaskStatus::Running {}
    tasks
        .cancel_task(CancelTaskRequest {
            id: long.clone(),
            reason: String::new(),
        })
        .await
        .unwrap();
    let end = wait_terminal(&mut tasks, &long).await;
    assert_eq!(end.status(), TaskStatus::Cancelled);
    integration_tests::wait_for(|| {
        let saw = saw_cancel.clone();
        async move { saw.load(Ordering::SeqCst) }
    })
    .await;
    let again = tasks
        .cancel_task(CancelTaskRequest {
            id: long,
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);

    // A cancelled task can be retried: it runs now and completes.
    let revived = tasks
        .retry_task(RetryTaskRequest {
            id: pending.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(revived.status(), TaskStatus::Pending);
    let task = wait_terminal(&mut tasks, &pending).await;
    assert_eq!((task.status(), task.attempts), (TaskStatus::Completed, 1));
    agent.stop().await.unwrap();
    server.stop().await;
}

async fn a_handler_past_its_timeout_is_cancelled_and_the_attempt_fails(backend: Backend) {
    let (server, agent, saw_cancel) = setup(&backend).await;
    let mut tasks = server.tasks().await;
    let mut request = enqueue_request("scripted", json!({"ms": 30_000}));
    request.timeout = Some(prost_types::Duration {
        seconds: 0,
        nanos: 200_000_000,
    });
    request.max_attempts = 1;
    let id = enqueue(&mut tasks, request).await.id;
    let dead = wait_terminal(&mut tasks, &id).await;
    assert_eq!(dead.status(), TaskStatus::Dead);
    assert!(
        dead.last_error.contains("ran past its timeout of 200ms"),
        "{}",
        dead.last_error
    );
    assert!(
        saw_cancel.load(Ordering::SeqCst),
        "the handler's cancellation token fired"
    );
    agent.stop().await.unwrap();
    server.stop().await;
}

async fn watch_task_streams_every_state_until_terminal(backend: Backend) {
    let (server, agent, _) = setup(&backend).await;
    let mut tasks = server.tasks().await;
    let mut request = enqueue_request("scripted", json!({"ms": 100}));
    request.run_at = Some(in_ms(200));
    let id = enqueue(&mut tasks, request).await.id;
    let mut stream = tasks
        .watch_task(WatchTaskRequest { id })
        .await
        .unwrap()
        .into_inner();
    let mut states = Vec::new();
    while let Some(task) = stream.message().await.unwrap() {
        if states.last() != Some(&task.status()) {
            states.push(task.status());
        }
    }
    assert_eq!(
        states,
        [
            TaskStatus::Pending,
            TaskStatus::Running,
            TaskStatus::Completed
        ]
    );
    agent.stop().await.unwrap();
    server.stop().await;
}

/// `--idempotency-window 1s`: the key answers with its task within the
/// second, and makes a new task after it.
async fn a_windowed_key_makes_a_new_task_once_its_window_passed(backend: Backend) {
    let (server, agent, _) = setup(&backend).await;
    let cli = env!("CARGO_BIN_EXE_taskplane-under-test");
    let command = format!(
        "{cli} enqueue scripted --payload '{{}}' --idempotency-key digest --idempotency-window 1s --output json --server {}",
        server.url()
    );
    let enqueue = || run_shell(&command);
    let id = |output: String| -> String {
        let task: serde_json::Value = serde_json::from_str(&output).unwrap();
        task["id"].as_str().unwrap().to_owned()
    };
    let first = id(enqueue().await);
    assert_eq!(id(enqueue().await), first, "within the window");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let later = id(enqueue().await);
    assert_ne!(later, first, "past the window: a new task");
    agent.stop().await.unwrap();
    server.stop().await;
}

integration_tests::on_every_backend!(
    a_windowed_key_makes_a_new_task_once_its_window_passed,
    retries_wait_their_backoff_and_exhausted_tasks_die_then_retry_task_revives_them,
    delayed_tasks_are_not_delivered_early,
    ready_tasks_go_out_by_priority_then_age,
    fifty_concurrent_enqueues_of_one_key_make_one_task,
    cancelling_pending_and_running_tasks,
    a_handler_past_its_timeout_is_cancelled_and_the_attempt_fails,
    watch_task_streams_every_state_until_terminal,
);
