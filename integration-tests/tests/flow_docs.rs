//! `docs/operations.md`'s flow-control examples cannot rot: every command
//! between its `flow` markers runs, in order, against a live server with
//! the example domains' agent, and leaves the policies the page promises.

use std::sync::Arc;

use integration_tests::{
    Backend, TestAgent, TestServer, documented_commands, enqueue, enqueue_request,
    grpcurl_available, run_documented, wait_status, wait_terminal,
};
use serde_json::json;
use taskplane_agent::RegistryConfig;
use taskplane_handlers::{AppServices, setup_registry_with_config};
use taskplane_proto::v1::registry_service_client::RegistryServiceClient;
use taskplane_proto::v1::{FlowPolicy, GetTaskTypeRequest, TaskStatus};
use tonic::transport::Channel;

/// A type's policy as GetTaskType shows it.
async fn policy(registry: &RegistryServiceClient<Channel>, task_type: &str) -> FlowPolicy {
    let request = GetTaskTypeRequest {
        task_type: task_type.to_owned(),
    };
    let answer = registry.clone().get_task_type(request).await.unwrap();
    answer.into_inner().flow.unwrap()
}

async fn the_flow_control_examples_work_against_a_live_server(backend: Backend) {
    let commands = documented_commands("docs/operations.md", "flow");
    assert_eq!(commands.len(), 20, "the examples changed: update this test");
    let with_grpcurl = grpcurl_available();
    let server = TestServer::start(&backend).await;
    let data = tempfile::tempdir().unwrap();
    let config = RegistryConfig::from_lookup(|_| None).unwrap();
    let (registry, _) =
        setup_registry_with_config(&config, Arc::new(AppServices::new(data.path())));
    let agent = TestAgent::start(&server, "dev-agent", registry).await;
    let cli = env!("CARGO_BIN_EXE_taskplane-under-test");
    // A webhook without its url, DEAD at once: what the retries find.
    let mut tasks = server.tasks().await;
    let dead = enqueue(&mut tasks, enqueue_request("webhook", json!({})))
        .await
        .id;
    wait_status(&tasks, &dead, TaskStatus::Dead).await;
    let mut report = None;
    for command in &commands {
        if command.starts_with("grpcurl ") && !with_grpcurl {
            continue;
        }
        let output = run_documented(command, cli, server.address).await;
        if command == "taskplane types pause webhook --refuse-enqueues" {
            let refused = tasks
                .enqueue_task(enqueue_request("webhook", json!({})))
                .await
                .unwrap_err();
            assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
            assert!(
                refused
                    .message()
                    .contains("task type 'webhook' is paused and refuses new tasks"),
                "{}",
                refused.message()
            );
        }
        if command.contains("--start-within") || command.contains("\"start_by\"") {
            let id = output
                .lines()
                .find_map(|line| line.strip_prefix("id ").map(str::trim))
                .or_else(|| {
                    output
                        .split("\"id\": \"")
                        .nth(1)
                        .and_then(|rest| rest.split('"').next())
                })
                .unwrap_or_else(|| panic!("{output}"));
            let done = wait_terminal(&mut tasks, id).await;
            assert_eq!(done.status(), TaskStatus::Completed, "{done:?}");
            assert!(done.start_by.is_some(), "{done:?}");
            continue;
        }
        if command.starts_with("taskplane enqueue") {
            // The task as `task get` prints it: a line per field.
            let id = output
                .lines()
                .find_map(|line| line.strip_prefix("id "))
                .unwrap_or_else(|| panic!("{output}"));
            report = Some(id.trim().to_owned());
        }
        if command.ends_with("--since 2h --dry-run") {
            let counts: Vec<&str> = output.lines().last().unwrap().split_whitespace().collect();
            assert_eq!(counts, ["retry", "1", "0", "0"], "{output}");
        }
        if command == "taskplane types list" {
            let row = output
                .lines()
                .find(|line| line.starts_with("report_generation "))
                .unwrap_or_else(|| panic!("{output}"));
            assert!(row.contains(" yes "), "paused while listed: {row}");
            let row = output
                .lines()
                .find(|line| line.starts_with("payment_processing "))
                .unwrap();
            assert!(
                row.contains("max_running=20 max_running_per_key=1 by payload.customer_id"),
                "{row}"
            );
        }
    }
    let registry = server.registry().await;
    assert_eq!(
        policy(&registry, "payment_processing").await,
        FlowPolicy {
            paused: false,
            max_running: 20,
            concurrency_key: "payload.customer_id".into(),
            max_running_per_key: 1,
            rate_limit: "10/second".into(),
            refuse_enqueues: false,
            rate_limit_key: "payload.customer_id".into(),
        },
        "the second set kept the first one's key"
    );
    assert_eq!(
        policy(&registry, "report_generation").await,
        FlowPolicy::default()
    );
    assert_eq!(policy(&registry, "webhook").await, FlowPolicy::default());
    assert_eq!(
        policy(&registry, "health_check").await.rate_limit,
        "20/second"
    );
    let retried = wait_terminal(&mut tasks, &dead).await;
    assert_eq!(retried.attempts, 2, "the bulk retry ran it again");
    let report = report.expect("the enqueue printed the task");
    wait_status(&server.tasks().await, &report, TaskStatus::Completed).await;
    agent.stop().await.unwrap();
    server.stop().await;
}

integration_tests::on_every_backend!(the_flow_control_examples_work_against_a_live_server,);
