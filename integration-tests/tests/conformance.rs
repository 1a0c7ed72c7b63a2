//! Both SDKs pass the agent conformance suite (`integration_tests::conformance`).

use integration_tests::conformance::{AgentCommand, Outcome, run};
use integration_tests::{python_package_dir, python_sdk_available};

fn assert_all_pass(sdk: &str, outcomes: &[Outcome]) {
    let failures: Vec<String> = outcomes
        .iter()
        .filter_map(|o| {
            o.result
                .as_ref()
                .err()
                .map(|why| format!("{}: {why}", o.check))
        })
        .collect();
    assert!(outcomes.len() >= 9, "every check ran");
    assert!(
        failures.is_empty(),
        "the {sdk} agent failed:\n{}",
        failures.join("\n\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_sdk_passes_the_conformance_suite() {
    let agent = AgentCommand {
        argv: vec![env!("CARGO_BIN_EXE_conformance-agent").to_owned()],
        env: Vec::new(),
    };
    assert_all_pass("Rust", &run(agent).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_passes_the_conformance_suite() {
    if !python_sdk_available() {
        return;
    }
    let script = python_package_dir().join("tests/conformance_agent.py");
    let agent = AgentCommand {
        argv: vec!["python3".into(), script.display().to_string()],
        env: vec![("PYTHONDONTWRITEBYTECODE".into(), "1".into())],
    };
    assert_all_pass("Python", &run(agent).await);
}
