//! `TcpProbeHandler`: connects to `host`:`port` and reports the latency;
//! fails when the connection is refused or takes longer than `budget_ms`.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::json;

use super::required_str;
use crate::handler::{TaskContext, TaskError, TaskHandler, TaskResult};

/// Probes a TCP endpoint.
pub struct TcpProbeHandler;

#[async_trait]
impl TaskHandler for TcpProbeHandler {
    async fn handle(&self, context: TaskContext) -> Result<TaskResult, TaskError> {
        let host = required_str(&context.payload, "host")?;
        let port = context
            .payload
            .get("port")
            .and_then(|v| v.as_u64())
            .and_then(|p| u16::try_from(p).ok())
            .ok_or_else(|| TaskError::bad_payload("port", "a port number from 0 to 65535"))?;
        let budget = Duration::from_millis(
            context
                .payload
                .get("budget_ms")
                .and_then(|v| v.as_u64())
                .unwrap_or(1000),
        );
        let started = Instant::now();
        match tokio::time::timeout(budget, tokio::net::TcpStream::connect((host, port))).await {
            Ok(Ok(_)) => Ok(TaskResult::new(json!({
                "target": format!("{host}:{port}"),
                "reachable": true,
                "latency_ms": started.elapsed().as_secs_f64() * 1000.0,
            }))),
            Ok(Err(error)) => Err(TaskError::Retryable(format!(
                "{host}:{port} is unreachable: {error}"
            ))),
            Err(_) => Err(TaskError::Retryable(format!(
                "{host}:{port} did not answer within the {} ms budget",
                budget.as_millis()
            ))),
        }
    }

    fn description(&self) -> String {
        "Probes a TCP endpoint (payload.host, payload.port) within a latency budget".into()
    }

    fn capabilities(&self) -> Vec<String> {
        vec!["tcp".into()]
    }
}
