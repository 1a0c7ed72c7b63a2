//! `ReportHandler`: renders rows as a CSV, JSON or Markdown report file in
//! its output directory, from the payload's `rows` or from the task history
//! of one task type (read from the control plane's `ListTasks`).
//!
//! Payload: `format` (`csv`, `json` or `markdown`; default `json`), `title`,
//! `name` (the file's stem; default the task id), `columns` (order; default:
//! every key, sorted within a row, later rows' new keys appended — payloads
//! travel as protobuf Structs, which do not keep key order), and either
//! `rows` (an array of objects)
//! or `history` (`{"task_type", "status"?, "limit"?}`; at most 1000 tasks).
//! The result names the file, its size and its SHA-256.

use std::path::PathBuf;

use async_trait::async_trait;
use serde_json::{Map, Value, json};
use taskplane_proto::v1::task_service_client::TaskServiceClient;
use taskplane_proto::v1::{ListTasksRequest, TaskStatus};

use super::{safe_file_stem, sha256_hex};
use taskplane_agent::ConnectOptions;
use taskplane_agent::handler::{TaskContext, TaskError, TaskHandler, TaskResult};
use taskplane_common::ConnectError;

/// The columns of a history report, in this order.
const HISTORY_COLUMNS: [&str; 6] = [
    "id",
    "status",
    "attempts",
    "created_at",
    "finished_at",
    "last_error",
];
/// The most tasks a history report reads.
const MAX_HISTORY: u32 = 1000;

/// A report's output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportFormat {
    /// Comma-separated values with a header row.
    Csv,
    /// `{"title", "rows"}`, pretty-printed.
    Json,
    /// A Markdown table under a `#` title.
    Markdown,
}

impl ReportFormat {
    fn parse(name: &str) -> Result<Self, TaskError> {
        match name {
            "csv" => Ok(ReportFormat::Csv),
            "json" => Ok(ReportFormat::Json),
            "markdown" | "md" => Ok(ReportFormat::Markdown),
            other => Err(TaskError::bad_payload(
                "format",
                &format!("csv, json or markdown (got '{other}')"),
            )),
        }
    }

    fn extension(self) -> &'static str {
        match self {
            ReportFormat::Csv => "csv",
            ReportFormat::Json => "json",
            ReportFormat::Markdown => "md",
        }
    }
}

