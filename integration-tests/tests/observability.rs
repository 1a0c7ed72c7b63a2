//! What operators watch: the server's and the agent's Prometheus metrics
//! scraped over real HTTP, W3C trace context carried from the enqueuing
//! client to the handler, and JSON logs whose lines carry the task's span.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use integration_tests::{
    Backend, PATIENCE, TestServer, enqueue, enqueue_request, fast_queue, http_get, metric_sample,
    spawn_listening, wait_for, wait_for_agent, wait_status, wait_terminal,
};
use serde_json::json;
use taskplane_agent::{Agent, TaskContext, TaskError, TaskHandler, TaskRegistry, TaskResult};
use taskplane_common::metrics_endpoint::{Render, encode, serve_metrics};
use taskplane_proto::v1::TaskStatus;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_util::sync::CancellationToken;

/// `GET path` over a plain TCP connection; returns the status line and body.
struct Echo;

#[async_trait::async_trait]
impl TaskHandler for Echo {
    async fn handle(&self, context: TaskContext) -> Result<TaskResult, TaskError> {
        Ok(TaskResult::new(json!({
            "trace_id": context.traceparent().map(|t| t.trace_id),
        })))
    }
}

struct Broken;

#[async_trait::async_trait]
impl TaskHandler for Broken {
    async fn handle(&self, _: TaskContext) -> Result<TaskResult, TaskError> {
        Err(TaskError::Permanent("broken on purpose".into()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_and_agent_metrics_count_what_happened() {
    let server = TestServer::start(&Backend::Sqlite).await;
    server.register_type("unserved", "idle").await;
    let mut registry = TaskRegistry::new();
    registry.register_handler("echo", Box::new(Echo));
    registry.register_handler("broken", Box::new(Broken));
    let agent = Agent::builder()
        .registry(registry)
        .server(server.url())
        .name("observed")
        .build()
        .unwrap();
    // The agent's own endpoint, as the agent binary serves it.
    let agent_metrics = Arc::new(agent.metrics().registry());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let agent_address = listener.local_addr().unwrap();
    let render: Render = Arc::new(move || {
        let text = encode(&agent_metrics);
        Box::pin(async move { text })
    });
    let stop = CancellationToken::new();
    tokio::spawn(serve_metrics(listener, render, stop.clone()));
    let agent_stop = stop.clone();
    let agent_task = tokio::spawn(agent.run(async move { agent_stop.cancelled().await }));

    let mut tasks = server.tasks().await;
    enqueue(&mut tasks, enqueue_request("unserved", json!({}))).await;
    let mut ids = Vec::new();
    // The agent may still be registering: enqueue once its types exist.
    wait_for(|| {
        let mut tasks = tasks.clone();
        async move {
            tasks
                .enqueue_task(enqueue_request("echo", json!({})))
                .await
                .is_ok()
        }
    })
    .await;
    for _ in 0..2 {
        ids.push(
            enqueue(&mut tasks, enqueue_request("echo", json!({})))
                .await
                .id,
        );
    }
    let broken = enqueue(&mut tasks, enqueue_request("broken", json!({})))
        .await
        .id;
    for id in &ids {
        assert_eq!(
            wait_terminal(&mut tasks, id).await.status(),
            TaskStatus::Completed
        );
    }
    assert_eq!(
        wait_terminal(&mut tasks, &broken).await.status(),
        TaskStatus::Dead
    );

    // The first echo enqueued by the wait above completes too: three in all.
    wait_for(|| async {
        let (_, text) = http_get(server.metrics_address, "/metrics").await;
        metric_sample(
            &text,
            r#"taskplane_tasks_completed_total{task_type="echo"}"#,
        ) == Some(3.0)
    })
    .await;
    let (status, text) = http_get(server.metrics_address, "/metrics").await;
    assert!(status.contains("200"), "{status}");
    for (series, value) in [
        (r#"taskplane_tasks_enqueued_total{task_type="echo"}"#, 3.0),
        (
            r#"taskplane_tasks_enqueued_total{task_type="unserved"}"#,
            1.0,
        ),
        (r#"taskplane_tasks_dead_total{task_type="broken"}"#, 1.0),
        (
            r#"taskplane_tasks{task_type="unserved",domain="idle",status="pending"}"#,
            1.0,
        ),
        (
            r#"taskplane_tasks{task_type="echo",domain="default",status="completed"}"#,
            3.0,
        ),
        (r#"taskplane_connected_agents{domain="default"}"#, 1.0),
        (
            r#"taskplane_dispatch_latency_seconds_count{task_type="echo"}"#,
            3.0,
        ),
        (r#"taskplane_task_run_seconds_count{task_type="echo"}"#, 3.0),
        ("taskplane_lease_expiries_total", 0.0),
    ] {
        assert_eq!(
            metric_sample(&text, series),
            Some(value),
            "{series} in\n{text}"
        );
    }
    let (status, _) = http_get(server.metrics_address, "/elsewhere").await;
    assert!(status.contains("404"), "{status}");

    let (_, text) = http_get(agent_address, "/metrics").await;
    for (series, value) in [
        ("taskplane_agent_tasks_in_flight", 0.0),
        (
            r#"taskplane_agent_handler_duration_seconds_count{task_type="echo",outcome="completed"}"#,
            3.0,
        ),
        (
            r#"taskplane_agent_handler_errors_total{task_type="broken",outcome="permanent"}"#,
            1.0,
        ),
    ] {
        assert_eq!(
            metric_sample(&text, series),
            Some(value),
            "{series} in\n{text}"
        );
    }
    stop.cancel();
    agent_task.await.unwrap().unwrap();
    server.stop().await;
}

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_enqueuers_trace_reaches_the_handler_and_bad_ones_are_ignored() {
    let server = TestServer::start_with(&Backend::Sqlite, fast_queue()).await;
    let mut registry = TaskRegistry::new();
    registry.register_handler("echo", Box::new(Echo));
    let agent = integration_tests::TestAgent::start(&server, "tracer", registry).await;
    let mut tasks = server.tasks().await;

    let mut request = tonic::Request::new(enqueue_request("echo", json!({})));
    request
        .metadata_mut()
        .insert("traceparent", TRACEPARENT.parse().unwrap());
    let traced = enqueue(&mut tasks, request).await;
    assert_eq!(
        traced.metadata.get("traceparent").map(String::as_str),
        Some(TRACEPARENT)
    );
    let done = wait_terminal(&mut tasks, &traced.id).await;
    let result = taskplane_proto::json::struct_to_json(done.result.as_ref().unwrap());
    assert_eq!(result["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");

    let mut request = tonic::Request::new(enqueue_request("echo", json!({})));
    request
        .metadata_mut()
        .insert("traceparent", "00-not-a-trace-01".parse().unwrap());
    let untraced = enqueue(&mut tasks, request).await;
    assert!(!untraced.metadata.contains_key("traceparent"));
    let done = wait_terminal(&mut tasks, &untraced.id).await;
    assert_eq!(
        taskplane_proto::json::struct_to_json(done.result.as_ref().unwrap())["trace_id"],
        serde_json::Value::Null
    );
    agent.stop().await.unwrap();
    server.stop().await;
}

/// A `taskplane dev` process logging in `format` with the `RUST_LOG`
/// filter `filter` into a pipe: the process, its log lines as they come, and
/// a client, once the dev agent has registered.
async fn dev_with_logs(
    dir: &std::path::Path,
    format: &str,
    filter: &str,
) -> (
    tokio::process::Child,
    tokio::sync::mpsc::UnboundedReceiver<String>,
    taskplane_proto::v1::task_service_client::TaskServiceClient<tonic::transport::Channel>,
) {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_taskplane-under-test"));
    command
        .args([
            "dev",
            "--listen",
            "127.0.0.1:0",
            "--local-listen",
            "127.0.0.1:0",
            "--console-listen",
            "127.0.0.1:0",
        ])
        .current_dir(dir)
        .env("TASKPLANE_LOG_FORMAT", format)
        .env("RUST_LOG", filter)
        .stderr(Stdio::piped());
    let (mut child, address) = spawn_listening(command).await;
    let (lines, received) = tokio::sync::mpsc::unbounded_channel();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    tokio::spawn(async move {
        while let Ok(Some(line)) = stderr.next_line().await {
            let _ = lines.send(line);
        }
    });
    let channel = tonic::transport::Channel::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    // The dev agent registers just after the server prints its address.
    let registry =
        taskplane_proto::v1::registry_service_client::RegistryServiceClient::new(channel.clone());
    wait_for_agent(&registry, "dev-agent").await;
    let tasks = taskplane_proto::v1::task_service_client::TaskServiceClient::new(channel);
    (child, received, tasks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_task_span_with_its_trace_id() {
    let dir = tempfile::tempdir().unwrap();
    // Each enqueue is logged at debug.
    let (mut child, mut received, mut tasks) =
        dev_with_logs(dir.path(), "json", "info,taskplane_server::api=debug").await;
    let mut request = tonic::Request::new(enqueue_request(
        "metric_aggregation",
        json!({"rows": [1, 2]}),
    ));
    request
        .metadata_mut()
        .insert("traceparent", TRACEPARENT.parse().unwrap());
    let id = enqueue(&mut tasks, request).await.id;
    // The server's enqueue span and the agent's task span both carry the
    // trace. Either may be logged first: a task handed straight to the idle
    // agent can finish before the enqueue call logs its answer.
    let (enqueued, found) = tokio::time::timeout(PATIENCE, async {
        let (mut enqueued, mut found) = (None, None);
        while let Some(line) = received.recv().await {
            let Ok(entry) = serde_json::from_str::<serde_json::Value>(&line) else {
                panic!("a log line that is not JSON: {line}");
            };
            let this_task = entry["span"]["task_id"] == id.as_str();
            if this_task && entry["fields"]["message"] == "enqueued" {
                enqueued = Some(entry.clone());
            }
            if this_task && entry["fields"]["message"] == "task completed" {
                found = Some(entry);
            }
            if let (Some(enqueued), Some(found)) = (&enqueued, &found) {
                return (enqueued.clone(), found.clone());
            }
        }
        panic!("the log ended");
    })
    .await
    .expect("the enqueue and the handler's completion are logged");
    assert_eq!(enqueued["span"]["name"], "enqueue");
    assert_eq!(
        enqueued["span"]["trace_id"],
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(
        found["span"]["trace_id"],
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(found["span"]["parent_span_id"], "00f067aa0ba902b7");
    assert_eq!(found["span"]["name"], "task");
    // The agent logs the handler's completion before the server has
    // written the result (results are group-committed), so wait for it.
    let task = wait_status(&tasks, &id, TaskStatus::Completed).await;
    assert_eq!(task.id, id);
    child.start_kill().unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_logs_into_a_file_have_no_colour_and_enqueues_stay_below_info() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, mut received, mut tasks) = dev_with_logs(dir.path(), "text", "info").await;
    for _ in 0..3 {
        let id = enqueue(
            &mut tasks,
            enqueue_request("metric_aggregation", json!({"rows": [1, 2]})),
        )
        .await
        .id;
        wait_status(&tasks, &id, TaskStatus::Completed).await;
    }
    child.start_kill().unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    let mut lines = Vec::new();
    while let Some(line) = received.recv().await {
        lines.push(line);
    }
    assert!(
        lines.iter().any(|l| l.contains("INFO")),
        "the server logged at info: {lines:?}"
    );
    let coloured: Vec<_> = lines.iter().filter(|l| l.contains('\u{1b}')).collect();
    assert!(
        coloured.is_empty(),
        "escape codes in a log file: {coloured:?}"
    );
    let enqueues: Vec<_> = lines
        .iter()
        .filter(|l| l.contains("taskplane_server::api::tasks") && l.contains("enqueued"))
        .collect();
    assert!(enqueues.is_empty(), "enqueues logged at info: {enqueues:?}");
}
