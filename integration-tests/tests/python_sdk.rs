//! The Python package (`agent/python`): its own pytest suite against this
//! build's `taskplane` binary, and a Python agent serving one domain beside
//! a Rust agent serving another on the same server.

use std::process::Stdio;

use async_trait::async_trait;
use integration_tests::{
    Backend, PATIENCE, TestAgent, TestServer, python_package_dir, python_sdk_available,
    result_json, run_task, wait_for_agent,
};
use serde_json::json;
use taskplane_agent::{
    DomainRegistry, TaskContext, TaskError, TaskHandler, TaskRegistry, TaskResult,
};
use taskplane_proto::v1::{ListAgentsRequest, TaskStatus};

#[test]
fn the_python_packages_own_tests_pass() {
    if !python_sdk_available() {
        return;
    }
    let output = std::process::Command::new("python3")
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"])
        .current_dir(python_package_dir())
        .env("TASKPLANE_BIN", env!("CARGO_BIN_EXE_taskplane-under-test"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("pytest runs");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "pytest failed:\n{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(report.contains(" passed"), "{report}");
}

/// `charge` of domain `payments`, in Rust.
struct Charge;

#[async_trait]
impl TaskHandler for Charge {
    async fn handle(&self, context: TaskContext) -> Result<TaskResult, TaskError> {
        let cents = context.payload["cents"].as_i64().unwrap_or(0);
        Ok(TaskResult::new(json!({ "charged": cents, "by": "rust" })))
    }
}

struct Payments;

impl DomainRegistry for Payments {
    fn register_handlers(&self, registry: &mut TaskRegistry) -> Vec<String> {
        registry.register_handler("charge", Box::new(Charge));
        vec!["charge".into()]
    }

    fn domain_name(&self) -> &'static str {
        "payments"
    }
}

#[tokio::test]
async fn a_python_agent_and_a_rust_agent_serve_different_domains_of_one_server() {
    if !python_sdk_available() {
        return;
    }
    let server = TestServer::start(&Backend::Sqlite).await;
    let mut registry = TaskRegistry::new();
    registry.register_domain("payments", Box::new(Payments));
    let rust = TestAgent::start(&server, "rust-payments", registry).await;
    let mut python = tokio::process::Command::new("python3")
        .arg(python_package_dir().join("examples/demo_agent.py"))
        .env("PYTHONPATH", python_package_dir())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("TASKPLANE_SERVER", server.url())
        .env("TASK_FEATURE_FLAGS", "emphasis:true")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 starts");
    let registry = server.registry().await;
    wait_for_agent(&registry, "demo-python").await;
    let agents = registry
        .clone()
        .list_agents(ListAgentsRequest {})
        .await
        .unwrap()
        .into_inner()
        .agents;
    let domains_of = |name: &str| {
        agents
            .iter()
            .find(|a| a.agent_name == name)
            .map(|a| a.domains.clone())
            .unwrap_or_default()
    };
    assert_eq!(domains_of("rust-payments"), ["payments"]);
    assert_eq!(domains_of("demo-python"), ["demo", "reports"]);

    let mut tasks = server.tasks().await;
    let charged = run_task(&mut tasks, "charge", json!({ "cents": 500 })).await;
    assert_eq!(
        result_json(&charged),
        json!({ "charged": 500, "by": "rust" })
    );
    let shouted = run_task(&mut tasks, "shout", json!({ "text": "hi" })).await;
    assert_eq!(shouted.status(), TaskStatus::Completed, "{shouted:?}");
    assert_eq!(result_json(&shouted), json!({ "shout": "HI!" }));
    let report = run_task(
        &mut tasks,
        "report",
        json!({ "items": [1, 2], "version": "v2" }),
    )
    .await;
    assert_eq!(
        result_json(&report),
        json!({ "count": 2, "version": "v2", "title": "untitled" })
    );

    python.start_kill().expect("kill the Python agent");
    rust.stop().await.expect("the Rust agent drains");
}

/// The README's "An agent in Python" code blocks, in order.
fn readme_python_blocks() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let section = readme
        .split("\n## An agent in Python")
        .nth(1)
        .expect("the README has the section")
        .split("\n## ")
        .next()
        .unwrap_or_default()
        .to_owned();
    section
        .split("```python\n")
        .skip(1)
        .map(|block| block.split("```").next().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn the_readmes_python_agent_and_client_run() {
    if !python_sdk_available() {
        return;
    }
    let [agent, client] = &readme_python_blocks()[..] else {
        panic!("the section has an agent block and a client block");
    };
    let server = TestServer::start(&Backend::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let at_server = |code: &str| code.replace("http://127.0.0.1:50051", &server.url());
    std::fs::write(dir.path().join("agent.py"), at_server(agent)).unwrap();
    std::fs::write(dir.path().join("client.py"), at_server(client)).unwrap();
    let python = |script: &str| {
        let mut command = tokio::process::Command::new("python3");
        command
            .arg(dir.path().join(script))
            .env("PYTHONPATH", python_package_dir())
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .kill_on_drop(true);
        command
    };
    let _agent = python("agent.py")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the agent starts");
    wait_for_agent(&server.registry().await, "taskplane-agent").await;
    let output = tokio::time::timeout(PATIENCE, python("client.py").output())
        .await
        .expect("the client ends by itself")
        .expect("the client runs");
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(printed.trim(), "COMPLETED {'shout': 'HI'}");
}

#[test]
fn the_bench_drains_w1_with_the_python_noop_agent() {
    if !python_sdk_available() {
        return;
    }
    let agent = format!(
        "PYTHONPATH={dir} python3 {dir}/examples/noop_agent.py",
        dir = python_package_dir().display()
    );
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_taskplane-under-test"))
        .args([
            "bench",
            "--workloads",
            "w1x",
            "--tasks",
            "300",
            "--batch-size",
            "100",
        ])
        .args(["--agent-command", &agent, "--output", "json"])
        .output()
        .expect("taskplane bench runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let figures = report["results"]
        .as_array()
        .and_then(|rows| {
            rows.iter()
                .find(|row| row["workload"] == "W1x external agent")
        })
        .map(|row| &row["figures"])
        .unwrap_or_else(|| panic!("no W1x row in {report}"));
    assert_eq!(
        (figures["completed"].as_u64(), figures["dead"].as_u64()),
        (Some(300), Some(0)),
        "{figures}"
    );
    assert!(
        figures["processed_per_sec"].as_f64().unwrap() > 0.0,
        "{figures}"
    );
}
