//! The Rust SDK's agent under the conformance suite (`taskplane-conformance`;
//! `docs/protocol.md` states the task types every such agent serves).
//!
//! Environment: `TASKPLANE_SERVER` (comma-separated URLs, tried in order)
//! and `CONFORMANCE_SLOTS`. Drains on SIGTERM.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;
use taskplane_agent::{
    Agent, DomainRegistry, TaskContext, TaskError, TaskHandler, TaskRegistry, TaskResult,
};
use taskplane_common::logging::{LogFormat, init_logging};
use taskplane_common::shutdown::shutdown_signal;

/// Returns its payload; `pad_bytes: N` returns `{"pad": "x" × N}` instead.
struct Echo;

#[async_trait::async_trait]
impl TaskHandler for Echo {
    async fn handle(&self, context: TaskContext) -> Result<TaskResult, TaskError> {
        match context.payload["pad_bytes"].as_u64() {
            Some(bytes) => Ok(TaskResult::new(
                json!({ "pad": "x".repeat(bytes as usize) }),
            )),
            None => Ok(TaskResult::new(context.payload)),
        }
    }
}

/// Fails, retryably when `payload.retryable` is true.
struct Fail;

#[async_trait::async_trait]
impl TaskHandler for Fail {
    async fn handle(&self, context: TaskContext) -> Result<TaskResult, TaskError> {
        let message = format!("conformance failure of attempt {}", context.attempt);
        if context.payload["retryable"].as_bool() == Some(true) {
            Err(TaskError::Retryable(message))
        } else {
            Err(TaskError::Permanent(message))
        }
    }
}

/// Sleeps `payload.ms` unless cancelled first, and says when it ran;
/// `report: true` reports progress (0.5, "half way") before sleeping.
struct Sleep {
    report: bool,
}

fn micros_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after the epoch")
        .as_micros() as u64
}

#[async_trait::async_trait]
impl TaskHandler for Sleep {
    async fn handle(&self, context: TaskContext) -> Result<TaskResult, TaskError> {
        let started_us = micros_now();
        if self.report {
            context.report_progress(0.5, "half way");
        }
        let ms = context.payload["ms"].as_u64().unwrap_or(0);
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(ms)) => {}
            () = context.cancellation.cancelled() => {
                return Err(TaskError::Cancelled("stopped on request".into()));
            }
        }
        Ok(TaskResult::new(
            json!({ "started_us": started_us, "ended_us": micros_now() }),
        ))
    }
}

struct Conformance;

impl DomainRegistry for Conformance {
    fn register_handlers(&self, registry: &mut TaskRegistry) -> Vec<String> {
        registry.register_handler("echo", Box::new(Echo));
        registry.register_handler("fail", Box::new(Fail));
        registry.register_handler("sleep", Box::new(Sleep { report: false }));
        registry.register_handler("progress", Box::new(Sleep { report: true }));
        ["echo", "fail", "sleep", "progress"]
            .map(String::from)
            .to_vec()
    }

    fn domain_name(&self) -> &'static str {
        "conformance"
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_logging(LogFormat::Text, "info");
    let mut registry = TaskRegistry::new();
    registry.register_domain("conformance", Box::new(Conformance));
    let slots: u32 = std::env::var("CONFORMANCE_SLOTS")
        .unwrap_or_else(|_| "2".into())
        .parse()?;
    let agent = Agent::builder()
        .registry(registry)
        .servers([std::env::var("TASKPLANE_SERVER")?])
        .name("conformance-agent")
        .max_concurrency(slots)
        .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(500))
        .build()?;
    agent.run(shutdown_signal()).await?;
    Ok(())
}
