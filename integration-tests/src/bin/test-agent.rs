//! A real agent process for fault tests. It serves task type `work`
//! (domain `testing`): sleep `payload.ms` milliseconds (cancellable), fail
//! retryably while `attempt < payload.fail_until`, and journal every start
//! and finish to the file named by `TEST_AGENT_JOURNAL`, so tests can count
//! executions from the agent's side as well as the store's.
//!
//! A journal line is `EVENT TASK_ID ATTEMPT MICROS PID`: MICROS is the wall
//! clock in microseconds since the Unix epoch, PID this process. Every run
//! writes `start` and, however it ends (finished, failed, cancelled, or its
//! future dropped when the agent leaves its server), `end`.
//!
//! Environment: `TASKPLANE_SERVER`, `TEST_AGENT_NAME`, `TEST_AGENT_SLOTS`,
//! `TEST_AGENT_JOURNAL`, `TEST_AGENT_DRAIN_GRACE_MS`.

use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

use taskplane_agent::{Agent, TaskContext, TaskError, TaskHandler, TaskRegistry, TaskResult};
use taskplane_common::logging::{LogFormat, init_logging};
use taskplane_common::shutdown::shutdown_signal;

struct Work {
    journal: Mutex<std::fs::File>,
}

impl Work {
    fn record(&self, event: &str, context: &TaskContext) {
        let micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros();
        let line = format!(
            "{event} {} {} {micros} {}\n",
            context.task_id,
            context.attempt,
            std::process::id()
        );
        // One write per line: agents share the journal, and a line written
        // in pieces could interleave with another process's.
        self.journal
            .lock()
            .unwrap()
            .write_all(line.as_bytes())
            .unwrap();
    }
}

/// Journals `end` when a run is over, however it ends.
struct Run<'a> {
    work: &'a Work,
    context: TaskContext,
}

impl Drop for Run<'_> {
    fn drop(&mut self) {
        self.work.record("end", &self.context);
    }
}

#[async_trait::async_trait]
impl TaskHandler for Work {
    async fn handle(&self, context: TaskContext) -> Result<TaskResult, TaskError> {
        self.record("start", &context);
        let _run = Run {
            work: self,
            context: context.clone(),
        };
        let ms = context.payload["ms"].as_u64().unwrap_or(0);
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(ms)) => {}
            () = context.cancellation.cancelled() => {
                self.record("cancelled", &context);
                return Err(TaskError::Cancelled("stopped on request".into()));
            }
        }
        let fail_until = context.payload["fail_until"].as_u64().unwrap_or(0) as u32;
        if context.attempt < fail_until {
            self.record("failed", &context);
            return Err(TaskError::Retryable(format!(
                "planned failure of attempt {}",
                context.attempt
            )));
        }
        self.record("done", &context);
        Ok(TaskResult::new(serde_json::json!({ "slept_ms": ms })))
    }

    fn description(&self) -> String {
        "Sleeps payload.ms and journals its runs (fault tests)".into()
    }
}

struct Testing {
    journal: String,
}

impl taskplane_agent::DomainRegistry for Testing {
    fn register_handlers(&self, registry: &mut TaskRegistry) -> Vec<String> {
        let journal = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.journal)
            .expect("journal opens");
        registry.register_handler(
            "work",
            Box::new(Work {
                journal: Mutex::new(journal),
            }),
        );
        vec!["work".into()]
    }

    fn domain_name(&self) -> &'static str {
        "testing"
    }
}

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_logging(LogFormat::Text, "info");
    let mut registry = TaskRegistry::new();
    registry.register_domain(
        "testing",
        Box::new(Testing {
            journal: env("TEST_AGENT_JOURNAL", "journal.log"),
        }),
    );
    Agent::builder()
        .registry(registry)
        .server(env(
            "TASKPLANE_SERVER",
            taskplane_agent::runtime::DEFAULT_SERVER,
        ))
        .name(env("TEST_AGENT_NAME", "test-agent"))
        .max_concurrency(env("TEST_AGENT_SLOTS", "8").parse()?)
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(300))
        .drain_grace(Duration::from_millis(
            env("TEST_AGENT_DRAIN_GRACE_MS", "5000").parse()?,
        ))
        .build()?
        .run(shutdown_signal())
        .await?;
    Ok(())
}