fn cell(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// Every key of the rows: a row's keys sorted, later rows' new keys appended.
fn columns_of(rows: &[Map<String, Value>]) -> Vec<String> {
    let mut columns: Vec<String> = Vec::new();
    for row in rows {
        for key in row.keys() {
            if !columns.contains(key) {
                columns.push(key.clone());
            }
        }
    }
    columns
}

/// Renders rows in a format.
pub fn render(
    format: ReportFormat,
    title: &str,
    columns: &[String],
    rows: &[Map<String, Value>],
) -> Vec<u8> {
    match format {
        ReportFormat::Json => {
            serde_json::to_vec_pretty(&json!({ "title": title, "columns": columns, "rows": rows }))
                .expect("JSON serializes")
        }
        ReportFormat::Csv => {
            let mut writer = csv::Writer::from_writer(Vec::new());
            writer.write_record(columns).expect("writing to memory");
            for row in rows {
                writer
                    .write_record(columns.iter().map(|c| cell(row.get(c))))
                    .expect("writing to memory");
            }
            writer.into_inner().expect("writing to memory")
        }
        ReportFormat::Markdown => {
            let escape = |text: String| text.replace('|', "\\|").replace('\n', " ");
            let mut out = format!("# {}\n\n", escape(title.to_owned()));
            out.push_str(&format!(
                "| {} |\n",
                columns
                    .iter()
                    .map(|c| escape(c.clone()))
                    .collect::<Vec<_>>()
                    .join(" | ")
            ));
            out.push_str(&format!("|{}\n", " --- |".repeat(columns.len())));
            for row in rows {
                let cells: Vec<String> = columns.iter().map(|c| escape(cell(row.get(c)))).collect();
                out.push_str(&format!("| {} |\n", cells.join(" | ")));
            }
            out.into_bytes()
        }
    }
}

/// Writes a rendered report and describes it: path, size, checksum.
pub async fn write_report(
    directory: &std::path::Path,
    stem: &str,
    format: ReportFormat,
    bytes: &[u8],
) -> Result<Value, TaskError> {
    tokio::fs::create_dir_all(directory)
        .await
        .map_err(|e| TaskError::Retryable(format!("cannot create {}: {e}", directory.display())))?;
    let path = directory.join(format!("{}.{}", safe_file_stem(stem), format.extension()));
    tokio::fs::write(&path, bytes)
        .await
        .map_err(|e| TaskError::Retryable(format!("cannot write {}: {e}", path.display())))?;
    Ok(
        json!({ "path": path.display().to_string(), "bytes": bytes.len(), "sha256": sha256_hex(bytes) }),
    )
}

/// Renders reports into one directory.
pub struct ReportHandler {
    output_dir: PathBuf,
    control_plane: String,
    connect_options: ConnectOptions,
    description: String,
}

impl ReportHandler {
    /// Writes into `output_dir`; history is read from `control_plane`,
    /// reached with `connect_options`.
    pub fn new(
        output_dir: PathBuf,
        control_plane: String,
        connect_options: ConnectOptions,
    ) -> Self {
        ReportHandler {
            output_dir,
            control_plane,
            connect_options,
            description: "Renders rows or task history as CSV, JSON or Markdown".into(),
        }
    }

    /// Sets the description registered for the task type.
    pub fn with_description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    async fn history(&self, query: &Value) -> Result<Vec<Map<String, Value>>, TaskError> {
        let task_type = query
            .get("task_type")
            .and_then(|t| t.as_str())
            .ok_or_else(|| TaskError::bad_payload("history.task_type", "a task type"))?;
        let status = match query.get("status").and_then(|s| s.as_str()) {
            None => TaskStatus::Unspecified,
            Some(name) => {
                TaskStatus::from_str_name(&format!("TASK_STATUS_{}", name.to_uppercase()))
                    .ok_or_else(|| {
                        TaskError::bad_payload(
                            "history.status",
                            "pending, running, completed, dead, cancelled or expired",
                        )
                    })?
            }
        };
        let limit = query
            .get("limit")
            .and_then(|l| l.as_u64())
            .unwrap_or(100)
            .min(u64::from(MAX_HISTORY)) as u32;
        let channel = self
            .connect_options
            .connect(&self.control_plane)
            .await
            .map_err(|e| match e {
                ConnectError::Setup(reason) => {
                    TaskError::Permanent(format!("control plane: {reason}"))
                }
                unreachable => TaskError::Retryable(unreachable.to_string()),
            })?;
        let mut client = TaskServiceClient::new(channel);
        let mut rows = Vec::new();
        let mut page_token = String::new();
        while (rows.len() as u32) < limit {
            let request = ListTasksRequest {
                task_type: task_type.to_owned(),
                status: status as i32,
                page_size: (limit - rows.len() as u32).min(500),
                page_token,
                ..Default::default()
            };
            let page = client
                .list_tasks(request)
                .await
                .map_err(|s| TaskError::Retryable(format!("ListTasks failed: {}", s.message())))?
                .into_inner();
            for task in page.tasks {
                let time = |t: Option<prost_types::Timestamp>| {
                    t.map(|t| t.to_string()).unwrap_or_default()
                };
                let mut row = Map::new();
                row.insert("id".into(), json!(task.id));
                row.insert("status".into(), json!(task.status().short_name()));
                row.insert("attempts".into(), json!(task.attempts));
                row.insert("created_at".into(), json!(time(task.created_at)));
                row.insert("finished_at".into(), json!(time(task.finished_at)));
                row.insert("last_error".into(), json!(task.last_error));
                rows.push(row);
            }
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
        Ok(rows)
    }
}

#[async_trait]
impl TaskHandler for ReportHandler {
    async fn handle(&self, context: TaskContext) -> Result<TaskResult, TaskError> {
        let payload = &context.payload;
        let format = ReportFormat::parse(
            payload
                .get("format")
                .and_then(|f| f.as_str())
                .unwrap_or("json"),
        )?;
        let (rows, default_columns): (Vec<Map<String, Value>>, Option<Vec<String>>) =
            match (payload.get("rows"), payload.get("history")) {
                (Some(rows), _) => (
                    rows.as_array()
                        .and_then(|rows| rows.iter().map(|r| r.as_object().cloned()).collect())
                        .ok_or_else(|| TaskError::bad_payload("rows", "an array of objects"))?,
                    None,
                ),
                (None, Some(history)) => (
                    self.history(history).await?,
                    Some(HISTORY_COLUMNS.map(String::from).to_vec()),
                ),
                (None, None) => {
                    return Err(TaskError::bad_payload(
                        "rows or history",
                        "the report's data",
                    ));
                }
            };
        let columns = match payload.get("columns") {
            Some(columns) => columns
                .as_array()
                .and_then(|c| c.iter().map(|c| c.as_str().map(str::to_owned)).collect())
                .ok_or_else(|| TaskError::bad_payload("columns", "a list of column names"))?,
            None => default_columns.unwrap_or_else(|| columns_of(&rows)),
        };
        let title = payload
            .get("title")
            .and_then(|t| t.as_str())
            .unwrap_or(&context.task_type)
            .to_owned();
        let stem = payload
            .get("name")
            .and_then(|n| n.as_str())
            .unwrap_or(&context.task_id)
            .to_owned();
        context.report_progress(0.5, format!("rendering {} rows", rows.len()));
        let bytes = render(format, &title, &columns, &rows);
        context.report_progress(0.9, format!("writing {} bytes", bytes.len()));
        let mut result = write_report(&self.output_dir, &stem, format, &bytes).await?;
        result["rows"] = json!(rows.len());
        result["format"] = json!(format.extension());
        Ok(TaskResult::new(result))
    }

    fn description(&self) -> String {
        self.description.clone()
    }

    fn capabilities(&self) -> Vec<String> {
        vec!["csv".into(), "json".into(), "markdown".into()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn renders_each_format_with_a_checksum_of_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let handler = ReportHandler::new(
            dir.path().to_owned(),
            "http://127.0.0.1:1".into(),
            ConnectOptions::default(),
        );
        let rows = json!([{"region": "eu", "total": 12}, {"region": "us|west", "total": 7, "note": "late"}]);
        for (format, expected) in [
            ("csv", "region,total,note\neu,12,\nus|west,7,late\n"),
            (
                "markdown",
                "# Sales\n\n| region | total | note |\n| --- | --- | --- |\n| eu | 12 |  |\n| us\\|west | 7 | late |\n",
            ),
        ] {
            let payload = json!({"format": format, "title": "Sales", "name": format!("sales {format}"), "rows": rows});
            let result = handler
                .handle(TaskContext::new("report_generation", payload))
                .await
                .unwrap()
                .output;
            let path = result["path"].as_str().unwrap();
            assert!(
                path.ends_with(&format!(
                    "sales_{format}.{}",
                    if format == "csv" { "csv" } else { "md" }
                )),
                "{path}"
            );
            let written = std::fs::read(path).unwrap();
            assert_eq!(String::from_utf8_lossy(&written), expected);
            assert_eq!(result["sha256"], sha256_hex(&written));
            assert_eq!(result["rows"], 2);
        }
        let err = handler
            .handle(TaskContext::new(
                "report_generation",
                json!({"format": "pdf", "rows": []}),
            ))
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("csv, json or markdown (got 'pdf')")
        );
    }
}
