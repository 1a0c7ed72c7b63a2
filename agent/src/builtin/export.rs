//! `ExportHandler`: writes the payload's `document` as a JSON file into an
//! export directory and reports its path and size.

use std::path::PathBuf;

use async_trait::async_trait;
use serde_json::json;

use crate::handler::{HandlerHealth, TaskContext, TaskError, TaskHandler, TaskResult};

/// Writes JSON exports under one directory.
pub struct ExportHandler {
    directory: PathBuf,
}

impl ExportHandler {
    /// Exports into `directory` (created if missing).
    pub fn new(directory: PathBuf) -> Self {
        ExportHandler { directory }
    }
}

#[async_trait]
impl TaskHandler for ExportHandler {
    async fn handle(&self, context: TaskContext) -> Result<TaskResult, TaskError> {
        let document = context
            .payload
            .get("document")
            .filter(|d| d.is_object())
            .ok_or_else(|| TaskError::bad_payload("document", "a JSON object to export"))?;
        let bytes =
            serde_json::to_vec_pretty(document).map_err(|e| TaskError::Permanent(e.to_string()))?;
        tokio::fs::create_dir_all(&self.directory)
            .await
            .map_err(|e| {
                TaskError::Retryable(format!(
                    "cannot create the export directory {}: {e}",
                    self.directory.display()
                ))
            })?;
        // The task id is a UUID: a safe, unique file name.
        let path = self
            .directory
            .join(format!("{}-{}.json", context.task_type, context.task_id));
        tokio::fs::write(&path, &bytes)
            .await
            .map_err(|e| TaskError::Retryable(format!("cannot write {}: {e}", path.display())))?;
        Ok(TaskResult::new(
            json!({"path": path.display().to_string(), "bytes": bytes.len()}),
        ))
    }

    fn description(&self) -> String {
        "Exports payload.document as a JSON file in the agent's export directory".into()
    }

    fn capabilities(&self) -> Vec<String> {
        vec!["filesystem".into()]
    }

    async fn health_check(&self) -> Option<HandlerHealth> {
        let directory = self.directory.display();
        let probe = self.directory.join(".taskplane-health-probe");
        let writable = async {
            tokio::fs::create_dir_all(&self.directory).await?;
            tokio::fs::write(&probe, b"ok").await?;
            tokio::fs::remove_file(&probe).await
        };
        Some(match writable.await {
            Ok(()) => HandlerHealth::healthy(format!("{directory} is writable")),
            Err(error) => HandlerHealth::unhealthy(format!("cannot write to {directory}: {error}")),
        })
    }
}
