//! `taskplane-conformance -- PROGRAM [ARGS...]`: runs the agent conformance
//! suite against the agent that command starts, prints each check, and
//! exits non-zero when any fails. The agent gets `TASKPLANE_SERVER` and
//! `CONFORMANCE_SLOTS` in its environment and must serve the `conformance`
//! domain as `docs/protocol.md` states.

use integration_tests::conformance::{AgentCommand, run};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let argv: Vec<String> = std::env::args()
        .skip(1)
        .skip_while(|arg| arg == "--")
        .collect();
    if argv.is_empty() {
        eprintln!(
            "usage: taskplane-conformance -- PROGRAM [ARGS...]  (the command that starts the agent under test)"
        );
        return std::process::ExitCode::from(2);
    }
    // Each failing check is reported below, once, with its message.
    std::panic::set_hook(Box::new(|_| {}));
    let outcomes = run(AgentCommand {
        argv,
        env: Vec::new(),
    })
    .await;
    let mut failed = 0;
    for outcome in &outcomes {
        match &outcome.result {
            Ok(()) => println!("pass  {}", outcome.check),
            Err(why) => {
                failed += 1;
                println!(
                    "FAIL  {}\n      {}",
                    outcome.check,
                    why.replace('\n', "\n      ")
                );
            }
        }
    }
    println!(
        "{} of {} checks passed",
        outcomes.len() - failed,
        outcomes.len()
    );
    if failed == 0 {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}
