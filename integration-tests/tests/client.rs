//! The Rust client crate (`taskplane-client`) against real servers: it
//! enqueues with options and in batches, follows a task to its end,
//! lists, cancels and retries; refusals come back as the error that says
//! what to do; and a client of two PostgreSQL replicas fails over when
//! the one it uses stops.

use std::time::Duration;

use async_trait::async_trait;
use integration_tests::{Backend, TestAgent, TestServer, on_every_backend};
use serde_json::json;
use taskplane_agent::{TaskContext, TaskError, TaskHandler, TaskRegistry, TaskResult};
use taskplane_client::{Client, Error, NewTask, Schedule, TaskFilter, TaskStatus};
use taskplane_server::testing::PostgresSchema;
use tokio_stream::StreamExt;

const PATIENCE: Duration = Duration::from_secs(20);

/// Answers with its payload.
struct Echo;

#[async_trait]
impl TaskHandler for Echo {
    async fn handle(&self, context: TaskContext) -> Result<TaskResult, TaskError> {
        Ok(TaskResult::new(context.payload))
    }
}

fn echo_registry() -> TaskRegistry {
    let mut registry = TaskRegistry::new();
    registry.register_handler("echo", Box::new(Echo));
    registry
}

async fn a_client_enqueues_follows_and_changes_tasks(backend: Backend) {
    let server = TestServer::start(&backend).await;
    let agent = TestAgent::start(&server, "a", echo_registry()).await;
    let client = Client::connect(server.url()).await.unwrap();

    let task = client.enqueue("echo", json!({"n": 1})).await.unwrap();
    assert_eq!(task.task_type, "echo");
    let done = client.wait(&task.id, PATIENCE).await.unwrap();
    assert_eq!(done.status, TaskStatus::Completed);
    assert_eq!(done.result.unwrap()["n"], 1);

    // Options reach the task; the same key answers with the same task.
    let keyed = NewTask::new("echo", json!({"n": 2}))
        .idempotency_key("two")
        .priority(5)
        .metadata("tenant", "eu-1")
        .start_within(Duration::from_secs(600));
    let first = client.enqueue_task(keyed.clone()).await.unwrap();
    let again = client.enqueue_task(keyed).await.unwrap();
    assert!(first.created && !again.created);
    assert_eq!(first.task.id, again.task.id);
    assert_eq!(first.task.priority, 5);
    assert_eq!(first.task.metadata["tenant"], "eu-1");
    assert!(first.task.start_by.is_some());

    let batch = client
        .enqueue_batch(
            (3..6)
                .map(|n| NewTask::new("echo", json!({ "n": n })))
                .collect(),
        )
        .await
        .unwrap();
    assert_eq!(batch.len(), 3);
    let mut states = client.watch(&batch[2].task.id).await.unwrap();
    let mut last = None;
    while let Some(state) = states.next().await {
        last = Some(state.unwrap());
    }
    assert_eq!(last.unwrap().status, TaskStatus::Completed);
    for enqueued in &batch {
        client.wait(&enqueued.task.id, PATIENCE).await.unwrap();
    }
    let listed = client
        .list(&TaskFilter {
            task_type: Some("echo".into()),
            status: Some(TaskStatus::Completed),
            ..TaskFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(listed.len(), 5, "{listed:?}");

    // A delayed task: waiting gives up and says where it is; cancel and
    // retry change it; then it runs.
    let later = client
        .enqueue_task(NewTask::new("echo", json!({})).delay(Duration::from_secs(3600)))
        .await
        .unwrap();
    let Err(Error::Timeout(seen)) = client
        .wait(&later.task.id, Duration::from_millis(200))
        .await
    else {
        panic!("the wait must time out")
    };
    assert_eq!(seen.status, TaskStatus::Pending);
    let cancelled = client.cancel(&later.task.id, "not needed").await.unwrap();
    assert_eq!(cancelled.status, TaskStatus::Cancelled);
    assert_eq!(cancelled.last_error.as_deref(), Some("not needed"));
    client.retry(&later.task.id).await.unwrap();
    let ran = client.wait(&later.task.id, PATIENCE).await.unwrap();
    assert_eq!(ran.status, TaskStatus::Completed);

    // Refusals say what to do.
    let unknown = client.enqueue("nobody_serves_this", json!({})).await;
    assert!(
        matches!(&unknown, Err(Error::Refused(m)) if m.contains("'nobody_serves_this' is not registered")),
        "{unknown:?}"
    );
    let not_object = client.enqueue("echo", json!([1])).await;
    assert!(
        matches!(not_object, Err(Error::InvalidRequest(_))),
        "{not_object:?}"
    );
    let missing = client.get("01a2503b-48e9-7737-90a9-4d077733a5b9").await;
    assert!(matches!(missing, Err(Error::NotFound(_))), "{missing:?}");
    let twice = client.cancel(&task.id, "").await;
    assert!(matches!(twice, Err(Error::Refused(_))), "{twice:?}");
    agent.stop().await.unwrap();
    server.stop().await;
}

async fn a_client_reports_what_it_cannot_reach(backend: Backend) {
    let server = TestServer::start(&backend).await;
    let url = server.url();
    server.stop().await;
    let refused = Client::connect(url.clone()).await.unwrap_err();
    assert!(refused.is_retryable(), "{refused:?}");
    assert!(refused.to_string().contains(&url), "{refused}");
    let misspelt = Client::connect("127.0.0.1 50051").await.unwrap_err();
    assert!(matches!(misspelt, Error::Config(_)), "{misspelt:?}");
}

async fn a_client_manages_schedules(backend: Backend) {
    let server = TestServer::start(&backend).await;
    let _agent = TestAgent::start(&server, "a", echo_registry()).await;
    let client = Client::connect(server.url()).await.unwrap();

    let nightly = Schedule::cron("nightly", "echo", "0 2 * * *")
        .timezone("Europe/Berlin")
        .payload(json!({"from": "schedule"}));
    let stored = client.create_schedule(nightly.clone()).await.unwrap();
    let spec = stored.spec.clone().unwrap();
    assert_eq!(
        (spec.name.as_str(), spec.timezone.as_str()),
        ("nightly", "Europe/Berlin")
    );
    assert!(stored.next_fire_at.is_some() && !stored.paused);
    let again = client.create_schedule(nightly).await.unwrap_err();
    assert!(matches!(again, Error::Refused(_)), "{again:?}");

    let upcoming = client
        .get_schedule_upcoming("nightly", 3, Some("2030-01-01T00:00:00Z".parse().unwrap()))
        .await
        .unwrap();
    assert_eq!(upcoming.upcoming.len(), 3);
    assert_eq!(
        upcoming.upcoming[0].seconds, 1_893_459_600,
        "02:00 in Berlin on 1 January 2030"
    );
    assert!(client.pause_schedule("nightly").await.unwrap().paused);
    assert!(!client.resume_schedule("nightly").await.unwrap().paused);
    let hourly = Schedule::cron("nightly", "echo", "0 * * * *").payload(json!({"from": "update"}));
    let changed = client.update_schedule(hourly).await.unwrap();
    assert_eq!(changed.spec.unwrap().cron, "0 * * * *");
    let listed = client.list_schedules(Some("echo"), None).await.unwrap();
    assert_eq!(listed.len(), 1);

    let fired = client.trigger_schedule("nightly").await.unwrap();
    let done = client.wait(&fired.id, PATIENCE).await.unwrap();
    assert_eq!(
        done.result.map(serde_json::Value::Object),
        Some(json!({"from": "update"}))
    );
    client.delete_schedule("nightly").await.unwrap();
    let gone = client.get_schedule("nightly").await.unwrap_err();
    assert!(matches!(gone, Error::NotFound(_)), "{gone:?}");
}

on_every_backend!(
    a_client_enqueues_follows_and_changes_tasks,
    a_client_reports_what_it_cannot_reach,
    a_client_manages_schedules,
);

#[tokio::test]
async fn a_client_of_two_replicas_fails_over_when_one_stops() {
    let Some(schema) = PostgresSchema::create().await else {
        return;
    };
    let backend = Backend::Postgres(schema.url.clone());
    let one = TestServer::start(&backend).await;
    let two = TestServer::start(&backend).await;
    let agent = TestAgent::start(&two, "a", echo_registry()).await;
    // A server that is down first in the list: the client passes it by.
    let down = TestServer::start(&backend).await;
    let down_url = down.url();
    down.stop().await;
    let client = Client::builder()
        .servers([down_url, one.url(), two.url()])
        .connect()
        .await
        .unwrap();
    assert_eq!(client.server().await, one.url());
    let task = client.enqueue("echo", json!({"n": 1})).await.unwrap();
    one.stop().await;
    // A read is sent again to the next server at once.
    let done = client.wait(&task.id, PATIENCE).await.unwrap();
    assert_eq!(done.status, TaskStatus::Completed);
    assert_eq!(client.server().await, two.url());
    let next = client.enqueue("echo", json!({"n": 2})).await.unwrap();
    let done = client.wait(&next.id, PATIENCE).await.unwrap();
    assert_eq!(done.result.unwrap()["n"], 2);
    agent.stop().await.unwrap();
    two.stop().await;
}
